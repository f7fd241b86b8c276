//! Where a container's cgroups live (for stats and OOM detection) and how
//! to tear them down after a crash without libcontainer's help.
//!
//! Layout: cgroup v1 controllers at `/sys/fs/cgroup/<controller><path>`,
//! plus a cgroup2 hierarchy at `/sys/fs/cgroup/unified<path>` on hybrid
//! hosts or `/sys/fs/cgroup<path>` on pure v2 hosts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::RunConfig;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A container's cgroup directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupPaths {
    /// v1 controller name (`memory`, `cpuacct`, `pids`, `blkio`, ...,
    /// `name=systemd` appears as `systemd`) -> directory.
    pub v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 directory, when a cgroup2 hierarchy is mounted.
    pub unified: Option<PathBuf>,
}

impl CgroupPaths {
    /// Every directory, v1 and v2.
    pub fn all(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.v1.values().cloned().collect();
        v.extend(self.unified.clone());
        v
    }
}

fn join_cg(base: &Path, cgroups_path: &str) -> PathBuf {
    base.join(cgroups_path.trim_start_matches('/'))
}

fn is_cgroup2(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Cgroup dirs for `cgroups_path` under `root` (normally `/sys/fs/cgroup`).
pub fn cgroup_paths_in(root: &Path, cgroups_path: &str) -> CgroupPaths {
    let mut out = CgroupPaths::default();
    if is_cgroup2(root) {
        out.unified = Some(join_cg(root, cgroups_path));
        return out;
    }
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        // Skip symlinks like `cpu -> cpu,cpuacct`: the real dir is listed too.
        if e.file_type().map(|t| t.is_symlink()).unwrap_or(true) || !path.is_dir() {
            continue;
        }
        if name == "unified" {
            out.unified = Some(join_cg(&path, cgroups_path));
        } else {
            out.v1.insert(name, join_cg(&path, cgroups_path));
        }
    }
    out
}

/// Cgroup dirs of a container on this host.
pub fn cgroup_paths(cfg: &RunConfig) -> CgroupPaths {
    cgroup_paths_in(Path::new(CGROUP_ROOT), &crate::spec::cgroups_path(cfg))
}

/// `/sys/fs/cgroup/<controller><cgroups_path>` (v1), for reading stats
/// files (`memory.usage_in_bytes`, `cpuacct.usage`, `pids.current`,
/// `blkio.throttle.io_service_bytes`, ...).
pub fn cgroup_dir(cgroups_path: &str, controller: &str) -> PathBuf {
    join_cg(&Path::new(CGROUP_ROOT).join(controller), cgroups_path)
}

/// Whether the kernel OOM-killed something in this cgroup.
pub fn oom_killed(paths: &CgroupPaths) -> bool {
    let count = |file: PathBuf| -> u64 {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    };
    if let Some(mem) = paths.v1.get("memory") {
        if count(mem.join("memory.oom_control")) > 0 {
            return true;
        }
    }
    if let Some(u) = &paths.unified {
        if count(u.join("memory.events")) > 0 {
            return true;
        }
    }
    false
}

/// The system calls teardown needs, so its keep-going logic is testable.
pub trait CgroupSys {
    fn read_procs(&self, dir: &Path) -> Option<Vec<i32>>;
    fn kill(&self, pid: i32) -> Result<(), String>;
    fn thaw(&self, dir: &Path);
    fn rmdir(&self, dir: &Path) -> Result<(), String>;
    fn exists(&self, dir: &Path) -> bool;
}

pub struct RealSys;

impl CgroupSys for RealSys {
    fn read_procs(&self, dir: &Path) -> Option<Vec<i32>> {
        let s = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
        Some(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }
    fn kill(&self, pid: i32) -> Result<(), String> {
        match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
    fn thaw(&self, dir: &Path) {
        let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
        let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
    }
    /// An emptied cgroup can refuse removal with EBUSY for a moment while
    /// the kernel finishes detaching its last task: retried briefly.
    fn rmdir(&self, dir: &Path) -> Result<(), String> {
        let mut delay = Duration::from_millis(1);
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(20));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    fn exists(&self, dir: &Path) -> bool {
        dir.exists()
    }
}

/// Sub-directories of `dir`, deepest first (for rmdir).
fn subdirs_depth_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(subdirs_depth_first(&e.path()));
                out.push(e.path());
            }
        }
    }
    out
}

/// Kills every process in the container's cgroups, then removes the cgroup
/// directories. Continues past errors; returns them all.
pub fn kill_and_remove(sys: &dyn CgroupSys, paths: &CgroupPaths, timeout: Duration) -> Vec<String> {
    let mut errors = Vec::new();
    let dirs: Vec<PathBuf> = paths.all().into_iter().filter(|d| sys.exists(d)).collect();
    for d in &dirs {
        sys.thaw(d);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut alive = 0;
        for d in &dirs {
            for pid in sys.read_procs(d).unwrap_or_default() {
                alive += 1;
                if let Err(e) = sys.kill(pid) {
                    errors.push(format!("kill {pid} in {}: {e}", d.display()));
                }
            }
        }
        if alive == 0 || Instant::now() >= deadline {
            if alive > 0 {
                errors.push(format!(
                    "{alive} processes still alive in the container's cgroups"
                ));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for d in &dirs {
        let mut all = subdirs_depth_first(d);
        all.push(d.clone());
        for sub in all {
            if let Err(e) = sys.rmdir(&sub) {
                errors.push(format!("remove cgroup {}: {e}", sub.display()));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn paths_on_a_hybrid_layout() {
        let root = tempfile::tempdir().unwrap();
        for c in ["memory", "cpuacct", "pids", "unified"] {
            std::fs::create_dir(root.path().join(c)).unwrap();
        }
        std::os::unix::fs::symlink("cpuacct", root.path().join("cpu,cpuacct")).unwrap();
        let p = cgroup_paths_in(root.path(), "/shibafu/abc");
        assert_eq!(p.v1.len(), 3);
        assert_eq!(p.v1["memory"], root.path().join("memory/shibafu/abc"));
        assert_eq!(p.unified, Some(root.path().join("unified/shibafu/abc")));
        assert_eq!(
            cgroup_dir("/shibafu/x", "pids"),
            PathBuf::from("/sys/fs/cgroup/pids/shibafu/x")
        );
    }

    #[test]
    fn oom_detection_reads_counters() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory");
        std::fs::create_dir(&mem).unwrap();
        let paths = CgroupPaths {
            v1: [("memory".to_string(), mem.clone())].into(),
            unified: None,
        };
        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        )
        .unwrap();
        assert!(!oom_killed(&paths));
        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\noom_kill 2\n",
        )
        .unwrap();
        assert!(oom_killed(&paths));
    }

    struct Fake {
        procs: RefCell<Vec<i32>>,
        killed: RefCell<Vec<i32>>,
        removed: RefCell<Vec<PathBuf>>,
    }
    impl CgroupSys for Fake {
        fn read_procs(&self, _dir: &Path) -> Option<Vec<i32>> {
            Some(self.procs.borrow().clone())
        }
        fn kill(&self, pid: i32) -> Result<(), String> {
            self.killed.borrow_mut().push(pid);
            self.procs.borrow_mut().retain(|p| *p != pid);
            if pid == 13 {
                Err("EPERM".into())
            } else {
                Ok(())
            }
        }
        fn thaw(&self, _dir: &Path) {}
        fn rmdir(&self, dir: &Path) -> Result<(), String> {
            self.removed.borrow_mut().push(dir.to_path_buf());
            if dir.ends_with("memory/x") {
                Err("EBUSY".into())
            } else {
                Ok(())
            }
        }
        fn exists(&self, _dir: &Path) -> bool {
            true
        }
    }

    #[test]
    fn teardown_keeps_going_and_reports_everything() {
        let fake = Fake {
            procs: RefCell::new(vec![12, 13]),
            killed: RefCell::new(vec![]),
            removed: RefCell::new(vec![]),
        };
        let paths = CgroupPaths {
            v1: [
                ("memory".to_string(), PathBuf::from("/nonexistent/memory/x")),
                ("pids".to_string(), PathBuf::from("/nonexistent/pids/x")),
            ]
            .into(),
            unified: Some(PathBuf::from("/nonexistent/unified/x")),
        };
        let errs = kill_and_remove(&fake, &paths, Duration::from_millis(50));
        assert_eq!(*fake.killed.borrow(), vec![12, 13]);
        assert_eq!(fake.removed.borrow().len(), 3, "every dir is attempted");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("kill 13"));
        assert!(errs[1].contains("EBUSY"));
    }
}
