# syntax=docker/dockerfile:1
# govmx agency CA: issuance API; CA state on a volume, keys from a Secret (never in the image).
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
    cargo build --locked --release -p govmx-agency-ca --bin govmx-agency-ca \
 && install -D -m 0555 target/release/govmx-agency-ca /out/govmx-agency-ca

# Distroless (glibc + libgcc, no shell, no package manager); one process per container.
FROM ${RUNTIME_IMAGE}
COPY --from=build /out/govmx-agency-ca /usr/local/bin/govmx-agency-ca
# Non-root UID/GID as in the Helm chart (the pod's runAsUser overrides it there anyway).
USER 10996:10996
ENTRYPOINT ["/usr/local/bin/govmx-agency-ca"]
