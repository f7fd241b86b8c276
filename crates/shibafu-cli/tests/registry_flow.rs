//! `pull`, `push`, `save`, `load`, `login`, `logout` driven in-process
//! against a small fake Docker API: what is sent (query, `X-Registry-Auth`,
//! bodies), what is printed (docker's plain-output lines, references,
//! `Loaded image:`), the docker CLI's config file, and exit codes.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use shibafu_cli::auth::base64_decode;
use shibafu_cli::cli::Cli;
use shibafu_cli::client::Client;
use shibafu_cli::Ctx;

type Body = UnsyncBoxBody<Bytes, std::convert::Infallible>;

#[derive(Default)]
struct Fake {
    /// "METHOD path?query | decoded X-Registry-Auth | body length"
    log: Mutex<Vec<String>>,
}

fn full(status: u16, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed_unsync())
        .unwrap()
}

const PULL: &str = concat!(
    "{\"status\":\"Pulling from library/alpine\",\"id\":\"3\"}\r\n",
    "{\"status\":\"Pulling fs layer\",\"progressDetail\":{},\"id\":\"aaaaaaaaaaaa\"}\r\n",
    "{\"status\":\"Downloading\",\"progressDetail\":{\"current\":10,\"total\":20},\"progress\":\"[=>  ]\",\"id\":\"aaaaaaaaaaaa\"}\r\n",
    "{\"status\":\"Pull complete\",\"progressDetail\":{},\"id\":\"aaaaaaaaaaaa\"}\r\n",
    "{\"status\":\"Digest: sha256:abcd\"}\r\n",
    "{\"status\":\"Status: Downloaded newer image for alpine:3\"}\r\n",
);

async fn handle(
    fake: Arc<Fake>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let auth = req
        .headers()
        .get("X-Registry-Auth")
        .map(|v| String::from_utf8(base64_decode(v.to_str().unwrap()).unwrap()).unwrap())
        .unwrap_or_default();
    let method = req.method().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).to_string();
    let shown = if path == "/auth" { text.as_str() } else { "" };
    fake.log
        .lock()
        .unwrap()
        .push(format!("{method} {pq} | {auth} | {} {shown}", body.len()));
    Ok(match path.as_str() {
        "/images/create" if pq.contains("nosuch") => full(
            404,
            r#"{"message":"pull access denied for nosuch, repository does not exist or may require 'docker login'"}"#,
        ),
        "/images/create" if pq.contains("broken") => full(
            200,
            "{\"status\":\"Pulling from library/broken\",\"id\":\"1\"}\r\n{\"errorDetail\":{\"message\":\"unexpected EOF\"},\"error\":\"unexpected EOF\"}\r\n",
        ),
        "/images/create" => full(200, PULL),
        p if p.ends_with("/push") => full(
            200,
            concat!(
                "{\"status\":\"The push refers to repository [localhost:5999/app]\"}\r\n",
                "{\"status\":\"Preparing\",\"progressDetail\":{},\"id\":\"bbbbbbbbbbbb\"}\r\n",
                "{\"status\":\"Pushing\",\"progressDetail\":{\"current\":5,\"total\":9},\"id\":\"bbbbbbbbbbbb\"}\r\n",
                "{\"status\":\"Pushed\",\"progressDetail\":{},\"id\":\"bbbbbbbbbbbb\"}\r\n",
                "{\"status\":\"v1: digest: sha256:dd size: 527\"}\r\n",
                "{\"progressDetail\":{},\"aux\":{\"Tag\":\"v1\",\"Digest\":\"sha256:dd\",\"Size\":527}}\r\n",
            ),
        ),
        "/images/get" => Response::builder()
            .status(200)
            .header("Content-Type", "application/x-tar")
            .body(Full::new(Bytes::from(format!("TAR[{pq}]"))).boxed_unsync())
            .unwrap(),
        "/images/load" => full(
            200,
            &format!(
                "{{\"stream\":\"Loaded image: loaded:{}\\n\"}}\r\n",
                body.len()
            ),
        ),
        "/auth" => {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            match (v["username"].as_str(), v["password"].as_str()) {
                (Some("alice"), Some("secret")) => full(200, r#"{"Status":"Login Succeeded"}"#),
                (Some("bob"), Some("pw")) => {
                    full(200, r#"{"Status":"Login Succeeded","IdentityToken":"tok-bob"}"#)
                }
                _ if v["identitytoken"] == "tok-bob" => full(200, r#"{"Status":"Login Succeeded"}"#),
                _ => full(
                    401,
                    r#"{"message":"Get \"https://localhost:5999/v2/\": unauthorized: incorrect username or password"}"#,
                ),
            }
        }
        _ => full(404, r#"{"message":"page not found"}"#),
    })
}

async fn start_fake() -> (Arc<Fake>, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fake.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let fake = Arc::new(Fake::default());
    let f = fake.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let f = f.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(f.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (fake, dir, format!("unix://{}", sock.display()))
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

async fn cli(host: &str, args: &[&str], stdin: Option<&'static [u8]>) -> (i32, String, String) {
    let mut argv = vec!["shibafu"];
    argv.extend_from_slice(args);
    let parsed = Cli::try_parse_from(argv).unwrap();
    let (out, err) = (Buf::default(), Buf::default());
    let input = stdin.map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
    let ctx = Ctx::with_io(
        Client::new(host, false).unwrap(),
        Box::new(out.clone()),
        Box::new(err.clone()),
        input,
    );
    let code = shibafu_cli::execute(parsed.cmd.unwrap(), &ctx).await;
    (code, out.text(), err.text())
}

fn last(fake: &Fake) -> String {
    fake.log.lock().unwrap().last().cloned().unwrap_or_default()
}

/// One test: the docker config dir is process-wide (`DOCKER_CONFIG`).
#[tokio::test]
async fn registry_commands() {
    let (fake, dir, host) = start_fake().await;
    let cfg_dir = dir.path().join("docker-config");
    std::env::set_var("DOCKER_CONFIG", &cfg_dir);
    let cfg_file = cfg_dir.join("config.json");

    // pull: docker's plain output (no bars), then the full reference.
    let (code, out, err) = cli(&host, &["pull", "alpine:3"], None).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "3: Pulling from library/alpine\naaaaaaaaaaaa: Pulling fs layer\naaaaaaaaaaaa: Pull complete\n\
         Digest: sha256:abcd\nStatus: Downloaded newer image for alpine:3\ndocker.io/library/alpine:3\n"
    );
    assert!(
        last(&fake).starts_with(
            "POST /images/create?fromImage=docker.io%2Flibrary%2Falpine&tag=3 | {\"serveraddress\":\"https://index.docker.io/v1/\"}"
        ),
        "{}",
        last(&fake)
    );
    let (code, out, _) = cli(
        &host,
        &["image", "pull", "-q", "--platform", "linux/arm64", "alpine"],
        None,
    )
    .await;
    assert_eq!(
        (code, out.as_str()),
        (0, "docker.io/library/alpine:latest\n")
    );
    assert!(
        last(&fake).contains("tag=latest&platform=linux%2Farm64"),
        "{}",
        last(&fake)
    );
    let (code, out, _) = cli(&host, &["pull", "alpine"], None).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("Using default tag: latest\n"), "{out}");
    let digest = format!("sha256:{}", "e".repeat(64));
    let r = format!("localhost:5999/x/y@{digest}");
    let r: &'static str = Box::leak(r.into_boxed_str());
    assert_eq!(cli(&host, &["pull", "-q", r], None).await.0, 0);
    assert!(last(&fake).contains(&format!(
        "fromImage=localhost%3A5999%2Fx%2Fy&tag=sha256%3A{}",
        "e".repeat(64)
    )));

    // Errors: HTTP ones carry docker's prefix, in-stream ones don't.
    let (code, _, err) = cli(&host, &["pull", "nosuch"], None).await;
    assert_eq!(code, 1);
    assert_eq!(err, "Error response from daemon: pull access denied for nosuch, repository does not exist or may require 'docker login'\n");
    let (code, out, err) = cli(&host, &["pull", "broken:1"], None).await;
    assert_eq!((code, err.as_str()), (1, "unexpected EOF\n"));
    assert_eq!(out, "1: Pulling from library/broken\n");
    let (code, _, err) = cli(&host, &["pull", "Bad/Name"], None).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("invalid reference format: repository name (Bad/Name) must be lowercase")
            || err.contains("invalid reference format"),
        "{err}"
    );
    let (code, _, err) = cli(&host, &["pull", "-a", "alpine:3"], None).await;
    assert_eq!(code, 125, "{err}");

    // login: refused credentials store nothing; accepted ones are written
    // in the docker CLI's format, and pull/push send them.
    let (code, _, err) = cli(
        &host,
        &["login", "-u", "alice", "--password-stdin", "localhost:5999"],
        Some(b"wrong\n"),
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "Error response from daemon: Get \"https://localhost:5999/v2/\": unauthorized"
        ),
        "{err}"
    );
    assert!(!cfg_file.exists());
    let (code, out, err) = cli(
        &host,
        &["login", "-u", "alice", "--password-stdin", "localhost:5999"],
        Some(b"secret\n"),
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "Login Succeeded\n"), "{err}");
    assert!(
        last(&fake).contains("\"serveraddress\":\"localhost:5999\""),
        "{}",
        last(&fake)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_file).unwrap()).unwrap();
    assert_eq!(v["auths"]["localhost:5999"]["auth"], "YWxpY2U6c2VjcmV0");
    let (code, _, err) = cli(
        &host,
        &["login", "-u", "bob", "-p", "pw", "https://r.example/"],
        None,
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        err.contains("WARNING! Using --password via the CLI is insecure"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_file).unwrap()).unwrap();
    assert_eq!(v["auths"]["https://r.example"]["identitytoken"], "tok-bob");
    assert_eq!(v["auths"]["https://r.example"]["auth"], "Ym9iOg==");
    // Stored credentials are reused by a bare `login SERVER`.
    let (code, out, _) = cli(&host, &["login", "r.example"], None).await;
    assert_eq!(code, 0);
    assert!(out.ends_with("Login Succeeded\n"), "{out}");
    assert!(
        last(&fake).contains("\"identitytoken\":\"tok-bob\""),
        "{}",
        last(&fake)
    );
    let (code, _, err) = cli(&host, &["login", "other.example"], None).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("Cannot perform an interactive login from a non TTY device"),
        "{err}"
    );
    let (code, _, err) = cli(&host, &["login", "--password-stdin"], None).await;
    assert_eq!(
        (code, err.as_str()),
        (125, "Must provide --username with --password-stdin\n")
    );

    assert_eq!(
        cli(&host, &["pull", "-q", "localhost:5999/team/app:v1"], None)
            .await
            .0,
        0
    );
    assert!(
        last(&fake).contains("| {\"password\":\"secret\",\"serveraddress\":\"localhost:5999\",\"username\":\"alice\"} |")
            || last(&fake).contains("\"username\":\"alice\""),
        "{}",
        last(&fake)
    );

    // push: progress lines, tag query, credentials; -q prints the reference.
    let (code, out, err) = cli(&host, &["push", "localhost:5999/app:v1"], None).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "The push refers to repository [localhost:5999/app]\nbbbbbbbbbbbb: Preparing\nbbbbbbbbbbbb: Pushed\nv1: digest: sha256:dd size: 527\n"
    );
    assert!(
        last(&fake).starts_with("POST /images/localhost:5999/app/push?tag=v1 | {"),
        "{}",
        last(&fake)
    );
    assert!(last(&fake).contains("alice"));
    let (code, out, _) = cli(
        &host,
        &["image", "push", "-q", "localhost:5999/app:v1"],
        None,
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "localhost:5999/app:v1\n"));
    let (code, out, _) = cli(&host, &["push", "-a", "localhost:5999/app"], None).await;
    assert_eq!(code, 0);
    assert!(!out.contains("Using default tag"));
    assert!(
        !last(&fake).contains("tag="),
        "push -a names no tag: {}",
        last(&fake)
    );
    let (code, out, _) = cli(&host, &["push", "localhost:5999/app"], None).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("Using default tag: latest\n"));
    assert!(last(&fake).contains("/push?tag=latest"), "{}", last(&fake));

    // logout.
    let (code, out, _) = cli(&host, &["logout", "localhost:5999"], None).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "Removing login credentials for localhost:5999\n")
    );
    let (_, out, _) = cli(&host, &["logout", "localhost:5999"], None).await;
    assert_eq!(out, "Not logged in to localhost:5999\n");
    let (_, out, _) = cli(&host, &["logout"], None).await;
    assert_eq!(out, "Not logged in to https://index.docker.io/v1/\n");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_file).unwrap()).unwrap();
    assert!(v["auths"].get("localhost:5999").is_none());
    assert!(v["auths"].get("https://r.example").is_some());

    // save: to stdout (not a terminal here) or to a file.
    let (code, out, _) = cli(&host, &["save", "busybox", "alpine:3"], None).await;
    assert_eq!(code, 0);
    assert_eq!(out, "TAR[/images/get?names=busybox&names=alpine%3A3]");
    let file = dir.path().join("out.tar");
    let (code, out, _) = cli(
        &host,
        &["image", "save", "-o", file.to_str().unwrap(), "busybox"],
        None,
    )
    .await;
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "TAR[/images/get?names=busybox]"
    );
    let (code, _, err) = cli(
        &host,
        &["save", "-o", "/nonexistent/dir/x.tar", "busybox"],
        None,
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("invalid output path: directory \"/nonexistent/dir\" does not exist"),
        "{err}"
    );

    // load: from a file or stdin, quiet when stdout is no terminal.
    let (code, out, _) = cli(&host, &["load", "-i", file.to_str().unwrap()], None).await;
    assert_eq!((code, out.as_str()), (0, "Loaded image: loaded:30\n"));
    assert!(
        last(&fake).starts_with("POST /images/load?quiet=1 |"),
        "{}",
        last(&fake)
    );
    let (code, out, _) = cli(&host, &["image", "load"], Some(b"12345")).await;
    assert_eq!((code, out.as_str()), (0, "Loaded image: loaded:5\n"));
    let (code, _, err) = cli(&host, &["load", "-i", "/nonexistent.tar"], None).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("open /nonexistent.tar: no such file or directory"),
        "{err}"
    );
}
