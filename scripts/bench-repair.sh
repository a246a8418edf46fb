#!/usr/bin/env bash
# Question: how fast and how cheaply does repair converge? Three hypercache nodes (release
# binary, replication 3) on loopback:
#   1. KEYS keys (VALUE bytes each) are written at QUORUM through node 1.
#   2. Node 3 is paused (SIGSTOP) with hints off while 1% of the keys are overwritten, then
#      resumed: its copy of those keys is stale, and only anti-entropy can repair it.
#   3. HC.SYNC on node 3 runs one round against each peer: time, bytes and keys pulled (the
#      round that converges), then again (a clean round: bytes).
#   4. With hints on, node 3 is paused again while HINTS keys are written, then resumed: hint
#      replay throughput, in hints per second, from the first replayed hint to the last.
# Goals (repair issue): convergence within one anti-entropy-interval (30 s by default), a clean
# round under 1 MB, replay of at least 100,000 hints per second.
#
# Usage: scripts/bench-repair.sh
# Environment:
#   KEYS=1000000   keys written            VALUE=100  value bytes
#   HINTS=200000   keys written while node 3 is paused (hint replay)
#   HC_BIN=path    hypercache binary (default: target/release/hypercache, built if missing)
#   OUT=path       also write the report to this file
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

KEYS=${KEYS:-1000000}
VALUE=${VALUE:-100}
HINTS=${HINTS:-200000}
OUT=${OUT:-}
require_positive_int KEYS VALUE HINTS
require_tools redis-cli python3 setsid
START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
build_hc_bin
bench_init bench-repair
PIDS=()
cleanup_all() {
    local p
    for p in "${PIDS[@]}"; do
        kill -CONT "$p" 2>/dev/null || true
        stop "$p"
    done
    rm -rf "$TMP"
}
trap cleanup_all EXIT

read -r P1 P2 < <(free_ports)
read -r P3 C1 < <(free_ports)
read -r C2 C3 < <(free_ports)
SEEDS="127.0.0.1:$C1,127.0.0.1:$C2,127.0.0.1:$C3"
PORTS=("$P1" "$P2" "$P3")
CPORTS=("$C1" "$C2" "$C3")
for i in 0 1 2; do
    "${SERVER_PIN[@]}" "$HC_BIN" --bind 127.0.0.1 --port "${PORTS[$i]}" --cluster-port "${CPORTS[$i]}" \
        --seeds "$SEEDS" --log-level warn --anti-entropy-interval 0 >"$TMP/node$i.log" 2>&1 &
    PIDS+=($!)
    wait_ready "node$i" "$!" "${PORTS[$i]}"
done
cli() { redis-cli -h 127.0.0.1 -p "$@"; }
live() { cli "$1" info cluster | tr -d '\r' | sed -n 's/^hc_members_live://p'; }
wait_live() { # wait_live PORT N
    local i
    for ((i = 0; i < 200; i++)); do
        [[ "$(live "$1")" == "$2" ]] && return 0
        sleep 0.05
    done
    die "node on port $1 does not see $2 live members"
}
metric() { # metric PORT NAME
    # awk reads to the end: exiting early would kill redis-cli with SIGPIPE (and the script,
    # under pipefail).
    cli "$1" hc.metrics | awk -v n="$2" 'found && !done { print; done = 1 } $0 == n { found = 1 }'
}
for p in "${PORTS[@]}"; do wait_live "$p" 3; done

# load PORT FIRST COUNT STEP TAG: SET key:(FIRST + i*STEP) for i < COUNT, pipelined (redis-cli --pipe).
load() {
    python3 - "$2" "$3" "$4" "$5" "$VALUE" <<'PY' | cli "$1" --pipe >"$TMP/pipe.out"
import sys
first, count, step, tag, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
value = (tag * size)[:size].encode()
out = sys.stdout.buffer
buf = []
for i in range(count):
    k = b"key:%d" % (first + i * step)
    buf.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(value), value))
    if len(buf) == 10000:
        out.write(b"".join(buf)); buf = []
out.write(b"".join(buf))
PY
    grep -q "errors: 0" "$TMP/pipe.out" || die "load failed: $(cat "$TMP/pipe.out")"
}

echo "loading $KEYS keys through node 1..." >&2
t0=$(date +%s.%N)
load "$P1" 0 "$KEYS" 1 a
t1=$(date +%s.%N)
LOAD_S=$(python3 -c "print(f'{$t1 - $t0:.1f}')")

# Stale 1%: hints off, node 3 paused while every 100th key is overwritten.
for p in "${PORTS[@]}"; do cli "$p" config set hint-max-per-node 0 >/dev/null; done
kill -STOP "${PIDS[2]}"
wait_live "$P1" 2
STALE=$((KEYS / 100))
load "$P1" 0 "$STALE" 100 b
kill -CONT "${PIDS[2]}"
for p in "${PORTS[@]}"; do wait_live "$p" 3; done

# HC.SYNC on node 3: one map per peer; print "ms bytes keys_pulled keys_pushed slots_differing status" per round.
sync_rounds() {
    cli "$P3" hc.sync | python3 -c '
import sys
lines = [l.rstrip("\n") for l in sys.stdin]
rounds, cur = [], {}
for k, v in zip(lines[0::2], lines[1::2]):
    if k == "node" and cur:
        rounds.append(cur); cur = {}
    cur[k] = v
if cur: rounds.append(cur)
for r in rounds:
    print(r["ms"], r["bytes"], r["keys_pulled"], r["keys_pushed"], r["slots_differing"], r["status"])
'
}
echo "anti-entropy round on node 3 ($STALE stale keys)..." >&2
t0=$(date +%s.%N)
mapfile -t ROUNDS < <(sync_rounds)
t1=$(date +%s.%N)
SYNC_WALL=$(python3 -c "print(f'{($t1 - $t0) * 1000:.0f}')")
mapfile -t CLEAN < <(sync_rounds)
# Check: node 3 holds the overwritten keys itself (a sample, read at ONE, its default).
BAD=0
for ((i = 0; i < STALE; i += STALE / 100)); do
    v=$(cli "$P3" get "key:$((i * 100))")
    [[ "${v:0:1}" == b ]] || BAD=$((BAD + 1))
done
[[ $BAD == 0 ]] || die "node 3 still stale on $BAD sampled keys after the round"

# Hint replay: hints on again, node 3 paused while HINTS keys are written, then resumed.
for p in "${PORTS[@]}"; do
    cli "$p" config set hint-max-per-node 10000000 hint-max-total 10000000 hint-max-bytes 4gb >/dev/null
done
kill -STOP "${PIDS[2]}"
wait_live "$P1" 2
load "$P1" "$KEYS" "$HINTS" 1 c
QUEUED=$(metric "$P1" dist.hinted.held)
kill -CONT "${PIDS[2]}"
SAMPLES="$TMP/replay.tsv"
: >"$SAMPLES"
for ((i = 0; i < 6000; i++)); do
    r=$(metric "$P1" dist.hinted.replayed)
    echo "$(date +%s.%N) $r" >>"$SAMPLES"
    [[ "$r" -ge "$QUEUED" ]] && break
    sleep 0.01
done
REPLAY=$(python3 - "$SAMPLES" "$QUEUED" <<'PY'
import sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
queued = int(sys.argv[2])
start = next((i for i, (_, r) in enumerate(rows) if r > 0), None)
if start is None or rows[-1][1] < queued:
    print("incomplete 0 0"); sys.exit()
# The sample before the first replayed one bounds the start from below.
t0 = rows[max(start - 1, 0)][0]
t1 = rows[-1][0]
print(f"{rows[-1][1] - rows[max(start - 1, 0)][1]:.0f} {t1 - t0:.2f} {(rows[-1][1] - rows[max(start - 1, 0)][1]) / (t1 - t0):.0f}")
PY
)

REPORT="$TMP/report.md"
{
    echo "### Repair: anti-entropy and hint replay, 3 nodes ($START)"
    echo
    print_machine_line
    echo "- hypercache: $HC_BIN ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'no git'))"
    echo "- $KEYS keys of $VALUE bytes loaded through node 1 at QUORUM in $LOAD_S s; $STALE (1%) made stale on node 3"
    echo
    echo "| round (HC.SYNC on node 3) | ms | bytes | keys pulled | keys pushed | slots differing | status |"
    echo "|---|---|---|---|---|---|---|"
    for r in "${ROUNDS[@]}"; do
        read -r ms bytes pulled pushed diff status <<<"$r"
        echo "| converging | $ms | $bytes | $pulled | $pushed | $diff | $status |"
    done
    for r in "${CLEAN[@]}"; do
        read -r ms bytes pulled pushed diff status <<<"$r"
        echo "| clean | $ms | $bytes | $pulled | $pushed | $diff | $status |"
    done
    echo
    echo "- HC.SYNC wall time (both rounds, run at once): $SYNC_WALL ms"
    read -r n secs rate <<<"$REPLAY"
    echo "- hint replay: $QUEUED hints queued on node 1; $n replayed in $secs s: **$rate hints/s**"
    echo "  (hint-replay-rate 200000 per target by default)"
} >"$REPORT"
emit_report "$REPORT"
