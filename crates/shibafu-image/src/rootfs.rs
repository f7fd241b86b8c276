//! Per-container OverlayFS rootfs: the image's unpacked layers as read-only
//! lower dirs (shared by every container of the image), one writable
//! `upper` and a `work` dir per container, mounted on `merged`.
//!
//! Layout of a container's rootfs dir: `upper/`, `work/`, `merged/`, and
//! `empty/` (the lower dir of an image without layers).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("image layer {} is missing", .0.display())]
    LayerMissing(PathBuf),
    #[error("mounting the container rootfs on {}: {message}", merged.display())]
    Mount { merged: PathBuf, message: String },
    #[error("unmounting {}: {source}", merged.display())]
    Unmount {
        merged: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> RootfsError {
    let context = context.into();
    move |source| RootfsError::Io { context, source }
}

/// The directories of one container's rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

fn paths(dir: &Path) -> Rootfs {
    Rootfs {
        upper: dir.join("upper"),
        work: dir.join("work"),
        merged: dir.join("merged"),
    }
}

/// Makes `dir/{upper,work,merged}` (existing ones are kept).
pub fn create(dir: &Path) -> Result<Rootfs, RootfsError> {
    let r = paths(dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o710)
        .create(dir)
        .map_err(io_err(format!("creating {}", dir.display())))?;
    for (p, mode) in [(&r.upper, 0o755), (&r.work, 0o700), (&r.merged, 0o755)] {
        match fs::DirBuilder::new().mode(mode).create(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(format!("creating {}", p.display()))(e)),
        }
    }
    Ok(r)
}

/// Mounts the overlay on `dir/merged` and returns that path. `layers` are
/// the image's layer dirs, LOWEST first. Already mounted is success.
pub fn mount(dir: &Path, layers: &[PathBuf]) -> Result<PathBuf, RootfsError> {
    let r = create(dir)?;
    if is_mounted(&r.merged) {
        return Ok(r.merged);
    }
    let mut lowers: Vec<PathBuf> = Vec::with_capacity(layers.len().max(1));
    for l in layers.iter().rev() {
        if !l.is_dir() {
            return Err(RootfsError::LayerMissing(l.clone()));
        }
        lowers.push(l.clone());
    }
    if lowers.is_empty() {
        // Overlay needs a lower dir: an image without layers gets an empty one.
        let empty = dir.join("empty");
        match fs::DirBuilder::new().mode(0o755).create(&empty) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(format!("creating {}", empty.display()))(e)),
        }
        lowers.push(empty);
    }
    let index_off = overlay_index_default_on();
    let data = overlay_options(&lowers, &r.upper, &r.work, index_off);
    if data.len() < page_size() {
        mount_legacy(&r.merged, &data).or_else(|e| match e {
            // Older kernels may not know `index`: try once without it.
            MountFail::Errno(nix::errno::Errno::EINVAL) if index_off => mount_legacy(
                &r.merged,
                &overlay_options(&lowers, &r.upper, &r.work, false),
            ),
            e => Err(e),
        })
    } else {
        // Too long for one page of mount(2) data: the new mount API takes
        // lower dirs one by one (`lowerdir+`, Linux 6.8+).
        mount_fsconfig(&r.merged, &lowers, &r.upper, &r.work, index_off)
    }
    .map_err(|e| RootfsError::Mount {
        merged: r.merged.clone(),
        message: e.to_string(),
    })?;
    Ok(r.merged)
}

/// Unmounts `dir/merged`; not mounted is success. A busy mount is detached
/// lazily (it goes away when its last user does).
pub fn unmount(dir: &Path) -> Result<(), RootfsError> {
    let merged = dir.join("merged");
    // Loop: something may be stacked on the same mount point.
    for _ in 0..16 {
        if !is_mounted(&merged) {
            return Ok(());
        }
        let res = nix::mount::umount2(&merged, nix::mount::MntFlags::empty());
        match res {
            Ok(()) => {}
            Err(nix::errno::Errno::EBUSY) => {
                nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                    RootfsError::Unmount {
                        merged: merged.clone(),
                        source: e.into(),
                    }
                })?;
            }
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(RootfsError::Unmount {
                    merged,
                    source: e.into(),
                })
            }
        }
    }
    Err(RootfsError::Unmount {
        merged,
        source: io::Error::other("still mounted after 16 unmounts"),
    })
}

/// Unmounts and deletes the whole rootfs dir; a missing dir is success.
pub fn remove(dir: &Path) -> Result<(), RootfsError> {
    if !dir.exists() {
        return Ok(());
    }
    // Never delete while mounted: that would recurse into the mount.
    unmount(dir)?;
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing {}", dir.display()))(e)),
    }
}

/// True when a mount sits exactly on `merged` (per `/proc/self/mountinfo`).
pub fn is_mounted(merged: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(merged) else {
        return false;
    };
    let Ok(info) = fs::read("/proc/self/mountinfo") else {
        return false;
    };
    mountinfo_has(&info, canon.as_os_str().as_bytes())
}

/// Whether a mount point in mountinfo text equals `target` (octal escapes
/// such as `\040` decoded).
fn mountinfo_has(info: &[u8], target: &[u8]) -> bool {
    info.split(|b| *b == b'\n').any(|line| {
        line.split(|b| *b == b' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == target)
    })
}

fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (s[i + 1] - b'0') as u32 * 64
                + (s[i + 2] - b'0') as u32 * 8
                + (s[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Overlay option paths escape `\`, `,` and `:` with a backslash.
fn escape(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | ':') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `lowerdir=<highest first>,upperdir=..,workdir=..[,index=off]`.
fn overlay_options(
    lowers_highest_first: &[PathBuf],
    upper: &Path,
    work: &Path,
    index_off: bool,
) -> String {
    let lower: Vec<String> = lowers_highest_first.iter().map(|p| escape(p)).collect();
    let mut s = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape(upper),
        escape(work)
    );
    if index_off {
        s.push_str(",index=off");
    }
    s
}

/// With `index=on` (a module default some distributions set), overlay
/// ties lower and upper together and refuses to remount them otherwise.
fn overlay_index_default_on() -> bool {
    fs::read_to_string("/sys/module/overlay/parameters/index").is_ok_and(|s| s.trim() == "Y")
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

#[derive(Debug)]
enum MountFail {
    Errno(nix::errno::Errno),
    Detailed(String),
}

impl std::fmt::Display for MountFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountFail::Errno(e) => write!(f, "{}", io::Error::from(*e)),
            MountFail::Detailed(s) => f.write_str(s),
        }
    }
}

fn mount_legacy(merged: &Path, data: &str) -> Result<(), MountFail> {
    nix::mount::mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data),
    )
    .map_err(MountFail::Errno)
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

fn cstr(s: &[u8]) -> Result<CString, MountFail> {
    CString::new(s).map_err(|_| MountFail::Detailed("path contains a NUL byte".into()))
}

/// Mount through fsopen/fsconfig/fsmount/move_mount, one `lowerdir+` per
/// layer, so the number of layers is not bounded by a page of options.
fn mount_fsconfig(
    merged: &Path,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    index_off: bool,
) -> Result<(), MountFail> {
    let name = cstr(b"overlay")?;
    // SAFETY: valid C string; the returned fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(MountFail::Detailed(format!(
            "fsopen(overlay): {} (too many layers for one mount(2) on this kernel)",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fs_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let set = |key: &str, value: &[u8]| -> Result<(), MountFail> {
        let k = cstr(key.as_bytes())?;
        let v = cstr(value)?;
        // SAFETY: valid fd and C strings.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs_fd.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(MountFail::Detailed(format!(
                "overlay option {key}: {e}{}",
                fs_log(&fs_fd)
            )));
        }
        Ok(())
    };
    for l in lowers {
        set("lowerdir+", l.as_os_str().as_bytes())?;
    }
    set("upperdir", upper.as_os_str().as_bytes())?;
    set("workdir", work.as_os_str().as_bytes())?;
    if index_off {
        set("index", b"off")?;
    }
    // SAFETY: valid fd; null key/value are what CMD_CREATE expects.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs_fd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(MountFail::Detailed(format!(
            "creating overlay: {e}{}",
            fs_log(&fs_fd)
        )));
    }
    // SAFETY: valid fd.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs_fd.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if m < 0 {
        return Err(MountFail::Detailed(format!(
            "fsmount: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: fresh descriptor we own.
    let mnt = unsafe { OwnedFd::from_raw_fd(m as i32) };
    let empty = cstr(b"")?;
    let to = cstr(merged.as_os_str().as_bytes())?;
    // SAFETY: valid fds and C strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(MountFail::Detailed(format!(
            "move_mount: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The kernel's messages about a failed fsconfig, read from the fs fd.
fn fs_log(fd: &OwnedFd) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 512];
    for _ in 0..8 {
        // SAFETY: valid fd and buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf[..n as usize]);
        out.push_str(" (");
        // Lines look like "e overlay: <message>".
        let line = line.trim();
        out.push_str(line.split_once(' ').map_or(line, |(_, m)| m));
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_put_highest_layer_first_and_escape() {
        let lowers = vec![PathBuf::from("/l/top"), PathBuf::from("/l/base")];
        assert_eq!(
            overlay_options(&lowers, Path::new("/c/upper"), Path::new("/c/work"), false),
            "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work"
        );
        assert_eq!(
            overlay_options(
                &[PathBuf::from("/a:b,c")],
                Path::new("/u"),
                Path::new("/w"),
                true
            ),
            r"lowerdir=/a\:b\,c,upperdir=/u,workdir=/w,index=off"
        );
    }

    #[test]
    fn mountinfo_parsing() {
        let info = b"22 1 0:21 / / rw - ext4 /dev/vda rw\n\
            90 22 0:50 / /var/lib/x/merged rw - overlay overlay rw,lowerdir=/a\n\
            91 22 0:51 / /tmp/with\\040space rw - tmpfs tmpfs rw\n";
        assert!(mountinfo_has(info, b"/var/lib/x/merged"));
        assert!(mountinfo_has(info, b"/tmp/with space"));
        assert!(!mountinfo_has(info, b"/var/lib/x"));
    }

    #[test]
    fn create_is_idempotent_and_unmount_of_unmounted_is_ok() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("c1");
        let r = create(&dir).unwrap();
        assert!(r.upper.is_dir() && r.work.is_dir() && r.merged.is_dir());
        assert_eq!(create(&dir).unwrap(), r);
        assert!(!is_mounted(&r.merged));
        unmount(&dir).unwrap();
        remove(&dir).unwrap();
        assert!(!dir.exists());
        remove(&dir).unwrap();
    }
}
