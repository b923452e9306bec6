# Shared helpers for the benchmark scripts in benches/ (sourced, not run).
# Every script: own temp dir, own loopback ports, everything it started is killed on exit.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/govmx/target}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REL="$CARGO_TARGET_DIR/release"
SYNAPSE_VENV="${SYNAPSE_VENV:-$HOME/.cache/govmx/synapse-1.163.2}"
PIDS=()

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "${WORK:-}" && -z "${KEEP:-}" ]]; then rm -rf "$WORK"; fi
    if [[ -n "${KEEP:-}" ]]; then log "kept $WORK"; fi
}

# need_pkg <command> <debian package>: apt-get install the package when the command is missing.
need_pkg() {
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=300 "$2" >/dev/null
}

# build_release: cargo build (skipped with SKIP_BUILD=1), then copies the binaries into $WORK/bin so a
# concurrent rebuild cannot swap them mid-run; sets BIN.
build_release() {
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        (cd "$REPO" && cargo build --release -q -p govmx-federation-gate -p govmx-media-scanner -p govmx)
    fi
    BIN="$WORK/bin"
    mkdir -p "$BIN"
    cp "$REL/govmx" "$REL/govmx-federation-gate" "$REL/govmx-media-scanner" "$BIN/"
    log "binaries from $(cd "$REPO" && git describe --always --dirty) (built $(date -u -r "$REL/govmx-federation-gate" +%H:%MZ))"
}

# port_free <port>: fails if something listens on it (any address).
port_free() { ! ss -ltnH "sport = :$1" | grep -q .; }

# check_ports <port>...: all must be free.
check_ports() {
    local p
    for p in "$@"; do port_free "$p" || die "port $p is in use (set BENCH_PORT_BASE)"; done
}

# wait_http <url> [seconds] [curl options...]: poll until the URL answers (any HTTP status).
wait_http() {
    local url=$1 secs=${2:-30} i
    shift 2 || true
    for ((i = 0; i < secs * 10; i++)); do
        if curl -s -o /dev/null -k --max-time 1 "$@" "$url"; then return 0; fi
        sleep 0.1
    done
    die "$url did not answer within ${secs}s"
}

# make_certs <dir>: P-256 CA and a leaf for 127.0.0.1/localhost (ca.pem, leaf.pem, leaf.key).
make_certs() {
    local d=$1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/ca.key" \
        -out "$d/ca.pem" -days 2 -subj "/CN=govmx bench CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/leaf.key" \
        -out "$d/leaf.csr" -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/leaf.ext"
    openssl x509 -req -in "$d/leaf.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -out "$d/leaf.pem" -days 2 -extfile "$d/leaf.ext" 2>/dev/null
    # Some servers want a PKCS#8 key; openssl 3 writes PKCS#8 already.
}

# cpu_ticks <pid>: utime+stime of the process (clock ticks, includes all threads).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

# vm_hwm_kib <pid>
vm_hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# load1: "<1-min load average>/<busy cores over the last 2 s>", sampled while our own servers are
# idle, so the second figure is the other work on the machine.
load1() {
    local a b c d e f g h t0 i0 t1 i1
    read -r _ a b c d e f g h _ </proc/stat
    t0=$((a + b + c + d + e + f + g + h)) i0=$((d + e))
    sleep 2
    read -r _ a b c d e f g h _ </proc/stat
    t1=$((a + b + c + d + e + f + g + h)) i1=$((d + e))
    awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v t=$((t1 - t0)) -v i=$((i1 - i0)) -v n="$(nproc)" \
        'BEGIN { printf "%s/%.1f", l, n * (1 - i / t) }'
}

# wrk_field <wrk output file> <rps|p50|p99|non2xx|errors|requests>
# Latencies in ms.
wrk_field() {
    local f=$1 what=$2
    case $what in
        rps) awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$f" ;;
        requests) awk '/requests in/ {print $1}' "$f" ;;
        p50 | p99)
            local q=${what#p}
            awk -v q="$q%" '$1 == q {
                v = $2; u = v; sub(/[0-9.]+/, "", u); n = v + 0;
                if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
                printf "%.2f", n }' "$f"
            ;;
        non2xx) awk '/Non-2xx or 3xx responses:/ {s = $NF} END {print s + 0}' "$f" ;;
        errors) awk '/Socket errors:/ {gsub(/,/, ""); s = $4 + $6 + $8 + $10} END {print s + 0}' "$f" ;;
    esac
}
