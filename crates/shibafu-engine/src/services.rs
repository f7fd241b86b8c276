//! Services and health probes carried by labels (`shibafu_api::labels`):
//! parsing and create-time validation of `io.shibafu.service*`,
//! `io.shibafu.health.probe` and the network option `io.shibafu.network.dns`,
//! and the `service ls/inspect` views. The views are computed from exactly
//! the data the DNS table is built from (live containers, their endpoints
//! on served networks), so what they show is what the DNS answers.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use bollard_stubs::models::ContainerConfig;
use shibafu_api::labels;
use shibafu_api::{ServiceInstance, ServiceView};
use shibafu_dns::{NetworkDns, Proto};
use shibafu_net::store::Endpoint as NetEndpoint;

use crate::model::{ContainerRecord, HealthStatus};

/// A bad label or option value, named by the shibafu CLI flag that sets it
/// and by the label itself (docker CLI users set the label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("invalid {flag} {value:?} ({kind} {key}): {why}")]
    Invalid {
        flag: &'static str,
        kind: &'static str,
        key: &'static str,
        value: String,
        why: String,
    },
}

fn label_err(
    flag: &'static str,
    key: &'static str,
    value: &str,
    why: impl Into<String>,
) -> LabelError {
    LabelError::Invalid {
        flag,
        kind: "label",
        key,
        value: value.to_string(),
        why: why.into(),
    }
}

/// Default weight of a service instance.
pub const DEFAULT_WEIGHT: u16 = 1;

/// A container's service settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceLabels {
    /// `--service` names (lower case, deduplicated, in the given order).
    pub services: Vec<String>,
    /// `--service-weight` (1 when not given).
    pub weight: u16,
    /// `--service-port` SRV ports.
    pub ports: Vec<(u16, Proto)>,
}

/// A service name is one DNS label: it answers as `NAME` and
/// `NAME.NETWORK.local`, and SRV as `_PORT._PROTO.NAME...`.
fn check_service_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty service name".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "service name {name:?} is longer than 63 characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "service name {name:?} may contain only letters, digits, '-' and '_'"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "service name {name:?} must not start or end with '-'"
        ));
    }
    Ok(())
}

/// `PORT[/PROTO]` (tcp by default).
fn parse_port(s: &str) -> Result<(u16, Proto), String> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let port = match port.trim().parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("port {port:?} is not a number from 1 to 65535")),
    };
    let proto = proto
        .trim()
        .parse::<Proto>()
        .map_err(|_| format!("protocol {proto:?} is not tcp, udp or sctp"))?;
    Ok((port, proto))
}

/// The service labels of a container (all absent: no services, weight 1).
pub fn service_labels(l: &HashMap<String, String>) -> Result<ServiceLabels, LabelError> {
    let mut out = ServiceLabels {
        weight: DEFAULT_WEIGHT,
        ..Default::default()
    };
    if let Some(v) = l.get(labels::SERVICE) {
        for name in v.split(',').map(str::trim) {
            check_service_name(name)
                .map_err(|why| label_err("--service", labels::SERVICE, v, why))?;
            let name = name.to_ascii_lowercase();
            if !out.services.contains(&name) {
                out.services.push(name);
            }
        }
    }
    if let Some(v) = l.get(labels::SERVICE_WEIGHT) {
        out.weight = match v.trim().parse::<u16>() {
            Ok(w) if w > 0 => w,
            _ => {
                return Err(label_err(
                    "--service-weight",
                    labels::SERVICE_WEIGHT,
                    v,
                    "want 1..65535",
                ))
            }
        };
        if out.services.is_empty() {
            return Err(label_err(
                "--service-weight",
                labels::SERVICE_WEIGHT,
                v,
                format!(
                    "a weight needs a service (--service, label {})",
                    labels::SERVICE
                ),
            ));
        }
    }
    if let Some(v) = l.get(labels::SERVICE_PORTS) {
        for p in v.split(',').map(str::trim) {
            let port = parse_port(p).map_err(|why| {
                label_err(
                    "--service-port",
                    labels::SERVICE_PORTS,
                    v,
                    format!("want PORT[/PROTO]: {why}"),
                )
            })?;
            if !out.ports.contains(&port) {
                out.ports.push(port);
            }
        }
    }
    Ok(out)
}

/// A network health probe run by the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Healthy when a TCP connection to the port succeeds.
    Tcp { port: u16 },
    /// Healthy when `GET path` (HTTP/1.0) answers 200..=399.
    Http { port: u16, path: String },
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Tcp { port } => write!(f, "tcp:{port}"),
            Probe::Http { port, path } => write!(f, "http:{port}{path}"),
        }
    }
}

impl Probe {
    pub fn port(&self) -> u16 {
        match self {
            Probe::Tcp { port } | Probe::Http { port, .. } => *port,
        }
    }
}

/// `tcp:PORT` or `http:PORT[/PATH]`.
pub fn parse_probe(v: &str) -> Result<Probe, LabelError> {
    let bad = |why: &str| {
        label_err(
            "--health-probe",
            labels::HEALTH_PROBE,
            v,
            format!("want tcp:PORT or http:PORT[/PATH]: {why}"),
        )
    };
    let (kind, rest) = v.split_once(':').ok_or_else(|| bad("no probe type"))?;
    let port_of = |s: &str| match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(&format!("port {s:?} is not a number from 1 to 65535"))),
    };
    match kind {
        "tcp" => Ok(Probe::Tcp {
            port: port_of(rest)?,
        }),
        "http" => {
            let (port, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            // The path goes verbatim into the request line.
            if path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || !b.is_ascii())
            {
                return Err(bad(
                    "the path must not contain spaces or control characters",
                ));
            }
            Ok(Probe::Http {
                port: port_of(port)?,
                path: path.to_string(),
            })
        }
        other => Err(bad(&format!("unknown probe type {other:?}"))),
    }
}

/// The container's probe, if it has one.
pub fn probe_label(l: &HashMap<String, String>) -> Result<Option<Probe>, LabelError> {
    l.get(labels::HEALTH_PROBE)
        .map(|v| parse_probe(v.trim()))
        .transpose()
}

/// The probe of a record created before validation existed (or whose
/// labels no longer parse): logged and ignored, never fatal at run time.
pub fn probe_of(rec: &ContainerRecord) -> Option<Probe> {
    let l = rec.config.labels.as_ref()?;
    probe_label(l)
        .inspect_err(|e| tracing::warn!(container = %rec.id, error = %e, "health probe ignored"))
        .ok()
        .flatten()
}

/// Create-time check of the service and probe labels of the merged config
/// (image labels included): an invalid one refuses the create (400)
/// before anything exists.
pub fn validate_create(cfg: &ContainerConfig) -> Result<(), LabelError> {
    let Some(l) = cfg.labels.as_ref() else {
        return Ok(());
    };
    service_labels(l)?;
    probe_label(l)?;
    Ok(())
}

/// The network option `io.shibafu.network.dns`: `IP[:PORT]` entries,
/// comma-separated (port 53 by default).
pub fn parse_network_dns(v: &str) -> Result<Vec<SocketAddr>, LabelError> {
    let bad = |why: String| LabelError::Invalid {
        flag: "--dns",
        kind: "network option",
        key: labels::NETWORK_DNS,
        value: v.to_string(),
        why,
    };
    let mut out = Vec::new();
    for s in v.split(',').map(str::trim) {
        let addr = crate::dns::parse_server(s)
            .filter(|a| a.port() != 0)
            .ok_or_else(|| bad(format!("{s:?} is not IP[:PORT]")))?;
        if addr.ip().is_unspecified() {
            return Err(bad(format!("{s:?} is not a server address")));
        }
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

/// Whether the DNS answers a service or alias name with this container:
/// everything but an unhealthy one. A starting container stays in: with
/// Docker's 30 s default interval, leaving it out would hide a fresh
/// service (and, unlike Docker, a plain `--network-alias`) that long.
pub fn in_answers(rec: &ContainerRecord) -> bool {
    rec.state
        .health
        .as_ref()
        .is_none_or(|h| h.status != HealthStatus::Unhealthy)
}

fn health_str(rec: &ContainerRecord) -> &'static str {
    rec.state
        .health
        .as_ref()
        .map_or("none", |h| h.status.as_str())
}

/// The lenient read of a record's service labels used at run time.
pub fn services_of(rec: &ContainerRecord) -> ServiceLabels {
    let empty = HashMap::new();
    let l = rec.config.labels.as_ref().unwrap_or(&empty);
    service_labels(l).unwrap_or_else(|e| {
        tracing::warn!(container = %rec.id, error = %e, "service labels ignored");
        ServiceLabels {
            weight: DEFAULT_WEIGHT,
            ..Default::default()
        }
    })
}

/// The instances of one (name, network) found so far, and their ports.
type Found = (Vec<ServiceInstance>, Vec<(u16, Proto)>);

/// Every service of live containers on served networks, one view per
/// (name, network), sorted by name then network name. A service is a
/// `--service` name, or a `--network-alias` shared by two or more
/// containers of that network.
pub fn service_views(
    containers: &[ContainerRecord],
    endpoints: &HashMap<String, Vec<NetEndpoint>>,
    served: &[NetworkDns],
    zone_suffix: &str,
) -> Vec<ServiceView> {
    // (name, network id) -> instances, and the ports seen.
    let mut found: BTreeMap<(String, String), Found> = BTreeMap::new();
    let mut live: Vec<&ContainerRecord> = containers
        .iter()
        .filter(|c| c.state.status.is_live())
        .collect();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    for c in live {
        let Some(eps) = endpoints.get(&c.id) else {
            continue;
        };
        let svc = services_of(c);
        let ports = crate::dns::container_ports(c, &svc);
        for e in eps {
            if !served.iter().any(|n| n.id == e.network_id) {
                continue;
            }
            let mut names: Vec<(String, &'static str, u16)> = svc
                .services
                .iter()
                .map(|s| (s.clone(), "service", svc.weight))
                .collect();
            for a in &e.aliases {
                let a = a.to_ascii_lowercase();
                if !names.iter().any(|(n, _, _)| *n == a) {
                    names.push((a, "alias", DEFAULT_WEIGHT));
                }
            }
            for (name, via, weight) in names {
                let (instances, pts) = found.entry((name, e.network_id.clone())).or_default();
                instances.push(ServiceInstance {
                    id: c.id.clone(),
                    name: c.name.trim_start_matches('/').to_string(),
                    ipv4: first_addr(e, false),
                    ipv6: first_addr(e, true),
                    weight,
                    health: health_str(c).to_string(),
                    in_answers: in_answers(c),
                    via: via.to_string(),
                });
                for p in &ports {
                    if !pts.contains(p) {
                        pts.push(*p);
                    }
                }
            }
        }
    }
    let suffix = zone_suffix.trim_matches('.');
    let mut out: Vec<ServiceView> = found
        .into_iter()
        .filter(|(_, (inst, _))| inst.iter().any(|i| i.via == "service") || inst.len() >= 2)
        .filter_map(|((name, net_id), (mut instances, mut ports))| {
            let net = served.iter().find(|n| n.id == net_id)?;
            let zone = net
                .zone
                .clone()
                .unwrap_or_else(|| format!("{}.{suffix}", net.name));
            instances.sort_by(|a, b| a.name.cmp(&b.name));
            ports.sort_by_key(|(p, proto)| (proto.as_str(), *p));
            Some(ServiceView {
                fqdn: format!("{name}.{zone}"),
                name,
                network: net.name.clone(),
                network_id: net.id.clone(),
                ports: ports
                    .iter()
                    .map(|(p, proto)| format!("{p}/{}", proto.as_str()))
                    .collect(),
                instances,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.network).cmp(&(&b.name, &b.network)));
    out
}

fn first_addr(e: &NetEndpoint, v6: bool) -> String {
    e.addresses
        .iter()
        .map(|a| a.addr())
        .find(|a: &IpAddr| a.is_ipv6() == v6)
        .map(|a| a.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::tests::ep;
    use crate::model::{HealthState, Status};

    fn l(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn service_labels_parse() {
        let s = service_labels(&l(&[
            (labels::SERVICE, "api, Web,api"),
            (labels::SERVICE_WEIGHT, "3"),
            (labels::SERVICE_PORTS, "8080,53/udp,8080/tcp"),
        ]))
        .unwrap();
        assert_eq!(s.services, vec!["api", "web"]);
        assert_eq!(s.weight, 3);
        assert_eq!(s.ports, vec![(8080, Proto::Tcp), (53, Proto::Udp)]);
        let none = service_labels(&l(&[])).unwrap();
        assert_eq!(none.services, Vec::<String>::new());
        assert_eq!(none.weight, 1);
        // Ports alone are fine: SRV records for the container's own names.
        assert_eq!(
            service_labels(&l(&[(labels::SERVICE_PORTS, "9000")]))
                .unwrap()
                .ports,
            vec![(9000, Proto::Tcp)]
        );
    }

    #[test]
    fn bad_service_labels_name_the_flag() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[(labels::SERVICE, "api"), (labels::SERVICE_WEIGHT, "0")],
                r#"invalid --service-weight "0" (label io.shibafu.service.weight): want 1..65535"#,
            ),
            (
                &[(labels::SERVICE, "api"), (labels::SERVICE_WEIGHT, "65536")],
                "--service-weight",
            ),
            (&[(labels::SERVICE_WEIGHT, "2")], "needs a service"),
            (&[(labels::SERVICE, "")], "--service"),
            (&[(labels::SERVICE, "a,,b")], "empty service name"),
            (&[(labels::SERVICE, "a.b")], "only letters"),
            (&[(labels::SERVICE, "-a")], "start or end"),
            (&[(labels::SERVICE, &"x".repeat(64))], "63"),
            (&[(labels::SERVICE_PORTS, "0")], "--service-port"),
            (&[(labels::SERVICE_PORTS, "80/icmp")], "tcp, udp or sctp"),
            (&[(labels::SERVICE_PORTS, "80-90")], "--service-port"),
        ];
        for (kv, want) in cases {
            let e = service_labels(&l(kv)).unwrap_err().to_string();
            assert!(e.contains(want), "{kv:?}: {e}");
        }
    }

    #[test]
    fn probes_parse() {
        assert_eq!(parse_probe("tcp:80").unwrap(), Probe::Tcp { port: 80 });
        assert_eq!(
            parse_probe("http:8080").unwrap(),
            Probe::Http {
                port: 8080,
                path: "/".into()
            }
        );
        assert_eq!(
            parse_probe("http:80/healthz?x=1").unwrap(),
            Probe::Http {
                port: 80,
                path: "/healthz?x=1".into()
            }
        );
        assert_eq!(parse_probe("http:80/a").unwrap().to_string(), "http:80/a");
        for bad in [
            "tcp",
            "tcp:",
            "tcp:0",
            "tcp:70000",
            "udp:53",
            "http:x/",
            "http:80/a b",
            "http:80/\r\nX: y",
            "tcp:80/x",
        ] {
            let e = parse_probe(bad).unwrap_err().to_string();
            assert!(
                e.contains("--health-probe") && e.contains(labels::HEALTH_PROBE),
                "{bad}: {e}"
            );
        }
        assert_eq!(probe_label(&l(&[])).unwrap(), None);
    }

    #[test]
    fn create_validation() {
        let mut cfg = ContainerConfig::default();
        validate_create(&cfg).unwrap();
        cfg.labels = Some(l(&[
            (labels::HEALTH_PROBE, "tcp:80"),
            (labels::SERVICE, "api"),
        ]));
        validate_create(&cfg).unwrap();
        cfg.labels = Some(l(&[(labels::HEALTH_PROBE, "ftp:21")]));
        assert!(validate_create(&cfg)
            .unwrap_err()
            .to_string()
            .contains("--health-probe"));
    }

    #[test]
    fn network_dns_option() {
        assert_eq!(
            parse_network_dns("127.0.0.9, 127.0.0.10:5353,[::1]:54,127.0.0.9").unwrap(),
            vec![
                "127.0.0.9:53".parse::<SocketAddr>().unwrap(),
                "127.0.0.10:5353".parse().unwrap(),
                "[::1]:54".parse().unwrap()
            ]
        );
        for bad in ["", "dns.google", "127.0.0.1:0", "0.0.0.0", "1.2.3.4,"] {
            let e = parse_network_dns(bad).unwrap_err().to_string();
            assert!(
                e.contains("--dns") && e.contains("network option io.shibafu.network.dns"),
                "{bad}: {e}"
            );
        }
    }

    fn ctr(id: &str, name: &str, kv: &[(&str, &str)]) -> ContainerRecord {
        let mut c = ContainerRecord {
            id: id.into(),
            name: name.into(),
            ..Default::default()
        };
        c.state.status = Status::Running;
        c.config.labels = Some(l(kv));
        c
    }

    fn served(name: &str) -> NetworkDns {
        NetworkDns {
            id: format!("id-{name}"),
            name: name.into(),
            zone: None,
            listen: vec![],
            subnets: vec![],
            internal: false,
            forwarders: vec![],
        }
    }

    #[test]
    fn views_follow_services_aliases_and_health() {
        let a = ctr(
            "a",
            "a1",
            &[
                (labels::SERVICE, "api"),
                (labels::SERVICE_WEIGHT, "3"),
                (labels::SERVICE_PORTS, "9000"),
            ],
        );
        let mut b = ctr("b", "b1", &[(labels::SERVICE, "api")]);
        b.state.health = Some(HealthState {
            status: HealthStatus::Unhealthy,
            ..Default::default()
        });
        let mut c = ctr("c", "c1", &[(labels::SERVICE, "api")]);
        c.state.health = Some(HealthState::default());
        let mut gone = ctr("d", "d1", &[(labels::SERVICE, "api")]);
        gone.state.status = Status::Exited;
        let lone = ctr("e", "e1", &[]);
        let other = ctr("f", "f1", &[]);
        let eps = HashMap::from([
            ("a".to_string(), vec![ep("web", "10.1.0.2", &["cache"])]),
            ("b".to_string(), vec![ep("web", "10.1.0.3", &[])]),
            ("c".to_string(), vec![ep("web", "10.1.0.4", &[])]),
            ("d".to_string(), vec![ep("web", "10.1.0.5", &[])]),
            // "solo" is one container's alias: a name, not a service.
            (
                "e".to_string(),
                vec![ep("web", "10.1.0.6", &["solo", "Cache"])],
            ),
            // On a network that is not served (the default bridge).
            (
                "f".to_string(),
                vec![ep("bridge", "172.17.0.2", &["cache"])],
            ),
        ]);
        let v = service_views(
            &[a, b, c, gone, lone, other],
            &eps,
            &[served("web")],
            "local",
        );
        let names: Vec<(&str, &str)> = v
            .iter()
            .map(|s| (s.name.as_str(), s.network.as_str()))
            .collect();
        assert_eq!(names, vec![("api", "web"), ("cache", "web")]);
        let api = &v[0];
        assert_eq!(api.fqdn, "api.web.local");
        assert_eq!(api.network_id, "id-web");
        assert_eq!(api.ports, vec!["9000/tcp"]);
        let inst: Vec<(&str, &str, u16, &str, bool, &str)> = api
            .instances
            .iter()
            .map(|i| {
                (
                    i.name.as_str(),
                    i.ipv4.as_str(),
                    i.weight,
                    i.health.as_str(),
                    i.in_answers,
                    i.via.as_str(),
                )
            })
            .collect();
        assert_eq!(
            inst,
            vec![
                ("a1", "10.1.0.2", 3, "none", true, "service"),
                ("b1", "10.1.0.3", 1, "unhealthy", false, "service"),
                ("c1", "10.1.0.4", 1, "starting", true, "service"),
            ]
        );
        let cache = &v[1];
        assert_eq!(cache.instances.len(), 2);
        assert!(cache
            .instances
            .iter()
            .all(|i| i.via == "alias" && i.weight == 1));
        assert_eq!(cache.ports, vec!["9000/tcp"], "a1's SRV ports");
    }
}
