#!/usr/bin/env bash
# Wall-clock benchmark: the same load against a fast upstream directly, nginx as a plain
# reverse proxy, and schemagate (validation, bearer auth, X-Tenant tenant and a rate limit on).
#
#   bench/run.sh            # ~4 minutes; results in target/bench/
#
# What it does (see README, "Performance"):
#   1. installs nginx, wrk, python3 and curl from Debian's packages when missing;
#   2. builds schemagate --release;
#   3. starts, on free loopback ports: the upstream (nginx, worker_processes 1, answering a
#      fixed JSON body), nginx as a plain reverse proxy (proxy_pass with an upstream keepalive
#      pool, worker_processes 1, access_log off) and schemagate with bench/gateway.yaml (the
#      shipped routes and schemas, rate limits far above the load);
#   4. for each scenario, runs interleaved rounds (target order rotated each round): a
#      warm-up, then wrk with fixed connections and duration, reading the proxy's utime +
#      stime from /proc/PID/stat (nginx: master + worker) before and after;
#   5. reads schemagate's and nginx's VmRSS after the load and while holding 1 000 idle
#      keep-alive connections (bench/idle_conns.py);
#   6. prints the table (medians, min-max spread, ratios to nginx) and writes
#      target/bench/results.json (and a dated copy).
#
# Scenarios: `valid` sends only the valid request; `mixed` sends every second request with
# an invalid body (422 from schemagate) to show that rejecting costs less than forwarding.
#
# Settings (environment):
#   BENCH_ROUNDS=3 BENCH_DURATION=10 BENCH_WARMUP=2 BENCH_CONNS=64 BENCH_WRK_THREADS=1
#   BENCH_GATEWAY_THREADS=1   tokio worker threads for schemagate (nginx runs 1 worker)
#   BENCH_RUST_LOG=warn       schemagate's log filter (nginx runs with access_log off)
#   BENCH_IDLE_CONNS=1000     idle keep-alive connections for the RSS figure
#   BENCH_SCENARIOS="valid mixed"   BENCH_SKIP_BUILD=1 to use the existing release binary
#
# The machine is small and shared (see BENCHMARKING.md): requests/s and latency move a lot
# between runs; CPU per request is steadier; bench/callgrind.sh gives the figure that holds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
CONNS=${BENCH_CONNS:-64}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
GW_THREADS=${BENCH_GATEWAY_THREADS:-1}
GW_LOG=${BENCH_RUST_LOG:-warn}
IDLE=${BENCH_IDLE_CONNS:-1000}
SCENARIOS=${BENCH_SCENARIOS:-valid mixed}
OUT=$ROOT/target/bench
mkdir -p "$OUT"

# The request (bench/wrk.lua and bench/idle_conns.py read these): Flextell's
# POST /v1/conversations with an 83-byte body; the invalid body has channel_id 0 (minimum 1).
export BENCH_BODY_VALID='{"channel_id":7,"address":"+18095550100","first_name":"Ada","last_name":"Lovelace"}'
export BENCH_BODY_INVALID='{"channel_id":0,"address":"+18095550100","first_name":"Ada","last_name":"Lovelace"}'
export BENCH_TOKEN='bench-token-0123456789abcdef'
export BENCH_TENANT='42'
# What the upstream answers to everything.
UPSTREAM_BODY='{"success":"true","data":{"id":123,"display_name":"Ada Lovelace","address":"+18095550100","unread_count":"0"}}'

log() { printf '[bench] %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------------------
install_tools() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]} (apt)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
}
install_tools
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building schemagate --release"
  cargo build --release --locked --bin schemagate >&2
fi
GATEWAY_BIN=$ROOT/target/release/schemagate

# --- processes ---------------------------------------------------------------------------
STARTED=()
cleanup() {
  # Only the processes this script started, by PID.
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "nothing listens on port $1"
  return 1
}

# nginx.conf for the upstream (`return 200`) or the proxy (`proxy_pass` with a keepalive
# pool). Both: one worker, no access log, keep-alive connections never retired by count.
nginx_conf() {
  local kind=$1 dir=$2 port=$3 upstream_port=${4:-}
  mkdir -p "$dir/tmp"
  {
    cat <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
EOF
    if [ "$kind" = upstream ]; then
      cat <<EOF
  server {
    listen 127.0.0.1:$port;
    location / {
      default_type application/json;
      return 200 '$UPSTREAM_BODY';
    }
  }
}
EOF
    else
      cat <<EOF
  upstream backend {
    server 127.0.0.1:$upstream_port;
    keepalive 128;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
    fi
  } >"$dir/nginx.conf"
}

# Starts nginx in the foreground (`daemon off`), so `$!` is its master; sets LAST_PID.
start_nginx() {
  local dir=$1
  "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >/dev/null 2>&1 &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}

# The master's PID and its children's (nginx: the one worker).
family() {
  local pid=$1
  echo "$pid" $(pgrep -P "$pid" || true)
}

# utime + stime, in clock ticks, summed over the given PIDs (fields 14 and 15 of
# /proc/PID/stat; the command name may hold spaces, so fields are counted after its `)`).
cpu_ticks() {
  local total=0 pid rest
  for pid in "$@"; do
    rest=$(sed 's/^.*) //' "/proc/$pid/stat")
    read -r -a f <<<"$rest"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

vm_rss_kib() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
  done
  echo "$total"
}

read -r P_UP P_NGX P_GW P_ADMIN <<<"$(free_ports 4)"
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
  TOKIO_WORKER_THREADS=$GW_THREADS RUST_LOG=$GW_LOG \
  "$GATEWAY_BIN" serve --config bench/gateway.yaml >"$OUT/schemagate.log" 2>&1 &
GW_PID=$!
STARTED+=("$GW_PID")
wait_port "$P_GW"
sleep 0.5

declare -A PORT=([upstream]=$P_UP [nginx]=$P_NGX [schemagate]=$P_GW)
declare -A PIDS=([upstream]="$(family "$UP_PID")" [nginx]="$(family "$NGX_PID")" [schemagate]=$GW_PID)
log "pids: upstream ${PIDS[upstream]}; nginx ${PIDS[nginx]}; schemagate ${PIDS[schemagate]}"

# --- preflight: every target answers the valid request with 200; schemagate answers the
# invalid one with 422 (so the mixed scenario measures rejections, not errors).
status_of() {
  curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$1/v1/conversations" \
    -H 'Content-Type: application/json' -H "Authorization: Bearer $BENCH_TOKEN" \
    -H "X-Tenant: $BENCH_TENANT" --data-binary "$2"
}
for target in upstream nginx schemagate; do
  got=$(status_of "${PORT[$target]}" "$BENCH_BODY_VALID")
  [ "$got" = 200 ] || { log "$target answered $got to the valid request"; exit 1; }
done
got=$(status_of "$P_GW" "$BENCH_BODY_INVALID")
[ "$got" = 422 ] || { log "schemagate answered $got to the invalid request"; exit 1; }

# --- load --------------------------------------------------------------------------------
RAW=$OUT/raw.jsonl
: >"$RAW"
CLK_TCK=$(getconf CLK_TCK)

measure() {
  local scenario=$1 target=$2 round=$3 every=0 before after out result
  [ "$scenario" = mixed ] && every=2
  local url="http://127.0.0.1:${PORT[$target]}"
  # shellcheck disable=SC2086
  BENCH_INVALID_EVERY=$every wrk -t"$WRK_THREADS" -c"$CONNS" -d"${WARMUP}s" \
    -s bench/wrk.lua "$url" >/dev/null
  # shellcheck disable=SC2086
  before=$(cpu_ticks ${PIDS[$target]})
  out=$(BENCH_INVALID_EVERY=$every wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" \
    -s bench/wrk.lua "$url")
  # shellcheck disable=SC2086
  after=$(cpu_ticks ${PIDS[$target]})
  result=$(sed -n 's/^BENCH_RESULT //p' <<<"$out")
  [ -n "$result" ] || { log "wrk printed no result:"; echo "$out" >&2; exit 1; }
  printf '{"scenario":"%s","target":"%s","round":%d,"cpu_ticks":%d,"clk_tck":%d,"wrk":%s}\n' \
    "$scenario" "$target" "$round" "$((after - before))" "$CLK_TCK" "$result" >>"$RAW"
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); ticks = int(sys.argv[2]); tck = int(sys.argv[3])
rps = r["requests"] / (r["duration_us"] / 1e6)
cpu = ticks / tck * 1e6 / max(r["requests"], 1)
line = "[bench] {:7} round {} {:10} {:9.0f} req/s  p50 {:6d} us  p99 {:6d} us  non-2xx {:7d}  cpu {:6.1f} us/req"
print(line.format(sys.argv[4], sys.argv[5], sys.argv[6], rps, r["p50_us"], r["p99_us"], r["non_2xx"], cpu), file=sys.stderr)' \
    "$result" "$((after - before))" "$CLK_TCK" "$scenario" "$round" "$target"
}

for scenario in $SCENARIOS; do
  case $scenario in
    valid) targets=(upstream nginx schemagate) ;;
    mixed) targets=(nginx schemagate) ;;
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
  "rounds": $ROUNDS,
  "duration_s": $DURATION,
  "warmup_s": $WARMUP,
  "connections": $CONNS,
  "wrk_threads": $WRK_THREADS,
  "gateway_threads": $GW_THREADS,
  "rust_log": "$GW_LOG",
  "nginx": "$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')",
  "wrk": "$(wrk -v 2>&1 | head -1 | awk '{print $2}')",
  "request": "POST /v1/conversations, ${#BENCH_BODY_VALID}-byte JSON body, Authorization: Bearer, X-Tenant",
  "labels": {
    "upstream": "upstream (nginx return 200, direct)",
    "nginx": "nginx proxy_pass (keepalive pool)",
    "schemagate": "schemagate (auth + tenant + limit + validation)"
  },
  "scenarios": {
    "valid": "every request valid (200 from the upstream)",
    "mixed": "every second request has an invalid body (422 from schemagate; nginx forwards all)"
  },
  "rss": {
    "schemagate": {"after_load_kib": $GW_RSS_END, "idle": $GW_IDLE},
    "nginx": {"after_load_kib": $NGX_RSS_END, "idle": $NGX_IDLE}
  }
}
EOF
python3 bench/report.py "$RAW" "$META" "$OUT/results.json" | tee "$OUT/results.md"
cp "$OUT/results.json" "$OUT/results-$STAMP.json"
