"""`shibafu registry serve` with real clients: skopeo (copy in and out, --all of
a multi-platform index, htpasswd credentials, delete, list-tags), `shibafu
registry gc`, a kill -9 in the middle of a push, and ORAS (the Python SDK).

Each test runs its own server on 127.0.0.1:<free port> with a temp root; the
images are OCI layouts made from busybox-static by tests/images/make-oci-image.py.
Needs skopeo and htpasswd (apache2-utils); ORAS needs `pip install oras`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import REPO, shibafu_bin, wait_for

MAKE_IMAGE = REPO / "tests/images/make-oci-image.py"

pytestmark = [
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed (apt skopeo)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the image fixtures need root"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `shibafu registry serve` process."""

    def __init__(self, root: Path, htpasswd: Path | None = None):
        self.root = root
        self.htpasswd = htpasswd
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = root.parent / f"registry-{self.port}.log"

    def start(self):
        cmd = [shibafu_bin(), "registry", "serve", "--addr", self.addr, "--root", str(self.root)]
        if self.htpasswd:
            cmd += ["--htpasswd", str(self.htpasswd)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))

        def up():
            assert self.proc.poll() is None, f"registry exited {self.proc.returncode}: {self.log.read_text()}"
            try:
                urllib.request.urlopen(f"http://{self.addr}/v2/", timeout=2)
                return True
            except urllib.error.HTTPError as e:
                return e.code == 401
            except OSError:
                return False

        wait_for(up, timeout=30, what="the registry to answer /v2/")
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def ref(self, repo: str) -> str:
        return f"docker://{self.addr}/{repo}"


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "root").start()
    yield s
    s.stop()
    assert s.proc.returncode == 0, f"registry did not shut down cleanly: {s.log.read_text()}"


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> tuple[Path, dict]:
    """One OCI layout: v1 and v2 share the base layer; `multi` is a 2-platform index;
    `big` has a 48 MiB random layer (for the kill -9 test)."""
    out = tmp_path_factory.mktemp("oci") / "layout"
    info = {}
    for args in (["--tag", "v1", "--layers", "base,files"],
                 ["--tag", "v2", "--layers", "base,marker:two"],
                 ["--tag", "multi", "--layers", "base,files", "--platforms", "linux/amd64,linux/arm64"],
                 ["--tag", "big", "--layers", "base,random:48", "--compression", "none"]):
        r = subprocess.run([sys.executable, str(MAKE_IMAGE), str(out), *args],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        info[d["tag"]] = d
    return out, info


def skopeo(*args, timeout=300, check=True):
    r = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"skopeo {' '.join(args)} failed: {r.stderr}"
    return r


def copy_in(layout_dir: Path, tag: str, dest: str, *extra):
    return skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", *extra,
                  f"oci:{layout_dir}:{tag}", dest)


def inspect_raw(ref: str, *extra) -> tuple[bytes, str]:
    r = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", *extra, ref],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout, "sha256:" + hashlib.sha256(r.stdout).hexdigest()


def blob_files(root: Path) -> dict[str, Path]:
    return {f"sha256:{p.name}": p for p in (root / "blobs/sha256").glob("*/*") if not p.name.startswith(".")}


def layout_digest(layout_dir: Path, tag: str) -> str:
    idx = json.loads((layout_dir / "index.json").read_text())
    for m in idx["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return m["digest"]
    raise AssertionError(f"{tag} not in {layout_dir}/index.json")


def test_skopeo_copy_in_and_out(server, layout, tmp_path):
    src, info = layout
    copy_in(src, "v1", server.ref("library/busybox:v1"))
    _, digest = inspect_raw(server.ref("library/busybox:v1"))
    assert digest == info["v1"]["ref"]
    r = skopeo("inspect", "--tls-verify=false", server.ref("library/busybox:v1"))
    assert json.loads(r.stdout)["Digest"] == info["v1"]["ref"]
    out = tmp_path / "out"
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false",
           server.ref("library/busybox:v1"), f"oci:{out}:v1")
    assert layout_digest(out, "v1") == info["v1"]["ref"]
    for layer in info["v1"]["manifests"]["linux/amd64"]["layers"]:
        data = (out / "blobs/sha256" / layer["digest"].split(":")[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
    # Every stored blob holds exactly the content its name says.
    for d, p in blob_files(server.root).items():
        assert "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() == d


def test_copy_all_of_an_index(server, layout, tmp_path):
    src, info = layout
    copy_in(src, "multi", server.ref("multi:latest"), "--all")
    raw, digest = inspect_raw(server.ref("multi:latest"))
    assert digest == info["multi"]["ref"] == info["multi"]["index"]
    index = json.loads(raw)
    plats = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"])
    assert plats == ["linux/amd64", "linux/arm64"]
    for m in index["manifests"]:
        _, d = inspect_raw(server.ref(f"multi@{m['digest']}"))
        assert d == m["digest"]
    out = tmp_path / "out"
    skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false",
           server.ref("multi:latest"), f"oci:{out}:multi")
    assert layout_digest(out, "multi") == info["multi"]["index"]


def test_htpasswd_credentials(layout, tmp_path):
    src, info = layout
    hp = tmp_path / "htpasswd"
    r = subprocess.run(["htpasswd", "-Bbc", str(hp), "alice", "s3cret"], capture_output=True, text=True)
    if r.returncode != 0 and shutil.which("htpasswd") is None:
        pytest.skip("htpasswd not installed (apt apache2-utils)")
    assert r.returncode == 0, r.stderr
    s = Server(tmp_path / "root", htpasswd=hp).start()
    try:
        dest = s.ref("private/busybox:v1")
        r = skopeo("copy", "--dest-tls-verify=false", f"oci:{src}:v1", dest, check=False)
        assert r.returncode != 0
        assert "unauthorized" in r.stderr.lower() or "authentication required" in r.stderr.lower(), r.stderr
        r = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "alice:wrong",
                   f"oci:{src}:v1", dest, check=False)
        assert r.returncode != 0
        copy_in(src, "v1", dest, "--dest-creds", "alice:s3cret")
        _, digest = inspect_raw(dest, "--creds", "alice:s3cret")
        assert digest == info["v1"]["ref"]
        r = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", dest],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0, "anonymous pull must be refused"
        r = skopeo("list-tags", "--tls-verify=false", "--creds", "alice:s3cret", s.ref("private/busybox"))
        assert json.loads(r.stdout)["Tags"] == ["v1"]
    finally:
        s.stop()


def test_delete_list_tags_and_gc(server, layout, tmp_path):
    src, info = layout
    for tag in ("v1", "v2"):
        copy_in(src, tag, server.ref(f"gc/busybox:{tag}"))
    r = skopeo("list-tags", "--tls-verify=false", server.ref("gc/busybox"))
    assert sorted(json.loads(r.stdout)["Tags"]) == ["v1", "v2"]

    m1 = info["v1"]["manifests"]["linux/amd64"]
    m2 = info["v2"]["manifests"]["linux/amd64"]
    keep = {m1["digest"], m1["config"], *(l["digest"] for l in m1["layers"])}
    gone = {m2["digest"], m2["config"], *(l["digest"] for l in m2["layers"])} - keep
    assert gone and len(keep & {l["digest"] for l in m2["layers"]}) == 1  # the shared base

    skopeo("delete", "--tls-verify=false", server.ref("gc/busybox:v2"))
    r = skopeo("list-tags", "--tls-verify=false", server.ref("gc/busybox"))
    assert json.loads(r.stdout)["Tags"] == ["v1"]
    r = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", server.ref("gc/busybox:v2")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0

    # The default grace period keeps just-pushed blobs.
    gc = [shibafu_bin(), "registry", "gc", "--root", str(server.root)]
    r = subprocess.run(gc, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert gone <= set(blob_files(server.root))
    r = subprocess.run(gc + ["--grace-period", "0", "--dry-run"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert gone <= set(blob_files(server.root))
    assert all(f"would delete blob {d}" in r.stdout for d in gone), r.stdout
    # While the server runs.
    r = subprocess.run(gc + ["--grace-period", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    present = set(blob_files(server.root))
    assert not (gone & present), f"not collected: {gone & present}\n{r.stdout}"
    assert keep <= present, f"collected too much: {keep - present}"
    out = tmp_path / "out"
    skopeo("copy", "--src-tls-verify=false", server.ref("gc/busybox:v1"), f"oci:{out}:v1")
    # v2 can be pushed again afterwards.
    copy_in(src, "v2", server.ref("gc/busybox:v2"))
    _, digest = inspect_raw(server.ref("gc/busybox:v2"))
    assert digest == info["v2"]["ref"]


def test_kill_9_during_upload_then_push_again(layout, tmp_path):
    src, info = layout
    s = Server(tmp_path / "root").start()
    dest = s.ref("crash/big:latest")
    push = subprocess.Popen(["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false",
                             f"oci:{src}:big", dest],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    uploads = s.root / "uploads"

    def uploading():
        return any(p.stat().st_size > (4 << 20) for p in uploads.glob("*/data"))

    try:
        wait_for(uploading, timeout=120, interval=0.02, what="an upload in progress")
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait(timeout=10)
        assert push.wait(timeout=120) != 0, "the push cannot succeed against a killed server"
    finally:
        if push.poll() is None:
            push.kill()
    # Nothing of the interrupted upload is visible as a blob, and every
    # stored blob is intact.
    for d, p in blob_files(s.root).items():
        assert "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() == d
    s.start()
    try:
        copy_in(src, "big", dest)
        _, digest = inspect_raw(dest)
        assert digest == info["big"]["ref"]
        out = tmp_path / "out"
        skopeo("copy", "--preserve-digests", "--src-tls-verify=false", dest, f"oci:{out}:big")
        for layer in info["big"]["manifests"]["linux/amd64"]["layers"]:
            data = (out / "blobs/sha256" / layer["digest"].split(":")[1]).read_bytes()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
    finally:
        s.stop()


def test_oras_push_and_pull(server, tmp_path, monkeypatch):
    oras_client = pytest.importorskip("oras.client", reason="pip install oras")
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text("hello from oras\n")
    (work / "data.bin").write_bytes(os.urandom(200_000))
    monkeypatch.chdir(work)
    client = oras_client.OrasClient(hostname=server.addr, insecure=True)
    target = f"{server.addr}/artifacts/hello:v1"
    resp = client.push(target=target, files=["hello.txt", "data.bin"])
    assert resp.status_code == 201, resp.text
    out = tmp_path / "pulled"
    files = client.pull(target=target, outdir=str(out))
    assert sorted(Path(f).name for f in files) == ["data.bin", "hello.txt"]
    for name in ("hello.txt", "data.bin"):
        assert (out / name).read_bytes() == (work / name).read_bytes()
    assert "v1" in client.get_tags(f"{server.addr}/artifacts/hello")
