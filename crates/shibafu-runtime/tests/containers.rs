//! Real containers (root): each test re-executes itself inside
//! `unshare --mount --net` so mounts and network stay private, builds a
//! busybox rootfs from the host's static /bin/busybox, and drives the
//! supervisor binary through the public client API.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use shibafu_runtime::logfile::{read_log, ReadOptions};
use shibafu_runtime::{
    spawn, ClientError, ExecSpec, LogConfig, OutputStream, ProcessConfig, RunConfig, Supervisor,
    SupervisorDirs,
};
use tokio::io::AsyncWriteExt;

const EXE: &str = env!("CARGO_BIN_EXE_shibafu-supervisor");

/// Runs `test` inside a private mount+net namespace (re-executing this test
/// binary for just this test). Returns false when we are the outer process.
fn in_namespace(name: &str) -> bool {
    if std::env::var_os("SHIBAFU_RT_IN_NS").is_some() {
        return true;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {name}: needs root");
        return false;
    }
    let me = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private"])
        .arg(&me)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("SHIBAFU_RT_IN_NS", "1")
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(out.status.success(), "{name} failed inside the namespace");
    assert!(
        stdout.contains("1 passed"),
        "{name} did not run inside the namespace"
    );
    false
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    rootfs: PathBuf,
}

fn rand_id() -> String {
    let mut b = [0u8; 32];
    let f = std::fs::read("/proc/sys/kernel/random/uuid").unwrap();
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    for (i, x) in b.iter_mut().enumerate() {
        *x = f[i % f.len()] ^ (n >> (i % 16)) as u8;
    }
    b.iter().map(|x| format!("{:02x}", x)).collect::<String>()[..64].to_string()
}

fn busybox_rootfs(dir: &Path) {
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "sbin"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(dir.join("etc/notexec"), "just data\n").unwrap();
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let rootfs = root.join("rootfs");
        busybox_rootfs(&rootfs);
        Env {
            _tmp: tmp,
            root,
            rootfs,
        }
    }

    fn cfg(&self, args: &[&str]) -> RunConfig {
        let id = rand_id();
        RunConfig {
            id: id.clone(),
            rootfs: self.rootfs.clone(),
            hostname: id[..12].to_string(),
            process: ProcessConfig {
                args: args.iter().map(|s| s.to_string()).collect(),
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                    format!("HOSTNAME={}", &id[..12]),
                ],
                cwd: "/".into(),
                ..Default::default()
            },
            log: LogConfig {
                path: self.root.join(format!("containers/{id}/{id}-json.log")),
                max_size: None,
                max_file: 1,
            },
            stop_signal: 15,
            cgroups_path: format!("/shibafu-test/{id}"),
            labels: BTreeMap::new(),
            ..Default::default()
        }
    }

    fn dirs(&self, cfg: &RunConfig) -> SupervisorDirs {
        SupervisorDirs {
            bundle: self.root.join(format!("containers/{}/bundle", cfg.id)),
            run_dir: self.root.join(format!("exec/containers/{}", cfg.id)),
            runtime_root: self.root.join("exec/runtime"),
        }
    }
}

fn log_text(cfg: &RunConfig) -> String {
    read_log(&cfg.log, &ReadOptions::default())
        .iter()
        .map(|e| String::from_utf8_lossy(&e.bytes).into_owned())
        .collect()
}

/// Nothing of the container is left: state, cgroups, run dir, processes.
fn assert_gone(cfg: &RunConfig, dirs: &SupervisorDirs) {
    assert!(
        !dirs.runtime_root.join(&cfg.id).exists(),
        "libcontainer state left"
    );
    for c in [
        "memory", "pids", "cpu", "freezer", "devices", "blkio", "unified",
    ] {
        let p = Path::new("/sys/fs/cgroup")
            .join(c)
            .join(cfg.cgroups_path.trim_start_matches('/'));
        assert!(!p.exists(), "cgroup left: {}", p.display());
    }
    assert!(!dirs.socket().exists(), "sup.sock left");
    assert!(!dirs.run_dir.exists(), "run dir left");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn collect(mut out: shibafu_runtime::OutputRx) -> (String, String) {
    let mut o = String::new();
    let mut e = String::new();
    while let Some((s, b)) = out.next().await {
        match s {
            OutputStream::Stdout => o.push_str(&String::from_utf8_lossy(&b)),
            OutputStream::Stderr => e.push_str(&String::from_utf8_lossy(&b)),
        }
    }
    (o, e)
}

/// The goal of issue 2 for an idle supervisor's VmRSS (conmon: 1.9 MiB).
const IDLE_SUPERVISOR_RSS_KIB: u64 = 1024;

/// The binary for the idle-RSS check and the bound it must meet. With
/// `SHIBAFU_BIN` (the product binary, as tests/integration uses it): the
/// goal itself. Otherwise this crate's test binary, which differs from the
/// product in two ways shedding cannot undo: it is position-independent
/// (crates/shibafu/build.rs links the product without PIE), so its RELRO
/// pages are relocated private copies, excluded from the check; and in a
/// debug build its unoptimized code spreads the idle loop over ~1 MiB of
/// text, so the bound is looser there.
fn idle_rss_subject() -> (PathBuf, bool) {
    match std::env::var_os("SHIBAFU_BIN") {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(EXE), false),
    }
}

/// VmRSS of `pid` minus, unless `product`, the relocated (anonymous) pages
/// of its own executable's read-only mappings (see [`idle_rss_subject`]).
fn idle_rss_kib(pid: i32, exe: &Path, product: bool) -> (u64, u64) {
    let rss = rss_kib(pid);
    if product {
        return (rss, IDLE_SUPERVISOR_RSS_KIB);
    }
    let exe = std::fs::canonicalize(exe).unwrap();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut relocated, mut mine) = (0, false);
    for l in smaps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if l.starts_with(|c: char| c.is_ascii_hexdigit()) && f.len() >= 5 && f[0].contains('-') {
            mine = f.get(5) == Some(&exe.to_str().unwrap()) && f[1].starts_with("r-");
        } else if mine && f.first() == Some(&"Anonymous:") {
            relocated += f[1].parse::<u64>().unwrap();
        }
    }
    let bound = if cfg!(debug_assertions) {
        3 * IDLE_SUPERVISOR_RSS_KIB
    } else {
        IDLE_SUPERVISOR_RSS_KIB
    };
    (rss - relocated.min(rss), bound)
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn echo_log_exit_codes_and_cleanup() {
    if !in_namespace("echo_log_exit_codes_and_cleanup") {
        return;
    }
    let env = Env::new();
    rt().block_on(async {
        let cfg = env.cfg(&["sh", "-c", "echo hi; echo oops >&2"]);
        let dirs = env.dirs(&cfg);
        let t0 = Instant::now();
        let sup = spawn(Path::new(EXE), &cfg, &dirs).await.unwrap();
        let created = t0.elapsed();
        assert!(sup.container_pid() > 0);
        assert!(Path::new(&format!("/proc/{}/ns/net", sup.container_pid())).exists());
        sup.start().await.unwrap();
        let st = sup.wait().await.unwrap();
        println!("create {:?}, create->exit {:?}", created, t0.elapsed());
        assert_eq!(st.code, 0);
        assert_eq!(st.signal, None);
        assert!(!st.oom_killed);
        let entries = read_log(&cfg.log, &ReadOptions::default());
        assert_eq!(entries.len(), 2);
        let out = entries
            .iter()
            .find(|e| e.stream == OutputStream::Stdout)
            .unwrap();
        assert_eq!(&out.bytes[..], b"hi\n");
        let err = entries
            .iter()
            .find(|e| e.stream == OutputStream::Stderr)
            .unwrap();
        assert_eq!(&err.bytes[..], b"oops\n");
        let raw = std::fs::read_to_string(&cfg.log.path).unwrap();
        assert!(
            raw.contains(r#"{"log":"hi\n","stream":"stdout","time":""#),
            "{raw}"
        );
        assert_eq!(shibafu_runtime::read_exit_status(&dirs).unwrap().code, 0);
        assert_gone(&cfg, &dirs);
        // A second waiter after the fact gets the recorded status.
        assert_eq!(sup.wait().await.unwrap().code, 0);
        assert!(matches!(
            Supervisor::connect(&dirs).await,
            Err(ClientError::Gone)
        ));

        let cfg = env.cfg(&["sh", "-c", "exit 3"]);
        let dirs = env.dirs(&cfg);
        let sup = spawn(Path::new(EXE), &cfg, &dirs).await.unwrap();
        // Several waiters at once.
        let (a, b) = (sup.clone(), sup.clone());
        let w1 = tokio::spawn(async move { a.wait().await });
        let w2 = tokio::spawn(async move { b.wait().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        sup.start().await.unwrap();
        assert_eq!(w1.await.unwrap().unwrap().code, 3);
        assert_eq!(w2.await.unwrap().unwrap().code, 3);
        assert_gone(&cfg, &dirs);
    });
}

#[test]
fn kill_gives_137_and_rootfs_is_unmounted() {
    if !in_namespace("kill_gives_137_and_rootfs_is_unmounted") {
        return;
    }
    let env = Env::new();
    // Make the rootfs a mount point, as the overlay is in real use.
    nix::mount::mount(
        Some(&env.rootfs),
        &env.rootfs,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    rt().block_on(async {
        let cfg = env.cfg(&["sleep", "100"]);
        let dirs = env.dirs(&cfg);
        let (exe, product) = idle_rss_subject();
        let sup = spawn(&exe, &cfg, &dirs).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        println!(
            "supervisor VmRSS after create: {} KiB",
            rss_kib(sup.supervisor_pid())
        );
        sup.start().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        println!(
            "supervisor VmRSS right after start: {} KiB",
            rss_kib(sup.supervisor_pid())
        );
        // Idle: the supervisor sheds what start-up touched 2 s after the
        // start (crate::shed) and must stay under 1 MiB (issue 2: conmon
        // takes 1.9 MiB).
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let (rss, bound) = idle_rss_kib(sup.supervisor_pid(), &exe, product);
        println!(
            "supervisor VmRSS idle: {} KiB ({} KiB counted, bound {bound} KiB, {})",
            rss_kib(sup.supervisor_pid()),
            rss,
            exe.display()
        );
        if std::env::var_os("SHIBAFU_RT_SMAPS").is_some() {
            let sm =
                std::fs::read_to_string(format!("/proc/{}/smaps", sup.supervisor_pid())).unwrap();
            let mut cur = String::new();
            for l in sm.lines() {
                if l.contains('-') && !l.starts_with(|c: char| c.is_ascii_uppercase()) {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    cur = format!("{} {}", f[1], f.get(5).unwrap_or(&""));
                } else if let Some(v) = l.strip_prefix("Rss:") {
                    if v.trim() != "0 kB" {
                        println!("{:>8} {}", v.trim(), cur);
                    }
                }
            }
            println!(
                "{}",
                std::fs::read_to_string(format!("/proc/{}/smaps_rollup", sup.supervisor_pid()))
                    .unwrap()
            );
        }
        assert!(
            rss > 0 && rss <= bound,
            "idle supervisor RSS {rss} KiB > {bound} KiB (SHIBAFU_RT_SMAPS=1 prints its mappings)"
        );
        // Still fully working after shedding: state, and an exec (which
        // runs the libcontainer code that was shed).
        assert_eq!(
            sup.state().await.unwrap(),
            shibafu_runtime::SupervisorState::Running
        );
        let h = sup
            .exec(ExecSpec {
                args: vec!["sh".into(), "-c".into(), "echo shed-ok".into()],
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let (_, out) = h.take_stdio().unwrap();
        let (o, _) = collect(out).await;
        assert_eq!(o, "shed-ok\n");
        assert_eq!(h.wait().await.unwrap(), 0);
        sup.signal(9).await.unwrap();
        let st = sup.wait().await.unwrap();
        assert_eq!(st.code, 137);
        assert_eq!(st.signal, Some(9));
        assert_gone(&cfg, &dirs);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&format!(" {} ", env.rootfs.display())),
            "rootfs still mounted"
        );
    });
}

#[test]
fn tty_output_and_resize() {
    if !in_namespace("tty_output_and_resize") {
        return;
    }
    let env = Env::new();
    rt().block_on(async {
        let mut cfg = env.cfg(&["sh", "-c", "sleep 0.3; stty size; echo hello"]);
        cfg.process.tty = true;
        cfg.process.console_size = Some((30, 100));
        let dirs = env.dirs(&cfg);
        let sup = spawn(Path::new(EXE), &cfg, &dirs).await.unwrap();
        let (stdin, out) = sup.attach(false, true, true).await.unwrap();
        assert!(stdin.is_none());
        sup.resize(40, 120).await.unwrap();
        sup.start().await.unwrap();
        let (o, e) = collect(out).await;
        assert_eq!(o, "40 120\r\nhello\r\n");
        assert_eq!(e, "");
        assert_eq!(sup.wait().await.unwrap().code, 0);
        assert!(log_text(&cfg).contains("hello\r\n"));
        assert_gone(&cfg, &dirs);
    });
}

#[test]
fn attach_stdin_before_start() {
    if !in_namespace("attach_stdin_before_start") {
        return;
    }
    let env = Env::new();
    rt().block_on(async {
        let mut cfg = env.cfg(&["cat"]);
        cfg.process.open_stdin = true;
        cfg.process.stdin_once = true;
        let dirs = env.dirs(&cfg);
        let sup = spawn(Path::new(EXE), &cfg, &dirs).await.unwrap();
        let (stdin, out) = sup.attach(true, true, true).await.unwrap();
        let mut stdin = stdin.unwrap();
        stdin.write_all(b"ping\n").await.unwrap();
        stdin.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        sup.start().await.unwrap();
        stdin.write_all(b"pong\n").await.unwrap();
        stdin.shutdown().await.unwrap();
        let (o, _) = collect(out).await;
        assert_eq!(o, "ping\npong\n");
        assert_eq!(sup.wait().await.unwrap().code, 0);
        assert_eq!(log_text(&cfg), "ping\npong\n");
    });
}

#[test]
fn exec_streams_codes_and_errors() {
    if !in_namespace("exec_streams_codes_and_errors") {
        return;
    }
    let env = Env::new();
    rt().block_on(async {
        let cfg = env.cfg(&["sleep", "100"]);
        let dirs = env.dirs(&cfg);
        let sup = spawn(Path::new(EXE), &cfg, &dirs).await.unwrap();
        // Exec before start is refused.
        let e = sup
            .exec(ExecSpec {
                args: vec!["true".into()],
                ..Default::default()
            })
            .await;
        assert!(e.is_err());
        sup.start().await.unwrap();

        let h = sup
            .exec(ExecSpec {
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo out; echo err >&2; id -u; exit 5".into(),
                ],
                user: "nobody".into(),
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(h.pid() > 0);
        let (_, out) = h.take_stdio().unwrap();
        let (o, e) = collect(out).await;
        assert_eq!(o, "out\n65534\n");
        assert_eq!(e, "err\n");
        assert_eq!(h.wait().await.unwrap(), 5);

        // stdin + EOF
        let h = sup
            .exec(ExecSpec {
                args: vec!["cat".into()],
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let (stdin, out) = h.take_stdio().unwrap();
        let mut stdin = stdin.unwrap();
        stdin.write_all(b"via exec\n").await.unwrap();
        stdin.shutdown().await.unwrap();
        let (o, _) = collect(out).await;
        assert_eq!(o, "via exec\n");
        assert_eq!(h.wait().await.unwrap(), 0);

        // tty exec
        let h = sup
            .exec(ExecSpec {
                args: vec!["sh".into(), "-c".into(), "stty size".into()],
                tty: true,
                stdout: true,
                console_size: Some((24, 80)),
                ..Default::default()
            })
            .await
            .unwrap();
        let (_, out) = h.take_stdio().unwrap();
        let (o, _) = collect(out).await;
        assert_eq!(o, "24 80\r\n");
        assert_eq!(h.wait().await.unwrap(), 0);

        // Docker's wording for commands that cannot run.
        let err = sup
            .exec(ExecSpec {
                args: vec!["nope".into()],
                stdout: true,
                ..Default::default()
            })
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(r#"exec: "nope": executable file not found in $PATH"#),
            "{err}"
        );
        let err = sup
            .exec(ExecSpec {
                args: vec!["/etc/notexec".into()],
                ..Default::default()
            })
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("permission denied"), "{err}");

        // The output of an exec is not in the container log.
        sup.signal(9).await.unwrap();
        assert_eq!(sup.wait().await.unwrap().code, 137);
        assert_eq!(log_text(&cfg), "");
        assert_gone(&cfg, &dirs);
    });
}

#[test]
fn missing_and_non_executable_commands() {
    if !in_namespace("missing_and_non_executable_commands") {
        return;
    }
    let env = Env::new();
    rt().block_on(async {
        for (args, want) in [
            (
                vec!["nope"],
                r#"exec: "nope": executable file not found in $PATH"#,
            ),
            (
                vec!["/bin/nope"],
                r#"exec: "/bin/nope": stat /bin/nope: no such file or directory"#,
            ),
            (
                vec!["/etc/notexec"],
                r#"exec: "/etc/notexec": permission denied"#,
            ),
        ] {
            let cfg = env.cfg(&args);
            let dirs = env.dirs(&cfg);
            let err = spawn(Path::new(EXE), &cfg, &dirs)
                .await
                .expect_err("spawn must fail")
                .to_string();
            assert!(err.contains(want), "{err}");
            assert_gone(&cfg, &dirs);
        }
        // Unknown user: refused before anything runs.
        let mut cfg = env.cfg(&["true"]);
        cfg.process.user = "ghost".into();
        let dirs = env.dirs(&cfg);
        let err = spawn(Path::new(EXE), &cfg, &dirs).await.err().unwrap();
        assert!(matches!(err, ClientError::Spec(_)), "{err}");
        assert!(err.to_string().contains("unable to find user ghost"));

        // The command vanishes between create and start: start fails in
        // Docker's words, the exit is recorded as 127, all is cleaned.
        std::fs::copy("/bin/busybox", env.rootfs.join("bin/vanish")).unwrap();
        let cfg = env.cfg(&["/bin/vanish", "true"]);
        let dirs = env.dirs(&cfg);
        let sup = spawn(Path::new(EXE), &cfg, &dirs).await.unwrap();
        std::fs::remove_file(env.rootfs.join("bin/vanish")).unwrap();
        let err = sup.start().await.err().unwrap().to_string();
        assert!(err.contains("no such file or directory"), "{err}");
        let st = sup.wait().await.unwrap();
        assert_eq!(st.code, 127);
        assert!(st.error.unwrap().contains("no such file or directory"));
        assert_gone(&cfg, &dirs);
    });
}

#[test]
fn spawn_helper() {
    // Used by `supervisor_outlives_its_spawner`: spawns and starts a
    // container described by the environment, then exits.
    let Some(spec) = std::env::var_os("SHIBAFU_RT_SPAWN") else {
        return;
    };
    let (cfg, dirs): (RunConfig, SupervisorDirs) =
        serde_json::from_str(spec.to_str().unwrap()).unwrap();
    rt().block_on(async {
        let sup = spawn(Path::new(EXE), &cfg, &dirs).await.unwrap();
        sup.start().await.unwrap();
        println!("SUPERVISOR_PID={}", sup.supervisor_pid());
    });
}

#[test]
fn supervisor_outlives_its_spawner_and_pause_resume() {
    if !in_namespace("supervisor_outlives_its_spawner_and_pause_resume") {
        return;
    }
    let env = Env::new();
    let cfg = env.cfg(&["sh", "-c", "while true; do echo tick; sleep 0.05; done"]);
    let dirs = env.dirs(&cfg);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "spawn_helper", "--nocapture"])
        .env(
            "SHIBAFU_RT_SPAWN",
            serde_json::to_string(&(&cfg, &dirs)).unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The spawner is gone; the container keeps running and logging.
    rt().block_on(async {
        let sup = Supervisor::connect(&dirs).await.unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", sup.supervisor_pid())).unwrap();
        let ppid: i32 = stat
            .rsplit(") ")
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(
            ppid,
            std::process::id() as i32,
            "supervisor must not be our child"
        );
        let n0 = log_text(&cfg).len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n1 = log_text(&cfg).len();
        assert!(n1 > n0, "log keeps growing");
        println!(
            "supervisor VmRSS while the container runs: {} KiB",
            rss_kib(sup.supervisor_pid())
        );

        sup.pause().await.unwrap();
        let freezer = Path::new("/sys/fs/cgroup/freezer")
            .join(cfg.cgroups_path.trim_start_matches('/'))
            .join("freezer.state");
        assert_eq!(std::fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let p0 = log_text(&cfg).len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(log_text(&cfg).len(), p0, "paused container must not log");
        sup.resume().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(log_text(&cfg).len() > p0, "resumed container logs again");

        // Live update of the memory limit.
        sup.update(&shibafu_runtime::Resources {
            memory: Some(64 << 20),
            ..Default::default()
        })
        .await
        .unwrap();
        let limit = std::fs::read_to_string(
            Path::new("/sys/fs/cgroup/memory")
                .join(cfg.cgroups_path.trim_start_matches('/'))
                .join("memory.limit_in_bytes"),
        )
        .unwrap();
        assert_eq!(limit.trim(), (64u64 << 20).to_string());

        // SIGKILL while paused still ends it.
        sup.pause().await.unwrap();
        sup.signal(9).await.unwrap();
        assert_eq!(sup.wait().await.unwrap().code, 137);
        assert_gone(&cfg, &dirs);
    });
}

#[test]
fn init_runs_under_tini() {
    if !in_namespace("init_runs_under_tini") {
        return;
    }
    if !Path::new("/usr/bin/tini-static").exists() {
        eprintln!("tini-static not installed (apt-get install tini)");
        return;
    }
    let env = Env::new();
    rt().block_on(async {
        let mut cfg = env.cfg(&["sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '"]);
        cfg.init = true;
        let dirs = env.dirs(&cfg);
        let sup = spawn(Path::new(EXE), &cfg, &dirs).await.unwrap();
        let (_, out) = sup.attach(false, true, true).await.unwrap();
        sup.start().await.unwrap();
        let (o, e) = collect(out).await;
        assert_eq!(e, "");
        assert!(o.starts_with("2\n/sbin/docker-init -- sh"), "{o}");
        assert_eq!(sup.wait().await.unwrap().code, 0);
        assert_gone(&cfg, &dirs);
    });
}

#[test]
fn confinement_defaults() {
    if !in_namespace("confinement_defaults") {
        return;
    }
    let env = Env::new();
    rt().block_on(async {
        let script = "grep CapBnd /proc/self/status; \
                      grep Seccomp: /proc/self/status; \
                      wc -c < /proc/timer_list; \
                      grep -q ' /proc/sys ro,' /proc/self/mountinfo && echo ro-ok; \
                      hostname; ls /sys/fs/cgroup | head -1 >/dev/null && echo cg-ok; \
                      ulimit -n";
        let cfg = env.cfg(&["sh", "-c", script]);
        let dirs = env.dirs(&cfg);
        let sup = spawn(Path::new(EXE), &cfg, &dirs).await.unwrap();
        let (_, out) = sup.attach(false, true, true).await.unwrap();
        sup.start().await.unwrap();
        let (o, e) = collect(out).await;
        println!("{o}{e}");
        assert!(o.contains("CapBnd:\t00000000a80425fb"), "{o}");
        assert!(o.contains("Seccomp:\t2"), "{o}");
        assert!(o.contains("\n0\n"), "/proc/timer_list must be masked: {o}");
        assert!(o.contains("ro-ok"), "{o}{e}");
        assert!(o.contains(&cfg.hostname), "{o}");
        assert!(o.contains("cg-ok"));
        let nofile = o.trim_end().rsplit('\n').next().unwrap();
        let host_nofile =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .unwrap()
                .0;
        assert_eq!(nofile, host_nofile.to_string(), "nofile is inherited");
        assert_eq!(sup.wait().await.unwrap().code, 0);
    });
}

#[test]
fn cleanup_after_a_crashed_supervisor() {
    if !in_namespace("cleanup_after_a_crashed_supervisor") {
        return;
    }
    let env = Env::new();
    rt().block_on(async {
        let cfg = env.cfg(&["sleep", "100"]);
        let dirs = env.dirs(&cfg);
        let sup = spawn(Path::new(EXE), &cfg, &dirs).await.unwrap();
        sup.start().await.unwrap();
        let cpid = sup.container_pid();
        // The supervisor dies hard; the container is orphaned.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sup.supervisor_pid()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(matches!(
            Supervisor::connect(&dirs).await,
            Err(ClientError::Gone)
        ));
        assert!(shibafu_runtime::read_exit_status(&dirs).is_none());
        assert!(Path::new(&format!("/proc/{cpid}")).exists());
        let errs = shibafu_runtime::cleanup(&cfg.id, &dirs, &cfg.rootfs);
        assert!(errs.is_empty(), "{errs:?}");
        // The orphan is killed (it may linger as a zombie of init).
        let stat = std::fs::read_to_string(format!("/proc/{cpid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "{stat}");
        assert_gone(&cfg, &dirs);
    });
}
