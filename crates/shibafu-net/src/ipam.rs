//! IP address management: which subnet a network gets, which address a
//! container gets, and the record of both.
//!
//! Why it looks like this:
//! - Every request is validated in full before anything is written, and
//!   each change is one redb write transaction, so a bad request or a crash
//!   leaves nothing half-made (podman#15708, moby#44721 leak addresses).
//! - Allocations are keyed by (network id, container id), never by address
//!   alone, so [`Ipam::reconcile`] can release exactly the allocations of
//!   containers that no longer exist, after a `kill -9` at any point.
//! - Subnet choice and address choice are pure functions
//!   ([`choose_subnet`], [`next_free`]) over plain inputs (the host's
//!   routes are an argument, not read here), so they are unit-tested
//!   without root.
//! - Addresses are handed out sequentially after the last one given, with
//!   wrap-around, like Docker: a released address is not reused at once,
//!   which avoids stale ARP/conntrack entries pointing at a new container.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Errors of this module. Messages name the offending value so the CLI can
/// print them as they are.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid CIDR {0:?}: {1}")]
    InvalidCidr(String, String),
    #[error("invalid subnet {given}: it should be {expected}")]
    NotCanonical { given: String, expected: IpNet },
    #[error("subnet {0} is too small: at least {1} addresses are needed (network, gateway, a container{2})")]
    SubnetTooSmall(IpNet, u32, &'static str),
    #[error("invalid IP address {0:?}")]
    InvalidAddress(String),
    #[error("{what} requires --subnet")]
    NeedsSubnet { what: &'static str },
    #[error("gateway {gateway} is outside subnet {subnet}")]
    GatewayOutside { gateway: IpAddr, subnet: IpNet },
    #[error("gateway {gateway} is the {what} address of subnet {subnet}")]
    GatewayReserved {
        gateway: IpAddr,
        subnet: IpNet,
        what: &'static str,
    },
    #[error("ip-range {range} is outside subnet {subnet}")]
    RangeOutside { range: IpNet, subnet: IpNet },
    #[error("subnet {a} and {b} are not of the same address family")]
    FamilyMismatch { a: String, b: String },
    #[error("subnet {subnet} overlaps subnet {other} of network {network}")]
    OverlapsNetwork {
        subnet: IpNet,
        other: IpNet,
        network: String,
    },
    #[error("subnet {subnet} overlaps subnet {other} given for the same network")]
    OverlapsItself { subnet: IpNet, other: IpNet },
    #[error("subnet {subnet} overlaps route {route} on the host")]
    OverlapsRoute { subnet: IpNet, route: IpNet },
    #[error("no free {family} subnet left in the address pools (all overlap existing networks or host routes)")]
    PoolExhausted { family: &'static str },
    #[error("no {family} address pool is configured: give --subnet")]
    NoPool { family: &'static str },
    #[error("invalid address pool {base} with size /{size}: {reason}")]
    InvalidPool {
        base: IpNet,
        size: u8,
        reason: &'static str,
    },
    #[error("network {0} already has an address plan")]
    NetworkExists(String),
    #[error("network {0} not found")]
    UnknownNetwork(String),
    #[error("network {network} is in use by container(s) {}", containers.join(", "))]
    NetworkInUse {
        network: String,
        containers: Vec<String>,
    },
    #[error("network {network} has no {family} subnet for address {ip}")]
    NoSubnetForFamily {
        network: String,
        family: &'static str,
        ip: IpAddr,
    },
    #[error("address {ip} is outside the subnets of network {network}")]
    AddressOutside { ip: IpAddr, network: String },
    #[error("address {ip} is the {what} address of subnet {subnet}")]
    AddressReserved {
        ip: IpAddr,
        subnet: IpNet,
        what: &'static str,
    },
    #[error("address {ip} is already in use by container {container} on network {network}")]
    AddressInUse {
        ip: IpAddr,
        container: String,
        network: String,
    },
    #[error("two static addresses of the same family ({a}, {b}) were requested")]
    DuplicateFamily { a: IpAddr, b: IpAddr },
    #[error("no free address left in network {network} (subnet {subnet})")]
    Exhausted { network: String, subnet: IpNet },
    #[error("container {container} already has addresses {} on network {network}", existing.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "))]
    AlreadyAllocated {
        container: String,
        network: String,
        existing: Vec<IpAddr>,
    },
    #[error("IPAM store: {0}")]
    Store(String),
}

pub type Result<T, E = IpamError> = std::result::Result<T, E>;

/// IPv4 or IPv6, used in requests and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    pub fn of_net(net: &IpNet) -> Family {
        Family::of(&net.addr())
    }
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// Parse a CIDR the way `--subnet` takes it: the address must be the
/// network address (Docker refuses `172.20.1.5/16` the same way).
pub fn parse_subnet(s: &str) -> Result<IpNet> {
    let net = IpNet::from_str(s.trim())
        .map_err(|e| IpamError::InvalidCidr(s.to_string(), e.to_string()))?;
    if net.trunc() != net {
        return Err(IpamError::NotCanonical {
            given: s.to_string(),
            expected: net.trunc(),
        });
    }
    Ok(net)
}

/// Parse a plain address (`--gateway`, `--ip`, `--ip6`); brackets around v6
/// are accepted.
pub fn parse_addr(s: &str) -> Result<IpAddr> {
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    IpAddr::from_str(t).map_err(|_| IpamError::InvalidAddress(s.to_string()))
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v: u128, family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The validated address plan of one subnet of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetConfig {
    pub subnet: IpNet,
    pub gateway: IpAddr,
    /// `--ip-range`: dynamic allocations come from here only; static
    /// addresses may be anywhere in `subnet`.
    pub ip_range: Option<IpNet>,
}

impl SubnetConfig {
    pub fn family(&self) -> Family {
        Family::of_net(&self.subnet)
    }

    /// Why `ip` cannot be given to a container in this subnet (network,
    /// broadcast, gateway address), if it cannot.
    pub fn reserved(&self, ip: IpAddr) -> Option<&'static str> {
        if ip == self.subnet.network() {
            Some("network")
        } else if self.family() == Family::V4 && ip == self.subnet.broadcast() {
            Some("broadcast")
        } else if ip == self.gateway {
            Some("gateway")
        } else {
            None
        }
    }

    /// The first and last address dynamic allocation may use.
    fn dynamic_bounds(&self) -> (u128, u128) {
        let r = self.ip_range.unwrap_or(self.subnet);
        (to_u128(r.network()), to_u128(r.broadcast()))
    }
}

/// One `--subnet/--gateway/--ip-range` group (or only a family, for an
/// automatically chosen subnet).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetRequest {
    /// Family of an automatic subnet; ignored when `subnet` is given.
    pub v6: bool,
    pub subnet: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    pub ip_range: Option<IpNet>,
}

impl SubnetRequest {
    /// From the CLI/API strings, checking syntax only.
    pub fn parse(
        subnet: Option<&str>,
        gateway: Option<&str>,
        ip_range: Option<&str>,
    ) -> Result<Self> {
        let subnet = subnet.map(parse_subnet).transpose()?;
        let gateway = gateway
            .filter(|g| !g.is_empty())
            .map(parse_addr)
            .transpose()?;
        let ip_range = ip_range
            .filter(|r| !r.is_empty())
            .map(parse_subnet)
            .transpose()?;
        Ok(SubnetRequest {
            v6: subnet
                .map(|s| Family::of_net(&s) == Family::V6)
                .unwrap_or(false),
            subnet,
            gateway,
            ip_range,
        })
    }

    fn family(&self) -> Family {
        match self.subnet {
            Some(s) => Family::of_net(&s),
            None if self.v6 => Family::V6,
            None => Family::V4,
        }
    }
}

/// Check a subnet with its optional gateway and range and fill in the
/// default gateway (the first host address, as Docker does).
pub fn validate_subnet(
    subnet: IpNet,
    gateway: Option<IpAddr>,
    ip_range: Option<IpNet>,
) -> Result<SubnetConfig> {
    let family = Family::of_net(&subnet);
    // network + gateway + one container (+ broadcast for v4)
    let (max_prefix, need, extra) = match family {
        Family::V4 => (30, 4, ", broadcast"),
        Family::V6 => (126, 3, ""),
    };
    if subnet.prefix_len() > max_prefix {
        return Err(IpamError::SubnetTooSmall(subnet, need, extra));
    }
    let gateway = match gateway {
        Some(g) => {
            if Family::of(&g) != family {
                return Err(IpamError::FamilyMismatch {
                    a: subnet.to_string(),
                    b: g.to_string(),
                });
            }
            if !subnet.contains(&g) {
                return Err(IpamError::GatewayOutside { gateway: g, subnet });
            }
            g
        }
        None => from_u128(to_u128(subnet.network()) + 1, family),
    };
    let probe = SubnetConfig {
        subnet,
        gateway,
        ip_range: None,
    };
    if let Some(what) = probe.reserved(gateway).filter(|w| *w != "gateway") {
        return Err(IpamError::GatewayReserved {
            gateway,
            subnet,
            what,
        });
    }
    if let Some(r) = ip_range {
        if Family::of_net(&r) != family {
            return Err(IpamError::FamilyMismatch {
                a: subnet.to_string(),
                b: r.to_string(),
            });
        }
        if !subnet.contains(&r) {
            return Err(IpamError::RangeOutside { range: r, subnet });
        }
    }
    Ok(SubnetConfig {
        subnet,
        gateway,
        ip_range,
    })
}

/// A block of address space cut into subnets of `/size` for automatic
/// choice (Docker's `default-address-pools` entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPool {
    pub base: IpNet,
    pub size: u8,
}

impl AddressPool {
    pub fn new(base: &str, size: u8) -> Result<Self> {
        let p = AddressPool {
            base: parse_subnet(base)?,
            size,
        };
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<()> {
        let bad = |reason| IpamError::InvalidPool {
            base: self.base,
            size: self.size,
            reason,
        };
        if self.size < self.base.prefix_len() {
            return Err(bad("size is larger than the base"));
        }
        if self.size > self.base.max_prefix_len() {
            return Err(bad("size is longer than an address"));
        }
        Ok(())
    }

    /// The `/size` subnets of the base, in order, lazily (a v6 pool has
    /// astronomically many).
    fn subnets(&self) -> impl Iterator<Item = IpNet> + '_ {
        let family = Family::of_net(&self.base);
        let start = to_u128(self.base.network());
        let bits = self.base.max_prefix_len() - self.size;
        let count_bits = self.size - self.base.prefix_len();
        let count: u128 = if count_bits >= 64 {
            u64::MAX as u128
        } else {
            1u128 << count_bits
        };
        let size = self.size;
        (0..count).map(move |i| {
            let step = if bits >= 128 { 0 } else { i << bits };
            IpNet::new(from_u128(start + step, family), size).expect("prefix within bounds")
        })
    }
}

/// Docker's default pools: 172.17.0.0/16 .. 172.31.0.0/16, then /20s of
/// 192.168.0.0/16; plus a ULA /48 cut into /64s for `--ipv6` without a
/// subnet.
pub fn default_pools() -> Vec<AddressPool> {
    let mut v: Vec<AddressPool> = (17..=31)
        .map(|b| AddressPool {
            base: IpNet::V4(Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).unwrap()),
            size: 16,
        })
        .collect();
    v.push(AddressPool {
        base: IpNet::V4(Ipv4Net::new(Ipv4Addr::new(192, 168, 0, 0), 16).unwrap()),
        size: 20,
    });
    v.push(AddressPool {
        base: IpNet::V6(
            Ipv6Net::new(Ipv6Addr::new(0xfd5b, 0x1baf, 0x0a00, 0, 0, 0, 0, 0), 48).unwrap(),
        ),
        size: 64,
    });
    v
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    Family::of_net(a) == Family::of_net(b) && (a.contains(&b.network()) || b.contains(&a.network()))
}

/// Routes that say nothing about local use of a subnet: default routes and
/// link-local ones (every v6 interface has fe80::/64).
fn meaningful_route(r: &IpNet) -> bool {
    if r.prefix_len() == 0 {
        return false;
    }
    match r {
        IpNet::V6(n) => n.addr().segments()[0] & 0xffc0 != 0xfe80,
        IpNet::V4(n) => !(n.addr().octets()[0] == 169 && n.addr().octets()[1] == 254),
    }
}

/// Check `subnet` against existing networks' subnets and the host's routes.
pub fn check_overlap(
    subnet: &IpNet,
    existing: &[(String, IpNet)],
    host_routes: &[IpNet],
) -> Result<()> {
    if let Some((n, o)) = existing.iter().find(|(_, o)| overlaps(subnet, o)) {
        return Err(IpamError::OverlapsNetwork {
            subnet: *subnet,
            other: *o,
            network: n.clone(),
        });
    }
    if let Some(r) = host_routes
        .iter()
        .filter(|r| meaningful_route(r))
        .find(|r| overlaps(subnet, r))
    {
        return Err(IpamError::OverlapsRoute {
            subnet: *subnet,
            route: *r,
        });
    }
    Ok(())
}

/// The first subnet of the pools (of `family`) that overlaps neither an
/// existing network nor a host route.
pub fn choose_subnet(
    pools: &[AddressPool],
    family: Family,
    existing: &[(String, IpNet)],
    host_routes: &[IpNet],
) -> Result<IpNet> {
    let mut any = false;
    for pool in pools.iter().filter(|p| Family::of_net(&p.base) == family) {
        any = true;
        // Skip quickly over a pool fully covered by one network or route,
        // and bound the scan per pool so a huge v6 pool cannot spin.
        for cand in pool.subnets().take(1 << 16) {
            if check_overlap(&cand, existing, host_routes).is_ok() {
                return Ok(cand);
            }
        }
    }
    if !any {
        return Err(IpamError::NoPool {
            family: family.name(),
        });
    }
    Err(IpamError::PoolExhausted {
        family: family.name(),
    })
}

/// The next address for a dynamic allocation in `cfg`: the first free one
/// after `last` (or from the start of the range), wrapping around once.
/// `taken` holds the addresses in use in this subnet. `None` when full.
pub fn next_free(
    cfg: &SubnetConfig,
    taken: &BTreeSet<IpAddr>,
    last: Option<IpAddr>,
) -> Option<IpAddr> {
    let family = cfg.family();
    let (lo, hi) = cfg.dynamic_bounds();
    let size = hi - lo + 1;
    let start = match last.map(to_u128) {
        Some(l) if l >= lo && l < hi => l + 1,
        _ => lo,
    };
    // Each step past a candidate is caused by a taken or reserved address,
    // so taken + 3 reserved + 1 steps always suffice to find a free one
    // unless the whole range is used.
    let limit = size.min(taken.len() as u128 + 4);
    for i in 0..limit {
        let v = lo + (start - lo + i) % size;
        let ip = from_u128(v, family);
        if cfg.reserved(ip).is_none() && !taken.contains(&ip) {
            return Some(ip);
        }
    }
    None
}

/// An address given to a container, with what it needs to configure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub ip: IpAddr,
    pub subnet: IpNet,
    pub gateway: IpAddr,
}

impl Assignment {
    /// The address with the subnet's prefix, as set on the interface.
    pub fn ip_net(&self) -> IpNet {
        IpNet::new(self.ip, self.subnet.prefix_len()).expect("prefix of a valid subnet")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SubnetState {
    config: SubnetConfig,
    last: Option<IpAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NetworkState {
    subnets: Vec<SubnetState>,
}

impl NetworkState {
    /// A plan for `subnets` with nothing allocated yet.
    fn fresh(subnets: &[SubnetConfig]) -> NetworkState {
        NetworkState {
            subnets: subnets
                .iter()
                .map(|c| SubnetState {
                    config: c.clone(),
                    last: None,
                })
                .collect(),
        }
    }
}

const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
/// (network id, container id) -> JSON `Vec<Assignment>`.
const ALLOCS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("allocations");

fn store_err(e: impl std::fmt::Display) -> IpamError {
    IpamError::Store(e.to_string())
}

/// The persisted IPAM: network address plans and container allocations in
/// `<dir>/ipam.redb`.
pub struct Ipam {
    db: Database,
    pools: Vec<AddressPool>,
}

impl Ipam {
    /// Open (or create) the store. `pools` drive automatic subnet choice.
    pub fn open(dir: &Path, pools: Vec<AddressPool>) -> Result<Self> {
        for p in &pools {
            p.check()?;
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| IpamError::Store(format!("{}: {e}", dir.display())))?;
        let db = Database::create(dir.join("ipam.redb")).map_err(store_err)?;
        let tx = db.begin_write().map_err(store_err)?;
        tx.open_table(NETWORKS).map_err(store_err)?;
        tx.open_table(ALLOCS).map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(Ipam { db, pools })
    }

    pub fn pools(&self) -> &[AddressPool] {
        &self.pools
    }

    /// Validate the requests, choose automatic subnets, check overlaps with
    /// every other network and with `host_routes`, and record the plan.
    /// An empty `requests` means one automatic IPv4 subnet.
    pub fn create_network(
        &self,
        network_id: &str,
        requests: &[SubnetRequest],
        host_routes: &[IpNet],
    ) -> Result<Vec<SubnetConfig>> {
        self.create_network_with(
            network_id,
            requests,
            host_routes,
            redb::Durability::Immediate,
        )
    }

    /// [`Self::create_network`] without an fsync of its own: for a network
    /// whose record is committed (synced) right after, since
    /// [`Self::restore_network`] rebuilds a plan lost in a crash from that
    /// record, and the next synced commit here persists it anyway.
    pub fn create_network_unsynced(
        &self,
        network_id: &str,
        requests: &[SubnetRequest],
        host_routes: &[IpNet],
    ) -> Result<Vec<SubnetConfig>> {
        self.create_network_with(network_id, requests, host_routes, redb::Durability::None)
    }

    /// Record the plan of a network that exists (its record has `subnets`)
    /// when the plan is missing: the repair after a crash lost an unsynced
    /// [`Self::create_network_unsynced`]. No overlap checks: the subnets
    /// were checked when the network was created. Returns whether it had
    /// to.
    pub fn restore_network(&self, network_id: &str, subnets: &[SubnetConfig]) -> Result<bool> {
        let tx = self.db.begin_write().map_err(store_err)?;
        {
            let mut nets = tx.open_table(NETWORKS).map_err(store_err)?;
            if nets.get(network_id).map_err(store_err)?.is_some() {
                return Ok(false);
            }
            let st = NetworkState::fresh(subnets);
            let bytes = serde_json::to_vec(&st).map_err(store_err)?;
            nets.insert(network_id, bytes.as_slice())
                .map_err(store_err)?;
        }
        tx.commit().map_err(store_err)?;
        Ok(true)
    }

    fn create_network_with(
        &self,
        network_id: &str,
        requests: &[SubnetRequest],
        host_routes: &[IpNet],
        durability: redb::Durability,
    ) -> Result<Vec<SubnetConfig>> {
        let default_req = [SubnetRequest::default()];
        let requests = if requests.is_empty() {
            &default_req[..]
        } else {
            requests
        };
        for r in requests {
            if r.subnet.is_none() && r.gateway.is_some() {
                return Err(IpamError::NeedsSubnet { what: "--gateway" });
            }
            if r.subnet.is_none() && r.ip_range.is_some() {
                return Err(IpamError::NeedsSubnet { what: "--ip-range" });
            }
        }
        let mut tx = self.db.begin_write().map_err(store_err)?;
        tx.set_durability(durability).map_err(store_err)?;
        let configs = {
            let mut nets = tx.open_table(NETWORKS).map_err(store_err)?;
            if nets.get(network_id).map_err(store_err)?.is_some() {
                return Err(IpamError::NetworkExists(network_id.to_string()));
            }
            let mut existing: Vec<(String, IpNet)> = Vec::new();
            for row in nets.iter().map_err(store_err)? {
                let (k, v) = row.map_err(store_err)?;
                let st: NetworkState = serde_json::from_slice(v.value()).map_err(store_err)?;
                existing.extend(
                    st.subnets
                        .iter()
                        .map(|s| (k.value().to_string(), s.config.subnet)),
                );
            }
            // Explicit subnets first, so automatic ones avoid them.
            let mut configs: Vec<Option<SubnetConfig>> = vec![None; requests.len()];
            for (i, r) in requests.iter().enumerate() {
                if let Some(s) = r.subnet {
                    let cfg = validate_subnet(s, r.gateway, r.ip_range)?;
                    if let Some(o) = configs.iter().flatten().find(|c| overlaps(&c.subnet, &s)) {
                        return Err(IpamError::OverlapsItself {
                            subnet: s,
                            other: o.subnet,
                        });
                    }
                    check_overlap(&s, &existing, host_routes)?;
                    configs[i] = Some(cfg);
                }
            }
            for (i, r) in requests.iter().enumerate() {
                if r.subnet.is_none() {
                    let mut taken = existing.clone();
                    taken.extend(
                        configs
                            .iter()
                            .flatten()
                            .map(|c| (network_id.to_string(), c.subnet)),
                    );
                    let s = choose_subnet(&self.pools, r.family(), &taken, host_routes)?;
                    configs[i] = Some(validate_subnet(s, None, None)?);
                }
            }
            let configs: Vec<SubnetConfig> = configs.into_iter().flatten().collect();
            let st = NetworkState::fresh(&configs);
            let bytes = serde_json::to_vec(&st).map_err(store_err)?;
            nets.insert(network_id, bytes.as_slice())
                .map_err(store_err)?;
            configs
        };
        tx.commit().map_err(store_err)?;
        Ok(configs)
    }

    /// Forget a network's plan. Refused while containers hold addresses in
    /// it; unknown networks are not an error (removal is idempotent).
    pub fn remove_network(&self, network_id: &str) -> Result<()> {
        self.remove_network_with(network_id, redb::Durability::Immediate)
    }

    /// [`Self::remove_network`] without an fsync of its own: for a network
    /// whose record is removed (synced) right after; a plan left behind by
    /// a crash belongs to no network and reconcile removes it.
    pub fn remove_network_unsynced(&self, network_id: &str) -> Result<()> {
        self.remove_network_with(network_id, redb::Durability::None)
    }

    fn remove_network_with(&self, network_id: &str, durability: redb::Durability) -> Result<()> {
        let mut tx = self.db.begin_write().map_err(store_err)?;
        tx.set_durability(durability).map_err(store_err)?;
        {
            let users = alloc_rows(&tx.open_table(ALLOCS).map_err(store_err)?, Some(network_id))?;
            if !users.is_empty() {
                return Err(IpamError::NetworkInUse {
                    network: network_id.to_string(),
                    containers: users.into_iter().map(|(_, c, _)| c).collect(),
                });
            }
            tx.open_table(NETWORKS)
                .map_err(store_err)?
                .remove(network_id)
                .map_err(store_err)?;
        }
        tx.commit().map_err(store_err)
    }

    /// The address plan of a network.
    pub fn network(&self, network_id: &str) -> Result<Option<Vec<SubnetConfig>>> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let t = tx.open_table(NETWORKS).map_err(store_err)?;
        let v = t.get(network_id).map_err(store_err)?;
        match v {
            None => Ok(None),
            Some(v) => {
                let st: NetworkState = serde_json::from_slice(v.value()).map_err(store_err)?;
                Ok(Some(st.subnets.into_iter().map(|s| s.config).collect()))
            }
        }
    }

    /// Every network's plan, by network id.
    pub fn networks(&self) -> Result<BTreeMap<String, Vec<SubnetConfig>>> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let t = tx.open_table(NETWORKS).map_err(store_err)?;
        let mut out = BTreeMap::new();
        for row in t.iter().map_err(store_err)? {
            let (k, v) = row.map_err(store_err)?;
            let st: NetworkState = serde_json::from_slice(v.value()).map_err(store_err)?;
            out.insert(
                k.value().to_string(),
                st.subnets.into_iter().map(|s| s.config).collect(),
            );
        }
        Ok(out)
    }

    /// Give `container_id` one address per family of the network's subnets
    /// (the family's first subnet with room), or the `static_ips` asked for
    /// (`--ip`, `--ip6`) in the subnet containing each. A family that has a
    /// static address gets only that one.
    pub fn allocate(
        &self,
        network_id: &str,
        container_id: &str,
        static_ips: &[IpAddr],
    ) -> Result<Vec<Assignment>> {
        for (i, a) in static_ips.iter().enumerate() {
            if let Some(b) = static_ips[..i]
                .iter()
                .find(|b| Family::of(b) == Family::of(a))
            {
                return Err(IpamError::DuplicateFamily { a: *b, b: *a });
            }
        }
        let tx = self.db.begin_write().map_err(store_err)?;
        let out = {
            let mut nets = tx.open_table(NETWORKS).map_err(store_err)?;
            let mut allocs = tx.open_table(ALLOCS).map_err(store_err)?;
            let mut st: NetworkState = match nets.get(network_id).map_err(store_err)? {
                None => return Err(IpamError::UnknownNetwork(network_id.to_string())),
                Some(v) => serde_json::from_slice(v.value()).map_err(store_err)?,
            };
            let rows = alloc_rows(&allocs, Some(network_id))?;
            if let Some((_, _, existing)) = rows.iter().find(|(_, c, _)| c == container_id) {
                let ips: Vec<IpAddr> = existing.iter().map(|a| a.ip).collect();
                // Idempotent for a repeated attach with the same request.
                if static_ips.iter().all(|s| ips.contains(s)) {
                    return Ok(existing.clone());
                }
                return Err(IpamError::AlreadyAllocated {
                    container: container_id.to_string(),
                    network: network_id.to_string(),
                    existing: ips,
                });
            }
            let mut owner: BTreeMap<IpAddr, String> = BTreeMap::new();
            for (_, c, a) in &rows {
                for x in a {
                    owner.insert(x.ip, c.clone());
                }
            }
            let mut out: Vec<Assignment> = Vec::new();
            for ip in static_ips {
                let fam = Family::of(ip);
                if !st.subnets.iter().any(|s| s.config.family() == fam) {
                    return Err(IpamError::NoSubnetForFamily {
                        network: network_id.to_string(),
                        family: fam.name(),
                        ip: *ip,
                    });
                }
                let Some(s) = st.subnets.iter().find(|s| s.config.subnet.contains(ip)) else {
                    return Err(IpamError::AddressOutside {
                        ip: *ip,
                        network: network_id.to_string(),
                    });
                };
                if let Some(what) = s.config.reserved(*ip) {
                    return Err(IpamError::AddressReserved {
                        ip: *ip,
                        subnet: s.config.subnet,
                        what,
                    });
                }
                if let Some(c) = owner.get(ip) {
                    return Err(IpamError::AddressInUse {
                        ip: *ip,
                        container: c.clone(),
                        network: network_id.to_string(),
                    });
                }
                out.push(Assignment {
                    ip: *ip,
                    subnet: s.config.subnet,
                    gateway: s.config.gateway,
                });
            }
            let taken: BTreeSet<IpAddr> = owner.keys().copied().collect();
            for fam in [Family::V4, Family::V6] {
                if out.iter().any(|a| Family::of(&a.ip) == fam) {
                    continue;
                }
                let mut first_full: Option<IpNet> = None;
                let mut got = false;
                for s in st.subnets.iter_mut().filter(|s| s.config.family() == fam) {
                    match next_free(&s.config, &taken, s.last) {
                        Some(ip) => {
                            s.last = Some(ip);
                            out.push(Assignment {
                                ip,
                                subnet: s.config.subnet,
                                gateway: s.config.gateway,
                            });
                            got = true;
                            break;
                        }
                        None => {
                            first_full.get_or_insert(s.config.subnet);
                        }
                    }
                }
                if let (false, Some(subnet)) = (got, first_full) {
                    return Err(IpamError::Exhausted {
                        network: network_id.to_string(),
                        subnet,
                    });
                }
            }
            let bytes = serde_json::to_vec(&st).map_err(store_err)?;
            nets.insert(network_id, bytes.as_slice())
                .map_err(store_err)?;
            let bytes = serde_json::to_vec(&out).map_err(store_err)?;
            allocs
                .insert((network_id, container_id), bytes.as_slice())
                .map_err(store_err)?;
            out
        };
        tx.commit().map_err(store_err)?;
        Ok(out)
    }

    /// Release the container's addresses on the network. Returns whether
    /// there were any (releasing twice is fine: every exit path calls it).
    pub fn release(&self, network_id: &str, container_id: &str) -> Result<bool> {
        self.release_with(network_id, container_id, redb::Durability::Immediate)
    }

    /// [`Self::release`] in a commit that is not fsynced, for a container
    /// that is gone (detach): after a crash, reconcile releases the
    /// addresses of containers that are not alive anyway.
    pub fn release_unsynced(&self, network_id: &str, container_id: &str) -> Result<bool> {
        self.release_with(network_id, container_id, redb::Durability::None)
    }

    fn release_with(
        &self,
        network_id: &str,
        container_id: &str,
        durability: redb::Durability,
    ) -> Result<bool> {
        let mut tx = self.db.begin_write().map_err(store_err)?;
        tx.set_durability(durability).map_err(store_err)?;
        let had = tx
            .open_table(ALLOCS)
            .map_err(store_err)?
            .remove((network_id, container_id))
            .map_err(store_err)?
            .is_some();
        tx.commit().map_err(store_err)?;
        Ok(had)
    }

    /// The container's addresses on the network, if any.
    pub fn allocation(
        &self,
        network_id: &str,
        container_id: &str,
    ) -> Result<Option<Vec<Assignment>>> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let t = tx.open_table(ALLOCS).map_err(store_err)?;
        let v = t.get((network_id, container_id)).map_err(store_err)?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(store_err))
            .transpose()
    }

    /// All allocations (network id, container id, addresses), optionally of
    /// one network.
    pub fn allocations(
        &self,
        network_id: Option<&str>,
    ) -> Result<Vec<(String, String, Vec<Assignment>)>> {
        let tx = self.db.begin_read().map_err(store_err)?;
        alloc_rows(&tx.open_table(ALLOCS).map_err(store_err)?, network_id)
    }

    /// Release every allocation whose container is not in `live` (after a
    /// crash or a reboot). Returns the (network, container) pairs released.
    pub fn reconcile(&self, live: &HashSet<String>) -> Result<Vec<(String, String)>> {
        let tx = self.db.begin_write().map_err(store_err)?;
        let released = {
            let mut t = tx.open_table(ALLOCS).map_err(store_err)?;
            let dead: Vec<(String, String)> = alloc_rows(&t, None)?
                .into_iter()
                .filter(|(_, c, _)| !live.contains(c))
                .map(|(n, c, _)| (n, c))
                .collect();
            for (n, c) in &dead {
                t.remove((n.as_str(), c.as_str())).map_err(store_err)?;
            }
            dead
        };
        tx.commit().map_err(store_err)?;
        Ok(released)
    }
}

type AllocRow = (String, String, Vec<Assignment>);

fn alloc_rows(
    t: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    network: Option<&str>,
) -> Result<Vec<AllocRow>> {
    let mut out = Vec::new();
    for row in t.iter().map_err(store_err)? {
        let (k, v) = row.map_err(store_err)?;
        let (n, c) = k.value();
        if network.is_some_and(|w| w != n) {
            continue;
        }
        let a: Vec<Assignment> = serde_json::from_slice(v.value()).map_err(store_err)?;
        out.push((n.to_string(), c.to_string(), a));
    }
    Ok(out)
}

/// A stable MAC for a container interface, derived from its address like
/// Docker's (`02:42` + the IPv4 address; for v6-only, `02:42` + the last
/// four bytes), so ARP caches stay right when a container restarts.
pub fn mac_for(ip: IpAddr) -> [u8; 6] {
    let b = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x02, 0x42, b[0], b[1], b[2], b[3]]
}

/// `02:42:ac:11:00:02` form.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn store() -> (tempfile::TempDir, Ipam) {
        let d = tempfile::tempdir().unwrap();
        let i = Ipam::open(d.path(), default_pools()).unwrap();
        (d, i)
    }
    fn req(subnet: &str) -> SubnetRequest {
        SubnetRequest::parse(Some(subnet), None, None).unwrap()
    }

    #[test]
    fn parse_subnet_accepts_canonical_and_rejects_rest() {
        assert_eq!(parse_subnet("172.21.0.0/24").unwrap(), net("172.21.0.0/24"));
        assert_eq!(parse_subnet("fd00:1::/64").unwrap(), net("fd00:1::/64"));
        let e = parse_subnet("172.20.1.5/16").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid subnet 172.20.1.5/16: it should be 172.20.0.0/16"
        );
        assert!(matches!(
            parse_subnet("300.1.0.0/16"),
            Err(IpamError::InvalidCidr(..))
        ));
        assert!(matches!(
            parse_subnet("10.0.0.0/33"),
            Err(IpamError::InvalidCidr(..))
        ));
        assert!(matches!(
            parse_subnet("10.0.0.0"),
            Err(IpamError::InvalidCidr(..))
        ));
        assert_eq!(parse_addr("[::1]").unwrap(), ip("::1"));
        assert!(parse_addr("nope").is_err());
    }

    #[test]
    fn gateway_defaults_to_first_host_and_is_validated() {
        let c = validate_subnet(net("10.1.0.0/24"), None, None).unwrap();
        assert_eq!(c.gateway, ip("10.1.0.1"));
        let c6 = validate_subnet(net("fd00:1::/64"), None, None).unwrap();
        assert_eq!(c6.gateway, ip("fd00:1::1"));
        let c = validate_subnet(net("10.1.0.0/24"), Some(ip("10.1.0.254")), None).unwrap();
        assert_eq!(c.gateway, ip("10.1.0.254"));
        assert!(matches!(
            validate_subnet(net("10.1.0.0/24"), Some(ip("10.2.0.1")), None),
            Err(IpamError::GatewayOutside { .. })
        ));
        let e = validate_subnet(net("10.1.0.0/24"), Some(ip("10.1.0.255")), None).unwrap_err();
        assert!(e.to_string().contains("broadcast"), "{e}");
        assert!(matches!(
            validate_subnet(net("10.1.0.0/24"), Some(ip("10.1.0.0")), None),
            Err(IpamError::GatewayReserved {
                what: "network",
                ..
            })
        ));
        assert!(matches!(
            validate_subnet(net("10.1.0.0/24"), Some(ip("fd00::1")), None),
            Err(IpamError::FamilyMismatch { .. })
        ));
        assert!(matches!(
            validate_subnet(net("10.1.0.0/31"), None, None),
            Err(IpamError::SubnetTooSmall(..))
        ));
        assert!(validate_subnet(net("10.1.0.0/30"), None, None).is_ok());
    }

    #[test]
    fn ip_range_must_be_inside_subnet() {
        assert!(validate_subnet(net("10.1.0.0/16"), None, Some(net("10.1.5.0/24"))).is_ok());
        assert!(matches!(
            validate_subnet(net("10.1.0.0/16"), None, Some(net("10.2.5.0/24"))),
            Err(IpamError::RangeOutside { .. })
        ));
        assert!(matches!(
            validate_subnet(net("10.1.0.0/24"), None, Some(net("10.1.0.0/16"))),
            Err(IpamError::RangeOutside { .. })
        ));
    }

    #[test]
    fn auto_subnet_follows_pool_and_skips_overlaps() {
        let pools = default_pools();
        assert_eq!(
            choose_subnet(&pools, Family::V4, &[], &[]).unwrap(),
            net("172.17.0.0/16")
        );
        let existing = vec![("a".to_string(), net("172.17.0.0/16"))];
        // A host route inside 172.18/16 makes it unusable too.
        let routes = vec![
            net("0.0.0.0/0"),
            net("172.18.3.0/24"),
            net("169.254.0.0/16"),
        ];
        assert_eq!(
            choose_subnet(&pools, Family::V4, &existing, &routes).unwrap(),
            net("172.19.0.0/16")
        );
        // All of 172.16/12 is routed: go to 192.168/20 slices, skipping the first.
        let routes = vec![net("172.16.0.0/12"), net("192.168.0.0/24")];
        assert_eq!(
            choose_subnet(&pools, Family::V4, &[], &routes).unwrap(),
            net("192.168.16.0/20")
        );
        let routes = vec![net("172.16.0.0/12"), net("192.168.0.0/16")];
        assert!(matches!(
            choose_subnet(&pools, Family::V4, &[], &routes),
            Err(IpamError::PoolExhausted { .. })
        ));
        // v6: the default ULA pool; fe80::/64 routes are ignored.
        let s6 = choose_subnet(&pools, Family::V6, &[], &[net("fe80::/64")]).unwrap();
        assert_eq!(s6, net("fd5b:1baf:a00::/64"));
        let v4only = vec![AddressPool::new("10.0.0.0/8", 24).unwrap()];
        assert!(matches!(
            choose_subnet(&v4only, Family::V6, &[], &[]),
            Err(IpamError::NoPool { .. })
        ));
        assert_eq!(
            choose_subnet(&v4only, Family::V4, &[], &[]).unwrap(),
            net("10.0.0.0/24")
        );
        assert!(AddressPool::new("10.0.0.0/16", 8).is_err());
    }

    #[test]
    fn next_free_is_sequential_with_wrap_and_skips_reserved() {
        let cfg = validate_subnet(net("10.0.0.0/29"), None, None).unwrap();
        // hosts .1 (gateway) .. .6, .7 broadcast
        let mut taken = BTreeSet::new();
        let mut last = None;
        let mut got = vec![];
        while let Some(a) = next_free(&cfg, &taken, last) {
            got.push(a);
            taken.insert(a);
            last = Some(a);
        }
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
                .map(ip)
                .to_vec()
        );
        // Free .3: next after last (.6) wraps around to .3.
        taken.remove(&ip("10.0.0.3"));
        assert_eq!(next_free(&cfg, &taken, last), Some(ip("10.0.0.3")));
        // With a range, only the range is used.
        let cfg = validate_subnet(net("10.0.0.0/24"), None, Some(net("10.0.0.128/30"))).unwrap();
        let taken = BTreeSet::from([ip("10.0.0.128")]);
        assert_eq!(next_free(&cfg, &taken, None), Some(ip("10.0.0.129")));
        assert_eq!(
            next_free(&cfg, &taken, Some(ip("10.0.0.131"))),
            Some(ip("10.0.0.129"))
        );
        // v6 in a huge subnet terminates fast.
        let cfg6 = validate_subnet(net("fd00::/64"), None, None).unwrap();
        assert_eq!(
            next_free(&cfg6, &BTreeSet::new(), None),
            Some(ip("fd00::2"))
        );
    }

    #[test]
    fn store_create_allocate_release_exhaust() {
        let (_d, ipam) = store();
        let cfg = ipam
            .create_network(
                "n1",
                &[SubnetRequest::parse(Some("10.9.0.0/29"), None, None).unwrap()],
                &[],
            )
            .unwrap();
        assert_eq!(cfg[0].gateway, ip("10.9.0.1"));
        assert!(matches!(
            ipam.create_network("n1", &[req("10.10.0.0/24")], &[]),
            Err(IpamError::NetworkExists(_))
        ));
        let a = ipam.allocate("n1", "c1", &[]).unwrap();
        assert_eq!(
            a,
            vec![Assignment {
                ip: ip("10.9.0.2"),
                subnet: net("10.9.0.0/29"),
                gateway: ip("10.9.0.1")
            }]
        );
        assert_eq!(a[0].ip_net(), net("10.9.0.2/29"));
        // Idempotent for the same container.
        assert_eq!(ipam.allocate("n1", "c1", &[]).unwrap(), a);
        for c in ["c2", "c3", "c4", "c5"] {
            ipam.allocate("n1", c, &[]).unwrap();
        }
        let e = ipam.allocate("n1", "c6", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no free address left in network n1 (subnet 10.9.0.0/29)"
        );
        assert!(ipam.release("n1", "c3").unwrap());
        assert!(!ipam.release("n1", "c3").unwrap());
        assert_eq!(
            ipam.allocate("n1", "c6", &[]).unwrap()[0].ip,
            ip("10.9.0.4")
        );
        // Persisted across reopen.
        drop(ipam);
        let ipam = Ipam::open(_d.path(), default_pools()).unwrap();
        assert_eq!(
            ipam.allocation("n1", "c6").unwrap().unwrap()[0].ip,
            ip("10.9.0.4")
        );
        assert_eq!(ipam.allocations(Some("n1")).unwrap().len(), 5);
        assert!(matches!(
            ipam.allocate("nope", "c1", &[]),
            Err(IpamError::UnknownNetwork(_))
        ));
    }

    #[test]
    fn static_addresses() {
        let (_d, ipam) = store();
        ipam.create_network(
            "n",
            &[
                req("10.9.0.0/24"),
                SubnetRequest::parse(Some("fd00:9::/64"), Some("fd00:9::fe"), None).unwrap(),
            ],
            &[],
        )
        .unwrap();
        let a = ipam.allocate("n", "c1", &[ip("10.9.0.50")]).unwrap();
        // v4 static, v6 dynamic (first host after the subnet-router address, not the gateway)
        assert_eq!(
            a.iter().map(|a| a.ip).collect::<Vec<_>>(),
            vec![ip("10.9.0.50"), ip("fd00:9::1")]
        );
        let e = ipam.allocate("n", "c2", &[ip("10.9.0.50")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "address 10.9.0.50 is already in use by container c1 on network n"
        );
        assert!(matches!(
            ipam.allocate("n", "c2", &[ip("10.8.0.5")]),
            Err(IpamError::AddressOutside { .. })
        ));
        assert!(matches!(
            ipam.allocate("n", "c2", &[ip("10.9.0.1")]),
            Err(IpamError::AddressReserved {
                what: "gateway",
                ..
            })
        ));
        assert!(matches!(
            ipam.allocate("n", "c2", &[ip("10.9.0.0")]),
            Err(IpamError::AddressReserved {
                what: "network",
                ..
            })
        ));
        assert!(matches!(
            ipam.allocate("n", "c2", &[ip("10.9.0.255")]),
            Err(IpamError::AddressReserved {
                what: "broadcast",
                ..
            })
        ));
        assert!(matches!(
            ipam.allocate("n", "c2", &[ip("fd00:9::fe")]),
            Err(IpamError::AddressReserved {
                what: "gateway",
                ..
            })
        ));
        assert!(matches!(
            ipam.allocate("n", "c2", &[ip("10.9.0.7"), ip("10.9.0.8")]),
            Err(IpamError::DuplicateFamily { .. })
        ));
        // Failed requests allocated nothing.
        assert_eq!(ipam.allocations(None).unwrap().len(), 1);
        // Dynamic allocation skips the static address.
        let (_d2, ipam2) = store();
        ipam2
            .create_network("m", &[req("10.7.0.0/24")], &[])
            .unwrap();
        ipam2.allocate("m", "s", &[ip("10.7.0.2")]).unwrap();
        assert_eq!(ipam2.allocate("m", "d", &[]).unwrap()[0].ip, ip("10.7.0.3"));
        // Static v6 on a v4-only network names the problem.
        assert!(matches!(
            ipam2.allocate("m", "x", &[ip("fd00::5")]),
            Err(IpamError::NoSubnetForFamily { .. })
        ));
        // Asking again with a different static address is refused.
        assert!(matches!(
            ipam2.allocate("m", "s", &[ip("10.7.0.9")]),
            Err(IpamError::AlreadyAllocated { .. })
        ));
    }

    #[test]
    fn network_creation_refuses_overlaps_and_bad_input_atomically() {
        let (_d, ipam) = store();
        ipam.create_network("a", &[req("172.21.0.0/24")], &[])
            .unwrap();
        let e = ipam
            .create_network("b", &[req("172.21.0.0/16")], &[])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 172.21.0.0/16 overlaps subnet 172.21.0.0/24 of network a"
        );
        let e = ipam
            .create_network("b", &[req("192.168.5.0/24")], &[net("192.168.0.0/16")])
            .unwrap_err();
        assert!(matches!(e, IpamError::OverlapsRoute { .. }), "{e}");
        assert!(matches!(
            ipam.create_network("b", &[req("10.0.0.0/24"), req("10.0.0.128/25")], &[]),
            Err(IpamError::OverlapsItself { .. })
        ));
        let gw_only = SubnetRequest {
            gateway: Some(ip("10.0.0.1")),
            ..Default::default()
        };
        assert!(matches!(
            ipam.create_network("b", &[gw_only], &[]),
            Err(IpamError::NeedsSubnet { .. })
        ));
        // Nothing was recorded for "b".
        assert!(ipam.network("b").unwrap().is_none());
        // Automatic choices avoid existing networks and each other.
        let auto = ipam.create_network("c", &[], &[]).unwrap();
        assert_eq!(auto[0].subnet, net("172.17.0.0/16"));
        let auto = ipam
            .create_network(
                "d",
                &[
                    SubnetRequest::default(),
                    SubnetRequest {
                        v6: true,
                        ..Default::default()
                    },
                ],
                &[],
            )
            .unwrap();
        assert_eq!(auto[0].subnet, net("172.18.0.0/16"));
        assert_eq!(auto[1].subnet.prefix_len(), 64);
        assert_eq!(ipam.networks().unwrap().len(), 3);
    }

    #[test]
    fn remove_network_refused_while_in_use() {
        let (_d, ipam) = store();
        ipam.create_network("a", &[req("10.3.0.0/24")], &[])
            .unwrap();
        ipam.allocate("a", "c1", &[]).unwrap();
        let e = ipam.remove_network("a").unwrap_err();
        assert_eq!(e.to_string(), "network a is in use by container(s) c1");
        ipam.release("a", "c1").unwrap();
        ipam.remove_network("a").unwrap();
        assert!(ipam.network("a").unwrap().is_none());
        ipam.remove_network("a").unwrap();
        // The subnet is free again.
        ipam.create_network("b", &[req("10.3.0.0/24")], &[])
            .unwrap();
    }

    #[test]
    fn reconcile_releases_dead_containers_only() {
        let (_d, ipam) = store();
        ipam.create_network("a", &[req("10.4.0.0/24")], &[])
            .unwrap();
        ipam.create_network("b", &[req("10.5.0.0/24")], &[])
            .unwrap();
        for (n, c) in [("a", "live"), ("a", "dead1"), ("b", "live"), ("b", "dead2")] {
            ipam.allocate(n, c, &[]).unwrap();
        }
        let live = HashSet::from(["live".to_string()]);
        let mut r = ipam.reconcile(&live).unwrap();
        r.sort();
        assert_eq!(
            r,
            vec![("a".into(), "dead1".into()), ("b".into(), "dead2".into())]
        );
        let rows = ipam.allocations(None).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|(_, c, _)| c == "live"));
        assert!(ipam.reconcile(&live).unwrap().is_empty());
    }

    #[test]
    fn macs_are_derived_from_the_address() {
        assert_eq!(mac_string(&mac_for(ip("172.17.0.2"))), "02:42:ac:11:00:02");
        assert_eq!(mac_string(&mac_for(ip("fd00::1:2:3"))), "02:42:00:02:00:03");
    }
}
