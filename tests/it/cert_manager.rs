//! The `certManager` issuer against a real Kubernetes API server with cert-manager's real CRDs
//! (their schema validates what pillion creates), RBAC from `policies/kubernetes/` enforced by
//! the real authorizer, and a test issuer ([`common::test_signers`]) in place of cert-manager's
//! controller, which the Go module proxy does not serve: it approves, then fills
//! `status.certificate`, `status.ca` and the Ready condition, or refuses as cert-manager does.
//! What pillion created (issuerRef, duration, usages, the base64 CSR as openssl reads it, the
//! namespace) and deleted is read from the API server's audit log; the published files verify
//! with `openssl verify` against `status.ca`; cert-manager's refusals (Denied, InvalidRequest,
//! Ready=False/Failed) and RBAC's reach the user in their own words.

use crate::common;

use std::fs;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use common::control_plane::{ControlPlane, Tenant};
use common::kube_case::*;
use common::openbao::files_under;
use common::test_signers::{cert_manager_issuer, Issuer};
use common::*;
use serde_json::{json, Value};

const ISSUER: &str = "ca-issuer";
const REQUESTS: &str = "certificaterequests";

/// How much longer than its `--timeout` an init that cannot finish may take: one issuer
/// attempt already under way (the issuer's own timeout) plus start-up and slack.
const INIT_OVERRUN: Duration = Duration::from_secs(5);

/// The shared control plane, with cert-manager's CRDs.
fn plane() -> &'static ControlPlane {
    static CRDS: Once = Once::new();
    let plane = ControlPlane::shared();
    CRDS.call_once(|| plane.install_cert_manager_crds());
    plane
}

/// A tenant with the shipped RBAC for CertificateRequests in its namespace.
fn requester() -> Tenant<'static> {
    let t = plane().tenant();
    t.apply_policy("policies/kubernetes/cert-manager-requester.yaml");
    t
}

/// `issuers:` with one `certManager` issuer; `extra` lines go inside `certManager:` (indented
/// by the caller with six spaces). No caFile: the trust anchor comes from `status.ca`.
fn issuer_yaml(extra: &str, kubeconfig: Option<&Path>) -> String {
    let mut y = format!("issuers:\n  cm:\n    certManager:\n      timeout: 10s\n{extra}");
    if let Some(kubeconfig) = kubeconfig {
        y.push_str(&format!("      kubeconfig: \"{}\"\n", kubeconfig.display()));
    }
    y
}

/// The issuer `ca-issuer` as a ClusterIssuer, in the tenant's namespace, with explicit usages.
fn explicit_issuer(t: &Tenant) -> String {
    issuer_yaml(
        &format!(
            "      issuerRef: {{name: {ISSUER}, kind: ClusterIssuer, group: cert-manager.io}}\n      namespace: {}\n      usages: [digital signature, key encipherment, server auth]\n",
            t.namespace
        ),
        Some(&t.kubeconfig),
    )
}

fn web_cert(duration: &str) -> String {
    format!(
        "certificates:\n  - name: web\n    commonName: app.example.test\n    dnsNames: [app.example.test, localhost]\n    ipAddresses: [\"127.0.0.1\"]\n    duration: {duration}\n"
    )
}

fn web_names() -> std::collections::BTreeSet<String> {
    names(&[
        "DNS:app.example.test",
        "DNS:localhost",
        "IP Address:127.0.0.1",
    ])
}

fn ctx(case: &KubeCase, ran: &Ran, t: &Tenant) -> String {
    format!("{}\n{}\n{}", case.describe(), ran.describe(), t.describe())
}

/// Every CertificateRequest pillion created is in the tenant's namespace and was deleted
/// through the API; none is left.
fn assert_all_created_deleted(t: &Tenant, context: &dyn Fn() -> String) {
    let events = t.events();
    let created = created(&events, REQUESTS);
    assert!(
        !created.is_empty(),
        "pillion created no CertificateRequest\n{}",
        context()
    );
    for cr in &created {
        assert_eq!(
            str_at(cr, "/metadata/namespace"),
            t.namespace,
            "{}",
            context()
        );
    }
    let name = |o: &Value| str_at(o, "/metadata/name").to_owned();
    let mut created: Vec<String> = created.iter().map(name).collect();
    let mut deleted: Vec<String> = deleted(&events, REQUESTS)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    created.sort();
    deleted.sort();
    assert_eq!(
        deleted,
        created,
        "every CertificateRequest pillion created should have been deleted\n{}",
        context()
    );
    let left = t
        .plane
        .admin(
            "GET",
            &format!(
                "/apis/cert-manager.io/v1/namespaces/{}/{REQUESTS}",
                t.namespace
            ),
            None,
        )
        .unwrap();
    assert_eq!(
        left["items"],
        json!([]),
        "CertificateRequests left behind\n{}",
        context()
    );
}

/// The published files verify against `status.ca` (the cluster CA), and `ca.crt` is exactly
/// that CA.
fn assert_published_verifies(case: &KubeCase, t: &Tenant, context: &dyn Fn() -> String) {
    let web = case.out.join("web");
    assert_atomic_layout(&web, &["tls.crt", "tls.key", "ca.crt"]);
    assert_eq!(
        fs::read(web.join("ca.crt")).expect("read ca.crt"),
        fs::read(&t.plane.ca_cert).unwrap(),
        "ca.crt should be cert-manager's status.ca (the issuing CA)\n{}",
        context()
    );
    openssl_verify(&web.join("ca.crt"), &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("tls.crt does not verify against ca.crt\n{e}\n{}", context()));
    key_pair_check(&web.join("tls.crt"), &web.join("tls.key"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
}

/// The Go duration cert-manager takes (`3600s`, `1h`, `1h0m0s`), in seconds.
fn go_duration_secs(text: &str) -> u64 {
    humantime::parse_duration(text)
        .unwrap_or_else(|e| panic!("spec.duration {text:?} is not a duration: {e}"))
        .as_secs()
}

fn request_text(case: &KubeCase, cr: &Value) -> String {
    let pem = base64_decode(str_at(cr, "/spec/request"));
    assert!(
        String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE REQUEST-----"),
        "spec.request should be a base64 PEM CERTIFICATE REQUEST, is:\n{}",
        String::from_utf8_lossy(&pem)
    );
    openssl_req_text(case.path(), &pem)
}

#[test]
fn a_ready_request_is_published_verifies_and_carried_what_was_asked() {
    let t = requester();
    let issuer = cert_manager_issuer(t.plane, &t.namespace, ISSUER, Issuer::Signs);
    let case = KubeCase::new();
    case.write_config(&format!("{}{}", explicit_issuer(&t), web_cert("1h")));
    let (ran, _) = case.init("30s", &[("POD_NAME", "web-0")]);
    let context = || ctx(&case, &ran, &t);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &t, &context);
    let crt = case.out.join("web/tls.crt");
    assert_eq!(san_entries(&san_text(&crt)), web_names(), "{}", context());
    let (not_before, not_after) = validity(&crt);
    assert_eq!(
        not_after - not_before,
        3600,
        "the issuer honoured the duration pillion asked for\n{}",
        context()
    );
    let events = t.events();
    let created = created(&events, REQUESTS);
    assert_eq!(
        created.len(),
        1,
        "exactly one CertificateRequest\n{}",
        context()
    );
    let cr = &created[0];
    assert_eq!(
        cr["spec"]["issuerRef"],
        json!({"name": ISSUER, "kind": "ClusterIssuer", "group": "cert-manager.io"}),
        "{}",
        context()
    );
    assert_eq!(
        go_duration_secs(str_at(cr, "/spec/duration")),
        3600,
        "{}",
        context()
    );
    assert_eq!(
        cr["spec"]["usages"],
        json!(["digital signature", "key encipherment", "server auth"]),
        "the configured usages\n{}",
        context()
    );
    let labels = &cr["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], json!("pillion"));
    assert_eq!(labels["pillion.dev/credential"], json!("web"));
    assert_eq!(labels["pillion.dev/pod"], json!("web-0"));
    let text = request_text(&case, cr);
    assert_eq!(
        san_entries(&text),
        web_names(),
        "the CSR should ask for exactly the configured names\n{text}\n{}",
        context()
    );
    assert_eq!(subject_line(&text), "CN = app.example.test", "{text}");
    assert_all_created_deleted(&t, &context);
    let (_, deleted_uid) = &deleted(&events, REQUESTS)[0];
    assert_eq!(
        deleted_uid,
        str_at(cr, "/metadata/uid"),
        "the deleted request is the one pillion created\n{}",
        context()
    );
    let issued = issuer.issued();
    assert_eq!(issued.len(), 1, "{}", context());
    assert_eq!(issued[0].0, str_at(cr, "/metadata/name"), "{}", context());
    assert_eq!(
        cert_ders_of(&base64_decode(&issued[0].1)).first(),
        cert_ders_of(&fs::read(&crt).expect("read tls.crt")).first(),
        "tls.crt's leaf should be the certificate the signer put in the request's status\n{}",
        context()
    );
}

#[test]
fn defaults_kind_issuer_group_cert_manager_io_and_the_pods_namespace() {
    let t = requester();
    let _issuer = cert_manager_issuer(t.plane, &t.namespace, ISSUER, Issuer::Signs);
    let case = KubeCase::new();
    // Only the issuer's name; the client finds the cluster through $KUBECONFIG, whose
    // namespace (default) is not the pod's.
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(&format!("      issuerRef: {{name: {ISSUER}}}\n"), None),
        web_cert("2h")
    ));
    let kubeconfig = t.kubeconfig.display().to_string();
    let (ran, _) = case.init(
        "30s",
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("POD_NAMESPACE", t.namespace.as_str()),
        ],
    );
    let context = || ctx(&case, &ran, &t);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &t, &context);
    let events = t.events();
    let created = created(&events, REQUESTS);
    assert_eq!(
        created.len(),
        1,
        "one request, in $POD_NAMESPACE\n{}",
        context()
    );
    let cr = &created[0];
    assert_eq!(
        cr["spec"]["issuerRef"],
        json!({"name": ISSUER, "kind": "Issuer", "group": "cert-manager.io"}),
        "{}",
        context()
    );
    assert_eq!(go_duration_secs(str_at(cr, "/spec/duration")), 7200);
    assert_eq!(
        cr["spec"]["usages"],
        json!(["digital signature", "server auth", "client auth"]),
        "the default usages of an ECDSA TLS certificate\n{}",
        context()
    );
    assert_all_created_deleted(&t, &context);

    // Without $POD_NAMESPACE: the kubeconfig's namespace.
    let t2 = requester();
    let _issuer2 = cert_manager_issuer(t2.plane, &t2.namespace, ISSUER, Issuer::Signs);
    let kubeconfig2 = t2.kubeconfig.with_extension("in-namespace");
    fs::write(
        &kubeconfig2,
        fs::read_to_string(&t2.kubeconfig).unwrap().replace(
            "namespace: default",
            &format!("namespace: {}", t2.namespace),
        ),
    )
    .unwrap();
    let case2 = KubeCase::new();
    case2.write_config(&format!(
        "{}{}",
        issuer_yaml(
            &format!("      issuerRef: {{name: {ISSUER}}}\n"),
            Some(&kubeconfig2)
        ),
        web_cert("2h")
    ));
    let (ran2, _) = case2.init("30s", &[]);
    let context2 = || ctx(&case2, &ran2, &t2);
    assert!(ran2.status.success(), "init failed\n{}", context2());
    assert_all_created_deleted(&t2, &context2);
}

/// `pillion init --timeout 3s` for `web` as the tenant (the issuer's behaviour set by the
/// caller); asserts exit 1 within the bound, nothing written.
fn refused_init(t: &Tenant) -> (KubeCase, Ran) {
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}{}",
        explicit_issuer(t).replace("timeout: 10s", "timeout: 3s"),
        web_cert("1h")
    ));
    let (ran, took) = case.init("3s", &[]);
    let context = || ctx(&case, &ran, t);
    assert_eq!(ran.code(), Some(1), "init should exit 1\n{}", context());
    let bound = Duration::from_secs(3 + 3) + INIT_OVERRUN;
    assert!(
        took <= bound,
        "init --timeout 3s took {took:?} (more than {bound:?})\n{}",
        context()
    );
    assert!(
        files_under(&case.out).is_empty(),
        "nothing may be written\n{}",
        context()
    );
    assert!(
        ran.stderr
            .contains("renewal failed; the files on disk are unchanged"),
        "{}",
        context()
    );
    (case, ran)
}

/// `CertificateRequest <namespace>/<name>` of the (first) request pillion created.
fn first_request(t: &Tenant) -> String {
    format!(
        "CertificateRequest {}/{}",
        t.namespace,
        str_at(&created(&t.events(), REQUESTS)[0], "/metadata/name")
    )
}

#[test]
fn a_denied_request_fails_init_with_cert_managers_reason_and_message() {
    let t = requester();
    let _issuer = cert_manager_issuer(
        t.plane,
        &t.namespace,
        ISSUER,
        Issuer::Denies(
            "policy.cert-manager.io",
            "No policy approved this request: [pillion-web: dnsNames not allowed]",
        ),
    );
    let (case, ran) = refused_init(&t);
    let context = || ctx(&case, &ran, &t);
    let want = format!(
        "{} was denied (policy.cert-manager.io): No policy approved this request: [pillion-web: dnsNames not allowed]",
        first_request(&t)
    );
    assert!(
        ran.stderr.contains(&want),
        "stderr should say {want:?}\n{}",
        context()
    );
    assert_all_created_deleted(&t, &context);
}

#[test]
fn an_invalid_request_fails_init_with_cert_managers_reason_and_message() {
    let t = requester();
    let _issuer = cert_manager_issuer(
        t.plane,
        &t.namespace,
        ISSUER,
        Issuer::Invalid("BadConfig", "the CSR names a forbidden domain"),
    );
    let (case, ran) = refused_init(&t);
    let context = || ctx(&case, &ran, &t);
    let want = format!(
        "{} failed (InvalidRequest: BadConfig): the CSR names a forbidden domain",
        first_request(&t)
    );
    assert!(
        ran.stderr.contains(&want),
        "stderr should say {want:?}\n{}",
        context()
    );
    assert_all_created_deleted(&t, &context);
}

#[test]
fn a_failed_request_fails_init_with_cert_managers_reason_and_message() {
    let t = requester();
    let _issuer = cert_manager_issuer(
        t.plane,
        &t.namespace,
        ISSUER,
        Issuer::Fails("issuer ca-issuer is not ready: secret \"ca-key-pair\" not found"),
    );
    let (case, ran) = refused_init(&t);
    let context = || ctx(&case, &ran, &t);
    let want = format!(
        "{} failed (Failed): issuer ca-issuer is not ready: secret \"ca-key-pair\" not found",
        first_request(&t)
    );
    assert!(
        ran.stderr.contains(&want),
        "stderr should say {want:?}\n{}",
        context()
    );
    assert_all_created_deleted(&t, &context);
}

#[test]
fn rbac_forbidding_create_names_the_resource_the_namespace_and_the_policies() {
    // No RBAC at all: the real authorizer refuses.
    let t = plane().tenant();
    let (case, ran) = refused_init(&t);
    let context = || ctx(&case, &ran, &t);
    let want = format!(
        "RBAC forbids pillion to create certificaterequests.cert-manager.io in namespace {}: ",
        t.namespace
    );
    assert!(
        ran.stderr.contains(&want)
            && ran
                .stderr
                .contains("Grant it with the Role/ClusterRole in policies/kubernetes/"),
        "stderr should carry the RBAC message {want:?}\n{}",
        context()
    );
    let authorizer = format!(
        "User \"{}\" cannot create resource \"certificaterequests\" in API group \"cert-manager.io\" in the namespace \"{}\"",
        t.user, t.namespace
    );
    assert!(
        ran.stderr.contains(&authorizer) || ran.stderr.contains(&authorizer.replace('"', "\\\"")),
        "stderr should carry the authorizer's own words {authorizer:?}\n{}",
        context()
    );
    let events = t.events();
    let refused = requests(&events, "create", REQUESTS);
    assert!(
        !refused.is_empty() && refused.iter().all(|e| e["responseStatus"]["code"] == 403),
        "{}",
        context()
    );
}
