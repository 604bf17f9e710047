//! A CA whose certificate and key are PEM files, and the development CA that
//! pillion creates for itself when no issuer is configured.
//!
//! The files are read again for every signature, so a CA mounted from a
//! Kubernetes Secret can be rotated under a running pillion.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::keys::{KeyAlgorithm, KeyError, PrivateKey};
use crate::pem;
use crate::verify::{split_chain, Issued};

/// The development CA's directory under the state directory.
pub const DEV_CA_DIR: &str = "dev-ca";
/// The development CA lives long enough that a laptop never sees it expire.
const DEV_CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaf certificates start a little in the past, for clocks that lag the CA's;
/// at most this, and at most a tenth of the lifetime (seconds-long test
/// certificates must stay usable).
const MAX_BACKDATE: Duration = Duration::from_secs(300);

/// A CA that signs in-process with a certificate and key read from PEM
/// files: `localCa`, or the development CA.
#[derive(Debug)]
pub struct LocalCa {
    cert_file: PathBuf,
    key_file: PathBuf,
    development: bool,
    /// When the CA file read at load expires, for the start-up warning
    /// (signing reads the files again: they may be rotated).
    expires: Option<std::time::SystemTime>,
}

/// Why a local or development CA could not be loaded or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum LocalCaError {
    /// The CA certificate file could not be read.
    #[error("failed to read the CA certificate file {}", path.display())]
    ReadCert {
        /// The CA certificate file (`localCa.certFile` or `dev-ca/ca.crt`).
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The CA certificate file holds no PEM certificate.
    #[error("the CA certificate file {} holds no PEM CERTIFICATE block", path.display())]
    NoCert {
        /// The CA certificate file.
        path: PathBuf,
    },
    /// A certificate in the CA file does not parse as X.509.
    #[error("the CA certificate in {} is not valid X.509: {reason}", path.display())]
    BadCert {
        /// The CA certificate file.
        path: PathBuf,
        /// The X.509 parser's complaint.
        reason: String,
    },
    /// The CA key file could not be read.
    #[error("failed to read the CA key file {}", path.display())]
    ReadKey {
        /// The CA key file (`localCa.keyFile` or `dev-ca/ca.key`).
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The CA key file is not a PEM private key of a supported type.
    #[error("the CA key file {} is unusable", path.display())]
    BadKey {
        /// The CA key file.
        path: PathBuf,
        /// Why the key was rejected.
        source: KeyError,
    },
    /// The key is not the one of the first (signing) certificate in the CA file.
    #[error("the CA key {} does not belong to the CA certificate {}", key.display(), cert.display())]
    Mismatch {
        /// The CA certificate file.
        cert: PathBuf,
        /// The CA key file.
        key: PathBuf,
    },
    /// The CA file can never issue a chain clients accept (not a CA,
    /// expired, not yet valid, a pathlen exceeded, a chain that does not link).
    #[error("the CA certificate file {} cannot issue certificates: {reason}", path.display())]
    Unusable {
        /// The CA certificate file.
        path: PathBuf,
        /// The first problem on the issuing path, naming the certificate by subject.
        reason: String,
    },
    /// The development CA's directory or files could not be written.
    #[error("failed to create the development CA in {}", path.display())]
    CreateDevCa {
        /// The development CA's directory, [`DEV_CA_DIR`] under the state directory.
        path: PathBuf,
        /// What failed: the directory, the key, the certificate, or a file write.
        source: std::io::Error,
    },
    /// rcgen could not parse the CSR it was asked to sign.
    #[error("the certificate signing request is invalid: {0}")]
    BadCsr(rcgen::Error),
    /// rcgen could not sign the leaf with the CA's certificate and key.
    #[error("signing the certificate failed: {0}")]
    Sign(rcgen::Error),
}

/// The CA's certificate chain (signing CA first) and key, freshly read.
struct Material {
    chain: Vec<Vec<u8>>,
    key: PrivateKey,
    /// The earliest expiry in the CA file: no leaf may outlive it.
    expires: std::time::SystemTime,
}

/// Below this much time left, the CA's expiry is warned about at start.
const CA_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

impl LocalCa {
    /// Opens a CA from PEM files and checks that they belong together.
    pub fn open(cert_file: &Path, key_file: &Path) -> Result<LocalCa, LocalCaError> {
        let mut ca = LocalCa {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            development: false,
            expires: None,
        };
        ca.expires = Some(ca.material()?.expires);
        Ok(ca)
    }

    /// The development CA under `state_dir`, created first when `create` is set.
    pub fn development(state_dir: &Path, create: bool) -> Result<LocalCa, LocalCaError> {
        let dir = state_dir.join(DEV_CA_DIR);
        let mut ca = LocalCa {
            cert_file: dir.join("ca.crt"),
            key_file: dir.join("ca.key"),
            development: true,
            expires: None,
        };
        if !ca.cert_file.exists() && create {
            create_development_ca(&dir).map_err(|source| LocalCaError::CreateDevCa {
                path: dir.clone(),
                source,
            })?;
        }
        if ca.cert_file.exists() {
            ca.expires = Some(ca.material()?.expires);
        }
        Ok(ca)
    }

    /// What to warn about at start: the development CA, and a CA that
    /// expires within 30 days (`CA_EXPIRY_WARNING`).
    pub fn warning(&self) -> Option<String> {
        let mut warnings = Vec::new();
        if self.development {
            warnings.push(format!(
                "USING THE DEVELOPMENT CA in {}: certificates from it are for development only. Configure an issuer for production.",
                self.cert_file.parent().unwrap_or(Path::new(".")).display()
            ));
        }
        if let Some(expires) = self.expires {
            let left = expires
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            if left < CA_EXPIRY_WARNING {
                warnings.push(format!(
                    "the CA in {} expires in {} (at {}): certificates it issues end then too; replace the CA",
                    self.cert_file.display(),
                    humantime::format_duration(Duration::from_secs(left.as_secs())),
                    crate::verify::fmt_time(expires)
                ));
            }
        }
        (!warnings.is_empty()).then(|| warnings.join("\n"))
    }

    fn material(&self) -> Result<Material, LocalCaError> {
        let text =
            crate::small_file::read(&self.cert_file).map_err(|source| LocalCaError::ReadCert {
                path: self.cert_file.clone(),
                source,
            })?;
        let chain = pem::certificates(&text)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| LocalCaError::NoCert {
                path: self.cert_file.clone(),
            })?;
        for der in &chain {
            X509Certificate::from_der(der).map_err(|e| LocalCaError::BadCert {
                path: self.cert_file.clone(),
                reason: e.to_string(),
            })?;
        }
        let key_pem = crate::small_file::read_to_string(&self.key_file)
            .map(Zeroizing::new)
            .map_err(|source| LocalCaError::ReadKey {
                path: self.key_file.clone(),
                source,
            })?;
        let key = PrivateKey::from_pem(&key_pem).map_err(|source| LocalCaError::BadKey {
            path: self.key_file.clone(),
            source,
        })?;
        let (_, ca_cert) = X509Certificate::from_der(&chain[0]).expect("parsed just above");
        if ca_cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw().as_slice()
        {
            return Err(LocalCaError::Mismatch {
                cert: self.cert_file.clone(),
                key: self.key_file.clone(),
            });
        }
        // Checked along the issuing path; other certificates of the file
        // (more roots) are published, not checked.
        let expires = crate::verify::check_issuing_path(&chain, std::time::SystemTime::now())
            .map_err(|reason| LocalCaError::Unusable {
                path: self.cert_file.clone(),
                reason,
            })?;
        Ok(Material {
            chain,
            key,
            expires,
        })
    }

    /// The self-signed certificates of the CA file (the roots), or its last
    /// certificate when it holds no root.
    pub fn trust_anchors(&self) -> Result<Vec<Vec<u8>>, LocalCaError> {
        let text =
            crate::small_file::read(&self.cert_file).map_err(|source| LocalCaError::ReadCert {
                path: self.cert_file.clone(),
                source,
            })?;
        let chain = pem::certificates(&text).unwrap_or_default();
        Ok(split_chain(&chain).1)
    }

    /// Signs a CSR: the subject and SANs come from the request, the lifetime
    /// from the configuration, a random 127-bit serial, and the extensions a
    /// TLS server or client certificate needs.
    pub fn sign(&self, csr_der: &[u8], duration: Duration) -> Result<Issued, LocalCaError> {
        let material = self.material()?;
        let request = CertificateSigningRequestParams::from_der(&csr_der.into())
            .map_err(LocalCaError::BadCsr)?;
        let is_rsa = *request.public_key.algorithm() == rcgen::PKCS_RSA_SHA256;
        let mut params = request.params;
        let now = OffsetDateTime::now_utc();
        let backdate = (duration / 10).min(MAX_BACKDATE);
        params.not_before = now - backdate;
        params.not_after = now + duration;
        // A leaf cannot be valid longer than its CA: cut it to the CA's end.
        let ca_end = OffsetDateTime::from(material.expires);
        if params.not_after > ca_end {
            tracing::warn!(
                ca = %self.cert_file.display(),
                ca_expires = %crate::verify::fmt_time(material.expires),
                "the CA expires before the requested duration is over: the certificate ends with the CA; replace the CA"
            );
            params.not_after = ca_end;
        }
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if is_rsa {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let signer = material.key.key_pair();
        let issuer = rcgen::Issuer::from_ca_cert_der(&material.chain[0].as_slice().into(), &signer)
            .map_err(LocalCaError::Sign)?;
        let request = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        };
        let leaf = request.signed_by(&issuer).map_err(LocalCaError::Sign)?;
        let (intermediates, anchors) = split_chain(&material.chain);
        let mut chain = vec![leaf.der().to_vec()];
        chain.extend(intermediates);
        Ok(Issued { chain, ca: anchors })
    }
}

/// RFC 5280 serials are positive and at most 20 bytes; 16 random bytes with
/// the top bit clear give 127 bits of entropy (CA/B Forum asks for 64).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the OS random source works");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Creates the development CA: an ECDSA P-256 root, key written 0600 in a
/// 0700 directory. The certificate is renamed into place last, so a CA
/// certificate on disk always has its key beside it.
fn create_development_ca(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).map_err(std::io::Error::other)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "pillion (development only)");
    dn.push(DnType::CommonName, "pillion development CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + DEV_CA_LIFETIME;
    params.serial_number = Some(random_serial());
    let cert = params
        .self_signed(&key.key_pair())
        .map_err(std::io::Error::other)?;

    let write = |name: &str, data: &[u8], mode: u32| {
        crate::small_file::write_atomically(&dir.join(name), data, mode)
    };
    write("ca.key", key.to_pem().as_bytes(), 0o600)?;
    write("ca.crt", cert.pem().as_bytes(), 0o644)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Names;

    #[test]
    fn the_development_ca_is_created_once_and_signs_verifiable_certificates() {
        let state = tempfile::tempdir().unwrap();
        let ca = LocalCa::development(state.path(), true).unwrap();
        let first = std::fs::read(state.path().join("dev-ca/ca.crt")).unwrap();
        LocalCa::development(state.path(), true).unwrap();
        assert_eq!(
            first,
            std::fs::read(state.path().join("dev-ca/ca.crt")).unwrap(),
            "reused, not re-created"
        );

        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let names = Names {
            dns_names: vec!["localhost".into()],
            ..Names::default()
        };
        let issued = ca
            .sign(&key.csr(&names).unwrap(), Duration::from_secs(60))
            .unwrap();
        let info = crate::verify::verify(
            &issued,
            &key.public_key_raw(),
            &names,
            std::time::SystemTime::now(),
        )
        .unwrap();
        assert_eq!(info.names.dns_names, ["localhost"]);
    }

    #[test]
    fn check_mode_does_not_create_the_development_ca() {
        let state = tempfile::tempdir().unwrap();
        LocalCa::development(state.path(), false).unwrap();
        assert!(!state.path().join(DEV_CA_DIR).exists());
    }
}
