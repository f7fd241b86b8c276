//! Local volumes: `<data-root>/volumes/<name>/_data`, records in redb.

use std::collections::HashMap;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::Path;

use bollard_stubs::models::{
    EventMessageTypeEnum, Volume, VolumeCreateRequest, VolumeListResponse, VolumePruneResponse,
    VolumeScopeEnum, VolumeUsageData,
};
use chrono::Utc;
use shibafu_api::Filters;

use crate::error::{EngineError, Result};
use crate::model::{MountKind, VolumeRecord};
use crate::spec::ANON_LABEL;
use crate::Engine;

/// Copy a directory tree preserving modes, owners and symlinks (used to
/// fill a fresh volume with what the image has at the mount point).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from).min_depth(1) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry
            .path()
            .strip_prefix(from)
            .map_err(std::io::Error::other)?;
        let dst = to.join(rel);
        let md = entry.path().symlink_metadata()?;
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dst)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            std::os::unix::fs::symlink(target, &dst)?;
        } else if ft.is_file() {
            std::fs::copy(entry.path(), &dst)?;
        } else {
            // Devices, fifos, sockets: not worth carrying into a volume.
            continue;
        }
        let _ = lchown(&dst, Some(md.uid()), Some(md.gid()));
    }
    let md = from.metadata()?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    let _ = lchown(to, Some(md.uid()), Some(md.gid()));
    Ok(())
}

fn dir_size(p: &Path) -> i64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.path().symlink_metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len() as i64)
        .sum()
}

impl Engine {
    /// Make a volume's dirs and record (caller holds `volume_op`).
    pub(crate) fn create_volume_files(
        &self,
        name: &str,
        mut labels: HashMap<String, String>,
        options: HashMap<String, String>,
        anonymous: bool,
    ) -> Result<VolumeRecord> {
        let data = self.volume_dir(name).join("_data");
        std::fs::create_dir_all(&data).map_err(|e| EngineError::io(data.display(), e))?;
        if anonymous {
            labels.entry(ANON_LABEL.into()).or_default();
        }
        let rec = VolumeRecord {
            name: name.to_string(),
            created: Utc::now(),
            labels,
            options,
            anonymous,
        };
        if let Err(e) = self.store.put_volume(&rec) {
            let _ = std::fs::remove_dir_all(self.volume_dir(name));
            return Err(e);
        }
        self.volumes.lock().insert(name.to_string(), rec.clone());
        self.events.emit(
            EventMessageTypeEnum::VOLUME,
            "create",
            name,
            HashMap::from([("driver".to_string(), "local".to_string())]),
        );
        Ok(rec)
    }

    /// Roll back a volume made by a failed create.
    pub(crate) fn drop_volume_files(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.volume_dir(name));
        let _ = self.store.delete_volume(name);
        self.volumes.lock().remove(name);
    }

    /// Delete a volume (caller checked it is unused and holds `volume_op`).
    pub(crate) fn delete_volume(&self, name: &str) -> Result<()> {
        let dir = self.volume_dir(name);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(EngineError::io(format!("removing volume {name}"), e));
            }
        }
        self.store.delete_volume(name)?;
        self.volumes.lock().remove(name);
        self.events.emit(
            EventMessageTypeEnum::VOLUME,
            "destroy",
            name,
            HashMap::from([("driver".to_string(), "local".to_string())]),
        );
        Ok(())
    }

    /// IDs of containers that mount the volume.
    pub(crate) fn volume_users(&self, name: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .ctrs
            .lock()
            .values()
            .map(|c| c.rec())
            .filter(|r| {
                r.mounts
                    .iter()
                    .any(|m| m.kind == MountKind::Volume && m.name == name)
            })
            .map(|r| r.id)
            .collect();
        ids.sort();
        ids
    }

    /// Empty `_data`: Docker copies the image's content in on first use.
    pub(crate) fn volume_fresh(&self, name: &str) -> bool {
        std::fs::read_dir(self.volume_dir(name).join("_data"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(false)
    }

    pub(crate) fn volume_view(&self, v: &VolumeRecord, usage: bool) -> Volume {
        let mountpoint = self.volume_dir(&v.name).join("_data");
        Volume {
            name: v.name.clone(),
            driver: "local".into(),
            mountpoint: mountpoint.display().to_string(),
            created_at: Some(crate::views::date(&v.created)),
            status: None,
            labels: v.labels.clone(),
            scope: Some(VolumeScopeEnum::LOCAL),
            cluster_volume: None,
            options: v.options.clone(),
            usage_data: usage.then(|| VolumeUsageData {
                size: dir_size(&mountpoint),
                ref_count: self.volume_users(&v.name).len() as i64,
            }),
        }
    }

    pub(crate) async fn vol_create(&self, req: VolumeCreateRequest) -> Result<Volume> {
        let driver = req.driver.clone().unwrap_or_default();
        if !(driver.is_empty() || driver == "local") {
            return Err(EngineError::NotFound(format!(
                "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            )));
        }
        if let Some(o) = req.driver_opts.as_ref().filter(|o| !o.is_empty()) {
            let keys: Vec<_> = o.keys().cloned().collect();
            return Err(EngineError::Invalid(format!(
                "local volume driver options are not supported by shibafu: {}",
                keys.join(", ")
            )));
        }
        let name = match req.name.clone().filter(|n| !n.is_empty()) {
            Some(n) => {
                if !crate::names::valid_name(&n) {
                    return Err(EngineError::Invalid(format!(
                        "create {n}: \"{n}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
                    )));
                }
                n
            }
            None => crate::names::new_id(),
        };
        let _v = self.volume_op.lock().await;
        if let Some(existing) = self.volumes.lock().get(&name).cloned() {
            // Docker: creating an existing volume returns it.
            return Ok(self.volume_view(&existing, false));
        }
        let rec = self.create_volume_files(
            &name,
            req.labels.clone().unwrap_or_default(),
            HashMap::new(),
            false,
        )?;
        Ok(self.volume_view(&rec, false))
    }

    fn find_volume(&self, name: &str) -> Result<VolumeRecord> {
        self.volumes
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("get {name}: no such volume")))
    }

    pub(crate) fn vol_inspect(&self, name: &str) -> Result<Volume> {
        Ok(self.volume_view(&self.find_volume(name)?, false))
    }

    pub(crate) async fn vol_remove(&self, name: &str, force: bool) -> Result<()> {
        let _v = self.volume_op.lock().await;
        if self.volumes.lock().get(name).is_none() {
            if force {
                return Ok(());
            }
            return Err(EngineError::NotFound(format!("get {name}: no such volume")));
        }
        let users = self.volume_users(name);
        if !users.is_empty() {
            return Err(EngineError::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        self.delete_volume(name)
    }

    fn volume_matches(&self, v: &VolumeRecord, filters: &Filters) -> Result<bool> {
        for (k, vals) in filters {
            if vals.is_empty() {
                continue;
            }
            let ok = match k.as_str() {
                "name" => vals.iter().any(|x| v.name.contains(x.as_str())),
                "driver" => vals.iter().any(|x| x == "local"),
                "label" => vals.iter().all(|x| crate::views::label_match(&v.labels, x)),
                "label!" => !vals.iter().any(|x| crate::views::label_match(&v.labels, x)),
                "dangling" => {
                    let want = crate::views::parse_bool_filter("dangling", vals)?;
                    self.volume_users(&v.name).is_empty() == want
                }
                "all" => true,
                other => return Err(EngineError::Invalid(format!("invalid filter '{other}'"))),
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(crate) fn vol_list(&self, filters: &Filters) -> Result<VolumeListResponse> {
        let all: Vec<VolumeRecord> = self.volumes.lock().values().cloned().collect();
        let mut out = Vec::new();
        for v in all {
            if self.volume_matches(&v, filters)? {
                out.push(self.volume_view(&v, false));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(VolumeListResponse {
            volumes: Some(out),
            warnings: Some(vec![]),
        })
    }

    /// Unused volumes; anonymous ones only unless `all=true`.
    pub(crate) async fn vol_prune(&self, filters: &Filters) -> Result<VolumePruneResponse> {
        let all = match filters.get("all") {
            Some(v) => crate::views::parse_bool_filter("all", v)?,
            None => false,
        };
        let _v = self.volume_op.lock().await;
        let vols: Vec<VolumeRecord> = self.volumes.lock().values().cloned().collect();
        let mut deleted = Vec::new();
        let mut reclaimed = 0i64;
        for v in vols {
            if !all && !v.anonymous && !v.labels.contains_key(ANON_LABEL) {
                continue;
            }
            if !self.volume_matches(&v, filters)? || !self.volume_users(&v.name).is_empty() {
                continue;
            }
            let size = dir_size(&self.volume_dir(&v.name));
            if self.delete_volume(&v.name).is_ok() {
                reclaimed += size;
                deleted.push(v.name.clone());
            }
        }
        Ok(VolumePruneResponse {
            volumes_deleted: Some(deleted),
            space_reclaimed: Some(reclaimed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_tree_keeps_modes_and_links() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/f"), b"hi").unwrap();
        std::fs::set_permissions(
            src.path().join("d/f"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("d/f", src.path().join("l")).unwrap();
        copy_tree(src.path(), dst.path()).unwrap();
        assert_eq!(std::fs::read(dst.path().join("d/f")).unwrap(), b"hi");
        let mode = std::fs::metadata(dst.path().join("d/f")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            std::fs::read_link(dst.path().join("l")).unwrap(),
            Path::new("d/f")
        );
    }
}
