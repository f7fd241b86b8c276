//! shibafu's engine: the container lifecycle behind the Docker API.
//!
//! [`Engine`] implements `shibafu_api`'s [`ContainerBackend`],
//! [`VolumeBackend`], [`SystemBackend`] and [`ImageUsers`]. It keeps state
//! in redb (`<data-root>/state.redb`), drives overlay rootfs from
//! `shibafu-image` and per-container supervisors from `shibafu-runtime`,
//! and runs the restart policies and health checks.
//!
//! Concurrency model: every container has an operation lock (`Ctr::op`)
//! that serialises lifecycle operations (start, stop, rm, ...); its record
//! sits behind a short-held mutex for readers. A monitor task per running
//! container awaits the supervisor's exit, tears down what start set up and
//! publishes the exit on a watch channel that `wait`, `stop` and `rm` await.
//! The monitor never takes the operation lock for the teardown itself, so
//! an operation may hold it while it waits for an exit.
//!
//! [`ContainerBackend`]: shibafu_api::ContainerBackend
//! [`VolumeBackend`]: shibafu_api::VolumeBackend
//! [`SystemBackend`]: shibafu_api::SystemBackend
//! [`ImageUsers`]: shibafu_api::ImageUsers

mod adapters;
mod archive;
mod backend;
pub mod bridge;
mod ctr;
pub mod dns;
pub mod error;
pub mod events;
mod exec;
mod health;
mod lifecycle;
pub mod model;
pub mod names;
pub mod netsvc;
pub mod network;
pub mod ports;
mod recovery;
pub mod services;
pub mod signals;
pub mod spec;
mod stats;
pub mod status;
pub mod store;
mod system;
mod top;
pub mod views;
mod volumes;

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

pub use bridge::BridgeAttacher;
pub use dns::DnsService;
pub use error::EngineError;
pub use model::ContainerRecord;
pub use netsvc::NetworkService;
pub use network::{LocalNetworks, NetworkAttacher};
pub use ports::RunDirs;

use crate::ctr::Ctr;
use crate::events::Events;
use crate::exec::Exec;
use crate::model::VolumeRecord;
use crate::ports::{ImageSource, RootfsDriver, Runtime};
use crate::store::Store;

/// The engine as the image store's [`shibafu_api::ImageUsers`], without a
/// reference cycle.
struct WeakUsers(Weak<Engine>);

impl shibafu_api::ImageUsers for WeakUsers {
    fn images_in_use(&self) -> std::collections::HashSet<String> {
        self.0
            .upgrade()
            .map(|e| e.image_ids_in_use())
            .unwrap_or_default()
    }
}

/// How the daemon configures the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Persistent state (`/var/lib/shibafu`).
    pub data_root: PathBuf,
    /// Volatile state (`/run/shibafu`): supervisor sockets, libcontainer root.
    pub exec_root: PathBuf,
    /// The shibafu binary, re-executed as `shibafu supervise ...`.
    pub exe: PathBuf,
    /// Default `max-size` of json-file logs (`None` = never rotate).
    pub default_log_max_size: Option<u64>,
    /// Default `max-file` (>= 1).
    pub default_log_max_file: u32,
    /// A static init (tini) for `--init`; `None` = the runtime's own.
    pub init_path: Option<PathBuf>,
}

/// The engine. Create with [`Engine::new`]; share the `Arc`.
pub struct Engine {
    pub(crate) cfg: EngineConfig,
    pub(crate) images: Arc<dyn ImageSource>,
    pub(crate) rootfs: Arc<dyn RootfsDriver>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) net: RwLock<Arc<dyn NetworkAttacher>>,
    pub(crate) store: Store,
    /// All containers by full ID.
    pub(crate) ctrs: Mutex<HashMap<String, Arc<Ctr>>>,
    /// Name -> ID, including names reserved by creates in progress.
    pub(crate) names: Mutex<HashMap<String, String>>,
    pub(crate) execs: Mutex<HashMap<String, Arc<Exec>>>,
    pub(crate) volumes: Mutex<HashMap<String, VolumeRecord>>,
    /// Serialises volume create/remove against container create/remove.
    pub(crate) volume_op: tokio::sync::Mutex<()>,
    pub(crate) events: Events,
    pub(crate) me: Weak<Engine>,
    /// Stable daemon ID (`info`).
    pub(crate) daemon_id: String,
    pub(crate) shutting_down: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// Open the state, re-adopt running containers, clean stale state.
    pub async fn new(
        cfg: EngineConfig,
        images: Arc<shibafu_image::ImageStore>,
    ) -> Result<Arc<Engine>, EngineError> {
        Self::new_with_network(cfg, images, Arc::new(LocalNetworks)).await
    }

    /// [`Engine::new`] with the network layer installed before recovery,
    /// so dead containers found at start are detached by it and
    /// `restart: always` containers come back on their networks.
    pub async fn new_with_network(
        cfg: EngineConfig,
        images: Arc<shibafu_image::ImageStore>,
        net: Arc<dyn NetworkAttacher>,
    ) -> Result<Arc<Engine>, EngineError> {
        let image_src = Arc::new(adapters::Images(images.clone()));
        let engine = Self::with_parts_net(
            cfg.clone(),
            image_src,
            Arc::new(adapters::Overlay),
            Arc::new(adapters::Supervisors::new(&cfg)),
            net,
        )
        .await?;
        // Weak: the store must not keep the engine (and its database) alive.
        images.set_users(Arc::new(WeakUsers(Arc::downgrade(&engine))));
        Ok(engine)
    }

    /// [`Engine::new`] with explicit parts (tests use fakes).
    #[cfg(test)]
    pub(crate) async fn with_parts(
        cfg: EngineConfig,
        images: Arc<dyn ImageSource>,
        rootfs: Arc<dyn RootfsDriver>,
        runtime: Arc<dyn Runtime>,
    ) -> Result<Arc<Engine>, EngineError> {
        Self::with_parts_net(cfg, images, rootfs, runtime, Arc::new(LocalNetworks)).await
    }

    pub(crate) async fn with_parts_net(
        cfg: EngineConfig,
        images: Arc<dyn ImageSource>,
        rootfs: Arc<dyn RootfsDriver>,
        runtime: Arc<dyn Runtime>,
        net: Arc<dyn NetworkAttacher>,
    ) -> Result<Arc<Engine>, EngineError> {
        for d in [
            cfg.data_root.join("containers"),
            cfg.data_root.join("volumes"),
            cfg.exec_root.join("containers"),
            cfg.exec_root.join("runtime"),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| EngineError::io(d.display(), e))?;
        }
        // Each container's trees in an allocation group of their own (see
        // shibafu_image::topdir); only a hint, so a failure is logged, not fatal.
        for d in [
            cfg.data_root.join("containers"),
            cfg.exec_root.join("containers"),
            cfg.exec_root.join("runtime"),
        ] {
            if let Err(e) = shibafu_image::topdir::mark(&d) {
                tracing::warn!("{}: setting the TOPDIR attribute: {e}", d.display());
            }
        }
        let store = Store::open(&cfg.data_root.join("state.redb"))?;
        let daemon_id = system::daemon_id(&cfg.data_root)?;
        let engine = Arc::new_cyclic(|me| Engine {
            cfg,
            images,
            rootfs,
            runtime,
            net: RwLock::new(net),
            store,
            ctrs: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            execs: Mutex::new(HashMap::new()),
            volumes: Mutex::new(HashMap::new()),
            volume_op: tokio::sync::Mutex::new(()),
            events: Events::new(),
            me: me.clone(),
            daemon_id,
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        });
        engine.recover().await?;
        Ok(engine)
    }

    /// Replace the network attacher (the networking layer installs its own;
    /// the default handles none/host/container:/loopback-only bridge).
    pub fn set_network_attacher(&self, attacher: Arc<dyn NetworkAttacher>) {
        *self.net.write() = attacher;
    }

    /// Stop background work (monitors, health checks, restart timers).
    /// Containers keep running under their supervisors.
    pub async fn shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let ctrs: Vec<Arc<Ctr>> = self.ctrs.lock().values().cloned().collect();
        for c in ctrs {
            c.abort_tasks();
        }
    }

    /// Records of every container (a snapshot), e.g. for the networking layer.
    pub fn containers(&self) -> Vec<ContainerRecord> {
        self.ctrs.lock().values().map(|c| c.rec()).collect()
    }

    /// IDs of the containers whose network endpoints must be kept by a
    /// reconcile: running or paused, or in the middle of a lifecycle
    /// operation (a start attaching right now, a removal detaching).
    pub fn network_live_set(&self) -> std::collections::HashSet<String> {
        self.ctrs
            .lock()
            .values()
            .filter(|c| c.rec().state.status.is_live() || c.op.try_lock().is_err())
            .map(|c| c.id.clone())
            .collect()
    }

    /// One container's record by ID, prefix or name.
    pub fn container(&self, id_or_name: &str) -> Result<ContainerRecord, EngineError> {
        Ok(self.lookup(id_or_name)?.rec())
    }

    /// Emit an event (the image store emits none itself: the daemon may
    /// forward image events through here).
    pub fn emit_event(
        &self,
        typ: bollard_stubs::models::EventMessageTypeEnum,
        action: &str,
        id: &str,
        attributes: HashMap<String, String>,
    ) {
        self.events.emit(typ, action, id, attributes);
    }

    /// The current network attacher (cloned: never hold the lock across
    /// an await).
    pub(crate) fn net(&self) -> Arc<dyn NetworkAttacher> {
        self.net.read().clone()
    }

    pub(crate) fn arc(&self) -> Arc<Engine> {
        self.me.upgrade().expect("engine alive")
    }

    pub(crate) fn ctr_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_root.join("containers").join(id)
    }
    pub(crate) fn rootfs_dir(&self, id: &str) -> PathBuf {
        self.ctr_dir(id).join("rootfs")
    }
    pub(crate) fn merged_dir(&self, id: &str) -> PathBuf {
        self.rootfs_dir(id).join("merged")
    }
    pub(crate) fn log_path(&self, id: &str) -> PathBuf {
        self.ctr_dir(id).join(format!("{id}-json.log"))
    }
    pub(crate) fn run_dirs(&self, id: &str) -> RunDirs {
        RunDirs {
            bundle: self.ctr_dir(id).join("bundle"),
            run_dir: self.cfg.exec_root.join("containers").join(id),
            runtime_root: self.cfg.exec_root.join("runtime"),
        }
    }
    pub(crate) fn volume_dir(&self, name: &str) -> PathBuf {
        self.cfg.data_root.join("volumes").join(name)
    }

    /// Resolve a container reference (full ID, unique prefix, name).
    pub(crate) fn lookup(&self, reference: &str) -> Result<Arc<Ctr>, EngineError> {
        let ctrs = self.ctrs.lock();
        let items: Vec<(String, String)> =
            ctrs.values().map(|c| (c.id.clone(), c.name())).collect();
        match names::resolve(
            reference,
            items.iter().map(|(a, b)| (a.as_str(), b.as_str())),
        ) {
            names::Lookup::Found(id) => Ok(ctrs[&id].clone()),
            names::Lookup::NotFound => Err(EngineError::NotFound(format!(
                "No such container: {reference}"
            ))),
            names::Lookup::Ambiguous => Err(EngineError::Invalid(format!(
                "multiple containers found with provided prefix: {reference}"
            ))),
        }
    }
}
