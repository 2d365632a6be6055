#!/usr/bin/env bash
# Refresh the Compose Specification schema the deployment tests validate
# against (gateway/test/deploy/compose-spec/) from compose-go, the library
# Docker Compose itself validates with, fetched through the Go module proxy.
#
#   scripts/refresh-compose-schema.sh            # the newest compose-go v2
#   scripts/refresh-compose-schema.sh v2.17.0    # a given version
#
# Needs go and unzip. Writes the schema, its LICENSE and NOTICE, and
# SOURCE.json (module, version, release time, sha256); then run npm test.
set -euo pipefail

module=github.com/compose-spec/compose-go/v2
here=$(cd "$(dirname "$0")/.." && pwd)
target="$here/gateway/test/deploy/compose-spec"
version=${1:-}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if [ -z "$version" ]; then
  version=$(go list -m -versions "$module" | tr ' ' '\n' | tail -n 1)
fi
# -json prints the zip's path even when this Go is older than the module's go line.
info=$(GOFLAGS=-mod=mod go mod download -json "$module@$version" || true)
zip=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Zip": "\(.*\)",$/\1/p')
time=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p' | xargs cat | sed -n 's/.*"Time":"\([^"]*\)".*/\1/p')
[ -f "$zip" ] || { echo "refresh-compose-schema: could not download $module@$version" >&2; exit 1; }

prefix="$module@$version"
unzip -p "$zip" "$prefix/schema/compose-spec.json" > "$target/compose-spec.json"
unzip -p "$zip" "$prefix/LICENSE" > "$target/LICENSE"
unzip -p "$zip" "$prefix/NOTICE" > "$target/NOTICE"
sum=$(sha256sum "$target/compose-spec.json" | cut -d' ' -f1)
cat > "$target/SOURCE.json" <<JSON
{
  "module": "$module",
  "version": "$version",
  "released": "$time",
  "path": "schema/compose-spec.json",
  "sha256": "$sum"
}
JSON
echo "compose-spec.json from $module@$version ($time), sha256 $sum"
