# Shared by bench/run.sh and bench/callgrind.sh: the request, tool installation, free
# ports, nginx configs, process bookkeeping and /proc readings. Sourced, not run.

# The request (bench/wrk.lua and the Python helpers read these): Flextell's
# POST /v1/conversations with an 83-byte body; the invalid body has channel_id 0 (minimum 1).
export BENCH_BODY_VALID='{"channel_id":7,"address":"+18095550100","first_name":"Ada","last_name":"Lovelace"}'
export BENCH_BODY_INVALID='{"channel_id":0,"address":"+18095550100","first_name":"Ada","last_name":"Lovelace"}'
export BENCH_TOKEN='bench-token-0123456789abcdef'
export BENCH_TENANT='42'
# What the upstream answers to everything.
UPSTREAM_BODY='{"success":"true","data":{"id":123,"display_name":"Ada Lovelace","address":"+18095550100","unread_count":"0"}}'

# The Python helpers import each other from bench/, which is the gateway's watched config
# directory: no __pycache__ written there.
export PYTHONDONTWRITEBYTECODE=1

log() { printf '[bench] %s\n' "$*" >&2; }

# Installs the Debian packages whose commands are missing: `install_tools cmd:package ...`.
install_tools() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] \
      || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return
  apt_install "${missing[@]}"
}

# Installs Debian packages by name (apt-get update only when the first try fails).
apt_install() {
  log "installing $* (apt)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "$@" >/dev/null; }
}

# --- the validating peers (bench/peers/) ------------------------------------------------
# Names as bench/run.sh and report.py know them.
PEERS="nginx-lua fastify express-openapi prism"
PEER_DIR=target/bench/peers

# install_peers PEER...: installs what the named peers need when missing: nginx-lua,
# lua-nginx-module and lua-cjson (Debian); the Node peers, node and npm (Debian's, when the
# machine has none) and the npm packages pinned by bench/peers/package-lock.json, under
# target/bench/peers (`npm ci`, again only when the lock file changed).
install_peers() {
  local debs=() pkg
  case " $* " in
    *" nginx-lua "*)
      for pkg in libnginx-mod-http-lua lua-cjson; do
        dpkg -s "$pkg" >/dev/null 2>&1 || debs+=("$pkg")
      done
      [ ${#debs[@]} -eq 0 ] || apt_install "${debs[@]}"
      ;;
  esac
  case " $* " in *" fastify "* | *" express-openapi "* | *" prism "*) ;; *) return 0 ;; esac
  install_tools node:nodejs npm:npm
  # fastify 5 and undici 7 (reply-from) need Node 20 or later; Debian 12 ships 18.
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || { log "the Node peers need Node >= 20 (found $(node -v))"; return 1; }
  mkdir -p "$PEER_DIR"
  if ! cmp -s bench/peers/package-lock.json "$PEER_DIR/package-lock.json" \
    || [ ! -d "$PEER_DIR/node_modules" ]; then
    log "installing the Node peers' packages (npm ci) under $PEER_DIR"
    cp bench/peers/package.json bench/peers/package-lock.json "$PEER_DIR/"
    npm ci --prefix "$PEER_DIR" --no-audit --no-fund --silent >&2
  fi
}

# start_peer NAME PORT UPSTREAM_PORT DIR [WRAPPER...]: one validating peer on 127.0.0.1:PORT
# in front of the upstream, one worker (nginx worker_processes 1; a Node process is one event
# loop), its output under DIR; sets LAST_PID to the process (nginx: its master).
start_peer() {
  local name=$1 port=$2 up=$3 dir=$4 upstream
  shift 4
  upstream=http://127.0.0.1:$up
  mkdir -p "$dir"
  case $name in
    nginx-lua)
      nginx_conf lua "$dir" "$port" "$up" "${NGINX_MASTER:-on}"
      start_nginx "$dir" "$@"
      return
      ;;
    fastify)
      NODE_PATH=$ROOT/$PEER_DIR/node_modules "$@" node bench/peers/node/fastify.js "$port" "$upstream" \
        schemas/flextell/create_conversation.body.json >"$dir/stdout.log" 2>&1 &
      ;;
    express-openapi)
      NODE_PATH=$ROOT/$PEER_DIR/node_modules "$@" node bench/peers/node/express_openapi.js "$port" \
        "$upstream" config/openapi/flextell.yaml >"$dir/stdout.log" 2>&1 &
      ;;
    prism)
      # Proxy mode with --errors: a request that breaks the document is answered by Prism,
      # not forwarded. Logging at warn (the others log nothing per request), CORS off.
      "$@" node "$PEER_DIR/node_modules/@stoplight/prism-cli/dist/index.js" proxy \
        config/openapi/flextell.yaml "$upstream" --host 127.0.0.1 --port "$port" --errors \
        --cors=false -v warn >"$dir/stdout.log" 2>&1 &
      ;;
    *) log "unknown peer $name"; return 1 ;;
  esac
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}

nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

# Processes this script started; only these are stopped, by PID.
STARTED=()
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
}

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

# Waits up to `$2` seconds (default 10) for something to listen on 127.0.0.1:$1.
wait_port() {
  local tries=$(( ${2:-10} * 10 ))
  for _ in $(seq 1 "$tries"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "nothing listens on port $1"
  return 1
}

# nginx_conf KIND DIR PORT [UPSTREAM_PORT] [MASTER]: nginx.conf for the upstream (`return
# 200` with a fixed JSON body), the proxy (`proxy_pass` with an upstream keepalive pool) or
# `lua`, the same proxy with bench/peers/lua/peer.lua checking each request first (the
# nginx + Lua validating peer; install_lua_peer installs its modules). All: one worker, no
# access log, keep-alive connections never retired by count. MASTER `off` runs one process
# only (for callgrind).
nginx_conf() {
  local kind=$1 dir=$2 port=$3 upstream_port=${4:-} master=${5:-on}
  local access=""
  mkdir -p "$dir/tmp"
  {
    if [ "$kind" = lua ]; then
      # Debian's lua-nginx-module is a dynamic module; the prefix (-p) is not /etc/nginx.
      echo "load_module /usr/lib/nginx/modules/ndk_http_module.so;"
      echo "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
      access='access_by_lua_block { require("peer").check() }'
    fi
    cat <<EOF
worker_processes 1;
daemon off;
master_process $master;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
# Enough for bench/idle_conns.py's 10 000 idle connections (each may hold an upstream one).
worker_rlimit_nofile 30000;
events { worker_connections 25000; }
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
      if [ "$kind" = lua ]; then
        cat <<EOF
  lua_package_path "$ROOT/bench/peers/lua/?.lua;;";
  init_by_lua_block { require("peer").init("$ROOT/schemas/flextell/create_conversation.body.json") }
EOF
      fi
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
      $access
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

# start_nginx DIR [WRAPPER...]: nginx in the foreground (`daemon off`), so `$!` is its
# master (or its only process); sets LAST_PID.
start_nginx() {
  local dir=$1
  shift
  "$@" "$(nginx_bin)" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}

# The PID and its children's (nginx: master and its worker).
family() {
  echo "$1" $(pgrep -P "$1" || true)
}

# utime + stime, in clock ticks, summed over the given PIDs (fields 14 and 15 of
# /proc/PID/stat; the command name may hold spaces, so fields are counted after its `)`).
cpu_ticks() {
  local total=0 pid rest f
  for pid in "$@"; do
    rest=$(sed 's/^.*) //' "/proc/$pid/stat")
    read -r -a f <<<"$rest"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

# "BUSY TOTAL": the whole machine's CPU time in clock ticks from /proc/stat's first line,
# busy (user, nice, system, irq, softirq, steal) and in all (busy + idle + iowait).
machine_ticks() {
  awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6; exit }' /proc/stat
}

vm_rss_kib() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
  done
  echo "$total"
}

# HTTP status of one request to 127.0.0.1:PORT with BODY; with a third argument `no-bearer`,
# the request has no Authorization header.
status_of() {
  local auth=(-H "Authorization: Bearer $BENCH_TOKEN")
  [ "${3:-}" != no-bearer ] || auth=()
  curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$1/v1/conversations" \
    -H 'Content-Type: application/json' "${auth[@]}" \
    -H "X-Tenant: $BENCH_TENANT" --data-binary "$2"
}

# Stops one process this script started (by PID) and forgets it.
stop_pid() {
  local pid=$1 kept=() p
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${STARTED[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  STARTED=("${kept[@]}")
}
