//! The bridge network layer plugged into the engine: [`BridgeAttacher`]
//! connects containers to `shibafu-net`'s [`BridgeNetworks`] at start and
//! disconnects them on every exit path; inspect and `ps` read their
//! endpoints and published ports from the network store, which is the
//! truth while they run.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bollard_stubs::models::{EndpointIpamConfig, EndpointSettings};
use shibafu_net::bridge::{networks_settings, BridgeNetworks, EndpointRequest};
use shibafu_net::ports::{port_requests, PortRequest, PublishedPort};

use crate::model::{ContainerRecord, NetAttach, NetMode};
use crate::network::{default_endpoints, NetworkAttacher, NetworkRef};

/// Containers on bridge networks; the modes that need no setup (none,
/// host, `container:`) behave as with [`crate::LocalNetworks`].
pub struct BridgeAttacher {
    nets: Arc<BridgeNetworks>,
    /// Zone suffix of the embedded DNS; `None` = no embedded DNS
    /// (containers keep the host's resolvers).
    dns_zone_suffix: Option<String>,
}

impl BridgeAttacher {
    pub fn new(nets: Arc<BridgeNetworks>) -> Self {
        BridgeAttacher {
            nets,
            dns_zone_suffix: None,
        }
    }

    /// With the embedded DNS serving user-defined networks under
    /// `NETWORK.<zone_suffix>`: their containers' resolv.conf points at it.
    pub fn with_dns(nets: Arc<BridgeNetworks>, zone_suffix: &str) -> Self {
        BridgeAttacher {
            nets,
            dns_zone_suffix: Some(zone_suffix.to_string()),
        }
    }

    /// The endpoint request for one recorded attachment. The network is
    /// found by its ID; only the predefined `bridge` falls back to its
    /// name (it is recreated with a new ID if its state was lost).
    fn endpoint_request(&self, a: &NetAttach) -> Result<EndpointRequest, String> {
        let key = if self.nets.network(&a.network_id).is_ok() {
            a.network_id.clone()
        } else if a.network_name == "bridge" && self.nets.network("bridge").is_ok() {
            "bridge".to_string()
        } else {
            return Err(format!("network {} not found", a.network_name));
        };
        Ok(EndpointRequest {
            network: key,
            ips: a.ips.clone(),
            aliases: a.aliases.clone(),
            mac: a.mac.as_deref().and_then(shibafu_net::bridge::parse_mac),
        })
    }
}

/// The container's port requests (`-p`, `-P`), as Docker builds them.
pub fn container_port_requests(rec: &ContainerRecord) -> Result<Vec<PortRequest>, String> {
    let hc = &rec.host_config;
    port_requests(
        hc.port_bindings.as_ref(),
        hc.publish_all_ports.unwrap_or(false),
        rec.config
            .exposed_ports
            .iter()
            .flatten()
            .map(|p| p.as_str()),
    )
    .map_err(|e| e.to_string())
}

/// `NetworkSettings.Networks[name]` of a network the container is not
/// connected to right now (stopped): configuration only, as Docker shows.
pub fn configured_endpoint(a: &NetAttach) -> EndpointSettings {
    let v4 = a.ips.iter().find(|i| i.is_ipv4());
    let v6 = a.ips.iter().find(|i| i.is_ipv6());
    EndpointSettings {
        ipam_config: (!a.ips.is_empty()).then(|| EndpointIpamConfig {
            ipv4_address: v4.map(IpAddr::to_string),
            ipv6_address: v6.map(IpAddr::to_string),
            link_local_ips: None,
        }),
        links: None,
        mac_address: Some(a.mac.clone().unwrap_or_default()),
        aliases: (!a.aliases.is_empty()).then(|| a.aliases.clone()),
        driver_opts: None,
        gw_priority: Some(0),
        network_id: Some(a.network_id.clone()),
        endpoint_id: Some(String::new()),
        gateway: Some(String::new()),
        ip_address: Some(String::new()),
        ip_prefix_len: Some(0),
        ipv6_gateway: Some(String::new()),
        global_ipv6_address: Some(String::new()),
        global_ipv6_prefix_len: Some(0),
        dns_names: None,
    }
}

#[async_trait]
impl NetworkAttacher for BridgeAttacher {
    async fn attach(&self, rec: &ContainerRecord, pid: i32) -> Result<(), String> {
        match rec.network {
            NetMode::None | NetMode::Host | NetMode::Container(_) => return Ok(()),
            NetMode::Bridge | NetMode::Network(_) => {}
        }
        if rec.networks.is_empty() {
            // Disconnected from every network: loopback only, as Docker.
            return Ok(());
        }
        let eps = rec
            .networks
            .iter()
            .map(|a| self.endpoint_request(a))
            .collect::<Result<Vec<_>, _>>()?;
        let ports = container_port_requests(rec)?;
        self.nets
            .attach(&rec.id, pid, eps, ports)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn detach(&self, rec: &ContainerRecord) -> Vec<String> {
        self.nets
            .detach(&rec.id)
            .await
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn endpoints(&self, rec: &ContainerRecord) -> HashMap<String, EndpointSettings> {
        match rec.network {
            NetMode::None | NetMode::Host => return default_endpoints(rec),
            NetMode::Container(_) => return HashMap::new(),
            NetMode::Bridge | NetMode::Network(_) => {}
        }
        let mut out = match self.nets.endpoints(&rec.id) {
            Ok(c) => networks_settings(&c),
            Err(e) => {
                tracing::warn!(container = %rec.id, error = %e, "reading network endpoints");
                HashMap::new()
            }
        };
        for a in &rec.networks {
            out.entry(a.network_name.clone())
                .or_insert_with(|| configured_endpoint(a));
        }
        out
    }

    fn lookup(&self, key: &str) -> Result<Option<NetworkRef>, String> {
        match self.nets.network(key) {
            Ok(n) => Ok(Some(NetworkRef {
                id: n.id,
                name: n.name,
                predefined: n.default,
            })),
            Err(shibafu_net::bridge::BridgeError::Store(
                shibafu_net::store::StoreError::NotFound(_),
            )) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn resolver(&self, rec: &ContainerRecord) -> Option<crate::dns::ResolverConf> {
        let suffix = self.dns_zone_suffix.as_deref()?;
        if !matches!(rec.network, NetMode::Bridge | NetMode::Network(_)) {
            return None;
        }
        let nets: Vec<_> = rec
            .networks
            .iter()
            .filter_map(|a| self.nets.network(&a.network_id).ok())
            .collect();
        crate::dns::resolver_for(&nets.iter().collect::<Vec<_>>(), suffix)
    }

    fn published(&self, rec: &ContainerRecord) -> Vec<PublishedPort> {
        self.nets
            .endpoints(&rec.id)
            .map(|c| c.ports)
            .unwrap_or_default()
    }
}
