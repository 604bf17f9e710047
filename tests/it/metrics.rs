//! GET /metrics is well-formed Prometheus/OpenMetrics text, and its gauges
//! agree with the certificate on disk.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;
use rustix::process::Signal;

fn get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// Parses the exposition strictly: every line is a `# HELP`/`# TYPE`/`# EOF`
/// comment or `name{labels} value`, every sample belongs to a declared
/// family, and the text ends with `# EOF`. Returns samples by `name{labels}`.
fn parse(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut families = Vec::new();
    let mut samples = BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            return if lines.peek().is_none() {
                Ok(samples)
            } else {
                Err("text after # EOF".into())
            };
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or(format!("bad TYPE line {line:?}"))?;
            if ![
                "gauge",
                "counter",
                "histogram",
                "info",
                "stateset",
                "summary",
                "unknown",
            ]
            .contains(&kind)
            {
                return Err(format!("unknown type in {line:?}"));
            }
            families.push(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or(format!("no value in {line:?}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("bad value in {line:?}"))?;
        let name = series.split('{').next().unwrap();
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(format!("bad metric name in {line:?}"));
        }
        if let Some(labels) = series.strip_prefix(name) {
            let braced = labels.starts_with('{') && labels.ends_with('}');
            if !labels.is_empty() && !braced {
                return Err(format!("bad labels in {line:?}"));
            }
        }
        if !families.iter().any(|f| name.starts_with(f.as_str())) {
            return Err(format!("sample {name} has no # TYPE"));
        }
        samples.insert(series.to_owned(), value);
    }
    Err("no # EOF at the end".into())
}

fn not_after_epoch(cert: &std::path::Path) -> f64 {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let date = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("notAfter=")
        .to_owned();
    let out = Command::new("date")
        .args(["-u", "-d", &date, "+%s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn metrics_parse_and_the_not_after_gauge_matches_the_certificate_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let state = tmp.path().join("state");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let daemon = Daemon::run([
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--listen".as_ref(),
        listen.as_ref(),
        "--dns-name".as_ref(),
        "localhost".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        "--duration".as_ref(),
        "1h".as_ref(),
        "--reload-process".as_ref(),
        "nosuchapp9".as_ref(),
    ]);
    let cert = out.join("tls.crt");
    daemon.wait_for("the first certificate", Duration::from_secs(20), || {
        cert.exists()
    });
    let first = serial(&cert);
    daemon.signal(Signal::USR1);
    daemon.wait_for("a renewal", Duration::from_secs(20), || {
        serial(&cert) != first
    });
    let expected_not_after = not_after_epoch(&cert);

    let mut samples = BTreeMap::new();
    daemon.wait_for("metrics after the renewal", Duration::from_secs(10), || {
        let (head, body) = get(port, "/metrics");
        assert!(head.contains("200 OK"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        samples = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        samples.get("pillion_certificate_not_after_timestamp_seconds{name=\"tls\"}")
            == Some(&expected_not_after)
    });
    assert_eq!(
        samples.get("pillion_renewals_total{name=\"tls\",result=\"success\"}"),
        Some(&2.0),
        "{samples:?}"
    );
    assert_eq!(
        samples.get("pillion_obtain_duration_seconds_count{name=\"tls\"}"),
        Some(&2.0),
        "{samples:?}"
    );
    // The reload target does not exist: each round's reload failed, and says so.
    assert_eq!(
        samples.get("pillion_reloads_total{target=\"process\",result=\"failure\"}"),
        Some(&2.0),
        "{samples:?}"
    );
    let next = samples["pillion_certificate_next_renewal_timestamp_seconds{name=\"tls\"}"];
    assert!(
        next < expected_not_after,
        "renewal is scheduled before expiry"
    );
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("pillion_build_info{version=")),
        "{samples:?}"
    );
    assert_eq!(daemon.stop().code(), Some(0));
}
