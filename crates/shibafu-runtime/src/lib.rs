//! Running one container: OCI spec generation (`spec`), the per-container
//! supervisor process (`supervisor`, libcontainer inside), the json-file log
//! (`logfile`), and the async client the engine uses to talk to a
//! supervisor (`client`).
//!
//! The daemon never calls libcontainer itself (it is multi-threaded and
//! libcontainer forks with raw `clone3`): every container gets its own small
//! single-threaded supervisor process, which outlives daemon restarts.
//!
//! Engine's view, in order:
//! 1. [`spawn`]`(current_exe, &run_config, &dirs)`: validates and writes the
//!    bundle, starts `<exe> supervise ...`, returns when the container is
//!    *created* (attach networking via `/proc/<container_pid>/ns/net` now).
//! 2. [`Supervisor::attach`] (optional, before start loses nothing), then
//!    [`Supervisor::start`].
//! 3. [`Supervisor::wait`] resolves after exit *and* cleanup (state, cgroups,
//!    rootfs mount); `exit.json` in the bundle keeps the status.
//! 4. After a daemon restart: [`Supervisor::connect`]; `Err(Gone)` means
//!    the supervisor is dead: use [`read_exit_status`], and if there is none
//!    (it crashed) [`cleanup`].

pub mod bpf;
pub mod cgroups;
pub mod client;
pub mod config;
pub mod logfile;
pub mod prepare;
pub mod proto;
pub mod seccomp;
pub mod shed;
pub mod spec;
pub mod supervisor;
pub mod user;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use cgroups::{cgroup_dir, cgroup_paths, CgroupPaths};
pub use client::{
    cleanup, read_exit_status, spawn, CleanupError, ClientError, ExecHandle, ExecSpec, OutputRx,
    StdinWriter, Supervisor,
};
pub use config::*;
pub use proto::State as SupervisorState;
pub use spec::{HostInfo, SpecError};

/// Where one container's supervisor keeps its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorDirs {
    /// Persistent (`<data-root>/containers/<id>/bundle`): `shibafu.json`
    /// (the RunConfig), `config.json` (the OCI spec), `exit.json`.
    pub bundle: PathBuf,
    /// Volatile (`<exec-root>/containers/<id>`): `sup.sock`, `sup.pid`.
    pub run_dir: PathBuf,
    /// libcontainer state root (`<exec-root>/runtime`), shared by all
    /// containers.
    pub runtime_root: PathBuf,
}

impl SupervisorDirs {
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("sup.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("sup.pid")
    }
    pub fn exit_file(&self) -> PathBuf {
        self.bundle.join("exit.json")
    }
    pub fn run_config_file(&self) -> PathBuf {
        self.bundle.join("shibafu.json")
    }
    pub fn spec_file(&self) -> PathBuf {
        self.bundle.join("config.json")
    }
}

/// How the container's process ended (also `exit.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code; `128 + signal` when killed by a signal; 126/127 when the
    /// command could not be executed.
    pub code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at: DateTime<Utc>,
    /// Why the process could not run (Docker's wording), if it could not.
    pub error: Option<String>,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}
