# syntax=docker/dockerfile:1
#
# pillion's image: one static binary on distroless/static (CA roots, /etc/passwd with `nonroot`,
# tzdata; no shell, no package manager, no libc), running as UID 65532.
#
#   docker build -t registry.example.com/pillion:0.1.0 .
#
# The builder runs scripts/build-static.sh, the same static build you can run without Docker;
# it fails unless `file` and `ldd` agree that the binary is static. The target is musl for the
# build machine's architecture (x86_64 or aarch64: build each platform natively, e.g. with
# `docker buildx build --platform linux/amd64,linux/arm64`).

ARG RUST_VERSION=1
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder

# musl-tools: a C compiler for musl, for ring's C and assembly. file: the static check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools file \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl"

# The commit `pillion version` and pillion_build_info report (the context has no .git):
#   docker build --build-arg PILLION_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG PILLION_COMMIT=unknown
ENV PILLION_COMMIT=${PILLION_COMMIT}

WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY scripts/build-static.sh ./scripts/build-static.sh

# The caches keep the crate registry and compiled dependencies between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    ./scripts/build-static.sh --out /out/pillion

FROM gcr.io/distroless/static-debian12:nonroot

COPY --from=builder /out/pillion /pillion

# distroless's `nonroot`. Kubernetes manifests set runAsUser too (deploy/): use the same UID
# for the app container, so pillion can signal it without CAP_KILL.
USER 65532:65532

# Conventional admin port (server.listen / --listen); pillion serves it only when configured.
EXPOSE 9102

ENTRYPOINT ["/pillion"]
CMD ["run"]
