//! One test's pillion pointed at a Kubernetes API server ([`super::control_plane`]): its temp
//! dirs and config, pillion commands with a controlled pod environment (`POD_NAME`,
//! `POD_NAMESPACE`, `POD_IP`, `SERVICE_ACCOUNT_NAME`, `KUBECONFIG` never leak in from the
//! developer's shell), and the independent checks on what the API server received (its audit
//! log): the objects pillion created and deleted, the PKCS#10 request inside them (read by the
//! openssl CLI), and the fields of pillion's log lines.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::fixture::Fixture;
use super::{run_bounded, Daemon, Ran, COMMAND_DEADLINE};

/// The variables pillion expands in names, plus `KUBECONFIG`: removed from every command this
/// module builds, so a test sets exactly the ones it means.
pub const POD_ENVIRONMENT: [&str; 5] = [
    "POD_NAME",
    "POD_NAMESPACE",
    "POD_IP",
    "SERVICE_ACCOUNT_NAME",
    "KUBECONFIG",
];

/// One test's pillion set-up: a [`Fixture`] whose pillion commands start
/// with none of [`POD_ENVIRONMENT`] set, and take the ones a test means per command.
pub struct KubeCase(Fixture);

impl Default for KubeCase {
    fn default() -> Self {
        KubeCase::new()
    }
}

impl std::ops::Deref for KubeCase {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.0
    }
}

impl KubeCase {
    pub fn new() -> KubeCase {
        KubeCase(Fixture::builder().unset_env(&POD_ENVIRONMENT).build())
    }

    /// `pillion --config C --state-dir S <args>` (not run), with no pod variable or KUBECONFIG
    /// but those in `env`.
    pub fn pillion(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = self.0.pillion(args);
        cmd.envs(env.iter().copied());
        cmd
    }

    /// `pillion init --timeout <timeout>`, bounded; also returns how long it took.
    pub fn init(&self, timeout: &str, env: &[(&str, &str)]) -> (Ran, Duration) {
        let started = Instant::now();
        let ran = run_bounded(
            &mut self.pillion(&["init", "--timeout", timeout], env),
            COMMAND_DEADLINE,
        );
        (ran, started.elapsed())
    }

    /// `pillion init --timeout <timeout>` run as in a pod (see [`in_pod`]), bounded.
    pub fn init_in_pod(&self, timeout: &str, run_dir: &Path, api_port: u16) -> Ran {
        run_bounded(
            &mut in_pod(
                &self.pillion(&["init", "--timeout", timeout], &[]),
                run_dir,
                api_port,
            ),
            COMMAND_DEADLINE,
        )
    }

    /// `pillion run` as a daemon.
    pub fn run(&self, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(self.pillion(&["run"], env))
    }
}

/// `cmd` run as in a pod: in a private mount namespace (`unshare --mount`) where `/run` (and so
/// `/var/run`) is `run_dir`, which holds what [`super::control_plane::Tenant::service_account_files`]
/// wrote; `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` name the API server on
/// 127.0.0.1:`api_port`, and `HOME` holds no kubeconfig, so the client finds its in-cluster
/// configuration as in a pod.
pub fn in_pod(cmd: &Command, run_dir: &Path, api_port: u16) -> Command {
    let mut pod = Command::new("unshare");
    pod.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount --bind "$0" /run && exec "$@""#,
    ])
    .arg(run_dir)
    .arg(cmd.get_program())
    .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => pod.env(key, value),
            None => pod.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        pod.current_dir(dir);
    }
    pod.env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", api_port.to_string())
        .env("HOME", run_dir);
    pod
}

/// The audit events (as [`super::control_plane::ControlPlane::audit_events`] returns them) of
/// finished requests with `verb` on `resource` (the plural, no subresource).
pub fn requests<'a>(events: &'a [Value], verb: &str, resource: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["verb"] == verb
                && e["objectRef"]["resource"] == resource
                && e["objectRef"]["subresource"].is_null()
        })
        .collect()
}

/// The objects created on `resource`, as the API server stored them (creates answered 201).
pub fn created(events: &[Value], resource: &str) -> Vec<Value> {
    requests(events, "create", resource)
        .into_iter()
        .filter(|e| e["responseStatus"]["code"] == 201)
        .map(|e| e["responseObject"].clone())
        .collect()
}

/// The names and uids of the objects deleted from `resource` (deletes answered 200; the API
/// server answers with a Status naming the object).
pub fn deleted(events: &[Value], resource: &str) -> Vec<(String, String)> {
    requests(events, "delete", resource)
        .into_iter()
        .filter(|e| e["responseStatus"]["code"] == 200)
        .map(|e| {
            let details = &e["responseObject"]["details"];
            (
                str_at(details, "/name").to_owned(),
                str_at(details, "/uid").to_owned(),
            )
        })
        .collect()
}

/// The watches started on `resource`.
pub fn watches<'a>(events: &'a [Value], resource: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["stage"] == "ResponseStarted"
                && e["verb"] == "watch"
                && e["objectRef"]["resource"] == resource
        })
        .collect()
}

/// `/metadata/name` etc. of a JSON object, as a string ("" when missing).
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Standard base64 (with or without padding, whitespace ignored).
pub fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.trim_end_matches('='))
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.trim_end_matches('='))
        })
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text:?}"))
}

/// What `openssl req -noout -text -verify` says about the PEM request `pem` (written to a
/// scratch file in `dir`); panics unless openssl reads it and its self-signature verifies.
pub fn openssl_req_text(dir: &Path, pem: &[u8]) -> String {
    let path = dir.join(format!(
        "request-{}.csr",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos()
    ));
    fs::write(&path, pem).expect("write the CSR");
    let ran = run_bounded(
        Command::new("openssl")
            .args(["req", "-noout", "-text", "-verify", "-in"])
            .arg(&path),
        COMMAND_DEADLINE,
    );
    assert!(
        ran.status.success() && ran.stderr.contains("verify OK"),
        "openssl cannot read the CSR pillion sent, or its signature does not verify\n{}\n--- CSR ---\n{}",
        ran.describe(),
        String::from_utf8_lossy(pem)
    );
    ran.stdout
}

/// The subject alternative names in openssl's text output (of `req -text` or
/// `x509 -ext subjectAltName`): `DNS:x`, `IP Address:1.2.3.4`, `URI:spiffe://...`.
pub fn san_entries(openssl_text: &str) -> BTreeSet<String> {
    let mut lines = openssl_text.lines();
    while let Some(line) = lines.next() {
        if line.contains("X509v3 Subject Alternative Name") {
            return lines
                .next()
                .unwrap_or("")
                .split(", ")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
    }
    BTreeSet::new()
}

/// The `Subject:` line of openssl's `-text` output, trimmed (`CN = app.example.test`).
pub fn subject_line(openssl_text: &str) -> String {
    openssl_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Subject:"))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// A set of SAN entries from string literals.
pub fn names(entries: &[&str]) -> BTreeSet<String> {
    entries.iter().map(|s| s.to_string()).collect()
}

/// The value of `key=` in a tracing log line (`key=value`, unquoted), or None.
pub fn log_field(line: &str, key: &str) -> Option<String> {
    let needle = format!(" {key}=");
    let start = line.find(&needle)? + needle.len();
    let rest = &line[start..];
    let value = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next().unwrap_or("")
    } else {
        rest.split_whitespace().next().unwrap_or("")
    };
    Some(value.to_owned())
}

/// Seconds since the epoch of an RFC 3339 time as pillion logs it.
pub fn rfc3339_secs(text: &str) -> i64 {
    let t = humantime::parse_rfc3339_weak(text)
        .unwrap_or_else(|e| panic!("{text:?} is not an RFC 3339 time: {e}"));
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

/// (notBefore, notAfter) of the first certificate in the PEM file, in seconds since the epoch.
pub fn validity(cert: &Path) -> (i64, i64) {
    let text = fs::read(cert).unwrap_or_else(|e| panic!("read {}: {e}", cert.display()));
    let block = pem::parse(&text).expect("a PEM certificate");
    let (_, x509) =
        x509_parser::parse_x509_certificate(block.contents()).expect("a DER certificate");
    (
        x509.validity().not_before.timestamp(),
        x509.validity().not_after.timestamp(),
    )
}

/// The DER of each certificate in PEM text.
pub fn cert_ders_of(pem_text: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .expect("PEM text")
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect()
}
