"""Port publishing (issue 3, items 5 and 8): kernel DNAT reachable from
127.0.0.1 of the host, from another machine (the outside netns) through the
host's LAN address, hairpin from containers; 127.0.0.1 publishes not
reachable from the LAN; UDP; random ports, ranges, -P; what ps, port and
inspect show; ports in use refused with nothing left behind."""

import json

from conftest import LAN_HOST_IP, UDP_ECHO_PORT, ctr_http, run_httpd
from helpers import wait_for

EPHEMERAL = range(30000, 32768)


def port_lines(docker, c, *spec):
    r = docker("port", c, *spec)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def ports_of(daemon, c):
    return daemon.inspect(c)["NetworkSettings"]["Ports"]


def ps_ports(docker, c):
    """The PORTS column of `docker ps` for container `c`."""
    r = docker("ps", "--format", "{{.Names}}\t{{.Ports}}", check=True)
    rows = [l.split("\t", 1) for l in r.stdout.splitlines()]
    got = [p for n, p in rows if n == c]
    assert len(got) == 1, r.stdout
    return got[0].strip()


def sorted_binds(ports):
    return {k: sorted(v or [], key=lambda b: (b["HostIp"], b["HostPort"])) for k, v in (ports or {}).items()}


def test_publish_reachable_from_loopback_lan_and_hairpin(docker, daemon, nets, names, nethost):
    c = names("pub")
    run_httpd(docker, c, "-p", "18080:80")
    # the host itself, through 127.0.0.1 and through its LAN address
    nethost.http_eventually(nethost.host_pid, "http://127.0.0.1:18080/", c)
    assert (nethost.http(nethost.host_pid, f"http://{LAN_HOST_IP}:18080/") or "").strip() == c
    # another machine, through the host's LAN address
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:18080/", c)
    # hairpin: a container on the same network and one on a user network,
    # through the host's address
    same, other = names("hp-same"), names("hp-other")
    n = nets("hairpin")
    docker("network", "create", n, check=True)
    docker("run", "-d", "--name", same, "busybox", "sleep", "600", check=True)
    docker("run", "-d", "--name", other, "--network", n, "busybox", "sleep", "600", check=True)
    assert (ctr_http(docker, same, f"http://{LAN_HOST_IP}:18080/", 5) or "").strip() == c
    assert (ctr_http(docker, other, f"http://{LAN_HOST_IP}:18080/", 5) or "").strip() == c
    # a container reaching its own published port through the host
    assert (ctr_http(docker, c, f"http://{LAN_HOST_IP}:18080/", 5) or "").strip() == c
    # what the user sees
    assert ports_of(daemon, c) == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18080"}]}
    assert port_lines(docker, c) == ["80/tcp -> 0.0.0.0:18080"]
    assert port_lines(docker, c, "80") == ["0.0.0.0:18080"]
    assert ps_ports(docker, c) == "0.0.0.0:18080->80/tcp"
    hb = daemon.inspect(c)["HostConfig"]["PortBindings"]
    assert hb == {"80/tcp": [{"HostIp": "", "HostPort": "18080"}]}


def test_publish_on_127_0_0_1_is_not_reachable_from_the_lan(docker, daemon, names, nethost):
    c = names("lo-pub")
    run_httpd(docker, c, "-p", "127.0.0.1:18081:80", "-p", "18082:80")
    nethost.http_eventually(nethost.host_pid, "http://127.0.0.1:18081/", c)
    # control: the wildcard publish of the same container is reachable from outside
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:18082/", c)
    # the 127.0.0.1 one is not: neither through the LAN address ...
    assert nethost.http(nethost.outside_pid, f"http://{LAN_HOST_IP}:18081/") is None
    assert nethost.http(nethost.host_pid, f"http://{LAN_HOST_IP}:18081/") is None
    # ... nor by sending packets for 127.0.0.1 to the host (moby#41872)
    o = nethost.outside_pid
    nethost.outside("ip", "link", "set", "lo", "down", check=True)
    try:
        nethost.outside("sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1", check=True)
        nethost.outside("ip", "route", "add", "127.0.0.1/32", "via", LAN_HOST_IP, "dev", "eth0", check=True)
        assert nethost.http(o, "http://127.0.0.1:18081/") is None
    finally:
        nethost.outside("ip", "route", "del", "127.0.0.1/32")
        nethost.outside("sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=0")
        nethost.outside("ip", "link", "set", "lo", "up", check=True)
    assert sorted_binds(ports_of(daemon, c)) == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18082"},
                                                            {"HostIp": "127.0.0.1", "HostPort": "18081"}]}
    assert sorted(port_lines(docker, c, "80/tcp")) == ["0.0.0.0:18082", "127.0.0.1:18081"]
    assert "127.0.0.1:18081->80/tcp" in ps_ports(docker, c)


def test_publish_udp(docker, daemon, names, nethost, netbox_image):
    c = names("udp")
    docker("run", "-d", "--name", c, "-p", f"15353:{UDP_ECHO_PORT}/udp", netbox_image, "udpecho",
           str(UDP_ECHO_PORT), check=True)
    got = wait_for(lambda: nethost.udp(nethost.outside_pid, LAN_HOST_IP, 15353, "from-lan"), 20, 0.2,
                   "a UDP echo through the published port from outside")
    assert got == "echo:from-lan"
    assert nethost.udp(nethost.host_pid, "127.0.0.1", 15353, "from-lo") == "echo:from-lo"
    # netbox also EXPOSEs 80: Docker lists it unpublished, as null / "80/tcp"
    assert ports_of(daemon, c) == {f"{UDP_ECHO_PORT}/udp": [{"HostIp": "0.0.0.0", "HostPort": "15353"}],
                                   "80/tcp": None}
    assert ps_ports(docker, c) == f"80/tcp, 0.0.0.0:15353->{UDP_ECHO_PORT}/udp"
    # a TCP connection to that port number goes nowhere
    assert nethost.http(nethost.outside_pid, f"http://{LAN_HOST_IP}:15353/", 2) is None


def test_random_host_port(docker, daemon, names, nethost):
    c = names("rand")
    run_httpd(docker, c, "-p", "80", "-p", "127.0.0.1::81", ports="80 81")
    lines = port_lines(docker, c, "80")
    assert len(lines) == 1 and lines[0].startswith("0.0.0.0:"), lines
    hp = int(lines[0].rsplit(":", 1)[1])
    assert hp in EPHEMERAL
    lo = port_lines(docker, c, "81")
    assert len(lo) == 1 and lo[0].startswith("127.0.0.1:"), lo
    lp = int(lo[0].rsplit(":", 1)[1])
    assert lp in EPHEMERAL and lp != hp
    assert ports_of(daemon, c) == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(hp)}],
                                   "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(lp)}]}
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:{hp}/", c)
    nethost.http_eventually(nethost.host_pid, f"http://127.0.0.1:{lp}/", c)
    # a second container gets another port
    c2 = names("rand")
    run_httpd(docker, c2, "-p", "80")
    hp2 = int(port_lines(docker, c2, "80")[0].rsplit(":", 1)[1])
    assert hp2 in EPHEMERAL and hp2 not in (hp, lp)
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:{hp2}/", c2)


def test_port_range(docker, daemon, names, nethost):
    c = names("range")
    run_httpd(docker, c, "-p", "18100-18102:8000-8002", "-p", "18103-18104:18103-18104",
              ports="8000 8001 8002 18103 18104")
    mapping = {8000: 18100, 8001: 18101, 8002: 18102, 18103: 18103, 18104: 18104}
    for hp in mapping.values():
        nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:{hp}/", c)
    assert ports_of(daemon, c) == {f"{cp}/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(hp)}]
                                   for cp, hp in mapping.items()}
    assert sorted(port_lines(docker, c)) == sorted(f"{cp}/tcp -> 0.0.0.0:{hp}" for cp, hp in mapping.items())
    # the docker CLI groups only ranges whose host and container ports are equal
    assert set(ps_ports(docker, c).split(", ")) == {"0.0.0.0:18100->8000/tcp", "0.0.0.0:18101->8001/tcp",
                                                    "0.0.0.0:18102->8002/tcp", "0.0.0.0:18103-18104->18103-18104/tcp"}


def test_publish_all_exposed(docker, daemon, names, nethost, netbox_image):
    c = names("pall")
    run_httpd(docker, c, "-P", image=netbox_image)
    ports = ports_of(daemon, c)
    assert set(ports) == {"80/tcp", f"{UDP_ECHO_PORT}/udp"}, ports
    for key, binds in ports.items():
        assert len(binds) == 1 and binds[0]["HostIp"] == "0.0.0.0", binds
        assert int(binds[0]["HostPort"]) in EPHEMERAL
    hp = int(ports["80/tcp"][0]["HostPort"])
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:{hp}/", c)
    assert f"0.0.0.0:{hp}->80/tcp" in ps_ports(docker, c)
    assert daemon.inspect(c)["HostConfig"]["PublishAllPorts"] is True


def test_publish_on_user_network_and_stop_start(docker, daemon, nets, names, nethost):
    n = nets("pubnet")
    docker("network", "create", n, check=True)
    c = names("pubnet")
    run_httpd(docker, c, "--network", n, "-p", "18090:80")
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:18090/", c)
    nethost.http_eventually(nethost.host_pid, "http://127.0.0.1:18090/", c)
    docker("stop", "-t", "0", c, check=True)
    assert nethost.http(nethost.outside_pid, f"http://{LAN_HOST_IP}:18090/", 2) is None
    assert nethost.http(nethost.host_pid, "http://127.0.0.1:18090/", 2) is None
    assert ports_of(daemon, c) in ({}, None)
    docker("start", c, check=True)
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:18090/", c)
    # removed: the port is free for the next container at once
    docker("rm", "-f", c, check=True)
    c2 = names("pubnet2")
    run_httpd(docker, c2, "--network", n, "-p", "18090:80")
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:18090/", c2)


def test_dockerpy_ports(client, names, nethost, daemon):
    c = names("pyport")
    ctr = client.containers.run("busybox", ["sh", "-c", "mkdir /www; echo py > /www/index.html; exec httpd -f -p 80 -h /www"],
                                name=c, detach=True, ports={"80/tcp": ("127.0.0.1", 18095)})
    ctr.reload()
    assert ctr.ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18095"}]}
    nethost.http_eventually(nethost.host_pid, "http://127.0.0.1:18095/", "py")


class Snapshot:
    """What a failed run must not leave behind: veths, firewall rules,
    network endpoints."""

    def __init__(self, docker, nethost, networks=("bridge",)):
        self.docker, self.h, self.networks = docker, nethost, networks
        self.veths = nethost.veths()
        self.table = nethost.shibafu_table()
        self.endpoints = self.eps()

    def eps(self):
        out = {}
        for n in self.networks:
            r = self.docker("network", "inspect", "-f", "{{json .Containers}}", n, check=True)
            out[n] = sorted((json.loads(r.stdout) or {}).keys())
        return out

    def assert_unchanged(self):
        # a container removed after its attach loses its veth in the background
        wait_for(lambda: self.h.veths() == self.veths, 10, 0.05, "no veth left behind")
        assert self.h.shibafu_table() == self.table
        assert self.eps() == self.endpoints


def assert_not_running(docker, c):
    r = docker("inspect", "-f", "{{.State.Running}}", c)
    assert r.returncode != 0 or r.stdout.strip() == "false", f"{c} is running"


def test_port_in_use_by_a_container(docker, daemon, names, nethost):
    c1 = names("owner")
    run_httpd(docker, c1, "-p", "18110:80")
    nethost.http_eventually(nethost.host_pid, "http://127.0.0.1:18110/", c1)
    snap = Snapshot(docker, nethost)
    c2 = names("thief")
    r = docker("run", "-d", "--name", c2, "-p", "18110:80", "busybox", "sleep", "600")
    assert r.returncode == 125, (r.returncode, r.stderr)
    assert "18110" in r.stderr and ("already allocated" in r.stderr or "in use" in r.stderr), r.stderr
    assert_not_running(docker, c2)
    snap.assert_unchanged()
    # the first one still owns it
    assert (nethost.http(nethost.outside_pid, f"http://{LAN_HOST_IP}:18110/") or "").strip() == c1
    # a specific address conflicts with the wildcard too
    c3 = names("thief")
    r = docker("run", "-d", "--name", c3, "-p", "127.0.0.1:18110:80", "busybox", "sleep", "600")
    assert r.returncode == 125 and "18110" in r.stderr, r.stderr
    assert_not_running(docker, c3)
    # UDP on the same number is a different port
    c4 = names("udpok")
    r = docker("run", "-d", "--name", c4, "-p", "18110:80/udp", "busybox", "sleep", "600")
    assert r.returncode == 0, r.stderr
    # the failed container can be removed, and nothing remains
    docker("rm", "-f", c2, c3)
    docker("rm", "-f", c4, check=True)
    snap.assert_unchanged()


def test_port_in_use_by_a_host_socket(docker, daemon, names, nethost):
    listener = nethost.listen_tcp(nethost.host_pid, "0.0.0.0", 18120)
    try:
        snap = Snapshot(docker, nethost)
        c = names("hostsock")
        r = docker("run", "-d", "--name", c, "-p", "18120:80", "busybox", "sleep", "600")
        assert r.returncode == 125, (r.returncode, r.stderr)
        assert "18120" in r.stderr and "in use" in r.stderr, r.stderr
        assert_not_running(docker, c)
        docker("rm", "-f", c)
        snap.assert_unchanged()
    finally:
        nethost.stop(listener)
    # once the socket is gone, the port can be published
    c2 = names("hostsock")
    run_httpd(docker, c2, "-p", "18120:80")
    nethost.http_eventually(nethost.host_pid, "http://127.0.0.1:18120/", c2)
