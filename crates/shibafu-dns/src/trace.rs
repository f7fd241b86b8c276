//! `dns-trace`: one query through the real handler, with what it touched.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use crate::server::TraceCollect;
use crate::wire;

/// Who asks: a container's address (it sees its own networks), or a
/// network (a requester unknown to the table, asking at its gateway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Requester {
    Address(IpAddr),
    Network(String),
}

/// Where the answer came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceSource {
    /// The local table (names, PTR, zone NXDOMAIN).
    Local,
    /// The cache of forwarded answers.
    Cache,
    /// This upstream answered.
    Upstream(SocketAddr),
    /// Not local, and no upstream is configured.
    NoUpstream,
    /// Not local, and forwarding is not allowed (internal network).
    Refused,
    /// Upstreams were tried and failed.
    Failed(String),
}

/// A record of the table that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceRecord {
    pub network: String,
    pub container: Option<String>,
    /// Why it matched: "container name", "alias", "service", "configured CNAME"...
    pub matched_as: String,
}

/// One upstream tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceUpstream {
    pub server: SocketAddr,
    pub tcp: bool,
    pub outcome: String,
}

/// One record of the final answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceAnswer {
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    pub data: String,
}

/// The report of [`crate::DnsServer::dns_trace`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceReport {
    pub query: String,
    pub qtype: String,
    pub from: Requester,
    /// Networks the requester sees (IDs).
    pub view: Vec<String>,
    /// The network whose listener (forwarding rules) applies.
    pub listener: Option<String>,
    pub matched: Vec<TraceRecord>,
    pub source: TraceSource,
    pub upstreams: Vec<TraceUpstream>,
    pub rcode: String,
    pub answers: Vec<TraceAnswer>,
    pub elapsed_us: u64,
}

pub(crate) fn report(
    name: &str,
    qtype: u16,
    from: Requester,
    tc: TraceCollect,
    reply: &[u8],
    elapsed: Duration,
) -> TraceReport {
    let rcode = reply
        .get(3)
        .map(|b| b & 0xF)
        .unwrap_or(wire::RCODE_SERVFAIL);
    let source = tc.source.unwrap_or(if rcode == wire::RCODE_REFUSED {
        TraceSource::Refused
    } else {
        TraceSource::Failed(wire::rcode_name(rcode).to_string())
    });
    TraceReport {
        query: name.to_string(),
        qtype: wire::type_name(qtype),
        from,
        view: tc.view.iter().map(|s| s.to_string()).collect(),
        listener: tc.listener.map(|s| s.to_string()),
        matched: tc
            .matches
            .into_iter()
            .map(|m| TraceRecord {
                network: m.network.to_string(),
                container: m.container.map(|c| c.to_string()),
                matched_as: m.why.to_string(),
            })
            .collect(),
        source,
        upstreams: tc
            .attempts
            .into_iter()
            .map(|a| TraceUpstream {
                server: a.server,
                tcp: a.tcp,
                outcome: a.outcome,
            })
            .collect(),
        rcode: wire::rcode_name(rcode).to_string(),
        answers: wire::answers_text(reply)
            .unwrap_or_default()
            .into_iter()
            .map(|r| TraceAnswer {
                name: r.name,
                rtype: r.rtype,
                ttl: r.ttl,
                data: r.data,
            })
            .collect(),
        elapsed_us: elapsed.as_micros() as u64,
    }
}
