//! Embedded DNS wiring: [`DnsService`] keeps `shibafu-dns`'s
//! [`DnsServer`] in step with the engine. It serves every user-defined
//! bridge network on its gateways (the default `bridge` keeps Docker's
//! behaviour: no names) and rebuilds the record table from the engine's
//! containers and the network store whenever the engine reports a change
//! (start, die, stop, rename, destroy, health, network connect/disconnect,
//! network create/destroy). Changes that arrive while a rebuild runs are
//! coalesced into one more rebuild.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bollard_stubs::models::{EventMessage, EventMessageTypeEnum};
use shibafu_dns::{DnsServer, Endpoint, NetworkDns, Proto, Table};
use shibafu_net::bridge::BridgeNetworks;
use shibafu_net::store::{Endpoint as NetEndpoint, NetworkRecord};
use tokio::sync::broadcast::error::RecvError;

use crate::model::{ContainerRecord, HealthStatus};
use crate::Engine;

/// Whether `n` gets an embedded DNS server: user-defined bridge networks
/// only, as Docker.
pub fn serves_dns(n: &NetworkRecord) -> bool {
    !n.default && n.driver == "bridge"
}

/// `n` as the DNS server sees it.
pub fn network_dns(n: &NetworkRecord) -> NetworkDns {
    NetworkDns {
        id: n.id.clone(),
        name: n.name.clone(),
        zone: None,
        listen: n.subnets.iter().map(|s| s.gateway).collect(),
        subnets: n.subnets(),
        internal: n.internal,
        forwarders: Vec::new(),
    }
}

/// The `/etc/resolv.conf` of a container on user-defined networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConf {
    /// The gateways of its user networks, the primary network's first.
    pub nameservers: Vec<IpAddr>,
    /// The zones of those networks (`web.local`), same order.
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
    let suffix = zone_suffix.trim_matches('.');
    let search = served
        .iter()
        .map(|n| format!("{}.{suffix}", n.name))
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

/// EXPOSEd and published container ports (SRV records).
fn container_ports(rec: &ContainerRecord) -> Vec<(u16, Proto)> {
    let mut out: Vec<(u16, Proto)> = Vec::new();
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
        if !out.contains(&(port, proto)) {
            out.push((port, proto));
        }
    }
    out
}

/// The record table: every live container's endpoint on every served
/// network. `endpoints` maps container ID -> its endpoints (network store).
pub fn build_table(
    containers: &[ContainerRecord],
    endpoints: &HashMap<String, Vec<NetEndpoint>>,
    served: &[String],
) -> Table {
    let mut table = Table::default();
    let mut containers: Vec<&ContainerRecord> = containers
        .iter()
        .filter(|c| c.state.status.is_live())
        .collect();
    containers.sort_by(|a, b| a.id.cmp(&b.id));
    for c in containers {
        let Some(eps) = endpoints.get(&c.id) else {
            continue;
        };
        let healthy = c
            .state
            .health
            .as_ref()
            .is_none_or(|h| h.status != HealthStatus::Unhealthy);
        let hostname = c.config.hostname.clone().filter(|h| !h.is_empty());
        let ports = container_ports(c);
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
                services: Vec::new(),
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

/// Keeps the DNS server's networks and records in step with the engine.
pub struct DnsService {
    engine: Arc<Engine>,
    nets: Arc<BridgeNetworks>,
    server: Arc<DnsServer>,
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
    pub fn new(engine: Arc<Engine>, nets: Arc<BridgeNetworks>, server: Arc<DnsServer>) -> Self {
        DnsService {
            engine,
            nets,
            server,
        }
    }

    /// [`sync_networks`] for this service's server.
    pub fn sync_networks(&self) -> Vec<String> {
        sync_networks(&self.server, &self.nets)
    }

    /// Rebuild the record table from the engine and the network store.
    pub fn rebuild(&self) {
        let served: Vec<String> = self.server.networks().into_iter().map(|n| n.id).collect();
        let containers = self.engine.containers();
        let mut endpoints: HashMap<String, Vec<NetEndpoint>> = HashMap::new();
        for id in &served {
            match self.nets.network_endpoints(id) {
                Ok(eps) => {
                    for (cid, e) in eps {
                        endpoints.entry(cid).or_default().push(e);
                    }
                }
                Err(e) => tracing::warn!(network = %id, error = %e, "DNS: reading endpoints"),
            }
        }
        let table = build_table(&containers, &endpoints, &served);
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
}

// TRANSIENT (lead): replaced by helper "dnsengine" with the real implementation.
#[async_trait::async_trait]
impl shibafu_api::DnsBackend for DnsService {
    async fn service_list(
        &self,
        _n: Option<String>,
    ) -> shibafu_api::ApiResult<Vec<shibafu_api::ServiceView>> {
        Err(shibafu_api::ApiError::Internal("services: not wired yet".into()))
    }
    async fn service_inspect(
        &self,
        _name: &str,
    ) -> shibafu_api::ApiResult<Vec<shibafu_api::ServiceView>> {
        Err(shibafu_api::ApiError::Internal("services: not wired yet".into()))
    }
    async fn dns_trace(
        &self,
        _q: shibafu_api::DnsTraceQuery,
    ) -> shibafu_api::ApiResult<serde_json::Value> {
        Err(shibafu_api::ApiError::Internal("dns-trace: not wired yet".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HealthState, NetMode, Status};
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
        assert_eq!(r.search, vec!["web.local", "db.local"]);
        assert_eq!(
            embedded_resolv_conf(&r, &[], &[]),
            "nameserver 10.1.0.1\nnameserver 10.2.0.1\nsearch web.local db.local\noptions ndots:0\n"
        );
        assert_eq!(
            embedded_resolv_conf(&r, &["corp.example".into()], &["ndots:2".into(), "rotate".into()]),
            "nameserver 10.1.0.1\nnameserver 10.2.0.1\nsearch corp.example\noptions ndots:2 rotate\n"
        );
        assert_eq!(
            embedded_resolv_conf(&r, &[], &["timeout:1".into()]),
            "nameserver 10.1.0.1\nnameserver 10.2.0.1\nsearch web.local db.local\noptions ndots:0 timeout:1\n"
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

    fn ep(net: &str, ip: &str, aliases: &[&str]) -> NetEndpoint {
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
        let t = build_table(&cs, &eps, &["id-web".to_string()]);
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
