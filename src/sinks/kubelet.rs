//! The kubelet layout of cert-manager's Secrets and the csi-driver:
//! `tls.crt` (the chain, leaf first), `tls.key` and `ca.crt` (the trust
//! anchors), under the names and modes of `files`.

use std::path::Path;

use tracing::warn;
use zeroize::Zeroizing;

use super::{kind, Sink, SinkError};
use crate::config::FileSpec;
use crate::credential::{Credential, Inputs};
use crate::keys::PrivateKey;
use crate::output::FileEntry;
use crate::pem;
use crate::verify::inspect;

/// The certificate, key and CA files.
#[derive(Debug)]
pub(super) struct KubeletFiles {
    /// The credential's name, for logs.
    cert: String,
    certificate: String,
    private_key: String,
    ca: String,
    mode: u32,
    key_mode: u32,
}

impl KubeletFiles {
    pub(super) fn new(cert: &str, f: &FileSpec) -> KubeletFiles {
        KubeletFiles {
            cert: cert.to_owned(),
            certificate: f.certificate.clone(),
            private_key: f.private_key.clone(),
            ca: f.ca.clone(),
            mode: f.mode,
            key_mode: f.key_mode,
        }
    }
}

impl Sink for KubeletFiles {
    fn files(&self) -> Vec<(&str, u32)> {
        vec![
            (&self.certificate, self.mode),
            (&self.private_key, self.key_mode),
            (&self.ca, self.mode),
        ]
    }

    fn key_files(&self, key: &PrivateKey) -> Vec<FileEntry> {
        vec![FileEntry {
            path: self.private_key.clone(),
            data: Zeroizing::new(key.to_pem().as_bytes().to_vec()),
            mode: self.key_mode,
        }]
    }

    fn render(
        &self,
        credential: &Credential,
        _inputs: &Inputs,
    ) -> Result<Vec<FileEntry>, SinkError> {
        let Credential::Certificate(c) = credential else {
            return Err(SinkError::Kind {
                sink: "certificate",
                kind: kind(credential),
            });
        };
        let mut files = vec![
            FileEntry {
                path: self.certificate.clone(),
                data: Zeroizing::new(pem::encode_certificates(&c.issued.chain).into_bytes()),
                mode: self.mode,
            },
            FileEntry {
                path: self.ca.clone(),
                data: Zeroizing::new(pem::encode_certificates(&c.issued.ca).into_bytes()),
                mode: self.mode,
            },
        ];
        files.extend(self.key_files(&c.key));
        Ok(files)
    }

    /// Warns when the trust anchors change: peers that trust only the old
    /// ones will reject the new certificate until they load the new file.
    fn notice(&self, live: &Path, credential: &Credential) {
        let Credential::Certificate(c) = credential else {
            return;
        };
        if let Some((before, after)) = std::fs::read(live.join(&self.ca))
            .ok()
            .and_then(|old| anchors_changed(&old, &c.issued.ca))
        {
            warn!(cert = %self.cert, %before, %after, "the trust anchors in {} changed: peers that trust only the old ones will reject this certificate until they load the new {0}", self.ca);
        }
    }
}

/// The subjects of the anchors before and after, when the CA file being
/// replaced (`old`, PEM) holds other anchors than `new`: a rotated or
/// replaced CA, which the operator should hear about.
fn anchors_changed(old: &[u8], new: &[Vec<u8>]) -> Option<(String, String)> {
    let old = pem::certificates(old).ok().filter(|o| !o.is_empty())?;
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
        let pem_a = pem::encode_certificates(std::slice::from_ref(&a));
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
