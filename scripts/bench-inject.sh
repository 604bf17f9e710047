#!/usr/bin/env bash
# `pillion inject` as figures (never asserted in tests): a release pillion serving the webhook on
# the development CA, then
#   - 1,000 AdmissionReviews for an annotated pod over one keep-alive TLS connection (what the API
#     server does), and 200 with a new TLS connection each: latency median and p99 as the client
#     sees it, the answer checked to be an allowed JSON Patch;
#   - 200 reviews of a pod without the annotation (the fast path): latency;
#   - RSS idle after start-up, and after the reviews.
# Usage: scripts/bench-inject.sh            (builds the release binary)
#        PILLION_BIN=/path/to/pillion scripts/bench-inject.sh   (another build)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PILLION_BIN:-}" ]; then
    cargo build --release --quiet
    PILLION_BIN=$PWD/target/release/pillion
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$PILLION_BIN" "$work" <<'PY'
import base64, http.client, json, os, socket, ssl, statistics, subprocess, sys, time

bin, work = sys.argv[1], sys.argv[2]
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
log = open(os.path.join(work, "pillion.log"), "wb")
p = subprocess.Popen([bin, "--state-dir", f"{work}/state", "inject", "--image", "pillion:bench",
                      "--dns-name", "localhost", "--out", f"{work}/out",
                      "--webhook-listen", f"127.0.0.1:{port}"], stdout=log, stderr=log)
try:
    ca = f"{work}/out/ca.crt"
    deadline = time.time() + 30
    while not os.path.exists(ca):
        if time.time() > deadline or p.poll() is not None:
            sys.exit("pillion inject did not publish its certificate:\n" + open(os.path.join(work, "pillion.log")).read())
        time.sleep(0.02)
    ctx = ssl.create_default_context(cafile=ca)

    def rss():
        for l in open(f"/proc/{p.pid}/status"):
            if l.startswith("VmRSS:"): return int(l.split()[1]) / 1024

    def review(annotated, uid):
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "namespace": "shop",
                            "annotations": {"pillion.dev/inject": "true",
                                            "pillion.dev/dns-names": "web.shop.svc",
                                            "pillion.dev/reload-process": "nginx"} if annotated else {}},
               "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27",
                                        "securityContext": {"runAsUser": 101, "runAsGroup": 101}}]}}
        return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                                       "resource": {"group": "", "version": "v1", "resource": "pods"},
                                       "namespace": "shop", "operation": "CREATE", "object": pod}}).encode()

    def connect():
        deadline = time.time() + 30
        while True:
            try:
                c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
                c.connect()
                return c
            except OSError:
                if time.time() > deadline: raise
                time.sleep(0.05)

    def post(c, body, annotated):
        t = time.perf_counter()
        c.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse(); data = r.read()
        ms = (time.perf_counter() - t) * 1000
        answer = json.loads(data)["response"]
        assert r.status == 200 and answer["allowed"], data
        if annotated:
            patch = json.loads(base64.b64decode(answer["patch"]))
            assert any(op["path"].startswith("/spec/initContainers") for op in patch), patch
        else:
            assert "patch" not in answer, answer
        return ms

    def figures(name, ms):
        ms = sorted(ms)
        print(f"{name}: n={len(ms)} median {statistics.median(ms):.2f} ms, "
              f"p99 {ms[int(len(ms) * 0.99) - 1]:.2f} ms, max {ms[-1]:.2f} ms")

    connect().close()
    time.sleep(1)
    idle = rss()
    c = connect()
    for i in range(20): post(c, review(True, f"warm-{i}"), True)
    figures("annotated pod, one keep-alive connection",
            [post(c, review(True, f"k-{i}"), True) for i in range(1000)])
    figures("pod without the annotation, one keep-alive connection",
            [post(c, review(False, f"n-{i}"), False) for i in range(200)])
    c.close()
    fresh = []
    for i in range(200):
        t = time.perf_counter()
        c = connect()
        post(c, review(True, f"f-{i}"), True)
        fresh.append((time.perf_counter() - t) * 1000)
        c.close()
    figures("annotated pod, a new TLS connection each (handshake included)", fresh)
    print(f"RSS idle after start-up {idle:.1f} MiB, after 1,420 reviews {rss():.1f} MiB")
finally:
    p.terminate(); p.wait(10)
PY
