//! Certificates from a Vault/OpenBao PKI secrets engine.
//!
//! `mode: sign` (the default) sends only our CSR to `<mount>/sign/<role>`: the
//! key never leaves the pod. `mode: issue` asks `<mount>/issue/<role>` for a
//! key and certificate, for roles that demand it. API:
//! <https://openbao.org/api-docs/secret/pki/#sign-certificate>.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::config::{CertificateSpec, PkiMode, PkiSpec, VaultSpec};
use crate::keys::{KeyError, PrivateKey};
use crate::pem;
use crate::vault::{VaultClient, VaultError};
use crate::verify::{split_chain, Issued};

/// One Vault issuer: its client (shared with the secrets read through it) and
/// its PKI settings, if it issues certificates.
#[derive(Debug)]
pub struct VaultIssuer {
    /// The Vault client, shared with the KV secrets read through this issuer.
    pub client: Arc<VaultClient>,
    pki: Option<PkiSpec>,
}

/// Why Vault's PKI secrets engine gave no usable certificate.
#[derive(Debug, thiserror::Error)]
pub enum VaultPkiError {
    /// A certificate uses a Vault issuer without `pki` (secrets only); config
    /// validation rejects this first.
    #[error("the issuer has no pki section")]
    NoPki,
    /// The request failed: transport, login, or Vault's own error, verbatim.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// Vault answered, but without a field the PKI API documents, or with one
    /// that is not PEM.
    #[error("Vault's answer from {path} has no usable {field}")]
    Malformed {
        /// The API path asked: `<mount>/sign/<role>` or `<mount>/issue/<role>`.
        path: String,
        /// The JSON field at fault, e.g. `data.certificate`.
        field: &'static str,
    },
    /// The configured `pki.caBundleFile` is unreadable or holds no PEM certificate.
    #[error("failed to read the caBundleFile {}", path.display())]
    ReadBundle {
        /// The `pki.caBundleFile` as configured.
        path: std::path::PathBuf,
        /// The read error; `InvalidData` when the file holds no certificate.
        source: std::io::Error,
    },
    /// `mode: issue` only: the `data.private_key` Vault returned does not parse.
    #[error("the private key Vault issued is unusable")]
    Key(#[source] KeyError),
}

impl VaultIssuer {
    /// Builds the issuer and its Vault client; no network traffic yet.
    ///
    /// # Errors
    /// An unreadable CA file or auth file.
    pub fn new(spec: &VaultSpec) -> Result<VaultIssuer, VaultError> {
        Ok(VaultIssuer {
            client: VaultClient::new(spec)?,
            pki: spec.pki.clone(),
        })
    }

    /// True when Vault makes the private key (`mode: issue`).
    pub fn generates_keys(&self) -> bool {
        self.pki.as_ref().is_some_and(|p| p.mode == PkiMode::Issue)
    }

    /// Sends our CSR to `<mount>/sign/<role>`.
    pub async fn sign(
        &self,
        csr_der: &[u8],
        cert: &CertificateSpec,
    ) -> Result<Issued, VaultPkiError> {
        let pki = self.pki.as_ref().ok_or(VaultPkiError::NoPki)?;
        let path = format!("{}/sign/{}", pki.mount, pki.role);
        let mut body = request_body(cert, pki);
        body["csr"] = Value::String(crate::pem::encode_csr(csr_der));
        let answer = self
            .client
            .request(Method::POST, &path, Some(&body))
            .await?;
        self.with_bundle(parse_certificates(&answer["data"], &path)?)
    }

    /// Publishes the configured `caBundleFile` as `ca.crt`, when there is one.
    fn with_bundle(&self, mut issued: Issued) -> Result<Issued, VaultPkiError> {
        let Some(path) = self.pki.as_ref().and_then(|p| p.ca_bundle_file.as_ref()) else {
            return Ok(issued);
        };
        let text = crate::small_file::read(path).map_err(|source| VaultPkiError::ReadBundle {
            path: path.clone(),
            source,
        })?;
        let anchors = pem::certificates(&text)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| VaultPkiError::ReadBundle {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "no PEM certificate in it",
                ),
            })?;
        issued.chain.retain(|c| !anchors.contains(c));
        issued.ca = anchors;
        Ok(issued)
    }

    /// Asks `<mount>/issue/<role>` for a key and a certificate.
    pub async fn issue(
        &self,
        cert: &CertificateSpec,
    ) -> Result<(Issued, PrivateKey), VaultPkiError> {
        let pki = self.pki.as_ref().ok_or(VaultPkiError::NoPki)?;
        let path = format!("{}/issue/{}", pki.mount, pki.role);
        let mut body = request_body(cert, pki);
        body["private_key_format"] = Value::String("pkcs8".into());
        let mut answer = self
            .client
            .request(Method::POST, &path, Some(&body))
            .await?;
        let issued = self.with_bundle(parse_certificates(&answer["data"], &path)?)?;
        // Take the key out of the answer so that no plain copy outlives this call.
        let key_pem = match answer["data"].get_mut("private_key").map(Value::take) {
            Some(Value::String(k)) => Zeroizing::new(k),
            _ => {
                return Err(VaultPkiError::Malformed {
                    path,
                    field: "data.private_key",
                })
            }
        };
        let key = PrivateKey::from_pem(&key_pem).map_err(VaultPkiError::Key)?;
        Ok((issued, key))
    }
}

/// The fields both endpoints take. A certificate without a common name asks
/// for its first DNS name as one, since most roles require a common name.
fn request_body(cert: &CertificateSpec, pki: &PkiSpec) -> Value {
    let n = &cert.names;
    let common_name = n
        .common_name
        .clone()
        .or_else(|| n.dns_names.first().cloned())
        .unwrap_or_default();
    let join = |v: Vec<String>| v.join(",");
    let mut body = json!({
        "common_name": common_name,
        "alt_names": join(n.dns_names.clone()),
        "ip_sans": join(n.ip_addresses.iter().map(ToString::to_string).collect()),
        "uri_sans": join(n.uris.clone()),
        "ttl": format!("{}s", cert.duration.as_secs()),
        "format": "pem",
    });
    if n.common_name.is_none() && n.dns_names.is_empty() {
        body["exclude_cn_from_sans"] = Value::Bool(true);
    }
    if let Some(r) = &pki.issuer_ref {
        body["issuer_ref"] = Value::String(r.clone());
    }
    body
}

/// `certificate`, `ca_chain` and `issuing_ca` into the chain for `tls.crt`
/// (leaf, then intermediates, no root, no duplicate) and the roots for `ca.crt`.
pub(crate) fn parse_certificates(data: &Value, path: &str) -> Result<Issued, VaultPkiError> {
    let malformed = |field| VaultPkiError::Malformed {
        path: path.to_owned(),
        field,
    };
    let leaf_pem = data["certificate"]
        .as_str()
        .ok_or_else(|| malformed("data.certificate"))?;
    let mut certs =
        pem::certificates(leaf_pem.as_bytes()).map_err(|_| malformed("data.certificate"))?;
    if certs.is_empty() {
        return Err(malformed("data.certificate"));
    }
    let leaf = certs.remove(0);
    let mut rest = certs;
    for pem_text in data["ca_chain"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        rest.extend(
            pem::certificates(pem_text.as_bytes()).map_err(|_| malformed("data.ca_chain"))?,
        );
    }
    if let Some(issuing) = data["issuing_ca"].as_str() {
        rest.extend(
            pem::certificates(issuing.as_bytes()).map_err(|_| malformed("data.issuing_ca"))?,
        );
    }
    let mut unique: Vec<Vec<u8>> = Vec::new();
    for c in rest {
        if c != leaf && !unique.contains(&c) {
            unique.push(c);
        }
    }
    if unique.is_empty() {
        return Err(malformed("data.issuing_ca"));
    }
    let (intermediates, roots) = split_chain(&unique);
    let mut chain = vec![leaf];
    chain.extend(intermediates.into_iter().filter(|c| !roots.contains(c)));
    Ok(Issued { chain, ca: roots })
}
