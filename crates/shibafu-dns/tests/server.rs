//! The server over real sockets on loopback, with fake upstreams of the
//! test's own. Never a real resolver.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use shibafu_dns::{Cname, Proto, Requester, TraceSource};

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

#[tokio::test]
async fn names_hostnames_aliases_and_zone_names_answer_a_and_aaaa() {
    let n = Net::new();
    let port = port();
    let mut web = endpoint("web", "n1", n.ip(10));
    web.hostname = Some("webhost".into());
    web.aliases = vec!["frontend".into()];
    web.ipv6 = Some("fd00::10".parse().unwrap());
    let s = server_with(
        config(port),
        vec![network("n1", "net1", n.ip(1))],
        table(vec![web]),
    )
    .await;
    let srv = sa(n.ip(1), port);
    for name in [
        "web",
        "WEB.net1.local.",
        "webhost",
        "frontend.net1.local",
        "frontend",
    ] {
        let m = udp(srv, n.ip(10), name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.metadata.authoritative);
        assert_eq!(ips(&m), vec![IpAddr::V4(n.ip(10))], "{name}");
        assert_eq!(m.answers[0].ttl, 5);
    }
    let m = udp(srv, n.ip(10), "web.net1.local", RecordType::AAAA).await;
    assert_eq!(ips(&m), vec!["fd00::10".parse::<IpAddr>().unwrap()]);
    // The question comes back exactly as asked (0x20 case randomisation).
    let q = shibafu_dns::wire::build_query(9, b"\x03wEb\x04NeT1\x05LoCaL\x00", 1);
    let r = udp_raw(srv, n.ip(10), &q).await.unwrap();
    assert_eq!(&r[12..30], &q[12..30]);
    assert_eq!(Message::from_vec(&r).unwrap().answers.len(), 1);
    drop(s);
}

#[tokio::test]
async fn a_requester_sees_only_its_networks() {
    let n = Net::new();
    let port = port();
    let up = fake_upstream(n.ip(53), Ipv4Addr::new(10, 9, 9, 9)).await;
    let mut cfg = config(port);
    cfg.host_upstreams = vec![up.addr];
    let s = server_with(
        cfg,
        vec![
            network("n1", "net1", n.ip(1)),
            network("n2", "net2", n.ip(2)),
        ],
        table(vec![
            endpoint("a", "n1", n.ip(10)),
            endpoint("b", "n2", n.ip(20)),
            // c is on both networks.
            endpoint("c", "n1", n.ip(30)),
            endpoint("c", "n2", n.ip(31)),
        ]),
    )
    .await;
    // a asks for b: not in its networks; inside net2's zone it is not even
    // forwarded, a bare name goes upstream like any other unknown name.
    let m = udp(sa(n.ip(1), port), n.ip(10), "b.net2.local", RecordType::A).await;
    assert_ne!(ips(&m), vec![IpAddr::V4(n.ip(20))]);
    let m = udp(sa(n.ip(1), port), n.ip(10), "b", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))]);
    // c sees both networks, wherever it asks.
    let m = udp(sa(n.ip(1), port), n.ip(30), "b", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(n.ip(20))]);
    let m = udp(sa(n.ip(1), port), n.ip(10), "c", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(n.ip(30))]);
    // An unknown requester sees the network whose address it asked.
    let m = udp(sa(n.ip(2), port), n.ip(99), "b", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(n.ip(20))]);
    let m = udp(sa(n.ip(2), port), n.ip(99), "a.net1.local", RecordType::A).await;
    assert!(!ips(&m).contains(&IpAddr::V4(n.ip(10))));
    drop(s);
}

#[tokio::test]
async fn unknown_names_in_the_zone_are_nxdomain_at_once_with_an_soa() {
    let n = Net::new();
    let port = port();
    // A dead upstream: the zone's NXDOMAIN must not wait for it.
    let up = fake_upstream(n.ip(53), Ipv4Addr::new(10, 9, 9, 9)).await;
    up.silent.store(true, Ordering::SeqCst);
    let mut cfg = config(port);
    cfg.host_upstreams = vec![up.addr];
    let s = server_with(
        cfg,
        vec![network("n1", "net1", n.ip(1))],
        table(vec![endpoint("web", "n1", n.ip(10))]),
    )
    .await;
    let t = Instant::now();
    let m = udp(
        sa(n.ip(1), port),
        n.ip(10),
        "nothere.net1.local",
        RecordType::A,
    )
    .await;
    assert!(t.elapsed() < Duration::from_millis(250));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(m.authorities[0].data, RData::SOA(_)));
    // An existing name without AAAA: NODATA, also local.
    let m = udp(sa(n.ip(1), port), n.ip(10), "web", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(up.hits.load(Ordering::SeqCst), 0);
    drop(s);
}

#[tokio::test]
async fn ptr_and_srv_records() {
    let n = Net::new();
    let port = port();
    let mut db = endpoint("db", "n1", n.ip(10));
    db.services = vec![("sql".into(), 7)];
    db.ports = vec![(5432, Proto::Tcp)];
    db.ipv6 = Some("fd00::a".parse().unwrap());
    let mut net = network("n1", "net1", n.ip(1));
    net.subnets = vec![format!("{}/24", n.ip(0)).parse().unwrap()];
    let s = server_with(config(port), vec![net], table(vec![db])).await;
    let srv = sa(n.ip(1), port);
    let rev = format!("10.{}.{}.127.in-addr.arpa.", n.c, n.b);
    let m = udp(srv, n.ip(10), &rev, RecordType::PTR).await;
    match &m.answers[0].data {
        RData::PTR(p) => assert_eq!(p.0.to_string(), "db.net1.local."),
        o => panic!("{o:?}"),
    }
    let m = udp(
        srv,
        n.ip(10),
        "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
        RecordType::PTR,
    )
    .await;
    assert_eq!(m.answers.len(), 1);
    // An address of the subnet without a container: NXDOMAIN, not forwarded.
    let rev = format!("77.{}.{}.127.in-addr.arpa.", n.c, n.b);
    let m = udp(srv, n.ip(10), &rev, RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

    let m = udp(srv, n.ip(10), "_5432._tcp.sql.net1.local", RecordType::SRV).await;
    match &m.answers[0].data {
        RData::SRV(s) => {
            assert_eq!(s.port, 5432);
            assert_eq!(s.weight, 7);
            assert_eq!(s.target.to_string(), "db.net1.local.");
        }
        o => panic!("{o:?}"),
    }
    // The target's addresses ride along in the additional section.
    let extra: Vec<_> = m
        .additionals
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .collect();
    assert_eq!(extra.len(), 1);
    let m = udp(srv, n.ip(10), "_5432._tcp.db", RecordType::SRV).await;
    assert_eq!(m.answers.len(), 1);
    drop(s);
}

#[tokio::test]
async fn services_rotate_over_healthy_instances_with_weights() {
    let n = Net::new();
    let port = port();
    let mut eps = Vec::new();
    for (i, w) in [(11u8, 3u16), (12, 1), (13, 1)] {
        let mut e = endpoint(&format!("api-{i}"), "n1", n.ip(i));
        e.services = vec![("api".into(), w)];
        eps.push(e);
    }
    eps[2].healthy = false;
    let s = server_with(
        config(port),
        vec![network("n1", "net1", n.ip(1))],
        table(eps.clone()),
    )
    .await;
    let srv = sa(n.ip(1), port);
    let mut firsts = Vec::new();
    for _ in 0..40 {
        let m = udp(srv, n.ip(99), "api.net1.local", RecordType::A).await;
        let got = ips(&m);
        // All healthy instances, never the unhealthy one.
        assert_eq!(got.len(), 2);
        assert!(!got.contains(&IpAddr::V4(n.ip(13))));
        firsts.push(got[0]);
    }
    let heavy = firsts
        .iter()
        .filter(|ip| **ip == IpAddr::V4(n.ip(11)))
        .count();
    assert_eq!(
        heavy, 30,
        "weight 3:1 puts the heavy instance first 3 times in 4"
    );
    // Health comes back: the table is swapped and the instance answers again.
    eps[2].healthy = true;
    s.set_table(table(eps));
    let m = udp(srv, n.ip(99), "api", RecordType::A).await;
    assert_eq!(ips(&m).len(), 3);
    // The unhealthy container keeps its own name.
    drop(s);
}

#[tokio::test]
async fn shared_aliases_are_services_and_unhealthy_ones_leave() {
    let n = Net::new();
    let port = port();
    let mut a = endpoint("w1", "n1", n.ip(11));
    a.aliases = vec!["web".into()];
    let mut b = endpoint("w2", "n1", n.ip(12));
    b.aliases = vec!["web".into()];
    b.healthy = false;
    let s = server_with(
        config(port),
        vec![network("n1", "net1", n.ip(1))],
        table(vec![a, b]),
    )
    .await;
    let srv = sa(n.ip(1), port);
    let m = udp(srv, n.ip(99), "web", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(n.ip(11))]);
    let m = udp(srv, n.ip(99), "w2", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(n.ip(12))]);
    drop(s);
}

#[tokio::test]
async fn forwarding_caches_positive_and_negative_answers_and_passes_edns() {
    let n = Net::new();
    let port = port();
    let up = fake_upstream(n.ip(53), Ipv4Addr::new(10, 1, 2, 3)).await;
    let mut cfg = config(port);
    cfg.host_upstreams = vec![up.addr];
    let s = server_with(cfg, vec![network("n1", "net1", n.ip(1))], table(vec![])).await;
    let srv = sa(n.ip(1), port);
    let m = udp(srv, n.ip(10), "ext.example", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))]);
    assert!(!m.metadata.authoritative);
    assert_eq!(
        up.last_payload.load(Ordering::SeqCst),
        1232,
        "EDNS passed through"
    );
    assert!(m.edns.is_some());
    let m = udp(srv, n.ip(10), "EXT.example", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))]);
    assert!(m.answers[0].ttl <= 300);
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        1,
        "second answer from the cache"
    );
    for _ in 0..2 {
        let m = udp(srv, n.ip(10), "nx.example", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 2, "NXDOMAIN cached too");
    let report = s
        .dns_trace("ext.example", "A", Requester::Network("n1".into()))
        .await
        .unwrap();
    assert_eq!(report.source, TraceSource::Cache);
    s.flush_cache();
    let report = s
        .dns_trace("ext.example", "A", Requester::Network("n1".into()))
        .await
        .unwrap();
    assert_eq!(report.source, TraceSource::Upstream(up.addr));
    assert_eq!(report.answers[0].data, "10.1.2.3");
}

#[tokio::test]
async fn truncated_upstream_answers_are_retried_over_tcp() {
    let n = Net::new();
    let port = port();
    let up = fake_upstream(n.ip(53), Ipv4Addr::new(10, 1, 2, 3)).await;
    let mut cfg = config(port);
    cfg.host_upstreams = vec![up.addr];
    let s = server_with(cfg, vec![network("n1", "net1", n.ip(1))], table(vec![])).await;
    // Over UDP the 100 addresses do not fit: the client gets TC…
    let m = udp(sa(n.ip(1), port), n.ip(10), "big.example", RecordType::A).await;
    assert!(m.metadata.truncation);
    assert_eq!(
        up.tcp_hits.load(Ordering::SeqCst),
        1,
        "upstream asked over TCP"
    );
    // …and over TCP the whole answer, from the cache.
    let m = tcp(sa(n.ip(1), port), "big.example", RecordType::A).await;
    assert_eq!(ips(&m).len(), 100);
    assert_eq!(up.tcp_hits.load(Ordering::SeqCst), 1);
    drop(s);
}

#[tokio::test]
async fn a_dead_upstream_is_skipped_and_never_slows_local_names() {
    let n = Net::new();
    let port = port();
    let dead = fake_upstream(n.ip(53), Ipv4Addr::new(10, 0, 0, 1)).await;
    dead.silent.store(true, Ordering::SeqCst);
    let live = fake_upstream(n.ip(54), Ipv4Addr::new(10, 0, 0, 2)).await;
    let mut cfg = config(port);
    cfg.host_upstreams = vec![dead.addr, live.addr];
    let s = server_with(
        cfg,
        vec![network("n1", "net1", n.ip(1))],
        table(vec![endpoint("web", "n1", n.ip(10))]),
    )
    .await;
    let srv = sa(n.ip(1), port);
    // A slow forward in flight does not delay a local answer.
    let slow = tokio::spawn(async move { udp(srv, n.ip(10), "one.example", RecordType::A).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = Instant::now();
    let m = udp(srv, n.ip(10), "web", RecordType::A).await;
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(ips(&m), vec![IpAddr::V4(n.ip(10))]);
    let m = slow.await.unwrap();
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))]);
    assert!(s.upstream_is_down(dead.addr));
    // Now the dead one is skipped: no wait at all.
    let t = Instant::now();
    let m = udp(srv, n.ip(10), "two.example", RecordType::A).await;
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))]);
    assert_eq!(dead.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn servfail_within_the_budget_when_no_upstream_answers() {
    let n = Net::new();
    let port = port();
    let dead = fake_upstream(n.ip(53), Ipv4Addr::new(10, 0, 0, 1)).await;
    dead.silent.store(true, Ordering::SeqCst);
    let mut cfg = config(port);
    cfg.host_upstreams = vec![dead.addr];
    let s = server_with(cfg, vec![network("n1", "net1", n.ip(1))], table(vec![])).await;
    let t = Instant::now();
    let m = udp(sa(n.ip(1), port), n.ip(10), "x.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        t.elapsed() < Duration::from_millis(1700),
        "{:?}",
        t.elapsed()
    );
    // Marked down: the next query fails at once instead of waiting again.
    let t = Instant::now();
    let m = udp(sa(n.ip(1), port), n.ip(10), "y.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    drop(s);
}

#[tokio::test]
async fn internal_networks_never_forward_and_conditional_forwarding_routes_by_domain() {
    let n = Net::new();
    let port = port();
    let main = fake_upstream(n.ip(53), Ipv4Addr::new(10, 0, 0, 1)).await;
    let corp = fake_upstream(n.ip(54), Ipv4Addr::new(10, 0, 0, 7)).await;
    let netfw = fake_upstream(n.ip(55), Ipv4Addr::new(10, 0, 0, 9)).await;
    let mut cfg = config(port);
    cfg.host_upstreams = vec![main.addr];
    cfg.conditional = vec![shibafu_dns::ConditionalForwarder {
        domain: "corp.example".into(),
        servers: vec![corp.addr],
    }];
    let mut internal = network("n2", "secret", n.ip(2));
    internal.internal = true;
    let mut withfw = network("n3", "fw", n.ip(3));
    withfw.forwarders = vec![netfw.addr];
    let s = server_with(
        cfg,
        vec![network("n1", "net1", n.ip(1)), internal, withfw],
        table(vec![endpoint("vault", "n2", n.ip(20))]),
    )
    .await;
    let m = udp(sa(n.ip(2), port), n.ip(20), "ext.example", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let m = udp(sa(n.ip(2), port), n.ip(20), "vault", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(n.ip(20))]);
    assert_eq!(main.hits.load(Ordering::SeqCst), 0);
    let m = udp(
        sa(n.ip(1), port),
        n.ip(10),
        "host.corp.example",
        RecordType::A,
    )
    .await;
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))]);
    let m = udp(sa(n.ip(1), port), n.ip(10), "host.example", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]);
    // A network's own forwarders replace the host's resolvers.
    let m = udp(sa(n.ip(3), port), n.ip(30), "other.example", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))]);
    assert_eq!(main.hits.load(Ordering::SeqCst), 1);
    drop(s);
}

#[tokio::test]
async fn configured_cnames_are_chased_locally_and_upstream() {
    let n = Net::new();
    let port = port();
    let up = fake_upstream(n.ip(53), Ipv4Addr::new(10, 1, 2, 3)).await;
    let mut cfg = config(port);
    cfg.host_upstreams = vec![up.addr];
    let mut t = table(vec![endpoint("db", "n1", n.ip(10))]);
    t.cnames = vec![
        Cname {
            network_id: None,
            name: "database".into(),
            target: "db.net1.local".into(),
        },
        Cname {
            network_id: Some("n1".into()),
            name: "mirror".into(),
            target: "pkg.example".into(),
        },
    ];
    let s = server_with(cfg, vec![network("n1", "net1", n.ip(1))], t).await;
    let srv = sa(n.ip(1), port);
    let m = udp(srv, n.ip(10), "database", RecordType::A).await;
    assert!(matches!(&m.answers[0].data, RData::CNAME(c) if c.0.to_string() == "db.net1.local."));
    assert_eq!(ips(&m), vec![IpAddr::V4(n.ip(10))]);
    let m = udp(srv, n.ip(10), "mirror.net1.local", RecordType::A).await;
    assert!(matches!(&m.answers[0].data, RData::CNAME(_)));
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))]);
    assert_eq!(m.answers[1].name.to_string(), "pkg.example.");
    drop(s);
}

#[tokio::test]
async fn tcp_queries_and_answers_too_big_for_udp() {
    let n = Net::new();
    let port = port();
    let eps: Vec<_> = (0..120u8)
        .map(|i| {
            let mut e = endpoint(
                &format!("w{i}"),
                "n1",
                Ipv4Addr::new(127, n.b, n.c.wrapping_add(1), i),
            );
            e.services = vec![("many".into(), 1)];
            e
        })
        .collect();
    let s = server_with(
        config(port),
        vec![network("n1", "net1", n.ip(1))],
        table(eps),
    )
    .await;
    let m = udp(sa(n.ip(1), port), n.ip(99), "many", RecordType::A).await;
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    let m = tcp(sa(n.ip(1), port), "many.net1.local", RecordType::A).await;
    assert_eq!(ips(&m).len(), 120);
    let m = tcp(sa(n.ip(1), port), "w7", RecordType::A).await;
    assert_eq!(ips(&m).len(), 1);
    drop(s);
}

#[tokio::test]
async fn garbage_never_stops_the_server() {
    let n = Net::new();
    let port = port();
    let s = server_with(
        config(port),
        vec![network("n1", "net1", n.ip(1))],
        table(vec![endpoint("web", "n1", n.ip(10))]),
    )
    .await;
    let srv = sa(n.ip(1), port);
    let sock = tokio::net::UdpSocket::bind((n.ip(10), 0)).await.unwrap();
    // Short, empty, header-only, pointer loops, huge counts, random.
    let mut junk: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0; 11], vec![0xff; 12]];
    let mut l = vec![0u8; 12];
    l[5] = 1;
    l.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    junk.push(l);
    let mut counts = vec![0u8, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    counts.extend_from_slice(b"\x03web\x00\x00\x01\x00\x01");
    junk.push(counts);
    for _ in 0..500 {
        let len = rand::random::<u16>() as usize % 600;
        junk.push((0..len).map(|_| rand::random()).collect());
    }
    junk.push(vec![0u8; 60000]);
    for j in &junk {
        let _ = sock.send_to(j, srv).await;
    }
    // A FORMERR for a header with a broken question.
    let mut bad = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'a'];
    let r = udp_raw(srv, n.ip(10), &bad).await.unwrap();
    assert_eq!(&r[0..2], &[0x12, 0x34]);
    assert_eq!(r[3] & 0xF, 1);
    // A reply-bit message gets no answer (no reflection loops).
    bad[2] |= 0x80;
    assert!(udp_raw(srv, n.ip(10), &bad).await.is_none());
    let m = udp(srv, n.ip(10), "web", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(n.ip(10))]);
    // TCP: a connection sending garbage, one that stalls mid-message.
    let mut c = tokio::net::TcpStream::connect(srv).await.unwrap();
    use tokio::io::AsyncWriteExt;
    c.write_all(&[0, 200, 1, 2, 3]).await.unwrap();
    let m = tcp(srv, "web", RecordType::A).await;
    assert_eq!(ips(&m), vec![IpAddr::V4(n.ip(10))]);
    drop(s);
}

#[tokio::test]
async fn table_swaps_under_load_drop_no_query() {
    let n = Net::new();
    let port = port();
    let s = server_with(
        config(port),
        vec![network("n1", "net1", n.ip(1))],
        table(vec![endpoint("web", "n1", n.ip(10))]),
    )
    .await;
    let srv = sa(n.ip(1), port);
    let s2 = s.clone();
    let swapper = tokio::spawn(async move {
        for i in 0..200u32 {
            let mut eps = vec![endpoint("web", "n1", n.ip(10))];
            for k in 0..(i % 50) as u8 {
                eps.push(endpoint(&format!("x{k}"), "n1", n.ip(100 + k)));
            }
            s2.set_table(table(eps));
            tokio::task::yield_now().await;
        }
    });
    for _ in 0..300 {
        let m = udp(srv, n.ip(10), "web", RecordType::A).await;
        assert_eq!(ips(&m), vec![IpAddr::V4(n.ip(10))]);
    }
    swapper.await.unwrap();
}

#[tokio::test]
async fn networks_start_stop_and_trace() {
    let n = Net::new();
    let port = port();
    let mut e = endpoint("web", "n1", n.ip(10));
    e.services = vec![("svc".into(), 1)];
    let s = server_with(
        config(port),
        vec![network("n1", "net1", n.ip(1))],
        table(vec![e]),
    )
    .await;
    assert!(matches!(
        s.serve_network(network("n1", "net1", n.ip(1))),
        Err(shibafu_dns::DnsError::AlreadyServed(_))
    ));
    let r = s
        .dns_trace("svc", "A", Requester::Address(IpAddr::V4(n.ip(10))))
        .await
        .unwrap();
    assert_eq!(r.source, TraceSource::Local);
    assert_eq!(r.view, vec!["net1".to_string()]);
    assert_eq!(r.matched[0].container.as_deref(), Some("web"));
    assert_eq!(r.matched[0].matched_as, "service");
    assert_eq!(r.answers[0].data, n.ip(10).to_string());
    let r = s
        .dns_trace("nope.net1.local", "A", Requester::Network("n1".into()))
        .await
        .unwrap();
    assert_eq!(r.rcode, "NXDOMAIN");
    assert!(s
        .dns_trace("x", "BOGUS", Requester::Network("n1".into()))
        .await
        .is_err());
    // A second network on another address, then the first one stops.
    s.serve_network(network("n2", "net2", n.ip(2))).unwrap();
    s.stop_network("n1").unwrap();
    assert!(udp_raw(
        sa(n.ip(1), port),
        n.ip(10),
        &query_msg("web", RecordType::A, false).to_vec().unwrap()
    )
    .await
    .is_none());
    let m = udp(
        sa(n.ip(2), port),
        n.ip(99),
        "nope.net2.local",
        RecordType::A,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(
        s.stop_network("n1"),
        Err(shibafu_dns::DnsError::NotServed(_))
    ));
    // Binding a taken address fails cleanly and leaves nothing served.
    let taken = std::net::UdpSocket::bind((n.ip(3), port)).unwrap();
    assert!(matches!(
        s.serve_network(network("n3", "net3", n.ip(3))),
        Err(shibafu_dns::DnsError::Bind { .. })
    ));
    assert_eq!(s.networks().len(), 1);
    drop(taken);
}

/// The real `dig` (dnsutils) against the server: A, AAAA, PTR, SRV, TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_agrees() {
    if std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_err()
    {
        panic!("dig (dnsutils) is required for this test");
    }
    let n = Net::new();
    let port = port();
    let mut e = endpoint("web", "n1", n.ip(10));
    e.ipv6 = Some("fd00::10".parse().unwrap());
    e.ports = vec![(80, Proto::Tcp)];
    let s = server_with(
        config(port),
        vec![network("n1", "net1", n.ip(1))],
        table(vec![e]),
    )
    .await;
    let dig = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("dig")
            .args(args)
            .output()
            .await
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let base = |extra: &[&str]| {
        let mut v = vec![
            format!("@{}", n.ip(1)),
            "-p".into(),
            port.to_string(),
            "+short".into(),
            "+tries=1".into(),
            "+time=2".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    assert_eq!(
        dig(base(&["web.net1.local", "A"])).await,
        n.ip(10).to_string()
    );
    assert_eq!(dig(base(&["web.net1.local", "AAAA"])).await, "fd00::10");
    assert_eq!(dig(base(&["+tcp", "web", "A"])).await, n.ip(10).to_string());
    assert_eq!(
        dig(base(&["-x", &n.ip(10).to_string()])).await,
        "web.net1.local."
    );
    assert_eq!(
        dig(base(&["_80._tcp.web.net1.local", "SRV"])).await,
        "0 0 80 web.net1.local."
    );
    let full = dig(vec![
        format!("@{}", n.ip(1)),
        "-p".into(),
        port.to_string(),
        "nope.net1.local".into(),
    ])
    .await;
    assert!(full.contains("status: NXDOMAIN"), "{full}");
    drop(s);
}
