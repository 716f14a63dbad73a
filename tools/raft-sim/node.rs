//! One simulated node: the real `raftd` glue without sockets or threads. A [`Replica`] (core,
//! state machine, client waiters, snapshot transfers) over a [`WalWorker`] and a
//! [`SnapshotWorker`] on the node's own [`SimFs`], started by the real start-up recovery.
//!
//! The storage lanes run their queued jobs when the seed says (a slow disk widens every crash
//! window), and finished jobs reach the replica later still, as they reach `raftd`'s event loop
//! through a channel. `kill` is kill -9 (the page cache survives: `SimFs::process_restart`);
//! `power_cut` loses what was not synced, at random (`SimFs::crash`).
//!
//! The node also keeps a *shadow*: what its storage reported durable, updated the moment a lane
//! finishes a job (a `MemStorage` fed the same batches). The checker holds the replica's messages
//! and the next start-up's recovery against it.

use std::collections::VecDeque;
use std::path::PathBuf;

use mini_raft::raft::rng::Rng;
use mini_raft::raft::{Entry, MemStorage, NodeId, Raft, RaftConfig, Recovery, SnapshotMeta};
use mini_raft::server::recovery::{recover, RecoveryOptions};
use mini_raft::server::replica::{Replica, ReplicaInit, SnapshotPolicy};
use mini_raft::server::storage_thread::{IoDone, IoJob, Lane, SnapshotWorker, WalWorker};
use mini_raft::storage::analyze;
use mini_raft::storage::fs::{CorruptionKind, InjectedCorruption};
use mini_raft::storage::{SimFs, WalOptions};

/// How every node of a seed is configured.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// The bootstrap voters (`raftd --peers`); other nodes start as joining nodes.
    pub voters: Vec<NodeId>,
    /// Every node of the world (voters and spares), for the address table.
    pub all_ids: Vec<NodeId>,
    pub wal_options: WalOptions,
    pub snapshot_policy: SnapshotPolicy,
    pub sessions_max: u32,
    pub snapshot_chunk_bytes: usize,
    pub inflight_msgs_max: usize,
    pub append_bytes_max: usize,
    pub log_window_bytes_max: usize,
    /// Chance per step that a lane finishes its next job, and that a finished job reaches the
    /// replica.
    pub io_finish_per_mille: u64,
}

/// What a start-up recovered, for the checker.
pub struct Started {
    pub hard_state: mini_raft::raft::HardState,
    pub snapshot: Option<SnapshotMeta>,
    /// The whole log after the snapshot, read back from the WAL.
    pub entries: Vec<Entry>,
    pub recovery: Option<Recovery>,
    pub applied: u64,
    /// The state machine's image right after recovery.
    pub kv_image: Vec<u8>,
}

pub struct Running {
    pub replica: Replica,
    wal: WalWorker,
    snapshots: SnapshotWorker,
    wal_jobs: VecDeque<IoJob>,
    snapshot_jobs: VecDeque<IoJob>,
    /// A lane failed: like `raftd`'s storage thread, it runs nothing more.
    lane_failed: bool,
    done: VecDeque<IoDone>,
    /// Steps the WAL lane has been idle (it confirms its last batch after one).
    wal_idle_steps: u64,
}

pub struct SimNode {
    pub id: NodeId,
    pub fs: SimFs,
    dir: PathBuf,
    pub incarnation: u64,
    pub running: Option<Running>,
    pub down_until: u64,
    pub paused_until: u64,
    /// Why the node last stopped or failed to start.
    pub last_stop: Option<String>,
    pub shadow: MemStorage,
    /// The newest snapshot file made durable (the node's own, or one received from a leader),
    /// which the log may not be compacted under yet: recovery finishes that compaction.
    pub snapshot_file: Option<SnapshotMeta>,
    /// Latent damage was injected into this node's disk: from then on recovery may lose entries,
    /// and must then say so (a recovery guard that covers them) or refuse to start. It stays set:
    /// damage hidden by the page cache surfaces only after a power cut, starts later.
    pub damaged: bool,
    /// The node stopped on a failed WAL write: a batch split across a rotation may have its
    /// first part durable (with its own Commit record) though the sync was reported failed.
    pub write_failed: bool,
    /// Latent damage not yet read back from the disk (the page cache may still hide it): no
    /// second error is injected on this node until a start after the caches were dropped, so
    /// that errors come one at a time (two at once can zero a batch and its confirmation).
    pub rot_unread: bool,
    /// The page cache was dropped (a power cut) since the last injected damage.
    pub caches_dropped: bool,
    /// The WAL's last batch was unconfirmed when the node stopped.
    unconfirmed_at_stop: bool,
    pub loads: u64,
}

impl SimNode {
    pub fn new(id: NodeId, seed: u64) -> SimNode {
        SimNode {
            id,
            fs: SimFs::new(seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            dir: PathBuf::from(format!("/n{id}")),
            incarnation: 0,
            running: None,
            down_until: 0,
            paused_until: 0,
            last_stop: None,
            shadow: MemStorage::default(),
            snapshot_file: None,
            damaged: false,
            write_failed: false,
            rot_unread: false,
            caches_dropped: false,
            unconfirmed_at_stop: false,
            loads: 0,
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn replica(&self) -> Option<&Replica> {
        self.running.as_ref().map(|r| &r.replica)
    }

    pub fn replica_mut(&mut self) -> Option<&mut Replica> {
        self.running.as_mut().map(|r| &mut r.replica)
    }

    pub fn raft(&self) -> Option<&Raft> {
        self.replica().map(Replica::raft)
    }

    pub fn is_paused(&self, now: u64) -> bool {
        now < self.paused_until
    }

    /// Starts the node the way `raftd` does: recovery over its file system, then the replica.
    pub fn start(&mut self, settings: &NodeSettings, seed: u64) -> Result<Started, String> {
        self.incarnation += 1;
        if self.caches_dropped {
            self.rot_unread = false;
        }
        let options = RecoveryOptions {
            cluster_id: 1,
            node_id: self.id,
            wal_options: settings.wal_options,
            sole_voter: settings.voters.len() == 1,
        };
        self.dump(&format!("start{}", self.incarnation));
        let recovered = recover(self.fs.handle(), &self.dir, options).map_err(|e| e.to_string())?;
        let snapshot_index = recovered.snapshot_meta.index;
        let (first, last) = (snapshot_index + 1, recovered.wal.last_index());
        let entries = if last >= first {
            recovered.wal.entries(first, last + 1, usize::MAX).map_err(|e| format!("reading back the log: {e}"))?
        } else {
            Vec::new()
        };
        let started = Started {
            hard_state: recovered.restored.hard_state,
            snapshot: recovered.restored.snapshot.clone(),
            entries,
            recovery: recovered.restored.recovery,
            applied: recovered.kv.applied_index(),
            kv_image: recovered.kv.snapshot(),
        };
        let bootstrap = if settings.voters.contains(&self.id) { settings.voters.clone() } else { Vec::new() };
        let mut config = RaftConfig::new(self.id, bootstrap, seed ^ (self.incarnation << 32) ^ self.id);
        config.inflight_msgs_max = settings.inflight_msgs_max;
        config.append_bytes_max = settings.append_bytes_max;
        config.log_window_bytes_max = settings.log_window_bytes_max;
        let hard_state = recovered.restored.hard_state;
        let raft = Raft::new(config, recovered.restored).map_err(|e| format!("inconsistent durable state: {e}"))?;
        let replica = Replica::new(ReplicaInit {
            raft,
            kv: recovered.kv,
            hard_state,
            snapshot_meta: recovered.snapshot_meta,
            addresses: settings.all_ids.iter().map(|&id| (id, format!("n{id}"))).collect(),
            snapshot_policy: settings.snapshot_policy,
            sessions_max: settings.sessions_max,
            snapshot_chunk_bytes: settings.snapshot_chunk_bytes,
            record_applied: true,
        });
        let wal = WalWorker::new(recovered.wal, recovered.meta, settings.wal_options.segment_bytes);
        let snapshots = SnapshotWorker::new(self.fs.handle(), recovered.snapshots);
        self.running = Some(Running {
            replica,
            wal,
            snapshots,
            wal_jobs: VecDeque::new(),
            snapshot_jobs: VecDeque::new(),
            lane_failed: false,
            done: VecDeque::new(),
            wal_idle_steps: 0,
        });
        self.shadow = MemStorage {
            hard_state: started.hard_state,
            snapshot: started.snapshot.clone(),
            entries: started.entries.clone(),
            recovery: started.recovery,
        };
        self.last_stop = None;
        Ok(started)
    }

    /// True if the WAL's last batch is not yet confirmed by a later durable Commit record.
    pub fn wal_unconfirmed(&self) -> bool {
        match &self.running {
            Some(r) => r.wal.idle_after().is_some(),
            None => self.unconfirmed_at_stop,
        }
    }

    /// Debugging aid (`SIMDUMP=dir`): writes the node's files, as reads see them and as the disk
    /// holds them, under `dir/n{id}-{label}/{visible,durable}/`, for `raft-dump`.
    pub fn dump(&self, label: &str) {
        let Ok(dump) = std::env::var("SIMDUMP") else { return };
        let out = std::path::Path::new(&dump).join(format!("n{}-{label}", self.id));
        for path in self.fs.file_paths() {
            for (kind, image) in [("visible", self.fs.visible_image(&path)), ("durable", self.fs.durable_image(&path))]
            {
                let Ok(image) = image else { continue };
                let target = out.join(kind).join(path.strip_prefix("/").unwrap_or(&path));
                if let Some(parent) = target.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let _ = std::fs::write(target, image);
            }
        }
    }

    /// The node's WAL segment files (not spares or files being created).
    fn wal_segments(&self) -> Vec<PathBuf> {
        let wal_dir = self.dir.join("wal");
        let is_segment = |p: &PathBuf| p.starts_with(&wal_dir) && p.extension().is_some_and(|e| e == "wal");
        self.fs.file_paths().into_iter().filter(is_segment).collect()
    }

    /// A latent error in the WAL's final batch as the disk holds it: the page of the newest
    /// segment's last written byte zeroed, or one bit of that batch's last 4 KiB flipped.
    pub fn damage_final_batch(&self, rng: &mut Rng) -> Option<InjectedCorruption> {
        let newest = self.wal_segments().into_iter().max()?;
        let image = self.fs.durable_image(&newest).ok()?;
        let end = analyze::image_fill(&image).dirty_end(&image) as u64;
        if end == 0 {
            return None;
        }
        let kind = match rng.chance(1, 2) {
            true => CorruptionKind::ZeroPage,
            false => CorruptionKind::BitFlip { bit: rng.range(0, 8) as u8 },
        };
        let offset = match kind {
            CorruptionKind::ZeroPage => end.checked_sub(1)?,
            CorruptionKind::BitFlip { .. } => end.checked_sub(rng.range(1, end.min(4096) + 1))?,
        };
        self.fs.corrupt_at(&newest, offset, kind).ok()
    }

    /// A latent error at a random offset of a random WAL segment (written or unused space).
    pub fn damage_wal_anywhere(&self, rng: &mut Rng) -> Option<InjectedCorruption> {
        let segments = self.wal_segments();
        let path = segments.get(rng.range(0, segments.len().max(1) as u64) as usize)?;
        let len = self.fs.durable_image(path).ok()?.len() as u64;
        let offset = rng.range(0, len.max(1));
        let kind = match rng.chance(1, 2) {
            true => CorruptionKind::ZeroPage,
            false => CorruptionKind::BitFlip { bit: rng.range(0, 8) as u8 },
        };
        self.fs.corrupt_at(path, offset, kind).ok()
    }

    /// kill -9: the process and its queued work are gone; the page cache is not.
    pub fn kill(&mut self, why: String) {
        self.unconfirmed_at_stop = self.wal_unconfirmed();
        self.running = None;
        self.fs.process_restart();
        self.last_stop = Some(why);
    }

    /// Power loss: unsynced writes reach the disk or not, at random.
    pub fn power_cut(&mut self, rng: &mut Rng) {
        self.unconfirmed_at_stop = self.wal_unconfirmed();
        self.running = None;
        self.fs.crash(rng);
        self.caches_dropped = true;
        self.last_stop = Some("power cut".into());
    }

    /// Queues the replica's storage jobs on their lanes.
    pub fn submit(&mut self, jobs: Vec<IoJob>) {
        let Some(r) = self.running.as_mut() else { return };
        for job in jobs {
            match job.lane() {
                Lane::Wal => r.wal_jobs.push_back(job),
                Lane::Snapshot => r.snapshot_jobs.push_back(job),
            }
        }
    }

    /// True if a lane has work queued.
    /// The storage lanes' state, for reports: (WAL jobs, snapshot jobs, results undelivered, failed).
    pub fn lanes(&self) -> Option<(usize, usize, usize, bool)> {
        self.running.as_ref().map(|r| (r.wal_jobs.len(), r.snapshot_jobs.len(), r.done.len(), r.lane_failed))
    }

    pub fn storage_busy(&self) -> bool {
        self.running.as_ref().is_some_and(|r| !r.wal_jobs.is_empty() || !r.snapshot_jobs.is_empty())
    }

    /// Each lane finishes its next job if the dice say so; the WAL lane confirms its last batch
    /// after a quiet step. Outcomes queue up for the replica.
    pub fn run_storage(&mut self, rng: &mut Rng, finish_per_mille: u64) {
        let Some(r) = self.running.as_mut() else { return };
        if r.lane_failed {
            return;
        }
        if !r.wal_jobs.is_empty() {
            r.wal_idle_steps = 0;
            if rng.chance(finish_per_mille, 1000) {
                if let Some(job) = r.wal_jobs.pop_front() {
                    let shadow_update = ShadowUpdate::of(&job);
                    if matches!(job, IoJob::LoadEntries(_)) {
                        self.loads += 1;
                    }
                    match r.wal.run(job) {
                        Ok(done) => {
                            shadow_update.apply(&mut self.shadow);
                            r.done.push_back(done);
                            if let Err(e) = r.wal.after_job() {
                                r.fail(format!("allocating ahead: {e}"));
                            }
                        }
                        Err(e) => r.fail(e.to_string()),
                    }
                }
            }
        } else if r.wal.idle_after().is_some() {
            r.wal_idle_steps += 1;
            if r.wal_idle_steps > 1 {
                if let Err(e) = r.wal.idle() {
                    r.fail(format!("confirming the last batch: {e}"));
                }
            }
        }
        if r.lane_failed || r.snapshot_jobs.is_empty() || !rng.chance(finish_per_mille, 1000) {
            return;
        }
        if let Some(job) = r.snapshot_jobs.pop_front() {
            match r.snapshots.run(job) {
                Ok(done) => {
                    let durable = match &done {
                        IoDone::SnapshotSaved { meta, .. } | IoDone::SnapshotReceived { meta, .. } => Some(meta),
                        _ => None,
                    };
                    if let Some(meta) =
                        durable.filter(|m| self.snapshot_file.as_ref().is_none_or(|f| f.index < m.index))
                    {
                        self.snapshot_file = Some(meta.clone());
                    }
                    r.done.push_back(done)
                }
                Err(e) => r.fail(e.to_string()),
            }
        }
    }

    /// Hands finished jobs to the replica, in the order the lanes finished them (some wait a
    /// step, as a channel and an event loop delay them). An error stops the node, as it stops
    /// `raftd`: it can no longer promise durability.
    pub fn deliver_done(&mut self, rng: &mut Rng, per_mille: u64) -> Result<(), String> {
        let Some(r) = self.running.as_mut() else { return Ok(()) };
        while !r.done.is_empty() && rng.chance(per_mille.max(500), 1000) {
            let Some(done) = r.done.pop_front() else { break };
            r.replica.on_io_done(done)?;
        }
        Ok(())
    }
}

impl Running {
    fn fail(&mut self, why: String) {
        self.lane_failed = true;
        self.done.push_back(IoDone::Failed(why));
    }
}

impl SimNode {
    /// What storage promises to bring back at the next start: the shadow, compacted under the
    /// newest durable snapshot file as recovery does (Raft Figure 13: a log that does not hold
    /// the snapshot's last entry is discarded whole).
    pub fn expected_durable(&self) -> MemStorage {
        let mut expected = self.shadow.clone();
        let Some(file) = &self.snapshot_file else { return expected };
        if expected.snapshot.as_ref().is_some_and(|s| s.index >= file.index) {
            return expected;
        }
        let holds_it = expected.entries.iter().any(|e| e.index == file.index && e.term == file.term);
        if holds_it {
            expected.entries.retain(|e| e.index > file.index);
        } else {
            expected.entries.clear();
        }
        expected.snapshot = Some(file.clone());
        expected
    }
}

/// What a WAL job makes durable, copied before the worker consumes it.
enum ShadowUpdate {
    Persist {
        snapshot: Option<SnapshotMeta>,
        entries: Vec<Entry>,
        hard_state: Option<mini_raft::raft::HardState>,
        recovery: Option<mini_raft::raft::RecoveryChange>,
    },
    Compact(SnapshotMeta),
    None,
}

impl ShadowUpdate {
    fn of(job: &IoJob) -> ShadowUpdate {
        match job {
            IoJob::Persist { snapshot, entries, hard_state, recovery } => ShadowUpdate::Persist {
                snapshot: snapshot.clone(),
                entries: entries.clone(),
                hard_state: *hard_state,
                recovery: *recovery,
            },
            IoJob::CompactLog(meta) => ShadowUpdate::Compact(meta.clone()),
            _ => ShadowUpdate::None,
        }
    }

    fn apply(self, shadow: &mut MemStorage) {
        match self {
            ShadowUpdate::Persist { snapshot, entries, hard_state, recovery } => {
                shadow.persist_parts(snapshot.as_ref(), &entries, hard_state, recovery)
            }
            ShadowUpdate::Compact(meta) => {
                if shadow.snapshot.as_ref().is_none_or(|s| s.index < meta.index) {
                    shadow.compact(meta)
                }
            }
            ShadowUpdate::None => {}
        }
    }
}
