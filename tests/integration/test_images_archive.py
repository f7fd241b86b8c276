"""docker save / docker load (issue 9, item 6 and the archive cases of item 9).

Archives to load are made without the engine under test: skopeo writes
`docker-archive:` (Docker <= 24 style: <id>/layer.tar, manifest.json,
repositories) and `oci-archive:` (a plain OCI layout) from the OCI layouts of
tests/images/make-oci-image.py; a Docker 25+ style archive (OCI layout +
manifest.json + repositories, names in index.json annotations) is assembled
here from the same layout. Each loaded image is run to read a file of every
layer and check the whiteouts.

Check against Docker itself (dockerd 20.10 writes and reads only the <= 24
format; shibafu-only cases are skipped):
  SHIBAFU_BIN=tests/images/dockerd-as-shibafu.sh SHIBAFU_IMAGES_PEER=1 \
      python3 -m pytest tests/integration/test_images_archive.py
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from helpers import (FIXTURE_CHECK, fixture_check_output, image_inspect, image_refs, image_tools_missing,
                     make_oci_image, uniq)

PEER = bool(os.environ.get("SHIBAFU_IMAGES_PEER"))
shibafu_only = pytest.mark.skipif(PEER, reason="shibafu behaviour the Docker peer (20.10) does not have")


@pytest.fixture(scope="module", autouse=True)
def _tools(daemon):
    missing = image_tools_missing()
    if missing:
        pytest.fail(f"the image tests need: apt-get install {' '.join(missing)}", pytrace=False)
    # A binary from before issue 9 has no route for save at all.
    st, _, body = daemon.api("GET", "/images/get?names=busybox:latest", timeout=60)
    if st == 404 and b"page not found" in body:
        pytest.skip("this shibafu build has no docker save (GET /images/get: page not found)")


def skopeo(*args):
    r = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"skopeo {' '.join(args)}: {r.stderr}"


def docker25_archive(layout: Path, tag: str, info: dict, names: list[str], out: Path):
    """A Docker 25+ `docker save` archive of one image of `layout`: oci-layout,
    index.json (io.containerd.image.name + org.opencontainers.image.ref.name),
    blobs/sha256/*, manifest.json, repositories."""
    m = info["manifests"]["linux/amd64"]
    blobs = [m["digest"], m["config"]] + [l["digest"] for l in m["layers"]]
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m["digest"], "size": m["size"],
         "annotations": {"io.containerd.image.name": f"docker.io/{n}" if n.count("/") < 2 else n,
                         "org.opencontainers.image.ref.name": n.rsplit(":", 1)[1]}} for n in names]}
    manifest = [{"Config": "blobs/sha256/" + m["config"].split(":")[1], "RepoTags": names,
                 "Layers": ["blobs/sha256/" + l["digest"].split(":")[1] for l in m["layers"]]}]
    repos: dict[str, dict] = {}
    for n in names:
        repo, t = n.rsplit(":", 1)
        repos.setdefault(repo, {})[t] = m["layers"][-1]["diff_id"].split(":")[1]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        def add(name, data: bytes):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for d in dict.fromkeys(blobs):
            add("blobs/sha256/" + d.split(":")[1], (layout / "blobs/sha256" / d.split(":")[1]).read_bytes())
        add("manifest.json", json.dumps(manifest).encode())
        add("repositories", json.dumps(repos).encode())


def merge_docker_archives(parts: list[Path], out: Path):
    """Several skopeo docker-archives as one archive (manifest.json entries
    and repositories merged), as `docker save a b` writes them."""
    manifest, repos, seen = [], {}, set()
    with tarfile.open(out, "w") as dst:
        for p in parts:
            with tarfile.open(p) as src:
                for ti in src.getmembers():
                    if ti.name in ("manifest.json", "repositories"):
                        data = json.load(src.extractfile(ti))
                        if ti.name == "manifest.json":
                            manifest += data
                        else:
                            for k, v in data.items():
                                repos.setdefault(k, {}).update(v)
                        continue
                    if ti.name in seen:
                        continue
                    seen.add(ti.name)
                    dst.addfile(ti, src.extractfile(ti) if ti.isfile() else None)
        for name, obj in (("manifest.json", manifest), ("repositories", repos)):
            data = json.dumps(obj).encode()
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            dst.addfile(ti, io.BytesIO(data))


class Archives:
    def __init__(self, work: Path):
        self.work = work
        self.layout = work / "layout"
        self.tag = uniq("arc").replace("-", "")
        self.info: dict[str, dict] = {}

    def image(self, key: str, **opts) -> dict:
        name = f"{key}-{self.tag}"
        info = make_oci_image(self.layout, key, name=name, **opts)
        info["name"] = name
        info["ref"] = f"arc/{key}-{self.tag}:v1"
        info["host"] = info["manifests"]["linux/amd64"]
        self.info[key] = info
        return info

    def docker_archive(self, key: str, ref: str | None = None) -> Path:
        out = self.work / f"{key}.docker.tar"
        if not out.exists():
            skopeo("copy", "-q", f"oci:{self.layout}:{key}", f"docker-archive:{out}:{ref or self.info[key]['ref']}")
        return out


@pytest.fixture(scope="module")
def arcs(tmp_path_factory):
    a = Archives(tmp_path_factory.mktemp("archives"))
    for key in ("d24", "d25", "oci", "gz", "zst", "m1", "m2", "rt", "rt2", "pipe", "cli"):
        a.image(key)
    a.image("bad", layers="base,files,whiteout,random:2", seed=a.tag)
    return a


def load(docker, path: Path | None = None, data: bytes | None = None, timeout=120):
    if data is not None:
        return docker("load", input=data, text=False, timeout=timeout)
    return docker("load", "-i", str(path), timeout=timeout)


def out_text(r) -> str:
    return r.stdout.decode() if isinstance(r.stdout, bytes) else r.stdout


def err_text(r) -> str:
    return r.stderr.decode(errors="replace") if isinstance(r.stderr, bytes) else r.stderr


def run_check(docker, ref) -> str:
    r = docker("run", "--rm", "--network", "none", ref, "sh", "-c", FIXTURE_CHECK, timeout=60)
    assert r.returncode == 0, f"docker run {ref}: {r.stderr}"
    return r.stdout


def image_ids(docker) -> set[str]:
    return set(docker("images", "-a", "-q", "--no-trunc", check=True).stdout.split())


def rmi(docker, *refs):
    docker("rmi", "-f", *refs, timeout=60)


# ------------------------------------------------------------------ load


def test_load_docker24_archive(docker, arcs):
    info = arcs.info["d24"]
    ref = info["ref"]
    try:
        r = load(docker, arcs.docker_archive("d24"))
        assert r.returncode == 0, r.stderr
        assert f"Loaded image: {ref}" in r.stdout.splitlines()
        ins = image_inspect(docker, ref)
        assert ins["Id"] == info["host"]["config"]
        assert ins["RootFS"]["Layers"] == [l["diff_id"] for l in info["host"]["layers"]]
        assert ins["RepoTags"] == [ref]
        assert run_check(docker, ref) == fixture_check_output(info["name"])
    finally:
        rmi(docker, ref)


def test_load_docker25_archive(docker, arcs):
    info = arcs.info["d25"]
    ref = info["ref"]
    path = arcs.work / "d25.tar"
    docker25_archive(arcs.layout, "d25", info, [ref], path)
    try:
        r = load(docker, path)
        assert r.returncode == 0, r.stderr
        assert f"Loaded image: {ref}" in r.stdout.splitlines()
        assert image_inspect(docker, ref)["Id"] == info["host"]["config"]
        assert run_check(docker, ref) == fixture_check_output(info["name"])
    finally:
        rmi(docker, ref)


@shibafu_only
def test_load_oci_archive(docker, arcs):
    """skopeo's oci-archive: a plain OCI layout tarball, no manifest.json; its
    only name is the ref.name annotation."""
    info = arcs.info["oci"]
    path = arcs.work / "oci.tar"
    skopeo("copy", "-q", f"oci:{arcs.layout}:oci", f"oci-archive:{path}:{info['ref']}")
    with tarfile.open(path) as tf:
        assert "manifest.json" not in tf.getnames()
    image_id = info["host"]["config"]
    try:
        r = load(docker, path)
        assert r.returncode == 0, r.stderr
        assert f"Loaded image: {info['ref']}" in r.stdout or f"Loaded image ID: {image_id}" in r.stdout, r.stdout
        ins = image_inspect(docker, image_id)
        assert ins is not None and ins["Id"] == image_id
        assert run_check(docker, image_id) == fixture_check_output(info["name"])
    finally:
        rmi(docker, info["ref"], image_id)


@pytest.mark.parametrize("comp", ["gzip", pytest.param("zstd", marks=pytest.mark.skipif(
    PEER, reason="dockerd 20.10 reads no zstd (Docker 23+ does)"))])
def test_load_compressed_archive(docker, arcs, comp):
    key = "gz" if comp == "gzip" else "zst"
    info = arcs.info[key]
    raw = arcs.docker_archive(key).read_bytes()
    if comp == "gzip":
        data = gzip.compress(raw)
    else:
        data = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    path = arcs.work / f"{key}.tar.{comp}"
    path.write_bytes(data)
    try:
        r = load(docker, path)
        assert r.returncode == 0, r.stderr
        assert f"Loaded image: {info['ref']}" in r.stdout.splitlines()
        assert run_check(docker, info["ref"]) == fixture_check_output(info["name"])
        rmi(docker, info["ref"])
        r = load(docker, data=data)  # and from stdin
        assert r.returncode == 0, err_text(r)
        assert f"Loaded image: {info['ref']}" in out_text(r).splitlines()
    finally:
        rmi(docker, info["ref"])


def test_load_several_images_in_one_archive(docker, arcs):
    a, b = arcs.info["m1"], arcs.info["m2"]
    path = arcs.work / "several.tar"
    merge_docker_archives([arcs.docker_archive("m1"), arcs.docker_archive("m2")], path)
    try:
        r = load(docker, path)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert f"Loaded image: {a['ref']}" in lines and f"Loaded image: {b['ref']}" in lines, r.stdout
        assert run_check(docker, a["ref"]) == fixture_check_output(a["name"])
        assert run_check(docker, b["ref"]) == fixture_check_output(b["name"])
    finally:
        rmi(docker, a["ref"], b["ref"])


# ------------------------------------------------------------------ save


def test_save_load_round_trip(docker, arcs, tmp_path):
    info = arcs.info["rt"]
    ref = info["ref"]
    out = tmp_path / "saved.tar"
    try:
        assert load(docker, arcs.docker_archive("rt")).returncode == 0
        before = image_inspect(docker, ref)
        r = docker("save", "-o", str(out), ref, timeout=120)
        assert r.returncode == 0, r.stderr
        with tarfile.open(out) as tf:
            names = set(tf.getnames())
            manifest = json.load(tf.extractfile("manifest.json"))
            repos = json.load(tf.extractfile("repositories"))
            if not PEER:  # Docker 25+'s format; dockerd 20.10 writes the older one
                assert {"oci-layout", "index.json", "manifest.json", "repositories"} <= names, names
                index = json.load(tf.extractfile("index.json"))
                ann = [m.get("annotations", {}) for m in index["manifests"]]
                assert any(a.get("io.containerd.image.name") == f"docker.io/{ref}" for a in ann), index
                assert any(a.get("org.opencontainers.image.ref.name") == "v1" for a in ann), index
                for ti in tf.getmembers():
                    assert ti.mtime in (0, 1767225600) or ti.name == "repositories", (ti.name, ti.mtime)
                for layer in manifest[0]["Layers"]:
                    assert layer.startswith("blobs/sha256/") and layer in names
        assert manifest[0]["RepoTags"] == [ref]
        assert ref.rsplit(":", 1)[0] in repos
        rmi(docker, ref)
        assert image_inspect(docker, ref) is None
        r = load(docker, out)
        assert r.returncode == 0, r.stderr
        assert f"Loaded image: {ref}" in r.stdout.splitlines()
        after = image_inspect(docker, ref)
        assert after["Id"] == before["Id"]
        assert after["RootFS"]["Layers"] == before["RootFS"]["Layers"]
        assert run_check(docker, ref) == fixture_check_output(info["name"])
    finally:
        rmi(docker, ref)


def test_save_several_images(docker, arcs, tmp_path):
    a, b = arcs.info["rt2"], arcs.info["m1"]
    out = tmp_path / "two.tar"
    try:
        for k in ("rt2", "m1"):
            assert load(docker, arcs.docker_archive(k)).returncode == 0
        r = docker("save", "-o", str(out), a["ref"], b["ref"], timeout=120)
        assert r.returncode == 0, r.stderr
        with tarfile.open(out) as tf:
            tags = sorted(t for m in json.load(tf.extractfile("manifest.json")) for t in m["RepoTags"])
        assert tags == sorted([a["ref"], b["ref"]])
        rmi(docker, a["ref"], b["ref"])
        r = load(docker, out)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert f"Loaded image: {a['ref']}" in lines and f"Loaded image: {b['ref']}" in lines
        assert run_check(docker, b["ref"]) == fixture_check_output(b["name"])
    finally:
        rmi(docker, a["ref"], b["ref"])


def test_save_to_stdout_piped_to_load(daemon, docker, arcs):
    info = arcs.info["pipe"]
    ref = info["ref"]
    try:
        assert load(docker, arcs.docker_archive("pipe")).returncode == 0
        saver = subprocess.Popen(["docker", "save", ref], env=daemon.env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        data, err = saver.communicate(timeout=120)
        assert saver.returncode == 0, err
        assert len(data) > 1024
        rmi(docker, ref)
        r = load(docker, data=data)  # what `docker save` wrote, on load's stdin
        assert r.returncode == 0, err_text(r)
        assert f"Loaded image: {ref}" in out_text(r).splitlines()
        # and a real pipe between the two CLIs
        p = subprocess.run(["bash", "-o", "pipefail", "-c", f"docker save {ref} | docker load"],
                           env=daemon.env(), capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert f"Loaded image: {ref}" in p.stdout.splitlines()
        assert run_check(docker, ref) == fixture_check_output(info["name"])
    finally:
        rmi(docker, ref)


@shibafu_only
def test_shibafu_save_load_cli(daemon, docker, arcs, tmp_path):
    info = arcs.info["cli"]
    ref = info["ref"]
    out = tmp_path / "cli.tar"
    try:
        r = daemon.shibafu("load", "-i", str(arcs.docker_archive("cli")), timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"Loaded image: {ref}" in r.stdout
        r = daemon.shibafu("save", "-o", str(out), ref, timeout=120)
        assert r.returncode == 0, r.stderr
        with tarfile.open(out) as tf:
            assert {"oci-layout", "index.json", "manifest.json", "repositories"} <= set(tf.getnames())
        rmi(docker, ref)
        r = daemon.shibafu("load", "-i", str(out), timeout=120)
        assert r.returncode == 0, r.stderr
        assert run_check(docker, ref) == fixture_check_output(info["name"])
    finally:
        rmi(docker, ref)


# ------------------------------------------------------------------ bad archives


def _bad_archive(arcs, kind: str, tmp_path: Path) -> bytes:
    good = arcs.docker_archive("bad").read_bytes()
    if kind == "truncated":
        # cut inside the biggest layer: its tar entry ends early
        return good[: len(good) * 2 // 3]
    if kind == "garbage":
        return b"this is not an image archive\n" * 100
    if kind == "no-manifest":
        buf = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(good)) as src, tarfile.open(fileobj=buf, mode="w") as dst:
            for ti in src.getmembers():
                # only the layer tars and the config: no manifest.json, index.json,
                # repositories, nor the legacy <id>/json that Docker <= 1.9 archives have
                if ti.isfile() and "/" not in ti.name and ti.name not in ("manifest.json", "index.json",
                                                                           "repositories"):
                    dst.addfile(ti, src.extractfile(ti))
        return buf.getvalue()
    if kind == "bad-manifest-json":
        buf = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(good)) as src, tarfile.open(fileobj=buf, mode="w") as dst:
            for ti in src.getmembers():
                if ti.name == "manifest.json":
                    data = b'[{"Config": "nope.json", "RepoTags": ["x:y"], "Layers": [}'
                    ti.size = len(data)
                    dst.addfile(ti, io.BytesIO(data))
                else:
                    dst.addfile(ti, src.extractfile(ti) if ti.isfile() else None)
        return buf.getvalue()
    if kind == "missing-layer":
        buf = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(good)) as src, tarfile.open(fileobj=buf, mode="w") as dst:
            manifest = json.load(src.extractfile("manifest.json"))
            drop = manifest[0]["Layers"][-1]
            for ti in src.getmembers():
                if ti.name != drop:
                    dst.addfile(ti, src.extractfile(ti) if ti.isfile() else None)
        return buf.getvalue()
    if kind == "truncated-gzip":
        z = gzip.compress(good)
        return z[: len(z) * 2 // 3]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "no-manifest", "bad-manifest-json", "missing-layer",
                                  "truncated-gzip"])
def test_load_bad_archive(docker, arcs, kind, tmp_path):
    info = arcs.info["bad"]
    ref = info["ref"]
    data = _bad_archive(arcs, kind, tmp_path)
    path = tmp_path / f"{kind}.tar"
    path.write_bytes(data)
    ids, refs = image_ids(docker), image_refs(docker)
    try:
        r = load(docker, path)
        assert r.returncode != 0, r.stdout
        assert r.stderr.strip(), "no error message"
        assert "Loaded image" not in r.stdout
        assert image_refs(docker) == refs
        assert image_ids(docker) == ids
        assert image_inspect(docker, ref) is None
    finally:
        rmi(docker, ref, info["host"]["config"])
    # the same archive, whole, loads
    try:
        r = load(docker, arcs.docker_archive("bad"))
        assert r.returncode == 0, r.stderr
        assert run_check(docker, ref) == fixture_check_output(info["name"])
    finally:
        rmi(docker, ref)
