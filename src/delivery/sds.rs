//! Envoy's Secret Discovery Service (`envoy.service.secret.v3`), state of
//! the world: <https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol>.
//!
//! Each certificate is two resources: a `tls_certificate` (its chain and
//! key) and a `validation_context` (its trust anchors), named in the
//! configuration. `StreamSecrets` answers the names a stream asks for as
//! soon as any of them is known, and pushes again whenever one of them
//! changes; an ACK is noted, a NACK logged with Envoy's error detail, a name
//! not configured (yet) logged and answered when it appears. `FetchSecrets`
//! answers once. `DeltaSecrets` is not served (Envoy's SDS uses
//! `StreamSecrets` unless told otherwise).

use std::collections::BTreeSet;
use std::pin::Pin;

use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::{Offered, Part, Resources};
use crate::credential::Credential;
use crate::pem;

/// The type of every SDS resource.
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The SDS service over the hub's resources.
#[derive(Debug, Clone)]
pub struct Sds {
    resources: watch::Receiver<Offered>,
}

impl Sds {
    /// Serves the SDS resources `resources` holds.
    pub fn new(resources: watch::Receiver<Offered>) -> Sds {
        Sds { resources }
    }

    /// The gRPC service, for a tonic server.
    pub fn service(self) -> SecretDiscoveryServiceServer<Sds> {
        SecretDiscoveryServiceServer::new(self)
    }
}

/// The Envoy `Secret` of the resource `name`.
fn secret(name: &str, part: Part, credential: &Credential) -> Option<Secret> {
    let Credential::Certificate(c) = credential else {
        return None;
    };
    let inline = |bytes: Vec<u8>| DataSource {
        specifier: Some(Specifier::InlineBytes(bytes)),
        ..Default::default()
    };
    let kind = match part {
        Part::Certificate => secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(
                pem::encode_certificates(&c.issued.chain).into_bytes(),
            )),
            private_key: Some(inline(c.key.to_pem().as_bytes().to_vec())),
            ..Default::default()
        }),
        Part::TrustAnchors => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(inline(pem::encode_certificates(&c.issued.ca).into_bytes())),
            ..Default::default()
        }),
    };
    Some(Secret {
        name: name.to_owned(),
        r#type: Some(kind),
    })
}

/// The resources of `names` that are known, encoded, and a version that
/// changes exactly when one of them does (a digest of them all). An empty
/// list of names asks for every resource.
fn encode(names: &[String], resources: &Resources) -> Option<(String, Vec<Any>)> {
    let wanted: Vec<&String> = match names.is_empty() {
        true => resources.keys().collect(),
        false => names.iter().collect(),
    };
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut out = Vec::new();
    for name in wanted {
        let Some(r) = resources.get(name) else {
            continue;
        };
        let Some(s) = secret(name, r.part, &r.credential) else {
            continue;
        };
        let value = Zeroizing::new(s.encode_to_vec());
        wipe(s);
        digest.update(name.as_bytes());
        digest.update(&value);
        out.push(Any {
            type_url: SECRET_TYPE.to_owned(),
            value: value.to_vec(),
        });
    }
    if out.is_empty() {
        return None;
    }
    let version: String = digest.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some((version, out))
}

/// Wipes the key bytes a `Secret` holds.
fn wipe(s: Secret) {
    if let Some(secret::Type::TlsCertificate(t)) = s.r#type {
        if let Some(DataSource {
            specifier: Some(Specifier::InlineBytes(key)),
            ..
        }) = t.private_key
        {
            drop(Zeroizing::new(key));
        }
    }
}

/// One `StreamSecrets` stream: what it asks for and what it was sent.
#[derive(Debug, Default)]
struct Stream {
    names: Vec<String>,
    nonce: u64,
    /// The version last sent; `None` before the first response.
    sent: Option<String>,
    /// Names asked for that were not on offer, logged once each.
    unknown: BTreeSet<String>,
    peer: String,
}

impl Stream {
    /// Handles a request; the response to send, if any.
    fn on_request(
        &mut self,
        req: DiscoveryRequest,
        resources: &Resources,
    ) -> Option<DiscoveryResponse> {
        if !req.type_url.is_empty() && req.type_url != SECRET_TYPE {
            warn!(peer = %self.peer, type_url = %req.type_url, "an SDS request for another type of resource: ignored");
            return None;
        }
        let reply_to_ours = !req.response_nonce.is_empty();
        if reply_to_ours && req.response_nonce != self.nonce.to_string() {
            // An answer to an older response: the xDS protocol says to ignore it.
            debug!(peer = %self.peer, nonce = %req.response_nonce, "a stale SDS request: ignored");
            return None;
        }
        match (&req.error_detail, reply_to_ours) {
            (Some(e), _) => warn!(
                peer = %self.peer,
                resources = %self.names.join(","),
                rejected_version = %self.sent.as_deref().unwrap_or("-"),
                kept_version = %req.version_info,
                "Envoy rejected the secrets pillion sent (NACK): {}",
                e.message
            ),
            (None, true) => {
                debug!(peer = %self.peer, version = %req.version_info, "Envoy accepted the secrets (ACK)")
            }
            (None, false) => {}
        }
        let names_changed = req.resource_names != self.names;
        self.names = req.resource_names;
        self.note_unknown(resources);
        if reply_to_ours && !names_changed {
            return None;
        }
        self.respond(resources, !reply_to_ours || names_changed)
    }

    /// The resources changed: the response to push, if this stream's did.
    fn on_change(&mut self, resources: &Resources) -> Option<DiscoveryResponse> {
        self.note_unknown(resources);
        self.respond(resources, false)
    }

    fn note_unknown(&mut self, resources: &Resources) {
        for name in &self.names {
            let known = resources.contains_key(name);
            if !known && self.unknown.insert(name.clone()) {
                info!(peer = %self.peer, resource = %name, "Envoy asked for an SDS resource pillion does not have (yet): it is sent once a certificate with that name is published");
            } else if known && self.unknown.remove(name) {
                info!(peer = %self.peer, resource = %name, "the SDS resource Envoy asked for is there now: sending it");
            }
        }
    }

    /// A response with this stream's resources, unless none is known or
    /// (without `always`) Envoy has this version already.
    fn respond(&mut self, resources: &Resources, always: bool) -> Option<DiscoveryResponse> {
        let (version, found) = encode(&self.names, resources)?;
        if !always && self.sent.as_ref() == Some(&version) {
            return None;
        }
        self.nonce += 1;
        debug!(peer = %self.peer, %version, resources = found.len(), "sending secrets over SDS");
        self.sent = Some(version.clone());
        Some(DiscoveryResponse {
            version_info: version,
            resources: found,
            type_url: SECRET_TYPE.to_owned(),
            nonce: self.nonce.to_string(),
            ..Default::default()
        })
    }
}

type Pushed<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = Pushed<DeltaDiscoveryResponse>;
    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "pillion serves SDS state of the world (StreamSecrets), not delta xDS",
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unix socket".to_owned(), |a| a.to_string());
        let mut inbound = request.into_inner();
        let mut resources = self.resources.clone();
        // Two responses in flight at most: a slow Envoy holds back its own
        // stream only, and gets the newest state when it catches up.
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut stream = Stream {
                peer,
                ..Stream::default()
            };
            debug!(peer = %stream.peer, "an SDS stream opened");
            loop {
                let response = tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(req)) => {
                            let current = resources.borrow_and_update();
                            stream.on_request(req, &current.sds)
                        }
                        Ok(None) => break,
                        Err(status) => {
                            debug!(peer = %stream.peer, error = %status.message(), "an SDS stream ended");
                            break;
                        }
                    },
                    changed = resources.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let current = resources.borrow_and_update();
                        stream.on_change(&current.sds)
                    }
                    () = tx.closed() => break,
                };
                if let Some(response) = response {
                    if tx.send(Ok(response)).await.is_err() {
                        break;
                    }
                }
            }
            debug!(peer = %stream.peer, "an SDS stream closed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let req = request.into_inner();
        let current = self.resources.borrow().sds.clone();
        let Some((version, found)) = encode(&req.resource_names, &current) else {
            return Err(Status::not_found(format!(
                "no SDS resource named {}",
                req.resource_names.join(", ")
            )));
        };
        Ok(Response::new(DiscoveryResponse {
            version_info: version,
            resources: found,
            type_url: SECRET_TYPE.to_owned(),
            nonce: "1".to_owned(),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::credential::Certificate;
    use crate::delivery::Hub;
    use crate::keys::{KeyAlgorithm, PrivateKey};
    use crate::verify::Issued;
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    /// A self-signed certificate: SDS does not verify, it only carries.
    fn certificate() -> Arc<Credential> {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["a.test".to_owned()])
            .unwrap()
            .self_signed(&key.key_pair())
            .unwrap();
        let der = leaf.der().to_vec();
        Arc::new(Credential::Certificate(Certificate {
            key,
            issued: Issued {
                chain: vec![der.clone()],
                ca: vec![der],
            },
            names: crate::names::Names::default(),
        }))
    }

    fn request(names: &[&str], nonce: &str, nack: Option<&str>) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            type_url: SECRET_TYPE.to_owned(),
            response_nonce: nonce.to_owned(),
            error_detail: nack.map(|m| RpcStatus {
                code: 3,
                message: m.to_owned(),
                details: Vec::new(),
            }),
            ..Default::default()
        }
    }

    fn secrets(response: &DiscoveryResponse) -> Vec<Secret> {
        response
            .resources
            .iter()
            .map(|a| {
                assert_eq!(a.type_url, SECRET_TYPE);
                Secret::decode(a.value.as_slice()).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_stream_is_answered_then_pushed_only_what_changed() {
        let hub = Hub::new();
        let owner = Hub::owner();
        let names = [("web", Part::Certificate), ("web-ca", Part::TrustAnchors)];
        hub.offer(owner, &names, None, &certificate());
        let rx = hub.subscribe();
        let mut stream = Stream::default();

        // The first request is answered with what it names that exists.
        let first = stream
            .on_request(request(&["web", "later"], "", None), &rx.borrow().sds)
            .expect("the first request is answered");
        assert_eq!(first.nonce, "1");
        let s = secrets(&first);
        assert_eq!(s.len(), 1, "`later` is not there yet");
        let Some(secret::Type::TlsCertificate(t)) = &s[0].r#type else {
            panic!("web is a tls_certificate: {:?}", s[0].r#type);
        };
        let key = match &t.private_key.as_ref().unwrap().specifier {
            Some(Specifier::InlineBytes(k)) => String::from_utf8(k.clone()).unwrap(),
            other => panic!("{other:?}"),
        };
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));

        // An ACK, and an answer to an older response, ask for nothing.
        assert!(stream
            .on_request(request(&["web", "later"], "1", None), &rx.borrow().sds)
            .is_none());
        assert!(stream
            .on_request(request(&["web", "later"], "0", None), &rx.borrow().sds)
            .is_none());

        // A renewal is pushed with a new version; the same content again is not.
        hub.offer(owner, &names, None, &certificate());
        let pushed = stream
            .on_change(&rx.borrow().sds)
            .expect("a renewal is pushed");
        assert_eq!(pushed.nonce, "2");
        assert_ne!(pushed.version_info, first.version_info);
        assert!(stream.on_change(&rx.borrow().sds).is_none());

        // A NACK is logged, not answered.
        assert!(stream
            .on_request(
                request(&["web", "later"], "2", Some("bad key")),
                &rx.borrow().sds
            )
            .is_none());

        // The name that was missing appears: both are pushed, the anchors as a
        // validation context.
        hub.offer(
            Hub::owner(),
            &[("later", Part::TrustAnchors)],
            None,
            &certificate(),
        );
        let pushed = stream
            .on_change(&rx.borrow().sds)
            .expect("the new name is pushed");
        let s = secrets(&pushed);
        assert_eq!(s.len(), 2);
        assert!(matches!(
            s[1].r#type,
            Some(secret::Type::ValidationContext(_))
        ));

        // Asking for other names is answered at once, even with an old nonce's ACK.
        let other = stream.on_request(request(&["web-ca"], "3", None), &rx.borrow().sds);
        assert_eq!(secrets(&other.unwrap())[0].name, "web-ca");
    }

    #[test]
    fn a_sink_withdraws_only_what_it_still_owns() {
        let hub = Hub::new();
        let (old, new) = (Hub::owner(), Hub::owner());
        hub.offer(
            old,
            &[("web", Part::Certificate)],
            Some(("web", 0)),
            &certificate(),
        );
        hub.offer(
            new,
            &[("web", Part::Certificate)],
            Some(("web", 0)),
            &certificate(),
        );
        hub.withdraw(old);
        assert!(
            hub.subscribe().borrow().sds.contains_key("web"),
            "a newer sink offered it"
        );
        assert!(hub.subscribe().borrow().svids.contains_key("web"));
        hub.withdraw(new);
        assert!(hub.subscribe().borrow().sds.is_empty());
        assert!(hub.subscribe().borrow().svids.is_empty());
    }
}
