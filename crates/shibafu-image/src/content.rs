//! The content store's write paths, shared by pull, load and import: a
//! layer unpacked from its blob bytes (gzip, zstd or plain, recognised by
//! magic) in one pass while the bytes are hashed and kept, the layer placed
//! under its diff ID, and the single commit that makes an image visible.
//!
//! Order, for crash safety: blob and layer dir are renamed into place only
//! verified, then their layer record is committed; an image record is
//! committed only once every layer and blob it names is in place. What a
//! crash leaves unreferenced is collected by [`crate::ImageStore::open`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use oci_spec::image::ImageConfiguration;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::db::{BlobDesc, ImageRecord, LayerRecord, Op};
use crate::{layer, random_hex, Image, Inner, StoreError};

/// Ingest files unused for this long are removed at start-up.
const INGEST_TTL: Duration = Duration::from_secs(24 * 3600);

const MAGIC_GZIP: &[u8] = &[0x1f, 0x8b];
const MAGIC_ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const MAGIC_BZIP2: &[u8] = b"BZh";
const MAGIC_XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// How a layer blob is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Recognises the compression from the blob's first bytes; bzip2 and xz
    /// are refused with a message naming them.
    pub(crate) fn sniff(head: &[u8]) -> Result<Compression, StoreError> {
        if head.starts_with(MAGIC_GZIP) {
            return Ok(Compression::Gzip);
        }
        if head.starts_with(MAGIC_ZSTD) {
            return Ok(Compression::Zstd);
        }
        for (magic, name) in [(MAGIC_BZIP2, "bzip2"), (MAGIC_XZ, "xz")] {
            if head.starts_with(magic) {
                return Err(StoreError::InvalidArgument(format!(
                    "unsupported layer compression {name} (gzip, zstd and plain tar are supported)"
                )));
            }
        }
        Ok(Compression::None)
    }

    /// The OCI media type of a layer blob with this compression.
    pub(crate) fn media_type(self) -> &'static str {
        match self {
            Compression::None => crate::media::OCI_LAYER_TAR,
            Compression::Gzip => crate::media::OCI_LAYER_GZIP,
            Compression::Zstd => crate::media::OCI_LAYER_ZSTD,
        }
    }
}

/// A work dir under `tmp/`, removed when dropped.
pub(crate) struct WorkDir(pub PathBuf);

impl WorkDir {
    pub(crate) fn new(inner: &Inner, what: &str) -> Result<WorkDir, StoreError> {
        let p = inner.tmp_dir().join(format!("{what}-{}", random_hex(8)));
        fs::create_dir_all(&p).map_err(|e| StoreError::io("creating a work dir", e))?;
        Ok(WorkDir(p))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = crate::remove_any(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot remove work dir");
        }
    }
}

/// A reader that hashes and counts what passes through it.
pub(crate) struct HashReader<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub len: u64,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    pub(crate) fn hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Calls `progress` with the running count of bytes read.
pub(crate) struct CountReader<R, F: Fn(u64)> {
    pub inner: R,
    pub count: u64,
    pub progress: F,
}

impl<R: Read, F: Fn(u64)> Read for CountReader<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        (self.progress)(self.count);
        Ok(n)
    }
}

/// What we know about a layer before reading it.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerExpect {
    /// Hex digest the blob bytes must have.
    pub blob_digest: Option<String>,
    /// Hex diff ID the uncompressed tar must have.
    pub diff_id: Option<String>,
}

/// A layer unpacked into a work dir, verified, not yet placed.
pub(crate) struct Unpacked {
    pub diff_id: String,
    pub size: u64,
    pub blob: BlobDesc,
    /// The file holding the blob bytes (renamed into `blobs/` on placing).
    pub blob_path: PathBuf,
    /// `<work>/layer` holding `diff/`.
    pub layer_dir: PathBuf,
}

/// Where the blob bytes read by [`Inner::unpack_layer`] are kept.
pub(crate) enum BlobSink {
    /// Append to this file (an ingest file, maybe already holding a prefix
    /// that `src` replays first: `skip` bytes of `src` are not written).
    Append { path: PathBuf, skip: u64 },
    /// The source already is this stored file: nothing to write.
    Existing(PathBuf),
}

/// Reads `skip` bytes unwritten, then writes everything after to `out`
/// (when there is one), starting the disk writes as it goes.
struct SkipTee<R> {
    inner: R,
    skip: u64,
    out: Option<BufWriter<File>>,
    write_error: Arc<Mutex<Option<io::Error>>>,
    /// Bytes written to `out`, and how many of them writeback was started for.
    written: u64,
    flushed: u64,
    /// Where `out` started (an appended ingest file's old length).
    base: u64,
}

impl<R: Read> Read for SkipTee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let unwritten = self.skip.min(n as u64) as usize;
        self.skip -= unwritten as u64;
        if let Some(out) = self.out.as_mut().filter(|_| n > unwritten) {
            if let Err(e) = out.write_all(&buf[unwritten..n]) {
                let kind = e.kind();
                *self.write_error.lock() = Some(e);
                return Err(io::Error::new(kind, "writing the layer blob failed"));
            }
            self.written += (n - unwritten) as u64;
            if self.written - self.flushed >= layer::EARLY_WRITEBACK_CHUNK {
                // What the BufWriter still holds is started next time.
                let done = self.written - out.buffer().len() as u64;
                if done > self.flushed {
                    layer::start_writeback(
                        out.get_ref(),
                        self.base + self.flushed,
                        done - self.flushed,
                    );
                    self.flushed = done;
                }
            }
        }
        Ok(n)
    }
}

impl Inner {
    /// Reads a layer blob from `src` (compression sniffed), unpacks it into
    /// a fresh dir under `work`, and checks both digests. The blob bytes
    /// are kept as `sink` says. `progress(n)` gets the count of blob bytes
    /// read.
    ///
    /// Two threads: one reads the blob (keeping and hashing its bytes), the
    /// other decompresses, hashes and unpacks what the first hands over. A
    /// pull's big layer was one core's work end to end before (~110 MB/s).
    pub(crate) fn unpack_layer(
        &self,
        src: &mut (dyn Read + Send),
        sink: BlobSink,
        expect: &LayerExpect,
        work: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Unpacked, StoreError> {
        let layer_dir = work.join(format!("layer-{}", random_hex(6)));
        let diff = layer_dir.join("diff");
        fs::create_dir_all(&diff).map_err(|e| StoreError::io("creating a layer work dir", e))?;
        let write_error = Arc::new(Mutex::new(None));
        let (blob_path, skip, out, base) = match sink {
            BlobSink::Append { path, skip } => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| StoreError::io("opening the layer blob", e))?;
                let base = f.metadata().map(|m| m.len()).unwrap_or(0);
                (
                    path,
                    skip,
                    Some(BufWriter::with_capacity(512 * 1024, f)),
                    base,
                )
            }
            BlobSink::Existing(path) => (path, 0, None, 0),
        };
        let tee = SkipTee {
            inner: src,
            skip,
            out,
            write_error: write_error.clone(),
            written: 0,
            flushed: 0,
            base,
        };
        let read_failed = |e: io::Error| -> StoreError {
            match write_error.lock().take() {
                Some(w) => StoreError::io("writing the layer blob", w),
                None => StoreError::InvalidArgument(format!("reading the layer failed: {e}")),
            }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(16);
        std::thread::scope(|scope| {
            let blob_side = scope.spawn(move || read_blob(tee, progress, tx));
            let mut chan = ChunkReader {
                rx,
                cur: Vec::new(),
                pos: 0,
            };
            let content = unpack_content(&mut chan, &diff);
            // Whatever follows the tar belongs to the blob (and its digest):
            // read it all so the blob side ends.
            let drained = match &content {
                Ok(_) => io::copy(&mut chan, &mut io::sink()).map(|_| ()),
                Err(_) => Ok(()),
            };
            drop(chan);
            let blob = blob_side
                .join()
                .map_err(|_| StoreError::Corrupt("the layer reader panicked".into()))?;
            let (comp, diff_hex, stats) = match content {
                Ok(c) => c,
                Err(ContentError::Read(e)) => return Err(read_failed(e)),
                Err(ContentError::Store(e)) => return Err(e),
            };
            drained.map_err(read_failed)?;
            let (blob_hex, blob_len, out) = blob;
            if let Some(want) = &expect.blob_digest {
                if *want != blob_hex {
                    return Err(StoreError::DigestMismatch(format!(
                        "filesystem layer verification failed for digest sha256:{want}: got sha256:{blob_hex}"
                    )));
                }
            }
            if let Some(want) = &expect.diff_id {
                if *want != diff_hex {
                    return Err(StoreError::DigestMismatch(format!(
                        "layer sha256:{blob_hex} unpacks to diff ID sha256:{diff_hex}, the image config says sha256:{want}"
                    )));
                }
            }
            if let Some(out) = out {
                // Durable with the syncfs of the image commit that uses it.
                out.into_inner()
                    .map_err(|e| StoreError::io("writing the layer blob", e.into_error()))?;
            }
            Ok(Unpacked {
                diff_id: diff_hex,
                size: stats.size,
                blob: BlobDesc {
                    digest: blob_hex,
                    media_type: comp.media_type().to_string(),
                    size: blob_len,
                },
                blob_path,
                layer_dir: layer_dir.clone(),
            })
        })
    }

    /// Places an unpacked layer: its dir under `layers/<diff>`, its blob
    /// under `blobs/`, and its record. A layer another pull placed
    /// meanwhile is kept (ours is dropped); a new blob form of a known
    /// layer is added to its record.
    ///
    /// Nothing is synced here: a layer's data is made durable by the one
    /// `syncfs` of [`Inner::commit_image`] before any image names it (a
    /// layer no image names is removed at start-up anyway). One sync per
    /// image instead of one per layer halved the sync wait of a pull.
    pub(crate) fn place_layer(&self, u: Unpacked) -> Result<LayerRecord, StoreError> {
        let _w = self.write.lock();
        let existing = self.state.read().layers.get(&u.diff_id).cloned();
        let blob_dest = self.blob_path(&u.blob.digest);
        let mut placed: Vec<PathBuf> = Vec::new();
        let res = (|| -> Result<LayerRecord, StoreError> {
            let mut rec = match existing {
                Some(r) => r,
                None => {
                    let dest = self.layer_dir(&u.diff_id);
                    // A leftover with this name is garbage (no record points to it).
                    crate::remove_any(&dest)
                        .map_err(|e| StoreError::io("removing a stale layer", e))?;
                    fs::rename(&u.layer_dir, &dest)
                        .map_err(|e| StoreError::io("storing the layer", e))?;
                    placed.push(dest);
                    LayerRecord {
                        diff_id: u.diff_id.clone(),
                        size: u.size,
                        blobs: Vec::new(),
                    }
                }
            };
            if rec.blobs.is_empty() && self.blob_path(&rec.diff_id).exists() {
                // A legacy record: make its implicit uncompressed blob explicit.
                rec.blobs = rec.blob_list();
            }
            if !rec.blobs.iter().any(|b| b.digest == u.blob.digest) {
                if !blob_dest.exists() {
                    fs::rename(&u.blob_path, &blob_dest)
                        .map_err(|e| StoreError::io("storing the layer blob", e))?;
                    placed.push(blob_dest.clone());
                }
                rec.blobs.push(u.blob.clone());
            }
            self.meta.commit(&[Op::PutLayer(rec.clone())])?;
            Ok(rec)
        })();
        match res {
            Ok(rec) => {
                if u.blob_path != blob_dest {
                    let _ = fs::remove_file(&u.blob_path);
                }
                self.state
                    .write()
                    .layers
                    .insert(rec.diff_id.clone(), rec.clone());
                Ok(rec)
            }
            Err(e) => {
                for p in placed {
                    let _ = crate::remove_any(&p);
                }
                Err(e)
            }
        }
    }

    /// Stores small content (configs, manifests) under its digest; returns
    /// the hex digest. Already stored content is left as it is.
    pub(crate) fn put_small_blob(&self, data: &[u8]) -> Result<String, StoreError> {
        let hex = crate::sha256_hex(data);
        let dest = self.blob_path(&hex);
        if !dest.exists() {
            crate::write_atomic(&self.tmp_dir(), &dest, data)
                .map_err(|e| StoreError::io("storing a blob", e))?;
        }
        Ok(hex)
    }

    /// Makes an image visible: config and manifests stored, then one
    /// metadata commit with the image record and its tags. Every layer must
    /// be placed already. An image that exists gains the new repo digest,
    /// manifests and tags. Returns the image ID hex.
    pub(crate) fn commit_image(&self, new: NewImage) -> Result<String, StoreError> {
        let config = ImageConfiguration::from_reader(&new.config[..])
            .map_err(|e| StoreError::InvalidArgument(format!("invalid image config: {e}")))?;
        let diff_ids: Vec<String> = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| d.strip_prefix("sha256:").unwrap_or(d).to_string())
            .collect();
        if diff_ids != new.layers {
            return Err(StoreError::InvalidArgument(format!(
                "the image config names {} layers that are not the {} layers given",
                diff_ids.len(),
                new.layers.len()
            )));
        }
        let id = self.put_small_blob(&new.config)?;
        let mut manifests = Vec::new();
        for m in &new.manifests {
            manifests.push(self.put_small_blob(m)?);
        }
        // Everything the image names (layers placed by this or another
        // pull, their blobs, config, manifests, the renames) is on disk
        // before the record that makes it visible.
        let t = std::time::Instant::now();
        crate::syncfs(&self.root).map_err(|e| StoreError::io("syncing the image store", e))?;
        tracing::debug!(
            elapsed_ms = t.elapsed().as_millis() as u64,
            "image store synced"
        );
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let _w = self.write.lock();
        let (mut rec, size) = {
            let st = self.state.read();
            let mut size = 0;
            for l in &new.layers {
                match st.layers.get(l) {
                    Some(r) => size += r.size,
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "layer sha256:{l} is not in the store"
                        )))
                    }
                }
            }
            let rec = st.images.get(&id).map(|i| i.rec.clone());
            (rec, size)
        };
        let rec = match rec.as_mut() {
            Some(r) => {
                for m in manifests {
                    if !r.manifests.contains(&m) {
                        r.manifests.push(m);
                    }
                }
                if let Some(d) = &new.repo_digest {
                    // One digest per repository, the latest, as Docker keeps it.
                    let repo = d.split('@').next().unwrap_or_default();
                    r.repo_digests
                        .retain(|o| o.split('@').next().unwrap_or_default() != repo);
                    r.repo_digests.push(d.clone());
                }
                if !new.tags.is_empty() {
                    r.last_tag_time = Some(now.clone());
                }
                r.clone()
            }
            None => ImageRecord {
                id: id.clone(),
                layers: new.layers.clone(),
                size,
                last_tag_time: (!new.tags.is_empty()).then(|| now.clone()),
                repo_digests: new.repo_digest.iter().cloned().collect(),
                manifests,
                stored_at: Some(now.clone()),
            },
        };
        let mut ops = vec![Op::PutImage(rec.clone())];
        for t in &new.tags {
            ops.push(Op::PutTag(t.clone(), id.clone()));
        }
        self.meta.commit(&ops)?;
        let mut st = self.state.write();
        st.images.insert(id.clone(), Image { rec, config });
        for t in new.tags {
            st.tags.insert(t, id.clone());
        }
        Ok(id)
    }

    /// What `save` and `push` need of an image.
    pub(crate) fn export_image(&self, reference: &str) -> Result<ExportImage, StoreError> {
        let st = self.state.read();
        let found = st.find(reference)?;
        let img = &st.images[&found.id];
        let config = fs::read(self.blob_path(&found.id))
            .map_err(|e| StoreError::io("reading the image config", e))?;
        let mut layers = Vec::new();
        for l in &img.rec.layers {
            let rec = st
                .layers
                .get(l)
                .ok_or_else(|| StoreError::Corrupt(format!("layer sha256:{l} is missing")))?;
            let mut blobs = rec.blob_list();
            for b in &mut blobs {
                if b.size == 0 {
                    b.size = fs::metadata(self.blob_path(&b.digest))
                        .map(|m| m.len())
                        .unwrap_or(0);
                }
            }
            layers.push(ExportLayer {
                diff_id: l.clone(),
                blobs,
            });
        }
        let mut manifests = Vec::new();
        for m in &img.rec.manifests {
            if let Ok(bytes) = fs::read(self.blob_path(m)) {
                manifests.push((m.clone(), bytes));
            }
        }
        Ok(ExportImage {
            id: found.id.clone(),
            config,
            layers,
            manifests,
            named_tag: found.tag.clone(),
            repo_digests: img.rec.repo_digests.clone(),
        })
    }

    /// A stored blob's path (for streaming it out).
    pub(crate) fn blob_file(&self, hex: &str) -> PathBuf {
        self.blob_path(hex)
    }
}

/// A new image for [`Inner::commit_image`].
#[derive(Debug, Clone, Default)]
pub(crate) struct NewImage {
    /// The config JSON, exact bytes (its digest is the image ID).
    pub config: Vec<u8>,
    /// Diff IDs (hex), lowest first; every one already placed.
    pub layers: Vec<String>,
    /// Manifest and index blobs to keep, exact bytes.
    pub manifests: Vec<Vec<u8>>,
    /// `familiar-repo@sha256:<hex>` to add to `RepoDigests`.
    pub repo_digest: Option<String>,
    /// Familiar `repo:tag` names to point at the image.
    pub tags: Vec<String>,
}

/// An image as `save` and `push` read it.
#[derive(Debug, Clone)]
pub(crate) struct ExportImage {
    /// Hex image ID.
    pub id: String,
    pub config: Vec<u8>,
    pub layers: Vec<ExportLayer>,
    /// (hex digest, bytes) of the kept manifests and indexes.
    pub manifests: Vec<(String, Vec<u8>)>,
    /// The `repo:tag` the reference named, when it named one.
    pub named_tag: Option<String>,
    pub repo_digests: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ExportLayer {
    pub diff_id: String,
    /// Stored blob forms (at least one); paths from [`Inner::blob_file`].
    pub blobs: Vec<BlobDesc>,
}

/// Layers that pulls and loads in progress will reference: `rmi` and
/// `prune` must not delete them between their placing and the image commit.
#[derive(Default, Clone)]
pub(crate) struct Pins {
    map: Arc<Mutex<HashMap<String, usize>>>,
}

/// Unpins its layers when dropped.
pub(crate) struct PinGuard {
    pins: Pins,
    layers: Vec<String>,
}

impl Pins {
    pub(crate) fn pin(&self, layers: &[String]) -> PinGuard {
        let mut m = self.map.lock();
        for l in layers {
            *m.entry(l.clone()).or_default() += 1;
        }
        PinGuard {
            pins: self.clone(),
            layers: layers.to_vec(),
        }
    }

    pub(crate) fn contains(&self, layer: &str) -> bool {
        self.map.lock().contains_key(layer)
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut m = self.pins.map.lock();
        for l in &self.layers {
            if let Some(n) = m.get_mut(l) {
                *n -= 1;
                if *n == 0 {
                    m.remove(l);
                }
            }
        }
    }
}

/// The result a finished layer download announces to pulls waiting on it.
pub(crate) type Outcome = Option<Result<(), String>>;

/// Layer downloads in progress by diff ID: the first pull to claim a layer
/// fetches it, later ones wait for its outcome.
#[derive(Default, Clone)]
pub(crate) struct Inflight {
    map: Arc<Mutex<HashMap<String, watch::Receiver<Outcome>>>>,
}

pub(crate) enum Claim {
    Mine(ClaimGuard),
    Wait(watch::Receiver<Outcome>),
}

/// Held by the pull that fetches a layer; tells the waiters how it ended
/// (a guard dropped without [`ClaimGuard::done`] reports a failure).
pub(crate) struct ClaimGuard {
    owner: Inflight,
    key: String,
    tx: watch::Sender<Outcome>,
    finished: bool,
}

impl Inflight {
    pub(crate) fn claim(&self, diff_id: &str) -> Claim {
        let mut m = self.map.lock();
        if let Some(rx) = m.get(diff_id) {
            return Claim::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        m.insert(diff_id.to_string(), rx);
        Claim::Mine(ClaimGuard {
            owner: self.clone(),
            key: diff_id.to_string(),
            tx,
            finished: false,
        })
    }
}

impl ClaimGuard {
    pub(crate) fn done(mut self, res: Result<(), String>) {
        self.finished = true;
        self.owner.map.lock().remove(&self.key);
        let _ = self.tx.send(Some(res));
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.owner.map.lock().remove(&self.key);
            let _ = self
                .tx
                .send(Some(Err("the download was abandoned".to_string())));
        }
    }
}

/// How the content side of [`Inner::unpack_layer`] failed.
enum ContentError {
    /// Reading failed: bad content, or the blob side's own failure.
    Read(io::Error),
    Store(StoreError),
}

/// The blob side of [`Inner::unpack_layer`]: reads the blob through the
/// tee (kept bytes) and a hasher, hands the bytes over in chunks, and
/// returns the blob digest, length and the kept file's writer.
fn read_blob<R: Read>(
    tee: SkipTee<R>,
    progress: &(dyn Fn(u64) + Sync),
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
) -> (String, u64, Option<BufWriter<File>>) {
    let mut h = HashReader::new(CountReader {
        inner: tee,
        count: 0,
        progress,
    });
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match h.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx.send(Ok(buf[..n].to_vec())).is_err() {
                    break; // the content side gave up
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        }
    }
    let hex = h.hex();
    let len = h.len;
    (hex, len, h.inner.inner.out)
}

/// The content side: sniffs the compression, decompresses, hashes the tar
/// (diff ID) and unpacks it into `diff`.
fn unpack_content(
    src: &mut dyn Read,
    diff: &Path,
) -> Result<(Compression, String, layer::UnpackStats), ContentError> {
    let mut head = Vec::with_capacity(8);
    let mut chunk = [0u8; 8];
    while head.len() < 6 {
        match src.read(&mut chunk[..6 - head.len()]) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ContentError::Read(e)),
        }
    }
    if head.is_empty() {
        return Err(ContentError::Store(StoreError::InvalidArgument(
            "the layer is empty".into(),
        )));
    }
    let comp = Compression::sniff(&head).map_err(ContentError::Store)?;
    let raw = io::Cursor::new(head).chain(src);
    let decoded: Box<dyn Read + '_> =
        match comp {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw).map_err(|e| {
                ContentError::Store(StoreError::io("starting zstd decompression", e))
            })?),
        };
    let mut diff_hash = HashReader::new(decoded);
    let mut archive = tar::Archive::new(&mut diff_hash);
    let stats = match layer::unpack(&mut archive, diff) {
        Ok(s) => s,
        Err(layer::UnpackError::Read(e)) => return Err(ContentError::Read(e)),
        Err(layer::UnpackError::Refused(m)) => {
            return Err(ContentError::Store(StoreError::InvalidArgument(format!(
                "invalid layer: {m}"
            ))))
        }
        Err(layer::UnpackError::Write { path, source }) => {
            let shown = path
                .strip_prefix(diff)
                .unwrap_or(&path)
                .display()
                .to_string();
            return Err(ContentError::Store(StoreError::io(
                format!("unpacking layer: writing /{shown}"),
                source,
            )));
        }
    };
    // The diff ID covers the whole tar, the padding after its end marker
    // included.
    let rest = archive.into_inner();
    io::copy(rest, &mut io::sink()).map_err(ContentError::Read)?;
    if diff_hash.len == 0 {
        return Err(ContentError::Store(StoreError::InvalidArgument(
            "invalid layer: no tar header found".into(),
        )));
    }
    Ok((comp, diff_hash.hex(), stats))
}

/// Reads the chunks the blob side hands over.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Removes ingest files unused for [`INGEST_TTL`].
pub(crate) fn expire_ingests(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > INGEST_TTL);
        if old {
            let _ = fs::remove_file(e.path());
        }
    }
}
