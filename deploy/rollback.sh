#!/usr/bin/env bash
# The checklist's manual rollback plan, step by step:
#
#   deploy/rollback.sh [--backup FOLDER|latest] [--to GIT_REF] [--yes] [--dry-run]
#
#   1. Stop the current deployment    docker compose down --timeout 30
#   2. Restore from the backup        the checklist's commands, into emptied volumes:
#        docker run --rm -v device-operations_postgres_data:/target -v BACKUP:/backup alpine tar xzf /backup/postgres_data.tar.gz -C /target
#        docker run --rm -v device-operations_device_outputs:/target -v BACKUP:/backup alpine tar xzf /backup/device_outputs.tar.gz -C /target
#   3. Start the previous version     with --to REF: git checkout REF, then docker compose up -d --build;
#                                     without: the images deploy.sh kept as :rollback, then docker compose up -d
#   4. Verify the rollback            /health/ready through NGINX, every container running, the smoke test
#
# BACKUP is a folder made by backup.sh in compose mode (it holds
# postgres_data.tar.gz, the data directory, and device_outputs.tar.gz); the
# default is the newest one under BACKUP_DIR (var/backups). The volumes are
# emptied before the archives are extracted: a data directory extracted over
# another one would mix two databases. Everything written since the backup is
# lost, by design.
#
# Options:
#   --backup FOLDER|latest   which backup (default latest)
#   --to GIT_REF             the previous stable tag or commit to check out
#   --env-file FILE          default: .env at the repository root
#   --timeout SEC            how long to wait for readiness (default 300)
#   --yes                    do not ask for confirmation (required without a terminal)
#   --dry-run                print every action, change nothing
set -euo pipefail
SCRIPT_NAME=rollback
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
# shellcheck source=lib/stack.sh
. "$(dirname "$0")/lib/stack.sh"

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }

ENV_FILE=$DEPLOY_ROOT/.env
which=latest
ref=""
assume_yes=false
while [ "$#" -gt 0 ]; do
  case "$1" in
    --backup) which=${2:?--backup needs a folder or latest}; shift 2 ;;
    --to) ref=${2:?--to needs a git tag or commit}; shift 2 ;;
    --env-file) ENV_FILE=${2:?--env-file needs a file}; shift 2 ;;
    --timeout) READY_TIMEOUT_SECONDS=${2:?--timeout needs seconds}; shift 2 ;;
    --yes) assume_yes=true; shift ;;
    --dry-run) DRY_RUN=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
cd "$DEPLOY_ROOT"
command -v docker >/dev/null || die "docker not found: this is the plan for the compose stack"
[ -f "$ENV_FILE" ] || die "$ENV_FILE not found"
ensure_compose_files
say "compose files: $COMPOSE_FILE"
backup_root=$(setting BACKUP_DIR)
backup_root=${backup_root:-$DEPLOY_ROOT/var/backups}
backup=$(resolve_backup "$backup_root" "$which")
for archive in postgres_data.tar.gz device_outputs.tar.gz; do
  [ -f "$backup/$archive" ] || die "$backup has no $archive (made by backup.sh in compose mode)"
done
[ ! -e "$backup/SHA256SUMS" ] || (cd "$backup" && sha256sum --quiet --check SHA256SUMS) ||
  die "$backup fails its checksums (SHA256SUMS): not restoring from it"
if [ -n "$ref" ]; then
  git rev-parse --verify --quiet "$ref^{commit}" >/dev/null || die "$ref is not a tag or commit of this repository"
  [ -z "$(git status --porcelain --untracked-files=no)" ] || die "the working tree has changes; commit or stash them before checking out $ref"
else
  mapfile -t images < <(built_images)
  for image in "${images[@]}"; do
    docker image inspect "${image%:*}:rollback" >/dev/null 2>&1 ||
      die "no ${image%:*}:rollback image (deploy.sh keeps one per deployment); give the previous version with --to GIT_REF"
  done
fi

say "rolling back to $backup and ${ref:-the images kept as :rollback}"
if [ "$assume_yes" != true ] && [ "$DRY_RUN" != true ]; then
  [ -t 0 ] || die "this stops the deployment and replaces its database and outputs; pass --yes to confirm"
  read -r -p "This stops the deployment and replaces its database and outputs. Type yes to go on: " answer
  [ "$answer" = yes ] || die "not confirmed; nothing changed"
fi

step "1. stop the current deployment"
run compose down --timeout 30

step "2. restore from the backup"
for volume in postgres_data device_outputs; do
  run docker run --rm -v "$(volume_name "$volume"):/target" -v "$backup:/backup:ro" "$HELPER_IMAGE" \
    sh -c "find /target -mindepth 1 -delete && tar xzf /backup/$volume.tar.gz -C /target"
done

step "3. start the previous version"
if [ -n "$ref" ]; then
  run git checkout "$ref"
  run compose up -d --build --remove-orphans
else
  for image in "${images[@]}"; do
    run docker image tag "${image%:*}:rollback" "$image"
  done
  run compose up -d --remove-orphans
fi

step "4. verify the rollback"
wait_ready "$READY_TIMEOUT_SECONDS"
check_containers
smoke_test
say "rolled back to $backup${ref:+ at $ref}"
