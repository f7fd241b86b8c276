"""The Python `docker` SDK against shibafu."""

import socket
import time

import docker as dockerpy
import pytest

from helpers import frame_decode


def test_ping_and_version(client):
    assert client.ping() is True
    v = client.version()
    assert v["Os"] == "linux"
    assert tuple(int(x) for x in v["ApiVersion"].split(".")) >= (1, 44)
    info = client.info()
    assert info["Images"] >= 1


def test_run_with_output(client):
    out = client.containers.run("busybox", ["sh", "-c", "echo from-py"], remove=True)
    assert out == b"from-py\n"


def test_run_failure_raises_container_error(client):
    with pytest.raises(dockerpy.errors.ContainerError) as e:
        client.containers.run("busybox", ["sh", "-c", "echo bad >&2; exit 3"], remove=True, stderr=True)
    assert e.value.exit_status == 3
    assert b"bad" in e.value.stderr


def test_run_detached_logs_wait_remove(client, names):
    n = names("py")
    c = client.containers.run("busybox", ["sh", "-c", "echo one; sleep 1; echo two"], name=n, detach=True,
                              labels={"via": "docker-py"}, environment={"A": "b"})
    assert c.name == n
    c.reload()
    assert c.status in ("running", "exited")
    assert c.labels == {"via": "docker-py"}
    res = c.wait(timeout=30)
    assert res["StatusCode"] == 0
    assert c.logs() == b"one\ntwo\n"
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 0
    assert c.attrs["HostConfig"]["LogConfig"]["Type"] == "json-file"
    c.remove()
    with pytest.raises(dockerpy.errors.NotFound):
        client.containers.get(n)


def test_list_and_get(client, names):
    n = names("pylist")
    c = client.containers.run("busybox", ["sleep", "600"], name=n, detach=True)
    assert n in [x.name for x in client.containers.list()]
    assert n in [x.name for x in client.containers.list(filters={"status": "running"})]
    assert client.containers.get(c.short_id).id == c.id
    c.stop(timeout=0)
    assert n not in [x.name for x in client.containers.list()]
    assert n in [x.name for x in client.containers.list(all=True)]


def test_exec_run(client, names):
    n = names("pyexec")
    c = client.containers.run("busybox", ["sleep", "600"], name=n, detach=True)
    r = c.exec_run(["sh", "-c", "echo hi; exit 4"])
    assert r.exit_code == 4 and r.output == b"hi\n"
    r = c.exec_run("id -u", user="app")
    assert r.exit_code == 0 and r.output == b"1000\n"
    r = c.exec_run(["sh", "-c", "echo $X; pwd"], environment={"X": "y"}, workdir="/tmp")
    assert r.output == b"y\n/tmp\n"
    r = c.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True)
    assert r.output == (b"o\n", b"e\n")


def test_logs_stream(client, names):
    n = names("pystream")
    c = client.containers.run("busybox", ["sh", "-c", "for i in 1 2 3; do echo s$i; sleep 0.3; done"], name=n, detach=True)
    chunks = b"".join(c.logs(stream=True, follow=True))
    assert chunks == b"s1\ns2\ns3\n"


def test_attach_socket(client, names):
    n = names("pyattach")
    # docker-py sets StdinOnce with stdin_open: the client's half-close is the container's EOF
    c = client.containers.create("busybox", ["cat"], name=n, stdin_open=True)
    assert c.attrs["Config"]["StdinOnce"] is True
    sock = c.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    raw = sock._sock if hasattr(sock, "_sock") else sock
    c.start()
    raw.sendall(b"ping-through-attach\n")
    raw.settimeout(10)
    data = b""
    deadline = time.monotonic() + 10
    while b"ping-through-attach" not in frame_decode(data)[0] and time.monotonic() < deadline:
        try:
            chunk = raw.recv(4096)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    assert frame_decode(data)[0] == b"ping-through-attach\n"
    raw.shutdown(socket.SHUT_WR)
    assert c.wait(timeout=30)["StatusCode"] == 0
    raw.close()


def test_images_api(client):
    tags = [t for img in client.images.list() for t in img.tags]
    assert "busybox:latest" in tags
    img = client.images.get("busybox")
    assert img.id.startswith("sha256:")
    with pytest.raises(dockerpy.errors.ImageNotFound):
        client.images.get("no-such-image-py")


def test_run_unknown_image(client):
    with pytest.raises((dockerpy.errors.ImageNotFound, dockerpy.errors.NotFound, dockerpy.errors.APIError)) as e:
        client.containers.run("no-such-image-py:latest", ["true"], remove=True)
    assert "no-such-image-py" in str(e.value)


def test_volumes_api(client, names):
    v = names.volume()
    vol = client.volumes.create(name=v, labels={"k": "v"})
    assert vol.name == v
    assert v in [x.name for x in client.volumes.list()]
    assert client.volumes.get(v).attrs["Labels"] == {"k": "v"}
    out = client.containers.run("busybox", ["sh", "-c", "echo in-vol > /v/f; cat /v/f"], remove=True,
                                volumes={v: {"bind": "/v", "mode": "rw"}})
    assert out == b"in-vol\n"
    vol.remove()
    with pytest.raises(dockerpy.errors.NotFound):
        client.volumes.get(v)


def test_kill_restart_rename_pause(client, names):
    n, n2 = names("pyops"), names("pyops2")
    c = client.containers.run("busybox", ["sleep", "600"], name=n, detach=True)
    c.pause()
    c.reload()
    assert c.status == "paused"
    c.unpause()
    c.rename(n2)
    c.reload()
    assert c.name == n2
    c.restart(timeout=0)
    c.reload()
    assert c.status == "running"
    c.kill()
    assert c.wait(timeout=20)["StatusCode"] == 137
    c.remove(force=True)


def test_top_and_stats(client, names):
    n = names("pytop")
    c = client.containers.run("busybox", ["sleep", "600"], name=n, detach=True, mem_limit="32m")
    top = c.top()
    assert any("sleep" in " ".join(p) for p in top["Processes"])
    s = c.stats(stream=False)
    assert s["memory_stats"]["limit"] == 32 * 1024 * 1024


def test_top_level_mac_address(client, names):
    """docker-py sends `mac_address=` as the deprecated Config.MacAddress:
    it lands on the container's interface, and a conflicting mode is refused."""
    out = client.containers.run("busybox", ["cat", "/sys/class/net/eth0/address"], remove=True,
                                mac_address="02:42:ac:11:00:2a")
    assert out.decode().strip() == "02:42:ac:11:00:2a"
    n = names("machost")
    with pytest.raises(dockerpy.errors.APIError) as e:
        client.containers.create("busybox", ["true"], name=n, mac_address="02:42:ac:11:00:2b", network_mode="host")
    assert "conflicting options" in str(e.value)
    with pytest.raises(dockerpy.errors.NotFound):
        client.containers.get(n)
