//! shibafu's embedded DNS server: one listener set per user-defined network
//! (its gateway addresses, UDP and TCP), answering container names, aliases,
//! services (weighted round-robin over healthy instances), PTR, SRV and
//! configured CNAMEs from a record [`Table`] that is swapped atomically, and
//! forwarding everything else to upstream resolvers through a TTL-aware cache.
//!
//! The daemon owns one [`DnsServer`]: it calls [`DnsServer::serve_network`] /
//! [`DnsServer::stop_network`] as networks come and go, and
//! [`DnsServer::set_table`] with every endpoint whenever a container starts,
//! stops, moves, is renamed or changes health. Answers depend on who asks: a
//! requester (by source address) sees only the networks it is attached to.
//!
//! The local-answer path is a hand-written wire parser/encoder over a
//! precomputed map (no per-query allocation besides the reply buffer);
//! `hickory-proto` is used in the tests as an independent decoder.

mod cache;
mod forward;
mod server;
mod table;
mod trace;
mod udp;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use ipnet::IpNet;
pub use server::DnsServer;
pub use table::{Cname, Endpoint, Proto, Table};
pub use trace::{Requester, TraceAnswer, TraceRecord, TraceReport, TraceSource, TraceUpstream};

/// Default zone suffix: network `NAME` answers `X.NAME.local`.
pub const DEFAULT_ZONE_SUFFIX: &str = "local";

/// Server-wide settings, fixed at [`DnsServer::new`].
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Port the listeners bind on every listen address (53; tests use high ports).
    pub port: u16,
    /// TTL of local records: short because containers move.
    pub local_ttl: u32,
    /// Zone suffix used when [`NetworkDns::zone`] is `None` (`"local"`).
    pub zone_suffix: String,
    /// Host resolvers (from the host's resolv.conf, loopback ones included:
    /// the daemon runs in the host namespace and reaches them directly).
    pub host_upstreams: Vec<SocketAddr>,
    /// Conditional forwarding: names under `domain` go only to `servers`.
    pub conditional: Vec<ConditionalForwarder>,
    /// Wait for one upstream before trying the next one.
    pub upstream_timeout: Duration,
    /// Overall budget of a forwarded query; below the client's 5 s.
    pub query_budget: Duration,
    /// How long an upstream that timed out is skipped.
    pub upstream_down_for: Duration,
    /// Cache capacity in entries (0 disables the cache).
    pub cache_entries: usize,
    /// Longest time a positive answer is cached, whatever its TTL.
    pub cache_max_ttl: u32,
    /// Longest time a negative answer (NXDOMAIN / no data) is cached.
    pub negative_max_ttl: u32,
    /// Forwarded queries in flight at once; more are answered SERVFAIL so a
    /// flood cannot exhaust memory or sockets.
    pub max_inflight: usize,
    /// TCP connections at once per listen address.
    pub max_tcp_connections: usize,
    /// UDP sockets (SO_REUSEPORT) and receive tasks per listen address.
    pub udp_sockets_per_address: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            port: 53,
            local_ttl: 5,
            zone_suffix: DEFAULT_ZONE_SUFFIX.to_string(),
            host_upstreams: Vec::new(),
            conditional: Vec::new(),
            upstream_timeout: Duration::from_millis(1200),
            query_budget: Duration::from_millis(4000),
            upstream_down_for: Duration::from_secs(30),
            cache_entries: 10_000,
            cache_max_ttl: 3600,
            negative_max_ttl: 300,
            max_inflight: 1024,
            max_tcp_connections: 128,
            udp_sockets_per_address: 1,
        }
    }
}

/// Names under `domain` (a suffix, e.g. `corp.example`) are forwarded only
/// to `servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionalForwarder {
    pub domain: String,
    pub servers: Vec<SocketAddr>,
}

/// One network's DNS service, as given to [`DnsServer::serve_network`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDns {
    /// The network's ID (the key of [`Endpoint::network_id`]).
    pub id: String,
    /// The network's name (for the default zone and traces).
    pub name: String,
    /// The zone; `None` means `<name>.<DnsConfig::zone_suffix>`.
    pub zone: Option<String>,
    /// Gateway addresses: the listeners bind here (UDP and TCP).
    pub listen: Vec<IpAddr>,
    /// The network's subnets: reverse lookups inside them are answered
    /// locally (PTR or NXDOMAIN), never leaked upstream.
    pub subnets: Vec<IpNet>,
    /// Internal networks never forward.
    pub internal: bool,
    /// Per-network upstreams; when set they replace the host's resolvers.
    pub forwarders: Vec<SocketAddr>,
}

/// What went wrong starting or changing the server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("network {0:?} is already served")]
    AlreadyServed(String),
    #[error("network {0:?} is not served")]
    NotServed(String),
    #[error("invalid zone {zone:?}: {why}")]
    InvalidZone { zone: String, why: &'static str },
    #[error("invalid name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("binding DNS {proto} listener on {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("record type {0:?} is not supported by dns-trace")]
    UnsupportedType(String),
    #[error("the DNS server must be created inside a tokio runtime")]
    NoRuntime,
}
