//! Pull and push against a real registry (Debian's `docker-registry`,
//! distribution 2.8, on 127.0.0.1): push an imported image from one store,
//! pull it into another, check layers, digests, progress lines and the
//! "already there" paths; a pull cut half-way resumes from its ingest file.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use shibafu_api::{ImageBackend, ImportOptions, JsonMessage, PullOptions, PushOptions};

use super::*;

struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn registry() -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (apt docker-registry) must be installed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry {
        child,
        port,
        _dir: dir,
    }
}

fn tar_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

async fn import(s: &ImageStore, repo: &str, tar: Vec<u8>) -> String {
    let body: shibafu_api::BoxStream<std::io::Result<Bytes>> =
        Box::pin(futures::stream::iter(vec![Ok(Bytes::from(tar))]));
    s.image_import(
        ImportOptions {
            repo: Some(repo.to_string()),
            ..Default::default()
        },
        body,
    )
    .await
    .unwrap()
}

async fn collect(s: shibafu_api::BoxStream<JsonMessage>) -> Vec<JsonMessage> {
    s.collect().await
}

fn statuses(msgs: &[JsonMessage]) -> Vec<String> {
    msgs.iter().filter_map(|m| m.status.clone()).collect()
}

fn no_errors(msgs: &[JsonMessage]) {
    for m in msgs {
        assert!(m.error_detail.is_none(), "error in stream: {m:?}");
    }
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(&d.path().join("image")).unwrap();
    (d, s)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::fill(&mut v[..]);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_roundtrip() {
    let reg = registry();
    let name = format!("127.0.0.1:{}/test/app", reg.port);
    let (_da, a) = store();
    let tar = tar_of(&[
        ("hello.txt", b"hello from layer\n".to_vec()),
        ("noise.bin", random_bytes(300_000)),
    ]);
    let id = import(&a, &format!("{name}:v1"), tar).await;

    let msgs = collect(
        a.image_push(PushOptions {
            name: name.clone(),
            tag: Some("v1".into()),
            auth: None,
        })
        .await
        .unwrap(),
    )
    .await;
    no_errors(&msgs);
    let st = statuses(&msgs);
    assert_eq!(
        st[0],
        format!(
            "The push refers to repository [127.0.0.1:{}/test/app]",
            reg.port
        )
    );
    assert!(st.iter().any(|s| s == "Pushed"), "{st:?}");
    let aux = msgs.iter().find_map(|m| m.aux.clone()).expect("aux line");
    assert_eq!(aux["Tag"], "v1");
    let digest = aux["Digest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:"));
    // The pushed image now knows its repo digest.
    let insp = a.image_inspect(&format!("{name}:v1")).await.unwrap();
    assert_eq!(insp.repo_digests.unwrap(), vec![format!("{name}@{digest}")]);

    // A second push finds everything there.
    let msgs = collect(
        a.image_push(PushOptions {
            name: format!("{name}:v1"),
            tag: None,
            auth: None,
        })
        .await
        .unwrap(),
    )
    .await;
    no_errors(&msgs);
    assert!(statuses(&msgs).iter().any(|s| s == "Layer already exists"));

    // Pull into an empty store.
    let (db, b) = store();
    let msgs = collect(
        b.image_pull(PullOptions {
            reference: format!("{name}:v1"),
            ..Default::default()
        })
        .await
        .unwrap(),
    )
    .await;
    no_errors(&msgs);
    let st = statuses(&msgs);
    assert_eq!(st[0], "Pulling from test/app");
    assert!(st.contains(&"Pull complete".to_string()), "{st:?}");
    assert_eq!(st[st.len() - 2], format!("Digest: {digest}"));
    assert_eq!(
        st[st.len() - 1],
        format!("Status: Downloaded newer image for {name}:v1")
    );
    let r = b.resolve(&format!("{name}:v1")).unwrap();
    assert_eq!(r.id, id);
    assert_eq!(
        std::fs::read(r.layers[0].join("hello.txt")).unwrap(),
        b"hello from layer\n"
    );
    let insp = b.image_inspect(&format!("{name}:v1")).await.unwrap();
    assert_eq!(insp.repo_digests.unwrap(), vec![format!("{name}@{digest}")]);
    // The compressed blob is kept exactly as pulled.
    let blob_dir = db.path().join("image/blobs/sha256");
    let m = serde_json::from_slice::<crate::pull::ManifestJson>(
        &std::fs::read(blob_dir.join(digest.strip_prefix("sha256:").unwrap())).unwrap(),
    )
    .unwrap();
    for l in &m.layers {
        assert!(blob_dir
            .join(l.digest.strip_prefix("sha256:").unwrap())
            .is_file());
    }
    assert!(std::fs::read_dir(db.path().join("image/ingest"))
        .unwrap()
        .next()
        .is_none());

    // Pulling again changes nothing.
    let msgs = collect(
        b.image_pull(PullOptions {
            reference: format!("{name}:v1"),
            ..Default::default()
        })
        .await
        .unwrap(),
    )
    .await;
    no_errors(&msgs);
    let st = statuses(&msgs);
    assert!(st.contains(&"Already exists".to_string()));
    assert_eq!(
        st.last().unwrap(),
        &format!("Status: Image is up to date for {name}:v1")
    );

    // Errors before the stream: unknown tag and unknown repository.
    match b
        .image_pull(PullOptions {
            reference: format!("{name}:nosuch"),
            ..Default::default()
        })
        .await
    {
        Err(shibafu_api::ApiError::NotFound(m)) => {
            assert!(m.contains("manifest unknown"), "{m}")
        }
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(_) => panic!("an unknown tag pulled"),
    }
    match b
        .image_pull(PullOptions {
            reference: format!("127.0.0.1:{}/nosuch/repo", reg.port),
            ..Default::default()
        })
        .await
    {
        Err(shibafu_api::ApiError::NotFound(m)) => {
            assert!(
                m.contains("repository does not exist") || m.contains("not found"),
                "{m}"
            )
        }
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(_) => panic!("an unknown repository pulled"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_pull_resumes_from_its_ingest_file() {
    let reg = registry();
    let name = format!("127.0.0.1:{}/test/big", reg.port);
    let (_da, a) = store();
    let tar = tar_of(&[("big.bin", random_bytes(4_000_000))]);
    let id = import(&a, &format!("{name}:v1"), tar).await;
    let msgs = collect(
        a.image_push(PushOptions {
            name: format!("{name}:v1"),
            tag: None,
            auth: None,
        })
        .await
        .unwrap(),
    )
    .await;
    no_errors(&msgs);
    let manifest_digest = msgs.iter().find_map(|m| m.aux.clone()).unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (db, b) = store();
    let root = db.path().join("image");
    // As a pull cut by a crash leaves it: the first half of the layer blob
    // in ingest/.
    let m: crate::pull::ManifestJson = serde_json::from_slice(
        &std::fs::read(
            a.inner
                .blob_path(manifest_digest.strip_prefix("sha256:").unwrap()),
        )
        .unwrap(),
    )
    .unwrap();
    let layer_hex = m.layers[0]
        .digest
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let full = std::fs::read(a.inner.blob_path(&layer_hex)).unwrap();
    let half = &full[..full.len() / 2];
    std::fs::File::create(root.join("ingest").join(&layer_hex))
        .unwrap()
        .write_all(half)
        .unwrap();
    let msgs = collect(
        b.image_pull(PullOptions {
            reference: format!("{name}:v1"),
            ..Default::default()
        })
        .await
        .unwrap(),
    )
    .await;
    no_errors(&msgs);
    assert_eq!(b.resolve(&format!("{name}:v1")).unwrap().id, id);
    assert_eq!(std::fs::read(b.inner.blob_path(&layer_hex)).unwrap(), full);
    // A corrupt partial file is not trusted blindly: the digest check fails,
    // the file is dropped, and the next pull fetches it all.
    let (dc, c) = store();
    let mut bad = half.to_vec();
    bad[100] ^= 0xff;
    std::fs::write(dc.path().join("image/ingest").join(&layer_hex), &bad).unwrap();
    let msgs = collect(
        c.image_pull(PullOptions {
            reference: format!("{name}:v1"),
            ..Default::default()
        })
        .await
        .unwrap(),
    )
    .await;
    assert!(
        msgs.iter().any(|m| m.error_detail.is_some()),
        "a corrupt resume succeeded"
    );
    assert!(c.resolve(&format!("{name}:v1")).is_err());
    let msgs = collect(
        c.image_pull(PullOptions {
            reference: format!("{name}:v1"),
            ..Default::default()
        })
        .await
        .unwrap(),
    )
    .await;
    no_errors(&msgs);
    assert_eq!(c.resolve(&format!("{name}:v1")).unwrap().id, id);
    let _ = Path::new("");
}
