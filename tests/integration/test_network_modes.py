"""`--network none` and `--network host` (bridge networks come in a later issue)."""

import pytest

MARKER_IF = "shibafu-t0"


@pytest.fixture(scope="module")
def marker_interface(daemon):
    """A dummy interface in the daemon's (private) network namespace, so
    `--network host` has something to see that `none` must not."""
    r = daemon.ns_run(["ip", "link", "add", MARKER_IF, "type", "veth", "peer", "name", MARKER_IF + "p"], mnt=False)
    assert r.returncode == 0 or "exists" in r.stderr, r.stderr
    yield MARKER_IF
    daemon.ns_run(["ip", "link", "del", MARKER_IF], mnt=False)


def interfaces(docker, *args):
    r = docker("run", "--rm", *args, "busybox", "sh", "-c", "ls /sys/class/net", check=True)
    return set(r.stdout.split())


def test_network_none_has_only_loopback(docker, marker_interface):
    assert interfaces(docker, "--network", "none") == {"lo"}
    r = docker("run", "--rm", "--network", "none", "busybox", "sh", "-c", "ip -o link show lo; ip route", check=True)
    assert "UP" in r.stdout.splitlines()[0] or "LOOPBACK,UP" in r.stdout
    assert "default" not in r.stdout


def test_network_host_shares_the_namespace(docker, marker_interface):
    assert marker_interface in interfaces(docker, "--network", "host")


def test_network_host_hostname_and_loopback_service(docker, daemon, names):
    # a server in one host-network container is reachable on 127.0.0.1 from another
    n = names("hostsrv")
    docker("run", "-d", "--name", n, "--network", "host", "busybox", "sh", "-c",
           "mkdir -p /www && echo served > /www/index.html && httpd -f -p 127.0.0.1:18081 -h /www", check=True)
    r = None
    for _ in range(50):
        r = docker("run", "--rm", "--network", "host", "busybox", "timeout", "5", "wget", "-qO-", "http://127.0.0.1:18081/")
        if r.returncode == 0:
            break
    assert r.stdout == "served\n", r.stderr
    # and not from a --network none container
    r = docker("run", "--rm", "--network", "none", "busybox", "timeout", "5", "wget", "-qO-", "http://127.0.0.1:18081/")
    assert r.returncode != 0


def test_network_mode_in_inspect(docker, daemon, names):
    n = names("netmode")
    docker("run", "-d", "--name", n, "--network", "none", "busybox", "sleep", "600", check=True)
    assert daemon.inspect(n)["HostConfig"]["NetworkMode"] == "none"
