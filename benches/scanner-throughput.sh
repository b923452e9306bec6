#!/usr/bin/env bash
# Media scanner benchmark (issue 4), all on loopback, everything in a temp dir:
#   - clamdscan --stream of 1 MB / 10 MB / 100 MB random files against one clamd (the physical
#     limit of a scanning proxy), vs the same sizes uploaded through govmx-media-scanner
#     (POST /_matrix/media/v3/upload, curl -T) to a fast nginx backend that returns 200 JSON;
#   - the peer: matrix-content-scanner 1.0.8 (PyPI, own venv) scanning with a clamdscan script
#     against the same clamd, on download from a real Synapse 1.163.2
#     (GET /_matrix/media_proxy/unstable/download/<server>/<media>), beside govmx-media-scanner's
#     MCS-compatible download of the same sizes from the same Synapse;
#   - peak RSS (VmHWM) of each scanner after each size, and of govmx-media-scanner after a
#     1 GiB upload (clamd's StreamMaxLength/MaxScanSize/MaxFileSize raised for it).
# Every timed run scans new random bytes (a fresh file, or a fresh upload to Synapse, outside the
# timing), so no verdict cache (ours, MCS's or libclamav's clean-file cache) ever hits. The four
# paths are timed back to back within each run, so background load hits them alike.
# Prints markdown tables on stdout; progress on stderr.
#
# Env: RUNS_1MB (10), RUNS_10MB (5), RUNS_100MB (3), GIB=0 skips the 1 GiB upload,
#      BENCH_PORT_BASE (28500), KEEP=1 keeps the temp dir.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BASE=${BENCH_PORT_BASE:-28500}
RUNS_1MB=${RUNS_1MB:-10}
RUNS_10MB=${RUNS_10MB:-5}
RUNS_100MB=${RUNS_100MB:-3}
GIB=${GIB:-1}
SERVER=media.bench.example
P_CLAMD=$((BASE + 0)) P_SCANNER=$((BASE + 1)) P_SCANNER_ADMIN=$((BASE + 2))
P_NGX=$((BASE + 3)) P_SYN=$((BASE + 4)) P_MCS=$((BASE + 5))
MCS_VENV="${MCS_VENV:-$HOME/.cache/govmx/bench/mcs-1.0.8}"

need_pkg nginx nginx-light
need_pkg clamd clamav-daemon
need_pkg clamdscan clamdscan
[[ -x "$SYNAPSE_VENV/bin/python" ]] || (cd "$REPO" && cargo run -q -p govmx -- setup)
if ! "$MCS_VENV/bin/python" -c 'import matrix_content_scanner.mcs' 2>/dev/null; then
    log "installing matrix-content-scanner 1.0.8 into $MCS_VENV"
    python3 -m venv "$MCS_VENV"
    # mautrix (resolved to 0.21.x) no longer ships the extras 1.0.8 asks for: base58 (crypto)
    # and python-magic (mimetype detection) are added by hand.
    "$MCS_VENV/bin/pip" install -q matrix-content-scanner==1.0.8 base58 python-magic
fi
check_ports $(seq "$BASE" $((BASE + 5)))

# The 1 GiB run needs ~3.5 GiB (source file, our spool, clamd's stream copy): use tmpfs when it has
# room (the example config recommends tmpfs for the spool anyway), else /tmp.
TMPROOT=/tmp
if [[ -d /dev/shm ]] && (($(df -Pk /dev/shm | awk 'NR == 2 {print $4}') > 5 * 1024 * 1024)); then TMPROOT=/dev/shm; fi
WORK=$(mktemp -d "$TMPROOT/govmx-bench-scan.XXXXXX")
trap cleanup EXIT
log "building release binaries"
build_release
SCANNER="$BIN/govmx-media-scanner"
mkdir -p "$WORK"/{clamd/db,spool,ngx,syn,mcs/tmp,files}
chmod 700 "$WORK/spool"

# ---------------------------------------------------------------- clamd (limits raised for 1 GiB)
# The EICAR test signature (what govmx-stack writes too), plus Debian's real databases if present.
printf '44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n' >"$WORK/clamd/db/test.hdb"
for db in /var/lib/clamav/*.cvd /var/lib/clamav/*.cld; do
    if [ -e "$db" ]; then ln -s "$db" "$WORK/clamd/db/"; fi
done
cat >"$WORK/clamd/clamd.conf" <<EOF
DatabaseDirectory $WORK/clamd/db
TemporaryDirectory $WORK/clamd
TCPSocket $P_CLAMD
TCPAddr 127.0.0.1
Foreground yes
LogFile $WORK/clamd/clamd.log
StreamMaxLength 1100M
MaxScanSize 1100M
MaxFileSize 1100M
MaxScanTime 300000
MaxThreads 10
EOF
clamd -c "$WORK/clamd/clamd.conf" >"$WORK/clamd/stdout" 2>&1 &
CLAMD_PID=$!
PIDS+=("$CLAMD_PID")

# ---------------------------------------------------------------- nginx: the fast upload backend
cat >"$WORK/ngx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/ngx/nginx.pid;
error_log $WORK/ngx/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $WORK/ngx/body; proxy_temp_path $WORK/ngx/proxy;
  fastcgi_temp_path $WORK/ngx/fcgi; uwsgi_temp_path $WORK/ngx/uwsgi; scgi_temp_path $WORK/ngx/scgi;
  client_max_body_size 0;
  # Stands in for Synapse's upload endpoint: reads (discards) the body, answers 200 JSON.
  server { listen 127.0.0.1:$P_NGX;
    location / { default_type application/json; return 200 '{"content_uri":"mxc://$SERVER/bench"}'; } }
}
EOF
nginx -c "$WORK/ngx/nginx.conf" -e "$WORK/ngx/error.log" -g 'daemon off;' &
PIDS+=($!)

# ---------------------------------------------------------------- Synapse (serves the media MCS fetches)
cat >"$WORK/syn/log.config" <<EOF
version: 1
formatters: {precise: {format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'}}
handlers:
  file: {class: logging.FileHandler, formatter: precise, filename: $WORK/syn/homeserver.log, filters: [context]}
filters: {context: {(): synapse.logging.context.LoggingContextFilter, request: ""}}
loggers: {synapse.storage.SQL: {level: WARNING}}
root: {level: INFO, handlers: [file]}
disable_existing_loggers: false
EOF
cat >"$WORK/syn/homeserver.yaml" <<EOF
server_name: "$SERVER"
pid_file: $WORK/syn/homeserver.pid
report_stats: false
listeners:
  - {port: $P_SYN, bind_addresses: ['127.0.0.1'], type: http, tls: false, x_forwarded: true,
     resources: [{names: [client], compress: false}]}
database: {name: sqlite3, args: {database: $WORK/syn/homeserver.db}}
log_config: $WORK/syn/log.config
media_store_path: $WORK/syn/media
signing_key_path: $WORK/syn/signing.key
macaroon_secret_key: "bench-macaroon"
form_secret: "bench-form"
registration_shared_secret: "bench-shared"
trusted_key_servers: []
suppress_key_server_warning: true
max_upload_size: 1200M
# matrix-content-scanner 1.0.8 fetches /_matrix/media/v3/download without a token.
enable_authenticated_media: false
rc_media_create: {per_second: 1000, burst_count: 1000}
EOF
"$SYNAPSE_VENV/bin/python" -m synapse.app.homeserver -c "$WORK/syn/homeserver.yaml" --generate-keys >/dev/null 2>&1
"$SYNAPSE_VENV/bin/python" -m synapse.app.homeserver -c "$WORK/syn/homeserver.yaml" >"$WORK/syn/stdout" 2>&1 &
PIDS+=($!)

# ---------------------------------------------------------------- govmx-media-scanner
cat >"$WORK/scanner.yaml" <<EOF
listen: 127.0.0.1:$P_SCANNER
admin_listen: 127.0.0.1:$P_SCANNER_ADMIN
upstream: http://127.0.0.1:$P_NGX
clamd:
  addresses: ["127.0.0.1:$P_CLAMD"]
  connect_timeout: 2s
  io_timeout: 60s
  scan_timeout: 300s
  chunk_size: 64KiB
  health_interval: 10s
max_upload_size: 1100MiB
spool:
  memory_limit: 1MiB
  dir: $WORK/spool
mime:
  allow: []
  block: []
scanner_unavailable: reject
audit_log: $WORK/scanner-audit.jsonl
verdict_cache:
  max_entries: 10000
scan_api:
  enabled: false
drain_timeout: 10s
limits:
  max_concurrent_scans: 10
  queue_timeout: 30s
  max_spool_bytes: 4GiB
signatures:
  warn_age: 2d
  refuse_unknown_age: false
mcs:
  enabled: true
  homeserver_url: http://127.0.0.1:$P_SYN
  request_secret_file: $WORK/mcs-request-secret
  fetch_timeout: 300s
EOF

# ---------------------------------------------------------------- matrix-content-scanner 1.0.8
cat >"$WORK/mcs/scan.sh" <<EOF
#!/bin/sh
# exit 0 clean, 1 virus, 2 error (same clamd as everything else)
exec clamdscan -c $WORK/clamd/clamd.conf --stream --no-summary --quiet "\$1"
EOF
chmod +x "$WORK/mcs/scan.sh"
cat >"$WORK/mcs/config.yaml" <<EOF
web: {host: 127.0.0.1, port: $P_MCS}
scan:
  script: $WORK/mcs/scan.sh
  temp_directory: $WORK/mcs/tmp
result_cache:
  exit_codes_to_ignore: [2]
download:
  base_homeserver_url: http://127.0.0.1:$P_SYN
crypto:
  pickle_path: $WORK/mcs/pickle
  pickle_key: bench-pickle-key
EOF

# clamd must answer before the scanner's first health check
clamdscan -c "$WORK/clamd/clamd.conf" --ping 120:1 >/dev/null || die "clamd did not start: $(tail -5 "$WORK/clamd/clamd.log")"
GOVMX_LOG=info "$SCANNER" --config "$WORK/scanner.yaml" >"$WORK/scanner.log" 2>&1 &
SCANNER_PID=$!
PIDS+=("$SCANNER_PID")
"$MCS_VENV/bin/python" -m matrix_content_scanner.mcs -c "$WORK/mcs/config.yaml" >"$WORK/mcs/log" 2>&1 &
MCS_PID=$!
PIDS+=("$MCS_PID")

wait_http "http://127.0.0.1:$P_NGX/" 30
wait_http "http://127.0.0.1:$P_SYN/health" 60
wait_http "http://127.0.0.1:$P_SCANNER_ADMIN/readyz" 30
wait_http "http://127.0.0.1:$P_MCS/_matrix/media_proxy/unstable/public_key" 30

# Synapse user + token for uploads
"$SYNAPSE_VENV/bin/register_new_matrix_user" -c "$WORK/syn/homeserver.yaml" -u bench -p bench-pw --no-admin \
    "http://127.0.0.1:$P_SYN" >/dev/null
TOKEN=$(curl -sf "http://127.0.0.1:$P_SYN/_matrix/client/v3/login" \
    -d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"bench"},"password":"bench-pw"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
echo "$TOKEN" >"$WORK/token"

# helper scripts: fresh random content for each timed run
cat >"$WORK/new-file.sh" <<EOF
#!/bin/sh
# new-file.sh <bytes> <path>: fresh random content
head -c "\$1" /dev/urandom >"\$2"
EOF
cat >"$WORK/new-media.sh" <<EOF
#!/bin/sh
# new-media.sh <bytes> <tag>: fresh random content uploaded to Synapse; media id in $WORK/files/<tag>.mid
set -e
head -c "\$1" /dev/urandom >"$WORK/files/\$2.bin"
curl -sf -X POST -T "$WORK/files/\$2.bin" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/octet-stream' "http://127.0.0.1:$P_SYN/_matrix/media/v3/upload?filename=b.bin" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["content_uri"].rsplit("/",1)[1])' >"$WORK/files/\$2.mid"
rm -f "$WORK/files/\$2.bin"
EOF
chmod +x "$WORK/new-file.sh" "$WORK/new-media.sh"

# Sanity: EICAR refused by both scanners, clean passes.
printf '%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' >"$WORK/files/eicar"
s=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$WORK/files/eicar" "http://127.0.0.1:$P_SCANNER/_matrix/media/v3/upload")
[[ $s == 403 ]] || die "scanner upload of EICAR answered $s"
"$WORK/new-media.sh" 1000 probe
s=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_MCS/_matrix/media_proxy/unstable/download/$SERVER/$(cat "$WORK/files/probe.mid")")
[[ $s == 200 ]] || die "matrix-content-scanner download answered $s: $(tail -5 "$WORK/mcs/log")"
"$WORK/new-media.sh" 1000 probe
s=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_SCANNER/_matrix/media_proxy/unstable/download/$SERVER/$(cat "$WORK/files/probe.mid")")
[[ $s == 200 ]] || die "govmx MCS download answered $s"
log "sanity ok (EICAR 403 through the scanner; MCS and govmx MCS downloads 200)"

# Each run times the four paths back to back on fresh random content (interleaved, so background
# load hits all four alike); per method: median, min, max of N runs. Timings in $WORK/times-<m>-<size>.
now_ns() { date +%s%N; }
timed() { # timed <file to append seconds to> <command...>
    local out=$1 t0 t1
    shift
    t0=$(now_ns)
    "$@" >/dev/null || die "failed: $*"
    t1=$(now_ns)
    python3 -c "print(($t1 - $t0) / 1e9)" >>"$out"
}
mcs_get() { curl -sf -o /dev/null "$1/_matrix/media_proxy/unstable/download/$SERVER/$(cat "$2")"; }

declare -A R
CLAMDSCAN=(clamdscan -c "$WORK/clamd/clamd.conf" --stream --no-summary)
for size in 1 10 100; do
    bytes=$((size * 1000000))
    runs_var=RUNS_${size}MB
    runs=${!runs_var}
    f="$WORK/files/f$size"
    R[load_$size]=$(load1)
    log "${size} MB x $runs: clamdscan --stream | govmx upload | MCS 1.0.8 download | govmx MCS download"
    for _ in $(seq 1 "$runs"); do
        "$WORK/new-file.sh" "$bytes" "$f"
        timed "$WORK/times-clamd-$size" "${CLAMDSCAN[@]}" "$f"
        "$WORK/new-file.sh" "$bytes" "$f"
        timed "$WORK/times-ours-$size" curl -sf -o /dev/null -X POST -T "$f" -H Content-Type:application/octet-stream \
            "http://127.0.0.1:$P_SCANNER/_matrix/media/v3/upload?filename=b.bin"
        "$WORK/new-media.sh" "$bytes" mcs
        timed "$WORK/times-mcs-$size" mcs_get "http://127.0.0.1:$P_MCS" "$WORK/files/mcs.mid"
        "$WORK/new-media.sh" "$bytes" ours
        timed "$WORK/times-oursmcs-$size" mcs_get "http://127.0.0.1:$P_SCANNER" "$WORK/files/ours.mid"
    done
    R[hwm_ours_$size]=$(vm_hwm_kib "$SCANNER_PID")
    R[hwm_mcs_$size]=$(vm_hwm_kib "$MCS_PID")
    rm -f "$f"
done

if [[ $GIB == 1 ]]; then
    log "1 GiB upload through govmx-media-scanner "
    R[load_gib]=$(load1)
    head -c $((1024 * 1024 * 1024)) /dev/urandom >"$WORK/files/gib"
    t0=$(date +%s.%N)
    s=$(curl -s -o /dev/null -w '%{http_code}' -X POST -T "$WORK/files/gib" -H Content-Type:application/octet-stream \
        "http://127.0.0.1:$P_SCANNER/_matrix/media/v3/upload?filename=gib.bin")
    t1=$(date +%s.%N)
    R[gib_status]=$s
    [[ $s == 200 ]] || log "1 GiB upload answered $s; scanner log: $(tail -3 "$WORK/scanner.log"); df: $(df -h "$WORK" | tail -1)"
    R[gib_s]=$(python3 -c "print('%.1f' % ($t1 - $t0))")
    R[hwm_ours_gib]=$(vm_hwm_kib "$SCANNER_PID")
    rm -f "$WORK/files/gib"
fi

# ---------------------------------------------------------------- report
stat() { python3 -c "import statistics as s; v = [float(x) for x in open('$WORK/times-$1')]; print({'median': s.median(v), 'min': min(v), 'max': max(v)}['$2'])"; }
mbps() { python3 -c "print('%.1f' % ($1 / 1e6 / $(stat "$2" median)))"; }
secs() { python3 -c "print('%.3f (%.3f–%.3f)' % ($(stat "$1" median), $(stat "$1" min), $(stat "$1" max)))"; }
ratio() { python3 -c "print('%.2f' % ($(stat "$2" median) / $(stat "$1" median)))"; }
mib() { python3 -c "print('%.1f' % ($1 / 1024))"; }
echo
echo "### Media scanner throughput, $(date -u +%Y-%m-%dT%H:%MZ), work dir on $TMPROOT, $(nproc) cores, clamd $(clamd --version | cut -d/ -f1 | awk '{print $2}') (one-signature test DB), random data, 1 MB = 10^6 bytes"
echo
echo "Upload path: govmx-media-scanner (spool + INSTREAM, then forward) -> nginx returning 200 JSON, vs clamdscan --stream:"
echo
echo "| size | runs | load / busy cores before | clamdscan --stream s, median (min–max) | MB/s | govmx upload s, median (min–max) | MB/s | govmx / clamd |"
echo "|---|---|---|---|---|---|---|---|"
for size in 1 10 100; do
    b=$((size * 1000000))
    runs_var=RUNS_${size}MB
    echo "| $size MB | ${!runs_var} | ${R[load_$size]} | $(secs clamd-$size) | $(mbps $b clamd-$size) | $(secs ours-$size) | $(mbps $b ours-$size) | **$(ratio ours-$size clamd-$size)×** |"
done
echo
echo "Download-and-scan from Synapse (MCS API): matrix-content-scanner 1.0.8 (clamdscan --stream script) vs govmx-media-scanner:"
echo
echo "| size | MCS 1.0.8 s, median (min–max) | MB/s | VmHWM after | govmx MCS API s, median (min–max) | MB/s | VmHWM after (whole process) | throughput govmx / MCS | memory MCS / govmx |"
echo "|---|---|---|---|---|---|---|---|---|"
for size in 1 10 100; do
    b=$((size * 1000000))
    echo "| $size MB | $(secs mcs-$size) | $(mbps $b mcs-$size) | $(mib ${R[hwm_mcs_$size]}) MiB | $(secs oursmcs-$size) | $(mbps $b oursmcs-$size) | $(mib ${R[hwm_ours_$size]}) MiB | **$(ratio oursmcs-$size mcs-$size)×** | **$(python3 -c "print('%.1f' % (${R[hwm_mcs_$size]} / ${R[hwm_ours_$size]}))")×** |"
done
if [[ $GIB == 1 ]]; then
    echo
    echo "1 GiB upload through govmx-media-scanner: HTTP ${R[gib_status]} in ${R[gib_s]} s ($(python3 -c "print('%.1f' % (1073741824 / 1e6 / ${R[gib_s]}))") MB/s), scanner VmHWM $(mib ${R[hwm_ours_gib]}) MiB (whole process lifetime; load / busy cores before: ${R[load_gib]})."
fi
echo
