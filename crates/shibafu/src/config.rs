//! The daemon's configuration: built-in defaults, then the YAML config file,
//! then `SHIBAFU_*` environment variables, then command-line flags (each
//! layer overrides the previous one, as with dockerd's daemon.json + flags).

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

    /// Applies `SHIBAFU_DATA_ROOT`, `SHIBAFU_EXEC_ROOT`, `SHIBAFU_LOG_LEVEL`
    /// (the daemon's `SHIBAFU_HOST` is the CLI's variable too, so it is read
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
    fn sizes() {
        assert_eq!(parse_size("10m").unwrap(), 10 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("2kb").unwrap(), 2048);
        assert!(parse_size("0").is_err());
        assert!(parse_size("m").is_err());
    }
}
