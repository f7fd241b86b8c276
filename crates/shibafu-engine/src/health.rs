//! Health checks: the `Healthcheck` test run periodically as an exec.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard_stubs::models::HealthConfig;
use chrono::Utc;
use futures::StreamExt;

use crate::ctr::Ctr;
use crate::model::{HealthLogEntry, HealthState, HealthStatus, Status};
use crate::ports::ExecSpec;
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
        let Some(hc) = rec.config.healthcheck.clone() else {
            return;
        };
        let Some(argv) = hc.test.as_deref().and_then(probe_argv) else {
            return;
        };
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
            let (code, output) = self.run_probe(&c, &argv, t.timeout).await;
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
}
