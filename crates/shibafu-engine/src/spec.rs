//! `container create`: validation of the request and its merge with the
//! image config, Docker's rules. Pure: the engine calls [`plan`] before it
//! touches anything, so a bad request leaves nothing behind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use bollard_stubs::models::{
    ContainerConfig, ContainerCreateBody, HealthConfig, HostConfig, HostConfigLogConfig, Mount,
    MountType, RestartPolicyNameEnum,
};

use crate::model::{MountKind, MountSpec, RestartPolicy};
use crate::ports::ImageInfo;
use crate::signals;

/// Docker's default PATH for containers whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const DEFAULT_STOP_TIMEOUT: i64 = 10;
/// Docker's minimum memory limit.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;
pub const ANON_LABEL: &str = "com.docker.volume.anonymous";

/// A validation failure: `NotFound` for a missing image, the rest are 400s.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
    #[error("No such image: {0}")]
    NoSuchImage(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError::Invalid(msg.into()))
}

/// The network mode as requested; `Container` is resolved by the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum NetRequest {
    None,
    Host,
    Bridge,
    Container(String),
    /// A user-defined network (not available yet).
    Named(String),
}

/// A volume a container needs (created on demand if missing).
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeNeed {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub anonymous: bool,
}

/// Host facts validation depends on.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub ncpu: i64,
    pub default_log_max_size: Option<u64>,
    pub default_log_max_file: u32,
}

/// Everything `create` needs, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    pub path: String,
    pub args: Vec<String>,
    /// Volume mounts have `name` set and `source` empty (filled by the
    /// engine from the volume's mountpoint).
    pub mounts: Vec<MountSpec>,
    pub volumes: Vec<VolumeNeed>,
    /// Bind sources (from `Binds`) to create if missing, like `docker -v`.
    pub bind_dirs: Vec<PathBuf>,
    pub network: NetRequest,
    pub restart_policy: RestartPolicy,
    pub log_max_size: Option<u64>,
    pub log_max_file: u32,
    pub stop_signal: i32,
    pub stop_timeout: i64,
    pub warnings: Vec<String>,
}

/// Parse Docker sizes: "10m", "1g", "512k", "1.5GB", "100" (bytes), 1024-based.
pub fn parse_size(s: &str) -> Option<i64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mul: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    if n < 0.0 {
        return None;
    }
    Some((n * mul) as i64)
}

/// Every Linux capability name Docker knows.
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// "net_admin", "CAP_NET_ADMIN", "ALL" -> canonical "NET_ADMIN"/"ALL".
pub fn normalize_cap(c: &str) -> Result<String, SpecError> {
    let up = c.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let bare = up.strip_prefix("CAP_").unwrap_or(&up);
    if CAPABILITIES.contains(&bare) {
        Ok(bare.to_string())
    } else {
        invalid(format!("unknown capability: \"{c}\""))
    }
}

fn is_volume_name(s: &str) -> bool {
    crate::names::valid_name(s)
}

const BIND_MODES: &[&str] = &[
    "ro",
    "rw",
    "z",
    "Z",
    "nocopy",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "consistent",
    "cached",
    "delegated",
];

fn check_destination(dst: &str) -> Result<(), SpecError> {
    if !dst.starts_with('/') {
        return invalid(format!(
            "invalid mount config: mount path must be absolute: {dst}"
        ));
    }
    if Path::new(dst).components().count() <= 1 {
        return invalid("invalid specification: destination can't be '/'");
    }
    Ok(())
}

fn clean_path(p: &str) -> String {
    let mut out = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x),
        }
    }
    format!("/{}", out.join("/"))
}

/// One `-v` / `Binds` entry.
fn parse_bind(spec: &str) -> Result<(Option<String>, String, Vec<String>), SpecError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let bad = || SpecError::Invalid(format!("invalid volume specification: '{spec}'"));
    let (src, dst, mode) = match parts.as_slice() {
        [d] => (None, *d, ""),
        [a, b] if b.starts_with('/') => (Some(*a), *b, ""),
        [d, m] => (None, *d, *m),
        [a, b, m] => (Some(*a), *b, *m),
        _ => return Err(bad()),
    };
    if src == Some("") || dst.is_empty() {
        return Err(bad());
    }
    let modes: Vec<String> = if mode.is_empty() {
        vec![]
    } else {
        mode.split(',').map(str::to_string).collect()
    };
    for m in &modes {
        if !BIND_MODES.contains(&m.as_str()) {
            return invalid(format!("invalid mode: {mode}"));
        }
    }
    if modes.iter().any(|m| m == "ro") && modes.iter().any(|m| m == "rw") {
        return invalid(format!("invalid mode: {mode}"));
    }
    check_destination(dst)?;
    Ok((src.map(str::to_string), clean_path(dst), modes))
}

const TMPFS_FLAGS: &[&str] = &[
    "ro",
    "rw",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "sync",
    "async",
    "dirsync",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "mand",
    "nomand",
];

/// `--tmpfs /run:size=64m,mode=1777` options; returns (read_only, options).
fn parse_tmpfs_opts(dst: &str, opts: &str) -> Result<(bool, Vec<String>), SpecError> {
    let mut out = Vec::new();
    let mut ro = false;
    for o in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => {
                let n = parse_size(v).ok_or_else(|| {
                    SpecError::Invalid(format!("invalid tmpfs option size for {dst}: {v}"))
                })?;
                out.push(format!("size={n}"));
            }
            Some(("mode", v)) => {
                u32::from_str_radix(v, 8).map_err(|_| {
                    SpecError::Invalid(format!("invalid tmpfs option mode for {dst}: {v}"))
                })?;
                out.push(format!("mode={v}"));
            }
            Some(("nr_inodes" | "nr_blocks" | "uid" | "gid", v)) => {
                if parse_size(v).is_none() {
                    return invalid(format!("invalid tmpfs option {o} for {dst}"));
                }
                out.push(o.to_string());
            }
            Some(_) => return invalid(format!("invalid tmpfs option {o} for {dst}")),
            None if TMPFS_FLAGS.contains(&o) => {
                if o == "ro" {
                    ro = true;
                } else if o == "rw" {
                    ro = false;
                } else {
                    out.push(o.to_string());
                }
            }
            None => return invalid(format!("invalid tmpfs option {o} for {dst}")),
        }
    }
    Ok((ro, out))
}

fn parse_restart(hc: &HostConfig) -> Result<RestartPolicy, SpecError> {
    let Some(rp) = &hc.restart_policy else {
        return Ok(RestartPolicy::No);
    };
    let max = rp.maximum_retry_count.unwrap_or(0);
    if max < 0 {
        return invalid("invalid restart policy: maximum retry count cannot be negative");
    }
    let policy = match rp.name {
        None | Some(RestartPolicyNameEnum::EMPTY) | Some(RestartPolicyNameEnum::NO) => {
            RestartPolicy::No
        }
        Some(RestartPolicyNameEnum::ALWAYS) => RestartPolicy::Always,
        Some(RestartPolicyNameEnum::UNLESS_STOPPED) => RestartPolicy::UnlessStopped,
        Some(RestartPolicyNameEnum::ON_FAILURE) => RestartPolicy::OnFailure(max),
    };
    if max > 0 && !matches!(policy, RestartPolicy::OnFailure(_)) {
        let name = rp.name.map(|n| n.to_string()).unwrap_or_default();
        return invalid(format!(
            "invalid restart policy: maximum retry count can only be used with 'on-failure', not '{name}'"
        ));
    }
    if hc.auto_remove.unwrap_or(false) && policy != RestartPolicy::No {
        return invalid("can't create 'AutoRemove' container with restart policy");
    }
    Ok(policy)
}

/// Parse a restart policy from an `update` body (same rules).
pub fn parse_restart_policy(
    rp: &bollard_stubs::models::RestartPolicy,
    auto_remove: bool,
) -> Result<RestartPolicy, SpecError> {
    let hc = HostConfig {
        restart_policy: Some(rp.clone()),
        auto_remove: Some(auto_remove),
        ..Default::default()
    };
    parse_restart(&hc)
}

fn check_duration(what: &str, v: Option<i64>) -> Result<(), SpecError> {
    match v {
        Some(d) if d != 0 && d < 1_000_000 => {
            invalid(format!("{what} in Healthcheck cannot be less than 1ms"))
        }
        _ => Ok(()),
    }
}

fn merge_health(
    req: Option<&HealthConfig>,
    img: Option<&HealthConfig>,
) -> Result<Option<HealthConfig>, SpecError> {
    let mut h = match (req, img) {
        (None, None) => return Ok(None),
        (None, Some(i)) => i.clone(),
        (Some(r), img) => {
            let mut h = r.clone();
            if h.test.as_ref().is_none_or(|t| t.is_empty()) {
                if let Some(i) = img {
                    h.test = i.test.clone();
                    h.interval = h.interval.filter(|v| *v != 0).or(i.interval);
                    h.timeout = h.timeout.filter(|v| *v != 0).or(i.timeout);
                    h.retries = h.retries.filter(|v| *v != 0).or(i.retries);
                    h.start_period = h.start_period.filter(|v| *v != 0).or(i.start_period);
                    h.start_interval = h.start_interval.filter(|v| *v != 0).or(i.start_interval);
                }
            }
            h
        }
    };
    check_duration("Interval", h.interval)?;
    check_duration("Timeout", h.timeout)?;
    check_duration("StartPeriod", h.start_period)?;
    check_duration("StartInterval", h.start_interval)?;
    if h.retries.unwrap_or(0) < 0 {
        return invalid("Retries in Healthcheck cannot be negative");
    }
    if let Some(test) = &h.test {
        match test.first().map(String::as_str) {
            None => {}
            Some("NONE") | Some("CMD") | Some("CMD-SHELL") => {}
            Some(other) => {
                return invalid(format!(
                "invalid Healthcheck Test: unknown type {other:?}, expected NONE, CMD or CMD-SHELL"
            ))
            }
        }
        if matches!(
            test.first().map(String::as_str),
            Some("CMD") | Some("CMD-SHELL")
        ) && test.len() < 2
        {
            return invalid("invalid Healthcheck Test: no command given");
        }
    }
    if h.test.as_ref().is_none_or(|t| t.is_empty()) && img.is_none() {
        // Only timings given and nothing to run: nothing to check.
        h.test = None;
    }
    Ok(Some(h))
}

/// `env` lists merged by key: later entries win, order of first appearance
/// kept.
pub fn merge_env(base: &[String], over: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut vals: HashMap<String, String> = HashMap::new();
    for e in base.iter().chain(over) {
        let k = e.split('=').next().unwrap_or("").to_string();
        if !vals.contains_key(&k) {
            keys.push(k.clone());
        }
        vals.insert(k, e.clone());
    }
    keys.into_iter()
        .map(|k| vals.remove(&k).unwrap_or_default())
        .collect()
}

fn parse_log(
    hc: &HostConfig,
    ctx: &Ctx,
) -> Result<(HostConfigLogConfig, Option<u64>, u32), SpecError> {
    let lc = hc.log_config.clone().unwrap_or_default();
    let typ = lc.typ.clone().unwrap_or_default();
    if !(typ.is_empty() || typ == "json-file") {
        return invalid(format!(
            "logger: no log driver named '{typ}' is registered (shibafu supports json-file only)"
        ));
    }
    let cfg = lc.config.clone().unwrap_or_default();
    let mut max_size = ctx.default_log_max_size;
    let mut max_file = ctx.default_log_max_file.max(1);
    let mut has_size = max_size.is_some();
    for (k, v) in &cfg {
        match k.as_str() {
            "max-size" => {
                if v == "-1" {
                    max_size = None;
                    has_size = false;
                } else {
                    let n = parse_size(v).filter(|n| *n > 0).ok_or_else(|| {
                        SpecError::Invalid(format!("invalid log opt max-size: {v:?}"))
                    })?;
                    max_size = Some(n as u64);
                    has_size = true;
                }
            }
            "max-file" => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| SpecError::Invalid(format!("invalid log opt max-file: {v:?}")))?;
                if n < 1 {
                    return invalid("max-file cannot be less than 1");
                }
                max_file = n as u32;
            }
            "compress" => {
                if v != "false" {
                    return invalid(
                        "log opt compress is not supported by shibafu's json-file driver",
                    );
                }
            }
            "labels" | "labels-regex" | "env" | "env-regex" | "tag" => {}
            other => {
                return invalid(format!(
                    "unknown log opt '{other}' for json-file log driver"
                ))
            }
        }
    }
    if cfg.contains_key("max-file") && max_file > 1 && !has_size {
        return invalid("max-file cannot be used without max-size");
    }
    let mut cfg_out = cfg;
    if let Some(s) = ctx.default_log_max_size {
        cfg_out
            .entry("max-size".into())
            .or_insert_with(|| s.to_string());
    }
    if ctx.default_log_max_file > 1 {
        cfg_out
            .entry("max-file".into())
            .or_insert_with(|| ctx.default_log_max_file.to_string());
    }
    Ok((
        HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(cfg_out),
        },
        max_size,
        max_file,
    ))
}

/// `--network` value.
pub fn parse_network(mode: Option<&str>) -> NetRequest {
    match mode.unwrap_or("") {
        "" | "default" | "bridge" => NetRequest::Bridge,
        "none" => NetRequest::None,
        "host" => NetRequest::Host,
        m => match m.strip_prefix("container:") {
            Some(c) => NetRequest::Container(c.to_string()),
            None => NetRequest::Named(m.to_string()),
        },
    }
}

fn check_resources(
    hc: &mut HostConfig,
    ctx: &Ctx,
    warnings: &mut Vec<String>,
) -> Result<(), SpecError> {
    let memory = hc.memory.unwrap_or(0);
    if memory < 0 {
        return invalid(format!(
            "invalid memory value {memory}: must not be negative"
        ));
    }
    if memory > 0 && memory < MIN_MEMORY {
        return invalid("Minimum memory limit allowed is 6MB");
    }
    if let Some(swap) = hc.memory_swap {
        if swap > 0 && memory == 0 {
            return invalid(
                "You should always set the Memory limit when using Memoryswap limit, see usage",
            );
        }
        if swap > 0 && swap < memory {
            return invalid(
                "Minimum memoryswap limit should be larger than memory limit, see usage",
            );
        }
    }
    if let Some(r) = hc.memory_reservation {
        if r > 0 && memory > 0 && r > memory {
            return invalid(
                "Minimum memory limit can not be less than memory reservation limit, see usage",
            );
        }
    }
    let nano = hc.nano_cpus.unwrap_or(0);
    if nano != 0 {
        if hc.cpu_quota.unwrap_or(0) > 0 || hc.cpu_period.unwrap_or(0) > 0 {
            return invalid("Conflicting options: Nano CPUs and CPU Period cannot both be set");
        }
        if nano < 10_000_000 || nano > ctx.ncpu * 1_000_000_000 {
            return invalid(format!(
                "Range of CPUs is from 0.01 to {}.00, as there are only {} CPUs available",
                ctx.ncpu, ctx.ncpu
            ));
        }
    }
    if let Some(p) = hc.cpu_period {
        if p != 0 && !(1000..=1_000_000).contains(&p) {
            return invalid(
                "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
            );
        }
    }
    if let Some(q) = hc.cpu_quota {
        if q > 0 && q < 1000 {
            return invalid("CPU cfs quota can not be less than 1ms (i.e. 1000)");
        }
    }
    if let Some(s) = hc.cpu_shares {
        if s < 0 {
            return invalid(format!("invalid CPU shares {s}: must not be negative"));
        }
        if s == 1 {
            warnings.push("Your kernel does not support CPU shares below 2: set to 2".into());
            hc.cpu_shares = Some(2);
        } else if s > 262_144 {
            warnings.push("CPU shares above 262144 are not supported: set to 262144".into());
            hc.cpu_shares = Some(262_144);
        }
    }
    if let Some(p) = hc.pids_limit {
        if p < -1 {
            return invalid(format!("invalid PIDs limit {p}"));
        }
    }
    if let Some(s) = hc.shm_size {
        if s < 0 {
            return invalid("SHM size can not be less than 0");
        }
    }
    Ok(())
}

/// Resource checks for `update` (same rules as create).
pub fn check_update_resources(
    hc: &mut HostConfig,
    ncpu: i64,
    warnings: &mut Vec<String>,
) -> Result<(), SpecError> {
    let ctx = Ctx {
        ncpu,
        default_log_max_size: None,
        default_log_max_file: 1,
    };
    check_resources(hc, &ctx, warnings)
}

/// Validate `body` against `image` and produce the container's plan.
/// `anon_name` makes names for anonymous volumes.
pub fn plan(
    body: &ContainerCreateBody,
    image: &ImageInfo,
    ctx: &Ctx,
    mut anon_name: impl FnMut() -> String,
) -> Result<Plan, SpecError> {
    let mut warnings = Vec::new();
    let mut hc = body.host_config.clone().unwrap_or_default();
    let img = &image.config;

    // --- process
    let entrypoint_given = body.entrypoint.is_some();
    let mut entrypoint = match &body.entrypoint {
        Some(e) if e.len() == 1 && e[0].is_empty() => vec![],
        Some(e) => e.clone(),
        None => img.entrypoint.clone().unwrap_or_default(),
    };
    let cmd = match &body.cmd {
        Some(c) if !c.is_empty() => c.clone(),
        _ if entrypoint_given => vec![],
        _ => img.cmd.clone().unwrap_or_default(),
    };
    let mut argv = std::mem::take(&mut entrypoint);
    let ep_len = argv.len();
    argv.extend(cmd.iter().cloned());
    if argv.is_empty() {
        return invalid("No command specified");
    }
    let path = argv[0].clone();
    let args = argv[1..].to_vec();
    let final_entrypoint = argv[..ep_len].to_vec();

    let mut env = merge_env(&img.env, body.env.as_deref().unwrap_or_default());
    for e in &env {
        if e.starts_with('=') || e.is_empty() {
            return invalid(format!("invalid environment variable: {e:?}"));
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    let working_dir = match body.working_dir.as_deref().filter(|w| !w.is_empty()) {
        Some(w) => {
            if !w.starts_with('/') {
                return invalid(format!(
                    "the working directory '{w}' is invalid, it needs to be an absolute path"
                ));
            }
            clean_path(w)
        }
        None => img.working_dir.clone(),
    };
    let user = body
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| img.user.clone());

    let stop_signal_name = body
        .stop_signal
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| img.stop_signal.clone().filter(|s| !s.is_empty()));
    let stop_signal = match &stop_signal_name {
        Some(s) => signals::parse(s).map_err(SpecError::Invalid)?,
        None => libc::SIGTERM,
    };
    let stop_timeout = match body.stop_timeout {
        Some(t) if t < -1 => return invalid(format!("invalid stop timeout {t}")),
        Some(t) => t,
        None => DEFAULT_STOP_TIMEOUT,
    };
    let healthcheck = merge_health(body.healthcheck.as_ref(), img.healthcheck.as_ref())?;

    let mut labels: HashMap<String, String> = img.labels.clone();
    labels.extend(body.labels.clone().unwrap_or_default());
    let mut exposed: Vec<String> = img.exposed_ports.clone();
    for p in body.exposed_ports.clone().unwrap_or_default() {
        if !exposed.contains(&p) {
            exposed.push(p);
        }
    }
    let mut config_volumes: Vec<String> = img.volumes.clone();
    for v in body.volumes.clone().unwrap_or_default() {
        if !config_volumes.contains(&v) {
            config_volumes.push(v);
        }
    }

    // --- host config
    check_resources(&mut hc, ctx, &mut warnings)?;
    let restart_policy = parse_restart(&hc)?;
    let (log_config, log_max_size, log_max_file) = parse_log(&hc, ctx)?;
    hc.log_config = Some(log_config);
    for c in hc
        .cap_add
        .iter()
        .flatten()
        .chain(hc.cap_drop.iter().flatten())
    {
        normalize_cap(c)?;
    }
    for o in hc.security_opt.iter().flatten() {
        let (k, v) = o
            .split_once('=')
            .or_else(|| o.split_once(':'))
            .unwrap_or((o.as_str(), ""));
        let ok = match k {
            "no-new-privileges" => matches!(v, "" | "true" | "false"),
            "seccomp" => v == "unconfined" || v == "builtin",
            "apparmor" | "label" => true,
            _ => false,
        };
        if !ok {
            return invalid(format!("invalid --security-opt: {o:?}"));
        }
    }
    let network = parse_network(hc.network_mode.as_deref());
    if hc.network_mode.as_deref().is_none_or(|m| m.is_empty()) {
        hc.network_mode = Some("bridge".into());
    }
    if let Some(cs) = &hc.console_size {
        if cs.len() != 2 {
            return invalid("invalid ConsoleSize: want [height, width]");
        }
    }
    for (what, set) in [
        (
            "Devices",
            hc.devices.as_ref().is_some_and(|d| !d.is_empty()),
        ),
        (
            "Ulimits",
            hc.ulimits.as_ref().is_some_and(|d| !d.is_empty()),
        ),
        (
            "Sysctls",
            hc.sysctls.as_ref().is_some_and(|d| !d.is_empty()),
        ),
        (
            "VolumesFrom",
            hc.volumes_from.as_ref().is_some_and(|d| !d.is_empty()),
        ),
        ("Links", hc.links.as_ref().is_some_and(|d| !d.is_empty())),
        (
            "CpusetCpus",
            hc.cpuset_cpus.as_ref().is_some_and(|d| !d.is_empty()),
        ),
        (
            "DeviceRequests",
            hc.device_requests.as_ref().is_some_and(|d| !d.is_empty()),
        ),
    ] {
        if set {
            return invalid(format!("{what} are not supported by shibafu yet"));
        }
    }
    for (what, v) in [
        ("PidMode", &hc.pid_mode),
        ("IpcMode", &hc.ipc_mode),
        ("UTSMode", &hc.uts_mode),
        ("UsernsMode", &hc.userns_mode),
    ] {
        if let Some(v) = v {
            if !(v.is_empty() || (what == "IpcMode" && (v == "private" || v == "shareable"))) {
                return invalid(format!("{what} {v:?} is not supported by shibafu yet"));
            }
        }
    }

    // --- mounts
    let mut mounts: Vec<MountSpec> = Vec::new();
    let mut volumes: Vec<VolumeNeed> = Vec::new();
    let mut bind_dirs: Vec<PathBuf> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut add = |m: MountSpec, mounts: &mut Vec<MountSpec>| -> Result<(), SpecError> {
        if !seen.insert(m.destination.clone()) {
            return invalid(format!("Duplicate mount point: {}", m.destination));
        }
        mounts.push(m);
        Ok(())
    };
    let need_volume = |volumes: &mut Vec<VolumeNeed>,
                       name: &str,
                       labels: HashMap<String, String>,
                       anonymous: bool| {
        if !volumes.iter().any(|v| v.name == name) {
            volumes.push(VolumeNeed {
                name: name.to_string(),
                labels,
                anonymous,
            });
        }
    };
    for b in hc.binds.clone().unwrap_or_default() {
        let (src, dst, modes) = parse_bind(&b)?;
        let rw = !modes.iter().any(|m| m == "ro");
        let mode = modes.join(",");
        match src {
            Some(s) if s.starts_with('/') => {
                bind_dirs.push(PathBuf::from(&s));
                add(
                    MountSpec {
                        kind: MountKind::Bind,
                        name: String::new(),
                        source: clean_path(&s),
                        destination: dst,
                        rw,
                        mode,
                        options: modes
                            .iter()
                            .filter(|m| {
                                m.contains("private") || m.contains("shared") || m.contains("slave")
                            })
                            .cloned()
                            .collect(),
                        anonymous: false,
                    },
                    &mut mounts,
                )?;
            }
            Some(name) => {
                if !is_volume_name(&name) {
                    return invalid(format!(
                        "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
                    ));
                }
                need_volume(&mut volumes, &name, HashMap::new(), false);
                add(
                    MountSpec {
                        kind: MountKind::Volume,
                        name,
                        source: String::new(),
                        destination: dst,
                        rw,
                        mode: if mode.is_empty() { "z".into() } else { mode },
                        options: modes.iter().filter(|m| *m == "nocopy").cloned().collect(),
                        anonymous: false,
                    },
                    &mut mounts,
                )?;
            }
            None => {
                let name = anon_name();
                need_volume(
                    &mut volumes,
                    &name,
                    HashMap::from([(ANON_LABEL.to_string(), String::new())]),
                    true,
                );
                add(
                    MountSpec {
                        kind: MountKind::Volume,
                        name,
                        source: String::new(),
                        destination: dst,
                        rw,
                        mode,
                        options: vec![],
                        anonymous: true,
                    },
                    &mut mounts,
                )?;
            }
        }
    }
    for m in hc.mounts.clone().unwrap_or_default() {
        let spec = mount_from_api(&m, &mut anon_name)?;
        if spec.kind == MountKind::Volume {
            let labels = m
                .volume_options
                .as_ref()
                .and_then(|o| o.labels.clone())
                .unwrap_or_default();
            let mut labels = labels;
            if spec.anonymous {
                labels.insert(ANON_LABEL.into(), String::new());
            }
            need_volume(&mut volumes, &spec.name, labels, spec.anonymous);
        }
        add(spec, &mut mounts)?;
    }
    let mut tmpfs: BTreeMap<String, String> = BTreeMap::new();
    tmpfs.extend(hc.tmpfs.clone().unwrap_or_default());
    for (dst, opts) in tmpfs {
        check_destination(&dst)?;
        let (ro, mut options) = parse_tmpfs_opts(&dst, &opts)?;
        for d in ["noexec", "nosuid", "nodev"] {
            let opposite = d.trim_start_matches("no");
            if !options.iter().any(|o| o == d || o == opposite) {
                options.push(d.to_string());
            }
        }
        add(
            MountSpec {
                kind: MountKind::Tmpfs,
                name: String::new(),
                source: String::new(),
                destination: clean_path(&dst),
                rw: !ro,
                mode: opts.clone(),
                options,
                anonymous: false,
            },
            &mut mounts,
        )?;
    }
    // Image VOLUMEs and `-v /path` that no explicit mount covers.
    for v in &config_volumes {
        let dst = clean_path(v);
        if !v.starts_with('/') {
            return invalid(format!("invalid volume path {v:?}: must be absolute"));
        }
        if mounts.iter().any(|m| m.destination == dst) {
            continue;
        }
        let name = anon_name();
        need_volume(
            &mut volumes,
            &name,
            HashMap::from([(ANON_LABEL.to_string(), String::new())]),
            true,
        );
        mounts.push(MountSpec {
            kind: MountKind::Volume,
            name,
            source: String::new(),
            destination: dst,
            rw: true,
            mode: String::new(),
            options: vec![],
            anonymous: true,
        });
    }

    let config = ContainerConfig {
        hostname: body.hostname.clone().filter(|h| !h.is_empty()),
        domainname: Some(body.domainname.clone().unwrap_or_default()),
        user: Some(user),
        attach_stdin: Some(body.attach_stdin.unwrap_or(false)),
        attach_stdout: Some(body.attach_stdout.unwrap_or(false)),
        attach_stderr: Some(body.attach_stderr.unwrap_or(false)),
        exposed_ports: if exposed.is_empty() {
            None
        } else {
            Some(exposed)
        },
        tty: Some(body.tty.unwrap_or(false)),
        open_stdin: Some(body.open_stdin.unwrap_or(false)),
        stdin_once: Some(body.stdin_once.unwrap_or(false)),
        env: Some(env),
        cmd: if cmd.is_empty() { None } else { Some(cmd) },
        healthcheck,
        args_escaped: None,
        image: body.image.clone(),
        volumes: if config_volumes.is_empty() {
            None
        } else {
            Some(config_volumes)
        },
        working_dir: Some(working_dir),
        entrypoint: if final_entrypoint.is_empty() {
            None
        } else {
            Some(final_entrypoint)
        },
        network_disabled: body.network_disabled,
        on_build: None,
        labels: Some(labels),
        stop_signal: stop_signal_name,
        stop_timeout: body.stop_timeout,
        shell: body.shell.clone(),
    };
    Ok(Plan {
        config,
        host_config: hc,
        path,
        args,
        mounts,
        volumes,
        bind_dirs,
        network,
        restart_policy,
        log_max_size,
        log_max_file,
        stop_signal,
        stop_timeout,
        warnings,
    })
}

fn mount_from_api(
    m: &Mount,
    anon_name: &mut impl FnMut() -> String,
) -> Result<MountSpec, SpecError> {
    let target = m.target.clone().unwrap_or_default();
    check_destination(&target)?;
    let dst = clean_path(&target);
    let rw = !m.read_only.unwrap_or(false);
    let mode = String::new();
    let typ = m
        .typ
        .ok_or_else(|| SpecError::Invalid("invalid mount config: mount type unknown".into()))?;
    let src = m.source.clone().unwrap_or_default();
    match typ {
        MountType::BIND => {
            if !src.starts_with('/') {
                return invalid(format!(
                    "invalid mount config for type \"bind\": invalid mount path: '{src}' mount path must be absolute"
                ));
            }
            let create = m
                .bind_options
                .as_ref()
                .and_then(|o| o.create_mountpoint)
                .unwrap_or(false);
            if !create && !Path::new(&src).exists() {
                return invalid(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {src}"
                ));
            }
            Ok(MountSpec {
                kind: MountKind::Bind,
                name: String::new(),
                source: clean_path(&src),
                destination: dst,
                rw,
                mode,
                options: vec![],
                anonymous: false,
            })
        }
        MountType::VOLUME => {
            let anonymous = src.is_empty();
            if !anonymous && !is_volume_name(&src) {
                return invalid(format!(
                    "invalid mount config for type \"volume\": invalid volume name {src:?}"
                ));
            }
            let name = if anonymous { anon_name() } else { src };
            let nocopy = m
                .volume_options
                .as_ref()
                .and_then(|o| o.no_copy)
                .unwrap_or(false);
            Ok(MountSpec {
                kind: MountKind::Volume,
                name,
                source: String::new(),
                destination: dst,
                rw,
                mode: "z".into(),
                options: if nocopy {
                    vec!["nocopy".into()]
                } else {
                    vec![]
                },
                anonymous,
            })
        }
        MountType::TMPFS => {
            if !src.is_empty() {
                return invalid(
                    "invalid mount config for type \"tmpfs\": source must not be specified",
                );
            }
            let mut options = vec!["noexec".to_string(), "nosuid".into(), "nodev".into()];
            if let Some(o) = &m.tmpfs_options {
                if let Some(s) = o.size_bytes {
                    if s < 0 {
                        return invalid("invalid mount config for type \"tmpfs\": invalid size");
                    }
                    options.push(format!("size={s}"));
                }
                if let Some(mo) = o.mode {
                    options.push(format!("mode={mo:o}"));
                }
            }
            Ok(MountSpec {
                kind: MountKind::Tmpfs,
                name: String::new(),
                source: String::new(),
                destination: dst,
                rw,
                mode,
                options,
                anonymous: false,
            })
        }
        other => invalid(format!("mount type {other:?} is not supported")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ImageDefaults;
    use bollard_stubs::models::RestartPolicy as ApiRestart;

    fn ctx() -> Ctx {
        Ctx {
            ncpu: 2,
            default_log_max_size: None,
            default_log_max_file: 1,
        }
    }
    fn image() -> ImageInfo {
        ImageInfo {
            id: "sha256:abc".into(),
            config: ImageDefaults {
                env: vec!["PATH=/bin".into(), "A=1".into()],
                cmd: Some(vec!["sh".into()]),
                volumes: vec!["/data".into()],
                labels: HashMap::from([("from".into(), "image".into())]),
                ..Default::default()
            },
            ..Default::default()
        }
    }
    fn body() -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some("busybox".into()),
            ..Default::default()
        }
    }
    fn anon() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("anon{n}")
        }
    }
    fn err(b: &ContainerCreateBody) -> String {
        plan(b, &image(), &ctx(), anon()).unwrap_err().to_string()
    }
    fn hc(h: HostConfig) -> ContainerCreateBody {
        ContainerCreateBody {
            host_config: Some(h),
            ..body()
        }
    }

    #[test]
    fn image_cmd_used_and_entrypoint_resets_it() {
        let p = plan(&body(), &image(), &ctx(), anon()).unwrap();
        assert_eq!((p.path.as_str(), p.args.len()), ("sh", 0));
        let b = ContainerCreateBody {
            entrypoint: Some(vec!["echo".into()]),
            ..body()
        };
        let p = plan(&b, &image(), &ctx(), anon()).unwrap();
        assert_eq!(p.path, "echo");
        assert!(p.args.is_empty(), "image Cmd must be reset by --entrypoint");
        let b = ContainerCreateBody {
            entrypoint: Some(vec!["echo".into()]),
            cmd: Some(vec!["hi".into()]),
            ..body()
        };
        let p = plan(&b, &image(), &ctx(), anon()).unwrap();
        assert_eq!(p.args, vec!["hi"]);
        assert_eq!(p.config.entrypoint, Some(vec!["echo".to_string()]));
        let b = ContainerCreateBody {
            entrypoint: Some(vec!["".into()]),
            ..body()
        };
        assert_eq!(err(&b), "No command specified");
    }

    #[test]
    fn env_labels_volumes_merge() {
        let b = ContainerCreateBody {
            env: Some(vec!["A=2".into(), "B=3".into()]),
            labels: Some(HashMap::from([("x".into(), "y".into())])),
            volumes: Some(vec!["/cache".into()]),
            ..body()
        };
        let p = plan(&b, &image(), &ctx(), anon()).unwrap();
        assert_eq!(
            p.config.env.unwrap(),
            vec!["PATH=/bin".to_string(), "A=2".into(), "B=3".into()]
        );
        let labels = p.config.labels.unwrap();
        assert_eq!(labels["from"], "image");
        assert_eq!(labels["x"], "y");
        let dsts: Vec<_> = p.mounts.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(dsts, vec!["/data", "/cache"]);
        assert!(p.mounts.iter().all(|m| m.anonymous));
        assert_eq!(p.volumes.len(), 2);
        // Without an image PATH, Docker's default is added.
        let mut img = image();
        img.config.env.clear();
        let p = plan(&body(), &img, &ctx(), anon()).unwrap();
        assert_eq!(p.config.env.unwrap()[0], format!("PATH={DEFAULT_PATH}"));
    }

    #[test]
    fn resource_limits() {
        let b = hc(HostConfig {
            memory: Some(1024 * 1024),
            ..Default::default()
        });
        assert_eq!(err(&b), "Minimum memory limit allowed is 6MB");
        let b = hc(HostConfig {
            nano_cpus: Some(-1_000_000_000),
            ..Default::default()
        });
        assert_eq!(
            err(&b),
            "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"
        );
        let b = hc(HostConfig {
            nano_cpus: Some(3_000_000_000),
            ..Default::default()
        });
        assert!(err(&b).starts_with("Range of CPUs"));
        let b = hc(HostConfig {
            nano_cpus: Some(1_500_000_000),
            memory: Some(64 << 20),
            cpu_shares: Some(512),
            pids_limit: Some(100),
            ..Default::default()
        });
        assert!(plan(&b, &image(), &ctx(), anon()).is_ok());
        let b = hc(HostConfig {
            cpu_shares: Some(-5),
            ..Default::default()
        });
        assert!(err(&b).contains("CPU shares"));
        let b = hc(HostConfig {
            cpu_quota: Some(500),
            ..Default::default()
        });
        assert!(err(&b).contains("quota"));
    }

    #[test]
    fn restart_policies() {
        let rp = |name, max| HostConfig {
            restart_policy: Some(ApiRestart {
                name: Some(name),
                maximum_retry_count: Some(max),
            }),
            ..Default::default()
        };
        let p = plan(
            &hc(rp(RestartPolicyNameEnum::ON_FAILURE, 3)),
            &image(),
            &ctx(),
            anon(),
        )
        .unwrap();
        assert_eq!(p.restart_policy, RestartPolicy::OnFailure(3));
        assert!(err(&hc(rp(RestartPolicyNameEnum::ALWAYS, 3))).contains("maximum retry count"));
        assert!(err(&hc(rp(RestartPolicyNameEnum::ON_FAILURE, -1))).contains("negative"));
        let mut h = rp(RestartPolicyNameEnum::ALWAYS, 0);
        h.auto_remove = Some(true);
        assert_eq!(
            err(&hc(h)),
            "can't create 'AutoRemove' container with restart policy"
        );
    }

    #[test]
    fn binds_and_volumes() {
        let b = hc(HostConfig {
            binds: Some(vec![
                "/srv/x:/x:ro".into(),
                "data:/data".into(),
                "/anon".into(),
            ]),
            tmpfs: Some(HashMap::from([(
                "/run".into(),
                "size=64m,mode=1777".into(),
            )])),
            ..Default::default()
        });
        let p = plan(&b, &image(), &ctx(), anon()).unwrap();
        let m: HashMap<_, _> = p
            .mounts
            .iter()
            .map(|m| (m.destination.clone(), m.clone()))
            .collect();
        assert_eq!(m["/x"].kind, MountKind::Bind);
        assert!(!m["/x"].rw);
        assert_eq!(m["/data"].name, "data");
        assert!(
            !m["/data"].anonymous,
            "the image VOLUME /data is covered by the named volume"
        );
        assert!(m["/anon"].anonymous);
        assert_eq!(m["/run"].kind, MountKind::Tmpfs);
        assert!(m["/run"].options.contains(&format!("size={}", 64 << 20)));
        assert_eq!(p.bind_dirs, vec![PathBuf::from("/srv/x")]);
        assert_eq!(
            err(&hc(HostConfig {
                binds: Some(vec!["/a:/x:bogus".into()]),
                ..Default::default()
            })),
            "invalid mode: bogus"
        );
        assert!(err(&hc(HostConfig {
            binds: Some(vec!["/a:relative".into()]),
            ..Default::default()
        }))
        .contains("invalid"));
        assert_eq!(
            err(&hc(HostConfig {
                binds: Some(vec!["/a:/x".into(), "/b:/x".into()]),
                ..Default::default()
            })),
            "Duplicate mount point: /x"
        );
        assert!(err(&hc(HostConfig {
            tmpfs: Some(HashMap::from([("/run".into(), "size=lots".into())])),
            ..Default::default()
        }))
        .contains("size"));
    }

    #[test]
    fn caps_signals_health_logs() {
        assert_eq!(
            err(&hc(HostConfig {
                cap_add: Some(vec!["NOPE".into()]),
                ..Default::default()
            })),
            "unknown capability: \"NOPE\""
        );
        assert!(plan(
            &hc(HostConfig {
                cap_add: Some(vec!["net_admin".into(), "CAP_SYS_TIME".into()]),
                cap_drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            &image(),
            &ctx(),
            anon()
        )
        .is_ok());
        let b = ContainerCreateBody {
            stop_signal: Some("SIGBOGUS".into()),
            ..body()
        };
        assert_eq!(err(&b), "Invalid signal: SIGBOGUS");
        let b = ContainerCreateBody {
            stop_signal: Some("SIGINT".into()),
            ..body()
        };
        assert_eq!(plan(&b, &image(), &ctx(), anon()).unwrap().stop_signal, 2);
        let b = ContainerCreateBody {
            healthcheck: Some(HealthConfig {
                test: Some(vec!["CMD-SHELL".into(), "true".into()]),
                interval: Some(10),
                ..Default::default()
            }),
            ..body()
        };
        assert_eq!(err(&b), "Interval in Healthcheck cannot be less than 1ms");
        let lc = |k: &str, v: &str| {
            hc(HostConfig {
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([(k.to_string(), v.to_string())])),
                }),
                ..Default::default()
            })
        };
        let p = plan(&lc("max-size", "10m"), &image(), &ctx(), anon()).unwrap();
        assert_eq!(p.log_max_size, Some(10 << 20));
        assert!(err(&lc("max-size", "ten")).contains("max-size"));
        assert!(err(&lc("max-file", "0")).contains("max-file"));
        assert!(err(&lc("bogus", "1")).contains("unknown log opt"));
        let b = hc(HostConfig {
            log_config: Some(HostConfigLogConfig {
                typ: Some("syslog".into()),
                config: None,
            }),
            ..Default::default()
        });
        assert!(err(&b).contains("no log driver named 'syslog'"));
    }

    #[test]
    fn sizes_and_networks() {
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("2MiB"), Some(2 << 20));
        assert_eq!(parse_size("12q"), None);
        assert_eq!(parse_network(Some("default")), NetRequest::Bridge);
        assert_eq!(parse_network(None), NetRequest::Bridge);
        assert_eq!(parse_network(Some("none")), NetRequest::None);
        assert_eq!(
            parse_network(Some("container:web")),
            NetRequest::Container("web".into())
        );
        assert_eq!(
            parse_network(Some("mynet")),
            NetRequest::Named("mynet".into())
        );
    }

    #[test]
    fn workdir_must_be_absolute() {
        let b = ContainerCreateBody {
            working_dir: Some("rel".into()),
            ..body()
        };
        assert!(err(&b).contains("needs to be an absolute path"));
    }
}
