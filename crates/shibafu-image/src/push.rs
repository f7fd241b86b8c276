//! Push: the image's manifest and blobs to a registry. A pulled image is
//! pushed byte for byte (its stored manifest and compressed blobs); a
//! layer made here (import, load of an uncompressed archive) is gzip-
//! compressed once, layers in parallel, and the compressed blob is kept
//! so the next push sends the same bytes. Blobs the registry has are
//! skipped ("Layer already exists"), blobs another repository of the same
//! registry has are mounted.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use shibafu_api::{ApiError, ApiResult, BoxStream, JsonMessage, PushOptions};
use shibafu_distribution::{media, Client, Credentials, RepoName};
use tokio::sync::Semaphore;

use crate::content::{ExportImage, NewImage};
use crate::db::{BlobDesc, Op};
use crate::progress::{short_id, Reporter};
use crate::pull::{credentials, is_index, ManifestJson};
use crate::{random_hex, reference, ImageStore, Inner, StoreError};

/// Blobs uploaded at once (dockerd: 5).
const PARALLEL_UPLOADS: usize = 5;
/// gzip level of layers compressed for a push: fast, as the bytes are
/// kept and pushed again unchanged.
const GZIP_LEVEL: u32 = 1;

/// One tag to push.
struct Job {
    tag: String,
    image: ExportImage,
}

pub(crate) async fn push(
    store: &ImageStore,
    opts: PushOptions,
) -> ApiResult<BoxStream<JsonMessage>> {
    let r = reference::parse(&opts.name).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    if r.digest.is_some() {
        return Err(ApiError::InvalidArgument(format!(
            "cannot push a digest reference: {}",
            opts.name
        )));
    }
    let tag = opts.tag.clone().filter(|t| !t.is_empty()).or(r.tag.clone());
    if let Some(t) = &tag {
        reference::validate_tag(t).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    }
    let repo = RepoName::parse(&r.repo).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    let tags: Vec<String> = match &tag {
        Some(t) => vec![t.clone()],
        None => {
            let st = store.inner.state.read();
            let prefix = format!("{}:", r.repo);
            st.tags
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix).map(String::from))
                .filter(|t| !t.contains('/'))
                .collect()
        }
    };
    let not_found = || {
        ApiError::NotFound(format!(
            "An image does not exist locally with the tag: {}",
            r.repo
        ))
    };
    if tags.is_empty() {
        return Err(not_found());
    }
    let mut jobs = Vec::new();
    for t in tags {
        let image = store
            .inner
            .export_image(&format!("{}:{t}", r.repo))
            .map_err(|e| match e {
                StoreError::NotFound(_) => not_found(),
                other => other.into(),
            })?;
        jobs.push(Job { tag: t, image });
    }
    let creds = credentials(opts.auth.as_ref());
    let (rep, rx) = Reporter::new();
    let inner = Arc::clone(&store.inner);
    let client = store.inner.registry.clone();
    let familiar = r.repo.clone();
    tokio::spawn(async move {
        let qualified = format!("{}/{}", repo.domain, repo.path);
        rep.status(format!("The push refers to repository [{qualified}]"));
        for job in jobs {
            if let Err(e) = push_one(&inner, &client, &repo, &familiar, &creds, job, &rep).await {
                rep.error(e.to_string());
                return;
            }
        }
    });
    Ok(tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed())
}

/// The manifest to push and the blobs it names.
struct Plan {
    manifest: Vec<u8>,
    media_type: String,
    config: BlobDesc,
    layers: Vec<BlobDesc>,
}

/// A stored single-platform manifest whose blobs are all here, reused byte
/// for byte.
fn stored_plan(inner: &Inner, img: &ExportImage) -> Option<Plan> {
    for (_, bytes) in &img.manifests {
        let Ok(m) = serde_json::from_slice::<ManifestJson>(bytes) else {
            continue;
        };
        let mt = m
            .media_type
            .clone()
            .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
        if is_index(&mt) || !m.manifests.is_empty() {
            continue;
        }
        let Some(cfg) = &m.config else { continue };
        if cfg.digest != format!("sha256:{}", img.id) || m.layers.len() != img.layers.len() {
            continue;
        }
        let mut layers = Vec::new();
        for d in &m.layers {
            let hex = d.digest.strip_prefix("sha256:").unwrap_or(&d.digest);
            if !inner.blob_file(hex).is_file() {
                break;
            }
            layers.push(BlobDesc {
                digest: hex.to_string(),
                media_type: d.media_type.clone(),
                size: d.size,
            });
        }
        if layers.len() != m.layers.len() {
            continue;
        }
        return Some(Plan {
            manifest: bytes.clone(),
            media_type: mt,
            config: BlobDesc {
                digest: img.id.clone(),
                media_type: cfg.media_type.clone(),
                size: cfg.size,
            },
            layers,
        });
    }
    None
}

fn is_compressed(mt: &str) -> bool {
    mt.ends_with("+gzip") || mt.ends_with(".gzip") || mt.ends_with("+zstd")
}

/// Compresses a layer's uncompressed blob with gzip into `blobs/`, adds the
/// new blob to the layer's record, and returns it.
fn compress_layer(inner: &Inner, diff_id: &str, src_hex: &str) -> Result<BlobDesc, StoreError> {
    let src = File::open(inner.blob_file(src_hex))
        .map_err(|e| StoreError::io("reading a layer blob", e))?;
    let tmp = inner.tmp_dir().join(format!("gz-{}", random_hex(8)));
    let res = (|| -> Result<BlobDesc, StoreError> {
        let out =
            File::create(&tmp).map_err(|e| StoreError::io("creating a compressed layer", e))?;
        let hashing = HashWriter {
            inner: BufWriter::with_capacity(512 * 1024, out),
            hasher: sha2::Sha256::default(),
            len: 0,
        };
        let mut enc = flate2::write::GzEncoder::new(hashing, flate2::Compression::new(GZIP_LEVEL));
        let mut r = BufReader::with_capacity(512 * 1024, src);
        io::copy(&mut r, &mut enc).map_err(|e| StoreError::io("compressing a layer", e))?;
        let hw = enc
            .finish()
            .map_err(|e| StoreError::io("compressing a layer", e))?;
        let digest = {
            use sha2::Digest;
            hex::encode(hw.hasher.clone().finalize())
        };
        let size = hw.len;
        let f = hw
            .inner
            .into_inner()
            .map_err(|e| StoreError::io("writing a compressed layer", e.into_error()))?;
        f.sync_all()
            .map_err(|e| StoreError::io("syncing a compressed layer", e))?;
        let desc = BlobDesc {
            digest,
            media_type: media::DOCKER_LAYER_GZIP.to_string(),
            size,
        };
        inner.add_layer_blob(diff_id, &desc, &tmp)?;
        Ok(desc)
    })();
    let _ = std::fs::remove_file(&tmp);
    res
}

/// A writer that hashes and counts what goes through it.
struct HashWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A manifest generated for an image without a usable stored one:
/// Docker v2 schema 2 when every layer is gzip, OCI otherwise.
/// Also returns the diff IDs it already announced ("Preparing").
async fn generated_plan(
    inner: &Arc<Inner>,
    img: &ExportImage,
    rep: &Reporter,
) -> Result<(Plan, HashSet<String>), StoreError> {
    let mut picks: Vec<Option<BlobDesc>> = Vec::new();
    let mut to_compress = Vec::new();
    for (i, l) in img.layers.iter().enumerate() {
        let stored: Vec<&BlobDesc> = l
            .blobs
            .iter()
            .filter(|b| inner.blob_file(&b.digest).is_file())
            .collect();
        let pick = stored
            .iter()
            .find(|b| b.media_type.ends_with("gzip"))
            .or_else(|| stored.iter().find(|b| is_compressed(&b.media_type)))
            .map(|b| (*b).clone());
        match pick {
            Some(b) => picks.push(Some(b)),
            None => {
                let src = stored.first().ok_or_else(|| {
                    StoreError::Corrupt(format!("layer sha256:{} has no stored blob", l.diff_id))
                })?;
                to_compress.push((i, l.diff_id.clone(), src.digest.clone()));
                picks.push(None);
            }
        }
    }
    // Compress the layers made here, in parallel.
    let mut handles = Vec::new();
    let mut prepared = HashSet::new();
    for (i, diff, src) in to_compress {
        prepared.insert(diff.clone());
        let inner = Arc::clone(inner);
        let id = short_id(&diff);
        rep.layer(&id, "Preparing");
        handles.push((
            i,
            tokio::task::spawn_blocking(move || compress_layer(&inner, &diff, &src)),
        ));
    }
    for (i, h) in handles {
        let d = h
            .await
            .map_err(|e| StoreError::Corrupt(format!("compression task failed: {e}")))??;
        picks[i] = Some(d);
    }
    let layers: Vec<BlobDesc> = picks.into_iter().flatten().collect();
    let docker = layers.iter().all(|b| b.media_type.ends_with("gzip"));
    let (mt, cfg_mt, layer_mt_gzip) = if docker {
        (
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP,
        )
    } else {
        (
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            media::OCI_LAYER_GZIP,
        )
    };
    let layer_json: Vec<serde_json::Value> = layers
        .iter()
        .map(|b| {
            let lmt = if b.media_type.ends_with("gzip") {
                layer_mt_gzip.to_string()
            } else {
                b.media_type.clone()
            };
            json!({"mediaType": lmt, "size": b.size, "digest": format!("sha256:{}", b.digest)})
        })
        .collect();
    let config = BlobDesc {
        digest: img.id.clone(),
        media_type: cfg_mt.to_string(),
        size: img.config.len() as u64,
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": cfg_mt, "size": config.size, "digest": format!("sha256:{}", img.id)},
        "layers": layer_json,
    });
    let bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((
        Plan {
            manifest: bytes,
            media_type: mt.to_string(),
            config,
            layers,
        },
        prepared,
    ))
}

async fn push_one(
    inner: &Arc<Inner>,
    client: &Client,
    repo: &RepoName,
    familiar: &str,
    creds: &Credentials,
    job: Job,
    rep: &Reporter,
) -> Result<(), StoreError> {
    let (plan, prepared) = match stored_plan(inner, &job.image) {
        Some(p) => (p, HashSet::new()),
        None => generated_plan(inner, &job.image, rep).await?,
    };
    // Other repositories of the same registry this image came from: the
    // registry can mount its blobs from them.
    let sources: Vec<RepoName> = job
        .image
        .repo_digests
        .iter()
        .filter_map(|d| d.split('@').next())
        .filter_map(|r| RepoName::parse(r).ok())
        .filter(|r| r.domain == repo.domain && r.path != repo.path)
        .collect();
    let reg = |e: shibafu_distribution::Error| StoreError::Registry(e.to_string());
    let sem = Arc::new(Semaphore::new(PARALLEL_UPLOADS));
    let mut seen = HashSet::new();
    let mut tasks = Vec::new();
    // Layers are shown by diff ID, as dockerd shows them when pushing.
    for (b, l) in plan.layers.iter().zip(&job.image.layers) {
        if !seen.insert(b.digest.clone()) {
            continue;
        }
        let id = short_id(&l.diff_id);
        if !prepared.contains(&l.diff_id) {
            rep.layer(&id, "Preparing");
        }
        let (inner, client, repo, creds, rep, sem, sources, b) = (
            Arc::clone(inner),
            client.clone(),
            repo.clone(),
            creds.clone(),
            rep.clone(),
            Arc::clone(&sem),
            sources.clone(),
            b.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let digest = format!("sha256:{}", b.digest);
            if client
                .blob_exists(&repo, &digest, &creds)
                .await
                .map_err(reg)?
                .is_some()
            {
                rep.layer(&id, "Layer already exists");
                return Ok(());
            }
            for from in &sources {
                if client
                    .mount_blob(&repo, &digest, from, &creds)
                    .await
                    .unwrap_or(false)
                {
                    // dockerd names the source by its path on the registry.
                    rep.layer(&id, &format!("Mounted from {}", from.path));
                    return Ok(());
                }
            }
            let throttle = Arc::new(rep.throttled(&id, "Pushing", b.size));
            let t2 = Arc::clone(&throttle);
            client
                .push_blob_file(
                    &repo,
                    &digest,
                    &inner.blob_file(&b.digest),
                    b.size,
                    &creds,
                    Arc::new(move |n| t2.update(n)),
                )
                .await
                .map_err(reg)?;
            rep.layer(&id, "Pushed");
            Ok::<(), StoreError>(())
        }));
    }
    let mut first_err = None;
    for t in tasks {
        let res = t
            .await
            .unwrap_or_else(|e| Err(StoreError::Corrupt(format!("upload task failed: {e}"))));
        if let Err(e) = res {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let cfg_digest = format!("sha256:{}", plan.config.digest);
    if client
        .blob_exists(repo, &cfg_digest, creds)
        .await
        .map_err(reg)?
        .is_none()
    {
        client
            .push_blob_file(
                repo,
                &cfg_digest,
                &inner.blob_file(&plan.config.digest),
                plan.config.size,
                creds,
                Arc::new(|_| {}),
            )
            .await
            .map_err(reg)?;
    }
    let size = plan.manifest.len();
    let digest = client
        .put_manifest(
            repo,
            &job.tag,
            &plan.media_type,
            Bytes::from(plan.manifest.clone()),
            creds,
        )
        .await
        .map_err(reg)?;
    // Remember what the registry now holds (RepoDigests, and the manifest
    // for the next push or save).
    let new = NewImage {
        config: job.image.config.clone(),
        layers: job.image.layers.iter().map(|l| l.diff_id.clone()).collect(),
        manifests: vec![plan.manifest],
        repo_digest: Some(format!("{familiar}@{digest}")),
        tags: Vec::new(),
    };
    let inner2 = Arc::clone(inner);
    tokio::task::spawn_blocking(move || inner2.commit_image(new))
        .await
        .map_err(|e| StoreError::Corrupt(format!("commit task failed: {e}")))??;
    rep.status(format!("{}: digest: {digest} size: {size}", job.tag));
    rep.send(JsonMessage {
        aux: Some(json!({"Tag": job.tag, "Digest": digest, "Size": size})),
        progress_detail: Some(Default::default()),
        ..Default::default()
    });
    Ok(())
}

impl Inner {
    /// Adds a blob (a compressed form of a stored layer, written to `tmp`)
    /// to the store and to the layer's record.
    pub(crate) fn add_layer_blob(
        &self,
        diff_id: &str,
        desc: &BlobDesc,
        tmp: &std::path::Path,
    ) -> Result<(), StoreError> {
        let _w = self.write.lock();
        let mut rec = self
            .state
            .read()
            .layers
            .get(diff_id)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("layer sha256:{diff_id} is missing")))?;
        if rec.blobs.iter().any(|b| b.digest == desc.digest) {
            return Ok(());
        }
        let dest = self.blob_path(&desc.digest);
        if !dest.exists() {
            std::fs::rename(tmp, &dest)
                .map_err(|e| StoreError::io("storing a compressed layer", e))?;
            crate::sync_dir(&self.root.join("blobs/sha256"))
                .map_err(|e| StoreError::io("syncing blobs", e))?;
        }
        if rec.blobs.is_empty() {
            rec.blobs = rec.blob_list();
        }
        rec.blobs.push(desc.clone());
        if let Err(e) = self.meta.commit(&[Op::PutLayer(rec.clone())]) {
            let _ = std::fs::remove_file(&dest);
            return Err(e.into());
        }
        self.state.write().layers.insert(diff_id.to_string(), rec);
        Ok(())
    }
}
