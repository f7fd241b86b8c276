"""Shared helpers for the shibafu integration tests.

The daemon under test runs inside a private network + mount namespace held by a
`sleep infinity` "holder" process (see `Daemon`), with its own data and exec
roots in a fresh temp dir, so the tests never touch the host's network or any
other engine's state. Clients (docker CLI, docker-py, the shibafu CLI) talk to
it through its unix socket, which lives on the shared filesystem.
"""

from __future__ import annotations

import glob
import http.client
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import string
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT = 60


def shibafu_bin() -> str:
    """Binary under test: $SHIBAFU_BIN, else target/release, else target/debug."""
    env = os.environ.get("SHIBAFU_BIN")
    if env:
        return str(Path(env).resolve())
    for cand in ("target/release/shibafu", "target/debug/shibafu"):
        p = REPO / cand
        if p.exists():
            return str(p)
    return str(REPO / "target/release/shibafu")


_counter = itertools.count(1)
_session_tag = "".join(random.choices(string.ascii_lowercase + string.digits, k=4))


def uniq(prefix: str = "t") -> str:
    """A container/volume name no other test in this session uses."""
    return f"{prefix}-{_session_tag}-{next(_counter)}"


def wait_for(fn, timeout: float = 30, interval: float = 0.2, what: str = "condition"):
    """Poll `fn` until it returns a truthy value; return it or raise with `what`."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # keep polling; report the last error
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket, for raw Docker API checks."""

    def __init__(self, path: str, timeout: float = 10):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


class Daemon:
    """A shibafu daemon in its own net+mount namespace, with its own roots."""

    def __init__(self, tmp: Path, binary: str, log_dir: Path | None = None):
        self.tmp = tmp
        self.bin = binary
        self.sock = str(tmp / "shibafu.sock")
        self.host = f"unix://{self.sock}"
        self.data_root = tmp / "data"
        self.exec_root = tmp / "run"
        self.log_path = tmp / "daemon.log"
        self.log_dir = log_dir
        self.holder: subprocess.Popen | None = None
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.docker_config = tmp / "docker-config"
        self.docker_config.mkdir(parents=True, exist_ok=True)
        #: Extra `shibafu daemon` flags (e.g. `--config-file PATH`).
        self.extra_args: list[str] = []

    # -- namespaces -------------------------------------------------------
    def start_holder(self):
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
        )
        my_mnt = os.readlink("/proc/self/ns/mnt")
        my_net = os.readlink("/proc/self/ns/net")

        def entered():
            h = self.holder.pid
            return os.readlink(f"/proc/{h}/ns/mnt") != my_mnt and os.readlink(f"/proc/{h}/ns/net") != my_net

        wait_for(entered, timeout=10, interval=0.02, what="holder namespaces")
        self.ns_run(["ip", "link", "set", "lo", "up"], check=True)

    def ns_run(self, argv, net=True, mnt=True, **kw):
        """Run argv inside the holder's namespaces."""
        pre = ["nsenter", "-t", str(self.holder.pid)]
        if net:
            pre.append("-n")
        if mnt:
            pre.append("-m")
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", DEFAULT_TIMEOUT)
        return subprocess.run(pre + list(argv), **kw)

    # -- daemon lifecycle ---------------------------------------------------
    def start(self, timeout: float = 60):
        self.exec_root.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")
        self.starts += 1
        logf.write(f"\n===== daemon start #{self.starts} at {time.strftime('%H:%M:%S')} =====\n".encode())
        logf.flush()
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        # Never forward container DNS to the host's resolvers: a local fake
        # (test_dns.py serves one on 127.0.0.153 when it needs one).
        env.setdefault("SHIBAFU_DNS_UPSTREAMS", "127.0.0.153")
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(self.holder.pid), "-n", "-m", self.bin, "daemon",
             "--host", self.host, "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
             *self.extra_args],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
        )
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode} during start-up:\n{self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not answer /_ping within {timeout}s:\n{self.log_tail()}")

    def ping(self) -> bool:
        try:
            c = UnixHTTPConnection(self.sock, timeout=2)
            c.request("GET", "/_ping")
            r = c.getresponse()
            body = r.read()
            c.close()
            return r.status == 200 and body.strip() == b"OK"
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        """SIGKILL the daemon, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self):
        self.kill9()
        self.start()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no daemon log)"
        return "\n".join(lines[-n:])

    # -- clients ----------------------------------------------------------
    def env(self) -> dict:
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env["SHIBAFU_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.docker_config)
        env["DOCKER_CLI_HINTS"] = "false"
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(self, *args, input=None, timeout=DEFAULT_TIMEOUT, check=False, text=True) -> subprocess.CompletedProcess:
        """Run the real docker CLI against this daemon."""
        return _run(["docker", *args], self.env(), input, timeout, check, text)

    def shibafu(self, *args, input=None, timeout=DEFAULT_TIMEOUT, check=False, text=True) -> subprocess.CompletedProcess:
        """Run the shibafu CLI against this daemon."""
        return _run([self.bin, "-H", self.host, *args], self.env(), input, timeout, check, text)

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.host, timeout=60)

    def api(self, method: str, path: str, body=None, headers=None, timeout=15):
        """One raw HTTP request; returns (status, headers dict, body bytes)."""
        c = UnixHTTPConnection(self.sock, timeout=timeout)
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode() if not isinstance(body, (bytes, str)) else body
            hdrs.setdefault("Content-Type", "application/json")
        c.request(method, path, body=data, headers=hdrs)
        r = c.getresponse()
        out = r.read()
        h = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        return r.status, h, out

    def inspect(self, name: str) -> dict:
        r = self.docker("inspect", "--type", "container", name, check=True)
        return json.loads(r.stdout)[0]

    # -- what a container leaves on the host ---------------------------------
    def container_dirs(self) -> set[str]:
        d = self.data_root / "containers"
        return set(os.listdir(d)) if d.is_dir() else set()

    def mounts_under_tmp(self) -> list[str]:
        """Mount points under our temp dir, as the daemon's mount ns sees them."""
        r = self.ns_run(["cat", "/proc/self/mountinfo"], net=False)
        out = []
        for line in r.stdout.splitlines():
            mp = line.split()[4]
            if mp.startswith(str(self.tmp)):
                out.append(mp)
        return out

    def supervisors(self) -> dict[int, list[str]]:
        """`shibafu supervise` processes that belong to this daemon (argv names our temp dir)."""
        found = {}
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            argv = proc_cmdline(int(p))
            if len(argv) >= 2 and argv[1] == "supervise" and any(str(self.tmp) in a for a in argv):
                found[int(p)] = argv
        return found

    def stop_containers(self):
        """Best-effort: remove every container through the API."""
        if not self.alive():
            return []
        errors = []
        try:
            st, _, body = self.api("GET", "/containers/json?all=1", timeout=30)
            ids = [c["Id"] for c in json.loads(body)] if st == 200 else []
        except Exception as e:
            return [f"list containers: {e!r}"]
        for cid in ids:
            try:
                st, _, body = self.api("DELETE", f"/containers/{cid}?force=1&v=1", timeout=60)
                if st not in (204, 404):
                    errors.append(f"rm {cid[:12]}: {st} {body[:200]!r}")
            except Exception as e:
                errors.append(f"rm {cid[:12]}: {e!r}")
        return errors

    def teardown(self):
        """Tear everything down; keep going past errors and return them all."""
        errors = []
        ids = set(self.container_dirs())
        errors += self.stop_containers()
        self.stop()
        # Supervisors that outlived the daemon (and their containers) go too.
        for pid in self.supervisors():
            try:
                os.kill(pid, signal.SIGKILL)
                errors.append(f"leftover supervisor {pid} killed")
            except ProcessLookupError:
                pass
        ids |= self.container_dirs()
        for cg in container_cgroups(ids):
            errors += kill_cgroup(cg)
        if self.holder and self.holder.poll() is None:
            for mp in sorted(self.mounts_under_tmp(), key=len, reverse=True):
                r = self.ns_run(["umount", "-l", mp], net=False)
                if r.returncode != 0:
                    errors.append(f"umount {mp}: {r.stderr.strip()}")
            self.holder.kill()
            self.holder.wait(timeout=10)
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy(self.log_path, self.log_dir / f"daemon-{self.tmp.name}.log")
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.tmp.exists():
            errors.append(f"could not remove {self.tmp}")
        return errors


def _run(argv, env, input, timeout, check, text) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(argv, env=env, input=input, capture_output=True, timeout=timeout, text=text,
                           stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(argv)} timed out after {timeout}s; stdout={e.stdout!r} stderr={e.stderr!r}")
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}")
    return r


CGROUP_ROOT = "/sys/fs/cgroup"


def container_cgroups(ids) -> list[str]:
    """cgroup directories (any hierarchy) named after one of these container IDs,
    below a shibafu parent."""
    out = []
    for cid in ids:
        if not re.fullmatch(r"[0-9a-f]{12,64}", cid):
            continue
        for pat in (f"{CGROUP_ROOT}/*/shibafu*/**/*{cid}*", f"{CGROUP_ROOT}/*/*shibafu*{cid}*"):
            for p in glob.glob(pat, recursive=True):
                if os.path.isdir(p) and p not in out:
                    out.append(p)
    return out


def shibafu_cgroup_dirs() -> set[str]:
    """All cgroup dirs below any `shibafu*` parent (for leak checks)."""
    out = set()
    for parent in glob.glob(f"{CGROUP_ROOT}/*/shibafu*"):
        for root, dirs, _ in os.walk(parent):
            for d in dirs:
                out.add(os.path.join(root, d))
    return out


def cgroup_procs(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def kill_cgroup(path: str) -> list[str]:
    """Kill what is in a cgroup (thawing it first) and remove it; returns errors."""
    errors = []
    hier = path.split("/")[4] if path.count("/") >= 4 else ""
    freezer = path.replace(f"/{hier}/", "/freezer/", 1) if hier else None
    if freezer and os.path.exists(os.path.join(freezer, "freezer.state")):
        try:
            with open(os.path.join(freezer, "freezer.state"), "w") as f:
                f.write("THAWED")
        except OSError:
            pass
    for pid in cgroup_procs(path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for _ in range(50):
        if not cgroup_procs(path):
            break
        time.sleep(0.1)
    # Remove children first.
    for root, dirs, _ in sorted(os.walk(path, topdown=False), key=lambda t: -len(t[0])):
        try:
            os.rmdir(root)
        except FileNotFoundError:
            pass
        except OSError as e:
            errors.append(f"rmdir {root}: {e}")
    if os.path.exists(path):
        errors.append(f"leftover cgroup {path} could not be removed")
    else:
        errors.insert(0, f"leftover cgroup {path} removed")
    return errors


def host_cgroup_file(pid: int, controller: str, filename: str) -> str:
    """Read a cgroup v1 file of the cgroup `pid` is in (host view)."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                with open(f"{CGROUP_ROOT}/{controller}{path}/{filename}") as g:
                    return g.read().strip()
    raise AssertionError(f"pid {pid} has no {controller} cgroup")


def frame_decode(data: bytes) -> tuple[bytes, bytes]:
    """Split a multiplexed (8-byte header framed) Docker stream into stdout, stderr."""
    out, err = bytearray(), bytearray()
    i = 0
    while i + 8 <= len(data):
        stream, size = data[i], int.from_bytes(data[i + 4:i + 8], "big")
        payload = data[i + 8:i + 8 + size]
        (out if stream == 1 else err).extend(payload)
        i += 8 + size
    return bytes(out), bytes(err)


# ============================================================== images and registries (issue 9)
# For tests/integration/test_images_registry.py and test_images_archive.py.
# Images come from tests/images/make-oci-image.py (OCI layouts built from
# busybox-static) and reach a registry through skopeo; registries and proxies
# run INSIDE the daemon's namespaces (nsenter into its holder), since the
# host's 127.0.0.1 is another network namespace.

MAKE_OCI_IMAGE = REPO / "tests/images/make-oci-image.py"
REGISTRY_PROXY = REPO / "tests/images/registry-proxy.py"
_image_ports = itertools.count(15000)


def image_tools_missing() -> list[str]:
    """Commands the registry/archive tests need that are not installed, as apt package names."""
    need = {"docker-registry": "docker-registry", "skopeo": "skopeo", "htpasswd": "apache2-utils",
            "zstd": "zstd", "busybox": "busybox-static"}
    return sorted({pkg for cmd, pkg in need.items() if shutil.which(cmd) is None})


def next_image_port() -> int:
    """A port for a registry or proxy inside a daemon's netns (nothing else listens there)."""
    return next(_image_ports)


def make_oci_image(layout: Path, tag: str, **opts) -> dict:
    """Run make-oci-image.py (options as keyword args: layers="base,files", compression="zstd",
    platforms="linux/amd64,linux/arm64", name=..., base_extra=..., seed=...); returns its JSON."""
    argv = ["python3", str(MAKE_OCI_IMAGE), str(layout), "--tag", tag]
    for k, v in opts.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"make-oci-image.py failed: {r.stderr}")
    return json.loads(r.stdout)


def host_platform() -> str:
    m = os.uname().machine
    return {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}.get(m, f"linux/{m}")


class Registry:
    """Debian's docker-registry (distribution 2.8) in a daemon's net+mount
    namespaces, on 127.0.0.1:PORT, storing under `root`; optional htpasswd auth
    (bcrypt, `htpasswd -Bbn`); access log kept in self.log_path."""

    def __init__(self, daemon: Daemon, workdir: Path, port: int | None = None,
                 users: dict[str, str] | None = None, readonly: bool = False, root: Path | None = None):
        self.d = daemon
        self.port = port or next_image_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root = Path(root) if root else self.dir / "storage"
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "registry.log"
        self.users = users or {}
        self.proc: subprocess.Popen | None = None
        cfg = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  formatter: text",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.root}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
        ]
        if readonly:
            cfg += ["    readonly:", "      enabled: true"]
        cfg += ["http:", f"  addr: {self.addr}", "  secret: shibafu-tests"]
        if self.users:
            lines = []
            for u, p in self.users.items():
                r = subprocess.run(["htpasswd", "-Bbn", u, p], capture_output=True, text=True, check=True)
                lines.append(r.stdout.strip())
            (self.dir / "htpasswd").write_text("\n".join(lines) + "\n")
            cfg += ["auth:", "  htpasswd:", "    realm: shibafu-tests", f"    path: {self.dir / 'htpasswd'}"]
        self.config = self.dir / "config.yml"
        self.config.write_text("\n".join(cfg) + "\n")

    def start(self):
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(self.d.holder.pid), "-n", "-m", "docker-registry", "serve", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        wait_for(lambda: self.proc.poll() is not None or self.d.ns_run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
             f"http://{self.addr}/v2/"], timeout=10).stdout in ("200", "401"),
            20, 0.1, f"docker-registry on {self.addr}")
        if self.proc.poll() is not None:
            raise AssertionError(f"docker-registry exited: {self.log_path.read_text()[-2000:]}")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def _creds(self) -> list[str]:
        if not self.users:
            return []
        u, p = next(iter(self.users.items()))
        return [f"{u}:{p}"]

    def skopeo(self, *args, timeout=300, check=True) -> subprocess.CompletedProcess:
        """skopeo in the daemon's namespaces (so 127.0.0.1 is this registry's)."""
        r = self.d.ns_run(["skopeo", *args], timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"skopeo {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r

    def push_layout(self, layout: Path, tag: str, ref: str, all_platforms: bool = False, fmt: str | None = None):
        """skopeo copy oci:LAYOUT:TAG docker://ADDR/REF, digests preserved (no recompression)."""
        argv = ["copy", "-q", "--dest-tls-verify=false"]
        if fmt:
            argv += ["--format", fmt]
        else:
            argv.append("--preserve-digests")
        if all_platforms:
            argv.append("--all")
        c = self._creds()
        if c:
            argv += ["--dest-creds", c[0]]
        self.skopeo(*argv, f"oci:{layout}:{tag}", f"docker://{self.addr}/{ref}")

    def raw_manifest(self, ref: str) -> dict:
        """`skopeo inspect --raw` of ADDR/REF (a manifest or an index)."""
        argv = ["inspect", "--raw", "--tls-verify=false"]
        c = self._creds()
        if c:
            argv += ["--creds", c[0]]
        return json.loads(self.skopeo(*argv, f"docker://{self.addr}/{ref}").stdout)

    def digest_of(self, ref: str) -> str:
        """The registry's Docker-Content-Digest for ADDR/REF."""
        accept = ",".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                           "application/vnd.docker.distribution.manifest.list.v2+json",
                           "application/vnd.docker.distribution.manifest.v2+json"])
        repo, _, tag = ref.rpartition(":")
        argv = ["curl", "-sfI", "--max-time", "5", "-H", f"Accept: {accept}"]
        c = self._creds()
        if c:
            argv += ["-u", c[0]]
        r = self.d.ns_run(argv + [f"http://{self.addr}/v2/{repo}/manifests/{tag}"], timeout=20)
        for line in r.stdout.splitlines():
            if line.lower().startswith("docker-content-digest:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError(f"no digest for {ref}: {r.stdout}{r.stderr}")

    def access_lines(self) -> list[str]:
        try:
            return [l for l in self.log_path.read_text(errors="replace").splitlines() if '"GET /v2/' in l
                    or '"HEAD /v2/' in l or '"PUT /v2/' in l or '"POST /v2/' in l or '"PATCH /v2/' in l]
        except OSError:
            return []

    def blob_gets(self, digest: str) -> int:
        """How many GETs of blob `digest` the registry answered with 200/206 (access log)."""
        pat = re.compile(r'"GET /v2/\S+/blobs/' + re.escape(digest) + r' HTTP/[0-9.]+" (200|206) ')
        return sum(1 for l in self.access_lines() if pat.search(l))


class RegistryProxy:
    """tests/images/registry-proxy.py in a daemon's netns, forwarding to `upstream`
    (a Registry); `events()` reads its JSON log."""

    def __init__(self, daemon: Daemon, upstream: Registry, workdir: Path, *opts: str, port: int | None = None):
        self.d = daemon
        self.port = port or next_image_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / f"proxy-{self.port}.log"
        self.log_path.write_text("")
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(daemon.holder.pid), "-n", "--", "python3", str(REGISTRY_PROXY),
             "--listen", self.addr, "--upstream", upstream.addr, "--log", str(self.log_path), *opts],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "listening":
            self.proc.kill()
            raise AssertionError(f"registry proxy did not start: {self.proc.stderr.read()}")

    def events(self) -> list[dict]:
        out = []
        for l in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(l))
            except ValueError:
                pass
        return out

    def requests(self, method: str = "GET", path_suffix: str = "") -> list[dict]:
        return [e for e in self.events() if e["ev"] == "req" and e["method"] == method
                and e["path"].split("?", 1)[0].endswith(path_suffix)]

    def blob_transfers(self, digest: str) -> list[dict]:
        """Every GET of blob `digest`, in order: {"n", "range", "sent"} (bytes of
        body sent, however the transfer ended)."""
        evs = self.events()
        sent: dict[int, int] = {}
        for e in evs:
            if e["ev"] in ("done", "dropped", "gone", "stalled"):
                sent[e["n"]] = max(sent.get(e["n"], 0), e.get("sent", 0))
        return [{"n": e["n"], "range": e["range"], "sent": sent.get(e["n"], 0)}
                for e in evs if e["ev"] == "req" and e["method"] == "GET"
                and e["path"].split("?", 1)[0].endswith(f"/blobs/{digest}")]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def image_refs(docker) -> set[str]:
    """Every REPO:TAG and REPO@DIGEST the daemon lists (`docker images --digests`)."""
    r = docker("images", "--digests", "--format", "{{.Repository}}|{{.Tag}}|{{.Digest}}", check=True)
    out = set()
    for l in r.stdout.splitlines():
        repo, tag, dig = l.split("|")
        if tag and tag != "<none>":
            out.add(f"{repo}:{tag}")
        if dig and dig != "<none>":
            out.add(f"{repo}@{dig}")
    return out


def image_inspect(docker, ref: str) -> dict | None:
    r = docker("image", "inspect", ref)
    return json.loads(r.stdout)[0] if r.returncode == 0 else None


#: `sh -c` run in a pulled fixture image (make-oci-image.py base,files,whiteout):
#: prints one line per layer and what the whiteouts left.
FIXTURE_CHECK = ("cat /etc/fixture-base /layers/files.txt /layers/whiteout.txt; ls /data | tr '\\n' ' '; echo; "
                 "ls /opq | tr '\\n' ' '; echo; test -e /data/doomed.txt && echo doomed-present || echo doomed-gone")


def fixture_check_output(name: str, base_extra: str = "shibafu-fixture-base") -> str:
    return f"{base_extra}\nfiles {name}\nwhiteout {name}\nkeep.txt \nnew.txt \ndoomed-gone\n"


# ============================================================== registry server vs real clients (issue 9, item 7)
# For tests/integration/test_registry_clients.py: `shibafu registry serve` in
# some namespace, dockerd and podman each in a private net+mount namespace of
# their own (as bench/lib.sh runs them), and a loopback forwarder joining one
# namespace's 127.0.0.1:PORT to another's, so one registry serves clients in
# several namespaces. All traffic stays on 127.0.0.1.

#: Packages the peer clients need (command or dpkg name -> apt package).
PEER_CLIENT_PKGS = {"dockerd": "docker.io", "podman": "podman", "runc": "runc", "conmon": "conmon",
                    "dpkg:netavark": "netavark", "skopeo": "skopeo", "htpasswd": "apache2-utils",
                    "busybox": "busybox-static"}


def _pkg_present(key: str) -> bool:
    if key.startswith("dpkg:"):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", key[5:]], capture_output=True, text=True)
        return "install ok installed" in r.stdout
    return shutil.which(key) is not None


def apt_install_missing(want: dict[str, str] = PEER_CLIENT_PKGS) -> str | None:
    """Install the apt packages of `want` whose command (or "dpkg:PKG") is missing, never
    letting a package script start a service (policy-rc.d). Returns None, or why it failed."""
    missing = sorted({pkg for key, pkg in want.items() if not _pkg_present(key)})
    if not missing:
        return None
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                           env=env, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"apt-get install {' '.join(missing)}: {e!r}"
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
    still = sorted({pkg for key, pkg in want.items() if not _pkg_present(key)})
    if r.returncode != 0 or still:
        return f"apt-get install {' '.join(missing)} failed ({r.returncode}): {(r.stderr or r.stdout)[-1500:]}"
    return None


def procs_in_netns_of(pid: int) -> list[int]:
    """PIDs sharing the network namespace of `pid` (itself excepted)."""
    try:
        ns = os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return []
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != pid:
            try:
                if os.readlink(f"/proc/{p}/ns/net") == ns:
                    out.append(int(p))
            except OSError:
                pass
    return out


def procs_naming(text: str) -> list[int]:
    """PIDs whose argv mentions `text` (e.g. a private work dir)."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()
            and any(text in a for a in proc_cmdline(int(p)))]


class NsHolder:
    """A private net+mount namespace held by `sleep infinity` (lo up, and an
    /etc/resolv.conf naming only a loopback nameserver nobody serves, so
    nothing in it can send DNS off the machine), as bench/lib.sh's new_holder."""

    def __init__(self, workdir: Path, nameserver: str = "127.0.0.53"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "resolv.conf").write_text(f"nameserver {nameserver}\n")
        ready = self.dir / "ns-ready"
        ready.unlink(missing_ok=True)
        # The unshared process sets itself up before saying it is ready: an
        # nsenter from outside could race the unshare and act on the host.
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
             'ip link set lo up && mount --bind "$1" /etc/resolv.conf && : > "$2" && exec sleep infinity',
             "holder", str(self.dir / "resolv.conf"), str(ready)], stdin=subprocess.DEVNULL)
        wait_for(lambda: ready.exists() or self.proc.poll() is not None, 10, 0.02, "a namespace holder")
        if self.proc.poll() is not None:
            raise AssertionError(f"namespace holder exited {self.proc.returncode}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def argv(self, argv, net=True, mnt=True) -> list[str]:
        return ["nsenter", "-t", str(self.pid), *(["-n"] if net else []), *(["-m"] if mnt else []), "--", *argv]

    def run(self, argv, net=True, mnt=True, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", DEFAULT_TIMEOUT)
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.argv(argv, net, mnt), **kw)

    def stop(self) -> list[str]:
        """Kill whatever still runs in this netns, then the holder (its mounts go with it)."""
        notes = []
        if self.proc.poll() is None:
            for p in procs_in_netns_of(self.pid):
                try:
                    os.kill(p, signal.SIGKILL)
                    notes.append(f"killed leftover {p} {' '.join(proc_cmdline(p))[:120]}")
                except ProcessLookupError:
                    pass
            self.proc.kill()
        self.proc.wait(timeout=10)
        return notes


_NS_FORWARD_PY = r'''
import ctypes, os, socket, sys, threading
port, target = int(sys.argv[1]), sys.argv[2]
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(64)
# The listening socket stays in this netns; every socket made from now on is
# in the target's.
fd = os.open(target, os.O_RDONLY)
if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
    sys.exit(f"setns: {os.strerror(ctypes.get_errno())}")
os.close(fd)
print("listening", flush=True)

def pipe(a, b):
    try:
        while True:
            d = a.recv(262144)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

def serve(c):
    try:
        u = socket.create_connection(("127.0.0.1", port), timeout=10)
        u.settimeout(None)
    except OSError:
        c.close()
        return
    t = threading.Thread(target=pipe, args=(u, c), daemon=True)
    t.start()
    pipe(c, u)
    t.join()
    c.close()
    u.close()

while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


class NsForward:
    """127.0.0.1:PORT in the netns of `from_pid` forwarded to 127.0.0.1:PORT in
    the netns of `to_pid` (one process: it listens, then setns(2)s)."""

    def __init__(self, from_pid: int, to_pid: int, port: int):
        self.port = port
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(from_pid), "-n", "--", "python3", "-c", _NS_FORWARD_PY, str(port),
             f"/proc/{to_pid}/ns/net"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "listening":
            self.proc.kill()
            raise AssertionError(f"forwarder on port {port} did not start: {self.proc.stderr.read()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class ShibafuRegistry:
    """`shibafu registry serve` on 127.0.0.1:PORT inside the namespaces of
    `holder_pid` (a daemon's holder, an NsHolder), storing under workdir/root;
    optional htpasswd users (bcrypt, `htpasswd -Bbn`)."""

    def __init__(self, holder_pid: int, workdir: Path, port: int | None = None,
                 users: dict[str, str] | None = None):
        self.holder_pid = holder_pid
        self.port = port or next_image_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root = self.dir / "root"
        self.log_path = self.dir / "registry.log"
        self.users = users or {}
        self.htpasswd = None
        if self.users:
            lines = [subprocess.run(["htpasswd", "-Bbn", u, p], capture_output=True, text=True,
                                    check=True).stdout.strip() for u, p in self.users.items()]
            self.htpasswd = self.dir / "htpasswd"
            self.htpasswd.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def ns(self, argv, timeout=DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", "-t", str(self.holder_pid), "-n", "-m", "--", *argv],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self):
        argv = [shibafu_bin(), "registry", "serve", "--addr", self.addr, "--root", str(self.root)]
        if self.htpasswd:
            argv += ["--htpasswd", str(self.htpasswd)]
        logf = open(self.log_path, "ab")
        # nsenter execs the server: self.proc is the registry itself.
        self.proc = subprocess.Popen(["nsenter", "-t", str(self.holder_pid), "-n", "-m", "--", *argv],
                                     stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        wait_for(lambda: self.proc.poll() is not None or self.ns(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
             f"http://{self.addr}/v2/"], timeout=10).stdout in ("200", "401"),
            30, 0.1, f"shibafu registry on {self.addr}")
        if self.proc.poll() is not None:
            raise AssertionError(f"shibafu registry exited {self.proc.returncode}: {self.log_tail()}")
        return self

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode if self.proc else None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no registry log)"

    def skopeo(self, *args, timeout=120, check=True) -> subprocess.CompletedProcess:
        """skopeo in the registry's namespaces, with the first user's credentials if any."""
        r = self.ns(["skopeo", *args], timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"skopeo {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r

    def _creds(self) -> list[str]:
        if not self.users:
            return []
        u, p = next(iter(self.users.items()))
        return ["--creds", f"{u}:{p}"]

    def inspect(self, ref: str) -> dict:
        """`skopeo inspect` of ADDR/REF (REF without the address)."""
        return json.loads(self.skopeo("inspect", "--tls-verify=false", *self._creds(),
                                      f"docker://{self.addr}/{ref}").stdout)

    def raw_manifest(self, ref: str) -> dict:
        return json.loads(self.skopeo("inspect", "--raw", "--tls-verify=false", *self._creds(),
                                      f"docker://{self.addr}/{ref}").stdout)

    def tags(self, repo: str) -> list[str]:
        return json.loads(self.skopeo("list-tags", "--tls-verify=false", *self._creds(),
                                      f"docker://{self.addr}/{repo}").stdout)["Tags"]


def _rmdir_tree(path: str):
    for root, _, _ in sorted(os.walk(path, topdown=False), key=lambda t: -len(t[0])):
        try:
            os.rmdir(root)
        except OSError:
            pass


class PeerEngine:
    """Shared part of Dockerd and Podman: a work dir, a holder, and the cgroup
    parents (docker/, libpod_parent/) the peer creates, removed at the end
    when they did not exist before and are empty."""

    CGROUP_PARENTS = ("docker", "libpod_parent")

    def __init__(self, prefix: str):
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.new_cgroup_parents = [p for c in glob.glob(f"{CGROUP_ROOT}/*/") for p in
                                   (os.path.join(c, n) for n in self.CGROUP_PARENTS) if not os.path.exists(p)]
        self.holder = NsHolder(self.dir / "ns")

    def _finish(self, notes: list[str]) -> list[str]:
        for p in procs_naming(str(self.dir)):
            try:
                os.kill(p, signal.SIGKILL)
                notes.append(f"killed leftover {p} {' '.join(proc_cmdline(p))[:120]}")
            except ProcessLookupError:
                pass
        notes += self.holder.stop()
        for d in self.new_cgroup_parents:
            if os.path.isdir(d):
                _rmdir_tree(d)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.dir.exists():
            time.sleep(1)
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.dir.exists():
            notes.append(f"could not remove {self.dir}")
        return notes


class Dockerd(PeerEngine):
    """dockerd (apt docker.io) in its own net+mount namespace with its own data
    and exec roots, `--dns 127.0.0.53` (a loopback nobody serves), and the
    docker CLI bound to it with a private DOCKER_CONFIG (bench/lib.sh's start_docker)."""

    def __init__(self):
        super().__init__("shibafu-dockerd-")
        self.sock = str(self.dir / "docker.sock")
        self.config = self.dir / "cfg"
        self.config.mkdir()
        self.log_path = self.dir / "dockerd.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90):
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.holder.argv(["dockerd", "--host", f"unix://{self.sock}", "--data-root", str(self.dir / "data"),
                              "--exec-root", str(self.dir / "exec"), "--pidfile", str(self.dir / "dockerd.pid"),
                              "--dns", "127.0.0.53"]),
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            try:
                c = UnixHTTPConnection(self.sock, timeout=2)
                c.request("GET", "/_ping")
                ok = c.getresponse().status == 200
                c.close()
                return ok
            except OSError:
                return False

        wait_for(up, timeout, 0.1, "dockerd to answer /_ping")
        return self

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no dockerd log)"

    def env(self) -> dict:
        env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}", DOCKER_CONFIG=str(self.config),
                   DOCKER_CLI_HINTS="false")
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(self, *args, input=None, timeout=DEFAULT_TIMEOUT, check=False) -> subprocess.CompletedProcess:
        return _run(["docker", *args], self.env(), input, timeout, check, True)

    def teardown(self) -> list[str]:
        notes = []
        if self.proc and self.proc.poll() is None:
            try:
                ids = self.docker("ps", "-aq", timeout=30).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, timeout=60)
            except Exception as e:  # keep tearing down
                notes.append(f"removing dockerd containers: {e!r}")
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                notes.append("dockerd ignored SIGTERM for 30 s")
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self._finish(notes)


class Podman(PeerEngine):
    """Podman (apt podman runc conmon netavark) in its own net+mount namespace:
    its own --root/--runroot/--tmpdir, auth file, /dev/shm, /run/containers and
    network config dir, and DESIGN-NOTES' containers.conf (runc, cgroupfs,
    netavark, pull_policy never), as bench/lib.sh's start_podman."""

    def __init__(self):
        super().__init__("shibafu-podman-")
        for d in ("root", "run", "tmp", "networks", "netrun", "varlib"):
            (self.dir / d).mkdir()
        self.auth_file = self.dir / "auth.json"
        self.auth_file.write_text('{"auths": {}}\n')
        self.conf = self.dir / "containers.conf"
        self.conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            'log_driver = "k8s-file"\n'
            "[network]\n"
            'network_backend = "netavark"\n'
            f'network_config_dir = "{self.dir / "networks"}"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.dir / "events.log"}"\n'
            'pull_policy = "never"\n')
        # podman's SHM locks live in /dev/shm, its IPAM db and default auth
        # file under /run/containers, its blob info cache (which registry has
        # which blob) in /var/lib/containers/cache: private copies of all.
        r = self.holder.run(["sh", "-c", f"mount -t tmpfs -o size=64m tmpfs /dev/shm && "
                                         f"mkdir -p /run/containers && mount -t tmpfs tmpfs /run/containers && "
                                         f"mkdir -p /run/containers/networks && "
                                         f"mount --bind '{self.dir / 'netrun'}' /run/containers/networks && "
                                         f"mkdir -p /var/lib/containers && "
                                         f"mount --bind '{self.dir / 'varlib'}' /var/lib/containers"],
                            net=False)
        if r.returncode != 0:
            self.teardown()
            raise AssertionError(f"podman namespace set-up failed: {r.stderr}")

    def podman(self, *args, input=None, timeout=DEFAULT_TIMEOUT, check=False) -> subprocess.CompletedProcess:
        argv = ["env", f"CONTAINERS_CONF={self.conf}", f"REGISTRY_AUTH_FILE={self.auth_file}",
                "podman", "--root", str(self.dir / "root"), "--runroot", str(self.dir / "run"),
                "--tmpdir", str(self.dir / "tmp"), *args]
        try:
            r = self.holder.run(argv, input=input, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"podman {' '.join(args)} timed out after {timeout}s; stderr={e.stderr!r}")
        if check and r.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {r.returncode}\nstdout: {r.stdout}\n"
                                 f"stderr: {r.stderr}")
        return r

    def teardown(self) -> list[str]:
        notes = []
        if self.holder.proc.poll() is None and (self.dir / "root" / "libpod").exists():
            try:
                self.podman("rm", "-a", "-f", "-t", "0", timeout=60)
            except Exception as e:  # keep tearing down
                notes.append(f"podman rm -a: {e!r}")
        return self._finish(notes)
