"""pytest fixtures: one shibafu daemon per session, in private namespaces.

Environment:
  SHIBAFU_BIN           binary under test (default target/release/shibafu,
                        falling back to target/debug/shibafu)
  SHIBAFU_TEST_LOGDIR   where daemon logs are kept after the run
                        (default /tmp/shibafu-test-logs)
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import REPO, Daemon, shibafu_bin, uniq

BUSYBOX_IMAGE = "busybox:latest"


def pytest_report_header(config):
    return [f"shibafu binary: {shibafu_bin()}"]


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("images")
    r = subprocess.run([str(REPO / "tests/images/make-busybox-rootfs.sh"), str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"building the busybox rootfs failed: {r.stderr}"
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def daemon(busybox_tar):
    if os.geteuid() != 0:
        pytest.exit("the integration tests need root (namespaces, cgroups, overlayfs)", returncode=2)
    binary = shibafu_bin()
    if not os.path.exists(binary):
        pytest.exit(f"shibafu binary not found at {binary} (build it or set SHIBAFU_BIN)", returncode=2)
    tmp = Path(tempfile.mkdtemp(prefix="shibafu-it-", dir="/tmp"))
    d = Daemon(tmp, binary, Path(os.environ.get("SHIBAFU_TEST_LOGDIR", "/tmp/shibafu-test-logs")))
    d.start_holder()
    try:
        d.start()
        r = d.docker("import", str(busybox_tar), BUSYBOX_IMAGE, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"importing busybox failed ({r.returncode}): {r.stderr}\n{d.log_tail()}")
    except BaseException:
        errs = d.teardown()
        if errs:
            print("teardown:", *errs, sep="\n  ")
        raise
    yield d
    errs = d.teardown()
    if errs:
        print("\nteardown notes:", *errs, sep="\n  ")


@pytest.fixture(autouse=True)
def _daemon_health(request):
    """A test that crashes the daemon fails, and the next test gets a fresh one."""
    if "daemon" not in request.fixturenames:
        yield
        return
    d: Daemon = request.getfixturevalue("daemon")
    if not d.alive():
        d.start()
    yield
    if not d.alive() and not getattr(request.node, "_kills_daemon", False):
        code = d.proc.returncode
        d.start()
        pytest.fail(f"the daemon died during this test (exit {code}); log tail:\n{d.log_tail()}")


class Names:
    """Unique names for one test; every container/volume named here is removed after it."""

    def __init__(self, daemon: Daemon):
        self.d = daemon
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def __call__(self, prefix: str = "c") -> str:
        n = uniq(prefix)
        self.containers.append(n)
        return n

    def volume(self, prefix: str = "v") -> str:
        n = uniq(prefix)
        self.volumes.append(n)
        return n

    def cleanup(self):
        if not self.d.alive():
            return
        if self.containers:
            self.d.docker("rm", "-f", "-v", *self.containers, timeout=120)
        if self.volumes:
            self.d.docker("volume", "rm", "-f", *self.volumes, timeout=60)


@pytest.fixture
def names(daemon):
    n = Names(daemon)
    yield n
    n.cleanup()


@pytest.fixture
def docker(daemon):
    """The docker CLI bound to the test daemon: docker("ps", "-a")."""
    return daemon.docker


@pytest.fixture
def shibafu(daemon):
    return daemon.shibafu


@pytest.fixture
def client(daemon):
    c = daemon.client()
    yield c
    c.close()


# ============================================================== networking (issue 3)
# Everything below is for tests/integration/test_net_*.py. The daemon's network
# namespace (the holder's) plays "the host"; an "outside" namespace of the
# test's own, joined to it by a veth pair, plays another machine on the LAN.
# The test process never touches the real host's network: every probe runs
# through `nsenter -n` into one of these namespaces.

import json as _json

from helpers import wait_for as _wait_for

#: The "LAN" between the daemon's netns ("the host") and the outside netns.
LAN_HOST_IP = "198.51.100.1"
LAN_OUTSIDE_IP = "198.51.100.2"
LAN_HOST_IF = "sfo-lan0"  # not vsf*: shibafu's reconcile must leave it alone
#: Port of the outside "whoami" server: answers HTTP with the client's address.
WHOAMI_PORT = 9000
#: Prefix of the host ends of shibafu's veths (crates/shibafu-net/src/netlink.rs).
VETH_PREFIX = "vsf"
NETBOX_IMAGE = "netbox:latest"
UDP_ECHO_PORT = 5353

_WHOAMI_PY = r"""
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = (self.client_address[0] + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    allow_reuse_address = True
    daemon_threads = True
S(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""

_UDP_CLIENT_PY = r"""
import socket, sys
host, port, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for _ in range(int(sys.argv[4])):
    s.sendto(msg, (host, port))
    try:
        data, _ = s.recvfrom(2048)
        sys.stdout.write(data.decode())
        sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
"""

_TCP_LISTEN_PY = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
print("listening", flush=True)
time.sleep(3600)
"""

# A UDP echo server for the test image (busybox has no UDP server applet):
# replies "echo:<payload>" to every datagram.
_UDP_ECHO_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 5353;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
    for (;;) {
        char buf[1500], out[1600];
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(s, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &fl);
        if (n < 0) continue;
        buf[n] = 0;
        int m = snprintf(out, sizeof out, "echo:%s", buf);
        sendto(s, out, m, 0, (struct sockaddr *)&from, fl);
    }
}
"""


def _ns_pid_entered(pid: int, other_pids) -> bool:
    mine = os.readlink(f"/proc/{pid}/ns/net")
    return all(mine != os.readlink(f"/proc/{o}/ns/net") for o in other_pids)


class NetHost:
    """Probes run in the daemon's network namespace ("the host") or in the
    test's outside namespace ("another machine on the LAN")."""

    def __init__(self, daemon: Daemon):
        self.d = daemon
        self.outside_proc: subprocess.Popen | None = None
        self.whoami_proc: subprocess.Popen | None = None
        self.bg: list[subprocess.Popen] = []

    # -- running things ------------------------------------------------------
    @property
    def host_pid(self) -> int:
        return self.d.holder.pid

    @property
    def outside_pid(self) -> int:
        return self.outside_proc.pid

    def run_in(self, pid: int, *argv, timeout=30, check=False) -> subprocess.CompletedProcess:
        """argv in the network namespace of `pid` (the test's mount namespace,
        so host tools such as curl, python3, nft and busybox are there)."""
        r = subprocess.run(["nsenter", "-t", str(pid), "-n", "--", *argv], capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} (netns of {pid}) exited {r.returncode}: {r.stderr}{r.stdout}")
        return r

    def host(self, *argv, **kw):
        return self.run_in(self.host_pid, *argv, **kw)

    def outside(self, *argv, **kw):
        return self.run_in(self.outside_pid, *argv, **kw)

    def spawn_in(self, pid: int, *argv) -> subprocess.Popen:
        p = subprocess.Popen(["nsenter", "-t", str(pid), "-n", "--", *argv], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.bg.append(p)
        return p

    def stop(self, p: subprocess.Popen):
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
        if p in self.bg:
            self.bg.remove(p)

    # -- the outside namespace -------------------------------------------------
    def setup_outside(self):
        """Create the outside netns and the LAN veth, once per session."""
        if self.outside_proc and self.outside_proc.poll() is None:
            return
        self.outside_proc = subprocess.Popen(
            ["nsenter", "-t", str(self.host_pid), "-m", "--", "unshare", "--net", "--", "sleep", "infinity"],
            stdin=subprocess.DEVNULL)
        _wait_for(lambda: _ns_pid_entered(self.outside_proc.pid, [os.getpid(), self.host_pid]), 10, 0.02,
                  "the outside netns")
        o = str(self.outside_pid)
        self.host("ip", "link", "add", LAN_HOST_IF, "type", "veth", "peer", "name", "eth0", "netns", o, check=True)
        self.host("ip", "addr", "add", f"{LAN_HOST_IP}/24", "dev", LAN_HOST_IF, check=True)
        self.host("ip", "link", "set", LAN_HOST_IF, "up", check=True)
        self.outside("ip", "link", "set", "lo", "up", check=True)
        self.outside("ip", "addr", "add", f"{LAN_OUTSIDE_IP}/24", "dev", "eth0", check=True)
        self.outside("ip", "link", "set", "eth0", "up", check=True)
        self.outside("ip", "route", "add", "default", "via", LAN_HOST_IP, check=True)
        # The outside's whoami server, for masquerade and egress checks.
        self.whoami_proc = subprocess.Popen(
            ["nsenter", "-t", o, "-n", "--", "python3", "-c", _WHOAMI_PY, str(WHOAMI_PORT)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for(lambda: self.outside("curl", "-sf", "--max-time", "2",
                                       f"http://127.0.0.1:{WHOAMI_PORT}/").returncode == 0,
                  15, 0.1, "the outside whoami server")

    def teardown(self):
        for p in list(self.bg):
            self.stop(p)
        for p in (self.whoami_proc, self.outside_proc):
            if p and p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        if self.d.holder and self.d.holder.poll() is None:
            self.host("ip", "link", "del", LAN_HOST_IF)

    # -- probes ------------------------------------------------------------------
    def http(self, pid: int, url: str, timeout: float = 3) -> str | None:
        """GET `url` from the netns of `pid`; the body, or None when unreachable."""
        r = self.run_in(pid, "curl", "-sS", "--fail", "--max-time", str(timeout), url, timeout=timeout + 10)
        return r.stdout if r.returncode == 0 else None

    def http_eventually(self, pid: int, url: str, want: str, timeout: float = 20) -> str:
        return _wait_for(lambda: (self.http(pid, url, 2) or "").strip() == want, timeout, 0.2,
                         f"{url} to answer {want!r} from netns of {pid}")

    def udp(self, pid: int, host: str, port: int, msg: str, tries: int = 6) -> str | None:
        r = self.run_in(pid, "python3", "-c", _UDP_CLIENT_PY, host, str(port), msg, str(tries),
                        timeout=tries + 15)
        return r.stdout if r.returncode == 0 else None

    def ping(self, pid: int, ip: str) -> bool:
        return self.run_in(pid, "busybox", "ping", "-c", "1", "-W", "2", ip, timeout=20).returncode == 0

    def listen_tcp(self, pid: int, addr: str, port: int) -> subprocess.Popen:
        """A host socket listening on addr:port (for port-in-use checks)."""
        p = self.spawn_in(pid, "python3", "-c", _TCP_LISTEN_PY, addr, str(port))
        line = p.stdout.readline()
        assert line.strip() == "listening", f"listener on {addr}:{port} failed: {p.stderr.read() if p.poll() is not None else ''}"
        return p

    # -- state of the host -----------------------------------------------------
    def links(self) -> dict[str, str]:
        """Interface name -> kind ("veth", "bridge", "" ...) in the daemon's netns."""
        r = self.host("ip", "-j", "-d", "link", "show", check=True)
        out = {}
        for l in _json.loads(r.stdout or "[]"):
            out[l["ifname"]] = (l.get("linkinfo") or {}).get("info_kind", "")
        return out

    def veths(self) -> set[str]:
        return {n for n, k in self.links().items() if k == "veth" and n.startswith(VETH_PREFIX)}

    def bridges(self) -> set[str]:
        return {n for n, k in self.links().items() if k == "bridge"}

    def ruleset(self) -> str:
        return self.host("nft", "list", "ruleset", check=True).stdout

    def shibafu_table(self) -> str | None:
        """shibafu's nftables table as text, each set's elements sorted: the
        kernel lists interval/concatenated sets in insertion order, which
        differs between incremental changes and a full reload."""
        r = self.host("nft", "list", "table", "inet", "shibafu")
        if r.returncode != 0:
            return None

        def sort_elems(m):
            items = sorted(e.strip() for e in m.group(1).split(","))
            return "elements = { " + ", ".join(items) + " }"

        return re.sub(r"elements = \{(.*?)\}", sort_elems, r.stdout, flags=re.S)


@pytest.fixture(scope="session")
def nethost(daemon):
    """The daemon's netns as "the host", with an outside netns on a LAN veth
    (198.51.100.1 host side, .2 outside) running a whoami HTTP server."""
    h = NetHost(daemon)
    try:
        h.setup_outside()
    except BaseException:
        h.teardown()
        raise
    yield h
    h.teardown()


@pytest.fixture(scope="session")
def netbox_image(daemon, busybox_tar, tmp_path_factory):
    """busybox + /bin/udpecho (a static UDP echo server), with EXPOSE 80 and
    5353/udp, as `netbox:latest`."""
    out = tmp_path_factory.mktemp("netbox")
    src = out / "udpecho.c"
    src.write_text(_UDP_ECHO_C)
    root = out / "root" / "bin"
    root.mkdir(parents=True)
    r = subprocess.run(["gcc", "-static", "-O2", "-o", str(root / "udpecho"), str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"gcc -static udpecho failed (apt install build-essential): {r.stderr}"
    tar = out / "netbox.tar"
    subprocess.run(["cp", str(busybox_tar), str(tar)], check=True)
    subprocess.run(["tar", "--numeric-owner", "--owner=0", "--group=0", "-rf", str(tar), "-C",
                    str(out / "root"), "./bin/udpecho"], check=True)
    r = daemon.docker("import", "--change", "EXPOSE 80", "--change", f"EXPOSE {UDP_ECHO_PORT}/udp",
                      str(tar), NETBOX_IMAGE, timeout=120)
    assert r.returncode == 0, f"importing netbox failed: {r.stderr}"
    return NETBOX_IMAGE


class NetNames:
    """Unique network and policy names for one test; all removed after it
    (after the test's containers, which must go first)."""

    def __init__(self, daemon: Daemon, names: "Names"):
        self.d = daemon
        self.names = names
        self.networks: list[str] = []
        self.policies: list[str] = []

    def __call__(self, prefix: str = "n") -> str:
        n = uniq(prefix)
        self.networks.append(n)
        return n

    def policy(self, prefix: str = "p") -> str:
        n = uniq(prefix)
        self.policies.append(n)
        return n

    def cleanup(self):
        if not self.d.alive():
            return
        self.names.cleanup()
        for p in self.policies:
            self.d.api("DELETE", f"/shibafu/networks/policies/{p}", timeout=30)
        if self.networks:
            self.d.docker("network", "rm", *self.networks, timeout=60)


@pytest.fixture
def nets(daemon, names):
    n = NetNames(daemon, names)
    yield n
    n.cleanup()


def container_ip(daemon: Daemon, name: str, network: str = "bridge") -> str:
    """The container's IPv4 address on `network` (from inspect)."""
    nets_ = daemon.inspect(name)["NetworkSettings"]["Networks"] or {}
    assert network in nets_, f"{name} is not on network {network}: {list(nets_)}"
    ip = nets_[network]["IPAddress"]
    assert ip, f"{name} has no address on {network}: {nets_[network]}"
    return ip


#: `sh -c` script: serve "<tag>" over HTTP on every port in $PORTS (default 80).
HTTPD_SCRIPT = ('mkdir -p /www && echo "$TAG" > /www/index.html && '
                'for p in ${PORTS:-80}; do httpd -p $p -h /www || exit 1; done; exec sleep 100000')


def run_httpd(docker, name: str, *run_args, tag: str | None = None, ports: str = "80",
              image: str = "busybox") -> str:
    """`docker run -d` a container serving its tag (default: its name) over
    HTTP on `ports`; returns the tag. Raises if the run fails."""
    tag = tag or name
    docker("run", "-d", "--name", name, "-e", f"TAG={tag}", "-e", f"PORTS={ports}", *run_args, image,
           "sh", "-c", HTTPD_SCRIPT, check=True)
    return tag


def ctr_http(docker, name: str, url: str, timeout: int = 3) -> str | None:
    """GET `url` from inside container `name`; the body, or None."""
    r = docker("exec", name, "timeout", str(timeout), "wget", "-qO-", url, timeout=timeout + 30)
    return r.stdout if r.returncode == 0 else None


def ctr_http_eventually(docker, name: str, url: str, want: str, timeout: float = 20) -> str:
    return _wait_for(lambda: (ctr_http(docker, name, url, 2) or "").strip() == want, timeout, 0.2,
                     f"{url} to answer {want!r} inside {name}")


# ============================================================== embedded DNS (issue 4)
# For tests/integration/test_dns_*.py: a fake upstream resolver of the test's
# own on 127.0.0.x:53 in the daemon's netns (the daemon forwards there: the
# session daemon runs with SHIBAFU_DNS_UPSTREAMS=127.0.0.153), which logs
# every query it receives so tests can count what was forwarded.

import threading as _threading

#: The session daemon's upstream (tests/helpers.py).
DNS_DEFAULT_UPSTREAM = "127.0.0.153"

# Answers by the first label of the name (lower case):
#   nx*   NXDOMAIN with an SOA (negative TTL 30)
#   big*  over UDP: an empty reply with TC set; over TCP: 40 A records 10.77.0.1..40
#   else  A: the server's answer address (TTL 60); other types: NOERROR, no data, SOA
# Mode "blackhole" reads and logs queries and never answers (a dead resolver).
# Every query is logged on stdout as "PROTO NAME QTYPE".
_FAKE_DNS_PY = r'''
import socket, struct, sys, threading
addr, port, answer, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lock = threading.Lock()

def log(proto, name, qtype):
    with lock:
        sys.stdout.write(f"{proto} {name} {qtype}\n")
        sys.stdout.flush()

def soa(ttl):
    rdata = b"\x02ns\x00" + b"\x04host\x00" + struct.pack(">IIIII", 1, 60, 60, 60, ttl)
    return b"\xc0\x0c" + struct.pack(">HHIH", 6, 1, ttl, len(rdata)) + rdata

def handle(q, proto):
    if len(q) < 12 or q[2] & 0x80:
        return None
    off, labels = 12, []
    try:
        while q[off] != 0:
            labels.append(q[off + 1:off + 1 + q[off]].decode("ascii", "replace").lower())
            off += q[off] + 1
        qtype = struct.unpack(">H", q[off + 1:off + 3])[0]
    except (IndexError, struct.error):
        return None
    end = off + 5
    name = ".".join(labels)
    log(proto, name, qtype)
    if mode == "blackhole":
        return None
    first = labels[0] if labels else ""
    flags, an, ns, body = 0x8180, 0, 0, b""
    if first.startswith("nx"):
        flags |= 3
        ns, body = 1, soa(30)
    elif first.startswith("big") and proto == "udp":
        flags |= 0x0200
    elif first.startswith("big") and qtype == 1:
        an = 40
        body = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([10, 77, 0, i + 1])
                        for i in range(40))
    elif qtype == 1:
        an, body = 1, b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(answer)
    else:
        ns, body = 1, soa(30)
    return q[:2] + struct.pack(">HHHHH", flags, 1, an, ns, 0) + q[12:end] + body

def tcp_conn(c):
    with c:
        while True:
            h = c.recv(2, socket.MSG_WAITALL)
            if len(h) < 2:
                return
            (n,) = struct.unpack(">H", h)
            q = c.recv(n, socket.MSG_WAITALL)
            r = handle(q, "tcp")
            if r is not None:
                c.sendall(struct.pack(">H", len(r)) + r)

def tcp_loop(t):
    while True:
        c, _ = t.accept()
        threading.Thread(target=tcp_conn, args=(c,), daemon=True).start()

u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((addr, port))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((addr, port))
t.listen(16)
threading.Thread(target=tcp_loop, args=(t,), daemon=True).start()
print("listening", flush=True)
while True:
    q, peer = u.recvfrom(65535)
    r = handle(q, "udp")
    if r is not None:
        u.sendto(r, peer)
'''


class FakeUpstream:
    """A fake resolver on ADDR:53 in the daemon's netns, counting queries."""

    def __init__(self, nethost: "NetHost", addr: str, answer: str = "192.0.2.7", mode: str = "answer"):
        """Runs in `nethost`'s daemon netns (a `NetHost(daemon)` for another daemon)."""
        self.nethost, self.addr, self.answer, self.mode = nethost, addr, answer, mode
        self.queries: list[tuple[str, str, int]] = []
        self._lock = _threading.Lock()
        self.proc = nethost.spawn_in(nethost.host_pid, "python3", "-c", _FAKE_DNS_PY, addr, "53", answer, mode)
        line = self.proc.stdout.readline()
        if line.strip() != "listening":
            self.proc.kill()
            raise AssertionError(f"fake upstream on {addr} did not start: {self.proc.stderr.read()}")
        self._reader = _threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 3:
                with self._lock:
                    self.queries.append((parts[0], parts[1], int(parts[2])))

    def count(self, name: str | None = None, proto: str | None = None) -> int:
        """Queries received (for `name`, lower case without the final dot; over `proto`)."""
        name = name.rstrip(".").lower() if name else None
        with self._lock:
            return sum(1 for p, n, _ in self.queries
                       if (name is None or n == name) and (proto is None or p == proto))

    def stop(self):
        self.nethost.stop(self.proc)


@pytest.fixture
def fake_dns(nethost):
    """Factory: fake_dns("127.0.0.153", answer="192.0.2.7", mode="answer"|"blackhole")
    starts a FakeUpstream; all are stopped after the test."""
    started: list[FakeUpstream] = []

    def start(addr: str = DNS_DEFAULT_UPSTREAM, answer: str = "192.0.2.7", mode: str = "answer"):
        f = FakeUpstream(nethost, addr, answer, mode)
        started.append(f)
        return f

    yield start
    for f in started:
        f.stop()


def net_gateway(docker, net: str, v6: bool = False) -> str:
    """The network's IPv4 (or IPv6) gateway, where its DNS server listens."""
    info = _json.loads(docker("network", "inspect", net, check=True).stdout)[0]
    for c in info["IPAM"]["Config"]:
        gw = c.get("Gateway", "")
        if gw and (":" in gw) == v6:
            return gw
    raise AssertionError(f"network {net} has no {'IPv6' if v6 else 'IPv4'} gateway: {info['IPAM']}")


def dig_host(nethost: "NetHost", server: str, *args, timeout: int = 20) -> subprocess.CompletedProcess:
    """`dig @server ARGS` from the daemon's netns ("the host"), one try, 2 s."""
    return nethost.host("dig", f"@{server}", "+time=2", "+tries=1", *args, timeout=timeout)


def dig_short(nethost: "NetHost", server: str, *args) -> list[str]:
    """The answer lines of `dig +short` (empty for no answer)."""
    r = dig_host(nethost, server, "+short", *args)
    assert r.returncode == 0, f"dig @{server} {args} failed: {r.stdout}{r.stderr}"
    return [l for l in r.stdout.splitlines() if l and not l.startswith(";")]


def ctr_nslookup(docker, ctr: str, name: str, qtype: str = "a", server: str = "") -> list[str]:
    """busybox nslookup inside `ctr`: the answer addresses (A or AAAA), empty when none."""
    import ipaddress as _ip

    r = docker("exec", ctr, "nslookup", f"-type={qtype}", name, *([server] if server else []), timeout=30)
    if r.returncode != 0:
        return []
    out, seen = [], False
    for line in r.stdout.splitlines():
        line = line.strip()
        if line.startswith("Name:"):
            seen = True
        elif seen and line.startswith("Address"):
            a = line.split(":", 1)[1].strip().split()[0]
            try:
                v = _ip.ip_address(a).version
            except ValueError:
                continue
            if v == (6 if qtype.lower() == "aaaa" else 4):
                out.append(a)
    return out


def ctr_pid(daemon: Daemon, name: str) -> int:
    """Host PID of the container's init (to enter its network namespace)."""
    pid = daemon.inspect(name)["State"]["Pid"]
    assert pid, f"{name} is not running"
    return int(pid)
