//! The controllers a cluster runs beside the API server that the tests play: a signer for
//! CertificateSigningRequests (approval through the `approval` subresource, as `kubectl
//! certificate approve` does; the certificate through `status`, as kube-controller-manager's
//! signer does), and the approver of cert-manager's CertificateRequests (as approver-policy
//! does; cert-manager's own CA issuer signs) or an external issuer that refuses them. Each acts
//! only on the requests of its own signer or issuer name, so tests sharing one control plane
//! never answer each other's requests, and stops when dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::control_plane::{Admin, ControlPlane};
use super::kube_case::base64_decode;

/// How often a test controller looks at the requests.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// What a CSR signer does with each request for its signer name.
#[derive(Clone)]
pub enum Csr {
    /// Approves, then signs once `after` has passed since it first saw the request, for a day
    /// or for `lifetime` (a signer capping lifetimes, as kube-controller-manager's
    /// `--cluster-signing-duration` does).
    Signs {
        after: Duration,
        lifetime: Option<Duration>,
    },
    /// Approves, never signs.
    ApprovesOnly,
    /// Denies with this reason and message.
    Denies(&'static str, &'static str),
    /// Approves, then sets `Failed` with this reason and message (a signer that cannot sign).
    Fails(&'static str, &'static str),
}

impl Csr {
    /// Approves and signs at once, for a day.
    pub fn signs() -> Csr {
        Csr::Signs {
            after: Duration::ZERO,
            lifetime: None,
        }
    }
}

/// What the test does with each CertificateRequest for an issuer name: approve or deny it, as
/// approver-policy does (cert-manager's CA issuer then signs it, or marks it Ready=False
/// `Denied`); or, for an external issuer (an `issuerRef.group` other than cert-manager.io, which
/// cert-manager's own controllers leave alone), approve it and refuse it as an external issuer
/// does.
#[derive(Clone)]
pub enum Issuer {
    /// Approves; cert-manager signs.
    Approves,
    /// Denies with this reason and message.
    Denies(&'static str, &'static str),
    /// An external issuer: approves, then `InvalidRequest=True` with this reason and message
    /// and `Ready=False` reason `Failed`.
    Invalid(&'static str, &'static str),
    /// An external issuer: approves, then `Ready=False` reason `Failed` with this message
    /// (cert-manager's Ready reasons are fixed).
    Fails(&'static str),
}

/// A test controller on its own thread; stopped (and joined) on drop.
pub struct Controller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    issued: Issued,
}

/// The certificates a controller wrote: (the request's name, `status.certificate`).
type Issued = Arc<Mutex<Vec<(String, String)>>>;

impl Controller {
    /// The certificates this controller wrote into requests' status, by request name, base64
    /// as `status.certificate` holds them.
    pub fn issued(&self) -> Vec<(String, String)> {
        self.issued.lock().unwrap().clone()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn spawn(work: impl FnMut(&Admin, &Issued) + Send + 'static, admin: Admin) -> Controller {
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Issued::default();
    let thread = {
        let (stop, issued) = (stop.clone(), issued.clone());
        let mut work = work;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                work(&admin, &issued);
                std::thread::sleep(LOOK_EVERY);
            }
        })
    };
    Controller {
        stop,
        thread: Some(thread),
        issued,
    }
}

/// Writes `object` back through `path` (a status or approval subresource); a written
/// `status.certificate` is recorded in `issued`. A conflict (the object changed meanwhile) is
/// retried at the next look.
fn put(admin: &Admin, issued: &Issued, path: &str, object: &Value) {
    if admin.request("PUT", path, Some(object)).is_ok() {
        if let Some(certificate) = object["status"]["certificate"].as_str() {
            let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
            issued.lock().unwrap().push((name, certificate.to_owned()));
        }
    }
}

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

/// A signer for `signer_name` on `plane`, doing `mode` with every CSR that names it.
pub fn csr_signer(plane: &ControlPlane, signer_name: &str, mode: Csr) -> Controller {
    let selector = format!(
        "?fieldSelector=spec.signerName%3D{}",
        signer_name.replace('/', "%2F")
    );
    let mut first_seen: HashMap<String, Instant> = HashMap::new();
    let work = move |admin: &Admin, issued: &Issued| {
        let list = admin
            .request("GET", &format!("{CSRS}{selector}"), None)
            .unwrap_or_default();
        for mut csr in list["items"].as_array().cloned().unwrap_or_default() {
            let name = csr["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let seen = *first_seen.entry(name.clone()).or_insert_with(Instant::now);
            let mut conditions = csr["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if conditions.is_empty() {
                conditions.push(match mode {
                    Csr::Denies(reason, message) => json!({
                        "type": "Denied", "status": "True", "reason": reason, "message": message,
                    }),
                    _ => json!({
                        "type": "Approved", "status": "True", "reason": "KubectlApprove",
                        "message": "approved by the pillion test signer",
                    }),
                });
                csr["status"]["conditions"] = Value::Array(conditions);
                put(admin, issued, &format!("{CSRS}/{name}/approval"), &csr);
                continue;
            }
            let done = csr["status"]["certificate"].is_string()
                || conditions
                    .iter()
                    .any(|c| c["type"] == "Failed" || c["type"] == "Denied");
            if done {
                continue;
            }
            match &mode {
                Csr::Fails(reason, message) => {
                    conditions.push(json!({
                        "type": "Failed", "status": "True", "reason": reason, "message": message,
                    }));
                    csr["status"]["conditions"] = Value::Array(conditions);
                }
                Csr::Signs { after, lifetime } if seen.elapsed() >= *after => {
                    let request = base64_decode(csr["spec"]["request"].as_str().unwrap());
                    csr["status"]["certificate"] = Value::String(admin.sign(&request, *lifetime));
                }
                _ => continue,
            }
            put(admin, issued, &format!("{CSRS}/{name}/status"), &csr);
        }
    };
    spawn(work, plane.client())
}

/// The approver (and, for [`Issuer::Invalid`] and [`Issuer::Fails`], the external issuer) for
/// CertificateRequests in `namespace` whose `issuerRef.name` is `issuer_name`, doing `mode` with
/// each through the status subresource.
pub fn cert_manager_approver(
    plane: &ControlPlane,
    namespace: &str,
    issuer_name: &str,
    mode: Issuer,
) -> Controller {
    let collection = format!("/apis/cert-manager.io/v1/namespaces/{namespace}/certificaterequests");
    let issuer_name = issuer_name.to_owned();
    let work = move |admin: &Admin, issued: &Issued| {
        let list = admin.request("GET", &collection, None).unwrap_or_default();
        for mut cr in list["items"].as_array().cloned().unwrap_or_default() {
            if cr["spec"]["issuerRef"]["name"] != issuer_name.as_str() {
                continue;
            }
            let name = cr["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let status_path = format!("{collection}/{name}/status");
            let mut conditions = cr["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let condition = |kind: &str, status: &str, reason: &str, message: &str| {
                json!({"type": kind, "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": now})
            };
            let decided = conditions
                .iter()
                .any(|c| c["type"] == "Approved" || c["type"] == "Denied");
            if !decided {
                conditions.push(match mode {
                    Issuer::Denies(reason, message) => condition("Denied", "True", reason, message),
                    _ => condition(
                        "Approved",
                        "True",
                        "policy.cert-manager.io",
                        "approved by the pillion test approver",
                    ),
                });
            } else if conditions.iter().any(|c| c["type"] == "Ready") {
                continue;
            } else {
                match mode {
                    Issuer::Invalid(reason, message) => {
                        conditions.push(condition("InvalidRequest", "True", reason, message));
                        conditions.push(condition("Ready", "False", "Failed", message));
                    }
                    Issuer::Fails(message) => {
                        conditions.push(condition("Ready", "False", "Failed", message));
                    }
                    // cert-manager's own controllers take it from here.
                    Issuer::Approves | Issuer::Denies(..) => continue,
                }
                cr["status"]["failureTime"] = Value::String(now.clone());
            }
            cr["status"]["conditions"] = Value::Array(conditions);
            put(admin, issued, &status_path, &cr);
        }
    };
    spawn(work, plane.client())
}
