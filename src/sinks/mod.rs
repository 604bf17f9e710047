//! Where a credential goes. A sink turns a [`Credential`] into files of the
//! credential's directory, all published together in one atomic swap by the
//! loop: the kubelet layout (`tls.crt`, `tls.key`, `ca.crt`), the bundle,
//! PKCS#12 keystores, a secret's files.
//!
//! Adding a sink: a module here with a type that implements [`Sink`], its
//! configuration in [`crate::config`], and one line in [`for_certificate`]
//! or [`for_secret`]. The loop does not change.

mod bundle;
mod kubelet;
mod pkcs12;
mod push;
mod secret_files;
mod template;
mod token_file;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::config::{CertificateSpec, SecretSpec, TokenSinkSpec};
use crate::credential::{Credential, Inputs};
use crate::delivery::Hub;
use crate::keys::PrivateKey;
use crate::output::FileEntry;
use crate::template::TemplateError;

pub use pkcs12::KeystoreError;
pub use secret_files::SecretFileError;
pub use template::Template;

/// A consumer of credentials: the files it makes of one.
///
/// Every method but [`Sink::render`] has a default, so a sink implements
/// only the steps it takes part in.
pub trait Sink: Send + Sync + fmt::Debug {
    /// The files this sink always writes, with their modes, known before
    /// anything is obtained: the loop begins a generation with them while
    /// the issuer works, and the app is ready only while all exist. A file
    /// named by the credential's content (a secret's keys) is not listed.
    fn files(&self) -> Vec<(&str, u32)> {
        Vec::new()
    }

    /// Checks what can be checked before the first credential (a password
    /// file that must be readable). `Err` holds the configuration field,
    /// relative to the credential, and the problem.
    fn check(&self) -> Result<(), (String, String)> {
        Ok(())
    }

    /// The files that need only the private key, written while the issuer
    /// signs. [`Sink::render`] may return them again; they are not written
    /// twice.
    fn key_files(&self, _key: &PrivateKey) -> Vec<FileEntry> {
        Vec::new()
    }

    /// Every file this sink makes of `credential`.
    ///
    /// # Errors
    /// The credential cannot be carried (a secret key that is no file
    /// name, an unreadable keystore password); nothing of this credential
    /// is published then.
    ///
    /// `inputs` holds the other credentials, for sinks that
    /// [read them](Sink::reads_others); it is empty otherwise.
    fn render(&self, credential: &Credential, inputs: &Inputs)
        -> Result<Vec<FileEntry>, SinkError>;

    /// Looks at what is live in `live` (a generation directory) before
    /// `credential` replaces it, to warn about what the app will notice.
    fn notice(&self, _live: &Path, _credential: &Credential) {}

    /// Hands over `credential` once its files are published (and, at start
    /// or after a configuration reload, what is live on disk): for sinks
    /// that push credentials instead of writing files ([`crate::delivery`]).
    fn deliver(&self, _credential: &Arc<Credential>) {}

    /// Whether this sink wants [`deliver`](Sink::deliver) calls.
    fn delivers(&self) -> bool {
        false
    }

    /// Whether this sink reads credentials other than its own (a
    /// template): the loop then keeps every credential it checked in
    /// [`Inputs`], and renders this sink again when one it
    /// [`reads`](Sink::reads) changes.
    fn reads_others(&self) -> bool {
        false
    }

    /// Whether this sink's files depend on the credential `name`.
    fn reads(&self, _name: &str) -> bool {
        false
    }
}

/// Why a sink could not make its files.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The PKCS#12 files.
    #[error("writing the PKCS#12 files failed")]
    Keystore(#[from] KeystoreError),
    /// A secret's files.
    #[error(transparent)]
    SecretFile(#[from] SecretFileError),
    /// A template could not be rendered.
    #[error("rendering the template failed")]
    Template(#[from] TemplateError),
    /// A sink was given a kind of credential it does not carry: a
    /// registration mistake, not the user's.
    #[error("the {sink} files cannot be made of a {kind}")]
    Kind {
        /// The sink.
        sink: &'static str,
        /// What it was given.
        kind: &'static str,
    },
}

/// The sinks of a certificate, as configured in its `files`, and its push
/// deliveries when `hub` serves them (`svid`: its place among the
/// X.509-SVIDs, if it is one). The one place that registers a
/// certificate sink.
pub fn for_certificate(
    spec: &CertificateSpec,
    hub: Option<&Hub>,
    svid: Option<usize>,
) -> Vec<Box<dyn Sink>> {
    let f = &spec.files;
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(kubelet::KubeletFiles::new(&spec.name, f))];
    if let Some(bundle) = &f.bundle {
        sinks.push(Box::new(bundle::Bundle::new(bundle, f.key_mode)));
    }
    if let Some(p12) = &f.pkcs12 {
        sinks.push(Box::new(pkcs12::Pkcs12::new(p12, f.mode, f.key_mode)));
    }
    for t in &spec.templates {
        sinks.push(Box::new(template::Template::new(&spec.name, t)));
    }
    if let Some(hub) = hub {
        sinks.push(Box::new(push::Push::new(hub, &spec.name, &spec.sds, svid)));
    }
    sinks
}

/// The sink of a Vault issuer's `tokenSink`.
pub fn for_token(spec: &TokenSinkSpec) -> Vec<Box<dyn Sink>> {
    vec![Box::new(token_file::TokenFile::new(&spec.file, spec.mode))]
}

/// The sinks of a secret. The one place that registers a secret sink.
pub fn for_secret(spec: &SecretSpec) -> Vec<Box<dyn Sink>> {
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(secret_files::SecretFiles::new(spec))];
    for t in &spec.templates {
        sinks.push(Box::new(template::Template::new(&spec.name, t)));
    }
    sinks
}

fn kind(credential: &Credential) -> &'static str {
    match credential {
        Credential::Certificate(_) => "certificate",
        Credential::Secret(_) => "secret",
        Credential::Token(_) => "Vault token",
    }
}
