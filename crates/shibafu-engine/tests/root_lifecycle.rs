//! The real lifecycle, as root: overlay rootfs, supervisors, libcontainer.
//!
//! Needs root and a private mount+net namespace, and the supervisor binary:
//! ```sh
//! cargo build -p shibafu-runtime --bin shibafu-supervisor
//! unshare --net --mount -- cargo test -p shibafu-engine --test root_lifecycle -- --ignored --test-threads=1
//! ```
//! `SHIBAFU_SUPERVISOR` may point at the binary (default: next to the test's
//! target dir).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard_stubs::models::*;
use bytes::Bytes;
use futures::StreamExt;
use shibafu_api::*;
use shibafu_engine::{Engine, EngineConfig};
use shibafu_image::ImageStore;
use tokio::io::AsyncWriteExt;

fn supervisor() -> PathBuf {
    if let Ok(p) = std::env::var("SHIBAFU_SUPERVISOR") {
        return p.into();
    }
    // target/debug/deps/<test> -> target/debug/shibafu-supervisor
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("shibafu-supervisor")
}

/// A busybox rootfs tarball built from the host's static busybox.
fn busybox_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, p: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, p, std::io::empty()).unwrap();
    };
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        dir(&mut b, d);
    }
    let bb = std::fs::read("/bin/busybox").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(bb.len() as u64);
    b.append_data(&mut h, "bin/busybox", bb.as_slice()).unwrap();
    for app in [
        "sh", "echo", "sleep", "cat", "ls", "true", "false", "env", "id", "hostname", "ps", "pwd",
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{app}"), "busybox")
            .unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(passwd.len() as u64);
    b.append_data(&mut h, "etc/passwd", &passwd[..]).unwrap();
    let group = b"root:x:0:\nnogroup:x:65534:\n";
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(group.len() as u64);
    b.append_data(&mut h, "etc/group", &group[..]).unwrap();
    b.into_inner().unwrap()
}

struct Env {
    dir: tempfile::TempDir,
    store: Arc<ImageStore>,
    e: Arc<Engine>,
}

fn cfg(dir: &Path) -> EngineConfig {
    EngineConfig {
        data_root: dir.join("data"),
        exec_root: dir.join("run"),
        exe: supervisor(),
        default_log_max_size: None,
        default_log_max_file: 1,
        init_path: None,
    }
}

async fn env() -> Env {
    assert!(nix::unistd::geteuid().is_root(), "run as root");
    assert!(supervisor().exists(), "build shibafu-supervisor first");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ImageStore::open(&dir.path().join("data/image")).unwrap());
    let body: BoxStream<std::io::Result<Bytes>> =
        Box::pin(futures::stream::iter([Ok(Bytes::from(busybox_tar()))]));
    store
        .image_import(
            ImportOptions {
                repo: Some("busybox:latest".into()),
                ..Default::default()
            },
            body,
        )
        .await
        .unwrap();
    let e = Engine::new(cfg(dir.path()), store.clone()).await.unwrap();
    Env { dir, store, e }
}

fn body(cmd: &[&str]) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some("busybox".into()),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn logs(e: &Engine, id: &str) -> String {
    let s = e
        .container_logs(
            id,
            LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let v: Vec<LogEntry> = s.entries.collect().await;
    v.iter()
        .map(|e| String::from_utf8_lossy(&e.data).into_owned())
        .collect()
}

async fn state(e: &Engine, id: &str) -> ContainerState {
    e.container_inspect(id, false).await.unwrap().state.unwrap()
}

fn mounts_under(p: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_string_lossy().into_owned();
    info.lines().filter(|l| l.contains(&p)).count()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "root: run inside unshare --net --mount with --ignored"]
async fn run_logs_exit_code_and_cleanup() {
    let t = env().await;
    let e = &t.e;
    let id = e
        .container_create(
            Some("one".into()),
            body(&["sh", "-c", "echo hello; echo oops >&2; exit 3"]),
        )
        .await
        .unwrap()
        .id;
    let w = e
        .container_wait("one", WaitCondition::NextExit)
        .await
        .unwrap();
    e.container_start("one").await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .unwrap()
            .unwrap(),
        3
    );
    let s = state(e, "one").await;
    assert_eq!(s.status.unwrap().to_string(), "exited");
    assert_eq!(s.exit_code, Some(3));
    let l = logs(e, "one").await;
    assert!(l.contains("hello\n") && l.contains("oops\n"), "{l:?}");
    // Nothing stays mounted for a stopped container.
    assert_eq!(
        mounts_under(&t.dir.path().join("data/containers").join(&id)),
        0
    );
    e.container_remove("one", false, false).await.unwrap();
    assert!(!t.dir.path().join("data/containers").join(&id).exists());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "root: run inside unshare --net --mount with --ignored"]
async fn missing_command_is_127_and_stays_created() {
    let t = env().await;
    let e = &t.e;
    e.container_create(Some("bad".into()), body(&["/nope"]))
        .await
        .unwrap();
    let err = e.container_start("bad").await.unwrap_err().to_string();
    assert!(
        err.contains("no such file or directory") || err.contains("executable file not found"),
        "{err}"
    );
    let s = state(e, "bad").await;
    assert_eq!(s.status.unwrap().to_string(), "created");
    assert_eq!(s.exit_code, Some(127));
    e.container_remove("bad", false, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "root: run inside unshare --net --mount with --ignored"]
async fn exec_top_stats_cp_stop() {
    let t = env().await;
    let e = &t.e;
    let mut b = body(&["sleep", "1000"]);
    b.hostname = Some("box".into());
    e.container_create(Some("srv".into()), b).await.unwrap();
    e.container_start("srv").await.unwrap();
    let x = e
        .exec_create(
            "srv",
            ExecConfig {
                cmd: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    "hostname; cat /etc/hostname; exit 4".into(),
                ]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let s = e
        .exec_start(&x.id, ExecStartConfig::default())
        .await
        .unwrap()
        .unwrap();
    let out: Vec<OutputChunk> = s.output.collect().await;
    let text: String = out
        .iter()
        .map(|c| String::from_utf8_lossy(&c.data).into_owned())
        .collect();
    assert_eq!(text, "box\nbox\n");
    for _ in 0..100 {
        if e.exec_inspect(&x.id).await.unwrap().exit_code.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(e.exec_inspect(&x.id).await.unwrap().exit_code, Some(4));

    let top = e.container_top("srv", None).await.unwrap();
    let procs = top.processes.unwrap();
    assert!(
        procs
            .iter()
            .any(|p| p.last().unwrap().contains("sleep 1000")),
        "{procs:?}"
    );

    let st: Vec<_> = e
        .container_stats("srv", false, true)
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(st.len(), 1);
    assert!(st[0].memory_stats.as_ref().unwrap().usage.unwrap_or(0) > 0);

    // cp in and out.
    let mut tb = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(3);
    tb.append_data(&mut h, "hello.txt", &b"hi\n"[..]).unwrap();
    let data = Bytes::from(tb.into_inner().unwrap());
    e.container_archive_put(
        "srv",
        "/tmp",
        false,
        false,
        Box::pin(futures::stream::iter([Ok(data)])),
    )
    .await
    .unwrap();
    let (stat, stream) = e
        .container_archive_get("srv", "/tmp/hello.txt")
        .await
        .unwrap();
    assert_eq!(stat.name, "hello.txt");
    assert_eq!(stat.size, 3);
    let bytes: Vec<u8> = stream
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    let mut ar = tar::Archive::new(bytes.as_slice());
    let mut ent = ar.entries().unwrap().next().unwrap().unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut ent, &mut s).unwrap();
    assert_eq!(s, "hi\n");

    let started = std::time::Instant::now();
    e.container_stop("srv", None, Some(5)).await.unwrap();
    // sleep as PID 1 ignores SIGTERM: killed after the grace period.
    assert_eq!(state(e, "srv").await.exit_code, Some(137));
    assert!(started.elapsed() >= Duration::from_secs(5));
    e.container_remove("srv", true, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "root: run inside unshare --net --mount with --ignored"]
async fn attach_before_start_gets_stdin_and_output() {
    let t = env().await;
    let e = &t.e;
    let mut b = body(&["cat"]);
    b.open_stdin = Some(true);
    b.stdin_once = Some(true);
    b.attach_stdin = Some(true);
    b.attach_stdout = Some(true);
    e.container_create(Some("cat".into()), b).await.unwrap();
    let mut a = e
        .container_attach(
            "cat",
            AttachOptions {
                stream: true,
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut stdin = a.stdin.take().unwrap();
    stdin.write_all(b"typed before start\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    let w = e
        .container_wait("cat", WaitCondition::NextExit)
        .await
        .unwrap();
    e.container_start("cat").await.unwrap();
    let out: Vec<OutputChunk> = tokio::time::timeout(Duration::from_secs(20), a.output.collect())
        .await
        .unwrap();
    let text: String = out
        .iter()
        .map(|c| String::from_utf8_lossy(&c.data).into_owned())
        .collect();
    assert_eq!(text, "typed before start\n");
    assert_eq!(w.await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "root: run inside unshare --net --mount with --ignored"]
async fn containers_outlive_the_engine() {
    let t = env().await;
    let dir = t.dir;
    let store = t.store;
    let e = t.e;
    let id = e
        .container_create(
            Some("long".into()),
            body(&[
                "sh",
                "-c",
                "trap 'exit 7' TERM; echo up; while true; do sleep 0.1; done",
            ]),
        )
        .await
        .unwrap()
        .id;
    e.container_create(Some("short".into()), body(&["sleep", "1"]))
        .await
        .unwrap();
    e.container_start("long").await.unwrap();
    e.container_start("short").await.unwrap();
    let pid = state(&e, "long").await.pid.unwrap();
    e.shutdown().await;
    let weak = Arc::downgrade(&e);
    drop(e);
    for _ in 0..200 {
        if weak.strong_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // "short" exits while no daemon runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "container died with the engine"
    );
    let e = Engine::new(cfg(dir.path()), store).await.unwrap();
    let s = state(&e, "long").await;
    assert_eq!(s.status.unwrap().to_string(), "running");
    assert_eq!(s.pid, Some(pid));
    let s = state(&e, "short").await;
    assert_eq!(s.status.unwrap().to_string(), "exited");
    assert_eq!(s.exit_code, Some(0));
    assert_eq!(
        mounts_under(
            &dir.path().join("data/containers").join(
                e.container_inspect("short", false)
                    .await
                    .unwrap()
                    .id
                    .unwrap()
            )
        ),
        0
    );
    // The re-adopted container works: logs, stop.
    assert!(logs(&e, "long").await.contains("up\n"));
    e.container_stop("long", None, Some(10)).await.unwrap();
    assert_eq!(state(&e, "long").await.exit_code, Some(7));
    e.container_remove(&id, false, false).await.unwrap();
}
