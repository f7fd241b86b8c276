//! `save` and `load`: Docker archives (25+'s OCI layout with `manifest.json`
//! and `repositories`, and ≤ 24's `<id>/layer.tar`) and plain OCI layout
//! tarballs (skopeo's `oci-archive:`), plain or gzip/zstd-compressed.
//!
//! `save` ([`save`]) streams the tar straight from the stored blobs (no temp
//! copy): a pulled image goes out with the manifest and compressed layer
//! blobs it was pulled with, byte for byte, so its digests survive a
//! `save | load` and a later push. `load` ([`load`]) reads the archive in
//! one pass, spooling blobs to a work dir, then validates everything, unpacks
//! the missing layers in parallel and only then places layers and commits
//! images, so a bad archive leaves the store as it was.

mod load;
mod save;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use shibafu_api::{ApiError, ApiResult, BoxStream, JsonMessage};

use crate::progress::Reporter;
use crate::{ImageStore, StoreError};

/// Annotation of an OCI index entry with the image's full name
/// (`docker.io/library/busybox:latest`), as containerd and Docker 25+ write it.
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Annotation of an OCI index entry with the tag (`latest`).
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Why a save or a load failed. Texts are what the docker CLI prints.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArchiveError {
    /// The archive is malformed, truncated, inconsistent or holds content
    /// that does not match its digest.
    #[error("invalid archive: {0}")]
    Invalid(String),
    /// Content this engine cannot run (another OS's image).
    #[error("{0}")]
    Unsupported(String),
    /// The request body broke off (the client went away).
    #[error("reading the archive from the request failed: {0}")]
    Body(String),
    /// The store failed (disk full, I/O, metadata).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ArchiveError {
    fn invalid(m: impl Into<String>) -> Self {
        ArchiveError::Invalid(m.into())
    }
}

/// `GET /images/get`: validates every name first (an unknown one is a 404
/// before any byte), then streams the archive written on a blocking thread.
pub(crate) async fn save(
    store: &ImageStore,
    names: Vec<String>,
) -> ApiResult<BoxStream<io::Result<Bytes>>> {
    let inner = Arc::clone(&store.inner);
    let plan = tokio::task::spawn_blocking(move || save::plan(&inner, &names))
        .await
        .map_err(|e| ApiError::Internal(format!("save task failed: {e}")))??;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut out = save::ChanWriter::new(tx.clone());
        if let Err(e) = plan.write(&mut out) {
            // A client that went away is not worth a log line.
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "image save failed mid-stream");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    Ok(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed())
}

/// `POST /images/load`: the body is pumped into a blocking reader; progress,
/// `Loaded image:` lines and any failure come back in-stream (dockerd
/// answers 200 whatever happens).
pub(crate) async fn load(
    store: &ImageStore,
    mut body: BoxStream<io::Result<Bytes>>,
    quiet: bool,
) -> ApiResult<BoxStream<JsonMessage>> {
    let (tx, reader) = crate::import::channel();
    let (rep, rx) = Reporter::new();
    // Set by the pump when the body itself fails, so that failure is not
    // reported as a corrupt archive.
    let body_failed: Arc<Mutex<Option<String>>> = Arc::default();
    let failed = Arc::clone(&body_failed);
    tokio::spawn(async move {
        // Once the reader is done (the archive's end, or a failure), the
        // rest of the body is drained unread: the client finishes its
        // upload instead of meeting a closed connection.
        let mut reader_gone = false;
        while let Some(item) = body.next().await {
            if let Err(e) = &item {
                *failed.lock() = Some(e.to_string());
                if !reader_gone {
                    let _ = tx.send(item).await;
                }
                break;
            }
            if !reader_gone && tx.send(item).await.is_err() {
                reader_gone = true;
            }
        }
    });
    let inner = Arc::clone(&store.inner);
    let task_rep = rep.clone();
    let task = tokio::task::spawn_blocking(move || {
        let res = load::run(&inner, reader, &task_rep, quiet, &body_failed);
        if let Err(e) = res {
            task_rep.error(e.to_string());
        }
    });
    tokio::spawn(async move {
        if let Err(e) = task.await {
            rep.error(format!("load task failed: {e}"));
        }
    });
    Ok(
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
            .boxed(),
    )
}

/// A familiar repository name fully qualified, as `io.containerd.image.name`
/// holds it: `busybox` → `docker.io/library/busybox`, `u/app` →
/// `docker.io/u/app`, `localhost:5000/x` unchanged.
fn qualified(familiar_repo: &str) -> String {
    match familiar_repo.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            familiar_repo.to_string()
        }
        Some(_) => format!("docker.io/{familiar_repo}"),
        None => format!("docker.io/library/{familiar_repo}"),
    }
}

/// The hex of a `sha256:<64 hex>` digest, `None` for anything else.
fn sha256_hex_of(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| crate::reference::is_full_hex_id(h))
}
