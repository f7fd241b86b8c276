//! The nftables firewall: NAT, forwarding, isolation and published ports,
//! in shibafu's own `inet shibafu` table.
//!
//! Why it looks like this:
//! - The chains are a constant: all state (bridges, subnets, published
//!   ports) lives in sets and maps looked up by hash, so the per-packet
//!   cost and the number of rules do not grow with containers or ports,
//!   and a change is a handful of element updates ([`delta_ops`]), not a
//!   rule rewrite (Docker's nftables mode takes tens of seconds per
//!   container with hundreds of ports, moby#53466).
//! - Everything is generated as a pure function of [`DesiredState`], so
//!   the whole ruleset is unit-tested as data, and re-applying it after a
//!   crash or an `nft flush ruleset` is the same call ([`full_batch`]).
//! - Each change is ONE batch, which the kernel applies atomically or not
//!   at all. Element deltas go straight to the kernel over nfnetlink
//!   ([`crate::nfnl`]): libnftables would first read every element of the
//!   touched sets (~10 ms per change with 1000 published ports, against
//!   ~0.1 ms), and even with an almost empty table its cache fetch cost
//!   ~1.5 ms of every `network create` and `rm` (interval sets included,
//!   see [`crate::nfnl`]). Everything else (the full table, foreign
//!   rules, and any delta nfnetlink failed to apply) is a JSON batch run
//!   through libnftables in-process ([`crate::nftlib`]; the `nft` binary
//!   only when the library cannot be loaded). The full batch adds, deletes
//!   and re-creates the table in one transaction, so there is never a
//!   moment without rules.
//! - One `inet` table instead of `ip`/`ip6` pairs: a single object to own,
//!   replace and check, NAT included (inet NAT needs kernel 5.2+).
//! - Forwarding is accepted in a chain of higher priority than the usual
//!   `filter` and the accepted packets are marked ([`FirewallConfig::mark`]):
//!   nftables gives every base chain its say, so an `ip filter FORWARD`
//!   chain with policy drop (iptables-nft, Docker) would still drop them.
//!   When [`FirewallConfig::accept_marked_in_foreign_forward`] is set, one
//!   rule "mark → accept" tagged `shibafu` is inserted into such a chain
//!   (as Docker does). The same holds for the embedded DNS: queries from
//!   a network's containers to its gateway's port 53 are marked by an
//!   input chain of ours, and an `ip filter INPUT` chain with policy drop
//!   gets one "mark → accept" rule
//!   ([`FirewallConfig::accept_dns_in_foreign_input`]). These are the only
//!   rules shibafu ever puts outside its table; they exist only while such
//!   a policy does, and [`Firewall::ensure`] puts them back when a
//!   firewall reload drops them.
//! - 127.0.0.1 publishes are translated only for packets of the host
//!   itself (output hook); prerouting ignores loopback destinations from
//!   any other interface, so they are not reachable from the LAN
//!   (moby#41872).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::netlink::check_ifname;
use crate::nfnl::{Datum, Elem, ElemOp, Verb};

pub const TABLE: &str = "shibafu";
/// Comment on the one rule shibafu may put into a foreign FORWARD chain.
pub const FOREIGN_RULE_COMMENT: &str = "shibafu: accept forwarding of shibafu networks";
/// Comment on the one rule shibafu may put into a foreign INPUT chain.
pub const FOREIGN_INPUT_COMMENT: &str = "shibafu: accept DNS queries of shibafu containers";
/// The port of the embedded DNS on each network's gateway.
pub const DNS_PORT: u16 = 53;

/// The foreign chains shibafu may put one accept rule into: (chain, hook,
/// comment of our rule), in the `ip` and `ip6` `filter` tables.
const FOREIGN_CHAINS: [(&str, &str, &str); 2] = [
    ("FORWARD", "forward", FOREIGN_RULE_COMMENT),
    ("INPUT", "input", FOREIGN_INPUT_COMMENT),
];
/// shibafu's chains: the table is whole only when all are there.
pub(crate) const OUR_CHAINS: [&str; 6] = [
    "forward",
    "input",
    "prerouting",
    "output",
    "postrouting",
    "publish",
];

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(transparent)]
    InvalidName(#[from] crate::netlink::NetlinkError),
    #[error("bridge {0} is listed twice")]
    DuplicateBridge(String),
    #[error("port {port} is published twice: {a} and {b}")]
    PortConflict { port: String, a: String, b: String },
    #[error("port {0}: host address and container address are of different families")]
    FamilyMismatch(String),
    #[error("host port 0 is not a port (choose one before publishing)")]
    ZeroPort,
    #[error("running {bin}: {err}")]
    Spawn { bin: String, err: String },
    #[error("nft rejected the batch: {0}")]
    Nft(String),
    #[error("nft output: {0}")]
    Parse(String),
    #[error("this runner cannot apply element updates by themselves")]
    ElementsUnsupported,
    #[error("nfnetlink: {0}")]
    Nfnl(#[from] crate::nfnl::NfnlError),
}

pub type Result<T, E = FirewallError> = std::result::Result<T, E>;

/// One network as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwNetwork {
    pub bridge: String,
    pub subnets: Vec<IpNet>,
    /// `--internal`: no traffic in or out of the bridge, no NAT.
    pub internal: bool,
    /// Addresses on the bridge where the embedded DNS answers its
    /// containers (the gateways of a user-defined network; none for the
    /// default network, as in Docker).
    #[serde(default)]
    pub dns: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// One published port: `host_ip:host_port -> container_ip:container_port/proto`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    pub proto: Proto,
    /// `None`: every local address of the container address's family
    /// (`0.0.0.0` / `[::]`), 127.0.0.1 included.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = match self.host_ip {
            Some(IpAddr::V6(a)) => format!("[{a}]"),
            Some(a) => a.to_string(),
            None if self.container_ip.is_ipv6() => "[::]".into(),
            None => "0.0.0.0".into(),
        };
        let c = match self.container_ip {
            IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        };
        write!(
            f,
            "{host}:{}->{c}:{}/{}",
            self.host_port,
            self.container_port,
            self.proto.as_str()
        )
    }
}

/// Everything the firewall must reflect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    pub networks: Vec<FwNetwork>,
    pub ports: Vec<PortMapping>,
    /// Network policy rules, by bridge.
    #[serde(default)]
    pub policies: Vec<FwPolicyRule>,
}

/// One network policy rule on the wire: traffic entering bridge `to` from
/// bridge `from` (to every port, or one), allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FwPolicyRule {
    pub from: String,
    pub to: String,
    pub port: Option<(Proto, u16)>,
    pub allow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    /// Bits OR-ed into the mark of forwarded packets shibafu accepted.
    pub mark: u32,
    /// Insert one "mark → accept" rule into `ip filter FORWARD` /
    /// `ip6 filter FORWARD` when such a chain has policy drop.
    pub accept_marked_in_foreign_forward: bool,
    /// Insert one "mark → accept" rule for DNS queries to the gateways
    /// into `ip filter INPUT` / `ip6 filter INPUT` when such a chain has
    /// policy drop.
    pub accept_dns_in_foreign_input: bool,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            mark: 0x5bf0_0000,
            accept_marked_in_foreign_forward: true,
            accept_dns_in_foreign_input: true,
        }
    }
}

/// Check the state before generating anything from it.
pub fn validate(state: &DesiredState) -> Result<()> {
    let mut seen = BTreeSet::new();
    for n in &state.networks {
        check_ifname(&n.bridge)?;
        if !seen.insert(&n.bridge) {
            return Err(FirewallError::DuplicateBridge(n.bridge.clone()));
        }
    }
    // Overlaps of a wildcard with a specific address or of two equal keys,
    // among the mappings of one (family, proto, port): found by sorting
    // (this runs on every change, with possibly thousands of ports).
    let mut keyed = Vec::with_capacity(state.ports.len());
    for (i, p) in state.ports.iter().enumerate() {
        if p.host_port == 0 || p.container_port == 0 {
            return Err(FirewallError::ZeroPort);
        }
        if p.host_ip
            .is_some_and(|h| h.is_ipv6() != p.container_ip.is_ipv6())
        {
            return Err(FirewallError::FamilyMismatch(p.to_string()));
        }
        keyed.push(((p.container_ip.is_ipv6(), p.proto, p.host_port), i));
    }
    keyed.sort_unstable();
    // The first mapping (in list order) that conflicts with an earlier
    // one, and the first such earlier one.
    let mut first: Option<(usize, usize)> = None;
    for run in keyed.chunk_by(|a, b| a.0 == b.0).filter(|r| r.len() > 1) {
        for (n, &(_, j)) in run.iter().enumerate() {
            let p = &state.ports[j];
            // `run` is sorted by index within a key.
            if let Some(&(_, i)) = run[..n].iter().find(|(_, i)| {
                let o = &state.ports[*i];
                o.host_ip.is_none() || p.host_ip.is_none() || o.host_ip == p.host_ip
            }) {
                if first.is_none_or(|(fj, _)| j < fj) {
                    first = Some((j, i));
                }
            }
        }
    }
    if let Some((j, i)) = first {
        let (o, p) = (&state.ports[i], &state.ports[j]);
        return Err(FirewallError::PortConflict {
            port: format!("{}/{}", p.host_port, p.proto.as_str()),
            a: o.to_string(),
            b: p.to_string(),
        });
    }
    Ok(())
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}
fn payload(proto: &str, field: &str) -> Value {
    json!({"payload": {"protocol": proto, "field": field}})
}
fn m(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

/// Every named set and map, interval or not.
pub const SETS: [&str; 21] = [
    "bridges",
    "internal",
    "same",
    "masq4",
    "masq6",
    "local4",
    "local6",
    "dnat_ip4",
    "dnat_ip6",
    "dnat_any4",
    "dnat_any6",
    "dnat_ip4_port",
    "dnat_ip6_port",
    "dnat_any4_port",
    "dnat_any6_port",
    "pol_deny",
    "pol_deny_port",
    "pol_allow",
    "pol_allow_port",
    "dns4",
    "dns6",
];

/// The sets declared `flags interval`: a prefix is a range (two kernel
/// elements, or one with a key end: see [`crate::nfnl`]); they change
/// only on network create and rm.
pub const INTERVAL_SETS: [&str; 4] = ["masq4", "masq6", "local4", "local6"];

/// The named sets and maps with their elements, typed: the whole variable
/// part. The JSON batches and the nfnetlink deltas are both made from it.
pub fn typed_elements(state: &DesiredState) -> BTreeMap<&'static str, Vec<Elem>> {
    let mut e: BTreeMap<&'static str, Vec<Elem>> = SETS.iter().map(|k| (*k, Vec::new())).collect();
    let mut push = |k: &'static str, el: Elem| e.get_mut(k).expect("declared set").push(el);
    let ifn = |s: &str| Datum::Ifname(s.to_string());
    for r in &state.policies {
        let mut key = vec![ifn(&r.from), ifn(&r.to)];
        let k = match (r.allow, r.port) {
            (false, None) => "pol_deny",
            (true, None) => "pol_allow",
            (allow, Some((proto, port))) => {
                key.extend([Datum::Proto(proto), Datum::Service(port)]);
                if allow {
                    "pol_allow_port"
                } else {
                    "pol_deny_port"
                }
            }
        };
        push(k, Elem::new(key));
    }
    for n in &state.networks {
        push("bridges", Elem::new(vec![ifn(&n.bridge)]));
        push("same", Elem::new(vec![ifn(&n.bridge), ifn(&n.bridge)]));
        for s in &n.subnets {
            let k = if s.addr().is_ipv4() {
                "local4"
            } else {
                "local6"
            };
            push(k, Elem::new(vec![Datum::Prefix(s.trunc()), ifn(&n.bridge)]));
        }
        for a in &n.dns {
            let k = if a.is_ipv4() { "dns4" } else { "dns6" };
            push(k, Elem::new(vec![ifn(&n.bridge), Datum::Addr(*a)]));
        }
        if n.internal {
            push("internal", Elem::new(vec![ifn(&n.bridge)]));
        } else {
            for s in &n.subnets {
                let k = if s.addr().is_ipv4() { "masq4" } else { "masq6" };
                push(k, Elem::new(vec![Datum::Prefix(s.trunc())]));
            }
        }
    }
    for p in &state.ports {
        for (k, el) in port_elements(p) {
            push(k, el);
        }
    }
    e
}

/// The two map elements of one published port: (host address,)
/// protocol, port -> container address, and -> container port. Distinct
/// ports of a valid state have distinct keys, which [`delta_ops`] relies
/// on to diff ports instead of elements.
fn port_elements(p: &PortMapping) -> [(&'static str, Elem); 2] {
    let v6 = p.container_ip.is_ipv6();
    let l4 = [Datum::Proto(p.proto), Datum::Service(p.host_port)];
    let ((k, kp), key) = match p.host_ip {
        Some(h) => (
            if v6 {
                ("dnat_ip6", "dnat_ip6_port")
            } else {
                ("dnat_ip4", "dnat_ip4_port")
            },
            std::iter::once(Datum::Addr(h))
                .chain(l4)
                .collect::<Vec<_>>(),
        ),
        None => (
            if v6 {
                ("dnat_any6", "dnat_any6_port")
            } else {
                ("dnat_any4", "dnat_any4_port")
            },
            l4.to_vec(),
        ),
    };
    [
        (k, Elem::map(key.clone(), Datum::Addr(p.container_ip))),
        (kp, Elem::map(key, Datum::Service(p.container_port))),
    ]
}

/// [`typed_elements`] as nft's JSON.
fn elements(state: &DesiredState) -> BTreeMap<&'static str, Vec<Value>> {
    typed_elements(state)
        .into_iter()
        .map(|(k, v)| (k, v.iter().map(Elem::to_json).collect()))
        .collect()
}

fn set_decl(name: &str, ty: Value, flags: Option<&[&str]>) -> Value {
    let mut s = json!({"family": "inet", "table": TABLE, "name": name, "type": ty});
    if let Some(f) = flags {
        s["flags"] = json!(f);
    }
    json!({"set": s})
}

fn map_decl(name: &str, key: Value, data: &str) -> Value {
    json!({"map": {"family": "inet", "table": TABLE, "name": name, "type": key, "map": data}})
}

fn chain(name: &str, ty: &str, hook: &str, prio: i32) -> Value {
    json!({"chain": {"family": "inet", "table": TABLE, "name": name, "type": ty, "hook": hook, "prio": prio, "policy": "accept"}})
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": "inet", "table": TABLE, "chain": chain, "expr": expr}}})
}

/// The constant part: sets, maps, chains and rules (see module doc).
fn structure(cfg: &FirewallConfig) -> Vec<Value> {
    let mark_accept = || {
        vec![
            json!({"mangle": {"key": meta("mark"), "value": {"|": [meta("mark"), cfg.mark]}}}),
            json!({"accept": null}),
        ]
    };
    let with = |mut pre: Vec<Value>, post: Vec<Value>| {
        pre.extend(post);
        pre
    };
    let mut v = vec![
        set_decl("bridges", json!("ifname"), None),
        set_decl("internal", json!("ifname"), None),
        set_decl("same", json!(["ifname", "ifname"]), None),
        // Network policies: source bridge . destination bridge (. proto
        // . port).
        set_decl("pol_deny", json!(["ifname", "ifname"]), None),
        set_decl(
            "pol_deny_port",
            json!(["ifname", "ifname", "inet_proto", "inet_service"]),
            None,
        ),
        set_decl("pol_allow", json!(["ifname", "ifname"]), None),
        set_decl(
            "pol_allow_port",
            json!(["ifname", "ifname", "inet_proto", "inet_service"]),
            None,
        ),
        set_decl("masq4", json!("ipv4_addr"), Some(&["interval"])),
        set_decl("masq6", json!("ipv6_addr"), Some(&["interval"])),
        // subnet . bridge: a source on the bridge it is leaving by.
        set_decl(
            "local4",
            json!(["ipv4_addr", "ifname"]),
            Some(&["interval"]),
        ),
        set_decl(
            "local6",
            json!(["ipv6_addr", "ifname"]),
            Some(&["interval"]),
        ),
        // Published ports: (host address,) protocol, port -> container
        // address, and the same key -> container port. Two maps because
        // nft 1.0.6's JSON parser cannot declare concatenated map data.
        map_decl(
            "dnat_ip4",
            json!(["ipv4_addr", "inet_proto", "inet_service"]),
            "ipv4_addr",
        ),
        map_decl(
            "dnat_ip6",
            json!(["ipv6_addr", "inet_proto", "inet_service"]),
            "ipv6_addr",
        ),
        map_decl(
            "dnat_any4",
            json!(["inet_proto", "inet_service"]),
            "ipv4_addr",
        ),
        map_decl(
            "dnat_any6",
            json!(["inet_proto", "inet_service"]),
            "ipv6_addr",
        ),
        map_decl(
            "dnat_ip4_port",
            json!(["ipv4_addr", "inet_proto", "inet_service"]),
            "inet_service",
        ),
        map_decl(
            "dnat_ip6_port",
            json!(["ipv6_addr", "inet_proto", "inet_service"]),
            "inet_service",
        ),
        map_decl(
            "dnat_any4_port",
            json!(["inet_proto", "inet_service"]),
            "inet_service",
        ),
        map_decl(
            "dnat_any6_port",
            json!(["inet_proto", "inet_service"]),
            "inet_service",
        ),
        // bridge . gateway address where the embedded DNS answers.
        set_decl("dns4", json!(["ifname", "ipv4_addr"]), None),
        set_decl("dns6", json!(["ifname", "ipv6_addr"]), None),
        // filter - 10: before the host's usual filter chains.
        chain("forward", "filter", "forward", -10),
        chain("input", "filter", "input", -10),
        chain("prerouting", "nat", "prerouting", -100),
        chain("output", "nat", "output", -100),
        chain("postrouting", "nat", "postrouting", 100),
        json!({"chain": {"family": "inet", "table": TABLE, "name": "publish"}}),
    ]
    .into_iter()
    .map(|x| json!({"add": x}))
    .collect::<Vec<_>>();

    // forward
    let f = "forward";
    v.push(rule(
        f,
        vec![
            m("!=", meta("iifname"), json!("@bridges")),
            m("!=", meta("oifname"), json!("@bridges")),
            json!({"return": null}),
        ],
    ));
    v.push(rule(
        f,
        with(
            vec![m(
                "in",
                json!({"ct": {"key": "state"}}),
                json!(["established", "related"]),
            )],
            mark_accept(),
        ),
    ));
    // Policies: deny wins over everything but replies (so also over
    // published ports reached through the host), allow opens a path
    // through the isolation below.
    let bridges2 = || json!({"concat": [meta("iifname"), meta("oifname")]});
    let bridges_port = || {
        json!({"concat": [
            meta("iifname"),
            meta("oifname"),
            meta("l4proto"),
            {"payload": {"protocol": "th", "field": "dport"}}
        ]})
    };
    v.push(rule(
        f,
        vec![
            m("==", bridges2(), json!("@pol_deny")),
            json!({"drop": null}),
        ],
    ));
    v.push(rule(
        f,
        vec![
            m("==", bridges_port(), json!("@pol_deny_port")),
            json!({"drop": null}),
        ],
    ));
    // Within one network (bridged frames pass here with br_netfilter):
    // allowed, internal networks included.
    v.push(rule(
        f,
        with(
            vec![m(
                "==",
                json!({"concat": [meta("iifname"), meta("oifname")]}),
                json!("@same"),
            )],
            mark_accept(),
        ),
    ));
    // Internal networks: no way in or out.
    v.push(rule(
        f,
        vec![
            m("==", meta("iifname"), json!("@internal")),
            json!({"drop": null}),
        ],
    ));
    v.push(rule(
        f,
        vec![
            m("==", meta("oifname"), json!("@internal")),
            json!({"drop": null}),
        ],
    ));
    // Published ports: reachable from outside and from every network.
    v.push(rule(
        f,
        with(
            vec![m("in", json!({"ct": {"key": "status"}}), json!("dnat"))],
            mark_accept(),
        ),
    ));
    v.push(rule(
        f,
        with(
            vec![m("==", bridges2(), json!("@pol_allow"))],
            mark_accept(),
        ),
    ));
    v.push(rule(
        f,
        with(
            vec![m("==", bridges_port(), json!("@pol_allow_port"))],
            mark_accept(),
        ),
    ));
    // Isolation: no traffic between different networks.
    v.push(rule(
        f,
        vec![
            m("==", meta("iifname"), json!("@bridges")),
            m("==", meta("oifname"), json!("@bridges")),
            json!({"drop": null}),
        ],
    ));
    v.push(rule(
        f,
        with(
            vec![m("==", meta("iifname"), json!("@bridges"))],
            mark_accept(),
        ),
    ));
    // Into a bridge from elsewhere, not published: refused.
    v.push(rule(f, vec![json!({"drop": null})]));

    // input: DNS queries of a network's containers to its gateway, marked
    // for a foreign INPUT chain with policy drop (see module doc).
    for (fam, set) in [("ip", "@dns4"), ("ip6", "@dns6")] {
        v.push(rule(
            "input",
            with(
                vec![
                    m("==", meta("l4proto"), json!({"set": ["tcp", "udp"]})),
                    m("==", payload("th", "dport"), json!(DNS_PORT)),
                    m(
                        "==",
                        json!({"concat": [meta("iifname"), payload(fam, "daddr")]}),
                        json!(set),
                    ),
                ],
                mark_accept(),
            ),
        ));
    }

    // prerouting: loopback destinations only from lo (moby#41872).
    v.push(rule(
        "prerouting",
        vec![
            m("!=", meta("iif"), json!("lo")),
            m(
                "==",
                payload("ip", "daddr"),
                json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
            ),
            json!({"return": null}),
        ],
    ));
    v.push(rule(
        "prerouting",
        vec![
            m("!=", meta("iif"), json!("lo")),
            m("==", payload("ip6", "daddr"), json!("::1")),
            json!({"return": null}),
        ],
    ));
    for c in ["prerouting", "output"] {
        v.push(rule(
            c,
            vec![
                m(
                    "==",
                    json!({"fib": {"result": "type", "flags": ["daddr"]}}),
                    json!("local"),
                ),
                json!({"jump": {"target": "publish"}}),
            ],
        ));
    }
    let l4 = || vec![meta("l4proto"), payload("th", "dport")];
    for (fam, map_ip, map_any) in [
        ("ip", "dnat_ip4", "dnat_any4"),
        ("ip6", "dnat_ip6", "dnat_any6"),
    ] {
        let mut k = vec![payload(fam, "daddr")];
        k.extend(l4());
        for (key, map) in [
            (json!({"concat": k}), map_ip),
            (json!({"concat": l4()}), map_any),
        ] {
            v.push(rule(
                "publish",
                vec![json!({"dnat": {
                    "family": fam,
                    "addr": {"map": {"key": key.clone(), "data": format!("@{map}")}},
                    "port": {"map": {"key": key, "data": format!("@{map}_port")}},
                }})],
            ));
        }
    }

    // postrouting
    let p = "postrouting";
    let masq = || json!({"masquerade": null});
    v.push(rule(
        p,
        vec![
            m("==", meta("oifname"), json!("@bridges")),
            m(
                "==",
                payload("ip", "saddr"),
                json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
            ),
            masq(),
        ],
    ));
    // Hairpin: a container reaching a published port of its own network
    // (itself included) through a host address. Matched on the source
    // subnet rather than the input interface, which br_netfilter's bridged
    // path leaves empty.
    for (fam, set) in [("ip", "@local4"), ("ip6", "@local6")] {
        v.push(rule(
            p,
            vec![
                m("in", json!({"ct": {"key": "status"}}), json!("dnat")),
                m(
                    "==",
                    json!({"concat": [payload(fam, "saddr"), meta("oifname")]}),
                    json!(set),
                ),
                masq(),
            ],
        ));
    }
    for (fam, set) in [("ip", "@masq4"), ("ip6", "@masq6")] {
        v.push(rule(
            p,
            vec![
                m("!=", meta("oifname"), json!("@bridges")),
                m("==", payload(fam, "saddr"), json!(set)),
                masq(),
            ],
        ));
    }
    v
}

fn element_cmd(verb: &str, set: &str, elems: Vec<Value>) -> Value {
    json!({verb: {"element": {"family": "inet", "table": TABLE, "name": set, "elem": elems}}})
}

/// The batch that (re)creates the whole table for `state`, atomically
/// replacing whatever is there (also a table damaged by hand).
pub fn full_batch(state: &DesiredState, cfg: &FirewallConfig) -> Result<Value> {
    validate(state)?;
    let table = json!({"table": {"family": "inet", "name": TABLE}});
    let mut cmds = vec![
        json!({"add": table.clone()}),
        json!({"delete": table.clone()}),
        json!({"add": table}),
    ];
    cmds.extend(structure(cfg));
    for (set, elems) in elements(state) {
        if !elems.is_empty() {
            cmds.push(element_cmd("add", set, elems));
        }
    }
    Ok(json!({"nftables": cmds}))
}

/// The element updates that turn `old` into `new` (the chains never
/// change). `None` when there is nothing to do.
pub fn delta_batch(old: &DesiredState, new: &DesiredState) -> Result<Option<Value>> {
    validate(new)?;
    let (eo, en) = (elements(old), elements(new));
    let mut dels = Vec::new();
    let mut adds = Vec::new();
    for (set, new_elems) in &en {
        let key = |v: &Value| v.to_string();
        let old_elems: BTreeMap<String, &Value> = eo[set].iter().map(|v| (key(v), v)).collect();
        let new_map: BTreeMap<String, &Value> = new_elems.iter().map(|v| (key(v), v)).collect();
        let gone: Vec<Value> = old_elems
            .iter()
            .filter(|(k, _)| !new_map.contains_key(*k))
            .map(|(_, v)| match v {
                // A map element is deleted by its key.
                Value::Array(kv) => kv[0].clone(),
                v => (*v).clone(),
            })
            .collect();
        let added: Vec<Value> = new_map
            .iter()
            .filter(|(k, _)| !old_elems.contains_key(*k))
            .map(|(_, v)| (*v).clone())
            .collect();
        if !gone.is_empty() {
            dels.push(element_cmd("delete", set, gone));
        }
        if !added.is_empty() {
            adds.push(element_cmd("add", set, added));
        }
    }
    if dels.is_empty() && adds.is_empty() {
        return Ok(None);
    }
    dels.extend(adds);
    Ok(Some(json!({"nftables": dels})))
}

/// The element updates that turn `old` into `new`, typed, for
/// [`NftRunner::apply_elements`]: the same diff as [`delta_batch`], all
/// deletions before all additions (a changed map element is both).
/// Empty when there is nothing to do.
pub fn delta_ops(old: &DesiredState, new: &DesiredState) -> Result<Vec<ElemOp>> {
    validate(new)?;
    Ok(delta_ops_valid(old, new))
}

/// [`delta_ops`] of a validated `new`. Ports, the part that grows, are
/// diffed as ports and only the changed ones become elements, so the cost
/// is a comparison of the two port lists, not the making of thousands of
/// elements; networks and policies are few and diffed as elements.
fn delta_ops_valid(old: &DesiredState, new: &DesiredState) -> Vec<ElemOp> {
    let without_ports = |s: &DesiredState| {
        typed_elements(&DesiredState {
            networks: s.networks.clone(),
            ports: Vec::new(),
            policies: s.policies.clone(),
        })
    };
    let (eo, en) = (without_ports(old), without_ports(new));
    // set -> (gone, added)
    let mut diff: BTreeMap<&'static str, (BTreeSet<Elem>, BTreeSet<Elem>)> = BTreeMap::new();
    for (set, new_elems) in &en {
        let old_set: BTreeSet<&Elem> = eo[set].iter().collect();
        let new_set: BTreeSet<&Elem> = new_elems.iter().collect();
        let d = diff.entry(set).or_default();
        d.0.extend(old_set.difference(&new_set).map(|e| (*e).clone()));
        d.1.extend(new_set.difference(&old_set).map(|e| (*e).clone()));
    }
    if old.ports != new.ports {
        // A merge of the two sorted lists (cheaper than sets of thousands).
        fn sorted(s: &DesiredState) -> Vec<&PortMapping> {
            let mut v: Vec<&PortMapping> = s.ports.iter().collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        let (o, n) = (sorted(old), sorted(new));
        let (mut i, mut j) = (0, 0);
        let mut changed = |p: &PortMapping, gone: bool| {
            for (set, el) in port_elements(p) {
                let d = diff.entry(set).or_default();
                if gone { &mut d.0 } else { &mut d.1 }.insert(el);
            }
        };
        loop {
            match (o.get(i), n.get(j)) {
                (Some(a), Some(b)) if a == b => (i, j) = (i + 1, j + 1),
                (Some(a), Some(b)) if a < b => {
                    changed(a, true);
                    i += 1;
                }
                (Some(a), None) => {
                    changed(a, true);
                    i += 1;
                }
                (_, Some(b)) => {
                    changed(b, false);
                    j += 1;
                }
                (None, None) => break,
            }
        }
    }
    let mut dels = Vec::new();
    let mut adds = Vec::new();
    for (set, (gone, added)) in diff {
        // A port whose container port changed keeps its address element:
        // gone and added again, i.e. unchanged.
        let (gone, added): (Vec<Elem>, Vec<Elem>) = (
            gone.difference(&added).cloned().collect(),
            added.difference(&gone).cloned().collect(),
        );
        if !gone.is_empty() {
            dels.push(ElemOp {
                verb: Verb::Delete,
                set: set.to_string(),
                elems: gone,
            });
        }
        if !added.is_empty() {
            adds.push(ElemOp {
                verb: Verb::Add,
                set: set.to_string(),
                elems: added,
            });
        }
    }
    dels.extend(adds);
    dels
}

/// Runs nftables commands: behind a trait so [`Firewall`] is unit-tested
/// without root.
pub trait NftRunner: Send + Sync + 'static {
    /// Apply a JSON batch (`nft -j -f -`), as one transaction.
    fn apply(&self, batch: &Value) -> Result<()>;
    /// A listing (`nft -j <args>`, e.g. `list table inet shibafu`), parsed.
    fn list(&self, args: &[&str]) -> Result<Value>;
    /// Apply element updates of shibafu's table as one transaction,
    /// without libnftables: its cache reads every
    /// element of the touched sets first, so a JSON delta costs more the
    /// more ports are published ([`crate::nfnl`]).
    /// [`FirewallError::ElementsUnsupported`] (the default): the caller
    /// uses [`Self::apply`] with [`delta_batch`] instead.
    fn apply_elements(&self, ops: &[ElemOp]) -> Result<()> {
        let _ = ops;
        Err(FirewallError::ElementsUnsupported)
    }
}

/// The real runner: libnftables in the daemon's process when it can be
/// loaded ([`crate::nftlib`]), else the `nft` binary; element deltas over
/// an nfnetlink socket of its own ([`crate::nfnl`]) when it could be
/// opened. Both are bound to the netns of the thread that creates the
/// runner.
pub struct Nft {
    backend: Backend,
    nfnl: Option<std::sync::Mutex<crate::nfnl::Nfnl>>,
}

enum Backend {
    Lib(crate::nftlib::NftLib),
    Binary(PathBuf),
}

impl Default for Nft {
    /// libnftables, or the `nft` binary when the library cannot be loaded
    /// (logged once per runner).
    fn default() -> Self {
        match Nft::library() {
            Ok(n) => n,
            Err(e) => {
                let n = Nft::binary_from_path();
                tracing::warn!("{e}; running {} per firewall change instead", n.describe());
                n
            }
        }
    }
}

impl Nft {
    /// libnftables in-process; an error when it cannot be loaded.
    pub fn library() -> Result<Self> {
        crate::nftlib::NftLib::open()
            .map(|l| Nft {
                backend: Backend::Lib(l),
                nfnl: open_nfnl(),
            })
            .map_err(|e| FirewallError::Spawn {
                bin: "libnftables.so.1".into(),
                err: e.to_string(),
            })
    }

    /// The `nft` binary at `path`.
    pub fn binary(path: impl Into<PathBuf>) -> Self {
        Nft {
            backend: Backend::Binary(path.into()),
            nfnl: open_nfnl(),
        }
    }

    /// Element deltas through libnftables (or the binary) too, as before
    /// [`crate::nfnl`]: for comparisons.
    pub fn json_only(mut self) -> Self {
        self.nfnl = None;
        self
    }

    /// Whether element deltas go over nfnetlink.
    pub fn uses_nfnl(&self) -> bool {
        self.nfnl.is_some()
    }

    /// `nft` as found in `PATH` now, once: an exec walking `PATH` tries
    /// each directory first.
    pub fn binary_from_path() -> Self {
        let found = std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nft"))
                .find(|f| f.is_file())
        });
        Nft::binary(found.unwrap_or_else(|| "nft".into()))
    }

    /// What runs the commands, for logs.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Lib(_) => "libnftables".into(),
            Backend::Binary(b) => b.display().to_string(),
        }
    }

    fn spawn_err(bin: &std::path::Path) -> impl Fn(std::io::Error) -> FirewallError + '_ {
        move |e| FirewallError::Spawn {
            bin: bin.display().to_string(),
            err: e.to_string(),
        }
    }
}

/// The runner's nfnetlink socket; without one (logged), deltas go
/// through libnftables as before.
fn open_nfnl() -> Option<std::sync::Mutex<crate::nfnl::Nfnl>> {
    match crate::nfnl::Nfnl::open() {
        Ok(s) => Some(std::sync::Mutex::new(s)),
        Err(e) => {
            tracing::warn!("{e}; firewall deltas go through libnftables");
            None
        }
    }
}

impl NftRunner for Nft {
    fn apply_elements(&self, ops: &[ElemOp]) -> Result<()> {
        let Some(s) = &self.nfnl else {
            return Err(FirewallError::ElementsUnsupported);
        };
        s.lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(crate::nfnl::NFPROTO_INET, TABLE, ops)
            .map_err(FirewallError::from)
    }

    fn apply(&self, batch: &Value) -> Result<()> {
        let bin = match &self.backend {
            Backend::Lib(l) => {
                return l
                    .run(&batch.to_string())
                    .map(|_| ())
                    .map_err(|e| FirewallError::Nft(e.to_string()));
            }
            Backend::Binary(b) => b,
        };
        let mut child = Command::new(bin)
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Nft::spawn_err(bin))?;
        let body = batch.to_string();
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(body.as_bytes())
            .map_err(Nft::spawn_err(bin))?;
        let out = child.wait_with_output().map_err(Nft::spawn_err(bin))?;
        if !out.status.success() {
            return Err(FirewallError::Nft(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }

    fn list(&self, args: &[&str]) -> Result<Value> {
        let out = match &self.backend {
            Backend::Lib(l) => l
                .run(&args.join(" "))
                .map_err(|e| FirewallError::Nft(e.to_string()))?
                .into_bytes(),
            Backend::Binary(bin) => {
                let out = Command::new(bin)
                    .arg("-j")
                    .args(args)
                    .output()
                    .map_err(Nft::spawn_err(bin))?;
                if !out.status.success() {
                    return Err(FirewallError::Nft(
                        String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    ));
                }
                out.stdout
            }
        };
        serde_json::from_slice(&out).map_err(|e| FirewallError::Parse(e.to_string()))
    }
}

/// One chain of a `list chains` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChainInfo {
    family: String,
    table: String,
    name: String,
    hook: Option<String>,
    policy: Option<String>,
}

fn chains_of(listing: &Value) -> Vec<ChainInfo> {
    listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let c = &o["chain"];
            let s = |k: &str| c[k].as_str().map(str::to_string);
            Some(ChainInfo {
                family: s("family")?,
                table: s("table")?,
                name: s("name")?,
                hook: s("hook"),
                policy: s("policy"),
            })
        })
        .collect()
}

/// What [`Firewall::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The table and every foreign accept rule that is needed are there.
    Ok,
    /// shibafu's table (or one of its chains) is gone: re-apply it all.
    TableMissing,
    /// A foreign chain with policy drop lacks shibafu's accept rule (a
    /// firewall reload re-created it).
    ForeignRuleMissing,
}

/// One foreign chain shibafu may put a rule into, as found.
struct Foreign {
    family: &'static str,
    chain: &'static str,
    comment: &'static str,
    /// Policy drop and the config asks for the rule.
    wanted: bool,
    /// Handles of our rules in it.
    ours: Vec<u64>,
}

/// The firewall of one daemon: remembers what it applied so a change is a
/// small delta, and falls back to a full re-apply when the table is gone
/// or a delta fails (flush, firewall reload, a hand edit).
pub struct Firewall<R: NftRunner = Nft> {
    runner: R,
    cfg: FirewallConfig,
    applied: std::sync::Mutex<Option<DesiredState>>,
}

impl<R: NftRunner> Firewall<R> {
    pub fn new(runner: R, cfg: FirewallConfig) -> Self {
        Firewall {
            runner,
            cfg,
            applied: std::sync::Mutex::new(None),
        }
    }

    pub fn runner(&self) -> &R {
        &self.runner
    }

    /// Make the kernel's ruleset reflect `state`.
    pub fn apply(&self, state: &DesiredState) -> Result<()> {
        validate(state)?;
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = applied.as_ref() {
            let ops = delta_ops_valid(old, state);
            if ops.is_empty() {
                *applied = Some(state.clone());
                return Ok(());
            }
            match self.runner.apply_elements(&ops) {
                Ok(()) => {
                    *applied = Some(state.clone());
                    return Ok(());
                }
                Err(FirewallError::ElementsUnsupported) => {}
                Err(e) => {
                    tracing::warn!("firewall delta over nfnetlink failed ({e}); retrying it through libnftables")
                }
            }
            match delta_batch(old, state)? {
                None => {
                    *applied = Some(state.clone());
                    return Ok(());
                }
                Some(batch) => match self.runner.apply(&batch) {
                    Ok(()) => {
                        *applied = Some(state.clone());
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::warn!("firewall delta failed ({e}); re-applying the whole table")
                    }
                },
            }
        }
        *applied = None;
        self.runner.apply(&full_batch(state, &self.cfg)?)?;
        *applied = Some(state.clone());
        drop(applied);
        self.sync_foreign(true)
    }

    /// Re-apply everything (daemon start, `network reload`, after a flush).
    pub fn reload(&self, state: &DesiredState) -> Result<()> {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.apply(state)
    }

    /// Every chain in the kernel (names, hooks and policies only: no
    /// rules, no set elements, so it is cheap however many ports are
    /// published).
    fn chains(&self) -> Result<Vec<ChainInfo>> {
        Ok(chains_of(&self.runner.list(&["list", "chains"])?))
    }

    fn table_whole(chains: &[ChainInfo]) -> bool {
        OUR_CHAINS.iter().all(|n| {
            chains
                .iter()
                .any(|c| c.family == "inet" && c.table == TABLE && c.name == *n)
        })
    }

    /// Whether shibafu's table is in the kernel with all its chains (a
    /// `nft flush ruleset` or a firewall reload removes it).
    pub fn is_present(&self) -> bool {
        self.chains().is_ok_and(|c| Self::table_whole(&c))
    }

    /// The foreign chains shibafu may touch that exist, with our rules in
    /// them. `all`: also chains whose rule is not wanted (to remove a
    /// stale one); otherwise only those with policy drop, so a periodic
    /// check lists no rules at all on hosts without such a policy.
    fn foreign(&self, chains: &[ChainInfo], all: bool) -> Vec<Foreign> {
        let mut out = Vec::new();
        for family in ["ip", "ip6"] {
            for (chain, hook, comment) in FOREIGN_CHAINS {
                let Some(c) = chains.iter().find(|c| {
                    c.family == family
                        && c.table == "filter"
                        && c.name == chain
                        && c.hook.as_deref() == Some(hook)
                }) else {
                    continue;
                };
                let enabled = if chain == "INPUT" {
                    self.cfg.accept_dns_in_foreign_input
                } else {
                    self.cfg.accept_marked_in_foreign_forward
                };
                let wanted = enabled && c.policy.as_deref() == Some("drop");
                if !wanted && !all {
                    continue;
                }
                // A chain that cannot be listed (gone meanwhile) has no
                // rule of ours to keep or remove.
                let ours = self
                    .runner
                    .list(&["list", "chain", family, "filter", chain])
                    .map(|v| rules_with_comment(&v, comment))
                    .unwrap_or_default();
                out.push(Foreign {
                    family,
                    chain,
                    comment,
                    wanted,
                    ours,
                });
            }
        }
        out
    }

    /// Check the table and the foreign rules: one cheap listing of the
    /// chains, plus one per foreign chain with policy drop.
    pub fn check(&self) -> Result<Health> {
        let chains = self.chains()?;
        if !Self::table_whole(&chains) {
            return Ok(Health::TableMissing);
        }
        if self
            .foreign(&chains, false)
            .iter()
            .any(|f| f.wanted && f.ours.is_empty())
        {
            return Ok(Health::ForeignRuleMissing);
        }
        Ok(Health::Ok)
    }

    /// Repair what [`Self::check`] finds: re-apply the table if it is gone
    /// (with the last applied state), put back missing foreign rules.
    /// Returns whether anything had to be done.
    pub fn ensure(&self) -> Result<bool> {
        match self.check()? {
            Health::Ok => Ok(false),
            Health::ForeignRuleMissing => self.sync_foreign(false).map(|_| true),
            Health::TableMissing => {
                let state = self
                    .applied
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                match state {
                    Some(s) => self.reload(&s).map(|_| true),
                    None => Ok(false),
                }
            }
        }
    }

    /// Insert the foreign accept rules that are wanted and missing; with
    /// `all`, also delete ours where they are no longer wanted (policy no
    /// longer drop) and duplicates. One transaction.
    pub fn sync_foreign(&self, all: bool) -> Result<()> {
        let chains = self.chains()?;
        let mut cmds = Vec::new();
        for f in self.foreign(&chains, all) {
            let keep = usize::from(f.wanted);
            if f.wanted && f.ours.is_empty() {
                cmds.push(foreign_accept_rule(
                    f.family,
                    f.chain,
                    f.comment,
                    self.cfg.mark,
                ));
            }
            for h in f.ours.iter().skip(keep) {
                cmds.push(delete_rule(f.family, f.chain, *h));
            }
        }
        if cmds.is_empty() {
            return Ok(());
        }
        self.runner.apply(&json!({"nftables": cmds}))
    }

    /// Remove shibafu's table and its foreign accept rules.
    pub fn remove_all(&self) -> Result<()> {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let table = json!({"table": {"family": "inet", "name": TABLE}});
        let mut cmds = vec![json!({"add": table.clone()}), json!({"delete": table})];
        let chains = self.chains()?;
        for f in self.foreign(&chains, true) {
            for h in f.ours {
                cmds.push(delete_rule(f.family, f.chain, h));
            }
        }
        self.runner.apply(&json!({"nftables": cmds}))
    }
}

/// Handles of the rules carrying `comment` in a chain listing.
fn rules_with_comment(listing: &Value, comment: &str) -> Vec<u64> {
    listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| &r["rule"])
        .filter(|r| r["comment"] == comment)
        .filter_map(|r| r["handle"].as_u64())
        .collect()
}

fn delete_rule(family: &str, chain: &str, handle: u64) -> Value {
    json!({"delete": {"rule": {"family": family, "table": "filter", "chain": chain, "handle": handle}}})
}

/// The rule inserted at the top of a foreign `FORWARD` chain.
pub fn foreign_rule(family: &str, mark: u32) -> Value {
    foreign_accept_rule(family, "FORWARD", FOREIGN_RULE_COMMENT, mark)
}

/// "mark → accept", inserted at the top of a foreign chain.
fn foreign_accept_rule(family: &str, chain: &str, comment: &str, mark: u32) -> Value {
    json!({"insert": {"rule": {
        "family": family, "table": "filter", "chain": chain,
        "expr": [
            m("==", json!({"&": [meta("mark"), mark]}), json!(mark)),
            json!({"accept": null}),
        ],
        "comment": comment,
    }}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn state() -> DesiredState {
        DesiredState {
            networks: vec![
                FwNetwork {
                    bridge: "sf-a".into(),
                    subnets: vec!["10.1.0.0/24".parse().unwrap(), "fd01::/64".parse().unwrap()],
                    internal: false,
                    dns: vec![ip("10.1.0.1"), ip("fd01::1")],
                },
                FwNetwork {
                    bridge: "sf-i".into(),
                    subnets: vec!["10.2.0.0/24".parse().unwrap()],
                    internal: true,
                    dns: vec![ip("10.2.0.1")],
                },
            ],
            ports: vec![
                PortMapping {
                    proto: Proto::Tcp,
                    host_ip: None,
                    host_port: 8080,
                    container_ip: ip("10.1.0.2"),
                    container_port: 80,
                },
                PortMapping {
                    proto: Proto::Udp,
                    host_ip: Some(ip("127.0.0.1")),
                    host_port: 5353,
                    container_ip: ip("10.1.0.2"),
                    container_port: 53,
                },
            ],
            policies: vec![],
        }
    }

    fn find_elems<'a>(batch: &'a Value, set: &str) -> Option<&'a Value> {
        batch["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["add"]["element"]["name"] == set)
            .map(|c| &c["add"]["element"]["elem"])
    }

    #[test]
    fn full_batch_replaces_table_and_carries_state_in_sets() {
        let b = full_batch(&state(), &FirewallConfig::default()).unwrap();
        let cmds = b["nftables"].as_array().unwrap();
        assert_eq!(
            cmds[0],
            json!({"add": {"table": {"family": "inet", "name": "shibafu"}}})
        );
        assert_eq!(
            cmds[1],
            json!({"delete": {"table": {"family": "inet", "name": "shibafu"}}})
        );
        // Only shibafu's table is ever named.
        for c in cmds {
            let s = c.to_string();
            assert!(
                s.contains("\"table\":\"shibafu\"") || s.contains("\"name\":\"shibafu\""),
                "{s}"
            );
        }
        assert_eq!(find_elems(&b, "bridges").unwrap(), &json!(["sf-a", "sf-i"]));
        assert_eq!(find_elems(&b, "internal").unwrap(), &json!(["sf-i"]));
        // Internal networks are not masqueraded.
        assert_eq!(
            find_elems(&b, "masq4").unwrap(),
            &json!([{"prefix": {"addr": "10.1.0.0", "len": 24}}])
        );
        assert_eq!(
            find_elems(&b, "masq6").unwrap(),
            &json!([{"prefix": {"addr": "fd01::", "len": 64}}])
        );
        assert_eq!(
            find_elems(&b, "dnat_any4").unwrap(),
            &json!([[{"concat": ["tcp", 8080]}, "10.1.0.2"]])
        );
        assert_eq!(
            find_elems(&b, "dnat_any4_port").unwrap(),
            &json!([[{"concat": ["tcp", 8080]}, 80]])
        );
        assert_eq!(
            find_elems(&b, "dnat_ip4").unwrap(),
            &json!([[{"concat": ["127.0.0.1", "udp", 5353]}, "10.1.0.2"]])
        );
        assert_eq!(
            find_elems(&b, "dnat_ip4_port").unwrap(),
            &json!([[{"concat": ["127.0.0.1", "udp", 5353]}, 53]])
        );
        assert!(find_elems(&b, "dnat_any6").is_none());
        // The embedded DNS: bridge . gateway, internal networks included.
        assert_eq!(
            find_elems(&b, "dns4").unwrap(),
            &json!([{"concat": ["sf-a", "10.1.0.1"]}, {"concat": ["sf-i", "10.2.0.1"]}])
        );
        assert_eq!(
            find_elems(&b, "dns6").unwrap(),
            &json!([{"concat": ["sf-a", "fd01::1"]}])
        );
        // ... marked in our input chain, for port 53 over TCP and UDP only.
        let input: Vec<&Value> = b["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["add"]["rule"]["chain"] == "input")
            .collect();
        assert_eq!(input.len(), 2);
        let r = input[0].to_string();
        assert!(
            r.contains(r#"{"set":["tcp","udp"]}"#)
                && r.contains(r#""right":53"#)
                && r.contains("@dns4"),
            "{r}"
        );
    }

    #[test]
    fn rule_count_does_not_grow_with_ports() {
        let cfg = FirewallConfig::default();
        let count = |s: &DesiredState| {
            full_batch(s, &cfg).unwrap()["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["add"]["rule"].is_object())
                .count()
        };
        let mut big = state();
        for i in 0..1000u16 {
            big.ports.push(PortMapping {
                proto: Proto::Tcp,
                host_ip: None,
                host_port: 20000 + i,
                container_ip: ip("10.1.0.3"),
                container_port: 80,
            });
        }
        assert_eq!(count(&state()), count(&big));
        assert_eq!(count(&DesiredState::default()), count(&big));
    }

    #[test]
    fn delta_touches_only_changed_elements() {
        let old = state();
        let mut new = old.clone();
        new.ports.remove(0);
        new.ports.push(PortMapping {
            proto: Proto::Sctp,
            host_ip: Some(ip("::1")),
            host_port: 9000,
            container_ip: ip("fd01::2"),
            container_port: 9,
        });
        let d = delta_batch(&old, &new).unwrap().unwrap();
        assert_eq!(
            d,
            json!({"nftables": [
                {"delete": {"element": {"family": "inet", "table": "shibafu", "name": "dnat_any4",
                    "elem": [{"concat": ["tcp", 8080]}]}}},
                {"delete": {"element": {"family": "inet", "table": "shibafu", "name": "dnat_any4_port",
                    "elem": [{"concat": ["tcp", 8080]}]}}},
                {"add": {"element": {"family": "inet", "table": "shibafu", "name": "dnat_ip6",
                    "elem": [[{"concat": ["::1", "sctp", 9000]}, "fd01::2"]]}}},
                {"add": {"element": {"family": "inet", "table": "shibafu", "name": "dnat_ip6_port",
                    "elem": [[{"concat": ["::1", "sctp", 9000]}, 9]]}}},
            ]})
        );
        assert!(delta_batch(&new, &new).unwrap().is_none());
    }

    #[test]
    fn validation_names_the_problem() {
        let mut s = state();
        s.ports.push(PortMapping {
            proto: Proto::Tcp,
            host_ip: Some(ip("127.0.0.1")),
            host_port: 8080,
            container_ip: ip("10.1.0.9"),
            container_port: 80,
        });
        let e = validate(&s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "port 8080/tcp is published twice: 0.0.0.0:8080->10.1.0.2:80/tcp and 127.0.0.1:8080->10.1.0.9:80/tcp"
        );
        // Same port on different protocols or families is fine.
        let mut s = state();
        s.ports.push(PortMapping {
            proto: Proto::Udp,
            host_ip: None,
            host_port: 8080,
            container_ip: ip("10.1.0.9"),
            container_port: 80,
        });
        s.ports.push(PortMapping {
            proto: Proto::Tcp,
            host_ip: None,
            host_port: 8080,
            container_ip: ip("fd01::9"),
            container_port: 80,
        });
        validate(&s).unwrap();
        let mut s = state();
        s.ports[0].host_ip = Some(ip("::1"));
        assert!(matches!(
            validate(&s),
            Err(FirewallError::FamilyMismatch(_))
        ));
        let mut s = state();
        s.networks[1].bridge = "sf-a".into();
        assert!(matches!(
            validate(&s),
            Err(FirewallError::DuplicateBridge(_))
        ));
        let mut s = state();
        s.networks[1].bridge = "way-too-long-bridge".into();
        assert!(matches!(validate(&s), Err(FirewallError::InvalidName(_))));
        let mut s = state();
        s.ports[0].host_port = 0;
        assert!(matches!(validate(&s), Err(FirewallError::ZeroPort)));
    }

    /// A foreign chain: its policy and its rules (handle, comment).
    type FakeChain = (String, Vec<(u64, String)>);

    /// A kernel as far as the firewall sees it: whether our table is
    /// there, foreign chains (family, name) -> (policy, rules), and the
    /// batches applied; `fail_next` makes the next apply fail.
    #[derive(Default)]
    struct Fake {
        batches: Mutex<Vec<Value>>,
        fail_next: Mutex<bool>,
        /// `Some`: the runner takes typed element updates (recorded here).
        elem_ops: Mutex<Option<Vec<Vec<ElemOp>>>>,
        fail_elements: Mutex<bool>,
        present: Mutex<bool>,
        foreign: Mutex<BTreeMap<(String, String), FakeChain>>,
        lists: Mutex<Vec<String>>,
    }
    impl Fake {
        fn with_chain(self, family: &str, chain: &str, policy: &str) -> Self {
            self.foreign.lock().unwrap().insert(
                (family.into(), chain.into()),
                (policy.into(), vec![(1, "someone else's".into())]),
            );
            self
        }
        fn ours(&self, family: &str, chain: &str) -> usize {
            self.foreign.lock().unwrap()[&(family.to_string(), chain.to_string())]
                .1
                .iter()
                .filter(|(_, c)| c.starts_with("shibafu"))
                .count()
        }
    }
    impl NftRunner for Fake {
        fn apply_elements(&self, ops: &[ElemOp]) -> Result<()> {
            let mut rec = self.elem_ops.lock().unwrap();
            let Some(rec) = rec.as_mut() else {
                return Err(FirewallError::ElementsUnsupported);
            };
            if std::mem::take(&mut *self.fail_elements.lock().unwrap()) {
                return Err(FirewallError::Nfnl(crate::nfnl::NfnlError::Kernel {
                    verb: "deleting",
                    set: ops[0].set.clone(),
                    err: std::io::Error::from_raw_os_error(libc::ENOENT),
                }));
            }
            rec.push(ops.to_vec());
            Ok(())
        }
        fn apply(&self, batch: &Value) -> Result<()> {
            if std::mem::take(&mut *self.fail_next.lock().unwrap()) {
                return Err(FirewallError::Nft("No such file or directory".into()));
            }
            self.batches.lock().unwrap().push(batch.clone());
            let mut foreign = self.foreign.lock().unwrap();
            for c in batch["nftables"].as_array().unwrap() {
                if c["add"]["table"]["name"] == TABLE {
                    *self.present.lock().unwrap() = true;
                }
                if c["delete"]["table"]["name"] == TABLE {
                    *self.present.lock().unwrap() = false;
                }
                let r = &c["insert"]["rule"];
                if r.is_object() {
                    let key = (
                        r["family"].as_str().unwrap().to_string(),
                        r["chain"].as_str().unwrap().to_string(),
                    );
                    let rules = &mut foreign
                        .get_mut(&key)
                        .expect("insert into a missing chain")
                        .1;
                    let h = rules.iter().map(|(h, _)| h + 1).max().unwrap_or(1);
                    rules.insert(0, (h, r["comment"].as_str().unwrap().to_string()));
                }
                let r = &c["delete"]["rule"];
                if r.is_object() {
                    let key = (
                        r["family"].as_str().unwrap().to_string(),
                        r["chain"].as_str().unwrap().to_string(),
                    );
                    let rules = &mut foreign.get_mut(&key).unwrap().1;
                    let h = r["handle"].as_u64().unwrap();
                    assert!(rules.iter().any(|(x, _)| *x == h), "no rule {h}");
                    rules.retain(|(x, _)| *x != h);
                }
            }
            Ok(())
        }
        fn list(&self, args: &[&str]) -> Result<Value> {
            self.lists.lock().unwrap().push(args.join(" "));
            let foreign = self.foreign.lock().unwrap();
            match args {
                ["list", "chains"] => {
                    let mut v = vec![json!({"metainfo": {"version": "1.0.6"}})];
                    if *self.present.lock().unwrap() {
                        for n in OUR_CHAINS {
                            v.push(json!({"chain": {"family": "inet", "table": TABLE, "name": n}}));
                        }
                    }
                    for ((fam, name), (policy, _)) in foreign.iter() {
                        v.push(
                            json!({"chain": {"family": fam, "table": "filter", "name": name,
                            "hook": name.to_lowercase(), "policy": policy}}),
                        );
                    }
                    Ok(json!({"nftables": v}))
                }
                ["list", "chain", fam, "filter", chain] => {
                    let Some((_, rules)) = foreign.get(&(fam.to_string(), chain.to_string()))
                    else {
                        return Err(FirewallError::Nft("No such file or directory".into()));
                    };
                    let v: Vec<Value> = rules
                        .iter()
                        .map(|(h, c)| json!({"rule": {"family": fam, "table": "filter", "chain": chain, "handle": h, "comment": c}}))
                        .collect();
                    Ok(json!({"nftables": v}))
                }
                _ => Err(FirewallError::Nft(format!("unexpected listing {args:?}"))),
            }
        }
    }

    #[test]
    fn firewall_uses_deltas_and_recovers_from_flush() {
        let fw = Firewall::new(Fake::default(), FirewallConfig::default());
        let s1 = state();
        fw.apply(&s1).unwrap(); // first: full
        let mut s2 = s1.clone();
        s2.ports.pop();
        fw.apply(&s2).unwrap(); // delta
        fw.apply(&s2).unwrap(); // nothing to do
        {
            let b = fw.runner().batches.lock().unwrap();
            assert_eq!(b.len(), 2);
            assert!(b[0]["nftables"][1]["delete"]["table"].is_object());
            assert!(b[1]["nftables"][0]["delete"]["element"].is_object());
        }
        // A failing delta (table flushed) falls back to a full batch.
        *fw.runner().fail_next.lock().unwrap() = true;
        fw.apply(&s1).unwrap();
        assert!(
            fw.runner().batches.lock().unwrap()[2]["nftables"][1]["delete"]["table"].is_object()
        );
        // ensure(): table gone -> re-applied with the last state.
        *fw.runner().present.lock().unwrap() = false;
        assert!(fw.ensure().unwrap());
        assert!(!fw.ensure().unwrap());
        assert_eq!(fw.runner().batches.lock().unwrap().len(), 4);
        // Invalid state: nothing applied.
        let mut bad = s1.clone();
        bad.ports.push(bad.ports[0].clone());
        assert!(fw.apply(&bad).is_err());
        assert_eq!(fw.runner().batches.lock().unwrap().len(), 4);
    }

    /// The typed delta is the JSON delta, element for element.
    fn ops_as_json(ops: &[ElemOp]) -> BTreeSet<(String, String, String)> {
        ops.iter()
            .flat_map(|o| {
                o.elems.iter().map(move |e| {
                    let (verb, v) = match o.verb {
                        Verb::Add => ("add", e.to_json()),
                        Verb::Delete => ("delete", e.key_json()),
                    };
                    (verb.to_string(), o.set.clone(), v.to_string())
                })
            })
            .collect()
    }
    fn batch_as_json(b: &Value) -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for c in b["nftables"].as_array().unwrap() {
            for verb in ["add", "delete"] {
                let el = &c[verb]["element"];
                if el.is_object() {
                    for e in el["elem"].as_array().unwrap() {
                        out.insert((
                            verb.to_string(),
                            el["name"].as_str().unwrap().to_string(),
                            e.to_string(),
                        ));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn typed_delta_equals_json_delta() {
        let a = state();
        let mut b = a.clone();
        b.ports.remove(0);
        b.ports.push(PortMapping {
            proto: Proto::Sctp,
            host_ip: Some(ip("::1")),
            host_port: 9000,
            container_ip: ip("fd01::2"),
            container_port: 9,
        });
        // A changed map value under the same key: a delete and an add.
        b.ports[0].container_port = 54;
        b.policies.push(FwPolicyRule {
            from: "sf-i".into(),
            to: "sf-a".into(),
            port: Some((Proto::Udp, 53)),
            allow: true,
        });
        let mut c = b.clone();
        c.networks.push(FwNetwork {
            bridge: "sf-c".into(),
            subnets: vec!["10.3.0.5/24".parse().unwrap()],
            internal: false,
            dns: vec![ip("10.3.0.1")],
        });
        c.networks.remove(0);
        let empty = DesiredState::default();
        for (x, y) in [
            (&a, &b),
            (&b, &a),
            (&b, &c),
            (&c, &a),
            (&empty, &c),
            (&c, &empty),
        ] {
            let ops = delta_ops(x, y).unwrap();
            let json = delta_batch(x, y).unwrap().unwrap();
            assert_eq!(ops_as_json(&ops), batch_as_json(&json));
            // Deletions first.
            let first_add = ops.iter().position(|o| o.verb == Verb::Add);
            assert!(ops
                .iter()
                .skip(first_add.unwrap_or(ops.len()))
                .all(|o| o.verb == Verb::Add));
        }
        assert!(delta_ops(&b, &b).unwrap().is_empty());
        // A network change touches the interval sets masq/local.
        assert!(delta_ops(&b, &c)
            .unwrap()
            .iter()
            .any(|o| INTERVAL_SETS.contains(&o.set.as_str())));
        let mut bad = b.clone();
        bad.ports.push(bad.ports[0].clone());
        assert!(delta_ops(&a, &bad).is_err());
    }

    #[test]
    fn the_first_conflict_in_list_order_is_reported() {
        let p = |proto, host: Option<&str>, port, c: &str| PortMapping {
            proto,
            host_ip: host.map(ip),
            host_port: port,
            container_ip: ip(c),
            container_port: 80,
        };
        let mut s = state();
        s.ports = vec![
            p(Proto::Tcp, None, 8080, "10.1.0.2"),
            p(Proto::Udp, Some("127.0.0.1"), 9090, "10.1.0.3"),
            p(Proto::Udp, Some("127.0.0.2"), 9090, "10.1.0.4"),
            p(Proto::Udp, None, 9090, "10.1.0.5"),
            p(Proto::Tcp, Some("127.0.0.1"), 8080, "10.1.0.6"),
        ];
        assert_eq!(
            validate(&s).unwrap_err().to_string(),
            "port 9090/udp is published twice: 127.0.0.1:9090->10.1.0.3:80/udp and 0.0.0.0:9090->10.1.0.5:80/udp"
        );
        s.ports.remove(3);
        assert_eq!(
            validate(&s).unwrap_err().to_string(),
            "port 8080/tcp is published twice: 0.0.0.0:8080->10.1.0.2:80/tcp and 127.0.0.1:8080->10.1.0.6:80/tcp"
        );
        s.ports.pop();
        validate(&s).unwrap();
    }

    #[test]
    fn set_lists_match_the_declarations() {
        let mut all = BTreeSet::new();
        let mut interval = BTreeSet::new();
        let decls = structure(&FirewallConfig::default());
        for c in &decls {
            for kind in ["set", "map"] {
                let s = &c["add"][kind];
                if s.is_object() {
                    let name = s["name"].as_str().unwrap();
                    all.insert(name);
                    if s["flags"].to_string().contains("interval") {
                        interval.insert(name);
                    }
                }
            }
        }
        assert_eq!(all, SETS.into_iter().collect());
        assert_eq!(interval, INTERVAL_SETS.into_iter().collect());
    }

    #[test]
    fn deltas_go_over_nfnetlink_when_the_runner_can() {
        let fake = Fake::default();
        *fake.elem_ops.lock().unwrap() = Some(Vec::new());
        let fw = Firewall::new(fake, FirewallConfig::default());
        let s1 = state();
        fw.apply(&s1).unwrap(); // full, JSON
        let mut s2 = s1.clone();
        s2.ports.pop();
        fw.apply(&s2).unwrap();
        let k = fw.runner();
        assert_eq!(k.batches.lock().unwrap().len(), 1, "no JSON for the delta");
        assert_eq!(
            k.elem_ops.lock().unwrap().as_ref().unwrap()[0],
            delta_ops(&s1, &s2).unwrap()
        );
        // A failure (here: the element was gone) is retried as a JSON
        // delta, which here succeeds.
        *k.fail_elements.lock().unwrap() = true;
        fw.apply(&s1).unwrap();
        {
            let b = k.batches.lock().unwrap();
            assert_eq!(b.len(), 2);
            assert_eq!(b[1], delta_batch(&s2, &s1).unwrap().unwrap());
        }
        // ... and when that fails too, the whole table is re-applied.
        *k.fail_elements.lock().unwrap() = true;
        *k.fail_next.lock().unwrap() = true;
        fw.apply(&s2).unwrap();
        {
            let b = k.batches.lock().unwrap();
            assert_eq!(b.len(), 3);
            assert_eq!(b[2], full_batch(&s2, &FirewallConfig::default()).unwrap());
        }
        // Interval sets (a new network's subnets) too.
        let mut s3 = s2.clone();
        s3.networks.push(FwNetwork {
            bridge: "sf-n".into(),
            subnets: vec!["10.9.0.0/24".parse().unwrap()],
            internal: false,
            dns: vec![],
        });
        fw.apply(&s3).unwrap();
        let ops = k.elem_ops.lock().unwrap().as_ref().unwrap().clone();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1], delta_ops(&s2, &s3).unwrap());
        assert!(ops[1].iter().any(|o| o.set == "masq4"));
        assert_eq!(k.batches.lock().unwrap().len(), 3, "no JSON for it");
    }

    #[test]
    fn foreign_accept_rules_only_where_policy_is_drop_and_self_healing() {
        let fake = Fake::default()
            .with_chain("ip", "FORWARD", "drop")
            .with_chain("ip", "INPUT", "drop")
            .with_chain("ip6", "INPUT", "accept");
        let fw = Firewall::new(fake, FirewallConfig::default());
        fw.apply(&state()).unwrap();
        let k = fw.runner();
        assert_eq!(k.ours("ip", "FORWARD"), 1);
        assert_eq!(k.ours("ip", "INPUT"), 1);
        assert_eq!(k.ours("ip6", "INPUT"), 0, "policy accept: not needed");
        // The INPUT rule accepts what our input chain marked, nothing else.
        let ins = k.batches.lock().unwrap().last().unwrap().clone();
        let input = ins["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["insert"]["rule"]["chain"] == "INPUT")
            .unwrap()
            .clone();
        assert_eq!(input["insert"]["rule"]["comment"], FOREIGN_INPUT_COMMENT);
        assert_eq!(
            input["insert"]["rule"]["expr"][0]["match"]["right"],
            json!(FirewallConfig::default().mark)
        );
        assert_eq!(fw.check().unwrap(), Health::Ok);
        // Idempotent: a reload inserts nothing twice.
        fw.reload(&state()).unwrap();
        assert_eq!(k.ours("ip", "INPUT"), 1);
        assert_eq!(k.ours("ip", "FORWARD"), 1);

        // A firewall reload re-creates INPUT without our rule: found by
        // the periodic check and put back, the table left alone.
        k.foreign
            .lock()
            .unwrap()
            .get_mut(&("ip".to_string(), "INPUT".to_string()))
            .unwrap()
            .1
            .retain(|(_, c)| !c.starts_with("shibafu"));
        assert_eq!(fw.check().unwrap(), Health::ForeignRuleMissing);
        let before = k.batches.lock().unwrap().len();
        assert!(fw.ensure().unwrap());
        assert_eq!(k.ours("ip", "INPUT"), 1);
        let b = k.batches.lock().unwrap();
        assert_eq!(b.len(), before + 1);
        let last = b.last().unwrap().to_string();
        assert!(
            !last.contains(r#""table":{"#) && !last.contains("element"),
            "table untouched: {last}"
        );
        drop(b);
        assert!(!fw.ensure().unwrap());

        // Policy back to accept: the rule goes at the next reload.
        k.foreign
            .lock()
            .unwrap()
            .get_mut(&("ip".to_string(), "INPUT".to_string()))
            .unwrap()
            .0 = "accept".into();
        fw.reload(&state()).unwrap();
        assert_eq!(k.ours("ip", "INPUT"), 0);
        assert_eq!(k.ours("ip", "FORWARD"), 1);

        // Teardown removes ours and leaves the other rules alone.
        fw.remove_all().unwrap();
        assert_eq!(k.ours("ip", "FORWARD"), 0);
        for rules in k.foreign.lock().unwrap().values() {
            assert_eq!(rules.1.len(), 1, "someone else's rule kept");
        }
        assert!(!fw.is_present());
    }

    #[test]
    fn foreign_rules_follow_the_config() {
        let fake = Fake::default()
            .with_chain("ip", "FORWARD", "drop")
            .with_chain("ip", "INPUT", "drop");
        let cfg = FirewallConfig {
            accept_dns_in_foreign_input: false,
            ..Default::default()
        };
        let fw = Firewall::new(fake, cfg);
        fw.apply(&state()).unwrap();
        assert_eq!(fw.runner().ours("ip", "FORWARD"), 1);
        assert_eq!(fw.runner().ours("ip", "INPUT"), 0);
        assert_eq!(fw.check().unwrap(), Health::Ok);
    }

    #[test]
    fn periodic_check_lists_no_rules_without_drop_policies() {
        let fw = Firewall::new(
            Fake::default().with_chain("ip", "INPUT", "accept"),
            FirewallConfig::default(),
        );
        fw.apply(&state()).unwrap();
        fw.runner().lists.lock().unwrap().clear();
        assert_eq!(fw.check().unwrap(), Health::Ok);
        assert_eq!(*fw.runner().lists.lock().unwrap(), vec!["list chains"]);
        // A table missing one of its chains counts as missing.
        *fw.runner().present.lock().unwrap() = false;
        assert_eq!(fw.check().unwrap(), Health::TableMissing);
    }
}
