//! Root test of [`BridgeNetworks`] on the real kernel (rtnetlink, nftables,
//! sockets), inside a private network namespace: create a network, attach
//! two containers, real traffic, a published port from 127.0.0.1, then
//! tear down and check nothing is left.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command};

use common::{busybox, enter_private_netns, sh, FakeContainer};
use serde_json::Value;
use shibafu_net::bridge::{BridgeConfig, BridgeNetworks, CreateNetwork, EndpointRequest};
use shibafu_net::ipam::SubnetRequest;
use shibafu_net::ports::{display_ports, parse_publish};

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wget_host(url: &str) -> String {
    let o = Command::new("timeout")
        .args(["3", busybox(), "wget", "-q", "-O", "-", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn ping(c: &FakeContainer, target: &str) -> bool {
    c.exec(&[busybox(), "ping", "-c", "1", "-W", "2", target])
        .status
        .success()
}

fn links() -> Vec<String> {
    let o = sh("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn nft_table() -> Value {
    let o = sh("nft -j list table inet shibafu");
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Elements of a named set or map in the table listing.
fn elems(v: &Value, name: &str) -> Vec<String> {
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| {
            let s = if o["set"]["name"] == name {
                &o["set"]
            } else if o["map"]["name"] == name {
                &o["map"]
            } else {
                return None;
            };
            Some(
                s["elem"]
                    .as_array()
                    .map(|a| a.iter().map(|e| e.to_string()).collect())
                    .unwrap_or_default(),
            )
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn network_attach_publish_detach_remove() {
    if !enter_private_netns("network_attach_publish_detach_remove") {
        return;
    }
    sh("ip link set lo up");
    let data = tempfile::tempdir().unwrap();
    let nets = BridgeNetworks::open_host(BridgeConfig::new(data.path())).unwrap();
    let rep = nets.reconcile(&HashSet::new()).await.unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let def = nets.network("bridge").unwrap();
    assert_eq!(def.bridge, "shibafu0");

    let t = std::time::Instant::now();
    let front = nets
        .create_network(CreateNetwork {
            name: "frontend".into(),
            subnets: vec![SubnetRequest::parse(Some("10.88.0.0/24"), None, None).unwrap()],
            ..Default::default()
        })
        .await
        .unwrap();
    eprintln!("network create: {:?}", t.elapsed());
    assert!(links().contains(&front.bridge), "{:?}", links());

    let c1 = FakeContainer::start();
    let c2 = FakeContainer::start();
    let t = std::time::Instant::now();
    let e1 = nets
        .attach(
            "c1",
            c1.pid() as i32,
            vec![EndpointRequest::new("frontend")],
            parse_publish("8080:80").unwrap(),
        )
        .await
        .unwrap();
    eprintln!("attach with a published port: {:?}", t.elapsed());
    let e2 = nets
        .attach(
            "c2",
            c2.pid() as i32,
            vec![
                EndpointRequest::new("frontend"),
                EndpointRequest::new("bridge"),
            ],
            vec![],
        )
        .await
        .unwrap();
    let ip1 = e1[0].addresses[0].addr().to_string();
    let ip2 = e2[0].addresses[0].addr().to_string();
    assert_eq!(ip1, "10.88.0.2");
    assert_eq!(ip2, "10.88.0.3");
    let s = String::from_utf8_lossy(&c2.exec(&["ip", "-o", "addr"]).stdout).to_string();
    assert!(
        s.contains("eth0") && s.contains("eth1") && s.contains("172.17.0.2/16"),
        "{s}"
    );
    let s = String::from_utf8_lossy(&c2.exec(&["ip", "route"]).stdout).to_string();
    assert!(s.contains("default via 10.88.0.1 dev eth0"), "{s}");

    // Container <-> container.
    assert!(ping(&c1, &ip2), "c1 -> c2");
    assert!(ping(&c2, &ip1), "c2 -> c1");

    // Published port from the host's 127.0.0.1.
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "hello-bridge\n").unwrap();
    let _srv = Server(
        Command::new("nsenter")
            .arg(format!("--net={}", c1.netns().display()))
            .args(["--", busybox(), "httpd", "-f", "-p", "80", "-h"])
            .arg(www.path())
            .spawn()
            .unwrap(),
    );
    let mut got = String::new();
    for _ in 0..100 {
        got = wget_host("http://127.0.0.1:8080/");
        if got.contains("hello") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(got, "hello-bridge\n");
    let c1net = nets.endpoints("c1").unwrap();
    assert_eq!(
        display_ports(&c1net.ports, ["80/tcp"]),
        "0.0.0.0:8080->80/tcp"
    );

    // Conflicts: with c1's port, and with a host socket.
    let c3 = FakeContainer::start();
    let e = nets
        .attach(
            "c3",
            c3.pid() as i32,
            vec![EndpointRequest::new("frontend")],
            parse_publish("8080:80").unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Bind for 0.0.0.0:8080 failed: port is already allocated"
    );
    let l = std::net::TcpListener::bind("127.0.0.1:8090").unwrap();
    let e = nets
        .attach(
            "c3",
            c3.pid() as i32,
            vec![EndpointRequest::new("frontend")],
            parse_publish("8090:80").unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Bind for 0.0.0.0:8090 failed: address already in use by a process on the host"
    );
    drop(l);
    let s = String::from_utf8_lossy(&c3.exec(&["ip", "-o", "link"]).stdout).to_string();
    assert!(!s.contains("eth0"), "failed attach left an interface: {s}");

    // A flushed ruleset is detected and restored.
    assert!(sh("nft flush ruleset").status.success());
    assert!(nets.ensure_firewall().unwrap());
    assert_eq!(wget_host("http://127.0.0.1:8080/"), "hello-bridge\n");

    // In use: refused.
    assert!(nets.remove_network("frontend").await.is_err());

    // Teardown.
    for c in ["c1", "c2", "c3"] {
        let errs = nets.detach(c).await;
        assert!(errs.is_empty(), "{c}: {errs:?}");
    }
    // Veths and their addresses go in the background.
    nets.settle().await;
    assert!(!String::from_utf8_lossy(&c1.exec(&["ip", "-o", "link"]).stdout).contains("eth0"));
    assert_eq!(wget_host("http://127.0.0.1:8080/"), "");
    nets.remove_network("frontend").await.unwrap();
    nets.settle().await;

    // Nothing is left but the default network.
    let mut left = links();
    left.sort();
    assert_eq!(left, vec!["lo".to_string(), "shibafu0".to_string()]);
    let v = nft_table();
    assert_eq!(elems(&v, "bridges"), vec!["\"shibafu0\"".to_string()]);
    for m in ["dnat_any4", "dnat_any4_port", "dnat_ip4", "dnat_any6"] {
        assert!(elems(&v, m).is_empty(), "{m}: {:?}", elems(&v, m));
    }
    assert!(nets.ipam().allocations(None).unwrap().is_empty());
    let plans: Vec<String> = nets.ipam().networks().unwrap().into_keys().collect();
    assert_eq!(plans, vec![def.id.clone()]);
    assert!(nets.store().containers().unwrap().is_empty());
    assert!(nets.ports().reserved().is_empty());
}
