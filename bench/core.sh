#!/usr/bin/env bash
# Engine-core benchmarks (issue 2, item 9): shibafu against Docker (apt docker.io)
# and Podman (apt podman), in the same run, on the same busybox image.
#
#   (a) `run --rm --network none busybox true`: median of N runs
#   (b) 20 concurrent `run -d --network none busybox sleep 600`: wall time
#   (c) `rm -f` of those 20: wall time
#   (d) RSS with 50 containers running: the daemon (shibafu daemon / dockerd +
#       containerd) and the per-container supervisor (shibafu supervise /
#       containerd-shim-runc-v2 / conmon)
#
# Every engine runs in its own private net+mount namespace with its own roots
# under one temp dir, so nothing touches the host's network or other engines;
# no container has a network (--network none), dockerd's DNS is a loopback
# address that nobody serves. Everything is removed at the end.
#
# usage: bench/core.sh [--engines shibafu,docker,podman] [--runs 20] [--concurrent 20] [--idle 50]
# env:   SHIBAFU_BIN (default target/release/shibafu)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
engines="shibafu,docker,podman"
runs=20
concurrent=20
idle=50
while (($#)); do
    case $1 in
        --engines) engines=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --concurrent) concurrent=$2; shift 2 ;;
        --idle) idle=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
((runs >= 1 && runs <= 200 && concurrent >= 1 && concurrent <= 100 && idle >= 1 && idle <= 200)) || {
    echo "error: --runs 1..200, --concurrent 1..100, --idle 1..200" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "error: run as root" >&2; exit 2; }
has() { [[ ",$engines," == *",$1,"* ]]; }

SHIBAFU_BIN=${SHIBAFU_BIN:-$repo/target/release/shibafu}
if has shibafu && [[ ! -x $SHIBAFU_BIN ]]; then
    echo "error: $SHIBAFU_BIN not found: cargo build --release, or set SHIBAFU_BIN" >&2
    exit 2
fi

# ------------------------------------------------------------------ packages
need=()
has docker && { command -v dockerd >/dev/null || need+=(docker.io); }
has podman && { command -v podman >/dev/null || need+=(podman); }
has podman && for p in runc conmon netavark; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
command -v busybox >/dev/null || need+=(busybox-static)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    # never let the package scripts start a daemon on the host
    cleanup_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; cleanup_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    ((cleanup_policy)) && rm -f /usr/sbin/policy-rc.d
fi
DOCKER_CLI=$(command -v docker)

W=$(mktemp -d /tmp/shibafu-bench.XXXXXX)
# cgroup parents the peers create (docker/, libpod_parent/): removed at the end
# if they did not exist before this run.
new_cgroup_parents=()
for c in /sys/fs/cgroup/*/; do
    for p in docker libpod_parent; do [[ -e $c$p ]] || new_cgroup_parents+=("$c$p"); done
done
declare -A HOLDER=()
SHIBAFU_PID=""
DOCKERD_PID=""

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------------ namespaces
new_holder() { # name
    unshare --net --mount --propagation private sleep infinity &
    local pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [[ $(readlink /proc/$pid/ns/net) != $(readlink /proc/self/ns/net) ]] && break
        sleep 0.02
    done
    HOLDER[$1]=$pid
    nsenter -t "$pid" -n ip link set lo up
    # a resolv.conf that names nothing reachable: no engine may forward DNS off the machine
    printf 'nameserver 127.0.0.53\n' > "$W/resolv.conf.$1"
    nsenter -t "$pid" -m mount --bind "$W/resolv.conf.$1" /etc/resolv.conf
}
in_ns() { local h=$1; shift; nsenter -t "${HOLDER[$h]}" -n -m "$@"; }

procs_matching() { # argv substring... -> pids whose cmdline contains all of them
    local pid cmd want ok
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        cmd=$({ tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null) || continue
        ok=1
        for want in "$@"; do [[ $cmd == *"$want"* ]] || { ok=0; break; }; done
        ((ok)) && echo "$pid"
    done
    return 0
}

# ------------------------------------------------------------------ engines
cli_shibafu() { "$SHIBAFU_BIN" -H "unix://$W/shibafu/shibafu.sock" "$@"; }
cli_docker() { DOCKER_HOST="unix://$W/docker/docker.sock" DOCKER_CONFIG="$W/docker/cfg" "$DOCKER_CLI" "$@"; }
cli_podman() {
    in_ns podman env CONTAINERS_CONF="$W/podman/containers.conf" \
        podman --root "$W/podman/root" --runroot "$W/podman/run" --tmpdir "$W/podman/tmp" "$@"
}

wait_sock() { # engine sock pid
    local i
    for ((i = 0; i < 600; i++)); do
        if curl -s --max-time 1 --unix-socket "$2" http://localhost/_ping 2>/dev/null | grep -q OK; then return 0; fi
        kill -0 "$3" 2>/dev/null || { log "$1 exited during start-up"; tail -n 30 "$W/$1/daemon.log" >&2; return 1; }
        sleep 0.1
    done
    log "$1 did not answer /_ping"; return 1
}

start_shibafu() {
    mkdir -p "$W/shibafu"
    new_holder shibafu
    nsenter -t "${HOLDER[shibafu]}" -n -m "$SHIBAFU_BIN" daemon --host "unix://$W/shibafu/shibafu.sock" \
        --data-root "$W/shibafu/data" --exec-root "$W/shibafu/run" > "$W/shibafu/daemon.log" 2>&1 &
    SHIBAFU_PID=$!
    wait_sock shibafu "$W/shibafu/shibafu.sock" "$SHIBAFU_PID"
}

start_docker() {
    mkdir -p "$W/docker/cfg"
    new_holder docker
    nsenter -t "${HOLDER[docker]}" -n -m dockerd --host "unix://$W/docker/docker.sock" \
        --data-root "$W/docker/data" --exec-root "$W/docker/exec" --pidfile "$W/docker/dockerd.pid" \
        --dns 127.0.0.53 > "$W/docker/daemon.log" 2>&1 &
    DOCKERD_PID=$!
    wait_sock docker "$W/docker/docker.sock" "$DOCKERD_PID"
}

start_podman() {
    mkdir -p "$W/podman"/{root,run,tmp}
    new_holder podman
    # podman's SHM locks live in /dev/shm: give it its own
    nsenter -t "${HOLDER[podman]}" -m mount -t tmpfs -o size=64m tmpfs /dev/shm
    cat > "$W/podman/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"
[network]
network_backend = "netavark"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$W/podman/events.log"
pull_policy = "never"
EOF
    cli_podman info --format '{{.Host.OCIRuntime.Name}}' >/dev/null
}

import_image() { # engine
    case $1 in
        shibafu) cli_shibafu import "$W/img/busybox.tar" busybox:latest >/dev/null ;;
        docker) cli_docker import "$W/img/busybox.tar" busybox:latest >/dev/null ;;
        podman) cli_podman import -q "$W/img/busybox.tar" busybox:latest >/dev/null ;;
    esac
}

cleanup() {
    set +e
    local e pids
    for e in shibafu docker podman; do
        has "$e" || continue
        [[ -n ${HOLDER[$e]:-} ]] || continue
        pids=$("cli_$e" ps -aq 2>/dev/null)
        [[ -n $pids ]] && rm_f "$e" $pids 2>/dev/null
    done
    [[ -n $SHIBAFU_PID ]] && kill "$SHIBAFU_PID" 2>/dev/null
    [[ -n $DOCKERD_PID ]] && kill "$DOCKERD_PID" 2>/dev/null
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$SHIBAFU_PID" 2>/dev/null || kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.1
    done
    # anything of ours still alive (supervisors, shims, conmon, containerd)
    for pid in $(procs_matching "$W"); do
        [[ $pid == "$$" ]] || kill -9 "$pid" 2>/dev/null
    done
    for e in "${!HOLDER[@]}"; do kill "${HOLDER[$e]}" 2>/dev/null; wait "${HOLDER[$e]}" 2>/dev/null; done
    for d in "${new_cgroup_parents[@]}"; do
        [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    rm -rf "$W" 2>/dev/null || { sleep 1; rm -rf "$W"; }
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ measurements
now() { echo "${EPOCHREALTIME/./}"; } # microseconds, no fork
ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A R=()

bench_single() { # engine
    local e=$1 i t0 t1
    "cli_$e" run --rm --network none busybox true >/dev/null # warm-up
    "cli_$e" run --rm --network none busybox true >/dev/null
    : > "$W/single.$e"
    for ((i = 0; i < runs; i++)); do
        t0=$(now)
        "cli_$e" run --rm --network none busybox true >/dev/null
        t1=$(now)
        echo $((t1 - t0)) >> "$W/single.$e"
    done
    R[single.$e]=$(median < "$W/single.$e")
    log "$e: run --rm true median $(ms "${R[single.$e]}") ms (min $(ms "$(sort -n "$W/single.$e" | head -1)"), max $(ms "$(sort -n "$W/single.$e" | tail -1)"))"
}

bench_concurrent() { # engine
    local e=$1 i t0 t1 fails=0 pids=()
    rm -f "$W/cid.$e".*
    t0=$(now)
    for ((i = 0; i < concurrent; i++)); do
        "cli_$e" run -d --network none busybox sleep 600 > "$W/cid.$e.$i" 2>"$W/cerr.$e.$i" &
        pids+=($!)
    done
    wait "${pids[@]}" # not a bare `wait`: the namespace holders are jobs too
    t1=$(now)
    R[conc.$e]=$((t1 - t0))
    for ((i = 0; i < concurrent; i++)); do [[ -s $W/cid.$e.$i ]] || fails=$((fails + 1)); done
    ((fails == 0)) || log "$e: $fails of $concurrent concurrent runs failed: $(cat "$W"/cerr."$e".* | sort -u | head -3)"
    log "$e: $concurrent concurrent run -d: $(ms "${R[conc.$e]}") ms"
    local ids
    ids=$(cat "$W/cid.$e".* | tr '\n' ' ')
    t0=$(now)
    rm_f "$e" $ids
    t1=$(now)
    R[rm.$e]=$((t1 - t0))
    log "$e: rm -f of $concurrent: $(ms "${R[rm.$e]}") ms"
}

# Docker's `rm -f` kills at once; Podman 4.3's waits for SIGTERM unless -t 0.
rm_f() { # engine ids...
    local e=$1
    shift
    if [[ $e == podman ]]; then cli_podman rm -f -t 0 "$@" >/dev/null; else "cli_$e" rm -f "$@" >/dev/null; fi
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
pss_kib() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
avg_kib() { # fn pids...
    local fn=$1 sum=0 n=0 p
    shift
    for p in "$@"; do sum=$((sum + $($fn "$p"))); n=$((n + 1)); done
    ((n)) && echo $((sum / n)) || echo 0
}

bench_rss() { # engine
    local e=$1 i ids=() sup=()
    for ((i = 0; i < idle; i++)); do
        ids+=("$("cli_$e" run -d --network none busybox sleep 600)")
    done
    sleep 3 # idle
    case $e in
        shibafu)
            R[drss.$e]=$(rss_kib "$SHIBAFU_PID")
            mapfile -t sup < <(procs_matching "$W/shibafu" " supervise")
            ;;
        docker)
            local cpid
            cpid=$(procs_matching "containerd" "$W/docker/exec" | while read -r p; do
                [[ $(cat "/proc/$p/comm" 2>/dev/null) == containerd ]] && echo "$p"; done | head -1) || true
            R[drss.$e]=$(( $(rss_kib "$(cat "$W/docker/dockerd.pid")") + $(rss_kib "${cpid:-0}") ))
            R[drss_detail.$e]="dockerd $(( $(rss_kib "$(cat "$W/docker/dockerd.pid")") / 1024 )) + containerd $(( $(rss_kib "${cpid:-0}") / 1024 )) MiB"
            mapfile -t sup < <(procs_matching "containerd-shim" "$W/docker")
            ;;
        podman)
            R[drss.$e]=0
            mapfile -t sup < <(procs_matching "conmon" "$W/podman")
            ;;
    esac
    R[nsup.$e]=${#sup[@]}
    R[srss.$e]=$(avg_kib rss_kib "${sup[@]}")
    R[spss.$e]=$(avg_kib pss_kib "${sup[@]}")
    log "$e: $idle containers: daemon RSS $((R[drss.$e] / 1024)) MiB; ${#sup[@]} supervisors, avg RSS $((R[srss.$e])) KiB, PSS $((R[spss.$e])) KiB"
    rm_f "$e" "${ids[@]}"
}

# ------------------------------------------------------------------ main
log "work dir $W"
"$repo/tests/images/make-busybox-rootfs.sh" "$W/img" >/dev/null
for e in shibafu docker podman; do
    has "$e" || continue
    log "starting $e"
    "start_$e"
    import_image "$e"
done
for e in shibafu docker podman; do has "$e" && bench_single "$e"; done
for e in shibafu docker podman; do has "$e" && bench_concurrent "$e"; done
for e in shibafu docker podman; do has "$e" && bench_rss "$e"; done

# ------------------------------------------------------------------ report
val() { echo "${R[$1]:-}"; }
ratio() { [[ -n $1 && -n $2 && $2 != 0 ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3fx", a / b }' || echo "-"; }
cell_ms() { [[ -n $1 ]] && ms "$1" || echo "-"; }
cell_mib() { [[ -n $1 && $1 != 0 ]] && awk -v k="$1" 'BEGIN { printf "%.2f", k / 1024 }' || echo "-"; }
verdict() { # value goal
    [[ $1 == "-" ]] && { echo "n/a"; return; }
    awk -v v="${1%x}" -v g="$2" 'BEGIN { print (v <= g) ? "met" : "MISSED" }'
}

echo
printf '%-40s %12s %12s %12s\n' "measurement" "shibafu" "docker" "podman"
printf '%-40s %12s %12s %12s\n' "run --rm --network none true, median ms" \
    "$(cell_ms "$(val single.shibafu)")" "$(cell_ms "$(val single.docker)")" "$(cell_ms "$(val single.podman)")"
printf '%-40s %12s %12s %12s\n' "$concurrent concurrent run -d, wall ms" \
    "$(cell_ms "$(val conc.shibafu)")" "$(cell_ms "$(val conc.docker)")" "$(cell_ms "$(val conc.podman)")"
printf '%-40s %12s %12s %12s\n' "rm -f of $concurrent, wall ms" \
    "$(cell_ms "$(val rm.shibafu)")" "$(cell_ms "$(val rm.docker)")" "$(cell_ms "$(val rm.podman)")"
printf '%-40s %12s %12s %12s\n' "daemon RSS with $idle running, MiB" \
    "$(cell_mib "$(val drss.shibafu)")" "$(cell_mib "$(val drss.docker)")" "(no daemon)"
printf '%-40s %12s %12s %12s\n' "supervisor RSS per container, MiB" \
    "$(cell_mib "$(val srss.shibafu)")" "$(cell_mib "$(val srss.docker)")" "$(cell_mib "$(val srss.podman)")"
printf '%-40s %12s %12s %12s\n' "supervisor PSS per container, MiB" \
    "$(cell_mib "$(val spss.shibafu)")" "$(cell_mib "$(val spss.docker)")" "$(cell_mib "$(val spss.podman)")"
[[ -n ${R[drss_detail.docker]:-} ]] && echo "(docker daemon = ${R[drss_detail.docker]}; supervisors: shibafu supervise / containerd-shim-runc-v2 / conmon)"

echo
printf '%-44s %12s %10s %8s\n' "goal" "value" "target" "verdict"
r1=$(ratio "$(val single.shibafu)" "$(val single.docker)")
printf '%-44s %12s %10s %8s\n' "single run vs docker median" "$r1" "<= 0.15x" "$(verdict "$r1" 0.15)"
r2=$(ratio "$(val conc.shibafu)" "$(val conc.podman)")
printf '%-44s %12s %10s %8s\n' "$concurrent concurrent starts vs podman" "$r2" "<= 0.15x" "$(verdict "$r2" 0.15)"
s=$(cell_mib "$(val srss.shibafu)")
printf '%-44s %12s %10s %8s\n' "supervisor RSS, MiB" "$s" "<= 1" "$(verdict "$s" 1)"
d=$(cell_mib "$(val drss.shibafu)")
printf '%-44s %12s %10s %8s\n' "daemon RSS with $idle containers, MiB" "$d" "<= 30" "$(verdict "$d" 30)"
