//! The unmodified docker CLI (28.2) against the HTTP layer on the fake
//! backend: version negotiation, run/attach/wait, hijacked stdin, exec, logs,
//! errors and exit codes.

mod common;

use common::{assert_ok, stderr, stdout, TestServer};

fn have_docker() -> bool {
    std::process::Command::new("docker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

macro_rules! require_docker {
    () => {
        if !have_docker() {
            panic!(
                "the docker CLI is required for these tests (it is installed on the CI machines)"
            );
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_info_and_listing() {
    require_docker!();
    let s = TestServer::start().await;
    let o = s.docker(&["version"], None).await;
    assert_ok(&o);
    let out = stdout(&o);
    assert!(out.contains("Server: shibafu"), "{out}");
    let squeezed = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        squeezed.contains("API version: 1.50 (minimum version 1.24)"),
        "{out}"
    );
    assert!(squeezed.contains("OS/Arch: linux/amd64"), "{out}");
    let o = s
        .docker(&["version", "--format", "{{.Server.APIVersion}}"], None)
        .await;
    assert_eq!(stdout(&o).trim(), "1.50");
    let o = s
        .docker(&["info", "--format", "{{.Name}} {{.NCPU}}"], None)
        .await;
    assert_ok(&o);
    assert_eq!(stdout(&o).trim(), "fakehost 2");
    let o = s.docker(&["ps", "-a"], None).await;
    assert_ok(&o);
    assert!(stdout(&o).starts_with("CONTAINER ID"), "{}", stdout(&o));
    let o = s.docker(&["images"], None).await;
    assert_ok(&o);
    assert!(
        stdout(&o).lines().nth(1).unwrap().starts_with("busybox "),
        "{}",
        stdout(&o)
    );
    let o = s.docker(&["system", "df"], None).await;
    assert_ok(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_foreground_attach_wait_and_exit_codes() {
    require_docker!();
    let s = TestServer::start().await;
    let o = s
        .docker(&["run", "--rm", "busybox", "echo", "hello", "world"], None)
        .await;
    assert_ok(&o);
    assert_eq!(stdout(&o), "hello world\n");
    let o = s.docker(&["ps", "-aq"], None).await;
    assert_eq!(stdout(&o), "", "--rm removed the container");

    let o = s
        .docker(
            &["run", "-i", "--rm", "busybox", "cat"],
            Some(b"hi\nthere\n"),
        )
        .await;
    assert_ok(&o);
    assert_eq!(
        stdout(&o),
        "hi\nthere\n",
        "stdin through the hijacked connection, EOF by half-close"
    );

    let o = s
        .docker(&["run", "--name", "fails", "busybox", "exit", "7"], None)
        .await;
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let o = s
        .docker(&["run", "--rm", "busybox", "err", "oops"], None)
        .await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "oops\n", "stderr frames reach stderr");
    assert_eq!(stdout(&o), "");
    let o = s
        .docker(
            &[
                "inspect",
                "-f",
                "{{.State.ExitCode}} {{.HostConfig.LogConfig.Type}}",
                "fails",
            ],
            None,
        )
        .await;
    assert_eq!(stdout(&o).trim(), "7 json-file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_container_commands() {
    require_docker!();
    let s = TestServer::start().await;
    let o = s
        .docker(
            &[
                "run", "-d", "--name", "web", "-l", "app=demo", "busybox", "sleep", "60",
            ],
            None,
        )
        .await;
    assert_ok(&o);
    let id = stdout(&o).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let o = s
        .docker(
            &[
                "ps",
                "--filter",
                "status=running",
                "--format",
                "{{.Names}} {{.Status}}",
            ],
            None,
        )
        .await;
    assert_ok(&o);
    assert!(stdout(&o).starts_with("web Up"), "{}", stdout(&o));
    let o = s
        .docker(&["ps", "-q", "--filter", "label=app=demo"], None)
        .await;
    assert_eq!(stdout(&o).trim(), &id[..12]);
    let o = s
        .docker(
            &[
                "inspect",
                "-f",
                "{{.Id}} {{.State.Running}} {{.Name}}",
                &id[..12],
            ],
            None,
        )
        .await;
    assert_eq!(stdout(&o).trim(), format!("{id} true /web"));

    let o = s
        .docker(&["exec", "web", "echo", "from", "exec"], None)
        .await;
    assert_ok(&o);
    assert_eq!(stdout(&o), "from exec\n");
    let o = s
        .docker(&["exec", "-i", "web", "cat"], Some(b"piped\n"))
        .await;
    assert_eq!(stdout(&o), "piped\n");
    let o = s.docker(&["exec", "web", "exit", "3"], None).await;
    assert_eq!(
        o.status.code(),
        Some(3),
        "exec exit code comes from /exec/{{id}}/json"
    );
    let o = s.docker(&["exec", "-d", "web", "sleep", "1"], None).await;
    assert_ok(&o);

    let o = s.docker(&["top", "web"], None).await;
    assert_ok(&o);
    assert!(stdout(&o).contains("sleep 60"));
    let o = s
        .docker(
            &["stats", "--no-stream", "--format", "{{.Name}}", "web"],
            None,
        )
        .await;
    assert_ok(&o);
    assert_eq!(stdout(&o).trim(), "web");
    for args in [
        &["pause", "web"][..],
        &["unpause", "web"],
        &["rename", "web", "web2"],
        &["restart", "-t", "1", "web2"],
    ] {
        let o = s.docker(args, None).await;
        assert_ok(&o);
    }
    let o = s.docker(&["kill", "web2"], None).await;
    assert_ok(&o);
    let o = s.docker(&["wait", "web2"], None).await;
    assert_ok(&o);
    assert_eq!(stdout(&o).trim(), "137");
    let o = s.docker(&["start", "web2"], None).await;
    assert_ok(&o);
    let o = s.docker(&["stop", "-t", "1", "web2"], None).await;
    assert_ok(&o);
    let o = s.docker(&["rm", "web2"], None).await;
    assert_ok(&o);
    assert_eq!(stdout(&o).trim(), "web2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_cp() {
    require_docker!();
    let s = TestServer::start().await;
    let o = s
        .docker(
            &["run", "--name", "talker", "busybox", "echo", "line one"],
            None,
        )
        .await;
    assert_ok(&o);
    let o = s.docker(&["logs", "talker"], None).await;
    assert_ok(&o);
    assert_eq!(stdout(&o), "line one\n");
    let o = s
        .docker(&["logs", "-t", "--tail", "1", "talker"], None)
        .await;
    let out = stdout(&o);
    assert!(
        out.ends_with(" line one\n") && out.starts_with("20"),
        "{out}"
    );
    let o = s.docker(&["logs", "-f", "talker"], None).await;
    assert_eq!(
        stdout(&o),
        "line one\n",
        "follow ends when the container is stopped"
    );

    let o = s
        .docker(&["create", "--name", "box", "busybox", "sleep", "9"], None)
        .await;
    assert_ok(&o);
    let dest = s.dir.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    let o = s
        .docker(&["cp", "box:/etc/hostname", dest.to_str().unwrap()], None)
        .await;
    assert_ok(&o);
    assert!(dest.join("hostname").exists());
    let src = s.dir.path().join("in.txt");
    std::fs::write(&src, "copied in").unwrap();
    let o = s
        .docker(&["cp", src.to_str().unwrap(), "box:/tmp/"], None)
        .await;
    assert_ok(&o);
    let o = s.docker(&["cp", "box:/tmp/in.txt", "-"], None).await;
    assert_ok(&o);
    let mut ar = tar::Archive::new(&o.stdout[..]);
    let mut e = ar.entries().unwrap().next().unwrap().unwrap();
    let mut content = String::new();
    std::io::Read::read_to_string(&mut e, &mut content).unwrap();
    assert_eq!(content, "copied in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_their_exit_codes() {
    require_docker!();
    let s = TestServer::start().await;
    let o = s.docker(&["logs", "ghost"], None).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Error response from daemon: No such container: ghost"),
        "{}",
        stderr(&o)
    );
    let o = s.docker(&["inspect", "ghost"], None).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("No such object: ghost"),
        "{}",
        stderr(&o)
    );
    let o = s.docker(&["start", "ghost"], None).await;
    assert_eq!(o.status.code(), Some(1));
    let o = s.docker(&["run", "--rm", "ghostimage"], None).await;
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(
        err.contains("Unable to find image 'ghostimage:latest' locally")
            && err.contains("pull access denied for ghostimage"),
        "{err}"
    );
    let o = s.docker(&["run", "--name", "x", "busybox"], None).await;
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("Invalid container name (x)"),
        "{}",
        stderr(&o)
    );
    let o = s.docker(&["pull", "nosuchrepo"], None).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "Error response from daemon: pull access denied for nosuchrepo, repository does not exist"
        ),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_and_volumes() {
    require_docker!();
    let s = TestServer::start().await;
    let o = s
        .docker(
            &["import", "-c", "CMD [\"sh\"]", "-", "imported:v1"],
            Some(b"not really a tar but the fake takes it"),
        )
        .await;
    assert_ok(&o);
    assert!(stdout(&o).trim().starts_with("sha256:"), "{}", stdout(&o));
    let o = s
        .docker(
            &["tag", "imported:v1", "example.com:5000/team/imp:v2"],
            None,
        )
        .await;
    assert_ok(&o);
    let o = s
        .docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"], None)
        .await;
    let out = stdout(&o);
    assert!(
        out.contains("imported:v1") && out.contains("example.com:5000/team/imp:v2"),
        "{out}"
    );
    let o = s
        .docker(
            &[
                "image",
                "inspect",
                "-f",
                "{{.Os}}",
                "example.com:5000/team/imp:v2",
            ],
            None,
        )
        .await;
    assert_eq!(stdout(&o).trim(), "linux");
    let o = s.docker(&["history", "imported:v1"], None).await;
    assert_ok(&o);
    let o = s
        .docker(&["rmi", "example.com:5000/team/imp:v2"], None)
        .await;
    assert_ok(&o);
    assert!(stdout(&o).contains("Untagged: example.com:5000/team/imp:v2"));

    let o = s
        .docker(&["volume", "create", "--label", "k=v", "vol1"], None)
        .await;
    assert_ok(&o);
    assert_eq!(stdout(&o).trim(), "vol1");
    let o = s
        .docker(&["volume", "ls", "--format", "{{.Name}} {{.Driver}}"], None)
        .await;
    assert_eq!(stdout(&o).trim(), "vol1 local");
    let o = s
        .docker(&["volume", "inspect", "-f", "{{.Labels.k}}", "vol1"], None)
        .await;
    assert_eq!(stdout(&o).trim(), "v");
    let o = s.docker(&["volume", "rm", "vol1"], None).await;
    assert_ok(&o);
    let o = s.docker(&["volume", "inspect", "vol1"], None).await;
    assert_eq!(o.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_since_until() {
    require_docker!();
    let s = TestServer::start().await;
    let o = s
        .docker(&["create", "--name", "evt", "busybox"], None)
        .await;
    assert_ok(&o);
    let until = (chrono::Utc::now().timestamp() + 1).to_string();
    let o = s
        .docker(
            &[
                "events",
                "--since",
                "1",
                "--until",
                &until,
                "--filter",
                "type=container",
                "--format",
                "{{.Action}} {{.Actor.Attributes.name}}",
            ],
            None,
        )
        .await;
    assert_ok(&o);
    assert_eq!(stdout(&o).trim(), "create evt");
}

/// `docker run -it` under a real pseudo-terminal (driven from Python's pty):
/// raw stream both ways, resize, and the ^D that ends the fake `cat`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_interactive_tty() {
    require_docker!();
    let s = TestServer::start().await;
    let script = r#"
import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execvp("docker", ["docker", "-H", sys.argv[1]] + sys.argv[2:])
out = b""
def pump(secs, until=None):
    global out
    end = time.time() + secs
    while time.time() < end:
        if until is not None and until in out:
            return
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                d = os.read(fd, 4096)
            except OSError:
                return
            if not d:
                return
            out += d
pump(2.0, until=b"")
time.sleep(0.5)
os.write(fd, b"hello tty\r")
pump(5.0, until=b"hello tty\r\n")
os.write(fd, b"\x04")
pump(5.0)
_, status = os.waitpid(pid, 0)
sys.stdout.write(repr(out) + "\n")
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let pty_run = |args: &[&str]| {
        let mut argv = vec!["-c".to_string(), script.to_string(), s.host()];
        argv.extend(args.iter().map(|a| a.to_string()));
        common::run_cmd("python3", argv, None, s.dir.path())
    };
    let o = pty_run(&["run", "-it", "--rm", "--name", "ttyctr", "busybox", "cat"]).await;
    assert_ok(&o);
    assert!(stdout(&o).contains("hello tty\\r\\n"), "{}", stdout(&o));
    let o = s.docker(&["ps", "-aq"], None).await;
    assert_eq!(stdout(&o), "", "--rm removed the tty container");

    let o = s
        .docker(
            &["run", "-d", "--name", "host", "busybox", "sleep", "60"],
            None,
        )
        .await;
    assert_ok(&o);
    let o = pty_run(&["exec", "-it", "host", "cat"]).await;
    assert_ok(&o);
    assert!(
        stdout(&o).contains("hello tty\\r\\n"),
        "exec -it: {}",
        stdout(&o)
    );
}
