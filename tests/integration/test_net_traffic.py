"""Real traffic on bridge networks (issue 3, items 3, 4 and 8): the default
bridge, same-network and cross-network traffic, several networks per
container, --internal, masquerade. "The host" is the daemon's netns; the
outside netns (198.51.100.2) plays another machine reached through it."""

import ipaddress

from helpers import wait_for

from conftest import (LAN_HOST_IP, LAN_OUTSIDE_IP, WHOAMI_PORT, container_ip, ctr_http, ctr_http_eventually,
                      run_httpd)

WHOAMI = f"http://{LAN_OUTSIDE_IP}:{WHOAMI_PORT}/"


def json_inspect_net(docker, n):
    import json
    return json.loads(docker("network", "inspect", n, check=True).stdout)[0]


def test_default_bridge_host_to_container(docker, daemon, names, nethost):
    c = names("defbr")
    run_httpd(docker, c)
    ip = container_ip(daemon, c, "bridge")
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("172.17.0.0/16") and ip != "172.17.0.1"
    ep = daemon.inspect(c)["NetworkSettings"]["Networks"]["bridge"]
    assert ep["Gateway"] == "172.17.0.1" and ep["IPPrefixLen"] == 16
    assert daemon.inspect(c)["HostConfig"]["NetworkMode"] in ("bridge", "default")
    # inside: eth0 with that address, default route via the bridge
    r = docker("exec", c, "sh", "-c", "ip -o -4 addr show eth0; ip route", check=True)
    assert f"{ip}/16" in r.stdout and "default via 172.17.0.1 dev eth0" in r.stdout, r.stdout
    # the host reaches it: ICMP and TCP
    assert nethost.ping(nethost.host_pid, ip)
    nethost.http_eventually(nethost.host_pid, f"http://{ip}/", c)
    # the network lists it
    cid = daemon.inspect(c)["Id"]
    br = docker("network", "inspect", "-f", "{{json .Containers}}", "bridge", check=True).stdout
    assert cid in br


def test_same_network_by_ip_and_blocked_across_networks(docker, daemon, nets, names, nethost):
    a, b = nets("isoa"), nets("isob")
    docker("network", "create", a, check=True)
    docker("network", "create", b, check=True)
    srv, peer, stranger, defc = names("srv"), names("peer"), names("stranger"), names("defc")
    run_httpd(docker, srv, "--network", a)
    docker("run", "-d", "--name", peer, "--network", a, "busybox", "sleep", "600", check=True)
    docker("run", "-d", "--name", stranger, "--network", b, "busybox", "sleep", "600", check=True)
    docker("run", "-d", "--name", defc, "busybox", "sleep", "600", check=True)
    ip = container_ip(daemon, srv, a)
    # same network: reachable (this also proves the server is up)
    ctr_http_eventually(docker, peer, f"http://{ip}/", srv)
    assert docker("exec", peer, "ping", "-c", "1", "-W", "2", ip).returncode == 0
    # another user network, and the default bridge: not reachable
    assert ctr_http(docker, stranger, f"http://{ip}/") is None
    assert docker("exec", stranger, "ping", "-c", "1", "-W", "2", ip).returncode != 0
    assert ctr_http(docker, defc, f"http://{ip}/") is None
    # and the other way round
    sip = container_ip(daemon, stranger, b)
    assert docker("exec", peer, "ping", "-c", "1", "-W", "2", sip).returncode != 0
    # still fine within the network afterwards
    assert (ctr_http(docker, peer, f"http://{ip}/") or "").strip() == srv


def test_container_on_two_networks_reaches_both(docker, daemon, nets, names, nethost):
    a, b = nets("dual-a"), nets("dual-b")
    docker("network", "create", "--subnet", "10.91.1.0/24", a, check=True)
    docker("network", "create", "--subnet", "10.91.2.0/24", b, check=True)
    sa, sb, dual = names("sa"), names("sb"), names("dual")
    run_httpd(docker, sa, "--network", a)
    run_httpd(docker, sb, "--network", b)
    docker("run", "-d", "--name", dual, "--network", a, "busybox", "sleep", "600", check=True)
    docker("network", "connect", b, dual, check=True)
    r = docker("exec", dual, "sh", "-c", "ip -o -4 addr show eth0; ip -o -4 addr show eth1; ip route", check=True)
    assert "10.91.1." in r.stdout.splitlines()[0] and "10.91.2." in r.stdout.splitlines()[1], r.stdout
    assert "default via 10.91.1.1 dev eth0" in r.stdout
    ctr_http_eventually(docker, dual, f"http://{container_ip(daemon, sa, a)}/", sa)
    ctr_http_eventually(docker, dual, f"http://{container_ip(daemon, sb, b)}/", sb)
    # egress goes out through the first network (masqueraded to the host's LAN address)
    assert (ctr_http(docker, dual, WHOAMI) or "").strip() == LAN_HOST_IP
    # sa and sb still cannot reach each other
    assert ctr_http(docker, sa, f"http://{container_ip(daemon, sb, b)}/") is None
    # disconnecting b removes eth1 and the reachability
    docker("network", "disconnect", b, dual, check=True)
    assert "eth1" not in docker("exec", dual, "ls", "/sys/class/net", check=True).stdout.split()
    assert ctr_http(docker, dual, f"http://{container_ip(daemon, sb, b)}/") is None


def test_masquerade_to_outside(docker, nets, names, nethost):
    # the outside sees the host's LAN address, not the container's
    n = nets("masq")
    docker("network", "create", n, check=True)
    u, d = names("masq-user"), names("masq-def")
    docker("run", "-d", "--name", u, "--network", n, "busybox", "sleep", "600", check=True)
    docker("run", "-d", "--name", d, "busybox", "sleep", "600", check=True)
    for c in (u, d):
        got = ctr_http(docker, c, WHOAMI, timeout=5)
        assert got is not None, f"{c} cannot reach the outside server"
        assert got.strip() == LAN_HOST_IP


def test_internal_network_has_no_egress(docker, daemon, nets, names, nethost):
    n = nets("internal")
    r = docker("network", "create", "--internal", "--subnet", "10.91.3.0/24", n)
    assert r.returncode == 0, r.stderr
    assert docker("network", "inspect", "-f", "{{.Internal}}", n, check=True).stdout.strip() == "true"
    srv, cli = names("insrv"), names("incli")
    run_httpd(docker, srv, "--network", n)
    docker("run", "-d", "--name", cli, "--network", n, "busybox", "sleep", "600", check=True)
    # in-network traffic works
    ctr_http_eventually(docker, cli, f"http://{container_ip(daemon, srv, n)}/", srv)
    # nothing leaves: not the outside, not the host's LAN address
    assert ctr_http(docker, cli, WHOAMI) is None
    assert docker("exec", cli, "ping", "-c", "1", "-W", "2", LAN_OUTSIDE_IP).returncode != 0
    assert docker("exec", cli, "ping", "-c", "1", "-W", "2", LAN_HOST_IP).returncode != 0
    # no default route out
    assert "default" not in docker("exec", cli, "ip", "route", check=True).stdout
    # while a container on a normal network does get out (the control)
    ok = names("inctl")
    docker("run", "-d", "--name", ok, "busybox", "sleep", "600", check=True)
    assert (ctr_http(docker, ok, WHOAMI, timeout=5) or "").strip() == LAN_HOST_IP


def test_stable_mac_and_mtu(docker, daemon, nets, names):
    n = nets("mtu")
    docker("network", "create", "-o", "com.docker.network.driver.mtu=1280", n, check=True)
    c = names("mtu")
    docker("run", "-d", "--name", c, "--network", n, "busybox", "sleep", "600", check=True)
    mac = daemon.inspect(c)["NetworkSettings"]["Networks"][n]["MacAddress"]
    r = docker("exec", c, "cat", "/sys/class/net/eth0/address", "/sys/class/net/eth0/mtu", check=True)
    got_mac, mtu = r.stdout.split()
    assert got_mac == mac.lower()
    assert mtu == "1280"
    # what inspect says is what the interface has, also after a restart
    docker("restart", "-t", "0", c, check=True)
    mac2 = daemon.inspect(c)["NetworkSettings"]["Networks"][n]["MacAddress"]
    r = docker("exec", c, "cat", "/sys/class/net/eth0/address", check=True)
    assert r.stdout.strip() == mac2.lower()
    # a MAC given by the user is kept
    c2 = names("mac")
    docker("run", "-d", "--name", c2, "--network", n, "--mac-address", "02:42:de:ad:be:ef", "busybox", "sleep", "600",
           check=True)
    r = docker("exec", c2, "cat", "/sys/class/net/eth0/address", check=True)
    assert r.stdout.strip() == "02:42:de:ad:be:ef"
    assert daemon.inspect(c2)["NetworkSettings"]["Networks"][n]["MacAddress"] == "02:42:de:ad:be:ef"


def test_docker_run_rm_on_user_network_cleans_up(docker, nets, nethost):
    n = nets("rmnet")
    docker("network", "create", n, check=True)
    before = nethost.veths()
    r = docker("run", "--rm", "--network", n, "busybox", "sh", "-c", "ip -o -4 addr show eth0")
    assert r.returncode == 0, r.stderr
    subnet = docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", n, check=True).stdout.strip()
    ip = r.stdout.split("inet ")[1].split("/")[0]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(subnet)
    wait_for(lambda: nethost.veths() == before, 5, 0.1, "the --rm container's veth to go")
    assert docker("network", "inspect", "-f", "{{len .Containers}}", n, check=True).stdout.strip() == "0"


def test_ipv6_dual_stack(docker, daemon, nets, names, nethost):
    n = nets("v6")
    r = docker("network", "create", "--ipv6", "--subnet", "10.91.6.0/24", "--subnet", "fd00:5f:1::/64", n)
    assert r.returncode == 0, r.stderr
    i = json_inspect_net(docker, n)
    assert i["EnableIPv6"] is True
    subnets = {c["Subnet"]: c.get("Gateway") for c in i["IPAM"]["Config"]}
    assert set(subnets) == {"10.91.6.0/24", "fd00:5f:1::/64"}
    assert subnets["fd00:5f:1::/64"] and ipaddress.ip_address(subnets["fd00:5f:1::/64"]) in ipaddress.ip_network("fd00:5f:1::/64")
    srv, cli = names("v6srv"), names("v6cli")
    run_httpd(docker, srv, "--network", n)
    docker("run", "-d", "--name", cli, "--network", n, "busybox", "sleep", "600", check=True)
    ep = daemon.inspect(srv)["NetworkSettings"]["Networks"][n]
    v6 = ep["GlobalIPv6Address"]
    assert v6 and ipaddress.ip_address(v6) in ipaddress.ip_network("fd00:5f:1::/64"), ep
    assert ep["IPv6Gateway"] == subnets["fd00:5f:1::/64"]
    assert ipaddress.ip_address(ep["IPAddress"]) in ipaddress.ip_network("10.91.6.0/24")
    assert f"{v6}/64" in docker("exec", srv, "ip", "-o", "-6", "addr", "show", "eth0", check=True).stdout
    # host -> container and container -> container over IPv6
    nethost.http_eventually(nethost.host_pid, f"http://[{v6}]/", srv)
    ctr_http_eventually(docker, cli, f"http://[{v6}]/", srv)
