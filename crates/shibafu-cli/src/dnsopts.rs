//! shibafu's own service-discovery flags (`run --service ...`, `network create
//! --dns`) and the labels/options they become. Checked here, before any request,
//! so a typo fails with exit 125 and names the flag, like docker's flag errors;
//! the daemon checks the same values again (the docker CLI can set the labels
//! directly with `--label`).

use std::net::{IpAddr, SocketAddr};

use crate::cli::ContainerOpts;
use crate::config::flag_err;
use crate::error::{CliError, Result};

/// The label and option keys of the daemon's contract. Duplicated from
/// `shibafu_api::labels` (crates/shibafu-api/src/backend.rs), which this crate
/// does not depend on: keep the two in step.
pub mod labels {
    /// Service names the container joins, comma-separated.
    pub const SERVICE: &str = "io.shibafu.service";
    /// Its weight in those services' round-robin, 1..=65535.
    pub const SERVICE_WEIGHT: &str = "io.shibafu.service.weight";
    /// Extra SRV ports, comma-separated `PORT[/PROTO]`.
    pub const SERVICE_PORTS: &str = "io.shibafu.service.ports";
    /// `tcp:PORT` or `http:PORT[/PATH]`.
    pub const HEALTH_PROBE: &str = "io.shibafu.health.probe";
    /// Network option: the network's own upstream resolvers, `IP[:PORT],...`.
    pub const NETWORK_DNS: &str = "io.shibafu.network.dns";
}

/// A service name: one DNS label (it answers as `NAME`, `NAME.NETWORK.local`
/// and in SRV names): letters, digits, `-` and `_`, at most 63, no leading or
/// trailing `-` (the daemon's rule in shibafu-engine's services.rs).
pub fn parse_service_name(v: &str) -> std::result::Result<String, String> {
    let n = v.trim();
    if n.is_empty() {
        return Err("service name must not be empty".into());
    }
    if n.len() > 63 {
        return Err("service name is longer than 63 characters".into());
    }
    if let Some(c) = n
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{c:?} is not allowed in a service name (letters, digits, '-' and '_')"
        ));
    }
    if n.starts_with('-') || n.ends_with('-') {
        return Err("a service name must not start or end with '-'".into());
    }
    Ok(n.to_string())
}

/// `--service-weight`: an integer 1..=65535.
pub fn parse_weight(v: &str) -> std::result::Result<u16, String> {
    let t = v.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err("want an integer 1..65535".into());
    }
    match t.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err("want an integer 1..65535".into()),
    }
}

/// A port 1..=65535.
fn parse_port(v: &str) -> std::result::Result<u16, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port {v:?}: want 1..65535"));
    }
    match v.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(format!("invalid port {v:?}: want 1..65535")),
    }
}

/// `--service-port PORT[/PROTO]` -> `PORT` or `PORT/proto` (proto lowercased;
/// none means tcp, as in `--expose`).
pub fn parse_service_port(v: &str) -> std::result::Result<String, String> {
    let t = v.trim();
    let (port, proto) = match t.split_once('/') {
        Some((p, pr)) => (p, Some(pr.to_ascii_lowercase())),
        None => (t, None),
    };
    let port = parse_port(port)?;
    match proto.as_deref() {
        None => Ok(port.to_string()),
        Some(p @ ("tcp" | "udp" | "sctp")) => Ok(format!("{port}/{p}")),
        Some(p) => Err(format!("invalid protocol {p:?}: want tcp, udp or sctp")),
    }
}

/// `--health-probe tcp:PORT | http:PORT[/PATH]`, normalized (scheme lowercased).
pub fn parse_health_probe(v: &str) -> std::result::Result<String, String> {
    const WANT: &str = "want tcp:PORT or http:PORT[/PATH]";
    let t = v.trim();
    let (scheme, rest) = t.split_once(':').ok_or_else(|| WANT.to_string())?;
    match scheme.to_ascii_lowercase().as_str() {
        "tcp" => {
            let port = parse_port(rest).map_err(|e| format!("{e} ({WANT})"))?;
            Ok(format!("tcp:{port}"))
        }
        "http" => {
            let (port, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let port = parse_port(port).map_err(|e| format!("{e} ({WANT})"))?;
            // The path goes verbatim into the probe's request line.
            if let Some(c) = path
                .chars()
                .find(|c| !c.is_ascii() || c.is_ascii_whitespace() || c.is_ascii_control())
            {
                return Err(format!("invalid character {c:?} in the HTTP path"));
            }
            Ok(format!("http:{port}{path}"))
        }
        _ => Err(format!("unknown probe type {scheme:?}: {WANT}")),
    }
}

/// One resolver of `network create --dns`: `IP`, `IPv4:PORT` or `[IPv6]:PORT`
/// (port 53 when absent, 1..65535 when given). Returned as written, trimmed.
pub fn parse_dns_server(v: &str) -> std::result::Result<String, String> {
    let t = v.trim();
    let addr = match t.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, 53),
        Err(_) => t
            .parse::<SocketAddr>()
            .map_err(|_| "want IP, IPv4:PORT or [IPv6]:PORT".to_string())?,
    };
    if addr.port() == 0 {
        return Err("port 0 is not a valid DNS server port: want 1..65535".into());
    }
    if addr.ip().is_unspecified() {
        return Err(format!("{} is not a server address", addr.ip()));
    }
    Ok(t.to_string())
}

/// Items of a repeatable flag whose values may also be comma lists, each
/// checked by `parse` (duplicates dropped, first order kept).
fn list_flag(
    values: &[String],
    flag: &str,
    parse: impl Fn(&str) -> std::result::Result<String, String>,
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        for item in v.split(',') {
            let p = parse(item).map_err(|e| flag_err(v, flag, e))?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// The labels `--service`, `--service-weight`, `--service-port` and
/// `--health-probe` become. `labels` are the `--label`/`--label-file` ones
/// already collected: a weight may go with a service set by `--label`.
pub fn service_labels(o: &ContainerOpts, labels: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let services = list_flag(&o.service, "--service", parse_service_name)?;
    if !services.is_empty() {
        out.push((labels::SERVICE.to_string(), services.join(",")));
    }
    if let Some(w) = &o.service_weight {
        let weight = parse_weight(w).map_err(|e| flag_err(w, "--service-weight", e))?;
        let labelled = labels
            .iter()
            .any(|l| l.split_once('=').map_or(l.as_str(), |(k, _)| k) == labels::SERVICE);
        if services.is_empty() && !labelled {
            return Err(CliError::usage(
                "--service-weight needs --service: a weight only matters within a service",
            ));
        }
        out.push((labels::SERVICE_WEIGHT.to_string(), weight.to_string()));
    }
    let ports = list_flag(&o.service_port, "--service-port", parse_service_port)?;
    if !ports.is_empty() {
        out.push((labels::SERVICE_PORTS.to_string(), ports.join(",")));
    }
    if let Some(p) = &o.health_probe {
        let probe = parse_health_probe(p).map_err(|e| flag_err(p, "--health-probe", e))?;
        out.push((labels::HEALTH_PROBE.to_string(), probe));
    }
    Ok(out)
}

/// `network create --dns` values -> the `io.shibafu.network.dns` option value.
pub fn network_dns_option(values: &[String]) -> Result<Option<String>> {
    let servers = list_flag(values, "--dns", parse_dns_server)?;
    Ok((!servers.is_empty()).then(|| servers.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights() {
        assert_eq!(parse_weight("1"), Ok(1));
        assert_eq!(parse_weight(" 65535 "), Ok(65535));
        for bad in ["0", "65536", "-1", "1.5", "", "x", "+3", "99999999999"] {
            assert_eq!(
                parse_weight(bad),
                Err("want an integer 1..65535".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn service_ports() {
        assert_eq!(parse_service_port("8080").unwrap(), "8080");
        assert_eq!(parse_service_port("53/UDP").unwrap(), "53/udp");
        assert_eq!(parse_service_port("9/sctp").unwrap(), "9/sctp");
        assert_eq!(parse_service_port("80/tcp").unwrap(), "80/tcp");
        assert_eq!(
            parse_service_port("0").unwrap_err(),
            "invalid port \"0\": want 1..65535"
        );
        assert_eq!(
            parse_service_port("70000/udp").unwrap_err(),
            "invalid port \"70000\": want 1..65535"
        );
        assert_eq!(
            parse_service_port("80/icmp").unwrap_err(),
            "invalid protocol \"icmp\": want tcp, udp or sctp"
        );
        for bad in ["", "/udp", "x", "80-90", "80/"] {
            assert!(parse_service_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn probes() {
        assert_eq!(parse_health_probe("tcp:5432").unwrap(), "tcp:5432");
        assert_eq!(parse_health_probe("HTTP:80").unwrap(), "http:80");
        assert_eq!(
            parse_health_probe("http:8080/healthz?x=1").unwrap(),
            "http:8080/healthz?x=1"
        );
        assert_eq!(parse_health_probe("http:80/").unwrap(), "http:80/");
        assert_eq!(
            parse_health_probe("udp:53").unwrap_err(),
            "unknown probe type \"udp\": want tcp:PORT or http:PORT[/PATH]"
        );
        assert_eq!(
            parse_health_probe("tcp").unwrap_err(),
            "want tcp:PORT or http:PORT[/PATH]"
        );
        assert!(parse_health_probe("tcp:0")
            .unwrap_err()
            .contains("1..65535"));
        assert!(parse_health_probe("tcp:80/x").is_err());
        assert!(parse_health_probe("http:/x").is_err());
        assert!(parse_health_probe("http:80/a b").is_err());
        assert!(parse_health_probe("http:80/é").is_err());
    }

    #[test]
    fn dns_servers() {
        for ok in [
            "10.0.0.1",
            "10.0.0.1:5353",
            "fd00::1",
            "[fd00::1]:53",
            " 127.0.0.9 ",
        ] {
            assert_eq!(parse_dns_server(ok).unwrap(), ok.trim(), "{ok}");
        }
        for bad in [
            "",
            "x",
            "10.0.0.1:",
            "10.0.0.1:0",
            "10.0.0.1:70000",
            "fd00::1:53x",
            "host:53",
            "10.0.0.256",
            "0.0.0.0",
            "[::]:53",
        ] {
            assert!(parse_dns_server(bad).is_err(), "{bad}");
        }
        assert_eq!(
            network_dns_option(&["10.0.0.1".into(), "127.0.0.9:5353,10.0.0.1".into()]).unwrap(),
            Some("10.0.0.1,127.0.0.9:5353".into())
        );
        assert_eq!(network_dns_option(&[]).unwrap(), None);
        let e = network_dns_option(&["10.0.0.1:x".into()]).unwrap_err();
        assert!(matches!(e, CliError::Usage(_)));
        assert_eq!(
            e.to_string(),
            "invalid argument \"10.0.0.1:x\" for \"--dns\" flag: want IP, IPv4:PORT or [IPv6]:PORT"
        );
    }

    #[test]
    fn service_names() {
        assert_eq!(parse_service_name("api").unwrap(), "api");
        assert_eq!(parse_service_name("My_svc-2").unwrap(), "My_svc-2");
        for bad in ["", " ", "a.b", "-a", "a-", "a b", "a/b", "ä"] {
            assert!(parse_service_name(bad).is_err(), "{bad:?}");
        }
        assert!(parse_service_name(&"a".repeat(64)).is_err());
    }
}
