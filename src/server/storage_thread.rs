//! The I/O threads: one owns the WAL and makes ready batches durable; another writes the
//! node's own snapshots, so that a large snapshot file (written, fsynced, read back, renamed)
//! never holds up the commit path.
//!
//! The reactor hands it one job at a time per ready batch (the core allows one batch in flight),
//! so while a sync runs the next batch forms in the core: one `fdatasync`/`msync` covers every
//! entry that arrived meanwhile (group commit). Jobs are done strictly in order. Any storage error
//! is fatal to the node: it can no longer promise durability, so it must stop acknowledging.
//! When no job arrived for `CONFIRM_IDLE` after a batch, the WAL thread confirms that batch
//! (`Wal::confirm_if_idle`); after each batch it takes a step of allocating the next segment.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::Waker;

use crate::raft::{Entry, HardState, Snapshot};
use crate::storage::{Meta, MetaStore, SnapshotStore, StorageError, Wal};

/// Idle time after a batch before the WAL confirms it (see `Wal::confirm_if_idle`).
const CONFIRM_IDLE: Duration = Duration::from_millis(10);

/// The WAL and the meta file, owned together by the WAL thread: term and vote go to both.
pub struct LogStores {
    pub wal: Wal,
    pub meta: MetaStore,
}

/// Work for the storage threads.
#[derive(Debug)]
pub enum IoJob {
    /// Persist a ready batch: snapshot first, then entries, then hard state, one sync.
    Persist { snapshot: Option<Snapshot>, entries: Vec<Entry>, hard_state: Option<HardState> },
    /// Compact the log under a snapshot file that is already durable.
    CompactLog(Snapshot),
    /// Save the node's own snapshot (on the snapshot thread); `SnapshotSaved` reports it durable.
    SaveSnapshot(Snapshot),
}

#[derive(Debug)]
pub enum IoDone {
    Persisted {
        log_bytes: u64,
    },
    /// The node's own snapshot file is durable; the log may now be compacted under it.
    SnapshotSaved(Snapshot),
    Compacted {
        snapshot: Snapshot,
        log_bytes: u64,
    },
    Failed(String),
}

pub struct StorageThread {
    jobs: Option<Sender<IoJob>>,
    snapshots: Option<Sender<Snapshot>>,
    done: Receiver<IoDone>,
    handles: Vec<JoinHandle<()>>,
}

impl StorageThread {
    pub fn spawn(
        stores: LogStores,
        snapshots: SnapshotStore,
        segment_bytes: u64,
        waker: Arc<Waker>,
    ) -> std::io::Result<Self> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<IoJob>();
        let (snap_tx, snap_rx) = mpsc::channel::<Snapshot>();
        let (done_tx, done_rx) = mpsc::channel::<IoDone>();
        let wal_done = done_tx.clone();
        let wal_waker = Arc::clone(&waker);
        let wal_snapshots = snapshots.clone();
        let wal_thread = std::thread::Builder::new().name("raft-wal".into()).spawn(move || {
            let mut worker = Worker { wal: stores.wal, meta: stores.meta, snapshots: wal_snapshots, segment_bytes };
            loop {
                let job = if worker.wal.is_unconfirmed() {
                    jobs_rx.recv_timeout(CONFIRM_IDLE)
                } else {
                    jobs_rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                };
                let job = match job {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        let result = worker.wal.confirm_if_idle().map(|_| ());
                        if let Err(e) = result {
                            report(&wal_done, &wal_waker, Err(e));
                            return;
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                let result = match job {
                    IoJob::Persist { snapshot, entries, hard_state } => worker
                        .persist(snapshot.as_ref(), &entries, hard_state)
                        .map(|()| IoDone::Persisted { log_bytes: worker.log_bytes() }),
                    IoJob::CompactLog(snapshot) => worker
                        .compact_log(&snapshot)
                        .map(|()| IoDone::Compacted { log_bytes: worker.log_bytes(), snapshot }),
                    IoJob::SaveSnapshot(_) => Err(StorageError::Invalid("snapshot job on the WAL thread".into())),
                };
                if !report(&wal_done, &wal_waker, result) {
                    return; // nothing more may be written after a storage failure
                }
                if let Err(e) = worker.wal.allocate_ahead() {
                    report(&wal_done, &wal_waker, Err(e));
                    return;
                }
            }
        })?;
        let snapshot_thread = std::thread::Builder::new().name("raft-snapshot".into()).spawn(move || {
            for snapshot in snap_rx {
                // `save` prunes old snapshots once the new one is installed.
                let result = snapshots.save(&snapshot).map(|_| IoDone::SnapshotSaved(snapshot));
                if !report(&done_tx, &waker, result) {
                    return;
                }
            }
        })?;
        Ok(StorageThread {
            jobs: Some(jobs_tx),
            snapshots: Some(snap_tx),
            done: done_rx,
            handles: vec![wal_thread, snapshot_thread],
        })
    }

    /// Queues a job on the thread that does it. Fails only if that thread is gone (after a
    /// storage failure).
    pub fn submit(&self, job: IoJob) -> Result<(), String> {
        let sent = match (job, &self.jobs, &self.snapshots) {
            (IoJob::SaveSnapshot(snapshot), _, Some(tx)) => tx.send(snapshot).is_ok(),
            (IoJob::SaveSnapshot(_), _, None) => false,
            (job, Some(tx), _) => tx.send(job).is_ok(),
            (_, None, _) => false,
        };
        if sent {
            Ok(())
        } else {
            Err("a storage thread has stopped".into())
        }
    }

    pub fn try_done(&self) -> Option<IoDone> {
        self.done.try_recv().ok()
    }
}

/// Sends a job's outcome to the reactor and wakes it. Returns false if the thread must stop.
fn report(done: &Sender<IoDone>, waker: &Waker, result: Result<IoDone, StorageError>) -> bool {
    let failed = result.is_err();
    let message = result.unwrap_or_else(|e| IoDone::Failed(e.to_string()));
    if done.send(message).is_err() {
        return false;
    }
    // A failed wake only delays the reactor until its next tick.
    let _ = waker.wake();
    !failed
}

impl Drop for StorageThread {
    fn drop(&mut self) {
        // Closing the channels lets the threads finish queued jobs and exit.
        self.jobs.take();
        self.snapshots.take();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

struct Worker {
    wal: Wal,
    meta: MetaStore,
    snapshots: SnapshotStore,
    segment_bytes: u64,
}

impl Worker {
    fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), StorageError> {
        if let Some(snapshot) = snapshot {
            // The snapshot file is durable (renamed, directory synced) before the log forgets
            // anything under it.
            self.snapshots.save(snapshot)?;
            self.wal.compact(snapshot.meta.index, snapshot.meta.term)?;
        }
        self.wal.append(entries)?;
        if let Some(hs) = hard_state {
            self.wal.set_hard_state(hs)?;
            // Term and vote also go to the meta file (two synced slots) before the batch is
            // reported durable; commit-only changes stay in the WAL.
            let m = self.meta.meta();
            if (hs.term, hs.vote) != (m.term, m.vote) {
                self.meta.store(&Meta { term: hs.term, vote: hs.vote, ..m })?;
            }
        }
        self.wal.sync()
    }

    fn compact_log(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.wal.compact(snapshot.meta.index, snapshot.meta.term)
    }

    fn log_bytes(&self) -> u64 {
        let (_, tail_offset) = self.wal.durable_tail();
        let full_segments = self.wal.segment_paths().len().saturating_sub(1) as u64;
        full_segments * self.segment_bytes + tail_offset
    }
}
