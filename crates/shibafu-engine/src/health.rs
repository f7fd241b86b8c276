//! Health checks: the `Healthcheck` test run periodically as an exec, and
//! the `io.shibafu.health.probe` TCP/HTTP probe run by the daemon with the
//! same timings; a round is healthy only when both pass.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard_stubs::models::{ContainerConfig, EndpointSettings, HealthConfig};
use chrono::Utc;
use futures::StreamExt;

use crate::ctr::Ctr;
use crate::model::{HealthLogEntry, HealthState, HealthStatus, Status};
use crate::ports::ExecSpec;
use crate::services::{probe_label, Probe};
use crate::Engine;

const MAX_OUTPUT: usize = 4096;
const KEEP_LOG: usize = 5;

/// Effective timings, Docker's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Timings {
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: i64,
}

pub fn timings(h: &HealthConfig) -> Timings {
    let d = |v: Option<i64>, def: Duration| match v {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => def,
    };
    Timings {
        interval: d(h.interval, Duration::from_secs(30)),
        timeout: d(h.timeout, Duration::from_secs(30)),
        start_period: d(h.start_period, Duration::ZERO),
        start_interval: d(h.start_interval, Duration::from_secs(5)),
        retries: h.retries.filter(|r| *r > 0).unwrap_or(3),
    }
}

/// The argv of a probe.
pub fn probe_argv(test: &[String]) -> Option<Vec<String>> {
    match test.first().map(String::as_str) {
        Some("CMD") if test.len() > 1 => Some(test[1..].to_vec()),
        Some("CMD-SHELL") if test.len() > 1 => {
            Some(vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")])
        }
        _ => None,
    }
}

/// Fold one probe result into the state (Docker's rules: failures in the
/// start period don't count; `retries` consecutive failures = unhealthy).
/// Returns true when the status changed.
pub fn apply_probe(
    state: &mut HealthState,
    entry: HealthLogEntry,
    in_start_period: bool,
    retries: i64,
) -> bool {
    let before = state.status;
    let ok = entry.exit_code == 0;
    state.log.push(entry);
    if state.log.len() > KEEP_LOG {
        let drop = state.log.len() - KEEP_LOG;
        state.log.drain(..drop);
    }
    if ok {
        state.failing_streak = 0;
        state.status = HealthStatus::Healthy;
    } else if !(in_start_period && state.status == HealthStatus::Starting) {
        state.failing_streak += 1;
        if state.failing_streak >= retries {
            state.status = HealthStatus::Unhealthy;
        }
    }
    state.status != before
}

/// Whether a container gets health tracking: a runnable healthcheck
/// (`--health-cmd`, image HEALTHCHECK) or a network probe label.
pub(crate) fn wants_health(cfg: &ContainerConfig) -> bool {
    cfg.healthcheck
        .as_ref()
        .is_some_and(crate::lifecycle::health_enabled)
        || cfg
            .labels
            .as_ref()
            .is_some_and(|l| matches!(probe_label(l), Ok(Some(_))))
}

/// Where a network probe connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    /// The container's address, reached from the daemon's namespace.
    Address(IpAddr),
    /// No address of its own (`none`, `host`, `container:`): 127.0.0.1
    /// inside the network namespace of this process.
    Netns { pid: i32 },
}

/// The target of a container's probe: its IPv4 address on its first
/// network that has one (`networks` in attach order, with their inspect
/// endpoints), else its network namespace.
pub fn probe_target(
    networks: &[crate::model::NetAttach],
    endpoints: &HashMap<String, EndpointSettings>,
    pid: i32,
) -> ProbeTarget {
    let v4 = |e: &EndpointSettings| {
        e.ip_address
            .as_deref()
            .and_then(|a| a.parse::<Ipv4Addr>().ok())
            .filter(|a| !a.is_unspecified())
    };
    networks
        .iter()
        .filter_map(|a| endpoints.get(&a.network_name))
        .find_map(v4)
        .map(|ip| ProbeTarget::Address(IpAddr::V4(ip)))
        .unwrap_or(ProbeTarget::Netns { pid })
}

/// Runs `probe` against `ip` with a deadline; (exit code, output) as a
/// health log entry shows it: 0 healthy, 1 unhealthy.
pub fn probe_blocking(probe: &Probe, ip: IpAddr, timeout: Duration, via: &str) -> (i64, String) {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::new(ip, probe.port());
    let what = match probe {
        Probe::Tcp { .. } => format!("tcp {addr}{via}"),
        Probe::Http { path, .. } => format!("http://{addr}{path}{via}"),
    };
    let left = || deadline.saturating_duration_since(Instant::now());
    let fail = |e: std::io::Error| (1, format!("{what}: {}", io_reason(&e, timeout)));
    let mut stream = match TcpStream::connect_timeout(&addr, left().max(Duration::from_millis(1))) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let Probe::Http { path, .. } = probe else {
        return (0, format!("{what}: connected"));
    };
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: shibafu-health-probe\r\nAccept: */*\r\n\r\n"
    );
    if let Err(e) = stream
        .set_write_timeout(Some(left().max(Duration::from_millis(1))))
        .and_then(|_| stream.write_all(req.as_bytes()))
    {
        return fail(e);
    }
    // Only the status line matters.
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') && buf.len() < MAX_OUTPUT {
        let t = left();
        if t.is_zero() {
            return fail(std::io::ErrorKind::TimedOut.into());
        }
        if let Err(e) = stream.set_read_timeout(Some(t)) {
            return fail(e);
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return fail(e),
        }
    }
    match parse_status_line(&buf) {
        Some((code, line)) if (200..400).contains(&code) => (0, format!("{what}: {line}")),
        Some((_, line)) => (1, format!("{what}: {line}")),
        None if buf.is_empty() => (1, format!("{what}: connection closed without a response")),
        None => (
            1,
            format!(
                "{what}: not an HTTP response: {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(80)])
            ),
        ),
    }
}

/// `HTTP/1.x NNN reason` -> (NNN, the line).
pub fn parse_status_line(buf: &[u8]) -> Option<(u16, String)> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    let line = String::from_utf8_lossy(&buf[..end]).trim_end().to_string();
    let mut w = line.split_whitespace();
    if !w.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = w
        .next()?
        .parse::<u16>()
        .ok()
        .filter(|c| (100..600).contains(c))?;
    Some((code, line))
}

/// Short reasons as Docker's and curl's logs word them.
fn io_reason(e: &std::io::Error, timeout: Duration) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset by peer".into(),
        K::TimedOut | K::WouldBlock => {
            format!("timed out after {}", humantime::format_duration(timeout))
        }
        K::HostUnreachable => "host unreachable".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        _ => e.to_string(),
    }
}

/// Runs `probe` in the network namespace of `pid` (connecting to
/// 127.0.0.1): a dedicated thread joins the namespace (setns affects only
/// the calling thread) and exits after, so no runtime thread ever changes
/// namespace.
fn probe_in_netns(
    probe: Probe,
    pid: i32,
    timeout: Duration,
) -> tokio::sync::oneshot::Receiver<(i64, String)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("health-probe".into())
        .spawn(move || {
            let r = (|| {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
                    .map_err(|e| format!("opening the network namespace of pid {pid}: {e}"))?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("entering the network namespace of pid {pid}: {e}"))?;
                Ok::<_, String>(probe_blocking(
                    &probe,
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    timeout,
                    " (in the container's network namespace)",
                ))
            })();
            let _ = tx.send(r.unwrap_or_else(|m| (-1, m)));
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "health probe thread");
    }
    rx
}

/// Folds the results of one round (the command, the probe; whichever
/// exist) into one log entry: healthy only when all passed.
fn combine(results: Vec<(i64, String)>) -> (i64, String) {
    let code = results
        .iter()
        .map(|(c, _)| *c)
        .find(|c| *c != 0)
        .unwrap_or(0);
    let output = results
        .into_iter()
        .map(|(_, o)| o)
        .filter(|o| !o.is_empty())
        .map(|o| if o.ends_with('\n') { o } else { o + "\n" })
        .collect::<String>();
    (code, output)
}

impl Engine {
    pub(crate) fn spawn_health(&self, c: Arc<Ctr>) {
        let eng = self.arc();
        let c2 = c.clone();
        let h = tokio::spawn(async move { eng.health_loop(c2).await });
        if let Some(old) = c.health_task.lock().replace(h.abort_handle()) {
            old.abort();
        }
    }

    async fn health_loop(&self, c: Arc<Ctr>) {
        let rec = c.rec();
        let hc = rec.config.healthcheck.clone().unwrap_or_default();
        let argv = hc.test.as_deref().and_then(probe_argv);
        let probe = crate::services::probe_of(&rec);
        if argv.is_none() && probe.is_none() {
            return;
        }
        // Docker's defaults when only a probe is set (no HealthConfig).
        let t = timings(&hc);
        let started = Instant::now();
        loop {
            let in_start = started.elapsed() < t.start_period;
            let wait = if in_start && hc.start_interval.is_some_and(|v| v > 0) {
                t.start_interval
            } else {
                t.interval
            };
            tokio::time::sleep(wait).await;
            match c.status() {
                Status::Running => {}
                Status::Paused => continue,
                _ => return,
            }
            let in_start = started.elapsed() < t.start_period;
            let start = Utc::now();
            let mut results = Vec::new();
            if let Some(argv) = &argv {
                results.push(self.run_probe(&c, argv, t.timeout).await);
            }
            if let Some(p) = &probe {
                results.push(self.run_net_probe(&c, p, t.timeout).await);
            }
            let (code, output) = combine(results);
            let entry = HealthLogEntry {
                start,
                end: Utc::now(),
                exit_code: code,
                output,
            };
            let mut changed = false;
            let rec = c.update(|r| {
                if let Some(h) = r.state.health.as_mut() {
                    changed = apply_probe(h, entry, in_start, t.retries);
                }
            });
            self.persist_logged(&rec);
            if changed {
                let status = rec
                    .state
                    .health
                    .as_ref()
                    .map(|h| h.status.as_str())
                    .unwrap_or("none");
                self.ctr_event(&format!("health_status: {status}"), &rec, &[]);
            }
        }
    }

    /// One TCP/HTTP probe of the running container.
    async fn run_net_probe(&self, c: &Arc<Ctr>, probe: &Probe, timeout: Duration) -> (i64, String) {
        let rec = c.rec();
        let eps = self.net().endpoints(&rec);
        let pid = rec.state.pid as i32;
        match probe_target(&rec.networks, &eps, pid) {
            ProbeTarget::Address(ip) => {
                let p = probe.clone();
                tokio::task::spawn_blocking(move || probe_blocking(&p, ip, timeout, ""))
                    .await
                    .unwrap_or_else(|e| (-1, format!("health probe task: {e}")))
            }
            ProbeTarget::Netns { pid } if pid > 0 => probe_in_netns(probe.clone(), pid, timeout)
                .await
                .unwrap_or_else(|_| (-1, "health probe thread failed".into())),
            ProbeTarget::Netns { .. } => (-1, "container is not running".into()),
        }
    }

    /// Run one probe; (exit code, first 4 KiB of output).
    async fn run_probe(&self, c: &Arc<Ctr>, argv: &[String], timeout: Duration) -> (i64, String) {
        let Some(sup) = c.supervisor() else {
            return (-1, "container is not running".into());
        };
        let rec = c.rec();
        let spec = ExecSpec {
            args: argv.to_vec(),
            env: rec.config.env.clone().unwrap_or_default(),
            cwd: rec
                .config
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            user: rec.config.user.clone().unwrap_or_default(),
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
            privileged: false,
            console_size: None,
        };
        let proc = match sup.exec(spec).await {
            Ok(p) => p,
            Err(m) => return (crate::lifecycle::start_failure_code(&m), m),
        };
        let stdio = proc.take_stdio();
        let run = async {
            let mut out = Vec::new();
            if let Some(mut s) = stdio {
                while let Some(chunk) = s.output.next().await {
                    if out.len() < MAX_OUTPUT {
                        let take = (MAX_OUTPUT - out.len()).min(chunk.data.len());
                        out.extend_from_slice(&chunk.data[..take]);
                    }
                }
            }
            let code = proc.wait().await;
            (code, String::from_utf8_lossy(&out).into_owned())
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                let pid = proc.pid();
                if pid > 0 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                (
                    -1,
                    format!(
                        "Health check exceeded timeout ({})",
                        humantime::format_duration(timeout)
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(code: i64) -> HealthLogEntry {
        HealthLogEntry {
            start: Utc::now(),
            end: Utc::now(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn probes_fold_into_status() {
        let mut h = HealthState::default();
        assert!(!apply_probe(&mut h, entry(1), true, 3));
        assert_eq!(h.status, HealthStatus::Starting);
        assert_eq!(h.failing_streak, 0, "start period failures don't count");
        assert!(apply_probe(&mut h, entry(0), true, 3));
        assert_eq!(h.status, HealthStatus::Healthy);
        assert!(!apply_probe(&mut h, entry(1), false, 2));
        assert_eq!(h.failing_streak, 1);
        assert!(apply_probe(&mut h, entry(1), false, 2));
        assert_eq!(h.status, HealthStatus::Unhealthy);
        for _ in 0..10 {
            apply_probe(&mut h, entry(1), false, 2);
        }
        assert_eq!(h.log.len(), 5);
    }

    #[test]
    fn argv_and_defaults() {
        assert_eq!(
            probe_argv(&["CMD-SHELL".into(), "curl -f x".into()]).unwrap(),
            vec!["/bin/sh", "-c", "curl -f x"]
        );
        assert_eq!(
            probe_argv(&["CMD".into(), "true".into()]).unwrap(),
            vec!["true"]
        );
        assert!(probe_argv(&["NONE".into()]).is_none());
        let t = timings(&HealthConfig::default());
        assert_eq!(t.interval, Duration::from_secs(30));
        assert_eq!(t.retries, 3);
        let t = timings(&HealthConfig {
            interval: Some(2_000_000_000),
            retries: Some(5),
            ..Default::default()
        });
        assert_eq!(t.interval, Duration::from_secs(2));
        assert_eq!(t.retries, 5);
    }

    /// A one-shot server on 127.0.0.1 answering `reply` (None: never),
    /// returning the request it read.
    fn serve_once(reply: Option<&'static str>) -> (u16, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            match reply {
                Some(r) => s.write_all(r.as_bytes()).unwrap(),
                None => std::thread::sleep(Duration::from_millis(600)),
            }
            String::from_utf8_lossy(&req).into_owned()
        });
        (port, h)
    }

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn tcp_probe_connects_or_says_why_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (code, out) = probe_blocking(&Probe::Tcp { port }, LO, Duration::from_secs(2), "");
        assert_eq!((code, out), (0, format!("tcp 127.0.0.1:{port}: connected")));
        drop(l);
        let (code, out) = probe_blocking(&Probe::Tcp { port }, LO, Duration::from_secs(2), "");
        assert_eq!(
            (code, out),
            (1, format!("tcp 127.0.0.1:{port}: connection refused"))
        );
    }

    #[test]
    fn http_probe_judges_the_status() {
        let (port, h) = serve_once(Some("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        let p = Probe::Http {
            port,
            path: "/healthz".into(),
        };
        let (code, out) = probe_blocking(&p, LO, Duration::from_secs(2), "");
        assert_eq!(code, 0, "{out}");
        assert_eq!(
            out,
            format!("http://127.0.0.1:{port}/healthz: HTTP/1.0 200 OK")
        );
        let req = h.join().unwrap();
        assert!(req.starts_with("GET /healthz HTTP/1.0\r\n"), "{req}");

        let (port, _h) = serve_once(Some("HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n"));
        let p = Probe::Http {
            port,
            path: "/".into(),
        };
        assert_eq!(probe_blocking(&p, LO, Duration::from_secs(2), "").0, 0);

        let (port, _h) = serve_once(Some("HTTP/1.1 503 Service Unavailable\r\n\r\n"));
        let p = Probe::Http {
            port,
            path: "/".into(),
        };
        assert_eq!(
            probe_blocking(&p, LO, Duration::from_secs(2), ""),
            (
                1,
                format!("http://127.0.0.1:{port}/: HTTP/1.1 503 Service Unavailable")
            )
        );

        let (port, _h) = serve_once(Some("SSH-2.0-OpenSSH\r\n"));
        let p = Probe::Http {
            port,
            path: "/".into(),
        };
        let (code, out) = probe_blocking(&p, LO, Duration::from_secs(2), "");
        assert_eq!(code, 1);
        assert!(out.contains("not an HTTP response"), "{out}");

        let (port, _h) = serve_once(None);
        let p = Probe::Http {
            port,
            path: "/".into(),
        };
        let t0 = Instant::now();
        let (code, out) = probe_blocking(&p, LO, Duration::from_millis(200), "");
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "the deadline holds"
        );
        assert_eq!(code, 1);
        assert!(out.ends_with("timed out after 200ms"), "{out}");
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 204 No Content\r\n"),
            Some((204, "HTTP/1.1 204 No Content".into()))
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204"), None, "incomplete");
        assert_eq!(parse_status_line(b"HTTP/1.1 abc x\n"), None);
        assert_eq!(parse_status_line(b"hello 200\n"), None);
    }

    #[test]
    fn probe_targets_the_first_network_with_an_address() {
        let att = |n: &str| crate::model::NetAttach {
            network_id: format!("id-{n}"),
            network_name: n.into(),
            ..Default::default()
        };
        let ep = |ip: &str| EndpointSettings {
            ip_address: Some(ip.into()),
            ..Default::default()
        };
        let eps = HashMap::from([
            ("a".to_string(), ep("")),
            ("b".to_string(), ep("10.2.0.5")),
            ("c".to_string(), ep("10.3.0.5")),
        ]);
        assert_eq!(
            probe_target(&[att("a"), att("c"), att("b")], &eps, 42),
            ProbeTarget::Address("10.3.0.5".parse().unwrap())
        );
        // `none`/`host`: no address of its own.
        let none = HashMap::from([("none".to_string(), ep(""))]);
        assert_eq!(probe_target(&[], &none, 42), ProbeTarget::Netns { pid: 42 });
    }

    #[test]
    fn a_round_is_healthy_only_when_all_pass() {
        assert_eq!(
            combine(vec![(0, "ok".into()), (0, "tcp x: connected".into())]),
            (0, "ok\ntcp x: connected\n".into())
        );
        assert_eq!(
            combine(vec![
                (0, "ok\n".into()),
                (1, "tcp x: connection refused".into())
            ])
            .0,
            1
        );
        assert_eq!(combine(vec![(-1, "t".into()), (1, "r".into())]).0, -1);
    }

    #[test]
    fn health_is_tracked_for_commands_and_probes() {
        let mut cfg = ContainerConfig::default();
        assert!(!wants_health(&cfg));
        cfg.labels = Some(HashMap::from([(
            shibafu_api::labels::HEALTH_PROBE.to_string(),
            "tcp:80".to_string(),
        )]));
        assert!(wants_health(&cfg));
        cfg.labels = None;
        cfg.healthcheck = Some(HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        });
        assert!(!wants_health(&cfg));
        cfg.healthcheck = Some(HealthConfig {
            test: Some(vec!["CMD".into(), "true".into()]),
            ..Default::default()
        });
        assert!(wants_health(&cfg));
    }
}
