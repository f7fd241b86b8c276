//! Persisted records: what the engine knows about a container or a volume.
//! Stored as JSON in redb so fields can be added without a migration
//! (`#[serde(default)]` everywhere).

use std::collections::HashMap;

use bollard_stubs::models::{ContainerConfig, HostConfig};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Lifecycle status, Docker's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
    /// A supervisor exists for the container (its process is alive).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

/// Health status, Docker's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthLogEntry {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub exit_code: i64,
    pub output: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct HealthState {
    pub status: HealthStatus,
    pub failing_streak: i64,
    /// Last 5 probes, oldest first.
    pub log: Vec<HealthLogEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct State {
    pub status: Status,
    pub pid: i64,
    pub exit_code: i64,
    pub error: String,
    pub oom_killed: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub health: Option<HealthState>,
    /// Stopped by `stop`/`kill`/`rm -f`: `unless-stopped` and `always` then
    /// stay down (Docker's HasBeenManuallyStopped).
    pub manually_stopped: bool,
    /// The container was running (or paused) when the daemon last looked;
    /// used at start-up to know which containers to re-adopt or restart.
    pub was_running: bool,
}

/// What kind of thing is mounted into the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// One resolved mount of a container, in the order they are mounted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountSpec {
    pub kind: MountKind,
    /// Volume name (volumes only).
    #[serde(default)]
    pub name: String,
    /// Host path (bind source, volume `_data`); empty for tmpfs.
    #[serde(default)]
    pub source: String,
    pub destination: String,
    pub rw: bool,
    /// Docker's `Mode` column: "ro", "rw", "z", "" ...
    #[serde(default)]
    pub mode: String,
    /// Extra mount options (tmpfs `size=`, `mode=`, ...).
    #[serde(default)]
    pub options: Vec<String>,
    /// Anonymous volume: removed by `rm -v` / pruned by default.
    #[serde(default)]
    pub anonymous: bool,
}

/// Restart policy, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "name", content = "max", rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    UnlessStopped,
    OnFailure(i64),
}

/// Network mode, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NetMode {
    /// `none`: own netns, loopback only.
    #[default]
    None,
    Host,
    /// `default`/`bridge`: Docker's default bridge network (with no
    /// network layer installed: a private netns with loopback only).
    Bridge,
    /// `container:<name|id>`, the target's full ID.
    Container(String),
    /// A user-defined network, by the name it had at create.
    Network(String),
}

/// One network a container is connected to (or will be at its next
/// start): the primary one first (`eth0`, default route), then the ones
/// added by `NetworkingConfig` or `network connect`, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct NetAttach {
    pub network_id: String,
    pub network_name: String,
    /// Static `--ip` / `--ip6`.
    pub ips: Vec<std::net::IpAddr>,
    /// `--network-alias`.
    pub aliases: Vec<String>,
    /// `--mac-address` (normalised lower case).
    pub mac: Option<String>,
}

impl NetMode {
    /// The key of `NetworkSettings.Networks` / what `ps` shows.
    pub fn network_name(&self) -> Option<&str> {
        match self {
            NetMode::None => Some("none"),
            NetMode::Host => Some("host"),
            NetMode::Bridge => Some("bridge"),
            NetMode::Network(n) => Some(n),
            NetMode::Container(_) => None,
        }
    }
}

/// Everything about one container, persisted.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ContainerRecord {
    /// 64 hex.
    pub id: String,
    /// Without the leading "/".
    pub name: String,
    pub created: DateTime<Utc>,
    /// The image reference as given by the user.
    pub image: String,
    /// `sha256:...`.
    pub image_id: String,
    /// Lower dirs of the overlay, topmost first (from the image).
    pub layers: Vec<std::path::PathBuf>,
    pub path: String,
    pub args: Vec<String>,
    /// Merged config, as `inspect` shows it.
    pub config: ContainerConfig,
    /// As created (normalised: LogConfig filled).
    pub host_config: HostConfig,
    pub state: State,
    pub restart_count: i64,
    pub mounts: Vec<MountSpec>,
    pub network: NetMode,
    pub restart_policy: RestartPolicy,
    pub log_max_size: Option<u64>,
    pub log_max_file: u32,
    /// Stop signal number.
    pub stop_signal: i32,
    /// Seconds; default 10.
    pub stop_timeout: i64,
    /// The network attacher's per-container data (networking issue).
    pub network_data: HashMap<String, serde_json::Value>,
    /// The bridge networks to connect at start (empty for none, host,
    /// `container:`).
    pub networks: Vec<NetAttach>,
}

impl ContainerRecord {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
    /// The command line as `ps` shows it.
    pub fn command(&self) -> String {
        let mut parts = vec![self.path.clone()];
        parts.extend(self.args.iter().cloned());
        parts.join(" ")
    }
    pub fn tty(&self) -> bool {
        self.config.tty.unwrap_or(false)
    }
    pub fn auto_remove(&self) -> bool {
        self.host_config.auto_remove.unwrap_or(false)
    }
}

/// A named or anonymous volume.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct VolumeRecord {
    pub name: String,
    pub created: DateTime<Utc>,
    pub labels: HashMap<String, String>,
    pub options: HashMap<String, String>,
    /// Created for an image VOLUME / `-v /path`: removed by `rm -v`.
    pub anonymous: bool,
}
