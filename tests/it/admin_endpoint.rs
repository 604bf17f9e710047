//! The admin endpoint: /healthz, /readyz (the native sidecar's startup probe)
//! and POST /rotate, spoken to over real HTTP/1.1 on loopback.

use crate::common;

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
    // Publishing fails at first: a regular file (not pillion's symlink)
    // holds one of the names. Once it is moved away, the next retry works.
    let blocker = out.join("web/tls.crt");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, "someone else's file").unwrap();
    let good = openssl_ca(KeyKind::EcP256Pkcs8);
    let port = free_port();
    let cfg = config(tmp.path(), &out, &good.cert, &good.key, port);
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
    // A request cannot cut the backoff of a failing credential short, and says so (polled: the
    // state the endpoint sees is updated at the end of each round).
    let mut refused = String::new();
    daemon.wait_for(
        "POST /rotate?name=web to answer 409",
        Duration::from_secs(20),
        || match http(port, "POST", "/rotate?name=web") {
            Ok((409, body)) => {
                refused = body;
                true
            }
            _ => false,
        },
    );
    assert!(refused.contains("backing off"), "{refused}");
    assert!(
        !out.join("web/..data").exists(),
        "nothing published yet:\n{}",
        listing(tmp.path())
    );

    std::fs::remove_file(&blocker).unwrap();
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

    // A file the app reads deleted by hand: not ready, and the answer says which.
    std::fs::remove_file(out.join("web/tls.key")).unwrap();
    let (status, body) = http(port, "GET", "/readyz").unwrap();
    assert_eq!(status, 503, "not ready while tls.key is missing: {body}");
    assert!(body.contains("tls.key is missing"), "{body}");
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

/// pillion with the test config, its admin endpoint on `port`, under an fd limit of 256 (as
/// `prlimit --nofile=256` in the reproduction).
fn limited_daemon(tmp: &Path, port: u16, ca: &OpensslCa) -> Daemon {
    let out = tmp.join("out");
    let cfg = config(tmp, &out, &ca.cert, &ca.key, port);
    let mut cmd = std::process::Command::new("prlimit");
    pillion_env(&mut cmd);
    cmd.arg("--nofile=256:256")
        .arg("--")
        .arg(pillion_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(tmp.join("state"))
        .arg("run");
    let daemon = Daemon::spawn(cmd);
    let cert = out.join("web/tls.crt");
    daemon.wait_for("the first certificate", Duration::from_secs(30), || {
        cert.exists() && matches!(http(port, "GET", "/readyz"), Ok((200, _)))
    });
    daemon
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Open connections that each sent only a request line, never finishing the headers.
fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"GET / HTTP/1.1\r\n").ok()?;
            Some(s)
        })
        .collect()
}

/// 300 half-sent requests under an fd limit of 256, then 1,000 more, once starved the process:
/// accept spun on EMFILE, the log grew by gigabytes, /healthz and renewals failed. Now the
/// oldest connections make room, /healthz answers, a renewal works, idle connections are
/// closed after the header timeout, and memory stays bounded.
#[test]
fn idle_connections_cannot_starve_the_endpoint_or_renewals() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let port = free_port();
    let daemon = limited_daemon(tmp.path(), port, &ca);
    let cert = tmp.path().join("out/web/tls.crt");
    let first = serial(&cert);
    let rss_before = rss_kib(daemon.pid());

    let mut held = idle_connections(port, 300);
    held.extend(idle_connections(port, 1000));
    let (status, _) = http(port, "GET", "/healthz").unwrap_or_else(|e| {
        panic!(
            "/healthz under 1,300 idle connections: {e}\n{}",
            daemon.describe()
        )
    });
    assert_eq!(status, 200);
    // A renewal needs files and a CA: it must not fail with EMFILE.
    assert_eq!(http(port, "POST", "/rotate").unwrap().0, 202);
    daemon.wait_for(
        "a renewal while idle connections are held",
        Duration::from_secs(30),
        || serial(&cert) != first,
    );
    let rss_during = rss_kib(daemon.pid());
    eprintln!("RSS: {rss_before} KiB before, {rss_during} KiB with 1,300 idle connections held");
    assert!(
        rss_during < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_during} KiB\n{}",
        daemon.describe()
    );

    // The server closes the ones it still holds once their header time is up.
    let last = held.last_mut().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 256];
    let n = last.read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "an unfinished request is closed (or answered 408), got {answer:?}"
    );
    drop(held);

    let logs = daemon.logs();
    let accept_errors = logs.matches("accepting an admin connection failed").count();
    assert!(
        accept_errors <= 10,
        "accept errors are logged at most once per interval, got {accept_errors}\n{}",
        daemon.describe()
    );
    assert!(
        !daemon.exited(),
        "pillion still runs\n{}",
        daemon.describe()
    );
    assert_eq!(daemon.stop().code(), Some(0));
}

/// Slowloris (headers one byte at a time) and oversized headers are cut off; /healthz answers
/// meanwhile.
#[test]
fn slow_and_oversized_requests_are_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let port = free_port();
    let daemon = limited_daemon(tmp.path(), port, &ca);

    // Oversized headers: refused, never buffered whole.
    let mut big = TcpStream::connect(("127.0.0.1", port)).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = big.write_all(header.as_bytes());
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "64 KiB of headers: refused with 431 or closed, got {:?}",
        answer.lines().next()
    );

    // Slowloris: one byte per 200 ms never completes the headers in time.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in b"GET /healthz HTTP/1.1\r\nX-Slow: "
        .iter()
        .chain([b'a'; 400].iter())
    {
        if slow.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        // Meanwhile others are served.
        if started.elapsed().as_millis() % 2000 < 200 {
            assert_eq!(http(port, "GET", "/healthz").unwrap().0, 200);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !closed {
        // Still writable: the server must have answered 408 or closed by now.
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        closed = match slow.read(&mut buf) {
            Ok(n) => n == 0 || buf.starts_with(b"HTTP/1.1 408"),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
    }
    assert!(
        closed,
        "a slowloris connection is closed\n{}",
        daemon.describe()
    );
    assert_eq!(http(port, "GET", "/healthz").unwrap().0, 200);
    assert_eq!(daemon.stop().code(), Some(0));
}

/// A burst of 1,000 `POST /rotate` once gave 111 extra renewal rounds. Now the endpoint takes a
/// few (429 beyond) and the agent folds what it takes into at most a couple of rounds.
#[test]
fn a_burst_of_rotate_requests_makes_few_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let port = free_port();
    let daemon = limited_daemon(tmp.path(), port, &ca);
    let rounds = || daemon.logs().matches("published a new certificate").count();
    assert_eq!(rounds(), 1);

    let started = std::time::Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    (0..125)
                        .map(|_| http(port, "POST", "/rotate").map_or(0, |(st, _)| st))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let burst_secs = started.elapsed().as_secs() as usize + 1;
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    // 5 at once, then one more per second of the burst.
    assert!(
        accepted <= 5 + burst_secs,
        "{accepted} accepted in a burst of {burst_secs} s\n{}",
        daemon.describe()
    );
    assert_eq!(
        accepted + limited,
        1000,
        "every request is answered 202 or 429: {statuses:?}"
    );
    daemon.wait_for(
        "the renewal the burst asked for",
        Duration::from_secs(30),
        || rounds() >= 2,
    );
    // Let any further round the burst could cause happen before counting.
    std::thread::sleep(Duration::from_secs(2));
    let extra = rounds() - 1;
    eprintln!("1,000 POST /rotate: {accepted} accepted, {limited} refused with 429, {extra} extra round(s)");
    // Coalesced: never more rounds than requests taken, and requests taken while a round
    // runs make one round after it.
    assert!(
        extra <= accepted.min(2 + burst_secs),
        "{extra} extra rounds for {accepted} accepted requests in {burst_secs} s\n{}",
        daemon.describe()
    );
    assert_eq!(daemon.stop().code(), Some(0));
}
