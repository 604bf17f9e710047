//! SIGHUP re-reads the configuration: a broken one is rejected and the
//! running one stays; a valid one adds, changes and removes credentials.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rustix::process::Signal;

fn config(out: &Path, ca: &OpensslCa, certs: &[(&str, &str)]) -> String {
    let mut text = format!(
        "outputDir: {}\nissuers:\n  ca:\n    localCa: {{certFile: {}, keyFile: {}}}\ncertificates:\n",
        out.display(),
        ca.cert.display(),
        ca.key.display()
    );
    for (name, dns) in certs {
        text.push_str(&format!(
            "  - {{name: {name}, dnsNames: [{dns}], duration: 1h}}\n"
        ));
    }
    text
}

#[test]
fn sighup_rejects_a_broken_config_and_applies_a_valid_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let cfg = write(
        tmp.path(),
        "pillion.yaml",
        &config(&out, &ca, &[("a", "a.example.test")]),
    );
    let state = tmp.path().join("state");
    let daemon = Daemon::run([
        "--config".as_ref(),
        cfg.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    let a = out.join("a/tls.crt");
    daemon.wait_for("certificate a", Duration::from_secs(20), || a.exists());
    let a1 = serial(&a);

    // A broken configuration: rejected with its errors, the old one keeps running.
    write(
        tmp.path(),
        "pillion.yaml",
        "outputDir: /x\ncertificates:\n  - name: a\n    dnsNames: ['bad name']\n",
    );
    daemon.signal(Signal::HUP);
    daemon.wait_for("the rejection in the log", Duration::from_secs(20), || {
        daemon.logs().contains("the new configuration is rejected")
    });
    assert!(
        daemon.logs().contains("certificates[0].dnsNames[0]"),
        "the errors are named:\n{}",
        daemon.describe()
    );
    assert!(!daemon.exited(), "still running:\n{}", daemon.describe());
    daemon.signal(Signal::USR1);
    daemon.wait_for(
        "a renewed under the old configuration",
        Duration::from_secs(20),
        || serial(&a) != a1,
    );
    let a2 = serial(&a);
    assert!(!Path::new("/x").exists());

    // A valid one that adds b and leaves a alone.
    write(
        tmp.path(),
        "pillion.yaml",
        &config(
            &out,
            &ca,
            &[("a", "a.example.test"), ("b", "b.example.test")],
        ),
    );
    daemon.signal(Signal::HUP);
    let b = out.join("b/tls.crt");
    daemon.wait_for(
        "certificate b after SIGHUP",
        Duration::from_secs(20),
        || b.exists(),
    );
    openssl_verify(&ca.cert, &b).unwrap();
    assert_eq!(
        serial(&a),
        a2,
        "an unchanged certificate is not issued again"
    );

    // Change a's names and remove b: a is issued again, b no longer renewed.
    let b1 = serial(&b);
    write(
        tmp.path(),
        "pillion.yaml",
        &config(&out, &ca, &[("a", "a2.example.test")]),
    );
    daemon.signal(Signal::HUP);
    daemon.wait_for("a issued for its new name", Duration::from_secs(20), || {
        san_text(&a).contains("a2.example.test")
    });
    let a3 = serial(&a);
    daemon.signal(Signal::USR1);
    daemon.wait_for("a renewed by SIGUSR1", Duration::from_secs(20), || {
        serial(&a) != a3
    });
    assert_eq!(
        serial(&b),
        b1,
        "a removed certificate is not renewed:\n{}",
        daemon.describe()
    );
    assert_eq!(daemon.stop().code(), Some(0));
}
