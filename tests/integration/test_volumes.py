"""Named volumes, bind mounts, read-only mounts and the volume commands."""

import json
import os


def test_named_volume_persists_across_containers(docker, names):
    v = names.volume()
    docker("run", "--rm", "-v", f"{v}:/data", "busybox", "sh", "-c", "echo persisted > /data/f", check=True)
    r = docker("run", "--rm", "-v", f"{v}:/data", "busybox", "cat", "/data/f", check=True)
    assert r.stdout == "persisted\n"
    assert v in docker("volume", "ls", "-q", check=True).stdout.split()


def test_read_only_volume_refuses_writes(docker, names):
    v = names.volume()
    docker("volume", "create", v, check=True)
    r = docker("run", "--rm", "-v", f"{v}:/data:ro", "busybox", "sh", "-c", "echo x > /data/g")
    assert r.returncode != 0
    assert "Read-only file system" in r.stderr
    # readable though
    assert docker("run", "--rm", "-v", f"{v}:/data:ro", "busybox", "ls", "/data").returncode == 0


def test_bind_mount_both_ways(docker, daemon, tmp_path):
    host_dir = daemon.tmp / f"bind-{os.getpid()}"
    host_dir.mkdir()
    (host_dir / "from-host").write_text("hello\n")
    r = docker("run", "--rm", "-v", f"{host_dir}:/mnt", "busybox", "sh", "-c",
               "cat /mnt/from-host; echo back > /mnt/from-container", check=True)
    assert r.stdout == "hello\n"
    assert (host_dir / "from-container").read_text() == "back\n"
    r = docker("run", "--rm", "-v", f"{host_dir}:/mnt:ro", "busybox", "touch", "/mnt/nope")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    assert not (host_dir / "nope").exists()


def test_bind_mount_missing_host_path_is_created_or_refused(docker, daemon):
    # Docker's -v creates a missing host directory.
    missing = daemon.tmp / f"created-by-v-{os.getpid()}"
    r = docker("run", "--rm", "-v", f"{missing}:/mnt", "busybox", "true")
    assert r.returncode == 0, r.stderr
    assert missing.is_dir()


def test_volume_create_inspect_ls_rm(docker, names):
    v = names.volume()
    assert docker("volume", "create", "--label", "purpose=test", v, check=True).stdout.strip() == v
    info = json.loads(docker("volume", "inspect", v, check=True).stdout)[0]
    assert info["Name"] == v and info["Driver"] == "local"
    assert info["Labels"] == {"purpose": "test"}
    assert info["Mountpoint"].startswith("/")
    ls = docker("volume", "ls", "--format", "{{.Driver}} {{.Name}}", check=True).stdout.splitlines()
    assert f"local {v}" in ls
    assert v in docker("volume", "ls", "-q", "--filter", "label=purpose=test", check=True).stdout.split()
    docker("volume", "rm", v, check=True)
    r = docker("volume", "inspect", v)
    assert r.returncode != 0 and v in r.stderr


def test_volume_in_use_cannot_be_removed(docker, names):
    v = names.volume()
    n = names("vuse")
    docker("run", "-d", "--name", n, "-v", f"{v}:/data", "busybox", "sleep", "600", check=True)
    r = docker("volume", "rm", v)
    assert r.returncode != 0 and "in use" in r.stderr.lower()
    docker("rm", "-f", n, check=True)
    docker("volume", "rm", v, check=True)


def test_volume_prune(docker, names):
    used, unused = names.volume(), names.volume()
    n = names("vprune")
    docker("volume", "create", unused, check=True)
    docker("run", "-d", "--name", n, "-v", f"{used}:/data", "busybox", "sleep", "600", check=True)
    docker("volume", "prune", "-a", "-f", check=True)
    left = docker("volume", "ls", "-q", check=True).stdout.split()
    assert unused not in left
    assert used in left


def test_rm_v_removes_anonymous_volume(docker, names):
    n = names("anon")
    docker("run", "--name", n, "-v", "/anon", "busybox", "true", check=True)
    mounts = json.loads(docker("inspect", "-f", "{{json .Mounts}}", n, check=True).stdout)
    vol = next(m["Name"] for m in mounts if m["Destination"] == "/anon")
    assert vol in docker("volume", "ls", "-q", check=True).stdout.split()
    docker("rm", "-v", n, check=True)
    assert vol not in docker("volume", "ls", "-q", check=True).stdout.split()


def test_mounts_in_inspect(docker, daemon, names):
    v = names.volume()
    n = names("mnt")
    docker("run", "-d", "--name", n, "-v", f"{v}:/data:ro", "-v", f"{daemon.tmp}:/host",
           "busybox", "sleep", "600", check=True)
    mounts = {m["Destination"]: m for m in daemon.inspect(n)["Mounts"]}
    assert mounts["/data"]["Type"] == "volume" and mounts["/data"]["Name"] == v and mounts["/data"]["RW"] is False
    assert mounts["/host"]["Type"] == "bind" and mounts["/host"]["Source"] == str(daemon.tmp) and mounts["/host"]["RW"] is True
