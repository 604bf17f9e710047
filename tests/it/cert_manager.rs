//! The `certManager` issuer against the fake Kubernetes API server, which plays cert-manager too
//! (its approver and a CA issuer that fills `status.certificate` and `status.ca`): what pillion
//! creates (issuerRef, duration, usages, the base64 CSR as openssl reads it, the namespace), that
//! it deletes the CertificateRequest afterwards, that the published files verify with
//! `openssl verify` against `status.ca`, and that cert-manager's refusals (Denied,
//! InvalidRequest, Ready=False/Failed) reach the user in cert-manager's words.
//!
//! Every test asserts on what the peer saw (the fake's request log and objects, openssl) and
//! prints the fake's request log and pillion's output when it fails.

use crate::common;

use std::fs;
use std::time::Duration;

use common::fake_kube::{Behaviour, FakeKube, CERTIFICATE_REQUEST};
use common::kube_case::*;
use common::openbao::files_under;
use common::*;
use serde_json::{json, Value};

const ISSUER: &str = "ca-issuer";

/// How much longer than its `--timeout` an init that cannot finish may take: one issuer
/// attempt already under way (the issuer's own timeout) plus start-up and slack.
const INIT_OVERRUN: Duration = Duration::from_secs(5);

/// `issuers:` with one `certManager` issuer; `extra` lines go inside `certManager:` (indented
/// by the caller with six spaces). No caFile: the trust anchor comes from `status.ca`.
fn issuer_yaml(fake: &FakeKube, extra: &str, kubeconfig: bool) -> String {
    let mut y = format!("issuers:\n  cm:\n    certManager:\n      timeout: 3s\n{extra}");
    if kubeconfig {
        y.push_str(&format!(
            "      kubeconfig: \"{}\"\n",
            fake.kubeconfig_path().display()
        ));
    }
    y
}

/// The issuer `ca-issuer` as a ClusterIssuer, in namespace `shop`, with explicit usages.
fn explicit_issuer(fake: &FakeKube) -> String {
    issuer_yaml(
        fake,
        &format!(
            "      issuerRef: {{name: {ISSUER}, kind: ClusterIssuer, group: cert-manager.io}}\n      namespace: shop\n      usages: [digital signature, key encipherment, server auth]\n"
        ),
        true,
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

fn ctx(case: &KubeCase, ran: &Ran, fake: &FakeKube) -> String {
    format!(
        "{}\n{}\n{}",
        case.describe(),
        ran.describe(),
        fake.describe()
    )
}

/// Every CertificateRequest pillion created in `namespace` is gone, deleted through the API.
fn assert_all_created_deleted(fake: &FakeKube, namespace: &str, context: &dyn Fn() -> String) {
    let collection = certificate_request_collection(namespace);
    let created = created(fake, &collection);
    assert!(
        !created.is_empty(),
        "pillion created no CertificateRequest in namespace {namespace}\n{}",
        context()
    );
    assert!(
        fake.objects(CERTIFICATE_REQUEST).is_empty(),
        "CertificateRequests are left in the cluster\n{}",
        context()
    );
    let deleted = fake.deleted(CERTIFICATE_REQUEST);
    assert_eq!(
        deleted.len(),
        created.len(),
        "every CertificateRequest pillion created should have been deleted\n{}",
        context()
    );
    for d in &deleted {
        let name = str_at(d, "/metadata/name");
        assert_eq!(str_at(d, "/metadata/namespace"), namespace, "{}", context());
        assert!(
            fake.requests().iter().any(|r| r.method == "DELETE"
                && r.path == format!("{collection}/{name}")
                && r.status == 200),
            "no successful DELETE of CertificateRequest {namespace}/{name}\n{}",
            context()
        );
    }
}

/// The published files verify against `status.ca` (= the fake's signing CA), and `ca.crt` is
/// exactly that CA.
fn assert_published_verifies(case: &KubeCase, fake: &FakeKube, context: &dyn Fn() -> String) {
    let web = case.out.join("web");
    assert_atomic_layout(&web, &["tls.crt", "tls.key", "ca.crt"]);
    assert_eq!(
        cert_ders_of(&fs::read(web.join("ca.crt")).expect("read ca.crt")),
        cert_ders_of(fake.signing_ca_pem().as_bytes()),
        "ca.crt should be cert-manager's status.ca (the issuing CA)\n{}",
        context()
    );
    openssl_verify(&web.join("ca.crt"), &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("tls.crt does not verify against ca.crt\n{e}\n{}", context()));
    openssl_verify(fake.signing_ca_pem_path(), &web.join("tls.crt")).unwrap_or_else(|e| {
        panic!(
            "tls.crt does not verify against the issuer's CA\n{e}\n{}",
            context()
        )
    });
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
    let fake = FakeKube::start();
    fake.add_namespace("shop");
    fake.on_issuer(ISSUER, Behaviour::sign());
    let case = KubeCase::new();
    case.write_config(&format!("{}{}", explicit_issuer(&fake), web_cert("1h")));

    let (ran, _) = case.init("20s", &[("POD_NAME", "web-0")]);
    let context = || ctx(&case, &ran, &fake);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &fake, &context);
    let crt = case.out.join("web/tls.crt");
    assert_eq!(san_entries(&san_text(&crt)), web_names(), "{}", context());
    let (not_before, not_after) = validity(&crt);
    assert_eq!(
        not_after - not_before,
        3600,
        "the issuer honoured the duration pillion asked for\n{}",
        context()
    );

    let collection = certificate_request_collection("shop");
    let created = created(&fake, &collection);
    assert_eq!(
        created.len(),
        1,
        "exactly one CertificateRequest, in the configured namespace shop\n{}",
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

    assert_all_created_deleted(&fake, "shop", &context);
    let deleted = &fake.deleted(CERTIFICATE_REQUEST)[0];
    assert_eq!(
        deleted["spec"]["request"],
        cr["spec"]["request"],
        "{}",
        context()
    );
    let issued = base64_decode(str_at(deleted, "/status/certificate"));
    assert_eq!(
        cert_ders_of(&issued).first(),
        cert_ders_of(&fs::read(&crt).expect("read tls.crt")).first(),
        "tls.crt's leaf should be the certificate in the request's status\n{}",
        context()
    );
}

#[test]
fn defaults_kind_issuer_group_cert_manager_io_and_the_pods_namespace() {
    let fake = FakeKube::start();
    fake.add_namespace("team-a");
    fake.on_issuer(ISSUER, Behaviour::sign());
    let case = KubeCase::new();
    // Only the issuer's name; the client finds the cluster through $KUBECONFIG.
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(
            &fake,
            &format!("      issuerRef: {{name: {ISSUER}}}\n"),
            false
        ),
        web_cert("2h")
    ));
    let kubeconfig = fake.kubeconfig_path().display().to_string();

    let (ran, _) = case.init(
        "20s",
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("POD_NAMESPACE", "team-a"),
        ],
    );
    let context = || ctx(&case, &ran, &fake);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &fake, &context);
    let in_team_a = created(&fake, &certificate_request_collection("team-a"));
    assert_eq!(
        in_team_a.len(),
        1,
        "the request belongs in $POD_NAMESPACE (team-a)\n{}",
        context()
    );
    let cr = &in_team_a[0];
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
    assert_all_created_deleted(&fake, "team-a", &context);

    // Without $POD_NAMESPACE: the kubeconfig's namespace (default).
    let fake2 = FakeKube::start();
    fake2.on_issuer(ISSUER, Behaviour::sign());
    let case2 = KubeCase::new();
    case2.write_config(&format!(
        "{}{}",
        issuer_yaml(
            &fake2,
            &format!("      issuerRef: {{name: {ISSUER}}}\n"),
            true
        ),
        web_cert("2h")
    ));
    let (ran2, _) = case2.init("20s", &[]);
    let context2 = || ctx(&case2, &ran2, &fake2);
    assert!(ran2.status.success(), "init failed\n{}", context2());
    assert_eq!(
        created(&fake2, &certificate_request_collection("default")).len(),
        1,
        "without $POD_NAMESPACE the request belongs in the kubeconfig's namespace\n{}",
        context2()
    );
    assert_all_created_deleted(&fake2, "default", &context2);
}

/// `pillion init --timeout 3s` for `web` against the issuer (its behaviour set by the
/// caller); asserts exit 1 within the bound, nothing written, every request deleted.
fn refused_init(fake: &FakeKube) -> (KubeCase, Ran) {
    fake.add_namespace("shop");
    let case = KubeCase::new();
    case.write_config(&format!("{}{}", explicit_issuer(fake), web_cert("1h")));
    let (ran, took) = case.init("3s", &[]);
    let context = || ctx(&case, &ran, fake);
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

/// `CertificateRequest shop/<name>` of the (first) request pillion created.
fn first_request(fake: &FakeKube) -> String {
    format!(
        "CertificateRequest shop/{}",
        str_at(&fake.deleted(CERTIFICATE_REQUEST)[0], "/metadata/name")
    )
}

#[test]
fn a_denied_request_fails_init_with_cert_managers_reason_and_message() {
    let fake = FakeKube::start();
    fake.on_issuer(
        ISSUER,
        Behaviour::deny(
            "policy.cert-manager.io",
            "No policy approved this request: [pillion-web: dnsNames not allowed]",
        ),
    );
    let (case, ran) = refused_init(&fake);
    let context = || ctx(&case, &ran, &fake);
    let want = format!(
        "{} was denied (policy.cert-manager.io): No policy approved this request: [pillion-web: dnsNames not allowed]",
        first_request(&fake)
    );
    assert!(
        ran.stderr.contains(&want),
        "stderr should say {want:?}\n{}",
        context()
    );
    assert_all_created_deleted(&fake, "shop", &context);
}

#[test]
fn an_invalid_request_fails_init_with_cert_managers_reason_and_message() {
    let fake = FakeKube::start();
    fake.on_issuer(
        ISSUER,
        Behaviour::invalid_request("BadConfig", "the CSR names a forbidden domain"),
    );
    let (case, ran) = refused_init(&fake);
    let context = || ctx(&case, &ran, &fake);
    let want = format!(
        "{} failed (InvalidRequest: BadConfig): the CSR names a forbidden domain",
        first_request(&fake)
    );
    assert!(
        ran.stderr.contains(&want),
        "stderr should say {want:?}\n{}",
        context()
    );
    assert_all_created_deleted(&fake, "shop", &context);
}

#[test]
fn a_failed_request_fails_init_with_cert_managers_reason_and_message() {
    let fake = FakeKube::start();
    // cert-manager's Ready reasons are fixed: a failure is Ready=False, reason Failed.
    fake.on_issuer(
        ISSUER,
        Behaviour::fail(
            "unused",
            "issuer ca-issuer is not ready: secret \"ca-key-pair\" not found",
        ),
    );
    let (case, ran) = refused_init(&fake);
    let context = || ctx(&case, &ran, &fake);
    let want = format!(
        "{} failed (Failed): issuer ca-issuer is not ready: secret \"ca-key-pair\" not found",
        first_request(&fake)
    );
    assert!(
        ran.stderr.contains(&want),
        "stderr should say {want:?}\n{}",
        context()
    );
    assert_all_created_deleted(&fake, "shop", &context);
}

#[test]
fn rbac_forbidding_create_names_the_resource_the_namespace_and_the_policies() {
    let fake = FakeKube::start();
    fake.on_issuer(ISSUER, Behaviour::sign());
    fake.forbid("create", "certificaterequests");
    let (case, ran) = refused_init(&fake);
    let context = || ctx(&case, &ran, &fake);
    assert!(
        ran.stderr.contains(
            "RBAC forbids pillion to create certificaterequests.cert-manager.io in namespace shop: "
        ) && ran
            .stderr
            .contains("Grant it with the Role/ClusterRole in policies/kubernetes/"),
        "stderr should carry the RBAC message\n{}",
        context()
    );
    assert!(
        ran.stderr
            .contains("cannot create resource \\\"certificaterequests\\\"")
            || ran
                .stderr
                .contains("cannot create resource \"certificaterequests\""),
        "stderr should carry the API server's own words\n{}",
        context()
    );
    let posted = posts(&fake, &certificate_request_collection("shop"));
    assert!(
        !posted.is_empty() && posted.iter().all(|r| r.status == 403),
        "{}",
        context()
    );
    assert!(fake.objects(CERTIFICATE_REQUEST).is_empty());
}
