//! `import`: a rootfs tarball (plain or gzip) streamed from the request body
//! becomes a one-layer image. The body is decompressed, hashed (diff ID),
//! stored as the layer blob and unpacked in a single pass, all inside a work
//! dir under `tmp/` that is renamed into place only when everything passed.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use oci_spec::image::{Arch, Config, HistoryBuilder, ImageConfigurationBuilder, Os, RootFsBuilder};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::{changes, layer, random_hex, reference, Inner, StoreError};

/// Import options, validated before any byte of the body is read.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// Familiar `repo:tag` to tag the image with.
    pub tag: Option<String>,
    pub config: Config,
    pub comment: String,
    pub arch: Arch,
}

/// Checks repo/tag, platform and `--change`s of an import.
pub(crate) fn prepare(opts: &shibafu_api::ImportOptions) -> Result<Prepared, StoreError> {
    let tag = match opts.repo.as_deref().filter(|r| !r.is_empty()) {
        None => None,
        Some(repo) => Some(reference::repo_tag(repo, opts.tag.as_deref()).map_err(bad_ref)?),
    };
    let mut config = Config::default();
    changes::apply(&mut config, &opts.changes)
        .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
    let arch = match opts.platform.as_deref().filter(|p| !p.is_empty()) {
        None => host_arch(),
        Some(p) => {
            let mut parts = p.split('/');
            let os = parts.next().unwrap_or_default();
            if os != "linux" {
                return Err(StoreError::InvalidArgument(format!(
                    "unsupported platform {p}: only linux images are supported"
                )));
            }
            match parts.next() {
                Some(a) if !a.is_empty() => Arch::from(a),
                _ => host_arch(),
            }
        }
    };
    let comment = opts
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "Imported from -".to_string());
    Ok(Prepared {
        tag,
        config,
        comment,
        arch,
    })
}

pub(crate) fn bad_ref(e: reference::ReferenceError) -> StoreError {
    StoreError::InvalidArgument(e.to_string())
}

fn host_arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        other => Arch::from(other),
    }
}

/// Where the first failure of the pipeline came from, so a tar error
/// caused by a full disk is not reported as a corrupt archive.
#[derive(Debug)]
enum Failure {
    Body(String),
    Store(io::Error),
}

type Slot = Arc<Mutex<Option<Failure>>>;

fn record(slot: &Slot, f: Failure) {
    let mut s = slot.lock();
    if s.is_none() {
        *s = Some(f);
    }
}

/// Blocking reader over body chunks sent from the async side.
pub(crate) struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
    slot: Slot,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while !self.cur.has_remaining() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => {
                    record(&self.slot, Failure::Body(e.to_string()));
                    return Err(e);
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

impl ChannelReader {
    /// Tells, once reading ended, whether it was the sending side that
    /// failed (a cut connection), as opposed to the content.
    pub(crate) fn sender_failed(&self) -> impl Fn() -> bool + Send + 'static {
        let slot = self.slot.clone();
        move || matches!(*slot.lock(), Some(Failure::Body(_)))
    }
}

/// Passes the uncompressed tar through, hashing it and writing the blob.
struct HashTee<R> {
    inner: R,
    hasher: Sha256,
    out: BufWriter<File>,
    len: u64,
    slot: Slot,
}

impl<R: Read> Read for HashTee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            record(&self.slot, Failure::Store(e));
            return Err(io::Error::new(kind, "writing the layer blob failed"));
        }
        Ok(n)
    }
}

/// A work dir under `tmp/`, removed when dropped.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = crate::remove_any(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot remove import work dir");
        }
    }
}

/// The unpacked, hashed layer waiting in its work dir.
struct Unpacked {
    diff_id: String,
    size: u64,
    layer_dir: PathBuf,
    blob: PathBuf,
}

const MAGIC_GZIP: &[u8] = &[0x1f, 0x8b];
const MAGIC_BZIP2: &[u8] = b"BZh";
const MAGIC_XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const MAGIC_ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

pub(crate) fn channel() -> (tokio::sync::mpsc::Sender<io::Result<Bytes>>, ChannelReader) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    (
        tx,
        ChannelReader {
            rx,
            cur: Bytes::new(),
            slot: Arc::new(Mutex::new(None)),
        },
    )
}

impl Inner {
    /// The blocking half of import: unpack, then commit. Returns the image ID.
    pub(crate) fn import(&self, prep: Prepared, body: ChannelReader) -> Result<String, StoreError> {
        let work = WorkDir(self.tmp_dir().join(format!("import-{}", random_hex(8))));
        let unpacked = self.unpack_into(&work.0, body)?;
        self.commit_import(prep, unpacked)
    }

    fn unpack_into(&self, work: &Path, mut body: ChannelReader) -> Result<Unpacked, StoreError> {
        let slot = body.slot.clone();
        let layer_dir = work.join("layer");
        let diff = layer_dir.join("diff");
        fs::create_dir_all(&diff).map_err(|e| StoreError::io("creating import work dir", e))?;
        let blob = work.join("layer.tar");
        let out = File::create(&blob).map_err(|e| StoreError::io("creating layer blob", e))?;

        let invalid = |m: String| StoreError::InvalidArgument(format!("invalid tar archive: {m}"));
        let classify = |fallback: String| -> StoreError {
            match slot.lock().take() {
                Some(Failure::Store(e)) => StoreError::io("writing the layer blob", e),
                Some(Failure::Body(m)) => StoreError::InvalidArgument(format!(
                    "reading the archive from the request failed: {m}"
                )),
                None => invalid(fallback),
            }
        };

        // Peek enough bytes to recognise a compression format.
        let mut head = Vec::with_capacity(8);
        let mut chunk = [0u8; 8];
        while head.len() < 6 {
            let n = match body.read(&mut chunk[..6 - head.len()]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(classify(e.to_string())),
            };
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        if head.is_empty() {
            return Err(invalid("the archive is empty".into()));
        }
        for (magic, name) in [
            (MAGIC_BZIP2, "bzip2"),
            (MAGIC_XZ, "xz"),
            (MAGIC_ZSTD, "zstd"),
        ] {
            if head.starts_with(magic) {
                return Err(invalid(format!(
                    "{name} compression is not supported (use gzip or plain tar)"
                )));
            }
        }
        let gzip = head.starts_with(MAGIC_GZIP);
        let raw = Read::chain(io::Cursor::new(head), body);
        let decoded: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(raw))
        } else {
            Box::new(raw)
        };
        let tee = HashTee {
            inner: decoded,
            hasher: Sha256::new(),
            out: BufWriter::with_capacity(256 * 1024, out),
            len: 0,
            slot: slot.clone(),
        };
        let mut archive = tar::Archive::new(tee);
        let stats = match layer::unpack(&mut archive, &diff) {
            Ok(s) => s,
            Err(layer::UnpackError::Read(e)) => return Err(classify(e.to_string())),
            Err(layer::UnpackError::Refused(m)) => return Err(invalid(m)),
            Err(layer::UnpackError::Write { path, source }) => {
                let shown = path
                    .strip_prefix(&diff)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                return Err(StoreError::io(
                    format!("unpacking layer: writing /{shown}"),
                    source,
                ));
            }
        };
        // Whatever follows the end-of-archive marker belongs to the blob too.
        let mut tee = archive.into_inner();
        if let Err(e) = io::copy(&mut tee, &mut io::sink()) {
            return Err(classify(e.to_string()));
        }
        if tee.len == 0 || stats.entries == 0 && tee.len < 1024 {
            return Err(invalid("no tar header found".into()));
        }
        let diff_id = hex::encode(tee.hasher.finalize());
        let file = tee
            .out
            .into_inner()
            .map_err(|e| StoreError::io("writing the layer blob", e.into_error()))?;
        file.sync_all()
            .map_err(|e| StoreError::io("writing the layer blob", e))?;
        Ok(Unpacked {
            diff_id,
            size: stats.size,
            layer_dir,
            blob,
        })
    }

    fn commit_import(&self, prep: Prepared, u: Unpacked) -> Result<String, StoreError> {
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let diff_id = format!("sha256:{}", u.diff_id);
        let build_err =
            |e: oci_spec::OciSpecError| StoreError::Corrupt(format!("building image config: {e}"));
        let config = ImageConfigurationBuilder::default()
            .created(created.clone())
            .architecture(prep.arch.clone())
            .os(Os::Linux)
            .config(prep.config.clone())
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![diff_id])
                    .build()
                    .map_err(build_err)?,
            )
            .history(vec![HistoryBuilder::default()
                .created(created.clone())
                .comment(prep.comment.clone())
                .build()
                .map_err(build_err)?])
            .build()
            .map_err(build_err)?;
        // Through serde_json::Value: object keys come out sorted, so the
        // bytes (and so the ID) do not depend on hash-map order.
        let value =
            serde_json::to_value(&config).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let bytes = serde_json::to_vec(&value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let blob_size = fs::metadata(&u.blob)
            .map(|m| m.len())
            .map_err(|e| StoreError::io("reading the layer blob", e))?;
        let placed = self.place_layer(crate::content::Unpacked {
            diff_id: u.diff_id.clone(),
            size: u.size,
            blob: crate::db::BlobDesc {
                digest: u.diff_id.clone(),
                media_type: crate::media::OCI_LAYER_TAR.to_string(),
                size: blob_size,
            },
            blob_path: u.blob.clone(),
            layer_dir: u.layer_dir.clone(),
        })?;
        let id = self.commit_image(crate::content::NewImage {
            config: bytes,
            layers: vec![placed.diff_id],
            manifests: Vec::new(),
            repo_digest: None,
            tags: prep.tag.into_iter().collect(),
        })?;
        Ok(format!("sha256:{id}"))
    }
}
