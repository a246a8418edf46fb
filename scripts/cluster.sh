#!/usr/bin/env bash
# Start, stop or inspect N local HyperCache nodes on loopback, for trying a cluster out.
#
#   scripts/cluster.sh start [N]    start N nodes (default 3): node i listens on 127.0.0.1:(7000+i)
#                                   for clients and 127.0.0.1:(17000+i) for peers
#   scripts/cluster.sh status [N]   HC.MEMBERS as seen from node 1
#   scripts/cluster.sh stop [N]     stop the nodes started here (SIGTERM by pid, then SIGKILL)
#
# Environment: HC_BIN (default target/release/hypercache, built if missing), HC_CLUSTER_DIR
# (pid and log files, default target/cluster), BASE_PORT (default 7000), and any HYPERCACHE_*
# setting, passed to every node (e.g. HYPERCACHE_REPLICATION=2).
set -euo pipefail

cmd="${1:-}"
n="${2:-3}"
base="${BASE_PORT:-7000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${HC_CLUSTER_DIR:-$root/target/cluster}"
bin="${HC_BIN:-$root/target/release/hypercache}"

seeds() {
  local s=""
  for i in $(seq 1 "$n"); do s+="${s:+,}127.0.0.1:$((base + 10000 + i))"; done
  echo "$s"
}

case "$cmd" in
  start)
    if [[ ! -x "$bin" ]]; then
      (cd "$root" && cargo build --release --bin hypercache)
    fi
    mkdir -p "$dir"
    for i in $(seq 1 "$n"); do
      pidf="$dir/node$i.pid"
      if [[ -f "$pidf" ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
        echo "node $i already running (pid $(cat "$pidf"))"
        continue
      fi
      "$bin" --bind 127.0.0.1 --port $((base + i)) --seeds "$(seeds)" \
        >"$dir/node$i.log" 2>&1 &
      echo $! >"$pidf"
      echo "node $i: redis-cli -p $((base + i))   (pid $!, log $dir/node$i.log)"
    done
    # Wait (bounded) until every node answers PING.
    for i in $(seq 1 "$n"); do
      for _ in $(seq 1 50); do
        if (exec 3<>/dev/tcp/127.0.0.1/$((base + i))) 2>/dev/null; then break; fi
        sleep 0.1
      done
    done
    ;;
  status)
    if command -v redis-cli >/dev/null; then
      redis-cli -p $((base + 1)) HC.MEMBERS
    else
      echo "redis-cli not found; pids:"; cat "$dir"/node*.pid
    fi
    ;;
  stop)
    for i in $(seq 1 "$n"); do
      pidf="$dir/node$i.pid"
      [[ -f "$pidf" ]] || continue
      pid="$(cat "$pidf")"
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
      fi
      rm -f "$pidf"
      echo "node $i stopped"
    done
    ;;
  *)
    echo "usage: $0 start|stop|status [N]" >&2
    exit 2
    ;;
esac
