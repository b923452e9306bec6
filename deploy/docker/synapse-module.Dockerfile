# syntax=docker/dockerfile:1
# govmx Synapse module image: the installed wheel (Python package govmx_synapse + the PyO3
# extension) under /opt/govmx-module. The chart's init container `install-govmx-module` runs
# `cp -R /opt/govmx-module/. /module/` into an emptyDir that Synapse's container mounts on
# PYTHONPATH. Alternative (derived image): see deploy/docker/README.md.
# Build context: the repository root. CI pins the base images by digest (--build-arg).
ARG BUILD_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/busybox:1.37.0-glibc

FROM ${BUILD_IMAGE} AS build
# Python 3.11 (bookworm) headers for the abi3 (>= 3.11) extension; maturin from PyPI, pinned.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3=3.11.* python3-venv=3.11.* python3-dev=3.11.* \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/maturin \
 && /opt/maturin/bin/pip install --no-cache-dir "maturin==1.16.0"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    /opt/maturin/bin/maturin build --locked --release -m crates/govmx-synapse-module/Cargo.toml -o /wheels \
 && /opt/maturin/bin/pip install --no-cache-dir --no-deps --target /out/opt/govmx-module /wheels/govmx_synapse-*.whl

# busybox: only for the `cp` of the init container.
FROM ${RUNTIME_IMAGE}
COPY --from=build /out/opt/govmx-module /opt/govmx-module
USER 10991:10991
ENTRYPOINT ["cp", "-R", "/opt/govmx-module/.", "/module/"]
