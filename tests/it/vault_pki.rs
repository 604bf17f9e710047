//! Certificates from a real OpenBao PKI: sign mode (CSR, the key stays here) and issue mode,
//! a root and an intermediate mount, a role that refuses a name, a TLS listener, and `run`
//! reusing what `init` published. Each test checks the files with openssl against OpenBao's
//! own CA, and reads OpenBao's audit log to see what the server received and answered.

use crate::common;

use common::openbao::*;
use common::*;

/// Deadline handed to `pillion init` when it is expected to succeed.
const INIT_TIMEOUT: &str = "30s";

fn web_cert() -> String {
    format!("certificates:\n{}", cert_yaml("web", "1h"))
}

#[test]
fn sign_mode_certificate_verifies_against_openbaos_root_and_openbao_issued_it() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let login = bao.approle(case.path(), "pki-sign");
    case.write_config(&bao.issuer(Auth::AppRole(login)), &web_cert());

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    let web = case.out.join("web");
    let (crt, key, ca) = (web.join("tls.crt"), web.join("tls.key"), web.join("ca.crt"));
    assert_atomic_layout(&web, &["tls.crt", "tls.key", "ca.crt"]);

    // openssl, with the CA file pillion wrote and with the root OpenBao handed us directly.
    openssl_verify(&ca, &crt).unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
    openssl_verify(&bao.root_ca, &crt).unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
    assert_eq!(
        cert_ders(&ca),
        cert_ders(&bao.root_ca),
        "ca.crt should hold exactly OpenBao's root\n{}",
        ctx(&case, &ran, bao)
    );
    key_pair_check(&crt, &key).unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
    assert_eq!(mode_of(&key), 0o600, "{}", ctx(&case, &ran, bao));
    let sans = san_text(&crt);
    assert!(
        sans.contains("DNS:localhost") && sans.contains("IP Address:127.0.0.1"),
        "the certificate should name localhost and 127.0.0.1: {sans}\n{}",
        ctx(&case, &ran, bao)
    );

    // OpenBao stored the certificate it issued under this serial: the very same bytes.
    let stored = bao.bao_ok([
        "read".to_string(),
        "-field=certificate".into(),
        format!("pki/cert/{}", vault_serial(&crt)),
    ]);
    let stored_der = pem::parse(stored.trim())
        .expect("OpenBao's stored certificate is PEM")
        .into_contents();
    assert_eq!(
        cert_ders(&crt).first(),
        Some(&stored_der),
        "tls.crt's leaf is not the certificate OpenBao stored under its serial\n{}",
        ctx(&case, &ran, bao)
    );
    // And it came through the sign endpoint with pillion's AppRole token.
    assert!(
        !bao.approle_responses("pki-sign", "pki/sign/app").is_empty(),
        "OpenBao's audit log shows no pki/sign/app request from role pki-sign\n{}",
        ctx(&case, &ran, bao)
    );
}

#[test]
fn sign_mode_private_key_never_travels_to_or_from_openbao() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let login = bao.approle(case.path(), "pki-no-key");
    case.write_config(&bao.issuer(Auth::AppRole(login)), &web_cert());

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    let web = case.out.join("web");
    key_pair_check(&web.join("tls.crt"), &web.join("tls.key"))
        .unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));

    // Every request and response made with this role's token, in clear (log_raw).
    let role = "\"role_name\":\"pki-no-key\"";
    let entries: Vec<String> = bao
        .audit_text()
        .lines()
        .filter(|l| l.contains(role))
        .map(str::to_owned)
        .collect();
    assert!(
        entries
            .iter()
            .any(|l| l.contains("\"path\":\"pki/sign/app\"") && l.contains("\"type\":\"response\"")),
        "the audit log should show OpenBao answering pki/sign/app for role pki-no-key:\n{}\n{}",
        entries.join("\n"),
        ctx(&case, &ran, bao)
    );
    let leaking: Vec<&String> = entries
        .iter()
        .filter(|l| l.contains("PRIVATE KEY"))
        .collect();
    assert!(
        leaking.is_empty(),
        "in sign mode no private key may cross the wire, but OpenBao's audit log shows:\n{}",
        leaking
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn issue_mode_certificate_verifies_and_openbao_sent_the_key() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let login = bao.approle(case.path(), "pki-issue");
    let mut issuer = bao.issuer(Auth::AppRole(login));
    issuer.pki_mode = Some("issue".into());
    case.write_config(&issuer, &web_cert());

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    let web = case.out.join("web");
    let (crt, key, ca) = (web.join("tls.crt"), web.join("tls.key"), web.join("ca.crt"));
    openssl_verify(&ca, &crt).unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
    openssl_verify(&bao.root_ca, &crt).unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
    key_pair_check(&crt, &key).unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
    assert_eq!(mode_of(&key), 0o600, "{}", ctx(&case, &ran, bao));
    let key_pem = std::fs::read_to_string(&key).expect("read tls.key");
    assert!(
        key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "tls.key should be PKCS#8 whatever OpenBao sent:\n{}",
        ctx(&case, &ran, bao)
    );

    // The key came from OpenBao: its issue response carries it (which is what the sign-mode
    // test makes sure never happens there).
    let issued = bao.approle_responses("pki-issue", "pki/issue/app");
    assert!(
        issued.iter().any(|l| l.contains("PRIVATE KEY")),
        "OpenBao's audit log should show a pki/issue/app response with the key for role \
         pki-issue:\n{}\n{}",
        issued.join("\n"),
        ctx(&case, &ran, bao)
    );
    assert!(
        bao.approle_responses("pki-issue", "pki/sign/app")
            .is_empty(),
        "issue mode should not use the sign endpoint\n{}",
        ctx(&case, &ran, bao)
    );
}

/// An RSA key is generated on a blocking thread while pillion logs in; the CSR then goes to a
/// role that takes any key type.
#[test]
fn an_rsa_key_made_while_logging_in_is_signed_by_a_role_taking_any_key_type() {
    let bao = OpenBao::shared();
    bao.bao_ok([
        "write",
        "pki/roles/any-key",
        "allowed_domains=localhost",
        "allow_localhost=true",
        "allow_ip_sans=true",
        "max_ttl=72h",
        "key_type=any",
    ]);
    let case = Case::new();
    // The shipped policy names role `app` only; this role gets its own grant.
    let grant = write(
        case.path(),
        "any-key.hcl",
        "path \"pki/sign/any-key\" { capabilities = [\"update\"] }\n",
    );
    bao.bao_ok([
        "policy".as_ref(),
        "write".as_ref(),
        "pillion-any-key".as_ref(),
        grant.as_os_str(),
    ]);
    let login = bao.approle(case.path(), "pki-rsa");
    bao.bao_ok([
        "write",
        "auth/approle/role/pki-rsa",
        "token_policies=pillion,pillion-any-key",
    ]);
    let mut issuer = bao.issuer(Auth::AppRole(login)).yaml();
    assert!(issuer.contains("role: app\n"), "{issuer}");
    issuer = issuer.replace("role: app\n", "role: any-key\n");
    std::fs::write(
        &case.config,
        format!(
            "outputDir: \"{}\"\n{issuer}certificates:\n{}    privateKey: {{algorithm: RSA-2048}}\n",
            case.out.display(),
            cert_yaml("web", "1h")
        ),
    )
    .unwrap();

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    let web = case.out.join("web");
    openssl_verify(&bao.root_ca, &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
    key_pair_check(&web.join("tls.crt"), &web.join("tls.key"))
        .unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
    let key = key_text(&web.join("tls.key"));
    assert!(
        key.contains("Private-Key: (2048 bit"),
        "tls.key should be RSA-2048: {}\n{}",
        key.lines().next().unwrap_or(""),
        ctx(&case, &ran, bao)
    );
}

#[test]
fn intermediate_mount_puts_leaf_and_intermediate_in_tls_crt_and_only_the_root_in_ca_crt() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let login = bao.approle(case.path(), "pki-int");
    let mut issuer = bao.issuer(Auth::AppRole(login));
    issuer.pki_mount = Some("pki_int".into());
    case.write_config(&issuer, &web_cert());

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    let web = case.out.join("web");
    let (crt, key, ca) = (web.join("tls.crt"), web.join("tls.key"), web.join("ca.crt"));

    let chain = cert_ders(&crt);
    assert_eq!(
        chain.len(),
        2,
        "tls.crt should hold the leaf and the intermediate\n{}",
        ctx(&case, &ran, bao)
    );
    assert_eq!(
        chain[1],
        cert_ders(&bao.intermediate_ca)[0],
        "the second certificate of tls.crt should be OpenBao's pki_int intermediate\n{}",
        ctx(&case, &ran, bao)
    );
    assert_eq!(
        cert_ders(&ca),
        cert_ders(&bao.root_ca),
        "ca.crt should hold only the root (not the intermediate)\n{}",
        ctx(&case, &ran, bao)
    );
    // A client that trusts the root verifies tls.crt as served, intermediate included...
    openssl_verify_chain(&ca, &crt).unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
    // ...and could not without it: the leaf is signed by the intermediate, not the root.
    assert!(
        openssl_verify(&ca, &crt).is_err(),
        "the leaf alone should not verify against the root\n{}",
        ctx(&case, &ran, bao)
    );
    key_pair_check(&crt, &key).unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
    assert!(
        !bao.approle_responses("pki-int", "pki_int/sign/app")
            .is_empty(),
        "OpenBao's audit log shows no pki_int/sign/app request from role pki-int\n{}",
        ctx(&case, &ran, bao)
    );
}

#[test]
fn a_name_the_role_refuses_fails_init_with_openbaos_message_and_writes_nothing() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let login = bao.approle(case.path(), "pki-refused");
    case.write_config(
        &bao.issuer(Auth::AppRole(login)),
        "certificates:\n  - name: evil\n    issuer: bao\n    commonName: evil.invalid\n    \
         dnsNames: [evil.invalid]\n    duration: 1h\n",
    );

    let ran = case.init("5s");
    assert_eq!(
        ran.code(),
        Some(1),
        "init should fail when OpenBao refuses the name\n{}",
        ctx(&case, &ran, bao)
    );
    // OpenBao's own words, the endpoint and the status, as the contract shows them.
    for needle in [
        "not allowed by this role",
        "evil.invalid",
        "pki/sign/app",
        "400",
    ] {
        assert!(
            ran.stderr.contains(needle),
            "stderr should contain {needle:?}\n{}",
            ctx(&case, &ran, bao)
        );
    }
    let written = files_under(&case.out);
    assert!(
        written.is_empty(),
        "nothing may be written when the certificate is refused: {written:?}\n{}",
        ctx(&case, &ran, bao)
    );
    assert!(
        !case.out.join("evil").exists(),
        "a first issuance that failed leaves no directory behind\n{}",
        ctx(&case, &ran, bao)
    );
    // OpenBao did receive the request and refused it.
    let answers = bao.approle_responses("pki-refused", "pki/sign/app");
    assert!(
        answers
            .iter()
            .any(|l| l.contains("evil.invalid not allowed by this role")),
        "OpenBao's audit log should show it refusing evil.invalid:\n{}\n{}",
        answers.join("\n"),
        ctx(&case, &ran, bao)
    );
}

#[test]
fn tls_listener_with_ca_file_issues_a_verified_certificate() {
    let bao = OpenBao::shared_tls();
    assert!(bao.addr.starts_with("https://"));
    let case = Case::new();
    let login = bao.approle(case.path(), "pki-tls");
    let issuer = bao.issuer(Auth::AppRole(login));
    assert!(
        issuer.ca_file.is_some(),
        "the TLS issuer should carry caFile"
    );
    case.write_config(&issuer, &web_cert());

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    let web = case.out.join("web");
    openssl_verify(&web.join("ca.crt"), &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
    openssl_verify(&bao.root_ca, &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
    assert!(
        !bao.approle_responses("pki-tls", "pki/sign/app").is_empty(),
        "the TLS server's audit log shows no pki/sign/app request from role pki-tls\n{}",
        ctx(&case, &ran, bao)
    );
}

#[test]
fn tls_listener_without_ca_file_is_refused_with_a_certificate_verification_error() {
    let bao = OpenBao::shared_tls();
    let case = Case::new();
    let login = bao.approle(case.path(), "pki-tls-untrusted");
    let mut issuer = bao.issuer(Auth::AppRole(login));
    issuer.ca_file = None;
    case.write_config(&issuer, &web_cert());

    let ran = case.init("5s");
    assert_eq!(
        ran.code(),
        Some(1),
        "init should fail: the dev-tls CA is not among the system roots\n{}",
        ctx(&case, &ran, bao)
    );
    let stderr = ran.stderr.to_lowercase();
    assert!(
        stderr.contains("certificate")
            && ["unknownissuer", "unknown issuer", "verif", "not trusted"]
                .iter()
                .any(|n| stderr.contains(n)),
        "stderr should say the server's certificate could not be verified\n{}",
        ctx(&case, &ran, bao)
    );
    assert!(
        files_under(&case.out).is_empty(),
        "nothing may be written\n{}",
        ctx(&case, &ran, bao)
    );
    // The handshake failed, so OpenBao never saw a login for this role.
    let logins = bao.approle_responses("pki-tls-untrusted", "auth/approle/login");
    assert!(
        logins.is_empty(),
        "no request should have reached OpenBao:\n{}",
        logins.join("\n")
    );
}

#[test]
fn run_after_init_reuses_the_certificate_on_disk() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let login = bao.approle(case.path(), "pki-reuse");
    case.write_config(&bao.issuer(Auth::AppRole(login)), &web_cert());

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    let crt = case.out.join("web/tls.crt");
    let first = serial(&crt);
    let generation = live_generation(&case.out.join("web"));

    let daemon = case.run();
    daemon.wait_for(
        "pillion run to reuse the certificate init published",
        COMMAND_DEADLINE,
        || {
            daemon
                .logs()
                .contains("reusing the valid certificate on disk")
        },
    );
    let logs = daemon.describe();
    let status = daemon.stop();
    assert!(status.success(), "pillion run exited with {status}\n{logs}");

    assert_eq!(serial(&crt), first, "run replaced the certificate\n{logs}");
    assert_eq!(
        live_generation(&case.out.join("web")),
        generation,
        "run published a new generation\n{logs}\n{}",
        case.describe()
    );
    // OpenBao signed exactly once: for init.
    let signed = bao.approle_responses("pki-reuse", "pki/sign/app");
    assert_eq!(
        signed.len(),
        1,
        "OpenBao should have signed one certificate for role pki-reuse\n{logs}\n{}",
        signed.join("\n")
    );
}

#[test]
fn vault_environment_variables_fill_what_the_config_leaves_out_and_the_config_wins() {
    let bao = OpenBao::shared_tls();
    let ca = bao.ca_file.clone().expect("the TLS server has a CA");

    // No address and no caFile in the config: VAULT_ADDR and VAULT_CACERT supply them.
    let case = Case::new();
    let login = bao.approle(case.path(), "pki-tls-env");
    let mut issuer = bao.issuer(Auth::AppRole(login));
    issuer.ca_file = None;
    let without_address: String = issuer
        .yaml()
        .lines()
        .filter(|l| !l.trim_start().starts_with("address:"))
        .map(|l| format!("{l}\n"))
        .collect();
    common::fixture::Fixture::write_config(&case, &format!("{without_address}{}", web_cert()));
    let with_env = |cmd: &mut std::process::Command| {
        cmd.env("VAULT_ADDR", &bao.addr).env("VAULT_CACERT", &ca);
    };
    let mut check = case.pillion(&["check"]);
    with_env(&mut check);
    let checked = run_bounded(&mut check, COMMAND_DEADLINE);
    checked.assert_success();
    assert!(
        checked
            .stdout
            .contains("(address from $VAULT_ADDR, caFile from $VAULT_CACERT)"),
        "pillion check should say where the values came from\n{}",
        checked.describe()
    );
    let mut init = case.pillion(&["init", "--timeout", INIT_TIMEOUT]);
    with_env(&mut init);
    let ran = run_bounded(&mut init, COMMAND_DEADLINE);
    ran.assert_success();
    let web = case.out.join("web");
    openssl_verify(&bao.root_ca, &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));

    // The config wins: a dead VAULT_ADDR and a VAULT_CACERT that is no CA change nothing.
    let case = Case::new();
    let login = bao.approle(case.path(), "pki-tls-env-config");
    case.write_config(&bao.issuer(Auth::AppRole(login)), &web_cert());
    let mut init = case.pillion(&["init", "--timeout", INIT_TIMEOUT]);
    init.env("VAULT_ADDR", "https://127.0.0.1:1")
        .env("BAO_ADDR", "https://127.0.0.1:1")
        .env("VAULT_CACERT", "/etc/hostname");
    let ran = run_bounded(&mut init, COMMAND_DEADLINE);
    ran.assert_success();
    openssl_verify(&bao.root_ca, &case.out.join("web").join("tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", ctx(&case, &ran, bao)));
}
