//! The `kubernetesCsr` issuer against the fake Kubernetes API server (`tests/it/common/fake_kube/`,
//! which speaks the real wire protocol and signs with its own CA): what pillion creates
//! (signerName, usages, expirationSeconds, labels, the PKCS#10 request as openssl reads it), that
//! it deletes the request afterwards, that the published files verify with `openssl verify`
//! against the signer's CA, that renewal follows the lifetime actually issued, and how each
//! refusal (Denied, Failed, never signed, never approved, RBAC) reaches the user. Outages of the
//! API server and watches that end mid-way must not stop a certificate from arriving.
//!
//! Every test asserts on what the peer saw (the fake's request log and objects, openssl) and
//! prints the fake's request log and pillion's output when it fails.

use crate::common;

use std::fs;
use std::thread;
use std::time::Duration;

use common::fake_kube::{Behaviour, FakeKube, CSR};
use common::kube_case::*;
use common::openbao::files_under;
use common::*;
use serde_json::{json, Value};

const SIGNER: &str = "example.com/test";

/// Bound for a daemon to get somewhere (only matters when something hangs).
const DEADLINE: Duration = Duration::from_secs(40);

/// How much longer than its `--timeout` an init that cannot finish may take: one issuer
/// attempt already under way (the issuer's own timeout) plus start-up and slack.
const INIT_OVERRUN: Duration = Duration::from_secs(5);

/// The pod pillion pretends to run in.
const POD_NAME: &str = "web-7d4b9-xk2lp";

/// `issuers:` with one `kubernetesCsr` issuer for [`SIGNER`], trusting the fake's signing CA;
/// `kubeconfig` false leaves the client to `$KUBECONFIG`.
fn issuer_yaml(fake: &FakeKube, timeout: &str, kubeconfig: bool) -> String {
    let mut y = format!(
        "issuers:\n  cluster:\n    kubernetesCsr:\n      signerName: {SIGNER}\n      caFile: \"{}\"\n      timeout: {timeout}\n",
        fake.signing_ca_pem_path().display()
    );
    if kubeconfig {
        y.push_str(&format!(
            "      kubeconfig: \"{}\"\n",
            fake.kubeconfig_path().display()
        ));
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

fn ctx(case: &KubeCase, ran: &Ran, fake: &FakeKube) -> String {
    format!(
        "{}\n{}\n{}",
        case.describe(),
        ran.describe(),
        fake.describe()
    )
}

fn daemon_ctx(case: &KubeCase, daemon: &Daemon, fake: &FakeKube) -> String {
    format!(
        "{}\n{}\n{}",
        case.describe(),
        daemon.describe(),
        fake.describe()
    )
}

/// Every CSR pillion created is gone, deleted through the API (none left behind).
fn assert_all_created_csrs_deleted(fake: &FakeKube, context: &dyn Fn() -> String) {
    let created = created(fake, CSR_COLLECTION);
    assert!(!created.is_empty(), "pillion created no CSR\n{}", context());
    assert!(
        fake.objects(CSR).is_empty(),
        "CSRs are left in the cluster: {:?}\n{}",
        fake.objects(CSR)
            .iter()
            .map(|o| str_at(o, "/metadata/name").to_owned())
            .collect::<Vec<_>>(),
        context()
    );
    let deleted = fake.deleted(CSR);
    assert_eq!(
        deleted.len(),
        created.len(),
        "every CSR pillion created should have been deleted through the API\n{}",
        context()
    );
    for d in &deleted {
        let name = str_at(d, "/metadata/name");
        assert!(
            fake.requests().iter().any(|r| r.method == "DELETE"
                && r.path == format!("{CSR_COLLECTION}/{name}")
                && r.status == 200),
            "no successful DELETE of CSR {name} in the request log\n{}",
            context()
        );
    }
}

/// The certificate in `out/web` chains to the fake's signing CA (openssl), matches its key,
/// and `ca.crt` is the configured caFile (the fake's signing CA).
fn assert_published_verifies(case: &KubeCase, fake: &FakeKube, context: &dyn Fn() -> String) {
    let web = case.out.join("web");
    assert_atomic_layout(&web, &["tls.crt", "tls.key", "ca.crt"]);
    openssl_verify(fake.signing_ca_pem_path(), &web.join("tls.crt")).unwrap_or_else(|e| {
        panic!(
            "tls.crt does not verify against the signer's CA\n{e}\n{}",
            context()
        )
    });
    openssl_verify(&web.join("ca.crt"), &web.join("tls.crt"))
        .unwrap_or_else(|e| panic!("tls.crt does not verify against ca.crt\n{e}\n{}", context()));
    key_pair_check(&web.join("tls.crt"), &web.join("tls.key"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    assert_eq!(
        cert_ders_of(&fs::read(web.join("ca.crt")).expect("read ca.crt")),
        cert_ders_of(fake.signing_ca_pem().as_bytes()),
        "ca.crt should hold exactly the signer's CA (the configured caFile)\n{}",
        context()
    );
}

/// The PKCS#10 request inside a created CSR body, as openssl reads it.
fn request_text(case: &KubeCase, csr: &Value) -> String {
    let pem = base64_decode(str_at(csr, "/spec/request"));
    assert!(
        String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE REQUEST-----"),
        "spec.request should be a PEM CERTIFICATE REQUEST, is:\n{}",
        String::from_utf8_lossy(&pem)
    );
    openssl_req_text(case.path(), &pem)
}

#[test]
fn a_signed_csr_is_published_verifies_and_carried_what_was_asked() {
    let fake = FakeKube::start();
    fake.on_signer(SIGNER, Behaviour::sign());
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(&fake, "3s", true),
        web_cert("1h")
    ));

    let (ran, _) = case.init("20s", &[("POD_NAME", POD_NAME), ("POD_NAMESPACE", "shop")]);
    let context = || ctx(&case, &ran, &fake);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &fake, &context);
    let crt = case.out.join("web/tls.crt");
    assert_eq!(
        san_entries(&san_text(&crt)),
        web_names(),
        "the certificate's SANs\n{}",
        context()
    );

    // What the API server received: one CSR, shaped as the issuer documents it.
    let created = created(&fake, CSR_COLLECTION);
    assert_eq!(created.len(), 1, "exactly one CSR\n{}", context());
    let csr = &created[0];
    assert_eq!(str_at(csr, "/spec/signerName"), SIGNER, "{}", context());
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
    assert_all_created_csrs_deleted(&fake, &context);
    let deleted = &fake.deleted(CSR)[0];
    assert_eq!(
        deleted["spec"]["request"],
        csr["spec"]["request"],
        "the deleted CSR is the one pillion created\n{}",
        context()
    );
    let issued = base64_decode(str_at(deleted, "/status/certificate"));
    assert_eq!(
        cert_ders_of(&issued).first(),
        cert_ders_of(&fs::read(&crt).expect("read tls.crt")).first(),
        "tls.crt's leaf should be the certificate in the CSR's status\n{}",
        context()
    );
}

#[test]
fn renewal_follows_the_lifetime_the_signer_issued_not_the_one_asked_for() {
    let fake = FakeKube::start();
    fake.on_signer(SIGNER, Behaviour::sign());
    // kube-controller-manager's --cluster-signing-duration: every certificate lives 6s.
    fake.set_max_signing_duration(Some(Duration::from_secs(6)));
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(&fake, "3s", true),
        web_cert("90s")
    ));
    let crt = case.out.join("web/tls.crt");

    let daemon = case.run(&[("POD_NAME", POD_NAME)]);
    let context = || daemon_ctx(&case, &daemon, &fake);
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

    // The CSR asked for the API's minimum (the duration, 90s, is below 600s).
    let created_first = created(&fake, CSR_COLLECTION);
    assert_eq!(
        created_first[0]["spec"]["expirationSeconds"],
        json!(600),
        "expirationSeconds = max(duration, 600s)\n{}",
        context()
    );

    // The log states the issued certificate's expiry and a renewal time inside its 6s.
    daemon.wait_for("the log line of the publication", DEADLINE, || {
        daemon.logs().contains("published a new certificate")
    });
    let logs = daemon.logs();
    let line = lines_containing(&logs, &["published a new certificate", "cert=web"])
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no publication line for web\n{}", context()));
    let logged_not_after = log_field(&line, "not_after")
        .map(|t| rfc3339_secs(&t))
        .unwrap_or_else(|| panic!("no not_after in {line:?}"));
    let renew_at = log_field(&line, "renew_at")
        .map(|t| rfc3339_secs(&t))
        .unwrap_or_else(|| panic!("no renew_at in {line:?}"));
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
    openssl_verify(fake.signing_ca_pem_path(), &crt).unwrap_or_else(|e| {
        panic!(
            "the renewed certificate does not verify\n{e}\n{}",
            context()
        )
    });
    assert!(
        created(&fake, CSR_COLLECTION).len() >= 2,
        "a renewal creates a new CSR\n{}",
        context()
    );
    let status = daemon.stop();
    assert!(status.success(), "pillion should exit 0 on SIGTERM");
    assert_all_created_csrs_deleted(&fake, &|| fake.describe());
}

/// Runs `pillion init --timeout <init_timeout>` for `web` against the fake (its signer set up
/// by the caller); asserts exit 1 within the bound and nothing written. Returns the run.
fn refused_init(fake: &FakeKube, kube_timeout: &str, init_timeout: &str) -> (KubeCase, Ran) {
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(fake, kube_timeout, true),
        web_cert("1h")
    ));
    let (ran, took) = case.init(init_timeout, &[("POD_NAME", POD_NAME)]);
    let context = || ctx(&case, &ran, fake);
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

#[test]
fn a_denied_csr_fails_init_with_the_reason_and_message() {
    let fake = FakeKube::start();
    fake.on_signer(
        SIGNER,
        Behaviour::deny(
            "PolicyViolation",
            "spiffe IDs outside namespace shop are not allowed",
        ),
    );
    let (case, ran) = refused_init(&fake, "3s", "3s");
    let context = || ctx(&case, &ran, &fake);
    assert!(
        ran.stderr.contains(
            "was denied (PolicyViolation): spiffe IDs outside namespace shop are not allowed"
        ),
        "stderr should carry the Denied condition's reason and message\n{}",
        context()
    );
    let name = str_at(&fake.deleted(CSR)[0], "/metadata/name").to_owned();
    assert!(
        ran.stderr
            .contains(&format!("CertificateSigningRequest {name}")),
        "stderr should name the CSR\n{}",
        context()
    );
    assert!(
        ran.stderr
            .contains("renewal failed; the files on disk are unchanged"),
        "{}",
        context()
    );
    assert_all_created_csrs_deleted(&fake, &context);
}

#[test]
fn a_failed_csr_fails_init_with_the_reason_and_message() {
    let fake = FakeKube::start();
    fake.on_signer(
        SIGNER,
        Behaviour::fail("SigningKeyUnavailable", "the signing key is offline"),
    );
    let (case, ran) = refused_init(&fake, "3s", "3s");
    let context = || ctx(&case, &ran, &fake);
    assert!(
        ran.stderr
            .contains("failed (SigningKeyUnavailable): the signing key is offline"),
        "stderr should carry the Failed condition's reason and message\n{}",
        context()
    );
    assert_all_created_csrs_deleted(&fake, &context);
}

#[test]
fn an_approved_csr_nobody_signs_says_so_at_the_deadline() {
    let fake = FakeKube::start();
    fake.on_signer(SIGNER, Behaviour::ApproveNeverSign);
    let (case, ran) = refused_init(&fake, "2s", "3s");
    let context = || ctx(&case, &ran, &fake);
    let name = str_at(&fake.deleted(CSR)[0], "/metadata/name").to_owned();
    let want = format!(
        "CertificateSigningRequest {name}: approved but not signed: is a signer for {SIGNER} running? within 2s"
    );
    assert!(
        ran.stderr.contains(&want),
        "stderr should say {want:?}\n{}",
        context()
    );
    assert_all_created_csrs_deleted(&fake, &context);
}

#[test]
fn a_csr_nobody_approves_says_how_to_approve_it_at_the_deadline() {
    let fake = FakeKube::start();
    fake.on_signer(SIGNER, Behaviour::NeverApprove);
    let (case, ran) = refused_init(&fake, "2s", "3s");
    let context = || ctx(&case, &ran, &fake);
    let name = str_at(&fake.deleted(CSR)[0], "/metadata/name").to_owned();
    let want = format!(
        "CertificateSigningRequest {name}: not approved: approve it (kubectl certificate approve {name}) or run an approver for {SIGNER} within 2s"
    );
    assert!(
        ran.stderr.contains(&want),
        "stderr should say {want:?}\n{}",
        context()
    );
    assert_all_created_csrs_deleted(&fake, &context);
}

#[test]
fn rbac_forbidding_create_names_the_verb_the_resource_and_the_policies() {
    let fake = FakeKube::start();
    fake.on_signer(SIGNER, Behaviour::sign());
    fake.forbid("create", "certificatesigningrequests");
    let (case, ran) = refused_init(&fake, "3s", "3s");
    let context = || ctx(&case, &ran, &fake);
    let want = "RBAC forbids pillion to create certificatesigningrequests.certificates.k8s.io: \
                certificatesigningrequests.certificates.k8s.io is forbidden: User \
                \"system:serviceaccount:default:pillion\" cannot create resource \
                \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster \
                scope. Grant it with the Role/ClusterRole in policies/kubernetes/";
    assert!(
        ran.stderr.contains(want),
        "stderr should say {want:?}\n{}",
        context()
    );
    let refused = posts(&fake, CSR_COLLECTION);
    assert!(
        !refused.is_empty() && refused.iter().all(|r| r.status == 403),
        "the fake should have answered pillion's creates with 403\n{}",
        context()
    );
    assert!(fake.objects(CSR).is_empty(), "{}", context());
}

#[test]
fn rbac_forbidding_list_and_watch_is_reported_as_rbac() {
    let fake = FakeKube::start();
    // Signed a little later, so pillion has to watch for it.
    fake.on_signer(SIGNER, Behaviour::sign_after(Duration::from_millis(500)));
    fake.forbid("list", "certificatesigningrequests");
    fake.forbid("watch", "certificatesigningrequests");
    let (case, ran) = refused_init(&fake, "2s", "3s");
    let context = || ctx(&case, &ran, &fake);
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
    assert_all_created_csrs_deleted(&fake, &context);
}

#[test]
fn rbac_forbidding_delete_still_publishes_and_warns() {
    let fake = FakeKube::start();
    fake.on_signer(SIGNER, Behaviour::sign());
    fake.forbid("delete", "certificatesigningrequests");
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(&fake, "3s", true),
        web_cert("1h")
    ));
    let (ran, _) = case.init("20s", &[]);
    let context = || ctx(&case, &ran, &fake);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &fake, &context);
    assert!(
        ran.stderr.contains(
            "RBAC forbids pillion to delete certificatesigningrequests.certificates.k8s.io"
        ),
        "the failed delete should be logged as RBAC\n{}",
        context()
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.status == 403),
        "pillion should have tried to delete the CSR\n{}",
        context()
    );
}

#[test]
fn an_unreachable_api_server_is_waited_out_and_the_files_stay_untouched() {
    let fake = FakeKube::start();
    fake.on_signer(SIGNER, Behaviour::sign());
    fake.pause();
    let case = KubeCase::new();
    // The client finds the cluster through $KUBECONFIG this time.
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(&fake, "3s", false),
        web_cert("1h")
    ));
    let kubeconfig = fake.kubeconfig_path().display().to_string();
    let daemon = case.run(&[("KUBECONFIG", kubeconfig.as_str()), ("POD_NAME", POD_NAME)]);
    let context = || daemon_ctx(&case, &daemon, &fake);

    daemon.wait_for(
        "a failed attempt while the API server is down",
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
        "nothing may be written while the API server is down\n{}",
        context()
    );
    assert!(
        !daemon.exited(),
        "pillion run must keep going while the API server is down\n{}",
        context()
    );

    fake.resume();
    let crt = case.out.join("web/tls.crt");
    daemon.wait_for(
        "the certificate after the API server came back",
        DEADLINE,
        || serial_fast(&crt).is_some(),
    );
    assert_published_verifies(&case, &fake, &context);
    assert_eq!(
        created(&fake, CSR_COLLECTION).len(),
        1,
        "one CSR, created once the API server was back\n{}",
        context()
    );
    assert_all_created_csrs_deleted(&fake, &context);
    let status = daemon.stop();
    assert!(status.success(), "pillion should exit 0 on SIGTERM");
}

#[test]
fn a_watch_the_server_ends_mid_way_is_resumed_and_the_certificate_arrives() {
    let fake = FakeKube::start();
    fake.on_signer(SIGNER, Behaviour::sign_after(Duration::from_secs(1)));
    // Every watch ends after one event; with a bookmark every 200ms, pillion's watch is cut
    // several times before the signer answers.
    fake.close_watches_after(1);
    fake.set_bookmark_interval(Some(Duration::from_millis(200)));
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}{}",
        issuer_yaml(&fake, "5s", true),
        web_cert("1h")
    ));
    let (ran, _) = case.init("20s", &[]);
    let context = || ctx(&case, &ran, &fake);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &fake, &context);
    let watches = watches(&fake, CSR_COLLECTION);
    assert!(
        watches.len() >= 2,
        "pillion should have watched again after the server ended its watch ({} watch(es))\n{}",
        watches.len(),
        context()
    );
    assert_eq!(
        created(&fake, CSR_COLLECTION).len(),
        1,
        "one CSR: resuming the watch must not create another\n{}",
        context()
    );
    assert_all_created_csrs_deleted(&fake, &context);
}

#[test]
fn pod_variables_in_names_are_expanded_in_the_csr_and_the_certificate() {
    let fake = FakeKube::start();
    fake.on_signer(SIGNER, Behaviour::sign());
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}certificates:\n  - name: web\n    dnsNames: [\"${{POD_NAME}}.web.${{POD_NAMESPACE}}.svc\"]\n    uris: [\"spiffe://cluster.local/ns/${{POD_NAMESPACE}}/sa/${{SERVICE_ACCOUNT_NAME}}\"]\n    duration: 1h\n",
        issuer_yaml(&fake, "3s", true)
    ));
    let (ran, _) = case.init(
        "20s",
        &[
            ("POD_NAME", "web-0"),
            ("POD_NAMESPACE", "shop"),
            ("SERVICE_ACCOUNT_NAME", "web-sa"),
        ],
    );
    let context = || ctx(&case, &ran, &fake);
    assert!(ran.status.success(), "init failed\n{}", context());
    assert_published_verifies(&case, &fake, &context);
    let want = names(&[
        "DNS:web-0.web.shop.svc",
        "URI:spiffe://cluster.local/ns/shop/sa/web-sa",
    ]);
    let created = created(&fake, CSR_COLLECTION);
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
    let fake = FakeKube::start();
    fake.on_signer(SIGNER, Behaviour::sign());
    let case = KubeCase::new();
    case.write_config(&format!(
        "{}certificates:\n  - name: web\n    dnsNames: [localhost]\n    uris: [\"spiffe://cluster.local/ns/${{POD_NAMESPACE}}/sa/${{SERVICE_ACCOUNT_NAME}}\"]\n    duration: 1h\n",
        issuer_yaml(&fake, "3s", true)
    ));
    for env in [
        vec![("POD_NAMESPACE", "shop")],
        vec![("POD_NAMESPACE", "shop"), ("SERVICE_ACCOUNT_NAME", "")],
    ] {
        let (ran, _) = case.init("5s", &env);
        let context = || ctx(&case, &ran, &fake);
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
            fake.requests().is_empty(),
            "a bad config must not reach the API server\n{}",
            context()
        );
    }
}
