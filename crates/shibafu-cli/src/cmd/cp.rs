//! `cp`: tar archives through `GET/PUT/HEAD /containers/{id}/archive`, with docker's
//! rules for where things land (copy into an existing directory, or rename onto a new
//! path; `SRC/.` copies a directory's contents; `-` streams a tar on stdin/stdout).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

use crate::cli::CpArgs;
use crate::client::{body_stream, empty_body, query, reader_body, stream_body};
use crate::cmd::seg;
use crate::config::io_reason;
use crate::error::{CliError, Result};
use crate::human::human_size;
use crate::Ctx;

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
pub enum Loc {
    Local(String),
    Container(String, String),
}

/// docker's `splitCpArg`: a path starting with `/` or `.` is local even with a colon.
pub fn parse_loc(arg: &str) -> Loc {
    if arg.starts_with('/') || arg.starts_with('.') || arg == "-" {
        return Loc::Local(arg.to_string());
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.is_empty() => {
            let p = if p.starts_with('/') {
                p.to_string()
            } else {
                format!("/{p}")
            };
            Loc::Container(c.to_string(), p)
        }
        _ => Loc::Local(arg.to_string()),
    }
}

/// Decodes the base64 of the path-stat header.
pub fn b64decode(s: &str) -> Option<Vec<u8>> {
    crate::auth::base64_decode(s)
}

/// The container path's stat, from `X-Docker-Container-Path-Stat`.
fn path_stat(headers: &hyper::HeaderMap) -> Option<Value> {
    let h = headers.get("X-Docker-Container-Path-Stat")?.to_str().ok()?;
    serde_json::from_slice(&b64decode(h)?).ok()
}

fn stat_is_dir(stat: &Value) -> bool {
    stat.get("mode")
        .and_then(Value::as_u64)
        .is_some_and(|m| m & (1 << 31) != 0)
}

fn base_name(p: &str) -> String {
    let t = p.trim_end_matches('/');
    let t = t.strip_suffix("/.").unwrap_or(t);
    Path::new(t)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into())
}

fn parent_of(p: &str) -> String {
    let t = p.trim_end_matches('/');
    match Path::new(t).parent() {
        Some(par) if !par.as_os_str().is_empty() => par.to_string_lossy().into_owned(),
        _ => {
            if p.starts_with('/') {
                "/".into()
            } else {
                ".".into()
            }
        }
    }
}

pub async fn cp(ctx: &Ctx, a: CpArgs) -> Result<i32> {
    match (parse_loc(&a.src), parse_loc(&a.dest)) {
        (Loc::Container(c, p), Loc::Local(d)) => from_container(ctx, &a, &c, &p, &d).await,
        (Loc::Local(s), Loc::Container(c, p)) => to_container(ctx, &a, &s, &c, &p).await,
        (Loc::Container(..), Loc::Container(..)) => Err(CliError::other(
            "copying between containers is not supported",
        )),
        (Loc::Local(..), Loc::Local(..)) => Err(CliError::other(
            "must specify at least one container source",
        )),
    }
}

/// Where extracted entries go: the archive's root entry name is replaced by
/// `new_root` (None: entries keep their names) under `dir`.
struct Target {
    dir: PathBuf,
    root: String,
    new_root: Option<String>,
}

impl Target {
    fn map(&self, entry: &Path) -> Option<PathBuf> {
        let mut comps: Vec<String> = Vec::new();
        for c in entry.components() {
            match c {
                Component::Normal(s) => comps.push(s.to_string_lossy().into_owned()),
                Component::CurDir => {}
                // never write outside the target
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
            }
        }
        if let (Some(first), Some(new)) = (comps.first(), &self.new_root) {
            if *first == self.root {
                comps[0] = new.clone();
            }
        }
        if comps.is_empty() {
            return match &self.new_root {
                Some(n) => Some(self.dir.join(n)),
                None => Some(self.dir.clone()),
            };
        }
        Some(comps.iter().fold(self.dir.clone(), |p, c| p.join(c)))
    }
}

/// Reads async chunks from a channel as a blocking `Read` (for the tar crate).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

fn extract(
    reader: impl Read,
    target: &Target,
    preserve_owner: bool,
) -> std::result::Result<(), String> {
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(preserve_owner);
    ar.set_overwrite(true);
    for entry in ar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let dest = target
            .map(&path)
            .ok_or_else(|| format!("invalid path in archive: {}", path.display()))?;
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("mkdir {}: {}", parent.display(), io_reason(&e)))?;
        }
        if entry.header().entry_type().is_dir() && dest.is_dir() {
            continue;
        }
        entry
            .unpack(&dest)
            .map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    Ok(())
}

async fn from_container(
    ctx: &Ctx,
    a: &CpArgs,
    container: &str,
    path: &str,
    dest: &str,
) -> Result<i32> {
    let resp = ctx
        .client
        .request(
            hyper::Method::GET,
            &format!(
                "/containers/{}/archive{}",
                seg(container),
                query(&[("path", path.to_string())])
            ),
            empty_body(),
            None,
        )
        .await?;
    let stat = path_stat(resp.headers()).unwrap_or(Value::Null);
    let mut body = body_stream(resp);
    if dest == "-" {
        while let Some(chunk) = body.next().await {
            ctx.out_bytes(&chunk?);
        }
        return Ok(0);
    }
    let src_is_dir = stat_is_dir(&stat);
    let root = stat
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| base_name(path));
    let dest_path = Path::new(dest);
    let contents_only = path.ends_with("/.");
    let target = match std::fs::metadata(dest_path) {
        Ok(m) if m.is_dir() => {
            if contents_only {
                Target {
                    dir: dest_path.to_path_buf(),
                    root,
                    new_root: Some(".".into()),
                }
            } else {
                Target {
                    dir: dest_path.to_path_buf(),
                    root: root.clone(),
                    new_root: None,
                }
            }
        }
        Ok(_) => {
            if src_is_dir {
                return Err(CliError::other(format!(
                    "cannot copy directory to file: {dest}"
                )));
            }
            Target {
                dir: PathBuf::from(parent_of(dest)),
                root,
                new_root: Some(base_name(dest)),
            }
        }
        Err(_) => {
            if dest.ends_with('/') && !src_is_dir {
                return Err(CliError::other(format!(
                    "destination directory {dest} does not exist"
                )));
            }
            let parent = parent_of(dest);
            if !Path::new(&parent).is_dir() {
                return Err(CliError::other(format!(
                    "lstat {parent}: no such file or directory"
                )));
            }
            Target {
                dir: PathBuf::from(parent),
                root,
                new_root: Some(base_name(dest)),
            }
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let preserve = a.archive;
    let worker = tokio::task::spawn_blocking(move || {
        extract(
            ChannelReader {
                rx,
                cur: Bytes::new(),
            },
            &target,
            preserve,
        )
    });
    let mut total = 0usize;
    let mut feed_err = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                total += c.len();
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                feed_err = Some(e);
                break;
            }
        }
    }
    drop(tx);
    match worker.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(CliError::other(e)),
        Err(e) => return Err(CliError::other(e.to_string())),
    }
    if let Some(e) = feed_err {
        return Err(e);
    }
    if ctx.tty_err && !a.quiet {
        ctx.errln(&format!(
            "Successfully copied {} to {dest}",
            human_size(total as f64)
        ));
    }
    Ok(0)
}

/// Writes into a channel from a blocking thread (tar builder -> request body).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "request aborted"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn build_tar(
    src: PathBuf,
    name: Option<String>,
    follow: bool,
    w: ChannelWriter,
) -> std::io::Result<()> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    let meta = if follow {
        std::fs::metadata(&src)?
    } else {
        std::fs::symlink_metadata(&src)?
    };
    match name {
        Some(name) => {
            if meta.is_dir() {
                b.append_dir_all(&name, &src)?;
            } else if follow {
                let mut f = std::fs::File::open(&src)?;
                b.append_file(&name, &mut f)?;
            } else {
                b.append_path_with_name(&src, &name)?;
            }
        }
        None => {
            // SRC/. : the directory's contents, without the directory itself
            for entry in std::fs::read_dir(&src)? {
                let entry = entry?;
                let n = entry.file_name();
                if entry.file_type()?.is_dir() {
                    b.append_dir_all(&n, entry.path())?;
                } else {
                    b.append_path_with_name(entry.path(), &n)?;
                }
            }
        }
    }
    b.into_inner()?;
    Ok(())
}

async fn to_container(
    ctx: &Ctx,
    a: &CpArgs,
    src: &str,
    container: &str,
    path: &str,
) -> Result<i32> {
    let mut pairs = vec![
        ("path", String::new()),
        ("noOverwriteDirNonDir", "true".to_string()),
    ];
    if a.archive {
        pairs.push(("copyUIDGID", "1".into()));
    }
    if src == "-" {
        pairs[0].1 = path.to_string();
        let stdin = ctx
            .take_stdin()
            .ok_or_else(|| CliError::other("stdin is not available"))?;
        ctx.client
            .request(
                hyper::Method::PUT,
                &format!("/containers/{}/archive{}", seg(container), query(&pairs)),
                reader_body(stdin),
                Some("application/x-tar"),
            )
            .await?;
        return Ok(0);
    }
    let src_path = PathBuf::from(src);
    let meta = if a.follow_link {
        std::fs::metadata(&src_path)
    } else {
        std::fs::symlink_metadata(&src_path)
    };
    let meta = meta.map_err(|e| {
        let abs = std::path::absolute(&src_path).unwrap_or(src_path.clone());
        CliError::other(format!("lstat {}: {}", abs.display(), io_reason(&e)))
    })?;
    let contents_only = src.ends_with("/.") && meta.is_dir();
    // Where does it land? Ask the container about the destination.
    let head = ctx
        .client
        .request(
            hyper::Method::HEAD,
            &format!(
                "/containers/{}/archive{}",
                seg(container),
                query(&[("path", path.to_string())])
            ),
            empty_body(),
            None,
        )
        .await;
    let (dir, name) = match head {
        Ok(resp) => {
            let stat = path_stat(resp.headers()).unwrap_or(Value::Null);
            if stat_is_dir(&stat) {
                (
                    path.to_string(),
                    if contents_only {
                        None
                    } else {
                        Some(base_name(src))
                    },
                )
            } else if meta.is_dir() {
                return Err(CliError::other(format!(
                    "cannot copy directory to file: {container}:{path}"
                )));
            } else {
                (parent_of(path), Some(base_name(path)))
            }
        }
        Err(e) if e.is_not_found() => {
            if path.ends_with('/') && !meta.is_dir() {
                return Err(CliError::other(format!(
                    "destination directory {container}:{path} does not exist"
                )));
            }
            // A missing container gives 404 too: tell it apart by its message.
            if e.message().to_lowercase().contains("no such container") {
                return Err(e);
            }
            (parent_of(path), Some(base_name(path)))
        }
        Err(e) => return Err(e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
    let follow = a.follow_link;
    let builder = tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        if let Err(e) = build_tar(src_path, name, follow, ChannelWriter { tx }) {
            let _ = err_tx.blocking_send(Err(e));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    pairs[0].1 = dir;
    let result = ctx
        .client
        .request(
            hyper::Method::PUT,
            &format!("/containers/{}/archive{}", seg(container), query(&pairs)),
            stream_body(stream),
            Some("application/x-tar"),
        )
        .await;
    let _ = builder.await;
    result?;
    if ctx.tty_err && !a.quiet {
        ctx.errln(&format!(
            "Successfully copied {} to {container}:{path}",
            human_size(meta.len() as f64)
        ));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            parse_loc("web:/etc/hosts"),
            Loc::Container("web".into(), "/etc/hosts".into())
        );
        assert_eq!(
            parse_loc("web:tmp"),
            Loc::Container("web".into(), "/tmp".into())
        );
        assert_eq!(parse_loc("./a:b"), Loc::Local("./a:b".into()));
        assert_eq!(parse_loc("/x:y"), Loc::Local("/x:y".into()));
        assert_eq!(parse_loc("-"), Loc::Local("-".into()));
        assert_eq!(parse_loc("plain"), Loc::Local("plain".into()));
    }

    #[test]
    fn base64() {
        assert_eq!(b64decode("eyJuYW1lIjoiYSJ9").unwrap(), b"{\"name\":\"a\"}");
        assert_eq!(b64decode("YQ==").unwrap(), b"a");
        assert!(b64decode("!!").is_none());
    }

    #[test]
    fn target_mapping() {
        let t = Target {
            dir: "/out".into(),
            root: "src".into(),
            new_root: Some("renamed".into()),
        };
        assert_eq!(
            t.map(Path::new("src/a/b")).unwrap(),
            PathBuf::from("/out/renamed/a/b")
        );
        assert_eq!(
            t.map(Path::new("src")).unwrap(),
            PathBuf::from("/out/renamed")
        );
        assert!(t.map(Path::new("../evil")).is_none());
        let t = Target {
            dir: "/out".into(),
            root: "src".into(),
            new_root: None,
        };
        assert_eq!(
            t.map(Path::new("src/a")).unwrap(),
            PathBuf::from("/out/src/a")
        );
    }

    #[test]
    fn extract_and_rename_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tree");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f.txt"), b"hello").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        build_tar(
            src.clone(),
            Some("tree".into()),
            false,
            ChannelWriter { tx },
        )
        .unwrap();
        let mut data = Vec::new();
        while let Ok(Ok(b)) = rx.try_recv() {
            data.extend_from_slice(&b);
        }
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let t = Target {
            dir: out.clone(),
            root: "tree".into(),
            new_root: Some("copy".into()),
        };
        extract(&data[..], &t, false).unwrap();
        assert_eq!(std::fs::read(out.join("copy/sub/f.txt")).unwrap(), b"hello");
    }
}
