//! `pillion status`: what is on disk, per certificate and secret.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::output::read_live;
use crate::schedule::renewal_time;
use crate::verify::{certs_from_pem, fmt_time, inspect};

/// A row for a credential with nothing on disk yet.
fn unpublished(name: &str, dir: &std::path::Path) -> [String; 7] {
    let mut row: [String; 7] = std::array::from_fn(|_| "-".to_owned());
    row[0] = name.to_owned();
    row[1] = format!("(nothing published in {})", dir.display());
    row
}

/// Renders the status table for every certificate of `config`.
pub fn render(config: &Config, now: SystemTime) -> String {
    let mut rows = vec![[
        "NAME",
        "SUBJECT",
        "NAMES",
        "ISSUER",
        "NOT-AFTER",
        "TIME-LEFT",
        "NEXT-RENEWAL",
    ]
    .map(String::from)];
    for spec in &config.certificates {
        let dir = spec.target_dir(&config.output_dir);
        let leaf = read_live(&dir, &[&spec.files.certificate])
            .and_then(|files| files.into_iter().next().flatten())
            .and_then(|pem| certs_from_pem(&pem).ok()?.into_iter().next())
            .and_then(|der| inspect(&der).ok());
        let row = match leaf {
            None => unpublished(&spec.name, &dir),
            Some(info) => {
                let n = &info.names;
                let names: Vec<String> = n
                    .dns_names
                    .iter()
                    .cloned()
                    .chain(n.ip_addresses.iter().map(ToString::to_string))
                    .chain(n.uris.iter().cloned())
                    .collect();
                let left = match info.not_after.duration_since(now) {
                    Ok(d) => {
                        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
                    }
                    Err(_) => "EXPIRED".into(),
                };
                // Without jitter: the running agent renews up to 5% of the lifetime earlier.
                let renew = renewal_time(info.not_before, info.not_after, spec.renew, 0.0);
                [
                    spec.name.clone(),
                    info.subject.clone(),
                    if names.is_empty() {
                        "-".into()
                    } else {
                        names.join(",")
                    },
                    info.issuer.clone(),
                    fmt_time(info.not_after).to_string(),
                    left,
                    fmt_time(renew).to_string(),
                ]
            }
        };
        rows.push(row);
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
                Some(names.join(","))
            });
        rows.push(match files {
            None => unpublished(&spec.name, &dir),
            Some(files) => [
                spec.name.clone(),
                format!("secret {}", spec.path),
                files,
                spec.issuer.clone(),
                "-".into(),
                "-".into(),
                format!("every {}", humantime::format_duration(spec.refresh)),
            ],
        });
    }
    let widths: Vec<usize> = (0..7)
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
