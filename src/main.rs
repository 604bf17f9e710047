//! The `pillion` binary: parse, validate, run, map the outcome to an exit code
//! (0 success, 1 runtime failure, 2 usage or configuration error).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use pillion::agent::{Agent, Mode};
use pillion::cli::{Cli, Command, ReloadArgs, StatusFormat};
use pillion::config::Config;
use pillion::preflight;
use pillion::signals::Signals;

/// dlmalloc keeps freed memory for the next allocation. musl's allocator (the
/// static build's) returns it to the kernel after almost every free: a
/// `pillion init` spent about a millisecond in mmap, munmap and the page
/// faults after them. The same allocator everywhere, so that the tests run
/// the one the image ships.
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    // In a pod with shareProcessNamespace, an app running as the same UID
    // could otherwise read pillion's memory (tokens, keys) and reach its
    // filesystem through /proc/<pid>/{mem,root}. Not dumpable makes /proc
    // of this process root-owned and refuses ptrace to same-UID peers.
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        eprintln!(
            "warning: could not mark pillion non-dumpable ({e}); same-UID processes may inspect it"
        );
    }
    let cli = Cli::parse();
    pillion::telemetry::init_logging(cli.log_level.as_deref(), cli.log_format);

    let no_reload = ReloadArgs::default();
    let (cert, reload, mode) = match &cli.command {
        Command::Version => {
            println!("pillion {}", env!("CARGO_PKG_VERSION"));
            println!("commit: {}", env!("PILLION_COMMIT"));
            println!("target: {}", env!("PILLION_TARGET"));
            return ExitCode::SUCCESS;
        }
        Command::Status(args) => {
            let config = match (&cli.config, &args.out) {
                (None, Some(out)) => Config::for_directory(out),
                (None, None) => {
                    return fail(
                        EXIT_USAGE,
                        "status needs --config or --out to know where to look",
                    )
                }
                (Some(_), _) => match cli.load_config(&Default::default(), &no_reload) {
                    Ok(c) => c,
                    Err(e) => return fail(EXIT_USAGE, e),
                },
            };
            let now = std::time::SystemTime::now();
            match args.output {
                StatusFormat::Table => print!("{}", pillion::status::render(&config, now)),
                StatusFormat::Json => print!("{}", pillion::status::render_json(&config, now)),
            }
            return ExitCode::SUCCESS;
        }
        Command::Check(args) => (&args.cert, &args.reload, None),
        Command::Run(args) => (&args.cert, &args.reload, Some(Mode::Run)),
        Command::Inject(args) => (&args.cert, &no_reload, Some(Mode::Run)),
        // An init container runs before the app: it has nothing to reload.
        Command::Init(args) => (
            &args.cert,
            &no_reload,
            Some(Mode::Init {
                timeout: args.timeout,
            }),
        ),
    };
    let config = match cli.load_config(cert, reload) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let issuers = match preflight::preflight(&config, mode.is_some()) {
        Ok(i) => i,
        Err(e) => {
            return fail(
                EXIT_USAGE,
                format!("the configuration cannot be carried out:\n  {e}"),
            )
        }
    };
    let Some(mode) = mode else {
        print!("{config}");
        println!("configuration OK");
        return ExitCode::SUCCESS;
    };

    let inject = match &cli.command {
        Command::Inject(args) => match served_files(&config, args) {
            Ok(files) => Some((args.clone(), files)),
            Err(e) => return fail(EXIT_USAGE, e),
        },
        _ => None,
    };
    let init = matches!(mode, Mode::Init { .. });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime needs only what every Linux process has");
    let result = runtime.block_on(async {
        let signals = Signals::install()?;
        let listener =
            match config.listen {
                Some(addr) => Some(pillion::server::bind(addr).await.with_context(|| {
                    format!("failed to listen on {addr} for the admin endpoint")
                })?),
                None => None,
            };
        // Envoy's SDS and the SPIFFE Workload API, for `run` only: an init
        // container has no peer beside it.
        let pushing =
            matches!(mode, Mode::Run) && (config.sds.is_some() || config.workload_api.is_some());
        let hub = pushing.then(pillion::delivery::Hub::new);
        if let (Some(spec), Some(hub)) = (&config.sds, &hub) {
            let unix = pillion::delivery::bind_unix(&spec.socket, spec.mode, spec.uid, spec.gid)
                .with_context(|| format!("failed to serve SDS on {}", spec.socket.display()))?;
            let tcp = match spec.listen {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("failed to serve SDS on {addr} (sds.listen)")
                })?),
                None => None,
            };
            let served = hub.clone();
            tokio::spawn(async move { pillion::delivery::serve_sds(unix, tcp, &served).await });
            tracing::info!(socket = %spec.socket.display(), tcp = ?spec.listen, "serving Envoy SDS");
        }
        if let (Some(spec), Some(hub)) = (&config.workload_api, &hub) {
            let unix = pillion::delivery::bind_unix(&spec.socket, spec.mode, spec.uid, spec.gid)
                .with_context(|| {
                    format!("failed to serve the Workload API on {}", spec.socket.display())
                })?;
            let served = hub.clone();
            tokio::spawn(async move { pillion::delivery::serve_workload_api(unix, &served).await });
            tracing::info!(socket = %spec.socket.display(), svids = %spec.svids.join(","), "serving the SPIFFE Workload API");
        }
        let webhook = match &inject {
            Some((args, _)) => Some(
                tokio::net::TcpListener::bind(args.webhook_listen)
                    .await
                    .with_context(|| {
                        format!("failed to serve the webhook on {}", args.webhook_listen)
                    })?,
            ),
            None => None,
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(signals.forward(tx.clone()));
        let metrics = std::sync::Arc::new(pillion::telemetry::Metrics::new());
        let output_dir = config.output_dir.clone();
        let mut agent = Agent::new(config, issuers, metrics.clone(), hub);
        // What `pillion status` cannot read from the files (leases, failures).
        if matches!(mode, Mode::Run) {
            tokio::spawn(pillion::status::record(output_dir, agent.subscribe()));
        }
        if cli.config.is_some() {
            let cli = cli.clone();
            agent = agent.with_config_loader(Box::new(move || {
                let config = cli
                    .load_config(&Default::default(), &ReloadArgs::default())
                    .map_err(|e| e.to_string())?;
                let issuers = preflight::preflight(&config, true).map_err(|e| e.to_string())?;
                Ok((config, issuers))
            }));
        }
        if let (Some((args, files)), Some(webhook)) = (inject, webhook) {
            let slot = std::sync::Arc::new(pillion::inject::webhook::CertSlot::default());
            let injector = std::sync::Arc::new(pillion::inject::Injector { image: args.image });
            tokio::spawn(pillion::inject::webhook::follow(
                files,
                slot.clone(),
                agent.subscribe(),
                args.webhook_configuration,
            ));
            tokio::spawn(pillion::inject::webhook::serve(webhook, slot, injector));
        }
        if let Some(listener) = listener {
            tokio::spawn(pillion::server::serve(
                listener,
                agent.subscribe(),
                tx,
                metrics,
            ));
        }
        agent.run(mode, rx).await.map_err(anyhow::Error::from)
    });
    // After an init that published everything, wait for no blocking thread:
    // an idle one would only delay the exit. After a stop or a failure (the
    // init deadline, a signal) a renewal may have been cut short: give its
    // file work a moment to finish and remove what it began, but no more,
    // since an abandoned RSA-4096 generation can take seconds (SIGTERM must
    // stop pillion within one).
    if init && result.is_ok() {
        runtime.shutdown_background();
    } else {
        runtime.shutdown_timeout(std::time::Duration::from_millis(250));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_RUNTIME, format!("{e:#}")),
    }
}

/// The files of the certificate `inject` serves: `--certificate`, or the
/// configuration's only one.
fn served_files(
    config: &Config,
    args: &pillion::cli::InjectArgs,
) -> Result<pillion::inject::webhook::ServedFiles, String> {
    let names: Vec<&str> = config
        .certificates
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let spec = match &args.certificate {
        Some(name) => config.certificates.iter().find(|c| &c.name == name).ok_or_else(|| {
            format!("--certificate {name:?}: the configuration has no such certificate (it has: {})", names.join(", "))
        })?,
        None => match config.certificates.as_slice() {
            [only] => only,
            [] => return Err("inject needs a certificate to serve the webhook with; the configuration has none".into()),
            _ => return Err(format!("--certificate: say which certificate the webhook serves (one of: {})", names.join(", "))),
        },
    };
    let dir = spec.target_dir(&config.output_dir);
    Ok(pillion::inject::webhook::ServedFiles {
        name: spec.name.clone(),
        certificate: dir.join(&spec.files.certificate),
        private_key: dir.join(&spec.files.private_key),
        ca: dir.join(&spec.files.ca),
    })
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    // A server's words (a Kubernetes condition message, a Vault error) may
    // hold control characters: none reaches the terminal.
    let message: String = message
        .to_string()
        .chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect();
    eprintln!("error: {message}");
    ExitCode::from(code)
}
