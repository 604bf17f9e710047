//! A real nginx serving pillion's files: after a rotation, a TLS client is served the new
//! certificate, because pillion sent SIGHUP to the nginx master (and only to the master).

use crate::common;

use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(90);

#[test]
fn nginx_serves_the_rotated_certificate_after_pillion_signals_its_master() {
    // pillion finds nginx by name: no other test's nginx may run meanwhile.
    let _only_nginx = nginx_by_name();
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let out = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let crt = out.path().join("tls.crt");
    let key = out.path().join("tls.key");
    let cert_flags = |cmd: &mut std::process::Command| {
        cmd.arg("--out")
            .arg(out.path())
            .arg("--state-dir")
            .arg(state.path())
            .args(["--dns-name", "localhost", "--duration", "8s"])
            .arg("--ca-cert")
            .arg(&ca.cert)
            .arg("--ca-key")
            .arg(&ca.key);
    };

    // The files exist before nginx starts, as with an init container.
    let mut init = pillion();
    init.arg("init");
    cert_flags(&mut init);
    run_bounded(&mut init, COMMAND_DEADLINE).assert_success();
    let first = serial(&crt);

    let nginx = Nginx::start(&crt, &key);
    let served = nginx
        .served_serial(&ca.cert)
        .unwrap_or_else(|e| panic!("handshake with nginx failed: {e}\n{}", nginx.describe()));
    assert_eq!(
        served,
        first,
        "nginx should serve the certificate init published\n{}",
        nginx.describe()
    );

    let mut run = pillion();
    run.arg("run");
    cert_flags(&mut run);
    run.args(["--reload-process", "nginx"]);
    let daemon = Daemon::spawn(run);
    let ctx = || {
        format!(
            "{}\n{}\n{}",
            listing(out.path()),
            nginx.describe(),
            daemon.describe()
        )
    };

    // Wait for a rotation, then for nginx to serve whatever certificate is on disk now.
    let last_seen = std::cell::RefCell::new(String::new());
    wait_for_ctx(
        "nginx to serve a rotated certificate",
        DEADLINE,
        || format!("last: {}\n{}", last_seen.borrow(), ctx()),
        || {
            let Some(on_disk) = serial_fast(&crt) else {
                return false;
            };
            if on_disk == first {
                return false;
            }
            match nginx.served_serial(&ca.cert) {
                Ok(served) => {
                    *last_seen.borrow_mut() = format!("on disk {on_disk}, served {served}");
                    served == on_disk
                }
                Err(e) => {
                    *last_seen.borrow_mut() = e;
                    false
                }
            }
        },
    );
    openssl_verify(&ca.cert, &crt).unwrap_or_else(|e| panic!("{e}\n{}", ctx()));
    assert!(
        key_matches(&crt, &key),
        "published key does not match\n{}",
        ctx()
    );

    // nginx's own log: it was pillion that sent the SIGHUP, only the master got it, and nginx
    // loaded the files without complaint.
    let log = nginx.error_log_text();
    let from_pillion = format!("(SIGHUP) received from {},", daemon.pid());
    let hup_lines: Vec<&str> = log.lines().filter(|l| l.contains(&from_pillion)).collect();
    assert!(
        !hup_lines.is_empty(),
        "nginx logged no SIGHUP from pillion\n{}",
        ctx()
    );
    let master = format!("] {}#", nginx.pid());
    for line in &hup_lines {
        assert!(
            line.contains(&master),
            "pillion signalled an nginx worker, not only the master: {line}\n{}",
            ctx()
        );
    }
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("[emerg]")
                || l.contains("[crit]")
                || l.contains("[alert]")
                || l.contains("cannot load")
                || l.contains("failed (SSL")
                || l.contains("PEM_read_bio")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "nginx complained while reloading: {bad:#?}\n{}",
        ctx()
    );

    let status = daemon.stop();
    assert!(
        status.success(),
        "run should exit 0 on SIGTERM, exited with {status}"
    );
}
