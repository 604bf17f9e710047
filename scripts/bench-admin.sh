#!/usr/bin/env bash
# The admin endpoint under abuse, as figures (never asserted in tests): a release pillion under
# `prlimit --nofile=256` with --listen, then
#   - 1,000 idle connections (each sent only "GET / HTTP/1.1\r\n"; opening stops at the first
#     that cannot connect within 5 s): RSS before, while held and after, /healthz latency while
#     held, and the CPU time and log bytes they cost;
#   - slowloris: 200 connections sending a header byte every 500 ms for 10 s, /healthz meanwhile;
#   - a 64 KiB header: the answer;
#   - 1,000 POST /rotate in a burst (8 threads): accepted, refused (429), extra renewal rounds.
# Usage: scripts/bench-admin.sh            (builds the release binary)
#        PILLION_BIN=/path/to/pillion scripts/bench-admin.sh   (another build, e.g. an older one)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PILLION_BIN:-}" ]; then
    cargo build --release --quiet
    PILLION_BIN=$PWD/target/release/pillion
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$PILLION_BIN" "$work" <<'PY'
import os, socket, subprocess, sys, threading, time

bin, work = sys.argv[1], sys.argv[2]
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
log = open(os.path.join(work, "pillion.log"), "wb")
env = dict(os.environ, PILLION_LOG_LEVEL="info")
p = subprocess.Popen(["prlimit", "--nofile=256:256", "--", bin, "--state-dir", f"{work}/state",
                      "run", "--dns-name", "localhost", "--out", f"{work}/out", "--duration", "1h",
                      "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=log, env=env)

def http(method, path, timeout=10):
    t = time.perf_counter()
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    c.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        b = c.recv(4096)
        if not b: break
        data += b
    c.close()
    return int(data.split()[1]), (time.perf_counter() - t) * 1000

def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1]) / 1024
def cpu():
    f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
def logsize(): return os.path.getsize(os.path.join(work, "pillion.log"))
def rounds(): return open(os.path.join(work, "pillion.log"), "rb").read().count(b"published a new certificate")

deadline = time.time() + 30
while time.time() < deadline:
    try:
        if http("GET", "/readyz", 2)[0] == 200: break
    except OSError: pass
    time.sleep(0.05)
else:
    sys.exit("pillion did not get ready")
time.sleep(0.5)

r0, c0, l0, t0 = rss(), cpu(), logsize(), time.time()
held = []
for _ in range(1000):
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(b"GET / HTTP/1.1\r\n")
        held.append(c)
    except OSError:
        break
time.sleep(1)
try:
    st, ms = http("GET", "/healthz", 10)
    health = f"{st} in {ms:.1f} ms"
except OSError as e:
    health = f"failed ({e})"
r1 = rss()
time.sleep(2)
c1, l1, t1 = cpu(), logsize(), time.time()
for c in held: c.close()
time.sleep(1)
r2 = rss()
print(f"1,000 idle connections ({len(held)} opened): RSS {r0:.1f} MiB before, {r1:.1f} MiB while held, "
      f"{r2:.1f} MiB after; /healthz {health}; {c1 - c0:.2f} s CPU and {l1 - l0} log bytes "
      f"from the first connect to 3 s after the last ({t1 - t0:.1f} s)")

stop = time.time() + 10
slow = []
for _ in range(200):
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(b"GET /healthz HTTP/1.1\r\n")
        slow.append(c)
    except OSError:
        break
worst, closed = 0.0, 0
while time.time() < stop:
    for c in list(slow):
        try:
            c.sendall(b"X")
        except OSError:
            slow.remove(c); closed += 1
    try:
        worst = max(worst, http("GET", "/healthz", 10)[1])
    except OSError:
        worst = float("inf")
    time.sleep(0.5)
for c in slow: c.close()
print(f"slowloris, 200 connections for 10 s: {closed} cut off by the server; slowest /healthz {worst:.1f} ms")

c = socket.create_connection(("127.0.0.1", port), timeout=10)
try:
    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
    answer = c.recv(64).split(b"\r\n")[0].decode() or "(closed)"
except OSError as e:
    answer = f"(closed: {e.strerror})"
c.close()
print(f"64 KiB header: {answer}")

before = rounds()
codes = []
lock = threading.Lock()
def burst():
    for _ in range(125):
        try: st = http("POST", "/rotate", 10)[0]
        except OSError: st = 0
        with lock: codes.append(st)
ts = [threading.Thread(target=burst) for _ in range(8)]
for t in ts: t.start()
for t in ts: t.join()
time.sleep(3)
print(f"1,000 POST /rotate: {codes.count(202)} accepted, {codes.count(429)} refused (429), "
      f"{len(codes) - codes.count(202) - codes.count(429)} other; {rounds() - before} extra renewal round(s)")
print(f"pillion still running: {p.poll() is None}; log {logsize()} bytes")
p.terminate(); p.wait(10)
PY
