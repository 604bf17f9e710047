//! The command line: what clap parses, and how flags become a [`Config`].
//!
//! Every option can also be set by an environment variable (shown in
//! `--help`), which is how a Kubernetes manifest usually sets them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    Config, ConfigErrors, Origin, RawCertificate, RawConfig, RawFiles, RawIssuer, RawLocalCa,
    RawPrivateKey, RawReload,
};

/// Default for `init --timeout`: long enough for a slow CA, short enough that
/// a stuck init container is noticed.
pub const DEFAULT_INIT_TIMEOUT: &str = "2m";

/// The parsed command line: the global options and the subcommand.
// clap would make this comment the top-level help, but the explicit `about`
// and `long_about` below replace it: `pillion --help` shows those.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "pillion",
    version,
    about = "Keeps a pod's TLS certificates fresh: obtains, verifies, publishes atomically, reloads the app, renews.",
    long_about = "Keeps a pod's TLS certificates fresh: obtains them from a CA, verifies them, publishes all files of a \
credential at once into a directory shared with the app, signals the app to reload, and renews before expiry.\n\n\
Without --config, flags describe one certificate. With no CA given, pillion creates a development CA under \
--state-dir (for development only).\n\n\
Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.",
    after_help = "Example: pillion run --dns-name localhost --out ./certs"
)]
pub struct Cli {
    /// YAML configuration file describing issuers, certificates and the reload target.
    #[arg(long, global = true, env = "PILLION_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for pillion's own state (the development CA). Never the shared output directory.
    /// [default: $XDG_STATE_HOME/pillion, else $HOME/.local/state/pillion, else /var/lib/pillion]
    #[arg(long, global = true, env = "PILLION_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Log level or filter (error, warn, info, debug, trace). RUST_LOG is used when this is unset.
    #[arg(long, global = true, env = "PILLION_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Log format: text (human-readable) or json (one object per line).
    #[arg(long, global = true, env = "PILLION_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = crate::telemetry::LogFormat::Text)]
    pub log_format: crate::telemetry::LogFormat,

    /// Serve /healthz, /readyz, /metrics and POST /rotate on this address (overrides server.listen). Off by default.
    #[arg(long, global = true, env = "PILLION_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,

    /// What to do, with the subcommand's own flags.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands. Each variant's doc comment is its line in `pillion --help`
/// and the summary of `pillion <command> --help`.
// clap would also make this comment the top-level help; `Cli`'s explicit
// `about` and `long_about` replace it.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Obtain, publish and keep renewing until stopped (SIGTERM/SIGINT). SIGUSR1 renews everything now.
    Run(RunArgs),
    /// Obtain and publish everything once (reusing valid files), then exit 0; exit 1 if the timeout passes first.
    Init(InitArgs),
    /// Validate the configuration, print the plan, touch nothing.
    Check(RunArgs),
    /// Show what is on disk: subject, names, issuer, expiry, time left, next renewal.
    Status(StatusArgs),
    /// Serve the admission webhook that adds pillion to pods annotated `pillion.dev/inject: "true"`,
    /// keeping its own TLS certificate fresh as `run` does.
    #[command(
        long_about = "Serve a mutating admission webhook (POST /mutate, HTTPS) that adds pillion to every pod \
annotated pillion.dev/inject: \"true\", as a native sidecar with the memory volume, shared process namespace, \
downward-API variables and hardened securityContext of deploy/overlays/native-sidecar. What pillion obtains \
comes from a ConfigMap (pillion.dev/config) or from annotations (pillion.dev/dns-names, ...); a bad annotation \
refuses the pod with a message naming it. The annotations are listed in the README.\n\n\
The webhook serves a certificate this same process obtains and renews (from --config, or the certificate \
flags); each renewal is served from the next connection on. With --webhook-configuration, the CA of that \
certificate is kept in the MutatingWebhookConfiguration's caBundle."
    )]
    Inject(InjectArgs),
    /// Print the version, the git commit and the target it was built for.
    Version,
}

/// `inject`'s flags: what to inject, where to serve, and the webhook's own
/// certificate.
// Not shown by `inject --help`: the `Inject` variant's doc comment replaces it.
#[derive(Debug, Clone, Args)]
pub struct InjectArgs {
    /// The pillion image to add to pods, e.g. registry.example.com/pillion:0.1.0.
    #[arg(long, env = "PILLION_INJECT_IMAGE", value_name = "IMAGE")]
    pub image: String,
    /// Serve the webhook (HTTPS) on this address.
    #[arg(
        long,
        env = "PILLION_INJECT_LISTEN",
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:8443"
    )]
    pub webhook_listen: std::net::SocketAddr,
    /// The certificate (a name in --config) the webhook serves. [default: the only one]
    #[arg(long, env = "PILLION_INJECT_CERTIFICATE", value_name = "NAME")]
    pub certificate: Option<String>,
    /// Keep the caBundle of this MutatingWebhookConfiguration equal to the certificate's CA
    /// (needs get and update on it; the Kubernetes client configuration is the pod's, or $KUBECONFIG).
    #[arg(
        long,
        env = "PILLION_INJECT_WEBHOOK_CONFIGURATION",
        value_name = "NAME"
    )]
    pub webhook_configuration: Option<String>,
    /// The webhook's certificate, when there is no --config.
    #[command(flatten)]
    pub cert: CertArgs,
}

/// `init`'s flags: the certificate, and how long to wait for it. No reload
/// flags: an init container runs before the app exists.
// Not shown by `init --help`: the `Init` variant's doc comment replaces it.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// The certificate to obtain, when there is no --config.
    #[command(flatten)]
    pub cert: CertArgs,
    /// Give up, exiting 1, if not everything is published by then.
    #[arg(long, env = "PILLION_INIT_TIMEOUT", value_name = "DURATION", default_value = DEFAULT_INIT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `status`'s flags: which files to inspect, and how to print them.
// Not shown by `status --help`: the `Status` variant's doc comment replaces it.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Output directory to inspect when no --config is given.
    #[arg(long, env = "PILLION_OUTPUT_DIR", value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Output format: a table, or JSON for scripts.
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_enum, default_value_t = StatusFormat::Table)]
    pub output: StatusFormat,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

/// The one-certificate flags. None of them may be combined with --config.
#[derive(Debug, Clone, Args, Default)]
#[command(next_help_heading = "Certificate (without --config)")]
pub struct CertArgs {
    /// Directory shared with the app; the files land directly in it.
    #[arg(long, env = "PILLION_OUTPUT_DIR", value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Name of the credential in logs and status. [default: tls]
    #[arg(long, env = "PILLION_NAME")]
    pub name: Option<String>,
    /// Subject common name.
    #[arg(long, env = "PILLION_COMMON_NAME", value_name = "CN")]
    pub common_name: Option<String>,
    /// DNS name to certify (repeatable; comma-separated in the env var).
    #[arg(
        long = "dns-name",
        env = "PILLION_DNS_NAMES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub dns_names: Vec<String>,
    /// IP address to certify (repeatable; comma-separated in the env var).
    #[arg(
        long = "ip-address",
        env = "PILLION_IP_ADDRESSES",
        value_name = "IP",
        value_delimiter = ','
    )]
    pub ip_addresses: Vec<String>,
    /// URI SAN to certify, e.g. a SPIFFE ID (repeatable; comma-separated in the env var).
    #[arg(
        long = "uri",
        env = "PILLION_URIS",
        value_name = "URI",
        value_delimiter = ','
    )]
    pub uris: Vec<String>,
    /// ECDSA-P256, ECDSA-P384, Ed25519, RSA-2048, RSA-3072 or RSA-4096. [default: ECDSA-P256]
    #[arg(long, env = "PILLION_KEY_ALGORITHM", value_name = "ALG")]
    pub key_algorithm: Option<String>,
    /// Certificate lifetime to ask for, e.g. 24h, 90m. [default: 24h]
    #[arg(long, env = "PILLION_DURATION", value_name = "DURATION")]
    pub duration: Option<String>,
    /// Renew this long before expiry (instead of --renew-before-percentage).
    #[arg(long, env = "PILLION_RENEW_BEFORE", value_name = "DURATION")]
    pub renew_before: Option<String>,
    /// Renew when this share of the issued lifetime is left. [default: 33]
    #[arg(long, env = "PILLION_RENEW_BEFORE_PERCENTAGE", value_name = "PERCENT")]
    pub renew_before_percentage: Option<i64>,
    /// Local CA certificate (PEM). Without --ca-cert/--ca-key the development CA is used.
    #[arg(long, env = "PILLION_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<String>,
    /// Local CA private key (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, env = "PILLION_CA_KEY", value_name = "FILE")]
    pub ca_key: Option<String>,
    /// Also write key + chain into one file with this name (one open reads a consistent pair).
    #[arg(long, env = "PILLION_BUNDLE", value_name = "FILENAME")]
    pub bundle: Option<String>,
}

/// How to tell the app to reload, without --config. Not for `init`: an init
/// container runs before the app exists.
#[derive(Debug, Clone, Args, Default)]
#[command(next_help_heading = "Reload (without --config)")]
pub struct ReloadArgs {
    /// Signal processes whose /proc/PID/comm is exactly this (needs shareProcessNamespace: true across containers).
    #[arg(long, env = "PILLION_RELOAD_PROCESS", value_name = "COMM")]
    pub reload_process: Option<String>,
    /// Signal processes whose command line matches this regex.
    #[arg(long, env = "PILLION_RELOAD_PROCESS_REGEX", value_name = "REGEX")]
    pub reload_process_regex: Option<String>,
    /// Signal the process whose PID is in this file.
    #[arg(long, env = "PILLION_RELOAD_PID_FILE", value_name = "FILE")]
    pub reload_pid_file: Option<String>,
    /// Run this command after publishing (split on whitespace, no shell).
    #[arg(long, env = "PILLION_RELOAD_COMMAND", value_name = "CMD")]
    pub reload_command: Option<String>,
    /// POST to this URL after publishing.
    #[arg(long, env = "PILLION_RELOAD_URL", value_name = "URL")]
    pub reload_url: Option<String>,
    /// Signal to send. [default: SIGHUP]
    #[arg(long, env = "PILLION_RELOAD_SIGNAL", value_name = "SIGNAL")]
    pub reload_signal: Option<String>,
}

/// `run` and `check`: the certificate and how to reload the app.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The certificate to obtain, when there is no --config.
    #[command(flatten)]
    pub cert: CertArgs,
    /// How to tell the app about new files, when there is no --config.
    #[command(flatten)]
    pub reload: ReloadArgs,
}

/// `status`'s output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// A table for people.
    Table,
    /// One JSON object, for scripts.
    Json,
}

/// A usage or configuration error: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// Certificate or reload flags were given together with --config.
    #[error("{flags} cannot be combined with --config: describe the certificate in the configuration file instead")]
    FlagsWithConfig {
        /// The flags given, comma-separated, e.g. `--out, --dns-name`.
        flags: String,
    },
    /// The --config file cannot be opened or read, is too large, or is not UTF-8.
    #[error("failed to read the configuration file {}: {cause}", path.display())]
    ReadConfig {
        /// The --config path as given.
        path: PathBuf,
        /// The read error.
        cause: std::io::Error,
    },
    /// The configuration, from the file or the flags (--listen included), has
    /// errors; each names its field.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
}

impl ReloadArgs {
    fn given_flags(&self) -> Vec<&'static str> {
        [
            (self.reload_process.is_some(), "--reload-process"),
            (
                self.reload_process_regex.is_some(),
                "--reload-process-regex",
            ),
            (self.reload_pid_file.is_some(), "--reload-pid-file"),
            (self.reload_command.is_some(), "--reload-command"),
            (self.reload_url.is_some(), "--reload-url"),
            (self.reload_signal.is_some(), "--reload-signal"),
        ]
        .into_iter()
        .filter_map(|(set, flag)| set.then_some(flag))
        .collect()
    }

    fn to_raw(&self) -> Option<RawReload> {
        (!self.given_flags().is_empty()).then(|| RawReload {
            signal: self.reload_signal.clone(),
            process: self.reload_process.clone(),
            process_regex: self.reload_process_regex.clone(),
            pid_file: self.reload_pid_file.clone(),
            command: self
                .reload_command
                .as_ref()
                .map(|c| c.split_whitespace().map(str::to_owned).collect()),
            url: self.reload_url.clone(),
            include_pid1: None,
        })
    }
}

impl CertArgs {
    fn given_flags(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        let mut check = |set: bool, flag| {
            if set {
                given.push(flag)
            }
        };
        check(self.out.is_some(), "--out");
        check(self.name.is_some(), "--name");
        check(self.common_name.is_some(), "--common-name");
        check(!self.dns_names.is_empty(), "--dns-name");
        check(!self.ip_addresses.is_empty(), "--ip-address");
        check(!self.uris.is_empty(), "--uri");
        check(self.key_algorithm.is_some(), "--key-algorithm");
        check(self.duration.is_some(), "--duration");
        check(self.renew_before.is_some(), "--renew-before");
        check(
            self.renew_before_percentage.is_some(),
            "--renew-before-percentage",
        );
        check(self.ca_cert.is_some(), "--ca-cert");
        check(self.ca_key.is_some(), "--ca-key");
        check(self.bundle.is_some(), "--bundle");
        given
    }

    /// Checks these flags as `run` would, reading nothing.
    ///
    /// # Errors
    /// Every problem, each naming its flag.
    pub(crate) fn validate(
        &self,
        reload: &ReloadArgs,
    ) -> Result<Config, Vec<crate::config::FieldError>> {
        Config::from_raw(self.to_raw(reload, None), Origin::Flags)
    }

    /// The raw configuration these flags describe, with `reload`'s.
    fn to_raw(&self, reload: &ReloadArgs, state_dir: Option<String>) -> RawConfig {
        let issuers = (self.ca_cert.is_some() || self.ca_key.is_some()).then(|| {
            let local = RawLocalCa {
                cert_file: self.ca_cert.clone(),
                key_file: self.ca_key.clone(),
            };
            [(
                "flags".to_owned(),
                RawIssuer {
                    local_ca: Some(local),
                    ..RawIssuer::default()
                },
            )]
            .into_iter()
            .collect()
        });
        let reload = reload.to_raw();
        let cert = RawCertificate {
            name: Some(self.name.clone().unwrap_or_else(|| "tls".to_owned())),
            issuer: None,
            common_name: self.common_name.clone(),
            dns_names: self.dns_names.clone(),
            ip_addresses: self.ip_addresses.clone(),
            uris: self.uris.clone(),
            private_key: self.key_algorithm.clone().map(|a| RawPrivateKey {
                algorithm: Some(a),
                rotation_policy: None,
            }),
            duration: self.duration.clone(),
            renew_before: self.renew_before.clone(),
            renew_before_percentage: self.renew_before_percentage,
            dir: None,
            files: self.bundle.clone().map(|b| RawFiles {
                bundle: Some(b),
                ..RawFiles::default()
            }),
            templates: None,
            sds: None,
        };
        RawConfig {
            output_dir: self.out.as_ref().map(|p| p.to_string_lossy().into_owned()),
            state_dir,
            issuers,
            certificates: Some(vec![cert]),
            secrets: None,
            reload,
            server: None,
            sds: None,
            workload_api: None,
            unparsed_issuers: Vec::new(),
        }
    }
}

impl Cli {
    /// The validated configuration: from --config, or from the flags.
    ///
    /// # Errors
    /// A usage error, an unreadable file, or every problem in the configuration.
    pub fn load_config(&self, cert: &CertArgs, reload: &ReloadArgs) -> Result<Config, UsageError> {
        let state_dir = self
            .state_dir
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        let listen = self.listen_flag()?;
        let mut config = match &self.config {
            Some(path) => {
                let mut given = cert.given_flags();
                given.extend(reload.given_flags());
                if !given.is_empty() {
                    return Err(UsageError::FlagsWithConfig {
                        flags: given.join(", "),
                    });
                }
                let text = crate::small_file::read_stream_to_string(path).map_err(|cause| {
                    UsageError::ReadConfig {
                        path: path.clone(),
                        cause,
                    }
                })?;
                let mut config =
                    Config::from_yaml(&text, &format!("the configuration {}", path.display()))?;
                if let Some(dir) = &self.state_dir {
                    config.state_dir = dir.clone();
                }
                config
            }
            None => Config::from_raw(cert.to_raw(reload, state_dir), Origin::Flags).map_err(
                |errors| {
                    UsageError::Config(ConfigErrors {
                        source_name: "the command line".into(),
                        errors,
                    })
                },
            )?,
        };
        if listen.is_some() {
            config.listen = listen;
        }
        Ok(config)
    }
}

impl Cli {
    fn listen_flag(&self) -> Result<Option<std::net::SocketAddr>, UsageError> {
        let Some(l) = &self.listen else {
            return Ok(None);
        };
        l.parse().map(Some).map_err(|_| {
            UsageError::Config(ConfigErrors {
                source_name: "the command line".into(),
                errors: vec![crate::config::FieldError {
                    path: "--listen".into(),
                    message: format!("{l:?} is not an address and port (e.g. 127.0.0.1:9102)"),
                }],
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_describe_one_certificate_in_the_output_directory() {
        let cli = Cli::parse_from([
            "pillion",
            "run",
            "--out",
            "/o",
            "--dns-name",
            "a",
            "--dns-name",
            "b",
            "--bundle",
            "all.pem",
        ]);
        let Command::Run(args) = &cli.command else {
            panic!()
        };
        let config = cli.load_config(&args.cert, &args.reload).unwrap();
        let cert = &config.certificates[0];
        assert_eq!(cert.names.dns_names, ["a", "b"]);
        assert_eq!(cert.target_dir(&config.output_dir), PathBuf::from("/o"));
        assert_eq!(cert.files.bundle.as_deref(), Some("all.pem"));
    }

    #[test]
    fn certificate_flags_cannot_be_combined_with_a_config_file() {
        let cli = Cli::parse_from(["pillion", "check", "--config", "/x.yaml", "--dns-name", "a"]);
        let Command::Check(args) = &cli.command else {
            panic!()
        };
        let err = cli.load_config(&args.cert, &args.reload).unwrap_err();
        assert!(err.to_string().contains("--dns-name"), "{err}");
    }

    #[test]
    fn init_takes_no_reload_flags() {
        let err = Cli::try_parse_from([
            "pillion",
            "init",
            "--out",
            "/o",
            "--reload-process",
            "nginx",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument, "{err}");
        assert!(Cli::try_parse_from([
            "pillion",
            "run",
            "--out",
            "/o",
            "--reload-process",
            "nginx"
        ])
        .is_ok());
    }
}
