//! [`NetworkService`]: the API's [`NetworkBackend`] over `shibafu-net`'s
//! [`BridgeNetworks`] and the engine's containers (names for messages,
//! `network connect`/`disconnect` of running and stopped containers,
//! events on the engine's bus).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use bollard_stubs::models::{
    EndpointResource, EventMessageTypeEnum, Ipam, IpamConfig, NetworkConnectRequest,
    NetworkCreateRequest, NetworkCreateResponse, NetworkDisconnectRequest, NetworkInspect,
    NetworkPruneResponse,
};
use sha2::Digest;
use shibafu_api::{
    ApiError, ApiResult, Filters, NetworkBackend, NetworkPolicy, NetworkReloadReport, NetworkView,
};
use shibafu_net::bridge::{
    BridgeError, BridgeNetworks, CreateNetwork, EndpointRequest, PolicyRuleSpec,
};
use shibafu_net::ipam::{IpamError, SubnetRequest};
use shibafu_net::ports::PortError;
use shibafu_net::ports::Proto;
use shibafu_net::store::{NetworkRecord, PolicyRecord, StoreError};

use crate::model::{ContainerRecord, NetMode};
use crate::network::{attachment, NetworkRef};
use crate::views::{date, label_match};
use crate::Engine;

/// The network routes' backend (see module doc).
pub struct NetworkService {
    engine: Arc<Engine>,
    nets: Arc<BridgeNetworks>,
}

/// The predefined networks that are modes, not bridges.
const PSEUDO: [&str; 2] = ["host", "none"];

/// Stable IDs for `host` and `none` (Docker makes random ones at install).
fn pseudo_id(name: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!("shibafu-network-{name}")))
}

/// A net-crate error as the API's: bad input 400, conflicts 409, unknown
/// networks 404, the rest (kernel, nft, stores) 500.
pub fn api_error(e: BridgeError) -> ApiError {
    use BridgeError as B;
    let m = e.to_string();
    match e {
        B::Store(StoreError::NotFound(_))
        | B::Store(StoreError::PolicyNotFound(_))
        | B::Ipam(IpamError::UnknownNetwork(_)) => ApiError::NotFound(m),
        B::Store(StoreError::NameExists(_))
        | B::Store(StoreError::PolicyExists(_))
        | B::Predefined(_)
        | B::BridgeInUse { .. }
        | B::InUse { .. }
        | B::AlreadyAttached { .. }
        | B::NotAttached { .. }
        | B::Ipam(IpamError::AddressInUse { .. })
        | B::Ipam(IpamError::NetworkInUse { .. })
        | B::Port(PortError::AlreadyAllocated { .. })
        | B::Port(PortError::HostInUse { .. }) => ApiError::Conflict(m),
        B::Store(StoreError::Store(_))
        | B::Ipam(IpamError::Store(_))
        | B::Link(_)
        | B::Firewall(_)
        | B::RemovePartial { .. } => ApiError::Internal(m),
        _ => ApiError::InvalidArgument(m),
    }
}

impl NetworkService {
    pub fn new(engine: Arc<Engine>, nets: Arc<BridgeNetworks>) -> Self {
        NetworkService { engine, nets }
    }

    fn event(&self, action: &str, id: &str, name: &str, extra: &[(&str, &str)]) {
        let mut attrs = HashMap::from([
            ("name".to_string(), name.to_string()),
            ("type".to_string(), "bridge".to_string()),
        ]);
        for (k, v) in extra {
            attrs.insert(k.to_string(), v.to_string());
        }
        self.engine
            .emit_event(EventMessageTypeEnum::NETWORK, action, id, attrs);
    }

    fn container_name(&self, id: &str) -> String {
        self.engine
            .container(id)
            .map(|r| r.name)
            .unwrap_or_else(|_| id[..12.min(id.len())].to_string())
    }

    /// A bridge network as Docker shows it, with its containers.
    fn view(&self, n: &NetworkRecord) -> ApiResult<NetworkView> {
        let eps = self.nets.network_endpoints(&n.id).map_err(api_error)?;
        let containers = eps
            .into_iter()
            .map(|(cid, e)| {
                let res = EndpointResource {
                    name: Some(self.container_name(&cid)),
                    endpoint_id: Some(e.endpoint_id.clone()),
                    mac_address: Some(e.mac.clone()),
                    ipv4_address: Some(e.ip(false).map(|a| a.to_string()).unwrap_or_default()),
                    ipv6_address: Some(e.ip(true).map(|a| a.to_string()).unwrap_or_default()),
                };
                (cid, res)
            })
            .collect();
        let ipam_config = n
            .subnets
            .iter()
            .map(|s| IpamConfig {
                subnet: Some(s.subnet.to_string()),
                ip_range: s.ip_range.map(|r| r.to_string()),
                gateway: Some(s.gateway.to_string()),
                auxiliary_addresses: None,
            })
            .collect();
        Ok(NetworkView {
            network: NetworkInspect {
                name: Some(n.name.clone()),
                id: Some(n.id.clone()),
                created: Some(date(&n.created)),
                scope: Some("local".into()),
                driver: Some(n.driver.clone()),
                enable_ipv4: Some(true),
                enable_ipv6: Some(n.ipv6),
                ipam: Some(Ipam {
                    driver: Some("default".into()),
                    config: Some(ipam_config),
                    options: Some(HashMap::new()),
                }),
                internal: Some(n.internal),
                attachable: Some(n.attachable),
                ingress: Some(false),
                config_from: Some(bollard_stubs::models::ConfigReference {
                    network: Some(String::new()),
                }),
                config_only: Some(false),
                options: Some(n.options.clone().into_iter().collect()),
                labels: Some(n.labels.clone().into_iter().collect()),
                peers: None,
                containers: Some(containers),
                services: None,
                status: None,
            },
            policies: self
                .nets
                .policies()
                .map_err(api_error)?
                .iter()
                .filter(|p| p.network == n.id)
                .map(|p| self.policy_view(p))
                .collect::<ApiResult<_>>()?,
        })
    }

    /// `host` or `none`, with the running containers in that mode.
    fn pseudo_view(&self, name: &str) -> NetworkView {
        let mode = if name == "host" {
            NetMode::Host
        } else {
            NetMode::None
        };
        let containers = self
            .engine
            .containers()
            .into_iter()
            .filter(|r| r.network == mode && r.state.status.is_live())
            .map(|r| {
                (
                    r.id.clone(),
                    EndpointResource {
                        name: Some(r.name.clone()),
                        endpoint_id: Some(String::new()),
                        mac_address: Some(String::new()),
                        ipv4_address: Some(String::new()),
                        ipv6_address: Some(String::new()),
                    },
                )
            })
            .collect();
        NetworkView {
            network: NetworkInspect {
                name: Some(name.to_string()),
                id: Some(pseudo_id(name)),
                created: Some(date(&chrono::DateTime::UNIX_EPOCH)),
                scope: Some("local".into()),
                driver: Some(if name == "host" { "host" } else { "null" }.into()),
                enable_ipv4: Some(true),
                enable_ipv6: Some(false),
                ipam: Some(Ipam {
                    driver: Some("default".into()),
                    config: Some(vec![]),
                    options: None,
                }),
                internal: Some(false),
                attachable: Some(false),
                ingress: Some(false),
                config_from: Some(bollard_stubs::models::ConfigReference {
                    network: Some(String::new()),
                }),
                config_only: Some(false),
                options: Some(HashMap::new()),
                labels: Some(HashMap::new()),
                peers: None,
                containers: Some(containers),
                services: None,
                status: None,
            },
            policies: Vec::new(),
        }
    }

    /// `host`/`none` by name, full ID or ID prefix.
    fn pseudo_lookup(&self, key: &str) -> Option<&'static str> {
        PSEUDO.into_iter().find(|n| {
            *n == key || (!key.is_empty() && key.len() >= 3 && pseudo_id(n).starts_with(key))
        })
    }

    fn resolve(&self, key: &str) -> ApiResult<NetworkRecord> {
        self.nets.network(key).map_err(api_error)
    }

    /// The "in use" refusal naming the containers, as Docker does.
    fn in_use(&self, n: &NetworkRecord, ids: &[String]) -> ApiError {
        let list: Vec<String> = ids
            .iter()
            .map(|id| {
                format!(
                    "name:{} id:{}",
                    self.container_name(id),
                    &id[..12.min(id.len())]
                )
            })
            .collect();
        ApiError::Conflict(format!(
            "error while removing network: network {} id {} has active endpoints ({})",
            n.name,
            n.id,
            list.join(", ")
        ))
    }
}

/// Docker's network list filters on one network.
fn matches(filters: &Filters, v: &NetworkView, dangling: bool) -> ApiResult<bool> {
    let n = &v.network;
    let name = n.name.as_deref().unwrap_or_default();
    let id = n.id.as_deref().unwrap_or_default();
    let builtin = matches!(name, "bridge" | "host" | "none");
    let labels = n.labels.clone().unwrap_or_default();
    for (k, vals) in filters {
        let ok = match k.as_str() {
            "name" => vals.iter().any(|x| name.contains(x.as_str())),
            "id" => vals.iter().any(|x| id.starts_with(x.as_str())),
            "label" => vals.iter().all(|x| label_match(&labels, x)),
            "label!" => !vals.iter().any(|x| label_match(&labels, x)),
            "driver" => vals.iter().any(|x| Some(x.as_str()) == n.driver.as_deref()),
            "scope" => vals.iter().any(|x| x == "local"),
            "type" => {
                for x in vals {
                    if x != "custom" && x != "builtin" {
                        return Err(ApiError::InvalidArgument(format!(
                            "invalid filter: 'type'='{x}'"
                        )));
                    }
                }
                vals.iter().any(|x| (x == "builtin") == builtin)
            }
            "dangling" => {
                let want = vals.iter().any(|x| x == "true" || x == "1");
                want == dangling
            }
            other => {
                return Err(ApiError::InvalidArgument(format!(
                    "invalid filter '{other}'"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[async_trait]
impl NetworkBackend for NetworkService {
    async fn network_list(&self, filters: Filters) -> ApiResult<Vec<NetworkView>> {
        let mut out = Vec::new();
        let nets = self.nets.networks().map_err(api_error)?;
        let mut views: Vec<NetworkView> = nets
            .iter()
            .map(|n| self.view(n))
            .collect::<ApiResult<_>>()?;
        views.extend(PSEUDO.iter().map(|p| self.pseudo_view(p)));
        for v in views {
            let dangling = v.network.containers.as_ref().is_none_or(|c| c.is_empty())
                && !matches!(v.network.name.as_deref(), Some("bridge" | "host" | "none"));
            if matches(&filters, &v, dangling)? {
                out.push(v);
            }
        }
        Ok(out)
    }

    async fn network_inspect(&self, key: &str) -> ApiResult<NetworkView> {
        if let Some(p) = self.pseudo_lookup(key) {
            return Ok(self.pseudo_view(p));
        }
        let n = self.resolve(key)?;
        self.view(&n)
    }

    async fn network_create(&self, req: NetworkCreateRequest) -> ApiResult<NetworkCreateResponse> {
        if req.name.is_empty() {
            return Err(ApiError::InvalidArgument(
                "network name is required (Name)".into(),
            ));
        }
        if PSEUDO.contains(&req.name.as_str()) || req.name == "bridge" {
            return Err(ApiError::Conflict(format!(
                "network with name {} already exists",
                req.name
            )));
        }
        if req.config_only.unwrap_or(false) || req.config_from.is_some() {
            return Err(ApiError::InvalidArgument(
                "config-only networks are not supported".into(),
            ));
        }
        if req.ingress.unwrap_or(false) {
            return Err(ApiError::InvalidArgument(
                "ingress networks are a swarm feature and not supported".into(),
            ));
        }
        if req.enable_ipv4 == Some(false) {
            return Err(ApiError::InvalidArgument(
                "IPv4 can not be disabled on bridge networks".into(),
            ));
        }
        if let Some(s) = req
            .scope
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "local")
        {
            return Err(ApiError::InvalidArgument(format!(
                "scope {s:?} is not supported (only \"local\")"
            )));
        }
        let mut subnets = Vec::new();
        if let Some(ipam) = &req.ipam {
            if let Some(d) = ipam
                .driver
                .as_deref()
                .filter(|d| !d.is_empty() && *d != "default")
            {
                return Err(ApiError::InvalidArgument(format!(
                    "IPAM driver {d:?} is not supported (only \"default\")"
                )));
            }
            for c in ipam.config.iter().flatten() {
                if c.auxiliary_addresses
                    .as_ref()
                    .is_some_and(|a| !a.is_empty())
                {
                    return Err(ApiError::InvalidArgument(
                        "auxiliary addresses (--aux-address) are not supported".into(),
                    ));
                }
                if c.subnet.as_deref().is_none_or(str::is_empty)
                    && (c.gateway.as_deref().is_some_and(|g| !g.is_empty())
                        || c.ip_range.as_deref().is_some_and(|g| !g.is_empty()))
                {
                    return Err(ApiError::InvalidArgument(
                        "a gateway or ip-range needs a subnet (--subnet)".into(),
                    ));
                }
                let r = SubnetRequest::parse(
                    c.subnet.as_deref().filter(|s| !s.is_empty()),
                    c.gateway.as_deref(),
                    c.ip_range.as_deref(),
                )
                .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
                subnets.push(r);
            }
        }
        if let Some(v) = req
            .options
            .as_ref()
            .and_then(|o| o.get(shibafu_api::labels::NETWORK_DNS))
        {
            crate::services::parse_network_dns(v)
                .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
            if req.internal.unwrap_or(false) {
                return Err(ApiError::InvalidArgument(format!(
                    "invalid --dns {v:?} (network option {}): an internal network never forwards names",
                    shibafu_api::labels::NETWORK_DNS
                )));
            }
        }
        let create = CreateNetwork {
            name: req.name.clone(),
            driver: req.driver.clone(),
            subnets,
            ipv6: req.enable_ipv6.unwrap_or(false),
            internal: req.internal.unwrap_or(false),
            attachable: req.attachable.unwrap_or(false),
            labels: req.labels.clone().unwrap_or_default().into_iter().collect(),
            options: req
                .options
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        };
        let rec = self.nets.create_network(create).await.map_err(api_error)?;
        self.event("create", &rec.id, &rec.name, &[]);
        Ok(NetworkCreateResponse {
            id: rec.id,
            warning: String::new(),
        })
    }

    async fn network_remove(&self, key: &str) -> ApiResult<()> {
        if let Some(p) = self.pseudo_lookup(key) {
            return Err(ApiError::Conflict(format!(
                "{p} is a pre-defined network and cannot be removed"
            )));
        }
        let n = self.resolve(key)?;
        if n.default {
            return Err(ApiError::Conflict(format!(
                "{} is a pre-defined network and cannot be removed",
                n.name
            )));
        }
        match self.nets.remove_network(&n.id).await {
            Ok(_) => {}
            Err(BridgeError::InUse { containers, .. }) => return Err(self.in_use(&n, &containers)),
            Err(e @ BridgeError::RemovePartial { .. }) => {
                // Gone from the records; the leftovers are reported (and
                // removed by the next reconcile).
                self.event("destroy", &n.id, &n.name, &[]);
                return Err(api_error(e));
            }
            Err(e) => return Err(api_error(e)),
        }
        self.event("destroy", &n.id, &n.name, &[]);
        Ok(())
    }

    async fn network_connect(&self, key: &str, req: NetworkConnectRequest) -> ApiResult<()> {
        if let Some(p) = self.pseudo_lookup(key) {
            return Err(ApiError::Conflict(format!(
                "container cannot be disconnected from host network or connected to {p} network"
            )));
        }
        let n = self.resolve(key)?;
        let c = self.engine.lookup(&req.container)?;
        let _g = c.op.lock().await;
        let rec = c.rec();
        match &rec.network {
            NetMode::Bridge | NetMode::Network(_) => {}
            NetMode::Host | NetMode::Container(_) => {
                return Err(ApiError::Conflict(
                    "container sharing network namespace with another container or host cannot be connected to any other network".into(),
                ))
            }
            NetMode::None => {
                return Err(ApiError::Conflict(
                    "container cannot be connected to multiple networks with one of the networks in private (none) mode".into(),
                ))
            }
        }
        if rec.networks.iter().any(|a| a.network_id == n.id) {
            return Err(ApiError::Conflict(format!(
                "endpoint with name {} already exists in network {}",
                rec.name, n.name
            )));
        }
        let nref = NetworkRef {
            id: n.id.clone(),
            name: n.name.clone(),
            predefined: n.default,
        };
        let att =
            attachment(&nref, req.endpoint_config.as_ref()).map_err(ApiError::InvalidArgument)?;
        let running = rec.state.status.is_live() && rec.state.pid > 0;
        if running {
            self.nets
                .attach(
                    &rec.id,
                    rec.state.pid as i32,
                    vec![EndpointRequest {
                        network: n.id.clone(),
                        ips: att.ips.clone(),
                        aliases: att.aliases.clone(),
                        mac: att.mac.as_deref().and_then(shibafu_net::bridge::parse_mac),
                    }],
                    vec![],
                )
                .await
                .map_err(api_error)?;
        }
        let new = c.update(|r| r.networks.push(att.clone()));
        if let Err(e) = self.engine.persist(&new) {
            c.update(|r| r.networks.retain(|a| a.network_id != n.id));
            if running {
                if let Err(d) = self.nets.disconnect(&rec.id, &n.id).await {
                    tracing::warn!(container = %rec.id, error = %d, "undoing a connect");
                }
            }
            return Err(e.into());
        }
        if running {
            if let Err(e) = self.engine.refresh_resolver_files(&new) {
                tracing::warn!(container = %rec.id, error = %e, "rewriting /etc/hosts and resolv.conf");
            }
        }
        self.event("connect", &n.id, &n.name, &[("container", &rec.id)]);
        Ok(())
    }

    async fn network_disconnect(&self, key: &str, req: NetworkDisconnectRequest) -> ApiResult<()> {
        if let Some(p) = self.pseudo_lookup(key) {
            return Err(ApiError::Conflict(format!(
                "container cannot be disconnected from {p} network"
            )));
        }
        let n = self.resolve(key)?;
        let c = match self.engine.lookup(&req.container) {
            Ok(c) => c,
            Err(e) if req.force.unwrap_or(false) => {
                // Force: drop a stale endpoint of a container that is gone.
                return match self.nets.disconnect(&req.container, &n.id).await {
                    Ok(()) => Ok(()),
                    Err(_) => Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        };
        let _g = c.op.lock().await;
        let rec = c.rec();
        if !rec.networks.iter().any(|a| a.network_id == n.id) {
            return Err(ApiError::Conflict(format!(
                "container {} is not connected to network {}",
                rec.id, n.name
            )));
        }
        let attached = self
            .nets
            .endpoints(&rec.id)
            .map_err(api_error)?
            .endpoints
            .iter()
            .any(|e| e.network_id == n.id);
        let res = if attached {
            self.nets.disconnect(&rec.id, &n.id).await
        } else {
            Ok(())
        };
        let new = c.update(|r| r.networks.retain(|a| a.network_id != n.id));
        self.engine.persist(&new)?;
        if rec.state.status.is_live() && rec.state.pid > 0 {
            if let Err(e) = self.engine.refresh_resolver_files(&new) {
                tracing::warn!(container = %rec.id, error = %e, "rewriting /etc/hosts and resolv.conf");
            }
        }
        self.event("disconnect", &n.id, &n.name, &[("container", &rec.id)]);
        res.map_err(api_error)
    }

    async fn network_prune(&self, filters: Filters) -> ApiResult<NetworkPruneResponse> {
        let mut until = None;
        for (k, v) in &filters {
            match k.as_str() {
                "until" => {
                    let s = v.first().cloned().unwrap_or_default();
                    until = Some(crate::backend::parse_until(&s).ok_or_else(|| {
                        ApiError::InvalidArgument(format!("invalid filter 'until={s}'"))
                    })?);
                }
                "label" | "label!" => {}
                other => {
                    return Err(ApiError::InvalidArgument(format!(
                        "invalid filter '{other}'"
                    )))
                }
            }
        }
        // Networks that stopped containers are configured on stay, as
        // their next start needs them (Docker only looks at running
        // containers; keeping them is the safer side).
        let configured: HashSet<String> = self
            .engine
            .containers()
            .iter()
            .flat_map(|r: &ContainerRecord| r.networks.iter().map(|a| a.network_id.clone()))
            .collect();
        let before: BTreeMap<String, String> = self
            .nets
            .networks()
            .map_err(api_error)?
            .into_iter()
            .map(|n| (n.name, n.id))
            .collect();
        let keep = |n: &NetworkRecord| {
            let labels: HashMap<String, String> = n.labels.clone().into_iter().collect();
            configured.contains(&n.id)
                || until.is_some_and(|u| n.created >= u)
                || filters
                    .get("label")
                    .is_some_and(|v| !v.iter().all(|x| label_match(&labels, x)))
                || filters
                    .get("label!")
                    .is_some_and(|v| v.iter().any(|x| label_match(&labels, x)))
        };
        let removed = self.nets.prune(keep).await.map_err(api_error)?;
        for name in &removed {
            if let Some(id) = before.get(name) {
                self.event("destroy", id, name, &[]);
            }
        }
        Ok(NetworkPruneResponse {
            networks_deleted: Some(removed),
        })
    }

    async fn policy_create(&self, p: NetworkPolicy) -> ApiResult<NetworkPolicy> {
        if p.name.is_empty() {
            return Err(ApiError::InvalidArgument(
                "a network policy needs a name (Name)".into(),
            ));
        }
        if p.network.is_empty() {
            return Err(ApiError::InvalidArgument(
                "a network policy needs a network (Network)".into(),
            ));
        }
        let deny = policy_rules(&p.deny_ingress_from)?;
        let allow = policy_rules(&p.allow_ingress_from)?;
        let rec = self
            .nets
            .create_policy(&p.name, &p.network, &deny, &allow)
            .await
            .map_err(api_error)?;
        self.policy_view(&rec)
    }

    async fn policy_list(&self, network: Option<String>) -> ApiResult<Vec<NetworkPolicy>> {
        let id = match &network {
            Some(n) => Some(self.resolve(n)?.id),
            None => None,
        };
        self.nets
            .policies()
            .map_err(api_error)?
            .iter()
            .filter(|p| id.as_ref().is_none_or(|i| *i == p.network))
            .map(|p| self.policy_view(p))
            .collect()
    }

    async fn policy_inspect(&self, name: &str) -> ApiResult<NetworkPolicy> {
        let p = self.nets.policy(name).map_err(api_error)?;
        self.policy_view(&p)
    }

    async fn policy_remove(&self, name: &str) -> ApiResult<()> {
        self.nets.remove_policy(name).await.map_err(api_error)?;
        Ok(())
    }

    async fn network_reload(&self) -> ApiResult<NetworkReloadReport> {
        let live = self.engine.network_live_set();
        let rep = self.nets.reconcile(&live).await.map_err(api_error)?;
        Ok(reload_report(&rep))
    }
}

/// The API's policy rules as the net crate's: network key and an
/// optional (protocol, port); a protocol without a port is refused.
fn policy_rules(rules: &[shibafu_api::PolicyRule]) -> ApiResult<Vec<PolicyRuleSpec>> {
    rules
        .iter()
        .map(|r| {
            if r.network.is_empty() {
                return Err(ApiError::InvalidArgument(
                    "a policy rule needs a network (Network)".into(),
                ));
            }
            let proto = match r.proto.as_deref().unwrap_or("tcp") {
                "" | "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                "sctp" => Proto::Sctp,
                other => {
                    return Err(ApiError::InvalidArgument(format!(
                        "invalid protocol {other:?} in the policy rule for network {}: want tcp, udp or sctp",
                        r.network
                    )))
                }
            };
            if r.proto.is_some() && r.port.is_none() {
                return Err(ApiError::InvalidArgument(format!(
                    "the policy rule for network {} has a protocol but no port",
                    r.network
                )));
            }
            Ok((r.network.clone(), r.port.map(|p| (proto, p))))
        })
        .collect()
}

impl NetworkService {
    /// A stored policy as the API shows it, networks by name.
    fn policy_view(&self, p: &PolicyRecord) -> ApiResult<NetworkPolicy> {
        let names: HashMap<String, String> = self
            .nets
            .networks()
            .map_err(api_error)?
            .into_iter()
            .map(|n| (n.id, n.name))
            .collect();
        let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
        let rules = |list: &[shibafu_net::store::PolicyRule]| {
            list.iter()
                .map(|r| shibafu_api::PolicyRule {
                    network: name(&r.from),
                    port: r.port.map(|(_, p)| p),
                    proto: r.port.map(|(pr, _)| pr.as_str().to_string()),
                })
                .collect()
        };
        Ok(NetworkPolicy {
            id: p.id.clone(),
            name: p.name.clone(),
            network: name(&p.network),
            deny_ingress_from: rules(&p.deny),
            allow_ingress_from: rules(&p.allow),
            created: p
                .created
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        })
    }
}

/// A reconcile report in words.
pub fn reload_report(rep: &shibafu_net::bridge::ReconcileReport) -> NetworkReloadReport {
    let mut actions = Vec::new();
    for (n, c) in &rep.released {
        actions.push(format!(
            "released the address of container {} on network {}",
            &c[..12.min(c.len())],
            &n[..12.min(n.len())]
        ));
    }
    for c in &rep.dropped_containers {
        actions.push(format!(
            "dropped the endpoints of container {}",
            &c[..12.min(c.len())]
        ));
    }
    for l in &rep.deleted_links {
        actions.push(format!("deleted link {l}"));
    }
    actions.push("firewall rules re-applied".into());
    NetworkReloadReport {
        actions,
        errors: rep.errors.clone(),
    }
}
