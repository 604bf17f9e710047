//! Where certificates come from. Every backend takes a CSR (the key never
//! leaves the pod) and returns an [`Issued`] chain, which the agent verifies
//! before publishing.
//!
//! Backends are variants of [`Issuer`] rather than implementations of a trait:
//! there is one kind so far, the local CA (which also serves as the embedded
//! development CA).

mod local_ca;

use std::path::Path;

pub use local_ca::{LocalCa, LocalCaError, DEV_CA_DIR};

use crate::config::{CertificateSpec, IssuerSpec};
use crate::verify::Issued;

/// A configured, loaded issuer.
#[derive(Debug)]
pub enum Issuer {
    LocalCa(LocalCa),
}

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error(transparent)]
    LocalCa(#[from] LocalCaError),
}

impl Issuer {
    /// Loads an issuer and checks it can work: for a local CA, that its files
    /// read, parse and belong together. With `create`, the development CA is
    /// created if missing; without, a missing one is reported as "to create".
    ///
    /// # Errors
    /// What is wrong with the issuer's files, naming them.
    pub fn load(spec: &IssuerSpec, state_dir: &Path, create: bool) -> Result<Issuer, IssuerError> {
        Ok(match spec {
            IssuerSpec::LocalCa {
                cert_file,
                key_file,
            } => Issuer::LocalCa(LocalCa::open(cert_file, key_file)?),
            IssuerSpec::Development => Issuer::LocalCa(LocalCa::development(state_dir, create)?),
        })
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
        }
    }

    /// The trust anchors this issuer currently publishes, when they can be
    /// known without a request; used to tell whether a certificate on disk
    /// still belongs to the configured CA.
    pub fn trust_anchors(&self) -> Option<Vec<Vec<u8>>> {
        match self {
            Issuer::LocalCa(ca) => ca.trust_anchors().ok(),
        }
    }

    /// A warning to show at start-up, if this issuer deserves one.
    pub fn warning(&self) -> Option<String> {
        match self {
            Issuer::LocalCa(ca) => ca.warning(),
        }
    }
}
