//! `pillion init` (and `check`, `status`) with a local CA made by the openssl CLI: whatever
//! pillion publishes must satisfy openssl, not just pillion.

use crate::common;

use std::fs;
use std::path::Path;

use common::*;

/// Everything the checks below need about one flag-mode `init`.
struct Published {
    out: tempfile::TempDir,
    state: tempfile::TempDir,
    ran: Ran,
}

impl Published {
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.out.path().join(name)
    }

    fn context(&self) -> String {
        format!(
            "{}\n{}\nstate dir {}",
            self.ran.describe(),
            listing(self.out.path()),
            listing(self.state.path())
        )
    }
}

/// `pillion init` in flag mode with the given CA and extra flags; files land directly in --out.
fn init_flags(ca: Option<&OpensslCa>, extra: &[&str]) -> Published {
    let out = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut cmd = pillion();
    cmd.arg("init")
        .arg("--out")
        .arg(out.path())
        .arg("--state-dir")
        .arg(state.path())
        .args(["--dns-name", "localhost"]);
    if let Some(ca) = ca {
        cmd.arg("--ca-cert")
            .arg(&ca.cert)
            .arg("--ca-key")
            .arg(&ca.key);
    }
    cmd.args(extra);
    let ran = run_bounded(&mut cmd, COMMAND_DEADLINE);
    Published { out, state, ran }
}

/// The checks every published credential must pass: exit 0, AtomicWriter layout, openssl verifies
/// the chain against the published ca.crt, the key is the certificate's, modes 0600/0644, and the
/// requested name is in the certificate.
fn assert_published(p: &Published, ca: Option<&OpensslCa>) {
    assert_eq!(p.ran.code(), Some(0), "init should exit 0\n{}", p.context());
    assert_atomic_layout(p.out.path(), &["tls.crt", "tls.key", "ca.crt"]);
    let (crt, key, ca_crt) = (p.path("tls.crt"), p.path("tls.key"), p.path("ca.crt"));
    if let Err(e) = openssl_verify(&ca_crt, &crt) {
        panic!(
            "openssl does not verify tls.crt against the published ca.crt:\n{e}\n{}",
            p.context()
        );
    }
    if let Some(ca) = ca {
        if let Err(e) = openssl_verify(&ca.cert, &crt) {
            panic!(
                "openssl does not verify tls.crt against the CA it was given:\n{e}\n{}",
                p.context()
            );
        }
        assert_eq!(
            serial(&ca_crt),
            serial(&ca.cert),
            "ca.crt should be the configured CA\n{}",
            p.context()
        );
    }
    if let Err(e) = key_pair_check(&crt, &key) {
        panic!(
            "tls.key is not (readably) the key of tls.crt: {e}\n{}",
            p.context()
        );
    }
    assert_eq!(mode_of(&key), 0o600, "tls.key mode\n{}", p.context());
    assert_eq!(mode_of(&crt), 0o644, "tls.crt mode\n{}", p.context());
    assert_eq!(mode_of(&ca_crt), 0o644, "ca.crt mode\n{}", p.context());
    for f in [&crt, &key, &ca_crt] {
        assert!(
            !fs::read_to_string(f).unwrap().contains('\r'),
            "{} should end its lines in LF, as openssl does\n{}",
            f.display(),
            p.context()
        );
    }
    let key_pem = fs::read_to_string(&key).unwrap();
    assert!(
        key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "tls.key should be PKCS#8 PEM, starts with {:?}",
        key_pem.lines().next()
    );
    let san = san_text(&crt);
    assert!(
        san.contains("DNS:localhost"),
        "tls.crt SAN should name localhost:\n{san}\n{}",
        p.context()
    );
}

fn init_with_ca_kind(kind: KeyKind) {
    let ca = openssl_ca(kind);
    let p = init_flags(Some(&ca), &[]);
    assert_published(&p, Some(&ca));
}

#[test]
fn init_with_an_ec_pkcs8_ca_key_publishes_a_certificate_openssl_verifies() {
    init_with_ca_kind(KeyKind::EcP256Pkcs8);
}

#[test]
fn init_with_an_ec_sec1_ca_key_publishes_a_certificate_openssl_verifies() {
    init_with_ca_kind(KeyKind::EcP256Sec1);
}

#[test]
fn init_with_an_rsa_pkcs8_ca_key_publishes_a_certificate_openssl_verifies() {
    init_with_ca_kind(KeyKind::Rsa2048);
}

#[test]
fn init_with_an_rsa_pkcs1_ca_key_publishes_a_certificate_openssl_verifies() {
    init_with_ca_kind(KeyKind::Rsa2048Pkcs1);
}

#[test]
fn init_with_an_ed25519_ca_key_publishes_a_certificate_openssl_verifies() {
    init_with_ca_kind(KeyKind::Ed25519);
}

fn init_with_key_algorithm(algorithm: &str, expect_in_key_text: &str) {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let p = init_flags(Some(&ca), &["--key-algorithm", algorithm]);
    assert_published(&p, Some(&ca));
    let text = key_text(&p.path("tls.key"));
    assert!(
        text.contains(expect_in_key_text),
        "--key-algorithm {algorithm}: `openssl pkey -text` should say {expect_in_key_text:?}, says:\n{}\n{}",
        text.lines().take(3).collect::<Vec<_>>().join("\n"),
        p.context()
    );
}

#[test]
fn init_issues_an_ecdsa_p384_key_when_asked() {
    init_with_key_algorithm("ECDSA-P384", "NIST CURVE: P-384");
}

#[test]
fn init_issues_an_ed25519_key_when_asked() {
    init_with_key_algorithm("Ed25519", "ED25519 Private-Key");
}

#[test]
fn init_issues_an_rsa_2048_key_when_asked() {
    init_with_key_algorithm("RSA-2048", "Private-Key: (2048 bit");
}

#[test]
fn init_issues_an_ecdsa_p256_key_by_default() {
    let ca = openssl_ca(KeyKind::Ed25519);
    let p = init_flags(Some(&ca), &[]);
    assert_published(&p, Some(&ca));
    let text = key_text(&p.path("tls.key"));
    assert!(
        text.contains("NIST CURVE: P-256"),
        "default key should be ECDSA P-256:\n{text}"
    );
}

/// A config file with a local CA and the given certificates (YAML list items, already indented).
fn config_with_ca(
    dir: &Path,
    out: &Path,
    state: &Path,
    ca: &OpensslCa,
    certificates: &str,
) -> std::path::PathBuf {
    write(
        dir,
        "pillion.yaml",
        &format!(
            "outputDir: \"{out}\"\nstateDir: \"{state}\"\nissuers:\n  ca:\n    localCa:\n      certFile: \"{cert}\"\n      keyFile: \"{key}\"\ncertificates:\n{certificates}",
            out = out.display(),
            state = state.display(),
            cert = ca.cert.display(),
            key = ca.key.display(),
        ),
    )
}

#[test]
fn init_with_a_config_file_publishes_each_certificate_in_its_own_directory() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let state = dir.path().join("state");
    let config = config_with_ca(
        dir.path(),
        &out,
        &state,
        &ca,
        "  - name: web\n    dnsNames: [web.pillion.test]\n  - name: api\n    commonName: api.pillion.test\n    dnsNames: [api.pillion.test]\n    ipAddresses: [\"127.0.0.1\"]\n",
    );
    let ran = run_bounded(
        pillion().arg("--config").arg(&config).arg("init"),
        COMMAND_DEADLINE,
    );
    let ctx = || {
        format!(
            "{}\nconfig:\n{}\n{}",
            ran.describe(),
            fs::read_to_string(&config).unwrap(),
            listing(&out)
        )
    };
    assert_eq!(ran.code(), Some(0), "init should exit 0\n{}", ctx());
    let mut serials = Vec::new();
    for (name, dns) in [
        ("web", "DNS:web.pillion.test"),
        ("api", "DNS:api.pillion.test"),
    ] {
        let d = out.join(name);
        assert_atomic_layout(&d, &["tls.crt", "tls.key", "ca.crt"]);
        let crt = d.join("tls.crt");
        if let Err(e) = openssl_verify(&ca.cert, &crt) {
            panic!(
                "{name}/tls.crt does not verify against the CA: {e}\n{}",
                ctx()
            );
        }
        assert!(
            key_matches(&crt, &d.join("tls.key")),
            "{name}: key does not match\n{}",
            ctx()
        );
        assert_eq!(mode_of(&d.join("tls.key")), 0o600, "{name}/tls.key mode");
        assert_eq!(mode_of(&crt), 0o644, "{name}/tls.crt mode");
        let san = san_text(&crt);
        assert!(
            san.contains(dns),
            "{name}: SAN should contain {dns}:\n{san}"
        );
        serials.push(serial(&crt));
    }
    let api_san = san_text(&out.join("api/tls.crt"));
    assert!(
        api_san.contains("IP Address:127.0.0.1"),
        "api SAN should have the IP:\n{api_san}"
    );
    assert!(
        subject_text(&out.join("api/tls.crt")).contains("api.pillion.test"),
        "api subject should carry the common name"
    );
    assert_ne!(serials[0], serials[1], "two certificates, two serials");
    assert!(
        !out.join("tls.crt").exists(),
        "config mode writes into per-certificate dirs only\n{}",
        ctx()
    );
}

#[test]
fn second_init_reuses_the_valid_certificate() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = config_with_ca(
        dir.path(),
        &out,
        &dir.path().join("state"),
        &ca,
        "  - name: web\n    dnsNames: [web.pillion.test]\n    duration: 1h\n",
    );
    let first = run_bounded(
        pillion().arg("--config").arg(&config).arg("init"),
        COMMAND_DEADLINE,
    );
    first.assert_success();
    let crt = out.join("web/tls.crt");
    let serial1 = serial(&crt);
    let key1 = fs::read(out.join("web/tls.key")).unwrap();

    let second = run_bounded(
        pillion().arg("--config").arg(&config).arg("init"),
        COMMAND_DEADLINE,
    );
    second.assert_success();
    assert_eq!(
        serial(&crt),
        serial1,
        "a second init with the same config should keep the valid certificate\n{}\n{}",
        second.describe(),
        listing(&out)
    );
    assert_eq!(
        fs::read(out.join("web/tls.key")).unwrap(),
        key1,
        "the key should be kept too"
    );
}

#[test]
fn init_issues_a_new_certificate_when_the_dns_names_change() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let state = dir.path().join("state");
    let config = config_with_ca(
        dir.path(),
        &out,
        &state,
        &ca,
        "  - name: web\n    dnsNames: [web.pillion.test]\n    duration: 1h\n",
    );
    run_bounded(
        pillion().arg("--config").arg(&config).arg("init"),
        COMMAND_DEADLINE,
    )
    .assert_success();
    let crt = out.join("web/tls.crt");
    let serial1 = serial(&crt);

    config_with_ca(
        dir.path(),
        &out,
        &state,
        &ca,
        "  - name: web\n    dnsNames: [web.pillion.test, www.pillion.test]\n    duration: 1h\n",
    );
    let second = run_bounded(
        pillion().arg("--config").arg(&config).arg("init"),
        COMMAND_DEADLINE,
    );
    second.assert_success();
    let ctx = || format!("{}\n{}", second.describe(), listing(&out));
    assert_ne!(
        serial(&crt),
        serial1,
        "changed dnsNames must produce a new certificate\n{}",
        ctx()
    );
    let san = san_text(&crt);
    assert!(
        san.contains("DNS:www.pillion.test") && san.contains("DNS:web.pillion.test"),
        "the new certificate should carry both names:\n{san}\n{}",
        ctx()
    );
    assert!(
        key_matches(&crt, &out.join("web/tls.key")),
        "key does not match\n{}",
        ctx()
    );
    openssl_verify(&ca.cert, &crt).unwrap_or_else(|e| panic!("{e}"));
}

/// True when some regular file under `dir` holds a private key whose public half is `ca_cert`'s.
fn contains_key_of(dir: &Path, ca_cert: &Path) -> Option<std::path::PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && fs::read_to_string(&path)
                    .map(|s| s.contains("PRIVATE KEY"))
                    .unwrap_or(false)
                && key_matches(ca_cert, &path)
            {
                return Some(path);
            }
        }
    }
    None
}

#[test]
fn init_without_a_ca_uses_a_development_ca_kept_in_the_state_dir() {
    let state = tempfile::tempdir().unwrap();
    let out1 = tempfile::tempdir().unwrap();
    let out2 = tempfile::tempdir().unwrap();
    let init = |out: &Path| {
        run_bounded(
            pillion()
                .arg("init")
                .arg("--out")
                .arg(out)
                .arg("--state-dir")
                .arg(state.path())
                .args(["--dns-name", "localhost"]),
            COMMAND_DEADLINE,
        )
    };
    let first = init(out1.path());
    let ctx = |ran: &Ran, out: &Path| {
        format!(
            "{}\n{}\nstate {}",
            ran.describe(),
            listing(out),
            listing(state.path())
        )
    };
    assert_eq!(
        first.code(),
        Some(0),
        "init should exit 0\n{}",
        ctx(&first, out1.path())
    );
    assert!(
        first.stderr.to_lowercase().contains("development"),
        "init with the development CA should warn about it on stderr\n{}",
        ctx(&first, out1.path())
    );
    assert_atomic_layout(out1.path(), &["tls.crt", "tls.key", "ca.crt"]);
    let ca1 = out1.path().join("ca.crt");
    let crt1 = out1.path().join("tls.crt");
    openssl_verify(&ca1, &crt1).unwrap_or_else(|e| panic!("{e}\n{}", ctx(&first, out1.path())));
    assert!(key_matches(&crt1, &out1.path().join("tls.key")));

    // The dev CA's key lives in the state dir, never in the output dir.
    assert!(
        contains_key_of(state.path(), &ca1).is_some(),
        "the development CA key should be under the state dir\n{}",
        ctx(&first, out1.path())
    );
    if let Some(leak) = contains_key_of(out1.path(), &ca1) {
        panic!(
            "the development CA key was published in the output dir at {}\n{}",
            leak.display(),
            ctx(&first, out1.path())
        );
    }

    // A second run with the same state dir signs with the same dev CA.
    let second = init(out2.path());
    assert_eq!(
        second.code(),
        Some(0),
        "second init should exit 0\n{}",
        ctx(&second, out2.path())
    );
    assert_eq!(
        fs::read(out2.path().join("ca.crt")).unwrap(),
        fs::read(&ca1).unwrap(),
        "the second run should reuse the development CA\n{}",
        ctx(&second, out2.path())
    );
    openssl_verify(&ca1, &out2.path().join("tls.crt")).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn status_prints_the_credential_name_and_common_name() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = config_with_ca(
        dir.path(),
        &out,
        &dir.path().join("state"),
        &ca,
        "  - name: frontend\n    commonName: frontend.pillion.test\n    dnsNames: [frontend.pillion.test]\n",
    );
    run_bounded(
        pillion().arg("--config").arg(&config).arg("init"),
        COMMAND_DEADLINE,
    )
    .assert_success();
    let status = run_bounded(
        pillion().arg("--config").arg(&config).arg("status"),
        COMMAND_DEADLINE,
    );
    assert_eq!(
        status.code(),
        Some(0),
        "status should exit 0\n{}",
        status.describe()
    );
    assert!(
        status.stdout.contains("frontend"),
        "status should name the credential\n{}",
        status.describe()
    );
    assert!(
        status.stdout.contains("frontend.pillion.test"),
        "status should show the certificate's CN\n{}",
        status.describe()
    );
}

#[test]
fn status_in_flag_mode_reads_the_output_dir() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let p = init_flags(Some(&ca), &["--common-name", "flagmode.pillion.test"]);
    assert_eq!(p.ran.code(), Some(0), "{}", p.context());
    let status = run_bounded(
        pillion().arg("status").arg("--out").arg(p.out.path()),
        COMMAND_DEADLINE,
    );
    assert_eq!(
        status.code(),
        Some(0),
        "status should exit 0\n{}",
        status.describe()
    );
    assert!(
        status.stdout.contains("tls"),
        "status should name the credential `tls`\n{}",
        status.describe()
    );
    assert!(
        status.stdout.contains("flagmode.pillion.test"),
        "status should show the CN\n{}",
        status.describe()
    );
}

#[test]
fn check_prints_the_plan_and_touches_nothing() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let state = dir.path().join("state");
    fs::create_dir(&out).unwrap();
    fs::create_dir(&state).unwrap();
    let config = config_with_ca(
        dir.path(),
        &out,
        &state,
        &ca,
        "  - name: planned-cert\n    dnsNames: [planned.pillion.test]\n",
    );
    let ran = run_bounded(
        pillion().arg("--config").arg(&config).arg("check"),
        COMMAND_DEADLINE,
    );
    let ctx = || format!("{}\n{}\n{}", ran.describe(), listing(&out), listing(&state));
    assert_eq!(ran.code(), Some(0), "check should exit 0\n{}", ctx());
    assert!(
        ran.stdout.contains("planned-cert"),
        "the plan on stdout should name the certificate\n{}",
        ctx()
    );
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        0,
        "check must not write to the output dir\n{}",
        ctx()
    );
    assert_eq!(
        fs::read_dir(&state).unwrap().count(),
        0,
        "check must not write to the state dir\n{}",
        ctx()
    );

    // Flag mode, output dir absent: it stays absent.
    let absent = dir.path().join("absent-out");
    let ran = run_bounded(
        pillion()
            .arg("check")
            .arg("--out")
            .arg(&absent)
            .arg("--state-dir")
            .arg(&state)
            .args(["--dns-name", "localhost"])
            .arg("--ca-cert")
            .arg(&ca.cert)
            .arg("--ca-key")
            .arg(&ca.key),
        COMMAND_DEADLINE,
    );
    assert_eq!(
        ran.code(),
        Some(0),
        "check (flag mode) should exit 0\n{}",
        ran.describe()
    );
    assert!(
        !absent.exists(),
        "check must not create the output dir\n{}\n{}",
        ran.describe(),
        listing(dir.path())
    );
}

#[test]
fn init_exits_2_and_writes_nothing_when_the_ca_certificate_is_not_a_ca() {
    let not_ca = openssl_non_ca(KeyKind::EcP256Pkcs8);
    let p = init_flags(Some(&not_ca), &["--timeout", "3s"]);
    assert_eq!(
        p.ran.code(),
        Some(2),
        "a CA certificate with CA:FALSE is a configuration error (exit 2), found when it is loaded\n{}",
        p.context()
    );
    assert!(
        p.ran.stderr.contains("CA:TRUE is missing")
            && p.ran.stderr.contains(&not_ca.cert.display().to_string()),
        "the error names the file and the reason\n{}",
        p.context()
    );
    let entries: Vec<_> = fs::read_dir(p.out.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(
        entries.is_empty(),
        "nothing may be published when the chain does not verify\n{}",
        p.context()
    );
}

/// `--out certs` (one relative component, no `./`) is the first thing a newcomer types: its
/// parent is the empty path, which once made every publish fail on `fsync("")`.
#[test]
fn init_publishes_into_a_relative_directory_of_one_component() {
    let cwd = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut cmd = pillion();
    cmd.current_dir(cwd.path())
        .args([
            "init",
            "--out",
            "certs",
            "--dns-name",
            "localhost",
            "--timeout",
            "20s",
        ])
        .arg("--state-dir")
        .arg(state.path());
    let ran = run_bounded(&mut cmd, COMMAND_DEADLINE);
    let out = cwd.path().join("certs");
    assert_eq!(
        ran.code(),
        Some(0),
        "init --out certs must publish\n{}\n{}",
        ran.describe(),
        listing(cwd.path())
    );
    assert_atomic_layout(&out, &["tls.crt", "tls.key", "ca.crt"]);
    key_pair_check(&out.join("tls.crt"), &out.join("tls.key")).unwrap();
}

/// A kill between the swap of `..data` and the renames of the visible names (or a name deleted
/// by hand) leaves a valid generation nobody can see. The next start reuses it and must make the
/// names visible again, not exit 0 with no `tls.crt`.
#[test]
fn a_restart_that_reuses_the_files_makes_missing_visible_names_again() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = config_with_ca(
        dir.path(),
        &out,
        &dir.path().join("state"),
        &ca,
        "  - name: web\n    dnsNames: [web.pillion.test]\n    duration: 1h\n",
    );
    let init = || {
        run_bounded(
            pillion().arg("--config").arg(&config).arg("init"),
            COMMAND_DEADLINE,
        )
    };
    init().assert_success();
    let web = out.join("web");
    let serial1 = serial(&web.join("tls.crt"));
    // What the kill leaves: the names still under their temporary names, or gone.
    fs::rename(web.join("tls.crt"), web.join("..tls.crt.tmp")).unwrap();
    fs::rename(web.join("tls.key"), web.join("..tls.key.tmp")).unwrap();
    fs::remove_file(web.join("ca.crt")).unwrap();

    let second = init();
    second.assert_success();
    let ctx = format!("{}\n{}", second.describe(), listing(&web));
    assert_atomic_layout(&web, &["tls.crt", "tls.key", "ca.crt"]);
    assert_eq!(
        serial(&web.join("tls.crt")),
        serial1,
        "the valid files are reused\n{ctx}"
    );
    key_pair_check(&web.join("tls.crt"), &web.join("tls.key")).unwrap();
    openssl_verify(&ca.cert, &web.join("tls.crt")).unwrap();
    assert!(
        second
            .stderr
            .contains("made missing file names visible again"),
        "the repair is logged\n{ctx}"
    );
    assert!(
        !web.join("..tls.crt.tmp").exists(),
        "leftovers removed\n{ctx}"
    );
}

/// Under `umask 077` the credential's directories were created 0700, and the app (another
/// uid) could not enter them. Every directory pillion creates is 0755 whatever the umask.
#[test]
fn directories_are_traversable_whatever_the_umask() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = config_with_ca(
        dir.path(),
        &out,
        &dir.path().join("state"),
        &ca,
        "  - name: web\n    dir: deep/web\n    dnsNames: [web.pillion.test]\n    files: {privateKey: keys/tls.key}\n",
    );
    let mut cmd = std::process::Command::new("sh");
    pillion_env(&mut cmd);
    cmd.arg("-c")
        .arg("umask 077; exec \"$0\" --config \"$1\" init")
        .arg(pillion_bin())
        .arg(&config);
    let ran = run_bounded(&mut cmd, COMMAND_DEADLINE);
    ran.assert_success();
    let web = out.join("deep/web");
    let live = web.join(fs::read_link(web.join("..data")).unwrap());
    for d in [
        out.clone(),
        out.join("deep"),
        web.clone(),
        live.clone(),
        live.join("keys"),
    ] {
        assert_eq!(
            mode_of(&d) & 0o777,
            0o755,
            "{} under umask 077\n{}\n{}",
            d.display(),
            ran.describe(),
            listing(&out)
        );
    }
}

/// `status -o json` is for scripts: valid JSON (read by Python's json module), with the
/// certificate's facts, and the renewal time the agent logged when it published.
#[test]
fn status_json_is_parsable_and_shows_the_agents_renewal_time() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let p = init_flags(Some(&ca), &["--common-name", "json.pillion.test"]);
    assert_eq!(p.ran.code(), Some(0), "{}", p.context());
    let renew_at = p
        .ran
        .stderr
        .split("renew_at=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("init logs renew_at\n{}", p.context()))
        .to_owned();
    let status = run_bounded(
        pillion()
            .args(["status", "-o", "json", "--out"])
            .arg(p.out.path()),
        COMMAND_DEADLINE,
    );
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    let fields = run_bounded(
        std::process::Command::new("python3")
            .arg("-c")
            .arg("import json,sys; c=json.loads(sys.argv[1])['credentials'][0]; print(c['name'], c['kind'], c['published'], c['nextRenewal'], c['timeLeftSeconds'] > 0, 'localhost' in c['names'])")
            .arg(&status.stdout),
        COMMAND_DEADLINE,
    );
    assert_eq!(
        fields.stdout.trim(),
        format!("tls certificate True {renew_at} True True"),
        "{}\n{}",
        fields.describe(),
        status.describe()
    );
}

/// `pillion version` names the version, a commit and the target.
#[test]
fn version_prints_version_commit_and_target() {
    let ran = run_pillion(["version"]);
    ran.assert_success();
    assert!(
        ran.stdout
            .starts_with(&format!("pillion {}\n", env!("CARGO_PKG_VERSION"))),
        "{}",
        ran.describe()
    );
    assert!(ran.stdout.contains("\ncommit: "), "{}", ran.describe());
    assert!(
        ran.stdout.contains("\ntarget: ") && ran.stdout.contains("-linux-"),
        "{}",
        ran.describe()
    );
}
