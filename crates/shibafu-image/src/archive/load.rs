//! The reading half of `load`. One pass over the archive (plain, gzip or
//! zstd tar, recognised by magic) keeps small entries in memory and spools
//! the rest to files in a work dir; nothing is interpreted until the end,
//! because Docker writes `manifest.json` and `index.json` after the blobs.
//!
//! Then, in order, each step only once the previous one fully succeeded:
//! 1. the images are worked out and checked: `manifest.json` (Docker ≤ 24
//!    and 25+), else `index.json` (a plain OCI layout, nested indexes
//!    resolved to the host's platform); configs parsed, every blob present;
//! 2. the layers not yet stored are unpacked into the work dir, several at
//!    once, each verified against its blob digest (when its name gives one)
//!    and against the diff ID its config names;
//! 3. the layers are placed and each image is committed with its tags.
//!
//! A failure before step 3 leaves the store untouched (the work dir goes
//! away with everything in it).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde::Deserialize;
use shibafu_api::JsonMessage;

use super::{sha256_hex_of, ArchiveError, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::content::{BlobSink, LayerExpect, NewImage, Unpacked, WorkDir};
use crate::import::ChannelReader;
use crate::progress::{short_id, Reporter};
use crate::pull::Platform;
use crate::{media, reference, Inner, StoreError};

/// Entries up to this size are kept in memory (configs, manifests, JSON)...
const MEM_ENTRY: u64 = 1 << 20;
/// ...as long as all of them together stay under this.
const MEM_BUDGET: u64 = 64 << 20;
/// JSON documents bigger than this are refused rather than read whole.
const MAX_JSON: u64 = 64 << 20;
/// Layers unpacked at once.
const MAX_PARALLEL: usize = 4;
/// Symlinks followed when resolving an entry (Docker ≤ 24 links duplicate
/// layers to their first copy).
const MAX_LINKS: usize = 16;
/// Indexes inside indexes.
const MAX_INDEX_DEPTH: usize = 4;

const MAGIC_GZIP: &[u8] = &[0x1f, 0x8b];
const MAGIC_ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const MAGIC_BZIP2: &[u8] = b"BZh";
const MAGIC_XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// An archive entry as kept for the end of the pass.
enum Content {
    Mem(Vec<u8>),
    File {
        path: PathBuf,
        size: u64,
    },
    /// A symlink or hard link: the normalised archive path it points to.
    Link(String),
}

/// The archive's entries by normalised path.
#[derive(Default)]
struct Entries {
    map: HashMap<String, Content>,
}

impl Entries {
    /// The content at `path` (links followed) and the path it resolved to.
    fn get(&self, path: &str) -> Option<(String, &Content)> {
        let mut p = normalize(path)?;
        for _ in 0..MAX_LINKS {
            match self.map.get(&p)? {
                Content::Link(target) => p = target.clone(),
                c => return Some((p, c)),
            }
        }
        None
    }

    /// A small entry read whole; `None` when the archive has no such file.
    fn bytes(&self, path: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        let Some((resolved, c)) = self.get(path) else {
            return Ok(None);
        };
        match c {
            Content::Mem(v) => Ok(Some(v.clone())),
            Content::File { size, .. } if *size > MAX_JSON => Err(ArchiveError::invalid(format!(
                "{resolved}: {size} bytes is too big for a JSON document"
            ))),
            Content::File { path, .. } => std::fs::read(path)
                .map(Some)
                .map_err(|e| StoreError::io("reading back a spooled archive entry", e).into()),
            Content::Link(_) => Ok(None),
        }
    }

    /// The bytes of `blobs/sha256/<hex>`, checked against the digest.
    fn blob(&self, hex: &str, what: &str) -> Result<Vec<u8>, ArchiveError> {
        let path = format!("blobs/sha256/{hex}");
        let data = self.bytes(&path)?.ok_or_else(|| {
            ArchiveError::invalid(format!("{what} sha256:{hex} is not in the archive"))
        })?;
        verify(&path, hex, &data)?;
        Ok(data)
    }
}

/// Checks that `data` (the entry at `path`) hashes to `hex`.
fn verify(path: &str, hex: &str, data: &[u8]) -> Result<(), ArchiveError> {
    let actual = crate::sha256_hex(data);
    if actual != hex {
        return Err(ArchiveError::invalid(format!(
            "{path}: content has digest sha256:{actual}, not sha256:{hex}"
        )));
    }
    Ok(())
}

/// `./a//b/` → `a/b`, `a/../b` → `b`; `None` for a path that climbs out.
fn normalize(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// The hex digest an archive path names: `blobs/sha256/<hex>`.
fn digest_of_path(path: &str) -> Option<String> {
    path.strip_prefix("blobs/sha256/")
        .filter(|h| reference::is_full_hex_id(h))
        .map(str::to_string)
}

/// Notes whether the source ran dry: a tar that ends without its
/// end-of-archive blocks was cut short.
struct EofTrack<R> {
    inner: R,
    eof: bool,
}

impl<R: Read> Read for EofTrack<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        Ok(n)
    }
}

/// Turns a read failure into the error to report: the body's own failure
/// when it broke off, otherwise a malformed or truncated archive.
fn read_error(body_failed: &Mutex<Option<String>>, e: &io::Error) -> ArchiveError {
    if let Some(m) = body_failed.lock().clone() {
        return ArchiveError::Body(m);
    }
    let msg = e.to_string();
    if e.kind() == io::ErrorKind::UnexpectedEof
        || msg.contains("failed to read entire block")
        || msg.contains("unexpected EOF")
        || msg.contains("unexpected end of file")
    {
        return ArchiveError::invalid("unexpected EOF");
    }
    ArchiveError::Invalid(msg)
}

/// Reads the whole archive, keeping or spooling each entry.
fn read_entries(
    mut src: ChannelReader,
    work: &Path,
    body_failed: &Mutex<Option<String>>,
) -> Result<Entries, ArchiveError> {
    let err = |e: io::Error| read_error(body_failed, &e);
    let mut head = Vec::with_capacity(8);
    let mut chunk = [0u8; 6];
    while head.len() < 6 {
        match src.read(&mut chunk[..6 - head.len()]) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    if head.is_empty() {
        return Err(ArchiveError::invalid("the archive is empty"));
    }
    for (magic, name) in [(MAGIC_BZIP2, "bzip2"), (MAGIC_XZ, "xz")] {
        if head.starts_with(magic) {
            return Err(ArchiveError::invalid(format!(
                "{name} compression is not supported (use gzip, zstd or plain tar)"
            )));
        }
    }
    let gzip = head.starts_with(MAGIC_GZIP);
    let zstd = head.starts_with(MAGIC_ZSTD);
    let raw = io::Cursor::new(head).chain(src);
    let decoded: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(raw))
    } else if zstd {
        Box::new(
            zstd::stream::read::Decoder::new(raw)
                .map_err(|e| StoreError::io("starting zstd decompression", e))?,
        )
    } else {
        Box::new(raw)
    };
    let mut archive = tar::Archive::new(EofTrack {
        inner: decoded,
        eof: false,
    });
    let mut entries = Entries::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut mem_used = 0u64;
    let mut spooled = 0u64;
    for entry in archive.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = normalize(&raw_path).ok_or_else(|| {
            ArchiveError::invalid(format!("entry {raw_path:?} points outside the archive"))
        })?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory
            | tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                // A symlink is relative to its directory, a hard link to
                // the archive root.
                let joined = match (kind, path.rsplit_once('/')) {
                    (tar::EntryType::Symlink, Some((dir, _))) if !target.starts_with('/') => {
                        format!("{dir}/{target}")
                    }
                    _ => target.clone(),
                };
                let resolved = normalize(&joined).ok_or_else(|| {
                    ArchiveError::invalid(format!(
                        "link {raw_path:?} points outside the archive ({target:?})"
                    ))
                })?;
                entries.map.insert(path, Content::Link(resolved));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if path.is_empty() {
                    return Err(ArchiveError::invalid(format!(
                        "entry {raw_path:?} has no name"
                    )));
                }
                let size = entry.size();
                let content = if size <= MEM_ENTRY && mem_used + size <= MEM_BUDGET {
                    let mut v = Vec::with_capacity(size as usize);
                    (&mut entry).take(size).read_to_end(&mut v).map_err(err)?;
                    if (v.len() as u64) < size {
                        return Err(err(io::ErrorKind::UnexpectedEof.into()));
                    }
                    mem_used += size;
                    Content::Mem(v)
                } else {
                    spooled += 1;
                    let file = work.join(format!("entry-{spooled}"));
                    spool(&mut entry, &file, size, &mut buf, &err)?;
                    Content::File { path: file, size }
                };
                entries.map.insert(path, content);
            }
            other => {
                return Err(ArchiveError::invalid(format!(
                    "unsupported entry {raw_path:?} (tar type {:?})",
                    other.as_byte() as char
                )))
            }
        }
    }
    if archive.into_inner().eof {
        return Err(err(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(entries)
}

/// Copies an entry's `size` bytes to `dest`. Read failures are the
/// archive's, write failures the store's.
fn spool(
    src: &mut dyn Read,
    dest: &Path,
    size: u64,
    buf: &mut [u8],
    err: &dyn Fn(io::Error) -> ArchiveError,
) -> Result<(), ArchiveError> {
    let write_err = |e| ArchiveError::Store(StoreError::io("spooling the archive", e));
    let f = File::create(dest).map_err(write_err)?;
    let mut out = BufWriter::with_capacity(1024 * 1024, f);
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => return Err(err(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(e)),
        };
        out.write_all(&buf[..n]).map_err(write_err)?;
        left -= n as u64;
    }
    out.flush().map_err(write_err)?;
    Ok(())
}

/// A layer of an image as the archive holds it.
#[derive(Debug, Clone)]
struct LayerRef {
    /// The archive path (links resolved).
    path: String,
    /// The digest the blob must have, when its name gives one.
    blob_digest: Option<String>,
}

/// An image found in the archive, checked and ready to be stored.
struct Found {
    config: Vec<u8>,
    /// Hex image ID.
    id: String,
    /// Hex diff IDs, lowest first.
    diff_ids: Vec<String>,
    layers: Vec<LayerRef>,
    /// Familiar `repo:tag`s.
    tags: Vec<String>,
    /// Manifests to keep (exact bytes), so a later save or push of the
    /// image keeps its digests.
    manifests: Vec<Vec<u8>>,
}

/// The fields of an image config that load checks before anything is
/// unpacked.
#[derive(Deserialize)]
struct ConfigHead {
    #[serde(default)]
    os: Option<String>,
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Parses an image config: hex diff IDs, lowest first.
fn parse_config(data: &[u8], shown: &str) -> Result<Vec<String>, ArchiveError> {
    let bad = |m: String| ArchiveError::invalid(format!("image config {shown}: {m}"));
    let head: ConfigHead = serde_json::from_slice(data).map_err(|e| bad(e.to_string()))?;
    // What commit_image will parse, checked now rather than after unpacking.
    oci_spec::image::ImageConfiguration::from_reader(data).map_err(|e| bad(e.to_string()))?;
    if let Some(os) = head.os.filter(|o| o != "linux") {
        return Err(ArchiveError::Unsupported(format!(
            "cannot load {os} image on linux"
        )));
    }
    let rootfs = head.rootfs.ok_or_else(|| bad("no rootfs".into()))?;
    rootfs
        .diff_ids
        .iter()
        .map(|d| {
            sha256_hex_of(d)
                .map(str::to_string)
                .ok_or_else(|| bad(format!("invalid diff ID {d:?}")))
        })
        .collect()
}

/// A `manifest.json` item (Docker's `manifestItem`).
#[derive(Deserialize)]
struct ManifestItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Option<Vec<String>>,
}

/// An OCI descriptor, as much as load reads of it.
#[derive(Deserialize, Clone)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<PlatformJson>,
}

#[derive(Deserialize, Clone)]
struct PlatformJson {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// An image index or manifest (which one is told by the fields present).
#[derive(Deserialize)]
struct Document {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

fn is_index_type(media_type: &str) -> bool {
    media_type == media::OCI_INDEX || media_type == media::DOCKER_LIST
}

/// The images of a Docker archive, from its `manifest.json`.
fn docker_images(entries: &Entries, data: &[u8]) -> Result<Vec<Found>, ArchiveError> {
    let items: Option<Vec<ManifestItem>> = serde_json::from_slice(data)
        .map_err(|e| ArchiveError::invalid(format!("manifest.json: {e}")))?;
    // Manifests an index.json (Docker 25+) offers, to keep with the image.
    let offered = offered_manifests(entries);
    let mut out = Vec::new();
    for item in items.unwrap_or_default() {
        let missing = |p: &str| {
            ArchiveError::invalid(format!(
                "manifest.json names {p}, which is not in the archive"
            ))
        };
        let config = entries
            .bytes(&item.config)?
            .ok_or_else(|| missing(&item.config))?;
        let (config_path, _) = entries
            .get(&item.config)
            .ok_or_else(|| missing(&item.config))?;
        if let Some(hex) = digest_of_path(&config_path) {
            verify(&config_path, &hex, &config)?;
        }
        let diff_ids = parse_config(&config, &item.config)?;
        let layer_paths = item.layers.unwrap_or_default();
        if layer_paths.len() != diff_ids.len() {
            return Err(ArchiveError::invalid(format!(
                "manifest.json: image {} lists {} layers, its config {}",
                item.config,
                layer_paths.len(),
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for p in &layer_paths {
            let (resolved, c) = entries.get(p).ok_or_else(|| missing(p))?;
            if matches!(c, Content::Link(_)) {
                return Err(missing(p));
            }
            layers.push(LayerRef {
                blob_digest: digest_of_path(&resolved),
                path: resolved,
            });
        }
        let mut tags = Vec::new();
        for t in item.repo_tags.unwrap_or_default() {
            let r = reference::parse(&t)
                .ok()
                .filter(|r| r.tag.is_some() && r.digest.is_none())
                .ok_or_else(|| {
                    ArchiveError::invalid(format!("manifest.json: invalid tag {t:?}"))
                })?;
            let tagged = r.tagged();
            if !tags.contains(&tagged) {
                tags.push(tagged);
            }
        }
        let id = crate::sha256_hex(&config);
        let blob_hexes: Option<Vec<String>> =
            layers.iter().map(|l| l.blob_digest.clone()).collect();
        let manifests = offered
            .iter()
            .find(|(config_hex, layer_hexes, _)| {
                *config_hex == id && Some(layer_hexes) == blob_hexes.as_ref()
            })
            .map(|(_, _, bytes)| bytes.clone())
            .into_iter()
            .collect();
        out.push(Found {
            config,
            id,
            diff_ids,
            layers,
            tags,
            manifests,
        });
    }
    Ok(out)
}

/// The single-platform manifests `index.json` points to directly:
/// (config hex, layer blob hexes, bytes). Problems just mean none; Docker
/// archives are read through `manifest.json`.
fn offered_manifests(entries: &Entries) -> Vec<(String, Vec<String>, Vec<u8>)> {
    let Ok(Some(data)) = entries.bytes("index.json") else {
        return Vec::new();
    };
    let Ok(index) = serde_json::from_slice::<Document>(&data) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for d in index.manifests.unwrap_or_default() {
        let Some(hex) = sha256_hex_of(&d.digest) else {
            continue;
        };
        let Ok(bytes) = entries.blob(hex, "manifest") else {
            continue;
        };
        let Ok(m) = serde_json::from_slice::<Document>(&bytes) else {
            continue;
        };
        let (Some(config), Some(layers)) = (m.config, m.layers) else {
            continue;
        };
        let Some(config_hex) = sha256_hex_of(&config.digest) else {
            continue;
        };
        let layer_hexes: Option<Vec<String>> = layers
            .iter()
            .map(|l| sha256_hex_of(&l.digest).map(str::to_string))
            .collect();
        if let Some(layer_hexes) = layer_hexes {
            out.push((config_hex.to_string(), layer_hexes, bytes));
        }
    }
    out
}

/// The images of a plain OCI layout, from its `index.json`.
fn oci_images(entries: &Entries, data: &[u8]) -> Result<Vec<Found>, ArchiveError> {
    let index: Document = serde_json::from_slice(data)
        .map_err(|e| ArchiveError::invalid(format!("index.json: {e}")))?;
    let host = Platform::host();
    let mut out: Vec<Found> = Vec::new();
    for d in index.manifests.unwrap_or_default() {
        let tag = oci_tag(&d.annotations);
        let (manifest, manifest_doc) = resolve_manifest(entries, &d, &host, 0)?;
        let config_desc = manifest_doc
            .config
            .ok_or_else(|| ArchiveError::invalid(format!("manifest {} has no config", d.digest)))?;
        let config_hex = sha256_hex_of(&config_desc.digest).ok_or_else(|| {
            ArchiveError::invalid(format!("unsupported digest {:?}", config_desc.digest))
        })?;
        let config = entries.blob(config_hex, "image config")?;
        let diff_ids = parse_config(&config, &config_desc.digest)?;
        let layer_descs = manifest_doc.layers.unwrap_or_default();
        if layer_descs.len() != diff_ids.len() {
            return Err(ArchiveError::invalid(format!(
                "manifest {} lists {} layers, its config {}",
                d.digest,
                layer_descs.len(),
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for l in &layer_descs {
            let hex = sha256_hex_of(&l.digest).ok_or_else(|| {
                ArchiveError::invalid(format!("unsupported digest {:?}", l.digest))
            })?;
            let path = format!("blobs/sha256/{hex}");
            match entries.get(&path) {
                Some((resolved, Content::Mem(_) | Content::File { .. })) => layers.push(LayerRef {
                    path: resolved,
                    blob_digest: Some(hex.to_string()),
                }),
                _ => {
                    return Err(ArchiveError::invalid(format!(
                        "layer sha256:{hex} is not in the archive"
                    )))
                }
            }
        }
        let id = config_hex.to_string();
        // One image listed several times (once per tag) is one image.
        if let Some(f) = out.iter_mut().find(|f| f.id == id) {
            if let Some(t) = tag.filter(|t| !f.tags.contains(t)) {
                f.tags.push(t);
            }
            continue;
        }
        out.push(Found {
            config,
            id,
            diff_ids,
            layers,
            tags: tag.into_iter().collect(),
            manifests: vec![manifest],
        });
    }
    Ok(out)
}

/// The tag an index entry gives its image. The name comes from
/// `io.containerd.image.name` (Docker 25+, containerd), its tag from that
/// name, else from `org.opencontainers.image.ref.name`, else `latest`.
/// Without that annotation, a ref name that is a whole reference
/// (`busybox:latest`, as `skopeo copy ... oci-archive:F:busybox:latest`
/// writes it) names the image, as containerd's importer takes it; a bare
/// tag (`latest`) says nothing of the repository: the image stays untagged.
pub(super) fn oci_tag(annotations: &HashMap<String, String>) -> Option<String> {
    let ref_name = annotations.get(ANNOTATION_REF_NAME);
    let (name, tag_fallback) = match annotations.get(ANNOTATION_IMAGE_NAME) {
        Some(n) => (n, ref_name.filter(|t| reference::validate_tag(t).is_ok())),
        None => (
            ref_name.filter(|r| reference::validate_tag(r).is_err())?,
            None,
        ),
    };
    let r = match reference::parse(name) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(name = %name, error = %e, "ignoring an invalid image name annotation");
            return None;
        }
    };
    match (r.tag.as_ref().or(tag_fallback), &r.digest) {
        (Some(t), _) => Some(format!("{}:{t}", r.repo)),
        (None, Some(_)) => None,
        (None, None) => Some(format!("{}:latest", r.repo)),
    }
}

/// Follows a descriptor to an image manifest, choosing the host's
/// platform in indexes. Returns the manifest's bytes and parsed form.
fn resolve_manifest(
    entries: &Entries,
    d: &Descriptor,
    host: &Platform,
    depth: usize,
) -> Result<(Vec<u8>, Document), ArchiveError> {
    let hex = sha256_hex_of(&d.digest)
        .ok_or_else(|| ArchiveError::invalid(format!("unsupported digest {:?}", d.digest)))?;
    let data = entries.blob(hex, "manifest")?;
    let doc: Document = serde_json::from_slice(&data)
        .map_err(|e| ArchiveError::invalid(format!("blobs/sha256/{hex}: {e}")))?;
    let index = is_index_type(&d.media_type)
        || doc.media_type.as_deref().is_some_and(is_index_type)
        || doc.manifests.is_some();
    if !index {
        return Ok((data, doc));
    }
    if depth >= MAX_INDEX_DEPTH {
        return Err(ArchiveError::invalid(format!(
            "index sha256:{hex} nests indexes too deep"
        )));
    }
    let children = doc.manifests.unwrap_or_default();
    let matches = |p: &PlatformJson| {
        p.os == host.os
            && p.architecture == host.arch
            && match (&host.variant, &p.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    };
    // Reversed: max_by_key keeps the last of equals, the first should win.
    let chosen = children
        .iter()
        .rev()
        .filter(|c| c.platform.as_ref().is_some_and(matches))
        .max_by_key(|c| {
            c.platform
                .as_ref()
                .is_some_and(|p| host.variant.is_some() && p.variant == host.variant)
        })
        .or_else(|| match children.as_slice() {
            // A lone entry that states no platform is taken as it is.
            [only] if only.platform.is_none() => Some(only),
            _ => None,
        })
        .ok_or_else(|| {
            ArchiveError::invalid(format!(
                "no matching manifest for {host} in the manifest list entries of index sha256:{hex}"
            ))
        })?;
    resolve_manifest(entries, chosen, host, depth + 1)
}

/// A layer to unpack (deduplicated by diff ID across images).
struct Job<'a> {
    diff_id: String,
    layer: &'a LayerRef,
    content: &'a Content,
}

/// Fails reads once another layer failed, so the load stops early.
struct Cancellable<'a, R> {
    inner: R,
    cancel: &'a AtomicBool,
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled: another layer failed"));
        }
        self.inner.read(buf)
    }
}

/// Unpacks one layer into the work dir, verified.
fn unpack_one(
    inner: &Inner,
    job: &Job<'_>,
    n: usize,
    work: &Path,
    rep: Option<&Reporter>,
    cancel: &AtomicBool,
) -> Result<Unpacked, ArchiveError> {
    let expect = LayerExpect {
        blob_digest: job.layer.blob_digest.clone(),
        diff_id: Some(job.diff_id.clone()),
    };
    let short = short_id(&job.diff_id);
    let (src, sink, total): (Box<dyn Read + Send + '_>, BlobSink, u64) = match job.content {
        Content::File { path, size } => (
            Box::new(
                File::open(path).map_err(|e| StoreError::io("reading back a spooled layer", e))?,
            ),
            BlobSink::Existing(path.clone()),
            *size,
        ),
        Content::Mem(v) => (
            Box::new(&v[..]),
            BlobSink::Append {
                path: work.join(format!("blob-{n}")),
                skip: 0,
            },
            v.len() as u64,
        ),
        Content::Link(_) => {
            return Err(ArchiveError::invalid(format!(
                "{} is not in the archive",
                job.layer.path
            )))
        }
    };
    let mut src = Cancellable { inner: src, cancel };
    let progress = rep.map(|r| r.throttled(&short, "Loading layer", total));
    inner
        .unpack_layer(&mut src, sink, &expect, work, &|n| {
            if let Some(p) = &progress {
                p.update(n);
            }
        })
        .map_err(|e| match e {
            StoreError::InvalidArgument(m) | StoreError::DigestMismatch(m) => {
                ArchiveError::invalid(format!("{}: {m}", job.layer.path))
            }
            other => ArchiveError::Store(other),
        })
}

/// Unpacks the jobs on up to [`MAX_PARALLEL`] threads; all or nothing.
fn unpack_all(
    inner: &Inner,
    jobs: &[Job<'_>],
    work: &Path,
    rep: Option<&Reporter>,
) -> Result<Vec<Unpacked>, ArchiveError> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, MAX_PARALLEL)
        .min(jobs.len());
    let next = Mutex::new(0usize);
    let done: Mutex<Vec<(usize, Unpacked)>> = Mutex::new(Vec::new());
    let first_err: Mutex<Option<ArchiveError>> = Mutex::new(None);
    let cancel = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
                let i = {
                    let mut n = next.lock();
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(job) = jobs.get(i) else { break };
                match unpack_one(inner, job, i, work, rep, &cancel) {
                    Ok(u) => done.lock().push((i, u)),
                    Err(e) => {
                        first_err.lock().get_or_insert(e);
                        cancel.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner() {
        return Err(e);
    }
    let mut done = done.into_inner();
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, u)| u).collect())
}

/// The blocking body of `load`.
pub(super) fn run(
    inner: &Inner,
    body: ChannelReader,
    rep: &Reporter,
    quiet: bool,
    body_failed: &Mutex<Option<String>>,
) -> Result<(), ArchiveError> {
    let work = WorkDir::new(inner, "load")?;
    let entries = read_entries(body, &work.0, body_failed)?;

    let images = if let Some(data) = entries.bytes("manifest.json")? {
        docker_images(&entries, &data)?
    } else if let Some(data) = entries.bytes("index.json")? {
        oci_images(&entries, &data)?
    } else {
        return Err(ArchiveError::invalid("no manifest.json or index.json"));
    };

    // Each missing layer once, whatever images share it.
    let mut seen = HashSet::new();
    let mut jobs = Vec::new();
    // Every layer the images name stays out of `rmi`'s reach until they
    // are committed (layers already stored included).
    let all: Vec<String> = images
        .iter()
        .flat_map(|i| i.diff_ids.iter().cloned())
        .collect();
    let _pins = inner.pins.pin(&all);
    {
        let st = inner.state.read();
        for img in &images {
            for (diff_id, layer) in img.diff_ids.iter().zip(&img.layers) {
                if st.layers.contains_key(diff_id) || !seen.insert(diff_id.clone()) {
                    continue;
                }
                let (_, content) = entries.get(&layer.path).ok_or_else(|| {
                    ArchiveError::invalid(format!("{} is not in the archive", layer.path))
                })?;
                jobs.push(Job {
                    diff_id: diff_id.clone(),
                    layer,
                    content,
                });
            }
        }
    }
    let unpacked = unpack_all(inner, &jobs, &work.0, (!quiet).then_some(rep))?;
    for u in unpacked {
        inner.place_layer(u)?;
    }

    for img in images {
        let mut lines = Vec::new();
        {
            let st = inner.state.read();
            for t in &img.tags {
                if let Some(old) = st.tags.get(t).filter(|old| **old != img.id) {
                    lines.push(format!(
                        "The image {t} already exists, renaming the old one with ID sha256:{old} to empty string\n"
                    ));
                }
            }
        }
        let id = inner.commit_image(NewImage {
            config: img.config,
            layers: img.diff_ids,
            manifests: img.manifests,
            repo_digest: None,
            tags: img.tags.clone(),
        })?;
        if img.tags.is_empty() {
            lines.push(format!("Loaded image ID: sha256:{id}\n"));
        }
        for t in &img.tags {
            lines.push(format!("Loaded image: {t}\n"));
        }
        for l in lines {
            rep.send(JsonMessage {
                stream: Some(l),
                ..Default::default()
            });
        }
    }
    drop(entries);
    drop(work);
    Ok(())
}
