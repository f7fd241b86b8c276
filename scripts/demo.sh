#!/usr/bin/env bash
# Sets up shibafu on a fresh Debian 12 machine (as root) and shows its main job:
# installs the apt packages, builds the release binary, starts the daemon in a
# private network+mount namespace with its own data root, imports a busybox
# image and runs containers through both the shibafu CLI and the unmodified
# docker CLI. Leaves the daemon running and prints how to use it and stop it.
#
# usage: bash scripts/demo.sh        (DEMO_DIR=/tmp/shibafu-demo by default)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
demo=${DEMO_DIR:-/tmp/shibafu-demo}
export DEBIAN_FRONTEND=noninteractive

[[ $(id -u) == 0 ]] || { echo "error: run as root (namespaces, cgroups, overlayfs)" >&2; exit 1; }

echo "== installing apt packages"
pkgs=(build-essential pkg-config libseccomp-dev busybox-static tini util-linux procps file nftables iproute2 curl)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "== building (cargo build --release)"
cargo build --release -q
bin=$repo/target/release/shibafu

# A previous demo's daemon and namespace holder, if any.
if [[ -f $demo/holder.pid ]]; then
    bash "$demo/stop.sh" >/dev/null 2>&1 || true
fi
mkdir -p "$demo"
sock=$demo/shibafu.sock

echo "== starting the daemon in a private net+mount namespace ($demo)"
unshare --net --mount --propagation private sleep infinity &
holder=$!
echo "$holder" >"$demo/holder.pid"
sleep 0.2
nsenter -t "$holder" -n -m -- ip link set lo up
# The daemon also serves its built-in OCI registry on 127.0.0.1:5000 (in
# its namespace): the demo pushes to it and pulls from it.
cat >"$demo/daemon.yaml" <<CFG
registry:
  serve:
    addr: 127.0.0.1:5000
    root: $demo/registry
CFG
nsenter -t "$holder" -n -m -- "$bin" daemon --host "unix://$sock" \
    --data-root "$demo/data" --exec-root "$demo/run" --config-file "$demo/daemon.yaml" \
    >"$demo/daemon.log" 2>&1 &
echo $! >"$demo/daemon.pid"
for _ in $(seq 100); do
    "$bin" -H "unix://$sock" version >/dev/null 2>&1 && break
    sleep 0.1
done
cat >"$demo/stop.sh" <<STOP
#!/usr/bin/env bash
# Stops the demo: removes its containers, the daemon and the namespace holder.
"$bin" -H "unix://$sock" ps -aq | xargs -r "$bin" -H "unix://$sock" rm -f
"$bin" -H "unix://$sock" network prune -f >/dev/null 2>&1
kill \$(cat "$demo/daemon.pid") 2>/dev/null
sleep 0.5
kill \$(cat "$demo/holder.pid") 2>/dev/null
rm -f "$demo/holder.pid" "$demo/daemon.pid"
STOP
chmod +x "$demo/stop.sh"

export SHIBAFU_HOST=unix://$sock
run() { echo "\$ $*"; "$@"; }

echo "== importing busybox (from Debian's busybox-static) as busybox:latest"
tarball=$(bash tests/images/make-busybox-rootfs.sh "$demo/image" | tail -1)
run "$bin" import "$tarball" busybox:latest
run "$bin" images

echo "== images: push to the built-in registry, remove, pull back, save and load"
run "$bin" tag busybox:latest localhost:5000/demo/busybox:1
run "$bin" push localhost:5000/demo/busybox:1
run "$bin" rmi localhost:5000/demo/busybox:1
run "$bin" pull localhost:5000/demo/busybox:1
run "$bin" images --digests
run "$bin" save -o "$demo/busybox.tar" localhost:5000/demo/busybox:1
run "$bin" load -i "$demo/busybox.tar"

echo "== running containers with the shibafu CLI"
run "$bin" run --rm busybox echo "hello from a shibafu container"
run "$bin" run -d --name demo-web --memory 64m --restart unless-stopped busybox \
    sh -c 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 1; done'
sleep 2
run "$bin" ps
run "$bin" logs --tail 2 demo-web
run "$bin" exec demo-web ps

echo "== networking: a user network, container to container, a published port"
run "$bin" network create frontend 172.21.0.0/24
run "$bin" run -d --name demo-http --network frontend -p 8080:80 busybox \
    sh -c 'mkdir -p /www && echo "hello from demo-http" > /www/index.html && httpd -f -p 80 -h /www'
run "$bin" network ls
ip=$("$bin" inspect -f '{{(index .NetworkSettings.Networks "frontend").IPAddress}}' demo-http)
run "$bin" run --rm --network frontend busybox wget -qO- "http://$ip/"
run "$bin" port demo-http
echo "\$ curl http://127.0.0.1:8080/    (from the daemon's network namespace: kernel DNAT, no proxy)"
for _ in $(seq 50); do
    nsenter -t "$holder" -n -- curl -fsS --max-time 2 http://127.0.0.1:8080/ && break
    sleep 0.1
done

echo "== the unmodified docker CLI against the same daemon"
if command -v docker >/dev/null; then
    DOCKER_HOST=unix://$sock run docker ps
    DOCKER_HOST=unix://$sock run docker run --rm busybox sh -c 'echo "hostname: $(hostname)"; id'
    DOCKER_HOST=unix://$sock run docker inspect -f '{{.State.Status}} pid={{.State.Pid}}' demo-web
fi

cat <<MSG

shibafu is running (log: $demo/daemon.log).
  export SHIBAFU_HOST=unix://$sock          # for the shibafu CLI: $bin
  export DOCKER_HOST=unix://$sock           # for the docker CLI and SDKs
Stop it with: bash $demo/stop.sh
MSG
