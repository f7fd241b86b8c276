//! `docker stats`: cgroup v1 counters, /proc/stat and the container's
//! /proc/<pid>/net/dev, in Docker's shape.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard_stubs::models::{
    ContainerBlkioStatEntry, ContainerBlkioStats, ContainerCpuStats, ContainerCpuUsage,
    ContainerMemoryStats, ContainerNetworkStats, ContainerPidsStats, ContainerStatsResponse,
    ContainerThrottlingData,
};
use chrono::Utc;
use shibafu_api::BoxStream;

use crate::ctr::Ctr;
use crate::error::Result;
use crate::Engine;

/// USER_HZ: /proc/stat and cpuacct.stat count in these.
const CLK_TCK: u64 = 100;

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat, cpuacct.stat).
pub fn parse_kv(s: &str) -> HashMap<String, u64> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// Total CPU time of the host in ns from /proc/stat's first line.
pub fn parse_system_cpu(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Some(ticks * (1_000_000_000 / CLK_TCK))
}

/// `/proc/<pid>/net/dev`, loopback left out (Docker shows container
/// interfaces only).
pub fn parse_net_dev(s: &str) -> HashMap<String, ContainerNetworkStats> {
    let mut out = HashMap::new();
    for l in s.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() < 12 {
            continue;
        }
        out.insert(
            name.to_string(),
            ContainerNetworkStats {
                rx_bytes: Some(v[0]),
                rx_packets: Some(v[1]),
                rx_errors: Some(v[2]),
                rx_dropped: Some(v[3]),
                tx_bytes: Some(v[8]),
                tx_packets: Some(v[9]),
                tx_errors: Some(v[10]),
                tx_dropped: Some(v[11]),
                endpoint_id: None,
                instance_id: None,
            },
        );
    }
    out
}

/// blkio `8:0 Read 1234` lines.
pub fn parse_blkio(s: &str) -> Vec<ContainerBlkioStatEntry> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let dev = it.next()?;
            let op = it.next()?;
            let value: u64 = it.next()?.parse().ok()?;
            let (maj, min) = dev.split_once(':')?;
            Some(ContainerBlkioStatEntry {
                major: maj.parse().ok(),
                minor: min.parse().ok(),
                op: Some(op.to_string()),
                value: Some(value),
            })
        })
        .collect()
}

fn online_cpus() -> u32 {
    crate::system::ncpu() as u32
}

impl Engine {
    /// One sample (without `precpu_stats`).
    fn sample(&self, c: &Arc<Ctr>) -> ContainerStatsResponse {
        let rec = c.rec();
        let mut out = ContainerStatsResponse {
            id: Some(rec.id.clone()),
            name: Some(format!("/{}", rec.name)),
            os_type: Some("linux".into()),
            read: Some(crate::views::date(&Utc::now())),
            num_procs: Some(0),
            ..Default::default()
        };
        if !rec.state.status.is_live() {
            out.read = Some(crate::views::date(&chrono::DateTime::<Utc>::default()));
            out.cpu_stats = Some(ContainerCpuStats::default());
            out.memory_stats = Some(ContainerMemoryStats::default());
            out.pids_stats = Some(ContainerPidsStats::default());
            out.blkio_stats = Some(ContainerBlkioStats::default());
            return out;
        }
        let cg = |ctl: &str| self.runtime.cgroup_dir(&rec.id, ctl);
        let mem = cg("memory");
        let stats = std::fs::read_to_string(mem.join("memory.stat"))
            .map(|s| parse_kv(&s))
            .unwrap_or_default();
        let limit = read_u64(&mem.join("memory.limit_in_bytes"))
            .map(|l| l.min(crate::system::mem_total() as u64));
        out.memory_stats = Some(ContainerMemoryStats {
            usage: read_u64(&mem.join("memory.usage_in_bytes")),
            max_usage: read_u64(&mem.join("memory.max_usage_in_bytes")),
            failcnt: read_u64(&mem.join("memory.failcnt")),
            limit,
            stats: Some(stats),
            ..Default::default()
        });
        let acct = cg("cpuacct");
        let percpu: Vec<u64> = std::fs::read_to_string(acct.join("cpuacct.usage_percpu"))
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let acct_stat = std::fs::read_to_string(acct.join("cpuacct.stat"))
            .map(|s| parse_kv(&s))
            .unwrap_or_default();
        let cpu_stat = std::fs::read_to_string(cg("cpu").join("cpu.stat"))
            .map(|s| parse_kv(&s))
            .unwrap_or_default();
        let ns = 1_000_000_000 / CLK_TCK;
        out.cpu_stats = Some(ContainerCpuStats {
            cpu_usage: Some(ContainerCpuUsage {
                total_usage: read_u64(&acct.join("cpuacct.usage")),
                percpu_usage: Some(percpu),
                usage_in_kernelmode: acct_stat.get("system").map(|v| v * ns),
                usage_in_usermode: acct_stat.get("user").map(|v| v * ns),
            }),
            system_cpu_usage: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| parse_system_cpu(&s)),
            online_cpus: Some(online_cpus()),
            throttling_data: Some(ContainerThrottlingData {
                periods: cpu_stat.get("nr_periods").copied(),
                throttled_periods: cpu_stat.get("nr_throttled").copied(),
                throttled_time: cpu_stat.get("throttled_time").copied(),
            }),
        });
        let pids = cg("pids");
        out.pids_stats = Some(ContainerPidsStats {
            current: read_u64(&pids.join("pids.current")),
            limit: read_u64(&pids.join("pids.max")),
        });
        let blk = cg("blkio");
        let entries = |f: &str| {
            std::fs::read_to_string(blk.join(f))
                .map(|s| parse_blkio(&s))
                .ok()
        };
        out.blkio_stats = Some(ContainerBlkioStats {
            io_service_bytes_recursive: entries("blkio.throttle.io_service_bytes_recursive")
                .or_else(|| entries("blkio.throttle.io_service_bytes")),
            io_serviced_recursive: entries("blkio.throttle.io_serviced_recursive")
                .or_else(|| entries("blkio.throttle.io_serviced")),
            ..Default::default()
        });
        if rec.state.pid > 0 {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{}/net/dev", rec.state.pid)) {
                let nets = parse_net_dev(&s);
                if !nets.is_empty() {
                    out.networks = Some(nets);
                }
            }
        }
        out
    }

    pub(crate) async fn stats(
        &self,
        reference: &str,
        stream: bool,
        one_shot: bool,
    ) -> Result<BoxStream<ContainerStatsResponse>> {
        let c = self.lookup(reference)?;
        let eng = self.arc();
        if !stream {
            let first = eng.sample(&c);
            if one_shot || !c.status().is_live() {
                let mut s = first;
                s.precpu_stats = Some(ContainerCpuStats::default());
                s.preread = Some(crate::views::date(&chrono::DateTime::<Utc>::default()));
                return Ok(Box::pin(futures::stream::iter([s])));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut s = eng.sample(&c);
            s.precpu_stats = first.cpu_stats;
            s.preread = first.read;
            return Ok(Box::pin(futures::stream::iter([s])));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut prev: Option<ContainerStatsResponse> = None;
            loop {
                if c.wait_tx.borrow().removed {
                    return;
                }
                let mut s = eng.sample(&c);
                match &prev {
                    Some(p) => {
                        s.precpu_stats = p.cpu_stats.clone();
                        s.preread = p.read.clone();
                    }
                    None => {
                        s.precpu_stats = Some(ContainerCpuStats::default());
                        s.preread = Some(crate::views::date(&chrono::DateTime::<Utc>::default()));
                    }
                }
                prev = Some(s.clone());
                if tx.send(s).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        let stat = "cpu  100 0 50 1000 10 0 5 0 0 0\ncpu0 1 2 3\n";
        assert_eq!(parse_system_cpu(stat), Some(1165 * 10_000_000));
        let dev = "Inter-|   Receive\n face |bytes\n    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  eth0: 500 5 0 1 0 0 0 0 700 7 0 2 0 0 0 0\n";
        let n = parse_net_dev(dev);
        assert_eq!(n.len(), 1);
        assert_eq!(n["eth0"].rx_bytes, Some(500));
        assert_eq!(n["eth0"].tx_dropped, Some(2));
        let b = parse_blkio("8:0 Read 4096\n8:0 Write 0\nTotal 4096\n");
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].major, Some(8));
        assert_eq!(b[0].op.as_deref(), Some("Read"));
        let kv = parse_kv("cache 10\nrss 20\n");
        assert_eq!(kv["rss"], 20);
    }
}
