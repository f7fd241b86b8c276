"""Pull, push, login and registry mirrors against Debian's docker-registry
(distribution 2.8), plus interrupted and bad pulls (issue 9, items 2-5 and 9).

Every image here is made by tests/images/make-oci-image.py from busybox-static
(layers: a busybox base, a layer of files, a layer of whiteouts deleting one of
them and making /opq opaque) and copied into a local registry with skopeo,
digests preserved. Registries and the misbehaving proxy
(tests/images/registry-proxy.py) run inside the session daemon's namespaces.
The mirror test runs a second daemon of its own (own holder namespace, own
registry in it, started with --registry-mirror) and tears it down after.

To check these tests against Docker itself (dockerd from apt docker.io):
  SHIBAFU_BIN=tests/images/dockerd-as-shibafu.sh SHIBAFU_IMAGES_PEER=1 \
      python3 -m pytest tests/integration/test_images_registry.py
(tests of what only shibafu does are skipped then; see the README there).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers import (FIXTURE_CHECK, Daemon, Registry, RegistryProxy, fixture_check_output, host_platform,
                     image_inspect, image_refs, image_tools_missing, make_oci_image, next_image_port,
                     shibafu_bin, uniq, wait_for)

PEER = bool(os.environ.get("SHIBAFU_IMAGES_PEER"))
shibafu_only = pytest.mark.skipif(PEER, reason="shibafu behaviour Docker does not have")
HEX12 = re.compile(r"^[0-9a-f]{12}$")
MiB = 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def _tools(daemon):
    missing = image_tools_missing()
    if missing:
        pytest.fail(f"the image tests need: apt-get install {' '.join(missing)}", pytrace=False)
    # A binary from before issue 9 says so for every pull: nothing here can pass.
    r = daemon.docker("pull", "127.0.0.1:9/probe/probe:v1", timeout=60)
    if "not available in this build" in r.stderr:
        pytest.skip(f"this shibafu build cannot pull: {r.stderr.strip()}")


class Fixtures:
    """The module's registry and the images in it: self.img[key] is
    make-oci-image.py's JSON plus "ref" (REGISTRY/REPO:TAG as pulled)."""

    def __init__(self, daemon: Daemon, work: Path):
        self.d = daemon
        self.work = work
        self.layout = work / "layout"
        self.reg = Registry(daemon, work / "registry").start()
        self.img: dict[str, dict] = {}
        self.tag = uniq("f").replace("-", "")

    def add(self, key: str, repo: str, *, all_platforms=False, fmt=None, tags=("v1",), **opts) -> dict:
        name = opts.pop("name", f"{key}-{self.tag}")
        info = make_oci_image(self.layout, key, name=name, **opts)
        for t in tags:
            self.reg.push_layout(self.layout, key, f"{repo}:{t}", all_platforms=all_platforms, fmt=fmt)
        info["name"] = name
        info["repo"] = f"{self.reg.addr}/{repo}"
        info["ref"] = f"{self.reg.addr}/{repo}:{tags[0]}"
        info["host"] = info["manifests"].get(host_platform()) or next(iter(info["manifests"].values()))
        self.img[key] = info
        return info

    def stop(self):
        self.reg.stop()


@pytest.fixture(scope="module")
def fx(daemon, tmp_path_factory):
    f = Fixtures(daemon, tmp_path_factory.mktemp("imgreg"))
    try:
        f.add("oci", "img/oci")
        f.add("v2s2", "img/v2s2", fmt="v2s2")
        f.add("plain", "img/plain", compression="none")
        f.add("zstd", "img/zstd", compression="zstd")
        f.add("multi", "img/multi", platforms="linux/amd64,linux/arm64", all_platforms=True,
              tags=("v1", "v2", "v3"))
        f.add("v2list", "img/v2list", platforms="linux/amd64,linux/arm64", all_platforms=True, fmt="v2s2")
        f.add("armonly", "img/armonly", platforms="linux/arm64,linux/s390x", all_platforms=True)
        f.add("bydigest", "img/bydigest")
        f.add("uptodate", "img/uptodate")
        f.add("dockerpy", "img/dockerpy", tags=("v1", "v2"))
        f.add("runpull", "img/runpull")
        f.add("pushsrc", "img/pushsrc")
        f.add("cli", "img/cli")
        f.add("afterbad", "img/afterbad")
    except BaseException:
        f.stop()
        raise
    yield f
    f.stop()


@pytest.fixture(scope="module")
def pushreg(daemon, tmp_path_factory):
    """An empty registry to push to."""
    r = Registry(daemon, tmp_path_factory.mktemp("pushreg")).start()
    yield r
    r.stop()


USER, PASSWORD = "tester", "s3cret-Pass"


@pytest.fixture(scope="module")
def authreg(daemon, tmp_path_factory):
    """A registry with htpasswd auth (tester / s3cret-Pass) holding auth/img:v1."""
    work = tmp_path_factory.mktemp("authreg")
    r = Registry(daemon, work, users={USER: PASSWORD}).start()
    try:
        name = "auth-" + uniq("a")
        info = make_oci_image(work / "layout", "auth", name=name)
        info["name"] = name
        r.push_layout(work / "layout", "auth", "auth/img:v1")
    except BaseException:
        r.stop()
        raise
    r.info = info
    yield r
    r.stop()


def rmi(docker, *refs):
    docker("rmi", "-f", *refs, timeout=60)


def pull(docker, ref, *args, timeout=180):
    return docker("pull", *args, ref, timeout=timeout)


def run_check(docker, ref) -> str:
    r = docker("run", "--rm", "--network", "none", ref, "sh", "-c", FIXTURE_CHECK, timeout=60)
    assert r.returncode == 0, f"docker run {ref} failed: {r.stderr}"
    return r.stdout


# ------------------------------------------------------------------ pull


@pytest.mark.timeout(300)
@pytest.mark.parametrize("key", ["oci", "v2s2", "plain", pytest.param("zstd", marks=pytest.mark.skipif(
    PEER, reason="dockerd 20.10 pulls no zstd layers (Docker 23+ does)"))])
def test_pull_by_tag_every_layer_and_whiteouts(docker, fx, key):
    """OCI + gzip, Docker v2 schema 2, uncompressed and zstd layers: pulled,
    listed, inspected as Docker shows them, and every layer and whiteout visible."""
    img = fx.img[key]
    ref = img["ref"]
    try:
        r = pull(docker, ref)
        assert r.returncode == 0, f"pull {ref}: {r.stderr}"
        digest = fx.reg.digest_of(ref.split("/", 1)[1])
        assert f"Digest: {digest}" in r.stdout, r.stdout
        assert f"Status: Downloaded newer image for {ref}" in r.stdout, r.stdout
        assert r.stdout.strip().splitlines()[-1] == ref
        assert ref in image_refs(docker)
        ins = image_inspect(docker, ref)
        assert ins["RepoTags"] == [ref]
        assert ins["RepoDigests"] == [f"{img['repo']}@{digest}"]
        assert ins["Id"] == img["host"]["config"]
        assert ins["RootFS"]["Layers"] == [l["diff_id"] for l in img["host"]["layers"]]
        assert ins["Architecture"] == "amd64" and ins["Os"] == "linux"
        assert ins["Config"]["Labels"]["org.shibafu.fixture"] == img["name"]
        assert ins["Config"]["Cmd"] == ["sh"]
        assert run_check(docker, ref) == fixture_check_output(img["name"])
    finally:
        rmi(docker, ref)


def test_second_pull_is_up_to_date(docker, fx):
    ref = fx.img["uptodate"]["ref"]
    try:
        assert pull(docker, ref).returncode == 0
        r = pull(docker, ref)
        assert r.returncode == 0, r.stderr
        assert f"Status: Image is up to date for {ref}" in r.stdout, r.stdout
        assert "Pull complete" not in r.stdout
    finally:
        rmi(docker, ref)


def test_pull_by_digest(docker, fx):
    img = fx.img["bydigest"]
    dref = f"{img['repo']}@{img['host']['digest']}"
    try:
        r = pull(docker, dref)
        assert r.returncode == 0, r.stderr
        assert f"Digest: {img['host']['digest']}" in r.stdout
        ins = image_inspect(docker, dref)
        assert ins is not None and ins["Id"] == img["host"]["config"]
        assert ins["RepoTags"] == []
        assert ins["RepoDigests"] == [dref]
        assert dref in image_refs(docker)
        assert run_check(docker, dref) == fixture_check_output(img["name"])
    finally:
        rmi(docker, dref)


def test_pull_index_picks_host_platform(docker, fx):
    img = fx.img["multi"]
    ref = img["ref"]
    try:
        r = pull(docker, ref)
        assert r.returncode == 0, r.stderr
        assert f"Digest: {img['index']}" in r.stdout, r.stdout
        ins = image_inspect(docker, ref)
        assert ins["Id"] == img["manifests"][host_platform()]["config"]
        assert ins["Architecture"] == host_platform().split("/")[1]
        assert ins["RepoDigests"] == [f"{img['repo']}@{img['index']}"]
        assert run_check(docker, ref) == fixture_check_output(img["name"])
    finally:
        rmi(docker, ref)


def test_pull_docker_manifest_list(docker, fx):
    img = fx.img["v2list"]
    ref = img["ref"]
    list_digest = fx.reg.digest_of(ref.split("/", 1)[1])
    assert list_digest != img["index"]  # skopeo rewrote it as a Docker manifest list
    try:
        r = pull(docker, ref)
        assert r.returncode == 0, r.stderr
        ins = image_inspect(docker, ref)
        assert ins["Architecture"] == "amd64"
        assert ins["RepoDigests"] == [f"{img['repo']}@{list_digest}"]
        assert run_check(docker, ref) == fixture_check_output(img["name"])
    finally:
        rmi(docker, ref)


def test_pull_other_platform(docker, fx):
    img = fx.img["multi"]
    ref = f"{img['repo']}:v2"
    try:
        r = pull(docker, ref, "--platform", "linux/arm64")
        assert r.returncode == 0, r.stderr
        ins = image_inspect(docker, ref)
        assert ins["Architecture"] == "arm64"
        assert ins["Id"] == img["manifests"]["linux/arm64"]["config"]
        assert ins["Config"]["Labels"]["org.shibafu.platform"] == "linux/arm64"
    finally:
        rmi(docker, ref)


def test_pull_absent_platform_is_a_clear_error(docker, fx):
    ref = f"{fx.img['multi']['repo']}:v3"
    before = image_refs(docker)
    r = pull(docker, ref, "--platform", "linux/s390x")
    assert r.returncode != 0
    assert "no matching manifest" in r.stderr.lower() and "s390x" in r.stderr, r.stderr
    assert image_refs(docker) == before


def test_manifest_for_another_platform_only(docker, fx):
    """An index with only arm64 and s390x entries, pulled on amd64."""
    ref = fx.img["armonly"]["ref"]
    before = image_refs(docker)
    r = pull(docker, ref)
    assert r.returncode != 0
    err = r.stderr.lower()
    assert "no matching manifest" in err and "linux/amd64" in err, r.stderr
    assert image_refs(docker) == before
    # ... and the same image for a platform it has works.
    try:
        r = pull(docker, ref, "--platform", "linux/arm64")
        assert r.returncode == 0, r.stderr
    finally:
        rmi(docker, ref)


def test_dockerpy_pull_and_stream(client, docker, fx):
    """client.api.pull(stream=True, decode=True): Docker's JSON messages (the
    tag's "Pulling from", 12-hex layer ids, each layer ending in "Pull complete"
    or "Already exists", Digest and Status last); client.images.pull returns
    the Image."""
    img = fx.img["dockerpy"]
    repo = img["repo"]
    try:
        msgs = list(client.api.pull(repo, tag="v1", stream=True, decode=True))
        assert all(isinstance(m, dict) for m in msgs)
        assert not [m for m in msgs if "error" in m or "errorDetail" in m], msgs
        assert msgs[0] == {"status": "Pulling from img/dockerpy", "id": "v1"}, msgs[:3]
        statuses = [m.get("status", "") for m in msgs]
        layer_msgs = [m for m in msgs if "id" in m and m["id"] != "v1"]
        assert all(HEX12.match(m["id"]) for m in layer_msgs), layer_msgs
        want_ids = {l["digest"].split(":")[1][:12] for l in img["host"]["layers"]}
        assert {m["id"] for m in layer_msgs} == want_ids, layer_msgs
        done = {m["id"] for m in layer_msgs if m.get("status") in ("Pull complete", "Already exists")}
        assert done == want_ids, layer_msgs
        assert statuses[-2:] == [f"Digest: {img['host']['digest']}",
                                 f"Status: Downloaded newer image for {repo}:v1"], statuses
        for m in msgs:
            if m.get("progressDetail"):
                assert set(m["progressDetail"]) <= {"current", "total", "units", "hidecounts"}, m

        im = client.images.pull(repo, tag="v2")
        assert f"{repo}:v2" in im.tags and f"{repo}:v1" in im.tags
        assert im.id == img["host"]["config"]
    finally:
        rmi(docker, f"{repo}:v1", f"{repo}:v2")


def test_dockerpy_stream_fresh_layers(client, docker, fx, tmp_path):
    """A pull whose upper layers are new: each gets Pulling fs layer ...
    Download complete ... Pull complete, in that order."""
    name = uniq("fresh")
    info = make_oci_image(tmp_path / "l", "fresh", name=name, layers="base,files,whiteout,random:2", seed=name)
    fx.reg.push_layout(tmp_path / "l", "fresh", "img/fresh:v1")
    repo = f"{fx.reg.addr}/img/fresh"
    try:
        msgs = list(client.api.pull(repo, tag="v1", stream=True, decode=True))
        new_ids = [l["digest"].split(":")[1][:12] for l in info["manifests"]["linux/amd64"]["layers"][1:]]
        for lid in new_ids:
            seq = [m["status"] for m in msgs if m.get("id") == lid]
            assert "Pull complete" in seq, (lid, seq)
            for a, b in (("Pulling fs layer", "Pull complete"), ("Download complete", "Pull complete")):
                assert a in seq and seq.index(a) < seq.index(b), (lid, seq)
        assert msgs[-1]["status"] == f"Status: Downloaded newer image for {repo}:v1"
    finally:
        rmi(docker, f"{repo}:v1")


def test_run_of_missing_image_pulls_it(docker, fx):
    img = fx.img["runpull"]
    ref = img["ref"]
    try:
        r = docker("run", "--rm", "--network", "none", ref, "cat", "/layers/whiteout.txt", timeout=180)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"whiteout {img['name']}\n"
        assert f"Unable to find image '{ref}' locally" in r.stderr
        assert "Pulling from img/runpull" in r.stderr
        assert ref in image_refs(docker)
    finally:
        rmi(docker, ref)


@shibafu_only
def test_shibafu_pull_cli(daemon, docker, fx):
    img = fx.img["cli"]
    ref = img["ref"]
    try:
        r = daemon.shibafu("pull", ref, timeout=180)
        assert r.returncode == 0, r.stderr
        assert "\x1b[" not in r.stdout + r.stderr  # not a terminal: plain lines, no bars
        assert ref in image_refs(docker)
        assert image_inspect(docker, ref)["Id"] == img["host"]["config"]
        r = daemon.shibafu("pull", f"{fx.reg.addr}/img/nope:v1", timeout=60)
        assert r.returncode != 0 and r.stderr.strip()
    finally:
        rmi(docker, ref)


# ------------------------------------------------------------------ login and auth


def test_login_pull_push_logout(daemon, docker, client, authreg):
    ref = f"{authreg.addr}/auth/img:v1"
    pushed = f"{authreg.addr}/auth/pushed:v1"
    try:
        r = pull(docker, ref)
        assert r.returncode != 0
        assert re.search(r"no basic auth credentials|unauthorized|authentication required", r.stderr, re.I), r.stderr

        r = docker("login", authreg.addr, "-u", USER, "--password-stdin", input="wrong-password\n")
        assert r.returncode != 0
        assert re.search(r"unauthorized|incorrect username or password", r.stderr, re.I), r.stderr

        r = docker("login", authreg.addr, "-u", USER, "--password-stdin", input=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
        assert "Login Succeeded" in r.stdout

        r = pull(docker, ref)
        assert r.returncode == 0, r.stderr
        assert run_check(docker, ref) == fixture_check_output(authreg.info["name"])
        docker("tag", ref, pushed, check=True)
        r = docker("push", pushed, timeout=120)
        assert r.returncode == 0, r.stderr
        assert authreg.raw_manifest("auth/pushed:v1")["layers"]

        r = docker("logout", authreg.addr)
        assert r.returncode == 0
        assert f"Removing login credentials for {authreg.addr}" in r.stdout
        rmi(docker, ref, pushed)
        r = pull(docker, ref)
        assert r.returncode != 0
        assert ref not in image_refs(docker)

        # X-Registry-Auth from docker-py: wrong, then right credentials.
        import docker as dockerpy
        with pytest.raises(dockerpy.errors.APIError):
            client.images.pull(f"{authreg.addr}/auth/img", tag="v1",
                               auth_config={"username": USER, "password": "nope"})
        im = client.images.pull(f"{authreg.addr}/auth/img", tag="v1",
                                auth_config={"username": USER, "password": PASSWORD})
        assert ref in im.tags
    finally:
        docker("logout", authreg.addr)
        rmi(docker, ref, pushed)


# ------------------------------------------------------------------ push


def _push_digest(out: str, tag: str) -> str:
    m = re.search(rf"^{re.escape(tag)}: digest: (sha256:[0-9a-f]{{64}}) size: \d+$", out, re.M)
    assert m, out
    return m.group(1)


def test_push_pulled_image_byte_for_byte(docker, fx, pushreg):
    """pull, tag for an empty registry, push: same layer and config blobs
    there (no recompression); a second push says "Layer already exists"; a
    push to another repo of the same registry mounts the blobs."""
    img = fx.img["pushsrc"]
    src = img["ref"]
    dst = f"{pushreg.addr}/copy/pushsrc:v1"
    dst2 = f"{pushreg.addr}/copy2/pushsrc:v1"
    try:
        assert pull(docker, src).returncode == 0
        docker("tag", src, dst, check=True)
        r = docker("push", dst, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "The push refers to repository" in r.stdout
        digest = _push_digest(r.stdout, "v1")
        for l in img["host"]["layers"]:
            lid = l["diff_id"].split(":")[1][:12]  # push progress names layers by diff ID, as Docker does
            assert re.search(rf"^{lid}: Pushed$", r.stdout, re.M), r.stdout
        raw = pushreg.raw_manifest("copy/pushsrc:v1")
        assert raw["config"]["digest"] == img["host"]["config"]
        if not PEER:  # dockerd recompresses layers pushed to another registry
            assert [l["digest"] for l in raw["layers"]] == [l["digest"] for l in img["host"]["layers"]]
            assert [l["size"] for l in raw["layers"]] == [l["size"] for l in img["host"]["layers"]]
        assert pushreg.digest_of("copy/pushsrc:v1") == digest
        assert f"{pushreg.addr}/copy/pushsrc@{digest}" in image_inspect(docker, dst)["RepoDigests"]

        r = docker("push", dst, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("Layer already exists") == len(img["host"]["layers"]), r.stdout
        assert _push_digest(r.stdout, "v1") == digest

        docker("tag", src, dst2, check=True)
        r = docker("push", dst2, timeout=120)
        assert r.returncode == 0, r.stderr
        assert re.search(r"Mounted from copy/pushsrc|Layer already exists", r.stdout), r.stdout
        assert "Pushed" not in r.stdout, r.stdout
    finally:
        rmi(docker, src, dst, dst2)


def test_push_imported_image_pulls_back(docker, busybox_tar, pushreg):
    ref = f"{pushreg.addr}/imported/{uniq('bb')}:v1"
    try:
        docker("import", str(busybox_tar), ref, check=True, timeout=120)
        r = docker("push", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        digest = _push_digest(r.stdout, "v1")
        raw = pushreg.raw_manifest(ref.split("/", 1)[1])
        assert len(raw["layers"]) == 1
        assert raw["layers"][0]["mediaType"] in ("application/vnd.docker.image.rootfs.diff.tar.gzip",
                                                 "application/vnd.oci.image.layer.v1.tar+gzip",
                                                 "application/vnd.oci.image.layer.v1.tar+zstd")
        image_id = image_inspect(docker, ref)["Id"]
        rmi(docker, ref)
        assert image_inspect(docker, ref) is None
        r = pull(docker, ref)
        assert r.returncode == 0, r.stderr
        assert f"Digest: {digest}" in r.stdout
        assert image_inspect(docker, ref)["Id"] == image_id
        out = docker("run", "--rm", "--network", "none", ref, "cat", "/etc/shibafu-test-image", check=True).stdout
        assert out == "shibafu-test-image\n"
    finally:
        rmi(docker, ref)


def test_push_of_a_missing_image(docker, pushreg):
    r = docker("push", f"{pushreg.addr}/none/{uniq('x')}:v1", timeout=60)
    assert r.returncode != 0
    assert "does not exist" in r.stderr.lower() or "no such image" in r.stderr.lower(), r.stderr


# ------------------------------------------------------------------ mirror


@pytest.mark.timeout(300)
def test_registry_mirror_serves_docker_io(tmp_path):
    """A daemon started with --registry-mirror http://127.0.0.1:PORT pulls
    docker.io names (`mirrorbox:mirrortest`) from a local registry holding
    library/mirrorbox. A second daemon of this test's own, in its own holder
    namespace (the session daemon keeps its flags)."""
    d2 = Daemon(Path(tempfile.mkdtemp(prefix="shibafu-mirror-", dir="/tmp")), shibafu_bin(),
                Path(os.environ.get("SHIBAFU_TEST_LOGDIR", "/tmp/shibafu-test-logs")))
    reg = None
    try:
        d2.start_holder()
        reg = Registry(d2, tmp_path / "mirror").start()
        name = uniq("mirror")
        info = make_oci_image(tmp_path / "l", "m", name=name)
        reg.push_layout(tmp_path / "l", "m", "library/mirrorbox:mirrortest")
        d2.extra_args = ["--registry-mirror", f"http://{reg.addr}"]
        d2.start()
        r = d2.docker("pull", "mirrorbox:mirrortest", timeout=120)
        assert r.returncode == 0, f"{r.stderr}\n{d2.log_tail()}"
        assert "Status: Downloaded newer image for mirrorbox:mirrortest" in r.stdout, r.stdout
        ins = image_inspect(d2.docker, "mirrorbox:mirrortest")
        assert ins["RepoTags"] == ["mirrorbox:mirrortest"]
        assert ins["RepoDigests"] == [f"mirrorbox@{info['ref']}"]
        assert ins["Id"] == info["manifests"]["linux/amd64"]["config"]
        assert any("/v2/library/mirrorbox/manifests/mirrortest" in l for l in reg.access_lines())
        r = d2.docker("pull", "docker.io/library/mirrorbox:mirrortest", timeout=120)
        assert r.returncode == 0 and "Image is up to date for mirrorbox:mirrortest" in r.stdout, r.stdout + r.stderr
        out = d2.docker("run", "--rm", "--network", "none", "mirrorbox:mirrortest", "sh", "-c", FIXTURE_CHECK,
                        timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout == fixture_check_output(name)
        # a name the mirror does not have: a clear error, nothing stored
        r = d2.docker("pull", "nosuchbox:mirrortest", timeout=120)
        assert r.returncode != 0 and r.stderr.strip()
    finally:
        if reg:
            reg.stop()
        errs = d2.teardown()
        assert not [e for e in errs if "leftover" in e], errs


@pytest.mark.timeout(300)
def test_disk_full_mid_pull(fx, tmp_path):
    """A data root that fills up during a pull (a 40 MiB tmpfs, a 64 MiB
    layer): a clear error, nothing half-stored; with room again, the same pull
    works. A second daemon of this test's own (its data root is the tmpfs), in
    its own holder namespace, with its own registry holding the image."""
    d2 = Daemon(Path(tempfile.mkdtemp(prefix="shibafu-full-", dir="/tmp")), shibafu_bin(),
                Path(os.environ.get("SHIBAFU_TEST_LOGDIR", "/tmp/shibafu-test-logs")))
    reg = None
    try:
        d2.start_holder()
        d2.data_root.mkdir(parents=True, exist_ok=True)
        r = d2.ns_run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(d2.data_root)], net=False)
        assert r.returncode == 0, r.stderr
        reg = Registry(d2, tmp_path / "reg").start()
        name = uniq("full")
        info = make_oci_image(tmp_path / "l", "full", name=name, layers="base,random:64,files,whiteout",
                              seed=name, gzip_level=1)
        reg.push_layout(tmp_path / "l", "full", "img/full:v1")
        ref = f"{reg.addr}/img/full:v1"
        d2.start()
        before = image_refs(d2.docker)
        r = d2.docker("pull", ref, timeout=180)
        assert r.returncode != 0
        assert "no space left on device" in r.stderr.lower(), r.stderr
        assert d2.alive(), d2.log_tail()
        assert image_refs(d2.docker) == before
        assert image_inspect(d2.docker, ref) is None
        r = d2.ns_run(["mount", "-o", "remount,size=400m", str(d2.data_root)], net=False)
        assert r.returncode == 0, r.stderr
        r = d2.docker("pull", ref, timeout=180)
        assert r.returncode == 0, f"{r.stderr}\n{d2.log_tail()}"
        out = d2.docker("run", "--rm", "--network", "none", ref, "sh", "-c", FIXTURE_CHECK, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout == fixture_check_output(name)
        assert image_inspect(d2.docker, ref)["Id"] == info["manifests"]["linux/amd64"]["config"]
    finally:
        if reg:
            reg.stop()
        errs = d2.teardown()
        assert not [e for e in errs if "leftover" in e], errs


# ------------------------------------------------------------------ interrupted pulls


def _range_start(rng: str | None) -> int:
    m = re.match(r"bytes=(\d+)-", rng or "")
    return int(m.group(1)) if m else 0


@pytest.mark.timeout(300)
def test_pull_resumes_after_dropped_connection(docker, fx, tmp_path):
    """The registry connection drops after 16 MiB of a 64 MiB layer: the pull
    (or the next one) resumes with a Range request and the image is whole."""
    name = uniq("drop")
    info = make_oci_image(tmp_path / "l", "big", name=name, layers="base,random:64,files,whiteout",
                          seed=name, gzip_level=1)
    fx.reg.push_layout(tmp_path / "l", "big", "img/drop:v1")
    big = info["manifests"]["linux/amd64"]["layers"][1]
    assert big["size"] > 60 * MiB
    proxy = RegistryProxy(fx.d, fx.reg, tmp_path / "proxy", "--only", big["digest"],
                          "--drop-after", str(16 * MiB), "--drop-times", "1")
    ref = f"{proxy.addr}/img/drop:v1"
    try:
        r = pull(docker, ref, timeout=240)
        if r.returncode != 0:
            assert ref not in image_refs(docker)
            r = pull(docker, ref, timeout=240)
        assert r.returncode == 0, r.stderr
        assert any(e["ev"] == "dropped" for e in proxy.events())
        tr = proxy.blob_transfers(big["digest"])
        assert len(tr) >= 2 and max(_range_start(t["range"]) for t in tr) > 0, tr
        # resumed, not fetched again from byte 0: about one blob's worth crossed the wire
        assert sum(t["sent"] for t in tr) <= big["size"] + MiB, tr
        out = docker("run", "--rm", "--network", "none", ref, "sh", "-c",
                     "wc -c < /big/random-1.bin; cat /layers/files.txt", check=True).stdout
        assert out == f"{64 * MiB}\nfiles {name}\n"
    finally:
        proxy.stop()
        rmi(docker, ref)


@shibafu_only
@pytest.mark.timeout(300)
def test_pull_resumes_after_daemon_kill(request, daemon, docker, fx, tmp_path):
    """kill -9 of the daemon while a 64 MiB layer is half downloaded: after
    the restart no half image is visible, and the next pull asks for the rest
    (Range) instead of starting over."""
    request.node._kills_daemon = True
    name = uniq("kill")
    info = make_oci_image(tmp_path / "l", "big", name=name, layers="base,random:64,files,whiteout",
                          seed=name, gzip_level=1)
    fx.reg.push_layout(tmp_path / "l", "big", "img/kill:v1")
    big = info["manifests"]["linux/amd64"]["layers"][1]
    proxy = RegistryProxy(daemon, fx.reg, tmp_path / "proxy", "--only", big["digest"],
                          "--stall-after", str(24 * MiB), "--stall-times", "1")
    ref = f"{proxy.addr}/img/kill:v1"
    p = subprocess.Popen(["docker", "pull", ref], env=daemon.env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(e["ev"] == "stalled" for e in proxy.events()), 120, 0.2, "the proxy to stall")
        time.sleep(1)  # let the daemon write what it got
        daemon.kill9()
        p.wait(timeout=30)
        assert p.returncode != 0
        daemon.start()
        assert ref not in image_refs(docker)
        assert image_inspect(docker, ref) is None
        n_before = len(proxy.blob_transfers(big["digest"]))
        r = pull(docker, ref, timeout=240)
        assert r.returncode == 0, r.stderr
        after = proxy.blob_transfers(big["digest"])[n_before:]
        assert after and min(_range_start(t["range"]) for t in after) > 0, after
        assert min(_range_start(t["range"]) for t in after) <= 24 * MiB, after
        # what was kept before the kill was not fetched again
        assert sum(t["sent"] for t in after) <= big["size"] - min(_range_start(t["range"]) for t in after), after
        out = docker("run", "--rm", "--network", "none", ref, "wc", "-c", "/big/random-1.bin", check=True).stdout
        assert out.split()[0] == str(64 * MiB)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        proxy.stop()
        if not daemon.alive():
            daemon.start()
        rmi(docker, ref)


# ------------------------------------------------------------------ bad input


def _assert_nothing_half_stored(docker, before: set[str], ref: str):
    assert image_refs(docker) == before
    assert image_inspect(docker, ref) is None


@pytest.mark.parametrize("what", ["unknown-repo", "unknown-tag"])
def test_pull_unknown_repo_or_tag(docker, fx, what):
    good = fx.img["afterbad"]
    ref = f"{fx.reg.addr}/img/{uniq('nope')}:v1" if what == "unknown-repo" else f"{good['repo']}:nosuchtag"
    before = image_refs(docker)
    r = pull(docker, ref, timeout=60)
    assert r.returncode != 0
    err = r.stderr.lower()
    assert re.search(r"not found|manifest unknown|name unknown|does not exist|repository name not known", err), \
        r.stderr
    _assert_nothing_half_stored(docker, before, ref)
    try:
        assert pull(docker, good["ref"]).returncode == 0
    finally:
        rmi(docker, good["ref"])


def test_pull_unreachable_registry(docker):
    port = next_image_port()  # nothing listens there
    ref = f"127.0.0.1:{port}/img/x:v1"
    before = image_refs(docker)
    r = pull(docker, ref, timeout=120)
    assert r.returncode != 0
    assert "connection refused" in r.stderr.lower(), r.stderr
    _assert_nothing_half_stored(docker, before, ref)


@pytest.mark.timeout(300)
def test_pull_blob_digest_mismatch(docker, fx, tmp_path):
    """A proxy flips one byte of a layer: the pull fails naming the digest,
    nothing is stored; without the corruption the same pull works."""
    name = uniq("bad")
    info = make_oci_image(tmp_path / "l", "bad", name=name, layers="base,random:1,files,whiteout", seed=name)
    fx.reg.push_layout(tmp_path / "l", "bad", "img/corrupt:v1")
    layer = info["manifests"]["linux/amd64"]["layers"][1]
    flag = tmp_path / "corrupt"
    flag.write_text("1")
    proxy = RegistryProxy(fx.d, fx.reg, tmp_path / "proxy", "--only", layer["digest"],
                          "--corrupt-flag", str(flag))
    ref = f"{proxy.addr}/img/corrupt:v1"
    before = image_refs(docker)
    try:
        r = pull(docker, ref, timeout=180)
        assert r.returncode != 0
        assert any(e["ev"] == "corrupted" for e in proxy.events())
        err = r.stderr.lower()
        assert "digest" in err or "verification failed" in err or "checksum" in err, r.stderr
        _assert_nothing_half_stored(docker, before, ref)
        flag.unlink()
        r = pull(docker, ref, timeout=180)
        assert r.returncode == 0, r.stderr
        assert run_check(docker, ref) == fixture_check_output(name)
    finally:
        proxy.stop()
        rmi(docker, ref)


def test_pull_bad_credentials_header(docker, client, authreg):
    """Credentials the registry refuses, through X-Registry-Auth: an error naming it, nothing stored."""
    import docker as dockerpy
    ref = f"{authreg.addr}/auth/img:v1"
    before = image_refs(docker)
    with pytest.raises(dockerpy.errors.APIError) as ei:
        client.images.pull(f"{authreg.addr}/auth/img", tag="v1",
                           auth_config={"username": "nobody", "password": "bad"})
    assert re.search(r"unauthorized|authentication required|no basic auth", str(ei.value), re.I), str(ei.value)
    _assert_nothing_half_stored(docker, before, ref)


# ------------------------------------------------------------------ concurrency


@pytest.mark.timeout(300)
def test_concurrent_pulls_fetch_shared_layers_once(daemon, docker, fx, tmp_path):
    """Two pulls at once of two images sharing a (new) base and a 24 MiB layer:
    each shared blob crosses the wire once."""
    seed = uniq("conc")
    infos = {}
    for n in ("a", "b"):
        infos[n] = make_oci_image(tmp_path / "l", n, name=f"{seed}-{n}", base_extra=seed, seed=seed,
                                  layers="base,random:24,files,whiteout", gzip_level=1)
        fx.reg.push_layout(tmp_path / "l", n, f"conc/{n}:v1")
    la = infos["a"]["manifests"]["linux/amd64"]["layers"]
    lb = infos["b"]["manifests"]["linux/amd64"]["layers"]
    shared = [x["digest"] for x in la[:2]]
    assert shared == [x["digest"] for x in lb[:2]] and la[2]["digest"] != lb[2]["digest"]
    # throttled, so that the two pulls overlap
    proxy = RegistryProxy(daemon, fx.reg, tmp_path / "proxy", "--throttle", str(16 * MiB))
    refs = [f"{proxy.addr}/conc/{n}:v1" for n in ("a", "b")]
    procs = [subprocess.Popen(["docker", "pull", ref], env=daemon.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for ref in refs]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
        for p, (o, e) in zip(procs, outs):
            assert p.returncode == 0, e
        for layer in la[:2]:
            tr = proxy.blob_transfers(layer["digest"])
            # once: one blob's worth of bytes (a downloader may split it in ranges)
            assert sum(t["sent"] for t in tr) == layer["size"], (layer, tr)
        for n, ref in zip(("a", "b"), refs):
            assert run_check(docker, ref) == fixture_check_output(f"{seed}-{n}", seed)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        proxy.stop()
        rmi(docker, *refs)
