#!/bin/sh
# govmx restore: verifies SHA256SUMS of one backup directory, restores the database into the
# (empty or existing) database PGDATABASE, the media store into MEDIA_DIR and the signing key to
# SIGNING_KEY_OUT. Synapse must be stopped (scaled to 0) while it runs: helm/docs/backup-restore.md.
# usage: restore.sh BACKUP_SUBDIR   (env as backup.sh, plus SIGNING_KEY_OUT)
set -eu
src="${1:?usage: restore.sh BACKUP_SUBDIR}"
: "${MEDIA_DIR:?}" "${SIGNING_KEY_OUT:?}" "${PGPASSWORD_FILE:?}"
PGPASSWORD="$(cat "$PGPASSWORD_FILE")"
export PGPASSWORD
(cd "$src" && sha256sum -c SHA256SUMS)
pg_restore --clean --if-exists --no-owner --no-privileges --exit-on-error --single-transaction \
  --dbname="$PGDATABASE" "$src/synapse.pgdump"
mkdir -p "$MEDIA_DIR"
tar -C "$MEDIA_DIR" -xf "$src/media.tar"
cp "$src/signing.key" "$SIGNING_KEY_OUT"
echo "restored $src"
