#!/usr/bin/env bash
# Back up the job records (PostgreSQL) and the generated outputs into a new
# timestamped folder, then keep only the newest backups.
#
#   deploy/backup.sh [options]
#
# Where the data is:
#   (default)                  the compose stack: pg_dump and pg_basebackup run
#                              inside the postgres container; the outputs come
#                              from the device-operations_device_outputs volume
#   --database-url URL         a PostgreSQL reachable from here (or PGURL)
#   --outputs-dir DIR          a folder of outputs (or OUTPUTS_DIR); with
#                              --database-url, no Docker is used at all
# Options:
#   --backup-dir DIR           where backups go (BACKUP_DIR, default var/backups)
#   --keep N                   backups kept, newest first (BACKUP_RETENTION, default 7)
#   --env-file FILE            the compose .env (default .env at the repository root)
#   --dry-run                  print what would be done, change nothing
#
# A backup folder BACKUP_DIR/<UTC time>/ holds
#   postgres.dump          pg_dump --format=custom: what restore.sh restores
#   postgres_data.tar.gz   (compose mode) the data directory from pg_basebackup,
#                          for the checklist's manual rollback (rollback.sh)
#   device_outputs.tar.gz  the outputs
#   backup.info, SHA256SUMS
# It is written as <time>.partial and renamed when complete: a folder without
# the suffix is always a whole backup. Prints the folder's path last.
set -euo pipefail
SCRIPT_NAME=backup
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }

ENV_FILE=$DEPLOY_ROOT/.env
database_url=${PGURL:-}
outputs_dir=${OUTPUTS_DIR:-}
backup_root=${BACKUP_DIR:-}
keep=${BACKUP_RETENTION:-}
while [ "$#" -gt 0 ]; do
  case "$1" in
    --database-url) database_url=${2:?--database-url needs a URL}; shift 2 ;;
    --outputs-dir) outputs_dir=${2:?--outputs-dir needs a folder}; shift 2 ;;
    --backup-dir) backup_root=${2:?--backup-dir needs a folder}; shift 2 ;;
    --keep) keep=${2:?--keep needs a number}; shift 2 ;;
    --env-file) ENV_FILE=${2:?--env-file needs a file}; shift 2 ;;
    --dry-run) DRY_RUN=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -n "$keep" ] || keep=$(setting BACKUP_RETENTION)
[ -n "$keep" ] || keep=7
[[ "$keep" =~ ^[1-9][0-9]*$ ]] || die "--keep must be a whole number of at least 1 (got '$keep')"
resolve_data_location "back up a stack"

# --- what the mode needs ------------------------------------------------------
if [ "$mode" = direct ]; then
  command -v pg_dump >/dev/null || die "pg_dump not found (Debian: apt-get install postgresql-client)"
  [ -d "$outputs_dir" ] || die "outputs folder $outputs_dir does not exist"
  outputs_dir=$(cd "$outputs_dir" && pwd)
else
  if [ "$DRY_RUN" != true ]; then
    [ -n "$(compose ps --status running --quiet postgres 2>/dev/null)" ] ||
      die "the postgres service is not running (docker compose ps postgres): start the stack, or restore from an older backup"
  fi
fi

# --- a new folder ------------------------------------------------------------
umask 077
stamp=$(date -u +%Y%m%dT%H%M%SZ)
name=$stamp
suffix=1
while [ -e "$backup_root/$name" ] || [ -e "$backup_root/$name.partial" ]; do
  suffix=$((suffix + 1))
  name=$(printf '%s-%02d' "$stamp" "$suffix")
done
final=$backup_root/$name
partial=$final.partial
say "backing up ($mode mode) into $final"
run mkdir -p "$partial"
if [ "$DRY_RUN" != true ]; then
  # A failure leaves no half backup behind.
  trap 'rm -rf "$partial"' EXIT
fi

# --- PostgreSQL ---------------------------------------------------------------
step "PostgreSQL: pg_dump --format=custom"
if [ "$mode" = direct ]; then
  run pg_dump --format=custom --no-owner --dbname="$database_url" --file="$partial/postgres.dump"
else
  # Credentials and names are read inside the container; none is on this command line.
  # shellcheck disable=SC2016 # expanded by the container's shell
  run_to_file "$partial/postgres.dump" compose exec -T postgres \
    sh -c 'exec pg_dump --format=custom --no-owner -U "$POSTGRES_USER" -d "$POSTGRES_DB"'
  step "PostgreSQL: pg_basebackup of the data directory (the checklist's postgres_data.tar.gz)"
  # A consistent online copy (WAL included) that extracts into an empty
  # volume as a data directory: what rollback.sh restores with the checklist's tar command.
  # shellcheck disable=SC2016 # expanded by the container's shell
  run_to_file "$partial/postgres_data.tar.gz" compose exec -T postgres \
    sh -c 'exec pg_basebackup -U "$POSTGRES_USER" --pgdata=- --format=tar --wal-method=fetch --gzip --checkpoint=fast'
fi

# --- outputs ------------------------------------------------------------------
step "outputs: device_outputs.tar.gz"
if [ "$mode" = direct ]; then
  run tar -C "$outputs_dir" -czf "$partial/device_outputs.tar.gz" .
else
  volume=$(volume_name device_outputs)
  run docker run --rm -v "$volume:/source:ro" -v "$partial:/backup" "$HELPER_IMAGE" \
    tar -C /source -czf /backup/device_outputs.tar.gz .
fi

# --- describe, checksum, publish ------------------------------------------------------
if [ "$DRY_RUN" = true ]; then
  say "[dry-run] would write backup.info and SHA256SUMS, rename $partial to $final and keep the newest $keep backups"
  exit 0
fi
{
  echo "created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "mode=$mode"
  echo "git_commit=$(git -C "$DEPLOY_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  if [ "$mode" = compose ]; then
    echo "images=$(compose config --images 2>/dev/null | sort -u | tr '\n' ' ')"
  fi
} >"$partial/backup.info"
(cd "$partial" && sha256sum -- *.dump *.tar.gz >SHA256SUMS)
mv "$partial" "$final"
trap - EXIT
say "wrote $(du -sh "$final" | cut -f1) into $final"

# --- retention ----------------------------------------------------------------
mapfile -t backups < <(list_backups "$backup_root")
excess=$((${#backups[@]} - keep))
for ((i = 0; i < excess; i++)); do
  run rm -rf "${backup_root:?}/${backups[$i]}"
done
[ "$excess" -le 0 ] || say "kept the newest $keep backups, removed $excess"
echo "$final"
