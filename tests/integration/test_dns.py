"""Embedded DNS of user-defined networks (issue 4, items 1, 2, 3 and 6):
containers find each other by name, hostname, alias and NAME.NET.local on
the networks they share, through the resolv.conf the engine writes; names
follow stop/start and rename; the default bridge has none. `dig` runs in
the daemon's netns ("the host"). Upstreams: only 127.0.0.x (nothing is
forwarded to a real resolver)."""

import ipaddress
import json

from helpers import wait_for

from conftest import container_ip, ctr_http_eventually, run_httpd

# The test daemon runs with SHIBAFU_DNS_UPSTREAMS=127.0.0.153 (tests/helpers.py):
# the embedded DNS never forwards to the host's real resolvers here.


def gateway(docker, net: str) -> str:
    info = json.loads(docker("network", "inspect", net, check=True).stdout)[0]
    return info["IPAM"]["Config"][0]["Gateway"]


def lookup(docker, ctr: str, name: str, server: str = "") -> list[str]:
    """busybox nslookup inside `ctr`: the IPv4 answers (empty when the name
    does not resolve)."""
    argv = ["exec", ctr, "nslookup", "-type=a", name] + ([server] if server else [])
    r = docker(*argv, timeout=30)
    if r.returncode != 0:
        return []
    # Skip the "Server:/Address:" header block: answers come after "Name:".
    out, seen_name = [], False
    for line in r.stdout.splitlines():
        line = line.strip()
        if line.startswith("Name:"):
            seen_name = True
        elif seen_name and line.startswith("Address"):
            a = line.split(":", 1)[1].strip().split()[0]
            if ipaddress.ip_address(a).version == 4:
                out.append(a)
    return out


def dig(nethost, server: str, *args) -> list[str]:
    r = nethost.host("dig", f"@{server}", "+short", "+time=2", "+tries=1", *args, timeout=20)
    assert r.returncode == 0, f"dig {args} failed: {r.stdout}{r.stderr}"
    return [l for l in r.stdout.splitlines() if l and not l.startswith(";")]


def sleeper(docker, name: str, *args):
    docker("run", "-d", "--name", name, *args, "busybox", "sleep", "600", check=True)


def test_names_resolve_on_a_user_network(docker, daemon, nets, names, nethost):
    n = nets("dnsa")
    docker("network", "create", n, check=True)
    gw = gateway(docker, n)
    srv, cli = names("srv"), names("cli")
    run_httpd(docker, srv, "--network", n, "--network-alias", "webalias", "--hostname", "websrv")
    sleeper(docker, cli, "--network", n)
    ip = container_ip(daemon, srv, n)
    # resolv.conf points at the network's gateway, with the network's zone
    rc = docker("exec", cli, "cat", "/etc/resolv.conf", check=True).stdout
    assert f"nameserver {gw}" in rc and f"search {n}.local" in rc and "ndots:0" in rc, rc
    # name, alias, hostname and NAME.NET.local, asked at the gateway
    for name in (srv, "webalias", "websrv", f"{srv}.{n}.local"):
        assert wait_for(lambda: lookup(docker, cli, name, gw) == [ip], 10, 0.2, f"{name} -> {ip}")
    # through the container's own resolver config (search domain, ndots)
    assert lookup(docker, cli, srv) == [ip]
    ctr_http_eventually(docker, cli, f"http://{srv}/", srv)
    ctr_http_eventually(docker, cli, "http://webalias/", srv)
    # unknown names: no answer
    assert lookup(docker, cli, "nosuchname", gw) == []
    # from the host: A and PTR at the gateway
    assert dig(nethost, gw, srv) == [ip]
    assert dig(nethost, gw, f"{srv}.{n}.local") == [ip]
    ptr = dig(nethost, gw, "-x", ip)
    assert ptr and ptr[0].rstrip(".") in (srv, f"{srv}.{n}.local"), ptr
    r = nethost.host("dig", f"@{gw}", "+time=2", "+tries=1", f"nosuch.{n}.local", timeout=20)
    assert "NXDOMAIN" in r.stdout, r.stdout


def test_other_networks_do_not_see_the_names(docker, daemon, nets, names, nethost):
    a, b = nets("dnsb"), nets("dnsc")
    docker("network", "create", a, check=True)
    docker("network", "create", b, check=True)
    gwa, gwb = gateway(docker, a), gateway(docker, b)
    srv, peer, stranger, defc = names("srv"), names("peer"), names("stranger"), names("defc")
    sleeper(docker, srv, "--network", a)
    sleeper(docker, peer, "--network", a)
    sleeper(docker, stranger, "--network", b)
    sleeper(docker, defc)
    ip = container_ip(daemon, srv, a)
    assert wait_for(lambda: lookup(docker, peer, srv, gwa) == [ip], 10, 0.2, "the peer resolves it")
    # another network's container: not through its own server, nor by
    # asking the first network's server directly
    assert lookup(docker, stranger, srv) == []
    assert lookup(docker, stranger, f"{srv}.{a}.local", gwb) == []
    # the host asking network b's server: no names of network a
    assert dig(nethost, gwb, srv) == []
    # the default bridge keeps the host's resolv.conf, and has no names
    rc = docker("exec", defc, "cat", "/etc/resolv.conf", check=True).stdout
    assert gwa not in rc and gwb not in rc and ".local" not in rc, rc
    # no server on the default bridge's gateway at all
    r = nethost.host("dig", "@172.17.0.1", "+time=1", "+tries=1", srv, timeout=20)
    assert "ANSWER SECTION" not in r.stdout, r.stdout


def test_connected_containers_see_both_networks(docker, daemon, nets, names):
    a, b = nets("dnsd"), nets("dnse")
    docker("network", "create", a, check=True)
    docker("network", "create", b, check=True)
    gwa, gwb = gateway(docker, a), gateway(docker, b)
    x, y, both = names("x"), names("y"), names("both")
    sleeper(docker, x, "--network", a)
    sleeper(docker, y, "--network", b)
    sleeper(docker, both, "--network", a)
    ipy = container_ip(daemon, y, b)
    assert lookup(docker, both, y, gwa) == []
    docker("network", "connect", b, both, check=True)
    assert wait_for(lambda: lookup(docker, both, y, gwb) == [ipy], 10, 0.2, "y after connect")
    # y now sees `both` by its address on b, and x by nothing
    ipboth = container_ip(daemon, both, b)
    assert wait_for(lambda: lookup(docker, y, both, gwb) == [ipboth], 10, 0.2, "both from y")
    assert lookup(docker, y, x, gwb) == []
    docker("network", "disconnect", b, both, check=True)
    assert wait_for(lambda: lookup(docker, y, both, gwb) == [], 10, 0.2, "both gone after disconnect")


def test_names_follow_stop_start_and_rename(docker, daemon, nets, names, nethost):
    n = nets("dnsf")
    docker("network", "create", n, check=True)
    gw = gateway(docker, n)
    srv, cli = names("srv"), names("cli")
    sleeper(docker, srv, "--network", n)
    sleeper(docker, cli, "--network", n)
    ip = container_ip(daemon, srv, n)
    assert wait_for(lambda: dig(nethost, gw, srv) == [ip], 10, 0.1, "registered at start")
    docker("stop", "-t", "1", srv, check=True)
    assert wait_for(lambda: dig(nethost, gw, srv) == [], 5, 0.05, "gone after stop")
    assert lookup(docker, cli, srv) == []
    docker("start", srv, check=True)
    ip2 = container_ip(daemon, srv, n)
    assert wait_for(lambda: dig(nethost, gw, srv) == [ip2], 10, 0.1, "back after start")
    new = names("renamed")
    docker("rename", srv, new, check=True)
    assert wait_for(lambda: dig(nethost, gw, new) == [ip2], 5, 0.05, "new name")
    assert dig(nethost, gw, srv) == []
    assert lookup(docker, cli, new) == [ip2]
    docker("rm", "-f", new, check=True)
    assert wait_for(lambda: dig(nethost, gw, new) == [], 10, 0.1, "gone after rm")


def test_dns_options_override_like_docker(docker, nets, names):
    n = nets("dnsg")
    docker("network", "create", n, check=True)
    gw = gateway(docker, n)
    c = names("opts")
    sleeper(docker, c, "--network", n, "--dns", "127.0.0.153", "--dns-search", "corp.test",
            "--dns-option", "timeout:1")
    rc = docker("exec", c, "cat", "/etc/resolv.conf", check=True).stdout
    # --dns becomes the embedded server's upstream for this container
    assert f"nameserver {gw}" in rc and "127.0.0.153" not in rc, rc
    assert "search corp.test" in rc and f"{n}.local" not in rc, rc
    assert "options ndots:0 timeout:1" in rc, rc


def test_network_removed_stops_its_server_and_restart_restores(docker, daemon, nets, names, nethost):
    n = nets("dnsh")
    docker("network", "create", n, check=True)
    gw = gateway(docker, n)
    srv = names("srv")
    sleeper(docker, srv, "--network", n)
    ip = container_ip(daemon, srv, n)
    assert wait_for(lambda: dig(nethost, gw, srv) == [ip], 10, 0.1, "registered")
    # a daemon restart rebuilds the table from state
    daemon.stop()
    daemon.start()
    assert wait_for(lambda: dig(nethost, gw, srv) == [ip], 10, 0.1, "after a daemon restart")
    docker("rm", "-f", srv, check=True)
    docker("network", "rm", n, check=True)
    r = nethost.host("dig", f"@{gw}", "+time=1", "+tries=1", srv, timeout=20)
    assert "ANSWER SECTION" not in r.stdout, r.stdout


#: A fake upstream resolver: answers every A query with 192.0.2.7 (TTL 60).
FAKE_UPSTREAM_PY = r'''
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("listening", flush=True)
while True:
    q, peer = s.recvfrom(4096)
    if len(q) < 12:
        continue
    end = 12
    while q[end] != 0:
        end += q[end] + 1
    end += 5
    hdr = q[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
    ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 7])
    s.sendto(hdr + q[12:end] + ans, peer)
'''


def test_other_names_go_to_the_configured_upstream(docker, nets, names, nethost):
    """The session daemon runs with SHIBAFU_DNS_UPSTREAMS=127.0.0.153 (set
    above): a fake resolver there answers names the network does not know."""
    p = nethost.spawn_in(nethost.host_pid, "python3", "-c", FAKE_UPSTREAM_PY, "127.0.0.153")
    try:
        assert p.stdout.readline().strip() == "listening", p.stderr.read()
        n = nets("dnsi")
        docker("network", "create", n, check=True)
        gw = gateway(docker, n)
        c = names("fwd")
        sleeper(docker, c, "--network", n)
        assert dig(nethost, gw, "upstream.example.") == ["192.0.2.7"]
        assert lookup(docker, c, "upstream.example") == ["192.0.2.7"]
    finally:
        nethost.stop(p)


def test_live_connect_rewrites_resolv_conf_and_hosts(docker, daemon, nets, names):
    """`network connect` of a running container on the default bridge: its
    resolv.conf now points at the new network's DNS and /etc/hosts carries its
    new address, so bare names resolve at once (Docker rebuilds both too);
    `disconnect` takes them away again."""
    n = nets("dnslive")
    docker("network", "create", n, check=True)
    gw = gateway(docker, n)
    srv, cli = names("lsrv"), names("lcli")
    sleeper(docker, srv, "--network", n)
    sleeper(docker, cli)  # default bridge: host resolvers, no names
    before = docker("exec", cli, "cat", "/etc/resolv.conf", check=True).stdout
    assert f"nameserver {gw}" not in before
    docker("network", "connect", n, cli, check=True)
    conf = docker("exec", cli, "cat", "/etc/resolv.conf", check=True).stdout
    assert f"nameserver {gw}" in conf and f"search {n}.local" in conf, conf
    ip = daemon.inspect(cli)["NetworkSettings"]["Networks"][n]["IPAddress"]
    hosts = docker("exec", cli, "cat", "/etc/hosts", check=True).stdout
    assert ip in hosts, hosts
    want = container_ip(daemon, srv, n)
    assert wait_for(lambda: lookup(docker, cli, srv) == [want], 10, 0.3, "bare name after connect")
    docker("network", "disconnect", n, cli, check=True)
    conf = docker("exec", cli, "cat", "/etc/resolv.conf", check=True).stdout
    assert f"nameserver {gw}" not in conf, conf
    assert ip not in docker("exec", cli, "cat", "/etc/hosts", check=True).stdout
