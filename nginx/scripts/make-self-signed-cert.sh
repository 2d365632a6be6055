#!/usr/bin/env bash
# Make a self-signed certificate and key for NGINX, for testing only (browsers
# and clients warn about it; use a certificate from your CA or Let's Encrypt in
# production). Writes fullchain.pem and privkey.pem, the names docker-compose.yml
# expects, into OUTPUT_DIR (default nginx/certs).
#
#   nginx/scripts/make-self-signed-cert.sh [--name HOST]... [--days N] [--force] [OUTPUT_DIR]
#
# The certificate is valid for localhost, 127.0.0.1, ::1 and every --name.
# Existing files are kept unless --force is given, so the script can run on
# every deploy.
set -euo pipefail

days=30
force=false
names=()
out=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --name) [ "$#" -ge 2 ] || { echo "make-self-signed-cert: --name needs a value" >&2; exit 2; }; names+=("$2"); shift 2 ;;
    --days) [ "$#" -ge 2 ] || { echo "make-self-signed-cert: --days needs a value" >&2; exit 2; }; days=$2; shift 2 ;;
    --force) force=true; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "make-self-signed-cert: unknown option $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
[ -n "$out" ] || out="$(cd "$(dirname "$0")/.." && pwd)/certs"
case "$days" in ''|*[!0-9]*) echo "make-self-signed-cert: --days must be a number" >&2; exit 2 ;; esac
command -v openssl >/dev/null || { echo "make-self-signed-cert: openssl not found" >&2; exit 1; }

cert="$out/fullchain.pem"
key="$out/privkey.pem"
if [ -e "$cert" ] && [ -e "$key" ] && [ "$force" = false ]; then
  echo "make-self-signed-cert: $cert and $key exist; kept (--force replaces them)"
  exit 0
fi

mkdir -p "$out"
common_name=${names[0]:-localhost}
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "${names[@]}"; do
  if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then san="$san,IP:$name"; else san="$san,DNS:$name"; fi
done

umask 077
tmp_key=$(mktemp "$out/.privkey.XXXXXX")
trap 'rm -f "$tmp_key"' EXIT
# P-256: every TLS client supports it, and it is fast.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$tmp_key" -out "$cert" -days "$days" -subj "/CN=$common_name" \
  -addext "subjectAltName=$san" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -addext "keyUsage=critical,digitalSignature" \
  -addext "extendedKeyUsage=serverAuth" 2>/dev/null
mv "$tmp_key" "$key"
chmod 644 "$cert"
# nginx reads the key as root before dropping privileges; nobody else needs it.
chmod 600 "$key"
echo "make-self-signed-cert: wrote $cert and $key (CN=$common_name, $san, $days days)"
