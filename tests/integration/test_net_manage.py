"""Network management (issue 3, item 1): create/ls/inspect/rm/prune/connect/
disconnect through the docker CLI, docker-py and the shibafu CLI, with
Docker's JSON shapes and the kernel objects (bridges, veths) behind them."""

import json

import pytest

from conftest import container_ip, run_httpd


def net_inspect(docker, name):
    r = docker("network", "inspect", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def net_names(docker):
    return set(docker("network", "ls", "--format", "{{.Name}}", check=True).stdout.split())


def test_predefined_networks_listed(docker):
    r = docker("network", "ls", "--format", "{{.Name}} {{.Driver}}", check=True)
    rows = dict(l.split() for l in r.stdout.splitlines())
    assert rows.get("bridge") == "bridge"
    assert rows.get("host") == "host"
    assert rows.get("none") == "null"
    b = net_inspect(docker, "bridge")
    cfg = b["IPAM"]["Config"]
    assert {"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}.items() <= cfg[0].items(), cfg
    assert b["Driver"] == "bridge" and b["Scope"] == "local"
    assert b["Options"].get("com.docker.network.bridge.default_bridge") == "true"


def test_docker_cli_create_inspect_rm(docker, nets, nethost):
    n = nets("mgmt")
    bname = "sf-test-" + n[-6:].replace("-", "")
    r = docker("network", "create", "--driver", "bridge", "--subnet", "10.90.1.0/24", "--gateway", "10.90.1.254",
               "--ip-range", "10.90.1.128/25", "--label", "tier=front", "-o",
               f"com.docker.network.bridge.name={bname}", "-o", "com.docker.network.driver.mtu=1400", n)
    assert r.returncode == 0, r.stderr
    nid = r.stdout.strip()
    assert len(nid) == 64 and all(c in "0123456789abcdef" for c in nid)

    i = net_inspect(docker, n)
    assert i["Name"] == n and i["Id"] == nid and i["Driver"] == "bridge" and i["Scope"] == "local"
    assert i["Internal"] is False and i["EnableIPv6"] is False
    assert i["Labels"] == {"tier": "front"}
    assert i["IPAM"]["Driver"] == "default"
    assert i["IPAM"]["Config"] == [{"Subnet": "10.90.1.0/24", "IPRange": "10.90.1.128/25", "Gateway": "10.90.1.254"}]
    assert i["Options"].get("com.docker.network.bridge.name") == bname
    assert i["Containers"] == {}
    # by ID prefix too
    assert net_inspect(docker, nid[:12])["Name"] == n

    # the kernel's side: a bridge with that name, the gateway address and the MTU
    assert bname in nethost.bridges()
    addr = nethost.host("ip", "-j", "addr", "show", "dev", bname, check=True)
    info = json.loads(addr.stdout)[0]
    assert {"10.90.1.254/24"} <= {f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"] if a["family"] == "inet"}
    assert info["mtu"] == 1400

    # filters
    assert docker("network", "ls", "-q", "--no-trunc", "--filter", f"name={n}", check=True).stdout.split() == [nid]
    assert n in docker("network", "ls", "--format", "{{.Name}}", "--filter", "label=tier=front", check=True).stdout.split()
    assert n not in docker("network", "ls", "--format", "{{.Name}}", "--filter", "label=tier=back", check=True).stdout.split()
    assert n in docker("network", "ls", "--format", "{{.Name}}", "--filter", "type=custom", check=True).stdout.split()
    assert "bridge" not in docker("network", "ls", "--format", "{{.Name}}", "--filter", "type=custom", check=True).stdout.split()

    # duplicate name refused
    r = docker("network", "create", n)
    assert r.returncode != 0 and n in r.stderr

    r = docker("network", "rm", n)
    assert r.returncode == 0, r.stderr
    assert n not in net_names(docker)
    assert bname not in nethost.bridges()
    r = docker("network", "inspect", n)
    assert r.returncode != 0 and n in r.stderr


def test_automatic_subnets_do_not_overlap(docker, nets):
    a, b = nets("auto"), nets("auto")
    docker("network", "create", a, check=True)
    docker("network", "create", b, check=True)
    import ipaddress
    sa = ipaddress.ip_network(net_inspect(docker, a)["IPAM"]["Config"][0]["Subnet"])
    ga = ipaddress.ip_address(net_inspect(docker, a)["IPAM"]["Config"][0]["Gateway"])
    sb = ipaddress.ip_network(net_inspect(docker, b)["IPAM"]["Config"][0]["Subnet"])
    assert not sa.overlaps(sb)
    assert not sa.overlaps(ipaddress.ip_network("172.17.0.0/16"))
    assert ga in sa and ga != sa.network_address


def test_connect_disconnect_and_inspect_containers(docker, daemon, nets, names, nethost):
    n = nets("conn")
    docker("network", "create", "--subnet", "10.90.2.0/24", n, check=True)
    c = names("conn")
    run_httpd(docker, c)
    veths_before = nethost.veths()

    r = docker("network", "connect", "--ip", "10.90.2.50", "--alias", "web", n, c)
    assert r.returncode == 0, r.stderr
    assert container_ip(daemon, c, n) == "10.90.2.50"
    ep = daemon.inspect(c)["NetworkSettings"]["Networks"][n]
    assert "web" in (ep.get("Aliases") or []) or "web" in (ep.get("DNSNames") or [])
    assert ep["Gateway"] == "10.90.2.1" and ep["IPPrefixLen"] == 24 and ep["MacAddress"]
    assert ep["NetworkID"] == net_inspect(docker, n)["Id"]
    # a new interface inside, a new veth outside
    r = docker("exec", c, "ip", "-o", "-4", "addr", "show", check=True)
    assert "10.90.2.50/24" in r.stdout
    assert len(nethost.veths() - veths_before) == 1
    # the network lists the container
    cs = net_inspect(docker, n)["Containers"]
    cid = daemon.inspect(c)["Id"]
    assert list(cs) == [cid]
    assert cs[cid]["Name"] == c and cs[cid]["IPv4Address"] == "10.90.2.50/24"
    # the host reaches it on the new network
    nethost.http_eventually(nethost.host_pid, "http://10.90.2.50/", c)

    # connecting twice is an error
    r = docker("network", "connect", n, c)
    assert r.returncode != 0

    r = docker("network", "disconnect", n, c)
    assert r.returncode == 0, r.stderr
    assert n not in daemon.inspect(c)["NetworkSettings"]["Networks"]
    assert "10.90.2.50" not in docker("exec", c, "ip", "-o", "-4", "addr", "show", check=True).stdout
    assert nethost.veths() == veths_before
    assert net_inspect(docker, n)["Containers"] == {}
    assert nethost.http(nethost.host_pid, "http://10.90.2.50/", 2) is None
    # the address is free again
    r = docker("network", "connect", "--ip", "10.90.2.50", n, c)
    assert r.returncode == 0, r.stderr
    docker("network", "disconnect", n, c, check=True)


def test_rm_in_use_refused_then_prune(docker, nets, names):
    used, unused, kept = nets("used"), nets("unused"), nets("kept")
    docker("network", "create", used, check=True)
    docker("network", "create", "--label", "keep=yes", kept, check=True)
    docker("network", "create", unused, check=True)
    c = names("user")
    docker("run", "-d", "--name", c, "--network", used, "busybox", "sleep", "600", check=True)

    r = docker("network", "rm", used)
    assert r.returncode != 0
    assert "active endpoints" in r.stderr or "in use" in r.stderr, r.stderr
    assert used in net_names(docker)

    r = docker("network", "prune", "-f", "--filter", "label!=keep=yes")
    assert r.returncode == 0, r.stderr
    assert unused in r.stdout
    left = net_names(docker)
    assert unused not in left
    assert used in left and kept in left
    assert {"bridge", "host", "none"} <= left
    # predefined networks cannot be removed
    r = docker("network", "rm", "bridge")
    assert r.returncode != 0 and "bridge" in r.stderr
    assert "bridge" in net_names(docker)


def test_run_on_two_networks(docker, daemon, nets, names):
    a, b = nets("twoa"), nets("twob")
    docker("network", "create", "--subnet", "10.90.3.0/24", a, check=True)
    docker("network", "create", "--subnet", "10.90.4.0/24", b, check=True)
    c = names("two")
    docker("run", "-d", "--name", c, "--network", a, "--network", b, "busybox", "sleep", "600", check=True)
    r = docker("exec", c, "sh", "-c", "ip -o -4 addr show eth0; ip -o -4 addr show eth1; ip route", check=True)
    lines = r.stdout.splitlines()
    assert "10.90.3." in lines[0], r.stdout
    assert "10.90.4." in lines[1], r.stdout
    assert "default via 10.90.3.1 dev eth0" in r.stdout
    assert "default via 10.90.4.1" not in r.stdout
    assert set(daemon.inspect(c)["NetworkSettings"]["Networks"]) == {a, b}


def test_dockerpy_networks(client, nets, names, daemon):
    import docker as dockerpy
    n = nets("py")
    ipam = dockerpy.types.IPAMConfig(pool_configs=[dockerpy.types.IPAMPool(subnet="10.90.5.0/24", gateway="10.90.5.1")])
    net = client.networks.create(n, driver="bridge", ipam=ipam, labels={"by": "docker-py"})
    assert net.name == n
    net.reload()
    assert net.attrs["IPAM"]["Config"][0]["Subnet"] == "10.90.5.0/24"
    assert net.attrs["Labels"] == {"by": "docker-py"}
    assert [x.name for x in client.networks.list(names=[n])] == [n]

    c = names("pyc")
    ctr = client.containers.run("busybox", ["sleep", "600"], name=c, detach=True)
    net.connect(ctr, ipv4_address="10.90.5.77", aliases=["pyalias"])
    ctr.reload()
    assert ctr.attrs["NetworkSettings"]["Networks"][n]["IPAddress"] == "10.90.5.77"
    net.reload()
    assert [x.name for x in net.containers] == [c]
    net.disconnect(ctr)
    net.reload()
    assert net.containers == []
    ctr.remove(force=True)

    with pytest.raises(dockerpy.errors.NotFound):
        client.networks.get("no-such-net-py")
    net.remove()
    assert not client.networks.list(names=[n])

    pruneme = nets("pyprune")
    client.networks.create(pruneme)
    res = client.networks.prune()
    assert pruneme in (res.get("NetworksDeleted") or [])


def test_shibafu_cli_networks(shibafu, docker, daemon, nets, names, nethost):
    n = nets("sf")
    # the short form: NAME SUBNET
    r = shibafu("network", "create", n, "10.90.6.0/24")
    assert r.returncode == 0, r.stderr
    i = net_inspect(docker, n)
    assert i["IPAM"]["Config"][0]["Subnet"] == "10.90.6.0/24"
    assert i["IPAM"]["Config"][0]["Gateway"] == "10.90.6.1"

    r = shibafu("network", "ls")
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0].split()
    assert header[:4] == ["NAME", "SUBNET", "GATEWAY", "DNS"] or header[1:5] == ["NAME", "SUBNET", "GATEWAY", "DNS"], header
    row = [l for l in r.stdout.splitlines() if l.split() and n in l.split()]
    assert row and "10.90.6.0/24" in row[0] and "10.90.6.1" in row[0], r.stdout
    brow = [l for l in r.stdout.splitlines() if "bridge" in l.split()]
    assert brow and "172.17.0.0/16" in brow[0] and "172.17.0.1" in brow[0], r.stdout

    r = shibafu("network", "inspect", n)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["Name"] == n

    c = names("sfc")
    r = shibafu("run", "-d", "--name", c, "--network", n, "--ip", "10.90.6.9", "busybox", "sleep", "600")
    assert r.returncode == 0, r.stderr
    assert container_ip(daemon, c, n) == "10.90.6.9"
    assert nethost.ping(nethost.host_pid, "10.90.6.9")

    r = shibafu("network", "rm", n)
    assert r.returncode != 0 and n in (r.stderr + r.stdout)
    r = shibafu("network", "disconnect", n, c)
    assert r.returncode == 0, r.stderr
    r = shibafu("network", "connect", "--ip", "10.90.6.10", n, c)
    assert r.returncode == 0, r.stderr
    assert container_ip(daemon, c, n) == "10.90.6.10"
    shibafu("rm", "-f", c, check=True)
    r = shibafu("network", "rm", n)
    assert r.returncode == 0, r.stderr
    assert n not in net_names(docker)
