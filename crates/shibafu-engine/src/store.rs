//! The state database (`<data-root>/state.redb`): container records, the
//! names index and volumes, as JSON values. Every write is one transaction
//! so a record and its name never disagree on disk.
//!
//! Durability: an fsync costs 0.5-10 ms on this kind of disk and a
//! `run --rm` writes its record five times. What a user asked for (a new
//! record, a rename or config change, a delete, volumes) is committed
//! durably before the call returns, and so is a container becoming running
//! or paused (restart policies after a crash depend on it). A change of
//! only the run state to exited/restarting/dead is committed without fsync
//! and made durable by a flusher thread within [`FLUSH_DELAY`] (or sooner,
//! by the next durable commit). Every commit is atomic either way, so a
//! crash loses at most such state changes, never
//! consistency; recovery re-learns them from the supervisors and their exit
//! files. A write that changes nothing is skipped.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::error::Result;
use crate::model::{ContainerRecord, VolumeRecord};

const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");
const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");

/// Longest time a state-only change stays in memory before it is fsynced.
pub const FLUSH_DELAY: Duration = Duration::from_millis(100);

/// Readable records and (id, error) of unreadable ones.
pub type Loaded = (Vec<ContainerRecord>, Vec<(String, String)>);

#[derive(Default)]
struct FlushState {
    /// When the oldest commit not yet fsynced was made.
    dirty_since: Option<Instant>,
    shutdown: bool,
}

/// Group commit: how far durable commits have been made durable.
#[derive(Default)]
struct SyncState {
    /// Commits numbered up to this one are on disk.
    synced: u64,
    /// A thread is making them so.
    syncing: bool,
}

struct Inner {
    db: Database,
    flush: Mutex<FlushState>,
    cv: Condvar,
    /// Commits made so far (numbered after they complete).
    committed: AtomicU64,
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
}

impl Inner {
    /// Commit durably, as a group: the change is committed without fsync,
    /// then one empty durable commit persists it together with every other
    /// committed meanwhile (by redb's rule, a durable commit persists the
    /// non-durable ones before it). Concurrent starts then share fsyncs
    /// (3-5 ms each on this disk under load) instead of queueing one per
    /// change behind redb's single writer. Returns once the change is on
    /// disk.
    fn commit_durable(&self, mut tx: WriteTransaction) -> Result<()> {
        tx.set_durability(Durability::None)
            .map_err(redb::Error::from)?;
        tx.commit()?;
        let mine = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let r = self.wait_synced(mine);
        if r.is_err() {
            // Committed but not known durable: the flusher keeps trying.
            self.mark_dirty(Instant::now());
        }
        r
    }

    /// Waits until commit number `mine` is durable, making it so if no
    /// other thread is. A commit numbered at most `target` completed before
    /// `target` was read, hence before the flush's write transaction began.
    fn wait_synced(&self, mine: u64) -> Result<()> {
        let mut st = self.sync.lock().unwrap();
        loop {
            if st.synced >= mine {
                return Ok(());
            }
            if st.syncing {
                st = self.sync_cv.wait(st).unwrap();
                continue;
            }
            st.syncing = true;
            let target = self.committed.load(Ordering::SeqCst);
            drop(st);
            let r = self.flush_now();
            st = self.sync.lock().unwrap();
            st.syncing = false;
            if r.is_ok() {
                st.synced = st.synced.max(target);
            }
            self.sync_cv.notify_all();
            // On failure the waiters retry, one at a time.
            r?;
        }
    }

    /// Commit with redb's default (immediate) durability. Clearing the
    /// dirty mark before the commit is right because redb serialises
    /// writers: every earlier non-durable commit is persisted by this one,
    /// every later one marks dirty again.
    fn commit_immediate(&self, tx: WriteTransaction) -> Result<()> {
        let was = self.flush.lock().unwrap().dirty_since.take();
        if let Err(e) = tx.commit() {
            if let Some(t) = was {
                self.mark_dirty(t);
            }
            return Err(e.into());
        }
        Ok(())
    }

    fn commit_lazy(&self, mut tx: WriteTransaction) -> Result<()> {
        tx.set_durability(Durability::None)
            .map_err(redb::Error::from)?;
        tx.commit()?;
        self.mark_dirty(Instant::now());
        Ok(())
    }

    fn mark_dirty(&self, since: Instant) {
        let mut st = self.flush.lock().unwrap();
        if st.dirty_since.is_none() {
            st.dirty_since = Some(since);
            self.cv.notify_one();
        }
    }

    /// An empty durable commit persists every non-durable one before it.
    fn flush_now(&self) -> Result<()> {
        let tx = self.db.begin_write()?;
        self.commit_immediate(tx)
    }

    /// Insert or replace a record; keeps the names index in step (drops the
    /// old name on rename). Durable unless only the run state changed.
    fn put_container(&self, rec: &ContainerRecord) -> Result<()> {
        let json = serde_json::to_vec(rec)?;
        let tx = self.db.begin_write()?;
        let durable;
        {
            let mut t = tx.open_table(CONTAINERS)?;
            let old = t.get(rec.id.as_str())?.map(|v| v.value().to_vec());
            if old.as_deref() == Some(json.as_slice()) {
                drop(t);
                tx.abort()?;
                return Ok(());
            }
            let old = old.and_then(|v| serde_json::from_slice::<ContainerRecord>(&v).ok());
            durable = match &old {
                Some(old) => identity(old)? != identity(rec)? || !relearnable(rec),
                None => true,
            };
            t.insert(rec.id.as_str(), json.as_slice())?;
            let mut names = tx.open_table(NAMES)?;
            if let Some(old) = &old {
                if old.name != rec.name {
                    names.remove(old.name.as_str())?;
                }
            }
            names.insert(rec.name.as_str(), rec.id.as_str())?;
        }
        if durable {
            self.commit_durable(tx)
        } else {
            self.commit_lazy(tx)
        }
    }

    fn delete_container(&self, id: &str, name: &str) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            tx.open_table(CONTAINERS)?.remove(id)?;
            let mut names = tx.open_table(NAMES)?;
            let owned = names.get(name)?.map(|v| v.value() == id).unwrap_or(false);
            if owned {
                names.remove(name)?;
            }
        }
        self.commit_durable(tx)
    }

    fn flusher(self: Arc<Self>) {
        let mut st = self.flush.lock().unwrap();
        loop {
            match st.dirty_since {
                None if st.shutdown => return,
                None => st = self.cv.wait(st).unwrap(),
                Some(t) => {
                    let due = t + FLUSH_DELAY;
                    let now = Instant::now();
                    if now < due && !st.shutdown {
                        st = self.cv.wait_timeout(st, due - now).unwrap().0;
                        continue;
                    }
                    drop(st);
                    if let Err(e) = self.flush_now() {
                        tracing::error!(error = %e, "cannot flush the state database");
                        // Retry after another delay rather than spin.
                        std::thread::sleep(FLUSH_DELAY);
                    }
                    st = self.flush.lock().unwrap();
                }
            }
        }
    }
}

async fn blocking(f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::error::EngineError::Db(format!("state database task: {e}")))?
}

pub struct Store {
    inner: Arc<Inner>,
    flusher: Option<JoinHandle<()>>,
}

impl Drop for Store {
    /// Flush what is pending and stop the flusher, so the database file is
    /// closed (and complete) when the store is gone.
    fn drop(&mut self) {
        self.inner.flush.lock().unwrap().shutdown = true;
        self.inner.cv.notify_one();
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
    }
}

/// A run state recovery can re-learn if it is lost: an exit (the
/// supervisor's exit file, or its absence, tells) or a pending restart. A
/// container that became running or paused must be known as such after a
/// crash: a `--restart always` container killed while the daemon is down
/// is restarted only if its record says it was running.
fn relearnable(rec: &ContainerRecord) -> bool {
    !matches!(
        rec.state.status,
        crate::model::Status::Running | crate::model::Status::Paused
    )
}

/// The record without its run state: equal for two versions of a record
/// iff they differ only in what a start/stop/exit changes.
fn identity(rec: &ContainerRecord) -> Result<Vec<u8>> {
    let mut r = rec.clone();
    r.state = Default::default();
    r.restart_count = 0;
    Ok(serde_json::to_vec(&r)?)
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let db = Database::create(path)?;
        // Create the tables so readers never see "table does not exist".
        let tx = db.begin_write()?;
        {
            tx.open_table(CONTAINERS)?;
            tx.open_table(NAMES)?;
            tx.open_table(VOLUMES)?;
        }
        tx.commit()?;
        let inner = Arc::new(Inner {
            db,
            flush: Mutex::new(FlushState::default()),
            cv: Condvar::new(),
            committed: AtomicU64::new(0),
            sync: Mutex::new(SyncState::default()),
            sync_cv: Condvar::new(),
        });
        let i2 = inner.clone();
        let flusher = std::thread::Builder::new()
            .name("state-flush".into())
            .spawn(move || i2.flusher())
            .map_err(|e| crate::error::EngineError::Db(format!("starting the flusher: {e}")))?;
        Ok(Store {
            inner,
            flusher: Some(flusher),
        })
    }

    fn db(&self) -> &Database {
        &self.inner.db
    }

    /// Make every commit so far durable now (daemon shutdown).
    pub fn flush(&self) -> Result<()> {
        if self.inner.flush.lock().unwrap().dirty_since.is_none() {
            return Ok(());
        }
        self.inner.flush_now()
    }

    /// Insert or replace a record; keeps the names index in step (drops the
    /// old name on rename). Durable unless only the run state changed.
    pub fn put_container(&self, rec: &ContainerRecord) -> Result<()> {
        self.inner.put_container(rec)
    }

    pub fn delete_container(&self, id: &str, name: &str) -> Result<()> {
        self.inner.delete_container(id, name)
    }

    /// [`Store::put_container`] on the blocking pool: a durable commit
    /// waits for an fsync, which must not hold one of the few async
    /// workers while other requests queue behind it.
    pub async fn put_container_async(&self, rec: &ContainerRecord) -> Result<()> {
        let (inner, rec) = (self.inner.clone(), rec.clone());
        blocking(move || inner.put_container(&rec)).await
    }

    /// [`Store::delete_container`] on the blocking pool.
    pub async fn delete_container_async(&self, id: &str, name: &str) -> Result<()> {
        let (inner, id, name) = (self.inner.clone(), id.to_string(), name.to_string());
        blocking(move || inner.delete_container(&id, &name)).await
    }

    /// All records; unreadable ones are returned as errors by ID so start-up
    /// can report (and drop) them.
    pub fn containers(&self) -> Result<Loaded> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(CONTAINERS)?;
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            match serde_json::from_slice::<ContainerRecord>(v.value()) {
                Ok(r) => ok.push(r),
                Err(e) => bad.push((k.value().to_string(), e.to_string())),
            }
        }
        Ok((ok, bad))
    }

    /// The names index, to reconcile with the records at start-up.
    pub fn names(&self) -> Result<Vec<(String, String)>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(NAMES)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    pub fn delete_name(&self, name: &str) -> Result<()> {
        let tx = self.db().begin_write()?;
        tx.open_table(NAMES)?.remove(name)?;
        self.inner.commit_durable(tx)
    }

    pub fn put_volume(&self, v: &VolumeRecord) -> Result<()> {
        let json = serde_json::to_vec(v)?;
        let tx = self.db().begin_write()?;
        tx.open_table(VOLUMES)?
            .insert(v.name.as_str(), json.as_slice())?;
        self.inner.commit_durable(tx)
    }

    pub fn delete_volume(&self, name: &str) -> Result<()> {
        let tx = self.db().begin_write()?;
        tx.open_table(VOLUMES)?.remove(name)?;
        self.inner.commit_durable(tx)
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(VOLUMES)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            if let Ok(r) = serde_json::from_slice::<VolumeRecord>(v.value()) {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_names_and_rename_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let mut rec = ContainerRecord {
            id: "a".repeat(64),
            name: "web".into(),
            ..Default::default()
        };
        {
            let s = Store::open(&path).unwrap();
            s.put_container(&rec).unwrap();
            rec.name = "web2".into();
            s.put_container(&rec).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let (recs, bad) = s.containers().unwrap();
        assert!(bad.is_empty());
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].name, "web2");
        assert_eq!(
            s.names().unwrap(),
            vec![("web2".to_string(), "a".repeat(64))]
        );
        s.delete_container(&rec.id, &rec.name).unwrap();
        assert!(s.containers().unwrap().0.is_empty());
        assert!(s.names().unwrap().is_empty());
    }

    fn pending(s: &Store) -> bool {
        s.inner.flush.lock().unwrap().dirty_since.is_some()
    }

    #[test]
    fn becoming_running_is_durable_exiting_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.redb")).unwrap();
        let mut rec = ContainerRecord {
            id: "c".repeat(64),
            name: "svc".into(),
            ..Default::default()
        };
        s.put_container(&rec).unwrap();
        rec.state.status = crate::model::Status::Running;
        rec.state.pid = 7;
        s.put_container(&rec).unwrap();
        assert!(!pending(&s), "running must survive a daemon crash");
        rec.state.status = crate::model::Status::Exited;
        s.put_container(&rec).unwrap();
        assert!(pending(&s), "an exit is re-learnt from the supervisor");
    }

    #[test]
    fn state_changes_are_flushed_soon_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let mut rec = ContainerRecord {
            id: "b".repeat(64),
            name: "job".into(),
            ..Default::default()
        };
        {
            let s = Store::open(&path).unwrap();
            s.put_container(&rec).unwrap();
            assert!(!pending(&s), "a new record is committed durably");
            rec.state.pid = 42;
            rec.restart_count = 1;
            s.put_container(&rec).unwrap();
            assert!(pending(&s), "a state-only change waits for the flusher");
            let deadline = Instant::now() + FLUSH_DELAY * 20;
            while pending(&s) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(!pending(&s), "the flusher made it durable");
            rec.state.pid = 43;
            s.put_container(&rec).unwrap();
            // Rewriting the same record commits nothing.
            s.put_container(&rec).unwrap();
            rec.name = "job2".into();
            s.put_container(&rec).unwrap();
            assert!(
                !pending(&s),
                "a rename is durable and persists the state change too"
            );
            rec.state.pid = 44;
            s.put_container(&rec).unwrap();
            // Dropped with a change pending: the drop flushes it.
        }
        let s = Store::open(&path).unwrap();
        let (recs, _) = s.containers().unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].state.pid, 44);
        assert_eq!(recs[0].restart_count, 1);
        assert_eq!(recs[0].name, "job2");
        assert_eq!(
            s.names().unwrap(),
            vec![("job2".to_string(), "b".repeat(64))]
        );
    }

    #[test]
    fn concurrent_durable_commits_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let s = Arc::new(Store::open(&path).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for j in 0..5 {
                        let rec = ContainerRecord {
                            id: format!("{i}-{j}"),
                            name: format!("n{i}-{j}"),
                            ..Default::default()
                        };
                        s.put_container(&rec).unwrap();
                        // Returned: numbered and covered by a flush.
                        let st = s.inner.sync.lock().unwrap();
                        assert!(st.synced >= 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let committed = s.inner.committed.load(Ordering::SeqCst);
        assert_eq!(committed, 40);
        assert_eq!(s.inner.sync.lock().unwrap().synced, committed);
        assert!(!pending(&s));
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.containers().unwrap().0.len(), 40);
    }

    #[tokio::test]
    async fn async_puts_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.redb")).unwrap();
        let rec = ContainerRecord {
            id: "b".repeat(64),
            name: "x".into(),
            ..Default::default()
        };
        s.put_container_async(&rec).await.unwrap();
        assert_eq!(s.names().unwrap().len(), 1);
        s.delete_container_async(&rec.id, &rec.name).await.unwrap();
        assert!(s.containers().unwrap().0.is_empty());
        assert!(s.names().unwrap().is_empty());
    }

    #[test]
    fn volumes_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let v = VolumeRecord {
            name: "data".into(),
            anonymous: true,
            ..Default::default()
        };
        s.put_volume(&v).unwrap();
        assert_eq!(s.volumes().unwrap(), vec![v]);
        s.delete_volume("data").unwrap();
        assert!(s.volumes().unwrap().is_empty());
    }
}
