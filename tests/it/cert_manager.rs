//! The `certManager` issuer against a real Kubernetes API server with cert-manager's real CRDs
//! (their schema validates what pillion creates) and cert-manager's own controllers for the CA
//! issuer (built from cert-manager's main module, `testbed/cert-manager/`): a CA ClusterIssuer or
//! Issuer signing with the cluster CA, made Ready by cert-manager. The test approves or denies
//! each request as approver-policy does ([`common::test_signers`]), and plays an external issuer
//! for the refusals only an issuer makes (InvalidRequest, Failed). RBAC from
//! `policies/kubernetes/` is enforced by the real authorizer. What pillion created (issuerRef,
//! duration, usages, the base64 CSR as openssl reads it, the namespace) and deleted, and what
//! cert-manager wrote, are read from the API server's audit log; the published files verify with
//! `openssl verify` against `status.ca`; refusals (Denied, a missing issuer, InvalidRequest,
//! Ready=False/Failed, RBAC) reach the user in their own words.

use crate::common;

use std::fs;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use common::control_plane::{ControlPlane, Tenant, CA_CLUSTER_ISSUER, CERT_MANAGER_USER};
use common::kube_case::*;
use common::openbao::files_under;
use common::test_signers::{cert_manager_approver, Issuer};
use common::*;
use serde_json::{json, Value};

/// cert-manager's CA issuer: the ClusterIssuer, and the name of a tenant's namespaced Issuer.
const ISSUER: &str = CA_CLUSTER_ISSUER;

/// An issuerRef to an external issuer the test plays (cert-manager's controllers leave requests
/// of other groups alone).
const EXTERNAL: &str = "{name: external-ca, kind: ExternalIssuer, group: example.com}";
const REQUESTS: &str = "certificaterequests";

/// How much longer than its `--timeout` an init that cannot finish may take: one issuer
/// attempt already under way (the issuer's own timeout) plus start-up and slack.
const INIT_OVERRUN: Duration = Duration::from_secs(5);

/// The shared control plane, with cert-manager's CRDs and controllers.
fn plane() -> &'static ControlPlane {
    static CERT_MANAGER: Once = Once::new();
    let plane = ControlPlane::shared();
    CERT_MANAGER.call_once(|| plane.start_cert_manager());
    plane
}

/// What cert-manager wrote into the `status.certificate` of request `namespace/name`, from the
/// API server's audit log.
fn written_by_cert_manager(plane: &ControlPlane, namespace: &str, name: &str) -> Option<String> {
    plane
        .audit_events(CERT_MANAGER_USER)
        .iter()
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["objectRef"]["resource"] == REQUESTS
                && e["objectRef"]["subresource"] == "status"
                && e["objectRef"]["namespace"] == namespace
                && e["objectRef"]["name"] == name
                && e["responseStatus"]["code"] == 200
        })
        .find_map(|e| {
            e["requestObject"]["status"]["certificate"]
                .as_str()
                .map(str::to_owned)
        })
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
    issuer_in(t, &cluster_issuer())
}

/// The issuerRef of cert-manager's CA ClusterIssuer.
fn cluster_issuer() -> String {
    format!("{{name: {ISSUER}, kind: ClusterIssuer, group: cert-manager.io}}")
}

/// `issuerRef` (YAML flow mapping), in the tenant's namespace, with explicit usages.
fn issuer_in(t: &Tenant, issuer_ref: &str) -> String {
    issuer_yaml(
        &format!(
            "      issuerRef: {issuer_ref}\n      namespace: {}\n      usages: [digital signature, key encipherment, server auth]\n",
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

/// The published files verify against `status.ca` (the cluster CA, in the CA issuer's Secret),
/// and `ca.crt` is exactly that CA.
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
    let _approver = cert_manager_approver(t.plane, &t.namespace, ISSUER, Issuer::Approves);
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
        "cert-manager honoured the duration pillion asked for\n{}",
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
    let issued = written_by_cert_manager(t.plane, &t.namespace, str_at(cr, "/metadata/name"))
        .unwrap_or_else(|| panic!("cert-manager wrote no certificate\n{}", context()));
    assert_eq!(
        cert_ders_of(&base64_decode(&issued)).first(),
        cert_ders_of(&fs::read(&crt).expect("read tls.crt")).first(),
        "tls.crt's leaf should be the certificate cert-manager put in the request's status\n{}",
        context()
    );
}

#[test]
fn defaults_kind_issuer_group_cert_manager_io_and_the_pods_namespace() {
    let t = requester();
    // A namespaced CA Issuer of the same name: kind Issuer is the default.
    t.plane.create_ca_issuer(&t.namespace, Some(ISSUER));
    let _approver = cert_manager_approver(t.plane, &t.namespace, ISSUER, Issuer::Approves);
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
    t2.plane.create_ca_issuer(&t2.namespace, Some(ISSUER));
    let _approver2 = cert_manager_approver(t2.plane, &t2.namespace, ISSUER, Issuer::Approves);
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

#[test]
fn in_a_pod_the_request_goes_to_the_service_accounts_namespace() {
    let t = requester();
    t.plane.create_ca_issuer(&t.namespace, Some(ISSUER));
    let _approver = cert_manager_approver(t.plane, &t.namespace, ISSUER, Issuer::Approves);
    let run = tempfile::tempdir().unwrap();
    t.service_account_files(run.path());
    // No kubeconfig, no namespace, no $POD_NAMESPACE: the in-cluster configuration, whose
    // namespace is the service account's (.../serviceaccount/namespace).
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(&format!("      issuerRef: {{name: {ISSUER}}}\n"), None),
        web_cert("1h")
    ));
    let ran = case.init_in_pod("30s", run.path(), t.plane.port);
    let context = || ctx(&case, &ran, &t);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &t, &context);
    assert_all_created_deleted(&t, &context);
}

/// `pillion init --timeout 3s` (the issuer's own timeout 2s) for `web` as the tenant, asking
/// `issuer_ref` (the approver's and issuer's behaviour set by the caller); asserts exit 1 within
/// the bound, nothing written.
fn refused_init(t: &Tenant, issuer_ref: &str) -> (KubeCase, Ran) {
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}{}",
        issuer_in(t, issuer_ref).replace("timeout: 10s", "timeout: 2s"),
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
    let _approver = cert_manager_approver(
        t.plane,
        &t.namespace,
        ISSUER,
        Issuer::Denies(
            "policy.cert-manager.io",
            "No policy approved this request: [pillion-web: dnsNames not allowed]",
        ),
    );
    let (case, ran) = refused_init(&t, &cluster_issuer());
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
    let _issuer = cert_manager_approver(
        t.plane,
        &t.namespace,
        "external-ca",
        Issuer::Invalid("BadConfig", "the CSR names a forbidden domain"),
    );
    let (case, ran) = refused_init(&t, EXTERNAL);
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
    let _issuer = cert_manager_approver(
        t.plane,
        &t.namespace,
        "external-ca",
        Issuer::Fails("issuer ca-issuer is not ready: secret \"ca-key-pair\" not found"),
    );
    let (case, ran) = refused_init(&t, EXTERNAL);
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
fn a_request_for_an_issuer_that_does_not_exist_says_so_in_cert_managers_words() {
    let t = requester();
    let _approver =
        cert_manager_approver(t.plane, &t.namespace, "no-such-issuer", Issuer::Approves);
    let (case, ran) = refused_init(
        &t,
        "{name: no-such-issuer, kind: ClusterIssuer, group: cert-manager.io}",
    );
    let context = || ctx(&case, &ran, &t);
    // cert-manager's certificaterequests controller keeps it Pending, and says why.
    let want = format!(
        "{}: not Ready (Pending: Referenced \"ClusterIssuer\" not found",
        first_request(&t)
    );
    assert!(
        ran.stderr.contains(&want) || ran.stderr.contains(&want.replace('"', "\\\"")),
        "stderr should say {want:?}\n{}",
        context()
    );
    assert_all_created_deleted(&t, &context);
}

#[test]
fn rbac_forbidding_create_names_the_resource_the_namespace_and_the_policies() {
    // No RBAC at all: the real authorizer refuses.
    let t = plane().tenant();
    let (case, ran) = refused_init(&t, &cluster_issuer());
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
