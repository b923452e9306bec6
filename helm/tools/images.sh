#!/usr/bin/env bash
# Prints every image the chart deploys with the given values (one per line, registry/repo:tag@digest),
# for mirroring into an air-gapped registry, e.g.:
#   helm/tools/images.sh -f my-values.yaml | while read -r img; do skopeo copy --all "docker://$img" ...; done
# Extra arguments go to `helm template` (-f FILE, --set k=v).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/ensure-tools.sh"
helm="${HOME}/.cache/govmx/tools/bin/helm"
"$helm" template images "$here/../govmx" "$@" |
  "${HOME}/.cache/govmx/helm-venv/bin/python" -c '
import sys, yaml
images = set()
def walk(node):
    if isinstance(node, dict):
        for key in ("containers", "initContainers", "ephemeralContainers"):
            for c in node.get(key) or []:
                images.add(c["image"])
        for v in node.values():
            walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)
for doc in yaml.safe_load_all(sys.stdin):
    walk(doc)
print("\n".join(sorted(images)))
'
