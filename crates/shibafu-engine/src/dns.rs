//! Embedded DNS wiring: [`DnsService`] keeps `shibafu-dns`'s
//! [`DnsServer`] in step with the engine. It serves every user-defined
//! bridge network on its gateways (the default `bridge` keeps Docker's
//! behaviour: no names) and rebuilds the record table from the engine's
//! containers and the network store whenever the engine reports a change
//! (start, die, stop, rename, destroy, health, network connect/disconnect,
//! network create/destroy). Changes that arrive while a rebuild runs are
//! coalesced into one more rebuild.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bollard_stubs::models::{EventMessage, EventMessageTypeEnum};
use shibafu_api::{ApiError, ApiResult, DnsTraceQuery, ServiceView};
use shibafu_dns::{Cname, DnsServer, Endpoint, NetworkDns, Proto, Requester, Table};
use shibafu_net::bridge::BridgeNetworks;
use shibafu_net::store::{Endpoint as NetEndpoint, NetworkRecord};
use tokio::sync::broadcast::error::RecvError;

use crate::model::ContainerRecord;
use crate::Engine;

/// Whether `n` gets an embedded DNS server: user-defined bridge networks
/// only, as Docker.
pub fn serves_dns(n: &NetworkRecord) -> bool {
    !n.default && n.driver == "bridge"
}

/// `n` as the DNS server sees it. Its `io.shibafu.network.dns` option
/// (validated at network create) gives its own upstreams.
pub fn network_dns(n: &NetworkRecord) -> NetworkDns {
    let forwarders = match n.options.get(shibafu_api::labels::NETWORK_DNS) {
        Some(v) => crate::services::parse_network_dns(v).unwrap_or_else(|e| {
            tracing::warn!(network = %n.name, error = %e, "network DNS forwarders ignored");
            Vec::new()
        }),
        None => Vec::new(),
    };
    NetworkDns {
        id: n.id.clone(),
        name: n.name.clone(),
        zone: None,
        listen: n.subnets.iter().map(|s| s.gateway).collect(),
        subnets: n.subnets(),
        internal: n.internal,
        forwarders,
    }
}

/// The `/etc/resolv.conf` of a container on user-defined networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConf {
    /// The gateways of its user networks, the primary network's first.
    pub nameservers: Vec<IpAddr>,
    /// The zone of its first served network (`web.local`).
    pub search: Vec<String>,
}

/// glibc and musl read at most three `nameserver` lines.
const MAX_NAMESERVERS: usize = 3;

/// resolv.conf pointing at the embedded server. As Docker with its
/// embedded DNS: `--dns` does not replace the nameserver (those servers
/// become the container's upstreams, see [`build_table`]); `--dns-search`
/// replaces the search list; `--dns-option` replaces the options, with
/// `ndots:0` added unless they set ndots themselves.
pub fn embedded_resolv_conf(r: &ResolverConf, search: &[String], opts: &[String]) -> String {
    let mut out = String::new();
    for ns in r.nameservers.iter().take(MAX_NAMESERVERS) {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    let search: Vec<&str> = if search.is_empty() {
        r.search.iter().map(String::as_str).collect()
    } else {
        search.iter().map(String::as_str).collect()
    };
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    let mut options: Vec<&str> = opts.iter().map(String::as_str).collect();
    if !options.iter().any(|o| o.starts_with("ndots:")) {
        options.insert(0, "ndots:0");
    }
    out.push_str(&format!("options {}\n", options.join(" ")));
    out
}

/// The resolver of a container whose networks are `attached` (in order):
/// `None` when none of them is served (default bridge only, or no network).
pub fn resolver_for(attached: &[&NetworkRecord], zone_suffix: &str) -> Option<ResolverConf> {
    let served: Vec<&&NetworkRecord> = attached.iter().filter(|n| serves_dns(n)).collect();
    if served.is_empty() {
        return None;
    }
    let mut nameservers: Vec<IpAddr> = Vec::new();
    // IPv4 gateways first: every container has IPv4, IPv6 is optional.
    for v6 in [false, true] {
        for n in &served {
            for s in &n.subnets {
                if s.gateway.is_ipv6() == v6 && !nameservers.contains(&s.gateway) {
                    nameservers.push(s.gateway);
                }
            }
        }
    }
    // Search: the first served network's zone only. Bare names of every
    // network the container is on already answer (ndots:0 asks them as
    // they are first); more zones would only add NXDOMAIN rounds, which
    // some clients (busybox nslookup) report as failures.
    let suffix = zone_suffix.trim_matches('.');
    let search = served
        .first()
        .map(|n| format!("{}.{suffix}", n.name))
        .into_iter()
        .collect();
    Some(ResolverConf {
        nameservers,
        search,
    })
}

/// `--dns` entries as upstream addresses (`ip` or `ip:port`, port 53 by
/// default); entries that are not addresses are skipped.
fn dns_servers(rec: &ContainerRecord) -> Vec<SocketAddr> {
    rec.host_config
        .dns
        .iter()
        .flatten()
        .filter_map(|d| parse_server(d))
        .collect()
}

/// `ip`, `ip:port`, `[v6]:port` -> a socket address (port 53 when absent).
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>().ok()
}

/// EXPOSEd, published and `--service-port` container ports (SRV records).
pub(crate) fn container_ports(
    rec: &ContainerRecord,
    svc: &crate::services::ServiceLabels,
) -> Vec<(u16, Proto)> {
    let mut out: Vec<(u16, Proto)> = Vec::new();
    // A set beside the list: a container may publish a thousand ports, and
    // this runs for every container at every table rebuild.
    let mut seen: HashSet<(u16, Proto)> = HashSet::new();
    let exposed = rec
        .config
        .exposed_ports
        .iter()
        .flatten()
        .map(String::as_str);
    let bound = rec
        .host_config
        .port_bindings
        .iter()
        .flat_map(|m| m.keys())
        .map(String::as_str);
    for p in exposed.chain(bound) {
        let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        // A range ("8000-8010/tcp") is published, not a service port.
        let (Ok(port), Ok(proto)) = (port.parse::<u16>(), proto.parse::<Proto>()) else {
            continue;
        };
        if seen.insert((port, proto)) {
            out.push((port, proto));
        }
    }
    for p in &svc.ports {
        if seen.insert(*p) {
            out.push(*p);
        }
    }
    out
}

/// The record table: every live container's endpoint on every served
/// network, and the configured CNAMEs. `endpoints` maps container ID -> its
/// endpoints (network store).
pub fn build_table(
    containers: &[ContainerRecord],
    endpoints: &HashMap<String, Vec<NetEndpoint>>,
    served: &[String],
    cnames: Vec<Cname>,
) -> Table {
    let mut table = Table {
        cnames,
        ..Default::default()
    };
    let mut containers: Vec<&ContainerRecord> = containers
        .iter()
        .filter(|c| c.state.status.is_live())
        .collect();
    containers.sort_by(|a, b| a.id.cmp(&b.id));
    for c in containers {
        let Some(eps) = endpoints.get(&c.id) else {
            continue;
        };
        let healthy = crate::services::in_answers(c);
        let hostname = c.config.hostname.clone().filter(|h| !h.is_empty());
        let svc = crate::services::services_of(c);
        let weighted: Vec<(String, u16)> = svc
            .services
            .iter()
            .map(|s| (s.clone(), svc.weight))
            .collect();
        let ports = container_ports(c, &svc);
        let dns = dns_servers(c);
        for e in eps.iter().filter(|e| served.contains(&e.network_id)) {
            let v4 = e.addresses.iter().find_map(|a| match a.addr() {
                IpAddr::V4(v) => Some(v),
                IpAddr::V6(_) => None,
            });
            let v6 = e.addresses.iter().find_map(|a| match a.addr() {
                IpAddr::V6(v) => Some(v),
                IpAddr::V4(_) => None,
            });
            table.endpoints.push(Endpoint {
                container_id: c.id.clone(),
                name: c.name.trim_start_matches('/').to_string(),
                hostname: hostname.clone(),
                aliases: e.aliases.clone(),
                services: weighted.clone(),
                network_id: e.network_id.clone(),
                ipv4: v4,
                ipv6: v6,
                ports: ports.clone(),
                healthy,
                dns_servers: dns.clone(),
            });
        }
    }
    table
}

/// Serve every user-defined network of `nets`, stop serving removed ones,
/// follow changed gateways. Returns one message per failure (the rest is
/// done).
pub fn sync_networks(server: &DnsServer, nets: &BridgeNetworks) -> Vec<String> {
    let mut errs = Vec::new();
    let want: Vec<NetworkDns> = match nets.networks() {
        Ok(ns) => ns
            .iter()
            .filter(|n| serves_dns(n))
            .map(network_dns)
            .collect(),
        Err(e) => return vec![format!("listing networks: {e}")],
    };
    let have: HashMap<String, NetworkDns> = server
        .networks()
        .into_iter()
        .map(|n| (n.id.clone(), n))
        .collect();
    for id in have.keys() {
        if !want.iter().any(|n| &n.id == id) {
            if let Err(e) = server.stop_network(id) {
                errs.push(format!("stopping DNS of network {id}: {e}"));
            }
        }
    }
    for n in want {
        let name = n.name.clone();
        let r = match have.get(&n.id) {
            None => server.serve_network(n),
            Some(old) if *old != n => server.update_network(n),
            Some(_) => Ok(()),
        };
        if let Err(e) = r {
            errs.push(format!("DNS for network {name}: {e}"));
        }
    }
    errs
}

/// A configured CNAME (the daemon config's `dns.cnames`): `name` answers
/// as an alias of `target`, in the network named `network` or in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnameConfig {
    pub name: String,
    pub target: String,
    /// A network name (or ID); `None`: every served network.
    pub network: Option<String>,
}

/// The configured CNAMEs for the table: networks named by the config are
/// mapped to the served networks' IDs (names can be reused by a new
/// network, so this is redone at every rebuild). Returns the CNAMEs and
/// the networks that are not served (their CNAMEs are skipped).
pub fn resolve_cnames(cfg: &[CnameConfig], served: &[NetworkDns]) -> (Vec<Cname>, Vec<String>) {
    let mut out = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    for c in cfg {
        let network_id = match &c.network {
            None => None,
            Some(key) => match served.iter().find(|n| n.name == *key || n.id == *key) {
                Some(n) => Some(n.id.clone()),
                None => {
                    if !unknown.contains(key) {
                        unknown.push(key.clone());
                    }
                    continue;
                }
            },
        };
        out.push(Cname {
            network_id,
            name: c.name.clone(),
            target: c.target.clone(),
        });
    }
    (out, unknown)
}

/// What the table and the service views are computed from.
struct Snapshot {
    containers: Vec<ContainerRecord>,
    /// Container ID -> its endpoints on served networks.
    endpoints: HashMap<String, Vec<NetEndpoint>>,
    served: Vec<NetworkDns>,
}

/// Keeps the DNS server's networks and records in step with the engine,
/// and serves the services and dns-trace routes from the same data.
pub struct DnsService {
    engine: Arc<Engine>,
    nets: Arc<BridgeNetworks>,
    server: Arc<DnsServer>,
    zone_suffix: String,
    cnames: Vec<CnameConfig>,
    /// CNAME networks already reported missing: warned once, not at
    /// every rebuild.
    warned: parking_lot::Mutex<std::collections::HashSet<String>>,
}

/// Container events that change what the DNS answers.
const CONTAINER_ACTIONS: [&str; 8] = [
    "start", "die", "stop", "rename", "destroy", "pause", "unpause", "restart",
];

/// Whether `e` may change the networks or the records.
fn relevant(e: &EventMessage) -> bool {
    let action = e.action.as_deref().unwrap_or_default();
    match e.typ {
        Some(EventMessageTypeEnum::CONTAINER) => {
            CONTAINER_ACTIONS.contains(&action) || action.starts_with("health_status")
        }
        Some(EventMessageTypeEnum::NETWORK) => true,
        _ => false,
    }
}

impl DnsService {
    /// A service with the default zone suffix and no configured CNAMEs.
    pub fn new(engine: Arc<Engine>, nets: Arc<BridgeNetworks>, server: Arc<DnsServer>) -> Self {
        DnsService {
            engine,
            nets,
            server,
            zone_suffix: shibafu_dns::DEFAULT_ZONE_SUFFIX.to_string(),
            cnames: Vec::new(),
            warned: Default::default(),
        }
    }

    /// The zone suffix the server was configured with (for service FQDNs).
    pub fn with_zone_suffix(mut self, suffix: &str) -> Self {
        self.zone_suffix = suffix.trim_matches('.').to_string();
        self
    }

    /// The configured CNAMEs (daemon config `dns.cnames`).
    pub fn with_cnames(mut self, cnames: Vec<CnameConfig>) -> Self {
        self.cnames = cnames;
        self
    }

    /// [`sync_networks`] for this service's server.
    pub fn sync_networks(&self) -> Vec<String> {
        sync_networks(&self.server, &self.nets)
    }

    /// Reads the engine and the network store (blocking: redb).
    fn snapshot(&self) -> Snapshot {
        let served = self.server.networks();
        let containers = self.engine.containers();
        // One read of the network store for all served networks.
        let served_ids: HashSet<&str> = served.iter().map(|n| n.id.as_str()).collect();
        let mut endpoints: HashMap<String, Vec<NetEndpoint>> = HashMap::new();
        match self.nets.container_endpoints() {
            Ok(all) => {
                for (cid, eps) in all {
                    let eps: Vec<NetEndpoint> = eps
                        .into_iter()
                        .filter(|e| served_ids.contains(e.network_id.as_str()))
                        .collect();
                    if !eps.is_empty() {
                        endpoints.insert(cid, eps);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "DNS: reading endpoints"),
        }
        Snapshot {
            containers,
            endpoints,
            served,
        }
    }

    /// Rebuild the record table from the engine and the network store.
    pub fn rebuild(&self) {
        let snap = self.snapshot();
        let (cnames, unknown) = resolve_cnames(&self.cnames, &snap.served);
        {
            let mut warned = self.warned.lock();
            for n in unknown {
                if warned.insert(n.clone()) {
                    tracing::warn!(network = %n, "DNS: configured CNAMEs of a network that has no DNS (unknown or not user-defined) are skipped");
                }
            }
        }
        let ids: Vec<String> = snap.served.iter().map(|n| n.id.clone()).collect();
        let table = build_table(&snap.containers, &snap.endpoints, &ids, cnames);
        for e in self.server.set_table(table) {
            tracing::warn!(error = %e, "DNS: record skipped");
        }
    }

    /// Follow the engine's changes until the task is aborted: serve the
    /// networks and build the table now, then once per burst of changes.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        // Subscribed before the first build: nothing between is missed.
        let mut rx = self.engine.events.raw_subscribe();
        tokio::spawn(async move {
            self.refresh(true).await;
            loop {
                let networks = match rx.recv().await {
                    Ok(e) if relevant(&e) => e.typ == Some(EventMessageTypeEnum::NETWORK),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                };
                // Coalesce whatever else is already queued.
                let mut networks = networks;
                loop {
                    match rx.try_recv() {
                        Ok(e) => networks |= e.typ == Some(EventMessageTypeEnum::NETWORK),
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                            networks = true
                        }
                        Err(_) => break,
                    }
                }
                self.refresh(networks).await;
            }
        })
    }

    /// Reads the stores off the async threads (redb reads block).
    async fn refresh(self: &Arc<Self>, networks: bool) {
        let me = self.clone();
        let r = tokio::task::spawn_blocking(move || {
            if networks {
                for e in me.sync_networks() {
                    tracing::warn!("{e}");
                }
            }
            me.rebuild();
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "DNS table rebuild task");
        }
    }

    fn views(&self) -> Vec<ServiceView> {
        let snap = self.snapshot();
        crate::services::service_views(
            &snap.containers,
            &snap.endpoints,
            &snap.served,
            &self.zone_suffix,
        )
    }

    /// Who a trace asks as (see [`shibafu_api::DnsTraceQuery`]).
    fn trace_requester(&self, q: &DnsTraceQuery) -> ApiResult<Requester> {
        let served = self.server.networks();
        let no_dns = |name: &str| {
            ApiError::InvalidArgument(format!(
                "network {name} has no embedded DNS (only user-defined bridge networks do)"
            ))
        };
        match (&q.from, &q.network) {
            (Some(_), Some(_)) => Err(ApiError::InvalidArgument(
                "give either a container (from) or a network, not both".into(),
            )),
            (Some(key), None) => {
                let rec = self.engine.container(key)?;
                let eps = self
                    .nets
                    .endpoints(&rec.id)
                    .map_err(crate::netsvc::api_error)?;
                let on_served = |e: &&NetEndpoint| served.iter().any(|n| n.id == e.network_id);
                let v4 = |e: &NetEndpoint| {
                    e.addresses.iter().find_map(|a| match a.addr() {
                        IpAddr::V4(v) => Some(IpAddr::V4(v)),
                        IpAddr::V6(_) => None,
                    })
                };
                // Its networks in their order (the first is eth0).
                let ordered = rec
                    .networks
                    .iter()
                    .filter_map(|a| eps.endpoints.iter().find(|e| e.network_id == a.network_id))
                    .chain(eps.endpoints.iter());
                match ordered.filter(on_served).find_map(v4) {
                    Some(ip) => Ok(Requester::Address(ip)),
                    None => Err(ApiError::InvalidArgument(format!(
                        "container {} is not on a network with embedded DNS{}",
                        rec.name.trim_start_matches('/'),
                        if rec.state.status.is_live() {
                            ""
                        } else {
                            " (it is not running)"
                        }
                    ))),
                }
            }
            (None, Some(key)) => {
                if matches!(key.as_str(), "host" | "none") {
                    return Err(no_dns(key));
                }
                let n = self.nets.network(key).map_err(crate::netsvc::api_error)?;
                if !served.iter().any(|s| s.id == n.id) {
                    return Err(no_dns(&n.name));
                }
                Ok(Requester::Network(n.id))
            }
            (None, None) => served
                .iter()
                .min_by(|a, b| a.name.cmp(&b.name))
                .map(|n| Requester::Network(n.id.clone()))
                .ok_or_else(|| {
                    ApiError::InvalidArgument(
                        "no network has embedded DNS: create a user-defined network first".into(),
                    )
                }),
        }
    }
}

#[async_trait::async_trait]
impl shibafu_api::DnsBackend for DnsService {
    async fn service_list(&self, network: Option<String>) -> ApiResult<Vec<ServiceView>> {
        let only = match network.as_deref() {
            None => None,
            Some(key @ ("host" | "none")) => {
                return Err(ApiError::NotFound(format!("network {key} has no services")))
            }
            Some(key) => Some(self.nets.network(key).map_err(crate::netsvc::api_error)?.id),
        };
        let mut v = self.views();
        if let Some(id) = only {
            v.retain(|s| s.network_id == id);
        }
        Ok(v)
    }

    async fn service_inspect(&self, name: &str) -> ApiResult<Vec<ServiceView>> {
        let want = name.trim_end_matches('.').to_ascii_lowercase();
        let v: Vec<ServiceView> = self
            .views()
            .into_iter()
            .filter(|s| s.name == want)
            .collect();
        if v.is_empty() {
            return Err(ApiError::NotFound(format!("No such service: {name}")));
        }
        Ok(v)
    }

    async fn dns_trace(&self, q: DnsTraceQuery) -> ApiResult<serde_json::Value> {
        if q.name.trim().is_empty() {
            return Err(ApiError::InvalidArgument(
                "no name to look up (name)".into(),
            ));
        }
        let qtype = q
            .qtype
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .unwrap_or("A")
            .to_ascii_uppercase();
        let from = self.trace_requester(&q)?;
        let report = self
            .server
            .dns_trace(q.name.trim(), &qtype, from)
            .await
            .map_err(|e| match e {
                shibafu_dns::DnsError::UnsupportedType(_)
                | shibafu_dns::DnsError::InvalidName { .. } => {
                    ApiError::InvalidArgument(e.to_string())
                }
                shibafu_dns::DnsError::NotServed(_) => ApiError::NotFound(e.to_string()),
                _ => ApiError::Internal(e.to_string()),
            })?;
        serde_json::to_value(report).map_err(|e| ApiError::Internal(format!("trace report: {e}")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{HealthState, HealthStatus, NetMode, Status};
    use shibafu_net::ipam::SubnetConfig;

    fn net(name: &str, gw: &str, default: bool) -> NetworkRecord {
        let gateway: IpAddr = gw.parse().unwrap();
        let subnet: ipnet::IpNet = format!("{gw}/24").parse::<ipnet::IpNet>().unwrap().trunc();
        NetworkRecord {
            id: format!("id-{name}"),
            name: name.into(),
            driver: "bridge".into(),
            subnets: vec![SubnetConfig {
                subnet,
                gateway,
                ip_range: None,
            }],
            ipv6: false,
            internal: false,
            attachable: false,
            labels: Default::default(),
            options: Default::default(),
            created: chrono::Utc::now(),
            bridge: "br-x".into(),
            mtu: None,
            default,
        }
    }

    #[test]
    fn resolver_points_at_user_networks_only() {
        let b = net("bridge", "172.17.0.1", true);
        let web = net("web", "10.1.0.1", false);
        let db = net("db", "10.2.0.1", false);
        assert_eq!(resolver_for(&[&b], "local"), None);
        let r = resolver_for(&[&web, &b, &db], "local").unwrap();
        assert_eq!(
            r.nameservers,
            vec![
                "10.1.0.1".parse::<IpAddr>().unwrap(),
                "10.2.0.1".parse().unwrap()
            ]
        );
        assert_eq!(r.search, vec!["web.local"]);
        assert_eq!(
            embedded_resolv_conf(&r, &[], &[]),
            "nameserver 10.1.0.1\nnameserver 10.2.0.1\nsearch web.local\noptions ndots:0\n"
        );
        assert_eq!(
            embedded_resolv_conf(&r, &["corp.example".into()], &["ndots:2".into(), "rotate".into()]),
            "nameserver 10.1.0.1\nnameserver 10.2.0.1\nsearch corp.example\noptions ndots:2 rotate\n"
        );
        assert_eq!(
            embedded_resolv_conf(&r, &[], &["timeout:1".into()]),
            "nameserver 10.1.0.1\nnameserver 10.2.0.1\nsearch web.local\noptions ndots:0 timeout:1\n"
        );
    }

    fn ctr(id: &str, name: &str, status: Status) -> ContainerRecord {
        let mut c = ContainerRecord {
            id: id.into(),
            name: format!("/{name}"),
            network: NetMode::Network("web".into()),
            ..Default::default()
        };
        c.state.status = status;
        c.config.hostname = Some(format!("{name}-host"));
        c.config.exposed_ports = Some(vec!["80/tcp".into(), "8000-8001/tcp".into()]);
        c.host_config.dns = Some(vec!["192.0.2.53".into(), "bogus".into()]);
        c
    }

    /// An endpoint of a container on `net` (shared with services.rs's tests).
    pub(crate) fn ep(net: &str, ip: &str, aliases: &[&str]) -> NetEndpoint {
        NetEndpoint {
            network_id: format!("id-{net}"),
            network_name: net.into(),
            endpoint_id: "e".into(),
            ifname: "eth0".into(),
            host_veth: "v".into(),
            mac: "02:00:00:00:00:01".into(),
            addresses: vec![format!("{ip}/24").parse().unwrap()],
            gateways: vec![],
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            static_ips: vec![],
            is_gateway: true,
        }
    }

    #[test]
    fn table_has_live_containers_on_served_networks() {
        let mut sick = ctr("c3", "sick", Status::Running);
        sick.state.health = Some(HealthState {
            status: HealthStatus::Unhealthy,
            ..Default::default()
        });
        let cs = vec![
            ctr("c1", "web1", Status::Running),
            ctr("c2", "gone", Status::Exited),
            sick,
        ];
        let eps = HashMap::from([
            (
                "c1".to_string(),
                vec![
                    ep("web", "10.1.0.2", &["api"]),
                    ep("bridge", "172.17.0.2", &[]),
                ],
            ),
            ("c2".to_string(), vec![ep("web", "10.1.0.3", &[])]),
            ("c3".to_string(), vec![ep("web", "10.1.0.4", &[])]),
        ]);
        let t = build_table(&cs, &eps, &["id-web".to_string()], vec![]);
        assert_eq!(t.endpoints.len(), 2);
        let e = &t.endpoints[0];
        assert_eq!(e.name, "web1");
        assert_eq!(e.hostname.as_deref(), Some("web1-host"));
        assert_eq!(e.aliases, vec!["api"]);
        assert_eq!(e.network_id, "id-web");
        assert_eq!(e.ipv4, Some("10.1.0.2".parse().unwrap()));
        assert_eq!(e.ports, vec![(80, Proto::Tcp)]);
        assert_eq!(e.dns_servers, vec!["192.0.2.53:53".parse().unwrap()]);
        assert!(e.healthy);
        assert_eq!(t.endpoints[1].name, "sick");
        assert!(!t.endpoints[1].healthy);
    }

    #[test]
    fn table_carries_services_ports_health_and_cnames() {
        use shibafu_api::labels;
        let mut a = ctr("a", "a1", Status::Running);
        a.config.labels = Some(HashMap::from([
            (labels::SERVICE.to_string(), "api,Web".to_string()),
            (labels::SERVICE_WEIGHT.to_string(), "3".to_string()),
            (labels::SERVICE_PORTS.to_string(), "9000/udp,80".to_string()),
        ]));
        let mut starting = ctr("b", "b1", Status::Running);
        starting.state.health = Some(HealthState::default());
        let mut healthy = ctr("c", "c1", Status::Running);
        healthy.state.health = Some(HealthState {
            status: HealthStatus::Healthy,
            ..Default::default()
        });
        let eps = HashMap::from([
            ("a".to_string(), vec![ep("web", "10.1.0.2", &[])]),
            ("b".to_string(), vec![ep("web", "10.1.0.3", &[])]),
            ("c".to_string(), vec![ep("web", "10.1.0.4", &[])]),
        ]);
        let cnames = vec![Cname {
            network_id: Some("id-web".into()),
            name: "db".into(),
            target: "a1".into(),
        }];
        let t = build_table(
            &[a, starting, healthy],
            &eps,
            &["id-web".to_string()],
            cnames.clone(),
        );
        assert_eq!(t.cnames, cnames);
        let e = &t.endpoints[0];
        assert_eq!(
            e.services,
            vec![("api".to_string(), 3), ("web".to_string(), 3)]
        );
        assert_eq!(e.ports, vec![(80, Proto::Tcp), (9000, Proto::Udp)]);
        assert!(e.healthy);
        assert!(
            t.endpoints[1].healthy,
            "starting: in answers until a check fails"
        );
        assert!(t.endpoints[1].services.is_empty());
        assert!(t.endpoints[2].healthy);
    }

    #[test]
    fn cnames_map_network_names_to_served_ids() {
        let served = vec![network_dns(&net("backend", "10.5.0.1", false))];
        let cfg = vec![
            CnameConfig {
                name: "db".into(),
                target: "postgres".into(),
                network: Some("backend".into()),
            },
            CnameConfig {
                name: "www".into(),
                target: "web".into(),
                network: None,
            },
            CnameConfig {
                name: "x".into(),
                target: "y".into(),
                network: Some("gone".into()),
            },
        ];
        let (c, unknown) = resolve_cnames(&cfg, &served);
        assert_eq!(
            c,
            vec![
                Cname {
                    network_id: Some("id-backend".into()),
                    name: "db".into(),
                    target: "postgres".into()
                },
                Cname {
                    network_id: None,
                    name: "www".into(),
                    target: "web".into()
                },
            ]
        );
        assert_eq!(unknown, vec!["gone"]);
    }

    #[test]
    fn network_forwarders_come_from_its_option() {
        let mut n = net("ext", "10.6.0.1", false);
        assert!(network_dns(&n).forwarders.is_empty());
        n.options.insert(
            shibafu_api::labels::NETWORK_DNS.into(),
            "127.0.0.9,127.0.0.10:5353".into(),
        );
        assert_eq!(
            network_dns(&n).forwarders,
            vec![
                "127.0.0.9:53".parse::<SocketAddr>().unwrap(),
                "127.0.0.10:5353".parse().unwrap()
            ]
        );
        n.options
            .insert(shibafu_api::labels::NETWORK_DNS.into(), "bogus".into());
        assert!(
            network_dns(&n).forwarders.is_empty(),
            "bad value: ignored, not fatal"
        );
    }

    #[test]
    fn servers_parse() {
        assert_eq!(
            parse_server("127.0.0.5"),
            Some("127.0.0.5:53".parse().unwrap())
        );
        assert_eq!(
            parse_server("127.0.0.5:5353"),
            Some("127.0.0.5:5353".parse().unwrap())
        );
        assert_eq!(parse_server("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse_server("[::1]:54"), Some("[::1]:54".parse().unwrap()));
        assert_eq!(parse_server("x"), None);
    }
}
