//! pillion's `kubernetesCsr` issuer, and OpenBao's kubernetes auth, against a real Kubernetes API
//! server: kube-apiserver and etcd built from source (`scripts/testbed.sh`,
//! `tests/it/common/control_plane.rs`), RBAC from
//! `policies/kubernetes/` enforced by the real authorizer, a service-account token from the
//! TokenRequest API, and a small test signer that approves each request through the approval
//! subresource (as `kubectl certificate approve` does) and writes `status.certificate` through
//! the status subresource (as a signer controller does). OpenBao checks pillion's service-account
//! token (from the TokenRequest API, for OpenBao's audience) with the real TokenReview, and
//! refuses it once the account is deleted. A cert-manager CertificateRequest is validated by
//! cert-manager's real CRDs and issued by a test issuer (cert-manager's controller is a module the
//! Go module proxy does not serve). A denied request, one never approved and one approved
//! but never signed each reach the user with their own words; a watch survives the API server
//! being killed and started again.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::control_plane::ControlPlane;
use common::fixture::Fixture;
use common::kube_case::base64_decode;
use common::*;
use serde_json::{json, Value};

const SIGNER: &str = "example.com/pillion-test";
const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

/// What the test signer does with each request for [`SIGNER`].
#[derive(Clone, Copy, PartialEq)]
enum Signer {
    /// Approves and signs.
    Signs,
    /// Approves, never signs.
    ApprovesOnly,
    /// Denies.
    Denies,
    /// Approves, then fails it (a `Failed` condition, as a signer that cannot sign sets).
    Fails,
}

/// The test signer: approves every CSR for [`SIGNER`] and signs it with the cluster CA, until
/// `stop`. Conflicts (the object changed meanwhile) are retried at the next look.
fn sign_until(plane: &ControlPlane, stop: &AtomicBool) {
    act_until(plane, stop, Signer::Signs)
}

/// The test signer doing `mode`, until `stop`.
fn act_until(plane: &ControlPlane, stop: &AtomicBool, mode: Signer) {
    while !stop.load(Ordering::Relaxed) {
        let list = plane.admin("GET", CSRS, None).unwrap_or_default();
        for mut csr in list["items"].as_array().cloned().unwrap_or_default() {
            if csr["spec"]["signerName"] != SIGNER {
                continue;
            }
            let name = csr["metadata"]["name"].as_str().unwrap().to_owned();
            let conditions = csr["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if conditions.is_empty() {
                csr["status"]["conditions"] = match mode {
                    Signer::Denies => json!([{
                        "type": "Denied", "status": "True", "reason": "TestPolicy",
                        "message": "this test denies every request",
                    }]),
                    _ => json!([{
                        "type": "Approved", "status": "True", "reason": "KubectlApprove",
                        "message": "approved by the pillion test signer",
                    }]),
                };
                let _ = plane.admin("PUT", &format!("{CSRS}/{name}/approval"), Some(&csr));
                continue;
            }
            if mode == Signer::Fails && !conditions.iter().any(|c| c["type"] == "Failed") {
                let mut conditions = conditions;
                conditions.push(json!({
                    "type": "Failed", "status": "True", "reason": "SignerUnavailable",
                    "message": "the test signer cannot sign this",
                }));
                csr["status"]["conditions"] = Value::Array(conditions);
                let _ = plane.admin("PUT", &format!("{CSRS}/{name}/status"), Some(&csr));
                continue;
            }
            if csr["status"]["certificate"].is_string() || mode != Signer::Signs {
                continue;
            }
            let request = base64_decode(csr["spec"]["request"].as_str().unwrap());
            csr["status"]["certificate"] = Value::String(plane.sign(&request));
            let _ = plane.admin("PUT", &format!("{CSRS}/{name}/status"), Some(&csr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn csr_config(plane: &ControlPlane, kubeconfig: &Path) -> String {
    format!(
        "issuers:\n  cluster:\n    kubernetesCsr:\n      signerName: {SIGNER}\n      caFile: \"{}\"\n      kubeconfig: \"{}\"\n      timeout: 60s\ncertificates:\n  - name: web\n    dnsNames: [web.default.svc]\n    duration: 1h\n",
        plane.ca_cert.display(),
        kubeconfig.display()
    )
}

#[test]
fn a_csr_is_approved_and_signed_through_the_real_api_server_and_published() {
    let plane = ControlPlane::start();
    let (fx, ran) = init_with_signer(&plane, Some(Signer::Signs), "60s");
    let ctx = || {
        format!(
            "{}\n{}\n{}",
            ran.describe(),
            fx.describe(),
            plane.describe()
        )
    };
    assert!(ran.status.success(), "{}", ctx());
    let crt = fx.out.join("web/tls.crt");
    openssl_verify(&plane.ca_cert, &crt).unwrap_or_else(|e| panic!("{e}\n{}", ctx()));
    assert!(san_text(&crt).contains("DNS:web.default.svc"), "{}", ctx());
    // pillion deleted its request once it had the certificate.
    let left = plane.admin("GET", CSRS, None).unwrap();
    let ours: Vec<&Value> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["spec"]["signerName"] == SIGNER)
        .collect();
    assert!(ours.is_empty(), "left behind: {ours:?}\n{}", ctx());
}

#[test]
fn without_the_rbac_of_policies_the_real_authorizer_refuses_in_its_own_words() {
    let plane = ControlPlane::start();
    let kubeconfig = plane.service_account_kubeconfig("default", "nobody");
    let fx = Fixture::new();
    fx.write_config(&csr_config(&plane, &kubeconfig));
    let ran = fx.init("20s");
    let ctx = || format!("{}\n{}", ran.describe(), plane.describe());
    assert!(!ran.status.success(), "{}", ctx());
    let expected = "User \"system:serviceaccount:default:nobody\" cannot create resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster scope";
    assert!(ran.stderr.contains(expected), "{expected}\n{}", ctx());
}

#[test]
fn openbao_reviews_a_real_service_account_token_with_the_real_api_server() {
    use common::control_plane::ISSUER;
    use common::openbao::{cert_yaml, Case, OpenBao};
    let plane = ControlPlane::start();
    // OpenBao's reviewer may create TokenReviews (system:auth-delegator); the pod's account may not.
    plane.create(&[
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "shop"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bao-reviewer", "namespace": "default"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "bao-reviewer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"kind": "ServiceAccount", "name": "bao-reviewer", "namespace": "default"}]}),
    ]);
    let reviewer = plane.token("default", "bao-reviewer", ISSUER);
    // The pod's token, for the audience the role demands, from the TokenRequest API.
    let jwt = plane.token("shop", "web", "vault");

    let bao = OpenBao::shared();
    let mount = format!("k8s-real-{}", plane.port);
    bao.bao_ok([
        "auth".to_string(),
        "enable".into(),
        format!("-path={mount}"),
        "kubernetes".into(),
    ]);
    bao.bao_ok([
        "write".to_string(),
        format!("auth/{mount}/config"),
        format!("kubernetes_host=https://127.0.0.1:{}", plane.port),
        format!("kubernetes_ca_cert=@{}", plane.ca_cert.display()),
        format!("token_reviewer_jwt={reviewer}"),
    ]);
    bao.bao_ok([
        "write".to_string(),
        format!("auth/{mount}/role/web"),
        "bound_service_account_names=web".into(),
        "bound_service_account_namespaces=shop".into(),
        "audience=vault".into(),
        "token_policies=pillion".into(),
        "token_no_default_policy=true".into(),
        "token_ttl=1h".into(),
    ]);
    let case = Case::new();
    let token_file = write(case.path(), "sa.token", &jwt);
    std::fs::write(
        &case.config,
        format!(
            "outputDir: \"{}\"\nissuers:\n  bao:\n    vault:\n      address: \"{}\"\n      timeout: 10s\n      auth:\n        kubernetes: {{role: web, tokenFile: \"{}\", mount: {mount}}}\n      pki:\n        mount: pki\n        role: app\ncertificates:\n{}",
            case.out.display(),
            bao.addr,
            token_file.display(),
            cert_yaml("web", "1h")
        ),
    )
    .unwrap();
    let ran = case.init("30s");
    let ctx = || {
        format!(
            "{}\n{}\n{}\n{}",
            case.describe(),
            ran.describe(),
            bao.describe(),
            plane.describe()
        )
    };
    assert!(ran.status.success(), "{}", ctx());
    openssl_verify(&bao.root_ca, &case.out.join("web/tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", ctx()));

    // The service account deleted, its token (still unexpired, still signed by the cluster's key)
    // fails the real TokenReview, and OpenBao refuses the login.
    plane
        .admin(
            "DELETE",
            "/api/v1/namespaces/shop/serviceaccounts/web",
            None,
        )
        .unwrap();
    // The API server learns of the deletion through its informer: wait until its own
    // TokenReview says so.
    wait_for(
        "the API server to stop authenticating the deleted account's token",
        Duration::from_secs(30),
        || {
            plane
            .admin(
                "POST",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                Some(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": jwt, "audiences": ["vault"]}})),
            )
            .is_ok_and(|r| r["status"]["authenticated"] != true)
        },
    );
    std::fs::remove_dir_all(&case.out).unwrap();
    let ran = case.init("5s");
    let ctx = || format!("{}\n{}", ran.describe(), bao.describe());
    assert_eq!(ran.code(), Some(1), "{}", ctx());
    assert!(
        ran.stderr.contains("Vault answered 403 Forbidden"),
        "{}",
        ctx()
    );
}

/// Runs `pillion init` (with `timeout`) against `plane` as the service account with the shipped
/// RBAC, while the test signer does `mode`.
fn init_with_signer(plane: &ControlPlane, mode: Option<Signer>, timeout: &str) -> (Fixture, Ran) {
    plane.apply_policy("policies/kubernetes/csr-requester.yaml");
    let kubeconfig = plane.service_account_kubeconfig("default", "app");
    let fx = Fixture::new();
    fx.write_config(&csr_config(plane, &kubeconfig));
    let ran = init_beside(&fx, timeout, |stop| {
        if let Some(mode) = mode {
            act_until(plane, stop, mode)
        }
    });
    (fx, ran)
}

/// `pillion init` with `timeout`, while `worker` (a test signer) runs on another thread until
/// told to stop.
fn init_beside(fx: &Fixture, timeout: &str, worker: impl FnOnce(&AtomicBool) + Send) -> Ran {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| worker(&stop));
        let ran = fx.init(timeout);
        stop.store(true, Ordering::Relaxed);
        ran
    })
}

#[test]
fn denied_failed_never_approved_and_never_signed_are_told_apart_by_the_real_api_server() {
    let plane = ControlPlane::start();
    let (fx, ran) = init_with_signer(&plane, Some(Signer::Denies), "6s");
    let ctx = || {
        format!(
            "{}\n{}\n{}",
            ran.describe(),
            fx.describe(),
            plane.describe()
        )
    };
    assert!(!ran.status.success(), "{}", ctx());
    assert!(
        ran.stderr
            .contains("was denied (TestPolicy): this test denies every request"),
        "{}",
        ctx()
    );

    let (fx, ran) = init_with_signer(&plane, Some(Signer::Fails), "6s");
    let ctx = || format!("{}\n{}", ran.describe(), fx.describe());
    assert!(!ran.status.success(), "{}", ctx());
    assert!(
        ran.stderr
            .contains("failed (SignerUnavailable): the test signer cannot sign this"),
        "{}",
        ctx()
    );

    let (fx, ran) = init_with_signer(&plane, None, "6s");
    let ctx = || format!("{}\n{}", ran.describe(), fx.describe());
    assert!(!ran.status.success(), "{}", ctx());
    assert!(
        ran.stderr
            .contains("not approved: approve it (kubectl certificate approve"),
        "{}",
        ctx()
    );

    let (fx, ran) = init_with_signer(&plane, Some(Signer::ApprovesOnly), "6s");
    let ctx = || format!("{}\n{}", ran.describe(), fx.describe());
    assert!(!ran.status.success(), "{}", ctx());
    assert!(
        ran.stderr.contains(&format!(
            "approved but not signed: is a signer for {SIGNER} running?"
        )),
        "{}",
        ctx()
    );
}

#[test]
fn a_watch_resumes_across_an_api_server_restart() {
    let plane = ControlPlane::start();
    plane.apply_policy("policies/kubernetes/csr-requester.yaml");
    let kubeconfig = plane.service_account_kubeconfig("default", "app");
    let fx = Fixture::new();
    fx.write_config(&csr_config(&plane, &kubeconfig));
    let stop = AtomicBool::new(false);
    let daemon = fx.run();
    // pillion's request is there and watched; the API server goes away and comes back (etcd
    // keeps the request), then the signer answers.
    wait_for_ctx(
        "pillion's request",
        Duration::from_secs(30),
        || daemon.describe(),
        || {
            plane
                .admin("GET", CSRS, None)
                .is_ok_and(|l| l["items"].as_array().is_some_and(|i| !i.is_empty()))
        },
    );
    plane.restart_apiserver();
    std::thread::scope(|s| {
        s.spawn(|| sign_until(&plane, &stop));
        let crt = fx.out.join("web/tls.crt");
        wait_for_ctx(
            "the certificate after the restart",
            Duration::from_secs(60),
            || {
                format!(
                    "{}\n{}\n{}",
                    fx.describe(),
                    daemon.describe(),
                    plane.describe()
                )
            },
            || crt.exists(),
        );
        stop.store(true, Ordering::Relaxed);
    });
    openssl_verify(&plane.ca_cert, &fx.out.join("web/tls.crt")).unwrap();
    assert!(daemon.stop().success());
}

const CERTIFICATE_REQUESTS: &str =
    "/apis/cert-manager.io/v1/namespaces/default/certificaterequests";

/// A test issuer for cert-manager's CertificateRequests (cert-manager's own controller is not
/// served by the Go module proxy): approves each request for the ClusterIssuer `test-ca`
/// through the status subresource, as cert-manager's approver does, then signs it with the
/// cluster CA and marks it Ready with `status.certificate` and `status.ca`, until `stop`.
fn issue_until(plane: &ControlPlane, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let list = plane
            .admin("GET", CERTIFICATE_REQUESTS, None)
            .unwrap_or_default();
        for mut cr in list["items"].as_array().cloned().unwrap_or_default() {
            if cr["spec"]["issuerRef"]["name"] != "test-ca" {
                continue;
            }
            let name = cr["metadata"]["name"].as_str().unwrap().to_owned();
            let status_path = format!("{CERTIFICATE_REQUESTS}/{name}/status");
            let conditions = cr["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let now = "2026-01-01T00:00:00Z";
            if !conditions.iter().any(|c| c["type"] == "Approved") {
                cr["status"]["conditions"] = json!([{
                    "type": "Approved", "status": "True", "reason": "cert-manager.io",
                    "message": "approved by the pillion test issuer", "lastTransitionTime": now,
                }]);
                let _ = plane.admin("PUT", &status_path, Some(&cr));
                continue;
            }
            if cr["status"]["certificate"].is_string() {
                continue;
            }
            let request = base64_decode(cr["spec"]["request"].as_str().unwrap());
            let certificate = plane.sign(&request);
            let mut conditions = conditions;
            conditions.push(json!({
                "type": "Ready", "status": "True", "reason": "Issued",
                "message": "signed by the pillion test issuer", "lastTransitionTime": now,
            }));
            cr["status"]["conditions"] = Value::Array(conditions);
            cr["status"]["certificate"] = Value::String(certificate);
            cr["status"]["ca"] = Value::String(plane.ca_b64());
            let _ = plane.admin("PUT", &status_path, Some(&cr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_cert_manager_certificate_request_is_validated_by_the_real_crds_and_issued() {
    let plane = ControlPlane::start();
    plane.install_cert_manager_crds();
    plane.apply_policy("policies/kubernetes/cert-manager-requester.yaml");
    let kubeconfig = plane.service_account_kubeconfig("default", "app");
    let fx = Fixture::new();
    fx.write_config(&format!(
        "issuers:\n  mesh:\n    certManager:\n      issuerRef: {{name: test-ca, kind: ClusterIssuer}}\n      namespace: default\n      kubeconfig: \"{}\"\n      timeout: 60s\ncertificates:\n  - name: web\n    dnsNames: [web.default.svc]\n    duration: 1h\n",
        kubeconfig.display()
    ));
    let ran = init_beside(&fx, "60s", |stop| issue_until(&plane, stop));
    let ctx = || {
        format!(
            "{}\n{}\n{}",
            ran.describe(),
            fx.describe(),
            plane.describe()
        )
    };
    assert!(ran.status.success(), "{}", ctx());
    let web = fx.out.join("web");
    openssl_verify(&web.join("ca.crt"), &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", ctx()));
    assert_eq!(
        std::fs::read(web.join("ca.crt")).unwrap(),
        std::fs::read(&plane.ca_cert).unwrap(),
        "ca.crt is status.ca\n{}",
        ctx()
    );
    // pillion deleted its request afterwards.
    let left = plane.admin("GET", CERTIFICATE_REQUESTS, None).unwrap();
    assert_eq!(left["items"], json!([]), "{}", ctx());
}
