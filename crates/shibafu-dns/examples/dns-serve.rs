//! A standalone server for benchmarks: one network on ADDR:PORT answering
//! N containers `c0..cN` (plus service `svc` over all of them), forwarding
//! to an optional upstream. Runs on one tokio thread unless THREADS says
//! otherwise, until killed.
//!
//! `dns-serve ADDR PORT N [UPSTREAM:PORT]`

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use shibafu_dns::{DnsConfig, DnsServer, Endpoint, NetworkDns, Proto, Table};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: dns-serve ADDR PORT N [UPSTREAM:PORT]");
        std::process::exit(2);
    }
    let addr: IpAddr = args[1].parse().expect("ADDR");
    let port: u16 = args[2].parse().expect("PORT");
    let n: u32 = args[3].parse().expect("N");
    let upstream: Option<SocketAddr> = args.get(4).map(|u| u.parse().expect("UPSTREAM:PORT"));
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let sockets: usize = std::env::var("SOCKETS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("runtime");
    rt.block_on(async move {
        let s = DnsServer::new(DnsConfig {
            port,
            host_upstreams: upstream.into_iter().collect(),
            udp_sockets_per_address: sockets,
            ..DnsConfig::default()
        })
        .expect("server");
        s.serve_network(NetworkDns {
            id: "bench".into(),
            name: "bench".into(),
            zone: None,
            listen: vec![addr],
            subnets: vec![],
            internal: false,
            forwarders: vec![],
        })
        .expect("serve");
        let endpoints = (0..n)
            .map(|i| Endpoint {
                container_id: format!("id{i}"),
                name: format!("c{i}"),
                hostname: None,
                aliases: vec![],
                services: if i < 8 {
                    vec![("svc".into(), 1)]
                } else {
                    vec![]
                },
                network_id: "bench".into(),
                ipv4: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 88, 0, 2)) + i)),
                ipv6: None,
                ports: vec![(80, Proto::Tcp)],
                healthy: true,
                dns_servers: vec![],
            })
            .collect();
        let errors = s.set_table(Table {
            endpoints,
            cnames: vec![],
        });
        assert!(errors.is_empty(), "{errors:?}");
        eprintln!("dns-serve: {n} containers on {addr}:{port}");
        std::future::pending::<()>().await;
    });
}
