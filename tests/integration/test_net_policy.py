"""Network policies (issue 3, item 6): `shibafu network policy create --name N
--network NET --deny-ingress-from NET --allow-ingress-from NET[:PORT]`,
ls/inspect/rm, enforced by nftables on real traffic, visible in `network
inspect`. Deny wins over allow; without a rule, networks stay isolated."""

import json

from conftest import LAN_HOST_IP, LAN_OUTSIDE_IP, WHOAMI_PORT, container_ip, ctr_http, ctr_http_eventually, run_httpd


def three_networks(docker, nets, names):
    a, b, c = nets("pola"), nets("polb"), nets("polc")
    for n in (a, b, c):
        docker("network", "create", n, check=True)
    cb, cc = names("cli-b"), names("cli-c")
    docker("run", "-d", "--name", cb, "--network", b, "busybox", "sleep", "600", check=True)
    docker("run", "-d", "--name", cc, "--network", c, "busybox", "sleep", "600", check=True)
    return a, b, c, cb, cc


def test_deny_ingress_blocks_that_network_only(docker, daemon, shibafu, nets, names, nethost):
    a, b, c, cb, cc = three_networks(docker, nets, names)
    srv = names("pol-srv")
    run_httpd(docker, srv, "--network", a, "-p", "18200:80")
    url = f"http://{LAN_HOST_IP}:18200/"
    # without a policy, containers of any network reach a's published port
    ctr_http_eventually(docker, cb, url, srv)
    ctr_http_eventually(docker, cc, url, srv)

    p = nets.policy("deny")
    r = shibafu("network", "policy", "create", "--name", p, "--network", a, "--deny-ingress-from", b)
    assert r.returncode == 0, r.stderr
    # applied when the command returns
    assert ctr_http(docker, cb, url) is None
    assert (ctr_http(docker, cc, url) or "").strip() == srv
    assert (nethost.http(nethost.outside_pid, url) or "").strip() == srv
    # b's containers still get out
    assert (ctr_http(docker, cb, f"http://{LAN_OUTSIDE_IP}:{WHOAMI_PORT}/") or "").strip() == LAN_HOST_IP

    r = shibafu("network", "policy", "rm", p)
    assert r.returncode == 0, r.stderr
    ctr_http_eventually(docker, cb, url, srv, timeout=5)


def test_allow_ingress_with_port_lets_only_that_port_through(docker, daemon, shibafu, nets, names):
    a, b, c, cb, cc = three_networks(docker, nets, names)
    srv, peer = names("pol-srv"), names("pol-peer")
    run_httpd(docker, srv, "--network", a, ports="80 81")
    docker("run", "-d", "--name", peer, "--network", a, "busybox", "sleep", "600", check=True)
    ip = container_ip(daemon, srv, a)
    # the server is up (seen from its own network), and b is isolated from it
    ctr_http_eventually(docker, peer, f"http://{ip}:81/", srv)
    assert ctr_http(docker, cb, f"http://{ip}:80/") is None

    p = nets.policy("allow")
    r = shibafu("network", "policy", "create", "--name", p, "--network", a, "--allow-ingress-from", f"{b}:80")
    assert r.returncode == 0, r.stderr
    assert (ctr_http(docker, cb, f"http://{ip}:80/") or "").strip() == srv
    assert ctr_http(docker, cb, f"http://{ip}:81/") is None
    assert ctr_http(docker, cc, f"http://{ip}:80/") is None
    # ingress only: a's containers still cannot open connections into b
    docker("exec", "-d", cb, "sh", "-c", "mkdir -p /w && echo b > /w/index.html && httpd -p 80 -h /w", check=True)
    bip = container_ip(daemon, cb, b)
    ctr_http_eventually(docker, cb, f"http://{bip}/", "b")
    assert ctr_http(docker, srv, f"http://{bip}/") is None
    # same-network traffic is untouched
    assert (ctr_http(docker, peer, f"http://{ip}:81/") or "").strip() == srv

    r = shibafu("network", "policy", "rm", p)
    assert r.returncode == 0, r.stderr
    assert ctr_http(docker, cb, f"http://{ip}:80/") is None


def test_deny_wins_over_allow(docker, daemon, shibafu, nets, names):
    a, b, c, cb, cc = three_networks(docker, nets, names)
    srv = names("pol-srv")
    run_httpd(docker, srv, "--network", a)
    ip = container_ip(daemon, srv, a)
    allow = nets.policy("allow")
    r = shibafu("network", "policy", "create", "--name", allow, "--network", a, "--allow-ingress-from", b,
                "--allow-ingress-from", c)
    assert r.returncode == 0, r.stderr
    ctr_http_eventually(docker, cb, f"http://{ip}/", srv, timeout=5)
    ctr_http_eventually(docker, cc, f"http://{ip}/", srv, timeout=5)
    deny = nets.policy("deny")
    r = shibafu("network", "policy", "create", "--name", deny, "--network", a, "--deny-ingress-from", b)
    assert r.returncode == 0, r.stderr
    assert ctr_http(docker, cb, f"http://{ip}/") is None
    assert (ctr_http(docker, cc, f"http://{ip}/") or "").strip() == srv


def test_policy_ls_inspect_rm_and_network_inspect(docker, daemon, shibafu, nets, nethost):
    a, b = nets("pola"), nets("polb")
    docker("network", "create", a, check=True)
    docker("network", "create", b, check=True)
    p = nets.policy("meta")
    table_before = nethost.shibafu_table()
    r = shibafu("network", "policy", "create", "--name", p, "--network", a, "--deny-ingress-from", b,
                "--allow-ingress-from", f"{b}:8080")
    assert r.returncode == 0, r.stderr
    assert nethost.shibafu_table() != table_before, "the policy left no trace in the firewall"

    r = shibafu("network", "policy", "ls")
    assert r.returncode == 0, r.stderr
    rows = [l for l in r.stdout.splitlines() if p in l.split()]
    assert len(rows) == 1 and a in rows[0], r.stdout

    r = shibafu("network", "policy", "inspect", p)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    pol = doc[0] if isinstance(doc, list) else doc
    anet = json.loads(docker("network", "inspect", a, check=True).stdout)[0]
    bid = json.loads(docker("network", "inspect", b, check=True).stdout)[0]["Id"]
    assert pol["Name"] == p and pol["Id"]
    assert pol["Network"] in (a, anet["Id"])
    assert [x["Network"] for x in pol["DenyIngressFrom"]] in ([b], [bid])
    assert [(x["Network"], x.get("Port")) for x in pol["AllowIngressFrom"]] in ([(b, 8080)], [(bid, 8080)])
    # the raw API, filtered by network
    st, _, body = daemon.api("GET", f"/shibafu/networks/policies?network={a}")
    assert st == 200 and [x["Name"] for x in json.loads(body)] == [p]
    st, _, body = daemon.api("GET", f"/shibafu/networks/policies?network={b}")
    assert st == 200 and json.loads(body) == []
    # visible in network inspect
    assert p in json.dumps(anet), anet

    r = shibafu("network", "policy", "rm", p)
    assert r.returncode == 0, r.stderr
    assert p not in shibafu("network", "policy", "ls", check=True).stdout
    r = shibafu("network", "policy", "inspect", p)
    assert r.returncode != 0 and p in r.stderr
    assert p not in docker("network", "inspect", a, check=True).stdout
    assert nethost.shibafu_table() == table_before


def test_policy_bad_input(daemon, shibafu, nets, nethost):
    a, b = nets("pola"), nets("polb")
    daemon.docker("network", "create", a, check=True)
    daemon.docker("network", "create", b, check=True)
    table_before = nethost.shibafu_table()
    p = nets.policy("bad")
    r = shibafu("network", "policy", "create", "--name", p, "--network", a, "--deny-ingress-from", "no-such-net-pol")
    assert r.returncode != 0 and "no-such-net-pol" in r.stderr, r.stderr
    r = shibafu("network", "policy", "create", "--name", p, "--network", "no-such-net-pol2", "--deny-ingress-from", a)
    assert r.returncode != 0 and "no-such-net-pol2" in r.stderr, r.stderr
    r = shibafu("network", "policy", "create", "--name", p, "--network", a, "--allow-ingress-from", f"{a}:99999")
    assert r.returncode != 0 and "99999" in r.stderr, r.stderr
    assert p not in shibafu("network", "policy", "ls", check=True).stdout
    assert nethost.shibafu_table() == table_before
    # duplicate names are refused
    r = shibafu("network", "policy", "create", "--name", p, "--network", a, "--deny-ingress-from", b)
    assert r.returncode == 0, r.stderr
    r = shibafu("network", "policy", "create", "--name", p, "--network", b, "--deny-ingress-from", a)
    assert r.returncode != 0 and p in r.stderr
    st, _, body = daemon.api("GET", "/shibafu/networks/policies/no-such-policy")
    assert st == 404 and b"no-such-policy" in body
    st, _, body = daemon.api("DELETE", "/shibafu/networks/policies/no-such-policy")
    assert st == 404
