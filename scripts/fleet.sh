#!/usr/bin/env bash
# A local a3kv fleet on 127.0.0.1 with one command: a Redis server (the shared chunk tier), N
# `a3kv serve` replicas using it, and an HAProxy gateway in front of them
# (scripts/gateway-config.sh: requests with the routing header are hashed to a replica,
# others go to the least-loaded one; health checks on /ready).
#
#   scripts/fleet.sh [up]     # start, print the URLs, run until Ctrl-C or SIGTERM, then drain
#   scripts/fleet.sh down     # drain and stop the fleet that `up` runs (from another shell)
#
# Start-up: Redis on a free port (no persistence: --save '' --appendonly no; data dir in
# $FLEET_DIR/redis; maxmemory with an eviction policy), the replicas on free ports (each with
# --set engine.store.remote.url=redis://127.0.0.1:PORT), each waited for until GET /ready is
# 200, then HAProxy on $GATEWAY_PORT, waited for until its health checks see every replica up.
# The URLs, pids and log paths are printed and written to $FLEET_DIR/fleet.env.
#
# Stop (Ctrl-C, SIGTERM, or `down`): HAProxy gets SIGUSR1 (soft stop: it closes its listener
# and relays the streams in flight to their end) and every replica SIGTERM (it stops accepting
# and lets running requests finish for its shutdown.drain_secs); once they have exited, Redis
# is stopped. A process still running after STOP_TIMEOUT is killed; a second Ctrl-C kills at
# once. Children run in their own sessions, so a terminal's Ctrl-C reaches only this script,
# which stops them in that order.
#
# Knobs (environment): REPLICAS (2), GATEWAY_PORT (8080), CONFIG (a server config file for
# every replica; default: built-in defaults), REPLICA_ARGS (extra `a3kv serve` arguments,
# split on spaces, e.g. "--set engine.store.memory_budget_bytes=1073741824"),
# REPLICA_BASE_PORT (replica i listens on BASE+i-1; default: free ports), FLEET_REMOTE (1: run
# Redis and give it to the replicas; 0: no Redis, replicas without a shared tier),
# REDIS_MAXMEMORY (1gb), REDIS_POLICY (allkeys-lru), ROUTE_HEADER (x-a3kv-route), CHECK_INTER
# (1s), STREAM_TIMEOUT (10m), HARD_STOP_AFTER (60s; see scripts/gateway-config.sh),
# STOP_TIMEOUT (90 s per stage), FLEET_DIR (target/fleet: logs, configs, fleet.env),
# A3KV (target/release/a3kv, built if missing), HAPROXY (haproxy), REDIS_SERVER (redis-server).
# Every replica reads the same CONFIG: give it no disk tier (engine.store.disk.dir), which
# the replicas would share.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CMD="${1:-up}"
REPLICAS="${REPLICAS:-2}"
GATEWAY_PORT="${GATEWAY_PORT:-8080}"
CONFIG="${CONFIG:-}"
REPLICA_ARGS="${REPLICA_ARGS:-}"
REPLICA_BASE_PORT="${REPLICA_BASE_PORT:-}"
FLEET_REMOTE="${FLEET_REMOTE:-1}"
REDIS_MAXMEMORY="${REDIS_MAXMEMORY:-1gb}"
REDIS_POLICY="${REDIS_POLICY:-allkeys-lru}"
STOP_TIMEOUT="${STOP_TIMEOUT:-90}"
FLEET_DIR="${FLEET_DIR:-target/fleet}"
A3KV="${A3KV:-target/release/a3kv}"
HAPROXY="${HAPROXY:-haproxy}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
export ROUTE_HEADER="${ROUTE_HEADER:-x-a3kv-route}"
export CHECK_INTER="${CHECK_INTER:-1s}" STREAM_TIMEOUT="${STREAM_TIMEOUT:-10m}"
export HARD_STOP_AFTER="${HARD_STOP_AFTER:-60s}"

say() { echo "fleet: $*"; }
die() { echo "fleet: $*" >&2; exit 2; }

# True while process $1 exists and is not a zombie.
alive() {
  [[ -r "/proc/$1/stat" ]] || return 1
  local state
  state="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
  [[ -n "$state" && "$state" != Z ]]
}

if [[ "$CMD" == down ]]; then
  [[ -f "$FLEET_DIR/fleet.pid" ]] || die "no fleet running from $FLEET_DIR (no fleet.pid)"
  pid="$(cat "$FLEET_DIR/fleet.pid")"
  alive "$pid" || { rm -f "$FLEET_DIR/fleet.pid"; die "fleet $pid is not running"; }
  say "stopping fleet $pid (it drains, then exits)"
  kill -TERM "$pid"
  for _ in $(seq 1 $((STOP_TIMEOUT * 3 * 5))); do
    alive "$pid" || { say "stopped"; exit 0; }
    sleep 0.2
  done
  die "fleet $pid still running after $((STOP_TIMEOUT * 3)) s"
fi
[[ "$CMD" == up ]] || die "unknown command $CMD (up | down)"

# ---- checks before starting anything
[[ "$REPLICAS" =~ ^[0-9]+$ ]] && (( REPLICAS >= 1 )) || die "REPLICAS must be an integer >= 1"
[[ "$GATEWAY_PORT" =~ ^[0-9]+$ ]] || die "GATEWAY_PORT must be a port number"
[[ "$FLEET_REMOTE" == 0 || "$FLEET_REMOTE" == 1 ]] || die "FLEET_REMOTE must be 0 or 1"
command -v python3 >/dev/null || die "python3 is needed (readiness checks)"
# Debian installs haproxy in /usr/sbin, which is not on a normal user's PATH.
if ! command -v "$HAPROXY" >/dev/null && [[ "$HAPROXY" == haproxy && -x /usr/sbin/haproxy ]]; then
  HAPROXY=/usr/sbin/haproxy
fi
command -v "$HAPROXY" >/dev/null || die "haproxy not found (Debian: apt-get install haproxy; scripts/setup.sh installs it)"
if [[ "$FLEET_REMOTE" == 1 ]]; then
  command -v "$REDIS_SERVER" >/dev/null \
    || die "redis-server not found (Debian: apt-get install redis-server), or run with FLEET_REMOTE=0"
fi
CFG_ARGS=()
if [[ -n "$CONFIG" ]]; then
  [[ -f "$CONFIG" ]] || die "config $CONFIG not found"
  CFG_ARGS=(-c "$CONFIG")
fi
read -r -a EXTRA <<<"$REPLICA_ARGS"
if [[ ! -x "$A3KV" ]]; then
  cargo build --release -p a3kv-cli
fi
mkdir -p "$FLEET_DIR"
FLEET_DIR="$(cd "$FLEET_DIR" && pwd)"
# The replicas' configuration, checked once (with the remote tier's key) before anything starts.
PROBE=()
[[ "$FLEET_REMOTE" == 1 ]] && PROBE=(--set engine.store.remote.url=redis://127.0.0.1:6379)
if ! "$A3KV" serve "${CFG_ARGS[@]}" "${EXTRA[@]}" "${PROBE[@]}" --print-config \
    >/dev/null 2>"$FLEET_DIR/config.err"; then
  cat "$FLEET_DIR/config.err" >&2
  mv "$FLEET_DIR/config.err" "$FLEET_DIR/config.rejected"
  if [[ "$FLEET_REMOTE" == 1 ]] && grep -q "engine.store.remote" "$FLEET_DIR/config.rejected"; then
    die "$A3KV does not accept engine.store.remote.url (no shared Redis tier in this build); FLEET_REMOTE=0 runs the replicas without it"
  fi
  die "the replicas' configuration is rejected (CONFIG, REPLICA_ARGS)"
fi
rm -f "$FLEET_DIR/config.err"

# HTTP and ports from Python's standard library.
py() { python3 - "$@"; }
port_free() {
  py "$1" <<'EOF'
import socket, sys
s = socket.socket()
# As HAProxy binds: connections left in TIME_WAIT do not make the port busy.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen()
except OSError:
    sys.exit(1)
EOF
}
free_port() {
  py <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}
port_free "$GATEWAY_PORT" || die "gateway port 127.0.0.1:$GATEWAY_PORT is in use (set GATEWAY_PORT)"
if [[ -f "$FLEET_DIR/fleet.pid" ]] && alive "$(cat "$FLEET_DIR/fleet.pid")"; then
  die "a fleet already runs from $FLEET_DIR (pid $(cat "$FLEET_DIR/fleet.pid")); scripts/fleet.sh down"
fi
rm -rf "$FLEET_DIR/redis" "$FLEET_DIR"/replica-*.log "$FLEET_DIR"/gateway.log \
  "$FLEET_DIR"/redis.log "$FLEET_DIR"/haproxy.cfg "$FLEET_DIR"/fleet.env
echo $$ >"$FLEET_DIR/fleet.pid"

# ---- stopping, whatever way this script ends
REDIS_PID=""
GATEWAY_PID=""
REPLICA_PIDS=()
FORCE=0
# Waits (bounded by STOP_TIMEOUT, or at once after a second Ctrl-C) for pids to exit, then
# kills what is left.
reap() {
  local what="$1" pid left
  shift
  for _ in $(seq 1 $((STOP_TIMEOUT * 5))); do
    left=0
    for pid in "$@"; do alive "$pid" && left=1; done
    (( left == 0 || FORCE == 1 )) && break
    sleep 0.2
  done
  for pid in "$@"; do
    if alive "$pid"; then
      say "$what $pid still running; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
}
stop() {
  trap 'FORCE=1' INT TERM
  say "stopping: gateway soft stop (SIGUSR1), replicas drain (SIGTERM); Ctrl-C again to kill"
  [[ -n "$GATEWAY_PID" ]] && kill -USR1 "$GATEWAY_PID" 2>/dev/null || true
  local pid
  for pid in "${REPLICA_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  (( ${#REPLICA_PIDS[@]} > 0 )) && reap replica "${REPLICA_PIDS[@]}"
  [[ -n "$GATEWAY_PID" ]] && reap gateway "$GATEWAY_PID"
  # Last, so replicas can still write to the shared tier while they drain.
  if [[ -n "$REDIS_PID" ]]; then
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    reap redis "$REDIS_PID"
  fi
  rm -f "$FLEET_DIR/fleet.pid"
  say "stopped (logs in $FLEET_DIR)"
}
trap stop EXIT
# A requested stop that drains is a success: exit 0 (errors at start exit 2 through die).
trap 'exit 0' INT TERM

# ---- Redis
REMOTE_ARGS=()
REDIS_URL=""
if [[ "$FLEET_REMOTE" == 1 ]]; then
  mkdir -p "$FLEET_DIR/redis"
  for attempt in 1 2 3; do
    REDIS_PORT="$(free_port)"
    setsid "$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
      --dir "$FLEET_DIR/redis" --maxmemory "$REDIS_MAXMEMORY" --maxmemory-policy "$REDIS_POLICY" \
      --daemonize no --logfile '' >"$FLEET_DIR/redis.log" 2>&1 &
    REDIS_PID=$!
    if py "$REDIS_PORT" <<'EOF'
import socket, sys, time
for _ in range(100):
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
    then
      break
    fi
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
    (( attempt == 3 )) && { cat "$FLEET_DIR/redis.log" >&2; die "redis-server did not start"; }
  done
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  REMOTE_ARGS=(--set "engine.store.remote.url=$REDIS_URL")
  say "redis $REDIS_URL (pid $REDIS_PID, maxmemory $REDIS_MAXMEMORY, $REDIS_POLICY)"
fi

# ---- replicas (started together; the model loads in parallel)
for i in $(seq 1 "$REPLICAS"); do
  port=0
  [[ -n "$REPLICA_BASE_PORT" ]] && port=$((REPLICA_BASE_PORT + i - 1))
  setsid "$A3KV" serve "${CFG_ARGS[@]}" --listen "127.0.0.1:$port" --log-format json \
    "${REMOTE_ARGS[@]}" "${EXTRA[@]}" >"$FLEET_DIR/replica-$i.log" 2>&1 &
  REPLICA_PIDS+=($!)
done
REPLICA_ADDRS=()
for i in $(seq 1 "$REPLICAS"); do
  log="$FLEET_DIR/replica-$i.log"
  pid="${REPLICA_PIDS[$((i - 1))]}"
  addr=""
  for _ in $(seq 1 600); do
    addr="$(grep -o '"addr":"127\.0\.0\.1:[0-9]*"' "$log" | head -n1 | cut -d'"' -f4 || true)"
    [[ -n "$addr" ]] && break
    alive "$pid" || { tail -n 20 "$log" >&2; die "replica $i exited at start (log: $log)"; }
    sleep 0.2
  done
  [[ -n "$addr" ]] || die "replica $i did not log its address in 120 s (log: $log)"
  REPLICA_ADDRS+=("$addr")
done
for i in $(seq 1 "$REPLICAS"); do
  addr="${REPLICA_ADDRS[$((i - 1))]}"
  py "http://$addr/ready" <<'EOF' || die "replica $i (http://$addr) not ready in 120 s"
import sys, time, urllib.request
for _ in range(240):
    try:
        if urllib.request.urlopen(sys.argv[1], timeout=5).status == 200:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.5)
sys.exit(1)
EOF
  say "replica $i http://$addr (pid ${REPLICA_PIDS[$((i - 1))]})"
done

# ---- gateway
scripts/gateway-config.sh "127.0.0.1:$GATEWAY_PORT" "${REPLICA_ADDRS[@]}" >"$FLEET_DIR/haproxy.cfg"
"$HAPROXY" -c -q -f "$FLEET_DIR/haproxy.cfg" || die "haproxy rejects $FLEET_DIR/haproxy.cfg"
setsid "$HAPROXY" -db -f "$FLEET_DIR/haproxy.cfg" >"$FLEET_DIR/gateway.log" 2>&1 &
GATEWAY_PID=$!
GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT"
# Ready when the health checks have every replica up in the routed backend.
py "$GATEWAY_URL/gateway/stats;csv" "$REPLICAS" <<'EOF' || { tail -n 20 "$FLEET_DIR/gateway.log" >&2; die "gateway not ready: replicas not all up in its health checks"; }
import csv, io, sys, time, urllib.request
for _ in range(120):
    try:
        text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
        rows = [r for r in csv.DictReader(io.StringIO(text.lstrip("# ")))
                if r["pxname"] == "replicas_routed" and r["svname"] not in ("FRONTEND", "BACKEND")]
        if len(rows) == int(sys.argv[2]) and all(r["status"] == "UP" for r in rows):
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.25)
sys.exit(1)
EOF
say "gateway $GATEWAY_URL (pid $GATEWAY_PID; routing header $ROUTE_HEADER; stats $GATEWAY_URL/gateway/stats)"

replica_urls=""
for a in "${REPLICA_ADDRS[@]}"; do replica_urls+="http://$a "; done
cat >"$FLEET_DIR/fleet.env" <<EOF
FLEET_PID=$$
GATEWAY_URL=$GATEWAY_URL
GATEWAY_PID=$GATEWAY_PID
REPLICA_URLS="${replica_urls% }"
REPLICA_PIDS="${REPLICA_PIDS[*]}"
REDIS_URL=$REDIS_URL
REDIS_PID=$REDIS_PID
ROUTE_HEADER=$ROUTE_HEADER
EOF
say "ready: $REPLICAS replicas behind $GATEWAY_URL; logs and fleet.env in $FLEET_DIR"
say "try: $A3KV loadgen --target $GATEWAY_URL --route-header $ROUTE_HEADER --num-requests 20"
say "Ctrl-C (or scripts/fleet.sh down) drains and stops everything"

# ---- run until told to stop; report replicas that die (the gateway routes around them)
declare -A GONE=()
while :; do
  sleep 1 &
  wait $! || true
  alive "$GATEWAY_PID" || { tail -n 20 "$FLEET_DIR/gateway.log" >&2; die "the gateway exited"; }
  if [[ -n "$REDIS_PID" ]] && ! alive "$REDIS_PID"; then
    say "redis exited (replicas go on without the shared tier)"
    REDIS_PID=""
  fi
  for i in $(seq 1 "$REPLICAS"); do
    pid="${REPLICA_PIDS[$((i - 1))]}"
    if [[ -z "${GONE[$i]:-}" ]] && ! alive "$pid"; then
      GONE[$i]=1
      say "replica $i (pid $pid) exited; the gateway's health checks take it out"
    fi
  done
done
