//! A client for the Vault / OpenBao HTTP API, and the token it logs in for.
//!
//! One [`VaultClient`] per configured Vault issuer; every certificate and
//! secret of that issuer shares its login. The token lives in a [`Zeroizing`]
//! string, is renewed (`auth/token/renew-self`) once two thirds of its TTL have
//! passed, and is replaced by a fresh login when renewal is refused, when it
//! has expired, or when Vault answers 403 to a request (a revoked token).
//! Vault's own error messages reach the user verbatim.
//!
//! API: <https://openbao.org/api-docs/> (the same paths as HashiCorp Vault's).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

/// The largest answer accepted from Vault; real ones are a few kilobytes.
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Error bodies are cut to this many characters in messages.
const MAX_ERROR_TEXT: usize = 1000;

/// How to reach and log in to a Vault/OpenBao server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSpec {
    /// `vault.address`: the server's http:// or https:// URL; requests go to
    /// `<address>/v1/<path>`.
    pub address: url::Url,
    /// `vault.caFile`: the only roots Vault's TLS certificate is checked
    /// against; `None` uses the system roots.
    pub ca_file: Option<PathBuf>,
    /// `vault.tlsSkipVerifyInsecure`: accept any TLS certificate from Vault
    /// (logged as a warning at start-up); for development only.
    pub tls_skip_verify_insecure: bool,
    /// `vault.namespace`, sent as `X-Vault-Namespace`; `None` when unset or empty.
    pub namespace: Option<String>,
    /// Limit on each HTTP request to Vault (`vault.timeout`, default 30s);
    /// connecting is also held to 10s at most.
    pub timeout: Duration,
    /// The one auth method configured under `vault.auth`.
    pub auth: VaultAuth,
    /// `vault.pki`, for issuing certificates; `None` for an issuer that only
    /// serves `secrets`.
    pub pki: Option<PkiSpec>,
    /// The fields the configuration left out and the environment filled in
    /// (`VAULT_ADDR`, ...), as (field, variable), for `pillion check`.
    pub from_environment: Vec<(&'static str, &'static str)>,
}

/// The Vault auth methods pillion logs in with.
///
/// Every file named here is read again at each login (projected
/// service-account tokens rotate) and must not be empty after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// `auth.token`: an existing token, looked up with
    /// `auth/token/lookup-self` to learn its TTL.
    Token {
        /// The file holding the token.
        file: PathBuf,
    },
    /// `auth.appRole`: login at `auth/<mount>/login` with a role ID and secret ID.
    AppRole {
        /// The file holding the role ID.
        role_id_file: PathBuf,
        /// The file holding the secret ID.
        secret_id_file: PathBuf,
        /// Where the AppRole auth method is mounted, without slashes (default `approle`).
        mount: String,
    },
    /// `auth.kubernetes`: login at `auth/<mount>/login` with the pod's
    /// service-account token.
    Kubernetes {
        /// The Vault role to log in as.
        role: String,
        /// Where the Kubernetes auth method is mounted, without slashes
        /// (default `kubernetes`).
        mount: String,
        /// The service-account token to present (default: the one the
        /// kubelet mounts into the pod).
        token_file: PathBuf,
    },
    /// `auth.jwt`: login at `auth/<mount>/login` with a JWT from a file.
    Jwt {
        /// The Vault role to log in as.
        role: String,
        /// Where the JWT auth method is mounted, without slashes (default `jwt`).
        mount: String,
        /// The file holding the JWT to present; required.
        token_file: PathBuf,
    },
}

/// `vault.pki`: the PKI secrets engine a Vault issuer gets certificates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiSpec {
    /// Where the PKI engine is mounted, without slashes (default `pki`).
    pub mount: String,
    /// The PKI role in `<mount>/sign/<role>` or `<mount>/issue/<role>`.
    pub role: String,
    /// The PKI issuer to sign with, sent as `issuer_ref`; `None` uses the
    /// mount's default issuer.
    pub issuer_ref: Option<String>,
    /// Whether the key is made in the pod or by Vault.
    pub mode: PkiMode,
    /// Trust anchors to publish as `ca.crt` instead of the root(s) Vault returns.
    pub ca_bundle_file: Option<PathBuf>,
}

/// Where the private key of a Vault PKI certificate is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkiMode {
    /// In the pod; only the CSR goes to `<mount>/sign/<role>`. The default.
    Sign,
    /// By Vault, at `<mount>/issue/<role>`, for roles that demand it.
    Issue,
}

/// Why setting up the Vault client, logging in, or a request to Vault failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// `vault.caFile` cannot be read.
    #[error("failed to read the Vault CA file {}", path.display())]
    ReadCa {
        /// The `vault.caFile` as configured.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// `vault.caFile` holds no certificate that parses.
    #[error("the Vault CA file {} holds no usable PEM certificate", path.display())]
    BadCa {
        /// The `vault.caFile` as configured.
        path: PathBuf,
    },
    /// The HTTP client cannot be built, e.g. the TLS backend failed to start.
    #[error("failed to set up the HTTP client for Vault")]
    Client(#[source] reqwest::Error),
    /// An auth file is missing or unreadable, at start-up or at a login.
    #[error("failed to read the {what} at {}", path.display())]
    ReadFile {
        /// Which file, as the message names it, e.g. `AppRole role-id file`.
        what: &'static str,
        /// The file as configured.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// An auth file holds nothing but whitespace.
    #[error("the {what} at {} is empty", path.display())]
    EmptyFile {
        /// Which file, as the message names it, e.g. `Vault token file`.
        what: &'static str,
        /// The file as configured.
        path: PathBuf,
    },
    /// No answer: connecting, TLS, the timeout, or reading the body failed.
    #[error("{method} {url} failed")]
    Request {
        /// The HTTP method sent.
        method: Method,
        /// The full URL, `<address>/v1/<path>`.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// Vault answered with an error status. From [`VaultClient::request`], a
    /// rejected token (403) has already been retried once after a fresh login.
    #[error("Vault answered {status} to {method} {path}: {message}")]
    Status {
        /// The HTTP method sent.
        method: Method,
        /// The API path under `/v1/`, e.g. `pki/sign/web`.
        path: String,
        /// The HTTP status Vault answered.
        status: StatusCode,
        /// Vault's `errors` joined with `; ` (or the body), on one line and
        /// cut to 1000 characters.
        message: String,
    },
    /// A login failed moments ago; the next waits for its backoff.
    #[error("not logging in to Vault again for {}: the last login failed: {message}", humantime::format_duration(Duration::from_secs(retry_in.as_secs().max(1))))]
    LoginBackoff {
        /// The last login's error, with its causes.
        message: String,
        /// How long until the next login may be tried.
        retry_in: Duration,
    },
    /// Vault's answer is not JSON, is over 4 MiB, or lacks a documented
    /// field; also a token that cannot go in an HTTP header.
    #[error("Vault's answer to {method} {path} is not what the API documents: {reason}")]
    Malformed {
        /// The HTTP method sent.
        method: Method,
        /// The API path under `/v1/`, e.g. `auth/approle/login`.
        path: String,
        /// What is wrong with the answer, e.g. `no auth.client_token`.
        reason: String,
    },
}

impl VaultError {
    /// A 403 or an invalid-token message: the token may have been revoked.
    fn is_token_rejected(&self) -> bool {
        match self {
            VaultError::Status {
                status, message, ..
            } => {
                *status == StatusCode::FORBIDDEN
                    || (*status == StatusCode::BAD_REQUEST && message.contains("invalid token"))
            }
            _ => false,
        }
    }
}

/// A Vault token. Its value is zeroized on drop and never printed.
struct Token {
    value: Zeroizing<String>,
    /// When to renew (two thirds of the TTL), or `None` for a token that does not expire.
    renew_at: Option<Instant>,
    expires_at: Option<Instant>,
    renewable: bool,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("renewable", &self.renewable)
            .finish()
    }
}

/// The longest token lifetime believed; a longer one is renewed as if it
/// were this (Vault's own `max_ttl` default is 32 days).
const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;

impl Token {
    fn new(value: Zeroizing<String>, ttl_secs: u64, renewable: bool) -> Token {
        let now = Instant::now();
        let (renew_at, expires_at) = if ttl_secs == 0 {
            (None, None)
        } else {
            // The TTL is the server's word: a year at most, so that no
            // answer can overflow the clock arithmetic.
            let ttl = Duration::from_secs(ttl_secs.min(MAX_TOKEN_TTL_SECS));
            (Some(now + ttl.mul_f64(2.0 / 3.0)), Some(now + ttl))
        };
        Token {
            value,
            renew_at,
            expires_at,
            renewable,
        }
    }
}

/// An HTTP client for one Vault server, logged in with one auth method.
#[derive(Debug)]
pub struct VaultClient {
    http: reqwest::Client,
    address: url::Url,
    namespace: Option<String>,
    auth: VaultAuth,
    token: Mutex<Option<Token>>,
    /// The last failed login, while its backoff lasts: every credential of
    /// this issuer waits for it rather than logging in on its own.
    failed_login: std::sync::Mutex<Option<FailedLogin>>,
    /// Signalled when a new token is stored, so that [`VaultClient::keep_alive`]
    /// learns its renewal time.
    new_token: std::sync::Arc<tokio::sync::Notify>,
    /// This client, for the task that keeps its token alive: started with
    /// the first token, it ends when the client is dropped.
    me: std::sync::Weak<VaultClient>,
    keeping_alive: std::sync::atomic::AtomicBool,
}

/// A login that failed, and when the next may be tried.
struct FailedLogin {
    message: String,
    retry_at: Instant,
    backoff: crate::schedule::Backoff,
}

impl fmt::Debug for FailedLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailedLogin")
            .field("message", &self.message)
            .field("retry_at", &self.retry_at)
            .finish_non_exhaustive()
    }
}

impl VaultClient {
    /// Builds the client: TLS is verified against `caFile` when given (and
    /// only against it), else the system roots. No network traffic yet.
    ///
    /// # Errors
    /// An unreadable CA file or auth file, or a client that cannot be built.
    pub fn new(spec: &VaultSpec) -> Result<std::sync::Arc<VaultClient>, VaultError> {
        let mut builder = reqwest::Client::builder()
            .timeout(spec.timeout)
            .connect_timeout(spec.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("pillion/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &spec.ca_file {
            let pem = crate::small_file::read(path).map_err(|source| VaultError::ReadCa {
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| VaultError::BadCa { path: path.clone() })?;
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if spec.tls_skip_verify_insecure {
            warn!(address = %spec.address, "TLS VERIFICATION OF VAULT IS OFF (tlsSkipVerifyInsecure): anyone on the path can read tokens and keys");
            builder = builder.danger_accept_invalid_certs(true);
        }
        if spec.address.scheme() == "http" {
            warn!(address = %spec.address, "Vault is reached over plain HTTP: tokens and certificates travel unencrypted");
            // Without TLS there is nothing to verify: skip loading the system
            // roots, which reads every file under /etc/ssl/certs.
            builder = builder.tls_built_in_root_certs(false);
        }

        for (what, path) in spec.auth.files() {
            std::fs::metadata(path).map_err(|source| VaultError::ReadFile {
                what,
                path: path.to_owned(),
                source,
            })?;
        }
        let http = builder.build().map_err(VaultError::Client)?;
        Ok(std::sync::Arc::new_cyclic(|me| VaultClient {
            http,
            address: spec.address.clone(),
            namespace: spec.namespace.clone(),
            auth: spec.auth.clone(),
            token: Mutex::new(None),
            failed_login: std::sync::Mutex::new(None),
            new_token: std::sync::Arc::new(tokio::sync::Notify::new()),
            me: me.clone(),
            keeping_alive: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// A new token is stored: [`VaultClient::keep_alive`] learns its
    /// renewal time, and is started with the first token.
    fn stored_token(&self) {
        self.new_token.notify_one();
        if !self
            .keeping_alive
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tokio::spawn(VaultClient::keep_alive(self.me.clone()));
        }
    }

    /// Sends an authenticated request to `/v1/<path>` and returns the JSON
    /// answer (`Value::Null` for 204). A rejected token is replaced by a fresh
    /// login and the request is sent once more.
    ///
    /// Cancel-safe: dropping the future abandons the request; the token stays usable.
    ///
    /// # Errors
    /// Transport failures, Vault's errors (verbatim), or a malformed answer.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, VaultError> {
        let token = self.token().await?;
        match self.send(method.clone(), path, body, Some(&token)).await {
            Err(e) if e.is_token_rejected() => {
                warn!(error = %e, "Vault rejected pillion's token; logging in again");
                self.invalidate().await;
                let token = self.token().await?;
                self.send(method, path, body, Some(&token)).await
            }
            other => other,
        }
    }

    async fn invalidate(&self) {
        *self.token.lock().await = None;
    }

    /// Gets a usable token ahead of the requests that need it.
    ///
    /// # Errors
    /// Logging in (or renewing) failed.
    pub async fn ensure_token(&self) -> Result<(), VaultError> {
        self.token().await.map(drop)
    }

    /// The token pillion uses now (logging in when it has none), for a
    /// `tokenSink`. Held in a wiped buffer; never logged.
    ///
    /// # Errors
    /// Logging in (or renewing) failed.
    pub async fn current_token(&self) -> Result<Zeroizing<String>, VaultError> {
        self.token().await
    }

    /// A usable token: the current one, renewed when due, or a new login.
    async fn token(&self) -> Result<Zeroizing<String>, VaultError> {
        let mut guard = self.token.lock().await;
        let now = Instant::now();
        if let Some(t) = guard.as_ref() {
            let expired = t
                .expires_at
                .is_some_and(|e| e <= now + Duration::from_secs(1));
            let due = t.renew_at.is_some_and(|r| r <= now);
            if !expired && !due {
                return Ok(t.value.clone());
            }
            if !expired && t.renewable {
                match self.renew_self(&t.value).await {
                    Ok(renewed) => {
                        let value = renewed.value.clone();
                        *guard = Some(renewed);
                        self.stored_token();
                        return Ok(value);
                    }
                    Err(e) => {
                        warn!(error = %crate::telemetry::chain(&e), "renewing the Vault token failed; logging in again")
                    }
                }
            }
        }
        // One login per issuer per attempt: while a failed login's backoff
        // lasts, every credential gets its error without asking Vault again.
        // Vault locks an AppRole out after repeated failures, and the lock
        // outlasts fixing the secret.
        if let Some(f) = self.failed_login().as_ref().filter(|f| f.retry_at > now) {
            return Err(VaultError::LoginBackoff {
                message: f.message.clone(),
                retry_in: f.retry_at - now,
            });
        }
        let token = match self.login().await {
            Ok(t) => {
                *self.failed_login() = None;
                t
            }
            Err(e) => {
                let mut failed = self.failed_login();
                let f = failed.get_or_insert_with(|| FailedLogin {
                    message: String::new(),
                    retry_at: now,
                    backoff: crate::schedule::Backoff::new(),
                });
                f.message = crate::telemetry::chain(&e);
                f.retry_at = Instant::now() + f.backoff.failed();
                return Err(e);
            }
        };
        let value = token.value.clone();
        *guard = Some(token);
        self.stored_token();
        Ok(value)
    }

    fn failed_login(&self) -> std::sync::MutexGuard<'_, Option<FailedLogin>> {
        // Poisoned only if a thread panicked while holding it; the value is
        // still a consistent Option.
        self.failed_login
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps the token alive between uses: renews it once two thirds of its
    /// TTL have passed (or logs in again when it cannot be renewed), so that
    /// a token that cannot be obtained again, such as one from a file, does
    /// not lapse between certificate renewals. Failures are retried with
    /// backoff. Returns when the client is dropped.
    async fn keep_alive(client: std::sync::Weak<VaultClient>) {
        let mut backoff = crate::schedule::Backoff::new();
        loop {
            let Some(c) = client.upgrade() else { return };
            let renew_in = {
                let guard = c.token.lock().await;
                guard
                    .as_ref()
                    .and_then(|t| t.renew_at)
                    .map(|r| r.saturating_duration_since(Instant::now()))
            };
            // Hold no strong reference while waiting: the task must end
            // when the client is dropped (after a configuration reload).
            let new_token = c.new_token.clone();
            drop(c);
            /// How often a waiting task checks whether its client still exists.
            const RECHECK: Duration = Duration::from_secs(60);
            match renew_in {
                // No token yet, or one that never expires: wait for a new one.
                None => {
                    tokio::select! {
                        () = new_token.notified() => {}
                        () = tokio::time::sleep(RECHECK) => {}
                    }
                    continue;
                }
                Some(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = new_token.notified() => continue,
                    }
                    let Some(c) = client.upgrade() else { return };
                    match c.token().await {
                        Ok(_) => backoff.succeeded(),
                        Err(e) => {
                            let delay = backoff.failed();
                            warn!(error = %crate::telemetry::chain(&e), retry_in = ?delay, "keeping the Vault token alive failed");
                            drop(c);
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            }
        }
    }

    async fn renew_self(&self, token: &Zeroizing<String>) -> Result<Token, VaultError> {
        let answer = self
            .send(
                Method::POST,
                "auth/token/renew-self",
                Some(&serde_json::json!({})),
                Some(token),
            )
            .await?;
        let (value, ttl, renewable) = auth_fields(&answer, "auth/token/renew-self")?;
        debug!(ttl_secs = ttl, "renewed the Vault token");
        // renew-self answers with the same token.
        Ok(Token::new(
            if value.is_empty() {
                token.clone()
            } else {
                value
            },
            ttl,
            renewable,
        ))
    }

    /// Logs in with the configured method. Token and JWT files are read
    /// again at every login: projected service-account tokens rotate.
    async fn login(&self) -> Result<Token, VaultError> {
        let (path, body) = match &self.auth {
            VaultAuth::Token { file } => {
                let value = read_secret_file("Vault token file", file)?;
                // A static token: look it up to learn its TTL.
                let answer = self
                    .send(Method::GET, "auth/token/lookup-self", None, Some(&value))
                    .await?;
                let ttl = answer["data"]["ttl"].as_u64().unwrap_or(0);
                let renewable = answer["data"]["renewable"].as_bool().unwrap_or(false);
                info!(method = "token", "logged in to Vault");
                return Ok(Token::new(value, ttl, renewable));
            }
            VaultAuth::AppRole {
                role_id_file,
                secret_id_file,
                mount,
            } => {
                let role_id = read_secret_file("AppRole role-id file", role_id_file)?;
                let secret_id = read_secret_file("AppRole secret-id file", secret_id_file)?;
                let body = serde_json::json!({"role_id": role_id.as_str(), "secret_id": secret_id.as_str()});
                (format!("auth/{mount}/login"), body)
            }
            VaultAuth::Kubernetes {
                role,
                mount,
                token_file,
            }
            | VaultAuth::Jwt {
                role,
                mount,
                token_file,
            } => {
                let jwt = read_secret_file("service-account token file", token_file)?;
                (
                    format!("auth/{mount}/login"),
                    serde_json::json!({"role": role, "jwt": jwt.as_str()}),
                )
            }
        };
        // The body holds credentials: wipe its serialized form after sending.
        let answer = self.send(Method::POST, &path, Some(&body), None).await;
        drop(zeroize_json(body));
        let answer = answer?;
        let (value, ttl, renewable) = auth_fields(&answer, &path)?;
        info!(method = self.auth.name(), path = %path, ttl_secs = ttl, "logged in to Vault");
        Ok(Token::new(value, ttl, renewable))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&Zeroizing<String>>,
    ) -> Result<Value, VaultError> {
        let url = format!("{}/v1/{path}", self.address.as_str().trim_end_matches('/'));
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = token {
            let mut header = reqwest::header::HeaderValue::from_str(token).map_err(|_| {
                VaultError::Malformed {
                    method: method.clone(),
                    path: path.to_owned(),
                    reason: "the token holds characters not allowed in an HTTP header".into(),
                }
            })?;
            header.set_sensitive(true);
            request = request.header("X-Vault-Token", header);
        }
        if let Some(ns) = &self.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|source| VaultError::Request {
            method: method.clone(),
            url: url.clone(),
            source,
        })?;
        let status = response.status();
        // A misbehaving server (or something answering in its name) must not
        // make pillion buffer without bound: Vault's answers are kilobytes.
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|source| VaultError::Request {
                method: method.clone(),
                url: url.clone(),
                source,
            })?
        {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(VaultError::Malformed {
                    method,
                    path: path.to_owned(),
                    reason: format!("the answer is larger than {} MiB", MAX_RESPONSE_BYTES >> 20),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(VaultError::Status {
                method,
                path: path.to_owned(),
                status,
                message: error_text(&bytes),
            });
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| VaultError::Malformed {
            method,
            path: path.to_owned(),
            reason: format!("not JSON ({e})"),
        })
    }
}

/// `auth.client_token`, `auth.lease_duration`, `auth.renewable` of a login answer.
pub(crate) fn auth_fields(
    answer: &Value,
    path: &str,
) -> Result<(Zeroizing<String>, u64, bool), VaultError> {
    let auth = &answer["auth"];
    let token = auth["client_token"]
        .as_str()
        .ok_or_else(|| VaultError::Malformed {
            method: Method::POST,
            path: path.to_owned(),
            reason: "no auth.client_token".into(),
        })?;
    Ok((
        Zeroizing::new(token.to_owned()),
        auth["lease_duration"].as_u64().unwrap_or(0),
        auth["renewable"].as_bool().unwrap_or(false),
    ))
}

/// Vault's `{"errors": [...]}` joined, or the body itself, cut to a sane length.
pub(crate) fn error_text(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(v) => match v["errors"].as_array() {
            Some(errors) if !errors.is_empty() => errors
                .iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join("; "),
            _ => v.to_string(),
        },
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    // Vault's multi-errors span lines ("1 error occurred:\n\t* permission
    // denied\n\n"): the same words on one line keep a log line a line.
    // Control characters (ANSI escapes) from the server never reach a
    // terminal or a log: each becomes a space.
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = if text.is_empty() {
        "(no error message)".to_owned()
    } else {
        text
    };
    text.chars().take(MAX_ERROR_TEXT).collect()
}

fn read_secret_file(what: &'static str, path: &Path) -> Result<Zeroizing<String>, VaultError> {
    let text = crate::small_file::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| VaultError::ReadFile {
            what,
            path: path.to_owned(),
            source,
        })?;
    let trimmed = Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        return Err(VaultError::EmptyFile {
            what,
            path: path.to_owned(),
        });
    }
    Ok(trimmed)
}

/// Overwrites the string values of a JSON body before it is dropped.
fn zeroize_json(mut v: Value) -> Value {
    if let Value::Object(map) = &mut v {
        for value in map.values_mut() {
            if let Value::String(s) = value {
                zeroize::Zeroize::zeroize(s);
            }
        }
    }
    v
}

impl VaultAuth {
    /// The files this method reads, for the start-up check.
    pub fn files(&self) -> Vec<(&'static str, &Path)> {
        match self {
            VaultAuth::Token { file } => vec![("Vault token file", file)],
            VaultAuth::AppRole {
                role_id_file,
                secret_id_file,
                ..
            } => {
                vec![
                    ("AppRole role-id file", role_id_file),
                    ("AppRole secret-id file", secret_id_file),
                ]
            }
            VaultAuth::Kubernetes { token_file, .. } | VaultAuth::Jwt { token_file, .. } => {
                vec![("service-account token file", token_file)]
            }
        }
    }

    /// The method's name as in the configuration (`token`, `appRole`,
    /// `kubernetes`, `jwt`), for logs and the plan.
    pub fn name(&self) -> &'static str {
        match self {
            VaultAuth::Token { .. } => "token",
            VaultAuth::AppRole { .. } => "appRole",
            VaultAuth::Kubernetes { .. } => "kubernetes",
            VaultAuth::Jwt { .. } => "jwt",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_a_servers_error_never_reach_the_logs() {
        let text = error_text(br#"{"errors":["\u001b[31minvalid role\u001b[0m\r\nor secret ID"]}"#);
        assert_eq!(text, "[31minvalid role [0m or secret ID");
        assert!(!error_text(b"\x1b]0;title\x07plain").contains('\x1b'));
    }

    #[test]
    fn vault_errors_are_shown_verbatim() {
        assert_eq!(
            error_text(br#"{"errors":["permission denied"]}"#),
            "permission denied"
        );
        assert_eq!(error_text(br#"{"errors":["a","b"]}"#), "a; b");
        assert_eq!(
            error_text(b"upstream connect error"),
            "upstream connect error"
        );
        assert_eq!(error_text(b""), "(no error message)");
        assert_eq!(
            error_text(br#"{"errors":["1 error occurred:\n\t* permission denied\n\n"]}"#),
            "1 error occurred: * permission denied"
        );
    }

    #[test]
    fn a_token_is_renewed_at_two_thirds_of_its_ttl_and_never_printed() {
        let t = Token::new(Zeroizing::new("s.secret-token".into()), 300, true);
        let renew_in = t.renew_at.unwrap().duration_since(Instant::now());
        assert!(
            renew_in > Duration::from_secs(190) && renew_in <= Duration::from_secs(200),
            "{renew_in:?}"
        );
        assert!(!format!("{t:?}").contains("secret-token"));
        assert!(Token::new(Zeroizing::new("root".into()), 0, false)
            .renew_at
            .is_none());
    }

    #[test]
    fn revoked_tokens_are_recognised() {
        let e = |status, message: &str| VaultError::Status {
            method: Method::GET,
            path: "x".into(),
            status,
            message: message.into(),
        };
        assert!(e(StatusCode::FORBIDDEN, "permission denied").is_token_rejected());
        assert!(e(StatusCode::BAD_REQUEST, "invalid token").is_token_rejected());
        assert!(!e(StatusCode::BAD_REQUEST, "common name not allowed").is_token_rejected());
    }
}
