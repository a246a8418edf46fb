#!/usr/bin/env bash
# Question: does a write burst far larger than the memory budget keep hypercache inside it?
#
# Starts hypercache and, for comparison, redis-server on free loopback ports, both with
# --maxmemory $MAXMEMORY --maxmemory-policy allkeys-lru. Against each in turn (redis first), writes
# STORM x MAXMEMORY of values as fast as redis-benchmark can: SET, -d $VALUE_SIZE, random keys over
# -r 100000000 (nearly every SET makes a new key), -P 16, -c 50, -n = STORM * maxmemory / VALUE_SIZE.
# Meanwhile a sampler reads VmRSS from /proc/<pid>/status every 50 ms and keeps the peak. Prints, per
# server: RSS before, peak RSS, final RSS (SETTLE s after the burst), used_memory, evicted_keys and
# keys at the end, peak RSS / maxmemory, and whether the process was still alive (the script fails
# if it was not, after printing the table).
#
# Usage: scripts/bench-write-storm.sh
# Environment:
#   MAXMEMORY=100mb      budget for both servers (redis units: mb = 2^20 bytes, m = 10^6, kb, k, gb, g)
#   STORM=10             bytes written = STORM x maxmemory
#   VALUE_SIZE=1000      redis-benchmark -d
#   PIPELINE=16          redis-benchmark -P
#   CLIENTS=50           redis-benchmark -c
#   SETTLE=1             seconds after the burst before reading the final RSS and INFO
#   HC_BIN=path          hypercache binary (default: target/release/hypercache; never built here)
#   REDIS_SERVER=redis-server   redis-server binary
#   OUT=path             also write the report to this file
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

MAXMEMORY=${MAXMEMORY:-100mb}
STORM=${STORM:-10}
VALUE_SIZE=${VALUE_SIZE:-1000}
PIPELINE=${PIPELINE:-16}
CLIENTS=${CLIENTS:-50}
SETTLE=${SETTLE:-1}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
OUT=${OUT:-}
RUN_TIMEOUT=600    # seconds, per redis-benchmark run
SAMPLE_MS=50       # sampler period

require_positive_int STORM VALUE_SIZE PIPELINE CLIENTS
require_seconds SETTLE

START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
require_tools "$REDIS_SERVER" redis-cli redis-benchmark python3 setsid timeout
require_hc_bin

# MAXMEMORY in bytes, parsed like redis does.
MAXMEM_BYTES=$(python3 - "$MAXMEMORY" <<'EOF'
import re, sys
m = re.fullmatch(r"(\d+)(b|k|kb|m|mb|g|gb)?", sys.argv[1].strip().lower())
if not m:
    sys.exit(f"error: MAXMEMORY {sys.argv[1]!r} is not a memory size (e.g. 100mb)")
unit = {None: 1, "b": 1, "k": 1000, "kb": 1024, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}
print(int(m.group(1)) * unit[m.group(2)])
EOF
)
[[ "$MAXMEM_BYTES" -gt 0 ]] || { echo "error: MAXMEMORY must be positive" >&2; exit 1; }
REQUESTS=$(( (STORM * MAXMEM_BYTES + VALUE_SIZE - 1) / VALUE_SIZE ))

bench_init bench-write-storm
SAMPLER_PID=""
BENCH_PID=""

cleanup() { # EXIT trap: stop redis-benchmark and the sampler if running, then as bench_cleanup
    if [[ -n "$BENCH_PID" ]]; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    if [[ -n "$SAMPLER_PID" ]]; then
        kill -TERM "$SAMPLER_PID" 2>/dev/null || true
        wait "$SAMPLER_PID" 2>/dev/null || true
    fi
    bench_cleanup
}
trap cleanup EXIT

start_servers --maxmemory "$MAXMEMORY" --maxmemory-policy allkeys-lru
check_server_pids RSS
announce_servers

rss_bytes() { # rss_bytes PID: VmRSS in bytes, or empty if the process is gone
    awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status" 2>/dev/null || true
}

for server in redis hc; do
    if [[ $server == redis ]]; then port=$REDIS_PORT; else port=$HC_PORT; fi
    mm=$(info_field "$port" memory maxmemory)
    pol=$(redis-cli -h 127.0.0.1 -p "$port" info memory | tr -d '\r' | sed -n 's/^maxmemory_policy://p')
    if [[ "$mm" != "$MAXMEM_BYTES" || "$pol" != allkeys-lru ]]; then
        echo "error: $server reports maxmemory $mm policy '$pol', expected $MAXMEM_BYTES allkeys-lru" >&2
        exit 1
    fi
done

RESULTS="$TMP/results.tsv" # server rss0 peak final used evicted keys alive rps bench samples
: >"$RESULTS"
FAILED=0

storm() { # storm NAME PID PORT
    local name=$1 pid=$2 port=$3 rss0 peak samples final used evicted keys alive rps bench
    rss0=$(rss_bytes "$pid")
    # Sampler: peak VmRSS every SAMPLE_MS until $TMP/stop exists or the process is gone; bounded
    # by a sample count covering RUN_TIMEOUT + 30 s.
    rm -f "$TMP/stop" "$TMP/sampling"
    python3 - "$pid" "$TMP/stop" "$TMP/peak" "$SAMPLE_MS" "$(( (RUN_TIMEOUT + 30) * 1000 / SAMPLE_MS ))" \
        "$TMP/sampling" <<'EOF' &
import os, sys, time
pid, stop, out, period, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) / 1000, int(sys.argv[5])
started = sys.argv[6]
peak = samples = 0
gone = False
for i in range(limit):
    if i == 1:
        open(started, "w").close()  # the first sample is taken: the burst may start
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
                    samples += 1
                    break
    except (FileNotFoundError, ProcessLookupError):
        gone = True
        break
    if os.path.exists(stop):
        break
    time.sleep(period)
with open(out, "w") as f:
    f.write(f"{peak} {samples} {int(gone)}\n")
EOF
    SAMPLER_PID=$!
    for ((i = 0; i < 100; i++)); do # up to 5 s for the sampler's first sample
        [[ -e "$TMP/sampling" ]] && break
        kill -0 "$SAMPLER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "$name: SET -d $VALUE_SIZE -P $PIPELINE -c $CLIENTS -r 100000000 -n $REQUESTS" \
        "($((STORM * MAXMEM_BYTES / 1048576)) MiB of values)..." >&2
    # redis-benchmark stops at the first error reply (e.g. OOM), so a failed run means the burst was
    # not all written: reported in the table, and the script then fails. It can spin forever on a
    # dead server, so it runs in the background and is stopped if the server goes away.
    bench="ok"
    : >"$TMP/bench.csv"
    : >"$TMP/bench.err"
    if kill -0 "$pid" 2>/dev/null; then
        timeout "$RUN_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "$port" -t set -d "$VALUE_SIZE" \
            -P "$PIPELINE" -c "$CLIENTS" -r 100000000 -n "$REQUESTS" --csv \
            >"$TMP/bench.csv" 2>"$TMP/bench.err" &
        BENCH_PID=$!
        for ((i = 0; i < (RUN_TIMEOUT + 10) * 10; i++)); do
            kill -0 "$BENCH_PID" 2>/dev/null || break
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "error: $name (pid $pid) died during the write storm; stopping redis-benchmark" >&2
                kill -TERM "$BENCH_PID" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
        if ! wait "$BENCH_PID"; then
            bench="FAILED: $(head -n 1 "$TMP/bench.err" | tr -d '\r|' | cut -c1-80)"
            [[ "$bench" == "FAILED: " ]] && bench="FAILED (killed or timed out, no message)"
        fi
        BENCH_PID=""
    else
        bench="not run: server already gone"
    fi
    if [[ "$bench" != ok ]]; then
        FAILED=1
        echo "error: redis-benchmark against $name: $bench" >&2
        tail -n 5 "$TMP/bench.err" "$TMP/bench.csv" >&2
    fi
    sleep "$SETTLE"
    touch "$TMP/stop"
    wait "$SAMPLER_PID" || true
    SAMPLER_PID=""
    read -r peak samples _ <"$TMP/peak"
    if kill -0 "$pid" 2>/dev/null && [[ -r /proc/$pid/status ]]; then
        alive=yes
        final=$(rss_bytes "$pid")
        used=$(info_field "$port" memory used_memory)
        evicted=$(info_field "$port" stats evicted_keys)
        keys=$(redis-cli -h 127.0.0.1 -p "$port" dbsize)
    else
        alive=NO
        final=- used=- evicted=- keys=-
        FAILED=1
        echo "error: $name (pid $pid) is gone after the write storm; the end of its log:" >&2
        tail -n 20 "$TMP/$name.log" >&2
    fi
    rps=$(python3 - "$TMP/bench.csv" 2>/dev/null <<'EOF' || echo n/a
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("rps")]
print(f"{float(rows[0]['rps']):.0f}" if rows else "n/a")
EOF
    )
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${rss0:-0}" "$peak" "$final" "$used" \
        "$evicted" "$keys" "$alive" "$rps" "$bench" "$samples" >>"$RESULTS"
    echo "  rss before $rss0, peak $peak ($samples samples), final $final; used_memory $used;" \
        "evicted $evicted; keys $keys; alive $alive; $rps SET/s; redis-benchmark $bench" >&2
}

storm redis "$REDIS_PID" "$REDIS_PORT"
storm hc "$HC_PID" "$HC_PORT"

REPORT="$TMP/report.md"
{
    echo "## write storm: $STORM x maxmemory into hypercache and redis-server ($START)"
    echo
    print_env_header
    echo "- both: --maxmemory $MAXMEMORY ($MAXMEM_BYTES bytes) --maxmemory-policy allkeys-lru;" \
        "redis-benchmark $(redis-benchmark --version | awk '{print $2}') -t set -d $VALUE_SIZE -P $PIPELINE" \
        "-c $CLIENTS -r 100000000 -n $REQUESTS, against redis then hypercache;" \
        "VmRSS sampled every $SAMPLE_MS ms; final values $SETTLE s after the burst"
    echo
    python3 - "$RESULTS" "$MAXMEM_BYTES" <<'EOF'
import sys
mm = int(sys.argv[2])
mib = lambda b: f"{int(b) / 1048576:.1f}" if b.isdigit() else b
num = lambda n: f"{int(n):,}" if n.isdigit() else n
print("| server | RSS before MiB | peak RSS MiB | final RSS MiB | used_memory MiB | evicted_keys | keys "
      "| peak RSS / maxmemory | (peak - before) / maxmemory | alive | SET/s | redis-benchmark |")
print("|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|---|")
for line in open(sys.argv[1]):
    name, rss0, peak, final, used, evicted, keys, alive, rps, bench, samples = line.rstrip("\n").split("\t")
    rps = f"{int(rps):,}" if rps.isdigit() else rps
    print(f"| {name} | {mib(rss0)} | {mib(peak)} | {mib(final)} | {mib(used)} | {num(evicted)} | {num(keys)} "
          f"| {int(peak) / mm:.2f} | {(int(peak) - int(rss0)) / mm:.2f} | {alive} | {rps} | {bench} |")
EOF
} >"$REPORT"

emit_report "$REPORT"
if [[ $FAILED -ne 0 ]]; then
    echo "error: a server did not survive the write storm, or redis-benchmark failed against it" >&2
    exit 1
fi
