"""Detached containers: ps, logs, stop/kill/restart/pause, rm, rename, wait,
inspect, top, stats, port, cp, events."""

import calendar
import json
import os
import re
import subprocess
import time

from helpers import wait_for

COUNTER = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.2; done"


def run_d(docker, name, *args):
    r = docker("run", "-d", "--name", name, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def state(docker, name, fmt="{{.State.Status}}"):
    return docker("inspect", "-f", fmt, name, check=True).stdout.strip()


def test_run_detached_and_ps(docker, names):
    n = names("ps")
    cid = run_d(docker, n, "busybox", "sleep", "600")
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    r = docker("ps", check=True)
    header, *rows = r.stdout.splitlines()
    assert header.split()[:2] == ["CONTAINER", "ID"]
    row = next(row for row in rows if row.endswith(n))
    assert row.startswith(cid[:12])
    assert "busybox" in row and "Up " in row
    assert cid[:12] in docker("ps", "-q", check=True).stdout.split()


def test_ps_all_filter_format(docker, names):
    up, done = names("up"), names("done")
    run_d(docker, up, "busybox", "sleep", "600")
    docker("run", "--name", done, "busybox", "sh", "-c", "exit 2")
    running = docker("ps", "--format", "{{.Names}}", check=True).stdout.split()
    assert up in running and done not in running
    everything = docker("ps", "-a", "--format", "{{.Names}}", check=True).stdout.split()
    assert up in everything and done in everything
    exited = docker("ps", "-a", "--filter", "status=exited", "--format", "{{.Names}} {{.Status}}", check=True).stdout
    line = next(x for x in exited.splitlines() if x.startswith(done + " "))
    assert "Exited (2)" in line
    assert up not in exited.split()
    assert docker("ps", "-a", "--filter", f"name={done}", "-q", check=True).stdout.strip() != ""
    # id filter and json format
    cid = state(docker, up, "{{.Id}}")
    out = docker("ps", "--filter", f"id={cid[:12]}", "--format", "{{json .}}", check=True).stdout.strip()
    assert json.loads(out)["Names"] == up


def test_logs_basic_tail_timestamps(docker, names):
    n = names("logs")
    docker("run", "--name", n, "busybox", "sh", "-c", "for i in 1 2 3 4 5; do echo out$i; done; echo err >&2", check=True)
    r = docker("logs", n, check=True)
    assert r.stdout == "".join(f"out{i}\n" for i in range(1, 6))
    assert r.stderr == "err\n"
    r = docker("logs", "--tail", "2", n, check=True)
    assert (r.stdout, r.stderr) == ("out5\n", "err\n")
    r = docker("logs", "--tail", "3", n, check=True)
    assert r.stdout.splitlines() == ["out4", "out5"] and r.stderr == "err\n"
    r = docker("logs", "-t", n, check=True)
    for line in r.stdout.splitlines():
        ts, text = line.split(" ", 1)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", ts), ts
        assert text.startswith("out")


def test_logs_since(docker, names):
    n = names("since")
    docker("run", "--name", n, "busybox", "sh", "-c", "echo early; sleep 2; echo late", check=True)
    lines = docker("logs", "-t", n, check=True).stdout.splitlines()
    late_ts = lines[1].split()[0]
    # a point between the two lines: one second before the late one
    sec = late_ts[:19]
    t = time.strptime(sec, "%Y-%m-%dT%H:%M:%S")
    since = calendar.timegm(t) - 1
    r = docker("logs", "--since", str(since), n, check=True)
    assert r.stdout == "late\n"
    r = docker("logs", "--since", str(since - 10), n, check=True)
    assert r.stdout == "early\nlate\n"


def test_logs_follow_ends_when_container_exits(docker, names):
    n = names("follow")
    run_d(docker, n, "busybox", "sh", "-c", "for i in 1 2 3; do echo n$i; sleep 0.5; done")
    t0 = time.monotonic()
    r = docker("logs", "-f", n, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "n1\nn2\nn3\n"
    assert time.monotonic() - t0 < 20


def test_logs_follow_streams_live(docker, daemon, names):
    n = names("live")
    run_d(docker, n, "busybox", "sh", "-c", COUNTER)
    p = subprocess.Popen(["docker", "logs", "-f", "--tail", "0", n], env=daemon.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        second = p.stdout.readline()
        assert first.startswith("line ") and second.startswith("line ")
        assert int(second.split()[1]) == int(first.split()[1]) + 1
    finally:
        p.kill()
        p.wait()


def test_stop_with_trap_and_kill_fallback(docker, names):
    graceful, stubborn = names("grace"), names("stub")
    run_d(docker, graceful, "busybox", "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done")
    run_d(docker, stubborn, "busybox", "sleep", "600")  # PID 1 ignores SIGTERM
    t0 = time.monotonic()
    docker("stop", graceful, check=True)
    assert time.monotonic() - t0 < 8
    assert state(docker, graceful, "{{.State.Status}} {{.State.ExitCode}}").split() == ["exited", "0"]
    t0 = time.monotonic()
    docker("stop", "-t", "1", stubborn, check=True)
    assert time.monotonic() - t0 < 8
    assert state(docker, stubborn, "{{.State.Status}} {{.State.ExitCode}}").split() == ["exited", "137"]


def test_stop_signal_and_timeout_options(docker, daemon, names):
    n = names("stopsig")
    run_d(docker, n, "--stop-signal", "USR1", "--stop-timeout", "3", "busybox", "sh", "-c",
          "trap 'exit 42' USR1; while true; do sleep 0.1; done")
    cfg = daemon.inspect(n)["Config"]
    assert cfg["StopSignal"] in ("USR1", "SIGUSR1")
    assert cfg["StopTimeout"] == 3
    docker("stop", n, check=True)
    assert state(docker, n, "{{.State.ExitCode}}") == "42"


def test_kill_and_kill_signal(docker, names):
    a, b = names("kill"), names("killsig")
    run_d(docker, a, "busybox", "sleep", "600")
    run_d(docker, b, "busybox", "sh", "-c", "trap 'echo got-usr1; exit 9' USR1; while true; do sleep 0.1; done")
    docker("kill", a, check=True)
    wait_for(lambda: state(docker, a) == "exited", 10, what="killed container to exit")
    assert state(docker, a, "{{.State.ExitCode}}") == "137"
    docker("kill", "-s", "USR1", b, check=True)
    wait_for(lambda: state(docker, b) == "exited", 10, what="USR1 container to exit")
    assert state(docker, b, "{{.State.ExitCode}}") == "9"
    assert "got-usr1" in docker("logs", b, check=True).stdout
    r = docker("kill", a)
    assert r.returncode != 0 and "not running" in r.stderr


def test_restart(docker, names):
    n = names("restart")
    run_d(docker, n, "busybox", "sleep", "600")
    pid1, started1 = state(docker, n, "{{.State.Pid}} {{.State.StartedAt}}").split()
    docker("restart", "-t", "0", n, check=True)
    pid2, started2, status = state(docker, n, "{{.State.Pid}} {{.State.StartedAt}} {{.State.Status}}").split()
    assert status == "running"
    assert pid2 != pid1 and started2 != started1


def test_pause_unpause(docker, names):
    n = names("pause")
    run_d(docker, n, "busybox", "sh", "-c", COUNTER)
    wait_for(lambda: "line 2" in docker("logs", n).stdout, 10, what="counter output")
    docker("pause", n, check=True)
    assert state(docker, n, "{{.State.Status}} {{.State.Paused}}").split() == ["paused", "true"]
    ps = docker("ps", "--filter", f"name={n}", "--format", "{{.Status}}", check=True).stdout
    assert "(Paused)" in ps
    time.sleep(0.5)
    count1 = len(docker("logs", n, check=True).stdout.splitlines())
    time.sleep(1.2)
    count2 = len(docker("logs", n, check=True).stdout.splitlines())
    assert count1 == count2, "a paused container kept writing"
    r = docker("exec", n, "true")
    assert r.returncode != 0 and "paused" in r.stderr.lower()
    docker("unpause", n, check=True)
    assert state(docker, n) == "running"
    wait_for(lambda: len(docker("logs", n).stdout.splitlines()) > count2 + 2, 10, what="output after unpause")


def test_rm_running_needs_force(docker, names):
    n = names("rmf")
    run_d(docker, n, "busybox", "sleep", "600")
    r = docker("rm", n)
    assert r.returncode != 0
    assert "running" in r.stderr.lower() and "force" in r.stderr.lower()
    docker("rm", "-f", n, check=True)
    assert n not in docker("ps", "-a", "--format", "{{.Names}}", check=True).stdout.split()
    r = docker("inspect", n)
    assert r.returncode != 0 and "No such" in r.stderr


def test_rename(docker, names):
    old, new = names("old"), names("new")
    run_d(docker, old, "busybox", "sleep", "600")
    docker("rename", old, new, check=True)
    assert state(docker, new, "{{.Name}}") == "/" + new
    assert docker("inspect", old).returncode != 0
    assert docker("exec", new, "true").returncode == 0


def test_wait(docker, names):
    n = names("wait")
    run_d(docker, n, "busybox", "sh", "-c", "sleep 1; exit 4")
    r = docker("wait", n, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "4"
    # waiting on an exited container answers at once
    assert docker("wait", n, timeout=10).stdout.strip() == "4"


def test_inspect_fields(docker, daemon, names):
    n = names("insp")
    cid = run_d(docker, n, "-e", "FOO=bar", "-l", "k=v", "--hostname", "h1", "-w", "/tmp",
                "--memory", "64m", "--cpus", "0.5", "--pids-limit", "50", "--restart", "on-failure:3",
                "--cap-add", "NET_ADMIN", "--read-only", "busybox", "sleep", "600")
    i = daemon.inspect(n)
    assert i["Id"] == cid and i["Name"] == "/" + n
    assert i["Image"].startswith("sha256:")
    assert i["Created"] and i["Path"] == "sleep" and i["Args"] == ["600"]
    s = i["State"]
    assert s["Status"] == "running" and s["Running"] is True and s["Paused"] is False
    assert s["Pid"] > 0 and os.path.exists(f"/proc/{s['Pid']}")
    assert s["ExitCode"] == 0 and s["StartedAt"].startswith("20")
    c = i["Config"]
    assert c["Image"] == "busybox" and c["Cmd"] == ["sleep", "600"]
    assert "FOO=bar" in c["Env"] and c["Labels"]["k"] == "v"
    assert c["Hostname"] == "h1" and c["WorkingDir"] == "/tmp"
    hc = i["HostConfig"]
    assert hc["Memory"] == 64 * 1024 * 1024
    assert hc["NanoCpus"] == 500_000_000
    assert hc["PidsLimit"] == 50
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert "NET_ADMIN" in (hc["CapAdd"] or []) or "CAP_NET_ADMIN" in (hc["CapAdd"] or [])
    assert hc["ReadonlyRootfs"] is True
    assert hc["LogConfig"]["Type"] == "json-file"
    # an image and a container both answer `docker inspect`; --type picks
    assert docker("inspect", "-f", "{{.Id}}", "--type", "image", "busybox", check=True).stdout.startswith("sha256:")


def test_top(docker, names):
    n = names("top")
    run_d(docker, n, "busybox", "sh", "-c", "sleep 601 & sleep 602")
    r = docker("top", n, check=True)
    header, *rows = r.stdout.splitlines()
    assert "PID" in header and ("CMD" in header or "COMMAND" in header)
    text = "\n".join(rows)
    assert "sleep 601" in text and "sleep 602" in text


def test_stats_no_stream(docker, names):
    n = names("stats")
    cid = run_d(docker, n, "--memory", "64m", "busybox", "sleep", "600")
    r = docker("stats", "--no-stream", "--format", "{{.ID}} {{.Name}} {{.MemUsage}} {{.PIDs}}", n, timeout=30)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith(cid[:12]) and n in line
    assert "64MiB" in line
    assert line.split()[-1] == "1"
    r = docker("stats", "--no-stream", timeout=30)
    assert r.returncode == 0 and n in r.stdout


def test_port_without_publishing(docker, names):
    n = names("port")
    run_d(docker, n, "--network", "none", "busybox", "sleep", "600")
    r = docker("port", n)
    assert r.returncode == 0 and r.stdout.strip() == ""


def test_cp_both_directions(docker, daemon, names, tmp_path):
    n = names("cp")
    run_d(docker, n, "busybox", "sleep", "600")
    src = tmp_path / "hello.txt"
    src.write_text("from the host\n")
    docker("cp", str(src), f"{n}:/tmp/", check=True)
    assert docker("exec", n, "cat", "/tmp/hello.txt", check=True).stdout == "from the host\n"
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("nested\n")
    docker("cp", str(d), f"{n}:/tmp/dir", check=True)
    assert docker("exec", n, "cat", "/tmp/dir/sub/f", check=True).stdout == "nested\n"
    docker("exec", n, "sh", "-c", "mkdir -p /out && echo inside > /out/a && ln -s a /out/link", check=True)
    dst = tmp_path / "back"
    docker("cp", f"{n}:/out", str(dst), check=True)
    assert (dst / "a").read_text() == "inside\n"
    assert os.readlink(dst / "link") == "a"
    docker("cp", f"{n}:/etc/shibafu-test-image", str(tmp_path / "marker"), check=True)
    assert (tmp_path / "marker").read_text() == "shibafu-test-image\n"
    # stdout as a tar stream
    r = docker("cp", f"{n}:/etc/shibafu-test-image", "-", text=False, check=True)
    assert b"shibafu-test-image" in r.stdout
    r = docker("cp", f"{n}:/no/such/path", str(tmp_path / "x"))
    assert r.returncode != 0 and "/no/such/path" in r.stderr


def test_cp_from_stopped_container(docker, names, tmp_path):
    n = names("cpstop")
    docker("run", "--name", n, "busybox", "sh", "-c", "echo kept > /result", check=True)
    docker("cp", f"{n}:/result", str(tmp_path / "result"), check=True)
    assert (tmp_path / "result").read_text() == "kept\n"


def test_events_history_and_follow(docker, daemon, names):
    n = names("ev")
    since = int(time.time()) - 1
    p = subprocess.Popen(["docker", "events", "--filter", f"container={n}", "--format", "{{.Action}}"],
                         env=daemon.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        docker("run", "--name", n, "busybox", "true", check=True)
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "die" not in seen:
            line = p.stdout.readline()
            if not line:
                break
            seen.append(line.strip())
        assert "start" in seen and "die" in seen, seen
        assert seen.index("start") < seen.index("die")
    finally:
        p.kill()
        p.wait()
    until = int(time.time()) + 1
    r = docker("events", "--since", str(since), "--until", str(until), "--filter", f"container={n}",
               "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}", timeout=30, check=True)
    lines = r.stdout.splitlines()
    assert f"container create {n}" in lines
    assert f"container start {n}" in lines
    assert f"container die {n}" in lines


def test_log_rotation_max_size_max_file(docker, daemon, names):
    n = names("rotate")
    docker("run", "--name", n, "--log-opt", "max-size=2k", "--log-opt", "max-file=2", "busybox", "sh", "-c",
           "for i in $(seq 1 500); do echo line-$i; done", check=True)
    i = daemon.inspect(n)
    assert i["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "2k", "max-file": "2"}}
    files = list((daemon.data_root / "containers" / i["Id"]).glob("*-json.log*"))
    assert 1 < len(files) <= 2, [(f.name, f.stat().st_size) for f in files]
    assert sum(f.stat().st_size for f in files) <= 3 * 2048, [(f.name[-12:], f.stat().st_size) for f in files]
    lines = docker("logs", n, check=True).stdout.splitlines()
    assert lines[-1] == "line-500"
    assert 0 < len(lines) < 500, "old log files were not dropped"
    # what is kept is contiguous
    nums = [int(x.split("-")[1]) for x in lines]
    assert nums == list(range(nums[0], 501))
