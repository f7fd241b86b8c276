//! The engine's side: start a supervisor (`spawn`), talk to it
//! ([`Supervisor`], tokio), re-adopt it after a daemon restart
//! (`Supervisor::connect`), and clean up after one that crashed
//! (`cleanup`). Each call opens its own connection to `sup.sock` (see
//! [`crate::proto`]).

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use crate::config::{Resources, RunConfig};
use crate::proto::{self, Ready, Request, Response, State};
pub use crate::spec::ExecSpec;
use crate::spec::{HostInfo, SpecError};
use crate::{ExitStatus, OutputStream, SupervisorDirs};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration cannot become a valid container.
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// The rootfs or namespaces could not be prepared (e.g. the working
    /// directory is a file).
    #[error("{0}")]
    Prepare(#[from] crate::prepare::PrepareError),
    /// The supervisor is not running (the container is not running).
    #[error("the container's supervisor is not running")]
    Gone,
    /// The supervisor refused or failed (message in Docker's words where
    /// Docker has some, e.g. `exec: "x": executable file not found in $PATH`).
    #[error("{0}")]
    Runtime(String),
    #[error("{what}: {err}")]
    Io { what: String, err: io::Error },
    #[error("supervisor protocol error: {0}")]
    Protocol(String),
}

fn cio(what: impl Into<String>) -> impl FnOnce(io::Error) -> ClientError {
    let what = what.into();
    move |err| ClientError::Io { what, err }
}

/// A connected container supervisor. Cheap to clone; every operation uses
/// a fresh connection, so it is safe to share.
#[derive(Debug, Clone)]
pub struct Supervisor {
    dirs: SupervisorDirs,
    container_pid: i32,
    supervisor_pid: i32,
}

/// Writes a shibafu.json + config.json bundle and starts `exe supervise`,
/// fully detached (own session, double fork: not the daemon's child, stdio
/// on /dev/null). Returns once the container is created: namespaces exist,
/// the process has not exec'd yet. On error nothing is left running.
pub async fn spawn(
    exe: &Path,
    cfg: &RunConfig,
    dirs: &SupervisorDirs,
) -> Result<Supervisor, ClientError> {
    // The intermediate process's cgroup attach comes 5-20 ms from now.
    crate::cgroups::prime_attach_background();
    let exe = exe.to_path_buf();
    let cfg = cfg.clone();
    let dirs = dirs.clone();
    tokio::task::spawn_blocking(move || spawn_blocking(&exe, &cfg, &dirs))
        .await
        .map_err(|e| ClientError::Runtime(format!("spawn task: {e}")))?
}

fn spawn_blocking(
    exe: &Path,
    cfg: &RunConfig,
    dirs: &SupervisorDirs,
) -> Result<Supervisor, ClientError> {
    let host = HostInfo::detect();
    let spec = crate::spec::build_spec_json(cfg, &host)?;
    let user = &spec["process"]["user"];
    crate::prepare::ensure_workdir(
        &cfg.rootfs,
        &cfg.process.cwd,
        user["uid"].as_u64().unwrap_or(0) as u32,
        user["gid"].as_u64().unwrap_or(0) as u32,
    )?;
    if crate::supervisor::live_supervisor_pid(dirs).is_some() {
        return Err(ClientError::Runtime(format!(
            "container {} already has a running supervisor",
            cfg.id
        )));
    }
    std::fs::create_dir_all(&dirs.bundle).map_err(cio("creating bundle dir"))?;
    std::fs::create_dir_all(&dirs.run_dir).map_err(cio("creating run dir"))?;
    let write =
        |p: PathBuf, v: Vec<u8>| std::fs::write(&p, v).map_err(cio(p.display().to_string()));
    write(
        dirs.run_config_file(),
        serde_json::to_vec_pretty(cfg).map_err(|e| ClientError::Protocol(e.to_string()))?,
    )?;
    write(
        dirs.spec_file(),
        serde_json::to_vec_pretty(&spec).map_err(|e| ClientError::Protocol(e.to_string()))?,
    )?;
    let _ = std::fs::remove_file(dirs.exit_file());

    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ClientError::Io {
            what: "pipe".into(),
            err: e.into(),
        })?;
    // No `pre_exec`: std then spawns with posix_spawn (vfork), not fork. A
    // fork of the daemon copied its page tables (and COW-faulted its
    // threads afterwards): ~1/3 of the daemon's CPU per start. The
    // supervisor detaches itself (fork, setsid) first thing; the ready
    // pipe is its stdout, so no descriptor of it leaks into processes
    // other threads spawn meanwhile.
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("supervise")
        .arg("--bundle")
        .arg(&dirs.bundle)
        .arg("--run-dir")
        .arg(&dirs.run_dir)
        .arg("--runtime-root")
        .arg(&dirs.runtime_root)
        .arg("--ready-fd")
        .arg("1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(ready_w))
        .stderr(std::process::Stdio::null())
        .current_dir("/");
    let mut child = cmd
        .spawn()
        .map_err(cio(format!("starting {}", exe.display())))?;
    // Closes the daemon's write end (moved into `cmd`) before reading.
    drop(cmd);
    let _ = child.wait();

    let data = read_ready_line(ready_r, dirs);
    match serde_json::from_slice::<Ready>(data.trim_ascii_end()) {
        Ok(Ready::Created {
            container_pid,
            supervisor_pid,
        }) => Ok(Supervisor {
            dirs: dirs.clone(),
            container_pid,
            supervisor_pid,
        }),
        Ok(Ready::Failed(msg)) => Err(ClientError::Runtime(msg)),
        Err(_) => {
            // The supervisor died before saying anything: clean up for it
            // (the rootfs belongs to the caller and stays mounted).
            let errs = cleanup_inner(&cfg.id, dirs, None);
            let mut msg = "the supervisor exited while creating the container".to_string();
            for e in errs {
                msg.push_str(&format!("; cleanup: {e}"));
            }
            Err(ClientError::Runtime(msg))
        }
    }
}

/// Reads the supervisor's one-line report. Not until EOF: the container's
/// init holds a copy of the write end until it execs. Gives up if the
/// supervisor dies without reporting, or after a minute.
fn read_ready_line(fd: std::os::fd::OwnedFd, dirs: &SupervisorDirs) -> Vec<u8> {
    let mut data = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline && !data.ends_with(b"\n") {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let r = unsafe { libc::poll(&mut p, 1, 200) };
        if r == 0 {
            // Supervisor wrote its pid but is gone: it crashed.
            let pid = std::fs::read_to_string(dirs.pid_file()).ok();
            if let Some(pid) = pid.and_then(|p| p.trim().parse::<i32>().ok()) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
            }
            continue;
        }
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        data.extend_from_slice(&buf[..n as usize]);
    }
    data
}

async fn connect_sock(dirs: &SupervisorDirs) -> Result<UnixStream, ClientError> {
    let path = dirs.socket();
    // sun_path holds 108 bytes: reach long paths through an O_PATH fd of
    // the run dir (the fd lives until connect returns).
    let mut _dir_fd = None;
    let target = if path.as_os_str().len() >= 100 {
        match std::fs::File::open(&dirs.run_dir) {
            Ok(f) => {
                let p = PathBuf::from(format!("/proc/self/fd/{}/sup.sock", f.as_raw_fd()));
                _dir_fd = Some(f);
                p
            }
            Err(_) => return Err(ClientError::Gone),
        }
    } else {
        path
    };
    match UnixStream::connect(&target).await {
        Ok(s) => Ok(s),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Err(ClientError::Gone)
        }
        Err(e) => Err(ClientError::Io {
            what: format!("connecting to {}", dirs.socket().display()),
            err: e,
        }),
    }
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut hdr = [0u8; proto::HEADER];
    match r.read_exact(&mut hdr).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
    if len > proto::MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((hdr[0], payload)))
}

/// Sends `req` and reads the response frame.
async fn request(
    dirs: &SupervisorDirs,
    req: &Request,
) -> Result<(UnixStream, Response), ClientError> {
    let mut s = connect_sock(dirs).await?;
    let mut out = Vec::new();
    proto::encode_json(proto::REQUEST, req, &mut out);
    if s.write_all(&out).await.is_err() {
        return Err(ClientError::Gone);
    }
    match read_frame(&mut s).await {
        Ok(Some((proto::RESPONSE, payload))) => {
            let r: Response = serde_json::from_slice(&payload)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            Ok((s, r))
        }
        Ok(Some((k, _))) => Err(ClientError::Protocol(format!("unexpected frame {k}"))),
        Ok(None) => Err(ClientError::Gone),
        Err(e) => Err(ClientError::Io {
            what: "reading from the supervisor".into(),
            err: e,
        }),
    }
}

fn ok_or_err(r: Response) -> Result<(), ClientError> {
    match r {
        Response::Ok => Ok(()),
        Response::Error(m) => Err(ClientError::Runtime(m)),
        other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
    }
}

/// Output chunks of a process, ending when it exits (or on detach).
pub struct OutputRx {
    rx: mpsc::Receiver<(OutputStream, Bytes)>,
}

impl futures::Stream for OutputRx {
    type Item = (OutputStream, Bytes);
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// A process's stdin. `shutdown()` (or dropping it) is EOF to the
/// process when the container has StdinOnce (always for execs).
pub struct StdinWriter {
    w: OwnedWriteHalf,
    /// Framed bytes not yet written.
    pending: Vec<u8>,
    eof_sent: bool,
}

impl StdinWriter {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            match Pin::new(&mut self.w).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.pending.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for StdinWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.eof_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|_| 0)),
        }
        let n = buf.len().min(64 * 1024);
        proto::encode(proto::STDIN, &buf[..n], &mut self.pending);
        // Start sending now; completion is checked on the next call/flush.
        let _ = self.poll_drain(cx);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.w).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.eof_sent {
            self.eof_sent = true;
            let mut f = Vec::new();
            proto::encode(proto::STDIN_EOF, b"", &mut f);
            self.pending.extend_from_slice(&f);
        }
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.w).poll_flush(cx),
            other => other,
        }
    }
}

/// What ended a stream.
enum StreamEnd {
    Exit(Vec<u8>),
    Closed,
}

/// Splits a streaming connection: output goes to the returned receiver,
/// the EXIT payload to `done`.
fn pump(
    s: UnixStream,
    want_stdin: bool,
    done: watch::Sender<Option<StreamEnd>>,
) -> (Option<StdinWriter>, OutputRx) {
    let (r, w) = s.into_split();
    let (tx, rx) = mpsc::channel(64);
    let (stdin, keep) = if want_stdin {
        (
            Some(StdinWriter {
                w,
                pending: Vec::new(),
                eof_sent: false,
            }),
            None,
        )
    } else {
        // Dropping a write half shuts the socket's write side, which the
        // supervisor takes as stdin EOF: keep it while reading.
        (None, Some(w))
    };
    tokio::spawn(read_loop(r, tx, done, keep));
    (stdin, OutputRx { rx })
}

async fn read_loop(
    mut r: OwnedReadHalf,
    tx: mpsc::Sender<(OutputStream, Bytes)>,
    done: watch::Sender<Option<StreamEnd>>,
    _keep: Option<OwnedWriteHalf>,
) {
    let mut receiver_alive = true;
    loop {
        match read_frame(&mut r).await {
            Ok(Some((proto::STDOUT, p))) | Ok(Some((proto::STDERR, p))) if !receiver_alive => {
                drop(p);
            }
            Ok(Some((k @ (proto::STDOUT | proto::STDERR), p))) => {
                let stream = if k == proto::STDOUT {
                    OutputStream::Stdout
                } else {
                    OutputStream::Stderr
                };
                if tx.send((stream, Bytes::from(p))).await.is_err() {
                    receiver_alive = false;
                    if done.is_closed() {
                        return;
                    }
                }
            }
            Ok(Some((proto::EXIT, p))) => {
                let _ = done.send(Some(StreamEnd::Exit(p)));
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                let _ = done.send(Some(StreamEnd::Closed));
                return;
            }
        }
    }
}

impl Supervisor {
    /// Re-adopts a running supervisor (after a daemon restart).
    /// `Err(ClientError::Gone)` if it is dead.
    pub async fn connect(dirs: &SupervisorDirs) -> Result<Supervisor, ClientError> {
        let (_, r) = request(dirs, &Request::Info).await?;
        match r {
            Response::Info {
                container_pid,
                supervisor_pid,
                state,
            } => {
                if state == State::Exited {
                    // It is finishing; it will be gone in a moment.
                    return Err(ClientError::Gone);
                }
                Ok(Supervisor {
                    dirs: dirs.clone(),
                    container_pid,
                    supervisor_pid,
                })
            }
            Response::Error(m) => Err(ClientError::Runtime(m)),
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// PID of the container's init in the host pid namespace (network
    /// attach uses `/proc/<pid>/ns/net`).
    pub fn container_pid(&self) -> i32 {
        self.container_pid
    }

    pub fn supervisor_pid(&self) -> i32 {
        self.supervisor_pid
    }

    pub fn dirs(&self) -> &SupervisorDirs {
        &self.dirs
    }

    /// Current state as the supervisor sees it.
    pub async fn state(&self) -> Result<State, ClientError> {
        match request(&self.dirs, &Request::Info).await?.1 {
            Response::Info { state, .. } => Ok(state),
            Response::Error(m) => Err(ClientError::Runtime(m)),
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Lets the created process exec. An exec failure comes back in
    /// Docker's words and the supervisor then records 126/127 and exits.
    pub async fn start(&self) -> Result<(), ClientError> {
        ok_or_err(request(&self.dirs, &Request::Start).await?.1)
    }

    /// Attaches to the container's stdio. Allowed before `start`: no output
    /// is lost, and stdin written before start is delivered after it.
    pub async fn attach(
        &self,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<(Option<StdinWriter>, OutputRx), ClientError> {
        let (s, r) = request(
            &self.dirs,
            &Request::Attach {
                stdin,
                stdout,
                stderr,
            },
        )
        .await?;
        ok_or_err(r)?;
        let (done, _) = watch::channel(None);
        Ok(pump(s, stdin, done))
    }

    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        ok_or_err(
            request(
                &self.dirs,
                &Request::Resize {
                    rows,
                    cols,
                    exec: None,
                },
            )
            .await?
            .1,
        )
    }

    pub async fn signal(&self, sig: i32) -> Result<(), ClientError> {
        ok_or_err(request(&self.dirs, &Request::Signal(sig)).await?.1)
    }

    /// Freezes the container (cgroup freezer).
    pub async fn pause(&self) -> Result<(), ClientError> {
        ok_or_err(request(&self.dirs, &Request::Pause).await?.1)
    }

    pub async fn resume(&self) -> Result<(), ClientError> {
        ok_or_err(request(&self.dirs, &Request::Resume).await?.1)
    }

    /// Changes the cgroup limits of the running container.
    pub async fn update(&self, res: &Resources) -> Result<(), ClientError> {
        ok_or_err(request(&self.dirs, &Request::Update(res.clone())).await?.1)
    }

    /// Resolves when the container has exited and been cleaned up. Any
    /// number of callers may wait. If the supervisor is gone, the recorded
    /// `exit.json` answers; without one, `Err(Gone)`.
    pub async fn wait(&self) -> Result<ExitStatus, ClientError> {
        match request(&self.dirs, &Request::Wait).await {
            Ok((_, Response::Exited(st))) => Ok(st),
            Ok((_, Response::Error(m))) => Err(ClientError::Runtime(m)),
            Ok((_, other)) => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
            Err(ClientError::Gone) | Err(ClientError::Io { .. }) => {
                // It may have exited between our connect and its reply.
                for _ in 0..20 {
                    if let Some(st) = read_exit_status(&self.dirs) {
                        return Ok(st);
                    }
                    if crate::supervisor::live_supervisor_pid(&self.dirs).is_none() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                read_exit_status(&self.dirs).ok_or(ClientError::Gone)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs a process in the container (libcontainer tenant). Its streams
    /// are available at once (no output lost).
    pub async fn exec(&self, e: ExecSpec) -> Result<ExecHandle, ClientError> {
        let want_stdin = e.stdin;
        let (s, r) = request(&self.dirs, &Request::Exec(e)).await?;
        let pid = match r {
            Response::ExecStarted { pid } => pid,
            Response::Error(m) => return Err(ClientError::Runtime(m)),
            other => return Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        };
        let (done_tx, done_rx) = watch::channel(None);
        let stdio = pump(s, want_stdin, done_tx);
        Ok(ExecHandle {
            pid,
            dirs: self.dirs.clone(),
            stdio: Mutex::new(Some(stdio)),
            done: done_rx,
        })
    }
}

/// A running exec.
pub struct ExecHandle {
    pid: i32,
    dirs: SupervisorDirs,
    stdio: Mutex<Option<(Option<StdinWriter>, OutputRx)>>,
    done: watch::Receiver<Option<StreamEnd>>,
}

impl ExecHandle {
    /// Host pid of the exec'd process.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The exec's stdin (if requested) and output; taken once.
    pub fn take_stdio(&self) -> Option<(Option<StdinWriter>, OutputRx)> {
        self.stdio.lock().ok()?.take()
    }

    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        ok_or_err(
            request(
                &self.dirs,
                &Request::Resize {
                    rows,
                    cols,
                    exec: Some(self.pid),
                },
            )
            .await?
            .1,
        )
    }

    /// The exit code (128+signal when killed). If the stdio was never
    /// taken, output is discarded so the process cannot block on it.
    pub async fn wait(&self) -> Result<i32, ClientError> {
        let mut rx = self.done.clone();
        loop {
            {
                let v = rx.borrow_and_update();
                match v.as_ref() {
                    Some(StreamEnd::Exit(p)) => {
                        return serde_json::from_slice::<i32>(p)
                            .map_err(|e| ClientError::Protocol(e.to_string()));
                    }
                    Some(StreamEnd::Closed) => return Err(ClientError::Gone),
                    None => {}
                }
            }
            if self.stdio.lock().map(|s| s.is_some()).unwrap_or(false) {
                // Nobody reads the output: drain it here so it cannot stall.
                if let Some((_, mut out)) = self.take_stdio() {
                    tokio::spawn(async move {
                        use futures::StreamExt;
                        while out.next().await.is_some() {}
                    });
                }
            }
            if rx.changed().await.is_err() {
                return Err(ClientError::Gone);
            }
        }
    }
}

/// The exit status a supervisor recorded (`exit.json`), if any.
pub fn read_exit_status(dirs: &SupervisorDirs) -> Option<ExitStatus> {
    let data = std::fs::read(dirs.exit_file()).ok()?;
    serde_json::from_slice(&data).ok()
}

/// One failed teardown step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupError {
    pub step: String,
    pub error: String,
}

impl std::fmt::Display for CleanupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.error)
    }
}

impl std::error::Error for CleanupError {}

/// Tears down what a crashed supervisor left: its process (if somehow
/// alive), every process in the container's cgroups, the cgroup dirs (all
/// v1 controllers and v2), the libcontainer state, the rootfs mount and the
/// run dir. Keeps going past errors and returns all of them. Blocking.
pub fn cleanup(id: &str, dirs: &SupervisorDirs, rootfs: &Path) -> Vec<CleanupError> {
    cleanup_inner(id, dirs, Some(rootfs))
}

fn cleanup_inner(id: &str, dirs: &SupervisorDirs, rootfs: Option<&Path>) -> Vec<CleanupError> {
    let mut errs = Vec::new();
    let mut err = |step: &str, e: String| {
        errs.push(CleanupError {
            step: step.to_string(),
            error: e,
        })
    };
    if let Some(pid) = crate::supervisor::live_supervisor_pid(dirs) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let cgroups_path = std::fs::read(dirs.run_config_file())
        .ok()
        .and_then(|d| serde_json::from_slice::<RunConfig>(&d).ok())
        .map(|c| crate::spec::cgroups_path(&c))
        .unwrap_or_else(|| format!("/shibafu/{id}"));
    let paths =
        crate::cgroups::cgroup_paths_in(Path::new(crate::cgroups::CGROUP_ROOT), &cgroups_path);
    for e in
        crate::cgroups::kill_and_remove(&crate::cgroups::RealSys, &paths, Duration::from_secs(2))
    {
        err("cgroups", e);
    }
    let state = dirs.runtime_root.join(id);
    if state.exists() {
        if let Err(e) = std::fs::remove_dir_all(&state) {
            err("libcontainer state", format!("{}: {e}", state.display()));
        }
    }
    if let Some(rootfs) = rootfs {
        if !rootfs.as_os_str().is_empty() {
            match nix::mount::umount2(rootfs, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => err("unmount rootfs", format!("{}: {e}", rootfs.display())),
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(&dirs.run_dir) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    match std::fs::remove_dir(&dirs.run_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => err("run dir", format!("{}: {e}", dirs.run_dir.display())),
    }
    errs
}
