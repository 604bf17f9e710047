//! `--log-format json`: one JSON object per line, with the credential,
//! issuer, serial and not-after as fields a collector can index.

use crate::common;

use std::time::Duration;

use common::*;

#[test]
fn json_logs_are_one_object_per_line_with_structured_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let state = tmp.path().join("state");
    let mut cmd = pillion();
    cmd.args(["--log-format", "json", "--state-dir"])
        .arg(&state)
        .args(["init", "--dns-name", "localhost", "--out"])
        .arg(&out);
    let ran = run_bounded(&mut cmd, Duration::from_secs(60));
    ran.assert_success();

    let mut published = None;
    for line in ran.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "not one JSON object per line ({e}): {line:?}\n{}",
                ran.describe()
            )
        });
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{line}"
        );
        if v["message"] == "published a new certificate" {
            published = Some(v);
        }
    }
    let p = published.unwrap_or_else(|| panic!("no publish line:\n{}", ran.describe()));
    assert_eq!(p["cert"], "tls");
    assert_eq!(p["issuer"], "development");
    let logged = p["serial"].as_str().unwrap().replace(':', "");
    assert_eq!(
        normalised_serial(&logged),
        serial(&out.join("tls.crt")),
        "{p}"
    );
    assert!(
        p["not_after"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{p}"
    );
}
