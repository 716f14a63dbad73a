//! The storage work of a node, in two lanes, and the threads that run them in `raftd`.
//!
//! - The **WAL lane** ([`WalWorker`]) makes ready batches durable (term, vote and the recovery
//!   state also go to the two-slot meta file), compacts the log under snapshots, and reads
//!   evicted entries back for followers. The reactor hands it one batch at a time (the core allows
//!   one in flight), so while a sync runs the next batch forms in the core: one sync covers every
//!   entry that arrived meanwhile (group commit). After a batch is reported durable it takes a
//!   step of allocating the next segment; when idle after a batch it confirms that batch
//!   (`Wal::confirm_if_idle`, so that damage to it is later told from a torn write).
//! - The **snapshot lane** ([`SnapshotWorker`]) serializes and writes the node's own snapshots
//!   (from a [`FrozenKv`] the event loop took in O(1), so the loop never waits for an image of
//!   the whole state), reads snapshot
//!   images in chunks for followers, and receives a leader's snapshot chunk by chunk, verifying
//!   and decoding it before it is installed. Large snapshot files never hold up the commit path.
//!
//! Each lane does its jobs strictly in order. The workers are plain values: `raftd` runs each on
//! a thread ([`StorageThread`]), and by default makes a ready batch durable on the event loop
//! itself while the WAL thread is idle (`wal_lane.rs`: two thread hand-offs fewer per batch);
//! the simulator runs them itself, when its seed says (a batch finished at once is one of its
//! schedules). A storage
//! error on the WAL lane, or on the snapshot lane while saving the node's own snapshot, is fatal
//! to the node: it can no longer promise durability, so it must stop acknowledging. A snapshot
//! that cannot be read for a follower, or a received one that fails verification, is reported and
//! the transfer retried.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::Waker;

use super::node_metrics::{NodeMetrics, SnapshotOp};
use super::snapshot_transfer::ChunkRead;
use super::wal_lane::WalLane;
use crate::kv::{FrozenKv, KvStore};
use crate::raft::{Entry, HardState, LoadRequest, NodeId, RecoveryChange, Snapshot, SnapshotMeta, Term};
use crate::storage::snapshot::snapshot_name;
use crate::storage::{
    load_snapshot, FileSystem, MetaStore, RecoveryGuard, RecoveryReason, SnapshotReader, SnapshotStore, SnapshotWriter,
    StorageError, Wal,
};
use crate::wire::SnapshotChunk;

/// Idle time after a batch before the WAL confirms it (see `Wal::confirm_if_idle`).
pub const CONFIRM_IDLE: Duration = Duration::from_millis(10);

/// Readers kept open on the snapshot lane (one per snapshot being sent; opening verifies the
/// whole file, so a reader is reused for every chunk of its file).
const SNAPSHOT_READERS_MAX: usize = 4;

/// Work for the storage.
#[derive(Debug)]
pub enum IoJob {
    /// WAL lane: persist a ready batch. A snapshot accepted from a leader is already installed
    /// (the snapshot lane verified and renamed it): the log is compacted under it first.
    Persist {
        snapshot: Option<SnapshotMeta>,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        recovery: Option<RecoveryChange>,
    },
    /// WAL lane: compact the log under the node's own snapshot, which is durable.
    CompactLog(SnapshotMeta),
    /// WAL lane: read back entries the core evicted from memory, for a follower.
    LoadEntries(LoadRequest),
    /// Snapshot lane: serialize the frozen state machine (its applied index is `meta.index`) and
    /// save it as the node's own snapshot; `SnapshotSaved` reports it durable.
    SaveSnapshot { meta: SnapshotMeta, state: FrozenKv },
    /// Snapshot lane: read a chunk of a snapshot image for a follower.
    ReadSnapshotImage(ChunkRead),
    /// Snapshot lane: append a chunk received from a leader; the last one is verified, decoded
    /// and installed.
    ReceiveSnapshotChunk { chunk: SnapshotChunk, first: bool, last: bool },
    /// Snapshot lane: free a state machine the loop replaced (a large map takes tens of ms).
    DropState(FrozenKv),
}

/// Which lane a job runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Wal,
    Snapshot,
}

impl IoJob {
    pub fn lane(&self) -> Lane {
        match self {
            IoJob::Persist { .. } | IoJob::CompactLog(_) | IoJob::LoadEntries(_) => Lane::Wal,
            IoJob::SaveSnapshot { .. }
            | IoJob::DropState(_)
            | IoJob::ReadSnapshotImage(_)
            | IoJob::ReceiveSnapshotChunk { .. } => Lane::Snapshot,
        }
    }
}

/// What a job did.
#[derive(Debug)]
pub enum IoDone {
    Persisted {
        log_bytes: u64,
    },
    /// The node's own snapshot file is durable; the log may now be compacted under it.
    /// `image_bytes` is the size of its state machine image (for the snapshot policy).
    SnapshotSaved {
        meta: SnapshotMeta,
        image_bytes: u64,
    },
    Compacted {
        meta: SnapshotMeta,
        log_bytes: u64,
    },
    /// The entries of a `LoadEntries` job; `None` if they were compacted meanwhile.
    Loaded {
        request: LoadRequest,
        entries: Option<Vec<Entry>>,
    },
    SnapshotImageRead {
        read: ChunkRead,
        total: u64,
        data: Bytes,
    },
    /// The snapshot a follower needs is not on disk any more (pruned by a newer one).
    SnapshotImageUnavailable {
        read: ChunkRead,
        why: String,
    },
    /// More chunks of the incoming snapshot are welcome.
    SnapshotChunkStored,
    /// A replaced state machine is freed.
    StateDropped,
    /// A leader's snapshot arrived whole, is verified and installed, and the state machine it
    /// holds is built: the core may now be told.
    SnapshotReceived {
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        kv: Box<KvStore>,
        /// Size of the state machine image (for the snapshot policy).
        image_bytes: u64,
    },
    /// A leader's snapshot failed verification (or could not be stored) and was discarded.
    SnapshotRejected {
        from: NodeId,
        meta: SnapshotMeta,
        why: String,
    },
    Failed(String),
}

// ----- the WAL lane ------------------------------------------------------------------------------

/// Runs WAL-lane jobs against the log and the meta file.
pub struct WalWorker {
    wal: Wal,
    meta: MetaStore,
    segment_bytes: u64,
    metrics: Option<Arc<NodeMetrics>>,
}

impl WalWorker {
    pub fn new(wal: Wal, meta: MetaStore, segment_bytes: u64) -> WalWorker {
        WalWorker { wal, meta, segment_bytes, metrics: None }
    }

    /// Records sync durations and batch sizes in `metrics` (shared with the reactor thread).
    pub fn with_metrics(self, metrics: Arc<NodeMetrics>) -> WalWorker {
        WalWorker { metrics: Some(metrics), ..self }
    }

    /// Runs one WAL-lane job. An error means durability can no longer be promised.
    pub fn run(&mut self, job: IoJob) -> Result<IoDone, StorageError> {
        match job {
            IoJob::Persist { snapshot, entries, hard_state, recovery } => {
                self.persist(snapshot.as_ref(), &entries, hard_state, recovery)?;
                Ok(IoDone::Persisted { log_bytes: self.log_bytes() })
            }
            IoJob::CompactLog(meta) => {
                self.wal.compact(meta.index, meta.term)?;
                Ok(IoDone::Compacted { log_bytes: self.log_bytes(), meta })
            }
            IoJob::LoadEntries(request) => Ok(IoDone::Loaded { request, entries: self.load(request)? }),
            other => Err(StorageError::Invalid(format!("{other:?} is not a WAL job"))),
        }
    }

    /// Work to do after a job was reported: a step of allocating the next segment (so that a
    /// rotation never waits for a whole segment of zeros, and a full disk shows up early).
    pub fn after_job(&mut self) -> Result<(), StorageError> {
        self.wal.allocate_ahead().map(|_| ())
    }

    /// Whether `job` could rotate into a segment not yet allocated ahead (a long synced write).
    pub fn may_rotate_unprepared(&self, job: &IoJob) -> bool {
        match job {
            IoJob::Persist { entries, .. } => {
                let bytes = entries.iter().map(|e| e.size_bytes() as u64).sum();
                self.wal.may_rotate_unprepared(entries.len(), bytes)
            }
            _ => true,
        }
    }

    /// Whether `after_job` has a step of allocation to take.
    pub fn wants_allocation(&self) -> bool {
        self.wal.allocation_due()
    }

    /// How long to wait for a job before `idle` is due (`None`: nothing to do when idle).
    pub fn idle_after(&self) -> Option<Duration> {
        self.wal.is_unconfirmed().then_some(CONFIRM_IDLE)
    }

    /// No job came for `idle_after`: confirm the last batch.
    pub fn idle(&mut self) -> Result<(), StorageError> {
        self.wal.confirm_if_idle().map(|_| ())
    }

    fn persist(
        &mut self,
        snapshot: Option<&SnapshotMeta>,
        entries: &[Entry],
        hard_state: Option<HardState>,
        recovery: Option<RecoveryChange>,
    ) -> Result<(), StorageError> {
        if let Some(meta) = snapshot {
            // The snapshot file is durable (installed by the snapshot lane) before the log
            // forgets anything under it.
            self.wal.compact(meta.index, meta.term)?;
        }
        self.wal.append(entries)?;
        if let Some(hs) = hard_state {
            self.wal.set_hard_state(hs)?;
        }
        self.store_meta(hard_state, recovery)?;
        let started = Instant::now();
        self.wal.sync()?;
        if let Some(m) = &self.metrics {
            m.wal_sync_duration.observe_duration(started.elapsed());
            m.wal_batch_entries.observe(entries.len() as u64);
            m.wal_batch_bytes.observe(entries.iter().map(|e| e.size_bytes() as u64).sum());
        }
        Ok(())
    }

    /// Term and vote (and the recovery state) also go to the meta file, two synced slots, before
    /// the batch is reported durable; commit-only changes stay in the WAL.
    fn store_meta(
        &mut self,
        hard_state: Option<HardState>,
        recovery: Option<RecoveryChange>,
    ) -> Result<(), StorageError> {
        let old = self.meta.meta();
        let mut new = old;
        if let Some(hs) = hard_state {
            (new.term, new.vote) = (hs.term, hs.vote);
        }
        match recovery {
            Some(RecoveryChange::Recovering(guard, why)) => {
                let reason =
                    if why.contains("start-up") { RecoveryReason::LogCorruption } else { RecoveryReason::Amnesia };
                new.recovering = Some(RecoveryGuard { index: guard.index, term: guard.term, reason });
            }
            Some(RecoveryChange::Recovered) => new.recovering = None,
            None => {}
        }
        if new != old {
            self.meta.store(&new)?;
        }
        Ok(())
    }

    /// Entries from `request.lo` on (at most `max_bytes`, at least one), or `None` if they are
    /// compacted. Any other failure is a storage error.
    fn load(&self, request: LoadRequest) -> Result<Option<Vec<Entry>>, StorageError> {
        let (lo, end) = (request.lo, self.wal.last_index() + 1);
        if lo < self.wal.first_index() || lo >= end {
            return Ok(None);
        }
        self.wal.entries(lo, end, request.max_bytes).map(Some)
    }

    fn log_bytes(&self) -> u64 {
        let (_, tail_offset) = self.wal.durable_tail();
        let full_segments = self.wal.segment_paths().len().saturating_sub(1) as u64;
        full_segments * self.segment_bytes + tail_offset
    }
}

// ----- the snapshot lane -------------------------------------------------------------------------

/// Runs snapshot-lane jobs against the snapshot directory.
pub struct SnapshotWorker {
    fs: Arc<dyn FileSystem>,
    store: SnapshotStore,
    readers: Vec<(PathBuf, SnapshotReader)>,
    incoming: Option<(SnapshotChunk, SnapshotWriter)>,
    metrics: Option<Arc<NodeMetrics>>,
}

impl SnapshotWorker {
    pub fn new(fs: Arc<dyn FileSystem>, store: SnapshotStore) -> SnapshotWorker {
        SnapshotWorker { fs, store, readers: Vec::new(), incoming: None, metrics: None }
    }

    /// Records save and install durations in `metrics` (shared with the reactor thread).
    pub fn with_metrics(self, metrics: Arc<NodeMetrics>) -> SnapshotWorker {
        SnapshotWorker { metrics: Some(metrics), ..self }
    }

    fn observe(&self, op: SnapshotOp, started: Instant, size_bytes: Option<u64>) {
        if let Some(m) = &self.metrics {
            m.observe_snapshot(op, started.elapsed(), size_bytes);
        }
    }

    /// Runs one snapshot-lane job. Only a failure to save the node's own snapshot is an error;
    /// failed transfers are outcomes (`SnapshotImageUnavailable`, `SnapshotRejected`).
    pub fn run(&mut self, job: IoJob) -> Result<IoDone, StorageError> {
        match job {
            // `save` prunes old snapshots once the new one is installed.
            IoJob::SaveSnapshot { meta, state } => self.save(meta, state),
            IoJob::DropState(state) => {
                drop(state);
                Ok(IoDone::StateDropped)
            }
            IoJob::ReadSnapshotImage(read) => Ok(self.read_image(read)),
            IoJob::ReceiveSnapshotChunk { chunk, first, last } => Ok(self.receive(chunk, first, last)),
            other => Err(StorageError::Invalid(format!("{other:?} is not a snapshot job"))),
        }
    }

    /// Serializes `state` (off the event loop: that is the point of freezing it) and saves it.
    fn save(&mut self, meta: SnapshotMeta, state: FrozenKv) -> Result<IoDone, StorageError> {
        if state.applied_index() != meta.index {
            let why = format!("a frozen state at index {} for snapshot {}", state.applied_index(), meta.index);
            return Err(StorageError::Invalid(why));
        }
        let started = Instant::now();
        let snapshot = Snapshot { meta, data: Bytes::from(state.image()) };
        let image_bytes = snapshot.data.len() as u64;
        self.observe(SnapshotOp::Create, started, Some(image_bytes));
        // The frozen copy is dropped here, on this thread, with the map nodes only it still holds.
        drop(state);
        let started = Instant::now();
        self.store.save(&snapshot)?;
        self.observe(SnapshotOp::Save, started, Some(image_bytes));
        Ok(IoDone::SnapshotSaved { meta: snapshot.meta, image_bytes })
    }

    fn read_image(&mut self, read: ChunkRead) -> IoDone {
        let path = self.store.dir().join(snapshot_name(read.meta.index, read.meta.term));
        let at = match self.readers.iter().position(|(p, _)| *p == path) {
            Some(at) => at,
            None => match SnapshotReader::open(self.fs.as_ref(), &path) {
                Ok(reader) => {
                    if self.readers.len() >= SNAPSHOT_READERS_MAX {
                        self.readers.remove(0);
                    }
                    self.readers.push((path.clone(), reader));
                    self.readers.len() - 1
                }
                Err(e) => return IoDone::SnapshotImageUnavailable { read, why: e.to_string() },
            },
        };
        let reader = &mut self.readers[at].1;
        let total = reader.image_len();
        match reader.read_image(read.offset, read.max_bytes) {
            Ok(data) => IoDone::SnapshotImageRead { read, total, data },
            Err(e) => {
                self.readers.remove(at);
                IoDone::SnapshotImageUnavailable { read, why: e.to_string() }
            }
        }
    }

    fn receive(&mut self, chunk: SnapshotChunk, first: bool, last: bool) -> IoDone {
        let (from, meta) = (chunk.from, chunk.meta.clone());
        match self.append(chunk, first, last) {
            Ok(None) => IoDone::SnapshotChunkStored,
            Ok(Some((term, kv, image_bytes))) => IoDone::SnapshotReceived { from, term, meta, kv, image_bytes },
            Err(why) => {
                self.incoming = None; // drops (and removes) the partial file
                IoDone::SnapshotRejected { from, meta, why }
            }
        }
    }

    /// Appends a chunk; after the last one, verifies, decodes and installs the snapshot.
    fn append(
        &mut self,
        chunk: SnapshotChunk,
        first: bool,
        last: bool,
    ) -> Result<Option<(Term, Box<KvStore>, u64)>, String> {
        if first {
            let writer = self.store.image_writer(&chunk.meta).map_err(|e| e.to_string())?;
            self.incoming = Some((chunk.clone(), writer));
        }
        let Some((started, writer)) = self.incoming.as_mut() else {
            return Err("a snapshot chunk with no transfer started".into());
        };
        writer.write_image(&chunk.data).map_err(|e| e.to_string())?;
        let term = started.term.max(chunk.term);
        if !last {
            return Ok(None);
        }
        let Some((_, writer)) = self.incoming.take() else { return Err("lost the incoming snapshot".into()) };
        let meta = chunk.meta;
        let fs = Arc::clone(&self.fs);
        let started = Instant::now();
        let (_, kv) = writer.finish_checked(|tmp| decode_image(fs.as_ref(), tmp, &meta)).map_err(|e| e.to_string())?;
        self.observe(SnapshotOp::Install, started, Some(chunk.total_bytes));
        Ok(Some((term, Box::new(kv), chunk.total_bytes)))
    }
}

/// Builds the state machine from a received snapshot file, refusing an image whose applied
/// index is not the snapshot's index.
fn decode_image(fs: &dyn FileSystem, path: &Path, meta: &SnapshotMeta) -> Result<KvStore, String> {
    let snapshot = load_snapshot(fs, path).map_err(|e| e.to_string())?;
    let kv = KvStore::restore(&snapshot.data).map_err(|e| format!("the state machine image is unusable: {e}"))?;
    if kv.applied_index() != meta.index {
        return Err(format!("the image is at index {} but the snapshot says {}", kv.applied_index(), meta.index));
    }
    Ok(kv)
}

// ----- threads -----------------------------------------------------------------------------------

/// The two lanes on their threads, for `raftd` (the WAL lane may also sync on the loop: see
/// `wal_lane.rs`).
pub struct StorageThread {
    wal: WalLane,
    snapshot_jobs: Option<Sender<IoJob>>,
    done: Receiver<IoDone>,
    /// Outcomes produced on the loop, in job order after those the threads had sent before.
    ready: VecDeque<IoDone>,
    handles: Vec<JoinHandle<()>>,
}

impl StorageThread {
    /// `wal_on_loop`: ready batches are made durable on the event loop when the WAL thread is
    /// idle (`run_deferred`), instead of always on the thread.
    pub fn spawn(
        wal: WalWorker,
        snapshots: SnapshotWorker,
        waker: Arc<Waker>,
        wal_on_loop: bool,
    ) -> std::io::Result<Self> {
        let (done_tx, done_rx) = mpsc::channel::<IoDone>();
        let wal = WalLane::spawn(wal, done_tx.clone(), Arc::clone(&waker), wal_on_loop)?;
        let (snapshot_jobs, snapshot_thread) = snapshot_lane(done_tx, waker, snapshots)?;
        Ok(StorageThread {
            wal,
            snapshot_jobs: Some(snapshot_jobs),
            done: done_rx,
            ready: VecDeque::new(),
            handles: vec![snapshot_thread],
        })
    }

    /// Queues a job on its lane (a WAL job runs at `run_deferred`). Fails only if that lane
    /// has stopped (after a storage failure).
    pub fn submit(&mut self, job: IoJob) -> Result<(), String> {
        match job.lane() {
            Lane::Wal => self.wal.submit(job),
            Lane::Snapshot => match &self.snapshot_jobs {
                Some(tx) if tx.send(job).is_ok() => Ok(()),
                _ => Err("a storage thread has stopped".into()),
            },
        }
    }

    /// Runs the WAL jobs submitted since the last call; call after the loop flushed its sockets.
    pub fn run_deferred(&mut self) -> Result<(), String> {
        self.wal.run_deferred(&self.done, &mut self.ready)
    }

    /// True if an outcome produced on the loop is waiting.
    pub fn has_done(&self) -> bool {
        !self.ready.is_empty()
    }

    /// True if the loop must not sleep in its poll: an outcome is waiting, or a WAL job waits
    /// for `run_deferred` (submitted after this iteration's call, e.g. while shutting down).
    pub fn has_loop_work(&self) -> bool {
        self.has_done() || self.wal.has_deferred()
    }

    pub fn try_done(&mut self) -> Option<IoDone> {
        self.ready.pop_front().or_else(|| self.done.try_recv().ok())
    }

    #[cfg(test)]
    pub fn wal_thread_idle(&self) -> bool {
        self.wal.thread_idle()
    }

    #[cfg(test)]
    pub fn pause_wal_thread(&self, paused: bool) {
        self.wal.pause_thread(paused);
    }

    #[cfg(test)]
    pub fn every_wal_sync_is_slow(&mut self) {
        self.wal.every_sync_is_slow();
    }
}

/// Starts the snapshot lane's thread: it runs every job it is sent, in order, reporting each
/// outcome and waking the reactor. It stops after the first error: nothing more may be written.
/// (The WAL lane, with its idle and after-job work, is `wal_lane.rs`.)
fn snapshot_lane(
    done: Sender<IoDone>,
    waker: Arc<Waker>,
    mut worker: SnapshotWorker,
) -> std::io::Result<(Sender<IoJob>, JoinHandle<()>)> {
    let (jobs_tx, jobs_rx) = mpsc::channel::<IoJob>();
    let handle = std::thread::Builder::new().name("raft-snapshot".into()).spawn(move || {
        for job in jobs_rx {
            let result = worker.run(job);
            let failed = result.is_err();
            let message = result.unwrap_or_else(|e| IoDone::Failed(e.to_string()));
            let sent = done.send(message).is_ok();
            let _ = waker.wake(); // a failed wake only delays the outcome until the next tick
            if failed || !sent {
                return; // nothing more may be written after a storage failure
            }
        }
    })?;
    Ok((jobs_tx, handle))
}

impl Drop for StorageThread {
    fn drop(&mut self) {
        // Closing the channels lets the threads finish queued jobs and exit (the WAL lane's
        // own drop does the same for it).
        self.snapshot_jobs.take();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}
