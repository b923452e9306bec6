#!/bin/sh
# govmx backup: PostgreSQL (pg_dump custom format), the Synapse media store (tar) and the signing
# key into $BACKUP_DIR/<UTC timestamp>/ with SHA256SUMS; keeps the newest $BACKUP_KEEP backups.
# Run by the chart's backup CronJob; tested against a real PostgreSQL by helm/tests/backup_restore.sh.
# Environment: PGHOST PGPORT PGUSER PGDATABASE PGSSLMODE, PGPASSWORD_FILE, BACKUP_DIR, MEDIA_DIR,
# SIGNING_KEY, BACKUP_KEEP.
set -eu
umask 077
: "${BACKUP_DIR:?}" "${MEDIA_DIR:?}" "${SIGNING_KEY:?}" "${PGPASSWORD_FILE:?}"
keep="${BACKUP_KEEP:-7}"
PGPASSWORD="$(cat "$PGPASSWORD_FILE")"
export PGPASSWORD
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
work="$BACKUP_DIR/.partial-$stamp"
rm -rf "$work"
mkdir -p "$work"
pg_dump --format=custom --no-owner --no-privileges --file="$work/synapse.pgdump"
tar -C "$MEDIA_DIR" -cf "$work/media.tar" .
cp "$SIGNING_KEY" "$work/signing.key"
(cd "$work" && sha256sum synapse.pgdump media.tar signing.key > SHA256SUMS)
mv "$work" "$BACKUP_DIR/$stamp"
echo "backup $BACKUP_DIR/$stamp complete"
# Retention: the newest $keep complete backups stay (names sort by time).
ls -1 "$BACKUP_DIR" | grep -E '^[0-9]{8}T[0-9]{6}Z$' | sort -r | tail -n +"$((keep + 1))" | while read -r old; do
  rm -rf "${BACKUP_DIR:?}/$old"
  echo "removed old backup $old"
done
