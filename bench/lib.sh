# bench/lib.sh: the harness shared by bench/core.sh, bench/net.sh and
# bench/dns.sh (sourced, never run).
#
# Every engine (shibafu, docker, podman) runs in its own private net+mount
# namespace (a "holder": `unshare --net --mount sleep infinity`) with its own
# data/exec roots under one temp dir $W, so nothing touches the host's network
# or the other engines; the holder's /etc/resolv.conf names only
# $HOLDER_NAMESERVER, so no engine can send DNS off the machine. Everything is
# removed at exit (or earlier by stop_engine).
#
# The caller sets `repo` (the checkout) and `engines` (comma list) before
# calling anything here, and may set before bench_workdir:
#   HOLDER_NAMESERVER  the holders' only nameserver (default 127.0.0.53, served by nobody)
#   DOCKERD_DNS        dockerd --dns (default 127.0.0.53; empty: no --dns, so
#                      dockerd's embedded DNS forwards to the holder's resolv.conf)
#   BENCH_NETWORKS     networks removed from every engine at cleanup
# Typical use:
#   bench_check; want_engine_pkgs; want_pkg jq jq; install_pkgs; bench_workdir shibafu-bench
#   start_shibafu; import_image shibafu; ...

HOLDER_NAMESERVER=${HOLDER_NAMESERVER:-127.0.0.53}
DOCKERD_DNS=${DOCKERD_DNS-127.0.0.53}
BENCH_NETWORKS=(${BENCH_NETWORKS[@]+"${BENCH_NETWORKS[@]}"})
SHIBAFU_BIN=${SHIBAFU_BIN:-$repo/target/release/shibafu}
declare -A HOLDER=()
SHIBAFU_PID=""
DOCKERD_PID=""
NEED_PKGS=()
W=""

has() { [[ ",$engines," == *",$1,"* ]]; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Root, and the shibafu binary when shibafu is measured.
bench_check() {
    [[ $(id -u) == 0 ]] || { echo "error: run as root" >&2; exit 2; }
    if has shibafu && [[ ! -x $SHIBAFU_BIN ]]; then
        echo "error: $SHIBAFU_BIN not found: cargo build --release, or set SHIBAFU_BIN" >&2
        exit 2
    fi
}

# ------------------------------------------------------------------ packages
want_pkg() { # PKG [CMD]: queue PKG unless CMD is on PATH (without CMD: unless PKG is installed)
    if [[ -n ${2:-} ]]; then
        command -v "$2" >/dev/null && return 0
    else
        dpkg -s "$1" >/dev/null 2>&1 && return 0
    fi
    NEED_PKGS+=("$1")
}

want_engine_pkgs() { # what the selected engines and the busybox image need
    has docker && want_pkg docker.io dockerd
    has podman && { want_pkg podman podman; for p in runc conmon netavark; do want_pkg "$p"; done; }
    want_pkg busybox-static busybox
}

install_pkgs() {
    ((${#NEED_PKGS[@]})) || return 0
    echo "installing: ${NEED_PKGS[*]}"
    # never let the package scripts start a daemon on the host
    local cleanup_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; cleanup_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${NEED_PKGS[@]}" >/dev/null
    ((cleanup_policy)) && rm -f /usr/sbin/policy-rc.d
    return 0
}

# The work dir, the cleanup trap, and the cgroup parents the peers create
# (docker/, libpod_parent/): removed at the end if they did not exist before.
bench_workdir() { # prefix
    DOCKER_CLI=$(command -v docker)
    W=$(mktemp -d "/tmp/$1.XXXXXX")
    new_cgroup_parents=()
    local c p
    for c in /sys/fs/cgroup/*/; do
        for p in docker libpod_parent; do [[ -e $c$p ]] || new_cgroup_parents+=("$c$p"); done
    done
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# ------------------------------------------------------------------ namespaces
new_holder() { # name
    # lo and the resolv.conf are set up by the unshared process itself before it
    # says it is ready: an nsenter from outside could race the unshare and act
    # on the host's namespaces.
    printf 'nameserver %s\n' "$HOLDER_NAMESERVER" > "$W/resolv.conf.$1"
    rm -f "$W/ready.$1"
    unshare --net --mount --propagation private sh -c \
        'ip link set lo up && mount --bind "$1" /etc/resolv.conf && : > "$2" && exec sleep infinity' \
        holder "$W/resolv.conf.$1" "$W/ready.$1" &
    local pid=$!
    HOLDER[$1]=$pid
    local i
    for ((i = 0; i < 500; i++)); do
        [[ -e $W/ready.$1 ]] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    log "the namespace for $1 did not come up"
    exit 1
}
in_ns() { local h=$1; shift; nsenter -t "${HOLDER[$h]}" -n -m "$@"; }
in_net() { local h=$1; shift; nsenter -t "${HOLDER[$h]}" -n "$@"; }

procs_in_netns() { # holder name -> pids in that engine's network namespace, the holder excepted
    local ns pid
    ns=$(readlink "/proc/${HOLDER[$1]}/ns/net") || return 0
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        [[ $pid != "${HOLDER[$1]}" && $(readlink "/proc/$pid/ns/net" 2>/dev/null) == "$ns" ]] && echo "$pid"
    done
    return 0
}

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
    local dns=()
    [[ -n $DOCKERD_DNS ]] && dns=(--dns "$DOCKERD_DNS")
    nsenter -t "${HOLDER[docker]}" -n -m dockerd --host "unix://$W/docker/docker.sock" \
        --data-root "$W/docker/data" --exec-root "$W/docker/exec" --pidfile "$W/docker/dockerd.pid" \
        "${dns[@]}" > "$W/docker/daemon.log" 2>&1 &
    DOCKERD_PID=$!
    wait_sock docker "$W/docker/docker.sock" "$DOCKERD_PID"
}

start_podman() {
    mkdir -p "$W/podman"/{root,run,tmp,networks}
    new_holder podman
    # podman's SHM locks live in /dev/shm: give it its own. Rootful podman
    # shares its network configs (/etc/containers/networks, moved under $W by
    # network_config_dir) and its IPAM db and aardvark-dns config
    # (/run/containers/networks, fixed) with every podman on the host: a private
    # mount over the latter keeps concurrent runs apart.
    nsenter -t "${HOLDER[podman]}" -m mount -t tmpfs -o size=64m tmpfs /dev/shm
    mkdir -p "$W/podman/netrun"
    nsenter -t "${HOLDER[podman]}" -m sh -c \
        "mkdir -p /run/containers/networks && mount --bind '$W/podman/netrun' /run/containers/networks"
    cat > "$W/podman/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"
[network]
network_backend = "netavark"
network_config_dir = "$W/podman/networks"
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

# Docker's `rm -f` kills at once; Podman 4.3's waits for SIGTERM unless -t 0.
rm_f() { # engine ids...
    local e=$1
    shift
    (($#)) || return 0
    if [[ $e == podman ]]; then cli_podman rm -f -t 0 "$@" >/dev/null; else "cli_$e" rm -f "$@" >/dev/null; fi
}

# Stop one engine and free everything it made: its containers and networks,
# its daemon, any process still running from its dirs, its holder. Keeps going
# past errors (cleanup runs it for every engine still up).
stop_engine() { # engine
    local - # `set +e` below ends with the function
    set +e
    local e=$1 pids n pid i dpid=""
    [[ -n ${HOLDER[$e]:-} ]] || return 0
    pids=$("cli_$e" ps -aq 2>/dev/null)
    [[ -n $pids ]] && rm_f "$e" $pids 2>/dev/null
    for n in ${BENCH_NETWORKS[@]+"${BENCH_NETWORKS[@]}"}; do "cli_$e" network rm "$n" >/dev/null 2>&1; done
    case $e in
        shibafu) dpid=$SHIBAFU_PID; SHIBAFU_PID="" ;;
        docker) dpid=$DOCKERD_PID; DOCKERD_PID="" ;;
    esac
    if [[ -n $dpid ]]; then
        kill "$dpid" 2>/dev/null
        for ((i = 0; i < 100; i++)); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
    fi
    # anything of this engine's still alive (supervisors, shims, conmon,
    # containerd; aardvark-dns and the like by their namespace)
    for pid in $(procs_matching "$W/$e") $(procs_in_netns "$e"); do
        [[ $pid == "$$" ]] || kill -9 "$pid" 2>/dev/null
    done
    kill "${HOLDER[$e]}" 2>/dev/null
    wait "${HOLDER[$e]}" 2>/dev/null
    unset "HOLDER[$e]"
    return 0
}

cleanup() {
    set +e
    local e pids
    for e in shibafu docker podman; do
        has "$e" || continue
        [[ -n ${HOLDER[$e]:-} ]] || continue
        pids=$("cli_$e" ps -aq 2>/dev/null)
        [[ -n $pids ]] && rm_f "$e" $pids 2>/dev/null
        for n in ${BENCH_NETWORKS[@]+"${BENCH_NETWORKS[@]}"}; do "cli_$e" network rm "$n" >/dev/null 2>&1; done
    done
    [[ -n $SHIBAFU_PID ]] && kill "$SHIBAFU_PID" 2>/dev/null
    [[ -n $DOCKERD_PID ]] && kill "$DOCKERD_PID" 2>/dev/null
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$SHIBAFU_PID" 2>/dev/null || kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.1
    done
    # anything of ours still alive (supervisors, shims, conmon, containerd, aardvark-dns)
    for pid in $(procs_matching "$W") $(for e in "${!HOLDER[@]}"; do procs_in_netns "$e"; done); do
        [[ $pid == "$$" ]] || kill -9 "$pid" 2>/dev/null
    done
    for e in "${!HOLDER[@]}"; do kill "${HOLDER[$e]}" 2>/dev/null; wait "${HOLDER[$e]}" 2>/dev/null; done
    for d in "${new_cgroup_parents[@]}"; do
        [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    [[ -n $W ]] && { rm -rf "$W" 2>/dev/null || { sleep 1; rm -rf "$W"; }; }
}

# ------------------------------------------------------------------ measurements and report cells
now() { echo "${EPOCHREALTIME/./}"; } # microseconds, no fork
ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A R=()
val() { echo "${R[$1]:-}"; }
ratio() { [[ -n $1 && -n $2 && $2 != 0 ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3fx", a / b }' || echo "-"; }
cell_ms() { [[ -n $1 ]] && ms "$1" || echo "-"; }

# Wait (at most 15 s) until the machine is idle: the CPUs over 90% idle for a
# 0.5 s window. dockerd and containerd go on working for seconds after their
# socket appears; without this the first engine measured shares its CPUs with
# the others' start-up.
cpu_idle_total() { awk '/^cpu / { t = 0; for (f = 2; f <= NF; f++) t += $f; print $5 + $6, t }' /proc/stat; }
settle() {
    local i i0 t0 i1 t1
    for ((i = 0; i < 30; i++)); do
        read -r i0 t0 < <(cpu_idle_total)
        sleep 0.5
        read -r i1 t1 < <(cpu_idle_total)
        (((i1 - i0) * 10 >= (t1 - t0) * 9)) && return 0
    done
    log "machine still busy after 15 s; measuring anyway"
}

# ------------------------------------------------------------------ registries (bench/images.sh)
# Debian's docker-registry (distribution 2.8) inside a holder's namespaces, on
# 127.0.0.1:PORT: the engines' holders each have one, all serving the SAME
# storage directory (read-only mode, so concurrent servers never write it).
declare -A REGISTRY_PID=()

registry_config() { # file port storage [readonly]
    {
        echo "version: 0.1"
        echo "log: {level: error, accesslog: {disabled: true}}"
        echo "storage:"
        echo "  filesystem: {rootdirectory: $3}"
        echo "  maintenance:"
        echo "    uploadpurging: {enabled: false}"
        [[ ${4:-} == readonly ]] && echo "    readonly: {enabled: true}"
        echo "http: {addr: 127.0.0.1:$2, secret: shibafu-bench}"
    } > "$1"
}

wait_http() { # holder url (any HTTP answer counts)
    local i
    for ((i = 0; i < 200; i++)); do
        [[ $(in_net "$1" curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$2" 2>/dev/null) =~ ^[1-5] ]] && return 0
        sleep 0.05
    done
    log "$2 did not answer in the $1 namespace"; return 1
}

start_registry() { # holder port storage [readonly]: docker-registry in that holder's namespaces
    local h=$1 port=$2 cfg="$W/registry.$1.$2.yml"
    mkdir -p "$3"
    registry_config "$cfg" "$port" "$3" "${4:-}"
    # nsenter execs the server: $! is the registry itself
    nsenter -t "${HOLDER[$h]}" -n -m docker-registry serve "$cfg" > "$W/registry.$h.$port.log" 2>&1 &
    REGISTRY_PID[$h:$port]=$!
    wait_http "$h" "http://127.0.0.1:$port/v2/"
}

stop_registry() { # holder port
    local pid=${REGISTRY_PID[$1:$2]:-}
    [[ -n $pid ]] || return 0
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "REGISTRY_PID[$1:$2]"
    return 0
}

# Remove every image and unreferenced layer of an engine (no containers exist).
images_clean() { # engine
    local ids
    case $1 in
        podman) cli_podman rmi -a -f >/dev/null 2>&1; cli_podman image prune -a -f >/dev/null 2>&1 ;;
        *)
            ids=$("cli_$1" images -aq 2>/dev/null | sort -u)
            [[ -n $ids ]] && "cli_$1" rmi -f $ids >/dev/null 2>&1
            "cli_$1" image prune -a -f >/dev/null 2>&1
            ;;
    esac
    return 0
}

data_root_of() { # engine -> its image store
    case $1 in
        shibafu) echo "$W/shibafu/data" ;;
        docker) echo "$W/docker/data" ;;
        podman) echo "$W/podman/root" ;;
    esac
}
