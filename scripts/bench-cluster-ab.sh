#!/usr/bin/env bash
# Question: does a change make the cluster cost more per request? Two hypercache builds, A and B,
# each as a 3-node cluster (replication 3, the default levels: writes and reads QUORUM; builds
# before 2026-12-02 read at ONE by default: pass HC_*_ARGS="--read-consistency one") on this
# machine, driven by redis-benchmark against node 1, alternating A and B ROUNDS times per
# workload (SET and GET, -P 1 and -P 16). For every run it reads the CPU time the three nodes
# used (utime + stime from /proc) and divides by the requests. Prints medians of throughput, p95
# and CPU per request, and the ratios B / A.
#
# Usage: HC_A=path/to/old/hypercache HC_B=path/to/new/hypercache scripts/bench-cluster-ab.sh
# Environment: REQUESTS=200000 ROUNDS=3 CLIENTS=50 KEYSPACE=100000 SIZE=100, OUT=path (report copy),
# HC_A_ARGS / HC_B_ARGS (more flags for each build's nodes, e.g. "--otlp-endpoint http://...").
# WORKLOADS="SET:1 SET:16 GET:1 GET:16" (test:pipeline pairs; TX1KEY:16 runs scripts/bench_multi.py's
# one-key transactions, MULTI SET EXPIRE GET EXEC, TRANSACTIONS=20000 of them on CONNS=8
# connections: throughput in transactions/s, CPU per transaction, no p95; TXSLOT runs its `slot`
# shape, a transaction on two keys of one slot, and EVALSLOT its `script` shape, EVAL of a script
# on two keys of one slot).
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

REQUESTS=${REQUESTS:-200000}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
SIZE=${SIZE:-100}
OUT=${OUT:-}
RUN_TIMEOUT=600
require_positive_int REQUESTS ROUNDS CLIENTS KEYSPACE SIZE
require_tools redis-cli redis-benchmark python3 setsid
[[ -x "${HC_A:-}" && -x "${HC_B:-}" ]] || die "set HC_A and HC_B to two hypercache binaries"
START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
TICK=$(getconf CLK_TCK)

bench_init bench-cluster-ab
PIDS=()
cleanup_all() {
    local p
    for p in "${PIDS[@]}"; do stop "$p"; done
    rm -rf "$TMP"
}
trap cleanup_all EXIT

declare -A NODE_PIDS PORT1
start_cluster() { # start_cluster NAME BIN [EXTRA ARGS]
    local name=$1 bin=$2 extra=${3:-} p1 p2 p3 c1 c2 c3 seeds i port cport live pids=""
    # No HTTP listener (builds that have one would all want port+3000).
    "$bin" --help | grep -q -- '--http-port' && extra="--http-port 0 $extra"
    read -r p1 p2 < <(free_ports)
    read -r p3 c1 < <(free_ports)
    read -r c2 c3 < <(free_ports)
    seeds="127.0.0.1:$c1,127.0.0.1:$c2,127.0.0.1:$c3"
    for i in 1 2 3; do
        port=$(eval echo "\$p$i")
        cport=$(eval echo "\$c$i")
        # shellcheck disable=SC2086
        "${SERVER_PIN[@]}" "$bin" --bind 127.0.0.1 --port "$port" --cluster-port "$cport" \
            --seeds "$seeds" --log-level warn $extra >"$TMP/$name$i.log" 2>&1 &
        PIDS+=($!)
        pids="$pids $!"
        wait_ready "$name$i" "$!" "$port"
    done
    # Formed: node 1 sees 3 live members, and (builds with membership) every node is synced.
    local synced
    for ((i = 0; i < 200; i++)); do
        live=$(redis-cli -p "$p1" info cluster | tr -d '\r' | sed -n 's/^hc_members_live://p')
        synced=1
        for port in "$p1" "$p2" "$p3"; do
            [[ "$(redis-cli -p "$port" info cluster | tr -d '\r' | sed -n 's/^hc_synced://p')" == 0 ]] && synced=0
        done
        [[ "$live" == 3 && "$synced" == 1 ]] && break
        sleep 0.1
    done
    [[ "$live" == 3 && "$synced" == 1 ]] || die "cluster $name did not form"
    NODE_PIDS[$name]=$pids
    PORT1[$name]=$p1
}

cpu_ticks() { # cpu_ticks PID...: utime + stime of the processes, in clock ticks
    local p total=0 f
    for p in "$@"; do
        f=$(cut -d' ' -f14,15 "/proc/$p/stat")
        total=$((total + ${f% *} + ${f#* }))
    done
    echo "$total"
}

start_cluster A "$HC_A" "${HC_A_ARGS:-}"
start_cluster B "$HC_B" "${HC_B_ARGS:-}"
echo "A: $HC_A ${HC_A_ARGS:-} (node 1 on ${PORT1[A]}); B: $HC_B ${HC_B_ARGS:-} (node 1 on ${PORT1[B]})" >&2

RESULTS="$TMP/results.tsv"
: >"$RESULTS"
run_one() { # run_one WORKLOAD NAME TEST PIPELINE ROUND
    local workload=$1 name=$2 test=$3 pipeline=$4 round=$5 csv="$TMP/run.csv" before after tps
    # shellcheck disable=SC2086
    before=$(cpu_ticks ${NODE_PIDS[$name]})
    local shape=""
    case $test in
        TX1KEY) shape=one-key ;;
        TXSLOT) shape=slot ;;
        EVALSLOT) shape=script ;;
    esac
    if [[ -n $shape ]]; then
        local n=${TRANSACTIONS:-20000}
        tps=$(timeout "$RUN_TIMEOUT" python3 "$ROOT/scripts/bench_multi.py" "${PORT1[$name]}" "$n" \
            "${CONNS:-8}" "$pipeline" "$shape") || die "bench_multi.py failed against $name"
        # shellcheck disable=SC2086
        after=$(cpu_ticks ${NODE_PIDS[$name]})
        python3 -c "import sys; print('\t'.join([sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], '0', f'{int(sys.argv[5]) / int(sys.argv[6]) * 1e6 / int(sys.argv[7]):.2f}']))" \
            "$workload" "$name" "$round" "$tps" "$((after - before))" "$TICK" "$n" >>"$RESULTS"
        tail -n 1 "$RESULTS" | awk -F'\t' '{printf "  %-8s %s round %s: tx/s %s cpu/tx %s us\n", $1, $2, $3, $4, $6}' >&2
        return
    fi
    if ! timeout "$RUN_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "${PORT1[$name]}" -c "$CLIENTS" \
        -n "$REQUESTS" -P "$pipeline" -d "$SIZE" -r "$KEYSPACE" -t "$test" --csv >"$csv" 2>"$TMP/err"; then
        cat "$TMP/err" "$csv" >&2
        die "redis-benchmark failed against $name ($workload)"
    fi
    # shellcheck disable=SC2086
    after=$(cpu_ticks ${NODE_PIDS[$name]})
    python3 - "$csv" "$workload" "$name" "$round" "$((after - before))" "$TICK" "$REQUESTS" \
        >>"$RESULTS" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("rps")]
if len(rows) != 1:
    sys.exit(f"expected one result row, got {len(rows)}")
r = rows[0]
us = int(sys.argv[5]) / int(sys.argv[6]) * 1e6 / int(sys.argv[7])
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], r["rps"], r["p95_latency_ms"], f"{us:.2f}"]))
PY
    tail -n 1 "$RESULTS" | awk -F'\t' '{printf "  %-8s %s round %s: rps %s p95 %s cpu/req %s us\n", $1, $2, $3, $4, $5, $6}' >&2
}

for workload in ${WORKLOADS:-SET:1 SET:16 GET:1 GET:16}; do
    test=${workload%:*}
    pipeline=${workload#*:}
    for ((round = 1; round <= ROUNDS; round++)); do
        run_one "$test -P$pipeline" A "$test" "$pipeline" "$round"
        run_one "$test -P$pipeline" B "$test" "$pipeline" "$round"
    done
done

REPORT="$TMP/report.md"
{
    echo "## cluster A vs B ($START)"
    echo
    print_machine_line
    echo "- A: $HC_A ${HC_A_ARGS:-}; B: $HC_B ${HC_B_ARGS:-}"
    echo "- 3 nodes each, replication 3, write quorum, read one; client on node 1"
    echo "- redis-benchmark -c $CLIENTS -n $REQUESTS -r $KEYSPACE -d $SIZE, median of $ROUNDS alternating runs"
    echo "- CPU per request: utime + stime of the three nodes over the run, divided by the requests"
    echo
    python3 - "$RESULTS" <<'PY'
import statistics, sys
runs, order = {}, []
for line in open(sys.argv[1]):
    w, t, _r, *vals = line.rstrip("\n").split("\t")
    if w not in runs:
        runs[w] = {"A": [], "B": []}
        order.append(w)
    runs[w][t].append([float(v) for v in vals])
med = lambda rows, i: statistics.median(r[i] for r in rows)
print("| workload | rps A / B | rps B/A | p95 ms A / B | p95 B/A | CPU us/req A / B | CPU B/A |")
print("|---|--:|--:|--:|--:|--:|--:|")
for w in order:
    a, b = runs[w]["A"], runs[w]["B"]
    print(f"| {w} | {med(a,0):,.0f} / {med(b,0):,.0f} | {med(b,0)/med(a,0):.2f} "
          + (f"| {med(a,1):.3f} / {med(b,1):.3f} | {med(b,1)/med(a,1):.2f} " if med(a,1) else "| - | - ")
          + f"| {med(a,2):.2f} / {med(b,2):.2f} | {med(b,2)/med(a,2):.2f} |")
PY
} >"$REPORT"
emit_report "$REPORT"
