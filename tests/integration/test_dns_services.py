"""Services, per-network and conditional forwarding, CNAMEs and dns-trace
(issue 4, items 3, 4, 5, 7 and 9): `--label io.shibafu.service=...` from the
docker CLI and docker-py, `shibafu run --service/--service-weight/
--service-port/--health-probe`, weighted rotation, an HTTP probe taking an
instance out of the answers and back, `GET /shibafu/services` and
`shibafu service ls/inspect`, `shibafu network create --dns`, conditional
forwarding and CNAMEs from the daemon's config file, `shibafu network
dns-trace`, and bad input refused with nothing created."""

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from helpers import Daemon, shibafu_bin, uniq, wait_for

from conftest import (BUSYBOX_IMAGE, DNS_DEFAULT_UPSTREAM, FakeUpstream, NetHost, container_ip, ctr_nslookup,
                      dig_host, dig_short, net_gateway)

SERVICE = "io.shibafu.service"
WEIGHT = "io.shibafu.service.weight"
PORTS = "io.shibafu.service.ports"
PROBE = "io.shibafu.health.probe"
NETDNS = "io.shibafu.network.dns"


def sleeper(docker, name: str, *args, cmd=("sleep", "600")):
    docker("run", "-d", "--name", name, *args, "busybox", *cmd, check=True)


def status(r) -> str:
    for line in r.stdout.splitlines():
        if "status:" in line:
            return line.split("status:", 1)[1].split(",", 1)[0].strip()
    raise AssertionError(f"no status in dig output: {r.stdout}{r.stderr}")


def firsts(nethost, gw: str, name: str, n: int) -> Counter:
    """How often each address comes first in `n` answers for `name`."""
    c = Counter()
    for _ in range(n):
        ans = dig_short(nethost, gw, name)
        assert ans, f"no answer for {name}"
        c[ans[0]] += 1
    return c


def services(daemon, path: str = "/shibafu/services"):
    st, _, body = daemon.api("GET", path)
    return st, json.loads(body or b"null")


def json_rows(out: str) -> list:
    """`--format json` output: one JSON array, or one object per line (docker's style)."""
    out = out.strip()
    if out.startswith("["):
        return json.loads(out)
    return [json.loads(l) for l in out.splitlines() if l.strip()]


def upstream_ready(nethost, gw: str, fake) -> None:
    """Forwarding through `gw` reaches `fake` (an address left marked down by
    an earlier test is probed again once a second)."""
    wait_for(lambda: dig_short(nethost, gw, f"warm-{uniq('w')}.example") == [fake.answer], 15, 0.3,
             f"forwarding to {fake.addr}")


# ---------------------------------------------------------------- services

def test_service_label_weighted_rotation(docker, daemon, nets, names, nethost):
    """Three instances through the docker CLI's --label, weights 3, 1, 1 (by
    default): every answer holds all three; the first address follows the
    weights over many queries."""
    n = nets("svcw")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    heavy, l1, l2, cli = names("heavy"), names("light1"), names("light2"), names("svccli")
    sleeper(docker, heavy, "--network", n, "--label", f"{SERVICE}=api", "--label", f"{WEIGHT}=3")
    sleeper(docker, l1, "--network", n, "--label", f"{SERVICE}=api,other")
    sleeper(docker, l2, "--network", n, "--label", f"{SERVICE}=api", "--label", f"{WEIGHT}=1")
    sleeper(docker, cli, "--network", n)
    ips = {c: container_ip(daemon, c, n) for c in (heavy, l1, l2)}
    assert wait_for(lambda: sorted(dig_short(nethost, gw, "api")) == sorted(ips.values()), 10, 0.1,
                    "the service with its three instances")
    assert sorted(dig_short(nethost, gw, f"api.{n}.local")) == sorted(ips.values())
    # a container can be in several services
    assert dig_short(nethost, gw, "other") == [ips[l1]]
    counts = firsts(nethost, gw, "api", 50)
    # weights 3:1:1 -> 30:10:10 over whole cycles; allow a cycle's slack
    assert 26 <= counts[ips[heavy]] <= 34, counts
    assert 6 <= counts[ips[l1]] <= 14 and 6 <= counts[ips[l2]] <= 14, counts
    # a real resolver inside a container sees every instance
    assert sorted(ctr_nslookup(docker, cli, "api")) == sorted(ips.values())
    # an instance that stops leaves at once; the others keep rotating
    docker("stop", "-t", "1", heavy, check=True)
    assert wait_for(lambda: sorted(dig_short(nethost, gw, "api")) == sorted([ips[l1], ips[l2]]), 3, 0.05,
                    "the stopped instance gone")
    assert set(firsts(nethost, gw, "api", 6)) == {ips[l1], ips[l2]}


def test_service_via_docker_py_and_services_api(docker, daemon, client, nets, names, nethost):
    """docker-py creates the instances (labels); GET /shibafu/services lists
    services (a --service name, or an alias shared by two or more), with
    their instances, health, weights and ports."""
    n, other = nets("svcapi"), nets("svcapi2")
    docker("network", "create", n, check=True)
    docker("network", "create", other, check=True)
    a, b, al1, al2, lone = names("sa"), names("sb"), names("al1"), names("al2"), names("lone")
    for name, weight in ((a, "2"), (b, None)):
        labels = {SERVICE: "pay", PORTS: "8443,5353/udp"}
        if weight:
            labels[WEIGHT] = weight
        client.containers.run(BUSYBOX_IMAGE, ["sleep", "600"], name=name, network=n, labels=labels, detach=True)
    sleeper(docker, al1, "--network", n, "--network-alias", "cache")
    sleeper(docker, al2, "--network", n, "--network-alias", "cache")
    sleeper(docker, lone, "--network", n, "--network-alias", "solo")
    ids = {c: daemon.inspect(c)["Id"] for c in (a, b, al1, al2)}

    def listed():
        st, body = services(daemon, f"/shibafu/services?network={n}")
        assert st == 200, body
        return body

    wait_for(lambda: {s["Name"] for s in listed()} == {"cache", "pay"}, 10, 0.2, "two services")
    body = listed()
    assert [s["Name"] for s in body] == ["cache", "pay"], body  # sorted by name
    pay = next(s for s in body if s["Name"] == "pay")
    assert pay["Network"] == n and pay["NetworkId"] and pay["Fqdn"] == f"pay.{n}.local", pay
    assert sorted(pay["Ports"]) == ["5353/udp", "8443/tcp"], pay
    inst = {i["Name"]: i for i in pay["Instances"]}
    assert set(inst) == {a, b}, pay
    assert inst[a]["Id"] == ids[a] and inst[a]["Weight"] == 2 and inst[b]["Weight"] == 1, pay
    assert inst[a]["IPv4Address"] == container_ip(daemon, a, n), pay
    for i in inst.values():
        assert i["Health"] == "none" and i["InAnswers"] is True and i["Via"] == "service", i
    cache = next(s for s in body if s["Name"] == "cache")
    assert {i["Name"] for i in cache["Instances"]} == {al1, al2}, cache
    assert all(i["Via"] == "alias" for i in cache["Instances"]), cache
    # SRV from the service ports label
    gw = net_gateway(docker, n)
    srv = sorted(dig_short(nethost, gw, "SRV", f"_5353._udp.pay.{n}.local"))
    assert len(srv) == 2 and all(l.split()[2] == "5353" for l in srv), srv
    assert {l.split()[3] for l in srv} == {f"{a}.{n}.local.", f"{b}.{n}.local."}, srv
    # SRV weights follow the service weights
    assert {l.split()[3]: int(l.split()[1]) for l in srv} == {f"{a}.{n}.local.": 2, f"{b}.{n}.local.": 1}, srv
    # the other network has none; no filter lists this network's too
    st, body = services(daemon, f"/shibafu/services?network={other}")
    assert st == 200 and body == [], body
    st, body = services(daemon)
    assert st == 200 and {("cache", n), ("pay", n)} <= {(s["Name"], s["Network"]) for s in body}, body
    # inspect by name, with and without a version prefix
    for path in ("/shibafu/services/pay", "/v1.50/shibafu/services/pay"):
        st, body = services(daemon, path)
        assert st == 200 and len(body) == 1 and body[0]["Name"] == "pay", (path, body)
    st, body = services(daemon, "/shibafu/services/nosuch")
    assert st == 404 and body == {"message": "No such service: nosuch"}, body
    # a service that loses all its instances is gone from the list
    docker("rm", "-f", a, b, check=True)
    wait_for(lambda: [s["Name"] for s in listed()] == ["cache"], 10, 0.2, "pay gone")


def test_http_probe_takes_an_instance_out_and_back(docker, daemon, nets, names, nethost):
    """io.shibafu.health.probe=http:80/ against busybox httpd: when httpd
    stops the instance leaves the service's answers, when it is back so is
    the instance."""
    n = nets("svcprobe")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    probed, steady = names("probed"), names("steady")
    www = "mkdir -p /www && echo ok > /www/index.html && "
    sleeper(docker, probed, "--network", n, "--label", f"{SERVICE}=web", "--label", f"{PROBE}=http:80/",
            "--health-interval", "1s", "--health-retries", "1", "--health-timeout", "1s",
            cmd=("sh", "-c", www + "httpd -p 80 -h /www; exec sleep 600"))
    sleeper(docker, steady, "--network", n, "--label", f"{SERVICE}=web")
    ip_p, ip_s = container_ip(daemon, probed, n), container_ip(daemon, steady, n)

    def instance():
        st, body = services(daemon, "/shibafu/services/web")
        assert st == 200, body
        view = next(v for v in body if v["Network"] == n)
        return next(i for i in view["Instances"] if i["Name"] == probed)

    wait_for(lambda: instance()["Health"] == "healthy", 20, 0.2, "the probe to pass")
    assert sorted(dig_short(nethost, gw, "web")) == sorted([ip_p, ip_s])
    docker("exec", probed, "killall", "httpd", check=True)
    wait_for(lambda: instance()["Health"] == "unhealthy", 20, 0.2, "the probe to fail")
    assert instance()["InAnswers"] is False
    assert wait_for(lambda: dig_short(nethost, gw, "web") == [ip_s], 3, 0.05, "web without the probed one")
    assert dig_short(nethost, gw, probed) == [ip_p]  # its own name still answers
    docker("exec", "-d", probed, "httpd", "-f", "-p", "80", "-h", "/www", check=True)
    wait_for(lambda: instance()["Health"] == "healthy", 20, 0.2, "the probe to pass again")
    assert wait_for(lambda: sorted(dig_short(nethost, gw, "web")) == sorted([ip_p, ip_s]), 3, 0.05,
                    "web with both again")
    assert instance()["InAnswers"] is True


def test_shibafu_cli_service_flags_ls_and_inspect(docker, shibafu, daemon, nets, names, nethost):
    n = nets("svccli")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    api, edge = uniq("capi"), uniq("cedge")  # service names no other test uses
    heavy, light = names("cheavy"), names("clight")
    r = shibafu("run", "-d", "--name", heavy, "--network", n, "--service", api, "--service", edge,
                "--service-weight", "3", "--service-port", "5353/udp", "--service-port", "8080", "busybox",
                "sleep", "600")
    assert r.returncode == 0, r.stderr
    shibafu("run", "-d", "--name", light, "--network", n, "--service", api, "--health-probe", "tcp:9",
            "--health-interval", "1s", "--health-retries", "1", "busybox", "sleep", "600", check=True)
    labels = daemon.inspect(heavy)["Config"]["Labels"]
    assert set(labels[SERVICE].split(",")) == {api, edge} and labels[WEIGHT] == "3", labels
    assert set(labels[PORTS].split(",")) in ({"5353/udp", "8080"}, {"5353/udp", "8080/tcp"}), labels
    assert daemon.inspect(light)["Config"]["Labels"][PROBE] == "tcp:9"
    ip_h, ip_l = container_ip(daemon, heavy, n), container_ip(daemon, light, n)
    assert wait_for(lambda: dig_short(nethost, gw, edge) == [ip_h], 10, 0.1, "the second service")
    srv = dig_short(nethost, gw, "SRV", f"_5353._udp.{api}.{n}.local")
    assert [l.split()[2:] for l in srv] == [["5353", f"{heavy}.{n}.local."]], srv
    # nothing listens on port 9 in `light`: the TCP probe fails, it leaves the service
    wait_for(lambda: daemon.inspect(light)["State"]["Health"]["Status"] == "unhealthy", 20, 0.2,
             "the TCP probe to fail")
    assert wait_for(lambda: dig_short(nethost, gw, api) == [ip_h], 3, 0.05, "the failing instance out")
    assert dig_short(nethost, gw, light) == [ip_l]
    # service ls: table, -q, json
    r = shibafu("service", "ls", "--network", n, check=True)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "NETWORK", "INSTANCES", "PORTS"], r.stdout
    rows = {l.split()[0]: l.split() for l in lines[1:]}
    assert set(rows) == {api, edge}, r.stdout
    assert rows[api][1] == n and rows[api][2] == "1/2", r.stdout
    assert rows[edge][2] == "1/1" and "5353/udp" in " ".join(rows[edge][3:]), r.stdout
    assert shibafu("service", "ls", "--network", n, "-q", check=True).stdout.split() == sorted([api, edge])
    js = json_rows(shibafu("service", "ls", "--network", n, "--format", "json", check=True).stdout)
    assert {s["Name"] for s in js} == {api, edge}, js
    # without --network: listed along with the other networks' services
    assert {api, edge} <= set(shibafu("service", "ls", "-q", check=True).stdout.split())
    # inspect: a JSON array like docker inspect; --format; unknown name fails
    body = json.loads(shibafu("service", "inspect", api, check=True).stdout)
    assert isinstance(body, list) and len(body) == 1 and body[0]["Name"] == api and body[0]["Network"] == n, body
    inst = {i["Name"]: i for i in body[0]["Instances"]}
    assert inst[heavy]["Weight"] == 3 and inst[heavy]["InAnswers"] is True, inst
    assert inst[light]["Health"] == "unhealthy" and inst[light]["InAnswers"] is False, inst
    body = json.loads(shibafu("service", "inspect", api, edge, check=True).stdout)
    assert sorted(s["Name"] for s in body) == sorted([api, edge]), body
    r = shibafu("service", "inspect", "--format", "{{.Fqdn}}", api, check=True)
    assert r.stdout.strip() == f"{api}.{n}.local", r.stdout
    r = shibafu("service", "inspect", "nosuch-svc")
    assert r.returncode != 0 and "nosuch-svc" in r.stderr, (r.stdout, r.stderr)


# ---------------------------------------------------------------- forwarders

def test_network_dns_forwarder(docker, shibafu, daemon, nets, names, nethost, fake_dns):
    """`shibafu network create --dns IP` (and `docker network create -o
    io.shibafu.network.dns=IP`): that network's forwarded names go there, other
    networks keep the daemon's upstream, and answers don't cross via the cache."""
    default = fake_dns(DNS_DEFAULT_UPSTREAM, answer="192.0.2.53")
    f155 = fake_dns("127.0.0.155", answer="192.0.2.55")
    f156 = fake_dns("127.0.0.156", answer="192.0.2.56")
    viacli, viaopt, plain = nets("fwdcli"), nets("fwdopt"), nets("fwdplain")
    shibafu("network", "create", "--dns", "127.0.0.155", viacli, check=True)
    docker("network", "create", "-o", f"{NETDNS}=127.0.0.156:53", viaopt, check=True)
    docker("network", "create", plain, check=True)
    opts = json.loads(docker("network", "inspect", viacli, check=True).stdout)[0]["Options"]
    assert opts.get(NETDNS) in ("127.0.0.155", "127.0.0.155:53"), opts
    g1, g2, g3 = (net_gateway(docker, x) for x in (viacli, viaopt, plain))
    upstream_ready(nethost, g3, default)
    # each network's names go to its own forwarder
    for gw, fake in ((g1, f155), (g2, f156), (g3, default)):
        name = f"own-{uniq('s')}.example"
        assert wait_for(lambda: dig_short(nethost, gw, name) == [fake.answer], 10, 0.3, f"{fake.addr} via {gw}")
        assert [f.count(name) for f in (default, f155, f156)] == [int(f is fake) for f in (default, f155, f156)], \
            (name, default.queries, f155.queries, f156.queries)
    # a container on the network uses it through its resolv.conf
    c = names("fwdc")
    sleeper(docker, c, "--network", viacli)
    only = f"only-{uniq('s')}.example"
    assert ctr_nslookup(docker, c, only) == ["192.0.2.55"]
    assert default.count(only) == 0 and f155.count(only) == 1, (default.queries, f155.queries)
    # the same name through all three networks: each answers from its own
    # forwarder (a cached answer from another network's resolver must not leak)
    same = f"same-{uniq('s')}.example"
    got = {gw: dig_short(nethost, gw, same) for gw in (g3, g1, g2)}
    assert got == {g3: ["192.0.2.53"], g1: ["192.0.2.55"], g2: ["192.0.2.56"]}, \
        f"answers for {same} by network gateway: {got} (upstream queries: .153 {default.count(same)}, " \
        f".155 {f155.count(same)}, .156 {f156.count(same)})"


def test_bad_service_and_forwarder_input_creates_nothing(docker, shibafu, daemon, nets, names):
    before = set(docker("ps", "-aq", "--no-trunc", check=True).stdout.split())
    nets_before = set(docker("network", "ls", "-q", check=True).stdout.split())
    cases = [
        (shibafu, ("create", "--service", "api", "--service-weight", "0"), "--service-weight"),
        (shibafu, ("create", "--service", "api", "--service-weight", "65536"), "--service-weight"),
        (shibafu, ("create", "--health-probe", "foo:1"), "--health-probe"),
        (shibafu, ("create", "--health-probe", "http:notaport/"), "--health-probe"),
        (shibafu, ("create", "--service", "api", "--service-port", "99999/tcp"), "--service-port"),
        (shibafu, ("create", "--service", "bad name!"), "--service"),
        # the docker CLI sets the labels: the daemon refuses them (400), naming the flag or the label
        (docker, ("create", "--label", f"{WEIGHT}=0", "--label", f"{SERVICE}=api"), ("--service-weight", WEIGHT)),
        (docker, ("create", "--label", f"{PROBE}=foo:1"), ("--health-probe", PROBE)),
        (docker, ("create", "--label", f"{PORTS}=80/sctpx"), ("--service-port", PORTS)),
    ]
    for run, args, flag in cases:
        name = names("bad")
        r = run(*args[:1], "--name", name, *args[1:], "busybox", "true")
        assert r.returncode != 0, (args, r.stdout)
        flags = flag if isinstance(flag, tuple) else (flag,)
        assert any(f in r.stderr for f in flags), f"{args}: the error should name {flags}: {r.stderr}"
        assert docker("inspect", "--type", "container", name).returncode != 0, f"{args} left {name}"
    for run, opts in ((shibafu, ("--dns", "not-an-ip")), (shibafu, ("--dns", "127.0.0.1:99999")),
                      (docker, ("-o", f"{NETDNS}=not-an-ip"))):
        net = nets("badnet")
        r = run("network", "create", *opts, net)
        assert r.returncode != 0, (opts, r.stdout)
        assert "not-an-ip" in r.stderr or "99999" in r.stderr, (opts, r.stderr)
        assert docker("network", "inspect", net).returncode != 0, f"{opts} left network {net}"
    assert set(docker("ps", "-aq", "--no-trunc", check=True).stdout.split()) == before
    assert set(docker("network", "ls", "-q", check=True).stdout.split()) == nets_before


# ---------------------------------------------------------------- dns-trace

def test_dns_trace(docker, shibafu, daemon, nets, names, nethost, fake_dns):
    up = fake_dns(DNS_DEFAULT_UPSTREAM, answer="192.0.2.7")
    n = nets("trace")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    srv, cli = names("tsrv"), names("tcli")
    sleeper(docker, srv, "--network", n, "--network-alias", "talias")
    sleeper(docker, cli, "--network", n)
    ip = container_ip(daemon, srv, n)
    upstream_ready(nethost, gw, up)
    # a local name, asked as `cli`
    r = shibafu("network", "dns-trace", "--query", "talias", "--from", cli, "--format", "json", check=True)
    t = json.loads(r.stdout)
    for key in ("query", "qtype", "from", "view", "listener", "matched", "source", "upstreams", "rcode",
                "answers", "elapsed_us"):
        assert key in t, (key, t)
    assert t["query"].rstrip(".") == "talias" and t["qtype"] == "A" and t["rcode"] == "NOERROR", t
    assert t["source"] == "local", t
    assert t["from"] == {"address": container_ip(daemon, cli, n)}, t
    assert n in t["view"] or daemon.inspect(cli)["NetworkSettings"]["Networks"][n]["NetworkID"] in t["view"], t
    assert any(m["container"] == srv and m["matched_as"] == "alias" and m["network"] == n for m in t["matched"]), t
    assert [a["data"] for a in t["answers"] if a["rtype"] == "A"] == [ip], t
    assert t["upstreams"] == [] and isinstance(t["elapsed_us"], int), t
    # human output: the query, where it matched, the source, the answer, the time
    r = shibafu("network", "dns-trace", "--query", "talias", "--from", cli, check=True)
    out = r.stdout
    for want in ("talias", n, srv, "alias", "local", "NOERROR", ip):
        assert want in out, (want, out)
    # a forwarded name: upstream first, then the cache
    fwd = f"traced-{uniq('t')}.example"
    t = json.loads(shibafu("network", "dns-trace", "--query", fwd, "--from", cli, "--format", "json",
                           check=True).stdout)
    assert t["source"] == {"upstream": f"{DNS_DEFAULT_UPSTREAM}:53"}, t
    assert t["upstreams"] and t["upstreams"][0]["server"] == f"{DNS_DEFAULT_UPSTREAM}:53", t
    assert t["upstreams"][-1]["outcome"] == "NOERROR", t
    assert [a["data"] for a in t["answers"]] == ["192.0.2.7"], t
    assert up.count(fwd) == 1, up.queries
    t = json.loads(shibafu("network", "dns-trace", "--query", fwd, "--from", cli, "--format", "json",
                           check=True).stdout)
    assert t["source"] == "cache" and up.count(fwd) == 1, t
    r = shibafu("network", "dns-trace", "--query", fwd, "--from", cli, check=True)
    assert "cache" in r.stdout, r.stdout
    # other types, asking at a network instead of as a container
    t = json.loads(shibafu("network", "dns-trace", "--query", f"nosuch.{n}.local", "--network", n,
                           "--format", "json", check=True).stdout)
    assert t["rcode"] == "NXDOMAIN" and t["source"] == "local", t
    t = json.loads(shibafu("network", "dns-trace", "--query", srv, "--type", "AAAA", "--from", cli,
                           "--format", "json", check=True).stdout)
    assert t["qtype"] == "AAAA" and t["rcode"] == "NOERROR" and t["answers"] == [], t
    # the HTTP route gives the same report
    st, _, body = daemon.api("GET", f"/shibafu/dns/trace?name=talias&type=A&from={cli}")
    assert st == 200 and json.loads(body)["source"] == "local", body
    # bad input: unknown container, unknown type
    r = shibafu("network", "dns-trace", "--query", "x", "--from", "no-such-ctr")
    assert r.returncode != 0 and "no-such-ctr" in r.stderr, r.stderr
    st, _, body = daemon.api("GET", "/shibafu/dns/trace?name=x&from=no-such-ctr")
    assert st == 404 and "message" in json.loads(body), body
    st, _, body = daemon.api("GET", f"/shibafu/dns/trace?name=x&type=BOGUS&from={cli}")
    assert st == 400 and "message" in json.loads(body), body


# ---------------------------------------------------------------- config file

@pytest.fixture(scope="module")
def conf_daemon(busybox_tar):
    """A second daemon (own namespaces) started with a config file holding
    conditional forwarding and CNAMEs; returns (daemon, nethost-of-it)."""
    tmp = Path(tempfile.mkdtemp(prefix="shibafu-dnsconf-", dir="/tmp"))
    d = Daemon(tmp, shibafu_bin(), Path(os.environ.get("SHIBAFU_TEST_LOGDIR", "/tmp/shibafu-test-logs")))
    cfg = tmp / "shibafu.yaml"
    cfg.write_text(
        "dns:\n"
        "  upstreams: ['127.0.0.153']\n"
        "  conditional:\n"
        "    - domain: corp.example\n"
        "      servers: ['127.0.0.157', '127.0.0.158:53']\n"
        "  cnames:\n"
        "    - {name: db, target: pg}\n"
        "    - {name: intranet, target: www.corp.example}\n"
        "    - {name: only-here, target: pg, network: confnet}\n"
    )
    d.extra_args = ["--config-file", str(cfg)]
    d.start_holder()
    h = NetHost(d)
    try:
        d.start()
        d.docker("import", str(busybox_tar), BUSYBOX_IMAGE, timeout=120, check=True)
        d.docker("network", "create", "confnet", check=True)
        d.docker("network", "create", "confother", check=True)
        yield d, h
    finally:
        for p in list(h.bg):
            h.stop(p)
        errs = d.teardown()
        if errs:
            print("conf daemon teardown:", *errs, sep="\n  ")


def test_conditional_forwarding_from_config(conf_daemon):
    d, h = conf_daemon
    default = FakeUpstream(h, DNS_DEFAULT_UPSTREAM, answer="192.0.2.53")
    corp = FakeUpstream(h, "127.0.0.157", answer="192.0.2.57")
    try:
        gw = net_gateway(d.docker, "confnet")
        upstream_ready(h, gw, default)
        name = f"host-{uniq('c')}.corp.example"
        assert dig_short(h, gw, name) == ["192.0.2.57"]
        assert corp.count(name) == 1 and default.count(name) == 0, (corp.queries, default.queries)
        # the domain itself, and only whole labels (notcorp.example is not under it)
        assert dig_short(h, gw, "corp.example") == ["192.0.2.57"]
        other = f"x-{uniq('c')}.notcorp.example"
        assert dig_short(h, gw, other) == ["192.0.2.53"] and corp.count(other) == 0
        # the conditional servers are gone: SERVFAIL within the client's 5 s,
        # and names under the domain never fall back to the default upstream
        corp.stop()
        down = f"down-{uniq('c')}.corp.example"
        r = dig_host(h, gw, "+time=5", down)
        assert status(r) == "SERVFAIL", r.stdout
        assert default.count(down) == 0, default.queries
    finally:
        default.stop()
        corp.stop()


def test_cnames_from_config(conf_daemon):
    d, h = conf_daemon
    corp = FakeUpstream(h, "127.0.0.157", answer="192.0.2.57")
    pg, pg2, c = "pg", uniq("pgother"), uniq("cnc")
    default = FakeUpstream(h, DNS_DEFAULT_UPSTREAM, answer="192.0.2.53")
    try:
        gw, gwo = net_gateway(d.docker, "confnet"), net_gateway(d.docker, "confother")
        d.docker("run", "-d", "--name", pg, "--network", "confnet", "busybox", "sleep", "600", check=True)
        d.docker("run", "-d", "--name", pg2, "--network", "confother", "--network-alias", "pg", "busybox",
                 "sleep", "600", check=True)
        ip = container_ip(d, pg, "confnet")
        ip2 = container_ip(d, pg2, "confother")
        # db -> pg, in every network, answered with the target's address
        def db():
            ans = dig_short(h, gw, "db")
            return len(ans) == 2 and ans[0].startswith("pg.") and ans[1] == ip

        assert wait_for(db, 10, 0.1, "db -> pg")
        assert ip in dig_short(h, gw, "db.confnet.local")
        assert ip2 in dig_short(h, gwo, "db")
        # only-here is limited to confnet
        assert ip in dig_short(h, gw, "only-here")
        r = dig_host(h, gwo, "only-here.confother.local")
        assert status(r) == "NXDOMAIN", r.stdout
        # busybox nslookup in a container follows it
        d.docker("run", "-d", "--name", c, "--network", "confnet", "busybox", "sleep", "600", check=True)
        assert ctr_nslookup(d.docker, c, "db") == [ip]
        # a CNAME to an outside name is chased upstream, through the forwarder
        # that name's domain is configured with (conditional), not the default
        # (The previous test left the corp servers marked down: the daemon
        # probes a down upstream at most once a second, so allow a retry.)
        ans = wait_for(lambda: dig_short(h, gw, "intranet"), 5, 0.5, "intranet answered")
        assert ans[0].rstrip(".") == "www.corp.example", ans
        assert ans[-1] == "192.0.2.57", f"intranet -> www.corp.example -> {ans[-1:]}: want the corp " \
            f"forwarder's 192.0.2.57 (corp saw {corp.queries})"
    finally:
        corp.stop()
        default.stop()
        d.docker("rm", "-f", pg, pg2, c, timeout=60)
