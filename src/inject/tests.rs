use serde_json::{json, Value};

use super::*;

fn injector() -> Injector {
    Injector {
        image: "registry.example.com/pillion:0.1.0".into(),
    }
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "app-", "annotations": annotations},
        "spec": {
            "containers": [{"name": "nginx", "image": "nginx", "securityContext": {"runAsUser": 101, "runAsGroup": 102}}],
        },
    })
}

/// Applies the `add` operations the injector emits (RFC 6902 semantics).
fn apply(mut doc: Value, ops: &[Value]) -> Value {
    for op in ops {
        assert_eq!(op["op"], "add", "{op}");
        let path = op["path"].as_str().unwrap();
        let mut parts: Vec<String> = path[1..]
            .split('/')
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let last = parts.pop().unwrap();
        let mut target = &mut doc;
        for p in &parts {
            target = match target {
                Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
                other => &mut other[p.as_str()],
            };
        }
        let value = op["value"].clone();
        match target {
            Value::Array(a) if last == "-" => a.push(value),
            Value::Array(a) => a.insert(last.parse().unwrap(), value),
            Value::Object(o) => {
                assert!(!o.contains_key(&last), "add over an existing {path}");
                o.insert(last, value);
            }
            other => panic!("{path}: cannot add into {other}"),
        }
    }
    doc
}

fn denied(annotations: Value) -> String {
    match injector().decide(&pod(annotations)) {
        Decision::Deny(m) => m,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn pods_that_do_not_ask_are_left_alone() {
    assert_eq!(
        injector().decide(&pod(json!(null))),
        Decision::Unchanged("not asked for")
    );
    assert_eq!(
        injector().decide(&pod(json!({INJECT: "false", "other.io/x": "y"}))),
        Decision::Unchanged("not asked for")
    );
}

#[test]
fn a_configmap_pod_gets_the_native_sidecar() {
    let p = pod(
        json!({INJECT: "true", CONFIG: "pillion-config", VAULT_TOKEN_AUDIENCE: "vault", VAULT_CA: "vault-ca"}),
    );
    let Decision::Patch(ops) = injector().decide(&p) else {
        panic!("no patch")
    };
    let out = apply(p, &ops);
    let sidecar = &out["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "pillion");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["image"], "registry.example.com/pillion:0.1.0");
    assert_eq!(
        sidecar["args"],
        json!(["run", "--config", "/etc/pillion/pillion.yaml"])
    );
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/readyz");
    // The app's identity, so that pillion may signal it.
    assert_eq!(sidecar["securityContext"]["runAsUser"], 101);
    assert_eq!(sidecar["securityContext"]["runAsGroup"], 102);
    assert_eq!(out["spec"]["shareProcessNamespace"], true);
    let volumes: Vec<&str> = out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        ["pillion-out", "pillion-config", "vault-token", "vault-ca"]
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "pillion-out", "mountPath": "/var/run/pillion", "readOnly": true}])
    );
    assert_eq!(out["metadata"]["annotations"][STATUS], "injected");
    // Idempotent: the patched pod is not changed again.
    assert_eq!(
        injector().decide(&out),
        Decision::Unchanged("already injected")
    );
}

#[test]
fn annotations_become_pillions_variables() {
    let mut p = pod(
        json!({INJECT: "true", DNS_NAMES: "app, app.$(POD_NAMESPACE).svc", IP_ADDRESSES: "$(POD_IP)",
        RELOAD_PROCESS: "nginx", CA_SECRET: "app-ca"}),
    );
    p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "x"}]);
    p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    let Decision::Patch(ops) = injector().decide(&p) else {
        panic!("no patch")
    };
    let out = apply(p, &ops);
    let init = out["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(
        init[0]["name"], "pillion",
        "first, before the other init containers"
    );
    assert_eq!(init[1]["name"], "migrate");
    let env: Vec<(String, String)> = init[0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(
        get("PILLION_DNS_NAMES"),
        Some("app, app.$(POD_NAMESPACE).svc")
    );
    assert_eq!(get("PILLION_IP_ADDRESSES"), Some("$(POD_IP)"));
    assert_eq!(get("PILLION_RELOAD_PROCESS"), Some("nginx"));
    assert_eq!(get("PILLION_CA_CERT"), Some("/etc/pillion-ca/tls.crt"));
    assert_eq!(get("PILLION_OUTPUT_DIR"), Some("/var/run/pillion"));
    let volumes: Vec<&str> = out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["data", "pillion-out", "pillion-ca"]);
}

#[test]
fn a_bad_annotation_is_refused_by_name() {
    assert!(denied(json!({INJECT: "yes"})).starts_with("pillion.dev/inject: \"yes\""));
    let m = denied(json!({INJECT: "true", "pillion.dev/dns-name": "a"}));
    assert!(
        m.contains("pillion.dev/dns-name: not an annotation pillion knows"),
        "{m}"
    );
    let m = denied(json!({INJECT: "true"}));
    assert!(m.contains("nothing to obtain"), "{m}");
    let m = denied(json!({INJECT: "true", CONFIG: "Bad_Name"}));
    assert!(
        m.starts_with("pillion.dev/config: \"Bad_Name\" is not a ConfigMap name"),
        "{m}"
    );
    let m = denied(json!({INJECT: "true", CONFIG: "c", RELOAD_PROCESS: "nginx"}));
    assert!(
        m.starts_with("pillion.dev/reload-process: cannot be combined with pillion.dev/config"),
        "{m}"
    );
    let m = denied(json!({INJECT: "true", DNS_NAMES: "app", RELOAD_SIGNAL: "SIGFOO"}));
    assert!(m.starts_with("pillion.dev/reload-signal: "), "{m}");
    let m = denied(json!({INJECT: "true", DNS_NAMES: "not a name!"}));
    assert!(m.starts_with("pillion.dev/dns-names: "), "{m}");
    let m = denied(json!({INJECT: "true", DNS_NAMES: "a", API_TOKEN: "1"}));
    assert!(m.starts_with("pillion.dev/api-token: \"1\""), "{m}");
}

#[test]
fn clashing_volumes_are_refused() {
    let mut p = pod(json!({INJECT: "true", CONFIG: "c"}));
    p["spec"]["volumes"] = json!([{"name": "pillion-out", "emptyDir": {}}]);
    let Decision::Deny(m) = injector().decide(&p) else {
        panic!("not denied")
    };
    assert!(
        m.contains("already has a volume named \"pillion-out\""),
        "{m}"
    );
}

#[test]
fn the_review_answers_with_the_uid_and_a_base64_patch() {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "42", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "object": pod(json!({INJECT: "true", CONFIG: "c"}))},
    });
    let (_, answer) = injector().review(&review);
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "42");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().unwrap())
        .unwrap();
    let ops: Vec<Value> = serde_json::from_slice(&patch).unwrap();
    assert!(!ops.is_empty());

    let mut bad = review.clone();
    bad["request"]["object"] = pod(json!({INJECT: "maybe"}));
    let (_, answer) = injector().review(&bad);
    assert_eq!(answer["response"]["allowed"], false);
    assert!(answer["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("pillion.dev/inject"));
}
