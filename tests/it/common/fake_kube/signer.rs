//! The approver and signer behind the API (kube-controller-manager's CSR approver and signer,
//! cert-manager's approver and CA issuer): what a test tells it to do with new requests
//! ([`Behaviour`]), the conditions it sets, and signing with the fake's signing CA.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::helpers::{b64, b64_decode, parse_go_duration, rfc3339, str_at, unix_now};
use super::resources::{ObjKey, Res};
use super::server::FakeKube;
use super::state::Shared;
use super::validation::parse_csr_pem;

/// Default lifetime of a CSR certificate without `expirationSeconds`: kube-controller-manager's
/// `--cluster-signing-duration` default (one year).
const DEFAULT_CSR_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Default lifetime of a cert-manager certificate without `spec.duration` (cert-manager's
/// `DefaultCertificateDuration`, 90 days).
const DEFAULT_CERT_MANAGER_DURATION: Duration = Duration::from_secs(90 * 24 * 3600);

/// What the approver/signer does with a new request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Approve at once, wait `delay`, then sign with the signing CA (CSR: `status.certificate`;
    /// cert-manager: `status.certificate`, `status.ca` and `Ready=True`).
    ApproveAndSign { delay: Duration },
    /// Deny (CSR: condition `Denied`; cert-manager: condition `Denied=True`, then
    /// `Ready=False` reason `Denied` and `failureTime`).
    Deny { reason: String, message: String },
    /// Approve, then fail (CSR: condition `Failed` with this reason and message; cert-manager:
    /// `Ready=False` reason `Failed` with this message and `failureTime`, as cert-manager's
    /// Ready reasons are fixed and `reason` is unused).
    Fail { reason: String, message: String },
    /// Approve and never sign.
    ApproveNeverSign,
    /// Do nothing: no approver runs (a signer still signs once the client approves through the
    /// `approval` subresource).
    NeverApprove,
    /// cert-manager: approve, then `InvalidRequest=True` with this reason and message and
    /// `Ready=False` reason `Failed`. A CSR has no such condition: it gets `Failed` instead.
    InvalidRequest { reason: String, message: String },
}

impl Behaviour {
    /// Approve and sign at once.
    pub fn sign() -> Behaviour {
        Behaviour::ApproveAndSign {
            delay: Duration::ZERO,
        }
    }

    pub fn sign_after(delay: Duration) -> Behaviour {
        Behaviour::ApproveAndSign { delay }
    }

    pub fn deny(reason: &str, message: &str) -> Behaviour {
        Behaviour::Deny {
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn fail(reason: &str, message: &str) -> Behaviour {
        Behaviour::Fail {
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn invalid_request(reason: &str, message: &str) -> Behaviour {
        Behaviour::InvalidRequest {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

impl FakeKube {
    /// What the approver/signer does with CSRs for `signer_name` created from now on.
    pub fn on_signer(&self, signer_name: &str, behaviour: Behaviour) {
        self.lock()
            .signer_behaviours
            .insert(signer_name.to_string(), behaviour);
    }

    /// What cert-manager does with CertificateRequests whose `issuerRef.name` is `issuer`,
    /// created from now on.
    pub fn on_issuer(&self, issuer: &str, behaviour: Behaviour) {
        self.lock()
            .issuer_behaviours
            .insert(issuer.to_string(), behaviour);
    }

    /// Applies `behaviour` now to an existing request (`kind` [`CSR`] or
    /// [`CERTIFICATE_REQUEST`]; `namespace` None for a CSR), e.g. to sign a request that was
    /// left pending. Panics when the object does not exist.
    pub fn apply_behaviour(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        behaviour: Behaviour,
    ) {
        let res = Res::from_name(kind).unwrap_or_else(|| panic!("unknown kind {kind:?}"));
        let key = ObjKey::new(res, namespace.unwrap_or(""), name);
        let uid = {
            let st = self.lock();
            let obj = st
                .objects
                .get(&key)
                .unwrap_or_else(|| panic!("no {kind} {namespace:?}/{name} in the fake"));
            str_at(obj, "/metadata/uid").to_string()
        };
        // The runtime lives on the server thread: hand the task over through the state.
        self.lock().pending_tasks.push((key, uid, behaviour));
        self.shared.rv_tx.send_modify(|_| {});
    }

    /// Caps every certificate's lifetime (kube-controller-manager's
    /// `--cluster-signing-duration`; also applied to cert-manager). None: no cap.
    pub fn set_max_signing_duration(&self, max: Option<Duration>) {
        self.lock().max_signing_duration = max;
    }
}

/// Runs behaviours handed over by [`FakeKube::apply_behaviour`] (called from the test thread,
/// outside this runtime).
pub(super) async fn task_runner(shared: Arc<Shared>) {
    let mut rx = shared.rv_tx.subscribe();
    loop {
        let tasks = std::mem::take(&mut shared.lock().pending_tasks);
        for (key, uid, behaviour) in tasks {
            tokio::spawn(run_behaviour(shared.clone(), key, uid, behaviour));
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

pub(super) fn has_condition(obj: &Value, ty: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

/// Sets condition `ty` (replacing one of the same type; the transition time stays when the
/// status does not change).
fn set_condition(obj: &mut Value, res: Res, ty: &str, status: &str, reason: &str, message: &str) {
    let now = rfc3339(unix_now());
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    let conditions = obj["status"]
        .as_object_mut()
        .expect("made an object above")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("made an array above");
    let previous = list.iter().position(|c| c["type"] == ty);
    let transition = match previous {
        Some(i) if list[i]["status"] == status => list[i]["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let mut c = json!({
        "type": ty,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    });
    if res == Res::Csr {
        c["lastUpdateTime"] = json!(now);
    }
    match previous {
        Some(i) => list[i] = c,
        None => list.push(c),
    }
}

/// Changes the object `key` (if it still is the one with `object_uid`) and sends MODIFIED.
/// Returns false when it is gone.
fn modify(shared: &Shared, key: &ObjKey, object_uid: &str, f: impl FnOnce(&mut Value)) -> bool {
    let mut st = shared.lock();
    let Some(obj) = st.objects.get(key) else {
        return false;
    };
    if str_at(obj, "/metadata/uid") != object_uid {
        return false;
    }
    let mut obj = obj.clone();
    f(&mut obj);
    st.put(key, obj, "MODIFIED");
    shared.commit(st);
    true
}

fn approve(shared: &Shared, key: &ObjKey, object_uid: &str) -> bool {
    modify(shared, key, object_uid, |o| match key.res {
        Res::Csr => set_condition(
            o,
            key.res,
            "Approved",
            "True",
            "AutoApproved",
            "Auto approving certificate after SubjectAccessReview.",
        ),
        Res::CertificateRequest => {
            set_condition(
                o,
                key.res,
                "Approved",
                "True",
                "cert-manager.io",
                "Certificate request has been approved by cert-manager.io",
            );
            set_condition(
                o,
                key.res,
                "Ready",
                "False",
                "Pending",
                "Certificate issuance pending",
            );
        }
    })
}

pub(super) async fn run_behaviour(
    shared: Arc<Shared>,
    key: ObjKey,
    object_uid: String,
    behaviour: Behaviour,
) {
    let res = key.res;
    let failure_time = |o: &mut Value| {
        if o["status"]["failureTime"].is_null() {
            o["status"]["failureTime"] = json!(rfc3339(unix_now()));
        }
    };
    match behaviour {
        Behaviour::NeverApprove => {}
        Behaviour::ApproveNeverSign => {
            approve(&shared, &key, &object_uid);
        }
        Behaviour::ApproveAndSign { delay } => {
            if approve(&shared, &key, &object_uid) {
                tokio::time::sleep(delay).await;
                sign_task(shared, key, object_uid).await;
            }
        }
        Behaviour::Deny { reason, message } => {
            modify(&shared, &key, &object_uid, |o| {
                set_condition(o, res, "Denied", "True", &reason, &message);
                if res == Res::CertificateRequest {
                    set_condition(
                        o,
                        res,
                        "Ready",
                        "False",
                        "Denied",
                        "The CertificateRequest was denied by an approval controller",
                    );
                    failure_time(o);
                }
            });
        }
        Behaviour::Fail { reason, message } => {
            if approve(&shared, &key, &object_uid) {
                modify(&shared, &key, &object_uid, |o| match res {
                    Res::Csr => set_condition(o, res, "Failed", "True", &reason, &message),
                    Res::CertificateRequest => {
                        set_condition(o, res, "Ready", "False", "Failed", &message);
                        failure_time(o);
                    }
                });
            }
        }
        Behaviour::InvalidRequest { reason, message } => {
            if approve(&shared, &key, &object_uid) {
                modify(&shared, &key, &object_uid, |o| match res {
                    Res::Csr => set_condition(o, res, "Failed", "True", &reason, &message),
                    Res::CertificateRequest => {
                        set_condition(o, res, "InvalidRequest", "True", &reason, &message);
                        set_condition(o, res, "Ready", "False", "Failed", &message);
                        failure_time(o);
                    }
                });
            }
        }
    }
}

/// Signs the request `key` with the signing CA and publishes the certificate.
pub(super) async fn sign_task(shared: Arc<Shared>, key: ObjKey, object_uid: String) {
    let res = key.res;
    let (spec, max) = {
        let st = shared.lock();
        let Some(obj) = st.objects.get(&key) else {
            return;
        };
        (obj["spec"].clone(), st.max_signing_duration)
    };
    let usages: Vec<String> = spec["usages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let usages = if usages.is_empty() {
        // cert-manager's defaults when a request names none.
        vec![
            "digital signature".to_string(),
            "key encipherment".to_string(),
        ]
    } else {
        usages
    };
    let mut lifetime = match res {
        Res::Csr => spec["expirationSeconds"]
            .as_u64()
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_CSR_DURATION),
        Res::CertificateRequest => spec["duration"]
            .as_str()
            .and_then(parse_go_duration)
            .unwrap_or(DEFAULT_CERT_MANAGER_DURATION),
    };
    if let Some(max) = max {
        lifetime = lifetime.min(max);
    }
    let signed = b64_decode(str_at(&spec, "/request"))
        .ok_or_else(|| "bad base64".to_string())
        .and_then(|pem| parse_csr_pem(&pem))
        .and_then(|der| shared.signing.sign(&der, &usages, lifetime));
    let ca = shared.signing.cert_pem.clone();
    modify(&shared, &key, &object_uid, |o| match (res, signed) {
        (Res::Csr, Ok(cert)) => o["status"]["certificate"] = json!(b64(cert.as_bytes())),
        (Res::Csr, Err(e)) => {
            set_condition(o, res, "Failed", "True", "SignerValidationFailure", &e)
        }
        (Res::CertificateRequest, Ok(cert)) => {
            o["status"]["certificate"] = json!(b64(cert.as_bytes()));
            o["status"]["ca"] = json!(b64(ca.as_bytes()));
            set_condition(
                o,
                res,
                "Ready",
                "True",
                "Issued",
                "Certificate fetched from issuer successfully",
            );
        }
        (Res::CertificateRequest, Err(e)) => {
            set_condition(o, res, "Ready", "False", "Failed", &e);
        }
    });
}
