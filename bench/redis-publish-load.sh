#!/bin/sh
# How much PUBLISH one redis-server takes on this machine, the way cluster mode uses it: a
# fresh redis-server on a free loopback port, S subscribers on one topic (the nodes with
# members of a channel; S=1 is a forwarded callback's inbox), redis-benchmark clients sending
# `PUBLISH topic <64 bytes>`, with pipelining P (1: one command per round trip; 16: the
# batching a busy node's multiplexed Redis connection gets). Prints, per case, the publishes
# per second, redis-server's CPU per PUBLISH (from /proc/PID/task/*/schedstat, nanoseconds)
# and how many cores it used: at ~1 core the rate is Redis's ceiling (it runs commands on one
# thread).
#
# usage: bench/redis-publish-load.sh [REQUESTS] [CLIENTS]    (defaults 400000, 50)
set -eu
requests=${1:-400000}
clients=${2:-50}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
redis=$!
subscribers=""
cleanup() {
    for pid in $subscribers; do kill "$pid" 2>/dev/null || true; done
    kill "$redis" 2>/dev/null || true
}
trap cleanup EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done

# CPU seconds of redis-server's threads so far.
cpu() { cat /proc/"$redis"/task/*/schedstat | awk '{ns += $1} END {printf "%.6f\n", ns / 1e9}'; }

payload=$(printf '%064d' 0)
printf '%-12s %-9s %14s %18s %14s\n' subscribers pipeline 'PUBLISH/s' 'redis us/PUBLISH' 'redis cores'
for s in 0 1 3 10; do
    while [ "$(redis-cli -p "$port" pubsub numsub load | tail -1)" -lt "$s" ]; do
        redis-cli -p "$port" subscribe load >/dev/null &
        subscribers="$subscribers $!"
        sleep 0.1
    done
    for p in 1 16; do
        before=$(cpu)
        start=$(date +%s.%N)
        out=$(redis-benchmark -p "$port" -c "$clients" -n "$requests" -P "$p" -q publish load "$payload" 2>&1 | tr '\r' '\n' | grep -i 'requests per second' | tail -1)
        end=$(date +%s.%N)
        after=$(cpu)
        rate=$(echo "$out" | sed -E 's/.*: ([0-9.]+) requests per second.*/\1/')
        echo "$s $p $rate $before $after $start $end $requests" | awk '{
            printf "%-12s %-9s %14.0f %18.2f %14.2f\n", $1, $2, $3, ($5 - $4) * 1e6 / $8, ($5 - $4) / ($7 - $6) }'
    done
done
# Subscribers that fell behind would have been cut off by Redis's pubsub output limit.
echo "subscribers still connected: $(redis-cli -p "$port" pubsub numsub load | tail -1) (expected 10)"
