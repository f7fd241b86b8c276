//! `docker top`: the host's `ps`, rows limited to the container's pids.

use std::collections::HashSet;

use bollard_stubs::models::ContainerTopResponse;

use crate::error::{EngineError, Result};
use crate::Engine;

/// Keep the rows of `ps` output whose PID is in `pids`; Docker's splitting
/// (the last column takes the rest of the line).
pub fn filter_ps(output: &str, pids: &HashSet<i32>) -> Result<ContainerTopResponse> {
    let mut lines = output.lines();
    let header = lines.next().unwrap_or("");
    let titles: Vec<String> = header.split_whitespace().map(str::to_string).collect();
    let pid_col = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| EngineError::Invalid("Couldn't find PID field in ps output".into()))?;
    let mut processes = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < titles.len() {
            continue;
        }
        let Ok(pid) = fields[pid_col].parse::<i32>() else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        let n = titles.len();
        let mut row: Vec<String> = fields[..n - 1].iter().map(|s| s.to_string()).collect();
        row.push(fields[n - 1..].join(" "));
        processes.push(row);
    }
    Ok(ContainerTopResponse {
        titles: Some(titles),
        processes: Some(processes),
    })
}

/// All descendants of `root` (inclusive), from /proc.
fn descendants(root: i32) -> HashSet<i32> {
    let mut parent: Vec<(i32, i32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                    if let Some(pp) = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
                        parent.push((pid, pp));
                    }
                }
            }
        }
    }
    let mut set = HashSet::from([root]);
    loop {
        let before = set.len();
        for (p, pp) in &parent {
            if set.contains(pp) {
                set.insert(*p);
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

impl Engine {
    /// Host pids in the container: its cgroup's procs, else the init's tree.
    fn container_pids(&self, id: &str, init: i32) -> HashSet<i32> {
        for ctl in ["pids", "memory", "cpuacct", "freezer"] {
            let f = self.runtime.cgroup_dir(id, ctl).join("cgroup.procs");
            if let Ok(s) = std::fs::read_to_string(&f) {
                let set: HashSet<i32> = s.lines().filter_map(|l| l.trim().parse().ok()).collect();
                if !set.is_empty() {
                    return set;
                }
            }
        }
        descendants(init)
    }

    pub(crate) async fn top(
        &self,
        reference: &str,
        ps_args: Option<String>,
    ) -> Result<ContainerTopResponse> {
        let c = self.lookup(reference)?;
        let rec = c.rec();
        if !rec.state.status.is_live() || rec.state.pid <= 0 {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                rec.id
            )));
        }
        let pids = self.container_pids(&rec.id, rec.state.pid as i32);
        let args: Vec<String> = ps_args
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| "-ef".into())
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let out = tokio::process::Command::new("ps")
            .args(&args)
            .output()
            .await
            .map_err(|e| EngineError::Runtime(format!("running ps: {e}")))?;
        if !out.status.success() {
            return Err(EngineError::Invalid(format!(
                "ps: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        filter_ps(&String::from_utf8_lossy(&out.stdout), &pids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_container_rows_and_joins_cmd() {
        let ps = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 /sbin/init\nroot 42 1 0 10:01 ? 00:00:00 sleep 100 --flag\n";
        let r = filter_ps(ps, &HashSet::from([42])).unwrap();
        assert_eq!(r.titles.as_ref().unwrap().len(), 8);
        let p = r.processes.unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0][1], "42");
        assert_eq!(p[0][7], "sleep 100 --flag");
        assert!(filter_ps("A B\n1 2\n", &HashSet::new()).is_err());
    }

    #[test]
    fn descendants_include_self() {
        let me = std::process::id() as i32;
        assert!(descendants(me).contains(&me));
    }
}
