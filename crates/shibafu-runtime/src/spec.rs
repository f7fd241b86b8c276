//! `RunConfig` -> OCI runtime spec, with Docker's defaults: capability set,
//! seccomp profile, masked and read-only paths, standard mounts, device
//! rules, namespaces, user resolution from the image's own passwd/group.
//!
//! Built as OCI JSON and deserialised into `oci_spec::runtime::Spec`: the
//! JSON shape is the stable, documented contract, and it keeps this module
//! readable next to runc/moby sources. Facts about the host (bounding set,
//! kernel, tini location, host devices) come in through [`HostInfo`] so
//! everything here is unit-testable without root.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{MountKind, NetworkMode, RunConfig};
use crate::seccomp;
use crate::user::{resolve_user_in_rootfs, ExecUser, UserError};

/// Where `--init` comes from (Debian package `tini`).
pub const TINI_PATH: &str = "/usr/bin/tini-static";
/// Where `--init` appears inside the container (as in Docker).
pub const INIT_DEST: &str = "/sbin/docker-init";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unknown capability: {0:?}")]
    UnknownCapability(String),
    #[error(
        "capability {0} is not available on this host (it is not in the inherited bounding set)"
    )]
    CapabilityUnavailable(String),
    #[error("{0}")]
    User(#[from] UserError),
    #[error("--init needs {0} (install the Debian package `tini`)")]
    InitMissing(String),
    #[error("no command specified")]
    NoCommand,
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("building the OCI spec: {0}")]
    Oci(String),
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccomp::SeccompError),
}

/// One `exec` into a running container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub args: Vec<String>,
    /// `KEY=value`, added to (and overriding) the container's env.
    pub env: Vec<String>,
    /// Empty = the container's working dir.
    pub cwd: String,
    /// Empty = the container's user.
    pub user: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub privileged: bool,
    /// (rows, cols) when `tty`.
    pub console_size: Option<(u16, u16)>,
}

/// A device node of the host, for `--privileged`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    pub path: String,
    /// 'c' or 'b'.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Facts about the host the spec depends on.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// Capability names (`CAP_*`) of this process's bounding set: the most
    /// a container may get.
    pub bounding: Vec<String>,
    pub kernel: (u32, u32),
    /// Go-style architecture name ("amd64").
    pub arch: String,
    /// tini-static, if installed.
    pub tini: Option<PathBuf>,
    /// Device nodes under the host's /dev (used only when privileged).
    pub devices: Vec<HostDevice>,
    /// The cgroup v1 hierarchies to bind into containers one by one (see
    /// [`cgroup_mounts`]); `None`: libcontainer's own cgroup mount.
    pub cgroup_v1: Option<Vec<crate::cgroups::V1Hierarchy>>,
}

impl HostInfo {
    /// Reads the running system. Host devices are listed lazily by
    /// `build_spec` only for privileged containers.
    pub fn detect() -> HostInfo {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let bnd = status
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        HostInfo {
            bounding: caps_from_mask(bnd),
            kernel: seccomp::kernel_version(),
            arch: seccomp::native_arch().to_string(),
            tini: Some(PathBuf::from(TINI_PATH)).filter(|p| p.is_file()),
            devices: Vec::new(),
            cgroup_v1: crate::cgroups::v1_hierarchies(),
        }
    }
}

/// Capability names indexed by bit number (linux/capability.h).
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's default capability set (moby `caps.DefaultCapabilities`).
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Capability names in a `CapBnd`-style mask.
pub fn caps_from_mask(mask: u64) -> Vec<String> {
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

fn normalize_cap(name: &str) -> Result<String, SpecError> {
    let up = name.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if ALL_CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(SpecError::UnknownCapability(name.to_string()))
    }
}

/// The capability set of a container: Docker's `TweakCapabilities`, except
/// that "ALL" and privileged mean "everything this host lets us pass on"
/// and an explicit request for a capability the host lacks is an error.
pub fn capabilities(
    privileged: bool,
    cap_add: &[String],
    cap_drop: &[String],
    bounding: &[String],
) -> Result<Vec<String>, SpecError> {
    let in_bounding = |c: &str| bounding.iter().any(|b| b == c);
    if privileged {
        return Ok(bounding.to_vec());
    }
    let adds = cap_add
        .iter()
        .map(|c| normalize_cap(c))
        .collect::<Result<Vec<_>, _>>()?;
    let drops = cap_drop
        .iter()
        .map(|c| normalize_cap(c))
        .collect::<Result<Vec<_>, _>>()?;
    for a in &adds {
        if a != "ALL" && !in_bounding(a) {
            return Err(SpecError::CapabilityUnavailable(a.clone()));
        }
    }
    let mut caps: Vec<String> = if adds.iter().any(|a| a == "ALL") {
        bounding.to_vec()
    } else {
        DEFAULT_CAPS
            .iter()
            .filter(|c| in_bounding(c))
            .map(|c| c.to_string())
            .collect()
    };
    if drops.iter().any(|d| d == "ALL") {
        caps.clear();
    } else {
        caps.retain(|c| !drops.contains(c));
    }
    for a in adds {
        if a != "ALL" && !caps.contains(&a) {
            caps.push(a);
        }
    }
    Ok(caps)
}

fn caps_json(caps: &[String], uid: u32) -> Value {
    if uid == 0 {
        json!({ "bounding": caps, "effective": caps, "permitted": caps })
    } else {
        // As moby: a non-root user gets no effective/permitted caps, like
        // after execve.
        json!({ "bounding": caps })
    }
}

/// `env` with `HOME` added from passwd when missing, and PATH defaulted.
fn env_with_defaults(env: &[String], user: &ExecUser) -> Vec<String> {
    let mut env = env.to_vec();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    env
}

/// Docker's default device cgroup rules.
fn default_device_rules() -> Value {
    let r = |t: &str, maj: Option<i64>, min: Option<i64>, acc: &str| {
        let mut v = json!({ "allow": true, "type": t, "access": acc });
        if let Some(m) = maj {
            v["major"] = json!(m);
        }
        if let Some(m) = min {
            v["minor"] = json!(m);
        }
        v
    };
    json!([
        { "allow": false, "access": "rwm" },
        r("c", None, None, "m"),
        r("b", None, None, "m"),
        r("c", Some(1), Some(3), "rwm"),
        r("c", Some(1), Some(8), "rwm"),
        r("c", Some(1), Some(7), "rwm"),
        r("c", Some(5), Some(0), "rwm"),
        r("c", Some(1), Some(5), "rwm"),
        r("c", Some(1), Some(9), "rwm"),
        r("c", Some(5), Some(1), "rwm"),
        r("c", Some(136), None, "rwm"),
        r("c", Some(5), Some(2), "rwm"),
        r("c", Some(10), Some(200), "rwm"),
    ])
}

/// Lists device nodes under `dev` (the host's /dev) for privileged
/// containers, skipping what the runtime sets up itself.
pub fn host_devices(dev: &Path) -> Vec<HostDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut stack = vec![dev.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let ft = md.file_type();
            let rel = p
                .strip_prefix(dev)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if ft.is_dir() {
                if !matches!(
                    rel.as_str(),
                    "pts" | "shm" | "mqueue" | ".lxc" | ".lxd-mounts"
                ) {
                    stack.push(p);
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                'c'
            } else if ft.is_block_device() {
                'b'
            } else {
                continue;
            };
            if matches!(rel.as_str(), "console" | "ptmx" | "tty") {
                continue;
            }
            let rdev = md.rdev();
            out.push(HostDevice {
                path: format!("/dev/{rel}"),
                kind,
                major: nix::sys::stat::major(rdev) as i64,
                minor: nix::sys::stat::minor(rdev) as i64,
                file_mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn default_mounts(privileged: bool) -> Vec<Value> {
    let sys_opts = if privileged {
        json!(["nosuid", "noexec", "nodev"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let cg_opts = if privileged {
        json!(["nosuid", "noexec", "nodev", "relatime"])
    } else {
        json!(["nosuid", "noexec", "nodev", "relatime", "ro"])
    };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": cg_opts}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}),
    ]
}

/// `/sys/fs/cgroup` on a cgroup v1 host as binds: a tmpfs, then each
/// hierarchy's directory of the container (created by libcontainer's
/// intermediate process before the init mounts) or, for hierarchies
/// libcontainer does not manage, the one inherited from the daemon. That
/// is what the container's cgroup namespace shows there, and what runc
/// mounts for Docker on v1 hosts, read-only unless privileged.
///
/// libcontainer's own `cgroup` mount builds the same tree from a new
/// cgroup superblock per hierarchy (each torn down again at exit) with a
/// pathrs walk and a mountinfo read per hierarchy, ~0.5 ms each here, and
/// leaves the hierarchies writable, so a container's root could raise its
/// own limits.
fn cgroup_mounts(
    v1: &[crate::cgroups::V1Hierarchy],
    cgroups_path: &str,
    privileged: bool,
) -> Vec<Value> {
    let root = Path::new(crate::cgroups::CGROUP_ROOT);
    let mut out = vec![
        json!({"destination": "/sys/fs/cgroup", "type": "tmpfs", "source": "tmpfs",
                              "options": ["nosuid", "noexec", "nodev", "mode=755"]}),
    ];
    for h in v1 {
        let path = if h.managed {
            cgroups_path
        } else {
            h.own.as_str()
        };
        let source = root.join(&h.name).join(path.trim_start_matches('/'));
        let mut opts = vec!["bind", "nosuid", "noexec", "nodev"];
        if !privileged {
            opts.push("ro");
        }
        out.push(
            json!({"destination": format!("/sys/fs/cgroup/{}", h.name), "type": "bind",
                        "source": source, "options": opts}),
        );
    }
    out
}

fn user_mount(m: &crate::config::MountConfig) -> Result<Value, SpecError> {
    if !m.destination.starts_with('/') {
        return Err(SpecError::Invalid {
            what: "mount destination",
            why: format!("{:?} is not an absolute path", m.destination),
        });
    }
    Ok(match m.kind {
        MountKind::Bind => {
            let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
            if m.read_only {
                opts.push("ro".into());
            }
            opts.extend(m.options.iter().cloned());
            json!({"destination": m.destination, "type": "bind",
                   "source": m.source, "options": opts})
        }
        MountKind::Tmpfs => {
            let mut opts: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
            for o in &m.options {
                match o.as_str() {
                    "exec" => opts.retain(|x| x != "noexec"),
                    "suid" => opts.retain(|x| x != "nosuid"),
                    "dev" => opts.retain(|x| x != "nodev"),
                    _ => opts.push(o.clone()),
                }
            }
            if m.read_only {
                opts.push("ro".into());
            }
            json!({"destination": m.destination, "type": "tmpfs",
                   "source": "tmpfs", "options": opts})
        }
    })
}

/// The parts of an OCI process.
struct ProcessParts<'a> {
    args: &'a [String],
    env: &'a [String],
    cwd: &'a str,
    user: &'a ExecUser,
    caps: &'a [String],
    tty: bool,
    console_size: Option<(u16, u16)>,
    no_new_privileges: bool,
}

fn process_json(parts: ProcessParts<'_>) -> Value {
    let ProcessParts {
        args,
        env,
        cwd,
        user,
        caps,
        tty,
        console_size,
        no_new_privileges,
    } = parts;
    let mut p = json!({
        "terminal": tty,
        "user": { "uid": user.uid, "gid": user.gid },
        "args": args,
        "env": env_with_defaults(env, user),
        "cwd": if cwd.is_empty() { "/" } else { cwd },
        "capabilities": caps_json(caps, user.uid),
    });
    if !user.additional_gids.is_empty() {
        p["user"]["additionalGids"] = json!(user.additional_gids);
    }
    if let (true, Some((rows, cols))) = (tty, console_size) {
        p["consoleSize"] = json!({ "height": rows, "width": cols });
    }
    // Only ever `true` or absent: libcontainer treats a present `false` as
    // "set", which would move seccomp after the capability drop and fail.
    if no_new_privileges {
        p["noNewPrivileges"] = json!(true);
    }
    p
}

/// The argv actually run, with `--init` applied.
pub fn effective_args(cfg: &RunConfig) -> Vec<String> {
    let mut args = Vec::new();
    if cfg.init {
        args.push(INIT_DEST.to_string());
        args.push("--".to_string());
    }
    args.extend(cfg.process.args.iter().cloned());
    args
}

/// Docker-compatible default `cgroupsPath` when the engine left it empty.
pub fn cgroups_path(cfg: &RunConfig) -> String {
    if cfg.cgroups_path.is_empty() {
        format!("/shibafu/{}", cfg.id)
    } else {
        cfg.cgroups_path.clone()
    }
}

/// The OCI `linux.resources` object for `res` (without devices).
pub fn resources_json(res: &crate::config::Resources) -> Value {
    let mut r = json!({});
    if let Some(m) = res.memory.filter(|m| *m > 0) {
        r["memory"] = json!({ "limit": m });
        // Docker: unset swap means "as much swap as memory" (total 2x).
        let swap = match res.memory_swap {
            Some(s) if s != 0 => s,
            _ => m * 2,
        };
        r["memory"]["swap"] = json!(swap);
    } else if let Some(s) = res.memory_swap.filter(|s| *s != 0) {
        r["memory"] = json!({ "swap": s });
    }
    let mut cpu = json!({});
    if let Some(s) = res.cpu_shares.filter(|s| *s > 0) {
        cpu["shares"] = json!(s);
    }
    if let Some(q) = res.cpu_quota.filter(|q| *q != 0) {
        cpu["quota"] = json!(q);
        cpu["period"] = json!(res.cpu_period.filter(|p| *p > 0).unwrap_or(100_000));
    } else if let Some(p) = res.cpu_period.filter(|p| *p > 0) {
        cpu["period"] = json!(p);
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        r["cpu"] = cpu;
    }
    if let Some(p) = res.pids_limit.filter(|p| *p != 0) {
        r["pids"] = json!({ "limit": if p < 0 { -1 } else { p } });
    }
    r
}

/// Builds the container's OCI spec.
pub fn build_spec(cfg: &RunConfig, host: &HostInfo) -> Result<Spec, SpecError> {
    let value = build_spec_json(cfg, host)?;
    serde_json::from_value(value).map_err(|e| SpecError::Oci(e.to_string()))
}

/// [`build_spec`] as JSON (what gets written to `config.json`).
pub fn build_spec_json(cfg: &RunConfig, host: &HostInfo) -> Result<Value, SpecError> {
    if cfg.process.args.is_empty() || cfg.process.args[0].is_empty() {
        return Err(SpecError::NoCommand);
    }
    if cfg.id.is_empty() {
        return Err(SpecError::Invalid {
            what: "container id",
            why: "empty".into(),
        });
    }
    if !cfg.rootfs.is_absolute() {
        return Err(SpecError::Invalid {
            what: "rootfs",
            why: format!("{} is not an absolute path", cfg.rootfs.display()),
        });
    }
    if !cfg.process.cwd.is_empty() && !cfg.process.cwd.starts_with('/') {
        return Err(SpecError::Invalid {
            what: "working directory",
            why: format!("{:?} is not an absolute path", cfg.process.cwd),
        });
    }
    let sec = &cfg.security;
    let caps = capabilities(sec.privileged, &sec.cap_add, &sec.cap_drop, &host.bounding)?;
    let user = resolve_user_in_rootfs(&cfg.rootfs, &cfg.process.user)?;

    let mut mounts = default_mounts(sec.privileged);
    if let Some(v1) = &host.cgroup_v1 {
        let at = mounts
            .iter()
            .position(|m| m["destination"] == "/sys/fs/cgroup")
            .unwrap_or(mounts.len());
        mounts.splice(
            at..(at + 1).min(mounts.len()),
            cgroup_mounts(v1, &cgroups_path(cfg), sec.privileged),
        );
    }
    let mut extra = Vec::new();
    if cfg.init {
        let tini = match &cfg.init_path {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => return Err(SpecError::InitMissing(p.display().to_string())),
            None => host
                .tini
                .clone()
                .ok_or_else(|| SpecError::InitMissing(TINI_PATH.to_string()))?,
        };
        extra.push(json!({"destination": INIT_DEST, "type": "bind",
                          "source": tini, "options": ["bind", "ro"]}));
    }
    for m in &cfg.mounts {
        extra.push(user_mount(m)?);
    }
    // A user mount on a default destination (e.g. /dev/shm) replaces it.
    // (/sys/fs/cgroup with the hierarchies below it.)
    mounts.retain(|d| {
        !extra.iter().any(|e| {
            e["destination"] == d["destination"]
                || (e["destination"] == "/sys/fs/cgroup"
                    && d["destination"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("/sys/fs/cgroup/")))
        })
    });
    mounts.extend(extra);

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    match &cfg.network {
        NetworkMode::None => namespaces.push(json!({"type": "network"})),
        NetworkMode::Host => {}
        NetworkMode::Join(p) => namespaces.push(json!({"type": "network", "path": p})),
    }

    let mut resources = resources_json(&cfg.resources);
    let mut linux = json!({
        "cgroupsPath": cgroups_path(cfg),
        "namespaces": namespaces,
    });
    if sec.privileged {
        let devs = if host.devices.is_empty() {
            host_devices(Path::new("/dev"))
        } else {
            host.devices.clone()
        };
        linux["devices"] = Value::Array(
            devs.iter()
                .map(|d| {
                    json!({"path": d.path, "type": d.kind.to_string(), "major": d.major,
                           "minor": d.minor, "fileMode": d.file_mode, "uid": d.uid, "gid": d.gid})
                })
                .collect(),
        );
        resources["devices"] = json!([{ "allow": true, "access": "rwm" }]);
    } else {
        resources["devices"] = default_device_rules();
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        if !sec.seccomp_unconfined {
            linux["seccomp"] = seccomp::default_profile(&caps, &host.arch, host.kernel)?;
        }
    }
    linux["resources"] = resources;

    let args = effective_args(cfg);
    let process = process_json(ProcessParts {
        args: &args,
        env: &cfg.process.env,
        cwd: &cfg.process.cwd,
        user: &user,
        caps: &caps,
        tty: cfg.process.tty,
        console_size: cfg.process.console_size,
        no_new_privileges: sec.no_new_privileges,
    });
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": { "path": cfg.rootfs, "readonly": sec.read_only_rootfs },
        "mounts": mounts,
        "linux": linux,
    });
    if !cfg.hostname.is_empty() {
        spec["hostname"] = json!(cfg.hostname);
    }
    Ok(spec)
}

/// The OCI process of an `exec` (given to libcontainer's tenant builder):
/// the container's env/user/cwd/capabilities with the exec's overrides.
pub fn exec_process(cfg: &RunConfig, e: &ExecSpec, host: &HostInfo) -> Result<Process, SpecError> {
    if e.args.is_empty() || e.args[0].is_empty() {
        return Err(SpecError::NoCommand);
    }
    if !e.cwd.is_empty() && !e.cwd.starts_with('/') {
        return Err(SpecError::Invalid {
            what: "working directory",
            why: format!("{:?} is not an absolute path", e.cwd),
        });
    }
    let sec = &cfg.security;
    let caps = capabilities(
        sec.privileged || e.privileged,
        &sec.cap_add,
        &sec.cap_drop,
        &host.bounding,
    )?;
    let user_spec = if e.user.is_empty() {
        &cfg.process.user
    } else {
        &e.user
    };
    let user = resolve_user_in_rootfs(&cfg.rootfs, user_spec)?;
    let mut env = cfg.process.env.clone();
    for kv in &e.env {
        let key = kv.split('=').next().unwrap_or(kv);
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    let cwd = if e.cwd.is_empty() {
        &cfg.process.cwd
    } else {
        &e.cwd
    };
    let v = process_json(ProcessParts {
        args: &e.args,
        env: &env,
        cwd,
        user: &user,
        caps: &caps,
        tty: e.tty,
        console_size: e.console_size,
        no_new_privileges: sec.no_new_privileges,
    });
    serde_json::from_value(v).map_err(|e| SpecError::Oci(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MountConfig, ProcessConfig, Resources, Security};

    fn host() -> HostInfo {
        HostInfo {
            bounding: caps_from_mask(0x1fffeffffff),
            kernel: (6, 1),
            arch: "amd64".into(),
            tini: Some(PathBuf::from("/usr/bin/tini-static")),
            devices: vec![HostDevice {
                path: "/dev/kvm".into(),
                kind: 'c',
                major: 10,
                minor: 232,
                file_mode: 0o660,
                uid: 0,
                gid: 0,
            }],
            cgroup_v1: None,
        }
    }

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nwheel:x:10:root\nnogroup:x:65534:\n",
        )
        .unwrap();
        d
    }

    fn cfg(root: &Path) -> RunConfig {
        RunConfig {
            id: "abc".into(),
            rootfs: root.to_path_buf(),
            hostname: "abc123".into(),
            process: ProcessConfig {
                args: vec!["sh".into(), "-c".into(), "true".into()],
                env: vec!["PATH=/bin".into()],
                cwd: "/".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn caps_of(v: &Value, set: &str) -> Vec<String> {
        serde_json::from_value(v["process"]["capabilities"][set].clone()).unwrap_or_default()
    }

    #[test]
    fn cgroup_v1_hierarchies_are_bound_one_by_one() {
        use crate::cgroups::V1Hierarchy;
        let r = rootfs();
        let mut c = cfg(r.path());
        let mut h = host();
        h.cgroup_v1 = Some(vec![
            V1Hierarchy {
                name: "memory".into(),
                managed: true,
                own: "/machine/x".into(),
            },
            V1Hierarchy {
                name: "systemd".into(),
                managed: false,
                own: "/init.scope".into(),
            },
        ]);
        let v = build_spec_json(&c, &h).unwrap();
        let ms = v["mounts"].as_array().unwrap();
        let at = ms
            .iter()
            .position(|m| m["destination"] == "/sys/fs/cgroup")
            .unwrap();
        assert_eq!(ms[at]["type"], "tmpfs");
        assert_eq!(ms[at + 1]["destination"], "/sys/fs/cgroup/memory");
        assert_eq!(ms[at + 1]["source"], "/sys/fs/cgroup/memory/shibafu/abc");
        assert!(ms[at + 1]["options"]
            .as_array()
            .unwrap()
            .contains(&json!("ro")));
        assert_eq!(ms[at + 2]["source"], "/sys/fs/cgroup/systemd/init.scope");
        assert_eq!(ms[at + 3]["destination"], "/dev/mqueue");
        let _: Spec = serde_json::from_value(v).unwrap();

        c.security.privileged = true;
        let v = build_spec_json(&c, &h).unwrap();
        let m = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys/fs/cgroup/memory")
            .unwrap()
            .clone();
        assert!(!m["options"].as_array().unwrap().contains(&json!("ro")));

        // A user mount on /sys/fs/cgroup replaces the whole tree.
        c.security.privileged = false;
        c.mounts = vec![MountConfig {
            kind: MountKind::Tmpfs,
            source: PathBuf::new(),
            destination: "/sys/fs/cgroup".into(),
            read_only: false,
            options: vec![],
        }];
        let v = build_spec_json(&c, &h).unwrap();
        let under: Vec<_> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| {
                m["destination"]
                    .as_str()
                    .unwrap()
                    .starts_with("/sys/fs/cgroup")
            })
            .collect();
        assert_eq!(under.len(), 1);
        assert_eq!(under[0]["type"], "tmpfs");
    }

    #[test]
    fn default_spec_is_dockerish() {
        let r = rootfs();
        let c = cfg(r.path());
        let v = build_spec_json(&c, &host()).unwrap();
        // Round-trips into oci-spec.
        let spec: Spec = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("abc123"));
        let caps = caps_of(&v, "bounding");
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&"CAP_NET_RAW".to_string()));
        assert!(!caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(caps_of(&v, "effective"), caps);
        assert_eq!(v["linux"]["maskedPaths"], json!(MASKED_PATHS));
        assert_eq!(v["linux"]["readonlyPaths"], json!(READONLY_PATHS));
        assert_eq!(v["linux"]["cgroupsPath"], "/shibafu/abc");
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "cgroup", "network"]);
        let dests: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm"
            ]
        );
        let sys = &v["mounts"][3]["options"];
        assert!(sys.as_array().unwrap().contains(&json!("ro")));
        assert!(
            v["process"].get("rlimits").is_none(),
            "rlimits are inherited"
        );
        assert!(v["process"].get("noNewPrivileges").is_none());
        assert_eq!(v["root"]["readonly"], false);
        let env = v["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("HOME=/root")));
        assert_eq!(v["process"]["user"]["additionalGids"], json!([10]));
        assert!(v["linux"]["resources"].get("memory").is_none());
        assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], false);
    }

    #[test]
    fn cap_add_drop_and_all() {
        let b = host().bounding;
        let c = capabilities(false, &["net_admin".into()], &["MKNOD".into()], &b).unwrap();
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_MKNOD".to_string()));
        let c = capabilities(false, &["CHOWN".into()], &["ALL".into()], &b).unwrap();
        assert_eq!(c, vec!["CAP_CHOWN".to_string()]);
        let c = capabilities(false, &["ALL".into()], &["CAP_KILL".into()], &b).unwrap();
        assert_eq!(c.len(), b.len() - 1);
        assert!(!c.contains(&"CAP_SYS_RESOURCE".to_string()));
        let e = capabilities(false, &["SYS_RESOURCE".into()], &[], &b).unwrap_err();
        assert!(matches!(e, SpecError::CapabilityUnavailable(ref c) if c == "CAP_SYS_RESOURCE"));
        assert!(matches!(
            capabilities(false, &["FLY".into()], &[], &b),
            Err(SpecError::UnknownCapability(_))
        ));
        assert_eq!(capabilities(true, &[], &[], &b).unwrap(), b);
        assert_eq!(b.len(), 40);
    }

    #[test]
    fn privileged_opens_everything() {
        let r = rootfs();
        let mut c = cfg(r.path());
        c.security.privileged = true;
        let v = build_spec_json(&c, &host()).unwrap();
        assert!(v["linux"].get("maskedPaths").is_none());
        assert!(v["linux"].get("readonlyPaths").is_none());
        assert!(v["linux"].get("seccomp").is_none());
        assert_eq!(caps_of(&v, "bounding").len(), 40);
        assert_eq!(v["linux"]["devices"][0]["path"], "/dev/kvm");
        assert_eq!(
            v["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        let sys = &v["mounts"][3]["options"];
        assert!(!sys.as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn seccomp_unconfined_and_nnp_and_readonly() {
        let r = rootfs();
        let mut c = cfg(r.path());
        c.security = Security {
            seccomp_unconfined: true,
            no_new_privileges: true,
            read_only_rootfs: true,
            ..Default::default()
        };
        let v = build_spec_json(&c, &host()).unwrap();
        assert!(v["linux"].get("seccomp").is_none());
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["root"]["readonly"], true);
    }

    #[test]
    fn network_modes() {
        let r = rootfs();
        let mut c = cfg(r.path());
        c.network = NetworkMode::Host;
        let v = build_spec_json(&c, &host()).unwrap();
        assert!(!v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
        c.network = NetworkMode::Join("/proc/1/ns/net".into());
        let v = build_spec_json(&c, &host()).unwrap();
        assert_eq!(v["linux"]["namespaces"][5]["path"], "/proc/1/ns/net");
    }

    #[test]
    fn users_and_errors() {
        let r = rootfs();
        let mut c = cfg(r.path());
        c.process.user = "nobody".into();
        let v = build_spec_json(&c, &host()).unwrap();
        assert_eq!(v["process"]["user"]["uid"], 65534);
        assert_eq!(v["process"]["user"]["gid"], 65534);
        // Non-root: bounding only.
        assert!(v["process"]["capabilities"].get("effective").is_none());
        c.process.user = "ghost".into();
        let e = build_spec_json(&c, &host()).unwrap_err().to_string();
        assert_eq!(
            e,
            "unable to find user ghost: no matching entries in passwd file"
        );
        c.process.user = String::new();
        c.process.args.clear();
        assert!(matches!(
            build_spec_json(&c, &host()),
            Err(SpecError::NoCommand)
        ));
    }

    #[test]
    fn resources_follow_docker() {
        let r = rootfs();
        let mut c = cfg(r.path());
        c.resources = Resources {
            memory: Some(64 << 20),
            memory_swap: None,
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: None,
            pids_limit: Some(100),
        };
        let v = build_spec_json(&c, &host()).unwrap();
        let res = &v["linux"]["resources"];
        assert_eq!(res["memory"]["limit"], 64 << 20);
        assert_eq!(res["memory"]["swap"], 128 << 20);
        assert_eq!(res["cpu"]["shares"], 512);
        assert_eq!(res["cpu"]["quota"], 50_000);
        assert_eq!(res["cpu"]["period"], 100_000);
        assert_eq!(res["pids"]["limit"], 100);
        let _: Spec = serde_json::from_value(v).unwrap();
        c.resources.memory_swap = Some(-1);
        let v = build_spec_json(&c, &host()).unwrap();
        assert_eq!(v["linux"]["resources"]["memory"]["swap"], -1);
    }

    #[test]
    fn init_and_mounts() {
        let r = rootfs();
        let mut c = cfg(r.path());
        c.init = true;
        c.mounts = vec![
            MountConfig {
                kind: MountKind::Bind,
                source: "/srv/data".into(),
                destination: "/data".into(),
                read_only: true,
                options: vec![],
            },
            MountConfig {
                kind: MountKind::Tmpfs,
                source: PathBuf::new(),
                destination: "/dev/shm".into(),
                read_only: false,
                options: vec!["size=1m".into(), "exec".into()],
            },
        ];
        let v = build_spec_json(&c, &host()).unwrap();
        assert_eq!(
            v["process"]["args"],
            json!(["/sbin/docker-init", "--", "sh", "-c", "true"])
        );
        let ms = v["mounts"].as_array().unwrap();
        let init = ms.iter().find(|m| m["destination"] == INIT_DEST).unwrap();
        assert_eq!(init["source"], "/usr/bin/tini-static");
        assert_eq!(init["options"], json!(["bind", "ro"]));
        let data = ms.iter().find(|m| m["destination"] == "/data").unwrap();
        assert_eq!(data["options"], json!(["rbind", "rprivate", "ro"]));
        let shm: Vec<&Value> = ms
            .iter()
            .filter(|m| m["destination"] == "/dev/shm")
            .collect();
        assert_eq!(shm.len(), 1, "user tmpfs replaces the default /dev/shm");
        assert_eq!(shm[0]["options"], json!(["nosuid", "nodev", "size=1m"]));

        let mut h = host();
        h.tini = None;
        let e = build_spec_json(&c, &h).unwrap_err().to_string();
        assert!(e.contains("tini"), "{e}");
        // A configured init path wins over the detected one, and a missing
        // one is named in the error.
        let own = std::env::current_exe().unwrap();
        c.init_path = Some(own.clone());
        let v = build_spec_json(&c, &h).unwrap();
        let ms = v["mounts"].as_array().unwrap();
        let init = ms.iter().find(|m| m["destination"] == INIT_DEST).unwrap();
        assert_eq!(init["source"], own.display().to_string());
        c.init_path = Some("/nonexistent/init".into());
        let e = build_spec_json(&c, &host()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/init"), "{e}");
        c.init_path = None;
        c.mounts[0].destination = "data".into();
        c.init = false;
        assert!(build_spec_json(&c, &host()).is_err());
    }

    #[test]
    fn tty_console_size() {
        let r = rootfs();
        let mut c = cfg(r.path());
        c.process.tty = true;
        c.process.console_size = Some((40, 120));
        let v = build_spec_json(&c, &host()).unwrap();
        assert_eq!(v["process"]["terminal"], true);
        assert_eq!(
            v["process"]["consoleSize"],
            json!({"height": 40, "width": 120})
        );
    }

    #[test]
    fn exec_process_merges_env_and_user() {
        let r = rootfs();
        let mut c = cfg(r.path());
        c.process.env = vec!["PATH=/bin".into(), "A=1".into()];
        let e = ExecSpec {
            args: vec!["id".into()],
            env: vec!["A=2".into(), "B=3".into()],
            user: "nobody".into(),
            cwd: "/tmp".into(),
            ..Default::default()
        };
        let p = exec_process(&c, &e, &host()).unwrap();
        let env = p.env().clone().unwrap();
        assert!(env.contains(&"A=2".to_string()));
        assert!(!env.contains(&"A=1".to_string()));
        assert!(env.contains(&"B=3".to_string()));
        assert_eq!(p.user().uid(), 65534);
        assert_eq!(p.cwd(), Path::new("/tmp"));
        let bad = ExecSpec {
            args: vec!["id".into()],
            user: "ghost".into(),
            ..Default::default()
        };
        assert!(exec_process(&c, &bad, &host()).is_err());
    }

    #[test]
    fn detect_reads_this_host() {
        let h = HostInfo::detect();
        assert!(h.bounding.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(h.arch, seccomp::native_arch());
    }
}
