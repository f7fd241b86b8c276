"""Restart policies (enforced by the engine, with back-off) and health checks."""

import json
import os
import signal
import time

from helpers import wait_for


def inspect(docker, n):
    return json.loads(docker("inspect", n, check=True).stdout)[0]


def test_restart_on_failure_max_retries(docker, names):
    n = names("onfail")
    docker("run", "-d", "--name", n, "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 1", check=True)

    def settled():
        i = inspect(docker, n)
        return i if i["RestartCount"] == 2 and i["State"]["Status"] == "exited" else None

    i = wait_for(settled, 40, 0.3, "on-failure:2 to give up after 2 restarts")
    assert i["State"]["ExitCode"] == 1
    time.sleep(2)
    assert inspect(docker, n)["RestartCount"] == 2, "restarted beyond MaximumRetryCount"


def test_restart_on_failure_ignores_success(docker, names):
    n = names("onfail0")
    docker("run", "-d", "--name", n, "--restart", "on-failure", "busybox", "true", check=True)
    wait_for(lambda: inspect(docker, n)["State"]["Status"] == "exited", 20, what="exit")
    time.sleep(1.5)
    i = inspect(docker, n)
    assert i["RestartCount"] == 0 and i["State"]["Status"] == "exited"


def test_restart_always_and_stop_sticks(docker, names):
    n = names("always")
    docker("run", "-d", "--name", n, "--restart", "always", "busybox", "sh", "-c", "sleep 0.3; exit 0", check=True)
    wait_for(lambda: inspect(docker, n)["RestartCount"] >= 2, 40, 0.3, "restart always to restart twice")
    docker("stop", "-t", "1", n, check=True)
    time.sleep(2)
    i = inspect(docker, n)
    assert i["State"]["Status"] == "exited", "a stopped restart=always container came back"


def test_restart_backoff_grows(docker, names):
    n = names("backoff")
    docker("run", "-d", "--name", n, "--restart", "always", "busybox", "false", check=True)
    t0 = time.monotonic()
    wait_for(lambda: inspect(docker, n)["RestartCount"] >= 4, 60, 0.2, "4 restarts")
    # Docker: 100 ms doubling back-off; 4 restarts take at least 0.1+0.2+0.4 s
    assert time.monotonic() - t0 >= 0.6
    time.sleep(1)
    count = inspect(docker, n)["RestartCount"]
    assert count < 40, f"no back-off: {count} restarts"


def test_always_restarts_after_process_killed_from_outside(docker, names):
    n = names("alwayskill")
    docker("run", "-d", "--name", n, "--restart", "always", "busybox", "sleep", "600", check=True)
    pid = inspect(docker, n)["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)  # not a user stop: the policy applies

    def restarted():
        i = inspect(docker, n)
        return i["State"]["Running"] and i["State"]["Pid"] != pid and i["RestartCount"] >= 1

    wait_for(restarted, 20, 0.3, "restart=always to bring the killed container back")


def test_health_healthy(docker, daemon, names):
    n = names("healthy")
    docker("run", "-d", "--name", n, "--health-cmd", "test -f /tmp/ok", "--health-interval", "1s",
           "--health-retries", "1", "--health-timeout", "5s",
           "busybox", "sh", "-c", "touch /tmp/ok; sleep 600", check=True)
    wait_for(lambda: "(healthy)" in docker("ps", "--filter", f"name={n}", "--format", "{{.Status}}").stdout,
             30, 0.5, "ps to show (healthy)")
    h = daemon.inspect(n)["State"]["Health"]
    assert h["Status"] == "healthy"
    assert h["FailingStreak"] == 0
    assert h["Log"] and h["Log"][-1]["ExitCode"] == 0
    cfg = daemon.inspect(n)["Config"]["Healthcheck"]
    assert cfg["Test"][-1] == "test -f /tmp/ok" and cfg["Interval"] == 1_000_000_000 and cfg["Retries"] == 1
    assert n in docker("ps", "--filter", "health=healthy", "--format", "{{.Names}}", check=True).stdout.split()


def test_health_unhealthy_then_recovers(docker, daemon, names):
    n = names("unhealthy")
    docker("run", "-d", "--name", n, "--health-cmd", "test -f /tmp/ok", "--health-interval", "1s",
           "--health-retries", "2", "busybox", "sleep", "600", check=True)
    ps_status = lambda: docker("ps", "--filter", f"name={n}", "--format", "{{.Status}}").stdout
    # before the first check passes, Docker says "health: starting"
    assert "(health: starting)" in ps_status() or "(unhealthy)" in ps_status()
    wait_for(lambda: "(unhealthy)" in ps_status(), 30, 0.5, "ps to show (unhealthy)")
    h = daemon.inspect(n)["State"]["Health"]
    assert h["Status"] == "unhealthy" and h["FailingStreak"] >= 2
    assert h["Log"][-1]["ExitCode"] == 1
    docker("exec", n, "touch", "/tmp/ok", check=True)
    wait_for(lambda: "(healthy)" in ps_status(), 30, 0.5, "recovery to healthy")


def test_health_timeout(docker, daemon, names):
    n = names("htimeout")
    docker("run", "-d", "--name", n, "--health-cmd", "sleep 30", "--health-interval", "1s",
           "--health-timeout", "1s", "--health-retries", "1", "busybox", "sleep", "600", check=True)
    wait_for(lambda: daemon.inspect(n)["State"]["Health"]["Status"] == "unhealthy", 30, 0.5,
             "timed-out checks to make it unhealthy")
