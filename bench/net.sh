#!/usr/bin/env bash
# Networking benchmarks (issue 3, item 10): shibafu against Docker (apt
# docker.io) and Podman (apt podman + netavark + aardvark-dns), in the same run,
# on the same busybox image, each engine in its own private net+mount namespace.
#
#   (a) `network create` + `network rm` of a user network: median of N pairs   (goal <= 0.15x Podman)
#   (b) `run --rm --network USERNET busybox true`: median of N runs            (goal <= 0.1x Docker)
#   (c) 20 concurrent `run -d --network USERNET busybox sleep 600`: wall time  (goal <= 0.15x Podman)
#   (d) TCP throughput from the host into a container through a 127.0.0.1
#       publish vs straight to the container's IP                              (goal >= 0.97x; Docker's proxy ~0.57x)
#       Tool: an iperf-like bulk transfer, no wrk: the container runs /bin/sink
#       (a few lines of C built here with gcc -static and added to the image:
#       accept, read 1 MiB at a time until EOF, close; busybox nc tops out at
#       ~150 MiB/s and would hide the data path), a Python client in the
#       engine's netns sends --mib MiB from memory and the clock stops when the
#       server has read everything and closed. Runs alternate publish/direct
#       and the median of each is kept.
#   (e) `run -d --network USERNET -p PORT:80 busybox sleep` (create + start) with
#       1000 host ports already published (one container, -p 20000-20999) vs
#       none: median of N runs each                                            (goal <= 1.2x)
#
# Engines get a resolv.conf naming only 127.0.0.53 (nobody serves it) and dockerd
# --dns 127.0.0.53, so no DNS leaves the machine; all traffic stays inside each
# engine's namespace. Everything is removed at the end. Not part of .ci/run.
#
# usage: bench/net.sh [--engines shibafu,docker,podman] [--runs 15] [--concurrent 20] [--mib 1024] [--tput-runs 9]
#                     [--only netcreate,single,concurrent,tput,manyports]
#   --only: run just these measurements (default: all); with only netcreate no
#           image is built or imported.
# env:   SHIBAFU_BIN (default target/release/shibafu)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
engines="shibafu,docker,podman"
runs=15
concurrent=20
mib=1024
tput_runs=9
only="netcreate,single,concurrent,tput,manyports"
while (($#)); do
    case $1 in
        --engines) engines=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --concurrent) concurrent=$2; shift 2 ;;
        --mib) mib=$2; shift 2 ;;
        --tput-runs) tput_runs=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
((runs >= 1 && runs <= 200 && concurrent >= 1 && concurrent <= 100 && mib >= 16 && mib <= 8192 \
    && tput_runs >= 1 && tput_runs <= 50)) || {
    echo "error: --runs 1..200, --concurrent 1..100, --mib 16..8192, --tput-runs 1..50" >&2; exit 2; }
for m in ${only//,/ }; do
    case $m in
        netcreate|single|concurrent|tput|manyports) ;;
        *) echo "error: --only takes netcreate,single,concurrent,tput,manyports (got $m)" >&2; exit 2 ;;
    esac
done
wants() { [[ ",$only," == *",$1,"* ]]; }
needs_image() { wants single || wants concurrent || wants tput || wants manyports; }
BENCH_NETWORKS=(benchnet)
. "$here/lib.sh"
bench_check
want_engine_pkgs
has podman && want_pkg aardvark-dns
want_pkg python3 python3
want_pkg build-essential gcc
want_pkg jq jq
install_pkgs
bench_workdir shibafu-netbench

# ------------------------------------------------------------------ measurements
stats() { # file -> "min .. max"
    echo "min $(ms "$(sort -n "$1" | head -1)"), max $(ms "$(sort -n "$1" | tail -1)")"
}

bench_netcreate() { # engine
    local e=$1 i t0 t1
    "cli_$e" network create bench-warm >/dev/null && "cli_$e" network rm bench-warm >/dev/null
    : > "$W/netc.$e"
    for ((i = 0; i < runs; i++)); do
        t0=$(now)
        "cli_$e" network create "bench-n$i" >/dev/null
        "cli_$e" network rm "bench-n$i" >/dev/null
        t1=$(now)
        echo $((t1 - t0)) >> "$W/netc.$e"
    done
    R[netc.$e]=$(median < "$W/netc.$e")
    log "$e: network create + rm median $(ms "${R[netc.$e]}") ms ($(stats "$W/netc.$e"))"
}

bench_single() { # engine
    local e=$1 i t0 t1
    "cli_$e" run --rm --network benchnet busybox true >/dev/null # warm-up
    "cli_$e" run --rm --network benchnet busybox true >/dev/null
    : > "$W/single.$e"
    for ((i = 0; i < runs; i++)); do
        t0=$(now)
        "cli_$e" run --rm --network benchnet busybox true >/dev/null
        t1=$(now)
        echo $((t1 - t0)) >> "$W/single.$e"
    done
    R[single.$e]=$(median < "$W/single.$e")
    log "$e: run --rm --network benchnet true median $(ms "${R[single.$e]}") ms ($(stats "$W/single.$e"))"
}

bench_concurrent() { # engine
    local e=$1 i t0 t1 fails=0 pids=()
    rm -f "$W/cid.$e".*
    t0=$(now)
    for ((i = 0; i < concurrent; i++)); do
        "cli_$e" run -d --network benchnet busybox sleep 600 > "$W/cid.$e.$i" 2>"$W/cerr.$e.$i" &
        pids+=($!)
    done
    wait "${pids[@]}"
    t1=$(now)
    R[conc.$e]=$((t1 - t0))
    for ((i = 0; i < concurrent; i++)); do [[ -s $W/cid.$e.$i ]] || fails=$((fails + 1)); done
    ((fails == 0)) || log "$e: $fails of $concurrent concurrent runs failed: $(cat "$W"/cerr."$e".* | sort -u | head -3)"
    log "$e: $concurrent concurrent run -d --network benchnet: $(ms "${R[conc.$e]}") ms"
    rm_f "$e" $(cat "$W/cid.$e".* | tr '\n' ' ')
}

# The client: connect, send MiB of zeros, half-close, wait for the server to
# close (it has read everything), print MiB/s.
TPUT_PY='
import socket, sys, time
host, port, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buf = bytes(1 << 20)
deadline = time.time() + 20
while True:
    try:
        s = socket.create_connection((host, port), timeout=5)
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
t0 = time.perf_counter()
for _ in range(mib):
    s.sendall(buf)
s.shutdown(socket.SHUT_WR)
s.settimeout(120)
while s.recv(65536):
    pass
dt = time.perf_counter() - t0
print("%.1f" % (mib / dt))
'

bench_tput() { # engine
    local e=$1 c ip i mode v
    c=$("cli_$e" run -d --network benchnet -p 127.0.0.1:25001:5001 busybox sink 5001)
    ip=$("cli_$e" inspect "$c" | jq -r '.[0].NetworkSettings.Networks.benchnet.IPAddress')
    : > "$W/tput.$e.publish"
    : > "$W/tput.$e.direct"
    in_net "$e" python3 -c "$TPUT_PY" "$ip" 5001 16 >/dev/null # warm-up
    for ((i = 0; i < tput_runs; i++)); do
        for mode in publish direct; do
            if [[ $mode == publish ]]; then
                v=$(in_net "$e" python3 -c "$TPUT_PY" 127.0.0.1 25001 "$mib")
            else
                v=$(in_net "$e" python3 -c "$TPUT_PY" "$ip" 5001 "$mib")
            fi
            echo "$v" >> "$W/tput.$e.$mode"
        done
    done
    R[tpub.$e]=$(median < "$W/tput.$e.publish")
    R[tdir.$e]=$(median < "$W/tput.$e.direct")
    log "$e: throughput via 127.0.0.1 publish ${R[tpub.$e]} MiB/s, straight to $ip ${R[tdir.$e]} MiB/s"
    rm_f "$e" "$c"
}

bench_manyports() { # engine (shibafu only: 1000 publishes are 1000 docker-proxy processes)
    local e=$1 i t0 t1 big kind ids=()
    for kind in none many; do
        if [[ $kind == many ]]; then
            big=$("cli_$e" run -d --network benchnet -p 20000-20999:20000-20999 busybox sleep 600)
        fi
        "cli_$e" rm -f "$("cli_$e" run -d --network benchnet -p 19999:80 busybox sleep 600)" >/dev/null # warm-up
        # the previous phase's removals finish in the background (veths,
        # dirs): let them, so neither case is timed against the other's teardown
        sleep 1
        : > "$W/ports.$e.$kind"
        ids=()
        for ((i = 0; i < runs; i++)); do
            t0=$(now)
            ids+=("$("cli_$e" run -d --network benchnet -p $((19000 + i)):80 busybox sleep 600)")
            t1=$(now)
            echo $((t1 - t0)) >> "$W/ports.$e.$kind"
        done
        rm_f "$e" "${ids[@]}"
        R[ports.$e.$kind]=$(median < "$W/ports.$e.$kind")
        log "$e: run -d -p with $([[ $kind == many ]] && echo 1000 || echo no) other ports published: median $(ms "${R[ports.$e.$kind]}") ms ($(stats "$W/ports.$e.$kind"))"
    done
    rm_f "$e" "$big"
}

# ------------------------------------------------------------------ main
log "work dir $W"
if needs_image; then
    "$repo/tests/images/make-busybox-rootfs.sh" "$W/img" >/dev/null
    # /bin/sink for the throughput test (see the header)
    mkdir -p "$W/sink/bin"
    cat > "$W/sink.c" <<'SINK'
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static char buf[1 << 20];
int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 5001, one = 1;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 16) < 0) { perror("sink"); return 1; }
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        while (read(c, buf, sizeof buf) > 0) {}
        close(c);
    }
}
SINK
    gcc -static -O2 -o "$W/sink/bin/sink" "$W/sink.c"
    tar --numeric-owner --owner=0 --group=0 -rf "$W/img/busybox.tar" -C "$W/sink" ./bin/sink
fi
for e in shibafu docker podman; do
    has "$e" || continue
    log "starting $e"
    "start_$e"
    needs_image || continue
    import_image "$e"
    "cli_$e" network create benchnet >/dev/null
done
settle
if wants netcreate; then for e in shibafu docker podman; do has "$e" && bench_netcreate "$e"; done; fi
if wants single; then for e in shibafu docker podman; do has "$e" && bench_single "$e"; done; fi
if wants concurrent; then for e in shibafu docker podman; do has "$e" && bench_concurrent "$e"; done; fi
if wants tput; then for e in shibafu docker; do has "$e" && bench_tput "$e"; done; fi
if wants manyports && has shibafu; then bench_manyports shibafu; fi

# ------------------------------------------------------------------ report
cell() { [[ -n $1 ]] && echo "$1" || echo "-"; }
at_most() { [[ $1 == "-" ]] && { echo "n/a"; return; }; awk -v v="${1%x}" -v g="$2" 'BEGIN { print (v <= g) ? "MET" : "MISSED" }'; }
at_least() { [[ $1 == "-" ]] && { echo "n/a"; return; }; awk -v v="${1%x}" -v g="$2" 'BEGIN { print (v >= g) ? "MET" : "MISSED" }'; }

echo
printf '%-48s %12s %12s %12s\n' "measurement" "shibafu" "docker" "podman"
printf '%-48s %12s %12s %12s\n' "network create + rm, median ms" \
    "$(cell_ms "$(val netc.shibafu)")" "$(cell_ms "$(val netc.docker)")" "$(cell_ms "$(val netc.podman)")"
printf '%-48s %12s %12s %12s\n' "run --rm --network USERNET true, median ms" \
    "$(cell_ms "$(val single.shibafu)")" "$(cell_ms "$(val single.docker)")" "$(cell_ms "$(val single.podman)")"
printf '%-48s %12s %12s %12s\n' "$concurrent concurrent run -d on USERNET, wall ms" \
    "$(cell_ms "$(val conc.shibafu)")" "$(cell_ms "$(val conc.docker)")" "$(cell_ms "$(val conc.podman)")"
printf '%-48s %12s %12s %12s\n' "TCP via 127.0.0.1 publish, MiB/s" \
    "$(cell "$(val tpub.shibafu)")" "$(cell "$(val tpub.docker)")" "-"
printf '%-48s %12s %12s %12s\n' "TCP straight to the container IP, MiB/s" \
    "$(cell "$(val tdir.shibafu)")" "$(cell "$(val tdir.docker)")" "-"
printf '%-48s %12s %12s %12s\n' "run -d -p, no other ports published, median ms" \
    "$(cell_ms "$(val ports.shibafu.none)")" "-" "-"
printf '%-48s %12s %12s %12s\n' "run -d -p, 1000 ports published, median ms" \
    "$(cell_ms "$(val ports.shibafu.many)")" "-" "-"

echo
printf '%-52s %10s %10s %8s\n' "goal" "value" "target" "verdict"
g=$(ratio "$(val netc.shibafu)" "$(val netc.podman)")
printf '%-52s %10s %10s %8s\n' "network create + rm vs podman" "$g" "<= 0.15x" "$(at_most "$g" 0.15)"
g=$(ratio "$(val single.shibafu)" "$(val single.docker)")
printf '%-52s %10s %10s %8s\n' "run --rm --network USERNET true vs docker" "$g" "<= 0.1x" "$(at_most "$g" 0.1)"
g=$(ratio "$(val conc.shibafu)" "$(val conc.podman)")
printf '%-52s %10s %10s %8s\n' "$concurrent concurrent starts on USERNET vs podman" "$g" "<= 0.15x" "$(at_most "$g" 0.15)"
g=$(ratio "$(val tpub.shibafu)" "$(val tdir.shibafu)")
printf '%-52s %10s %10s %8s\n' "throughput 127.0.0.1 publish / direct (shibafu)" "$g" ">= 0.97x" "$(at_least "$g" 0.97)"
g=$(ratio "$(val tpub.docker)" "$(val tdir.docker)")
printf '%-52s %10s %10s %8s\n' "throughput 127.0.0.1 publish / direct (docker)" "$g" "(ref)" "-"
g=$(ratio "$(val ports.shibafu.many)" "$(val ports.shibafu.none)")
printf '%-52s %10s %10s %8s\n' "create+start with 1000 ports published vs none" "$g" "<= 1.2x" "$(at_most "$g" 1.2)"
