//! A fake Kubernetes API server for the tests of the `kubernetesCsr` and `certManager` issuers
//! and of OpenBao's `kubernetes` auth method. No real API server can be installed on these
//! machines (see TESTING.md, "The one exception"), so this one speaks the real wire protocol
//! instead: HTTPS with a CA written into a kubeconfig, bearer-token authentication, the
//! Kubernetes JSON objects, `resourceVersion`, list and watch (newline-delimited JSON events in a
//! chunked response, bookmarks, `410 Expired` for a compacted resourceVersion), and errors as
//! `Status` objects worded like the real server's.
//!
//! What it serves:
//! - `certificates.k8s.io/v1` `certificatesigningrequests` (cluster scope) with the `status` and
//!   `approval` subresources:
//!   <https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/certificate-signing-request-v1/>
//! - `cert-manager.io/v1` `certificaterequests` (namespaced) with the `status` subresource:
//!   <https://cert-manager.io/docs/reference/api-docs/#cert-manager.io/v1.CertificateRequest>
//! - `authentication.k8s.io/v1` `tokenreviews` (create only), for OpenBao's kubernetes auth:
//!   <https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-review-v1/>
//! - `/version`, `/api`, `/apis`, `/apis/<group>[/<version>]` discovery, `/healthz`, `/livez`,
//!   `/readyz`.
//!
//! Behind the API sits an approver/signer (kube-controller-manager's CSR approver and signer, or
//! cert-manager's approver and CA issuer): each created request gets a [`Behaviour`], chosen by
//! the CSR's `signerName` or the CertificateRequest's `issuerRef.name`, that approves, signs
//! with the fake's signing CA, denies or fails it. Every status change bumps the
//! resourceVersion and is sent to watchers as `MODIFIED`.
//!
//! Faults a test can inject: [`FakeKube::forbid`] (403), [`FakeKube::fail_next`] (5xx, 429),
//! [`FakeKube::pause`] (the API server is down: the listener is closed and every open connection
//! reset), [`FakeKube::close_watches_after`] / [`FakeKube::set_watch_lifetime`] /
//! [`FakeKube::close_all_watches`] (watch streams end and the client must resume), and
//! [`FakeKube::compact`] (resuming from an old resourceVersion gets `410 Expired`).
//!
//! Where this fake knowingly differs from a real API server is listed in [`DEVIATIONS`].
//!
//! The server runs on its own thread with its own tokio runtime, listens on 127.0.0.1 only, and
//! stops when the [`FakeKube`] is dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};

/// Where this fake knowingly differs from a real API server (and from cert-manager), for
/// failure messages and for the README. Everything not listed here is meant to match.
pub const DEVIATIONS: &str = "\
- authentication: a request without the right bearer token gets 401 on every path (a real \
server with anonymous auth lets /version and /healthz through and answers 403 elsewhere);
- authorization: everything is allowed except what a test forbids with `forbid(verb, resource)`;
- no managedFields, no server-side apply, no JSON patch: PATCH takes merge patches (and treats a \
strategic merge patch as one); other patch types get 415;
- LIST ignores `limit`/`continue` (everything fits one page) and always serves the latest state;
- watch bookmarks are sent every `set_bookmark_interval` (default 1s) instead of about once a minute;
- the signer does not backdate notBefore (kube-controller-manager backdates up to 5 minutes) so \
a short test certificate lives exactly as long as asked;
- the signer signs every signerName, not only kubernetes.io/* ones; `set_max_signing_duration` \
plays kube-controller-manager's --cluster-signing-duration;
- cert-manager's webhook is played by the API server itself: semantic validation errors come \
back as 403 `admission webhook \"webhook.cert-manager.io\" denied the request: ...`;
- namespaces exist when added with `add_namespace` (default, kube-system, kube-public exist).";

/// The user the kubeconfig's token authenticates as.
pub const CLIENT_USER: &str = "system:serviceaccount:default:pillion";

/// The audience of the API server itself (`--api-audiences`), used for TokenReviews that name
/// no audience and for tokens registered without one.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// `kind` of a CertificateSigningRequest, for [`FakeKube::objects`] and friends.
pub const CSR: &str = "CertificateSigningRequest";

/// `kind` of a cert-manager CertificateRequest, for [`FakeKube::objects`] and friends.
pub const CERTIFICATE_REQUEST: &str = "CertificateRequest";

/// How long `pause`/`resume` wait for the server to close or reopen its listener.
const CONTROL_DEADLINE: Duration = Duration::from_secs(10);

/// Default lifetime of a CSR certificate without `expirationSeconds`: kube-controller-manager's
/// `--cluster-signing-duration` default (one year).
const DEFAULT_CSR_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Default lifetime of a cert-manager certificate without `spec.duration` (cert-manager's
/// `DefaultCertificateDuration`, 90 days).
const DEFAULT_CERT_MANAGER_DURATION: Duration = Duration::from_secs(90 * 24 * 3600);

/// The smallest `expirationSeconds` the CSR API accepts (10 minutes).
const MIN_EXPIRATION_SECONDS: i64 = 600;

/// The first resourceVersion handed out: any number works, a large one catches clients that
/// treat resourceVersions as small or dense.
const FIRST_RESOURCE_VERSION: u64 = 7_000;

/// Key usages the CSR API and cert-manager accept, sorted as the API server lists them.
const KNOWN_USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

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

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string (percent-encoded, without `?`).
    pub query: String,
    /// The body when it was JSON.
    pub body: Option<Value>,
    /// Who the bearer token authenticated as (None: rejected with 401).
    pub user: Option<String>,
    /// The HTTP status of the answer (200 for a watch, whose errors travel as events).
    pub status: u16,
}

impl RecordedRequest {
    /// A decoded query parameter.
    pub fn param(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    pub fn is_watch(&self) -> bool {
        self.method == "GET" && matches!(self.param("watch").as_deref(), Some("true" | "1"))
    }

    /// A GET of a collection that is not a watch.
    pub fn is_list(&self, plural: &str) -> bool {
        self.method == "GET" && !self.is_watch() && self.path.ends_with(&format!("/{plural}"))
    }

    pub fn line(&self) -> String {
        let q = if self.query.is_empty() {
            String::new()
        } else {
            format!("?{}", self.query)
        };
        let body = self
            .body
            .as_ref()
            .map(|b| format!(" {b}"))
            .unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        format!(
            "{} {}{} -> {} ({}){}",
            self.method,
            self.path,
            q,
            self.status,
            self.user.as_deref().unwrap_or("unauthenticated"),
            body
        )
    }
}

/// A running fake API server. Stopped on drop.
pub struct FakeKube {
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    ca_pem_path: PathBuf,
    signing_ca_pem_path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl FakeKube {
    /// Starts a fake API server on a free loopback port and writes its kubeconfig.
    pub fn start() -> FakeKube {
        let dir = tempfile::tempdir().expect("create the fake API server's temp dir");

        let serving_ca = make_ca("fake-kube serving CA");
        let server_key = rcgen::KeyPair::generate().expect("generate a P-256 key");
        let mut server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("valid SANs");
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        server_params.use_authority_key_identifier_extension = true;
        let server_cert = server_params
            .signed_by(&server_key, &serving_ca.issuer())
            .expect("sign the serving certificate");

        let signing = make_ca("fake-kube signing CA");

        let ca_pem_path = dir.path().join("apiserver-ca.pem");
        std::fs::write(&ca_pem_path, &serving_ca.cert_pem).expect("write the serving CA");
        let signing_ca_pem_path = dir.path().join("signing-ca.pem");
        std::fs::write(&signing_ca_pem_path, &signing.cert_pem).expect("write the signing CA");

        let token = random_token(40);

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .expect("the serving key matches its certificate");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        // Bound here so the port is known before the thread starts; the runtime is built on
        // the thread, so a test may start the fake from inside its own runtime.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let addr = listener.local_addr().expect("local_addr");

        let sa_key_pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &ring::rand::SystemRandom::new(),
        )
        .expect("generate the service-account issuer key");

        let (rv_tx, _) = watch::channel(FIRST_RESOURCE_VERSION);
        let (control, _) = watch::channel(Control::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            rv_tx,
            control,
            listening: AtomicBool::new(true),
            connections: AtomicUsize::new(0),
            open_watches: AtomicUsize::new(0),
            token: token.clone(),
            signing,
            addr,
            sa_key_pkcs8: sa_key_pkcs8.as_ref().to_vec(),
            client_user: User {
                username: CLIENT_USER.to_string(),
                uid: uid(),
                groups: service_account_groups("default"),
            },
        });

        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\n\
                 kind: Config\n\
                 clusters:\n\
                 - name: fake\n  \
                   cluster:\n    \
                     server: https://{addr}\n    \
                     certificate-authority-data: {ca}\n\
                 users:\n\
                 - name: pillion\n  \
                   user:\n    \
                     token: {token}\n\
                 contexts:\n\
                 - name: fake\n  \
                   context:\n    \
                     cluster: fake\n    \
                     user: pillion\n    \
                     namespace: default\n\
                 current-context: fake\n",
                ca = b64(serving_ca.cert_pem.as_bytes()),
            ),
        )
        .expect("write the kubeconfig");

        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-kube".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the fake API server's runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("hand the listener to tokio");
                    serve(thread_shared, listener, acceptor).await
                });
                // Dropping the runtime cancels every connection, watch and signer task.
                drop(rt);
            })
            .expect("spawn the fake API server's thread");

        FakeKube {
            shared,
            dir,
            kubeconfig,
            ca_pem_path,
            signing_ca_pem_path,
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// The kubeconfig: one cluster (this server, its CA inline), one user (bearer token), one
    /// context with namespace `default`, selected as current-context.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA of the API server's serving certificate (what OpenBao's `kubernetes_ca_cert` wants).
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// The CA the signer signs with, for `openssl verify -CAfile`.
    pub fn signing_ca_pem_path(&self) -> &Path {
        &self.signing_ca_pem_path
    }

    pub fn signing_ca_pem(&self) -> &str {
        &self.shared.signing.cert_pem
    }

    /// A temp dir that lives as long as the fake, for a test's scratch files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The kubeconfig's bearer token (a reviewer token for OpenBao's `token_reviewer_jwt`).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Who the kubeconfig's token authenticates as ([`CLIENT_USER`]).
    pub fn username(&self) -> &str {
        &self.shared.client_user.username
    }

    /// A `kube::Client` built from the written kubeconfig, the way a program would build one.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .expect("the fake's kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("the fake's kubeconfig makes a client config");
        kube::Client::try_from(config).expect("build a kube client")
    }

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

    /// The behaviour for signers and issuers without their own (initially: sign at once).
    pub fn set_default_behaviour(&self, behaviour: Behaviour) {
        self.lock().default_behaviour = behaviour;
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

    /// Answers `verb` on `resource` with 403 Forbidden. `verb` is the API verb (`create`, `get`,
    /// `list`, `watch`, `update`, `patch`, `delete`) or `*`; `resource` is the plural, with
    /// `/subresource` when it is one (`certificatesigningrequests/approval`), or `*`.
    pub fn forbid(&self, verb: &str, resource: &str) {
        self.lock()
            .forbidden
            .insert((verb.to_string(), resource.to_string()));
    }

    /// Undoes [`forbid`](Self::forbid).
    pub fn allow(&self, verb: &str, resource: &str) {
        self.lock()
            .forbidden
            .remove(&(verb.to_string(), resource.to_string()));
    }

    /// The next `times` requests for `verb` on `resource` (as in [`forbid`](Self::forbid)) get
    /// `code` (500, 503, 504 or 429) as a Status in the API server's words.
    pub fn fail_next(&self, verb: &str, resource: &str, code: u16, times: usize) {
        self.lock().injected.push(Injected {
            verb: verb.to_string(),
            resource: resource.to_string(),
            code,
            remaining: times,
        });
    }

    /// The API server goes down: the listener closes (new connections are refused) and every
    /// open connection, watches included, is reset. Returns once that is done.
    pub fn pause(&self) {
        self.shared.control.send_modify(|c| {
            c.paused = true;
            c.epoch += 1;
        });
        self.wait_control("the fake API server to stop listening", || {
            !self.shared.listening.load(Ordering::SeqCst)
                && self.shared.connections.load(Ordering::SeqCst) == 0
        });
    }

    /// The API server comes back on the same port. Returns once it listens.
    pub fn resume(&self) {
        self.shared.control.send_modify(|c| c.paused = false);
        self.wait_control("the fake API server to listen again", || {
            self.shared.listening.load(Ordering::SeqCst)
        });
    }

    pub fn is_paused(&self) -> bool {
        self.shared.control.borrow().paused
    }

    /// Each watch stream opened from now on ends (cleanly) after `n` events, so the client
    /// must resume from the last resourceVersion it saw. Bookmarks count; the synthetic
    /// `ADDED` events for the objects that already exist when a watch starts do not.
    pub fn close_watches_after(&self, n: usize) {
        self.lock().watch_close_after = Some(n);
    }

    /// Undoes [`close_watches_after`](Self::close_watches_after) and
    /// [`set_watch_lifetime`](Self::set_watch_lifetime).
    pub fn keep_watches_open(&self) {
        let mut st = self.lock();
        st.watch_close_after = None;
        st.watch_lifetime = None;
    }

    /// Each watch stream opened from now on ends after `lifetime` (or its `timeoutSeconds`,
    /// whichever comes first).
    pub fn set_watch_lifetime(&self, lifetime: Option<Duration>) {
        self.lock().watch_lifetime = lifetime;
    }

    /// Ends every open watch stream now (cleanly, as a real server does at its timeout).
    pub fn close_all_watches(&self) {
        self.shared.control.send_modify(|c| c.watch_epoch += 1);
    }

    /// How often a watch that asked for bookmarks gets one (None: never).
    pub fn set_bookmark_interval(&self, interval: Option<Duration>) {
        self.lock().bookmark_interval = interval;
    }

    /// Other writes happen in the cluster and etcd compacts its history: the resourceVersion
    /// moves on, and a watch that starts (or resumes) from any resourceVersion handed out so
    /// far gets an `ERROR` event with a `410 Expired` Status, so the client must list again.
    pub fn compact(&self) {
        let mut st = self.lock();
        // Watchers are not woken: none of their objects changed.
        st.compacted_rv = st.bump();
    }

    /// Watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Watches answered with `410 Expired` so far.
    pub fn expired_watches(&self) -> usize {
        self.lock().expired_watches
    }

    /// Every request received so far, in order of arrival of the answer.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The current objects of `kind` ([`CSR`], [`CERTIFICATE_REQUEST`], or their plurals), as the
    /// API serves them, sorted by namespace and name.
    pub fn objects(&self, kind: &str) -> Vec<Value> {
        let res = Res::from_name(kind).unwrap_or_else(|| panic!("unknown kind {kind:?}"));
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| k.res == res)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// One object (`namespace` None for a CSR).
    pub fn object(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let res = Res::from_name(kind).unwrap_or_else(|| panic!("unknown kind {kind:?}"));
        self.lock()
            .objects
            .get(&ObjKey::new(res, namespace.unwrap_or(""), name))
            .cloned()
    }

    /// The CSR `name`, typed.
    pub fn csr(&self, name: &str) -> Option<CertificateSigningRequest> {
        self.object(CSR, None, name)
            .map(|v| serde_json::from_value(v).expect("the fake's CSR JSON is a valid CSR"))
    }

    /// Whether an object of `kind` called `name` (in any namespace) was deleted through the API.
    pub fn was_deleted(&self, kind: &str, name: &str) -> bool {
        self.deleted(kind)
            .iter()
            .any(|o| str_at(o, "/metadata/name") == name)
    }

    /// The last state of every deleted object of `kind`, in order of deletion.
    pub fn deleted(&self, kind: &str) -> Vec<Value> {
        let res = Res::from_name(kind).unwrap_or_else(|| panic!("unknown kind {kind:?}"));
        self.lock()
            .deleted
            .iter()
            .filter(|(r, _)| *r == res)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Registers a service-account token: TokenReviews of it say `authenticated: true` with
    /// user `system:serviceaccount:<namespace>:<service_account>` for audience
    /// [`API_AUDIENCE`], and it is accepted as a bearer token by this API server.
    pub fn register_service_account_token(&self, token: &str, namespace: &str, sa: &str) {
        let mut st = self.lock();
        let sa_uid = st.sa_uid(namespace, sa);
        st.tokens.insert(
            token.to_string(),
            TokenInfo {
                namespace: namespace.to_string(),
                service_account: sa.to_string(),
                uid: sa_uid,
                audiences: vec![API_AUDIENCE.to_string()],
                revoked: false,
            },
        );
    }

    /// Mints and registers a projected service-account token: a JWT (ES256, signed with the
    /// key of [`service_account_issuer_public_key_pem`](Self::service_account_issuer_public_key_pem))
    /// with the claims a kubelet-projected token has (`iss`, `sub`, `aud`, `exp` in an hour,
    /// `kubernetes.io.namespace`, `kubernetes.io.serviceaccount.{name,uid}`), so OpenBao's
    /// kubernetes auth can parse it. `audiences` empty means [`API_AUDIENCE`].
    pub fn mint_service_account_token(
        &self,
        namespace: &str,
        sa: &str,
        audiences: &[&str],
    ) -> String {
        let audiences: Vec<String> = if audiences.is_empty() {
            vec![API_AUDIENCE.to_string()]
        } else {
            audiences.iter().map(|a| a.to_string()).collect()
        };
        let mut st = self.lock();
        let sa_uid = st.sa_uid(namespace, sa);
        let now = unix_now();
        let header = json!({"alg": "ES256", "kid": "fake-kube"});
        let claims = json!({
            "aud": audiences,
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "iss": API_AUDIENCE,
            "jti": uid(),
            "sub": format!("system:serviceaccount:{namespace}:{sa}"),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": sa, "uid": sa_uid},
            },
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.shared.sa_key_pkcs8,
            &rng,
        )
        .expect("the issuer key was generated for this algorithm");
        let sig = key
            .sign(&rng, signing_input.as_bytes())
            .expect("ECDSA signing does not fail");
        let token = format!("{signing_input}.{}", b64url(sig.as_ref()));
        st.tokens.insert(
            token.clone(),
            TokenInfo {
                namespace: namespace.to_string(),
                service_account: sa.to_string(),
                uid: sa_uid,
                audiences,
                revoked: false,
            },
        );
        token
    }

    /// The public key minted tokens are signed with (PEM SubjectPublicKeyInfo), for OpenBao's
    /// `pem_keys`.
    pub fn service_account_issuer_public_key_pem(&self) -> String {
        use ring::signature::KeyPair as _;
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.shared.sa_key_pkcs8,
            &ring::rand::SystemRandom::new(),
        )
        .expect("the issuer key was generated for this algorithm");
        // SubjectPublicKeyInfo header for an id-ecPublicKey on prime256v1.
        let mut der = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        der.extend_from_slice(key.public_key().as_ref());
        pem::encode(&pem::Pem::new("PUBLIC KEY", der))
    }

    /// TokenReviews of `token` say `authenticated: false` from now on (the service account or
    /// its pod was deleted).
    pub fn revoke_token(&self, token: &str) {
        if let Some(t) = self.lock().tokens.get_mut(token) {
            t.revoked = true;
        }
    }

    /// Makes namespace `ns` exist (creating a CertificateRequest in a missing namespace is a 404).
    pub fn add_namespace(&self, ns: &str) {
        self.lock().namespaces.insert(ns.to_string());
    }

    /// The request log and the objects, for failure messages.
    pub fn describe(&self) -> String {
        let st = self.lock();
        let mut s = format!(
            "fake API server {} (rv {}, compacted at {}, paused: {})\n--- requests ---\n",
            self.server_url(),
            st.rv,
            st.compacted_rv,
            self.shared.control.borrow().paused
        );
        for r in &st.requests {
            let _ = writeln!(s, "{}", r.line());
        }
        let _ = writeln!(s, "--- objects ---");
        for (k, v) in &st.objects {
            let _ = writeln!(
                s,
                "{} {}/{} rv={} status={}",
                k.res.kind(),
                k.ns,
                k.name,
                str_at(v, "/metadata/resourceVersion"),
                v.get("status").cloned().unwrap_or(Value::Null)
            );
        }
        for (res, v) in &st.deleted {
            let _ = writeln!(s, "deleted {} {}", res.kind(), str_at(v, "/metadata/name"));
        }
        s
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    fn wait_control(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + CONTROL_DEADLINE;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out after {CONTROL_DEADLINE:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shared.control.send_modify(|c| c.shutdown = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

struct Shared {
    state: Mutex<State>,
    /// The latest resourceVersion; every change is sent here to wake watchers (and the task
    /// runner, for [`FakeKube::apply_behaviour`]).
    rv_tx: watch::Sender<u64>,
    control: watch::Sender<Control>,
    listening: AtomicBool,
    connections: AtomicUsize,
    open_watches: AtomicUsize,
    token: String,
    signing: Ca,
    addr: SocketAddr,
    sa_key_pkcs8: Vec<u8>,
    client_user: User,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (a test assertion in a closure) must not hide the
        // state from the failure message.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Releases the lock and wakes every watcher.
    fn commit(&self, st: MutexGuard<'_, State>) {
        let rv = st.rv;
        drop(st);
        self.rv_tx.send_replace(rv);
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Control {
    paused: bool,
    shutdown: bool,
    /// Bumped by `pause`: connections from an older epoch are reset.
    epoch: u64,
    /// Bumped by `close_all_watches`.
    watch_epoch: u64,
}

struct State {
    rv: u64,
    compacted_rv: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: Vec<HistoryEvent>,
    deleted: Vec<(Res, Value)>,
    requests: Vec<RecordedRequest>,
    forbidden: BTreeSet<(String, String)>,
    injected: Vec<Injected>,
    signer_behaviours: HashMap<String, Behaviour>,
    issuer_behaviours: HashMap<String, Behaviour>,
    default_behaviour: Behaviour,
    pending_tasks: Vec<(ObjKey, String, Behaviour)>,
    max_signing_duration: Option<Duration>,
    watch_close_after: Option<usize>,
    watch_lifetime: Option<Duration>,
    bookmark_interval: Option<Duration>,
    expired_watches: usize,
    tokens: HashMap<String, TokenInfo>,
    sa_uids: HashMap<(String, String), String>,
    namespaces: BTreeSet<String>,
}

impl State {
    fn new() -> State {
        State {
            rv: FIRST_RESOURCE_VERSION,
            compacted_rv: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            deleted: Vec::new(),
            requests: Vec::new(),
            forbidden: BTreeSet::new(),
            injected: Vec::new(),
            signer_behaviours: HashMap::new(),
            issuer_behaviours: HashMap::new(),
            default_behaviour: Behaviour::sign(),
            pending_tasks: Vec::new(),
            max_signing_duration: None,
            watch_close_after: None,
            watch_lifetime: None,
            bookmark_interval: Some(Duration::from_secs(1)),
            expired_watches: 0,
            tokens: HashMap::new(),
            sa_uids: HashMap::new(),
            namespaces: ["default", "kube-system", "kube-public"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn sa_uid(&mut self, ns: &str, sa: &str) -> String {
        self.sa_uids
            .entry((ns.to_string(), sa.to_string()))
            .or_insert_with(uid)
            .clone()
    }

    /// Stores `obj` under `key` with a new resourceVersion and records the event.
    fn put(&mut self, key: &ObjKey, mut obj: Value, event: &'static str) -> Value {
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.history.push(HistoryEvent {
            rv,
            key: key.clone(),
            event,
            object: obj.clone(),
        });
        self.objects.insert(key.clone(), obj.clone());
        obj
    }

    fn behaviour_for(&self, res: Res, obj: &Value) -> Behaviour {
        let found = match res {
            Res::Csr => self.signer_behaviours.get(str_at(obj, "/spec/signerName")),
            Res::CertificateRequest => self
                .issuer_behaviours
                .get(str_at(obj, "/spec/issuerRef/name")),
        };
        found
            .cloned()
            .unwrap_or_else(|| self.default_behaviour.clone())
    }
}

struct HistoryEvent {
    rv: u64,
    key: ObjKey,
    event: &'static str,
    object: Value,
}

struct Injected {
    verb: String,
    resource: String,
    code: u16,
    remaining: usize,
}

struct TokenInfo {
    namespace: String,
    service_account: String,
    uid: String,
    audiences: Vec<String>,
    revoked: bool,
}

#[derive(Debug, Clone)]
struct User {
    username: String,
    uid: String,
    groups: Vec<String>,
}

fn service_account_groups(ns: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".to_string(),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ObjKey {
    res: Res,
    /// Empty for cluster-scoped objects.
    ns: String,
    name: String,
}

impl ObjKey {
    fn new(res: Res, ns: &str, name: &str) -> ObjKey {
        ObjKey {
            res,
            ns: ns.to_string(),
            name: name.to_string(),
        }
    }
}

/// The resources this fake stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Res {
    Csr,
    CertificateRequest,
}

impl Res {
    fn from_name(name: &str) -> Option<Res> {
        match name.to_ascii_lowercase().as_str() {
            "certificatesigningrequest" | "certificatesigningrequests" | "csr" => Some(Res::Csr),
            "certificaterequest" | "certificaterequests" | "cr" => Some(Res::CertificateRequest),
            _ => None,
        }
    }

    fn group(self) -> &'static str {
        match self {
            Res::Csr => "certificates.k8s.io",
            Res::CertificateRequest => "cert-manager.io",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Res::Csr => "certificates.k8s.io/v1",
            Res::CertificateRequest => "cert-manager.io/v1",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Res::Csr => "certificatesigningrequests",
            Res::CertificateRequest => "certificaterequests",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Res::Csr => CSR,
            Res::CertificateRequest => CERTIFICATE_REQUEST,
        }
    }

    /// `certificatesigningrequests.certificates.k8s.io`, as messages name it.
    fn qualified(self) -> String {
        format!("{}.{}", self.plural(), self.group())
    }

    /// `CertificateSigningRequest.certificates.k8s.io`, as "is invalid" messages name it.
    fn qualified_kind(self) -> String {
        format!("{}.{}", self.kind(), self.group())
    }

    fn subresources(self) -> &'static [&'static str] {
        match self {
            Res::Csr => &["approval", "status"],
            Res::CertificateRequest => &["status"],
        }
    }

    /// Built-in types' list items carry no kind/apiVersion; custom resources' do.
    fn list_items_typed(self) -> bool {
        self == Res::CertificateRequest
    }

    fn field_labels(self) -> &'static [&'static str] {
        match self {
            Res::Csr => &["metadata.name", "spec.signerName"],
            Res::CertificateRequest => &["metadata.name", "metadata.namespace"],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Certificate authorities
// ---------------------------------------------------------------------------------------------

struct Ca {
    cert_pem: String,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl Ca {
    fn issuer(&self) -> rcgen::Issuer<'_, &rcgen::KeyPair> {
        rcgen::Issuer::from_params(&self.params, &self.key)
    }

    /// Signs the PKCS#10 request `csr_der` as kube-controller-manager's signer does: subject
    /// and SANs from the request, key usages from `usages` (the API's words), CA:FALSE,
    /// validity `lifetime` from now.
    fn sign(
        &self,
        csr_der: &[u8],
        usages: &[String],
        lifetime: Duration,
    ) -> Result<String, String> {
        use x509_parser::prelude::FromDer as _;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
                .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
        let info = &csr.certification_request_info;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
            .map_err(|e| format!("unsupported public key: {e}"))?;

        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for attr in info.subject.iter_attributes() {
            let oid: Vec<u64> = attr
                .attr_type()
                .iter()
                .map(|i| i.collect())
                .unwrap_or_default();
            let value = attr
                .as_str()
                .map_err(|e| format!("unsupported subject attribute: {e}"))?;
            let ty = match oid.as_slice() {
                [2, 5, 4, 3] => rcgen::DnType::CommonName,
                [2, 5, 4, 6] => rcgen::DnType::CountryName,
                [2, 5, 4, 7] => rcgen::DnType::LocalityName,
                [2, 5, 4, 8] => rcgen::DnType::StateOrProvinceName,
                [2, 5, 4, 10] => rcgen::DnType::OrganizationName,
                [2, 5, 4, 11] => rcgen::DnType::OrganizationalUnitName,
                _ => rcgen::DnType::CustomDnType(oid),
            };
            params.distinguished_name.push(ty, value);
        }
        if let Some(exts) = csr.requested_extensions() {
            for ext in exts {
                if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
                    for name in &san.general_names {
                        use x509_parser::extensions::GeneralName;
                        let ia5 = |s: &str| {
                            rcgen::string::Ia5String::try_from(s.to_string())
                                .map_err(|e| format!("bad SAN {s:?}: {e}"))
                        };
                        let san = match name {
                            GeneralName::DNSName(s) => rcgen::SanType::DnsName(ia5(s)?),
                            GeneralName::RFC822Name(s) => rcgen::SanType::Rfc822Name(ia5(s)?),
                            GeneralName::URI(s) => rcgen::SanType::URI(ia5(s)?),
                            GeneralName::IPAddress(b) => match b.len() {
                                4 => rcgen::SanType::IpAddress(IpAddr::from(
                                    <[u8; 4]>::try_from(*b).expect("length checked"),
                                )),
                                16 => rcgen::SanType::IpAddress(IpAddr::from(
                                    <[u8; 16]>::try_from(*b).expect("length checked"),
                                )),
                                _ => return Err("bad IP SAN".into()),
                            },
                            _ => continue,
                        };
                        params.subject_alt_names.push(san);
                    }
                }
            }
        }
        for usage in usages {
            use rcgen::{ExtendedKeyUsagePurpose as E, KeyUsagePurpose as K};
            match usage.as_str() {
                "signing" | "digital signature" => params.key_usages.push(K::DigitalSignature),
                "content commitment" => params.key_usages.push(K::ContentCommitment),
                "key encipherment" => params.key_usages.push(K::KeyEncipherment),
                "key agreement" => params.key_usages.push(K::KeyAgreement),
                "data encipherment" => params.key_usages.push(K::DataEncipherment),
                "cert sign" => params.key_usages.push(K::KeyCertSign),
                "crl sign" => params.key_usages.push(K::CrlSign),
                "encipher only" => params.key_usages.push(K::EncipherOnly),
                "decipher only" => params.key_usages.push(K::DecipherOnly),
                "any" => params.insert_extended_key_usage(E::Any),
                "server auth" => params.insert_extended_key_usage(E::ServerAuth),
                "client auth" => params.insert_extended_key_usage(E::ClientAuth),
                "code signing" => params.insert_extended_key_usage(E::CodeSigning),
                "email protection" | "s/mime" => {
                    params.insert_extended_key_usage(E::EmailProtection)
                }
                "timestamping" => params.insert_extended_key_usage(E::TimeStamping),
                "ocsp signing" => params.insert_extended_key_usage(E::OcspSigning),
                "ipsec end system" => {
                    params.insert_extended_key_usage(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 5]))
                }
                "ipsec tunnel" => {
                    params.insert_extended_key_usage(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 6]))
                }
                "ipsec user" => {
                    params.insert_extended_key_usage(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 7]))
                }
                "microsoft sgc" => params
                    .insert_extended_key_usage(E::Other(vec![1, 3, 6, 1, 4, 1, 311, 10, 3, 3])),
                "netscape sgc" => {
                    params.insert_extended_key_usage(E::Other(vec![2, 16, 840, 1, 113730, 4, 1]))
                }
                _ => {}
            }
        }
        params.key_usages.dedup();
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        let mut serial = [0u8; 16];
        fill_random(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let now = time::OffsetDateTime::from_unix_timestamp(unix_now() as i64)
            .expect("now is a valid timestamp");
        params.not_before = now;
        params.not_after = now + lifetime;
        let cert = params
            .signed_by(&public_key, &self.issuer())
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(cert.pem())
    }
}

fn make_ca(cn: &str) -> Ca {
    let key = rcgen::KeyPair::generate().expect("generate a P-256 key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::from_unix_timestamp(unix_now() as i64)
        .expect("now is a valid timestamp");
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + Duration::from_secs(10 * 365 * 24 * 3600);
    let cert = params.self_signed(&key).expect("self-sign a CA");
    Ca {
        cert_pem: cert.pem(),
        params,
        key,
    }
}

// ---------------------------------------------------------------------------------------------
// Server loop
// ---------------------------------------------------------------------------------------------

type Body = UnsyncBoxBody<Bytes, Infallible>;

async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    tokio::spawn(task_runner(shared.clone()));
    let mut ctl = shared.control.subscribe();
    let mut listener = Some(listener);
    loop {
        let c = *ctl.borrow_and_update();
        if c.shutdown {
            return;
        }
        if c.paused {
            listener = None;
            shared.listening.store(false, Ordering::SeqCst);
            if ctl.changed().await.is_err() {
                return;
            }
            continue;
        }
        if listener.is_none() {
            // tokio sets SO_REUSEADDR, so the port is free again despite TIME_WAIT.
            match tokio::net::TcpListener::bind(shared.addr).await {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let l = listener.as_ref().expect("bound above");
        shared.listening.store(true, Ordering::SeqCst);
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((tcp, _)) = accepted {
                    spawn_connection(shared.clone(), acceptor.clone(), tcp, c.epoch);
                }
            }
            changed = ctl.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

fn spawn_connection(
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    epoch: u64,
) {
    shared.connections.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        let mut ctl = shared.control.subscribe();
        let killed = async move {
            let _ = ctl.wait_for(|c| c.shutdown || c.epoch != epoch).await;
        };
        let conn_shared = shared.clone();
        let conn = async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let shared = conn_shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        };
        tokio::select! {
            _ = conn => {}
            _ = killed => {}
        }
        shared.connections.fetch_sub(1, Ordering::SeqCst);
    });
}

/// Runs behaviours handed over by [`FakeKube::apply_behaviour`] (called from the test thread,
/// outside this runtime).
async fn task_runner(shared: Arc<Shared>) {
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

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

struct Ctx {
    method: String,
    path: String,
    query: String,
    params: Vec<(String, String)>,
    body: Bytes,
    content_type: String,
    user: User,
}

impl Ctx {
    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.param(key), Some("true" | "1"))
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body_json = serde_json::from_slice::<Value>(&body).ok();

    let user = bearer.and_then(|t| authenticate(&shared, &t));
    let resp = match &user {
        None => status_response(401, "Unauthorized", "Unauthorized".to_string(), Value::Null),
        Some(user) => {
            let ctx = Ctx {
                params: url::form_urlencoded::parse(query.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
                body,
                content_type,
                user: user.clone(),
            };
            route(&shared, &ctx)
        }
    };
    shared.lock().requests.push(RecordedRequest {
        method,
        path,
        query,
        body: body_json,
        user: user.map(|u| u.username),
        status: resp.status().as_u16(),
    });
    resp
}

fn authenticate(shared: &Shared, token: &str) -> Option<User> {
    if token == shared.token {
        return Some(shared.client_user.clone());
    }
    let st = shared.lock();
    let t = st.tokens.get(token).filter(|t| !t.revoked)?;
    Some(User {
        username: format!(
            "system:serviceaccount:{}:{}",
            t.namespace, t.service_account
        ),
        uid: t.uid.clone(),
        groups: service_account_groups(&t.namespace),
    })
}

fn route(shared: &Arc<Shared>, ctx: &Ctx) -> Response<Body> {
    let segs: Vec<&str> = ctx.path.split('/').filter(|s| !s.is_empty()).collect();
    let get = ctx.method == "GET";
    match segs.as_slice() {
        ["version"] if get => json_response(200, &version_info()),
        ["healthz" | "livez" | "readyz"] if get => text_response(200, "ok"),
        ["api"] if get => json_response(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}
                ],
            }),
        ),
        ["api", "v1"] if get => json_response(
            200,
            &json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": []}),
        ),
        ["apis"] if get => json_response(
            200,
            &json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": GROUPS.iter().map(|g| api_group(g)).collect::<Vec<_>>(),
            }),
        ),
        ["apis", group] if get && GROUPS.contains(group) => json_response(200, &{
            let mut g = api_group(group);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        }),
        ["apis", group, "v1"] if get && GROUPS.contains(group) => {
            json_response(200, &api_resource_list(group))
        }
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => {
            if ctx.method != "POST" {
                return method_not_allowed();
            }
            token_review(shared, ctx)
        }
        ["apis", "certificates.k8s.io", "v1", "certificatesigningrequests", rest @ ..] => {
            resource(shared, ctx, Res::Csr, None, rest)
        }
        ["apis", "cert-manager.io", "v1", "namespaces", ns, "certificaterequests", rest @ ..] => {
            resource(shared, ctx, Res::CertificateRequest, Some(ns), rest)
        }
        ["apis", "cert-manager.io", "v1", "certificaterequests"] => {
            if !get {
                return method_not_allowed();
            }
            resource(shared, ctx, Res::CertificateRequest, None, &[])
        }
        _ => not_found_path(),
    }
}

const GROUPS: &[&str] = &[
    "authentication.k8s.io",
    "certificates.k8s.io",
    "cert-manager.io",
];

fn api_group(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [gv], "preferredVersion": gv})
}

fn api_resource_list(group: &str) -> Value {
    let all = [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    let sub = ["get", "patch", "update"];
    let resources = match group {
        "authentication.k8s.io" => json!([
            {"name": "selfsubjectreviews", "singularName": "selfsubjectreview",
             "namespaced": false, "kind": "SelfSubjectReview", "verbs": ["create"]},
            {"name": "tokenreviews", "singularName": "tokenreview", "namespaced": false,
             "kind": "TokenReview", "verbs": ["create"]},
        ]),
        "certificates.k8s.io" => json!([
            {"name": "certificatesigningrequests", "singularName": "certificatesigningrequest",
             "namespaced": false, "kind": CSR, "verbs": all, "shortNames": ["csr"]},
            {"name": "certificatesigningrequests/approval", "singularName": "",
             "namespaced": false, "kind": CSR, "verbs": sub},
            {"name": "certificatesigningrequests/status", "singularName": "",
             "namespaced": false, "kind": CSR, "verbs": sub},
        ]),
        _ => json!([
            {"name": "certificaterequests", "singularName": "certificaterequest",
             "namespaced": true, "kind": CERTIFICATE_REQUEST, "verbs": all,
             "shortNames": ["cr", "crs"], "categories": ["cert-manager"]},
            {"name": "certificaterequests/status", "singularName": "", "namespaced": true,
             "kind": CERTIFICATE_REQUEST, "verbs": sub},
        ]),
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{group}/v1"),
        "resources": resources,
    })
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

#[allow(clippy::too_many_arguments)]
/// Authorization and injected failures for one request; `name` is what RBAC sees (for a
/// list/watch, the `metadata.name` of the field selector).
fn authorize(
    shared: &Shared,
    ctx: &Ctx,
    verb: &str,
    group: &str,
    resource: &str,
    qualified: &str,
    name: Option<&str>,
    ns: Option<&str>,
) -> Option<Response<Body>> {
    let mut st = shared.lock();
    let forbidden = [(verb, resource), ("*", resource), (verb, "*"), ("*", "*")]
        .iter()
        .any(|(v, r)| st.forbidden.contains(&(v.to_string(), r.to_string())));
    if forbidden {
        let subject = match name {
            Some(n) => format!("{qualified} \"{n}\""),
            None => qualified.to_string(),
        };
        let scope = match ns {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let plural = resource.split('/').next().unwrap_or(resource);
        return Some(status_response(
            403,
            "Forbidden",
            format!(
                "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}",
                ctx.user.username
            ),
            details(name, group, plural),
        ));
    }
    let hit = st.injected.iter_mut().find(|i| {
        i.remaining > 0
            && (i.verb == verb || i.verb == "*")
            && (i.resource == resource || i.resource == "*")
    })?;
    hit.remaining -= 1;
    let code = hit.code;
    drop(st);
    Some(match code {
        429 => {
            let mut r = status_response(
                429,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later"
                    .to_string(),
                json!({"retryAfterSeconds": 1}),
            );
            r.headers_mut()
                .insert("Retry-After", hyper::header::HeaderValue::from_static("1"));
            r
        }
        503 => status_response(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request".to_string(),
            Value::Null,
        ),
        504 => status_response(
            504,
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request".to_string(),
            Value::Null,
        ),
        code => status_response(
            code,
            "InternalError",
            "Internal error occurred: injected by the test".to_string(),
            json!({"causes": [{"message": "injected by the test"}]}),
        ),
    })
}

fn details(name: Option<&str>, group: &str, plural: &str) -> Value {
    let mut d = Map::new();
    if let Some(n) = name {
        d.insert("name".into(), json!(n));
    }
    d.insert("group".into(), json!(group));
    d.insert("kind".into(), json!(plural));
    Value::Object(d)
}

fn resource(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    res: Res,
    ns: Option<&str>,
    rest: &[&str],
) -> Response<Body> {
    let (name, sub) = match rest {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, sub] if res.subresources().contains(sub) => (Some(*name), Some(*sub)),
        _ => return not_found_path(),
    };
    let verb = match (ctx.method.as_str(), name) {
        ("GET", None) if ctx.flag("watch") => "watch",
        ("GET", None) => "list",
        ("POST", None) => "create",
        ("DELETE", None) => "deletecollection",
        ("GET", Some(_)) => "get",
        ("PUT", Some(_)) => "update",
        ("PATCH", Some(_)) => "patch",
        ("DELETE", Some(_)) if sub.is_none() => "delete",
        _ => return method_not_allowed(),
    };
    let resource = match sub {
        Some(s) => format!("{}/{s}", res.plural()),
        None => res.plural().to_string(),
    };
    let field_name = if matches!(verb, "list" | "watch") {
        ctx.param("fieldSelector").and_then(|fs| {
            fs.split(',').find_map(|r| {
                r.strip_prefix("metadata.name=")
                    .map(|n| n.trim_start_matches('='))
            })
        })
    } else {
        None
    };
    if let Some(denied) = authorize(
        shared,
        ctx,
        verb,
        res.group(),
        &resource,
        &res.qualified(),
        name.or(field_name),
        ns,
    ) {
        return denied;
    }
    match verb {
        "list" | "watch" => {
            let selector = match Selector::parse(res, ns, ctx) {
                Ok(s) => s,
                Err(msg) => return bad_request(msg),
            };
            if verb == "watch" {
                start_watch(shared, ctx, res, selector)
            } else {
                list(shared, res, &selector)
            }
        }
        "create" => create(shared, ctx, res, ns.unwrap_or("")),
        "get" => {
            let key = ObjKey::new(res, ns.unwrap_or(""), name.expect("get has a name"));
            match shared.lock().objects.get(&key) {
                Some(obj) => json_response(200, obj),
                None => not_found(res, &key.name),
            }
        }
        "update" | "patch" => update(
            shared,
            ctx,
            res,
            ObjKey::new(res, ns.unwrap_or(""), name.expect("has a name")),
            sub,
            verb == "patch",
        ),
        "delete" => delete(
            shared,
            ctx,
            res,
            ObjKey::new(res, ns.unwrap_or(""), name.expect("has a name")),
        ),
        _ => method_not_allowed(),
    }
}

// ---------------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------------

struct Selector {
    res: Res,
    ns: Option<String>,
    fields: Vec<(String, bool, String)>,
    labels: Vec<LabelReq>,
}

enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Selector {
    fn parse(res: Res, ns: Option<&str>, ctx: &Ctx) -> Result<Selector, String> {
        let mut fields = Vec::new();
        for req in ctx
            .param("fieldSelector")
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
        {
            let (field, eq, value) = if let Some((f, v)) = req.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = req.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = req.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{req}'; can't understand '{req}'"
                ));
            };
            if !res.field_labels().contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            fields.push((field.to_string(), eq, value.to_string()));
        }
        let mut labels = Vec::new();
        for req in split_top_level(ctx.param("labelSelector").unwrap_or("")) {
            let req = req.trim();
            if req.is_empty() {
                continue;
            }
            let bad = || {
                format!("unable to parse requirement: found '{req}', expected: in, notin, =, ==, !=, gt, lt")
            };
            let set = |s: &str| -> Result<Vec<String>, String> {
                let s = s.trim();
                let inner = s
                    .strip_prefix('(')
                    .and_then(|s| s.strip_suffix(')'))
                    .ok_or_else(bad)?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let parsed = if let Some(k) = req.strip_prefix('!') {
                LabelReq::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = req.split_once(" notin ") {
                LabelReq::NotIn(k.trim().to_string(), set(v)?)
            } else if let Some((k, v)) = req.split_once(" in ") {
                LabelReq::In(k.trim().to_string(), set(v)?)
            } else if let Some((k, v)) = req.split_once("!=") {
                LabelReq::NotEq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = req.split_once("==") {
                LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = req.split_once('=') {
                LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
            } else if req.contains(|c: char| c.is_whitespace() || "()<>".contains(c)) {
                return Err(bad());
            } else {
                LabelReq::Exists(req.to_string())
            };
            labels.push(parsed);
        }
        Ok(Selector {
            res,
            ns: ns.map(str::to_string),
            fields,
            labels,
        })
    }

    fn matches(&self, key: &ObjKey, obj: &Value) -> bool {
        if key.res != self.res {
            return false;
        }
        if let Some(ns) = &self.ns {
            if &key.ns != ns {
                return false;
            }
        }
        for (field, eq, value) in &self.fields {
            let actual = match field.as_str() {
                "metadata.name" => key.name.as_str(),
                "metadata.namespace" => key.ns.as_str(),
                "spec.signerName" => str_at(obj, "/spec/signerName"),
                _ => "",
            };
            if (actual == value) != *eq {
                return false;
            }
        }
        let label = |k: &str| {
            obj.pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
        };
        self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        })
    }
}

/// Splits a label selector at the commas that are not inside `( )`.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

// ---------------------------------------------------------------------------------------------
// List and watch
// ---------------------------------------------------------------------------------------------

fn list_item(res: Res, obj: &Value) -> Value {
    let mut item = obj.clone();
    if !res.list_items_typed() {
        if let Some(m) = item.as_object_mut() {
            m.remove("kind");
            m.remove("apiVersion");
        }
    }
    item
}

fn list(shared: &Shared, res: Res, selector: &Selector) -> Response<Body> {
    let st = shared.lock();
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|(k, v)| selector.matches(k, v))
        .map(|(_, v)| list_item(res, v))
        .collect();
    json_response(
        200,
        &json!({
            "kind": format!("{}List", res.kind()),
            "apiVersion": res.api_version(),
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        }),
    )
}

struct WatchBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn start_watch(shared: &Arc<Shared>, ctx: &Ctx, res: Res, selector: Selector) -> Response<Body> {
    let rv_param = ctx.param("resourceVersion").unwrap_or("");
    let send_initial = match ctx.param("sendInitialEvents") {
        Some(v) => v == "true",
        None => rv_param.is_empty() || rv_param == "0",
    };
    let bookmarks = ctx.flag("allowWatchBookmarks");
    let timeout = ctx
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);

    let st = shared.lock();
    let mut start = WatchStart {
        initial: Vec::new(),
        initial_end_bookmark: ctx.param("sendInitialEvents") == Some("true"),
        from_rv: st.rv,
        expired: None,
    };
    if send_initial {
        start.initial = st
            .objects
            .iter()
            .filter(|(k, v)| selector.matches(k, v))
            .map(|(_, v)| v.clone())
            .collect();
    } else if !(rv_param.is_empty() || rv_param == "0") {
        let Ok(rv) = rv_param.parse::<u64>() else {
            return bad_request(format!(
                "resourceVersion: Invalid value: \"{rv_param}\": strconv.ParseUint: parsing \"{rv_param}\": invalid syntax"
            ));
        };
        if rv < st.compacted_rv {
            start.expired = Some(format!(
                "too old resource version: {rv} ({})",
                st.compacted_rv
            ));
        }
        start.from_rv = rv;
    }
    let limits = WatchLimits {
        close_after: st.watch_close_after,
        deadline: [timeout, st.watch_lifetime]
            .into_iter()
            .flatten()
            .min()
            .map(|d| tokio::time::Instant::now() + d),
        bookmark_interval: if bookmarks {
            st.bookmark_interval
        } else {
            None
        },
    };
    drop(st);

    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run_watch(shared.clone(), res, selector, start, limits, tx));
    let mut resp = Response::new(WatchBody(rx).boxed_unsync());
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

struct WatchStart {
    initial: Vec<Value>,
    initial_end_bookmark: bool,
    from_rv: u64,
    expired: Option<String>,
}

struct WatchLimits {
    close_after: Option<usize>,
    deadline: Option<tokio::time::Instant>,
    bookmark_interval: Option<Duration>,
}

/// Counts an open watch for [`FakeKube::open_watches`] while alive.
struct WatchGuard<'a>(&'a AtomicUsize);

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

async fn run_watch(
    shared: Arc<Shared>,
    res: Res,
    selector: Selector,
    start: WatchStart,
    limits: WatchLimits,
    tx: mpsc::Sender<Bytes>,
) {
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    let _guard = WatchGuard(&shared.open_watches);
    let mut ctl = shared.control.subscribe();
    let watch_epoch = ctl.borrow_and_update().watch_epoch;
    let mut rv_rx = shared.rv_tx.subscribe();

    if let Some(message) = start.expired {
        shared.lock().expired_watches += 1;
        let status = status_json(410, "Expired", message, Value::Null);
        let _ = tx.send(event_line("ERROR", &status)).await;
        return;
    }
    for obj in &start.initial {
        if tx.send(event_line("ADDED", obj)).await.is_err() {
            return;
        }
    }
    let bookmark = |rv: u64, end_of_initial: bool| {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if end_of_initial {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": res.kind(), "apiVersion": res.api_version(), "metadata": meta})
    };
    if start.initial_end_bookmark
        && tx
            .send(event_line("BOOKMARK", &bookmark(start.from_rv, true)))
            .await
            .is_err()
    {
        return;
    }

    let mut cursor = start.from_rv;
    let mut sent = 0usize;
    let mut next_bookmark = limits
        .bookmark_interval
        .map(|i| tokio::time::Instant::now() + i);
    let far = || tokio::time::Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        rv_rx.borrow_and_update();
        let events: Vec<Bytes> = {
            let st = shared.lock();
            let from = st.history.partition_point(|e| e.rv <= cursor);
            let events = st.history[from..]
                .iter()
                .filter(|e| selector.matches(&e.key, &e.object))
                .map(|e| event_line(e.event, &e.object))
                .collect();
            cursor = cursor.max(st.rv);
            events
        };
        for line in events {
            if tx.send(line).await.is_err() {
                return;
            }
            sent += 1;
            if limits.close_after.is_some_and(|n| sent >= n) {
                return;
            }
        }
        tokio::select! {
            changed = rv_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(limits.deadline.unwrap_or_else(far)) => return,
            _ = tokio::time::sleep_until(next_bookmark.unwrap_or_else(far)) => {
                if tx.send(event_line("BOOKMARK", &bookmark(cursor, false))).await.is_err() {
                    return;
                }
                next_bookmark = limits.bookmark_interval.map(|i| tokio::time::Instant::now() + i);
                sent += 1;
                if limits.close_after.is_some_and(|n| sent >= n) {
                    return;
                }
            }
            _ = async {
                // The Ref it returns is not Send: drop it inside.
                let _ = ctl.wait_for(|c| c.shutdown || c.paused || c.watch_epoch != watch_epoch).await;
            } => return,
            _ = tx.closed() => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Create, update, delete
// ---------------------------------------------------------------------------------------------

/// One field error, rendered as the API server renders `field.Error`.
struct FieldError {
    field: String,
    reason: &'static str,
    detail: String,
}

impl FieldError {
    fn required(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueRequired",
            detail: if detail.is_empty() {
                "Required value".to_string()
            } else {
                format!("Required value: {detail}")
            },
        }
    }

    fn invalid(field: &str, value: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueInvalid",
            detail: format!("Invalid value: {value}: {detail}"),
        }
    }

    fn not_supported(field: &str, value: &str, supported: &[&str]) -> FieldError {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            field: field.to_string(),
            reason: "FieldValueNotSupported",
            detail: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        }
    }

    fn duplicate(field: &str, value: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueDuplicate",
            detail: format!("Duplicate value: {value:?}"),
        }
    }

    fn text(&self) -> String {
        format!("{}: {}", self.field, self.detail)
    }
}

fn join_errors(errors: &[FieldError]) -> String {
    if errors.len() == 1 {
        errors[0].text()
    } else {
        let all: Vec<String> = errors.iter().map(FieldError::text).collect();
        format!("[{}]", all.join(", "))
    }
}

/// 422 Invalid, as the API server's validation answers.
fn invalid(res: Res, name: &str, errors: &[FieldError]) -> Response<Body> {
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.reason, "message": e.detail, "field": e.field}))
        .collect();
    status_response(
        422,
        "Invalid",
        format!(
            "{} \"{name}\" is invalid: {}",
            res.qualified_kind(),
            join_errors(errors)
        ),
        json!({"name": name, "group": res.group(), "kind": res.kind(), "causes": causes}),
    )
}

/// 403, as cert-manager's validating webhook answers through the API server.
fn webhook_denied(errors: &[FieldError]) -> Response<Body> {
    status_response(
        403,
        "Forbidden",
        format!(
            "admission webhook \"webhook.cert-manager.io\" denied the request: {}",
            join_errors(errors)
        ),
        Value::Null,
    )
}

/// `[]byte{0x2d, 0x2d, ...}`, as Go's `%#v` prints the value of an invalid `[]byte` field.
fn go_bytes(b: &[u8]) -> String {
    if b.is_empty() {
        return "[]byte(nil)".into();
    }
    let parts: Vec<String> = b.iter().map(|x| format!("0x{x:x}")).collect();
    format!("[]byte{{{}}}", parts.join(", "))
}

/// Parses a PEM CSR the way Go's `x509.ParseCertificateRequest` + `CheckSignature` would
/// reject it; returns the DER.
fn parse_csr_pem(pem_bytes: &[u8]) -> Result<Vec<u8>, String> {
    let block = pem::parse(pem_bytes)
        .ok()
        .filter(|p| p.tag() == "CERTIFICATE REQUEST" || p.tag() == "NEW CERTIFICATE REQUEST")
        .ok_or_else(|| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    use x509_parser::prelude::FromDer as _;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(block.contents())
            .map_err(|e| format!("asn1: structure error: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "x509: signature verification failure".to_string())?;
    Ok(block.contents().to_vec())
}

fn validate_name(name: &str) -> Option<FieldError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        None
    } else {
        Some(FieldError::invalid(
            "metadata.name",
            &format!("{name:?}"),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ))
    }
}

fn validate_usages(usages: Option<&Value>, required: bool, errors: &mut Vec<FieldError>) {
    let Some(list) = usages.and_then(Value::as_array).filter(|l| !l.is_empty()) else {
        if required {
            errors.push(FieldError::required("spec.usages", ""));
        }
        return;
    };
    let mut seen = BTreeSet::new();
    for (i, u) in list.iter().enumerate() {
        let u = u.as_str().unwrap_or("");
        if !KNOWN_USAGES.contains(&u) {
            errors.push(FieldError::not_supported(
                &format!("spec.usages[{i}]"),
                u,
                KNOWN_USAGES,
            ));
        } else if !seen.insert(u) {
            errors.push(FieldError::duplicate(&format!("spec.usages[{i}]"), u));
        }
    }
}

fn create(shared: &Arc<Shared>, ctx: &Ctx, res: Res, ns: &str) -> Response<Body> {
    let mut obj: Value = match serde_json::from_slice(&ctx.body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return bad_request(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
                    .to_string(),
            )
        }
    };
    if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
        if kind != res.kind() {
            return bad_request(format!(
                "{kind} in version \"v1\" cannot be handled as a {}: the kind in the body does not match the URL",
                res.kind()
            ));
        }
    }
    if let Some(api_version) = obj.get("apiVersion").and_then(Value::as_str) {
        if api_version != res.api_version() {
            return bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                res.api_version()
            ));
        }
    }
    obj["kind"] = json!(res.kind());
    obj["apiVersion"] = json!(res.api_version());
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    if res == Res::CertificateRequest {
        let body_ns = str_at(&obj, "/metadata/namespace");
        if !body_ns.is_empty() && body_ns != ns {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .to_string(),
            );
        }
        if !shared.lock().namespaces.contains(ns) {
            return status_response(
                404,
                "NotFound",
                format!("namespaces \"{ns}\" not found"),
                json!({"name": ns, "kind": "namespaces"}),
            );
        }
        obj["metadata"]["namespace"] = json!(ns);
    }

    let mut name = str_at(&obj, "/metadata/name").to_string();
    let generate = str_at(&obj, "/metadata/generateName").to_string();
    if name.is_empty() && !generate.is_empty() {
        name = format!("{generate}{}", random_suffix());
        obj["metadata"]["name"] = json!(name);
    }
    if name.is_empty() {
        return invalid(
            res,
            "",
            &[FieldError::required(
                "metadata.name",
                "name or generateName is required",
            )],
        );
    }
    if let Some(e) = validate_name(&name) {
        return invalid(res, &name, &[e]);
    }

    let user = &ctx.user;
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    match res {
        Res::Csr => {
            let mut errors = Vec::new();
            let request = spec.get("request").and_then(Value::as_str).unwrap_or("");
            let Some(request_pem) = b64_decode(request) else {
                return bad_request(
                    "CertificateSigningRequest in version \"v1\" cannot be handled as a CertificateSigningRequest: illegal base64 data at input byte 0"
                        .to_string(),
                );
            };
            if let Err(e) = parse_csr_pem(&request_pem) {
                errors.push(FieldError::invalid(
                    "spec.request",
                    &go_bytes(&request_pem),
                    &e,
                ));
            }
            let signer = spec.get("signerName").and_then(Value::as_str).unwrap_or("");
            if signer.is_empty() {
                errors.push(FieldError::required("spec.signerName", ""));
            } else if !valid_signer_name(signer) {
                errors.push(FieldError::invalid(
                    "spec.signerName",
                    &format!("{signer:?}"),
                    "must be a fully qualified domain and path of the form 'example.com/signer-name'",
                ));
            }
            validate_usages(spec.get("usages"), true, &mut errors);
            if let Some(exp) = spec.get("expirationSeconds").and_then(Value::as_i64) {
                if exp < MIN_EXPIRATION_SECONDS {
                    errors.push(FieldError::invalid(
                        "spec.expirationSeconds",
                        &exp.to_string(),
                        "may not specify a duration less than 600 seconds (10 minutes)",
                    ));
                }
            }
            if !errors.is_empty() {
                return invalid(res, &name, &errors);
            }
            // The API server records who asked; the client cannot choose.
            obj["spec"]["username"] = json!(user.username);
            obj["spec"]["uid"] = json!(user.uid);
            obj["spec"]["groups"] = json!(user.groups);
            // Status is reset on create.
            obj["status"] = json!({});
        }
        Res::CertificateRequest => {
            // The CRD's OpenAPI schema: required fields, checked by the API server.
            let mut errors = Vec::new();
            if !spec.get("request").is_some_and(Value::is_string) {
                errors.push(FieldError::required("spec.request", ""));
            }
            if !spec.get("issuerRef").is_some_and(Value::is_object) {
                errors.push(FieldError::required("spec.issuerRef", ""));
            } else if !spec
                .pointer("/issuerRef/name")
                .is_some_and(Value::is_string)
            {
                errors.push(FieldError::required("spec.issuerRef.name", ""));
            }
            if !errors.is_empty() {
                return invalid(res, &name, &errors);
            }
            // cert-manager's webhook: semantic checks.
            let request = str_at(&spec, "/request");
            match b64_decode(request) {
                None => errors.push(FieldError::invalid(
                    "spec.request",
                    "\"<invalid base64>\"",
                    "illegal base64 data",
                )),
                Some(pem_bytes) => {
                    if let Err(e) = parse_csr_pem(&pem_bytes) {
                        errors.push(FieldError::invalid(
                            "spec.request",
                            &go_bytes(&pem_bytes),
                            &format!("failed to decode csr: {e}"),
                        ));
                    }
                }
            }
            validate_usages(spec.get("usages"), false, &mut errors);
            if let Some(d) = spec.get("duration").and_then(Value::as_str) {
                if parse_go_duration(d).is_none() {
                    errors.push(FieldError::invalid(
                        "spec.duration",
                        &format!("{d:?}"),
                        "time: invalid duration",
                    ));
                }
            }
            if !errors.is_empty() {
                return webhook_denied(&errors);
            }
            // cert-manager's mutating webhook records who asked.
            obj["spec"]["username"] = json!(user.username);
            obj["spec"]["uid"] = json!(user.uid);
            obj["spec"]["groups"] = json!(user.groups);
            // Status is a subresource: ignored on create.
            obj["status"] = json!({});
            obj["metadata"]["generation"] = json!(1);
        }
    }

    let key = ObjKey::new(res, if res == Res::Csr { "" } else { ns }, &name);
    let mut st = shared.lock();
    if st.objects.contains_key(&key) {
        return status_response(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
            details(Some(&name), res.group(), res.plural()),
        );
    }
    let object_uid = uid();
    obj["metadata"]["uid"] = json!(object_uid);
    obj["metadata"]["creationTimestamp"] = json!(rfc3339(unix_now()));
    if ctx.param("dryRun") == Some("All") {
        obj["metadata"]["resourceVersion"] = json!("");
        return json_response(201, &obj);
    }
    let behaviour = st.behaviour_for(res, &obj);
    let stored = st.put(&key, obj, "ADDED");
    shared.commit(st);
    tokio::spawn(run_behaviour(shared.clone(), key, object_uid, behaviour));
    json_response(201, &stored)
}

fn valid_signer_name(s: &str) -> bool {
    let Some((domain, path)) = s.split_once('/') else {
        return false;
    };
    domain.contains('.')
        && validate_name(domain).is_none()
        && !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

fn update(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    res: Res,
    key: ObjKey,
    sub: Option<&str>,
    patch: bool,
) -> Response<Body> {
    let Ok(body) = serde_json::from_slice::<Value>(&ctx.body) else {
        return bad_request("the body of the request was in an unknown format".to_string());
    };
    let mut st = shared.lock();
    let Some(old) = st.objects.get(&key).cloned() else {
        return not_found(res, &key.name);
    };
    let mut new = if patch {
        let ct = ctx.content_type.split(';').next().unwrap_or("").trim();
        if !matches!(
            ct,
            "application/merge-patch+json" | "application/strategic-merge-patch+json"
        ) {
            return status_response(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (this fake does not take {ct})"),
                Value::Null,
            );
        }
        let mut merged = old.clone();
        merge_patch(&mut merged, &body);
        merged
    } else {
        body
    };
    if str_at(&new, "/metadata/name") != key.name {
        return bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            str_at(&new, "/metadata/name"),
            key.name
        ));
    }
    let rv = str_at(&new, "/metadata/resourceVersion").to_string();
    if rv.is_empty() && !patch {
        return invalid(
            res,
            &key.name,
            &[FieldError::invalid(
                "metadata.resourceVersion",
                "0x0",
                "must be specified for an update",
            )],
        );
    }
    if !rv.is_empty() && rv != str_at(&old, "/metadata/resourceVersion") {
        return status_response(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                res.qualified(),
                key.name
            ),
            details(Some(&key.name), res.group(), res.plural()),
        );
    }
    let stored = match sub {
        None => {
            // The main resource cannot change status (a subresource) nor, for a CSR, spec.
            let mut merged = old.clone();
            merged["metadata"]["labels"] = new["metadata"]["labels"].take();
            merged["metadata"]["annotations"] = new["metadata"]["annotations"].take();
            if res == Res::CertificateRequest {
                merged["spec"] = new["spec"].take();
            }
            merged
        }
        Some("status") => {
            let mut merged = old.clone();
            merged["status"] = new["status"].take();
            merged
        }
        Some(_) => {
            // approval: only the conditions.
            let mut merged = old.clone();
            merged["status"]["conditions"] = new["status"]["conditions"].take();
            merged
        }
    };
    let stored = strip_nulls(stored);
    if stored == old {
        return json_response(200, &old);
    }
    let behaviour = st.behaviour_for(res, &stored);
    let approved_now = res == Res::Csr
        && has_condition(&stored, "Approved")
        && !has_condition(&old, "Approved")
        && !has_condition(&stored, "Denied");
    let object_uid = str_at(&stored, "/metadata/uid").to_string();
    let stored = st.put(&key, stored, "MODIFIED");
    shared.commit(st);
    // A signer signs what someone else approved.
    if approved_now && behaviour == Behaviour::NeverApprove {
        tokio::spawn(sign_task(shared.clone(), key, object_uid));
    }
    json_response(200, &stored)
}

fn delete(shared: &Arc<Shared>, ctx: &Ctx, res: Res, key: ObjKey) -> Response<Body> {
    let options = serde_json::from_slice::<Value>(&ctx.body).unwrap_or(Value::Null);
    let mut st = shared.lock();
    let Some(old) = st.objects.get(&key).cloned() else {
        return not_found(res, &key.name);
    };
    let old_uid = str_at(&old, "/metadata/uid").to_string();
    if let Some(want) = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
    {
        if want != old_uid {
            return status_response(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: UID in precondition: {want}, UID in object meta: {old_uid}",
                    res.qualified(),
                    key.name
                ),
                details(Some(&key.name), res.group(), res.plural()),
            );
        }
    }
    if let Some(want) = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        let have = str_at(&old, "/metadata/resourceVersion");
        if want != have {
            return status_response(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {have}",
                    res.qualified(),
                    key.name
                ),
                details(Some(&key.name), res.group(), res.plural()),
            );
        }
    }
    if ctx.param("dryRun") == Some("All") {
        return json_response(200, &old);
    }
    st.objects.remove(&key);
    let rv = st.bump();
    let mut last = old;
    last["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.history.push(HistoryEvent {
        rv,
        key: key.clone(),
        event: "DELETED",
        object: last.clone(),
    });
    st.deleted.push((res, last.clone()));
    shared.commit(st);
    match res {
        // The generic registry answers a delete with a Status unless the store returns the
        // deleted object, which custom resources' stores do.
        Res::Csr => json_response(
            200,
            &json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": key.name,
                    "group": res.group(),
                    "kind": res.plural(),
                    "uid": old_uid,
                },
            }),
        ),
        Res::CertificateRequest => json_response(200, &last),
    }
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// TokenReview
// ---------------------------------------------------------------------------------------------

fn token_review(shared: &Arc<Shared>, ctx: &Ctx) -> Response<Body> {
    if let Some(denied) = authorize(
        shared,
        ctx,
        "create",
        "authentication.k8s.io",
        "tokenreviews",
        "tokenreviews.authentication.k8s.io",
        None,
        None,
    ) {
        return denied;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&ctx.body) else {
        return bad_request("the body of the request was in an unknown format".to_string());
    };
    let token = str_at(&body, "/spec/token");
    if token.is_empty() {
        return status_response(
            422,
            "Invalid",
            "TokenReview.authentication.k8s.io \"\" is invalid: spec.token: Required value"
                .to_string(),
            json!({"group": "authentication.k8s.io", "kind": "TokenReview",
                   "causes": [{"reason": "FieldValueRequired", "message": "Required value",
                               "field": "spec.token"}]}),
        );
    }
    let wanted: Vec<String> = body
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let st = shared.lock();
    let status = match st.tokens.get(token).filter(|t| !t.revoked) {
        None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
        Some(t) => {
            let target = if wanted.is_empty() {
                vec![API_AUDIENCE.to_string()]
            } else {
                wanted.clone()
            };
            let common: Vec<&String> = target.iter().filter(|a| t.audiences.contains(a)).collect();
            if common.is_empty() {
                json!({
                    "user": {},
                    "error": format!(
                        "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
                        t.audiences, target
                    ),
                })
            } else {
                json!({
                    "authenticated": true,
                    "user": {
                        "username": format!("system:serviceaccount:{}:{}", t.namespace, t.service_account),
                        "uid": t.uid,
                        "groups": service_account_groups(&t.namespace),
                    },
                    "audiences": common,
                })
            }
        }
    };
    drop(st);
    let mut spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    if wanted.is_empty() {
        if let Some(m) = spec.as_object_mut() {
            m.remove("audiences");
        }
    }
    json_response(
        201,
        &json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Approver and signer
// ---------------------------------------------------------------------------------------------

fn has_condition(obj: &Value, ty: &str) -> bool {
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

async fn run_behaviour(shared: Arc<Shared>, key: ObjKey, object_uid: String, behaviour: Behaviour) {
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
async fn sign_task(shared: Arc<Shared>, key: ObjKey, object_uid: String) {
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

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync());
    *resp.status_mut() = hyper::StatusCode::from_u16(code).expect("valid status code");
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn text_response(code: u16, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync());
    *resp.status_mut() = hyper::StatusCode::from_u16(code).expect("valid status code");
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn status_json(code: u16, reason: &str, message: String, details: Value) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if !details.is_null() {
        s["details"] = details;
    }
    s
}

fn status_response(code: u16, reason: &str, message: String, details: Value) -> Response<Body> {
    json_response(code, &status_json(code, reason, message, details))
}

fn bad_request(message: String) -> Response<Body> {
    status_response(400, "BadRequest", message, Value::Null)
}

fn not_found(res: Res, name: &str) -> Response<Body> {
    status_response(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", res.qualified()),
        details(Some(name), res.group(), res.plural()),
    )
}

fn not_found_path() -> Response<Body> {
    status_response(
        404,
        "NotFound",
        "the server could not find the requested resource".to_string(),
        json!({}),
    )
}

fn method_not_allowed() -> Response<Body> {
    status_response(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource".to_string(),
        json!({}),
    )
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// The string at JSON pointer `ptr`, or "".
fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// `2025-01-02T03:04:05Z` (RFC 3339, as metav1.Time serialises).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses a Go `time.Duration` string (`1h30m`, `90s`, `2160h0m0s`, `1.5h`).
fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Some(Duration::from_secs_f64(total))
}

fn fill_random(buf: &mut [u8]) {
    use ring::rand::SecureRandom as _;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the system RNG works");
}

/// A random RFC 4122 version 4 UUID, as metadata.uid is.
fn uid() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = vec![0u8; len];
    fill_random(&mut b);
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

/// The 5-character suffix `generateName` gets (the API server's alphabet: no vowels, no
/// look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut b = [0u8; 5];
    fill_random(&mut b);
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

/// Standard base64 with padding (how JSON carries `[]byte`).
pub fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// base64url without padding (JWT).
fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Decodes standard base64 (padding optional, whitespace ignored). None when invalid.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    LENIENT.decode(compact).ok()
}
