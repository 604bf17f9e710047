//! The Kubernetes manifests in deploy/ and the sample configurations in deploy/examples/: every
//! kustomization builds (`kubectl kustomize`), and what it builds holds together. Names must
//! resolve (volume mounts to volumes, the ConfigMap pillion's `--config` points at to a ConfigMap
//! in the output holding that key), the probes must hit the port pillion's embedded
//! configuration listens on, every file the configuration names must be mounted into pillion's
//! container, and the pods must carry the hardening SECURITY.md promises. Every configuration,
//! embedded or sample, goes through `pillion check`.
//!
//! Needs `kubectl` (for `kubectl kustomize`; no cluster is contacted).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The overlays that must exist; any other directory in deploy/overlays is checked too.
const OVERLAYS: &[&str] = &[
    "native-sidecar",
    "init-and-sidecar",
    "job",
    "kubernetes-csr",
    "cert-manager",
];

/// The sample configurations that must exist in deploy/examples.
const EXAMPLES: &[&str] = &[
    "local-ca.yaml",
    "vault-kubernetes-auth.yaml",
    "vault-approle.yaml",
    "kubernetes-csr.yaml",
    "cert-manager.yaml",
];

/// ConfigMaps the manifests mount but do not create: the user creates them (deploy/README.md
/// says how), or Kubernetes does (kube-root-ca.crt, in every namespace).
const EXTERNAL_CONFIGMAPS: &[&str] = &["vault-ca", "cluster-ca", "kube-root-ca.crt"];

/// The pod identity variables pillion expands, and where the downward API takes them from.
const POD_ENV: &[(&str, &str)] = &[
    ("POD_NAME", "metadata.name"),
    ("POD_NAMESPACE", "metadata.namespace"),
    ("POD_IP", "status.podIP"),
    ("SERVICE_ACCOUNT_NAME", "spec.serviceAccountName"),
];

/// Where kube clients find the in-cluster service account.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

// ---------------------------------------------------------------------------
// Running kubectl and pillion.

fn kubectl() -> &'static str {
    static CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CHECKED.get_or_init(check_kubectl);
    "kubectl"
}

fn check_kubectl() {
    match Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`kubectl version --client` failed ({}): {}\nThe deploy/ manifests are built with \
             `kubectl kustomize`; install a working kubectl",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "kubectl is not installed ({e}); tests/it/deploy_manifests.rs builds deploy/ with \
             `kubectl kustomize` (no cluster needed). Install kubectl: \
             https://kubernetes.io/docs/tasks/tools/#kubectl (e.g. download \
             https://dl.k8s.io/release/$(curl -Ls https://dl.k8s.io/release/stable.txt)/bin/linux/amd64/kubectl \
             into your PATH, or `apt-get install kubectl` from the pkgs.k8s.io repository)"
        ),
    }
}

/// `kubectl kustomize <dir>`, as YAML documents turned into JSON values.
fn kustomize(dir: &str) -> Vec<Value> {
    kustomize_at(&Path::new(REPO).join(dir), dir)
}

/// `kubectl kustomize <path>`; `dir` names it in messages.
fn kustomize_at(path: &Path, dir: &str) -> Vec<Value> {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(path)
        .output()
        .expect("running kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kustomize output is UTF-8");
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = Value::deserialize(doc).unwrap_or_else(|e| {
            panic!("kubectl kustomize {dir} printed YAML that does not parse: {e}")
        });
        if !value.is_null() {
            docs.push(value);
        }
    }
    assert!(!docs.is_empty(), "kubectl kustomize {dir} printed nothing");
    docs
}

/// Builds `deploy/overlays/<overlay>` the way a team deploys it into its own namespace: a
/// kustomization of its own, elsewhere, that has the overlay as its resource and sets
/// `namespace:`. (kustomize accepts only relative paths to other kustomizations.)
fn kustomize_into_namespace(overlay: &str, namespace: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let overlay_dir = Path::new(REPO).join("deploy/overlays").join(overlay);
    let rel = relative_path(dir.path(), &overlay_dir);
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             namespace: {namespace}\nresources:\n  - {}\n",
            rel.display()
        ),
    )
    .unwrap();
    kustomize_at(
        dir.path(),
        &format!("(namespace: {namespace}, resources: [deploy/overlays/{overlay}])"),
    )
}

/// The relative path from directory `from` to `to` (both existing).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let normal = |p: &Path| -> Vec<std::ffi::OsString> {
        p.canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .components()
            .filter_map(|c| match c {
                Component::Normal(c) => Some(c.to_owned()),
                _ => None,
            })
            .collect()
    };
    let (from, to) = (normal(from), normal(to));
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c);
    }
    rel
}

/// Runs `pillion check --config <file>` as a pod would (the downward-API variables set) and
/// accepts exit 0, or exit 2 whose every problem is a file or directory of this machine that a
/// pod would have (a CA file, a token file, an unwritable output directory's parent). Any
/// error about the configuration itself (YAML, an unknown or bad field) fails.
fn pillion_check(config: &Path) -> Result<String, String> {
    let state = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pillion"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PILLION_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.args(["check", "--config"])
        .arg(config)
        .env("PILLION_STATE_DIR", state.path())
        .env("POD_NAME", "app-7c9f8d6b5-x2x8q")
        .env("POD_NAMESPACE", "shop")
        .env("POD_IP", "10.244.1.17")
        .env("SERVICE_ACCOUNT_NAME", "app");
    let out = cmd.output().expect("running pillion check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let shown = || {
        format!(
            "pillion check --config {} exited {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            config.display(),
            out.status
        )
    };
    match out.status.code() {
        Some(0) if stdout.contains("configuration OK") => Ok(stdout),
        Some(0) => Err(format!("{}\n(no \"configuration OK\" line)", shown())),
        Some(2) => {
            let is_parse_error = stderr.lines().any(|l| {
                let l = l.trim_end();
                (l.ends_with(" problem:") || l.ends_with(" problems:")) && l.contains(" has ")
            });
            if is_parse_error {
                return Err(format!(
                    "{}\n(a configuration error, not a missing file)",
                    shown()
                ));
            }
            let marker = "the configuration cannot be carried out:";
            let Some(start) = stderr.find(marker) else {
                return Err(format!(
                    "{}\n(exit 2 without the preflight message)",
                    shown()
                ));
            };
            let problems: Vec<&str> = stderr[start + marker.len()..]
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("  "))
                .map(str::trim)
                .collect();
            if problems.is_empty() {
                return Err(format!("{}\n(no problems listed)", shown()));
            }
            for p in &problems {
                if !is_missing_file_problem(p) {
                    return Err(format!(
                        "{}\n(this problem is not about a file or directory missing here: {p})",
                        shown()
                    ));
                }
            }
            Ok(stderr)
        }
        _ => Err(shown()),
    }
}

/// A preflight problem that only says a file or directory of the pod is not on this machine.
fn is_missing_file_problem(line: &str) -> bool {
    if line.starts_with("outputDir:") {
        // As non-root here, /var/run may not be writable; in the pod it is an emptyDir.
        return line.contains("not writable") || line.contains("cannot be created");
    }
    if !line.starts_with("issuers.") {
        return false;
    }
    line.split_whitespace()
        .map(|w| w.trim_matches(|c: char| matches!(c, ':' | ',' | '(' | ')' | '"' | '\'' | '.')))
        .any(|w| w.starts_with('/') && !Path::new(w).exists())
}

// ---------------------------------------------------------------------------
// Reading the built manifests.

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

fn find<'a>(docs: &'a [Value], k: &str, n: &str) -> Option<&'a Value> {
    docs.iter().find(|d| kind(d) == k && name(d) == n)
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Custom resources that are cluster-scoped. kustomize does not know their scope and gives them
/// a namespace like any namespaced object; the built-in cluster-scoped kinds it leaves without.
const CLUSTER_SCOPED_CUSTOM_KINDS: &[&str] = &["ClusterIssuer", "CertificateRequestPolicy"];

/// A cluster-scoped object of a build that set `namespace:`: one name in the whole cluster,
/// whichever namespace the build was for.
fn is_cluster_scoped(doc: &Value) -> bool {
    doc["metadata"]["namespace"].is_null() || CLUSTER_SCOPED_CUSTOM_KINDS.contains(&kind(doc))
}

/// What goes wrong when the builds of one overlay for two namespaces are both applied to one
/// cluster. `builds` holds (namespace, objects) pairs.
fn cluster_scoped_clashes(overlay: &str, builds: &[(&str, &[Value])]) -> Vec<String> {
    let mut errs = Vec::new();
    for (ns, docs) in builds {
        for d in docs.iter().filter(|d| is_cluster_scoped(d)) {
            let what = format!("{overlay} built for {ns}: {} {}", kind(d), name(d));
            if name(d).contains("$(") {
                errs.push(format!(
                    "{what}: the name holds an unresolved kustomize var"
                ));
            }
            if kind(d) != "ClusterRoleBinding" {
                continue;
            }
            // The binding grants this namespace's pods, through a role of this build.
            for s in list(&d["subjects"]) {
                if s["kind"] == "ServiceAccount" && s["namespace"] != *ns {
                    errs.push(format!(
                        "{what}: binds ServiceAccount {}/{}, not one of namespace {ns}",
                        str_of(&s["namespace"]),
                        str_of(&s["name"])
                    ));
                }
            }
            let role = str_of(&d["roleRef"]["name"]);
            if d["roleRef"]["kind"] == "ClusterRole" && find(docs, "ClusterRole", role).is_none() {
                errs.push(format!(
                    "{what}: its roleRef ClusterRole {role} is not in the build"
                ));
            }
        }
    }
    for (i, (ns_a, a)) in builds.iter().enumerate() {
        for (ns_b, b) in &builds[i + 1..] {
            for da in a.iter().filter(|d| is_cluster_scoped(d)) {
                let Some(db) = b
                    .iter()
                    .find(|d| is_cluster_scoped(d) && kind(d) == kind(da) && name(d) == name(da))
                else {
                    continue;
                };
                let what = format!(
                    "{overlay} built for {ns_a} and for {ns_b}: the same {} {}",
                    kind(da),
                    name(da)
                );
                if kind(da) == "ClusterRoleBinding" && da["subjects"] != db["subjects"] {
                    errs.push(format!(
                        "{what} with different subjects ({} and {}): applying the second \
                         replaces the first's subjects, and {ns_a}'s pods lose their permission",
                        da["subjects"], db["subjects"]
                    ));
                } else if da != db {
                    errs.push(format!(
                        "{what} with different content: applying the second overwrites the \
                         first\n  {da}\n  {db}"
                    ));
                }
            }
            // A role bound by one namespace's binding that the other namespace's build also
            // carries: `kubectl delete -k` (or `apply --prune`) in one namespace deletes it,
            // and the other namespace's binding then grants nothing.
            for d in a.iter().filter(|d| kind(d) == "ClusterRoleBinding") {
                let role = str_of(&d["roleRef"]["name"]);
                if d["roleRef"]["kind"] == "ClusterRole"
                    && find(a, "ClusterRole", role).is_some()
                    && find(b, "ClusterRole", role).is_some()
                {
                    errs.push(format!(
                        "{overlay} built for {ns_a} and for {ns_b}: both carry the ClusterRole \
                         {role} that {ns_a}'s ClusterRoleBinding {} uses: deleting either \
                         namespace's deployment deletes it for both",
                        name(d)
                    ));
                }
            }
        }
    }
    errs
}

/// The pod templates of every workload in the output.
fn workloads(docs: &[Value]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter_map(|d| {
            let spec = match kind(d) {
                "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet" => {
                    &d["spec"]["template"]["spec"]
                }
                "CronJob" => &d["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                "Pod" => &d["spec"],
                _ => return None,
            };
            Some((format!("{} {}", kind(d), name(d)), spec))
        })
        .collect()
}

/// One container of a pod, and whether it is an init container.
struct Ctr<'a> {
    v: &'a Value,
    init: bool,
}

impl Ctr<'_> {
    fn name(&self) -> &str {
        str_of(&self.v["name"])
    }
    fn is_pillion(&self) -> bool {
        self.name().starts_with("pillion")
            || str_of(&self.v["image"])
                .rsplit('/')
                .next()
                .unwrap_or("")
                .starts_with("pillion")
    }
    fn args(&self) -> Vec<&str> {
        list(&self.v["args"]).iter().map(str_of).collect()
    }
    fn subcommand(&self) -> Option<&str> {
        self.args().into_iter().find(|a| !a.starts_with('-'))
    }
    fn is_native_sidecar(&self) -> bool {
        self.init && self.v["restartPolicy"] == "Always"
    }
    /// `--config PATH`, `--config=PATH`, or env PILLION_CONFIG.
    fn config_path(&self) -> Option<String> {
        let args = self.args();
        for (i, a) in args.iter().enumerate() {
            if *a == "--config" {
                return args.get(i + 1).map(|s| s.to_string());
            }
            if let Some(p) = a.strip_prefix("--config=") {
                return Some(p.to_owned());
            }
        }
        list(&self.v["env"])
            .iter()
            .find(|e| e["name"] == "PILLION_CONFIG")
            .and_then(|e| e["value"].as_str())
            .map(str::to_owned)
    }
    fn mounts(&self) -> &[Value] {
        list(&self.v["volumeMounts"])
    }
    /// The mount that holds `path` (the deepest one), and the path inside the volume.
    fn mount_for(&self, path: &str) -> Option<(&Value, String)> {
        self.mounts()
            .iter()
            .filter_map(|m| {
                let mp = str_of(&m["mountPath"]).trim_end_matches('/');
                let rest = if path == mp {
                    ""
                } else {
                    path.strip_prefix(mp)?.strip_prefix('/')?
                };
                Some((m, mp.len(), rest.to_owned()))
            })
            .max_by_key(|(_, len, _)| *len)
            .map(|(m, _, rest)| {
                // A subPath mount shows one entry of the volume at mountPath.
                let sub = str_of(&m["subPath"]);
                let inside = match (sub.is_empty(), rest.is_empty()) {
                    (true, _) => rest,
                    (false, true) => sub.to_owned(),
                    (false, false) => format!("{sub}/{rest}"),
                };
                (m, inside)
            })
    }
    /// A port number, or the number of a named port of this container.
    fn resolve_port(&self, port: &Value) -> Option<u64> {
        if let Some(n) = port.as_u64() {
            return Some(n);
        }
        let wanted = port.as_str()?;
        if let Ok(n) = wanted.parse() {
            return Some(n);
        }
        list(&self.v["ports"])
            .iter()
            .find(|p| p["name"] == wanted)
            .and_then(|p| p["containerPort"].as_u64())
    }
}

fn containers(pod: &Value) -> Vec<Ctr<'_>> {
    let init = list(&pod["initContainers"])
        .iter()
        .map(|v| Ctr { v, init: true });
    let regular = list(&pod["containers"])
        .iter()
        .map(|v| Ctr { v, init: false });
    init.chain(regular).collect()
}

fn volume<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    list(&pod["volumes"]).iter().find(|v| v["name"] == name)
}

/// The (ConfigMap name, key) a file inside a configMap or projected volume comes from.
fn configmap_source(vol: &Value, inside: &str) -> Option<(String, String)> {
    let from = |cm: &Value| -> Option<(String, String)> {
        let items = list(&cm["items"]);
        let key = if items.is_empty() {
            inside.to_owned()
        } else {
            str_of(&items.iter().find(|i| i["path"] == inside)?["key"]).to_owned()
        };
        Some((str_of(&cm["name"]).to_owned(), key))
    };
    if vol["configMap"].is_object() {
        return from(&vol["configMap"]);
    }
    list(&vol["projected"]["sources"])
        .iter()
        .filter(|s| s["configMap"].is_object())
        .find_map(|s| from(&s["configMap"]))
}

/// Every file path a pillion configuration reads, with its field.
fn files_read(config: &serde_yaml_ng::Value) -> Vec<(String, String)> {
    fn walk(v: &serde_yaml_ng::Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_yaml_ng::Value::Mapping(m) => {
                for (k, v) in m {
                    let k = k.as_str().unwrap_or("?");
                    let p = if path.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{path}.{k}")
                    };
                    match v.as_str() {
                        Some(s)
                            if (k.ends_with("File") || k == "kubeconfig") && s.starts_with('/') =>
                        {
                            out.push((p, s.to_owned()))
                        }
                        _ => walk(v, &p, out),
                    }
                }
            }
            serde_yaml_ng::Value::Sequence(s) => {
                for (i, v) in s.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(config, "", &mut out);
    out
}

// ---------------------------------------------------------------------------
// The checks.

/// What one pod's pillion is configured to do, found through its --config.
struct Embedded {
    text: String,
    parsed: serde_yaml_ng::Value,
}

/// Checks one pod template; returns every problem found.
fn check_pod(docs: &[Value], what: &str, pod: &Value, scratch: &Path) -> Vec<String> {
    let mut errs = Vec::new();
    let mut err = |m: String| errs.push(format!("{what}: {m}"));
    let ctrs = containers(pod);
    let pillions: Vec<&Ctr> = ctrs.iter().filter(|c| c.is_pillion()).collect();
    let apps: Vec<&Ctr> = ctrs.iter().filter(|c| !c.is_pillion()).collect();
    if pillions.is_empty() {
        err("has no pillion container".into());
        return errs;
    }
    if apps.is_empty() {
        err("has no app container beside pillion".into());
    }

    // Volumes: unique, each mounted somewhere, every mount resolves.
    let mut volume_names = BTreeSet::new();
    for v in list(&pod["volumes"]) {
        if !volume_names.insert(str_of(&v["name"])) {
            err(format!("volume {} is defined twice", v["name"]));
        }
    }
    let mut mounted = BTreeSet::new();
    for c in &ctrs {
        let mut paths = BTreeSet::new();
        for m in c.mounts() {
            let n = str_of(&m["name"]);
            mounted.insert(n);
            if !volume_names.contains(n) {
                err(format!(
                    "container {} mounts volume {n:?}, which the pod does not define",
                    c.name()
                ));
            }
            if !paths.insert(str_of(&m["mountPath"])) {
                err(format!(
                    "container {} mounts two volumes at {}",
                    c.name(),
                    m["mountPath"]
                ));
            }
        }
    }
    for v in &volume_names {
        if !mounted.contains(v) {
            err(format!("volume {v:?} is mounted by no container"));
        }
    }
    // ConfigMaps the volumes use exist (or are documented as created by the user).
    let configmaps: BTreeSet<&str> = docs
        .iter()
        .filter(|d| kind(d) == "ConfigMap")
        .map(name)
        .collect();
    for v in list(&pod["volumes"]) {
        let mut names = vec![str_of(&v["configMap"]["name"])];
        names.extend(
            list(&v["projected"]["sources"])
                .iter()
                .map(|s| str_of(&s["configMap"]["name"])),
        );
        for n in names.into_iter().filter(|n| !n.is_empty()) {
            if !configmaps.contains(n) && !EXTERNAL_CONFIGMAPS.contains(&n) {
                err(format!("volume {} uses ConfigMap {n:?}, which is neither in the output nor a documented external one", v["name"]));
            }
        }
    }
    // The ServiceAccount exists.
    let sa = str_of(&pod["serviceAccountName"]);
    if sa.is_empty() || find(docs, "ServiceAccount", sa).is_none() {
        err(format!(
            "serviceAccountName {sa:?} is not a ServiceAccount in the output"
        ));
    }

    // The shared process namespace pillion's reload by process name needs.
    if pod["shareProcessNamespace"] != true {
        err("shareProcessNamespace is not true".into());
    }

    // Hardening, per container, with the pod-level defaults.
    let psc = &pod["securityContext"];
    let mut uids = BTreeMap::new();
    for c in &ctrs {
        let sc = &c.v["securityContext"];
        let eff = |k: &str| effective(sc, psc, k);
        let n = c.name();
        if eff("runAsNonRoot") != true {
            err(format!("container {n}: runAsNonRoot is not true"));
        }
        match eff("runAsUser").as_u64() {
            Some(0) | None => err(format!(
                "container {n}: runAsUser is not set to a non-zero UID"
            )),
            Some(uid) => {
                uids.insert(n.to_owned(), uid);
            }
        }
        if !matches!(eff("runAsGroup").as_u64(), Some(g) if g != 0) {
            err(format!(
                "container {n}: runAsGroup is not set to a non-zero GID"
            ));
        }
        if eff("seccompProfile")["type"] != "RuntimeDefault" {
            err(format!(
                "container {n}: seccompProfile is not RuntimeDefault"
            ));
        }
        if sc["readOnlyRootFilesystem"] != true {
            err(format!("container {n}: readOnlyRootFilesystem is not true"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            err(format!(
                "container {n}: allowPrivilegeEscalation is not false"
            ));
        }
        if !list(&sc["capabilities"]["drop"]).iter().any(|d| d == "ALL") {
            err(format!("container {n}: capabilities do not drop ALL"));
        }
        if sc["privileged"] == true {
            err(format!("container {n} is privileged"));
        }
    }
    // pillion signals the app as the same UID, so it needs no capability; KILL only if the
    // UIDs differ.
    for p in &pillions {
        let added: Vec<&str> = list(&p.v["securityContext"]["capabilities"]["add"])
            .iter()
            .map(str_of)
            .collect();
        let same_uid = apps
            .iter()
            .all(|a| uids.get(a.name()) == uids.get(p.name()));
        if !added.is_empty() && (same_uid || added != ["KILL"]) {
            err(format!("container {} adds capabilities {added:?}; it needs none when it runs as the app's UID", p.name()));
        }
        if !same_uid && added != ["KILL"] {
            err(format!(
                "container {} runs as another UID than the app but lacks CAP_KILL to signal it",
                p.name()
            ));
        }
    }

    // Each pillion container: downward-API env, its config, the files the config reads.
    let mut embedded: Option<Embedded> = None;
    for p in &pillions {
        let n = p.name();
        for (var, field) in POD_ENV {
            let e = list(&p.v["env"]).iter().find(|e| e["name"] == *var);
            if e.map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]) != Some(&Value::from(*field)) {
                err(format!(
                    "container {n}: env {var} is not taken from the downward API ({field})"
                ));
            }
        }
        match p.subcommand() {
            Some("run") | Some("init") => {}
            other => err(format!("container {n}: runs {other:?}, not run or init")),
        }
        let Some(config_path) = p.config_path() else {
            err(format!("container {n}: no --config"));
            continue;
        };
        let Some((mount, key)) = p.mount_for(&config_path) else {
            err(format!(
                "container {n}: nothing is mounted at --config {config_path}"
            ));
            continue;
        };
        let vol_name = str_of(&mount["name"]);
        let Some((cm_name, cm_key)) = volume(pod, vol_name).and_then(|v| configmap_source(v, &key))
        else {
            err(format!(
                "container {n}: --config {config_path} is not in a ConfigMap volume"
            ));
            continue;
        };
        let Some(cm) = find(docs, "ConfigMap", &cm_name) else {
            err(format!(
                "container {n}: ConfigMap {cm_name:?} (for --config) is not in the output"
            ));
            continue;
        };
        let Some(text) = cm["data"][cm_key.as_str()].as_str() else {
            err(format!("container {n}: ConfigMap {cm_name} has no key {cm_key:?}, which --config {config_path} needs"));
            continue;
        };
        let parsed: serde_yaml_ng::Value = match serde_yaml_ng::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                err(format!(
                    "container {n}: ConfigMap {cm_name} key {cm_key} is not YAML: {e}"
                ));
                continue;
            }
        };
        for (field, file) in files_read(&parsed) {
            if p.mount_for(&file).is_none() {
                err(format!("container {n}: the configuration's {field} is {file}, but nothing is mounted there"));
            }
        }
        match &embedded {
            Some(e) if e.text != text => err(format!(
                "pillion containers read different configurations (container {n})"
            )),
            _ => {
                embedded = Some(Embedded {
                    text: text.to_owned(),
                    parsed,
                })
            }
        }
    }
    let Some(config) = embedded else { return errs };
    let cfg = &config.parsed;

    // The configuration itself passes `pillion check`.
    let file = scratch.join(format!("{}.yaml", what.replace([' ', '/'], "_")));
    std::fs::write(&file, &config.text).unwrap();
    if let Err(e) = pillion_check(&file) {
        err(format!(
            "the embedded pillion.yaml fails pillion check:\n{e}"
        ));
    }

    // The output directory: a memory-backed emptyDir, written by pillion, read-only elsewhere.
    let output_dir = cfg["outputDir"].as_str().unwrap_or("");
    let mut out_volume = None;
    for p in &pillions {
        match p.mount_for(output_dir) {
            Some((m, _)) if m["readOnly"] == true => err(format!(
                "container {}: the output directory {output_dir} is mounted read-only",
                p.name()
            )),
            Some((m, _)) => out_volume = Some(str_of(&m["name"]).to_owned()),
            None => err(format!(
                "container {}: nothing is mounted at outputDir {output_dir}",
                p.name()
            )),
        }
    }
    if let Some(out) = &out_volume {
        match volume(pod, out) {
            Some(v) if v["emptyDir"]["medium"] == "Memory" => {}
            _ => err(format!(
                "the output volume {out} is not an emptyDir with medium: Memory"
            )),
        }
        let readers: Vec<_> = apps
            .iter()
            .filter(|a| a.mounts().iter().any(|m| m["name"] == out.as_str()))
            .collect();
        if readers.is_empty() {
            err(format!("no app container mounts the output volume {out}"));
        }
        for a in readers {
            if !a
                .mounts()
                .iter()
                .any(|m| m["name"] == out.as_str() && m["readOnly"] == true)
            {
                err(format!(
                    "container {} mounts the output volume {out} writable; the app only reads",
                    a.name()
                ));
            }
        }
    }

    // Credentials meant for pillion stay out of the app containers.
    let secret_volumes: BTreeSet<&str> = list(&pod["volumes"])
        .iter()
        .filter(|v| {
            v["secret"].is_object()
                || list(&v["projected"]["sources"])
                    .iter()
                    .any(|s| s["serviceAccountToken"].is_object())
        })
        .map(|v| str_of(&v["name"]))
        .collect();
    for a in &apps {
        for m in a.mounts() {
            if secret_volumes.contains(str_of(&m["name"])) {
                err(format!(
                    "app container {} mounts pillion's credential volume {}",
                    a.name(),
                    m["name"]
                ));
            }
        }
    }
    if pod["automountServiceAccountToken"] != false {
        err(
            "automountServiceAccountToken is not false: the app container would get an API token"
                .into(),
        );
    }

    // Vault login with a service-account token: a projected token for audience `vault`.
    for (issuer, spec) in cfg["issuers"].as_mapping().into_iter().flatten() {
        let issuer = issuer.as_str().unwrap_or("?");
        let auth = &spec["vault"]["auth"];
        for method in ["kubernetes", "jwt"] {
            if auth[method].is_null() {
                continue;
            }
            let token_file = auth[method]["tokenFile"]
                .as_str()
                .unwrap_or(SERVICE_ACCOUNT_DIR);
            for p in &pillions {
                let Some((m, inside)) = p.mount_for(token_file) else {
                    continue;
                };
                let v = volume(pod, str_of(&m["name"]))
                    .cloned()
                    .unwrap_or(Value::Null);
                let token = list(&v["projected"]["sources"])
                    .iter()
                    .find(|s| s["serviceAccountToken"]["path"] == inside.as_str());
                match token {
                    Some(t) if t["serviceAccountToken"]["audience"] == "vault"
                        && t["serviceAccountToken"]["expirationSeconds"] == 3600 => {}
                    _ => err(format!(
                        "container {}: issuers.{issuer}.vault.auth.{method}.tokenFile {token_file} is not a projected service-account token with audience vault and expirationSeconds 3600",
                        p.name()
                    )),
                }
            }
        }
        // The cluster issuers talk to the API server: pillion (only) needs the API token.
        let cluster = ["kubernetesCsr", "certManager"]
            .into_iter()
            .find(|k| !spec[*k].is_null());
        if let Some(k) = cluster {
            if spec[k]["kubeconfig"].is_null() {
                for p in &pillions {
                    if p.mount_for(&format!("{SERVICE_ACCOUNT_DIR}/token"))
                        .is_none()
                    {
                        err(format!("container {}: issuers.{issuer}.{k} uses the in-cluster service account, but no token is mounted at {SERVICE_ACCOUNT_DIR}", p.name()));
                    }
                }
            }
        }
    }

    // The admin endpoint: every probe of a pillion container hits server.listen's port.
    let listen_port = cfg["server"]["listen"]
        .as_str()
        .map(|l| match l.parse::<SocketAddr>() {
            Ok(a) => a.port(),
            Err(e) => panic!("{what}: server.listen {l:?} does not parse: {e}"),
        });
    for p in &pillions {
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let pr = &p.v[probe];
            if pr.is_null() {
                continue;
            }
            let Some(port) = p.resolve_port(&pr["httpGet"]["port"]) else {
                err(format!(
                    "container {}: {probe} is not an httpGet on a known port",
                    p.name()
                ));
                continue;
            };
            match listen_port {
                Some(l) if l == port as u16 => {}
                Some(l) => err(format!("container {}: {probe} probes port {port}, but server.listen is on {l}", p.name())),
                None => err(format!("container {}: {probe} probes port {port}, but the configuration sets no server.listen", p.name())),
            }
            let want = if probe == "livenessProbe" {
                "/healthz"
            } else {
                "/readyz"
            };
            if pr["httpGet"]["path"] != want {
                err(format!(
                    "container {}: {probe} path is {}, not {want}",
                    p.name(),
                    pr["httpGet"]["path"]
                ));
            }
        }
        if p.subcommand() == Some("run") && p.v["livenessProbe"].is_null() {
            err(format!(
                "container {}: pillion run has no livenessProbe",
                p.name()
            ));
        }
        if p.is_native_sidecar() && p.v["startupProbe"].is_null() {
            err(format!("container {}: the native sidecar has no startupProbe (/readyz): the app would start before its certificates exist", p.name()));
        }
        if p.subcommand() == Some("init") && !p.init {
            err(format!(
                "container {}: pillion init must be an init container",
                p.name()
            ));
        }
        if p.subcommand() == Some("init") && p.is_native_sidecar() {
            err(format!("container {}: pillion init exits; it cannot be a native sidecar (restartPolicy: Always)", p.name()));
        }
        if p.subcommand() == Some("run") && p.init && !p.is_native_sidecar() {
            err(format!("container {}: pillion run never exits; as an init container it needs restartPolicy: Always", p.name()));
        }
    }

    // The reload target is one of the pod's containers.
    if let Some(process) = cfg["reload"]["process"].as_str() {
        if !apps
            .iter()
            .any(|a| a.name() == process || str_of(&a.v["image"]).contains(process))
        {
            err(format!(
                "reload.process is {process:?}, but no app container runs it"
            ));
        }
    }
    errs
}

/// A security-context field: the container's, else the pod's.
fn effective<'a>(container: &'a Value, pod: &'a Value, key: &str) -> &'a Value {
    if container[key].is_null() {
        &pod[key]
    } else {
        &container[key]
    }
}

fn overlay_dirs() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(Path::new(REPO).join("deploy/overlays"))
        .expect("deploy/overlays exists")
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("kustomization.yaml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    for o in OVERLAYS {
        assert!(
            found.iter().any(|f| f == o),
            "deploy/overlays/{o} is missing"
        );
    }
    found
}

/// The pod template of the one workload an overlay deploys.
fn only_pod(docs: &[Value], overlay: &str) -> Value {
    let w = workloads(docs);
    assert_eq!(
        w.len(),
        1,
        "{overlay}: expected one workload, got {:?}",
        w.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    w[0].1.clone()
}

fn container<'a>(pod: &'a Value, pred: impl Fn(&Ctr) -> bool) -> Vec<Ctr<'a>> {
    containers(pod).into_iter().filter(|c| pred(c)).collect()
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn base_builds_with_service_account_and_config() {
    let docs = kustomize("deploy/base");
    let sa = find(&docs, "ServiceAccount", "app").expect("deploy/base has ServiceAccount app");
    assert_eq!(
        sa["automountServiceAccountToken"], false,
        "the ServiceAccount must not automount an API token"
    );
    let cm = docs
        .iter()
        .find(|d| kind(d) == "ConfigMap" && name(d).starts_with("pillion-config"))
        .expect("deploy/base generates ConfigMap pillion-config");
    let text = cm["data"]["pillion.yaml"]
        .as_str()
        .expect("pillion-config has key pillion.yaml");
    assert!(
        workloads(&docs).is_empty(),
        "deploy/base holds no workload; the overlays do"
    );
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap();
    assert!(
        !parsed["issuers"]["vault"]["vault"]["auth"]["kubernetes"].is_null(),
        "the base config logs in to Vault with kubernetes auth"
    );
    for var in ["${POD_NAMESPACE}", "${POD_IP}"] {
        assert!(text.contains(var), "the base config uses {var}");
    }
    assert_eq!(parsed["reload"]["process"].as_str(), Some("nginx"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pillion.yaml");
    std::fs::write(&file, text).unwrap();
    if let Err(e) = pillion_check(&file) {
        panic!("deploy/base/pillion.yaml fails pillion check:\n{e}");
    }
}

#[test]
fn every_overlay_builds_and_holds_together() {
    let scratch = tempfile::tempdir().unwrap();
    let mut errs = Vec::new();
    for overlay in overlay_dirs() {
        let docs = kustomize(&format!("deploy/overlays/{overlay}"));
        let w = workloads(&docs);
        if w.is_empty() {
            errs.push(format!("{overlay}: deploys no workload"));
        }
        for (what, pod) in w {
            errs.extend(check_pod(
                &docs,
                &format!("{overlay}: {what}"),
                pod,
                scratch.path(),
            ));
        }
    }
    assert!(
        errs.is_empty(),
        "{} problem(s) in deploy/overlays:\n{}",
        errs.len(),
        errs.join("\n")
    );
}

#[test]
fn native_sidecar_is_an_init_container_that_keeps_running() {
    let docs = kustomize("deploy/overlays/native-sidecar");
    let pod = only_pod(&docs, "native-sidecar");
    let sidecars = container(&pod, |c| c.is_pillion());
    assert_eq!(sidecars.len(), 1, "one pillion container");
    let p = &sidecars[0];
    assert!(p.init, "pillion is in initContainers");
    assert_eq!(
        p.v["restartPolicy"], "Always",
        "native sidecar: restartPolicy Always"
    );
    assert_eq!(p.subcommand(), Some("run"));
    assert_eq!(p.v["startupProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(p.v["livenessProbe"]["httpGet"]["path"], "/healthz");
    let apps = container(&pod, |c| !c.is_pillion());
    assert!(
        apps.iter().all(|a| !a.init),
        "the app is a regular container, started after the sidecar is ready"
    );
    assert!(
        apps.iter().any(|a| a.name() == "nginx"),
        "the sample app is nginx"
    );
}

#[test]
fn init_and_sidecar_runs_init_then_run() {
    let docs = kustomize("deploy/overlays/init-and-sidecar");
    let pod = only_pod(&docs, "init-and-sidecar");
    let inits = container(&pod, |c| c.is_pillion() && c.init);
    assert_eq!(inits.len(), 1, "one pillion init container");
    assert_eq!(inits[0].subcommand(), Some("init"));
    assert!(
        inits[0].v["restartPolicy"].is_null(),
        "a classic init container (no restartPolicy) for clusters before 1.29"
    );
    let runs = container(&pod, |c| c.is_pillion() && !c.init);
    assert_eq!(runs.len(), 1, "one pillion sidecar container");
    assert_eq!(runs[0].subcommand(), Some("run"));
    assert_eq!(runs[0].v["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        inits[0].config_path(),
        runs[0].config_path(),
        "init and run read the same configuration"
    );
}

#[test]
fn job_runs_pillion_init_only() {
    let docs = kustomize("deploy/overlays/job");
    let job = docs
        .iter()
        .find(|d| kind(d) == "Job")
        .expect("the job overlay deploys a Job");
    let pod = &job["spec"]["template"]["spec"];
    assert!(matches!(
        pod["restartPolicy"].as_str(),
        Some("Never" | "OnFailure")
    ));
    let pillions = container(pod, |c| c.is_pillion());
    assert_eq!(pillions.len(), 1, "one pillion container");
    assert!(
        pillions[0].init && !pillions[0].is_native_sidecar(),
        "pillion init as a classic init container"
    );
    assert_eq!(pillions[0].subcommand(), Some("init"));
}

#[test]
fn cluster_issuer_overlays_carry_their_rbac_and_the_sample_config() {
    for (overlay, example, role_kind, binding_kind, resource, other) in [
        (
            "kubernetes-csr",
            "kubernetes-csr.yaml",
            "ClusterRole",
            "ClusterRoleBinding",
            "certificatesigningrequests",
            "Role",
        ),
        (
            "cert-manager",
            "cert-manager.yaml",
            "Role",
            "RoleBinding",
            "certificaterequests",
            "ClusterRole",
        ),
    ] {
        let dir = format!("deploy/overlays/{overlay}");
        let docs = kustomize(&dir);
        let pod = only_pod(&docs, overlay);
        let sa = str_of(&pod["serviceAccountName"]);
        let ns = docs
            .iter()
            .find(|d| kind(d) == "Deployment")
            .and_then(|d| d["metadata"]["namespace"].as_str())
            .unwrap_or_else(|| {
                panic!("{overlay}: the Deployment has a namespace (the RBAC is bound in it)")
            });

        let roles: Vec<&Value> = docs.iter().filter(|d| kind(d) == role_kind).collect();
        assert_eq!(roles.len(), 1, "{overlay}: one {role_kind}");
        let role = roles[0];
        let verbs: BTreeSet<&str> = list(&role["rules"])
            .iter()
            .filter(|r| list(&r["resources"]).iter().any(|x| x == resource))
            .flat_map(|r| list(&r["verbs"]).iter().map(str_of))
            .collect();
        for v in ["create", "get", "list", "watch", "delete"] {
            assert!(
                verbs.contains(v),
                "{overlay}: {role_kind} lets pillion {v} {resource}"
            );
        }
        assert!(
            !list(&role["rules"]).iter().any(|r| list(&r["verbs"])
                .iter()
                .any(|v| v == "*" || v == "approve" || v == "update")),
            "{overlay}: pillion only requests; it must not approve, update or use wildcards"
        );
        let bindings: Vec<&Value> = docs.iter().filter(|d| kind(d) == binding_kind).collect();
        assert_eq!(bindings.len(), 1, "{overlay}: one {binding_kind}");
        let b = bindings[0];
        assert_eq!(
            b["roleRef"]["name"], role["metadata"]["name"],
            "{overlay}: the binding names the role"
        );
        assert!(
            list(&b["subjects"])
                .iter()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == ns),
            "{overlay}: the binding's subject is ServiceAccount {ns}/{sa}: {b}"
        );
        if role_kind == "Role" {
            assert_eq!(
                role["metadata"]["namespace"], ns,
                "{overlay}: the Role is in the pod's namespace"
            );
        }
        assert!(
            !docs
                .iter()
                .any(|d| kind(d) == other && name(d).starts_with("pillion")),
            "{overlay}: carries the other issuer's {other}, which it does not need"
        );

        // The overlay's configuration is the documented sample, byte for byte.
        let sample =
            std::fs::read_to_string(Path::new(REPO).join("deploy/examples").join(example)).unwrap();
        let copy =
            std::fs::read_to_string(Path::new(REPO).join(&dir).join("pillion.yaml")).unwrap();
        assert_eq!(
            copy, sample,
            "{dir}/pillion.yaml must equal deploy/examples/{example}"
        );
    }
}

#[test]
fn two_namespaces_do_not_overwrite_each_others_cluster_bindings() {
    // Two teams deploy the same overlay, each into its own namespace, in one cluster. Namespaced
    // objects cannot collide; cluster-scoped ones (the CSR ClusterRole and ClusterRoleBinding)
    // have one name per cluster, and applying a second object of the same name replaces the first.
    let namespaces = ["team-a", "team-b"];
    let mut errs = Vec::new();
    let mut bindings_seen = 0;
    for overlay in overlay_dirs() {
        let builds: Vec<(&str, Vec<Value>)> = namespaces
            .iter()
            .map(|ns| (*ns, kustomize_into_namespace(&overlay, ns)))
            .collect();
        for (ns, docs) in &builds {
            for d in docs.iter().filter(|d| !is_cluster_scoped(d)) {
                assert_eq!(
                    d["metadata"]["namespace"],
                    *ns,
                    "{overlay} built for {ns}: {} {} lands in another namespace",
                    kind(d),
                    name(d)
                );
            }
            bindings_seen += docs
                .iter()
                .filter(|d| kind(d) == "ClusterRoleBinding")
                .count();
        }
        let views: Vec<(&str, &[Value])> = builds
            .iter()
            .map(|(ns, docs)| (*ns, docs.as_slice()))
            .collect();
        errs.extend(cluster_scoped_clashes(&overlay, &views));
    }
    assert!(
        bindings_seen >= namespaces.len(),
        "the kubernetes-csr overlay carries a ClusterRoleBinding in every namespace it is built for"
    );
    assert!(
        errs.is_empty(),
        "{} problem(s) when one overlay is deployed into two namespaces:\n{}",
        errs.len(),
        errs.join("\n")
    );

    // Built as it is (`kubectl apply -k deploy/overlays/kubernetes-csr`), the names follow the
    // overlay's own namespace.
    let docs = kustomize("deploy/overlays/kubernetes-csr");
    for k in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(
            find(&docs, k, "pillion-csr-requester-default").is_some(),
            "kubernetes-csr (namespace: default) builds {k} pillion-csr-requester-default"
        );
    }
}

#[test]
fn sample_configs_pass_pillion_check() {
    let dir = Path::new(REPO).join("deploy/examples");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/examples exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    found.sort();
    for e in EXAMPLES {
        assert!(
            found.iter().any(|f| f.ends_with(e)),
            "deploy/examples/{e} is missing"
        );
    }
    let mut errs = Vec::new();
    for file in &found {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.lines()
                .filter(|l| l.trim_start().starts_with('#'))
                .count()
                >= 3,
            "{} explains itself in comments",
            file.display()
        );
        if let Err(e) = pillion_check(file) {
            errs.push(e);
        }
    }
    assert!(
        errs.is_empty(),
        "sample configurations fail pillion check:\n\n{}",
        errs.join("\n\n")
    );
}

#[test]
fn the_check_rule_rejects_configuration_errors() {
    // The tolerance for missing files must not let a bad field through.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "outputDir: /var/run/pillion\nissuers:\n  ca:\n    localCa: {certFile: /nonexistent/ca.crt, keyFile: /nonexistent/ca.key}\ncertificates:\n  - name: web\n    dnsNames: [web]\n    colour: blue\n",
    )
    .unwrap();
    assert!(pillion_check(&bad).is_err(), "an unknown field must fail");
    let missing = dir.path().join("missing.yaml");
    std::fs::write(
        &missing,
        "outputDir: /var/run/pillion\nissuers:\n  ca:\n    localCa: {certFile: /nonexistent/ca.crt, keyFile: /nonexistent/ca.key}\ncertificates:\n  - name: web\n    dnsNames: [web]\n",
    )
    .unwrap();
    if let Err(e) = pillion_check(&missing) {
        panic!("a configuration whose only problem is a missing CA file is accepted:\n{e}");
    }
}

#[test]
fn the_injector_manifests_build_and_name_each_other() {
    let docs = kustomize("deploy/inject");
    let webhook = docs
        .iter()
        .find(|d| kind(d) == "MutatingWebhookConfiguration")
        .expect("deploy/inject has a MutatingWebhookConfiguration");
    let hook = &webhook["webhooks"][0];
    assert_eq!(
        hook["failurePolicy"], "Fail",
        "failurePolicy is chosen and documented"
    );
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(
        hook["namespaceSelector"]["matchLabels"]["pillion.dev/inject"], "enabled",
        "only namespaces that opt in"
    );
    assert!(
        hook["clientConfig"]["caBundle"].is_null(),
        "pillion sets the caBundle"
    );
    let service = &hook["clientConfig"]["service"];
    assert_eq!(service["namespace"], "pillion-system");
    assert_eq!(service["path"], "/mutate");
    let svc = find(&docs, "Service", str_of(&service["name"])).expect("the webhook's Service");
    assert_eq!(svc["metadata"]["namespace"], "pillion-system");

    let deployment = find(&docs, "Deployment", "pillion-inject").expect("the injector");
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<&str> = list(&c["args"]).iter().map(str_of).collect();
    assert_eq!(args[0], "inject");
    let configuration = format!("--webhook-configuration={}", name(webhook));
    assert!(args.contains(&configuration.as_str()), "{args:?}");
    // The Service's DNS name is in the certificate the API server checks.
    assert!(
        args.contains(&"--dns-name=pillion-inject.$(POD_NAMESPACE).svc"),
        "{args:?}"
    );
    assert_eq!(svc["metadata"]["name"], "pillion-inject");
    let image = list(&c["env"])
        .iter()
        .find(|e| e["name"] == "PILLION_INJECT_IMAGE")
        .expect("PILLION_INJECT_IMAGE")["value"]
        .clone();
    assert_eq!(
        image, c["image"],
        "the injected image is the injector's own"
    );
    assert_eq!(pod["serviceAccountName"], "pillion-inject");

    // RBAC: get and update on this webhook configuration only.
    let role = find(&docs, "ClusterRole", "pillion-inject").expect("ClusterRole");
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"], "resourceNames": [name(webhook)],
            "verbs": ["get", "update"]}])
    );
    let binding = find(&docs, "ClusterRoleBinding", "pillion-inject").expect("binding");
    assert_eq!(binding["subjects"][0]["namespace"], "pillion-system");
    assert_eq!(binding["subjects"][0]["name"], "pillion-inject");
}

#[test]
fn the_sidecar_component_adds_what_the_overlay_writes() {
    // The overlay's Deployment without pillion, labelled for the Component.
    let overlay = kustomize("deploy/overlays/native-sidecar");
    let mut deployment = find(&overlay, "Deployment", "app").unwrap().clone();
    let want = deployment["spec"]["template"]["spec"].clone();
    let spec = &mut deployment["spec"]["template"]["spec"];
    spec.as_object_mut().unwrap().remove("initContainers");
    spec.as_object_mut()
        .unwrap()
        .remove("shareProcessNamespace");
    spec["volumes"]
        .as_array_mut()
        .unwrap()
        .retain(|v| v["name"] != "pillion-out" && v["name"] != "pillion-config");
    deployment["metadata"]["labels"]["pillion.dev/sidecar"] = "true".into();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.json"), deployment.to_string()).unwrap();
    std::fs::write(
        dir.path().join("pillion.yaml"),
        "outputDir: /var/run/pillion\n",
    )
    .unwrap();
    let component = relative_path(
        dir.path(),
        &Path::new(REPO).join("deploy/components/native-sidecar"),
    );
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "resources: [app.json]\ncomponents: [{}]\nimages: [{{name: pillion, newName: registry.example.com/pillion, newTag: 0.1.0}}]\n\
             configMapGenerator: [{{name: pillion-config, files: [pillion.yaml]}}]\n",
            component.display()
        ),
    )
    .unwrap();
    let docs = kustomize_at(dir.path(), "(app + components/native-sidecar)");
    let got = &find(&docs, "Deployment", "app").unwrap()["spec"]["template"]["spec"];
    let mut want_sidecar = want["initContainers"][0].clone();
    // The overlay's sample also logs in to Vault; the Component mounts only what every pod needs.
    want_sidecar["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["name"] == "pillion-out" || m["name"] == "pillion-config");
    assert_eq!(got["initContainers"][0], want_sidecar);
    assert_eq!(got["shareProcessNamespace"], true);
    let volume = |spec: &Value, n: &str| {
        list(&spec["volumes"])
            .iter()
            .find(|v| v["name"] == n)
            .cloned()
    };
    assert_eq!(volume(got, "pillion-out"), volume(&want, "pillion-out"));
    let config = volume(got, "pillion-config").unwrap();
    assert!(
        str_of(&config["configMap"]["name"]).starts_with("pillion-config-"),
        "the generated ConfigMap's hashed name: {config}"
    );
}
