#!/usr/bin/env bash
# What sharing rate limits through Redis costs: the same gateway config twice, every route's
# limit in this process (`store: local`) or in one redis-server (`store: redis`), the same
# load (bench/wrk.lua: the valid Flextell POST, one tenant) against each in interleaved
# rounds, on loopback.
#
#   bench/redis.sh          # ~2 minutes after the release build; results in target/bench/redis/
#
# Reported per store (medians over the rounds): requests/s, p50 and p99 latency, the
# gateway's CPU per request, and for Redis the EVALSHA calls per admitted request and
# redis-server's own CPU per request (INFO commandstats and /proc, before and after each
# round). Limits are far above the load, so every request is admitted and the figures are the
# limiter's cost, not 429s. The issue's bar: throughput ≥ 0.8 × local, p99 added ≤ 0.5 ms.
#
# Settings (environment): BENCH_ROUNDS=5 BENCH_DURATION=10 BENCH_WARMUP=2 BENCH_CONNS=64
#   BENCH_GATEWAY_THREADS=1 BENCH_SKIP_BUILD=1 BENCH_GATEWAY_BIN=path
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/lib.sh
source bench/lib.sh

ROUNDS=${BENCH_ROUNDS:-5}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNS:-64}
GW_THREADS=${BENCH_GATEWAY_THREADS:-1}
OUT=$ROOT/target/bench/redis
mkdir -p "$OUT"

install_tools nginx:nginx wrk:wrk python3:python3 curl:curl pgrep:procps \
  redis-server:redis-server redis-cli:redis-tools

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building schemagate --release"
  cargo build --release --locked --bin schemagate >&2
fi
GATEWAY_BIN=${BENCH_GATEWAY_BIN:-$ROOT/target/release/schemagate}

trap cleanup EXIT
read -r P_UP P_REDIS P_LOCAL P_LOCAL_ADMIN P_SHARED P_SHARED_ADMIN <<<"$(free_ports 6)"

# The two configs: bench/gateway.yaml as it is, and with `store: redis` on every limit and a
# `redis:` section (paths made absolute, since the copies live under target/).
python3 - "$ROOT/bench/gateway.yaml" "$OUT" "$P_REDIS" <<'EOF'
import pathlib, sys
source, out, port = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
text = source.read_text().replace("schema_dir: ../schemas", f"schema_dir: {source.parent.parent}/schemas")
(out / "local.yaml").write_text(text)
shared = text.replace("burst: 1000000 }", "burst: 1000000, store: redis }")
assert shared != text, "no rate_limit line to change"
shared += f"\nredis:\n  url: redis://127.0.0.1:{port}/0\n  timeout: 50ms\n  on_error: deny\n"
(out / "redis.yaml").write_text(shared)
EOF

UP_DIR=$OUT/nginx-upstream
nginx_conf upstream "$UP_DIR" "$P_UP"
start_nginx "$UP_DIR"
UP_PID=$LAST_PID
wait_port "$P_UP"

redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$OUT" >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
STARTED+=("$REDIS_PID")
wait_port "$P_REDIS"

start_gateway() { # name port admin
  BENCH_LISTEN=127.0.0.1:$2 BENCH_ADMIN=127.0.0.1:$3 BENCH_UPSTREAM=http://127.0.0.1:$P_UP \
    TOKIO_WORKER_THREADS=$GW_THREADS RUST_LOG=warn \
    "$GATEWAY_BIN" serve --config "$OUT/$1.yaml" >"$OUT/$1.log" 2>&1 &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
  wait_port "$2"
}
start_gateway local "$P_LOCAL" "$P_LOCAL_ADMIN"
LOCAL_PID=$LAST_PID
start_gateway redis "$P_SHARED" "$P_SHARED_ADMIN"
SHARED_PID=$LAST_PID
declare -A PORT=([local]=$P_LOCAL [redis]=$P_SHARED)
declare -A PID=([local]=$LOCAL_PID [redis]=$SHARED_PID)

# Preflight: both answer 200, and the Redis one did ask Redis.
for store in local redis; do
  got=$(status_of "${PORT[$store]}" "$BENCH_BODY_VALID")
  [ "$got" = 200 ] || { log "store $store answered $got to the valid request"; exit 1; }
done
evalsha_calls() {
  redis-cli -p "$P_REDIS" INFO commandstats | tr -d '\r' \
    | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p' | grep . || echo 0
}
[ "$(evalsha_calls)" -ge 1 ] || { log "the redis store made no EVALSHA call"; exit 1; }

RAW=$OUT/raw.jsonl
: >"$RAW"
CLK_TCK=$(getconf CLK_TCK)
measure() { # store round
  local store=$1 url="http://127.0.0.1:${PORT[$1]}" before after calls0 calls1 r0 r1 out result
  wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s bench/wrk.lua "$url" >/dev/null
  before=$(cpu_ticks "${PID[$store]}")
  r0=$(cpu_ticks "$REDIS_PID")
  calls0=$(evalsha_calls)
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -s bench/wrk.lua "$url")
  after=$(cpu_ticks "${PID[$store]}")
  r1=$(cpu_ticks "$REDIS_PID")
  calls1=$(evalsha_calls)
  result=$(sed -n 's/^BENCH_RESULT //p' <<<"$out")
  [ -n "$result" ] || { log "wrk printed no result:"; echo "$out" >&2; exit 1; }
  printf '{"store":"%s","round":%d,"cpu_ticks":%d,"redis_ticks":%d,"evalsha":%d,"clk_tck":%d,"wrk":%s}\n' \
    "$store" "$2" "$((after - before))" "$((r1 - r0))" "$((calls1 - calls0))" "$CLK_TCK" \
    "$result" >>"$RAW"
  log "$(tail -1 "$RAW")"
}
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="local redis"; else order="redis local"; fi
  for store in $order; do measure "$store" "$round"; done
done

python3 - "$RAW" "$CONNS" "$DURATION" "$(git rev-parse --short HEAD)" <<'EOF' | tee "$OUT/results.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
conns, duration, commit = sys.argv[2], sys.argv[3], sys.argv[4]
def figures(store):
    out = []
    for r in (r for r in rows if r["store"] == store):
        w = r["wrk"]
        n = max(w["requests"], 1)
        admitted = n - w["non_2xx"]
        out.append({
            "rps": n / (w["duration_us"] / 1e6),
            "p50": w["p50_us"] / 1000, "p99": w["p99_us"] / 1000,
            "cpu": r["cpu_ticks"] / r["clk_tck"] * 1e6 / n,
            "redis_cpu": r["redis_ticks"] / r["clk_tck"] * 1e6 / n,
            "calls": r["evalsha"] / max(admitted, 1),
            "non_2xx": w["non_2xx"] + w["read_errors"] + w["write_errors"] + w["timeouts"],
        })
    return {k: statistics.median(f[k] for f in out) for k in out[0]}, len(out)
local, n = figures("local")
shared, _ = figures("redis")
print(f"bench/redis.sh at {commit}: {n} rounds × {duration} s, {conns} connections, one tenant, medians\n")
print("| store | req/s | p50 ms | p99 ms | gateway CPU µs/req | redis-server CPU µs/req | EVALSHA per admitted | non-2xx |")
print("|---|---|---|---|---|---|---|---|")
for name, f in (("local", local), ("redis", shared)):
    print(f"| {name} | {f['rps']:.0f} | {f['p50']:.2f} | {f['p99']:.2f} | {f['cpu']:.1f} | "
          f"{f['redis_cpu']:.1f} | {f['calls']:.2f} | {f['non_2xx']:.0f} |")
print(f"\nthroughput redis/local: {shared['rps'] / local['rps']:.2f} × (bar ≥ 0.8); "
      f"p99 added: {shared['p99'] - local['p99']:+.2f} ms (bar ≤ 0.5); "
      f"gateway CPU per request: {shared['cpu'] / local['cpu']:.2f} ×")
EOF
