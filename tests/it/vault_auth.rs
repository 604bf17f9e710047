//! Logging in to a real OpenBao: a token file, AppRole and JWT each get a certificate; a wrong
//! secret-id or a JWT for another audience fail with OpenBao's own words; a token revoked under
//! pillion's feet is replaced by a new login; a short-lived token is renewed.
//!
//! Every login is bound to the shipped policy alone (`policies/vault/pillion.hcl`, without
//! `default`), and OpenBao's audit log says which login made which request.

use crate::common;

use std::time::Duration;

use common::openbao::*;
use common::*;
use rustix::process::Signal;

const INIT_TIMEOUT: &str = "30s";

/// Bound for a daemon to get to a state (a certificate, a renewal, a re-login).
const DEADLINE: Duration = Duration::from_secs(60);

fn web_cert() -> String {
    format!("certificates:\n{}", cert_yaml("web", "1h"))
}

/// The certificate in `case`'s `web` dir chains to OpenBao's root and matches its key.
fn assert_verified(case: &Case, bao: &OpenBao, context: &dyn Fn() -> String) {
    let web = case.out.join("web");
    openssl_verify(&bao.root_ca, &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    openssl_verify(&web.join("ca.crt"), &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    key_pair_check(&web.join("tls.crt"), &web.join("tls.key"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
}

#[test]
fn token_auth_uses_the_token_from_the_file_to_get_a_certificate() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let file = bao.token_file(case.path(), "auth-token");
    case.write_config(&bao.issuer(Auth::Token { file }), &web_cert());

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    assert_verified(&case, bao, &|| ctx(&case, &ran, bao));
    // OpenBao saw the sign request made with exactly that token (its metadata names it).
    let signed = bao.audit_entries(
        "response",
        &[
            "\"pillion_test\":\"auth-token\"",
            "\"path\":\"pki/sign/app\"",
        ],
    );
    assert!(
        !signed.is_empty(),
        "OpenBao's audit log shows no pki/sign/app request made with the token from the file\n{}",
        ctx(&case, &ran, bao)
    );
}

#[test]
fn approle_auth_logs_in_and_gets_a_certificate() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let login = bao.approle(case.path(), "auth-approle");
    case.write_config(&bao.issuer(Auth::AppRole(login)), &web_cert());

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    assert_verified(&case, bao, &|| ctx(&case, &ran, bao));
    assert_eq!(
        bao.approle_responses("auth-approle", "auth/approle/login")
            .len(),
        1,
        "OpenBao should have seen one AppRole login for role auth-approle\n{}",
        ctx(&case, &ran, bao)
    );
    assert!(
        !bao.approle_responses("auth-approle", "pki/sign/app")
            .is_empty(),
        "OpenBao's audit log shows no pki/sign/app request from the AppRole token\n{}",
        ctx(&case, &ran, bao)
    );
}

#[test]
fn jwt_auth_logs_in_and_gets_a_certificate() {
    let bao = OpenBao::shared();
    let case = Case::new();
    bao.jwt_role("auth-jwt", "pillion-tests");
    let token_file = bao.jwt_file(
        case.path(),
        "web",
        "system:serviceaccount:app:web",
        "pillion-tests",
    );
    case.write_config(
        &bao.issuer(Auth::Jwt {
            role: "auth-jwt".into(),
            token_file,
        }),
        &web_cert(),
    );

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    assert_verified(&case, bao, &|| ctx(&case, &ran, bao));
    // The JWT method names the role in the token's metadata (`role`).
    let logins = bao.audit_entries(
        "response",
        &["\"path\":\"auth/jwt/login\"", "\"role\":\"auth-jwt\""],
    );
    assert!(
        logins.iter().any(|l| OpenBao::audit_error(l).is_none()),
        "OpenBao should have accepted a JWT login for role auth-jwt:\n{}\n{}",
        logins.join("\n"),
        ctx(&case, &ran, bao)
    );
    assert!(
        !bao.audit_entries(
            "response",
            &["\"role\":\"auth-jwt\"", "\"path\":\"pki/sign/app\""]
        )
        .is_empty(),
        "OpenBao's audit log shows no pki/sign/app request from the JWT login\n{}",
        ctx(&case, &ran, bao)
    );
}

#[test]
fn approle_with_a_wrong_secret_id_fails_init_with_openbaos_message() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let mut login = bao.approle(case.path(), "auth-bad-secret");
    login.secret_id_file = write(
        case.path(),
        "wrong.secret-id",
        "00000000-1111-2222-3333-444444444444",
    );
    let role_id = std::fs::read_to_string(&login.role_id_file).expect("read role-id");
    case.write_config(&bao.issuer(Auth::AppRole(login)), &web_cert());

    let ran = case.init("5s");
    assert_eq!(
        ran.code(),
        Some(1),
        "init should fail with a wrong secret-id\n{}",
        ctx(&case, &ran, bao)
    );
    // What OpenBao answered, from its own log, is what pillion must show.
    let refused = bao.audit_entries(
        "response",
        &[
            "\"path\":\"auth/approle/login\"",
            &format!("\"role_id\":\"{}\"", role_id.trim()),
        ],
    );
    let error = refused
        .iter()
        .find_map(|l| OpenBao::audit_error(l))
        .unwrap_or_else(|| {
            panic!(
                "OpenBao's audit log shows no refused login for this role-id:\n{}\n{}",
                refused.join("\n"),
                ctx(&case, &ran, bao)
            )
        });
    assert!(
        ran.stderr.contains(&error) && ran.stderr.contains("auth/approle/login"),
        "stderr should carry OpenBao's answer {error:?} to auth/approle/login\n{}",
        ctx(&case, &ran, bao)
    );
    assert!(
        files_under(&case.out).is_empty(),
        "nothing may be written\n{}",
        ctx(&case, &ran, bao)
    );
    assert!(
        !case.out.join("web").exists(),
        "a first issuance that failed leaves no directory behind\n{}",
        ctx(&case, &ran, bao)
    );
}

/// While the AppRole secret is wrong, the certificates of one issuer share one login attempt
/// and its backoff: OpenBao locks a role out after repeated failures (and the lock outlasts
/// fixing the secret), so five certificates must not mean five logins per round.
#[test]
fn a_failing_login_is_tried_once_per_issuer_and_backs_off() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let mut login = bao.approle(case.path(), "auth-one-login");
    login.secret_id_file = write(
        case.path(),
        "wrong.secret-id",
        "00000000-1111-2222-3333-555555555555",
    );
    let role_id = std::fs::read_to_string(&login.role_id_file).expect("read role-id");
    let certs: String = (0..5)
        .map(|i| cert_yaml(&format!("web{i}"), "1h"))
        .collect();
    case.write_config(
        &bao.issuer(Auth::AppRole(login)),
        &format!("certificates:\n{certs}"),
    );

    let ran = case.init("4s");
    assert_eq!(ran.code(), Some(1), "{}", ctx(&case, &ran, bao));
    let logins = bao.audit_entries(
        "response",
        &[
            "\"path\":\"auth/approle/login\"",
            &format!("\"role_id\":\"{}\"", role_id.trim()),
        ],
    );
    // Backoff from 1 s, doubling, with up to 100% jitter: in 4 s at most
    // three logins (at 0 s, 1-2 s and 3-4 s), where one login per
    // certificate per attempt made five in the first round alone.
    assert!(
        (1..=3).contains(&logins.len()),
        "{} logins to OpenBao in 4 s for 5 certificates of one issuer\n{}",
        logins.len(),
        ctx(&case, &ran, bao)
    );
    assert!(
        ran.stderr.contains("not logging in to Vault again for"),
        "the certificates that waited say why\n{}",
        ctx(&case, &ran, bao)
    );
}

#[test]
fn jwt_for_another_audience_fails_init_with_openbaos_message() {
    let bao = OpenBao::shared();
    let case = Case::new();
    bao.jwt_role("auth-jwt-aud", "pillion-tests");
    let token_file = bao.jwt_file(
        case.path(),
        "web",
        "system:serviceaccount:app:web",
        "someone-else",
    );
    case.write_config(
        &bao.issuer(Auth::Jwt {
            role: "auth-jwt-aud".into(),
            token_file,
        }),
        &web_cert(),
    );

    let ran = case.init("5s");
    assert_eq!(
        ran.code(),
        Some(1),
        "init should fail with a JWT for another audience\n{}",
        ctx(&case, &ran, bao)
    );
    let refused = bao.audit_entries(
        "response",
        &["\"path\":\"auth/jwt/login\"", "\"role\":\"auth-jwt-aud\""],
    );
    let error = refused
        .iter()
        .find_map(|l| OpenBao::audit_error(l))
        .unwrap_or_else(|| {
            panic!(
                "OpenBao's audit log shows no refused JWT login for role auth-jwt-aud:\n{}\n{}",
                refused.join("\n"),
                ctx(&case, &ran, bao)
            )
        });
    assert!(
        error.contains("aud"),
        "OpenBao should have refused the audience, not something else: {error:?}"
    );
    assert!(
        ran.stderr.contains(&error) && ran.stderr.contains("auth/jwt/login"),
        "stderr should carry OpenBao's answer {error:?} to auth/jwt/login\n{}",
        ctx(&case, &ran, bao)
    );
    assert!(
        files_under(&case.out).is_empty(),
        "nothing may be written\n{}",
        ctx(&case, &ran, bao)
    );
    assert!(
        !case.out.join("web").exists(),
        "a first issuance that failed leaves no directory behind\n{}",
        ctx(&case, &ran, bao)
    );
}

#[test]
fn a_revoked_token_is_replaced_by_a_new_login_and_the_next_renewal_succeeds() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let login = bao.approle(case.path(), "auth-revoke");
    case.write_config(&bao.issuer(Auth::AppRole(login)), &web_cert());
    let crt = case.out.join("web/tls.crt");

    let daemon = case.run();
    let context = || {
        format!(
            "{}\n{}\n{}",
            case.describe(),
            daemon.describe(),
            bao.describe()
        )
    };
    wait_for_ctx("the first certificate", DEADLINE, context, || {
        serial_fast(&crt).is_some()
    });
    let first = serial(&crt);

    // Revoke the token pillion holds, the way an operator would: by its accessor.
    let accessors = bao.token_accessors_with_meta("role_name", "auth-revoke");
    assert_eq!(
        accessors.len(),
        1,
        "pillion should hold exactly one token of role auth-revoke: {accessors:?}\n{}",
        context()
    );
    bao.revoke_accessor(&accessors[0]);
    assert!(
        !bao.bao(["token", "lookup", "-accessor", &accessors[0]])
            .status
            .success(),
        "the token should be gone after the revocation"
    );

    daemon.signal(Signal::USR1);
    wait_for_ctx("a renewed certificate", DEADLINE, context, || {
        serial_fast(&crt).is_some_and(|s| s != first)
    });
    assert_verified(&case, bao, &context);
    let logins = bao.approle_responses("auth-revoke", "auth/approle/login");
    assert!(
        logins.len() >= 2,
        "pillion should have logged in again after the revocation; OpenBao saw {} login(s)\n{}",
        logins.len(),
        context()
    );
    let now_held = bao.token_accessors_with_meta("role_name", "auth-revoke");
    assert!(
        !now_held.is_empty() && !now_held.contains(&accessors[0]),
        "pillion should now hold a new token: {now_held:?}\n{}",
        context()
    );
    assert!(daemon.stop().success(), "pillion should exit 0 on SIGTERM");
}

#[test]
fn a_short_lived_token_from_a_file_is_renewed_and_keeps_working() {
    let bao = OpenBao::shared();
    let case = Case::new();
    // A 6s token, renewable for an hour. pillion cannot log in again with it once it has
    // expired (the file holds the same dead token): only renew-self keeps it usable.
    let file = bao.token_file_with(
        case.path(),
        "auth-renew",
        &["-ttl=6s", "-explicit-max-ttl=1h"],
    );
    case.write_config(&bao.issuer(Auth::Token { file }), &web_cert());
    let crt = case.out.join("web/tls.crt");

    let daemon = case.run();
    let context = || {
        format!(
            "{}\n{}\n{}",
            case.describe(),
            daemon.describe(),
            bao.describe()
        )
    };
    wait_for_ctx("the first certificate", DEADLINE, context, || {
        serial_fast(&crt).is_some()
    });
    let first = serial(&crt);

    // OpenBao accepts pillion's renewals, again and again: the token outlives its first 6s.
    let renewed = || {
        bao.audit_entries(
            "response",
            &[
                "\"pillion_test\":\"auth-renew\"",
                "\"path\":\"auth/token/renew-self\"",
            ],
        )
        .into_iter()
        .filter(|l| OpenBao::audit_error(l).is_none())
        .count()
    };
    wait_for_ctx(
        "two successful auth/token/renew-self calls with pillion's token",
        DEADLINE,
        context,
        || renewed() >= 2,
    );

    daemon.signal(Signal::USR1);
    wait_for_ctx("a renewed certificate", DEADLINE, context, || {
        serial_fast(&crt).is_some_and(|s| s != first)
    });
    assert_verified(&case, bao, &context);
    assert!(daemon.stop().success(), "pillion should exit 0 on SIGTERM");
}
