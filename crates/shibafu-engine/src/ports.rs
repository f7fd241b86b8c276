//! The engine's view of the pieces it drives: the image store, the overlay
//! rootfs, and the runtime (supervisors). They are traits so the lifecycle
//! logic runs in unit tests against fakes, without root; `adapters` binds
//! them to `shibafu-image` and `shibafu-runtime`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bollard_stubs::models::HealthConfig;
use chrono::{DateTime, Utc};
use shibafu_api::{BoxStream, OutputChunk};
use shibafu_runtime::{Resources, RunConfig};
use tokio::io::AsyncWrite;

/// The parts of an image config that a container inherits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageDefaults {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: String,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: HashMap<String, String>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<HealthConfig>,
}

/// A resolved image.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    /// `sha256:...`.
    pub id: String,
    pub config: ImageDefaults,
    /// Layer dirs, as the rootfs driver wants them.
    pub layers: Vec<PathBuf>,
    pub repo_tags: Vec<String>,
    pub size: i64,
}

pub trait ImageSource: Send + Sync + 'static {
    /// `None` when no image matches `reference`.
    fn resolve(&self, reference: &str) -> Option<ImageInfo>;
    fn count(&self) -> usize;
    fn total_size(&self) -> u64;
}

/// Overlay rootfs of one container in `dir` (`upper/`, `work/`, `merged/`).
pub trait RootfsDriver: Send + Sync + 'static {
    /// Make the dirs (nothing mounted).
    fn create(&self, dir: &Path) -> Result<(), String>;
    /// Mount and return the merged dir. Idempotent.
    fn mount(&self, dir: &Path, layers: &[PathBuf]) -> Result<PathBuf, String>;
    fn unmount(&self, dir: &Path) -> Result<(), String>;
    /// Unmount if needed and delete the dirs.
    fn remove(&self, dir: &Path) -> Result<(), String>;
    fn is_mounted(&self, dir: &Path) -> bool;
}

/// Where a container's supervisor keeps its things.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDirs {
    pub bundle: PathBuf,
    pub run_dir: PathBuf,
    pub runtime_root: PathBuf,
}

/// How a container process ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExitInfo {
    pub code: i64,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// The stdio of a process the engine attaches to.
pub struct Stdio {
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub output: BoxStream<OutputChunk>,
}

/// What to attach to.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdioRequest {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// One `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub privileged: bool,
    pub console_size: Option<(u16, u16)>,
}

/// A running exec process.
#[async_trait]
pub trait ExecProcess: Send + Sync {
    fn pid(&self) -> i32;
    /// Taken once.
    fn take_stdio(&self) -> Option<Stdio>;
    async fn resize(&self, height: u16, width: u16) -> Result<(), String>;
    /// The exit code (126/127 when it could not be executed).
    async fn wait(&self) -> i64;
}

/// A container's supervisor.
#[async_trait]
pub trait Supervisor: Send + Sync {
    /// PID of the container's init on the host.
    fn container_pid(&self) -> i32;
    fn supervisor_pid(&self) -> i32;
    /// Exec the user process. Errors carry the runtime's message.
    async fn start(&self) -> Result<(), String>;
    async fn attach(&self, req: StdioRequest) -> Result<Stdio, String>;
    async fn resize(&self, height: u16, width: u16) -> Result<(), String>;
    async fn signal(&self, sig: i32) -> Result<(), String>;
    async fn pause(&self) -> Result<(), String>;
    async fn resume(&self) -> Result<(), String>;
    async fn update(&self, res: &Resources) -> Result<(), String>;
    /// Resolves when the container has exited (may be called by several).
    async fn wait(&self) -> ExitInfo;
    async fn exec(&self, spec: ExecSpec) -> Result<Arc<dyn ExecProcess>, String>;
}

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Start a supervisor; returns once the container is created (its
    /// namespaces exist), before the user process runs.
    async fn spawn(&self, cfg: &RunConfig, dirs: &RunDirs) -> Result<Arc<dyn Supervisor>, String>;
    /// Reconnect to a supervisor that outlived the daemon; `None` if dead.
    async fn connect(&self, id: &str, dirs: &RunDirs) -> Option<Arc<dyn Supervisor>>;
    /// The exit status a dead supervisor left behind.
    fn read_exit_status(&self, dirs: &RunDirs) -> Option<ExitInfo>;
    /// Remove the libcontainer state, cgroups and run dir; every error.
    async fn cleanup(&self, id: &str, dirs: &RunDirs, rootfs: &Path) -> Vec<String>;
    /// Cgroup directory of `controller` (v1) for the container, for stats.
    fn cgroup_dir(&self, id: &str, controller: &str) -> PathBuf;
}
