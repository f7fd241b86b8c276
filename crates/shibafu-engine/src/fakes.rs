//! Fakes of the engine's ports for unit tests (no root, no processes).
//!
//! The fake runtime interprets the container's argv:
//! - `exit N`: exits with N right after start;
//! - `nope`: start fails like a missing executable;
//! - anything else runs until signalled (SIGKILL/SIGTERM/SIGINT end it
//!   with 128+sig; `trap` as first arg ignores SIGTERM).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use shibafu_api::{OutputChunk, StdStream};
use shibafu_runtime::{Resources, RunConfig};
use tokio::sync::watch;

use crate::ports::*;

pub struct FakeImages;

impl ImageSource for FakeImages {
    fn resolve(&self, reference: &str) -> Option<ImageInfo> {
        if reference == "busybox"
            || reference == "busybox:latest"
            || reference.starts_with("sha256:bb")
        {
            Some(ImageInfo {
                id: format!("sha256:bb{}", "0".repeat(62)),
                config: ImageDefaults {
                    env: vec!["PATH=/bin".into()],
                    cmd: Some(vec!["sh".into()]),
                    ..Default::default()
                },
                layers: vec![PathBuf::from("/layers/1")],
                repo_tags: vec!["busybox:latest".into()],
                size: 1000,
            })
        } else {
            None
        }
    }
    fn count(&self) -> usize {
        1
    }
    fn total_size(&self) -> u64 {
        1000
    }
}

#[derive(Default)]
pub struct FakeRootfs {
    pub mounted: Mutex<HashSet<PathBuf>>,
}

impl FakeRootfs {
    pub fn is_mounted_dir(&self, dir: &Path) -> bool {
        self.mounted.lock().contains(dir)
    }
}

impl RootfsDriver for FakeRootfs {
    fn create(&self, dir: &Path) -> Result<(), String> {
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    fn mount(&self, dir: &Path, _layers: &[PathBuf]) -> Result<PathBuf, String> {
        self.mounted.lock().insert(dir.to_path_buf());
        Ok(dir.join("merged"))
    }
    fn unmount(&self, dir: &Path) -> Result<(), String> {
        self.mounted.lock().remove(dir);
        Ok(())
    }
    fn remove(&self, dir: &Path) -> Result<(), String> {
        self.mounted.lock().remove(dir);
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }
    fn is_mounted(&self, dir: &Path) -> bool {
        self.mounted.lock().contains(dir)
    }
}

pub struct FakeSup {
    args: Vec<String>,
    pid: i32,
    exit: watch::Sender<Option<ExitInfo>>,
    pub signals: Mutex<Vec<i32>>,
    pub resources: Mutex<Option<Resources>>,
}

impl FakeSup {
    fn finish(&self, code: i64) {
        self.exit.send_if_modified(|e| {
            if e.is_none() {
                *e = Some(ExitInfo {
                    code,
                    finished_at: Some(chrono::Utc::now()),
                    ..Default::default()
                });
                true
            } else {
                false
            }
        });
    }
}

#[async_trait]
impl Supervisor for FakeSup {
    fn container_pid(&self) -> i32 {
        self.pid
    }
    fn supervisor_pid(&self) -> i32 {
        self.pid - 1
    }
    async fn start(&self) -> Result<(), String> {
        match self.args.first().map(String::as_str) {
            Some("nope") => {
                self.finish(127);
                Err("exec: \"nope\": executable file not found in $PATH".into())
            }
            Some("exit") => {
                let code = self.args.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                self.finish(code);
                Ok(())
            }
            _ => Ok(()),
        }
    }
    async fn attach(&self, _req: StdioRequest) -> Result<Stdio, String> {
        let chunk = OutputChunk {
            stream: StdStream::Stdout,
            data: Bytes::from_static(b"hello\n"),
        };
        Ok(Stdio {
            stdin: None,
            output: Box::pin(futures::stream::iter([chunk])),
        })
    }
    async fn resize(&self, _h: u16, _w: u16) -> Result<(), String> {
        Ok(())
    }
    async fn signal(&self, sig: i32) -> Result<(), String> {
        self.signals.lock().push(sig);
        let trap = self.args.get(1).is_some_and(|a| a == "trap");
        if sig == libc::SIGKILL || ((sig == libc::SIGTERM || sig == libc::SIGINT) && !trap) {
            self.finish(128 + sig as i64);
        }
        Ok(())
    }
    async fn pause(&self) -> Result<(), String> {
        Ok(())
    }
    async fn resume(&self) -> Result<(), String> {
        Ok(())
    }
    async fn update(&self, res: &Resources) -> Result<(), String> {
        *self.resources.lock() = Some(res.clone());
        Ok(())
    }
    async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                return ExitInfo::default();
            }
        }
    }
    async fn exec(&self, spec: ExecSpec) -> Result<Arc<dyn ExecProcess>, String> {
        if spec.args.first().is_some_and(|a| a == "nope") {
            return Err("exec: \"nope\": executable file not found in $PATH".into());
        }
        let code = if spec.args.first().is_some_and(|a| a == "false") {
            1
        } else {
            0
        };
        Ok(Arc::new(FakeExec {
            code,
            stdio: Mutex::new(Some(Stdio {
                stdin: None,
                output: Box::pin(futures::stream::iter([OutputChunk {
                    stream: StdStream::Stdout,
                    data: Bytes::from(format!("ran {}\n", spec.args.join(" "))),
                }])),
            })),
        }))
    }
}

pub struct FakeExec {
    code: i64,
    stdio: Mutex<Option<Stdio>>,
}

#[async_trait]
impl ExecProcess for FakeExec {
    fn pid(&self) -> i32 {
        4242
    }
    fn take_stdio(&self) -> Option<Stdio> {
        self.stdio.lock().take()
    }
    async fn resize(&self, _h: u16, _w: u16) -> Result<(), String> {
        Ok(())
    }
    async fn wait(&self) -> i64 {
        // The exit status comes after the output has ended, as it can from
        // a real supervisor.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.code
    }
}

/// What a fake supervisor left behind when "the daemon died".
#[derive(Default)]
pub struct FakeRuntime {
    pub sups: Mutex<HashMap<String, Arc<FakeSup>>>,
    pub configs: Mutex<Vec<RunConfig>>,
    pub cleaned: Mutex<Vec<String>>,
    /// Exit statuses for `read_exit_status` (by run dir).
    pub exit_files: Mutex<HashMap<PathBuf, ExitInfo>>,
    next_pid: Mutex<i32>,
}

impl FakeRuntime {
    pub fn sup(&self, id: &str) -> Arc<FakeSup> {
        self.sups.lock()[id].clone()
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn spawn(&self, cfg: &RunConfig, _dirs: &RunDirs) -> Result<Arc<dyn Supervisor>, String> {
        self.configs.lock().push(cfg.clone());
        let pid = {
            let mut p = self.next_pid.lock();
            *p += 10;
            1000 + *p
        };
        let (exit, _) = watch::channel(None);
        let sup = Arc::new(FakeSup {
            args: cfg.process.args.clone(),
            pid,
            exit,
            signals: Mutex::new(vec![]),
            resources: Mutex::new(None),
        });
        self.sups.lock().insert(cfg.id.clone(), sup.clone());
        Ok(sup)
    }
    async fn connect(&self, id: &str, _dirs: &RunDirs) -> Option<Arc<dyn Supervisor>> {
        let s = self.sups.lock().get(id).cloned()?;
        if s.exit.borrow().is_some() {
            return None;
        }
        Some(s)
    }
    fn read_exit_status(&self, dirs: &RunDirs) -> Option<ExitInfo> {
        self.exit_files.lock().get(&dirs.run_dir).cloned()
    }
    async fn cleanup(&self, id: &str, _dirs: &RunDirs, _rootfs: &Path) -> Vec<String> {
        self.cleaned.lock().push(id.to_string());
        vec![]
    }
    fn cgroup_dir(&self, id: &str, controller: &str) -> PathBuf {
        PathBuf::from(format!("/nonexistent/{controller}/{id}"))
    }
}
