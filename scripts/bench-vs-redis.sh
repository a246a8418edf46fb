#!/usr/bin/env bash
# Question: how does the hypercache release binary compare with redis-server on this machine?
#
# Starts redis-server and hypercache side by side on free loopback ports, and for each workload runs
# redis-benchmark against redis, then hypercache, alternating, ROUNDS times; prints the median
# throughput, p50/p99 latency and server CPU per million requests as a markdown table.
#
# Usage: scripts/bench-vs-redis.sh
# Environment:
#   REQUESTS=200000   requests per run (redis-benchmark -n)
#   ROUNDS=3          runs per server per workload (the median is reported)
#   CLIENTS=50        connections (redis-benchmark -c)
#   KEYSPACE=100000   random keys (redis-benchmark -r)
#   HC_BIN=path       hypercache binary to use; when unset, `cargo build --release` builds one
#   REDIS_SERVER=redis-server   redis-server binary
#   OUT=path          also write the report to this file
#   SERVER_CPUS=list, CLIENT_CPUS=list   optional taskset CPU lists for the servers and the client
#                                        (unset: no pinning; client and servers share the cores)
#
# Workloads run in this order: for -d in 3 100: SET -P1, SET -P16, GET -P1, GET -P16. Before the
# GETs of each size, all KEYSPACE keys are set (untimed) to values of that size, so every GET hits.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

REQUESTS=${REQUESTS:-200000}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
OUT=${OUT:-}
SERVER_CPUS=${SERVER_CPUS:-}
CLIENT_CPUS=${CLIENT_CPUS:-}
RUN_TIMEOUT=600   # seconds, per redis-benchmark run

require_positive_int REQUESTS ROUNDS CLIENTS KEYSPACE

START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
require_tools "$REDIS_SERVER" redis-cli redis-benchmark python3 getconf setsid

build_hc_bin

bench_init bench-vs-redis

# Command prefixes (SERVER_PIN defaults to (setsid), see bench-lib.sh).
CLIENT_PIN=()
[[ -n "$SERVER_CPUS" ]] && SERVER_PIN=(setsid taskset -c "$SERVER_CPUS")
[[ -n "$CLIENT_CPUS" ]] && CLIENT_PIN=(taskset -c "$CLIENT_CPUS")

start_servers
check_server_pids "CPU time"
announce_servers

CLK_TCK=$(getconf CLK_TCK)

cpu_ticks() { # utime + stime of PID (all threads), in clock ticks
    # Fields 14 and 15 of /proc/PID/stat; the command name (field 2) may hold spaces, so count
    # from the last ')'.
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    read -r -a f <<<"$stat"
    # After "pid (comm) ", f[0] is field 3, so fields 14 and 15 are f[11] and f[12].
    echo $((f[11] + f[12]))
}

RESULTS="$TMP/results.tsv" # workload  server  round  rps  p50  p99  cpu_s_per_M
: >"$RESULTS"

run_one() { # run_one WORKLOAD SERVER PID PORT TEST PIPELINE SIZE ROUND
    local workload=$1 server=$2 pid=$3 port=$4 test=$5 pipeline=$6 size=$7 round=$8
    local csv="$TMP/run.csv" before after metrics
    before=$(cpu_ticks "$pid")
    if ! "${CLIENT_PIN[@]}" timeout "$RUN_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "$port" \
        -c "$CLIENTS" -n "$REQUESTS" -P "$pipeline" -d "$size" -r "$KEYSPACE" -t "$test" --csv \
        >"$csv" 2>"$TMP/benchmark.err"; then
        echo "error: redis-benchmark failed against $server ($workload):" >&2
        cat "$TMP/benchmark.err" "$csv" >&2
        exit 1
    fi
    require_alive "$server" "$pid" "$workload"
    after=$(cpu_ticks "$pid")
    metrics=$(python3 - "$csv" "$((after - before))" "$CLK_TCK" "$REQUESTS" <<'EOF'
import csv, sys
path, ticks, tck, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = [r for r in csv.DictReader(open(path)) if r.get("rps")]
if len(rows) != 1:
    sys.exit(f"expected one result row in redis-benchmark --csv output, got {len(rows)}")
r = rows[0]
cpu = ticks / tck / (n / 1e6)
print(f'{float(r["rps"]):.2f}\t{float(r["p50_latency_ms"]):.3f}\t{float(r["p99_latency_ms"]):.3f}\t{cpu:.3f}')
EOF
    )
    printf '%s\t%s\t%s\t%s\n' "$workload" "$server" "$round" "$metrics" >>"$RESULTS"
    printf '  %-14s %-5s round %s: rps %s  p50 %s ms  p99 %s ms  cpu %s s/M\n' \
        "$workload" "$server" "$round" $metrics >&2
}

preload() { # preload PORT SIZE: SET every key redis-benchmark's -r can draw to SIZE bytes of 'x'
    # (its own key and value format), so the GET workloads are all hits whatever REQUESTS is.
    # Untimed; plain SETs over one connection in pipelined chunks.
    python3 - "$1" "$2" "$KEYSPACE" <<'EOF'
import socket, sys
port, size, keyspace = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
value = b"x" * size
s = socket.create_connection(("127.0.0.1", port), timeout=30)
chunk = 1000
for start in range(0, keyspace, chunk):
    n = min(chunk, keyspace - start)
    out = bytearray()
    for i in range(start, start + n):
        key = b"key:%012d" % i
        out += b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, size, value)
    s.sendall(out)
    want, got = b"+OK\r\n" * n, b""
    while len(got) < len(want):
        data = s.recv(65536)
        if not data:
            sys.exit(f"preload: connection to port {port} closed")
        got += data
    if got != want:
        sys.exit(f"preload: unexpected reply from port {port}: {got[:80]!r}")
EOF
}

for size in 3 100; do
    for test in SET GET; do
        if [[ $test == GET ]]; then
            preload "$REDIS_PORT" "$size"
            preload "$HC_PORT" "$size"
            echo "keys before GET -d $size: redis $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" dbsize 2>&1)," \
                "hypercache $(redis-cli -h 127.0.0.1 -p "$HC_PORT" dbsize 2>&1)" >&2
        fi
        for pipeline in 1 16; do
            workload="$test -P$pipeline -d$size"
            echo "$workload" >&2
            for ((round = 1; round <= ROUNDS; round++)); do
                run_one "$workload" redis "$REDIS_PID" "$REDIS_PORT" "$test" "$pipeline" "$size" "$round"
                run_one "$workload" hc "$HC_PID" "$HC_PORT" "$test" "$pipeline" "$size" "$round"
            done
        done
    done
done

REPORT="$TMP/report.md"
{
    echo "## hypercache vs redis-server ($START)"
    echo
    print_env_header
    echo "- redis-benchmark $(redis-benchmark --version | awk '{print $2}'): -c $CLIENTS -n $REQUESTS -r $KEYSPACE," \
        "median of $ROUNDS alternating runs per server;" \
        "server CPUs: ${SERVER_CPUS:-any}, client CPUs: ${CLIENT_CPUS:-any}"
    echo "- cpu s/M: server utime+stime (all threads) during the run, per million requests" \
        "(resolution 1/$CLK_TCK s per run); ratios are hypercache / redis"
    echo
    python3 - "$RESULTS" <<'EOF'
import statistics, sys
runs = {}
order = []
for line in open(sys.argv[1]):
    w, server, _round, rps, p50, p99, cpu = line.rstrip("\n").split("\t")
    if w not in runs:
        runs[w] = {"redis": [], "hc": []}
        order.append(w)
    runs[w][server].append((float(rps), float(p50), float(p99), float(cpu)))

def med(rows, i):
    return statistics.median(r[i] for r in rows)

def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"

print("| workload | redis rps | hc rps | ratio | redis p50 | hc p50 | redis p99 | hc p99 | p99 ratio "
      "| redis cpu s/M | hc cpu s/M | cpu ratio |")
print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
for w in order:
    r, h = runs[w]["redis"], runs[w]["hc"]
    rr, hr = med(r, 0), med(h, 0)
    r50, h50 = med(r, 1), med(h, 1)
    r99, h99 = med(r, 2), med(h, 2)
    rc, hc = med(r, 3), med(h, 3)
    print(f"| {w} | {rr:,.0f} | {hr:,.0f} | {ratio(hr, rr)} | {r50:.3f} | {h50:.3f} | {r99:.3f} | {h99:.3f} "
          f"| {ratio(h99, r99)} | {rc:.2f} | {hc:.2f} | {ratio(hc, rc)} |")
print()
print("Latencies in ms.")
EOF
} >"$REPORT"

emit_report "$REPORT"
