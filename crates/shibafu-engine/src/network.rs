//! The network hook: called after a container's namespaces exist and
//! before its process runs ([`NetworkAttacher::attach`]), and on every exit
//! path ([`NetworkAttacher::detach`]: stop, death, supervisor death found at
//! start-up, rm). The networking layer (bridges, IPAM, ports, DNS) plugs in
//! with [`crate::Engine::set_network_attacher`].

use std::collections::HashMap;

use async_trait::async_trait;
use bollard_stubs::models::EndpointSettings;

use crate::model::{ContainerRecord, NetMode};

#[async_trait]
pub trait NetworkAttacher: Send + Sync + 'static {
    /// Connect the container (init `pid`, its netns is `/proc/<pid>/ns/net`)
    /// to its networks. An error aborts the start (the engine then calls
    /// `detach` to undo whatever was done).
    async fn attach(&self, container: &ContainerRecord, pid: i32) -> Result<(), String>;
    /// Undo `attach`. Must tolerate being called for a container that was
    /// never (or only partly) attached; keeps going past errors and returns
    /// them all.
    async fn detach(&self, container: &ContainerRecord) -> Vec<String>;
    /// `NetworkSettings.Networks` of the container (inspect and ps).
    fn endpoints(&self, container: &ContainerRecord) -> HashMap<String, EndpointSettings> {
        default_endpoints(container)
    }
}

/// Endpoints for the modes that need no setup.
pub fn default_endpoints(c: &ContainerRecord) -> HashMap<String, EndpointSettings> {
    match c.network.network_name() {
        Some(n) => HashMap::from([(
            n.to_string(),
            EndpointSettings {
                network_id: Some(n.to_string()),
                endpoint_id: Some(String::new()),
                gateway: Some(String::new()),
                ip_address: Some(String::new()),
                ip_prefix_len: Some(0),
                ipv6_gateway: Some(String::new()),
                global_ipv6_address: Some(String::new()),
                global_ipv6_prefix_len: Some(0),
                mac_address: Some(String::new()),
                aliases: None,
                links: None,
                driver_opts: None,
                dns_names: None,
                gw_priority: Some(0),
                ipam_config: None,
            },
        )]),
        None => HashMap::new(),
    }
}

/// The modes that need nothing from a network layer: `none` (own netns,
/// loopback only), `host` (the host's netns), `container:<id>` (the
/// runtime joins the target's netns) and, until the bridge driver exists,
/// `bridge`/`default` (own netns, loopback only).
pub struct LocalNetworks;

#[async_trait]
impl NetworkAttacher for LocalNetworks {
    async fn attach(&self, container: &ContainerRecord, _pid: i32) -> Result<(), String> {
        match &container.network {
            NetMode::None | NetMode::Host | NetMode::Bridge | NetMode::Container(_) => Ok(()),
        }
    }
    async fn detach(&self, _container: &ContainerRecord) -> Vec<String> {
        Vec::new()
    }
}
