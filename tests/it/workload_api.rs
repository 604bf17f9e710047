//! The SPIFFE Workload API served by pillion, checked by a real SPIFFE client: PyPI's `spiffe`
//! (py-spiffe) fetches the X.509-SVID (its ID, chain and key) and the trust bundle from pillion's
//! socket and, streaming, sees each rotation; a request without the `workload.spiffe.io` header is
//! refused with InvalidArgument; the JWT methods answer Unimplemented. go-spiffe (the reference Go
//! library, built from tests/go-spiffe-client with the Go toolchain) does the same. go-spiffe (the reference Go
//! library, built from tests/go-spiffe-client with the Go toolchain) does the same.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::fixture::Fixture;
use common::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// py-spiffe against `socket` for `seconds`: one JSON object on stdout.
const CLIENT: &str = r#"
import json, sys, threading, time
import grpc
from cryptography.hazmat.primitives import serialization
from spiffe import WorkloadApiClient, TrustDomain
from spiffe._proto import workload_pb2, workload_pb2_grpc
sock, seconds = sys.argv[1], float(sys.argv[2])
out = {}
client = WorkloadApiClient(socket_path="unix:" + sock)
ctx = client.fetch_x509_context()
svid = ctx.default_svid
out["spiffe_id"] = str(svid.spiffe_id)
out["ids"] = [str(s.spiffe_id) for s in ctx.x509_svids]
out["serial"] = "%x" % svid.leaf.serial_number
out["chain"] = len(svid.cert_chain)
pub = svid.private_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
leaf_pub = svid.leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
out["key_matches"] = pub == leaf_pub
bundle = client.fetch_x509_bundles().get_bundle_for_trust_domain(TrustDomain("example.org"))
out["bundle"] = [a.public_bytes(serialization.Encoding.PEM).decode() for a in bundle.x509_authorities]
serials, lock = [], threading.Lock()
def ok(c):
    with lock:
        serials.append("%x" % c.default_svid.leaf.serial_number)
errors = []
handle = client.stream_x509_contexts(ok, lambda e: errors.append(repr(e)))
time.sleep(seconds)
handle.cancel()
out["streamed"] = serials
out["stream_errors"] = errors
try:
    client.fetch_jwt_svid(audience={"x"})
    out["jwt"] = "accepted"
except Exception as e:
    out["jwt"] = repr(e)
stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(grpc.insecure_channel("unix:" + sock))
try:
    next(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=5))
    out["no_header"] = "accepted"
except grpc.RpcError as e:
    out["no_header"] = "%s: %s" % (e.code().name, e.details())
client.close()
print(json.dumps(out))
"#;

fn serial_hex(cert: &Path) -> String {
    // openssl prints the serial in upper-case hex; py-spiffe's %x has no leading zeros.
    serial(cert)
        .replace(':', "")
        .to_lowercase()
        .trim_start_matches('0')
        .to_owned()
}

/// pillion serving the SVID `id` (rotated every ~4 s) and a plain certificate `web`.
struct Served {
    ca: OpensslCa,
    fx: Fixture,
    daemon: Daemon,
    socket: std::path::PathBuf,
    crt: std::path::PathBuf,
}

fn serve_svids() -> Served {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let fx = Fixture::new();
    let socket = fx.path().join("workload.sock");
    fx.write_config(&format!(
        "issuers:\n  ca:\n    localCa: {{certFile: \"{}\", keyFile: \"{}\"}}\nworkloadApi:\n  socket: \"{}\"\ncertificates:\n  - name: web\n    dnsNames: [localhost]\n    duration: 1h\n  - name: id\n    uris: [spiffe://example.org/ns/shop/sa/web]\n    duration: 6s\n",
        ca.cert.display(),
        ca.key.display(),
        socket.display()
    ));
    let daemon = fx.run();
    let crt = fx.out.join("id/tls.crt");
    wait_for_ctx(
        "the Workload API socket and the SVID",
        DEADLINE,
        || daemon.describe(),
        || socket.exists() && crt.exists(),
    );
    Served {
        ca,
        fx,
        daemon,
        socket,
        crt,
    }
}

impl Served {
    /// Runs a SPIFFE client that prints one JSON object, and checks what every client must have
    /// seen: the SVID's ID, a key that matches it, the certificate on disk, and at least three
    /// certificates while it streamed for 10 s (rotations every ~4 s). Returns the object, for
    /// each client's own checks, and the context to print when one fails.
    fn run_client(&self, cmd: &mut Command) -> (serde_json::Value, String) {
        let first = serial_hex(&self.crt);
        let ran = run_bounded(cmd, DEADLINE);
        let ctx = format!(
            "{}\n{}\n{}",
            ran.describe(),
            self.fx.describe(),
            self.daemon.describe()
        );
        assert!(ran.status.success(), "{ctx}");
        let out: serde_json::Value =
            serde_json::from_str(ran.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{ctx}"));
        assert_eq!(
            out["spiffe_id"], "spiffe://example.org/ns/shop/sa/web",
            "{ctx}"
        );
        assert_eq!(out["key_matches"], true, "{ctx}");
        let served = out["serial"].as_str().unwrap();
        assert!(
            served == first || served == serial_hex(&self.crt),
            "the SVID is the certificate on disk: {served} vs {first}\n{ctx}"
        );
        let streamed: std::collections::BTreeSet<&str> = out["streamed"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(
            streamed.len() >= 3,
            "the stream follows the rotations\n{ctx}"
        );
        (out, ctx)
    }
}

#[test]
fn py_spiffe_fetches_the_svid_and_bundle_and_sees_each_rotation() {
    let served = serve_svids();
    assert_eq!(
        mode_of(&served.socket),
        0o600,
        "only pillion's user may connect"
    );
    let (out, ctx) = served.run_client(
        Command::new("python3")
            .args(["-c", CLIENT])
            .arg(&served.socket)
            .arg("10"),
    );
    assert_eq!(
        out["ids"],
        serde_json::json!(["spiffe://example.org/ns/shop/sa/web"]),
        "only the SVID, not web"
    );
    let bundle = out["bundle"][0].as_str().unwrap().to_owned();
    assert_eq!(
        pem::parse(bundle).unwrap().contents(),
        pem::parse(std::fs::read(&served.ca.cert).unwrap())
            .unwrap()
            .contents(),
        "the bundle is the CA\n{ctx}"
    );
    let streamed: Vec<&str> = out["streamed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for pair in streamed.windows(2) {
        assert_ne!(pair[0], pair[1], "a push without a change: {streamed:?}");
    }
    assert_eq!(out["stream_errors"], serde_json::json!([]), "{ctx}");
    assert!(
        out["jwt"].as_str().unwrap().contains("UNIMPLEMENTED")
            || out["jwt"].as_str().unwrap().contains("not implemented"),
        "{ctx}"
    );
    assert_eq!(
        out["no_header"], "INVALID_ARGUMENT: security header missing from request",
        "{ctx}"
    );
    assert!(served.daemon.stop().success());
}

#[test]
fn go_spiffe_fetches_the_svid_and_bundle_and_sees_each_rotation() {
    let client = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-spiffe-client");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go-spiffe-client");
    let built = run_bounded(
        Command::new("go")
            .args(["build", "-mod=mod", "-o"])
            .arg(&client)
            .arg(".")
            .current_dir(&source),
        Duration::from_secs(600),
    );
    assert!(
        built.status.success(),
        "building go-spiffe's client needs Go and the Go module proxy\n{}",
        built.describe()
    );
    let served = serve_svids();
    let (out, ctx) = served.run_client(Command::new(&client).arg("10").env(
        "SPIFFE_ENDPOINT_SOCKET",
        format!("unix://{}", served.socket.display()),
    ));
    assert_eq!(out["authorities"], 1, "{ctx}");
    assert!(served.daemon.stop().success());
}

#[test]
fn an_svid_without_exactly_one_spiffe_id_is_exit_2() {
    let fx = Fixture::new();
    for (certs, expected) in [
        (
            "  - name: web\n    dnsNames: [localhost]\n",
            "workloadApi.svids: is not set and no certificate has a spiffe:// URI",
        ),
        (
            "  - name: id\n    uris: [spiffe://example.org/a, spiffe://example.org/b]\n",
            "certificates[0].uris: has 2 URIs",
        ),
    ] {
        fx.write_config(&format!("workloadApi: {{}}\ncertificates:\n{certs}"));
        let ran = run_bounded(&mut fx.pillion(&["check"]), COMMAND_DEADLINE);
        assert_eq!(ran.code(), Some(2), "{}", ran.describe());
        assert!(
            ran.stderr.contains(expected),
            "{expected}\n{}",
            ran.describe()
        );
    }
    fx.write_config(
        "workloadApi: {svids: [web]}\ncertificates:\n  - name: web\n    dnsNames: [localhost]\n",
    );
    let ran = run_bounded(&mut fx.pillion(&["check"]), COMMAND_DEADLINE);
    assert_eq!(ran.code(), Some(2), "{}", ran.describe());
    assert!(
        ran.stderr
            .contains("workloadApi.svids[0]: certificate \"web\" (certificates[0]) has 0 URIs"),
        "{}",
        ran.describe()
    );
}
