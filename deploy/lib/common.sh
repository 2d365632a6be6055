# shellcheck shell=bash
# Shared by deploy.sh, backup.sh, restore.sh and rollback.sh: messages, the
# dry-run switch, .env reading and the docker compose invocation. Sourced, never
# run. Every script sets `set -euo pipefail` before sourcing this.

# The repository root (the compose project directory), whatever the caller's cwd.
DEPLOY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Fixed by `name:` in docker-compose.yml; the checklist's restore commands use it.
PROJECT_NAME=device-operations
# Throwaway containers that read and write volumes (the checklist uses alpine).
HELPER_IMAGE=${HELPER_IMAGE:-alpine:3.22}
DRY_RUN=${DRY_RUN:-false}
SCRIPT_NAME=${SCRIPT_NAME:-$(basename "$0" .sh)}

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*"; }
warn() { printf '%s: warning: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 1
}
step() { printf '\n%s: == %s\n' "$SCRIPT_NAME" "$*"; }

# Print a command as it would be typed, arguments quoted where needed, and
# the password of any URL in it masked.
show_command() {
  local out="" arg
  # The compose function is `docker compose` with this project's options.
  [ "${1:-}" != compose ] || out="docker"
  for arg in "$@"; do
    if [[ "$arg" =~ ^(.*://[^:/@]*:)[^@/]*(@.*)$ ]]; then arg="${BASH_REMATCH[1]}***${BASH_REMATCH[2]}"; fi
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,*-]+$ ]]; then
      out+=" $arg"
    elif [[ "$arg" != *"'"* ]]; then
      out+=" '$arg'"
    else
      out+=" $(printf '%q' "$arg")"
    fi
  done
  printf '%s' "${out# }"
}

# Run a command that changes something: printed first; only printed under --dry-run.
run() {
  if [ "$DRY_RUN" = true ]; then
    printf '%s: [dry-run] would run: %s\n' "$SCRIPT_NAME" "$(show_command "$@")"
    return 0
  fi
  printf '%s: + %s\n' "$SCRIPT_NAME" "$(show_command "$@")"
  "$@"
}

# The same, with stdout going to a file (dumps and archives).
run_to_file() {
  local file=$1
  shift
  if [ "$DRY_RUN" = true ]; then
    printf '%s: [dry-run] would run: %s > %s\n' "$SCRIPT_NAME" "$(show_command "$@")" "$file"
    return 0
  fi
  printf '%s: + %s > %s\n' "$SCRIPT_NAME" "$(show_command "$@")" "$file"
  "$@" >"$file"
}

# The same, with stdin from a file.
run_from_file() {
  local file=$1
  shift
  if [ "$DRY_RUN" = true ]; then
    printf '%s: [dry-run] would run: %s < %s\n' "$SCRIPT_NAME" "$(show_command "$@")" "$file"
    return 0
  fi
  printf '%s: + %s < %s\n' "$SCRIPT_NAME" "$(show_command "$@")" "$file"
  "$@" <"$file"
}

# Value of KEY in an env file (KEY=value lines, optional quotes, # comments),
# without executing the file: .env is data, not a script. Empty when absent.
env_file_value() {
  local file=$1 key=$2 line value=""
  [ -f "$file" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%$'\r'}
    [[ "$line" =~ ^[[:space:]]*(export[[:space:]]+)?${key}[[:space:]]*=(.*)$ ]] || continue
    value=${BASH_REMATCH[2]}
    value=${value#"${value%%[![:space:]]*}"}
    if [[ "$value" =~ ^\"(.*)\"[[:space:]]*(#.*)?$ ]] || [[ "$value" =~ ^\'(.*)\'[[:space:]]*(#.*)?$ ]]; then
      value=${BASH_REMATCH[1]}
    else
      value=${value%%[[:space:]]#*}
      value=${value%"${value##*[![:space:]]}"}
    fi
  done <"$file"
  printf '%s' "$value"
}

# A setting as docker compose sees it: the environment wins over the env file.
setting() {
  local key=$1
  if [ -n "${!key:-}" ]; then printf '%s' "${!key}"; else env_file_value "$ENV_FILE" "$key"; fi
}

# docker compose for this project, from the repository root, with the env file.
compose() {
  docker compose --project-directory "$DEPLOY_ROOT" --env-file "$ENV_FILE" "$@"
}

# Volume of this project: device-operations_<name>.
volume_name() { printf '%s_%s' "$PROJECT_NAME" "$1"; }

# Version comparison: is $1 >= $2 (dotted numbers, any suffix ignored)?
version_at_least() {
  local have=$1 want=$2 i h w
  local -a have_parts want_parts
  IFS=. read -r -a have_parts <<<"${have%%[^0-9.]*}"
  IFS=. read -r -a want_parts <<<"$want"
  for i in 0 1 2; do
    h=${have_parts[$i]:-0}
    w=${want_parts[$i]:-0}
    if ((10#$h > 10#$w)); then return 0; fi
    if ((10#$h < 10#$w)); then return 1; fi
  done
  return 0
}

# The backup folders under a backup root, oldest first (their names are UTC timestamps).
list_backups() {
  local root=$1
  [ -d "$root" ] || return 0
  find "$root" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*T[0-9]*Z*' ! -name '*.partial' -printf '%f\n' | LC_ALL=C sort
}

# Where backup.sh and restore.sh find the data, from their options (the
# globals database_url, outputs_dir, backup_root, ENV_FILE). Sets backup_root
# (BACKUP_DIR, default var/backups, made absolute) and mode: direct with
# --database-url and --outputs-dir (no Docker), compose with neither. Checks
# what either mode needs before anything is read or written; $1 is the verb
# for the messages ("back up", "restore").
resolve_data_location() {
  local verb=$1
  [ -n "$backup_root" ] || backup_root=$(setting BACKUP_DIR)
  [ -n "$backup_root" ] || backup_root=$DEPLOY_ROOT/var/backups
  case "$backup_root" in /*) ;; *) backup_root=$PWD/$backup_root ;; esac
  if { [ -n "$database_url" ] && [ -z "$outputs_dir" ]; } || { [ -z "$database_url" ] && [ -n "$outputs_dir" ]; }; then
    die "--database-url and --outputs-dir go together (or neither, for the compose stack)"
  fi
  mode=compose
  [ -z "$database_url" ] || mode=direct
  if [ "$mode" = direct ]; then
    [[ "$database_url" =~ ^postgres(ql)?:// ]] || die "--database-url must be a postgres:// URL"
  else
    command -v docker >/dev/null || die "docker not found: $verb without Docker with --database-url and --outputs-dir"
    [ -f "$ENV_FILE" ] || die "$ENV_FILE not found"
  fi
}

# A backup folder given as a path or as `latest`.
resolve_backup() {
  local root=$1 which=$2 newest
  if [ "$which" = latest ]; then
    newest=$(list_backups "$root" | tail -n 1)
    [ -n "$newest" ] || die "no backup under $root"
    printf '%s/%s' "$root" "$newest"
  else
    [ -d "$which" ] || die "backup folder $which does not exist"
    (cd "$which" && pwd)
  fi
}

# COMPOSE_FILE for this host, when the caller has not exported one (deploy.sh
# does): the one from the env file, plus docker-compose.cpu.yml when Docker
# cannot give the workers an NVIDIA GPU.
ensure_compose_files() {
  [ -z "${COMPOSE_FILE:-}" ] || return 0
  local files runtimes
  files=$(env_file_value "$ENV_FILE" COMPOSE_FILE)
  files=${files:-docker-compose.yml}
  runtimes=$(docker info --format '{{json .Runtimes}}' 2>/dev/null || true)
  if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU' ||
    { [[ "$runtimes" != *nvidia* ]] && ! command -v nvidia-container-runtime-hook >/dev/null; }; then
    [[ ":$files:" == *":docker-compose.cpu.yml:"* ]] || files="$files:docker-compose.cpu.yml"
  fi
  export COMPOSE_FILE=$files
}
