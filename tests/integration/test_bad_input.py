"""Bad input: a clear error naming the problem, and nothing left behind
(no record, no mount, no cgroup, no supervisor)."""

import os
import time

import pytest

from helpers import pid_alive, cgroup_procs, container_cgroups, shibafu_cgroup_dirs, uniq, wait_for


class Leaks:
    """Snapshot of what containers leave on the host, to compare after a failure."""

    def __init__(self, daemon):
        self.d = daemon
        self.dirs = daemon.container_dirs()
        self.mounts = set(daemon.mounts_under_tmp())
        self.sups = set(daemon.supervisors())
        self.cgroups = shibafu_cgroup_dirs()
        self.records = self.container_ids()

    def container_ids(self):
        r = self.d.docker("ps", "-a", "-q", "--no-trunc", check=True)
        return set(r.stdout.split())

    def assert_nothing_new(self, allow_records=()):
        # give asynchronous cleanup a moment, as a user would
        def settled():
            return (self.d.container_dirs() - self.dirs <= set(allow_records)
                    and set(self.d.mounts_under_tmp()) <= self.mounts
                    and set(self.d.supervisors()) <= self.sups)

        try:
            wait_for(settled, 10, 0.2, "cleanup")
        except AssertionError:
            pass
        new_dirs = self.d.container_dirs() - self.dirs - set(allow_records)
        assert not new_dirs, f"container directories left under data-root: {new_dirs}"
        new_records = self.container_ids() - self.records - set(allow_records)
        assert not new_records, f"container records left: {new_records}"
        new_mounts = set(self.d.mounts_under_tmp()) - self.mounts
        assert not new_mounts, f"mounts left: {new_mounts}"
        new_sups = {p: a for p, a in self.d.supervisors().items() if p not in self.sups}
        assert not new_sups, f"supervisors left: {new_sups}"
        # cgroup dirs that appeared and hold no process (busy ones may belong to
        # other containers started meanwhile)
        new_cg = [c for c in shibafu_cgroup_dirs() - self.cgroups if not cgroup_procs(c)]
        assert not new_cg, f"cgroups left: {new_cg}"


@pytest.fixture
def leaks(daemon):
    return Leaks(daemon)


def assert_container_fully_gone(daemon, cid):
    assert cid not in daemon.container_dirs()
    assert not [m for m in daemon.mounts_under_tmp() if cid in m], "overlay mount left"
    assert not [a for a in daemon.supervisors().values() if any(cid in x for x in a)], "supervisor left"
    assert not container_cgroups([cid]), f"cgroup left: {container_cgroups([cid])}"


def test_unknown_image(docker, leaks):
    r = docker("run", "--rm", "no-such-image-bad:1", "true")
    assert r.returncode == 125
    assert "no-such-image-bad" in r.stderr
    r = docker("create", "no-such-image-bad:1", "true")
    assert r.returncode != 0 and "no-such-image-bad" in r.stderr
    leaks.assert_nothing_new()


def test_unknown_container(docker, daemon):
    for cmd in (["start"], ["stop"], ["kill"], ["rm"], ["logs"], ["inspect"], ["exec"], ["wait"],
                ["pause"], ["restart"], ["top"], ["port"]):
        args = cmd + ["no-such-ctr-bad"] + (["true"] if cmd == ["exec"] else [])
        r = docker(*args, timeout=30)
        assert r.returncode != 0, cmd
        assert "no-such-ctr-bad" in r.stderr, (cmd, r.stderr)
    st, h, body = daemon.api("DELETE", "/containers/no-such-ctr-bad")
    assert st == 404 and b"No such container: no-such-ctr-bad" in body


def test_name_in_use(docker, names, leaks):
    n = names("dup")
    cid = docker("run", "-d", "--name", n, "busybox", "sleep", "600", check=True).stdout.strip()
    leaks.records.add(cid)
    leaks.dirs |= {d for d in leaks.d.container_dirs() if d.startswith(cid[:12])}
    leaks.sups = set(leaks.d.supervisors())
    leaks.mounts = set(leaks.d.mounts_under_tmp())
    leaks.cgroups = shibafu_cgroup_dirs()
    r = docker("run", "-d", "--name", n, "busybox", "true")
    assert r.returncode == 125
    assert n in r.stderr and ("already in use" in r.stderr or "Conflict" in r.stderr)
    leaks.assert_nothing_new()
    # the first container is untouched
    assert docker("inspect", "-f", "{{.State.Running}}", n, check=True).stdout.strip() == "true"


@pytest.mark.parametrize("args, needle", [
    (["--memory", "12q"], "12q"),
    (["--cpus", "-1"], "cpus"),
    (["--pids-limit", "abc"], "abc"),
    (["--restart", "sometimes"], "sometimes"),
    (["--memory", "1k"], "emory"),
    (["-v", "relative/path:/x"], "relative/path"),
])
def test_invalid_values(docker, leaks, args, needle):
    r = docker("run", *args, "busybox", "true")
    assert r.returncode == 125, (r.returncode, r.stderr)
    assert needle.lower() in r.stderr.lower(), r.stderr
    leaks.assert_nothing_new()


def test_invalid_values_via_api(daemon, leaks):
    for host_config, needle in (({"Memory": -5}, "emory"), ({"NanoCpus": -1}, "cpu"),
                                ({"RestartPolicy": {"Name": "bogus"}}, "bogus"),
                                ({"CapAdd": ["NOT_A_CAP"]}, "NOT_A_CAP")):
        st, _, body = daemon.api("POST", "/containers/create", {"Image": "busybox", "Cmd": ["true"], "HostConfig": host_config})
        assert st == 400, (host_config, st, body)
        assert needle.lower() in body.decode().lower(), body
    leaks.assert_nothing_new()


def test_missing_command_leaves_no_running_parts(docker, daemon, leaks, names):
    r = docker("run", "--rm", "busybox", "no-such-command-bad")
    assert r.returncode == 127 and "no-such-command-bad" in r.stderr
    leaks.assert_nothing_new()
    # without --rm Docker keeps a record (state created/exited, exit code 127),
    # but nothing is running or mounted for it
    n = names("nocmd")
    r = docker("run", "--name", n, "busybox", "no-such-command-bad")
    assert r.returncode == 127
    cid = docker("inspect", "-f", "{{.Id}}", n, check=True).stdout.strip()
    assert docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", n, check=True).stdout.split() == ["false", "127"]
    assert not [a for a in daemon.supervisors().values() if any(cid in x for x in a)]
    assert not [c for c in container_cgroups([cid]) if cgroup_procs(c)]
    docker("rm", n, check=True)
    assert_container_fully_gone(daemon, cid)


def test_not_executable_leaves_nothing(docker, leaks):
    r = docker("run", "--rm", "busybox", "/notexec.sh")
    assert r.returncode == 126
    leaks.assert_nothing_new()


def test_missing_workdir_file_conflict(docker, leaks):
    # the workdir is a file: the runtime cannot chdir into it
    r = docker("run", "--rm", "-w", "/etc/passwd", "busybox", "true")
    assert r.returncode != 0
    assert "/etc/passwd" in r.stderr or "not a directory" in r.stderr.lower()
    leaks.assert_nothing_new()


def test_corrupt_tarball_import(docker, daemon, tmp_path, leaks, busybox_tar):
    images_before = docker("images", "-q", "--no-trunc", check=True).stdout.split()
    bad = tmp_path / "corrupt.tar"
    bad.write_bytes(b"this is not a tar archive at all" * 100)
    repo = uniq("corrupt")
    r = docker("import", str(bad), repo)
    assert r.returncode != 0
    assert "tar" in r.stderr.lower() or "archive" in r.stderr.lower()
    # a truncated real tarball
    good = busybox_tar.read_bytes()
    trunc = tmp_path / "trunc.tar"
    trunc.write_bytes(good[: len(good) // 2 + 100])
    r = docker("import", str(trunc), repo + "b")
    assert r.returncode != 0
    # a gzip header with garbage after it
    gz = tmp_path / "bad.tar.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(2000))
    r = docker("import", str(gz), repo + "c")
    assert r.returncode != 0
    assert docker("images", "-q", "--no-trunc", check=True).stdout.split() == images_before
    for suffix in ("", "b", "c"):
        assert docker("image", "inspect", repo + suffix).returncode != 0
    # no partial layer left in the store
    leftovers = [p for p in daemon.data_root.rglob("*") if any(t in p.name for t in ("tmp", "partial", "incomplete"))
                 and p.is_file()]
    assert not leftovers, leftovers
    leaks.assert_nothing_new()


def test_rm_removes_everything(docker, daemon, names):
    n = names("gone")
    sups_before = set(daemon.supervisors())
    cid = docker("run", "-d", "--name", n, "--memory", "32m", "busybox", "sleep", "600", check=True).stdout.strip()
    mine = set(daemon.supervisors()) - sups_before
    assert len(mine) == 1, f"expected one new supervisor, found {mine}"
    assert container_cgroups([cid]), "container has no cgroup named after it"
    assert [m for m in daemon.mounts_under_tmp() if cid in m], "no rootfs mount named after the container"
    docker("rm", "-f", n, check=True)
    wait_for(lambda: not container_cgroups([cid]), 10, what="cgroup removal")
    assert_container_fully_gone(daemon, cid)
    assert not any(pid_alive(p) for p in mine), "supervisor still running after rm -f"


def test_rm_of_exited_container_removes_everything(docker, daemon, names):
    n = names("gone2")
    docker("run", "--name", n, "busybox", "true", check=True)
    cid = docker("inspect", "-f", "{{.Id}}", n, check=True).stdout.strip()
    time.sleep(0.3)
    assert not [a for a in daemon.supervisors().values() if any(cid in x for x in a)], "supervisor of an exited container still running"
    docker("rm", n, check=True)
    assert_container_fully_gone(daemon, cid)
