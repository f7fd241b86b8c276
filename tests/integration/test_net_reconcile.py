"""Reconcile, never leak (issue 3, item 7): rules restored after `nft flush
ruleset` without a restart, `shibafu network reload`, kill -9 of the daemon
(also in the middle of starts) and of a supervisor: addresses, veths and
rules match the live containers afterwards."""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import LAN_HOST_IP, LAN_OUTSIDE_IP, WHOAMI_PORT, container_ip, ctr_http, ctr_http_eventually, run_httpd
from helpers import pid_alive, uniq, wait_for

WHOAMI = f"http://{LAN_OUTSIDE_IP}:{WHOAMI_PORT}/"


@pytest.fixture
def kills_daemon(request, daemon):
    """Marks the test as one that kills the daemon on purpose."""
    request.node._kills_daemon = True
    yield daemon
    if not daemon.alive():
        daemon.start()


def net_id(docker, n):
    return docker("network", "inspect", "-f", "{{.Id}}", n, check=True).stdout.strip()


def endpoints(docker, n):
    r = docker("network", "inspect", "-f", "{{json .Containers}}", n, check=True)
    return json.loads(r.stdout) or {}


def supervisor_of(daemon, cid):
    pids = [p for p, argv in daemon.supervisors().items() if any(cid in a for a in argv)]
    assert len(pids) == 1, f"supervisors of {cid[:12]}: {pids}"
    return pids[0]


def test_nft_flush_is_repaired_without_restart(docker, daemon, nets, names, nethost):
    n = nets("flush")
    docker("network", "create", n, check=True)
    srv, cli = names("flush-srv"), names("flush-cli")
    run_httpd(docker, srv, "--network", n, "-p", "18300:80")
    docker("run", "-d", "--name", cli, "busybox", "sleep", "600", check=True)
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:18300/", srv)
    assert (ctr_http(docker, cli, WHOAMI, 5) or "").strip() == LAN_HOST_IP
    pid = daemon.proc.pid

    nethost.host("nft", "flush", "ruleset", check=True)
    assert nethost.shibafu_table() is None

    # detected and re-applied by the running daemon within a few seconds
    wait_for(lambda: nethost.shibafu_table() is not None, 10, 0.2, "the inet shibafu table to come back")
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:18300/", srv, timeout=10)
    nethost.http_eventually(nethost.host_pid, "http://127.0.0.1:18300/", srv, timeout=10)
    ctr_http_eventually(docker, cli, WHOAMI, LAN_HOST_IP, timeout=10)
    # isolation is back too: the default-bridge client cannot reach srv directly
    assert ctr_http(docker, cli, f"http://{container_ip(daemon, srv, n)}/") is None
    assert daemon.alive() and daemon.proc.pid == pid, "the daemon restarted"


def test_network_reload_restores_rules_bridges_and_removes_stray_veths(docker, shibafu, daemon, nets, names, nethost):
    n, idle = nets("reload"), nets("reload-idle")
    docker("network", "create", n, check=True)
    docker("network", "create", idle, check=True)
    srv = names("reload-srv")
    run_httpd(docker, srv, "--network", n, "-p", "18301:80")
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:18301/", srv)
    veths = nethost.veths()
    idle_bridge = "br-" + net_id(docker, idle)[:12]
    assert idle_bridge in nethost.bridges()

    # damage: the table gone, the bridge of a network gone, a stray veth of a dead container
    stray = "vsf" + uniq("x").encode().hex()[-12:]
    nethost.host("ip", "link", "add", stray, "type", "veth", "peer", "name", "sfo-stray0", check=True)
    nethost.host("nft", "delete", "table", "inet", "shibafu", check=True)
    nethost.host("ip", "link", "del", idle_bridge, check=True)

    r = shibafu("network", "reload")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert stray in out, f"the reload report does not mention the stray veth: {out}"
    # repaired when the command returns
    assert nethost.shibafu_table() is not None
    assert stray not in nethost.links()
    assert idle_bridge in nethost.bridges()
    assert nethost.veths() == veths, "reload touched the live container's veth"
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:18301/", srv, timeout=5)
    # a container can be started on the idle network again
    r = docker("run", "--rm", "--network", idle, "busybox", "true")
    assert r.returncode == 0, r.stderr

    # the API form reports the same way
    st, _, body = daemon.api("POST", "/shibafu/networks/reload")
    assert st == 200, body
    rep = json.loads(body)
    assert isinstance(rep.get("Actions"), list) and rep.get("Errors") == []


def test_daemon_kill9_keeps_connectivity_and_addresses(docker, daemon, nets, names, nethost, kills_daemon):
    baseline = nethost.veths()
    n = nets("k9")
    docker("network", "create", "--subnet", "10.92.1.0/24", n, check=True)
    srv, peer = names("k9-srv"), names("k9-peer")
    run_httpd(docker, srv, "--network", n, "-p", "18310:80")
    docker("run", "-d", "--name", peer, "--network", n, "busybox", "sleep", "600", check=True)
    ip = container_ip(daemon, srv, n)
    peer_ip = container_ip(daemon, peer, n)
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:18310/", srv)
    table = nethost.shibafu_table()

    daemon.kill9()
    # the kernel keeps forwarding while the daemon is down
    assert (nethost.http(nethost.outside_pid, f"http://{LAN_HOST_IP}:18310/") or "").strip() == srv
    daemon.start()

    assert container_ip(daemon, srv, n) == ip and container_ip(daemon, peer, n) == peer_ip
    assert nethost.shibafu_table() == table
    nethost.http_eventually(nethost.outside_pid, f"http://{LAN_HOST_IP}:18310/", srv, timeout=5)
    ctr_http_eventually(docker, peer, f"http://{ip}/", srv, timeout=5)
    # allocations survived: a new container gets a fresh address
    c3 = names("k9-new")
    docker("run", "-d", "--name", c3, "--network", n, "busybox", "sleep", "600", check=True)
    assert container_ip(daemon, c3, n) not in (ip, peer_ip)
    # the published port is still reserved
    r = docker("run", "-d", "--name", names("k9-thief"), "-p", "18310:80", "busybox", "sleep", "600")
    assert r.returncode != 0 and "18310" in r.stderr

    docker("rm", "-f", srv, check=True)
    assert nethost.http(nethost.outside_pid, f"http://{LAN_HOST_IP}:18310/", 2) is None
    docker("rm", "-f", peer, c3, check=True)
    # veths go in the background after rm (the kernel's RCU wait): soon, not never
    wait_for(lambda: nethost.veths() == baseline, 10, 0.05, "the removed containers' veths to go")
    assert endpoints(docker, n) == {}


def test_daemon_kill9_during_starts_and_removals_leaks_nothing(docker, daemon, nets, names, nethost, kills_daemon):
    baseline = nethost.veths()
    n = nets("chaos")
    # a /29: 5 addresses besides the gateway, so one leaked address shows
    docker("network", "create", "--subnet", "10.92.2.0/29", n, check=True)
    started = []
    for delay in (0.0, 0.01, 0.03, 0.06, 0.1, 0.2):
        c = names("chaos")
        started.append(c)
        p = subprocess.Popen(["docker", "run", "-d", "--name", c, "--network", n, "-p", "80", "busybox", "sleep", "600"],
                             env=daemon.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        daemon.kill9()
        p.wait(timeout=30)
        daemon.start()
    # and kills during removals
    for delay in (0.0, 0.02, 0.05):
        live = [c for c in started if docker("inspect", c).returncode == 0]
        if not live:
            break
        p = subprocess.Popen(["docker", "rm", "-f", live[0]], env=daemon.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        daemon.kill9()
        p.wait(timeout=30)
        daemon.start()

    # every container that exists and runs has its address and veth; nothing else does
    running = [c for c in started
               if docker("inspect", "-f", "{{.State.Running}}", c).stdout.strip() == "true"]
    eps = endpoints(docker, n)
    assert len(eps) == len(running), (eps, running)
    assert len(nethost.veths() - baseline) == len(running)
    for c in running:
        ip = container_ip(daemon, c, n)
        assert f"{ip}/29" in docker("exec", c, "ip", "-o", "-4", "addr", "show", "eth0", check=True).stdout

    docker("rm", "-f", *started)
    wait_for(lambda: nethost.veths() == baseline, 10, 0.05, "the removed containers' veths to go")
    assert endpoints(docker, n) == {}
    # all 5 addresses are free again
    for i in range(5):
        c = names("chaos-fill")
        r = docker("run", "-d", "--name", c, "--network", n, "busybox", "sleep", "600")
        assert r.returncode == 0, f"address {i + 1} of 5: {r.stderr}"


def test_supervisor_kill9_releases_ip_and_veth(docker, shibafu, daemon, nets, names, nethost):
    n = nets("supk")
    docker("network", "create", "--subnet", "10.92.3.0/24", n, check=True)
    c = names("supk")
    baseline = nethost.veths()
    docker("run", "-d", "--name", c, "--network", n, "--ip", "10.92.3.50", "-p", "18320:80", "busybox",
           "sleep", "600", check=True)
    cid = daemon.inspect(c)["Id"]
    assert len(nethost.veths() - baseline) == 1
    os.kill(supervisor_of(daemon, cid), signal.SIGKILL)
    wait_for(lambda: docker("inspect", "-f", "{{.State.Running}}", c).stdout.strip() == "false", 20, 0.2,
             "the container to be seen as exited")
    shibafu("network", "reload", check=True)
    assert nethost.veths() == baseline
    assert endpoints(docker, n) == {}
    c2 = names("supk-new")
    r = docker("run", "-d", "--name", c2, "--network", n, "--ip", "10.92.3.50", "-p", "18320:80", "busybox",
               "sleep", "600")
    assert r.returncode == 0, r.stderr
    assert container_ip(daemon, c2, n) == "10.92.3.50"


def test_supervisor_kill9_while_daemon_down(docker, daemon, nets, names, nethost, kills_daemon):
    n = nets("supd")
    docker("network", "create", "--subnet", "10.92.4.0/24", n, check=True)
    c = names("supd")
    baseline = nethost.veths()
    docker("run", "-d", "--name", c, "--network", n, "--ip", "10.92.4.50", "busybox", "sleep", "600", check=True)
    cid = daemon.inspect(c)["Id"]
    pid = int(docker("inspect", "-f", "{{.State.Pid}}", c, check=True).stdout)
    sup = supervisor_of(daemon, cid)
    daemon.kill9()
    os.kill(sup, signal.SIGKILL)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_for(lambda: not pid_alive(sup) and not pid_alive(pid), 10, 0.1, "supervisor and container to die")
    daemon.start()
    assert docker("inspect", "-f", "{{.State.Status}}", c, check=True).stdout.strip() == "exited"
    assert nethost.veths() == baseline
    assert endpoints(docker, n) == {}
    c2 = names("supd-new")
    r = docker("run", "-d", "--name", c2, "--network", n, "--ip", "10.92.4.50", "busybox", "sleep", "600")
    assert r.returncode == 0, r.stderr
    assert container_ip(daemon, c2, n) == "10.92.4.50"
    # the old container wants the same static address back: a clear error, nothing half-made
    veths = nethost.veths()
    r = docker("start", c)
    assert r.returncode != 0 and "10.92.4.50" in r.stderr, r.stderr
    assert docker("inspect", "-f", "{{.State.Running}}", c, check=True).stdout.strip() == "false"
    assert nethost.veths() == veths
    assert list(endpoints(docker, n)) == [daemon.inspect(c2)["Id"]]
