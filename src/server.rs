//! The admin endpoint (off unless `server.listen` or `--listen` is set):
//! `GET /healthz`, `GET /readyz`, `GET /metrics`, `POST /rotate[?name=]`.
//!
//! `/readyz` is what a native sidecar's startup probe points at: it turns 200
//! once every credential has been published and none has expired, so the app
//! container starts only when its files exist.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::agent::{Command, CredentialState};
use crate::telemetry::Metrics;

/// Binds the admin endpoint before any work starts, so that a busy port is
/// reported at once.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves requests until the runtime stops. Each connection is served on its
/// own task; a broken connection affects nothing else.
pub async fn serve(
    listener: TcpListener,
    state: watch::Receiver<Vec<CredentialState>>,
    commands: mpsc::UnboundedSender<Command>,
    metrics: Arc<Metrics>,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin endpoint listening: /healthz /readyz /metrics /rotate");
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "accepting an admin connection failed");
                continue;
            }
        };
        let state = state.clone();
        let commands = commands.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = handle(&req, &state.borrow(), &commands, &metrics);
                async move { Ok::<_, Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn handle(
    req: &Request<Incoming>,
    state: &[CredentialState],
    commands: &mpsc::UnboundedSender<Command>,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut response = text(StatusCode::OK, metrics.encode());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET | &Method::HEAD, "/readyz") => readiness(state, SystemTime::now()),
        (&Method::POST, "/rotate") => {
            let name = req.uri().query().and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "name")
                    .map(|(_, v)| v.into_owned())
            });
            let command = match name {
                None => Command::RenewAll,
                Some(n) if state.iter().any(|c| c.name == n) => Command::Renew(n),
                Some(n) => {
                    return text(
                        StatusCode::NOT_FOUND,
                        format!("no credential named {n:?}\n"),
                    )
                }
            };
            let what = match &command {
                Command::Renew(n) => format!("renewing {n}\n"),
                _ => "renewing every credential\n".to_owned(),
            };
            match commands.send(command) {
                Ok(()) => text(StatusCode::ACCEPTED, what),
                Err(_) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "pillion is stopping\n".into(),
                ),
            }
        }
        (_, "/healthz" | "/readyz") => method_not_allowed("GET, HEAD"),
        (_, "/metrics") => method_not_allowed("GET"),
        (_, "/rotate") => method_not_allowed("POST"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or POST /rotate\n".into(),
        ),
    }
}

/// 200 once every credential is published and unexpired; 503 naming the
/// ones that are not.
fn readiness(state: &[CredentialState], now: SystemTime) -> Response<Full<Bytes>> {
    let waiting: Vec<String> = state
        .iter()
        .filter_map(|c| match c.not_after {
            _ if !c.published => Some(format!("{} (not published yet)", c.name)),
            Some(t) if t <= now => Some(format!("{} (expired)", c.name)),
            _ => None,
        })
        .collect();
    if waiting.is_empty() {
        text(StatusCode::OK, "ready\n".into())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", waiting.join(", ")),
        )
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow}\n"));
    response.headers_mut().insert(
        hyper::header::ALLOW,
        hyper::header::HeaderValue::from_static(allow),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cred(name: &str, not_after: Option<SystemTime>) -> CredentialState {
        CredentialState {
            name: name.into(),
            published: not_after.is_some(),
            not_after,
        }
    }

    #[test]
    fn ready_only_when_everything_is_published_and_unexpired() {
        let now = SystemTime::now();
        let later = Some(now + Duration::from_secs(60));
        let earlier = Some(now - Duration::from_secs(1));
        assert_eq!(
            readiness(&[cred("a", later), cred("b", later)], now).status(),
            StatusCode::OK
        );
        assert_eq!(
            readiness(&[cred("a", later), cred("b", None)], now).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            readiness(&[cred("a", earlier)], now).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
