#!/usr/bin/env bash
# Instructions per request, the figure that holds on a shared machine (BENCHMARKING.md):
# the server under test runs under `valgrind --tool=callgrind` in front of a native nginx
# upstream; on one keep-alive connection, after a warm-up, the counters are zeroed, N
# requests sent and the counters dumped, three times; the median Ir / N is reported for:
#
#   - schemagate, valid requests (auth + tenant + rate limit + validation + forward)
#   - schemagate, invalid requests (rejected with 422 before the upstream)
#   - schemagate, the same request on a route that checks nothing (the HTTP plumbing alone)
#   - schemagate-access: the valid request again on a gateway with the access log on
#     (`logging.access` a file under target/bench/callgrind/); the difference from the
#     first line is what the access log costs, its writer thread included
#   - nginx as a plain reverse proxy (proxy_pass, upstream keepalive pool, one process)
#   - the nginx upstream itself (`return 200`), for calibration against BENCHMARKING.md
#   - hyper-floor (examples/hyper_floor.rs): hyper's HTTP/1 server and client joined with
#     nothing else, on the gateway's runtime and allocator; what the HTTP library alone costs
#   - relay-floor (examples/relay_floor.rs): a hand-written HTTP/1.1 relay on tokio (httparse
#     for the heads, bytes copied across); the least a hand-written HTTP/1 path could cost
#   - nginx-lua: the nginx + Lua validating peer (bench/peers/lua/peer.lua: bearer present,
#     X-Tenant integer, the body schema as a hand-written Lua check), one process, valid requests and
#     invalid ones (422). LuaJIT compiles traces into memory it later patches, so this
#     target runs with --smc-check=all-non-file (valgrind re-reads changed code; the count
#     of guest instructions is unaffected)
#
# The Node peers of bench/run.sh (fastify, express-openapi, prism) are not run under
# callgrind: V8 compiles in the background and tiers code up by counters and timers, so under
# valgrind's 50-fold slowdown a dump counts the compiler at work on a schedule that the
# native process never follows, not the steady state of a request; their CPU per request
# comes from bench/run.sh only. Naming one in CALLGRIND_TARGETS prints this and goes on.
#
#   bench/callgrind.sh      # ~2 minutes after the build; results in target/bench/callgrind/
#
# schemagate runs with TOKIO_WORKER_THREADS=1 (the runtime's worker count; valgrind runs
# one thread at a time anyway), RUST_LOG=warn and the access log off (nginx runs with
# access_log off) except in the schemagate-access target. The
# release profile keeps line tables, so `callgrind_annotate` names functions and lines
# (with fat LTO fewer frames are left to name: for a profile by function, build with
# CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 --target-dir
# target/prof and pass that binary as BENCH_GATEWAY_BIN);
# CALLGRIND_FULL_DEBUG=1 builds with full debug info (CARGO_PROFILE_RELEASE_DEBUG=true,
# which rebuilds every dependency) for inlined frames.
#
# Settings: CALLGRIND_REQUESTS=2000 CALLGRIND_WARMUP=300 CALLGRIND_REPEATS=3
#           CALLGRIND_TARGETS="schemagate schemagate-access nginx upstream hyper-floor relay-floor
#                              nginx-lua"
#           BENCH_SKIP_BUILD=1
#           BENCH_GATEWAY_BIN=path (another schemagate binary, e.g. a baseline build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/lib.sh
source bench/lib.sh

N=${CALLGRIND_REQUESTS:-2000}
WARM=${CALLGRIND_WARMUP:-300}
REPEATS=${CALLGRIND_REPEATS:-3}
TARGETS=${CALLGRIND_TARGETS:-schemagate schemagate-access nginx upstream hyper-floor relay-floor nginx-lua}
OUT=$ROOT/target/bench/callgrind
rm -rf "$OUT"
mkdir -p "$OUT"

install_tools nginx:nginx valgrind:valgrind python3:python3 curl:curl pgrep:procps
case " $TARGETS " in *" nginx-lua "*) install_peers nginx-lua ;; esac
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building schemagate --release"
  if [ "${CALLGRIND_FULL_DEBUG:-0}" = 1 ]; then export CARGO_PROFILE_RELEASE_DEBUG=true; fi
  cargo build --release --locked --bin schemagate >&2
  case " $TARGETS " in
    *" hyper-floor "* | *" relay-floor "*)
      cargo build --release --locked --example hyper_floor --example relay_floor >&2
      ;;
  esac
fi
GATEWAY_BIN=${BENCH_GATEWAY_BIN:-$ROOT/target/release/schemagate}

trap cleanup EXIT
read -r P_UP P_UPCG P_NGX P_GW P_ADMIN P_FLOOR P_RELAY P_LUA <<<"$(free_ports 8)"
nginx_conf upstream "$OUT/nginx-upstream" "$P_UP"
start_nginx "$OUT/nginx-upstream"
wait_port "$P_UP"

# vg NAME [VALGRIND_ARGS...]: the valgrind command line for one server, dumps under $OUT/NAME.
vg() {
  echo valgrind --tool=callgrind --callgrind-out-file="$OUT/$1.out" --dump-instr=no \
    --collect-jumps=no "${@:2}"
}

# count NAME PORT PID [--invalid]: runs the client, appends its JSON to $OUT/raw.jsonl.
# The server's dumps are $OUT/PREFIX.out.N, PREFIX being $DUMP or NAME up to its first `-`.
count() {
  local name=$1 port=$2 pid=$3
  shift 3
  local result
  result=$(python3 bench/callgrind_client.py 127.0.0.1 "$port" "$pid" "$OUT/${DUMP:-${name%%-*}}.out" \
    --warmup "$WARM" --count "$N" --repeats "$REPEATS" "$@")
  log "$name: $(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%.0f Ir/request (repeats: %s)" % (r["median"], ", ".join("%.0f" % x for x in r["ir_per_request"])))' "$result")"
  printf '{"target":"%s","result":%s}\n' "$name" "$result" >>"$OUT/raw.jsonl"
}

# floor NAME BIN PORT: one of the examples/ floors under callgrind, in front of the upstream.
floor() {
  local name=$1 bin=$2 port=$3 pid
  log "$name under callgrind on $port"
  # shellcheck disable=SC2046
  $(vg "${name%%-*}") "$bin" "127.0.0.1:$port" "127.0.0.1:$P_UP" >"$OUT/$name.log" 2>&1 &
  pid=$!
  STARTED+=("$pid")
  wait_port "$port" 120
  count "$name" "$port" "$pid"
  stop_pid "$pid"
}

# gateway NAME ACCESS_LOG: schemagate under callgrind with `logging.access` ACCESS_LOG; sets pid.
gateway() {
  log "$1 under callgrind on $P_GW (access log: $2)"
  # shellcheck disable=SC2046
  BENCH_LISTEN=127.0.0.1:$P_GW BENCH_ADMIN=127.0.0.1:$P_ADMIN BENCH_ACCESS_LOG=$2 \
    BENCH_UPSTREAM=http://127.0.0.1:$P_UP TOKIO_WORKER_THREADS=1 RUST_LOG=warn \
    $(vg "$1") "$GATEWAY_BIN" serve --config bench/gateway.yaml \
    >"$OUT/$1.log" 2>"$OUT/$1.err" &
  pid=$!
  STARTED+=("$pid")
  wait_port "$P_GW" 120
  [ "$(status_of "$P_GW" "$BENCH_BODY_VALID")" = 200 ] || { log "$1: not 200"; exit 1; }
}

for target in $TARGETS; do
  case $target in
    schemagate-access)
      gateway schemagate_access "$OUT/access.log"
      DUMP=schemagate_access count schemagate-access "$P_GW" "$pid"
      stop_pid "$pid"
      log "access log: $(wc -l <"$OUT/access.log") lines in $OUT/access.log"
      ;;
    schemagate)
      gateway schemagate off
      count schemagate "$P_GW" "$pid"
      count schemagate-invalid "$P_GW" "$pid" --invalid
      # The plumbing alone: the same request on a route that checks nothing (bench.plain).
      BENCH_PATH=/bench/plain count schemagate-plain "$P_GW" "$pid"
      stop_pid "$pid"
      ;;
    nginx)
      log "nginx proxy under callgrind on $P_NGX"
      nginx_conf proxy "$OUT/nginx-proxy" "$P_NGX" "$P_UP" off
      # shellcheck disable=SC2046
      start_nginx "$OUT/nginx-proxy" $(vg nginx)
      wait_port "$P_NGX" 120
      count nginx "$P_NGX" "$LAST_PID"
      stop_pid "$LAST_PID"
      ;;
    upstream)
      log "nginx upstream under callgrind on $P_UPCG"
      nginx_conf upstream "$OUT/nginx-upstream-cg" "$P_UPCG" "" off
      # shellcheck disable=SC2046
      start_nginx "$OUT/nginx-upstream-cg" $(vg upstream)
      wait_port "$P_UPCG" 120
      count upstream "$P_UPCG" "$LAST_PID"
      stop_pid "$LAST_PID"
      ;;
    nginx-lua)
      log "nginx + Lua peer under callgrind on $P_LUA"
      # shellcheck disable=SC2046
      NGINX_MASTER=off start_peer nginx-lua "$P_LUA" "$P_UP" "$OUT/nginx-lua" \
        $(vg nginx_lua --smc-check=all-non-file)
      wait_port "$P_LUA" 120
      got="$(status_of "$P_LUA" "$BENCH_BODY_VALID") $(status_of "$P_LUA" "$BENCH_BODY_INVALID")"
      [ "$got" = "200 422" ] || { log "nginx-lua: valid and invalid answered $got"; exit 1; }
      DUMP=nginx_lua count nginx-lua "$P_LUA" "$LAST_PID"
      DUMP=nginx_lua count nginx-lua-invalid "$P_LUA" "$LAST_PID" --invalid
      stop_pid "$LAST_PID"
      ;;
    fastify | express-openapi | prism)
      log "$target: not run under callgrind (a Node process: V8's background compiler and tiering"
      log "  make a dump count compilation on valgrind's schedule, not a request's steady state;"
      log "  bench/run.sh measures its CPU per request)"
      ;;
    hyper-floor) floor hyper-floor "${BENCH_FLOOR_BIN:-$ROOT/target/release/examples/hyper_floor}" "$P_FLOOR" ;;
    relay-floor) floor relay-floor "${BENCH_RELAY_BIN:-$ROOT/target/release/examples/relay_floor}" "$P_RELAY" ;;
    *) log "unknown target $target"; exit 1 ;;
  esac
done

# The annotated profile of schemagate's last valid repeat, for finding what to remove.
dump=$(python3 -c 'import json,sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["target"] == "schemagate": print(r["result"]["dumps"][-1])' "$OUT/raw.jsonl" || true)
# --threshold=100: the thread-start frames are listed first at 100 % (callgrind charges them
# the whole dump), and the default threshold (99 %) would stop the listing right there.
if [ -n "$dump" ]; then
  callgrind_annotate --inclusive=no --threshold=100 "$dump" >"$OUT/schemagate.self.txt" 2>/dev/null || true
  callgrind_annotate --inclusive=yes --threshold=100 "$dump" >"$OUT/schemagate.inclusive.txt" 2>/dev/null || true
fi

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || COMMIT="$COMMIT+dirty"
python3 - "$OUT/raw.jsonl" "$OUT/../callgrind.json" "$COMMIT" "$N" "$REPEATS" <<'PY'
import datetime, json, sys
raw, out, commit, n, repeats = sys.argv[1:6]
results = {}
for line in open(raw):
    r = json.loads(line)
    results[r["target"]] = r["result"]
ref = results.get("nginx", {}).get("median")
labels = {
    "upstream": "nginx upstream (`return 200`)",
    "nginx": "nginx proxy_pass (keepalive pool)",
    "schemagate": "schemagate, valid (forwarded)",
    "schemagate-invalid": "schemagate, invalid (422)",
    "schemagate-plain": "schemagate, route with no checks",
    "schemagate-access": "schemagate, valid, access log on (to a file)",
    "hyper-floor": "hyper server + hyper client, nothing else (examples/hyper_floor.rs)",
    "relay-floor": "hand-written HTTP/1.1 relay, httparse + tokio (examples/relay_floor.rs)",
    "nginx-lua": "nginx + Lua (hand-written schema check), valid (forwarded)",
    "nginx-lua-invalid": "nginx + Lua (hand-written schema check), invalid (422)",
}
print()
print(f"callgrind, {n} requests per repeat on one keep-alive connection, median of {repeats}; commit {commit}")
print()
print("| process | instructions per request | repeats | × nginx proxy |")
print("|---|---|---|---|")
for name in ("upstream", "nginx", "schemagate", "schemagate-access", "schemagate-invalid",
             "schemagate-plain", "hyper-floor", "relay-floor", "nginx-lua", "nginx-lua-invalid"):
    r = results.get(name)
    if not r:
        continue
    reps = ", ".join(f"{x:,.0f}" for x in r["ir_per_request"])
    ratio = f"{r['median'] / ref:.2f}" if ref else "-"
    print(f"| {labels[name]} | {r['median']:,.0f} | {reps} | {ratio} |")
base, logged = results.get("schemagate"), results.get("schemagate-access")
if base and logged:
    print()
    print(f"The access log costs {logged['median'] - base['median']:,.0f} instructions per request "
          f"(schemagate-access minus schemagate, writer thread included).")
doc = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "commit": commit,
    "requests_per_repeat": int(n),
    "results": results,
    "ratio_to_nginx": {k: v["median"] / ref for k, v in results.items()} if ref else None,
}
json.dump(doc, open(out, "w"), indent=2)
print()
print(f"JSON: {out}")
PY
