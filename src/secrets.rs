//! Secrets from Vault/OpenBao: KV reads, and leased (dynamic) secrets.
//!
//! KV v1 and v2 both work; the version (and the mount, which decides where v2's
//! `data/` goes) is detected through `sys/internal/ui/mounts/<path>`, as the
//! `bao kv` command does, unless `kvVersion` is set. API:
//! <https://openbao.org/api-docs/secret/kv/kv-v2/#read-secret-version>.
//!
//! A path in any other engine (`database/creds/app`, `aws/creds/x`) is read
//! as it is, and its answer's lease is renewed (`sys/leases/renew`) and
//! revoked (`sys/leases/revoke`) by lease ID:
//! <https://openbao.org/api-docs/system/leases/>.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

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

/// What kind of engine a secret's path is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    /// A KV (or `generic`) engine.
    Kv(KvMount),
    /// Any other engine: read as it is, and its lease kept alive.
    Leased {
        /// The engine type Vault reports, e.g. `database`.
        kind: String,
    },
}

/// A leased secret as Vault returned it.
#[derive(Debug)]
pub struct Leased {
    /// The lease to renew and revoke; empty for an answer without a lease.
    pub lease_id: Zeroizing<String>,
    /// How long the lease lasts from now; zero without a lease.
    pub duration: Duration,
    /// Whether Vault may extend it.
    pub renewable: bool,
    /// The secret's data (e.g. `username`, `password`).
    pub data: Map<String, Value>,
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
    /// Vault names no mount for the path.
    #[error("{path} is in no secrets engine (Vault reports mount {mount:?} of type {kind:?})")]
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

/// Finds the engine of `spec.path`: a KV mount and its version, or
/// another engine whose answers carry leases.
///
/// # Errors
/// Vault's error, or a path under no mount.
pub async fn detect(client: &VaultClient, spec: &SecretSpec) -> Result<Engine, SecretError> {
    if let Some(version) = spec.kv_version {
        // Without detection, the first path component is taken as the mount.
        let mount = spec.path.split('/').next().unwrap_or_default();
        return Ok(Engine::Kv(KvMount {
            mount: format!("{mount}/"),
            version,
        }));
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
    if mount.is_empty() {
        return Err(SecretError::NotKv {
            path: spec.path.clone(),
            mount,
            kind,
        });
    }
    if !matches!(kind.as_str(), "kv" | "generic") {
        return Ok(Engine::Leased { kind });
    }
    let version = match &data["options"]["version"] {
        Value::String(v) if v == "2" => 2,
        Value::Number(n) if n.as_u64() == Some(2) => 2,
        _ => 1,
    };
    Ok(Engine::Kv(KvMount { mount, version }))
}

/// Reads a secret of a leased engine, e.g. new database credentials.
///
/// # Errors
/// A refused read (Vault's words), or an answer without a data object.
pub async fn read_leased(client: &VaultClient, spec: &SecretSpec) -> Result<Leased, SecretError> {
    let mut answer = match client.request(Method::GET, &spec.path, None).await {
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
    let Some(Value::Object(data)) = answer.get_mut("data").map(Value::take) else {
        return Err(SecretError::NoData {
            path: spec.path.clone(),
        });
    };
    let lease_id = answer
        .get("lease_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(Leased {
        lease_id: Zeroizing::new(lease_id.to_owned()),
        duration: match lease_id {
            "" => Duration::ZERO,
            _ => lease_duration(&answer),
        },
        renewable: answer
            .get("renewable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        data,
    })
}

fn lease_duration(answer: &Value) -> Duration {
    Duration::from_secs(
        answer
            .get("lease_duration")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    )
}

/// Asks Vault to extend `lease_id` by `increment`; returns what it granted,
/// which is less near the lease's maximum TTL.
///
/// # Errors
/// Vault's error: the lease expired, was revoked, or cannot be renewed.
pub async fn renew(
    client: &VaultClient,
    lease_id: &str,
    increment: Duration,
) -> Result<Duration, SecretError> {
    let body = serde_json::json!({ "lease_id": lease_id, "increment": increment.as_secs() });
    let answer = client
        .request(Method::PUT, "sys/leases/renew", Some(&body))
        .await?;
    Ok(lease_duration(&answer))
}

/// Revokes `lease_id`: the credentials it holds stop working.
///
/// # Errors
/// Vault's error.
pub async fn revoke(client: &VaultClient, lease_id: &str) -> Result<(), SecretError> {
    let body = serde_json::json!({ "lease_id": lease_id });
    client
        .request(Method::PUT, "sys/leases/revoke", Some(&body))
        .await?;
    Ok(())
}

/// A KV read: the secret's data, and for KV v2 its version's metadata
/// (`version`, `createdTime`) for templates.
#[derive(Debug)]
pub struct KvRead {
    /// The key/value data.
    pub data: Map<String, Value>,
    /// `version` and `createdTime` of a KV v2 secret; empty for KV v1.
    pub meta: Map<String, Value>,
}

/// Reads the current data of a secret.
///
/// # Errors
/// A missing secret, a refused read (Vault's words), a malformed answer.
pub async fn read(
    client: &VaultClient,
    spec: &SecretSpec,
    kv: &KvMount,
) -> Result<KvRead, SecretError> {
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
    let meta = kv_meta(&answer, kv.version);
    let data = kv_data(answer, kv.version).map_err(|found| match found {
        true => SecretError::NotFound {
            path: spec.path.clone(),
        },
        false => SecretError::NoData {
            path: spec.path.clone(),
        },
    })?;
    Ok(KvRead { data, meta })
}

/// The version and creation time of a KV v2 answer, as templates name them.
fn kv_meta(answer: &Value, version: u8) -> Map<String, Value> {
    let mut meta = Map::new();
    if version != 2 {
        return meta;
    }
    let found = answer.get("data").and_then(|d| d.get("metadata"));
    for (from, to) in [("version", "version"), ("created_time", "createdTime")] {
        if let Some(v) = found.and_then(|m| m.get(from)) {
            meta.insert(to.to_owned(), v.clone());
        }
    }
    meta
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
