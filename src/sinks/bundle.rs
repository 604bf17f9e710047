//! One file with the key first, then the chain, as haproxy and Kubernetes'
//! Pod Certificates lay it out.

use zeroize::Zeroizing;

use super::{kind, Sink, SinkError};
use crate::credential::{Credential, Inputs};
use crate::output::FileEntry;
use crate::pem;

/// The bundle file (`files.bundle`), owner-only like the key.
#[derive(Debug)]
pub(super) struct Bundle {
    path: String,
    mode: u32,
}

impl Bundle {
    pub(super) fn new(path: &str, key_mode: u32) -> Bundle {
        Bundle {
            path: path.to_owned(),
            mode: key_mode,
        }
    }
}

impl Sink for Bundle {
    fn files(&self) -> Vec<(&str, u32)> {
        vec![(&self.path, self.mode)]
    }

    fn render(
        &self,
        credential: &Credential,
        _inputs: &Inputs,
    ) -> Result<Vec<FileEntry>, SinkError> {
        let Credential::Certificate(c) = credential else {
            return Err(SinkError::Kind {
                sink: "bundle",
                kind: kind(credential),
            });
        };
        let key_pem = c.key.to_pem();
        let chain_pem = pem::encode_certificates(&c.issued.chain);
        let mut data = Zeroizing::new(Vec::with_capacity(key_pem.len() + chain_pem.len()));
        data.extend_from_slice(key_pem.as_bytes());
        data.extend_from_slice(chain_pem.as_bytes());
        Ok(vec![FileEntry {
            path: self.path.clone(),
            data,
            mode: self.mode,
        }])
    }
}
