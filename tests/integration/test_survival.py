"""Containers outlive the daemon: kill -9 it, and a new daemon re-adopts them."""

import os
import signal
import subprocess
import time

import pytest

from helpers import pid_alive, wait_for

COUNTER = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"


@pytest.fixture
def kills_daemon(request, daemon):
    """Marks the test as one that kills the daemon on purpose."""
    request.node._kills_daemon = True
    yield daemon
    if not daemon.alive():
        daemon.start()


def last_tick(text: str) -> int:
    ticks = [int(l.split()[1]) for l in text.splitlines() if l.startswith("tick ")]
    return ticks[-1] if ticks else 0


def test_running_container_survives_daemon_kill(docker, names, kills_daemon):
    d = kills_daemon
    n = names("surv")
    docker("run", "-d", "--name", n, "busybox", "sh", "-c", COUNTER, check=True)
    pid = int(docker("inspect", "-f", "{{.State.Pid}}", n, check=True).stdout)
    wait_for(lambda: last_tick(docker("logs", n).stdout) >= 2, 10, what="first ticks")
    sups_before = d.supervisors()
    assert sups_before, "no supervisor process found for the daemon's containers"

    before_down = last_tick(docker("logs", n, check=True).stdout)
    d.kill9()
    time.sleep(2)
    assert pid_alive(pid), "the container died with the daemon"
    for spid in sups_before:
        assert pid_alive(spid), "a supervisor died with the daemon"

    d.start()
    assert docker("inspect", "-f", "{{.State.Status}} {{.State.Pid}}", n, check=True).stdout.split() == ["running", str(pid)]
    assert n in docker("ps", "--format", "{{.Names}}", check=True).stdout.split()
    # lines written while the daemon was down are in the log
    logs = docker("logs", n, check=True).stdout
    assert last_tick(logs) >= before_down + 5, "log lines from the daemon's downtime are missing"
    ticks = [int(l.split()[1]) for l in logs.splitlines()]
    assert ticks == list(range(1, len(ticks) + 1)), "log has gaps or duplicates"

    # logs -f follows new output
    p = subprocess.Popen(["docker", "logs", "-f", "--tail", "0", n], env=d.env(), stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("tick ")
    finally:
        p.kill()
        p.wait()
    # exec works
    r = docker("exec", n, "cat", "/proc/1/cmdline")
    assert r.returncode == 0 and "while true" in r.stdout
    # attach gets live output
    p = subprocess.Popen(["docker", "attach", "--no-stdin", n], env=d.env(), stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("tick ")
    finally:
        p.kill()
        p.wait()
    # stop works and the exit is recorded
    docker("stop", "-t", "1", n, check=True)
    assert docker("inspect", "-f", "{{.State.Status}}", n, check=True).stdout.strip() == "exited"
    assert not pid_alive(pid)


def test_exit_while_daemon_down_is_learned(docker, names, kills_daemon):
    d = kills_daemon
    n = names("exitdown")
    docker("run", "-d", "--name", n, "busybox", "sh", "-c", "sleep 3; echo bye; exit 7", check=True)
    pid = int(docker("inspect", "-f", "{{.State.Pid}}", n, check=True).stdout)
    d.kill9()
    wait_for(lambda: not pid_alive(pid), 20, what="container to exit while the daemon is down")
    time.sleep(0.5)
    d.start()
    r = docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.State.Running}}", n, check=True)
    assert r.stdout.split() == ["exited", "7", "false"]
    assert docker("logs", n, check=True).stdout == "bye\n"
    assert docker("wait", n, timeout=10).stdout.strip() == "7"
    assert n in docker("ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}", check=True).stdout.split()
    # its supervisor is gone and it can be removed cleanly
    docker("rm", n, check=True)


def test_restart_always_container_killed_while_daemon_down(docker, names, kills_daemon):
    d = kills_daemon
    n = names("alwaysdown")
    docker("run", "-d", "--name", n, "--restart", "always", "busybox", "sleep", "600", check=True)
    pid = int(docker("inspect", "-f", "{{.State.Pid}}", n, check=True).stdout)
    d.kill9()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 10, what="container to die")
    d.start()

    def back():
        r = docker("inspect", "-f", "{{.State.Running}} {{.State.Pid}}", n)
        running, newpid = r.stdout.split()
        return running == "true" and int(newpid) != pid

    wait_for(back, 30, 0.3, "the new daemon to restart the restart=always container")


def test_daemon_restart_keeps_stopped_and_created(docker, names, kills_daemon):
    d = kills_daemon
    created, exited = names("keepc"), names("keepe")
    docker("create", "--name", created, "-l", "k=v", "busybox", "echo", "later", check=True)
    docker("run", "--name", exited, "busybox", "sh", "-c", "echo done; exit 4")
    d.kill9()
    d.start()
    assert docker("inspect", "-f", "{{.State.Status}} {{.Config.Labels.k}}", created, check=True).stdout.split() == ["created", "v"]
    assert docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", exited, check=True).stdout.split() == ["exited", "4"]
    r = docker("start", "-a", created)
    assert r.returncode == 0 and r.stdout == "later\n"


def test_graceful_daemon_stop_leaves_containers_running(docker, names, kills_daemon):
    d = kills_daemon
    n = names("sigterm")
    docker("run", "-d", "--name", n, "busybox", "sleep", "600", check=True)
    pid = int(docker("inspect", "-f", "{{.State.Pid}}", n, check=True).stdout)
    d.stop()
    assert not d.alive()
    assert pid_alive(pid)
    d.start()
    assert docker("inspect", "-f", "{{.State.Running}}", n, check=True).stdout.strip() == "true"


def test_stale_socket_and_state_after_crash(daemon, kills_daemon):
    d = kills_daemon
    d.kill9()
    assert os.path.exists(d.sock), "expected the crashed daemon's socket file to remain"
    d.start()  # must replace the stale socket and clean stale state
    assert d.ping()
