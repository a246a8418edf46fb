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

KEYS=${KEYS:-1000000}
VALUE_SIZES=${VALUE_SIZES:-3 100 1024}
SETTLE=${SETTLE:-1}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
OUT=${OUT:-}
READY_TRIES=100   # x 0.1 s
LOAD_TIMEOUT=900  # seconds, per redis-cli --pipe load

[[ "$KEYS" =~ ^[1-9][0-9]*$ ]] || { echo "error: KEYS must be a positive integer" >&2; exit 1; }
[[ "$SETTLE" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "error: SETTLE must be a number of seconds" >&2; exit 1; }
read -r -a SIZES <<<"$VALUE_SIZES"
[[ ${#SIZES[@]} -gt 0 ]] || { echo "error: VALUE_SIZES is empty" >&2; exit 1; }
for size in "${SIZES[@]}"; do
    [[ "$size" =~ ^[1-9][0-9]*$ ]] || { echo "error: value size '$size' must be a positive integer" >&2; exit 1; }
done

START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for tool in "$REDIS_SERVER" redis-cli python3 setsid timeout; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done
HC_BIN=${HC_BIN:-$ROOT/target/release/hypercache}
[[ -x "$HC_BIN" ]] || { echo "error: $HC_BIN is not an executable (build it with cargo build --release)" >&2; exit 1; }

TMP=$(mktemp -d /tmp/bench-memory.XXXXXX)
REDIS_PID=""
HC_PID=""

stop() { # stop PID: TERM its process group (the server and anything it forked), wait up to 5 s,
    # then KILL. Each server leads its own group (started under setsid), so this reaches nothing else.
    local pid=$1 i
    [[ -n "$pid" ]] || return 0
    kill -TERM -- "-$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop "$REDIS_PID"
    stop "$HC_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_ports() { # two free loopback ports, found together so they differ
    python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))
for s in ss:
    s.close()
'
}

wait_ready() { # wait_ready NAME PID PORT
    local name=$1 pid=$2 port=$3 i
    for ((i = 0; i < READY_TRIES; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: $name exited during startup; its log:" >&2
            cat "$TMP/$name.log" >&2
            exit 1
        fi
        [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]] && return 0
        sleep 0.1
    done
    echo "error: $name not ready on port $port after $((READY_TRIES / 10)) s; its log:" >&2
    cat "$TMP/$name.log" >&2
    exit 1
}

info_field() { # info_field PORT SECTION FIELD: one numeric INFO field, or fail loudly
    local port=$1 section=$2 field=$3 v
    v=$(redis-cli -h 127.0.0.1 -p "$port" info "$section" | tr -d '\r' | sed -n "s/^$field://p")
    [[ "$v" =~ ^[0-9]+$ ]] || { echo "error: INFO $section on port $port has no numeric $field (got '$v')" >&2; exit 1; }
    echo "$v"
}

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

    read -r REDIS_PORT HC_PORT < <(free_ports)
    setsid "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        >"$TMP/redis.log" 2>&1 &
    REDIS_PID=$!
    setsid "$HC_BIN" --bind 127.0.0.1 --port "$HC_PORT" --log-level warn >"$TMP/hc.log" 2>&1 &
    HC_PID=$!
    wait_ready redis "$REDIS_PID" "$REDIS_PORT"
    wait_ready hc "$HC_PID" "$HC_PORT"
    echo "  redis-server pid $REDIS_PID port $REDIS_PORT; hypercache pid $HC_PID port $HC_PORT ($HC_BIN)" >&2
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
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: $server (pid $pid) exited during the load; the end of its log:" >&2
            tail -n 20 "$TMP/$server.log" >&2
            exit 1
        fi
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

    stop "$REDIS_PID"; REDIS_PID=""
    stop "$HC_PID"; HC_PID=""
    rm -f "$resp"
done

REPORT="$TMP/report.md"
{
    echo "## memory per key: hypercache vs redis-server ($START)"
    echo
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
    echo "- redis: $("$REDIS_SERVER" --version)"
    echo "- hypercache: $HC_BIN ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'no git'))"
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

cat "$REPORT"
if [[ -n "$OUT" ]]; then
    cp "$REPORT" "$OUT"
    echo "report written to $OUT" >&2
fi
