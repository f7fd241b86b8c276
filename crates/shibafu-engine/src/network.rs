//! The network hook: called after a container's namespaces exist and
//! before its process runs ([`NetworkAttacher::attach`]), and on every exit
//! path ([`NetworkAttacher::detach`]: stop, death, supervisor death found at
//! start-up, rm). The networking layer (bridges, IPAM, ports, DNS) plugs in
//! with [`crate::Engine::set_network_attacher`].

use std::collections::HashMap;

use async_trait::async_trait;
use bollard_stubs::models::EndpointSettings;

use shibafu_net::ports::PublishedPort;

use crate::model::{ContainerRecord, NetAttach, NetMode};

/// A bridge network as `create` and `network connect` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRef {
    pub id: String,
    pub name: String,
    /// The predefined `bridge` network (static IPs are refused there, as
    /// Docker does).
    pub predefined: bool,
}

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
    /// A bridge network by name, ID or ID prefix; `Ok(None)` when there is
    /// none. The default (no network layer) knows no networks.
    fn lookup(&self, _key: &str) -> Result<Option<NetworkRef>, String> {
        Ok(None)
    }
    /// The embedded DNS resolver of a container on user-defined networks
    /// (its resolv.conf points there); `None` keeps the host's resolvers.
    fn resolver(&self, _container: &ContainerRecord) -> Option<crate::dns::ResolverConf> {
        None
    }
    /// The ports the running container publishes (inspect, ps).
    fn published(&self, _container: &ContainerRecord) -> Vec<PublishedPort> {
        Vec::new()
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
            NetMode::Network(n) => Err(format!("network {n} not found")),
        }
    }
    async fn detach(&self, _container: &ContainerRecord) -> Vec<String> {
        Vec::new()
    }
}

/// The container's addresses from its endpoints (for `/etc/hosts`).
pub fn own_addresses(eps: &HashMap<String, EndpointSettings>) -> Vec<std::net::IpAddr> {
    let mut out: Vec<std::net::IpAddr> = eps
        .values()
        .flat_map(|e| [e.ip_address.as_deref(), e.global_ipv6_address.as_deref()])
        .flatten()
        .filter_map(|a| a.parse().ok())
        .collect();
    out.sort_by_key(|a| (a.is_ipv6(), *a));
    out.dedup();
    out
}

/// A `NetworkingConfig.EndpointsConfig` entry (or `network connect`'s
/// `EndpointConfig`) as an attachment to `net`: static addresses and
/// aliases, refused on the predefined `bridge` as Docker does.
pub fn attachment(net: &NetworkRef, cfg: Option<&EndpointSettings>) -> Result<NetAttach, String> {
    let mut ips = Vec::new();
    let mut aliases = Vec::new();
    let mut mac = None;
    if let Some(c) = cfg {
        if let Some(ipam) = &c.ipam_config {
            for (what, a) in [
                ("IPv4", ipam.ipv4_address.as_deref()),
                ("IPv6", ipam.ipv6_address.as_deref()),
            ] {
                let Some(a) = a.map(str::trim).filter(|a| !a.is_empty()) else {
                    continue;
                };
                let ip: std::net::IpAddr = a
                    .parse()
                    .map_err(|_| format!("invalid {what} address: {a}"))?;
                if (what == "IPv4") != ip.is_ipv4() {
                    return Err(format!("invalid {what} address: {a}"));
                }
                ips.push(ip);
            }
        }
        if let Some(m) = c
            .mac_address
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            let parsed = shibafu_net::bridge::parse_mac(m)
                .ok_or_else(|| format!("invalid MAC address: {m}"))?;
            mac = Some(shibafu_net::ipam::mac_string(&parsed));
        }
        for a in c.aliases.iter().flatten() {
            if !a.is_empty() && !aliases.contains(a) {
                aliases.push(a.clone());
            }
        }
    }
    if net.predefined && !ips.is_empty() {
        return Err("user specified IP address is supported on user defined networks only".into());
    }
    if net.predefined && !aliases.is_empty() {
        return Err(
            "network-scoped alias is supported only for containers in user defined networks".into(),
        );
    }
    Ok(NetAttach {
        network_id: net.id.clone(),
        network_name: net.name.clone(),
        ips,
        aliases,
        mac,
    })
}

impl crate::Engine {
    /// Create-time network validation: the mode, the networks of
    /// `NetworkingConfig.EndpointsConfig` (first = the mode's network,
    /// `eth0`; API >= 1.44 may list more, each attached in name order),
    /// static addresses and aliases, and the port requests.
    pub(crate) fn plan_networks(
        &self,
        body: &bollard_stubs::models::ContainerCreateBody,
        plan: &crate::spec::Plan,
    ) -> Result<(NetMode, Vec<NetAttach>), crate::error::EngineError> {
        use crate::error::EngineError;
        use crate::spec::NetRequest;
        let net = self.net();
        // An unknown network is a 400, not a 404: the docker CLI takes any
        // 404 from create for a missing image and would report that instead.
        let mut cfgs: Vec<(String, EndpointSettings)> = body
            .networking_config
            .as_ref()
            .and_then(|n| n.endpoints_config.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        cfgs.sort_by(|a, b| a.0.cmp(&b.0));
        let lookup = |key: &str| -> Result<Option<NetworkRef>, EngineError> {
            net.lookup(key).map_err(EngineError::Runtime)
        };
        let has_ports = plan.host_config.port_bindings.as_ref().is_some_and(|p| {
            p.values()
                .any(|b| b.as_ref().is_some_and(|b| !b.is_empty()))
        }) || plan.host_config.publish_all_ports.unwrap_or(false);
        shibafu_net::ports::port_requests(
            plan.host_config.port_bindings.as_ref(),
            plan.host_config.publish_all_ports.unwrap_or(false),
            plan.config
                .exposed_ports
                .iter()
                .flatten()
                .map(|p| p.as_str()),
        )
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let (mode, primary) = match &plan.network {
            NetRequest::None => (NetMode::None, None),
            NetRequest::Host => (NetMode::Host, None),
            NetRequest::Container(target) => {
                if has_ports {
                    return Err(EngineError::Invalid(
                        "conflicting options: port publishing and the container type network mode"
                            .into(),
                    ));
                }
                let t = self.lookup(target)?;
                (NetMode::Container(t.id.clone()), None)
            }
            NetRequest::Bridge => (NetMode::Bridge, lookup("bridge")?),
            NetRequest::Named(n) => match lookup(n)? {
                Some(r) if r.predefined => (NetMode::Bridge, Some(r)),
                Some(r) => (NetMode::Network(r.name.clone()), Some(r)),
                None => return Err(EngineError::Invalid(format!("network {n} not found"))),
            },
        };
        // The keys that name the mode's own network: the CLI sends
        // `{"default": {}}` with no --network, `{"host": {}}` with host...
        let raw_mode = plan.host_config.network_mode.clone().unwrap_or_default();
        let mode_keys: Vec<String> = match &mode {
            NetMode::Bridge => vec!["bridge".into(), "default".into(), raw_mode],
            m => vec![m.network_name().unwrap_or_default().to_string(), raw_mode],
        };
        let mode_name = |k: &str| mode_keys.iter().any(|m| m == k);
        let mut out: Vec<NetAttach> = Vec::new();
        let Some(primary) = primary else {
            // none, host, container: (or no network layer): nothing else
            // may be joined.
            if let Some((k, _)) = cfgs.iter().find(|(k, _)| !mode_name(k)) {
                if matches!(mode, NetMode::Bridge) {
                    // No network layer installed: it knows no networks.
                    return Err(EngineError::Invalid(format!("network {k} not found")));
                }
                return Err(EngineError::Invalid(format!(
                    "container cannot be connected to network {k}: it is in {} network mode",
                    match &mode {
                        NetMode::Container(_) => "container".to_string(),
                        m => m.network_name().unwrap_or_default().to_string(),
                    }
                )));
            }
            return Ok((mode, out));
        };
        let is_primary = |k: &str| mode_name(k) || k == primary.name || k == primary.id;
        let pcfg = cfgs
            .iter()
            .find(|(k, _)| is_primary(k))
            .map(|(_, c)| c.clone());
        out.push(attachment(&primary, pcfg.as_ref()).map_err(EngineError::Invalid)?);
        for (k, c) in cfgs.iter().filter(|(k, _)| !is_primary(k)) {
            let r =
                lookup(k)?.ok_or_else(|| EngineError::Invalid(format!("network {k} not found")))?;
            if out.iter().any(|a| a.network_id == r.id) {
                return Err(EngineError::Invalid(format!(
                    "network {} is given twice",
                    r.name
                )));
            }
            out.push(attachment(&r, Some(c)).map_err(EngineError::Invalid)?);
        }
        Ok((mode, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_stubs::models::EndpointIpamConfig;

    fn net(predefined: bool) -> NetworkRef {
        NetworkRef {
            id: "n1".into(),
            name: if predefined { "bridge" } else { "web" }.into(),
            predefined,
        }
    }

    fn cfg(
        v4: Option<&str>,
        v6: Option<&str>,
        mac: Option<&str>,
        alias: &[&str],
    ) -> EndpointSettings {
        EndpointSettings {
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: v4.map(Into::into),
                ipv6_address: v6.map(Into::into),
                link_local_ips: None,
            }),
            mac_address: mac.map(Into::into),
            aliases: Some(alias.iter().map(|a| a.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn endpoint_config_becomes_an_attachment() {
        let a = attachment(
            &net(false),
            Some(&cfg(
                Some("10.1.0.5"),
                Some("fd00::5"),
                Some("02:42:DE:AD:BE:EF"),
                &["db", "db"],
            )),
        )
        .unwrap();
        assert_eq!(a.network_id, "n1");
        assert_eq!(a.ips.len(), 2);
        assert_eq!(a.aliases, vec!["db"]);
        assert_eq!(a.mac.as_deref(), Some("02:42:de:ad:be:ef"));
        assert!(attachment(&net(false), None).unwrap().ips.is_empty());
    }

    #[test]
    fn bad_endpoint_configs_are_refused_with_the_reason() {
        for (n, c, want) in [
            (
                net(true),
                cfg(Some("172.17.0.9"), None, None, &[]),
                "user defined networks only",
            ),
            (
                net(true),
                cfg(None, None, None, &["x1"]),
                "network-scoped alias",
            ),
            (
                net(false),
                cfg(Some("fd00::1"), None, None, &[]),
                "invalid IPv4 address",
            ),
            (
                net(false),
                cfg(None, Some("10.0.0.1"), None, &[]),
                "invalid IPv6 address",
            ),
            (
                net(false),
                cfg(Some("10.0.0.300"), None, None, &[]),
                "invalid IPv4 address",
            ),
            (
                net(false),
                cfg(None, None, Some("01:00:00:00:00:01"), &[]),
                "invalid MAC",
            ),
            (net(false), cfg(None, None, Some("zz"), &[]), "invalid MAC"),
        ] {
            let e = attachment(&n, Some(&c)).unwrap_err();
            assert!(e.contains(want), "{e} !~ {want}");
        }
        // A MAC on the default bridge is fine, as in Docker.
        assert!(attachment(
            &net(true),
            Some(&cfg(None, None, Some("02:00:00:00:00:01"), &[]))
        )
        .is_ok());
    }

    #[test]
    fn own_addresses_for_etc_hosts() {
        let mut eps = HashMap::new();
        eps.insert(
            "a".to_string(),
            EndpointSettings {
                ip_address: Some("10.1.0.2".into()),
                global_ipv6_address: Some("fd00::2".into()),
                ..Default::default()
            },
        );
        eps.insert(
            "b".to_string(),
            EndpointSettings {
                ip_address: Some(String::new()),
                ..Default::default()
            },
        );
        let got: Vec<String> = own_addresses(&eps).iter().map(|a| a.to_string()).collect();
        assert_eq!(got, vec!["10.1.0.2", "fd00::2"]);
    }
}
