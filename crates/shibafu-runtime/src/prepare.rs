//! What Docker does to a container's environment before its process runs
//! and libcontainer does not: create the working directory inside the
//! rootfs, and bring up the loopback interface of a fresh network namespace.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("invalid working directory {path}: not a directory")]
    NotADirectory { path: String },
    #[error("cannot create working directory {path}: {why}")]
    Workdir { path: String, why: String },
    #[error("bringing up loopback in the container's network namespace: {0}")]
    Loopback(io::Error),
}

/// Makes `cwd` exist as a directory inside `rootfs` (like `mkdir -p`),
/// resolving every component inside the rootfs (a symlink in the image can't
/// make us create directories on the host: libpathrs confines resolution).
/// Directories it creates belong to `uid:gid`, mode 0755, as Docker does.
pub fn ensure_workdir(rootfs: &Path, cwd: &str, uid: u32, gid: u32) -> Result<(), PrepareError> {
    if cwd.is_empty() || cwd == "/" {
        return Ok(());
    }
    let werr = |why: String| PrepareError::Workdir {
        path: cwd.to_string(),
        why,
    };
    let root = pathrs::Root::open(rootfs).map_err(|e| werr(e.to_string()))?;
    // The prefixes that don't exist yet get created, then chowned.
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut prefix = PathBuf::from("/");
    for c in Path::new(cwd).components() {
        match c {
            Component::Normal(n) => prefix.push(n),
            Component::ParentDir => {
                prefix.pop();
            }
            _ => continue,
        }
        if !missing.is_empty() {
            missing.push(prefix.clone());
            continue;
        }
        match root.resolve(&prefix) {
            Ok(h) => {
                if !is_dir(h.as_fd().as_raw_fd()) {
                    return Err(PrepareError::NotADirectory {
                        path: cwd.to_string(),
                    });
                }
            }
            Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::ENOENT)) => {
                missing.push(prefix.clone())
            }
            Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::ENOTDIR)) => {
                return Err(PrepareError::NotADirectory {
                    path: cwd.to_string(),
                })
            }
            Err(e) => return Err(werr(e.to_string())),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    root.mkdir_all(cwd, &std::fs::Permissions::from_mode(0o755))
        .map_err(|e| werr(e.to_string()))?;
    for p in &missing {
        let h = root.resolve(p).map_err(|e| werr(e.to_string()))?;
        let r = unsafe {
            libc::fchownat(
                h.as_fd().as_raw_fd(),
                c"".as_ptr(),
                uid,
                gid,
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(werr(format!(
                "chown {}: {}",
                p.display(),
                io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

fn is_dir(fd: i32) -> bool {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstatat(fd, c"".as_ptr(), &mut st, libc::AT_EMPTY_PATH) };
    r == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR
}

/// Sets `lo` up in the network namespace of `pid`. Done from a short-lived
/// thread: `setns` changes only the calling thread, and that thread ends.
pub fn loopback_up(pid: i32) -> Result<(), PrepareError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(PrepareError::Loopback)?;
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            set_up("lo")
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("loopback thread panicked")))
    })
    .map_err(PrepareError::Loopback)
}

/// SIOCGIFFLAGS / SIOCSIFFLAGS with IFF_UP on the calling thread's netns.
fn set_up(name: &str) -> io::Result<()> {
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    let _guard = FdGuard(sock);
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    if unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    if unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

struct FdGuard(i32);
impl Drop for FdGuard {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn creates_missing_workdir_owned_by_the_user() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("srv")).unwrap();
        let (uid, gid) = (unsafe { libc::geteuid() }, unsafe { libc::getegid() });
        ensure_workdir(d.path(), "/srv/app/data", uid, gid).unwrap();
        let m = std::fs::metadata(d.path().join("srv/app/data")).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.mode() & 0o777, 0o755);
        // an existing directory is fine, twice
        ensure_workdir(d.path(), "/srv/app/data", uid, gid).unwrap();
    }

    #[test]
    fn a_file_in_the_way_is_not_a_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "root").unwrap();
        let e = ensure_workdir(d.path(), "/etc/passwd", 0, 0).unwrap_err();
        assert!(
            e.to_string().contains("/etc/passwd: not a directory"),
            "{e}"
        );
        let e = ensure_workdir(d.path(), "/etc/passwd/sub", 0, 0).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn symlinks_stay_inside_the_rootfs() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let (uid, gid) = (unsafe { libc::geteuid() }, unsafe { libc::getegid() });
        std::os::unix::fs::symlink(outside.path(), d.path().join("escape")).unwrap();
        // dangling inside the rootfs: refused or not, never created outside
        let _ = ensure_workdir(d.path(), "/escape/x", uid, gid);
        assert!(
            !outside.path().join("x").exists(),
            "created outside the rootfs"
        );
        // the absolute link target is resolved inside the rootfs instead
        let target = d.path().join(outside.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&target).unwrap();
        ensure_workdir(d.path(), "/escape/x", uid, gid).unwrap();
        assert!(
            !outside.path().join("x").exists(),
            "created outside the rootfs"
        );
        let inside = target.join("x");
        assert!(inside.is_dir());
    }
}
