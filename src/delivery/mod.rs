//! Credentials pushed to the app over a socket, beside their files: Envoy's
//! Secret Discovery Service ([`sds`]) and the SPIFFE Workload API
//! ([`workload`]).
//!
//! The loop publishes a certificate's files, then its push sink
//! ([`crate::sinks`]) offers it to the [`Hub`] under its SDS resource names
//! (and as an X.509-SVID); each server follows the hub and pushes what
//! changed to every open stream.

mod authority;
pub mod sds;
mod socket;
pub mod workload;

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

/// Every SDS resource on offer, by name.
pub type Resources = BTreeMap<String, Resource>;

/// A certificate offered as an X.509-SVID.
#[derive(Debug, Clone)]
pub struct Svid {
    /// Its place in `workloadApi.svids`: the first is the default SVID.
    pub rank: usize,
    /// The live certificate.
    pub credential: Arc<Credential>,
    owner: u64,
}

/// Everything on offer.
#[derive(Debug, Clone, Default)]
pub struct Offered {
    /// The SDS resources, by name.
    pub sds: Resources,
    /// The X.509-SVIDs, by certificate name.
    pub svids: BTreeMap<String, Svid>,
}

/// What the push deliveries offer, shared by the sinks that fill it and the
/// servers that follow it. Cloning it shares it.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: Arc<watch::Sender<Offered>>,
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
            tx: Arc::new(watch::channel(Offered::default()).0),
        }
    }

    /// A new owner id, one per sink.
    pub fn owner() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// Offers `credential` under each of the SDS `names`, and as the SVID
    /// `svid` (its certificate name and rank) when given, replacing what was
    /// there; servers are told only when something changed.
    pub fn offer(
        &self,
        owner: u64,
        names: &[(&str, Part)],
        svid: Option<(&str, usize)>,
        credential: &Arc<Credential>,
    ) {
        self.tx.send_if_modified(|offered| {
            let mut modified = false;
            if let Some((name, rank)) = svid {
                let same = offered.svids.get(name).is_some_and(|s| {
                    s.rank == rank && Arc::ptr_eq(&s.credential, credential) && s.owner == owner
                });
                if !same {
                    offered.svids.insert(
                        name.to_owned(),
                        Svid {
                            rank,
                            credential: credential.clone(),
                            owner,
                        },
                    );
                    modified = true;
                }
            }
            let resources = &mut offered.sds;
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
        self.tx.send_if_modified(|offered| {
            let before = offered.sds.len() + offered.svids.len();
            offered.sds.retain(|_, r| r.owner != owner);
            offered.svids.retain(|_, s| s.owner != owner);
            offered.sds.len() + offered.svids.len() != before
        });
    }

    /// Follows what is on offer.
    pub fn subscribe(&self) -> watch::Receiver<Offered> {
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
    serve(unix, tcp, sds::Sds::new(hub.subscribe()).service()).await;
}

/// Serves the SPIFFE Workload API over `hub` on `unix` until the process
/// ends.
pub async fn serve_workload_api(unix: tokio::net::UnixListener, hub: &Hub) {
    serve(unix, None, workload::WorkloadApi::new(hub.subscribe())).await;
}

/// Serves `service` on `unix` (and `tcp`), a task per connection.
async fn serve<S>(unix: tokio::net::UnixListener, tcp: Option<tokio::net::TcpListener>, service: S)
where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let on_unix = async {
        loop {
            match unix.accept().await {
                Ok((stream, _)) => serve_connection(authority::shim(stream), service.clone()),
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
            tracing::debug!(error = %e, "a gRPC connection ended with an error");
        }
    });
}

/// Out of file descriptors, most likely: wait a little rather than spin.
async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "accepting a gRPC connection failed");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}
