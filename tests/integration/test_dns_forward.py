"""Forwarding and robustness of the embedded DNS (issue 4, items 5 and 9):
positive and negative caching (a fake upstream counts what reaches it),
truncated upstream answers retried over TCP, internal networks never
forwarding, a dead upstream not slowing local names and failing inside the
client's 5 s, `docker run --dns` as that container's upstream, and garbage,
oversized and flood traffic not stopping the server. Upstreams are only
fakes of the test's own on 127.0.0.x in the daemon's netns."""

import json

from helpers import uniq, wait_for

from conftest import (DNS_DEFAULT_UPSTREAM, container_ip, ctr_nslookup, ctr_pid, dig_host, dig_short,
                      net_gateway)

# A tiny DNS client for timing and for sending bad packets, run with python3
# in a namespace of the test's (the host's or a container's netns).
_DNS_LIB_PY = r'''
import json, os, random, socket, struct, sys, time

def query(name, qtype=1, qid=None, flags=0x0100, edns=None):
    qid = random.randrange(65536) if qid is None else qid
    q = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 1 if edns is not None else 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", qtype, 1)
    if edns is not None:  # (version, udp size, rdata)
        ver, size, rdata = edns
        q += b"\x00" + struct.pack(">HHBBHH", 41, size, 0, ver, 0, len(rdata)) + rdata
    return q

def rcode(r):
    return r[3] & 0xF

def ancount(r):
    return struct.unpack(">H", r[6:8])[0]

def ask(addr, name, timeout=1.0, qtype=1):
    """(rcode, ancount, seconds) or None after `timeout`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    q = query(name, qtype)
    t = time.monotonic()
    s.sendto(q, (addr, 53))
    try:
        while True:
            r, _ = s.recvfrom(65535)
            if r[:2] == q[:2]:
                return rcode(r), ancount(r), time.monotonic() - t
    except socket.timeout:
        return None
    finally:
        s.close()
'''

# Dead upstream: one forwarded query goes out; while it is pending, local
# names are asked and timed; then the forwarded one's outcome and time.
_DEAD_UPSTREAM_PY = _DNS_LIB_PY + r'''
gw, fwd, local = sys.argv[1], sys.argv[2], sys.argv[3]
f = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
fq = query(fwd)
t0 = time.monotonic()
f.sendto(fq, (gw, 53))
time.sleep(0.05)
locals_ = []
for _ in range(5):
    locals_.append(ask(gw, local, 1.0))
    time.sleep(0.1)
locals_done = time.monotonic() - t0
f.settimeout(7)
try:
    r, _ = f.recvfrom(65535)
    fwd_res = [rcode(r), ancount(r), time.monotonic() - t0]
except socket.timeout:
    fwd_res = None
second = ask(gw, "again-" + fwd, 7.0)
print(json.dumps({"locals": locals_, "locals_done": locals_done, "fwd": fwd_res, "second": second}))
'''

# Garbage, oversized and flood traffic at the server (UDP and TCP), then
# checks that it still answers.
_ABUSE_PY = _DNS_LIB_PY + r'''
gw, local = sys.argv[1], sys.argv[2]
out = {}
good = lambda: ask(gw, local, 1.0)
out["before"] = good()
hdr = lambda qid, flags, qd, an=0, ns=0, ar=0: struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)
garbage = [
    b"", b"\x00", b"\x12\x34", b"\x00" * 11,
    hdr(1, 0x0100, 1),                                     # a question promised, none there
    hdr(2, 0x0100, 1) + b"\x3f" + b"a" * 10,              # label runs past the end
    hdr(3, 0x0100, 1) + b"\xc0\x0c\x00\x01\x00\x01",     # compression pointer to itself
    hdr(4, 0x0100, 1) + b"\xc0\xff\x00\x01\x00\x01",     # pointer past the end
    hdr(5, 0x0100, 1) + (b"\x3f" + b"b" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # name > 255 bytes
    hdr(6, 0x0100, 65535, 65535, 65535, 65535) + query(local)[12:],          # absurd counts
    hdr(7, 0x0100, 1) + b"\x40" + b"c" * 64 + b"\x00\x00\x01\x00\x01",       # label of 64
    query(local, edns=(0, 4096, b"\x00\x0a\xff\xff")),    # EDNS option longer than the record
    query(local, edns=(0, 0, b"")),                        # EDNS udp size 0
    query(local, flags=0x2900),                            # opcode UPDATE
    query(local, qtype=252),                               # AXFR over UDP
    query(local) + os.urandom(2000),                       # trailing junk
    query(local) + b"\x00" * 60000,                        # oversized datagram
    bytes([0xff]) * 1400,
] + [os.urandom(random.randrange(1, 600)) for _ in range(300)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
for g in garbage:
    s.sendto(g, (gw, 53))
# a response (QR set) must not be answered: no reflection, no loops
resp = bytearray(query(local, qid=0x4242)); resp[2] |= 0x80
s.sendto(bytes(resp), (gw, 53))
time.sleep(0.3)
s.setblocking(False)
replies = 0
reflected = False
while True:
    try:
        r = s.recv(65535)
    except BlockingIOError:
        break
    replies += 1
    reflected |= r[:2] == b"\x42\x42"
out["garbage_sent"] = len(garbage)
out["garbage_replies"] = replies
out["reflected"] = reflected
out["after_garbage"] = good()
# flood: 20000 datagrams as fast as one socket sends them, valid and not
s.setblocking(True)
n_valid = 0
t = time.monotonic()
during = []
for i in range(20000):
    if i % 4000 == 3999:
        # a client asking in the middle of the flood (3 tries of 0.5 s)
        during.append(next((x for x in (ask(gw, local, 0.5) for _ in range(3)) if x), None))
    if i % 2:
        s.sendto(query(local, qid=i & 0xFFFF), (gw, 53)); n_valid += 1
    else:
        s.sendto(os.urandom(40 + i % 200), (gw, 53))
out["flood_seconds"] = time.monotonic() - t
answered = 0
s.settimeout(0.5)
try:
    while True:
        r = s.recv(65535)
        answered += rcode(r) == 0 and ancount(r) == 1
except socket.timeout:
    pass
out["flood_valid"] = n_valid
out["flood_replies"] = answered
out["during_flood"] = during
out["after_flood"] = [good() for _ in range(3)]
# TCP: a length prefix longer than what follows, then a close; a zero
# length; a connection that sends half a prefix and stays; then a real
# pipelined exchange of 5 queries on one connection.
for junk in (b"\xff\xff" + b"x" * 100, b"\x00\x00", b"\x00\x05\x01\x02\x03\x04\x05", os.urandom(300)):
    c = socket.create_connection((gw, 53), timeout=2)
    c.sendall(junk)
    c.close()
idle = []
for _ in range(150):
    try:
        c = socket.create_connection((gw, 53), timeout=2)
        c.sendall(b"\x00")
        idle.append(c)
    except OSError:
        break
out["idle_tcp_opened"] = len(idle)
for c in idle:
    c.close()
time.sleep(0.3)
def tcp_pipeline(n):
    c = socket.create_connection((gw, 53), timeout=3)
    qs = [query(local, qid=100 + i) for i in range(n)]
    c.sendall(b"".join(struct.pack(">H", len(q)) + q for q in qs))
    ids = []
    for _ in range(n):
        ln = struct.unpack(">H", c.recv(2, socket.MSG_WAITALL))[0]
        r = c.recv(ln, socket.MSG_WAITALL)
        ids.append([struct.unpack(">H", r[:2])[0], rcode(r), ancount(r)])
    c.close()
    return ids
try:
    out["tcp_after"] = tcp_pipeline(5)
except OSError as e:
    out["tcp_after"] = repr(e)
out["after_tcp"] = good()
print(json.dumps(out))
'''


def sleeper(docker, name: str, *args):
    docker("run", "-d", "--name", name, *args, "busybox", "sleep", "600", check=True)


def status(r) -> str:
    for line in r.stdout.splitlines():
        if "status:" in line:
            return line.split("status:", 1)[1].split(",", 1)[0].strip()
    raise AssertionError(f"no status in dig output: {r.stdout}{r.stderr}")


def upstream_ready(nethost, gw: str, fake) -> None:
    """Wait until forwarding through `gw` reaches `fake` (an earlier test may
    have left the address marked down for a while: the server probes it again
    once a second)."""
    def ok():
        name = f"warm-{uniq('w')}.example"
        return dig_short(nethost, gw, name) == [fake.answer]
    wait_for(ok, 15, 0.3, f"forwarding to the fake upstream {fake.addr}")


def test_forwarded_answers_are_cached_positive_and_negative(docker, nets, nethost, fake_dns):
    up = fake_dns(DNS_DEFAULT_UPSTREAM, answer="192.0.2.7")
    n = nets("dnscache")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    upstream_ready(nethost, gw, up)
    pos, neg = f"pos-{uniq('c')}.example", f"nx-{uniq('c')}.example"
    # positive: asked twice (once over TCP, once in other case), forwarded once
    assert dig_short(nethost, gw, pos) == ["192.0.2.7"]
    assert dig_short(nethost, gw, "+tcp", pos) == ["192.0.2.7"]
    assert dig_short(nethost, gw, pos.upper()) == ["192.0.2.7"]
    assert up.count(pos) == 1, up.queries
    r = dig_host(nethost, gw, pos)
    ttl = int(next(l for l in r.stdout.splitlines() if l.startswith(pos) and "\tA\t" in l).split()[1])
    assert 0 < ttl <= 60, r.stdout
    # negative: NXDOMAIN twice, the upstream asked once (RFC 2308, SOA minimum)
    for _ in range(3):
        r = dig_host(nethost, gw, neg)
        assert status(r) == "NXDOMAIN" and "SOA" in r.stdout, r.stdout
    assert up.count(neg) == 1, up.queries
    # "no data" (NOERROR, no AAAA, SOA) is cached too
    for _ in range(2):
        r = dig_host(nethost, gw, "AAAA", pos)
        assert status(r) == "NOERROR" and "ANSWER: 0" in r.stdout, r.stdout
    assert len([q for q in up.queries if q[1] == pos and q[2] == 28]) == 1, up.queries


def test_truncated_upstream_answer_is_retried_over_tcp(docker, nets, nethost, fake_dns):
    up = fake_dns(DNS_DEFAULT_UPSTREAM)
    n = nets("dnstc")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    upstream_ready(nethost, gw, up)
    big = f"big-{uniq('t')}.example"
    ans = dig_short(nethost, gw, big)
    assert sorted(ans) == sorted(f"10.77.0.{i}" for i in range(1, 41)), ans
    assert up.count(big, "udp") == 1 and up.count(big, "tcp") == 1, up.queries
    # a client with a small UDP buffer gets TC from us, then all of it over TCP
    r = dig_host(nethost, gw, "+bufsize=512", "+ignore", big)
    assert " tc" in r.stdout.split("flags:", 1)[1].split(";", 1)[0], r.stdout
    assert len(dig_short(nethost, gw, "+bufsize=512", big)) == 40


def test_internal_network_never_forwards(docker, daemon, nets, names, nethost, fake_dns):
    up = fake_dns(DNS_DEFAULT_UPSTREAM)
    inner, outer = nets("dnsint"), nets("dnsext")
    docker("network", "create", "--internal", inner, check=True)
    docker("network", "create", outer, check=True)
    gwi, gwo = net_gateway(docker, inner), net_gateway(docker, outer)
    c, peer = names("intc"), names("intpeer")
    sleeper(docker, c, "--network", inner)
    sleeper(docker, peer, "--network", inner)
    # control: the same fake is reachable from a normal network
    upstream_ready(nethost, gwo, up)
    before = up.count()
    # local names work on the internal network...
    assert wait_for(lambda: ctr_nslookup(docker, c, peer) == [container_ip(daemon, peer, inner)], 10, 0.2,
                    "a local name on the internal network")
    # ...other names are refused, from its containers and from the host
    for name in ("outside.example", f"x-{uniq('i')}.example"):
        assert ctr_nslookup(docker, c, name) == []
        r = dig_host(nethost, gwi, name)
        assert status(r) == "REFUSED", r.stdout
    r = docker("exec", c, "nslookup", "outside.example", timeout=30)
    assert r.returncode != 0
    assert up.count() == before, up.queries[before:]


def test_dead_upstream_does_not_slow_local_names(docker, daemon, nets, names, nethost, fake_dns):
    """A container whose --dns upstream never answers (a black hole) or has no
    listener: its local names still answer in < 100 ms while the forwarded
    query is pending, and the forwarded one fails (SERVFAIL) within 5 s."""
    hole = fake_dns("127.0.0.160", mode="blackhole")
    n = nets("dnsdead")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    c, peer, c2 = names("deadc"), names("deadpeer"), names("closedc")
    sleeper(docker, c, "--network", n, "--dns", "127.0.0.160")
    sleeper(docker, c2, "--network", n, "--dns", "127.0.0.161")  # nothing listens there
    sleeper(docker, peer, "--network", n)
    assert wait_for(lambda: dig_short(nethost, gw, peer), 10, 0.1, "the peer registered")
    for ctr, checks_hole in ((c, True), (c2, False)):
        fwd = f"dead-{uniq('d')}.example"
        r = nethost.run_in(ctr_pid(daemon, ctr), "python3", "-c", _DEAD_UPSTREAM_PY, gw, fwd, peer, timeout=40)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        for loc in res["locals"]:
            assert loc is not None and loc[0] == 0 and loc[1] == 1, res
            assert loc[2] < 0.1, f"a local name took {loc[2] * 1000:.0f} ms while the upstream was dead: {res}"
        assert res["fwd"] is not None, f"the forwarded query got no reply at all: {res}"
        assert res["fwd"][0] == 2 and res["fwd"][2] < 5.0, f"want SERVFAIL within 5 s: {res}"
        # the local answers came while the forwarded one was still pending
        if checks_hole:
            assert res["locals_done"] < res["fwd"][2], res
            assert hole.count(fwd) >= 1, hole.queries
        # and the next forwarded query (upstream now known dead) fails in time too
        assert res["second"] is not None and res["second"][0] == 2 and res["second"][2] < 5.0, res
        # a real client inside the container, meanwhile, resolves its peer
        assert ctr_nslookup(docker, ctr, peer) == [container_ip(daemon, peer, n)]


def test_container_dns_flag_is_its_upstream(docker, daemon, nets, names, nethost, fake_dns):
    """`docker run --dns 127.0.0.154`: that container's forwarded names go
    there; its neighbour without --dns keeps the daemon's upstream, and
    neither gets an answer from the other's resolver (not even from the cache)."""
    default = fake_dns(DNS_DEFAULT_UPSTREAM, answer="192.0.2.53")
    own = fake_dns("127.0.0.154", answer="192.0.2.54")
    n = nets("dnsflag")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    withdns, plain = names("withdns"), names("plain")
    sleeper(docker, withdns, "--network", n, "--dns", "127.0.0.154")
    sleeper(docker, plain, "--network", n)
    upstream_ready(nethost, gw, default)
    only = f"only-{uniq('f')}.example"
    assert wait_for(lambda: ctr_nslookup(docker, withdns, only) == ["192.0.2.54"], 10, 0.3, "via its --dns")
    assert own.count(only) >= 1 and default.count(only) == 0, (own.queries, default.queries)
    # the same name asked by both: each through its own upstream
    same = f"same-{uniq('f')}.example"
    assert ctr_nslookup(docker, plain, same) == ["192.0.2.53"]
    assert ctr_nslookup(docker, withdns, same) == ["192.0.2.54"], \
        "the container with --dns got the daemon upstream's (cached) answer"
    assert ctr_nslookup(docker, plain, same) == ["192.0.2.53"], \
        "the container without --dns got the answer of another container's --dns"


def test_garbage_and_flood_do_not_stop_the_server(docker, daemon, nets, names, nethost):
    n = nets("dnsabuse")
    docker("network", "create", n, check=True)
    gw = net_gateway(docker, n)
    srv = names("abused")
    sleeper(docker, srv, "--network", n)
    ip = container_ip(daemon, srv, n)
    assert wait_for(lambda: dig_short(nethost, gw, srv) == [ip], 10, 0.1, "registered")
    r = nethost.host("python3", "-c", _ABUSE_PY, gw, srv, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    print(json.dumps(res))

    def answered(x):
        return x is not None and x[0] == 0 and x[1] == 1

    assert answered(res["before"]), res
    assert answered(res["after_garbage"]), res
    assert not res["reflected"], f"a response packet was answered (reflection/loop risk): {res}"
    # clients asking during and after the flood are answered (the flood's own
    # replies mostly overflow the sender's receive buffer: not counted)
    assert len(res["during_flood"]) == 5 and all(answered(x) for x in res["during_flood"]), res
    assert all(answered(x) for x in res["after_flood"]), res
    assert res["flood_replies"] > 0, res
    assert res["tcp_after"] == [[100 + i, 0, 1] for i in range(5)], res
    assert answered(res["after_tcp"]), res
    # and the daemon is alive, answering clients as before
    assert daemon.alive()
    assert dig_short(nethost, gw, "+tcp", srv) == [ip]
    assert ctr_nslookup(docker, srv, srv) == [ip]
