//! Drives whole commands against a tiny fake Docker API on a unix socket: the order of
//! requests in an attached `run` (attach -> wait -> start), output demultiplexing, and
//! the exit codes docker would give.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use shibafu_cli::cli::Cli;
use shibafu_cli::client::Client;
use shibafu_cli::stdcopy::frame;
use shibafu_cli::Ctx;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

type Body = UnsyncBoxBody<Bytes, std::convert::Infallible>;

#[derive(Default)]
struct Fake {
    log: Mutex<Vec<String>>,
    bodies: Mutex<Vec<String>>,
    started: Notify,
    output_done: Notify,
}

fn full(status: u16, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed_unsync())
        .unwrap()
}

async fn handle(
    fake: Arc<Fake>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    fake.log
        .lock()
        .unwrap()
        .push(format!("{} {}", req.method(), pq));
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body_s = String::from_utf8_lossy(&body).to_string();
    fake.bodies.lock().unwrap().push(body_s.clone());
    let resp = match path.as_str() {
        "/containers/create" => {
            if body_s.contains("\"Image\":\"missing\"") {
                full(404, r#"{"message":"No such image: missing:latest"}"#)
            } else {
                full(201, r#"{"Id":"c0ffee0000000000000000000000000000000000000000000000000000000000","Warnings":[]}"#)
            }
        }
        "/images/create" => full(200, "{\"status\":\"Pulling from library/missing\"}\n{\"errorDetail\":{\"message\":\"pull access denied for missing\"},\"error\":\"pull access denied for missing\"}\n"),
        p if p.ends_with("/attach") => {
            let f = fake.clone();
            let with_stdin = pq.contains("stdin=1");
            tokio::spawn(async move {
                let up = on_upgrade.await.expect("upgrade");
                let mut io = TokioIo::new(up);
                if with_stdin {
                    // Echo the client's stdin once it half-closes (like `cat`).
                    let mut input = Vec::new();
                    tokio::io::AsyncReadExt::read_to_end(&mut io, &mut input).await.unwrap();
                    f.started.notified().await;
                    io.write_all(&frame(1, &input)).await.unwrap();
                    io.shutdown().await.unwrap();
                    f.output_done.notify_one();
                    return;
                }
                f.started.notified().await;
                io.write_all(&frame(1, b"hello\n")).await.unwrap();
                io.write_all(&frame(2, b"warn\n")).await.unwrap();
                io.shutdown().await.unwrap();
                f.output_done.notify_one();
            });
            Response::builder()
                .status(101)
                .header("Connection", "Upgrade")
                .header("Upgrade", "tcp")
                .header("Content-Type", "application/vnd.docker.multiplexed-stream")
                .body(Full::new(Bytes::new()).boxed_unsync())
                .unwrap()
        }
        p if p.ends_with("/wait") => {
            let f = fake.clone();
            let s = futures::stream::once(async move {
                f.output_done.notified().await;
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"{\"StatusCode\":3}")))
            });
            Response::builder().status(200).header("Content-Type", "application/json").body(StreamBody::new(s).boxed_unsync()).unwrap()
        }
        p if p.ends_with("/start") && p.starts_with("/containers/") => {
            if fake.bodies.lock().unwrap().iter().any(|b| b.contains("nope")) {
                full(400, r#"{"message":"failed to start: exec: \"nope\": executable file not found in $PATH"}"#)
            } else {
                fake.started.notify_one();
                Response::builder().status(204).body(Full::new(Bytes::new()).boxed_unsync()).unwrap()
            }
        }
        p if p.ends_with("/exec") => full(201, r#"{"Id":"e1"}"#),
        "/exec/e1/start" => {
            tokio::spawn(async move {
                let up = on_upgrade.await.expect("upgrade");
                let mut io = TokioIo::new(up);
                io.write_all(&frame(1, b"in exec\n")).await.unwrap();
                io.shutdown().await.unwrap();
            });
            Response::builder().status(101).header("Connection", "Upgrade").header("Upgrade", "tcp").body(Full::new(Bytes::new()).boxed_unsync()).unwrap()
        }
        "/exec/e1/json" => full(200, r#"{"ID":"e1","Running":false,"ExitCode":7}"#),
        "/shibafu/services" => full(200, SERVICES),
        "/shibafu/services/web" => full(200, WEB_SERVICE),
        p if p.starts_with("/shibafu/services/") => full(
            404,
            &format!(r#"{{"message":"No such service: {}"}}"#, &p["/shibafu/services/".len()..]),
        ),
        "/shibafu/dns/trace" => full(200, TRACE),
        "/containers/gone/stop" => full(404, r#"{"message":"No such container: gone"}"#),
        p if p.ends_with("/stop") => Response::builder().status(204).body(Full::new(Bytes::new()).boxed_unsync()).unwrap(),
        _ => full(404, r#"{"message":"page not found"}"#),
    };
    Ok(resp)
}

const WEB_SERVICE: &str = r#"[{"Name":"web","Network":"front","NetworkId":"f1","Fqdn":"web.front.local","Ports":["80/tcp"],"Instances":[{"Id":"w1-id","Name":"w1","IPv4Address":"10.1.0.2","IPv6Address":"","Weight":1,"Health":"healthy","InAnswers":true,"Via":"service"},{"Id":"w2-id","Name":"w2","IPv4Address":"10.1.0.3","IPv6Address":"","Weight":3,"Health":"unhealthy","InAnswers":false,"Via":"service"}]}]"#;

const SERVICES: &str = r#"[{"Name":"web","Network":"front","NetworkId":"f1","Fqdn":"web.front.local","Ports":["80/tcp"],"Instances":[{"Id":"w1-id","Name":"w1","IPv4Address":"10.1.0.2","IPv6Address":"","Weight":1,"Health":"healthy","InAnswers":true,"Via":"service"},{"Id":"w2-id","Name":"w2","IPv4Address":"10.1.0.3","IPv6Address":"","Weight":3,"Health":"unhealthy","InAnswers":false,"Via":"service"}]},{"Name":"db","Network":"back","NetworkId":"b1","Fqdn":"db.back.local","Ports":[],"Instances":[{"Id":"d1-id","Name":"d1","IPv4Address":"10.2.0.2","IPv6Address":"","Weight":1,"Health":"none","InAnswers":true,"Via":"alias"}]}]"#;

const TRACE: &str = r#"{"query":"web.front.local","qtype":"A","from":{"address":"10.1.0.9"},"view":["front"],"listener":"front","matched":[{"network":"front","container":"w1","matched_as":"service"}],"source":"local","upstreams":[],"rcode":"NOERROR","answers":[{"name":"web.front.local.","rtype":"A","ttl":5,"data":"10.1.0.2"}],"elapsed_us":37}"#;

/// Starts the fake on a fresh socket; returns its state and the socket path.
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
                    .with_upgrades()
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
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn run_cli(host: &str, args: &[&str]) -> (i32, String, String) {
    run_cli_stdin(host, args, None).await
}

async fn run_cli_stdin(
    host: &str,
    args: &[&str],
    stdin: Option<&'static [u8]>,
) -> (i32, String, String) {
    let mut argv = vec!["shibafu"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).unwrap();
    let (out, err) = (Buf::default(), Buf::default());
    let input = stdin.map(|b| Box::new(b) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
    let ctx = Ctx::with_io(
        Client::new(host, false).unwrap(),
        Box::new(out.clone()),
        Box::new(err.clone()),
        input,
    );
    let code = shibafu_cli::execute(cli.cmd.unwrap(), &ctx).await;
    (code, out.text(), err.text())
}

fn paths(fake: &Fake) -> Vec<String> {
    fake.log
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.split('?').next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn attached_run_orders_attach_wait_start_and_returns_exit_code() {
    let (fake, _dir, host) = start_fake().await;
    let (code, out, err) = run_cli(&host, &["run", "--rm", "busybox", "echo", "hi"]).await;
    assert_eq!(code, 3, "stderr: {err}");
    assert_eq!(out, "hello\n");
    assert_eq!(err, "warn\n");
    let p = paths(&fake);
    let id = "c0ffee0000000000000000000000000000000000000000000000000000000000";
    assert_eq!(
        p,
        vec![
            "POST /containers/create".to_string(),
            format!("POST /containers/{id}/attach"),
            format!("POST /containers/{id}/wait"),
            format!("POST /containers/{id}/start"),
        ]
    );
    let log = fake.log.lock().unwrap().clone();
    assert!(
        log[1].contains("stream=1") && log[1].contains("stdout=1") && log[1].contains("stdin=0"),
        "{}",
        log[1]
    );
    assert!(log[2].ends_with("condition=removed"), "{}", log[2]);
    let create_body: serde_json::Value =
        serde_json::from_str(&fake.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(create_body["HostConfig"]["AutoRemove"], true);
    assert_eq!(create_body["Cmd"], serde_json::json!(["echo", "hi"]));
}

#[tokio::test]
async fn detached_run_prints_id_without_attaching() {
    let (fake, _dir, host) = start_fake().await;
    let (code, out, _) = run_cli(&host, &["run", "-d", "busybox"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim().len(), 64);
    let p = paths(&fake);
    assert_eq!(p.len(), 2);
    assert!(p[1].ends_with("/start"));
}

#[tokio::test]
async fn missing_image_tries_pull_and_exits_125() {
    let (fake, _dir, host) = start_fake().await;
    let (code, _, err) = run_cli(&host, &["run", "missing"]).await;
    assert_eq!(code, 125);
    assert!(
        err.contains("Unable to find image 'missing:latest' locally"),
        "{err}"
    );
    // An in-stream error is printed as is (no "Error response from daemon").
    assert!(
        err.contains("shibafu: pull access denied for missing\n"),
        "{err}"
    );
    let log = fake.log.lock().unwrap().clone();
    assert!(
        log[1]
            .starts_with("POST /images/create?fromImage=docker.io%2Flibrary%2Fmissing&tag=latest"),
        "{log:?}"
    );
}

#[tokio::test]
async fn start_failure_maps_to_127() {
    let (_fake, _dir, host) = start_fake().await;
    let (code, _, err) = run_cli(&host, &["run", "-d", "busybox", "nope"]).await;
    assert_eq!(code, 127);
    assert!(err.contains("executable file not found"), "{err}");
}

#[tokio::test]
async fn bad_flag_value_exits_125_before_any_request() {
    let (fake, _dir, host) = start_fake().await;
    let (code, _, err) = run_cli(&host, &["run", "-m", "12q", "busybox"]).await;
    assert_eq!(code, 125);
    assert!(
        err.contains("invalid argument \"12q\" for \"-m, --memory\" flag: invalid size: '12q'"),
        "{err}"
    );
    assert!(fake.log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn exec_returns_the_exec_exit_code() {
    let (fake, _dir, host) = start_fake().await;
    let (code, out, _) = run_cli(&host, &["exec", "web", "sh", "-c", "exit 7"]).await;
    assert_eq!(code, 7);
    assert_eq!(out, "in exec\n");
    let p = paths(&fake);
    assert_eq!(
        p,
        vec![
            "POST /containers/web/exec",
            "POST /exec/e1/start",
            "GET /exec/e1/json"
        ]
    );
}

#[tokio::test]
async fn multi_container_stop_reports_each_failure() {
    let (_fake, _dir, host) = start_fake().await;
    let (code, out, err) = run_cli(&host, &["stop", "a", "gone", "b"]).await;
    assert_eq!(code, 1);
    assert_eq!(out, "a\nb\n");
    assert_eq!(err, "Error response from daemon: No such container: gone\n");
}

#[tokio::test]
async fn unreachable_daemon_message() {
    let (code, _, err) = run_cli("unix:///nonexistent/shibafu.sock", &["ps"]).await;
    assert_eq!(code, 1);
    assert_eq!(err, "Cannot connect to the shibafu daemon at unix:///nonexistent/shibafu.sock. Is the daemon running?\n");
}

#[tokio::test]
async fn interactive_run_forwards_stdin_and_half_closes() {
    let (fake, _dir, host) = start_fake().await;
    let (code, out, err) = run_cli_stdin(
        &host,
        &["run", "-i", "busybox", "cat"],
        Some(b"piped input\n"),
    )
    .await;
    assert_eq!(code, 3, "{err}");
    assert_eq!(out, "piped input\n");
    let log = fake.log.lock().unwrap().clone();
    assert!(log[1].contains("stdin=1"), "{}", log[1]);
    assert!(log[2].ends_with("condition=next-exit"), "{}", log[2]);
    let create_body: serde_json::Value =
        serde_json::from_str(&fake.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(create_body["OpenStdin"], true);
    assert_eq!(create_body["StdinOnce"], true);
    assert_eq!(create_body["AttachStdin"], true);
}

#[test]
fn top_level_help_lists_daemon() {
    let err = Cli::try_parse_from(["shibafu", "--help"]).unwrap_err();
    let help = err.to_string();
    assert!(help.contains("daemon"), "{help}");
    assert!(
        help.contains("run the shibafu daemon (see shibafu daemon --help)"),
        "{help}"
    );
    for cmd in ["run", "ps", "images", "volume", "cp", "events"] {
        assert!(help.contains(cmd), "{cmd} missing from help");
    }
}

#[test]
fn version_flag_and_exit_codes_for_usage_errors() {
    assert_eq!(shibafu_cli::main(vec!["shibafu".into(), "-v".into()]), 0);
    assert_eq!(
        shibafu_cli::main(vec!["shibafu".into(), "ps".into(), "--bogus".into()]),
        125
    );
    assert_eq!(
        shibafu_cli::main(vec!["shibafu".into(), "run".into(), "--help".into()]),
        0
    );
}

#[tokio::test]
async fn service_flags_become_labels() {
    let (fake, _dir, host) = start_fake().await;
    let (code, _, err) = run_cli(
        &host,
        &[
            "run",
            "-d",
            "--service",
            "api",
            "--service",
            "web,api",
            "--service-weight",
            "3",
            "--service-port",
            "8080",
            "--service-port",
            "53/UDP",
            "--health-probe",
            "http:8080/healthz",
            "-l",
            "io.shibafu.service=ignored",
            "busybox",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let body: serde_json::Value = serde_json::from_str(&fake.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(
        body["Labels"],
        serde_json::json!({
            "io.shibafu.service": "api,web",
            "io.shibafu.service.weight": "3",
            "io.shibafu.service.ports": "8080,53/udp",
            "io.shibafu.health.probe": "http:8080/healthz",
        })
    );
    // a weight may go with a service set by --label (what the docker CLI can do)
    let (code, _, err) = run_cli(
        &host,
        &[
            "create",
            "-l",
            "io.shibafu.service=db",
            "--service-weight",
            "2",
            "busybox",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let body: serde_json::Value = serde_json::from_str(&fake.bodies.lock().unwrap()[2]).unwrap();
    assert_eq!(body["Labels"]["io.shibafu.service.weight"], "2");
    assert_eq!(body["Labels"]["io.shibafu.service"], "db");
}

#[tokio::test]
async fn bad_service_flags_exit_125_before_any_request() {
    let (fake, _dir, host) = start_fake().await;
    for (args, want) in [
        (
            vec!["run", "--service", "api", "--service-weight", "0", "busybox"],
            "invalid argument \"0\" for \"--service-weight\" flag: want an integer 1..65535",
        ),
        (
            vec!["create", "--service", "api", "--service-weight", "70000", "busybox"],
            "invalid argument \"70000\" for \"--service-weight\" flag: want an integer 1..65535",
        ),
        (
            vec!["run", "--service-weight", "2", "busybox"],
            "--service-weight needs --service",
        ),
        (
            vec!["run", "--service-port", "53/icmp", "busybox"],
            "invalid argument \"53/icmp\" for \"--service-port\" flag: invalid protocol \"icmp\": want tcp, udp or sctp",
        ),
        (
            vec!["run", "--service-port", "0", "busybox"],
            "invalid argument \"0\" for \"--service-port\" flag: invalid port \"0\": want 1..65535",
        ),
        (
            vec!["run", "--health-probe", "icmp:1", "busybox"],
            "invalid argument \"icmp:1\" for \"--health-probe\" flag: unknown probe type \"icmp\"",
        ),
        (
            vec!["run", "--service", "a b", "busybox"],
            "invalid argument \"a b\" for \"--service\" flag",
        ),
    ] {
        let (code, _, err) = run_cli(&host, &args).await;
        assert_eq!(code, 125, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(err.contains("--help' for more information"), "{err}");
    }
    let (code, _, err) = run_cli(&host, &["network", "create", "--dns", "1.2.3.4:0", "n"]).await;
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("for \"--dns\" flag"), "{err}");
    assert!(fake.log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn service_ls_and_inspect() {
    let (fake, _dir, host) = start_fake().await;
    let (code, out, err) = run_cli(&host, &["service", "ls"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "NAME      NETWORK   INSTANCES   PORTS\n\
         db        back      1/1         -\n\
         web       front     1/2         80/tcp\n"
    );
    let (code, out, _) = run_cli(&host, &["service", "ls", "-q", "--network", "front"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "db\nweb\n");
    assert!(
        fake.log
            .lock()
            .unwrap()
            .contains(&"GET /shibafu/services?network=front".to_string()),
        "{:?}",
        fake.log.lock().unwrap()
    );

    let (code, out, err) = run_cli(&host, &["service", "inspect", "web", "nope"]).await;
    assert_eq!(code, 1);
    assert_eq!(err, "Error: No such service: nope\n");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["Instances"][1]["Weight"], 3);
    assert!(
        out.starts_with("[\n    {\n        \"Name\": \"web\","),
        "{out}"
    );

    let (code, out, _) = run_cli(
        &host,
        &[
            "service",
            "inspect",
            "-f",
            "{{.Fqdn}}{{range .Instances}} {{.Name}}={{.Health}}{{end}}",
            "web",
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(out, "web.front.local w1=healthy w2=unhealthy\n");
}

#[tokio::test]
async fn dns_trace_report_and_json() {
    let (fake, _dir, host) = start_fake().await;
    let (code, out, err) = run_cli(
        &host,
        &[
            "network",
            "dns-trace",
            "--query",
            "web.front.local",
            "--from",
            "c1",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "Query:     web.front.local A (from container c1 at 10.1.0.9, networks: front)\n\
         Matched:   w1 on front (service)\n\
         Source:    local\n\
         Answer:    web.front.local. 5 A 10.1.0.2\n\
         Rcode:     NOERROR in 0.04 ms\n"
    );
    assert_eq!(
        fake.log.lock().unwrap()[0],
        "GET /shibafu/dns/trace?name=web.front.local&type=A&from=c1"
    );
    let (code, out, _) = run_cli(
        &host,
        &["network", "dns-trace", "--query", "web", "--format", "json"],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(out, format!("{TRACE}\n"));
}

#[test]
fn dns_and_service_help_texts() {
    let help = |args: &[&str]| {
        let mut v = vec!["shibafu"];
        v.extend_from_slice(args);
        v.push("--help");
        let text = Cli::try_parse_from(v).unwrap_err().to_string();
        println!("{text}");
        text
    };
    let run = help(&["run"]);
    for f in [
        "--service <NAME>",
        "--service-weight <N>",
        "--service-port <PORT[/PROTO]>",
        "--health-probe <tcp:PORT|http:PORT[/PATH]>",
    ] {
        assert!(run.contains(f), "{f} missing from run --help");
    }
    assert!(help(&["create"]).contains("--service-weight <N>"));
    assert!(help(&["network", "create"]).contains("--dns <IP[:PORT]>"));
    let top = help(&[]);
    assert!(top.contains("service"), "{top}");
    let svc = help(&["service"]);
    assert!(svc.contains("ls") && svc.contains("inspect"), "{svc}");
    assert!(help(&["service", "ls"]).contains("--network <NETWORK>"));
    let trace = help(&["network", "dns-trace"]);
    for f in [
        "--query <NAME>",
        "--type <TYPE>",
        "--from <CONTAINER>",
        "--network <NETWORK>",
        "--format",
    ] {
        assert!(trace.contains(f), "{f} missing from dns-trace --help");
    }
    assert!(help(&["network"]).contains("dns-trace"));
}
