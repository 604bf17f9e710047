#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver and etcd, pinned by testbed/go.mod) from the Go
# module proxy, once per machine, into a cache outside the checkout, and prints its directory.
# Later runs find the binaries there and take no time. The first run on a fresh machine downloads
# about 700 MB of modules and compiles for several minutes (see the README).
#
# Usage: scripts/testbed.sh            (prints the directory holding kube-apiserver and etcd)
# Environment: PILLION_TESTBED_CACHE   the cache root; default ~/.cache/pillion-testbed
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../testbed"

k8s=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' go.mod)
etcd=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2 }' go.mod)
# cert-manager's CRDs (deploy/crds of its main module). Its controller is a module of its own that
# the Go module proxy does not serve, so the tests run a small test issuer instead.
cert_manager=v1.21.2
out="${PILLION_TESTBED_CACHE:-$HOME/.cache/pillion-testbed}/k8s-$k8s-etcd-$etcd-cm-$cert_manager"
if [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ] && [ -d "$out/crds" ]; then
    echo "$out"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "testbed.sh: building the test control plane needs Go (go.dev); none on PATH" >&2
    exit 1
fi
mkdir -p "$out.partial"
start=$(date +%s)
echo "testbed.sh: building kube-apiserver $k8s and etcd $etcd into $out (once per machine)" >&2
version="-X k8s.io/component-base/version.gitVersion=$k8s"
GOFLAGS=-mod=mod go build -trimpath -ldflags="-s -w $version" -o "$out.partial/kube-apiserver" \
    k8s.io/kubernetes/cmd/kube-apiserver
GOFLAGS=-mod=mod go build -trimpath -ldflags="-s -w" -o "$out.partial/etcd" go.etcd.io/etcd/server/v3
cm_dir=$(go mod download -json "github.com/cert-manager/cert-manager@$cert_manager" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
mkdir -p "$out.partial/crds"
cp "$cm_dir"/deploy/crds/cert-manager.io_*.yaml "$out.partial/crds/"
chmod u+w "$out.partial/crds/"*
rm -rf "$out"
mv "$out.partial" "$out"
echo "testbed.sh: built in $(( $(date +%s) - start )) s" >&2
echo "$out"
