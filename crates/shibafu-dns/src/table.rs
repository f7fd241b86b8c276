//! The record table: what the daemon knows about endpoints, compiled into
//! per-network name maps that the query path reads without locking (the
//! whole compiled [`State`] is swapped atomically).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use smallvec::SmallVec;

use crate::wire::{self, Owner, Writer};
use crate::{DnsError, IpNet, NetworkDns};

/// A transport protocol of an SRV record (`_PORT._PROTO.SERVICE.ZONE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

impl std::str::FromStr for Proto {
    type Err = DnsError;
    fn from_str(s: &str) -> Result<Self, DnsError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            _ => Err(DnsError::InvalidName {
                name: s.to_string(),
                why: "protocol must be tcp, udp or sctp",
            }),
        }
    }
}

/// One container on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub container_id: String,
    /// The container's name (without Docker's leading `/`).
    pub name: String,
    pub hostname: Option<String>,
    /// `--network-alias` names; an alias shared by several endpoints is a service.
    pub aliases: Vec<String>,
    /// `--service NAME` with its `--service-weight` (1 when not given).
    pub services: Vec<(String, u16)>,
    pub network_id: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Published / EXPOSEd / `--service-port` ports: SRV records.
    pub ports: Vec<(u16, Proto)>,
    /// Health: unhealthy endpoints leave service and alias answers (the
    /// container's own names keep answering, so it can still be reached
    /// to be debugged).
    pub healthy: bool,
    /// The container's `--dns` servers: its forwarded queries go there.
    pub dns_servers: Vec<SocketAddr>,
}

/// A configured CNAME: `name` → `target` in one network (or all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cname {
    /// `None`: every served network.
    pub network_id: Option<String>,
    /// Relative to the zone unless it contains a dot, then absolute.
    pub name: String,
    pub target: String,
}

/// Everything the server answers locally. Built by the daemon from its
/// state and given whole to [`crate::DnsServer::set_table`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub endpoints: Vec<Endpoint>,
    pub cnames: Vec<Cname>,
}

/// Why a name answers for an endpoint (for traces and health filtering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameKind {
    Container,
    Hostname,
    Alias,
    Service,
}

impl NameKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NameKind::Container => "container name",
            NameKind::Hostname => "hostname",
            NameKind::Alias => "alias",
            NameKind::Service => "service",
        }
    }
    /// Services and aliases drop unhealthy instances.
    fn follows_health(self) -> bool {
        matches!(self, NameKind::Alias | NameKind::Service)
    }
}

/// One answering instance of a name.
#[derive(Debug)]
pub(crate) struct Instance {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    pub weight: u16,
    pub container: Arc<str>,
    pub kind: NameKind,
}

/// SRV data of one instance of a name. The ports are kept on the name's
/// own entry and `_PORT._PROTO.name` is answered at query time, so a
/// container with 1000 ports costs one shared list per name rather than
/// 1000 compiled names (the table is recompiled on every change).
#[derive(Debug)]
pub(crate) struct SrvTarget {
    /// Shared by all names of the endpoint.
    pub ports: Arc<[(u16, Proto)]>,
    pub weight: u16,
    /// `<container>.<zone>` in wire format.
    pub target: Box<[u8]>,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    pub container: Arc<str>,
}

/// What one name answers in one network.
#[derive(Debug, Default)]
pub(crate) struct NameEntry {
    pub instances: Vec<Instance>,
    /// Weighted round-robin schedule: indices into `instances`; empty or
    /// one long when there is nothing to rotate.
    pub schedule: Vec<u16>,
    pub next: AtomicUsize,
    /// What `_PORT._PROTO.<this name>` answers (see [`SrvTarget`]).
    pub srv: Vec<SrvTarget>,
    pub cname: Option<Box<[u8]>>,
}

impl NameEntry {
    /// The index of the instance to put first in this answer.
    pub fn rotate(&self) -> usize {
        match self.schedule.len() {
            0 | 1 => 0,
            n => self.schedule[self.next.fetch_add(1, Ordering::Relaxed) % n] as usize,
        }
    }
    pub fn has_v4(&self) -> bool {
        self.instances.iter().any(|i| i.v4.is_some())
    }
    pub fn has_v6(&self) -> bool {
        self.instances.iter().any(|i| i.v6.is_some())
    }
}

/// One served network, compiled.
#[derive(Debug)]
pub(crate) struct NetState {
    pub name: Arc<str>,
    /// The zone in wire format.
    pub zone: Box<[u8]>,
    pub internal: bool,
    pub forwarders: Vec<SocketAddr>,
    pub subnets: Vec<IpNet>,
    /// Lower-case wire names (both `x` and `x.<zone>`) → answers.
    pub names: HashMap<Box<[u8]>, Arc<NameEntry>>,
    /// Container addresses → `<container>.<zone>`.
    pub ptr: HashMap<IpAddr, (Box<[u8]>, Arc<str>)>,
}

/// A known requester: the networks it may see.
#[derive(Debug, Default)]
pub(crate) struct RequesterInfo {
    pub nets: Vec<u16>,
    pub dns_servers: Vec<SocketAddr>,
}

/// The compiled table plus the served networks: read by every query.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub nets: Vec<NetState>,
    pub by_id: HashMap<Arc<str>, u16>,
    /// Listen address → network (the view of unknown requesters).
    pub by_listen: HashMap<IpAddr, u16>,
    pub requesters: HashMap<IpAddr, RequesterInfo>,
}

/// The zone of a network: its own, or `<name>.<suffix>`.
pub(crate) fn zone_of(net: &NetworkDns, suffix: &str) -> Result<Vec<u8>, DnsError> {
    let text = match &net.zone {
        Some(z) => z.clone(),
        None => format!("{}.{}", net.name, suffix.trim_matches('.')),
    };
    wire::name_from_str(&text).map_err(|why| DnsError::InvalidZone { zone: text, why })
}

/// Reduces weights so the schedule stays short, then lays it out with
/// smooth weighted round-robin (nginx's): heavy instances are spread out
/// rather than answered in bursts.
fn schedule(weights: &[u16]) -> Vec<u16> {
    if weights.len() <= 1 {
        return Vec::new();
    }
    let g = weights
        .iter()
        .fold(0u32, |g, &w| gcd(g, w.max(1) as u32))
        .max(1);
    let mut w: Vec<u32> = weights.iter().map(|&w| w.max(1) as u32 / g).collect();
    const MAX_SCHEDULE: u32 = 4096;
    let total: u32 = w.iter().sum();
    if total > MAX_SCHEDULE {
        for x in &mut w {
            *x = (*x as u64 * MAX_SCHEDULE as u64 / total as u64).max(1) as u32;
        }
    }
    let total: i64 = w.iter().map(|&x| x as i64).sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u16);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Temporary per-name builder.
#[derive(Default)]
struct EntryBuilder {
    instances: Vec<Instance>,
    srv: Vec<SrvTarget>,
    cname: Option<Box<[u8]>>,
}

/// Compiles the table against the served networks. Endpoints of networks
/// not served are ignored (the default bridge has no names); invalid names
/// are skipped and reported, so one bad alias cannot take DNS down.
pub(crate) fn compile(table: &Table, served: &[(NetworkDns, Vec<u8>)]) -> (State, Vec<DnsError>) {
    let mut errors = Vec::new();
    let mut state = State::default();
    let mut builders: Vec<HashMap<Vec<u8>, EntryBuilder>> = Vec::new();
    for (i, (net, zone)) in served.iter().enumerate() {
        let id: Arc<str> = net.id.as_str().into();
        state.by_id.insert(id, i as u16);
        for ip in &net.listen {
            state.by_listen.insert(*ip, i as u16);
        }
        state.nets.push(NetState {
            name: net.name.as_str().into(),
            zone: zone.clone().into_boxed_slice(),
            internal: net.internal,
            forwarders: net.forwarders.clone(),
            subnets: net.subnets.clone(),
            names: HashMap::new(),
            ptr: HashMap::new(),
        });
        builders.push(HashMap::new());
    }

    // Container → (its addresses, its networks, its --dns servers): a
    // requester, known by any of its addresses, sees all its networks.
    #[allow(clippy::type_complexity)]
    let mut containers: HashMap<&str, (Vec<IpAddr>, Vec<u16>, Vec<SocketAddr>)> = HashMap::new();
    for ep in &table.endpoints {
        let Some(&ni) = state.by_id.get(ep.network_id.as_str()) else {
            continue;
        };
        let net = &mut state.nets[ni as usize];
        let b = &mut builders[ni as usize];
        let container: Arc<str> = ep.name.as_str().into();
        let target = match wire::name_from_str(&ep.name)
            .ok()
            .and_then(|n| wire::join_names(&n, &net.zone))
        {
            Some(t) => t.into_boxed_slice(),
            None => {
                errors.push(DnsError::InvalidName {
                    name: ep.name.clone(),
                    why: "not a valid DNS name in this zone",
                });
                continue;
            }
        };
        for ip in [ep.ipv4.map(IpAddr::V4), ep.ipv6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
        {
            net.ptr.insert(ip, (target.clone(), container.clone()));
            containers
                .entry(ep.container_id.as_str())
                .or_default()
                .0
                .push(ip);
        }
        {
            let c = containers.entry(ep.container_id.as_str()).or_default();
            if !c.1.contains(&ni) {
                c.1.push(ni);
            }
            for s in &ep.dns_servers {
                if !c.2.contains(s) {
                    c.2.push(*s);
                }
            }
        }
        let ports: Arc<[(u16, Proto)]> = ep.ports.as_slice().into();
        let mut names: Vec<(&str, NameKind, u16)> =
            vec![(ep.name.as_str(), NameKind::Container, 1)];
        if let Some(h) = &ep.hostname {
            names.push((h, NameKind::Hostname, 1));
        }
        names.extend(ep.aliases.iter().map(|a| (a.as_str(), NameKind::Alias, 1)));
        names.extend(
            ep.services
                .iter()
                .map(|(s, w)| (s.as_str(), NameKind::Service, (*w).max(1))),
        );
        for (name, kind, weight) in names {
            let Ok(rel) = wire::name_from_str(name) else {
                errors.push(DnsError::InvalidName {
                    name: name.to_string(),
                    why: "not a valid DNS name",
                });
                continue;
            };
            let Some(full) = wire::join_names(&rel, &net.zone) else {
                errors.push(DnsError::InvalidName {
                    name: name.to_string(),
                    why: "too long with the zone appended",
                });
                continue;
            };
            if kind.follows_health() && !ep.healthy {
                continue;
            }
            for key in [&rel, &full] {
                let e = b.entry(key.clone()).or_default();
                // The same container under the same name twice (hostname ==
                // name) answers once.
                if !e.instances.iter().any(|i| i.container == container) {
                    e.instances.push(Instance {
                        v4: ep.ipv4,
                        v6: ep.ipv6,
                        weight,
                        container: container.clone(),
                        kind,
                    });
                }
                if !ports.is_empty() && !e.srv.iter().any(|s| s.container == container) {
                    e.srv.push(SrvTarget {
                        ports: ports.clone(),
                        weight: if kind == NameKind::Service { weight } else { 0 },
                        target: target.clone(),
                        v4: ep.ipv4,
                        v6: ep.ipv6,
                        container: container.clone(),
                    });
                }
            }
        }
    }

    for (_, (addrs, nets, dns)) in containers {
        for ip in addrs {
            state.requesters.insert(
                ip,
                RequesterInfo {
                    nets: nets.clone(),
                    dns_servers: dns.clone(),
                },
            );
        }
    }

    for c in &table.cnames {
        let targets: Vec<u16> = match &c.network_id {
            Some(id) => match state.by_id.get(id.as_str()) {
                Some(&i) => vec![i],
                None => continue,
            },
            None => (0..state.nets.len() as u16).collect(),
        };
        let (Ok(name), Ok(target)) = (wire::name_from_str(&c.name), wire::name_from_str(&c.target))
        else {
            errors.push(DnsError::InvalidName {
                name: format!("{} -> {}", c.name, c.target),
                why: "invalid CNAME",
            });
            continue;
        };
        for ni in targets {
            let zone = &state.nets[ni as usize].zone;
            let mut keys = Vec::new();
            if c.name.trim_end_matches('.').contains('.') {
                keys.push(name.clone());
            } else if let Some(full) = wire::join_names(&name, zone) {
                keys.push(name.clone());
                keys.push(full);
            }
            for k in keys {
                let e = builders[ni as usize].entry(k).or_default();
                if e.instances.is_empty() && e.cname.is_none() {
                    e.cname = Some(target.clone().into_boxed_slice());
                }
            }
        }
    }

    for (ni, b) in builders.into_iter().enumerate() {
        let names = &mut state.nets[ni].names;
        for (k, mut e) in b {
            // Deterministic order (the table's order is the daemon's).
            e.instances.sort_by(|a, b| a.container.cmp(&b.container));
            e.srv.sort_by(|a, b| a.container.cmp(&b.container));
            let weights: Vec<u16> = e.instances.iter().map(|i| i.weight).collect();
            names.insert(
                k.into_boxed_slice(),
                Arc::new(NameEntry {
                    schedule: schedule(&weights),
                    instances: e.instances,
                    next: AtomicUsize::new(0),
                    srv: e.srv,
                    cname: e.cname,
                }),
            );
        }
    }
    (state, errors)
}

/// What the local lookup decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Local {
    /// A complete answer is in the buffer.
    Answered { rcode: u8 },
    /// A CNAME was written whose target is not local: the caller resolves
    /// the target upstream and appends it.
    CnameOut { target: Vec<u8> },
    /// Not a local name: forward it.
    Elsewhere,
}

/// A matched record, for traces.
#[derive(Debug, Clone)]
pub(crate) struct Match {
    pub network: Arc<str>,
    pub container: Option<Arc<str>>,
    pub why: &'static str,
}

impl State {
    /// The networks a requester sees: its own, or the listener's.
    pub fn view(&self, requester: IpAddr, listen: IpAddr) -> (&[u16], Option<u16>) {
        let listener = self.by_listen.get(&listen).copied();
        match self.requesters.get(&requester) {
            Some(r) => (&r.nets, listener.or(r.nets.first().copied())),
            None => match self.by_listen.get_key_value(&listen) {
                Some((_, i)) => (std::slice::from_ref(i), listener),
                None => (&[], None),
            },
        }
    }

    /// Answers `q` from the local names in `view`, writing into `w`'s buffer.
    pub fn answer(
        &self,
        view: &[u16],
        q: &wire::Query,
        msg: &[u8],
        ttl: u32,
        buf: &mut Vec<u8>,
        mut trace: Option<&mut Vec<Match>>,
    ) -> Local {
        let qname = q.qname.as_slice();
        if q.qclass != wire::CLASS_IN && q.qclass != 255 {
            return Local::Elsewhere;
        }
        // Reverse lookups of container addresses (and of anything in a
        // network's subnets, which must not leak upstream).
        if let Some(ip) = wire::reverse_to_ip(qname) {
            for &ni in view {
                let net = &self.nets[ni as usize];
                if let Some((target, c)) = net.ptr.get(&ip) {
                    let mut w = Writer::reply(buf, q, msg, wire::RCODE_NOERROR, true);
                    if matches!(q.qtype, wire::TYPE_PTR | wire::TYPE_ANY) {
                        w.name_rr(Owner::Question, wire::TYPE_PTR, ttl, target);
                        w.an += 1;
                    } else {
                        w.soa(&net.zone, ttl);
                        w.ns += 1;
                    }
                    if let Some(t) = trace.as_deref_mut() {
                        t.push(Match {
                            network: net.name.clone(),
                            container: Some(c.clone()),
                            why: "container address",
                        });
                    }
                    finish(w, q);
                    return Local::Answered {
                        rcode: wire::RCODE_NOERROR,
                    };
                }
            }
            for &ni in view {
                let net = &self.nets[ni as usize];
                if net.subnets.iter().any(|s| s.contains(&ip)) {
                    let mut w = Writer::reply(buf, q, msg, wire::RCODE_NXDOMAIN, true);
                    w.soa(&net.zone, ttl);
                    w.ns += 1;
                    finish(w, q);
                    return Local::Answered {
                        rcode: wire::RCODE_NXDOMAIN,
                    };
                }
            }
            return Local::Elsewhere;
        }

        let mut found: SmallVec<[(&NetState, &NameEntry); 4]> = SmallVec::new();
        for &ni in view {
            let net = &self.nets[ni as usize];
            if let Some(e) = net.names.get(qname) {
                found.push((net, e));
            }
        }
        if found.is_empty() {
            if let Some((port, proto, base)) = split_srv(qname) {
                if let Some(r) = self.answer_srv(
                    view,
                    q,
                    msg,
                    ttl,
                    buf,
                    trace.as_deref_mut(),
                    (port, proto),
                    base,
                ) {
                    return r;
                }
            }
            // Zone apex or unknown name in a zone we serve.
            for &ni in view {
                let net = &self.nets[ni as usize];
                if wire::is_subdomain(qname, &net.zone) {
                    let apex = qname == &*net.zone;
                    let rcode = if apex {
                        wire::RCODE_NOERROR
                    } else {
                        wire::RCODE_NXDOMAIN
                    };
                    let mut w = Writer::reply(buf, q, msg, rcode, true);
                    if apex && matches!(q.qtype, wire::TYPE_SOA | wire::TYPE_ANY) {
                        w.soa(&net.zone, ttl);
                        w.an += 1;
                    } else {
                        w.soa(&net.zone, ttl);
                        w.ns += 1;
                    }
                    if let Some(t) = trace.as_deref_mut() {
                        t.push(Match {
                            network: net.name.clone(),
                            container: None,
                            why: if apex {
                                "zone apex"
                            } else {
                                "in zone, no such name"
                            },
                        });
                    }
                    finish(w, q);
                    return Local::Answered { rcode };
                }
            }
            return Local::Elsewhere;
        }

        // A configured CNAME (only when no network has real records).
        if found.iter().all(|(_, e)| e.instances.is_empty()) {
            if let Some((net, e)) = found.iter().find(|(_, e)| e.cname.is_some()) {
                let target = e.cname.as_deref().expect("checked");
                let mut w = Writer::reply(buf, q, msg, wire::RCODE_NOERROR, true);
                let at = w.name_rr(Owner::Question, wire::TYPE_CNAME, ttl, target);
                w.an += 1;
                if let Some(t) = trace.as_deref_mut() {
                    t.push(Match {
                        network: net.name.clone(),
                        container: None,
                        why: "configured CNAME",
                    });
                }
                if q.qtype == wire::TYPE_CNAME {
                    finish(w, q);
                    return Local::Answered {
                        rcode: wire::RCODE_NOERROR,
                    };
                }
                // Chase the target among local names in the view.
                let mut local = false;
                for &ni in view {
                    let n = &self.nets[ni as usize];
                    if let Some(te) = n.names.get(target) {
                        local = true;
                        w.an += write_addrs(&mut w, Owner::Pointer(at), te, q.qtype, ttl);
                    } else if wire::is_subdomain(target, &n.zone) {
                        local = true;
                    }
                }
                if local {
                    finish(w, q);
                    return Local::Answered {
                        rcode: wire::RCODE_NOERROR,
                    };
                }
                finish(w, q);
                return Local::CnameOut {
                    target: target.to_vec(),
                };
            }
        }

        let mut w = Writer::reply(buf, q, msg, wire::RCODE_NOERROR, true);
        match q.qtype {
            wire::TYPE_A | wire::TYPE_AAAA | wire::TYPE_ANY => {
                for (_, e) in &found {
                    w.an += write_addrs(&mut w, Owner::Question, e, q.qtype, ttl);
                }
            }
            _ => {}
        }
        if w.an == 0 {
            // The name exists but has no record of this type: NODATA, with
            // the SOA for negative caching.
            let (net, _) = found[0];
            w.soa(&net.zone, ttl);
            w.ns += 1;
        }
        if let Some(t) = trace {
            for (net, e) in &found {
                for i in &e.instances {
                    t.push(Match {
                        network: net.name.clone(),
                        container: Some(i.container.clone()),
                        why: i.kind.as_str(),
                    });
                }
            }
        }
        finish(w, q);
        Local::Answered {
            rcode: wire::RCODE_NOERROR,
        }
    }

    /// Answers `_PORT._PROTO.base` from the SRV targets of `base`'s entries
    /// in the view; `None` when no instance has that port (the caller then
    /// answers as for any unknown name).
    #[allow(clippy::too_many_arguments)]
    fn answer_srv(
        &self,
        view: &[u16],
        q: &wire::Query,
        msg: &[u8],
        ttl: u32,
        buf: &mut Vec<u8>,
        trace: Option<&mut Vec<Match>>,
        port: (u16, Proto),
        base: &[u8],
    ) -> Option<Local> {
        let mut hits: SmallVec<[(&NetState, &SrvTarget); 8]> = SmallVec::new();
        for &ni in view {
            let net = &self.nets[ni as usize];
            if let Some(e) = net.names.get(base) {
                hits.extend(
                    e.srv
                        .iter()
                        .filter(|s| s.ports.contains(&port))
                        .map(|s| (net, s)),
                );
            }
        }
        let (first_net, _) = *hits.first()?;
        let mut w = Writer::reply(buf, q, msg, wire::RCODE_NOERROR, true);
        if matches!(q.qtype, wire::TYPE_SRV | wire::TYPE_ANY) {
            let mut extra: SmallVec<[&SrvTarget; 8]> = SmallVec::new();
            for (_, s) in &hits {
                w.srv(Owner::Question, ttl, 0, s.weight, port.0, &s.target);
                w.an += 1;
                if !extra.iter().any(|x| x.target == s.target) {
                    extra.push(s);
                }
            }
            // Additional section: the targets' addresses, saving a round trip.
            for s in extra {
                for ip in [s.v4.map(IpAddr::V4), s.v6.map(IpAddr::V6)]
                    .into_iter()
                    .flatten()
                {
                    w.addr(Owner::Name(&s.target), ip, ttl);
                    w.ar += 1;
                }
            }
        } else {
            // The name exists, with no record of this type: NODATA.
            w.soa(&first_net.zone, ttl);
            w.ns += 1;
        }
        if let Some(t) = trace {
            t.extend(hits.iter().map(|(net, s)| Match {
                network: net.name.clone(),
                container: Some(s.container.clone()),
                why: "service port",
            }));
        }
        finish(w, q);
        Some(Local::Answered {
            rcode: wire::RCODE_NOERROR,
        })
    }
}

/// Splits `_PORT._PROTO.rest` (wire format, lower-case) into its port,
/// protocol and the name below them; `None` for any other name.
pub(crate) fn split_srv(qname: &[u8]) -> Option<(u16, Proto, &[u8])> {
    let l1 = *qname.first()? as usize;
    let label1 = qname.get(1..1 + l1)?;
    let after1 = qname.get(1 + l1..)?;
    let l2 = *after1.first()? as usize;
    let label2 = after1.get(1..1 + l2)?;
    let rest = after1.get(1 + l2..)?;
    let digits = label1.strip_prefix(b"_")?;
    // Ports are written without leading zeros, as the records were named.
    if digits.is_empty() || digits.len() > 5 || digits[0] == b'0' {
        return None;
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let port: u16 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let proto = match label2 {
        b"_tcp" => Proto::Tcp,
        b"_udp" => Proto::Udp,
        b"_sctp" => Proto::Sctp,
        _ => return None,
    };
    // A base name is needed: `_80._tcp.` alone is no service.
    if rest.len() < 2 {
        return None;
    }
    Some((port, proto, rest))
}

/// Writes the A and/or AAAA records of `e`, rotated. Returns how many.
fn write_addrs(w: &mut Writer<'_>, owner: Owner<'_>, e: &NameEntry, qtype: u16, ttl: u32) -> u16 {
    let n = e.instances.len();
    if n == 0 {
        return 0;
    }
    let want4 = qtype == wire::TYPE_A || qtype == wire::TYPE_ANY;
    let want6 = qtype == wire::TYPE_AAAA || qtype == wire::TYPE_ANY;
    if !(want4 && e.has_v4() || want6 && e.has_v6()) {
        return 0;
    }
    let first = e.rotate();
    let mut count = 0;
    for k in 0..n {
        let i = &e.instances[(first + k) % n];
        if want4 {
            if let Some(v4) = i.v4 {
                w.addr(owner, IpAddr::V4(v4), ttl);
                count += 1;
            }
        }
        if want6 {
            if let Some(v6) = i.v6 {
                w.addr(owner, IpAddr::V6(v6), ttl);
                count += 1;
            }
        }
    }
    count
}

/// Appends OPT when the query had EDNS, and writes the counts.
fn finish(mut w: Writer<'_>, q: &wire::Query) {
    if q.edns.is_some() {
        w.opt();
    }
    w.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, net: &str, ip: &str) -> Endpoint {
        Endpoint {
            container_id: format!("{name}-id"),
            name: name.into(),
            hostname: None,
            aliases: vec![],
            services: vec![],
            network_id: net.into(),
            ipv4: Some(ip.parse().unwrap()),
            ipv6: None,
            ports: vec![],
            healthy: true,
            dns_servers: vec![],
        }
    }

    fn net(id: &str, gw: &str) -> (NetworkDns, Vec<u8>) {
        let n = NetworkDns {
            id: id.into(),
            name: id.into(),
            zone: None,
            listen: vec![gw.parse().unwrap()],
            subnets: vec![],
            internal: false,
            forwarders: vec![],
        };
        let z = zone_of(&n, "local").unwrap();
        (n, z)
    }

    /// Answers `name`/`qtype` as `from` asking at `listen`: (rcode, answers).
    fn ask(st: &State, from: &str, listen: &str, name: &str, qtype: u16) -> (Local, Vec<String>) {
        let msg = wire::build_query(1, &wire::name_from_str(name).unwrap(), qtype);
        let q = wire::parse_query(&msg).unwrap();
        let (view, _) = st.view(from.parse().unwrap(), listen.parse().unwrap());
        let mut buf = Vec::new();
        let r = st.answer(view, &q, &msg, 5, &mut buf, None);
        let data = if matches!(r, Local::Answered { .. }) {
            wire::answers_text(&buf)
                .unwrap()
                .into_iter()
                .map(|a| a.data)
                .collect()
        } else {
            vec![]
        };
        (r, data)
    }

    #[test]
    fn views_follow_the_requesters_networks() {
        let t = Table {
            endpoints: vec![
                ep("a", "n1", "10.1.0.2"),
                ep("b", "n2", "10.2.0.2"),
                ep("c", "n1", "10.1.0.3"),
                ep("c", "n2", "10.2.0.3"),
            ],
            cnames: vec![],
        };
        let (st, errs) = compile(&t, &[net("n1", "10.1.0.1"), net("n2", "10.2.0.1")]);
        assert!(errs.is_empty());
        // a (n1) does not see b (n2), even by its zone name.
        assert_eq!(
            ask(&st, "10.1.0.2", "10.1.0.1", "b", wire::TYPE_A).0,
            Local::Elsewhere
        );
        assert_eq!(
            ask(&st, "10.1.0.2", "10.1.0.1", "b.n2.local", wire::TYPE_A).0,
            Local::Elsewhere
        );
        // c, known by either address, sees both networks; "c" answers both addresses.
        assert_eq!(
            ask(&st, "10.2.0.3", "10.2.0.1", "a", wire::TYPE_A).1,
            vec!["10.1.0.2"]
        );
        let (_, both) = ask(&st, "10.1.0.3", "10.1.0.1", "c", wire::TYPE_A);
        assert_eq!(both.len(), 2);
        // Strangers see the network they ask at.
        assert_eq!(
            ask(&st, "192.0.2.1", "10.2.0.1", "b", wire::TYPE_A).1,
            vec!["10.2.0.2"]
        );
        assert_eq!(
            ask(&st, "192.0.2.1", "10.2.0.1", "a", wire::TYPE_A).0,
            Local::Elsewhere
        );
        // Nobody at all: an address that is no listener.
        assert_eq!(
            ask(&st, "192.0.2.1", "192.0.2.2", "a", wire::TYPE_A).0,
            Local::Elsewhere
        );
        // In a seen zone, unknown is NXDOMAIN.
        assert_eq!(
            ask(&st, "10.1.0.2", "10.1.0.1", "zz.n1.local", wire::TYPE_A).0,
            Local::Answered {
                rcode: wire::RCODE_NXDOMAIN
            }
        );
    }

    #[test]
    fn ptr_srv_and_rotation() {
        let mut a = ep("a", "n1", "10.1.0.2");
        a.services = vec![("api".into(), 2)];
        a.ports = vec![(8080, Proto::Tcp), (53, Proto::Udp)];
        let mut b = ep("b", "n1", "10.1.0.3");
        b.services = vec![("api".into(), 1)];
        b.ports = vec![(8080, Proto::Tcp)];
        let t = Table {
            endpoints: vec![a, b],
            cnames: vec![],
        };
        let (st, _) = compile(&t, &[net("n1", "10.1.0.1")]);
        let gw = "10.1.0.1";
        assert_eq!(
            ask(&st, gw, gw, "2.0.1.10.in-addr.arpa", wire::TYPE_PTR).1,
            vec!["a.n1.local."]
        );
        let mut srv = ask(&st, gw, gw, "_8080._tcp.api.n1.local", wire::TYPE_SRV).1;
        srv.sort();
        assert_eq!(srv, vec!["0 1 8080 b.n1.local.", "0 2 8080 a.n1.local."]);
        assert_eq!(
            ask(&st, gw, gw, "_53._udp.a", wire::TYPE_SRV).1,
            vec!["0 0 53 a.n1.local."]
        );
        assert!(ask(&st, gw, gw, "_53._tcp.a", wire::TYPE_SRV).1.is_empty());
        // Weights 2:1: first answers go a, b, a, a, b, a ...
        let firsts: Vec<String> = (0..6)
            .map(|_| ask(&st, gw, gw, "api", wire::TYPE_A).1[0].clone())
            .collect();
        assert_eq!(firsts.iter().filter(|f| *f == "10.1.0.2").count(), 4);
    }

    #[test]
    fn srv_of_many_ports_is_answered_from_one_entry_per_name() {
        let mut a = ep("a", "n1", "10.1.0.2");
        a.ports = (1000..2000).map(|p| (p, Proto::Tcp)).collect();
        a.hostname = Some("ha".into());
        let t = Table {
            endpoints: vec![a],
            cnames: vec![],
        };
        let (st, _) = compile(&t, &[net("n1", "10.1.0.1")]);
        // a, a.n1.local, ha, ha.n1.local: no per-port names.
        assert_eq!(st.nets[0].names.len(), 4);
        let gw = "10.1.0.1";
        assert_eq!(
            ask(&st, gw, gw, "_1999._tcp.ha.n1.local", wire::TYPE_SRV).1,
            vec!["0 0 1999 a.n1.local."]
        );
        // The SRV name exists: other types get NODATA, not NXDOMAIN.
        let (r, data) = ask(&st, gw, gw, "_1500._tcp.a.n1.local", wire::TYPE_A);
        assert_eq!(
            r,
            Local::Answered {
                rcode: wire::RCODE_NOERROR
            }
        );
        assert!(data.is_empty());
        // A port or protocol not published: no such name.
        for name in ["_2000._tcp.a.n1.local", "_1500._udp.a.n1.local"] {
            assert_eq!(
                ask(&st, gw, gw, name, wire::TYPE_SRV).0,
                Local::Answered {
                    rcode: wire::RCODE_NXDOMAIN
                },
                "{name}"
            );
        }
        // The base name itself has no SRV records.
        let (r, data) = ask(&st, gw, gw, "a.n1.local", wire::TYPE_SRV);
        assert_eq!(
            r,
            Local::Answered {
                rcode: wire::RCODE_NOERROR
            }
        );
        assert!(data.is_empty());
    }

    #[test]
    fn split_srv_takes_only_port_and_protocol_labels() {
        let n = |s: &str| wire::name_from_str(s).unwrap();
        let name = n("_80._tcp.web.n1.local");
        let (port, proto, rest) = split_srv(&name).unwrap();
        assert_eq!((port, proto), (80, Proto::Tcp));
        assert_eq!(rest, n("web.n1.local").as_slice());
        assert_eq!(split_srv(&n("_53._sctp.x")).unwrap().1, Proto::Sctp);
        for bad in [
            "web.n1.local",
            "_80.web",
            "_80._http.web",
            "_080._tcp.web",
            "_70000._tcp.web",
            "_8x._tcp.web",
            "__._tcp.web",
            "_80._tcp",
        ] {
            assert!(split_srv(&n(bad)).is_none(), "{bad}");
        }
    }

    #[test]
    fn invalid_names_are_reported_and_skipped() {
        let mut bad = ep("ok", "n1", "10.1.0.2");
        bad.aliases = vec!["x".repeat(64), "fine".into()];
        let t = Table {
            endpoints: vec![bad],
            cnames: vec![],
        };
        let (st, errs) = compile(&t, &[net("n1", "10.1.0.1")]);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            ask(&st, "10.1.0.2", "10.1.0.1", "fine", wire::TYPE_A).1,
            vec!["10.1.0.2"]
        );
    }

    #[test]
    fn smooth_weighted_schedule() {
        assert!(schedule(&[5]).is_empty());
        assert_eq!(schedule(&[1, 1, 1]), vec![0, 1, 2]);
        let s = schedule(&[3, 1]);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 3);
        // Spread out: the light instance is not last in a burst of heavies.
        assert_eq!(schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        // Common factors are reduced.
        assert_eq!(schedule(&[20, 10]).len(), 3);
        // Huge weights are capped.
        assert!(schedule(&[65535, 65534, 1]).len() <= 4096 + 3);
    }
}
