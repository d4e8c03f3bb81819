# syntax=docker/dockerfile:1
#
# The reboot coordinator's image: update-operator, update-agent and fluoctl as static
# (musl) binaries in /usr/local/bin of a distroless base, running as nonroot (65532).
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -t ghcr.io/flatcar-reboot-coordinator/reboot-coordinator:latest .
#
# Each platform is built natively on Alpine (musl is Alpine's C library, so `ring`'s C
# and assembly build with the stock compiler): an arm64 image is built on an arm64
# builder or under QEMU emulation. docs/deploy.md has the details and the image size.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
ARG TARGETARCH
RUN apk add --no-cache gcc musl-dev file
WORKDIR /src
COPY . .
# TARGETARCH (set by BuildKit) picks the Rust target. Rust links musl targets statically
# (crt-static, their default, is also set explicitly), and the build fails if a binary
# came out dynamically linked. Symbols are stripped (a third of the size; panic messages
# stay, backtraces lose function names). The cache mounts keep the registry and the target
# directory between builds, which is why the binaries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=target-${TARGETARCH} \
    set -eu; \
    case "${TARGETARCH:-amd64}" in \
      amd64) target=x86_64-unknown-linux-musl ;; \
      arm64) target=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    rustup target add "$target"; \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --profile dist --locked --target "$target" -p operator -p agent -p fluoctl; \
    mkdir -p /out/usr/local/bin; \
    for b in update-operator update-agent fluoctl; do \
      cp "target/$target/dist/$b" /out/usr/local/bin/; \
      file "/out/usr/local/bin/$b" | grep -Eq 'statically linked|static-pie linked' \
        || { echo "$b is not statically linked" >&2; exit 1; }; \
    done

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="reboot-coordinator" \
      org.opencontainers.image.description="FLUO-compatible reboot coordinator for Flatcar Container Linux nodes: update-operator, update-agent, fluoctl" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /
# The update-operator runs as this user; the update-agent's pod sets runAsUser: 0 (see
# deploy/core/update-agent.yaml for why).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/update-operator"]
