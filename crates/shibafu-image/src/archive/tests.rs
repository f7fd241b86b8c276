//! save/load: the archive layout Docker 25+ writes, round trips (the bytes
//! of a second save equal the first), Docker ≤ 24 and plain OCI archives
//! (plain, gzip, zstd), several images per archive, and bad archives that
//! must leave the store exactly as it was.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Read, Write};
use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use shibafu_api::{ApiError, JsonMessage};

use crate::content::{BlobSink, LayerExpect, NewImage, WorkDir};
use crate::pull::Platform;
use crate::ImageStore;

// ---- building blocks ----

fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
        }
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

fn sha(data: &[u8]) -> String {
    crate::sha256_hex(data)
}

/// An archive entry of a hand-made archive.
enum E<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
    Fifo,
}

fn archive_of(entries: &[(&str, E<'_>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, e) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_mode(0o644);
        match e {
            E::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
            E::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
            E::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
            E::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Entries of an archive: (path, mtime, data).
fn read_archive(data: &[u8]) -> Vec<(String, u64, Vec<u8>)> {
    let mut a = tar::Archive::new(data);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mtime = e.header().mtime().unwrap();
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            (path, mtime, v)
        })
        .collect()
}

fn file<'a>(entries: &'a [(String, u64, Vec<u8>)], path: &str) -> &'a [u8] {
    &entries
        .iter()
        .find(|(p, _, _)| p == path)
        .unwrap_or_else(|| panic!("{path} missing"))
        .2
}

fn new_store() -> (tempfile::TempDir, ImageStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(&d.path().join("image")).unwrap();
    (d, s)
}

fn host_arch() -> String {
    Platform::host().arch
}

fn config_json(diff_ids: &[String], arch: &str, marker: &str) -> Vec<u8> {
    let v = json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [format!("MARKER={marker}")]},
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>(),
        },
        "history": [],
    });
    serde_json::to_vec(&v).unwrap()
}

/// Stores `blobs` as layers and commits an image of them; returns its ID
/// and the layers' (diff ID, blob digest).
fn add_image(
    s: &ImageStore,
    blobs: &[Vec<u8>],
    tags: &[&str],
    marker: &str,
    manifests: Vec<Vec<u8>>,
) -> (String, Vec<(String, String)>) {
    let inner = &s.inner;
    let mut layers = Vec::new();
    for b in blobs {
        let work = WorkDir::new(inner, "test").unwrap();
        let u = inner
            .unpack_layer(
                &mut Cursor::new(b.clone()),
                BlobSink::Append {
                    path: work.0.join("blob"),
                    skip: 0,
                },
                &LayerExpect::default(),
                &work.0,
                &|_| {},
            )
            .unwrap();
        let blob = u.blob.digest.clone();
        let rec = inner.place_layer(u).unwrap();
        layers.push((rec.diff_id, blob));
    }
    let diffs: Vec<String> = layers.iter().map(|(d, _)| d.clone()).collect();
    let id = inner
        .commit_image(NewImage {
            config: config_json(&diffs, &host_arch(), marker),
            layers: diffs,
            manifests,
            repo_digest: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        })
        .unwrap();
    (id, layers)
}

/// Three layers, one of each compression.
fn three_layers() -> Vec<Vec<u8>> {
    vec![
        gzip(&layer_tar(&[("bin/", b""), ("bin/sh", b"#!fake shell\n")])),
        layer_tar(&[("etc/", b""), ("etc/hostname", b"box\n")]),
        zstd(&layer_tar(&[("srv/", b""), ("srv/data", &[7u8; 3000])])),
    ]
}

async fn save_bytes(s: &ImageStore, names: &[&str]) -> Vec<u8> {
    let mut stream = super::save(s, names.iter().map(|n| n.to_string()).collect())
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

async fn load_msgs(s: &ImageStore, data: Vec<u8>, quiet: bool) -> Vec<JsonMessage> {
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let body = Box::pin(futures::stream::iter(chunks));
    super::load(s, body, quiet).await.unwrap().collect().await
}

fn streams(msgs: &[JsonMessage]) -> Vec<String> {
    msgs.iter().filter_map(|m| m.stream.clone()).collect()
}

fn error_of(msgs: &[JsonMessage]) -> String {
    msgs.iter()
        .find_map(|m| m.error_detail.as_ref().map(|e| e.message.clone()))
        .unwrap_or_else(|| panic!("no error in {msgs:?}"))
}

fn no_error(msgs: &[JsonMessage]) {
    assert!(
        msgs.iter().all(|m| m.error_detail.is_none()),
        "unexpected error: {msgs:?}"
    );
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Everything a failed load must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    images: Vec<String>,
    tags: BTreeMap<String, String>,
    layers: Vec<String>,
    blob_files: Vec<String>,
    layer_dirs: Vec<String>,
    tmp: Vec<String>,
}

fn snapshot(s: &ImageStore) -> Snapshot {
    let root = &s.inner.root;
    let st = s.inner.state.read();
    Snapshot {
        images: st.images.keys().cloned().collect(),
        tags: st.tags.clone(),
        layers: st.layers.keys().cloned().collect(),
        blob_files: names(&root.join("blobs/sha256")),
        layer_dirs: names(&root.join("layers")),
        tmp: names(&root.join("tmp")),
    }
}

fn layer_file(s: &ImageStore, diff: &str, path: &str) -> Vec<u8> {
    fs::read(s.inner.layer_diff(diff).join(path)).unwrap()
}

// ---- save ----

#[tokio::test]
async fn save_writes_docker25_layout() {
    let (_d, s) = new_store();
    let (id, layers) = add_image(&s, &three_layers(), &["busybox:latest"], "a", vec![]);
    let data = save_bytes(&s, &["busybox"]).await;
    let entries = read_archive(&data);
    let paths: Vec<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();

    // Blobs first and sorted, then the JSON files in name order.
    // The zstd layer goes out uncompressed, named by its diff ID.
    let layer_hexes = [
        layers[0].1.clone(),
        layers[1].1.clone(),
        layers[2].0.clone(),
    ];
    let mut blob_hexes = layer_hexes.to_vec();
    blob_hexes.push(id.clone());
    let manifest_json: Value = serde_json::from_slice(file(&entries, "manifest.json")).unwrap();
    let index: Value = serde_json::from_slice(file(&entries, "index.json")).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    blob_hexes.push(manifest_digest.strip_prefix("sha256:").unwrap().to_string());
    blob_hexes.sort();
    let mut want = vec!["blobs/".to_string(), "blobs/sha256/".to_string()];
    want.extend(blob_hexes.iter().map(|h| format!("blobs/sha256/{h}")));
    want.extend(["index.json", "manifest.json", "oci-layout", "repositories"].map(String::from));
    assert_eq!(paths, want);
    assert!(entries.iter().all(|(_, mtime, _)| *mtime == 0));
    for (p, _, data) in &entries {
        if let Some(hex) = p.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(sha(data), hex, "{p} holds what its name says");
        }
    }

    // index.json: one entry, fully qualified name and tag.
    assert_eq!(index["mediaType"], crate::media::OCI_INDEX);
    let entry = &index["manifests"][0];
    assert_eq!(entry["mediaType"], crate::media::OCI_MANIFEST);
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        "docker.io/library/busybox:latest"
    );
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    assert_eq!(entry["platform"]["os"], "linux");
    assert_eq!(entry["platform"]["architecture"], host_arch().as_str());

    // The manifest: the config and each layer's stored blob.
    let m: Value = serde_json::from_slice(file(
        &entries,
        &format!(
            "blobs/sha256/{}",
            manifest_digest.strip_prefix("sha256:").unwrap()
        ),
    ))
    .unwrap();
    assert_eq!(m["config"]["digest"], format!("sha256:{id}"));
    let media: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        media,
        [
            crate::media::OCI_LAYER_GZIP,
            crate::media::OCI_LAYER_TAR,
            crate::media::OCI_LAYER_TAR
        ]
    );

    // manifest.json and repositories, as the legacy loaders read them.
    assert_eq!(
        manifest_json,
        json!([{
            "Config": format!("blobs/sha256/{id}"),
            "RepoTags": ["busybox:latest"],
            "Layers": layer_hexes.iter().map(|h| format!("blobs/sha256/{h}")).collect::<Vec<_>>(),
        }])
    );
    let repos: Value = serde_json::from_slice(file(&entries, "repositories")).unwrap();
    assert_eq!(repos, json!({"busybox": {"latest": layers[2].0}}));
    assert_eq!(
        file(&entries, "oci-layout"),
        br#"{"imageLayoutVersion": "1.0.0"}"#
    );
}

#[tokio::test]
async fn save_load_round_trip_keeps_every_digest() {
    let (_d1, s1) = new_store();
    let (id, layers) = add_image(&s1, &three_layers(), &["busybox:latest"], "a", vec![]);
    let first = save_bytes(&s1, &["busybox:latest"]).await;

    let (_d2, s2) = new_store();
    let msgs = load_msgs(&s2, first.clone(), false).await;
    no_error(&msgs);
    assert_eq!(streams(&msgs), ["Loaded image: busybox:latest\n"]);
    let loading: Vec<&JsonMessage> = msgs
        .iter()
        .filter(|m| m.status.as_deref() == Some("Loading layer"))
        .collect();
    assert!(!loading.is_empty());
    for m in &loading {
        let id12 = m.id.as_deref().unwrap();
        assert_eq!(id12.len(), 12);
        assert!(layers.iter().any(|(d, _)| d.starts_with(id12)));
        let p = m.progress_detail.as_ref().unwrap();
        assert!(p.current.is_some() && p.total.is_some());
    }

    let r = s2.resolve("busybox:latest").unwrap();
    assert_eq!(r.id, format!("sha256:{id}"));
    assert_eq!(r.layers.len(), 3);
    assert_eq!(layer_file(&s2, &layers[0].0, "bin/sh"), b"#!fake shell\n");
    assert_eq!(layer_file(&s2, &layers[2].0, "srv/data"), vec![7u8; 3000]);
    // The gzip blob went over as it was, the zstd one uncompressed.
    let blobs = names(&s2.inner.root.join("blobs/sha256"));
    for b in [&layers[0].1, &layers[1].1, &layers[2].0] {
        assert!(blobs.contains(b));
    }
    assert!(names(&s2.inner.root.join("tmp")).is_empty());

    // The manifest was kept: the second save is the same archive.
    let second = save_bytes(&s2, &["busybox:latest"]).await;
    assert_eq!(first, second);
}

#[tokio::test]
async fn save_writes_a_pulled_manifest_byte_for_byte() {
    let (_d, s) = new_store();
    let blobs = three_layers()[..2].to_vec();
    let media = [
        crate::media::DOCKER_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar",
    ];
    // First store the layers to learn their digests, then the image with a
    // Docker v2 manifest as a registry would have served it.
    let (_, layers) = add_image(&s, &blobs, &[], "p", vec![]);
    let diffs: Vec<String> = layers.iter().map(|(d, _)| d.clone()).collect();
    let config = config_json(&diffs, &host_arch(), "pulled");
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": crate::media::DOCKER_MANIFEST,
        "config": {"mediaType": crate::media::DOCKER_CONFIG, "size": config.len(), "digest": format!("sha256:{}", sha(&config))},
        "layers": layers.iter().zip(&blobs).zip(media).map(|(((_, b), bytes), m)| json!({
            "mediaType": m, "size": bytes.len(), "digest": format!("sha256:{b}")
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let id = s
        .inner
        .commit_image(NewImage {
            config: config.clone(),
            layers: diffs,
            manifests: vec![manifest.clone()],
            repo_digest: Some(format!("localhost:5000/app@sha256:{}", sha(&manifest))),
            tags: vec!["localhost:5000/app:1".into()],
        })
        .unwrap();
    let data = save_bytes(&s, &["localhost:5000/app:1"]).await;
    let entries = read_archive(&data);
    assert_eq!(
        file(&entries, &format!("blobs/sha256/{}", sha(&manifest))),
        &manifest[..]
    );
    let index: Value = serde_json::from_slice(file(&entries, "index.json")).unwrap();
    let e = &index["manifests"][0];
    assert_eq!(e["digest"], format!("sha256:{}", sha(&manifest)));
    assert_eq!(e["mediaType"], crate::media::DOCKER_MANIFEST);
    assert_eq!(
        e["annotations"]["io.containerd.image.name"],
        "localhost:5000/app:1"
    );
    assert_eq!(e["annotations"]["org.opencontainers.image.ref.name"], "1");

    let (_d2, s2) = new_store();
    no_error(&load_msgs(&s2, data.clone(), true).await);
    assert_eq!(
        s2.resolve("localhost:5000/app:1").unwrap().id,
        format!("sha256:{id}")
    );
    assert_eq!(save_bytes(&s2, &["localhost:5000/app:1"]).await, data);
}

#[tokio::test]
async fn save_writes_zstd_layers_uncompressed() {
    let (_d, s) = new_store();
    let blobs = vec![zstd(&layer_tar(&[("z", b"zstd layer\n")]))];
    let (_, layers) = add_image(&s, &blobs, &[], "z", vec![]);
    let diffs = vec![layers[0].0.clone()];
    let config = config_json(&diffs, &host_arch(), "zpulled");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": crate::media::OCI_MANIFEST,
        "config": {"mediaType": crate::media::OCI_CONFIG, "size": config.len(), "digest": format!("sha256:{}", sha(&config))},
        "layers": [{"mediaType": crate::media::OCI_LAYER_ZSTD, "size": blobs[0].len(), "digest": format!("sha256:{}", layers[0].1)}],
    }))
    .unwrap();
    s.inner
        .commit_image(NewImage {
            config,
            layers: diffs.clone(),
            manifests: vec![manifest.clone()],
            repo_digest: None,
            tags: vec!["z:1".into()],
        })
        .unwrap();
    let data = save_bytes(&s, &["z:1"]).await;
    let entries = read_archive(&data);
    // dockerd < 23 cannot decompress zstd: the plain tar, under its diff ID.
    let layer = file(&entries, &format!("blobs/sha256/{}", diffs[0]));
    assert_eq!(sha(layer), diffs[0]);
    assert!(!entries.iter().any(|(p, _, _)| p.ends_with(&layers[0].1)));
    assert!(!entries.iter().any(|(p, _, _)| p.ends_with(&sha(&manifest))));
    let mj: Value = serde_json::from_slice(file(&entries, "manifest.json")).unwrap();
    assert_eq!(
        mj[0]["Layers"],
        json!([format!("blobs/sha256/{}", diffs[0])])
    );
    let (_d2, s2) = new_store();
    no_error(&load_msgs(&s2, data, true).await);
    assert_eq!(layer_file(&s2, &diffs[0], "z"), b"zstd layer\n");
}

#[tokio::test]
async fn save_several_names_and_ids() {
    let (_d, s) = new_store();
    let blobs = three_layers();
    let (a, _) = add_image(&s, &blobs, &["app:1", "app:2"], "a", vec![]);
    let (b, _) = add_image(&s, &blobs[..2], &[], "b", vec![]);
    // `app` is every tag of app; the same image twice is one set of blobs.
    let data = save_bytes(&s, &["app", "app:1", &b[..12]]).await;
    let entries = read_archive(&data);
    let paths: Vec<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();
    let mut dedup = paths.clone();
    dedup.dedup();
    assert_eq!(paths, dedup, "each blob once");
    // 3 layer blobs, 2 configs, 2 manifests.
    assert_eq!(paths.iter().filter(|p| p.len() == 77).count(), 7);
    let mj: Value = serde_json::from_slice(file(&entries, "manifest.json")).unwrap();
    assert_eq!(mj[0]["Config"], format!("blobs/sha256/{a}"));
    assert_eq!(mj[0]["RepoTags"], json!(["app:1", "app:2"]));
    assert_eq!(mj[1]["Config"], format!("blobs/sha256/{b}"));
    assert_eq!(mj[1]["RepoTags"], Value::Null);
    let index: Value = serde_json::from_slice(file(&entries, "index.json")).unwrap();
    let refs: Vec<Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["annotations"]["org.opencontainers.image.ref.name"].clone())
        .collect();
    assert_eq!(refs, [json!("1"), json!("2"), Value::Null]);

    let (_d2, s2) = new_store();
    let msgs = load_msgs(&s2, data, true).await;
    no_error(&msgs);
    assert_eq!(
        streams(&msgs),
        [
            "Loaded image: app:1\n".to_string(),
            "Loaded image: app:2\n".to_string(),
            format!("Loaded image ID: sha256:{b}\n"),
        ]
    );
    assert_eq!(s2.count(), 2);
    assert_eq!(s2.inner.state.read().layers.len(), 3);
}

#[tokio::test]
async fn save_of_an_unknown_name_fails_before_any_byte() {
    let (_d, s) = new_store();
    add_image(&s, &three_layers(), &["busybox:latest"], "a", vec![]);
    match super::save(&s, vec!["busybox".into(), "nope:1".into()]).await {
        Err(ApiError::NotFound(m)) => assert!(m.contains("nope:1"), "{m}"),
        Err(e) => panic!("expected NotFound, got {e:?}"),
        Ok(_) => panic!("expected NotFound, got a stream"),
    }
}

// ---- load of hand-made archives ----

/// A Docker ≤ 24 archive of two images sharing their first layer (the
/// second links to the first's layer.tar, as Docker writes it).
fn docker24_archive(arch: &str) -> (Vec<u8>, [String; 2], [String; 2]) {
    let base = layer_tar(&[("bin/", b""), ("bin/sh", b"old shell\n")]);
    let top = layer_tar(&[("etc/", b""), ("etc/motd", b"hello\n")]);
    let (d_base, d_top) = (sha(&base), sha(&top));
    let c1 = config_json(std::slice::from_ref(&d_base), arch, "one");
    let c2 = config_json(&[d_base.clone(), d_top.clone()], arch, "two");
    let (id1, id2) = (sha(&c1), sha(&c2));
    let (v1a, v1b, v1c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let manifest = serde_json::to_vec(&json!([
        {"Config": format!("{id1}.json"), "RepoTags": ["one:1"], "Layers": [format!("{v1a}/layer.tar")]},
        {"Config": format!("{id2}.json"), "RepoTags": ["two:latest", "docker.io/library/two:alias"],
         "Layers": [format!("{v1b}/layer.tar"), format!("{v1c}/layer.tar")]},
    ]))
    .unwrap();
    let repos = serde_json::to_vec(&json!({"one": {"1": v1a}})).unwrap();
    let (c1n, c2n) = (format!("{id1}.json"), format!("{id2}.json"));
    let la = format!("{v1a}/layer.tar");
    let lb = format!("{v1b}/layer.tar");
    let lc = format!("{v1c}/layer.tar");
    let link = format!("../{v1a}/layer.tar");
    let dirs = [format!("{v1a}/"), format!("{v1b}/"), format!("{v1c}/")];
    let vers = [
        format!("{v1a}/VERSION"),
        format!("{v1b}/VERSION"),
        format!("{v1c}/VERSION"),
    ];
    let data = archive_of(&[
        (&dirs[0], E::Dir),
        (&vers[0], E::File(b"1.0")),
        (&format!("{v1a}/json"), E::File(b"{}")),
        (&la, E::File(&base)),
        (&dirs[1], E::Dir),
        (&vers[1], E::File(b"1.0")),
        (&lb, E::Symlink(&link)),
        (&dirs[2], E::Dir),
        (&lc, E::File(&top)),
        (&c1n, E::File(&c1)),
        (&c2n, E::File(&c2)),
        ("manifest.json", E::File(&manifest)),
        ("repositories", E::File(&repos)),
    ]);
    (data, [id1, id2], [d_base, d_top])
}

#[tokio::test]
async fn load_docker24_archive_plain_gzip_and_zstd() {
    let (plain, [id1, id2], [d_base, d_top]) = docker24_archive(&host_arch());
    for data in [plain.clone(), gzip(&plain), zstd(&plain)] {
        let (_d, s) = new_store();
        let msgs = load_msgs(&s, data, false).await;
        no_error(&msgs);
        assert_eq!(
            streams(&msgs),
            [
                "Loaded image: one:1\n",
                "Loaded image: two:latest\n",
                "Loaded image: two:alias\n"
            ]
        );
        assert_eq!(s.resolve("one:1").unwrap().id, format!("sha256:{id1}"));
        assert_eq!(s.resolve("two:alias").unwrap().id, format!("sha256:{id2}"));
        // The shared layer is stored once.
        let layers: Vec<String> = s.inner.state.read().layers.keys().cloned().collect();
        let mut want = vec![d_base.clone(), d_top.clone()];
        want.sort();
        assert_eq!(layers, want);
        assert_eq!(layer_file(&s, &d_base, "bin/sh"), b"old shell\n");
        assert_eq!(layer_file(&s, &d_top, "etc/motd"), b"hello\n");
        assert!(names(&s.inner.root.join("tmp")).is_empty());
    }
}

/// A skopeo-style OCI layout: index.json → a multi-platform index → the
/// host's manifest (and another platform's that must not be loaded).
fn oci_archive(annotations: Value) -> (Vec<u8>, String, String) {
    let layer = zstd(&layer_tar(&[("hello", b"oci world\n")]));
    let diff = sha(&layer_tar(&[("hello", b"oci world\n")]));
    let other_layer = gzip(&layer_tar(&[("hello", b"other arch\n")]));
    let other_diff = sha(&layer_tar(&[("hello", b"other arch\n")]));
    let other_arch = if host_arch() == "s390x" {
        "amd64"
    } else {
        "s390x"
    };
    let config = config_json(std::slice::from_ref(&diff), &host_arch(), "oci");
    let other_config = config_json(&[other_diff], other_arch, "other");
    let manifest_of = |config: &[u8], layer: &[u8]| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": crate::media::OCI_MANIFEST,
            "config": {"mediaType": crate::media::OCI_CONFIG, "digest": format!("sha256:{}", sha(config)), "size": config.len()},
            "layers": [{"mediaType": crate::media::OCI_LAYER_ZSTD, "digest": format!("sha256:{}", sha(layer)), "size": layer.len()}],
        }))
        .unwrap()
    };
    let m = manifest_of(&config, &layer);
    let other_m = manifest_of(&other_config, &other_layer);
    let nested = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": crate::media::OCI_INDEX,
        "manifests": [
            {"mediaType": crate::media::OCI_MANIFEST, "digest": format!("sha256:{}", sha(&other_m)), "size": other_m.len(),
             "platform": {"os": "linux", "architecture": other_arch}},
            {"mediaType": crate::media::OCI_MANIFEST, "digest": format!("sha256:{}", sha(&m)), "size": m.len(),
             "platform": {"os": "linux", "architecture": host_arch()}},
        ],
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": crate::media::OCI_INDEX, "digest": format!("sha256:{}", sha(&nested)),
                       "size": nested.len(), "annotations": annotations}],
    }))
    .unwrap();
    let blob = |d: &[u8]| format!("blobs/sha256/{}", sha(d));
    let paths = [
        blob(&layer),
        blob(&other_layer),
        blob(&config),
        blob(&other_config),
        blob(&m),
        blob(&other_m),
        blob(&nested),
    ];
    let data = archive_of(&[
        ("oci-layout", E::File(br#"{"imageLayoutVersion":"1.0.0"}"#)),
        ("index.json", E::File(&index)),
        ("blobs/", E::Dir),
        ("blobs/sha256/", E::Dir),
        (&paths[0], E::File(&layer)),
        (&paths[1], E::File(&other_layer)),
        (&paths[2], E::File(&config)),
        (&paths[3], E::File(&other_config)),
        (&paths[4], E::File(&m)),
        (&paths[5], E::File(&other_m)),
        (&paths[6], E::File(&nested)),
    ]);
    (data, sha(&config), diff)
}

#[tokio::test]
async fn load_oci_layout_picks_the_host_platform() {
    // skopeo's oci-archive: a ref name only: the image stays untagged.
    let (data, id, diff) = oci_archive(json!({"org.opencontainers.image.ref.name": "latest"}));
    for data in [data.clone(), gzip(&data), zstd(&data)] {
        let (_d, s) = new_store();
        let msgs = load_msgs(&s, data, true).await;
        no_error(&msgs);
        assert_eq!(streams(&msgs), [format!("Loaded image ID: sha256:{id}\n")]);
        assert!(
            msgs.iter().all(|m| m.status.is_none()),
            "quiet: no progress"
        );
        assert_eq!(s.count(), 1);
        let layers: Vec<String> = s.inner.state.read().layers.keys().cloned().collect();
        assert_eq!(layers, std::slice::from_ref(&diff));
        assert_eq!(layer_file(&s, &diff, "hello"), b"oci world\n");
    }

    // skopeo's `oci-archive:F:hello:v2` writes a whole reference.
    let (data, id, _) = oci_archive(json!({"org.opencontainers.image.ref.name": "hello:v2"}));
    let (_d, s) = new_store();
    let msgs = load_msgs(&s, data, true).await;
    no_error(&msgs);
    assert_eq!(streams(&msgs), ["Loaded image: hello:v2\n"]);
    assert_eq!(s.resolve("hello:v2").unwrap().id, format!("sha256:{id}"));

    // With containerd's name annotation: tagged, the tag from the name.
    let (data, id, _) = oci_archive(json!({
        "io.containerd.image.name": "docker.io/library/hello:v1",
        "org.opencontainers.image.ref.name": "v1",
    }));
    let (_d, s) = new_store();
    let msgs = load_msgs(&s, data, true).await;
    no_error(&msgs);
    assert_eq!(streams(&msgs), ["Loaded image: hello:v1\n"]);
    assert_eq!(s.resolve("hello:v1").unwrap().id, format!("sha256:{id}"));
}

#[tokio::test]
async fn load_moves_a_tag_like_docker() {
    let (_d, s) = new_store();
    let (old, _) = add_image(&s, &three_layers()[..1], &["one:1"], "old", vec![]);
    let (data, [id1, _], _) = docker24_archive(&host_arch());
    let msgs = load_msgs(&s, data, true).await;
    no_error(&msgs);
    assert_eq!(
        streams(&msgs)[0],
        format!("The image one:1 already exists, renaming the old one with ID sha256:{old} to empty string\n")
    );
    assert_eq!(s.resolve("one:1").unwrap().id, format!("sha256:{id1}"));
}

// ---- bad archives: a clear error and an unchanged store ----

/// Loads `data` into a store holding one image, expects an error
/// containing `want`, and checks the store did not change.
async fn assert_refused(data: Vec<u8>, want: &str) {
    let (_d, s) = new_store();
    add_image(&s, &three_layers()[..2], &["keep:me"], "keep", vec![]);
    let before = snapshot(&s);
    let msgs = load_msgs(&s, data, false).await;
    let err = error_of(&msgs);
    assert!(err.contains(want), "error {err:?} lacks {want:?}");
    assert!(streams(&msgs).is_empty(), "nothing loaded: {msgs:?}");
    assert_eq!(snapshot(&s), before);
}

async fn saved_archive() -> Vec<u8> {
    let (_d, s) = new_store();
    add_image(&s, &three_layers(), &["busybox:latest"], "a", vec![]);
    save_bytes(&s, &["busybox:latest"]).await
}

#[tokio::test]
async fn load_refuses_truncated_archives() {
    let data = saved_archive().await;
    // Mid-blob, at an entry boundary (no end-of-archive blocks), mid-header.
    let entries = read_archive(&data);
    let first_blob = entries[2].2.len() as usize;
    let boundary = 512 * 3 + first_blob.div_ceil(512) * 512;
    for cut in [700, boundary, boundary + 100, data.len() - 1024 - 300] {
        assert_refused(data[..cut].to_vec(), "invalid archive: unexpected EOF").await;
    }
    let gz = gzip(&data);
    assert_refused(gz[..gz.len() / 2].to_vec(), "invalid archive").await;
    let zs = zstd(&data);
    assert_refused(zs[..zs.len() - 10].to_vec(), "invalid archive").await;
    assert_refused(Vec::new(), "invalid archive: the archive is empty").await;
}

#[tokio::test]
async fn load_reports_a_body_that_breaks_off() {
    let data = saved_archive().await;
    let (_d, s) = new_store();
    let before = snapshot(&s);
    let mut chunks: Vec<std::io::Result<Bytes>> = data[..data.len() / 2]
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    chunks.push(Err(std::io::Error::other("connection reset by peer")));
    let body = Box::pin(futures::stream::iter(chunks));
    let msgs: Vec<JsonMessage> = super::load(&s, body, true).await.unwrap().collect().await;
    assert_eq!(
        error_of(&msgs),
        "reading the archive from the request failed: connection reset by peer"
    );
    assert_eq!(snapshot(&s), before);
}

/// Rewrites a saved archive: `f` may change any entry.
fn rewrite(data: &[u8], f: impl Fn(&str, Vec<u8>) -> Option<(String, Vec<u8>)>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, _, content) in read_archive(data) {
        let Some((path, content)) = f(&path, content) else {
            continue;
        };
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_mode(0o644);
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
        }
        h.set_size(content.len() as u64);
        b.append_data(&mut h, &path, &content[..]).unwrap();
    }
    b.into_inner().unwrap()
}

#[tokio::test]
async fn load_refuses_content_that_does_not_match_its_digest() {
    let data = saved_archive().await;
    let mj: Value = serde_json::from_slice(file(&read_archive(&data), "manifest.json")).unwrap();
    let last_layer = mj[0]["Layers"][2].as_str().unwrap().to_string();
    let config = mj[0]["Config"].as_str().unwrap().to_string();

    // A layer blob whose bytes are not what its name says.
    let other = zstd(&layer_tar(&[("srv/", b""), ("srv/data", &[8u8; 3000])]));
    let bad_layer = rewrite(&data, |p, c| {
        Some((
            p.to_string(),
            if p == last_layer { other.clone() } else { c },
        ))
    });
    assert_refused(bad_layer, "filesystem layer verification failed").await;

    // A config changed behind its name.
    let bad_config = rewrite(&data, |p, c| {
        let c = if p == config {
            String::from_utf8(c)
                .unwrap()
                .replace("MARKER=a", "MARKER=b")
                .into_bytes()
        } else {
            c
        };
        Some((p.to_string(), c))
    });
    assert_refused(bad_config, "content has digest").await;
}

#[tokio::test]
async fn load_refuses_a_layer_that_is_not_what_the_config_says() {
    // A Docker ≤ 24 archive (no blob digests): only the diff ID catches it.
    let evil = layer_tar(&[("etc/", b""), ("etc/motd", b"evil\n")]);
    let (data, _, _) = docker24_archive(&host_arch());
    let data = rewrite(&data, |p, c| {
        if p.ends_with("/layer.tar") && p.starts_with('c') {
            Some((p.to_string(), evil.clone()))
        } else if p.starts_with('b') && p.ends_with("layer.tar") {
            // rewrite() cannot copy links: give the second image its own copy.
            Some((
                p.to_string(),
                layer_tar(&[("bin/", b""), ("bin/sh", b"old shell\n")]),
            ))
        } else {
            Some((p.to_string(), c))
        }
    });
    assert_refused(data, "the image config says").await;
}

#[tokio::test]
async fn load_refuses_malformed_and_incomplete_archives() {
    let data = saved_archive().await;
    let broken_json = rewrite(&data, |p, c| {
        Some((
            p.to_string(),
            if p == "manifest.json" {
                b"[{\"Config\": 3".to_vec()
            } else {
                c
            },
        ))
    });
    assert_refused(broken_json, "invalid archive: manifest.json: ").await;

    let no_json = rewrite(&data, |p, c| {
        (p != "manifest.json" && p != "index.json").then(|| (p.to_string(), c))
    });
    assert_refused(no_json, "invalid archive: no manifest.json or index.json").await;

    let mj: Value = serde_json::from_slice(file(&read_archive(&data), "manifest.json")).unwrap();
    let first_layer = mj[0]["Layers"][0].as_str().unwrap().to_string();
    let missing = rewrite(&data, |p, c| (p != first_layer).then(|| (p.to_string(), c)));
    assert_refused(
        missing,
        &format!("manifest.json names {first_layer}, which is not in the archive"),
    )
    .await;

    // A plain OCI layout whose index points to a blob that is not there.
    let no_manifest = rewrite(&data, |p, c| {
        (p != "manifest.json"
            && !(p.starts_with("blobs/sha256/") && c.starts_with(b"{\"schemaVersion\"")))
        .then(|| (p.to_string(), c))
    });
    assert_refused(no_manifest, "is not in the archive").await;

    let fifo = archive_of(&[("manifest.json", E::File(b"[]")), ("pipe", E::Fifo)]);
    assert_refused(fifo, "unsupported entry \"pipe\"").await;

    let bzip2 = b"BZh91AY&SY".to_vec();
    assert_refused(bzip2, "bzip2 compression is not supported").await;
}

#[tokio::test]
async fn load_of_a_foreign_os_image_is_refused() {
    let (data, _, _) = docker24_archive(&host_arch());
    let data = rewrite(&data, |p, c| {
        let c = if p.ends_with(".json") && !p.contains('/') {
            String::from_utf8(c)
                .unwrap()
                .replace("\"linux\"", "\"windows\"")
                .into_bytes()
        } else {
            c
        };
        Some((p.to_string(), c))
    });
    assert_refused(data, "cannot load windows image on linux").await;
}

#[tokio::test]
async fn load_skips_layers_already_stored() {
    let (_d, s) = new_store();
    let blobs = three_layers();
    add_image(&s, &blobs, &["busybox:latest"], "a", vec![]);
    let data = save_bytes(&s, &["busybox:latest"]).await;
    // Another image of the same layers, loaded: nothing to unpack.
    let (_d2, s2) = new_store();
    add_image(&s2, &blobs, &["other:1"], "b", vec![]);
    let msgs = load_msgs(&s2, data, false).await;
    no_error(&msgs);
    assert!(msgs.iter().all(|m| m.status.is_none()), "{msgs:?}");
    assert_eq!(streams(&msgs), ["Loaded image: busybox:latest\n"]);
    assert_eq!(s2.count(), 2);
    assert_eq!(s2.inner.state.read().layers.len(), 3);
}

#[test]
fn oci_tags() {
    let tag = |pairs: &[(&str, &str)]| {
        let m = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        super::load::oci_tag(&m)
    };
    let name = "io.containerd.image.name";
    let ref_name = "org.opencontainers.image.ref.name";
    assert_eq!(tag(&[(ref_name, "latest")]), None);
    assert_eq!(tag(&[(ref_name, "busybox:1")]), Some("busybox:1".into()));
    assert_eq!(
        tag(&[(ref_name, "localhost:5000/a/b:c")]),
        Some("localhost:5000/a/b:c".into())
    );
    assert_eq!(
        tag(&[(name, "docker.io/library/x")]),
        Some("x:latest".into())
    );
    assert_eq!(
        tag(&[(name, "docker.io/library/x"), (ref_name, "v3")]),
        Some("x:v3".into())
    );
    assert_eq!(
        tag(&[(name, "ghcr.io/o/x:1"), (ref_name, "1")]),
        Some("ghcr.io/o/x:1".into())
    );
    assert_eq!(tag(&[(name, "Not Valid")]), None);
    assert_eq!(tag(&[]), None);
}

#[test]
fn qualified_names() {
    assert_eq!(super::qualified("busybox"), "docker.io/library/busybox");
    assert_eq!(super::qualified("u/app"), "docker.io/u/app");
    assert_eq!(super::qualified("localhost:5000/x"), "localhost:5000/x");
    assert_eq!(super::qualified("localhost/x"), "localhost/x");
    assert_eq!(super::qualified("ghcr.io/a/b"), "ghcr.io/a/b");
}

// Reads back an archive written by save through a real `tar` binary when
// one is installed: the format is plain ustar.
#[tokio::test]
async fn saved_archive_lists_with_system_tar() {
    let Ok(out) = std::process::Command::new("tar").arg("--version").output() else {
        return;
    };
    if !out.status.success() {
        return;
    }
    let data = saved_archive().await;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.tar");
    fs::write(&p, &data).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-tvf")
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("manifest.json") && listing.contains("blobs/sha256/"));
}
