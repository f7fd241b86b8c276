//! The real parts behind the engine's ports: `shibafu-image`'s store and
//! overlay rootfs, `shibafu-runtime`'s supervisors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use shibafu_api::{OutputChunk, StdStream};
use shibafu_image::ImageStore;
use shibafu_runtime::client::{self, ClientError, ExecHandle, OutputRx, StdinWriter};
use shibafu_runtime::{ExitStatus, OutputStream, Resources, RunConfig, SupervisorDirs};

use crate::ports::{
    ExecProcess, ExecSpec, ExitInfo, ImageDefaults, ImageInfo, ImageSource, RootfsDriver, RunDirs,
    Runtime, Stdio, StdioRequest, Supervisor,
};
use crate::EngineConfig;

pub struct Images(pub Arc<ImageStore>);

/// The parts of an OCI image config a container inherits.
pub fn defaults_of(cfg: &oci_spec::image::ImageConfiguration) -> ImageDefaults {
    let Some(c) = cfg.config().as_ref() else {
        return ImageDefaults::default();
    };
    ImageDefaults {
        user: c.user().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        entrypoint: c.entrypoint().clone(),
        cmd: c.cmd().clone(),
        working_dir: c.working_dir().clone().unwrap_or_default(),
        exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
        volumes: c.volumes().clone().unwrap_or_default(),
        labels: c.labels().clone().unwrap_or_default(),
        stop_signal: c.stop_signal().clone(),
        healthcheck: None,
    }
}

impl ImageSource for Images {
    fn resolve(&self, reference: &str) -> Option<ImageInfo> {
        let r = self.0.resolve(reference).ok()?;
        Some(ImageInfo {
            id: r.id.clone(),
            config: defaults_of(&r.config),
            layers: r.layers.clone(),
            repo_tags: r.repo_tags.clone(),
            size: 0,
        })
    }
    fn count(&self) -> usize {
        self.0.count()
    }
    fn total_size(&self) -> u64 {
        self.0.total_size()
    }
}

pub struct Overlay;

impl RootfsDriver for Overlay {
    fn create(&self, dir: &Path) -> Result<(), String> {
        shibafu_image::rootfs::create(dir)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn mount(&self, dir: &Path, layers: &[PathBuf]) -> Result<PathBuf, String> {
        shibafu_image::rootfs::mount(dir, layers).map_err(|e| e.to_string())
    }
    fn unmount(&self, dir: &Path) -> Result<(), String> {
        shibafu_image::rootfs::unmount(dir).map_err(|e| e.to_string())
    }
    fn remove(&self, dir: &Path) -> Result<(), String> {
        shibafu_image::rootfs::remove(dir).map_err(|e| e.to_string())
    }
    fn is_mounted(&self, dir: &Path) -> bool {
        shibafu_image::rootfs::is_mounted(&dir.join("merged"))
    }
}

pub struct Supervisors {
    exe: PathBuf,
}

impl Supervisors {
    pub fn new(cfg: &EngineConfig) -> Self {
        Supervisors {
            exe: cfg.exe.clone(),
        }
    }
}

fn sdirs(d: &RunDirs) -> SupervisorDirs {
    SupervisorDirs {
        bundle: d.bundle.clone(),
        run_dir: d.run_dir.clone(),
        runtime_root: d.runtime_root.clone(),
    }
}

fn exit_info(s: ExitStatus) -> ExitInfo {
    ExitInfo {
        code: s.code as i64,
        signal: s.signal,
        oom_killed: s.oom_killed,
        finished_at: Some(s.finished_at),
        error: s.error,
    }
}

fn output_stream(rx: OutputRx) -> shibafu_api::BoxStream<OutputChunk> {
    Box::pin(rx.map(|(s, data): (OutputStream, Bytes)| OutputChunk {
        stream: match s {
            OutputStream::Stdout => StdStream::Stdout,
            OutputStream::Stderr => StdStream::Stderr,
        },
        data,
    }))
}

fn stdio_of(stdin: Option<StdinWriter>, out: OutputRx) -> Stdio {
    Stdio {
        stdin: stdin.map(|w| Box::new(w) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
        output: output_stream(out),
    }
}

fn err(e: ClientError) -> String {
    e.to_string()
}

struct Sup(client::Supervisor);

#[async_trait]
impl Supervisor for Sup {
    fn container_pid(&self) -> i32 {
        self.0.container_pid()
    }
    fn supervisor_pid(&self) -> i32 {
        self.0.supervisor_pid()
    }
    async fn start(&self) -> Result<(), String> {
        self.0.start().await.map_err(err)
    }
    async fn attach(&self, req: StdioRequest) -> Result<Stdio, String> {
        let (stdin, out) = self
            .0
            .attach(req.stdin, req.stdout, req.stderr)
            .await
            .map_err(err)?;
        Ok(stdio_of(stdin, out))
    }
    async fn resize(&self, height: u16, width: u16) -> Result<(), String> {
        self.0.resize(height, width).await.map_err(err)
    }
    async fn signal(&self, sig: i32) -> Result<(), String> {
        self.0.signal(sig).await.map_err(err)
    }
    async fn pause(&self) -> Result<(), String> {
        self.0.pause().await.map_err(err)
    }
    async fn resume(&self) -> Result<(), String> {
        self.0.resume().await.map_err(err)
    }
    async fn update(&self, res: &Resources) -> Result<(), String> {
        self.0.update(res).await.map_err(err)
    }
    async fn wait(&self) -> ExitInfo {
        match self.0.wait().await {
            Ok(s) => exit_info(s),
            Err(e) => ExitInfo {
                code: crate::recovery::LOST_EXIT_CODE,
                signal: None,
                oom_killed: false,
                finished_at: Some(chrono::Utc::now()),
                error: Some(format!("supervisor died: {e}")),
            },
        }
    }
    async fn exec(&self, spec: ExecSpec) -> Result<Arc<dyn ExecProcess>, String> {
        let h = self
            .0
            .exec(client::ExecSpec {
                args: spec.args,
                env: spec.env,
                cwd: spec.cwd,
                user: spec.user,
                tty: spec.tty,
                stdin: spec.stdin,
                stdout: spec.stdout,
                stderr: spec.stderr,
                privileged: spec.privileged,
                console_size: spec.console_size,
            })
            .await
            .map_err(err)?;
        Ok(Arc::new(Exec(h)))
    }
}

struct Exec(ExecHandle);

#[async_trait]
impl ExecProcess for Exec {
    fn pid(&self) -> i32 {
        self.0.pid()
    }
    fn take_stdio(&self) -> Option<Stdio> {
        self.0.take_stdio().map(|(i, o)| stdio_of(i, o))
    }
    async fn resize(&self, height: u16, width: u16) -> Result<(), String> {
        self.0.resize(height, width).await.map_err(err)
    }
    async fn wait(&self) -> i64 {
        match self.0.wait().await {
            Ok(c) => c as i64,
            Err(_) => crate::recovery::LOST_EXIT_CODE,
        }
    }
}

#[async_trait]
impl Runtime for Supervisors {
    async fn spawn(&self, cfg: &RunConfig, dirs: &RunDirs) -> Result<Arc<dyn Supervisor>, String> {
        let s = client::spawn(&self.exe, cfg, &sdirs(dirs))
            .await
            .map_err(err)?;
        Ok(Arc::new(Sup(s)))
    }
    async fn connect(&self, _id: &str, dirs: &RunDirs) -> Option<Arc<dyn Supervisor>> {
        client::Supervisor::connect(&sdirs(dirs))
            .await
            .ok()
            .map(|s| Arc::new(Sup(s)) as Arc<dyn Supervisor>)
    }
    fn read_exit_status(&self, dirs: &RunDirs) -> Option<ExitInfo> {
        client::read_exit_status(&sdirs(dirs)).map(exit_info)
    }
    async fn cleanup(&self, id: &str, dirs: &RunDirs, rootfs: &Path) -> Vec<String> {
        let id = id.to_string();
        let d = sdirs(dirs);
        let rootfs = rootfs.to_path_buf();
        tokio::task::spawn_blocking(move || {
            client::cleanup(&id, &d, &rootfs)
                .into_iter()
                .map(|e| e.to_string())
                .collect()
        })
        .await
        .unwrap_or_else(|e| vec![format!("cleanup task: {e}")])
    }
    fn cgroup_dir(&self, id: &str, controller: &str) -> PathBuf {
        shibafu_runtime::cgroup_dir(&format!("/shibafu/{id}"), controller)
    }
}
