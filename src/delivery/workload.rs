//! The SPIFFE Workload API, X.509-SVID profile: `FetchX509SVID` and
//! `FetchX509Bundles`, both streaming, on a Unix socket.
//!
//! Specs: the SPIFFE Workload API
//! (<https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Workload_API.md>)
//! and Workload Endpoint
//! (<https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Workload_Endpoint.md>).
//! Every request must carry the metadata `workload.spiffe.io: true`
//! (InvalidArgument without it). An SVID is a certificate with exactly one
//! URI SAN, its `spiffe://` ID (checked when the configuration is read); its
//! key is sent as PKCS#8 DER, its chain and bundle as concatenated DER.
//! Bundles are keyed by trust domain (`spiffe://example.org`). A stream gets
//! the current SVIDs at once (or as soon as the first is published), then
//! every change. The JWT methods answer Unimplemented.
//!
//! The messages are written here with prost's derives from the spec's
//! `workload.proto` (which has no package: methods are
//! `/SpiffeWorkloadAPI/<Method>`), so building needs no `protoc`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::debug;
use zeroize::Zeroizing;

use super::Offered;
use crate::credential::Credential;

/// `X509SVIDRequest`: no parameters.
#[derive(Clone, PartialEq, Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct X509SvidResponse {
    /// The SVIDs, the default first.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// Revocation lists (none).
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    /// Bundles of other trust domains (none).
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Vec<u8>>,
}

/// `X509SVID`: one SVID, its key and its trust domain's bundle.
#[derive(Clone, PartialEq, Message)]
pub struct X509Svid {
    /// The SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// The chain, DER certificates one after another, the leaf first.
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    /// The private key, PKCS#8 DER.
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    /// The trust domain's CA certificates, DER one after another.
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
    /// A hint for choosing among SVIDs: the certificate's name.
    #[prost(string, tag = "5")]
    pub hint: String,
}

/// `X509BundlesRequest`: no parameters.
#[derive(Clone, PartialEq, Message)]
pub struct X509BundlesRequest {}

/// `X509BundlesResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct X509BundlesResponse {
    /// Revocation lists (none).
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub crl: Vec<Vec<u8>>,
    /// The bundles, keyed by trust domain (`spiffe://example.org`).
    #[prost(map = "string, bytes", tag = "2")]
    pub bundles: HashMap<String, Vec<u8>>,
}

/// The header every Workload API request carries, so that a browser or an
/// SSRF cannot make one.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// The Workload API over the hub's SVIDs.
#[derive(Debug, Clone)]
pub struct WorkloadApi {
    offered: watch::Receiver<Offered>,
}

impl WorkloadApi {
    /// Serves the SVIDs `offered` holds.
    pub fn new(offered: watch::Receiver<Offered>) -> WorkloadApi {
        WorkloadApi { offered }
    }
}

/// The SVID's ID and trust domain (`spiffe://example.org`): its one URI.
fn spiffe_id(credential: &Credential) -> Option<(String, String)> {
    let Credential::Certificate(c) = credential else {
        return None;
    };
    let id = c.names.uris.first()?.clone();
    let rest = id.strip_prefix("spiffe://")?;
    let domain = rest.split('/').next()?;
    Some((format!("spiffe://{domain}"), id))
}

fn concat(ders: &[Vec<u8>]) -> Vec<u8> {
    ders.concat()
}

/// The current `X509SVIDResponse`, if any SVID is published.
fn svids(offered: &Offered) -> Option<X509SvidResponse> {
    let mut ranked: Vec<(&String, &super::Svid)> = offered.svids.iter().collect();
    ranked.sort_by_key(|(_, s)| s.rank);
    let svids: Vec<X509Svid> = ranked
        .into_iter()
        .filter_map(|(name, s)| {
            let Credential::Certificate(c) = &*s.credential else {
                return None;
            };
            let (_, id) = spiffe_id(&s.credential)?;
            Some(X509Svid {
                spiffe_id: id,
                x509_svid: concat(&c.issued.chain),
                x509_svid_key: c.key.pkcs8_der().to_vec(),
                bundle: concat(&c.issued.ca),
                hint: name.clone(),
            })
        })
        .collect();
    (!svids.is_empty()).then(|| X509SvidResponse {
        svids,
        ..Default::default()
    })
}

/// The current `X509BundlesResponse`: every SVID's trust anchors, by trust
/// domain, each certificate once.
fn bundles(offered: &Offered) -> Option<X509BundlesResponse> {
    let mut by_domain: BTreeMap<String, Vec<&Vec<u8>>> = BTreeMap::new();
    for s in offered.svids.values() {
        let (Some((domain, _)), Credential::Certificate(c)) =
            (spiffe_id(&s.credential), &*s.credential)
        else {
            continue;
        };
        let anchors = by_domain.entry(domain).or_default();
        for der in &c.issued.ca {
            if !anchors.contains(&der) {
                anchors.push(der);
            }
        }
    }
    (!by_domain.is_empty()).then(|| X509BundlesResponse {
        bundles: by_domain
            .into_iter()
            .map(|(d, ders)| (d, ders.into_iter().flatten().copied().collect()))
            .collect(),
        ..Default::default()
    })
}

/// Wipes the keys an `X509SVIDResponse` holds.
fn wipe_keys(response: X509SvidResponse) {
    for svid in response.svids {
        drop(Zeroizing::new(svid.x509_svid_key));
    }
}

/// Refuses a request without the security header, as the spec asks.
fn check_header<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get(SECURITY_HEADER).map(|v| v.to_str()) {
        Some(Ok("true")) => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

/// A stream of `make(offered)`, sent at once when there is something, then
/// on every change of what it makes; it ends when the client goes.
fn follow<T>(
    mut offered: watch::Receiver<Offered>,
    make: fn(&Offered) -> Option<T>,
    wipe: fn(T),
) -> ReceiverStream<Result<T, Status>>
where
    T: Message + Clone + 'static,
{
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut sent: Option<ring::digest::Digest> = None;
        loop {
            let next = make(&offered.borrow_and_update());
            if let Some(message) = next {
                let digest = {
                    let encoded = Zeroizing::new(message.encode_to_vec());
                    ring::digest::digest(&ring::digest::SHA256, &encoded)
                };
                if sent.is_none_or(|s| s.as_ref() != digest.as_ref()) {
                    sent = Some(digest);
                    if tx.send(Ok(message)).await.is_err() {
                        break;
                    }
                } else {
                    wipe(message);
                }
            }
            tokio::select! {
                changed = offered.changed() => if changed.is_err() { break },
                () = tx.closed() => break,
            }
        }
        debug!("a Workload API stream closed");
    });
    ReceiverStream::new(rx)
}

/// `FetchX509SVID`.
struct FetchX509Svid(watch::Receiver<Offered>);

impl tonic::server::ServerStreamingService<X509SvidRequest> for FetchX509Svid {
    type Response = X509SvidResponse;
    type ResponseStream = ReceiverStream<Result<X509SvidResponse, Status>>;
    type Future = std::future::Ready<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<X509SvidRequest>) -> Self::Future {
        std::future::ready(
            check_header(&request)
                .map(|()| Response::new(follow(self.0.clone(), svids, wipe_keys))),
        )
    }
}

/// `FetchX509Bundles`.
struct FetchX509Bundles(watch::Receiver<Offered>);

impl tonic::server::ServerStreamingService<X509BundlesRequest> for FetchX509Bundles {
    type Response = X509BundlesResponse;
    type ResponseStream = ReceiverStream<Result<X509BundlesResponse, Status>>;
    type Future = std::future::Ready<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<X509BundlesRequest>) -> Self::Future {
        std::future::ready(
            check_header(&request).map(|()| Response::new(follow(self.0.clone(), bundles, drop))),
        )
    }
}

impl tower_service::Service<http::Request<hyper::body::Incoming>> for WorkloadApi {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let offered = self.offered.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            Ok(match path.as_str() {
                "/SpiffeWorkloadAPI/FetchX509SVID" => {
                    tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                        .server_streaming(FetchX509Svid(offered), request)
                        .await
                }
                "/SpiffeWorkloadAPI/FetchX509Bundles" => {
                    tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                        .server_streaming(FetchX509Bundles(offered), request)
                        .await
                }
                "/SpiffeWorkloadAPI/FetchJWTSVID"
                | "/SpiffeWorkloadAPI/FetchJWTBundles"
                | "/SpiffeWorkloadAPI/ValidateJWTSVID" => Status::unimplemented(
                    "pillion serves X.509-SVIDs only: JWT-SVIDs are not implemented",
                )
                .into_http(),
                other => Status::unimplemented(format!("no method {other}")).into_http(),
            })
        })
    }
}
