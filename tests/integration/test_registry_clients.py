"""`shibafu registry serve` with the clients issue 9 names beyond skopeo and
ORAS (those are in test_registry_server.py): the docker CLI through the
shibafu daemon, the docker CLI through dockerd, and podman; push, pull, run,
htpasswd login, "Layer already exists", cross-repository mounts, and images
pushed by one client pulled by another with the same digest.

Every registry is a `shibafu registry serve` on 127.0.0.1:PORT inside the
namespaces of the engine that talks to it (the session daemon's holder, or
the private net+mount namespace dockerd and podman each run in here, as
bench/lib.sh runs them). For the cross-client checks, helpers.NsForward makes
one registry's 127.0.0.1:PORT answer in another engine's namespace too.

Needs apt docker.io (dockerd), podman, runc, conmon, netavark, skopeo and
apache2-utils; missing ones are installed by the module fixture (no service is
started) and the module FAILS when apt cannot install them.
"""

from __future__ import annotations

import json
import re

import pytest

from helpers import Daemon, Dockerd, NsForward, Podman, ShibafuRegistry, apt_install_missing, image_inspect

pytestmark = pytest.mark.timeout(300)

USER, PASSWORD = "clients", "Cl1ents-s3cret"
MARKER = "/etc/shibafu-test-image"  # tests/images/make-busybox-rootfs.sh
MARKER_TEXT = "shibafu-test-image\n"
DIGEST = r"sha256:[0-9a-f]{64}"


@pytest.fixture(scope="module", autouse=True)
def _peer_tools():
    why = apt_install_missing()
    if why:
        pytest.fail(f"the registry client tests need dockerd and podman: {why}", pytrace=False)


def _push_digest(out: str, tag: str) -> str:
    """The digest of docker's final `TAG: digest: sha256:... size: N` line."""
    m = re.search(rf"^{re.escape(tag)}: digest: ({DIGEST}) size: \d+$", out, re.M)
    assert m, f"no digest line for {tag} in:\n{out}"
    return m.group(1)


def _pull_digest(out: str) -> str:
    m = re.search(rf"^Digest: ({DIGEST})$", out, re.M)
    assert m, f"no Digest: line in:\n{out}"
    return m.group(1)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def sreg(daemon: Daemon, tmp_path_factory):
    """An anonymous shibafu registry in the session daemon's namespaces."""
    r = ShibafuRegistry(daemon.holder.pid, tmp_path_factory.mktemp("sreg")).start()
    yield r
    assert r.stop() == 0, f"registry did not shut down cleanly: {r.log_tail()}"


@pytest.fixture(scope="module")
def sreg_auth(daemon: Daemon, tmp_path_factory):
    """A shibafu registry with htpasswd auth in the session daemon's namespaces."""
    r = ShibafuRegistry(daemon.holder.pid, tmp_path_factory.mktemp("sregauth"), users={USER: PASSWORD}).start()
    yield r
    assert r.stop() == 0, f"registry did not shut down cleanly: {r.log_tail()}"


@pytest.fixture(scope="module")
def dockerd(busybox_tar, tmp_path_factory):
    """dockerd in its own namespaces with busybox:latest imported; its two
    shibafu registries (anonymous, htpasswd) run in the same namespaces."""
    d = Dockerd()
    regs = []
    try:
        d.start()
        d.docker("import", str(busybox_tar), "busybox:latest", timeout=120, check=True)
        work = tmp_path_factory.mktemp("dockerd-regs")
        d.reg = ShibafuRegistry(d.holder.pid, work / "anon").start()
        regs.append(d.reg)
        d.reg_auth = ShibafuRegistry(d.holder.pid, work / "auth", users={USER: PASSWORD}).start()
        regs.append(d.reg_auth)
        yield d
    finally:
        codes = [(r.addr, r.stop(), r.log_tail()) for r in regs]
        notes = d.teardown()
        if notes:
            print("\ndockerd teardown notes:", *notes, sep="\n  ")
    for addr, code, log in codes:
        assert code == 0, f"registry {addr} (dockerd's) did not shut down cleanly: {log}"


@pytest.fixture(scope="module")
def podman(busybox_tar, tmp_path_factory):
    """podman in its own namespaces with busybox imported (localhost/busybox:latest);
    its two shibafu registries (anonymous, htpasswd) run in the same namespaces."""
    p = Podman()
    regs = []
    try:
        p.podman("import", "-q", str(busybox_tar), "busybox:latest", timeout=120, check=True)
        work = tmp_path_factory.mktemp("podman-regs")
        p.reg = ShibafuRegistry(p.holder.pid, work / "anon").start()
        regs.append(p.reg)
        p.reg_auth = ShibafuRegistry(p.holder.pid, work / "auth", users={USER: PASSWORD}).start()
        regs.append(p.reg_auth)
        yield p
    finally:
        codes = [(r.addr, r.stop(), r.log_tail()) for r in regs]
        notes = p.teardown()
        if notes:
            print("\npodman teardown notes:", *notes, sep="\n  ")
    for addr, code, log in codes:
        assert code == 0, f"registry {addr} (podman's) did not shut down cleanly: {log}"


# ------------------------------------------------------------------ docker CLI -> shibafu daemon


def test_docker_through_shibafu_push_pull_run(daemon, docker, sreg):
    repo = f"{sreg.addr}/clients/bb"
    ref, ref2 = f"{repo}:v1", f"{sreg.addr}/clients/bb-again:v1"
    try:
        docker("tag", "busybox:latest", ref, check=True)
        r = docker("push", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"The push refers to repository [{repo}]" in r.stdout, r.stdout
        assert re.search(r"^[0-9a-f]{12}: Pushed$", r.stdout, re.M), r.stdout
        digest = _push_digest(r.stdout, "v1")
        assert sreg.inspect("clients/bb:v1")["Digest"] == digest
        assert sreg.tags("clients/bb") == ["v1"]
        assert f"{repo}@{digest}" in image_inspect(docker, ref)["RepoDigests"]
        image_id = image_inspect(docker, ref)["Id"]

        # Again: every layer is already there.
        r = docker("push", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "Layer already exists" in r.stdout and "Pushed" not in r.stdout, r.stdout
        assert _push_digest(r.stdout, "v1") == digest

        # Another repository of the same server: the layer is mounted, not uploaded.
        docker("tag", "busybox:latest", ref2, check=True)
        r = docker("push", ref2, timeout=120)
        assert r.returncode == 0, r.stderr
        mount_out = r.stdout
        assert "Pushed" not in r.stdout, r.stdout
        assert _push_digest(r.stdout, "v1") == digest
        assert sreg.inspect("clients/bb-again:v1")["Digest"] == digest

        docker("rmi", ref, ref2, check=True)
        assert image_inspect(docker, ref) is None
        r = docker("pull", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        assert _pull_digest(r.stdout) == digest
        assert f"Status: Downloaded newer image for {ref}" in r.stdout, r.stdout
        assert image_inspect(docker, ref)["Id"] == image_id
        out = docker("run", "--rm", "--network", "none", ref, "cat", MARKER, check=True, timeout=60).stdout
        assert out == MARKER_TEXT
        # Last, so the checks above run either way: dockerd names the source
        # repository by its path, without the registry ("Mounted from clients/bb").
        assert re.search(r"^[0-9a-f]{12}: Mounted from clients/bb$", mount_out, re.M), mount_out
    finally:
        docker("rmi", "-f", ref, ref2, timeout=60)


def test_docker_through_shibafu_login(daemon, docker, sreg_auth):
    ref = f"{sreg_auth.addr}/private/bb:v1"
    try:
        docker("tag", "busybox:latest", ref, check=True)
        r = docker("push", ref, timeout=120)
        assert r.returncode != 0, f"an anonymous push was accepted:\n{r.stdout}"
        assert re.search(r"no basic auth credentials|unauthorized|authentication required", r.stderr, re.I), \
            r.stderr

        r = docker("login", sreg_auth.addr, "-u", USER, "-p", "wrong-password")
        assert r.returncode != 0, r.stdout
        assert re.search(r"unauthorized|incorrect username or password", r.stderr, re.I), r.stderr

        r = docker("login", sreg_auth.addr, "-u", USER, "-p", PASSWORD)
        assert r.returncode == 0, r.stderr
        assert "Login Succeeded" in r.stdout, r.stdout

        r = docker("push", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        digest = _push_digest(r.stdout, "v1")
        assert sreg_auth.inspect("private/bb:v1")["Digest"] == digest
        r = docker("push", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "Layer already exists" in r.stdout, r.stdout

        docker("rmi", ref, check=True)
        r = docker("pull", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        assert _pull_digest(r.stdout) == digest
        out = docker("run", "--rm", "--network", "none", ref, "cat", MARKER, check=True).stdout
        assert out == MARKER_TEXT

        r = docker("logout", sreg_auth.addr)
        assert r.returncode == 0, r.stderr
        docker("rmi", ref, check=True)
        r = docker("pull", ref, timeout=120)
        assert r.returncode != 0, "an anonymous pull was accepted"
        assert image_inspect(docker, ref) is None
    finally:
        docker("logout", sreg_auth.addr)
        docker("rmi", "-f", ref, timeout=60)


# ------------------------------------------------------------------ docker CLI -> dockerd


def test_dockerd_push_pull_run(dockerd):
    reg, dk = dockerd.reg, dockerd.docker
    repo = f"{reg.addr}/clients/bb"
    ref, ref2 = f"{repo}:v1", f"{reg.addr}/clients/bb-again:v1"
    try:
        dk("tag", "busybox:latest", ref, check=True)
        r = dk("push", ref, timeout=120)
        assert r.returncode == 0, f"{r.stderr}\ndockerd log:\n{dockerd.log_tail()}\nregistry log:\n{reg.log_tail()}"
        assert re.search(r"^[0-9a-f]{12}: Pushed$", r.stdout, re.M), r.stdout
        digest = _push_digest(r.stdout, "v1")
        assert reg.inspect("clients/bb:v1")["Digest"] == digest
        image_id = image_inspect(dk, ref)["Id"]

        r = dk("push", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "Layer already exists" in r.stdout and "Pushed" not in r.stdout, r.stdout

        dk("tag", "busybox:latest", ref2, check=True)
        r = dk("push", ref2, timeout=120)
        assert r.returncode == 0, r.stderr
        assert re.search(r"^[0-9a-f]{12}: Mounted from clients/bb$", r.stdout, re.M), r.stdout
        assert _push_digest(r.stdout, "v1") == digest
        assert reg.inspect("clients/bb-again:v1")["Digest"] == digest

        dk("rmi", ref, ref2, "busybox:latest", check=True)
        r = dk("pull", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        assert _pull_digest(r.stdout) == digest
        assert image_inspect(dk, ref)["Id"] == image_id
        assert f"{repo}@{digest}" in image_inspect(dk, ref)["RepoDigests"]
        out = dk("run", "--rm", "--network", "none", ref, "cat", MARKER, check=True, timeout=120).stdout
        assert out == MARKER_TEXT
    finally:
        dk("tag", ref, "busybox:latest")  # keep busybox for the tests after this one
        dk("rmi", "-f", ref2, timeout=60)


def test_dockerd_login(dockerd):
    reg, dk = dockerd.reg_auth, dockerd.docker
    ref = f"{reg.addr}/private/bb:v1"
    try:
        dk("tag", "busybox:latest", ref, check=True)
        r = dk("push", ref, timeout=120)
        assert r.returncode != 0, f"an anonymous push was accepted:\n{r.stdout}"

        r = dk("login", reg.addr, "-u", USER, "-p", "wrong-password")
        assert r.returncode != 0, r.stdout
        assert re.search(r"unauthorized|incorrect username or password", r.stderr, re.I), r.stderr

        r = dk("login", reg.addr, "-u", USER, "-p", PASSWORD)
        assert r.returncode == 0, f"{r.stderr}\nregistry log:\n{reg.log_tail()}"
        assert "Login Succeeded" in r.stdout, r.stdout

        r = dk("push", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        digest = _push_digest(r.stdout, "v1")
        assert reg.inspect("private/bb:v1")["Digest"] == digest

        dk("rmi", ref, check=True)
        r = dk("pull", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        assert _pull_digest(r.stdout) == digest
        out = dk("run", "--rm", "--network", "none", ref, "cat", MARKER, check=True, timeout=120).stdout
        assert out == MARKER_TEXT

        assert dk("logout", reg.addr).returncode == 0
        dk("rmi", ref, check=True)
        r = dk("pull", ref, timeout=120)
        assert r.returncode != 0, "an anonymous pull was accepted"
    finally:
        dk("logout", reg.addr)
        dk("rmi", "-f", ref, timeout=60)


# ------------------------------------------------------------------ podman


def _podman_digest(p: Podman, ref: str) -> str:
    return p.podman("image", "inspect", "--format", "{{.Digest}}", ref, check=True).stdout.strip()


def _podman_repo_digests(p: Podman, ref: str) -> list[str]:
    return json.loads(p.podman("image", "inspect", ref, check=True).stdout)[0]["RepoDigests"]


def test_podman_push_pull_run(podman):
    reg = podman.reg
    ref = f"{reg.addr}/clients/bb:v1"
    dfile = podman.dir / "tmp" / "digest-push"
    try:
        r = podman.podman("push", "--tls-verify=false", "--digestfile", str(dfile),
                          "localhost/busybox:latest", f"docker://{ref}", timeout=120)
        assert r.returncode == 0, f"{r.stderr}\nregistry log:\n{reg.log_tail()}"
        digest = dfile.read_text().strip()
        assert re.fullmatch(DIGEST, digest), digest
        assert reg.inspect("clients/bb:v1")["Digest"] == digest

        # Pushed again: the layer is there already (podman's blob info cache
        # names its compressed digest; a HEAD finds it), nothing is uploaded.
        r = podman.podman("--log-level=debug", "push", "--tls-verify=false", "localhost/busybox:latest",
                          f"docker://{ref}", timeout=120)
        assert r.returncode == 0, r.stderr
        assert re.search(r"Skipping blob \S+ \(already present\)", r.stderr), r.stderr
        assert "/blobs/uploads/" not in r.stderr, r.stderr

        r = podman.podman("pull", "--tls-verify=false", ref, timeout=120)
        assert r.returncode == 0, f"{r.stderr}\nregistry log:\n{reg.log_tail()}"
        # The image is localhost/busybox's (same ID): .Digest stays the one it had.
        assert f"{reg.addr}/clients/bb@{digest}" in _podman_repo_digests(podman, ref)
        out = podman.podman("run", "--rm", "--network", "none", ref, "cat", MARKER, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout == MARKER_TEXT
    finally:
        podman.podman("rmi", "-f", ref, timeout=60)


def test_podman_login(podman):
    reg = podman.reg_auth
    ref = f"{reg.addr}/private/bb:v1"
    try:
        r = podman.podman("push", "--tls-verify=false", "localhost/busybox:latest", f"docker://{ref}",
                          timeout=120)
        assert r.returncode != 0, "an anonymous push was accepted"
        assert re.search(r"unauthorized|authentication required", r.stderr, re.I), r.stderr

        r = podman.podman("login", "--tls-verify=false", "-u", USER, "-p", "wrong-password", reg.addr)
        assert r.returncode != 0, r.stdout
        assert re.search(r"unauthorized|invalid username/password", r.stderr, re.I), r.stderr

        r = podman.podman("login", "--tls-verify=false", "-u", USER, "-p", PASSWORD, reg.addr)
        assert r.returncode == 0, f"{r.stderr}\nregistry log:\n{reg.log_tail()}"
        assert "Login Succeeded" in r.stdout, r.stdout
        assert reg.addr in json.loads(podman.auth_file.read_text())["auths"]

        r = podman.podman("push", "--tls-verify=false", "localhost/busybox:latest", f"docker://{ref}",
                          timeout=120)
        assert r.returncode == 0, r.stderr
        digest = reg.inspect("private/bb:v1")["Digest"]
        r = podman.podman("pull", "--tls-verify=false", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"{reg.addr}/private/bb@{digest}" in _podman_repo_digests(podman, ref)

        assert podman.podman("logout", reg.addr).returncode == 0
        podman.podman("rmi", "-f", ref, timeout=60)
        r = podman.podman("pull", "--tls-verify=false", ref, timeout=120)
        assert r.returncode != 0, "an anonymous pull was accepted"
    finally:
        podman.podman("logout", "-a")
        podman.podman("rmi", "-f", ref, timeout=60)


# ------------------------------------------------------------------ one client pushes, another pulls


def test_podman_pushes_docker_through_shibafu_pulls(daemon, docker, podman, sreg):
    """podman (its namespace, through a forwarder) pushes to the registry in the
    shibafu daemon's namespace; the docker CLI through shibafu pulls and runs it."""
    ref = f"{sreg.addr}/cross/from-podman:v1"
    fwd = NsForward(podman.holder.pid, daemon.holder.pid, sreg.port)
    dfile = podman.dir / "tmp" / "digest-cross"
    try:
        r = podman.podman("push", "--tls-verify=false", "--digestfile", str(dfile),
                          "localhost/busybox:latest", f"docker://{ref}", timeout=120)
        assert r.returncode == 0, r.stderr
        digest = dfile.read_text().strip()
        assert sreg.inspect("cross/from-podman:v1")["Digest"] == digest
        raw = sreg.raw_manifest("cross/from-podman:v1")

        r = docker("pull", ref, timeout=120)
        assert r.returncode == 0, f"{r.stderr}\nregistry log:\n{sreg.log_tail()}"
        assert _pull_digest(r.stdout) == digest
        ins = image_inspect(docker, ref)
        assert f"{sreg.addr}/cross/from-podman@{digest}" in ins["RepoDigests"]
        assert ins["Id"] == raw["config"]["digest"]
        out = docker("run", "--rm", "--network", "none", ref, "cat", MARKER, check=True).stdout
        assert out == MARKER_TEXT
    finally:
        fwd.stop()
        docker("rmi", "-f", ref, timeout=60)


def test_dockerd_pushes_podman_pulls(dockerd, podman):
    """dockerd pushes to the registry in its namespace; podman (its namespace,
    through a forwarder) pulls and runs it."""
    reg = dockerd.reg
    ref = f"{reg.addr}/cross/from-dockerd:v1"
    fwd = NsForward(podman.holder.pid, dockerd.holder.pid, reg.port)
    try:
        dockerd.docker("tag", "busybox:latest", ref, check=True)
        r = dockerd.docker("push", ref, timeout=120)
        assert r.returncode == 0, r.stderr
        digest = _push_digest(r.stdout, "v1")
        assert reg.inspect("cross/from-dockerd:v1")["Digest"] == digest

        r = podman.podman("pull", "--tls-verify=false", ref, timeout=120)
        assert r.returncode == 0, f"{r.stderr}\nregistry log:\n{reg.log_tail()}"
        assert _podman_digest(podman, ref) == digest
        assert f"{reg.addr}/cross/from-dockerd@{digest}" in _podman_repo_digests(podman, ref)
        out = podman.podman("run", "--rm", "--network", "none", ref, "cat", MARKER, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout == MARKER_TEXT
    finally:
        fwd.stop()
        dockerd.docker("rmi", "-f", ref, timeout=60)
        podman.podman("rmi", "-f", ref, timeout=60)
