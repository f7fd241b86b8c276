#!/usr/bin/env bash
# Embedded DNS benchmark (issue 4, item 10): dnsperf against shibafu's embedded
# DNS (served by the real `shibafu daemon`), against aardvark-dns (Podman 4.3 +
# netavark, apt podman aardvark-dns netavark) and against Docker's embedded DNS
# (dockerd 20.10, apt docker.io), in one run, with the same query files and the
# same core pinning, for
#   (a) local names with 10 containers registered     (query file: c0..c9)
#   (b) local names with 1000 containers registered   (query file: c0..c999)
#   (c) cached forwarded names                        (query file: h0..h999.fwd.test, 10 registered)
# Goal: >= 3x the better anchor's q/s with 0 lost and a lower p99.
#
# How:
# - Each engine runs in its own private net+mount namespace (bench/lib.sh), one
#   user network `benchnet` 10.123.0.0/20 (gateway 10.123.0.1), real
#   `run -d --name cN --network benchnet busybox sleep` containers (started
#   --batch at a time). Engines are measured one after another and each is torn
#   down before the next starts (1000 containers of each at once would not fit
#   this machine's pid_max).
# - dnsperf queries as a container does: it runs in c0's network namespace
#   (nsenter -t PID_OF_C0 -n), so the server sees c0's address. Targets:
#   shibafu and aardvark-dns on the network's gateway 10.123.0.1:53, Docker on
#   127.0.0.11:53 inside the container's netns (iptables DNAT to dockerd).
# - Pinning: the server on --server-cpu, every thread of it (`taskset -a -p`):
#   for shibafu the WHOLE daemon (API, engine and DNS share it), for Docker the
#   whole dockerd, for Podman the aardvark-dns process; dnsperf and the fake
#   upstream on --client-cpu. Only while measuring; restored afterwards.
#   --nice N runs the server (all threads), dnsperf and the upstream at that
#   nice level while measuring (default 0; other jobs share these cores).
# - Upstream of (c): a fake on 127.0.0.77:53 inside the engine's namespace (a
#   few lines of C built here with gcc -static: A records with TTL 600 for every
#   name under fwd.test, REFUSED elsewhere; recvmmsg/sendmmsg, so it is never the
#   bottleneck); every engine finds it the same way, as the only nameserver of
#   its namespace's /etc/resolv.conf (dockerd gets no --dns, so its embedded DNS
#   forwards from the host side as with a host-local resolver). It shares the
#   client core with dnsperf: the anchors, which do not cache, make it work for
#   every query; shibafu answers (c) from its cache. Nothing leaves the machine.
# - Each measurement: a 2 s warm-up (fills shibafu's cache in (c)), then
#   `dnsperf -l SECONDS -c 4 -q OUTSTANDING -v` (--outstanding, default 100:
#   dnsperf's own default; the same for every engine). q/s, lost
#   and the mean latency are dnsperf's; dnsperf 2.10 has no latency histogram,
#   so p99 is computed from the per-response latencies `-v` prints (timed-out
#   queries are "lost", not latencies). Every answer must be NOERROR (the names
#   all exist); others are counted and shown. Also shown: the server's CPU
#   (from /proc/PID/stat) and q/s per fully used server core, dnsperf's CPU, and
#   the 1-minute load average when the run started.
# Not part of .ci/run (timing on a shared 2-core machine is too noisy to gate on).
#
# usage: bench/dns.sh [--engines shibafu,docker,podman] [--seconds 10] [--many 1000]
#                     [--batch 25] [--quick] [--server-cpu 0] [--client-cpu 1] [--nice 0]
#                     [--outstanding 100] [--fifo 0]
# --fifo P (1..99) runs the server's threads, dnsperf and the fake upstream
#   under SCHED_FIFO priority P while measuring, instead of --nice: on a
#   machine shared with builds, a woken server or dnsperf then preempts them at
#   once rather than waiting out their time slice, so the numbers show the
#   servers rather than the scheduler. Applied to every engine alike; the
#   kernel's RT throttling (95%) still leaves the rest of the machine running.
#   --quick: case (b) for shibafu only (starting 1000 Docker/Podman containers takes minutes)
# env:   SHIBAFU_BIN (default target/release/shibafu)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
engines="shibafu,docker,podman"
secs=10
many=1000
batch=25
quick=0
scpu=0
ccpu=1
nice=0
outstanding=100
fifo=0
while (($#)); do
    case $1 in
        --engines) engines=$2; shift 2 ;;
        --seconds) secs=$2; shift 2 ;;
        --many) many=$2; shift 2 ;;
        --batch) batch=$2; shift 2 ;;
        --quick) quick=1; shift ;;
        --server-cpu) scpu=$2; shift 2 ;;
        --client-cpu) ccpu=$2; shift 2 ;;
        --nice) nice=$2; shift 2 ;;
        --outstanding) outstanding=$2; shift 2 ;;
        --fifo) fifo=$2; shift 2 ;;
        -h|--help) sed -n '2,50p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
for v in "$secs" "$many" "$batch" "$scpu" "$ccpu"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "error: --seconds, --many, --batch, --server-cpu, --client-cpu take numbers, not \"$v\"" >&2; exit 2; }
done
[[ $outstanding =~ ^[0-9]+$ ]] && ((outstanding >= 1 && outstanding <= 10000)) || {
    echo "error: --outstanding takes 1..10000 queries, not \"$outstanding\"" >&2; exit 2; }
[[ $fifo =~ ^[0-9]+$ ]] && ((fifo <= 99)) || {
    echo "error: --fifo takes a priority 1..99 (0: off), not \"$fifo\"" >&2; exit 2; }
((fifo == 0)) || command -v chrt >/dev/null || { echo "error: --fifo needs chrt (util-linux)" >&2; exit 2; }
[[ $nice =~ ^-?[0-9]+$ ]] || { echo "error: --nice takes a number, not \"$nice\"" >&2; exit 2; }
((secs >= 1 && secs <= 300 && many >= 11 && many <= 1000 && batch >= 1 && batch <= 100 && nice >= -20 && nice <= 19)) || {
    echo "error: --seconds 1..300, --many 11..1000 (the network's bridge takes 1024 ports), --batch 1..100, --nice -20..19" >&2; exit 2; }
ncpu=$(nproc)
((scpu < ncpu && ccpu < ncpu && scpu != ccpu)) || {
    echo "error: --server-cpu and --client-cpu must be two different CPUs below $ncpu" >&2; exit 2; }
for e in ${engines//,/ }; do
    [[ $e == shibafu || $e == docker || $e == podman ]] || { echo "error: unknown engine \"$e\" (shibafu, docker, podman)" >&2; exit 2; }
done

UPSTREAM=127.0.0.77
HOLDER_NAMESERVER=$UPSTREAM
DOCKERD_DNS=""
BENCH_NETWORKS=(benchnet)
SUBNET=10.123.0.0/20
GATEWAY=10.123.0.1
. "$here/lib.sh"
bench_check
want_engine_pkgs
has podman && want_pkg aardvark-dns
want_pkg dnsperf dnsperf
want_pkg dnsutils dig
want_pkg build-essential gcc
want_pkg jq jq
install_pkgs
bench_workdir shibafu-dnsbench

# ------------------------------------------------------------------ inputs
log "work dir $W"
"$repo/tests/images/make-busybox-rootfs.sh" "$W/img" >/dev/null
mkdir -p "$W/q" "$W/bin"
for ((i = 0; i < 10; i++)); do echo "c$i A"; done > "$W/q/local10"
for ((i = 0; i < many; i++)); do echo "c$i A"; done > "$W/q/local$many"
for ((i = 0; i < 1000; i++)); do echo "h$i.fwd.test A"; done > "$W/q/fwd"

cat > "$W/fakedns.c" <<'FAKE'
/* fakedns ADDR PORT: A (TTL 600, 192.0.2.N from a hash of the name) for every
 * name under fwd.test, NODATA for other types there, REFUSED elsewhere. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#define BATCH 64
#define BUFSZ 1500
static unsigned char in[BATCH][BUFSZ], out[BATCH][BUFSZ];
static const unsigned char zone[] = "\3fwd\4test";
static int answer(const unsigned char *q, int n, unsigned char *r) {
    if (n < 17 || (q[2] & 0x80) || (q[2] & 0x78) || q[4] || q[5] != 1) return -1;
    int p = 12, h = 0;
    while (p < n && q[p]) {
        if (q[p] & 0xc0) return -1;
        for (int i = 1; i <= q[p] && p + i < n; i++) h = h * 31 + (q[p + i] | 0x20);
        p += q[p] + 1;
    }
    if (p + 5 > n) return -1;
    int nend = p + 1, qtype = q[nend] << 8 | q[nend + 1], qend = nend + 4;
    int zl = sizeof zone; /* with the root label */
    int inzone = nend >= 12 + zl && strncasecmp((const char *)q + nend - zl, (const char *)zone, zl) == 0;
    memcpy(r, q, qend);
    r[2] = 0x84 | (q[2] & 0x01); /* QR AA, RD copied */
    r[3] = 0x80;                 /* RA */
    r[6] = r[7] = r[8] = r[9] = r[10] = r[11] = 0;
    if (!inzone) { r[3] |= 5; return qend; }
    if (qtype != 1) return qend;
    unsigned char a[] = {0xc0, 12, 0, 1, 0, 1, 0, 0, 0x02, 0x58, 0, 4, 192, 0, 2, 1 + (unsigned)h % 250};
    memcpy(r + qend, a, sizeof a);
    r[7] = 1;
    return qend + sizeof a;
}
int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: fakedns ADDR PORT\n"); return 2; }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    int s = socket(AF_INET, SOCK_DGRAM, 0), big = 4 << 20;
    if (s < 0 || inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1 || bind(s, (void *)&sa, sizeof sa) < 0) {
        perror("fakedns");
        return 1;
    }
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct mmsghdr m[BATCH], o[BATCH];
    struct iovec iv[BATCH], ov[BATCH];
    struct sockaddr_in from[BATCH];
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iv[i] = (struct iovec){in[i], BUFSZ};
            m[i] = (struct mmsghdr){.msg_hdr = {.msg_name = &from[i], .msg_namelen = sizeof from[i], .msg_iov = &iv[i], .msg_iovlen = 1}};
        }
        int got = recvmmsg(s, m, BATCH, MSG_WAITFORONE, NULL), k = 0;
        for (int i = 0; i < got; i++) {
            int len = answer(in[i], m[i].msg_len, out[k]);
            if (len < 0) continue;
            ov[k] = (struct iovec){out[k], len};
            o[k] = (struct mmsghdr){.msg_hdr = {.msg_name = &from[i], .msg_namelen = m[i].msg_hdr.msg_namelen, .msg_iov = &ov[k], .msg_iovlen = 1}};
            k++;
        }
        for (int d = 0; d < k;) {
            int r = sendmmsg(s, o + d, k - d, 0);
            if (r <= 0) break;
            d += r;
        }
    }
}
FAKE
gcc -static -O2 -o "$W/bin/fakedns" "$W/fakedns.c"

# ------------------------------------------------------------------ helpers
CASES=(local10 local$many fwd)
declare -A CASE_NAME=([local10]="local names, 10 containers" [local$many]="local names, $many containers"
    [fwd]="cached forwarded names")
declare -A CASE_Q=([local10]="$W/q/local10" [local$many]="$W/q/local$many" [fwd]="$W/q/fwd")
UPSTREAM_PID=""
CLIENT_PID=""
SERVER_ADDR=""

ctr_pid() { "cli_$1" inspect -f '{{.State.Pid}}' "$2"; }
ctr_ip() { "cli_$1" inspect "$2" | jq -r '.[0].NetworkSettings.Networks.benchnet.IPAddress'; }
# one A lookup as c0 does it: the first address, or nothing
lookup() { nsenter -t "$CLIENT_PID" -n dig +short +time=2 +tries=1 "@$SERVER_ADDR" "$1" A 2>/dev/null | grep -m1 -E '^[0-9.]+$' || true; }

server_pid() { # engine -> the process that answers DNS
    case $1 in
        shibafu) echo "$SHIBAFU_PID" ;;
        docker) echo "$DOCKERD_PID" ;;
        podman) for p in $(procs_in_netns podman); do
                [[ $(cat "/proc/$p/comm" 2>/dev/null) == aardvark-dns ]] && { echo "$p"; break; }
            done ;;
    esac
}

# Start containers c$2..c$(($3-1)) on benchnet, $batch at a time; a failed one
# is removed and tried once more. Prints how many are running at the end.
spawn() { # engine from to
    local e=$1 i j p n=0 failed=()
    local -A job=()
    for ((i = $2; i < $3; i += batch)); do
        job=()
        for ((j = i; j < i + batch && j < $3; j++)); do
            "cli_$e" run -d --name "c$j" --network benchnet busybox sleep 86400 >/dev/null 2>"$W/err.$e.$j" &
            job[$!]=$j
        done
        for p in "${!job[@]}"; do wait "$p" || failed+=("${job[$p]}"); done
    done
    for j in ${failed[@]+"${failed[@]}"}; do
        log "$e: run c$j failed ($(head -c 300 "$W/err.$e.$j")); retrying"
        rm_f "$e" "c$j" 2>/dev/null || true
        "cli_$e" run -d --name "c$j" --network benchnet busybox sleep 86400 >/dev/null 2>"$W/err.$e.$j" ||
            log "$e: run c$j failed again: $(head -c 300 "$W/err.$e.$j")"
    done
    "cli_$e" ps -q | wc -l
}

# Remove all of an engine's containers, 40 per CLI call and 5 calls at once
# (one `rm -f` of 1000 containers takes minutes).
rm_all() { # engine
    local e=$1 i done_pid ids=() active=()
    mapfile -t ids < <("cli_$e" ps -aq)
    for ((i = 0; i < ${#ids[@]}; i += 40)); do
        rm_f "$e" "${ids[@]:i:40}" 2>/dev/null &
        active+=($!)
        if ((${#active[@]} >= 5)); then
            wait -n -p done_pid "${active[@]}" || true
            local keep=() p
            for p in "${active[@]}"; do [[ $p == "$done_pid" ]] || keep+=("$p"); done
            active=("${keep[@]}")
        fi
    done
    for i in ${active[@]+"${active[@]}"}; do wait "$i" || true; done
}

# Wait until c0 resolves NAME (new containers reach the anchors' DNS a little after `run` returns).
wait_name() { # name -> 0 when it resolves within 120 s
    local t0
    t0=$(now)
    while (($(now) - t0 < 120000000)); do
        if [[ -n $(lookup "$1") ]]; then
            (($(now) - t0 < 1000000)) || log "$1 resolves after $(ms $(($(now) - t0))) ms"
            return 0
        fi
        sleep 0.5
    done
    return 1
}

TASKS_NICE=()
pin() { # pid: every thread of it on the server CPU, at $nice
    SAVED_MASK=$(taskset -p "$1" | awk '{print $NF}')
    taskset -a -p -c "$scpu" "$1" >/dev/null
    if ((nice != 0)); then
        TASKS_NICE=($(ls "/proc/$1/task"))
        renice -n "$nice" -p "${TASKS_NICE[@]}" >/dev/null
    fi
    if ((fifo)); then
        local t
        for t in /proc/"$1"/task/*; do chrt -f -p "$fifo" "${t##*/}" >/dev/null 2>&1 || true; done
    fi
}
unpin() { # pid
    taskset -a -p "$SAVED_MASK" "$1" >/dev/null 2>&1 || true
    if ((nice != 0)); then
        renice -n 0 -p $(ls "/proc/$1/task") >/dev/null 2>&1 || true
    fi
    if ((fifo)); then
        local t
        for t in /proc/"$1"/task/*; do chrt -o -p 0 "${t##*/}" >/dev/null 2>&1 || true; done
    fi
}
# The scheduling prefix of dnsperf and the fake upstream (--fifo or --nice):
# a command prefix, not a function, so `$!` is the upstream's own pid.
if ((fifo)); then SCHED=(chrt -f "$fifo"); else SCHED=(nice -n "$nice"); fi

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# The children's user+sys seconds so far, from the shell's `times`; called as
# `times > FILE; child_secs FILE`, as `times` in a command substitution would
# count the subshell's children.
child_secs() { awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] } print s }' "$1"; }

dnsperf_run() { # seconds queryfile out
    "${SCHED[@]}" taskset -c "$ccpu" nsenter -t "$CLIENT_PID" -n \
        dnsperf -s "$SERVER_ADDR" -p 53 -d "$2" -l "$1" -c 4 -q "$outstanding" -v > "$3" 2>&1
}

measure() { # engine case registered
    local e=$1 c=$2 spid out="$W/dp.$1.$2" t0 t1 k0 k1 n p99 bad
    spid=$(server_pid "$e")
    [[ -n $spid ]] || { log "$e: no DNS server process found"; return 1; }
    pin "$spid"
    dnsperf_run 2 "${CASE_Q[$c]}" "$W/warm" || true
    R[load.$e.$c]=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(cpu_ticks "$spid")
    times > "$W/times.0"
    dnsperf_run "$secs" "${CASE_Q[$c]}" "$out" || { unpin "$spid"; log "$e: dnsperf failed: $(tail -3 "$out")"; return 1; }
    times > "$W/times.1"
    t1=$(cpu_ticks "$spid")
    unpin "$spid"
    k0=$(child_secs "$W/times.0")
    k1=$(child_secs "$W/times.1")
    R[reg.$e.$c]=$3
    R[qps.$e.$c]=$(awk '/Queries per second/ { printf "%.0f", $4 }' "$out")
    R[lost.$e.$c]=$(awk '/Queries lost/ { print $3 }' "$out")
    R[mean.$e.$c]=$(awk '/Average Latency/ { printf "%.3f", $4 * 1000 }' "$out")
    bad=$(awk -v lat="$W/lat" '$1 == ">" { if ($2 == "T") next; if ($2 != "NOERROR") bad++; print $NF > lat } END { print bad + 0 }' "$out")
    R[bad.$e.$c]=$bad
    n=$(wc -l < "$W/lat")
    p99=$(LC_ALL=C sort -g "$W/lat" | awk -v k=$(((n * 99 + 99) / 100)) 'NR == k { printf "%.3f", $1 * 1000; exit }')
    R[p99.$e.$c]=$p99
    R[scpu.$e.$c]=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.2f", d / hz / s }')
    R[ccpu.$e.$c]=$(awk -v a="$k0" -v b="$k1" -v s="$secs" 'BEGIN { printf "%.2f", (b - a) / s }')
    rm -f "$W/lat" "$W/warm"
    mv "$out" "$out.done"
    log "$e: ${CASE_NAME[$c]}: ${R[qps.$e.$c]} q/s, lost ${R[lost.$e.$c]}, mean ${R[mean.$e.$c]} ms, p99 $p99 ms, server cpu ${R[scpu.$e.$c]}, dnsperf cpu ${R[ccpu.$e.$c]}, non-NOERROR $bad, load ${R[load.$e.$c]}"
    ((bad == 0)) || log "$e: answers: $(grep -m1 'Response codes' "$out.done")"
    rm -f "$out.done"
}

bench_engine() { # engine
    local e=$1 t0 n ip got
    log "starting $e"
    "start_$e"
    import_image "$e"
    # the fake upstream, in the engine's namespace, on the client CPU
    "${SCHED[@]}" taskset -c "$ccpu" nsenter -t "${HOLDER[$e]}" -n "$W/bin/fakedns" "$UPSTREAM" 53 &
    UPSTREAM_PID=$!
    sleep 0.2
    kill -0 "$UPSTREAM_PID" 2>/dev/null || { log "$e: the fake upstream did not start"; exit 1; }
    "cli_$e" network create --subnet "$SUBNET" --gateway "$GATEWAY" benchnet >/dev/null
    t0=$(now)
    n=$(spawn "$e" 0 10)
    log "$e: $n containers running ($(ms $(($(now) - t0))) ms)"
    CLIENT_PID=$(ctr_pid "$e" c0)
    if [[ $e == docker ]]; then SERVER_ADDR=127.0.0.11; else SERVER_ADDR=$GATEWAY; fi
    # the answers are right before anything is timed
    ip=$(ctr_ip "$e" c9)
    wait_name c9 || true
    got=$(lookup c9)
    if [[ $got != "$ip" ]]; then
        log "$e: c9 from c0 via $SERVER_ADDR answered \"$got\", want $ip: not measured"
        R[note.$e]="c9 did not resolve"
        stop_engine "$e"; { kill "$UPSTREAM_PID"; wait "$UPSTREAM_PID"; } 2>/dev/null || true
        return 0
    fi
    measure "$e" local10 "$n" || true
    wait_name h1.fwd.test || true
    got=$(lookup h1.fwd.test)
    if [[ $got == 192.0.2.* ]]; then
        measure "$e" fwd "$n" || true
    else
        log "$e: h1.fwd.test answered \"$got\", want 192.0.2.x from the fake upstream: (c) not measured"
        R[note.$e]="h1.fwd.test did not resolve through the fake upstream"
    fi
    if ((quick)) && [[ $e != shibafu ]]; then
        log "$e: --quick: no $many-container case"
    else
        t0=$(now)
        n=$(spawn "$e" 10 "$many")
        log "$e: $n containers running (started $((many - 10)) in $(ms $(($(now) - t0))) ms)"
        if wait_name "c$((many - 1))"; then
            measure "$e" "local$many" "$n" || true
        else
            log "$e: c$((many - 1)) never resolved: no $many-container case"
        fi
    fi
    log "stopping $e"
    t0=$(now)
    rm_all "$e"
    stop_engine "$e"
    { kill "$UPSTREAM_PID"; wait "$UPSTREAM_PID"; } 2>/dev/null || true
    log "$e: stopped ($(ms $(($(now) - t0))) ms)"
}

# ------------------------------------------------------------------ main
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for e in shibafu docker podman; do has "$e" && bench_engine "$e"; done

# ------------------------------------------------------------------ report
cell() { [[ -n $1 ]] && echo "$1" || echo "-"; }
per_core() { [[ -n $1 && -n $2 ]] && awk -v q="$1" -v c="$2" 'BEGIN { if (c > 0) printf "%.0f", q / c; else print "-" }' || echo "-"; }
label() { # engine case
    case $1 in
        shibafu) echo "shibafu (daemon)" ;;
        docker) echo "docker (dockerd)" ;;
        podman) echo "podman (aardvark-dns)" ;;
    esac
}

echo
echo "dnsperf -c 4 -l $secs ($outstanding outstanding) in c0's netns; server pinned to CPU $scpu (every thread: the whole shibafu daemon / dockerd / aardvark-dns), dnsperf + fake upstream on CPU $ccpu; $( ((fifo)) && echo "SCHED_FIFO $fifo" || echo "nice $nice")"
printf '%-24s %10s %6s %8s %8s %7s %10s %7s %6s %5s %6s\n' \
    "" "q/s" "lost" "mean ms" "p99 ms" "srv cpu" "q/s/core" "dp cpu" "load1" "ctrs" "!NOERR"
for c in "${CASES[@]}"; do
    echo "${CASE_NAME[$c]}"
    for e in shibafu docker podman; do
        has "$e" || continue
        printf '  %-22s %10s %6s %8s %8s %7s %10s %7s %6s %5s %6s\n' "$(label "$e")" \
            "$(cell "$(val qps.$e.$c)")" "$(cell "$(val lost.$e.$c)")" "$(cell "$(val mean.$e.$c)")" \
            "$(cell "$(val p99.$e.$c)")" "$(cell "$(val scpu.$e.$c)")" \
            "$(per_core "$(val qps.$e.$c)" "$(val scpu.$e.$c)")" "$(cell "$(val ccpu.$e.$c)")" \
            "$(cell "$(val load.$e.$c)")" "$(cell "$(val reg.$e.$c)")" "$(cell "$(val bad.$e.$c)")"
    done
done
for e in shibafu docker podman; do [[ -n ${R[note.$e]:-} ]] && echo "($e: ${R[note.$e]})"; done

# The better anchor for q/s is the one with more q/s; for p99 the one with the lower p99.
best() { # case key max|min -> "engine value" of the anchors
    local c=$1 k=$2 how=$3 e v be="" bv=""
    for e in docker podman; do
        v=$(val "$k.$e.$c")
        [[ -n $v ]] || continue
        if [[ -z $bv ]] || awk -v a="$v" -v b="$bv" -v h="$how" 'BEGIN { exit !((h == "max") ? a > b : a < b) }'; then
            be=$e; bv=$v
        fi
    done
    [[ -n $be ]] && echo "$be $bv"
    return 0
}

echo
printf '%-36s %-24s %-24s %5s %8s\n' "goal: >= 3x q/s, 0 lost, lower p99" "q/s vs better anchor" "p99 vs better anchor" "lost" "verdict"
for c in "${CASES[@]}"; do
    q=$(val qps.shibafu.$c); p=$(val p99.shibafu.$c); l=$(val lost.shibafu.$c)
    read -r qe qv <<<"$(best "$c" qps max)" || true
    read -r pe pv <<<"$(best "$c" p99 min)" || true
    rq="-"; rp="-"; verdict="n/a"
    [[ -n $q && -n ${qv:-} ]] && rq="$(ratio "$q" "$qv") ($qe)"
    [[ -n $p && -n ${pv:-} ]] && rp="$(ratio "$p" "$pv") ($pe)"
    if [[ -n $q && -n ${qv:-} && -n $p && -n ${pv:-} ]]; then
        verdict=$(awk -v q="$q" -v qv="$qv" -v p="$p" -v pv="$pv" -v l="$l" -v b="$(val bad.shibafu.$c)" \
            'BEGIN { print (q >= 3 * qv && l == 0 && b == 0 && p < pv) ? "MET" : "MISSED" }')
    fi
    printf '%-36s %-24s %-24s %5s %8s\n' "${CASE_NAME[$c]}" "$rq" "$rp" "$(cell "$l")" "$verdict"
    qe=""; qv=""; pe=""; pv=""
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
