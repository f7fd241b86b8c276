//! Daemon start: load state, re-adopt live containers, learn exits that
//! happened while the daemon was down, and clean what a crash left behind.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;

use crate::ctr::Ctr;
use crate::error::Result;
use crate::model::Status;
use crate::ports::ExitInfo;
use crate::Engine;

/// Docker's rule for stopped containers at daemon start: `always` comes
/// back even after a manual stop, `unless-stopped` unless stopped by hand.
pub fn restart_at_boot(rec: &crate::model::ContainerRecord) -> bool {
    use crate::model::RestartPolicy;
    rec.state.started_at.is_some()
        && match rec.restart_policy {
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => !rec.state.manually_stopped,
            _ => false,
        }
}

/// Exit code recorded when a supervisor vanished without an exit status.
pub const LOST_EXIT_CODE: i64 = 137;

impl Engine {
    pub(crate) async fn recover(&self) -> Result<()> {
        for v in self.store.volumes()? {
            self.volumes.lock().insert(v.name.clone(), v);
        }
        let (recs, bad) = self.store.containers()?;
        for (id, err) in bad {
            tracing::error!(container = %id, error = %err, "dropping unreadable container record");
            let _ = self.store.delete_container(&id, "");
        }
        let known: HashSet<String> = recs.iter().map(|r| r.id.clone()).collect();
        // The names index must agree with the records.
        for (name, id) in self.store.names()? {
            let ok = recs.iter().any(|r| r.id == id && r.name == name);
            if !ok {
                let _ = self.store.delete_name(&name);
            }
        }
        self.remove_unknown_dirs(&known).await;

        for rec in recs {
            let c = Ctr::new(rec.clone());
            self.ctrs.lock().insert(rec.id.clone(), c.clone());
            self.names.lock().insert(rec.name.clone(), rec.id.clone());
        }
        let all: Vec<_> = self.ctrs.lock().values().cloned().collect();
        for c in all {
            let rec = c.rec();
            let dirs = self.run_dirs(&rec.id);
            match rec.state.status {
                Status::Running | Status::Paused => {
                    match self.runtime.connect(&rec.id, &dirs).await {
                        Some(sup) => {
                            tracing::info!(container = %rec.id, "re-adopted running container");
                            let pid = sup.container_pid();
                            *c.sup.lock() = Some(sup.clone());
                            let rec = c.update(|r| r.state.pid = pid as i64);
                            self.persist_logged(&rec);
                            c.set_running(true);
                            self.spawn_monitor(c.clone(), sup);
                            if crate::health::wants_health(&rec.config) {
                                self.spawn_health(c.clone());
                            }
                        }
                        None => {
                            let exit = self.runtime.read_exit_status(&dirs).unwrap_or(ExitInfo {
                                code: LOST_EXIT_CODE,
                                signal: None,
                                oom_killed: false,
                                finished_at: Some(Utc::now()),
                                error: Some("supervisor died".into()),
                            });
                            tracing::info!(container = %rec.id, code = exit.code, "container exited while the daemon was down");
                            for e in self.teardown(&rec).await {
                                tracing::warn!(container = %rec.id, error = %e, "cleanup of a dead container");
                            }
                            self.record_exit(&c, exit).await;
                        }
                    }
                }
                Status::Restarting => {
                    // A restart was pending when the daemon went down.
                    self.schedule_restart(c.clone(), Duration::ZERO);
                }
                Status::Exited if restart_at_boot(&rec) => {
                    // Docker starts these when the daemon starts.
                    let rec = c.update(|r| r.state.status = Status::Restarting);
                    self.persist_logged(&rec);
                    c.set_running(true);
                    self.schedule_restart(c.clone(), Duration::ZERO);
                }
                _ => {
                    let rootfs = self.rootfs_dir(&rec.id);
                    if self.rootfs.is_mounted(&rootfs) {
                        if let Err(e) = self.rootfs.unmount(&rootfs) {
                            tracing::warn!(container = %rec.id, error = %e, "unmounting stray rootfs");
                        }
                    }
                    if dirs.run_dir.exists() {
                        for e in self
                            .runtime
                            .cleanup(&rec.id, &dirs, &self.merged_dir(&rec.id))
                            .await
                        {
                            tracing::warn!(container = %rec.id, error = %e, "stale runtime state");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Container dirs without a record are from a create that crashed
    /// half-way (the record is written last) or an interrupted rm.
    async fn remove_unknown_dirs(&self, known: &HashSet<String>) {
        let list = |dir: std::path::PathBuf| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        // `<id>.removing`: files of a removed container whose background
        // delete a crash interrupted (see `remove_locked`).
        for dir in [&self.cfg.data_root, &self.cfg.exec_root] {
            let base = dir.join("containers");
            for name in list(base.clone()) {
                if name.ends_with(".removing") {
                    if let Err(e) = std::fs::remove_dir_all(base.join(&name)) {
                        tracing::warn!(path = %base.join(&name).display(), error = %e, "removing a removed container's files");
                    }
                }
            }
        }
        for id in list(self.cfg.data_root.join("containers")) {
            if known.contains(&id) || id.ends_with(".removing") {
                continue;
            }
            tracing::info!(container = %id, "removing leftovers of an unrecorded container");
            let _ = self.rootfs.remove(&self.rootfs_dir(&id));
            let _ = std::fs::remove_dir_all(self.ctr_dir(&id));
        }
        for id in list(self.cfg.exec_root.join("containers")) {
            if known.contains(&id) || id.ends_with(".removing") {
                continue;
            }
            let dirs = self.run_dirs(&id);
            for e in self
                .runtime
                .cleanup(&id, &dirs, &self.merged_dir(&id))
                .await
            {
                tracing::warn!(container = %id, error = %e, "stale run dir");
            }
            let _ = std::fs::remove_dir_all(&dirs.run_dir);
        }
    }
}
