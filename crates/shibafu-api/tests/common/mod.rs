//! Shared test harness: the fake backend served on a unix socket in a temp
//! dir, a tiny HTTP client and helpers to run the real clients.
#![allow(dead_code)]

pub mod fake;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub fake: fake::Fake,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("shibafu_api=debug")
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let fake = fake::Fake::new();
        let listener = shibafu_api::bind_unix(&sock).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(shibafu_api::serve(listener, fake.backends(), async move {
            let _ = rx.await;
        }));
        TestServer {
            dir,
            sock,
            fake,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// Stops the server and returns what `serve` returned.
    pub async fn stop(mut self) -> std::io::Result<()> {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }

    pub async fn request(&self, method: &str, path: &str, body: &str) -> Resp {
        request(&self.sock, method, path, &[], Bytes::from(body.to_string())).await
    }

    /// Runs the docker CLI against this server (blocking work off the runtime).
    pub async fn docker(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut argv: Vec<String> = vec!["-H".into(), self.host()];
        argv.extend(args.iter().map(|s| s.to_string()));
        run_cmd("docker", argv, stdin, self.dir.path()).await
    }

    /// Runs a Python snippet with `c` bound to a docker.DockerClient on this server.
    pub async fn python(&self, code: &str) -> Output {
        let prog = format!(
            "import docker, sys, time\nc = docker.DockerClient(base_url={:?}, timeout=20)\n{code}\n",
            self.host()
        );
        run_cmd("python3", vec!["-c".into(), prog], None, self.dir.path()).await
    }
}

pub async fn run_cmd(prog: &str, args: Vec<String>, stdin: Option<&[u8]>, home: &Path) -> Output {
    let prog = prog.to_string();
    let stdin = stdin.map(|s| s.to_vec());
    let cfg = home.join("docker-config");
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(&prog);
        cmd.args(&args)
            .env("DOCKER_CONFIG", &cfg)
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("running {prog}: {e}"));
        if let Some(data) = stdin {
            let mut w = child.stdin.take().unwrap();
            std::io::Write::write_all(&mut w, &data).unwrap();
        }
        wait_timeout(child, std::time::Duration::from_secs(30), &prog)
    })
    .await
    .unwrap()
}

/// Waits for a child, killing it (and failing the test) after `limit`.
pub fn wait_timeout(
    mut child: std::process::Child,
    limit: std::time::Duration,
    what: &str,
) -> Output {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} timed out; stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[track_caller]
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// One request on a fresh connection; reads the whole body.
pub async fn request(
    sock: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Resp {
    let stream = UnixStream::connect(sock).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("Host", "docker");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Splits a stdcopy stream into (stream, payload) frames.
pub fn deframe(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = vec![];
    while data.len() >= 8 {
        let len = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
        assert_eq!(&data[1..4], &[0, 0, 0], "bad frame header");
        out.push((data[0], data[8..8 + len].to_vec()));
        data = &data[8 + len..];
    }
    assert!(data.is_empty(), "trailing bytes after frames: {data:?}");
    out
}
