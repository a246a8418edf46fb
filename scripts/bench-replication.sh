#!/usr/bin/env bash
# Redis replication's costs, HyperCache beside redis-server on this machine, in one run
# (docs/benchmarks.md, "Redis replication"):
#
#  1. what an attached replica costs the primary: pipelined SET/GET throughput of a node and of a
#     redis-server, each without and then with a redis-server replica attached (alternating
#     rounds; medians);
#  2. a snapshot: how long a node pauses to copy KEYS keys for a new replica (its log's
#     paused_ms), and how long a node takes to load a redis-server's KEYS keys (REPLICAOF until
#     the link is up) against a redis-server replica loading the same.
#
#   ROUNDS=3 KEYS=500000 scripts/bench-replication.sh
#   HC_BIN=/path/to/hypercache scripts/bench-replication.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
KEYS=${KEYS:-500000}
REQUESTS=${REQUESTS:-300000}
if [ -z "${HC_BIN:-}" ]; then
    cargo build --release --quiet --bin hypercache --manifest-path "$ROOT/Cargo.toml"
    HC_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/hypercache
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 1 200); do
        redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "port $1 never answered" >&2
    exit 1
}
start_hc() { # port logfile
    "$HC_BIN" --bind 127.0.0.1 --port "$1" --http-port 0 --log-level info >"$2" 2>&1 &
    PIDS+=($!)
    wait_port "$1"
}
start_redis() { # port [args...]
    local port=$1
    shift
    mkdir -p "$WORK/r$port"
    (cd "$WORK/r$port" && redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --repl-diskless-sync-delay 0 --repl-diskless-load swapdb --enable-debug-command yes "$@" \
        >/dev/null 2>&1 &
        echo $! >"$WORK/pid$port")
    PIDS+=("$(cat "$WORK/pid$port")")
    wait_port "$port"
}
stop_port() { redis-cli -p "$1" shutdown nosave >/dev/null 2>&1 || true; }
link_up() { redis-cli -p "$1" info replication | grep -q 'master_link_status:up'; }
wait_link() {
    for _ in $(seq 1 2400); do link_up "$1" && return 0; sleep 0.05; done
    echo "replica on $1 never linked" >&2
    exit 1
}
rps() { # port test
    redis-benchmark -p "$1" -t "$2" -P 16 -c 50 -n "$REQUESTS" -r 100000 -q 2>/dev/null |
        tr '\r' '\n' | grep -i "^$2:" | tail -1 | awk '{print $2}'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "== 1. throughput with and without an attached replica (SET/GET -P 16 -c 50, $ROUNDS rounds)"
: >"$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
    for server in hypercache redis; do
        p=$(free_port)
        if [ $server = hypercache ]; then start_hc "$p" "$WORK/hc$p.log"; else start_redis "$p"; fi
        for t in set get; do echo "$server alone $t $(rps "$p" $t)" >>"$WORK/results"; done
        rp=$(free_port)
        start_redis "$rp" --replicaof 127.0.0.1 "$p"
        wait_link "$rp"
        for t in set get; do echo "$server replica $t $(rps "$p" $t)" >>"$WORK/results"; done
        stop_port "$rp"
        stop_port "$p"
    done
done
for server in hypercache redis; do
    for t in set get; do
        a=$(grep "^$server alone $t " "$WORK/results" | awk '{print $4}' | median)
        b=$(grep "^$server replica $t " "$WORK/results" | awk '{print $4}' | median)
        printf '%-10s %-3s alone %10.0f  with a replica %10.0f  (%.2fx)\n' "$server" "$t" "$a" "$b" \
            "$(echo "$b / $a" | bc -l)"
    done
done

echo "== 2. snapshots of $KEYS keys"
p=$(free_port)
start_hc "$p" "$WORK/snap.log"
python3 - "$KEYS" <<'EOF' | redis-cli -p "$p" --pipe >/dev/null
import sys
n = int(sys.argv[1])
out = sys.stdout.buffer
for i in range(n):
    k, v = b"key:%d" % i, b"value-%012d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
EOF
rp=$(free_port)
start_redis "$rp" --replicaof 127.0.0.1 "$p"
wait_link "$rp"
grep -o 'paused_ms=[0-9]*\|rdb_bytes=[0-9]*' "$WORK/snap.log" | tr '\n' ' '
echo " (the node's pause while a redis-server replica attached)"
stop_port "$rp"
stop_port "$p"

src=$(free_port)
start_redis "$src"
redis-cli -p "$src" debug populate "$KEYS" key 20 >/dev/null
for who in hypercache redis; do
    d=$(free_port)
    if [ $who = hypercache ]; then start_hc "$d" "$WORK/load.log"; else start_redis "$d"; fi
    start=$(date +%s.%N)
    redis-cli -p "$d" replicaof 127.0.0.1 "$src" >/dev/null
    wait_link "$d"
    end=$(date +%s.%N)
    printf '%-10s loads %s keys from a redis-server primary in %.2f s\n' "$who" "$KEYS" \
        "$(echo "$end - $start" | bc -l)"
    stop_port "$d"
done
stop_port "$src"
