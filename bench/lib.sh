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
  log "installing ${missing[*]} (apt)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
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
# 200` with a fixed JSON body) or the proxy (`proxy_pass` with an upstream keepalive pool).
# Both: one worker, no access log, keep-alive connections never retired by count. MASTER
# `off` runs one process only (for callgrind).
nginx_conf() {
  local kind=$1 dir=$2 port=$3 upstream_port=${4:-} master=${5:-on}
  mkdir -p "$dir/tmp"
  {
    cat <<EOF
worker_processes 1;
daemon off;
master_process $master;
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

vm_rss_kib() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
  done
  echo "$total"
}

# HTTP status of one request to 127.0.0.1:PORT with BODY.
status_of() {
  curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$1/v1/conversations" \
    -H 'Content-Type: application/json' -H "Authorization: Bearer $BENCH_TOKEN" \
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
