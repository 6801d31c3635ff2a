#!/usr/bin/env bash
# Wall-clock benchmark: the same load against a fast upstream directly, nginx as a plain
# reverse proxy, schemagate (validation, bearer auth, X-Tenant tenant and a rate limit on),
# hyper-floor (examples/hyper_floor.rs: hyper's HTTP/1 server and client joined with nothing
# else, what the HTTP library alone costs) and relay-floor (examples/relay_floor.rs: a
# hand-written HTTP/1.1 relay on tokio and httparse, the least a hand-written path could cost),
# and the validating peers a team would run instead (bench/peers/, one worker each):
#   nginx-lua        nginx + lua-nginx-module + the body schema as a hand-written Lua check
#   fastify          fastify + ajv (strict body options) + @fastify/reply-from
#   express-openapi  express + express-openapi-validator, fed config/openapi/flextell.yaml
#   prism            Stoplight Prism 5.14.2 in proxy mode with --errors, the same document
#
#   bench/run.sh            # ~9 minutes with the peers (3 rounds); results in target/bench/
#
# What it does (see docs/performance.md):
#   1. installs nginx, wrk, python3 and curl from Debian's packages when missing, and what
#      the peers need (bench/lib.sh install_peers: lua-nginx-module, lua-cjson, node, npm,
#      and the npm packages pinned in bench/peers/package-lock.json under target/bench/peers);
#   2. builds schemagate --release;
#   3. starts, on free loopback ports: the upstream (nginx, worker_processes 1, answering a
#      fixed JSON body), nginx as a plain reverse proxy (proxy_pass with an upstream keepalive
#      pool, worker_processes 1, access_log off) and schemagate with bench/gateway.yaml (the
#      shipped routes and schemas, rate limits far above the load), and the peers; each
#      target must answer the valid request with 200, and each validating one is asked a
#      request without a bearer (401 expected) and one with an invalid body (422 expected):
#      what it answers is recorded and shown in the peers' table;
#   4. for each scenario, runs interleaved rounds (target order rotated each round): a
#      warm-up, then wrk with fixed connections and duration, reading the proxy's utime +
#      stime from /proc/PID/stat (nginx: master + worker) before and after;
#   5. reads schemagate's and nginx's VmRSS after the load and while holding 10 000 idle
#      keep-alive connections (bench/idle_conns.py), and from the difference the RSS each
#      idle connection costs (target: at most 8 KiB);
#   6. prints the table (medians, min-max spread, ratios to nginx) and writes
#      target/bench/results.json (and a dated copy).
#
# Scenarios: `valid` sends only the valid request; `mixed` sends every second request with
# an invalid body (422 from schemagate) to show that rejecting costs less than forwarding;
# `cores` sends the valid request to schemagate with one worker and to a second schemagate
# on tokio's default runtime (no TOKIO_WORKER_THREADS: a worker per core) and reports the
# throughput ratio (target: at least 1.7). wrk and the upstream run on the same two cores,
# so the second worker shares its core with them.
#
# Settings (environment):
#   BENCH_ROUNDS=3 BENCH_DURATION=10 BENCH_WARMUP=2 BENCH_CONNS=64 BENCH_WRK_THREADS=1
#   BENCH_GATEWAY_THREADS=1   tokio worker threads for schemagate (nginx runs 1 worker)
#   BENCH_RUST_LOG=warn       schemagate's diagnostics filter
#   BENCH_ACCESS_LOG=off      schemagate's `logging.access` (nginx runs with access_log off):
#                             `off`, or an absolute file path to measure the access log
#   BENCH_IDLE_CONNS=10000    idle keep-alive connections for the RSS figure (the processes'
#                             open-file limit must exceed it: see `ulimit -n`)
#   BENCH_SCENARIOS="valid mixed cores"   BENCH_SKIP_BUILD=1 to use the existing release binary
#   BENCH_PEERS="nginx-lua fastify express-openapi prism"   the peers measured ("" for none)
#   BENCH_GATEWAY_BIN=path          another schemagate binary (implies nothing about building)
#
# The machine is small and shared (see BENCHMARKING.md): requests/s and latency move a lot
# between runs; CPU per request is steadier; bench/callgrind.sh gives the figure that holds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/lib.sh
source bench/lib.sh

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNS:-64}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
GW_THREADS=${BENCH_GATEWAY_THREADS:-1}
GW_LOG=${BENCH_RUST_LOG:-warn}
IDLE=${BENCH_IDLE_CONNS:-10000}
SCENARIOS=${BENCH_SCENARIOS:-valid mixed cores}
RUN_PEERS=${BENCH_PEERS-$PEERS}
OUT=$ROOT/target/bench
mkdir -p "$OUT"

# --- tools -------------------------------------------------------------------------------
install_tools nginx:nginx wrk:wrk python3:python3 curl:curl pgrep:procps
# shellcheck disable=SC2086
[ -z "$RUN_PEERS" ] || install_peers $RUN_PEERS

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building schemagate --release"
  cargo build --release --locked --bin schemagate --example hyper_floor --example relay_floor >&2
fi
GATEWAY_BIN=${BENCH_GATEWAY_BIN:-$ROOT/target/release/schemagate}
FLOOR_BIN=${BENCH_FLOOR_BIN:-$ROOT/target/release/examples/hyper_floor}
RELAY_BIN=${BENCH_RELAY_BIN:-$ROOT/target/release/examples/relay_floor}

# --- processes ---------------------------------------------------------------------------
trap cleanup EXIT
read -r P_UP P_NGX P_GW P_ADMIN P_FLOOR P_RELAY P_GW2 P_ADMIN2 <<<"$(free_ports 8)"
# shellcheck disable=SC2086
read -r -a P_PEERS <<<"$(free_ports $(wc -w <<<"$RUN_PEERS") 2>/dev/null || true)"
UP_DIR=$OUT/nginx-upstream
NGX_DIR=$OUT/nginx-proxy
nginx_conf upstream "$UP_DIR" "$P_UP"
nginx_conf proxy "$NGX_DIR" "$P_NGX" "$P_UP"
log "upstream nginx on $P_UP, nginx proxy on $P_NGX, schemagate on $P_GW (admin $P_ADMIN)"
start_nginx "$UP_DIR"
UP_PID=$LAST_PID
wait_port "$P_UP"
start_nginx "$NGX_DIR"
NGX_PID=$LAST_PID
wait_port "$P_NGX"

BENCH_LISTEN=127.0.0.1:$P_GW BENCH_ADMIN=127.0.0.1:$P_ADMIN BENCH_UPSTREAM=http://127.0.0.1:$P_UP \
  TOKIO_WORKER_THREADS=$GW_THREADS RUST_LOG=$GW_LOG BENCH_ACCESS_LOG=${BENCH_ACCESS_LOG:-off} \
  "$GATEWAY_BIN" serve --config bench/gateway.yaml >"$OUT/schemagate.log" 2>&1 &
GW_PID=$!
STARTED+=("$GW_PID")
wait_port "$P_GW"
# The same gateway on tokio's default runtime, for the `cores` scenario.
if [[ " $SCENARIOS " == *" cores "* ]]; then
  env -u TOKIO_WORKER_THREADS BENCH_LISTEN=127.0.0.1:$P_GW2 BENCH_ADMIN=127.0.0.1:$P_ADMIN2 \
    BENCH_UPSTREAM=http://127.0.0.1:$P_UP RUST_LOG=$GW_LOG BENCH_ACCESS_LOG=${BENCH_ACCESS_LOG:-off} \
    "$GATEWAY_BIN" serve --config bench/gateway.yaml >"$OUT/schemagate-cores.log" 2>&1 &
  GW2_PID=$!
  STARTED+=("$GW2_PID")
  wait_port "$P_GW2"
fi
declare -A PORT=([upstream]=$P_UP [nginx]=$P_NGX [schemagate]=$P_GW [hyper-floor]=$P_FLOOR
  [relay-floor]=$P_RELAY [schemagate-cores]=$P_GW2)
declare -A PIDS=([upstream]="$(family "$UP_PID")" [nginx]="$(family "$NGX_PID")" [schemagate]=$GW_PID
  [schemagate-cores]=${GW2_PID:-})
declare -A BIN=([hyper-floor]=$FLOOR_BIN [relay-floor]=$RELAY_BIN)
# The floors that were built (a BENCH_SKIP_BUILD run may have only some).
FLOORS=""
for floor in hyper-floor relay-floor; do
  if [ ! -x "${BIN[$floor]}" ]; then
    log "$floor: no binary at ${BIN[$floor]}, not measured"
    continue
  fi
  "${BIN[$floor]}" "127.0.0.1:${PORT[$floor]}" "127.0.0.1:$P_UP" >"$OUT/$floor.log" 2>&1 &
  PIDS[$floor]=$!
  STARTED+=("$!")
  wait_port "${PORT[$floor]}"
  FLOORS+=" $floor"
done

i=0
for peer in $RUN_PEERS; do
  PORT[$peer]=${P_PEERS[$i]}
  i=$((i + 1))
  log "$peer on ${PORT[$peer]}"
  start_peer "$peer" "${PORT[$peer]}" "$P_UP" "$OUT/peer-$peer"
  wait_port "${PORT[$peer]}" 60 || { cat "$OUT/peer-$peer/"*.log >&2; exit 1; }
  PIDS[$peer]=$(family "$LAST_PID")
done
sleep 0.5
log "pids: upstream ${PIDS[upstream]}; nginx ${PIDS[nginx]}; schemagate ${PIDS[schemagate]}"

# --- preflight: every target answers the valid request with 200; schemagate answers the
# invalid one with 422 (so the mixed scenario measures rejections, not errors). Each
# validating target is also asked without a bearer and with the invalid body: a peer that
# answers those otherwise than 401 and 422 is still measured, and its answers are shown.
for target in upstream nginx schemagate $FLOORS $RUN_PEERS; do
  got=$(status_of "${PORT[$target]}" "$BENCH_BODY_VALID")
  [ "$got" = 200 ] || { log "$target answered $got to the valid request"; exit 1; }
done
got=$(status_of "$P_GW" "$BENCH_BODY_INVALID")
[ "$got" = 422 ] || { log "schemagate answered $got to the invalid request"; exit 1; }
ANSWERS=""
for target in schemagate $RUN_PEERS; do
  port=${PORT[$target]}
  no_bearer=$(status_of "$port" "$BENCH_BODY_VALID" no-bearer)
  invalid=$(status_of "$port" "$BENCH_BODY_INVALID")
  [ "$no_bearer/$invalid" = 401/422 ] || log "$target answers $no_bearer without a bearer and $invalid to the invalid body"
  ANSWERS+="${ANSWERS:+, }\"$target\": {\"valid\": 200, \"no_bearer\": $no_bearer, \"invalid\": $invalid}"
done

# --- load --------------------------------------------------------------------------------
RAW=$OUT/raw.jsonl
: >"$RAW"
# The machine is shared: its load average before and after says how quiet the run was.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
CLK_TCK=$(getconf CLK_TCK)

measure() {
  local scenario=$1 target=$2 round=$3 every=0 before after out result m_before m_after
  [ "$scenario" = mixed ] && every=2
  local url="http://127.0.0.1:${PORT[$target]}"
  # shellcheck disable=SC2086
  BENCH_INVALID_EVERY=$every wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" \
    -s bench/wrk.lua "$url" >/dev/null
  # shellcheck disable=SC2086
  before=$(cpu_ticks ${PIDS[$target]})
  m_before=$(machine_ticks)
  out=$(BENCH_INVALID_EVERY=$every wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" \
    -s bench/wrk.lua "$url")
  # shellcheck disable=SC2086
  after=$(cpu_ticks ${PIDS[$target]})
  m_after=$(machine_ticks)
  # The share of both cores busy during the run (wrk, upstream, proxy and anyone else).
  local busy
  busy=$(awk -v a="$m_before" -v b="$m_after" 'BEGIN { split(a, x, " "); split(b, y, " ");
    t = y[2] - x[2]; printf "%.3f", (t > 0 ? (y[1] - x[1]) / t : 0) }')
  result=$(sed -n 's/^BENCH_RESULT //p' <<<"$out")
  [ -n "$result" ] || { log "wrk printed no result:"; echo "$out" >&2; exit 1; }
  printf '{"scenario":"%s","target":"%s","round":%d,"cpu_ticks":%d,"clk_tck":%d,"machine_busy":%s,"wrk":%s}\n' \
    "$scenario" "$target" "$round" "$((after - before))" "$CLK_TCK" "$busy" "$result" >>"$RAW"
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); ticks = int(sys.argv[2]); tck = int(sys.argv[3])
rps = r["requests"] / (r["duration_us"] / 1e6)
cpu = ticks / tck * 1e6 / max(r["requests"], 1)
line = "[bench] {:7} round {} {:10} {:9.0f} req/s  p50 {:6d} us  p99 {:6d} us  non-2xx {:7d}  cpu {:6.1f} us/req  machine {:3.0f} % busy"
print(line.format(sys.argv[4], sys.argv[5], sys.argv[6], rps, r["p50_us"], r["p99_us"], r["non_2xx"], cpu, float(sys.argv[7]) * 100), file=sys.stderr)' \
    "$result" "$((after - before))" "$CLK_TCK" "$scenario" "$round" "$target" "$busy"
}

for scenario in $SCENARIOS; do
  case $scenario in
    # shellcheck disable=SC2206
    valid) targets=(upstream nginx schemagate $FLOORS $RUN_PEERS) ;;
    mixed) targets=(nginx schemagate) ;;
    cores) targets=(schemagate schemagate-cores) ;;
    *) log "unknown scenario $scenario"; exit 1 ;;
  esac
  for round in $(seq 1 "$ROUNDS"); do
    n=${#targets[@]}
    for i in $(seq 0 $((n - 1))); do
      # Rotate the order each round, so no target always runs right after another.
      measure "$scenario" "${targets[$(((i + round - 1) % n))]}" "$round"
    done
  done
done

# --- memory ------------------------------------------------------------------------------
GW_RSS_END=$(vm_rss_kib "$GW_PID")
# shellcheck disable=SC2086
NGX_RSS_END=$(vm_rss_kib ${PIDS[nginx]})
log "holding $IDLE idle keep-alive connections to schemagate, then to nginx"
GW_IDLE=$(python3 bench/idle_conns.py 127.0.0.1 "$P_GW" "$IDLE" "$GW_PID")
# shellcheck disable=SC2086
NGX_IDLE=$(python3 bench/idle_conns.py 127.0.0.1 "$P_NGX" "$IDLE" ${PIDS[nginx]})

# --- report ------------------------------------------------------------------------------
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src Cargo.toml Cargo.lock bench 2>/dev/null || COMMIT="$COMMIT+dirty"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
META=$OUT/meta.json
cat >"$META" <<EOF
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "commit": "$COMMIT",
  "cpus": $(nproc),
  "load_average": {"start": "$LOAD_START", "end": "$(cut -d' ' -f1-3 /proc/loadavg)"},
  "rounds": $ROUNDS,
  "duration_s": $DURATION,
  "warmup_s": $WARMUP,
  "connections": $CONNS,
  "wrk_threads": $WRK_THREADS,
  "gateway_threads": $GW_THREADS,
  "rust_log": "$GW_LOG",
  "nginx": "$("$(nginx_bin)" -v 2>&1 | sed 's/.*nginx\///')",
  "wrk": "$(wrk -v 2>&1 | head -1 | awk '{print $2}')",
  "request": "POST /v1/conversations, ${#BENCH_BODY_VALID}-byte JSON body, Authorization: Bearer, X-Tenant",
  "labels": {
    "upstream": "upstream (nginx return 200, direct)",
    "nginx": "nginx proxy_pass (keepalive pool)",
    "schemagate": "schemagate (auth + tenant + limit + validation)",
    "hyper-floor": "hyper-floor (hyper server + client, nothing else)",
    "relay-floor": "relay-floor (hand-written HTTP/1.1 relay, httparse)",
    "schemagate-cores": "schemagate, tokio's default runtime (a worker per core)",
    "nginx-lua": "nginx + Lua (the body schema as a hand-written Lua check)",
    "fastify": "fastify + ajv + @fastify/reply-from",
    "express-openapi": "express + express-openapi-validator",
    "prism": "Stoplight Prism 5.14.2 proxy --errors"
  },
  "checks": {
    "nginx": "nothing",
    "schemagate": "auth, tenant, rate limit, header + body schema, all errors",
    "nginx-lua": "bearer present, X-Tenant integer, body schema (first error only)",
    "fastify": "bearer present, X-Tenant integer, body schema (strict, first error only); 422 set by its error handler (fastify answers 400)",
    "express-openapi": "the OpenAPI document: bearer present, X-Tenant number, body schema (first error only); 422 set by its error handler (the validator answers 400)",
    "prism": "the OpenAPI document: bearer present, X-Tenant number, body schema (all errors); response checked too"
  },
  "answers": {$ANSWERS},
  "versions": {
    "node": "$(node -v 2>/dev/null || echo none)",
    "lua-nginx-module": "$(dpkg-query -W -f='${Version}' libnginx-mod-http-lua 2>/dev/null || echo none)",
    "npm": $(python3 -c 'import json; print(json.dumps(json.load(open("bench/peers/package.json"))["dependencies"]))')
  },
  "scenarios": {
    "valid": "every request valid (200 from the upstream)",
    "mixed": "every second request has an invalid body (422 from schemagate; nginx forwards all)",
    "cores": "every request valid; schemagate with one worker, then with a worker per core"
  },
  "rss": {
    "schemagate": {"after_load_kib": $GW_RSS_END, "idle": $GW_IDLE},
    "nginx": {"after_load_kib": $NGX_RSS_END, "idle": $NGX_IDLE}
  }
}
EOF
python3 bench/report.py "$RAW" "$META" "$OUT/results.json" | tee "$OUT/results.md"
cp "$OUT/results.json" "$OUT/results-$STAMP.json"
