#!/usr/bin/env bash
# Schemathesis against a live gateway, driven by the gateway's own OpenAPI document.
#
#   1. installs schemathesis and openapi-spec-validator (pinned) into target/schemathesis/venv
#      when they are missing;
#   2. builds the debug binary;
#   3. lays out target/schemathesis/run: tests/schemathesis/gateway.yaml, the shipped schemas
#      and mock bodies, and the test-only ones from tests/schemathesis/;
#   4. exports `schemagate openapi` for the shipped config and for the run's config, and
#      validates both as OpenAPI 3.1;
#   5. starts the gateway (built-in mock upstreams, so the upstream conforms to the documents
#      by construction) on 127.0.0.1, on a port the kernel picks;
#   6. runs `schemathesis run --checks all --mode all` with a fixed seed and a bounded number
#      of examples per operation, and fails on any failed check;
#   7. stops everything it started (trap).
#
# Environment: SCHEMATHESIS_EXAMPLES (examples per operation, default 200),
# SCHEMATHESIS_SEED (default 20260501).
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
VALIDATOR_VERSION=0.9.0
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-200}
SEED=${SCHEMATHESIS_SEED:-20260501}
# Not a secret: a key that exists only in this run's config, as its SHA-256.
API_KEY=schemathesis-run-key

VENV=target/schemathesis/venv
RUN=target/schemathesis/run
BIN=target/debug/schemagate

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION" \
  || ! "$VENV/bin/python" -c "import openapi_spec_validator" 2>/dev/null; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV..."
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$VALIDATOR_VERSION"
fi

cargo build --locked --quiet --bin schemagate

rm -rf "$RUN"
mkdir -p "$RUN/schemas" "$RUN/mock"
cp -R schemas/. tests/schemathesis/schemas/. "$RUN/schemas/"
cp -R config/mock/. tests/schemathesis/mock/. "$RUN/mock/"
cp tests/schemathesis/gateway.yaml "$RUN/gateway.yaml"
SCHEMATHESIS_KEY_SHA256=$(printf %s "$API_KEY" | "$BIN" hash-key)
export SCHEMATHESIS_KEY_SHA256

# The shipped config's document must be valid too, though the run uses its own config.
"$BIN" openapi --config config/gateway.yaml > "$RUN/shipped-openapi.json"
"$BIN" openapi --config "$RUN/gateway.yaml" > "$RUN/openapi.json"
"$VENV/bin/python" - "$RUN/shipped-openapi.json" "$RUN/openapi.json" <<'PY'
import json, sys
from openapi_spec_validator import validate
for path in sys.argv[1:]:
    with open(path) as f:
        validate(json.load(f))
    print(f"{path}: valid OpenAPI 3.1")
PY

GATEWAY_PID=""
cleanup() {
  if [ -n "$GATEWAY_PID" ] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
    kill "$GATEWAY_PID" 2>/dev/null || true
    wait "$GATEWAY_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

RUST_LOG=warn "$BIN" serve --config "$RUN/gateway.yaml" > "$RUN/gateway.out" 2> "$RUN/gateway.err" &
GATEWAY_PID=$!
ADDRESS=""
for _ in $(seq 1 100); do
  # The banner is on stderr with the diagnostics; stdout (gateway.out) is the access log.
  ADDRESS=$(sed -n 's|^schemagate listening on http://\([^ ]*\) .*|\1|p' "$RUN/gateway.err" | head -n 1)
  [ -n "$ADDRESS" ] && break
  if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
    cat "$RUN/gateway.err" >&2
    echo "the gateway exited before listening" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$ADDRESS" ]; then
  echo "the gateway did not start listening within 10 s" >&2
  exit 1
fi
echo "gateway on http://$ADDRESS; schemathesis $SCHEMATHESIS_VERSION, seed $SEED, $EXAMPLES examples per operation"

started=$(date +%s)
status=0
# From inside the run directory, so whatever schemathesis writes stays under target/.
ROOT=$(pwd)
(cd "$RUN" && "$ROOT/$VENV/bin/schemathesis" --config-file "$ROOT/tests/schemathesis/schemathesis.toml" \
  --no-color run openapi.json \
  --url "http://$ADDRESS" \
  --checks all \
  --mode all \
  --seed "$SEED" \
  --max-examples "$EXAMPLES" \
  --workers 1 \
  --generation-database none \
  --request-timeout 10 \
  --header "Authorization: Bearer $API_KEY" \
  --report junit --report-junit-path junit.xml \
  > schemathesis.log 2>&1) || status=$?
elapsed=$(( $(date +%s) - started ))
# The summary is what matters in CI logs; the full log stays in target/.
sed -n '/SUMMARY/,$p' "$RUN/schemathesis.log"
if [ "$status" -ne 0 ]; then
  echo "schemathesis found problems (exit $status) in ${elapsed}s; full log: $RUN/schemathesis.log" >&2
  grep -n "^_\{3,\}\|^[0-9]\+\. \|Failed to\|Error" "$RUN/schemathesis.log" | head -40 >&2 || true
fi
if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
  echo "the gateway died during the run" >&2
  cat "$RUN/gateway.err" >&2
  exit 1
fi
echo "schemathesis run took ${elapsed}s"
if [ "$status" -eq 0 ]; then
  # A closing line in the plain 'N passed, N failed' form, for whoever reads CI logs.
  passed=$(sed -n 's/^ *[0-9]* generated, \([0-9]*\) passed.*/\1/p' "$RUN/schemathesis.log" | tail -n 1)
  [ -n "$passed" ] && echo "schemathesis: $passed passed, 0 failed"
fi
exit "$status"
