//! The one model between sources and sinks.
//!
//! A source ([`crate::sources`]) obtains a [`Credential`]: a private key with
//! its chain and trust anchors, or a secret's data. Every sink
//! ([`crate::sinks`]) turns the same credential into its files. Neither side
//! knows the other, and the loop ([`crate::agent`]) knows both only through
//! their traits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::keys::PrivateKey;
use crate::names::Names;
use crate::verify::{verify, CertInfo, Issued, VerifyError};

/// The two kinds of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A key with its certificate chain and trust anchors.
    Certificate,
    /// A secret's data.
    Secret,
}

/// What a source obtained, before it is checked and published.
#[derive(Debug)]
pub enum Credential {
    /// A key, the chain issued for it, and the trust anchors.
    Certificate(Certificate),
    /// The key/value data of a secret.
    Secret(Secret),
    /// pillion's current Vault token, for apps that call Vault themselves.
    Token(Zeroizing<String>),
}

/// A certificate credential.
#[derive(Debug)]
pub struct Certificate {
    /// The private key; it never leaves the pod unless the issuer made it.
    pub key: PrivateKey,
    /// The chain (leaf first) and the trust anchors.
    pub issued: Issued,
    /// The names that were asked for: the leaf must carry every one.
    pub names: Names,
}

/// A secret credential.
#[derive(Debug)]
pub struct Secret {
    /// Where it was read from (for logs), e.g. `secret/app/db`.
    pub path: String,
    /// Its keys and values, as the server returned them.
    pub data: Map<String, Value>,
    /// For a leased (dynamic) secret: when its lease ends, as last granted.
    pub expires: Option<SystemTime>,
    /// What templates see as `meta.<name>`: a KV v2 secret's `version` and
    /// `createdTime`, a leased secret's `leaseExpires`.
    pub meta: Map<String, Value>,
}

/// The last checked credential of each configured credential, by name: what
/// a template may read besides its own. The loop keeps it only while some
/// sink reads other credentials ([`crate::sinks::Sink::reads_others`]).
#[derive(Debug, Default, Clone)]
pub struct Inputs(BTreeMap<String, Arc<Credential>>);

impl Inputs {
    /// The credential named `name`, if one has been checked.
    pub fn get(&self, name: &str) -> Option<&Credential> {
        self.0.get(name).map(Arc::as_ref)
    }

    /// Every credential, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Credential)> {
        self.0.iter().map(|(n, c)| (n.as_str(), c.as_ref()))
    }

    /// The credential named `name`, shared.
    pub fn get_arc(&self, name: &str) -> Option<Arc<Credential>> {
        self.0.get(name).cloned()
    }

    /// Records `credential` as the current one of `name`.
    pub fn insert(&mut self, name: &str, credential: Arc<Credential>) {
        self.0.insert(name.to_owned(), credential);
    }

    /// Takes the credential of `name` out.
    pub fn take(&mut self, name: &str) -> Option<Arc<Credential>> {
        self.0.remove(name)
    }
}

/// What checking a credential found: the facts the loop schedules on,
/// logs and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
// A handful exist at a time; boxing the certificate would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Checked {
    /// A certificate that verified: its leaf's facts.
    Certificate(CertInfo),
    /// A secret (there is nothing to verify in a secret's data); its path.
    Secret {
        /// Where it was read from.
        path: String,
        /// When its lease ends, for a leased secret.
        expires: Option<SystemTime>,
    },
}

impl Credential {
    /// Which kind it is.
    pub fn kind(&self) -> Kind {
        match self {
            Credential::Certificate(_) => Kind::Certificate,
            Credential::Secret(_) | Credential::Token(_) => Kind::Secret,
        }
    }

    /// Checks what the source returned before anything is published: for a
    /// certificate, that the chain is well formed, carries our public key
    /// and every name asked for, is valid at `now` and ends at a trust
    /// anchor (see [`verify`]).
    ///
    /// Takes CPU in proportion to what the CA sent: run it on a blocking
    /// thread.
    ///
    /// # Errors
    /// The first check that failed.
    pub fn check(&self, now: SystemTime) -> Result<Checked, VerifyError> {
        match self {
            Credential::Certificate(c) => Ok(Checked::Certificate(verify(
                &c.issued,
                &c.key.public_key_raw(),
                &c.names,
                now,
            )?)),
            Credential::Secret(s) => Ok(Checked::Secret {
                path: s.path.clone(),
                expires: s.expires,
            }),
            Credential::Token(_) => Ok(Checked::Secret {
                path: "the Vault token".to_owned(),
                expires: None,
            }),
        }
    }
}

impl Checked {
    /// The certificate's facts, for a certificate.
    pub fn certificate(&self) -> Option<&CertInfo> {
        match self {
            Checked::Certificate(info) => Some(info),
            Checked::Secret { .. } => None,
        }
    }
}

/// What a source may do while it waits for its issuer, so that publishing
/// does not start only after the answer: begin the next generation of the
/// credential's directory (directories, files, links), and write the files
/// that need only the private key. The loop implements it; a source that
/// uses none of it (a secret read) loses nothing.
pub trait HeadStart: Send {
    /// Begins the next generation in the background. With `with_key`, the
    /// source promises a [`HeadStart::key`] call; if the source fails
    /// first, the generation is removed again.
    fn begin(&mut self, with_key: bool);

    /// The private key exists: the files that hold only it can be written.
    fn key(&mut self, key: &PrivateKey);
}

/// A [`HeadStart`] that does nothing, for callers that publish otherwise.
#[derive(Debug, Default)]
pub struct NoHeadStart;

impl HeadStart for NoHeadStart {
    fn begin(&mut self, _with_key: bool) {}
    fn key(&mut self, _key: &PrivateKey) {}
}
