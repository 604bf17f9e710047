//! KV secrets from Vault/OpenBao: read, render into files, publish.
//!
//! KV v1 and v2 both work; the version (and the mount, which decides where v2's
//! `data/` goes) is detected through `sys/internal/ui/mounts/<path>`, as the
//! `bao kv` command does, unless `kvVersion` is set. API:
//! <https://openbao.org/api-docs/secret/kv/kv-v2/#read-secret-version>.

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use crate::config::SecretSpec;
use crate::vault::{VaultClient, VaultError};

/// Where a secret lives: its KV mount and the engine version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvMount {
    /// With a trailing slash, e.g. `secret/`.
    pub mount: String,
    /// The KV engine version, 1 or 2: whether reads go through `<mount>data/`.
    pub version: u8,
}

/// Why a KV secret could not be read from Vault.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Vault answered 404, or KV v2's current version is deleted.
    #[error("the secret {path} does not exist (or was deleted)")]
    NotFound {
        /// `secrets[N].path` as configured.
        path: String,
    },
    /// The request failed: transport, login, or Vault's own error, verbatim.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The path's mount is not a KV (or `generic`) engine, or Vault names no mount.
    #[error(
        "{path} is not in a KV secrets engine (Vault reports mount {mount:?} of type {kind:?})"
    )]
    NotKv {
        /// `secrets[N].path` as configured.
        path: String,
        /// The mount Vault reports for it; empty when none.
        mount: String,
        /// The engine type Vault reports, e.g. `pki`; empty when none.
        kind: String,
    },
    /// Vault answered the read without a `data` object.
    #[error("Vault's answer for {path} has no data object")]
    NoData {
        /// `secrets[N].path` as configured.
        path: String,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
