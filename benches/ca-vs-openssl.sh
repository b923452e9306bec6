#!/usr/bin/env bash
# Agency CA issuance vs OpenSSL (issue 5): prints a markdown table.
#
#   1. `cargo bench -p govmx-agency-ca --bench issuance`: agency-identity certificates/s on one
#      thread (CSR parse + proof-of-possession check + policy checks + sign + DER/PEM), the raw
#      P-256 sign/verify rates in-process, and a 100,000-entry CRL;
#   2. `openssl speed -seconds 3 ecdsap256`: raw P-256 signatures/s (the physical limit);
#   3. a loop of `openssl x509 -req` issuing the same profile (URI SAN, custom EKU, master-key
#      extension) from the same kind of CSR: the "shell script CA".
#
# Env: OPENSSL_RUNS (default 100) iterations of the x509 loop; KEEP=1 keeps the temp dir.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORK="$(mktemp -d /tmp/govmx-bench-ca.XXXXXX)"
trap cleanup EXIT
RUNS="${OPENSSL_RUNS:-100}"
log "load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"

log "cargo bench -p govmx-agency-ca --bench issuance"
(cd "$REPO" && cargo bench -q -p govmx-agency-ca --bench issuance 2>/dev/null) | tee "$WORK/ours.txt" >&2
ours=$(awk '/^agency-identity issuance/ {print $(NF-4)}' "$WORK/ours.txt")
ours_sign=$(awk '/one P-256 signature alone/ {print $(NF-4)}' "$WORK/ours.txt")
ours_verify=$(awk '/one P-256 verification alone/ {print $(NF-4)}' "$WORK/ours.txt")
crl_ms=$(awk '/^CRL with/ {for (i = 1; i <= NF; i++) if ($i == "ms,") print $(i-1)}' "$WORK/ours.txt")

log "openssl speed -seconds 3 ecdsap256"
openssl speed -seconds 3 ecdsap256 2>/dev/null | tee "$WORK/speed.txt" >&2
read -r ossl_sign ossl_verify < <(awk '/nistp256/ {print $(NF-1), $NF}' "$WORK/speed.txt")

log "openssl x509 -req loop ($RUNS certificates, agency-identity profile)"
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout root.key -out root.pem \
    -days 30 -subj "/CN=Bench Root CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout int.key -out int.csr \
    -subj "/CN=Bench Issuing CA 1" 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n' > int.ext
openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -set_serial 1 -days 30 -extfile int.ext -out int.pem 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr \
    -subj "/CN=@amt-1:127.0.0.2:8448" -addext "subjectAltName=URI:matrix:u/amt-1:127.0.0.2:8448" 2>/dev/null
master="11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo"
master_hex=$(printf '%s' "$master" | od -An -tx1 | tr -d ' \n')
cat > leaf.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=1.3.6.1.4.1.59999.7.3.1
subjectAltName=URI:matrix:u/amt-1:127.0.0.2:8448
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
1.3.6.1.4.1.59999.7.1.1=DER:30360c07656432353531390c2b${master_hex}
EXT
start=$(date +%s.%N)
for i in $(seq 1 "$RUNS"); do
    openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -set_serial "$((i + 1000))" -days 7 \
        -extfile leaf.ext -subj "/CN=@amt-1:127.0.0.2:8448/O=Buergeramt/2.5.4.97=buergeramt" \
        -out leaf.pem 2>/dev/null
done
end=$(date +%s.%N)
openssl verify -CAfile root.pem -untrusted int.pem leaf.pem >&2
loop=$(awk -v n="$RUNS" -v s="$start" -v e="$end" 'BEGIN {printf "%.1f", n / (e - s)}')

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
cat <<TABLE

| measurement (one core) | figure | ratio |
|---|---|---|
| govmx-agency-ca: agency-identity issuance (CSR parse + PoP verify + checks + sign + DER/PEM) | $ours certs/s | — |
| \`openssl speed ecdsap256\`: raw P-256 signatures | $ossl_sign sign/s, $ossl_verify verify/s | ours = $(ratio "$ours" "$ossl_sign")× of raw signing |
| ceiling with OpenSSL's primitives: 1 verify (the CSR) + 1 sign per certificate | $(awk -v s="$ossl_sign" -v v="$ossl_verify" 'BEGIN {printf "%.0f", 1 / (1 / s + 1 / v)}') certs/s | ours = $(ratio "$ours" "$(awk -v s="$ossl_sign" -v v="$ossl_verify" 'BEGIN {print 1 / (1 / s + 1 / v)}')")× of it |
| in-process P-256 primitives (rcgen/ring sign, aws-lc verify) | $ours_sign sign/s, $ours_verify verify/s | — |
| loop of \`openssl x509 -req\`, same profile ($RUNS runs) | $loop certs/s | ours = $(ratio "$ours" "$loop")× faster |
| CRL with 100,000 revoked serials (build + sign + DER + PEM) | $crl_ms ms | goal < 1,000 ms |
TABLE
