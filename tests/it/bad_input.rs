//! Malformed configs and arguments: pillion must refuse them with exit code 2, say on stderr
//! which field is wrong (the message is the product here, so it is matched as text), and leave
//! the output directory exactly as it found it — `check`, `init` and `run` alike.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::fixture::{Fixture, FixtureBuilder};
use common::{listing, openssl_ca, run_bounded, KeyKind, OpensslCa, Ran, COMMAND_DEADLINE};

/// Contents of the file every test plants in the output directory beforehand.
const SENTINEL: &str = "sentinel: pillion must not touch this directory\n";
const SENTINEL_NAME: &str = "sentinel.txt";

const ALL_MODES: &[&str] = &["check", "init", "run"];

/// One test's world: a [`Fixture`] whose output directory was pre-created with a sentinel file
/// in it (or must not come to exist), and whose state directory is never created.
struct Case {
    fixture: Fixture,
    /// Whether `out` was pre-created with the sentinel (otherwise it must not come to exist).
    out_existed: bool,
}

impl std::ops::Deref for Case {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.fixture
    }
}

impl Case {
    /// Output directory exists and holds only the sentinel.
    fn new() -> Case {
        Case {
            fixture: Case::builder()
                .file(Path::new("out").join(SENTINEL_NAME), SENTINEL)
                .build(),
            out_existed: true,
        }
    }

    /// Output directory does not exist (and must still not exist afterwards).
    fn without_out_dir() -> Case {
        Case {
            fixture: Case::builder().build(),
            out_existed: false,
        }
    }

    fn builder() -> FixtureBuilder {
        Fixture::builder().prefix("pillion-bad-input")
    }

    /// Writes the config file; `{out}` in `yaml` becomes the output directory.
    fn config_file(&self, yaml: &str) -> PathBuf {
        let text = yaml.replace("{out}", &self.out.display().to_string());
        fs::write(&self.config, text).unwrap();
        self.config.clone()
    }

    /// Runs `pillion <args>` with a private state dir, bounded in time (a `run` that accepted
    /// a bad config would never return; run_bounded kills it and fails the test).
    fn pillion(&self, args: &[&str]) -> Ran {
        let mut cmd = self.command(args);
        cmd.arg("--state-dir")
            .arg(&self.state)
            .current_dir(self.path());
        run_bounded(&mut cmd, COMMAND_DEADLINE)
    }

    /// Runs every subcommand in `modes` with `args` and asserts each was refused with exit 2,
    /// that stderr contains every string in `expected`, and that nothing was touched.
    fn assert_refused(&self, modes: &[&str], args: &[&str], expected: &[&str]) -> Vec<Ran> {
        modes
            .iter()
            .map(|mode| {
                let mut full = vec![*mode];
                full.extend_from_slice(args);
                let run = self.pillion(&full);
                assert_eq!(
                    run.code(),
                    Some(2),
                    "`pillion {mode}` should exit 2 (usage/config error)\n{}",
                    self.report(&run)
                );
                for want in expected {
                    assert!(
                        run.stderr.contains(want),
                        "`pillion {mode}`: stderr should name {want:?}\n{}",
                        self.report(&run)
                    );
                }
                self.assert_untouched(&run);
                run
            })
            .collect()
    }

    /// `assert_refused` for `--config <file>` in every subcommand.
    fn assert_config_refused(&self, config: &Path, expected: &[&str]) -> Vec<Ran> {
        let config = config.display().to_string();
        self.assert_refused(ALL_MODES, &["--config", &config], expected)
    }

    fn assert_untouched(&self, run: &Ran) {
        if self.out_existed {
            assert_eq!(
                names_in(&self.out),
                vec![SENTINEL_NAME.to_string()],
                "output dir must hold only the sentinel\n{}",
                self.report(run)
            );
            assert_eq!(
                fs::read_to_string(self.out.join(SENTINEL_NAME)).unwrap(),
                SENTINEL,
                "sentinel changed\n{}",
                self.report(run)
            );
        } else {
            assert!(
                fs::symlink_metadata(&self.out).is_err(),
                "output dir {} must not be created\n{}",
                self.out.display(),
                self.report(run)
            );
        }
        assert!(
            fs::symlink_metadata(&self.state).is_err(),
            "state dir must not be created for a refused input\n{}",
            self.report(run)
        );
    }

    fn report(&self, run: &Ran) -> String {
        let config = fs::read_to_string(&self.config).unwrap_or_default();
        format!(
            "{}--- config ---\n{config}\n{}",
            run.describe(),
            listing(&self.out),
        )
    }
}

/// A self-signed P-256 CA made by the openssl CLI.
fn ca() -> OpensslCa {
    openssl_ca(KeyKind::EcP256Pkcs8)
}

/// Names in `dir` (recursively, `/`-joined, sorted); empty if it does not exist.
fn names_in(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, names: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            names.push(path.strip_prefix(base).unwrap().display().to_string());
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &path, names);
            }
        }
    }
    let mut names = Vec::new();
    walk(dir, dir, &mut names);
    names.sort();
    names
}

/// Asserts that some stderr line, after leading whitespace, starts with `path` — the contract's
/// "one problem per line, each starting with the field path".
fn assert_line_starts_with(runs: &[Ran], path: &str) {
    for run in runs {
        assert!(
            run.stderr
                .lines()
                .any(|line| line.trim_start().starts_with(path)),
            "{}: some stderr line should start with the field path {path:?}\n--- stderr ---\n{}",
            run.cmdline,
            run.stderr
        );
    }
}

/// Asserts that `word` occurs in stderr as a whole identifier (`dnsName` must not be satisfied
/// by `dnsNames`).
fn assert_mentions_word(runs: &[Ran], word: &str) {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for run in runs {
        let found = run.stderr.match_indices(word).any(|(i, _)| {
            let before = run.stderr[..i].chars().next_back();
            let after = run.stderr[i + word.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
        });
        assert!(
            found,
            "{}: stderr should mention {word:?} as a word\n--- stderr ---\n{}",
            run.cmdline, run.stderr
        );
    }
}

/// A valid single-certificate config body (dev CA) to start from.
fn with_certificate(cert_fields: &str) -> String {
    format!("outputDir: {{out}}\ncertificates:\n  - name: web\n{cert_fields}")
}

// ---------------------------------------------------------------------------------------------
// YAML shape
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_yaml_syntax_is_refused_with_its_location() {
    let case = Case::new();
    let config = case.config_file(
        "outputDir: {out}\ncertificates:\n  - name: web\n    dnsNames: [localhost\n    duration: 1h\n",
    );
    let runs = case.assert_config_refused(&config, &["line"]);
    for run in &runs {
        assert!(
            run.stderr.contains("pillion.yaml"),
            "{}: stderr should name the config file\n{}",
            run.cmdline,
            run.stderr
        );
    }
}

#[test]
fn unknown_top_level_key_is_refused_by_name() {
    let case = Case::without_out_dir();
    let config = case.config_file(
        "outputDir: {out}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\nreloadd:\n  process: nginx\n",
    );
    let runs = case.assert_config_refused(&config, &["reloadd"]);
    assert_mentions_word(&runs, "reloadd");
}

#[test]
fn unknown_key_inside_a_certificate_is_refused_with_its_path() {
    let case = Case::new();
    let config = case.config_file(&with_certificate("    dnsName: [localhost]\n"));
    let runs = case.assert_config_refused(&config, &["certificates[0]"]);
    assert_mentions_word(&runs, "dnsName");
}

#[test]
fn bad_duration_is_refused_with_path_and_value() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    duration: 24x\n",
    ));
    let runs = case.assert_config_refused(&config, &["certificates[0].duration", "24x"]);
    assert_line_starts_with(&runs, "certificates[0].duration");
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_dns_name_is_refused_with_path_and_value() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost, \"bad_name!\"]\n",
    ));
    let runs = case.assert_config_refused(&config, &["certificates[0].dnsNames[1]", "bad_name!"]);
    assert_line_starts_with(&runs, "certificates[0].dnsNames[1]");
}

#[test]
fn invalid_ip_address_is_refused_with_path_and_value() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    ipAddresses: [\"300.1.2.3\"]\n",
    ));
    let runs =
        case.assert_config_refused(&config, &["certificates[0].ipAddresses[0]", "300.1.2.3"]);
    assert_line_starts_with(&runs, "certificates[0].ipAddresses[0]");
}

#[test]
fn invalid_uri_is_refused_with_path_and_value() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    uris: [\"not a uri\"]\n",
    ));
    let runs = case.assert_config_refused(&config, &["certificates[0].uris[0]", "not a uri"]);
    assert_line_starts_with(&runs, "certificates[0].uris[0]");
}

#[test]
fn certificate_without_any_name_is_refused() {
    let case = Case::new();
    let config = case.config_file(&with_certificate("    duration: 1h\n"));
    let runs = case.assert_config_refused(&config, &["certificates[0]"]);
    assert_line_starts_with(&runs, "certificates[0]");
}

#[test]
fn duplicate_certificate_names_are_refused() {
    let case = Case::new();
    let config = case.config_file(
        "outputDir: {out}\ncertificates:\n  - name: web\n    dnsNames: [a.example]\n  - name: web\n    dnsNames: [b.example]\n    dir: other\n",
    );
    let runs = case.assert_config_refused(&config, &["certificates[1].name", "web"]);
    assert_line_starts_with(&runs, "certificates[1].name");
}

// ---------------------------------------------------------------------------------------------
// Key and lifetime
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_key_algorithm_is_refused_with_path_and_value() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    privateKey: {algorithm: DSA-1024}\n",
    ));
    case.assert_config_refused(
        &config,
        &["certificates[0].privateKey.algorithm", "DSA-1024"],
    );
}

#[test]
fn renew_before_and_renew_before_percentage_together_are_refused() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    duration: 1h\n    renewBefore: 10m\n    renewBeforePercentage: 33\n",
    ));
    let runs = case.assert_config_refused(&config, &["certificates[0]", "renewBeforePercentage"]);
    assert_mentions_word(&runs, "renewBefore");
}

#[test]
fn renew_before_equal_to_duration_is_refused() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    duration: 1h\n    renewBefore: 60m\n",
    ));
    let runs = case.assert_config_refused(&config, &["certificates[0].renewBefore"]);
    assert_line_starts_with(&runs, "certificates[0].renewBefore");
}

#[test]
fn renew_before_longer_than_duration_is_refused() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    duration: 1h\n    renewBefore: 2h\n",
    ));
    let runs = case.assert_config_refused(&config, &["certificates[0].renewBefore"]);
    assert_line_starts_with(&runs, "certificates[0].renewBefore");
}

#[test]
fn renew_before_percentage_zero_is_refused() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    renewBeforePercentage: 0\n",
    ));
    let runs = case.assert_config_refused(&config, &["certificates[0].renewBeforePercentage"]);
    assert_line_starts_with(&runs, "certificates[0].renewBeforePercentage");
}

#[test]
fn renew_before_percentage_hundred_is_refused() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    renewBeforePercentage: 100\n",
    ));
    let runs =
        case.assert_config_refused(&config, &["certificates[0].renewBeforePercentage", "100"]);
    assert_line_starts_with(&runs, "certificates[0].renewBeforePercentage");
}

// ---------------------------------------------------------------------------------------------
// Issuers and CA files
// ---------------------------------------------------------------------------------------------

#[test]
fn certificate_referring_to_an_undefined_issuer_is_refused() {
    let case = Case::new();
    let ca = ca();
    let (crt, key) = (&ca.cert, &ca.key);
    let config = case.config_file(&format!(
        "outputDir: {{out}}\nissuers:\n  ca:\n    localCa: {{certFile: {}, keyFile: {}}}\ncertificates:\n  - name: web\n    issuer: vault\n    dnsNames: [localhost]\n",
        crt.display(),
        key.display()
    ));
    let runs = case.assert_config_refused(&config, &["certificates[0].issuer", "vault"]);
    assert_line_starts_with(&runs, "certificates[0].issuer");
}

#[test]
fn missing_ca_certificate_file_is_refused_naming_the_path() {
    let case = Case::new();
    let ca = ca();
    let key = &ca.key;
    let missing = case.file("no-such-ca.crt");
    let config = case.config_file(&format!(
        "outputDir: {{out}}\nissuers:\n  ca:\n    localCa: {{certFile: {}, keyFile: {}}}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\n",
        missing.display(),
        key.display()
    ));
    case.assert_config_refused(&config, &[&missing.display().to_string()]);
}

#[test]
fn ca_key_file_that_is_not_a_pem_key_is_refused_naming_the_path() {
    let case = Case::new();
    let ca = ca();
    let crt = &ca.cert;
    let not_a_key = case.file("not-a-key.pem");
    fs::write(&not_a_key, "this is not a private key\n").unwrap();
    let config = case.config_file(&format!(
        "outputDir: {{out}}\nissuers:\n  ca:\n    localCa: {{certFile: {}, keyFile: {}}}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\n",
        crt.display(),
        not_a_key.display()
    ));
    case.assert_config_refused(&config, &[&not_a_key.display().to_string()]);
}

#[test]
fn ca_key_that_does_not_match_its_certificate_is_refused() {
    let case = Case::new();
    let (a, b) = (ca(), ca());
    let (crt_a, key_b) = (&a.cert, &b.key);
    let config = case.config_file(&format!(
        "outputDir: {{out}}\nissuers:\n  ca:\n    localCa: {{certFile: {}, keyFile: {}}}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\n",
        crt_a.display(),
        key_b.display()
    ));
    let runs = case.assert_config_refused(&config, &["issuers.ca"]);
    assert_line_starts_with(&runs, "issuers.ca");
    for run in &runs {
        let names_a_file = run.stderr.contains(&crt_a.display().to_string())
            || run.stderr.contains(&key_b.display().to_string());
        assert!(
            names_a_file,
            "{}: stderr should name the CA certificate or key file\n{}",
            run.cmdline, run.stderr
        );
    }
}

/// A CA made with rcgen: `configure` shapes it; `signer` (cert PEM, key) signs it, else it is
/// self-signed. Returns (cert PEM, key PEM).
fn rcgen_ca(
    cn: &str,
    configure: impl FnOnce(&mut rcgen::CertificateParams),
    signer: Option<(&rcgen::CertificateParams, &rcgen::KeyPair)>,
) -> (String, rcgen::KeyPair, rcgen::CertificateParams) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    configure(&mut params);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = match signer {
        Some((sp, sk)) => {
            let issuer = rcgen::Issuer::from_params(sp, sk);
            params.signed_by(&key, &issuer).unwrap()
        }
        None => params.self_signed(&key).unwrap(),
    };
    (cert.pem(), key, params)
}

/// A config with a local CA from `cert_pem` and `key`, one certificate of `duration`.
fn local_ca_config(case: &Case, cert_pem: &str, key: &rcgen::KeyPair, duration: &str) -> PathBuf {
    let crt = case.file("ca.crt");
    let key_file = case.file("ca.key");
    fs::write(&crt, cert_pem).unwrap();
    fs::write(&key_file, key.serialize_pem()).unwrap();
    case.config_file(&format!(
        "outputDir: {{out}}\nissuers:\n  ca:\n    localCa: {{certFile: {}, keyFile: {}}}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\n    duration: {duration}\n",
        crt.display(),
        key_file.display()
    ))
}

/// CA material that can never give a chain `openssl verify` accepts is refused when the
/// configuration is loaded (exit 2 naming the issuer and the file), by check, init and run.
#[test]
fn ca_material_that_cannot_issue_a_valid_chain_is_refused_at_load() {
    let now = time::OffsetDateTime::now_utc();
    type Shape = Box<dyn FnOnce(&mut rcgen::CertificateParams)>;
    let cases: Vec<(&str, Shape, &str)> = vec![
        (
            "expired",
            Box::new(move |p| {
                p.not_before = now - time::Duration::days(30);
                p.not_after = now - time::Duration::days(1);
            }),
            "expired at",
        ),
        (
            "not yet valid",
            Box::new(move |p| p.not_before = now + time::Duration::days(1)),
            "is not valid before",
        ),
        (
            "CA:FALSE",
            Box::new(|p| p.is_ca = rcgen::IsCa::ExplicitNoCa),
            "CA:TRUE is missing",
        ),
        (
            "no keyCertSign",
            Box::new(|p| p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature]),
            "lacks keyCertSign",
        ),
    ];
    for (what, configure, expected) in cases {
        let case = Case::new();
        let (pem, key, _) = rcgen_ca(&format!("{what} CA"), configure, None);
        let config = local_ca_config(&case, &pem, &key, "24h");
        let runs = case.assert_config_refused(
            &config,
            &[
                "issuers.ca",
                &case.file("ca.crt").display().to_string(),
                expected,
            ],
        );
        assert_line_starts_with(&runs, "issuers.ca");
    }

    // A root with pathlen:0 cannot have an intermediate below it.
    let case = Case::new();
    let (root_pem, root_key, root_params) = rcgen_ca(
        "pathlen 0 root",
        |p| p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0)),
        None,
    );
    let (int_pem, int_key, _) = rcgen_ca("intermediate", |_| {}, Some((&root_params, &root_key)));
    let config = local_ca_config(&case, &format!("{int_pem}{root_pem}"), &int_key, "24h");
    case.assert_config_refused(&config, &["issuers.ca", "pathlen:0"]);
}

/// With an hour left on the CA, a 24h certificate is cut to end with the CA (openssl then
/// verifies it), and the CA's near end is warned about.
#[test]
fn a_leaf_never_outlives_its_ca() {
    let case = Case::new();
    let now = time::OffsetDateTime::now_utc();
    let (pem, key, _) = rcgen_ca(
        "short-lived CA",
        |p| p.not_after = now + time::Duration::hours(1),
        None,
    );
    let config = local_ca_config(&case, &pem, &key, "24h");
    let run = case.pillion(&["--config", &config.display().to_string(), "init"]);
    assert_eq!(run.code(), Some(0), "{}", case.report(&run));
    let leaf = case.out.join("web/tls.crt");
    let ca_end = common::openssl(&[
        "x509".as_ref(),
        "-noout".as_ref(),
        "-enddate".as_ref(),
        "-in".as_ref(),
        case.file("ca.crt").as_os_str(),
    ]);
    let leaf_end = common::openssl(&[
        "x509".as_ref(),
        "-noout".as_ref(),
        "-enddate".as_ref(),
        "-in".as_ref(),
        leaf.as_os_str(),
    ]);
    assert_eq!(
        leaf_end,
        ca_end,
        "the leaf ends with its CA\n{}",
        case.report(&run)
    );
    common::openssl_verify(&case.file("ca.crt"), &leaf).unwrap();
    assert!(
        run.stderr.contains("expires in")
            && run.stderr.contains("the certificate ends with the CA"),
        "the near end of the CA is warned about\n{}",
        case.report(&run)
    );
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

#[test]
fn output_dir_under_a_regular_file_is_refused() {
    // Permission bits do not stop root, but no one can create a directory inside a file.
    let case = Case::without_out_dir();
    let blocker = case.file("blocker");
    fs::write(&blocker, SENTINEL).unwrap();
    let out = blocker.join("sub");
    let config = case.file("pillion.yaml");
    fs::write(
        &config,
        format!(
            "outputDir: {}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\n",
            out.display()
        ),
    )
    .unwrap();
    for mode in ALL_MODES {
        let run = case.pillion(&[mode, "--config", &config.display().to_string()]);
        assert_eq!(
            run.code(),
            Some(2),
            "`pillion {mode}` should exit 2\n{}",
            case.report(&run)
        );
        assert!(
            run.stderr.contains(&blocker.display().to_string()),
            "`pillion {mode}`: stderr should name the output dir\n{}",
            case.report(&run)
        );
        assert!(
            fs::metadata(&blocker).unwrap().is_file(),
            "blocker must stay a file"
        );
        assert_eq!(
            fs::read_to_string(&blocker).unwrap(),
            SENTINEL,
            "blocker changed"
        );
        assert!(
            fs::symlink_metadata(&case.state).is_err(),
            "state dir must not be created (no dev CA for a config that cannot run)\n{}",
            case.report(&run)
        );
    }
}

#[test]
fn payload_file_name_with_dot_dot_is_refused() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    files: {certificate: ../escape.crt}\n",
    ));
    let runs = case.assert_config_refused(
        &config,
        &["certificates[0].files.certificate", "../escape.crt"],
    );
    assert_line_starts_with(&runs, "certificates[0].files.certificate");
}

#[test]
fn absolute_payload_file_name_is_refused() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    files: {privateKey: /tmp/pillion-escape.key}\n",
    ));
    let runs = case.assert_config_refused(
        &config,
        &[
            "certificates[0].files.privateKey",
            "/tmp/pillion-escape.key",
        ],
    );
    assert_line_starts_with(&runs, "certificates[0].files.privateKey");
    assert!(!Path::new("/tmp/pillion-escape.key").exists());
}

#[test]
fn credential_dir_escaping_the_output_dir_is_refused() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    dir: ../escape\n",
    ));
    let runs = case.assert_config_refused(&config, &["certificates[0].dir", "../escape"]);
    assert_line_starts_with(&runs, "certificates[0].dir");
    assert!(!case.file("escape").exists());
}

#[test]
fn two_files_with_the_same_name_are_refused() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    files: {certificate: tls.pem, privateKey: tls.pem}\n",
    ));
    let runs = case.assert_config_refused(&config, &["certificates[0].files", "tls.pem"]);
    assert_line_starts_with(&runs, "certificates[0].files");
}

#[test]
fn file_mode_that_is_not_octal_is_refused() {
    let case = Case::new();
    let config = case.config_file(&with_certificate(
        "    dnsNames: [localhost]\n    files: {mode: \"0999\"}\n",
    ));
    let runs = case.assert_config_refused(&config, &["certificates[0].files.mode", "0999"]);
    assert_line_starts_with(&runs, "certificates[0].files.mode");
}

// ---------------------------------------------------------------------------------------------
// Reload
// ---------------------------------------------------------------------------------------------

#[test]
fn two_reload_targets_at_once_are_refused() {
    let case = Case::new();
    let config = case.config_file(
        "outputDir: {out}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\nreload:\n  process: nginx\n  pidFile: /run/nginx.pid\n",
    );
    let runs = case.assert_config_refused(&config, &["reload", "pidFile"]);
    assert_line_starts_with(&runs, "reload");
    assert_mentions_word(&runs, "process");
}

#[test]
fn unknown_reload_signal_is_refused_with_path_and_value() {
    let case = Case::new();
    let config = case.config_file(
        "outputDir: {out}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\nreload:\n  signal: SIGFOO\n  process: nginx\n",
    );
    let runs = case.assert_config_refused(&config, &["reload.signal", "SIGFOO"]);
    assert_line_starts_with(&runs, "reload.signal");
}

#[test]
fn invalid_process_regex_is_refused_with_path() {
    let case = Case::new();
    let config = case.config_file(
        "outputDir: {out}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\nreload:\n  processRegex: \"python3 ([\"\n",
    );
    let runs = case.assert_config_refused(&config, &["reload.processRegex"]);
    assert_line_starts_with(&runs, "reload.processRegex");
}

// ---------------------------------------------------------------------------------------------
// Every problem at once
// ---------------------------------------------------------------------------------------------

#[test]
fn config_with_three_errors_reports_all_three_in_one_run() {
    let case = Case::without_out_dir();
    let config = case.config_file(
        "outputDir: {out}\ncertificates:\n  - name: web\n    dnsNames: [localhost, \"bad_name!\"]\n  - name: api\n    dnsNames: [api.example]\n    ipAddresses: [\"10.0.0.256\"]\n    duration: 24x\n",
    );
    let runs = case.assert_config_refused(
        &config,
        &[
            "certificates[0].dnsNames[1]",
            "bad_name!",
            "certificates[1].ipAddresses[0]",
            "10.0.0.256",
            "certificates[1].duration",
            "24x",
        ],
    );
    for path in [
        "certificates[0].dnsNames[1]",
        "certificates[1].ipAddresses[0]",
        "certificates[1].duration",
    ] {
        assert_line_starts_with(&runs, path);
    }
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

#[test]
fn config_combined_with_dns_name_flag_is_a_usage_error() {
    let case = Case::new();
    let config = case.config_file(&with_certificate("    dnsNames: [localhost]\n"));
    case.assert_refused(
        ALL_MODES,
        &[
            "--config",
            &config.display().to_string(),
            "--dns-name",
            "example.com",
        ],
        &["--dns-name"],
    );
}

#[test]
fn bad_duration_flag_is_refused_with_flag_and_value() {
    let case = Case::new();
    let out = case.out.display().to_string();
    case.assert_refused(
        ALL_MODES,
        &[
            "--out",
            &out,
            "--dns-name",
            "localhost",
            "--duration",
            "24x",
        ],
        &["--duration", "24x"],
    );
}

#[test]
fn invalid_dns_name_flag_is_refused_with_value() {
    let case = Case::without_out_dir();
    let out = case.out.display().to_string();
    case.assert_refused(
        ALL_MODES,
        &["--out", &out, "--dns-name", "bad_name!"],
        &["bad_name!"],
    );
}

// ---------------------------------------------------------------------------------------------
// Control: the configs above are refused for their one fault, not for something they share
// ---------------------------------------------------------------------------------------------

#[test]
fn baseline_inputs_pass_check_so_each_refusal_above_is_due_to_its_one_fault() {
    let case = Case::new();
    let ca = ca();
    let mut baselines = vec![
        vec![
            "--config".to_string(),
            case.config_file(&with_certificate("    dnsNames: [localhost]\n"))
                .display()
                .to_string(),
        ],
        vec![
            "--out".to_string(),
            case.out.display().to_string(),
            "--dns-name".to_string(),
            "localhost".to_string(),
            "--duration".to_string(),
            "24h".to_string(),
        ],
    ];
    let with_ca = case.file("with-ca.yaml");
    fs::write(
        &with_ca,
        format!(
            "outputDir: {}\nissuers:\n  ca:\n    localCa: {{certFile: {}, keyFile: {}}}\ncertificates:\n  - name: web\n    issuer: ca\n    dnsNames: [localhost]\n    duration: 1h\n    renewBefore: 10m\n    files: {{certificate: tls.crt, privateKey: tls.key, mode: \"0644\"}}\nreload:\n  signal: SIGHUP\n  processRegex: \"python3 .*counter\"\n",
            case.out.display(),
            ca.cert.display(),
            ca.key.display()
        ),
    )
    .unwrap();
    baselines.push(vec!["--config".to_string(), with_ca.display().to_string()]);
    for args in baselines {
        let mut full = vec!["check"];
        full.extend(args.iter().map(String::as_str));
        let run = case.pillion(&full);
        assert_eq!(
            run.code(),
            Some(0),
            "baseline should pass check\n{}",
            case.report(&run)
        );
        case.assert_untouched(&run);
    }
}

/// A uid or gid the process cannot give its files (no CAP_CHOWN, not its own) passed check and
/// then failed every publish. check now refuses it, naming the field. Run as `nobody` through
/// setpriv, which drops every capability with the uid change.
#[test]
fn an_owner_pillion_cannot_set_is_refused_by_check() {
    use std::os::unix::fs::PermissionsExt;
    let case = Case::without_out_dir();
    fs::set_permissions(case.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let config = case.config_file(
        "outputDir: {out}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\n    files: {uid: 0, gid: 0}\n",
    );
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = std::process::Command::new("setpriv");
    common::pillion_env(&mut cmd);
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(common::pillion_bin())
    .arg("--config")
    .arg(&config)
    .arg("--state-dir")
    .arg(&case.state)
    .arg("check");
    let run = run_bounded(&mut cmd, COMMAND_DEADLINE);
    assert_eq!(run.code(), Some(2), "{}", case.report(&run));
    assert!(
        run.stderr
            .contains("certificates[0].files: uid 0 cannot be set"),
        "{}",
        case.report(&run)
    );
}

/// The CSR API returns no CA: its caFile is the only source of ca.crt. A missing one passed check
/// and then failed every renewal; now check, init and run refuse it, naming the file.
#[test]
fn a_missing_ca_file_for_the_csr_api_is_refused_naming_it() {
    let case = Case::new();
    let missing = case.file("no-such-cluster-ca.crt");
    let config = case.config_file(&format!(
        "outputDir: {{out}}\nissuers:\n  cluster:\n    kubernetesCsr: {{signerName: example.com/app, caFile: {}}}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\n",
        missing.display()
    ));
    let runs = case.assert_config_refused(
        &config,
        &["issuers.cluster", &missing.display().to_string()],
    );
    assert_line_starts_with(&runs, "issuers.cluster");
}
