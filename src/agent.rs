//! The loop that ties everything together: obtain -> check -> publish ->
//! reload -> schedule, for every credential, until told to stop.
//!
//! The loop knows a credential only as a [`Plan`]: a [`Source`](crate::sources::Source)
//! that obtains it and the [`Sink`]s that make its files. It does not know
//! which issuer, secret engine or file format is behind them.
//!
//! One failure never ends the loop: a failed renewal is logged, retried with
//! capped exponential backoff, and the files on disk stay until a verified
//! replacement exists (linkerd2-proxy's `Certify::run` does the same).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::credential::{Checked, Credential, HeadStart, Inputs, Kind};
use crate::delivery::Hub;
use crate::issuers::Issuer;
use crate::keys::PrivateKey;
use crate::output::{read_live, AtomicDir, FileEntry, OutputError, Owner, Published, Staged};
use crate::reload;
use crate::schedule::Backoff;
use crate::sinks::{Sink, SinkError};
use crate::sources::{self, Plan, SourceError};
use crate::telemetry::{chain, Metrics};
use crate::verify::{fmt_time, CertInfo, VerifyError};

/// Credentials due within this window of each other are renewed in the same
/// round, so that the app is signalled once for all of them.
const ROUND_WINDOW: Duration = Duration::from_secs(1);
/// How long stopping waits for the sources to clean up (deleting a request a
/// cut-short round left) and give back what they hold (revoking leases):
/// stopping must stay quick whatever the servers do.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

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

/// Turns a configuration into the plans of its credentials:
/// [`sources::plans`], unless a test brings its own sources and sinks.
type Planner = Arc<dyn Fn(&Config, &BTreeMap<String, Arc<Issuer>>) -> Vec<Plan> + Send + Sync>;

/// How the agent runs.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Forever, until [`Command::Shutdown`].
    Run,
    /// Until every credential is published, or the deadline passes.
    Init {
        /// The deadline, from the start.
        timeout: Duration,
    },
}

/// Why one attempt to renew a credential failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The source could not obtain it.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A sink could not make its files of it.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A blocking task died.
    #[error("a background task (file writing or verification) failed")]
    Task(#[from] tokio::task::JoinError),
    /// The check refused what the source obtained.
    #[error("the issued certificate was rejected")]
    Verify(#[from] VerifyError),
    /// The files could not be published.
    #[error("publishing the files failed")]
    Output(#[from] OutputError),
}

/// Why [`Agent::run`] ended without success.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A shutdown came in init mode.
    #[error("stopped by a signal before everything was published")]
    Interrupted,
    /// Init mode's deadline passed.
    #[error("could not publish {} before the --timeout of {}: {}", names.join(", "), humantime::format_duration(*timeout), last_errors.join("; "))]
    InitDeadline {
        /// The `--timeout`.
        timeout: Duration,
        /// The credentials not yet published.
        names: Vec<String>,
        /// Why, for each.
        last_errors: Vec<String>,
    },
}

/// The loop's clock: the wall clock, or one that follows tokio's clock, which
/// tests pause and advance.
#[derive(Debug, Clone, Copy)]
enum Clock {
    Wall,
    #[cfg_attr(not(test), allow(dead_code))]
    Tokio {
        start: SystemTime,
        at: tokio::time::Instant,
    },
}

impl Clock {
    fn now(self) -> SystemTime {
        match self {
            Clock::Wall => SystemTime::now(),
            Clock::Tokio { start, at } => start + at.elapsed(),
        }
    }
}

/// One credential in the loop: its plan, and what the loop knows of it.
struct Entry {
    plan: Plan,
    out: AtomicDir,
    /// Something checked is live in `out`.
    published: bool,
    /// The live certificate, for certificates.
    cert: Option<CertInfo>,
    /// When the lease of what is live ends, for a leased secret.
    expires: Option<SystemTime>,
    next_attempt: SystemTime,
    backoff: Backoff,
    last_error: Option<String>,
    /// The templates that failed at the last render, whose last good file
    /// was kept: each message once, so that a failure is logged when it
    /// starts, not at every refresh.
    template_errors: Vec<String>,
    /// Its files are rendered again from what is in memory at the end of the
    /// next round (its templates changed with the configuration).
    rerender: bool,
    /// What is live has been handed to the sinks that push it.
    delivered: bool,
}

impl Entry {
    /// Looks at what is already on disk: a certificate that is valid and
    /// still matches the configuration is kept, not obtained again.
    fn new(plan: Plan, now: SystemTime, metrics: &Metrics) -> Entry {
        let out = AtomicDir::new(&plan.dir);
        let names: Vec<&str> = plan
            .sinks
            .iter()
            .flat_map(|s| s.files())
            .map(|(n, _)| n)
            .collect();
        let (cert, next_attempt) = match plan.source.reuse(&plan.dir, &names, now) {
            Some(Ok(info)) => {
                let at = plan
                    .source
                    .next_attempt(&Checked::Certificate(info.clone()), now);
                info!(cert = %plan.name, serial = %info.serial, not_after = %fmt_time(info.not_after), renew_at = %fmt_time(at), "reusing the valid certificate on disk");
                metrics.certificate(&plan.name, info.not_after, at);
                (Some(info), at)
            }
            Some(Err(reason)) => {
                info!(cert = %plan.name, "issuing a certificate: {reason}");
                (None, now)
            }
            None => (None, now),
        };
        Entry {
            plan,
            out,
            published: cert.is_some(),
            cert,
            expires: None,
            next_attempt,
            backoff: Backoff::new(),
            last_error: None,
            template_errors: Vec::new(),
            rerender: false,
            delivered: false,
        }
    }

    fn name(&self) -> &str {
        &self.plan.name
    }

    /// Whether a sink of this credential reads other credentials (templates).
    fn reads_others(&self) -> bool {
        self.plan.sinks.iter().any(|s| s.reads_others())
    }

    /// Whether a sink of this credential pushes it ([`Sink::delivers`]).
    fn delivers(&self) -> bool {
        self.plan.sinks.iter().any(|s| s.delivers())
    }

    /// Hands `credential`, now published, to the sinks that push it, when
    /// it is `fresh` or they have nothing yet.
    fn deliver(&mut self, credential: &Arc<Credential>, fresh: bool) {
        if !fresh && self.delivered {
            return;
        }
        for sink in &self.plan.sinks {
            sink.deliver(credential);
        }
        self.delivered = true;
    }

    /// Whether a sink of this credential reads the credential `name`.
    fn reads(&self, name: &str) -> bool {
        name != self.name() && self.plan.sinks.iter().any(|s| s.reads(name))
    }

    /// The paths of the files the app reads.
    fn visible_files(&self) -> Vec<PathBuf> {
        self.plan
            .sinks
            .iter()
            .flat_map(|s| s.files())
            .map(|(n, _)| self.out.path().join(n))
            .collect()
    }
}

/// What the admin endpoint may know of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialState {
    /// The credential's name.
    pub name: String,
    /// Something verified has been published.
    pub published: bool,
    /// The expiry of what is published: a certificate's notAfter, or the end
    /// of a leased secret's lease.
    pub not_after: Option<SystemTime>,
    /// The paths the app reads (the visible names); ready only while all exist.
    pub files: Vec<PathBuf>,
    /// After a failed attempt: when the next one comes. A request to renew
    /// does not bring it forward.
    pub retry_at: Option<SystemTime>,
    /// Why the last attempt failed, while it is failing.
    pub last_error: Option<String>,
    /// For a leased secret: when the lease of what is live ends.
    pub lease_expires: Option<SystemTime>,
    /// Templates that fail to render while their last good file is served.
    pub template_errors: Vec<String>,
}

/// The renewal loop for one configuration.
pub struct Agent {
    config: Config,
    issuers: BTreeMap<String, Arc<Issuer>>,
    creds: Vec<Entry>,
    state: watch::Sender<Vec<CredentialState>>,
    metrics: Arc<Metrics>,
    loader: Option<ConfigLoader>,
    planner: Planner,
    clock: Clock,
    /// The last checked credential of each, kept only while some sink reads
    /// other credentials (`templated`): templates render from it.
    inputs: Inputs,
    templated: bool,
}

impl Agent {
    /// Builds the agent and looks at what is already on disk: a certificate
    /// that is valid and still matches the configuration is kept, not issued
    /// again. Secrets are always read again at start.
    ///
    /// With `hub`, certificates are also offered to the push deliveries
    /// (Envoy SDS) once published, and what is live on disk at once.
    pub fn new(
        config: Config,
        issuers: BTreeMap<String, Issuer>,
        metrics: Arc<Metrics>,
        hub: Option<Hub>,
    ) -> Agent {
        let planner: Planner =
            Arc::new(move |config, issuers| sources::plans(config, issuers, hub.as_ref()));
        Agent::build(config, issuers, metrics, planner, Clock::Wall)
    }

    fn build(
        config: Config,
        issuers: BTreeMap<String, Issuer>,
        metrics: Arc<Metrics>,
        planner: Planner,
        clock: Clock,
    ) -> Agent {
        let now = clock.now();
        let issuers: BTreeMap<String, Arc<Issuer>> = issuers
            .into_iter()
            .map(|(name, issuer)| (name, Arc::new(issuer)))
            .collect();
        for issuer in issuers.values() {
            if let Some(w) = issuer.warning() {
                warn!("{w}");
            }
        }
        let mut creds: Vec<Entry> = planner(&config, &issuers)
            .into_iter()
            .map(|plan| Entry::new(plan, now, &metrics))
            .collect();
        // Credentials whose templates read others come last in a round, so
        // that what they read is fresh when they render.
        creds.sort_by_key(Entry::reads_others);
        let templated = creds.iter().any(Entry::reads_others);
        let mut inputs = Inputs::default();
        for c in creds.iter_mut().filter(|c| c.published) {
            if !templated && !c.delivers() {
                continue;
            }
            if let Some(live) = c.plan.source.live(&c.plan.dir) {
                let live = Arc::new(live);
                c.deliver(&live, true);
                if templated {
                    inputs.insert(c.name(), live);
                }
            }
        }
        let (state, _) = watch::channel(Vec::new());
        let agent = Agent {
            config,
            issuers,
            creds,
            state,
            metrics,
            loader: None,
            planner,
            clock,
            inputs,
            templated,
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
                not_after: c.cert.as_ref().map(|i| i.not_after).or(c.expires),
                files: c.visible_files(),
                retry_at: c.backoff.is_failing().then_some(c.next_attempt),
                last_error: c
                    .backoff
                    .is_failing()
                    .then(|| c.last_error.clone())
                    .flatten(),
                lease_expires: c.expires,
                template_errors: c.template_errors.clone(),
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
    fn renew_now(&mut self, which: impl Fn(&Entry) -> bool) {
        let now = self.clock.now();
        for c in self.creds.iter_mut().filter(|c| which(c)) {
            if c.backoff.is_failing() && c.next_attempt > now {
                let retry_in = c.next_attempt.duration_since(now).unwrap_or_default();
                info!(cert = %c.name(), retry_in = %humantime::format_duration(round_secs(retry_in)), "not renewing early: the last attempt failed and its backoff stands");
                continue;
            }
            c.next_attempt = c.next_attempt.min(now);
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
        let fresh = Agent::build(
            config,
            issuers,
            self.metrics.clone(),
            self.planner.clone(),
            self.clock,
        );
        let old_config = std::mem::replace(&mut self.config, fresh.config);
        self.issuers = fresh.issuers;
        let mut old = std::mem::take(&mut self.creds);
        let mut old_inputs = std::mem::take(&mut self.inputs);
        self.inputs = fresh.inputs;
        self.templated = fresh.templated;
        let (mut kept, mut added, mut changed) = (0, 0, 0);
        for mut c in fresh.creds {
            let issuer = &c.plan.issuer;
            let same_issuer = old_config.issuers.get(issuer) == self.config.issuers.get(issuer);
            match old.iter().position(|o| o.name() == c.name()) {
                Some(i) if same_issuer && old[i].plan.source.same_as(&*c.plan.source) => {
                    let mut prev = old.remove(i);
                    // Keep the schedule and live state, but the new source and
                    // sinks (a new Vault client logs in again when used). The
                    // new sinks have what was live only if the build gave it.
                    prev.plan = c.plan;
                    prev.delivered = c.delivered;
                    if self.templated {
                        // Its templates may have changed: render its files
                        // again from the credential in memory, or, with
                        // none there, obtain it again if templates need it.
                        if let Some(credential) = old_inputs.take(prev.name()) {
                            self.inputs.insert(prev.name(), credential);
                        }
                        if self.inputs.get(prev.name()).is_some() {
                            prev.rerender = true;
                        } else if prev.reads_others() {
                            prev.next_attempt = self.clock.now();
                        }
                    }
                    self.creds.push(prev);
                    kept += 1;
                }
                Some(i) => {
                    old.remove(i);
                    c.next_attempt = self.clock.now();
                    self.creds.push(c);
                    changed += 1;
                }
                None => {
                    self.creds.push(c);
                    added += 1;
                }
            }
        }
        self.creds.sort_by_key(Entry::reads_others);
        let removed: Vec<String> = old.iter().map(|c| c.name().to_owned()).collect();
        info!(kept, added, changed, removed = %removed.join(","), "applied the new configuration");
        if old_config.listen != self.config.listen {
            warn!("server.listen changed: the admin endpoint keeps its address until pillion restarts");
        }
        if old_config.sds != self.config.sds {
            warn!(
                "sds changed: the SDS server keeps its socket and settings until pillion restarts"
            );
        }
        let socket = |c: &Config| {
            c.workload_api
                .as_ref()
                .map(|w| (w.socket.clone(), w.mode, w.uid, w.gid))
        };
        if socket(&old_config) != socket(&self.config) {
            warn!("workloadApi changed: its socket keeps its path and settings until pillion restarts (the SVIDs follow the new configuration)");
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
        let result = self.serve(mode, &mut commands).await;
        self.wind_down(mode).await;
        result
    }

    /// As pillion stops, every source finishes what a round cut short left to clean up (a
    /// Kubernetes request to delete) and, in run mode only, gives back what it holds (a lease to
    /// revoke; an init's leases are for the app). One bound for all of it, so that stopping
    /// stays quick whatever the servers do.
    async fn wind_down(&mut self, mode: Mode) {
        let release = matches!(mode, Mode::Run);
        let all = futures::future::join_all(self.creds.iter_mut().map(|c| {
            let source = &mut c.plan.source;
            async move {
                source.settle().await;
                if release {
                    source.release().await;
                }
            }
        }));
        if tokio::time::timeout(RELEASE_TIMEOUT, all).await.is_err() {
            warn!("cleaning up and giving back leases took longer than {RELEASE_TIMEOUT:?}; stopping anyway");
        }
    }

    async fn serve(
        &mut self,
        mode: Mode,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), AgentError> {
        let deadline = match mode {
            Mode::Init { timeout } => Some((tokio::time::Instant::now() + timeout, timeout)),
            Mode::Run => None,
        };
        // Once per process (not on a reload, which would cut the grace of a
        // generation replaced moments ago): what a killed predecessor left
        // beside files reused now would otherwise stay until their renewal.
        let clock = self.clock;
        for c in self.creds.iter_mut().filter(|c| c.published) {
            // Also makes the names visible that a kill between the swap of
            // `..data` and the renames after it (or a hand) left missing.
            if let Err(e) = c.out.recover() {
                error!(cert = %c.name(), error = %chain(&e), "the reused files cannot be made visible; issuing anew");
                c.published = false;
                c.cert = None;
                c.next_attempt = clock.now();
            }
        }
        self.publish_state();
        loop {
            if matches!(mode, Mode::Init { .. }) && self.creds.iter().all(|c| c.published) {
                info!("all {} credential(s) published", self.creds.len());
                return Ok(());
            }
            let now = self.clock.now();
            // A credential whose templates changed with the configuration is
            // rendered again at once, in a round that obtains nothing for it.
            let next = self
                .creds
                .iter()
                .map(|c| if c.rerender { now } else { c.next_attempt })
                .min()
                .unwrap_or(now + Duration::from_secs(3600));
            let wait = next.duration_since(now).unwrap_or_default();
            if wait.is_zero() {
                // Due now. A sleep, even of zero, would wait for the timer's
                // next 1 ms tick: only take a command that is already queued.
                match commands.try_recv() {
                    Ok(cmd) => {
                        if !self.apply_queued(Some(cmd), commands) {
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
                    cmd = commands.recv() => if !self.apply_queued(cmd, commands) {
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
        let missing: Vec<&Entry> = self.creds.iter().filter(|c| !c.published).collect();
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
        let clock = self.clock;
        let due_by = clock.now() + ROUND_WINDOW;
        let mut changed = Vec::new();
        // Credentials whose templates read others are obtained with the
        // rest but rendered after all of them, so that each is published
        // once, with everything this round brought. (A certificate among
        // them gives up its head start: its files are written after.)
        let mut deferred = Vec::new();
        for (i, c) in self.creds.iter_mut().enumerate() {
            if c.next_attempt > due_by {
                continue;
            }
            let started = std::time::Instant::now();
            if self.templated && c.reads_others() {
                match obtain_checked(c, clock).await {
                    Ok((credential, checked)) => {
                        self.inputs.insert(c.name(), Arc::new(credential));
                        deferred.push((i, checked, started));
                    }
                    Err(e) => settle(c, Err(e), started, clock, &self.metrics, &mut changed),
                }
                continue;
            }
            let result = attempt(c, clock, &self.inputs).await;
            let result = result.map(|(credential, checked, fresh)| {
                let credential = Arc::new(credential);
                c.deliver(&credential, fresh);
                if self.templated {
                    self.inputs.insert(c.name(), credential);
                }
                (checked, fresh)
            });
            settle(c, result, started, clock, &self.metrics, &mut changed);
        }
        let mut rendered = Vec::new();
        for (i, checked, started) in deferred {
            let inputs = &self.inputs;
            let c = &mut self.creds[i];
            let own = inputs
                .get(c.name())
                .expect("phase one keeps what it obtained");
            if let Some(live) = c.out.current() {
                for sink in &c.plan.sinks {
                    sink.notice(&live, own);
                }
            }
            let noted = &mut c.template_errors;
            let result = render(
                &c.plan.name,
                c.out.path(),
                &c.plan.sinks,
                own,
                inputs,
                noted,
            )
            .and_then(|files| Ok(c.out.publish(&files, c.plan.owner)?))
            .map(|p| (checked, matches!(p, Published::Generation(_))));
            if let Ok((_, fresh)) = &result {
                if let Some(own) = inputs.get_arc(c.name()) {
                    c.deliver(&own, *fresh);
                }
            }
            settle(c, result, started, clock, &self.metrics, &mut changed);
            rendered.push(i);
        }
        if self.templated {
            self.render_again(&mut changed, &rendered);
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

impl Agent {
    /// Renders again, from the credentials in memory, the files of every
    /// credential whose templates read one in `changed` (or whose templates
    /// changed with the configuration), and publishes them when they differ
    /// from what is live; adds those that did to `changed`.
    /// `rendered` are the credentials already rendered after everything
    /// this round obtained.
    fn render_again(&mut self, changed: &mut Vec<String>, rendered: &[usize]) {
        let inputs = &self.inputs;
        for (i, c) in self.creds.iter_mut().enumerate() {
            let due = c.rerender || (!rendered.contains(&i) && changed.iter().any(|n| c.reads(n)));
            c.rerender = false;
            let Some(own) = inputs.get(c.name()).filter(|_| due) else {
                continue;
            };
            let name = c.plan.name.as_str();
            let noted = &mut c.template_errors;
            let published = render(name, c.out.path(), &c.plan.sinks, own, inputs, noted)
                .and_then(|files| Ok(c.out.publish(&files, c.plan.owner)?));
            match published {
                Ok(Published::Generation(g)) => {
                    info!(credential = %name, generation = %g, "rendered the templates again: what they read changed");
                    if !changed.iter().any(|n| n == name) {
                        changed.push(name.to_owned());
                    }
                }
                Ok(Published::Unchanged) => {
                    debug!(credential = %name, "rendered the templates again: nothing changed");
                }
                Err(e) => {
                    let message = chain(&e);
                    error!(credential = %name, error = %message, "rendering the templates again failed; the files on disk are unchanged");
                    c.last_error = Some(format!("{name}: {message}"));
                }
            }
        }
    }
}

/// Records how an attempt at `c` ended: its schedule, its backoff, its
/// metrics and logs; adds its name to `changed` when files changed.
fn settle(
    c: &mut Entry,
    result: Result<(Checked, bool), RenewError>,
    started: std::time::Instant,
    clock: Clock,
    metrics: &Metrics,
    changed: &mut Vec<String>,
) {
    let now = clock.now();
    let name = c.plan.name.as_str();
    match result {
        Ok((checked, fresh)) => {
            let next = c.plan.source.next_attempt(&checked, now);
            match checked {
                Checked::Certificate(info) => {
                    if fresh {
                        info!(
                            cert = %name,
                            issuer = %c.plan.issuer,
                            serial = %info.serial,
                            not_after = %fmt_time(info.not_after),
                            renew_at = %fmt_time(next),
                            dir = %c.out.path().display(),
                            "published a new certificate"
                        );
                        metrics.renewal(name, true, started.elapsed(), next);
                    } else {
                        // A source that reads files another component writes,
                        // looked at again: nothing changed.
                        debug!(cert = %name, serial = %info.serial, "the certificate is unchanged");
                    }
                    metrics.certificate(name, info.not_after, next);
                    c.cert = Some(info);
                }
                Checked::Secret { path, expires } => {
                    if let Some(expires) = expires {
                        metrics.secret_lease(name, expires);
                    }
                    c.expires = expires;
                    if fresh {
                        info!(secret = %name, %path, dir = %c.out.path().display(), "published a new version of the secret");
                    } else {
                        debug!(secret = %name, "the secret is unchanged");
                    }
                    metrics.secret_refresh(name, Some(fresh));
                }
            }
            if fresh {
                changed.push(name.to_owned());
            }
            c.published = true;
            c.next_attempt = next;
            c.backoff.succeeded();
            c.last_error = None;
        }
        Err(e) => {
            let delay = c.backoff.failed();
            let delay = c
                .plan
                .source
                .retry_within()
                .map_or(delay, |cap| delay.min(cap));
            let message = chain(&e);
            let retry_in = humantime::format_duration(round_secs(delay));
            match c.plan.kind {
                Kind::Certificate => {
                    error!(cert = %name, error = %message, %retry_in, "renewal failed; the files on disk are unchanged")
                }
                Kind::Secret => {
                    error!(secret = %name, error = %message, %retry_in, "secret refresh failed; the files on disk are unchanged")
                }
            }
            if c.cert.as_ref().is_some_and(|cur| cur.not_after <= now) {
                error!(cert = %name, "the certificate on disk has EXPIRED and could not be renewed");
            }
            c.last_error = Some(format!("{name}: {message}"));
            c.next_attempt = now + delay;
            match c.plan.kind {
                Kind::Certificate => {
                    metrics.renewal(name, false, started.elapsed(), c.next_attempt)
                }
                Kind::Secret => metrics.secret_refresh(name, None),
            }
        }
    }
}

/// Obtains and checks `c`'s credential without publishing it.
async fn obtain_checked(c: &mut Entry, clock: Clock) -> Result<(Credential, Checked), RenewError> {
    let credential = c
        .plan
        .source
        .obtain(&mut crate::credential::NoHeadStart)
        .await?;
    check(credential, clock).await
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

/// One attempt: obtain from the source, render every sink, check, publish.
/// True with the result when a new generation went live.
async fn attempt(
    c: &mut Entry,
    clock: Clock,
    inputs: &Inputs,
) -> Result<(Credential, Checked, bool), RenewError> {
    let owner = c.plan.owner;
    let mut head = Head {
        dir: c.out.path(),
        sinks: &c.plan.sinks,
        owner,
        beginning: None,
        key: None,
        written: Vec::new(),
    };
    // A generation begun in the background while the source worked is
    // removed before this returns if anything fails before it is complete.
    let made = match c.plan.source.obtain(&mut head).await {
        Ok(credential) => render(
            &c.plan.name,
            c.out.path(),
            &c.plan.sinks,
            &credential,
            inputs,
            &mut c.template_errors,
        )
        .map(|files| (credential, files)),
        Err(e) => Err(e.into()),
    };
    let Head {
        beginning, written, ..
    } = head;
    let (credential, mut files) = match made {
        Ok(made) => made,
        Err(e) => {
            if let Some(beginning) = beginning {
                abandon(beginning).await;
            }
            return Err(e);
        }
    };
    let name = c.plan.name.as_str();
    let Some(beginning) = beginning else {
        // Nothing begun (a secret): check, then publish, which writes
        // nothing when the content is what is live.
        let (credential, checked) = check(credential, clock).await?;
        let fresh = matches!(c.out.publish(&files, owner)?, Published::Generation(_));
        return Ok((credential, checked, fresh));
    };
    files.retain(|f| !written.contains(&f.path));
    let mut staged = beginning
        .await??
        .expect("a source that begins with a key hands it over before it succeeds");
    // The rest of the files go into the hidden generation on a blocking
    // thread while another checks the credential: on a real disk the
    // fsyncs take longer than the verification. Nothing is visible until the
    // commit below, and a generation that is not committed (the check
    // failed, or this future was dropped) is removed when the staging
    // result is dropped.
    let staging = tokio::task::spawn_blocking(move || staged.write(&files, owner).map(|()| staged));
    let (staged, checked) = tokio::join!(staging, check(credential, clock));
    let (credential, checked) = checked?;
    debug!(cert = %name, "the issued certificate passed verification");
    if let Some(live) = c.out.current() {
        for sink in &c.plan.sinks {
            sink.notice(&live, &credential);
        }
    }
    let fresh = match c.out.commit(staged??)? {
        Published::Generation(g) => {
            debug!(cert = %name, generation = %g, "swapped in a new generation");
            true
        }
        Published::Unchanged => {
            debug!(cert = %name, "the files were already up to date");
            false
        }
    };
    Ok((credential, checked, fresh))
}

/// Every sink's files of `credential`, published in `dir`.
///
/// A template that fails (an undefined key) does not hold back the rest:
/// its last good file is carried into the new generation, and the error
/// is noted in `noted` (replacing the last render's), logged only when it
/// is new. Only when there is no good file yet does the failure stop the
/// credential, so nothing is published without it.
fn render(
    name: &str,
    dir: &Path,
    sinks: &[Box<dyn Sink>],
    credential: &Credential,
    inputs: &Inputs,
    noted: &mut Vec<String>,
) -> Result<Vec<FileEntry>, RenewError> {
    let mut files = Vec::new();
    let mut failing = Vec::new();
    for sink in sinks {
        match sink.render(credential, inputs) {
            Ok(made) => files.extend(made),
            Err(SinkError::Template(e)) => {
                let kept = sink.files();
                let names: Vec<&str> = kept.iter().map(|(n, _)| *n).collect();
                let live = read_live(dir, &names).filter(|f| f.iter().all(Option::is_some));
                let Some(live) = live else {
                    return Err(SinkError::Template(e).into());
                };
                let message = e.to_string();
                if noted.contains(&message) {
                    debug!(credential = %name, error = %message, "the template still fails; its last good file stays");
                } else {
                    error!(credential = %name, error = %message, "rendering a template failed; its last good file stays, the other files are published");
                }
                failing.push(message);
                for ((file, mode), data) in kept.into_iter().zip(live) {
                    files.push(FileEntry {
                        path: file.to_owned(),
                        data: data.expect("checked above"),
                        mode,
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    if failing.is_empty() && !noted.is_empty() {
        info!(credential = %name, "every template renders again");
    }
    *noted = failing;
    Ok(files)
}

/// Checks `credential` ([`Credential::check`]): a certificate on a blocking
/// thread, since path validation and parsing take CPU in proportion to what
/// the CA sent, and the runtime thread must stay free for signals, the
/// admin endpoint and the init deadline whatever the answer.
async fn check(credential: Credential, clock: Clock) -> Result<(Credential, Checked), RenewError> {
    let now = clock.now();
    match credential.kind() {
        Kind::Secret => {
            let checked = credential.check(now)?;
            Ok((credential, checked))
        }
        Kind::Certificate => {
            let (credential, checked) = tokio::task::spawn_blocking(move || {
                let checked = credential.check(now);
                (credential, checked)
            })
            .await?;
            Ok((credential, checked?))
        }
    }
}

/// The loop's side of [`HeadStart`]: begins a credential's next generation
/// on a blocking thread while the source works ([`AtomicDir::begin`]: its
/// directory, files and symlinks), keeping that off the path after the
/// answer, and writes the sinks' key files into it when the key comes.
struct Head<'a> {
    dir: &'a Path,
    sinks: &'a [Box<dyn Sink>],
    owner: Owner,
    beginning: Option<Beginning>,
    key: Option<oneshot::Sender<Vec<FileEntry>>>,
    /// The files written with the key, not to be written again.
    written: Vec<String>,
}

impl HeadStart for Head<'_> {
    fn begin(&mut self, with_key: bool) {
        if self.beginning.is_some() {
            return;
        }
        let (key, key_rx) = match with_key {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        self.key = key;
        let dir = self.dir.to_owned();
        let owner = self.owner;
        let files: Vec<(String, u32)> = self
            .sinks
            .iter()
            .flat_map(|s| s.files())
            .map(|(name, mode)| (name.to_owned(), mode))
            .collect();
        self.beginning = Some(tokio::task::spawn_blocking(move || {
            let files: Vec<(&str, u32)> = files.iter().map(|(n, m)| (n.as_str(), *m)).collect();
            let mut staged = AtomicDir::begin(&dir, &files, owner)?;
            if let Some(key_rx) = key_rx {
                // `None` when the sender is dropped first: the attempt
                // failed, and the generation is removed again with `staged`.
                let Ok(key_files) = key_rx.blocking_recv() else {
                    return Ok(None);
                };
                staged.write(&key_files, owner)?;
            }
            Ok(Some(staged))
        }));
    }

    fn key(&mut self, key: &PrivateKey) {
        let Some(tx) = self.key.take() else {
            return;
        };
        let files: Vec<FileEntry> = self.sinks.iter().flat_map(|s| s.key_files(key)).collect();
        self.written = files.iter().map(|f| f.path.clone()).collect();
        let _ = tx.send(files);
    }
}

/// A generation being begun in the background; see [`Head`].
type Beginning = tokio::task::JoinHandle<Result<Option<Staged>, OutputError>>;

/// Waits for a generation begun in the background and removes it, so that
/// a renewal that failed leaves nothing behind when it returns.
async fn abandon(beginning: Beginning) {
    if let Ok(Ok(Some(staged))) = beginning.await {
        let _ = tokio::task::spawn_blocking(move || drop(staged)).await;
    }
}

/// The loop in-process, with in-memory sources and sinks: what it does is
/// seen in the sources' log of attempts, the files and the published state.
/// Most tests run on tokio's paused clock, so hours pass in milliseconds.
#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;
    use crate::credential::Secret;
    use crate::secrets::SecretError;
    use crate::sources::Source;

    /// What the in-memory sources are told to do, and what they saw.
    #[derive(Debug, Default)]
    struct Script {
        /// Every attempt: the credential's name and when, by the loop's clock.
        attempts: Vec<(String, Duration)>,
        /// These fail.
        failing: BTreeSet<String>,
        /// These never answer.
        hanging: BTreeSet<String>,
        /// The content of each credential; a change makes new files.
        versions: BTreeMap<String, u32>,
        /// Whose files were rendered, in order: once per publish.
        renders: Vec<String>,
    }

    type Shared = Arc<Mutex<Script>>;

    /// A source that answers from the [`Script`]: a secret whose data is
    /// its name and version, obtained again every `every`.
    #[derive(Debug)]
    struct Memory {
        name: String,
        every: Duration,
        script: Shared,
        clock: Clock,
        start: SystemTime,
    }

    impl Source for Memory {
        fn obtain<'a>(
            &'a mut self,
            _head: &'a mut dyn HeadStart,
        ) -> futures::future::BoxFuture<'a, Result<Credential, SourceError>> {
            Box::pin(async move {
                let at = self.clock.now().duration_since(self.start).unwrap();
                let (fails, hangs, version) = {
                    let mut s = self.script.lock().unwrap();
                    s.attempts.push((self.name.clone(), at));
                    (
                        s.failing.contains(&self.name),
                        s.hanging.contains(&self.name),
                        s.versions.get(&self.name).copied().unwrap_or_default(),
                    )
                };
                if hangs {
                    std::future::pending::<()>().await;
                }
                if fails {
                    return Err(SourceError::Secret(SecretError::NotFound {
                        path: self.name.clone(),
                    }));
                }
                let data = serde_json::json!({ "name": self.name, "version": version });
                Ok(Credential::Secret(Secret {
                    path: self.name.clone(),
                    data: data.as_object().unwrap().clone(),
                    expires: None,
                    meta: serde_json::Map::new(),
                }))
            })
        }

        fn next_attempt(&self, _checked: &Checked, now: SystemTime) -> SystemTime {
            now + self.every
        }

        fn same_as(&self, other: &dyn Source) -> bool {
            other
                .as_any()
                .downcast_ref::<Memory>()
                .is_some_and(|o| o.every == self.every)
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    /// A sink of one file holding the secret's data as JSON; it notes each
    /// render in the script.
    #[derive(Debug)]
    struct OneFile(Shared);

    impl Sink for OneFile {
        fn files(&self) -> Vec<(&str, u32)> {
            vec![("data.json", 0o600)]
        }

        fn render(
            &self,
            credential: &Credential,
            _inputs: &Inputs,
        ) -> Result<Vec<FileEntry>, SinkError> {
            let Credential::Secret(s) = credential else {
                unreachable!("the memory source makes secrets")
            };
            let name = s.path.clone();
            self.0.lock().unwrap().renders.push(name);
            Ok(vec![FileEntry {
                path: "data.json".into(),
                data: serde_json::to_vec(&s.data).unwrap().into(),
                mode: 0o600,
            }])
        }
    }

    /// A loop under test: every `certificates[]` entry of the YAML becomes a
    /// memory source (its `duration` is how often it is obtained again) with
    /// one file.
    struct Case {
        dir: tempfile::TempDir,
        script: Shared,
        clock: Clock,
        start: SystemTime,
    }

    impl Case {
        fn new(paused: bool) -> Case {
            let clock = match paused {
                true => Clock::Tokio {
                    start: SystemTime::now(),
                    at: tokio::time::Instant::now(),
                },
                false => Clock::Wall,
            };
            Case {
                dir: tempfile::tempdir().unwrap(),
                script: Shared::default(),
                clock,
                start: clock.now(),
            }
        }

        /// `certs`: (name, how often) pairs; `extra`: more YAML.
        fn config(&self, certs: &[(&str, &str)], extra: &str) -> Config {
            let mut yaml = format!("outputDir: {}\ncertificates:\n", self.dir.path().display());
            for (name, every) in certs {
                yaml +=
                    &format!("- name: {name}\n  dnsNames: [{name}.example]\n  duration: {every}\n");
            }
            Config::from_yaml(&(yaml + extra), "test.yaml").unwrap()
        }

        fn planner(&self) -> Planner {
            let (script, clock, start) = (self.script.clone(), self.clock, self.start);
            Arc::new(move |config: &Config, _: &BTreeMap<String, Arc<Issuer>>| {
                config
                    .certificates
                    .iter()
                    .map(|spec| Plan {
                        name: spec.name.clone(),
                        issuer: spec.issuer.clone(),
                        // The loop treats these as certificates.
                        kind: match spec.name.starts_with("cert") {
                            true => Kind::Certificate,
                            false => Kind::Secret,
                        },
                        dir: spec.target_dir(&config.output_dir),
                        owner: Owner::default(),
                        source: Box::new(Memory {
                            name: spec.name.clone(),
                            every: spec.duration,
                            script: script.clone(),
                            clock,
                            start,
                        }),
                        sinks: std::iter::once(Box::new(OneFile(script.clone())) as Box<dyn Sink>)
                            .chain(spec.templates.iter().map(|t| {
                                Box::new(crate::sinks::Template::new(&spec.name, t))
                                    as Box<dyn Sink>
                            }))
                            .collect(),
                    })
                    .collect()
            })
        }

        fn agent(&self, config: Config) -> Agent {
            Agent::build(
                config,
                BTreeMap::new(),
                Arc::new(Metrics::new()),
                self.planner(),
                self.clock,
            )
        }

        /// Runs `agent` in the background.
        fn spawn(
            &self,
            agent: Agent,
            mode: Mode,
        ) -> (
            mpsc::UnboundedSender<Command>,
            tokio::task::JoinHandle<Result<(), AgentError>>,
        ) {
            let (tx, rx) = mpsc::unbounded_channel();
            (tx, tokio::spawn(agent.run(mode, rx)))
        }

        /// When each attempt at `name` came, in whole seconds from the start.
        fn attempts(&self, name: &str) -> Vec<u64> {
            let s = self.script.lock().unwrap();
            s.attempts
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, at)| at.as_secs())
                .collect()
        }

        fn set(&self, what: impl FnOnce(&mut Script)) {
            what(&mut self.script.lock().unwrap());
        }
    }

    async fn stop(
        tx: mpsc::UnboundedSender<Command>,
        run: tokio::task::JoinHandle<Result<(), AgentError>>,
    ) {
        tx.send(Command::Shutdown).unwrap();
        run.await.unwrap().unwrap();
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn credentials_are_obtained_again_when_their_source_says() {
        let case = Case::new(true);
        let agent = case.agent(case.config(&[("a", "10m"), ("b", "25m")], ""));
        let (tx, run) = case.spawn(agent, Mode::Run);
        tokio::time::sleep(61 * MINUTE).await;
        stop(tx, run).await;
        assert_eq!(case.attempts("a"), [0, 600, 1200, 1800, 2400, 3000, 3600]);
        assert_eq!(case.attempts("b"), [0, 1500, 3000]);
        let data = std::fs::read(case.dir.path().join("a/data.json")).unwrap();
        assert!(String::from_utf8(data).unwrap().contains("version"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_credential_backs_off_capped_while_the_others_go_on() {
        let case = Case::new(true);
        case.set(|s| {
            s.failing.insert("a".into());
        });
        let agent = case.agent(case.config(&[("a", "10m"), ("b", "10m")], ""));
        let state = agent.subscribe();
        let (tx, run) = case.spawn(agent, Mode::Run);
        tokio::time::sleep(181 * MINUTE).await;
        {
            let state = state.borrow();
            let (a, b) = (&state[0], &state[1]);
            assert!(!a.published && a.retry_at.is_some(), "{a:?}");
            assert!(b.published && b.retry_at.is_none(), "{b:?}");
        }
        let a = case.attempts("a");
        let gaps: Vec<u64> = a.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            (1..=2).contains(&gaps[0]),
            "the first retry comes after 1-2 s: {gaps:?}"
        );
        assert!(
            gaps.iter().all(|g| *g <= 600),
            "capped at 300 s, jitter at most doubles it: {gaps:?}"
        );
        assert!(
            gaps[10..].iter().all(|g| *g >= 300),
            "and it grows to the cap: {gaps:?}"
        );
        assert!(a.len() >= 20, "it never gives up: {a:?}");
        // The other credential keeps its own schedule throughout (a second
        // early when a retry of `a` comes within the round window before it).
        let b = case.attempts("b");
        assert_eq!(b.len(), 19, "{b:?}");
        assert!(
            b.windows(2).all(|w| (598..=600).contains(&(w[1] - w[0]))),
            "{b:?}"
        );

        // Recovery: the next attempt succeeds, by itself.
        case.set(|s| {
            s.failing.clear();
        });
        tokio::time::sleep(11 * MINUTE).await;
        assert!(state.borrow()[0].published);
        assert!(state.borrow()[0].retry_at.is_none());
        stop(tx, run).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_to_renew_does_not_cut_a_backoff_short() {
        let case = Case::new(true);
        case.set(|s| {
            s.failing.insert("a".into());
        });
        let agent = case.agent(case.config(&[("a", "10m")], ""));
        let (tx, run) = case.spawn(agent, Mode::Run);
        // Into the backoff: attempts at 0 s, 1-2 s, then 2-4 s later...
        tokio::time::sleep(20 * MINUTE).await;
        let before = case.attempts("a").len();
        for _ in 0..50 {
            tx.send(Command::RenewAll).unwrap();
            tx.send(Command::Renew("a".into())).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(case.attempts("a").len(), before, "100 requests, no attempt");
        stop(tx, run).await;
    }

    #[tokio::test(start_paused = true)]
    async fn sighup_keeps_unchanged_credentials_and_obtains_added_and_changed_ones() {
        let case = Case::new(true);
        let first = case.config(&[("a", "10m"), ("b", "10m"), ("c", "10m")], "");
        let second = {
            let dir = case.dir.path().display().to_string();
            move || {
                let yaml = format!("outputDir: {dir}\ncertificates:\n- {{name: a, dnsNames: [a.example], duration: 10m}}\n- {{name: b, dnsNames: [b.example], duration: 20m}}\n- {{name: d, dnsNames: [d.example], duration: 10m}}\n");
                Ok((
                    Config::from_yaml(&yaml, "test.yaml").unwrap(),
                    BTreeMap::new(),
                ))
            }
        };
        let agent = case.agent(first).with_config_loader(Box::new(second));
        let state = agent.subscribe();
        let (tx, run) = case.spawn(agent, Mode::Run);
        tokio::time::sleep(MINUTE).await;
        tx.send(Command::ReloadConfig).unwrap();
        // To 650 s: past a's renewal at 600 s, before d's at 660 s.
        tokio::time::sleep(10 * MINUTE - Duration::from_secs(10)).await;
        let names: Vec<String> = state.borrow().iter().map(|c| c.name.clone()).collect();
        stop(tx, run).await;

        assert_eq!(
            case.attempts("a"),
            [0, 600],
            "unchanged: its schedule stands"
        );
        assert_eq!(
            case.attempts("b"),
            [0, 60],
            "changed: obtained again at once"
        );
        assert_eq!(case.attempts("c"), [0], "removed: no longer renewed");
        assert_eq!(case.attempts("d"), [60], "added: obtained at once");
        assert_eq!(names, ["a", "b", "d"]);
    }

    #[tokio::test(start_paused = true)]
    async fn sighup_renders_a_changed_template_at_once_without_obtaining_again() {
        let case = Case::new(true);
        let yaml = |text: &str| {
            format!(
                "outputDir: {}\ncertificates:\n- name: a\n  dnsNames: [a.example]\n  duration: 1h\n  templates:\n  - {{file: t.txt, template: \"{text}\"}}\n",
                case.dir.path().display()
            )
        };
        let first = Config::from_yaml(&yaml("one {{ secrets['a'].version }}"), "t.yaml").unwrap();
        let second = yaml("two {{ secrets['a'].version }}");
        let agent = case.agent(first).with_config_loader(Box::new(move || {
            Ok((
                Config::from_yaml(&second, "t.yaml").unwrap(),
                BTreeMap::new(),
            ))
        }));
        let (tx, run) = case.spawn(agent, Mode::Run);
        let rendered = || std::fs::read_to_string(case.dir.path().join("a/t.txt")).unwrap();
        tokio::time::sleep(MINUTE).await;
        assert_eq!(rendered(), "one 0");
        tx.send(Command::ReloadConfig).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(rendered(), "two 0", "rendered again at once");
        stop(tx, run).await;
        assert_eq!(case.attempts("a"), [0], "not obtained again for it");
    }

    #[tokio::test(start_paused = true)]
    async fn init_ends_at_its_deadline_naming_what_is_missing_and_why() {
        let case = Case::new(true);
        case.set(|s| {
            s.failing.insert("c".into());
            s.hanging.insert("a".into());
        });
        // In the configured order: b is published, c fails, a never answers.
        let agent = case.agent(case.config(&[("b", "10m"), ("c", "10m"), ("a", "10m")], ""));
        let (_tx, run) = case.spawn(
            agent,
            Mode::Init {
                timeout: Duration::from_secs(30),
            },
        );
        let started = tokio::time::Instant::now();
        let Err(AgentError::InitDeadline {
            names, last_errors, ..
        }) = run.await.unwrap()
        else {
            panic!("init must fail at its deadline");
        };
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(names, ["c", "a"]);
        assert!(
            last_errors[0].contains("c does not exist"),
            "{last_errors:?}"
        );
        assert_eq!(last_errors[1], "a: still waiting for its issuer");
    }

    #[tokio::test(start_paused = true)]
    async fn init_ends_once_everything_is_published() {
        let case = Case::new(true);
        let agent = case.agent(case.config(&[("a", "10m"), ("b", "10m")], ""));
        let (_tx, run) = case.spawn(
            agent,
            Mode::Init {
                timeout: Duration::from_secs(30),
            },
        );
        run.await.unwrap().unwrap();
        assert_eq!(case.attempts("a"), [0]);
        assert_eq!(case.attempts("b"), [0]);
    }

    /// Real time: the reload runs a real command.
    #[tokio::test]
    async fn one_reload_per_round_and_none_when_nothing_changed() {
        let case = Case::new(false);
        let count = case.dir.path().join("reloads");
        let reload = format!(
            "reload:\n  command: [sh, -c, 'echo r >> \"$0\"', {}]\n",
            count.display()
        );
        let agent = case.agent(case.config(&[("a", "1h"), ("b", "1h"), ("c", "1h")], &reload));
        let mut state = agent.subscribe();
        let (tx, run) = case.spawn(agent, Mode::Run);
        let reloads = || {
            std::fs::read_to_string(&count)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let round = |state: &mut watch::Receiver<_>, command: Command| {
            state.borrow_and_update();
            tx.send(command).unwrap();
            let mut state = state.clone();
            async move { state.changed().await.unwrap() }
        };
        // Three credentials published in the first round: one reload.
        while !state.borrow().iter().all(|c| c.published) {
            state.changed().await.unwrap();
        }
        assert_eq!(reloads(), 1);
        // Renewed, but nothing changed: no reload.
        round(&mut state, Command::RenewAll).await;
        assert_eq!(reloads(), 1);
        // Two of three changed: one reload.
        case.set(|s| {
            s.versions.insert("a".into(), 1);
            s.versions.insert("c".into(), 1);
        });
        round(&mut state, Command::RenewAll).await;
        assert_eq!(reloads(), 2);
        stop(tx, run).await;
    }

    #[tokio::test]
    async fn a_template_is_rendered_again_when_what_it_reads_changes_with_one_reload() {
        let case = Case::new(false);
        let count = case.dir.path().join("reloads");
        let extra = format!(
            "  templates:\n  - file: t.txt\n    template: \"a={{{{ secrets['a'].version }}}} b={{{{ secrets['b'].version }}}}\"\nreload:\n  command: [sh, -c, 'echo r >> \"$0\"', {}]\n",
            count.display()
        );
        // `b` has the template; `a` is listed after it, but is obtained first.
        let config = case.config(&[("c", "1h"), ("b", "1h")], &extra);
        let mut config_a = case.config(&[("a", "1h")], "");
        let mut config = config;
        config
            .certificates
            .insert(0, config_a.certificates.remove(0));
        let agent = case.agent(config);
        let mut state = agent.subscribe();
        let (tx, run) = case.spawn(agent, Mode::Run);
        let reloads = || {
            std::fs::read_to_string(&count)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let rendered = || std::fs::read_to_string(case.dir.path().join("b/t.txt")).unwrap();
        while !state.borrow().iter().all(|c| c.published) {
            if tokio::time::timeout(Duration::from_secs(10), state.changed())
                .await
                .is_err()
            {
                panic!("not everything was published: {:?}", *state.borrow());
            }
        }
        assert_eq!(rendered(), "a=0 b=0");
        assert_eq!(reloads(), 1);

        // Only `a` changes and only `a` is obtained again: `b`'s template
        // follows in the same round, and the app is told once.
        case.set(|s| {
            s.versions.insert("a".into(), 1);
        });
        state.borrow_and_update();
        tx.send(Command::Renew("a".into())).unwrap();
        state.changed().await.unwrap();
        assert_eq!(rendered(), "a=1 b=0");
        assert_eq!(reloads(), 2);
        assert_eq!(case.attempts("b").len(), 1, "b is not obtained again");

        // `c` changes, which the template does not read: nothing of b is
        // written again.
        let before = std::fs::read_link(case.dir.path().join("b/..data")).unwrap();
        case.set(|s| {
            s.versions.insert("c".into(), 1);
        });
        state.borrow_and_update();
        tx.send(Command::Renew("c".into())).unwrap();
        state.changed().await.unwrap();
        assert_eq!(
            std::fs::read_link(case.dir.path().join("b/..data")).unwrap(),
            before
        );
        assert_eq!(reloads(), 3, "c itself changed");
        stop(tx, run).await;
    }

    /// A certificate and a secret whose templates read each other, renewed
    /// in one round: each is published once, with the other's new content.
    #[tokio::test]
    async fn credentials_whose_templates_read_each_other_are_published_once_per_round() {
        let case = Case::new(false);
        let template = |reads: &str| {
            format!("  templates:\n  - file: t.txt\n    template: \"{{{{ secrets['{reads}'].version }}}}\"\n")
        };
        let mut config = case.config(&[("cert", "1h")], &template("sec"));
        let mut sec = case.config(&[("sec", "1h")], &template("cert"));
        config.certificates.push(sec.certificates.remove(0));
        let agent = case.agent(config);
        let mut state = agent.subscribe();
        let (tx, run) = case.spawn(agent, Mode::Run);
        while !state.borrow().iter().all(|c| c.published) {
            state.changed().await.unwrap();
        }
        case.set(|s| {
            s.renders.clear();
            s.versions.insert("cert".into(), 1);
            s.versions.insert("sec".into(), 1);
        });
        state.borrow_and_update();
        tx.send(Command::RenewAll).unwrap();
        state.changed().await.unwrap();
        let rendered =
            |name: &str| std::fs::read_to_string(case.dir.path().join(name).join("t.txt")).unwrap();
        assert_eq!(
            (rendered("cert"), rendered("sec")),
            ("1".into(), "1".into())
        );
        let mut renders = case.script.lock().unwrap().renders.clone();
        renders.sort();
        assert_eq!(renders, ["cert", "sec"], "each rendered and published once");
        stop(tx, run).await;
    }
}
