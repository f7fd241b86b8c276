//! Shared helpers: loopback addresses per test, a fake upstream resolver,
//! and a raw UDP/TCP client decoding with hickory-proto (an implementation
//! independent of the server's own encoder).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use shibafu_dns::{DnsConfig, DnsServer, Endpoint, NetworkDns, Table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

static BLOCK: AtomicU8 = AtomicU8::new(0);

/// A private block `127.B.C.*` for one test, so parallel tests (and other
/// processes) never collide. `ip(n)` is `127.B.C.n`.
#[derive(Clone, Copy)]
pub struct Net {
    pub b: u8,
    pub c: u8,
}

impl Net {
    pub fn new() -> Net {
        let k = BLOCK.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        Net {
            b: 100 + (pid % 100) as u8,
            c: k.wrapping_add((pid / 100 % 200) as u8),
        }
    }
    pub fn ip(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.b, self.c, n)
    }
}

/// A free-looking high port (the server binds a specific loopback address,
/// so a clash needs the same address too).
pub fn port() -> u16 {
    20000 + rand::random::<u16>() % 40000
}

pub fn config(port: u16) -> DnsConfig {
    DnsConfig {
        port,
        upstream_timeout: Duration::from_millis(300),
        query_budget: Duration::from_millis(1500),
        ..DnsConfig::default()
    }
}

pub fn network(id: &str, name: &str, listen: Ipv4Addr) -> NetworkDns {
    NetworkDns {
        id: id.into(),
        name: name.into(),
        zone: None,
        listen: vec![IpAddr::V4(listen)],
        subnets: vec![],
        internal: false,
        forwarders: vec![],
    }
}

pub fn endpoint(name: &str, net: &str, ip: Ipv4Addr) -> Endpoint {
    Endpoint {
        container_id: format!("{name}-id"),
        name: name.into(),
        hostname: None,
        aliases: vec![],
        services: vec![],
        network_id: net.into(),
        ipv4: Some(ip),
        ipv6: None,
        ports: vec![],
        healthy: true,
        dns_servers: vec![],
    }
}

pub fn table(endpoints: Vec<Endpoint>) -> Table {
    Table {
        endpoints,
        cnames: vec![],
    }
}

/// Starts a server with one network `net1` (zone `net1.local`) listening on `listen`.
pub async fn server_with(cfg: DnsConfig, nets: Vec<NetworkDns>, t: Table) -> DnsServer {
    let s = DnsServer::new(cfg).unwrap();
    for n in nets {
        s.serve_network(n).unwrap();
    }
    assert!(s.set_table(t).is_empty());
    s
}

pub fn query_msg(name: &str, rtype: RecordType, edns: bool) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), rtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

/// Sends raw bytes from `from` and waits (2 s at most) for one reply.
pub async fn udp_raw(server: SocketAddr, from: Ipv4Addr, bytes: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind((from, 0)).await.unwrap();
    sock.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

pub async fn udp(server: SocketAddr, from: Ipv4Addr, name: &str, rtype: RecordType) -> Message {
    let q = query_msg(name, rtype, true);
    let raw = udp_raw(server, from, &q.to_vec().unwrap())
        .await
        .unwrap_or_else(|| panic!("no reply for {name} {rtype}"));
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    m
}

pub async fn tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let q = query_msg(name, rtype, false).to_vec().unwrap();
    let mut s = TcpStream::connect(server).await.unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// The A/AAAA addresses of an answer, in order.
pub fn ips(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// A fake upstream on loopback (UDP and TCP). Answers every A query with
/// `answer` (TTL 300), except: `nx.*` → NXDOMAIN with an SOA (minimum 60);
/// `big.*` → truncated over UDP, 100 addresses over TCP. When `silent`,
/// it counts queries and never answers (a dead resolver).
pub struct Fake {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub tcp_hits: Arc<AtomicUsize>,
    /// The EDNS payload of the last query (0: no EDNS).
    pub last_payload: Arc<AtomicU16>,
    pub silent: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn fake_reply(req: &Message, answer: Ipv4Addr, tcp: bool) -> Message {
    let mut m = Message::response(req.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(req.queries.clone());
    if let Some(e) = &req.edns {
        let mut r = Edns::new();
        r.set_max_payload(e.max_payload());
        m.set_edns(r);
    }
    let q = &req.queries[0];
    let name = q.name().clone();
    let label = name.iter().next().map(|l| l.to_vec()).unwrap_or_default();
    let mut label = String::from_utf8_lossy(&label).to_string();
    label.make_ascii_lowercase();
    if label == "nx" {
        m.metadata.response_code = ResponseCode::NXDomain;
        let zone = name.base_name();
        m.add_authority(Record::from_rdata(
            zone.clone(),
            600,
            RData::SOA(SOA::new(zone.clone(), zone, 1, 3600, 600, 86400, 60)),
        ));
    } else if label == "big" && !tcp {
        m.metadata.truncation = true;
    } else if label == "big" {
        for i in 0..100u8 {
            m.add_answer(Record::from_rdata(
                name.clone(),
                300,
                RData::A(A(Ipv4Addr::new(10, 2, 0, i))),
            ));
        }
    } else if q.query_type() == RecordType::A {
        m.add_answer(Record::from_rdata(name, 300, RData::A(A(answer))));
    }
    m
}

pub async fn fake_upstream(ip: Ipv4Addr, answer: Ipv4Addr) -> Fake {
    let port = port();
    let addr = SocketAddr::new(IpAddr::V4(ip), port);
    let udp = Arc::new(UdpSocket::bind(addr).await.unwrap());
    let tcp = TcpListener::bind(addr).await.unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let tcp_hits = Arc::new(AtomicUsize::new(0));
    let last_payload = Arc::new(AtomicU16::new(0));
    let silent = Arc::new(AtomicBool::new(false));
    let (h, p, s) = (hits.clone(), last_payload.clone(), silent.clone());
    let t1 = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            h.fetch_add(1, Ordering::SeqCst);
            if s.load(Ordering::SeqCst) {
                continue;
            }
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            p.store(
                req.edns.as_ref().map_or(0, |e| e.max_payload()),
                Ordering::SeqCst,
            );
            let reply = fake_reply(&req, answer, false).to_vec().unwrap();
            let _ = udp.send_to(&reply, from).await;
        }
    });
    let (th, s2) = (tcp_hits.clone(), silent.clone());
    let t2 = tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = tcp.accept().await else {
                continue;
            };
            th.fetch_add(1, Ordering::SeqCst);
            if s2.load(Ordering::SeqCst) {
                continue;
            }
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                if c.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                if c.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let Ok(req) = Message::from_vec(&buf) else {
                    return;
                };
                let reply = fake_reply(&req, answer, true).to_vec().unwrap();
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                let _ = c.write_all(&framed).await;
            });
        }
    });
    Fake {
        addr,
        hits,
        tcp_hits,
        last_payload,
        silent,
        tasks: vec![t1, t2],
    }
}
