//! HTTP front: routing of `/v2/...` paths (repository names contain `/`, so
//! paths are split by hand rather than with router patterns), auth checks,
//! and one handler per endpoint of the distribution spec.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::auth::{self, Access, Claims, TokenKey, Users};
use crate::digest::{Algorithm, Digest, DigestError};
use crate::error::ApiError;
use crate::manifest;
use crate::names::{valid_repo_name, valid_tag};
use crate::range;
use crate::storage::Storage;

/// Largest manifest accepted (the spec asks for at least 4 MiB).
const MAX_MANIFEST: usize = 8 << 20;
/// Chunk size of blob GET bodies.
const READ_CHUNK: usize = 1 << 20;

/// Failures of the HTTP glue itself (not client errors).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

pub struct App {
    pub storage: Arc<Storage>,
    pub users: Option<Arc<Users>>,
    pub key: TokenKey,
    pub tls: bool,
}

/// A parsed `/v2/` path.
#[derive(Debug, PartialEq)]
enum Route {
    Base,
    Catalog,
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    UploadStart { name: String },
    Upload { name: String, uuid: String },
    Tags { name: String },
    Referrers { name: String, digest: String },
}

impl Route {
    fn name(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Tags { name }
            | Route::Referrers { name, .. } => Some(name),
        }
    }
}

/// Splits a (percent-decoded) path below `/v2/`. The last segment is never a
/// name part, so `a/blobs/uploads/blobs/<digest>` is a blob of repository
/// `a/blobs/uploads`.
fn parse_route(rest: &str) -> Option<Route> {
    if rest.is_empty() {
        return Some(Route::Base);
    }
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags { name: name.into() });
    }
    let (prefix, last) = rest.rsplit_once('/')?;
    let last = last.to_string();
    if let Some(name) = prefix.strip_suffix("/manifests") {
        return Some(Route::Manifest {
            name: name.into(),
            reference: last,
        });
    }
    if let Some(name) = prefix.strip_suffix("/blobs/uploads") {
        return Some(if last.is_empty() {
            Route::UploadStart { name: name.into() }
        } else {
            Route::Upload {
                name: name.into(),
                uuid: last,
            }
        });
    }
    if let Some(name) = prefix.strip_suffix("/blobs") {
        if last == "uploads" {
            return Some(Route::UploadStart { name: name.into() });
        }
        return Some(Route::Blob {
            name: name.into(),
            digest: last,
        });
    }
    if let Some(name) = prefix.strip_suffix("/referrers") {
        return Some(Route::Referrers {
            name: name.into(),
            digest: last,
        });
    }
    None
}

fn query_pairs(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn query<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse()
        .map_err(|e: DigestError| ApiError::DigestInvalid(e.to_string()))
}

/// What a request needs from the caller's credentials.
enum Need<'a> {
    /// `/v2/`: any valid credentials.
    Login,
    Repo(&'a str, &'static str),
    Catalog,
}

/// Whose request this is: None = unrestricted (open server or Basic
/// credentials), Some = a bearer token's grants.
type Identity = Option<Claims>;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl App {
    fn realm(&self, headers: &HeaderMap) -> String {
        let host = header_str(headers, header::HOST).unwrap_or("localhost");
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}/token")
    }

    fn challenge(&self, headers: &HeaderMap, need: &Need, insufficient: bool) -> Response {
        let mut c = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm(headers),
            auth::SERVICE
        );
        let scope = match need {
            Need::Login => None,
            Need::Catalog => Some("registry:catalog:*".to_string()),
            Need::Repo(name, "pull") => Some(format!("repository:{name}:pull")),
            Need::Repo(name, "delete") => Some(format!("repository:{name}:delete")),
            Need::Repo(name, _) => Some(format!("repository:{name}:pull,push")),
        };
        if let Some(s) = &scope {
            c.push_str(&format!(",scope=\"{s}\""));
        }
        if insufficient {
            c.push_str(",error=\"insufficient_scope\"");
        }
        let body = serde_json::json!({"errors": [{
            "code": if insufficient { "DENIED" } else { "UNAUTHORIZED" },
            "message": "authentication required",
            "detail": scope,
        }]});
        let mut r = (StatusCode::UNAUTHORIZED, body.to_string()).into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, hv(&c));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }

    async fn authorize(&self, headers: &HeaderMap, need: Need<'_>) -> Result<Identity, Response> {
        let Some(users) = &self.users else {
            return Ok(None);
        };
        let Some(authz) = header_str(headers, header::AUTHORIZATION) else {
            return Err(self.challenge(headers, &need, false));
        };
        if let Some((u, p)) = auth::parse_basic(authz) {
            return if users.check(&u, &p).await {
                Ok(None)
            } else {
                Err(self.challenge(headers, &need, false))
            };
        }
        let Some(tok) = auth::parse_bearer(authz) else {
            return Err(self.challenge(headers, &need, false));
        };
        let claims = match self.key.verify(tok, "access", now()) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("bearer token refused: {e}");
                return Err(self.challenge(headers, &need, false));
            }
        };
        let ok = match &need {
            Need::Login => true,
            Need::Catalog => claims.allows("registry", "catalog", "*"),
            Need::Repo(name, action) => claims.allows("repository", name, action),
        };
        if ok {
            Ok(Some(claims))
        } else {
            Err(self.challenge(headers, &need, true))
        }
    }
}

/// Entry point for every request.
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let mut resp = match dispatch(&app, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("{method} {path}: {e}");
            e.into_response()
        }
    };
    // Access log (the body of a GET may still be streaming).
    tracing::debug!(
        "{method} {path} {} {:.1}ms",
        resp.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

async fn dispatch(app: &Arc<App>, req: Request) -> Result<Response, ApiError> {
    let raw_path = req.uri().path();
    if raw_path == "/token" {
        return token_endpoint(app, req).await;
    }
    let decoded = percent_encoding::percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|_| ApiError::NameInvalid(raw_path.to_string()))?
        .into_owned();
    let rest = match decoded.strip_prefix("/v2") {
        Some("") => "",
        Some(r) => match r.strip_prefix('/') {
            Some(r) => r,
            None => return Err(not_found()),
        },
        None => return Err(not_found()),
    };
    let route = parse_route(rest).ok_or_else(not_found)?;
    if let Some(name) = route.name() {
        if !valid_repo_name(name) {
            return Err(ApiError::NameInvalid(name.to_string()));
        }
    }
    let method = req.method().clone();
    let is_read = method == Method::GET || method == Method::HEAD;
    let need = match &route {
        Route::Base => Need::Login,
        Route::Catalog => Need::Catalog,
        Route::Manifest { name, .. } | Route::Blob { name, .. } if method == Method::DELETE => {
            Need::Repo(name, "delete")
        }
        Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::Tags { name }
        | Route::Referrers { name, .. }
            if is_read =>
        {
            Need::Repo(name, "pull")
        }
        Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::UploadStart { name }
        | Route::Upload { name, .. }
        | Route::Tags { name }
        | Route::Referrers { name, .. } => Need::Repo(name, "push"),
    };
    let identity = match app.authorize(req.headers(), need).await {
        Ok(i) => i,
        Err(resp) => return Ok(resp),
    };
    match (route, method) {
        (Route::Base, m) if m == Method::GET || m == Method::HEAD => Ok(json_response(
            StatusCode::OK,
            "application/json",
            "{}".into(),
        )),
        (Route::Catalog, Method::GET) => catalog(app, &query_pairs(&req)).await,
        (Route::Tags { name }, Method::GET) => tags_list(app, &name, &query_pairs(&req)).await,
        (Route::Manifest { name, reference }, m) if m == Method::GET || m == Method::HEAD => {
            get_manifest(app, &name, &reference, m == Method::HEAD).await
        }
        (Route::Manifest { name, reference }, Method::PUT) => {
            put_manifest(app, &name, &reference, req).await
        }
        (Route::Manifest { name, reference }, Method::DELETE) => {
            delete_manifest(app, &name, &reference).await
        }
        (Route::Blob { name, digest }, m) if m == Method::GET || m == Method::HEAD => {
            get_blob(app, &name, &digest, m == Method::HEAD, req.headers()).await
        }
        (Route::Blob { name, digest }, Method::DELETE) => delete_blob(app, &name, &digest).await,
        (Route::UploadStart { name }, Method::POST) => {
            start_upload(app, &name, identity, req).await
        }
        (Route::Upload { name, uuid }, Method::PATCH) => patch_upload(app, &name, &uuid, req).await,
        (Route::Upload { name, uuid }, Method::PUT) => put_upload(app, &name, &uuid, req).await,
        (Route::Upload { name, uuid }, Method::GET) => upload_status(app, &name, &uuid).await,
        (Route::Upload { name, uuid }, Method::DELETE) => {
            app.storage.cancel_upload(&name, &uuid).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Route::Referrers { name, digest }, Method::GET) => {
            referrers(app, &name, &digest, &query_pairs(&req)).await
        }
        (_, m) => Err(ApiError::Unsupported(format!(
            "method {m} not allowed here"
        ))),
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

fn json_response(status: StatusCode, content_type: &str, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, hv(content_type));
    r
}

/// Runs blocking storage work off the async threads.
async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&Storage) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let st = app.storage.clone();
    Ok(tokio::task::spawn_blocking(move || f(&st))
        .await
        .map_err(ServerError::from)?)
}

// ------------------------------------------------------------------ listing

/// Parses `n` and `last`; returns the page and the `Link` header value.
fn page(
    all: &[String],
    q: &[(String, String)],
    base: &str,
) -> Result<(Vec<String>, Option<String>), ApiError> {
    let n = match query(q, "n") {
        Some(s) => Some(
            s.parse::<usize>()
                .map_err(|_| ApiError::Unsupported(format!("invalid n={s}")))?,
        ),
        None => None,
    };
    let last = query(q, "last");
    if n == Some(0) {
        return Ok((vec![], None));
    }
    let (items, more) = range::paginate(all, n, last);
    let link = match (more, items.last(), n) {
        (true, Some(l), Some(n)) => {
            let qs: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("n", &n.to_string())
                .append_pair("last", l)
                .finish();
            Some(format!("<{base}?{qs}>; rel=\"next\""))
        }
        _ => None,
    };
    Ok((items, link))
}

async fn catalog(app: &Arc<App>, q: &[(String, String)]) -> Result<Response, ApiError> {
    let all = blocking(app, |s| s.catalog()).await??;
    let (items, link) = page(&all, q, "/v2/_catalog")?;
    let mut r = json_response(
        StatusCode::OK,
        "application/json",
        serde_json::json!({ "repositories": items }).to_string(),
    );
    if let Some(l) = link {
        r.headers_mut().insert(header::LINK, hv(&l));
    }
    Ok(r)
}

async fn tags_list(
    app: &Arc<App>,
    name: &str,
    q: &[(String, String)],
) -> Result<Response, ApiError> {
    let n = name.to_string();
    let all = blocking(app, move |s| s.tags(&n))
        .await??
        .ok_or_else(|| ApiError::NameUnknown(name.to_string()))?;
    let (items, link) = page(&all, q, &format!("/v2/{name}/tags/list"))?;
    let mut r = json_response(
        StatusCode::OK,
        "application/json",
        serde_json::json!({ "name": name, "tags": items }).to_string(),
    );
    if let Some(l) = link {
        r.headers_mut().insert(header::LINK, hv(&l));
    }
    Ok(r)
}

async fn referrers(
    app: &Arc<App>,
    name: &str,
    digest: &str,
    q: &[(String, String)],
) -> Result<Response, ApiError> {
    let subject = parse_digest(digest)?;
    let n = name.to_string();
    let mut list = blocking(app, move |s| s.referrers(&n, &subject)).await??;
    let filter = query(q, "artifactType");
    if let Some(t) = filter {
        list.retain(|d| d.get("artifactType").and_then(|a| a.as_str()) == Some(t));
    }
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": list,
    });
    let mut r = json_response(StatusCode::OK, manifest::OCI_INDEX, body.to_string());
    if filter.is_some() {
        r.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(r)
}

// ---------------------------------------------------------------- manifests

/// A tag or a digest.
enum Reference {
    Tag(String),
    Digest(Digest),
}

fn parse_reference(r: &str, unknown: impl Fn() -> ApiError) -> Result<Reference, ApiError> {
    if r.contains(':') {
        return Ok(Reference::Digest(parse_digest(r)?));
    }
    if valid_tag(r) {
        Ok(Reference::Tag(r.to_string()))
    } else {
        Err(unknown())
    }
}

async fn get_manifest(
    app: &Arc<App>,
    name: &str,
    reference: &str,
    head: bool,
) -> Result<Response, ApiError> {
    let unknown = || ApiError::ManifestUnknown(reference.to_string());
    let r = parse_reference(reference, unknown)?;
    let n = name.to_string();
    let found = blocking(app, move |s| {
        let d = match r {
            Reference::Digest(d) => d,
            Reference::Tag(t) => match s.resolve_tag(&n, &t)? {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        s.get_manifest(&n, &d)
    })
    .await??;
    let m = found.ok_or_else(unknown)?;
    let len = m.body.len();
    let mut resp = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(m.body))
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, hv(&m.media_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert("docker-content-digest", hv(&m.digest.to_string()));
    h.insert(header::ETAG, hv(&format!("\"{}\"", m.digest)));
    Ok(resp)
}

async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut s = body.into_data_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| ApiError::BlobUploadInvalid(format!("request body: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(format!("more than {limit} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn put_manifest(
    app: &Arc<App>,
    name: &str,
    reference: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let r = parse_reference(reference, || {
        ApiError::ManifestInvalid(format!("invalid tag {reference:?}"))
    })?;
    let content_type = header_str(req.headers(), header::CONTENT_TYPE).map(str::to_string);
    let body = read_limited(req.into_body(), MAX_MANIFEST).await?;
    let digest = match &r {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &body);
            if &actual != d {
                return Err(ApiError::DigestInvalid(d.to_string()));
            }
            actual
        }
        Reference::Tag(_) => Digest::of(Algorithm::Sha256, &body),
    };
    let refs = manifest::parse(&body, content_type.as_deref())
        .map_err(|e| ApiError::ManifestInvalid(e.to_string()))?;
    let media_type = manifest::effective_media_type(content_type.as_deref(), &refs);
    let subject = refs.subject.clone();
    let tag = match r {
        Reference::Tag(t) => Some(t),
        Reference::Digest(_) => None,
    };
    let (n, d) = (name.to_string(), digest.clone());
    blocking(app, move |s| {
        s.put_manifest(&n, tag.as_deref(), &d, &media_type, &body, &refs)
    })
    .await??;
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        hv(&format!("/v2/{name}/manifests/{digest}")),
    );
    h.insert("docker-content-digest", hv(&digest.to_string()));
    if let Some(s) = subject {
        h.insert("oci-subject", hv(&s.to_string()));
    }
    Ok(resp)
}

async fn delete_manifest(
    app: &Arc<App>,
    name: &str,
    reference: &str,
) -> Result<Response, ApiError> {
    let unknown = || ApiError::ManifestUnknown(reference.to_string());
    let r = parse_reference(reference, unknown)?;
    let n = name.to_string();
    let found = blocking(app, move |s| match r {
        Reference::Digest(d) => s.delete_manifest(&n, &d),
        Reference::Tag(t) => s.delete_tag(&n, &t),
    })
    .await??;
    if !found {
        return Err(unknown());
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

// -------------------------------------------------------------------- blobs

async fn get_blob(
    app: &Arc<App>,
    name: &str,
    digest: &str,
    head: bool,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let d = parse_digest(digest)?;
    let (n, d2) = (name.to_string(), d.clone());
    let size = if head {
        blocking(app, move |s| s.check_blob_for_push(&n, &d2)).await??
    } else {
        blocking(app, move |s| s.blob_size(&n, &d2)).await??
    };
    let size = size.ok_or_else(|| ApiError::BlobUnknown(d.to_string()))?;
    let range = match header_str(headers, header::RANGE) {
        Some(h) => match range::parse_range(h, size) {
            Ok(r) => r,
            Err(range::RangeError::Unsatisfiable(..)) => {
                return Err(ApiError::RangeNotSatisfiable { size })
            }
            Err(range::RangeError::Malformed(_)) => None,
        },
        None => None,
    };
    let (status, first, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, size),
    };
    let body = if head || len == 0 {
        Body::empty()
    } else {
        let path = Storage::blob_path(app.storage.root(), &d);
        let mut f = tokio::fs::File::open(&path)
            .await
            .map_err(|_| ApiError::BlobUnknown(d.to_string()))?;
        if first > 0 {
            f.seek(std::io::SeekFrom::Start(first)).await?;
        }
        let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), READ_CHUNK);
        Body::from_stream(stream)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert("docker-content-digest", hv(&d.to_string()));
    h.insert(header::ETAG, hv(&format!("\"{d}\"")));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            hv(&format!("bytes {}-{}/{}", first, first + len - 1, size)),
        );
    }
    Ok(resp)
}

async fn delete_blob(app: &Arc<App>, name: &str, digest: &str) -> Result<Response, ApiError> {
    let d = parse_digest(digest)?;
    let (n, d2) = (name.to_string(), d.clone());
    if !blocking(app, move |s| s.delete_blob(&n, &d2)).await?? {
        return Err(ApiError::BlobUnknown(d.to_string()));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

// ------------------------------------------------------------------ uploads

fn upload_response(status: StatusCode, name: &str, uuid: &str, offset: u64) -> Response {
    let mut r = status.into_response();
    let h = r.headers_mut();
    h.insert(
        header::LOCATION,
        hv(&format!("/v2/{name}/blobs/uploads/{uuid}")),
    );
    h.insert(header::RANGE, hv(&range::upload_range(offset)));
    h.insert("docker-upload-uuid", hv(uuid));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

fn blob_created(name: &str, d: &Digest) -> Response {
    let mut r = StatusCode::CREATED.into_response();
    let h = r.headers_mut();
    h.insert(header::LOCATION, hv(&format!("/v2/{name}/blobs/{d}")));
    h.insert("docker-content-digest", hv(&d.to_string()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

async fn start_upload(
    app: &Arc<App>,
    name: &str,
    identity: Identity,
    req: Request,
) -> Result<Response, ApiError> {
    let q = query_pairs(&req);
    if let Some(m) = query(&q, "mount") {
        let d = parse_digest(m)?;
        let from = query(&q, "from").map(str::to_string);
        // Mount only from a readable repository; without `from`, only on
        // an open server (the digest alone must not grant access).
        let allowed = match (&from, &identity) {
            (Some(f), Some(claims)) => valid_repo_name(f) && claims.allows("repository", f, "pull"),
            (Some(f), None) => valid_repo_name(f),
            (None, _) => app.users.is_none(),
        };
        if allowed {
            let (n, d2) = (name.to_string(), d.clone());
            if blocking(app, move |s| s.mount(&n, &d2, from.as_deref())).await?? {
                return Ok(blob_created(name, &d));
            }
        }
    }
    let n = name.to_string();
    let uuid = blocking(app, move |s| s.create_upload(&n)).await??;
    if let Some(ds) = query(&q, "digest") {
        // Monolithic upload: the body is the whole blob.
        let d = match parse_digest(ds) {
            Ok(d) => d,
            Err(e) => {
                let _ = app.storage.cancel_upload(name, &uuid).await;
                return Err(e);
            }
        };
        let body = req.into_body().into_data_stream();
        if let Err(e) = app.storage.finish_upload(name, &uuid, &d, None, body).await {
            let _ = app.storage.cancel_upload(name, &uuid).await;
            return Err(e);
        }
        return Ok(blob_created(name, &d));
    }
    Ok(upload_response(StatusCode::ACCEPTED, name, &uuid, 0))
}

fn content_range(req: &Request) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(h) = header_str(req.headers(), header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let (a, b) =
        range::parse_content_range(h).map_err(|e| ApiError::BlobUploadInvalid(e.to_string()))?;
    if let Some(len) =
        header_str(req.headers(), header::CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok())
    {
        if len != b - a + 1 {
            return Err(ApiError::SizeInvalid(format!(
                "Content-Range {a}-{b} but Content-Length {len}"
            )));
        }
    }
    Ok(Some((a, b)))
}

async fn patch_upload(
    app: &Arc<App>,
    name: &str,
    uuid: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let range = content_range(&req)?;
    let body = req.into_body().into_data_stream();
    let offset = app.storage.append(name, uuid, range, body).await?;
    Ok(upload_response(StatusCode::ACCEPTED, name, uuid, offset))
}

async fn put_upload(
    app: &Arc<App>,
    name: &str,
    uuid: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let q = query_pairs(&req);
    let d = parse_digest(
        query(&q, "digest")
            .ok_or_else(|| ApiError::DigestInvalid("digest parameter missing".into()))?,
    )?;
    let range = content_range(&req)?;
    let body = req.into_body().into_data_stream();
    app.storage
        .finish_upload(name, uuid, &d, range, body)
        .await?;
    Ok(blob_created(name, &d))
}

async fn upload_status(app: &Arc<App>, name: &str, uuid: &str) -> Result<Response, ApiError> {
    let offset = app.storage.upload_offset(name, uuid).await?;
    Ok(upload_response(StatusCode::NO_CONTENT, name, uuid, offset))
}

// -------------------------------------------------------------------- token

/// `GET /token` (Basic credentials, docker's and skopeo's way) and
/// `POST /token` (oauth2 password and refresh_token grants).
async fn token_endpoint(app: &Arc<App>, req: Request) -> Result<Response, ApiError> {
    let refuse = |why: &str| {
        let body = serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": why, "detail": null}]});
        let mut r = json_response(
            StatusCode::UNAUTHORIZED,
            "application/json",
            body.to_string(),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            hv(&format!("Basic realm=\"{}\"", auth::SERVICE)),
        );
        r
    };
    let method = req.method().clone();
    let mut params = query_pairs(&req);
    let user: Option<String>;
    let offline: bool;
    if method == Method::POST {
        let body = read_limited(req.into_body(), 64 << 10).await?;
        params.extend(form_urlencoded::parse(&body).into_owned());
        let p = |k: &str| query(&params, k).map(str::to_string);
        offline = p("access_type").as_deref() == Some("offline");
        match p("grant_type").as_deref() {
            Some("password") => {
                let (u, pw) = (
                    p("username").unwrap_or_default(),
                    p("password").unwrap_or_default(),
                );
                match &app.users {
                    Some(users) if users.check(&u, &pw).await => user = Some(u),
                    Some(_) => return Ok(refuse("invalid username or password")),
                    None => user = Some(u),
                }
            }
            Some("refresh_token") => {
                let t = p("refresh_token").unwrap_or_default();
                match app.key.verify(&t, "refresh", now()) {
                    Ok(c) => user = Some(c.sub),
                    Err(e) => return Ok(refuse(&format!("invalid refresh token: {e}"))),
                }
            }
            other => {
                let body = serde_json::json!({"error": "unsupported_grant_type", "error_description": format!("{other:?}")});
                return Ok(json_response(
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    body.to_string(),
                ));
            }
        }
    } else if method == Method::GET {
        let basic = header_str(req.headers(), header::AUTHORIZATION).and_then(auth::parse_basic);
        match (&app.users, basic) {
            (Some(users), Some((u, pw))) => {
                if users.check(&u, &pw).await {
                    user = Some(u);
                } else {
                    return Ok(refuse("invalid username or password"));
                }
            }
            (Some(_), None) => return Ok(refuse("authentication required")),
            (None, b) => user = Some(b.map(|(u, _)| u).unwrap_or_else(|| "anonymous".into())),
        }
        offline = query(&params, "offline_token") == Some("true");
    } else {
        return Err(ApiError::Unsupported(format!(
            "method {method} not allowed here"
        )));
    }
    let user = user.unwrap_or_default();
    let requested: Vec<Access> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| Access::parse_all(v))
        .collect();
    let granted = auth::grant(&requested);
    let t = now();
    let scope = granted
        .iter()
        .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
        .collect::<Vec<_>>()
        .join(" ");
    let token = app.key.sign(&Claims::new(
        &user,
        granted,
        "access",
        t,
        auth::ACCESS_TTL_SECS,
    ));
    let issued = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t as u64);
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": auth::ACCESS_TTL_SECS,
        "issued_at": humantime::format_rfc3339_seconds(issued).to_string(),
        "scope": scope,
    });
    if offline {
        let refresh = app.key.sign(&Claims::new(
            &user,
            vec![],
            "refresh",
            t,
            auth::REFRESH_TTL_SECS,
        ));
        body["refresh_token"] = serde_json::Value::String(refresh);
    }
    Ok(json_response(
        StatusCode::OK,
        "application/json",
        body.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse_route(""), Some(Route::Base));
        assert_eq!(parse_route("_catalog"), Some(Route::Catalog));
        assert_eq!(
            parse_route("a/b/manifests/latest"),
            Some(Route::Manifest {
                name: "a/b".into(),
                reference: "latest".into()
            })
        );
        assert_eq!(
            parse_route("a/blobs/uploads/"),
            Some(Route::UploadStart { name: "a".into() })
        );
        assert_eq!(
            parse_route("a/blobs/uploads"),
            Some(Route::UploadStart { name: "a".into() })
        );
        assert_eq!(
            parse_route("a/blobs/uploads/u1"),
            Some(Route::Upload {
                name: "a".into(),
                uuid: "u1".into()
            })
        );
        assert_eq!(
            parse_route("a/blobs/uploads/blobs/sha256:x"),
            Some(Route::Blob {
                name: "a/blobs/uploads".into(),
                digest: "sha256:x".into()
            })
        );
        assert_eq!(
            parse_route("x/tags/list"),
            Some(Route::Tags { name: "x".into() })
        );
        assert_eq!(
            parse_route("x/referrers/sha256:y"),
            Some(Route::Referrers {
                name: "x".into(),
                digest: "sha256:y".into()
            })
        );
        assert_eq!(parse_route("x/nothing/here"), None);
        assert_eq!(parse_route("justaname"), None);
    }
}
