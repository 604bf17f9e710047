#!/usr/bin/env bash
# pillion's benchmark: speed and memory, reported as figures (never asserted
# in tests). Builds the release binary, then measures on this machine:
#   - binary size;
#   - `pillion init` wall time, start to verified files on disk (dev CA already
#     created, fresh output dir each run), median and p90 over N runs;
#   - rotation throughput of a running `pillion run` (SIGUSR1 rounds per second,
#     each a new ECDSA-P256 key + sign + verify + fsynced atomic publish);
#   - idle resident memory (VmRSS, VmHWM) of `pillion run` after its first publish.
# Usage: scripts/bench.sh [runs]   (default 50)
#        PILLION_BIN=/path/to/pillion scripts/bench.sh   (another build, e.g. an older one, to
#        compare before and after a change on the same machine)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}

if [ -n "${PILLION_BIN:-}" ]; then
    bin=$(realpath "$PILLION_BIN")
else
    cargo build --release --quiet
    bin=$PWD/target/release/pillion
fi
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

echo "machine: $(nproc) cores, $(uname -sr)"
echo "binary: $(stat -c %s "$bin") bytes ($(du -h "$bin" | cut -f1))"

# Create the development CA once, outside the timed runs.
"$bin" --state-dir "$work/state" init --dns-name localhost --out "$work/warm" >/dev/null 2>&1

python3 - "$bin" "$work" "$runs" <<'EOF'
import os, signal, statistics, subprocess, sys, time

bin, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
env = dict(os.environ, PILLION_LOG_LEVEL="warn")

def init_once(i):
    out = os.path.join(work, f"init-{i}")
    t = time.perf_counter()
    subprocess.run([bin, "--state-dir", f"{work}/state", "init", "--dns-name", "localhost", "--out", out],
                   check=True, env=env, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t

times = sorted(init_once(i) for i in range(runs))
print(f"init (ECDSA-P256, dev CA, {runs} runs): median {statistics.median(times)*1000:.1f} ms, "
      f"p90 {times[int(len(times)*0.9)-1]*1000:.1f} ms, min {times[0]*1000:.1f} ms")

out = os.path.join(work, "run")
p = subprocess.Popen([bin, "--state-dir", f"{work}/state", "run", "--dns-name", "localhost", "--out", out],
                     env=env, stderr=subprocess.DEVNULL)
data = os.path.join(out, "..data")
deadline = time.time() + 10
while not os.path.islink(data) and time.time() < deadline:
    time.sleep(0.005)
time.sleep(2)  # idle after the first publish
status = dict(l.split(":", 1) for l in open(f"/proc/{p.pid}/status") if ":" in l)
print(f"run idle after first publish: VmRSS {status['VmRSS'].strip()}, VmHWM {status['VmHWM'].strip()}")

n = 200
t = time.perf_counter()
for _ in range(n):
    before = os.readlink(data)
    p.send_signal(signal.SIGUSR1)
    while os.readlink(data) == before:
        time.sleep(0.0005)
elapsed = time.perf_counter() - t
print(f"rotations via SIGUSR1: {n} in {elapsed:.2f} s = {n/elapsed:.0f}/s ({elapsed/n*1000:.1f} ms each)")
status = dict(l.split(":", 1) for l in open(f"/proc/{p.pid}/status") if ":" in l)
print(f"run after {n} rotations: VmRSS {status['VmRSS'].strip()}, VmHWM {status['VmHWM'].strip()}")
p.send_signal(signal.SIGTERM)
p.wait(timeout=5)
EOF
