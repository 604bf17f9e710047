//! Validating `secrets[*]`: Vault KV secrets to publish.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::templates::validate_templates;
use super::{
    credential_name, parse_duration, parse_mode, Errors, IssuerSpec, Origin, RawSecret,
    SecretFormat, SecretSpec, DEFAULT_KEY_MODE, DEFAULT_REFRESH_INTERVAL,
};

pub(super) fn validate_secret(
    errs: &mut Errors,
    path: &str,
    rs: RawSecret,
    issuers: &BTreeMap<String, IssuerSpec>,
    origin: Origin,
) -> Option<SecretSpec> {
    let before = errs.0.len();
    let name = credential_name(errs, path, rs.name)?;
    let vaults: Vec<&String> = issuers
        .iter()
        .filter(|(_, i)| matches!(i, IssuerSpec::Vault(_)))
        .map(|(n, _)| n)
        .collect();
    let issuer = match rs.issuer {
        Some(i) if vaults.contains(&&i) => i,
        Some(i) => {
            errs.add(
                format!("{path}.issuer"),
                format!("{i:?} is not a configured vault issuer"),
            );
            i
        }
        None if vaults.len() == 1 => vaults[0].clone(),
        None => {
            errs.add(
                format!("{path}.issuer"),
                "is required: name the vault issuer to read the secret from",
            );
            String::new()
        }
    };
    let secret_path = match rs.path {
        Some(p) if !p.trim_matches('/').is_empty() && !p.split('/').any(|c| c == "..") => {
            p.trim_matches('/').to_owned()
        }
        Some(p) => {
            errs.add(
                format!("{path}.path"),
                format!("{p:?} is not a KV path (e.g. secret/app/db)"),
            );
            p
        }
        None => {
            errs.add(format!("{path}.path"), "is required (e.g. secret/app/db)");
            String::new()
        }
    };
    if let Some(v) = rs.kv_version {
        if v != 1 && v != 2 {
            errs.add(
                format!("{path}.kvVersion"),
                format!("{v} is not a KV version (1 or 2)"),
            );
        }
    }
    let refresh = match rs.refresh_interval.as_deref().map(parse_duration) {
        None => DEFAULT_REFRESH_INTERVAL,
        Some(Ok(d)) if d >= Duration::from_secs(1) => d,
        Some(Ok(_)) => {
            errs.add(format!("{path}.refreshInterval"), "must be at least 1s");
            DEFAULT_REFRESH_INTERVAL
        }
        Some(Err(e)) => {
            errs.add(format!("{path}.refreshInterval"), e);
            DEFAULT_REFRESH_INTERVAL
        }
    };
    let file = |default: String, errs: &mut Errors| {
        let f = rs.file.clone().unwrap_or(default);
        if let Err(e) = crate::output::check_relative_path(&f, false) {
            errs.add(format!("{path}.file"), format!("{f:?} {e}"));
        }
        f
    };
    let format = match rs.format.as_deref() {
        None | Some("json") => SecretFormat::Json {
            file: file(format!("{name}.json"), errs),
        },
        Some("env") => SecretFormat::Env {
            file: file(format!("{name}.env"), errs),
        },
        Some("files") => {
            if rs.file.is_some() {
                errs.add(
                    format!("{path}.file"),
                    "does not apply to format files (each key becomes a file in dir)",
                );
            }
            SecretFormat::Files
        }
        Some("raw") => match rs.key.clone() {
            Some(key) => {
                let f = file(key.clone(), errs);
                SecretFormat::Raw { key, file: f }
            }
            None => {
                errs.add(
                    format!("{path}.key"),
                    "is required with format raw: name the key whose value to write",
                );
                SecretFormat::Files
            }
        },
        Some(other) => {
            errs.add(
                format!("{path}.format"),
                format!("{other:?} is not a format (expected json, env, files or raw)"),
            );
            SecretFormat::Files
        }
    };
    if rs.key.is_some() && !matches!(format, SecretFormat::Raw { .. }) {
        errs.add(format!("{path}.key"), "applies only to format raw");
    }
    let dir = match (rs.dir, origin) {
        (Some(d), _) => {
            if let Err(e) = crate::output::check_relative_path(&d, true) {
                errs.add(format!("{path}.dir"), format!("{d:?} {e}"));
            }
            PathBuf::from(d)
        }
        (None, _) => PathBuf::from(&name),
    };
    let mode = match rs.mode.map(|m| parse_mode(&m)) {
        None => DEFAULT_KEY_MODE,
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            errs.add(format!("{path}.mode"), e);
            DEFAULT_KEY_MODE
        }
    };
    let taken: Vec<&str> = format.file().into_iter().collect();
    let templates = validate_templates(errs, path, rs.templates, &taken);
    (errs.0.len() == before).then_some(SecretSpec {
        name,
        issuer,
        path: secret_path,
        kv_version: rs.kv_version,
        refresh,
        format,
        dir,
        mode,
        uid: rs.uid,
        gid: rs.gid,
        templates,
        revoke_on_shutdown: rs.revoke_on_shutdown.unwrap_or(false),
    })
}
