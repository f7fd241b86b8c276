//! Pull: resolve the reference to one platform's manifest (everything that
//! can fail before a layer moves is an HTTP error, as in dockerd), then
//! fetch the layers in parallel, each decompressed, hashed and unpacked
//! while it streams, and commit the image in one step.
//!
//! Resume: a layer's compressed bytes are appended to `ingest/<digest>` as
//! they arrive. A pull cut by a dropped connection re-requests the rest
//! with `Range` at once; one cut by a crash or a kill finds the file on
//! the next try, replays it from disk and asks the registry only for the
//! rest. Concurrent pulls share a layer through [`crate::content::Inflight`]:
//! one fetches it, the others wait for it.

use std::fs::{self, File};
use std::io::{self, Read};
use std::sync::Arc;

use bollard_stubs::models::AuthResponse;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use shibafu_api::{ApiError, ApiResult, BoxStream, JsonMessage, PullOptions, RegistryAuth};
use shibafu_distribution::{media, Client, Credentials, Error as RegError, RepoName};
use tokio::sync::Semaphore;

use crate::content::{BlobSink, Claim, LayerExpect, NewImage, WorkDir};
use crate::progress::{short_id, Reporter};
use crate::{reference, ImageStore, Inner, StoreError};

/// Layers downloaded at once by one pull (dockerd: 3).
const PARALLEL_DOWNLOADS: usize = 6;
/// Re-requests (with `Range`) of a blob whose connection dropped mid-way.
const STREAM_RETRIES: u32 = 3;

/// A descriptor in a manifest or index.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<PlatformJson>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PlatformJson {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image manifest (Docker v2 schema 2 or OCI).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ManifestJson {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub(crate) fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: variant.map(String::from),
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Platform, StoreError> {
        let bad = || {
            StoreError::InvalidArgument(format!(
                "invalid platform {s:?}: expected os/arch[/variant], e.g. linux/amd64"
            ))
        };
        let parts: Vec<&str> = s.split('/').collect();
        let norm_arch = |a: &str| match a {
            "x86_64" | "x86-64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            "armhf" => "arm".to_string(),
            a => a.to_string(),
        };
        let p = match parts.as_slice() {
            [os] if !os.is_empty() => Platform {
                os: os.to_lowercase(),
                ..Platform::host()
            },
            [os, arch] if !os.is_empty() && !arch.is_empty() => Platform {
                os: os.to_lowercase(),
                arch: norm_arch(&arch.to_lowercase()),
                variant: None,
            },
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Platform {
                os: os.to_lowercase(),
                arch: norm_arch(&arch.to_lowercase()),
                variant: Some(v.to_lowercase()),
            },
            _ => return Err(bad()),
        };
        if p.os != "linux" {
            return Err(StoreError::InvalidArgument(format!(
                "operating system {:?} is not supported: shibafu runs linux images",
                p.os
            )));
        }
        Ok(p)
    }

    /// Whether an index entry's platform is this one. A missing variant
    /// on either side matches (arm64 images rarely say v8).
    fn matches(&self, p: &PlatformJson) -> bool {
        p.os == self.os
            && p.architecture == self.arch
            && match (&self.variant, &p.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// Preference among matches: an exact variant beats a missing one.
    fn score(&self, p: &PlatformJson) -> u8 {
        u8::from(self.variant.is_some() && self.variant == p.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The credentials a client sent, in the registry client's terms.
pub(crate) fn credentials(auth: Option<&RegistryAuth>) -> Credentials {
    let Some(a) = auth else {
        return Credentials::Anonymous;
    };
    if let Some(t) = a.registrytoken.as_ref().filter(|t| !t.is_empty()) {
        return Credentials::Bearer(t.clone());
    }
    let (mut user, mut pass) = (a.username.clone(), a.password.clone());
    if let Some(enc) = a.auth.as_ref().filter(|s| !s.is_empty()) {
        if let Some(dec) = shibafu_api::base64_decode(enc) {
            if let Some((u, p)) = String::from_utf8_lossy(&dec).split_once(':') {
                user = user.filter(|u| !u.is_empty()).or(Some(u.to_string()));
                pass = pass.filter(|p| !p.is_empty()).or(Some(p.to_string()));
            }
        }
    }
    if let Some(t) = a.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Credentials::IdentityToken {
            username: user.unwrap_or_default(),
            token: t.clone(),
        };
    }
    match (user, pass) {
        (Some(u), Some(p)) if !u.is_empty() => Credentials::Basic {
            username: u,
            password: p,
        },
        _ => Credentials::Anonymous,
    }
}

pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == media::DOCKER_LIST || media_type == media::OCI_INDEX
}

fn hex_of(digest: &str) -> Result<&str, StoreError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if crate::reference::is_full_hex_id(h) => Ok(h),
        _ => Err(StoreError::Registry(format!(
            "unsupported digest {digest:?} (only sha256 is supported)"
        ))),
    }
}

/// A registry error before the stream, in dockerd's words.
fn resolve_error(e: RegError, shown: &str, repo_shown: &str, anonymous: bool) -> ApiError {
    match e {
        RegError::NotFound { code, message } => {
            if code.as_deref() == Some("NAME_UNKNOWN") {
                ApiError::NotFound(format!(
                    "pull access denied for {repo_shown}, repository does not exist or may require 'docker login': {message}"
                ))
            } else {
                ApiError::NotFound(format!("manifest for {shown} not found: {message}"))
            }
        }
        RegError::Unauthorized(m) | RegError::Denied(m) if anonymous => {
            ApiError::NotFound(format!(
                "pull access denied for {repo_shown}, repository does not exist or may require 'docker login': {m}"
            ))
        }
        RegError::Unauthorized(m) => ApiError::Unauthorized(m),
        RegError::Denied(m) => ApiError::Unauthorized(m),
        RegError::InvalidName(m) => ApiError::InvalidArgument(format!("invalid reference format: {m}")),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Everything known once the manifest is resolved.
struct Resolved {
    repo: RepoName,
    creds: Credentials,
    /// Familiar repository (`busybox`, `localhost:5000/x`).
    familiar: String,
    /// What the final lines name: `busybox:latest` or `busybox@sha256:..`.
    shown: String,
    tag: Option<String>,
    /// The digest `RepoDigests` records (the index's when there is one).
    top_digest: String,
    manifests: Vec<Vec<u8>>,
    config: Bytes,
    layers: Vec<Descriptor>,
    diff_ids: Vec<String>,
}

pub(crate) async fn pull(
    store: &ImageStore,
    opts: PullOptions,
) -> ApiResult<BoxStream<JsonMessage>> {
    let r =
        reference::parse(&opts.reference).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    let platform = match opts.platform.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => Some(Platform::parse(p)?),
        None => None,
    };
    let repo = RepoName::parse(&r.repo).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    let creds = credentials(opts.auth.as_ref());
    let client = store.inner.registry.clone();
    // `pull --all-tags`: every tag of the repository, one after another in
    // one stream, as dockerd does.
    let tags: Vec<Option<String>> = if opts.all_tags && r.tag.is_none() && r.digest.is_none() {
        let mut t = client
            .list_tags(&repo, &creds)
            .await
            .map_err(|e| resolve_error(e, &r.repo, &r.repo, creds == Credentials::Anonymous))?;
        t.sort();
        if t.is_empty() {
            return Err(ApiError::NotFound(format!("no tags found for {}", r.repo)));
        }
        t.into_iter().map(Some).collect()
    } else {
        vec![match (&r.tag, &r.digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.clone(),
        }]
    };
    let first = resolve(
        &client,
        &repo,
        &r,
        tags[0].clone(),
        platform.clone(),
        &creds,
    )
    .await?;
    let (rep, rx) = Reporter::new();
    let inner = Arc::clone(&store.inner);
    tokio::spawn(async move {
        let mut next = Some(first);
        for tag in &tags {
            let resolved = match next.take() {
                Some(x) => x,
                None => {
                    match resolve(&client, &repo, &r, tag.clone(), platform.clone(), &creds).await {
                        Ok(x) => x,
                        Err(e) => {
                            rep.error(e.to_string());
                            return;
                        }
                    }
                }
            };
            if let Err(e) = run(Arc::clone(&inner), client.clone(), resolved, rep.clone()).await {
                rep.error(e.to_string());
                return;
            }
        }
    });
    Ok(tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed())
}

/// Resolves one tag (or the digest) of `r` to a platform's manifest and
/// config.
async fn resolve(
    client: &Client,
    repo: &RepoName,
    r: &reference::ImageRef,
    tag: Option<String>,
    platform: Option<Platform>,
    creds: &Credentials,
) -> ApiResult<Resolved> {
    let anonymous = *creds == Credentials::Anonymous;
    let shown = match (&r.digest, &tag) {
        (Some(d), _) => format!("{}@{d}", r.repo),
        (None, Some(t)) => format!("{}:{t}", r.repo),
        (None, None) => r.repo.clone(),
    };
    let (repo, creds) = (repo.clone(), creds.clone());
    let want = platform.clone().unwrap_or_else(Platform::host);
    let reference = r.digest.clone().or(tag.clone()).unwrap_or_default();
    let err = |e| resolve_error(e, &shown, &r.repo, anonymous);

    let top = client
        .get_manifest(&repo, &reference, &creds)
        .await
        .map_err(err)?;
    let mut manifests = vec![top.bytes.to_vec()];
    let manifest = if is_index(&top.media_type) {
        let idx: ManifestJson = serde_json::from_slice(&top.bytes).map_err(|e| {
            ApiError::Internal(format!("invalid manifest list from the registry: {e}"))
        })?;
        let chosen = idx
            .manifests
            .iter()
            .filter(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
            .max_by_key(|d| d.platform.as_ref().map_or(0, |p| want.score(p)))
            .cloned()
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "no matching manifest for {want} in the manifest list entries"
                ))
            })?;
        let m = client
            .get_manifest(&repo, &chosen.digest, &creds)
            .await
            .map_err(err)?;
        manifests.push(m.bytes.to_vec());
        m
    } else {
        top.clone()
    };
    let mj: ManifestJson = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| ApiError::Internal(format!("invalid manifest from the registry: {e}")))?;
    if mj.schema_version != 2 || is_index(&manifest.media_type) {
        return Err(ApiError::Internal(format!(
            "unsupported manifest format {:?} (schema {}): Docker v2 schema 2 and OCI manifests are supported",
            manifest.media_type, mj.schema_version
        )));
    }
    let config_desc = mj
        .config
        .clone()
        .ok_or_else(|| ApiError::Internal("the manifest has no config".into()))?;
    let config = client
        .get_blob_bytes(&repo, &config_desc.digest, &creds)
        .await
        .map_err(err)?;
    #[derive(Deserialize)]
    struct ConfigHead {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        rootfs: RootFs,
    }
    #[derive(Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    let head: ConfigHead = serde_json::from_slice(&config)
        .map_err(|e| ApiError::Internal(format!("invalid image config from the registry: {e}")))?;
    if let Some(p) = &platform {
        if !is_index(&top.media_type) && (head.os != p.os || head.architecture != p.arch) {
            return Err(ApiError::NotFound(format!(
                "image with reference {shown} was found but its platform ({}/{}) does not match the specified platform ({p})",
                head.os, head.architecture
            )));
        }
    }
    if head.rootfs.diff_ids.len() != mj.layers.len() {
        return Err(ApiError::Internal(format!(
            "invalid image: the manifest has {} layers, the config {}",
            mj.layers.len(),
            head.rootfs.diff_ids.len()
        )));
    }
    let mut diff_ids = Vec::new();
    for d in &head.rootfs.diff_ids {
        diff_ids.push(hex_of(d)?.to_string());
    }
    for l in &mj.layers {
        hex_of(&l.digest)?;
    }
    Ok(Resolved {
        repo,
        creds,
        familiar: r.repo.clone(),
        shown,
        tag,
        top_digest: top.digest.clone(),
        manifests,
        config,
        layers: mj.layers,
        diff_ids,
    })
}

async fn run(
    inner: Arc<Inner>,
    client: Client,
    r: Resolved,
    rep: Reporter,
) -> Result<(), StoreError> {
    let path_shown = r.repo.path.clone();
    let at = r.tag.clone().unwrap_or_else(|| r.top_digest.clone());
    rep.with_id(&at, &format!("Pulling from {path_shown}"));
    let _pins = inner.pins.pin(&r.diff_ids);
    let existed_before = {
        let st = inner.state.read();
        let id = crate::sha256_hex(&r.config);
        let tag_ok = match &r.tag {
            Some(t) => st.tags.get(&format!("{}:{t}", r.familiar)) == Some(&id),
            None => true,
        };
        st.images.contains_key(&id) && tag_ok
    };
    let sem = Arc::new(Semaphore::new(PARALLEL_DOWNLOADS));
    let mut tasks = Vec::new();
    let mut announced = std::collections::HashSet::new();
    for (desc, diff) in r.layers.iter().zip(&r.diff_ids) {
        let id = short_id(&desc.digest);
        if inner.state.read().layers.contains_key(diff) {
            if announced.insert(id.clone()) {
                rep.layer(&id, "Already exists");
            }
            continue;
        }
        if !announced.insert(id.clone()) {
            continue; // the same layer twice in one image
        }
        rep.layer(&id, "Pulling fs layer");
        let job = LayerJob {
            inner: Arc::clone(&inner),
            client: client.clone(),
            repo: r.repo.clone(),
            creds: r.creds.clone(),
            desc: desc.clone(),
            diff: diff.clone(),
            id,
            rep: rep.clone(),
            sem: Arc::clone(&sem),
        };
        tasks.push(tokio::spawn(job.run()));
    }
    let mut first_err = None;
    for t in tasks {
        let res = match t.await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Corrupt(format!("layer task failed: {e}"))),
        };
        if let Err(e) = res {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let new = NewImage {
        config: r.config.to_vec(),
        layers: r.diff_ids.clone(),
        manifests: r.manifests.clone(),
        repo_digest: Some(format!("{}@{}", r.familiar, r.top_digest)),
        tags: r
            .tag
            .iter()
            .map(|t| format!("{}:{t}", r.familiar))
            .collect(),
    };
    let inner2 = Arc::clone(&inner);
    tokio::task::spawn_blocking(move || inner2.commit_image(new))
        .await
        .map_err(|e| StoreError::Corrupt(format!("commit task failed: {e}")))??;
    rep.status(format!("Digest: {}", r.top_digest));
    if existed_before {
        rep.status(format!("Status: Image is up to date for {}", r.shown));
    } else {
        rep.status(format!("Status: Downloaded newer image for {}", r.shown));
    }
    Ok(())
}

/// One layer of one pull.
struct LayerJob {
    inner: Arc<Inner>,
    client: Client,
    repo: RepoName,
    creds: Credentials,
    desc: Descriptor,
    diff: String,
    id: String,
    rep: Reporter,
    sem: Arc<Semaphore>,
}

impl LayerJob {
    async fn run(self) -> Result<(), StoreError> {
        loop {
            let claim = self.inner.inflight.claim(&self.diff);
            match claim {
                Claim::Mine(guard) => {
                    let res = self.fetch().await;
                    guard.done(res.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    return res;
                }
                Claim::Wait(mut rx) => {
                    self.rep.layer(&self.id, "Waiting");
                    let outcome = loop {
                        if let Some(o) = rx.borrow().clone() {
                            break Some(o);
                        }
                        if rx.changed().await.is_err() {
                            break rx.borrow().clone();
                        }
                    };
                    if matches!(outcome, Some(Ok(())))
                        && self.inner.state.read().layers.contains_key(&self.diff)
                    {
                        self.rep.layer(&self.id, "Download complete");
                        self.rep.layer(&self.id, "Pull complete");
                        return Ok(());
                    }
                    // The other pull failed: try ourselves.
                }
            }
        }
    }

    /// Downloads, unpacks and places the layer.
    async fn fetch(&self) -> Result<(), StoreError> {
        if self.inner.state.read().layers.contains_key(&self.diff) {
            self.rep.layer(&self.id, "Already exists");
            return Ok(());
        }
        let _permit = self
            .sem
            .acquire()
            .await
            .map_err(|_| StoreError::Corrupt("semaphore closed".into()))?;
        let blob_hex = hex_of(&self.desc.digest)?.to_string();
        let expect = LayerExpect {
            blob_digest: Some(blob_hex.clone()),
            diff_id: Some(self.diff.clone()),
        };
        let work = WorkDir::new(&self.inner, "pull")?;
        let total = self.desc.size;
        // Unpack a blob we already keep (another image's) without the network.
        let stored = self.inner.blob_path(&blob_hex);
        if stored.is_file() {
            let inner = Arc::clone(&self.inner);
            let path = stored.clone();
            let u = tokio::task::spawn_blocking(move || {
                let mut f =
                    File::open(&path).map_err(|e| StoreError::io("reading a stored blob", e))?;
                let u = inner.unpack_layer(
                    &mut f,
                    BlobSink::Existing(path.clone()),
                    &expect,
                    &work.0,
                    &|_| {},
                )?;
                let rec = inner.place_layer(u)?;
                drop(work);
                Ok::<_, StoreError>(rec)
            })
            .await
            .map_err(|e| StoreError::Corrupt(format!("unpack task failed: {e}")))?;
            u?;
            self.rep.layer(&self.id, "Pull complete");
            return Ok(());
        }

        let ingest = self.inner.ingest_path(&blob_hex);
        let mut have = fs::metadata(&ingest).map(|m| m.len()).unwrap_or(0);
        if total > 0 && have > total {
            let _ = fs::remove_file(&ingest);
            have = 0;
        }
        let mut offset = have;
        let mut first: Option<shibafu_distribution::BlobReader> = None;
        if total == 0 || have < total {
            let b = self
                .client
                .get_blob(&self.repo, &self.desc.digest, have, &self.creds)
                .await
                .map_err(|e| StoreError::Registry(e.to_string()))?;
            if b.offset != have {
                // The registry ignored the Range: start over.
                let _ = fs::remove_file(&ingest);
                have = 0;
                offset = 0;
            }
            first = Some(b);
        }
        if have > 0 {
            tracing::info!(layer = %self.id, bytes = have, "resuming a layer download");
        }
        let (tx, net) = crate::import::channel();
        let net_failed = net.sender_failed();
        // The network side: the first response, then Range re-requests
        // after a dropped connection.
        let pump = {
            let client = self.client.clone();
            let repo = self.repo.clone();
            let creds = self.creds.clone();
            let digest = self.desc.digest.clone();
            async move {
                let Some(mut cur) = first else { return };
                let mut pos = offset;
                let mut retries = 0;
                loop {
                    let mut failed = None;
                    while let Some(item) = cur.stream.next().await {
                        match item {
                            Ok(b) => {
                                pos += b.len() as u64;
                                if tx.send(Ok(b)).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    let Some(e) = failed else { return };
                    retries += 1;
                    if retries > STREAM_RETRIES {
                        let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                        return;
                    }
                    tracing::warn!(digest = %digest, at = pos, error = %e, "blob download cut, resuming");
                    match client.get_blob(&repo, &digest, pos, &creds).await {
                        Ok(b) if b.offset == pos => cur = b,
                        Ok(_) => {
                            let _ = tx
                                .send(Err(io::Error::other(format!(
                                    "{e} (the registry cannot resume)"
                                ))))
                                .await;
                            return;
                        }
                        Err(e2) => {
                            let _ = tx.send(Err(io::Error::other(e2.to_string()))).await;
                            return;
                        }
                    }
                }
            }
        };
        let inner = Arc::clone(&self.inner);
        let progress = self.rep.throttled(&self.id, "Downloading", total);
        let ingest2 = ingest.clone();
        let started = std::time::Instant::now();
        let unpack = tokio::task::spawn_blocking(move || {
            let prefix = if have > 0 {
                Some(
                    File::open(&ingest2)
                        .map_err(|e| StoreError::io("reading a partial download", e))?,
                )
            } else {
                None
            };
            let mut src: Box<dyn Read + Send> = match prefix {
                Some(f) => Box::new(f.take(have).chain(net)),
                None => Box::new(net),
            };
            let res = inner.unpack_layer(
                &mut src,
                BlobSink::Append {
                    path: ingest2.clone(),
                    skip: have,
                },
                &expect,
                &work.0,
                &|n| progress.update(n),
            );
            let u = match res {
                Ok(u) => u,
                Err(e) => {
                    // Bytes that do not decode or verify must not be resumed
                    // from; a cut connection leaves them for the next try.
                    let corrupt = matches!(
                        e,
                        StoreError::DigestMismatch(_) | StoreError::InvalidArgument(_)
                    );
                    if corrupt && !net_failed() {
                        let _ = fs::remove_file(&ingest2);
                    }
                    return Err(e);
                }
            };
            let rec = inner.place_layer(u);
            drop(work);
            rec
        });
        let ((), res) = tokio::join!(pump, unpack);
        match res {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(StoreError::Corrupt(format!("unpack task failed: {e}"))),
        }
        tracing::debug!(layer = %self.id, bytes = total, elapsed_ms = started.elapsed().as_millis() as u64, "layer pulled");
        self.rep.layer(&self.id, "Verifying Checksum");
        self.rep.layer(&self.id, "Download complete");
        self.rep.progress(&self.id, "Extracting", total, total);
        self.rep.layer(&self.id, "Pull complete");
        Ok(())
    }
}

/// `POST /auth`: checks the credentials against the registry.
pub(crate) async fn login(store: &ImageStore, auth: RegistryAuth) -> ApiResult<AuthResponse> {
    let server = auth.serveraddress.clone().unwrap_or_default();
    let domain = registry_domain(&server);
    let creds = credentials(Some(&auth));
    if creds == Credentials::Anonymous {
        return Err(ApiError::InvalidArgument(
            "username and password (or an identity token) are required to log in".into(),
        ));
    }
    match store.inner.registry.login(&domain, &creds).await {
        Ok(token) => Ok(AuthResponse {
            status: "Login Succeeded".to_string(),
            identity_token: token.filter(|t| !t.is_empty()),
        }),
        Err(RegError::Unauthorized(m)) | Err(RegError::Denied(m)) => Err(ApiError::Unauthorized(m)),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// The registry a `serveraddress` names: `https://index.docker.io/v1/`
/// and empty are Docker Hub; a URL's scheme and path are dropped.
pub(crate) fn registry_domain(server: &str) -> String {
    let s = server.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or_default();
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(Platform::parse("windows/amd64").is_err());
        assert!(Platform::parse("linux//").is_err());
        assert_eq!(Platform::parse("linux/x86_64").unwrap().arch, "amd64");
        let j = |a: &str, v: Option<&str>| PlatformJson {
            os: "linux".into(),
            architecture: a.into(),
            variant: v.map(String::from),
        };
        assert!(p.matches(&j("arm64", None)));
        assert!(p.matches(&j("arm64", Some("v8"))));
        assert!(!p.matches(&j("arm64", Some("v9"))));
        assert!(!p.matches(&j("amd64", None)));
    }

    #[test]
    fn creds_from_auth() {
        let a = RegistryAuth {
            username: Some("u".into()),
            password: Some("p".into()),
            ..Default::default()
        };
        assert_eq!(
            credentials(Some(&a)),
            Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        let b = RegistryAuth {
            auth: Some("dTpw".into()), // u:p
            ..Default::default()
        };
        assert_eq!(credentials(Some(&b)), credentials(Some(&a)));
        assert_eq!(credentials(None), Credentials::Anonymous);
    }

    #[test]
    fn domains() {
        assert_eq!(registry_domain("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_domain(""), "docker.io");
        assert_eq!(registry_domain("localhost:5000"), "localhost:5000");
        assert_eq!(
            registry_domain("http://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
    }
}
