//! shibafu's image store: content-addressed blobs, unpacked layers shared
//! read-only between containers, image/tag metadata in redb, `import`, and
//! the per-container OverlayFS rootfs ([`rootfs`]).
//!
//! On-disk layout under the store root (`<data-root>/image`):
//! - `blobs/sha256/<hex>`: content by digest, exactly as pulled, pushed,
//!   loaded or imported: compressed layer blobs (gzip, zstd or plain tar),
//!   image configs (digest = image ID), manifests and indexes;
//! - `layers/<diff-id-hex>/diff`: unpacked layers, OverlayFS lower dirs,
//!   one per distinct layer whatever images share it;
//! - `meta.redb`: image records, `repo:tag` references, layer records;
//! - `ingest/<hex>`: blob downloads in progress or finished but not yet
//!   part of an image: a pull that was cut resumes from them (HTTP Range);
//!   removed after a day unused;
//! - `tmp/`: work dirs of imports, pulls and deletions in progress.
//!
//! Invariants: a layer dir or blob becomes visible (renamed into place)
//! only complete and verified; metadata is committed only after what it
//! points to is in place; whatever no committed image references (a crash
//! between the two) is removed at [`ImageStore::open`] (a layer's blobs go
//! back to `ingest/`, so the next pull does not fetch them again), as is
//! everything under `tmp/`.

mod archive;
mod backend;
mod changes;
mod content;
mod db;
mod filters;
mod import;
mod layer;
mod progress;
mod pull;
mod push;
pub mod reference;
pub mod rootfs;
pub mod topdir;

pub use shibafu_distribution::{media, ClientConfig as RegistryConfig};

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::ImageConfiguration;
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};

use db::{ImageRecord, LayerRecord, Meta, Op};

pub use changes::ChangeError;
pub use layer::UnpackError;
pub use reference::{ImageRef, ReferenceError};

/// Errors of the store. [`From<StoreError> for shibafu_api::ApiError`]
/// maps them to Docker's status codes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The message is the reference as given; Display adds "No such image".
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no space left on device: {0}")]
    NoSpace(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Content that does not match its digest (a corrupt download).
    #[error("{0}")]
    DigestMismatch(String),
    /// A registry failed or refused (the message is dockerd's text).
    #[error("{0}")]
    Registry(String),
    /// The registry refused the credentials.
    #[error("{0}")]
    Unauthorized(String),
    #[error("image metadata database: {0}")]
    Db(String),
    #[error("corrupt image store: {0}")]
    Corrupt(String),
}

impl StoreError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return StoreError::NoSpace(context);
        }
        StoreError::Io { context, source }
    }
}

impl From<db::DbError> for StoreError {
    fn from(e: db::DbError) -> Self {
        StoreError::Db(e.to_string())
    }
}

impl From<StoreError> for shibafu_api::ApiError {
    fn from(e: StoreError) -> Self {
        use shibafu_api::ApiError;
        match e {
            StoreError::NotFound(_) => ApiError::NotFound(e.to_string()),
            StoreError::InvalidArgument(m) => ApiError::InvalidArgument(m),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Unauthorized(m) => ApiError::Unauthorized(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// An image found by [`ImageStore::resolve`]: what the engine needs to
/// create a container from it.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// `sha256:<64 hex>`.
    pub id: String,
    pub config: ImageConfiguration,
    /// Unpacked layer directories, LOWEST first.
    pub layers: Vec<PathBuf>,
    pub repo_tags: Vec<String>,
    /// Bytes of content in the image's layers (`docker images` SIZE).
    pub size: u64,
}

/// The image store. Cheap to share in an `Arc`; all methods take `&self`.
pub struct ImageStore {
    inner: Arc<Inner>,
}

/// An image as kept in memory: its record and parsed config.
#[derive(Debug, Clone)]
struct Image {
    rec: ImageRecord,
    config: ImageConfiguration,
}

#[derive(Debug, Default)]
struct State {
    images: BTreeMap<String, Image>,
    /// familiar `repo:tag` => image ID hex.
    tags: BTreeMap<String, String>,
    layers: BTreeMap<String, LayerRecord>,
}

/// How a reference matched an image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    /// Image ID hex.
    id: String,
    /// The `repo:tag` the reference named, when it named one.
    tag: Option<String>,
}

impl State {
    fn find(&self, reference: &str) -> Result<Found, StoreError> {
        let not_found = || StoreError::NotFound(reference.to_string());
        if let Some(hex) = reference.strip_prefix("sha256:") {
            return self.find_prefix(hex).ok_or_else(not_found);
        }
        if let Ok(r) = reference::parse(reference) {
            match &r.digest {
                None => {
                    let t = r.tagged();
                    if let Some(id) = self.tags.get(&t) {
                        return Ok(Found {
                            id: id.clone(),
                            tag: Some(t),
                        });
                    }
                }
                Some(d) => {
                    // `repo@sha256:...`: the image pulled by (or pushed as)
                    // that manifest.
                    let want = format!("{}@{d}", r.repo);
                    return self
                        .images
                        .values()
                        .find(|i| i.rec.repo_digests.contains(&want))
                        .map(|i| Found {
                            id: i.rec.id.clone(),
                            tag: None,
                        })
                        .ok_or_else(not_found);
                }
            }
        }
        self.find_prefix(reference).ok_or_else(not_found)
    }

    /// A unique image whose ID starts with `prefix` (lowercase hex).
    fn find_prefix(&self, prefix: &str) -> Option<Found> {
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let mut it = self
            .images
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        let first = it.next()?;
        if it.next().is_some() {
            return None;
        }
        Some(Found {
            id: first.0.clone(),
            tag: None,
        })
    }

    fn tags_of(&self, id: &str) -> Vec<String> {
        self.tags
            .iter()
            .filter(|(_, v)| v.as_str() == id)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Diff IDs of the layers that some image other than `except` uses.
    fn layers_used(&self, except: &HashSet<&str>) -> HashSet<&str> {
        self.images
            .values()
            .filter(|i| !except.contains(i.rec.id.as_str()))
            .flat_map(|i| i.rec.layers.iter().map(String::as_str))
            .collect()
    }

    /// Blob digests (hex) that images other than `except` need: their
    /// configs, manifests, and their layers' blobs.
    fn blobs_used(&self, except: &HashSet<&str>) -> HashSet<String> {
        let mut out = HashSet::new();
        for i in self.images.values() {
            if except.contains(i.rec.id.as_str()) {
                continue;
            }
            out.insert(i.rec.id.clone());
            out.extend(i.rec.manifests.iter().cloned());
            for l in &i.rec.layers {
                if let Some(rec) = self.layers.get(l) {
                    out.extend(rec.blob_list().into_iter().map(|b| b.digest));
                }
            }
        }
        out
    }
}

struct Inner {
    root: PathBuf,
    meta: Meta,
    state: RwLock<State>,
    /// Serialises every change (the db has one writer anyway; this also
    /// covers the file-system half of each change).
    write: Mutex<()>,
    users: RwLock<Option<Arc<dyn shibafu_api::ImageUsers>>>,
    /// Registry client shared by pulls, pushes and logins.
    registry: shibafu_distribution::Client,
    /// Layer downloads in progress, by diff ID, so concurrent pulls fetch a
    /// shared layer once.
    inflight: content::Inflight,
    /// Layers of pulls and loads in progress, kept from `rmi`/`prune`.
    pins: content::Pins,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root` and removes what
    /// interrupted imports and deletions left behind.
    pub fn open(root: &Path) -> Result<ImageStore, StoreError> {
        for d in ["blobs/sha256", "layers", "tmp", "ingest"] {
            let p = root.join(d);
            fs::create_dir_all(&p)
                .map_err(|e| StoreError::io(format!("creating {}", p.display()), e))?;
        }
        let tmp = root.join("tmp");
        // Each layer's work dir (and so the layer, renamed from it) gets a
        // block group of its own (topdir.rs). Only a hint.
        if let Err(e) = topdir::mark(&tmp) {
            tracing::debug!(error = %e, "cannot set TOPDIR on the image work dir");
        }
        for e in read_dir_names(&tmp)? {
            let p = tmp.join(&e);
            if let Err(err) = remove_any(&p) {
                tracing::warn!(path = %p.display(), error = %err, "cannot remove stale temp dir");
            }
        }
        let meta = Meta::open(&root.join("meta.redb"))?;
        let registry = shibafu_distribution::Client::new(RegistryConfig {
            user_agent: user_agent(),
            ..Default::default()
        })
        .map_err(|e| StoreError::Corrupt(format!("registry client: {e}")))?;
        let inner = Inner {
            root: root.to_path_buf(),
            meta,
            state: RwLock::new(State::default()),
            write: Mutex::new(()),
            users: RwLock::new(None),
            registry,
            inflight: content::Inflight::default(),
            pins: content::Pins::default(),
        };
        inner.load_and_collect()?;
        Ok(ImageStore {
            inner: Arc::new(inner),
        })
    }

    /// Sets how registries are reached (`--insecure-registry`,
    /// `--registry-mirror`); applies to pulls and pushes that start later.
    pub fn set_registry_config(&self, mut cfg: RegistryConfig) {
        if cfg.user_agent.is_empty() {
            cfg.user_agent = user_agent();
        }
        self.inner.registry.reconfigure(cfg);
    }

    /// Registers who uses images (the engine), so `rmi`/`prune` can refuse
    /// or skip images that containers use.
    pub fn set_users(&self, users: Arc<dyn shibafu_api::ImageUsers>) {
        *self.inner.users.write() = Some(users);
    }

    /// Finds an image by name (`busybox`, `busybox:latest`,
    /// `localhost:5000/a/b:t`), full ID, `sha256:<id>` or unique ID prefix.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, StoreError> {
        let st = self.inner.state.read();
        let found = st.find(reference)?;
        let img = &st.images[&found.id];
        Ok(ResolvedImage {
            id: format!("sha256:{}", found.id),
            config: img.config.clone(),
            layers: img
                .rec
                .layers
                .iter()
                .map(|c| self.inner.layer_diff(c))
                .collect(),
            repo_tags: st.tags_of(&found.id),
            size: img.rec.size,
        })
    }

    /// Number of images.
    pub fn count(&self) -> usize {
        self.inner.state.read().images.len()
    }

    /// Bytes used by all layers (each shared layer counted once).
    pub fn total_size(&self) -> u64 {
        self.inner
            .state
            .read()
            .layers
            .values()
            .map(|l| l.size)
            .sum()
    }
}

impl Inner {
    fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }

    fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.root.join("layers").join(diff_id)
    }

    fn layer_diff(&self, diff_id: &str) -> PathBuf {
        self.layer_dir(diff_id).join("diff")
    }

    fn ingest_path(&self, hex: &str) -> PathBuf {
        self.root.join("ingest").join(hex)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn users_in_use(&self) -> HashSet<String> {
        match &*self.users.read() {
            Some(u) => u.images_in_use(),
            None => HashSet::new(),
        }
    }

    /// Loads the metadata, drops records whose content is gone, and removes
    /// layers and blobs that no record references.
    fn load_and_collect(&self) -> Result<(), StoreError> {
        let contents = self.meta.load()?;
        let mut st = State::default();
        let mut ops = Vec::new();
        for (id, rec) in contents.images {
            let cfg_path = self.blob_path(&id);
            let config = match fs::read(&cfg_path)
                .map_err(|e| e.to_string())
                .and_then(|b| ImageConfiguration::from_reader(&b[..]).map_err(|e| e.to_string()))
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(image = %id, error = %e, "image config unreadable, dropping the image");
                    ops.push(Op::DelImage(id));
                    continue;
                }
            };
            let missing = rec
                .layers
                .iter()
                .find(|c| !contents.layers.contains_key(*c) || !self.layer_diff(c).is_dir());
            if let Some(c) = missing {
                tracing::warn!(image = %id, layer = %c, "image layer missing, dropping the image");
                ops.push(Op::DelImage(id));
                continue;
            }
            st.images.insert(id, Image { rec, config });
        }
        for (tag, id) in contents.tags {
            if st.images.contains_key(&id) {
                st.tags.insert(tag, id);
            } else {
                ops.push(Op::DelTag(tag));
            }
        }
        let used: HashSet<String> = st
            .layers_used(&HashSet::new())
            .into_iter()
            .map(String::from)
            .collect();
        let mut orphan_layers = Vec::new();
        for (diff, rec) in contents.layers {
            if used.contains(&diff) {
                st.layers.insert(diff, rec);
            } else {
                ops.push(Op::DelLayer(diff));
                orphan_layers.push(rec);
            }
        }
        self.meta.commit(&ops)?;

        // Files nobody references: leftovers of a crash between the file
        // and the metadata half of an import or a deletion.
        let layers_root = self.root.join("layers");
        for name in read_dir_names(&layers_root)? {
            if !st.layers.contains_key(&name) {
                tracing::info!(layer = %name, "removing unreferenced layer");
                self.discard(&layers_root.join(&name));
            }
        }
        let blobs = st.blobs_used(&HashSet::new());
        // The blobs of layers no image got to use (a pull cut between its
        // layers and its image) go back to ingest/: the next pull takes
        // them from there instead of the network.
        let keep_for_ingest: HashSet<String> = orphan_layers
            .iter()
            .flat_map(|l| l.blob_list().into_iter().map(|b| b.digest))
            .collect();
        let blob_root = self.root.join("blobs/sha256");
        for name in read_dir_names(&blob_root)? {
            if blobs.contains(&name) {
                continue;
            }
            let p = blob_root.join(&name);
            if keep_for_ingest.contains(&name) && fs::rename(&p, self.ingest_path(&name)).is_ok() {
                tracing::info!(blob = %name, "unreferenced layer blob kept for the next pull");
                continue;
            }
            tracing::info!(blob = %name, "removing unreferenced blob");
            let _ = fs::remove_file(p);
        }
        content::expire_ingests(&self.root.join("ingest"));
        *self.state.write() = st;
        Ok(())
    }

    /// Removes a directory by first renaming it into `tmp/`, so a crash
    /// half-way never leaves a partial layer where a whole one is expected.
    fn discard(&self, path: &Path) {
        let grave = self.tmp_dir().join(format!("del-{}", random_hex(8)));
        let target = match fs::rename(path, &grave) {
            Ok(()) => grave,
            Err(_) => path.to_path_buf(),
        };
        if let Err(e) = remove_any(&target) {
            tracing::warn!(path = %target.display(), error = %e, "cannot remove");
        }
    }

    /// Removes an image's record, tags, config, and the layers no other
    /// image uses. Returns the response items and bytes freed. Caller holds
    /// the write lock and has decided the image may go.
    fn delete_images(
        &self,
        ids: &[String],
        untag_items: bool,
    ) -> Result<(Vec<bollard_stubs::models::ImageDeleteResponseItem>, u64), StoreError> {
        use bollard_stubs::models::ImageDeleteResponseItem as Item;
        let mut ops = Vec::new();
        let mut items = Vec::new();
        let mut layers_gone = Vec::new();
        let mut candidates: Vec<String> = ids.to_vec();
        {
            let st = self.state.read();
            let doomed: HashSet<&str> = ids.iter().map(String::as_str).collect();
            let still_used = st.layers_used(&doomed);
            let mut seen = HashSet::new();
            for id in ids {
                let Some(img) = st.images.get(id) else {
                    continue;
                };
                for t in st.tags_of(id) {
                    if untag_items {
                        items.push(Item {
                            untagged: Some(t.clone()),
                            deleted: None,
                        });
                    }
                    ops.push(Op::DelTag(t));
                }
                if untag_items {
                    for d in &img.rec.repo_digests {
                        items.push(Item {
                            untagged: Some(d.clone()),
                            deleted: None,
                        });
                    }
                }
                ops.push(Op::DelImage(id.clone()));
                candidates.extend(img.rec.manifests.iter().cloned());
                items.push(Item {
                    untagged: None,
                    deleted: Some(format!("sha256:{id}")),
                });
                for c in img.rec.layers.iter().rev() {
                    if !still_used.contains(c.as_str())
                        && !self.pins.contains(c)
                        && seen.insert(c.clone())
                    {
                        if let Some(l) = st.layers.get(c) {
                            layers_gone.push(l.clone());
                        }
                        ops.push(Op::DelLayer(c.clone()));
                        items.push(Item {
                            untagged: None,
                            deleted: Some(format!("sha256:{c}")),
                        });
                    }
                }
            }
        }
        self.meta.commit(&ops)?;
        let freed: u64 = layers_gone.iter().map(|l| l.size).sum();
        {
            let mut st = self.state.write();
            for op in &ops {
                match op {
                    Op::DelTag(t) => {
                        st.tags.remove(t);
                    }
                    Op::DelImage(id) => {
                        st.images.remove(id);
                    }
                    Op::DelLayer(c) => {
                        st.layers.remove(c);
                    }
                    _ => {}
                }
            }
        }
        // Metadata is committed: from here on, failures only leave garbage
        // that the next open collects.
        for l in &layers_gone {
            self.discard(&self.layer_dir(&l.diff_id));
            candidates.extend(l.blob_list().into_iter().map(|b| b.digest));
        }
        let used = self.state.read().blobs_used(&HashSet::new());
        for hex in candidates {
            if !used.contains(&hex) {
                let _ = fs::remove_file(self.blob_path(&hex));
            }
        }
        Ok((items, freed))
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let rd =
        fs::read_dir(dir).map_err(|e| StoreError::io(format!("reading {}", dir.display()), e))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| StoreError::io(format!("reading {}", dir.display()), e))?;
        out.push(e.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

/// `shibafu/<version>`, the User-Agent registries see.
fn user_agent() -> String {
    format!("shibafu/{}", env!("CARGO_PKG_VERSION"))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Writes `data` to `dest` via a synced temp file and rename.
fn write_atomic(tmp_dir: &Path, dest: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tmp_dir.join(format!("w-{}", random_hex(8)));
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// fsync of a directory, making renames into it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// `syncfs(2)` of the file system holding `path`: makes an unpacked layer
/// durable in one call instead of one fsync per file.
fn syncfs(path: &Path) -> io::Result<()> {
    let f = fs::File::open(path)?;
    // SAFETY: a valid open fd.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Unix seconds of an RFC 3339 time (0 when absent or unparsable).
fn unix_of(rfc3339: Option<&str>) -> i64 {
    rfc3339
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_registry;
