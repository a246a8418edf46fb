#!/usr/bin/env bash
# Question: what does replication cost? A single node against a 3-node cluster (replication 3,
# writes and reads at QUORUM: the defaults) on this machine, through redis-benchmark.
#
# Starts one single node and three cluster nodes (hypercache release binary) on free loopback
# ports; redis-benchmark talks to the single node and to cluster node 1, alternating, ROUNDS times
# per workload: SET and GET, -P 1 and -P 16. Prints median throughput and p50/p95/p99 latency, and
# the ratios cluster / single. Goals (issue 4): SET p95 <= 2.0x, GET p95 <= 1.5x.
#
# Usage: scripts/bench-cluster.sh
# Environment:
#   REQUESTS=200000  requests per run      ROUNDS=3       runs per target (median reported)
#   CLIENTS=50       connections           KEYSPACE=100000 random keys (-r)
#   SIZE=100         value bytes (-d)      WRITE=quorum   cluster write consistency
#   READ=quorum      cluster read consistency (one: the fast option, a local read)
#   HC_BIN=path      hypercache binary (default: target/release/hypercache, built if missing)
#   OUT=path         also write the report to this file
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

REQUESTS=${REQUESTS:-200000}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
SIZE=${SIZE:-100}
WRITE=${WRITE:-quorum}
READ=${READ:-quorum}
OUT=${OUT:-}
RUN_TIMEOUT=600
REDIS_SERVER=${REDIS_SERVER:-redis-server}

require_positive_int REQUESTS ROUNDS CLIENTS KEYSPACE SIZE
require_tools redis-cli redis-benchmark python3 setsid
START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

build_hc_bin

bench_init bench-cluster
PIDS=()
cleanup_all() {
    local p
    for p in "${PIDS[@]}"; do stop "$p"; done
    rm -rf "$TMP"
}
trap cleanup_all EXIT

start_node() { # start_node NAME PORT [ARG...]: start hypercache, record its pid, wait for PONG
    local name=$1 port=$2
    shift 2
    "${SERVER_PIN[@]}" "$HC_BIN" --bind 127.0.0.1 --port "$port" --log-level warn "$@" \
        >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    wait_ready "$name" "$!" "$port"
}

read -r SINGLE_PORT P1 < <(free_ports)
read -r P2 P3 < <(free_ports)
read -r C1 C2 < <(free_ports)
read -r C3 _ < <(free_ports)
SEEDS="127.0.0.1:$C1,127.0.0.1:$C2,127.0.0.1:$C3"
start_node single "$SINGLE_PORT"
start_node node1 "$P1" --cluster-port "$C1" --seeds "$SEEDS" --write-consistency "$WRITE" --read-consistency "$READ"
start_node node2 "$P2" --cluster-port "$C2" --seeds "$SEEDS" --write-consistency "$WRITE" --read-consistency "$READ"
start_node node3 "$P3" --cluster-port "$C3" --seeds "$SEEDS" --write-consistency "$WRITE" --read-consistency "$READ"
for ((i = 0; i < 100; i++)); do
    live=$(redis-cli -p "$P1" info cluster | tr -d '\r' | sed -n 's/^hc_members_live://p')
    [[ "$live" == 3 ]] && break
    sleep 0.1
done
[[ "$live" == 3 ]] || die "cluster did not form (node 1 sees $live live members)"
echo "single node port $SINGLE_PORT; cluster nodes $P1 $P2 $P3 (client on $P1)" >&2

RESULTS="$TMP/results.tsv"
: >"$RESULTS"
run_one() { # run_one WORKLOAD TARGET PORT TEST PIPELINE ROUND
    local workload=$1 target=$2 port=$3 test=$4 pipeline=$5 round=$6 csv="$TMP/run.csv"
    if ! timeout "$RUN_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$REQUESTS" \
        -P "$pipeline" -d "$SIZE" -r "$KEYSPACE" -t "$test" --csv >"$csv" 2>"$TMP/err"; then
        cat "$TMP/err" "$csv" >&2
        die "redis-benchmark failed against $target ($workload)"
    fi
    python3 - "$csv" "$workload" "$target" "$round" >>"$RESULTS" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("rps")]
if len(rows) != 1:
    sys.exit(f"expected one result row, got {len(rows)}")
r = rows[0]
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], r["rps"], r["p50_latency_ms"],
                 r["p95_latency_ms"], r["p99_latency_ms"]]))
PY
    tail -n 1 "$RESULTS" | awk -F'\t' '{printf "  %-10s %-8s round %s: rps %s p50 %s p95 %s p99 %s\n", $1, $2, $3, $4, $5, $6, $7}' >&2
}

for test in SET GET; do
    for pipeline in 1 16; do
        workload="$test -P$pipeline"
        for ((round = 1; round <= ROUNDS; round++)); do
            run_one "$workload" single "$SINGLE_PORT" "$test" "$pipeline" "$round"
            run_one "$workload" cluster "$P1" "$test" "$pipeline" "$round"
        done
    done
done
for p in "$SINGLE_PORT" "$P1" "$P2" "$P3"; do
    # Sanity: every node is still alive and the cluster holds the keys.
    redis-cli -p "$p" ping >/dev/null || die "node on port $p stopped answering"
done

REPORT="$TMP/report.md"
{
    echo "## single node vs 3-node cluster ($START)"
    echo
    print_machine_line
    echo "- hypercache: $HC_BIN ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'no git'))"
    echo "- cluster: 3 nodes on this machine, replication 3, write $WRITE, read $READ; client on node 1"
    echo "- redis-benchmark -c $CLIENTS -n $REQUESTS -r $KEYSPACE -d $SIZE, median of $ROUNDS alternating runs"
    echo
    python3 - "$RESULTS" <<'PY'
import statistics, sys
runs, order = {}, []
for line in open(sys.argv[1]):
    w, t, _r, *vals = line.rstrip("\n").split("\t")
    if w not in runs:
        runs[w] = {"single": [], "cluster": []}
        order.append(w)
    runs[w][t].append([float(v) for v in vals])
med = lambda rows, i: statistics.median(r[i] for r in rows)
print("| workload | single rps | cluster rps | rps ratio | p50 single/cluster | p50 ratio "
      "| p95 single/cluster | p95 ratio | p99 single/cluster | p99 ratio |")
print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
for w in order:
    s, c = runs[w]["single"], runs[w]["cluster"]
    cells = [w, f"{med(s,0):,.0f}", f"{med(c,0):,.0f}", f"{med(c,0)/med(s,0):.2f}"]
    for i in (1, 2, 3):
        cells += [f"{med(s,i):.3f} / {med(c,i):.3f}", f"{med(c,i)/med(s,i):.2f}"]
    print("| " + " | ".join(cells) + " |")
print()
print("Latencies in ms; ratios are cluster / single.")
PY
} >"$REPORT"
emit_report "$REPORT"
