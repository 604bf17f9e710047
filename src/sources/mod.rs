//! Where credentials come from. A source obtains a [`Credential`] for one
//! configured certificate or secret: a key signed by an issuer
//! ([`crate::issuers`]), or a secret read from Vault's KV engine.
//!
//! Adding a source: a module here with a type that implements [`Source`],
//! its configuration in [`crate::config`], and one line in [`plans`]. The
//! loop does not change.

mod certificate;
mod files;
mod kv;
mod token;

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use crate::config::Config;
use crate::credential::{Checked, Credential, HeadStart, Kind};
use crate::delivery::Hub;
use crate::issuers::{Issuer, IssuerError};
use crate::keys::KeyError;
use crate::output::Owner;
use crate::secrets::SecretError;
use crate::sinks::{self, Sink};
use crate::verify::CertInfo;

pub(crate) use certificate::on_disk_fits;
pub use certificate::CertificateSource;
pub use files::{FilesError, FilesSource};
pub use kv::KvSource;
pub use token::{TokenSource, TOKEN_CHECK_INTERVAL};

/// A producer of one credential.
pub trait Source: Send + fmt::Debug {
    /// Obtains a fresh credential. While it waits for its issuer, it may
    /// give `head` a head start on publishing.
    ///
    /// Cancel-safe: dropping the future leaves nothing behind.
    fn obtain<'a>(
        &'a mut self,
        head: &'a mut dyn HeadStart,
    ) -> BoxFuture<'a, Result<Credential, SourceError>>;

    /// At start: whether what is live in `dir` (its sinks' `files`) can be
    /// kept rather than obtained again, and if not, why. `None` for a
    /// source that always obtains anew at start.
    fn reuse(
        &self,
        _dir: &Path,
        _files: &[&str],
        _now: SystemTime,
    ) -> Option<Result<CertInfo, String>> {
        None
    }

    /// The credential live in `dir`, read back from disk after [`Source::reuse`]
    /// kept it, for sinks that read other credentials (templates). `None`
    /// when the source cannot read it back.
    fn live(&self, _dir: &Path) -> Option<Credential> {
        None
    }

    /// Finishes what a cut-short [`Source::obtain`] left to clean up (a request to delete), as
    /// pillion stops, in every mode. The caller bounds the wait.
    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Gives back what the source holds, as pillion stops (a `run` that
    /// was told to stop, not an `init`): e.g. revokes a lease when asked to.
    fn release(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// When to obtain again after `checked` was published at `now`.
    fn next_attempt(&self, checked: &Checked, now: SystemTime) -> SystemTime;

    /// After a failure, the longest the loop waits before trying again
    /// (its backoff is cut to this); `None` for the loop's own cap. A
    /// source that reads local files has no server to spare.
    fn retry_within(&self) -> Option<Duration> {
        None
    }

    /// Whether `other` is configured exactly as this one, so that a
    /// configuration reload keeps its credential and schedule.
    fn same_as(&self, other: &dyn Source) -> bool;

    /// For [`Source::same_as`]: the concrete type, to compare like with like.
    fn as_any(&self) -> &dyn Any;
}

/// Why a source could not obtain its credential.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The private key could not be made.
    #[error("failed to generate the private key")]
    Key(#[from] KeyError),
    /// A blocking task died.
    #[error("a background task (key generation) failed")]
    Task(#[from] tokio::task::JoinError),
    /// The issuer refused, failed or could not be reached.
    #[error("the issuer failed")]
    Issuer(#[from] IssuerError),
    /// The secret could not be read.
    #[error("reading the secret failed")]
    Secret(#[from] SecretError),
    /// The files another component writes could not be read.
    #[error("reading the certificate files failed")]
    Files(#[from] files::FilesError),
}

/// One configured credential: its source, its sinks and where they publish.
#[derive(Debug)]
pub struct Plan {
    /// The credential's name (`certificates[].name`, `secrets[].name`).
    pub name: String,
    /// The issuer it names, which a reload compares.
    pub issuer: String,
    /// A certificate or a secret.
    pub kind: Kind,
    /// Its directory, published atomically.
    pub dir: PathBuf,
    /// Who owns its files.
    pub owner: Owner,
    /// Where it comes from.
    pub source: Box<dyn Source>,
    /// Where it goes.
    pub sinks: Vec<Box<dyn Sink>>,
}

/// The place of the certificate `name` among the X.509-SVIDs, if it is one.
fn svid_rank(config: &Config, name: &str) -> Option<usize> {
    config
        .workload_api
        .as_ref()?
        .svids
        .iter()
        .position(|s| s == name)
}

/// The plan of every credential in `config`, each with its source and
/// sinks (certificates offered to `hub` too, when push deliveries are on).
/// The one place that registers a source.
///
/// # Panics
/// When a credential names an issuer missing from `issuers`, or a secret
/// names an issuer that is not Vault: validation and preflight rule both out.
pub fn plans(
    config: &Config,
    issuers: &BTreeMap<String, Arc<Issuer>>,
    hub: Option<&Hub>,
) -> Vec<Plan> {
    let certificates = config.certificates.iter().map(|spec| {
        let dir = spec.target_dir(&config.output_dir);
        Plan {
            name: spec.name.clone(),
            issuer: spec.issuer.clone(),
            kind: Kind::Certificate,
            owner: Owner {
                uid: spec.files.uid,
                gid: spec.files.gid,
            },
            source: match &*issuers[&spec.issuer] {
                Issuer::Files(files) => Box::new(FilesSource::new(files, &spec.names)),
                _ => Box::new(CertificateSource::new(
                    spec,
                    issuers[&spec.issuer].clone(),
                    &dir,
                )),
            },
            sinks: sinks::for_certificate(spec, hub, svid_rank(config, &spec.name)),
            dir,
        }
    });
    let secrets = config.secrets.iter().map(|spec| Plan {
        name: spec.name.clone(),
        issuer: spec.issuer.clone(),
        kind: Kind::Secret,
        dir: spec.target_dir(&config.output_dir),
        owner: Owner {
            uid: spec.uid,
            gid: spec.gid,
        },
        source: Box::new(KvSource::new(spec, &issuers[&spec.issuer])),
        sinks: sinks::for_secret(spec),
    });
    let tokens = config.token_sinks.iter().filter_map(|spec| {
        let client = issuers.get(&spec.issuer)?.vault()?.clone();
        Some(Plan {
            name: spec.name.clone(),
            issuer: spec.issuer.clone(),
            kind: Kind::Secret,
            dir: spec.target_dir(&config.output_dir),
            owner: Owner {
                uid: spec.uid,
                gid: spec.gid,
            },
            source: Box::new(TokenSource::new(&spec.issuer, client)),
            sinks: sinks::for_token(spec),
        })
    });
    certificates.chain(secrets).chain(tokens).collect()
}
