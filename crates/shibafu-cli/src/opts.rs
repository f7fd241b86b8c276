//! Parsers for docker's flag value syntaxes: sizes, CPUs, env files, volume and mount
//! specs, tmpfs, restart policies, port publishing, ulimits. Each returns a plain
//! message; callers wrap it as docker does (`invalid argument "X" for "-m, --memory"
//! flag: ...`).

use std::collections::HashMap;

use bollard_stubs::models::{
    Mount, MountBindOptions, MountTmpfsOptions, MountType, MountVolumeOptions, PortBinding,
    ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};

/// docker's `RAMInBytes`: "512m", "1g", "1024k", "100b", "1.5G", plain bytes. Units are
/// binary (k = 1024).
pub fn parse_size(s: &str) -> Result<i64, String> {
    let err = || format!("invalid size: '{s}'");
    let t = s.trim();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, rest) = t.split_at(num_end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(err());
    }
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let lower = rest.to_ascii_lowercase();
    let mut chars = lower.chars().peekable();
    let mult: f64 = match chars.peek() {
        Some('k') => 1024f64,
        Some('m') => 1024f64.powi(2),
        Some('g') => 1024f64.powi(3),
        Some('t') => 1024f64.powi(4),
        Some('p') => 1024f64.powi(5),
        _ => 1.0,
    };
    if mult > 1.0 {
        chars.next();
        if chars.peek() == Some(&'i') {
            chars.next();
        }
    }
    if chars.peek() == Some(&'b') {
        chars.next();
    }
    if chars.next().is_some() {
        return Err(err());
    }
    let n: f64 = num.parse().map_err(|_| err())?;
    let v = n * mult;
    if v > i64::MAX as f64 {
        return Err(err());
    }
    Ok(v as i64)
}

/// `--cpus`: a decimal number of CPUs to NanoCpus (exact to 1e-9, like docker's
/// big.Rat check).
pub fn parse_cpus(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "{t} is not a valid number of CPUs: must not be negative"
        ));
    }
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(format!("failed to parse {t} as a rational number"));
    }
    let frac_trim = frac.trim_end_matches('0');
    if frac_trim.len() > 9 {
        return Err("value is too precise".into());
    }
    let int_v: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| "value is too large".to_string())?
    };
    let frac_v: i64 = if frac_trim.is_empty() {
        0
    } else {
        format!("{frac_trim:0<9}").parse().unwrap_or(0)
    };
    int_v
        .checked_mul(1_000_000_000)
        .and_then(|v| v.checked_add(frac_v))
        .ok_or_else(|| "value is too large".to_string())
}

/// Looks a variable up in the client environment.
pub type Lookup = dyn Fn(&str) -> Option<String>;

/// Parses an env or label file (docker's `parseKeyValueFile`): `#` comments and blank
/// lines skipped, `KEY=VALUE` taken verbatim, a bare `KEY` looked up with `lookup`
/// (and dropped when absent).
pub fn parse_kv_file(
    content: &str,
    name: &str,
    lookup: Option<&Lookup>,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (n, raw) in content.lines().enumerate() {
        let line = if n == 0 {
            raw.trim_start_matches('\u{feff}')
        } else {
            raw
        };
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (var, value) = match trimmed.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (trimmed, None),
        };
        if var.is_empty() {
            return Err(format!("no variable name on line '{line}' in {name}"));
        }
        if var.contains(char::is_whitespace) {
            return Err(format!(
                "variable '{}' contains whitespaces",
                var.trim_end()
            ));
        }
        match value {
            Some(v) => out.push(format!("{var}={v}")),
            None => {
                if let Some(f) = lookup {
                    if let Some(v) = f(var) {
                        out.push(format!("{var}={v}"));
                    }
                } else {
                    out.push(var.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// `-e KEY`: take the value from the client's environment if it has one.
pub fn expand_env(e: &str) -> String {
    if e.contains('=') {
        return e.to_string();
    }
    match std::env::var(e) {
        Ok(v) => format!("{e}={v}"),
        Err(_) => e.to_string(),
    }
}

/// `KEY=VALUE` list to a map; a bare `KEY` maps to "".
pub fn kv_map(items: &[String]) -> HashMap<String, String> {
    items
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// Where a `-v` spec goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSpec {
    /// `SRC:DST[:OPTS]` (bind or named volume): goes to `HostConfig.Binds`.
    Bind(String),
    /// `DST` alone: an anonymous volume, goes to `Config.Volumes`.
    Anonymous(String),
}

fn valid_volume_name(n: &str) -> bool {
    let mut cs = n.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphanumeric())
        && n.len() >= 2
        && cs.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

const VOLUME_MODES: &[&str] = &[
    "ro",
    "rw",
    "z",
    "Z",
    "nocopy",
    "consistent",
    "cached",
    "delegated",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
];

/// Parses `-v`: `/src:/dst[:ro]`, `name:/dst[:ro]`, `/dst`. Relative bind sources
/// (`./x`) are made absolute against `cwd`, like docker ≥ 23.
pub fn parse_volume(spec: &str, cwd: &std::path::Path) -> Result<VolumeSpec, String> {
    let bad = |why: &str| format!("invalid volume specification: '{spec}': {why}");
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [d] => {
            if d.is_empty() {
                return Err(bad("empty destination"));
            }
            if !d.starts_with('/') {
                return Err(bad("destination must be an absolute path"));
            }
            return Ok(VolumeSpec::Anonymous(d.to_string()));
        }
        [s, d] => (*s, *d, None),
        [s, d, m] => (*s, *d, Some(*m)),
        _ => return Err(bad("too many colons")),
    };
    if src.is_empty() {
        return Err(bad("empty source"));
    }
    if !dst.starts_with('/') {
        return Err(bad(&format!(
            "invalid mount config: destination {dst:?} must be an absolute path"
        )));
    }
    if dst == "/" {
        return Err(bad("invalid mount config: destination can't be '/'"));
    }
    if let Some(m) = mode {
        for o in m.split(',') {
            if !VOLUME_MODES.contains(&o) {
                return Err(bad(&format!("invalid mode: {m}")));
            }
        }
    }
    let src = if src.starts_with('/') {
        src.to_string()
    } else if src.starts_with('.') || src.starts_with('~') {
        let p = if let Some(rest) = src.strip_prefix('~') {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/".into());
            std::path::PathBuf::from(home).join(rest.trim_start_matches('/'))
        } else {
            cwd.join(src)
        };
        normalize(&p)
    } else if valid_volume_name(src) {
        src.to_string()
    } else {
        return Err(format!(
            "{src:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        ));
    };
    Ok(VolumeSpec::Bind(match mode {
        Some(m) => format!("{src}:{dst}:{m}"),
        None => format!("{src}:{dst}"),
    }))
}

/// Lexically cleans a path (`a/./b/../c` -> `a/c`).
fn normalize(p: &std::path::Path) -> String {
    use std::path::Component;
    let mut out: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    format!("/{}", out.join("/"))
}

/// `--tmpfs /path[:opts]`.
pub fn parse_tmpfs(spec: &str) -> Result<(String, String), String> {
    let (path, opts) = spec.split_once(':').unwrap_or((spec, ""));
    if !path.starts_with('/') {
        return Err(format!(
            "invalid tmpfs spec {spec:?}: path must be absolute"
        ));
    }
    Ok((path.to_string(), opts.to_string()))
}

/// `--mount type=bind,source=/a,target=/b,readonly` (bind, volume, tmpfs).
pub fn parse_mount(spec: &str) -> Result<Mount, String> {
    let mut m = Mount {
        typ: Some(MountType::VOLUME),
        ..Default::default()
    };
    let mut typ_set = false;
    let mut tmpfs = MountTmpfsOptions::default();
    let mut bind = MountBindOptions::default();
    let mut vol = MountVolumeOptions::default();
    let mut vol_opts: HashMap<String, String> = HashMap::new();
    let mut vol_labels: HashMap<String, String> = HashMap::new();
    for field in spec.split(',') {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let boolv = |v: Option<&str>| -> Result<bool, String> {
            match v.map(|s| s.to_ascii_lowercase()) {
                None => Ok(true),
                Some(s) if s == "1" || s == "true" => Ok(true),
                Some(s) if s == "0" || s == "false" => Ok(false),
                Some(s) => Err(format!("invalid value for {k}: {s}")),
            }
        };
        let need = |v: Option<&str>| {
            v.map(str::to_string)
                .ok_or_else(|| format!("invalid field '{field}' must be a key=value pair"))
        };
        match k.as_str() {
            "type" => {
                typ_set = true;
                m.typ = Some(match need(v)?.as_str() {
                    "bind" => MountType::BIND,
                    "volume" => MountType::VOLUME,
                    "tmpfs" => MountType::TMPFS,
                    other => {
                        return Err(format!(
                        "invalid mount type {other:?}: only bind, volume and tmpfs are supported"
                    ))
                    }
                });
            }
            "source" | "src" => m.source = Some(need(v)?),
            "target" | "destination" | "dst" => m.target = Some(need(v)?),
            "readonly" | "ro" => m.read_only = Some(boolv(v)?),
            "bind-propagation" => {
                bind.propagation = Some(
                    serde_json::from_value(serde_json::Value::String(need(v)?))
                        .map_err(|_| format!("invalid bind-propagation in {spec:?}"))?,
                )
            }
            "volume-nocopy" => vol.no_copy = Some(boolv(v)?),
            "volume-opt" => {
                let s = need(v)?;
                let (a, b) = s.split_once('=').unwrap_or((&s, ""));
                vol_opts.insert(a.to_string(), b.to_string());
            }
            "volume-label" => {
                let s = need(v)?;
                let (a, b) = s.split_once('=').unwrap_or((&s, ""));
                vol_labels.insert(a.to_string(), b.to_string());
            }
            "tmpfs-size" => tmpfs.size_bytes = Some(parse_size(&need(v)?)?),
            "tmpfs-mode" => {
                let s = need(v)?;
                tmpfs.mode = Some(
                    i64::from_str_radix(&s, 8).map_err(|_| format!("invalid tmpfs-mode {s:?}"))?,
                );
            }
            "consistency" => m.consistency = Some(need(v)?),
            _ => return Err(format!("unexpected key '{k}' in '{field}'")),
        }
    }
    if !typ_set && m.source.as_deref().is_some_and(|s| s.starts_with('/')) {
        m.typ = Some(MountType::BIND);
    }
    if m.target.is_none() {
        return Err("target is required".into());
    }
    match m.typ {
        Some(MountType::BIND) => {
            if m.source.is_none() {
                return Err("source is required when specifying bind mounts".into());
            }
            if bind.propagation.is_some() {
                m.bind_options = Some(bind);
            }
        }
        Some(MountType::TMPFS) => {
            if m.source.is_some() {
                return Err("source is not supported for tmpfs mounts".into());
            }
            if tmpfs.size_bytes.is_some() || tmpfs.mode.is_some() {
                m.tmpfs_options = Some(tmpfs);
            }
        }
        _ => {
            if !vol_opts.is_empty() || !vol_labels.is_empty() || vol.no_copy.is_some() {
                if !vol_labels.is_empty() {
                    vol.labels = Some(vol_labels);
                }
                if !vol_opts.is_empty() {
                    vol.driver_config =
                        Some(bollard_stubs::models::MountVolumeOptionsDriverConfig {
                            name: Some("local".into()),
                            options: Some(vol_opts),
                        });
                }
                m.volume_options = Some(vol);
            }
        }
    }
    Ok(m)
}

/// `--restart no|always|unless-stopped|on-failure[:N]`.
pub fn parse_restart(s: &str) -> Result<RestartPolicy, String> {
    let (name, count) = match s.split_once(':') {
        Some((n, c)) => (n, Some(c)),
        None => (s, None),
    };
    let name_enum = match name {
        "" | "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => {
            return Err(format!(
                "invalid restart policy format: no such policy: {name}"
            ))
        }
    };
    let count = match count {
        None => None,
        Some(c) => {
            if name_enum != RestartPolicyNameEnum::ON_FAILURE {
                return Err(format!("invalid restart policy format: maximum retry count can only be used with 'on-failure' (got {s:?})"));
            }
            let n: i64 = c.parse().map_err(|_| {
                format!(
                    "invalid restart policy format: maximum retry count must be an integer: {c:?}"
                )
            })?;
            if n < 0 {
                return Err(
                    "invalid restart policy format: maximum retry count cannot be negative".into(),
                );
            }
            Some(n)
        }
    };
    Ok(RestartPolicy {
        name: Some(name_enum),
        maximum_retry_count: count,
    })
}

/// Go's `strconv.ParseUint(s, 10, 16)`: digits only, no sign.
fn parse_u16(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// docker's `nat.ParsePortRange`: `80` or `8000-8010`.
fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    if s.is_empty() {
        return Err("empty string specified for ports".into());
    }
    let (a, b) = match s.split_once('-') {
        // Go splits on every '-' and reads the first two parts
        Some((a, rest)) => (a, rest.split('-').next().unwrap_or("")),
        None => (s, s),
    };
    let a = parse_u16(a).ok_or_else(|| format!("invalid port: {s:?}"))?;
    let b = parse_u16(b).ok_or_else(|| format!("invalid port: {s:?}"))?;
    if b < a {
        return Err(format!("invalid range specified for port: {s}"));
    }
    Ok((a, b))
}

fn parse_proto(p: &str) -> Result<&'static str, String> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok("tcp"),
        "udp" => Ok("udp"),
        "sctp" => Ok("sctp"),
        _ => Err(format!("invalid proto: {p}")),
    }
}

/// docker's `nat.SplitProtoPort`: `80/udp` -> ("udp", "80"); no or empty proto is
/// tcp; an empty port gives ("", "").
fn split_proto_port(raw: &str) -> (String, String) {
    let parts: Vec<&str> = raw.split('/').collect();
    if raw.is_empty() || parts[0].is_empty() {
        return (String::new(), String::new());
    }
    match parts.get(1) {
        None => ("tcp".into(), raw.to_string()),
        Some(&"") => ("tcp".into(), parts[0].to_string()),
        Some(p) => (p.to_string(), parts[0].to_string()),
    }
}

/// `--expose 80`, `80/udp`, `8000-8010`: the `ExposedPorts` keys.
pub fn parse_expose(s: &str) -> Result<Vec<String>, String> {
    let (proto, port) = split_proto_port(s);
    let proto = parse_proto(&proto)?;
    let (a, b) = parse_port_range(&port)?;
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

/// docker's `convertToStandardNotation`: the long `-p` syntax
/// (`published=8080,target=80,protocol=udp`) to `8080:80/udp`.
fn publish_standard_notation(spec: &str) -> Result<String, String> {
    if !spec.contains('=') {
        return Ok(spec.to_string());
    }
    let mut params: HashMap<&str, &str> = HashMap::from([("protocol", "tcp")]);
    for param in spec.split(',') {
        match param.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                params.insert(k, v);
            }
            _ => {
                return Err(format!(
                    "invalid publish opts format (should be name=value but got '{param}')"
                ))
            }
        }
    }
    let get = |k: &str| params.get(k).copied().unwrap_or("");
    Ok(format!(
        "{}:{}/{}",
        get("published"),
        get("target"),
        get("protocol")
    ))
}

/// `-p [[ip:][hostPort]:]containerPort[/proto]` with ranges, bracketed or bare IPv6
/// addresses and docker's long syntax, exactly as docker's `nat.ParsePortSpec`:
/// returns (exposed port key, binding) pairs.
pub fn parse_publish(spec: &str) -> Result<Vec<(String, PortBinding)>, String> {
    let raw = publish_standard_notation(spec)?;
    // splitParts: the last part is the container port, the one before the host
    // port, everything before that the IP (which may itself contain colons)
    let parts: Vec<&str> = raw.split(':').collect();
    let n = parts.len();
    let (mut ip, host, container) = match n {
        1 => (String::new(), "", parts[0]),
        2 => (String::new(), parts[0], parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let (proto, container) = split_proto_port(container);
    if let Some(inner) = ip.strip_prefix('[') {
        ip = inner
            .strip_suffix(']')
            .filter(|i| !i.contains(['[', ']']))
            .ok_or_else(|| {
                format!("invalid IP address {ip}: address {ip}: missing ']' in address")
            })?
            .to_string();
    }
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid IP address: {ip}"));
    }
    if container.is_empty() {
        return Err(format!("no port specified: {raw}<empty>"));
    }
    let (cs, ce) =
        parse_port_range(&container).map_err(|_| format!("invalid containerPort: {container}"))?;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(parse_port_range(host).map_err(|_| format!("invalid hostPort: {host}"))?)
    };
    if let Some((hs, he)) = host_range {
        if ce - cs != he - hs && ce != cs {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {container} and {host}"
            ));
        }
    }
    let proto = parse_proto(&proto)?;
    let mut out = Vec::new();
    for (i, cp) in (cs..=ce).enumerate() {
        let host_port = match host_range {
            None => String::new(),
            // a single container port with a host range: the daemon picks one
            Some((hs, he)) if ce == cs && he != hs => format!("{hs}-{he}"),
            Some((hs, _)) => (hs + i as u16).to_string(),
        };
        out.push((
            format!("{cp}/{proto}"),
            PortBinding {
                host_ip: Some(ip.clone()),
                host_port: Some(host_port),
            },
        ));
    }
    Ok(out)
}

/// `--ulimit nofile=1024[:2048]`.
pub fn parse_ulimit(s: &str) -> Result<ResourcesUlimits, String> {
    let (name, vals) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid ulimit argument: {s}"))?;
    let (soft, hard) = vals.split_once(':').unwrap_or((vals, vals));
    let soft: i64 = soft
        .parse()
        .map_err(|_| format!("invalid ulimit soft value: {soft}"))?;
    let hard: i64 = hard
        .parse()
        .map_err(|_| format!("invalid ulimit hard value: {hard}"))?;
    if soft > hard {
        return Err(format!(
            "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        ));
    }
    Ok(ResourcesUlimits {
        name: Some(name.to_string()),
        soft: Some(soft),
        hard: Some(hard),
    })
}

/// Splits `NAME[:TAG]` / `NAME@DIGEST` into (name, tag-or-digest), defaulting the tag.
pub fn split_image_ref(r: &str) -> (String, String) {
    if let Some((n, d)) = r.split_once('@') {
        return (n.to_string(), d.to_string());
    }
    let last_slash = r.rfind('/').map(|i| i + 1).unwrap_or(0);
    match r[last_slash..].rfind(':') {
        Some(i) => (
            r[..last_slash + i].to_string(),
            r[last_slash + i + 1..].to_string(),
        ),
        None => (r.to_string(), "latest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1024k").unwrap(), 1 << 20);
        assert_eq!(parse_size("100b").unwrap(), 100);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("2 MB").unwrap(), 2 << 20);
        assert_eq!(parse_size("12q").unwrap_err(), "invalid size: '12q'");
        assert!(parse_size("").is_err());
        assert!(parse_size("m").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.2.3m").is_err());
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_cpus("0.01").unwrap(), 10_000_000);
        assert_eq!(parse_cpus("2").unwrap(), 2_000_000_000);
        assert_eq!(parse_cpus(".5").unwrap(), 500_000_000);
        assert!(parse_cpus("-1").unwrap_err().contains("negative"));
        assert!(parse_cpus("abc").unwrap_err().contains("rational"));
        assert_eq!(
            parse_cpus("0.0000000001").unwrap_err(),
            "value is too precise"
        );
    }

    #[test]
    fn env_file() {
        let content = "\u{feff}# comment\n\nA=1\n  B=two words \nC\nD\nE==x\n";
        let lookup = |k: &str| {
            if k == "C" {
                Some("from-env".to_string())
            } else {
                None
            }
        };
        let got = parse_kv_file(content, "f", Some(&lookup)).unwrap();
        assert_eq!(got, vec!["A=1", "B=two words ", "C=from-env", "E==x"]);
        assert!(parse_kv_file("BAD KEY=1\n", "f", None)
            .unwrap_err()
            .contains("whitespaces"));
        assert!(parse_kv_file("=x\n", "f", None)
            .unwrap_err()
            .contains("no variable name"));
        assert_eq!(parse_kv_file("lbl\n", "f", None).unwrap(), vec!["lbl"]);
    }

    #[test]
    fn volumes() {
        let cwd = std::path::Path::new("/home/u/proj");
        assert_eq!(
            parse_volume("/src:/dst", cwd).unwrap(),
            VolumeSpec::Bind("/src:/dst".into())
        );
        assert_eq!(
            parse_volume("/src:/dst:ro", cwd).unwrap(),
            VolumeSpec::Bind("/src:/dst:ro".into())
        );
        assert_eq!(
            parse_volume("data:/var/lib:rw", cwd).unwrap(),
            VolumeSpec::Bind("data:/var/lib:rw".into())
        );
        assert_eq!(
            parse_volume("/anon", cwd).unwrap(),
            VolumeSpec::Anonymous("/anon".into())
        );
        assert_eq!(
            parse_volume("./sub/../x:/d", cwd).unwrap(),
            VolumeSpec::Bind("/home/u/proj/x:/d".into())
        );
        assert!(parse_volume("rel", cwd).is_err());
        assert!(parse_volume("/a:rel", cwd).is_err());
        assert!(parse_volume("/a:/b:bogus", cwd)
            .unwrap_err()
            .contains("invalid mode"));
        assert!(parse_volume("bad$name:/b", cwd)
            .unwrap_err()
            .contains("invalid characters"));
        assert!(parse_volume("a:b:c:d", cwd).is_err());
    }

    #[test]
    fn mounts_and_tmpfs() {
        let m = parse_mount("type=bind,source=/a,target=/b,readonly").unwrap();
        assert_eq!(m.typ, Some(MountType::BIND));
        assert_eq!(m.source.as_deref(), Some("/a"));
        assert_eq!(m.read_only, Some(true));
        let m = parse_mount("type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1777").unwrap();
        assert_eq!(m.tmpfs_options.unwrap().size_bytes, Some(64 << 20));
        assert!(parse_mount("type=bind,target=/b").is_err());
        assert!(parse_mount("source=x").is_err());
        assert!(parse_mount("type=weird,target=/x").is_err());
        assert_eq!(
            parse_tmpfs("/run:size=64m").unwrap(),
            ("/run".into(), "size=64m".into())
        );
        assert_eq!(parse_tmpfs("/run").unwrap(), ("/run".into(), "".into()));
        assert!(parse_tmpfs("run").is_err());
    }

    #[test]
    fn restart_policies() {
        assert_eq!(
            parse_restart("always").unwrap().name,
            Some(RestartPolicyNameEnum::ALWAYS)
        );
        let p = parse_restart("on-failure:3").unwrap();
        assert_eq!(
            (p.name, p.maximum_retry_count),
            (Some(RestartPolicyNameEnum::ON_FAILURE), Some(3))
        );
        assert_eq!(
            parse_restart("no").unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        assert!(parse_restart("sometimes").is_err());
        assert!(parse_restart("always:3").is_err());
        assert!(parse_restart("on-failure:x").is_err());
    }

    #[test]
    fn publish_specs() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(p[0].0, "80/tcp");
        assert_eq!(p[0].1.host_port.as_deref(), Some("8080"));
        assert_eq!(p[0].1.host_ip.as_deref(), Some(""));
        let p = parse_publish("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(
            (p[0].0.as_str(), p[0].1.host_ip.as_deref()),
            ("80/udp", Some("127.0.0.1"))
        );
        let p = parse_publish("80").unwrap();
        assert_eq!(p[0].1.host_port.as_deref(), Some(""));
        let p = parse_publish("8000-8002:9000-9002").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[2].0.as_str(), p[2].1.host_port.as_deref()),
            ("9002/tcp", Some("8002"))
        );
        let p = parse_publish("8000-8010:80").unwrap();
        assert_eq!(p[0].1.host_port.as_deref(), Some("8000-8010"));
        let p = parse_publish("[::1]:80:80").unwrap();
        assert_eq!(p[0].1.host_ip.as_deref(), Some("::1"));
        let p = parse_publish("127.0.0.1::80").unwrap();
        assert_eq!(p[0].1.host_port.as_deref(), Some(""));
        assert!(parse_publish("8000-8001:80-82").is_err());
        assert!(parse_publish("x:80").is_err());
        assert!(parse_publish("80/icmp").is_err());
        let one = |s: &str| {
            let p = parse_publish(s).unwrap();
            assert_eq!(p.len(), 1, "{s}");
            let b = &p[0].1;
            (
                p[0].0.clone(),
                b.host_ip.clone().unwrap(),
                b.host_port.clone().unwrap(),
            )
        };
        let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        // what docker CLI 28 sends for each form (recorded against a fake daemon)
        assert_eq!(one("80"), t("80/tcp", "", ""));
        assert_eq!(one(":80"), t("80/tcp", "", ""));
        assert_eq!(one("127.0.0.1:8080:80"), t("80/tcp", "127.0.0.1", "8080"));
        assert_eq!(one("[::1]:8080:80"), t("80/tcp", "::1", "8080"));
        assert_eq!(one("::1:8080:80"), t("80/tcp", "::1", "8080"));
        assert_eq!(one("[::]:80:80"), t("80/tcp", "::", "80"));
        assert_eq!(one("80/sctp"), t("80/sctp", "", ""));
        assert_eq!(one("80/TCP"), t("80/tcp", "", ""));
        assert_eq!(one("80/"), t("80/tcp", "", ""));
        assert_eq!(one("53:53/udp"), t("53/udp", "", "53"));
        assert_eq!(one("8000-8002:80"), t("80/tcp", "", "8000-8002"));
        assert_eq!(
            one("published=8080,target=80,protocol=udp"),
            t("80/udp", "", "8080")
        );
        let err = |s: &str| parse_publish(s).unwrap_err();
        assert_eq!(
            err("8000-8001:80-82"),
            "invalid ranges specified for container and host Ports: 80-82 and 8000-8001"
        );
        assert_eq!(err("80/icmp"), "invalid proto: icmp");
        assert_eq!(err("x:80"), "invalid hostPort: x");
        assert_eq!(err("70000:80"), "invalid hostPort: 70000");
        assert_eq!(err("+80:80"), "invalid hostPort: +80");
        assert_eq!(err("8080:"), "no port specified: 8080:<empty>");
        assert_eq!(err("1.2.3:80:80"), "invalid IP address: 1.2.3");
        assert_eq!(
            err("published=1,bogus"),
            "invalid publish opts format (should be name=value but got 'bogus')"
        );
        assert_eq!(
            parse_expose("7000-7001/udp").unwrap(),
            vec!["7000/udp", "7001/udp"]
        );
    }

    #[test]
    fn misc() {
        assert_eq!(parse_ulimit("nofile=1024:2048").unwrap().hard, Some(2048));
        assert!(parse_ulimit("nofile=10:5").is_err());
        assert_eq!(
            split_image_ref("busybox"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_image_ref("localhost:5000/a/b:1.0"),
            ("localhost:5000/a/b".into(), "1.0".into())
        );
        assert_eq!(
            split_image_ref("localhost:5000/a"),
            ("localhost:5000/a".into(), "latest".into())
        );
        assert_eq!(
            split_image_ref("a@sha256:00"),
            ("a".into(), "sha256:00".into())
        );
        let m = kv_map(&["a=1".into(), "b".into()]);
        assert_eq!((m["a"].as_str(), m["b"].as_str()), ("1", ""));
    }
}
