//! Against a small fake registry and token server on 127.0.0.1: the bearer
//! token flow (distribution 2.8 alone has no token server), digest
//! mismatches, cross-host blob redirects and chunk-upload resumption.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{digest, noise};
use futures::StreamExt;
use parking_lot::Mutex;
use shibafu_distribution::{Client, ClientConfig, Credentials, Error, Progress, RepoName};

/// The one manifest every repository of the fake serves.
const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}"#;
const TOKEN_USER: &str = "tok-user";
const TOKEN_ANON: &str = "tok-anon";
const REFRESH: &str = "refresh-1";

#[derive(Default)]
struct Fake {
    port: u16,
    blob_port: u16,
    token_gets: AtomicUsize,
    token_posts: AtomicUsize,
    scopes: Mutex<Vec<String>>,
    blob_auth_seen: Mutex<Vec<Option<String>>>,
    upload: Mutex<Vec<u8>>,
    patches: AtomicUsize,
}

fn query(uri: &Uri) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        m.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    m
}

fn errors(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors":[{"code":code,"message":message,"detail":null}]});
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl Fake {
    fn challenge(&self, scope: Option<&str>) -> Response {
        let mut v = format!(
            "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"fake-registry\"",
            self.port
        );
        if let Some(s) = scope {
            v.push_str(&format!(",scope=\"{s}\""));
        }
        let mut r = errors(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
        r.headers_mut()
            .insert("www-authenticate", v.parse().unwrap());
        r
    }

    fn token(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        if *method == Method::POST {
            self.token_posts.fetch_add(1, Ordering::SeqCst);
            let form: HashMap<String, String> =
                url::form_urlencoded::parse(body).into_owned().collect();
            if form.get("grant_type").map(String::as_str) == Some("refresh_token")
                && form.get("refresh_token").map(String::as_str) == Some(REFRESH)
                && form.get("service").map(String::as_str) == Some("fake-registry")
            {
                return axum::Json(
                    serde_json::json!({"access_token": TOKEN_USER, "expires_in": 300}),
                )
                .into_response();
            }
            return errors(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "invalid refresh token",
            );
        }
        self.token_gets.fetch_add(1, Ordering::SeqCst);
        let q = query(uri);
        assert_eq!(q["service"], ["fake-registry"]);
        self.scopes
            .lock()
            .push(q.get("scope").cloned().unwrap_or_default().join(" "));
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        // base64("user:pass")
        let token = match auth {
            None => TOKEN_ANON,
            Some("Basic dXNlcjpwYXNz") => TOKEN_USER,
            Some(_) => {
                return errors(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "incorrect username or password",
                )
            }
        };
        let mut body = serde_json::json!({"token": token});
        if token == TOKEN_USER && q.get("offline_token").is_some_and(|v| v == &["true"]) {
            body["refresh_token"] = REFRESH.into();
        }
        axum::Json(body).into_response()
    }

    fn registry(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
        let path = uri.path();
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let rest = path.strip_prefix("/v2/").unwrap_or("");
        if rest.is_empty() {
            return match token {
                Some(TOKEN_USER) | Some(TOKEN_ANON) => StatusCode::OK.into_response(),
                _ => self.challenge(None),
            };
        }
        // Repositories: public/* for anyone with a token, the rest for user.
        let repo_end = ["/manifests/", "/blobs/"]
            .iter()
            .filter_map(|k| rest.find(k))
            .min()
            .unwrap_or(rest.len());
        let repo = &rest[..repo_end];
        let allowed = match token {
            Some(TOKEN_USER) => true,
            Some(TOKEN_ANON) => repo.starts_with("public/"),
            _ => false,
        };
        if !allowed {
            return self.challenge(Some(&format!("repository:{repo}:pull")));
        }
        let tail = &rest[repo_end..];
        if let Some(reference) = tail.strip_prefix("/manifests/") {
            let (bytes, header): (&[u8], String) = match repo {
                // Sends other bytes than the digest it announces.
                "bad/header" => (b"{\"schemaVersion\":2}", digest(MANIFEST)),
                // Serves the same wrong bytes for any digest.
                "bad/bytes" => (b"{\"schemaVersion\":2,\"x\":1}", String::new()),
                _ => (MANIFEST, digest(MANIFEST)),
            };
            if reference.starts_with("sha256:")
                && repo != "bad/bytes"
                && reference != digest(MANIFEST)
            {
                return errors(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    "manifest unknown",
                );
            }
            let mut r = (
                StatusCode::OK,
                // A generic type: the client reads the body's mediaType.
                [("content-type", "application/json; charset=utf-8")],
                bytes.to_vec(),
            )
                .into_response();
            if !header.is_empty() {
                r.headers_mut()
                    .insert("docker-content-digest", header.parse().unwrap());
            }
            return r;
        }
        if let Some(rest) = tail.strip_prefix("/blobs/uploads/") {
            return self.upload(method, uri, headers, rest, body);
        }
        if tail.starts_with("/blobs/") {
            // Blobs live elsewhere: redirect to the blob server (another
            // origin, which must not see our Authorization).
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [(
                    "location",
                    format!("http://127.0.0.1:{}/data/{repo}", self.blob_port),
                )],
            )
                .into_response();
        }
        errors(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        )
    }

    /// Upload sessions: the second PATCH stores only half its bytes and
    /// fails; PATCHes must start where the stored data ends.
    fn upload(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        rest: &str,
        body: Bytes,
    ) -> Response {
        let abs = format!("http://127.0.0.1:{}/v2/up/x/blobs/uploads/u1", self.port);
        let range = |n: usize| format!("0-{}", n.saturating_sub(1));
        match (method.as_str(), rest) {
            ("POST", "") => {
                self.upload.lock().clear();
                (
                    StatusCode::ACCEPTED,
                    [("location", "/v2/up/x/blobs/uploads/u1".to_string())],
                )
                    .into_response()
            }
            ("PATCH", "u1") => {
                let n = self.patches.fetch_add(1, Ordering::SeqCst) + 1;
                let mut data = self.upload.lock();
                let cr = headers.get("content-range").unwrap().to_str().unwrap();
                let (start, end) = cr.split_once('-').unwrap();
                let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
                if start != data.len() || end + 1 - start != body.len() {
                    return errors(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "BLOB_UPLOAD_INVALID",
                        "bad range",
                    );
                }
                if n == 2 {
                    data.extend_from_slice(&body[..body.len() / 2]);
                    return errors(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", "disk hiccup");
                }
                data.extend_from_slice(&body);
                (
                    StatusCode::ACCEPTED,
                    [
                        ("location", format!("{abs}?_state={n}")),
                        ("range", range(data.len())),
                    ],
                )
                    .into_response()
            }
            ("GET", "u1") => {
                let data = self.upload.lock();
                (
                    StatusCode::NO_CONTENT,
                    [("location", abs.clone()), ("range", range(data.len()))],
                )
                    .into_response()
            }
            ("PUT", "u1") => {
                let q = query(uri);
                let data = self.upload.lock();
                if q["digest"] != [digest(&data)] {
                    return errors(
                        StatusCode::BAD_REQUEST,
                        "DIGEST_INVALID",
                        "provided digest did not match uploaded content",
                    );
                }
                StatusCode::CREATED.into_response()
            }
            ("DELETE", _) => StatusCode::NO_CONTENT.into_response(),
            _ => errors(
                StatusCode::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
            ),
        }
    }
}

fn blob_data(repo: &str) -> Vec<u8> {
    if repo == "public/bad" {
        b"not what you asked for".to_vec()
    } else {
        noise(50_000, 5)
    }
}

async fn main_handler(
    State(st): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path().starts_with("/v2/public/slow/manifests/") && headers.contains_key("authorization")
    {
        // Far beyond the client's patience before any header goes out.
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
    if uri.path() == "/token" {
        st.token(&method, &uri, &headers, &body)
    } else {
        st.registry(&method, &uri, &headers, body)
    }
}

async fn blob_handler(State(st): State<Arc<Fake>>, uri: Uri, headers: HeaderMap) -> Response {
    if uri.path() == "/data/public/stall" {
        // Headers and a first chunk, then nothing, forever.
        let first = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"abc"))]);
        let body = axum::body::Body::from_stream(first.chain(futures::stream::pending()));
        return ([("content-length", "1000")], body).into_response();
    }
    st.blob_auth_seen.lock().push(
        headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
    );
    let data = blob_data(uri.path().strip_prefix("/data/").unwrap_or(""));
    let total = data.len();
    let honours_range = !uri.path().ends_with("/norange");
    if let Some(r) = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .filter(|_| honours_range)
    {
        let start: usize = r
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap();
        return (
            StatusCode::PARTIAL_CONTENT,
            [(
                "content-range",
                format!("bytes {start}-{}/{total}", total - 1),
            )],
            data[start..].to_vec(),
        )
            .into_response();
    }
    data.into_response()
}

async fn start() -> Arc<Fake> {
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let blobs = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let st = Arc::new(Fake {
        port: main.local_addr().unwrap().port(),
        blob_port: blobs.local_addr().unwrap().port(),
        ..Default::default()
    });
    let app = axum::Router::new()
        .fallback(main_handler)
        .with_state(st.clone());
    tokio::spawn(async move { axum::serve(main, app).await.unwrap() });
    let app = axum::Router::new()
        .fallback(blob_handler)
        .with_state(st.clone());
    tokio::spawn(async move { axum::serve(blobs, app).await.unwrap() });
    st
}

fn repo(st: &Fake, path: &str) -> RepoName {
    RepoName::parse(&format!("127.0.0.1:{}/{path}", st.port)).unwrap()
}

fn user() -> Credentials {
    Credentials::Basic {
        username: "user".into(),
        password: "pass".into(),
    }
}

#[tokio::test]
async fn bearer_tokens_from_a_token_server() {
    let st = start().await;
    let c = Client::new(ClientConfig::default()).unwrap();
    let private = repo(&st, "private/app");

    let m = c.get_manifest(&private, "latest", &user()).await.unwrap();
    assert_eq!(&m.bytes[..], MANIFEST);
    assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m.digest, digest(MANIFEST));
    // The token is cached for the scope: one fetch for several requests.
    c.get_manifest(&private, &digest(MANIFEST), &user())
        .await
        .unwrap();
    c.get_manifest(&private, "v2", &user()).await.unwrap();
    assert_eq!(st.token_gets.load(Ordering::SeqCst), 1);
    assert_eq!(st.scopes.lock()[0], "repository:private/app:pull");

    // Wrong password: the token server's refusal.
    let bad = Credentials::Basic {
        username: "user".into(),
        password: "nope".into(),
    };
    let err = c.get_manifest(&private, "latest", &bad).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "unauthorized: incorrect username or password"
    );

    // Anonymous: a token for public repositories only.
    let public = repo(&st, "public/app");
    c.get_manifest(&public, "latest", &Credentials::Anonymous)
        .await
        .unwrap();
    let err = c
        .get_manifest(&private, "latest", &Credentials::Anonymous)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
    assert_eq!(err.to_string(), "unauthorized: authentication required");

    // A bearer token given as is.
    c.get_manifest(&private, "latest", &Credentials::Bearer(TOKEN_USER.into()))
        .await
        .unwrap();
}

#[tokio::test]
async fn login_returns_the_refresh_token_and_identity_tokens_work() {
    let st = start().await;
    let c = Client::new(ClientConfig::default()).unwrap();
    let domain = format!("127.0.0.1:{}", st.port);
    let refresh = c.login(&domain, &user()).await.unwrap();
    assert_eq!(refresh.as_deref(), Some(REFRESH));
    let bad = Credentials::Basic {
        username: "user".into(),
        password: "nope".into(),
    };
    let err = c.login(&domain, &bad).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");

    let id = Credentials::IdentityToken {
        username: "user".into(),
        token: REFRESH.into(),
    };
    assert_eq!(c.login(&domain, &id).await.unwrap(), None);
    c.get_manifest(&repo(&st, "private/app"), "latest", &id)
        .await
        .unwrap();
    assert!(st.token_posts.load(Ordering::SeqCst) >= 2);
    let wrong = Credentials::IdentityToken {
        username: "user".into(),
        token: "stale".into(),
    };
    let err = c.login(&domain, &wrong).await.unwrap_err();
    assert_eq!(err.to_string(), "unauthorized: invalid refresh token");
}

#[tokio::test]
async fn digest_mismatches_are_caught() {
    let st = start().await;
    let c = Client::new(ClientConfig::default()).unwrap();
    let err = c
        .get_manifest(&repo(&st, "bad/header"), "latest", &user())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    let wanted = digest(MANIFEST);
    let err = c
        .get_manifest(&repo(&st, "bad/bytes"), &wanted, &user())
        .await
        .unwrap_err();
    match err {
        Error::DigestMismatch { expected, actual } => {
            assert_eq!(expected, wanted);
            assert_eq!(actual, digest(b"{\"schemaVersion\":2,\"x\":1}"));
        }
        e => panic!("{e:?}"),
    }
    let want = digest(&blob_data("public/good"));
    let err = c
        .get_blob_bytes(&repo(&st, "public/bad"), &want, &user())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn blob_redirects_drop_authorization() {
    let st = start().await;
    let c = Client::new(ClientConfig::default()).unwrap();
    let r = repo(&st, "public/good");
    let data = blob_data("public/good");
    let d = digest(&data);
    assert_eq!(c.get_blob_bytes(&r, &d, &user()).await.unwrap(), data);
    let b = c.get_blob(&r, &d, 1000, &user()).await.unwrap();
    assert_eq!((b.offset, b.total), (1000, Some(data.len() as u64)));
    let got: Vec<u8> = b.stream.map(|c| c.unwrap().to_vec()).concat().await;
    assert!(got[..] == data[1000..]);
    let seen = st.blob_auth_seen.lock().clone();
    assert_eq!(seen, vec![None, None]);

    // A server that ignores Range: the whole blob, offset 0.
    let r = repo(&st, "public/norange");
    let b = c.get_blob(&r, &d, 1000, &user()).await.unwrap();
    assert_eq!((b.offset, b.total), (0, Some(data.len() as u64)));
}

#[tokio::test]
async fn chunked_upload_resumes_after_a_failed_chunk() {
    let st = start().await;
    let c = Client::new(ClientConfig::default()).unwrap();
    c.set_chunk_size(10_000);
    let data = noise(45_000, 8);
    let dir = tempfile::tempdir().unwrap();
    let p = common::write_blob(dir.path(), &data);
    let last = Arc::new(AtomicUsize::new(0));
    let l2 = last.clone();
    let progress: Progress = Arc::new(move |n| l2.store(n as usize, Ordering::SeqCst));
    c.push_blob_file(
        &repo(&st, "up/x"),
        &digest(&data),
        &p,
        45_000,
        &user(),
        progress,
    )
    .await
    .unwrap();
    assert_eq!(&st.upload.lock()[..], &data[..]);
    assert_eq!(last.load(Ordering::SeqCst), 45_000);
    // 10 000, 10 000 (fails after storing 5 000), then from 15 000 on:
    // 3 more chunks of up to 10 000.
    assert_eq!(st.patches.load(Ordering::SeqCst), 5);

    // A size that does not match the file is refused before any upload.
    let err = c
        .push_blob_file(
            &repo(&st, "up/x"),
            &digest(&data),
            &p,
            1,
            &user(),
            Arc::new(|_| {}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
}

#[tokio::test]
async fn stalled_transfers_time_out() {
    let st = start().await;
    let c = Client::new(ClientConfig::default()).unwrap();
    c.set_idle_timeout(std::time::Duration::from_millis(300));
    let r = repo(&st, "public/stall");
    let b = c
        .get_blob(&r, &digest(b"x"), 0, &Credentials::Anonymous)
        .await
        .unwrap();
    assert_eq!(b.total, Some(1000));
    let items: Vec<_> = b.stream.collect().await;
    assert_eq!(&items[0].as_ref().unwrap()[..], b"abc");
    let err = items[1].as_ref().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("read tcp 127.0.0.1:{}: i/o timeout", st.blob_port)
    );
    assert_eq!(items.len(), 2);

    let started = std::time::Instant::now();
    let err = c
        .get_manifest(&repo(&st, "public/slow"), "latest", &Credentials::Anonymous)
        .await
        .unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(
        err.to_string(),
        format!(
            "Get \"http://127.0.0.1:{}/v2/public/slow/manifests/latest\": net/http: timeout awaiting response headers",
            st.port
        )
    );
}

#[tokio::test]
async fn concurrent_first_requests_share_one_token() {
    let st = start().await;
    let c = Client::new(ClientConfig::default()).unwrap();
    let r = repo(&st, "private/app");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (c, r) = (c.clone(), r.clone());
            tokio::spawn(async move { c.get_manifest(&r, "latest", &user()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(st.token_gets.load(Ordering::SeqCst), 1);
    // Another scope (push) is another token.
    c.blob_exists(&r, &digest(b"x"), &user()).await.unwrap();
    assert_eq!(st.token_gets.load(Ordering::SeqCst), 2);
    assert_eq!(st.scopes.lock()[1], "repository:private/app:pull,push");
}
