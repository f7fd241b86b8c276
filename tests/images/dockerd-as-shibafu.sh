#!/usr/bin/env bash
# Stand-in for the shibafu binary that runs Docker's dockerd (apt docker.io)
# instead, to check the image tests against the peer they imitate:
#   SHIBAFU_BIN=tests/images/dockerd-as-shibafu.sh SHIBAFU_IMAGES_PEER=1 \
#       python3 -m pytest tests/integration/test_images_registry.py tests/integration/test_images_archive.py
# The test harness starts `$SHIBAFU_BIN daemon --host H --data-root D --exec-root E [flags]`
# inside its namespace holder; --registry-mirror and --insecure-registry are
# dockerd's flags too. Only `daemon` is supported (tests calling the shibafu
# CLI are skipped under SHIBAFU_IMAGES_PEER). No bridge, no iptables: the
# tests run containers with --network none.
set -euo pipefail
[[ ${1:-} == daemon ]] || { echo "dockerd-as-shibafu.sh: only 'daemon' is supported (got: $*)" >&2; exit 64; }
shift
args=()
while (($#)); do
    case $1 in
        --exec-root) args+=(--exec-root "$2" --pidfile "$2/dockerd.pid"); shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
exec dockerd "${args[@]}" --dns 127.0.0.53 --iptables=false --ip6tables=false --bridge=none
