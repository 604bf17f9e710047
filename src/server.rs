//! The admin endpoint (off unless `server.listen` or `--listen` is set):
//! `GET /healthz`, `GET /readyz`, `GET /metrics`, `POST /rotate[?name=]`.
//!
//! `/readyz` is what a native sidecar's startup probe points at: it turns 200
//! once every credential has been published and none has expired, so the app
//! container starts only when its files exist.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::agent::{Command, CredentialState};
use crate::schedule::Backoff;
use crate::telemetry::Metrics;

/// Connections served at once, at most. A probe, a scrape and a `/rotate`
/// need one each; the cap keeps idle or slow clients from taking the file
/// descriptors and memory that renewals need. When full, the connection
/// accepted longest ago is closed for the new one, so a flood of idle
/// connections cannot lock the kubelet's probe out.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this time (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this, idle keep-alive included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Request headers larger than this are refused (hyper's smallest buffer).
pub const MAX_HEADER_BYTES: usize = 8192;
/// `POST /rotate` is taken at most this often on average, with bursts of
/// [`ROTATE_BURST`]; more is answered 429. The agent coalesces what it takes.
pub const ROTATE_INTERVAL: Duration = Duration::from_secs(1);
/// See [`ROTATE_INTERVAL`].
pub const ROTATE_BURST: u32 = 5;
/// Repeated accept errors are logged once per this interval, with a count.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The longest pause after repeated accept errors (EMFILE would otherwise
/// spin the loop at 100% CPU).
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// Binds the admin endpoint before any work starts, so that a busy port is
/// reported at once.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The connections to serve at once: [`MAX_CONNECTIONS`], fewer when the
/// process may open few files, so that at least three quarters of the
/// descriptors stay for renewals (files, sockets to the CA).
fn connection_cap() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    usize::try_from(soft / 4).map_or(MAX_CONNECTIONS, |q| q.clamp(1, MAX_CONNECTIONS))
}

/// Serves requests until the runtime stops. Each connection is served on its
/// own task; a broken connection affects nothing else.
///
/// Bounded against abuse: at most `connection_cap()` connections (the oldest
/// is closed for a new one), headers within [`HEADER_READ_TIMEOUT`] and
/// [`MAX_HEADER_BYTES`], connections closed after [`CONNECTION_LIFETIME`],
/// a growing pause after accept errors, and those logged at most once per
/// `LOG_INTERVAL`.
pub async fn serve(
    listener: TcpListener,
    state: watch::Receiver<Vec<CredentialState>>,
    commands: mpsc::UnboundedSender<Command>,
    metrics: Arc<Metrics>,
) {
    let cap = connection_cap();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, max_connections = cap, "admin endpoint listening: /healthz /readyz /metrics /rotate");
    }
    let rotate = Arc::new(Mutex::new(TokenBucket::new(ROTATE_BURST, ROTATE_INTERVAL)));
    let mut live: VecDeque<AbortHandle> = VecDeque::with_capacity(cap);
    let mut errors = Throttle::default();
    let mut pause = Backoff::between(Duration::from_millis(10), MAX_ACCEPT_PAUSE);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => {
                pause.succeeded();
                c
            }
            Err(e) => {
                if let Some(more) = errors.allow(Instant::now()) {
                    warn!(error = %e, repeated = more, "accepting an admin connection failed");
                }
                // Out of descriptors or memory: the error repeats at once,
                // so pause, and give a descriptor back by closing the
                // oldest connection. Anything else (a connection reset
                // before it was accepted) concerns one client only.
                use rustix::io::Errno;
                let scarce = [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
                    .iter()
                    .any(|s| e.raw_os_error() == Some(s.raw_os_error()));
                if scarce {
                    if let Some(oldest) = live.pop_front() {
                        oldest.abort();
                    }
                    tokio::time::sleep(pause.failed()).await;
                }
                continue;
            }
        };
        live.retain(|h| !h.is_finished());
        if live.len() >= cap {
            if let Some(oldest) = live.pop_front() {
                debug!("closing the oldest admin connection: {cap} are open");
                oldest.abort();
            }
        }
        let state = state.clone();
        let commands = commands.clone();
        let metrics = metrics.clone();
        let rotate = rotate.clone();
        let task = tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = handle(&req, &state.borrow(), &commands, &metrics, &rotate);
                async move { Ok::<_, Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(io, service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Err(e)) => debug!(%peer, error = %e, "admin connection ended with an error"),
                Err(_) => debug!(%peer, "closed an admin connection at the end of its lifetime"),
                Ok(Ok(())) => {}
            }
        });
        live.push_back(task.abort_handle());
    }
}

/// A token bucket: `burst` tokens, one more every `interval`.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(burst: u32, interval: Duration) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec: 1.0 / interval.as_secs_f64(),
            at: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Logs a repeated event at most once per [`LOG_INTERVAL`].
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(n)` when the event may be logged now, `n` being how many were
    /// not logged since the last time.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

fn handle(
    req: &Request<Incoming>,
    state: &[CredentialState],
    commands: &mpsc::UnboundedSender<Command>,
    metrics: &Metrics,
    rotate: &Mutex<TokenBucket>,
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
            let now = SystemTime::now();
            let backing_off = |c: &CredentialState| {
                c.retry_at
                    .and_then(|t| t.duration_since(now).ok())
                    .map(|d| (c.name.clone(), d.as_secs().max(1)))
            };
            let command = match name {
                None => Command::RenewAll,
                Some(n) => match state.iter().find(|c| c.name == n) {
                    None => {
                        return text(
                            StatusCode::NOT_FOUND,
                            format!("no credential named {n:?}\n"),
                        )
                    }
                    Some(c) => {
                        if let Some((_, secs)) = backing_off(c) {
                            let mut response = text(
                                StatusCode::CONFLICT,
                                format!("{n} is backing off after a failed attempt; its next attempt is in {secs}s (a request does not cut a failing issuer's backoff short)\n"),
                            );
                            response.headers_mut().insert(
                                hyper::header::RETRY_AFTER,
                                hyper::header::HeaderValue::from(secs),
                            );
                            return response;
                        }
                        Command::Renew(n)
                    }
                },
            };
            let allowed = rotate
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(Instant::now());
            if !allowed {
                let mut response = text(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many rotation requests: a renewal is already coming; retry later\n".into(),
                );
                response.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from_static("1"),
                );
                return response;
            }
            let waiting: Vec<String> = state
                .iter()
                .filter_map(backing_off)
                .map(|(n, secs)| format!("{n} (backing off, next attempt in {secs}s)"))
                .collect();
            let what = match &command {
                Command::Renew(n) => format!("renewing {n}\n"),
                _ if waiting.is_empty() => "renewing every credential\n".to_owned(),
                _ => format!("renewing every credential but {}\n", waiting.join(", ")),
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
            // A visible name deleted, or never made: the app cannot read it.
            _ => c
                .files
                .iter()
                .find(|f| !f.exists())
                .map(|f| format!("{} ({} is missing)", c.name, f.display())),
        })
        .collect();
    if waiting.is_empty() {
        // Ready: the app has every file. A template that fails while its
        // last good file is served is said, for whoever looks.
        let mut body = "ready\n".to_owned();
        for c in state {
            for e in &c.template_errors {
                body += &format!(
                    "{}: a template fails, its last good file is served: {e}\n",
                    c.name
                );
            }
        }
        text(StatusCode::OK, body)
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
            files: Vec::new(),
            retry_at: None,
            last_error: None,
            lease_expires: None,
            template_errors: Vec::new(),
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

    #[test]
    fn the_rotate_bucket_allows_a_burst_then_one_per_interval() {
        let start = Instant::now();
        let mut b = TokenBucket::new(3, Duration::from_secs(1));
        assert_eq!((0..10).filter(|_| b.take(start)).count(), 3);
        assert!(!b.take(start + Duration::from_millis(500)));
        assert!(b.take(start + Duration::from_millis(1600)));
        assert!(!b.take(start + Duration::from_millis(1700)));
    }

    #[test]
    fn repeated_errors_are_logged_once_per_interval_with_a_count() {
        let start = Instant::now();
        let mut t = Throttle::default();
        assert_eq!(t.allow(start), Some(0));
        assert_eq!(t.allow(start + Duration::from_secs(1)), None);
        assert_eq!(t.allow(start + Duration::from_secs(2)), None);
        assert_eq!(
            t.allow(start + LOG_INTERVAL + Duration::from_secs(1)),
            Some(2)
        );
    }

    #[test]
    fn not_ready_while_a_file_the_app_reads_is_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut c = cred("a", Some(now + Duration::from_secs(60)));
        c.files = vec![tmp.path().join("tls.crt")];
        assert_eq!(
            readiness(&[c.clone()], now).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        std::fs::write(tmp.path().join("tls.crt"), "x").unwrap();
        assert_eq!(readiness(&[c], now).status(), StatusCode::OK);
    }
}
