//! A real Kubernetes control plane for the tests: etcd and kube-apiserver built from source by
//! `scripts/testbed.sh` (pinned in `testbed/go.mod`), started on loopback ports with a cluster CA
//! made by openssl, a service-account issuer and signing key, RBAC authorization, and an admin
//! who authenticates with a client certificate (group system:masters). Tests get a kubeconfig for
//! the admin and, through the TokenRequest API, one for any service account; the RBAC they apply
//! is what the real authorizer enforces.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use super::*;

/// How long the control plane may take to become ready.
const START_DEADLINE: Duration = Duration::from_secs(90);

/// The service-account issuer and default audience of the test cluster.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

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

/// A running etcd and kube-apiserver; stopped on drop.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    /// The API server's HTTPS port on 127.0.0.1.
    pub port: u16,
    /// The cluster CA: it signed the serving certificate and the admin's.
    pub ca_cert: PathBuf,
    /// A kubeconfig for the admin (client certificate, group system:masters).
    #[allow(dead_code)]
    pub admin_kubeconfig: PathBuf,
    etcd: Mutex<Option<Child>>,
    apiserver: Mutex<Option<Child>>,
    /// How the API server was started, to start it again.
    apiserver_cmd: Mutex<Command>,
}

/// Starts `cmd` with its output appended to `<name>.log` and `<name>.err` in `dir`.
fn spawn_logged(cmd: &mut Command, dir: &Path, name: &str) -> Child {
    let open = |file: String| {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(file))
            .expect("open a log")
    };
    cmd.stdout(open(format!("{name}.log")))
        .stderr(open(format!("{name}.err")))
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"))
}

impl ControlPlane {
    pub fn start() -> ControlPlane {
        let bin = testbed_dir();
        let dir = tempfile::tempdir().expect("control plane dir");
        let d = dir.path();
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

        let (client, peer, port) = (free_port(), free_port(), free_port());
        let log = |name: &str| fs::File::create(d.join(name)).expect("create a log");
        let etcd = Command::new(bin.join("etcd"))
            .args([
                "--name",
                "default",
                "--log-level",
                "warn",
                "--unsafe-no-fsync",
            ])
            .arg("--data-dir")
            .arg(d.join("etcd-data"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
            .stdin(Stdio::null())
            .stdout(log("etcd.log"))
            .stderr(log("etcd.err"))
            .spawn()
            .expect("start etcd");
        let p = |name: &str| d.join(name).display().to_string();
        let mut apiserver_cmd = Command::new(bin.join("kube-apiserver"));
        apiserver_cmd
            .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={port}"))
            .arg(format!("--tls-cert-file={}", p("serving.crt")))
            .arg(format!("--tls-private-key-file={}", p("serving.key")))
            .arg(format!("--client-ca-file={}", p("ca.crt")))
            .arg(format!("--service-account-issuer={ISSUER}"))
            .arg(format!("--api-audiences={ISSUER}"))
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p("sa.key")
            ))
            .args([
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16",
                // Loopback may not be advertised unless nothing reconciles the endpoint.
                "--endpoint-reconciler-type=none",
            ])
            .arg(format!("--cert-dir={}", p("apiserver-certs")))
            .stdin(Stdio::null());
        let apiserver = spawn_logged(&mut apiserver_cmd, d, "apiserver");
        let admin_kubeconfig = d.join("admin.kubeconfig");
        let plane = ControlPlane {
            port,
            ca_cert: d.join("ca.crt"),
            admin_kubeconfig: admin_kubeconfig.clone(),
            etcd: Mutex::new(Some(etcd)),
            apiserver: Mutex::new(Some(apiserver)),
            apiserver_cmd: Mutex::new(apiserver_cmd),
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

    /// Kills the API server and starts it again (etcd keeps every object), waiting until it is
    /// ready.
    pub fn restart_apiserver(&self) {
        if let Some(mut c) = self.apiserver.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let child = spawn_logged(
            &mut self.apiserver_cmd.lock().unwrap(),
            self.dir.path(),
            "apiserver",
        );
        *self.apiserver.lock().unwrap() = Some(child);
        self.wait_ready();
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
        self.dir.path().join(name)
    }

    /// A kubeconfig for this cluster with `user` (YAML lines under `user:`).
    fn kubeconfig(&self, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    {user}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: u\n    namespace: default\ncurrent-context: test\n",
            self.port,
            b64(&fs::read(self.path("ca.crt")).unwrap())
        )
    }

    /// One request as the admin (curl with the client certificate): the JSON answer, or the
    /// status code and body of a failure.
    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", method, "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(self.path("ca.crt"))
            .arg("--cert")
            .arg(self.path("admin.crt"))
            .arg("--key")
            .arg(self.path("admin.key"))
            .args(["-H", "Content-Type: application/json"]);
        // The body goes through a file: a CRD is larger than an argument may be.
        let body_file = body.map(|body| {
            let file = self.path(&format!("body-{}.json", fastrand::u64(..)));
            fs::write(&file, body.to_string()).unwrap();
            cmd.arg("--data-binary").arg(format!("@{}", file.display()));
            file
        });
        cmd.arg(format!("https://127.0.0.1:{}{path}", self.port));
        let ran = run_bounded(&mut cmd, COMMAND_DEADLINE);
        if let Some(file) = body_file {
            let _ = fs::remove_file(file);
        }
        let out = ran.stdout.trim_end();
        let (text, code) = out.rsplit_once('\n').unwrap_or(("", out));
        match code {
            "200" | "201" => Ok(serde_json::from_str(text).unwrap_or(Value::String(text.into()))),
            _ => Err(format!("{method} {path}: {code} {text} {}", ran.stderr)),
        }
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
                other => panic!("create: {other:?} is not known here"),
            };
            if let Err(e) = self.admin("POST", &path, Some(o)) {
                assert!(e.contains(": 409 "), "{e}");
            }
        }
    }

    /// Applies the YAML documents of a file under `policies/` as the admin.
    pub fn apply_policy(&self, relative: &str) {
        let text =
            fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap();
        let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
            .filter(|v: &Value| !v.is_null())
            .collect();
        self.create(&objects);
    }

    /// Installs cert-manager's CRDs (from its release, copied by scripts/testbed.sh) and waits
    /// until the API server serves them.
    pub fn install_cert_manager_crds(&self) {
        let dir = testbed_dir().join("crds");
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).unwrap() {
            let text = fs::read_to_string(entry.unwrap().path()).unwrap();
            let crd: Value = serde_yaml_ng::from_str(&text).unwrap();
            names.push(crd["metadata"]["name"].as_str().unwrap().to_owned());
            self.create(&[crd]);
        }
        let started = Instant::now();
        for name in names {
            loop {
                let crd = self
                    .admin(
                        "GET",
                        &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"),
                        None,
                    )
                    .unwrap();
                let established = crd["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Established" && c["status"] == "True");
                if established {
                    break;
                }
                assert!(
                    started.elapsed() < START_DEADLINE,
                    "CRD {name} never Established"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
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

    /// Signs a PKCS#10 request (PEM) with the cluster CA for a day, keeping its names, as a test
    /// signer would: the certificate PEM, base64-encoded as `status.certificate` holds it.
    pub fn sign(&self, request_pem: &[u8]) -> String {
        let tag = fastrand::u64(..);
        let (csr, crt) = (format!("req-{tag}.csr"), format!("req-{tag}.crt"));
        fs::write(self.path(&csr), request_pem).unwrap();
        write(
            self.dir.path(),
            "signer.ext",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        openssl_in(
            self.dir.path(),
            &[
                "x509",
                "-req",
                "-days",
                "1",
                "-copy_extensions",
                "copyall",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                "signer.ext",
                "-out",
                &crt,
            ],
        );
        b64(&fs::read(self.path(&crt)).unwrap())
    }

    /// The cluster CA's certificate, base64-encoded as `status.ca` holds it.
    pub fn ca_b64(&self) -> String {
        b64(&fs::read(&self.ca_cert).unwrap())
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
        format!("{}\n{}", tail("apiserver.err"), tail("etcd.err"))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for child in [&self.apiserver, &self.etcd] {
            if let Some(mut c) = child.lock().unwrap().take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
