"""pytest fixtures: one shibafu daemon per session, in private namespaces.

Environment:
  SHIBAFU_BIN           binary under test (default target/release/shibafu,
                        falling back to target/debug/shibafu)
  SHIBAFU_TEST_LOGDIR   where daemon logs are kept after the run
                        (default /tmp/shibafu-test-logs)
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import REPO, Daemon, shibafu_bin, uniq

BUSYBOX_IMAGE = "busybox:latest"


def pytest_report_header(config):
    return [f"shibafu binary: {shibafu_bin()}"]


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("images")
    r = subprocess.run([str(REPO / "tests/images/make-busybox-rootfs.sh"), str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"building the busybox rootfs failed: {r.stderr}"
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def daemon(busybox_tar):
    if os.geteuid() != 0:
        pytest.exit("the integration tests need root (namespaces, cgroups, overlayfs)", returncode=2)
    binary = shibafu_bin()
    if not os.path.exists(binary):
        pytest.exit(f"shibafu binary not found at {binary} (build it or set SHIBAFU_BIN)", returncode=2)
    tmp = Path(tempfile.mkdtemp(prefix="shibafu-it-", dir="/tmp"))
    d = Daemon(tmp, binary, Path(os.environ.get("SHIBAFU_TEST_LOGDIR", "/tmp/shibafu-test-logs")))
    d.start_holder()
    try:
        d.start()
        r = d.docker("import", str(busybox_tar), BUSYBOX_IMAGE, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"importing busybox failed ({r.returncode}): {r.stderr}\n{d.log_tail()}")
    except BaseException:
        errs = d.teardown()
        if errs:
            print("teardown:", *errs, sep="\n  ")
        raise
    yield d
    errs = d.teardown()
    if errs:
        print("\nteardown notes:", *errs, sep="\n  ")


@pytest.fixture(autouse=True)
def _daemon_health(request):
    """A test that crashes the daemon fails, and the next test gets a fresh one."""
    if "daemon" not in request.fixturenames:
        yield
        return
    d: Daemon = request.getfixturevalue("daemon")
    if not d.alive():
        d.start()
    yield
    if not d.alive() and not getattr(request.node, "_kills_daemon", False):
        code = d.proc.returncode
        d.start()
        pytest.fail(f"the daemon died during this test (exit {code}); log tail:\n{d.log_tail()}")


class Names:
    """Unique names for one test; every container/volume named here is removed after it."""

    def __init__(self, daemon: Daemon):
        self.d = daemon
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def __call__(self, prefix: str = "c") -> str:
        n = uniq(prefix)
        self.containers.append(n)
        return n

    def volume(self, prefix: str = "v") -> str:
        n = uniq(prefix)
        self.volumes.append(n)
        return n

    def cleanup(self):
        if not self.d.alive():
            return
        if self.containers:
            self.d.docker("rm", "-f", "-v", *self.containers, timeout=120)
        if self.volumes:
            self.d.docker("volume", "rm", "-f", *self.volumes, timeout=60)


@pytest.fixture
def names(daemon):
    n = Names(daemon)
    yield n
    n.cleanup()


@pytest.fixture
def docker(daemon):
    """The docker CLI bound to the test daemon: docker("ps", "-a")."""
    return daemon.docker


@pytest.fixture
def shibafu(daemon):
    return daemon.shibafu


@pytest.fixture
def client(daemon):
    c = daemon.client()
    yield c
    c.close()
