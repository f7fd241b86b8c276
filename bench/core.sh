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
. "$here/lib.sh"
bench_check
want_engine_pkgs
install_pkgs
bench_workdir shibafu-bench

# ------------------------------------------------------------------ measurements
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
settle
for e in shibafu docker podman; do has "$e" && bench_single "$e"; done
for e in shibafu docker podman; do has "$e" && bench_concurrent "$e"; done
for e in shibafu docker podman; do has "$e" && bench_rss "$e"; done

# ------------------------------------------------------------------ report
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
