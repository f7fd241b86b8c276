//! Unpacking a layer tar into a directory that OverlayFS can use as a lower
//! dir: OCI whiteouts become overlay whiteouts, nothing is ever written
//! outside the target, and no symlink from the archive is ever followed.
//!
//! The target is always a fresh directory owned by the store, so the only
//! symlinks in it are those the archive itself created; refusing to write
//! through any of them is enough to keep writes inside.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{mknod, Mode, SFlag};
use nix::sys::time::TimeSpec;

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The archive could not be read or is malformed.
    #[error("{0}")]
    Read(io::Error),
    /// The archive is well-formed but holds something that must be refused.
    #[error("{0}")]
    Refused(String),
    /// Writing the unpacked content failed (disk full, permissions, ...).
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    fn write(path: &Path, source: io::Error) -> Self {
        UnpackError::Write {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What unpacking learnt about the layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Sum of regular file sizes: the layer's size as `docker images` shows it.
    pub size: u64,
    pub entries: u64,
}

/// Unpacks the tar read from `reader` into `dest` (an existing, empty
/// directory). Reads the archive up to its end-of-archive marker; the caller
/// drains what follows.
pub fn unpack<R: Read>(
    archive: &mut tar::Archive<R>,
    dest: &Path,
) -> Result<UnpackStats, UnpackError> {
    let mut u = Unpacker {
        dest: dest.to_path_buf(),
        known_dirs: HashSet::new(),
        dir_times: Vec::new(),
        stats: UnpackStats::default(),
    };
    let entries = archive.entries().map_err(UnpackError::Read)?;
    for entry in entries {
        let mut entry = entry.map_err(UnpackError::Read)?;
        u.entry(&mut entry)?;
        u.stats.entries += 1;
    }
    // Directory times last: creating children changed them.
    for (path, mtime) in u.dir_times.iter().rev() {
        set_times(path, *mtime).map_err(|e| UnpackError::write(path, e))?;
    }
    Ok(u.stats)
}

struct Unpacker {
    dest: PathBuf,
    /// Relative dirs verified (or made) to be real directories.
    known_dirs: HashSet<PathBuf>,
    dir_times: Vec<(PathBuf, u64)>,
    stats: UnpackStats,
}

/// Lexically normalises an archive path to a relative path inside the
/// root; `None` when it climbs out of it.
pub fn sanitize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

impl Unpacker {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
        let rel = sanitize(&raw).ok_or_else(|| {
            UnpackError::Refused(format!("path {} escapes the archive root", raw.display()))
        })?;
        let header = entry.header();
        // Empty numeric fields read as 0, as Go's archive/tar (Docker) does;
        // the header checksum already vouched for the block.
        let mode = header.mode().unwrap_or(0) & 0o7777;
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let mtime = header.mtime().unwrap_or(0);

        if rel.as_os_str().is_empty() {
            // The archive's root ("./"): its metadata applies to the layer root.
            if kind.is_dir() {
                let root = self.dest.clone();
                apply_owner_mode(&root, uid, gid, Some(mode))
                    .map_err(|e| UnpackError::write(&root, e))?;
                self.dir_times.push((root, mtime));
            }
            return Ok(());
        }

        let name = rel
            .file_name()
            .expect("non-empty normal path")
            .to_os_string();
        let name_str = name.to_string_lossy();
        let parent_rel = rel.parent().map(Path::to_path_buf).unwrap_or_default();

        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            let parent = self.ensure_dir(&parent_rel)?;
            if name_str == WHITEOUT_OPAQUE {
                set_xattr(&parent, OVERLAY_OPAQUE_XATTR, b"y")
                    .map_err(|e| UnpackError::write(&parent, e))?;
            } else if name_str.starts_with(WHITEOUT_META_PREFIX) {
                // Other aufs metadata (.wh..wh.plnk, ...): not content.
            } else {
                if matches!(hidden, "" | "." | "..") {
                    return Err(UnpackError::Refused(format!(
                        "invalid whiteout {}",
                        raw.display()
                    )));
                }
                let rel_hidden = parent_rel.join(hidden);
                let target = self.dest.join(&rel_hidden);
                self.clear(&rel_hidden, false)?;
                mknod(&target, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(|e| UnpackError::write(&target, e.into()))?;
                std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                    .map_err(|e| UnpackError::write(&target, e))?;
            }
            return Ok(());
        }

        self.ensure_dir(&parent_rel)?;
        let target = self.dest.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                self.clear(&rel, true)?;
                if fs::symlink_metadata(&target).is_err() {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&target)
                        .map_err(|e| UnpackError::write(&target, e))?;
                }
                self.known_dirs.insert(rel.clone());
                apply_owner_mode(&target, uid, gid, Some(mode))
                    .map_err(|e| UnpackError::write(&target, e))?;
                self.set_xattrs(entry, &target)?;
                self.dir_times.push((target, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&rel, false)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(|e| UnpackError::write(&target, e))?;
                let n = copy_data(entry, &mut f, &target)?;
                self.stats.size += n;
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .map_err(|e| UnpackError::write(&target, e))?;
                // After chown, which clears set-id bits.
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|e| UnpackError::write(&target, e))?;
                drop(f);
                self.set_xattrs(entry, &target)?;
                set_times(&target, mtime).map_err(|e| UnpackError::write(&target, e))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(UnpackError::Read)?
                    .ok_or_else(|| {
                        UnpackError::Refused(format!("symlink {} has no target", raw.display()))
                    })?
                    .into_owned();
                self.clear(&rel, false)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| UnpackError::write(&target, e))?;
                std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                    .map_err(|e| UnpackError::write(&target, e))?;
                self.set_xattrs(entry, &target)?;
                set_times(&target, mtime).map_err(|e| UnpackError::write(&target, e))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(UnpackError::Read)?
                    .ok_or_else(|| {
                        UnpackError::Refused(format!("hard link {} has no target", raw.display()))
                    })?
                    .into_owned();
                let src_rel = sanitize(&link)
                    .filter(|p| !p.as_os_str().is_empty())
                    .ok_or_else(|| {
                        UnpackError::Refused(format!(
                            "hard link {} -> {} escapes the archive root",
                            raw.display(),
                            link.display()
                        ))
                    })?;
                let src_parent = src_rel.parent().map(Path::to_path_buf).unwrap_or_default();
                self.check_dir(&src_parent)?;
                let src = self.dest.join(&src_rel);
                match fs::symlink_metadata(&src) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(UnpackError::Refused(format!(
                            "hard link {} -> {}: target is not a file earlier in the archive",
                            raw.display(),
                            link.display()
                        )))
                    }
                }
                if src_rel == rel {
                    return Ok(());
                }
                self.clear(&rel, false)?;
                // link(2) does not follow a symlink source: the link is to the symlink itself.
                fs::hard_link(&src, &target).map_err(|e| UnpackError::write(&target, e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (flag, dev) = match kind {
                    tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        let major = header
                            .device_major()
                            .map_err(UnpackError::Read)?
                            .unwrap_or(0);
                        let minor = header
                            .device_minor()
                            .map_err(UnpackError::Read)?
                            .unwrap_or(0);
                        let flag = if kind == tar::EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (flag, libc::makedev(major, minor))
                    }
                };
                self.clear(&rel, false)?;
                mknod(&target, flag, Mode::from_bits_truncate(mode), dev)
                    .map_err(|e| UnpackError::write(&target, e.into()))?;
                apply_owner_mode(&target, uid, gid, Some(mode))
                    .map_err(|e| UnpackError::write(&target, e))?;
                self.set_xattrs(entry, &target)?;
                set_times(&target, mtime).map_err(|e| UnpackError::write(&target, e))?;
            }
            other => {
                return Err(UnpackError::Refused(format!(
                    "unsupported entry type {:?} for {}",
                    other,
                    raw.display()
                )))
            }
        }
        Ok(())
    }

    /// Makes every component of `rel` a real directory (creating missing
    /// ones 0755, as Docker does), refusing symlinks and other files.
    fn ensure_dir(&mut self, rel: &Path) -> Result<PathBuf, UnpackError> {
        self.walk_dirs(rel, true)
    }

    /// Like [`Self::ensure_dir`] but creates nothing.
    fn check_dir(&mut self, rel: &Path) -> Result<PathBuf, UnpackError> {
        self.walk_dirs(rel, false)
    }

    fn walk_dirs(&mut self, rel: &Path, create: bool) -> Result<PathBuf, UnpackError> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            if self.known_dirs.contains(&cur) {
                continue;
            }
            let abs = self.dest.join(&cur);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => {}
                Ok(m) => {
                    let what = if m.file_type().is_symlink() {
                        "a symlink"
                    } else {
                        "not a directory"
                    };
                    return Err(UnpackError::Refused(format!(
                        "cannot write below {}: it is {what}",
                        cur.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&abs)
                        .map_err(|e| UnpackError::write(&abs, e))?;
                }
                Err(e) => return Err(UnpackError::write(&abs, e)),
            }
            self.known_dirs.insert(cur.clone());
        }
        Ok(self.dest.join(rel))
    }

    /// Removes what is at `rel` so a new entry can take its place; a
    /// directory stays when the new entry is a directory too.
    fn clear(&mut self, rel: &Path, keep_dir: bool) -> Result<(), UnpackError> {
        let abs = self.dest.join(rel);
        match fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() => {
                if !keep_dir {
                    fs::remove_dir_all(&abs).map_err(|e| UnpackError::write(&abs, e))?;
                    // Cached knowledge about what was below is now stale.
                    self.known_dirs.retain(|d| !d.starts_with(rel));
                }
            }
            Ok(_) => fs::remove_file(&abs).map_err(|e| UnpackError::write(&abs, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(UnpackError::write(&abs, e)),
        }
        Ok(())
    }

    fn set_xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        target: &Path,
    ) -> Result<(), UnpackError> {
        let Some(exts) = entry.pax_extensions().map_err(UnpackError::Read)? else {
            return Ok(());
        };
        for ext in exts {
            let ext = ext.map_err(UnpackError::Read)?;
            let Ok(key) = ext.key() else { continue };
            let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) else {
                continue;
            };
            // A layer must not steer overlayfs (opaque dirs, redirects) by itself.
            if name.starts_with("trusted.overlay.") {
                continue;
            }
            match set_xattr(target, name, ext.value_bytes()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    tracing::debug!(path = %target.display(), xattr = name, "xattr not supported, skipped");
                }
                Err(e) => return Err(UnpackError::write(target, e)),
            }
        }
        Ok(())
    }
}

/// Copies entry data, telling read failures (a broken archive) from write
/// failures (a full disk).
fn copy_data<R: Read>(src: &mut R, dst: &mut File, path: &Path) -> Result<u64, UnpackError> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    let mut flushed = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => {
                if total - flushed >= EARLY_WRITEBACK_MIN {
                    start_writeback(dst, flushed, total - flushed);
                }
                return Ok(total);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UnpackError::Read(e)),
        };
        dst.write_all(&buf[..n])
            .map_err(|e| UnpackError::write(path, e))?;
        total += n as u64;
        if total - flushed >= EARLY_WRITEBACK_CHUNK {
            start_writeback(dst, flushed, total - flushed);
            flushed = total;
        }
    }
}

/// Data of a file written during an unpack is handed to the disk in
/// chunks of this size while the unpack goes on...
pub(crate) const EARLY_WRITEBACK_CHUNK: u64 = 8 << 20;
/// ...and at its end when at least this much is left, so the `syncfs`
/// that makes a layer durable mostly finds the work already done instead
/// of starting it (half a pull's wall time here when it did not).
const EARLY_WRITEBACK_MIN: u64 = 256 << 10;

/// Starts writeback of `len` bytes at `off` without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`); durability still comes from
/// the later `syncfs`/`fsync`. A failure only loses the head start.
pub(crate) fn start_writeback(f: &File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open fd; the call reads no memory of ours.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

fn apply_owner_mode(path: &Path, uid: u32, gid: u32, mode: Option<u32>) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if let Some(m) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(m))?;
    }
    Ok(())
}

/// Sets atime and mtime without following a symlink.
fn set_times(path: &Path, mtime: u64) -> io::Result<()> {
    let t = TimeSpec::new(mtime as i64, 0);
    nix::sys::stat::utimensat(
        None,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// `lsetxattr(2)`: never follows a symlink.
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated strings and a valid buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `lgetxattr(2)`; `None` when the attribute is absent.
#[cfg(test)]
pub(crate) fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r >= 0 {
        buf.truncate(r as usize);
        return Ok(Some(buf));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENODATA) {
        Ok(None)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    /// Builds a tar; paths are written raw so tests can use `..` and such.
    fn build(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = header(
                *kind,
                if *kind == tar::EntryType::Directory {
                    0o755
                } else {
                    0o644
                },
                data.len() as u64,
            );
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..path.len()].copy_from_slice(path.as_bytes());
                if let Some(l) = link {
                    gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
                }
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn unpack_bytes(tar: &[u8], dest: &Path) -> Result<UnpackStats, UnpackError> {
        unpack(&mut tar::Archive::new(tar), dest)
    }

    #[test]
    fn regular_content_and_metadata() {
        let d = tempfile::tempdir().unwrap();
        let tar = build(&[
            ("./", tar::EntryType::Directory, b"", None),
            ("bin/", tar::EntryType::Directory, b"", None),
            (
                "bin/tool",
                tar::EntryType::Regular,
                b"#!/bin/sh\necho hi\n",
                None,
            ),
            ("bin/sh", tar::EntryType::Symlink, b"", Some("/bin/tool")),
            ("bin/hard", tar::EntryType::Link, b"", Some("bin/tool")),
            ("etc/deep/file", tar::EntryType::Regular, b"x", None),
        ]);
        let stats = unpack_bytes(&tar, d.path()).unwrap();
        assert_eq!(stats.size, 19);
        assert_eq!(
            fs::read(d.path().join("bin/tool")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            fs::read_link(d.path().join("bin/sh")).unwrap(),
            Path::new("/bin/tool")
        );
        let a = fs::metadata(d.path().join("bin/tool")).unwrap();
        let b = fs::metadata(d.path().join("bin/hard")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.mtime(), 1_700_000_000);
        assert_eq!(a.mode() & 0o7777, 0o644);
        let bin = fs::metadata(d.path().join("bin")).unwrap();
        assert_eq!(
            bin.mtime(),
            1_700_000_000,
            "dir times are set after their children"
        );
        assert_eq!(
            fs::metadata(d.path().join("etc")).unwrap().mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let tar = build(&[
            ("etc/.wh.passwd", tar::EntryType::Regular, b"", None),
            ("var/.wh..wh..opq", tar::EntryType::Regular, b"", None),
            ("var/keep", tar::EntryType::Regular, b"k", None),
            ("x/.wh..wh.plnk", tar::EntryType::Regular, b"", None),
        ]);
        unpack_bytes(&tar, d.path()).unwrap();
        let wh = fs::symlink_metadata(d.path().join("etc/passwd")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!d.path().join("etc/.wh.passwd").exists());
        assert_eq!(
            get_xattr(&d.path().join("var"), OVERLAY_OPAQUE_XATTR)
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(fs::read(d.path().join("var/keep")).unwrap(), b"k");
        assert!(!d.path().join("x/.wh..wh.plnk").exists());
    }

    #[test]
    fn traversal_is_refused() {
        for (path, kind, link) in [
            ("../evil", tar::EntryType::Regular, None),
            ("a/../../evil", tar::EntryType::Regular, None),
            ("hl", tar::EntryType::Link, Some("../../etc/passwd")),
            ("a/.wh...", tar::EntryType::Regular, None),
            ("a/.wh.", tar::EntryType::Regular, None),
        ] {
            let parent = tempfile::tempdir().unwrap();
            let dest = parent.path().join("root");
            fs::create_dir(&dest).unwrap();
            let err = unpack_bytes(&build(&[(path, kind, b"bad", link)]), &dest).unwrap_err();
            assert!(matches!(err, UnpackError::Refused(_)), "{path}: {err}");
            assert!(!parent.path().join("evil").exists());
        }
        // Absolute paths are taken relative to the root, as Docker does.
        let d = tempfile::tempdir().unwrap();
        unpack_bytes(
            &build(&[("/abs", tar::EntryType::Regular, b"a", None)]),
            d.path(),
        )
        .unwrap();
        assert!(d.path().join("abs").exists());
    }

    #[test]
    fn writes_never_follow_archive_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let out = outside.path().to_str().unwrap().to_string();
        // Escaping symlinks are kept as symlinks...
        let tar = build(&[
            ("link", tar::EntryType::Symlink, b"", Some(&out)),
            ("link/pwned", tar::EntryType::Regular, b"x", None),
        ]);
        let err = unpack_bytes(&tar, d.path()).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(!outside.path().join("pwned").exists());
        // ...and a file entry replaces a symlink instead of writing through it.
        let d = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "orig").unwrap();
        let tar = build(&[
            (
                "f",
                tar::EntryType::Symlink,
                b"",
                Some(victim.to_str().unwrap()),
            ),
            ("f", tar::EntryType::Regular, b"new", None),
        ]);
        unpack_bytes(&tar, d.path()).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"orig");
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"new");
    }

    #[test]
    fn corrupt_archives_are_read_errors() {
        let d = tempfile::tempdir().unwrap();
        let garbage = vec![b'z'; 2048];
        assert!(matches!(
            unpack_bytes(&garbage, d.path()),
            Err(UnpackError::Read(_))
        ));
        let good = build(&[("big", tar::EntryType::Regular, &[7u8; 4000], None)]);
        let truncated = &good[..512 + 1000];
        assert!(matches!(
            unpack_bytes(truncated, d.path()),
            Err(UnpackError::Read(_))
        ));
        assert!(matches!(
            unpack_bytes(b"hello", d.path()),
            Err(UnpackError::Read(_))
        ));
    }
}
