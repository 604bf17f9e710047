//! The `kubernetesCsr` issuer against a real Kubernetes API server (kube-apiserver and etcd built
//! from source, [`common::control_plane`]), with RBAC from `policies/kubernetes/` enforced by the
//! real authorizer, a service-account token from the TokenRequest API, and a test signer
//! ([`common::test_signers`]) that approves through the approval subresource and signs through
//! the status subresource. What pillion created (signerName, usages, expirationSeconds as the
//! API server validated it, labels, the PKCS#10 request as openssl reads it) and deleted is read
//! from the API server's own audit log; the published files verify with `openssl verify` against
//! the cluster CA; renewal follows the lifetime actually issued; each refusal (Denied, Failed,
//! never signed, never approved, RBAC in the authorizer's words) reaches the user. Outages of
//! the API server (a TCP proxy that refuses, then forwards), connections cut mid-watch (the
//! proxy again) and an API server restart must not stop a certificate from arriving.
//!
//! Tests share one control plane and keep apart by [`Tenant`]: a namespace, service account and
//! signer name each.

use crate::common;

use std::fs;
use std::path::Path;
use std::thread;
use std::time::Duration;

use common::control_plane::{ControlPlane, Proxy, Tenant};
use common::kube_case::*;
use common::openbao::files_under;
use common::test_signers::{csr_signer, Csr};
use common::*;
use serde_json::{json, Value};

const CSRS: &str = "certificatesigningrequests";

/// Bound for a daemon to get somewhere (only matters when something hangs).
const DEADLINE: Duration = Duration::from_secs(40);

/// How much longer than its `--timeout` an init that cannot finish may take: one issuer
/// attempt already under way (the issuer's own timeout) plus start-up and slack.
const INIT_OVERRUN: Duration = Duration::from_secs(5);

/// The pod pillion pretends to run in.
const POD_NAME: &str = "web-7d4b9-xk2lp";

/// `issuers:` with one `kubernetesCsr` issuer for the tenant's signer, trusting the cluster CA;
/// `kubeconfig` None leaves the client to `$KUBECONFIG`.
fn issuer_yaml(t: &Tenant, timeout: &str, kubeconfig: Option<&Path>) -> String {
    let mut y = format!(
        "issuers:\n  cluster:\n    kubernetesCsr:\n      signerName: {}\n      caFile: \"{}\"\n      timeout: {timeout}\n",
        t.signer,
        t.plane.ca_cert.display()
    );
    if let Some(kubeconfig) = kubeconfig {
        y.push_str(&format!("      kubeconfig: \"{}\"\n", kubeconfig.display()));
    }
    y
}

/// A certificate `web` with a CN, two DNS names, an IP and a SPIFFE URI.
fn web_cert(duration: &str) -> String {
    format!(
        "certificates:\n  - name: web\n    commonName: app.example.test\n    dnsNames: [app.example.test, localhost]\n    ipAddresses: [\"127.0.0.1\"]\n    uris: [\"spiffe://cluster.local/ns/shop/sa/web\"]\n    duration: {duration}\n"
    )
}

fn web_names() -> std::collections::BTreeSet<String> {
    names(&[
        "DNS:app.example.test",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "URI:spiffe://cluster.local/ns/shop/sa/web",
    ])
}

/// A tenant of the shared control plane with the shipped RBAC (`policies/kubernetes/`).
fn requester() -> Tenant<'static> {
    let t = ControlPlane::shared().tenant();
    t.apply_policy("policies/kubernetes/csr-requester.yaml");
    t
}

/// A case whose config is the tenant's issuer (its kubeconfig) and `web`.
fn case_for(t: &Tenant, timeout: &str, duration: &str) -> KubeCase {
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(t, timeout, Some(&t.kubeconfig)),
        web_cert(duration)
    ));
    case
}

fn ctx(case: &KubeCase, ran: &Ran, t: &Tenant) -> String {
    format!("{}\n{}\n{}", case.describe(), ran.describe(), t.describe())
}

fn daemon_ctx(case: &KubeCase, daemon: &Daemon, t: &Tenant) -> String {
    format!(
        "{}\n{}\n{}",
        case.describe(),
        daemon.describe(),
        t.describe()
    )
}

/// Every CSR pillion created was deleted through the API, and none is left in the cluster.
fn assert_all_created_deleted(t: &Tenant, context: &dyn Fn() -> String) {
    let events = t.events();
    let name = |o: &Value| str_at(o, "/metadata/name").to_owned();
    let mut created: Vec<String> = created(&events, CSRS).iter().map(name).collect();
    let mut deleted: Vec<String> = deleted(&events, CSRS).into_iter().map(|(n, _)| n).collect();
    assert!(!created.is_empty(), "pillion created no CSR\n{}", context());
    created.sort();
    deleted.sort();
    assert_eq!(
        deleted,
        created,
        "every CSR pillion created should have been deleted through the API\n{}",
        context()
    );
    let left = t
        .plane
        .admin(
            "GET",
            &format!(
                "/apis/certificates.k8s.io/v1/{CSRS}?fieldSelector=spec.signerName%3D{}",
                t.signer.replace('/', "%2F")
            ),
            None,
        )
        .unwrap();
    assert_eq!(left["items"], json!([]), "CSRs left behind\n{}", context());
}

/// The certificate in `out/web` chains to the cluster CA (openssl), matches its key, and
/// `ca.crt` is the configured caFile.
fn assert_published_verifies(case: &KubeCase, t: &Tenant, context: &dyn Fn() -> String) {
    let web = case.out.join("web");
    assert_atomic_layout(&web, &["tls.crt", "tls.key", "ca.crt"]);
    openssl_verify(&t.plane.ca_cert, &web.join("tls.crt")).unwrap_or_else(|e| {
        panic!(
            "tls.crt does not verify against the cluster CA\n{e}\n{}",
            context()
        )
    });
    openssl_verify(&web.join("ca.crt"), &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("tls.crt does not verify against ca.crt\n{e}\n{}", context()));
    key_pair_check(&web.join("tls.crt"), &web.join("tls.key"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    assert_eq!(
        fs::read(web.join("ca.crt")).expect("read ca.crt"),
        fs::read(&t.plane.ca_cert).unwrap(),
        "ca.crt should hold exactly the configured caFile\n{}",
        context()
    );
}

/// The PKCS#10 request inside a CSR, as openssl reads it.
fn request_text(case: &KubeCase, csr: &Value) -> String {
    let pem = base64_decode(str_at(csr, "/spec/request"));
    assert!(
        String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE REQUEST-----"),
        "spec.request should be a PEM CERTIFICATE REQUEST, is:\n{}",
        String::from_utf8_lossy(&pem)
    );
    openssl_req_text(case.path(), &pem)
}

/// pillion's first "published a new certificate" line for `web`, with its `not_after` and
/// `renew_at` in seconds since the epoch.
fn publication(daemon: &Daemon, context: &dyn Fn() -> String) -> (String, i64, i64) {
    daemon.wait_for("the log line of the publication", DEADLINE, || {
        daemon.logs().contains("published a new certificate")
    });
    let logs = daemon.logs();
    let line = lines_containing(&logs, &["published a new certificate", "cert=web"])
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no publication line for web\n{}", context()));
    let time = |field: &str| {
        log_field(&line, field)
            .map(|t| rfc3339_secs(&t))
            .unwrap_or_else(|| panic!("no {field} in {line:?}"))
    };
    let (not_after, renew_at) = (time("not_after"), time("renew_at"));
    (line, not_after, renew_at)
}

#[test]
fn a_signed_csr_is_published_verifies_and_carried_what_was_asked() {
    let t = requester();
    let signer = csr_signer(t.plane, &t.signer, Csr::signs());
    let case = case_for(&t, "10s", "1h");
    let (ran, _) = case.init("30s", &[("POD_NAME", POD_NAME), ("POD_NAMESPACE", "shop")]);
    let context = || ctx(&case, &ran, &t);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &t, &context);
    let crt = case.out.join("web/tls.crt");
    assert_eq!(
        san_entries(&san_text(&crt)),
        web_names(),
        "the certificate's SANs\n{}",
        context()
    );

    // What the API server stored: one CSR, shaped as the issuer documents it.
    let events = t.events();
    let created = created(&events, CSRS);
    assert_eq!(created.len(), 1, "exactly one CSR\n{}", context());
    let csr = &created[0];
    assert_eq!(str_at(csr, "/spec/signerName"), t.signer, "{}", context());
    assert_eq!(
        csr["spec"]["usages"],
        json!(["digital signature", "server auth", "client auth"]),
        "the usages of an ECDSA TLS certificate\n{}",
        context()
    );
    assert_eq!(
        csr["spec"]["expirationSeconds"],
        json!(3600),
        "expirationSeconds = the duration (1h)\n{}",
        context()
    );
    // The API server recorded who asked: pillion's service account.
    assert_eq!(str_at(csr, "/spec/username"), t.user, "{}", context());
    let labels = &csr["metadata"]["labels"];
    for (key, value) in [
        ("app.kubernetes.io/managed-by", "pillion"),
        ("pillion.dev/credential", "web"),
        ("pillion.dev/pod", POD_NAME),
    ] {
        assert_eq!(
            labels[key],
            json!(value),
            "label {key} of the CSR\n{}",
            context()
        );
    }
    let text = request_text(&case, csr);
    assert_eq!(
        san_entries(&text),
        web_names(),
        "the CSR should ask for exactly the configured names\n{text}\n{}",
        context()
    );
    assert_eq!(subject_line(&text), "CN = app.example.test", "{text}");

    // It was deleted once signed, and what pillion published is what the signer put in it.
    assert_all_created_deleted(&t, &context);
    let (_, deleted_uid) = &deleted(&events, CSRS)[0];
    assert_eq!(
        deleted_uid,
        str_at(csr, "/metadata/uid"),
        "the deleted CSR is the one pillion created\n{}",
        context()
    );
    let issued = signer.issued();
    assert_eq!(issued.len(), 1, "{}", context());
    assert_eq!(issued[0].0, str_at(csr, "/metadata/name"), "{}", context());
    assert_eq!(
        cert_ders_of(&base64_decode(&issued[0].1)).first(),
        cert_ders_of(&fs::read(&crt).expect("read tls.crt")).first(),
        "tls.crt's leaf should be the certificate the signer put in the CSR's status\n{}",
        context()
    );
}

#[test]
fn renewal_follows_the_lifetime_the_signer_issued_not_the_one_asked_for() {
    let t = requester();
    // As kube-controller-manager's --cluster-signing-duration does: every certificate lives 6s.
    let _signer = csr_signer(
        t.plane,
        &t.signer,
        Csr::Signs {
            after: Duration::ZERO,
            lifetime: Some(Duration::from_secs(6)),
        },
    );
    let case = case_for(&t, "10s", "90s");
    let crt = case.out.join("web/tls.crt");

    let daemon = case.run(&[("POD_NAME", POD_NAME)]);
    let context = || daemon_ctx(&case, &daemon, &t);
    daemon.wait_for("the first certificate", DEADLINE, || {
        serial_fast(&crt).is_some()
    });
    let first = serial(&crt);
    let (not_before, not_after) = validity(&crt);
    assert_eq!(
        not_after - not_before,
        6,
        "the signer caps lifetimes at 6s\n{}",
        context()
    );

    // The CSR asked for the API's minimum (the duration, 90s, is below 600s, which the API
    // server would refuse).
    let created_first = created(&t.events(), CSRS);
    assert_eq!(
        created_first[0]["spec"]["expirationSeconds"],
        json!(600),
        "expirationSeconds = max(duration, 600s)\n{}",
        context()
    );

    // The log states the issued certificate's expiry and a renewal time inside its 6s.
    let (line, logged_not_after, renew_at) = publication(&daemon, &context);
    assert_eq!(
        logged_not_after,
        not_after,
        "the logged not_after should be the issued certificate's\n{line}\n{}",
        context()
    );
    assert!(
        renew_at > not_before && renew_at < not_after && renew_at - not_before <= 5,
        "renew_at should fall at about 2/3 of the issued 6s (notBefore {not_before}, notAfter \
         {not_after}), not of the 90s asked for: {line}\n{}",
        context()
    );

    // And it does renew then: a second CSR, a second certificate, well before 90s.
    daemon.wait_for("a renewed certificate", Duration::from_secs(20), || {
        serial_fast(&crt).is_some_and(|s| s != first)
    });
    openssl_verify(&t.plane.ca_cert, &crt).unwrap_or_else(|e| {
        panic!(
            "the renewed certificate does not verify\n{e}\n{}",
            context()
        )
    });
    assert!(
        created(&t.events(), CSRS).len() >= 2,
        "a renewal creates a new CSR\n{}",
        context()
    );
    let status = daemon.stop();
    assert!(status.success(), "pillion should exit 0 on SIGTERM");
    assert_all_created_deleted(&t, &|| t.describe());
}

/// The signer of kube-controller-manager for client certificates of the API server.
const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// The shared control plane with kube-controller-manager's signer, which caps every lifetime at
/// 30 minutes.
fn plane_with_real_signer() -> &'static ControlPlane {
    static SIGNER: std::sync::Once = std::sync::Once::new();
    let plane = ControlPlane::shared();
    SIGNER.call_once(|| plane.start_kube_controller_manager("30m"));
    plane
}

/// A config asking kube-controller-manager's client signer for `web` (2h), with `usages`
/// (YAML flow sequence) if given.
fn client_signer_config(t: &Tenant, usages: Option<&str>) -> String {
    let usages = usages
        .map(|u| format!("      usages: {u}\n"))
        .unwrap_or_default();
    format!(
        "issuers:\n  cluster:\n    kubernetesCsr:\n      signerName: {CLIENT_SIGNER}\n      caFile: \"{}\"\n      kubeconfig: \"{}\"\n      timeout: 20s\n{usages}certificates:\n  - name: web\n    commonName: web-client\n    duration: 2h\n",
        t.plane.ca_cert.display(),
        t.kubeconfig.display()
    )
}

#[test]
fn kube_controller_managers_signer_issues_a_client_certificate_for_the_lifetime_it_allows() {
    let plane = plane_with_real_signer();
    let t = plane.tenant();
    t.apply_policy("policies/kubernetes/csr-requester.yaml");
    // Approved as `kubectl certificate approve` does; kube-controller-manager signs.
    let _approver = csr_signer(plane, CLIENT_SIGNER, Csr::ApprovesOnly);
    let case = KubeCase::new();
    case.write_config(&client_signer_config(
        &t,
        Some("[digital signature, client auth]"),
    ));
    let crt = case.out.join("web/tls.crt");
    let daemon = case.run(&[]);
    let context = || daemon_ctx(&case, &daemon, &t);
    daemon.wait_for("the certificate", DEADLINE, || serial_fast(&crt).is_some());
    let issued_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    openssl_verify(&plane.ca_cert, &crt).unwrap_or_else(|e| panic!("{e}\n{}", context()));
    let arg = std::ffi::OsStr::new;
    let text = openssl(&[
        arg("x509"),
        arg("-noout"),
        arg("-text"),
        arg("-in"),
        crt.as_os_str(),
    ]);
    assert!(
        text.contains("TLS Web Client Authentication")
            && !text.contains("TLS Web Server Authentication"),
        "a client certificate, as asked\n{text}"
    );
    // Asked for 2h; the signer allows 30m (--cluster-signing-duration), and pillion renews
    // within what was issued.
    let (_, not_after) = validity(&crt);
    assert!(
        (issued_at + 1700..=issued_at + 1800).contains(&not_after),
        "kube-controller-manager caps the lifetime at 30m: notAfter {not_after}, now {issued_at}\n{}",
        context()
    );
    let (line, _, renew_at) = publication(&daemon, &context);
    assert!(
        renew_at < not_after && renew_at - issued_at <= 1800,
        "renew_at should fall inside the 30m issued, not the 2h asked: {line}\n{}",
        context()
    );
    assert!(daemon.stop().success());
    assert_all_created_deleted(&t, &|| t.describe());
}

#[test]
fn kube_controller_managers_signer_refuses_usages_it_does_not_sign_in_its_own_words() {
    let plane = plane_with_real_signer();
    let t = plane.tenant();
    t.apply_policy("policies/kubernetes/csr-requester.yaml");
    let _approver = csr_signer(plane, CLIENT_SIGNER, Csr::ApprovesOnly);
    let case = KubeCase::new();
    // pillion's default usages name server auth, which a client signer does not sign.
    case.write_config(&client_signer_config(&t, None));
    let (ran, _) = case.init("20s", &[]);
    let context = || ctx(&case, &ran, &t);
    assert_eq!(ran.code(), Some(1), "{}", context());
    assert!(
        ran.stderr.contains("failed (SignerValidationFailure): ")
            && ran.stderr.contains("server auth"),
        "stderr should carry kube-controller-manager's reason and message\n{}",
        context()
    );
    assert!(
        files_under(&case.out).is_empty(),
        "nothing may be written\n{}",
        context()
    );
    assert_all_created_deleted(&t, &context);
}

/// Runs `pillion init --timeout <init_timeout>` for `web` as the tenant (its signer, if any,
/// set up by the caller); asserts exit 1 within the bound and nothing written.
fn refused_init(t: &Tenant, kube_timeout: &str, init_timeout: &str) -> (KubeCase, Ran) {
    let case = case_for(t, kube_timeout, "1h");
    let (ran, took) = case.init(init_timeout, &[("POD_NAME", POD_NAME)]);
    let context = || ctx(&case, &ran, t);
    assert_eq!(ran.code(), Some(1), "init should exit 1\n{}", context());
    let bound = humantime::parse_duration(init_timeout).unwrap()
        + humantime::parse_duration(kube_timeout).unwrap()
        + INIT_OVERRUN;
    assert!(
        took <= bound,
        "init --timeout {init_timeout} took {took:?} (more than {bound:?})\n{}",
        context()
    );
    assert!(
        files_under(&case.out).is_empty(),
        "nothing may be written\n{}",
        context()
    );
    (case, ran)
}

/// The name of the (first) CSR pillion created.
fn first_csr(t: &Tenant) -> String {
    str_at(&created(&t.events(), CSRS)[0], "/metadata/name").to_owned()
}

#[test]
fn a_denied_csr_fails_init_with_the_reason_and_message() {
    let t = requester();
    let _signer = csr_signer(
        t.plane,
        &t.signer,
        Csr::Denies(
            "PolicyViolation",
            "spiffe IDs outside namespace shop are not allowed",
        ),
    );
    let (case, ran) = refused_init(&t, "4s", "4s");
    let context = || ctx(&case, &ran, &t);
    assert!(
        ran.stderr.contains(
            "was denied (PolicyViolation): spiffe IDs outside namespace shop are not allowed"
        ),
        "stderr should carry the Denied condition's reason and message\n{}",
        context()
    );
    assert!(
        ran.stderr
            .contains(&format!("CertificateSigningRequest {}", first_csr(&t))),
        "stderr should name the CSR\n{}",
        context()
    );
    assert!(
        ran.stderr
            .contains("renewal failed; the files on disk are unchanged"),
        "{}",
        context()
    );
    assert_all_created_deleted(&t, &context);
}

#[test]
fn a_failed_csr_fails_init_with_the_reason_and_message() {
    let t = requester();
    let _signer = csr_signer(
        t.plane,
        &t.signer,
        Csr::Fails("SigningKeyUnavailable", "the signing key is offline"),
    );
    let (case, ran) = refused_init(&t, "4s", "4s");
    let context = || ctx(&case, &ran, &t);
    assert!(
        ran.stderr
            .contains("failed (SigningKeyUnavailable): the signing key is offline"),
        "stderr should carry the Failed condition's reason and message\n{}",
        context()
    );
    assert_all_created_deleted(&t, &context);
}

#[test]
fn an_approved_csr_nobody_signs_says_so_at_the_deadline() {
    let t = requester();
    let _signer = csr_signer(t.plane, &t.signer, Csr::ApprovesOnly);
    let (case, ran) = refused_init(&t, "2s", "3s");
    let context = || ctx(&case, &ran, &t);
    let want = format!(
        "CertificateSigningRequest {}: approved but not signed: is a signer for {} running? within 2s",
        first_csr(&t),
        t.signer
    );
    assert!(
        ran.stderr.contains(&want),
        "stderr should say {want:?}\n{}",
        context()
    );
    assert_all_created_deleted(&t, &context);
}

#[test]
fn a_csr_nobody_approves_says_how_to_approve_it_at_the_deadline() {
    let t = requester();
    let (case, ran) = refused_init(&t, "2s", "3s");
    let context = || ctx(&case, &ran, &t);
    let name = first_csr(&t);
    let want = format!(
        "CertificateSigningRequest {name}: not approved: approve it (kubectl certificate approve {name}) or run an approver for {} within 2s",
        t.signer
    );
    assert!(
        ran.stderr.contains(&want),
        "stderr should say {want:?}\n{}",
        context()
    );
    assert_all_created_deleted(&t, &context);
}

#[test]
fn rbac_forbidding_create_names_the_verb_the_resource_and_the_policies() {
    // No RBAC at all: the real authorizer refuses.
    let t = ControlPlane::shared().tenant();
    let (case, ran) = refused_init(&t, "3s", "3s");
    let context = || ctx(&case, &ran, &t);
    let want = format!(
        "RBAC forbids pillion to create certificatesigningrequests.certificates.k8s.io: \
         certificatesigningrequests.certificates.k8s.io is forbidden: User \"{}\" cannot create \
         resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the \
         cluster scope. Grant it with the Role/ClusterRole in policies/kubernetes/",
        t.user
    );
    assert!(
        ran.stderr.contains(&want),
        "stderr should say {want:?}\n{}",
        context()
    );
    let events = t.events();
    let refused = requests(&events, "create", CSRS);
    assert!(
        !refused.is_empty() && refused.iter().all(|e| e["responseStatus"]["code"] == 403),
        "the API server should have answered pillion's creates with 403\n{}",
        context()
    );
}

#[test]
fn rbac_forbidding_list_and_watch_is_reported_as_rbac() {
    let t = ControlPlane::shared().tenant();
    t.grant(
        true,
        "certificates.k8s.io",
        CSRS,
        &["create", "get", "delete"],
    );
    // Signed a little later, so pillion has to watch for it.
    let _signer = csr_signer(
        t.plane,
        &t.signer,
        Csr::Signs {
            after: Duration::from_millis(500),
            lifetime: None,
        },
    );
    let (case, ran) = refused_init(&t, "3s", "3s");
    let context = || ctx(&case, &ran, &t);
    assert!(
        ran.stderr
            .contains("RBAC forbids pillion to list certificatesigningrequests")
            || ran
                .stderr
                .contains("RBAC forbids pillion to watch certificatesigningrequests"),
        "a Role without list/watch should be reported as RBAC, naming the verb and the \
         resource and pointing at policies/kubernetes/\n{}",
        context()
    );
    assert!(ran.stderr.contains("policies/kubernetes/"), "{}", context());
    assert_all_created_deleted(&t, &context);
}

#[test]
fn rbac_forbidding_delete_still_publishes_and_warns() {
    let t = ControlPlane::shared().tenant();
    t.grant(
        true,
        "certificates.k8s.io",
        CSRS,
        &["create", "get", "list", "watch"],
    );
    let _signer = csr_signer(t.plane, &t.signer, Csr::signs());
    let case = case_for(&t, "10s", "1h");
    let (ran, _) = case.init("30s", &[]);
    let context = || ctx(&case, &ran, &t);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &t, &context);
    assert!(
        ran.stderr.contains(
            "RBAC forbids pillion to delete certificatesigningrequests.certificates.k8s.io"
        ),
        "the failed delete should be logged as RBAC\n{}",
        context()
    );
    let events = t.events();
    let deletes = requests(&events, "delete", CSRS);
    assert!(
        !deletes.is_empty() && deletes.iter().all(|e| e["responseStatus"]["code"] == 403),
        "pillion should have tried to delete the CSR, and been refused\n{}",
        context()
    );
}

#[test]
fn an_unreachable_api_server_is_waited_out_and_the_files_stay_untouched() {
    let t = requester();
    let _signer = csr_signer(t.plane, &t.signer, Csr::signs());
    let proxy = Proxy::start(t.plane, false);
    let case = KubeCase::new();
    // The client finds the cluster through $KUBECONFIG this time.
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(&t, "3s", None),
        web_cert("1h")
    ));
    let kubeconfig = t.kubeconfig_through(&proxy).display().to_string();
    let daemon = case.run(&[("KUBECONFIG", kubeconfig.as_str()), ("POD_NAME", POD_NAME)]);
    let context = || daemon_ctx(&case, &daemon, &t);

    daemon.wait_for(
        "a failed attempt while the API server is unreachable",
        DEADLINE,
        || {
            daemon
                .logs()
                .contains("renewal failed; the files on disk are unchanged")
        },
    );
    let logs = daemon.logs();
    assert!(
        lines_containing(
            &logs,
            &["ERROR", "renewal failed; the files on disk are unchanged"]
        )
        .iter()
        .any(|l| l.contains("cert=web")),
        "the failure should be logged at ERROR for web\n{}",
        context()
    );
    thread::sleep(Duration::from_secs(2));
    assert!(
        files_under(&case.out).is_empty(),
        "nothing may be written while the API server is unreachable\n{}",
        context()
    );
    assert!(
        !daemon.exited(),
        "pillion run must keep going while the API server is unreachable\n{}",
        context()
    );

    proxy.up();
    let crt = case.out.join("web/tls.crt");
    daemon.wait_for(
        "the certificate after the API server came back",
        DEADLINE,
        || serial_fast(&crt).is_some(),
    );
    assert_published_verifies(&case, &t, &context);
    assert_eq!(
        created(&t.events(), CSRS).len(),
        1,
        "one CSR, created once the API server was reachable\n{}",
        context()
    );
    assert_all_created_deleted(&t, &context);
    let status = daemon.stop();
    assert!(status.success(), "pillion should exit 0 on SIGTERM");
}

#[test]
fn a_watch_cut_mid_way_is_resumed_and_the_certificate_arrives() {
    let t = requester();
    let proxy = Proxy::start(t.plane, true);
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(&t, "20s", Some(&t.kubeconfig_through(&proxy))),
        web_cert("1h")
    ));
    let (ran, cuts) = thread::scope(|s| {
        let init = s.spawn(|| case.init("40s", &[]).0);
        // Once pillion's request exists and it watches it, its connections are cut three
        // times, each once it has watched again; only then does a signer answer.
        let mut cuts = 0;
        for round in 1..=3 {
            wait_for_ctx(
                &format!("watch {round} on pillion's request"),
                DEADLINE,
                || t.describe(),
                || watches(&t.events(), CSRS).len() >= round,
            );
            cuts += proxy.cut();
        }
        let _signer = csr_signer(t.plane, &t.signer, Csr::signs());
        (init.join().unwrap(), cuts)
    });
    let context = || ctx(&case, &ran, &t);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert!(
        cuts >= 3,
        "the proxy cut {cuts} connection(s)\n{}",
        context()
    );
    assert_published_verifies(&case, &t, &context);
    let events = t.events();
    assert!(
        watches(&events, CSRS).len() >= 3,
        "pillion should have watched again after each cut\n{}",
        context()
    );
    assert_eq!(
        requests(&events, "list", CSRS).len(),
        1,
        "a cut watch resumes from its resource version, without listing again\n{}",
        context()
    );
    assert_eq!(
        created(&events, CSRS).len(),
        1,
        "one CSR: resuming the watch must not create another\n{}",
        context()
    );
    assert_all_created_deleted(&t, &context);
}

#[test]
fn a_watch_resumes_across_an_api_server_restart() {
    // Its own control plane: the others' tests must not see their API server go away.
    let plane = ControlPlane::start();
    let t = plane.tenant();
    t.apply_policy("policies/kubernetes/csr-requester.yaml");
    let case = case_for(&t, "60s", "1h");
    let daemon = case.run(&[]);
    // pillion's request is there and watched; the API server goes away and comes back (etcd
    // keeps the request), then the signer answers.
    wait_for_ctx(
        "pillion's request, watched",
        DEADLINE,
        || daemon.describe(),
        || watches(&t.events(), CSRS).len() == 1,
    );
    plane.restart_apiserver();
    let _signer = csr_signer(&plane, &t.signer, Csr::signs());
    let crt = case.out.join("web/tls.crt");
    wait_for_ctx(
        "the certificate after the restart",
        Duration::from_secs(60),
        || daemon_ctx(&case, &daemon, &t),
        || serial_fast(&crt).is_some(),
    );
    openssl_verify(&plane.ca_cert, &crt).unwrap();
    assert!(daemon.stop().success());
    // Right after its restart the API server may refuse (403) until its authorizer's caches
    // are filled; pillion then asks again. Whatever it created, it deleted.
    assert_all_created_deleted(&t, &|| t.describe());
}

#[test]
fn a_request_whose_wait_is_cut_short_is_deleted_all_the_same() {
    let t = requester();
    // Nobody approves: the issuer would wait its 60s; init's deadline (3s) cuts it short.
    let case = case_for(&t, "60s", "1h");
    let (ran, took) = case.init("3s", &[]);
    let context = || ctx(&case, &ran, &t);
    assert_eq!(ran.code(), Some(1), "{}", context());
    assert!(
        took < Duration::from_secs(10),
        "init took {took:?}\n{}",
        context()
    );
    assert!(
        ran.stderr
            .contains("the renewal was cut short; deleting its request"),
        "{}",
        context()
    );
    assert_all_created_deleted(&t, &context);

    // And a `pillion run` stopped (SIGTERM) while it waits.
    let t = requester();
    let case = case_for(&t, "60s", "1h");
    let daemon = case.run(&[]);
    wait_for_ctx(
        "pillion's request, watched",
        DEADLINE,
        || daemon_ctx(&case, &daemon, &t),
        || watches(&t.events(), CSRS).len() == 1,
    );
    assert!(daemon.stop().success());
    assert_all_created_deleted(&t, &|| t.describe());
}

#[test]
fn a_watch_resumed_after_etcd_compaction_lists_again_and_the_certificate_arrives() {
    // Its own control plane, with the watch cache off: a watch resumed from a compacted
    // revision reaches etcd, and the API server answers 410 Gone (Expired).
    let plane = ControlPlane::start_with(&["--watch-cache=false"]);
    let t = plane.tenant();
    t.apply_policy("policies/kubernetes/csr-requester.yaml");
    let proxy = Proxy::start(&plane, true);
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(&t, "60s", Some(&t.kubeconfig_through(&proxy))),
        web_cert("1h")
    ));
    let daemon = case.run(&[]);
    let context = || daemon_ctx(&case, &daemon, &t);
    wait_for_ctx("pillion's request, watched", DEADLINE, context, || {
        watches(&t.events(), CSRS).len() == 1
    });
    // The store moves on past pillion's resource version and is compacted; pillion's
    // connection is cut, so it resumes its watch from a revision etcd no longer has.
    for i in 0..3 {
        plane.create(&[json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": format!("filler-{i}"), "namespace": t.namespace}})]);
    }
    let compacted = plane.compact_etcd();
    assert!(proxy.cut() > 0, "{}", context());
    // 410 Gone makes a watcher list again (a watch merely cut resumes without one).
    wait_for_ctx(
        "pillion to list again after 410 Gone",
        DEADLINE,
        context,
        || requests(&t.events(), "list", CSRS).len() >= 2,
    );
    let _signer = csr_signer(&plane, &t.signer, Csr::signs());
    let crt = case.out.join("web/tls.crt");
    daemon.wait_for("the certificate", DEADLINE, || serial_fast(&crt).is_some());
    openssl_verify(&plane.ca_cert, &crt).unwrap_or_else(|e| panic!("{e}\n{}", context()));
    assert_eq!(
        created(&t.events(), CSRS).len(),
        1,
        "listing again must not create another request (etcd compacted at {compacted})\n{}",
        context()
    );
    assert!(daemon.stop().success());
}

#[test]
fn in_a_pod_the_client_and_the_ca_come_from_the_service_account_files() {
    let t = requester();
    let _signer = csr_signer(t.plane, &t.signer, Csr::signs());
    let run = tempfile::tempdir().unwrap();
    t.service_account_files(run.path());
    // No kubeconfig and no caFile: the in-cluster configuration and the service account's
    // ca.crt (/var/run/secrets/kubernetes.io/serviceaccount/), as in a pod.
    let case = KubeCase::new();
    case.write_config(&format!(
        "issuers:\n  cluster:\n    kubernetesCsr:\n      signerName: {}\n      timeout: 10s\ncertificates:\n  - name: web\n    dnsNames: [web.{}.svc]\n    duration: 1h\n",
        t.signer, t.namespace
    ));
    let ran = case.init_in_pod("30s", run.path(), t.plane.port);
    let context = || ctx(&case, &ran, &t);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &t, &context);
    // The API server saw the pod's service account, from the token file.
    assert_eq!(created(&t.events(), CSRS).len(), 1, "{}", context());
    assert_all_created_deleted(&t, &context);
}

#[test]
fn pod_variables_in_names_are_expanded_in_the_csr_and_the_certificate() {
    let t = requester();
    let _signer = csr_signer(t.plane, &t.signer, Csr::signs());
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}certificates:\n  - name: web\n    dnsNames: [\"${{POD_NAME}}.web.${{POD_NAMESPACE}}.svc\"]\n    uris: [\"spiffe://cluster.local/ns/${{POD_NAMESPACE}}/sa/${{SERVICE_ACCOUNT_NAME}}\"]\n    duration: 1h\n",
        issuer_yaml(&t, "10s", Some(&t.kubeconfig))
    ));
    let (ran, _) = case.init(
        "30s",
        &[
            ("POD_NAME", "web-0"),
            ("POD_NAMESPACE", "shop"),
            ("SERVICE_ACCOUNT_NAME", "web-sa"),
        ],
    );
    let context = || ctx(&case, &ran, &t);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &t, &context);
    let want = names(&[
        "DNS:web-0.web.shop.svc",
        "URI:spiffe://cluster.local/ns/shop/sa/web-sa",
    ]);
    let created = created(&t.events(), CSRS);
    assert_eq!(created.len(), 1, "{}", context());
    let text = request_text(&case, &created[0]);
    assert_eq!(
        san_entries(&text),
        want,
        "the CSR's names, expanded\n{text}\n{}",
        context()
    );
    assert_eq!(
        san_entries(&san_text(&case.out.join("web/tls.crt"))),
        want,
        "the certificate's names, expanded\n{}",
        context()
    );
    assert_eq!(
        created[0]["metadata"]["labels"]["pillion.dev/pod"],
        json!("web-0"),
        "{}",
        context()
    );
}

#[test]
fn an_unset_pod_variable_is_a_config_error_naming_it() {
    let t = requester();
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}certificates:\n  - name: web\n    dnsNames: [localhost]\n    uris: [\"spiffe://cluster.local/ns/${{POD_NAMESPACE}}/sa/${{SERVICE_ACCOUNT_NAME}}\"]\n    duration: 1h\n",
        issuer_yaml(&t, "3s", Some(&t.kubeconfig))
    ));
    for env in [
        vec![("POD_NAMESPACE", "shop")],
        vec![("POD_NAMESPACE", "shop"), ("SERVICE_ACCOUNT_NAME", "")],
    ] {
        let (ran, _) = case.init("5s", &env);
        let context = || ctx(&case, &ran, &t);
        assert_eq!(
            ran.code(),
            Some(2),
            "an unset (or empty) ${{SERVICE_ACCOUNT_NAME}} is a config error\n{}",
            context()
        );
        assert!(
            ran.stderr.contains("certificates[0].uris[0]")
                && ran.stderr.contains("SERVICE_ACCOUNT_NAME"),
            "the error should name the field and the variable\n{}",
            context()
        );
        assert!(
            !case.out.exists(),
            "a bad config touches nothing\n{}",
            context()
        );
        assert!(
            t.events().is_empty(),
            "a bad config must not reach the API server\n{}",
            context()
        );
    }
}
