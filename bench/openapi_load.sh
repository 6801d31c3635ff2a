#!/usr/bin/env bash
# Loading time and memory of a large OpenAPI document: `schemagate check` (release build)
# on GitHub's REST description from npm (@octokit/openapi, ~1000 operations, 13 MB of JSON),
# pinned to one core, three runs. `check` does what a start or a reload does to the
# document: read, parse, translate 3.0, register, compile every operation's schemas.
#   bench/openapi_load.sh            # builds target/release/schemagate if missing
#   BIN=path/to/schemagate bench/openapi_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/schemagate}
[ -x "$BIN" ] || cargo build --release --locked
doc=target/npm/node_modules/@octokit/openapi/generated/api.github.com.json
if [ ! -f "$doc" ]; then
  npm install --no-audit --no-fund --silent --prefix target/npm @octokit/openapi@23.0.2
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/gateway.yaml" <<YAML
listeners:
  - address: 127.0.0.1:0
upstreams:
  github: { url: 'http://127.0.0.1:1' }
openapi:
  - file: $(pwd)/$doc
    upstream: github
    operations:
      repos/compare-commits: { skip: true }
YAML
"$BIN" check --config "$dir/gateway.yaml" >"$dir/routes.txt"
head -1 "$dir/routes.txt"
for _ in 1 2 3; do
  taskset -c 0 /usr/bin/time -f "%e s wall, %U s user, %S s system, %M KiB max RSS" \
    "$BIN" check --config "$dir/gateway.yaml" >/dev/null
done
