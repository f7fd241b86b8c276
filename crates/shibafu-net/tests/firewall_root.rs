//! Root tests of the firewall with real nftables and real traffic between
//! namespaces, inside a private network namespace.

mod common;

use std::net::IpAddr;
use std::process::{Child, Command};

use common::{busybox, enter_private_netns, sh, FakeContainer};
use ipnet::IpNet;
use serde_json::Value;
use shibafu_net::firewall::{
    DesiredState, Firewall, FirewallConfig, FwNetwork, FwPolicyRule, Nft, PortMapping, Proto,
    FOREIGN_RULE_COMMENT,
};
use shibafu_net::ipam::mac_for;
use shibafu_net::netlink::{host_veth_name, BridgeSpec, LinkOps, Netlink, Sysctl, VethSpec};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn attach(nl: &Netlink, c: &FakeContainer, id: &str, bridge: &str, addr: &str, gw: &str) {
    let a = net(addr);
    nl.create_veth(&VethSpec {
        host_name: host_veth_name(id, bridge),
        bridge: bridge.into(),
        netns: c.netns(),
        container_ifname: "eth0".into(),
        mtu: None,
        mac: mac_for(a.addr()),
        addresses: vec![a],
        default_gateways: vec![ip(gw)],
    })
    .await
    .unwrap();
}

fn ping(c: &FakeContainer, target: &str) -> bool {
    c.exec(&[busybox(), "ping", "-c", "1", "-W", "1", target])
        .status
        .success()
}

fn wget_in(c: Option<&FakeContainer>, url: &str) -> String {
    let args = ["timeout", "3", busybox(), "wget", "-q", "-O", "-", url];
    let o = match c {
        Some(c) => c.exec(&args),
        None => Command::new(args[0]).args(&args[1..]).output().unwrap(),
    };
    String::from_utf8_lossy(&o.stdout).to_string()
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn nat_isolation_publish_and_flush_recovery() {
    if !enter_private_netns("nat_isolation_publish_and_flush_recovery") {
        return;
    }
    sh("ip link set lo up");
    let nl = Netlink::new().unwrap();
    for (br, gw) in [
        ("sf-a", "10.81.0.1/24"),
        ("sf-b", "10.82.0.1/24"),
        ("sf-i", "10.83.0.1/24"),
    ] {
        nl.ensure_bridge(&BridgeSpec {
            name: br.into(),
            mtu: None,
            mac: None,
            addresses: vec![net(gw)],
        })
        .await
        .unwrap();
    }
    let sys = Sysctl::default();
    sys.enable_ipv4_forward().unwrap();
    sys.enable_route_localnet("sf-a").unwrap();

    let c1 = FakeContainer::start();
    let c2 = FakeContainer::start();
    let c3 = FakeContainer::start();
    let c4 = FakeContainer::start();
    attach(&nl, &c1, "c1", "sf-a", "10.81.0.2/24", "10.81.0.1").await;
    attach(&nl, &c2, "c2", "sf-a", "10.81.0.3/24", "10.81.0.1").await;
    attach(&nl, &c3, "c3", "sf-b", "10.82.0.2/24", "10.82.0.1").await;
    attach(&nl, &c4, "c4", "sf-i", "10.83.0.2/24", "10.83.0.1").await;

    // "Outside": another host on a link of its own.
    let ext = FakeContainer::start();
    let o = sh(&format!(
        "ip link add ext0 type veth peer name eth0 netns {} && ip addr add 192.0.2.1/24 dev ext0 && ip link set ext0 up",
        ext.pid()
    ));
    assert!(o.status.success(), "{o:?}");
    for cmd in [
        "ip addr add 192.0.2.2/24 dev eth0",
        "ip link set eth0 up",
        "ip link set lo up",
        "ip route add default via 192.0.2.1",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        assert!(ext.exec(&args).status.success(), "{cmd}");
    }

    // The host has a FORWARD policy drop (as with Docker or iptables-nft).
    let o = sh("nft 'add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }'");
    assert!(o.status.success(), "{o:?}");

    // Web server in c1.
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "hello-shibafu\n").unwrap();
    let _srv = Server(
        Command::new("nsenter")
            .arg(format!("--net={}", c1.netns().display()))
            .args(["--", busybox(), "httpd", "-f", "-p", "80", "-h"])
            .arg(www.path())
            .spawn()
            .unwrap(),
    );

    let state = DesiredState {
        networks: vec![
            FwNetwork {
                bridge: "sf-a".into(),
                subnets: vec![net("10.81.0.0/24")],
                internal: false,
                dns: vec![],
            },
            FwNetwork {
                bridge: "sf-b".into(),
                subnets: vec![net("10.82.0.0/24")],
                internal: false,
                dns: vec![],
            },
            FwNetwork {
                bridge: "sf-i".into(),
                subnets: vec![net("10.83.0.0/24")],
                internal: true,
                dns: vec![],
            },
        ],
        ports: vec![
            PortMapping {
                proto: Proto::Tcp,
                host_ip: None,
                host_port: 8080,
                container_ip: ip("10.81.0.2"),
                container_port: 80,
            },
            PortMapping {
                proto: Proto::Tcp,
                host_ip: Some(ip("127.0.0.1")),
                host_port: 8081,
                container_ip: ip("10.81.0.2"),
                container_port: 80,
            },
        ],
        policies: vec![],
    };
    let fw = Firewall::new(Nft::default(), FirewallConfig::default());
    let t = std::time::Instant::now();
    fw.apply(&state).unwrap();
    eprintln!("full apply: {:?}", t.elapsed());

    // The kernel has our table and the one foreign accept rule.
    let v: Value = fw.runner_list(&["list", "table", "inet", "shibafu"]);
    let chains: Vec<&str> = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["chain"]["name"].as_str())
        .collect();
    for c in ["forward", "prerouting", "output", "postrouting", "publish"] {
        assert!(chains.contains(&c), "{chains:?}");
    }
    let fwd = sh("nft list chain ip filter FORWARD");
    assert_eq!(
        String::from_utf8_lossy(&fwd.stdout)
            .matches(FOREIGN_RULE_COMMENT)
            .count(),
        1
    );

    // Wait for the server.
    for _ in 0..100 {
        if wget_in(Some(&c2), "http://10.81.0.2/").contains("hello") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    assert!(ping(&c2, "10.81.0.2"), "same network");
    assert!(!ping(&c3, "10.81.0.2"), "different networks are isolated");
    assert!(
        ping(&c1, "192.0.2.2"),
        "egress through NAT despite FORWARD policy drop"
    );
    assert!(!ping(&c4, "192.0.2.2"), "internal network has no way out");
    assert!(
        !ping(&c4, "10.81.0.2"),
        "internal network reaches no other network"
    );
    assert!(
        !ping(&ext, "10.81.0.2"),
        "unpublished container not reachable from outside"
    );
    assert!(
        wget_in(Some(&ext), "http://192.0.2.1:8080/").contains("hello-shibafu"),
        "published port from outside"
    );
    assert!(
        wget_in(None, "http://127.0.0.1:8080/").contains("hello-shibafu"),
        "wildcard publish via 127.0.0.1"
    );
    assert!(
        wget_in(None, "http://127.0.0.1:8081/").contains("hello-shibafu"),
        "127.0.0.1 publish from the host"
    );
    assert!(
        wget_in(None, "http://192.0.2.1:8080/").contains("hello-shibafu"),
        "host address from the host"
    );
    assert!(
        !wget_in(Some(&ext), "http://192.0.2.1:8081/").contains("hello"),
        "127.0.0.1 publish not on other addresses"
    );
    assert!(
        wget_in(Some(&c2), "http://192.0.2.1:8080/").contains("hello-shibafu"),
        "hairpin, same network"
    );
    assert!(
        wget_in(Some(&c1), "http://192.0.2.1:8080/").contains("hello-shibafu"),
        "hairpin to itself"
    );
    assert!(
        wget_in(Some(&c3), "http://192.0.2.1:8080/").contains("hello-shibafu"),
        "published port from another network"
    );

    // Policies, applied as deltas: allow sf-b -> sf-a on tcp/80 only,
    // then deny sf-a's own containers (deny wins over the same-network
    // default and over published ports).
    let mut sp = state.clone();
    sp.policies.push(FwPolicyRule {
        from: "sf-b".into(),
        to: "sf-a".into(),
        port: Some((Proto::Tcp, 80)),
        allow: true,
    });
    fw.apply(&sp).unwrap();
    assert!(
        wget_in(Some(&c3), "http://10.81.0.2/").contains("hello-shibafu"),
        "allowed by policy: another network on tcp/80"
    );
    assert!(!ping(&c3, "10.81.0.2"), "policy allows tcp/80 only");
    sp.policies.push(FwPolicyRule {
        from: "sf-a".into(),
        to: "sf-a".into(),
        port: None,
        allow: false,
    });
    fw.apply(&sp).unwrap();
    assert!(!ping(&c2, "10.81.0.2"), "denied by policy: same network");
    assert!(
        !wget_in(Some(&c2), "http://192.0.2.1:8080/").contains("hello"),
        "deny also covers published ports"
    );
    fw.apply(&state).unwrap();
    assert!(ping(&c2, "10.81.0.2"), "policies removed");
    assert!(!ping(&c3, "10.81.0.2"), "isolation again");

    // A delta: unpublish 8080.
    let mut s2 = state.clone();
    s2.ports.remove(0);
    let t = std::time::Instant::now();
    fw.apply(&s2).unwrap();
    eprintln!("delta apply: {:?}", t.elapsed());
    assert!(
        !wget_in(Some(&ext), "http://192.0.2.1:8080/").contains("hello"),
        "unpublished"
    );
    assert!(wget_in(None, "http://127.0.0.1:8081/").contains("hello"));

    // Flush: detected and restored.
    assert!(sh("nft flush ruleset").status.success());
    assert!(!fw.is_present());
    assert!(fw.ensure().unwrap());
    assert!(
        wget_in(None, "http://127.0.0.1:8081/").contains("hello"),
        "restored after flush"
    );
    assert!(!ping(&c3, "10.81.0.2"), "isolation restored after flush");

    // Removal leaves nothing of ours.
    sh("nft 'add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }'");
    fw.reload(&s2).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sh("nft list chain ip filter FORWARD").stdout)
            .matches(FOREIGN_RULE_COMMENT)
            .count(),
        1
    );
    fw.remove_all().unwrap();
    let all = String::from_utf8_lossy(&sh("nft list ruleset").stdout).to_string();
    assert!(!all.contains("shibafu"), "{all}");
    assert!(
        all.contains("chain FORWARD"),
        "foreign chain left alone: {all}"
    );
}

trait ListExt {
    fn runner_list(&self, args: &[&str]) -> Value;
}
impl ListExt for Firewall<Nft> {
    fn runner_list(&self, args: &[&str]) -> Value {
        use shibafu_net::firewall::NftRunner;
        self.runner().list(args).unwrap()
    }
}

/// Run `f` on a thread inside the netns at `path` (the test's own threads
/// stay in the test's netns).
fn in_netns<T: Send + 'static>(
    path: std::path::PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Whether a TCP connection from the container to `to` is accepted.
fn tcp_reaches(c: &FakeContainer, to: &str) -> bool {
    let to: std::net::SocketAddr = to.parse().unwrap();
    in_netns(c.netns(), move || {
        std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_millis(700)).is_ok()
    })
}

/// Whether a datagram from the container reaches `server`.
fn udp_reaches(c: &FakeContainer, server: &std::net::UdpSocket) -> bool {
    let to = server.local_addr().unwrap();
    in_netns(c.netns(), move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"query", to).unwrap();
    });
    server
        .set_read_timeout(Some(std::time::Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 16];
    let got = matches!(server.recv_from(&mut buf), Ok((5, _)));
    // Drain anything late so the next check starts clean.
    server.set_nonblocking(true).unwrap();
    while server.recv_from(&mut buf).is_ok() {}
    server.set_nonblocking(false).unwrap();
    got
}

fn our_input_rules() -> usize {
    String::from_utf8_lossy(&sh("nft list chain ip filter INPUT").stdout)
        .matches(shibafu_net::firewall::FOREIGN_INPUT_COMMENT)
        .count()
}

#[tokio::test]
async fn embedded_dns_reachable_through_input_policy_drop() {
    if !enter_private_netns("embedded_dns_reachable_through_input_policy_drop") {
        return;
    }
    sh("ip link set lo up");
    let nl = Netlink::new().unwrap();
    for (br, gw) in [("sf-d", "10.91.0.1/24"), ("sf-e", "10.92.0.1/24")] {
        nl.ensure_bridge(&BridgeSpec {
            name: br.into(),
            mtu: None,
            mac: None,
            addresses: vec![net(gw)],
        })
        .await
        .unwrap();
    }
    let c1 = FakeContainer::start();
    let c2 = FakeContainer::start();
    attach(&nl, &c1, "c1", "sf-d", "10.91.0.2/24", "10.91.0.1").await;
    attach(&nl, &c2, "c2", "sf-e", "10.92.0.2/24", "10.92.0.1").await;

    // "The embedded DNS" on sf-d's gateway, and a non-DNS port beside it.
    let dns_tcp = std::net::TcpListener::bind("10.91.0.1:53").unwrap();
    let dns_udp = std::net::UdpSocket::bind("10.91.0.1:53").unwrap();
    let _other = std::net::TcpListener::bind("10.91.0.1:54").unwrap();
    let _accept = std::thread::spawn(move || for _ in dns_tcp.incoming() {});

    // The host's INPUT policy is drop (iptables-nft): nothing gets in yet.
    let o = sh("nft 'add table ip filter; add chain ip filter INPUT { type filter hook input priority 0; policy drop; }'");
    assert!(o.status.success(), "{o:?}");
    assert!(
        !tcp_reaches(&c1, "10.91.0.1:53"),
        "policy drop without shibafu"
    );

    let state = DesiredState {
        networks: vec![
            FwNetwork {
                bridge: "sf-d".into(),
                subnets: vec![net("10.91.0.0/24")],
                internal: false,
                dns: vec![ip("10.91.0.1")],
            },
            FwNetwork {
                bridge: "sf-e".into(),
                subnets: vec![net("10.92.0.0/24")],
                internal: true,
                dns: vec![ip("10.92.0.1")],
            },
        ],
        ports: vec![],
        policies: vec![],
    };
    let fw = Firewall::new(Nft::default(), FirewallConfig::default());
    fw.apply(&state).unwrap();
    assert_eq!(our_input_rules(), 1);
    assert!(
        tcp_reaches(&c1, "10.91.0.1:53"),
        "DNS over TCP to the gateway"
    );
    assert!(udp_reaches(&c1, &dns_udp), "DNS over UDP to the gateway");
    assert!(
        !tcp_reaches(&c1, "10.91.0.1:54"),
        "only the DNS port is let through"
    );
    assert!(
        !tcp_reaches(&c2, "10.91.0.1:53"),
        "another network's gateway DNS stays closed"
    );

    // A firewall reload (iptables-restore) re-creates INPUT without our
    // rule: the periodic check notices and puts it back, once.
    assert!(sh("nft flush chain ip filter INPUT").status.success());
    assert!(!udp_reaches(&c1, &dns_udp), "rule gone");
    assert_eq!(
        fw.check().unwrap(),
        shibafu_net::firewall::Health::ForeignRuleMissing
    );
    assert!(fw.ensure().unwrap());
    assert!(!fw.ensure().unwrap());
    assert_eq!(our_input_rules(), 1);
    assert!(udp_reaches(&c1, &dns_udp), "healed");

    // Policy accept: the rule is no longer needed and goes at the next
    // reload; the chain itself is left alone.
    assert!(sh("nft 'add chain ip filter INPUT { policy accept; }'")
        .status
        .success());
    fw.reload(&state).unwrap();
    assert_eq!(our_input_rules(), 0);
    assert!(tcp_reaches(&c1, "10.91.0.1:53"));

    // Drop again, then teardown: nothing of ours stays.
    assert!(sh("nft 'add chain ip filter INPUT { policy drop; }'")
        .status
        .success());
    fw.reload(&state).unwrap();
    assert_eq!(our_input_rules(), 1);
    fw.remove_all().unwrap();
    let all = String::from_utf8_lossy(&sh("nft list ruleset").stdout).to_string();
    assert!(!all.contains("shibafu"), "{all}");
    assert!(
        all.contains("chain INPUT"),
        "foreign chain left alone: {all}"
    );
}

#[tokio::test]
async fn libnftables_in_process_matches_the_binary() {
    if !enter_private_netns("libnftables_in_process_matches_the_binary") {
        return;
    }
    use shibafu_net::firewall::NftRunner;
    // JSON deltas too: this test is about libnftables (the fallback of
    // the nfnetlink deltas, tested in nfnl_root.rs).
    let lib = Nft::library()
        .expect("libnftables.so.1 loads (Debian: libnftables1)")
        .json_only();
    assert_eq!(lib.describe(), "libnftables");
    let bin = Nft::binary_from_path();
    let mut state = DesiredState {
        networks: vec![FwNetwork {
            bridge: "sf-a".into(),
            subnets: vec![net("10.81.0.0/24"), net("fd81::/64")],
            internal: false,
            dns: vec![ip("10.81.0.1"), ip("fd81::1")],
        }],
        ports: vec![],
        policies: vec![],
    };
    let fw = Firewall::new(lib, FirewallConfig::default());
    fw.apply(&state).unwrap();
    let strip = |mut v: Value| {
        v["nftables"]
            .as_array_mut()
            .unwrap()
            .retain(|o| o.get("metainfo").is_none());
        v
    };
    let by_lib = strip(
        fw.runner()
            .list(&["list", "table", "inet", "shibafu"])
            .unwrap(),
    );
    let by_bin = strip(bin.list(&["list", "table", "inet", "shibafu"]).unwrap());
    assert_eq!(by_lib, by_bin);
    assert!(by_lib.to_string().contains("10.81.0.1"), "{by_lib}");
    // A rejected batch is an error with nft's message, and the context
    // keeps working after it.
    let e = fw
        .runner()
        .apply(&serde_json::json!({"nftables": [{"delete": {"table": {"family": "inet", "name": "no-such-table"}}}]}))
        .unwrap_err();
    assert!(e.to_string().contains("No such file or directory"), "{e}");
    // Per-change cost: deltas of one published port each.
    let t = std::time::Instant::now();
    for i in 0..50u16 {
        state.ports = vec![PortMapping {
            proto: Proto::Tcp,
            host_ip: None,
            host_port: 20000 + i,
            container_ip: ip("10.81.0.2"),
            container_port: 80,
        }];
        fw.apply(&state).unwrap();
    }
    let per_lib = t.elapsed() / 50;
    let t = std::time::Instant::now();
    let delta = serde_json::json!({"nftables": [
        {"add": {"element": {"family": "inet", "table": "shibafu", "name": "bridges", "elem": ["sf-x"]}}},
        {"delete": {"element": {"family": "inet", "table": "shibafu", "name": "bridges", "elem": ["sf-x"]}}},
    ]});
    for _ in 0..10 {
        bin.apply(&delta).unwrap();
    }
    let per_bin = t.elapsed() / 10;
    eprintln!("firewall delta: libnftables {per_lib:?}, nft binary {per_bin:?}");
    // With 1000 ports published (one container, -p 20000-20999).
    let many: Vec<PortMapping> = (0..1000u16)
        .map(|i| PortMapping {
            proto: Proto::Tcp,
            host_ip: None,
            host_port: 21000 + i,
            container_ip: ip("10.81.0.3"),
            container_port: 21000 + i,
        })
        .collect();
    state.ports.extend(many.iter().cloned());
    fw.apply(&state).unwrap();
    let t = std::time::Instant::now();
    for i in 0..20u16 {
        state.ports[0].host_port = 20100 + i;
        fw.apply(&state).unwrap();
    }
    eprintln!(
        "firewall delta with 1000 ports published: libnftables {:?}",
        t.elapsed() / 20
    );
    let listed = fw
        .runner()
        .list(&["list", "table", "inet", "shibafu"])
        .unwrap()
        .to_string();
    assert!(
        listed.contains("20119") && !listed.contains("20118") && !listed.contains("20049"),
        "last delta only"
    );
    assert!(listed.contains("21999"), "the 1000 others stay");
    fw.remove_all().unwrap();
    assert!(!fw.is_present());
}
