//! `pillion inject`: a mutating admission webhook that adds pillion to the
//! pods that ask for it, the way vault-k8s and autocert add their agents.
//!
//! A pod annotated `pillion.dev/inject: "true"` gets pillion as a native
//! sidecar (an init container with `restartPolicy: Always` and a startup
//! probe on `/readyz`), the memory `emptyDir` its files land in (mounted
//! read-only into every app container), `shareProcessNamespace: true`, the
//! downward-API variables and the hardened securityContext, exactly as
//! `deploy/overlays/native-sidecar` writes them by hand. What to obtain comes
//! from a ConfigMap (`pillion.dev/config`) or, for one certificate, from
//! annotations that become pillion's `PILLION_*` variables.
//!
//! This module decides; [`webhook`] serves it over TLS.

pub mod webhook;

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::cli::{CertArgs, ReloadArgs};

/// The annotations' common prefix.
pub const PREFIX: &str = "pillion.dev/";
/// `"true"` adds pillion to the pod; `"false"` or absent leaves it alone.
pub const INJECT: &str = "pillion.dev/inject";
/// Set by the injector to `injected`: the pod is not changed again.
pub const STATUS: &str = "pillion.dev/status";
/// A ConfigMap holding `pillion.yaml`, mounted at [`CONFIG_DIR`].
pub const CONFIG: &str = "pillion.dev/config";
/// Without a ConfigMap: the DNS names to certify, comma-separated.
pub const DNS_NAMES: &str = "pillion.dev/dns-names";
/// Without a ConfigMap: the subject common name.
pub const COMMON_NAME: &str = "pillion.dev/common-name";
/// Without a ConfigMap: the IP addresses to certify, comma-separated.
pub const IP_ADDRESSES: &str = "pillion.dev/ip-addresses";
/// Without a ConfigMap: a Secret (`tls.crt`, `tls.key`) holding the CA that signs.
pub const CA_SECRET: &str = "pillion.dev/ca-secret";
/// Without a ConfigMap: the process to signal after a renewal (`/proc/PID/comm`).
pub const RELOAD_PROCESS: &str = "pillion.dev/reload-process";
/// Without a ConfigMap: the signal to send it (default SIGHUP).
pub const RELOAD_SIGNAL: &str = "pillion.dev/reload-signal";
/// A projected service-account token for this audience, for a Vault login.
pub const VAULT_TOKEN_AUDIENCE: &str = "pillion.dev/vault-token-audience";
/// A ConfigMap holding Vault's CA certificate.
pub const VAULT_CA: &str = "pillion.dev/vault-ca";
/// `"true"`: an API token for pillion only (the CSR and cert-manager issuers).
pub const API_TOKEN: &str = "pillion.dev/api-token";

/// Every annotation the injector reads, with what it means (for errors and docs).
pub const ANNOTATIONS: [(&str, &str); 12] = [
    (
        INJECT,
        "\"true\" adds pillion; \"false\" or absent leaves the pod alone",
    ),
    (
        CONFIG,
        "a ConfigMap holding pillion.yaml, mounted at /etc/pillion",
    ),
    (
        DNS_NAMES,
        "without pillion.dev/config: DNS names to certify, comma-separated",
    ),
    (
        COMMON_NAME,
        "without pillion.dev/config: the subject common name",
    ),
    (
        IP_ADDRESSES,
        "without pillion.dev/config: IP addresses to certify, e.g. $(POD_IP)",
    ),
    (
        CA_SECRET,
        "without pillion.dev/config: a Secret with the signing CA's tls.crt and tls.key",
    ),
    (
        RELOAD_PROCESS,
        "without pillion.dev/config: the process to signal after a renewal",
    ),
    (
        RELOAD_SIGNAL,
        "without pillion.dev/config: the signal to send it [default: SIGHUP]",
    ),
    (
        VAULT_TOKEN_AUDIENCE,
        "a projected service-account token for this audience at /var/run/secrets/vault/token",
    ),
    (
        VAULT_CA,
        "a ConfigMap with Vault's CA certificate, mounted at /etc/vault-ca",
    ),
    (
        API_TOKEN,
        "\"true\": a Kubernetes API token mounted into pillion's container only",
    ),
    (
        STATUS,
        "set by the injector (\"injected\"); a pod that has it is not changed again",
    ),
];

/// The sidecar container's name.
pub const CONTAINER: &str = "pillion";
/// Where the credentials land, in pillion's container and (read-only) the app's.
pub const OUTPUT_DIR: &str = "/var/run/pillion";
/// Where the `pillion.dev/config` ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/pillion";
/// The admin port the probes use.
pub const ADMIN_PORT: u16 = 9102;
/// The UID pillion runs as when the app does not say (the distroless nonroot user).
pub const DEFAULT_UID: i64 = 65532;

/// What the injector adds to every pod it changes.
#[derive(Debug, Clone)]
pub struct Injector {
    /// The pillion image to run.
    pub image: String,
}

/// What the webhook answers for one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Admit the pod as it is (not asked for, already injected, not a pod).
    Unchanged(&'static str),
    /// Admit it with these JSON Patch (RFC 6902) operations.
    Patch(Vec<Value>),
    /// Refuse it: the message names the annotation at fault.
    Deny(String),
}

impl Injector {
    /// Answers one `AdmissionReview` request with an `AdmissionReview`
    /// response, and what was decided.
    pub fn review(&self, review: &Value) -> (Decision, Value) {
        let request = &review["request"];
        let uid = request["uid"].clone();
        let decision = if request["kind"]["kind"] == "Pod"
            && request["kind"]["group"].as_str().unwrap_or("").is_empty()
        {
            self.decide(&request["object"])
        } else {
            Decision::Unchanged("not a pod")
        };
        let response = match &decision {
            Decision::Unchanged(_) => json!({"uid": uid, "allowed": true}),
            Decision::Patch(ops) => {
                let patch = serde_json::to_vec(ops).expect("JSON values serialize");
                json!({
                    "uid": uid,
                    "allowed": true,
                    "patchType": "JSONPatch",
                    "patch": base64::engine::general_purpose::STANDARD.encode(patch),
                })
            }
            Decision::Deny(message) => json!({
                "uid": uid,
                "allowed": false,
                "status": {"code": 400, "reason": "BadRequest", "message": message},
            }),
        };
        let answer = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        });
        (decision, answer)
    }

    /// What to do with `pod`.
    pub fn decide(&self, pod: &Value) -> Decision {
        let empty = Map::new();
        let annotations = pod["metadata"]["annotations"].as_object().unwrap_or(&empty);
        let get = |k: &str| annotations.get(k).and_then(Value::as_str);
        match get(INJECT) {
            None | Some("false") => return Decision::Unchanged("not asked for"),
            Some("true") => {}
            Some(other) => {
                return Decision::Deny(format!(
                    "{INJECT}: {other:?} is neither \"true\" nor \"false\""
                ))
            }
        }
        let has_sidecar = pod["spec"]["initContainers"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == CONTAINER));
        if get(STATUS) == Some("injected") || has_sidecar {
            return Decision::Unchanged("already injected");
        }
        match Ask::read(annotations) {
            Ok(ask) => self.patch(pod, &ask),
            Err(errors) => Decision::Deny(errors.join("; ")),
        }
    }

    fn patch(&self, pod: &Value, ask: &Ask) -> Decision {
        let spec = &pod["spec"];
        let mut ops = Vec::new();
        let volumes = ask.volumes();
        let existing: Vec<&str> = spec["volumes"]
            .as_array()
            .map(|vs| vs.iter().filter_map(|v| v["name"].as_str()).collect())
            .unwrap_or_default();
        for v in &volumes {
            let name = v["name"].as_str().unwrap_or_default();
            if existing.contains(&name) {
                return Decision::Deny(format!(
                    "{INJECT}: the pod already has a volume named {name:?}, which pillion adds"
                ));
            }
        }
        let containers = spec["containers"].as_array().cloned().unwrap_or_default();
        for (i, c) in containers.iter().enumerate() {
            let mounts = c["volumeMounts"].as_array();
            if mounts.is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == OUTPUT_DIR)) {
                return Decision::Deny(format!(
                    "{INJECT}: container {:?} already mounts something at {OUTPUT_DIR}, where pillion's files go",
                    c["name"].as_str().unwrap_or_default()
                ));
            }
            let mount = json!({"name": "pillion-out", "mountPath": OUTPUT_DIR, "readOnly": true});
            if mounts.is_some() {
                ops.push(add(&format!("/spec/containers/{i}/volumeMounts/-"), mount));
            } else {
                ops.push(add(
                    &format!("/spec/containers/{i}/volumeMounts"),
                    json!([mount]),
                ));
            }
        }
        let (uid, gid) = app_identity(spec, containers.first());
        let sidecar = self.container(ask, uid, gid);
        if spec["initContainers"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            // First: the other init containers may then read the certificates.
            ops.push(add("/spec/initContainers/0", sidecar));
        } else {
            ops.push(add("/spec/initContainers", json!([sidecar])));
        }
        if spec["volumes"].is_array() {
            for v in volumes {
                ops.push(add("/spec/volumes/-", v));
            }
        } else {
            ops.push(add("/spec/volumes", Value::Array(volumes)));
        }
        if spec["shareProcessNamespace"] != true {
            ops.push(add("/spec/shareProcessNamespace", json!(true)));
        }
        if pod["metadata"]["annotations"].is_object() {
            ops.push(add(
                "/metadata/annotations/pillion.dev~1status",
                json!("injected"),
            ));
        } else {
            ops.push(add("/metadata/annotations", json!({STATUS: "injected"})));
        }
        Decision::Patch(ops)
    }

    /// The native sidecar, as `deploy/overlays/native-sidecar` has it.
    fn container(&self, ask: &Ask, uid: i64, gid: i64) -> Value {
        let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
        let mut env = vec![
            field("POD_NAME", "metadata.name"),
            field("POD_NAMESPACE", "metadata.namespace"),
            field("POD_IP", "status.podIP"),
            field("SERVICE_ACCOUNT_NAME", "spec.serviceAccountName"),
            // The admin port the probes use, whatever pillion.yaml says.
            json!({"name": "PILLION_LISTEN", "value": format!("0.0.0.0:{ADMIN_PORT}")}),
        ];
        let args = match &ask.source {
            Source::ConfigMap(_) => {
                json!(["run", "--config", format!("{CONFIG_DIR}/pillion.yaml")])
            }
            Source::Annotations(flags) => {
                env.extend(
                    flags
                        .env()
                        .into_iter()
                        .map(|(k, v)| json!({"name": k, "value": v})),
                );
                json!(["run"])
            }
        };
        let mut mounts = vec![json!({"name": "pillion-out", "mountPath": OUTPUT_DIR})];
        match &ask.source {
            Source::ConfigMap(_) => mounts
                .push(json!({"name": "pillion-config", "mountPath": CONFIG_DIR, "readOnly": true})),
            Source::Annotations(f) if f.ca_secret.is_some() => {
                mounts.push(json!({"name": "pillion-ca", "mountPath": CA_DIR, "readOnly": true}))
            }
            Source::Annotations(_) => {
                mounts.push(json!({"name": "pillion-state", "mountPath": STATE_DIR}));
            }
        }
        if ask.vault_token_audience.is_some() {
            mounts.push(json!({"name": "vault-token", "mountPath": "/var/run/secrets/vault", "readOnly": true}));
        }
        if ask.vault_ca.is_some() {
            mounts
                .push(json!({"name": "vault-ca", "mountPath": "/etc/vault-ca", "readOnly": true}));
        }
        if ask.api_token {
            mounts.push(json!({"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}));
        }
        json!({
            "name": CONTAINER,
            "image": self.image,
            "restartPolicy": "Always",
            "args": args,
            "env": env,
            "ports": [{"name": "admin", "containerPort": ADMIN_PORT}],
            "startupProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 1, "failureThreshold": 300},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 10},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "admin"}, "periodSeconds": 10, "failureThreshold": 3},
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": uid,
                "runAsGroup": gid,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "seccompProfile": {"type": "RuntimeDefault"},
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": mounts,
        })
    }
}

/// Where `pillion.dev/ca-secret` is mounted.
const CA_DIR: &str = "/etc/pillion-ca";
/// pillion's state (the development CA) when no CA is given.
const STATE_DIR: &str = "/var/lib/pillion";

fn add(path: &str, value: Value) -> Value {
    json!({"op": "add", "path": path, "value": value})
}

/// The UID and GID pillion runs as: the first app container's (its own
/// securityContext, else the pod's), so that it may signal the app without
/// CAP_KILL; else [`DEFAULT_UID`]. Root is never taken over.
fn app_identity(spec: &Value, app: Option<&Value>) -> (i64, i64) {
    let pick = |key: &str| {
        app.and_then(|c| c["securityContext"][key].as_i64())
            .or_else(|| spec["securityContext"][key].as_i64())
            .filter(|&id| id > 0)
            .unwrap_or(DEFAULT_UID)
    };
    (pick("runAsUser"), pick("runAsGroup"))
}

/// What the annotations ask for, checked.
#[derive(Debug, Clone, PartialEq)]
struct Ask {
    source: Source,
    vault_token_audience: Option<String>,
    vault_ca: Option<String>,
    api_token: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// The ConfigMap's name.
    ConfigMap(String),
    /// One certificate described by annotations.
    Annotations(Flags),
}

/// The one-certificate annotations, as pillion's `PILLION_*` variables.
#[derive(Debug, Clone, PartialEq, Default)]
struct Flags {
    dns_names: Option<String>,
    common_name: Option<String>,
    ip_addresses: Option<String>,
    ca_secret: Option<String>,
    reload_process: Option<String>,
    reload_signal: Option<String>,
}

impl Flags {
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PILLION_OUTPUT_DIR", OUTPUT_DIR.to_owned())];
        let mut put = |k, v: &Option<String>| {
            if let Some(v) = v {
                env.push((k, v.clone()));
            }
        };
        put("PILLION_DNS_NAMES", &self.dns_names);
        put("PILLION_COMMON_NAME", &self.common_name);
        put("PILLION_IP_ADDRESSES", &self.ip_addresses);
        put("PILLION_RELOAD_PROCESS", &self.reload_process);
        put("PILLION_RELOAD_SIGNAL", &self.reload_signal);
        if self.ca_secret.is_some() {
            env.push(("PILLION_CA_CERT", format!("{CA_DIR}/tls.crt")));
            env.push(("PILLION_CA_KEY", format!("{CA_DIR}/tls.key")));
        } else {
            env.push(("PILLION_STATE_DIR", STATE_DIR.to_owned()));
        }
        env
    }

    /// Checks the values as pillion will when it starts, with sample pod
    /// fields for the `$(POD_...)` references Kubernetes expands.
    fn check(&self) -> Vec<String> {
        let expand = |v: &Option<String>| {
            v.as_ref().map(|v| {
                v.replace("$(POD_NAME)", "pod")
                    .replace("$(POD_NAMESPACE)", "default")
                    .replace("$(POD_IP)", "10.0.0.1")
                    .replace("$(SERVICE_ACCOUNT_NAME)", "default")
            })
        };
        let list = |v: &Option<String>| {
            expand(v)
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
                .unwrap_or_default()
        };
        let cert = CertArgs {
            out: Some(OUTPUT_DIR.into()),
            common_name: expand(&self.common_name),
            dns_names: list(&self.dns_names),
            ip_addresses: list(&self.ip_addresses),
            ca_cert: self.ca_secret.as_ref().map(|_| format!("{CA_DIR}/tls.crt")),
            ca_key: self.ca_secret.as_ref().map(|_| format!("{CA_DIR}/tls.key")),
            ..CertArgs::default()
        };
        let reload = ReloadArgs {
            reload_process: self.reload_process.clone(),
            reload_signal: self.reload_signal.clone(),
            ..ReloadArgs::default()
        };
        match cert.validate(&reload) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .into_iter()
                .map(|e| {
                    let annotation = match e.path.as_str() {
                        "--dns-name" => DNS_NAMES,
                        "--common-name" => COMMON_NAME,
                        "--ip-address" => IP_ADDRESSES,
                        "--reload-process" => RELOAD_PROCESS,
                        "--reload-signal" => RELOAD_SIGNAL,
                        "--reload-*" => RELOAD_PROCESS,
                        _ => DNS_NAMES,
                    };
                    format!("{annotation}: {}", e.message)
                })
                .collect(),
        }
    }
}

impl Ask {
    fn read(annotations: &Map<String, Value>) -> Result<Ask, Vec<String>> {
        let mut errors = Vec::new();
        let known: BTreeMap<&str, ()> = ANNOTATIONS.iter().map(|(k, _)| (*k, ())).collect();
        for key in annotations.keys() {
            if key.starts_with(PREFIX) && !known.contains_key(key.as_str()) {
                let names: Vec<&str> = ANNOTATIONS.iter().map(|(k, _)| *k).collect();
                errors.push(format!(
                    "{key}: not an annotation pillion knows (it knows {})",
                    names.join(", ")
                ));
            }
        }
        let get = |k: &str| {
            annotations
                .get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let mut object_name = |k: &str, what: &str| {
            let v = get(k)?;
            if is_dns_subdomain(&v) {
                Some(v)
            } else {
                errors.push(format!("{k}: {v:?} is not a {what} name (lower-case letters, digits, '-' and '.', at most 253)"));
                None
            }
        };
        let config = object_name(CONFIG, "ConfigMap");
        let ca_secret = object_name(CA_SECRET, "Secret");
        let vault_ca = object_name(VAULT_CA, "ConfigMap");
        let api_token = match get(API_TOKEN).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                errors.push(format!(
                    "{API_TOKEN}: {other:?} is neither \"true\" nor \"false\""
                ));
                false
            }
        };
        let flags = Flags {
            dns_names: get(DNS_NAMES),
            common_name: get(COMMON_NAME),
            ip_addresses: get(IP_ADDRESSES),
            ca_secret,
            reload_process: get(RELOAD_PROCESS),
            reload_signal: get(RELOAD_SIGNAL),
        };
        let source = match config {
            Some(name) => {
                let given: Vec<&str> = [
                    (DNS_NAMES, flags.dns_names.is_some()),
                    (COMMON_NAME, flags.common_name.is_some()),
                    (IP_ADDRESSES, flags.ip_addresses.is_some()),
                    (CA_SECRET, get(CA_SECRET).is_some()),
                    (RELOAD_PROCESS, flags.reload_process.is_some()),
                    (RELOAD_SIGNAL, flags.reload_signal.is_some()),
                ]
                .into_iter()
                .filter_map(|(k, given)| given.then_some(k))
                .collect();
                if !given.is_empty() {
                    errors.push(format!(
                        "{}: cannot be combined with {CONFIG}, whose pillion.yaml says what to obtain and whom to reload",
                        given.join(", ")
                    ));
                }
                Source::ConfigMap(name)
            }
            None if get(CONFIG).is_some() => Source::ConfigMap(String::new()),
            None if flags.dns_names.is_none()
                && flags.common_name.is_none()
                && flags.ip_addresses.is_none() =>
            {
                errors.push(format!(
                    "{INJECT}: \"true\" but nothing to obtain: set {CONFIG} (a ConfigMap holding pillion.yaml) or {DNS_NAMES}"
                ));
                Source::Annotations(flags)
            }
            None => {
                errors.extend(flags.check());
                Source::Annotations(flags)
            }
        };
        let vault_token_audience = get(VAULT_TOKEN_AUDIENCE);
        if errors.is_empty() {
            Ok(Ask {
                source,
                vault_token_audience,
                vault_ca,
                api_token,
            })
        } else {
            Err(errors)
        }
    }

    /// The volumes to add, in the order the overlay lists them.
    fn volumes(&self) -> Vec<Value> {
        let mut v = vec![json!({
            "name": "pillion-out",
            "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"},
        })];
        match &self.source {
            Source::ConfigMap(name) => {
                v.push(json!({"name": "pillion-config", "configMap": {"name": name}}));
            }
            Source::Annotations(Flags {
                ca_secret: Some(name),
                ..
            }) => v.push(json!({"name": "pillion-ca", "secret": {"secretName": name}})),
            Source::Annotations(_) => {
                v.push(json!({"name": "pillion-state", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}));
            }
        }
        if let Some(audience) = &self.vault_token_audience {
            v.push(json!({"name": "vault-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": audience, "expirationSeconds": 3600, "path": "token"}},
            ]}}));
        }
        if let Some(name) = &self.vault_ca {
            v.push(json!({"name": "vault-ca", "configMap": {"name": name}}));
        }
        if self.api_token {
            v.push(json!({"name": "kube-api-access", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]}}));
        }
        v
    }
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests;
