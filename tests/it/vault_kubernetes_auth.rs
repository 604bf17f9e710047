//! Logging in to a real OpenBao with its `kubernetes` auth method, OpenBao checking the
//! service-account token with the real TokenReview of a real Kubernetes API server
//! ([`common::control_plane`]; `kubernetes_host` = the API server, `kubernetes_ca_cert` = the
//! cluster CA, `token_reviewer_jwt` = a token of a reviewer account bound to
//! `system:auth-delegator`). The role is bound to one service account and carries only the
//! shipped policy (`policies/vault/pillion.hcl`); pillion reads a projected token from the
//! TokenRequest API (for OpenBao's audience) from `tokenFile`, logs in and gets a certificate
//! from the PKI mount. A token of a service account the role does not bind, and the token of an
//! account since deleted, fail init with OpenBao's own words.
//!
//! Assertions are on what the peers saw: the API server's audit log (the TokenReviews),
//! OpenBao's audit log, openssl.

use crate::common;

use std::ffi::OsStr;
use std::time::Duration;

use common::control_plane::{ControlPlane, Tenant, ISSUER};
use common::openbao::*;
use common::*;
use serde_json::json;

const INIT_TIMEOUT: &str = "30s";

/// The audience the role demands and the minted tokens carry.
const AUDIENCE: &str = "vault";

/// A tenant of the shared control plane with service accounts `web` and `intruder`, and a
/// reviewer account OpenBao reviews tokens as; enables the kubernetes auth method at `mount`,
/// pointed at the API server, with a role `role` bound to `<namespace>/web`, whose tokens carry
/// only the `pillion` policy. Returns the tenant and the reviewer's user name.
fn kubernetes_auth(bao: &OpenBao, mount: &str, role: &str) -> (Tenant<'static>, String) {
    let t = ControlPlane::shared().tenant();
    let ns = t.namespace.clone();
    let account = |name: &str| json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}});
    t.plane.create(&[
        account("web"),
        account("intruder"),
        account("bao-reviewer"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("bao-reviewer-{ns}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"kind": "ServiceAccount", "name": "bao-reviewer", "namespace": ns}]}),
    ]);
    let reviewer = t.plane.token(&ns, "bao-reviewer", ISSUER);
    bao.bao_ok([
        "auth".to_string(),
        "enable".into(),
        format!("-path={mount}"),
        "kubernetes".into(),
    ]);
    bao.bao_ok([
        "write".to_string(),
        format!("auth/{mount}/config"),
        format!("kubernetes_host=https://127.0.0.1:{}", t.plane.port),
        format!("kubernetes_ca_cert=@{}", t.plane.ca_cert.display()),
        format!("token_reviewer_jwt={reviewer}"),
    ]);
    bao.bao_ok([
        OsStr::new("write"),
        OsStr::new(&format!("auth/{mount}/role/{role}")),
        OsStr::new("bound_service_account_names=web"),
        OsStr::new(&format!("bound_service_account_namespaces={ns}")),
        OsStr::new(&format!("audience={AUDIENCE}")),
        OsStr::new("token_policies=pillion"),
        OsStr::new("token_no_default_policy=true"),
        OsStr::new("token_ttl=1h"),
    ]);
    (t, format!("system:serviceaccount:{ns}:bao-reviewer"))
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

fn ctx(case: &Case, ran: &Ran, bao: &OpenBao, t: &Tenant) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        case.describe(),
        ran.describe(),
        bao.describe(),
        t.describe()
    )
}

#[test]
fn kubernetes_auth_logs_in_with_the_service_account_token_and_gets_a_certificate() {
    let bao = OpenBao::shared();
    let (t, reviewer) = kubernetes_auth(bao, "kubernetes", "k8s-web");
    let case = Case::new();
    // The pod's projected token, for OpenBao's audience, from the TokenRequest API.
    let jwt = t.plane.token(&t.namespace, "web", AUDIENCE);
    let token_file = write(case.path(), "sa.token", &jwt);
    write_config(&case, bao, "k8s-web", &token_file, None);

    let ran = case.init(INIT_TIMEOUT);
    let context = || ctx(&case, &ran, bao, &t);
    assert!(ran.status.success(), "init failed\n{}", context());
    let web = case.out.join("web");
    openssl_verify(&bao.root_ca, &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    openssl_verify(&web.join("ca.crt"), &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    key_pair_check(&web.join("tls.crt"), &web.join("tls.key"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));

    // The API server was asked, by OpenBao as the reviewer, about exactly pillion's token.
    let review_events = t.plane.audit_events(&reviewer);
    let reviews: Vec<_> = review_events
        .iter()
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["verb"] == "create"
                && e["objectRef"]["resource"] == "tokenreviews"
        })
        .collect();
    assert!(
        !reviews.is_empty(),
        "OpenBao never asked the API server to review the token\n{}",
        context()
    );
    for review in &reviews {
        assert_eq!(review["responseStatus"]["code"], 201, "{}", context());
        assert_eq!(
            review["requestObject"]["spec"]["token"],
            jwt.as_str(),
            "{}",
            context()
        );
        assert_eq!(
            review["requestObject"]["spec"]["audiences"],
            json!([AUDIENCE]),
            "{}",
            context()
        );
        assert_eq!(
            review["responseObject"]["status"]["authenticated"],
            true,
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
                &format!("\"service_account_namespace\":\"{}\"", t.namespace),
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
    let bao = OpenBao::shared();
    // Its own mount (the other test configures `kubernetes/` for its own tenant), which pillion
    // is told about with `mount:`.
    let (t, _) = kubernetes_auth(bao, "k8s-intruder", "k8s-intruder-web");
    let case = Case::new();
    let jwt = t.plane.token(&t.namespace, "intruder", AUDIENCE);
    let token_file = write(case.path(), "sa.token", &jwt);
    write_config(
        &case,
        bao,
        "k8s-intruder-web",
        &token_file,
        Some("k8s-intruder"),
    );

    let ran = case.init("5s");
    let context = || ctx(&case, &ran, bao, &t);
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

#[test]
fn the_token_of_a_deleted_service_account_fails_the_real_token_review() {
    let bao = OpenBao::shared();
    let (t, _) = kubernetes_auth(bao, "k8s-deleted", "k8s-deleted-web");
    let case = Case::new();
    let jwt = t.plane.token(&t.namespace, "web", AUDIENCE);
    let token_file = write(case.path(), "sa.token", &jwt);
    write_config(
        &case,
        bao,
        "k8s-deleted-web",
        &token_file,
        Some("k8s-deleted"),
    );
    let ran = case.init(INIT_TIMEOUT);
    let context = || ctx(&case, &ran, bao, &t);
    assert!(ran.status.success(), "init failed\n{}", context());

    // The account deleted, its token (unexpired, signed by the cluster's key) fails the real
    // TokenReview, and OpenBao refuses the login.
    t.plane
        .admin(
            "DELETE",
            &format!("/api/v1/namespaces/{}/serviceaccounts/web", t.namespace),
            None,
        )
        .unwrap();
    // The API server learns of the deletion through its informer: wait until its own
    // TokenReview says so.
    wait_for(
        "the API server to stop authenticating the deleted account's token",
        Duration::from_secs(30),
        || {
            t.plane
                .admin(
                    "POST",
                    "/apis/authentication.k8s.io/v1/tokenreviews",
                    Some(
                        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                        "spec": {"token": jwt, "audiences": [AUDIENCE]}}),
                    ),
                )
                .is_ok_and(|r| r["status"]["authenticated"] != true)
        },
    );
    std::fs::remove_dir_all(&case.out).unwrap();
    let ran = case.init("5s");
    let context = || ctx(&case, &ran, bao, &t);
    assert_eq!(ran.code(), Some(1), "{}", context());
    assert!(
        ran.stderr.contains("Vault answered 403 Forbidden")
            && ran.stderr.contains("auth/k8s-deleted/login"),
        "{}",
        context()
    );
    assert!(
        files_under(&case.out).is_empty(),
        "nothing may be written\n{}",
        context()
    );
}
