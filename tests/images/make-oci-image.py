#!/usr/bin/env python3
"""Build OCI image layouts from Debian's static busybox, for the image tests and
bench/images.sh (issue 9). No registry is reachable here: every image a test
pulls is made by this script and copied into a local registry with skopeo
(`skopeo copy --preserve-digests [--all] oci:DIR:TAG docker://127.0.0.1:PORT/REPO:TAG
--dest-tls-verify=false`: --preserve-digests keeps every blob byte for byte, so
uncompressed and zstd layers stay as made here; without it skopeo gzips
uncompressed layers and may substitute a gzip blob it saw before for a zstd one).
zstd layers are made with the zstd CLI (apt zstd).

Deterministic: the same arguments give the same bytes (fixed mtimes, uid/gid 0,
sorted entries, gzip with mtime 0, seeded random data).

usage: make-oci-image.py OUT_DIR [--tag TAG] [--name NAME] [--layers SPEC]
                         [--compression gzip|zstd|none] [--gzip-level N]
                         [--platforms linux/amd64,linux/arm64] [--base-extra STR]
                         [--seed N] [--busybox PATH]

  OUT_DIR      an OCI layout (created, or extended: several tags may share one
               layout, each call adds or replaces TAG in its index.json)
  --layers     comma list of layer kinds, in order (default base,files,whiteout):
                 base       busybox + applet links + /etc/passwd, /etc/group,
                            /etc/fixture-base (the --base-extra text). Identical
                            bytes for every image with the same --base-extra, so
                            images share it.
                 files      /layers/files.txt ("files NAME"), /data/doomed.txt,
                            /data/keep.txt, /opq/old.txt
                 whiteout   /layers/whiteout.txt ("whiteout NAME"),
                            /data/.wh.doomed.txt (deletes doomed.txt),
                            /opq/.wh..wh..opq (opaque: hides old.txt), /opq/new.txt
                 random:MB  /big/random-K.bin: MB MiB of random bytes (seeded by
                            --seed and K, the layer's position: images made with
                            the same --seed share it)
                 text:MB    /big/text-K.txt: MB MiB of compressible text (same)
                 marker:S   /layers/marker-K.txt containing S
  --platforms  one platform: the tag names an image manifest; several: an OCI
               image index (the arm64 entry carries the same busybox bytes and is
               never run; only its config's architecture differs)
  --name       written into the files/whiteout layers and the config labels
               (default: TAG), so differently named images differ above the base

Prints one JSON object on stdout:
  {"layout": DIR, "tag": TAG, "ref": DIGEST-of-what-the-tag-names,
   "index": DIGEST|null,
   "manifests": {"linux/amd64": {"digest", "config", "size",
                                 "layers": [{"digest", "diff_id", "size", "media_type"}]}, ...}}
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

MTIME = 1767225600  # 2026-01-01T00:00:00Z
CREATED = "2026-01-01T00:00:00Z"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
wheel:x:10:app
app:x:1000:
nogroup:x:65534:
"""


class Tar:
    """A deterministic tar stream built in memory."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.entries: list[tuple[str, tarfile.TarInfo, bytes | None]] = []

    def _info(self, name, typ, mode, uid=0, gid=0):
        ti = tarfile.TarInfo(name)
        ti.type = typ
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = MTIME
        return ti

    def dir(self, name, mode=0o755, uid=0, gid=0):
        self.entries.append((name, self._info(name, tarfile.DIRTYPE, mode, uid, gid), None))

    def file(self, name, data: bytes, mode=0o644):
        ti = self._info(name, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.entries.append((name, ti, data))

    def symlink(self, name, target):
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.entries.append((name, ti, None))

    def bytes(self) -> bytes:
        for _, ti, data in sorted(self.entries, key=lambda e: e[0]):
            self.tf.addfile(ti, io.BytesIO(data) if data is not None else None)
        self.tf.close()
        return self.buf.getvalue()


def applets(busybox: str) -> list[str]:
    r = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    return sorted(a for a in r.stdout.split() if a and a != "busybox")


def layer_base(busybox: str, extra: str) -> bytes:
    t = Tar()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "home", "dev", "proc", "sys", "var",
              "run", "mnt", "data"):
        t.dir(d)
    t.dir("root", 0o700)
    t.dir("tmp", 0o1777)
    t.dir("var/tmp", 0o1777)
    t.dir("home/app", 0o755, 1000, 1000)
    t.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    for a in applets(busybox):
        t.symlink(f"bin/{a}", "busybox")
    t.file("etc/passwd", PASSWD.encode())
    t.file("etc/group", GROUP.encode())
    t.file("etc/hosts", b"")
    t.file("etc/resolv.conf", b"")
    t.file("etc/hostname", b"busybox\n")
    t.file("etc/shibafu-test-image", b"shibafu-test-image\n")
    t.file("etc/fixture-base", (extra + "\n").encode())
    return t.bytes()


def layer_files(name: str) -> bytes:
    t = Tar()
    for d in ("layers", "data", "opq"):
        t.dir(d)
    t.file("layers/files.txt", f"files {name}\n".encode())
    t.file("data/doomed.txt", b"doomed\n")
    t.file("data/keep.txt", b"keep\n")
    t.file("opq/old.txt", b"old\n")
    return t.bytes()


def layer_whiteout(name: str) -> bytes:
    t = Tar()
    for d in ("layers", "data"):
        t.dir(d)
    t.dir("opq")
    t.file("layers/whiteout.txt", f"whiteout {name}\n".encode())
    t.file("data/.wh.doomed.txt", b"")
    t.file("opq/.wh..wh..opq", b"")
    t.file("opq/new.txt", b"new\n")
    return t.bytes()


def layer_random(mb: float, seed: str, k: int) -> bytes:
    t = Tar()
    t.dir("big")
    rnd = random.Random(hashlib.sha256(seed.encode()).digest())
    t.file(f"big/random-{k}.bin", rnd.randbytes(int(mb * 1024 * 1024)))
    return t.bytes()


def layer_text(mb: float, seed: str, k: int) -> bytes:
    t = Tar()
    t.dir("big")
    n = int(mb * 1024 * 1024)
    words = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
    rnd = random.Random(seed)
    lines, size, i = [], 0, 0
    while size < n:
        line = f"{i:09d} {seed} " + " ".join(rnd.choice(words) for _ in range(8)) + "\n"
        lines.append(line)
        size += len(line)
        i += 1
    t.file(f"big/text-{k}.txt", "".join(lines).encode()[:n])
    return t.bytes()


def layer_marker(text: str, k: int) -> bytes:
    t = Tar()
    t.dir("layers")
    t.file(f"layers/marker-{k}.txt", (text + "\n").encode())
    return t.bytes()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canon(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


class Layout:
    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        idx = root / "index.json"
        self.index = json.loads(idx.read_text()) if idx.exists() else {"schemaVersion": 2, "manifests": []}

    def put(self, data: bytes) -> str:
        d = sha(data)
        p = self.blobs / d.split(":", 1)[1]
        if not p.exists():
            tmp = p.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, p)
        return d

    def tag(self, tag: str, media_type: str, digest: str, size: int):
        ms = [m for m in self.index["manifests"]
              if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != tag]
        ms.append({"mediaType": media_type, "digest": digest, "size": size,
                   "annotations": {"org.opencontainers.image.ref.name": tag}})
        self.index["manifests"] = ms
        (self.root / "index.json").write_text(json.dumps(self.index, indent=2))


def build(args) -> dict:
    out = Path(args.out_dir)
    lay = Layout(out)
    name = args.name or args.tag
    kinds = [k.strip() for k in args.layers.split(",") if k.strip()]
    layers = []  # (tar bytes, description)
    for k, kind in enumerate(kinds):
        what, _, arg = kind.partition(":")
        if what == "base":
            tarb = layer_base(args.busybox, args.base_extra)
        elif what == "files":
            tarb = layer_files(name)
        elif what == "whiteout":
            tarb = layer_whiteout(name)
        elif what == "random":
            tarb = layer_random(float(arg), f"{args.seed}/{k}", k)
        elif what == "text":
            tarb = layer_text(float(arg), f"{args.seed}/{k}", k)
        elif what == "marker":
            tarb = layer_marker(arg, k)
        else:
            raise SystemExit(f"unknown layer kind {kind!r}")
        layers.append((tarb, kind))

    descs = []
    for tarb, kind in layers:
        diff_id = sha(tarb)
        if args.compression == "gzip":
            blob = gzip.compress(tarb, compresslevel=args.gzip_level, mtime=0)
            mt = LAYER_GZIP
        elif args.compression == "zstd":
            blob = subprocess.run(["zstd", "-q", "-c", "-3", "--no-check"], input=tarb, capture_output=True,
                                  check=True).stdout
            mt = LAYER_ZSTD
        else:
            blob, mt = tarb, LAYER_TAR
        digest = lay.put(blob)
        descs.append({"mediaType": mt, "digest": digest, "size": len(blob), "diff_id": diff_id, "kind": kind})

    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    manifests = {}
    mdescs = []
    for plat in platforms:
        parts = plat.split("/")
        os_, arch = parts[0], parts[1]
        variant = parts[2] if len(parts) > 2 else ("v8" if arch == "arm64" else None)
        config = {
            "created": CREATED,
            "architecture": arch,
            "os": os_,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["sh"],
                "Labels": {"org.shibafu.fixture": name, "org.shibafu.platform": f"{os_}/{arch}"},
            },
            "rootfs": {"type": "layers", "diff_ids": [d["diff_id"] for d in descs]},
            "history": [{"created": CREATED, "created_by": f"make-oci-image.py {d['kind']}"} for d in descs],
        }
        if variant:
            config["variant"] = variant
        cb = canon(config)
        cd = lay.put(cb)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": len(cb)},
            "layers": [{"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"]} for d in descs],
        }
        mb = canon(manifest)
        md = lay.put(mb)
        p = {"architecture": arch, "os": os_}
        if variant:
            p["variant"] = variant
        mdescs.append({"mediaType": OCI_MANIFEST, "digest": md, "size": len(mb), "platform": p})
        manifests[plat] = {
            "digest": md, "config": cd, "size": len(mb),
            "layers": [{"digest": d["digest"], "diff_id": d["diff_id"], "size": d["size"],
                        "media_type": d["mediaType"]} for d in descs],
        }
    if len(platforms) > 1:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": mdescs}
        ib = canon(index)
        idd = lay.put(ib)
        lay.tag(args.tag, OCI_INDEX, idd, len(ib))
        ref, index_digest = idd, idd
    else:
        d = mdescs[0]
        lay.tag(args.tag, OCI_MANIFEST, d["digest"], d["size"])
        ref, index_digest = d["digest"], None
    return {"layout": str(out), "tag": args.tag, "ref": ref, "index": index_digest, "manifests": manifests}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--tag", default="latest")
    ap.add_argument("--name", default="")
    ap.add_argument("--layers", default="base,files,whiteout")
    ap.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip")
    ap.add_argument("--gzip-level", type=int, default=6)
    ap.add_argument("--platforms", default="linux/amd64")
    ap.add_argument("--base-extra", default="shibafu-fixture-base")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--busybox", default=os.environ.get("BUSYBOX", "/bin/busybox"))
    args = ap.parse_args()
    if not os.access(args.busybox, os.X_OK):
        raise SystemExit(f"error: {args.busybox} not found; apt-get install busybox-static")
    json.dump(build(args), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
