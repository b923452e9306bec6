#!/usr/bin/env bash
# Chart tests without a cluster: schema up to date and closed, helm lint --strict, render every
# scenario, kubernetes-validate --strict (two Kubernetes minors), our own manifest checks
# (check_manifests.py), idempotent rendering, checkov, and negative tests (bad values must fail).
# The rendered govmx service configs are parsed by the services' own strict loaders in
# crates/govmx/tests/helm_render.rs (cargo test -p govmx --test helm_render).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chart="$here/../govmx"
"$here/../tools/ensure-tools.sh"
helm="$HOME/.cache/govmx/tools/bin/helm"
venv="$HOME/.cache/govmx/helm-venv"
py="$venv/bin/python"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
synapse_py="$HOME/.cache/govmx/synapse-1.163.2/bin/python"
namespace=govmx
kube_versions=(1.30.0 1.34.0)

# checkov checks skipped for the whole chart. Each entry needs a reason; keep this list short.
# (Empty today: every check passes on every scenario.)
checkov_skips=()

step() { printf '\n== %s\n' "$*"; }

step "schema: generated from values.yaml and closed everywhere"
"$py" "$here/../tools/gen-schema.py" --check
"$py" - "$chart/values.schema.json" <<'PY'
import json, sys
bad = []
def walk(node, path):
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
            bad.append(path or "(root)")
        for k, v in node.items():
            walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk(v, f"{path}/{i}")
walk(json.load(open(sys.argv[1])), "")
if bad:
    sys.exit("objects without additionalProperties: false: " + ", ".join(bad))
print("schema ok")
PY

step "chart copies of the monitoring files equal their sources (deploy/)"
cmp "$here/../../deploy/prometheus/govmx-alerts.yml" "$chart/files/govmx-alerts.yml" || {
  echo "helm/govmx/files/govmx-alerts.yml differs from deploy/prometheus/govmx-alerts.yml: cp it" >&2; exit 1; }
diff -r "$here/../../deploy/grafana/dashboards" "$chart/files/dashboards" || {
  echo "helm/govmx/files/dashboards differs from deploy/grafana/dashboards: copy them" >&2; exit 1; }
echo ok

step "Synapse image tag matches the Synapse whose config parser the tests use"
grep -q '^    tag: v1.163.2$' "$chart/values.yaml" || { echo "images.synapse.tag is not v1.163.2 (update ensure-tools.sh and run.sh together)" >&2; exit 1; }
echo ok

scenarios=(default)
for f in "$here"/values/*.yaml; do scenarios+=("$(basename "$f" .yaml)"); done

for s in "${scenarios[@]}"; do
  args=()
  [[ "$s" == default ]] || args=(-f "$here/values/$s.yaml")
  step "scenario $s"
  "$helm" lint --strict --namespace "$namespace" "$chart" "${args[@]}" >/dev/null
  echo "helm lint --strict: ok"
  "$helm" template govmx "$chart" --namespace "$namespace" "${args[@]}" >"$out/$s.yaml"
  "$helm" template govmx "$chart" --namespace "$namespace" "${args[@]}" >"$out/$s.again.yaml"
  cmp -s "$out/$s.yaml" "$out/$s.again.yaml" || { echo "two renders differ" >&2; exit 1; }
  echo "two renders identical: ok"
  for k in "${kube_versions[@]}"; do
    # CRDs (HTTPRoute, ServiceMonitor, PrometheusRule) have no bundled schema: kubernetes-validate
    # warns and skips them; check_manifests.py checks them instead.
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$k" "$out/$s.yaml" 2>&1 | grep -Ev "Couldn't find schema for kind (HTTPRoute|ServiceMonitor|PrometheusRule)" || true
    "$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$k" "$out/$s.yaml" >/dev/null
    echo "kubernetes-validate --strict -k $k: ok"
  done
  if [[ "$s" != default ]] && grep -q '^  imageRegistry: sentinel.registry.invalid$' "$here/values/$s.yaml"; then
    "$py" "$here/check_manifests.py" "$out/$s.yaml" --sentinel sentinel.registry.invalid sentinel-pull-secret
  else
    "$py" "$here/check_manifests.py" "$out/$s.yaml"
  fi
  "$synapse_py" "$here/check_synapse_config.py" "$out/$s.yaml"
  mkdir -p "$out/checkov-$s" && cp "$out/$s.yaml" "$out/checkov-$s/"
  skip_arg=()
  if ((${#checkov_skips[@]})); then skip_arg=(--skip-check "$(IFS=,; echo "${checkov_skips[*]}")"); fi
  "$venv/bin/checkov" -d "$out/checkov-$s" --framework kubernetes --quiet --compact "${skip_arg[@]}" >"$out/checkov-$s.txt" 2>&1 || {
    cat "$out/checkov-$s.txt" >&2; echo "checkov failed for scenario $s" >&2; exit 1; }
  grep -E "^Passed checks" "$out/checkov-$s.txt" | sed 's/^/checkov: /'
done

step "check_manifests.py catches what it must (mutation tests on the default, monitoring and workers renders)"
"$py" "$here/check_manifests_selftest.py" "$out"

step "backup/restore drill: the rendered backup CronJob's scripts against a real PostgreSQL"
"$here/backup_restore.sh" "$out/staging.yaml" "$py"

step "deploy/docker: hadolint and chart consistency of the Dockerfiles"
for f in "$here"/../../deploy/docker/*.Dockerfile; do
  "$venv/bin/hadolint" "$f" || { echo "hadolint failed: $f" >&2; exit 1; }
done
echo "hadolint: ok"
"$py" "$here/check_dockerfiles.py" "$out/staging.yaml"

step "docs/compliance.md: generated from the mapping, every referenced check exists"
"$venv/bin/checkov" --list --framework kubernetes 2>/dev/null | grep -oE "CKV2?_K8S_[0-9]+" | sort -u >"$out/checkov-ids.txt"
"$py" "$here/../tools/gen-compliance.py" --check --checkov-ids "$out/checkov-ids.txt" \
  --checkov-skips "$(IFS=,; echo "${checkov_skips[*]:-}")"

step "images.sh: every image pinned by digest, global registry reaches all of them"
"$here/../tools/images.sh" >"$out/images.txt"
"$here/../tools/images.sh" --set global.imageRegistry=mirror.invalid >"$out/images-mirror.txt"
[[ "$(wc -l <"$out/images.txt")" -ge 6 ]] || { echo "images.sh listed too few images" >&2; exit 1; }
if grep -v '@sha256:[0-9a-f]\{64\}$' "$out/images.txt"; then echo "images above lack a digest" >&2; exit 1; fi
if grep -v '^mirror.invalid/' "$out/images-mirror.txt"; then echo "images above ignore global.imageRegistry" >&2; exit 1; fi
echo "ok ($(wc -l <"$out/images.txt") images)"
# Every optional part on (workers with the in-chart Redis, in-chart PostgreSQL, module, backup).
all_on=(-f "$here/values/staging.yaml" --set redis.enabled=false)
"$here/../tools/images.sh" "${all_on[@]}" --set global.imageRegistry= >"$out/images-all.txt"
"$here/../tools/images.sh" "${all_on[@]}" --set global.imageRegistry=mirror.invalid >"$out/images-all-mirror.txt"
[[ "$(wc -l <"$out/images-all.txt")" -ge 10 ]] || { echo "images.sh (all on) listed too few images" >&2; cat "$out/images-all.txt" >&2; exit 1; }
if grep -v '@sha256:[0-9a-f]\{64\}$' "$out/images-all.txt"; then echo "images above lack a digest" >&2; exit 1; fi
if grep -v '^mirror.invalid/' "$out/images-all-mirror.txt"; then echo "images above ignore global.imageRegistry" >&2; exit 1; fi
echo "ok, every optional part on ($(wc -l <"$out/images-all.txt") images)"

step "negative tests: bad values must fail rendering with a clear message"
for f in "$here"/values/bad/*.yaml; do
  expect="$(sed -n 's/^# expect: //p' "$f")"
  [[ -n "$expect" ]] || { echo "$f has no '# expect:' line" >&2; exit 1; }
  if "$helm" template govmx "$chart" --namespace "$namespace" -f "$f" >/dev/null 2>"$out/err.txt"; then
    echo "$(basename "$f"): rendered, but must fail" >&2; exit 1
  fi
  grep -qF -- "$expect" "$out/err.txt" || {
    echo "$(basename "$f"): failed without '$expect':" >&2; cat "$out/err.txt" >&2; exit 1; }
  echo "$(basename "$f"): fails as expected"
done

step "all chart tests passed"
