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
//! reset), [`FakeKube::close_watches_after`] / [`FakeKube::close_all_watches`] (watch streams
//! end and the client must resume), and
//! [`FakeKube::compact`] (resuming from an old resourceVersion gets `410 Expired`).
//!
//! Where this fake knowingly differs from a real API server (and from cert-manager); everything
//! not listed here is meant to match:
//! - authentication: a request without the right bearer token gets 401 on every path (a real
//!   server with anonymous auth lets /version and /healthz through and answers 403 elsewhere);
//! - authorization: everything is allowed except what a test forbids with `forbid(verb, resource)`;
//! - no managedFields, no server-side apply, no JSON patch: PATCH takes merge patches (and treats
//!   a strategic merge patch as one); other patch types get 415;
//! - LIST ignores `limit`/`continue` (everything fits one page) and always serves the latest state;
//! - watch bookmarks are sent every `set_bookmark_interval` (default 1s) instead of about once a
//!   minute;
//! - the signer does not backdate notBefore (kube-controller-manager backdates up to 5 minutes)
//!   so a short test certificate lives exactly as long as asked;
//! - the signer signs every signerName, not only kubernetes.io/* ones; `set_max_signing_duration`
//!   plays kube-controller-manager's --cluster-signing-duration;
//! - cert-manager's webhook is played by the API server itself: semantic validation errors come
//!   back as 403 `admission webhook "webhook.cert-manager.io" denied the request: ...`;
//! - namespaces exist when added with `add_namespace` (default, kube-system, kube-public exist).
//!
//! The server runs on its own thread with its own tokio runtime, listens on 127.0.0.1 only, and
//! stops when the [`FakeKube`] is dropped.
//!
//! Where things are, in the order a request meets them:
//! - [`server`]: [`FakeKube::start`], the accessors a test points a client with, the accept loop;
//! - [`routing`]: authentication, the request log, paths to API verbs;
//! - [`resources`]: the served resources ([`resources::Res`]) and the discovery documents;
//! - [`faults`]: everything a test can break (403, 5xx/429, pause, short watches, compaction);
//! - [`list_watch`] and [`selectors`]: LIST, WATCH and field/label selectors;
//! - [`writes`] and [`validation`]: create, update/patch (incl. the `status` and `approval`
//!   subresources), delete, and the validation errors in the API server's and the webhook's words;
//! - [`signer`]: the approver/signer ([`Behaviour`]) and [`ca`]: the serving and signing CAs;
//! - [`tokens`]: service-account tokens, minted JWTs and TokenReview;
//! - [`inspect`]: what a test reads back ([`RecordedRequest`], objects, [`FakeKube::describe`]);
//! - [`state`], [`responses`], [`helpers`]: the shared memory, `Status` answers, small helpers.
//!
//! The code is organised by what it does to a request, not by API group: the CSR API
//! (`certificates.k8s.io`) and cert-manager (`cert-manager.io`) share the handlers, and the
//! places they differ are the `Res::Csr` / `Res::CertificateRequest` arms (resource names in
//! [`resources`], create-time checks in [`writes`], conditions and lifetimes in [`signer`]).

mod ca;
mod faults;
mod helpers;
mod inspect;
mod list_watch;
mod resources;
mod responses;
mod routing;
mod selectors;
mod server;
mod signer;
mod state;
mod tokens;
mod validation;
mod writes;

pub use self::{
    helpers::{b64, b64_decode},
    inspect::RecordedRequest,
    server::FakeKube,
    signer::Behaviour,
};

/// The user the kubeconfig's token authenticates as.
pub const CLIENT_USER: &str = "system:serviceaccount:default:pillion";

/// The audience of the API server itself (`--api-audiences`), used for TokenReviews that name
/// no audience and for tokens registered without one.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// `kind` of a CertificateSigningRequest, for [`FakeKube::objects`] and friends.
pub const CSR: &str = "CertificateSigningRequest";

/// `kind` of a cert-manager CertificateRequest, for [`FakeKube::objects`] and friends.
pub const CERTIFICATE_REQUEST: &str = "CertificateRequest";
