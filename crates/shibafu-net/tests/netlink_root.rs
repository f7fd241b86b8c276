//! Root tests of the netlink layer with real bridges, veths and traffic,
//! each inside a private network namespace of its own.

mod common;

use std::net::IpAddr;

use common::{busybox, enter_private_netns, FakeContainer};
use ipnet::IpNet;
use shibafu_net::ipam::mac_for;
use shibafu_net::netlink::{host_veth_name, BridgeSpec, LinkOps, Netlink, Sysctl, VethSpec};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn veth(c: &FakeContainer, cid: &str, addr: &str, addr6: &str) -> VethSpec {
    let a: IpNet = net(addr);
    VethSpec {
        host_name: host_veth_name(cid, "n1"),
        bridge: "sfbr-test".into(),
        netns: c.netns(),
        container_ifname: "eth0".into(),
        mtu: Some(1400),
        mac: mac_for(a.addr()),
        addresses: vec![a, net(addr6)],
        default_gateways: vec![ip("10.77.0.1"), ip("fd77::1")],
    }
}

#[tokio::test]
async fn bridge_veths_traffic_and_teardown() {
    if !enter_private_netns("bridge_veths_traffic_and_teardown") {
        return;
    }
    let nl = Netlink::new().unwrap();
    let spec = BridgeSpec {
        name: "sfbr-test".into(),
        mtu: Some(1400),
        mac: Some([0x02, 0x42, 0, 0, 0, 1]),
        addresses: vec![net("10.77.0.1/24"), net("fd77::1/64")],
    };
    let br = nl.ensure_bridge(&spec).await.unwrap();
    // Idempotent (reconcile path).
    assert_eq!(nl.ensure_bridge(&spec).await.unwrap(), br);
    Sysctl::default().enable_ipv4_forward().unwrap();
    Sysctl::default()
        .enable_route_localnet("sfbr-test")
        .unwrap();

    let c1 = FakeContainer::start();
    let c2 = FakeContainer::start();
    let t = std::time::Instant::now();
    nl.create_veth(&veth(&c1, "c1", "10.77.0.2/24", "fd77::2/64"))
        .await
        .unwrap();
    eprintln!("veth create+configure: {:?}", t.elapsed());
    nl.create_veth(&veth(&c2, "c2", "10.77.0.3/24", "fd77::3/64"))
        .await
        .unwrap();

    // Host side: both veths up on the bridge.
    let links = nl.list_links().await.unwrap();
    let bridge = links.iter().find(|l| l.name == "sfbr-test").unwrap();
    assert_eq!(bridge.kind.as_deref(), Some("bridge"));
    assert!(bridge.up);
    for cid in ["c1", "c2"] {
        let l = links
            .iter()
            .find(|l| l.name == host_veth_name(cid, "n1"))
            .unwrap();
        assert_eq!(l.kind.as_deref(), Some("veth"));
        assert_eq!(l.controller, Some(br));
        assert!(l.up);
        assert_eq!(l.mtu, Some(1400));
    }
    // Container side: eth0 with the MAC, MTU, addresses and default routes.
    let o = c1.exec(&["ip", "-o", "link", "show", "eth0"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("mtu 1400") && s.contains("02:42:0a:4d:00:02") && s.contains("UP"),
        "{s}"
    );
    let s = String::from_utf8_lossy(&c1.exec(&["ip", "-o", "addr"]).stdout).to_string();
    assert!(
        s.contains("10.77.0.2/24") && s.contains("fd77::2/64"),
        "{s}"
    );
    let s = String::from_utf8_lossy(&c1.exec(&["ip", "route"]).stdout).to_string();
    assert!(s.contains("default via 10.77.0.1 dev eth0"), "{s}");
    let s = String::from_utf8_lossy(&c1.exec(&["ip", "-6", "route"]).stdout).to_string();
    assert!(s.contains("default via fd77::1 dev eth0"), "{s}");
    let s =
        String::from_utf8_lossy(&c1.exec(&["ip", "-o", "link", "show", "lo"]).stdout).to_string();
    assert!(s.contains("UP"), "lo must be up: {s}");

    // Traffic: container -> container (v4, v6), container -> gateway, host -> container.
    for (c, target) in [
        (&c1, "10.77.0.3"),
        (&c2, "10.77.0.2"),
        (&c1, "10.77.0.1"),
        (&c1, "fd77::3"),
    ] {
        let o = c.exec(&[busybox(), "ping", "-c", "1", "-W", "2", target]);
        assert!(
            o.status.success(),
            "ping {target}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let o = common::sh(&format!("{} ping -c 1 -W 2 10.77.0.3", busybox()));
    assert!(o.status.success(), "host -> container");

    // A second attach with the same host name is refused and changes nothing.
    let e = nl
        .create_veth(&veth(&c1, "c1", "10.77.0.9/24", "fd77::9/64"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    // A failure inside the netns rolls back the host end.
    let mut bad = veth(&c2, "c3", "10.77.0.4/24", "fd77::4/64");
    bad.container_ifname = "eth1".into();
    bad.default_gateways = vec![ip("10.99.0.1")]; // unreachable gateway: route add fails
    assert!(nl.create_veth(&bad).await.is_err());
    assert!(!nl
        .list_links()
        .await
        .unwrap()
        .iter()
        .any(|l| l.name == host_veth_name("c3", "n1")));
    assert!(!String::from_utf8_lossy(&c2.exec(&["ip", "link"]).stdout).contains("eth1"));

    // Bad input is named.
    let mut nob = veth(&c1, "c4", "10.77.0.5/24", "fd77::5/64");
    nob.bridge = "nosuchbr".into();
    assert_eq!(
        nl.create_veth(&nob).await.unwrap_err().to_string(),
        "interface nosuchbr not found"
    );

    // Teardown leaves no links.
    assert!(nl.delete_link(&host_veth_name("c1", "n1")).await.unwrap());
    assert!(nl.delete_link(&host_veth_name("c2", "n1")).await.unwrap());
    assert!(!nl.delete_link(&host_veth_name("c2", "n1")).await.unwrap());
    assert!(!String::from_utf8_lossy(&c1.exec(&["ip", "link"]).stdout).contains("eth0"));
    // Down takes the bridge's routes with it at once (network rm relies on
    // it to free the subnet before the deletion completes).
    assert!(nl.routes().await.unwrap().contains(&net("10.77.0.0/24")));
    assert!(nl.set_link_down("sfbr-test").await.unwrap());
    let routes = nl.routes().await.unwrap();
    assert!(!routes.contains(&net("10.77.0.0/24")), "{routes:?}");
    assert!(!routes.contains(&net("fd77::/64")), "{routes:?}");
    assert!(!nl.set_link_down("nosuchbr").await.unwrap());
    assert!(nl.delete_link("sfbr-test").await.unwrap());
    let left: Vec<String> = nl
        .list_links()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(left, vec!["lo".to_string()]);
}

#[tokio::test]
async fn routes_and_bridge_conflicts() {
    if !enter_private_netns("routes_and_bridge_conflicts") {
        return;
    }
    let nl = Netlink::new().unwrap();
    let o = common::sh("ip link add dummy0 type veth peer name dummy1 && ip link set dummy0 up && ip addr add 10.200.0.1/16 dev dummy0 && ip route add 10.201.0.0/24 dev dummy0 && ip route");
    assert!(o.status.success(), "{o:?}");
    let routes = nl.routes().await.unwrap();
    assert!(routes.contains(&net("10.200.0.0/16")), "{routes:?}");
    assert!(routes.contains(&net("10.201.0.0/24")), "{routes:?}");
    let e = nl
        .ensure_bridge(&BridgeSpec {
            name: "dummy0".into(),
            mtu: None,
            mac: None,
            addresses: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "dummy0 exists and is not a bridge");
}
