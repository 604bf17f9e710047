//! The fake Kubernetes API server (`tests/it/common/fake_kube/`) driven by clients nobody here
//! wrote: the real `kube` client and kube-runtime's watcher, `curl`, and `openssl` for the
//! certificates the fake's signer issues. If these pass, the issuer tests that use the fake
//! exercise pillion against the wire protocol, not against the fake's own idea of it.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::fake_kube::{self, Behaviour, FakeKube, CERTIFICATE_REQUEST, CSR};
use common::{openssl_verify, run_bounded, COMMAND_DEADLINE};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::runtime::wait::await_condition;
use serde_json::{json, Value};

/// Upper bound for anything the fake or the client does; only matters when something hangs.
const DEADLINE: Duration = Duration::from_secs(30);

const SIGNER: &str = "example.com/pillion";

/// A PEM CSR for `dns` made with rcgen (P-256).
fn rcgen_csr(dns: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("generate a key");
    let mut params = rcgen::CertificateParams::new(vec![dns.to_string()]).expect("valid SAN");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, dns);
    params
        .serialize_request(&key)
        .expect("serialize a CSR")
        .pem()
        .expect("PEM-encode a CSR")
}

/// A PEM CSR for `dns` made by the openssl CLI (RSA-2048, SAN requested as an extension).
fn openssl_csr(dir: &std::path::Path, dns: &str) -> String {
    let csr = dir.join(format!("{dns}.csr"));
    let ran = run_bounded(
        Command::new("openssl")
            .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout"])
            .arg(dir.join(format!("{dns}.key")))
            .args(["-subj", &format!("/CN={dns}"), "-addext"])
            .arg(format!("subjectAltName=DNS:{dns}"))
            .arg("-out")
            .arg(&csr),
        COMMAND_DEADLINE,
    );
    ran.assert_success();
    std::fs::read_to_string(csr).expect("read the CSR")
}

fn csr_object(
    generate_name: &str,
    signer: &str,
    pem: &str,
    seconds: i32,
) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_string()),
            labels: Some([("app".to_string(), "pillion".to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.as_bytes().to_vec()),
            signer_name: signer.to_string(),
            usages: Some(vec!["digital signature".into(), "server auth".into()]),
            expiration_seconds: Some(seconds),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    }
}

/// `fut` within [`DEADLINE`], or a panic that shows what the fake saw.
async fn within<T>(fake: &FakeKube, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!(
            "timed out after {DEADLINE:?} waiting for {what}\n{}",
            fake.describe()
        ),
    }
}

/// Polls `f` (yielding to the runtime, so spawned client tasks progress) until it holds.
async fn until(fake: &FakeKube, what: &str, mut f: impl FnMut() -> bool) {
    within(fake, what, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// [`await_condition`] owning its name, so it can be spawned.
async fn wait_owned<K>(
    api: Api<K>,
    name: String,
    cond: impl kube::runtime::wait::Condition<K>,
) -> Result<Option<K>, kube::runtime::wait::Error>
where
    K: Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + kube::Resource + 'static,
{
    await_condition(api, &name, cond).await
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(status) => *status,
        other => panic!("expected a Status from the API server, got {other:?}"),
    }
}

/// Lifetime (notAfter - notBefore) of the first certificate in `pem_text`, in seconds.
fn lifetime_secs(pem_text: &[u8]) -> i64 {
    let block = pem::parse(pem_text).expect("a PEM certificate");
    let (_, cert) =
        x509_parser::parse_x509_certificate(block.contents()).expect("a DER certificate");
    cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()
}

fn sans(pem_text: &[u8]) -> Vec<String> {
    let block = pem::parse(pem_text).expect("a PEM certificate");
    let (_, cert) =
        x509_parser::parse_x509_certificate(block.contents()).expect("a DER certificate");
    cert.subject_alternative_name()
        .expect("a well-formed SAN extension")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|n| n.to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn write(fake: &FakeKube, name: &str, contents: &[u8]) -> PathBuf {
    let path = fake.dir().join(name);
    std::fs::write(&path, contents).expect("write a scratch file");
    path
}

/// `curl` against the fake, verifying its serving certificate with the kubeconfig's CA.
/// Returns (HTTP status, body).
fn curl(
    fake: &FakeKube,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ])
    .arg("--cacert")
    .arg(fake.ca_pem_path());
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data",
            &b.to_string(),
        ]);
    }
    cmd.arg(format!("{}{path}", fake.server_url()));
    let ran = run_bounded(&mut cmd, COMMAND_DEADLINE);
    assert!(
        ran.status.success(),
        "curl failed (is curl installed? ./scripts/test.sh installs it)\n{}\n{}",
        ran.describe(),
        fake.describe()
    );
    let (body, code) = ran
        .stdout
        .rsplit_once('\n')
        .expect("curl printed the status");
    (
        code.trim().parse().expect("an HTTP status"),
        body.to_string(),
    )
}

fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

#[tokio::test]
async fn csr_is_signed_while_the_server_keeps_closing_watches() {
    let fake = FakeKube::start();
    fake.on_signer(SIGNER, Behaviour::NeverApprove);
    fake.close_watches_after(1);
    fake.set_bookmark_interval(None);
    let client = fake.client().await;
    let api: Api<CertificateSigningRequest> = Api::all(client);

    let pem = rcgen_csr("app.example.com");
    let created = within(
        &fake,
        "create",
        api.create(
            &PostParams::default(),
            &csr_object("pillion-", SIGNER, &pem, 600),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("create failed: {e}\n{}", fake.describe()));
    let name = created.metadata.name.clone().expect("the server named it");
    assert!(
        name.starts_with("pillion-") && name.len() == "pillion-".len() + 5,
        "generateName: {name}"
    );
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created.spec.username.as_deref(),
        Some(fake.username()),
        "the server records who asked"
    );
    let created_rv: u64 = created
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();

    // The client waits through list + watch; the approver acts only once a watch is open, and
    // every watch ends after one event, so the certificate arrives on a resumed watch.
    let waiter = tokio::spawn(wait_owned(
        api.clone(),
        name.clone(),
        |csr: Option<&CertificateSigningRequest>| {
            csr.and_then(|c| c.status.as_ref())
                .and_then(|s| s.certificate.as_ref())
                .is_some()
        },
    ));
    until(&fake, "the client to open a watch", || {
        fake.open_watches() > 0
    })
    .await;
    fake.apply_behaviour(CSR, None, &name, Behaviour::sign());
    let signed = within(&fake, "the certificate", waiter)
        .await
        .expect("the waiter did not panic")
        .unwrap_or_else(|e| panic!("await_condition failed: {e}\n{}", fake.describe()))
        .expect("the CSR still exists");

    let status = signed.status.expect("status");
    let approved = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Approved")
        .expect("an Approved condition");
    assert_eq!(approved.status, "True");
    let cert = status.certificate.expect("a certificate").0;
    let cert_path = write(&fake, "csr.crt", &cert);
    openssl_verify(fake.signing_ca_pem_path(), &cert_path)
        .unwrap_or_else(|e| panic!("the issued certificate does not verify\n{e}"));
    assert_eq!(lifetime_secs(&cert), 600, "expirationSeconds is honoured");
    assert_eq!(sans(&cert), vec!["DNSName(app.example.com)".to_string()]);

    let watches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.is_watch())
        .collect();
    assert!(
        watches.len() >= 2,
        "the client had to resume its watch\n{}",
        fake.describe()
    );
    let mut last_rv = created_rv - 1;
    for w in &watches {
        assert_eq!(
            w.param("fieldSelector").as_deref(),
            Some(format!("metadata.name={name}").as_str())
        );
        let rv: u64 = w
            .param("resourceVersion")
            .expect("a watch resumes from a resourceVersion")
            .parse()
            .unwrap();
        assert!(
            rv > last_rv,
            "each watch resumes after the last event seen\n{}",
            fake.describe()
        );
        last_rv = rv;
    }

    let deleted = within(&fake, "delete", api.delete(&name, &DeleteParams::default()))
        .await
        .expect("delete");
    let deleted = deleted.right().expect("a CSR delete answers with a Status");
    assert!(deleted.is_success());
    assert!(fake.was_deleted(CSR, &name));
    let gone = api_error(
        within(&fake, "get", api.get(&name))
            .await
            .expect_err("deleted"),
    );
    assert_eq!(gone.code, 404);
    assert_eq!(gone.reason, "NotFound");
    assert_eq!(
        gone.message,
        format!("certificatesigningrequests.certificates.k8s.io \"{name}\" not found")
    );
}

#[tokio::test]
async fn forbidden_create_is_a_403_status_in_the_api_servers_words() {
    let fake = FakeKube::start();
    fake.forbid("create", "certificatesigningrequests");
    let api: Api<CertificateSigningRequest> = Api::all(fake.client().await);
    let pem = rcgen_csr("app.example.com");
    let err = within(
        &fake,
        "create",
        api.create(
            &PostParams::default(),
            &csr_object("pillion-", SIGNER, &pem, 600),
        ),
    )
    .await
    .expect_err("forbidden");
    let status = api_error(err);
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    assert_eq!(
        status.message,
        "certificatesigningrequests.certificates.k8s.io is forbidden: User \"system:serviceaccount:default:pillion\" \
         cannot create resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster scope"
    );
    assert!(fake.objects(CSR).is_empty());

    // A named get names the object, as RBAC denials do.
    fake.forbid("get", "certificatesigningrequests");
    let status = api_error(
        within(&fake, "get", api.get("x"))
            .await
            .expect_err("forbidden"),
    );
    assert_eq!(
        status.message,
        "certificatesigningrequests.certificates.k8s.io \"x\" is forbidden: User \"system:serviceaccount:default:pillion\" \
         cannot get resource \"certificatesigningrequests\" in API group \"certificates.k8s.io\" at the cluster scope"
    );
}

#[tokio::test]
async fn injected_server_errors_are_statuses_and_then_pass() {
    let fake = FakeKube::start();
    fake.fail_next("create", "certificatesigningrequests", 500, 1);
    let api: Api<CertificateSigningRequest> = Api::all(fake.client().await);
    let pem = rcgen_csr("app.example.com");
    let csr = csr_object("pillion-", SIGNER, &pem, 600);
    let status = api_error(
        within(&fake, "create", api.create(&PostParams::default(), &csr))
            .await
            .expect_err("injected"),
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    within(&fake, "create", api.create(&PostParams::default(), &csr))
        .await
        .expect("the next create passes");
    assert_eq!(fake.objects(CSR).len(), 1);
}

#[tokio::test]
async fn invalid_and_duplicate_csrs_are_422_and_409() {
    let fake = FakeKube::start();
    let api: Api<CertificateSigningRequest> = Api::all(fake.client().await);
    let pem = rcgen_csr("app.example.com");

    let mut short = csr_object("pillion-", SIGNER, &pem, 599);
    short.spec.usages = Some(vec!["server auth".into(), "bogus".into()]);
    let status = api_error(
        within(&fake, "create", api.create(&PostParams::default(), &short))
            .await
            .expect_err("invalid"),
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.contains("spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)"),
        "{}",
        status.message
    );
    assert!(
        status
            .message
            .contains("spec.usages[1]: Unsupported value: \"bogus\""),
        "{}",
        status.message
    );
    let causes = status.details.expect("details").causes;
    assert_eq!(causes.len(), 2, "{causes:?}");

    let mut named = csr_object("", SIGNER, &pem, 600);
    named.metadata.generate_name = None;
    named.metadata.name = Some("fixed".into());
    within(&fake, "create", api.create(&PostParams::default(), &named))
        .await
        .expect("first create");
    let status = api_error(
        within(&fake, "create", api.create(&PostParams::default(), &named))
            .await
            .expect_err("duplicate"),
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(
        status.message,
        "certificatesigningrequests.certificates.k8s.io \"fixed\" already exists"
    );
}

#[tokio::test]
async fn denied_csr_gets_a_denied_condition_and_no_certificate() {
    let fake = FakeKube::start();
    fake.on_signer(
        SIGNER,
        Behaviour::deny("PolicyDenied", "names outside the allowed domain"),
    );
    let api: Api<CertificateSigningRequest> = Api::all(fake.client().await);
    let pem = rcgen_csr("app.example.com");
    let created = within(
        &fake,
        "create",
        api.create(
            &PostParams::default(),
            &csr_object("pillion-", SIGNER, &pem, 600),
        ),
    )
    .await
    .expect("create");
    let name = created.metadata.name.unwrap();
    let denied = within(
        &fake,
        "the Denied condition",
        await_condition(
            api.clone(),
            &name,
            |csr: Option<&CertificateSigningRequest>| {
                csr.and_then(|c| c.status.as_ref())
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Denied"))
            },
        ),
    )
    .await
    .expect("await_condition")
    .expect("exists");
    let status = denied.status.unwrap();
    let cond = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Denied")
        .unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_deref()),
        ("True", Some("PolicyDenied"))
    );
    assert_eq!(
        cond.message.as_deref(),
        Some("names outside the allowed domain")
    );
    assert!(status.certificate.is_none());
}

#[tokio::test]
async fn resuming_from_a_compacted_resource_version_is_410_and_a_relist_recovers() {
    let fake = FakeKube::start();
    fake.on_signer(SIGNER, Behaviour::NeverApprove);
    // A bookmark sent after the compaction would let the client resume past it.
    fake.set_bookmark_interval(None);
    let api: Api<CertificateSigningRequest> = Api::all(fake.client().await);
    let pem = rcgen_csr("app.example.com");
    let created = within(
        &fake,
        "create",
        api.create(
            &PostParams::default(),
            &csr_object("pillion-", SIGNER, &pem, 600),
        ),
    )
    .await
    .expect("create");
    let name = created.metadata.name.unwrap();
    let has_cert = |csr: Option<&CertificateSigningRequest>| {
        csr.and_then(|c| c.status.as_ref())
            .and_then(|s| s.certificate.as_ref())
            .is_some()
    };

    let waiter = tokio::spawn(wait_owned(api.clone(), name.clone(), has_cert));
    until(&fake, "the client to open a watch", || {
        fake.open_watches() > 0
    })
    .await;
    fake.compact();
    fake.close_all_watches();
    let err = within(&fake, "the watcher to see 410", waiter)
        .await
        .expect("no panic")
        .expect_err("resuming from a compacted resourceVersion fails");
    match &err {
        kube::runtime::wait::Error::ProbeFailed(kube::runtime::watcher::Error::WatchError(
            status,
        )) => {
            assert_eq!(status.code, 410, "{status:?}");
            assert_eq!(status.reason, "Expired");
        }
        other => panic!(
            "expected a 410 watch error, got {other:?}\n{}",
            fake.describe()
        ),
    }
    assert_eq!(fake.expired_watches(), 1);

    // Waiting again lists afresh and then sees the certificate.
    let waiter = tokio::spawn(wait_owned(api.clone(), name.clone(), has_cert));
    until(&fake, "the client to watch again", || {
        fake.open_watches() > 0
    })
    .await;
    fake.apply_behaviour(CSR, None, &name, Behaviour::sign());
    within(&fake, "the certificate", waiter)
        .await
        .expect("no panic")
        .expect("await_condition")
        .expect("exists");
    let lists = fake
        .requests()
        .iter()
        .filter(|r| r.is_list("certificatesigningrequests"))
        .count();
    assert_eq!(lists, 2, "one list per wait\n{}", fake.describe());
}

#[tokio::test]
async fn paused_api_server_refuses_connections_then_serves_again() {
    let fake = FakeKube::start();
    let api: Api<CertificateSigningRequest> = Api::all(fake.client().await);
    within(&fake, "list", api.list(&ListParams::default()))
        .await
        .expect("list while up");
    fake.pause();
    let err = within(&fake, "list", api.list(&ListParams::default()))
        .await
        .expect_err("the server is down");
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "no HTTP answer while paused: {err:?}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", fake.port())).is_err(),
        "connections are refused"
    );
    fake.resume();
    let list = within(&fake, "list", api.list(&ListParams::default()))
        .await
        .expect("list after resume");
    assert!(list.items.is_empty());
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.is_list("certificatesigningrequests"))
            .count(),
        2
    );
}

#[tokio::test]
async fn cert_manager_request_reaches_ready_with_certificate_and_ca() {
    let fake = FakeKube::start();
    fake.on_issuer(
        "ca-issuer",
        Behaviour::sign_after(Duration::from_millis(200)),
    );
    let client = fake.client().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let pem = openssl_csr(fake.dir(), "svc.example.com");
    let mut cr = DynamicObject::new("", &ar).data(json!({
        "spec": {
            "request": fake_kube::b64(pem.as_bytes()),
            "issuerRef": {"name": "ca-issuer", "kind": "Issuer", "group": "cert-manager.io"},
            "duration": "1h",
            "usages": ["digital signature", "key encipherment", "server auth"],
        }
    }));
    cr.metadata.name = None;
    cr.metadata.generate_name = Some("pillion-".into());
    let created = within(&fake, "create", api.create(&PostParams::default(), &cr))
        .await
        .unwrap_or_else(|e| panic!("create failed: {e}\n{}", fake.describe()));
    let name = created.metadata.name.clone().unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));

    let ready = within(
        &fake,
        "Ready=True",
        await_condition(api.clone(), &name, |o: Option<&DynamicObject>| {
            o.and_then(|o| condition(&o.data, "Ready"))
                .is_some_and(|c| c["status"] == "True")
        }),
    )
    .await
    .expect("await_condition")
    .expect("exists");
    assert_eq!(
        condition(&ready.data, "Approved").unwrap()["status"],
        "True"
    );
    let cert =
        fake_kube::b64_decode(ready.data["status"]["certificate"].as_str().unwrap()).unwrap();
    let ca = fake_kube::b64_decode(ready.data["status"]["ca"].as_str().unwrap()).unwrap();
    assert_eq!(
        ca,
        fake.signing_ca_pem().as_bytes(),
        "status.ca is the issuing CA"
    );
    let ca_path = write(&fake, "cm-ca.pem", &ca);
    let cert_path = write(&fake, "cm.crt", &cert);
    openssl_verify(&ca_path, &cert_path).unwrap_or_else(|e| panic!("does not verify\n{e}"));
    assert_eq!(lifetime_secs(&cert), 3600, "spec.duration is honoured");
    assert_eq!(sans(&cert), vec!["DNSName(svc.example.com)".to_string()]);

    let deleted = within(&fake, "delete", api.delete(&name, &DeleteParams::default()))
        .await
        .expect("delete");
    assert!(
        deleted.left().is_some(),
        "a custom resource delete answers with the object"
    );
    assert!(fake.was_deleted(CERTIFICATE_REQUEST, &name));
}

#[tokio::test]
async fn cert_manager_failures_are_conditions_and_statuses() {
    let fake = FakeKube::start();
    fake.on_issuer(
        "picky",
        Behaviour::invalid_request("BadConfig", "the CSR names a forbidden domain"),
    );
    fake.on_issuer(
        "strict",
        Behaviour::deny("policy.cert-manager.io", "no policy allows this"),
    );
    let client = fake.client().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "CertificateRequest"),
        "certificaterequests",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let pem = rcgen_csr("svc.example.com");
    let request = |name: &str, issuer: &str| {
        DynamicObject::new(name, &ar).data(json!({
            "spec": {"request": fake_kube::b64(pem.as_bytes()), "issuerRef": {"name": issuer}}
        }))
    };
    let failed = |o: Option<&DynamicObject>| {
        o.and_then(|o| condition(&o.data, "Ready"))
            .is_some_and(|c| c["status"] == "False" && c["reason"] != "Pending")
    };

    within(
        &fake,
        "create",
        api.create(&PostParams::default(), &request("bad", "picky")),
    )
    .await
    .expect("create");
    let bad = within(
        &fake,
        "failure",
        await_condition(api.clone(), "bad", failed),
    )
    .await
    .unwrap()
    .unwrap();
    let invalid = condition(&bad.data, "InvalidRequest").expect("an InvalidRequest condition");
    assert_eq!(
        (invalid["status"].as_str(), invalid["reason"].as_str()),
        (Some("True"), Some("BadConfig"))
    );
    assert_eq!(condition(&bad.data, "Ready").unwrap()["reason"], "Failed");
    assert!(bad.data["status"]["failureTime"].is_string());

    within(
        &fake,
        "create",
        api.create(&PostParams::default(), &request("no", "strict")),
    )
    .await
    .expect("create");
    let no = within(&fake, "denial", await_condition(api.clone(), "no", failed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(condition(&no.data, "Denied").unwrap()["status"], "True");
    assert_eq!(condition(&no.data, "Ready").unwrap()["reason"], "Denied");

    // A namespace that does not exist, and a request that is no CSR.
    let elsewhere: Api<DynamicObject> = Api::namespaced_with(client, "nope", &ar);
    let status = api_error(
        within(
            &fake,
            "create",
            elsewhere.create(&PostParams::default(), &request("x", "picky")),
        )
        .await
        .expect_err("404"),
    );
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );
    let mut garbage = request("garbage", "picky");
    garbage.data["spec"]["request"] = json!(fake_kube::b64(b"not a csr"));
    let status = api_error(
        within(
            &fake,
            "create",
            api.create(&PostParams::default(), &garbage),
        )
        .await
        .expect_err("denied"),
    );
    assert_eq!(status.code, 403);
    assert!(
        status.message.starts_with("admission webhook \"webhook.cert-manager.io\" denied the request: spec.request: Invalid value:"),
        "{}",
        status.message
    );
}

#[test]
fn wire_format_of_list_and_watch_is_the_apis() {
    let fake = FakeKube::start();
    fake.set_bookmark_interval(None);
    let token = fake.token().to_string();
    let pem = rcgen_csr("app.example.com");
    let body = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "wire", "labels": {"app": "pillion"}},
        "spec": {
            "request": fake_kube::b64(pem.as_bytes()),
            "signerName": SIGNER,
            "usages": ["client auth"],
        }
    });
    let base = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let (code, created) = curl(&fake, Some(&token), "POST", base, Some(&body));
    assert_eq!(code, 201, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    let created_rv: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // The signer approves and signs: two MODIFIED events after the ADDED one.
    common::wait_for("the certificate", DEADLINE, || {
        fake.object(CSR, None, "wire")
            .is_some_and(|o| o["status"]["certificate"].is_string())
    });

    let (code, list) = curl(
        &fake,
        Some(&token),
        "GET",
        &format!("{base}?labelSelector=app%3Dpillion"),
        None,
    );
    assert_eq!(code, 200, "{list}");
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["kind"], "CertificateSigningRequestList");
    assert_eq!(list["apiVersion"], "certificates.k8s.io/v1");
    let list_rv: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(list_rv, created_rv + 2);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(
        list["items"][0].get("kind").is_none(),
        "built-in list items carry no kind"
    );
    let (_, none) = curl(
        &fake,
        Some(&token),
        "GET",
        &format!("{base}?labelSelector=app%21%3Dpillion"),
        None,
    );
    assert_eq!(
        serde_json::from_str::<Value>(&none).unwrap()["items"],
        json!([])
    );

    // A watch from the create's resourceVersion replays what happened since, one JSON per line.
    fake.close_watches_after(2);
    let (code, stream) = curl(
        &fake,
        Some(&token),
        "GET",
        &format!("{base}?watch=1&resourceVersion={created_rv}&fieldSelector=metadata.name%3Dwire"),
        None,
    );
    assert_eq!(code, 200);
    let events: Vec<Value> = stream
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(events.len(), 2, "{stream}");
    assert!(events
        .iter()
        .all(|e| e["type"] == "MODIFIED" && e["object"]["kind"] == "CertificateSigningRequest"));
    assert_eq!(
        events[1]["object"]["metadata"]["resourceVersion"],
        json!(list_rv.to_string())
    );

    // After compaction the same watch is a 410 ERROR event.
    fake.compact();
    let (code, stream) = curl(
        &fake,
        Some(&token),
        "GET",
        &format!("{base}?watch=true&resourceVersion={created_rv}"),
        None,
    );
    assert_eq!(code, 200);
    let event: Value = serde_json::from_str(stream.trim()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["kind"], "Status");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");

    // No token: 401 Status.
    let (code, body) = curl(&fake, None, "GET", base, None);
    assert_eq!(code, 401);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("Unauthorized"))
    );
}

#[test]
fn token_review_authenticates_registered_tokens_only() {
    let fake = FakeKube::start();
    let reviewer = fake.token().to_string();
    fake.register_service_account_token("opaque-token", "apps", "web");
    let jwt = fake.mint_service_account_token("apps", "web", &["vault"]);
    let review = |token: &str, audiences: &[&str]| {
        let mut body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        });
        if !audiences.is_empty() {
            body["spec"]["audiences"] = json!(audiences);
        }
        let (code, text) = curl(
            &fake,
            Some(&reviewer),
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(&body),
        );
        assert_eq!(code, 201, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["kind"], "TokenReview");
        v["status"].clone()
    };

    let ok = review("opaque-token", &[]);
    assert_eq!(ok["authenticated"], true);
    assert_eq!(ok["user"]["username"], "system:serviceaccount:apps:web");
    assert!(ok["user"]["uid"].is_string());
    assert_eq!(ok["audiences"], json!([fake_kube::API_AUDIENCE]));

    let by_jwt = review(&jwt, &["vault"]);
    assert_eq!(by_jwt["authenticated"], true);
    assert_eq!(
        by_jwt["user"]["uid"], ok["user"]["uid"],
        "one service account, one uid"
    );
    assert_eq!(by_jwt["audiences"], json!(["vault"]));
    // The JWT carries the claims OpenBao reads before it asks.
    let claims = jwt.split('.').nth(1).unwrap();
    let claims = fake_kube::b64_decode(&claims.replace('-', "+").replace('_', "/")).unwrap();
    let claims: Value = serde_json::from_slice(&claims).unwrap();
    assert_eq!(
        claims["kubernetes.io"]["serviceaccount"]["uid"],
        ok["user"]["uid"]
    );

    let wrong_audience = review(&jwt, &["elsewhere"]);
    assert!(wrong_audience.get("authenticated").is_none());
    assert!(wrong_audience["error"]
        .as_str()
        .unwrap()
        .contains("invalid bearer token"));

    let unknown = review("never-registered", &[]);
    assert!(unknown.get("authenticated").is_none(), "{unknown}");
    assert_eq!(unknown["user"], json!({}));

    fake.revoke_token("opaque-token");
    assert!(review("opaque-token", &[]).get("authenticated").is_none());

    // A bad reviewer token is a 401 Status; a forbidden reviewer a 403.
    let body = json!({"spec": {"token": "x"}});
    let (code, _) = curl(
        &fake,
        Some("wrong"),
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        Some(&body),
    );
    assert_eq!(code, 401);
    fake.forbid("create", "tokenreviews");
    let (code, text) = curl(
        &fake,
        Some(&reviewer),
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        Some(&body),
    );
    assert_eq!(code, 403);
    assert!(text.contains("tokenreviews.authentication.k8s.io is forbidden: User \\\"system:serviceaccount:default:pillion\\\" cannot create resource \\\"tokenreviews\\\" in API group \\\"authentication.k8s.io\\\" at the cluster scope"), "{text}");
}

#[tokio::test]
async fn discovery_and_version_answer_like_an_api_server() {
    let fake = FakeKube::start();
    let client = fake.client().await;
    let version = within(&fake, "version", client.apiserver_version())
        .await
        .expect("/version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    let groups = within(&fake, "groups", client.list_api_groups())
        .await
        .expect("/apis");
    let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
    assert!(
        names.contains(&"certificates.k8s.io") && names.contains(&"cert-manager.io"),
        "{names:?}"
    );
    let resources = within(
        &fake,
        "resources",
        client.list_api_group_resources("certificates.k8s.io/v1"),
    )
    .await
    .expect("/apis/certificates.k8s.io/v1");
    assert!(resources
        .resources
        .iter()
        .any(|r| r.name == "certificatesigningrequests" && r.kind == "CertificateSigningRequest"));
}

#[test]
fn openbao_kubernetes_auth_logs_in_through_the_fakes_token_review() {
    let fake = FakeKube::start();
    let bao = common::openbao::OpenBao::start();
    bao.bao_ok(["auth", "enable", "kubernetes"]);
    bao.bao_ok([
        "write".to_string(),
        "auth/kubernetes/config".to_string(),
        format!("kubernetes_host={}", fake.server_url()),
        format!("kubernetes_ca_cert=@{}", fake.ca_pem_path().display()),
        format!("token_reviewer_jwt={}", fake.token()),
    ]);
    bao.bao_ok([
        "write",
        "auth/kubernetes/role/web",
        "bound_service_account_names=web",
        "bound_service_account_namespaces=apps",
        "audience=vault",
        "token_policies=default",
    ]);
    let login = |jwt: &str| {
        bao.bao([
            "write".to_string(),
            "-format=json".to_string(),
            "auth/kubernetes/login".to_string(),
            "role=web".to_string(),
            format!("jwt={jwt}"),
        ])
    };

    let jwt = fake.mint_service_account_token("apps", "web", &["vault"]);
    let ran = login(&jwt);
    assert!(
        ran.status.success(),
        "login failed\n{}\n{}",
        ran.describe(),
        fake.describe()
    );
    let answer: Value = serde_json::from_str(&ran.stdout).expect("bao printed JSON");
    let meta = &answer["auth"]["metadata"];
    assert_eq!(meta["service_account_name"], "web");
    assert_eq!(meta["service_account_namespace"], "apps");

    // OpenBao asked the fake, as the reviewer, about exactly this token.
    let reviews: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/apis/authentication.k8s.io/v1/tokenreviews")
        .collect();
    assert_eq!(reviews.len(), 1, "{}", fake.describe());
    assert_eq!(reviews[0].user.as_deref(), Some(fake.username()));
    assert_eq!(reviews[0].status, 201);
    let sent = reviews[0].body.as_ref().expect("a JSON body");
    assert_eq!(sent["spec"]["token"], jwt.as_str());
    assert_eq!(sent["spec"]["audiences"], json!(["vault"]));

    // The API server no longer vouches for it: OpenBao refuses the login.
    fake.revoke_token(&jwt);
    let ran = login(&jwt);
    assert!(
        !ran.status.success(),
        "a revoked token must not log in\n{}",
        ran.describe()
    );
    assert!(
        ran.stderr.contains("permission denied"),
        "{}",
        ran.describe()
    );
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.path.ends_with("/tokenreviews"))
            .count(),
        2
    );
}
