#!/usr/bin/env bash
# Image benchmarks (issue 9, item 10): shibafu against Docker (apt docker.io)
# and Podman (apt podman), in the same run, from the same registry content, on
# the same image: a 4-layer image made by tests/images/make-oci-image.py
# (busybox base, R MiB of random bytes, T MiB of compressible text, a small
# layer of files; gzip), stored once in a local distribution 2.8 registry.
#
#   (a) pull wall time, median of N: every engine empty before each run
#       (rmi + prune), the runs interleaved across engines
#   (b) push of a freshly imported image (busybox + the same amounts of random
#       and text data in one layer) to an empty registry: shibafu vs dockerd
#   (c) save + load round trip of the pulled image (save -o FILE; rmi + prune;
#       load -i FILE): shibafu vs dockerd (Podman for reference)
#   (d) shibafu's registry server vs distribution 2.8: `skopeo copy` of the
#       image in (oci: -> docker://, digests preserved) and out (docker:// ->
#       dir:), each server with an empty store, same namespace; MB/s of blobs
#   (e) P images sharing a base and a random layer pulled in parallel: wall
#       time, and how many copies of the shared layer each store holds
#       (unpacked: files named random-1.bin; compressed: files with the blob's
#       sha256)
#
# Namespaces: every engine runs in its own net+mount namespace (bench/lib.sh).
# A registry must listen where the engine's 127.0.0.1 is, so each engine's
# holder gets its own docker-registry on 127.0.0.1:5000, all of them serving
# the SAME storage directory in read-only mode (filled once, before, by a
# registry in a namespace of its own). Pushes go to a fresh empty registry on
# 127.0.0.1:5001 in the pushing engine's namespace, one per run. (d) runs in
# that separate "registry" namespace on 127.0.0.1:5002. Nothing leaves the
# machine; everything is removed at the end.
#
# usage: bench/images.sh [--engines shibafu,docker,podman] [--runs 3] [--quick]
#                        [--parallel 20] [--only pull,push,saveload,registry,parallel]
#                        [--shibafu-cli docker|shibafu]
#   --quick         runs 1, a 50 MiB image (24 random + 24 text), 5 parallel pulls of 8 MiB
#   --shibafu-cli   client for shibafu's daemon: the docker CLI (default; the
#                   same client as dockerd's) or shibafu's own
# env:   SHIBAFU_BIN (default target/release/shibafu); RANDOM_MB, TEXT_MB, PAR_MB
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
engines="shibafu,docker,podman"
runs=3
quick=0
parallel=20
only="pull,push,saveload,registry,parallel"
shibafu_cli=docker
while (($#)); do
    case $1 in
        --engines) engines=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --quick) quick=1; shift ;;
        --parallel) parallel=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --shibafu-cli) shibafu_cli=$2; shift 2 ;;
        -h|--help) sed -n '2,43p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
if ((quick)); then
    runs=1
    parallel=5
    : "${RANDOM_MB:=24}" "${TEXT_MB:=24}" "${PAR_MB:=8}"
fi
RANDOM_MB=${RANDOM_MB:-96}
TEXT_MB=${TEXT_MB:-96}
PAR_MB=${PAR_MB:-32}
((runs >= 1 && runs <= 50 && parallel >= 1 && parallel <= 50)) || { echo "error: --runs 1..50, --parallel 1..50" >&2; exit 2; }
[[ $shibafu_cli == docker || $shibafu_cli == shibafu ]] || { echo "error: --shibafu-cli docker|shibafu" >&2; exit 2; }
want() { [[ ",$only," == *",$1,"* ]]; }

. "$here/lib.sh"
bench_check
want_engine_pkgs
want_pkg docker-registry docker-registry
want_pkg skopeo skopeo
want_pkg zstd zstd
want_pkg curl curl
install_pkgs
bench_workdir shibafu-bench-images

# The client each engine is driven with.
icli() { # engine args...
    local e=$1
    shift
    if [[ $e == shibafu && $shibafu_cli == docker ]]; then
        DOCKER_HOST="unix://$W/shibafu/shibafu.sock" DOCKER_CONFIG="$W/shibafu/cfg" "$DOCKER_CLI" "$@"
    else
        "cli_$e" "$@"
    fi
}
pull_cmd() { # engine ref
    if [[ $1 == podman ]]; then cli_podman pull -q --tls-verify=false "$2"; else icli "$1" pull "$2"; fi
}

REG=127.0.0.1:5000
IMG=$REG/bench/img:v1
MAKE=$repo/tests/images/make-oci-image.py

# ------------------------------------------------------------------ fixtures
log "work dir $W"
mkdir -p "$W/shibafu/cfg" "$W/registry"
log "building the images (random ${RANDOM_MB} MiB + text ${TEXT_MB} MiB; $parallel x ${PAR_MB} MiB shared)"
python3 "$MAKE" "$W/oci" --tag bench --name bench --seed bench \
    --layers "base,random:$RANDOM_MB,text:$TEXT_MB,files" > "$W/bench.json"
if want parallel; then
    # the first one builds the shared layers; the others differ only in their marker layer
    for ((i = 1; i <= parallel; i++)); do
        python3 "$MAKE" "$W/oci" --tag "p$i" --name "p$i" --seed shared --base-extra shared-base --gzip-level 1 \
            --layers "base,random:$PAR_MB,marker:p$i" > "$W/p$i.json"
    done
fi
blob_bytes=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["manifests"]["linux/amd64"]; print(sum(l["size"] for l in m["layers"]))' "$W/bench.json")
log "bench image: $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["manifests"]["linux/amd64"]; print(", ".join("%.1f MiB" % (l["size"] / 1048576) for l in m["layers"]))' "$W/bench.json") compressed"

new_holder registry
start_registry registry 5000 "$W/registry/storage"
in_ns registry skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$W/oci:bench" "docker://$IMG"
if want parallel; then
    for ((i = 1; i <= parallel; i++)); do
        in_ns registry skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$W/oci:p$i" \
            "docker://$REG/bench/p$i:v1"
    done
fi
stop_registry registry 5000
log "registry storage: $(du -sm "$W/registry/storage" | cut -f1) MiB"

if want push; then
    # the image to push: the busybox rootfs plus the same amounts of random and text data, one layer
    "$repo/tests/images/make-busybox-rootfs.sh" "$W/img" >/dev/null
    mkdir -p "$W/pushroot/big"
    python3 - "$W/pushroot/big" "$RANDOM_MB" "$TEXT_MB" <<'PY'
import random, sys
d, r, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
open(f"{d}/random.bin", "wb").write(random.Random("push").randbytes(r << 20))
words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
rnd, out, n, i = random.Random("push-text"), [], 0, 0
while n < t << 20:
    line = f"{i:09d} " + " ".join(rnd.choice(words) for _ in range(8)) + "\n"
    out.append(line); n += len(line); i += 1
open(f"{d}/text.txt", "w").write("".join(out)[: t << 20])
PY
    cp "$W/img/busybox.tar" "$W/push.tar"
    tar --numeric-owner --owner=0 --group=0 -rf "$W/push.tar" -C "$W/pushroot" ./big
    rm -rf "$W/pushroot"
fi

# ------------------------------------------------------------------ engines
for e in shibafu docker podman; do
    has "$e" || continue
    log "starting $e"
    "start_$e"
    start_registry "$e" 5000 "$W/registry/storage" readonly
done
settle

# ------------------------------------------------------------------ (a) pull
bench_pull() { # engine run
    local e=$1 t0 t1
    images_clean "$e"
    sync
    t0=$(now)
    pull_cmd "$e" "$IMG" > "$W/pull.$e.out" 2>&1 || { log "$e: pull failed: $(tail -3 "$W/pull.$e.out")"; return 0; }
    t1=$(now)
    echo $((t1 - t0)) >> "$W/pull.$e"
    log "$e: pull run $2: $(ms $((t1 - t0))) ms"
}

# ------------------------------------------------------------------ (b) push
bench_push() { # engine run
    local e=$1 t0 t1 dst=127.0.0.1:5001/bench/push:v1
    images_clean "$e"
    icli "$e" import "$W/push.tar" bench/push:v1 >/dev/null
    icli "$e" tag bench/push:v1 "$dst"
    rm -rf "$W/pushreg"
    start_registry "$e" 5001 "$W/pushreg"
    sync
    t0=$(now)
    icli "$e" push "$dst" > "$W/push.$e.out" 2>&1 || { log "$e: push failed: $(tail -3 "$W/push.$e.out")"; stop_registry "$e" 5001; return 0; }
    t1=$(now)
    stop_registry "$e" 5001
    echo $((t1 - t0)) >> "$W/push.$e"
    log "$e: push run $2: $(ms $((t1 - t0))) ms ($(du -sm "$W/pushreg" | cut -f1) MiB stored)"
    rm -rf "$W/pushreg"
}

# ------------------------------------------------------------------ (c) save + load
bench_saveload() { # engine run
    local e=$1 t0 t1 t2 t3 f="$W/save.tar"
    images_clean "$e"
    pull_cmd "$e" "$IMG" >/dev/null 2>&1 || { log "$e: pull for save failed"; return 0; }
    rm -f "$f"
    sync
    t0=$(now)
    icli "$e" save -o "$f" "$IMG" > "$W/save.$e.out" 2>&1 || { log "$e: save failed: $(tail -3 "$W/save.$e.out")"; return 0; }
    t1=$(now)
    images_clean "$e"
    sync
    t2=$(now)
    icli "$e" load -i "$f" > "$W/load.$e.out" 2>&1 || { log "$e: load failed: $(tail -3 "$W/load.$e.out")"; return 0; }
    t3=$(now)
    echo $((t1 - t0)) >> "$W/save.$e"
    echo $((t3 - t2)) >> "$W/load.$e"
    echo $((t1 - t0 + t3 - t2)) >> "$W/saveload.$e"
    log "$e: save+load run $2: $(ms $((t1 - t0))) + $(ms $((t3 - t2))) ms (archive $(du -sm "$f" | cut -f1) MiB)"
    rm -f "$f"
}

# ------------------------------------------------------------------ (d) registry servers
start_server() { # distribution|shibafu storage
    if [[ $1 == distribution ]]; then
        start_registry registry 5002 "$2"
    else
        mkdir -p "$2"
        nsenter -t "${HOLDER[registry]}" -n -m "$SHIBAFU_BIN" registry serve --addr 127.0.0.1:5002 --root "$2" \
            > "$W/shibafu-registry.log" 2>&1 &
        REGISTRY_PID[registry:5002]=$!
        wait_http registry "http://127.0.0.1:5002/v2/"
    fi
}
bench_server() { # distribution|shibafu run
    local s=$1 t0 t1 t2 st="$W/srv-store"
    rm -rf "$st" "$W/srv-out"
    start_server "$s" "$st" || { log "$s registry did not start"; return 0; }
    sync
    t0=$(now)
    in_ns registry skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$W/oci:bench" \
        "docker://127.0.0.1:5002/bench/img:v1" || { log "$s: skopeo copy in failed"; stop_registry registry 5002; return 0; }
    t1=$(now)
    in_ns registry skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:5002/bench/img:v1" "dir:$W/srv-out" \
        || { log "$s: skopeo copy out failed"; stop_registry registry 5002; return 0; }
    t2=$(now)
    stop_registry registry 5002
    echo $((t1 - t0)) >> "$W/srvin.$s"
    echo $((t2 - t1)) >> "$W/srvout.$s"
    echo $((t2 - t0)) >> "$W/srv.$s"
    log "$s registry run $2: in $(ms $((t1 - t0))) ms, out $(ms $((t2 - t1))) ms"
    rm -rf "$st" "$W/srv-out"
}

# ------------------------------------------------------------------ (e) parallel pulls
shared_blob=""
shared_layer_copies() { # engine -> "unpacked compressed"
    local root
    root=$(data_root_of "$1")
    local unpacked compressed=0 f size
    unpacked=$(find "$root" -xdev -type f -name random-1.bin 2>/dev/null | wc -l)
    size=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"]["linux/amd64"]["layers"][1]["size"])' "$W/p1.json")
    while IFS= read -r f; do
        [[ $(sha256sum "$f" | cut -d' ' -f1) == "$shared_blob" ]] && compressed=$((compressed + 1))
    done < <(find "$root" -xdev -type f -size "${size}c" 2>/dev/null)
    echo "$unpacked $compressed"
}
bench_parallel() { # engine
    local e=$1 t0 t1 i fails=0 pids=()
    images_clean "$e"
    sync
    t0=$(now)
    for ((i = 1; i <= parallel; i++)); do
        pull_cmd "$e" "$REG/bench/p$i:v1" > "$W/par.$e.$i" 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || fails=$((fails + 1)); done
    t1=$(now)
    R[par.$e]=$((t1 - t0))
    ((fails == 0)) || log "$e: $fails of $parallel parallel pulls failed: $(cat "$W"/par."$e".* | grep -i error | sort -u | head -3)"
    R[parfail.$e]=$fails
    read -r R[parunp.$e] R[parblob.$e] < <(shared_layer_copies "$e")
    log "$e: $parallel parallel pulls: $(ms "${R[par.$e]}") ms; shared layer: ${R[parunp.$e]} unpacked, ${R[parblob.$e]} compressed copies"
}

# ------------------------------------------------------------------ main
if want pull; then
    for ((r = 1; r <= runs; r++)); do
        for e in shibafu docker podman; do has "$e" && bench_pull "$e" "$r"; done
    done
fi
if want push; then
    for ((r = 1; r <= runs; r++)); do
        for e in shibafu docker; do has "$e" && bench_push "$e" "$r"; done
    done
fi
if want saveload; then
    for ((r = 1; r <= runs; r++)); do
        for e in shibafu docker podman; do has "$e" && bench_saveload "$e" "$r"; done
    done
fi
if want registry; then
    for ((r = 1; r <= runs; r++)); do
        bench_server distribution "$r"
        has shibafu && bench_server shibafu "$r"
    done
fi
if want parallel; then
    shared_blob=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"]["linux/amd64"]["layers"][1]["digest"].split(":")[1])' "$W/p1.json")
    for e in shibafu docker podman; do has "$e" && bench_parallel "$e"; done
fi

for k in "${!REGISTRY_PID[@]}"; do stop_registry "${k%%:*}" "${k##*:}"; done

# ------------------------------------------------------------------ report
med() { [[ -s $W/$1 ]] && median < "$W/$1" || echo ""; }
for k in pull push save load saveload; do
    for e in shibafu docker podman; do R[$k.$e]=$(med "$k.$e"); done
done
for k in srvin srvout srv; do
    for s in distribution shibafu; do R[$k.$s]=$(med "$k.$s"); done
done
mbs() { [[ -n $1 && $1 != 0 ]] && awk -v b="$blob_bytes" -v us="$1" 'BEGIN { printf "%.1f", b / 1048576 / (us / 1e6) }' || echo "-"; }
verdict() { # value goal le|ge
    [[ $1 == "-" ]] && { echo "n/a"; return; }
    awk -v v="${1%x}" -v g="$2" -v op="$3" 'BEGIN { ok = (op == "le") ? (v <= g) : (v >= g); print ok ? "met" : "MISSED" }'
}

echo
printf '%-44s %12s %12s %12s\n' "measurement (median of $runs)" "shibafu" "docker" "podman"
printf '%-44s %12s %12s %12s\n' "pull ${RANDOM_MB}+${TEXT_MB} MiB image, ms" \
    "$(cell_ms "$(val pull.shibafu)")" "$(cell_ms "$(val pull.docker)")" "$(cell_ms "$(val pull.podman)")"
printf '%-44s %12s %12s %12s\n' "push of an imported image, ms" \
    "$(cell_ms "$(val push.shibafu)")" "$(cell_ms "$(val push.docker)")" "-"
printf '%-44s %12s %12s %12s\n' "save -o, ms" \
    "$(cell_ms "$(val save.shibafu)")" "$(cell_ms "$(val save.docker)")" "$(cell_ms "$(val save.podman)")"
printf '%-44s %12s %12s %12s\n' "load -i, ms" \
    "$(cell_ms "$(val load.shibafu)")" "$(cell_ms "$(val load.docker)")" "$(cell_ms "$(val load.podman)")"
printf '%-44s %12s %12s %12s\n' "save + load, ms" \
    "$(cell_ms "$(val saveload.shibafu)")" "$(cell_ms "$(val saveload.docker)")" "$(cell_ms "$(val saveload.podman)")"
printf '%-44s %12s %12s %12s\n' "$parallel parallel pulls sharing layers, ms" \
    "$(cell_ms "$(val par.shibafu)")" "$(cell_ms "$(val par.docker)")" "$(cell_ms "$(val par.podman)")"
printf '%-44s %12s %12s %12s\n' "  copies of the shared layer (unpacked/blob)" \
    "${R[parunp.shibafu]:--}/${R[parblob.shibafu]:--}" "${R[parunp.docker]:--}/${R[parblob.docker]:--}" \
    "${R[parunp.podman]:--}/${R[parblob.podman]:--}"
echo
printf '%-44s %14s %14s\n' "registry server, skopeo copy (MiB/s)" "shibafu" "distribution"
printf '%-44s %14s %14s\n' "  in (oci: -> docker://)" "$(mbs "$(val srvin.shibafu)")" "$(mbs "$(val srvin.distribution)")"
printf '%-44s %14s %14s\n' "  out (docker:// -> dir:)" "$(mbs "$(val srvout.shibafu)")" "$(mbs "$(val srvout.distribution)")"
printf '%-44s %14s %14s\n' "  in + out" "$(mbs "$(val srv.shibafu)")" "$(mbs "$(val srv.distribution)")"

echo
printf '%-44s %12s %10s %8s\n' "goal" "value" "target" "verdict"
g=$(ratio "$(val pull.shibafu)" "$(val pull.docker)")
printf '%-44s %12s %10s %8s\n' "pull vs docker" "$g" "<= 0.5x" "$(verdict "$g" 0.5 le)"
g=$(ratio "$(val pull.shibafu)" "$(val pull.podman)")
printf '%-44s %12s %10s %8s\n' "pull vs podman" "$g" "<= 0.5x" "$(verdict "$g" 0.5 le)"
g=$(ratio "$(val push.shibafu)" "$(val push.docker)")
printf '%-44s %12s %10s %8s\n' "push vs docker" "$g" "<= 0.5x" "$(verdict "$g" 0.5 le)"
g=$(ratio "$(val saveload.shibafu)" "$(val saveload.docker)")
printf '%-44s %12s %10s %8s\n' "save + load vs docker" "$g" "<= 0.5x" "$(verdict "$g" 0.5 le)"
g=$(ratio "$(val srv.distribution)" "$(val srv.shibafu)")
printf '%-44s %12s %10s %8s\n' "registry throughput vs distribution" "$g" ">= 1.5x" "$(verdict "$g" 1.5 ge)"
if has shibafu && want parallel; then
    g="${R[parunp.shibafu]:-}"
    v=n/a
    [[ -n $g ]] && { ((g == 1 && ${R[parblob.shibafu]:-0} <= 1 && ${R[parfail.shibafu]:-1} == 0)) && v=met || v=MISSED; }
    printf '%-44s %12s %10s %8s\n' "$parallel parallel pulls: shared layer stored" "${g:--}x" "once" "$v"
fi
