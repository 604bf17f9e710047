//! A secret's files in its configured `format`: one file per key, one JSON
//! file, a dotenv file, or one key's raw value.

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{kind, Sink, SinkError};
use crate::config::{SecretFormat, SecretSpec};
use crate::credential::{Credential, Inputs};
use crate::output::FileEntry;

/// The files of one secret.
#[derive(Debug)]
pub(super) struct SecretFiles {
    spec: SecretSpec,
}

impl SecretFiles {
    pub(super) fn new(spec: &SecretSpec) -> SecretFiles {
        SecretFiles { spec: spec.clone() }
    }
}

impl Sink for SecretFiles {
    fn files(&self) -> Vec<(&str, u32)> {
        self.spec
            .format
            .file()
            .into_iter()
            .map(|f| (f, self.spec.mode))
            .collect()
    }

    fn render(
        &self,
        credential: &Credential,
        _inputs: &Inputs,
    ) -> Result<Vec<FileEntry>, SinkError> {
        let Credential::Secret(secret) = credential else {
            return Err(SinkError::Kind {
                sink: "secret",
                kind: kind(credential),
            });
        };
        Ok(render(&self.spec, &secret.data)?)
    }
}

/// A secret whose data the configured format cannot carry.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// `format: raw` names a key the secret lacks.
    #[error("the secret {path} has no key {key:?} (it has: {keys})")]
    MissingKey {
        /// The secret's KV path, as configured.
        path: String,
        /// The key `format: raw` asks for.
        key: String,
        /// The keys the secret does have, comma-separated.
        keys: String,
    },
    /// A key that cannot be a file or variable name.
    #[error("the key {key:?} of {path} cannot be {what}")]
    BadKey {
        /// The secret's KV path, as configured.
        path: String,
        /// The offending key of the secret's data.
        key: String,
        /// What the format needs it to be: a file name or an environment
        /// variable name, with the rules.
        what: &'static str,
    },
}

/// The files of a secret in its configured format.
///
/// # Errors
/// A key the format cannot carry (not an env name, not a file name, missing).
fn render(spec: &SecretSpec, data: &Map<String, Value>) -> Result<Vec<FileEntry>, SecretFileError> {
    let entry = |path: &str, data: Zeroizing<Vec<u8>>| FileEntry {
        path: path.to_owned(),
        data,
        mode: spec.mode,
    };
    match &spec.format {
        SecretFormat::Json { file } => {
            let mut bytes =
                Zeroizing::new(serde_json::to_vec_pretty(data).expect("a JSON map serializes"));
            bytes.push(b'\n');
            Ok(vec![entry(file, bytes)])
        }
        SecretFormat::Env { file } => {
            let mut out = Zeroizing::new(Vec::new());
            for (key, value) in data {
                if !is_env_name(key) {
                    return Err(SecretFileError::BadKey {
                        path: spec.path.clone(),
                        key: key.clone(),
                        what: "an environment variable name (letters, digits, '_', not starting with a digit)",
                    });
                }
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"=\"");
                out.extend_from_slice(
                    crate::template::escape_double_quoted(&value_text(value)).as_bytes(),
                );
                out.extend_from_slice(b"\"\n");
            }
            Ok(vec![entry(file, out)])
        }
        SecretFormat::Files => data
            .iter()
            .map(|(key, value)| {
                if key.contains('/') || crate::output::check_relative_path(key, false).is_err() {
                    return Err(SecretFileError::BadKey {
                        path: spec.path.clone(),
                        key: key.clone(),
                        what: "a file name",
                    });
                }
                Ok(entry(
                    key,
                    Zeroizing::new(value_text(value).as_bytes().to_vec()),
                ))
            })
            .collect(),
        SecretFormat::Raw { key, file } => {
            let value = data.get(key).ok_or_else(|| SecretFileError::MissingKey {
                path: spec.path.clone(),
                key: key.clone(),
                keys: data.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
            Ok(vec![entry(
                file,
                Zeroizing::new(value_text(value).as_bytes().to_vec()),
            )])
        }
    }
}

/// A string as itself; anything else as JSON.
fn value_text(v: &Value) -> Zeroizing<String> {
    Zeroizing::new(match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn is_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn spec(format: SecretFormat) -> SecretSpec {
        SecretSpec {
            name: "db".into(),
            issuer: "bao".into(),
            path: "secret/app/db".into(),
            kv_version: None,
            refresh: Duration::from_secs(60),
            format,
            dir: PathBuf::from("db"),
            mode: 0o600,
            uid: None,
            gid: None,
            templates: Vec::new(),
            revoke_on_shutdown: false,
        }
    }

    fn data(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn env_files_are_sorted_and_quoted_for_a_shell() {
        let files = render(
            &spec(SecretFormat::Env {
                file: "db.env".into(),
            }),
            &data(r#"{"USER":"app","PASS":"a\"b$c`d\\e\nf","PORT":5432}"#),
        )
        .unwrap();
        let text = String::from_utf8(files[0].data.to_vec()).unwrap();
        assert_eq!(
            text,
            "PASS=\"a\\\"b\\$c\\`d\\\\e\\nf\"\nPORT=\"5432\"\nUSER=\"app\"\n"
        );
    }

    #[test]
    fn keys_a_format_cannot_carry_are_refused() {
        let bad_env = render(
            &spec(SecretFormat::Env { file: "x".into() }),
            &data(r#"{"1x":"v"}"#),
        );
        assert!(matches!(bad_env, Err(SecretFileError::BadKey { .. })));
        let bad_file = render(&spec(SecretFormat::Files), &data(r#"{"../x":"v"}"#));
        assert!(matches!(bad_file, Err(SecretFileError::BadKey { .. })));
        let missing = render(
            &spec(SecretFormat::Raw {
                key: "k".into(),
                file: "k".into(),
            }),
            &data(r#"{"a":"v"}"#),
        );
        assert!(matches!(missing, Err(SecretFileError::MissingKey { .. })));
    }

    #[test]
    fn files_and_raw_write_values_as_they_are() {
        let files = render(&spec(SecretFormat::Files), &data(r#"{"user":"app","n":1}"#)).unwrap();
        let got: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|f| (f.path.clone(), f.data.to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                ("n".to_owned(), b"1".to_vec()),
                ("user".to_owned(), b"app".to_vec())
            ]
        );
        let raw = render(
            &spec(SecretFormat::Raw {
                key: "user".into(),
                file: "u".into(),
            }),
            &data(r#"{"user":"app"}"#),
        )
        .unwrap();
        assert_eq!(&raw[0].data[..], b"app");
        assert_eq!(raw[0].mode, 0o600);
    }
}
