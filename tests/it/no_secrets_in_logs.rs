//! Nothing secret ever reaches a log line: a full run against a real OpenBao
//! (login, PKI sign and issue modes, a KV secret, PKCS#12 files, renewals),
//! at trace level, in text and JSON, is searched for every private key, the
//! Vault token, the AppRole credentials, the secret's values and the PKCS#12
//! password.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::openbao::*;
use common::*;
use rustix::process::Signal;

/// Substrings of a PEM key that must never be logged: every base64 body
/// line, and the DER in hex, in 16-byte pieces.
fn key_needles(pem_path: &Path) -> Vec<String> {
    let mut needles = Vec::new();
    for (label, der) in pem_blocks(pem_path) {
        if !label.contains("PRIVATE KEY") {
            continue;
        }
        let text = std::fs::read_to_string(pem_path).unwrap();
        needles.extend(
            text.lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_owned),
        );
        for chunk in der.chunks(16).filter(|c| c.len() == 16) {
            let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
            needles.push(hex);
            needles.push(format!("{chunk:?}").replace(' ', ""));
        }
    }
    assert!(
        !needles.is_empty(),
        "no private key in {}",
        pem_path.display()
    );
    needles
}

fn assert_clean(logs: &str, needles: &[(String, String)], context: &str) {
    let squeezed = logs.replace(' ', "");
    for (what, needle) in needles {
        assert!(
            !logs.contains(needle.as_str()) && !squeezed.contains(needle.as_str()),
            "{what} appears in the logs ({needle:?})\n{context}"
        );
    }
}

#[test]
fn no_key_token_or_secret_value_appears_in_any_log_line() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let token_file = bao.token_file(case.path(), "logs-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let issuer = bao.issuer(Auth::Token {
        file: token_file.clone(),
    });
    let secret_values = [
        ("password", "Sup3r-s3cret-VALUE-x9"),
        ("api_key", "AKIA-LOG-CANARY-7731"),
    ];
    bao.kv_put("secret/app/logs", &secret_values);
    let p12_password = "p12-Canary-Password-55";
    let pw_file = write(case.path(), "p12-password", p12_password);
    let body = format!(
        "certificates:\n{}\
         \x20   files:\n      bundle: tls-bundle.pem\n      pkcs12: {{keystore: keystore.p12, passwordFile: \"{}\"}}\n\
         secrets:\n  - name: db\n    issuer: bao\n    path: secret/app/logs\n    refreshInterval: 1s\n    format: env\n",
        cert_yaml("web", "1h"),
        pw_file.display()
    );
    case.write_config(&issuer, &body);

    let mut all_logs = String::new();
    let mut key_files = Vec::new();
    for format in ["text", "json"] {
        let mut cmd = case.pillion(&["--log-format", format, "run"]);
        cmd.env("PILLION_LOG_LEVEL", "trace");
        let daemon = Daemon::spawn(cmd);
        let key = case.out.join("web/tls.key");
        daemon.wait_for("the first certificate", Duration::from_secs(60), || {
            key.exists()
        });
        let first = serial(&case.out.join("web/tls.crt"));
        key_files.push(std::fs::read_to_string(&key).unwrap());
        daemon.signal(Signal::USR1);
        daemon.wait_for("a renewal", Duration::from_secs(60), || {
            serial(&case.out.join("web/tls.crt")) != first
        });
        daemon.wait_for("the secret", Duration::from_secs(60), || {
            case.out.join("db/db.env").exists()
        });
        // Every key this run published, not only the last one.
        key_files.push(std::fs::read_to_string(&key).unwrap());
        all_logs.push_str(&daemon.logs());
        assert_eq!(daemon.stop().code(), Some(0));
    }
    assert!(
        all_logs.contains("TRACE") || all_logs.contains("\"TRACE\""),
        "trace level was on"
    );
    assert!(
        all_logs.contains("published a new certificate"),
        "{all_logs}"
    );

    let mut needles: Vec<(String, String)> = vec![
        ("the Vault token".into(), token.clone()),
        ("the PKCS#12 password".into(), p12_password.into()),
    ];
    for (k, v) in secret_values {
        needles.push((format!("the secret value of {k}"), v.into()));
    }
    for (i, pem) in key_files.iter().enumerate() {
        let path = write(case.path(), &format!("key-{i}.pem"), pem);
        needles.extend(
            key_needles(&path)
                .into_iter()
                .map(|n| (format!("private key #{i}"), n)),
        );
    }
    assert_clean(&all_logs, &needles, &case.describe());
}

#[test]
fn approle_credentials_and_vault_issued_keys_never_appear_in_logs() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let approle = bao.approle(case.path(), "logs-approle");
    let role_id = std::fs::read_to_string(&approle.role_id_file)
        .unwrap()
        .trim()
        .to_owned();
    let secret_id = std::fs::read_to_string(&approle.secret_id_file)
        .unwrap()
        .trim()
        .to_owned();
    let mut issuer = bao.issuer(Auth::AppRole(approle));
    // Issue mode: the key travels in Vault's answer, the riskiest path.
    issuer.pki_mode = Some("issue".into());
    case.write_config(
        &issuer,
        &format!("certificates:\n{}", cert_yaml("web", "1h")),
    );
    let mut cmd = case.pillion(&["init", "--timeout", "30s"]);
    cmd.env("PILLION_LOG_LEVEL", "trace");
    let ran = run_bounded(&mut cmd, Duration::from_secs(60));
    ran.assert_success();
    let logs = format!("{}{}", ran.stdout, ran.stderr);
    let mut needles = vec![
        ("the AppRole secret-id".to_owned(), secret_id),
        ("the AppRole role-id".to_owned(), role_id),
    ];
    needles.extend(
        key_needles(&case.out.join("web/tls.key"))
            .into_iter()
            .map(|n| ("the Vault-issued key".to_owned(), n)),
    );
    assert_clean(&logs, &needles, &case.describe());
}
