//! The HTTP layer driven with raw HTTP: status codes, headers, error shapes,
//! version-prefix routing, query parsing, framing and hijacking.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{deframe, request, TestServer};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn enc(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

async fn create(s: &TestServer, name: &str, body: serde_json::Value) -> String {
    let r = s
        .request(
            "POST",
            &format!("/containers/create?name={name}"),
            &body.to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["Id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn ping_head_and_get_carry_docker_headers() {
    let s = TestServer::start().await;
    for path in ["/_ping", "/v1.50/_ping", "/v1.24/_ping"] {
        let r = s.request("HEAD", path, "").await;
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty(), "HEAD must have no body");
        assert_eq!(r.header("Api-Version"), "1.50");
        assert_eq!(r.header("Builder-Version"), "1");
        assert_eq!(r.header("Swarm"), "inactive");
        assert_eq!(r.header("Ostype"), "linux");
        assert_eq!(r.header("Docker-Experimental"), "false");
        assert!(
            r.header("Server").starts_with("shibafu/"),
            "{}",
            r.header("Server")
        );
        let r = s.request("GET", path, "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "OK");
    }
}

#[tokio::test]
async fn version_prefix_is_optional_and_bounded() {
    let s = TestServer::start().await;
    for path in [
        "/version",
        "/v1.50/version",
        "/v1.44/version",
        "/v1.24/version",
    ] {
        let r = s.request("GET", path, "").await;
        assert_eq!(r.status, 200, "{path}");
        let v = r.json();
        assert_eq!(v["ApiVersion"], "1.50");
        assert_eq!(v["MinAPIVersion"], "1.24");
        let engine = &v["Components"][0];
        assert_eq!(engine["Name"], "Engine");
        assert_eq!(engine["Details"]["ApiVersion"], "1.50");
    }
    let r = s.request("GET", "/v1.51/version", "").await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"].as_str().unwrap().contains("too new"),
        "{}",
        r.text()
    );
    let r = s.request("GET", "/v1.12/containers/json", "").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("too old"));
    // Common headers are on errors too.
    assert_eq!(r.header("Api-Version"), "1.50");
}

#[tokio::test]
async fn errors_have_docker_shape() {
    let s = TestServer::start().await;
    for (method, path) in [
        ("GET", "/nope"),
        ("GET", "/v1.50/nope/x"),
        ("GET", "/containers/x/start"),
        ("PATCH", "/containers/json"),
    ] {
        let r = s.request(method, path, "").await;
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(r.header("Content-Type"), "application/json");
        assert_eq!(r.json(), serde_json::json!({"message": "page not found"}));
    }
    let r = s.request("GET", "/containers/ghost/json", "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Content-Type"), "application/json");
    assert_eq!(r.json()["message"], "No such container: ghost");

    let r = s.request("POST", "/containers/create", "{not json").await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{}",
        r.text()
    );
    let r = s.request("POST", "/containers/create", "").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("config cannot be empty"));
    let r = s
        .request(
            "POST",
            "/containers/create?name=bad%20name",
            r#"{"Image":"busybox"}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("Invalid container name"));
    let r = s
        .request("POST", "/containers/create", r#"{"Image":"ghost"}"#)
        .await;
    assert_eq!(r.status, 404);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("No such image"));

    let r = s.request("GET", "/containers/json?all=maybe", "").await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"].as_str().unwrap().contains("\"all\""),
        "{}",
        r.text()
    );
    let r = s
        .request(
            "GET",
            &format!("/containers/json?filters={}", enc("{\"status\":")),
            "",
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("invalid filters"));
    let r = s
        .request("POST", "/containers/x/resize?h=abc&w=80", "")
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("\"h\""));
    let r = s
        .request("POST", "/containers/x/wait?condition=whenever", "")
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("invalid condition"));
}

#[tokio::test]
async fn container_lifecycle_statuses_and_filters_in_both_shapes() {
    let s = TestServer::start().await;
    let sleeper = create(
        &s,
        "sleeper",
        serde_json::json!({"Image": "busybox", "Cmd": ["sleep", "30"]}),
    )
    .await;
    create(
        &s,
        "idle",
        serde_json::json!({"Image": "busybox", "Cmd": ["echo", "x"]}),
    )
    .await;
    let r = s
        .request(
            "POST",
            &format!("/v1.50/containers/{}/start", &sleeper[..12]),
            "",
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let r = s.request("POST", "/containers/sleeper/start", "").await;
    assert_eq!(r.status, 304, "already started");
    assert!(r.body.is_empty());

    for filters in [
        r#"{"status":{"running":true}}"#,
        r#"{"status":["running"]}"#,
    ] {
        let r = s
            .request(
                "GET",
                &format!("/containers/json?all=1&filters={}", enc(filters)),
                "",
            )
            .await;
        assert_eq!(r.status, 200);
        let list = r.json();
        let names: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["Names"][0].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, vec!["/sleeper"], "{filters}");
    }
    let r = s.request("GET", "/containers/json?all=True", "").await;
    assert_eq!(
        r.json().as_array().unwrap().len(),
        2,
        "docker-py's True is a boolean"
    );
    let r = s.request("GET", "/containers/json?all=1&limit=1", "").await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);

    let r = s
        .request("POST", "/containers/sleeper/rename?name=renamed", "")
        .await;
    assert_eq!(r.status, 204);
    let r = s
        .request("POST", "/containers/renamed/resize?h=40&w=120", "")
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .request("GET", "/containers/renamed/top?ps_args=aux", "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Titles"][1], "PID");
    let r = s
        .request(
            "POST",
            "/containers/renamed/update",
            r#"{"Memory": 1000000}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Warnings"], serde_json::json!([]));
    let r = s.request("DELETE", "/containers/renamed", "").await;
    assert_eq!(r.status, 409, "running container needs force");
    let r = s.request("POST", "/containers/renamed/stop?t=1", "").await;
    assert_eq!(r.status, 204);
    let r = s.request("POST", "/containers/renamed/stop", "").await;
    assert_eq!(r.status, 304, "already stopped");
    let r = s
        .request("DELETE", "/containers/renamed?force=1&v=1", "")
        .await;
    assert_eq!(r.status, 204);
    let r = s
        .request("GET", &format!("/containers/{sleeper}/json"), "")
        .await;
    assert_eq!(r.status, 404);

    let r = s.request("POST", "/containers/prune", "").await;
    assert_eq!(r.status, 200);
    assert!(r.json()["ContainersDeleted"].is_array());
}

/// The CLI sends `start` only after the wait reply's headers arrive.
#[tokio::test]
async fn wait_sends_headers_before_the_exit() {
    let s = TestServer::start().await;
    let id = create(
        &s,
        "waiter",
        serde_json::json!({"Image": "busybox", "Cmd": ["exit", "3"]}),
    )
    .await;
    let stream = UnixStream::connect(&s.sock).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(format!("/v1.50/containers/{id}/wait?condition=next-exit"))
        .header("Host", "d")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(2), sender.send_request(req))
        .await
        .expect("wait headers must arrive while the container is not even started")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let r = s
        .request("POST", &format!("/containers/{id}/start"), "")
        .await;
    assert_eq!(r.status, 204);
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"StatusCode": 3}),
        "no Error field on success"
    );
}

/// Sends a raw upgrade request and returns the response head and the stream.
async fn hijack(s: &TestServer, path: &str, body: &str) -> (String, UnixStream, Vec<u8>) {
    let mut stream = UnixStream::connect(&s.sock).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    (head, stream, buf[head_end..].to_vec())
}

async fn read_to_end(stream: &mut UnixStream, mut got: Vec<u8>) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got))
        .await
        .expect("stream must close when output ends")
        .unwrap();
    got
}

#[tokio::test]
async fn attach_hijacks_frames_output_and_honours_half_close() {
    let s = TestServer::start().await;
    let id = create(&s, "cat", serde_json::json!({"Image": "busybox", "Cmd": ["cat"], "OpenStdin": true, "StdinOnce": true, "AttachStdin": true})).await;
    let (head, mut stream, early) = hijack(
        &s,
        &format!("/v1.50/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1"),
        "",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101 UPGRADED\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/vnd.docker.multiplexed-stream\r\n"),
        "{head}"
    );
    assert!(lower.contains("connection: upgrade\r\n"), "{head}");
    assert!(lower.contains("upgrade: tcp\r\n"), "{head}");
    assert!(early.is_empty(), "the 101 head must be sent alone");
    // Stdin and its EOF arrive before start, as with `echo hi | docker run -i`.
    stream.write_all(b"hello\nworld\n").await.unwrap();
    stream.shutdown().await.unwrap();
    let r = s
        .request("POST", &format!("/containers/{id}/start"), "")
        .await;
    assert_eq!(r.status, 204);
    let got = read_to_end(&mut stream, early).await;
    let frames = deframe(&got);
    let stdout: Vec<u8> = frames
        .iter()
        .filter(|(s, _)| *s == 1)
        .flat_map(|(_, d)| d.clone())
        .collect();
    assert_eq!(stdout, b"hello\nworld\n");
}

#[tokio::test]
async fn attach_with_tty_is_raw_and_old_api_gets_raw_stream_type() {
    let s = TestServer::start().await;
    let id = create(
        &s,
        "tty1",
        serde_json::json!({"Image": "busybox", "Cmd": ["echo", "a"], "Tty": true}),
    )
    .await;
    let (head, mut stream, early) = hijack(
        &s,
        &format!("/v1.50/containers/{id}/attach?stream=1&stdout=1&stderr=1"),
        "",
    )
    .await;
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/vnd.docker.raw-stream\r\n"),
        "{head}"
    );
    s.request("POST", &format!("/containers/{id}/start"), "")
        .await;
    assert_eq!(read_to_end(&mut stream, early).await, b"a\r\n");

    let id = create(
        &s,
        "old",
        serde_json::json!({"Image": "busybox", "Cmd": ["err", "oops"]}),
    )
    .await;
    let (head, mut stream, early) = hijack(
        &s,
        &format!("/v1.41/containers/{id}/attach?stream=1&stdout=1&stderr=1"),
        "",
    )
    .await;
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/vnd.docker.raw-stream\r\n"),
        "{head}"
    );
    s.request("POST", &format!("/containers/{id}/start"), "")
        .await;
    assert_eq!(
        deframe(&read_to_end(&mut stream, early).await),
        vec![(2, b"oops\n".to_vec())]
    );
}

#[tokio::test]
async fn attach_without_upgrade_streams_on_200() {
    let s = TestServer::start().await;
    let id = create(
        &s,
        "echo1",
        serde_json::json!({"Image": "busybox", "Cmd": ["echo", "plain"]}),
    )
    .await;
    let sock = s.sock.clone();
    let path = format!("/containers/{id}/attach?stream=1&stdout=1&stderr=1");
    let pending =
        tokio::spawn(async move { request(&sock, "POST", &path, &[], Bytes::new()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.request("POST", &format!("/containers/{id}/start"), "")
        .await;
    let r = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        "application/vnd.docker.multiplexed-stream"
    );
    assert_eq!(deframe(&r.body), vec![(1, b"plain\n".to_vec())]);
}

#[tokio::test]
async fn exec_create_start_inspect() {
    let s = TestServer::start().await;
    let id = create(
        &s,
        "execer",
        serde_json::json!({"Image": "busybox", "Cmd": ["sleep", "30"]}),
    )
    .await;
    s.request("POST", &format!("/containers/{id}/start"), "")
        .await;
    let r = s
        .request("POST", "/containers/execer/exec", r#"{"Cmd":[]}"#)
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .request(
            "POST",
            "/containers/execer/exec",
            r#"{"Cmd":["echo","in exec"],"AttachStdout":true,"AttachStderr":true}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let exec_id = r.json()["Id"]
        .as_str()
        .expect("\"Id\" with a capital I")
        .to_string();
    let (head, mut stream, early) = hijack(
        &s,
        &format!("/v1.50/exec/{exec_id}/start"),
        r#"{"Detach":false,"Tty":false}"#,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101 UPGRADED\r\n"), "{head}");
    assert_eq!(
        deframe(&read_to_end(&mut stream, early).await),
        vec![(1, b"in exec\n".to_vec())]
    );
    let r = s
        .request("POST", &format!("/exec/{exec_id}/resize?h=10&w=10"), "")
        .await;
    assert_eq!(r.status, 200);
    let r = s.request("GET", &format!("/exec/{exec_id}/json"), "").await;
    assert_eq!(r.json()["ExitCode"], 0);
    assert_eq!(r.json()["Running"], false);

    let r = s
        .request("POST", "/containers/execer/exec", r#"{"Cmd":["exit","4"]}"#)
        .await;
    let exec_id = r.json()["Id"].as_str().unwrap().to_string();
    let r = s
        .request(
            "POST",
            &format!("/exec/{exec_id}/start"),
            r#"{"Detach":true}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = s.request("GET", &format!("/exec/{exec_id}/json"), "").await;
    assert_eq!(r.json()["ExitCode"], 4);
    let r = s.request("GET", "/exec/ghost/json", "").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn logs_are_framed_with_timestamps_and_tail() {
    let s = TestServer::start().await;
    let id = create(
        &s,
        "logger",
        serde_json::json!({"Image": "busybox", "Cmd": ["echo", "logged"]}),
    )
    .await;
    s.request("POST", &format!("/containers/{id}/start"), "")
        .await;
    s.request("POST", "/containers/logger/wait", "").await;
    let r = s
        .request(
            "GET",
            "/v1.50/containers/logger/logs?stdout=1&stderr=1&tail=all",
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        "application/vnd.docker.multiplexed-stream"
    );
    assert_eq!(deframe(&r.body), vec![(1, b"logged\n".to_vec())]);
    let r = s
        .request("GET", "/containers/logger/logs?stdout=1&timestamps=1", "")
        .await;
    let frames = deframe(&r.body);
    let line = String::from_utf8(frames[0].1.clone()).unwrap();
    let (ts, rest) = line.split_once(' ').unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{line}");
    assert_eq!(rest, "logged\n");
    let r = s
        .request("GET", "/containers/logger/logs?stdout=1&tail=0", "")
        .await;
    assert!(r.body.is_empty());
    let r = s
        .request("GET", "/containers/logger/logs?stderr=1", "")
        .await;
    assert!(
        deframe(&r.body).is_empty(),
        "stdout lines are not on stderr"
    );
    let r = s.request("GET", "/containers/logger/logs", "").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("at least one stream"));
}

#[tokio::test]
async fn stats_one_shot_and_stream_are_json_lines() {
    let s = TestServer::start().await;
    let id = create(
        &s,
        "st",
        serde_json::json!({"Image": "busybox", "Cmd": ["sleep", "30"]}),
    )
    .await;
    s.request("POST", &format!("/containers/{id}/start"), "")
        .await;
    let r = s
        .request(
            "GET",
            &format!("/containers/{}/stats?stream=0", &id[..12]),
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), "application/json");
    let lines: Vec<_> = r.text().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["name"], "/st");

    let stream = UnixStream::connect(&s.sock).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/containers/st/stats")
        .header("Host", "d")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = sender.send_request(req).await.unwrap().into_body();
    let mut got = Vec::new();
    while got.iter().filter(|b| **b == b'\n').count() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.extend_from_slice(&frame.into_data().unwrap());
    }
    for line in String::from_utf8(got).unwrap().lines().take(2) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["cpu_stats"]["cpu_usage"]["total_usage"].is_u64());
    }
}

#[tokio::test]
async fn archive_stat_get_and_put() {
    let s = TestServer::start().await;
    let id = create(
        &s,
        "fs",
        serde_json::json!({"Image": "busybox", "Cmd": ["sleep", "30"]}),
    )
    .await;
    let r = s
        .request(
            "HEAD",
            &format!("/containers/{id}/archive?path=/etc/hostname"),
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    let stat = decode_stat(r.header("X-Docker-Container-Path-Stat"));
    assert_eq!(stat["name"], "hostname");
    assert_eq!(stat["linkTarget"], "");
    let r = s
        .request("GET", "/containers/fs/archive?path=/etc/hostname", "")
        .await;
    assert_eq!(r.header("Content-Type"), "application/x-tar");
    let mut ar = tar::Archive::new(&r.body[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, vec!["hostname"]);

    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "new.txt", &b"12345"[..]).unwrap();
    let tarball = b.into_inner().unwrap();
    let r = request(
        &s.sock,
        "PUT",
        "/containers/fs/archive?path=/tmp&noOverwriteDirNonDir=true&copyUIDGID=False",
        &[("Content-Type", "application/x-tar")],
        Bytes::from(tarball),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s
        .request("HEAD", "/containers/fs/archive?path=/tmp/new.txt", "")
        .await;
    assert_eq!(
        decode_stat(r.header("X-Docker-Container-Path-Stat"))["size"],
        5
    );
    let r = s
        .request("HEAD", "/containers/fs/archive?path=/nowhere", "")
        .await;
    assert_eq!(r.status, 404);
    let r = s.request("GET", "/containers/fs/archive", "").await;
    assert_eq!(r.status, 400);
}

fn decode_stat(b64: &str) -> serde_json::Value {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in b64.bytes().filter(|c| *c != b'=') {
        bits = (bits << 6) | A.iter().position(|a| *a == c).expect("standard base64") as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    serde_json::from_slice(&out).unwrap()
}

#[tokio::test]
async fn images_routes_with_slashes_and_colons() {
    let s = TestServer::start().await;
    let r = s.request("GET", "/images/json", "").await;
    assert_eq!(r.json()[0]["RepoTags"][0], "busybox:latest");
    let r = s
        .request(
            "POST",
            "/v1.50/images/busybox/tag?repo=registry.local:5000/team/app&tag=v1",
            "",
        )
        .await;
    assert_eq!(r.status, 201);
    let r = s
        .request("GET", "/images/registry.local:5000/team/app:v1/json", "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["Id"].as_str().unwrap().starts_with("sha256:"));
    let r = s
        .request("GET", "/images/registry.local:5000/team/app:v1/history", "")
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json().is_array());
    let r = s
        .request("DELETE", "/images/registry.local:5000/team/app:v1", "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["Untagged"], "registry.local:5000/team/app:v1");
    let r = s.request("GET", "/images/ghost/json", "").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("No such image"));
    let r = s.request("POST", "/images/busybox/tag", "").await;
    assert_eq!(r.status, 400);
    let r = s.request("POST", "/images/busybox/frobnicate", "").await;
    assert_eq!(r.status, 404);
    let r = s.request("POST", "/images/prune", "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn image_create_imports_and_refuses_urls() {
    let s = TestServer::start().await;
    let r = request(
        &s.sock,
        "POST",
        "/v1.50/images/create?fromSrc=-&repo=imported&tag=v2&changes=CMD%20%5B%22sh%22%5D",
        &[],
        Bytes::from_static(b"pretend this is a tarball"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), "application/json");
    let id = r.json()["status"].as_str().unwrap().to_string();
    assert!(id.starts_with("sha256:"));
    let r = s.request("GET", "/images/imported:v2/json", "").await;
    assert_eq!(r.json()["Id"], id.as_str());
    let r = s
        .request("POST", "/images/create?fromSrc=-&repo=empty", "")
        .await;
    assert_eq!(r.status, 400, "the backend's refusal of an empty tarball");

    let r = s
        .request(
            "POST",
            "/images/create?fromSrc=http%3A%2F%2Fexample.com%2Fx.tar",
            "",
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("importing from a URL is not supported"));
    let r = s
        .request(
            "POST",
            "/images/create?fromImage=docker.io%2Flibrary%2Fnosuch&tag=3",
            "",
        )
        .await;
    assert_eq!(r.status, 404);
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("pull access denied for nosuch"), "{msg}");
}

#[tokio::test]
async fn volumes_routes() {
    let s = TestServer::start().await;
    let r = s
        .request(
            "POST",
            "/volumes/create",
            r#"{"Name":"data","Driver":"local","Labels":{"a":"b"}}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["Name"], "data");
    let r = s.request("POST", "/volumes/create", "").await;
    assert_eq!(r.status, 201, "empty body = anonymous volume");
    let r = s.request("GET", "/v1.50/volumes", "").await;
    assert_eq!(r.json()["Volumes"].as_array().unwrap().len(), 2);
    let r = s.request("GET", "/volumes/data", "").await;
    assert_eq!(r.json()["Labels"]["a"], "b");
    let r = s.request("DELETE", "/volumes/data?force=1", "").await;
    assert_eq!(r.status, 204);
    let r = s.request("GET", "/volumes/data", "").await;
    assert_eq!(r.status, 404);
    let r = s.request("POST", "/volumes/create", r#"{"Name": 5}"#).await;
    assert_eq!(r.status, 400);
    let r = s.request("POST", "/volumes/prune", "").await;
    assert_eq!(r.json()["VolumesDeleted"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn events_replay_with_until_and_filters() {
    let s = TestServer::start().await;
    create(
        &s,
        "ev",
        serde_json::json!({"Image": "busybox", "Cmd": ["echo"]}),
    )
    .await;
    s.request("POST", "/volumes/create", r#"{"Name":"v"}"#)
        .await;
    let now = chrono::Utc::now().timestamp() + 1;
    let filters = enc(r#"{"type":["container"]}"#);
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        s.request(
            "GET",
            &format!("/events?since=1&until={now}&filters={filters}"),
            "",
        ),
    )
    .await
    .expect("until ends the stream");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), "application/json");
    let events: Vec<serde_json::Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["Action"], "create");
    assert_eq!(events[0]["Type"], "container");
    let r = s.request("GET", "/events?since=soon", "").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn info_and_df() {
    let s = TestServer::start().await;
    let r = s.request("GET", "/v1.50/info", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Name"], "fakehost");
    let r = s.request("GET", "/system/df", "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn bind_unix_guards_live_sockets_and_replaces_stale_ones() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start().await;
    let mode = std::fs::metadata(&s.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let err = shibafu_api::bind_unix(&s.sock).unwrap_err();
    assert!(
        err.to_string().contains("another daemon is listening on"),
        "{err}"
    );
    // The live server is untouched.
    assert_eq!(s.request("GET", "/_ping", "").await.text(), "OK");

    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("sub/stale.sock");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let l = shibafu_api::bind_unix(&stale).expect("a dead socket is replaced");
    drop(l);
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = shibafu_api::bind_unix(&file).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[tokio::test]
async fn serve_stops_on_shutdown_and_removes_the_socket() {
    let s = TestServer::start().await;
    let sock = s.sock.clone();
    assert_eq!(s.request("GET", "/_ping", "").await.status, 200);
    tokio::time::timeout(Duration::from_secs(10), s.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(!sock.exists());
}

/// ctrl-p ctrl-q on a tty attach ends the session, not the container; the
/// keys themselves never reach the process.
#[tokio::test]
async fn tty_attach_detaches_on_detach_keys() {
    let s = TestServer::start().await;
    let id = create(
        &s,
        "detachme",
        serde_json::json!({"Image": "busybox", "Cmd": ["cat"], "Tty": true, "OpenStdin": true}),
    )
    .await;
    s.request("POST", &format!("/containers/{id}/start"), "")
        .await;
    let (head, mut stream, early) = hijack(
        &s,
        &format!("/v1.50/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1"),
        "",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101 UPGRADED\r\n"), "{head}");
    assert!(early.is_empty());
    stream.write_all(b"ab").await.unwrap();
    let mut echoed = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ab");
    stream.write_all(b"\x10\x11cd").await.unwrap();
    read_to_end(&mut stream, Vec::new()).await;
    let r = s
        .request("GET", &format!("/containers/{id}/json"), "")
        .await;
    assert_eq!(
        r.json()["State"]["Running"],
        true,
        "detaching leaves the container running"
    );

    // Custom keys.
    let (_, mut stream, _) = hijack(
        &s,
        &format!("/containers/{id}/attach?stream=1&stdin=1&stdout=1&detachKeys=ctrl-x"),
        "",
    )
    .await;
    stream.write_all(b"z").await.unwrap();
    let mut echoed = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    stream.write_all(b"\x18").await.unwrap();
    read_to_end(&mut stream, Vec::new()).await;
    // What the process received (its tty echo, in the log): no keys, nothing after them.
    let r = s
        .request("GET", &format!("/containers/{id}/logs?stdout=1"), "")
        .await;
    assert_eq!(
        r.header("Content-Type"),
        "application/vnd.docker.raw-stream"
    );
    assert_eq!(r.text(), "abz");
    let r = s
        .request(
            "POST",
            &format!("/containers/{id}/attach?stream=1&detachKeys=ctrl-1"),
            "",
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("detach keys"));
}
