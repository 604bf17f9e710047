#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager and etcd, pinned by
# testbed/go.mod; cert-manager's CRDs and CA issuer controllers, pinned by
# testbed/cert-manager/go.mod) from the Go module proxy, once per machine, into a cache outside
# the checkout, and prints its directory.
# Later runs find the binaries there and take no time. The first run on a fresh machine downloads
# about 700 MB of modules and compiles for several minutes (see the README).
#
# Usage: scripts/testbed.sh            (prints the directory holding the binaries and crds/)
# Environment: PILLION_TESTBED_CACHE   the cache root; default ~/.cache/pillion-testbed
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../testbed"

k8s=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' go.mod)
etcd=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2 }' go.mod)
# cert-manager: its CRDs (deploy/crds of its main module) and its CA issuer's controllers
# (testbed/cert-manager, pinned by its go.mod).
cert_manager=$(awk '$1 == "require" && $2 == "github.com/cert-manager/cert-manager" { print $3 } $1 == "github.com/cert-manager/cert-manager" { print $2 }' cert-manager/go.mod)
out="${PILLION_TESTBED_CACHE:-$HOME/.cache/pillion-testbed}/k8s-$k8s-etcd-$etcd-cm-$cert_manager"
if [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && [ -x "$out/etcd" ] \
    && [ -d "$out/crds" ] && [ -x "$out/cert-manager-controller" ]; then
    echo "$out"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "testbed.sh: building the test control plane needs Go (go.dev); none on PATH" >&2
    exit 1
fi
# Each piece is built into a scratch file and moved into place when done, so an interrupted
# build leaves nothing half-made, and a cache from before a piece was added gets only that piece.
mkdir -p "$out"
start=$(date +%s)
build() { # build <name> <dir> <package> [ldflags]
    if [ -x "$out/$1" ]; then return; fi
    echo "testbed.sh: building $1 ($3) into $out (once per machine)" >&2
    (cd "$2" && GOFLAGS=-mod=mod go build -trimpath -ldflags="-s -w ${4:-}" -o "$out/$1.partial" "$3")
    mv "$out/$1.partial" "$out/$1"
}
build kube-apiserver . k8s.io/kubernetes/cmd/kube-apiserver \
    "-X k8s.io/component-base/version.gitVersion=$k8s"
# Its certificate signing controller only (--controllers=csrsigning): the signer of the
# kubernetes.io/ signerNames, with --cluster-signing-duration.
build kube-controller-manager . k8s.io/kubernetes/cmd/kube-controller-manager \
    "-X k8s.io/component-base/version.gitVersion=$k8s"
build etcd . go.etcd.io/etcd/server/v3
# cert-manager's own controllers for the CA issuer, from the packages of its main module (its
# controller binary is a module the Go module proxy does not serve): cert-manager/main.go.
build cert-manager-controller cert-manager .
if [ ! -d "$out/crds" ]; then
    cm_dir=$(cd cert-manager && go mod download -json "github.com/cert-manager/cert-manager@$cert_manager" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    mkdir -p "$out/crds.partial"
    cp "$cm_dir"/deploy/crds/cert-manager.io_*.yaml "$out/crds.partial/"
    chmod u+w "$out/crds.partial/"*
    mv "$out/crds.partial" "$out/crds"
fi
echo "testbed.sh: built in $(( $(date +%s) - start )) s" >&2
echo "$out"
