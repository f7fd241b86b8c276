//! What the engine tells the runtime about one container: everything needed
//! to build its OCI spec and run it under a supervisor. Serialised to
//! `<bundle>/shibafu.json` so the supervisor (a separate process) reads it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A container as the runtime sees it. All values are already validated and
/// resolved by the engine (image config merged with the create request).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RunConfig {
    /// Full 64-hex container ID (also the libcontainer ID).
    pub id: String,
    /// Already-mounted rootfs (the overlay `merged` dir).
    pub rootfs: PathBuf,
    pub process: ProcessConfig,
    pub hostname: String,
    /// Extra mounts, in order (binds, volumes, tmpfs, and the engine's own
    /// /etc/hostname, /etc/hosts, /etc/resolv.conf binds).
    pub mounts: Vec<MountConfig>,
    pub resources: Resources,
    pub security: Security,
    pub network: NetworkMode,
    pub log: LogConfig,
    /// Signal for `stop` (number), default SIGTERM.
    pub stop_signal: i32,
    /// Run a tiny init (PID 1 that reaps and forwards signals): `--init`.
    pub init: bool,
    /// The static init binary for `--init` (the daemon's
    /// `runtime.init_path`); `None` = Debian's tini-static.
    #[serde(default)]
    pub init_path: Option<PathBuf>,
    /// cgroups path given to libcontainer (`linux.cgroupsPath`), e.g.
    /// `/shibafu/<id>`. Always set: see DESIGN-NOTES.
    pub cgroups_path: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ProcessConfig {
    /// Final argv (entrypoint + cmd), never empty.
    pub args: Vec<String>,
    /// `KEY=value`, including PATH and HOSTNAME (and TERM=xterm with a tty).
    pub env: Vec<String>,
    pub cwd: String,
    /// `-u` as given (`name`, `uid`, `uid:gid`, `name:group`); empty = root.
    /// Resolved against the rootfs's /etc/passwd and /etc/group by the runtime.
    pub user: String,
    pub tty: bool,
    /// `-i`: the process gets a stdin pipe (or the pty's input).
    pub open_stdin: bool,
    /// Close stdin after the first attached client detaches/EOFs.
    pub stdin_once: bool,
    /// Initial console size (rows, cols) when `tty`.
    pub console_size: Option<(u16, u16)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MountKind {
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountConfig {
    pub kind: MountKind,
    /// Host path for binds (volumes are binds of the volume's `_data` dir).
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
    /// Extra options (`size=64m`, `mode=1777`, `noexec`, ...).
    pub options: Vec<String>,
}

/// Resource limits; `None`/0 = unlimited / default.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Resources {
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub cpu_shares: Option<u64>,
    /// microseconds per `cpu_period`.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub pids_limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Security {
    pub privileged: bool,
    /// Names as Docker writes them, with or without `CAP_` ("NET_ADMIN",
    /// "ALL").
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub read_only_rootfs: bool,
    pub no_new_privileges: bool,
    /// `--security-opt seccomp=unconfined`.
    pub seccomp_unconfined: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub enum NetworkMode {
    /// Own, empty network namespace (loopback only). Docker's `none`; also
    /// what bridge networking starts from before the engine attaches.
    #[default]
    None,
    /// Share the host's network namespace.
    Host,
    /// Join an existing network namespace (path to a netns file, e.g.
    /// `/proc/<pid>/ns/net` of another container or `/run/netns/x`).
    Join(PathBuf),
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LogConfig {
    /// json-file log path (`<data-root>/containers/<id>/<id>-json.log`).
    pub path: PathBuf,
    /// Rotate when the file reaches this many bytes; `None` = never.
    pub max_size: Option<u64>,
    /// Files kept including the live one (`max-file`, default 1).
    pub max_file: u32,
}
