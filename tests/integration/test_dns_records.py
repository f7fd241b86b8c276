"""Embedded DNS records beyond test_dns.py (issue 4, items 3, 4 and 6):
AAAA and IPv6 PTR on an --ipv6 network, SRV for EXPOSEd and published
ports, queries over TCP (several on one connection), --hostname, a
--network-alias shared by two containers (both answer, the order rotates,
an instance whose --health-cmd fails leaves and comes back), visibility
across two networks, and a rename seen at once. `dig` runs in the daemon's
netns ("the host"); busybox nslookup inside containers."""

import json
import time

from helpers import wait_for

from conftest import container_ip, ctr_nslookup, dig_host, dig_short, net_gateway


def sleeper(docker, name: str, *args, image: str = "busybox", cmd=("sleep", "600")):
    docker("run", "-d", "--name", name, *args, image, *cmd, check=True)


def ipv6_of(daemon, name: str, net: str) -> str:
    ep = daemon.inspect(name)["NetworkSettings"]["Networks"][net]
    assert ep["GlobalIPv6Address"], f"{name} has no IPv6 address on {net}: {ep}"
    return ep["GlobalIPv6Address"]


def status(r) -> str:
    """The rcode in dig's header line ("NOERROR", "NXDOMAIN", ...)."""
    for line in r.stdout.splitlines():
        if "status:" in line:
            return line.split("status:", 1)[1].split(",", 1)[0].strip()
    raise AssertionError(f"no status in dig output: {r.stdout}{r.stderr}")


def srv_records(nethost, gw: str, name: str, *extra) -> list[tuple[int, int, int, str]]:
    """(priority, weight, port, target) of the SRV answers."""
    out = []
    for line in dig_short(nethost, gw, *extra, "SRV", name):
        prio, weight, port, target = line.split()
        out.append((int(prio), int(weight), int(port), target))
    return sorted(out, key=lambda t: (t[3], t[2]))


def test_aaaa_and_ipv6_ptr_on_an_ipv6_network(docker, daemon, nets, names, nethost, fake_dns):
    n, v4only = nets("dns6"), nets("dns4")
    docker("network", "create", "--ipv6", "--subnet", "10.93.6.0/24", "--subnet", "fd00:93:6::/64", n, check=True)
    docker("network", "create", "--subnet", "10.93.7.0/24", v4only, check=True)
    gw4, gw6 = net_gateway(docker, n), net_gateway(docker, n, v6=True)
    assert gw6.startswith("fd00:93:6:"), gw6
    srv, cli, old = names("srv6"), names("cli6"), names("old4")
    sleeper(docker, srv, "--network", n, "--hostname", "host6", "--network-alias", "alias6")
    sleeper(docker, cli, "--network", n)
    sleeper(docker, old, "--network", v4only)
    v4, v6 = container_ip(daemon, srv, n), ipv6_of(daemon, srv, n)
    assert wait_for(lambda: dig_short(nethost, gw4, "AAAA", srv) == [v6], 10, 0.1, f"AAAA {srv} -> {v6}")
    for name in (f"{srv}.{n}.local", "host6", f"host6.{n}.local", "alias6"):
        assert dig_short(nethost, gw4, "AAAA", name) == [v6], name
        assert dig_short(nethost, gw4, "A", name) == [v4], name
    # PTR of the v6 address (and of the v4 one) names the container in the zone
    assert dig_short(nethost, gw4, "-x", v6) == [f"{srv}.{n}.local."]
    assert dig_short(nethost, gw4, "-x", v4) == [f"{srv}.{n}.local."]
    # the server listens on the v6 gateway too (DAD may delay the address a moment)
    assert wait_for(lambda: dig_short(nethost, gw6, "AAAA", srv) == [v6], 10, 0.2, f"AAAA at [{gw6}]")
    assert dig_short(nethost, gw6, "-x", v6) == [f"{srv}.{n}.local."]
    # a real resolver inside a container: AAAA through its resolv.conf
    assert ctr_nslookup(docker, cli, srv, "aaaa") == [v6]
    assert ctr_nslookup(docker, cli, "alias6", "aaaa") == [v6]
    # reverse lookups of unused addresses in the network's subnets: NXDOMAIN
    # from the server itself, never forwarded upstream
    up = fake_dns()
    r = dig_host(nethost, gw4, "-x", "fd00:93:6::dead")
    assert status(r) == "NXDOMAIN", r.stdout
    r = dig_host(nethost, gw4, "-x", "10.93.6.250")
    assert status(r) == "NXDOMAIN", r.stdout
    assert up.count() == 0, up.queries
    # a container without IPv6: AAAA is "no data" (NOERROR + SOA), not NXDOMAIN,
    # which would make resolvers drop its A record too
    gwo = net_gateway(docker, v4only)
    assert wait_for(lambda: dig_short(nethost, gwo, "A", old) == [container_ip(daemon, old, v4only)], 10, 0.1,
                    "the v4-only container")
    r = dig_host(nethost, gwo, "AAAA", old)
    assert status(r) == "NOERROR" and "ANSWER: 0" in r.stdout and "SOA" in r.stdout, r.stdout


def test_srv_for_exposed_and_published_ports(docker, daemon, nets, names, nethost, netbox_image):
    n = nets("dnssrv")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    box, plain = names("box"), names("plain")
    # netbox EXPOSEs 80 and 5353/udp; 8080 is published; busybox EXPOSEs nothing
    sleeper(docker, box, "--network", n, "-p", "127.0.0.1::8080", image=netbox_image)
    sleeper(docker, plain, "--network", n)
    ip = container_ip(daemon, box, n)
    target = f"{box}.{n}.local."
    assert wait_for(lambda: srv_records(nethost, gw, f"_80._tcp.{box}.{n}.local"), 10, 0.1, "the SRV record")
    for port, proto in ((80, "tcp"), (5353, "udp"), (8080, "tcp")):
        for qname in (f"_{port}._{proto}.{box}.{n}.local", f"_{port}._{proto}.{box}"):
            recs = srv_records(nethost, gw, qname)
            assert [(p, t) for _, _, p, t in recs] == [(port, target)], (qname, recs)
    # the additional section carries the target's address (no second round trip)
    r = dig_host(nethost, gw, "SRV", f"_80._tcp.{box}.{n}.local")
    assert "ADDITIONAL SECTION" in r.stdout and ip in r.stdout.split("ADDITIONAL SECTION", 1)[1], r.stdout
    # ports it does not have, or the wrong protocol: no such name in the zone
    for qname in (f"_81._tcp.{box}.{n}.local", f"_80._udp.{box}.{n}.local", f"_80._tcp.{plain}.{n}.local"):
        r = dig_host(nethost, gw, "SRV", qname)
        assert status(r) == "NXDOMAIN", (qname, r.stdout)
    # and from a container, through its resolver (busybox nslookup speaks SRV)
    r = docker("exec", plain, "nslookup", "-type=srv", f"_5353._udp.{box}.{n}.local", timeout=30)
    assert r.returncode == 0 and "5353" in r.stdout and f"{box}.{n}.local" in r.stdout, r.stdout + r.stderr


def test_queries_over_tcp(docker, daemon, nets, names, nethost):
    n = nets("dnstcp")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    a, b = names("tcpa"), names("tcpb")
    sleeper(docker, a, "--network", n, "--hostname", "tcphost", "--network-alias", "tcpalias")
    sleeper(docker, b, "--network", n)
    ipa, ipb = container_ip(daemon, a, n), container_ip(daemon, b, n)
    assert wait_for(lambda: dig_short(nethost, gw, "+tcp", a) == [ipa], 10, 0.1, "A over TCP")
    r = dig_host(nethost, gw, "+tcp", a)
    assert "(TCP)" in r.stdout and status(r) == "NOERROR", r.stdout
    # EDNS0 is answered with an OPT record of our own
    assert "EDNS: version: 0" in r.stdout, r.stdout
    assert dig_short(nethost, gw, "+tcp", "-x", ipb) == [f"{b}.{n}.local."]
    r = dig_host(nethost, gw, "+tcp", f"nosuch.{n}.local")
    assert status(r) == "NXDOMAIN", r.stdout
    # several queries on one connection (dig +keepopen reuses it)
    r = nethost.host("dig", f"@{gw}", "+tcp", "+keepopen", "+short", "+time=2", "+tries=1",
                     a, "tcphost", "tcpalias", f"{b}.{n}.local", timeout=30)
    assert r.returncode == 0 and r.stdout.split() == [ipa, ipa, ipa, ipb], r.stdout + r.stderr


def test_shared_alias_answers_both_and_rotates(docker, daemon, nets, names, nethost):
    n = nets("dnsrr")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    w1, w2, cli = names("w1"), names("w2"), names("rrcli")
    sleeper(docker, w1, "--network", n, "--network-alias", "web")
    sleeper(docker, w2, "--network", n, "--network-alias", "web")
    sleeper(docker, cli, "--network", n)
    ips = {container_ip(daemon, w1, n), container_ip(daemon, w2, n)}
    assert wait_for(lambda: set(dig_short(nethost, gw, "web")) == ips, 10, 0.1, "both instances")
    firsts = []
    for _ in range(8):
        ans = dig_short(nethost, gw, "web")
        assert sorted(ans) == sorted(ips), ans
        firsts.append(ans[0])
    # round robin: the first address changes between queries, each leads as often
    assert set(firsts) == ips, firsts
    assert any(firsts[i] != firsts[i + 1] for i in range(len(firsts) - 1)), firsts
    assert abs(firsts.count(sorted(ips)[0]) - firsts.count(sorted(ips)[1])) <= 2, firsts
    # the FQDN and a resolver inside a container see both as well
    assert sorted(dig_short(nethost, gw, f"web.{n}.local")) == sorted(ips)
    assert sorted(ctr_nslookup(docker, cli, "web")) == sorted(ips)


def test_failing_health_check_leaves_the_alias_and_returns(docker, daemon, nets, names, nethost):
    n = nets("dnshc")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    sick, well, cli = names("sick"), names("well"), names("hccli")
    health = ("--health-cmd", "test -f /tmp/ok", "--health-interval", "1s", "--health-retries", "1",
              "--health-timeout", "2s")
    sleeper(docker, sick, "--network", n, "--network-alias", "api", *health,
            cmd=("sh", "-c", "touch /tmp/ok; exec sleep 600"))
    sleeper(docker, well, "--network", n, "--network-alias", "api")
    sleeper(docker, cli, "--network", n)
    ip_sick, ip_well = container_ip(daemon, sick, n), container_ip(daemon, well, n)

    def health_status():
        return daemon.inspect(sick)["State"]["Health"]["Status"]

    wait_for(lambda: health_status() == "healthy", 20, 0.2, "the check to pass")
    assert sorted(dig_short(nethost, gw, "api")) == sorted([ip_sick, ip_well])
    # the check starts failing: the instance leaves the alias's answers...
    docker("exec", sick, "rm", "/tmp/ok", check=True)
    wait_for(lambda: health_status() == "unhealthy", 20, 0.2, "unhealthy")
    assert wait_for(lambda: dig_short(nethost, gw, "api") == [ip_well], 3, 0.05, "the alias without it")
    assert ctr_nslookup(docker, cli, "api") == [ip_well]
    # ...but its own name still answers (it can be reached to be debugged)
    assert dig_short(nethost, gw, sick) == [ip_sick]
    # healthy again: back in the answers
    docker("exec", sick, "touch", "/tmp/ok", check=True)
    wait_for(lambda: health_status() == "healthy", 20, 0.2, "healthy again")
    assert wait_for(lambda: sorted(dig_short(nethost, gw, "api")) == sorted([ip_sick, ip_well]), 3, 0.05,
                    "the alias with it again")


def test_two_networks_visibility(docker, daemon, nets, names, nethost):
    a, b = nets("visa"), nets("visb")
    docker("network", "create", a, check=True)
    docker("network", "create", b, check=True)
    gwa, gwb = net_gateway(docker, a), net_gateway(docker, b)
    dual, only_a, only_b = names("dual"), names("onlya"), names("onlyb")
    sleeper(docker, dual, "--network", a, "--hostname", "dualhost")
    docker("network", "connect", b, dual, check=True)
    sleeper(docker, only_a, "--network", a)
    sleeper(docker, only_b, "--network", b)
    dual_a, dual_b = container_ip(daemon, dual, a), container_ip(daemon, dual, b)
    ip_a, ip_b = container_ip(daemon, only_a, a), container_ip(daemon, only_b, b)
    # each side sees the dual-homed container at its address on the shared network
    assert wait_for(lambda: ctr_nslookup(docker, only_a, dual) == [dual_a], 10, 0.2, "dual from a")
    assert wait_for(lambda: ctr_nslookup(docker, only_b, dual) == [dual_b], 10, 0.2, "dual from b")
    assert ctr_nslookup(docker, only_a, "dualhost") == [dual_a]
    assert ctr_nslookup(docker, only_b, f"{dual}.{b}.local") == [dual_b]
    # the dual-homed container sees both sides, at the server of its first
    # network (its resolv.conf). busybox nslookup tries only the search list
    # for a dotless name, so names are given absolute ("x.") here; the libc
    # resolver (ping) tries the bare name first (ndots:0).
    assert ctr_nslookup(docker, dual, only_a) == [ip_a]
    assert ctr_nslookup(docker, dual, f"{only_b}.") == [ip_b]
    assert ctr_nslookup(docker, dual, f"{only_b}.{b}.local") == [ip_b]
    r = docker("exec", dual, "ping", "-c", "1", "-W", "2", only_b, timeout=30)
    assert f"({ip_b})" in r.stdout, r.stdout + r.stderr
    # a-only cannot resolve b-only: by name, by FQDN, nor by asking b's server
    assert ctr_nslookup(docker, only_a, f"{only_b}.") == []
    assert ctr_nslookup(docker, only_a, f"{only_b}.{b}.local") == []
    assert ctr_nslookup(docker, only_a, f"{only_b}.{b}.local", gwb) == []
    assert ctr_nslookup(docker, only_b, only_a, gwa) == []
    # the host asking each network's server gets that network's view
    assert dig_short(nethost, gwa, dual) == [dual_a]
    assert dig_short(nethost, gwb, dual) == [dual_b]
    assert dig_short(nethost, gwa, f"{only_b}.{b}.local") == []


def test_rename_changes_answers_at_once(docker, daemon, nets, names, nethost):
    n = nets("dnsren")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    old, cli = names("before"), names("rencli")
    sleeper(docker, old, "--network", n, "--network-alias", "stays")
    sleeper(docker, cli, "--network", n)
    ip = container_ip(daemon, old, n)
    assert wait_for(lambda: dig_short(nethost, gw, old) == [ip], 10, 0.1, "registered")
    new = names("after")
    docker("rename", old, new, check=True)
    t0 = time.monotonic()
    wait_for(lambda: dig_short(nethost, gw, new) == [ip], 1.0, 0.02, "the new name within 1 s of the rename")
    took = time.monotonic() - t0
    r = dig_host(nethost, gw, f"{old}.{n}.local")
    assert status(r) == "NXDOMAIN", r.stdout
    assert dig_short(nethost, gw, "-x", ip) == [f"{new}.{n}.local."]
    assert dig_short(nethost, gw, "stays") == [ip]
    assert ctr_nslookup(docker, cli, new) == [ip]
    assert ctr_nslookup(docker, cli, old) == []
    print(f"rename visible after {took * 1000:.0f} ms")


# Asks NAME at GW one query at a time for SECONDS (1 s timeout each) and
# reports how many were answered with exactly WANT, wrongly, or not at all.
_STEADY_CLIENT_PY = r'''
import json, random, socket, struct, sys, time
gw, name, want, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
q0 = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\x00\x00\x01\x00\x01"
ok = wrong = lost = 0
print("started", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    qid = random.randrange(65536)
    s.sendto(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q0, (gw, 53))
    try:
        while True:
            r = s.recv(4096)
            if r[:2] == struct.pack(">H", qid):
                break
    except socket.timeout:
        lost += 1
        continue
    an = struct.unpack(">H", r[6:8])[0]
    good = (r[3] & 0xF) == 0 and an == 1 and socket.inet_ntoa(r[-4:]) == want
    ok += good
    wrong += not good
print(json.dumps({"ok": ok, "wrong": wrong, "lost": lost}), flush=True)
'''


def test_no_query_lost_while_the_table_changes(docker, daemon, nets, names, nethost):
    """Issue 4 item 1: the record table is swapped atomically; a steady client
    loses no query and never sees a wrong answer while containers start,
    stop, get renamed and connect around it."""
    n = nets("dnsswap")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    stable = names("stable")
    sleeper(docker, stable, "--network", n)
    ip = container_ip(daemon, stable, n)
    assert wait_for(lambda: dig_short(nethost, gw, stable) == [ip], 10, 0.1, "registered")
    p = nethost.spawn_in(nethost.host_pid, "python3", "-c", _STEADY_CLIENT_PY, gw, stable, ip, "6")
    assert p.stdout.readline().strip() == "started"
    churn = [names("churn") for _ in range(4)]
    for c in churn:
        sleeper(docker, c, "--network", n, "--network-alias", "churned")
    docker("rename", churn[0], names("churned"), check=True)
    docker("rm", "-f", *churn[1:], check=True)
    out, err = p.communicate(timeout=30)
    res = json.loads(out.strip().splitlines()[-1])
    assert res["lost"] == 0 and res["wrong"] == 0 and res["ok"] > 100, (res, err)
