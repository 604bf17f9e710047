//! PKCS#12 files for Java and other apps that want a keystore: the key with
//! its chain (a keystore) and the CA certificates (a truststore), both
//! encrypted with a password read from a file. Written with the pure-Rust
//! `p12-keystore` crate (PBES2 with AES-256 and HMAC-SHA256, which `keytool`
//! and OpenSSL 3 read).

use std::path::{Path, PathBuf};

use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKeyChain};
use zeroize::Zeroizing;

use super::{kind, Sink, SinkError};
use crate::config::Pkcs12Spec;
use crate::credential::{Credential, Inputs};
use crate::keys::PrivateKey;
use crate::output::FileEntry;
use crate::telemetry::chain;
use crate::verify::Issued;

/// The keystore and truststore of `files.pkcs12`.
#[derive(Debug)]
pub(super) struct Pkcs12 {
    spec: Pkcs12Spec,
    mode: u32,
    key_mode: u32,
}

impl Pkcs12 {
    pub(super) fn new(spec: &Pkcs12Spec, mode: u32, key_mode: u32) -> Pkcs12 {
        Pkcs12 {
            spec: spec.clone(),
            mode,
            key_mode,
        }
    }
}

impl Sink for Pkcs12 {
    fn files(&self) -> Vec<(&str, u32)> {
        let keystore = self.spec.keystore.as_deref().map(|k| (k, self.key_mode));
        let truststore = self.spec.truststore.as_deref().map(|t| (t, self.mode));
        keystore.into_iter().chain(truststore).collect()
    }

    fn check(&self) -> Result<(), (String, String)> {
        read_password(&self.spec.password_file)
            .map(drop)
            .map_err(|e| ("files.pkcs12.passwordFile".to_owned(), chain(&e)))
    }

    fn render(
        &self,
        credential: &Credential,
        _inputs: &Inputs,
    ) -> Result<Vec<FileEntry>, SinkError> {
        let Credential::Certificate(c) = credential else {
            return Err(SinkError::Kind {
                sink: "PKCS#12",
                kind: kind(credential),
            });
        };
        // Read at every publish, so a rotated password file takes effect.
        let password = read_password(&self.spec.password_file)?;
        let mut files = Vec::new();
        if let Some(path) = &self.spec.keystore {
            files.push(FileEntry {
                path: path.clone(),
                data: keystore(&c.key, &c.issued, &self.spec.alias, &password)?,
                mode: self.key_mode,
            });
        }
        if let Some(path) = &self.spec.truststore {
            files.push(FileEntry {
                path: path.clone(),
                data: Zeroizing::new(truststore(&c.issued, &password)?),
                mode: self.mode,
            });
        }
        Ok(files)
    }
}

/// Why the PKCS#12 files could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// The password file.
    #[error("failed to read the PKCS#12 password file {}", path.display())]
    ReadPassword {
        /// The configured `files.pkcs12.passwordFile`.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The encoder refused.
    #[error("failed to build the PKCS#12 file: {0}")]
    Encode(String),
}

/// Reads a password file; a trailing newline is not part of the password.
fn read_password(path: &Path) -> Result<Zeroizing<String>, KeystoreError> {
    let mut text = crate::small_file::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| KeystoreError::ReadPassword {
            path: path.to_owned(),
            source,
        })?;
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    Ok(text)
}

fn encode(e: impl std::fmt::Display) -> KeystoreError {
    KeystoreError::Encode(e.to_string())
}

/// A keystore holding `key` and the chain (leaf first), under `alias`.
fn keystore(
    key: &PrivateKey,
    issued: &Issued,
    alias: &str,
    password: &str,
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let certs = issued
        .chain
        .iter()
        .map(|der| Certificate::from_der(der).map_err(encode))
        .collect::<Result<Vec<_>, _>>()?;
    let p12_key = p12_keystore::PrivateKey::from_der(key.pkcs8_der()).map_err(encode)?;
    // The local key ID ties the key to its certificate inside the file.
    let key_id =
        ring::digest::digest(&ring::digest::SHA256, &issued.chain[0]).as_ref()[..20].to_vec();
    let mut store = KeyStore::new();
    store.add_entry(
        alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(key_id, p12_key, certs)),
    );
    store
        .writer(password)
        .write()
        .map(Zeroizing::new)
        .map_err(encode)
}

/// A truststore holding the trust anchors as trusted certificate entries.
fn truststore(issued: &Issued, password: &str) -> Result<Vec<u8>, KeystoreError> {
    let mut store = KeyStore::new();
    for (i, der) in issued.ca.iter().enumerate() {
        let cert = Certificate::from_der(der).map_err(encode)?;
        store.add_entry(&format!("ca-{i}"), KeyStoreEntry::Certificate(cert));
    }
    store.writer(password).write().map_err(encode)
}
