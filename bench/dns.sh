#!/usr/bin/env bash
# Embedded DNS benchmark (issue 4, item 10), shibafu's part: dnsperf against
# the standalone `dns-serve` example of crates/shibafu-dns (the daemon's own
# server code), server pinned to one core and dnsperf to the other, for
#   (a) local names with 10 containers registered,
#   (b) local names with 1000 containers registered,
#   (c) cached forwarded names (a second dns-serve on 127.0.0.x is the upstream).
# Reports q/s, lost queries, mean latency and the server's CPU use (q/s per
# fully used core). Traffic only on loopback. Not part of .ci/run.
# The side-by-side runs against aardvark-dns and Docker's embedded DNS need
# their daemons in a namespace and are to be added next to this (see bench/net.sh).
#
# usage: bench/dns.sh [--seconds 10] [--clients 4]
# needs: apt dnsperf; cargo (builds the example in release mode)
set -euo pipefail

secs=10
clients=4
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) secs=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
done
command -v dnsperf >/dev/null || { echo "dnsperf missing: apt-get install -y dnsperf" >&2; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
tgt=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build -q --release -p shibafu-dns --example dns-serve)
serve=$tgt/release/examples/dns-serve
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

for i in $(seq 0 9); do echo "c$i.bench.local A"; done >"$work/q10"
for i in $(seq 0 999); do echo "c$i A"; done >"$work/q1000"
hz=$(getconf CLK_TCK)

# run NAME ADDR PORT QUERYFILE: dnsperf against a server already started (pid $spid)
run() {
    local name=$1 addr=$2 port=$3 qf=$4
    local t0 t1 out qps
    t0=$(awk '{print $14+$15}' "/proc/$spid/stat")
    out=$(taskset -c 1 dnsperf -s "$addr" -p "$port" -d "$qf" -l "$secs" -c "$clients" 2>&1)
    t1=$(awk '{print $14+$15}' "/proc/$spid/stat")
    qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
    local lost lat cpu
    lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
    lat=$(awk '/Average Latency/ {print $4}' <<<"$out")
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.2f", d / hz / s}')
    awk -v n="$name" -v q="$qps" -v l="$lost" -v a="$lat" -v c="$cpu" \
        'BEGIN {printf "%-28s %10.0f q/s  lost %-6s  mean %8.3f ms  server cpu %s core  => %.0f q/s per core\n", n, q, l, a * 1000, c, (c > 0 ? q / c : 0)}'
}

port=$((20000 + RANDOM % 20000))
taskset -c 0 "$serve" 127.0.0.81 "$port" 10 2>/dev/null & spid=$!; pids+=("$spid")
sleep 0.5
run "local, 10 containers" 127.0.0.81 "$port" "$work/q10"

taskset -c 0 "$serve" 127.0.0.82 "$port" 1000 2>/dev/null & spid=$!; pids+=("$spid")
sleep 0.5
run "local, 1000 containers" 127.0.0.82 "$port" "$work/q1000"

# Upstream: 1000 names; front: none of its own, forwards and caches (TTL 5 s).
taskset -c 1 "$serve" 127.0.0.83 "$port" 1000 2>/dev/null & pids+=("$!")
taskset -c 0 "$serve" 127.0.0.84 "$port" 0 "127.0.0.83:$port" 2>/dev/null & spid=$!; pids+=("$spid")
sleep 0.5
run "forwarded, cached" 127.0.0.84 "$port" "$work/q1000"
