//! `registry gc`: mark every blob reachable from the repositories'
//! manifests, sweep the rest. Safe while a server writes to the same root:
//! the whole run holds `gc.lock` exclusively (requests that create references
//! hold it shared), and blobs touched within the grace period are kept, so a
//! layer pushed for a manifest that has not arrived yet survives.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::digest::{Algorithm, Digest};
use crate::storage::{self, GcLock, Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("{0} is not a registry root (no blobs/ or repositories/)")]
    NotARoot(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What to collect.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Report what would go, delete nothing.
    pub dry_run: bool,
    /// Also delete manifests no tag reaches (directly, through an index, or
    /// as a referrer of one that is kept).
    pub delete_untagged: bool,
    /// Unreferenced blobs modified more recently than this are kept.
    pub grace: Duration,
    /// Uploads untouched for longer than this are removed.
    pub upload_max_age: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            delete_untagged: false,
            grace: Duration::from_secs(3600),
            upload_max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What a run found and did (or, with `dry_run`, would do).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GcReport {
    pub repositories: usize,
    pub manifests_kept: usize,
    /// `repo@digest` of untagged manifests removed.
    pub manifests_deleted: Vec<String>,
    pub blobs_marked: usize,
    pub blobs_deleted: Vec<String>,
    pub bytes_freed: u64,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub blobs_in_grace: usize,
    pub uploads_deleted: usize,
}

fn older_than(meta: &fs::Metadata, age: Duration, now: SystemTime) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|d| d >= age)
}

/// Digests of the files under `<dir>/<alg>/<hex>`.
fn list_digests(dir: &Path) -> Result<Vec<Digest>, StorageError> {
    let mut out = Vec::new();
    for alg in storage::list_names(dir)? {
        let Some(a) = Algorithm::from_name(&alg) else {
            continue;
        };
        for hex in storage::list_names(&dir.join(&alg))? {
            if let Ok(d) = Digest::from_parts(a, &hex) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// The references of a stored manifest (empty if unreadable or not JSON).
fn refs_of(root: &Path, d: &Digest) -> crate::manifest::ManifestRefs {
    fs::read(Storage::blob_path(root, d))
        .ok()
        .and_then(|b| crate::manifest::parse(&b, None).ok())
        .unwrap_or_default()
}

/// Manifests of one repository that are kept: all of them, or with
/// `delete_untagged` those reachable from tags through index children and
/// referrers.
fn kept_manifests(
    root: &Path,
    name: &str,
    revisions: &[Digest],
    delete_untagged: bool,
    refs: &mut HashMap<Digest, crate::manifest::ManifestRefs>,
) -> Result<HashSet<Digest>, StorageError> {
    for d in revisions {
        refs.entry(d.clone()).or_insert_with(|| refs_of(root, d));
    }
    if !delete_untagged {
        return Ok(revisions.iter().cloned().collect());
    }
    let present: HashSet<&Digest> = revisions.iter().collect();
    let tags_dir = Storage::repo_dir(root, name).join("_manifests/tags");
    let mut keep = HashSet::new();
    let mut queue: Vec<Digest> = Vec::new();
    for tag in storage::list_names(&tags_dir)? {
        if let Ok(s) = fs::read_to_string(tags_dir.join(&tag)) {
            if let Ok(d) = s.trim().parse::<Digest>() {
                queue.push(d);
            }
        }
    }
    loop {
        while let Some(d) = queue.pop() {
            if !present.contains(&d) || !keep.insert(d.clone()) {
                continue;
            }
            if let Some(r) = refs.get(&d) {
                queue.extend(r.children.iter().cloned());
            }
        }
        // Referrers of kept manifests are kept too (signatures, SBOMs).
        for d in revisions {
            if !keep.contains(d) {
                if let Some(s) = refs.get(d).and_then(|r| r.subject.as_ref()) {
                    if keep.contains(s) {
                        queue.push(d.clone());
                    }
                }
            }
        }
        if queue.is_empty() {
            return Ok(keep);
        }
    }
}

pub fn run(root: &Path, opts: &GcOptions) -> Result<GcReport, GcError> {
    if !root.join("blobs").is_dir() || !root.join("repositories").is_dir() {
        return Err(GcError::NotARoot(root.display().to_string()));
    }
    let _lock = GcLock::exclusive(root)?;
    let now = SystemTime::now();
    let mut report = GcReport::default();
    let mut marked: HashSet<Digest> = HashSet::new();
    let mut refs_cache = HashMap::new();

    // Mark.
    let mut repos = Vec::new();
    storage::collect_repos(&root.join("repositories"), "", &mut repos)?;
    report.repositories = repos.len();
    for name in &repos {
        let rev_dir = Storage::repo_dir(root, name).join("_manifests/revisions");
        let revisions = list_digests(&rev_dir)?;
        let keep = kept_manifests(
            root,
            name,
            &revisions,
            opts.delete_untagged,
            &mut refs_cache,
        )?;
        for d in &revisions {
            if keep.contains(d) {
                continue;
            }
            report.manifests_deleted.push(format!("{name}@{d}"));
            if !opts.dry_run {
                delete_revision(root, name, d, refs_cache.get(d))?;
            }
        }
        for d in &keep {
            report.manifests_kept += 1;
            marked.insert(d.clone());
            if let Some(r) = refs_cache.get(d) {
                marked.extend(r.blobs.iter().cloned());
                marked.extend(r.children.iter().cloned());
            }
        }
    }
    report.blobs_marked = marked.len();

    // Sweep blobs.
    let blobs = root.join("blobs");
    let mut deleted: HashSet<Digest> = HashSet::new();
    for alg in storage::list_names(&blobs)? {
        let Some(a) = Algorithm::from_name(&alg) else {
            continue;
        };
        for prefix in storage::list_names(&blobs.join(&alg))? {
            let dir = blobs.join(&alg).join(&prefix);
            sweep_temps(&dir, opts, now)?;
            for hex in storage::list_names(&dir)? {
                let Ok(d) = Digest::from_parts(a, &hex) else {
                    continue;
                };
                if marked.contains(&d) {
                    continue;
                }
                let p = dir.join(&hex);
                let meta = match fs::metadata(&p) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(storage::ctx(&p)(e).into()),
                };
                if !older_than(&meta, opts.grace, now) {
                    report.blobs_in_grace += 1;
                    continue;
                }
                if !opts.dry_run {
                    match fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(storage::ctx(&p)(e).into()),
                    }
                }
                report.bytes_freed += meta.len();
                report.blobs_deleted.push(d.to_string());
                deleted.insert(d);
            }
        }
    }

    // Repository links to blobs that are gone.
    if !opts.dry_run && !deleted.is_empty() {
        for name in &repos {
            let layers = Storage::repo_dir(root, name).join("_layers");
            for d in list_digests(&layers)? {
                if deleted.contains(&d) {
                    let p = layers.join(d.algorithm().name()).join(d.hex());
                    let _ = fs::remove_file(p);
                }
            }
        }
    }

    // Abandoned uploads.
    let uploads = root.join("uploads");
    for u in storage::list_names(&uploads)? {
        let dir = uploads.join(&u);
        let stale = fs::metadata(dir.join("data"))
            .or_else(|_| fs::metadata(&dir))
            .map(|m| older_than(&m, opts.upload_max_age, now))
            .unwrap_or(false);
        if stale {
            report.uploads_deleted += 1;
            if !opts.dry_run {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }
    report.blobs_deleted.sort();
    Ok(report)
}

/// Temp files left by a kill during a write (never in use once older than
/// the grace period).
fn sweep_temps(dir: &Path, opts: &GcOptions, now: SystemTime) -> Result<(), StorageError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(storage::ctx(dir)(e)),
    };
    for ent in rd.flatten() {
        let is_tmp = ent
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(".tmp-"));
        if is_tmp && !opts.dry_run {
            if let Ok(m) = ent.metadata() {
                if older_than(&m, opts.grace.max(Duration::from_secs(3600)), now) {
                    let _ = fs::remove_file(ent.path());
                }
            }
        }
    }
    Ok(())
}

fn delete_revision(
    root: &Path,
    name: &str,
    d: &Digest,
    refs: Option<&crate::manifest::ManifestRefs>,
) -> Result<(), StorageError> {
    if let Some(s) = refs.and_then(|r| r.subject.as_ref()) {
        let p = Storage::referrer_path(root, name, s, d);
        let _ = fs::remove_file(p);
    }
    let p = Storage::revision_path(root, name, d);
    match fs::remove_file(&p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(storage::ctx(&p)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ManifestRefs, OCI_INDEX, OCI_MANIFEST};
    use crate::storage::write_atomic;

    /// Stores content as a blob, linked into `repo`.
    fn blob(root: &Path, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::of(Algorithm::Sha256, data);
        write_atomic(&Storage::blob_path(root, &d), data).unwrap();
        let link = Storage::repo_dir(root, repo)
            .join("_layers/sha256")
            .join(d.hex());
        write_atomic(&link, b"").unwrap();
        d
    }

    fn manifest(st: &Storage, repo: &str, tag: Option<&str>, body: serde_json::Value) -> Digest {
        let body = body.to_string().into_bytes();
        let d = Digest::of(Algorithm::Sha256, &body);
        let refs: ManifestRefs = crate::manifest::parse(&body, None).unwrap();
        let mt = crate::manifest::effective_media_type(None, &refs);
        st.put_manifest(repo, tag, &d, &mt, &body, &refs).unwrap();
        d
    }

    fn image(config: &Digest, layers: &[&Digest], subject: Option<&Digest>) -> serde_json::Value {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 1},
            "layers": layers.iter().map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l.to_string(), "size": 1})).collect::<Vec<_>>(),
        });
        if let Some(s) = subject {
            v["subject"] =
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": s.to_string(), "size": 1});
        }
        v
    }

    fn exists(root: &Path, d: &Digest) -> bool {
        Storage::blob_path(root, d).exists()
    }

    #[test]
    fn marks_reachable_and_sweeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let st = Storage::open(root).unwrap();
        let cfg = blob(root, "a", b"config");
        let shared = blob(root, "a", b"shared layer");
        let only_b = blob(root, "a", b"layer of b");
        let orphan = blob(root, "a", b"orphan");
        let m_a = manifest(&st, "a", Some("a"), image(&cfg, &[&shared], None));
        let m_b = manifest(&st, "a", Some("b"), image(&cfg, &[&shared, &only_b], None));
        let idx = manifest(
            &st,
            "a",
            Some("multi"),
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": m_a.to_string(), "size": 1}]}),
        );
        let sig_blob = blob(root, "a", b"signature");
        let sig = manifest(&st, "a", None, image(&cfg, &[&sig_blob], Some(&m_a)));
        assert!(st.delete_manifest("a", &m_b).unwrap());

        // Young blobs survive the default grace period.
        let r = run(root, &GcOptions::default()).unwrap();
        assert!(r.blobs_deleted.is_empty(), "{r:?}");
        assert_eq!(r.blobs_in_grace, 3); // m_b, only_b, orphan

        let opts = GcOptions {
            grace: Duration::ZERO,
            dry_run: true,
            ..Default::default()
        };
        let dry = run(root, &opts).unwrap();
        assert_eq!(dry.blobs_deleted.len(), 3);
        assert!(exists(root, &orphan));

        let opts = GcOptions {
            dry_run: false,
            ..opts
        };
        let r = run(root, &opts).unwrap();
        let mut want = vec![m_b.to_string(), only_b.to_string(), orphan.to_string()];
        want.sort();
        assert_eq!(r.blobs_deleted, want);
        for d in [&cfg, &shared, &m_a, &idx, &sig, &sig_blob] {
            assert!(exists(root, d), "{d} was swept");
        }
        assert!(st.blob_size("a", &orphan).unwrap().is_none());

        // Untagged: the index keeps m_a, m_a keeps its referrer; an untagged
        // manifest with nothing pointing at it goes.
        let lone_layer = blob(root, "a", b"lone");
        let lone = manifest(&st, "a", None, image(&cfg, &[&lone_layer], None));
        assert!(st.delete_tag("a", "a").unwrap());
        let opts = GcOptions {
            delete_untagged: true,
            ..opts
        };
        let r = run(root, &opts).unwrap();
        assert_eq!(r.manifests_deleted, vec![format!("a@{lone}")]);
        assert!(!exists(root, &lone_layer));
        assert!(exists(root, &sig_blob) && exists(root, &m_a));
        assert!(st.get_manifest("a", &lone).unwrap().is_none());
    }

    #[test]
    fn refuses_a_non_root() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            run(dir.path(), &GcOptions::default()),
            Err(GcError::NotARoot(_))
        ));
    }
}
