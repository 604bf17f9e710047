//! The consistency test: while `pillion run` is forced through 1,000 rotations, two independent
//! readers keep loading the credential the way apps do, and neither may ever see a private key
//! that does not belong to its certificate, nor fail to read the files at all.
//!
//! - a Rust reader opens the combined bundle file once and reads it once per iteration, then
//!   checks the key in it against the first certificate in it;
//! - a Python reader resolves `..data` once per iteration and has OpenSSL itself
//!   (`SSLContext.load_cert_chain`) load `tls.crt` + `tls.key` from that generation — OpenSSL
//!   refuses a key that does not match the certificate.

use crate::common;

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{listing, openssl_ca, pillion, Daemon, KeyKind};
use rcgen::PublicKeyData;
use rustix::process::Signal;

/// Forced rotations to drive.
const ROTATIONS: usize = 1000;
/// Each reader must have done at least this many iterations for the result to mean anything.
const MIN_READER_ITERATIONS: u64 = 1000;
/// Bounded waits (generous: the machines are shared and noisy; timing is never asserted).
const FIRST_PUBLISH_DEADLINE: Duration = Duration::from_secs(60);
const ROTATION_DEADLINE: Duration = Duration::from_secs(30);
const READER_START_DEADLINE: Duration = Duration::from_secs(30);
const READER_STOP_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_micros(500);

/// The Python reader: one `readlink` of `..data` per iteration, then OpenSSL loads the pair from
/// that one generation. Every exception (ENOENT, key mismatch, truncated PEM) is an error.
const PY_READER: &str = r#"
import json, os, ssl, sys
out, stop, ready = sys.argv[1], sys.argv[2], sys.argv[3]
iterations = 0
errors = 0
mismatches = 0
samples = []
while not os.path.exists(stop):
    iterations += 1
    try:
        d = os.path.join(out, os.readlink(os.path.join(out, '..data')))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(d, 'tls.crt'), os.path.join(d, 'tls.key'))
    except Exception as e:
        errors += 1
        if 'KEY_VALUES_MISMATCH' in repr(e):
            mismatches += 1
        if len(samples) < 10:
            samples.append(repr(e))
    if iterations == 1:
        open(ready, 'w').close()
print(json.dumps({"iterations": iterations, "errors": errors, "mismatches": mismatches, "samples": samples}))
"#;

#[test]
fn readers_never_see_a_key_that_does_not_match_its_certificate_across_1000_rotations() {
    // tmpfs keeps the disk out of the measurement when there is one.
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("pillion-consistency");
        b
    };
    let tmp = if Path::new("/dev/shm").is_dir() {
        builder.tempdir_in("/dev/shm").unwrap()
    } else {
        builder.tempdir().unwrap()
    };
    let root = tmp.path().to_path_buf();
    let out = root.join("out");
    let cred = out.join("web");
    let bundle = cred.join("tls-bundle.pem");
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);

    let config = root.join("pillion.yaml");
    let config_text = format!(
        "outputDir: {out}
issuers:
  ca:
    localCa: {{certFile: {crt}, keyFile: {key}}}
certificates:
  - name: web
    commonName: localhost
    dnsNames: [localhost]
    ipAddresses: [\"127.0.0.1\"]
    duration: 1h
    files:
      certificate: tls.crt
      privateKey: tls.key
      ca: ca.crt
      bundle: tls-bundle.pem
",
        out = out.display(),
        crt = ca.cert.display(),
        key = ca.key.display(),
    );
    fs::write(&config, &config_text).unwrap();

    let mut cmd = pillion();
    // info, not debug: 1,000 rounds of debug logs would only slow pillion down.
    cmd.env("PILLION_LOG_LEVEL", "info")
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(root.join("state"));
    let daemon = Daemon::spawn(cmd);

    let diag = |what: &str, logs: &str| {
        format!(
            "{what}\n--- config ---\n{config_text}\n--- pillion log (last 150 lines) ---\n{}\n{}",
            tail(logs, 150),
            listing(&out),
        )
    };

    // First publish.
    let deadline = Instant::now() + FIRST_PUBLISH_DEADLINE;
    while !(bundle.exists() && cred.join("tls.key").exists()) {
        assert!(
            !daemon.exited(),
            "{}",
            diag("pillion run exited early", &daemon.logs())
        );
        assert!(
            Instant::now() < deadline,
            "{}",
            diag("no first publish within the deadline", &daemon.logs())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let first_target = fs::read_link(cred.join("..data")).expect("..data is a symlink");
    let first_serial = serial_of(&cred.join(&first_target).join("tls.crt")).unwrap();
    let first_key = fs::read(cred.join(&first_target).join("tls.key")).unwrap();

    let readers = Readers::start(&cred, &root);

    // Rotations: one SIGUSR1, then wait until `..data` points somewhere new.
    let mut targets = HashSet::from([first_target.clone()]);
    let mut serials = HashSet::from([first_serial.clone()]);
    let mut current = first_target.clone();
    let mut failure: Option<String> = None;
    let started = Instant::now();
    let mut done = 0;
    'rotations: for i in 0..ROTATIONS {
        daemon.signal(Signal::USR1);
        let deadline = Instant::now() + ROTATION_DEADLINE;
        let next = loop {
            match fs::read_link(cred.join("..data")) {
                Ok(target) if target != current => break target,
                Ok(_) => {}
                Err(e) => {
                    failure = Some(format!("rotation {i}: readlink ..data failed: {e}"));
                    break 'rotations;
                }
            }
            if Instant::now() > deadline {
                failure = Some(format!(
                    "rotation {i}: ..data still -> {} {ROTATION_DEADLINE:?} after SIGUSR1",
                    current.display()
                ));
                break 'rotations;
            }
            std::thread::sleep(POLL);
        };
        if !targets.insert(next.clone()) {
            failure = Some(format!(
                "rotation {i}: generation {} reused",
                next.display()
            ));
            break;
        }
        // The generation just published stays readable for the grace period.
        let serial = match serial_of(&cred.join(&next).join("tls.crt")) {
            Ok(serial) => serial,
            Err(e) => {
                failure = Some(format!("rotation {i}: {e}"));
                break;
            }
        };
        if !serials.insert(serial.clone()) {
            failure = Some(format!("rotation {i}: serial {serial:02x?} seen before"));
            break;
        }
        current = next;
        done = i + 1;
    }
    let elapsed = started.elapsed();
    let rate = done as f64 / elapsed.as_secs_f64();
    let last_key = fs::read(cred.join(&current).join("tls.key")).unwrap_or_default();

    // Stop the readers, then pillion.
    let seen = readers.finish();
    daemon.signal(Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.exited() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let logs = daemon.logs();
    let pillion_status = daemon.wait_exit(Duration::from_secs(5));
    let diag = |what: &str| diag(what, &logs);
    let counts = format!(
        "rotations: {done}/{ROTATIONS} in {elapsed:.1?} ({rate:.1} rotations/s)\n{}\n\
         pillion exit after SIGTERM: {pillion_status}",
        seen.describe(),
    );
    eprintln!("{counts}");

    if let Some(failure) = failure {
        panic!("{}", diag(&format!("{failure}\n{counts}")));
    }
    assert_eq!(done, ROTATIONS, "{}", diag(&counts));
    assert_eq!(serials.len(), ROTATIONS + 1, "{}", diag(&counts));
    assert_ne!(
        serial_of(&cred.join(&current).join("tls.crt")).ok(),
        Some(first_serial),
        "{}",
        diag(&counts)
    );
    assert_ne!(
        last_key,
        first_key,
        "a fresh key each rotation\n{}",
        diag(&counts)
    );
    assert_eq!(
        seen.rust.mismatches,
        0,
        "rust reader saw mismatches\n{}",
        diag(&counts)
    );
    assert_eq!(
        seen.rust.read_errors,
        0,
        "rust reader had read errors\n{}",
        diag(&counts)
    );
    assert!(
        seen.rust.iterations > MIN_READER_ITERATIONS,
        "rust reader did too few iterations\n{}",
        diag(&counts)
    );
    assert!(
        seen.py_status.is_some_and(|s| s.success()),
        "python reader did not finish cleanly\n{}",
        diag(&counts)
    );
    assert_eq!(
        seen.py_errors,
        Some(0),
        "python reader had errors\n{}",
        diag(&counts)
    );
    assert!(
        seen.py_iterations
            .is_some_and(|n| n > MIN_READER_ITERATIONS),
        "python reader did too few iterations\n{}",
        diag(&counts)
    );
    assert!(
        pillion_status.success(),
        "pillion run should exit 0 on SIGTERM\n{}",
        diag(&counts)
    );
}

/// The control: the same two readers, pointed at a naive publisher that rewrites the key and the
/// certificate in place one after the other, must count mismatches — otherwise the test above
/// could not fail.
#[test]
fn readers_detect_a_publisher_that_rewrites_key_and_certificate_in_place() {
    let tmp = tempfile::Builder::new()
        .prefix("pillion-consistency-control")
        .tempdir_in(if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .unwrap();
    let root = tmp.path();
    let cred = root.join("out");
    let generation = cred.join("..gen");
    fs::create_dir_all(&generation).unwrap();
    std::os::unix::fs::symlink("..gen", cred.join("..data")).unwrap();
    // Two key/certificate pairs of the same kind, so the files keep (nearly) the same length and
    // an in-place rewrite leaves the new key beside the old certificate.
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..2)
        .map(|_| {
            let ca = openssl_ca(KeyKind::EcP256Pkcs8);
            (fs::read(&ca.key).unwrap(), fs::read(&ca.cert).unwrap())
        })
        .collect();
    let write_in_place = |path: &Path, data: &[u8], offset: u64| {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            // Deliberately not truncating: the rewrite happens in place.
            .truncate(false)
            .open(path)
            .unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(data).unwrap();
    };
    let publish = |(key, cert): &(Vec<u8>, Vec<u8>), pause: Duration| {
        // Key first, certificate a moment later: the window a careless writer leaves open.
        write_in_place(&cred.join("tls-bundle.pem"), key, 0);
        fs::write(generation.join("tls.key"), key).unwrap();
        std::thread::sleep(pause);
        write_in_place(&cred.join("tls-bundle.pem"), cert, key.len() as u64);
        fs::write(generation.join("tls.crt"), cert).unwrap();
        std::thread::sleep(pause);
    };
    publish(&pairs[0], Duration::ZERO);

    let readers = Readers::start(&cred, root);
    for i in 0..400 {
        publish(&pairs[(i + 1) % 2], Duration::from_millis(2));
    }
    let seen = readers.finish();
    eprintln!("{}", seen.describe());
    assert!(
        seen.rust.mismatches > 0,
        "the rust reader must notice a key beside the wrong certificate\n{}",
        seen.describe()
    );
    assert!(
        seen.py_errors.is_some_and(|n| n > 0),
        "the python reader must notice a key beside the wrong certificate\n{}",
        seen.describe()
    );
    assert!(
        seen.py_mismatches.is_some_and(|n| n > 0),
        "OpenSSL should have refused the pair as mismatched at least once\n{}",
        seen.describe()
    );
}

/// The two readers of one credential directory, running until [`Readers::finish`].
struct Readers {
    stop: Arc<AtomicBool>,
    rust: Option<std::thread::JoinHandle<ReaderCounts>>,
    python: KillOnDrop,
    stop_file: PathBuf,
    py_out: PathBuf,
    py_err: PathBuf,
}

/// What the readers counted.
struct ReadersSeen {
    rust: ReaderCounts,
    py_status: Option<ExitStatus>,
    py_iterations: Option<u64>,
    py_errors: Option<u64>,
    /// Errors that were OpenSSL refusing a key that does not match the certificate.
    py_mismatches: Option<u64>,
    /// The reader's JSON line (with up to 10 error samples).
    py_samples: String,
    py_stderr: String,
}

impl Readers {
    /// Starts both readers on `cred` (its bundle and its `..data`), their files in `work`, and
    /// waits until each has done its first iteration.
    fn start(cred: &Path, work: &Path) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let rust = {
            let bundle = cred.join("tls-bundle.pem");
            let (stop, progress) = (stop.clone(), progress.clone());
            std::thread::spawn(move || bundle_reader(&bundle, &stop, &progress))
        };
        let stop_file = work.join("py-reader.stop");
        let ready_file = work.join("py-reader.ready");
        let py_out = work.join("py-reader.out");
        let py_err = work.join("py-reader.err");
        let python = KillOnDrop(
            Command::new("python3")
                .arg("-c")
                .arg(PY_READER)
                .arg(cred)
                .arg(&stop_file)
                .arg(&ready_file)
                .stdin(Stdio::null())
                .stdout(fs::File::create(&py_out).unwrap())
                .stderr(fs::File::create(&py_err).unwrap())
                .spawn()
                .expect("python3 must be installed (apt-get install -y python3)"),
        );
        let readers = Readers {
            stop,
            rust: Some(rust),
            python,
            stop_file,
            py_out,
            py_err,
        };
        let deadline = Instant::now() + READER_START_DEADLINE;
        while !(ready_file.exists() && progress.load(Ordering::Relaxed) > 0) {
            assert!(
                Instant::now() < deadline,
                "readers did not start: python stderr: {}",
                fs::read_to_string(&readers.py_err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        readers
    }

    /// Stops both readers and collects their counts.
    fn finish(mut self) -> ReadersSeen {
        fs::write(&self.stop_file, "").unwrap();
        self.stop.store(true, Ordering::Relaxed);
        let rust = self
            .rust
            .take()
            .expect("finish runs once")
            .join()
            .expect("rust reader thread panicked");
        let deadline = Instant::now() + READER_STOP_DEADLINE;
        let py_status = loop {
            if let Some(status) = self.python.0.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let py_text = fs::read_to_string(&self.py_out).unwrap_or_default();
        ReadersSeen {
            rust,
            py_status,
            py_iterations: json_number(&py_text, "iterations"),
            py_errors: json_number(&py_text, "errors"),
            py_mismatches: json_number(&py_text, "mismatches"),
            py_samples: py_text,
            py_stderr: fs::read_to_string(&self.py_err).unwrap_or_default(),
        }
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        // A failed test must not leave the thread spinning; the python reader is killed by its
        // own guard.
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl ReadersSeen {
    fn describe(&self) -> String {
        format!(
            "rust reader: {} iterations, {} read errors, {} mismatches, samples: {:#?}\n\
             python reader: exit {:?}, output: {}python stderr: {}",
            self.rust.iterations,
            self.rust.read_errors,
            self.rust.mismatches,
            self.rust.samples,
            self.py_status,
            self.py_samples,
            self.py_stderr,
        )
    }
}

#[derive(Debug, Default)]
struct ReaderCounts {
    iterations: u64,
    read_errors: u64,
    mismatches: u64,
    samples: Vec<String>,
}

/// One open and one `read_to_end` of the visible bundle per iteration; the key in it must be
/// the key of the first certificate in it.
fn bundle_reader(bundle: &Path, stop: &AtomicBool, progress: &AtomicU64) -> ReaderCounts {
    let mut counts = ReaderCounts::default();
    let mut buf = Vec::with_capacity(8192);
    while !stop.load(Ordering::Relaxed) {
        counts.iterations += 1;
        progress.store(counts.iterations, Ordering::Relaxed);
        buf.clear();
        let outcome = fs::File::open(bundle)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(|e| format!("read: {e}"))
            .and_then(|_| key_matches_leaf(&buf));
        match outcome {
            Ok(true) => {}
            Ok(false) => {
                counts.mismatches += 1;
                if counts.samples.len() < 10 {
                    // Not the bundle itself: it holds a private key.
                    counts.samples.push(format!(
                        "mismatch at iteration {} (bundle of {} bytes)",
                        counts.iterations,
                        buf.len()
                    ));
                }
            }
            Err(e) => {
                counts.read_errors += 1;
                if counts.samples.len() < 10 {
                    counts
                        .samples
                        .push(format!("error at iteration {}: {e}", counts.iterations));
                }
            }
        }
    }
    counts
}

/// `Ok(true)` when the PKCS#8 key's public half equals the leaf's SubjectPublicKeyInfo.
fn key_matches_leaf(bundle: &[u8]) -> Result<bool, String> {
    let blocks = pem::parse_many(bundle).map_err(|e| format!("PEM: {e}"))?;
    let key = blocks
        .iter()
        .find(|b| b.tag() == "PRIVATE KEY")
        .ok_or_else(|| format!("no PRIVATE KEY block among {} blocks", blocks.len()))?;
    let leaf = blocks
        .iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .ok_or_else(|| format!("no CERTIFICATE block among {} blocks", blocks.len()))?;
    let key = rcgen::KeyPair::from_pem(&pem::encode(key)).map_err(|e| format!("key: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.contents())
        .map_err(|e| format!("certificate: {e}"))?;
    Ok(key.subject_public_key_info() == cert.public_key().raw)
}

/// Serial number of the first certificate in a PEM file.
fn serial_of(path: &Path) -> Result<Vec<u8>, String> {
    let text = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let blocks = pem::parse_many(&text).map_err(|e| format!("PEM in {}: {e}", path.display()))?;
    let block = blocks
        .iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .ok_or_else(|| format!("no certificate in {}", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(block.contents())
        .map_err(|e| format!("certificate in {}: {e}", path.display()))?;
    Ok(cert.tbs_certificate.raw_serial().to_vec())
}

/// `"key": <number>` from the reader's one-line JSON.
fn json_number(json: &str, key: &str) -> Option<u64> {
    let rest = &json[json.find(&format!("\"{key}\":"))? + key.len() + 3..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Kills a child process left running by a failed test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
