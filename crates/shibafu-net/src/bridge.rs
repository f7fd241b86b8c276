//! [`BridgeNetworks`]: bridge networks end to end, over IPAM, netlink, the
//! firewall, the network store and the port allocator. The daemon holds
//! one and calls it from its network hook.
//!
//! Why it looks like this:
//! - Generic over [`LinkOps`], [`NftRunner`] and [`PortProbe`], so every
//!   path (rollback included) is unit-tested with fakes; the root test
//!   runs the same code on the kernel.
//! - Every operation validates all of its input before touching anything,
//!   then acts in a fixed order, recording each step; a failure undoes the
//!   recorded steps in reverse (netavark's discipline), so bad input or a
//!   kernel refusal leaves nothing half-made.
//! - Teardown ([`BridgeNetworks::detach`]) never stops at the first error:
//!   it does every step and returns all errors.
//! - Persisted state (store + IPAM) is the truth; the kernel's bridges,
//!   veths and nftables are derived from it, so [`BridgeNetworks::reconcile`]
//!   can rebuild them after a crash, a reboot or an `nft flush ruleset`
//!   and delete what belongs to no live container.
//! - The firewall's desired state is recomputed from the store under one
//!   lock and applied as a delta; attaching a container without published
//!   ports does not touch nftables at all.
//! - `network rm` parks its bridge (down, renamed) and the next `network
//!   create` adopts it instead of creating one: a bridge deletion holds
//!   the RTNL lock through RCU waits, and a create right after an rm
//!   waited 10-18 ms for it. The spare is renamed to the bridge name of
//!   a network id drawn in advance, whose ownership is recorded in the
//!   rm's own commit: the next create takes that id and needs no commit
//!   of its own before touching the kernel (one fsync, not two). Spares
//!   are owned bridges of no network, so reconcile deletes them after a
//!   crash; at most [`MAX_SPARES`] are kept, and
//!   [`BridgeNetworks::settle`] deletes them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bollard_stubs::models::{EndpointIpamConfig, EndpointSettings};
use chrono::Utc;
use ipnet::IpNet;

use crate::firewall::{
    DesiredState, Firewall, FirewallConfig, FirewallError, FwNetwork, FwPolicyRule, Health, Nft,
    NftRunner, Proto,
};
use crate::ipam::{
    default_pools, mac_for, mac_string, AddressPool, Family, Ipam, IpamError, SubnetConfig,
    SubnetRequest,
};
use crate::netlink::{
    check_ifname, host_veth_name, BridgeSpec, LinkOps, Netlink, NetlinkError, Sysctl, VethSpec,
    HOST_VETH_PREFIX,
};
use crate::ports::{PortAllocator, PortError, PortProbe, PortRequest, PublishedPort, SocketProbe};
use crate::socklb::SockLb;
use crate::store::{
    new_id, validate_name, ContainerNet, Endpoint, NetworkRecord, NetworkStore, PolicyRecord,
    PolicyRule, StoreError, OPT_BRIDGE_NAME, OPT_DEFAULT_BRIDGE, OPT_MTU,
};

/// Errors of this module (the layers' errors pass through unchanged, so
/// their messages reach the user as they are).
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Link(#[from] NetlinkError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("network driver {0:?} is not supported (only \"bridge\")")]
    UnsupportedDriver(String),
    #[error("operation is not permitted on predefined {0} network")]
    Predefined(String),
    #[error("invalid option {key}={value}: {reason}")]
    InvalidOption {
        key: String,
        value: String,
        reason: String,
    },
    #[error("bridge {bridge} is already used by network {network}")]
    BridgeInUse { bridge: String, network: String },
    #[error("error while removing network: network {network} id {id} has active endpoints ({})", containers.join(", "))]
    InUse {
        network: String,
        id: String,
        containers: Vec<String>,
    },
    #[error("container {container} is already attached to network {network}")]
    AlreadyAttached { container: String, network: String },
    #[error("container {container} is not connected to network {network}")]
    NotAttached { container: String, network: String },
    #[error("network {0} is given twice")]
    DuplicateNetwork(String),
    #[error("cannot publish ports: the container is on no network with outside access (internal networks only)")]
    NoGatewayForPorts,
    #[error("network policy {0} has no rules: give deny or allow rules")]
    EmptyPolicy(String),
    #[error("invalid port 0 in the policy rule for network {0}")]
    InvalidPolicyPort(String),
    #[error("network {network} was removed, but cleaning up failed: {err}")]
    RemovePartial { network: String, err: String },
}

pub type Result<T, E = BridgeError> = std::result::Result<T, E>;

/// How many removed networks' bridges are kept for reuse.
pub const MAX_SPARES: usize = 2;

/// The bridge of network `id` unless `-o com.docker.network.bridge.name`.
fn bridge_name(id: &str) -> String {
    format!("br-{}", &id[..12])
}

/// A parked bridge ([`LinkOps::park_bridge`]): named (and owned) as the
/// bridge of network `id`, which the next network without a bridge name
/// of its own gets; and the gateway addresses it still carries (v4 ones
/// stay on a link that is down).
#[derive(Debug, Clone)]
struct Spare {
    id: String,
    name: String,
    addresses: Vec<IpNet>,
}

/// The predefined default network (`bridge`, the containers' default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultNetwork {
    pub name: String,
    pub bridge: String,
    /// `None`: the first free subnet of the pools (172.17.0.0/16 when free).
    pub subnet: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    pub mtu: Option<u32>,
}

impl Default for DefaultNetwork {
    fn default() -> Self {
        DefaultNetwork {
            name: "bridge".into(),
            bridge: "shibafu0".into(),
            subnet: None,
            gateway: None,
            mtu: None,
        }
    }
}

/// How the daemon configures networking.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Holds `ipam.redb` and `networks.redb`.
    pub data_dir: PathBuf,
    pub pools: Vec<AddressPool>,
    /// Ephemeral host ports.
    pub port_range: (u16, u16),
    /// `None`: no default network.
    pub default_network: Option<DefaultNetwork>,
    pub firewall: FirewallConfig,
    /// `/proc/sys`, or a directory in tests.
    pub sysctl_root: PathBuf,
    /// Translate host-local connects to published ports at connect time
    /// ([`crate::socklb`]); nftables DNAT stays either way. Used by
    /// [`BridgeNetworks::open_host`].
    pub socket_lb: bool,
}

impl BridgeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        BridgeConfig {
            data_dir: data_dir.into(),
            pools: default_pools(),
            port_range: crate::ports::DEFAULT_RANGE,
            default_network: Some(DefaultNetwork::default()),
            firewall: FirewallConfig::default(),
            sysctl_root: PathBuf::from("/proc/sys"),
            socket_lb: true,
        }
    }
}

/// `network create`, already parsed from the CLI/API strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateNetwork {
    pub name: String,
    /// `None` or `bridge`.
    pub driver: Option<String>,
    /// `--subnet/--gateway/--ip-range` groups ([`SubnetRequest::parse`]).
    pub subnets: Vec<SubnetRequest>,
    /// `--ipv6`: an automatic v6 subnet when none is given.
    pub ipv6: bool,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    /// `-o`: `com.docker.network.bridge.name`, `com.docker.network.driver.mtu`
    /// are acted on; others are kept and shown, as Docker does.
    pub options: BTreeMap<String, String>,
}

/// One network a container joins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointRequest {
    /// Name, id or id prefix.
    pub network: String,
    /// `--ip` / `--ip6`.
    pub ips: Vec<IpAddr>,
    /// `--alias` (DNS names on this network).
    pub aliases: Vec<String>,
    /// `--mac-address`; `None`: derived from the address (stable).
    pub mac: Option<[u8; 6]>,
}

/// A MAC address as users write it (`02:42:de:ad:be:ef`); refused when
/// malformed, multicast or all zeros.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    (mac[0] & 1 == 0 && mac != [0; 6]).then_some(mac)
}

impl EndpointRequest {
    pub fn new(network: impl Into<String>) -> Self {
        EndpointRequest {
            network: network.into(),
            ..Default::default()
        }
    }
}

/// One policy rule as given: the source network (name, id or prefix) and
/// optionally one `(protocol, port)`.
pub type PolicyRuleSpec = (String, Option<(Proto, u16)>);

/// What [`BridgeNetworks::reconcile`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// (network id, container id) allocations released.
    pub released: Vec<(String, String)>,
    /// Containers whose endpoint records were dropped.
    pub dropped_containers: Vec<String>,
    pub deleted_links: Vec<String>,
    /// Non-fatal failures (the rest was still done).
    pub errors: Vec<String>,
}

/// Bridge networking of one daemon (see module doc).
pub struct BridgeNetworks<L: LinkOps = Netlink, R: NftRunner = Nft, P: PortProbe = SocketProbe> {
    /// Shared with background veth deletions (see [`Self::retire_veth`]).
    ipam: Arc<Ipam>,
    /// Shared with background link deletions (see [`Self::retire_link`]).
    store: Arc<NetworkStore>,
    links: Arc<L>,
    firewall: Firewall<R>,
    ports: PortAllocator<P>,
    sysctl: Sysctl,
    /// Links being deleted in the background, by name (see
    /// [`Self::retire_link`]).
    retiring: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Parked bridges of removed networks, for the next create (see the
    /// module doc).
    spares: Mutex<Vec<Spare>>,
    default_network: Option<DefaultNetwork>,
    /// Serialises computing + applying the firewall's desired state.
    fw_lock: Mutex<()>,
    /// Serialises network create/remove/reconcile (rare, and they check
    /// names and bridges across networks).
    net_lock: tokio::sync::Mutex<()>,
    /// Socket-level translation of host-local connects, kept equal to the
    /// published ports wherever the firewall is applied; `None` when off
    /// or refused by the kernel (DNAT alone then).
    socklb: Option<SockLb>,
}

impl BridgeNetworks {
    /// The real thing: rtnetlink in the caller's netns, `nft`, real sockets.
    /// Must be called inside a tokio runtime.
    pub fn open_host(cfg: BridgeConfig) -> Result<Self> {
        let socket_lb = cfg.socket_lb;
        let mut nets = BridgeNetworks::open(cfg, Netlink::new()?, Nft::default(), SocketProbe)?;
        if socket_lb {
            match SockLb::open() {
                Ok(lb) => {
                    tracing::info!(
                        cgroup = %lb.cgroup().display(),
                        "host-local connects to published ports are translated at connect time (socket-LB)"
                    );
                    nets.socklb = Some(lb);
                }
                Err(e) => tracing::warn!(
                    "socket-LB unavailable, published ports use nftables DNAT only: {e}"
                ),
            }
        }
        Ok(nets)
    }
}

/// Rollback steps of create/attach, undone in reverse.
enum Undo {
    IpamNetwork(String),
    OwnBridge(String),
    Bridge(String),
    StoreNetwork(String),
    Alloc { network: String, container: String },
    Ports(Vec<PublishedPort>),
    Veth(String),
    StoreContainer(Option<ContainerNet>),
}

impl<L: LinkOps, R: NftRunner, P: PortProbe> BridgeNetworks<L, R, P> {
    /// Open the stores and restore port reservations of the persisted
    /// endpoints. Touches no kernel state: call [`Self::reconcile`] next.
    pub fn open(cfg: BridgeConfig, links: L, nft: R, probe: P) -> Result<Self> {
        let ipam = Ipam::open(&cfg.data_dir, cfg.pools.clone())?;
        let store = NetworkStore::open(&cfg.data_dir)?;
        let ports = PortAllocator::new(cfg.port_range, probe)?;
        for (cid, c) in store.containers()? {
            ports.restore(&cid, &c.ports);
        }
        Ok(BridgeNetworks {
            ipam: Arc::new(ipam),
            store: Arc::new(store),
            links: Arc::new(links),
            firewall: Firewall::new(nft, cfg.firewall.clone()),
            ports,
            sysctl: Sysctl::with_root(&cfg.sysctl_root),
            retiring: Mutex::new(HashMap::new()),
            spares: Mutex::new(Vec::new()),
            default_network: cfg.default_network,
            fw_lock: Mutex::new(()),
            net_lock: tokio::sync::Mutex::new(()),
            socklb: None,
        })
    }

    pub fn links(&self) -> &L {
        &self.links
    }
    pub fn firewall(&self) -> &Firewall<R> {
        &self.firewall
    }
    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }
    pub fn store(&self) -> &NetworkStore {
        &self.store
    }
    pub fn ports(&self) -> &PortAllocator<P> {
        &self.ports
    }
    /// The socket-LB, when it is on.
    pub fn socket_lb(&self) -> Option<&SockLb> {
        self.socklb.as_ref()
    }

    // ---- queries ----

    /// All networks, by name.
    pub fn networks(&self) -> Result<Vec<NetworkRecord>> {
        Ok(self.store.list()?)
    }

    /// A network by id, name or id prefix.
    pub fn network(&self, key: &str) -> Result<NetworkRecord> {
        Ok(self.store.resolve(key)?)
    }

    /// The containers on a network (inspect's `Containers`): container id
    /// -> its endpoint there.
    /// Every container's endpoints on every network, by container ID (one
    /// read of the store, for callers that want several networks).
    pub fn container_endpoints(&self) -> Result<BTreeMap<String, Vec<Endpoint>>> {
        Ok(self.store.container_endpoints()?)
    }

    pub fn network_endpoints(&self, network_id: &str) -> Result<BTreeMap<String, Endpoint>> {
        let mut out = BTreeMap::new();
        for (cid, eps) in self.store.container_endpoints()? {
            if let Some(e) = eps.into_iter().find(|e| e.network_id == network_id) {
                out.insert(cid, e);
            }
        }
        Ok(out)
    }

    /// A container's endpoints and published ports (empty when it has none).
    pub fn endpoints(&self, container_id: &str) -> Result<ContainerNet> {
        Ok(self.store.container(container_id)?.unwrap_or_default())
    }

    /// What the firewall must contain, from the persisted state.
    pub fn desired_state(&self) -> Result<DesiredState> {
        let networks = self
            .store
            .list()?
            .into_iter()
            .map(|n| FwNetwork {
                subnets: n.subnets(),
                // The embedded DNS serves user-defined networks on their
                // gateways; the default network has none (as in Docker).
                dns: if n.default {
                    vec![]
                } else {
                    n.subnets.iter().map(|s| s.gateway).collect()
                },
                bridge: n.bridge,
                internal: n.internal,
            })
            .collect();
        let mut ports = Vec::new();
        for c in self.store.containers()?.values() {
            let Some(gw) = c.gateway_endpoint() else {
                continue;
            };
            for p in &c.ports {
                if let Some(ip) = gw.ip(p.host_ip.is_ipv6()) {
                    ports.push(p.mapping(ip.addr()));
                }
            }
        }
        ports.sort();
        let nets: HashMap<String, String> = self
            .store
            .list()?
            .into_iter()
            .map(|n| (n.id, n.bridge))
            .collect();
        let mut policies = Vec::new();
        for p in self.store.policies()? {
            let Some(to) = nets.get(&p.network) else {
                continue;
            };
            for (allow, rules) in [(false, &p.deny), (true, &p.allow)] {
                for r in rules {
                    // A source network removed since: nothing comes from it.
                    if let Some(from) = nets.get(&r.from) {
                        policies.push(FwPolicyRule {
                            from: from.clone(),
                            to: to.clone(),
                            port: r.port,
                            allow,
                        });
                    }
                }
            }
        }
        policies.sort();
        policies.dedup();
        Ok(DesiredState {
            networks,
            ports,
            policies,
        })
    }

    fn apply_firewall(&self) -> Result<()> {
        let _g = self.fw_lock.lock().unwrap_or_else(|p| p.into_inner());
        let st = self.desired_state()?;
        // The socket-LB follows the records even when nft fails: the caller
        // rolls back and applies again, and an entry left pointing at a
        // released address would be worse than a missing one.
        self.sync_socklb(&st);
        self.firewall.apply(&st)?;
        Ok(())
    }

    /// Make the socket-LB's map equal to `st`'s published ports. A failed
    /// entry is logged and left to DNAT (the connect is never refused).
    /// Called under `fw_lock` with the state being applied.
    fn sync_socklb(&self, st: &DesiredState) {
        if let Some(lb) = &self.socklb {
            if let Err(e) = lb.sync(&st.ports) {
                tracing::warn!("{e} (those ports use nftables DNAT only)");
            }
        }
    }

    /// Re-apply the whole firewall if its table vanished (`nft flush
    /// ruleset`, a firewall reload), and put back a foreign accept rule a
    /// firewall reload dropped. Returns whether it had to. Cheap enough to
    /// call periodically: one listing of the chains (no rules, no set
    /// elements), one more per foreign chain with policy drop.
    pub fn ensure_firewall(&self) -> Result<bool> {
        match self.firewall.check()? {
            Health::Ok => Ok(false),
            Health::ForeignRuleMissing => {
                self.firewall.sync_foreign(false)?;
                Ok(true)
            }
            Health::TableMissing => {
                let _g = self.fw_lock.lock().unwrap_or_else(|p| p.into_inner());
                let st = self.desired_state()?;
                self.sync_socklb(&st);
                self.firewall.reload(&st)?;
                Ok(true)
            }
        }
    }

    /// Delete a host link in the background. The kernel acknowledges a
    /// deletion only after an RCU barrier (~35 ms for a bridge, ~20 ms for
    /// a veth) that nothing here needs: the record is already gone, and
    /// whoever needs the name again waits for it ([`Self::settle_link`]).
    /// `disown`: drop the bridge's ownership record once it is gone; until
    /// then a crash leaves it owned, and reconcile deletes it. A failed
    /// deletion is logged and left to reconcile.
    fn retire_link(&self, name: String, disown: bool) {
        let links = Arc::clone(&self.links);
        let store = Arc::clone(&self.store);
        let n = name.clone();
        let task = tokio::spawn(async move {
            match links.delete_link(&n).await {
                Ok(_) if disown => {
                    if let Err(e) = store.disown_bridge_unsynced(&n) {
                        tracing::warn!("bridge {n} deleted, but: {e}");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("deleting {n}: {e} (reconcile removes it)"),
            }
        });
        self.track_retiring(name, task);
    }

    /// Delete a container's host veth on one network in the background,
    /// then release its addresses there (an address is free again only
    /// once no interface of the container can still hold it). The kernel
    /// acknowledges a veth deletion only after an RCU barrier (~20 ms)
    /// that `rm` need not wait for. Attaching the same container to the
    /// same network again waits for it ([`Self::settle_link`] on the veth's
    /// name). After a crash in between, reconcile deletes the veth and
    /// releases the addresses of a container that is not alive.
    fn retire_veth(&self, container_id: &str, network_id: &str) {
        let links = Arc::clone(&self.links);
        let ipam = Arc::clone(&self.ipam);
        let name = host_veth_name(container_id, network_id);
        let (n, net, cid) = (
            name.clone(),
            network_id.to_string(),
            container_id.to_string(),
        );
        let task = tokio::spawn(async move {
            if let Err(e) = links.delete_link(&n).await {
                tracing::warn!("deleting {n}: {e} (reconcile removes it)");
            }
            if let Err(e) = ipam.release_unsynced(&net, &cid) {
                tracing::warn!("releasing the addresses of {cid} on {net}: {e}");
            }
        });
        self.track_retiring(name, task);
    }

    /// Remember the background deletion of link `name`, dropping the
    /// finished ones.
    fn track_retiring(&self, name: String, task: tokio::task::JoinHandle<()>) {
        let mut r = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        r.retain(|_, t| !t.is_finished());
        r.insert(name, task);
    }

    /// Wait until the background deletion of link `name` (if any) is done.
    async fn settle_link(&self, name: &str) {
        let task = self
            .retiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    /// Whether any background link deletion is still running.
    fn retiring_any(&self) -> bool {
        let mut r = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        r.retain(|_, t| !t.is_finished());
        !r.is_empty()
    }

    /// Wait until every background link deletion is done.
    async fn settle_retiring(&self) {
        let tasks: Vec<_> = self
            .retiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, t)| t)
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Delete the spare bridges and wait until every background link
    /// deletion is done (reconcile, restore, tests).
    pub async fn settle(&self) {
        let spares: Vec<Spare> =
            std::mem::take(&mut *self.spares.lock().unwrap_or_else(|p| p.into_inner()));
        for sp in spares {
            match self.links.delete_link(&sp.name).await {
                Ok(_) => {
                    if let Err(e) = self.store.disown_bridge_unsynced(&sp.name) {
                        tracing::warn!("spare bridge {} deleted, but: {e}", sp.name);
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "deleting spare bridge {}: {e} (reconcile removes it)",
                        sp.name
                    )
                }
            }
        }
        self.settle_retiring().await;
    }

    // ---- networks ----

    /// `network create`: validate everything, then IPAM, bridge, sysctls,
    /// record, firewall; undo in reverse on failure.
    pub async fn create_network(&self, req: CreateNetwork) -> Result<NetworkRecord> {
        if ["host", "none", "default"].contains(&req.name.as_str()) {
            return Err(BridgeError::Predefined(req.name.clone()));
        }
        let _g = self.net_lock.lock().await;
        self.create_locked(req, false).await
    }

    async fn create_locked(&self, req: CreateNetwork, default: bool) -> Result<NetworkRecord> {
        // -- validate --
        validate_name(&req.name)?;
        match req.driver.as_deref() {
            None | Some("") | Some("bridge") => {}
            Some(d) => return Err(BridgeError::UnsupportedDriver(d.to_string())),
        }
        let existing = self.store.list()?;
        if existing.iter().any(|n| n.name == req.name) {
            return Err(StoreError::NameExists(req.name.clone()).into());
        }
        let custom = req
            .options
            .get(OPT_BRIDGE_NAME)
            .is_some_and(|b| !b.is_empty());
        // A spare's id when there is one and the bridge is ours to name
        // (taken in the act phase, see the module doc).
        let spare = self
            .spares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .cloned()
            .filter(|_| !custom && !default);
        let id = spare.as_ref().map_or_else(new_id, |s| s.id.clone());
        let bridge = match req.options.get(OPT_BRIDGE_NAME).filter(|b| !b.is_empty()) {
            Some(b) => {
                check_ifname(b).map_err(|e| BridgeError::InvalidOption {
                    key: OPT_BRIDGE_NAME.into(),
                    value: b.clone(),
                    reason: e.to_string(),
                })?;
                b.clone()
            }
            None => bridge_name(&id),
        };
        if let Some(n) = existing.iter().find(|n| n.bridge == bridge) {
            return Err(BridgeError::BridgeInUse {
                bridge,
                network: n.name.clone(),
            });
        }
        let mtu = match req.options.get(OPT_MTU).filter(|m| !m.is_empty()) {
            None => None,
            Some(m) => Some(
                m.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|v| (68..=65535).contains(v))
                    .ok_or_else(|| BridgeError::InvalidOption {
                        key: OPT_MTU.into(),
                        value: m.clone(),
                        reason: "an MTU is a number from 68 to 65535".into(),
                    })?,
            ),
        };
        let fam = |r: &SubnetRequest| match r.subnet {
            Some(s) => Family::of_net(&s),
            None if r.v6 => Family::V6,
            None => Family::V4,
        };
        let mut subnets = req.subnets.clone();
        if !subnets.iter().any(|r| fam(r) == Family::V4) {
            subnets.insert(0, SubnetRequest::default());
        }
        if req.ipv6 && !subnets.iter().any(|r| fam(r) == Family::V6) {
            subnets.push(SubnetRequest {
                v6: true,
                ..Default::default()
            });
        }
        let ipv6 = subnets.iter().any(|r| fam(r) == Family::V6);
        let mut options = req.options.clone();
        if default {
            options.insert(OPT_BRIDGE_NAME.into(), bridge.clone());
            options.insert(OPT_DEFAULT_BRIDGE.into(), "true".into());
        }

        // -- act --
        // A bridge of this name still being deleted must be gone first.
        self.settle_link(&bridge).await;
        let mut undo = Vec::new();
        let res = async {
            let routes = self.links.routes().await?;
            // Not synced: the record's commit below is, and a plan lost
            // in a crash is rebuilt from it (restore, reconcile).
            let configs = self.ipam.create_network_unsynced(&id, &subnets, &routes)?;
            undo.push(Undo::IpamNetwork(id.clone()));
            let rec = NetworkRecord {
                id: id.clone(),
                name: req.name.clone(),
                driver: "bridge".into(),
                subnets: configs,
                ipv6,
                internal: req.internal,
                attachable: req.attachable,
                labels: req.labels.clone(),
                options,
                created: Utc::now(),
                bridge: bridge.clone(),
                mtu,
                default,
            };
            let mut adopted = false;
            let own_spare = spare.and_then(|s| self.take_spare(&s.name));
            if let Some(sp) = own_spare {
                // Owned since the rm that parked it, under this name.
                undo.push(Undo::OwnBridge(bridge.clone()));
                undo.push(Undo::Bridge(bridge.clone()));
                adopted = self.adopt_spare(sp, &bridge_spec(&rec)).await;
            } else if !self.links.link_exists(&bridge).await? {
                self.store.own_bridge(&bridge, &id)?;
                undo.push(Undo::OwnBridge(bridge.clone()));
                undo.push(Undo::Bridge(bridge.clone()));
                let any = self.spares.lock().unwrap_or_else(|p| p.into_inner()).pop();
                if let Some(sp) = any {
                    adopted = self.adopt_spare(sp, &bridge_spec(&rec)).await;
                }
            }
            if adopted {
                self.bridge_sysctls(&rec, true)?;
            } else {
                self.setup_bridge(&rec).await?;
            }
            self.store.insert(&rec)?;
            undo.push(Undo::StoreNetwork(id.clone()));
            self.apply_firewall()?;
            Ok(rec)
        }
        .await;
        if res.is_err() {
            self.undo("", undo).await;
        }
        res
    }

    /// Bridge up with its gateway addresses and the sysctls it needs
    /// (also the reconcile step after a reboot).
    async fn setup_bridge(&self, rec: &NetworkRecord) -> Result<()> {
        self.links.ensure_bridge(&bridge_spec(rec)).await?;
        self.bridge_sysctls(rec, false)
    }

    /// The sysctls of a network's bridge; `reused`: an adopted spare,
    /// whose own `route_localnet` is its previous network's.
    fn bridge_sysctls(&self, rec: &NetworkRecord, reused: bool) -> Result<()> {
        if !rec.internal {
            self.sysctl.enable_ipv4_forward()?;
            if rec.ipv6 {
                self.sysctl.enable_ipv6_forward()?;
            }
            self.sysctl.enable_route_localnet(&rec.bridge)?;
        } else if reused {
            self.sysctl.set_route_localnet(&rec.bridge, false)?;
        }
        Ok(())
    }

    /// The spare named `name`, out of the pool (`None`: settle() took
    /// it meanwhile).
    fn take_spare(&self, name: &str) -> Option<Spare> {
        let mut sp = self.spares.lock().unwrap_or_else(|p| p.into_inner());
        let i = sp.iter().position(|s| s.name == name)?;
        Some(sp.remove(i))
    }

    /// Make spare `sp` `spec`'s bridge, if it can pass for a new one.
    /// `spec.name` is owned already (the spare's own name, or the
    /// caller's record), so a crash from here leaves both to reconcile.
    /// Returns whether it did; a spare that cannot be used is deleted
    /// (with its ownership record once gone), and the caller creates a
    /// new bridge.
    async fn adopt_spare(&self, sp: Spare, spec: &BridgeSpec) -> bool {
        let renamed = sp.name != spec.name;
        match self.links.adopt_bridge(&sp.name, &sp.addresses, spec).await {
            Ok(Some(_)) => {
                if renamed {
                    // Unsynced: after a crash reconcile finds the name in
                    // no network and not in the kernel.
                    if let Err(e) = self.store.disown_bridge_unsynced(&sp.name) {
                        tracing::warn!("bridge {} reused as {}, but: {e}", sp.name, spec.name);
                    }
                }
                true
            }
            Ok(None) => {
                self.retire_link(sp.name.clone(), renamed);
                if !renamed {
                    // Same name as the new bridge: gone before it is made.
                    self.settle_link(&sp.name).await;
                }
                false
            }
            Err(e) => {
                // Possibly half-renamed: both names go before a new
                // bridge is made; the records stay for reconcile.
                tracing::warn!("reusing bridge {} as {}: {e}", sp.name, spec.name);
                for n in [&sp.name, &spec.name] {
                    if let Err(e) = self.links.delete_link(n).await {
                        tracing::warn!("deleting {n}: {e} (reconcile removes it)");
                    }
                }
                false
            }
        }
    }

    /// After `network rm`: its bridge down at once (its routes go, so the
    /// next create may take the same subnet) and, with `next` (an id
    /// whose bridge name the rm's commit made ours), parked under that
    /// name as a spare; else deleted in the background. The old name's
    /// ownership record goes without fsync: after a crash reconcile
    /// drops it (the name is not in the kernel), and deletes the spare
    /// (owned, of no network).
    async fn park_or_retire(&self, rec: &NetworkRecord, next: Option<String>) -> Result<()> {
        if let Some(id) = next {
            let spare = bridge_name(&id);
            match self.links.park_bridge(&rec.bridge, &spare).await {
                Ok(parked) => {
                    if parked {
                        self.spares
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Spare {
                                id,
                                name: spare,
                                addresses: rec.subnets.iter().map(gateway_net).collect(),
                            });
                    } else {
                        self.store.disown_bridge_unsynced(&spare)?;
                    }
                    self.store.disown_bridge_unsynced(&rec.bridge)?;
                    return Ok(());
                }
                // The spare's name stays owned: whether the rename
                // happened or not, reconcile settles it.
                Err(e) => tracing::warn!("parking bridge {}: {e}; deleting it", rec.bridge),
            }
        }
        self.links.set_link_down(&rec.bridge).await?;
        self.retire_link(rec.bridge.clone(), true);
        Ok(())
    }

    async fn undo(&self, container: &str, steps: Vec<Undo>) {
        for step in steps.into_iter().rev() {
            let r: Result<()> = async {
                match step {
                    Undo::IpamNetwork(id) => self.ipam.remove_network(&id)?,
                    Undo::OwnBridge(b) => self.store.disown_bridge(&b)?,
                    Undo::Bridge(b) | Undo::Veth(b) => {
                        self.links.delete_link(&b).await?;
                    }
                    Undo::StoreNetwork(id) => {
                        self.store.remove(&id)?;
                        self.apply_firewall()?;
                    }
                    Undo::Alloc { network, container } => {
                        self.ipam.release(&network, &container)?;
                    }
                    Undo::Ports(p) => self.ports.release_ports(container, &p),
                    Undo::StoreContainer(prev) => {
                        self.store
                            .put_container(container, &prev.unwrap_or_default())?;
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = r {
                tracing::warn!("rollback step failed: {e}");
            }
        }
    }

    /// Create the default network if it does not exist (daemon start).
    pub async fn ensure_default_network(&self) -> Result<Option<NetworkRecord>> {
        let Some(d) = self.default_network.clone() else {
            return Ok(None);
        };
        let _g = self.net_lock.lock().await;
        if let Some(r) = self.store.list()?.into_iter().find(|n| n.default) {
            return Ok(Some(r));
        }
        let mut options = BTreeMap::new();
        if let Some(m) = d.mtu {
            options.insert(OPT_MTU.to_string(), m.to_string());
        }
        options.insert(OPT_BRIDGE_NAME.to_string(), d.bridge.clone());
        let subnets = match d.subnet {
            Some(s) => vec![SubnetRequest {
                v6: s.addr().is_ipv6(),
                subnet: Some(s),
                gateway: d.gateway,
                ip_range: None,
            }],
            None => vec![],
        };
        let rec = self
            .create_locked(
                CreateNetwork {
                    name: d.name,
                    subnets,
                    options,
                    ..Default::default()
                },
                true,
            )
            .await?;
        Ok(Some(rec))
    }

    /// `network rm`: refused for the default network and while containers
    /// are attached.
    pub async fn remove_network(&self, key: &str) -> Result<NetworkRecord> {
        if ["host", "none"].contains(&key) {
            return Err(BridgeError::Predefined(key.to_string()));
        }
        let _g = self.net_lock.lock().await;
        let rec = self.store.resolve(key)?;
        if rec.default {
            return Err(BridgeError::Predefined(rec.name.clone()));
        }
        let users: Vec<String> = self.network_endpoints(&rec.id)?.into_keys().collect();
        let in_use = |containers: Vec<String>| BridgeError::InUse {
            network: rec.name.clone(),
            id: rec.id.clone(),
            containers,
        };
        if !users.is_empty() {
            return Err(in_use(users));
        }
        let owned = self.store.owned_bridges()?.contains_key(&rec.bridge);
        // Room for a spare: its future name is owned in the commit below.
        let next = (owned
            && self.spares.lock().unwrap_or_else(|p| p.into_inner()).len() < MAX_SPARES)
            .then(new_id);
        // Atomic check-and-remove: an attach racing with us either got
        // its address first (refused here) or finds no plan. Not synced:
        // the record's removal below is, and reconcile removes a plan
        // that belongs to no network.
        let mut removed = self.ipam.remove_network_unsynced(&rec.id);
        if matches!(removed, Err(IpamError::NetworkInUse { .. })) && self.retiring_any() {
            // Addresses of removed containers are released only once their
            // veths are gone (`retire_veth`): `rm -f c && network rm n`
            // must not see them as users.
            self.settle_retiring().await;
            removed = self.ipam.remove_network_unsynced(&rec.id);
        }
        match removed {
            Ok(()) => {}
            Err(IpamError::NetworkInUse { containers, .. }) => return Err(in_use(containers)),
            Err(e) => return Err(e.into()),
        }
        // The record and its policies in one commit (the firewall update
        // below drops the policies' rules).
        let own = next.as_ref().map(|id| (bridge_name(id), id.as_str()));
        if let Err(e) = self
            .store
            .remove_with_policies(&rec.id, own.as_ref().map(|(b, id)| (b.as_str(), *id)))
        {
            if let Err(r) = self.ipam.restore_network(&rec.id, &rec.subnets) {
                tracing::warn!("rollback of IPAM for {}: {r}", rec.name);
            }
            return Err(e.into());
        }
        // From here the network is gone; leftovers are reported and
        // reconcile removes them.
        let mut errs = Vec::new();
        if let Err(e) = self.apply_firewall() {
            errs.push(e.to_string());
        }
        if owned {
            if let Err(e) = self.park_or_retire(&rec, next).await {
                errs.push(e.to_string());
            }
        }
        if errs.is_empty() {
            Ok(rec)
        } else {
            Err(BridgeError::RemovePartial {
                network: rec.name,
                err: errs.join("; "),
            })
        }
    }

    /// `network prune`: remove every unused, non-default network `keep`
    /// does not protect (the API's `until`/`label` filters). Returns the
    /// removed names.
    pub async fn prune(&self, keep: impl Fn(&NetworkRecord) -> bool) -> Result<Vec<String>> {
        let used: BTreeSet<String> = self
            .store
            .containers()?
            .values()
            .flat_map(|c| c.endpoints.iter().map(|e| e.network_id.clone()))
            .collect();
        let mut out = Vec::new();
        for n in self.store.list()? {
            if n.default || used.contains(&n.id) || keep(&n) {
                continue;
            }
            match self.remove_network(&n.id).await {
                Ok(r) => out.push(r.name),
                // Someone attached meanwhile: not an error for prune.
                Err(BridgeError::InUse { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    // ---- policies ----

    /// `network policy create`: ingress rules for the containers of
    /// `network`, each from a network (name, id or prefix) to every port
    /// or to `(proto, port)`. Validated (every network exists), recorded,
    /// then applied in one nftables transaction; a failed apply removes
    /// the record again.
    pub async fn create_policy(
        &self,
        name: &str,
        network: &str,
        deny: &[PolicyRuleSpec],
        allow: &[PolicyRuleSpec],
    ) -> Result<PolicyRecord> {
        validate_name(name)?;
        if deny.is_empty() && allow.is_empty() {
            return Err(BridgeError::EmptyPolicy(name.to_string()));
        }
        let _g = self.net_lock.lock().await;
        let target = self.store.resolve(network)?;
        let rules = |list: &[PolicyRuleSpec]| -> Result<Vec<PolicyRule>> {
            let mut out: Vec<PolicyRule> = Vec::new();
            for (from, port) in list {
                if let Some((_, 0)) = port {
                    return Err(BridgeError::InvalidPolicyPort(from.clone()));
                }
                let r = PolicyRule {
                    from: self.store.resolve(from)?.id,
                    port: *port,
                };
                if !out.contains(&r) {
                    out.push(r);
                }
            }
            Ok(out)
        };
        let rec = PolicyRecord {
            id: new_id(),
            name: name.to_string(),
            network: target.id.clone(),
            deny: rules(deny)?,
            allow: rules(allow)?,
            created: Utc::now(),
        };
        self.store.insert_policy(&rec)?;
        if let Err(e) = self.apply_firewall() {
            if let Err(r) = self.store.remove_policy(&rec.id) {
                tracing::warn!("rollback of policy {name}: {r}");
            }
            return Err(e);
        }
        Ok(rec)
    }

    /// All policies, by name.
    pub fn policies(&self) -> Result<Vec<PolicyRecord>> {
        Ok(self.store.policies()?)
    }

    /// A policy by id, name or id prefix.
    pub fn policy(&self, key: &str) -> Result<PolicyRecord> {
        Ok(self.store.resolve_policy(key)?)
    }

    /// `network policy rm`: the record, then the rules (one transaction).
    pub async fn remove_policy(&self, key: &str) -> Result<PolicyRecord> {
        let _g = self.net_lock.lock().await;
        let p = self.store.resolve_policy(key)?;
        self.store.remove_policy(&p.id)?;
        if let Err(e) = self.apply_firewall() {
            if let Err(r) = self.store.insert_policy(&p) {
                tracing::warn!("rollback of policy removal {}: {r}", p.name);
            }
            return Err(e);
        }
        Ok(p)
    }

    // ---- containers ----

    /// Connect a container (init `pid`) to networks and publish its ports;
    /// see [`Self::attach_netns`].
    pub async fn attach(
        &self,
        container_id: &str,
        pid: i32,
        endpoints: Vec<EndpointRequest>,
        ports: Vec<PortRequest>,
    ) -> Result<Vec<Endpoint>> {
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        self.attach_netns(container_id, &netns, endpoints, ports)
            .await
    }

    /// Connect the netns at `netns` to networks: one veth each, named
    /// after the container's existing interfaces (`eth0`, `eth1`, ...); the
    /// default route via the first non-internal network; `ports` published
    /// to that network's addresses. Also `network connect` on a running
    /// container (then usually with no ports). All or nothing. Returns the
    /// new endpoints.
    pub async fn attach_netns(
        &self,
        container_id: &str,
        netns: &Path,
        endpoints: Vec<EndpointRequest>,
        ports: Vec<PortRequest>,
    ) -> Result<Vec<Endpoint>> {
        // -- validate --
        let prev = self.store.container(container_id)?;
        let mut cur = prev.clone().unwrap_or_default();
        let mut nets = Vec::new();
        for r in &endpoints {
            let n = self.store.resolve(&r.network)?;
            if nets.iter().any(|(m, _): &(NetworkRecord, _)| m.id == n.id) {
                return Err(BridgeError::DuplicateNetwork(n.name));
            }
            if cur.endpoints.iter().any(|e| e.network_id == n.id) {
                return Err(BridgeError::AlreadyAttached {
                    container: container_id.to_string(),
                    network: n.name,
                });
            }
            nets.push((n, r));
        }
        let has_gw = cur.gateway_endpoint().is_some();
        let gw_new = if has_gw {
            None
        } else {
            nets.iter().position(|(n, _)| !n.internal)
        };
        if !ports.is_empty() && !has_gw && gw_new.is_none() {
            return Err(BridgeError::NoGatewayForPorts);
        }
        let mut used_if: BTreeSet<String> =
            cur.endpoints.iter().map(|e| e.ifname.clone()).collect();

        // -- act --
        let mut undo = Vec::new();
        let res = async {
            let mut new = Vec::new();
            for (i, (n, r)) in nets.iter().enumerate() {
                // A detach of this container from this network may still
                // be deleting its veth and releasing its addresses.
                self.settle_link(&host_veth_name(container_id, &n.id)).await;
                let a = match self.ipam.allocate(&n.id, container_id, &r.ips) {
                    // The address may be held by a removed container whose
                    // veth is still going (`retire_veth`): once those are
                    // done, try again, so `rm` then `run --ip` the same
                    // address works as it always did.
                    Err(IpamError::AddressInUse { .. } | IpamError::Exhausted { .. })
                        if self.retiring_any() =>
                    {
                        self.settle_retiring().await;
                        self.ipam.allocate(&n.id, container_id, &r.ips)?
                    }
                    other => other?,
                };
                undo.push(Undo::Alloc {
                    network: n.id.clone(),
                    container: container_id.to_string(),
                });
                let ifname = (0..)
                    .map(|k| format!("eth{k}"))
                    .find(|f| !used_if.contains(f))
                    .expect("unbounded");
                used_if.insert(ifname.clone());
                let first = a
                    .iter()
                    .find(|x| x.ip.is_ipv4())
                    .or(a.first())
                    .map(|x| x.ip);
                new.push(Endpoint {
                    network_id: n.id.clone(),
                    network_name: n.name.clone(),
                    endpoint_id: new_id(),
                    ifname,
                    host_veth: host_veth_name(container_id, &n.id),
                    mac: r
                        .mac
                        .or(first.map(mac_for))
                        .map(|m| mac_string(&m))
                        .unwrap_or_default(),
                    addresses: a.iter().map(|x| x.ip_net()).collect(),
                    gateways: a.iter().map(|x| x.gateway).collect(),
                    aliases: r.aliases.clone(),
                    static_ips: r.ips.clone(),
                    is_gateway: gw_new == Some(i),
                });
            }
            let mut published = Vec::new();
            if !ports.is_empty() {
                let gw = cur
                    .gateway_endpoint()
                    .or_else(|| new.iter().find(|e| e.is_gateway))
                    .ok_or(BridgeError::NoGatewayForPorts)?;
                published = self.ports.reserve(
                    container_id,
                    &ports,
                    gw.ip(false).is_some(),
                    gw.ip(true).is_some(),
                )?;
                undo.push(Undo::Ports(published.clone()));
            }
            for (e, (n, _)) in new.iter().zip(&nets) {
                self.links
                    .create_veth(&VethSpec {
                        host_name: e.host_veth.clone(),
                        bridge: n.bridge.clone(),
                        netns: netns.to_path_buf(),
                        container_ifname: e.ifname.clone(),
                        mtu: n.mtu,
                        mac: parse_mac(&e.mac).unwrap_or([0x02, 0x42, 0, 0, 0, 0]),
                        addresses: e.addresses.clone(),
                        default_gateways: if e.is_gateway {
                            e.gateways.clone()
                        } else {
                            vec![]
                        },
                    })
                    .await?;
                undo.push(Undo::Veth(e.host_veth.clone()));
            }
            cur.endpoints.extend(new.iter().cloned());
            cur.ports.extend(published.iter().copied());
            self.store.put_container(container_id, &cur)?;
            undo.push(Undo::StoreContainer(prev.clone()));
            if !published.is_empty() {
                self.apply_firewall()?;
            }
            Ok(new)
        }
        .await;
        if res.is_err() {
            let had_ports =
                undo.iter().any(|u| matches!(u, Undo::StoreContainer(_))) && !ports.is_empty();
            self.undo(container_id, undo).await;
            if had_ports {
                if let Err(e) = self.apply_firewall() {
                    tracing::warn!("firewall after rollback: {e}");
                }
            }
        }
        res
    }

    /// `network disconnect`: remove one endpoint. Ports published through
    /// it go with it.
    pub async fn disconnect(&self, container_id: &str, network: &str) -> Result<()> {
        let n = self.store.resolve(network)?;
        let mut cur = self.store.container(container_id)?.unwrap_or_default();
        let Some(pos) = cur.endpoints.iter().position(|e| e.network_id == n.id) else {
            return Err(BridgeError::NotAttached {
                container: container_id.to_string(),
                network: n.name,
            });
        };
        let ep = cur.endpoints.remove(pos);
        let dropped = if ep.is_gateway {
            std::mem::take(&mut cur.ports)
        } else {
            vec![]
        };
        self.store.put_container(container_id, &cur)?;
        let mut errs: Vec<BridgeError> = Vec::new();
        if !dropped.is_empty() {
            self.ports.release_ports(container_id, &dropped);
            if let Err(e) = self.apply_firewall() {
                errs.push(e);
            }
        }
        if let Err(e) = self.links.delete_link(&ep.host_veth).await {
            errs.push(e.into());
        }
        if let Err(e) = self.ipam.release(&n.id, container_id) {
            errs.push(e.into());
        }
        match errs.into_iter().next() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Undo every attach of the container: ports, firewall, veths,
    /// addresses. Safe for a container never (or partly) attached; keeps
    /// going past errors and returns all of them. Its commits are not
    /// fsynced (the container is gone: after a crash, reconcile drops what
    /// they would have), which keeps disk flushes off every container
    /// removal; veths and their addresses go in the background
    /// ([`Self::retire_veth`]).
    pub async fn detach(&self, container_id: &str) -> Vec<BridgeError> {
        let mut errs: Vec<BridgeError> = Vec::new();
        let rec = match self.store.remove_container_unsynced(container_id) {
            Ok(r) => r,
            Err(e) => {
                errs.push(e.into());
                None
            }
        };
        let released = self.ports.release(container_id);
        if released > 0 || rec.as_ref().is_some_and(|r| !r.ports.is_empty()) {
            if let Err(e) = self.apply_firewall() {
                errs.push(e);
            }
        }
        let mut nets: BTreeSet<String> = rec
            .iter()
            .flat_map(|r| r.endpoints.iter().map(|e| e.network_id.clone()))
            .collect();
        match self.ipam.allocations(None) {
            Ok(rows) => nets.extend(
                rows.into_iter()
                    .filter(|(_, c, _)| c == container_id)
                    .map(|(n, _, _)| n),
            ),
            Err(e) => errs.push(e.into()),
        }
        // Veths, then each one's addresses, in the background.
        for n in &nets {
            self.retire_veth(container_id, n);
        }
        errs
    }

    /// Daemon start, before any container is re-adopted or restarted: the
    /// default network, every network's bridge (gone after a reboot) and
    /// the whole firewall. Removes nothing; [`Self::reconcile`] follows
    /// once the live containers are known. Failures are reported, not
    /// fatal (the rest is still done).
    pub async fn restore(&self) -> Vec<String> {
        self.settle().await;
        let mut errors = Vec::new();
        if let Err(e) = self.ensure_default_network().await {
            errors.push(format!("default network: {e}"));
        }
        let _g = self.net_lock.lock().await;
        let nets = match self.store.list() {
            Ok(n) => n,
            Err(e) => return vec![e.to_string()],
        };
        let present: HashSet<String> = match self.links.list_links().await {
            Ok(l) => l.into_iter().map(|l| l.name).collect(),
            Err(e) => return vec![e.to_string()],
        };
        let owned = self.store.owned_bridges().unwrap_or_default();
        for n in &nets {
            if let Err(e) = self.ipam.restore_network(&n.id, &n.subnets) {
                errors.push(format!("address plan of {}: {e}", n.name));
            }
            if !present.contains(&n.bridge) && !owned.contains_key(&n.bridge) {
                if let Err(e) = self.store.own_bridge(&n.bridge, &n.id) {
                    errors.push(e.to_string());
                }
            }
            if let Err(e) = self.setup_bridge(n).await {
                errors.push(format!("bridge {} of {}: {e}", n.bridge, n.name));
            }
        }
        let _f = self.fw_lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.desired_state() {
            Ok(st) => {
                self.sync_socklb(&st);
                if let Err(e) = self.firewall.reload(&st) {
                    errors.push(format!("firewall: {e}"));
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
        errors
    }

    /// Bring the kernel and the records in line with `live` (the ids of
    /// containers that exist and may be running): create the default
    /// network, drop records and addresses of other containers, delete
    /// their veths and the bridges of networks that no longer exist,
    /// recreate missing bridges, re-apply the whole firewall. Daemon start
    /// and `network reload`.
    pub async fn reconcile(&self, live: &HashSet<String>) -> Result<ReconcileReport> {
        self.settle().await;
        let mut rep = ReconcileReport::default();
        if let Err(e) = self.ensure_default_network().await {
            rep.errors.push(format!("default network: {e}"));
        }
        let _g = self.net_lock.lock().await;
        let nets = self.store.list()?;
        let net_ids: HashSet<&str> = nets.iter().map(|n| n.id.as_str()).collect();

        // Records of dead containers.
        let containers = self.store.containers()?;
        for cid in containers.keys().filter(|c| !live.contains(*c)) {
            self.store.remove_container(cid)?;
            rep.dropped_containers.push(cid.clone());
        }
        // Endpoints on networks that vanished (crash in the middle of rm).
        for (cid, c) in containers.iter().filter(|(c, _)| live.contains(*c)) {
            let mut c2 = c.clone();
            c2.endpoints
                .retain(|e| net_ids.contains(e.network_id.as_str()));
            if c2.gateway_endpoint().is_none() {
                c2.ports.clear();
            }
            if &c2 != c {
                self.store.put_container(cid, &c2)?;
            }
        }
        // Addresses: plans lost with an unsynced create, allocations of
        // dead containers, plans of networks that are gone.
        for n in &nets {
            self.ipam.restore_network(&n.id, &n.subnets)?;
        }
        rep.released = self.ipam.reconcile(live)?;
        for (id, _) in self.ipam.networks()? {
            if net_ids.contains(id.as_str()) {
                continue;
            }
            for (n, c, _) in self.ipam.allocations(Some(&id))? {
                self.ipam.release(&n, &c)?;
                rep.released.push((n, c));
            }
            self.ipam.remove_network(&id)?;
        }
        // Ports.
        self.ports.clear();
        let containers = self.store.containers()?;
        for (cid, c) in &containers {
            self.ports.restore(cid, &c.ports);
        }
        // Links: veths of dead containers, bridges of removed networks.
        let mut keep: HashSet<String> = HashSet::new();
        for cid in live {
            for n in &nets {
                keep.insert(host_veth_name(cid, &n.id));
            }
        }
        let owned = self.store.owned_bridges()?;
        for l in self.links.list_links().await? {
            let stale_veth = l.name.starts_with(HOST_VETH_PREFIX)
                && l.kind.as_deref() == Some("veth")
                && !keep.contains(&l.name);
            let stale_bridge = owned
                .get(&l.name)
                .is_some_and(|nid| !net_ids.contains(nid.as_str()));
            if stale_veth || stale_bridge {
                match self.links.delete_link(&l.name).await {
                    Ok(_) => rep.deleted_links.push(l.name.clone()),
                    Err(e) => rep.errors.push(format!("delete {}: {e}", l.name)),
                }
            }
        }
        for (b, nid) in &owned {
            if !net_ids.contains(nid.as_str()) {
                self.store.disown_bridge(b)?;
            }
        }
        // Bridges of existing networks (gone after a reboot).
        let owned = self.store.owned_bridges()?;
        let present: HashSet<String> = self
            .links
            .list_links()
            .await?
            .into_iter()
            .map(|l| l.name)
            .collect();
        for n in &nets {
            if !present.contains(&n.bridge) && !owned.contains_key(&n.bridge) {
                self.store.own_bridge(&n.bridge, &n.id)?;
            }
            if let Err(e) = self.setup_bridge(n).await {
                rep.errors
                    .push(format!("bridge {} of {}: {e}", n.bridge, n.name));
            }
        }
        // Firewall, in full.
        {
            let _f = self.fw_lock.lock().unwrap_or_else(|p| p.into_inner());
            let st = self.desired_state()?;
            self.sync_socklb(&st);
            self.firewall.reload(&st)?;
        }
        Ok(rep)
    }
}

/// The bridge a network wants.
fn bridge_spec(rec: &NetworkRecord) -> BridgeSpec {
    let gw4 = rec
        .subnets
        .iter()
        .find(|s| s.family() == Family::V4)
        .map(|s| s.gateway);
    BridgeSpec {
        name: rec.bridge.clone(),
        mtu: rec.mtu,
        mac: gw4.or(rec.subnets.first().map(|s| s.gateway)).map(mac_for),
        addresses: rec.subnets.iter().map(gateway_net).collect(),
    }
}

/// The gateway address with its subnet's prefix, as set on the bridge.
fn gateway_net(s: &SubnetConfig) -> IpNet {
    IpNet::new(s.gateway, s.subnet.prefix_len()).expect("prefix of a valid subnet")
}

/// Docker's `NetworkSettings.Networks[name]` for an endpoint.
pub fn endpoint_settings(e: &Endpoint) -> EndpointSettings {
    let v4 = e.ip(false);
    let v6 = e.ip(true);
    let s = |v: Option<String>| Some(v.unwrap_or_default());
    let static4 = e.static_ips.iter().find(|i| i.is_ipv4());
    let static6 = e.static_ips.iter().find(|i| i.is_ipv6());
    EndpointSettings {
        ipam_config: (!e.static_ips.is_empty()).then(|| EndpointIpamConfig {
            ipv4_address: static4.map(|i| i.to_string()),
            ipv6_address: static6.map(|i| i.to_string()),
            link_local_ips: None,
        }),
        links: None,
        mac_address: Some(e.mac.clone()),
        aliases: (!e.aliases.is_empty()).then(|| e.aliases.clone()),
        driver_opts: None,
        gw_priority: Some(0),
        network_id: Some(e.network_id.clone()),
        endpoint_id: Some(e.endpoint_id.clone()),
        gateway: s(e.gateway(false).map(|g| g.to_string())),
        ip_address: s(v4.map(|a| a.addr().to_string())),
        ip_prefix_len: Some(v4.map(|a| a.prefix_len() as i64).unwrap_or(0)),
        ipv6_gateway: s(e.gateway(true).map(|g| g.to_string())),
        global_ipv6_address: s(v6.map(|a| a.addr().to_string())),
        global_ipv6_prefix_len: Some(v6.map(|a| a.prefix_len() as i64).unwrap_or(0)),
        dns_names: None,
    }
}

/// `NetworkSettings.Networks` of a container, by network name.
pub fn networks_settings(c: &ContainerNet) -> HashMap<String, EndpointSettings> {
    c.endpoints
        .iter()
        .map(|e| (e.network_name.clone(), endpoint_settings(e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::LinkSummary;
    use crate::ports::{parse_publish, Proto};
    use async_trait::async_trait;
    use serde_json::{json, Value};

    #[derive(Default)]
    struct LinkState {
        /// name -> (kind, bridge it is on)
        links: BTreeMap<String, (String, Option<String>)>,
        veths: BTreeMap<String, VethSpec>,
        bridges: BTreeMap<String, BridgeSpec>,
        routes: Vec<IpNet>,
        /// create_veth fails for this bridge.
        fail_bridge: Option<String>,
        /// Links set down.
        down: BTreeSet<String>,
        /// (spare, new name) of every adopted spare.
        adopted: Vec<(String, String)>,
    }

    impl FakeLinks {
        /// The kernel's per-link sysctls follow a renamed link.
        fn rename_sysctls(&self, from: &str, to: &str) {
            let conf = self.sysctl.join("net/ipv4/conf");
            if from != to && conf.join(from).exists() {
                let _ = std::fs::remove_dir_all(conf.join(to));
                std::fs::rename(conf.join(from), conf.join(to)).unwrap();
            }
        }
    }

    struct FakeLinks {
        st: Mutex<LinkState>,
        sysctl: PathBuf,
    }

    #[async_trait]
    impl LinkOps for FakeLinks {
        async fn ensure_bridge(&self, spec: &BridgeSpec) -> crate::netlink::Result<u32> {
            check_ifname(&spec.name)?;
            let d = self.sysctl.join("net/ipv4/conf").join(&spec.name);
            std::fs::create_dir_all(&d).unwrap();
            if !d.join("route_localnet").exists() {
                std::fs::write(d.join("route_localnet"), "0").unwrap();
            }
            let mut st = self.st.lock().unwrap();
            st.links.insert(spec.name.clone(), ("bridge".into(), None));
            st.bridges.insert(spec.name.clone(), spec.clone());
            Ok(1)
        }
        async fn delete_link(&self, name: &str) -> crate::netlink::Result<bool> {
            let mut st = self.st.lock().unwrap();
            st.veths.remove(name);
            st.bridges.remove(name);
            Ok(st.links.remove(name).is_some())
        }
        async fn set_link_down(&self, name: &str) -> crate::netlink::Result<bool> {
            let mut st = self.st.lock().unwrap();
            let present = st.links.contains_key(name);
            if present {
                st.down.insert(name.to_string());
            }
            Ok(present)
        }
        async fn park_bridge(&self, name: &str, spare: &str) -> crate::netlink::Result<bool> {
            let mut st = self.st.lock().unwrap();
            let Some(l) = st.links.remove(name) else {
                return Ok(false);
            };
            st.down.insert(name.to_string());
            st.links.insert(spare.to_string(), l);
            let b = st.bridges.remove(name).unwrap();
            st.bridges.insert(spare.to_string(), b);
            drop(st);
            self.rename_sysctls(name, spare);
            Ok(true)
        }
        async fn adopt_bridge(
            &self,
            spare: &str,
            _stale: &[IpNet],
            spec: &BridgeSpec,
        ) -> crate::netlink::Result<Option<u32>> {
            let mut st = self.st.lock().unwrap();
            let ports = st
                .links
                .values()
                .any(|(_, on)| on.as_deref() == Some(spare));
            if st.links.get(spare).is_none_or(|(k, _)| k != "bridge") || ports {
                return Ok(None);
            }
            st.links.remove(spare);
            st.bridges.remove(spare);
            st.links.insert(spec.name.clone(), ("bridge".into(), None));
            st.bridges.insert(spec.name.clone(), spec.clone());
            st.adopted.push((spare.to_string(), spec.name.clone()));
            drop(st);
            self.rename_sysctls(spare, &spec.name);
            Ok(Some(1))
        }
        async fn create_veth(&self, spec: &VethSpec) -> crate::netlink::Result<()> {
            let mut st = self.st.lock().unwrap();
            if !st.bridges.contains_key(&spec.bridge) {
                return Err(NetlinkError::NotFound(spec.bridge.clone()));
            }
            if st.fail_bridge.as_deref() == Some(spec.bridge.as_str()) {
                return Err(NetlinkError::Op {
                    op: format!("create veth {}", spec.host_name),
                    err: "injected".into(),
                });
            }
            if st.links.contains_key(&spec.host_name) {
                return Err(NetlinkError::Exists(spec.host_name.clone()));
            }
            st.links.insert(
                spec.host_name.clone(),
                ("veth".into(), Some(spec.bridge.clone())),
            );
            st.veths.insert(spec.host_name.clone(), spec.clone());
            Ok(())
        }
        async fn list_links(&self) -> crate::netlink::Result<Vec<LinkSummary>> {
            let st = self.st.lock().unwrap();
            Ok(st
                .links
                .iter()
                .enumerate()
                .map(|(i, (n, (k, _)))| LinkSummary {
                    index: i as u32 + 1,
                    name: n.clone(),
                    kind: Some(k.clone()),
                    controller: None,
                    up: true,
                    mtu: None,
                    mac: None,
                })
                .collect())
        }
        async fn routes(&self) -> crate::netlink::Result<Vec<IpNet>> {
            Ok(self.st.lock().unwrap().routes.clone())
        }
    }

    #[derive(Default)]
    struct FakeNft {
        batches: Mutex<Vec<Value>>,
        fail: Mutex<bool>,
        present: Mutex<bool>,
    }
    impl NftRunner for FakeNft {
        fn apply(&self, batch: &Value) -> crate::firewall::Result<()> {
            if *self.fail.lock().unwrap() {
                return Err(FirewallError::Nft("injected".into()));
            }
            self.batches.lock().unwrap().push(batch.clone());
            *self.present.lock().unwrap() = true;
            Ok(())
        }
        fn list(&self, args: &[&str]) -> crate::firewall::Result<Value> {
            if args == ["list", "chains"] {
                let present = *self.present.lock().unwrap();
                let chains: Vec<Value> = crate::firewall::OUR_CHAINS
                    .iter()
                    .filter(|_| present)
                    .map(|n| json!({"chain": {"family": "inet", "table": "shibafu", "name": n}}))
                    .collect();
                return Ok(json!({"nftables": chains}));
            }
            Err(FirewallError::Nft("No such file or directory".into()))
        }
    }

    #[derive(Default)]
    struct FakeProbe(Mutex<HashSet<u16>>);
    impl PortProbe for FakeProbe {
        fn check(&self, _: Proto, _: IpAddr, port: u16) -> std::io::Result<()> {
            if self.0.lock().unwrap().contains(&port) {
                Err(std::io::ErrorKind::AddrInUse.into())
            } else {
                Ok(())
            }
        }
    }

    type Nets = BridgeNetworks<FakeLinks, FakeNft, FakeProbe>;

    fn sysctl_dir(root: &Path) {
        for f in ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "0").unwrap();
        }
    }

    fn open_at(dir: &Path, links: LinkState) -> Nets {
        let sys = dir.join("sys");
        sysctl_dir(&sys);
        let mut cfg = BridgeConfig::new(dir.join("data"));
        cfg.sysctl_root = sys.clone();
        cfg.port_range = (30000, 30009);
        BridgeNetworks::open(
            cfg,
            FakeLinks {
                st: Mutex::new(links),
                sysctl: sys,
            },
            FakeNft::default(),
            FakeProbe::default(),
        )
        .unwrap()
    }

    fn create(name: &str, subnet: Option<&str>) -> CreateNetwork {
        CreateNetwork {
            name: name.into(),
            subnets: subnet
                .map(|s| vec![SubnetRequest::parse(Some(s), None, None).unwrap()])
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    fn link_names(n: &Nets) -> Vec<String> {
        n.links().st.lock().unwrap().links.keys().cloned().collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn removed_bridges_are_parked_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let n = open_at(d.path(), LinkState::default());
        let sys = d.path().join("sys/net/ipv4/conf");
        let localnet =
            |b: &str| std::fs::read_to_string(sys.join(b).join("route_localnet")).unwrap();
        let owned = || n.store().owned_bridges().unwrap();
        let a = n.create_network(create("a", None)).await.unwrap();
        n.remove_network("a").await.unwrap();
        // Down and renamed at once to the bridge name of a network id
        // drawn in advance, owned (by that id) in the rm's commit.
        assert!(n.links().st.lock().unwrap().down.contains(&a.bridge));
        let spare = link_names(&n);
        assert_eq!(spare.len(), 1);
        assert_ne!(spare[0], a.bridge);
        let next_id = owned()[&spare[0]].clone();
        assert_eq!(spare[0], bridge_name(&next_id));
        assert_eq!(owned().len(), 1);

        // The next network gets that id, and the bridge as it is named.
        let b = n.create_network(create("b", None)).await.unwrap();
        assert_eq!(b.id, next_id);
        assert_eq!(b.bridge, spare[0]);
        assert_eq!(
            n.links().st.lock().unwrap().adopted,
            vec![(b.bridge.clone(), b.bridge.clone())]
        );
        assert_eq!(link_names(&n), vec![b.bridge.clone()]);
        assert_eq!(
            n.links().st.lock().unwrap().bridges[&b.bridge],
            bridge_spec(&b)
        );
        assert_eq!(localnet(&b.bridge), "1");
        assert_eq!(
            owned().into_iter().collect::<Vec<_>>(),
            vec![(b.bridge.clone(), b.id.clone())]
        );

        // A network naming its bridge takes a spare too, renamed; an
        // internal one gets route_localnet off, as a new bridge has it.
        n.remove_network("b").await.unwrap();
        let spare = link_names(&n)[0].clone();
        let mut req = create("c", None);
        req.internal = true;
        req.options
            .insert(OPT_BRIDGE_NAME.into(), "br-custom".into());
        let c = n.create_network(req).await.unwrap();
        assert_eq!(c.bridge, "br-custom");
        assert_eq!(
            n.links().st.lock().unwrap().adopted[1],
            (spare.clone(), "br-custom".to_string())
        );
        assert_eq!(localnet("br-custom"), "0");
        assert_eq!(
            owned().into_keys().collect::<Vec<_>>(),
            vec!["br-custom".to_string()]
        );

        // At most MAX_SPARES are kept; the rest are deleted.
        for name in ["d", "e"] {
            n.create_network(create(name, None)).await.unwrap();
        }
        for name in ["c", "d", "e"] {
            n.remove_network(name).await.unwrap();
        }
        assert_eq!(n.spares.lock().unwrap().len(), MAX_SPARES);
        n.settle().await;
        assert!(link_names(&n).is_empty(), "{:?}", link_names(&n));
        assert!(owned().is_empty(), "{:?}", owned());
        // settle() deleted the spares: a new network makes its own bridge.
        let f = n.create_network(create("f", None)).await.unwrap();
        assert_eq!(n.links().st.lock().unwrap().adopted.len(), 2);
        assert_eq!(link_names(&n), vec![f.bridge.clone()]);
    }

    #[tokio::test]
    async fn reconcile_deletes_spares_a_crash_left() {
        let d = tempfile::tempdir().unwrap();
        let spare = {
            let n = open_at(d.path(), LinkState::default());
            n.create_network(create("a", None)).await.unwrap();
            n.remove_network("a").await.unwrap();
            link_names(&n)[0].clone()
            // dropped without settle(): the daemon was killed
        };
        let n = open_at(
            d.path(),
            LinkState {
                links: BTreeMap::from([(spare.clone(), ("bridge".to_string(), None))]),
                ..Default::default()
            },
        );
        let rep = n.reconcile(&HashSet::new()).await.unwrap();
        assert!(rep.deleted_links.contains(&spare), "{rep:?}");
        assert!(!n.store().owned_bridges().unwrap().contains_key(&spare));
    }

    #[tokio::test]
    async fn create_validates_first_and_records_everything() {
        let d = tempfile::tempdir().unwrap();
        let n = open_at(
            d.path(),
            LinkState {
                routes: vec!["10.50.0.0/16".parse().unwrap()],
                ..Default::default()
            },
        );
        let def = n.ensure_default_network().await.unwrap().unwrap();
        assert_eq!(def.name, "bridge");
        assert_eq!(def.bridge, "shibafu0");
        assert_eq!(def.subnets[0].subnet.to_string(), "172.17.0.0/16");
        assert_eq!(def.subnets[0].gateway, ip("172.17.0.1"));
        assert!(def.default);
        // Idempotent.
        assert_eq!(
            n.ensure_default_network().await.unwrap().unwrap().id,
            def.id
        );
        let sys = d.path().join("sys");
        assert_eq!(
            std::fs::read_to_string(sys.join("net/ipv4/ip_forward")).unwrap(),
            "1"
        );
        assert_eq!(
            std::fs::read_to_string(sys.join("net/ipv4/conf/shibafu0/route_localnet")).unwrap(),
            "1"
        );

        let mut req = create("frontend", Some("172.21.0.0/24"));
        req.options.insert(OPT_MTU.into(), "1400".into());
        req.labels.insert("a".into(), "b".into());
        req.ipv6 = true;
        let f = n.create_network(req).await.unwrap();
        assert_eq!(f.bridge, format!("br-{}", &f.id[..12]));
        assert_eq!(f.mtu, Some(1400));
        assert!(f.ipv6);
        assert_eq!(f.subnets.len(), 2);
        assert_eq!(f.subnets[1].subnet.prefix_len(), 64);
        {
            let st = n.links().st.lock().unwrap();
            let b = &st.bridges[&f.bridge];
            assert_eq!(b.mtu, Some(1400));
            assert_eq!(b.addresses[0].to_string(), "172.21.0.1/24");
            assert_eq!(b.mac, Some([0x02, 0x42, 172, 21, 0, 1]));
        }
        assert_eq!(
            std::fs::read_to_string(sys.join("net/ipv6/conf/all/forwarding")).unwrap(),
            "1"
        );
        let st = n.desired_state().unwrap();
        assert_eq!(st.networks.len(), 2);
        assert_eq!(n.network(&f.id[..6]).unwrap().name, "frontend");
        assert_eq!(n.store().owned_bridges().unwrap()[&f.bridge], f.id);

        // Bad input: nothing made.
        let before = (link_names(&n), n.ipam().networks().unwrap().len());
        let cases: Vec<(CreateNetwork, &str)> = vec![
            (
                create("frontend", None),
                "network with name frontend already exists",
            ),
            (
                create("bridge", None),
                "network with name bridge already exists",
            ),
            (
                create("host", None),
                "operation is not permitted on predefined host network",
            ),
            (create("bad name", None), "invalid network name"),
            (
                CreateNetwork {
                    driver: Some("overlay".into()),
                    ..create("x", None)
                },
                "driver \"overlay\" is not supported",
            ),
            (
                CreateNetwork {
                    options: BTreeMap::from([(OPT_MTU.to_string(), "9x".to_string())]),
                    ..create("x", None)
                },
                "invalid option com.docker.network.driver.mtu=9x",
            ),
            (
                CreateNetwork {
                    options: BTreeMap::from([(
                        OPT_BRIDGE_NAME.to_string(),
                        "shibafu0".to_string(),
                    )]),
                    ..create("x", None)
                },
                "bridge shibafu0 is already used by network bridge",
            ),
            (
                create("x", Some("172.21.0.0/16")),
                "overlaps subnet 172.21.0.0/24 of network",
            ),
            (
                create("x", Some("10.50.1.0/24")),
                "overlaps route 10.50.0.0/16 on the host",
            ),
            (
                CreateNetwork {
                    subnets: vec![SubnetRequest::parse(
                        Some("10.9.0.0/24"),
                        Some("10.8.0.1"),
                        None,
                    )
                    .unwrap()],
                    ..create("x", None)
                },
                "gateway 10.8.0.1 is outside subnet 10.9.0.0/24",
            ),
        ];
        for (req, msg) in cases {
            let e = n.create_network(req).await.unwrap_err().to_string();
            assert!(e.contains(msg), "{e} !~ {msg}");
        }
        assert_eq!(before, (link_names(&n), n.ipam().networks().unwrap().len()));
        assert_eq!(n.networks().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn create_rolls_back_when_the_firewall_fails() {
        let d = tempfile::tempdir().unwrap();
        let n = open_at(d.path(), LinkState::default());
        *n.firewall().runner().fail.lock().unwrap() = true;
        let e = n
            .create_network(create("a", Some("10.60.0.0/24")))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("injected"), "{e}");
        assert!(link_names(&n).is_empty());
        assert!(n.ipam().networks().unwrap().is_empty());
        assert!(n.networks().unwrap().is_empty());
        assert!(n.store().owned_bridges().unwrap().is_empty());
        // Works once the firewall does.
        *n.firewall().runner().fail.lock().unwrap() = false;
        n.create_network(create("a", Some("10.60.0.0/24")))
            .await
            .unwrap();
    }

    /// A store with network "frontend" (172.21.0.0/24).
    async fn with_frontend(d: &Path) -> Nets {
        let n = open_at(d, LinkState::default());
        n.create_network(create("frontend", Some("172.21.0.0/24")))
            .await
            .unwrap();
        n
    }

    #[tokio::test]
    async fn a_static_address_is_free_again_right_after_detach() {
        let d = tempfile::tempdir().unwrap();
        let n = with_frontend(d.path()).await;
        let ns = Path::new("/proc/1/ns/net");
        let want = |c: &str| {
            (
                c.to_string(),
                vec![EndpointRequest {
                    ips: vec![ip("172.21.0.10")],
                    ..EndpointRequest::new("frontend")
                }],
            )
        };
        let (c1, r1) = want("c1");
        n.attach_netns(&c1, ns, r1, vec![]).await.unwrap();
        assert!(n.detach("c1").await.is_empty());
        // c1's veth and address are still being retired in the background
        // (on this single-threaded runtime the task has not even run yet);
        // the allocation waits for them instead of failing.
        assert!(n.retiring_any());
        let (c2, r2) = want("c2");
        let eps = n.attach_netns(&c2, ns, r2, vec![]).await.unwrap();
        assert_eq!(eps[0].addresses[0].to_string(), "172.21.0.10/24");
        assert!(!link_names(&n).contains(&host_veth_name("c1", &eps[0].network_id)));
    }

    #[tokio::test]
    async fn a_network_can_be_removed_right_after_its_last_container() {
        let d = tempfile::tempdir().unwrap();
        let n = with_frontend(d.path()).await;
        let ns = Path::new("/proc/1/ns/net");
        n.attach_netns("c1", ns, vec![EndpointRequest::new("frontend")], vec![])
            .await
            .unwrap();
        assert!(n.detach("c1").await.is_empty());
        // c1's address is released only after its veth is gone, which on
        // this single-threaded runtime has not happened yet; `network rm`
        // waits for it instead of reporting c1 as a user.
        assert!(n.retiring_any());
        n.remove_network("frontend").await.unwrap();
        assert!(n.store.resolve("frontend").is_err());
    }

    #[tokio::test]
    async fn attach_publish_detach_remove() {
        let d = tempfile::tempdir().unwrap();
        let n = open_at(d.path(), LinkState::default());
        n.ensure_default_network().await.unwrap();
        let f = n
            .create_network(create("frontend", Some("172.21.0.0/24")))
            .await
            .unwrap();
        let ns = Path::new("/proc/1/ns/net");
        let eps = n
            .attach_netns(
                "c1",
                ns,
                vec![
                    EndpointRequest {
                        aliases: vec!["web".into()],
                        ips: vec![ip("172.21.0.10")],
                        ..EndpointRequest::new("frontend")
                    },
                    EndpointRequest::new("bridge"),
                ],
                parse_publish("8080:80").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].ifname, "eth0");
        assert_eq!(eps[1].ifname, "eth1");
        assert!(eps[0].is_gateway && !eps[1].is_gateway);
        assert_eq!(eps[0].addresses[0].to_string(), "172.21.0.10/24");
        assert_eq!(eps[1].addresses[0].to_string(), "172.17.0.2/16");
        assert_eq!(eps[0].mac, "02:42:ac:15:00:0a");
        {
            let st = n.links().st.lock().unwrap();
            let v0 = &st.veths[&eps[0].host_veth];
            assert_eq!(v0.bridge, f.bridge);
            assert_eq!(v0.default_gateways, vec![ip("172.21.0.1")]);
            assert_eq!(v0.container_ifname, "eth0");
            assert!(st.veths[&eps[1].host_veth].default_gateways.is_empty());
        }
        let st = n.desired_state().unwrap();
        assert_eq!(
            st.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            vec!["0.0.0.0:8080->172.21.0.10:80/tcp"]
        );
        // The last batch was a delta adding the port.
        let last = n
            .firewall()
            .runner()
            .batches
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap();
        assert!(last.to_string().contains("8080"), "{last}");

        // Same port for another container: refused, nothing left of it.
        let links_before = link_names(&n);
        let e = n
            .attach_netns(
                "c2",
                ns,
                vec![EndpointRequest::new("frontend")],
                parse_publish("8080:80").unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Bind for 0.0.0.0:8080 failed: port is already allocated"
        );
        assert_eq!(link_names(&n), links_before);
        assert!(n
            .ipam()
            .allocations(None)
            .unwrap()
            .iter()
            .all(|(_, c, _)| c == "c1"));
        assert!(n.store().container("c2").unwrap().is_none());
        // Static address taken.
        let e = n
            .attach_netns(
                "c2",
                ns,
                vec![EndpointRequest {
                    ips: vec![ip("172.21.0.10")],
                    ..EndpointRequest::new("frontend")
                }],
                vec![],
            )
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("already in use by container c1"),
            "{e}"
        );
        // Already attached / unknown / twice.
        let e = n
            .attach_netns("c1", ns, vec![EndpointRequest::new("frontend")], vec![])
            .await
            .unwrap_err();
        assert!(matches!(e, BridgeError::AlreadyAttached { .. }), "{e}");
        let e = n
            .attach_netns("c2", ns, vec![EndpointRequest::new("nope")], vec![])
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "network nope not found");
        let e = n
            .attach_netns(
                "c2",
                ns,
                vec![
                    EndpointRequest::new("frontend"),
                    EndpointRequest::new(&f.id),
                ],
                vec![],
            )
            .await
            .unwrap_err();
        assert!(matches!(e, BridgeError::DuplicateNetwork(_)), "{e}");

        // In use: refused.
        let e = n.remove_network("frontend").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "error while removing network: network frontend id {} has active endpoints (c1)",
                f.id
            )
        );
        let e = n.remove_network("bridge").await.unwrap_err();
        assert!(matches!(e, BridgeError::Predefined(_)), "{e}");

        // Inspect data.
        assert_eq!(n.network_endpoints(&f.id).unwrap().len(), 1);
        let s = networks_settings(&n.endpoints("c1").unwrap());
        let fe = &s["frontend"];
        assert_eq!(fe.ip_address.as_deref(), Some("172.21.0.10"));
        assert_eq!(fe.ip_prefix_len, Some(24));
        assert_eq!(fe.gateway.as_deref(), Some("172.21.0.1"));
        assert_eq!(fe.aliases, Some(vec!["web".to_string()]));
        assert_eq!(
            fe.ipam_config.as_ref().unwrap().ipv4_address.as_deref(),
            Some("172.21.0.10")
        );
        assert_eq!(s["bridge"].ipam_config, None);

        // Detach: everything goes, twice is fine.
        assert!(n.detach("c1").await.is_empty());
        assert!(n.detach("c1").await.is_empty());
        // The veth and its addresses go in the background.
        n.settle().await;
        assert_eq!(
            link_names(&n),
            vec![f.bridge.clone(), "shibafu0".to_string()]
        );
        assert!(n.ipam().allocations(None).unwrap().is_empty());
        assert!(n.desired_state().unwrap().ports.is_empty());
        assert!(n.ports().reserved().is_empty());
        // The port is free again.
        n.attach_netns(
            "c2",
            ns,
            vec![EndpointRequest::new("frontend")],
            parse_publish("8080:80").unwrap(),
        )
        .await
        .unwrap();
        n.disconnect("c2", "frontend").await.unwrap();
        assert!(n.ports().reserved().is_empty());
        assert!(n.endpoints("c2").unwrap().endpoints.is_empty());
        let e = n.disconnect("c2", "frontend").await.unwrap_err();
        assert!(matches!(e, BridgeError::NotAttached { .. }), "{e}");

        let r = n.remove_network(&f.id[..8]).await.unwrap();
        assert_eq!(r.name, "frontend");
        // Down (routes gone) at once, deleted in the background.
        assert!(n.links().st.lock().unwrap().down.contains(&f.bridge));
        n.settle().await;
        assert_eq!(link_names(&n), vec!["shibafu0".to_string()]);
        assert!(n.ipam().network(&f.id).unwrap().is_none());
        assert!(!n.store().owned_bridges().unwrap().contains_key(&f.bridge));
        assert_eq!(n.desired_state().unwrap().networks.len(), 1);
    }

    #[tokio::test]
    async fn attach_rolls_back_a_failed_veth() {
        let d = tempfile::tempdir().unwrap();
        let n = open_at(d.path(), LinkState::default());
        let a = n
            .create_network(create("a", Some("10.61.0.0/24")))
            .await
            .unwrap();
        let b = n
            .create_network(create("b", Some("10.62.0.0/24")))
            .await
            .unwrap();
        n.links().st.lock().unwrap().fail_bridge = Some(b.bridge.clone());
        let batches = n.firewall().runner().batches.lock().unwrap().len();
        let e = n
            .attach_netns(
                "c1",
                Path::new("/proc/1/ns/net"),
                vec![EndpointRequest::new("a"), EndpointRequest::new("b")],
                parse_publish("80").unwrap(),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("injected"), "{e}");
        let mut want = vec![a.bridge.clone(), b.bridge.clone()];
        want.sort();
        assert_eq!(link_names(&n), want);
        assert!(n.ipam().allocations(None).unwrap().is_empty());
        assert!(n.ports().reserved().is_empty());
        assert!(n.store().container("c1").unwrap().is_none());
        assert_eq!(n.firewall().runner().batches.lock().unwrap().len(), batches);
    }

    #[tokio::test]
    async fn internal_networks_have_no_gateway_and_no_ports() {
        let d = tempfile::tempdir().unwrap();
        let n = open_at(d.path(), LinkState::default());
        let mut r = create("int", Some("10.63.0.0/24"));
        r.internal = true;
        n.create_network(r).await.unwrap();
        n.create_network(create("ext", Some("10.64.0.0/24")))
            .await
            .unwrap();
        let ns = Path::new("/proc/1/ns/net");
        let e = n
            .attach_netns(
                "c1",
                ns,
                vec![EndpointRequest::new("int")],
                parse_publish("80").unwrap(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, BridgeError::NoGatewayForPorts), "{e}");
        let eps = n
            .attach_netns(
                "c1",
                ns,
                vec![EndpointRequest::new("int"), EndpointRequest::new("ext")],
                vec![],
            )
            .await
            .unwrap();
        // The default route goes via the first network with a way out.
        assert!(!eps[0].is_gateway && eps[1].is_gateway);
        let st = n.links().st.lock().unwrap();
        assert!(st.veths[&eps[0].host_veth].default_gateways.is_empty());
        assert_eq!(
            st.veths[&eps[1].host_veth].default_gateways,
            vec![ip("10.64.0.1")]
        );
        assert!(n
            .desired_state()
            .unwrap()
            .networks
            .iter()
            .any(|x| x.internal));
    }

    #[tokio::test]
    async fn reconcile_after_a_crash() {
        let d = tempfile::tempdir().unwrap();
        let ns = Path::new("/proc/1/ns/net");
        let (net_id, stale_bridge, live_veth, dead_veth);
        {
            let n = open_at(d.path(), LinkState::default());
            n.reconcile(&HashSet::new()).await.unwrap();
            let a = n
                .create_network(create("a", Some("10.70.0.0/24")))
                .await
                .unwrap();
            let gone = n
                .create_network(create("gone", Some("10.71.0.0/24")))
                .await
                .unwrap();
            net_id = a.id.clone();
            live_veth = n
                .attach_netns(
                    "live",
                    ns,
                    vec![EndpointRequest::new("a")],
                    parse_publish("8080:80").unwrap(),
                )
                .await
                .unwrap()[0]
                .host_veth
                .clone();
            dead_veth = n
                .attach_netns(
                    "dead",
                    ns,
                    vec![EndpointRequest::new("a")],
                    parse_publish("9090:80").unwrap(),
                )
                .await
                .unwrap()[0]
                .host_veth
                .clone();
            // A crash in the middle of `rm gone`: record gone, bridge left.
            n.store().remove(&gone.id).unwrap();
            stale_bridge = gone.bridge;
        }
        // "Reboot": the kernel lost the bridges, except stale leftovers.
        let mut links = LinkState::default();
        for l in [
            &stale_bridge,
            &live_veth,
            &dead_veth,
            &"vsfforeign0000".to_string(),
            &"br-docker0000".to_string(),
        ] {
            let kind = if l.starts_with("vsf") {
                "veth"
            } else {
                "bridge"
            };
            links.links.insert(l.clone(), (kind.into(), None));
        }
        let n = open_at(d.path(), links);
        // Restored reservations hold before reconcile.
        assert!(n
            .ports()
            .reserve("x", &parse_publish("8080:80").unwrap(), true, false)
            .is_err());
        let live = HashSet::from(["live".to_string()]);
        let rep = n.reconcile(&live).await.unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(rep.dropped_containers, vec!["dead".to_string()]);
        assert!(rep.released.contains(&(net_id.clone(), "dead".to_string())));
        let mut deleted = rep.deleted_links.clone();
        deleted.sort();
        let mut want = vec![
            dead_veth.clone(),
            "vsfforeign0000".into(),
            stale_bridge.clone(),
        ];
        want.sort();
        assert_eq!(deleted, want);
        let names = link_names(&n);
        // Someone else's bridge is left alone; ours are back.
        assert!(names.contains(&"br-docker0000".to_string()));
        assert!(names.contains(&live_veth));
        assert!(names.contains(&"shibafu0".to_string()));
        assert!(names.contains(&format!("br-{}", &net_id[..12])));
        // IPAM: the gone network's plan is removed, dead's address released.
        assert!(n.ipam().networks().unwrap().len() == 2);
        assert_eq!(n.ipam().allocations(None).unwrap().len(), 1);
        // Ports: 9090 free, 8080 still held; the firewall has only 8080.
        assert!(n
            .ports()
            .reserve("x", &parse_publish("9090:80").unwrap(), true, false)
            .is_ok());
        assert!(n
            .ports()
            .reserve("y", &parse_publish("8080:80").unwrap(), true, false)
            .is_err());
        let last = n
            .firewall()
            .runner()
            .batches
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap();
        let s = last.to_string();
        assert!(s.contains("8080") && !s.contains("9090"), "{s}");
        assert!(s.contains("\"delete\":{\"table\""), "full reload: {s}");

        // Flush detection.
        assert!(!n.ensure_firewall().unwrap());
        *n.firewall().runner().present.lock().unwrap() = false;
        assert!(n.ensure_firewall().unwrap());
        assert!(!n.ensure_firewall().unwrap());
    }

    #[tokio::test]
    async fn address_plan_lost_in_a_crash_is_rebuilt_from_the_record() {
        // `network create` commits the IPAM plan unsynced and the record
        // synced: a crash between the two fsyncs can leave a record
        // without a plan. restore() and reconcile() rebuild it, so the
        // network keeps its subnet and containers still get addresses.
        let d = tempfile::tempdir().unwrap();
        let id;
        {
            let n = open_at(d.path(), LinkState::default());
            let r = n
                .create_network(create("a", Some("10.77.0.0/24")))
                .await
                .unwrap();
            id = r.id.clone();
            n.ipam().remove_network(&id).unwrap(); // "lost"
        }
        let n = open_at(d.path(), LinkState::default());
        assert!(n.restore().await.is_empty());
        let plan = n.ipam().network(&id).unwrap().unwrap();
        assert_eq!(plan[0].subnet.to_string(), "10.77.0.0/24");
        // The subnet is taken again: no other network gets it.
        let e = n
            .create_network(create("b", Some("10.77.0.0/25")))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
        let eps = n
            .attach_netns(
                "c1",
                Path::new("/proc/1/ns/net"),
                vec![EndpointRequest::new("a")],
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(eps[0].addresses[0].to_string(), "10.77.0.2/24");
        // reconcile() repairs it as well (`network reload`).
        n.ipam().release("x", "y").unwrap();
        n.detach("c1").await;
        n.settle().await;
        n.ipam().remove_network(&id).unwrap();
        n.reconcile(&HashSet::new()).await.unwrap();
        assert!(n.ipam().network(&id).unwrap().is_some());
        // And a removed network's plan goes (its removal is unsynced too).
        n.remove_network("a").await.unwrap();
        assert!(n.ipam().network(&id).unwrap().is_none());
        assert!(n.store().get(&id).unwrap().is_none());
    }

    #[tokio::test]
    async fn prune_keeps_used_default_and_protected() {
        let d = tempfile::tempdir().unwrap();
        let n = open_at(d.path(), LinkState::default());
        n.ensure_default_network().await.unwrap();
        for (name, s) in [
            ("a", "10.80.0.0/24"),
            ("b", "10.81.0.0/24"),
            ("keep", "10.82.0.0/24"),
        ] {
            n.create_network(create(name, Some(s))).await.unwrap();
        }
        n.attach_netns(
            "c1",
            Path::new("/proc/1/ns/net"),
            vec![EndpointRequest::new("a")],
            vec![],
        )
        .await
        .unwrap();
        let removed = n.prune(|r| r.name == "keep").await.unwrap();
        assert_eq!(removed, vec!["b".to_string()]);
        let left: Vec<String> = n.networks().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(left, vec!["a", "bridge", "keep"]);
    }

    #[tokio::test]
    async fn policies_validate_apply_atomically_and_go_with_their_network() {
        let d = tempfile::tempdir().unwrap();
        let n = open_at(d.path(), LinkState::default());
        let web = n
            .create_network(create("web", Some("10.61.0.0/24")))
            .await
            .unwrap();
        let db = n
            .create_network(create("db", Some("10.62.0.0/24")))
            .await
            .unwrap();
        let allow = vec![("db".to_string(), Some((Proto::Tcp, 80)))];
        // Validation: unknown networks, no rules, port 0, bad name.
        for (name, net, deny, allow, want) in [
            ("p", "nope", vec![], allow.clone(), "network nope not found"),
            (
                "p",
                "web",
                vec![("nope".to_string(), None)],
                vec![],
                "network nope not found",
            ),
            ("p", "web", vec![], vec![], "has no rules"),
            (
                "p",
                "web",
                vec![],
                vec![("db".to_string(), Some((Proto::Tcp, 0)))],
                "invalid port 0",
            ),
            ("bad name", "web", vec![], allow.clone(), "invalid"),
        ] {
            let e = n.create_policy(name, net, &deny, &allow).await.unwrap_err();
            assert!(e.to_string().contains(want), "{e} !~ {want}");
        }
        assert!(n.policies().unwrap().is_empty());

        // A failed apply leaves no record.
        *n.firewall().runner().fail.lock().unwrap() = true;
        assert!(n.create_policy("p", "web", &[], &allow).await.is_err());
        assert!(n.policies().unwrap().is_empty());
        *n.firewall().runner().fail.lock().unwrap() = false;

        let p = n
            .create_policy("p", "web", &[("web".to_string(), None)], &allow)
            .await
            .unwrap();
        assert_eq!(p.network, web.id);
        assert_eq!(p.allow[0].from, db.id);
        let dup = n.create_policy("p", "web", &[], &allow).await.unwrap_err();
        assert!(dup.to_string().contains("already exists"), "{dup}");
        assert_eq!(n.policy("p").unwrap().id, p.id);
        assert_eq!(n.policy(&p.id[..8]).unwrap().name, "p");

        // Rendered by bridge name, and in the last batch applied.
        let mut got = n.desired_state().unwrap().policies;
        got.sort_by_key(|r| r.allow);
        assert_eq!(
            got,
            vec![
                FwPolicyRule {
                    from: web.bridge.clone(),
                    to: web.bridge.clone(),
                    port: None,
                    allow: false,
                },
                FwPolicyRule {
                    from: db.bridge.clone(),
                    to: web.bridge.clone(),
                    port: Some((Proto::Tcp, 80)),
                    allow: true,
                },
            ]
        );
        let last = n
            .firewall()
            .runner()
            .batches
            .lock()
            .unwrap()
            .last()
            .cloned();
        let text = last.unwrap().to_string();
        assert!(
            text.contains("pol_allow_port") && text.contains(&db.bridge),
            "{text}"
        );

        // A removed source network drops its rules; a removed target
        // network takes its policies along.
        n.remove_network("db").await.unwrap();
        assert_eq!(n.desired_state().unwrap().policies.len(), 1);
        n.remove_network("web").await.unwrap();
        assert!(n.policies().unwrap().is_empty());
        assert!(n.desired_state().unwrap().policies.is_empty());
        let e = n.remove_policy("p").await.unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
    }

    #[test]
    fn mac_addresses_as_users_write_them() {
        assert_eq!(
            parse_mac("02:42:DE:ad:be:ef"),
            Some([0x02, 0x42, 0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(
            parse_mac("02-42-de-ad-be-ef"),
            Some([2, 0x42, 0xde, 0xad, 0xbe, 0xef])
        );
        for bad in [
            "",
            "02:42:de:ad:be",
            "02:42:de:ad:be:ef:00",
            "0242:de:ad:be:ef:0",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "zz:42:de:ad:be:ef",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
