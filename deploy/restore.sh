#!/usr/bin/env bash
# Restore a backup made by backup.sh: the job records into PostgreSQL
# (pg_restore of postgres.dump) and the outputs (device_outputs.tar.gz).
#
#   deploy/restore.sh [options] BACKUP        BACKUP: a backup folder, or `latest`
#
# Where the data goes:
#   (default)                  the compose stack: every service but postgres is
#                              stopped first (they write the records and the
#                              outputs), and started again at the end
#   --database-url URL         a PostgreSQL reachable from here (or PGURL)
#   --outputs-dir DIR          a folder of outputs (or OUTPUTS_DIR); with
#                              --database-url, no Docker is used at all
# Options:
#   --backup-dir DIR           where `latest` is looked for (BACKUP_DIR, default var/backups)
#   --skip-database, --skip-outputs   restore one half only
#   --no-start                 (compose) leave the stopped services stopped
#   --env-file FILE            the compose .env (default .env at the repository root)
#   --yes                      do not ask for confirmation (required without a terminal)
#   --dry-run                  print what would be done, change nothing
#
# What it replaces: every table, sequence and index that is in the dump is
# dropped and recreated with the dump's rows (objects created after the backup
# and not in it are left alone); the outputs folder is emptied and refilled, so
# it holds exactly the backed-up files afterwards. Checksums are verified first.
set -euo pipefail
SCRIPT_NAME=restore
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }

ENV_FILE=$DEPLOY_ROOT/.env
database_url=${PGURL:-}
outputs_dir=${OUTPUTS_DIR:-}
backup_root=${BACKUP_DIR:-}
which=""
restore_database=true
restore_outputs=true
start_again=true
assume_yes=false
while [ "$#" -gt 0 ]; do
  case "$1" in
    --database-url) database_url=${2:?--database-url needs a URL}; shift 2 ;;
    --outputs-dir) outputs_dir=${2:?--outputs-dir needs a folder}; shift 2 ;;
    --backup-dir) backup_root=${2:?--backup-dir needs a folder}; shift 2 ;;
    --skip-database) restore_database=false; shift ;;
    --skip-outputs) restore_outputs=false; shift ;;
    --no-start) start_again=false; shift ;;
    --env-file) ENV_FILE=${2:?--env-file needs a file}; shift 2 ;;
    --yes) assume_yes=true; shift ;;
    --dry-run) DRY_RUN=true; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$which" ] || die "one backup at a time (got $which and $1)"; which=$1; shift ;;
  esac
done
[ -n "$which" ] || die "which backup? Give its folder, or 'latest' (see --help)"
resolve_data_location "restore"
backup=$(resolve_backup "$backup_root" "$which")

# --- the backup is whole and intact -------------------------------------------------
[ ! -e "$backup/SHA256SUMS" ] || (cd "$backup" && sha256sum --quiet --check SHA256SUMS) ||
  die "$backup fails its checksums (SHA256SUMS): not restoring from it"
[ "$restore_database" = false ] || [ -f "$backup/postgres.dump" ] || die "$backup has no postgres.dump"
[ "$restore_outputs" = false ] || [ -f "$backup/device_outputs.tar.gz" ] || die "$backup has no device_outputs.tar.gz"

if [ "$mode" = direct ]; then
  [ "$restore_database" = false ] || command -v pg_restore >/dev/null || die "pg_restore not found (Debian: apt-get install postgresql-client)"
  [ -d "$outputs_dir" ] || run mkdir -p "$outputs_dir"
  [ ! -d "$outputs_dir" ] || outputs_dir=$(cd "$outputs_dir" && pwd)
  target="database $(printf '%s' "$database_url" | sed -E 's#//[^@/]*@#//#') and folder $outputs_dir"
else
  ensure_compose_files
  target="the compose stack (volumes $(volume_name postgres_data) via pg_restore, $(volume_name device_outputs))"
fi

say "restoring $backup into $target"
if [ "$assume_yes" != true ] && [ "$DRY_RUN" != true ]; then
  [ -t 0 ] || die "this replaces the job records and the outputs; pass --yes to confirm"
  read -r -p "This replaces the job records and the outputs. Type yes to go on: " answer
  [ "$answer" = yes ] || die "not confirmed; nothing changed"
fi

# --- compose: stop the writers ---------------------------------------------------
stopped=()
if [ "$mode" = compose ]; then
  step "stopping every service but postgres"
  mapfile -t services < <(compose config --services | grep -vx postgres)
  if [ "${#services[@]}" -gt 0 ]; then
    run compose stop "${services[@]}"
    stopped=("${services[@]}")
  fi
  run compose up -d --wait postgres
fi

# --- PostgreSQL ---------------------------------------------------------------
if [ "$restore_database" = true ]; then
  step "PostgreSQL: pg_restore --clean"
  restore_options=(--clean --if-exists --no-owner --exit-on-error --single-transaction)
  if [ "$mode" = direct ]; then
    run pg_restore "${restore_options[@]}" --dbname="$database_url" "$backup/postgres.dump"
  else
    # shellcheck disable=SC2016 # $POSTGRES_* are expanded by the container's shell
    run_from_file "$backup/postgres.dump" compose exec -T postgres \
      sh -c 'exec pg_restore '"${restore_options[*]}"' -U "$POSTGRES_USER" -d "$POSTGRES_DB"'
  fi
fi

# --- outputs ------------------------------------------------------------------
if [ "$restore_outputs" = true ]; then
  step "outputs: emptied, then device_outputs.tar.gz extracted"
  if [ "$mode" = direct ]; then
    run find "$outputs_dir" -mindepth 1 -delete
    run tar -C "$outputs_dir" -xzf "$backup/device_outputs.tar.gz"
  else
    run docker run --rm -v "$(volume_name device_outputs):/target" -v "$backup:/backup:ro" "$HELPER_IMAGE" \
      sh -c 'find /target -mindepth 1 -delete && tar xzf /backup/device_outputs.tar.gz -C /target'
  fi
fi

# --- compose: start again ------------------------------------------------------
if [ "${#stopped[@]}" -gt 0 ]; then
  if [ "$start_again" = true ]; then
    step "starting the stopped services again"
    run compose up -d "${stopped[@]}"
  else
    say "left stopped (--no-start): ${stopped[*]}"
  fi
fi
say "restored $backup"
