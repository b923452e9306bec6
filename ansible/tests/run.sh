#!/usr/bin/env bash
# The Ansible staging test: tooling, lint, a real run of site.yml against this machine (two
# loopback "hosts", direct service manager), the federation and EICAR scenarios, a second run
# that must report changed=0, a third run with one changed gate setting that must restart exactly
# the two gates, then teardown of everything it started (also on failure).
#
#   ansible/tests/run.sh              # everything
#   ansible/tests/run.sh lint         # tooling + syntax-check + ansible-lint + yamllint only
#   GOVMX_ANSIBLE_KEEP_UP=1 ansible/tests/run.sh   # leave the network running (no teardown)
#
# Inputs (all optional): CARGO_TARGET_DIR (default ~/.cache/govmx/target), GOVMX_BUILD_DIR (the
# built binaries, default $CARGO_TARGET_DIR/debug; built here when missing),
# GOVMX_SYNAPSE_MODULE_WHEEL (default: newest cached wheel, else built with maturin).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ANSIBLE_DIR=$(dirname "$HERE")
REPO=$(dirname "$ANSIBLE_DIR")
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/govmx
VENV=$CACHE/ansible-venv
WORK=$HERE/work
MODE=${1:-all}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
export ANSIBLE_CONFIG=$ANSIBLE_DIR/ansible.cfg
export ANSIBLE_FORCE_COLOR=0
export PYTHONWARNINGS=ignore
INSTANCES=(agency citizen)

log() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

# ---- tooling ---------------------------------------------------------------------------------
log "tooling: ansible-core, ansible-lint, yamllint in $VENV"
# Pinned, so a lint rule added upstream cannot turn CI red overnight; bump deliberately.
TOOLS="ansible-core==2.19.14 ansible-lint==26.10.1 yamllint==1.38.0"
if [ "$(cat "$VENV/.govmx-tools" 2>/dev/null)" != "$TOOLS" ]; then
    python3 -m venv "$VENV"
    # shellcheck disable=SC2086 # word splitting of the pin list is intended
    "$VENV/bin/pip" install --quiet $TOOLS
    echo "$TOOLS" > "$VENV/.govmx-tools"
fi
"$VENV/bin/ansible-playbook" --version 2>/dev/null | sed -n 1p || true
"$VENV/bin/ansible-lint" --version 2>/dev/null | sed -n 1p || true
"$VENV/bin/yamllint" --version
export PATH=$VENV/bin:$PATH

# ---- lint ------------------------------------------------------------------------------------
cd "$ANSIBLE_DIR"
log "ansible-playbook --syntax-check"
ansible-playbook --syntax-check site.yml
log "ansible-lint --profile production"
ansible-lint --profile production --nocolor
log "yamllint --strict"
yamllint --strict .
log "parity: Helm chart and Ansible render equivalent Synapse and service configs"
[ -x "$CACHE/tools/bin/helm" ] || "$REPO/helm/tools/ensure-tools.sh"
"$VENV/bin/python" "$HERE/parity.py"
[ "$MODE" = lint ] && { echo "lint and parity: all passed"; exit 0; }

# ---- artefacts -------------------------------------------------------------------------------
log "binaries and the Synapse module wheel"
export GOVMX_BUILD_DIR=${GOVMX_BUILD_DIR:-$CARGO_TARGET_DIR/debug}
for bin in govmx govmx-federation-gate govmx-media-scanner govmx-agency-ca govmx-exporter; do
    if [ ! -x "$GOVMX_BUILD_DIR/$bin" ]; then
        (cd "$REPO" && cargo build -p govmx -p govmx-federation-gate -p govmx-media-scanner \
            -p govmx-agency-ca -p govmx-exporter)
        break
    fi
done
if [ -z "${GOVMX_SYNAPSE_MODULE_WHEEL:-}" ]; then
    GOVMX_SYNAPSE_MODULE_WHEEL=$(ls -t "$CACHE"/synapse-module/*/*.whl "$CACHE"/ansible-build/wheel/*.whl 2>/dev/null | head -n 1 || true)
fi
if [ -z "$GOVMX_SYNAPSE_MODULE_WHEEL" ]; then
    python3 -m venv "$CACHE/maturin-venv-ansible"
    "$CACHE/maturin-venv-ansible/bin/pip" install --quiet maturin==1.16.0
    "$CACHE/maturin-venv-ansible/bin/maturin" build --release --quiet \
        -m "$REPO/crates/govmx-synapse-module/Cargo.toml" --out "$CACHE/ansible-build/wheel" -i /usr/bin/python3
    GOVMX_SYNAPSE_MODULE_WHEEL=$(ls -t "$CACHE"/ansible-build/wheel/*.whl | head -n 1)
fi
export GOVMX_SYNAPSE_MODULE_WHEEL
# Snapshot the artefacts: the shared target directory may be rebuilt by others between run 1
# and run 2, which would (rightly) make run 2 install new binaries.
SNAP=$CACHE/ansible-build/snapshot
mkdir -p "$SNAP/bin"
for bin in govmx govmx-federation-gate govmx-media-scanner govmx-agency-ca govmx-exporter; do
    cmp -s "$GOVMX_BUILD_DIR/$bin" "$SNAP/bin/$bin" || cp "$GOVMX_BUILD_DIR/$bin" "$SNAP/bin/$bin"
done
cmp -s "$GOVMX_SYNAPSE_MODULE_WHEEL" "$SNAP/$(basename "$GOVMX_SYNAPSE_MODULE_WHEEL")" || cp "$GOVMX_SYNAPSE_MODULE_WHEEL" "$SNAP/"
GOVMX_BUILD_DIR=$SNAP/bin
GOVMX_SYNAPSE_MODULE_WHEEL=$SNAP/$(basename "$GOVMX_SYNAPSE_MODULE_WHEEL")
echo "binaries: $GOVMX_BUILD_DIR"
echo "wheel:    $GOVMX_SYNAPSE_MODULE_WHEEL"

# ---- teardown (also on failure) --------------------------------------------------------------
PG_STARTED_BY_US=0
if ! pg_ctlcluster 15 main status >/dev/null 2>&1; then PG_STARTED_BY_US=1; fi
teardown() {
    rc=$?
    if [ "${GOVMX_ANSIBLE_KEEP_UP:-0}" = 1 ]; then
        echo "GOVMX_ANSIBLE_KEEP_UP=1: leaving the network running (govmx-direct list)"
        exit $rc
    fi
    log "teardown"
    for i in "${INSTANCES[@]}"; do
        [ -x /usr/local/sbin/govmx-direct ] && /usr/local/sbin/govmx-direct stop-all "govmx-$i-" || true
    done
    if [ "$PG_STARTED_BY_US" = 1 ]; then pg_ctlcluster 15 main stop || true; fi
    if [ $rc -ne 0 ]; then
        echo "FAILED (rc=$rc); logs: $WORK/*.log and /var/log/govmx/*/"
        for f in /var/log/govmx/*/*.log; do
            [ -f "$f" ] && { echo "----- $f (last 15 lines)"; tail -n 15 "$f"; }
        done
    fi
    exit $rc
}
trap teardown EXIT

# ---- fresh state -----------------------------------------------------------------------------
log "fresh state (previous staging-local instances removed)"
for i in "${INSTANCES[@]}"; do
    [ -x /usr/local/sbin/govmx-direct ] && /usr/local/sbin/govmx-direct stop-all "govmx-$i-" || true
    rm -rf "/etc/govmx/$i" "/var/lib/govmx/$i" "/var/log/govmx/$i"
done
rm -rf /var/lib/govmx-policy-build /root/govmx-ca-offline
if [ -d /etc/postgresql/15/main ]; then
    # The databases of the previous run go too (the cluster is started for that if needed; the
    # teardown stops it again when it was not running before this script).
    pg_ctlcluster 15 main status >/dev/null 2>&1 || pg_ctlcluster 15 main start
    for i in "${INSTANCES[@]}"; do
        runuser -u postgres -- psql -q -c "DROP DATABASE IF EXISTS synapse_$i" -c "DROP ROLE IF EXISTS synapse_$i" >/dev/null
    done
fi
rm -rf "$WORK"; mkdir -p "$WORK"; chmod 0700 "$WORK"
# The offline signature directory: the EICAR test signature (md5:size:name), plus a real
# database when this machine has one.
mkdir -p "$WORK/clamav"
python3 -c 'import hashlib; e = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"; print(f"{hashlib.md5(e).hexdigest()}:{len(e)}:Eicar-Test-Signature")' > "$WORK/clamav/govmx-test.hdb"
for db in /var/lib/clamav/main.cvd /var/lib/clamav/daily.cvd /var/lib/clamav/daily.cld; do
    if [ -f "$db" ]; then cp "$db" "$WORK/clamav/"; fi
done
export GOVMX_CLAMAV_SIGNATURES_DIR=$WORK/clamav

# ---- throw-away secrets (JSON is YAML) -------------------------------------------------------
log "dev secrets for this run: $WORK/dev-secrets.yml (never commit; real staging uses Ansible Vault)"
for n in 1 2; do
    "$GOVMX_BUILD_DIR/govmx" policy keygen --id "ed25519:staging_$n" --out "$WORK/signer-$n.key" > "$WORK/signer-$n.pub"
done
python3 - "$WORK" <<'PY'
import json, pathlib, re, secrets, sys, base64
work = pathlib.Path(sys.argv[1])
signers = []
for n in (1, 2):
    pub = re.search(r'publicKey: "([^"]+)"', (work / f"signer-{n}.pub").read_text()).group(1)
    signers.append({"id": f"ed25519:staging_{n}", "secret_key": (work / f"signer-{n}.key").read_text(),
                    "public_key": pub, "owner": f"staging signer {n} (generated by tests/run.sh)"})
hosts = {h: {"registration_shared_secret": secrets.token_hex(32), "macaroon_secret_key": secrets.token_hex(32),
             "form_secret": secrets.token_hex(32), "postgresql_password": secrets.token_hex(16),
             "mcs_request_secret": base64.b64encode(secrets.token_bytes(32)).decode()}
         for h in ("agency", "citizen")}
doc = {"vault_govmx_agency_ca_root_passphrase": secrets.token_hex(16),
       "vault_govmx_policy_signers": signers, "vault_govmx_hosts": hosts}
path = work / "dev-secrets.yml"
path.write_text(json.dumps(doc, indent=2) + "\n")
path.chmod(0o600)
PY
rm -f "$WORK"/signer-*.key

# ---- the real run ----------------------------------------------------------------------------
run_playbook() {
    local n=$1 start end
    start=$(date +%s)
    local rc
    set +e
    ansible-playbook site.yml -e "@$WORK/dev-secrets.yml" > "$WORK/run$n.log" 2>&1
    rc=$?
    set -e
    grep -E '^(changed|fatal|failed)|ERROR|FAILED' "$WORK/run$n.log" | head -n 80 || true
    end=$(date +%s)
    echo "run $n: rc=$rc, $((end - start)) s"
    echo "$((end - start))" > "$WORK/run$n.seconds"
    sed -n '/PLAY RECAP/,$p' "$WORK/run$n.log"
    return "$rc"
}
log "playbook run 1 (brings the network up)"
run_playbook 1

log "unit files: systemd-analyze verify (done by the playbook) and exposure (systemd-analyze security --offline)"
for unit in /etc/systemd/system/govmx-agency-*.service /etc/systemd/system/govmx-citizen-*.service; do
    systemd-analyze verify --man=no "$unit"
    score=$(systemd-analyze security --offline=true "$unit" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    echo "$(basename "$unit"): exposure $score"
    awk -v s="$score" 'BEGIN { exit !(s != "" && s + 0 <= 3.0) }' || { echo "FAIL: exposure above 3.0"; exit 1; }
done

log "scenarios: federation across the gates, EICAR refused, clean upload stored"
python3 "$HERE/scenario.py" "$WORK/dev-secrets.yml"

log "playbook run 2 (must change nothing)"
run_playbook 2
recap=$(sed -n '/PLAY RECAP/,$p' "$WORK/run2.log" | grep -E 'ok=')
if echo "$recap" | grep -vq 'changed=0 '; then
    echo "FAIL: the second run changed something:"; echo "$recap"
    grep -B3 '^changed:' "$WORK/run2.log" | head -n 60
    exit 1
fi
echo "idempotent: every host reports changed=0"

log "scenarios again after run 2"
python3 "$HERE/scenario.py" "$WORK/dev-secrets.yml"
log "playbook run 3: a changed gate setting restarts both gates and nothing else"
declare -A PID_BEFORE PID_AFTER
for f in /run/govmx/govmx-agency-*.pid /run/govmx/govmx-citizen-*.pid; do PID_BEFORE[$(basename "$f" .pid)]=$(cat "$f"); done
set +e
ansible-playbook site.yml -e "@$WORK/dev-secrets.yml" -e govmx_gate_refetch_on_miss=11s > "$WORK/run3.log" 2>&1
rc=$?
set -e
sed -n '/PLAY RECAP/,$p' "$WORK/run3.log"
[ $rc -eq 0 ] || { echo "FAIL: run 3 rc=$rc"; exit 1; }
for f in /run/govmx/govmx-agency-*.pid /run/govmx/govmx-citizen-*.pid; do PID_AFTER[$(basename "$f" .pid)]=$(cat "$f"); done
restarted=()
for unit in "${!PID_BEFORE[@]}"; do
    [ "${PID_BEFORE[$unit]}" != "${PID_AFTER[$unit]:-gone}" ] && restarted+=("$unit")
done
restarted_sorted=$(printf '%s\n' "${restarted[@]}" | sort | tr '\n' ' ')
echo "restarted: $restarted_sorted"
[ "$restarted_sorted" = "govmx-agency-federation-gate govmx-citizen-federation-gate " ] \
    || { echo "FAIL: expected exactly the two federation gates to restart"; exit 1; }
grep -q 'refetch_on_miss: 11s' /etc/govmx/agency/gate/config.yaml
python3 "$HERE/scenario.py" "$WORK/dev-secrets.yml" > "$WORK/scenario3.log" && echo "scenarios pass after the restart"

echo "ansible staging test: all passed (run 1: $(cat "$WORK/run1.seconds") s, run 2: $(cat "$WORK/run2.seconds") s)"
grep -E 'ok=' "$WORK/run2.log"
