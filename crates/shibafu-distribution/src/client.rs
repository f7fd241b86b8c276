//! The distribution protocol over reqwest: endpoint choice and mirror
//! fallback, the 401 → challenge → token → retry dance, and the manifest,
//! blob and upload calls the image store makes.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Seek as _, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use parking_lot::{Mutex, RwLock};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;

use crate::auth::{parse_challenges, Challenge, Token, TokenResponse};
use crate::endpoint::{self, Endpoint};
use crate::wire::{
    body_media_type, dial_addr, digest_of, error_from, go_method, is_digest, is_generic_type,
    parse_errors, read_reason, sha256_digest, unreachable, validate_digest, validate_reference,
    verify_digest,
};
use crate::{BlobReader, ClientConfig, Credentials, Error, Manifest, Progress, RepoName};

/// Blobs up to this size go up in one PUT; bigger ones in PATCH chunks of
/// this size (a failed chunk costs at most this much again).
pub const DEFAULT_CHUNK_SIZE: u64 = 32 << 20;

/// As dockerd's dialer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A stalled transfer fails after this long without progress (waiting for
/// response headers, reading a body, or the registry taking no more of an
/// upload); a slow but moving big layer never times out.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// dockerd refuses manifests above 4 MiB.
const MANIFEST_MAX: usize = 4 << 20;
/// Ceiling for [`Client::get_blob_bytes`] (image configs), so a hostile
/// registry cannot make the daemon buffer a layer in memory.
const SMALL_BLOB_MAX: usize = 64 << 20;
/// A mirror that could not be reached is skipped for this long.
const MIRROR_DOWN_FOR: Duration = Duration::from_secs(30);
/// Failed chunks retried (each time resuming from the registry's `Range`).
const CHUNK_RETRIES: u32 = 4;
/// docker's OAuth client id (token servers may key refresh tokens on it).
const CLIENT_ID: &str = "docker";
/// Extra wait for the answer to the closing PUT of a chunked upload.
const FINALIZE_GRACE: Duration = Duration::from_secs(240);
/// Token cache size above which expired entries are swept.
const TOKEN_CACHE_PRUNE: usize = 256;
/// Read size of uploaded files.
const UPLOAD_READ: usize = 256 << 10;

/// The 4 manifest types, then anything (a registry that only knows
/// generic types still answers).
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, */*;q=0.1";

/// The client: a connection pool and a token cache, cheap to clone and
/// shared by every pull and push of the daemon.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: RwLock<Arc<ClientConfig>>,
    /// HTTPS with certificate verification (and plain HTTP).
    verify: reqwest::Client,
    /// Insecure registries: no certificate verification.
    noverify: reqwest::Client,
    /// Pinged endpoints by configured base URL; the async mutex makes
    /// concurrent first requests share one ping.
    remotes: Mutex<HashMap<String, RemoteSlot>>,
    /// Bearer tokens by (endpoint, realm, service, scopes, credentials).
    tokens: Mutex<HashMap<String, TokenSlot>>,
    /// Mirrors that failed to connect, and when.
    down: Mutex<HashMap<String, Instant>>,
    chunk_size: AtomicU64,
    /// [`DEFAULT_IDLE_TIMEOUT`] unless set, in milliseconds.
    idle_ms: AtomicU64,
    /// Where docker.io lives.
    hub: RwLock<String>,
}

/// One endpoint's ping result, filled once by whoever gets there first.
type RemoteSlot = Arc<tokio::sync::Mutex<Option<Arc<Remote>>>>;
/// One token cache entry, fetched once by whoever gets there first.
type TokenSlot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// An endpoint after its `/v2/` ping: the scheme that worked and the
/// challenges it sent.
struct Remote {
    /// The configured base (key of `Inner::remotes`).
    key: String,
    /// The base actually spoken to (`http://` after an HTTPS fallback).
    base: String,
    verify: bool,
    challenges: RwLock<Vec<Challenge>>,
}

/// What one request needs for auth.
struct Ctx<'a> {
    remote: Arc<Remote>,
    scopes: Vec<String>,
    creds: &'a Credentials,
}

type Build<'b> =
    dyn Fn(RequestBuilder, &Activity) -> Result<RequestBuilder, Error> + Send + Sync + 'b;

/// When a request last made progress (sent body bytes): the idle watchdog
/// of [`Client::send`] measures from it.
type Activity = Arc<Mutex<Instant>>;

/// A request without a body to stream.
fn plain(rb: RequestBuilder, _: &Activity) -> Result<RequestBuilder, Error> {
    Ok(rb)
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client, Error> {
        // reqwest is built without a default provider: use ring (no C
        // toolchain needed; rustls deprecates it only for its lack of
        // post-quantum key exchange). Fails harmlessly when a provider is
        // installed already.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Client {
            inner: Arc::new(Inner {
                cfg: RwLock::new(Arc::new(cfg)),
                verify: http_client(true)?,
                noverify: http_client(false)?,
                remotes: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                down: Mutex::new(HashMap::new()),
                chunk_size: AtomicU64::new(DEFAULT_CHUNK_SIZE),
                idle_ms: AtomicU64::new(DEFAULT_IDLE_TIMEOUT.as_millis() as u64),
                hub: RwLock::new(endpoint::DOCKER_HUB.to_string()),
            }),
        })
    }

    /// Replaces mirrors and insecure registries (live config reload).
    pub fn reconfigure(&self, cfg: ClientConfig) {
        *self.inner.cfg.write() = Arc::new(cfg);
        // Schemes and TLS modes may have changed: ping again.
        self.inner.remotes.lock().clear();
        self.inner.down.lock().clear();
    }

    /// Sets the upload chunk size (bytes; 0 restores the default).
    pub fn set_chunk_size(&self, bytes: u64) {
        let v = if bytes == 0 {
            DEFAULT_CHUNK_SIZE
        } else {
            bytes
        };
        self.inner.chunk_size.store(v, Ordering::Relaxed);
    }

    /// Sets how long a transfer may stall before it fails (zero restores
    /// [`DEFAULT_IDLE_TIMEOUT`]).
    pub fn set_idle_timeout(&self, idle: Duration) {
        let idle = if idle.is_zero() {
            DEFAULT_IDLE_TIMEOUT
        } else {
            idle
        };
        self.inner
            .idle_ms
            .store(idle.as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(self.inner.idle_ms.load(Ordering::Relaxed))
    }

    /// Serves `docker.io` from `base` (`http://127.0.0.1:5000`) instead of
    /// Docker Hub: for tests and air-gapped setups that stand a local
    /// registry in for the Hub while keeping names like `busybox`.
    pub fn set_docker_hub(&self, base: &str) {
        *self.inner.hub.write() = base.trim_end_matches('/').to_string();
        self.inner.remotes.lock().clear();
    }

    fn hub(&self) -> String {
        self.inner.hub.read().clone()
    }

    fn cfg(&self) -> Arc<ClientConfig> {
        self.inner.cfg.read().clone()
    }

    fn http(&self, verify: bool) -> &reqwest::Client {
        if verify {
            &self.inner.verify
        } else {
            &self.inner.noverify
        }
    }

    fn user_agent(&self) -> String {
        let ua = &self.inner.cfg.read().user_agent;
        if ua.is_empty() {
            concat!("shibafu/", env!("CARGO_PKG_VERSION")).to_string()
        } else {
            ua.clone()
        }
    }

    /// `docker login`: checks `creds` against `GET /v2/` of `domain`
    /// (`docker.io` → Docker Hub), doing the token dance when challenged.
    /// Returns the identity (refresh) token when the token server gave one.
    pub async fn login(&self, domain: &str, creds: &Credentials) -> Result<Option<String>, Error> {
        let domain = login_domain(domain);
        let ep = endpoint::push_endpoint(&self.cfg(), &self.hub(), &domain);
        // Always a fresh ping: login is where users check a registry's setup.
        self.forget(&ep.base);
        let remote = self.remote(&ep).await?;
        let url = format!("{}/v2/", remote.base);
        let challenges = remote.challenges.read().clone();
        let mut refresh = None;
        let auth = if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            match creds {
                Credentials::Bearer(t) => Some(format!("Bearer {t}")),
                _ => {
                    let realm = b.param("realm").unwrap_or_default();
                    let service = b.param("service").unwrap_or_default();
                    let token = self.fetch_token(realm, service, &[], creds, true).await?;
                    refresh = token.refresh.clone();
                    Some(format!("Bearer {}", token.value))
                }
            }
        } else if challenges.iter().any(|c| c.scheme == "basic") {
            basic_header(creds)
        } else {
            None
        };
        let mut rb = self
            .http(remote.verify)
            .get(&url)
            .header(header::USER_AGENT, self.user_agent())
            .timeout(self.idle());
        if let Some(a) = auth {
            rb = rb.header(header::AUTHORIZATION, a);
        }
        let resp = rb.send().await.map_err(|e| {
            self.forget(&remote.key);
            unreachable(&Method::GET, &url, &e)
        })?;
        let status = resp.status();
        drain(resp).await;
        if status.is_success() {
            return Ok(refresh);
        }
        let msg = format!(
            "login attempt to {url} failed with status: {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        Err(match status {
            StatusCode::UNAUTHORIZED => Error::Unauthorized(msg),
            StatusCode::FORBIDDEN => Error::Denied(msg),
            _ => Error::Registry {
                status: status.as_u16(),
                message: msg,
            },
        })
    }

    /// `GET /v2/<path>/manifests/<reference>` (tag or `sha256:` digest)
    /// accepting Docker v2 schema 2 manifests and lists and OCI manifests
    /// and indexes. docker.io pulls go to the mirrors first.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        creds: &Credentials,
    ) -> Result<Manifest, Error> {
        validate_reference(reference)?;
        self.on_pull_endpoints(repo, |ep| self.get_manifest_at(ep, repo, reference, creds))
            .await
    }

    async fn get_manifest_at(
        &self,
        ep: Endpoint,
        repo: &RepoName,
        reference: &str,
        creds: &Credentials,
    ) -> Result<Manifest, Error> {
        let ctx = self.ctx(&ep, vec![scope(repo, "pull")], creds).await?;
        let url = format!("{}/v2/{}/manifests/{reference}", ctx.remote.base, repo.path);
        let resp = self
            .send(&ctx, Method::GET, &url, &|rb, _| {
                Ok(rb.header(header::ACCEPT, ACCEPT_MANIFESTS))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let header_digest = header_str(resp.headers(), "docker-content-digest");
        let content_type = header_str(resp.headers(), "content-type")
            .map(|ct| ct.split(';').next().unwrap_or("").trim().to_string());
        let bytes = read_limited(resp, MANIFEST_MAX, self.idle()).await?;
        if is_digest(reference) {
            verify_digest(reference, &bytes)?;
        }
        if let Some(d) = &header_digest {
            // Unknown algorithms in the header cannot be checked: ignored.
            if digest_of(d, &bytes).is_some() {
                verify_digest(d, &bytes)?;
            }
        }
        let media_type = match content_type {
            Some(ct) if !is_generic_type(&ct) => ct,
            _ => body_media_type(&bytes),
        };
        Ok(Manifest {
            digest: sha256_digest(&bytes),
            bytes,
            media_type,
        })
    }

    /// `GET /v2/<path>/tags/list`, every page (`Link: <...>; rel="next"`),
    /// for `pull --all-tags`. docker.io pulls ask the mirrors first.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        creds: &Credentials,
    ) -> Result<Vec<String>, Error> {
        self.on_pull_endpoints(repo, |ep| self.list_tags_at(ep, repo, creds))
            .await
    }

    async fn list_tags_at(
        &self,
        ep: Endpoint,
        repo: &RepoName,
        creds: &Credentials,
    ) -> Result<Vec<String>, Error> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let ctx = self.ctx(&ep, vec![scope(repo, "pull")], creds).await?;
        let mut url = format!("{}/v2/{}/tags/list", ctx.remote.base, repo.path);
        let mut out = Vec::new();
        // Bounded: a registry whose Link loops must not hold a pull forever.
        for _ in 0..1000 {
            let resp = self.send(&ctx, Method::GET, &url, &plain).await?;
            if !resp.status().is_success() {
                return Err(status_error(resp).await);
            }
            let next = header_str(resp.headers(), "link").and_then(|l| next_link(&l));
            let bytes = read_limited(resp, MANIFEST_MAX, self.idle()).await?;
            let page: Page = serde_json::from_slice(&bytes).map_err(|e| Error::Registry {
                status: 200,
                message: format!("invalid tag list from the registry: {e}"),
            })?;
            out.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) if n.starts_with('/') => url = format!("{}{n}", ctx.remote.base),
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    /// `GET /v2/<path>/blobs/<digest>` from `offset` (a `Range` request
    /// when offset > 0). Redirects are followed. The stream is not
    /// verified here: the caller hashes what it stores.
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &str,
        offset: u64,
        creds: &Credentials,
    ) -> Result<BlobReader, Error> {
        validate_digest(digest)?;
        self.on_pull_endpoints(repo, |ep| self.get_blob_at(ep, repo, digest, offset, creds))
            .await
    }

    async fn get_blob_at(
        &self,
        ep: Endpoint,
        repo: &RepoName,
        digest: &str,
        offset: u64,
        creds: &Credentials,
    ) -> Result<BlobReader, Error> {
        let ctx = self.ctx(&ep, vec![scope(repo, "pull")], creds).await?;
        let url = format!("{}/v2/{}/blobs/{digest}", ctx.remote.base, repo.path);
        let mut resp = self
            .send(&ctx, Method::GET, &url, &|rb, _| {
                Ok(if offset > 0 {
                    rb.header(header::RANGE, format!("bytes={offset}-"))
                } else {
                    rb
                })
            })
            .await?;
        if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
            // The offset is past what the registry has: start over.
            drain(resp).await;
            resp = self.send(&ctx, Method::GET, &url, &plain).await?;
        }
        let (start, total) = match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = header_str(resp.headers(), "content-range");
                match range.as_deref().and_then(parse_content_range) {
                    Some((start, total)) => (start, total),
                    None => (offset, None),
                }
            }
            s if s.is_success() => (0, resp.content_length()),
            _ => return Err(status_error(resp).await),
        };
        Ok(BlobReader {
            total,
            offset: start,
            stream: body_stream(resp, self.idle()),
        })
    }

    /// The whole (small) blob in memory, verified against `digest`
    /// (image configs).
    pub async fn get_blob_bytes(
        &self,
        repo: &RepoName,
        digest: &str,
        creds: &Credentials,
    ) -> Result<Bytes, Error> {
        validate_digest(digest)?;
        self.on_pull_endpoints(repo, |ep| async move {
            let reader = self.get_blob_at(ep, repo, digest, 0, creds).await?;
            if reader.total.is_some_and(|t| t > SMALL_BLOB_MAX as u64) {
                return Err(Error::Io(format!(
                    "blob {digest} too large to read into memory"
                )));
            }
            let mut buf = BytesMut::new();
            let mut stream = reader.stream;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if buf.len() + chunk.len() > SMALL_BLOB_MAX {
                    return Err(Error::Io(format!(
                        "blob {digest} too large to read into memory"
                    )));
                }
                buf.extend_from_slice(&chunk);
            }
            let bytes = buf.freeze();
            verify_digest(digest, &bytes)?;
            Ok(bytes)
        })
        .await
    }

    /// `HEAD /v2/<path>/blobs/<digest>`: its size when the registry has it.
    /// A push-side check ("Layer already exists"): asks the registry
    /// itself, never a mirror.
    pub async fn blob_exists(
        &self,
        repo: &RepoName,
        digest: &str,
        creds: &Credentials,
    ) -> Result<Option<u64>, Error> {
        validate_digest(digest)?;
        let ctx = self.push_ctx(repo, None, creds).await?;
        let url = format!("{}/v2/{}/blobs/{digest}", ctx.remote.base, repo.path);
        let resp = self.send(&ctx, Method::HEAD, &url, &plain).await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(
                header_str(resp.headers(), "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(resp).await),
        }
    }

    /// Cross-repository mount (`POST .../blobs/uploads/?mount=&from=`).
    /// True when the registry mounted it; false when it did not (an upload
    /// session it opened instead is cancelled).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &str,
        from: &RepoName,
        creds: &Credentials,
    ) -> Result<bool, Error> {
        validate_digest(digest)?;
        if from.domain != repo.domain {
            return Ok(false);
        }
        let ctx = self.push_ctx(repo, Some(from), creds).await?;
        let mut url = url::Url::parse(&format!(
            "{}/v2/{}/blobs/uploads/",
            ctx.remote.base, repo.path
        ))
        .map_err(|e| Error::InvalidName(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("mount", digest)
            .append_pair("from", &from.path);
        let url = url.to_string();
        let resp = self
            .send(&ctx, Method::POST, &url, &|rb, _| {
                Ok(rb.header(header::CONTENT_LENGTH, "0"))
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => {
                drain(resp).await;
                Ok(true)
            }
            StatusCode::ACCEPTED => {
                // Not mounted; an upload session was opened for us instead.
                if let Ok(loc) = location(&resp, &url) {
                    drain(resp).await;
                    self.cancel_upload(&ctx, &loc).await;
                }
                Ok(false)
            }
            _ => Err(status_error(resp).await),
        }
    }

    /// Uploads the file at `path` (`size` bytes, hashing to `digest`):
    /// monolithic (POST + PUT) up to the chunk size, chunked (PATCH with
    /// Content-Range per chunk, resuming from the registry's `Range` after a
    /// failed chunk) above it. `progress` is called as bytes go out (with
    /// the position in the blob: it goes back when a chunk is resent).
    pub async fn push_blob_file(
        &self,
        repo: &RepoName,
        digest: &str,
        path: &Path,
        size: u64,
        creds: &Credentials,
        progress: Progress,
    ) -> Result<(), Error> {
        validate_digest(digest)?;
        let actual = std::fs::metadata(path)
            .map_err(|e| Error::Io(format!("open {}: {e}", path.display())))?
            .len();
        if actual != size {
            return Err(Error::Io(format!(
                "{}: size is {actual}, expected {size}",
                path.display()
            )));
        }
        let ctx = self.push_ctx(repo, None, creds).await?;
        let start = format!("{}/v2/{}/blobs/uploads/", ctx.remote.base, repo.path);
        let resp = self
            .send(&ctx, Method::POST, &start, &|rb, _| {
                Ok(rb.header(header::CONTENT_LENGTH, "0"))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(resp).await);
        }
        let loc = location(&resp, &start)?;
        // OCI 1.1: a registry may need chunks of at least this size.
        let min_chunk = header_str(resp.headers(), "oci-chunk-min-length")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        drain(resp).await;
        let chunk = self.inner.chunk_size.load(Ordering::Relaxed).max(min_chunk);
        let res = if size <= chunk {
            self.put_whole(&ctx, &loc, digest, path, size, &progress)
                .await
        } else {
            self.put_chunked(&ctx, loc.clone(), digest, path, size, chunk, &progress)
                .await
        };
        if res.is_err() {
            self.cancel_upload(&ctx, &loc).await;
        }
        res
    }

    /// The monolithic upload: one PUT carrying the whole file.
    async fn put_whole(
        &self,
        ctx: &Ctx<'_>,
        loc: &str,
        digest: &str,
        path: &Path,
        size: u64,
        progress: &Progress,
    ) -> Result<(), Error> {
        let url = with_digest(loc, digest)?;
        let resp = self
            .send(ctx, Method::PUT, &url, &|rb, act| {
                Ok(rb
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_LENGTH, size.to_string())
                    .body(file_body(path, 0, size, progress.clone(), act)?))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        drain(resp).await;
        Ok(())
    }

    /// The chunked upload: PATCH per chunk, following the `Location` each
    /// answer gives; after a failure asks the registry how much it has and
    /// goes on from there. Ends with the closing `PUT ?digest=`.
    #[allow(clippy::too_many_arguments)]
    async fn put_chunked(
        &self,
        ctx: &Ctx<'_>,
        mut loc: String,
        digest: &str,
        path: &Path,
        size: u64,
        chunk: u64,
        progress: &Progress,
    ) -> Result<(), Error> {
        let mut offset = 0u64;
        let mut failures = 0u32;
        while offset < size {
            let len = chunk.min(size - offset);
            let end = offset + len - 1;
            let sent = self
                .send(ctx, Method::PATCH, &loc, &|rb, act| {
                    Ok(rb
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(header::CONTENT_LENGTH, len.to_string())
                        .header(header::CONTENT_RANGE, format!("{offset}-{end}"))
                        .body(file_body(path, offset, len, progress.clone(), act)?))
                })
                .await;
            let failure = match sent {
                Ok(resp) if resp.status().is_success() => {
                    if let Ok(next) = location(&resp, &loc) {
                        loc = next;
                    }
                    drain(resp).await;
                    offset += len;
                    failures = 0;
                    continue;
                }
                Ok(resp) if retryable(resp.status()) => status_error(resp).await,
                Ok(resp) => return Err(status_error(resp).await),
                Err(e @ (Error::Unreachable { .. } | Error::Io(_))) => e,
                Err(e) => return Err(e),
            };
            failures += 1;
            if failures > CHUNK_RETRIES {
                return Err(failure);
            }
            tracing::debug!(%failure, offset, "chunk upload failed, resuming");
            tokio::time::sleep(Duration::from_millis(200 << failures)).await;
            match self.upload_status(ctx, &loc).await {
                Ok((next_loc, have)) => {
                    loc = next_loc;
                    offset = have.min(size);
                }
                Err(e @ (Error::Unreachable { .. } | Error::Io(_))) => {
                    if failures == CHUNK_RETRIES {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let url = with_digest(&loc, digest)?;
        let resp = self
            .send(ctx, Method::PUT, &url, &|rb, act| {
                // The registry hashes (or copies) the whole blob before it
                // answers: give it more than the idle timeout.
                *act.lock() = Instant::now() + FINALIZE_GRACE;
                Ok(rb.header(header::CONTENT_LENGTH, "0"))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        drain(resp).await;
        Ok(())
    }

    /// `GET <upload URL>`: the upload's current location and how many bytes
    /// the registry holds (`Range: 0-<last>`).
    async fn upload_status(&self, ctx: &Ctx<'_>, loc: &str) -> Result<(String, u64), Error> {
        let resp = self.send(ctx, Method::GET, loc, &plain).await?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let have = header_str(resp.headers(), "range")
            .and_then(|r| {
                let r = r.trim_start_matches("bytes=");
                let (_, last) = r.split_once('-')?;
                last.trim().parse::<u64>().ok()
            })
            // distribution answers `0-0` for an empty upload as well as for
            // one byte: counting it as empty re-sends one byte at worst.
            .map(|last| if last == 0 { 0 } else { last + 1 })
            .unwrap_or(0);
        let next = location(&resp, loc).unwrap_or_else(|_| loc.to_string());
        drain(resp).await;
        Ok((next, have))
    }

    /// Best-effort `DELETE` of an upload session we will not finish.
    async fn cancel_upload(&self, ctx: &Ctx<'_>, loc: &str) {
        match self.send(ctx, Method::DELETE, loc, &plain).await {
            Ok(resp) => drain(resp).await,
            Err(e) => tracing::debug!(%e, loc, "cancelling upload"),
        }
    }

    /// `PUT /v2/<path>/manifests/<reference>`; returns the digest the
    /// registry reports (or computed).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
        creds: &Credentials,
    ) -> Result<String, Error> {
        validate_reference(reference)?;
        if is_digest(reference) {
            verify_digest(reference, &bytes)?;
        }
        let ctx = self.push_ctx(repo, None, creds).await?;
        let url = format!("{}/v2/{}/manifests/{reference}", ctx.remote.base, repo.path);
        let resp = self
            .send(&ctx, Method::PUT, &url, &|rb, _| {
                Ok(rb
                    .header(header::CONTENT_TYPE, media_type)
                    .body(bytes.clone()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let digest = header_str(resp.headers(), "docker-content-digest")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| sha256_digest(&bytes));
        drain(resp).await;
        Ok(digest)
    }

    // ---- endpoints, pings, auth ----

    /// Runs `op` on each pull endpoint of `repo` in turn (mirrors first for
    /// docker.io): a mirror's failure of any kind moves on to the next, as
    /// dockerd; the registry's own answer is final.
    async fn on_pull_endpoints<'a, T, F, Fut>(&'a self, repo: &RepoName, op: F) -> Result<T, Error>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: Future<Output = Result<T, Error>> + 'a,
    {
        let eps = endpoint::pull_endpoints(&self.cfg(), &self.hub(), &repo.domain);
        let last = eps.len() - 1;
        for (i, ep) in eps.into_iter().enumerate() {
            if i < last && ep.mirror && self.is_down(&ep.base) {
                continue;
            }
            match op(ep.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if i < last && ep.mirror => {
                    tracing::debug!(mirror = %ep.base, %e, "mirror failed, trying the next endpoint");
                    if matches!(e, Error::Unreachable { .. }) {
                        self.inner
                            .down
                            .lock()
                            .insert(ep.base.clone(), Instant::now());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last endpoint returns")
    }

    fn is_down(&self, base: &str) -> bool {
        let mut down = self.inner.down.lock();
        match down.get(base) {
            Some(t) if t.elapsed() < MIRROR_DOWN_FOR => true,
            Some(_) => {
                down.remove(base);
                false
            }
            None => false,
        }
    }

    async fn ctx<'c>(
        &self,
        ep: &Endpoint,
        scopes: Vec<String>,
        creds: &'c Credentials,
    ) -> Result<Ctx<'c>, Error> {
        Ok(Ctx {
            remote: self.remote(ep).await?,
            scopes,
            creds,
        })
    }

    /// Push-side context: the registry itself with `pull,push` on `repo`
    /// (and `pull` on a mount source).
    async fn push_ctx<'c>(
        &self,
        repo: &RepoName,
        from: Option<&RepoName>,
        creds: &'c Credentials,
    ) -> Result<Ctx<'c>, Error> {
        let ep = endpoint::push_endpoint(&self.cfg(), &self.hub(), &repo.domain);
        let mut scopes = vec![scope(repo, "pull,push")];
        if let Some(from) = from {
            scopes.push(scope(from, "pull"));
        }
        self.ctx(&ep, scopes, creds).await
    }

    /// The pinged endpoint, pinging it (once, shared) if needed.
    async fn remote(&self, ep: &Endpoint) -> Result<Arc<Remote>, Error> {
        let slot = self
            .inner
            .remotes
            .lock()
            .entry(ep.base.clone())
            .or_default()
            .clone();
        let mut guard = slot.lock().await;
        if let Some(r) = &*guard {
            return Ok(r.clone());
        }
        let r = Arc::new(self.ping(ep).await?);
        *guard = Some(r.clone());
        Ok(r)
    }

    /// Drops what is known of an endpoint (after a connection failure).
    fn forget(&self, key: &str) {
        self.inner.remotes.lock().remove(key);
    }

    /// `GET /v2/`: learns the auth challenges. Insecure registries: HTTPS
    /// without verification, then plain HTTP; loopback: plain HTTP, then
    /// HTTPS without verification when nothing or a TLS server answers
    /// (Go's TLS server says 400 to plain HTTP).
    async fn ping(&self, ep: &Endpoint) -> Result<Remote, Error> {
        let remote = |base: String, verify: bool, challenges| Remote {
            key: ep.base.clone(),
            base,
            verify,
            challenges: RwLock::new(challenges),
        };
        let first = self.ping_at(&ep.base, ep.verify).await;
        match first {
            Ok((status, ch)) => {
                if ep.https_fallback && status == StatusCode::BAD_REQUEST {
                    let base = ep.base.replacen("http://", "https://", 1);
                    if let Ok((_, ch)) = self.ping_at(&base, false).await {
                        return Ok(remote(base, false, ch));
                    }
                }
                Ok(remote(ep.base.clone(), ep.verify, ch))
            }
            Err(e) if ep.http_fallback || ep.https_fallback => {
                let base = if ep.http_fallback {
                    ep.base.replacen("https://", "http://", 1)
                } else {
                    ep.base.replacen("http://", "https://", 1)
                };
                match self.ping_at(&base, false).await {
                    Ok((_, ch)) => Ok(remote(base, false, ch)),
                    Err(_) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn ping_at(
        &self,
        base: &str,
        verify: bool,
    ) -> Result<(StatusCode, Vec<Challenge>), Error> {
        let url = format!("{base}/v2/");
        let resp = self
            .http(verify)
            .get(&url)
            .header(header::USER_AGENT, self.user_agent())
            .timeout(self.idle())
            .send()
            .await
            .map_err(|e| unreachable(&Method::GET, &url, &e))?;
        let status = resp.status();
        let ch = challenges_of(resp.headers());
        drain(resp).await;
        Ok((status, ch))
    }

    /// Sends a request with the endpoint's auth; on 401 re-reads the
    /// challenge, gets a fresh token (or credentials) and retries once.
    /// `build` adds headers and body (called again for the retry).
    async fn send(
        &self,
        ctx: &Ctx<'_>,
        method: Method,
        url: &str,
        build: &Build<'_>,
    ) -> Result<Response, Error> {
        // Credentials only go to the registry's own origin (an upload
        // Location may point at storage elsewhere).
        if !same_origin(url, &ctx.remote.base) {
            let resp = self.send_once(ctx, &method, url, None, build).await?;
            return Ok(resp);
        }
        let mut scopes = ctx.scopes.clone();
        let mut auth = self
            .authorization(&ctx.remote, &scopes, ctx.creds, None)
            .await?;
        let mut retried = false;
        loop {
            let resp = self
                .send_once(ctx, &method, url, auth.as_deref(), build)
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED || retried {
                return Ok(resp);
            }
            retried = true;
            let ch = challenges_of(resp.headers());
            if ch.is_empty() {
                return Ok(resp);
            }
            // A registry may ask for more than we asked for (its scope).
            if let Some(s) = ch
                .iter()
                .find(|c| c.scheme == "bearer")
                .and_then(|c| c.param("scope"))
            {
                for s in s.split(' ').filter(|s| !s.is_empty()) {
                    if !scopes.iter().any(|x| x == s) {
                        scopes.push(s.to_string());
                    }
                }
            }
            *ctx.remote.challenges.write() = ch;
            let stale = auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
            let fresh = self
                .authorization(&ctx.remote, &scopes, ctx.creds, stale)
                .await?;
            if fresh.is_none() || fresh == auth {
                return Ok(resp);
            }
            drain(resp).await;
            auth = fresh;
        }
    }

    /// One attempt: the request with `auth`, failing when it makes no
    /// progress for the idle timeout.
    async fn send_once(
        &self,
        ctx: &Ctx<'_>,
        method: &Method,
        url: &str,
        auth: Option<&str>,
        build: &Build<'_>,
    ) -> Result<Response, Error> {
        let mut rb = self
            .http(ctx.remote.verify)
            .request(method.clone(), url)
            .header(header::USER_AGENT, self.user_agent());
        if let Some(a) = auth {
            rb = rb.header(header::AUTHORIZATION, a);
        }
        let activity: Activity = Arc::new(Mutex::new(Instant::now()));
        let pending = build(rb, &activity)?.send();
        tokio::select! {
            r = pending => r.map_err(|e| {
                if e.is_connect() {
                    self.forget(&ctx.remote.key);
                }
                unreachable(method, url, &e)
            }),
            () = idle_watch(&activity, self.idle()) => Err(Error::Unreachable {
                method: go_method(method),
                url: url.to_string(),
                reason: "net/http: timeout awaiting response headers".to_string(),
            }),
        }
    }

    /// The `Authorization` value for a request under the endpoint's
    /// current challenges: a cached or new bearer token, basic
    /// credentials, or nothing. `stale` is a token the registry refused.
    async fn authorization(
        &self,
        remote: &Remote,
        scopes: &[String],
        creds: &Credentials,
        stale: Option<&str>,
    ) -> Result<Option<String>, Error> {
        if let Credentials::Bearer(t) = creds {
            return Ok(Some(format!("Bearer {t}")));
        }
        let challenges = remote.challenges.read().clone();
        if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            let Some(realm) = b.param("realm") else {
                return Ok(None);
            };
            let service = b.param("service").unwrap_or_default();
            let mut sorted = scopes.to_vec();
            sorted.sort();
            let key = format!(
                "{}\n{realm}\n{service}\n{}\n{}",
                remote.key,
                sorted.join(" "),
                creds_fingerprint(creds)
            );
            let slot = {
                let mut tokens = self.inner.tokens.lock();
                if tokens.len() >= TOKEN_CACHE_PRUNE && !tokens.contains_key(&key) {
                    // Drop expired tokens (busy entries are being refreshed).
                    let now = Instant::now();
                    tokens.retain(|_, slot| match slot.try_lock() {
                        Ok(t) => t.as_ref().is_some_and(|t| t.expires > now),
                        Err(_) => true,
                    });
                }
                tokens.entry(key).or_default().clone()
            };
            let mut cached = slot.lock().await;
            if let Some(t) = &*cached {
                if t.expires > Instant::now() && Some(t.value.as_str()) != stale {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
            }
            *cached = None;
            let token = self
                .fetch_token(realm, service, scopes, creds, false)
                .await?;
            let value = format!("Bearer {}", token.value);
            *cached = Some(token);
            return Ok(Some(value));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return Ok(basic_header(creds));
        }
        Ok(None)
    }

    /// Asks a token server for a bearer token: `GET realm?service=&scope=`
    /// with basic credentials (or none), or the OAuth2 refresh-token `POST`
    /// for an identity token. `offline` asks for a refresh token (login).
    async fn fetch_token(
        &self,
        realm: &str,
        service: &str,
        scopes: &[String],
        creds: &Credentials,
        offline: bool,
    ) -> Result<Token, Error> {
        let mut url = url::Url::parse(realm)
            .map_err(|_| Error::Unauthorized(format!("invalid token realm {realm:?}")))?;
        let http = self.http(endpoint::verify_url(&self.cfg(), &url));
        let (method, rb) = match creds {
            Credentials::IdentityToken { token, .. } => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", token)
                    .append_pair("client_id", CLIENT_ID);
                if !service.is_empty() {
                    form.append_pair("service", service);
                }
                if !scopes.is_empty() {
                    form.append_pair("scope", &scopes.join(" "));
                }
                if offline {
                    form.append_pair("access_type", "offline");
                }
                let rb = http
                    .post(url.clone())
                    .header(
                        header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded; charset=utf-8",
                    )
                    .body(form.finish());
                (Method::POST, rb)
            }
            _ => {
                {
                    let mut q = url.query_pairs_mut();
                    if !service.is_empty() {
                        q.append_pair("service", service);
                    }
                    for s in scopes {
                        q.append_pair("scope", s);
                    }
                    if let Credentials::Basic { username, .. } = creds {
                        q.append_pair("account", username);
                    }
                    if offline {
                        q.append_pair("offline_token", "true")
                            .append_pair("client_id", CLIENT_ID);
                    }
                }
                let mut rb = http.get(url.clone());
                if let Credentials::Basic { username, password } = creds {
                    rb = rb.basic_auth(username, Some(password));
                }
                (Method::GET, rb)
            }
        };
        let resp = rb
            .header(header::USER_AGENT, self.user_agent())
            .timeout(self.idle())
            .send()
            .await
            .map_err(|e| unreachable(&method, url.as_str(), &e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_limited(resp, 64 << 10, self.idle())
                .await
                .unwrap_or_default();
            return Err(match parse_errors(&body) {
                Some((_, message)) => match status {
                    StatusCode::FORBIDDEN => Error::Denied(message),
                    StatusCode::UNAUTHORIZED => Error::Unauthorized(message),
                    _ => Error::Registry {
                        status: status.as_u16(),
                        message,
                    },
                },
                None => {
                    let mut shown = url.clone();
                    shown.set_query(None);
                    let message = format!(
                        "token auth attempt for registry: {shown} request failed with status: {} {}",
                        status.as_u16(),
                        status.canonical_reason().unwrap_or("")
                    );
                    match status {
                        StatusCode::FORBIDDEN => Error::Denied(message),
                        StatusCode::UNAUTHORIZED => Error::Unauthorized(message),
                        _ => Error::Registry {
                            status: status.as_u16(),
                            message,
                        },
                    }
                }
            });
        }
        let body = read_limited(resp, 1 << 20, self.idle()).await?;
        serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| {
                Error::Unauthorized(
                    "authorization server did not include a token in the response".to_string(),
                )
            })
    }
}

// ---- helpers ----

fn http_client(verify: bool) -> Result<reqwest::Client, Error> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(32)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .danger_accept_invalid_certs(!verify)
        .redirect(reqwest::redirect::Policy::limited(10))
        .no_proxy();
    // Proxies from the environment as Go reads them, never for loopback.
    let mut no_proxy = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    no_proxy.push_str(",localhost,127.0.0.0/8,::1");
    let env = |k: &str| {
        std::env::var(k)
            .or_else(|_| std::env::var(k.to_lowercase()))
            .ok()
            .filter(|v| !v.is_empty())
    };
    let proxy_err = |e: reqwest::Error| Error::Io(format!("invalid proxy: {e}"));
    if let Some(p) = env("HTTPS_PROXY") {
        b = b.proxy(
            reqwest::Proxy::https(&p)
                .map_err(proxy_err)?
                .no_proxy(reqwest::NoProxy::from_string(&no_proxy)),
        );
    }
    if let Some(p) = env("HTTP_PROXY") {
        b = b.proxy(
            reqwest::Proxy::http(&p)
                .map_err(proxy_err)?
                .no_proxy(reqwest::NoProxy::from_string(&no_proxy)),
        );
    }
    b.build()
        .map_err(|e| Error::Io(format!("building the HTTP client: {e}")))
}

/// Whether `url` is on the origin (scheme, host, port) of `base`.
fn same_origin(url: &str, base: &str) -> bool {
    match (url::Url::parse(url), url::Url::parse(base)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// `docker login`'s server argument to a registry domain:
/// `https://index.docker.io/v1/` → `docker.io`.
fn login_domain(server: &str) -> String {
    let s = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or(s);
    match s {
        "" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            crate::name::DEFAULT_DOMAIN.to_string()
        }
        s => s.to_string(),
    }
}

fn scope(repo: &RepoName, actions: &str) -> String {
    format!("repository:{}:{actions}", repo.path)
}

fn basic_header(creds: &Credentials) -> Option<String> {
    use base64::Engine as _;
    let (u, p) = match creds {
        Credentials::Basic { username, password } => (username, password),
        Credentials::IdentityToken { username, token } => (username, token),
        Credentials::Bearer(t) => return Some(format!("Bearer {t}")),
        Credentials::Anonymous => return None,
    };
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
    Some(format!("Basic {enc}"))
}

/// Token cache key part for credentials, without keeping secrets in keys.
fn creds_fingerprint(creds: &Credentials) -> String {
    hex::encode(sha2::Sha256::digest(format!("{creds:?}")))
}

fn challenges_of(h: &HeaderMap) -> Vec<Challenge> {
    parse_challenges(
        h.get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// The `Location` of an answer, resolved against the request URL
/// (registries send relative or absolute ones).
fn location(resp: &Response, request_url: &str) -> Result<String, Error> {
    let loc = header_str(resp.headers(), "location").ok_or_else(|| Error::Registry {
        status: resp.status().as_u16(),
        message: "registry sent no upload location".to_string(),
    })?;
    let base = url::Url::parse(request_url).map_err(|e| Error::Io(e.to_string()))?;
    base.join(&loc)
        .map(|u| u.to_string())
        .map_err(|e| Error::Registry {
            status: resp.status().as_u16(),
            message: format!("invalid upload location {loc:?}: {e}"),
        })
}

fn with_digest(loc: &str, digest: &str) -> Result<String, Error> {
    let mut u = url::Url::parse(loc).map_err(|e| Error::Io(e.to_string()))?;
    u.query_pairs_mut().append_pair("digest", digest);
    Ok(u.to_string())
}

/// Statuses after which a chunk is worth resending.
fn retryable(s: StatusCode) -> bool {
    s.is_server_error()
        || s == StatusCode::RANGE_NOT_SATISFIABLE
        || s == StatusCode::REQUEST_TIMEOUT
        || s == StatusCode::TOO_MANY_REQUESTS
}

/// `bytes <start>-<end>/<total|*>` → (start, total).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let v = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = v.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// Streams `len` bytes of `path` from `start` as a request body, reporting
/// `start + bytes read` to `progress` and marking `activity` as the
/// connection takes them.
fn file_body(
    path: &Path,
    start: u64,
    len: u64,
    progress: Progress,
    activity: &Activity,
) -> Result<reqwest::Body, Error> {
    let shown = path.display().to_string();
    let mut f = std::fs::File::open(path).map_err(|e| Error::Io(format!("open {shown}: {e}")))?;
    f.seek(SeekFrom::Start(start))
        .map_err(|e| Error::Io(format!("seek {shown}: {e}")))?;
    let reader = tokio::fs::File::from_std(f).take(len);
    let mut sent = start;
    let activity = activity.clone();
    let stream =
        tokio_util::io::ReaderStream::with_capacity(reader, UPLOAD_READ).map_ok(move |b| {
            sent += b.len() as u64;
            *activity.lock() = Instant::now();
            progress(sent);
            b
        });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// Resolves once `activity` is older than `idle`.
async fn idle_watch(activity: &Activity, idle: Duration) {
    loop {
        let deadline = *activity.lock() + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// A response body as a stream of our errors, failing when no bytes
/// arrive for `idle`.
fn body_stream(resp: Response, idle: Duration) -> crate::BoxStream<Result<Bytes, Error>> {
    let url = resp.url().to_string();
    let inner = resp.bytes_stream().boxed();
    Box::pin(futures::stream::unfold(
        Some((inner, url)),
        move |state| async move {
            let (mut inner, url) = state?;
            match tokio::time::timeout(idle, inner.next()).await {
                Ok(Some(Ok(b))) => Some((Ok(b), Some((inner, url)))),
                Ok(Some(Err(e))) => Some((Err(Error::Io(read_reason(&url, &e))), None)),
                Ok(None) => None,
                Err(_) => {
                    let (_, addr) = dial_addr(&url);
                    Some((
                        Err(Error::Io(format!("read tcp {addr}: i/o timeout"))),
                        None,
                    ))
                }
            }
        },
    ))
}

/// Reads a body of at most `max` bytes.
async fn read_limited(resp: Response, max: usize, idle: Duration) -> Result<Bytes, Error> {
    let url = resp.url().to_string();
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(Error::Io(format!(
            "{url}: response larger than {max} bytes"
        )));
    }
    let mut buf = BytesMut::new();
    let mut stream = body_stream(resp, idle);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if buf.len() + chunk.len() > max {
            return Err(Error::Io(format!(
                "{url}: response larger than {max} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Reads and drops a (small) body so the connection goes back to the pool;
/// gives up (dropping the connection) on a big or slow one.
async fn drain(resp: Response) {
    let mut s = resp.bytes_stream();
    let mut n = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(Ok(c))) = tokio::time::timeout_at(deadline, s.next()).await {
        n += c.len();
        if n > 1 << 20 {
            break;
        }
    }
}

/// The error of a non-success answer, from the registry's error body.
async fn status_error(resp: Response) -> Error {
    let status = resp.status();
    let body = read_limited(resp, 64 << 10, Duration::from_secs(10))
        .await
        .unwrap_or_default();
    error_from(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
        assert_eq!(parse_content_range("10-99"), None);
    }

    #[test]
    fn login_server_names() {
        assert_eq!(login_domain("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(login_domain("docker.io"), "docker.io");
        assert_eq!(login_domain("localhost:5000"), "localhost:5000");
        assert_eq!(login_domain("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
    }
}

/// The target of a `Link: <url>; rel="next"` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"")
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

#[cfg(test)]
mod link_tests {
    #[test]
    fn next_links() {
        assert_eq!(
            super::next_link("</v2/a/tags/list?n=2&last=b>; rel=\"next\""),
            Some("/v2/a/tags/list?n=2&last=b".to_string())
        );
        assert_eq!(super::next_link("</x>; rel=\"prev\""), None);
    }
}
