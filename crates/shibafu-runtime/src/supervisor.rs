//! The per-container supervisor: a small single-threaded process (no tokio,
//! one `poll(2)` loop) started as `shibafu supervise --bundle B --run-dir R
//! --runtime-root X --ready-fd N`.
//!
//! It creates the container with libcontainer (never from the
//! multi-threaded daemon: libcontainer forks with raw `clone3`), becomes
//! its child subreaper, holds its stdio (pipes, or a pty received over a
//! console socket), writes the json-file log, serves the protocol of
//! [`crate::proto`] on `run_dir/sup.sock`, reaps the container and its
//! execs, and on exit writes `exit.json`, deletes the libcontainer state
//! and cgroups, unmounts the rootfs, tells connected clients and exits. It
//! never depends on the daemon: with the daemon gone the container keeps
//! running and its log keeps being written; a new daemon reconnects.
//!
//! Exec failures are reported in Docker's words (`exec: "x": executable
//! file not found in $PATH`, `... no such file or directory`, `...
//! permission denied`): our libcontainer executor checks the command inside
//! the container before signalling "created" and reports through a
//! close-on-exec pipe whatever makes the final `execve` fail.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::{LinuxResources, LinuxSeccomp, Spec};
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use crate::config::RunConfig;
use crate::logfile::LogWriter;
use crate::proto::{self, Ready, Request, Response, State};
use crate::spec::{ExecSpec, HostInfo, DEFAULT_PATH, INIT_DEST};
use crate::{ExitStatus, OutputStream, SupervisorDirs};

/// Read buffer size for container output (small: RSS matters).
const CHUNK: usize = 16 * 1024;
/// Stop reading a source while a client lags this far behind.
const BACKPRESSURE: usize = 256 * 1024;
/// How long to keep draining output after the process died.
const DRAIN: Duration = Duration::from_secs(2);
/// How long a finishing supervisor waits for the request of a client that
/// connected but has not written yet.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("usage: supervise --bundle DIR --run-dir DIR --runtime-root DIR [--ready-fd N]")]
    Usage,
    #[error("{what}: {err}")]
    Io { what: String, err: io::Error },
    #[error("reading {0}: {1}")]
    Config(String, String),
    /// Creating the container failed; the message is user-facing.
    #[error("{0}")]
    Create(String),
}

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> SupervisorError {
    let what = what.into();
    move |err| SupervisorError::Io { what, err }
}

struct Args {
    dirs: SupervisorDirs,
    ready_fd: Option<RawFd>,
}

fn parse_args(args: &[String]) -> Result<Args, SupervisorError> {
    let mut bundle = None;
    let mut run_dir = None;
    let mut runtime_root = None;
    let mut ready_fd = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(SupervisorError::Usage);
        match a.as_str() {
            "--bundle" => bundle = Some(PathBuf::from(val()?)),
            "--run-dir" => run_dir = Some(PathBuf::from(val()?)),
            "--runtime-root" => runtime_root = Some(PathBuf::from(val()?)),
            "--ready-fd" => ready_fd = Some(val()?.parse().map_err(|_| SupervisorError::Usage)?),
            _ => return Err(SupervisorError::Usage),
        }
    }
    Ok(Args {
        dirs: SupervisorDirs {
            bundle: bundle.ok_or(SupervisorError::Usage)?,
            run_dir: run_dir.ok_or(SupervisorError::Usage)?,
            runtime_root: runtime_root.ok_or(SupervisorError::Usage)?,
        },
        ready_fd,
    })
}

/// Entry point of `shibafu supervise`. Returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let report = |ready: &mut Option<std::fs::File>, r: &Ready| {
        if let Some(mut f) = ready.take() {
            use std::io::Write;
            let mut line = serde_json::to_vec(r).unwrap_or_default();
            line.push(b'\n');
            let _ = f.write_all(&line);
            // A standard descriptor (the daemon passes the pipe as stdout)
            // becomes /dev/null rather than free: the next pipe opened
            // would take its number, and libcontainer's dup2-then-close of
            // a child's stdio onto the same number would close it.
            let fd = f.as_raw_fd();
            if fd <= 2 {
                if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                    let _ = f.into_raw_fd();
                }
            }
        }
    };
    // Never the daemon's child, so the daemon's death neither signals nor
    // reaps it: the process the daemon started forks and exits, the child
    // leads a new session.
    match unsafe { libc::fork() } {
        0 => {
            unsafe { libc::setsid() };
        }
        -1 => {
            let mut ready = a
                .ready_fd
                .map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
            let e = io::Error::last_os_error();
            report(
                &mut ready,
                &Ready::Failed(format!("detaching the supervisor: {e}")),
            );
            return 1;
        }
        _ => unsafe { libc::_exit(0) },
    }
    close_other_fds(a.ready_fd);
    // The intermediate process attaches to the cgroups ~10 ms from now.
    crate::cgroups::prime_attach_forked();
    // Keep the pipe out of the container's process once it execs.
    if let Some(fd) = a.ready_fd {
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let mut ready = a
        .ready_fd
        .map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
    let _ = std::env::set_current_dir("/");
    match Supervisor::create(&a.dirs) {
        Ok(mut sup) => {
            report(
                &mut ready,
                &Ready::Created {
                    container_pid: sup.init_pid,
                    supervisor_pid: std::process::id() as i32,
                },
            );
            sup.run();
            0
        }
        Err(e) => {
            report(&mut ready, &Ready::Failed(e.to_string()));
            1
        }
    }
}

fn close_other_fds(keep: Option<RawFd>) {
    let ranges: Vec<(u32, u32)> = match keep {
        Some(k) if k >= 3 => vec![(3, k as u32 - 1), (k as u32 + 1, u32::MAX)],
        _ => vec![(3, u32::MAX)],
    };
    for (lo, hi) in ranges {
        if lo <= hi {
            unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) };
        }
    }
}

// ---------------------------------------------------------------------------
// Small syscall helpers.

fn sys_read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn sys_write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Binds a unix socket even when `path` exceeds `sun_path` (108 bytes):
/// long paths are bound relative to their directory (we are
/// single-threaded, so the temporary chdir is safe).
fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if path.as_os_str().len() < 100 {
        return UnixListener::bind(path);
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default();
    std::env::set_current_dir(dir)?;
    let r = UnixListener::bind(name);
    let _ = std::env::set_current_dir("/");
    r
}

fn set_nonblock(fd: RawFd) {
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_signal(sig: libc::c_int, handler: libc::sighandler_t) {
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Write end of the SIGCHLD self-pipe (set once, before the handler).
static SIGCHLD_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    unsafe {
        let saved = *libc::__errno_location();
        let b = 1u8;
        let fd = SIGCHLD_FD.load(std::sync::atomic::Ordering::Relaxed);
        libc::write(fd, (&b as *const u8).cast(), 1);
        *libc::__errno_location() = saved;
    }
}

/// Dispositions the container must inherit as defaults (libcontainer
/// does not reset them; Rust ignores SIGPIPE at start-up).
fn default_signals_for_children() {
    for s in [libc::SIGPIPE, libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
        set_signal(s, libc::SIG_DFL);
    }
}

fn supervisor_signals() {
    set_signal(libc::SIGPIPE, libc::SIG_IGN);
    set_signal(libc::SIGHUP, libc::SIG_IGN);
    set_signal(libc::SIGINT, libc::SIG_IGN);
}

// ---------------------------------------------------------------------------
// The executor that runs inside the container's init / exec process.

/// Checks the command with Go's `exec.LookPath` semantics (what runc uses)
/// and execs it; failures go, in Docker's wording, to `err_fd`.
#[derive(Clone)]
struct DockerExecutor {
    /// Write end of a close-on-exec pipe owned by the supervisor.
    err_fd: RawFd,
    /// Seccomp to load right before exec (exec processes with
    /// no-new-privileges: libcontainer's tenant path drops `linux.seccomp`).
    seccomp: Option<LinuxSeccomp>,
    /// A pre-compiled filter to install (and the capabilities to drop to
    /// afterwards) in `validate`, in place of libcontainer's per-container
    /// compile: see [`crate::bpf`].
    install: Option<std::sync::Arc<Install>>,
}

/// What [`crate::bpf::install`] needs inside the init or exec process.
struct Install {
    prog: Vec<u8>,
    /// The spec's real capabilities when libcontainer was given
    /// [`crate::bpf::INSTALL_CAPS`] on top; `None` with no-new-privileges.
    caps: Option<libcontainer::oci_spec::runtime::LinuxCapabilities>,
}

/// A failed lookup/exec: exit code (126/127) and message.
type ExecFailure = (i32, String);

fn path_of(spec: &Spec) -> String {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().as_ref())
        .and_then(|env| {
            env.iter()
                .find_map(|e| e.strip_prefix("PATH=").map(str::to_string))
        })
        .unwrap_or_else(|| DEFAULT_PATH.to_string())
}

fn is_executable(p: &Path) -> Result<(), io::Error> {
    let md = std::fs::metadata(p)?;
    if md.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EACCES));
    }
    nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).map_err(io::Error::from)
}

/// Go's `exec.LookPath` (errors worded like Go's `exec.Error`).
pub fn look_path(name: &str, path_env: &str) -> Result<PathBuf, ExecFailure> {
    if name.contains('/') {
        let p = Path::new(name);
        return match is_executable(p) {
            Ok(()) => Ok(p.to_path_buf()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err((
                127,
                format!("exec: {name:?}: stat {name}: no such file or directory"),
            )),
            Err(_) => Err((126, format!("exec: {name:?}: permission denied"))),
        };
    }
    for dir in path_env.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(name);
        if is_executable(&cand).is_ok() {
            return Ok(cand);
        }
    }
    Err((
        127,
        format!("exec: {name:?}: executable file not found in $PATH"),
    ))
}

fn exec_error_message(name: &str, errno: nix::errno::Errno) -> ExecFailure {
    match errno {
        nix::errno::Errno::ENOENT => (
            127,
            format!("exec: {name:?}: stat {name}: no such file or directory"),
        ),
        nix::errno::Errno::EACCES | nix::errno::Errno::EPERM => {
            (126, format!("exec: {name:?}: permission denied"))
        }
        other => (
            126,
            format!("exec: {name:?}: {}", other.desc().to_lowercase()),
        ),
    }
}

impl DockerExecutor {
    fn report(&self, f: &ExecFailure) {
        let msg = format!("{}\n{}", f.0, f.1);
        let _ = sys_write(self.err_fd, msg.as_bytes());
    }

    /// The programs whose lookup must succeed: the command, and with
    /// `--init` also the command tini will run.
    fn programs(spec: &Spec) -> Vec<String> {
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        if let Some(first) = args.first() {
            out.push(first.clone());
            if first == INIT_DEST {
                if let Some(pos) = args.iter().position(|a| a == "--") {
                    if let Some(cmd) = args.get(pos + 1) {
                        out.push(cmd.clone());
                    }
                }
            }
        }
        out
    }
}

impl Executor for DockerExecutor {
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        if let Some(inst) = &self.install {
            if let Err(e) = crate::bpf::install(&inst.prog, inst.caps.as_ref()) {
                let f = (126, format!("loading seccomp: {e}"));
                self.report(&f);
                return Err(ExecutorValidationError::ArgValidationError(f.1));
            }
        }
        let path = path_of(spec);
        for prog in Self::programs(spec) {
            if let Err(f) = look_path(&prog, &path) {
                self.report(&f);
                return Err(ExecutorValidationError::ArgValidationError(f.1));
            }
        }
        Ok(())
    }

    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        let Some(name) = args.first() else {
            return Err(ExecutorError::InvalidArg);
        };
        let resolved = match look_path(name, &path_of(spec)) {
            Ok(p) => p,
            Err(f) => {
                self.report(&f);
                unsafe { libc::_exit(f.0) };
            }
        };
        // The console size must be right before the program runs (an exec
        // runs before the supervisor gets the pty master back).
        if let Some(p) = spec.process().as_ref() {
            if let (Some(true), Some(cs)) = (p.terminal(), p.console_size().as_ref()) {
                // Unless someone already sized it (resize before start).
                let mut cur: libc::winsize = unsafe { std::mem::zeroed() };
                let got = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut cur) };
                if got < 0 || (cur.ws_row == 0 && cur.ws_col == 0) {
                    let _ = set_winsize(0, cs.height() as u16, cs.width() as u16);
                }
            }
        }
        if let Some(sc) = &self.seccomp {
            let nnp = spec
                .process()
                .as_ref()
                .and_then(|p| p.no_new_privileges())
                .unwrap_or(false);
            if nnp {
                if let Err(e) = libcontainer::seccomp::initialize_seccomp(sc) {
                    let f = (126, format!("exec: {name:?}: loading seccomp: {e}"));
                    self.report(&f);
                    unsafe { libc::_exit(f.0) };
                }
            }
        }
        let to_c = |s: &str| std::ffi::CString::new(s.as_bytes()).unwrap_or_default();
        let cpath = to_c(&resolved.to_string_lossy());
        let cargs: Vec<std::ffi::CString> = args.iter().map(|a| to_c(a)).collect();
        let errno = match nix::unistd::execv(&cpath, &cargs) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        let f = exec_error_message(name, errno);
        self.report(&f);
        unsafe { libc::_exit(f.0) };
    }
}

/// Reads a `code\nmessage` failure from an executor pipe; `None` on EOF
/// (the exec happened). Waits at most `timeout`.
fn read_exec_failure(fd: RawFd, timeout: Duration) -> Option<ExecFailure> {
    let deadline = Instant::now() + timeout;
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
        if r <= 0 {
            break;
        }
        match sys_read(fd, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    if data.is_empty() {
        return None;
    }
    let s = String::from_utf8_lossy(&data);
    let (code, msg) = s.split_once('\n').unwrap_or(("126", &s));
    Some((code.trim().parse().unwrap_or(126), msg.trim().to_string()))
}

/// Digs the most useful line out of a libcontainer error chain.
fn libcontainer_message(e: &libcontainer::error::LibcontainerError) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.contains(&t) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

// ---------------------------------------------------------------------------
// Console socket (tty).

fn recv_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(io::Error::other(
        "no pty master received on the console socket",
    ))
}

/// Accepts libcontainer's connection on a console socket and takes the pty
/// master it sends (it is already queued when `build()` returns).
fn take_pty(listener: &UnixListener) -> io::Result<OwnedFd> {
    let mut p = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    if unsafe { libc::poll(&mut p, 1, 5000) } <= 0 {
        return Err(io::Error::other(
            "timed out waiting for the container's pty",
        ));
    }
    let (s, _) = listener.accept()?;
    recv_fd(&s)
}

// ---------------------------------------------------------------------------
// The supervisor proper.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok {
    Listener,
    Sigchld,
    MainOut(usize),
    MainIn,
    Conn(usize),
    ExecOut(usize, usize),
    ExecIn(usize),
}

#[derive(Debug, PartialEq)]
enum Role {
    New,
    Waiter,
    Attach {
        stdout: bool,
        stderr: bool,
        stdin: bool,
    },
    Exec {
        pid: i32,
    },
    /// Answered; close once the write buffer is flushed.
    Closing,
}

struct Conn {
    sock: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    role: Role,
    /// The client's stdin is still open (no STDIN_EOF yet).
    stdin_open: bool,
    /// The client shut down its sending side (a half-close).
    read_closed: bool,
}

struct ExecProc {
    pid: i32,
    /// stdout, stderr (tty: the master in [0]).
    out: [Option<OwnedFd>; 2],
    stdin: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    stdin_eof: bool,
    master: Option<RawFd>,
    conn: Option<usize>,
    status: Option<i32>,
    exited_at: Option<Instant>,
    tty: bool,
}

struct Supervisor {
    cfg: RunConfig,
    dirs: SupervisorDirs,
    container: Container,
    init_pid: i32,
    state: State,
    listener: UnixListener,
    sigchld_r: OwnedFd,
    out: [Option<OwnedFd>; 2],
    master: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    /// Close the container's stdin once `stdin_buf` is flushed.
    stdin_close: bool,
    log: LogWriter,
    conns: Vec<Option<Conn>>,
    execs: Vec<ExecProc>,
    err_r: Option<OwnedFd>,
    exec_failure: Option<ExecFailure>,
    exit: Option<(i32, Option<i32>)>,
    exited_at: Option<Instant>,
    host: Option<HostInfo>,
    /// libcontainer got a spec without `linux.seccomp` (see
    /// [`precompiled_seccomp`]): execs must install the filter themselves.
    precompiled: bool,
    exec_seq: u32,
    buf: Box<[u8; CHUNK]>,
    /// Heavy code ran (create, start, exec, ...): shed its pages at this
    /// time (see [`crate::shed`]). Shedding right away would be undone by
    /// the replies and the daemon's follow-up requests (each fault maps
    /// 64 KiB around it); later, only the log pump keeps running.
    shed_at: Option<Instant>,
}

/// Delay between heavy work and shedding memory.
const SHED_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

fn read_run_config(dirs: &SupervisorDirs) -> Result<RunConfig, SupervisorError> {
    let p = dirs.run_config_file();
    let data = std::fs::read(&p)
        .map_err(|e| SupervisorError::Config(p.display().to_string(), e.to_string()))?;
    serde_json::from_slice(&data)
        .map_err(|e| SupervisorError::Config(p.display().to_string(), e.to_string()))
}

/// Where libcontainer reads the spec from, and the filter the executor
/// installs. When the spec has a seccomp profile that can be pre-compiled
/// ([`crate::bpf`]), libcontainer gets a copy in the run dir without
/// `linux.seccomp` and (without no-new-privileges) with the capabilities
/// needed to install it; the bundle's `config.json` stays the real spec.
/// Otherwise libcontainer reads the bundle and compiles the profile itself.
fn precompiled_seccomp(
    dirs: &SupervisorDirs,
) -> Result<(PathBuf, Option<std::sync::Arc<Install>>), SupervisorError> {
    let p = dirs.spec_file();
    let mut spec = Spec::load(&p)
        .map_err(|e| SupervisorError::Config(p.display().to_string(), e.to_string()))?;
    let Some(sc) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
        return Ok((dirs.bundle.clone(), None));
    };
    if !crate::bpf::cacheable(&sc) {
        return Ok((dirs.bundle.clone(), None));
    }
    let Ok(prog) = crate::bpf::load_or_compile(&sc, &crate::bpf::cache_dir(&dirs.runtime_root))
    else {
        // libcontainer compiles it and reports any error in the profile.
        return Ok((dirs.bundle.clone(), None));
    };
    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(None);
    }
    let mut caps = None;
    if let Some(process) = spec.process_mut() {
        if process.no_new_privileges() != Some(true) {
            if let Some(real) = process.capabilities().clone() {
                process.set_capabilities(Some(crate::bpf::with_install_caps(&real)));
                caps = Some(real);
            }
        }
    }
    let out = dirs.run_dir.join("config.json");
    spec.save(&out)
        .map_err(|e| SupervisorError::Config(out.display().to_string(), e.to_string()))?;
    Ok((
        dirs.run_dir.clone(),
        Some(std::sync::Arc::new(Install { prog, caps })),
    ))
}

fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

impl Supervisor {
    /// Creates the container. On failure nothing is left behind (libcontainer
    /// removes its state and cgroup on a failed create; we remove ours).
    fn create(dirs: &SupervisorDirs) -> Result<Supervisor, SupervisorError> {
        let cfg = read_run_config(dirs)?;
        std::fs::create_dir_all(&dirs.run_dir).map_err(ioe("creating run dir"))?;
        std::fs::create_dir_all(&dirs.runtime_root).map_err(ioe("creating runtime root"))?;
        let _ = std::fs::remove_file(dirs.exit_file());
        let sock_path = dirs.socket();
        let _ = std::fs::remove_file(&sock_path);
        let listener = bind_unix(&sock_path).map_err(ioe("binding sup.sock"))?;
        let _ = std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600));
        std::fs::write(dirs.pid_file(), std::process::id().to_string())
            .map_err(ioe("writing sup.pid"))?;
        let undo = |dirs: &SupervisorDirs| {
            let _ = std::fs::remove_file(dirs.socket());
            let _ = std::fs::remove_file(dirs.pid_file());
            let _ = std::fs::remove_file(dirs.run_dir.join("config.json"));
            let _ = std::fs::remove_dir(&dirs.run_dir);
        };
        match Self::create_inner(dirs, cfg, listener) {
            Ok(s) => Ok(s),
            Err(e) => {
                undo(dirs);
                Err(e)
            }
        }
    }

    fn create_inner(
        dirs: &SupervisorDirs,
        cfg: RunConfig,
        listener: UnixListener,
    ) -> Result<Supervisor, SupervisorError> {
        let log = LogWriter::open(&cfg.log).map_err(|e| SupervisorError::Create(e.to_string()))?;
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

        let (err_r, err_w) = pipe_cloexec().map_err(ioe("pipe"))?;
        let (lc_bundle, install) = precompiled_seccomp(dirs)?;
        let executor = DockerExecutor {
            err_fd: err_w.as_raw_fd(),
            seccomp: None,
            install,
        };
        let precompiled = lc_bundle != dirs.bundle;
        let mut builder = ContainerBuilder::new(cfg.id.clone(), SyscallType::default())
            .with_root_path(&dirs.runtime_root)
            .map_err(|e| SupervisorError::Create(libcontainer_message(&e)))?
            .with_executor(executor);

        let mut out: [Option<OwnedFd>; 2] = [None, None];
        let mut stdin = None;
        let mut console = None;
        let console_path = dirs.run_dir.join("console.sock");
        if cfg.process.tty {
            let _ = std::fs::remove_file(&console_path);
            let l = bind_unix(&console_path).map_err(ioe("binding console socket"))?;
            builder = builder.with_console_socket(Some(&console_path));
            console = Some(l);
        } else {
            let (or, ow) = pipe_cloexec().map_err(ioe("pipe"))?;
            let (er, ew) = pipe_cloexec().map_err(ioe("pipe"))?;
            builder = builder.with_stdout(ow).with_stderr(ew);
            out = [Some(or), Some(er)];
            if cfg.process.open_stdin {
                let (ir, iw) = pipe_cloexec().map_err(ioe("pipe"))?;
                builder = builder.with_stdin(ir);
                stdin = Some(iw);
            } else {
                let null = std::fs::File::open("/dev/null").map_err(ioe("/dev/null"))?;
                builder = builder.with_stdin(OwnedFd::from(null));
            }
        }

        default_signals_for_children();
        let built = builder
            .as_init(&lc_bundle)
            .with_systemd(false)
            .with_detach(true)
            .build();
        supervisor_signals();
        drop(err_w);
        let container = match built {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&console_path);
                let msg = match read_exec_failure(err_r.as_raw_fd(), Duration::from_millis(100)) {
                    Some((_, m)) => format!("unable to start container process: {m}"),
                    None => libcontainer_message(&e),
                };
                // libcontainer cleans up after itself; make sure anyway.
                let paths = crate::cgroups::cgroup_paths(&cfg);
                let _ = crate::cgroups::kill_and_remove(
                    &crate::cgroups::RealSys,
                    &paths,
                    Duration::from_secs(1),
                );
                let _ = std::fs::remove_dir_all(dirs.runtime_root.join(&cfg.id));
                return Err(SupervisorError::Create(msg));
            }
        };
        let init_pid = container.pid().map(|p| p.as_raw()).unwrap_or(-1);
        // A fresh network namespace has `lo` down; Docker brings it up.
        if matches!(cfg.network, crate::config::NetworkMode::None) {
            if let Err(e) = crate::prepare::loopback_up(init_pid) {
                let mut c = container;
                let _ = c.delete(true);
                let _ = std::fs::remove_file(&console_path);
                return Err(SupervisorError::Create(e.to_string()));
            }
        }

        let mut master = None;
        if let Some(l) = console {
            let got = take_pty(&l);
            let _ = std::fs::remove_file(&console_path);
            match got {
                Ok(m) => {
                    if let Some((rows, cols)) = cfg.process.console_size {
                        let _ = set_winsize(m.as_raw_fd(), rows, cols);
                    }
                    let dup = m.try_clone().map_err(ioe("dup pty"))?;
                    out[0] = Some(dup);
                    if cfg.process.open_stdin {
                        stdin = Some(m.try_clone().map_err(ioe("dup pty"))?);
                    }
                    master = Some(m);
                }
                Err(e) => {
                    let mut c = container;
                    let _ = c.delete(true);
                    return Err(SupervisorError::Create(format!("setting up the tty: {e}")));
                }
            }
        }
        for fd in out.iter().flatten() {
            set_nonblock(fd.as_raw_fd());
        }
        if let Some(fd) = &stdin {
            set_nonblock(fd.as_raw_fd());
        }

        let (sig_r, sig_w) = pipe_cloexec().map_err(ioe("pipe"))?;
        set_nonblock(sig_r.as_raw_fd());
        set_nonblock(sig_w.as_raw_fd());
        SIGCHLD_FD.store(sig_w.into_raw_fd(), std::sync::atomic::Ordering::Relaxed);
        set_signal(
            libc::SIGCHLD,
            on_sigchld as extern "C" fn(libc::c_int) as usize as libc::sighandler_t,
        );
        listener.set_nonblocking(true).map_err(ioe("listener"))?;

        let sup = Supervisor {
            cfg,
            dirs: dirs.clone(),
            container,
            init_pid,
            state: State::Created,
            listener,
            sigchld_r: sig_r,
            out,
            master,
            stdin,
            stdin_buf: Vec::new(),
            stdin_close: false,
            log,
            conns: Vec::new(),
            execs: Vec::new(),
            err_r: Some(err_r),
            exec_failure: None,
            exit: None,
            exited_at: None,
            host: None,
            precompiled,
            exec_seq: 0,
            buf: Box::new([0u8; CHUNK]),
            shed_at: Some(Instant::now() + SHED_AFTER),
        };
        Ok(sup)
    }

    fn run(&mut self) {
        // A process that died before the handler was installed.
        self.reap();
        loop {
            if self.exit.is_some() && self.drained() {
                break;
            }
            self.poll_once();
        }
        self.finish();
    }

    /// Output of the container fully read (or given up on).
    fn drained(&self) -> bool {
        let eof = self.out.iter().all(Option::is_none);
        eof || self.exited_at.is_some_and(|t| t.elapsed() >= DRAIN)
    }

    fn lagging(&self, pred: impl Fn(&Conn) -> bool) -> bool {
        self.conns
            .iter()
            .flatten()
            .any(|c| pred(c) && c.wbuf.len() > BACKPRESSURE)
    }

    fn poll_once(&mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(8);
        let mut toks: Vec<Tok> = Vec::with_capacity(8);
        let mut add = |fd: RawFd, ev: libc::c_short, t: Tok| {
            fds.push(libc::pollfd {
                fd,
                events: ev,
                revents: 0,
            });
            toks.push(t);
        };
        add(self.listener.as_raw_fd(), libc::POLLIN, Tok::Listener);
        add(self.sigchld_r.as_raw_fd(), libc::POLLIN, Tok::Sigchld);
        if !self.lagging(|c| matches!(c.role, Role::Attach { .. })) {
            for (i, fd) in self.out.iter().enumerate() {
                if let Some(fd) = fd {
                    add(fd.as_raw_fd(), libc::POLLIN, Tok::MainOut(i));
                }
            }
        }
        if let Some(fd) = &self.stdin {
            if self.state != State::Created && !self.stdin_buf.is_empty() {
                add(fd.as_raw_fd(), libc::POLLOUT, Tok::MainIn);
            }
        }
        let stdin_full = self.stdin_buf.len() > BACKPRESSURE;
        for (i, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            let mut ev = 0;
            let reading = match c.role {
                Role::Attach { .. } => !stdin_full,
                Role::Exec { pid } => self
                    .execs
                    .iter()
                    .find(|e| e.pid == pid)
                    .is_none_or(|e| e.stdin_buf.len() <= BACKPRESSURE),
                _ => true,
            };
            if reading && !c.read_closed {
                ev |= libc::POLLIN;
            }
            if !c.wbuf.is_empty() {
                ev |= libc::POLLOUT;
            }
            add(c.sock.as_raw_fd(), ev, Tok::Conn(i));
        }
        for (ei, e) in self.execs.iter().enumerate() {
            let lag = e
                .conn
                .and_then(|ci| self.conns.get(ci).and_then(|c| c.as_ref()))
                .is_some_and(|c| c.wbuf.len() > BACKPRESSURE);
            if !lag {
                for (i, fd) in e.out.iter().enumerate() {
                    if let Some(fd) = fd {
                        add(fd.as_raw_fd(), libc::POLLIN, Tok::ExecOut(ei, i));
                    }
                }
            }
            if let Some(fd) = &e.stdin {
                if !e.stdin_buf.is_empty() {
                    add(fd.as_raw_fd(), libc::POLLOUT, Tok::ExecIn(ei));
                }
            }
        }
        let mut timeout: i32 = -1;
        let mut consider = |at: Option<Instant>| {
            if let Some(t) = at {
                let left = DRAIN.saturating_sub(t.elapsed()).as_millis() as i32 + 1;
                timeout = if timeout < 0 { left } else { timeout.min(left) };
            }
        };
        consider(self.exited_at);
        for e in &self.execs {
            consider(e.exited_at);
        }
        if let Some(at) = self.shed_at {
            let left = at.saturating_duration_since(Instant::now()).as_millis() as i32 + 1;
            timeout = if timeout < 0 { left } else { timeout.min(left) };
        }
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if r < 0 {
            return;
        }
        if self.shed_at.is_some_and(|at| Instant::now() >= at) {
            self.shed_at = None;
            if let Err(e) = crate::shed::shed() {
                eprintln!("supervisor: {e}");
            }
        }
        for (p, t) in fds.iter().zip(toks.iter()) {
            if p.revents == 0 {
                continue;
            }
            let hup = p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
            match *t {
                Tok::Listener => self.accept(),
                Tok::Sigchld => {
                    let mut b = [0u8; 64];
                    while matches!(sys_read(self.sigchld_r.as_raw_fd(), &mut b), Ok(n) if n > 0) {}
                }
                Tok::MainOut(i) => self.read_main(i),
                Tok::MainIn => self.flush_main_stdin(),
                Tok::Conn(i) => {
                    if p.revents & libc::POLLOUT != 0 {
                        self.flush_conn(i);
                    }
                    if p.revents & libc::POLLIN != 0 {
                        self.read_conn(i);
                    }
                    if hup {
                        self.drop_conn(i);
                    }
                }
                Tok::ExecOut(ei, i) => self.read_exec(ei, i),
                Tok::ExecIn(ei) => self.flush_exec_stdin(ei),
            }
        }
        self.reap();
        self.finish_execs();
        self.conns.iter_mut().for_each(|c| {
            if c.as_ref()
                .is_some_and(|c| c.role == Role::Closing && c.wbuf.is_empty())
            {
                *c = None;
            }
        });
        while matches!(self.conns.last(), Some(None)) {
            self.conns.pop();
        }
    }

    // -- connections ---------------------------------------------------------

    fn accept(&mut self) {
        while let Ok((sock, _)) = self.listener.accept() {
            let _ = sock.set_nonblocking(true);
            let conn = Conn {
                sock,
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                role: Role::New,
                stdin_open: true,
                read_closed: false,
            };
            match self.conns.iter().position(Option::is_none) {
                Some(i) => self.conns[i] = Some(conn),
                None => self.conns.push(Some(conn)),
            }
        }
    }

    fn send(&mut self, ci: usize, kind: u8, payload: &[u8]) {
        if let Some(Some(c)) = self.conns.get_mut(ci) {
            proto::encode(kind, payload, &mut c.wbuf);
        }
        self.flush_conn(ci);
    }

    fn respond(&mut self, ci: usize, r: &Response) {
        let payload = serde_json::to_vec(r).unwrap_or_default();
        self.send(ci, proto::RESPONSE, &payload);
    }

    fn flush_conn(&mut self, ci: usize) {
        let Some(Some(c)) = self.conns.get_mut(ci) else {
            return;
        };
        while !c.wbuf.is_empty() {
            match sys_write(c.sock.as_raw_fd(), &c.wbuf) {
                Ok(n) => {
                    c.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.drop_conn(ci);
                    return;
                }
            }
        }
        if c.wbuf.capacity() > 64 * 1024 && c.wbuf.len() < 4096 {
            c.wbuf.shrink_to(4096);
        }
    }

    fn drop_conn(&mut self, ci: usize) {
        let Some(c) = self.conns.get_mut(ci).and_then(Option::take) else {
            return;
        };
        match c.role {
            Role::Attach { stdin: true, .. } if c.stdin_open => self.client_stdin_closed(),
            Role::Exec { pid } => {
                if let Some(e) = self.execs.iter_mut().find(|e| e.pid == pid) {
                    e.conn = None;
                    e.stdin_eof = true;
                    if e.stdin_buf.is_empty() {
                        e.stdin = None;
                    }
                }
            }
            _ => {}
        }
    }

    fn read_conn(&mut self, ci: usize) {
        let mut buf = [0u8; 8192];
        let n = {
            let Some(Some(c)) = self.conns.get_mut(ci) else {
                return;
            };
            match sys_read(c.sock.as_raw_fd(), &mut buf) {
                // Half-close: for streams it means "no more stdin".
                Ok(0)
                    if matches!(
                        c.role,
                        Role::Attach { .. } | Role::Exec { .. } | Role::Waiter
                    ) =>
                {
                    c.read_closed = true;
                    self.on_stdin_eof(ci);
                    return;
                }
                Ok(0) => None,
                Ok(n) => {
                    c.rbuf.extend_from_slice(&buf[..n]);
                    Some(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(0),
                Err(_) => None,
            }
        };
        if n.is_none() {
            self.drop_conn(ci);
            return;
        }
        loop {
            let frame = {
                let Some(Some(c)) = self.conns.get_mut(ci) else {
                    return;
                };
                match proto::decode(&mut c.rbuf) {
                    Ok(f) => f,
                    Err(_) => {
                        self.drop_conn(ci);
                        return;
                    }
                }
            };
            let Some((kind, payload)) = frame else { break };
            self.on_frame(ci, kind, payload);
        }
    }

    fn on_frame(&mut self, ci: usize, kind: u8, payload: Vec<u8>) {
        let role_is_new = matches!(
            self.conns.get(ci),
            Some(Some(Conn {
                role: Role::New,
                ..
            }))
        );
        match kind {
            proto::REQUEST if role_is_new => match serde_json::from_slice::<Request>(&payload) {
                Ok(req) => self.on_request(ci, req),
                Err(e) => {
                    self.respond(ci, &Response::Error(format!("bad request: {e}")));
                    self.set_role(ci, Role::Closing);
                }
            },
            proto::STDIN => self.on_stdin(ci, &payload),
            proto::STDIN_EOF => self.on_stdin_eof(ci),
            _ => self.drop_conn(ci),
        }
    }

    fn set_role(&mut self, ci: usize, role: Role) {
        if let Some(Some(c)) = self.conns.get_mut(ci) {
            c.role = role;
        }
    }

    fn on_stdin(&mut self, ci: usize, data: &[u8]) {
        let Some(Some(c)) = self.conns.get(ci) else {
            return;
        };
        if !c.stdin_open {
            return;
        }
        match c.role {
            Role::Attach { stdin: true, .. } if self.stdin.is_some() && !self.stdin_close => {
                self.stdin_buf.extend_from_slice(data);
                self.flush_main_stdin();
            }
            Role::Exec { pid } => {
                if let Some(ei) = self.execs.iter().position(|e| e.pid == pid) {
                    self.execs[ei].stdin_buf.extend_from_slice(data);
                    self.flush_exec_stdin(ei);
                }
            }
            _ => {}
        }
    }

    fn on_stdin_eof(&mut self, ci: usize) {
        let Some(Some(c)) = self.conns.get_mut(ci) else {
            return;
        };
        if !c.stdin_open {
            return;
        }
        c.stdin_open = false;
        match c.role {
            Role::Attach { stdin: true, .. } => self.client_stdin_closed(),
            Role::Exec { pid } => {
                if let Some(ei) = self.execs.iter().position(|e| e.pid == pid) {
                    self.execs[ei].stdin_eof = true;
                    self.flush_exec_stdin(ei);
                }
            }
            _ => {}
        }
    }

    /// An attached client's stdin ended: with StdinOnce the container's
    /// stdin closes (EOF to the process) once buffered input is written.
    fn client_stdin_closed(&mut self) {
        if self.cfg.process.stdin_once && !self.cfg.process.tty {
            self.stdin_close = true;
            self.flush_main_stdin();
        }
    }

    fn on_request(&mut self, ci: usize, req: Request) {
        let reply = match req {
            Request::Info => Response::Info {
                container_pid: self.init_pid,
                supervisor_pid: std::process::id() as i32,
                state: self.state,
            },
            // These run libcontainer code once; give its pages back after.
            Request::Start => {
                self.shed_at = Some(Instant::now() + SHED_AFTER);
                self.start()
            }
            Request::Signal(sig) => self.signal(sig),
            Request::Pause => {
                self.shed_at = Some(Instant::now() + SHED_AFTER);
                self.pause(true)
            }
            Request::Resume => {
                self.shed_at = Some(Instant::now() + SHED_AFTER);
                self.pause(false)
            }
            Request::Update(res) => {
                self.shed_at = Some(Instant::now() + SHED_AFTER);
                self.update(&res)
            }
            Request::Resize { rows, cols, exec } => self.resize(rows, cols, exec),
            Request::Wait => {
                self.set_role(ci, Role::Waiter);
                return;
            }
            Request::Attach {
                stdin,
                stdout,
                stderr,
            } => {
                let stdin = stdin && self.cfg.process.open_stdin;
                self.set_role(
                    ci,
                    Role::Attach {
                        stdout,
                        stderr,
                        stdin,
                    },
                );
                self.respond(ci, &Response::Ok);
                if self.exit.is_some() && self.drained() {
                    self.send_exit(ci);
                }
                return;
            }
            Request::Exec(spec) => {
                match self.exec(ci, spec) {
                    Ok(pid) => {
                        self.set_role(ci, Role::Exec { pid });
                        self.respond(ci, &Response::ExecStarted { pid });
                    }
                    Err(msg) => {
                        self.respond(ci, &Response::Error(msg));
                        self.set_role(ci, Role::Closing);
                    }
                }
                return;
            }
        };
        self.respond(ci, &reply);
        self.set_role(ci, Role::Closing);
    }

    // -- container operations -------------------------------------------------

    fn start(&mut self) -> Response {
        if self.state != State::Created {
            return Response::Error(format!("container is {:?}, not created", self.state));
        }
        if self.exit.is_some() {
            return Response::Error("container has already exited".into());
        }
        if let Err(e) = self.container.start() {
            return Response::Error(libcontainer_message(&e));
        }
        self.state = State::Running;
        let failure = self
            .err_r
            .take()
            .and_then(|fd| read_exec_failure(fd.as_raw_fd(), Duration::from_secs(10)));
        if let Some(f) = failure {
            let msg = format!("unable to start container process: {}", f.1);
            self.exec_failure = Some((f.0, msg.clone()));
            return Response::Error(msg);
        }
        self.flush_main_stdin();
        Response::Ok
    }

    fn signal(&mut self, sig: i32) -> Response {
        if self.exit.is_some() {
            return Response::Error("container is not running".into());
        }
        let Ok(signal) = nix::sys::signal::Signal::try_from(sig) else {
            return Response::Error(format!("invalid signal {sig}"));
        };
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.init_pid), signal) {
            return Response::Error(format!("sending {signal}: {e}"));
        }
        // A frozen process cannot die: let SIGKILL take effect.
        if self.state == State::Paused && signal == nix::sys::signal::Signal::SIGKILL {
            let _ = self.pause(false);
        }
        Response::Ok
    }

    fn pause(&mut self, freeze: bool) -> Response {
        if self.exit.is_some() {
            return Response::Error("container is not running".into());
        }
        let r = if freeze {
            self.container.pause()
        } else {
            self.container.resume()
        };
        match r {
            Ok(()) => {
                self.state = if freeze {
                    State::Paused
                } else {
                    State::Running
                };
                Response::Ok
            }
            Err(e) => Response::Error(libcontainer_message(&e)),
        }
    }

    fn update(&mut self, res: &crate::config::Resources) -> Response {
        let value = crate::spec::resources_json(res);
        let resources: LinuxResources = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => return Response::Error(format!("invalid resources: {e}")),
        };
        let cg = libcgroups::common::CgroupConfig {
            cgroup_path: PathBuf::from(crate::spec::cgroups_path(&self.cfg)),
            systemd_cgroup: false,
            container_name: self.cfg.id.clone(),
        };
        let manager = match libcgroups::common::create_cgroup_manager(cg) {
            Ok(m) => m,
            Err(e) => return Response::Error(format!("cgroups: {e}")),
        };
        use libcgroups::common::CgroupManager;
        let opt = libcgroups::common::ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        };
        match manager.apply(&opt) {
            Ok(()) => {
                self.cfg.resources = res.clone();
                Response::Ok
            }
            Err(e) => Response::Error(format!("updating resources: {e}")),
        }
    }

    fn resize(&mut self, rows: u16, cols: u16, exec: Option<i32>) -> Response {
        let fd = match exec {
            None => self.master.as_ref().map(|m| m.as_raw_fd()),
            Some(pid) => self
                .execs
                .iter()
                .find(|e| e.pid == pid)
                .and_then(|e| e.master),
        };
        let Some(fd) = fd else {
            return Response::Error("no tty to resize".into());
        };
        match set_winsize(fd, rows, cols) {
            Ok(()) => Response::Ok,
            Err(e) => Response::Error(format!("resize: {e}")),
        }
    }

    fn exec(&mut self, ci: usize, spec: ExecSpec) -> Result<i32, String> {
        if self.state != State::Running || self.exit.is_some() {
            return Err(format!(
                "container {} is not running",
                &self.cfg.id[..self.cfg.id.len().min(12)]
            ));
        }
        // The exec's intermediate process attaches to the cgroups too.
        crate::cgroups::prime_attach_forked();
        let host = self.host.get_or_insert_with(HostInfo::detect).clone();
        let mut process =
            crate::spec::exec_process(&self.cfg, &spec, &host).map_err(|e| e.to_string())?;
        let install = self.exec_install(&mut process, spec.privileged)?;
        self.exec_seq += 1;
        let seq = self.exec_seq;
        let proc_path = self.dirs.run_dir.join(format!("exec-{seq}.json"));
        let console_path = self.dirs.run_dir.join(format!("exec-{seq}.sock"));
        let cleanup = |p: &Path, c: &Path| {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_file(c);
        };
        let data = serde_json::to_vec(&process).map_err(|e| e.to_string())?;
        std::fs::write(&proc_path, data).map_err(|e| format!("writing exec process: {e}"))?;

        let (err_r, err_w) = pipe_cloexec().map_err(|e| e.to_string())?;
        let seccomp = if self.cfg.security.no_new_privileges
            && !self.cfg.security.privileged
            && !spec.privileged
        {
            self.container_seccomp()
        } else {
            None
        };
        let executor = DockerExecutor {
            err_fd: err_w.as_raw_fd(),
            seccomp: if self.precompiled { None } else { seccomp },
            install,
        };
        let builder = match ContainerBuilder::new(self.cfg.id.clone(), SyscallType::default())
            .with_root_path(&self.dirs.runtime_root)
        {
            Ok(b) => b.with_executor(executor),
            Err(e) => {
                cleanup(&proc_path, &console_path);
                return Err(libcontainer_message(&e));
            }
        };
        let mut out: [Option<OwnedFd>; 2] = [None, None];
        let mut stdin = None;
        let mut console = None;
        let r: io::Result<ContainerBuilder> = (|| {
            let null = || std::fs::File::open("/dev/null").map(OwnedFd::from);
            if spec.tty {
                console = Some(bind_unix(&console_path)?);
                return Ok(builder.with_console_socket(Some(&console_path)));
            }
            let mut b = builder;
            if spec.stdout {
                let (r, w) = pipe_cloexec()?;
                b = b.with_stdout(w);
                out[0] = Some(r);
            } else {
                b = b.with_stdout(null()?);
            }
            if spec.stderr {
                let (r, w) = pipe_cloexec()?;
                b = b.with_stderr(w);
                out[1] = Some(r);
            } else {
                b = b.with_stderr(null()?);
            }
            if spec.stdin {
                let (r, w) = pipe_cloexec()?;
                b = b.with_stdin(r);
                stdin = Some(w);
            } else {
                b = b.with_stdin(null()?);
            }
            Ok(b)
        })();
        let builder = match r {
            Ok(b) => b,
            Err(e) => {
                cleanup(&proc_path, &console_path);
                return Err(format!("setting up exec stdio: {e}"));
            }
        };
        default_signals_for_children();
        let built = builder
            .as_tenant()
            .with_process(Some(&proc_path))
            .with_detach(true)
            .build();
        supervisor_signals();
        drop(err_w);
        let _ = std::fs::remove_file(&proc_path);
        let failure = read_exec_failure(
            err_r.as_raw_fd(),
            Duration::from_millis(if built.is_ok() { 2000 } else { 100 }),
        );
        let pid = match built {
            Ok(pid) => pid.as_raw(),
            Err(e) => {
                let _ = std::fs::remove_file(&console_path);
                return Err(match failure {
                    Some((_, m)) => format!("unable to start container process: {m}"),
                    None => libcontainer_message(&e),
                });
            }
        };
        let mut master = None;
        if let Some(l) = console {
            let got = take_pty(&l);
            let _ = std::fs::remove_file(&console_path);
            match got {
                Ok(m) => {
                    if let Some((rows, cols)) = spec.console_size {
                        let _ = set_winsize(m.as_raw_fd(), rows, cols);
                    }
                    master = Some(m.as_raw_fd());
                    if spec.stdin {
                        stdin = m.try_clone().ok();
                    }
                    out[0] = Some(m);
                }
                Err(e) => {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    return Err(format!("setting up the exec tty: {e}"));
                }
            }
        }
        for fd in out.iter().flatten() {
            set_nonblock(fd.as_raw_fd());
        }
        if let Some(fd) = &stdin {
            set_nonblock(fd.as_raw_fd());
        }
        let mut e = ExecProc {
            pid,
            out,
            stdin,
            stdin_buf: Vec::new(),
            stdin_eof: false,
            master,
            conn: Some(ci),
            status: None,
            exited_at: None,
            tty: spec.tty,
        };
        if let Some((code, msg)) = failure {
            // The process could not exec: report like a failed start.
            e.out = [None, None];
            e.stdin = None;
            e.conn = None;
            let _ = code;
            self.execs.push(e);
            return Err(format!("unable to start container process: {msg}"));
        }
        self.execs.push(e);
        self.shed_at = Some(Instant::now() + SHED_AFTER);
        Ok(pid)
    }

    /// With a pre-compiled filter, libcontainer's copy of the spec has no
    /// seccomp: the exec installs it as the init did (libcontainer's tenant
    /// path applies the container's profile except to no-new-privileges
    /// execs of privileged processes).
    fn exec_install(
        &self,
        process: &mut libcontainer::oci_spec::runtime::Process,
        privileged_exec: bool,
    ) -> Result<Option<std::sync::Arc<Install>>, String> {
        if !self.precompiled {
            return Ok(None);
        }
        let nnp = self.cfg.security.no_new_privileges;
        if nnp && privileged_exec {
            return Ok(None);
        }
        let sc = self
            .container_seccomp()
            .ok_or_else(|| "reading the container's seccomp profile".to_string())?;
        let prog =
            crate::bpf::load_or_compile(&sc, &crate::bpf::cache_dir(&self.dirs.runtime_root))
                .map_err(|e| e.to_string())?;
        let mut caps = None;
        if process.no_new_privileges() != Some(true) {
            if let Some(real) = process.capabilities().clone() {
                process.set_capabilities(Some(crate::bpf::with_install_caps(&real)));
                caps = Some(real);
            }
        }
        Ok(Some(std::sync::Arc::new(Install { prog, caps })))
    }

    fn container_seccomp(&self) -> Option<LinuxSeccomp> {
        let data = std::fs::read(self.dirs.spec_file()).ok()?;
        let spec: Spec = serde_json::from_slice(&data).ok()?;
        spec.linux().as_ref()?.seccomp().clone()
    }

    // -- stdio pumping --------------------------------------------------------

    fn read_main(&mut self, i: usize) {
        let Some(fd) = self.out[i].as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        let stream = if i == 0 {
            OutputStream::Stdout
        } else {
            OutputStream::Stderr
        };
        // A few reads per wakeup, then let others run.
        for _ in 0..4 {
            match sys_read(fd, &mut self.buf[..]) {
                Ok(0) => {
                    self.out[i] = None;
                    return;
                }
                Ok(n) => {
                    let data = self.buf[..n].to_vec();
                    let _ = self.log.write(stream, &data);
                    let kind = if i == 0 { proto::STDOUT } else { proto::STDERR };
                    for ci in 0..self.conns.len() {
                        let wants = matches!(
                            self.conns[ci].as_ref().map(|c| &c.role),
                            Some(Role::Attach { stdout, stderr, .. })
                                if (i == 0 && *stdout) || (i == 1 && *stderr)
                        );
                        if wants {
                            self.send(ci, kind, &data);
                        }
                    }
                    if n < CHUNK {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // EIO: the pty's last slave closed.
                Err(_) => {
                    self.out[i] = None;
                    return;
                }
            }
        }
    }

    fn flush_main_stdin(&mut self) {
        if self.state == State::Created {
            return;
        }
        let Some(fd) = self.stdin.as_ref().map(|f| f.as_raw_fd()) else {
            self.stdin_buf.clear();
            return;
        };
        while !self.stdin_buf.is_empty() {
            match sys_write(fd, &self.stdin_buf) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.stdin_buf.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.stdin_close {
            self.stdin = None;
        }
    }

    fn read_exec(&mut self, ei: usize, i: usize) {
        let Some(fd) = self.execs[ei].out[i].as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        match sys_read(fd, &mut self.buf[..]) {
            Ok(0) => self.execs[ei].out[i] = None,
            Ok(n) => {
                if let Some(ci) = self.execs[ei].conn {
                    let data = self.buf[..n].to_vec();
                    let kind = if i == 0 { proto::STDOUT } else { proto::STDERR };
                    self.send(ci, kind, &data);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.execs[ei].out[i] = None,
        }
    }

    fn flush_exec_stdin(&mut self, ei: usize) {
        let e = &mut self.execs[ei];
        let Some(fd) = e.stdin.as_ref().map(|f| f.as_raw_fd()) else {
            e.stdin_buf.clear();
            return;
        };
        while !e.stdin_buf.is_empty() {
            match sys_write(fd, &e.stdin_buf) {
                Ok(n) => {
                    e.stdin_buf.drain(..n);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    e.stdin_buf.clear();
                    e.stdin = None;
                    return;
                }
            }
        }
        // Half-close of an exec's stdin = EOF to the process (a tty has no
        // separate input to close).
        if e.stdin_eof && !e.tty {
            e.stdin = None;
        }
    }

    // -- exits ------------------------------------------------------------------

    fn reap(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        loop {
            let st = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let (pid, code, sig) = match st {
                WaitStatus::Exited(p, c) => (p.as_raw(), c, None),
                WaitStatus::Signaled(p, s, _) => (p.as_raw(), 128 + s as i32, Some(s as i32)),
                _ => continue,
            };
            if pid == self.init_pid {
                self.exit = Some((code, sig));
                self.exited_at = Some(Instant::now());
                self.state = State::Exited;
                self.stdin = None;
            } else if let Some(e) = self.execs.iter_mut().find(|e| e.pid == pid) {
                e.status = Some(code);
                e.exited_at = Some(Instant::now());
            }
        }
    }

    /// Sends the exit code of execs whose output is drained.
    fn finish_execs(&mut self) {
        let mut i = 0;
        while i < self.execs.len() {
            let e = &self.execs[i];
            let done = e.status.is_some()
                && (e.out.iter().all(Option::is_none)
                    || e.exited_at.is_some_and(|t| t.elapsed() >= DRAIN));
            if !done {
                i += 1;
                continue;
            }
            let e = self.execs.remove(i);
            if let Some(ci) = e.conn {
                let code = e.status.unwrap_or(-1);
                let payload = serde_json::to_vec(&code).unwrap_or_default();
                self.send(ci, proto::EXIT, &payload);
                self.set_role(ci, Role::Closing);
            }
        }
    }

    fn exit_status(&self) -> ExitStatus {
        let (code, signal) = self.exit.unwrap_or((-1, None));
        let paths = crate::cgroups::cgroup_paths(&self.cfg);
        ExitStatus {
            code: match &self.exec_failure {
                Some((c, _)) if code == *c || code == 255 => *c,
                _ => code,
            },
            signal,
            oom_killed: crate::cgroups::oom_killed(&paths),
            finished_at: chrono::Utc::now(),
            error: self.exec_failure.as_ref().map(|f| f.1.clone()),
        }
    }

    fn send_exit(&mut self, ci: usize) {
        let st = self.exit_status();
        let payload = serde_json::to_vec(&st).unwrap_or_default();
        self.send(ci, proto::EXIT, &payload);
        self.set_role(ci, Role::Closing);
    }

    /// Reads the first request of connections accepted but still silent,
    /// for at most `limit`. A client connects and writes its request in two
    /// steps; under CPU load it can be preempted in between, and answering
    /// such a connection "container has exited" made the engine's Wait
    /// fail and record 137 for a container that exited 0.
    fn settle_new_conns(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            self.accept();
            let pending: Vec<usize> = (0..self.conns.len())
                .filter(|&ci| matches!(self.conns[ci].as_ref().map(|c| &c.role), Some(Role::New)))
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if pending.is_empty() || left.is_zero() {
                return;
            }
            let mut fds: Vec<libc::pollfd> = pending
                .iter()
                .filter_map(|&ci| self.conns[ci].as_ref())
                .map(|c| libc::pollfd {
                    fd: c.sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            fds.push(libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            for (&ci, p) in pending.iter().zip(fds.iter()) {
                if p.revents == 0 {
                    continue;
                }
                if p.revents & libc::POLLIN != 0 {
                    self.read_conn(ci);
                }
                let still_new = matches!(
                    self.conns.get(ci).and_then(|c| c.as_ref()).map(|c| &c.role),
                    Some(Role::New)
                );
                if still_new && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                    self.drop_conn(ci);
                }
            }
        }
    }

    /// The container is gone: record, clean up, tell everyone, exit.
    fn finish(&mut self) {
        let _ = self.log.flush_partial();
        let status = self.exit_status();
        let data = serde_json::to_vec_pretty(&status).unwrap_or_default();
        let _ = write_atomic(&self.dirs.exit_file(), &data);

        // Remaining processes (execs, orphans) go with the container. This
        // is what libcontainer's `delete` does for us (we set no OCI hooks),
        // without its cost: on cgroup v1 it re-resolves every controller's
        // mount through /proc and retries rmdir with sleeps, 15-140 ms
        // between the container's exit and its waiters learning of it.
        let paths = crate::cgroups::cgroup_paths(&self.cfg);
        let _ = crate::cgroups::kill_and_remove(
            &crate::cgroups::RealSys,
            &paths,
            Duration::from_secs(2),
        );
        let _ = std::fs::remove_dir_all(self.dirs.runtime_root.join(&self.cfg.id));
        // Reap whatever the kill produced.
        self.reap();
        unmount(&self.cfg.rootfs);
        // Take requests that arrived meanwhile, then stop listening: later
        // clients find exit.json instead.
        self.settle_new_conns(SETTLE);
        let _ = std::fs::remove_file(self.dirs.socket());
        let _ = std::fs::remove_file(self.dirs.pid_file());
        let _ = std::fs::remove_file(self.dirs.run_dir.join("config.json"));
        let _ = std::fs::remove_dir(&self.dirs.run_dir);

        let payload = serde_json::to_vec(&status).unwrap_or_default();
        let resp = serde_json::to_vec(&Response::Exited(status)).unwrap_or_default();
        for ci in 0..self.conns.len() {
            let role = self.conns[ci].as_ref().map(|c| &c.role);
            match role {
                Some(Role::Waiter) => {
                    self.send(ci, proto::RESPONSE, &resp);
                }
                Some(Role::Attach { .. }) => {
                    self.send(ci, proto::EXIT, &payload);
                }
                Some(Role::Exec { .. }) => {
                    let code = serde_json::to_vec(&137).unwrap_or_default();
                    self.send(ci, proto::EXIT, &code);
                }
                Some(Role::New) => {
                    let r = serde_json::to_vec(&Response::Error("container has exited".into()))
                        .unwrap_or_default();
                    self.send(ci, proto::RESPONSE, &r);
                }
                _ => {}
            }
        }
        // Give slow clients a moment to take their last frames.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let mut fds: Vec<libc::pollfd> = self
                .conns
                .iter()
                .flatten()
                .filter(|c| !c.wbuf.is_empty())
                .map(|c| libc::pollfd {
                    fd: c.sock.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                })
                .collect();
            if fds.is_empty() {
                break;
            }
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            for ci in 0..self.conns.len() {
                self.flush_conn(ci);
            }
        }
    }
}

/// Detaches the rootfs mount (no error if it is not mounted).
fn unmount(rootfs: &Path) {
    if rootfs.as_os_str().is_empty() {
        return;
    }
    let _ = nix::mount::umount2(rootfs, nix::mount::MntFlags::MNT_DETACH);
}

/// Pids of a container's supervisor, if it is alive.
pub fn live_supervisor_pid(dirs: &SupervisorDirs) -> Option<i32> {
    let mut s = String::new();
    std::fs::File::open(dirs.pid_file())
        .ok()?
        .read_to_string(&mut s)
        .ok()?;
    let pid: i32 = s.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let run_dir = dirs.run_dir.as_os_str().as_encoded_bytes();
    // Guard against pid reuse: it must be a supervisor of this run dir.
    if args.iter().any(|a| *a == b"supervise") && args.contains(&run_dir) {
        Some(pid)
    } else {
        None
    }
}

/// Environment map helper for tests and the engine: `KEY=value` list to map.
pub fn env_map(env: &[String]) -> HashMap<String, String> {
    env.iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_path_matches_go_wording() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let exe = bin.join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let noexec = bin.join("data");
        std::fs::write(&noexec, "x").unwrap();
        std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = format!("/nonexistent:{}", bin.display());

        assert_eq!(look_path("tool", &path).unwrap(), exe);
        let (c, m) = look_path("nope", &path).unwrap_err();
        assert_eq!(c, 127);
        assert_eq!(m, r#"exec: "nope": executable file not found in $PATH"#);
        // Not executable in PATH: skipped, like Go.
        assert_eq!(look_path("data", &path).unwrap_err().0, 127);
        let (c, m) = look_path("/no/such", &path).unwrap_err();
        assert_eq!(c, 127);
        assert_eq!(
            m,
            r#"exec: "/no/such": stat /no/such: no such file or directory"#
        );
        // root passes access(X_OK) for any file with an x bit only.
        let p = noexec.to_string_lossy().into_owned();
        let (c, m) = look_path(&p, &path).unwrap_err();
        assert_eq!(c, 126);
        assert_eq!(m, format!("exec: {p:?}: permission denied"));
        let dir = bin.to_string_lossy().into_owned();
        assert_eq!(look_path(&dir, &path).unwrap_err().0, 126);
    }

    #[test]
    fn args_parse() {
        let a: Vec<String> = [
            "--bundle",
            "/b",
            "--run-dir",
            "/r",
            "--runtime-root",
            "/x",
            "--ready-fd",
            "7",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = parse_args(&a).unwrap();
        assert_eq!(p.dirs.bundle, PathBuf::from("/b"));
        assert_eq!(p.ready_fd, Some(7));
        assert!(parse_args(&a[..2]).is_err());
        assert!(parse_args(&["--bogus".to_string()]).is_err());
    }

    #[test]
    fn init_programs_include_the_wrapped_command() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": [INIT_DEST, "--", "myapp", "x"], "cwd": "/",
                        "user": {"uid": 0, "gid": 0}},
            "root": {"path": "/"}
        }))
        .unwrap();
        assert_eq!(DockerExecutor::programs(&spec), vec![INIT_DEST, "myapp"]);
    }

    #[test]
    fn exec_failures_parse() {
        let (r, w) = pipe_cloexec().unwrap();
        sys_write(w.as_raw_fd(), b"127\nexec: \"x\": nope").unwrap();
        drop(w);
        assert_eq!(
            read_exec_failure(r.as_raw_fd(), Duration::from_secs(1)),
            Some((127, "exec: \"x\": nope".to_string()))
        );
        let (r, w) = pipe_cloexec().unwrap();
        drop(w);
        assert_eq!(
            read_exec_failure(r.as_raw_fd(), Duration::from_secs(1)),
            None
        );
    }
}
