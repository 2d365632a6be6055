#!/usr/bin/env bash
# Deploy (or update) the docker-compose stack on this host, following
# DEPLOYMENT_CHECKLIST.md:
#
#   cp .env.example .env    # fill in the secrets (deploy/generate-secrets.sh adds random ones)
#   ./deploy/deploy.sh
#
# Steps, each printed as it runs:
#   1. preflight   RAM, CPU cores, disk for models (minimum fails, below the
#                  recommendation warns), GPU and NVIDIA runtime (absent: warn
#                  and run on the CPU), Docker and Compose versions, .env with
#                  a JWT secret of 32+ characters, the deployment's secrets and
#                  no example values, TLS certificate, model directory
#   2. backup      of the running deployment, if there is one (backup.sh)
#   3. images      the current ones are kept as :rollback, then build and pull
#   4. up          docker compose up -d
#   5. verify      /health/ready through NGINX within 5 minutes, every
#                  container running, smoke test (/api/device/list with a
#                  credential, API docs)
# When a step from 3 on fails, it rolls back by itself: the previous images
# and the backup of step 2, then waits for readiness again; it exits non-zero
# either way. Running it again with nothing changed redeploys the same thing.
#
# Options:
#   --dry-run         run the preflight and show every action, change nothing
#   --force           resources below the checklist's minimum warn instead of failing
#   --cpu             run the workers on the CPU even where a GPU is found
#   --skip-backup     no backup before deploying (not recommended)
#   --env-file FILE   default: .env at the repository root
#   --timeout SEC     how long to wait for readiness (default 300, the checklist's 5 minutes)
# Environment: COMPOSE_FILE (extra compose files, e.g. the multi-GPU one),
# DEPLOY_URL (where NGINX answers; default https://127.0.0.1:HTTPS_PORT),
# BACKUP_DIR, BACKUP_RETENTION (backup.sh).
set -euo pipefail
SCRIPT_NAME=deploy
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
# shellcheck source=lib/stack.sh
. "$(dirname "$0")/lib/stack.sh"

# The checklist's server requirements (GB = 10^9 bytes, as hardware is sold).
MIN_RAM_GB=8
RECOMMENDED_RAM_GB=16
MIN_CPU_CORES=4
RECOMMENDED_CPU_CORES=8
MIN_MODEL_DISK_GB=100
RECOMMENDED_MODEL_DISK_GB=500
# Docker Engine with `deploy.resources.reservations.devices` and a current API;
# Compose 2.24 for the `!reset` tag of docker-compose.cpu.yml.
MIN_DOCKER_VERSION=24.0
MIN_COMPOSE_VERSION=2.24.0

usage() { sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; }

ENV_FILE=$DEPLOY_ROOT/.env
force=false
cpu_only=false
skip_backup=false
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=true; shift ;;
    --force) force=true; shift ;;
    --cpu) cpu_only=true; shift ;;
    --skip-backup) skip_backup=true; shift ;;
    --env-file) ENV_FILE=${2:?--env-file needs a file}; shift 2 ;;
    --timeout) READY_TIMEOUT_SECONDS=${2:?--timeout needs seconds}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ "$READY_TIMEOUT_SECONDS" =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a number of seconds"
case "$ENV_FILE" in /*) ;; *) ENV_FILE=$PWD/$ENV_FILE ;; esac
cd "$DEPLOY_ROOT"

# --- 1. preflight -----------------------------------------------------------------
failures=()
check_ok() { printf '%s:   ok    %s\n' "$SCRIPT_NAME" "$1"; }
check_warn() { printf '%s:   WARN  %s\n' "$SCRIPT_NAME" "$1"; }
check_fail() {
  printf '%s:   FAIL  %s: %s\n' "$SCRIPT_NAME" "$1" "$2"
  failures+=("$1")
}
# A resource below the minimum fails, unless --force makes it a warning.
resource_short() {
  if [ "$force" = true ]; then check_warn "$2 (accepted with --force)"; else check_fail "$1" "${2#"$1: "}"; fi
}
gigabytes() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e9 }'; }

check_memory() {
  local bytes=""
  if [ -r /proc/meminfo ]; then
    bytes=$(awk '/^MemTotal:/ { print $2 * 1024 }' /proc/meminfo)
  elif command -v sysctl >/dev/null; then
    bytes=$(sysctl -n hw.memsize 2>/dev/null || true)
  fi
  [ -n "$bytes" ] || { check_warn "RAM: could not be measured"; return; }
  local shown
  shown="RAM: $(gigabytes "$bytes") GB (minimum $MIN_RAM_GB GB, recommended $RECOMMENDED_RAM_GB GB)"
  if awk -v b="$bytes" -v m="$MIN_RAM_GB" 'BEGIN { exit !(b < m * 1e9) }'; then
    resource_short "RAM" "$shown"
  elif awk -v b="$bytes" -v r="$RECOMMENDED_RAM_GB" 'BEGIN { exit !(b < r * 1e9) }'; then
    check_warn "$shown"
  else
    check_ok "$shown"
  fi
}

check_cpus() {
  local cores
  cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 0)
  local shown="CPU cores: $cores (minimum $MIN_CPU_CORES, recommended $RECOMMENDED_CPU_CORES)"
  if [ "$cores" -lt "$MIN_CPU_CORES" ]; then
    resource_short "CPU cores" "$shown"
  elif [ "$cores" -lt "$RECOMMENDED_CPU_CORES" ]; then
    check_warn "$shown"
  else
    check_ok "$shown"
  fi
}

# Storage for models: free space where the model directory lives, plus what
# the models there already take.
check_model_disk() {
  local dir=$model_dir free_kb used_kb=0 bytes
  while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
  free_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
  [ ! -d "$model_dir" ] || used_kb=$(du -sk "$model_dir" 2>/dev/null | awk '{ print $1 }')
  bytes=$(((free_kb + used_kb) * 1024))
  local shown
  shown="storage for models: $(gigabytes "$bytes") GB free or in models at $model_dir (minimum $MIN_MODEL_DISK_GB GB, recommended $RECOMMENDED_MODEL_DISK_GB GB)"
  if awk -v b="$bytes" -v m="$MIN_MODEL_DISK_GB" 'BEGIN { exit !(b < m * 1e9) }'; then
    resource_short "storage for models" "$shown"
  elif awk -v b="$bytes" -v r="$RECOMMENDED_MODEL_DISK_GB" 'BEGIN { exit !(b < r * 1e9) }'; then
    check_warn "$shown"
  else
    check_ok "$shown"
  fi
}

have_docker=false
check_docker() {
  if ! command -v docker >/dev/null; then
    check_fail "Docker" "not installed (no docker command on PATH); install Docker Engine $MIN_DOCKER_VERSION or later: https://docs.docker.com/engine/install/"
    check_fail "Docker Compose" "needs Docker; install the Compose plugin $MIN_COMPOSE_VERSION or later with it"
    return
  fi
  local version compose_version
  if ! version=$(docker version --format '{{.Server.Version}}' 2>/dev/null) || [ -z "$version" ]; then
    check_fail "Docker" "the docker command cannot reach a Docker Engine (is the daemon running, may this user use it?)"
  elif ! version_at_least "$version" "$MIN_DOCKER_VERSION"; then
    check_fail "Docker" "Engine $version is older than $MIN_DOCKER_VERSION"
  else
    check_ok "Docker Engine $version (minimum $MIN_DOCKER_VERSION)"
    have_docker=true
  fi
  if ! compose_version=$(docker compose version --short 2>/dev/null) || [ -z "$compose_version" ]; then
    check_fail "Docker Compose" "the Compose plugin is missing (docker compose version fails); install docker-compose-plugin $MIN_COMPOSE_VERSION or later"
  elif ! version_at_least "${compose_version#v}" "$MIN_COMPOSE_VERSION"; then
    check_fail "Docker Compose" "$compose_version is older than $MIN_COMPOSE_VERSION (needed for docker-compose.cpu.yml's !reset)"
  else
    check_ok "Docker Compose $compose_version (minimum $MIN_COMPOSE_VERSION)"
  fi
}

use_gpu=false
check_gpu() {
  local gpus runtimes
  if [ "$cpu_only" = true ]; then
    check_warn "GPU: not used (--cpu): the workers run on the CPU"
    return
  fi
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  if [ "${gpus:-0}" -eq 0 ]; then
    check_warn "GPU: no NVIDIA GPU found (nvidia-smi): the workers run on the CPU (docker-compose.cpu.yml)"
    return
  fi
  if [ "$have_docker" != true ]; then
    check_warn "GPU: $gpus found, NVIDIA runtime not checked (no Docker Engine)"
    return
  fi
  # Docker gives GPUs to containers through the NVIDIA Container Toolkit: its
  # hook (what `driver: nvidia` uses) or a registered nvidia runtime.
  runtimes=$(docker info --format '{{json .Runtimes}}' 2>/dev/null || true)
  if [[ "$runtimes" != *nvidia* ]] && ! command -v nvidia-container-runtime-hook >/dev/null; then
    check_warn "GPU: $gpus found but no NVIDIA Container Toolkit for Docker (install it, then nvidia-ctk runtime configure): the workers run on the CPU"
    return
  fi
  check_ok "GPU: $gpus NVIDIA GPU(s) and the NVIDIA runtime"
  use_gpu=true
}

# Values that come from documentation, not from someone who chose a secret.
looks_like_example() {
  local pattern='(change[-_ ]?me|changeit|replace[-_ ]?me|placeholder|your[-_]|example\.(com|org|net)|user:password@|^<.*>$|^x{3,}$|^(secret|password)$)'
  shopt -s nocasematch
  local result=1
  if [[ "$1" =~ $pattern ]]; then result=0; fi
  shopt -u nocasematch
  return "$result"
}

check_env_file() {
  if [ ! -f "$ENV_FILE" ]; then
    check_fail ".env" "$ENV_FILE is missing: cp .env.example .env, fill it in (deploy/generate-secrets.sh adds random secrets)"
    return
  fi
  check_ok ".env: $ENV_FILE"
  local name value problems=()
  value=$(setting JWT_SECRET)
  if [ -z "$value" ]; then
    problems+=("JWT_SECRET is empty (at least 32 characters; deploy/generate-secrets.sh makes one)")
  elif [ "${#value}" -lt 32 ]; then
    problems+=("JWT_SECRET has ${#value} characters, at least 32 are needed")
  fi
  value=$(setting WORKER_TOKEN)
  if [ -z "$value" ]; then
    problems+=("WORKER_TOKEN is empty (at least 32 characters, shared by the gateway and the workers)")
  elif [ "${#value}" -lt 32 ]; then
    problems+=("WORKER_TOKEN has ${#value} characters, at least 32 are needed")
  fi
  value=$(setting ADMIN_API_KEY)
  if [ -n "$value" ] && [ "${#value}" -lt 32 ]; then problems+=("ADMIN_API_KEY has ${#value} characters, at least 32 are needed"); fi
  for name in POSTGRES_PASSWORD REDIS_PASSWORD GRAFANA_ADMIN_PASSWORD SEQ_ADMIN_PASSWORD; do
    [ -n "$(setting "$name")" ] || problems+=("$name is empty")
  done
  # They go into DATABASE_URL and REDIS_URL as they are.
  for name in POSTGRES_PASSWORD REDIS_PASSWORD; do
    value=$(setting "$name")
    [ -z "$value" ] || [[ "$value" =~ ^[A-Za-z0-9._~-]+$ ]] || problems+=("$name may hold only letters, digits and - _ . ~ (it is used inside a URL)")
  done
  # Every value, secret or not, must not be left from an example.
  local line key
  while IFS= read -r line || [ -n "$line" ]; do
    [[ "$line" =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*= ]] || continue
    key=${BASH_REMATCH[2]}
    value=$(setting "$key")
    if [ -n "$value" ] && looks_like_example "$value"; then problems+=("$key still holds an example value"); fi
  done <"$ENV_FILE"
  if [ "${#problems[@]}" -eq 0 ]; then
    check_ok "secrets: JWT_SECRET, WORKER_TOKEN, POSTGRES_PASSWORD, REDIS_PASSWORD, GRAFANA_ADMIN_PASSWORD, SEQ_ADMIN_PASSWORD set; no example values"
  else
    local problem
    for problem in "${problems[@]}"; do check_fail ".env" "$problem"; done
  fi
}

make_certificate=false
check_certificate() {
  local dir file key_file
  dir=$(setting TLS_CERTIFICATE_DIRECTORY)
  file=$(setting TLS_CERTIFICATE_FILE)
  key_file=$(setting TLS_CERTIFICATE_KEY_FILE)
  file=${file:-fullchain.pem}
  key_file=${key_file:-privkey.pem}
  if [ -z "$dir" ]; then
    dir=$DEPLOY_ROOT/nginx/certs
    if [ ! -f "$dir/$file" ] || [ ! -f "$dir/$key_file" ]; then
      check_warn "TLS certificate: none in nginx/certs; a self-signed one will be made (clients will warn; see nginx/certs/README.md)"
      make_certificate=true
      return
    fi
  fi
  case "$dir" in /*) ;; *) dir=$DEPLOY_ROOT/$dir ;; esac
  if [ ! -f "$dir/$file" ] || [ ! -f "$dir/$key_file" ]; then
    check_fail "TLS certificate" "$dir/$file and $dir/$key_file must exist (TLS_CERTIFICATE_DIRECTORY)"
  elif ! command -v openssl >/dev/null; then
    check_ok "TLS certificate: $dir/$file"
  elif ! openssl x509 -in "$dir/$file" -noout -checkend 0 >/dev/null 2>&1; then
    check_fail "TLS certificate" "$dir/$file is expired or not a PEM certificate"
  elif ! openssl x509 -in "$dir/$file" -noout -checkend $((14 * 86400)) >/dev/null 2>&1; then
    check_warn "TLS certificate: $dir/$file expires within 14 days"
  else
    check_ok "TLS certificate: $dir/$file"
  fi
}

check_models() {
  if [ ! -d "$model_dir" ]; then
    check_warn "models: $model_dir does not exist; it is created empty and the workers serve no model until one is put there"
  elif [ -z "$(ls -A "$model_dir" 2>/dev/null)" ]; then
    check_warn "models: $model_dir is empty; the workers serve no model until one is put there"
  else
    check_ok "models: $(find "$model_dir" -mindepth 1 -maxdepth 1 | wc -l | tr -d ' ') in $model_dir (mounted read-only)"
  fi
}

check_tools() {
  local tool
  for tool in curl sha256sum tar; do
    command -v "$tool" >/dev/null || check_fail "$tool" "not installed (the deployment's checks and backups use it)"
  done
}

step "1. preflight (DEPLOYMENT_CHECKLIST.md: infrastructure and configuration)"
model_dir=$(setting MODEL_HOST_DIRECTORY)
model_dir=${model_dir:-var/models}
case "$model_dir" in /*) ;; *) model_dir=$DEPLOY_ROOT/${model_dir#./} ;; esac
check_memory
check_cpus
check_model_disk
check_docker
check_gpu
check_env_file
check_certificate
check_models
check_tools

# The compose files: COMPOSE_FILE from the environment or .env, plus the CPU
# override when the workers get no GPU.
compose_files=$(setting COMPOSE_FILE)
compose_files=${compose_files:-docker-compose.yml}
if [ "$use_gpu" != true ] && [[ ":$compose_files:" != *":docker-compose.cpu.yml:"* ]]; then
  compose_files="$compose_files:docker-compose.cpu.yml"
fi
export COMPOSE_FILE=$compose_files
say "compose files: $COMPOSE_FILE"

if [ "${#failures[@]}" -gt 0 ]; then
  die "preflight failed: ${#failures[@]} problem(s) ($(printf '%s, ' "${failures[@]}" | sed 's/, $//')). Nothing was changed."
fi
[ "$DRY_RUN" != true ] || say "[dry-run] preflight passed; what a deployment would do:"

# --- failure handling -----------------------------------------------------------
current_step=""
rollback_armed=false
backup_folder=""
kept_images=()

rollback() {
  set +e
  rollback_armed=false
  warn "step '$current_step' failed: rolling back"
  if [ "${#kept_images[@]}" -eq 0 ] && [ -z "$backup_folder" ]; then
    warn "first deployment: there is nothing to roll back to; the stack is left as it is for inspection (docker compose ps, docker compose logs)"
    exit 1
  fi
  local image
  for image in "${kept_images[@]}"; do
    run docker image tag "${image%:*}:rollback" "$image"
  done
  if [ -n "$backup_folder" ]; then
    run "$DEPLOY_ROOT/deploy/restore.sh" --yes --no-start --env-file "$ENV_FILE" "$backup_folder"
  fi
  run compose up -d --remove-orphans
  if wait_ready "$READY_TIMEOUT_SECONDS"; then
    warn "rolled back to the previous images${backup_folder:+ and the backup $backup_folder}; the previous deployment serves again"
  else
    warn "rolled back, but the previous deployment is not ready either: docker compose ps; docker compose logs; deploy/rollback.sh for the checklist's manual plan"
  fi
  exit 1
}
on_exit() {
  local status=$?
  if [ "$status" -ne 0 ] && [ "$rollback_armed" = true ]; then rollback; fi
}
trap on_exit EXIT

# --- 2. backup ------------------------------------------------------------------
current_step="certificate"
if [ "$make_certificate" = true ]; then
  run "$DEPLOY_ROOT/nginx/scripts/make-self-signed-cert.sh" --name "$(hostname -f 2>/dev/null || hostname)" "$DEPLOY_ROOT/nginx/certs"
fi

current_step="backup"
step "2. backup of the running deployment"
if [ "$skip_backup" = true ]; then
  warn "no backup (--skip-backup): a failed deployment rolls back the images only"
elif [ -z "$(compose ps --status running --quiet postgres 2>/dev/null)" ]; then
  say "no running deployment (postgres is not running): nothing to back up"
elif [ "$DRY_RUN" = true ]; then
  "$DEPLOY_ROOT/deploy/backup.sh" --dry-run --env-file "$ENV_FILE"
else
  say "+ deploy/backup.sh --env-file $ENV_FILE"
  backup_log=$(mktemp)
  "$DEPLOY_ROOT/deploy/backup.sh" --env-file "$ENV_FILE" | tee "$backup_log"
  # backup.sh prints the folder it wrote last.
  backup_folder=$(tail -n 1 "$backup_log")
  rm -f "$backup_log"
  [ -d "$backup_folder" ] || die "backup.sh did not report its folder"
fi

# --- 3. images --------------------------------------------------------------------
current_step="images"
step "3. images: keep the current ones as :rollback, then build and pull"
mapfile -t images < <(built_images)
for image in "${images[@]}"; do
  if docker image inspect "$image" >/dev/null 2>&1; then
    run docker image tag "$image" "${image%:*}:rollback"
    kept_images+=("$image")
  fi
done
[ "${#kept_images[@]}" -gt 0 ] || say "no previous images (first deployment)"
rollback_armed=true
run compose build --pull
run compose pull --ignore-buildable --quiet

# --- 4. up ------------------------------------------------------------------------
current_step="up"
step "4. up"
run compose up -d --remove-orphans

# --- 5. verify --------------------------------------------------------------------
current_step="readiness"
step "5. verify through NGINX ($(edge_url))"
wait_ready "$READY_TIMEOUT_SECONDS"
current_step="containers"
check_containers
current_step="smoke test"
smoke_test
rollback_armed=false

step "done"
if [ "$DRY_RUN" = true ]; then
  say "[dry-run] nothing was changed"
else
  say "deployed: $(edge_url) (API docs at /api-docs). Monitoring on this host: Prometheus :9090, Grafana :3000, Seq :5341."
  [ -z "$backup_folder" ] || say "backup taken before this deployment: $backup_folder"
fi
