//! Cluster CAs reached through the Kubernetes API with the `kube` client: the
//! built-in CertificateSigningRequest API (`certificates.k8s.io/v1`) and
//! cert-manager's `CertificateRequest` (`cert-manager.io/v1`). Only the CSR
//! goes to the API; the key stays in the pod.
//!
//! Both create a request object, watch it (resuming the watch when the API
//! server ends it or goes away) until it is signed, refused or the deadline
//! passes, and delete it once done.

use std::fmt::Debug;
use std::path::PathBuf;
use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use crate::config::{CertManagerSpec, CertificateSpec, KubernetesCsrSpec};
use crate::keys::KeyAlgorithm;
use crate::pem;
use crate::verify::{split_chain, Issued};

/// The Kubernetes API refuses CSR lifetimes shorter than this
/// (`spec.expirationSeconds` minimum).
pub const MIN_EXPIRATION: Duration = Duration::from_secs(600);
/// Where the policies pillion needs are kept, for RBAC error messages.
const RBAC_POLICY_FILE: &str = "policies/kubernetes/";

/// Why a Kubernetes issuer (CSR API or cert-manager) gave no certificate.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No usable client configuration: a bad kubeconfig, or none at all.
    #[error(
        "failed to configure the Kubernetes client (in-cluster, $KUBECONFIG or ~/.kube/config)"
    )]
    Config(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The API answered 403: pillion's service account lacks an RBAC permission.
    #[error("RBAC forbids pillion to {verb} {resource}: {message}. Grant it with the Role/ClusterRole in {RBAC_POLICY_FILE}")]
    Forbidden {
        /// The refused verb: `create`, `list` or `watch`.
        verb: &'static str,
        /// The resource type, e.g. `certificatesigningrequests.certificates.k8s.io`;
        /// a cert-manager create adds its namespace.
        resource: String,
        /// The API server's Status message, verbatim.
        message: String,
    },
    /// The API refused a request with a status other than 403.
    #[error("the Kubernetes API refused to {verb} {resource}: {message} ({reason}, {code})")]
    Api {
        /// The refused verb, e.g. `create`.
        verb: &'static str,
        /// The resource type, e.g. `certificatesigningrequests.certificates.k8s.io`;
        /// a cert-manager create adds its namespace.
        resource: String,
        /// The API server's Status message, verbatim.
        message: String,
        /// The Status reason, e.g. `Invalid` or `AlreadyExists`.
        reason: String,
        /// The HTTP status code.
        code: u16,
    },
    /// The API server could not be reached or its answer could not be read.
    #[error("failed to {verb} {resource} through the Kubernetes API")]
    Transport {
        /// The verb attempted, e.g. `create`.
        verb: &'static str,
        /// The resource type, e.g. `certificatesigningrequests.certificates.k8s.io`;
        /// a cert-manager create adds its namespace.
        resource: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The request object has a `Denied` condition: an approver or policy refused it.
    #[error("{resource} was denied ({reason}): {message}")]
    Denied {
        /// The request object, by kind and name.
        resource: String,
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// The signer gave up on the request object: a `Failed` condition, or for
    /// cert-manager `InvalidRequest` or `Ready=False` with a final reason.
    #[error("{resource} failed ({reason}): {message}")]
    Failed {
        /// The request object, by kind and name.
        resource: String,
        /// The condition's reason; prefixed `InvalidRequest: ` for that condition.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// The request object was deleted (or the watch ended) before it was signed.
    #[error("{resource} was deleted before it was signed")]
    Deleted {
        /// The request object, by kind and name.
        resource: String,
    },
    /// The request object was still pending when the issuer's `timeout` ran out.
    #[error("{resource}: {state} within {}", humantime::format_duration(*timeout))]
    Deadline {
        /// The request object, by kind and name.
        resource: String,
        /// What it was last waiting on, with a hint (e.g. `not approved: …`).
        state: String,
        /// The configured `timeout` that passed.
        timeout: Duration,
    },
    /// The signed object's certificate or its CA does not parse as PEM.
    #[error("{resource} carries a certificate that is not PEM")]
    BadCertificate {
        /// The request object, by kind and name.
        resource: String,
    },
    /// The configured `caFile`, needed because the answer carried no CA, is unreadable
    /// or not PEM.
    #[error("failed to read the CA file {}", path.display())]
    ReadCa {
        /// The configured `caFile`.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// Signed, but no trust anchor for `ca.crt`: none in the answer, no
    /// `caFile`, and no root in the chain.
    #[error("{resource} is signed but no CA certificate is known to publish: set caFile")]
    NoCa {
        /// The request object, by kind and name.
        resource: String,
    },
}

/// A Kubernetes API client, connected lazily on first use.
pub struct Cluster {
    kubeconfig: Option<PathBuf>,
    client: tokio::sync::OnceCell<(kube::Client, String)>,
}

impl Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("kubeconfig", &self.kubeconfig)
            .field("connected", &self.client.initialized())
            .finish()
    }
}

impl Cluster {
    /// A client for `kubeconfig`, or the default configuration when `None`;
    /// nothing is read until first use.
    pub fn new(kubeconfig: Option<PathBuf>) -> Cluster {
        Cluster {
            kubeconfig,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The client and its default namespace: from the configured kubeconfig,
    /// else `$KUBECONFIG` / `~/.kube/config`, else the pod's in-cluster config.
    async fn client(&self) -> Result<&(kube::Client, String), KubeError> {
        self.client
            .get_or_try_init(|| async {
                let config = match &self.kubeconfig {
                    Some(path) => {
                        let kc = kube::config::Kubeconfig::read_from(path)
                            .map_err(|e| KubeError::Config(Box::new(e)))?;
                        kube::Config::from_custom_kubeconfig(
                            kc,
                            &kube::config::KubeConfigOptions::default(),
                        )
                        .await
                        .map_err(|e| KubeError::Config(Box::new(e)))?
                    }
                    None => kube::Config::infer()
                        .await
                        .map_err(|e| KubeError::Config(Box::new(e)))?,
                };
                let namespace = config.default_namespace.clone();
                let client =
                    kube::Client::try_from(config).map_err(|e| KubeError::Config(Box::new(e)))?;
                Ok((client, namespace))
            })
            .await
    }
}

/// Maps a client error to what the user should know: RBAC, the API's own
/// words, or a transport failure.
fn api_error(e: kube::Error, verb: &'static str, resource: &str) -> KubeError {
    match e {
        kube::Error::Api(status) if status.code == 403 => KubeError::Forbidden {
            verb,
            resource: resource.to_owned(),
            message: status.message.clone(),
        },
        kube::Error::Api(status) => KubeError::Api {
            verb,
            resource: resource.to_owned(),
            message: status.message.clone(),
            reason: status.reason.clone(),
            code: status.code,
        },
        other => KubeError::Transport {
            verb,
            resource: resource.to_owned(),
            source: other,
        },
    }
}

/// What a request object says about its progress.
pub(crate) enum Progress {
    /// Still waiting; the text says on what, for the deadline message.
    Pending(String),
    Signed(Issued),
    Refused(KubeError),
}

/// Watches one object until `check` is no longer pending or `timeout`
/// passes. The watch is resumed (with backoff) when the server ends it or the
/// API is unreachable; those interruptions are logged, not fatal.
async fn wait_for<K>(
    api: Api<K>,
    name: &str,
    api_resource: &str,
    resource: &str,
    timeout: Duration,
    check: impl Fn(&K) -> Progress,
) -> Result<Issued, KubeError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let fields = format!("metadata.name={name}");
    let mut stream =
        pin!(watcher(api, watcher::Config::default().fields(&fields)).default_backoff());
    let mut state = "no answer yet".to_owned();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return Err(KubeError::Deadline {
                    resource: resource.to_owned(),
                    state,
                    timeout,
                })
            }
            Ok(None) => {
                return Err(KubeError::Deleted {
                    resource: resource.to_owned(),
                })
            }
            Ok(Some(e)) => e,
        };
        match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => match check(&obj) {
                Progress::Pending(s) => {
                    if s != state {
                        debug!(%resource, state = %s, "waiting");
                    }
                    state = s;
                }
                Progress::Signed(issued) => return Ok(issued),
                Progress::Refused(e) => return Err(e),
            },
            Ok(watcher::Event::Delete(_)) => {
                return Err(KubeError::Deleted {
                    resource: resource.to_owned(),
                })
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => {
                // A 403 will not heal by retrying: report it as the RBAC gap it is.
                let forbidden = match &e {
                    watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 403 => {
                        Some(("list", s.message.clone()))
                    }
                    watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 403 => {
                        Some(("watch", s.message.clone()))
                    }
                    watcher::Error::WatchError(s) if s.code == 403 => {
                        Some(("watch", s.message.clone()))
                    }
                    _ => None,
                };
                if let Some((verb, message)) = forbidden {
                    return Err(KubeError::Forbidden {
                        verb,
                        resource: api_resource.to_owned(),
                        message,
                    });
                }
                warn!(%resource, error = %crate::telemetry::chain(&e), "watching the request was interrupted; resuming")
            }
        }
    }
}

/// The certificate chain a request object carries, with the anchors from
/// the response or the configured CA file.
fn chain_from(
    pem_bytes: &[u8],
    ca: Option<&[u8]>,
    ca_file: Option<&PathBuf>,
    resource: &str,
) -> Result<Issued, KubeError> {
    let bad = || KubeError::BadCertificate {
        resource: resource.to_owned(),
    };
    let mut certs = pem::certificates(pem_bytes).map_err(|_| bad())?;
    if certs.is_empty() {
        return Err(bad());
    }
    let leaf = certs.remove(0);
    let mut anchors = match ca {
        Some(ca) if !ca.is_empty() => pem::certificates(ca).map_err(|_| bad())?,
        _ => Vec::new(),
    };
    // The configured CA file is used when the response carries no CA (always
    // for the CSR API; for cert-manager when the issuer sets no status.ca).
    if let Some(path) = ca_file.filter(|_| anchors.is_empty()) {
        let text = crate::small_file::read(path).map_err(|source| KubeError::ReadCa {
            path: path.clone(),
            source,
        })?;
        anchors = pem::certificates(&text).map_err(|e| KubeError::ReadCa {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
    }
    let (intermediates, roots) = split_chain(&certs);
    if anchors.is_empty() {
        anchors = roots
            .into_iter()
            .filter(|r| intermediates.is_empty() || !intermediates.contains(r))
            .collect();
    }
    if anchors.is_empty() {
        return Err(KubeError::NoCa {
            resource: resource.to_owned(),
        });
    }
    let mut chain = vec![leaf];
    chain.extend(certs.into_iter().filter(|c| !anchors.contains(c)));
    Ok(Issued { chain, ca: anchors })
}

/// Key usages (RFC 5280 names as Kubernetes spells them) for a TLS server
/// and client certificate of this key type.
fn usages(alg: KeyAlgorithm) -> Vec<String> {
    let mut u = vec!["digital signature".to_owned()];
    if alg.is_rsa() {
        u.push("key encipherment".to_owned());
    }
    u.extend(["server auth".to_owned(), "client auth".to_owned()]);
    u
}

/// Labels saying which pod and credential a request is for.
fn labels(cert: &CertificateSpec) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "pillion".to_owned(),
        ),
        ("pillion.dev/credential".to_owned(), label_value(&cert.name)),
    ]);
    for (env, key) in [
        ("POD_NAME", "pillion.dev/pod"),
        ("POD_NAMESPACE", "pillion.dev/namespace"),
    ] {
        if let Ok(v) = std::env::var(env) {
            labels.insert(key.to_owned(), label_value(&v));
        }
    }
    labels
}

/// A label value: at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric.
fn label_value(v: &str) -> String {
    let cleaned: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// How long deleting a finished request may take before pillion gives up on it (and warns).
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// What RBAC calls a CertificateSigningRequest.
const CSR_KIND: &str = "certificatesigningrequests.certificates.k8s.io";

/// Deletions of requests whose wait was cut short (by the init deadline or a shutdown), still
/// under way: [`Abandoned::settle`] lets pillion finish them before it exits.
#[derive(Debug, Default)]
struct Abandoned(std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>);

impl Abandoned {
    async fn settle(&self) {
        let deletions = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for deletion in deletions {
            let _ = deletion.await;
        }
    }
}

/// A request pillion created, deleted when its wait is over, signed or not: it has served its
/// purpose, and deleting it keeps the cluster tidy. If the wait is cut short (the future
/// dropped), the deletion is started from `drop` and left for [`Abandoned::settle`].
struct Requested<'a, K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    api: Api<K>,
    name: String,
    resource: String,
    kind: &'static str,
    abandoned: &'a Abandoned,
    armed: bool,
}

impl<'a, K> Requested<'a, K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    fn new(
        api: &Api<K>,
        name: &str,
        resource: &str,
        kind: &'static str,
        abandoned: &'a Abandoned,
    ) -> Self {
        Requested {
            api: api.clone(),
            name: name.to_owned(),
            resource: resource.to_owned(),
            kind,
            abandoned,
            armed: true,
        }
    }

    /// Deletes the request; a failure is only worth a warning.
    async fn delete(mut self) {
        delete_request(&self.api, &self.name, &self.resource, self.kind).await;
        self.armed = false;
    }
}

impl<K> Drop for Requested<'_, K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (api, name, resource, kind) = (
            self.api.clone(),
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.resource),
            self.kind,
        );
        info!(%resource, "the renewal was cut short; deleting its request");
        let deletion =
            runtime.spawn(async move { delete_request(&api, &name, &resource, kind).await });
        self.abandoned
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(deletion);
    }
}

async fn delete_request<K>(api: &Api<K>, name: &str, resource: &str, kind: &str)
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    // Bounded: an API server that stopped answering must not hold up the renewal round that
    // already has its answer.
    match tokio::time::timeout(DELETE_TIMEOUT, api.delete(name, &DeleteParams::default())).await {
        Ok(Ok(_)) => {}
        // Deleted already (by a second attempt, or by hand).
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => {}
        Ok(Err(e)) => {
            warn!(%resource, error = %api_error(e, "delete", kind), "could not delete the request");
        }
        Err(_) => {
            warn!(%resource, "could not delete the request: the API server did not answer within {DELETE_TIMEOUT:?}");
        }
    }
}

/// The built-in CSR API: <https://kubernetes.io/docs/reference/access-authn-authz/certificate-signing-requests/>.
#[derive(Debug)]
pub struct KubernetesCsr {
    spec: KubernetesCsrSpec,
    cluster: Cluster,
    abandoned: Abandoned,
}

impl KubernetesCsr {
    /// Sets up the issuer; the API server is first contacted by [`Self::sign`].
    pub fn new(spec: &KubernetesCsrSpec) -> KubernetesCsr {
        KubernetesCsr {
            spec: spec.clone(),
            cluster: Cluster::new(spec.kubeconfig.clone()),
            abandoned: Abandoned::default(),
        }
    }

    /// Creates a CertificateSigningRequest, waits for it, deletes it.
    pub async fn sign(&self, csr_der: &[u8], cert: &CertificateSpec) -> Result<Issued, KubeError> {
        let (client, _) = self.cluster.client().await?;
        let api: Api<CertificateSigningRequest> = Api::all(client.clone());
        let expiration = cert
            .duration
            .max(MIN_EXPIRATION)
            .as_secs()
            .min(i32::MAX as u64) as i32;
        let object = CertificateSigningRequest {
            metadata: ObjectMeta {
                generate_name: Some(format!("pillion-{}-", cert.name)),
                labels: Some(labels(cert)),
                ..ObjectMeta::default()
            },
            spec: CertificateSigningRequestSpec {
                request: k8s_openapi::ByteString(crate::pem::encode_csr(csr_der).into_bytes()),
                signer_name: self.spec.signer_name.clone(),
                usages: Some(
                    self.spec
                        .usages
                        .clone()
                        .unwrap_or_else(|| usages(cert.key_algorithm)),
                ),
                expiration_seconds: Some(expiration),
                ..CertificateSigningRequestSpec::default()
            },
            status: None,
        };
        let created = api
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| api_error(e, "create", CSR_KIND))?;
        let name = created.metadata.name.clone().unwrap_or_default();
        let resource = format!("CertificateSigningRequest {name}");
        info!(%resource, signer = %self.spec.signer_name, "created a CertificateSigningRequest; waiting for approval and signing");
        let request = Requested::new(&api, &name, &resource, CSR_KIND, &self.abandoned);
        let ca_file = self.spec.ca_file.clone();
        let signer = self.spec.signer_name.clone();
        let result = wait_for(
            api.clone(),
            &name,
            CSR_KIND,
            &resource,
            self.spec.timeout,
            |csr: &CertificateSigningRequest| {
                csr_progress(csr, &name, &resource, &signer, ca_file.as_ref())
            },
        )
        .await;
        request.delete().await;
        result
    }

    /// Waits (bounded by the caller) for the deletion of requests whose wait was cut short.
    pub async fn settle(&self) {
        self.abandoned.settle().await;
    }
}

/// cert-manager's CertificateRequest: <https://cert-manager.io/docs/usage/certificaterequest/>.
#[derive(Debug)]
pub struct CertManager {
    spec: CertManagerSpec,
    cluster: Cluster,
    abandoned: Abandoned,
}

fn certificate_request_resource() -> ApiResource {
    ApiResource {
        group: "cert-manager.io".into(),
        version: "v1".into(),
        api_version: "cert-manager.io/v1".into(),
        kind: "CertificateRequest".into(),
        plural: "certificaterequests".into(),
    }
}

impl CertManager {
    /// Sets up the issuer; the API server is first contacted by [`Self::sign`].
    pub fn new(spec: &CertManagerSpec) -> CertManager {
        CertManager {
            spec: spec.clone(),
            cluster: Cluster::new(spec.kubeconfig.clone()),
            abandoned: Abandoned::default(),
        }
    }

    /// Creates a CertificateRequest, waits for Ready, deletes it.
    pub async fn sign(&self, csr_der: &[u8], cert: &CertificateSpec) -> Result<Issued, KubeError> {
        let (client, default_ns) = self.cluster.client().await?;
        let namespace = self
            .spec
            .namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|n| !n.is_empty())
            })
            .unwrap_or_else(|| default_ns.clone());
        let ar = certificate_request_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &ar);
        let mut object = DynamicObject::new("", &ar);
        object.metadata = ObjectMeta {
            name: None,
            generate_name: Some(format!("pillion-{}-", cert.name)),
            namespace: Some(namespace.clone()),
            labels: Some(labels(cert)),
            ..ObjectMeta::default()
        };
        let r = &self.spec.issuer_ref;
        object.data = json!({
            "spec": {
                "request": base64_encode(crate::pem::encode_csr(csr_der).as_bytes()),
                "issuerRef": {"name": r.name, "kind": r.kind, "group": r.group},
                "duration": format!("{}s", cert.duration.as_secs()),
                "usages": self.spec.usages.clone().unwrap_or_else(|| usages(cert.key_algorithm)),
            }
        });
        let resource_kind = "certificaterequests.cert-manager.io";
        let created = api
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| {
                api_error(
                    e,
                    "create",
                    &format!("{resource_kind} in namespace {namespace}"),
                )
            })?;
        let name = created.metadata.name.clone().unwrap_or_default();
        let resource = format!("CertificateRequest {namespace}/{name}");
        info!(%resource, issuer = %r.name, "created a cert-manager CertificateRequest; waiting for it to be Ready");
        let request = Requested::new(&api, &name, &resource, resource_kind, &self.abandoned);
        let ca_file = self.spec.ca_file.clone();
        let result = wait_for(
            api.clone(),
            &name,
            resource_kind,
            &resource,
            self.spec.timeout,
            |cr: &DynamicObject| {
                certificate_request_progress(&cr.data["status"], &resource, ca_file.as_ref())
            },
        )
        .await;
        request.delete().await;
        result
    }

    /// Waits (bounded by the caller) for the deletion of requests whose wait was cut short.
    pub async fn settle(&self) {
        self.abandoned.settle().await;
    }
}

/// Reads a CertificateSigningRequest's status: signed, refused (Denied,
/// Failed), or still waiting and on what.
pub(crate) fn csr_progress(
    csr: &CertificateSigningRequest,
    name: &str,
    resource: &str,
    signer: &str,
    ca_file: Option<&PathBuf>,
) -> Progress {
    let status = csr.status.as_ref();
    for c in status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        if c.status != "True" {
            continue;
        }
        let reason = c.reason.clone().unwrap_or_default();
        let message = c.message.clone().unwrap_or_default();
        match c.type_.as_str() {
            "Denied" => {
                return Progress::Refused(KubeError::Denied {
                    resource: resource.to_owned(),
                    reason,
                    message,
                })
            }
            "Failed" => {
                return Progress::Refused(KubeError::Failed {
                    resource: resource.to_owned(),
                    reason,
                    message,
                })
            }
            _ => {}
        }
    }
    if let Some(cert) = status
        .and_then(|s| s.certificate.as_ref())
        .filter(|c| !c.0.is_empty())
    {
        return match chain_from(&cert.0, None, ca_file, resource) {
            Ok(issued) => Progress::Signed(issued),
            Err(e) => Progress::Refused(e),
        };
    }
    let approved = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Approved" && c.status == "True")
        });
    Progress::Pending(if approved {
        format!("approved but not signed: is a signer for {signer} running?")
    } else {
        format!("not approved: approve it (kubectl certificate approve {name}) or run an approver for {signer}")
    })
}

/// Reads a CertificateRequest's status: Ready with a certificate, or one of
/// cert-manager's refusals (Denied, InvalidRequest, Ready=False/Failed).
pub(crate) fn certificate_request_progress(
    status: &Value,
    resource: &str,
    ca_file: Option<&PathBuf>,
) -> Progress {
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c["type"] == t);
    let text = |c: &Value, k: &str| c[k].as_str().unwrap_or_default().to_owned();
    for kind in ["Denied", "InvalidRequest"] {
        if let Some(c) = find(kind).filter(|c| c["status"] == "True") {
            let (reason, message) = (text(c, "reason"), text(c, "message"));
            return Progress::Refused(if kind == "Denied" {
                KubeError::Denied {
                    resource: resource.to_owned(),
                    reason,
                    message,
                }
            } else {
                KubeError::Failed {
                    resource: resource.to_owned(),
                    reason: format!("InvalidRequest: {reason}"),
                    message,
                }
            });
        }
    }
    if let Some(ready) = find("Ready") {
        let reason = text(ready, "reason");
        if ready["status"] == "True" {
            let decode = |v: &Value| v.as_str().and_then(base64_decode);
            let Some(cert) = decode(&status["certificate"]) else {
                return Progress::Pending("Ready but without a certificate".into());
            };
            let ca = decode(&status["ca"]);
            return match chain_from(&cert, ca.as_deref(), ca_file, resource) {
                Ok(issued) => Progress::Signed(issued),
                Err(e) => Progress::Refused(e),
            };
        }
        if matches!(reason.as_str(), "Failed" | "Denied" | "InvalidRequest") {
            let message = text(ready, "message");
            return Progress::Refused(KubeError::Failed {
                resource: resource.to_owned(),
                reason,
                message,
            });
        }
        return Progress::Pending(format!("not Ready ({reason}: {})", text(ready, "message")));
    }
    let approved = find("Approved").is_some_and(|c| c["status"] == "True");
    Progress::Pending(if approved {
        "approved but not signed: is the issuer ready?".into()
    } else {
        "not approved: is cert-manager's approver (or approver-policy) allowing it?".into()
    })
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_valid_kubernetes_labels() {
        assert_eq!(label_value("web-0"), "web-0");
        assert_eq!(label_value("a/b:c"), "a-b-c");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
        assert_eq!(label_value("-x-"), "x");
    }

    #[test]
    fn cert_manager_refusals_are_told_apart() {
        let denied = json!({"conditions": [{"type": "Denied", "status": "True", "reason": "Policy", "message": "no"}]});
        assert!(matches!(
            certificate_request_progress(&denied, "cr", None),
            Progress::Refused(KubeError::Denied { .. })
        ));
        let invalid = json!({"conditions": [{"type": "InvalidRequest", "status": "True", "reason": "BadCSR", "message": "x"}]});
        assert!(matches!(
            certificate_request_progress(&invalid, "cr", None),
            Progress::Refused(KubeError::Failed { .. })
        ));
        let pending = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        assert!(matches!(
            certificate_request_progress(&pending, "cr", None),
            Progress::Pending(_)
        ));
    }
}
