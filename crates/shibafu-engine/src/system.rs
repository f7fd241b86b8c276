//! `info`, `version`, `system df`: host facts and counts.

use std::collections::HashMap;
use std::path::Path;

use bollard_stubs::models::{
    ContainersDiskUsage, ImagesDiskUsage, Runtime as ApiRuntime, SystemDataUsageResponse,
    SystemInfo, SystemInfoCgroupDriverEnum, SystemInfoCgroupVersionEnum, SystemVersion,
    SystemVersionComponents, SystemVersionPlatform, VolumesDiskUsage,
};

use crate::error::{EngineError, Result};
use crate::model::Status;
use crate::Engine;

pub const API_VERSION: &str = "1.50";
pub const MIN_API_VERSION: &str = "1.24";

/// Online CPUs.
pub fn ncpu() -> i64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1)
}

pub fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

pub fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn os_release(key: &str) -> Option<String> {
    let s = std::fs::read_to_string("/etc/os-release").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"').to_string())
}

/// A stable ID for this daemon's data root (`<data-root>/engine-id`).
pub fn daemon_id(data_root: &Path) -> Result<String> {
    let p = data_root.join("engine-id");
    if let Ok(s) = std::fs::read_to_string(&p) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let id = crate::names::new_id();
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    );
    std::fs::write(&p, &uuid).map_err(|e| EngineError::io(p.display(), e))?;
    Ok(uuid)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

fn arch() -> (&'static str, &'static str) {
    // (uname-style, Go-style)
    match std::env::consts::ARCH {
        "x86_64" => ("x86_64", "amd64"),
        "aarch64" => ("aarch64", "arm64"),
        other => (other, other),
    }
}

impl Engine {
    pub(crate) fn info_view(&self) -> SystemInfo {
        let recs: Vec<_> = self.ctrs.lock().values().map(|c| c.rec()).collect();
        let running = recs
            .iter()
            .filter(|r| matches!(r.state.status, Status::Running | Status::Restarting))
            .count() as i64;
        let paused = recs
            .iter()
            .filter(|r| r.state.status == Status::Paused)
            .count() as i64;
        let total = recs.len() as i64;
        SystemInfo {
            id: Some(self.daemon_id.clone()),
            containers: Some(total),
            containers_running: Some(running),
            containers_paused: Some(paused),
            containers_stopped: Some(total - running - paused),
            images: Some(self.images.count() as i64),
            driver: Some("overlay2".into()),
            driver_status: Some(vec![
                vec!["Backing Filesystem".into(), "extfs".into()],
                vec!["Supports d_type".into(), "true".into()],
            ]),
            docker_root_dir: Some(self.cfg.data_root.display().to_string()),
            memory_limit: Some(true),
            swap_limit: Some(
                Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists(),
            ),
            cpu_cfs_period: Some(true),
            cpu_cfs_quota: Some(true),
            cpu_shares: Some(true),
            cpu_set: Some(true),
            pids_limit: Some(true),
            oom_kill_disable: Some(true),
            ipv4_forwarding: Some(
                std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                    .map(|s| s.trim() == "1")
                    .unwrap_or(false),
            ),
            debug: Some(false),
            nfd: Some(
                std::fs::read_dir("/proc/self/fd")
                    .map(|d| d.count() as i64)
                    .unwrap_or(0),
            ),
            n_goroutines: Some(0),
            system_time: Some(crate::views::rfc3339(&chrono::Utc::now())),
            logging_driver: Some("json-file".into()),
            cgroup_driver: Some(SystemInfoCgroupDriverEnum::CGROUPFS),
            cgroup_version: Some(SystemInfoCgroupVersionEnum::_1),
            n_events_listener: Some(self.events.listeners() as i64),
            kernel_version: Some(kernel_version()),
            operating_system: Some(os_release("PRETTY_NAME").unwrap_or_else(|| "Linux".into())),
            os_version: Some(os_release("VERSION_ID").unwrap_or_default()),
            os_type: Some("linux".into()),
            architecture: Some(arch().0.into()),
            ncpu: Some(ncpu()),
            mem_total: Some(mem_total()),
            index_server_address: Some("https://index.docker.io/v1/".into()),
            name: Some(hostname()),
            labels: Some(vec![]),
            experimental_build: Some(false),
            server_version: Some(env!("CARGO_PKG_VERSION").into()),
            runtimes: Some(HashMap::from([(
                "shibafu".to_string(),
                ApiRuntime {
                    path: Some(self.cfg.exe.display().to_string()),
                    runtime_args: None,
                    status: None,
                },
            )])),
            default_runtime: Some("shibafu".into()),
            live_restore_enabled: Some(true),
            init_binary: Some(
                self.cfg
                    .init_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            security_options: Some(vec!["name=seccomp,profile=builtin".into()]),
            warnings: Some(vec![]),
            ..Default::default()
        }
    }

    pub(crate) fn version_view(&self) -> SystemVersion {
        let version = env!("CARGO_PKG_VERSION").to_string();
        let details = HashMap::from([
            ("ApiVersion".to_string(), API_VERSION.to_string()),
            ("MinAPIVersion".to_string(), MIN_API_VERSION.to_string()),
            ("Os".to_string(), "linux".to_string()),
            ("Arch".to_string(), arch().1.to_string()),
            ("KernelVersion".to_string(), kernel_version()),
            (
                "GitCommit".to_string(),
                option_env!("SHIBAFU_GIT_COMMIT")
                    .unwrap_or("unknown")
                    .to_string(),
            ),
            ("GoVersion".to_string(), "-".to_string()),
            ("Experimental".to_string(), "false".to_string()),
        ]);
        SystemVersion {
            platform: Some(SystemVersionPlatform {
                name: "shibafu".into(),
            }),
            components: Some(vec![SystemVersionComponents {
                name: "Engine".into(),
                version: version.clone(),
                details: Some(details),
            }]),
            version: Some(version),
            api_version: Some(API_VERSION.into()),
            min_api_version: Some(MIN_API_VERSION.into()),
            git_commit: Some(
                option_env!("SHIBAFU_GIT_COMMIT")
                    .unwrap_or("unknown")
                    .into(),
            ),
            go_version: Some("-".into()),
            os: Some("linux".into()),
            arch: Some(arch().1.into()),
            kernel_version: Some(kernel_version()),
            experimental: Some(false),
            build_time: None,
        }
    }

    pub(crate) fn df(&self) -> SystemDataUsageResponse {
        let now = chrono::Utc::now();
        let recs: Vec<_> = self.ctrs.lock().values().map(|c| c.rec()).collect();
        let summaries: Vec<_> = recs
            .iter()
            .map(|r| self.summary_view(r, true, now))
            .collect();
        let ctr_total: i64 = summaries.iter().filter_map(|s| s.size_rw).sum();
        let ctr_reclaim: i64 = recs
            .iter()
            .zip(&summaries)
            .filter(|(r, _)| !r.state.status.is_live())
            .filter_map(|(_, s)| s.size_rw)
            .sum();
        let in_use = self.image_ids_in_use();
        let vols: Vec<_> = self.volumes.lock().values().cloned().collect();
        let vol_views: Vec<_> = vols.iter().map(|v| self.volume_view(v, true)).collect();
        let vol_total: i64 = vol_views
            .iter()
            .filter_map(|v| v.usage_data.as_ref().map(|u| u.size))
            .sum();
        let vol_reclaim: i64 = vol_views
            .iter()
            .filter_map(|v| v.usage_data.as_ref())
            .filter(|u| u.ref_count == 0)
            .map(|u| u.size)
            .sum();
        SystemDataUsageResponse {
            image_usage: Some(ImagesDiskUsage {
                active_count: Some(in_use.len() as i64),
                total_count: Some(self.images.count() as i64),
                reclaimable: None,
                total_size: Some(self.images.total_size() as i64),
                items: None,
            }),
            container_usage: Some(ContainersDiskUsage {
                active_count: Some(recs.iter().filter(|r| r.state.status.is_live()).count() as i64),
                total_count: Some(recs.len() as i64),
                reclaimable: Some(ctr_reclaim),
                total_size: Some(ctr_total),
                items: Some(summaries.iter().map(to_json).collect()),
            }),
            volume_usage: Some(VolumesDiskUsage {
                active_count: Some(
                    vol_views
                        .iter()
                        .filter(|v| v.usage_data.as_ref().is_some_and(|u| u.ref_count > 0))
                        .count() as i64,
                ),
                total_count: Some(vols.len() as i64),
                reclaimable: Some(vol_reclaim),
                total_size: Some(vol_total),
                items: Some(vol_views.iter().map(to_json).collect()),
            }),
            build_cache_usage: None,
        }
    }

    /// Image IDs containers reference (for `ImageUsers`).
    pub(crate) fn image_ids_in_use(&self) -> std::collections::HashSet<String> {
        self.ctrs
            .lock()
            .values()
            .map(|c| c.rec().image_id)
            .collect()
    }
}

/// Serialise a model into a JSON value (df's `Items`).
fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
