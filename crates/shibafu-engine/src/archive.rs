//! `docker cp`: stat, tar out and tar in of paths inside a container,
//! resolved safely (symlinks are followed inside the container's root,
//! never out of it).

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use shibafu_api::{BoxStream, PathStat};
use tokio::sync::mpsc;

use crate::ctr::Ctr;
use crate::error::{EngineError, Result};
use crate::model::MountKind;
use crate::ports::RootfsDriver;
use crate::Engine;

const MAX_SYMLINKS: usize = 255;

/// Resolve `path` inside `root` following every symlink.
pub fn resolve_in_root(root: &Path, path: &str) -> std::io::Result<PathBuf> {
    resolve(root, path, true)
}

/// Resolve `path` (absolute or relative, container view) to a host path
/// under `root`. Symlinks are interpreted as the container would (absolute
/// targets restart at `root`, `..` stops at `root`); the last component is
/// followed only with `follow_last`.
pub fn resolve(root: &Path, path: &str, follow_last: bool) -> std::io::Result<PathBuf> {
    let mut pending: std::collections::VecDeque<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        match part.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let is_last = pending.is_empty();
        let mut candidate = root.to_path_buf();
        for c in &cur {
            candidate.push(c);
        }
        candidate.push(&part);
        match candidate.symlink_metadata() {
            Ok(md) if md.file_type().is_symlink() && (!is_last || follow_last) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(std::io::Error::other("too many levels of symbolic links"));
                }
                let target = std::fs::read_link(&candidate)?;
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    cur.clear();
                }
                for (i, c) in t.split('/').filter(|c| !c.is_empty()).enumerate() {
                    pending.insert(i, c.to_string());
                }
            }
            _ => cur.push(part),
        }
    }
    let mut out = root.to_path_buf();
    for c in cur {
        out.push(c);
    }
    Ok(out)
}

/// Go's `os.FileMode` of a file (what the docker CLI expects in stats).
pub fn go_mode(md: &std::fs::Metadata) -> u32 {
    let m = md.mode();
    let mut out = m & 0o777;
    let ft = m & libc::S_IFMT;
    match ft {
        libc::S_IFDIR => out |= 1 << 31,
        libc::S_IFLNK => out |= 1 << 27,
        libc::S_IFIFO => out |= 1 << 25,
        libc::S_IFSOCK => out |= 1 << 24,
        libc::S_IFBLK => out |= 1 << 26,
        libc::S_IFCHR => out |= (1 << 26) | (1 << 21),
        _ => {}
    }
    if m & libc::S_ISUID != 0 {
        out |= 1 << 23;
    }
    if m & libc::S_ISGID != 0 {
        out |= 1 << 22;
    }
    if m & libc::S_ISVTX != 0 {
        out |= 1 << 20;
    }
    out
}

fn base_name(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit('/').next() {
        Some("") | None => "/".into(),
        Some(n) => n.to_string(),
    }
}

fn stat_of(host: &Path, path: &str) -> std::io::Result<PathStat> {
    let md = host.symlink_metadata()?;
    let link_target = if md.file_type().is_symlink() {
        std::fs::read_link(host)?.to_string_lossy().into_owned()
    } else {
        String::new()
    };
    let mtime = chrono::DateTime::<chrono::Utc>::from_timestamp(md.mtime(), md.mtime_nsec() as u32)
        .unwrap_or_default();
    Ok(PathStat {
        name: base_name(path),
        size: md.len() as i64,
        mode: go_mode(&md),
        mtime: crate::views::rfc3339(&mtime),
        link_target,
    })
}

/// A container's filesystem made reachable from the host for one request.
struct Access {
    /// `/proc/<pid>/root` of a running container (sees every mount), or
    /// the merged rootfs.
    root: PathBuf,
    /// (destination, host source) of binds and volumes, used with the
    /// merged rootfs, longest destination first.
    mounts: Vec<(String, PathBuf, bool)>,
    read_only_rootfs: bool,
    unmount: Option<(Arc<dyn RootfsDriver>, PathBuf)>,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Access {
    fn drop(&mut self) {
        if let Some((driver, dir)) = self.unmount.take() {
            if let Err(e) = driver.unmount(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "unmounting rootfs after cp");
            }
        }
    }
}

impl Access {
    /// Host path of a container path; `(path, writable)`.
    fn host_path(&self, path: &str, follow_last: bool) -> std::io::Result<(PathBuf, bool)> {
        let clean = format!("/{}", path.trim_start_matches('/'));
        for (dst, src, rw) in &self.mounts {
            if clean == *dst || clean.starts_with(&format!("{dst}/")) {
                let rest = &clean[dst.len()..];
                return Ok((resolve(src, rest, follow_last)?, *rw));
            }
        }
        Ok((
            resolve(&self.root, &clean, follow_last)?,
            !self.read_only_rootfs,
        ))
    }
}

/// Blocking `Write` into a channel of chunks (tar producer side).
struct ChanWriter(mpsc::Sender<std::io::Result<Bytes>>);

impl Write for ChanWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Blocking `Read` over a channel of chunks (tar consumer side).
struct ChanReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

impl Engine {
    /// `live_view`: for reads, use `/proc/<pid>/root` of a running container.
    async fn access(&self, c: &Arc<Ctr>, live_view: bool) -> Result<Access> {
        let rec = c.rec();
        let mut mounts: Vec<(String, PathBuf, bool)> = rec
            .mounts
            .iter()
            .filter(|m| m.kind != MountKind::Tmpfs)
            .map(|m| (m.destination.clone(), PathBuf::from(&m.source), m.rw))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
        let ro = rec.host_config.readonly_rootfs.unwrap_or(false);
        if rec.state.status.is_live() && rec.state.pid > 0 {
            if live_view {
                return Ok(Access {
                    root: PathBuf::from(format!("/proc/{}/root", rec.state.pid)),
                    mounts: vec![],
                    read_only_rootfs: ro,
                    unmount: None,
                    _guard: None,
                });
            }
            return Ok(Access {
                root: self.merged_dir(&rec.id),
                mounts,
                read_only_rootfs: ro,
                unmount: None,
                _guard: None,
            });
        }
        // Stopped: mount the rootfs for the duration, holding the operation
        // lock so the container cannot start (and mount it) meanwhile.
        let guard = c.op.clone().lock_owned().await;
        let dir = self.rootfs_dir(&rec.id);
        let was_mounted = self.rootfs.is_mounted(&dir);
        let merged = self
            .rootfs
            .mount(&dir, &rec.layers)
            .map_err(EngineError::Io)?;
        Ok(Access {
            root: merged,
            mounts,
            read_only_rootfs: ro,
            unmount: (!was_mounted).then(|| (self.rootfs.clone(), dir)),
            _guard: Some(guard),
        })
    }

    fn not_found(path: &str, c: &Arc<Ctr>) -> EngineError {
        EngineError::NotFound(format!(
            "Could not find the file {path} in container {}",
            c.name()
        ))
    }

    pub(crate) async fn archive_stat(&self, reference: &str, path: &str) -> Result<PathStat> {
        let c = self.lookup(reference)?;
        let acc = self.access(&c, true).await?;
        let (host, _) = acc
            .host_path(path, false)
            .map_err(|_| Self::not_found(path, &c))?;
        stat_of(&host, path).map_err(|_| Self::not_found(path, &c))
    }

    pub(crate) async fn archive_get(
        &self,
        reference: &str,
        path: &str,
    ) -> Result<(PathStat, BoxStream<std::io::Result<Bytes>>)> {
        let c = self.lookup(reference)?;
        let acc = self.access(&c, true).await?;
        let follow = path.ends_with("/.") || path.ends_with('/');
        let (host, _) = acc
            .host_path(path, follow)
            .map_err(|_| Self::not_found(path, &c))?;
        let stat = stat_of(&host, path).map_err(|_| Self::not_found(path, &c))?;
        let name = if stat.name == "/" {
            ".".to_string()
        } else {
            stat.name.clone()
        };
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
        tokio::task::spawn_blocking(move || {
            let _acc = acc;
            let errtx = tx.clone();
            let res = (|| -> std::io::Result<()> {
                let mut b = tar::Builder::new(ChanWriter(tx));
                b.follow_symlinks(false);
                let md = host.symlink_metadata()?;
                if md.is_dir() {
                    b.append_dir_all(&name, &host)?;
                } else {
                    b.append_path_with_name(&host, &name)?;
                }
                b.into_inner()?.flush()
            })();
            if let Err(e) = res {
                let _ = errtx.blocking_send(Err(e));
            }
        });
        Ok((
            stat,
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
        ))
    }

    pub(crate) async fn archive_put(
        &self,
        reference: &str,
        path: &str,
        no_overwrite_dir_non_dir: bool,
        copy_uid_gid: bool,
        mut body: BoxStream<std::io::Result<Bytes>>,
    ) -> Result<()> {
        let c = self.lookup(reference)?;
        let acc = self.access(&c, false).await?;
        let (dest, writable) = acc
            .host_path(path, true)
            .map_err(|_| Self::not_found(path, &c))?;
        let md = dest.metadata().map_err(|_| Self::not_found(path, &c))?;
        if !md.is_dir() {
            return Err(EngineError::Invalid(
                "extraction point is not a directory".into(),
            ));
        }
        if !writable {
            return Err(EngineError::Invalid(
                "container rootfs is marked read-only".into(),
            ));
        }
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
        let feeder = tokio::spawn(async move {
            while let Some(chunk) = body.next().await {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let _acc = acc;
            let mut ar = tar::Archive::new(ChanReader {
                rx,
                cur: Bytes::new(),
            });
            ar.set_preserve_permissions(true);
            ar.set_preserve_ownerships(copy_uid_gid);
            ar.set_overwrite(true);
            for entry in ar.entries()? {
                let mut entry = entry?;
                if no_overwrite_dir_non_dir {
                    let rel = entry.path()?.into_owned();
                    let target = dest.join(&rel);
                    if let Ok(existing) = target.symlink_metadata() {
                        let new_is_dir = entry.header().entry_type().is_dir();
                        if existing.is_dir() && !new_is_dir {
                            return Err(std::io::Error::other(format!(
                                "cannot overwrite directory {:?} with non-directory",
                                rel
                            )));
                        }
                        if !existing.is_dir() && new_is_dir {
                            return Err(std::io::Error::other(format!(
                                "cannot overwrite non-directory {:?} with directory",
                                rel
                            )));
                        }
                    }
                }
                entry.unpack_in(&dest)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| EngineError::Runtime(format!("extract task: {e}")))?;
        feeder.abort();
        res.map_err(|e| EngineError::Invalid(format!("extracting archive: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/passwd"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("rel")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("file")).unwrap();
        assert_eq!(
            resolve_in_root(r, "/abs/passwd").unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(r, "rel/passwd").unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(resolve_in_root(r, "/../../etc").unwrap(), r.join("etc"));
        assert_eq!(resolve(r, "/file", false).unwrap(), r.join("file"));
        assert_eq!(resolve(r, "/file", true).unwrap(), r.join("etc/passwd"));
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert!(resolve_in_root(r, "/loop").is_err());
    }

    #[test]
    fn go_modes() {
        let d = tempfile::tempdir().unwrap();
        let md = d.path().metadata().unwrap();
        assert_ne!(go_mode(&md) & (1 << 31), 0);
        std::os::unix::fs::symlink("x", d.path().join("l")).unwrap();
        let md = d.path().join("l").symlink_metadata().unwrap();
        assert_ne!(go_mode(&md) & (1 << 27), 0);
        assert_eq!(base_name("/etc/"), "etc");
        assert_eq!(base_name("/"), "/");
    }
}
