//! The Python docker SDK (7.x) against the HTTP layer on the fake backend.

mod common;

use common::{assert_ok, stdout, TestServer};

async fn py(s: &TestServer, code: &str) -> String {
    let o = s.python(code).await;
    assert_ok(&o);
    stdout(&o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_version_and_lists() {
    let s = TestServer::start().await;
    let out = py(
        &s,
        r#"
print(c.ping())
print(c.version()["ApiVersion"])
print(c.api.api_version)
print(c.info()["Name"])
print([t for i in c.images.list() for t in i.tags])
print(c.volumes.create("pyvol", labels={"a": "b"}).name)
print([v.name for v in c.volumes.list()])
"#,
    )
    .await;
    assert_eq!(
        out,
        "True\n1.50\n1.50\nfakehost\n['busybox:latest']\npyvol\n['pyvol']\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_detached_wait_logs_and_run_foreground() {
    let s = TestServer::start().await;
    let out = py(
        &s,
        r#"
ctr = c.containers.run("busybox", ["echo", "py", "hello"], detach=True, name="pyrun")
print(ctr.wait())
print(ctr.logs())
print(c.containers.get("pyrun").attrs["HostConfig"]["LogConfig"]["Type"])
print(c.containers.run("busybox", ["echo", "direct"], remove=True))
print([x.name for x in c.containers.list(all=True, filters={"status": "exited"})])
try:
    c.containers.run("busybox", ["exit", "5"])
except docker.errors.ContainerError as e:
    print("ContainerError", e.exit_status)
"#,
    )
    .await;
    assert_eq!(
        out,
        "{'StatusCode': 0}\nb'py hello\\n'\njson-file\nb'direct\\n'\n['pyrun']\nContainerError 5\n",
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_socket_stream_and_exec() {
    let s = TestServer::start().await;
    let out = py(
        &s,
        r#"
ctr = c.containers.create("busybox", ["cat"], stdin_open=True, name="pycat")
sock = c.api.attach_socket(ctr.id, params={"stdin": 1, "stdout": 1, "stream": 1})
ctr.start()
sock._sock.sendall(b"via socket\n")
data = b""
deadline = time.time() + 5
while len(data) < 19 and time.time() < deadline:
    data += sock._sock.recv(4096)
print(data)
sock._sock.shutdown(1)
print(ctr.wait())

echo = c.containers.create("busybox", ["echo", "streamed"], name="pyecho")
gen = echo.attach(stream=True, stdout=True, stderr=True)
echo.start()
print(b"".join(gen))

web = c.containers.run("busybox", ["sleep", "30"], detach=True, name="pyweb")
r = web.exec_run(["echo", "exec", "out"])
print(r.exit_code, r.output)
r = web.exec_run(["exit", "9"])
print(r.exit_code)
r = web.exec_run(["err", "bad"], demux=True)
print(r.output)
print(web.stats(stream=False)["name"])
print(web.top()["Titles"][1])
web.kill()
print(web.wait()["StatusCode"])
web.remove()
try:
    c.containers.get("pyweb")
except docker.errors.NotFound as e:
    print("NotFound")
"#,
    )
    .await;
    assert_eq!(
        out,
        "b'\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x0bvia socket\\n'\n{'StatusCode': 0}\nb'streamed\\n'\n0 b'exec out\\n'\n9\n(None, b'bad\\n')\n/pyweb\nPID\n137\nNotFound\n",
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_errors_and_archives() {
    let s = TestServer::start().await;
    let out = py(
        &s,
        r#"
import io, tarfile
for call in (lambda: c.images.get("nope"), lambda: c.images.pull("nope")):
    try:
        call()
    except docker.errors.ImageNotFound as e:
        print("ImageNotFound")
img = c.images.get("busybox")
print(img.tag("py/tagged", "v1"))
print(sorted(c.images.get("py/tagged:v1").tags))
ctr = c.containers.create("busybox", ["sleep", "5"], name="pyfs")
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    info = tarfile.TarInfo("hello.txt"); info.size = 3
    t.addfile(info, io.BytesIO(b"abc"))
print(ctr.put_archive("/tmp", buf.getvalue()))
bits, stat = ctr.get_archive("/tmp/hello.txt")
print(stat["name"], stat["size"])
with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as t:
    print(t.extractfile("hello.txt").read())
"#,
    )
    .await;
    assert_eq!(
        out,
        "ImageNotFound\nImageNotFound\nTrue\n['busybox:latest', 'py/tagged:v1']\nTrue\nhello.txt 3\nb'abc'\n",
        "{out}"
    );
}
