"""Bad network input (issue 3, item 9): a clear error naming the problem, the
right exit code, and nothing half-made: the network list, bridges, veths,
endpoints and the firewall table are as before."""

import json

import pytest

from conftest import container_ip, run_httpd


class NetState:
    def __init__(self, docker, nethost):
        self.docker, self.h = docker, nethost
        self.snap = self.take()

    def take(self):
        nets = self.docker("network", "ls", "-q", "--no-trunc", check=True).stdout.split()
        eps = {}
        for n in nets:
            r = self.docker("network", "inspect", "-f", "{{json .Containers}}", n, check=True)
            eps[n] = sorted((json.loads(r.stdout) or {}).keys())
        return {"networks": sorted(nets), "endpoints": eps, "bridges": self.h.bridges(),
                "veths": self.h.veths(), "table": self.h.shibafu_table()}

    def assert_unchanged(self):
        now = self.take()
        for k in self.snap:
            assert now[k] == self.snap[k], f"{k} changed: {self.snap[k]!r} -> {now[k]!r}"


@pytest.fixture
def state(docker, nethost):
    return lambda: NetState(docker, nethost)


def create_fails(docker, *args, want=()):
    r = docker("network", "create", *args)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    for w in want:
        assert w.lower() in r.stderr.lower(), f"{w!r} not in {r.stderr!r}"
    return r


@pytest.mark.parametrize("cidr", ["10.300.0.0/16", "10.93.0.0/33", "not-a-cidr", "10.93.0.0"])
def test_invalid_cidr(docker, nets, state, cidr):
    s = state()
    n = nets("badcidr")
    create_fails(docker, "--subnet", cidr, n, want=[cidr])
    s.assert_unchanged()


def test_shibafu_short_form_invalid_cidr(shibafu, nets, state):
    s = state()
    n = nets("badcidr")
    r = shibafu("network", "create", n, "10.93.0.0/40")
    assert r.returncode != 0 and "10.93.0.0/40" in r.stderr, r.stderr
    s.assert_unchanged()


def test_overlapping_subnets(docker, nets, state):
    a = nets("ovl")
    docker("network", "create", "--subnet", "10.93.1.0/24", a, check=True)
    s = state()
    for sub in ("10.93.1.128/25", "10.93.0.0/16", "10.93.1.0/24", "172.17.5.0/24"):
        create_fails(docker, "--subnet", sub, nets("ovl"), want=["overlap"])
    s.assert_unchanged()


def test_subnet_overlapping_a_host_route(docker, nets, nethost, state):
    # a route on the host: an address on a link of the test's own (a veth pair:
    # the dummy driver may not be available)
    nethost.host("ip", "link", "add", "sfo-rt0", "type", "veth", "peer", "name", "sfo-rt1", check=True)
    try:
        nethost.host("ip", "addr", "add", "10.93.7.1/24", "dev", "sfo-rt0", check=True)
        nethost.host("ip", "link", "set", "sfo-rt0", "up", check=True)
        nethost.host("ip", "link", "set", "sfo-rt1", "up", check=True)
        assert "10.93.7.0/24" in nethost.host("ip", "route", check=True).stdout
        s = state()
        create_fails(docker, "--subnet", "10.93.0.0/16", nets("route"), want=["overlap", "10.93.7.0/24"])
        s.assert_unchanged()
        # automatic choice skips it too: many networks, none on the route
        import ipaddress
        for _ in range(3):
            n = nets("auto")
            docker("network", "create", n, check=True)
            sub = docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", n, check=True).stdout.strip()
            assert not ipaddress.ip_network(sub).overlaps(ipaddress.ip_network("10.93.7.0/24"))
        # and the LAN route of the test's own outside veth
        create_fails(docker, "--subnet", "198.51.100.0/24", nets("route"), want=["overlap"])
    finally:
        nethost.host("ip", "link", "del", "sfo-rt0")


def test_gateway_outside_subnet(docker, nets, state):
    s = state()
    create_fails(docker, "--subnet", "10.93.2.0/24", "--gateway", "10.93.3.1", nets("gw"), want=["10.93.3.1"])
    create_fails(docker, "--gateway", "10.93.3.1", nets("gw"))  # gateway without subnet
    create_fails(docker, "--subnet", "10.93.2.0/24", "--ip-range", "10.93.4.0/25", nets("gw"), want=["10.93.4.0/25"])
    create_fails(docker, "--subnet", "10.93.2.0/24", "--gateway", "not-an-ip", nets("gw"), want=["not-an-ip"])
    s.assert_unchanged()


def test_bad_driver_and_options(docker, nets, state):
    s = state()
    create_fails(docker, "--driver", "overlay", nets("drv"), want=["overlay"])
    create_fails(docker, "-o", "com.docker.network.driver.mtu=abc", nets("mtu"), want=["mtu"])
    create_fails(docker, "-o", "com.docker.network.bridge.name=this-name-is-way-too-long", nets("brname"),
                 want=["this-name-is-way-too-long"])
    s.assert_unchanged()


def test_static_ip_outside_subnet_or_taken(docker, daemon, nets, names, nethost, state):
    n = nets("sip")
    docker("network", "create", "--subnet", "10.93.5.0/24", n, check=True)
    owner = names("sip-owner")
    run_httpd(docker, owner, "--network", n, "--ip", "10.93.5.10")
    s = state()
    for ip in ("10.93.6.10", "10.93.5.10", "10.93.5.0", "10.93.5.255", "10.93.5.1", "10.93.5.300"):
        c = names("sip")
        r = docker("run", "-d", "--name", c, "--network", n, "--ip", ip, "busybox", "sleep", "600")
        assert r.returncode == 125, (ip, r.returncode, r.stderr)
        assert ip in r.stderr, (ip, r.stderr)
        st = docker("inspect", "-f", "{{.State.Running}}", c)
        assert st.returncode != 0 or st.stdout.strip() == "false"
        docker("rm", "-f", c)
    # --ip on the default bridge (Docker: user-defined networks only)
    c = names("sip")
    r = docker("run", "-d", "--name", c, "--ip", "172.17.99.99", "busybox", "sleep", "600")
    assert r.returncode == 125 and ("172.17.99.99" in r.stderr or "user defined" in r.stderr), r.stderr
    docker("rm", "-f", c)
    s.assert_unchanged()
    # the owner is unharmed
    nethost.http_eventually(nethost.host_pid, "http://10.93.5.10/", owner)
    # connect with a taken address: refused, nothing attached
    c = names("sip-conn")
    docker("run", "-d", "--name", c, "busybox", "sleep", "600", check=True)
    s = state()
    r = docker("network", "connect", "--ip", "10.93.5.10", n, c)
    assert r.returncode != 0 and "10.93.5.10" in r.stderr, r.stderr
    assert n not in daemon.inspect(c)["NetworkSettings"]["Networks"]
    assert "eth1" not in docker("exec", c, "ls", "/sys/class/net", check=True).stdout.split()
    s.assert_unchanged()


def test_unknown_network(docker, daemon, names, state):
    s = state()
    c = names("unk")
    r = docker("run", "-d", "--name", c, "--network", "no-such-net-x", "busybox", "sleep", "600")
    assert r.returncode == 125 and "no-such-net-x" in r.stderr, r.stderr
    docker("rm", "-f", c)
    for args in (["inspect", "no-such-net-x"], ["rm", "no-such-net-x"], ["connect", "no-such-net-x", c],
                 ["disconnect", "no-such-net-x", c]):
        r = docker("network", *args)
        assert r.returncode != 0 and "no-such-net-x" in r.stderr, (args, r.stderr)
    st, _, body = daemon.api("GET", "/networks/no-such-net-x")
    assert st == 404 and b"no-such-net-x" in body
    st, _, body = daemon.api("DELETE", "/networks/no-such-net-x")
    assert st == 404
    st, _, body = daemon.api("POST", "/v1.50/networks/create", {"Name": "x" + "y" * 5, "Driver": "bridge",
                                                                 "IPAM": {"Config": [{"Subnet": "bogus"}]}})
    assert st == 400 and b"bogus" in body
    s.assert_unchanged()


def test_rm_network_in_use(docker, daemon, nets, names, nethost, state):
    n = nets("inuse")
    docker("network", "create", n, check=True)
    c = names("inuse")
    run_httpd(docker, c, "--network", n)
    ip = container_ip(daemon, c, n)
    nethost.http_eventually(nethost.host_pid, f"http://{ip}/", c)
    s = state()
    r = docker("network", "rm", n)
    assert r.returncode == 1 and n in r.stderr, r.stderr
    st, _, body = daemon.api("DELETE", f"/networks/{n}")
    assert st in (403, 409), (st, body)
    s.assert_unchanged()
    assert (nethost.http(nethost.host_pid, f"http://{ip}/") or "").strip() == c
