"""Resource limits: visible in inspect, in the container's cgroup, and enforced."""

import json

from helpers import host_cgroup_file


def run_d(docker, names, *args):
    n = names("res")
    docker("run", "-d", "--name", n, *args, check=True)
    return n


def pid_of(docker, n):
    return int(docker("inspect", "-f", "{{.State.Pid}}", n, check=True).stdout)


def test_memory_cpus_pids_in_inspect_and_cgroup(docker, daemon, names):
    n = run_d(docker, names, "--memory", "64m", "--cpus", "0.5", "--pids-limit", "50",
              "--cpu-shares", "512", "busybox", "sleep", "600")
    hc = daemon.inspect(n)["HostConfig"]
    assert hc["Memory"] == 67108864 and hc["NanoCpus"] == 500000000
    assert hc["PidsLimit"] == 50 and hc["CpuShares"] == 512
    pid = pid_of(docker, n)
    assert host_cgroup_file(pid, "memory", "memory.limit_in_bytes") == "67108864"
    quota = int(host_cgroup_file(pid, "cpu", "cpu.cfs_quota_us"))
    period = int(host_cgroup_file(pid, "cpu", "cpu.cfs_period_us"))
    assert quota / period == 0.5
    assert host_cgroup_file(pid, "pids", "pids.max") == "50"
    assert host_cgroup_file(pid, "cpu", "cpu.shares") == "512"


def test_container_has_its_own_cgroup(docker, names):
    a = run_d(docker, names, "busybox", "sleep", "600")
    b = run_d(docker, names, "busybox", "sleep", "600")
    pa, pb = pid_of(docker, a), pid_of(docker, b)
    cg = lambda pid: [l for l in open(f"/proc/{pid}/cgroup").read().splitlines() if ":memory:" in l][0]
    assert cg(pa) != cg(pb)
    assert cg(pa) != [l for l in open("/proc/self/cgroup").read().splitlines() if ":memory:" in l][0]


def test_pids_limit_enforced(docker):
    # the background sleeps die with PID 1 (or after 2 s): nothing to kill by hand
    script = "for i in $(seq 1 30); do sleep 2 & done; echo finished"
    r = docker("run", "--rm", "--pids-limit", "10", "busybox", "sh", "-c", script, timeout=60)
    assert "fork" in r.stderr.lower(), (r.returncode, r.stdout, r.stderr)
    # without the limit the same script forks all 30
    r = docker("run", "--rm", "busybox", "sh", "-c", script, timeout=60)
    assert "fork" not in r.stderr.lower() and "finished" in r.stdout, r.stderr


def test_memory_limit_enforced(docker):
    r = docker("run", "--rm", "--memory", "32m", "busybox", "sh", "-c",
               "dd if=/dev/zero of=/dev/null bs=100M count=1", timeout=60)
    assert r.returncode == 137, (r.returncode, r.stderr)


def test_update_memory_and_cpus(docker, daemon, names):
    n = run_d(docker, names, "--memory", "64m", "busybox", "sleep", "600")
    r = docker("update", "--memory", "128m", "--memory-swap", "256m", "--cpus", "0.25", "--pids-limit", "30", n)
    assert r.returncode == 0, r.stderr
    hc = daemon.inspect(n)["HostConfig"]
    assert hc["Memory"] == 128 * 1024 * 1024 and hc["NanoCpus"] == 250000000 and hc["PidsLimit"] == 30
    pid = pid_of(docker, n)
    assert host_cgroup_file(pid, "memory", "memory.limit_in_bytes") == str(128 * 1024 * 1024)
    assert host_cgroup_file(pid, "pids", "pids.max") == "30"
    quota = int(host_cgroup_file(pid, "cpu", "cpu.cfs_quota_us"))
    period = int(host_cgroup_file(pid, "cpu", "cpu.cfs_period_us"))
    assert quota / period == 0.25
    # survives a restart of the container
    docker("restart", "-t", "0", n, check=True)
    assert host_cgroup_file(pid_of(docker, n), "memory", "memory.limit_in_bytes") == str(128 * 1024 * 1024)


def test_update_restart_policy(docker, daemon, names):
    n = run_d(docker, names, "busybox", "sleep", "600")
    docker("update", "--restart", "on-failure:4", n, check=True)
    assert daemon.inspect(n)["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 4}


def test_stats_api_reports_memory_limit(daemon, docker, names):
    n = run_d(docker, names, "--memory", "48m", "busybox", "sleep", "600")
    st, _, body = daemon.api("GET", f"/containers/{n}/stats?stream=0", timeout=30)
    assert st == 200
    s = json.loads(body)
    assert s["memory_stats"]["limit"] == 48 * 1024 * 1024
    assert s["memory_stats"]["usage"] > 0
    assert s["pids_stats"]["current"] == 1
