//! `pillion status`: what is on disk, per certificate and secret, as a table
//! or as JSON (`-o json`).

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

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
    rows.extend(entries(config, now).iter().map(row));
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

/// One object per credential, the source of both formats.
fn entries(config: &Config, now: SystemTime) -> Vec<Value> {
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
            let left = match info.not_after.duration_since(now) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs() as i64),
            };
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
    let left = match e["timeLeftSeconds"].as_i64() {
        Some(l) if l > 0 => humantime::format_duration(Duration::from_secs(l as u64)).to_string(),
        _ => "EXPIRED".into(),
    };
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
