//! Against real distribution 2.8 registries: push (monolithic, chunked,
//! mount), pull (manifests by tag and digest, blobs whole and ranged),
//! basic auth, error texts, mirrors.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::{digest, manifest, noise, write_blob, Registry};
use futures::StreamExt;
use shibafu_distribution::{media, Client, ClientConfig, Credentials, Error, Progress, RepoName};

const ANON: Credentials = Credentials::Anonymous;

fn client() -> Client {
    Client::new(ClientConfig::default()).unwrap()
}

fn repo(reg: &Registry, path: &str) -> RepoName {
    RepoName::parse(&format!("{}/{path}", reg.domain())).unwrap()
}

fn no_progress() -> Progress {
    Arc::new(|_| {})
}

async fn collect(c: &Client, r: &RepoName, d: &str, off: u64) -> (u64, Option<u64>, Vec<u8>) {
    let b = c.get_blob(r, d, off, &ANON).await.unwrap();
    let mut out = Vec::new();
    let mut s = b.stream;
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    (b.offset, b.total, out)
}

/// Pushes a config and one layer and a manifest tagged `tag`; returns the
/// manifest bytes and digest.
async fn push_image(
    c: &Client,
    r: &RepoName,
    tag: &str,
    seed: u64,
    creds: &Credentials,
) -> (Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config =
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}").into_bytes();
    let layer = noise(100_000, seed);
    for blob in [&config, &layer] {
        let p = write_blob(dir.path(), blob);
        c.push_blob_file(
            r,
            &digest(blob),
            &p,
            blob.len() as u64,
            creds,
            no_progress(),
        )
        .await
        .unwrap();
    }
    let m = manifest(&config, &[&layer]);
    let d = c
        .put_manifest(
            r,
            tag,
            media::DOCKER_MANIFEST,
            Bytes::from(m.clone()),
            creds,
        )
        .await
        .unwrap();
    assert_eq!(d, digest(&m));
    (m, d)
}

#[tokio::test]
async fn push_and_pull_round_trip() {
    let reg = Registry::start();
    let c = client();
    let r = repo(&reg, "team/app");
    let dir = tempfile::tempdir().unwrap();

    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let small = noise(10_000, 1);
    let big = noise(300_000, 2);
    let (cd, sd, bd) = (digest(&config), digest(&small), digest(&big));
    assert_eq!(c.blob_exists(&r, &sd, &ANON).await.unwrap(), None);

    // Monolithic (below the chunk size) and chunked (64 KiB chunks: 5 PATCHes).
    c.set_chunk_size(64 << 10);
    for blob in [&config, &small, &big] {
        let p = write_blob(dir.path(), blob);
        let seen = Arc::new(AtomicU64::new(0));
        let s2 = seen.clone();
        let progress: Progress = Arc::new(move |n| {
            assert!(n >= s2.load(Ordering::SeqCst), "progress goes forward");
            s2.store(n, Ordering::SeqCst);
        });
        c.push_blob_file(&r, &digest(blob), &p, blob.len() as u64, &ANON, progress)
            .await
            .unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), blob.len() as u64);
    }
    assert_eq!(c.blob_exists(&r, &sd, &ANON).await.unwrap(), Some(10_000));
    assert_eq!(c.blob_exists(&r, &bd, &ANON).await.unwrap(), Some(300_000));

    let m = manifest(&config, &[&small, &big]);
    let md = c
        .put_manifest(
            &r,
            "v1",
            media::DOCKER_MANIFEST,
            Bytes::from(m.clone()),
            &ANON,
        )
        .await
        .unwrap();
    assert_eq!(md, digest(&m));

    for reference in ["v1", md.as_str()] {
        let got = c.get_manifest(&r, reference, &ANON).await.unwrap();
        assert_eq!(&got.bytes[..], &m[..]);
        assert_eq!(got.digest, md);
        assert_eq!(got.media_type, media::DOCKER_MANIFEST);
    }

    // Whole blobs and from an offset (206 honoured).
    let (off, total, bytes) = collect(&c, &r, &bd, 0).await;
    assert_eq!((off, total), (0, Some(300_000)));
    assert!(bytes == big);
    let (off, total, bytes) = collect(&c, &r, &bd, 123_456).await;
    assert_eq!((off, total), (123_456, Some(300_000)));
    assert!(bytes[..] == big[123_456..]);
    assert_eq!(c.get_blob_bytes(&r, &cd, &ANON).await.unwrap(), config);

    // A pushed blob already there is pushed again without harm.
    let p = write_blob(dir.path(), &big);
    c.push_blob_file(&r, &bd, &p, big.len() as u64, &ANON, no_progress())
        .await
        .unwrap();

    // A wrong digest is refused by the registry and reported.
    let err = c
        .push_blob_file(&r, &sd, &p, big.len() as u64, &ANON, no_progress())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("digest invalid"), "{err}");
}

#[tokio::test]
async fn mounts_across_repositories() {
    let reg = Registry::start();
    let c = client();
    let a = repo(&reg, "a");
    let b = repo(&reg, "b/c");
    let dir = tempfile::tempdir().unwrap();
    let blob = noise(5000, 7);
    let d = digest(&blob);
    let p = write_blob(dir.path(), &blob);
    c.push_blob_file(&a, &d, &p, 5000, &ANON, no_progress())
        .await
        .unwrap();
    assert_eq!(c.blob_exists(&b, &d, &ANON).await.unwrap(), None);
    assert!(c.mount_blob(&b, &d, &a, &ANON).await.unwrap());
    assert_eq!(c.blob_exists(&b, &d, &ANON).await.unwrap(), Some(5000));
    // Not there to mount: false, and no upload left open.
    let other = digest(b"nothing");
    assert!(!c.mount_blob(&b, &other, &a, &ANON).await.unwrap());
    // Another registry: never mounted.
    let elsewhere = RepoName::parse("127.0.0.2:1/a").unwrap();
    assert!(!c.mount_blob(&b, &d, &elsewhere, &ANON).await.unwrap());
}

#[tokio::test]
async fn unknown_things_are_named() {
    let reg = Registry::start();
    let c = client();
    let r = repo(&reg, "nothing/here");
    let err = c.get_manifest(&r, "latest", &ANON).await.unwrap_err();
    assert_eq!(err.to_string(), "manifest unknown: manifest unknown");
    assert!(matches!(err, Error::NotFound { code: Some(ref c), .. } if c == "MANIFEST_UNKNOWN"));

    push_image(&c, &r, "v1", 3, &ANON).await;
    let err = c.get_manifest(&r, "v2", &ANON).await.unwrap_err();
    assert_eq!(err.to_string(), "manifest unknown: manifest unknown");
    let missing = digest(b"missing");
    let err = c.get_blob(&r, &missing, 0, &ANON).await.err().unwrap();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "blob unknown: blob unknown to registry");
    let err = c.get_manifest(&r, "Bad/Tag", &ANON).await.unwrap_err();
    assert!(matches!(err, Error::InvalidName(_)));
}

#[tokio::test]
async fn unreachable_registry_reads_like_go() {
    let port = common::free_port();
    let c = client();
    let r = RepoName::parse(&format!("127.0.0.1:{port}/x")).unwrap();
    let err = c.get_manifest(&r, "latest", &ANON).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "Get \"http://127.0.0.1:{port}/v2/\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        )
    );
    let err = c
        .login(&format!("127.0.0.1:{port}"), &ANON)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection refused"), "{err}");
}

#[tokio::test]
async fn basic_auth_with_htpasswd() {
    let reg = Registry::start_htpasswd("user", "pass");
    let c = client();
    let r = repo(&reg, "private");
    let good = Credentials::Basic {
        username: "user".into(),
        password: "pass".into(),
    };
    let bad = Credentials::Basic {
        username: "user".into(),
        password: "wrong".into(),
    };
    assert_eq!(c.login(&reg.domain(), &good).await.unwrap(), None);
    let err = c.login(&reg.domain(), &bad).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "login attempt to {}/v2/ failed with status: 401 Unauthorized",
            reg.url()
        )
    );

    let (m, d) = push_image(&c, &r, "latest", 4, &good).await;
    let got = c.get_manifest(&r, "latest", &good).await.unwrap();
    assert_eq!((&got.bytes[..], got.digest.as_str()), (&m[..], d.as_str()));

    for creds in [&bad, &ANON] {
        let err = c.get_manifest(&r, "latest", creds).await.unwrap_err();
        assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
        assert_eq!(err.to_string(), "unauthorized: authentication required");
        let err = c.blob_exists(&r, &d, creds).await.unwrap_err();
        assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
    }
    // The good credentials still work after the failures (nothing cached wrong).
    c.get_manifest(&r, &d, &good).await.unwrap();
}

#[tokio::test]
async fn docker_io_mirrors() {
    let hub = Registry::start();
    let mirror = Registry::start();
    let c = client();
    c.set_docker_hub(&hub.url());
    // Seed both with different images under the same docker.io name.
    let on_hub = repo(&hub, "library/app");
    let on_mirror = repo(&mirror, "library/app");
    let (_, hub_digest) = push_image(&c, &on_hub, "latest", 10, &ANON).await;
    let (_, mirror_digest) = push_image(&c, &on_mirror, "latest", 11, &ANON).await;
    push_image(&c, &on_hub, "only-on-hub", 12, &ANON).await;
    let app = RepoName::parse("app").unwrap();
    assert_eq!(app.familiar(), "app");

    // No mirror: the hub.
    assert_eq!(
        c.get_manifest(&app, "latest", &ANON).await.unwrap().digest,
        hub_digest
    );

    // Mirror down, then a live one: served by the live mirror.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    c.reconfigure(ClientConfig {
        mirrors: vec![dead.clone(), mirror.url()],
        ..Default::default()
    });
    assert_eq!(
        c.get_manifest(&app, "latest", &ANON).await.unwrap().digest,
        mirror_digest
    );
    // Not on the mirror (404): the hub.
    c.get_manifest(&app, "only-on-hub", &ANON).await.unwrap();

    // Only a dead mirror: the hub, for manifests and blobs.
    c.reconfigure(ClientConfig {
        mirrors: vec![dead],
        ..Default::default()
    });
    let m = c.get_manifest(&app, "latest", &ANON).await.unwrap();
    assert_eq!(m.digest, hub_digest);
    let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
    let config = v["config"]["digest"].as_str().unwrap();
    c.get_blob_bytes(&app, config, &ANON).await.unwrap();

    // Pushes go to the hub, never to a mirror.
    c.reconfigure(ClientConfig {
        mirrors: vec![mirror.url()],
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let blob = noise(1000, 99);
    let d = digest(&blob);
    let p = write_blob(dir.path(), &blob);
    c.push_blob_file(&app, &d, &p, 1000, &ANON, no_progress())
        .await
        .unwrap();
    assert_eq!(c.blob_exists(&on_hub, &d, &ANON).await.unwrap(), Some(1000));
    assert_eq!(c.blob_exists(&on_mirror, &d, &ANON).await.unwrap(), None);
}

#[tokio::test]
async fn loopback_registry_serving_tls() {
    let reg = Registry::start_tls();
    let c = client();
    let r = RepoName::parse(&format!("localhost:{}/tls/app", reg.port)).unwrap();
    let (m, d) = push_image(&c, &r, "latest", 21, &ANON).await;
    let got = c.get_manifest(&r, "latest", &ANON).await.unwrap();
    assert_eq!((&got.bytes[..], got.digest.as_str()), (&m[..], d.as_str()));
}
