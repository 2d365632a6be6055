#!/usr/bin/env bash
# Render nginx/templates/ into a folder, as the nginx image's entrypoint does
# in docker-compose.yml: envsubst on every *.template, substituting only the
# NGINX_* variables of the environment, output without the .template suffix.
# For `nginx -t` outside Docker, or a local NGINX in front of `npm start`:
#
#   NGINX_GATEWAY_UPSTREAM=127.0.0.1:8080 ... nginx/scripts/render-config.sh /tmp/edge
#   nginx -t -p /tmp/edge -c /tmp/edge/nginx.conf
#
# Every ${NGINX_*} name the templates use must be set: a missing one stops the
# script with its name (nginx would otherwise start with an empty value).
set -euo pipefail

usage() {
  echo "usage: $0 OUTPUT_DIR   (with every NGINX_* variable of the templates in the environment)" >&2
  exit 2
}
[ "$#" -eq 1 ] || usage
out=$1
templates=$(cd "$(dirname "$0")/../templates" && pwd)

command -v envsubst >/dev/null || { echo "render-config: envsubst not found (Debian: apt-get install gettext-base)" >&2; exit 1; }

missing=()
while IFS= read -r name; do
  [ -n "${!name+set}" ] || missing+=("$name")
done < <(grep -rhoE '\$\{NGINX_[A-Z0-9_]+\}' "$templates" | sed -E 's/^\$\{(.*)\}$/\1/' | sort -u)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "render-config: set ${missing[*]}" >&2
  exit 1
fi

# The names envsubst may replace: NGINX_* only, so $host, $uri... survive.
names=$(env | sed -nE 's/^(NGINX_[A-Za-z0-9_]*)=.*/${\1}/p' | tr '\n' ' ')
while IFS= read -r -d '' template; do
  relative=${template#"$templates"/}
  target="$out/${relative%.template}"
  mkdir -p "$(dirname "$target")"
  envsubst "$names" < "$template" > "$target"
  echo "rendered $target"
done < <(find "$templates" -type f -name '*.template' -print0)
