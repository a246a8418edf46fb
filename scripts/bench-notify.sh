#!/usr/bin/env bash
# Question: what do keyspace notifications and client-side caching cost writes on one node, when
# someone listens? One node, driven by redis-benchmark (SET), in three modes alternated ROUNDS
# times: off; `notify-keyspace-events KEA` with one subscriber to every notification channel
# (reading all it gets); `CLIENT TRACKING on BCAST` on one RESP3 connection (every changed key is
# an invalidation; it reads all it gets). Prints the median throughput of each and its ratio to off.
#
# Usage: scripts/bench-notify.sh   (HC_BIN: a hypercache binary; built in release if unset)
# Environment: REQUESTS=200000 ROUNDS=3 CLIENTS=50 KEYSPACE=100000 SIZE=16 PIPELINES="1 16".
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
REQUESTS=${REQUESTS:-200000}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
SIZE=${SIZE:-16}
require_positive_int REQUESTS ROUNDS CLIENTS KEYSPACE SIZE
require_tools redis-cli redis-benchmark python3 setsid
build_hc_bin
bench_init bench-notify
read -r PORT _ < <(free_ports)
"${SERVER_PIN[@]}" "$HC_BIN" --bind 127.0.0.1 --port "$PORT" --http-port 0 --log-level warn >"$TMP/hc.log" 2>&1 &
HC_PID=$!
wait_ready hypercache "$HC_PID" "$PORT"

# A listener: sends its setup commands on one connection, then reads everything it gets.
listen() { # PORT COMMAND... (each a quoted string of space-separated words)
    python3 - "$@" <<'PY' &
import socket, sys
port, cmds = int(sys.argv[1]), sys.argv[2:]
s = socket.create_connection(("127.0.0.1", port))
for c in cmds:
    words = c.split()
    s.sendall(("*%d\r\n" % len(words) + "".join("$%d\r\n%s\r\n" % (len(w), w) for w in words)).encode())
while s.recv(1 << 20):
    pass
PY
    LISTENER=$!
}
LISTENER=
stop_listener() {
    if [[ -n "$LISTENER" ]]; then
        kill "$LISTENER" 2>/dev/null || true
        wait "$LISTENER" 2>/dev/null || true
        LISTENER=
    fi
}
mode() { # off | notify | tracking
    stop_listener
    redis-cli -p "$PORT" CONFIG SET notify-keyspace-events "" >/dev/null
    case $1 in
        notify)
            redis-cli -p "$PORT" CONFIG SET notify-keyspace-events KEA >/dev/null
            listen "$PORT" "PSUBSCRIBE __key*__:*"
            ;;
        tracking)
            listen "$PORT" "HELLO 3" "CLIENT TRACKING on BCAST"
            ;;
    esac
    sleep 0.3
}
bench() { # PIPELINE -> requests per second
    redis-benchmark -h 127.0.0.1 -p "$PORT" -n "$REQUESTS" -c "$CLIENTS" -P "$1" -r "$KEYSPACE" \
        -d "$SIZE" -t set --csv | tail -1 | cut -d, -f2 | tr -d '"'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A V
read -r -a PIPES <<<"${PIPELINES:-1 16}"
MODES=(off notify tracking)
for ((round = 1; round <= ROUNDS; round++)); do
    for p in "${PIPES[@]}"; do
        for m in "${MODES[@]}"; do
            mode "$m"
            v=$(bench "$p")
            V[$p.$m]+="$v "
            echo "round $round SET -P $p $m $v" >&2
        done
    done
done
stop_listener

print_machine_line
echo "- $HC_BIN; $REQUESTS SETs per run, $CLIENTS connections, $SIZE-byte values, $KEYSPACE keys, median of $ROUNDS"
echo
echo "| SET | off | notifications (KEA, 1 subscriber) | ratio | tracking (BCAST, 1 client) | ratio |"
echo "|---|--:|--:|--:|--:|--:|"
for p in "${PIPES[@]}"; do
    off=$(tr ' ' '\n' <<<"${V[$p.off]}" | grep . | median)
    n=$(tr ' ' '\n' <<<"${V[$p.notify]}" | grep . | median)
    t=$(tr ' ' '\n' <<<"${V[$p.tracking]}" | grep . | median)
    echo "| -P $p | $off | $n | $(python3 -c "print(f'{$n/$off:.2f}')") | $t | $(python3 -c "print(f'{$t/$off:.2f}')") |"
done
