//! Where certificates come from. Every backend takes a CSR (the key never
//! leaves the pod) and returns an [`Issued`] chain, which the agent verifies
//! before publishing; Vault's `issue` mode, for roles that demand it, returns
//! the key as well.
//!
//! Backends are variants of [`Issuer`], dispatched by `match`.

mod kubernetes;
mod local_ca;
mod vault_pki;

use std::path::Path;
use std::sync::Arc;

pub use kubernetes::{CertManager, KubeError, KubernetesCsr};
pub use local_ca::{LocalCa, LocalCaError, DEV_CA_DIR};
pub use vault_pki::{VaultIssuer, VaultPkiError};

// For the fuzz targets ([`crate::fuzzing`]).
pub(crate) use kubernetes::{certificate_request_progress, csr_progress};
pub(crate) use vault_pki::parse_certificates;

use crate::config::{CertificateSpec, IssuerSpec};
use crate::vault::{VaultClient, VaultError};
use crate::verify::Issued;

/// A configured, loaded issuer.
#[derive(Debug)]
pub enum Issuer {
    /// A CA from PEM files (`localCa`), or the development CA pillion keeps
    /// under its state directory; signs in-process.
    LocalCa(LocalCa),
    /// A Vault/OpenBao PKI mount, signing our CSR or issuing key and
    /// certificate (`pki.mode`).
    Vault(VaultIssuer),
    /// The Kubernetes CertificateSigningRequest API (`certificates.k8s.io/v1`).
    KubernetesCsr(KubernetesCsr),
    /// cert-manager's CertificateRequest (`cert-manager.io/v1`).
    CertManager(CertManager),
    /// Files another component writes (`files`): read by
    /// `sources::FilesSource`, never asked to sign.
    Files(crate::config::FilesIssuerSpec),
}

/// Why an issuer could not be loaded, log in, or sign.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// The local or development CA's files are unusable, or it could not sign.
    #[error(transparent)]
    LocalCa(#[from] LocalCaError),
    /// The Vault client could not be built (CA or auth file) or could not
    /// log in ([`Issuer::log_in`]).
    #[error(transparent)]
    VaultSetup(#[from] VaultError),
    /// Vault's PKI engine refused or garbled a sign/issue request.
    #[error(transparent)]
    Vault(#[from] VaultPkiError),
    /// The Kubernetes API could not be reached or refused us, or the request
    /// object was denied, failed or not signed in time.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// A `files` issuer was asked to sign: it only reads.
    #[error("a files issuer reads certificates another component writes; it does not sign")]
    NotASigner,
    /// A configured CA file (the trust anchors to publish) is unusable.
    #[error("the CA file {} ({field}) is unusable: {reason}", path.display())]
    CaFile {
        /// The configuration field that names the file (e.g. `certManager.caFile`).
        field: &'static str,
        /// The CA file as configured.
        path: std::path::PathBuf,
        /// Why no certificate in it can anchor a chain (one reason per
        /// certificate), or why it could not be read.
        reason: String,
    },
}

/// Checks a file of trust anchors that will be published as `ca.crt`: it
/// reads, holds certificates, and at least one is a CA valid now. The others
/// (an expired root left in a bundle during a rotation) are warned about:
/// they cannot anchor a chain, but need not stop one that another anchors.
fn check_anchor_file(field: &'static str, path: &Path) -> Result<(), IssuerError> {
    let fail = |reason: String| IssuerError::CaFile {
        field,
        path: path.to_owned(),
        reason,
    };
    let text = crate::small_file::read(path).map_err(|e| fail(e.to_string()))?;
    let ders = crate::pem::certificates(&text)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| fail("it holds no PEM CERTIFICATE block".into()))?;
    let now = std::time::SystemTime::now();
    let problems: Vec<String> = ders
        .iter()
        .filter_map(|d| crate::verify::check_anchor(d, now).err())
        .collect();
    if problems.len() == ders.len() {
        return Err(fail(problems.join("; ")));
    }
    for p in problems {
        tracing::warn!(file = %path.display(), "a certificate in the CA file cannot anchor a chain: {p}");
    }
    Ok(())
}

impl Issuer {
    /// Loads an issuer and checks what can be checked without the network:
    /// for a local CA, that its files read, parse and belong together; for
    /// Vault, its CA file and auth files. With `create`, the development CA is
    /// created if missing; without, a missing one is left to create later.
    ///
    /// # Errors
    /// What is wrong, naming the file.
    pub fn load(spec: &IssuerSpec, state_dir: &Path, create: bool) -> Result<Issuer, IssuerError> {
        Ok(match spec {
            IssuerSpec::LocalCa {
                cert_file,
                key_file,
            } => Issuer::LocalCa(LocalCa::open(cert_file, key_file)?),
            IssuerSpec::Development => Issuer::LocalCa(LocalCa::development(state_dir, create)?),
            IssuerSpec::Vault(v) => {
                if let Some(path) = v.pki.as_ref().and_then(|p| p.ca_bundle_file.as_ref()) {
                    check_anchor_file("pki.caBundleFile", path)?;
                }
                Issuer::Vault(VaultIssuer::new(v)?)
            }
            IssuerSpec::KubernetesCsr(k) => {
                // The CSR API returns no CA: this file is the only source of
                // `ca.crt`, so a missing one fails every renewal.
                if let Some(path) = &k.ca_file {
                    check_anchor_file("kubernetesCsr.caFile, the signer's CA: the service account's ca.crt unless set", path)?;
                }
                Issuer::KubernetesCsr(KubernetesCsr::new(k))
            }
            IssuerSpec::CertManager(c) => {
                if let Some(path) = &c.ca_file {
                    check_anchor_file("certManager.caFile", path)?;
                }
                Issuer::CertManager(CertManager::new(c))
            }
            IssuerSpec::Files(f) => {
                if let crate::config::FilesAnchors::File(path) = &f.anchors {
                    check_anchor_file("files.caFile", path)?;
                }
                Issuer::Files(f.clone())
            }
        })
    }

    /// The issuer, when it makes the private key itself (Vault's `issue`
    /// mode): it is asked with [`VaultIssuer::issue`], not with a CSR.
    pub fn makes_keys(&self) -> Option<&VaultIssuer> {
        match self {
            Issuer::Vault(v) if v.generates_keys() => Some(v),
            _ => None,
        }
    }

    /// True when the issuer makes the private key itself (Vault `issue`).
    pub fn generates_keys(&self) -> bool {
        self.makes_keys().is_some()
    }

    /// Makes sure the issuer holds a usable login (Vault: a token, logging
    /// in when there is none), so that it can be done while a key is being
    /// generated. A no-op for issuers without one.
    ///
    /// # Errors
    /// The login failed.
    pub async fn log_in(&self) -> Result<(), IssuerError> {
        match self {
            Issuer::Vault(v) => Ok(v.client.ensure_token().await?),
            _ => Ok(()),
        }
    }

    /// Asks the issuer to sign `csr_der` (PKCS#10 DER) for `cert`.
    ///
    /// Cancel-safe: dropping the future leaves nothing behind.
    pub async fn sign(
        &self,
        csr_der: &[u8],
        cert: &CertificateSpec,
    ) -> Result<Issued, IssuerError> {
        match self {
            Issuer::LocalCa(ca) => Ok(ca.sign(csr_der, cert.duration)?),
            Issuer::Vault(v) => Ok(v.sign(csr_der, cert).await?),
            Issuer::KubernetesCsr(k) => Ok(k.sign(csr_der, cert).await?),
            Issuer::CertManager(c) => Ok(c.sign(csr_der, cert).await?),
            Issuer::Files(_) => Err(IssuerError::NotASigner),
        }
    }

    /// Waits for the clean-up of requests whose [`Issuer::sign`] was cut short (the Kubernetes
    /// issuers delete a request left waiting). The caller bounds the wait.
    pub async fn settle(&self) {
        match self {
            Issuer::KubernetesCsr(k) => k.settle().await,
            Issuer::CertManager(c) => c.settle().await,
            Issuer::LocalCa(_) | Issuer::Vault(_) | Issuer::Files(_) => {}
        }
    }

    /// The Vault client, for reading secrets through this issuer.
    pub fn vault(&self) -> Option<&Arc<VaultClient>> {
        match self {
            Issuer::Vault(v) => Some(&v.client),
            _ => None,
        }
    }

    /// The trust anchors this issuer currently publishes, when they can be
    /// known without a request; used to tell whether a certificate on disk
    /// still belongs to the configured CA.
    pub fn trust_anchors(&self) -> Option<Vec<Vec<u8>>> {
        match self {
            Issuer::LocalCa(ca) => ca.trust_anchors().ok(),
            _ => None,
        }
    }

    /// A warning to show at start-up, if this issuer deserves one.
    pub fn warning(&self) -> Option<String> {
        match self {
            Issuer::LocalCa(ca) => ca.warning(),
            _ => None,
        }
    }
}
