#!/usr/bin/env bash
# Backup/restore drill against a real PostgreSQL (Debian package `postgresql`, a throwaway cluster
# in a temp dir run as an unprivileged user): renders the chart with RENDERED.yaml's backup
# ConfigMap, runs its backup.sh with the CronJob's environment (paths moved into the temp dir) on a
# database, a media store and a signing key with test data, restores into a fresh database and
# directory with restore.sh, and compares schema+data (pg_dump), media (diff -r) and key (cmp).
# Also: retention keeps BACKUP_KEEP backups, and a corrupted backup is refused (SHA256SUMS).
# usage: backup_restore.sh RENDERED.yaml PYTHON
set -euo pipefail
rendered="$1"; py="$2"
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [[ -z "$pgbin" ]]; then
  if [[ $(id -u) == 0 ]]; then apt-get install -y -q postgresql >/dev/null; pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  else echo "backup_restore: install the Debian package postgresql" >&2; exit 1; fi
fi
run_as=()
if [[ $(id -u) == 0 ]]; then run_as=(setpriv --reuid=nobody --regid=nogroup --clear-groups); fi
t="$(mktemp -d)"; chmod 755 "$t"
cleanup() { "${run_as[@]}" "$pgbin/pg_ctl" -D "$t/pgdata" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$t"; }
trap cleanup EXIT

# The scripts and the environment exactly as rendered.
"$py" - "$rendered" "$t" <<'PY'
import sys, yaml, shlex
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
comp = lambda d: d["metadata"].get("labels", {}).get("app.kubernetes.io/component")
cm = next(d for d in docs if d["kind"] == "ConfigMap" and comp(d) == "backup")
cj = next(d for d in docs if d["kind"] == "CronJob" and comp(d) == "backup")
c = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
assert c["command"] == ["sh", "/opt/govmx-backup/backup.sh"], c["command"]
for k in ("backup.sh", "restore.sh"):
    open(f"{sys.argv[2]}/{k}", "w").write(cm["data"][k])
with open(f"{sys.argv[2]}/env.sh", "w") as f:
    for e in c["env"]:
        f.write(f"export {e['name']}={shlex.quote(e['value'])}\n")
PY
# shellcheck disable=SC1091
source "$t/env.sh"
echo "rendered CronJob env: PGUSER=$PGUSER PGDATABASE=$PGDATABASE PGSSLMODE=$PGSSLMODE BACKUP_KEEP=$BACKUP_KEEP"
mkdir -p "$t/sock" "$t/backup" "$t/media/local_content/ab/cd" "$t/keys" "$t/restore"
printf 'drill-password-%s\n' "$RANDOM$RANDOM" >"$t/password"
head -c 300000 /dev/urandom >"$t/media/local_content/ab/cd/efghijklmnop"
printf 'thumbnail\n' >"$t/media/local_content/ab/cd/thumb"
printf 'ed25519 a_test %s\n' "$(head -c 32 /dev/urandom | base64)" >"$t/keys/signing.key"
chown -R nobody:nogroup "$t" 2>/dev/null || true
chmod 600 "$t/password"

as() { "${run_as[@]}" env PGHOST="$t/sock" PGPORT=54329 PGUSER="$PGUSER" PGSSLMODE=disable "$@"; }
as "$pgbin/initdb" -D "$t/pgdata" -U "$PGUSER" --pwfile="$t/password" --auth=scram-sha-256 \
  --encoding=UTF8 --locale=C >/dev/null
as "$pgbin/pg_ctl" -D "$t/pgdata" -l "$t/pg.log" -w \
  -o "-c listen_addresses='' -c unix_socket_directories=$t/sock -p 54329" start >/dev/null
export PGPASSWORD; PGPASSWORD="$(cat "$t/password")"
as env PGPASSWORD="$PGPASSWORD" "$pgbin/createdb" "$PGDATABASE"
as env PGPASSWORD="$PGPASSWORD" "$pgbin/psql" -q -v ON_ERROR_STOP=1 -d "$PGDATABASE" <<'SQL'
CREATE TABLE events (stream_ordering bigserial PRIMARY KEY, event_id text UNIQUE NOT NULL,
                     room_id text NOT NULL, json jsonb NOT NULL, blob bytea);
INSERT INTO events (event_id, room_id, json, blob)
  SELECT '$ev' || i, '!room' || (i % 7) || ':gov.example', jsonb_build_object('n', i, 'body', repeat('x', i % 50)),
         decode(md5(i::text), 'hex')
  FROM generate_series(1, 5000) AS i;
CREATE TABLE users (name text PRIMARY KEY, admin boolean, creation_ts bigint);
INSERT INTO users VALUES ('@alice:gov.example', true, 1700000000), ('@bob:gov.example', false, 1700000001);
CREATE INDEX events_room ON events (room_id);
CREATE VIEW room_counts AS SELECT room_id, count(*) FROM events GROUP BY room_id;
SQL

backup_env=(env PGHOST="$t/sock" PGPORT=54329 PGSSLMODE=disable PGPASSWORD_FILE="$t/password"
            BACKUP_DIR="$t/backup" MEDIA_DIR="$t/media" SIGNING_KEY="$t/keys/signing.key")
for i in 1 2 3; do
  "${run_as[@]}" "${backup_env[@]}" BACKUP_KEEP=2 sh "$t/backup.sh" >/dev/null
  sleep 1.1
done
mapfile -t backups < <(ls -1 "$t/backup")
[[ ${#backups[@]} == 2 ]] || { echo "retention: expected 2 backups, found ${backups[*]}" >&2; exit 1; }
echo "backup.sh: 3 runs, retention kept 2 (${backups[*]})"
latest="$t/backup/${backups[1]}"

as env PGPASSWORD="$PGPASSWORD" "$pgbin/createdb" restored
"${run_as[@]}" "${backup_env[@]}" PGUSER="$PGUSER" PGDATABASE=restored MEDIA_DIR="$t/restore/media" \
  SIGNING_KEY_OUT="$t/restore/signing.key" sh "$t/restore.sh" "$latest" >/dev/null
dump() { as env PGPASSWORD="$PGPASSWORD" "$pgbin/pg_dump" --no-owner --no-privileges -d "$1" | grep -v '^-- Dumped\|^\\restrict\|^\\unrestrict'; }
diff <(dump "$PGDATABASE") <(dump restored) >/dev/null || { echo "restored database differs" >&2; diff <(dump "$PGDATABASE") <(dump restored) | head -20 >&2; exit 1; }
rows="$(as env PGPASSWORD="$PGPASSWORD" "$pgbin/psql" -At -d restored -c 'select count(*) from events')"
[[ "$rows" == 5000 ]] || { echo "restored events: $rows rows" >&2; exit 1; }
diff -r "$t/media" "$t/restore/media" || { echo "restored media differs" >&2; exit 1; }
cmp "$t/keys/signing.key" "$t/restore/signing.key" || { echo "restored signing key differs" >&2; exit 1; }
echo "restore.sh: database (schema+data, 5000 events), media store and signing key identical"

# A corrupted backup must be refused before anything is restored.
printf 'X' | dd of="$latest/media.tar" bs=1 seek=1000 conv=notrunc status=none
as env PGPASSWORD="$PGPASSWORD" "$pgbin/createdb" corrupt
if "${run_as[@]}" "${backup_env[@]}" PGUSER="$PGUSER" PGDATABASE=corrupt MEDIA_DIR="$t/restore/media2" \
     SIGNING_KEY_OUT="$t/restore/signing2.key" sh "$t/restore.sh" "$latest" >/dev/null 2>&1; then
  echo "restore.sh accepted a corrupted backup" >&2; exit 1
fi
[[ ! -e "$t/restore/media2" ]] || { echo "restore.sh touched the media store of a corrupted backup" >&2; exit 1; }
echo "restore.sh: corrupted backup refused (SHA256SUMS)"
