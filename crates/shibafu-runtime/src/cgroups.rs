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

/// Controllers libcontainer's cgroup v1 manager knows: it creates the
/// container's directory in each of their hierarchies before the init
/// mounts anything. Other hierarchies (`name=systemd`, `rdma`, `misc`)
/// keep the cgroup the supervisor inherited from the daemon.
pub const MANAGED_V1: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// One cgroup v1 hierarchy mounted at `<root>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Directory name under the cgroup root (`memory`, `systemd`).
    pub name: String,
    /// Whether libcontainer creates the container's cgroup in it.
    pub managed: bool,
    /// This process's cgroup in it (from `/proc/self/cgroup`).
    pub own: String,
}

/// The cgroup v1 hierarchies under `root` (hybrid or legacy layouts), when
/// each can be bind-mounted into a container on its own: `None` on a
/// cgroup2-only host, or when controllers are co-mounted (`cpu,cpuacct`
/// with alias symlinks, which only libcontainer's own mount recreates).
pub fn v1_hierarchies_in(root: &Path, proc_self_cgroup: &str) -> Option<Vec<V1Hierarchy>> {
    if is_cgroup2(root) {
        return None;
    }
    let mut own: BTreeMap<&str, &str> = BTreeMap::new();
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        if let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) {
            if !ctrls.is_empty() {
                own.insert(ctrls.strip_prefix("name=").unwrap_or(ctrls), path);
            }
        }
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e.file_type().ok()?;
        if ft.is_symlink() || name.contains(',') {
            return None;
        }
        if !ft.is_dir() || name == "unified" {
            continue;
        }
        let is_v1 = nix::sys::statfs::statfs(&e.path())
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP_SUPER_MAGIC)
            .unwrap_or(false);
        if !is_v1 {
            continue;
        }
        let own = own.get(name.as_str())?.to_string();
        out.push(V1Hierarchy {
            managed: MANAGED_V1.contains(&name.as_str()),
            name,
            own,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    (!out.is_empty()).then_some(out)
}

/// [`v1_hierarchies_in`] for this host and process.
pub fn v1_hierarchies() -> Option<Vec<V1Hierarchy>> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    v1_hierarchies_in(Path::new(CGROUP_ROOT), &own)
}

/// The `cgroup.procs` file of this process's own cgroup, preferring the
/// cgroup2 hierarchy: `/proc/self/cgroup` (`hier:controllers:path` lines)
/// against the mounts under `root`. `None` when nothing fits.
pub fn own_procs_file(root: &Path, proc_self_cgroup: &str) -> Option<PathBuf> {
    let mut v1 = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hier), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if hier == "0" && ctrls.is_empty() {
            let base = if is_cgroup2(root) {
                root.to_path_buf()
            } else {
                root.join("unified")
            };
            let f = join_cg(&base, path).join("cgroup.procs");
            if f.exists() {
                return Some(f);
            }
        } else if v1.is_none() {
            // `name=systemd` is mounted as `systemd`, `cpu,cpuacct` as one dir.
            let dir = ctrls.strip_prefix("name=").unwrap_or(ctrls);
            let f = join_cg(&root.join(dir), path).join("cgroup.procs");
            if f.exists() {
                v1 = Some(f);
            }
        }
    }
    v1
}

/// Re-writes the calling thread's process into the cgroup it is already
/// in: a no-op move that still takes the kernel's cgroup attach lock (see
/// [`prime_attach_forked`]). Errors are ignored.
fn rewrite_own_cgroup() {
    if let Some(f) = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|own| own_procs_file(Path::new(CGROUP_ROOT), &own))
    {
        // "0" is the writer's own thread group: no pid to race.
        let _ = std::fs::write(f, "0");
    }
}

/// Starts the RCU grace period that creating a container (or an exec) is
/// about to wait for, so that the wait overlaps other work instead of
/// adding to it. For the single-threaded supervisor, a few ms before
/// libcontainer's intermediate process attaches itself to the container's
/// cgroups.
///
/// Every `cgroup.procs` write takes the kernel's global threadgroup rwsem
/// for writing, and a writer first waits for an RCU grace period (7-15 ms
/// here) unless another writer passed one less than a grace period ago.
/// A forked child re-writes itself into the cgroup it is already in (a
/// no-op move, which still takes the rwsem) and exits; the intermediate's
/// write then finds the grace period passed, or waits only for its rest.
/// The child is reaped with the supervisor's other children.
pub fn prime_attach_forked() {
    // SAFETY: the caller is single-threaded; the child reads two files,
    // writes one and leaves with `_exit`.
    if unsafe { libc::fork() } == 0 {
        rewrite_own_cgroup();
        unsafe { libc::_exit(0) }
    }
}

/// [`prime_attach_forked`] for the (multi-threaded) daemon, earlier in a
/// start: one long-lived thread does the writes; requests made while one
/// is pending coalesce. With both, the grace period starts when the daemon
/// begins a start and the supervisor's write keeps it passed until its
/// intermediate process writes, however long the supervisor takes.
pub fn prime_attach_background() {
    use std::sync::mpsc::{sync_channel, SyncSender};
    use std::sync::{Mutex, OnceLock};
    static PRIMER: OnceLock<Option<Mutex<SyncSender<()>>>> = OnceLock::new();
    let tx = PRIMER.get_or_init(|| {
        let (tx, rx) = sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("cgroup-primer".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    rewrite_own_cgroup();
                }
            })
            .ok()?;
        Some(Mutex::new(tx))
    });
    if let Some(Ok(tx)) = tx.as_ref().map(|t| t.lock()) {
        // Full: a prime is already pending, which serves this start too.
        let _ = tx.try_send(());
    }
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
    fn own_cgroup_and_v1_layouts() {
        let root = tempfile::tempdir().unwrap();
        let own = "9:name=systemd:/init.scope\n4:memory:/m\n0::/daemon\n";
        std::fs::create_dir_all(root.path().join("memory/m")).unwrap();
        std::fs::write(root.path().join("memory/m/cgroup.procs"), "").unwrap();
        // No cgroup2 dir: the first v1 hierarchy whose dir exists.
        assert_eq!(
            own_procs_file(root.path(), own),
            Some(root.path().join("memory/m/cgroup.procs"))
        );
        std::fs::create_dir_all(root.path().join("unified/daemon")).unwrap();
        std::fs::write(root.path().join("unified/daemon/cgroup.procs"), "").unwrap();
        assert_eq!(
            own_procs_file(root.path(), own),
            Some(root.path().join("unified/daemon/cgroup.procs"))
        );
        assert_eq!(own_procs_file(root.path(), "garbage"), None);
        // Plain directories are not cgroup mounts; co-mounts need
        // libcontainer's own mount (alias symlinks).
        assert_eq!(v1_hierarchies_in(root.path(), own), None);
        std::os::unix::fs::symlink("cpu,cpuacct", root.path().join("cpu")).unwrap();
        assert_eq!(v1_hierarchies_in(root.path(), own), None);
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
