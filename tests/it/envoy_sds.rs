//! A real Envoy takes its certificates from pillion over SDS on a Unix socket: an mTLS listener
//! (server certificate and client validation from SDS) and an mTLS upstream (client certificate
//! and server validation from SDS). pillion rotates every few seconds while a Python ssl client
//! makes handshakes without pause: none fails, and the leaf Envoy serves follows each rotation.
//! Envoy restarted gets the current certificates; pillion restarted, Envoy's stream comes back.

use crate::common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::envoy::*;
use common::fixture::Fixture;
use common::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn config(ca: &OpensslCa, socket: &Path) -> String {
    format!(
        "issuers:\n  ca:\n    localCa: {{certFile: \"{}\", keyFile: \"{}\"}}\nsds:\n  socket: \"{}\"\ncertificates:\n  - name: web\n    dnsNames: [localhost]\n    duration: 6s\n  - name: client\n    dnsNames: [client.test]\n    duration: 6s\n",
        ca.cert.display(),
        ca.key.display(),
        socket.display()
    )
}

#[test]
fn envoy_takes_rotating_certificates_over_sds_with_no_failed_handshake() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let fx = Fixture::new();
    let socket = fx.path().join("run/sds.sock");
    fx.write_config(&config(&ca, &socket));
    let web_crt = fx.out.join("web/tls.crt");
    let client = fx.out.join("client");
    let daemon = fx.run();
    wait_for_ctx(
        "the SDS socket and the first files",
        DEADLINE,
        || daemon.describe(),
        || socket.exists() && web_crt.exists() && client.join("tls.key").exists(),
    );
    let envoy = Envoy::start(&socket);
    let ctx = || {
        format!(
            "{}\n{}\n{}",
            fx.describe(),
            daemon.describe(),
            envoy.describe()
        )
    };
    let first = wait_served(&envoy, &client, &ca.cert, DEADLINE)
        .unwrap_or_else(|e| panic!("Envoy never served a certificate: {e}\n{}", ctx()));
    assert_eq!(
        Some(first),
        leaf_sha256(&web_crt),
        "Envoy serves pillion's certificate\n{}",
        ctx()
    );

    // 16 s of handshakes without pause while both certificates rotate every ~4 s.
    let mut client_run = Command::new("python3")
        .args(["-c", HANDSHAKER])
        .arg(envoy.tls_port.to_string())
        .arg(envoy.plain_port.to_string())
        .arg(&client)
        .arg(&ca.cert)
        .arg("16")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the handshake client");
    let stdout = client_run.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    // What pillion published, and when: (time, leaf SHA-256).
    let mut on_disk: Vec<(f64, String)> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(17) {
        if let Some(sha) = leaf_sha256(&web_crt) {
            if on_disk.last().is_none_or(|(_, last)| *last != sha) {
                on_disk.push((now(), sha));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(client_run.wait().unwrap().success());
    let lines = lines.join().unwrap();
    let failed: Vec<&String> = lines.iter().filter(|l| l.contains(" FAIL ")).collect();
    let tls: Vec<(f64, &str)> = lines
        .iter()
        .filter_map(
            |l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                [t, "tls", "ok", sha] => Some((t.parse().unwrap(), *sha)),
                _ => None,
            },
        )
        .collect();
    let plain = lines.iter().filter(|l| l.contains(" plain ok")).count();
    assert!(
        failed.is_empty(),
        "{} of {} attempts failed: {failed:?}\n{}",
        failed.len(),
        lines.len(),
        ctx()
    );
    assert!(
        tls.len() > 50 && plain > 50,
        "tls {} plain {plain}\n{}",
        tls.len(),
        ctx()
    );
    assert!(on_disk.len() >= 4, "rotations: {on_disk:?}\n{}", ctx());

    // Every leaf Envoy served was one pillion published; every one published (but the last
    // second's) was served, soon after it appeared on disk.
    let mut lags = Vec::new();
    for (t, sha) in &tls {
        assert!(
            on_disk.iter().any(|(_, d)| d == sha) || Some(sha.to_string()) == leaf_sha256(&web_crt),
            "Envoy served a leaf pillion never published: {sha}\n{}",
            ctx()
        );
        let _ = t;
    }
    let end = tls.last().unwrap().0;
    for (published, sha) in on_disk.iter().skip(1).filter(|(t, _)| *t < end - 1.5) {
        let served = tls.iter().find(|(_, s)| s == sha).map(|(t, _)| *t);
        let served = served.unwrap_or_else(|| {
            panic!(
                "the leaf published at {published:.3} was never served\n{}",
                ctx()
            )
        });
        lags.push(served - published);
    }
    lags.sort_by(f64::total_cmp);
    eprintln!(
        "SDS rotation -> Envoy serving the new leaf, over {} rotations: median {:.0} ms, max {:.0} ms",
        lags.len(),
        lags[lags.len() / 2] * 1000.0,
        lags[lags.len() - 1] * 1000.0
    );
    assert!(lags[lags.len() - 1] < 1.5, "lags {lags:?}\n{}", ctx());

    // Envoy restarted gets the current certificate at once.
    envoy.restart();
    let served = wait_served(&envoy, &client, &ca.cert, DEADLINE)
        .unwrap_or_else(|e| panic!("Envoy restarted never served: {e}\n{}", ctx()));
    let current = leaf_sha256(&web_crt).unwrap();
    assert!(
        served == current || on_disk.iter().any(|(_, d)| *d == served),
        "{}",
        ctx()
    );

    // pillion restarted: Envoy's SDS stream comes back and the next rotation reaches it.
    assert!(daemon.stop().success());
    let before = leaf_sha256(&web_crt).unwrap();
    let daemon = fx.run();
    let ctx = || {
        format!(
            "{}\n{}\n{}",
            fx.describe(),
            daemon.describe(),
            envoy.describe()
        )
    };
    wait_for_ctx(
        "a rotation after pillion's restart, served by Envoy",
        DEADLINE,
        ctx,
        || {
            let on_disk = leaf_sha256(&web_crt);
            on_disk.as_ref() != Some(&before)
                && handshake_once(envoy.tls_port, envoy.plain_port, &client, &ca.cert).ok()
                    == on_disk
        },
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_name_envoy_asks_for_before_it_exists_is_logged_and_served_once_a_sighup_adds_it() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let fx = Fixture::new();
    let socket = fx.path().join("sds.sock");
    let only_web = config(&ca, &socket).replace("    duration: 6s\n", "    duration: 1h\n");
    fx.write_config(&only_web);
    let daemon = fx.run();
    let client = fx.out.join("client");
    wait_for_ctx(
        "the SDS socket",
        DEADLINE,
        || daemon.describe(),
        || socket.exists(),
    );
    let envoy = Envoy::start(&socket);
    let ctx = || {
        format!(
            "{}\n{}\n{}",
            fx.describe(),
            daemon.describe(),
            envoy.describe()
        )
    };
    daemon.wait_for("the unknown name in the log", DEADLINE, || {
        daemon
            .logs()
            .contains("Envoy asked for an SDS resource pillion does not have (yet)")
            && daemon.logs().contains("resource=later")
    });
    // The stream stays up: the listeners with known names are served.
    wait_served(&envoy, &client, &ca.cert, DEADLINE)
        .unwrap_or_else(|e| panic!("Envoy never served web: {e}\n{}", ctx()));
    assert!(
        handshake_once(envoy.later_port, envoy.plain_port, &client, &ca.cert).is_err(),
        "nothing to serve on the later listener yet\n{}",
        ctx()
    );

    // A SIGHUP adds the certificate `later`: Envoy gets it on the stream it has open.
    fx.write_config(&format!(
        "{only_web}  - name: later\n    dnsNames: [localhost]\n    duration: 1h\n"
    ));
    daemon.signal(rustix::process::Signal::HUP);
    let later_crt = fx.out.join("later/tls.crt");
    wait_for_ctx(
        "Envoy to serve the certificate added by SIGHUP",
        DEADLINE,
        ctx,
        || {
            let served = handshake_once(envoy.later_port, envoy.plain_port, &client, &ca.cert).ok();
            served.is_some() && served == leaf_sha256(&later_crt)
        },
    );
    assert!(
        daemon
            .logs()
            .contains("the SDS resource Envoy asked for is there now"),
        "{}",
        ctx()
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_socket_that_cannot_be_made_or_a_listen_address_off_loopback_is_exit_2() {
    let fx = Fixture::new();
    let file = write(fx.path(), "a-file", "x");
    for (sds, expected) in [
        (
            format!("{{socket: \"{}/sds.sock\"}}", file.display()),
            format!(
                "sds.socket: cannot create the socket {}/sds.sock",
                file.display()
            ),
        ),
        (
            format!("{{socket: \"{}\"}}", file.display()),
            format!("sds.socket: {} exists and is not a socket", file.display()),
        ),
        (
            "{listen: \"0.0.0.0:15012\"}".to_owned(),
            "sds.listen: \"0.0.0.0:15012\" is not a loopback address".to_owned(),
        ),
    ] {
        fx.write_config(&format!(
            "sds: {sds}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\n"
        ));
        for command in ["check", "run"] {
            let ran = run_bounded(&mut fx.pillion(&[command]), COMMAND_DEADLINE);
            assert_eq!(ran.code(), Some(2), "{}", ran.describe());
            assert!(
                ran.stderr.contains(&expected),
                "{expected}\n{}",
                ran.describe()
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "x",
        "the file is left alone"
    );
}

#[test]
fn envoy_takes_its_certificates_over_sds_on_the_loopback_tcp_port_too() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let fx = Fixture::new();
    let socket = fx.path().join("sds.sock");
    let port = free_port();
    fx.write_config(
        &config(&ca, &socket)
            .replace("    duration: 6s\n", "    duration: 1h\n")
            .replace(
                &format!("  socket: \"{}\"\n", socket.display()),
                &format!(
                    "  socket: \"{}\"\n  listen: 127.0.0.1:{port}\n",
                    socket.display()
                ),
            ),
    );
    let daemon = fx.run();
    let web_crt = fx.out.join("web/tls.crt");
    wait_for_ctx(
        "the first files",
        DEADLINE,
        || daemon.describe(),
        || web_crt.exists(),
    );
    let envoy = Envoy::start_tcp(port);
    let ctx = || {
        format!(
            "{}\n{}\n{}",
            fx.describe(),
            daemon.describe(),
            envoy.describe()
        )
    };
    let served = wait_served(&envoy, &fx.out.join("client"), &ca.cert, DEADLINE)
        .unwrap_or_else(|e| panic!("Envoy never served over TCP SDS: {e}\n{}", ctx()));
    assert_eq!(Some(served), leaf_sha256(&web_crt), "{}", ctx());
    assert!(daemon.stop().success());
}
