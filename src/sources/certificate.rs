//! A certificate from an issuer: a key made here (or by Vault in `issue`
//! mode), a CSR, and the chain the issuer signs.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;

use super::{Source, SourceError};
use crate::config::{CertificateSpec, KeyRotation};
use crate::credential::{Certificate, Checked, Credential, HeadStart};
use crate::issuers::Issuer;
use crate::keys::PrivateKey;
use crate::output::read_live;
use crate::pem;
use crate::schedule::{jitter_for, renewal_time};
use crate::verify::{verify, CertInfo, Issued};

/// Turns of the runtime a login gets before the key is made: enough to
/// connect (on loopback at once), hand the request to the connection task
/// and write it.
const LOGIN_HEAD_START: usize = 3;

/// One configured certificate and its issuer.
#[derive(Debug)]
pub struct CertificateSource {
    spec: CertificateSpec,
    issuer: Arc<Issuer>,
    /// Where its files are published: a kept key is read from there.
    dir: PathBuf,
}

impl CertificateSource {
    /// The source of `spec`, signed by `issuer`, published in `dir`.
    pub fn new(spec: &CertificateSpec, issuer: Arc<Issuer>, dir: &Path) -> CertificateSource {
        CertificateSource {
            spec: spec.clone(),
            issuer,
            dir: dir.to_owned(),
        }
    }

    async fn obtain(&self, head: &mut dyn HeadStart) -> Result<Credential, SourceError> {
        let spec = &self.spec;
        let certificate = |key, issued| {
            Credential::Certificate(Certificate {
                key,
                issued,
                names: spec.names.clone(),
            })
        };
        if let Some(vault) = self.issuer.makes_keys() {
            head.begin(false);
            let (issued, key) = vault
                .issue(spec)
                .await
                .map_err(crate::issuers::IssuerError::from)?;
            return Ok(certificate(key, issued));
        }
        let kept = match spec.key_rotation {
            KeyRotation::Never => existing_key(spec, &self.dir),
            KeyRotation::Always => None,
        };
        let alg = spec.key_algorithm;
        let logs_in = self.issuer.vault().is_some();
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
            // The generation's directory and files are made while the key
            // is, and the key goes into it once there.
            head.begin(true);
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
            head.key(&key);
            Ok::<_, SourceError>((key, csr))
        };
        let logging_in = async { Ok::<_, SourceError>(self.issuer.log_in().await?) };
        let ((), (key, csr)) = tokio::try_join!(logging_in, making_key)?;
        let issued = self.issuer.sign(&csr, spec).await?;
        Ok(certificate(key, issued))
    }
}

impl Source for CertificateSource {
    fn obtain<'a>(
        &'a mut self,
        head: &'a mut dyn HeadStart,
    ) -> BoxFuture<'a, Result<Credential, SourceError>> {
        Box::pin(CertificateSource::obtain(self, head))
    }

    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.issuer.settle())
    }

    fn reuse(
        &self,
        dir: &Path,
        files: &[&str],
        now: SystemTime,
    ) -> Option<Result<CertInfo, String>> {
        Some(existing(&self.spec, dir, files, &self.issuer, now))
    }

    fn live(&self, dir: &Path) -> Option<Credential> {
        let f = &self.spec.files;
        let mut found = read_live(dir, &[&f.certificate, &f.private_key, &f.ca])?.into_iter();
        let (cert, key, ca) = (found.next()??, found.next()??, found.next()??);
        let key = PrivateKey::from_pem(std::str::from_utf8(&key).ok()?).ok()?;
        Some(Credential::Certificate(Certificate {
            key,
            issued: Issued {
                chain: pem::certificates(&cert).ok()?,
                ca: pem::certificates(&ca).ok()?,
            },
            names: self.spec.names.clone(),
        }))
    }

    fn next_attempt(&self, checked: &Checked, now: SystemTime) -> SystemTime {
        match checked.certificate() {
            Some(info) => renewal_time(
                info.not_before,
                info.not_after,
                self.spec.renew,
                jitter_for(&info.serial),
            ),
            None => now,
        }
    }

    fn same_as(&self, other: &dyn Source) -> bool {
        other
            .as_any()
            .downcast_ref::<CertificateSource>()
            .is_some_and(|o| o.spec == self.spec)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The key on disk, if it can be kept for the next certificate.
fn existing_key(spec: &CertificateSpec, dir: &Path) -> Option<PrivateKey> {
    let files = read_live(dir, &[&spec.files.private_key])?;
    let pem = files.into_iter().next()??;
    let key = PrivateKey::from_pem(std::str::from_utf8(&pem).ok()?).ok()?;
    (key.algorithm() == spec.key_algorithm).then_some(key)
}

/// Checks the credential on disk: every file of `files` there, valid now,
/// not yet due, with the configured names, key type and CA, and its key
/// matching its certificate.
fn existing(
    spec: &CertificateSpec,
    dir: &Path,
    files: &[&str],
    issuer: &Issuer,
    now: SystemTime,
) -> Result<CertInfo, String> {
    let f = &spec.files;
    // Every file this credential publishes, read from one resolved
    // generation so that they belong together.
    let found = read_live(dir, files).ok_or("no certificate on disk yet")?;
    let mut by_name: Vec<(&str, Option<zeroize::Zeroizing<Vec<u8>>>)> =
        files.iter().copied().zip(found).collect();
    let what = |name: &str| match name {
        n if n == f.certificate => "the certificate".to_owned(),
        n if n == f.private_key => "the key".to_owned(),
        n if n == f.ca => "the CA file".to_owned(),
        n => n.to_owned(),
    };
    if let Some((name, _)) = by_name.iter().find(|(_, data)| data.is_none()) {
        return Err(format!("{} is missing on disk", what(name)));
    }
    let mut take = |name: &str| {
        by_name
            .iter_mut()
            .find(|(n, _)| *n == name)
            .and_then(|(_, data)| data.take())
            .ok_or_else(|| format!("{} is missing on disk", what(name)))
    };
    let (cert_pem, key_pem, ca_pem) = (take(&f.certificate)?, take(&f.private_key)?, take(&f.ca)?);
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
    let chain = pem::certificates(cert_pem).map_err(|_| "the certificate on disk is not PEM")?;
    let ca = pem::certificates(ca_pem).map_err(|_| "the CA file on disk is not PEM")?;
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
