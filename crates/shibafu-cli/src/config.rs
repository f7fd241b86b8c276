//! Turns `run`/`create`/`update` flags into the Docker API's create and update bodies.
//! Everything is validated here, before any request is sent.

use std::collections::HashMap;

use bollard_stubs::models::{
    ContainerCreateBody, ContainerUpdateBody, EndpointIpamConfig, EndpointSettings, HealthConfig,
    HostConfig, HostConfigLogConfig, NetworkingConfig, PortMap,
};

use crate::cli::{ContainerOpts, UpdateArgs};
use crate::error::{CliError, Result};
use crate::human::parse_go_duration;
use crate::opts::*;

/// docker's pflag message for a bad flag value.
pub fn flag_err(value: &str, flag: &str, why: impl std::fmt::Display) -> CliError {
    CliError::usage(format!(
        "invalid argument \"{value}\" for \"{flag}\" flag: {why}"
    ))
}

fn int_flag(v: &Option<String>, flag: &str) -> Result<Option<i64>> {
    match v {
        None => Ok(None),
        Some(s) => s.trim().parse::<i64>().map(Some).map_err(|_| {
            flag_err(
                s,
                flag,
                format!("strconv.ParseInt: parsing \"{s}\": invalid syntax"),
            )
        }),
    }
}

fn size_flag(v: &Option<String>, flag: &str) -> Result<Option<i64>> {
    match v {
        None => Ok(None),
        Some(s) => parse_size(s).map(Some).map_err(|e| flag_err(s, flag, e)),
    }
}

fn swap_flag(v: &Option<String>) -> Result<Option<i64>> {
    match v.as_deref() {
        Some("-1") => Ok(Some(-1)),
        _ => size_flag(v, "--memory-swap"),
    }
}

fn duration_flag(v: &Option<String>, flag: &str) -> Result<Option<i64>> {
    match v {
        None => Ok(None),
        Some(s) => {
            if s.trim().starts_with('-') {
                return Err(CliError::usage(format!("{flag} cannot be negative")));
            }
            let d = parse_go_duration(s).map_err(|e| flag_err(s, flag, e))?;
            Ok(Some(d.as_nanos() as i64))
        }
    }
}

fn cpus_flag(v: &Option<String>) -> Result<Option<i64>> {
    match v {
        None => Ok(None),
        Some(s) => parse_cpus(s)
            .map(Some)
            .map_err(|e| flag_err(s, "--cpus", e)),
    }
}

fn read_file(path: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("open {path}: {}", io_reason(&e))))
}

/// The short reason Go prints for an I/O error ("no such file or directory").
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => {
            let mut r = s[..i].to_string();
            if let Some(c) = r.get(0..1) {
                r.replace_range(0..1, &c.to_lowercase());
            }
            r
        }
        None => s,
    }
}

/// Environment from `--env-file`s then `-e`s (docker's order).
pub fn collect_env(env_files: &[String], env: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let lookup = |k: &str| std::env::var(k).ok();
    for f in env_files {
        let content = read_file(f)?;
        out.extend(parse_kv_file(&content, f, Some(&lookup)).map_err(CliError::usage)?);
    }
    out.extend(env.iter().map(|e| expand_env(e)));
    Ok(out)
}

fn security_opts(opts: &[String]) -> Result<(Vec<String>, bool)> {
    let mut out = Vec::new();
    let mut unconfined_paths = false;
    for o in opts {
        let o = o.trim();
        if o == "systempaths=unconfined" {
            unconfined_paths = true;
            continue;
        }
        let (k, v) = match o.split_once('=') {
            Some(kv) => kv,
            None if o == "no-new-privileges" => {
                out.push(o.to_string());
                continue;
            }
            None => match o.split_once(':') {
                Some(kv) => kv,
                None => return Err(CliError::usage(format!("Invalid --security-opt: {o:?}"))),
            },
        };
        if k == "seccomp" && v != "unconfined" && v != "builtin" {
            // docker sends the profile's content, not its path
            let content = read_file(v)?;
            let json: serde_json::Value = serde_json::from_str(&content).map_err(|e| {
                CliError::usage(format!("opening seccomp profile ({v}) failed: {e}"))
            })?;
            out.push(format!("seccomp={json}"));
        } else {
            out.push(o.to_string());
        }
    }
    Ok((out, unconfined_paths))
}

/// One `--network` value: a name, or docker's long syntax
/// `name=NET,alias=A,ip=IP,ip6=IP,mac-address=MAC,driver-opt=K=V,gw-priority=N,link-local-ip=IP`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NetworkAttachment {
    pub target: String,
    pub aliases: Vec<String>,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    pub mac: Option<String>,
    pub link_local_ips: Vec<String>,
    pub driver_opts: HashMap<String, String>,
    pub gw_priority: i64,
    pub links: Vec<String>,
}

/// docker's long-syntax test (`\w+=\w+` anywhere in the value).
fn long_syntax(v: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = v.as_bytes();
    (1..b.len().saturating_sub(1)).any(|i| b[i] == b'=' && word(b[i - 1]) && word(b[i + 1]))
}

/// Parses one `--network` flag value (docker's `NetworkOpt.Set`).
pub fn parse_network_opt(value: &str) -> Result<NetworkAttachment> {
    if !long_syntax(value) {
        return Ok(NetworkAttachment {
            target: value.to_string(),
            ..Default::default()
        });
    }
    let err = |why: String| flag_err(value, "--network", why);
    let mut a = NetworkAttachment::default();
    for field in value.split(',') {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) if !k.is_empty() => (k.trim().to_ascii_lowercase(), v.trim()),
            _ => return Err(err(format!("invalid field {field}"))),
        };
        match k.as_str() {
            "name" => a.target = v.to_string(),
            "alias" => a.aliases.push(v.to_string()),
            "ip" => a.ipv4 = Some(v.to_string()),
            "ip6" => a.ipv6 = Some(v.to_string()),
            "mac-address" => a.mac = Some(v.to_string()),
            "link-local-ip" => a.link_local_ips.push(v.to_string()),
            "driver-opt" => match v.split_once('=') {
                Some((dk, dv)) if !dk.trim().is_empty() => {
                    a.driver_opts
                        .insert(dk.trim().to_string(), dv.trim().to_string());
                }
                _ => return Err(err("invalid key value pair format in driver options".into())),
            },
            "gw-priority" => {
                a.gw_priority = v.parse().map_err(|_| {
                    err(format!(
                        "invalid gw-priority: strconv.Atoi: parsing {}: invalid syntax",
                        crate::human::go_quote(v)
                    ))
                })?
            }
            _ => return Err(err(format!("invalid field key {k}"))),
        }
    }
    if a.target.is_empty() {
        return Err(err("network name/id is not specified".into()));
    }
    Ok(a)
}

/// docker's `NetworkMode.IsUserDefined`.
fn user_defined(n: &str) -> bool {
    !matches!(n, "default" | "bridge" | "host" | "none") && !n.starts_with("container:")
}

/// Go's `net.ParseMAC` for the colon/dash forms (6, 8 or 20 octets).
fn valid_mac(s: &str) -> bool {
    let sep = if s.contains(':') { ':' } else { '-' };
    let parts: Vec<&str> = s.split(sep).collect();
    matches!(parts.len(), 6 | 8 | 20)
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The flat flags (`--network-alias`, `--ip`, `--ip6`, `--mac-address`, `--link`)
/// apply to the first network, as in docker's `applyContainerOptions`.
fn apply_container_options(n: &mut NetworkAttachment, o: &ContainerOpts) -> Result<()> {
    let conflict = |what: &str| {
        Err(CliError::usage(format!(
            "conflicting options: cannot specify both {what}"
        )))
    };
    if !n.aliases.is_empty() && !o.network_alias.is_empty() {
        return conflict("--network-alias and per-network alias");
    }
    if n.ipv4.is_some() && o.ip.is_some() {
        return conflict("--ip and per-network IPv4 address");
    }
    if n.ipv6.is_some() && o.ip6.is_some() {
        return conflict("--ip6 and per-network IPv6 address");
    }
    if n.mac.is_some() && o.mac_address.is_some() {
        return conflict("--mac-address and per-network MAC address");
    }
    if !o.network_alias.is_empty() {
        n.aliases = o.network_alias.clone();
    }
    if user_defined(&n.target) && !o.link.is_empty() {
        n.links = o.link.clone();
    }
    if let Some(ip) = o.ip.as_ref().filter(|s| !s.is_empty()) {
        n.ipv4 = Some(ip.clone());
    }
    if let Some(ip) = o.ip6.as_ref().filter(|s| !s.is_empty()) {
        n.ipv6 = Some(ip.clone());
    }
    if let Some(m) = o.mac_address.as_ref().filter(|s| !s.is_empty()) {
        n.mac = Some(m.clone());
    }
    Ok(())
}

/// docker's `parseNetworkAttachmentOpt`.
fn endpoint_settings(n: &NetworkAttachment) -> Result<EndpointSettings> {
    if n.target.trim().is_empty() {
        return Err(CliError::usage("no name set for network"));
    }
    if !user_defined(&n.target) {
        if !n.aliases.is_empty() {
            return Err(CliError::usage(
                "network-scoped aliases are only supported for user-defined networks",
            ));
        }
        if !n.links.is_empty() {
            return Err(CliError::usage(
                "links are only supported for user-defined networks",
            ));
        }
    }
    let mut ep = EndpointSettings {
        aliases: (!n.aliases.is_empty()).then(|| n.aliases.clone()),
        driver_opts: (!n.driver_opts.is_empty()).then(|| n.driver_opts.clone()),
        links: (!n.links.is_empty()).then(|| n.links.clone()),
        gw_priority: (n.gw_priority != 0).then_some(n.gw_priority),
        ..Default::default()
    };
    if n.ipv4.is_some() || n.ipv6.is_some() || !n.link_local_ips.is_empty() {
        ep.ipam_config = Some(EndpointIpamConfig {
            ipv4_address: n.ipv4.clone(),
            ipv6_address: n.ipv6.clone(),
            link_local_ips: (!n.link_local_ips.is_empty()).then(|| n.link_local_ips.clone()),
        });
    }
    if let Some(m) = &n.mac {
        if !valid_mac(m.trim()) {
            return Err(CliError::usage(format!("{m} is not a valid mac address")));
        }
        ep.mac_address = Some(m.clone());
    }
    Ok(ep)
}

/// `NetworkingConfig.EndpointsConfig` exactly as docker's CLI (API >= 1.44) builds
/// it: `default` when no `--network`; every network when several (the flat flags
/// on the first); a lone network without options is left to the daemon.
pub fn network_endpoints(o: &ContainerOpts) -> Result<HashMap<String, EndpointSettings>> {
    let mut endpoints = HashMap::new();
    if o.network.is_empty() {
        let mut n = NetworkAttachment {
            target: "default".into(),
            ..Default::default()
        };
        apply_container_options(&mut n, o)?;
        endpoints.insert("default".to_string(), endpoint_settings(&n)?);
        return Ok(endpoints);
    }
    let (mut user, mut non_user) = (false, false);
    for (i, raw) in o.network.iter().enumerate() {
        let mut n = parse_network_opt(raw)?;
        if user_defined(&n.target) {
            user = true;
        } else {
            non_user = true;
        }
        if i == 0 {
            apply_container_options(&mut n, o)?;
        }
        let ep = endpoint_settings(&n)?;
        if endpoints.contains_key(&n.target) {
            return Err(CliError::usage(format!(
                "network {} is specified multiple times",
                crate::human::go_quote(&n.target)
            )));
        }
        if i == 0 && o.network.len() == 1 && ep == EndpointSettings::default() {
            continue;
        }
        endpoints.insert(n.target.clone(), ep);
    }
    if user && non_user {
        return Err(CliError::usage(
            "conflicting options: cannot attach both user-defined and non-user-defined network-modes",
        ));
    }
    Ok(endpoints)
}

/// Builds the create body. `cwd` resolves relative bind sources.
pub fn build_create(
    o: &ContainerOpts,
    image: &str,
    command: &[String],
    cwd: &std::path::Path,
) -> Result<ContainerCreateBody> {
    // Parse everything first: docker reports flag errors before any request.
    let memory = size_flag(&o.memory, "-m, --memory")?;
    let memory_swap = swap_flag(&o.memory_swap)?;
    let memory_reservation = size_flag(&o.memory_reservation, "--memory-reservation")?;
    let shm_size = size_flag(&o.shm_size, "--shm-size")?;
    let nano_cpus = cpus_flag(&o.cpus)?;
    let cpu_shares = int_flag(&o.cpu_shares, "-c, --cpu-shares")?;
    let cpu_quota = int_flag(&o.cpu_quota, "--cpu-quota")?;
    let cpu_period = int_flag(&o.cpu_period, "--cpu-period")?;
    let pids_limit = int_flag(&o.pids_limit, "--pids-limit")?;
    let stop_timeout = int_flag(&o.stop_timeout, "--stop-timeout")?;
    let oom_score_adj = int_flag(&o.oom_score_adj, "--oom-score-adj")?;
    if nano_cpus.is_some() && (cpu_quota.is_some() || cpu_period.is_some()) {
        return Err(CliError::usage(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ));
    }
    if let Some(ms) = memory_swap {
        if ms > 0 && memory.is_some_and(|m| ms < m) {
            return Err(CliError::usage(
                "Minimum memoryswap limit should be larger than memory limit, see usage",
            ));
        }
    }
    if o.rm
        && o.restart
            .as_deref()
            .is_some_and(|r| r != "no" && !r.is_empty())
    {
        return Err(CliError::usage(
            "Conflicting options: cannot specify both --restart and --rm",
        ));
    }
    let restart = match &o.restart {
        Some(r) => Some(parse_restart(r).map_err(|e| flag_err(r, "--restart", e))?),
        None => None,
    };

    // Health check
    let health_given = o.health_cmd.is_some()
        || o.health_interval.is_some()
        || o.health_retries.is_some()
        || o.health_timeout.is_some()
        || o.health_start_period.is_some()
        || o.health_start_interval.is_some();
    let healthcheck = if o.no_healthcheck {
        if health_given {
            return Err(CliError::usage(
                "--no-healthcheck conflicts with --health-* options",
            ));
        }
        Some(HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        })
    } else if health_given {
        let retries = int_flag(&o.health_retries, "--health-retries")?;
        if retries.is_some_and(|r| r < 0) {
            return Err(CliError::usage("--health-retries cannot be negative"));
        }
        Some(HealthConfig {
            test: o
                .health_cmd
                .as_ref()
                .map(|c| vec!["CMD-SHELL".to_string(), c.clone()]),
            interval: duration_flag(&o.health_interval, "--health-interval")?,
            timeout: duration_flag(&o.health_timeout, "--health-timeout")?,
            start_period: duration_flag(&o.health_start_period, "--health-start-period")?,
            start_interval: duration_flag(&o.health_start_interval, "--health-start-interval")?,
            retries,
        })
    } else {
        None
    };

    let env = collect_env(&o.env_file, &o.env)?;
    let mut labels = Vec::new();
    for f in &o.label_file {
        labels.extend(parse_kv_file(&read_file(f)?, f, None).map_err(CliError::usage)?);
    }
    labels.extend(o.label.iter().cloned());
    // shibafu's service flags win over the same keys given with --label.
    for (k, v) in crate::dnsopts::service_labels(o, &labels)? {
        labels.push(format!("{k}={v}"));
    }

    let mut binds = Vec::new();
    let mut anon_volumes = Vec::new();
    for v in &o.volume {
        match parse_volume(v, cwd).map_err(CliError::usage)? {
            VolumeSpec::Bind(b) => binds.push(b),
            VolumeSpec::Anonymous(d) => anon_volumes.push(d),
        }
    }
    let mut mounts = Vec::new();
    for m in &o.mount {
        mounts.push(parse_mount(m).map_err(|e| flag_err(m, "--mount", e))?);
    }
    let mut tmpfs = HashMap::new();
    for t in &o.tmpfs {
        let (p, opts) = parse_tmpfs(t).map_err(CliError::usage)?;
        tmpfs.insert(p, opts);
    }
    let mut ulimits = Vec::new();
    for u in &o.ulimit {
        ulimits.push(parse_ulimit(u).map_err(|e| flag_err(u, "--ulimit", e))?);
    }
    let mut exposed: Vec<String> = Vec::new();
    for e in &o.expose {
        if e.contains(':') {
            return Err(CliError::usage(format!(
                "invalid port format for --expose: {e}"
            )));
        }
        for p in parse_expose(e).map_err(|err| {
            CliError::usage(format!(
                "invalid range format for --expose: {e}, error: {err}"
            ))
        })? {
            if !exposed.contains(&p) {
                exposed.push(p);
            }
        }
    }
    let mut port_bindings: PortMap = HashMap::new();
    for p in &o.publish {
        for (key, binding) in parse_publish(p).map_err(CliError::usage)? {
            if !exposed.contains(&key) {
                exposed.push(key.clone());
            }
            port_bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(binding);
        }
    }
    let mut log_config = None;
    if o.log_driver.is_some() || !o.log_opt.is_empty() {
        for l in &o.log_opt {
            if !l.contains('=') {
                return Err(flag_err(l, "--log-opt", "must be in the form key=value"));
            }
        }
        log_config = Some(HostConfigLogConfig {
            typ: o.log_driver.clone(),
            config: if o.log_opt.is_empty() {
                None
            } else {
                Some(kv_map(&o.log_opt))
            },
        });
    }
    let (security_opt, unconfined_paths) = security_opts(&o.security_opt)?;
    let extra_hosts: Vec<String> = o
        .add_host
        .iter()
        .map(|h| {
            // docker accepts host=ip too
            match h.split_once('=') {
                Some((n, ip)) => Ok(format!("{n}:{ip}")),
                None if h.contains(':') => Ok(h.clone()),
                None => Err(flag_err(
                    h,
                    "--add-host",
                    format!("bad format for add-host: {h:?}"),
                )),
            }
        })
        .collect::<Result<_>>()?;
    let mut sysctls = HashMap::new();
    for s in &o.sysctl {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| flag_err(s, "--sysctl", format!("{s} is not a valid sysctl value")))?;
        sysctls.insert(k.to_string(), v.to_string());
    }
    let mut attach_stdin = o.interactive;
    let (mut attach_stdout, mut attach_stderr) = (true, true);
    if !o.attach.is_empty() {
        attach_stdout = false;
        attach_stderr = false;
        for a in &o.attach {
            match a.to_ascii_lowercase().as_str() {
                "stdin" => attach_stdin = true,
                "stdout" => attach_stdout = true,
                "stderr" => attach_stderr = true,
                _ => {
                    return Err(flag_err(
                        a,
                        "-a, --attach",
                        "valid streams are STDIN, STDOUT and STDERR",
                    ))
                }
            }
        }
    }

    // Networks: the first one is the mode; endpoints as docker's parseNetworkOpts.
    let network_mode = o
        .network
        .first()
        .map(|n| parse_network_opt(n).map(|a| a.target))
        .transpose()?
        .unwrap_or_else(|| "default".into());
    let endpoints = network_endpoints(o)?;

    let entrypoint = o.entrypoint.as_ref().map(|e| {
        if e.is_empty() {
            vec![String::new()]
        } else {
            vec![e.clone()]
        }
    });
    let host_config = HostConfig {
        binds: (!binds.is_empty()).then_some(binds),
        mounts: (!mounts.is_empty()).then_some(mounts),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        volumes_from: (!o.volumes_from.is_empty()).then(|| o.volumes_from.clone()),
        memory,
        memory_swap,
        memory_reservation,
        shm_size,
        nano_cpus,
        cpu_shares,
        cpu_quota,
        cpu_period,
        cpuset_cpus: o.cpuset_cpus.clone(),
        pids_limit,
        ulimits: (!ulimits.is_empty()).then_some(ulimits),
        sysctls: (!sysctls.is_empty()).then_some(sysctls),
        readonly_rootfs: o.read_only.then_some(true),
        cap_add: (!o.cap_add.is_empty()).then(|| o.cap_add.clone()),
        cap_drop: (!o.cap_drop.is_empty()).then(|| o.cap_drop.clone()),
        privileged: o.privileged.then_some(true),
        init: o.init.then_some(true),
        restart_policy: restart,
        auto_remove: o.rm.then_some(true),
        network_mode: Some(network_mode),
        port_bindings: Some(port_bindings),
        publish_all_ports: Some(o.publish_all),
        dns: (!o.dns.is_empty()).then(|| o.dns.clone()),
        dns_search: (!o.dns_search.is_empty()).then(|| o.dns_search.clone()),
        dns_options: (!o.dns_option.is_empty()).then(|| o.dns_option.clone()),
        extra_hosts: (!extra_hosts.is_empty()).then_some(extra_hosts),
        links: (!o.link.is_empty()).then(|| o.link.clone()),
        group_add: (!o.group_add.is_empty()).then(|| o.group_add.clone()),
        security_opt: (!security_opt.is_empty()).then_some(security_opt),
        masked_paths: unconfined_paths.then(Vec::new),
        readonly_paths: unconfined_paths.then(Vec::new),
        log_config,
        pid_mode: o.pid.clone(),
        ipc_mode: o.ipc.clone(),
        uts_mode: o.uts.clone(),
        userns_mode: o.userns.clone(),
        cgroupns_mode: match o.cgroupns.as_deref() {
            None => None,
            Some("host") => Some(bollard_stubs::models::HostConfigCgroupnsModeEnum::HOST),
            Some("private") => Some(bollard_stubs::models::HostConfigCgroupnsModeEnum::PRIVATE),
            Some(other) => {
                return Err(flag_err(
                    other,
                    "--cgroupns",
                    "must be \"host\" or \"private\"",
                ))
            }
        },
        cgroup_parent: o.cgroup_parent.clone(),
        oom_kill_disable: o.oom_kill_disable.then_some(true),
        oom_score_adj,
        runtime: o.runtime.clone(),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        hostname: o.hostname.clone(),
        domainname: o.domainname.clone(),
        user: o.user.clone(),
        attach_stdin: Some(attach_stdin),
        attach_stdout: Some(attach_stdout),
        attach_stderr: Some(attach_stderr),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        tty: Some(o.tty),
        open_stdin: Some(o.interactive),
        stdin_once: Some(o.interactive),
        env: (!env.is_empty()).then_some(env),
        cmd: (!command.is_empty()).then(|| command.to_vec()),
        healthcheck,
        image: Some(image.to_string()),
        volumes: (!anon_volumes.is_empty()).then_some(anon_volumes),
        working_dir: o.workdir.clone(),
        entrypoint,
        labels: Some(kv_map(&labels)),
        stop_signal: o.stop_signal.clone(),
        stop_timeout,
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(endpoints),
        }),
        ..Default::default()
    })
}

/// Builds the `update` body; at least one flag must be given.
pub fn build_update(u: &UpdateArgs) -> Result<ContainerUpdateBody> {
    let body = ContainerUpdateBody {
        nano_cpus: cpus_flag(&u.cpus)?,
        cpu_shares: int_flag(&u.cpu_shares, "-c, --cpu-shares")?,
        cpu_quota: int_flag(&u.cpu_quota, "--cpu-quota")?,
        cpu_period: int_flag(&u.cpu_period, "--cpu-period")?,
        cpuset_cpus: u.cpuset_cpus.clone(),
        memory: size_flag(&u.memory, "-m, --memory")?,
        memory_swap: swap_flag(&u.memory_swap)?,
        memory_reservation: size_flag(&u.memory_reservation, "--memory-reservation")?,
        pids_limit: int_flag(&u.pids_limit, "--pids-limit")?,
        restart_policy: match &u.restart {
            Some(r) => Some(parse_restart(r).map_err(|e| flag_err(r, "--restart", e))?),
            None => None,
        },
        ..Default::default()
    };
    let nothing = body.nano_cpus.is_none()
        && body.cpu_shares.is_none()
        && body.cpu_quota.is_none()
        && body.cpu_period.is_none()
        && body.cpuset_cpus.is_none()
        && body.memory.is_none()
        && body.memory_swap.is_none()
        && body.memory_reservation.is_none()
        && body.pids_limit.is_none()
        && body.restart_policy.is_none();
    if nothing {
        return Err(CliError::usage(
            "you must provide one or more flags when using this command",
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Cmd};
    use clap::Parser;

    fn run_args(args: &[&str]) -> crate::cli::RunArgs {
        let mut v = vec!["shibafu", "run"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().cmd.unwrap() {
            Cmd::Run(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn body(args: &[&str]) -> Result<ContainerCreateBody> {
        let r = run_args(args);
        build_create(&r.opts, &r.image, &r.command, std::path::Path::new("/cwd"))
    }

    #[test]
    fn flags_after_image_belong_to_the_command() {
        let r = run_args(&[
            "--rm",
            "-it",
            "-e",
            "A=1",
            "busybox",
            "sh",
            "-c",
            "echo -n hi",
            "--rm",
        ]);
        assert!(r.opts.rm && r.opts.interactive && r.opts.tty);
        assert_eq!(r.image, "busybox");
        assert_eq!(r.command, vec!["sh", "-c", "echo -n hi", "--rm"]);
        let r = run_args(&["-d", "busybox", "-x"]);
        assert!(r.detach);
        assert_eq!(r.command, vec!["-x"]);
        let r = run_args(&["--sig-proxy=false", "-h", "box", "img"]);
        assert!(!r.sig_proxy);
        assert_eq!(r.opts.hostname.as_deref(), Some("box"));
    }

    #[test]
    fn memory_errors_like_docker() {
        let e = body(&["-m", "12q", "img"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid argument \"12q\" for \"-m, --memory\" flag: invalid size: '12q'"
        );
        let b = body(&["--memory", "512m", "--memory-swap", "-1", "img"]).unwrap();
        let hc = b.host_config.unwrap();
        assert_eq!((hc.memory, hc.memory_swap), (Some(512 << 20), Some(-1)));
    }

    #[test]
    fn cpus_and_resources() {
        let hc = body(&["--cpus", "1.5", "-c", "512", "--pids-limit", "100", "img"])
            .unwrap()
            .host_config
            .unwrap();
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        assert_eq!(hc.cpu_shares, Some(512));
        assert_eq!(hc.pids_limit, Some(100));
        assert!(body(&["--cpus", "-1", "img"])
            .unwrap_err()
            .to_string()
            .contains("--cpus"));
        assert!(body(&["--cpus", "x", "img"]).is_err());
        assert!(body(&["--cpu-shares", "lots", "img"])
            .unwrap_err()
            .to_string()
            .contains("-c, --cpu-shares"));
    }

    #[test]
    fn config_fields() {
        let b = body(&[
            "--name",
            "web",
            "-e",
            "A=1",
            "-w",
            "/w",
            "-u",
            "1000:1000",
            "--entrypoint",
            "/bin/sh",
            "-l",
            "k=v",
            "-v",
            "/s:/d:ro",
            "-v",
            "/anon",
            "--tmpfs",
            "/t:size=1m",
            "--restart",
            "on-failure:2",
            "--read-only",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "ALL",
            "--privileged",
            "--init",
            "--stop-signal",
            "SIGINT",
            "--stop-timeout",
            "5",
            "--network",
            "none",
            "--security-opt",
            "no-new-privileges",
            "--log-opt",
            "max-size=1m",
            "-p",
            "8080:80",
            "--expose",
            "90",
            "--rm",
            "-t",
            "img",
            "arg",
        ]);
        let e = body(&["--restart", "always", "--rm", "img"]).unwrap_err();
        assert!(e.to_string().contains("--restart and --rm"));
        // the big one fails for the same reason: on-failure conflicts with --rm
        assert!(b.is_err());
        let b = body(&[
            "--name",
            "web",
            "-e",
            "A=1",
            "-w",
            "/w",
            "-u",
            "1000:1000",
            "--entrypoint",
            "/bin/sh",
            "-l",
            "k=v",
            "-v",
            "/s:/d:ro",
            "-v",
            "/anon",
            "--tmpfs",
            "/t:size=1m",
            "--restart",
            "on-failure:2",
            "--read-only",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "ALL",
            "--privileged",
            "--init",
            "--stop-signal",
            "SIGINT",
            "--stop-timeout",
            "5",
            "--network",
            "none",
            "--security-opt",
            "no-new-privileges",
            "--log-opt",
            "max-size=1m",
            "-p",
            "8080:80",
            "--expose",
            "90",
            "-t",
            "img",
            "arg",
        ])
        .unwrap();
        assert_eq!(b.env, Some(vec!["A=1".into()]));
        assert_eq!(b.working_dir.as_deref(), Some("/w"));
        assert_eq!(b.entrypoint, Some(vec!["/bin/sh".into()]));
        assert_eq!(b.cmd, Some(vec!["arg".into()]));
        assert_eq!(b.volumes, Some(vec!["/anon".into()]));
        assert_eq!(b.stop_timeout, Some(5));
        assert_eq!(b.tty, Some(true));
        let mut exposed = b.exposed_ports.clone().unwrap();
        exposed.sort();
        assert_eq!(exposed, vec!["80/tcp", "90/tcp"]);
        let hc = b.host_config.unwrap();
        assert_eq!(hc.binds, Some(vec!["/s:/d:ro".into()]));
        assert_eq!(hc.tmpfs.unwrap()["/t"], "size=1m");
        assert_eq!(hc.restart_policy.unwrap().maximum_retry_count, Some(2));
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".into()]));
        assert_eq!(hc.log_config.unwrap().config.unwrap()["max-size"], "1m");
        assert_eq!(
            hc.port_bindings.unwrap()["80/tcp"].as_ref().unwrap()[0]
                .host_port
                .as_deref(),
            Some("8080")
        );
        let v = serde_json::to_value(body(&["--expose", "90", "img"]).unwrap()).unwrap();
        assert_eq!(v["ExposedPorts"], serde_json::json!({"90/tcp": {}}));
        assert_eq!(v["HostConfig"]["NetworkMode"], "default");
    }

    fn endpoints(args: &[&str]) -> Result<serde_json::Value> {
        let b = body(args)?;
        Ok(serde_json::to_value(b.networking_config.unwrap().endpoints_config.unwrap()).unwrap())
    }

    #[test]
    fn networks_like_docker() {
        use serde_json::json;
        // no --network: an empty endpoint for "default"
        assert_eq!(endpoints(&["img"]).unwrap(), json!({"default": {}}));
        let b = body(&["img"]).unwrap();
        assert_eq!(
            b.host_config.as_ref().unwrap().network_mode.as_deref(),
            Some("default")
        );
        // a lone network without options is left to the daemon
        assert_eq!(endpoints(&["--network", "n1", "img"]).unwrap(), json!({}));
        assert_eq!(endpoints(&["--network", "host", "img"]).unwrap(), json!({}));
        // several networks: all of them; the flat flags go to the first
        let e = endpoints(&[
            "--network",
            "n1",
            "--network",
            "n2",
            "--ip",
            "10.0.0.5",
            "--ip6",
            "fd00::5",
            "--network-alias",
            "a",
            "--network-alias",
            "b",
            "--mac-address",
            "02:42:ac:11:00:02",
            "img",
        ])
        .unwrap();
        assert_eq!(
            e,
            json!({"n1": {"Aliases": ["a", "b"], "IPAMConfig": {"IPv4Address": "10.0.0.5", "IPv6Address": "fd00::5"}, "MacAddress": "02:42:ac:11:00:02"},
                   "n2": {}})
        );
        let b = body(&["--network", "n1", "--network", "n2", "img"]).unwrap();
        assert_eq!(b.host_config.unwrap().network_mode.as_deref(), Some("n1"));
        // --ip without --network goes to "default": the daemon judges it
        assert_eq!(
            endpoints(&["--ip", "10.0.0.5", "img"]).unwrap(),
            json!({"default": {"IPAMConfig": {"IPv4Address": "10.0.0.5"}}})
        );
        // addresses are not validated client-side (docker sends them as typed)
        assert_eq!(
            endpoints(&["--network", "n1", "--ip", "bogus", "img"]).unwrap(),
            json!({"n1": {"IPAMConfig": {"IPv4Address": "bogus"}}})
        );
        // links on a user-defined network become endpoint links too
        assert_eq!(
            endpoints(&["--network", "n1", "--link", "a:b", "img"]).unwrap(),
            json!({"n1": {"Links": ["a:b"]}})
        );
        // long syntax
        let e = endpoints(&[
            "--network",
            "name=n1,alias=x,ip=10.0.0.9,driver-opt=a=b,gw-priority=3",
            "img",
        ])
        .unwrap();
        assert_eq!(
            e,
            json!({"n1": {"Aliases": ["x"], "IPAMConfig": {"IPv4Address": "10.0.0.9"}, "DriverOpts": {"a": "b"}, "GwPriority": 3}})
        );
        let b = body(&["--network", "name=n1,alias=x", "img"]).unwrap();
        assert_eq!(b.host_config.unwrap().network_mode.as_deref(), Some("n1"));
    }

    #[test]
    fn network_errors_like_docker() {
        let e = |args: &[&str]| body(args).unwrap_err().to_string();
        assert_eq!(
            e(&["--network-alias", "a", "img"]),
            "network-scoped aliases are only supported for user-defined networks"
        );
        assert_eq!(
            e(&["--network", "bridge", "--network-alias", "a", "img"]),
            "network-scoped aliases are only supported for user-defined networks"
        );
        assert_eq!(
            e(&["--network", "host", "--network", "n1", "img"]),
            "conflicting options: cannot attach both user-defined and non-user-defined network-modes"
        );
        assert_eq!(
            e(&["--network", "container:x", "--network", "n1", "img"]),
            "conflicting options: cannot attach both user-defined and non-user-defined network-modes"
        );
        assert_eq!(
            e(&["--network", "n1", "--network", "n1", "img"]),
            "network \"n1\" is specified multiple times"
        );
        assert_eq!(
            e(&["--mac-address", "zz", "img"]),
            "zz is not a valid mac address"
        );
        assert_eq!(
            e(&["--network", "name=n1,foo=bar", "img"]),
            "invalid argument \"name=n1,foo=bar\" for \"--network\" flag: invalid field key foo"
        );
        assert_eq!(
            e(&["--network", "alias=x", "img"]),
            "invalid argument \"alias=x\" for \"--network\" flag: network name/id is not specified"
        );
        assert_eq!(
            e(&[
                "--network",
                "name=n1,alias=y",
                "--network-alias",
                "x",
                "img"
            ]),
            "conflicting options: cannot specify both --network-alias and per-network alias"
        );
        assert_eq!(
            e(&["--expose", "1:2", "img"]),
            "invalid port format for --expose: 1:2"
        );
        assert!(matches!(
            body(&["--network", "n1", "--network", "n1", "img"]),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn publish_into_body_like_docker() {
        use serde_json::json;
        let v = serde_json::to_value(
            body(&[
                "-p",
                "8080:80",
                "-p",
                "8081:80",
                "-p",
                "[::1]:53:53/udp",
                "-P",
                "--expose",
                "90",
                "img",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            v["HostConfig"]["PortBindings"],
            json!({"80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "", "HostPort": "8081"}],
                   "53/udp": [{"HostIp": "::1", "HostPort": "53"}]})
        );
        assert_eq!(v["HostConfig"]["PublishAllPorts"], json!(true));
        assert_eq!(
            v["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}, "90/tcp": {}})
        );
        // docker always sends PortBindings, empty when nothing is published
        let v = serde_json::to_value(body(&["img"]).unwrap()).unwrap();
        assert_eq!(v["HostConfig"]["PortBindings"], json!({}));
        assert_eq!(
            body(&["-p", "8080:", "img"]).unwrap_err().to_string(),
            "no port specified: 8080:<empty>"
        );
    }

    #[test]
    fn healthcheck_flags() {
        let h = body(&[
            "--health-cmd",
            "true",
            "--health-interval",
            "5s",
            "--health-retries",
            "3",
            "img",
        ])
        .unwrap()
        .healthcheck
        .unwrap();
        assert_eq!(h.test, Some(vec!["CMD-SHELL".into(), "true".into()]));
        assert_eq!(h.interval, Some(5_000_000_000));
        assert_eq!(h.retries, Some(3));
        let h = body(&["--no-healthcheck", "img"])
            .unwrap()
            .healthcheck
            .unwrap();
        assert_eq!(h.test, Some(vec!["NONE".into()]));
        assert!(body(&["--no-healthcheck", "--health-cmd", "x", "img"]).is_err());
        assert!(body(&["--health-interval", "-1s", "img"])
            .unwrap_err()
            .to_string()
            .contains("negative"));
        assert!(body(&["--health-interval", "5", "img"]).is_err());
    }

    #[test]
    fn env_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "# c\nFROM_FILE=1\nA=file\n").unwrap();
        let b = body(&["--env-file", f.to_str().unwrap(), "-e", "A=flag", "img"]).unwrap();
        assert_eq!(
            b.env,
            Some(vec!["FROM_FILE=1".into(), "A=file".into(), "A=flag".into()])
        );
        let e = body(&["--env-file", "/nonexistent/x", "img"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "open /nonexistent/x: no such file or directory"
        );
    }

    #[test]
    fn update_needs_a_flag() {
        let u = match Cli::try_parse_from([
            "shibafu",
            "update",
            "--memory",
            "1g",
            "--restart",
            "always",
            "c",
        ])
        .unwrap()
        .cmd
        .unwrap()
        {
            Cmd::Update(u) => u,
            _ => unreachable!(),
        };
        let b = build_update(&u).unwrap();
        assert_eq!(b.memory, Some(1 << 30));
        let u = match Cli::try_parse_from(["shibafu", "update", "c"])
            .unwrap()
            .cmd
            .unwrap()
        {
            Cmd::Update(u) => u,
            _ => unreachable!(),
        };
        assert!(build_update(&u).is_err());
    }
}
