#!/usr/bin/env bash
# Fill in the deployment's secrets with random values, where .env has none:
#
#   deploy/generate-secrets.sh [ENV_FILE]        (default: .env at the repository root)
#
# Creates the file from .env.example when it does not exist. A secret that
# already has a value is never changed, so running it again is harmless.
# Prints the names it filled in, never the values; the file is made readable
# by its owner only.
set -euo pipefail
SCRIPT_NAME=generate-secrets
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

case "${1:-}" in
  -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*) die "unknown option $1 (see --help)" ;;
esac
ENV_FILE=${1:-$DEPLOY_ROOT/.env}
# JWT_SECRET, WORKER_TOKEN and ADMIN_API_KEY need at least 32 characters; the
# passwords go into URLs, so hex digits only.
SECRETS=(JWT_SECRET WORKER_TOKEN ADMIN_API_KEY POSTGRES_PASSWORD REDIS_PASSWORD GRAFANA_ADMIN_PASSWORD SEQ_ADMIN_PASSWORD)

random_hex() {
  if command -v openssl >/dev/null; then
    openssl rand -hex 32
  else
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
  fi
}

umask 077
if [ ! -f "$ENV_FILE" ]; then
  cp "$DEPLOY_ROOT/.env.example" "$ENV_FILE"
  say "created $ENV_FILE from .env.example"
fi
chmod 600 "$ENV_FILE"

filled=()
for name in "${SECRETS[@]}"; do
  [ -z "$(env_file_value "$ENV_FILE" "$name")" ] || continue
  value=$(random_hex)
  if grep -qE "^[[:space:]]*${name}[[:space:]]*=" "$ENV_FILE"; then
    # Replace the empty assignment in place, keeping its comment above it.
    tmp=$(mktemp "$ENV_FILE.XXXXXX")
    awk -v name="$name" -v value="$value" '
      !done && $0 ~ "^[[:space:]]*" name "[[:space:]]*=" { print name "=" value; done = 1; next }
      { print }' "$ENV_FILE" >"$tmp"
    mv "$tmp" "$ENV_FILE"
  else
    [ -z "$(tail -c 1 "$ENV_FILE")" ] || echo >>"$ENV_FILE"
    printf '%s=%s\n' "$name" "$value" >>"$ENV_FILE"
  fi
  filled+=("$name")
done

if [ "${#filled[@]}" -eq 0 ]; then
  say "every secret already has a value in $ENV_FILE; nothing changed"
else
  say "filled in ${filled[*]} in $ENV_FILE"
fi
