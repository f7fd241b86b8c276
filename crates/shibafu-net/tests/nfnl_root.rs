//! Root tests of element deltas sent over nfnetlink ([`shibafu_net::nfnl`]):
//! the kernel's table after them must be exactly what libnftables makes of
//! the same state. Each test runs inside a private network namespace.

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{enter_private_netns, sh};
use ipnet::IpNet;
use serde_json::Value;
use shibafu_net::firewall::{
    DesiredState, Firewall, FirewallConfig, FirewallError, FwNetwork, FwPolicyRule, Nft, NftRunner,
    PortMapping, Proto,
};
use shibafu_net::nfnl::{Datum, Elem, ElemOp, NfnlError, Verb};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The real runner, counting which path each change took.
struct Counting {
    nft: Nft,
    json: AtomicUsize,
    elements: AtomicUsize,
}
impl Counting {
    fn new(nft: Nft) -> Self {
        Counting {
            nft,
            json: AtomicUsize::new(0),
            elements: AtomicUsize::new(0),
        }
    }
    fn counts(&self) -> (usize, usize) {
        (
            self.json.load(Ordering::SeqCst),
            self.elements.load(Ordering::SeqCst),
        )
    }
}
impl NftRunner for Counting {
    fn apply(&self, batch: &Value) -> Result<(), FirewallError> {
        self.json.fetch_add(1, Ordering::SeqCst);
        self.nft.apply(batch)
    }
    fn list(&self, args: &[&str]) -> Result<Value, FirewallError> {
        self.nft.list(args)
    }
    fn apply_elements(&self, ops: &[ElemOp]) -> Result<(), FirewallError> {
        let r = self.nft.apply_elements(ops);
        if r.is_ok() {
            self.elements.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

/// `nft -j list table inet shibafu`, comparable across re-creations:
/// without handles, set elements sorted (hash sets list in any order).
fn table() -> Value {
    let o = sh("nft -j list table inet shibafu");
    assert!(o.status.success(), "{o:?}");
    let mut v: Value = serde_json::from_slice(&o.stdout).unwrap();
    fn normalize(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                if let Some(Value::Array(elems)) = m.get_mut("elem") {
                    elems.sort_by_key(|e| e.to_string());
                }
                m.values_mut().for_each(normalize);
            }
            Value::Array(a) => a.iter_mut().for_each(normalize),
            _ => {}
        }
    }
    v["nftables"]
        .as_array_mut()
        .unwrap()
        .retain(|o| o.get("metainfo").is_none());
    normalize(&mut v);
    v
}

/// The table libnftables builds from `state` in one full batch.
fn json_reference(state: &DesiredState) -> Value {
    let fw = Firewall::new(Nft::default().json_only(), FirewallConfig::default());
    fw.apply(state).unwrap();
    table()
}

fn port(proto: Proto, host_ip: Option<&str>, host_port: u16, c: &str, cport: u16) -> PortMapping {
    PortMapping {
        proto,
        host_ip: host_ip.map(ip),
        host_port,
        container_ip: ip(c),
        container_port: cport,
    }
}

fn base() -> DesiredState {
    DesiredState {
        networks: vec![
            FwNetwork {
                bridge: "sf-a".into(),
                subnets: vec![net("10.81.0.0/24"), net("fd81::/64")],
                internal: false,
                dns: vec![ip("10.81.0.1"), ip("fd81::1")],
            },
            FwNetwork {
                bridge: "sf-b".into(),
                subnets: vec![net("10.82.0.0/24")],
                internal: false,
                dns: vec![ip("10.82.0.1")],
            },
            FwNetwork {
                bridge: "shibafu0".into(),
                subnets: vec![net("172.17.0.0/16")],
                internal: false,
                dns: vec![],
            },
        ],
        ports: vec![port(Proto::Tcp, None, 8080, "10.81.0.2", 80)],
        policies: vec![],
    }
}

#[test]
fn nfnetlink_deltas_give_the_same_table_as_libnftables() {
    if !enter_private_netns("nfnetlink_deltas_give_the_same_table_as_libnftables") {
        return;
    }
    let fw = Firewall::new(Counting::new(Nft::default()), FirewallConfig::default());
    assert!(fw.runner().nft.uses_nfnl());
    let mut s = base();
    fw.apply(&s).unwrap();
    assert_eq!(fw.runner().counts(), (1, 0), "first apply: the full batch");

    // Each step: applied as a delta over nfnetlink, then the kernel's
    // table compared with a full JSON apply of the same state (which
    // re-creates the table, so the next delta starts from it).
    let mut steps: Vec<(&str, DesiredState)> = Vec::new();
    // Port maps: v4/v6, host address and any, tcp/udp/sctp.
    s.ports.extend([
        port(Proto::Udp, Some("127.0.0.1"), 5353, "10.81.0.2", 53),
        port(Proto::Sctp, None, 9000, "fd81::2", 9),
        port(Proto::Tcp, Some("::1"), 8443, "fd81::3", 443),
        port(Proto::Sctp, Some("192.0.2.1"), 36412, "10.82.0.7", 36412),
        port(Proto::Udp, None, 65535, "10.82.0.7", 1),
        port(Proto::Tcp, None, 1, "fd81::2", 65535),
    ]);
    steps.push(("add port maps", s.clone()));
    s.ports
        .retain(|p| p.host_port != 9000 && p.host_port != 5353);
    steps.push(("delete port maps", s.clone()));
    // Same key, other container: delete and add of one key in one batch.
    s.ports[0].container_ip = ip("10.81.0.9");
    s.ports[0].container_port = 8000;
    steps.push(("change a port map's data", s.clone()));
    s.policies.extend([
        FwPolicyRule {
            from: "sf-b".into(),
            to: "sf-a".into(),
            port: Some((Proto::Tcp, 80)),
            allow: true,
        },
        FwPolicyRule {
            from: "sf-a".into(),
            to: "sf-b".into(),
            port: None,
            allow: false,
        },
        FwPolicyRule {
            from: "sf-a".into(),
            to: "shibafu0".into(),
            port: Some((Proto::Udp, 53)),
            allow: false,
        },
        FwPolicyRule {
            from: "shibafu0".into(),
            to: "sf-b".into(),
            port: None,
            allow: true,
        },
    ]);
    steps.push(("add policies", s.clone()));
    s.policies.remove(1);
    steps.push(("delete a policy", s.clone()));
    // Bridge and DNS sets: a network's gateways change, and a network
    // whose only elements are in plain sets comes and goes.
    s.networks[1].dns = vec![ip("10.82.0.254")];
    s.networks[0].dns = vec![ip("fd81::53")];
    steps.push(("change dns gateways", s.clone()));
    s.networks.push(FwNetwork {
        bridge: "sf-empty".into(),
        subnets: vec![],
        internal: true,
        dns: vec![ip("10.99.0.1"), ip("fd99::1")],
    });
    steps.push(("add bridge", s.clone()));
    s.networks.pop();
    steps.push(("delete bridge", s.clone()));

    for (what, state) in &steps {
        let (json_before, el_before) = fw.runner().counts();
        let t = Instant::now();
        fw.apply(state).unwrap();
        let took = t.elapsed();
        assert_eq!(
            fw.runner().counts(),
            (json_before, el_before + 1),
            "{what}: one nfnetlink batch, no libnftables"
        );
        let got = table();
        assert_eq!(got, json_reference(state), "{what}");
        eprintln!("{what}: {took:?}");
    }
    assert!(
        table().to_string().contains("36412"),
        "the states were real"
    );

    // Interval sets (a new network's subnets, v4 and v6, adjacent to
    // another network's) go over nfnetlink too, and the table is right,
    // after the add and after the remove.
    s.networks.push(FwNetwork {
        bridge: "sf-c".into(),
        subnets: vec![net("10.83.0.0/24"), net("fd83::/64")],
        internal: false,
        dns: vec![ip("10.83.0.1")],
    });
    s.networks.push(FwNetwork {
        bridge: "sf-d".into(),
        subnets: vec![net("10.83.1.0/24")],
        internal: false,
        dns: vec![],
    });
    let (j, e) = fw.runner().counts();
    fw.apply(&s).unwrap();
    assert_eq!(fw.runner().counts(), (j, e + 1));
    assert_eq!(table(), json_reference(&s));
    let mut gone = s.clone();
    gone.networks.retain(|n| n.bridge != "sf-c");
    fw.apply(&gone).unwrap();
    assert_eq!(fw.runner().counts(), (j, e + 2));
    assert_eq!(table(), json_reference(&gone));
    fw.apply(&s).unwrap();
    assert_eq!(table(), json_reference(&s));

    // An element removed behind our back: the nfnetlink delete fails, the
    // JSON delta too, and the full batch puts everything right.
    assert!(
        sh("nft delete element inet shibafu dnat_any4 '{ tcp . 8080 }'")
            .status
            .success()
    );
    let mut s2 = s.clone();
    s2.ports.remove(0);
    let (j, e) = fw.runner().counts();
    fw.apply(&s2).unwrap();
    assert_eq!(fw.runner().counts(), (j + 2, e), "JSON delta, then full");
    assert_eq!(table(), json_reference(&s2));
}

#[test]
fn a_failing_batch_changes_nothing_and_names_the_set() {
    if !enter_private_netns("a_failing_batch_changes_nothing_and_names_the_set") {
        return;
    }
    let nft = Nft::default();
    let fw = Firewall::new(Nft::default(), FirewallConfig::default());
    fw.apply(&base()).unwrap();
    let before = table();
    let tcp = |p: u16| vec![Datum::Proto(Proto::Tcp), Datum::Service(p)];
    // An addition that would succeed, then a delete of a missing element.
    let ops = [
        ElemOp {
            verb: Verb::Add,
            set: "bridges".into(),
            elems: vec![Elem::new(vec![Datum::Ifname("sf-new".into())])],
        },
        ElemOp {
            verb: Verb::Add,
            set: "dnat_any4".into(),
            elems: vec![Elem::map(tcp(7000), Datum::Addr(ip("10.81.0.5")))],
        },
        ElemOp {
            verb: Verb::Delete,
            set: "dnat_any4_port".into(),
            elems: vec![Elem::new(tcp(4444))],
        },
    ];
    let e = nft.apply_elements(&ops).unwrap_err();
    assert!(
        matches!(
            &e,
            FirewallError::Nfnl(NfnlError::Kernel { set, err, .. })
                if set == "dnat_any4_port" && err.raw_os_error() == Some(libc::ENOENT)
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "nfnetlink: deleting elements of set dnat_any4_port: No such file or directory (os error 2)"
    );
    assert_eq!(table(), before, "nothing of the batch applied");

    // A set that does not exist.
    let e = nft
        .apply_elements(&[ElemOp {
            verb: Verb::Add,
            set: "no_such_set".into(),
            elems: vec![Elem::new(vec![Datum::Ifname("x".into())])],
        }])
        .unwrap_err();
    assert!(e.to_string().contains("set no_such_set"), "{e}");
    // A key of the wrong length for the set (an ipv4 address where an
    // ifname belongs): refused by the kernel, not half-applied.
    let e = nft
        .apply_elements(&[
            ElemOp {
                verb: Verb::Add,
                set: "same".into(),
                elems: vec![Elem::new(vec![
                    Datum::Ifname("sf-x".into()),
                    Datum::Ifname("sf-x".into()),
                ])],
            },
            ElemOp {
                verb: Verb::Add,
                set: "bridges".into(),
                elems: vec![Elem::new(vec![Datum::Addr(ip("10.0.0.1"))])],
            },
        ])
        .unwrap_err();
    assert!(e.to_string().contains("set bridges"), "{e}");
    assert_eq!(table(), before);

    // The socket keeps working after errors.
    nft.apply_elements(&ops[..2]).unwrap();
    let after = table().to_string();
    assert!(
        after.contains("sf-new") && after.contains("7000"),
        "{after}"
    );

    // No table at all.
    fw.remove_all().unwrap();
    let e = nft.apply_elements(&ops[..1]).unwrap_err();
    assert!(e.to_string().contains("set bridges"), "{e}");
}

/// Per-change cost with 1000 ports published: one more port published and
/// unpublished, through libnftables (JSON) and over nfnetlink.
#[test]
fn per_change_cost_is_flat_with_1000_ports() {
    if !enter_private_netns("per_change_cost_is_flat_with_1000_ports") {
        return;
    }
    let mut s = base();
    s.ports = (0..1000u16)
        .map(|i| port(Proto::Tcp, None, 20000 + i, "10.81.0.3", 20000 + i))
        .collect();
    let extra = port(Proto::Tcp, None, 30000, "10.81.0.4", 80);
    let rounds = 20u32;
    let time = |fw: &dyn Fn(&DesiredState), s: &DesiredState| {
        let mut with = s.clone();
        with.ports.push(extra.clone());
        let t = Instant::now();
        for _ in 0..rounds {
            fw(&with);
            fw(s);
        }
        t.elapsed() / (2 * rounds)
    };
    let mut results: Vec<(String, Duration)> = Vec::new();
    for (name, nft) in [
        ("libnftables (JSON)", Nft::default().json_only()),
        ("nfnetlink", Nft::default()),
    ] {
        let fw = Firewall::new(nft, FirewallConfig::default());
        for n in [0usize, 1000] {
            let mut st = s.clone();
            st.ports.truncate(n);
            fw.reload(&st).unwrap();
            let d = time(&|x: &DesiredState| fw.apply(x).unwrap(), &st);
            eprintln!("{name}: one change with {n} ports published: {d:?}");
            results.push((format!("{name}/{n}"), d));
            let listed = table().to_string();
            assert!(!listed.contains("30000"), "the extra port is gone");
            assert_eq!(listed.contains("20999"), n == 1000);
        }
    }
    let get = |k: &str| results.iter().find(|(n, _)| n == k).unwrap().1;
    let (json, nl, nl0) = (
        get("libnftables (JSON)/1000"),
        get("nfnetlink/1000"),
        get("nfnetlink/0"),
    );
    eprintln!(
        "with 1000 ports: nfnetlink {nl:?} vs libnftables {json:?} ({:.1}x faster)",
        json.as_secs_f64() / nl.as_secs_f64()
    );
    assert!(nl < json, "nfnetlink must be cheaper: {nl:?} vs {json:?}");
    // Flat: the 1000 elements already there cost nothing (generous bound
    // for a loaded CI machine).
    assert!(
        nl < nl0 * 4 + Duration::from_millis(2),
        "{nl:?} with 1000 ports vs {nl0:?} with none"
    );
}
