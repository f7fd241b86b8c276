//! The nftables firewall: NAT, forwarding, isolation and published ports,
//! in shibafu's own `inet shibafu` table.
//!
//! Why it looks like this:
//! - The chains are a constant: all state (bridges, subnets, published
//!   ports) lives in sets and maps looked up by hash, so the per-packet
//!   cost and the number of rules do not grow with containers or ports,
//!   and a change is a handful of element updates ([`delta_batch`]), not a
//!   rule rewrite (Docker's nftables mode takes tens of seconds per
//!   container with hundreds of ports, moby#53466).
//! - Everything is generated as a pure function of [`DesiredState`], so
//!   the whole ruleset is unit-tested as data, and re-applying it after a
//!   crash or an `nft flush ruleset` is the same call ([`full_batch`]).
//! - Each change is ONE `nft -j -f -` batch: the kernel applies it
//!   atomically or not at all. The full batch adds, deletes and re-creates
//!   the table in one transaction, so there is never a moment without rules.
//! - One `inet` table instead of `ip`/`ip6` pairs: a single object to own,
//!   replace and check, NAT included (inet NAT needs kernel 5.2+).
//! - Forwarding is accepted in a chain of higher priority than the usual
//!   `filter` and the accepted packets are marked ([`FirewallConfig::mark`]):
//!   nftables gives every base chain its say, so an `ip filter FORWARD`
//!   chain with policy drop (iptables-nft, Docker) would still drop them.
//!   When [`FirewallConfig::accept_marked_in_foreign_forward`] is set, one
//!   rule "mark → accept" tagged `shibafu` is inserted into such a chain
//!   (the only rule shibafu ever puts outside its table, as Docker does).
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

pub const TABLE: &str = "shibafu";
/// Comment on the one rule shibafu may put into a foreign FORWARD chain.
pub const FOREIGN_RULE_COMMENT: &str = "shibafu: accept forwarding of shibafu networks";

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
}

pub type Result<T, E = FirewallError> = std::result::Result<T, E>;

/// One network as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwNetwork {
    pub bridge: String,
    pub subnets: Vec<IpNet>,
    /// `--internal`: no traffic in or out of the bridge, no NAT.
    pub internal: bool,
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
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            mark: 0x5bf0_0000,
            accept_marked_in_foreign_forward: true,
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
    // (family, proto, port) -> mappings, to find overlaps of a wildcard
    // with a specific address or of two equal keys.
    let mut by_port: BTreeMap<(bool, Proto, u16), Vec<&PortMapping>> = BTreeMap::new();
    for p in &state.ports {
        if p.host_port == 0 || p.container_port == 0 {
            return Err(FirewallError::ZeroPort);
        }
        if p.host_ip
            .is_some_and(|h| h.is_ipv6() != p.container_ip.is_ipv6())
        {
            return Err(FirewallError::FamilyMismatch(p.to_string()));
        }
        let list = by_port
            .entry((p.container_ip.is_ipv6(), p.proto, p.host_port))
            .or_default();
        if let Some(o) = list
            .iter()
            .find(|o| o.host_ip.is_none() || p.host_ip.is_none() || o.host_ip == p.host_ip)
        {
            return Err(FirewallError::PortConflict {
                port: format!("{}/{}", p.host_port, p.proto.as_str()),
                a: o.to_string(),
                b: p.to_string(),
            });
        }
        list.push(p);
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
fn prefix(n: &IpNet) -> Value {
    json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix_len()}})
}

/// The named sets and maps with their elements: the whole variable part.
fn elements(state: &DesiredState) -> BTreeMap<&'static str, Vec<Value>> {
    let mut e: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
    for k in [
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
    ] {
        e.insert(k, Vec::new());
    }
    for r in &state.policies {
        let (k, v) = match (r.allow, r.port) {
            (false, None) => ("pol_deny", json!({"concat": [r.from, r.to]})),
            (true, None) => ("pol_allow", json!({"concat": [r.from, r.to]})),
            (allow, Some((proto, port))) => (
                if allow {
                    "pol_allow_port"
                } else {
                    "pol_deny_port"
                },
                json!({"concat": [r.from, r.to, proto.as_str(), port]}),
            ),
        };
        e.get_mut(k).unwrap().push(v);
    }
    for n in &state.networks {
        e.get_mut("bridges").unwrap().push(json!(n.bridge));
        e.get_mut("same")
            .unwrap()
            .push(json!({"concat": [n.bridge, n.bridge]}));
        for s in &n.subnets {
            let k = if s.addr().is_ipv4() {
                "local4"
            } else {
                "local6"
            };
            e.get_mut(k)
                .unwrap()
                .push(json!({"concat": [prefix(s), n.bridge]}));
        }
        if n.internal {
            e.get_mut("internal").unwrap().push(json!(n.bridge));
        } else {
            for s in &n.subnets {
                let k = if s.addr().is_ipv4() { "masq4" } else { "masq6" };
                e.get_mut(k).unwrap().push(prefix(s));
            }
        }
    }
    for p in &state.ports {
        let v6 = p.container_ip.is_ipv6();
        let ((k, kp), key) = match p.host_ip {
            Some(h) => (
                if v6 {
                    ("dnat_ip6", "dnat_ip6_port")
                } else {
                    ("dnat_ip4", "dnat_ip4_port")
                },
                json!({"concat": [h.to_string(), p.proto.as_str(), p.host_port]}),
            ),
            None => (
                if v6 {
                    ("dnat_any6", "dnat_any6_port")
                } else {
                    ("dnat_any4", "dnat_any4_port")
                },
                json!({"concat": [p.proto.as_str(), p.host_port]}),
            ),
        };
        e.get_mut(k)
            .unwrap()
            .push(json!([key.clone(), p.container_ip.to_string()]));
        e.get_mut(kp).unwrap().push(json!([key, p.container_port]));
    }
    e
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
        // filter - 10: before the host's usual filter chains.
        chain("forward", "filter", "forward", -10),
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

/// Runs `nft`: behind a trait so [`Firewall`] is unit-tested without root.
pub trait NftRunner: Send + Sync + 'static {
    /// `nft -j -f -` with `batch` on stdin.
    fn apply(&self, batch: &Value) -> Result<()>;
    /// `nft -j <args>` (e.g. `list table inet shibafu`), parsed.
    fn list(&self, args: &[&str]) -> Result<Value>;
}

/// The real runner.
pub struct Nft {
    pub binary: PathBuf,
}

impl Default for Nft {
    /// `nft` as found in `PATH` now, once: every firewall change and the
    /// watchdog's check spawn it, and an exec walking `PATH` tries each
    /// directory first.
    fn default() -> Self {
        let found = std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nft"))
                .find(|f| f.is_file())
        });
        Nft {
            binary: found.unwrap_or_else(|| "nft".into()),
        }
    }
}

impl NftRunner for Nft {
    fn apply(&self, batch: &Value) -> Result<()> {
        let spawn_err = |e: std::io::Error| FirewallError::Spawn {
            bin: self.binary.display().to_string(),
            err: e.to_string(),
        };
        let mut child = Command::new(&self.binary)
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let body = batch.to_string();
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(body.as_bytes())
            .map_err(spawn_err)?;
        let out = child.wait_with_output().map_err(spawn_err)?;
        if !out.status.success() {
            return Err(FirewallError::Nft(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }

    fn list(&self, args: &[&str]) -> Result<Value> {
        let out = Command::new(&self.binary)
            .arg("-j")
            .args(args)
            .output()
            .map_err(|e| FirewallError::Spawn {
                bin: self.binary.display().to_string(),
                err: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(FirewallError::Nft(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| FirewallError::Parse(e.to_string()))
    }
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
            match delta_batch(old, state)? {
                None => {
                    *applied = Some(state.clone());
                    return Ok(());
                }
                Some(batch) => {
                    if self.runner.apply(&batch).is_ok() {
                        *applied = Some(state.clone());
                        return Ok(());
                    }
                    tracing::warn!("firewall delta failed; re-applying the whole table");
                }
            }
        }
        *applied = None;
        self.runner.apply(&full_batch(state, &self.cfg)?)?;
        *applied = Some(state.clone());
        drop(applied);
        if self.cfg.accept_marked_in_foreign_forward {
            self.fix_foreign_forward()?;
        }
        Ok(())
    }

    /// Re-apply everything (daemon start, `network reload`, after a flush).
    pub fn reload(&self, state: &DesiredState) -> Result<()> {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.apply(state)
    }

    /// Whether shibafu's table is still in the kernel (a `nft flush
    /// ruleset` or a firewall reload removes it).
    pub fn is_present(&self) -> bool {
        self.runner.list(&["list", "table", "inet", TABLE]).is_ok()
    }

    /// Re-apply if the table vanished; returns whether it had to.
    pub fn ensure(&self) -> Result<bool> {
        if self.is_present() {
            return Ok(false);
        }
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

    /// Remove shibafu's table and its foreign FORWARD rules.
    pub fn remove_all(&self) -> Result<()> {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let table = json!({"table": {"family": "inet", "name": TABLE}});
        let mut cmds = vec![json!({"add": table.clone()}), json!({"delete": table})];
        for (family, handle) in self.foreign_rules()? {
            cmds.push(json!({"delete": {"rule": {"family": family, "table": "filter", "chain": "FORWARD", "handle": handle}}}));
        }
        self.runner.apply(&json!({"nftables": cmds}))
    }

    /// (family, handle) of shibafu's rules in foreign FORWARD chains.
    fn foreign_rules(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for fam in ["ip", "ip6"] {
            let Ok(v) = self
                .runner
                .list(&["list", "chain", fam, "filter", "FORWARD"])
            else {
                continue;
            };
            for r in v["nftables"].as_array().into_iter().flatten() {
                let r = &r["rule"];
                if r["comment"] == FOREIGN_RULE_COMMENT {
                    if let Some(h) = r["handle"].as_u64() {
                        out.push((fam.to_string(), h));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Insert the "mark → accept" rule into `ip[6] filter FORWARD` chains
    /// with policy drop that do not have it yet.
    fn fix_foreign_forward(&self) -> Result<()> {
        let have: BTreeSet<String> = self.foreign_rules()?.into_iter().map(|(f, _)| f).collect();
        let mut cmds = Vec::new();
        for fam in ["ip", "ip6"] {
            if have.contains(fam) {
                continue;
            }
            let Ok(v) = self
                .runner
                .list(&["list", "chain", fam, "filter", "FORWARD"])
            else {
                continue;
            };
            let drop_policy = v["nftables"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["chain"]["policy"] == "drop" && c["chain"]["hook"] == "forward");
            if drop_policy {
                cmds.push(foreign_rule(fam, self.cfg.mark));
            }
        }
        if cmds.is_empty() {
            return Ok(());
        }
        self.runner.apply(&json!({"nftables": cmds}))
    }
}

/// The rule inserted at the top of a foreign `FORWARD` chain.
pub fn foreign_rule(family: &str, mark: u32) -> Value {
    json!({"insert": {"rule": {
        "family": family, "table": "filter", "chain": "FORWARD",
        "expr": [
            m("==", json!({"&": [meta("mark"), mark]}), json!(mark)),
            json!({"accept": null}),
        ],
        "comment": FOREIGN_RULE_COMMENT,
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
                },
                FwNetwork {
                    bridge: "sf-i".into(),
                    subnets: vec!["10.2.0.0/24".parse().unwrap()],
                    internal: true,
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

    /// Records batches; `fail_next` makes the next apply fail.
    #[derive(Default)]
    struct Fake {
        batches: Mutex<Vec<Value>>,
        fail_next: Mutex<bool>,
        present: Mutex<bool>,
    }
    impl NftRunner for Fake {
        fn apply(&self, batch: &Value) -> Result<()> {
            if std::mem::take(&mut *self.fail_next.lock().unwrap()) {
                return Err(FirewallError::Nft("No such file or directory".into()));
            }
            self.batches.lock().unwrap().push(batch.clone());
            *self.present.lock().unwrap() = true;
            Ok(())
        }
        fn list(&self, args: &[&str]) -> Result<Value> {
            if args[1] == "table" && *self.present.lock().unwrap() {
                return Ok(json!({"nftables": []}));
            }
            Err(FirewallError::Nft("No such file or directory".into()))
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
}
