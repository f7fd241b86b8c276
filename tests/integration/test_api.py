"""Raw Docker Engine API behaviour that every client relies on."""

import json


def test_ping_headers_and_body(daemon):
    st, h, body = daemon.api("GET", "/_ping")
    assert st == 200 and body == b"OK"
    major, minor = (int(x) for x in h["api-version"].split("."))
    assert (major, minor) >= (1, 44), h["api-version"]
    assert h.get("ostype") == "linux"
    st, h, body = daemon.api("HEAD", "/_ping")
    assert st == 200 and body == b""
    assert "api-version" in h


def test_routes_with_and_without_version_prefix(daemon):
    plain = daemon.api("GET", "/version")
    versioned = daemon.api("GET", "/v1.44/version")
    assert plain[0] == versioned[0] == 200
    v = json.loads(plain[2])
    assert v["ApiVersion"] and v["Os"] == "linux" and v["Version"]
    st, _, body = daemon.api("GET", "/v1.50/containers/json?all=1")
    assert st == 200 and isinstance(json.loads(body), list)


def test_error_shape(daemon):
    st, h, body = daemon.api("GET", "/containers/no-such-container-xyz/json")
    assert st == 404
    assert h["content-type"] == "application/json"
    msg = json.loads(body)["message"]
    assert "no-such-container-xyz" in msg and "No such container" in msg


def test_id_prefix_and_name_resolve(docker, daemon, names):
    n = names("res")
    cid = docker("run", "-d", "--name", n, "busybox", "sleep", "600", check=True).stdout.strip()
    assert len(cid) == 64
    for ref in (cid, cid[:12], n, "/" + n):
        st, _, body = daemon.api("GET", f"/containers/{ref.replace('/', '%2F')}/json")
        assert st == 200, (ref, body)
        assert json.loads(body)["Id"] == cid
    # docker CLI too
    assert docker("inspect", "-f", "{{.Name}}", cid[:12], check=True).stdout.strip() == "/" + n


def test_already_started_is_304(daemon, docker, names):
    n = names("s304")
    docker("run", "-d", "--name", n, "busybox", "sleep", "600", check=True)
    st, _, body = daemon.api("POST", f"/containers/{n}/start")
    assert st == 304 and body == b""
    docker("stop", "-t", "0", n, check=True)
    st, _, _ = daemon.api("POST", f"/containers/{n}/stop")
    assert st == 304


def test_info_and_version_cli(docker):
    r = docker("version", "--format", "{{.Server.APIVersion}} {{.Server.Os}}", check=True)
    api, os_ = r.stdout.split()
    assert os_ == "linux" and tuple(int(x) for x in api.split(".")) >= (1, 44)
    r = docker("info", "--format", "{{json .}}", check=True)
    info = json.loads(r.stdout)
    assert info["Images"] >= 1
    assert "Containers" in info and "ContainersRunning" in info
    assert info.get("OperatingSystem") or info.get("OSType") == "linux"
