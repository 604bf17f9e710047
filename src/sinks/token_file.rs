//! The Vault token as a file (`vault.tokenSink`), for apps that call Vault
//! themselves: Vault Agent's file sink.

use zeroize::Zeroizing;

use super::{kind, Sink, SinkError};
use crate::credential::{Credential, Inputs};
use crate::output::FileEntry;

/// One file holding the token, nothing else (no newline).
#[derive(Debug)]
pub struct TokenFile {
    file: String,
    mode: u32,
}

impl TokenFile {
    /// The token written to `file` with `mode`.
    pub fn new(file: &str, mode: u32) -> TokenFile {
        TokenFile {
            file: file.to_owned(),
            mode,
        }
    }
}

impl Sink for TokenFile {
    fn files(&self) -> Vec<(&str, u32)> {
        vec![(self.file.as_str(), self.mode)]
    }

    fn render(
        &self,
        credential: &Credential,
        _inputs: &Inputs,
    ) -> Result<Vec<FileEntry>, SinkError> {
        let Credential::Token(token) = credential else {
            return Err(SinkError::Kind {
                sink: "tokenSink",
                kind: kind(credential),
            });
        };
        Ok(vec![FileEntry {
            path: self.file.clone(),
            data: Zeroizing::new(token.as_bytes().to_vec()),
            mode: self.mode,
        }])
    }
}
