//! The loop that ties everything together: plan -> obtain -> verify ->
//! publish -> reload -> schedule, for every credential, until told to stop.
//!
//! One failure never ends the loop: a failed renewal is logged, retried with
//! capped exponential backoff, and the files on disk stay until a verified
//! replacement exists (linkerd2-proxy's `Certify::run` does the same).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};
use zeroize::Zeroizing;

use crate::config::{CertificateSpec, Config, IssuerSpec, KeyRotation, SecretSpec};
use crate::issuers::{Issuer, IssuerError};
use crate::keys::{KeyError, PrivateKey};
use crate::keystore::{self, KeystoreError};
use crate::output::{read_live, AtomicDir, FileEntry, OutputError, Owner, Published, Staged};
use crate::reload;
use crate::schedule::{jitter_for, renewal_time, retry_delays};
use crate::secrets::{self, KvMount, SecretError};
use crate::telemetry::{chain, Metrics};
use crate::verify::{
    certs_from_pem, certs_to_pem, fmt_time, inspect, verify, CertInfo, Issued, VerifyError,
};

/// Credentials due within this window of each other are renewed in the same
/// round, so that the app is signalled once for all of them.
const ROUND_WINDOW: Duration = Duration::from_secs(1);

/// What the outside world can ask of a running agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Renew every credential now (SIGUSR1, `POST /rotate`).
    RenewAll,
    /// Renew one credential now (`POST /rotate?name=`).
    Renew(String),
    /// Re-read the configuration (SIGHUP).
    ReloadConfig,
    /// Stop (SIGTERM, SIGINT).
    Shutdown,
}

/// Loads and checks the configuration again, for SIGHUP: the validated
/// config and its loaded issuers, or every problem found.
pub type ConfigLoader = Box<dyn Fn() -> Result<(Config, BTreeMap<String, Issuer>), String> + Send>;

/// How the agent runs.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Forever, until [`Command::Shutdown`].
    Run,
    /// Until every credential is published, or the deadline passes.
    Init { timeout: Duration },
}

/// Why one attempt to renew a credential failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("failed to generate the private key")]
    Key(#[from] KeyError),
    #[error("a background task (key generation or file writing) failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("the issuer failed")]
    Issuer(#[from] IssuerError),
    #[error("the issued certificate was rejected")]
    Verify(#[from] VerifyError),
    #[error("publishing the files failed")]
    Output(#[from] OutputError),
    #[error("reading the secret failed")]
    Secret(#[from] SecretError),
    #[error("writing the PKCS#12 files failed")]
    Keystore(#[from] KeystoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("stopped by a signal before everything was published")]
    Interrupted,
    #[error("could not publish {} before the --timeout of {}: {}", names.join(", "), humantime::format_duration(*timeout), last_errors.join("; "))]
    InitDeadline {
        timeout: Duration,
        names: Vec<String>,
        last_errors: Vec<String>,
    },
}

/// Problems found by [`preflight`], one sentence each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n  "))]
pub struct PreflightErrors(pub Vec<String>);

/// Checks what parsing could not: that each issuer's files are usable, and
/// that the output directory can be created and written. With `create`, the
/// development CA is created when needed; without, nothing is written.
///
/// # Errors
/// Every problem found, each naming its file or directory.
pub fn preflight(
    config: &Config,
    create: bool,
) -> Result<BTreeMap<String, Issuer>, PreflightErrors> {
    let mut errors = Vec::new();
    if let Err(e) = check_writable(&config.output_dir) {
        errors.push(format!("outputDir: {e}"));
    }
    for (i, cert) in config.certificates.iter().enumerate() {
        if let Some(p12) = &cert.files.pkcs12 {
            if let Err(e) = keystore::read_password(&p12.password_file) {
                errors.push(format!(
                    "certificates[{i}].files.pkcs12.passwordFile: {}",
                    chain(&e)
                ));
            }
        }
    }
    let owners = config
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("certificates[{i}].files"), c.files.uid, c.files.gid))
        .chain(
            config
                .secrets
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("secrets[{i}]"), s.uid, s.gid)),
        );
    let mut me = None;
    for (field, uid, gid) in owners.filter(|(_, u, g)| u.is_some() || g.is_some()) {
        if let Err(e) = me
            .get_or_insert_with(Identity::current)
            .can_give_files_to(uid, gid)
        {
            errors.push(format!("{field}: {e}"));
        }
    }
    let mut issuers = BTreeMap::new();
    for (name, spec) in &config.issuers {
        match Issuer::load(spec, &config.state_dir, false) {
            Ok(issuer) => {
                issuers.insert(name.clone(), issuer);
            }
            Err(e) => errors.push(format!("issuers.{name}: {}", chain(&e))),
        }
    }
    // The development CA is created only once everything else checked out, so
    // a bad configuration leaves the state directory untouched too.
    if create && errors.is_empty() {
        for (name, spec) in config
            .issuers
            .iter()
            .filter(|(_, s)| **s == IssuerSpec::Development)
        {
            match Issuer::load(spec, &config.state_dir, true) {
                Ok(issuer) => {
                    issuers.insert(name.clone(), issuer);
                }
                Err(e) => errors.push(format!("issuers.{name}: {}", chain(&e))),
            }
        }
    }
    if errors.is_empty() {
        Ok(issuers)
    } else {
        Err(PreflightErrors(errors))
    }
}

/// Who pillion runs as, for the owner check: read once per check.
struct Identity {
    /// CAP_CHOWN (bit 0 of the effective capabilities) lets it give files
    /// to anyone.
    cap_chown: bool,
    euid: u32,
    /// The effective gid and the supplementary groups.
    gids: Vec<u32>,
}

impl Identity {
    fn current() -> Identity {
        let cap_chown = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .is_some_and(|caps| caps & 1 == 1);
        let mut gids: Vec<u32> = rustix::process::getgroups()
            .unwrap_or_default()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        gids.push(rustix::process::getegid().as_raw());
        Identity {
            cap_chown,
            euid: rustix::process::geteuid().as_raw(),
            gids,
        }
    }

    /// Whether files can be given owner `uid` and group `gid`: with CAP_CHOWN
    /// any; without, only pillion's own uid and its groups (chown(2)).
    fn can_give_files_to(&self, uid: Option<u32>, gid: Option<u32>) -> Result<(), String> {
        if self.cap_chown {
            return Ok(());
        }
        let euid = self.euid;
        if let Some(u) = uid.filter(|u| *u != euid) {
            return Err(format!(
                "uid {u} cannot be set: pillion runs as uid {euid} without CAP_CHOWN (run it as uid {u}, or grant CAP_CHOWN)"
            ));
        }
        if let Some(g) = gid.filter(|g| !self.gids.contains(g)) {
            return Err(format!(
                "gid {g} cannot be set: pillion (uid {euid}) is not in group {g} and lacks CAP_CHOWN (add the group with supplementalGroups or fsGroup, or grant CAP_CHOWN)"
            ));
        }
        Ok(())
    }
}

/// The output directory must be a writable directory, or creatable in the
/// nearest existing ancestor. Nothing is created here.
fn check_writable(dir: &Path) -> Result<(), String> {
    let mut probe = dir.to_path_buf();
    loop {
        match std::fs::metadata(&probe) {
            Ok(m) if m.is_dir() => {
                return rustix::fs::access(&probe, rustix::fs::Access::WRITE_OK)
                    .map_err(|e| format!("{} is not writable by pillion ({e})", probe.display()));
            }
            Ok(_) => {
                return Err(format!(
                    "{} cannot be created: {} is not a directory",
                    dir.display(),
                    probe.display()
                ))
            }
            Err(_) => {
                if !probe.pop() || probe.as_os_str().is_empty() {
                    probe = PathBuf::from(".");
                }
            }
        }
    }
}

/// What one credential is.
// A process holds a handful of these; boxing a variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Work {
    Certificate(CertificateSpec),
    Secret {
        spec: SecretSpec,
        kv: Option<KvMount>,
    },
}

struct Credential {
    work: Work,
    out: AtomicDir,
    /// Something verified is live in `out`.
    published: bool,
    /// The live certificate, for certificates.
    cert: Option<CertInfo>,
    next_attempt: SystemTime,
    retries: Option<Box<dyn Iterator<Item = Duration> + Send>>,
    last_error: Option<String>,
}

impl Work {
    fn same_spec(&self, other: &Work) -> bool {
        match (self, other) {
            (Work::Certificate(a), Work::Certificate(b)) => a == b,
            (Work::Secret { spec: a, .. }, Work::Secret { spec: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Credential {
    fn name(&self) -> &str {
        match &self.work {
            Work::Certificate(c) => &c.name,
            Work::Secret { spec, .. } => &spec.name,
        }
    }

    /// The paths of the files the app reads.
    fn visible_files(&self) -> Vec<PathBuf> {
        let names: Vec<&str> = match &self.work {
            Work::Certificate(c) => c.files.names().collect(),
            Work::Secret { spec, .. } => spec.format.file().into_iter().collect(),
        };
        names.iter().map(|n| self.out.path().join(n)).collect()
    }

    fn issuer(&self) -> &str {
        match &self.work {
            Work::Certificate(c) => &c.issuer,
            Work::Secret { spec, .. } => &spec.issuer,
        }
    }
}

/// What the admin endpoint may know of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialState {
    pub name: String,
    /// Something verified has been published.
    pub published: bool,
    /// The expiry of what is published, for certificates.
    pub not_after: Option<SystemTime>,
    /// The paths the app reads (the visible names); ready only while all exist.
    pub files: Vec<PathBuf>,
    /// After a failed attempt: when the next one comes. A request to renew
    /// does not bring it forward.
    pub retry_at: Option<SystemTime>,
}

/// The renewal loop for one configuration.
pub struct Agent {
    config: Config,
    issuers: BTreeMap<String, Issuer>,
    creds: Vec<Credential>,
    state: watch::Sender<Vec<CredentialState>>,
    metrics: Arc<Metrics>,
    loader: Option<ConfigLoader>,
}

impl Agent {
    /// Builds the agent and looks at what is already on disk: a certificate
    /// that is valid and still matches the configuration is kept, not issued
    /// again. Secrets are always read again at start.
    pub fn new(config: Config, issuers: BTreeMap<String, Issuer>, metrics: Arc<Metrics>) -> Agent {
        let now = SystemTime::now();
        for issuer in issuers.values() {
            if let Some(w) = issuer.warning() {
                warn!("{w}");
            }
        }
        let mut creds: Vec<Credential> = config
            .certificates
            .iter()
            .map(|spec| {
                let out = AtomicDir::new(spec.target_dir(&config.output_dir));
                let issuer = &issuers[&spec.issuer];
                let (cert, next_attempt) = match existing(spec, out.path(), issuer, now) {
                    Ok(info) => {
                        let at = renewal_time(info.not_before, info.not_after, spec.renew, jitter_for(&info.serial));
                        info!(cert = %spec.name, serial = %info.serial, not_after = %fmt_time(info.not_after), renew_at = %fmt_time(at), "reusing the valid certificate on disk");
                        metrics.certificate(&spec.name, info.not_after, at);
                        (Some(info), at)
                    }
                    Err(reason) => {
                        info!(cert = %spec.name, "issuing a certificate: {reason}");
                        (None, now)
                    }
                };
                Credential {
                    work: Work::Certificate(spec.clone()),
                    out,
                    published: cert.is_some(),
                    cert,
                    next_attempt,
                    retries: None,
                    last_error: None,
                }
            })
            .collect();
        creds.extend(config.secrets.iter().map(|spec| Credential {
            work: Work::Secret {
                spec: spec.clone(),
                kv: None,
            },
            out: AtomicDir::new(spec.target_dir(&config.output_dir)),
            published: false,
            cert: None,
            next_attempt: now,
            retries: None,
            last_error: None,
        }));
        let (state, _) = watch::channel(Vec::new());
        let agent = Agent {
            config,
            issuers,
            creds,
            state,
            metrics,
            loader: None,
        };
        agent.publish_state();
        agent
    }

    /// Follows what is published, for the admin endpoint.
    pub fn subscribe(&self) -> watch::Receiver<Vec<CredentialState>> {
        self.state.subscribe()
    }

    fn publish_state(&self) {
        let states = self
            .creds
            .iter()
            .map(|c| CredentialState {
                name: c.name().to_owned(),
                published: c.published,
                not_after: c.cert.as_ref().map(|i| i.not_after),
                files: c.visible_files(),
                retry_at: c.retries.is_some().then_some(c.next_attempt),
            })
            .collect();
        self.state.send_replace(states);
    }

    /// Marks credentials due now; returns false for a shutdown.
    ///
    /// Renewing on demand never cuts short the backoff of a credential whose
    /// last attempt failed: a storm of `/rotate` or SIGUSR1 must not hammer
    /// a CA that is already refusing. Requests only move a credential's next
    /// attempt to now, so any number of them before a round makes one round.
    fn apply(&mut self, command: Option<Command>) -> bool {
        match command {
            Some(Command::RenewAll) => {
                info!("renewing every credential now, as asked");
                self.renew_now(|_| true);
                true
            }
            Some(Command::Renew(name)) => {
                info!(cert = %name, "renewing now, as asked");
                self.renew_now(|c| c.name() == name);
                true
            }
            Some(Command::ReloadConfig) => {
                match &self.loader {
                    None => info!("SIGHUP: there is no configuration file to re-read (flags only)"),
                    Some(load) => match load() {
                        Ok((config, issuers)) => self.reconfigure(config, issuers),
                        Err(e) => error!(
                            "the new configuration is rejected; the running one stays:\n  {e}"
                        ),
                    },
                }
                true
            }
            Some(Command::Shutdown) | None => false,
        }
    }

    /// Applies `first` and every command already queued behind it, each
    /// kind once: a burst of requests is one round, not one round each.
    /// Returns false for a shutdown.
    fn apply_queued(
        &mut self,
        first: Option<Command>,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> bool {
        let mut batch = vec![first];
        loop {
            match commands.try_recv() {
                Ok(c) => {
                    if !batch.contains(&Some(c.clone())) {
                        batch.push(Some(c));
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    batch.push(None);
                    break;
                }
            }
            // Bounded work per wake-up, whatever is queued.
            if batch.len() > 64 {
                break;
            }
        }
        batch.into_iter().all(|c| self.apply(c))
    }

    /// Makes the credentials `which` selects due now, except those backing
    /// off after a failure.
    fn renew_now(&mut self, which: impl Fn(&Credential) -> bool) {
        let now = SystemTime::now();
        for c in self.creds.iter_mut().filter(|c| which(c)) {
            if c.retries.is_some() && c.next_attempt > now {
                let retry_in = c.next_attempt.duration_since(now).unwrap_or_default();
                info!(cert = %c.name(), retry_in = %humantime::format_duration(round_secs(retry_in)), "not renewing early: the last attempt failed and its backoff stands");
                continue;
            }
            c.next_attempt = c.next_attempt.min(now);
        }
    }

    /// Starts a task per Vault issuer that renews its token between uses.
    fn keep_tokens_alive(&self) {
        for client in self.issuers.values().filter_map(Issuer::vault) {
            tokio::spawn(crate::vault::VaultClient::keep_alive(Arc::downgrade(
                client,
            )));
        }
    }

    /// Lets SIGHUP re-read the configuration with `loader`.
    pub fn with_config_loader(mut self, loader: ConfigLoader) -> Agent {
        self.loader = Some(loader);
        self
    }

    /// Applies a new, valid configuration: credentials that are unchanged
    /// (same spec, same issuer settings) keep their state and schedule; new
    /// ones are obtained; changed ones are issued again; removed ones stop
    /// renewing (their files stay on disk).
    fn reconfigure(&mut self, config: Config, issuers: BTreeMap<String, Issuer>) {
        let fresh = Agent::new(config, issuers, self.metrics.clone());
        let old_config = std::mem::replace(&mut self.config, fresh.config);
        let old_issuers = std::mem::replace(&mut self.issuers, fresh.issuers);
        let mut old = std::mem::take(&mut self.creds);
        let (mut kept, mut added, mut changed) = (0, 0, 0);
        for mut c in fresh.creds {
            let same_issuer = old_config.issuers.get(c.issuer())
                == self.config.issuers.get(c.issuer())
                && old_issuers.contains_key(c.issuer());
            match old.iter().position(|o| o.name() == c.name()) {
                Some(i) if same_issuer && old[i].work.same_spec(&c.work) => {
                    let mut prev = old.remove(i);
                    // Keep the schedule and live state, but the new issuer
                    // object (a new Vault client logs in again when used).
                    prev.work = c.work;
                    self.creds.push(prev);
                    kept += 1;
                }
                Some(i) => {
                    old.remove(i);
                    c.next_attempt = SystemTime::now();
                    self.creds.push(c);
                    changed += 1;
                }
                None => {
                    self.creds.push(c);
                    added += 1;
                }
            }
        }
        self.keep_tokens_alive();
        let removed: Vec<String> = old.iter().map(|c| c.name().to_owned()).collect();
        info!(kept, added, changed, removed = %removed.join(","), "applied the new configuration");
        if old_config.listen != self.config.listen {
            warn!("server.listen changed: the admin endpoint keeps its address until pillion restarts");
        }
        self.publish_state();
    }

    /// Runs until `commands` says stop (or closes), or in init mode until
    /// everything is published.
    ///
    /// Cancellation: a round is abandoned at its next await when a shutdown
    /// arrives; a publish in progress is synchronous and completes first, so
    /// files are never left half-swapped.
    ///
    /// # Errors
    /// In init mode: the deadline passed, or a shutdown came, before
    /// everything was published.
    pub async fn run(
        mut self,
        mode: Mode,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), AgentError> {
        let deadline = match mode {
            Mode::Init { timeout } => Some((tokio::time::Instant::now() + timeout, timeout)),
            Mode::Run => None,
        };
        self.keep_tokens_alive();
        // Once per process (not on a reload, which would cut the grace of a
        // generation replaced moments ago): what a killed predecessor left
        // beside files reused now would otherwise stay until their renewal.
        for c in self.creds.iter_mut().filter(|c| c.published) {
            // Also makes the names visible that a kill between the swap of
            // `..data` and the renames after it (or a hand) left missing.
            if let Err(e) = c.out.recover() {
                error!(cert = %c.name(), error = %chain(&e), "the reused files cannot be made visible; issuing anew");
                c.published = false;
                c.cert = None;
                c.next_attempt = SystemTime::now();
            }
        }
        self.publish_state();
        loop {
            if matches!(mode, Mode::Init { .. }) && self.creds.iter().all(|c| c.published) {
                info!("all {} credential(s) published", self.creds.len());
                return Ok(());
            }
            let now = SystemTime::now();
            let next = self
                .creds
                .iter()
                .map(|c| c.next_attempt)
                .min()
                .unwrap_or(now + Duration::from_secs(3600));
            let wait = next.duration_since(now).unwrap_or_default();
            if wait.is_zero() {
                // Due now. A sleep, even of zero, would wait for the timer's
                // next 1 ms tick: only take a command that is already queued.
                match commands.try_recv() {
                    Ok(cmd) => {
                        if !self.apply_queued(Some(cmd), &mut commands) {
                            return stopped(mode);
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {}
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        if !self.apply(None) {
                            return stopped(mode);
                        }
                    }
                }
            } else {
                let wake = tokio::time::Instant::now() + wait;
                let wake = deadline.map_or(wake, |(d, _)| wake.min(d));
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {}
                    cmd = commands.recv() => if !self.apply_queued(cmd, &mut commands) {
                        return stopped(mode);
                    },
                }
            }
            if let Some((d, timeout)) = deadline {
                if tokio::time::Instant::now() >= d {
                    if let Some(e) = self.deadline_error(timeout) {
                        return Err(e);
                    }
                }
            }
            // Only a shutdown interrupts a round; other commands wait for
            // its end, so a round is never cut between publish and reload.
            // In init mode the deadline also cuts a round short: an issuer
            // may wait minutes for a signer that never comes.
            let mut pending = Vec::new();
            let mut timed_out = None;
            {
                let round = self.round(mode);
                tokio::pin!(round);
                let cutoff = async {
                    match deadline {
                        Some((d, _)) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(cutoff);
                loop {
                    tokio::select! {
                        () = &mut round => break,
                        () = &mut cutoff => {
                            timed_out = deadline.map(|(_, t)| t);
                            break;
                        }
                        cmd = commands.recv() => match cmd {
                            Some(Command::Shutdown) | None => {
                                info!("stopping during a renewal round; the files on disk are complete");
                                return stopped(mode);
                            }
                            Some(other) => {
                            // Coalesced: a burst during a round is one round after it.
                            if !pending.contains(&other) {
                                pending.push(other);
                            }
                        }
                        },
                    }
                }
            }
            if let Some(e) = timed_out.and_then(|t| self.deadline_error(t)) {
                return Err(e);
            }
            self.publish_state();
            for cmd in pending {
                self.apply(Some(cmd));
            }
        }
    }

    /// The init deadline's error, if anything is still unpublished.
    fn deadline_error(&self, timeout: Duration) -> Option<AgentError> {
        let missing: Vec<&Credential> = self.creds.iter().filter(|c| !c.published).collect();
        (!missing.is_empty()).then(|| AgentError::InitDeadline {
            timeout,
            names: missing.iter().map(|c| c.name().to_owned()).collect(),
            last_errors: missing
                .iter()
                .map(|c| {
                    c.last_error
                        .clone()
                        .unwrap_or_else(|| format!("{}: still waiting for its issuer", c.name()))
                })
                .collect(),
        })
    }

    /// Renews every credential that is due, then reloads the app once if
    /// any file changed.
    async fn round(&mut self, mode: Mode) {
        let due_by = SystemTime::now() + ROUND_WINDOW;
        let mut changed = Vec::new();
        for c in self.creds.iter_mut().filter(|c| c.next_attempt <= due_by) {
            let issuer = &self.issuers[c.issuer()];
            let started = std::time::Instant::now();
            let metrics = &self.metrics;
            let result = match &mut c.work {
                Work::Certificate(spec) => renew(spec, &mut c.out, issuer).await.map(|info| {
                    let at = renewal_time(info.not_before, info.not_after, spec.renew, jitter_for(&info.serial));
                    info!(
                        cert = %spec.name,
                        issuer = %spec.issuer,
                        serial = %info.serial,
                        not_after = %fmt_time(info.not_after),
                        renew_at = %fmt_time(at),
                        dir = %c.out.path().display(),
                        "published a new certificate"
                    );
                    metrics.certificate(&spec.name, info.not_after, at);
                    metrics.renewal(&spec.name, true, started.elapsed(), at);
                    c.cert = Some(info);
                    (true, at)
                }),
                Work::Secret { spec, kv } => refresh(spec, kv, &mut c.out, issuer).await.map(|fresh| {
                    if fresh {
                        info!(secret = %spec.name, path = %spec.path, dir = %c.out.path().display(), "published a new version of the secret");
                    } else {
                        debug!(secret = %spec.name, "the secret is unchanged");
                    }
                    metrics.secret_refresh(&spec.name, Some(fresh));
                    (fresh, SystemTime::now() + spec.refresh)
                }),
            };
            match result {
                Ok((fresh, next)) => {
                    if fresh {
                        changed.push(c.name().to_owned());
                    }
                    c.published = true;
                    c.next_attempt = next;
                    c.retries = None;
                    c.last_error = None;
                }
                Err(e) => {
                    let delay = c
                        .retries
                        .get_or_insert_with(|| Box::new(retry_delays()))
                        .next()
                        .unwrap_or(crate::schedule::RETRY_MAX);
                    let message = chain(&e);
                    let retry_in = humantime::format_duration(round_secs(delay));
                    match &c.work {
                        Work::Certificate(_) => {
                            error!(cert = %c.name(), error = %message, %retry_in, "renewal failed; the files on disk are unchanged")
                        }
                        Work::Secret { .. } => {
                            error!(secret = %c.name(), error = %message, %retry_in, "secret refresh failed; the files on disk are unchanged")
                        }
                    }
                    if c.cert
                        .as_ref()
                        .is_some_and(|cur| cur.not_after <= SystemTime::now())
                    {
                        error!(cert = %c.name(), "the certificate on disk has EXPIRED and could not be renewed");
                    }
                    c.last_error = Some(format!("{}: {message}", c.name()));
                    c.next_attempt = SystemTime::now() + delay;
                    match &c.work {
                        Work::Certificate(_) => {
                            self.metrics
                                .renewal(c.name(), false, started.elapsed(), c.next_attempt)
                        }
                        Work::Secret { .. } => self.metrics.secret_refresh(c.name(), None),
                    }
                }
            }
        }
        if changed.is_empty() || matches!(mode, Mode::Init { .. }) {
            return;
        }
        if let Some(spec) = &self.config.reload {
            let outcome = reload::reload(spec).await;
            self.metrics.reload(spec.target.kind(), outcome.is_ok());
            match outcome {
                Ok(what) => info!(changed = %changed.join(","), "reloaded the app: {what}"),
                Err(e) => {
                    warn!(error = %chain(&e), "reloading the app failed; the new files are in place")
                }
            }
        }
    }
}

fn stopped(mode: Mode) -> Result<(), AgentError> {
    match mode {
        Mode::Run => Ok(()),
        Mode::Init { .. } => Err(AgentError::Interrupted),
    }
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().max(1))
}

/// One attempt: key, CSR, sign, verify, publish.
async fn renew(
    spec: &CertificateSpec,
    out: &mut AtomicDir,
    issuer: &Issuer,
) -> Result<CertInfo, RenewError> {
    let owner = Owner {
        uid: spec.files.uid,
        gid: spec.files.gid,
    };
    // The new generation is begun in the background while the issuer works.
    // If anything fails before the files are written into it, it is removed
    // before this returns.
    let mut beginning = None;
    let (issued, key, files) = match obtain(spec, out.path(), issuer, owner, &mut beginning).await {
        Ok(obtained) => obtained,
        Err(e) => {
            if let Some(beginning) = beginning {
                abandon(beginning).await;
            }
            return Err(e);
        }
    };
    let mut staged = beginning
        .expect("obtain begins the generation before anything it returns")
        .await??
        .expect("the key was handed over: it was made, so the renewal goes on");
    // The rest of the files go into the hidden generation on a blocking
    // thread while another verifies the certificate: on a real disk the
    // fsyncs take longer than the verification. Nothing is visible until the
    // commit below, and a generation that is not committed (verification
    // failed, or this future was dropped) is removed when the staging result
    // is dropped.
    let staging = tokio::task::spawn_blocking(move || staged.write(&files, owner).map(|()| staged));
    // Path validation and parsing take CPU in proportion to what the CA
    // sent: a blocking thread too, so that the runtime thread stays free for
    // signals, the admin endpoint and the init deadline whatever the answer.
    let verifying = {
        let (issued, public_key, names) =
            (issued.clone(), key.public_key_raw(), spec.names.clone());
        tokio::task::spawn_blocking(move || verify(&issued, &public_key, &names, SystemTime::now()))
    };
    let (staged, verified) = tokio::join!(staging, verifying);
    let info = verified??;
    debug!(cert = %spec.name, serial = %info.serial, "the issued certificate passed verification");
    if let Some(change) = out
        .current()
        .and_then(|live| std::fs::read(live.join(&spec.files.ca)).ok())
        .and_then(|old| anchors_changed(&old, &issued.ca))
    {
        warn!(cert = %spec.name, before = %change.0, after = %change.1, "the trust anchors in {} changed: peers that trust only the old ones will reject this certificate until they load the new {0}", spec.files.ca);
    }
    match out.commit(staged??)? {
        Published::Generation(g) => {
            debug!(cert = %spec.name, generation = %g, "swapped in a new generation")
        }
        Published::Unchanged => debug!(cert = %spec.name, "the files were already up to date"),
    }
    Ok(info)
}

/// The certificate, its key and the files still to write (all but the key
/// where the key was already written into the generation begun in
/// `beginning`).
async fn obtain(
    spec: &CertificateSpec,
    dir: &Path,
    issuer: &Issuer,
    owner: Owner,
    beginning: &mut Option<Beginning>,
) -> Result<(Issued, PrivateKey, Vec<FileEntry>), RenewError> {
    if issuer.generates_keys() {
        *beginning = Some(begin_in_background(spec, dir, None, owner));
        let (issued, key) = issuer.issue(spec).await?;
        let mut files = payload(spec, &key, &issued)?;
        files.push(key_file(spec, &key));
        return Ok((issued, key, files));
    }
    let kept = match spec.key_rotation {
        KeyRotation::Never => existing_key(spec, dir),
        KeyRotation::Always => None,
    };
    let alg = spec.key_algorithm;
    let logs_in = issuer.vault().is_some();
    // The key, the CSR and the new generation with the key in it are made
    // while the issuer logs in (Vault) and signs: the login goes out first
    // and the server works on it meanwhile. A failed login returns at once;
    // the key is then dropped.
    let making_key = async {
        if logs_in {
            // A few turns of the runtime let the login connect and put its
            // request on the wire before this CPU work.
            for _ in 0..LOGIN_HEAD_START {
                tokio::task::yield_now().await;
            }
        }
        // The generation's directory and files are made while the key is,
        // and the key goes into it once there.
        let (key_tx, key_rx) = tokio::sync::oneshot::channel();
        *beginning = Some(begin_in_background(spec, dir, Some(key_rx), owner));
        let key = match kept {
            Some(k) => k,
            // RSA generation takes up to seconds of CPU: a blocking thread.
            None if alg.is_rsa() => {
                tokio::task::spawn_blocking(move || PrivateKey::generate(alg)).await??
            }
            // EC and Ed25519 keys take microseconds; a thread would cost more.
            None => PrivateKey::generate(alg)?,
        };
        let csr = key.csr(&spec.names)?;
        let _ = key_tx.send(key_file(spec, &key));
        Ok::<_, RenewError>((key, csr))
    };
    let logging_in = async { Ok::<_, RenewError>(issuer.log_in().await?) };
    let ((), (key, csr)) = tokio::try_join!(logging_in, making_key)?;
    let issued = issuer.sign(&csr, spec).await?;
    let files = payload(spec, &key, &issued)?;
    Ok((issued, key, files))
}

/// Turns of the runtime a login gets before the key is made: enough to
/// connect (on loopback at once), hand the request to the connection task
/// and write it.
const LOGIN_HEAD_START: usize = 3;

/// Begins the credential's next generation on a blocking thread while the
/// issuer works ([`AtomicDir::begin`]: its directory, files and symlinks),
/// keeping that off the path after the answer, and writes the key into it
/// when `key` brings one. `None` when `key`'s sender is dropped first: the
/// renewal failed, and the generation is already removed again.
fn begin_in_background(
    spec: &CertificateSpec,
    dir: &Path,
    key: Option<tokio::sync::oneshot::Receiver<FileEntry>>,
    owner: Owner,
) -> Beginning {
    let dir = dir.to_owned();
    let files: Vec<(String, u32)> = spec
        .files
        .with_modes()
        .map(|(name, mode)| (name.to_owned(), mode))
        .collect();
    tokio::task::spawn_blocking(move || {
        let files: Vec<(&str, u32)> = files.iter().map(|(n, m)| (n.as_str(), *m)).collect();
        let mut staged = AtomicDir::begin(&dir, &files, owner)?;
        if let Some(key) = key {
            let Ok(key) = key.blocking_recv() else {
                return Ok(None);
            };
            staged.write(&[key], owner)?;
        }
        Ok(Some(staged))
    })
}

/// A generation being begun in the background; see [`begin_in_background`].
type Beginning = tokio::task::JoinHandle<Result<Option<Staged>, OutputError>>;

/// Waits for a generation begun in the background and removes it, so that
/// a renewal that failed leaves nothing behind when it returns.
async fn abandon(beginning: Beginning) {
    if let Ok(Ok(Some(staged))) = beginning.await {
        let _ = tokio::task::spawn_blocking(move || drop(staged)).await;
    }
}

/// The subjects of the anchors before and after, when the CA file being
/// replaced (`old`, PEM) holds other anchors than `new`: a rotated or
/// replaced CA, which the operator should hear about.
fn anchors_changed(old: &[u8], new: &[Vec<u8>]) -> Option<(String, String)> {
    let old = certs_from_pem(old).ok().filter(|o| !o.is_empty())?;
    if old == new {
        return None;
    }
    let subjects = |ders: &[Vec<u8>]| {
        ders.iter()
            .map(|d| inspect(d).map_or_else(|_| "(unparsable)".to_owned(), |i| i.subject))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Some((subjects(&old), subjects(new)))
}

/// One secret refresh: read, render, publish if changed. True when a new
/// generation went live.
async fn refresh(
    spec: &SecretSpec,
    kv: &mut Option<KvMount>,
    out: &mut AtomicDir,
    issuer: &Issuer,
) -> Result<bool, RenewError> {
    let client = issuer
        .vault()
        .expect("validation lets secrets name only vault issuers");
    let mount = match kv {
        Some(m) => m.clone(),
        None => {
            let m = secrets::detect(client, spec).await?;
            debug!(secret = %spec.name, mount = %m.mount, version = m.version, "found the KV engine");
            kv.insert(m).clone()
        }
    };
    let data = secrets::read(client, spec, &mount).await?;
    let files = secrets::render(spec, &data)?;
    let owner = Owner {
        uid: spec.uid,
        gid: spec.gid,
    };
    Ok(matches!(
        out.publish(&files, owner)?,
        Published::Generation(_)
    ))
}

/// The files of a credential but the key itself ([`key_file`], written
/// earlier where it can be): certificate chain, CA, and the optional bundle
/// (key first, then the chain, as haproxy and Kubernetes' Pod Certificates
/// lay it out) and PKCS#12 files.
fn payload(
    spec: &CertificateSpec,
    key: &PrivateKey,
    issued: &Issued,
) -> Result<Vec<FileEntry>, KeystoreError> {
    let f = &spec.files;
    let chain_pem = certs_to_pem(&issued.chain);
    let mut files = vec![
        FileEntry {
            path: f.certificate.clone(),
            data: Zeroizing::new(chain_pem.clone().into_bytes()),
            mode: f.mode,
        },
        FileEntry {
            path: f.ca.clone(),
            data: Zeroizing::new(certs_to_pem(&issued.ca).into_bytes()),
            mode: f.mode,
        },
    ];
    if let Some(bundle) = &f.bundle {
        let key_pem = key.to_pem();
        let mut data = Zeroizing::new(Vec::with_capacity(key_pem.len() + chain_pem.len()));
        data.extend_from_slice(key_pem.as_bytes());
        data.extend_from_slice(chain_pem.as_bytes());
        files.push(FileEntry {
            path: bundle.clone(),
            data,
            mode: f.key_mode,
        });
    }
    if let Some(p12) = &f.pkcs12 {
        // Read at every publish, so a rotated password file takes effect.
        let password = keystore::read_password(&p12.password_file)?;
        if let Some(path) = &p12.keystore {
            let data = keystore::keystore(key, issued, &p12.alias, &password)?;
            files.push(FileEntry {
                path: path.clone(),
                data,
                mode: f.key_mode,
            });
        }
        if let Some(path) = &p12.truststore {
            let data = Zeroizing::new(keystore::truststore(issued, &password)?);
            files.push(FileEntry {
                path: path.clone(),
                data,
                mode: f.mode,
            });
        }
    }
    Ok(files)
}

/// The private key's file.
fn key_file(spec: &CertificateSpec, key: &PrivateKey) -> FileEntry {
    FileEntry {
        path: spec.files.private_key.clone(),
        data: Zeroizing::new(key.to_pem().as_bytes().to_vec()),
        mode: spec.files.key_mode,
    }
}

/// The key on disk, if it can be kept for the next certificate.
fn existing_key(spec: &CertificateSpec, dir: &Path) -> Option<PrivateKey> {
    let files = read_live(dir, &[&spec.files.private_key])?;
    let pem = files.into_iter().next()??;
    let key = PrivateKey::from_pem(std::str::from_utf8(&pem).ok()?).ok()?;
    (key.algorithm() == spec.key_algorithm).then_some(key)
}

/// Checks the credential on disk: complete, valid now, not yet due, with the
/// configured names, key type and CA, and its key matching its certificate.
fn existing(
    spec: &CertificateSpec,
    dir: &Path,
    issuer: &Issuer,
    now: SystemTime,
) -> Result<CertInfo, String> {
    let f = &spec.files;
    // Every file this credential publishes, read from one resolved
    // generation so that they belong together.
    let p12 = f.pkcs12.as_ref();
    let optional = [
        ("the bundle", f.bundle.as_deref()),
        ("the keystore", p12.and_then(|p| p.keystore.as_deref())),
        ("the truststore", p12.and_then(|p| p.truststore.as_deref())),
    ];
    let mut names = vec![
        f.certificate.as_str(),
        f.private_key.as_str(),
        f.ca.as_str(),
    ];
    names.extend(optional.iter().filter_map(|(_, n)| *n));
    let files = read_live(dir, &names).ok_or("no certificate on disk yet")?;
    let mut it = files.into_iter();
    let mut next = |what: &str| {
        it.next()
            .flatten()
            .ok_or(format!("{what} is missing on disk"))
    };
    let (cert_pem, key_pem, ca_pem) = (
        next("the certificate")?,
        next("the key")?,
        next("the CA file")?,
    );
    for (what, _) in optional.iter().filter(|(_, n)| n.is_some()) {
        next(what)?;
    }
    on_disk_fits(
        spec,
        issuer.generates_keys(),
        issuer.trust_anchors(),
        &cert_pem,
        &key_pem,
        &ca_pem,
        now,
    )
}

/// The pure part of [`existing`]: whether the certificate, key and CA files
/// read from disk belong together and fit the configuration.
pub(crate) fn on_disk_fits(
    spec: &CertificateSpec,
    generates_keys: bool,
    anchors: Option<Vec<Vec<u8>>>,
    cert_pem: &[u8],
    key_pem: &[u8],
    ca_pem: &[u8],
    now: SystemTime,
) -> Result<CertInfo, String> {
    let chain = certs_from_pem(cert_pem).map_err(|_| "the certificate on disk is not PEM")?;
    let ca = certs_from_pem(ca_pem).map_err(|_| "the CA file on disk is not PEM")?;
    let key = std::str::from_utf8(key_pem)
        .ok()
        .and_then(|k| PrivateKey::from_pem(k).ok())
        .ok_or("the key on disk is unreadable")?;
    if !generates_keys && key.algorithm() != spec.key_algorithm {
        return Err(format!(
            "the key on disk is {}, the configuration asks for {}",
            key.algorithm(),
            spec.key_algorithm
        ));
    }
    let issued = Issued { chain, ca };
    let info = verify(&issued, &key.public_key_raw(), &spec.names, now)
        .map_err(|e| format!("the certificate on disk does not fit: {e}"))?;
    if let Some(anchors) = anchors {
        if anchors != issued.ca {
            return Err(
                "the certificate on disk is from another CA than the configured one".into(),
            );
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(name: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_replaced_trust_anchor_is_noticed_and_an_unchanged_one_is_not() {
        let (a, b) = (ca("root A"), ca("root B"));
        let pem_a = certs_to_pem(std::slice::from_ref(&a));
        assert_eq!(
            anchors_changed(pem_a.as_bytes(), std::slice::from_ref(&a)),
            None
        );
        let (before, after) = anchors_changed(pem_a.as_bytes(), &[b]).unwrap();
        assert!(before.contains("root A"), "{before}");
        assert!(after.contains("root B"), "{after}");
        // Nothing published before (or an unreadable file): nothing to compare.
        assert_eq!(anchors_changed(b"", &[a]), None);
    }
}
