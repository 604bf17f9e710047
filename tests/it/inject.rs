//! `pillion inject` called by a real kube-apiserver (built from source, `common::control_plane`):
//! the shipped MutatingWebhookConfiguration (deploy/inject, pointed at a loopback URL), pillion
//! serving it with a certificate it obtains and renews itself, its CA put into the caBundle by
//! pillion with only the RBAC of deploy/inject/rbac.yaml. A pod made from the native-sidecar
//! overlay without its pillion parts, annotated, is stored by the API server exactly as the
//! overlay writes it by hand (after taking out the defaults the API server fills in); a pod that
//! is not annotated is stored unchanged; a bad annotation is refused in the webhook's words; an
//! injected pod is not injected twice; a renewed webhook certificate is served.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::control_plane::ControlPlane;
use common::*;
use rustix::process::Signal;
use serde_json::{json, Value};

const IMAGE: &str = "registry.example.com/pillion:0.1.0";
const PODS: &str = "/api/v1/namespaces/apps/pods";

/// `kubectl kustomize deploy/overlays/native-sidecar`, as JSON documents.
fn overlay() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/overlays/native-sidecar");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl kustomize (see deploy_manifests.rs)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::Deserializer::from_str(std::str::from_utf8(&out.stdout).unwrap())
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The YAML documents of a file in deploy/.
fn manifest(relative: &str) -> Vec<Value> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Takes out what the API server fills in when a manifest leaves it unset, so that a stored
/// object can be compared with the manifest it came from.
fn without_defaults(v: &Value) -> Value {
    let defaults = [
        ("terminationMessagePath", json!("/dev/termination-log")),
        ("terminationMessagePolicy", json!("File")),
        ("imagePullPolicy", json!("IfNotPresent")),
        ("protocol", json!("TCP")),
        ("timeoutSeconds", json!(1)),
        ("successThreshold", json!(1)),
        ("failureThreshold", json!(3)),
        ("scheme", json!("HTTP")),
        ("apiVersion", json!("v1")),
        ("defaultMode", json!(420)),
    ];
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, val)| !defaults.iter().any(|(dk, dv)| dk == k && dv == *val))
                .map(|(k, val)| (k.clone(), without_defaults(val)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_defaults).collect()),
        other => other.clone(),
    }
}

fn named<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|x| x["name"] == name)
}

/// The serial of the certificate the webhook serves (`openssl s_client`); None when the
/// handshake fails.
fn served_serial(port: u16) -> Option<String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")]);
    serial_of_pem(
        run_bounded(&mut cmd, Duration::from_secs(10))
            .stdout
            .as_bytes(),
    )
}

#[test]
fn the_real_api_server_gets_pillion_injected_as_the_overlay_writes_it() {
    let plane = ControlPlane::start();
    let docs = overlay();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let config_map = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("pillion-config")
        })
        .unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let template = &deployment["spec"]["template"];

    // The webhook configuration as shipped, but calling a loopback URL instead of the Service.
    let port = free_port();
    let mut webhook = manifest("deploy/inject/mutatingwebhook.yaml").remove(0);
    webhook["webhooks"][0]["clientConfig"] =
        json!({"url": format!("https://127.0.0.1:{port}/mutate")});
    plane
        .admin(
            "POST",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            Some(&webhook),
        )
        .unwrap();
    // pillion inject runs as deploy/inject's service account, with only its RBAC.
    let kubeconfig = plane.service_account_kubeconfig("pillion-system", "pillion-inject");
    plane.apply_policy("deploy/inject/rbac.yaml");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let admin = free_port();
    let mut cmd = pillion();
    cmd.args([
        "inject",
        "--image",
        IMAGE,
        "--ip-address",
        "127.0.0.1",
        "--duration",
        "1h",
    ])
    .arg(format!("--webhook-listen=127.0.0.1:{port}"))
    .arg(format!("--listen=127.0.0.1:{admin}"))
    .arg("--webhook-configuration=pillion-inject")
    .arg("--out")
    .arg(&out)
    .arg("--state-dir")
    .arg(dir.path().join("state"))
    .env("KUBECONFIG", &kubeconfig);
    let daemon = Daemon::spawn(cmd);

    // pillion puts its CA into the caBundle.
    let ca = out.join("ca.crt");
    daemon.wait_for("the caBundle to hold pillion's CA", Duration::from_secs(30), || {
        let Ok(ca) = std::fs::read(&ca) else { return false };
        let got = plane
            .admin("GET", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/pillion-inject", None)
            .unwrap();
        got["webhooks"][0]["clientConfig"]["caBundle"].as_str()
            == Some(&base64::engine::general_purpose::STANDARD.encode(&ca))
    });

    plane.create(&[
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps", "labels": {"pillion.dev/inject": "enabled"}}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "apps"}}),
    ]);

    // The overlay's pod without pillion: what a team writes when the webhook adds it.
    let mut spec = template["spec"].clone();
    spec.as_object_mut().unwrap().remove("initContainers");
    spec.as_object_mut()
        .unwrap()
        .remove("shareProcessNamespace");
    let added = ["pillion-out", "pillion-config", "vault-token", "vault-ca"];
    spec["volumes"]
        .as_array_mut()
        .unwrap()
        .retain(|v| !added.contains(&v["name"].as_str().unwrap()));
    spec["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["name"] != "pillion-out");
    let annotations = json!({
        "pillion.dev/inject": "true",
        "pillion.dev/config": config_map,
        "pillion.dev/vault-token-audience": "vault",
        "pillion.dev/vault-ca": "vault-ca",
    });
    let pod = |name: &str, annotations: &Value, spec: &Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "apps", "annotations": annotations,
                            "labels": template["metadata"]["labels"]},
               "spec": spec})
    };
    let stored = plane
        .admin("POST", PODS, Some(&pod("injected", &annotations, &spec)))
        .unwrap();

    // Stored as the overlay has it: the sidecar, its volumes, the app's mount, the shared
    // process namespace.
    let want = &template["spec"];
    let got = &stored["spec"];
    assert_eq!(
        got["initContainers"].as_array().unwrap().len(),
        1,
        "{got:#}"
    );
    assert_eq!(
        without_defaults(&got["initContainers"][0]),
        without_defaults(&want["initContainers"][0]),
        "the injected sidecar differs from deploy/overlays/native-sidecar's"
    );
    for name in added {
        assert_eq!(
            named(&got["volumes"], name).map(without_defaults),
            named(&want["volumes"], name).map(without_defaults),
            "volume {name}"
        );
    }
    assert_eq!(
        named(&got["containers"][0]["volumeMounts"], "pillion-out"),
        named(&want["containers"][0]["volumeMounts"], "pillion-out")
    );
    assert_eq!(got["shareProcessNamespace"], true);
    assert_eq!(
        stored["metadata"]["annotations"]["pillion.dev/status"],
        "injected"
    );
    // Everything else is the team's own spec, untouched.
    assert_eq!(
        without_defaults(&got["containers"][0]["securityContext"]),
        without_defaults(&want["containers"][0]["securityContext"])
    );

    // Not annotated: stored as sent.
    let plain = plane
        .admin("POST", PODS, Some(&pod("plain", &json!({}), &spec)))
        .unwrap();
    assert!(
        plain["spec"]["initContainers"].is_null(),
        "{:#}",
        plain["spec"]
    );
    assert!(plain["spec"]["shareProcessNamespace"].is_null());
    assert_eq!(
        plain["spec"]["volumes"].as_array().unwrap().len(),
        spec["volumes"].as_array().unwrap().len()
    );
    assert!(plain["metadata"]["annotations"]["pillion.dev/status"].is_null());

    // Already injected (a pod copied from an injected one): not injected again.
    let again = plane
        .admin(
            "POST",
            PODS,
            Some(&pod(
                "again",
                &stored["metadata"]["annotations"],
                &stored["spec"],
            )),
        )
        .unwrap();
    assert_eq!(again["spec"]["initContainers"].as_array().unwrap().len(), 1);
    assert_eq!(again["spec"]["volumes"], stored["spec"]["volumes"]);

    // A bad annotation: refused, in the webhook's words, through the API server.
    let mut bad = annotations.clone();
    bad["pillion.dev/inject"] = json!("yes");
    bad["pillion.dev/reload-signal"] = json!("SIGHUP");
    let refused = plane
        .admin("POST", PODS, Some(&pod("bad", &bad, &spec)))
        .unwrap_err();
    assert!(
        refused.contains("admission webhook \\\"inject.pillion.dev\\\" denied the request: pillion.dev/inject: \\\"yes\\\" is neither \\\"true\\\" nor \\\"false\\\""),
        "{refused}"
    );
    let mut bad = annotations.clone();
    bad["pillion.dev/reload-process"] = json!("nginx");
    let refused = plane
        .admin("POST", PODS, Some(&pod("bad", &bad, &spec)))
        .unwrap_err();
    assert!(
        refused.contains("pillion.dev/reload-process: cannot be combined with pillion.dev/config"),
        "{refused}"
    );

    // The annotations alone (no ConfigMap): one certificate, pillion's variables.
    let flags = json!({"pillion.dev/inject": "true", "pillion.dev/dns-names": "app.$(POD_NAMESPACE).svc",
                       "pillion.dev/reload-process": "nginx"});
    let stored = plane
        .admin("POST", PODS, Some(&pod("flags", &flags, &spec)))
        .unwrap();
    let env = &stored["spec"]["initContainers"][0]["env"];
    assert_eq!(
        named(env, "PILLION_DNS_NAMES").unwrap()["value"],
        "app.$(POD_NAMESPACE).svc"
    );
    assert_eq!(
        named(env, "PILLION_RELOAD_PROCESS").unwrap()["value"],
        "nginx"
    );

    // A CA from a Secret and an API token for pillion alone: the API server validates the
    // volumes and mounts the webhook adds beside the ones its ServiceAccount admission added.
    let tokens = json!({"pillion.dev/inject": "true", "pillion.dev/dns-names": "app.apps.svc",
                        "pillion.dev/ca-secret": "team-ca", "pillion.dev/api-token": "true"});
    let stored = plane
        .admin("POST", PODS, Some(&pod("tokens", &tokens, &spec)))
        .unwrap();
    let sidecar = &stored["spec"]["initContainers"][0];
    let volumes = &stored["spec"]["volumes"];
    assert_eq!(
        named(volumes, "pillion-ca").unwrap()["secret"]["secretName"],
        "team-ca",
        "{volumes:#}"
    );
    let api = named(volumes, "kube-api-access").unwrap();
    assert!(
        api["projected"]["sources"][0]["serviceAccountToken"].is_object(),
        "{api:#}"
    );
    let mount = |name: &str| named(&sidecar["volumeMounts"], name).map(|m| m["mountPath"].clone());
    assert_eq!(
        mount("kube-api-access"),
        Some(json!("/var/run/secrets/kubernetes.io/serviceaccount"))
    );
    assert!(mount("pillion-ca").is_some(), "{sidecar:#}");
    assert_eq!(
        sidecar["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
            .count(),
        1,
        "one token at the service-account path of the sidecar\n{sidecar:#}"
    );

    // A renewed webhook certificate is served from the next connection on, and pods are
    // still injected with it.
    let first = served_serial(port);
    assert_eq!(
        first,
        Some(serial(&out.join("tls.crt"))),
        "{}",
        daemon.describe()
    );
    daemon.signal(Signal::USR1);
    daemon.wait_for(
        "the renewed certificate to be served",
        Duration::from_secs(20),
        || served_serial(port) != first,
    );
    assert_eq!(served_serial(port), Some(serial(&out.join("tls.crt"))));
    let stored = plane
        .admin(
            "POST",
            PODS,
            Some(&pod("after-renewal", &annotations, &spec)),
        )
        .unwrap();
    assert_eq!(stored["spec"]["initContainers"][0]["name"], "pillion");

    // The injector gone (failurePolicy Fail): a pod that asks for pillion is refused, and one
    // that does not is still created, its webhook call skipped by the matchConditions.
    drop(daemon);
    let refused = plane
        .admin("POST", PODS, Some(&pod("while-down", &annotations, &spec)))
        .unwrap_err();
    assert!(
        refused.contains("failed calling webhook") && refused.contains("inject.pillion.dev"),
        "{refused}"
    );
    let plain = plane
        .admin(
            "POST",
            PODS,
            Some(&pod("plain-while-down", &json!({}), &spec)),
        )
        .unwrap_or_else(|e| {
            panic!("a pod without pillion's annotations waits on the injector: {e}")
        });
    assert!(plain["spec"]["initContainers"].is_null());
}
