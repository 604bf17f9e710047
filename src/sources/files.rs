//! A certificate another component writes (`issuers.NAME.files`): the
//! kubelet's podCertificate volume (key then chain in one PEM file),
//! cert-manager's csi-driver, a Secret volume. pillion reads it every
//! `pollInterval` and checks it as any issued certificate (the key matches
//! the leaf, the leaf is valid now, the chain reaches the anchors, it
//! carries the configured names); then its sinks deliver it (keystores,
//! templates, SDS, the Workload API) and the app is reloaded when it changed.
//!
//! A directory in the kubelet's atomic-writer layout is read through one
//! resolution of its `..data` link, so every file comes from the same
//! generation. Plain files can be caught half-written or from two
//! generations: such a set fails the check (with the reason) and is not
//! delivered; it is read again within seconds.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use super::{Source, SourceError};
use crate::config::{FilesAnchors, FilesIssuerSpec, FilesLayout};
use crate::credential::{Certificate, Checked, Credential, HeadStart};
use crate::keys::PrivateKey;
use crate::names::Names;
use crate::pem;
use crate::verify::{inspect, Issued};

/// After a set that failed its check, it is read again within this long
/// (or the poll interval, if longer): there is no server to spare.
const RETRY_CAP: Duration = Duration::from_secs(5);

/// Why the files could not be read as a certificate.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no private key, or one that cannot be used.
    #[error("{} holds no usable private key ({reason})", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file holds no certificate.
    #[error("{} holds no PEM CERTIFICATE block", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The leaf does not parse.
    #[error("the certificate in {} does not parse: {reason}", path.display())]
    Leaf {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The leaf lacks a configured name.
    #[error("the certificate in {} does not carry the configured {name} (it has: {has})", path.display())]
    MissingName {
        /// The file.
        path: PathBuf,
        /// The name, with its kind.
        name: String,
        /// The names it has.
        has: String,
    },
}

/// One certificate read from a `files` issuer's directory.
#[derive(Debug)]
pub struct FilesSource {
    spec: FilesIssuerSpec,
    /// Names the certificate must carry (it may carry more).
    names: Names,
}

impl FilesSource {
    /// The source of a certificate with the configured `names` (possibly
    /// none), read as `spec` says.
    pub fn new(spec: &FilesIssuerSpec, names: &Names) -> FilesSource {
        FilesSource {
            spec: spec.clone(),
            names: names.clone(),
        }
    }
}

/// Reads the key, chain and anchors as `spec` lays them out.
fn read(spec: &FilesIssuerSpec, want: &Names) -> Result<Credential, FilesError> {
    // One generation: `..data` resolved once, as the kubelet's readers do.
    let base = match std::fs::read_link(spec.dir.join("..data")) {
        Ok(target) => spec.dir.join(target),
        Err(_) => spec.dir.clone(),
    };
    let read = |path: PathBuf| {
        crate::small_file::read(&path)
            .map(zeroize::Zeroizing::new)
            .map_err(|source| FilesError::Read { path, source })
    };
    let (key_path, key_text, chain_path, chain_text) = match &spec.layout {
        FilesLayout::Bundle(name) => {
            let path = base.join(name);
            let text = read(path.clone())?;
            (path.clone(), text.clone(), path, text)
        }
        FilesLayout::Pair {
            certificate,
            private_key,
        } => {
            let (k, c) = (base.join(private_key), base.join(certificate));
            (k.clone(), read(k)?, c.clone(), read(c)?)
        }
    };
    let key_str = std::str::from_utf8(&key_text).map_err(|_| FilesError::Key {
        path: key_path.clone(),
        reason: "not text".into(),
    })?;
    let key = PrivateKey::from_pem(key_str).map_err(|e| FilesError::Key {
        path: key_path,
        reason: e.to_string(),
    })?;
    let chain = pem::certificates(&chain_text)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| FilesError::NoCertificate {
            path: chain_path.clone(),
        })?;
    let ca_path = match &spec.anchors {
        FilesAnchors::InDir(name) => base.join(name),
        FilesAnchors::File(path) => path.clone(),
    };
    let ca = pem::certificates(&read(ca_path.clone())?)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or(FilesError::NoCertificate { path: ca_path })?;
    let leaf = inspect(&chain[0]).map_err(|e| FilesError::Leaf {
        path: chain_path.clone(),
        reason: e.to_string(),
    })?;
    if let Some(name) = missing_name(want, &leaf.names) {
        return Err(FilesError::MissingName {
            path: chain_path,
            name,
            has: listed(&leaf.names),
        });
    }
    Ok(Credential::Certificate(Certificate {
        key,
        issued: Issued { chain, ca },
        // What the certificate carries is what it is checked for; the
        // configured names were checked above to be among them.
        names: leaf.names,
    }))
}

/// The names of a certificate, for a message.
fn listed(n: &Names) -> String {
    let all: Vec<String> = n
        .common_name
        .iter()
        .map(|cn| format!("CN {cn}"))
        .chain(n.dns_names.iter().cloned())
        .chain(n.ip_addresses.iter().map(ToString::to_string))
        .chain(n.uris.iter().cloned())
        .collect();
    match all.is_empty() {
        true => "no names".into(),
        false => all.join(", "),
    }
}

/// The first configured name the certificate does not carry, if any.
fn missing_name(want: &Names, got: &Names) -> Option<String> {
    if let Some(cn) = want
        .common_name
        .as_ref()
        .filter(|cn| got.common_name.as_ref() != Some(cn))
    {
        return Some(format!("common name {cn}"));
    }
    let dns = want
        .dns_names
        .iter()
        .find(|d| !got.dns_names.iter().any(|g| g.eq_ignore_ascii_case(d)))
        .map(|d| format!("DNS name {d}"));
    let ip = || {
        want.ip_addresses
            .iter()
            .find(|ip| !got.ip_addresses.contains(ip))
            .map(|ip| format!("IP address {ip}"))
    };
    let uri = || {
        want.uris
            .iter()
            .find(|u| !got.uris.contains(u))
            .map(|u| format!("URI {u}"))
    };
    dns.or_else(ip).or_else(uri)
}

impl Source for FilesSource {
    fn obtain<'a>(
        &'a mut self,
        _head: &'a mut dyn HeadStart,
    ) -> BoxFuture<'a, Result<Credential, SourceError>> {
        let (spec, names) = (self.spec.clone(), self.names.clone());
        Box::pin(async move {
            // Small files, but a slow volume must not hold the runtime.
            Ok(tokio::task::spawn_blocking(move || read(&spec, &names)).await??)
        })
    }

    fn live(&self, _dir: &Path) -> Option<Credential> {
        read(&self.spec, &self.names).ok()
    }

    fn next_attempt(&self, _checked: &Checked, now: SystemTime) -> SystemTime {
        now + self.spec.poll_interval
    }

    fn retry_within(&self) -> Option<Duration> {
        Some(RETRY_CAP.max(self.spec.poll_interval))
    }

    fn same_as(&self, other: &dyn Source) -> bool {
        other
            .as_any()
            .downcast_ref::<FilesSource>()
            .is_some_and(|o| o.spec == self.spec && o.names == self.names)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
