#!/usr/bin/env bash
# Question: does a change make a single node slower? Two hypercache builds, A and B, each as one
# node on this machine, driven by redis-benchmark, alternating A and B ROUNDS times per workload
# (SET and GET, -P 1 and -P 16). Prints the median throughput of each and the ratio B / A.
#
# Usage: HC_A=path/to/old/hypercache HC_B=path/to/new/hypercache scripts/bench-node-ab.sh
# Environment: REQUESTS=200000 ROUNDS=3 CLIENTS=50 KEYSPACE=100000 SIZE=16,
#   WORKLOADS="set:1 set:16 get:1 get:16" (test:pipeline pairs).
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

REQUESTS=${REQUESTS:-200000}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
SIZE=${SIZE:-16}
require_positive_int REQUESTS ROUNDS CLIENTS KEYSPACE SIZE
[[ -x "${HC_A:-}" && -x "${HC_B:-}" ]] || die "set HC_A and HC_B to two hypercache binaries"
require_tools redis-cli redis-benchmark python3 setsid
bench_init bench-node-ab

read -r PORT_A PORT_B < <(free_ports)
"${SERVER_PIN[@]}" "$HC_A" --bind 127.0.0.1 --port "$PORT_A" --http-port 0 --log-level warn >"$TMP/a.log" 2>&1 &
REDIS_PID=$! # bench-lib stops REDIS_PID and HC_PID on exit: A and B here.
"${SERVER_PIN[@]}" "$HC_B" --bind 127.0.0.1 --port "$PORT_B" --http-port 0 --log-level warn >"$TMP/b.log" 2>&1 &
HC_PID=$!
wait_ready a "$REDIS_PID" "$PORT_A"
wait_ready b "$HC_PID" "$PORT_B"

bench() { # PORT TEST PIPELINE -> requests per second
    redis-benchmark -h 127.0.0.1 -p "$1" -n "$REQUESTS" -c "$CLIENTS" -P "$3" -r "$KEYSPACE" \
        -d "$SIZE" -t "$2" --csv | tail -1 | cut -d, -f2 | tr -d '"'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A V
read -r -a WORKLOADS <<<"${WORKLOADS:-set:1 set:16 get:1 get:16}"
for ((round = 1; round <= ROUNDS; round++)); do
    for w in "${WORKLOADS[@]}"; do
        for side in A B; do
            port=$PORT_A
            [[ $side == B ]] && port=$PORT_B
            v=$(bench "$port" "${w%%:*}" "${w##*:}")
            V[$w.$side]+="$v "
            echo "round $round ${w%%:*} -P ${w##*:} $side $v" >&2
        done
    done
done

print_machine_line
echo "- A: $HC_A; B: $HC_B"
echo "- $REQUESTS requests per run, $CLIENTS connections, $SIZE-byte values, $KEYSPACE keys, median of $ROUNDS"
echo
echo "| workload | A | B | B/A |"
echo "|---|--:|--:|--:|"
for w in "${WORKLOADS[@]}"; do
    a=$(tr ' ' '\n' <<<"${V[$w.A]}" | grep . | median)
    b=$(tr ' ' '\n' <<<"${V[$w.B]}" | grep . | median)
    echo "| ${w%%:*} -P ${w##*:} | $a | $b | $(python3 -c "print(f'{$b/$a:.2f}')") |"
done
