"""`docker exec` without a tty (the tty cases are in test_tty.py)."""

from helpers import wait_for


def running(docker, names, *args):
    n = names("exec")
    docker("run", "-d", "--name", n, *args, "busybox", "sleep", "600", check=True)
    return n


def test_exec_output_and_exit_code(docker, names):
    n = running(docker, names)
    r = docker("exec", n, "sh", "-c", "echo out; echo err >&2; exit 5")
    assert r.returncode == 5
    assert r.stdout == "out\n" and r.stderr == "err\n"
    assert docker("exec", n, "true").returncode == 0


def test_exec_sees_container_fs_and_processes(docker, names):
    n = running(docker, names)
    r = docker("exec", n, "sh", "-c", "cat /etc/shibafu-test-image; cat /proc/1/cmdline | tr '\\0' ' '", check=True)
    marker, cmd1 = r.stdout.splitlines()
    assert marker == "shibafu-test-image"
    assert cmd1.strip() == "sleep 600"


def test_exec_user_env_workdir(docker, names):
    n = running(docker, names, "-e", "BASE=1")
    assert docker("exec", "-u", "app", n, "id", "-u", check=True).stdout.strip() == "1000"
    assert docker("exec", "-u", "1000:1000", n, "id", "-g", check=True).stdout.strip() == "1000"
    r = docker("exec", "-e", "FOO=bar", n, "sh", "-c", 'echo "$FOO $BASE"', check=True)
    assert r.stdout == "bar 1\n"
    assert docker("exec", "-w", "/tmp", n, "pwd", check=True).stdout == "/tmp\n"


def test_exec_stdin(docker, names):
    n = running(docker, names)
    r = docker("exec", "-i", n, "sh", "-c", "cat > /tmp/in; wc -c < /tmp/in", input="12345\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "6"
    assert docker("exec", n, "cat", "/tmp/in", check=True).stdout == "12345\n"


def test_exec_detached(docker, names):
    n = running(docker, names)
    r = docker("exec", "-d", n, "sh", "-c", "sleep 0.5; echo done > /tmp/detached")
    assert r.returncode == 0 and r.stdout == ""
    wait_for(lambda: docker("exec", n, "cat", "/tmp/detached").stdout == "done\n", 10, what="detached exec result")


def test_exec_missing_command_and_stopped_container(docker, names):
    n = running(docker, names)
    r = docker("exec", n, "no-such-cmd-xyz")
    assert r.returncode == 127 or r.returncode == 126, (r.returncode, r.stderr)
    # Docker prints this one on the exec's output stream (stdout)
    assert "no-such-cmd-xyz" in r.stdout + r.stderr
    docker("stop", "-t", "0", n, check=True)
    r = docker("exec", n, "true")
    assert r.returncode != 0 and "not running" in r.stderr


def test_exec_does_not_outlive_its_exit_code(docker, daemon, names):
    """ExitCode in exec inspect, through the API the CLI uses."""
    import json
    n = running(docker, names)
    st, _, body = daemon.api("POST", f"/containers/{n}/exec", {"Cmd": ["sh", "-c", "exit 7"], "AttachStdout": True})
    assert st == 201, body
    eid = json.loads(body)["Id"]
    st, _, _ = daemon.api("POST", f"/exec/{eid}/start", {"Detach": True})
    assert st in (200, 204)

    def finished():
        st, _, body = daemon.api("GET", f"/exec/{eid}/json")
        j = json.loads(body)
        return j if not j["Running"] and j["ExitCode"] is not None else None

    j = wait_for(finished, 10, what="exec to finish")
    assert j["ExitCode"] == 7
