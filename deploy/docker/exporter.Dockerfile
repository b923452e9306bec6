# syntax=docker/dockerfile:1
# govmx exporter: Prometheus metrics for Synapse, clamd and the policy bundle.
# Build context: the repository root. CI pins both base images by digest (--build-arg), builds,
# signs with cosign and records the digest in helm/govmx/values.yaml: deploy/docker/README.md.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p govmx-exporter --bin govmx-exporter \
 && install -D -m 0555 target/release/govmx-exporter /out/govmx-exporter

# Distroless (glibc + libgcc, no shell, no package manager); one process per container.
FROM ${RUNTIME_IMAGE}
COPY --from=build /out/govmx-exporter /usr/local/bin/govmx-exporter
# Non-root UID/GID as in the Helm chart (the pod's runAsUser overrides it there anyway).
USER 10995:10995
ENTRYPOINT ["/usr/local/bin/govmx-exporter"]
