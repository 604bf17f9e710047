//! Logging in to a real OpenBao with its `kubernetes` auth method, OpenBao checking the
//! service-account token with a TokenReview against the fake Kubernetes API server
//! (`kubernetes_host` = the fake, `kubernetes_ca_cert` = its serving CA, `token_reviewer_jwt` =
//! its kubeconfig token). The role is bound to one service account and carries only the shipped
//! policy (`policies/vault/pillion.hcl`); pillion reads a projected token minted by the fake
//! from `tokenFile`, logs in and gets a certificate from the PKI mount. A token of a service
//! account the role does not bind fails init with OpenBao's own words.
//!
//! Assertions are on what the peers saw: the fake's TokenReview log, OpenBao's audit log, openssl.

use crate::common;

use std::ffi::OsStr;

use common::fake_kube::FakeKube;
use common::openbao::*;
use common::*;
use serde_json::json;

const INIT_TIMEOUT: &str = "30s";

/// The audience the role demands and the minted tokens carry.
const AUDIENCE: &str = "vault";

/// Enables the kubernetes auth method at `mount`, pointed at `fake`, with a role `role` bound
/// to service account `shop/web`, whose tokens carry only the `pillion` policy.
fn kubernetes_auth(bao: &OpenBao, fake: &FakeKube, mount: &str, role: &str) {
    bao.bao_ok([
        "auth".to_string(),
        "enable".into(),
        format!("-path={mount}"),
        "kubernetes".into(),
    ]);
    bao.bao_ok([
        "write".to_string(),
        format!("auth/{mount}/config"),
        format!("kubernetes_host={}", fake.server_url()),
        format!("kubernetes_ca_cert=@{}", fake.ca_pem_path().display()),
        format!("token_reviewer_jwt={}", fake.token()),
    ]);
    bao.bao_ok([
        OsStr::new("write"),
        OsStr::new(&format!("auth/{mount}/role/{role}")),
        OsStr::new("bound_service_account_names=web"),
        OsStr::new("bound_service_account_namespaces=shop"),
        OsStr::new(&format!("audience={AUDIENCE}")),
        OsStr::new("token_policies=pillion"),
        OsStr::new("token_no_default_policy=true"),
        OsStr::new("token_ttl=1h"),
    ]);
}

/// The config: the shared OpenBao's `pki` mount, role `app`, logging in with kubernetes auth
/// (`mount` None: pillion's default, `kubernetes`).
fn write_config(
    case: &Case,
    bao: &OpenBao,
    role: &str,
    token_file: &std::path::Path,
    mount: Option<&str>,
) {
    let mount = mount.map(|m| format!(", mount: {m}")).unwrap_or_default();
    let yaml = format!(
        "outputDir: \"{}\"\nissuers:\n  bao:\n    vault:\n      address: \"{}\"\n      timeout: 10s\n      auth:\n        kubernetes: {{role: {role}, tokenFile: \"{}\"{mount}}}\n      pki:\n        mount: pki\n        role: app\ncertificates:\n{}",
        case.out.display(),
        bao.addr,
        token_file.display(),
        cert_yaml("web", "1h")
    );
    std::fs::write(&case.config, yaml).expect("write config");
}

fn ctx(case: &Case, ran: &Ran, bao: &OpenBao, fake: &FakeKube) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        case.describe(),
        ran.describe(),
        bao.describe(),
        fake.describe()
    )
}

#[test]
fn kubernetes_auth_logs_in_with_the_service_account_token_and_gets_a_certificate() {
    let fake = FakeKube::start();
    let bao = OpenBao::shared();
    kubernetes_auth(bao, &fake, "kubernetes", "k8s-web");
    let case = Case::new();
    let jwt = fake.mint_service_account_token("shop", "web", &[AUDIENCE]);
    let token_file = write(case.path(), "sa.token", &jwt);
    write_config(&case, bao, "k8s-web", &token_file, None);

    let ran = case.init(INIT_TIMEOUT);
    let context = || ctx(&case, &ran, bao, &fake);
    assert!(ran.status.success(), "init failed\n{}", context());
    let web = case.out.join("web");
    openssl_verify(&bao.root_ca, &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    openssl_verify(&web.join("ca.crt"), &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    key_pair_check(&web.join("tls.crt"), &web.join("tls.key"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));

    // The API server was asked, by OpenBao as the reviewer, about exactly pillion's token.
    let reviews: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/apis/authentication.k8s.io/v1/tokenreviews")
        .collect();
    assert!(
        !reviews.is_empty(),
        "OpenBao never asked the API server to review the token\n{}",
        context()
    );
    for review in &reviews {
        assert_eq!(
            review.user.as_deref(),
            Some(fake.username()),
            "{}",
            context()
        );
        assert_eq!(review.status, 201, "{}", context());
        let body = review.body.as_ref().expect("a JSON body");
        assert_eq!(body["spec"]["token"], jwt.as_str(), "{}", context());
        assert_eq!(
            body["spec"]["audiences"],
            json!([AUDIENCE]),
            "{}",
            context()
        );
    }

    // OpenBao accepted the login for role k8s-web, and the certificate was signed with the
    // token that login gave (its metadata names the service account).
    let logins: Vec<String> = bao
        .audit_entries(
            "response",
            &["\"path\":\"auth/kubernetes/login\"", "\"role\":\"k8s-web\""],
        )
        .into_iter()
        .filter(|l| OpenBao::audit_error(l).is_none())
        .collect();
    assert_eq!(
        logins.len(),
        1,
        "OpenBao should have seen one successful kubernetes login for role k8s-web\n{}",
        context()
    );
    let signed: Vec<String> = bao
        .audit_entries(
            "response",
            &[
                "\"path\":\"pki/sign/app\"",
                "\"role\":\"k8s-web\"",
                "\"service_account_namespace\":\"shop\"",
                "\"service_account_name\":\"web\"",
            ],
        )
        .into_iter()
        .filter(|l| OpenBao::audit_error(l).is_none())
        .collect();
    assert!(
        !signed.is_empty(),
        "OpenBao's audit log shows no pki/sign/app request made with the kubernetes login's \
         token\n{}",
        context()
    );
}

#[test]
fn a_token_of_a_service_account_the_role_does_not_bind_fails_with_openbaos_message() {
    let fake = FakeKube::start();
    let bao = OpenBao::shared();
    // Its own mount (the other test configures `kubernetes/` for its own fake), which pillion
    // is told about with `mount:`.
    kubernetes_auth(bao, &fake, "k8s-intruder", "k8s-intruder-web");
    let case = Case::new();
    let jwt = fake.mint_service_account_token("shop", "intruder", &[AUDIENCE]);
    let token_file = write(case.path(), "sa.token", &jwt);
    write_config(
        &case,
        bao,
        "k8s-intruder-web",
        &token_file,
        Some("k8s-intruder"),
    );

    let ran = case.init("5s");
    let context = || ctx(&case, &ran, bao, &fake);
    assert_eq!(
        ran.code(),
        Some(1),
        "init should fail with a token of another service account\n{}",
        context()
    );
    let refused = bao.audit_entries(
        "response",
        &[
            "\"path\":\"auth/k8s-intruder/login\"",
            "\"role\":\"k8s-intruder-web\"",
        ],
    );
    let error = refused
        .iter()
        .find_map(|l| OpenBao::audit_error(l))
        .unwrap_or_else(|| {
            panic!(
                "OpenBao's audit log shows no refused login on auth/k8s-intruder:\n{}\n{}",
                refused.join("\n"),
                context()
            )
        });
    eprintln!("OpenBao refused the login with: {error:?}");
    assert!(
        !error.is_empty()
            && ran.stderr.contains(&error)
            && ran.stderr.contains("auth/k8s-intruder/login"),
        "stderr should carry OpenBao's answer {error:?} to auth/k8s-intruder/login\n{}",
        context()
    );
    assert!(
        files_under(&case.out).is_empty(),
        "nothing may be written\n{}",
        context()
    );
}
