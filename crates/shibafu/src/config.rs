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
    /// `SHIBAFU_PORT_RANGE`, `SHIBAFU_DNS_UPSTREAMS` (the daemon's `SHIBAFU_HOST` is the CLI's variable too, so it is read
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
    fn sizes() {
        assert_eq!(parse_size("10m").unwrap(), 10 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("2kb").unwrap(), 2048);
        assert!(parse_size("0").is_err());
        assert!(parse_size("m").is_err());
    }
}
