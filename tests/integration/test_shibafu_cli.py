"""The core flows through the `shibafu` CLI itself (a client of the same API)."""

import json
import os
import re
import subprocess

from helpers import uniq, wait_for


def test_version_and_info(shibafu):
    r = shibafu("version", check=True)
    assert "Server" in r.stdout and "Client" in r.stdout
    r = shibafu("info", check=True)
    assert "Containers" in r.stdout


def test_host_from_env(daemon):
    env = daemon.env()
    env["SHIBAFU_HOST"] = daemon.host
    r = subprocess.run([daemon.bin, "ps"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("CONTAINER ID")


def test_run_rm_output_and_exit_codes(shibafu):
    r = shibafu("run", "--rm", "busybox", "echo", "hi")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
    assert shibafu("run", "--rm", "busybox", "sh", "-c", "exit 3").returncode == 3
    r = shibafu("run", "--rm", "busybox", "no-such-cmd")
    assert r.returncode == 127 and "no-such-cmd" in r.stderr
    assert shibafu("run", "--rm", "busybox", "/notexec.sh").returncode == 126
    r = shibafu("run", "--rm", "no-such-image-cli", "true")
    assert r.returncode == 125 and "no-such-image-cli" in r.stderr
    r = shibafu("run", "--rm", "-i", "busybox", "cat", input="piped\n")
    assert r.stdout == "piped\n"


def test_run_detached_ps_logs_exec_rm(shibafu, docker, names):
    n = names("cli")
    r = shibafu("run", "-d", "--name", n, "-e", "X=1", "busybox", "sh", "-c", "echo started; sleep 600")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    ps = shibafu("ps", check=True).stdout
    row = next(l for l in ps.splitlines() if l.endswith(n))
    assert row.startswith(cid[:12]) and "Up " in row
    assert cid[:12] in shibafu("ps", "-q", check=True).stdout.split()
    assert n in shibafu("ps", "--format", "{{.Names}}", check=True).stdout.split()
    wait_for(lambda: shibafu("logs", n).stdout == "started\n", 10, what="logs")
    r = shibafu("exec", n, "sh", "-c", "echo $X; exit 6")
    assert (r.returncode, r.stdout) == (6, "1\n")
    assert shibafu("exec", "-u", "app", "-w", "/tmp", n, "sh", "-c", "id -u; pwd", check=True).stdout == "1000\n/tmp\n"
    i = json.loads(shibafu("inspect", n, check=True).stdout)[0]
    assert i["Id"] == cid and i["State"]["Running"] is True
    shibafu("stop", "-t", "1", n, check=True)
    assert n in shibafu("ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}", check=True).stdout.split()
    shibafu("rm", n, check=True)
    assert docker("inspect", n).returncode != 0


def test_logs_follow_and_wait(shibafu, names):
    n = names("clif")
    shibafu("run", "-d", "--name", n, "busybox", "sh", "-c", "for i in 1 2 3; do echo f$i; sleep 0.3; done; exit 2", check=True)
    r = shibafu("logs", "-f", n, timeout=30)
    assert r.stdout == "f1\nf2\nf3\n"
    assert shibafu("wait", n, timeout=30, check=True).stdout.strip() == "2"
    assert shibafu("logs", "--tail", "1", n, check=True).stdout == "f3\n"


def test_lifecycle_commands(shibafu, names):
    n, n2 = names("clil"), names("clil2")
    shibafu("create", "--name", n, "busybox", "sleep", "600", check=True)
    shibafu("start", n, check=True)
    shibafu("pause", n, check=True)
    assert shibafu("inspect", "-f", "{{.State.Status}}", n, check=True).stdout.strip() == "paused"
    shibafu("unpause", n, check=True)
    shibafu("restart", "-t", "0", n, check=True)
    shibafu("rename", n, n2, check=True)
    assert "sleep 600" in shibafu("top", n2, check=True).stdout
    r = shibafu("stats", "--no-stream", n2, timeout=30)
    assert r.returncode == 0 and n2 in r.stdout
    shibafu("update", "--memory", "96m", n2, check=True)
    assert shibafu("inspect", "-f", "{{.HostConfig.Memory}}", n2, check=True).stdout.strip() == str(96 << 20)
    shibafu("kill", n2, check=True)
    wait_for(lambda: shibafu("inspect", "-f", "{{.State.Status}}", n2).stdout.strip() == "exited", 10, what="kill")
    shibafu("rm", "-f", n2, check=True)


def test_cp(shibafu, names, tmp_path):
    n = names("clicp")
    shibafu("run", "-d", "--name", n, "busybox", "sleep", "600", check=True)
    f = tmp_path / "in.txt"
    f.write_text("cli-cp\n")
    shibafu("cp", str(f), f"{n}:/tmp/in.txt", check=True)
    shibafu("cp", f"{n}:/tmp/in.txt", str(tmp_path / "out.txt"), check=True)
    assert (tmp_path / "out.txt").read_text() == "cli-cp\n"


def test_images_import_tag_rmi_inspect(shibafu, busybox_tar):
    repo = uniq("cliimg")
    r = shibafu("import", "--change", "ENV FROM_CLI=1", str(busybox_tar), f"{repo}:v1")
    assert r.returncode == 0, r.stderr
    iid = r.stdout.strip().splitlines()[-1]
    assert iid.startswith("sha256:")
    listing = shibafu("images", check=True).stdout
    assert any(l.split()[:2] == [repo, "v1"] for l in listing.splitlines())
    shibafu("tag", f"{repo}:v1", f"{repo}:v2", check=True)
    info = json.loads(shibafu("image", "inspect", f"{repo}:v2", check=True).stdout)[0]
    assert info["Id"] == iid and "FROM_CLI=1" in info["Config"]["Env"]
    assert shibafu("run", "--rm", f"{repo}:v2", "sh", "-c", "echo $FROM_CLI", check=True).stdout == "1\n"
    shibafu("rmi", f"{repo}:v1", check=True)
    r = shibafu("rmi", f"{repo}:v2", check=True)
    assert "Deleted" in r.stdout
    r = shibafu("image", "inspect", f"{repo}:v2")
    assert r.returncode != 0 and "No such image" in r.stderr


def test_import_from_stdin(shibafu, busybox_tar):
    repo = uniq("clistdin")
    r = shibafu("import", "-", repo, input=busybox_tar.read_bytes(), text=False)
    assert r.returncode == 0, r.stderr
    shibafu("rmi", repo, check=True)


def test_volumes(shibafu, names):
    v = names.volume()
    shibafu("volume", "create", v, check=True)
    assert v in shibafu("volume", "ls", "-q", check=True).stdout.split()
    assert json.loads(shibafu("volume", "inspect", v, check=True).stdout)[0]["Name"] == v
    shibafu("run", "--rm", "-v", f"{v}:/d", "busybox", "sh", "-c", "echo kept > /d/f", check=True)
    assert shibafu("run", "--rm", "-v", f"{v}:/d:ro", "busybox", "cat", "/d/f", check=True).stdout == "kept\n"
    shibafu("volume", "rm", v, check=True)
    assert v not in shibafu("volume", "ls", "-q", check=True).stdout.split()
    other = names.volume()
    shibafu("volume", "create", other, check=True)
    shibafu("volume", "prune", "-a", "-f", check=True)
    assert other not in shibafu("volume", "ls", "-q", check=True).stdout.split()


def test_errors_are_clear(shibafu):
    r = shibafu("inspect", "no-such-thing-cli")
    assert r.returncode != 0 and "no-such-thing-cli" in r.stderr
    r = shibafu("rm", "no-such-container-cli")
    assert r.returncode != 0 and "No such container" in r.stderr
    r = shibafu("run", "--memory", "12q", "busybox", "true")
    assert r.returncode == 125 and "12q" in r.stderr


def test_unreachable_daemon_message(daemon, tmp_path):
    r = subprocess.run([daemon.bin, "-H", f"unix://{tmp_path}/nope.sock", "ps"], capture_output=True, text=True,
                       timeout=30, env={k: v for k, v in os.environ.items() if k != "SHIBAFU_HOST"})
    assert r.returncode != 0
    assert "nope.sock" in r.stderr
