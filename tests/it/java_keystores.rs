//! PKCS#12 keystore and truststore for Java apps, read by `keytool` and
//! `openssl pkcs12`; and the combined bundle read the way haproxy-style
//! consumers read it (key and chain from one PEM file).

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn fingerprint(cert_pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert_pem)
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split_once('=')
        .map(|(_, f)| f.to_owned())
        .unwrap_or_default()
}

fn keytool_list(store: &Path, password: &str) -> String {
    let out = Command::new("keytool")
        .args([
            "-list",
            "-storetype",
            "PKCS12",
            "-storepass",
            password,
            "-keystore",
        ])
        .arg(store)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "keytool is needed (OpenJDK, e.g. apt-get install -y openjdk-17-jre-headless): {e}"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "keytool failed:\n{text}");
    text
}

#[test]
fn keytool_and_openssl_read_the_keystore_and_truststore() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let password = "s3cret-Pass";
    let pw_file = write(tmp.path(), "p12-password", &format!("{password}\n"));
    let out = tmp.path().join("out");
    let cfg = write(
        tmp.path(),
        "pillion.yaml",
        &format!(
            "outputDir: {}\nissuers:\n  ca:\n    localCa: {{certFile: {}, keyFile: {}}}\n\
             certificates:\n  - name: java\n    dnsNames: [localhost]\n    privateKey: {{algorithm: RSA-2048}}\n\
             \x20   files:\n      bundle: tls-bundle.pem\n      pkcs12: {{keystore: keystore.p12, truststore: truststore.p12, passwordFile: {}, alias: app}}\n",
            out.display(),
            ca.cert.display(),
            ca.key.display(),
            pw_file.display()
        ),
    );
    let state = tmp.path().join("state");
    let ran = run_bounded(
        pillion()
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&state)
            .arg("init"),
        Duration::from_secs(60),
    );
    ran.assert_success();
    let dir = out.join("java");
    assert_eq!(
        mode_of(&dir.join("keystore.p12")),
        0o600,
        "the keystore holds the key"
    );
    assert_eq!(mode_of(&dir.join("truststore.p12")), 0o644);

    // keytool finds the key entry under its alias, with the published leaf.
    let listing = keytool_list(&dir.join("keystore.p12"), password);
    assert!(
        listing.contains("app,") && listing.contains("PrivateKeyEntry"),
        "{listing}"
    );
    assert!(
        listing.contains(&fingerprint(&dir.join("tls.crt"))),
        "keystore leaf is tls.crt:\n{listing}"
    );
    // ... and the CA as a trusted certificate in the truststore.
    let trust = keytool_list(&dir.join("truststore.p12"), password);
    assert!(trust.contains("trustedCertEntry"), "{trust}");
    assert!(
        trust.contains(&fingerprint(&ca.cert)),
        "truststore holds the CA:\n{trust}"
    );
    // A wrong password is refused: the file really is protected.
    let wrong = Command::new("keytool")
        .args([
            "-list",
            "-storetype",
            "PKCS12",
            "-storepass",
            "wrong-password",
            "-keystore",
        ])
        .arg(dir.join("keystore.p12"))
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "a wrong password must fail");

    // openssl pkcs12 reads the key and the certificate, and they match.
    let dump = Command::new("openssl")
        .args([
            "pkcs12",
            "-nodes",
            "-passin",
            &format!("pass:{password}"),
            "-in",
        ])
        .arg(dir.join("keystore.p12"))
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let pem = write(
        tmp.path(),
        "dump.pem",
        &String::from_utf8_lossy(&dump.stdout),
    );
    assert!(
        key_matches(&pem, &pem),
        "the keystore's key belongs to its certificate"
    );
    assert_eq!(fingerprint(&pem), fingerprint(&dir.join("tls.crt")));

    // The bundle is key + chain in one PEM: Python's ssl loads it as
    // haproxy does, from the one file.
    let py = Command::new("python3")
        .args(["-c", "import ssl,sys; c=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[1]); print('ok')"])
        .arg(dir.join("tls-bundle.pem"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
}
