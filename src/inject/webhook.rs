//! The webhook's HTTPS endpoint (`POST /mutate`), the certificate it serves,
//! re-read whenever pillion publishes a renewed one, and the `caBundle` of the
//! MutatingWebhookConfiguration, kept equal to that certificate's CA.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::{Decision, Injector};
use crate::agent::CredentialState;
use crate::schedule::Backoff;

/// The largest AdmissionReview taken: a pod is at most ~1.5 MB in etcd, and
/// the review carries it once for a CREATE.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// The TLS handshake and the request must come within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer than this (the API server reconnects).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// The files of the certificate the webhook serves.
#[derive(Debug, Clone)]
pub struct ServedFiles {
    /// The credential's name in the configuration.
    pub name: String,
    /// Leaf then intermediates.
    pub certificate: PathBuf,
    /// The private key.
    pub private_key: PathBuf,
    /// The CA the API server is to trust (`caBundle`).
    pub ca: PathBuf,
}

/// The certificate handed to each TLS handshake; none until the first is
/// published, so handshakes fail until then (and `/readyz` says not ready).
#[derive(Debug, Default)]
pub struct CertSlot {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.clone()
    }
}

impl CertSlot {
    fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(key);
        }
    }
}

/// Reads the chain and key pillion published, checked to belong together.
fn load(files: &ServedFiles) -> Result<(Vec<u8>, CertifiedKey), String> {
    let chain_pem = std::fs::read(&files.certificate)
        .map_err(|e| format!("reading {}: {e}", files.certificate.display()))?;
    let key_pem = Zeroizing::new(
        std::fs::read(&files.private_key)
            .map_err(|e| format!("reading {}: {e}", files.private_key.display()))?,
    );
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", files.certificate.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: {e}", files.private_key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: {e}", files.private_key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "{} and {}: {e}",
            files.certificate.display(),
            files.private_key.display()
        )
    })?;
    Ok((chain_pem, certified))
}

/// Follows pillion's own renewals: each time the served certificate is
/// published anew, the next handshake gets it, and the webhook
/// configuration's `caBundle` is brought in line when `webhook_configuration`
/// is set (retried with backoff while the API server refuses).
pub async fn follow(
    files: ServedFiles,
    slot: Arc<CertSlot>,
    mut state: watch::Receiver<Vec<CredentialState>>,
    webhook_configuration: Option<String>,
) {
    let mut served: Option<Vec<u8>> = None;
    let mut bundled: Option<Vec<u8>> = None;
    let mut backoff = Backoff::between(Duration::from_secs(1), Duration::from_secs(60));
    let mut retry: Option<Duration> = None;
    loop {
        let published = state
            .borrow_and_update()
            .iter()
            .any(|c| c.name == files.name && c.published);
        if published {
            match load(&files) {
                Ok((pem, key)) if served.as_ref() != Some(&pem) => {
                    slot.set(Arc::new(key));
                    info!(certificate = %files.name, "the webhook serves the newly published certificate");
                    served = Some(pem);
                }
                Ok(_) => {}
                // A renewal between reading the chain and the key: the next
                // state change brings the pair together.
                Err(e) => {
                    warn!(certificate = %files.name, error = %e, "the webhook keeps its previous certificate")
                }
            }
            if let Some(name) = &webhook_configuration {
                match std::fs::read(&files.ca) {
                    Ok(ca) if bundled.as_ref() != Some(&ca) => match set_ca_bundle(name, &ca).await
                    {
                        Ok(changed) => {
                            if changed {
                                info!(webhook_configuration = %name, "caBundle set to the webhook certificate's CA");
                            }
                            bundled = Some(ca);
                            backoff.succeeded();
                            retry = None;
                        }
                        Err(e) => {
                            let wait = backoff.failed();
                            warn!(webhook_configuration = %name, error = %e, retry_in = ?wait, "could not set the caBundle; the API server cannot call the webhook until it is set");
                            retry = Some(wait);
                        }
                    },
                    Ok(_) => {}
                    Err(e) => {
                        warn!(file = %files.ca.display(), error = %e, "cannot read the CA for the caBundle")
                    }
                }
            }
        }
        let changed = async {
            match retry {
                Some(wait) => {
                    tokio::select! {
                        r = state.changed() => r.is_ok(),
                        () = tokio::time::sleep(wait) => true,
                    }
                }
                None => state.changed().await.is_ok(),
            }
        };
        if !changed.await {
            return;
        }
    }
}

/// Sets every webhook's `clientConfig.caBundle` in `name` to `ca`; `false`
/// when they all had it already. A conflicting update by someone else is
/// retried at the next round.
async fn set_ca_bundle(name: &str, ca: &[u8]) -> Result<bool, kube::Error> {
    let client = kube::Client::try_default().await?;
    let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client);
    let mut config = api.get(name).await?;
    let bundle = k8s_openapi::ByteString(ca.to_vec());
    let mut changed = false;
    for webhook in config.webhooks.iter_mut().flatten() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&bundle) {
            webhook.client_config.ca_bundle = Some(bundle.clone());
            changed = true;
        }
    }
    if changed {
        api.replace(name, &kube::api::PostParams::default(), &config)
            .await?;
    }
    Ok(changed)
}

/// Serves `POST /mutate` (and `GET /healthz`) over TLS until the runtime stops.
pub async fn serve(listener: TcpListener, slot: Arc<CertSlot>, injector: Arc<Injector>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(slot);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admission webhook listening: POST /mutate");
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "accepting a webhook connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The TLS 1.3 session tickets and the answer are small writes in a row: with Nagle's
        // algorithm the answer waits for the client's delayed ACK (40 ms on Linux).
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let injector = injector.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%peer, error = %e, "webhook TLS handshake failed"),
                Err(_) => return debug!(%peer, "webhook TLS handshake timed out"),
            };
            let service = hyper::service::service_fn(move |req| {
                let injector = injector.clone();
                async move { Ok::<_, Infallible>(handle(req, &injector).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Err(e)) => debug!(%peer, error = %e, "webhook connection ended with an error"),
                Err(_) => debug!(%peer, "closed a webhook connection at the end of its lifetime"),
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn handle(req: Request<Incoming>, injector: &Injector) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "ok\n".into()),
        (&Method::POST, "/mutate") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        format!("reading the request: {e}\n"),
                    )
                }
            };
            let review: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        format!("the request is not an AdmissionReview: {e}\n"),
                    )
                }
            };
            let request = &review["request"];
            let pod = &request["object"]["metadata"];
            let who = format!(
                "{}/{}",
                request["namespace"].as_str().unwrap_or(""),
                pod["name"]
                    .as_str()
                    .or_else(|| pod["generateName"].as_str())
                    .unwrap_or("")
            );
            let (decision, answer) = injector.review(&review);
            match decision {
                Decision::Patch(_) => info!(pod = %who, "adding pillion to the pod"),
                Decision::Deny(m) => info!(pod = %who, reason = %m, "refused the pod"),
                Decision::Unchanged(why) => debug!(pod = %who, why, "pod left as it is"),
            }
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    serde_json::to_vec(&answer).expect("JSON values serialize"),
                )))
                .expect("a valid response")
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "not found: POST /mutate, GET /healthz\n".into(),
        ),
    }
}
