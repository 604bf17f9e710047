#!/usr/bin/env bash
# Builds pillion as one static release binary: the build the Dockerfile runs, runnable without
# Docker. Prints the binary's size and checks with `file` and `ldd` that it is static.
#
# Usage: scripts/build-static.sh [--out PATH]
#
#   --out PATH   also copy the binary to PATH (the Dockerfile uses /out/pillion)
#
# Environment:
#   PILLION_STATIC_TARGET      the Rust target; default <arch>-unknown-linux-musl when that target is
#                              installed (or `rustup target add` can install it), otherwise
#                              <arch>-unknown-linux-gnu with glibc linked statically (+crt-static)
#                              (musl needs a musl C compiler for ring: Debian's musl-tools)
#   PILLION_STATIC_TARGET_DIR  cargo's target directory; default target/static, apart from the
#                              development build's target/ so the two never wait on each other's
#                              lock or throw away each other's cache
#
# musl is the target the Dockerfile uses and the one to ship. The glibc fallback links, since
# pillion's dependencies are pure Rust apart from ring's C and assembly, but it is a fallback
# only: glibc's getaddrinfo (the DNS lookups of Vault's and the API server's names) loads NSS
# modules at run time, and a statically linked glibc binary finds none in distroless/static or
# scratch (glibc's linker warning about getaddrinfo says so; cargo does not show it). Such a
# binary is fine on a machine with the same glibc, not in the image.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=${2:?--out needs a path}; shift 2 ;;
        --out=*) out=${1#--out=}; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "build-static.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

arch=$(uname -m)
target_dir=${PILLION_STATIC_TARGET_DIR:-target/static}

installed_targets() { rustup target list --installed 2>/dev/null || true; }

target=${PILLION_STATIC_TARGET:-}
if [ -z "$target" ]; then
    musl="$arch-unknown-linux-musl"
    if installed_targets | grep -qx "$musl"; then
        target=$musl
    elif command -v rustup >/dev/null 2>&1 && rustup target add "$musl" >/dev/null 2>&1; then
        target=$musl
    else
        echo "build-static.sh: the $musl target is not available; linking glibc statically instead" >&2
        target="$arch-unknown-linux-gnu"
    fi
fi

# ring compiles some C and assembly. For a musl target cc-rs looks for <arch>-linux-musl-gcc,
# which Debian does not ship; Debian's musl-tools ships musl-gcc, a gcc wrapper using musl's
# headers. Point cc-rs at it unless the caller chose a compiler.
case "$target" in
    *-linux-musl)
        cc_var="CC_${target//-/_}"
        if [ -z "${!cc_var:-}" ] && ! command -v "$arch-linux-musl-gcc" >/dev/null 2>&1; then
            if command -v musl-gcc >/dev/null 2>&1; then
                export "$cc_var=musl-gcc"
            else
                echo "build-static.sh: no C compiler for $target: install musl-tools (apt-get install musl-tools)" >&2
                echo "  or set $cc_var, or PILLION_STATIC_TARGET=$arch-unknown-linux-gnu to link glibc statically" >&2
                exit 1
            fi
        fi
        ;;
esac

# --target keeps RUSTFLAGS away from build scripts and proc macros, which must stay dynamic
# host binaries; only pillion itself is linked with +crt-static (musl's default anyway).
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static"

# Packed relative relocations (DT_RELR): a static PIE relocates itself at start, and the classic
# table (24 bytes per pointer, about 15,000 of them) took 350 KB of the binary and as much of
# its resident memory; packed, it takes 5 KB. Needs a linker that packs (GNU ld 2.38+, lld 15+)
# and a libc that unpacks: musl 1.2.4+ (the one Rust ships since 1.86), glibc 2.36+.
# (awk, not grep -m1 or -q: those stop reading early, and pipefail counts the writer's SIGPIPE)
musl_version() {
    strings "$(rustc --print sysroot)/lib/rustlib/$target/lib/self-contained/libc.a" 2>/dev/null \
        | awk '/^1\.[0-9]+\.[0-9]+$/ && !v { v = $0 } END { if (v) print v; else exit 1 }'
}
libc_unpacks() {
    case "$target" in
        *-linux-musl)
            v=$(musl_version) || return 1
            [ "$(printf '%s\n' 1.2.4 "$v" | sort -V | head -n1)" = 1.2.4 ] ;;
        *-linux-gnu)
            v=$(ldd --version 2>/dev/null | sed -n '1s/.* \([0-9][0-9.]*\)$/\1/p')
            [ -n "$v" ] && [ "$(printf '%s\n' 2.36 "$v" | sort -V | head -n1)" = 2.36 ] ;;
        *) return 1 ;;
    esac
}
if ld --help 2>/dev/null | awk '/pack-relative-relocs/ { found = 1 } END { exit !found }' \
    && libc_unpacks; then
    RUSTFLAGS="$RUSTFLAGS -C link-arg=-Wl,-z,pack-relative-relocs"
else
    echo "build-static.sh: no DT_RELR support in this linker or libc; relocations stay unpacked" >&2
fi

cargo_args=(build --release --target "$target" --target-dir "$target_dir" --bin pillion)
if [ -f Cargo.lock ]; then
    cargo_args+=(--locked)
fi

echo "build-static.sh: cargo ${cargo_args[*]} (RUSTFLAGS=$RUSTFLAGS)" >&2
start=$(date +%s)
cargo "${cargo_args[@]}"
end=$(date +%s)

bin="$target_dir/$target/release/pillion"
if [ ! -x "$bin" ]; then
    echo "build-static.sh: cargo finished but $bin is missing" >&2
    exit 1
fi

# Static means: no program interpreter, no shared libraries.
static=1
if command -v file >/dev/null 2>&1; then
    desc=$(file -L "$bin")
    echo "file: ${desc#*: }"
    case "$desc" in
        *"statically linked"* | *"static-pie linked"*) ;;
        *) echo "build-static.sh: file does not call $bin static" >&2; static=0 ;;
    esac
else
    echo "build-static.sh: file(1) is not installed; skipping that check" >&2
fi
if command -v ldd >/dev/null 2>&1; then
    # glibc's ldd says "not a dynamic executable" (exit 1) or "statically linked".
    deps=$(ldd "$bin" 2>&1 || true)
    echo "ldd: $deps"
    case "$deps" in
        *"not a dynamic executable"* | *"statically linked"*) ;;
        *) echo "build-static.sh: ldd lists shared libraries for $bin" >&2; static=0 ;;
    esac
else
    echo "build-static.sh: ldd is not installed; skipping that check" >&2
fi
if [ "$static" -ne 1 ]; then
    exit 1
fi

# It must run, with nothing around it.
version=$(env -i "$bin" --version)

size=$(stat -c %s "$bin")
echo "binary: $bin"
echo "target: $target"
echo "version: $version"
echo "size: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f MiB", s / 1048576 }'))"
echo "build time: $((end - start)) s"

if [ -n "$out" ]; then
    mkdir -p "$(dirname "$out")"
    cp "$bin" "$out"
    echo "copied to: $out"
fi
