# shellcheck shell=bash
# Checks of a running stack through NGINX, shared by deploy.sh and rollback.sh:
# readiness and the smoke test of the checklist's "Post-Deployment
# Verification". Sourced after common.sh.

# Longest wait for readiness: the checklist rolls back when health checks fail
# for more than 5 minutes.
READY_TIMEOUT_SECONDS=${READY_TIMEOUT_SECONDS:-300}

# Where NGINX answers on this host (DEPLOY_URL to override).
edge_url() {
  local port
  if [ -n "${DEPLOY_URL:-}" ]; then
    printf '%s' "${DEPLOY_URL%/}"
    return
  fi
  port=$(setting HTTPS_PORT)
  printf 'https://127.0.0.1:%s' "${port:-443}"
}

# curl against NGINX: the certificate may be self-signed, and what is checked
# here is the deployment, not the certificate.
edge_curl() { curl --silent --show-error --insecure --max-time 10 "$@"; }

# Wait until GET /health/ready answers 200 through NGINX.
wait_ready() {
  local timeout=${1:-$READY_TIMEOUT_SECONDS} url deadline status
  url="$(edge_url)/health/ready"
  if [ "$DRY_RUN" = true ]; then
    say "[dry-run] would wait up to ${timeout}s for 200 from $url"
    return 0
  fi
  say "waiting up to ${timeout}s for 200 from $url"
  deadline=$((SECONDS + timeout))
  while :; do
    status=$(edge_curl --output /dev/null --write-out '%{http_code}' "$url" 2>/dev/null) || status=000
    if [ "$status" = 200 ]; then
      say "ready after $((SECONDS + timeout - deadline))s"
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      warn "not ready after ${timeout}s (last answer: HTTP $status); see: docker compose logs gateway worker nginx"
      return 1
    fi
    sleep "$((deadline - SECONDS < 5 ? deadline - SECONDS + 1 : 5))"
  done
}

# Every container of the project runs (none exited or restarting).
check_containers() {
  local line bad=()
  if [ "$DRY_RUN" = true ]; then
    say "[dry-run] would check that every container runs (docker compose ps)"
    return 0
  fi
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    say "  $line"
    case "$line" in *" running"*) ;; *) bad+=("${line%% *}") ;; esac
  done < <(compose ps --all --format '{{.Service}} {{.State}} {{.Health}}')
  if [ "${#bad[@]}" -gt 0 ]; then
    warn "not running: ${bad[*]}"
    return 1
  fi
}

# The checklist's API checks: device discovery with a credential, and the API docs.
smoke_test() {
  local base key token status body
  base=$(edge_url)
  if [ "$DRY_RUN" = true ]; then
    say "[dry-run] would GET $base/api/device/list with a credential (SMOKE_API_KEY, else a 5-minute token from the gateway container)"
    say "[dry-run] would GET $base/api-docs/ and $base/api-docs/openapi.json"
    return 0
  fi
  key=$(setting SMOKE_API_KEY)
  local -a auth
  if [ -n "$key" ]; then
    auth=(-H "X-API-Key: $key")
  else
    # Signed inside the gateway with its own JWT_SECRET; nothing secret on this command line.
    token=$(compose exec -T gateway node gateway/dist/cli/issue-token.js --sub deploy-smoke-test --scope inference --ttl 300) ||
      { warn "could not get a token from the gateway container"; return 1; }
    auth=(-H "Authorization: Bearer $token")
  fi
  body=$(edge_curl --write-out '\n%{http_code}' "${auth[@]}" "$base/api/device/list") || body=$'\n000'
  status=${body##*$'\n'}
  body=${body%$'\n'*}
  if [ "$status" != 200 ] || [[ "$body" != *'"devices"'* ]]; then
    warn "GET /api/device/list answered HTTP $status: ${body:0:300}"
    return 1
  fi
  say "GET /api/device/list: 200 with a device list"
  for path in /api-docs/ /api-docs/openapi.json; do
    status=$(edge_curl --location --output /dev/null --write-out '%{http_code}' "$base$path") || status=000
    if [ "$status" != 200 ]; then
      warn "GET $path answered HTTP $status"
      return 1
    fi
    say "GET $path: 200"
  done
}

# Our own images (built here, so they have no registry to come back from):
# `device-operations/...` in the compose model.
built_images() { compose config --images | grep '^device-operations/' | LC_ALL=C sort -u; }
