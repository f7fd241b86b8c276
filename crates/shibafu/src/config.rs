//! The daemon's configuration: built-in defaults, then the YAML config file,
//! then `SHIBAFU_*` environment variables, then command-line flags (each
//! layer overrides the previous one, as with dockerd's daemon.json + flags).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("invalid value {value:?} for {key}: {why}")]
    Value {
        key: &'static str,
        value: String,
        why: String,
    },
}

/// The whole config file. Unknown keys are refused so typos don't go unseen.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub daemon: DaemonSection,
    pub runtime: RuntimeSection,
    pub logging: LoggingSection,
    pub network: NetworkSection,
    pub dns: DnsSection,
    pub registry: RegistrySection,
}

/// Registries: how the image store reaches them, and the built-in
/// registry server the daemon may run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySection {
    /// dockerd's `insecure-registries`: `HOST[:PORT]` or a CIDR spoken to
    /// over plain HTTP (or HTTPS without certificate checks). Loopback
    /// registries are always insecure.
    pub insecure_registries: Vec<String>,
    /// dockerd's `registry-mirrors`: `http(s)://HOST[:PORT]` tried in order
    /// before Docker Hub for `docker.io` pulls.
    pub mirrors: Vec<String>,
    /// When set, the daemon also serves a registry (as `shibafu registry
    /// serve` would).
    pub serve: Option<RegistryServeEntry>,
}

/// `registry.serve`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryServeEntry {
    /// `HOST:PORT` to listen on.
    pub addr: String,
    /// Storage directory (absolute).
    pub root: PathBuf,
    /// Basic auth (bcrypt htpasswd); unset = anonymous access.
    #[serde(default)]
    pub htpasswd: Option<PathBuf>,
    /// TLS certificate and key (PEM), both or neither.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl RegistrySection {
    /// The image store's registry client settings.
    pub fn client_config(&self) -> Result<shibafu_image::RegistryConfig, ConfigError> {
        let mut insecure = Vec::new();
        for r in &self.insecure_registries {
            insecure.push(insecure_entry(r)?);
        }
        let mut mirrors = Vec::new();
        for m in &self.mirrors {
            mirrors.push(mirror_url(m)?);
        }
        Ok(shibafu_image::RegistryConfig {
            insecure_registries: insecure,
            mirrors,
            // The image store fills in its own.
            user_agent: String::new(),
        })
    }

    /// The built-in server's configuration, when one is configured.
    pub fn server_config(&self) -> Result<Option<shibafu_registry::ServerConfig>, ConfigError> {
        let Some(s) = &self.serve else {
            return Ok(None);
        };
        let bad = |key: &'static str, value: String, why: &str| ConfigError::Value {
            key,
            value,
            why: why.into(),
        };
        let addr = parse_listen_addr(&s.addr).ok_or_else(|| {
            bad(
                "registry.serve.addr",
                s.addr.clone(),
                "want HOST:PORT with an IP address (127.0.0.1:5000, [::1]:5000, 0.0.0.0:5000)",
            )
        })?;
        if !s.root.is_absolute() {
            return Err(bad(
                "registry.serve.root",
                s.root.display().to_string(),
                "must be an absolute path",
            ));
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err(bad(
                "registry.serve.tls_cert",
                format!("{:?} / {:?}", s.tls_cert, s.tls_key),
                "tls_cert and tls_key go together",
            ));
        }
        Ok(Some(shibafu_registry::ServerConfig {
            addr,
            root: s.root.clone(),
            htpasswd: s.htpasswd.clone(),
            tls_cert: s.tls_cert.clone(),
            tls_key: s.tls_key.clone(),
        }))
    }
}

/// `HOST:PORT` with an IP host, or `localhost:PORT`.
fn parse_listen_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.trim().parse::<SocketAddr>() {
        return Some(a);
    }
    let port = s.trim().strip_prefix("localhost:")?.parse::<u16>().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// An `--insecure-registry` value: a CIDR, or `HOST[:PORT]` (a scheme, as
/// dockerd, is refused).
pub fn insecure_entry(s: &str) -> Result<String, ConfigError> {
    let v = s.trim();
    let bad = |why: &str| ConfigError::Value {
        key: "registry.insecure_registries",
        value: s.to_string(),
        why: why.into(),
    };
    if v.contains("://") {
        return Err(bad("insecure registry should not contain '://'"));
    }
    if v.contains('/') {
        return v
            .parse::<ipnet::IpNet>()
            .map(|n| n.to_string())
            .map_err(|_| bad("want HOST[:PORT] or a CIDR such as 10.0.0.0/8"));
    }
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !h.is_empty() && !p.contains(']') => (h, Some(p)),
        _ => (v, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("invalid port"));
        }
    }
    let host_ok = !host.is_empty()
        && (host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok()
            || host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if !host_ok {
        return Err(bad("want HOST[:PORT] or a CIDR such as 10.0.0.0/8"));
    }
    Ok(v.to_string())
}

/// A `--registry-mirror` value: an `http(s)://host[:port]` URL without a
/// path (a trailing `/` is dropped), as dockerd's `ValidateMirror`.
pub fn mirror_url(s: &str) -> Result<String, ConfigError> {
    let v = s.trim().trim_end_matches('/');
    let bad = |why: &str| ConfigError::Value {
        key: "registry.mirrors",
        value: s.to_string(),
        why: why.into(),
    };
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .ok_or_else(|| bad("unsupported scheme: want http:// or https://"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(bad(
            "want a URL without path, query or credentials: http(s)://HOST[:PORT]",
        ));
    }
    Ok(v.to_string())
}

/// The embedded DNS of user-defined networks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DnsSection {
    /// Where names that are not containers' go: `ip` or `ip:port` (53 by
    /// default). Unset = the nameservers of the host's /etc/resolv.conf;
    /// an empty list = no forwarding. Never a public resolver by default.
    pub upstreams: Option<Vec<String>>,
    /// Zone suffix: network `web` answers `NAME.web.<suffix>` ("local").
    pub zone_suffix: Option<String>,
    /// Conditional forwarding: names under `domain` go only to `servers`.
    pub conditional: Vec<ConditionalEntry>,
    /// Configured CNAMEs: `name` answers as `target` (in `network`, or in
    /// every user-defined network).
    pub cnames: Vec<CnameEntry>,
}

/// One `dns.conditional` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConditionalEntry {
    pub domain: String,
    /// `ip` or `ip:port` (53 by default).
    pub servers: Vec<String>,
}

/// One `dns.cnames` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CnameEntry {
    /// Relative to the network's zone, or absolute when it has a dot.
    pub name: String,
    pub target: String,
    /// A network name; unset = every user-defined network.
    #[serde(default)]
    pub network: Option<String>,
}

/// A domain name as DNS carries it (labels of letters, digits, `-`, `_`;
/// 63 bytes a label, 253 in all), lower case, without the final dot.
fn domain_name(s: &str) -> Result<String, String> {
    let d = s.trim().trim_end_matches('.');
    if d.is_empty() {
        return Err("empty name".into());
    }
    if d.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for l in d.split('.') {
        if l.is_empty() || l.len() > 63 {
            return Err("each dot-separated label must have 1 to 63 characters".into());
        }
        if !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "label {l:?} may contain only letters, digits, '-' and '_'"
            ));
        }
    }
    Ok(d.to_ascii_lowercase())
}

impl DnsSection {
    /// The upstreams as addresses: the configured ones, else the host's.
    pub fn upstream_addrs(&self, host_resolv_conf: &str) -> Result<Vec<SocketAddr>, ConfigError> {
        match &self.upstreams {
            Some(list) => list
                .iter()
                .map(|s| {
                    shibafu_engine::dns::parse_server(s).ok_or_else(|| ConfigError::Value {
                        key: "dns.upstreams",
                        value: s.clone(),
                        why: "want an IP address with an optional :port".into(),
                    })
                })
                .collect(),
            None => Ok(resolv_conf_nameservers(host_resolv_conf)),
        }
    }

    /// `dns.conditional` for the DNS server: each domain once, at least
    /// one server each.
    pub fn conditional_forwarders(
        &self,
    ) -> Result<Vec<shibafu_dns::ConditionalForwarder>, ConfigError> {
        let mut out: Vec<shibafu_dns::ConditionalForwarder> = Vec::new();
        for c in &self.conditional {
            let bad = |why: String| ConfigError::Value {
                key: "dns.conditional",
                value: c.domain.clone(),
                why,
            };
            let domain = domain_name(&c.domain).map_err(|w| bad(format!("invalid domain: {w}")))?;
            if out.iter().any(|o| o.domain == domain) {
                return Err(bad("the domain is listed twice".into()));
            }
            if c.servers.is_empty() {
                return Err(bad("no servers: want at least one IP[:PORT]".into()));
            }
            let servers = c
                .servers
                .iter()
                .map(|s| {
                    shibafu_engine::dns::parse_server(s)
                        .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
                        .ok_or_else(|| {
                            bad(format!(
                                "server {s:?}: want an IP address with an optional :port"
                            ))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(shibafu_dns::ConditionalForwarder { domain, servers });
        }
        Ok(out)
    }

    /// `dns.cnames` for the DNS service (networks are mapped to IDs at
    /// every table rebuild; an unknown one is warned about then).
    pub fn cname_configs(&self) -> Result<Vec<shibafu_engine::dns::CnameConfig>, ConfigError> {
        let mut out: Vec<shibafu_engine::dns::CnameConfig> = Vec::new();
        for c in &self.cnames {
            let bad = |why: String| ConfigError::Value {
                key: "dns.cnames",
                value: format!("{} -> {}", c.name, c.target),
                why,
            };
            let name = domain_name(&c.name).map_err(|w| bad(format!("invalid name: {w}")))?;
            let target = domain_name(&c.target).map_err(|w| bad(format!("invalid target: {w}")))?;
            if name == target {
                return Err(bad("a name cannot be an alias of itself".into()));
            }
            let network = match c.network.as_deref().map(str::trim) {
                None => None,
                Some("") => {
                    return Err(bad("empty network: leave it out for every network".into()))
                }
                Some(n) => Some(n.to_string()),
            };
            if out.iter().any(|o| o.name == name && o.network == network) {
                return Err(bad("the name is listed twice for the same network".into()));
            }
            out.push(shibafu_engine::dns::CnameConfig {
                name,
                target,
                network,
            });
        }
        Ok(out)
    }

    pub fn zone_suffix(&self) -> Result<String, ConfigError> {
        let z = self
            .zone_suffix
            .as_deref()
            .unwrap_or(shibafu_dns::DEFAULT_ZONE_SUFFIX)
            .trim_matches('.');
        let ok = !z.is_empty()
            && z.len() <= 200
            && z.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(ConfigError::Value {
                key: "dns.zone_suffix",
                value: z.to_string(),
                why: "want a domain name such as \"local\"".into(),
            });
        }
        Ok(z.to_ascii_lowercase())
    }
}

/// The `nameserver` addresses of a resolv.conf (scoped IPv6 ones, which
/// need an interface, are skipped).
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Bridge networking.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// Docker's `default-address-pools`: where automatic subnets come
    /// from (`[{base: 10.10.0.0/16, size: 24}]`); empty = Docker's pools.
    pub default_address_pools: Vec<PoolEntry>,
    /// Host ports for `-p 80` and `-P` ("30000-32767").
    pub port_range: Option<String>,
    /// The default `bridge` network's gateway address with its prefix
    /// (dockerd's `--bip`, "172.17.0.1/16"); unset = first free pool subnet.
    pub bip: Option<String>,
    /// The default `bridge` network's MTU.
    pub mtu: Option<u32>,
    /// Translate connects from the daemon's network namespace to
    /// 127.0.0.1/::1 published ports at connect time (cgroup eBPF), so
    /// host-local flows skip per-packet NAT; nftables DNAT serves everyone
    /// else either way. Unset = on (falls back to DNAT alone, with one
    /// warning, when the kernel refuses the programs).
    pub socket_lb: Option<bool>,
}

/// One `default_address_pools` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolEntry {
    pub base: String,
    pub size: u8,
}

impl PoolEntry {
    /// dockerd's flag syntax: `base=10.10.0.0/16,size=24`.
    pub fn parse_flag(s: &str) -> Result<PoolEntry, String> {
        let mut base = None;
        let mut size = None;
        for kv in s.split(',') {
            match kv.split_once('=') {
                Some(("base", v)) => base = Some(v.to_string()),
                Some(("size", v)) => {
                    size = Some(
                        v.parse::<u8>()
                            .map_err(|_| format!("invalid pool size {v:?} in {s:?}"))?,
                    )
                }
                _ => return Err(format!("invalid address pool {s:?}: want base=CIDR,size=N")),
            }
        }
        match (base, size) {
            (Some(base), Some(size)) => Ok(PoolEntry { base, size }),
            _ => Err(format!("invalid address pool {s:?}: want base=CIDR,size=N")),
        }
    }
}

/// `LO-HI` host port range.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid port range {s:?}: want LOW-HIGH, 1-65535, LOW <= HIGH");
    let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
    let lo: u16 = a.trim().parse().map_err(|_| bad())?;
    let hi: u16 = b.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

impl NetworkSection {
    /// The bridge layer's configuration for the data dir `dir`.
    pub fn bridge_config(
        &self,
        dir: PathBuf,
    ) -> Result<shibafu_net::bridge::BridgeConfig, ConfigError> {
        let mut c = shibafu_net::bridge::BridgeConfig::new(dir);
        if !self.default_address_pools.is_empty() {
            c.pools = self
                .default_address_pools
                .iter()
                .map(|p| {
                    shibafu_net::ipam::AddressPool::new(&p.base, p.size).map_err(|e| {
                        ConfigError::Value {
                            key: "network.default_address_pools",
                            value: format!("base={},size={}", p.base, p.size),
                            why: e.to_string(),
                        }
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(r) = &self.port_range {
            c.port_range = parse_port_range(r).map_err(|why| ConfigError::Value {
                key: "network.port_range",
                value: r.clone(),
                why,
            })?;
        }
        if let Some(d) = c.default_network.as_mut() {
            d.mtu = self.mtu;
            if let Some(b) = &self.bip {
                let bad = |why: String| ConfigError::Value {
                    key: "network.bip",
                    value: b.clone(),
                    why,
                };
                let net: ipnet::IpNet = b.parse().map_err(|_| {
                    bad("want a gateway address with prefix, e.g. 172.17.0.1/16".into())
                })?;
                if net.addr() == net.network() {
                    return Err(bad("the address is the subnet's network address".into()));
                }
                d.subnet = Some(net.trunc());
                d.gateway = Some(net.addr());
            }
        }
        c.socket_lb = self.socket_lb.unwrap_or(true);
        if let Some(m) = self.mtu {
            if !(68..=65535).contains(&m) {
                return Err(ConfigError::Value {
                    key: "network.mtu",
                    value: m.to_string(),
                    why: "an MTU is a number from 68 to 65535".into(),
                });
            }
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonSection {
    /// `unix:///path` of the API socket.
    pub host: String,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            host: "unix:///run/shibafu.sock".into(),
            data_root: "/var/lib/shibafu".into(),
            exec_root: "/run/shibafu".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSection {
    /// Static init binary for `--init` (default: tini-static if installed).
    pub init_path: Option<PathBuf>,
    /// Default json-file `max-size` for containers without `--log-opt`
    /// ("10m"); unset = no rotation, as Docker.
    pub log_max_size: Option<String>,
    /// Default `max-file` (files kept, live one included).
    pub log_max_file: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSection {
    /// `tracing` filter directive ("info", "shibafu_engine=debug").
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }

    pub fn parse(text: &str) -> Result<Config, serde_norway::Error> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_norway::from_str(text)
    }

    /// Applies `SHIBAFU_DATA_ROOT`, `SHIBAFU_EXEC_ROOT`, `SHIBAFU_LOG_LEVEL`,
    /// `SHIBAFU_PORT_RANGE`, `SHIBAFU_DNS_UPSTREAMS`,
    /// `SHIBAFU_INSECURE_REGISTRIES`, `SHIBAFU_REGISTRY_MIRRORS` (lists:
    /// comma or space separated) (the daemon's `SHIBAFU_HOST` is the CLI's variable too, so it is read
    /// only as the flag default, not here).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("SHIBAFU_DATA_ROOT") {
            self.daemon.data_root = v.into();
        }
        if let Some(v) = get("SHIBAFU_EXEC_ROOT") {
            self.daemon.exec_root = v.into();
        }
        if let Some(v) = get("SHIBAFU_LOG_LEVEL") {
            self.logging.level = v;
        }
        if let Some(v) = get("SHIBAFU_PORT_RANGE") {
            self.network.port_range = Some(v);
        }
        let list = |v: String| -> Vec<String> {
            v.split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        if let Some(v) = get("SHIBAFU_INSECURE_REGISTRIES") {
            self.registry.insecure_registries = list(v);
        }
        if let Some(v) = get("SHIBAFU_REGISTRY_MIRRORS") {
            self.registry.mirrors = list(v);
        }
        if let Some(v) = get("SHIBAFU_DNS_UPSTREAMS") {
            // Comma or space separated; empty = no forwarding.
            self.dns.upstreams = Some(
                v.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
    }

    /// Checks values that can be checked without touching the system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        socket_path(&self.daemon.host)?;
        for (key, p) in [
            ("daemon.data_root", &self.daemon.data_root),
            ("daemon.exec_root", &self.daemon.exec_root),
        ] {
            if !p.is_absolute() {
                return Err(ConfigError::Value {
                    key,
                    value: p.display().to_string(),
                    why: "must be an absolute path".into(),
                });
            }
        }
        if let Some(s) = &self.runtime.log_max_size {
            parse_size(s).map_err(|why| ConfigError::Value {
                key: "runtime.log_max_size",
                value: s.clone(),
                why,
            })?;
        }
        if self.runtime.log_max_file == Some(0) {
            return Err(ConfigError::Value {
                key: "runtime.log_max_file",
                value: "0".into(),
                why: "must be at least 1".into(),
            });
        }
        self.network.bridge_config(PathBuf::from("/"))?;
        self.dns.upstream_addrs("")?;
        self.dns.zone_suffix()?;
        self.dns.conditional_forwarders()?;
        self.dns.cname_configs()?;
        self.registry.client_config()?;
        self.registry.server_config()?;
        if !matches!(self.logging.format.as_str(), "text" | "json") {
            return Err(ConfigError::Value {
                key: "logging.format",
                value: self.logging.format.clone(),
                why: "must be text or json".into(),
            });
        }
        Ok(())
    }
}

/// `unix:///run/x.sock` (or a bare absolute path) -> the socket path.
pub fn socket_path(host: &str) -> Result<PathBuf, ConfigError> {
    let path = host.strip_prefix("unix://").unwrap_or(host);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(ConfigError::Value {
            key: "host",
            value: host.into(),
            why: "only unix://ABSOLUTE_PATH sockets are supported".into(),
        })
    }
}

/// Docker-style sizes: "100", "10k", "10m", "1g" (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number with an optional k/m/g suffix")
    })?;
    if n == 0 {
        return Err(format!("invalid size {s:?}: must be greater than 0"));
    }
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(
            Config::default().daemon.data_root,
            PathBuf::from("/var/lib/shibafu")
        );
    }

    #[test]
    fn file_overrides_defaults_and_unknown_keys_are_refused() {
        let c =
            Config::parse("daemon:\n  data_root: /tmp/x\nruntime:\n  log_max_size: 10m\n").unwrap();
        assert_eq!(c.daemon.data_root, PathBuf::from("/tmp/x"));
        assert_eq!(c.daemon.exec_root, PathBuf::from("/run/shibafu"));
        c.validate().unwrap();
        let err = Config::parse("daemon:\n  data_rot: /tmp/x\n").unwrap_err();
        assert!(err.to_string().contains("data_rot"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let mut c = Config::default();
        c.apply_env(|k| (k == "SHIBAFU_EXEC_ROOT").then(|| "/tmp/run".to_string()));
        assert_eq!(c.daemon.exec_root, PathBuf::from("/tmp/run"));
    }

    #[test]
    fn validation_names_the_bad_key() {
        let mut c = Config::default();
        c.daemon.data_root = "relative".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("daemon.data_root"));
        let mut c = Config::default();
        c.runtime.log_max_size = Some("12q".into());
        assert!(c.validate().unwrap_err().to_string().contains("12q"));
        let mut c = Config::default();
        c.daemon.host = "tcp://0.0.0.0:2375".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn network_section() {
        let c = Config::parse(
            "network:\n  default_address_pools:\n    - base: 10.10.0.0/16\n      size: 24\n  port_range: 40000-40100\n  bip: 10.99.0.1/24\n",
        )
        .unwrap();
        c.validate().unwrap();
        let b = c.network.bridge_config("/x".into()).unwrap();
        assert_eq!(b.port_range, (40000, 40100));
        assert_eq!(b.pools[0].base.to_string(), "10.10.0.0/16");
        let d = b.default_network.unwrap();
        assert_eq!(d.subnet.unwrap().to_string(), "10.99.0.0/24");
        assert_eq!(d.gateway.unwrap().to_string(), "10.99.0.1");
        assert!(Config::parse("network:\n  port_rang: 1-2\n").is_err());
        assert!(b.socket_lb, "socket-LB is on by default");
        let c = Config::parse("network:\n  socket_lb: false\n").unwrap();
        assert!(!c.network.bridge_config("/x".into()).unwrap().socket_lb);
        assert!(Config::parse("network:\n  socket_lb: maybe\n").is_err());
        for bad in ["port_range: 5-1", "bip: 10.0.0.0/24", "mtu: 10"] {
            let c = Config::parse(&format!("network:\n  {bad}\n")).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        let mut c = Config::default();
        c.apply_env(|k| (k == "SHIBAFU_PORT_RANGE").then(|| "1000-2000".to_string()));
        assert_eq!(c.network.port_range.as_deref(), Some("1000-2000"));
        assert_eq!(
            PoolEntry::parse_flag("base=10.1.0.0/16,size=24").unwrap(),
            PoolEntry {
                base: "10.1.0.0/16".into(),
                size: 24
            }
        );
        assert!(PoolEntry::parse_flag("base=10.1.0.0/16").is_err());
    }

    #[test]
    fn dns_section() {
        let host =
            "# x\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver ::1\nsearch lan\n";
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(
            c.dns.upstream_addrs(host).unwrap(),
            vec![
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(c.dns.zone_suffix().unwrap(), "local");
        let c = Config::parse(
            "dns:\n  upstreams: [127.0.0.9, '127.0.0.10:5353']\n  zone_suffix: cluster\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.dns.upstream_addrs(host).unwrap(),
            vec![
                "127.0.0.9:53".parse::<SocketAddr>().unwrap(),
                "127.0.0.10:5353".parse().unwrap()
            ]
        );
        assert_eq!(c.dns.zone_suffix().unwrap(), "cluster");
        let c = Config::parse("dns:\n  upstreams: []\n").unwrap();
        assert!(c.dns.upstream_addrs(host).unwrap().is_empty());
        assert!(Config::parse("dns:\n  upstream: []\n").is_err());
        for bad in ["upstreams: [dns.google]", "zone_suffix: 'a b'"] {
            let c = Config::parse(&format!("dns:\n  {bad}\n")).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("dns."), "{bad}: {e}");
        }
        let mut c = Config::default();
        c.apply_env(|k| {
            (k == "SHIBAFU_DNS_UPSTREAMS").then(|| "127.0.0.7, 127.0.0.8:53".to_string())
        });
        assert_eq!(c.dns.upstream_addrs("").unwrap().len(), 2);
    }

    #[test]
    fn dns_conditional_and_cnames() {
        let c = Config::parse(
            "dns:\n  conditional:\n    - domain: Corp.Example.\n      servers: [\"127.0.0.9\", \"127.0.0.10:5353\"]\n  cnames:\n    - {name: db, target: postgres, network: backend}\n    - {name: www.example.org, target: web}\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.dns.conditional_forwarders().unwrap(),
            vec![shibafu_dns::ConditionalForwarder {
                domain: "corp.example".into(),
                servers: vec![
                    "127.0.0.9:53".parse().unwrap(),
                    "127.0.0.10:5353".parse().unwrap()
                ],
            }]
        );
        assert_eq!(
            c.dns.cname_configs().unwrap(),
            vec![
                shibafu_engine::dns::CnameConfig {
                    name: "db".into(),
                    target: "postgres".into(),
                    network: Some("backend".into()),
                },
                shibafu_engine::dns::CnameConfig {
                    name: "www.example.org".into(),
                    target: "web".into(),
                    network: None,
                },
            ]
        );
        assert!(Config::parse("dns:\n  cnames:\n    - {name: a, target: b, net: x}\n").is_err());
        assert!(
            Config::parse("dns:\n  conditional:\n    - {domain: a}\n").is_err(),
            "servers are required"
        );
        for (bad, want) in [
            ("conditional: [{domain: 'a b', servers: [127.0.0.1]}]", "invalid domain"),
            ("conditional: [{domain: x.org, servers: []}]", "no servers"),
            ("conditional: [{domain: x.org, servers: [dns.google]}]", "dns.google"),
            (
                "conditional: [{domain: x.org, servers: [127.0.0.1]}, {domain: X.org., servers: [127.0.0.2]}]",
                "twice",
            ),
            ("cnames: [{name: '', target: b}]", "invalid name"),
            ("cnames: [{name: a, target: 'b..c'}]", "invalid target"),
            ("cnames: [{name: a, target: A}]", "itself"),
            ("cnames: [{name: a, target: b, network: ''}]", "empty network"),
            ("cnames: [{name: a, target: b}, {name: a, target: c}]", "twice"),
        ] {
            let c = Config::parse(&format!("dns:\n  {bad}\n")).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("dns."), "{bad}: {e}");
        }
    }

    #[test]
    fn registry_section() {
        let c = Config::default();
        assert_eq!(
            c.registry.client_config().unwrap().mirrors,
            Vec::<String>::new()
        );
        assert!(c.registry.server_config().unwrap().is_none());
        let c = Config::parse(
            "registry:\n  insecure_registries: ['myreg:5000', 10.0.0.0/8, '[fd00::1]:443']\n  mirrors: ['http://127.0.0.1:5000/']\n  serve:\n    addr: 127.0.0.1:5001\n    root: /var/lib/shibafu/registry\n    htpasswd: /etc/shibafu/htpasswd\n",
        )
        .unwrap();
        c.validate().unwrap();
        let cc = c.registry.client_config().unwrap();
        assert_eq!(
            cc.insecure_registries,
            ["myreg:5000", "10.0.0.0/8", "[fd00::1]:443"]
        );
        assert_eq!(cc.mirrors, ["http://127.0.0.1:5000"]);
        let sc = c.registry.server_config().unwrap().unwrap();
        assert_eq!(sc.addr, "127.0.0.1:5001".parse().unwrap());
        assert_eq!(
            sc.htpasswd.as_deref(),
            Some(Path::new("/etc/shibafu/htpasswd"))
        );
        assert!(sc.tls_cert.is_none());
        assert!(Config::parse("registry:\n  mirror: []\n").is_err());
        assert!(
            Config::parse("registry:\n  serve: {addr: 127.0.0.1:1, root: /x, tls: y}\n").is_err()
        );
        for (bad, key) in [
            (
                "insecure_registries: ['http://x:5000']",
                "registry.insecure_registries",
            ),
            (
                "insecure_registries: ['x:0']",
                "registry.insecure_registries",
            ),
            (
                "insecure_registries: ['10.0.0.0/33']",
                "registry.insecure_registries",
            ),
            ("mirrors: ['ftp://m']", "registry.mirrors"),
            ("mirrors: ['http://m/path']", "registry.mirrors"),
            ("serve: {addr: 'nohost', root: /x}", "registry.serve.addr"),
            (
                "serve: {addr: '127.0.0.1:5000', root: rel}",
                "registry.serve.root",
            ),
            (
                "serve: {addr: '127.0.0.1:5000', root: /x, tls_cert: /c}",
                "registry.serve.tls_cert",
            ),
        ] {
            let c = Config::parse(&format!("registry:\n  {bad}\n")).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "SHIBAFU_INSECURE_REGISTRIES" => Some("a:1, b:2".to_string()),
            "SHIBAFU_REGISTRY_MIRRORS" => Some("http://m:5000".to_string()),
            _ => None,
        });
        assert_eq!(c.registry.insecure_registries, ["a:1", "b:2"]);
        assert_eq!(c.registry.mirrors, ["http://m:5000"]);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10m").unwrap(), 10 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("2kb").unwrap(), 2048);
        assert!(parse_size("0").is_err());
        assert!(parse_size("m").is_err());
    }
}
