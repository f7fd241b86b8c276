"""Socket-level translation of host-local connects (issue 3, item 10's
throughput goal; crates/shibafu-net/src/socklb.rs): a connect from the
daemon's netns to a 127.0.0.1 / ::1 / wildcard publish goes straight to the
container (its local address is the bridge's gateway, not 127.0.0.1, which
is how these tests tell it from DNAT), getpeername still shows the address
connected to, the nftables DNAT path keeps serving other machines, and a
`kill -9` of the daemon leaves no program attached while the publish keeps
working through DNAT. `--socket-lb=false` turns it off."""

import ctypes
import json
import os
import re

import pytest

from conftest import LAN_HOST_IP, run_httpd
from helpers import wait_for

#: Connect, GET /, print the body with the socket's peer and local address.
_PROBE_PY = r"""
import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(3)
s.connect((host, port))
peer, sock = s.getpeername()[:2], s.getsockname()[:2]
s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
body = data.split(b"\r\n\r\n", 1)[-1].decode().strip()
print(json.dumps({"body": body, "peer": list(peer), "sock": list(sock)}))
"""

#: cgroup hooks (enum bpf_attach_type) the socket-LB attaches to.
HOOKS = {"connect4": 10, "connect6": 11, "recvmsg4": 19, "recvmsg6": 20, "getpeername4": 29, "getpeername6": 30}


@pytest.fixture
def kills_daemon(request, daemon):
    """Marks the test as one that restarts the daemon on purpose; leaves a
    daemon with the default flags running."""
    request.node._kills_daemon = True
    yield daemon
    if daemon.extra_args:
        daemon.extra_args = []
        daemon.kill9()
    if not daemon.alive():
        daemon.start()


def probe(nethost, host, port):
    """(body, peer, local address) of a connection from the daemon's netns,
    or None when it fails."""
    r = nethost.host("python3", "-c", _PROBE_PY, host, str(port), timeout=20)
    if r.returncode != 0:
        return None
    j = json.loads(r.stdout)
    return j["body"], (j["peer"][0], j["peer"][1]), j["sock"][0]


def probe_eventually(nethost, host, port, want):
    return wait_for(lambda: (lambda p: p if p and p[0] == want else None)(probe(nethost, host, port)),
                    20, 0.2, f"{host}:{port} to answer {want!r} in the daemon's netns")


def gateway(daemon, c, network="bridge", v6=False):
    ep = daemon.inspect(c)["NetworkSettings"]["Networks"][network]
    return ep["IPv6Gateway"] if v6 else ep["Gateway"]


def cgroup2_root() -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, post = line.split(" - ", 1)
            if post.split()[0] == "cgroup2":
                return pre.split()[4]
    pytest.skip("no cgroup2 hierarchy")


def attached_prog_ids(cgroup: str, attach_type: int) -> set[int]:
    """BPF_PROG_QUERY on the cgroup (bpftool is not installed)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ids = (ctypes.c_uint32 * 256)()
        attr = (ctypes.c_uint8 * 144)()
        ctypes.memmove(ctypes.addressof(attr), ctypes.byref(ctypes.c_uint32(fd)), 4)
        ctypes.memmove(ctypes.addressof(attr) + 4, ctypes.byref(ctypes.c_uint32(attach_type)), 4)
        ctypes.memmove(ctypes.addressof(attr) + 16, ctypes.byref(ctypes.c_uint64(ctypes.addressof(ids))), 8)
        ctypes.memmove(ctypes.addressof(attr) + 24, ctypes.byref(ctypes.c_uint32(256)), 4)
        SYS_bpf, BPF_PROG_QUERY = 321, 16
        if libc.syscall(SYS_bpf, BPF_PROG_QUERY, attr, 144) != 0:
            raise OSError(ctypes.get_errno(), "BPF_PROG_QUERY")
        n = ctypes.c_uint32.from_buffer(attr, 24).value
        return set(ids[:n])
    finally:
        os.close(fd)


def daemon_links(pid: int) -> dict[int, int]:
    """prog_id -> attach_type of the cgroup BPF links the process holds (its
    /proc/PID/fdinfo)."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except OSError:
            continue
        if not re.search(r"^link_type:\s*cgroup$", info, re.M):
            continue
        prog = int(re.search(r"^prog_id:\s*(\d+)", info, re.M).group(1))
        out[prog] = int(re.search(r"^attach_type:\s*(\d+)", info, re.M).group(1))
    return out


def test_loopback_publish_goes_straight_to_the_container(docker, daemon, names, nethost):
    c = names("slb")
    run_httpd(docker, c, "-p", "127.0.0.1:18401:80", "-p", "18402:80")
    gw = gateway(daemon, c)
    # curl through the 127.0.0.1 publish
    nethost.http_eventually(nethost.host_pid, "http://127.0.0.1:18401/", c)
    body, peer, local = probe_eventually(nethost, "127.0.0.1", 18401, c)
    # getpeername shows what the app connected to; the local address is the
    # bridge's gateway: the socket talks to the container, no NAT.
    assert peer == ("127.0.0.1", 18401)
    assert local == gw, f"not translated at connect time (local address {local}, gateway {gw})"
    # a wildcard publish reached through any loopback address
    body, peer, local = probe_eventually(nethost, "127.0.0.2", 18402, c)
    assert (peer, local) == (("127.0.0.2", 18402), gw)
    # another machine reaches the wildcard publish through nftables DNAT
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:18402/", c)
    # the host through its LAN address: not loopback, DNAT as before
    body, peer, local = probe_eventually(nethost, LAN_HOST_IP, 18402, c)
    assert (peer, local) == ((LAN_HOST_IP, 18402), LAN_HOST_IP)
    # an unpublished port of the same address stays unreachable
    assert probe(nethost, "127.0.0.1", 18403) is None
    # removed: no longer translated, nothing answers
    docker("rm", "-f", c, check=True)
    assert probe(nethost, "127.0.0.1", 18401) is None


def test_ipv6_loopback_publish(docker, daemon, nets, names, nethost):
    n = nets("slb6")
    docker("network", "create", "--ipv6", "--subnet", "10.94.6.0/24", "--subnet", "fd00:94:6::/64", n, check=True)
    c = names("slb6")
    run_httpd(docker, c, "--network", n, "-p", "[::1]:18411:80")
    gw6 = gateway(daemon, c, n, v6=True)
    nethost.http_eventually(nethost.host_pid, "http://[::1]:18411/", c)
    body, peer, local = probe_eventually(nethost, "::1", 18411, c)
    assert peer == ("::1", 18411)
    assert local == gw6, f"not translated at connect time (local address {local}, gateway {gw6})"


def test_connected_udp_is_translated(docker, daemon, names, nethost, netbox_image):
    c = names("slbudp")
    docker("run", "-d", "--name", c, "-p", "127.0.0.1:18421:5353/udp", netbox_image, "udpecho", "5353", check=True)
    script = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
s.connect(("127.0.0.1", 18421))
for _ in range(20):
    s.send(b"hi")
    try:
        data, frm = s.recvfrom(2048)
    except socket.timeout:
        continue
    print(data.decode(), frm[0], frm[1], s.getpeername()[0], s.getsockname()[0])
    sys.exit(0)
sys.exit(1)
"""
    r = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(nethost.host("python3", "-c", script)),
                 20, 0.2, "a UDP echo through the 127.0.0.1 publish")
    data, frm_ip, frm_port, peer, local = r.stdout.split()
    assert data == "echo:hi"
    # replies appear to come from the address connected to
    assert (frm_ip, int(frm_port), peer) == ("127.0.0.1", 18421, "127.0.0.1")
    assert local == gateway(daemon, c)


def test_daemon_kill9_detaches_and_dnat_carries_on(docker, daemon, names, nethost, kills_daemon):
    cg = cgroup2_root()
    c = names("slbk9")
    run_httpd(docker, c, "-p", "127.0.0.1:18431:80")
    gw = gateway(daemon, c)
    assert probe_eventually(nethost, "127.0.0.1", 18431, c)[2] == gw
    links = daemon_links(daemon.proc.pid)
    assert sorted(links.values()) == sorted(HOOKS.values()), f"links held by the daemon: {links}"
    for prog, hook in links.items():
        assert prog in attached_prog_ids(cg, hook)

    daemon.kill9()
    # the kernel detached every program with the daemon's fds
    for prog, hook in links.items():
        assert prog not in attached_prog_ids(cg, hook), f"program {prog} still attached after kill -9"
    # the publish still works, through nftables DNAT (local address 127.0.0.1)
    body, peer, local = probe_eventually(nethost, "127.0.0.1", 18431, c)
    assert (peer, local) == (("127.0.0.1", 18431), "127.0.0.1")
    assert (nethost.http(nethost.host_pid, "http://127.0.0.1:18431/") or "").strip() == c

    # a new daemon translates the re-adopted container's publish again
    daemon.start()
    assert probe_eventually(nethost, "127.0.0.1", 18431, c)[2] == gw
    assert len(daemon_links(daemon.proc.pid)) == len(HOOKS)


def test_socket_lb_can_be_turned_off(docker, daemon, names, nethost, kills_daemon):
    c = names("slboff")
    run_httpd(docker, c, "-p", "127.0.0.1:18441:80")
    daemon.kill9()
    daemon.extra_args = ["--socket-lb=false"]
    daemon.start()
    assert daemon_links(daemon.proc.pid) == {}
    body, peer, local = probe_eventually(nethost, "127.0.0.1", 18441, c)
    assert (peer, local) == (("127.0.0.1", 18441), "127.0.0.1")
