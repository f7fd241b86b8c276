//! Store-level tests: import, resolve, tag/rmi/prune semantics, crash
//! leftovers; root-only tests of the overlay rootfs in a private mount
//! namespace.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use shibafu_api::{ApiError, Filters, ImageBackend, ImportOptions};

use super::*;

/// A fake engine: the set of image IDs its containers use.
struct FixedUsers(parking_lot::Mutex<HashSet<String>>);

impl shibafu_api::ImageUsers for FixedUsers {
    fn images_in_use(&self) -> HashSet<String> {
        self.0.lock().clone()
    }
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o755);
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

/// The body as the HTTP layer hands it over: several chunks.
fn body(data: Vec<u8>) -> shibafu_api::BoxStream<std::io::Result<Bytes>> {
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(700)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

fn opts(repo: Option<&str>, changes: &[&str]) -> ImportOptions {
    ImportOptions {
        repo: repo.map(str::to_string),
        changes: changes.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn rootfs_tar() -> Vec<u8> {
    tar_of(&[
        ("bin/", b""),
        ("bin/busybox", b"\x7fELF fake busybox"),
        ("etc/", b""),
        ("etc/hostname", b"box\n"),
    ])
}

fn new_store() -> (tempfile::TempDir, ImageStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(&d.path().join("image")).unwrap();
    (d, s)
}

fn dir_entries(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_store_empty(root: &Path) {
    assert!(dir_entries(&root.join("tmp")).is_empty(), "tmp not empty");
    assert!(
        dir_entries(&root.join("layers")).is_empty(),
        "layers not empty"
    );
    assert!(
        dir_entries(&root.join("blobs/sha256")).is_empty(),
        "blobs not empty"
    );
}

fn invalid_msg(r: ApiResult<impl std::fmt::Debug>) -> String {
    match r {
        Err(ApiError::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

use shibafu_api::ApiResult;

#[tokio::test]
async fn import_stores_content_addressed_image() {
    let (d, s) = new_store();
    let root = d.path().join("image");
    let tar = rootfs_tar();
    let id = s
        .image_import(opts(Some("busybox"), &[]), body(tar.clone()))
        .await
        .unwrap();
    let hex = id.strip_prefix("sha256:").unwrap();
    assert_eq!(hex.len(), 64);

    // Image ID = sha256 of the config blob; the layer blob is the tar, by diff ID.
    let cfg_bytes = fs::read(root.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(sha256_hex(&cfg_bytes), hex);
    let diff_hex = sha256_hex(&tar);
    assert_eq!(
        fs::read(root.join("blobs/sha256").join(&diff_hex)).unwrap(),
        tar
    );

    let r = s.resolve("busybox").unwrap();
    assert_eq!(r.id, id);
    assert_eq!(r.repo_tags, vec!["busybox:latest".to_string()]);
    assert_eq!(
        r.config.rootfs().diff_ids(),
        &vec![format!("sha256:{diff_hex}")]
    );
    assert_eq!(r.config.architecture().to_string(), "amd64");
    assert_eq!(r.config.os().to_string(), "linux");
    assert_eq!(
        r.layers,
        vec![root.join("layers").join(&diff_hex).join("diff")]
    );
    assert_eq!(
        fs::read(r.layers[0].join("etc/hostname")).unwrap(),
        b"box\n"
    );
    for name in [
        "busybox:latest",
        "docker.io/library/busybox",
        &id,
        hex,
        &hex[..12],
        &format!("sha256:{}", &hex[..8]),
    ] {
        assert_eq!(s.resolve(name).unwrap().id, id, "{name}");
    }
    assert!(matches!(s.resolve("alpine"), Err(StoreError::NotFound(_))));
    assert_eq!(
        s.resolve("nope").unwrap_err().to_string(),
        "No such image: nope"
    );
    assert_eq!(s.count(), 1);
    assert_eq!(s.total_size(), 17 + 4);
    assert!(dir_entries(&root.join("tmp")).is_empty());

    let insp = s.image_inspect("busybox").await.unwrap();
    assert_eq!(insp.id.as_deref(), Some(id.as_str()));
    assert_eq!(insp.repo_tags, Some(vec!["busybox:latest".to_string()]));
    assert_eq!(insp.comment.as_deref(), Some("Imported from -"));
    assert_eq!(
        insp.root_fs.unwrap().layers.unwrap(),
        vec![format!("sha256:{diff_hex}")]
    );
    assert_eq!(insp.graph_driver.unwrap().name, "overlay2");
    assert!(insp
        .metadata
        .unwrap()
        .last_tag_time
        .unwrap()
        .starts_with("20"));
    let json = serde_json::to_value(s.image_inspect(hex).await.unwrap()).unwrap();
    assert!(json["Created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(json["Size"], 21);

    let hist = s.image_history("busybox").await.unwrap();
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0].id, id);
    assert_eq!(hist[0].comment, "Imported from -");
    assert_eq!(hist[0].tags, vec!["busybox:latest".to_string()]);
    assert_eq!(hist[0].size, 21);

    // Survives a reopen.
    drop(s);
    let s = ImageStore::open(&root).unwrap();
    assert_eq!(s.resolve("busybox:latest").unwrap().id, id);
}

#[tokio::test]
async fn import_gzip_with_changes_and_message() {
    let (_d, s) = new_store();
    let mut o = opts(
        Some("localhost:5000/team/app:v1"),
        &[
            r#"CMD ["httpd", "-f"]"#,
            "ENV PATH=/bin",
            "WORKDIR /www",
            "EXPOSE 80",
            "LABEL org.x=y",
            "USER 1000",
        ],
    );
    o.message = Some("my rootfs".into());
    let id = s.image_import(o, body(gzip(&rootfs_tar()))).await.unwrap();
    let insp = s.image_inspect("localhost:5000/team/app:v1").await.unwrap();
    assert_eq!(insp.id.as_deref(), Some(id.as_str()));
    let c = insp.config.unwrap();
    assert_eq!(c.cmd.unwrap(), vec!["httpd", "-f"]);
    assert_eq!(c.env.unwrap(), vec!["PATH=/bin"]);
    assert_eq!(c.working_dir.as_deref(), Some("/www"));
    assert_eq!(c.exposed_ports.unwrap(), vec!["80/tcp"]);
    assert_eq!(c.user.as_deref(), Some("1000"));
    assert_eq!(c.labels.unwrap()["org.x"], "y");
    assert_eq!(insp.comment.as_deref(), Some("my rootfs"));
    // The stored layer is the uncompressed tar either way.
    let r = s.resolve(&id).unwrap();
    assert_eq!(
        r.config.rootfs().diff_ids()[0],
        format!("sha256:{}", sha256_hex(&rootfs_tar()))
    );
    let list = s.image_list(false, Filters::new(), false).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].labels["org.x"], "y");
    assert_eq!(list[0].repo_tags, vec!["localhost:5000/team/app:v1"]);
}

#[tokio::test]
async fn bad_imports_leave_nothing_behind() {
    let (d, s) = new_store();
    let root = d.path().join("image");
    let good = rootfs_tar();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", vec![b'q'; 5000]),
        ("text", b"hello world\n".to_vec()),
        ("empty", Vec::new()),
        ("truncated", good[..700].to_vec()),
        ("truncated gzip", gzip(&good)[..60].to_vec()),
        ("xz", vec![0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2]),
        ("escaping path", {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
            h.set_cksum();
            let mut b = tar::Builder::new(Vec::new());
            b.append(&h, &b"x"[..]).unwrap();
            b.into_inner().unwrap()
        }),
    ];
    for (what, data) in cases {
        let m = invalid_msg(s.image_import(opts(Some("bad"), &[]), body(data)).await);
        assert!(m.starts_with("invalid tar archive: "), "{what}: {m}");
        assert_store_empty(&root);
        assert_eq!(s.count(), 0, "{what}");
        assert!(s.resolve("bad").is_err());
    }
    assert!(!d.path().join("escape").exists());

    // Options are checked before the body is read.
    let m = invalid_msg(
        s.image_import(opts(Some("Bad/Name"), &[]), body(good.clone()))
            .await,
    );
    assert!(m.starts_with("invalid reference format"), "{m}");
    let m = invalid_msg(
        s.image_import(opts(Some("x"), &["RUN make"]), body(good.clone()))
            .await,
    );
    assert_eq!(m, "RUN is not a valid change command");
    let mut o = opts(None, &[]);
    o.platform = Some("windows/amd64".into());
    assert!(invalid_msg(s.image_import(o, body(good.clone())).await).contains("windows"));
    assert_store_empty(&root);

    // A body that fails mid-way is not taken for a broken tar, and cleans up.
    let mut chunks: Vec<std::io::Result<Bytes>> = vec![Ok(Bytes::from(good[..1024].to_vec()))];
    chunks.push(Err(std::io::Error::other("connection reset")));
    let m = invalid_msg(
        s.image_import(opts(None, &[]), Box::pin(futures::stream::iter(chunks)))
            .await,
    );
    assert!(m.contains("connection reset"), "{m}");
    assert_store_empty(&root);
}

#[tokio::test]
async fn same_layer_is_shared_and_freed_with_its_last_image() {
    let (d, s) = new_store();
    let root = d.path().join("image");
    let a = s
        .image_import(opts(Some("a"), &[]), body(rootfs_tar()))
        .await
        .unwrap();
    let b = s
        .image_import(opts(Some("b"), &["CMD sh"]), body(rootfs_tar()))
        .await
        .unwrap();
    assert_ne!(a, b);
    assert_eq!(dir_entries(&root.join("layers")).len(), 1);
    assert_eq!(s.total_size(), 21);
    let r = s.image_remove("a", false, false).await.unwrap();
    assert_eq!(r[0].untagged.as_deref(), Some("a:latest"));
    assert_eq!(r[1].deleted.as_deref(), Some(a.as_str()));
    assert_eq!(r.len(), 2, "the shared layer stays: {r:?}");
    assert_eq!(dir_entries(&root.join("layers")).len(), 1);
    let r = s.image_remove("b", false, false).await.unwrap();
    assert_eq!(r.len(), 3, "image and its layer: {r:?}");
    assert_store_empty(&root);
    assert_eq!(s.total_size(), 0);
}

#[tokio::test]
async fn tag_and_rmi_semantics() {
    let (_d, s) = new_store();
    let users = Arc::new(FixedUsers(parking_lot::Mutex::new(HashSet::new())));
    s.set_users(users.clone());
    let id = s
        .image_import(opts(Some("busybox"), &[]), body(rootfs_tar()))
        .await
        .unwrap();
    let short = &id[7..19];

    s.image_tag("busybox", "myrepo/bb", Some("v1"))
        .await
        .unwrap();
    s.image_tag(&id, "other:x", None).await.unwrap();
    s.image_tag(short, "third", None).await.unwrap();
    let mut tags = s.resolve(&id).unwrap().repo_tags;
    tags.sort();
    assert_eq!(
        tags,
        ["busybox:latest", "myrepo/bb:v1", "other:x", "third:latest"]
    );
    assert!(invalid_msg(s.image_tag("busybox", "UPPER", None).await)
        .starts_with("invalid reference format"));
    assert!(invalid_msg(s.image_tag("busybox", "a", Some("-bad")).await).contains("tag"));
    assert!(
        matches!(s.image_tag("missing", "x", None).await, Err(ApiError::NotFound(m)) if m == "No such image: missing")
    );

    // By name with other tags: only that tag goes.
    let r = s.image_remove("other:x", false, false).await.unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].untagged.as_deref(), Some("other:x"));
    assert!(s.resolve("other:x").is_err());

    // By ID with several tags: conflict unless forced.
    match s.image_remove(short, false, false).await {
        Err(ApiError::Conflict(m)) => {
            assert!(m.contains("must be forced") && m.contains(short), "{m}")
        }
        other => panic!("{other:?}"),
    }

    // In use: conflict; forced removal only untags.
    users.0.lock().insert(id.clone());
    s.image_remove("myrepo/bb:v1", false, false).await.unwrap();
    s.image_remove("third", false, false).await.unwrap();
    match s.image_remove("busybox", false, false).await {
        Err(ApiError::Conflict(m)) => {
            assert!(
                m.starts_with(&format!(
                    "conflict: unable to delete {short} (must be forced)"
                )),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    let r = s.image_remove("busybox", true, false).await.unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].untagged.as_deref(), Some("busybox:latest"));
    assert_eq!(s.resolve(&id).unwrap().repo_tags, Vec::<String>::new());

    // Not in use any more: removal by ID deletes.
    users.0.lock().clear();
    let r = s.image_remove(&id, false, false).await.unwrap();
    assert_eq!(r[0].deleted.as_deref(), Some(id.as_str()));
    assert!(
        matches!(s.image_remove(&id, false, false).await, Err(ApiError::NotFound(m)) if m.starts_with("No such image"))
    );
    assert_eq!(s.count(), 0);
}

#[tokio::test]
async fn tag_moves_name_leaving_old_image_dangling_and_prune() {
    let (d, s) = new_store();
    let users = Arc::new(FixedUsers(parking_lot::Mutex::new(HashSet::new())));
    s.set_users(users.clone());
    let old = s
        .image_import(opts(Some("app"), &[]), body(rootfs_tar()))
        .await
        .unwrap();
    let tar2 = tar_of(&[("new", b"new content")]);
    let new = s
        .image_import(opts(Some("app"), &["LABEL keep=1"]), body(tar2))
        .await
        .unwrap();
    let kept = s
        .image_import(opts(Some("kept"), &[]), body(tar_of(&[("k", b"k")])))
        .await
        .unwrap();
    assert_eq!(s.resolve("app").unwrap().id, new);

    let dangling: Filters = [("dangling".to_string(), vec!["true".to_string()])].into();
    let list = s.image_list(false, dangling.clone(), false).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, old);
    assert!(list[0].repo_tags.is_empty());
    assert_eq!(list[0].shared_size, -1);
    assert_eq!(
        s.image_list(false, Filters::new(), false)
            .await
            .unwrap()
            .len(),
        3
    );
    let by_ref: Filters = [("reference".to_string(), vec!["ap*".to_string()])].into();
    let l = s.image_list(false, by_ref, false).await.unwrap();
    assert_eq!(
        l.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        vec![new.clone()]
    );
    let by_label: Filters = [("label".to_string(), vec!["keep=1".to_string()])].into();
    assert_eq!(s.image_list(false, by_label, false).await.unwrap().len(), 1);
    let bad: Filters = [("colour".to_string(), vec!["x".to_string()])].into();
    assert_eq!(
        invalid_msg(s.image_list(false, bad, false).await),
        "invalid filter 'colour'"
    );

    // Default prune: dangling only.
    let p = s.image_prune(Filters::new()).await.unwrap();
    let deleted: Vec<_> = p
        .images_deleted
        .unwrap()
        .into_iter()
        .filter_map(|i| i.deleted)
        .collect();
    assert!(deleted.contains(&old));
    assert_eq!(p.space_reclaimed, Some(21));
    assert!(s.resolve(&old).is_err());

    // dangling=false: every unused image, in-use ones stay.
    users.0.lock().insert(kept.clone());
    let all: Filters = [("dangling".to_string(), vec!["false".to_string()])].into();
    let p = s.image_prune(all).await.unwrap();
    let items = p.images_deleted.unwrap();
    assert!(items
        .iter()
        .any(|i| i.untagged.as_deref() == Some("app:latest")));
    assert!(items
        .iter()
        .any(|i| i.deleted.as_deref() == Some(new.as_str())));
    assert_eq!(s.count(), 1);
    assert_eq!(s.resolve("kept").unwrap().id, kept);
    assert_eq!(dir_entries(&d.path().join("image/layers")).len(), 1);
}

#[tokio::test]
async fn open_removes_crash_leftovers() {
    let (d, s) = new_store();
    let root = d.path().join("image");
    let id = s
        .image_import(opts(Some("x"), &[]), body(rootfs_tar()))
        .await
        .unwrap();
    drop(s);
    // What a crash mid-import leaves: a work dir, and a layer and blobs
    // renamed into place whose metadata was never committed.
    fs::create_dir_all(root.join("tmp/import-dead/layer/diff/bin")).unwrap();
    fs::create_dir_all(root.join("layers").join("f".repeat(64)).join("diff")).unwrap();
    fs::write(root.join("blobs/sha256").join("e".repeat(64)), b"orphan").unwrap();
    let s = ImageStore::open(&root).unwrap();
    assert!(dir_entries(&root.join("tmp")).is_empty());
    assert_eq!(dir_entries(&root.join("layers")).len(), 1);
    assert_eq!(dir_entries(&root.join("blobs/sha256")).len(), 2);
    assert_eq!(s.resolve("x").unwrap().id, id);

    // An image whose layer vanished is dropped rather than served broken.
    let layer = s.resolve("x").unwrap().layers[0]
        .parent()
        .unwrap()
        .to_path_buf();
    drop(s);
    fs::remove_dir_all(&layer).unwrap();
    let s = ImageStore::open(&root).unwrap();
    assert_eq!(s.count(), 0);
    assert_store_empty(&root);
}

/// Runs the calling test again inside `unshare --mount` (private
/// propagation) and returns false; returns true when already inside.
fn in_private_mount_ns(test: &str) -> bool {
    const VAR: &str = "SHIBAFU_IMAGE_TEST_IN_MOUNT_NS";
    if std::env::var_os(VAR).is_some() {
        return true;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "root tests need root (this machine and CI run as root)"
    );
    let name = format!("tests::{test}");
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, "1")
        .output()
        .expect("running unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} in a mount namespace failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

fn unpack_dir(tar: &[u8], dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    crate::layer::unpack(&mut tar::Archive::new(tar), dest).unwrap();
}

fn whiteout_tar() -> Vec<u8> {
    tar_of(&[
        ("etc/.wh.hostname", b""),
        ("opaque/.wh..wh..opq", b""),
        ("opaque/new", b"upper"),
        ("top", b"top layer"),
    ])
}

#[test]
fn root_overlay_mount_whiteouts_and_writes() {
    if !in_private_mount_ns("root_overlay_mount_whiteouts_and_writes") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("l1");
    let upper_layer = d.path().join("l2");
    unpack_dir(
        &tar_of(&[
            ("etc/hostname", b"box\n"),
            ("etc/passwd", b"root\n"),
            ("opaque/old", b"lower"),
            ("keep", b"k"),
        ]),
        &base,
    );
    unpack_dir(&whiteout_tar(), &upper_layer);
    let dir = d.path().join("ctr");
    let layers = vec![base.clone(), upper_layer.clone()];
    let merged = rootfs::mount(&dir, &layers).unwrap();
    assert!(rootfs::is_mounted(&merged));
    assert_eq!(
        rootfs::mount(&dir, &layers).unwrap(),
        merged,
        "mount is idempotent"
    );

    assert!(
        !merged.join("etc/hostname").exists(),
        "whiteout hides the lower file"
    );
    assert_eq!(fs::read(merged.join("etc/passwd")).unwrap(), b"root\n");
    assert!(
        !merged.join("opaque/old").exists(),
        "opaque dir hides lower content"
    );
    assert_eq!(fs::read(merged.join("opaque/new")).unwrap(), b"upper");
    assert_eq!(fs::read(merged.join("top")).unwrap(), b"top layer");
    assert_eq!(fs::read(merged.join("keep")).unwrap(), b"k");

    // Writes and deletes land in the container's upper dir only.
    fs::write(merged.join("etc/passwd"), b"changed\n").unwrap();
    fs::remove_file(merged.join("keep")).unwrap();
    assert_eq!(fs::read(base.join("etc/passwd")).unwrap(), b"root\n");
    assert!(base.join("keep").exists());
    assert_eq!(
        fs::read(dir.join("upper/etc/passwd")).unwrap(),
        b"changed\n"
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(dir.join("upper/keep"))
        .unwrap()
        .file_type()
        .is_char_device());

    // Busy mount: lazily detached.
    let busy = fs::File::open(merged.join("etc/passwd")).unwrap();
    let cwd_holder = std::process::Command::new("sleep")
        .arg("30")
        .current_dir(&merged)
        .spawn()
        .unwrap();
    rootfs::unmount(&dir).unwrap();
    assert!(!rootfs::is_mounted(&merged));
    drop(busy);
    let mut cwd_holder = cwd_holder;
    cwd_holder.kill().unwrap();
    cwd_holder.wait().unwrap();
    rootfs::unmount(&dir).unwrap();

    // Remount keeps the upper; remove deletes everything.
    rootfs::mount(&dir, &layers).unwrap();
    assert_eq!(fs::read(merged.join("etc/passwd")).unwrap(), b"changed\n");
    rootfs::remove(&dir).unwrap();
    assert!(!dir.exists());
    assert!(
        base.join("keep").exists(),
        "layers survive a container's removal"
    );
}

#[test]
fn root_overlay_zero_and_many_layers() {
    if !in_private_mount_ns("root_overlay_zero_and_many_layers") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("empty-image");
    let merged = rootfs::mount(&dir, &[]).unwrap();
    assert!(rootfs::is_mounted(&merged));
    fs::write(merged.join("f"), b"x").unwrap();
    rootfs::remove(&dir).unwrap();

    // Enough long-named layers that the options exceed a page.
    let long = "x".repeat(100);
    let mut layers = Vec::new();
    for i in 0..60 {
        let l = d.path().join(format!("{long}{i:03}"));
        unpack_dir(
            &tar_of(&[(&format!("f{i}"), format!("layer {i}").as_bytes())]),
            &l,
        );
        layers.push(l);
    }
    unpack_dir(&tar_of(&[("f0", b"shadowed")]), &layers[1]);
    let dir = d.path().join("many");
    let merged = rootfs::mount(&dir, &layers).unwrap();
    assert_eq!(
        fs::read(merged.join("f0")).unwrap(),
        b"shadowed",
        "higher layer wins"
    );
    assert_eq!(fs::read(merged.join("f59")).unwrap(), b"layer 59");
    rootfs::remove(&dir).unwrap();

    let missing = rootfs::mount(&d.path().join("m"), &[d.path().join("nope")]).unwrap_err();
    assert!(missing.to_string().contains("missing"), "{missing}");
}

#[test]
fn root_import_on_full_disk_reports_enospc_and_cleans_up() {
    if !in_private_mount_ns("root_import_on_full_disk_reports_enospc_and_cleans_up") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        d.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=2m"),
    )
    .unwrap();
    let root = d.path().join("image");
    let s = ImageStore::open(&root).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let res = rt.block_on(s.image_import(opts(Some("big"), &[]), body(tar_of(&[("big", &big)]))));
    match res {
        Err(ApiError::Internal(m)) => assert!(m.contains("no space left on device"), "{m}"),
        other => panic!("expected a disk-full error, got {other:?}"),
    }
    assert_store_empty(&root);
    assert_eq!(s.count(), 0);
    // The store still works once there is room.
    let id = rt
        .block_on(s.image_import(opts(Some("small"), &[]), body(rootfs_tar())))
        .unwrap();
    assert_eq!(s.resolve("small").unwrap().id, id);
    drop(s);
    nix::mount::umount2(d.path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
}

/// A real rootfs made by GNU tar (pax headers, hard links, symlinks,
/// gzip) imports, mounts, and runs: the path a container takes.
#[test]
fn root_busybox_rootfs_imports_mounts_and_runs() {
    if !in_private_mount_ns("root_busybox_rootfs_imports_mounts_and_runs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    for dir in ["bin", "etc", "tmp", "var/empty"] {
        fs::create_dir_all(src.join(dir)).unwrap();
    }
    fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", src.join("bin/sh")).unwrap();
    fs::hard_link(src.join("bin/busybox"), src.join("bin/ls")).unwrap();
    fs::write(src.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let tarball = d.path().join("rootfs.tar.gz");
    let st = std::process::Command::new("tar")
        .args(["--format=pax", "-czf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());

    let s = ImageStore::open(&d.path().join("image")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let id = rt
        .block_on(s.image_import(
            opts(Some("busybox"), &[r#"CMD ["sh"]"#]),
            body(fs::read(&tarball).unwrap()),
        ))
        .unwrap();
    let img = s.resolve("busybox:latest").unwrap();
    assert_eq!(img.id, id);

    let ctr = d.path().join("containers/c1");
    let merged = rootfs::mount(&ctr, &img.layers).unwrap();
    let out = std::process::Command::new("chroot")
        .arg(&merged)
        .args([
            "/bin/sh",
            "-c",
            "echo hello > /tmp/out; ls /bin; busybox cat /etc/passwd",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("busybox") && text.contains("root:x:0:0"),
        "{text}"
    );
    assert_eq!(fs::read(ctr.join("upper/tmp/out")).unwrap(), b"hello\n");
    assert!(
        !img.layers[0].join("tmp/out").exists(),
        "the image layer stays untouched"
    );

    // In use by a container: rmi refuses, the layer stays mounted and intact.
    let users = Arc::new(FixedUsers(parking_lot::Mutex::new(HashSet::from([
        id.clone()
    ]))));
    s.set_users(users);
    assert!(matches!(
        rt.block_on(s.image_remove("busybox", false, false)),
        Err(ApiError::Conflict(_))
    ));
    rootfs::remove(&ctr).unwrap();
    assert!(!ctr.exists());
    assert!(img.layers[0].join("bin/busybox").exists());
}
