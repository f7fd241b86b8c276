#!/usr/bin/env bash
# Build a tiny rootfs tarball from Debian's static busybox (apt busybox-static),
# used as `busybox:latest` by the integration tests and benchmarks. No registry
# is reachable on these machines, so images only ever come from `import`.
#
# usage: make-busybox-rootfs.sh [OUT_DIR]   (default: $OUT or ./out)
# writes OUT_DIR/busybox.tar and prints its path.
set -euo pipefail

out_dir=${1:-${OUT:-./out}}
busybox=${BUSYBOX:-/bin/busybox}

if ! file_out=$(LC_ALL=C file -L "$busybox" 2>/dev/null) || [[ $file_out != *"statically linked"* ]]; then
    # `file` may be missing; fall back to checking that it is not dynamically linked.
    if command -v ldd >/dev/null && ldd "$busybox" 2>&1 | grep -q '=>'; then
        echo "error: $busybox is dynamically linked; install busybox-static" >&2
        exit 1
    fi
    [[ -x $busybox ]] || { echo "error: $busybox not found; apt-get install busybox-static" >&2; exit 1; }
fi
if [[ $(id -u) != 0 ]]; then
    echo "error: run as root (the tarball records uid 1000 for /home/app)" >&2
    exit 1
fi

mkdir -p "$out_dir"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

install -d -m 0755 "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,dev,proc,sys,var,run,mnt,data}
install -d -m 1777 "$root/tmp" "$root/var/tmp"
install -d -m 0700 "$root/root"
install -d -m 0755 -o 1000 -g 1000 "$root/home/app"
install -m 0755 "$busybox" "$root/bin/busybox"

# Every applet this busybox has, as a symlink in /bin (sh, ls, ps, wget, nc, httpd, ...).
"$root/bin/busybox" --list | while read -r applet; do
    [[ $applet == busybox ]] && continue
    ln -sf busybox "$root/bin/$applet"
done

cat > "$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$root/etc/group" <<'G'
root:x:0:
daemon:x:1:
wheel:x:10:app
app:x:1000:
nogroup:x:65534:
G
chmod 0644 "$root/etc/passwd" "$root/etc/group"
: > "$root/etc/hosts"
: > "$root/etc/resolv.conf"
echo busybox > "$root/etc/hostname"

# A script that is NOT executable: `docker run busybox /notexec.sh` must exit 126.
printf '#!/bin/sh\necho should-not-run\n' > "$root/notexec.sh"
chmod 0644 "$root/notexec.sh"
# A marker file so tests can check they really run this image.
echo "shibafu-test-image" > "$root/etc/shibafu-test-image"

tar --numeric-owner --sort=name -C "$root" -cf "$out_dir/busybox.tar" .
echo "$out_dir/busybox.tar"
