//! `pillion status`: what is on disk, per certificate and secret, as a table
//! or as JSON (`-o json`).
//!
//! What only the running agent knows (when a lease ends, why the last
//! attempt failed, which templates fail while their last good file is
//! served) it notes in [`NOTES_FILE`] in the output directory ([`record`]),
//! and `status` adds it.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tracing::debug;

use crate::agent::CredentialState;
use crate::config::Config;
use crate::output::read_live;
use crate::pem;
use crate::schedule::{jitter_for, renewal_time};
use crate::verify::{fmt_time, inspect};

const HEADER: [&str; 7] = [
    "NAME",
    "SUBJECT",
    "NAMES",
    "ISSUER",
    "NOT-AFTER",
    "TIME-LEFT",
    "NEXT-RENEWAL",
];

/// Renders the status table for every credential of `config`.
pub fn render(config: &Config, now: SystemTime) -> String {
    let mut rows = vec![HEADER.map(String::from)];
    let entries = entries(config, now);
    rows.extend(entries.iter().map(row));
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for e in &entries {
        let name = e["name"].as_str().unwrap_or("-");
        if let Some(error) = e["lastError"].as_str() {
            let retry = e["retryAt"].as_str().unwrap_or("-");
            let _ = writeln!(out, "\n{name}: FAILING, next attempt at {retry}: {error}");
        }
        for t in e["templateErrors"].as_array().into_iter().flatten() {
            let t = t.as_str().unwrap_or_default();
            let _ = writeln!(
                out,
                "\n{name}: a template FAILS; its last good file is served: {t}"
            );
        }
    }
    out
}

/// The same as JSON: `{"credentials": [...]}`, one object per credential,
/// times in RFC 3339, `timeLeftSeconds` negative once expired.
pub fn render_json(config: &Config, now: SystemTime) -> String {
    let doc = json!({ "credentials": entries(config, now) });
    let mut text = serde_json::to_string_pretty(&doc).expect("a JSON value always serializes");
    text.push('\n');
    text
}

/// The file `run` keeps in the output directory for `status`: its name
/// starts with `..`, like the kubelet's own, so that apps listing the
/// directory pass over it.
pub const NOTES_FILE: &str = "..pillion-status.json";

/// What the agent notes of each credential, by name: only credentials with
/// something to say (a lease, a failure, a failing template).
fn notes(states: &[CredentialState]) -> Map<String, Value> {
    let mut out = Map::new();
    for c in states {
        let mut note = Map::new();
        if let Some(t) = c.lease_expires {
            note.insert("leaseExpires".into(), json!(fmt_time(t).to_string()));
        }
        if let Some(e) = &c.last_error {
            note.insert("lastError".into(), json!(e));
        }
        if let Some(t) = c.retry_at {
            note.insert("retryAt".into(), json!(fmt_time(t).to_string()));
        }
        if !c.template_errors.is_empty() {
            note.insert("templateErrors".into(), json!(c.template_errors));
        }
        if !note.is_empty() {
            out.insert(c.name.clone(), Value::Object(note));
        }
    }
    out
}

/// Keeps [`NOTES_FILE`] in `output_dir` up to date with `states` while the
/// agent runs: rewritten (atomically, mode 0644: it holds no secret) when
/// what it says changes, removed when there is nothing to say. A failure
/// to write is logged at debug and tried again at the next change: the
/// notes are for people, never worth a renewal.
pub async fn record(output_dir: PathBuf, mut states: watch::Receiver<Vec<CredentialState>>) {
    let path = output_dir.join(NOTES_FILE);
    let mut written: Option<Map<String, Value>> = None;
    loop {
        let now = notes(&states.borrow_and_update());
        if written.as_ref() != Some(&now) {
            let (p, body) = (path.clone(), now.clone());
            let done = tokio::task::spawn_blocking(move || write_notes(&p, &body)).await;
            match done {
                Ok(Ok(())) => written = Some(now),
                Ok(Err(e)) => {
                    debug!(path = %path.display(), error = %e, "could not write the status notes")
                }
                Err(_) => {}
            }
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}

fn write_notes(path: &Path, notes: &Map<String, Value>) -> std::io::Result<()> {
    if notes.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let doc = json!({ "credentials": notes, "written": fmt_time(SystemTime::now()).to_string() });
    let text = serde_json::to_vec_pretty(&doc).expect("a JSON value always serializes");
    crate::small_file::write_atomically(path, &text, 0o644)
}

/// The notes of [`record`] in `output_dir`, if the agent left any.
fn read_notes(output_dir: &Path) -> Map<String, Value> {
    crate::small_file::read(&output_dir.join(NOTES_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|mut doc| match doc["credentials"].take() {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default()
}

/// Seconds from `now` to `t`, negative once past.
fn seconds_left(t: SystemTime, now: SystemTime) -> i64 {
    match t.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// One object per credential, the source of both formats.
fn entries(config: &Config, now: SystemTime) -> Vec<Value> {
    let mut out = entries_on_disk(config, now);
    let mut notes = read_notes(&config.output_dir);
    for entry in &mut out {
        let Some(Value::Object(note)) = entry["name"].as_str().and_then(|n| notes.remove(n)) else {
            continue;
        };
        for (k, v) in note {
            if k == "leaseExpires" {
                if let Some(t) = v.as_str().and_then(|t| humantime::parse_rfc3339(t).ok()) {
                    entry["leaseTimeLeftSeconds"] = json!(seconds_left(t, now));
                }
            }
            entry[k] = v;
        }
    }
    out
}

/// What the files on disk say of each credential.
fn entries_on_disk(config: &Config, now: SystemTime) -> Vec<Value> {
    let mut out = Vec::new();
    for spec in &config.certificates {
        let dir = spec.target_dir(&config.output_dir);
        let leaf = read_live(&dir, &[&spec.files.certificate])
            .and_then(|files| files.into_iter().next().flatten())
            .and_then(|text| pem::certificates(&text).ok()?.into_iter().next())
            .and_then(|der| inspect(&der).ok());
        let mut entry = json!({
            "name": spec.name,
            "kind": "certificate",
            "dir": dir.display().to_string(),
            "published": leaf.is_some(),
        });
        if let Some(info) = leaf {
            let n = &info.names;
            let names: Vec<String> = n
                .dns_names
                .iter()
                .cloned()
                .chain(n.ip_addresses.iter().map(ToString::to_string))
                .chain(n.uris.iter().cloned())
                .collect();
            let left = seconds_left(info.not_after, now);
            // The agent derives its jitter from the serial: this is its time.
            let renew = renewal_time(
                info.not_before,
                info.not_after,
                spec.renew,
                jitter_for(&info.serial),
            );
            entry["subject"] = json!(info.subject);
            entry["names"] = json!(names);
            entry["issuer"] = json!(info.issuer);
            entry["serial"] = json!(info.serial);
            entry["notBefore"] = json!(fmt_time(info.not_before).to_string());
            entry["notAfter"] = json!(fmt_time(info.not_after).to_string());
            entry["timeLeftSeconds"] = json!(left);
            entry["nextRenewal"] = json!(fmt_time(renew).to_string());
        }
        out.push(entry);
    }
    for spec in &config.secrets {
        let dir = spec.target_dir(&config.output_dir);
        let files = crate::output::AtomicDir::new(&dir)
            .current()
            .and_then(|live| {
                let mut names: Vec<String> = std::fs::read_dir(live)
                    .ok()?
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect();
                names.sort();
                Some(names)
            });
        let mut entry = json!({
            "name": spec.name,
            "kind": "secret",
            "dir": dir.display().to_string(),
            "published": files.is_some(),
            "path": spec.path,
            "issuer": spec.issuer,
            "refreshIntervalSeconds": spec.refresh.as_secs(),
        });
        if let Some(files) = files {
            entry["files"] = json!(files);
        }
        out.push(entry);
    }
    out
}

/// A table row of an entry.
fn row(e: &Value) -> [String; 7] {
    let s = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
    let name = s("name");
    if e["published"] != true {
        return [
            name,
            format!("(nothing published in {})", s("dir")),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ];
    }
    if e["kind"] == "secret" {
        let files: Vec<&str> = e["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let every = Duration::from_secs(e["refreshIntervalSeconds"].as_u64().unwrap_or(0));
        if let Some(left) = e["leaseTimeLeftSeconds"].as_i64() {
            // A dynamic secret: its lease is what runs out.
            return [
                name,
                format!("secret {} (lease)", s("path")),
                files.join(","),
                s("issuer"),
                s("leaseExpires"),
                time_left(left),
                "before the lease ends".into(),
            ];
        }
        return [
            name,
            format!("secret {}", s("path")),
            files.join(","),
            s("issuer"),
            "-".into(),
            "-".into(),
            format!("every {}", humantime::format_duration(every)),
        ];
    }
    let names: Vec<&str> = e["names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let left = time_left(e["timeLeftSeconds"].as_i64().unwrap_or(0));
    [
        name,
        s("subject"),
        if names.is_empty() {
            "-".into()
        } else {
            names.join(",")
        },
        s("issuer"),
        s("notAfter"),
        left,
        s("nextRenewal"),
    ]
}

/// A time left for the table: "EXPIRED" once none is.
fn time_left(seconds: i64) -> String {
    match seconds {
        l if l > 0 => humantime::format_duration(Duration::from_secs(l as u64)).to_string(),
        _ => "EXPIRED".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str) -> CredentialState {
        CredentialState {
            name: name.into(),
            published: true,
            not_after: None,
            files: Vec::new(),
            retry_at: None,
            last_error: None,
            lease_expires: None,
            template_errors: Vec::new(),
        }
    }

    #[tokio::test]
    async fn notes_are_written_when_there_is_something_to_say_and_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NOTES_FILE);
        let (tx, rx) = watch::channel(vec![state("a"), state("b")]);
        let task = tokio::spawn(record(dir.path().to_path_buf(), rx));
        let settle = || tokio::time::sleep(Duration::from_millis(100));
        settle().await;
        assert!(!path.exists(), "nothing to say, nothing written");

        let mut b = state("b");
        b.template_errors = vec!["t:2: `x` is undefined".into()];
        b.lease_expires = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000));
        tx.send_replace(vec![state("a"), b]);
        settle().await;
        let notes = read_notes(dir.path());
        assert_eq!(notes.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(notes["b"]["leaseExpires"], "2096-10-02T07:06:40Z");
        assert_eq!(notes["b"]["templateErrors"][0], "t:2: `x` is undefined");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);

        tx.send_replace(vec![state("a"), state("b")]);
        settle().await;
        assert!(!path.exists(), "removed once there is nothing to say");
        drop(tx);
        task.await.unwrap();
    }
}
