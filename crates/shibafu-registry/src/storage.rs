//! On-disk layout under the root, and every operation that changes it.
//!
//! ```text
//! blobs/<alg>/<2 hex>/<hex>                      content (layers, configs, manifests)
//! repositories/<name>/_layers/<alg>/<hex>        empty: the blob is in this repository
//! repositories/<name>/_manifests/revisions/<alg>/<hex>   the manifest's media type
//! repositories/<name>/_manifests/tags/<tag>      the tagged manifest's digest
//! repositories/<name>/_referrers/<alg>/<subject hex>/<alg>-<hex>   referrer descriptor (JSON)
//! uploads/<uuid>/{data,repo}                     an upload in progress; offset = size of data
//! gc.lock                                        flock: shared by writers, exclusive by gc
//! ```
//!
//! Crash safety: every file with content is written to a temp name in its
//! directory, fsynced and renamed over; blobs are renamed into place only
//! after their digest was verified, so a blob path always holds exactly the
//! content it names. Bookkeeping files are created after the content they
//! point at. A kill at any moment leaves at worst an orphan temp file or an
//! unreferenced blob (swept by gc), never a wrong one.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::ApiError;

/// Writes are batched into buffers of this size before reaching the file.
const WRITE_BUF: usize = 1 << 20;
/// Dirty data is handed to writeback every this many bytes, so the fsync at
/// the end of an upload has little left to do.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// In-memory upload states beyond this many are pruned of uploads that no
/// longer exist on disk.
const MAX_TRACKED_UPLOADS: usize = 4096;

/// Failures of the storage helpers that are not client errors.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

pub(crate) fn ctx(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// fsync of a directory, so a rename or create inside it is durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(ctx(dir))
}

/// create_dir_all that also fsyncs the parent of every directory it creates.
pub(crate) fn mkdirs(dir: &Path) -> Result<(), StorageError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        mkdirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                fsync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(ctx(dir)(e)),
    }
}

fn tmp_name(dir: &Path) -> PathBuf {
    dir.join(format!(".tmp-{}", hex::encode(rand::random::<[u8; 8]>())))
}

/// temp + fsync + rename + fsync(dir): readers see the old file or the new
/// one, never a part.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StorageError> {
    let dir = path.parent().expect("storage paths have parents");
    mkdirs(dir)?;
    let tmp = tmp_name(dir);
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(ctx(path)(e));
    }
    fsync_dir(dir)
}

/// Removes a file; true if it existed.
fn remove(path: &Path) -> Result<bool, StorageError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ctx(path)(e)),
    }
}

/// Marks a blob as just used, so gc's grace period protects it until the
/// manifest that needs it arrives.
fn touch(path: &Path) {
    if let Ok(f) = File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// `flock` on `gc.lock`: shared while a request creates references, exclusive
/// while gc marks and sweeps, so gc never deletes a blob that a manifest
/// written during its run references.
pub struct GcLock(File);

impl GcLock {
    fn take(root: &Path, op: libc::c_int) -> Result<GcLock, StorageError> {
        let path = root.join("gc.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ctx(&path))?;
        loop {
            // SAFETY: flock on a descriptor we own.
            let r = unsafe { libc::flock(f.as_raw_fd(), op) };
            if r == 0 {
                return Ok(GcLock(f));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(ctx(&path)(e));
            }
        }
    }

    pub fn shared(root: &Path) -> Result<GcLock, StorageError> {
        Self::take(root, libc::LOCK_SH)
    }

    pub fn exclusive(root: &Path) -> Result<GcLock, StorageError> {
        Self::take(root, libc::LOCK_EX)
    }
}

impl Drop for GcLock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own descriptor (closing would too).
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// In-memory state of an upload: the hash of the first `offset` bytes, kept
/// so finishing a chunked upload does not re-read it. After a restart (or a
/// failed write) `hasher` is None and the data is hashed from disk.
struct UploadState {
    offset: u64,
    hasher: Option<Hasher>,
}

/// A manifest as stored.
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Vec<u8>,
}

pub struct Storage {
    root: PathBuf,
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadState>>>>,
}

pub fn valid_uuid(u: &str) -> bool {
    u.len() == 36
        && u.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Storage {
    pub fn open(root: &Path) -> Result<Storage, StorageError> {
        for d in ["blobs", "repositories", "uploads"] {
            mkdirs(&root.join(d))?;
        }
        Ok(Storage {
            root: root.to_path_buf(),
            uploads: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(root: &Path, d: &Digest) -> PathBuf {
        root.join("blobs")
            .join(d.algorithm().name())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    pub fn repo_dir(root: &Path, name: &str) -> PathBuf {
        root.join("repositories").join(name)
    }

    fn layer_link(&self, name: &str, d: &Digest) -> PathBuf {
        Self::repo_dir(&self.root, name)
            .join("_layers")
            .join(d.algorithm().name())
            .join(d.hex())
    }

    pub fn revision_path(root: &Path, name: &str, d: &Digest) -> PathBuf {
        Self::repo_dir(root, name)
            .join("_manifests/revisions")
            .join(d.algorithm().name())
            .join(d.hex())
    }

    fn tags_dir(&self, name: &str) -> PathBuf {
        Self::repo_dir(&self.root, name).join("_manifests/tags")
    }

    pub fn referrer_path(root: &Path, name: &str, subject: &Digest, referrer: &Digest) -> PathBuf {
        Self::referrers_dir(root, name, subject).join(format!(
            "{}-{}",
            referrer.algorithm().name(),
            referrer.hex()
        ))
    }

    fn referrers_dir(root: &Path, name: &str, subject: &Digest) -> PathBuf {
        Self::repo_dir(root, name)
            .join("_referrers")
            .join(subject.algorithm().name())
            .join(subject.hex())
    }

    fn upload_dir(&self, uuid: &str) -> PathBuf {
        self.root.join("uploads").join(uuid)
    }

    // ------------------------------------------------------------ blobs

    /// Size of a blob linked into `name`, or None.
    pub fn blob_size(&self, name: &str, d: &Digest) -> Result<Option<u64>, StorageError> {
        if !self.layer_link(name, d).exists() {
            return Ok(None);
        }
        let p = Self::blob_path(&self.root, d);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ctx(&p)(e)),
        }
    }

    /// HEAD of a blob by a pushing client: also refreshes its gc grace
    /// period (under the gc lock, so gc either ran before and the client
    /// sees 404, or runs after and sees a young blob).
    pub fn check_blob_for_push(&self, name: &str, d: &Digest) -> Result<Option<u64>, StorageError> {
        let _lock = GcLock::shared(&self.root)?;
        let size = self.blob_size(name, d)?;
        if size.is_some() {
            touch(&Self::blob_path(&self.root, d));
        }
        Ok(size)
    }

    /// Links an existing blob into `name` (cross-repository mount); false if
    /// the blob is not in `from` (or, with `from` None, not stored at all).
    pub fn mount(&self, name: &str, d: &Digest, from: Option<&str>) -> Result<bool, StorageError> {
        let _lock = GcLock::shared(&self.root)?;
        let present = match from {
            Some(f) => self.blob_size(f, d)?.is_some(),
            None => Self::blob_path(&self.root, d).is_file(),
        };
        if !present {
            return Ok(false);
        }
        touch(&Self::blob_path(&self.root, d));
        self.link_blob(name, d)?;
        Ok(true)
    }

    fn link_blob(&self, name: &str, d: &Digest) -> Result<(), StorageError> {
        let link = self.layer_link(name, d);
        if link.exists() {
            return Ok(());
        }
        let dir = link.parent().expect("parent");
        mkdirs(dir)?;
        File::create(&link).map_err(ctx(&link))?;
        fsync_dir(dir)
    }

    /// Unlinks a blob from a repository; the content goes at the next gc.
    pub fn delete_blob(&self, name: &str, d: &Digest) -> Result<bool, StorageError> {
        remove(&self.layer_link(name, d))
    }

    // ------------------------------------------------------------ uploads

    pub fn create_upload(&self, name: &str) -> Result<String, StorageError> {
        let uuid = new_uuid();
        let dir = self.upload_dir(&uuid);
        mkdirs(&dir)?;
        let res = (|| {
            write_atomic(&dir.join("repo"), name.as_bytes())?;
            let data = dir.join("data");
            File::create(&data).map_err(ctx(&data))?;
            Ok(())
        })();
        if let Err(e) = res {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        let mut map = self.uploads.lock();
        if map.len() >= MAX_TRACKED_UPLOADS {
            // Abandoned uploads (never finished nor cancelled) whose
            // directory gc has removed: forget them.
            let root = self.root.join("uploads");
            map.retain(|u, _| root.join(u).exists());
        }
        map.insert(
            uuid.clone(),
            Arc::new(tokio::sync::Mutex::new(UploadState {
                offset: 0,
                hasher: Some(Hasher::new(Algorithm::Sha256)),
            })),
        );
        Ok(uuid)
    }

    /// The upload's state, loaded from disk after a restart. Unknown uuids
    /// and uploads of another repository are BLOB_UPLOAD_UNKNOWN.
    fn upload_state(
        &self,
        name: &str,
        uuid: &str,
    ) -> Result<Arc<tokio::sync::Mutex<UploadState>>, ApiError> {
        let unknown = || ApiError::BlobUploadUnknown(uuid.to_string());
        if !valid_uuid(uuid) {
            return Err(unknown());
        }
        let dir = self.upload_dir(uuid);
        match fs::read(dir.join("repo")) {
            Ok(r) if r == name.as_bytes() => {}
            Ok(_) => return Err(unknown()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(e.into()),
        }
        let mut map = self.uploads.lock();
        if let Some(s) = map.get(uuid) {
            return Ok(s.clone());
        }
        let offset = match fs::metadata(dir.join("data")) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(e.into()),
        };
        let s = Arc::new(tokio::sync::Mutex::new(UploadState {
            offset,
            hasher: (offset == 0).then(|| Hasher::new(Algorithm::Sha256)),
        }));
        map.insert(uuid.to_string(), s.clone());
        Ok(s)
    }

    pub async fn upload_offset(self: &Arc<Self>, name: &str, uuid: &str) -> Result<u64, ApiError> {
        let st = self.upload_state(name, uuid)?;
        let g = st.lock().await;
        Ok(g.offset)
    }

    pub async fn cancel_upload(self: &Arc<Self>, name: &str, uuid: &str) -> Result<(), ApiError> {
        let st = self.upload_state(name, uuid)?;
        let _g = st.lock().await;
        self.drop_upload(uuid).await
    }

    async fn drop_upload(self: &Arc<Self>, uuid: &str) -> Result<(), ApiError> {
        self.uploads.lock().remove(uuid);
        let dir = self.upload_dir(uuid);
        tokio::task::spawn_blocking(move || match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ctx(&dir)(e)),
            _ => Ok(()),
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        Ok(())
    }

    /// Appends a request body to an upload. `range` is the chunk's
    /// Content-Range; it must start at the current offset (else 416 with the
    /// offset). Returns the new offset. A body cut short leaves the bytes
    /// that arrived, so the client can resume from the offset it is told.
    pub async fn append<S, E>(
        self: &Arc<Self>,
        name: &str,
        uuid: &str,
        range: Option<(u64, u64)>,
        body: S,
    ) -> Result<u64, ApiError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let st = self.upload_state(name, uuid)?;
        let mut g = st.lock().await;
        self.append_locked(uuid, &mut g, range, body, false).await
    }

    async fn append_locked<S, E>(
        self: &Arc<Self>,
        uuid: &str,
        g: &mut UploadState,
        range: Option<(u64, u64)>,
        mut body: S,
        sync: bool,
    ) -> Result<u64, ApiError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures::StreamExt;
        if let Some((first, _)) = range {
            if first != g.offset {
                return Err(ApiError::RangeInvalid { offset: g.offset });
            }
        }
        let data = self.upload_dir(uuid).join("data");
        let file = OpenOptions::new()
            .append(true)
            .open(&data)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ApiError::BlobUploadUnknown(uuid.to_string()),
                _ => ApiError::from(e),
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let hasher = g.hasher.take();
        let start = g.offset;
        let writer = tokio::task::spawn_blocking(move || write_loop(file, rx, hasher, start, sync));
        let mut client_err = None;
        while let Some(frame) = body.next().await {
            match frame {
                Ok(b) if b.is_empty() => {}
                Ok(b) => {
                    if tx.send(b).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    client_err = Some(e.to_string());
                    break;
                }
            }
        }
        drop(tx);
        let out = writer
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        g.offset = out.offset;
        g.hasher = out.hasher;
        if let Some(e) = out.error {
            return Err(ApiError::Internal(format!("{}: {e}", data.display())));
        }
        if let Some(e) = client_err {
            return Err(ApiError::BlobUploadInvalid(format!("request body: {e}")));
        }
        if let Some((first, last)) = range {
            if g.offset - first != last - first + 1 {
                return Err(ApiError::SizeInvalid(format!(
                    "Content-Range {first}-{last} but {} bytes sent",
                    g.offset - first
                )));
            }
        }
        Ok(g.offset)
    }

    /// Appends the final chunk (if any), verifies the digest and commits the
    /// blob. On a digest mismatch the upload is discarded.
    pub async fn finish_upload<S, E>(
        self: &Arc<Self>,
        name: &str,
        uuid: &str,
        digest: &Digest,
        range: Option<(u64, u64)>,
        body: S,
    ) -> Result<u64, ApiError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let st = self.upload_state(name, uuid)?;
        let mut g = st.lock().await;
        let size = self.append_locked(uuid, &mut g, range, body, true).await?;
        let data = self.upload_dir(uuid).join("data");
        let hasher = g
            .hasher
            .clone()
            .filter(|h| h.algorithm() == digest.algorithm());
        let alg = digest.algorithm();
        let data2 = data.clone();
        let actual = tokio::task::spawn_blocking(move || match hasher {
            Some(h) => Ok(h.finish()),
            None => hash_file(&data2, alg),
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        if &actual != digest {
            drop(g);
            self.drop_upload(uuid).await?;
            return Err(ApiError::DigestInvalid(digest.to_string()));
        }
        let this = self.clone();
        let (name2, d2) = (name.to_string(), digest.clone());
        tokio::task::spawn_blocking(move || this.commit_blob(&name2, &d2, &data))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        drop(g);
        self.drop_upload(uuid).await?;
        Ok(size)
    }

    /// Moves verified, fsynced data into the blob store and links it.
    fn commit_blob(&self, name: &str, d: &Digest, data: &Path) -> Result<(), StorageError> {
        let _lock = GcLock::shared(&self.root)?;
        let target = Self::blob_path(&self.root, d);
        let dir = target.parent().expect("parent");
        mkdirs(dir)?;
        if target.exists() {
            touch(&target);
        } else {
            fs::rename(data, &target).map_err(ctx(&target))?;
            touch(&target);
            fsync_dir(dir)?;
        }
        self.link_blob(name, d)
    }

    /// Stores a manifest body as a blob (verified by construction).
    fn store_content(&self, d: &Digest, body: &[u8]) -> Result<(), StorageError> {
        let p = Self::blob_path(&self.root, d);
        if p.exists() {
            touch(&p);
            Ok(())
        } else {
            write_atomic(&p, body)
        }
    }

    // ------------------------------------------------------------ manifests

    /// Validates the references of a manifest and stores it (plus tag and
    /// referrer entry). The gc lock is held across check and write.
    pub fn put_manifest(
        &self,
        name: &str,
        tag: Option<&str>,
        digest: &Digest,
        media_type: &str,
        body: &[u8],
        refs: &crate::manifest::ManifestRefs,
    ) -> Result<(), ApiError> {
        let _lock = GcLock::shared(&self.root)?;
        for b in &refs.blobs {
            if self.blob_size(name, b)?.is_none() {
                return Err(ApiError::ManifestBlobUnknown(b.to_string()));
            }
        }
        for c in &refs.children {
            let known = Self::revision_path(&self.root, name, c).exists()
                && Self::blob_path(&self.root, c).exists();
            if !known {
                return Err(ApiError::ManifestBlobUnknown(c.to_string()));
            }
        }
        self.store_content(digest, body)?;
        write_atomic(
            &Self::revision_path(&self.root, name, digest),
            media_type.as_bytes(),
        )?;
        if let Some(subject) = &refs.subject {
            let desc =
                crate::manifest::referrer_descriptor(media_type, digest, body.len() as u64, refs);
            write_atomic(
                &Self::referrer_path(&self.root, name, subject, digest),
                desc.to_string().as_bytes(),
            )?;
        }
        if let Some(tag) = tag {
            write_atomic(
                &self.tags_dir(name).join(tag),
                digest.to_string().as_bytes(),
            )?;
        }
        Ok(())
    }

    /// The digest a tag points at.
    pub fn resolve_tag(&self, name: &str, tag: &str) -> Result<Option<Digest>, StorageError> {
        let p = self.tags_dir(name).join(tag);
        match fs::read_to_string(&p) {
            Ok(s) => Ok(s.trim().parse().ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ctx(&p)(e)),
        }
    }

    /// Media type of a manifest in `name`, or None if it is not there.
    pub fn manifest_media_type(
        &self,
        name: &str,
        d: &Digest,
    ) -> Result<Option<(String, u64)>, StorageError> {
        let rev = Self::revision_path(&self.root, name, d);
        let mt = match fs::read_to_string(&rev) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ctx(&rev)(e)),
        };
        match fs::metadata(Self::blob_path(&self.root, d)) {
            Ok(m) => Ok(Some((mt, m.len()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ctx(&rev)(e)),
        }
    }

    pub fn get_manifest(
        &self,
        name: &str,
        d: &Digest,
    ) -> Result<Option<StoredManifest>, StorageError> {
        let Some((media_type, _)) = self.manifest_media_type(name, d)? else {
            return Ok(None);
        };
        let p = Self::blob_path(&self.root, d);
        match fs::read(&p) {
            Ok(body) => Ok(Some(StoredManifest {
                digest: d.clone(),
                media_type,
                body,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ctx(&p)(e)),
        }
    }

    /// Deletes a manifest revision, the tags pointing at it and its entry in
    /// its subject's referrers. False if it was not there.
    pub fn delete_manifest(&self, name: &str, d: &Digest) -> Result<bool, StorageError> {
        let rev = Self::revision_path(&self.root, name, d);
        if !rev.exists() {
            return Ok(false);
        }
        if let Ok(body) = fs::read(Self::blob_path(&self.root, d)) {
            if let Ok(refs) = crate::manifest::parse(&body, None) {
                if let Some(s) = refs.subject {
                    remove(&Self::referrer_path(&self.root, name, &s, d))?;
                }
            }
        }
        for tag in self.tags(name)?.unwrap_or_default() {
            if self.resolve_tag(name, &tag)?.as_ref() == Some(d) {
                remove(&self.tags_dir(name).join(&tag))?;
            }
        }
        remove(&rev)?;
        Ok(true)
    }

    pub fn delete_tag(&self, name: &str, tag: &str) -> Result<bool, StorageError> {
        remove(&self.tags_dir(name).join(tag))
    }

    /// Sorted tags, or None if the repository does not exist.
    pub fn tags(&self, name: &str) -> Result<Option<Vec<String>>, StorageError> {
        if !Self::repo_dir(&self.root, name).is_dir() {
            return Ok(None);
        }
        let mut tags = list_names(&self.tags_dir(name))?;
        tags.sort();
        Ok(Some(tags))
    }

    /// Sorted names of all repositories.
    pub fn catalog(&self) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        collect_repos(&self.root.join("repositories"), "", &mut out)?;
        out.sort();
        Ok(out)
    }

    /// Descriptors of the manifests in `name` whose subject is `subject`,
    /// sorted by digest.
    pub fn referrers(
        &self,
        name: &str,
        subject: &Digest,
    ) -> Result<Vec<serde_json::Value>, StorageError> {
        let dir = Self::referrers_dir(&self.root, name, subject);
        let mut names = list_names(&dir)?;
        names.sort();
        let mut out = Vec::new();
        for n in names {
            let p = dir.join(&n);
            match fs::read(&p) {
                Ok(b) => {
                    if let Ok(v) = serde_json::from_slice(&b) {
                        out.push(v);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ctx(&p)(e)),
            }
        }
        Ok(out)
    }
}

/// File names in `dir` (not temp files); empty if `dir` does not exist.
pub(crate) fn list_names(dir: &Path) -> Result<Vec<String>, StorageError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(ctx(dir)(e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(ctx(dir))?;
        if let Some(n) = ent.file_name().to_str() {
            if !n.starts_with('.') {
                out.push(n.to_string());
            }
        }
    }
    Ok(out)
}

pub(crate) fn collect_repos(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<(), StorageError> {
    for n in list_names(dir)? {
        if n.starts_with('_') {
            continue;
        }
        let p = dir.join(&n);
        if !p.is_dir() {
            continue;
        }
        let name = if prefix.is_empty() {
            n.clone()
        } else {
            format!("{prefix}/{n}")
        };
        if p.join("_manifests").is_dir() || p.join("_layers").is_dir() {
            out.push(name.clone());
        }
        collect_repos(&p, &name, out)?;
    }
    Ok(())
}

pub(crate) fn hash_file(path: &Path, alg: Algorithm) -> Result<Digest, StorageError> {
    let mut f = File::open(path).map_err(ctx(path))?;
    let mut h = Hasher::new(alg);
    let mut buf = vec![0u8; WRITE_BUF];
    loop {
        let n = f.read(&mut buf).map_err(ctx(path))?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

struct WriteOutcome {
    offset: u64,
    hasher: Option<Hasher>,
    error: Option<io::Error>,
}

/// The blocking half of an upload: hashes each chunk as it arrives and
/// writes in large batches, starting writeback early so the final fsync is
/// short. On a write error the file is cut back to the last good offset.
fn write_loop(
    file: File,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    mut hasher: Option<Hasher>,
    start: u64,
    sync: bool,
) -> WriteOutcome {
    let mut w = BatchWriter {
        file,
        offset: start,
        synced: start,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BUF);
    let mut result = Ok(());
    while let Some(chunk) = rx.blocking_recv() {
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        if chunk.len() >= WRITE_BUF {
            result = w.write(&buf).and_then(|()| w.write(&chunk));
            buf.clear();
        } else {
            buf.extend_from_slice(&chunk);
            if buf.len() >= WRITE_BUF {
                result = w.write(&buf);
                buf.clear();
            }
        }
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = w.write(&buf);
    }
    if result.is_ok() && sync {
        result = w.file.sync_all();
    }
    match result {
        Ok(()) => WriteOutcome {
            offset: w.offset,
            hasher,
            error: None,
        },
        Err(e) => {
            let _ = w.file.set_len(w.offset);
            WriteOutcome {
                offset: w.offset,
                hasher: None,
                error: Some(e),
            }
        }
    }
}

struct BatchWriter {
    file: File,
    /// Bytes known to be in the file.
    offset: u64,
    /// Bytes already handed to writeback.
    synced: u64,
}

impl BatchWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.file.write_all(data)?;
        self.offset += data.len() as u64;
        if self.offset - self.synced >= WRITEBACK_EVERY {
            // SAFETY: plain syscall on our own descriptor; advisory only.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.synced as libc::off64_t,
                    (self.offset - self.synced) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            self.synced = self.offset;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        let u = new_uuid();
        assert!(valid_uuid(&u), "{u}");
        assert!(!valid_uuid("../../etc/passwd-aaaaaaaaaaaaaaaaaaaaaa"));
        assert!(!valid_uuid(&u.to_uppercase()));
    }

    #[test]
    fn gc_lock_excludes_writers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let held = GcLock::exclusive(&root).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let r2 = root.clone();
        let t = std::thread::spawn(move || {
            let _g = GcLock::shared(&r2).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        t.join().unwrap();
        // Shared holders do not exclude each other.
        let _a = GcLock::shared(&root).unwrap();
        let _b = GcLock::shared(&root).unwrap();
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/c");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(list_names(&dir.path().join("a/b")).unwrap(), vec!["c"]);
    }
}
