"""Images, enough to run: import (file, stdin, --change), images, tag, rmi, inspect."""

import json
import re

from helpers import uniq


def image_ids(docker):
    return set(docker("images", "-q", "--no-trunc", check=True).stdout.split())


def test_images_lists_busybox(docker):
    r = docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}", check=True)
    line = next(l for l in r.stdout.splitlines() if l.startswith("busybox:latest "))
    _, short_id, size = line.split(" ", 2)
    assert re.fullmatch(r"[0-9a-f]{12}", short_id)
    assert "MB" in size or "kB" in size


def test_import_from_file_with_changes(docker, busybox_tar, names):
    repo = uniq("imp")
    r = docker("import", "--change", 'CMD ["echo", "from-cmd"]', "--change", "ENV GREETING=hello",
               "--change", "WORKDIR /tmp", str(busybox_tar), f"{repo}:v1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("sha256:")
    try:
        assert docker("run", "--rm", f"{repo}:v1", check=True).stdout == "from-cmd\n"
        out = docker("run", "--rm", f"{repo}:v1", "sh", "-c", "echo $GREETING; pwd", check=True).stdout
        assert out == "hello\n/tmp\n"
        cfg = json.loads(docker("image", "inspect", f"{repo}:v1", check=True).stdout)[0]
        assert cfg["Config"]["Cmd"] == ["echo", "from-cmd"]
        assert "GREETING=hello" in cfg["Config"]["Env"]
        assert cfg["Config"]["WorkingDir"] == "/tmp"
        assert cfg["RepoTags"] == [f"{repo}:v1"]
        assert cfg["Os"] == "linux" and cfg["Architecture"] in ("amd64", "arm64")
        assert cfg["RootFS"]["Type"] == "layers" and len(cfg["RootFS"]["Layers"]) == 1
    finally:
        docker("rmi", f"{repo}:v1")


def test_import_entrypoint_change(docker, busybox_tar):
    repo = uniq("impep")
    docker("import", "--change", 'ENTRYPOINT ["echo", "ep"]', str(busybox_tar), repo, check=True)
    try:
        assert docker("run", "--rm", repo, "arg1", check=True).stdout == "ep arg1\n"
    finally:
        docker("rmi", repo)


def test_import_from_stdin(docker, busybox_tar):
    repo = uniq("stdin")
    r = docker("import", "-", f"{repo}:latest", input=busybox_tar.read_bytes(), text=False)
    assert r.returncode == 0, r.stderr
    try:
        assert docker("run", "--rm", repo, "cat", "/etc/shibafu-test-image", check=True).stdout == "shibafu-test-image\n"
    finally:
        docker("rmi", repo)


def test_gzip_import(docker, busybox_tar, tmp_path):
    import gzip
    gz = tmp_path / "busybox.tar.gz"
    gz.write_bytes(gzip.compress(busybox_tar.read_bytes()))
    repo = uniq("gz")
    docker("import", str(gz), repo, check=True)
    try:
        assert docker("run", "--rm", repo, "echo", "gz-ok", check=True).stdout == "gz-ok\n"
    finally:
        docker("rmi", repo)


def test_same_content_same_layer(docker, busybox_tar):
    repo = uniq("same")
    docker("import", str(busybox_tar), repo, check=True)
    try:
        a = json.loads(docker("image", "inspect", repo, check=True).stdout)[0]["RootFS"]["Layers"]
        b = json.loads(docker("image", "inspect", "busybox", check=True).stdout)[0]["RootFS"]["Layers"]
        assert a == b
    finally:
        docker("rmi", repo)


def test_tag_and_rmi(docker):
    repo = uniq("tagged")
    bid = docker("image", "inspect", "-f", "{{.Id}}", "busybox", check=True).stdout.strip()
    docker("tag", "busybox", f"{repo}:x", check=True)
    assert docker("image", "inspect", "-f", "{{.Id}}", f"{repo}:x", check=True).stdout.strip() == bid
    r = docker("rmi", f"{repo}:x", check=True)
    assert f"Untagged: {repo}:x" in r.stdout
    # the other tag keeps the image
    assert docker("image", "inspect", "busybox").returncode == 0
    r = docker("image", "inspect", f"{repo}:x")
    assert r.returncode != 0 and "No such image" in r.stderr


def test_rmi_in_use_refused(docker, busybox_tar, names):
    repo = uniq("inuse")
    docker("import", str(busybox_tar), repo, check=True)
    docker("tag", repo, f"{repo}:other", check=True)
    docker("rmi", f"{repo}:other", check=True)
    n = names("user")
    docker("create", "--name", n, repo, "true", check=True)
    r = docker("rmi", repo)
    assert r.returncode != 0
    assert "being used" in r.stderr or "in use" in r.stderr or "conflict" in r.stderr.lower()
    docker("rm", n, check=True)
    docker("rmi", repo, check=True)


def test_rmi_by_id_and_deleted_layers(docker, busybox_tar):
    repo = uniq("byid")
    iid = docker("import", "--change", "ENV X=unique-" + repo, str(busybox_tar), repo, check=True).stdout.strip()
    assert iid in image_ids(docker)
    r = docker("rmi", "-f", iid[7:19])
    assert r.returncode == 0, r.stderr
    assert "Deleted: " + iid in r.stdout
    assert iid not in image_ids(docker)
    # the shared layer stays for busybox
    assert docker("run", "--rm", "busybox", "true").returncode == 0


def test_image_history(docker):
    r = docker("history", "busybox", check=True)
    assert len(r.stdout.strip().splitlines()) >= 2
