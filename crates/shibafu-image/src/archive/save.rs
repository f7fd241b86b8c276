//! The writing half of `save`: Docker 25+'s archive, an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/`) plus the legacy
//! `manifest.json` and `repositories` that older docker CLIs and Docker's
//! classic store read. Entries come sorted as Docker's `archive.Tar` walks
//! its temp dir (blobs first), all with mtime 0.
//!
//! Everything that can fail on the store side (unknown names, missing
//! blobs) fails in [`plan`], before the first byte; blob files are opened
//! there too, so an `rmi` racing the stream cannot pull them away.
//!
//! Layer blobs go out as stored (gzip or plain tar), except zstd ones:
//! dockerd before 23 cannot decompress zstd in `docker load`, so those are
//! written uncompressed under their diff ID, as Docker itself saves layers
//! (an image with such a layer gets a made-up OCI manifest).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, Write};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{qualified, sha256_hex_of, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::content::ExportImage;
use crate::{media, reference, Inner, StoreError};

/// Bytes per chunk handed to the HTTP body.
const CHUNK: usize = 1024 * 1024;
const BLOCK: usize = 512;

/// Content of a blob entry.
enum BlobSrc {
    Mem(Vec<u8>),
    /// An opened stored blob and its size.
    File(File, u64),
    /// An opened zstd layer blob, written decompressed: the uncompressed
    /// size (counted in [`plan`], the tar header needs it first).
    Unzstd(File, u64),
}

/// An archive ready to be written: every blob opened, every JSON made.
pub(super) struct SavePlan {
    /// By hex digest: sorted as Docker writes them, each once.
    blobs: BTreeMap<String, BlobSrc>,
    /// `index.json`, `manifest.json`, `oci-layout`, `repositories` (sorted).
    files: Vec<(&'static str, Vec<u8>)>,
}

/// The part of a stored manifest `save` needs.
#[derive(Deserialize)]
struct StoredManifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Option<DigestOnly>,
    layers: Option<Vec<DigestOnly>>,
    manifests: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct DigestOnly {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
}

/// An OCI descriptor as Go's `ocispec.Descriptor` marshals it (field order
/// included).
#[derive(Serialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'static str, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    variant: Option<String>,
}

#[derive(Serialize)]
struct OciManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
struct OciIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

/// One `manifest.json` item (Docker's `manifestItem`; `RepoTags` is `null`
/// for an image saved by ID, as Docker writes it).
#[derive(Serialize)]
struct ManifestItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The images named by one `save` argument, each with the tag it was named
/// by (none for an ID).
fn resolve(inner: &Inner, name: &str) -> Result<Vec<ExportImage>, StoreError> {
    // A bare repository name saves every tag of it, as Docker does.
    if let Ok(r) = reference::parse(name) {
        if r.tag.is_none() && r.digest.is_none() {
            let tags: Vec<String> = inner
                .state
                .read()
                .tags
                .keys()
                .filter(|t| t.rsplit_once(':').is_some_and(|(repo, _)| repo == r.repo))
                .cloned()
                .collect();
            if !tags.is_empty() {
                return tags.iter().map(|t| inner.export_image(t)).collect();
            }
        }
    }
    Ok(vec![inner.export_image(name)?])
}

/// Resolves the names, picks each image's manifest and layer blobs, opens
/// the blob files and makes the JSON files.
pub(super) fn plan(inner: &Inner, names: &[String]) -> Result<SavePlan, StoreError> {
    let mut order: Vec<String> = Vec::new();
    let mut images: HashMap<String, (ExportImage, Vec<String>)> = HashMap::new();
    for name in names {
        for img in resolve(inner, name)? {
            let (_, tags) = images.entry(img.id.clone()).or_insert_with(|| {
                order.push(img.id.clone());
                (img.clone(), Vec::new())
            });
            if let Some(t) = img.named_tag {
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
        }
    }

    let mut blobs: BTreeMap<String, BlobSrc> = BTreeMap::new();
    let mut index = Vec::new();
    let mut items = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for id in &order {
        let (img, tags) = &images[id];
        let platform = serde_json::from_slice::<Platform>(&img.config).ok();
        let (manifest, media_type, layer_hexes) = choose_manifest(inner, img, &mut blobs)?;
        let manifest_hex = crate::sha256_hex(&manifest);
        let manifest_size = manifest.len() as u64;
        blobs.insert(img.id.clone(), BlobSrc::Mem(img.config.clone()));
        blobs.insert(manifest_hex.clone(), BlobSrc::Mem(manifest));
        let descriptor = |annotations| Descriptor {
            media_type: media_type.clone(),
            digest: format!("sha256:{manifest_hex}"),
            size: manifest_size,
            annotations,
            platform: platform.clone(),
        };
        if tags.is_empty() {
            index.push(descriptor(None));
        }
        for t in tags {
            let (repo, tag) = t.rsplit_once(':').unwrap_or((t.as_str(), "latest"));
            index.push(descriptor(Some(BTreeMap::from([
                (ANNOTATION_IMAGE_NAME, format!("{}:{tag}", qualified(repo))),
                (ANNOTATION_REF_NAME, tag.to_string()),
            ]))));
            if let Some(top) = img.layers.last() {
                repositories
                    .entry(repo.to_string())
                    .or_default()
                    .insert(tag.to_string(), top.diff_id.clone());
            }
        }
        items.push(ManifestItem {
            config: format!("blobs/sha256/{}", img.id),
            repo_tags: (!tags.is_empty()).then(|| tags.clone()),
            layers: layer_hexes
                .iter()
                .map(|h| format!("blobs/sha256/{h}"))
                .collect(),
        });
    }

    let mut manifest_json = to_json(&items);
    manifest_json.push(b'\n');
    let mut files = vec![
        (
            "index.json",
            to_json(&OciIndex {
                schema_version: 2,
                media_type: media::OCI_INDEX,
                manifests: index,
            }),
        ),
        ("manifest.json", manifest_json),
        ("oci-layout", br#"{"imageLayoutVersion": "1.0.0"}"#.to_vec()),
    ];
    if !repositories.is_empty() {
        let mut r = to_json(&repositories);
        r.push(b'\n');
        files.push(("repositories", r));
    }
    Ok(SavePlan { blobs, files })
}

/// JSON of the plan's own structs and maps, which cannot fail to serialise.
fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// The manifest that goes into the archive, its media type, and the hex
/// digests of the layer blobs it names (their files opened into `blobs`).
/// A stored single-platform manifest is written as it is when every layer
/// blob it names is stored; otherwise an OCI manifest is made for the
/// first stored blob of each layer.
fn choose_manifest(
    inner: &Inner,
    img: &ExportImage,
    blobs: &mut BTreeMap<String, BlobSrc>,
) -> Result<(Vec<u8>, String, Vec<String>), StoreError> {
    let stored = img.manifests.iter().find_map(|(_, bytes)| {
        let m: StoredManifest = serde_json::from_slice(bytes).ok()?;
        if m.manifests.is_some() {
            return None;
        }
        let config = sha256_hex_of(&m.config?.digest)?.to_string();
        let layers = m.layers?;
        if config != img.id || layers.len() != img.layers.len() {
            return None;
        }
        let mut hexes = Vec::new();
        for (l, el) in layers.iter().zip(&img.layers) {
            let hex = sha256_hex_of(&l.digest)?;
            if l.media_type.contains("zstd") {
                return None;
            }
            if !el.blobs.iter().any(|b| b.digest == hex) || !inner.blob_file(hex).is_file() {
                return None;
            }
            hexes.push(hex.to_string());
        }
        let media_type = m
            .media_type
            .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
        Some((bytes.clone(), media_type, hexes))
    });
    if let Some((bytes, media_type, hexes)) = stored {
        for h in &hexes {
            open_blob(inner, h, blobs)?;
        }
        return Ok((bytes, media_type, hexes));
    }

    let mut layers = Vec::new();
    let mut hexes = Vec::new();
    for l in &img.layers {
        let stored: Vec<_> = l
            .blobs
            .iter()
            .filter(|b| inner.blob_file(&b.digest).is_file())
            .collect();
        let desc = if let Some(blob) = stored.iter().find(|b| !b.media_type.contains("zstd")) {
            let size = open_blob(inner, &blob.digest, blobs)?;
            hexes.push(blob.digest.clone());
            Descriptor {
                media_type: oci_layer_type(&blob.media_type).to_string(),
                digest: format!("sha256:{}", blob.digest),
                size,
                annotations: None,
                platform: None,
            }
        } else if let Some(blob) = stored.first() {
            let size = open_unzstd(inner, &blob.digest, &l.diff_id, blobs)?;
            hexes.push(l.diff_id.clone());
            Descriptor {
                media_type: media::OCI_LAYER_TAR.to_string(),
                digest: format!("sha256:{}", l.diff_id),
                size,
                annotations: None,
                platform: None,
            }
        } else {
            return Err(StoreError::Corrupt(format!(
                "no stored blob for layer sha256:{}",
                l.diff_id
            )));
        };
        layers.push(desc);
    }
    let manifest = OciManifest {
        schema_version: 2,
        media_type: media::OCI_MANIFEST,
        config: Descriptor {
            media_type: media::OCI_CONFIG.to_string(),
            digest: format!("sha256:{}", img.id),
            size: img.config.len() as u64,
            annotations: None,
            platform: None,
        },
        layers,
    };
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|e| StoreError::Corrupt(format!("making a manifest: {e}")))?;
    Ok((bytes, media::OCI_MANIFEST.to_string(), hexes))
}

/// Opens a stored blob into `blobs` (once); returns its size.
fn open_blob(
    inner: &Inner,
    hex: &str,
    blobs: &mut BTreeMap<String, BlobSrc>,
) -> Result<u64, StoreError> {
    if let Some(b) = blobs.get(hex) {
        return Ok(b.size());
    }
    let path = inner.blob_file(hex);
    let f =
        File::open(&path).map_err(|e| StoreError::io(format!("opening blob sha256:{hex}"), e))?;
    let size = f
        .metadata()
        .map_err(|e| StoreError::io(format!("reading blob sha256:{hex}"), e))?
        .len();
    blobs.insert(hex.to_string(), BlobSrc::File(f, size));
    Ok(size)
}

/// Opens a zstd layer blob to be written decompressed as the blob
/// `diff_id` (once); returns the uncompressed size, counted by decompressing
/// it here.
fn open_unzstd(
    inner: &Inner,
    hex: &str,
    diff_id: &str,
    blobs: &mut BTreeMap<String, BlobSrc>,
) -> Result<u64, StoreError> {
    if let Some(b) = blobs.get(diff_id) {
        return Ok(b.size());
    }
    let failed = |e| StoreError::io(format!("decompressing blob sha256:{hex}"), e);
    let mut f = File::open(inner.blob_file(hex)).map_err(failed)?;
    let size = io::copy(
        &mut zstd::stream::read::Decoder::new(&mut f).map_err(failed)?,
        &mut io::sink(),
    )
    .map_err(failed)?;
    f.rewind().map_err(failed)?;
    blobs.insert(diff_id.to_string(), BlobSrc::Unzstd(f, size));
    Ok(size)
}

impl BlobSrc {
    fn size(&self) -> u64 {
        match self {
            BlobSrc::Mem(v) => v.len() as u64,
            BlobSrc::File(_, n) | BlobSrc::Unzstd(_, n) => *n,
        }
    }
}

/// The OCI media type of a stored layer blob (records of pulled images may
/// carry Docker's media types).
fn oci_layer_type(media_type: &str) -> &'static str {
    if media_type.contains("zstd") {
        media::OCI_LAYER_ZSTD
    } else if media_type.contains("gzip") {
        media::OCI_LAYER_GZIP
    } else {
        media::OCI_LAYER_TAR
    }
}

impl SavePlan {
    /// Writes the tar to `out`, then its end marker.
    pub(super) fn write(self, out: &mut ChanWriter) -> io::Result<()> {
        out.entry("blobs/", tar::EntryType::Directory, 0)?;
        out.entry("blobs/sha256/", tar::EntryType::Directory, 0)?;
        for (hex, src) in self.blobs {
            let path = format!("blobs/sha256/{hex}");
            match src {
                BlobSrc::Mem(data) => {
                    out.entry(&path, tar::EntryType::Regular, data.len() as u64)?;
                    out.write_all(&data)?;
                    out.pad(data.len() as u64)?;
                }
                BlobSrc::File(mut f, size) => {
                    out.entry(&path, tar::EntryType::Regular, size)?;
                    out.copy_from(&mut f, size, &hex)?;
                    out.pad(size)?;
                }
                BlobSrc::Unzstd(f, size) => {
                    out.entry(&path, tar::EntryType::Regular, size)?;
                    let mut dec = zstd::stream::read::Decoder::new(f)?;
                    out.copy_from(&mut dec, size, &hex)?;
                    if dec.read(&mut [0u8; 1])? != 0 {
                        return Err(io::Error::other(format!(
                            "layer sha256:{hex} decompressed to more than {size} bytes"
                        )));
                    }
                    out.pad(size)?;
                }
            }
        }
        for (name, data) in self.files {
            out.entry(name, tar::EntryType::Regular, data.len() as u64)?;
            out.write_all(&data)?;
            out.pad(data.len() as u64)?;
        }
        out.write_all(&[0u8; 2 * BLOCK])?;
        out.flush()
    }
}

/// Collects the tar into [`CHUNK`]-sized pieces for the HTTP body. A send
/// failing means the client went away: `BrokenPipe`.
pub(super) struct ChanWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChanWriter {
    pub(super) fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChanWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    /// A tar header: ustar, root-owned, mtime 0, as Docker's save.
    fn entry(&mut self, path: &str, kind: tar::EntryType, size: u64) -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)?;
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        self.write_all(h.as_bytes())
    }

    /// Zeros up to the next 512-byte boundary after `size` bytes of data.
    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Reads `size` bytes of `f` straight into the chunk buffer.
    fn copy_from(&mut self, f: &mut dyn Read, size: u64, hex: &str) -> io::Result<()> {
        let mut left = size;
        while left > 0 {
            let at = self.buf.len();
            let room = (CHUNK.saturating_sub(at)).max(64 * 1024);
            let want = room.min(usize::try_from(left).unwrap_or(usize::MAX));
            self.buf.resize(at + want, 0);
            let n = match f.read(&mut self.buf[at..]) {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(at);
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
            };
            self.buf.truncate(at + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("blob sha256:{hex} is shorter than {size} bytes"),
                ));
            }
            left -= n as u64;
            if self.buf.len() >= CHUNK {
                self.send()?;
            }
        }
        Ok(())
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
