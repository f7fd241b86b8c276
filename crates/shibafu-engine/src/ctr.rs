//! One container in memory: its record, its operation lock, its supervisor
//! handle and the channel its exits are published on.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::Mutex;
use shibafu_api::OutputChunk;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::model::{ContainerRecord, Status};
use crate::ports::{StdioRequest, Supervisor};
use crate::status::Backoff;

/// What waiters watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitState {
    /// Running, paused or restarting (Docker's `IsRunning`).
    pub running: bool,
    /// Number of exits seen since the daemon started.
    pub exits: u64,
    pub exit_code: i64,
    pub removed: bool,
}

/// An attach made before the container started: its stdin is buffered in
/// a pipe and its output forwarded once the process exists.
pub struct PendingAttach {
    pub req: StdioRequest,
    pub stdin: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>,
    pub out: mpsc::Sender<OutputChunk>,
}

pub struct Ctr {
    pub id: String,
    rec: Mutex<ContainerRecord>,
    /// Serialises lifecycle operations on this container.
    pub op: Arc<tokio::sync::Mutex<()>>,
    pub sup: Mutex<Option<Arc<dyn Supervisor>>>,
    pub wait_tx: watch::Sender<WaitState>,
    pub pending: Mutex<Vec<PendingAttach>>,
    pub exec_ids: Mutex<Vec<String>>,
    /// Health checker.
    pub health_task: Mutex<Option<AbortHandle>>,
    pub monitor_task: Mutex<Option<AbortHandle>>,
    pub restart_task: Mutex<Option<AbortHandle>>,
    /// Bumped whenever a pending restart must be abandoned.
    pub restart_gen: AtomicU64,
    pub backoff: Mutex<Backoff>,
}

impl Ctr {
    pub fn new(rec: ContainerRecord) -> Arc<Ctr> {
        let running = matches!(
            rec.state.status,
            Status::Running | Status::Paused | Status::Restarting
        );
        let (wait_tx, _) = watch::channel(WaitState {
            running,
            exits: 0,
            exit_code: rec.state.exit_code,
            removed: false,
        });
        Arc::new(Ctr {
            id: rec.id.clone(),
            rec: Mutex::new(rec),
            op: Arc::new(tokio::sync::Mutex::new(())),
            sup: Mutex::new(None),
            wait_tx,
            pending: Mutex::new(Vec::new()),
            exec_ids: Mutex::new(Vec::new()),
            health_task: Mutex::new(None),
            monitor_task: Mutex::new(None),
            restart_task: Mutex::new(None),
            restart_gen: AtomicU64::new(0),
            backoff: Mutex::new(Backoff::default()),
        })
    }

    /// A snapshot of the record.
    pub fn rec(&self) -> ContainerRecord {
        self.rec.lock().clone()
    }

    pub fn name(&self) -> String {
        self.rec.lock().name.clone()
    }

    pub fn status(&self) -> Status {
        self.rec.lock().state.status
    }

    /// Change the record in memory; returns the new snapshot (the caller
    /// persists it).
    pub fn update(&self, f: impl FnOnce(&mut ContainerRecord)) -> ContainerRecord {
        let mut r = self.rec.lock();
        f(&mut r);
        r.clone()
    }

    pub fn supervisor(&self) -> Option<Arc<dyn Supervisor>> {
        self.sup.lock().clone()
    }

    pub fn set_running(&self, running: bool) {
        self.wait_tx.send_modify(|w| w.running = running);
    }

    pub fn publish_exit(&self, code: i64, still_running: bool) {
        self.wait_tx.send_modify(|w| {
            w.exits += 1;
            w.exit_code = code;
            w.running = still_running;
        });
    }

    pub fn publish_removed(&self) {
        self.wait_tx.send_modify(|w| {
            w.removed = true;
            w.running = false;
        });
    }

    pub fn abort_tasks(&self) {
        for slot in [&self.health_task, &self.monitor_task, &self.restart_task] {
            if let Some(h) = slot.lock().take() {
                h.abort();
            }
        }
    }
}
