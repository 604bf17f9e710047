//! The admin endpoint: /healthz, /readyz (the native sidecar's startup probe)
//! and POST /rotate, spoken to over real HTTP/1.1 on loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::*;

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
fn http(port: u16, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn config(dir: &Path, out: &Path, ca_cert: &Path, ca_key: &Path, port: u16) -> std::path::PathBuf {
    write(
        dir,
        "pillion.yaml",
        &format!(
            "outputDir: {out}\nissuers:\n  ca:\n    localCa: {{certFile: {cert}, keyFile: {key}}}\n\
             certificates:\n  - name: web\n    dnsNames: [localhost]\n    duration: 1h\n\
             server:\n  listen: 127.0.0.1:{port}\n",
            out = out.display(),
            cert = ca_cert.display(),
            key = ca_key.display(),
        ),
    )
}

#[test]
fn readyz_turns_ready_exactly_when_the_first_full_set_is_published() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let state = tmp.path().join("state");
    // The CA starts out unusable (its certificate is not a CA, so every
    // issued certificate fails verification), then is replaced by a good one.
    let bad = openssl_non_ca(KeyKind::EcP256Pkcs8);
    let good = openssl_ca(KeyKind::EcP256Pkcs8);
    let ca_cert = tmp.path().join("ca.crt");
    let ca_key = tmp.path().join("ca.key");
    std::fs::copy(&bad.cert, &ca_cert).unwrap();
    std::fs::copy(&bad.key, &ca_key).unwrap();
    let port = free_port();
    let cfg = config(tmp.path(), &out, &ca_cert, &ca_key, port);
    let daemon = Daemon::run([
        "--config".as_ref(),
        cfg.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);

    daemon.wait_for(
        "a failed renewal in the log",
        Duration::from_secs(20),
        || daemon.logs().contains("renewal failed"),
    );
    let (status, body) =
        http(port, "GET", "/readyz").unwrap_or_else(|e| panic!("{e}\n{}", daemon.describe()));
    assert_eq!(status, 503, "not ready while nothing is published: {body}");
    assert!(
        body.contains("web"),
        "503 names the waiting credential: {body}"
    );
    assert_eq!(
        http(port, "GET", "/healthz").unwrap().0,
        200,
        "alive while failing"
    );
    assert!(
        !out.join("web/..data").exists(),
        "nothing published yet:\n{}",
        listing(tmp.path())
    );

    std::fs::copy(&good.cert, &ca_cert).unwrap();
    std::fs::copy(&good.key, &ca_key).unwrap();
    daemon.wait_for("/readyz to answer 200", Duration::from_secs(30), || {
        matches!(http(port, "GET", "/readyz"), Ok((200, _)))
    });
    // The moment it is ready, the full set is on disk and verifies.
    assert_atomic_layout(&out.join("web"), &["tls.crt", "tls.key", "ca.crt"]);
    openssl_verify(&good.cert, &out.join("web/tls.crt")).unwrap();
    assert!(key_matches(
        &out.join("web/tls.crt"),
        &out.join("web/tls.key")
    ));
    assert_eq!(daemon.stop().code(), Some(0));
}

#[test]
fn post_rotate_renews_now_and_unknown_names_and_methods_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let port = free_port();
    let cfg = config(tmp.path(), &out, &ca.cert, &ca.key, port);
    let state = tmp.path().join("state");
    let daemon = Daemon::run([
        "--config".as_ref(),
        cfg.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    let cert = out.join("web/tls.crt");
    daemon.wait_for("the first certificate", Duration::from_secs(20), || {
        cert.exists()
    });
    let first = serial(&cert);

    assert_eq!(http(port, "POST", "/rotate?name=nosuch").unwrap().0, 404);
    assert_eq!(http(port, "GET", "/rotate").unwrap().0, 405);
    assert_eq!(serial(&cert), first, "refused requests rotate nothing");

    let (status, body) = http(port, "POST", "/rotate?name=web").unwrap();
    assert_eq!(status, 202, "{body}");
    daemon.wait_for(
        "a new serial after POST /rotate?name=web",
        Duration::from_secs(20),
        || serial(&cert) != first,
    );
    let second = serial(&cert);
    assert_eq!(http(port, "POST", "/rotate").unwrap().0, 202);
    daemon.wait_for(
        "a new serial after POST /rotate",
        Duration::from_secs(20),
        || serial(&cert) != second,
    );
    openssl_verify(&ca.cert, &cert).unwrap();
    assert_eq!(daemon.stop().code(), Some(0));
}
