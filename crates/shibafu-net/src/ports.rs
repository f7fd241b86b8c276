//! Published ports: Docker's `-p`/`-P`/`PortBindings` syntax, host-port
//! allocation and reservation, and how `inspect`/`ps` show the result.
//!
//! Why it looks like this:
//! - Parsing turns every form (`80`, `8080:80`, `127.0.0.1::80`,
//!   `[::1]:8080:80/udp`, `8000-8010:8000-8010`, the API's map, `-P`) into
//!   one [`PortRequest`] per container port, so the allocator has one case.
//! - No userland proxy holds the port (kernel DNAT only), so conflicts are
//!   checked here: against ports other containers published (wildcard vs
//!   specific address, per family and protocol) and against sockets of the
//!   host, by trying to bind the address ([`PortProbe`], a trait so the
//!   allocator is unit-tested without touching real ports).
//! - A reservation is all-or-nothing: a failure in the middle of a
//!   container's ports releases the ones taken before it.
//! - Ephemeral ports are taken sequentially after the last one given, with
//!   wrap-around, like Docker, so a port just freed is not reused at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

use bollard_stubs::models::{PortBinding, PortMap};
use serde::{Deserialize, Serialize};

use crate::firewall::PortMapping;
pub use crate::firewall::Proto;

/// Errors of this module; the `Bind for` forms are Docker's wording.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("invalid port specification {spec:?}: {reason}")]
    InvalidSpec { spec: String, reason: String },
    #[error("Bind for {addr}:{port} failed: port is already allocated")]
    AlreadyAllocated { addr: String, port: u16 },
    #[error("Bind for {addr}:{port} failed: address already in use by a process on the host")]
    HostInUse { addr: String, port: u16 },
    #[error("Bind for {addr}:{port} failed: {err}")]
    HostAddress {
        addr: String,
        port: u16,
        err: String,
    },
    #[error("no free host port in range {lo}-{hi} for {what}")]
    Exhausted { lo: u16, hi: u16, what: String },
    #[error(
        "cannot publish {what}: the container has no {family} address on a non-internal network"
    )]
    NoFamily { what: String, family: &'static str },
    #[error("invalid host port range {lo}-{hi}")]
    InvalidRange { lo: u16, hi: u16 },
}

pub type Result<T, E = PortError> = std::result::Result<T, E>;

fn bad(spec: &str, reason: impl Into<String>) -> PortError {
    PortError::InvalidSpec {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

/// One container port to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub proto: Proto,
    /// `None`: all addresses (`0.0.0.0`, and `[::]` when the container
    /// has IPv6).
    pub host_ip: Option<IpAddr>,
    /// `None`: an ephemeral port from the allocator's range; `(p, p)` a
    /// fixed port; `(lo, hi)` the first free one of that range.
    pub host_ports: Option<(u16, u16)>,
    pub container_port: u16,
}

impl PortRequest {
    fn what(&self) -> String {
        format!("{}/{}", self.container_port, self.proto.as_str())
    }
}

/// A port as published: `host_ip:host_port -> container_port/proto`. An
/// unspecified `host_ip` (`0.0.0.0` or `::`) is the wildcard of its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    pub proto: Proto,
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

impl PublishedPort {
    /// The firewall's view, DNATing to `container_ip` (same family).
    pub fn mapping(&self, container_ip: IpAddr) -> PortMapping {
        PortMapping {
            proto: self.proto,
            host_ip: (!self.host_ip.is_unspecified()).then_some(self.host_ip),
            host_port: self.host_port,
            container_ip,
            container_port: self.container_port,
        }
    }
    /// `80/tcp`, the key of Docker's port maps.
    pub fn key(&self) -> String {
        format!("{}/{}", self.container_port, self.proto.as_str())
    }
}

/// `0.0.0.0`, `[::1]`: an address as it appears before `:port`.
pub fn addr_display(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V6(a) => format!("[{a}]"),
        a => a.to_string(),
    }
}

fn parse_proto(spec: &str, p: &str) -> Result<Proto> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" | "" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        "sctp" => Ok(Proto::Sctp),
        other => Err(bad(spec, format!("unknown protocol {other:?}"))),
    }
}

/// `80` or `8000-8010`; `allow_zero` for host ports, where 0 means "any".
fn parse_range(spec: &str, s: &str, what: &str, allow_zero: bool) -> Result<(u16, u16)> {
    let num = |x: &str| -> Result<u16> {
        let v: u16 = x
            .trim()
            .parse()
            .map_err(|_| bad(spec, format!("invalid {what} port {x:?}")))?;
        if v == 0 && !allow_zero {
            return Err(bad(spec, format!("{what} port 0 is not a port")));
        }
        Ok(v)
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let v = num(s)?;
            (v, v)
        }
    };
    if hi < lo {
        return Err(bad(spec, format!("invalid {what} port range {s}")));
    }
    Ok((lo, hi))
}

/// Turn a host-port range and a container-port range into requests, with
/// Docker's rules: equal lengths pair up; one container port with a host
/// range takes the first free host port of it.
fn expand(
    spec: &str,
    proto: Proto,
    host_ip: Option<IpAddr>,
    host: Option<(u16, u16)>,
    cont: (u16, u16),
) -> Result<Vec<PortRequest>> {
    let host = host.filter(|h| *h != (0, 0));
    let req = |hp, cp| PortRequest {
        proto,
        host_ip,
        host_ports: hp,
        container_port: cp,
    };
    let n = (cont.1 - cont.0) as u32 + 1;
    match host {
        None => Ok((cont.0..=cont.1).map(|c| req(None, c)).collect()),
        Some((lo, hi)) if (hi - lo) as u32 + 1 == n => Ok((0..n)
            .map(|i| {
                let h = lo + i as u16;
                req(Some((h, h)), cont.0 + i as u16)
            })
            .collect()),
        Some(h) if n == 1 => Ok(vec![req(Some(h), cont.0)]),
        Some(_) => Err(bad(
            spec,
            "host and container port ranges are of different lengths",
        )),
    }
}

/// Parse one `-p` value: `[ip:][hostPort:]containerPort[/proto]`, with
/// `[v6]` in brackets and ranges on either port.
pub fn parse_publish(spec: &str) -> Result<Vec<PortRequest>> {
    let s = spec.trim();
    if s.is_empty() {
        return Err(bad(spec, "empty"));
    }
    let (rest, proto) = match s.rsplit_once('/') {
        Some((r, p)) => (r, parse_proto(spec, p)?),
        None => (s, Proto::Tcp),
    };
    let (ip, ports): (Option<&str>, &str) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r
            .split_once(']')
            .ok_or_else(|| bad(spec, "missing ']' after an IPv6 address"))?;
        let after = after
            .strip_prefix(':')
            .ok_or_else(|| bad(spec, "expected ':' after the host address"))?;
        (Some(ip), after)
    } else {
        match rest.matches(':').count() {
            0 | 1 => (None, rest),
            2 => {
                let (ip, after) = rest.split_once(':').expect("has ':'");
                (Some(ip), after)
            }
            _ => {
                return Err(bad(
                    spec,
                    "too many ':' (put an IPv6 host address in brackets)",
                ))
            }
        }
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(a) => Some(
            a.parse::<IpAddr>()
                .map_err(|_| bad(spec, format!("invalid host address {a:?}")))?,
        ),
    };
    let (host, cont) = match ports.split_once(':') {
        Some((h, c)) => (
            (!h.is_empty())
                .then(|| parse_range(spec, h, "host", true))
                .transpose()?,
            c,
        ),
        None => (None, ports),
    };
    if cont.is_empty() {
        return Err(bad(spec, "no container port"));
    }
    let cont = parse_range(spec, cont, "container", false)?;
    expand(spec, proto, host_ip, host, cont)
}

/// A port map key: `80/tcp`, `53/udp`, `80` (tcp).
pub fn parse_port_key(key: &str) -> Result<((u16, u16), Proto)> {
    let (p, proto) = match key.split_once('/') {
        Some((p, pr)) => (p, parse_proto(key, pr)?),
        None => (key, Proto::Tcp),
    };
    Ok((parse_range(key, p, "container", false)?, proto))
}

/// The API's `HostConfig.PortBindings`.
pub fn from_port_bindings(map: &PortMap) -> Result<Vec<PortRequest>> {
    let mut out = Vec::new();
    // Sorted, so the same map always gives the same ephemeral ports order.
    let sorted: BTreeMap<&String, &Option<Vec<PortBinding>>> = map.iter().collect();
    for (key, bindings) in sorted {
        let (cont, proto) = parse_port_key(key)?;
        for b in bindings.iter().flatten() {
            let host_ip = match b.host_ip.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(a) => Some(
                    crate::ipam::parse_addr(a)
                        .map_err(|_| bad(key, format!("invalid host address {a:?}")))?,
                ),
            };
            let host = match b.host_port.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(h) => Some(parse_range(key, h, "host", true)?),
            };
            out.extend(expand(key, proto, host_ip, host, cont)?);
        }
    }
    Ok(out)
}

/// `-P`: every exposed port (`Config.ExposedPorts` keys) on an ephemeral
/// host port of all addresses.
pub fn publish_all<'a>(exposed: impl IntoIterator<Item = &'a str>) -> Result<Vec<PortRequest>> {
    let mut out = Vec::new();
    let mut keys: Vec<((u16, u16), Proto, &str)> = Vec::new();
    for k in exposed {
        let (cont, proto) = parse_port_key(k)?;
        keys.push((cont, proto, k));
    }
    keys.sort();
    keys.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    for (cont, proto, k) in keys {
        out.extend(expand(k, proto, None, None, cont)?);
    }
    Ok(out)
}

/// A container's port requests as Docker builds them: the explicit
/// `HostConfig.PortBindings`, plus, with `PublishAllPorts` (`-P`), every
/// exposed port that has no explicit binding.
pub fn port_requests<'a>(
    bindings: Option<&PortMap>,
    publish_all_ports: bool,
    exposed: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<PortRequest>> {
    let mut out = match bindings {
        Some(b) => from_port_bindings(b)?,
        None => Vec::new(),
    };
    if publish_all_ports {
        let bound: BTreeSet<(u16, Proto)> =
            out.iter().map(|r| (r.container_port, r.proto)).collect();
        out.extend(
            publish_all(exposed)?
                .into_iter()
                .filter(|r| !bound.contains(&(r.container_port, r.proto))),
        );
    }
    Ok(out)
}

/// Whether a host address/port is free for a new publish, asked of the
/// kernel. `Err` with `AddrInUse` means taken by a host socket; any other
/// error (e.g. the address is not local) is reported as is.
pub trait PortProbe: Send + Sync + 'static {
    fn check(&self, proto: Proto, ip: IpAddr, port: u16) -> std::io::Result<()>;
}

/// The real probe: bind a socket of the protocol to the address/port in
/// the daemon's netns (and close it at once). TCP sockets get
/// `SO_REUSEADDR` so connections in TIME_WAIT do not count as in use; v6
/// sockets are v6-only so `[::]` checks only IPv6. A kernel without SCTP
/// cannot have SCTP sockets in use.
pub struct SocketProbe;

impl PortProbe for SocketProbe {
    fn check(&self, proto: Proto, ip: IpAddr, port: u16) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let domain = if ip.is_ipv6() {
            libc::AF_INET6
        } else {
            libc::AF_INET
        };
        let (ty, p) = match proto {
            Proto::Tcp => (libc::SOCK_STREAM, libc::IPPROTO_TCP),
            Proto::Udp => (libc::SOCK_DGRAM, libc::IPPROTO_UDP),
            Proto::Sctp => (libc::SOCK_STREAM, libc::IPPROTO_SCTP),
        };
        // SAFETY: plain socket(2); the fd is owned right below.
        let raw = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, p) };
        if raw < 0 {
            let e = std::io::Error::last_os_error();
            if proto == Proto::Sctp
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EPROTONOSUPPORT) | Some(libc::ESOCKTNOSUPPORT)
                )
            {
                return Ok(());
            }
            return Err(e);
        }
        // SAFETY: `raw` is a fresh, valid fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let on: libc::c_int = 1;
        let setopt = |level, name| {
            // SAFETY: a valid fd and a c_int option value of the right size.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    level,
                    name,
                    &on as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        if proto == Proto::Tcp {
            setopt(libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
        }
        let r = match SocketAddr::new(ip, port) {
            SocketAddr::V4(a) => {
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: a valid fd and a fully initialised sockaddr_in.
                unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                }
            }
            SocketAddr::V6(a) => {
                setopt(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)?;
                let sa = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: 0,
                };
                // SAFETY: a valid fd and a fully initialised sockaddr_in6.
                unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                }
            }
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[derive(Default)]
struct Inner {
    /// (proto, host port) -> (host address, owner container).
    taken: BTreeMap<(Proto, u16), Vec<(IpAddr, String)>>,
    /// The last ephemeral port handed out.
    last: Option<u16>,
}

impl Inner {
    /// The publish that `ip:port/proto` would collide with: same family,
    /// and either address a wildcard or both equal.
    fn conflict(&self, proto: Proto, ip: IpAddr, port: u16) -> Option<&(IpAddr, String)> {
        self.taken.get(&(proto, port))?.iter().find(|(o, _)| {
            o.is_ipv6() == ip.is_ipv6() && (o.is_unspecified() || ip.is_unspecified() || *o == ip)
        })
    }
    fn remove(&mut self, p: &PublishedPort, owner: &str) {
        if let Some(v) = self.taken.get_mut(&(p.proto, p.host_port)) {
            v.retain(|(ip, o)| !(*ip == p.host_ip && o == owner));
            if v.is_empty() {
                self.taken.remove(&(p.proto, p.host_port));
            }
        }
    }
}

/// Host-port reservations of all containers (in memory; the daemon
/// restores them from its persisted endpoints with [`Self::restore`]).
pub struct PortAllocator<P: PortProbe = SocketProbe> {
    range: (u16, u16),
    probe: P,
    inner: Mutex<Inner>,
}

/// Docker's default ephemeral range on Linux is the kernel's; the issue
/// asks for this one.
pub const DEFAULT_RANGE: (u16, u16) = (30000, 32767);

impl<P: PortProbe> PortAllocator<P> {
    pub fn new(range: (u16, u16), probe: P) -> Result<Self> {
        if range.0 == 0 || range.1 < range.0 {
            return Err(PortError::InvalidRange {
                lo: range.0,
                hi: range.1,
            });
        }
        Ok(PortAllocator {
            range,
            probe,
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn range(&self) -> (u16, u16) {
        self.range
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why `port` cannot be used on all of `ips`, if it cannot.
    fn unavailable(
        &self,
        inner: &Inner,
        proto: Proto,
        ips: &[IpAddr],
        port: u16,
    ) -> Option<PortError> {
        for ip in ips {
            if inner.conflict(proto, *ip, port).is_some() {
                return Some(PortError::AlreadyAllocated {
                    addr: addr_display(ip),
                    port,
                });
            }
        }
        for ip in ips {
            if let Err(e) = self.probe.check(proto, *ip, port) {
                return Some(if e.kind() == std::io::ErrorKind::AddrInUse {
                    PortError::HostInUse {
                        addr: addr_display(ip),
                        port,
                    }
                } else {
                    PortError::HostAddress {
                        addr: addr_display(ip),
                        port,
                        err: e.to_string(),
                    }
                });
            }
        }
        None
    }

    /// Reserve host ports for `owner`'s requests; `v4`/`v6` say which
    /// families the container can be reached on. All or nothing.
    pub fn reserve(
        &self,
        owner: &str,
        reqs: &[PortRequest],
        v4: bool,
        v6: bool,
    ) -> Result<Vec<PublishedPort>> {
        let mut inner = self.lock();
        let mut done: Vec<PublishedPort> = Vec::new();
        let res = (|| {
            for r in reqs {
                let ips: Vec<IpAddr> = match r.host_ip {
                    Some(ip) => {
                        let ok = if ip.is_ipv6() { v6 } else { v4 };
                        if !ok {
                            return Err(PortError::NoFamily {
                                what: format!("{}:{}", addr_display(&ip), r.what()),
                                family: if ip.is_ipv6() { "IPv6" } else { "IPv4" },
                            });
                        }
                        vec![ip]
                    }
                    None => {
                        let mut v = Vec::new();
                        if v4 {
                            v.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                        }
                        if v6 {
                            v.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                        }
                        if v.is_empty() {
                            return Err(PortError::NoFamily {
                                what: r.what(),
                                family: "IP",
                            });
                        }
                        v
                    }
                };
                let port = match r.host_ports {
                    Some((p, q)) if p == q => {
                        if let Some(e) = self.unavailable(&inner, r.proto, &ips, p) {
                            return Err(e);
                        }
                        p
                    }
                    Some((lo, hi)) => self.first_free(&inner, r, &ips, lo, hi, None)?,
                    None => {
                        let (lo, hi) = self.range;
                        let p = self.first_free(&inner, r, &ips, lo, hi, inner.last)?;
                        inner.last = Some(p);
                        p
                    }
                };
                for ip in ips {
                    let p = PublishedPort {
                        proto: r.proto,
                        host_ip: ip,
                        host_port: port,
                        container_port: r.container_port,
                    };
                    inner
                        .taken
                        .entry((r.proto, port))
                        .or_default()
                        .push((ip, owner.to_string()));
                    done.push(p);
                }
            }
            Ok(())
        })();
        match res {
            Ok(()) => Ok(done),
            Err(e) => {
                for p in &done {
                    inner.remove(p, owner);
                }
                Err(e)
            }
        }
    }

    /// First port of `lo..=hi` (starting after `after`, wrapping) free on
    /// all `ips`. A host address that cannot be bound at all is reported
    /// at once rather than scanning the whole range.
    fn first_free(
        &self,
        inner: &Inner,
        r: &PortRequest,
        ips: &[IpAddr],
        lo: u16,
        hi: u16,
        after: Option<u16>,
    ) -> Result<u16> {
        let n = (hi - lo) as u32 + 1;
        let start = match after {
            Some(a) if a >= lo && a < hi => (a - lo) as u32 + 1,
            _ => 0,
        };
        for i in 0..n {
            let port = lo + ((start + i) % n) as u16;
            match self.unavailable(inner, r.proto, ips, port) {
                None => return Ok(port),
                Some(e @ PortError::HostAddress { .. }) => return Err(e),
                Some(_) => {}
            }
        }
        Err(PortError::Exhausted {
            lo,
            hi,
            what: r.what(),
        })
    }

    /// Re-register ports already published (daemon start), without
    /// probing: their DNAT rules, not a host socket, hold them.
    pub fn restore(&self, owner: &str, ports: &[PublishedPort]) {
        let mut inner = self.lock();
        for p in ports {
            let v = inner.taken.entry((p.proto, p.host_port)).or_default();
            if !v.iter().any(|(ip, o)| *ip == p.host_ip && o == owner) {
                v.push((p.host_ip, owner.to_string()));
            }
        }
    }

    /// Release everything `owner` holds; returns how many were held.
    pub fn release(&self, owner: &str) -> usize {
        let mut inner = self.lock();
        let mut n = 0;
        inner.taken.retain(|_, v| {
            let before = v.len();
            v.retain(|(_, o)| o != owner);
            n += before - v.len();
            !v.is_empty()
        });
        n
    }

    /// Release some of `owner`'s ports.
    pub fn release_ports(&self, owner: &str, ports: &[PublishedPort]) {
        let mut inner = self.lock();
        for p in ports {
            inner.remove(p, owner);
        }
    }

    /// Every reservation: (owner, port).
    pub fn reserved(&self) -> Vec<(String, PublishedPort)> {
        let inner = self.lock();
        let mut out = Vec::new();
        for ((proto, port), v) in &inner.taken {
            for (ip, o) in v {
                out.push((
                    o.clone(),
                    PublishedPort {
                        proto: *proto,
                        host_ip: *ip,
                        host_port: *port,
                        container_port: 0,
                    },
                ));
            }
        }
        out
    }

    /// Forget every reservation (before a full restore); the position of
    /// the ephemeral cursor is kept.
    pub fn clear(&self) {
        self.lock().taken.clear();
    }
}

/// Docker's `NetworkSettings.Ports`: every exposed or published port,
/// `null` for exposed-only ones.
pub fn port_map<'a>(
    published: &[PublishedPort],
    exposed: impl IntoIterator<Item = &'a str>,
) -> PortMap {
    let mut map: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for k in exposed {
        // Normalise `80` to `80/tcp`.
        let key = match parse_port_key(k) {
            Ok(((p, _), proto)) => format!("{p}/{}", proto.as_str()),
            Err(_) => k.to_string(),
        };
        map.entry(key).or_insert(None);
    }
    let mut sorted = published.to_vec();
    sorted.sort_by_key(|p| (p.host_ip.is_ipv6(), p.proto, p.container_port, p.host_port));
    for p in sorted {
        map.entry(p.key())
            .or_insert(None)
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.to_string()),
                host_port: Some(p.host_port.to_string()),
            });
    }
    map
}

/// `ps`'s PORTS column: `0.0.0.0:8080->80/tcp, [::]:8080->80/tcp`,
/// consecutive ports folded into ranges as Docker does
/// (`0.0.0.0:8000-8002->8000-8002/tcp`), exposed-only ports as `80/tcp`.
pub fn display_ports<'a>(
    published: &[PublishedPort],
    exposed: impl IntoIterator<Item = &'a str>,
) -> String {
    let mut sorted = published.to_vec();
    sorted.sort_by_key(|p| (p.host_ip.is_ipv6(), p.host_ip, p.proto, p.container_port));
    let mut groups: Vec<(PublishedPort, u16)> = Vec::new(); // first, count-1
    for p in sorted {
        if let Some((first, extra)) = groups.last_mut() {
            let next = *extra + 1;
            if first.host_ip == p.host_ip
                && first.proto == p.proto
                && first.container_port.checked_add(next) == Some(p.container_port)
                && first.host_port.checked_add(next) == Some(p.host_port)
            {
                *extra = next;
                continue;
            }
        }
        groups.push((p, 0));
    }
    let range = |a: u16, n: u16| {
        if n == 0 {
            a.to_string()
        } else {
            format!("{a}-{}", a + n)
        }
    };
    let mut out: Vec<String> = groups
        .iter()
        .map(|(p, n)| {
            format!(
                "{}:{}->{}/{}",
                addr_display(&p.host_ip),
                range(p.host_port, *n),
                range(p.container_port, *n),
                p.proto.as_str()
            )
        })
        .collect();
    let published_keys: BTreeSet<String> = published.iter().map(|p| p.key()).collect();
    let mut only: Vec<((u16, u16), Proto)> = exposed
        .into_iter()
        .filter_map(|k| parse_port_key(k).ok())
        .filter(|((p, _), proto)| !published_keys.contains(&format!("{p}/{}", proto.as_str())))
        .collect();
    only.sort_by_key(|((p, _), proto)| (*proto, *p));
    only.dedup();
    for ((p, q), proto) in only {
        out.push(format!("{}/{}", range(p, q - p), proto.as_str()));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn req(proto: Proto, host_ip: Option<&str>, hp: Option<(u16, u16)>, cp: u16) -> PortRequest {
        PortRequest {
            proto,
            host_ip: host_ip.map(ip),
            host_ports: hp,
            container_port: cp,
        }
    }

    #[test]
    fn parse_every_publish_form() {
        use Proto::*;
        assert_eq!(parse_publish("80").unwrap(), vec![req(Tcp, None, None, 80)]);
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            vec![req(Tcp, None, Some((8080, 8080)), 80)]
        );
        assert_eq!(
            parse_publish("127.0.0.1:8080:80").unwrap(),
            vec![req(Tcp, Some("127.0.0.1"), Some((8080, 8080)), 80)]
        );
        assert_eq!(
            parse_publish("127.0.0.1::80").unwrap(),
            vec![req(Tcp, Some("127.0.0.1"), None, 80)]
        );
        assert_eq!(
            parse_publish("[::1]:8080:80/udp").unwrap(),
            vec![req(Udp, Some("::1"), Some((8080, 8080)), 80)]
        );
        assert_eq!(
            parse_publish("53:53/SCTP").unwrap(),
            vec![req(Sctp, None, Some((53, 53)), 53)]
        );
        assert_eq!(
            parse_publish("8000-8002:9000-9002").unwrap(),
            vec![
                req(Tcp, None, Some((8000, 8000)), 9000),
                req(Tcp, None, Some((8001, 8001)), 9001),
                req(Tcp, None, Some((8002, 8002)), 9002),
            ]
        );
        assert_eq!(
            parse_publish("8000-8010:80").unwrap(),
            vec![req(Tcp, None, Some((8000, 8010)), 80)]
        );
        assert_eq!(
            parse_publish("80-81").unwrap(),
            vec![req(Tcp, None, None, 80), req(Tcp, None, None, 81)]
        );
        assert_eq!(
            parse_publish("0:80").unwrap(),
            vec![req(Tcp, None, None, 80)]
        );
        for (spec, why) in [
            ("", "empty"),
            ("80/icmp", "unknown protocol"),
            ("8080:0", "container port 0"),
            ("70000:80", "invalid host port"),
            ("a:80", "invalid host port"),
            ("1.2.3:8080:80", "invalid host address"),
            ("::1:8080:80", "brackets"),
            ("[::1:8080:80", "missing ']'"),
            ("8000-8001:80-82", "different lengths"),
            ("90-80", "range"),
            ("8080:", "no container port"),
        ] {
            let e = parse_publish(spec).unwrap_err().to_string();
            assert!(e.contains(why), "{spec}: {e}");
        }
    }

    #[test]
    fn parse_api_map_and_publish_all() {
        let map: PortMap = HashMap::from([
            (
                "80/tcp".to_string(),
                Some(vec![
                    PortBinding {
                        host_ip: Some("".into()),
                        host_port: Some("8080".into()),
                    },
                    PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some("".into()),
                    },
                ]),
            ),
            ("53/udp".to_string(), Some(vec![PortBinding::default()])),
            ("9/tcp".to_string(), None),
        ]);
        assert_eq!(
            from_port_bindings(&map).unwrap(),
            vec![
                req(Proto::Udp, None, None, 53),
                req(Proto::Tcp, None, Some((8080, 8080)), 80),
                req(Proto::Tcp, Some("127.0.0.1"), None, 80),
            ]
        );
        let bad: PortMap = HashMap::from([("x/tcp".to_string(), Some(vec![]))]);
        assert!(from_port_bindings(&bad).is_err());
        assert_eq!(
            publish_all(["443/tcp", "80/tcp", "53/udp", "80/tcp"]).unwrap(),
            vec![
                req(Proto::Udp, None, None, 53),
                req(Proto::Tcp, None, None, 80),
                req(Proto::Tcp, None, None, 443),
            ]
        );
    }

    #[test]
    fn publish_all_skips_explicitly_bound_ports() {
        let map: PortMap = HashMap::from([(
            "80/tcp".to_string(),
            Some(vec![PortBinding {
                host_ip: None,
                host_port: Some("8080".into()),
            }]),
        )]);
        let r = port_requests(Some(&map), true, ["80/tcp", "443/tcp"]).unwrap();
        assert_eq!(
            r,
            vec![
                req(Proto::Tcp, None, Some((8080, 8080)), 80),
                req(Proto::Tcp, None, None, 443),
            ]
        );
        assert_eq!(
            port_requests(Some(&map), false, ["443/tcp"]).unwrap().len(),
            1
        );
        assert!(port_requests(None, false, ["443/tcp"]).unwrap().is_empty());
    }

    /// Host sockets: (proto, ip, port) in use; ips in `foreign` cannot be bound.
    #[derive(Default)]
    struct FakeProbe {
        used: Mutex<HashSet<(Proto, IpAddr, u16)>>,
        foreign: HashSet<IpAddr>,
    }
    impl PortProbe for FakeProbe {
        fn check(&self, proto: Proto, ip: IpAddr, port: u16) -> std::io::Result<()> {
            if self.foreign.contains(&ip) {
                return Err(std::io::Error::from_raw_os_error(libc::EADDRNOTAVAIL));
            }
            let used = self.used.lock().unwrap();
            let hit = used.iter().any(|(p, i, q)| {
                *p == proto
                    && *q == port
                    && i.is_ipv6() == ip.is_ipv6()
                    && (i.is_unspecified() || ip.is_unspecified() || *i == ip)
            });
            if hit {
                Err(std::io::Error::from(std::io::ErrorKind::AddrInUse))
            } else {
                Ok(())
            }
        }
    }

    fn alloc(range: (u16, u16)) -> PortAllocator<FakeProbe> {
        PortAllocator::new(range, FakeProbe::default()).unwrap()
    }

    #[test]
    fn fixed_ports_conflict_by_family_address_and_protocol() {
        let a = alloc(DEFAULT_RANGE);
        let got = a
            .reserve("c1", &parse_publish("8080:80").unwrap(), true, true)
            .unwrap();
        assert_eq!(
            got.iter().map(|p| p.host_ip).collect::<Vec<_>>(),
            vec![ip("0.0.0.0"), ip("::")]
        );
        let e = a
            .reserve(
                "c2",
                &parse_publish("127.0.0.1:8080:80").unwrap(),
                true,
                false,
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Bind for 127.0.0.1:8080 failed: port is already allocated"
        );
        // Other protocol: fine.
        a.reserve("c2", &parse_publish("8080:80/udp").unwrap(), true, false)
            .unwrap();
        // Two specific addresses on the same port: fine; wildcard then refused.
        let b = alloc(DEFAULT_RANGE);
        b.reserve(
            "c1",
            &parse_publish("127.0.0.1:9000:80").unwrap(),
            true,
            false,
        )
        .unwrap();
        b.reserve(
            "c2",
            &parse_publish("127.0.0.2:9000:80").unwrap(),
            true,
            false,
        )
        .unwrap();
        let e = b
            .reserve("c3", &parse_publish("9000:80").unwrap(), true, false)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Bind for 0.0.0.0:9000 failed: port is already allocated"
        );
        // v6-only wildcard does not collide with v4 specifics.
        b.reserve("c3", &parse_publish("[::]:9000:80").unwrap(), false, true)
            .unwrap();
        // Releasing frees the port.
        assert_eq!(b.release("c1"), 1);
        assert_eq!(b.release("c2"), 1);
        b.reserve("c4", &parse_publish("9000:80").unwrap(), true, false)
            .unwrap();
        // v6 host address without a v6 container address.
        let e = b
            .reserve("c5", &parse_publish("[::1]:9100:80").unwrap(), true, false)
            .unwrap_err();
        assert!(matches!(e, PortError::NoFamily { .. }), "{e}");
    }

    #[test]
    fn host_sockets_are_respected() {
        let mut probe = FakeProbe::default();
        probe.foreign.insert(ip("192.0.2.1"));
        probe
            .used
            .lock()
            .unwrap()
            .insert((Proto::Tcp, ip("127.0.0.1"), 30000));
        let a = PortAllocator::new((30000, 30002), probe).unwrap();
        let e = a
            .reserve("c1", &parse_publish("30000:80").unwrap(), true, false)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Bind for 0.0.0.0:30000 failed: address already in use by a process on the host"
        );
        // Ephemeral skips the host's port.
        let got = a
            .reserve("c1", &parse_publish("80").unwrap(), true, false)
            .unwrap();
        assert_eq!(got[0].host_port, 30001);
        let e = a
            .reserve("c2", &parse_publish("192.0.2.1::80").unwrap(), true, false)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Bind for 192.0.2.1:30002 failed: "),
            "{e}"
        );
    }

    #[test]
    fn ephemeral_is_sequential_wraps_and_exhausts_atomically() {
        let a = alloc((40000, 40003));
        let p = |owner, spec| {
            a.reserve(owner, &parse_publish(spec).unwrap(), true, false)
                .map(|v| v.iter().map(|p| p.host_port).collect::<Vec<_>>())
        };
        assert_eq!(p("c1", "80").unwrap(), vec![40000]);
        assert_eq!(p("c2", "80-81").unwrap(), vec![40001, 40002]);
        a.release("c1");
        // Continues after the last one, then wraps to the freed one.
        assert_eq!(p("c3", "80").unwrap(), vec![40003]);
        assert_eq!(p("c4", "80").unwrap(), vec![40000]);
        let e = p("c5", "80").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no free host port in range 40000-40003 for 80/tcp"
        );
        // All or nothing: a fixed port that conflicts after a free one
        // leaves the free one unreserved.
        a.release("c4");
        let e = a
            .reserve(
                "c6",
                &[
                    req(Proto::Tcp, None, Some((5000, 5000)), 1),
                    req(Proto::Tcp, None, Some((40001, 40001)), 2),
                ],
                true,
                false,
            )
            .unwrap_err();
        assert!(matches!(e, PortError::AlreadyAllocated { port: 40001, .. }));
        assert!(a.reserved().iter().all(|(o, _)| o != "c6"));
        // A host range picks the first free port in it.
        assert_eq!(
            p("c7", "40001-40003:80").unwrap_err().to_string(),
            "no free host port in range 40001-40003 for 80/tcp"
        );
        assert_eq!(p("c7", "40000-40003:80").unwrap(), vec![40000]);
        // Restore re-registers without probing.
        let b = alloc((40000, 40003));
        b.restore(
            "c1",
            &[PublishedPort {
                proto: Proto::Tcp,
                host_ip: ip("0.0.0.0"),
                host_port: 8080,
                container_port: 80,
            }],
        );
        assert!(b
            .reserve("c2", &parse_publish("8080:80").unwrap(), true, false)
            .is_err());
        b.clear();
        assert!(b.reserved().is_empty());
        assert!(PortAllocator::new((10, 5), FakeProbe::default()).is_err());
    }

    #[test]
    fn inspect_and_ps_rendering() {
        let pp = |h: &str, hp, cp, proto| PublishedPort {
            proto,
            host_ip: ip(h),
            host_port: hp,
            container_port: cp,
        };
        let published = vec![
            pp("0.0.0.0", 8080, 80, Proto::Tcp),
            pp("::", 8080, 80, Proto::Tcp),
            pp("127.0.0.1", 5353, 53, Proto::Udp),
            pp("0.0.0.0", 8000, 9000, Proto::Tcp),
            pp("0.0.0.0", 8001, 9001, Proto::Tcp),
            pp("0.0.0.0", 8002, 9002, Proto::Tcp),
        ];
        assert_eq!(
            display_ports(&published, ["80/tcp", "443/tcp", "53/udp"]),
            "0.0.0.0:8080->80/tcp, 0.0.0.0:8000-8002->9000-9002/tcp, 127.0.0.1:5353->53/udp, [::]:8080->80/tcp, 443/tcp"
        );
        let m = port_map(&published, ["443/tcp", "80"]);
        assert_eq!(m["443/tcp"], None);
        assert_eq!(
            m["80/tcp"],
            Some(vec![
                PortBinding {
                    host_ip: Some("0.0.0.0".into()),
                    host_port: Some("8080".into())
                },
                PortBinding {
                    host_ip: Some("::".into()),
                    host_port: Some("8080".into())
                },
            ])
        );
        assert_eq!(m.len(), 6);
        assert_eq!(
            published[2].mapping(ip("10.0.0.2")).to_string(),
            "127.0.0.1:5353->10.0.0.2:53/udp"
        );
        assert_eq!(published[0].mapping(ip("10.0.0.2")).host_ip, None);
    }

    #[test]
    fn socket_probe_sees_real_listeners() {
        // Loopback only; an ephemeral port the kernel picks.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let e = SocketProbe
            .check(Proto::Tcp, ip("127.0.0.1"), port)
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        // The wildcard overlaps the specific listener.
        assert!(SocketProbe.check(Proto::Tcp, ip("0.0.0.0"), port).is_err());
        // UDP on the same number is independent.
        SocketProbe
            .check(Proto::Udp, ip("127.0.0.1"), port)
            .unwrap();
        drop(l);
        SocketProbe
            .check(Proto::Tcp, ip("127.0.0.1"), port)
            .unwrap();
        let e = SocketProbe
            .check(Proto::Tcp, ip("192.0.2.77"), port)
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrNotAvailable);
    }
}
