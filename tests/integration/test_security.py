"""Default confinement like Docker's, and the options that change it."""

import os

DOCKER_DEFAULT_CAPS = 0x00000000A80425FB
CAP_NET_ADMIN = 1 << 12
CAP_CHOWN = 1 << 0


def capeff(docker, *args) -> int:
    r = docker("run", "--rm", *args, "busybox", "sh", "-c", "grep CapEff /proc/1/status", check=True)
    return int(r.stdout.split()[1], 16)


def status_field(docker, field, *args) -> str:
    r = docker("run", "--rm", *args, "busybox", "sh", "-c", f"grep '^{field}:' /proc/self/status", check=True)
    return r.stdout.split()[1]


def host_bounding_set() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapBnd")


def test_default_capabilities_are_dockers(docker):
    assert capeff(docker) == DOCKER_DEFAULT_CAPS


def test_cap_add_and_drop(docker):
    assert capeff(docker, "--cap-add", "NET_ADMIN") == DOCKER_DEFAULT_CAPS | CAP_NET_ADMIN
    assert capeff(docker, "--cap-drop", "CHOWN") == DOCKER_DEFAULT_CAPS & ~CAP_CHOWN
    assert capeff(docker, "--cap-drop", "ALL") == 0
    assert capeff(docker, "--cap-drop", "ALL", "--cap-add", "CAP_NET_ADMIN") == CAP_NET_ADMIN
    # the effect is real: chown fails without CAP_CHOWN
    r = docker("run", "--rm", "--cap-drop", "CHOWN", "busybox", "sh", "-c", "touch /f && chown 1000 /f")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr


def test_privileged(docker):
    # every capability the host can give (CAP_SYS_RESOURCE is absent from the bounding set here)
    assert capeff(docker, "--privileged") == host_bounding_set()
    assert status_field(docker, "Seccomp", "--privileged") == "0"
    r = docker("run", "--rm", "--privileged", "busybox", "sh", "-c", "mount -t tmpfs none /mnt && echo mounted")
    assert r.returncode == 0 and "mounted" in r.stdout, r.stderr


def test_seccomp_default_profile(docker):
    assert status_field(docker, "Seccomp") == "2"
    # unshare(CLONE_NEWUSER) needs no capability, but Docker's default profile denies it
    r = docker("run", "--rm", "busybox", "unshare", "-U", "true")
    assert r.returncode != 0
    assert "Operation not permitted" in r.stderr
    r = docker("run", "--rm", "busybox", "mount", "-t", "tmpfs", "none", "/mnt")
    assert r.returncode != 0


def test_no_new_privileges(docker):
    assert status_field(docker, "NoNewPrivs") == "0"
    assert status_field(docker, "NoNewPrivs", "--security-opt", "no-new-privileges") == "1"
    assert status_field(docker, "NoNewPrivs", "--security-opt", "no-new-privileges:true") == "1"


def test_sees_only_its_own_processes(docker):
    r = docker("run", "--rm", "busybox", "sh", "-c", "ps -o pid,args", check=True)
    rows = r.stdout.strip().splitlines()[1:]
    pids = [int(row.split()[0]) for row in rows]
    assert 1 in pids
    assert len(rows) <= 3, r.stdout
    assert "sleep infinity" not in r.stdout


def test_sees_only_its_own_mounts(docker):
    r = docker("run", "--rm", "-v", "/tmp:/hosttmp", "busybox", "cat", "/proc/self/mountinfo", check=True)
    allowed = ("/proc", "/dev", "/sys", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/hosttmp")
    for line in r.stdout.splitlines():
        mp = line.split()[4]
        assert mp == "/" or mp.startswith(allowed), f"unexpected mount {mp!r} visible in the container"


def test_masked_and_readonly_proc_sys(docker):
    # Docker's masked files (those this kernel has): they read as empty
    masked = [f for f in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                          "/proc/latency_stats") if os.path.exists(f)]
    assert masked, "none of the masked /proc files exist on this kernel"
    script = "for f in " + " ".join(masked) + "; do echo $f $(cat $f 2>/dev/null | wc -c); done; ls -A /proc/acpi | wc -l"
    r = docker("run", "--rm", "busybox", "sh", "-c", script, check=True)
    *files, acpi_entries = r.stdout.splitlines()
    for line in files:
        path, size = line.split()
        assert size == "0", f"{path} is readable in the container ({size} bytes)"
    if os.path.isdir("/proc/acpi"):
        assert acpi_entries.strip() == "0", "/proc/acpi is not masked"
    r = docker("run", "--rm", "busybox", "sh", "-c", "echo 1 > /proc/sys/kernel/domainname")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    r = docker("run", "--rm", "busybox", "sh", "-c", "echo 1 > /proc/sysrq-trigger")
    assert r.returncode != 0
    r = docker("run", "--rm", "busybox", "touch", "/sys/kernel/x")
    assert r.returncode != 0 and "Read-only file system" in r.stderr


def test_privileged_proc_sys_writable(docker):
    r = docker("run", "--rm", "--privileged", "--network", "none", "busybox", "sh", "-c",
               "echo 1 > /proc/sys/net/ipv4/ip_forward && cat /proc/sys/net/ipv4/ip_forward")
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr


def test_devices_are_minimal(docker):
    r = docker("run", "--rm", "busybox", "ls", "/dev", check=True)
    devs = set(r.stdout.split())
    assert {"null", "zero", "random", "urandom", "tty", "full"} <= devs
    assert "vda" not in devs and "mem" not in devs
    r = docker("run", "--rm", "busybox", "sh", "-c", "head -c 4 /dev/urandom | wc -c; echo x > /dev/null && echo ok", check=True)
    assert r.stdout.split() == ["4", "ok"]
