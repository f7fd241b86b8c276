//! Directory trees spread over the filesystem's allocation groups: the
//! per-container dirs of the engine, and the work dirs where pulls, loads
//! and imports unpack layers (a layer of many small files, unpacked right
//! after `rmi` freed another's inodes, spent a third of its CPU in the same
//! scan until `tmp/` had the attribute).
//!
//! Every start creates ~30 inodes (bundle, overlay dirs, mount points, logs,
//! sockets) and every removal deletes them. On ext2/3/4 all of them land in
//! the block group of their parent directory, so each allocation scans the
//! same group's bitmap, and on ext4 without a journal it also skips, one
//! inode-table lookup each, every inode freed there in the last 5–10 s:
//! with containers coming and going that scan made inode creation ~28% of a
//! 20-container start burst (`bench/core.sh`). The TOPDIR attribute on the
//! parents (`chattr +T`) makes the Orlov allocator treat each container's
//! directory as a top-level one and place it in a group of its own.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `FS_TOPDIR_FL` of `<linux/fs.h>`: "top of directory hierarchies".
const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;

/// Set the TOPDIR attribute on directory `dir`. `Ok(false)` when its
/// filesystem has no such attribute (tmpfs, xfs, overlay, ...), which is
/// not an error: the allocator there does not need the hint.
pub fn mark(dir: &Path) -> io::Result<bool> {
    let f = File::open(dir)?;
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } < 0 {
        return unsupported(io::Error::last_os_error());
    }
    if flags & FS_TOPDIR_FL != 0 {
        return Ok(true);
    }
    flags |= FS_TOPDIR_FL;
    // SAFETY: FS_IOC_SETFLAGS reads one int through the valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) } < 0 {
        return unsupported(io::Error::last_os_error());
    }
    Ok(true)
}

fn unsupported(e: io::Error) -> io::Result<bool> {
    match e.raw_os_error() {
        Some(libc::ENOTTY | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        assert!(mark(&d.path().join("nope")).is_err());
    }

    /// Where the filesystem has the attribute (ext4 here), it is set and
    /// stays set; elsewhere `mark` says so without failing.
    #[test]
    fn sets_the_attribute_where_the_filesystem_has_it() {
        let d = tempfile::tempdir().unwrap();
        let has = mark(d.path()).unwrap();
        let f = File::open(d.path()).unwrap();
        let mut flags: libc::c_int = 0;
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
        if has {
            assert!(r == 0 && flags & FS_TOPDIR_FL != 0, "flags {flags:#x}");
            assert!(mark(d.path()).unwrap(), "setting it twice");
        } else {
            assert!(r < 0 || flags & FS_TOPDIR_FL == 0);
        }
    }
}
