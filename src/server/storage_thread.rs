//! The I/O thread: owns the WAL and the snapshot store, and makes ready batches durable.
//!
//! The reactor hands it one job at a time per ready batch (the core allows one batch in flight),
//! so while a sync runs the next batch forms in the core: one `fdatasync`/`msync` covers every
//! entry that arrived meanwhile (group commit). Jobs are done strictly in order. Any storage error
//! is fatal to the node: it can no longer promise durability, so it must stop acknowledging.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::Waker;

use crate::raft::{Entry, HardState, Snapshot};
use crate::storage::{SnapshotStore, StorageError, Wal};

/// Snapshots kept on disk (the newest is used; the one before is a fallback for an operator).
pub const SNAPSHOTS_KEPT: usize = 2;

pub enum IoJob {
    /// Persist a ready batch: snapshot first, then entries, then hard state, one sync.
    Persist { snapshot: Option<Snapshot>, entries: Vec<Entry>, hard_state: Option<HardState> },
    /// Save a snapshot the node took of its own state machine, then compact the log under it.
    Compact(Snapshot),
}

pub enum IoDone {
    Persisted { log_bytes: u64 },
    Compacted { snapshot: Snapshot, log_bytes: u64 },
    Failed(String),
}

pub struct StorageThread {
    jobs: Option<Sender<IoJob>>,
    done: Receiver<IoDone>,
    handle: Option<JoinHandle<()>>,
}

impl StorageThread {
    pub fn spawn(wal: Wal, snapshots: SnapshotStore, segment_bytes: u64, waker: Arc<Waker>) -> std::io::Result<Self> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<IoJob>();
        let (done_tx, done_rx) = mpsc::channel::<IoDone>();
        let handle = std::thread::Builder::new().name("raft-io".into()).spawn(move || {
            let mut worker = Worker { wal, snapshots, segment_bytes };
            for job in jobs_rx {
                let result = match job {
                    IoJob::Persist { snapshot, entries, hard_state } => worker
                        .persist(snapshot.as_ref(), &entries, hard_state)
                        .map(|()| IoDone::Persisted { log_bytes: worker.log_bytes() }),
                    IoJob::Compact(snapshot) => worker
                        .compact(&snapshot)
                        .map(|()| IoDone::Compacted { log_bytes: worker.log_bytes(), snapshot }),
                };
                let failed = result.is_err();
                let message = result.unwrap_or_else(|e| IoDone::Failed(e.to_string()));
                if done_tx.send(message).is_err() {
                    return;
                }
                // A failed wake only delays the reactor until its next tick.
                let _ = waker.wake();
                if failed {
                    return; // nothing more may be written after a storage failure
                }
            }
        })?;
        Ok(StorageThread { jobs: Some(jobs_tx), done: done_rx, handle: Some(handle) })
    }

    /// Queues a job. Fails only if the thread is gone (after a storage failure).
    pub fn submit(&self, job: IoJob) -> Result<(), String> {
        match &self.jobs {
            Some(tx) => tx.send(job).map_err(|_| "storage thread has stopped".to_string()),
            None => Err("storage thread has stopped".into()),
        }
    }

    pub fn try_done(&self) -> Option<IoDone> {
        self.done.try_recv().ok()
    }
}

impl Drop for StorageThread {
    fn drop(&mut self) {
        self.jobs.take(); // closes the channel: the thread finishes queued jobs and exits
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

struct Worker {
    wal: Wal,
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
            self.snapshots.prune(SNAPSHOTS_KEPT)?;
        }
        self.wal.append(entries)?;
        if let Some(hs) = hard_state {
            self.wal.set_hard_state(hs)?;
        }
        self.wal.sync()
    }

    fn compact(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.snapshots.save(snapshot)?;
        self.wal.compact(snapshot.meta.index, snapshot.meta.term)?;
        self.snapshots.prune(SNAPSHOTS_KEPT)?;
        Ok(())
    }

    fn log_bytes(&self) -> u64 {
        let (_, tail_offset) = self.wal.durable_tail();
        let full_segments = self.wal.segment_paths().len().saturating_sub(1) as u64;
        full_segments * self.segment_bytes + tail_offset
    }
}
