#!/usr/bin/env bash
# Question: how many bytes per key does hypercache use compared with redis-server?
#
# For each value size, starts a fresh redis-server and a fresh hypercache on free loopback ports,
# reads INFO memory (used_memory, used_memory_rss) from each, loads the same KEYS string keys
# (16-byte keys key:%012d, values of the given size) into each with `redis-cli --pipe` from one
# RESP file generated beforehand, waits SETTLE seconds, reads INFO memory again and checks DBSIZE
# (every key must be there, or the script fails), then stops both servers. Bytes per key =
# (after - before) / KEYS, for used_memory (what the allocator holds) and for RSS (what the
# process holds from the OS). Prints a markdown table.
#
# Usage: scripts/bench-memory.sh
# Environment:
#   KEYS=1000000            keys loaded per server and value size
#   VALUE_SIZES="3 100 1024" value sizes in bytes, one fresh server pair each
#   SETTLE=1                seconds to wait after loading before reading INFO (redis refreshes
#                           used_memory_rss in its cron, 10 times a second)
#   HC_BIN=path             hypercache binary (default: target/release/hypercache; never built here)
#   REDIS_SERVER=redis-server   redis-server binary
#   OUT=path                also write the report to this file
#
# Both servers of a pair run at the same time, but are loaded one after the other (redis first).
# Disk: the RESP file for one value size is about KEYS * (size + 60) bytes in a temp dir under /tmp.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

KEYS=${KEYS:-1000000}
VALUE_SIZES=${VALUE_SIZES:-3 100 1024}
SETTLE=${SETTLE:-1}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
OUT=${OUT:-}
LOAD_TIMEOUT=900  # seconds, per redis-cli --pipe load

require_positive_int KEYS
require_seconds SETTLE
read -r -a SIZES <<<"$VALUE_SIZES"
[[ ${#SIZES[@]} -gt 0 ]] || { echo "error: VALUE_SIZES is empty" >&2; exit 1; }
for size in "${SIZES[@]}"; do
    [[ "$size" =~ ^[1-9][0-9]*$ ]] || { echo "error: value size '$size' must be a positive integer" >&2; exit 1; }
done

START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
require_tools "$REDIS_SERVER" redis-cli python3 setsid timeout
require_hc_bin

bench_init bench-memory

gen_resp() { # gen_resp FILE SIZE: SET key:%012d <SIZE bytes> for KEYS keys, as RESP
    python3 - "$1" "$2" "$KEYS" <<'EOF'
import sys
path, size, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
value = b"v" * size
head = b"*3\r\n$3\r\nSET\r\n$16\r\n"
tail = b"\r\n$%d\r\n%s\r\n" % (size, value)
with open(path, "wb", buffering=1 << 20) as f:
    chunk = 10000
    for start in range(0, keys, chunk):
        f.write(b"".join(head + b"key:%012d" % i + tail for i in range(start, min(start + chunk, keys))))
EOF
}

load() { # load NAME PORT FILE: stream FILE with redis-cli --pipe; fail on any error reply
    local name=$1 port=$2 file=$3 summary
    if ! timeout "$LOAD_TIMEOUT" redis-cli -h 127.0.0.1 -p "$port" --pipe <"$file" >"$TMP/pipe.out" 2>&1; then
        echo "error: redis-cli --pipe into $name failed:" >&2
        cat "$TMP/pipe.out" >&2
        exit 1
    fi
    summary=$(grep -E '^errors: ' "$TMP/pipe.out" || true)
    if [[ ! "$summary" =~ ^errors:\ 0,\ replies:\ $KEYS$ ]]; then
        echo "error: redis-cli --pipe into $name: expected 'errors: 0, replies: $KEYS', got:" >&2
        cat "$TMP/pipe.out" >&2
        exit 1
    fi
}

RESULTS="$TMP/results.tsv" # size  server  used_before  used_after  rss_before  rss_after
: >"$RESULTS"

for size in "${SIZES[@]}"; do
    echo "value size $size: generating $KEYS SETs..." >&2
    resp="$TMP/load-$size.resp"
    gen_resp "$resp" "$size"

    start_servers
    announce_servers "  "
    sleep "$SETTLE" # let both report a settled RSS for the empty process too

    for server in redis hc; do
        if [[ $server == redis ]]; then port=$REDIS_PORT pid=$REDIS_PID; else port=$HC_PORT pid=$HC_PID; fi
        dbsize=$(redis-cli -h 127.0.0.1 -p "$port" dbsize)
        [[ "$dbsize" == 0 ]] || { echo "error: fresh $server has $dbsize keys" >&2; exit 1; }
        used0=$(info_field "$port" memory used_memory)
        rss0=$(info_field "$port" memory used_memory_rss)
        t0=$EPOCHREALTIME
        load "$server" "$port" "$resp"
        t1=$EPOCHREALTIME
        sleep "$SETTLE"
        require_alive "$server" "$pid" "the load"
        dbsize=$(redis-cli -h 127.0.0.1 -p "$port" dbsize)
        if [[ "$dbsize" != "$KEYS" ]]; then
            echo "error: $server holds $dbsize keys after loading $KEYS (value size $size)" >&2
            exit 1
        fi
        used1=$(info_field "$port" memory used_memory)
        rss1=$(info_field "$port" memory used_memory_rss)
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$server" "$used0" "$used1" "$rss0" "$rss1" >>"$RESULTS"
        printf '  %-5s loaded in %.1f s: used_memory %s -> %s, rss %s -> %s\n' \
            "$server" "$(python3 -c "print($t1 - $t0)")" \
            "$used0" "$used1" "$rss0" "$rss1" >&2
    done

    stop_servers
    rm -f "$resp"
done

REPORT="$TMP/report.md"
{
    echo "## memory per key: hypercache vs redis-server ($START)"
    echo
    print_env_header
    echo "- $KEYS keys per run (16-byte keys key:%012d, string values), loaded with redis-cli --pipe into a" \
        "fresh server pair per value size; B/key = (INFO after - INFO before) / $KEYS, read $SETTLE s after" \
        "the load; ratios are hypercache / redis"
    echo
    python3 - "$RESULTS" "$KEYS" <<'EOF'
import sys
rows = {}
order = []
keys = int(sys.argv[2])
for line in open(sys.argv[1]):
    size, server, u0, u1, r0, r1 = line.rstrip("\n").split("\t")
    if size not in rows:
        rows[size] = {}
        order.append(size)
    rows[size][server] = ((int(u1) - int(u0)) / keys, (int(r1) - int(r0)) / keys)

def ratio(a, b):
    return f"{a / b:.2f}" if b > 0 else "n/a"

print("| value size | redis B/key (used_memory) | hc B/key (used_memory) | ratio "
      "| redis B/key (RSS) | hc B/key (RSS) | ratio |")
print("|--:|--:|--:|--:|--:|--:|--:|")
for size in order:
    (ru, rr), (hu, hr) = rows[size]["redis"], rows[size]["hc"]
    print(f"| {size} | {ru:.1f} | {hu:.1f} | {ratio(hu, ru)} | {rr:.1f} | {hr:.1f} | {ratio(hr, rr)} |")
EOF
} >"$REPORT"

emit_report "$REPORT"
