#!/usr/bin/env bash
# Question: how fast are scripts and transactions against redis-server on this machine?
#
# Starts redis-server and hypercache side by side on free loopback ports and, alternating between
# them ROUNDS times, measures:
#   - EVALSHA of a rate limiter's script (rate-limit-redis's: INCR, PTTL, PEXPIRE on the first
#     hit; 10,000 keys) with redis-benchmark, pipelines of 1 and 16;
#   - MULTI with 10 SETs and EXEC, 16 transactions pipelined per connection (bench_multi.py,
#     which checks every reply byte).
# Prints the medians and the HyperCache/Redis ratio of each, and the server's CPU time per request
# (or per transaction), read from /proc: the figure a busy machine disturbs least.
#
# Usage: scripts/bench-scripting.sh
# Environment: REQUESTS=200000 (EVALSHA calls per run), TRANSACTIONS=40000 (per run),
#   ROUNDS=3, CLIENTS=50 (redis-benchmark -c), CONNS=8 (bench_multi.py connections),
#   HC_BIN=path (default: cargo build --release), REDIS_SERVER=redis-server.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

REQUESTS=${REQUESTS:-200000}
TRANSACTIONS=${TRANSACTIONS:-40000}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}
CONNS=${CONNS:-8}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
require_positive_int REQUESTS TRANSACTIONS ROUNDS CLIENTS CONNS
require_tools "$REDIS_SERVER" redis-cli redis-benchmark python3 setsid
build_hc_bin
bench_init bench-scripting
start_servers
announce_servers

SCRIPT='local hits = redis.call("INCR", KEYS[1])
local ttl = redis.call("PTTL", KEYS[1])
if ttl <= 0 or ARGV[1] == "1" then
  redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[2]))
  ttl = tonumber(ARGV[2])
end
return { hits, ttl }'
SHA_R=$(redis-cli -p "$REDIS_PORT" SCRIPT LOAD "$SCRIPT")
SHA_H=$(redis-cli -p "$HC_PORT" SCRIPT LOAD "$SCRIPT")
[[ "$SHA_R" == "$SHA_H" ]] || die "the servers disagree on the script's SHA1"

evalsha() { # PORT PIPELINE -> requests per second
    redis-benchmark -h 127.0.0.1 -p "$1" -n "$REQUESTS" -c "$CLIENTS" -P "$2" -r 10000 --csv \
        EVALSHA "$SHA_R" 1 rl:__rand_int__ 0 60000 | tail -1 | cut -d, -f2 | tr -d '"'
}
multi() { # PORT -> transactions per second
    python3 "$ROOT/scripts/bench_multi.py" "$1" "$TRANSACTIONS" "$CONNS" 16
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

declare -A R H RC HC
for ((round = 1; round <= ROUNDS; round++)); do
    for w in evalsha1 evalsha16 multi; do
        for side in R H; do
            port=$REDIS_PORT pid=$REDIS_PID
            [[ $side == H ]] && port=$HC_PORT pid=$HC_PID
            before=$(cpu_ticks "$pid")
            case $w in
                evalsha1) v=$(evalsha "$port" 1) n=$REQUESTS ;;
                evalsha16) v=$(evalsha "$port" 16) n=$REQUESTS ;;
                multi) v=$(multi "$port") n=$TRANSACTIONS ;;
            esac
            us=$(python3 -c "print(f'{($(cpu_ticks "$pid") - $before) * 1e6 / $TICK / $n:.2f}')")
            if [[ $side == R ]]; then R[$w]+="$v " RC[$w]+="$us "; else H[$w]+="$v " HC[$w]+="$us "; fi
            echo "round $round $w $side $v ($us us CPU each)" >&2
        done
    done
done

echo "| workload | redis-server | HyperCache | ratio | redis CPU us | HyperCache CPU us |"
echo "|---|---|---|---|---|---|"
for w in evalsha1 evalsha16 multi; do
    r=$(tr ' ' '\n' <<<"${R[$w]}" | grep . | median)
    h=$(tr ' ' '\n' <<<"${H[$w]}" | grep . | median)
    rc=$(tr ' ' '\n' <<<"${RC[$w]}" | grep . | median)
    hc=$(tr ' ' '\n' <<<"${HC[$w]}" | grep . | median)
    echo "| $w | $r | $h | $(python3 -c "print(f'{$h/$r:.2f}')") | $rc | $hc |"
done
