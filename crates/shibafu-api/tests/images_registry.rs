//! Pull, push, save, load and login over HTTP and with the real docker CLI
//! and docker-py, on the fake backend's pretend registries: Docker's JSON
//! message framing (one `\r\n` line per message, each flushed as it comes),
//! errors as HTTP statuses before the first byte and in-stream after it,
//! `X-Registry-Auth` decoding, tar streams both ways.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{assert_ok, request, stderr, stdout, Resp, TestServer};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// URL-safe base64 of `s` (what the docker CLI puts in X-Registry-Auth).
fn b64url(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Splits a JSON message body into lines, checking dockerd's `\r\n` ends.
fn lines(r: &Resp) -> Vec<serde_json::Value> {
    let text = r.text();
    assert!(text.ends_with("\r\n"), "{text:?}");
    text.split_terminator("\r\n")
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

fn statuses(v: &[serde_json::Value]) -> Vec<String> {
    v.iter()
        .map(|m| match m["id"].as_str() {
            Some(id) => format!("{id}: {}", m["status"].as_str().unwrap_or_default()),
            None => m["status"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

async fn post(s: &TestServer, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    request(&s.sock, "POST", path, headers, Bytes::copy_from_slice(body)).await
}

#[tokio::test]
async fn pull_streams_one_flushed_line_per_message() {
    let s = TestServer::start().await;
    let stream = UnixStream::connect(&s.sock).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/v1.50/images/create?fromImage=docker.io%2Fgated%2Fapp&tag=v1")
        .header("Host", "docker")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let mut body = resp.into_body();
    // The backend is held after its first message: that line must already
    // be on the wire, whole.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first message was not flushed")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&first).unwrap(),
        "{\"status\":\"Pulling from gated/app\",\"id\":\"v1\",\"progressDetail\":{}}\r\n"
    );
    s.fake.reg.gate.add_permits(1);
    let mut rest = first.to_vec();
    rest.extend_from_slice(&body.collect().await.unwrap().to_bytes());
    let r = Resp {
        status: hyper::StatusCode::OK,
        headers: Default::default(),
        body: Bytes::from(rest),
    };
    let msgs = lines(&r);
    let st = statuses(&msgs);
    assert!(
        st.iter().any(|l| l.ends_with(": Pulling fs layer")),
        "{st:?}"
    );
    let dl = msgs
        .iter()
        .find(|m| m["status"] == "Downloading")
        .expect("a progress line");
    assert!(dl["id"].as_str().unwrap().len() == 12);
    assert!(dl["progressDetail"]["total"].as_i64().unwrap() > 0);
    assert!(dl["progress"].as_str().unwrap().starts_with('['));
    assert!(st[st.len() - 2].starts_with("Digest: sha256:"), "{st:?}");
    assert_eq!(
        st.last().unwrap(),
        "Status: Downloaded newer image for gated/app:v1"
    );
    assert_eq!(
        s.fake.reg.pulls.lock()[0].reference,
        "docker.io/gated/app:v1",
        "the name is passed as the client qualified it"
    );
    let r = s.request("GET", "/images/gated/app:v1/json", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn pull_references_platform_and_auth_reach_the_backend() {
    let s = TestServer::start().await;
    let auth = b64url(
        r#"{"username":"alice","password":"secret","serveraddress":"private.example:5000"}"#,
    );
    let r = post(
        &s,
        "/images/create?fromImage=private.example%3A5000%2Fteam%2Fapp&tag=sha256%3Aabc&platform=linux%2Farm64",
        &[("X-Registry-Auth", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = s.fake.reg.pulls.lock().last().cloned().unwrap();
    assert_eq!(p.reference, "private.example:5000/team/app@sha256:abc");
    assert_eq!(p.platform.as_deref(), Some("linux/arm64"));
    let a = p.auth.unwrap();
    assert_eq!(a.username.as_deref(), Some("alice"));
    assert_eq!(a.serveraddress.as_deref(), Some("private.example:5000"));

    // Unpadded base64 too (docker-py strips nothing, Go pads; accept both).
    let r = post(
        &s,
        "/images/create?fromImage=private.example%3A5000%2Fteam%2Fapp&tag=v2",
        &[("X-Registry-Auth", auth.trim_end_matches('='))],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A value that does not decode is ignored, as dockerd does for pulls:
    // public images still pull, private ones are refused by the registry.
    let r = post(
        &s,
        "/images/create?fromImage=alpine&tag=3",
        &[("X-Registry-Auth", "%%%not-base64")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(s.fake.reg.pulls.lock().last().unwrap().auth.is_none());
    let r = post(
        &s,
        "/images/create?fromImage=private.example%3A5000%2Fteam%2Fapp&tag=v3",
        &[("X-Registry-Auth", "e30")],
        b"",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("unauthorized: authentication required"));
}

#[tokio::test]
async fn pull_failures_before_the_first_byte_are_http_errors_after_it_in_stream() {
    let s = TestServer::start().await;
    for (path, status, want) in [
        (
            "/images/create?fromImage=nosuch&tag=latest",
            404,
            "pull access denied for nosuch, repository does not exist",
        ),
        (
            "/images/create?fromImage=alpine&tag=nosuchtag",
            404,
            "manifest for alpine:nosuchtag not found: manifest unknown",
        ),
        (
            "/images/create?fromImage=alpine&tag=1&platform=windows%2Fs390x",
            404,
            "no matching manifest for windows/s390x",
        ),
    ] {
        let r = s.request("POST", path, "").await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.header("Content-Type"), "application/json");
        assert!(
            r.json()["message"].as_str().unwrap().contains(want),
            "{}",
            r.text()
        );
    }
    let r = s
        .request("POST", "/images/create?fromImage=broken%2Fapp&tag=1", "")
        .await;
    assert_eq!(r.status, 200);
    let msgs = lines(&r);
    let last = msgs.last().unwrap();
    let msg = last["errorDetail"]["message"].as_str().unwrap();
    assert!(msg.contains("digest mismatch"), "{last}");
    assert_eq!(last["error"], msg, "the deprecated `error` duplicates it");
    assert!(msgs.len() > 2, "progress came before the error");
    let r = s.request("GET", "/images/broken/app:1/json", "").await;
    assert_eq!(r.status, 404, "nothing half-stored");

    // A second pull of the same image is up to date.
    let r = s
        .request("POST", "/images/create?fromImage=nginx&tag=1", "")
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .request("POST", "/images/create?fromImage=nginx&tag=1", "")
        .await;
    assert_eq!(
        statuses(&lines(&r)).last().unwrap(),
        "Status: Image is up to date for nginx:1"
    );
}

#[tokio::test]
async fn push_streams_progress_and_ends_with_the_aux_line() {
    let s = TestServer::start().await;
    // No X-Registry-Auth: dockerd 25+ pushes anonymously.
    let r = s
        .request("POST", "/v1.50/images/busybox/push?tag=latest", "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), "application/json");
    let msgs = lines(&r);
    let st = statuses(&msgs);
    assert_eq!(
        st[0],
        "The push refers to repository [docker.io/library/busybox]"
    );
    assert!(st.iter().any(|l| l.ends_with(": Pushed")), "{st:?}");
    assert!(
        st.iter().any(|l| l.starts_with("latest: digest: sha256:")),
        "{st:?}"
    );
    let aux = &msgs.last().unwrap()["aux"];
    assert_eq!(aux["Tag"], "latest");
    assert!(aux["Digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(aux["Size"], 527);
    let p = s.fake.reg.pushes.lock().last().cloned().unwrap();
    assert_eq!(
        (p.name.as_str(), p.tag.as_deref()),
        ("busybox", Some("latest"))
    );
    assert!(p.auth.is_none());

    // Names with a registry and a port; credentials in the header.
    let r = s
        .request(
            "POST",
            "/images/busybox/tag?repo=private.example%3A5000%2Fme%2Fbb&tag=v1",
            "",
        )
        .await;
    assert_eq!(r.status, 201);
    let auth = b64url(r#"{"username":"alice","password":"secret"}"#);
    let r = post(
        &s,
        "/images/private.example:5000/me/bb/push?tag=v1",
        &[("X-Registry-Auth", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(lines(&r).last().unwrap()["aux"]["Tag"], "v1");
    assert_eq!(
        s.fake.reg.pushes.lock().last().unwrap().name,
        "private.example:5000/me/bb"
    );

    // Without credentials the registry refuses after the stream started.
    let r = s
        .request("POST", "/images/private.example:5000/me/bb/push?tag=v1", "")
        .await;
    assert_eq!(r.status, 200);
    let last = lines(&r).last().cloned().unwrap();
    assert_eq!(
        last["errorDetail"]["message"],
        "unauthorized: authentication required"
    );

    // Pre-header clients sent the auth config as the body.
    let r = s
        .request(
            "POST",
            "/images/private.example:5000/me/bb/push?tag=v1",
            r#"{"username":"alice","password":"secret"}"#,
        )
        .await;
    assert!(
        lines(&r).last().unwrap().get("aux").is_some(),
        "{}",
        r.text()
    );
    let r = s.request("POST", "/images/busybox/push", "{not json").await;
    assert_eq!(r.status, 400);

    let r = s
        .request("POST", "/images/nosuch/push?tag=latest", "")
        .await;
    assert_eq!(r.status, 404);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("An image does not exist locally with the tag: nosuch"));
    let r = s
        .request("POST", "/images/busybox/push?tag=latest&platform=linux", "")
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // One platform per image: choosing one is refused, saying why.
    let r = s
        .request(
            "POST",
            "/images/busybox/push?tag=latest&platform=%7B%22os%22%3A%22linux%22%7D",
            "",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("one platform per image"));
}

#[tokio::test]
async fn save_streams_a_tar_and_load_reads_it_back() {
    let s = TestServer::start().await;
    for path in [
        "/images/get?names=busybox",
        "/v1.50/images/busybox/get",
        "/images/get?names=busybox%3Alatest",
    ] {
        let r = s.request("GET", path, "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("Content-Type"), "application/x-tar");
        let mut ar = tar::Archive::new(&r.body[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string())
            .collect();
        assert!(names.contains(&"manifest.json".to_string()), "{names:?}");
        assert!(names.contains(&"oci-layout".to_string()), "{names:?}");
    }
    let r = s
        .request("GET", "/images/get?names=busybox&names=nosuch", "")
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = s.request("GET", "/images/get", "").await;
    assert_eq!(r.status, 400);

    let tarball = s.request("GET", "/images/get?names=busybox", "").await.body;
    assert_eq!(s.request("DELETE", "/images/busybox", "").await.status, 200);
    let r = post(
        &s,
        "/images/load?quiet=1",
        &[("Content-Type", "application/x-tar")],
        &tarball,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), "application/json");
    let msgs = lines(&r);
    assert_eq!(msgs.len(), 1, "quiet: no progress");
    assert_eq!(msgs[0]["stream"], "Loaded image: busybox:latest\n");
    assert_eq!(
        s.request("GET", "/images/busybox/json", "").await.status,
        200
    );
    assert_eq!(
        *s.fake.reg.load_bodies.lock().last().unwrap(),
        tarball.len()
    );

    // Not quiet: progress first; any content type is read.
    let r = post(
        &s,
        "/images/load",
        &[("Content-Type", "application/octet-stream")],
        &tarball,
    )
    .await;
    let msgs = lines(&r);
    assert_eq!(msgs[0]["status"], "Loading layer");
    assert_eq!(
        msgs.last().unwrap()["stream"],
        "Loaded image: busybox:latest\n"
    );

    // Garbage: 200 and the error in-stream, as dockerd.
    let r = post(
        &s,
        "/images/load?quiet=0",
        &[],
        b"this is not a tar archive at all",
    )
    .await;
    assert_eq!(r.status, 200);
    let msgs = lines(&r);
    assert!(
        msgs.last().unwrap()["errorDetail"]["message"]
            .as_str()
            .unwrap()
            .contains("archive"),
        "{}",
        r.text()
    );
    let r = post(&s, "/images/load?quiet=maybe", &[], &tarball).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn auth_checks_credentials() {
    let s = TestServer::start().await;
    let r = s
        .request(
            "POST",
            "/v1.50/auth",
            r#"{"username":"alice","password":"secret","serveraddress":"localhost:5999"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), "application/json");
    assert_eq!(r.json(), serde_json::json!({"Status": "Login Succeeded"}));
    assert_eq!(
        s.fake.reg.logins.lock()[0].serveraddress.as_deref(),
        Some("localhost:5999")
    );
    let r = s
        .request("POST", "/auth", r#"{"username":"bob","password":"pw"}"#)
        .await;
    assert_eq!(r.json()["IdentityToken"], "tok-bob");
    let r = s
        .request(
            "POST",
            "/auth",
            r#"{"username":"alice","password":"wrong","serveraddress":"localhost:5999"}"#,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["message"],
        "Get \"https://localhost:5999/v2/\": unauthorized: incorrect username or password"
    );
    let r = s.request("POST", "/auth", "").await;
    assert_eq!(r.status, 400);
    let r = s.request("GET", "/auth", "").await;
    assert_eq!(r.status, 404);
}

fn have_docker() -> bool {
    std::process::Command::new("docker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cli_pull_push_save_load_login() {
    assert!(have_docker(), "the docker CLI is required for these tests");
    let s = TestServer::start().await;
    let o = s.docker(&["pull", "alpine"], None).await;
    assert_ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains("Status: Downloaded newer image for alpine:latest"),
        "{out}"
    );
    assert!(out.contains("Digest: sha256:"), "{out}");
    assert!(
        out.trim_end().ends_with("docker.io/library/alpine:latest"),
        "{out}"
    );
    let o = s.docker(&["pull", "-q", "nginx:1.25"], None).await;
    assert_ok(&o);
    assert_eq!(stdout(&o), "docker.io/library/nginx:1.25\n");
    let o = s.docker(&["pull", "broken/app"], None).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("digest mismatch"), "{}", stderr(&o));
    // (A pull refused with 401 makes the docker CLI prompt for a login, as
    // with dockerd: not driven here.)

    // Login stores credentials in DOCKER_CONFIG; pull and push then send them.
    let o = s
        .docker(
            &[
                "login",
                "-u",
                "alice",
                "--password-stdin",
                "private.example:5000",
            ],
            Some(b"secret\n"),
        )
        .await;
    assert_ok(&o);
    assert!(stdout(&o).contains("Login Succeeded"), "{}", stdout(&o));
    let o = s
        .docker(&["pull", "private.example:5000/team/app:v1"], None)
        .await;
    assert_ok(&o);
    let a = s
        .fake
        .reg
        .pulls
        .lock()
        .last()
        .unwrap()
        .auth
        .clone()
        .unwrap();
    assert_eq!(a.username.as_deref(), Some("alice"));
    let o = s
        .docker(
            &["login", "-u", "alice", "-p", "nope", "private.example:5000"],
            None,
        )
        .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("incorrect username or password"),
        "{}",
        stderr(&o)
    );

    assert_ok(
        &s.docker(&["tag", "busybox", "private.example:5000/me/bb:v2"], None)
            .await,
    );
    let o = s
        .docker(&["push", "private.example:5000/me/bb:v2"], None)
        .await;
    assert_ok(&o);
    assert!(stdout(&o).contains("v2: digest: sha256:"), "{}", stdout(&o));
    let o = s.docker(&["push", "nosuch/thing:1"], None).await;
    assert_eq!(o.status.code(), Some(1));

    let file = s.dir.path().join("bb.tar");
    let o = s
        .docker(&["save", "-o", file.to_str().unwrap(), "busybox"], None)
        .await;
    assert_ok(&o);
    assert_ok(&s.docker(&["rmi", "busybox"], None).await);
    let o = s
        .docker(&["load", "-i", file.to_str().unwrap()], None)
        .await;
    assert_ok(&o);
    assert!(
        stdout(&o).contains("Loaded image: busybox:latest"),
        "{}",
        stdout(&o)
    );
    let o = s.docker(&["load"], Some(b"garbage")).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("archive"), "{}", stderr(&o));

    // run of a missing image pulls it first.
    let o = s
        .docker(
            &["run", "--rm", "localhost:5999/tools:1", "echo", "hi"],
            None,
        )
        .await;
    assert_ok(&o);
    assert!(
        stderr(&o).contains("Unable to find image 'localhost:5999/tools:1' locally"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "hi\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_pull_push_save_load() {
    let s = TestServer::start().await;
    let o = s
        .python(
            r#"
img = c.images.pull("alpine", tag="3.19")
print(img.tags)
lines = list(c.api.pull("nginx", tag="1", stream=True, decode=True))
print(lines[-1]["status"])
out = list(c.api.push("busybox", tag="latest", stream=True, decode=True))
print(out[-1]["aux"]["Tag"])
data = b"".join(c.images.get("busybox").save())
print(data[:0], len(data) > 1024)
c.images.remove("busybox")
# Saved by ID (docker-py's default): loaded back untagged, as with dockerd.
print([i.tags for i in c.images.load(data)])
print(list(c.api.pull("broken/app", tag="1", stream=True, decode=True))[-1]["error"][:15])
try:
    c.images.pull("broken/app", tag="1")
except docker.errors.ImageNotFound as e:
    print("ImageNotFound")
print(c.login("alice", "secret", registry="localhost:5999")["Status"])
"#,
        )
        .await;
    assert_ok(&o);
    assert_eq!(
        stdout(&o),
        "['alpine:3.19']\nStatus: Downloaded newer image for nginx:1\nlatest\nb'' True\n[[]]\nfailed to regis\nImageNotFound\nLogin Succeeded\n",
        "{}",
        stderr(&o)
    );
}
