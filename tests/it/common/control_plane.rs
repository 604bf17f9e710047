//! A real Kubernetes control plane for the tests: etcd and kube-apiserver built from source by
//! `scripts/testbed.sh` (pinned in `testbed/go.mod`), started on loopback ports with a cluster CA
//! made by openssl, a service-account issuer and signing key, RBAC authorization, an admin who
//! authenticates with a client certificate (group system:masters), and an audit log that records
//! what everyone but the admin asked of the certificates, cert-manager and authentication groups,
//! bodies included: the tests' record of what pillion (and OpenBao) sent.
//!
//! One plane serves the whole test binary ([`ControlPlane::shared`]); each test takes a
//! [`Tenant`] (its own namespace, service account, signer name, audit events) and gets a
//! kubeconfig for that account through the TokenRequest API; the RBAC it applies is what the
//! real authorizer enforces. A [`Proxy`] in front of the API server makes the faults a real
//! server does not make on demand.

use std::fs;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use super::*;

/// How long the control plane may take to become ready.
const START_DEADLINE: Duration = Duration::from_secs(90);

/// The service-account issuer and default audience of the test cluster.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The CA ClusterIssuer of [`ControlPlane::start_cert_manager`]: it signs with the cluster CA.
pub const CA_CLUSTER_ISSUER: &str = "ca-issuer";

/// Who cert-manager's controllers are, in the audit log.
pub const CERT_MANAGER_USER: &str = "system:serviceaccount:cert-manager:cert-manager";

/// The directory holding `kube-apiserver` and `etcd`, built once per machine.
pub fn testbed_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed.sh");
        let ran = run_bounded(Command::new("bash").arg(script), Duration::from_secs(3600));
        assert!(
            ran.status.success(),
            "building the test control plane failed (scripts/testbed.sh)\n{}",
            ran.describe()
        );
        PathBuf::from(ran.stdout.trim())
    })
    .clone()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn openssl_in(dir: &Path, args: &[&str]) {
    let ran = run_bounded(
        Command::new("openssl").args(args).current_dir(dir),
        COMMAND_DEADLINE,
    );
    ran.assert_success();
}

/// A running etcd and kube-apiserver; stopped on drop. Each runs under a `sh` guard that kills
/// it once the guard's stdin closes, so even the shared plane (never dropped) goes away with the
/// test process.
pub struct ControlPlane {
    /// Certificates, keys, kubeconfigs, logs and etcd's data; removed when the plane stops.
    dir: PathBuf,
    /// The API server's HTTPS port on 127.0.0.1.
    pub port: u16,
    /// The cluster CA: it signed the serving certificate and the admin's.
    pub ca_cert: PathBuf,
    /// A kubeconfig for the admin (client certificate, group system:masters).
    #[allow(dead_code)]
    pub admin_kubeconfig: PathBuf,
    /// The API server's audit log (JSON lines): every request to the certificates, cert-manager
    /// and authentication groups by anyone but the admin, with its request and response bodies.
    pub audit_log: PathBuf,
    client: Admin,
    etcd: Mutex<Option<Guarded>>,
    /// etcd's client port on 127.0.0.1 (plain HTTP).
    etcd_port: u16,
    apiserver: Mutex<Option<Guarded>>,
    /// Controllers started beside it (kube-controller-manager's signer, cert-manager's).
    controllers: Mutex<Vec<Guarded>>,
    /// How the API server was started, to start it again.
    apiserver_cmd: (PathBuf, Vec<String>),
}

/// The guard: starts `$@` with its output in the files the guard's own output goes to, and kills
/// it (SIGKILL, as a crash would) when its stdin reaches end of file, then removes
/// `$PILLION_REMOVE_DIR` if set.
const GUARD_SH: &str = r#"
"$@" </dev/null &
pid=$!
while read -r _; do :; done
kill -KILL "$pid" 2>/dev/null
wait "$pid"
if [ -n "${PILLION_REMOVE_DIR:-}" ]; then rm -rf "$PILLION_REMOVE_DIR"; fi
"#;

/// A process under [`GUARD_SH`].
struct Guarded {
    guard: Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Guarded {
    /// Starts `program args` with its output appended to `<name>.log` and `<name>.err` in `dir`;
    /// `remove` is removed once it has stopped.
    fn spawn(program: &Path, args: &[String], dir: &Path, name: &str, remove: bool) -> Guarded {
        let open = |file: String| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(file))
                .expect("open a log")
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(GUARD_SH)
            .arg("sh")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(open(format!("{name}.log")))
            .stderr(open(format!("{name}.err")));
        if remove {
            cmd.env("PILLION_REMOVE_DIR", dir);
        }
        let mut guard = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdin = guard.stdin.take();
        Guarded { guard, stdin }
    }

    /// Kills the process and waits until it is gone.
    fn stop(mut self) {
        drop(self.stdin.take());
        let _ = self.guard.wait();
    }
}

impl ControlPlane {
    pub fn start() -> ControlPlane {
        ControlPlane::start_with(&[])
    }

    /// A control plane whose API server also takes `apiserver_flags`.
    pub fn start_with(apiserver_flags: &[&str]) -> ControlPlane {
        let bin = testbed_dir();
        let dir = tempfile::Builder::new()
            .prefix("pillion-control-plane-")
            .tempdir()
            .expect("control plane dir")
            .keep();
        let d = dir.as_path();
        // The cluster CA, the serving certificate, the admin's client certificate and the
        // service-account signing key.
        openssl_in(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "ca.key",
            ],
        );
        openssl_in(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=pillion-test-cluster-ca",
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                "ca.crt",
            ],
        );
        let leaf = |name: &str, subj: &str, ext: &str| {
            write(d, &format!("{name}.ext"), ext);
            openssl_in(
                d,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    &format!("{name}.key"),
                ],
            );
            openssl_in(
                d,
                &[
                    "req",
                    "-new",
                    "-key",
                    &format!("{name}.key"),
                    "-subj",
                    subj,
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl_in(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{name}.ext"),
                    "-out",
                    &format!("{name}.crt"),
                ],
            );
        };
        leaf(
            "serving",
            "/CN=kube-apiserver",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n",
        );
        leaf(
            "admin",
            "/O=system:masters/CN=pillion-test-admin",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
        openssl_in(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "sa.key",
            ],
        );
        openssl_in(d, &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);

        write(d, "audit-policy.yaml", AUDIT_POLICY);
        let (client, peer, port) = (free_port(), free_port(), free_port());
        let etcd = Guarded::spawn(
            &bin.join("etcd"),
            &[
                "--name=default".into(),
                "--log-level=warn".into(),
                "--unsafe-no-fsync".into(),
                format!("--data-dir={}", d.join("etcd-data").display()),
                format!("--listen-client-urls=http://127.0.0.1:{client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{peer}"),
            ],
            d,
            "etcd",
            true,
        );
        let p = |name: &str| d.join(name).display().to_string();
        let apiserver_args = vec![
            format!("--etcd-servers=http://127.0.0.1:{client}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", p("serving.crt")),
            format!("--tls-private-key-file={}", p("serving.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--service-account-issuer={ISSUER}"),
            format!("--api-audiences={ISSUER}"),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--authorization-mode=RBAC".into(),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            // Loopback may not be advertised unless nothing reconciles the endpoint.
            "--endpoint-reconciler-type=none".into(),
            format!("--cert-dir={}", p("apiserver-certs")),
            format!("--audit-policy-file={}", p("audit-policy.yaml")),
            format!("--audit-log-path={}", p("audit.log")),
            // Each event is written before the response is sent.
            "--audit-log-mode=blocking".into(),
        ];
        let mut apiserver_args = apiserver_args;
        apiserver_args.extend(apiserver_flags.iter().map(|f| f.to_string()));
        let apiserver_bin = bin.join("kube-apiserver");
        let apiserver = Guarded::spawn(&apiserver_bin, &apiserver_args, d, "apiserver", false);
        let admin_kubeconfig = d.join("admin.kubeconfig");
        let plane = ControlPlane {
            port,
            ca_cert: d.join("ca.crt"),
            admin_kubeconfig: admin_kubeconfig.clone(),
            audit_log: d.join("audit.log"),
            client: Admin {
                port,
                dir: d.to_path_buf(),
            },
            etcd: Mutex::new(Some(etcd)),
            etcd_port: client,
            apiserver: Mutex::new(Some(apiserver)),
            controllers: Mutex::new(Vec::new()),
            apiserver_cmd: (apiserver_bin, apiserver_args),
            dir,
        };
        fs::write(
            &admin_kubeconfig,
            plane.kubeconfig(&format!(
                "client-certificate-data: {}\n    client-key-data: {}",
                b64(&fs::read(plane.path("admin.crt")).unwrap()),
                b64(&fs::read(plane.path("admin.key")).unwrap())
            )),
        )
        .unwrap();
        plane.wait_ready();
        plane
    }

    /// The control plane of this test binary, started once and shared by every test that does not
    /// restart it or change what the whole cluster does (an admission webhook). Tests keep out of
    /// each other's way with a [`Tenant`] each: their own namespace, service account and signer
    /// name.
    pub fn shared() -> &'static ControlPlane {
        static SHARED: std::sync::OnceLock<ControlPlane> = std::sync::OnceLock::new();
        SHARED.get_or_init(ControlPlane::start)
    }

    /// Kills the API server and starts it again (etcd keeps every object), waiting until it is
    /// ready.
    pub fn restart_apiserver(&self) {
        if let Some(old) = self.apiserver.lock().unwrap().take() {
            old.stop();
        }
        let (bin, args) = &self.apiserver_cmd;
        let child = Guarded::spawn(bin, args, &self.dir, "apiserver", false);
        *self.apiserver.lock().unwrap() = Some(child);
        self.wait_ready();
    }

    /// Compacts etcd at its current revision (as the API server does every five minutes),
    /// through etcd's own JSON gateway: a watch resumed from an older resource version is then
    /// answered 410 Gone (with the API server's watch cache off, which would otherwise answer
    /// from memory). Returns the revision.
    pub fn compact_etcd(&self) -> u64 {
        let etcd = |path: &str, body: &str| {
            let ran = run_bounded(
                Command::new("curl")
                    .args(["-sS", "--fail", "-X", "POST", "-d", body])
                    .arg(format!("http://127.0.0.1:{}{path}", self.etcd_port)),
                COMMAND_DEADLINE,
            );
            ran.assert_success();
            serde_json::from_str::<Value>(&ran.stdout).unwrap()
        };
        // Any range answers with the store's revision in its header.
        let revision: u64 = etcd("/v3/kv/range", r#"{"key": "AA=="}"#)["header"]["revision"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        etcd(
            "/v3/kv/compaction",
            &format!(r#"{{"revision": "{revision}", "physical": true}}"#),
        );
        revision
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if self.admin("GET", "/readyz", None).is_ok() {
                eprintln!(
                    "control plane ready in {:.1} s (kube-apiserver on 127.0.0.1:{})",
                    started.elapsed().as_secs_f64(),
                    self.port
                );
                return;
            }
            assert!(
                started.elapsed() < START_DEADLINE,
                "the control plane did not become ready\n{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A kubeconfig for this cluster with `user` (YAML lines under `user:`).
    fn kubeconfig(&self, user: &str) -> String {
        let port = self.port;
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    {user}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: u\n    namespace: default\ncurrent-context: test\n",
            b64(&fs::read(self.path("ca.crt")).unwrap())
        )
    }

    /// One request as the admin; see [`Admin::request`].
    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        self.client.request(method, path, body)
    }

    /// The admin's client, for a test signer on another thread.
    pub fn client(&self) -> Admin {
        self.client.clone()
    }

    /// Creates `objects` (JSON) as the admin; an object that exists already is left.
    pub fn create(&self, objects: &[Value]) {
        for o in objects {
            let kind = o["kind"].as_str().unwrap();
            let ns = o["metadata"]["namespace"].as_str();
            let path = match (kind, ns) {
                ("Namespace", _) => "/api/v1/namespaces".to_owned(),
                ("ServiceAccount", Some(ns)) => format!("/api/v1/namespaces/{ns}/serviceaccounts"),
                ("ClusterRole", _) => "/apis/rbac.authorization.k8s.io/v1/clusterroles".into(),
                ("CustomResourceDefinition", _) => {
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions".into()
                }
                ("ClusterRoleBinding", _) => {
                    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into()
                }
                ("Role", Some(ns)) => {
                    format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles")
                }
                ("RoleBinding", Some(ns)) => {
                    format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings")
                }
                ("Secret", Some(ns)) => format!("/api/v1/namespaces/{ns}/secrets"),
                ("ClusterIssuer", _) => "/apis/cert-manager.io/v1/clusterissuers".into(),
                ("Issuer", Some(ns)) => format!("/apis/cert-manager.io/v1/namespaces/{ns}/issuers"),
                other => panic!("create: {other:?} is not known here"),
            };
            if let Err(e) = self.admin("POST", &path, Some(o)) {
                assert!(e.contains(": 409 "), "{e}");
            }
        }
    }

    /// Applies the YAML documents of a file under `policies/` as the admin.
    pub fn apply_policy(&self, relative: &str) {
        self.apply_policy_text(
            &fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap(),
        );
    }

    fn apply_policy_text(&self, text: &str) {
        let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(text)
            .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
            .filter(|v: &Value| !v.is_null())
            .collect();
        self.create(&objects);
    }

    /// Installs cert-manager's CRDs (from its release, copied by scripts/testbed.sh) and waits
    /// until the API server serves them; once per plane.
    pub fn install_cert_manager_crds(&self) {
        let dir = testbed_dir().join("crds");
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).unwrap() {
            let text = fs::read_to_string(entry.unwrap().path()).unwrap();
            let crd: Value = serde_yaml_ng::from_str(&text).unwrap();
            names.push(crd["metadata"]["name"].as_str().unwrap().to_owned());
            self.create(&[crd]);
        }
        for name in names {
            self.wait_condition(
                &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"),
                "Established",
            );
        }
    }

    /// Runs kube-controller-manager's certificate signer (`--controllers=csrsigning`, the
    /// signer of the `kubernetes.io/` signerNames) with the cluster CA, capping every lifetime
    /// at `max_lifetime` (`--cluster-signing-duration`). It signs approved requests only;
    /// approving is left to the tests, as to a cluster's administrators. Once per plane.
    pub fn start_kube_controller_manager(&self, max_lifetime: &str) {
        let p = |name: &str| self.path(name).display().to_string();
        let controller = Guarded::spawn(
            &testbed_dir().join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", p("admin.kubeconfig")),
                "--controllers=csrsigning".into(),
                format!("--cluster-signing-cert-file={}", p("ca.crt")),
                format!("--cluster-signing-key-file={}", p("ca.key")),
                format!("--cluster-signing-duration={max_lifetime}"),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
            ],
            &self.dir,
            "kube-controller-manager",
            false,
        );
        self.controllers.lock().unwrap().push(controller);
    }

    /// Runs cert-manager's own controllers for the CA issuer (built by scripts/testbed.sh from
    /// cert-manager's main module, `testbed/cert-manager/main.go`) as the service account
    /// `cert-manager/cert-manager` (cluster-admin; its requests are in the audit log as
    /// [`CERT_MANAGER_USER`]), with the ClusterIssuer [`CA_CLUSTER_ISSUER`] signing with the
    /// cluster CA; returns once that issuer is Ready. Approval is left to the tests, as in a
    /// cluster where approver-policy replaces cert-manager's own approver. Once per plane.
    pub fn start_cert_manager(&self) {
        self.install_cert_manager_crds();
        self.create(&[
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "cert-manager"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "cert-manager", "namespace": "cert-manager"}]}),
        ]);
        let kubeconfig = self.service_account_kubeconfig("cert-manager", "cert-manager");
        self.create_ca_issuer("cert-manager", None);
        let controller = Guarded::spawn(
            &testbed_dir().join("cert-manager-controller"),
            &[
                format!("-kubeconfig={}", kubeconfig.display()),
                "-cluster-resource-namespace=cert-manager".into(),
            ],
            &self.dir,
            "cert-manager",
            false,
        );
        self.controllers.lock().unwrap().push(controller);
        self.wait_condition(
            &format!("/apis/cert-manager.io/v1/clusterissuers/{CA_CLUSTER_ISSUER}"),
            "Ready",
        );
    }

    /// The Secret `ca-key-pair` in `namespace` holding the cluster CA, and a CA issuer using it:
    /// a namespaced Issuer named `issuer` in `namespace`, or (None) the ClusterIssuer
    /// [`CA_CLUSTER_ISSUER`]. Returns once cert-manager has made a namespaced one Ready.
    pub fn create_ca_issuer(&self, namespace: &str, issuer: Option<&str>) {
        let data = |name: &str| b64(&fs::read(self.path(name)).unwrap());
        self.create(&[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": "ca-key-pair", "namespace": namespace},
                "data": {"tls.crt": data("ca.crt"), "tls.key": data("ca.key"), "ca.crt": data("ca.crt")}}),
        ]);
        let spec = json!({"ca": {"secretName": "ca-key-pair"}});
        match issuer {
            None => self.create(&[
                json!({"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
                "metadata": {"name": CA_CLUSTER_ISSUER}, "spec": spec}),
            ]),
            Some(name) => {
                self.create(
                    &[json!({"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
                    "metadata": {"name": name, "namespace": namespace}, "spec": spec})],
                );
                self.wait_condition(
                    &format!("/apis/cert-manager.io/v1/namespaces/{namespace}/issuers/{name}"),
                    "Ready",
                );
            }
        }
    }

    /// Waits until the object at `path` has the condition `kind` with status True.
    fn wait_condition(&self, path: &str, kind: &str) {
        wait_for_ctx(
            &format!("{path} to be {kind}"),
            START_DEADLINE,
            || {
                format!(
                    "{:#}\n{}",
                    self.admin("GET", path, None).unwrap_or_default(),
                    self.describe()
                )
            },
            || {
                let object = self.admin("GET", path, None).unwrap_or_default();
                object["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == kind && c["status"] == "True")
            },
        );
    }

    /// A kubeconfig for the service account `namespace/name` (created if missing) holding a token
    /// from the TokenRequest API for `audience`, valid an hour.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        self.create(&[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}),
        ]);
        let token = self.token(namespace, name, ISSUER);
        let path = self.path(&format!("{namespace}-{name}.kubeconfig"));
        fs::write(&path, self.kubeconfig(&format!("token: {token}"))).unwrap();
        path
    }

    /// A projected-style token of `namespace/name` for `audience` (TokenRequest).
    pub fn token(&self, namespace: &str, name: &str, audience: &str) -> String {
        let answer = self
            .admin(
                "POST",
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"),
                Some(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": [audience], "expirationSeconds": 3600}})),
            )
            .unwrap_or_else(|e| panic!("TokenRequest: {e}"));
        answer["status"]["token"].as_str().unwrap().to_owned()
    }

    /// A new [`Tenant`]: a namespace of its own with a service account `app` and no RBAC yet.
    pub fn tenant(&self) -> Tenant<'_> {
        let namespace = format!("t-{:08x}", fastrand::u32(..));
        let kubeconfig = self.service_account_kubeconfig(&namespace, "app");
        Tenant {
            plane: self,
            user: format!("system:serviceaccount:{namespace}:app"),
            signer: format!("example.com/{namespace}"),
            kubeconfig,
            namespace,
        }
    }

    /// The audit events (stages ResponseStarted and ResponseComplete) of requests by `user`, in
    /// the order the API server wrote them.
    pub fn audit_events(&self, user: &str) -> Vec<Value> {
        // Tests poll this while the shared log grows: only `user`'s lines are parsed.
        let needle = format!("\"username\":{}", Value::String(user.to_owned()));
        fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["user"]["username"] == user)
            .collect()
    }

    pub fn describe(&self) -> String {
        let tail = |name: &str| {
            let text = fs::read_to_string(self.path(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().rev().take(30).collect();
            format!(
                "--- {name} (last 30 lines) ---\n{}",
                lines.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        };
        let mut text = format!("{}\n{}", tail("apiserver.err"), tail("etcd.err"));
        for controller in ["cert-manager", "kube-controller-manager"] {
            if self.path(&format!("{controller}.err")).exists() {
                text.push_str(&format!("\n{}", tail(&format!("{controller}.err"))));
            }
        }
        text
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for c in self.controllers.lock().unwrap().drain(..) {
            c.stop();
        }
        for child in [&self.apiserver, &self.etcd] {
            if let Some(c) = child.lock().unwrap().take() {
                c.stop();
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// What the API server audits: requests to the groups pillion and OpenBao use, by anyone but the
/// admin (whose test signers poll), with bodies; nothing else.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    users: [pillion-test-admin]
  - level: RequestResponse
    resources:
      - group: certificates.k8s.io
      - group: cert-manager.io
      - group: authentication.k8s.io
  - level: None
";

/// The admin's client: requests with the admin's client certificate (curl) and signing with the
/// cluster CA (openssl), usable from any thread.
#[derive(Clone)]
pub struct Admin {
    port: u16,
    dir: PathBuf,
}

impl Admin {
    /// One request as the admin (curl with the client certificate): the JSON answer, or the
    /// status code and body of a failure.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let file = |name: &str| self.dir.join(name);
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", method, "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(file("ca.crt"))
            .arg("--cert")
            .arg(file("admin.crt"))
            .arg("--key")
            .arg(file("admin.key"))
            .args(["-H", "Content-Type: application/json"]);
        // The body goes through a file: a CRD is larger than an argument may be.
        let body_file = body.map(|body| {
            let path = file(&format!("body-{}.json", fastrand::u64(..)));
            fs::write(&path, body.to_string()).unwrap();
            cmd.arg("--data-binary").arg(format!("@{}", path.display()));
            path
        });
        cmd.arg(format!("https://127.0.0.1:{}{path}", self.port));
        let ran = run_bounded(&mut cmd, COMMAND_DEADLINE);
        if let Some(path) = body_file {
            let _ = fs::remove_file(path);
        }
        let out = ran.stdout.trim_end();
        let (text, code) = out.rsplit_once('\n').unwrap_or(("", out));
        match code {
            "200" | "201" => Ok(serde_json::from_str(text).unwrap_or(Value::String(text.into()))),
            _ => Err(format!("{method} {path}: {code} {text} {}", ran.stderr)),
        }
    }

    /// Signs a PKCS#10 request (PEM) with the cluster CA, keeping its names, as a signer would:
    /// for a day (`openssl x509 -req`), or from now for `lifetime` (`openssl ca`, which takes
    /// exact dates, as a signer capping lifetimes does). The certificate PEM, base64-encoded as
    /// `status.certificate` holds it.
    pub fn sign(&self, request_pem: &[u8], lifetime: Option<Duration>) -> String {
        let work = tempfile::tempdir_in(&self.dir).expect("a signing dir");
        let w = work.path();
        fs::write(w.join("req.csr"), request_pem).unwrap();
        write(
            w,
            "signer.ext",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        let ca = self.dir.join("ca.crt").display().to_string();
        let ca_key = self.dir.join("ca.key").display().to_string();
        match lifetime {
            None => openssl_in(
                w,
                &[
                    "x509",
                    "-req",
                    "-days",
                    "1",
                    "-copy_extensions",
                    "copyall",
                    "-in",
                    "req.csr",
                    "-CA",
                    &ca,
                    "-CAkey",
                    &ca_key,
                    "-set_serial",
                    &format!("0x{:016x}", fastrand::u64(..)),
                    "-extfile",
                    "signer.ext",
                    "-out",
                    "req.crt",
                ],
            ),
            Some(lifetime) => {
                write(w, "index.txt", "");
                write(w, "serial", &format!("{:016X}\n", fastrand::u64(..)));
                write(
                    w,
                    "ca.cnf",
                    &format!(
                        "[ca]\ndefault_ca = test\n[test]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\nserial = {d}/serial\ncertificate = {ca}\nprivate_key = {ca_key}\ndefault_md = sha256\npolicy = any\ncopy_extensions = copyall\nunique_subject = no\n[any]\ncommonName = optional\n",
                        d = w.display()
                    ),
                );
                // UTCTime, as `openssl ca -startdate/-enddate` take it: YYMMDDHHMMSSZ.
                let utc = |t: std::time::SystemTime| {
                    let text = humantime::format_rfc3339_seconds(t).to_string();
                    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
                    format!("{}Z", &digits[2..])
                };
                let now = std::time::SystemTime::now();
                openssl_in(
                    w,
                    &[
                        "ca",
                        "-batch",
                        "-notext",
                        "-config",
                        "ca.cnf",
                        "-in",
                        "req.csr",
                        "-startdate",
                        &utc(now),
                        "-enddate",
                        &utc(now + lifetime),
                        "-extfile",
                        "signer.ext",
                        "-out",
                        "req.crt",
                    ],
                );
            }
        }
        b64(&fs::read(w.join("req.crt")).unwrap())
    }
}

/// One test's corner of a shared [`ControlPlane`]: a namespace of its own, its service account
/// `app` (whose requests the audit log names as [`Tenant::user`]), a kubeconfig for that account,
/// and a signer name no other test uses.
pub struct Tenant<'a> {
    pub plane: &'a ControlPlane,
    pub namespace: String,
    /// `system:serviceaccount:<namespace>:app`.
    pub user: String,
    /// A kubeconfig for `app` with a token from the TokenRequest API.
    pub kubeconfig: PathBuf,
    /// `example.com/<namespace>`.
    pub signer: String,
}

impl Tenant<'_> {
    /// Applies a file under `policies/` for this tenant's `app` (its namespace in place of
    /// `default`, and its own binding names).
    pub fn apply_policy(&self, relative: &str) {
        let text =
            fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap();
        let ns = &self.namespace;
        self.plane.apply_policy_text(
            &text
                .replace("namespace: default", &format!("namespace: {ns}"))
                .replace(
                    "pillion-csr-requester-default",
                    &format!("pillion-csr-requester-{ns}"),
                ),
        );
    }

    /// Grants `app` exactly `verbs` on `resource` of API group `group`: cluster-wide (a
    /// ClusterRole) when `cluster`, else in its namespace (a Role).
    pub fn grant(&self, cluster: bool, group: &str, resource: &str, verbs: &[&str]) {
        let ns = &self.namespace;
        let name = format!("pillion-test-{ns}");
        let (role, binding, meta) = if cluster {
            ("ClusterRole", "ClusterRoleBinding", json!({"name": name}))
        } else {
            (
                "Role",
                "RoleBinding",
                json!({"name": name, "namespace": ns}),
            )
        };
        self.plane.create(&[
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": role, "metadata": meta,
                "rules": [{"apiGroups": [group], "resources": [resource], "verbs": verbs}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": binding, "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role, "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": ns}]}),
        ]);
    }

    /// What a pod of this tenant's `app` finds under `/run`: writes
    /// `secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}` into `run_dir` (a token from
    /// the TokenRequest API, the cluster CA, the namespace), as the kubelet projects them.
    pub fn service_account_files(&self, run_dir: &Path) {
        let dir = run_dir.join("secrets/kubernetes.io/serviceaccount");
        write(
            &dir,
            "token",
            &self.plane.token(&self.namespace, "app", ISSUER),
        );
        write(
            &dir,
            "ca.crt",
            &fs::read_to_string(&self.plane.ca_cert).unwrap(),
        );
        write(&dir, "namespace", &self.namespace);
    }

    /// The audit events of this tenant's requests.
    pub fn events(&self) -> Vec<Value> {
        self.plane.audit_events(&self.user)
    }

    /// A kubeconfig for `app` that reaches the API server through `proxy`.
    pub fn kubeconfig_through(&self, proxy: &Proxy) -> PathBuf {
        let text = fs::read_to_string(&self.kubeconfig).unwrap().replace(
            &format!("https://127.0.0.1:{}", self.plane.port),
            &format!("https://127.0.0.1:{}", proxy.port),
        );
        let path = self
            .plane
            .path(&format!("{}-proxied.kubeconfig", self.namespace));
        fs::write(&path, text).unwrap();
        path
    }

    pub fn describe(&self) -> String {
        let events: Vec<String> = self
            .events()
            .iter()
            .map(|e| {
                format!(
                    "  {} {} {} -> {}",
                    e["stage"].as_str().unwrap_or(""),
                    e["verb"].as_str().unwrap_or(""),
                    e["requestURI"].as_str().unwrap_or(""),
                    e["responseStatus"]["code"]
                )
            })
            .collect();
        format!(
            "--- the API server's audit log for {} ---\n{}\n{}",
            self.user,
            events.join("\n"),
            self.plane.describe()
        )
    }
}

/// A TCP proxy in front of the API server, for the faults a real server does not produce on
/// demand: it being unreachable (a proxy started down refuses connections) until [`Proxy::up`],
/// and connections cut mid-way ([`Proxy::cut`]). TLS passes through untouched (the serving
/// certificate names 127.0.0.1).
pub struct Proxy {
    pub port: u16,
    state: Arc<ProxyState>,
    accept: Option<std::thread::JoinHandle<()>>,
}

struct ProxyState {
    target: u16,
    port: u16,
    up: AtomicBool,
    listening: AtomicBool,
    stop: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    /// A proxy to `plane` on a free loopback port, accepting connections when `up`.
    pub fn start(plane: &ControlPlane, up: bool) -> Proxy {
        let state = Arc::new(ProxyState {
            target: plane.port,
            port: free_port(),
            up: AtomicBool::new(up),
            listening: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let accept = {
            let state = state.clone();
            std::thread::spawn(move || state.accept_loop())
        };
        let proxy = Proxy {
            port: state.port,
            state,
            accept: Some(accept),
        };
        proxy.wait_listening(up);
        proxy
    }

    /// Listens again on the same port.
    pub fn up(&self) {
        self.state.up.store(true, Ordering::SeqCst);
        self.wait_listening(true);
    }

    /// Cuts every open connection (both directions shut down); new ones are still accepted.
    /// Returns how many there were.
    pub fn cut(&self) -> usize {
        let open = std::mem::take(&mut *self.state.open.lock().unwrap());
        for stream in &open {
            let _ = stream.shutdown(Shutdown::Both);
        }
        open.len()
    }

    fn wait_listening(&self, want: bool) {
        wait_for(
            &format!("the proxy to be listening={want}"),
            START_DEADLINE,
            || self.state.listening.load(Ordering::SeqCst) == want,
        );
    }
}

impl ProxyState {
    fn accept_loop(&self) {
        let mut listener: Option<TcpListener> = None;
        while !self.stop.load(Ordering::SeqCst) {
            let up = self.up.load(Ordering::SeqCst);
            if up && listener.is_none() {
                match TcpListener::bind(("127.0.0.1", self.port)) {
                    Ok(l) => {
                        l.set_nonblocking(true).unwrap();
                        listener = Some(l);
                    }
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                }
            } else if !up {
                listener = None;
            }
            self.listening.store(listener.is_some(), Ordering::SeqCst);
            let accepted = listener.as_ref().map(TcpListener::accept);
            match accepted {
                Some(Ok((client, _))) => self.forward(client),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Pipes `client` to the API server, both ways, until either side or [`Proxy::cut`] ends it.
    fn forward(&self, client: TcpStream) {
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect(("127.0.0.1", self.target)) else {
            return;
        };
        let pipe = |mut from: TcpStream, mut to: TcpStream| {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
            });
        };
        let mut open = self.open.lock().unwrap();
        open.push(client.try_clone().unwrap());
        open.push(server.try_clone().unwrap());
        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
        pipe(server, client);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}
