//! The OCI distribution-spec conformance workflows (pull, push, content
//! discovery, content management), ported to plain HTTP requests against a
//! server on 127.0.0.1:0, plus auth, TLS and restart behaviour.

use std::path::{Path, PathBuf};

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use shibafu_registry::digest::{Algorithm, Digest};
use shibafu_registry::ServerConfig;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

struct Registry {
    base: String,
    client: Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    root: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Registry {
    async fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let mut r = Self::start_at(&root, None).await;
        r._dir = Some(dir);
        r
    }

    async fn start_at(root: &Path, htpasswd: Option<PathBuf>) -> Registry {
        let cfg = ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            root: root.to_path_buf(),
            htpasswd,
            tls_cert: None,
            tls_key: None,
        };
        Self::start_cfg(cfg, plain_client(), "http").await
    }

    async fn start_cfg(cfg: ServerConfig, client: Client, scheme: &str) -> Registry {
        let root = cfg.root.clone();
        let bound = shibafu_registry::bind(cfg).await.unwrap();
        let addr = bound.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            bound
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        let host = if scheme == "https" {
            format!("localhost:{}", addr.port())
        } else {
            addr.to_string()
        };
        Registry {
            base: format!("{scheme}://{host}"),
            client,
            stop: Some(tx),
            task: Some(task),
            root,
            _dir: None,
        }
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    fn req(&self, m: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(m, self.url(path))
    }

    /// Monolithic single-POST upload.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::of(Algorithm::Sha256, data);
        let r = self
            .req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            )
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        d
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .unwrap()
    }

    /// config + one layer + manifest tagged `tag`; returns the manifest
    /// digest and its bytes.
    async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Digest, Vec<u8>) {
        let cfg = self
            .push_blob(repo, br#"{"architecture":"amd64","os":"linux"}"#)
            .await;
        let l = self.push_blob(repo, layer).await;
        let m = image_manifest(&cfg, 38, &[(&l, layer.len())], None);
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        let bytes = serde_json::to_vec(&m).unwrap();
        (Digest::of(Algorithm::Sha256, &bytes), bytes)
    }
}

/// reqwest is built without a default TLS provider; ring is installed as
/// the process default so client construction never looks for another.
fn install_provider() {
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn plain_client() -> Client {
    install_provider();
    Client::new()
}

fn image_manifest(
    cfg: &Digest,
    cfg_size: usize,
    layers: &[(&Digest, usize)],
    subject: Option<(&Digest, usize)>,
) -> Value {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg.to_string(), "size": cfg_size},
        "layers": layers.iter().map(|(d, s)| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.to_string(), "size": s
        })).collect::<Vec<_>>(),
    });
    if let Some((d, s)) = subject {
        m["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": s});
    }
    m
}

async fn error_code(r: reqwest::Response) -> String {
    let v: Value = r.json().await.unwrap();
    v["errors"][0]["code"].as_str().unwrap().to_string()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

// -------------------------------------------------------------------- pull

#[tokio::test]
async fn pull_workflow() {
    let reg = Registry::start().await;
    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );

    let layer: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (md, mbytes) = reg.push_image("conformance/pull", "v1", &layer).await;
    let ld = Digest::of(Algorithm::Sha256, &layer);

    // Manifest by tag and by digest, GET and HEAD.
    for reference in ["v1".to_string(), md.to_string()] {
        let path = format!("/v2/conformance/pull/manifests/{reference}");
        let r = reg
            .req(Method::GET, &path)
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), md.to_string());
        assert_eq!(r.bytes().await.unwrap().as_ref(), mbytes.as_slice());
        let r = reg.req(Method::HEAD, &path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-length"), mbytes.len().to_string());
        assert_eq!(header(&r, "docker-content-digest"), md.to_string());
    }
    let r = reg
        .req(Method::GET, "/v2/conformance/pull/manifests/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let missing = Digest::of(Algorithm::Sha256, b"missing");
    let r = reg
        .req(
            Method::HEAD,
            &format!("/v2/conformance/pull/manifests/{missing}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Blobs: GET, HEAD, ranges, unknown.
    let path = format!("/v2/conformance/pull/blobs/{ld}");
    let r = reg.req(Method::GET, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), ld.to_string());
    assert_eq!(r.bytes().await.unwrap().as_ref(), layer.as_slice());
    let r = reg.req(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), layer.len().to_string());
    let r = reg
        .req(Method::GET, &path)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes 1000-1999/{}", layer.len())
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &layer[1000..2000]);
    let r = reg
        .req(Method::GET, &path)
        .header("range", "bytes=299990-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &layer[299_990..]);
    let r = reg
        .req(Method::GET, &path)
        .header("range", "bytes=300000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = reg
        .req(
            Method::GET,
            &format!("/v2/conformance/pull/blobs/{missing}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    // A blob stored for one repository is not served from another.
    let r = reg
        .req(Method::GET, &format!("/v2/other/blobs/{ld}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Paths that are no endpoint, methods that are not allowed.
    let r = reg
        .req(Method::GET, "/v2/conformance/pull/nothing/here")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg.req(Method::GET, "/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(Method::POST, &format!("/v2/conformance/pull/blobs/{ld}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "UNSUPPORTED");

    // Bad names and digests.
    let r = reg
        .req(Method::GET, "/v2/UPPER/manifests/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "NAME_INVALID");
    let r = reg
        .req(Method::GET, "/v2/conformance/pull/blobs/sha256:nothex")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

// -------------------------------------------------------------------- push

#[tokio::test]
async fn push_workflow() {
    let reg = Registry::start().await;
    let repo = "conformance/push";

    // POST then PUT (monolithic with body on PUT).
    let data = b"monolithic blob via post then put".to_vec();
    let d = Digest::of(Algorithm::Sha256, &data);
    let r = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    assert!(loc.contains("/blobs/uploads/"), "{loc}");
    assert!(!header(&r, "docker-upload-uuid").is_empty());
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = reg
        .req(Method::PUT, &format!("{loc}{sep}digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/{repo}/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    let r = reg
        .req(Method::HEAD, &format!("/v2/{repo}/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Single POST with a bad digest.
    let wrong = Digest::of(Algorithm::Sha256, b"something else");
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={wrong}"),
        )
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = reg
        .req(Method::HEAD, &format!("/v2/{repo}/blobs/{wrong}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Chunked: two PATCHes with Content-Range, status, out-of-order, PUT.
    let blob: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    let bd = Digest::of(Algorithm::Sha256, &blob);
    let r = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let mut loc = header(&r, "location");
    let (a, b) = blob.split_at(1_000_000);
    let r = reg
        .req(Method::PATCH, &loc)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", a.len() - 1))
        .body(a.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-999999");
    loc = header(&r, "location");
    let r = reg.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-999999");
    // Out of order: starts past the end of what was received.
    let r = reg
        .req(Method::PATCH, &loc)
        .header("content-range", "1000100-1000199")
        .body(vec![0u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range"), "0-999999");
    let r = reg
        .req(Method::PATCH, &loc)
        .header("content-range", format!("1000000-{}", blob.len() - 1))
        .body(b.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), format!("0-{}", blob.len() - 1));
    let loc = header(&r, "location");
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={bd}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/blobs/{bd}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice());
    // The finished upload is gone.
    let r = reg.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    // Streamed PATCH without Content-Range, then PUT with a wrong digest.
    let r = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let r = reg
        .req(Method::PATCH, &loc)
        .body(b"abc".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={wrong}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // PUT without digest.
    let r = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let r = reg.req(Method::PUT, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Cancel an upload.
    let r = reg.req(Method::DELETE, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = reg.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(
            Method::PATCH,
            &format!("/v2/{repo}/blobs/uploads/00000000-0000-4000-8000-000000000000"),
        )
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    // Cross-repository mount: present → 201, absent → 202 upload.
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/conformance/mounted/blobs/uploads/?mount={bd}&from={repo}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/conformance/mounted/blobs/{bd}")
    );
    let r = reg
        .req(Method::HEAD, &format!("/v2/conformance/mounted/blobs/{bd}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/conformance/mounted/blobs/uploads/?mount={wrong}&from={repo}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(header(&r, "location").contains("/blobs/uploads/"));
    // Without `from` an open registry mounts any blob it stores.
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/conformance/mounted2/blobs/uploads/?mount={d}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Manifests: missing blob, digest mismatch, then the four media types.
    let cfg = reg.push_blob(repo, b"{}").await;
    let m = image_manifest(&cfg, 2, &[(&wrong, 5)], None);
    let r = reg.put_manifest(repo, "bad", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    let m = image_manifest(&cfg, 2, &[(&bd, blob.len())], None);
    let r = reg
        .put_manifest(repo, &wrong.to_string(), OCI_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = reg
        .req(Method::PUT, &format!("/v2/{repo}/manifests/junk"))
        .header("content-type", OCI_MANIFEST)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let r = reg.put_manifest(repo, "oci", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let md = header(&r, "docker-content-digest");
    assert_eq!(header(&r, "location"), format!("/v2/{repo}/manifests/{md}"));
    let r = reg.put_manifest(repo, &md, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "PUT by digest");

    let mut dm = m.clone();
    dm["mediaType"] = json!(DOCKER_MANIFEST);
    dm["config"]["mediaType"] = json!("application/vnd.docker.container.image.v1+json");
    let r = reg.put_manifest(repo, "docker", DOCKER_MANIFEST, &dm).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let ddigest = header(&r, "docker-content-digest");

    let missing_child = Digest::of(Algorithm::Sha256, b"no such manifest");
    for (mt, child_mt) in [(OCI_INDEX, OCI_MANIFEST), (DOCKER_LIST, DOCKER_MANIFEST)] {
        let bad = json!({"schemaVersion": 2, "mediaType": mt, "manifests": [
            {"mediaType": child_mt, "digest": missing_child.to_string(), "size": 1}]});
        let r = reg.put_manifest(repo, "list", mt, &bad).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
        let child = if mt == OCI_INDEX { &md } else { &ddigest };
        let good = json!({"schemaVersion": 2, "mediaType": mt, "manifests": [
            {"mediaType": child_mt, "digest": child, "size": 1,
             "platform": {"architecture": "amd64", "os": "linux"}}]});
        let r = reg.put_manifest(repo, "list", mt, &good).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = reg
            .req(Method::GET, &format!("/v2/{repo}/manifests/list"))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-type"), mt);
    }

    // An artifact manifest of an arbitrary type.
    let art_cfg = reg.push_blob(repo, b"{}").await;
    let art_blob = reg.push_blob(repo, b"artifact payload").await;
    let art = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.thing",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": art_cfg.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.example.data", "digest": art_blob.to_string(), "size": 16}]
    });
    let r = reg.put_manifest(repo, "artifact", OCI_MANIFEST, &art).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Content-Type disagreeing with the body's mediaType.
    let r = reg
        .put_manifest(repo, "mismatch", DOCKER_MANIFEST, &m)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
}

/// An upload survives a server restart and resumes from its offset.
#[tokio::test]
async fn resumable_upload_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut reg = Registry::start_at(&root, None).await;
    let blob: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
    let d = Digest::of(Algorithm::Sha256, &blob);
    let r = reg
        .req(Method::POST, "/v2/resume/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let r = reg
        .req(Method::PATCH, &loc)
        .header("content-range", "0-399999")
        .body(blob[..400_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    reg.stop().await;

    let reg = Registry::start_at(&root, None).await;
    let r = reg.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-399999");
    let r = reg
        .req(Method::PATCH, &loc)
        .header("content-range", "0-99")
        .body(blob[..100].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-range", format!("400000-{}", blob.len() - 1))
        .body(blob[400_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let got = reg
        .req(Method::GET, &format!("/v2/resume/blobs/{d}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), blob.as_slice());
    // Nothing left behind under uploads/.
    assert_eq!(
        std::fs::read_dir(reg.root.join("uploads")).unwrap().count(),
        0
    );
}

// --------------------------------------------------------- content discovery

#[tokio::test]
async fn content_discovery() {
    let reg = Registry::start().await;
    let repo = "conformance/discovery";
    let (md, _) = reg.push_image(repo, "base", b"layer").await;
    let m: Value = reg
        .req(Method::GET, &format!("/v2/{repo}/manifests/base"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut tags = vec!["base".to_string()];
    for t in ["a", "c", "b", "e", "d"] {
        let r = reg.put_manifest(repo, t, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        tags.push(t.to_string());
    }
    tags.sort();
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], repo);
    assert_eq!(v["tags"], json!(tags));

    // Pagination with n, last and Link.
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/tags/list?n=2"))
        .send()
        .await
        .unwrap();
    let link = header(&r, "link");
    assert_eq!(
        link,
        format!("</v2/{repo}/tags/list?n=2&last=b>; rel=\"next\"")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["a", "b"]));
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    let r = reg.req(Method::GET, &next).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["base", "c"]));
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/tags/list?n=10&last=c"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "link"), "");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["d", "e"]));
    let r = reg
        .req(Method::GET, "/v2/no/such/repo/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");

    // Catalog.
    reg.push_blob("zeta", b"z").await;
    let r = reg.req(Method::GET, "/v2/_catalog").send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!([repo, "zeta"]));
    let r = reg
        .req(Method::GET, "/v2/_catalog?n=1")
        .send()
        .await
        .unwrap();
    assert!(header(&r, "link").contains("last=conformance%2Fdiscovery"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!([repo]));
    let r = reg
        .req(
            Method::GET,
            &format!("/v2/_catalog?n=1&last={}", "conformance%2Fdiscovery"),
        )
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["zeta"]));

    // Referrers: two artifacts with a subject, filter by artifactType.
    let subject_size = serde_json::to_vec(&m).unwrap().len();
    let empty = reg.push_blob(repo, b"{}").await;
    let mut referrers = vec![];
    for (kind, payload) in [
        ("application/vnd.example.sbom", "sbom"),
        ("application/vnd.example.sig", "sig"),
    ] {
        let p = reg.push_blob(repo, payload.as_bytes()).await;
        let art = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": p.to_string(), "size": payload.len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": md.to_string(), "size": subject_size},
            "annotations": {"org.example.kind": payload}
        });
        let bytes = serde_json::to_vec(&art).unwrap();
        let ad = Digest::of(Algorithm::Sha256, &bytes);
        let r = reg
            .put_manifest(repo, &ad.to_string(), OCI_MANIFEST, &art)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject"), md.to_string());
        referrers.push(ad);
    }
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/referrers/{md}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert_eq!(header(&r, "oci-filters-applied"), "");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["mediaType"], OCI_INDEX);
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let mut got: Vec<&str> = list.iter().map(|d| d["digest"].as_str().unwrap()).collect();
    got.sort();
    let mut want: Vec<String> = referrers.iter().map(|d| d.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(list
        .iter()
        .all(|d| d["annotations"]["org.example.kind"].is_string()));
    let r = reg
        .req(
            Method::GET,
            &format!("/v2/{repo}/referrers/{md}?artifactType=application/vnd.example.sig"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
    assert_eq!(v["manifests"][0]["digest"], referrers[1].to_string());
    // No referrers: an empty index, not a 404.
    let other = Digest::of(Algorithm::Sha256, b"nothing refers to this");
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/referrers/{other}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], json!([]));
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/referrers/sha256:bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Deleting a referrer removes it from the list.
    let r = reg
        .req(
            Method::DELETE,
            &format!("/v2/{repo}/manifests/{}", referrers[0]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v: Value = reg
        .req(Method::GET, &format!("/v2/{repo}/referrers/{md}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
}

// -------------------------------------------------------- content management

#[tokio::test]
async fn content_management() {
    let reg = Registry::start().await;
    let repo = "conformance/management";
    let (md, _) = reg.push_image(repo, "keep", b"layer-keep").await;
    let m: Value = reg
        .req(Method::GET, &format!("/v2/{repo}/manifests/keep"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = reg.put_manifest(repo, "gone", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Delete a tag: the other tag and the manifest stay.
    let r = reg
        .req(Method::DELETE, &format!("/v2/{repo}/manifests/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/manifests/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/manifests/keep"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Delete the manifest by digest: its tags go with it.
    let r = reg
        .req(Method::DELETE, &format!("/v2/{repo}/manifests/{md}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for reference in ["keep".to_string(), md.to_string()] {
        let r = reg
            .req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let v: Value = reg
        .req(Method::GET, &format!("/v2/{repo}/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["tags"], json!([]));
    let r = reg
        .req(Method::DELETE, &format!("/v2/{repo}/manifests/{md}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");

    // Delete a blob.
    let ld = Digest::of(Algorithm::Sha256, b"layer-keep");
    let r = reg
        .req(Method::DELETE, &format!("/v2/{repo}/blobs/{ld}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .req(Method::GET, &format!("/v2/{repo}/blobs/{ld}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(Method::DELETE, &format!("/v2/{repo}/blobs/{ld}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");

    // gc with no grace period frees the unreferenced content.
    let report = shibafu_registry::gc(
        &reg.root,
        shibafu_registry::GcOptions {
            grace: std::time::Duration::ZERO,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.blobs_deleted.contains(&ld.to_string()), "{report:?}");
    assert!(report.blobs_deleted.contains(&md.to_string()), "{report:?}");
}

// --------------------------------------------------------------------- auth

fn htpasswd_file(dir: &Path) -> PathBuf {
    let hash = bcrypt::hash("s3cret", 4)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    let p = dir.join("htpasswd");
    std::fs::write(&p, format!("alice:{hash}\n")).unwrap();
    p
}

#[tokio::test]
async fn basic_and_bearer_auth() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start_at(&dir.path().join("root"), Some(htpasswd_file(dir.path()))).await;

    // Anonymous: a Bearer challenge pointing at /token.
    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let host = reg.base.trim_start_matches("http://").to_string();
    assert_eq!(
        header(&r, "www-authenticate"),
        format!("Bearer realm=\"http://{host}/token\",service=\"shibafu-registry\"")
    );
    let r = reg
        .req(Method::GET, "/v2/a/b/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").ends_with("scope=\"repository:a/b:pull\""));
    let r = reg
        .req(Method::POST, "/v2/a/b/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert!(header(&r, "www-authenticate").ends_with("scope=\"repository:a/b:pull,push\""));

    // Basic credentials work directly; wrong ones do not.
    let r = reg
        .req(Method::GET, "/v2/")
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg
        .req(Method::GET, "/v2/")
        .basic_auth("alice", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The token endpoint: anonymous and wrong passwords get a Basic challenge.
    let r = reg
        .req(
            Method::GET,
            "/token?service=shibafu-registry&scope=repository:a/b:pull,push",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").starts_with("Basic realm="));
    let r = reg
        .req(Method::GET, "/token?scope=repository:a/b:pull")
        .basic_auth("alice", Some("bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .req(
            Method::GET,
            "/token?service=shibafu-registry&scope=repository:a/b:pull,push",
        )
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(v["access_token"], v["token"]);
    assert!(v["expires_in"].as_i64().unwrap() > 0);

    // The token grants push on a/b, nothing on c.
    let data = b"token-pushed";
    let d = Digest::of(Algorithm::Sha256, data);
    let r = reg
        .req(Method::POST, &format!("/v2/a/b/blobs/uploads/?digest={d}"))
        .bearer_auth(&token)
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .req(Method::GET, &format!("/v2/a/b/blobs/{d}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg
        .req(Method::GET, "/v2/c/tags/list")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").contains("error=\"insufficient_scope\""));
    let r = reg
        .req(Method::DELETE, &format!("/v2/a/b/blobs/{d}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "delete needs the delete action"
    );
    let r = reg
        .req(Method::GET, "/v2/a/b/tags/list")
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .req(Method::GET, "/v2/_catalog")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // oauth2 POST: password grant with a refresh token, then refresh.
    let r = reg
        .req(Method::POST, "/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=alice&password=s3cret&service=shibafu-registry&client_id=test&access_type=offline&scope=registry:catalog:*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    let catalog_token = v["access_token"].as_str().unwrap().to_string();
    let r = reg
        .req(Method::GET, "/v2/_catalog")
        .bearer_auth(&catalog_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg
        .req(Method::POST, "/token")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", "shibafu-registry"),
            ("scope", "repository:a/b:delete"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let del_token = v["access_token"].as_str().unwrap();
    let r = reg
        .req(Method::DELETE, &format!("/v2/a/b/blobs/{d}"))
        .bearer_auth(del_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // A refresh token is not an access token, and bad passwords are refused.
    let r = reg
        .req(Method::GET, "/v2/")
        .bearer_auth(&refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .req(Method::POST, "/token")
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reg
        .req(Method::POST, "/token")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", catalog_token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------- TLS

#[tokio::test]
async fn tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    install_provider();
    let client = Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    let cfg = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        root: dir.path().join("root"),
        htpasswd: Some(htpasswd_file(dir.path())),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
    };
    let port_probe = shibafu_registry::bind(cfg.clone()).await.unwrap();
    let port = port_probe.local_addr().unwrap().port();
    drop(port_probe);
    let cfg = ServerConfig {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        ..cfg
    };
    let reg = Registry::start_cfg(cfg, client, "https").await;
    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate")
        .starts_with(&format!("Bearer realm=\"https://localhost:{port}/token\"")));
    let r = reg
        .req(Method::GET, "/v2/")
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Mismatched flags are refused before binding.
    let err = shibafu_registry::bind(ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        root: dir.path().join("root2"),
        htpasswd: None,
        tls_cert: Some(cert),
        tls_key: None,
    })
    .await
    .err()
    .unwrap();
    assert!(matches!(err, shibafu_registry::Error::TlsPair));
}
