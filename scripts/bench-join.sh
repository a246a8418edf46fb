#!/usr/bin/env bash
# Question: how long does a 4th node take to join 3 nodes holding many keys, and what do
# clients see meanwhile? Three hypercache nodes (release binary, replication 3) on loopback:
#   1. KEYS keys (VALUE bytes each) are written at QUORUM (key:%012d, redis-benchmark's names).
#   2. A client (redis-benchmark GET, random keys, -c 50 -P 16) reads in back-to-back chunks of
#      CHUNK requests through node 1 for the whole run; each chunk's rate is timestamped.
#   3. After BASELINE seconds a 4th node starts with node 1 as its only seed; the join ends
#      when all four nodes have the 4-member ring and nothing left to receive.
#   Reported: the join time, the keys it received, and the client throughput during the
#   join, and for BASELINE seconds after it, as ratios of the throughput before it (medians of
#   the chunks; and, for before and during, every request completed in the window per second
#   of it, which a join of a second or two measures with less noise than its few chunks). After the join node 1 replicates 3/4 of the slots instead of all of them, so
#   a quarter of its reads are forwarded: "after" is the new steady state.
# Goals (membership issue): the join completes in under 60 s with 1,000,000 keys; client
# throughput during it at least 0.8x.
#
# Usage: scripts/bench-join.sh
# Environment:
#   KEYS=1000000   keys written            VALUE=100   value bytes
#   BASELINE=8     seconds of reads before the join
#   CHUNK=20000    requests per redis-benchmark chunk
#   RATE=          rebalance-max-bytes-per-sec of every node (default: the node's default)
#   READ=          read-consistency of every node, so of the client's GETs (default: the node's
#                  default, QUORUM; ONE measures the fast option)
#   HC_BIN=path    hypercache binary (default: target/release/hypercache, built if missing)
#   CLIENT=1       0: no reading client (measures what the transfer itself costs: the report's
#                  CPU line is then the join's own CPU)
#   OUT=path       also write the report to this file
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

KEYS=${KEYS:-1000000}
VALUE=${VALUE:-100}
BASELINE=${BASELINE:-8}
CHUNK=${CHUNK:-20000}
RATE=${RATE:-}
RATE_ARGS=()
[[ -n "$RATE" ]] && RATE_ARGS=(--rebalance-max-bytes-per-sec "$RATE")
READ=${READ:-}
[[ -n "$READ" ]] && RATE_ARGS+=(--read-consistency "$READ")
OUT=${OUT:-}
CLIENT=${CLIENT:-1}
require_positive_int KEYS VALUE CHUNK
require_seconds BASELINE
require_tools redis-cli redis-benchmark python3 setsid
START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
build_hc_bin
bench_init bench-join
PIDS=()
READER=""
cleanup_all() {
    local p
    [[ -n "$READER" ]] && kill "$READER" 2>/dev/null || true
    for p in "${PIDS[@]}"; do stop "$p"; done
    rm -rf "$TMP"
}
trap cleanup_all EXIT

read -r P1 P2 < <(free_ports)
read -r P3 P4 < <(free_ports)
read -r C1 C2 < <(free_ports)
read -r C3 C4 < <(free_ports)
SEEDS="127.0.0.1:$C1,127.0.0.1:$C2,127.0.0.1:$C3"
PORTS=("$P1" "$P2" "$P3" "$P4")
CPORTS=("$C1" "$C2" "$C3" "$C4")
start_node() { # start_node I SEEDS
    local i=$1
    setsid "$HC_BIN" --bind 127.0.0.1 --port "${PORTS[$i]}" --cluster-port "${CPORTS[$i]}" \
        --seeds "$2" --log-level info "${RATE_ARGS[@]}" >"$TMP/node$i.log" 2>&1 &
    PIDS+=($!)
    wait_ready "node$i" "$!" "${PORTS[$i]}"
}
cli() { redis-cli -h 127.0.0.1 -p "$@"; }
cpu_ticks() { # cpu_ticks PID...: user + system CPU ticks of these processes, summed
    local p t=0
    for p in "$@"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done
    echo "$t"
}
field() { cli "$1" info cluster | tr -d '\r' | sed -n "s/^$2://p"; }
metric() { # metric PORT NAME
    # awk reads to the end: exiting early would kill redis-cli with SIGPIPE (and the script,
    # under pipefail).
    cli "$1" hc.metrics | awk -v n="$2" 'found && !done { print; done = 1 } $0 == n { found = 1 }'
}
settled() { # settled N PORT...: each has the N-member ring and nothing to receive
    local n=$1 p
    shift
    for p in "$@"; do
        [[ "$(field "$p" hc_members)" == "$n" && "$(field "$p" hc_synced)" == 1 ]] || return 1
    done
}
for i in 0 1 2; do start_node "$i" "$SEEDS"; done
for ((i = 0; i < 300; i++)); do settled 3 "$P1" "$P2" "$P3" && break; sleep 0.1; done
settled 3 "$P1" "$P2" "$P3" || die "the first three nodes did not form their ring"

echo "loading $KEYS keys..." >&2
t0=$(date +%s.%N)
python3 - "$KEYS" "$VALUE" <<'PY' | cli "$P1" --pipe >"$TMP/pipe.out"
import sys
count, size = int(sys.argv[1]), int(sys.argv[2])
value = b"v" * size
out = sys.stdout.buffer
buf = []
for i in range(count):
    k = b"key:%012d" % i
    buf.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(value), value))
    if len(buf) == 10000:
        out.write(b"".join(buf)); buf = []
out.write(b"".join(buf))
PY
grep -q "errors: 0" "$TMP/pipe.out" || die "load failed: $(cat "$TMP/pipe.out")"
t1=$(date +%s.%N)
LOAD_S=$(python3 -c "print(f'{$t1 - $t0:.1f}')")

# The client: chunks of GETs, each line "end-time rps".
(
    while [[ "$CLIENT" != 0 ]]; do
        r=$(redis-benchmark -h 127.0.0.1 -p "$P1" -t get -r "$KEYS" -n "$CHUNK" -c 50 -P 16 -d "$VALUE" --csv -q 2>/dev/null |
            tr -d '"' | awk -F, '$1 == "GET" { print $2 }')
        echo "$(date +%s.%N) ${r:-0}"
    done
) >"$TMP/rates" &
READER=$!
sleep "$BASELINE"
echo "starting node 4 (seed: node 1)..." >&2
J0=$(date +%s.%N)
CPU0=$(cpu_ticks "${PIDS[@]}")
HEDGES0=$(metric "$P1" dist.read.hedges)
FANOUTS0=$(metric "$P1" dist.read.fanouts)
start_node 3 "127.0.0.1:$C1"
for ((i = 0; i < 1800; i++)); do
    settled 4 "$P1" "$P2" "$P3" "$P4" && break
    sleep 0.1
done
J1=$(date +%s.%N)
CPU1=$(cpu_ticks "${PIDS[@]}")
HEDGES1=$(metric "$P1" dist.read.hedges)
FANOUTS1=$(metric "$P1" dist.read.fanouts)
JOIN_CPU=$(python3 -c "print(f'{($CPU1 - $CPU0) / $(getconf CLK_TCK):.1f}')")
settled 4 "$P1" "$P2" "$P3" "$P4" || die "the join did not finish in 180 s"
sleep "$BASELINE"
kill "$READER" 2>/dev/null || true
wait "$READER" 2>/dev/null || true
READER=""
RECEIVED=$(metric "$P4" dist.rebalance.keys)
PAGED=$(metric "$P4" dist.rebalance.entries_received)
HELD=$(metric "$P4" store.keys)
REB_NS=$(metric "$P4" dist.rebalance.last_ns)
read -r JOIN_S BEFORE DURING RATIO NB ND AFTER ARATIO NA WBEFORE WDURING WRATIO < <(python3 - "$TMP/rates" "$J0" "$J1" "$CHUNK" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
j0, j1, chunk = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
# A chunk ending before the join started is "before"; one inside the join window is "during";
# one starting a second after the join ended is "after" (straddling chunks are dropped).
chunk_s = [b[0] - a[0] for a, b in zip(rows, rows[1:])]
before = [r for t, r in rows if t < j0]
during = [r for (t, r), d in zip(rows[1:], chunk_s) if t - d >= j0 and t <= j1 + 0.5]
after = [r for (t, r), d in zip(rows[1:], chunk_s) if t - d >= j1 + 1]
med = lambda v: statistics.median(v) if v else 0
b, d, a = med(before), med(during), med(after)
# The same over whole windows: the requests completed in the window (each chunk's CHUNK
# requests spread evenly from the previous chunk's end to its own, so restarts of the client
# count as they do in every window) per second of it. A join of a second or two holds only a
# few whole chunks: this uses every request in it.
def window_rate(w0, w1):
    done = 0.0
    for (t0, _), (t1, _) in zip(rows, rows[1:]):
        overlap = min(t1, w1) - max(t0, w0)
        if overlap > 0 and t1 > t0:
            done += chunk * overlap / (t1 - t0)
    return done / (w1 - w0) if w1 > w0 else 0
wb = window_rate(rows[0][0], j0) if rows else 0
wd = window_rate(j0, j1)
print(f"{j1 - j0:.1f} {b:.0f} {d:.0f} {d / b if b else 0:.2f} {len(before)} {len(during)} {a:.0f} {a / b if b else 0:.2f} {len(after)} {wb:.0f} {wd:.0f} {wd / wb if wb else 0:.2f}")
PY
)

REPORT="$TMP/report.md"
{
    echo "### Join: a 4th node joins 3 holding $KEYS keys ($START)"
    echo
    print_machine_line
    echo "- hypercache: $HC_BIN ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'no git'))"
    echo "- $KEYS keys of $VALUE bytes loaded at QUORUM in $LOAD_S s; client: redis-benchmark GET, -c 50 -P 16, random keys, through node 1"
    echo "- rebalance-max-bytes-per-sec: $(cli "$P4" config get rebalance-max-bytes-per-sec | tail -1); read-consistency: $(cli "$P1" config get read-consistency | tail -1)"
    echo
    echo "| measure | value |"
    echo "|---|---|"
    echo "| join time (node 4 started -> every node has the 4-member ring, nothing to receive) | **$JOIN_S s** |"
    echo "| node 4's rebalance (dist.rebalance.last_ns) | $((REB_NS / 1000000)) ms |"
    echo "| CPU the four servers used during the join (user + system$([[ "$CLIENT" == 0 ]] && echo ', no client')) | $JOIN_CPU s |"
    echo "| keys received by node 4 (dist.rebalance.keys) / held after | $RECEIVED / $HELD |"
    echo "| entries in the pages node 4 received, stored or not (dist.rebalance.entries_received) | $PAGED |"
    echo "| node 1's QUORUM reads during the join / those that asked a spare replica (dist.read.fanouts, dist.read.hedges) | $((FANOUTS1 - FANOUTS0)) / $((HEDGES1 - HEDGES0)) |"
    echo "| client GET/s before the join (median of $NB chunks) | $BEFORE |"
    echo "| client GET/s during the join (median of $ND chunks) | $DURING |"
    echo "| ratio during / before | **$RATIO** |"
    echo "| client GET/s over the whole window before / during the join (every request, chunk restarts included) | $WBEFORE / $WDURING |"
    echo "| ratio during / before, whole windows | **$WRATIO** |"
    echo "| client GET/s after the join (median of $NA chunks; node 1 now forwards the quarter of reads it no longer replicates) | $AFTER |"
    echo "| ratio after / before | $ARATIO |"
} >"$REPORT"
emit_report "$REPORT"
