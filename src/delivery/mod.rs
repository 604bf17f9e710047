//! Credentials pushed to the app over a socket, beside their files: Envoy's
//! Secret Discovery Service ([`sds`]).
//!
//! The loop publishes a certificate's files, then its push sink
//! ([`crate::sinks`]) offers it to the [`Hub`] under its resource names; each
//! server follows the hub and pushes what changed to every open stream.

pub mod sds;
mod socket;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::credential::Credential;

pub use socket::bind_unix;

/// Which part of a certificate a resource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The chain and its private key (an SDS `tls_certificate`).
    Certificate,
    /// The trust anchors (an SDS `validation_context`).
    TrustAnchors,
}

/// One resource offered by the hub.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Which part of the credential.
    pub part: Part,
    /// The live certificate.
    pub credential: Arc<Credential>,
    /// The sink that offered it: only that sink withdraws it.
    owner: u64,
}

/// Every resource on offer, by name.
pub type Resources = BTreeMap<String, Resource>;

/// What the push deliveries offer, shared by the sinks that fill it and the
/// servers that follow it. Cloning it shares it.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: Arc<watch::Sender<Resources>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Hub {
        Hub {
            tx: Arc::new(watch::channel(Resources::new()).0),
        }
    }

    /// A new owner id, one per sink.
    pub fn owner() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// Offers `credential` under each of `names`, replacing what was there;
    /// servers are told only when something changed.
    pub fn offer(&self, owner: u64, names: &[(&str, Part)], credential: &Arc<Credential>) {
        self.tx.send_if_modified(|resources| {
            let mut modified = false;
            for (name, part) in names {
                let same = resources.get(*name).is_some_and(|r| {
                    r.part == *part && Arc::ptr_eq(&r.credential, credential) && r.owner == owner
                });
                if !same {
                    resources.insert(
                        (*name).to_owned(),
                        Resource {
                            part: *part,
                            credential: credential.clone(),
                            owner,
                        },
                    );
                    modified = true;
                }
            }
            modified
        });
    }

    /// Withdraws what `owner` offered (a certificate removed from the
    /// configuration, or renamed).
    pub fn withdraw(&self, owner: u64) {
        self.tx.send_if_modified(|resources| {
            let before = resources.len();
            resources.retain(|_, r| r.owner != owner);
            resources.len() != before
        });
    }

    /// Follows what is on offer.
    pub fn subscribe(&self) -> watch::Receiver<Resources> {
        self.tx.subscribe()
    }
}

/// Serves Envoy's SDS over `hub` on `unix`, and on `tcp` too when given,
/// until the process ends. Each connection is HTTP/2 (gRPC) on its own task.
pub async fn serve_sds(
    unix: tokio::net::UnixListener,
    tcp: Option<tokio::net::TcpListener>,
    hub: &Hub,
) {
    let service = sds::Sds::new(hub.subscribe()).service();
    let on_unix = async {
        loop {
            match unix.accept().await {
                Ok((stream, _)) => serve_connection(stream, service.clone()),
                Err(e) => accept_failed(&e).await,
            }
        }
    };
    let on_tcp = async {
        let Some(tcp) = tcp else {
            return std::future::pending().await;
        };
        loop {
            match tcp.accept().await {
                Ok((stream, _)) => serve_connection(stream, service.clone()),
                Err(e) => accept_failed(&e).await,
            }
        }
    };
    tokio::join!(on_unix, on_tcp);
}

/// Serves one gRPC connection on a task of its own.
fn serve_connection<S, I>(io: I, service: S)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    tokio::spawn(async move {
        let service = hyper_util::service::TowerToHyperService::new(service);
        let served = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .await;
        if let Err(e) = served {
            tracing::debug!(error = %e, "an SDS connection ended with an error");
        }
    });
}

/// Out of file descriptors, most likely: wait a little rather than spin.
async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "accepting an SDS connection failed");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}
