# Shared helpers for the bench-*.sh scripts: sourced, never run. Each script sets
# `set -euo pipefail` and then does `source "$(dirname "$0")/bench-lib.sh"`; everything here is
# written to work under those options (no `cond && cmd` as a function's last command, no unset
# variables read) and changes none of them.
#
# Globals: sets ROOT (the repository), READY_TRIES and SERVER_PIN (the prefix servers are started
# under: (setsid), a script may add taskset) when sourced; bench_init sets TMP, REDIS_PID and HC_PID;
# start_servers sets REDIS_PORT, HC_PORT, REDIS_PID and HC_PID. Reads REDIS_SERVER and HC_BIN.
# Servers log to $TMP/redis.log and $TMP/hc.log; every server is on 127.0.0.1.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
READY_TRIES=100   # x 0.1 s
# Servers start in their own session and process group (setsid) so that `stop` can end exactly
# them; setsid and taskset exec their command, so `$!` is the server's own pid.
SERVER_PIN=(setsid)

# die MESSAGE...: print "error: MESSAGE" to stderr and exit 1.
die() {
    echo "error: $*" >&2
    exit 1
}

# require_tools TOOL...: fail unless every TOOL is on PATH (or an executable path).
require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool not found"
    done
}

# require_positive_int VAR...: fail unless each named variable holds a positive integer.
require_positive_int() {
    local var
    for var in "$@"; do
        [[ "${!var}" =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer"
    done
}

# require_seconds VAR: fail unless the named variable holds a number of seconds (e.g. 1, 0.5).
require_seconds() {
    [[ "${!1}" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$1 must be a number of seconds"
}

# require_hc_bin: default HC_BIN to the release binary (never built here) and fail unless executable.
require_hc_bin() {
    HC_BIN=${HC_BIN:-$ROOT/target/release/hypercache}
    [[ -x "$HC_BIN" ]] || die "$HC_BIN is not an executable (build it with cargo build --release)"
}

# build_hc_bin: when HC_BIN is unset, build the release binary and use it; fail unless executable.
build_hc_bin() {
    if [[ -z "${HC_BIN:-}" ]]; then
        echo "building hypercache (cargo build --release)..." >&2
        (cd "$ROOT" && cargo build --release -p hypercache --bin hypercache) >&2
        HC_BIN="$ROOT/target/release/hypercache"
    fi
    [[ -x "$HC_BIN" ]] || die "$HC_BIN is not an executable"
}

# bench_init NAME: make TMP=/tmp/NAME.XXXXXX, clear the server pids, trap EXIT (bench_cleanup), INT, TERM.
bench_init() {
    TMP=$(mktemp -d "/tmp/$1.XXXXXX")
    REDIS_PID=""
    HC_PID=""
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# stop PID: TERM the process group PID leads, wait up to 5 s, then KILL it; no-op for an empty PID.
stop() {
    # Each server leads its own group (started under setsid), so this reaches nothing else.
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

# stop_servers: stop redis-server and hypercache (if started) and forget their pids.
stop_servers() {
    stop "$REDIS_PID"
    REDIS_PID=""
    stop "$HC_PID"
    HC_PID=""
}

# bench_cleanup: the EXIT trap: stop both servers and remove TMP.
bench_cleanup() {
    stop_servers
    rm -rf "$TMP"
}

# free_ports: print two free loopback ports, found together so they differ.
free_ports() {
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

# wait_ready NAME PID PORT: wait for PONG on PORT; fail with $TMP/NAME.log if PID exits or time runs out.
wait_ready() {
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

# start_servers [ARG...]: start redis-server and hypercache, both with ARGs, on two free ports; wait for both.
start_servers() {
    read -r REDIS_PORT HC_PORT < <(free_ports)
    "${SERVER_PIN[@]}" "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no "$@" \
        >"$TMP/redis.log" 2>&1 &
    REDIS_PID=$!
    "${SERVER_PIN[@]}" "$HC_BIN" --bind 127.0.0.1 --port "$HC_PORT" --log-level warn "$@" >"$TMP/hc.log" 2>&1 &
    HC_PID=$!
    wait_ready redis "$REDIS_PID" "$REDIS_PORT"
    wait_ready hc "$HC_PID" "$HC_PORT"
}

# check_server_pids WHAT: fail if REDIS_PID or HC_PID is a wrapper (shell...) whose WHAT would be wrong.
check_server_pids() {
    # WHAT (CPU time, RSS) is read from these pids, so they must be the servers, not a shell that
    # started them (a wrapper script given as HC_BIN must `exec` the server).
    local pid
    for pid in "$REDIS_PID" "$HC_PID"; do
        if [[ "$(</proc/$pid/comm)" =~ ^(bash|sh|dash|setsid|taskset|timeout)$ ]]; then
            die "pid $pid is $(</proc/$pid/comm), not a server; its $1 would be wrong"
        fi
    done
}

# announce_servers [INDENT]: print both servers' pids and ports (and HC_BIN) to stderr, after INDENT.
announce_servers() {
    echo "${1:-}redis-server pid $REDIS_PID port $REDIS_PORT; hypercache pid $HC_PID port $HC_PORT ($HC_BIN)" >&2
}

# require_alive NAME PID WHEN: fail with the end of $TMP/NAME.log if PID has exited (during WHEN).
require_alive() {
    local name=$1 pid=$2 when=$3
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "error: $name (pid $pid) exited during $when; the end of its log:" >&2
        tail -n 20 "$TMP/$name.log" >&2
        exit 1
    fi
}

# info_field PORT SECTION FIELD: print one numeric INFO field, or fail loudly.
info_field() {
    local port=$1 section=$2 field=$3 v
    v=$(redis-cli -h 127.0.0.1 -p "$port" info "$section" | tr -d '\r' | sed -n "s/^$field://p")
    [[ "$v" =~ ^[0-9]+$ ]] || die "INFO $section on port $port has no numeric $field (got '$v')"
    echo "$v"
}

# print_machine_line: print the report's machine line (a markdown list item).
print_machine_line() {
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
}

# print_env_header: print the report's machine, redis and hypercache lines (markdown list items).
print_env_header() {
    print_machine_line
    echo "- redis: $("$REDIS_SERVER" --version)"
    echo "- hypercache: $HC_BIN ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'no git'))"
}

# emit_report FILE: print the report FILE to stdout and, if OUT is set, copy it there too.
emit_report() {
    cat "$1"
    if [[ -n "$OUT" ]]; then
        cp "$1" "$OUT"
        echo "report written to $OUT" >&2
    fi
}
