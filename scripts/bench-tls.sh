#!/usr/bin/env bash
# Question: what does TLS cost on the client port, for HyperCache and for redis-server?
#
# Makes a throwaway CA and server certificate (openssl, in a temporary directory), starts
# redis-server and hypercache side by side, each with a plain-text port and a TLS port
# (tls-auth-clients no), and, alternating between them ROUNDS times, runs redis-benchmark SET and
# GET on each port with pipelines of 1 and 16. Prints the medians, HyperCache's TLS/plain ratio,
# and HyperCache TLS against redis-server TLS.
#
# Usage: scripts/bench-tls.sh
# Environment: REQUESTS=500000 (per run), ROUNDS=3, CLIENTS=50 (redis-benchmark -c),
#   HC_BIN=path (default: cargo build --release), REDIS_SERVER=redis-server (built with TLS, as
#   Debian's is).
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

REQUESTS=${REQUESTS:-500000}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
require_positive_int REQUESTS ROUNDS CLIENTS
require_tools "$REDIS_SERVER" redis-cli redis-benchmark python3 setsid openssl
build_hc_bin
bench_init bench-tls

# A CA and a certificate for 127.0.0.1, valid for a day.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/ca.key" -out "$TMP/ca.crt" -days 1 \
    -subj "/CN=bench-ca" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$TMP/server.key" -out "$TMP/server.csr" \
    -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$TMP/ext"
openssl x509 -req -in "$TMP/server.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" -CAcreateserial \
    -out "$TMP/server.crt" -days 1 -extfile "$TMP/ext" 2>/dev/null
TLS_ARGS=(--tls-cert-file "$TMP/server.crt" --tls-key-file "$TMP/server.key"
    --tls-ca-cert-file "$TMP/ca.crt" --tls-auth-clients no)

read -r REDIS_PORT HC_PORT < <(free_ports)
read -r REDIS_TLS HC_TLS < <(free_ports)
"${SERVER_PIN[@]}" "$REDIS_SERVER" --port "$REDIS_PORT" --tls-port "$REDIS_TLS" --bind 127.0.0.1 \
    --save '' --appendonly no "${TLS_ARGS[@]}" >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
"${SERVER_PIN[@]}" "$HC_BIN" --bind 127.0.0.1 --port "$HC_PORT" --tls-port "$HC_TLS" \
    --http-port 0 --log-level warn "${TLS_ARGS[@]}" >"$TMP/hc.log" 2>&1 &
HC_PID=$!
wait_ready redis "$REDIS_PID" "$REDIS_PORT"
wait_ready hc "$HC_PID" "$HC_PORT"
announce_servers
for port in "$REDIS_TLS" "$HC_TLS"; do
    [[ "$(redis-cli -p "$port" --tls --cacert "$TMP/ca.crt" ping)" == PONG ]] ||
        die "no PONG over TLS on port $port"
done

bench() { # PORT TLS(0|1) TEST PIPELINE -> requests per second
    local tls=()
    [[ $2 == 1 ]] && tls=(--tls --cacert "$TMP/ca.crt")
    redis-benchmark -h 127.0.0.1 -p "$1" "${tls[@]}" -n "$REQUESTS" -c "$CLIENTS" -P "$4" \
        -r 100000 -d 64 -t "$3" --csv | tail -1 | cut -d, -f2 | tr -d '"'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A V
WORKLOADS=(set:1 get:1 set:16 get:16)
for ((round = 1; round <= ROUNDS; round++)); do
    for w in "${WORKLOADS[@]}"; do
        t=${w%%:*} p=${w##*:}
        for side in redis-plain redis-tls hc-plain hc-tls; do
            case $side in
                redis-plain) v=$(bench "$REDIS_PORT" 0 "$t" "$p") ;;
                redis-tls) v=$(bench "$REDIS_TLS" 1 "$t" "$p") ;;
                hc-plain) v=$(bench "$HC_PORT" 0 "$t" "$p") ;;
                hc-tls) v=$(bench "$HC_TLS" 1 "$t" "$p") ;;
            esac
            V[$w.$side]+="$v "
            echo "round $round $t -P $p $side $v" >&2
        done
    done
done
require_alive redis "$REDIS_PID" "the runs"
require_alive hc "$HC_PID" "the runs"

print_env_header
echo "- $REQUESTS requests per run, $CLIENTS connections, 64-byte values, 100,000 keys, median of $ROUNDS"
echo
echo "| workload | redis plain | redis TLS | HyperCache plain | HyperCache TLS | HC TLS / HC plain | HC TLS / redis TLS |"
echo "|---|---|---|---|---|---|---|"
for w in "${WORKLOADS[@]}"; do
    declare -A m=()
    for side in redis-plain redis-tls hc-plain hc-tls; do
        m[$side]=$(tr ' ' '\n' <<<"${V[$w.$side]}" | grep . | median)
    done
    echo "| ${w%%:*} -P ${w##*:} | ${m[redis-plain]} | ${m[redis-tls]} | ${m[hc-plain]} | ${m[hc-tls]} | $(python3 -c "print(f'{${m[hc-tls]}/${m[hc-plain]}:.2f}')") | $(python3 -c "print(f'{${m[hc-tls]}/${m[redis-tls]}:.2f}')") |"
done
