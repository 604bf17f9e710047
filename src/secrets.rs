//! KV secrets from Vault/OpenBao: read, render into files, publish.
//!
//! KV v1 and v2 both work; the version (and the mount, which decides where v2's
//! `data/` goes) is detected through `sys/internal/ui/mounts/<path>`, as the
//! `bao kv` command does, unless `kvVersion` is set. API:
//! <https://openbao.org/api-docs/secret/kv/kv-v2/#read-secret-version>.

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::config::{SecretFormat, SecretSpec};
use crate::output::FileEntry;
use crate::vault::{VaultClient, VaultError};

/// Where a secret lives: its KV mount and the engine version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvMount {
    /// With a trailing slash, e.g. `secret/`.
    pub mount: String,
    pub version: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret {path} does not exist (or was deleted)")]
    NotFound { path: String },
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(
        "{path} is not in a KV secrets engine (Vault reports mount {mount:?} of type {kind:?})"
    )]
    NotKv {
        path: String,
        mount: String,
        kind: String,
    },
    #[error("Vault's answer for {path} has no data object")]
    NoData { path: String },
    #[error("the secret {path} has no key {key:?} (it has: {keys})")]
    MissingKey {
        path: String,
        key: String,
        keys: String,
    },
    #[error("the key {key:?} of {path} cannot be {what}")]
    BadKey {
        path: String,
        key: String,
        what: &'static str,
    },
}

/// Finds the KV mount and version of `spec.path`.
///
/// # Errors
/// Vault's error, or a path outside any KV engine.
pub async fn detect(client: &VaultClient, spec: &SecretSpec) -> Result<KvMount, SecretError> {
    if let Some(version) = spec.kv_version {
        // Without detection, the first path component is taken as the mount.
        let mount = spec.path.split('/').next().unwrap_or_default();
        return Ok(KvMount {
            mount: format!("{mount}/"),
            version,
        });
    }
    let answer = client
        .request(
            Method::GET,
            &format!("sys/internal/ui/mounts/{}", spec.path),
            None,
        )
        .await?;
    let data = &answer["data"];
    let mount = data["path"].as_str().unwrap_or_default().to_owned();
    let kind = data["type"].as_str().unwrap_or_default().to_owned();
    if !matches!(kind.as_str(), "kv" | "generic") || mount.is_empty() {
        return Err(SecretError::NotKv {
            path: spec.path.clone(),
            mount,
            kind,
        });
    }
    let version = match &data["options"]["version"] {
        Value::String(v) if v == "2" => 2,
        Value::Number(n) if n.as_u64() == Some(2) => 2,
        _ => 1,
    };
    Ok(KvMount { mount, version })
}

/// Reads the current data of a secret.
///
/// # Errors
/// A missing secret, a refused read (Vault's words), a malformed answer.
pub async fn read(
    client: &VaultClient,
    spec: &SecretSpec,
    kv: &KvMount,
) -> Result<Map<String, Value>, SecretError> {
    let api_path = match kv.version {
        2 => {
            let rest = spec.path.strip_prefix(&kv.mount).unwrap_or(&spec.path);
            format!("{}data/{rest}", kv.mount)
        }
        _ => spec.path.clone(),
    };
    let answer = match client.request(Method::GET, &api_path, None).await {
        Err(VaultError::Status {
            status: StatusCode::NOT_FOUND,
            ..
        }) => {
            return Err(SecretError::NotFound {
                path: spec.path.clone(),
            })
        }
        other => other?,
    };
    kv_data(answer, kv.version).map_err(|found| match found {
        true => SecretError::NotFound {
            path: spec.path.clone(),
        },
        false => SecretError::NoData {
            path: spec.path.clone(),
        },
    })
}

/// The key/value data of a KV read answer of engine `version`. `Err(true)`
/// for a deleted version (KV v2 answers `data: null`), `Err(false)` for an
/// answer without a data object.
pub(crate) fn kv_data(mut answer: Value, version: u8) -> Result<Map<String, Value>, bool> {
    let data = match version {
        // `get_mut`, not indexing: indexing a non-object (Vault answering
        // `15`) panics, and found by fuzzing it did.
        2 => answer
            .get_mut("data")
            .and_then(|d| d.get_mut("data"))
            .map(Value::take),
        _ => answer.get_mut("data").map(Value::take),
    };
    match data {
        Some(Value::Object(map)) => Ok(map),
        Some(Value::Null) => Err(true),
        _ => Err(false),
    }
}

/// The files of a secret in its configured format.
///
/// # Errors
/// A key the format cannot carry (not an env name, not a file name, missing).
pub fn render(spec: &SecretSpec, data: &Map<String, Value>) -> Result<Vec<FileEntry>, SecretError> {
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
                    return Err(SecretError::BadKey {
                        path: spec.path.clone(),
                        key: key.clone(),
                        what: "an environment variable name (letters, digits, '_', not starting with a digit)",
                    });
                }
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"=\"");
                out.extend_from_slice(env_quote(&value_text(value)).as_bytes());
                out.extend_from_slice(b"\"\n");
            }
            Ok(vec![entry(file, out)])
        }
        SecretFormat::Files => data
            .iter()
            .map(|(key, value)| {
                if key.contains('/') || crate::output::check_relative_path(key, false).is_err() {
                    return Err(SecretError::BadKey {
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
            let value = data.get(key).ok_or_else(|| SecretError::MissingKey {
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

/// Escapes a value for a double-quoted shell / dotenv string.
fn env_quote(s: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(s.len() + 8));
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '`' => out.push_str("\\`"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
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
        }
    }

    fn data(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_kv_answer_that_is_not_an_object_is_an_error_not_a_panic() {
        // Found by the vault_response fuzz target: the answer `15`.
        for answer in [
            serde_json::json!(15),
            serde_json::json!({"data": 15}),
            serde_json::json!([]),
        ] {
            assert_eq!(kv_data(answer.clone(), 2), Err(false));
            assert!(kv_data(answer, 1).is_err());
        }
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
        assert!(matches!(bad_env, Err(SecretError::BadKey { .. })));
        let bad_file = render(&spec(SecretFormat::Files), &data(r#"{"../x":"v"}"#));
        assert!(matches!(bad_file, Err(SecretError::BadKey { .. })));
        let missing = render(
            &spec(SecretFormat::Raw {
                key: "k".into(),
                file: "k".into(),
            }),
            &data(r#"{"a":"v"}"#),
        );
        assert!(matches!(missing, Err(SecretError::MissingKey { .. })));
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
