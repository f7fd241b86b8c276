//! Forwarding to upstream resolvers: one upstream after the other within
//! an overall budget shorter than the client's own 5 s timeout; upstreams
//! that time out are skipped for a while (a dead resolver must not make
//! every query wait for it: moby#31960, aardvark-dns#482), with one probe
//! per second per dead upstream so they come back by themselves.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::wire::{self, Query};

/// How long a dead upstream waits between probes.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Largest message accepted from an upstream over TCP.
const MAX_TCP_REPLY: usize = 65535;

#[derive(Debug, Default, Clone, Copy)]
struct Health {
    down_until: Option<Instant>,
    last_probe: Option<Instant>,
}

/// Why nothing came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("no upstream resolver configured")]
    NoUpstream,
    #[error("every upstream is marked down (timed out recently)")]
    AllDown,
    #[error("no upstream answered in time")]
    NoAnswer,
}

/// One upstream's outcome, for traces.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub server: SocketAddr,
    pub tcp: bool,
    pub outcome: String,
}

pub(crate) struct Upstreams {
    health: Mutex<HashMap<SocketAddr, Health>>,
    pub timeout: Duration,
    pub budget: Duration,
    pub down_for: Duration,
}

impl Upstreams {
    pub fn new(timeout: Duration, budget: Duration, down_for: Duration) -> Upstreams {
        Upstreams {
            health: Mutex::new(HashMap::new()),
            timeout,
            budget,
            down_for,
        }
    }

    /// The servers to try, in order: the live ones; when all are down, the
    /// ones due for a probe.
    fn candidates(&self, servers: &[SocketAddr], now: Instant) -> (Vec<SocketAddr>, bool) {
        let mut health = self.health.lock();
        let mut live = Vec::with_capacity(servers.len());
        for s in servers {
            if live.contains(s) {
                continue;
            }
            let h = health.entry(*s).or_default();
            if h.down_until.is_none_or(|t| t <= now) {
                live.push(*s);
            }
        }
        let probing = live.is_empty();
        if probing {
            for s in servers {
                let h = health.entry(*s).or_default();
                if h.last_probe
                    .is_none_or(|t| now.duration_since(t) >= PROBE_EVERY)
                    && !live.contains(s)
                {
                    h.last_probe = Some(now);
                    live.push(*s);
                }
            }
        }
        (live, probing)
    }

    fn mark(&self, server: SocketAddr, up: bool) {
        let mut health = self.health.lock();
        let h = health.entry(server).or_default();
        if up {
            h.down_until = None;
        } else {
            let now = Instant::now();
            h.down_until = Some(now + self.down_for);
            h.last_probe = Some(now);
        }
    }

    /// Whether `server` is currently skipped.
    pub fn is_down(&self, server: SocketAddr) -> bool {
        self.health
            .lock()
            .get(&server)
            .and_then(|h| h.down_until)
            .is_some_and(|t| t > Instant::now())
    }

    /// Sends `query` (the requester's bytes: its EDNS options pass through)
    /// to the upstreams in turn. Returns the reply with the requester's ID
    /// restored and the server that gave it.
    pub async fn forward(
        &self,
        query: &[u8],
        q: &Query,
        servers: &[SocketAddr],
        attempts: &mut Vec<Attempt>,
    ) -> Result<(Vec<u8>, SocketAddr), ForwardError> {
        if servers.is_empty() {
            return Err(ForwardError::NoUpstream);
        }
        let start = Instant::now();
        let deadline = start + self.budget;
        let (order, probing) = self.candidates(servers, start);
        if order.is_empty() {
            return Err(ForwardError::AllDown);
        }
        let mut fallback: Option<(Vec<u8>, SocketAddr)> = None;
        for (k, &server) in order.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let left = deadline - now;
            // The last candidate may use the rest of the budget: a slow but
            // live resolver still answers. A probe of a dead one may not.
            let wait = if k + 1 == order.len() && !probing {
                left
            } else {
                self.timeout.min(left)
            };
            let id: u16 = rand::random();
            let mut out = query.to_vec();
            out[0..2].copy_from_slice(&id.to_be_bytes());
            out[2] |= (wire::FLAG_RD >> 8) as u8;
            let res = tokio::time::timeout(wait, exchange_udp(server, &out, id, q)).await;
            let reply = match res {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    attempts.push(Attempt {
                        server,
                        tcp: false,
                        outcome: format!("error: {e}"),
                    });
                    self.mark(server, false);
                    continue;
                }
                Err(_) => {
                    attempts.push(Attempt {
                        server,
                        tcp: false,
                        outcome: format!("timed out after {} ms", wait.as_millis()),
                    });
                    self.mark(server, false);
                    continue;
                }
            };
            self.mark(server, true);
            let flags = wire::u16_at(&reply, 2).unwrap_or(0);
            let mut reply = reply;
            let mut used_tcp = false;
            if flags & wire::FLAG_TC != 0 {
                attempts.push(Attempt {
                    server,
                    tcp: false,
                    outcome: "truncated, retrying over TCP".into(),
                });
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, exchange_tcp(server, &out, id, q)).await {
                    Ok(Ok(r)) => {
                        reply = r;
                        used_tcp = true;
                    }
                    Ok(Err(e)) => attempts.push(Attempt {
                        server,
                        tcp: true,
                        outcome: format!("error: {e}"),
                    }),
                    Err(_) => attempts.push(Attempt {
                        server,
                        tcp: true,
                        outcome: "timed out".into(),
                    }),
                }
            }
            reply[0..2].copy_from_slice(&q.id.to_be_bytes());
            let rcode = reply[3] & 0xF;
            attempts.push(Attempt {
                server,
                tcp: used_tcp,
                outcome: wire::rcode_name(rcode).to_string(),
            });
            if rcode == wire::RCODE_SERVFAIL || rcode == wire::RCODE_REFUSED {
                // Another upstream may do better; keep this one as a last resort.
                fallback = Some((reply, server));
                continue;
            }
            return Ok((reply, server));
        }
        fallback.ok_or(ForwardError::NoAnswer)
    }
}

fn unspecified(server: SocketAddr) -> SocketAddr {
    match server.ip() {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// Whether `reply` answers `out` (ID, QR, same question): anything else on
/// the socket is ignored, so a stray or spoofed datagram cannot poison the cache.
fn matches(reply: &[u8], id: u16, q: &Query) -> bool {
    if wire::u16_at(reply, 0) != Ok(id) || reply.len() < 12 || reply[2] & 0x80 == 0 {
        return false;
    }
    if wire::u16_at(reply, 4) != Ok(1) {
        // Some servers drop the question on errors like FORMERR.
        return wire::u16_at(reply, 4) == Ok(0);
    }
    match wire::read_name(reply, 12) {
        Ok((name, off)) => {
            name.as_slice() == q.qname.as_slice()
                && wire::u16_at(reply, off) == Ok(q.qtype)
                && wire::u16_at(reply, off + 2) == Ok(q.qclass)
        }
        Err(_) => false,
    }
}

/// One UDP exchange on a fresh socket (random source port), connected so
/// only the server's datagrams arrive and a closed port fails at once.
async fn exchange_udp(server: SocketAddr, out: &[u8], id: u16, q: &Query) -> io::Result<Vec<u8>> {
    let sock = UdpSocket::bind(unspecified(server)).await?;
    sock.connect(server).await?;
    sock.send(out).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if matches(&buf[..n], id, q) && wire::inspect_response(&buf[..n]).is_ok() {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// One TCP exchange (RFC 7766 framing).
async fn exchange_tcp(server: SocketAddr, out: &[u8], id: u16, q: &Query) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(out.len() + 2);
    framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
    framed.extend_from_slice(out);
    s.write_all(&framed).await?;
    loop {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let len = u16::from_be_bytes(len) as usize;
        if len > MAX_TCP_REPLY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "reply too long"));
        }
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).await?;
        if matches(&buf, id, q) && wire::inspect_response(&buf).is_ok() {
            return Ok(buf);
        }
    }
}
