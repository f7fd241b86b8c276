//! Root test of [`SockLb`] on the real kernel, inside a private network
//! namespace: the programs load and attach to the cgroup2 root, a connect
//! to a published 127.0.0.1 port lands on a listener at another
//! address:port (TCP, connected UDP, IPv6, wildcard), `getpeername` and
//! `recvfrom` show the address connected to, a connect from another netns
//! is untouched, and dropping the `SockLb` detaches everything.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use common::{enter_private_netns, sh};
use shibafu_net::firewall::{PortMapping, Proto};
use shibafu_net::socklb::{query_attached, Hook, SockLb};

fn pm(proto: Proto, host: Option<&str>, hport: u16, cip: &str, cport: u16) -> PortMapping {
    PortMapping {
        proto,
        host_ip: host.map(|h| h.parse().unwrap()),
        host_port: hport,
        container_ip: cip.parse().unwrap(),
        container_port: cport,
    }
}

/// A TCP server answering each connection with `tag` and the peer address
/// it saw.
fn serve(addr: &str, tag: &'static str) -> SocketAddr {
    let l = TcpListener::bind(addr).unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = write!(c, "{tag}");
        }
    });
    a
}

/// Connect, read what the server says; plus getpeername.
fn ask(to: &str) -> std::io::Result<(String, SocketAddr)> {
    let addr: SocketAddr = to.parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    let peer = s.peer_addr()?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok((out, peer))
}

/// Run `f` on a thread that has joined the netns of `pid` (setns affects
/// only the calling thread).
fn in_netns<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn connects_to_published_loopback_ports_are_translated() {
    if !enter_private_netns("connects_to_published_loopback_ports_are_translated") {
        return;
    }
    let o = sh("ip link set lo up && ip addr add 10.77.0.5/32 dev lo && \
                ip -6 addr add fd77::5/128 dev lo nodad");
    assert!(o.status.success(), "{o:?}");

    // Backends at other addresses and ports.
    let b4 = serve("10.77.0.5:9001", "backend4");
    let b6 = serve("[fd77::5]:9002", "backend6");
    let bw = serve("10.77.0.5:9004", "wildcard");
    let udp = UdpSocket::bind("10.77.0.5:9003").unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });

    let lb = SockLb::open().expect("load and attach the socket-LB programs");
    let ids = lb.prog_ids();
    assert_eq!(ids.len(), 6);
    for (hook, id) in &ids {
        let attached = query_attached(lb.cgroup(), *hook).unwrap();
        assert!(attached.contains(id), "{hook:?} {id} not in {attached:?}");
    }

    // Nothing published yet: nothing listens on 127.0.0.1:8080.
    assert!(ask("127.0.0.1:8080").is_err());

    lb.sync(&[
        pm(
            Proto::Tcp,
            Some("127.0.0.1"),
            8080,
            &b4.ip().to_string(),
            b4.port(),
        ),
        pm(
            Proto::Tcp,
            Some("::1"),
            8082,
            &b6.ip().to_string(),
            b6.port(),
        ),
        pm(Proto::Udp, Some("127.0.0.1"), 8083, "10.77.0.5", 9003),
        pm(Proto::Tcp, None, 8084, &bw.ip().to_string(), bw.port()),
    ])
    .unwrap();
    assert_eq!(lb.entries().len(), 4);

    // TCP: lands on the backend; getpeername shows what was connected to.
    let (said, peer) = ask("127.0.0.1:8080").unwrap();
    assert_eq!(said, "backend4");
    assert_eq!(peer, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    // IPv6.
    let (said, peer) = ask("[::1]:8082").unwrap();
    assert_eq!(said, "backend6");
    assert_eq!(peer, "[::1]:8082".parse::<SocketAddr>().unwrap());
    // A wildcard publish through any loopback address.
    let (said, peer) = ask("127.0.0.3:8084").unwrap();
    assert_eq!(said, "wildcard");
    assert_eq!(peer, "127.0.0.3:8084".parse::<SocketAddr>().unwrap());
    // Another port of the same address is not translated.
    assert!(ask("127.0.0.1:8081").is_err());
    // Connected UDP: the reply comes "from" the address connected to.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c.connect("127.0.0.1:8083").unwrap();
    assert_eq!(c.peer_addr().unwrap(), "127.0.0.1:8083".parse().unwrap());
    c.send(b"ping").unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(from, "127.0.0.1:8083".parse().unwrap());

    // Another network namespace is untouched: its own 127.0.0.1:8080.
    let other = std::process::Command::new("unshare")
        .args(["--net", "--", "sleep", "60"])
        .spawn()
        .unwrap();
    let pid = other.id();
    let mine = std::fs::read_link("/proc/self/ns/net").unwrap();
    while std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .as_ref()
        == Some(&mine)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = in_netns(pid, || {
        assert!(sh("ip link set lo up").status.success());
        let _ = serve("127.0.0.1:8080", "other-netns");
        ask("127.0.0.1:8080").map(|(s, p)| (s, p.ip()))
    });
    assert_eq!(
        got.unwrap(),
        (
            "other-netns".to_string(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        )
    );

    // Unpublished: no longer translated.
    lb.sync(&[pm(Proto::Tcp, None, 8084, &bw.ip().to_string(), bw.port())])
        .unwrap();
    assert!(ask("127.0.0.1:8080").is_err());
    assert_eq!(ask("127.0.0.1:8084").unwrap().0, "wildcard");

    // Dropped (as when the daemon exits): detached, nothing left.
    let cgroup = lb.cgroup().to_path_buf();
    drop(lb);
    assert!(ask("127.0.0.1:8084").is_err());
    for (hook, id) in ids {
        // Detaching is synchronous for links; the program id is gone.
        let attached = query_attached(&cgroup, hook).unwrap();
        assert!(!attached.contains(&id), "{hook:?} {id} still attached");
    }
    let mut other = other;
    let _ = other.kill();
    let _ = other.wait();
}

#[test]
fn hooks_are_distinct() {
    // Cheap sanity that runs unprivileged too.
    let names: std::collections::BTreeSet<_> = Hook::ALL.iter().map(|h| h.prog_name()).collect();
    assert_eq!(names.len(), Hook::ALL.len());
    assert!(names.iter().all(|n| n.len() <= 15));
}
