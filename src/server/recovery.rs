//! Start-up recovery: open the WAL, the meta file and the snapshot store, finish an interrupted
//! snapshot install, and rebuild exactly the state the node held durably.
//!
//! Guarantees:
//! - the core restarts from what storage holds (newest snapshot, the entries after it, hard state
//!   with term and vote the newer of the meta file's and the WAL's) and nothing else; the state
//!   machine has applied every durably committed entry, streamed from the WAL in bounded reads;
//! - damage in synced log data is not silently dropped and does not stop the node for good
//!   (protocol-aware recovery, `raft::recovery`): the guard is made durable in the meta file
//!   first, then the log is cut at the damage, and the node restarts *recovering*;
//! - local data damaged beyond a cut (a snapshot that does not verify, a first segment whose header
//!   is gone, a log compacted past its snapshot or with a hole after it) is discarded, the guard
//!   `(durable term, ∞)` made durable first, and the node rejoins recovering: the leader sends it
//!   the state. A sole voter refuses to start instead, changing nothing; so does any node whose
//!   meta file (term, vote, identity) is unreadable, or whose directory belongs to another node or
//!   cluster.
//!
//! Every file is reached through a `FileSystem`: the real one in `raftd`, a simulated one (which
//! tears, reorders, rots and fills up) in the simulator.

use std::path::Path;
use std::sync::Arc;

use log::{info, warn};

use super::node::StartError;
use crate::kv::KvStore;
use crate::raft::{Entry, EntryKind, HardState, Index, Recovery, Restored, SnapshotMeta, Term};
use crate::storage::meta::{newer_term_vote, META_FILE};
use crate::storage::snapshot::list_snapshots;
use crate::storage::{
    discard_unsalvageable, repair_after_corruption, FileSystem, Meta, MetaStore, SnapshotStore, StorageError, Wal,
    WalOptions,
};

/// Committed entries are applied to the state machine at start-up in reads of this many bytes, so
/// a long log never has to sit in memory at once.
const PRE_APPLY_CHUNK_BYTES: usize = 16 << 20;

/// Who the data directory must belong to, and how its log is cut.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryOptions {
    pub cluster_id: u64,
    pub node_id: u64,
    pub wal_options: WalOptions,
    /// This node is the only voter: nobody can give back what its disk lost, so damage in synced
    /// data stops it (with nothing changed on disk) instead of starting a recovery.
    pub sole_voter: bool,
}

/// What a node restarts from.
pub struct Recovered {
    pub wal: Wal,
    pub meta: MetaStore,
    pub snapshots: SnapshotStore,
    pub restored: Restored,
    pub kv: KvStore,
    pub snapshot_meta: SnapshotMeta,
}

/// Why one start-up attempt failed.
enum Attempt {
    /// The node's own data is damaged or inconsistent (a snapshot that does not verify, a log
    /// with a hole, a log compacted past its snapshot): a node with peers can rejoin from them.
    Damaged(String),
    /// Anything else (I/O errors, the meta file, another node's directory): the error says what
    /// to fix.
    Fatal(StartError),
}

impl From<StartError> for Attempt {
    fn from(e: StartError) -> Attempt {
        Attempt::Fatal(e)
    }
}

/// Opens `data_dir` (creating it) on `fs` and recovers the node's durable state.
///
/// If the node's own log or snapshots are damaged beyond what the log's repair can cut around,
/// a node with peers discards them (its meta file, with term, vote and identity, stays) and
/// rejoins as a recovering node with the guard `(durable term, ∞)`, made durable first: the
/// leader sends it the cluster's state (protocol-aware recovery, `raft::recovery`). A sole voter
/// refuses to start instead, changing nothing.
pub fn recover(fs: Arc<dyn FileSystem>, data_dir: &Path, opts: RecoveryOptions) -> Result<Recovered, StartError> {
    let why = match recover_once(&fs, data_dir, opts) {
        Ok(recovered) => return Ok(recovered),
        Err(Attempt::Fatal(e)) => return Err(e),
        Err(Attempt::Damaged(why)) => why,
    };
    if opts.sole_voter {
        return Err(StartError(format!(
            "{why}; this node is the only voter, so no peer can give back what was lost: refusing to start \
             (nothing was changed; `raft-dump --verify {}` shows the log)",
            data_dir.display()
        )));
    }
    warn!("{why}; discarding this node's log and snapshots: it rejoins as a recovering node and gets the state from the leader");
    discard_local_state(&fs, data_dir, opts)?;
    recover_once(&fs, data_dir, opts).map_err(|e| match e {
        Attempt::Fatal(e) => e,
        Attempt::Damaged(why) => StartError(format!("still damaged after discarding the log and snapshots: {why}")),
    })
}

/// Keeps the meta file; records the guard `(its term, ∞)` in it durably, then deletes every WAL
/// segment and snapshot file (a crash midway leaves the guard and fewer files: the next start
/// finds the same damage or none).
fn discard_local_state(fs: &Arc<dyn FileSystem>, data_dir: &Path, opts: RecoveryOptions) -> Result<(), StartError> {
    let (wal_dir, snap_dir) = (data_dir.join("wal"), data_dir.join("snap"));
    let path = data_dir.join(META_FILE);
    let (mut meta, _) = MetaStore::open(Arc::clone(fs), &path, opts.cluster_id, opts.node_id)
        .map_err(|e| StartError(format!("{e}")))?;
    let removed = discard_unsalvageable(fs.as_ref(), &wal_dir, &mut meta)
        .map_err(|e| StartError(format!("cannot discard the damaged log in {}: {e}", wal_dir.display())))?;
    let (files, _) = list_snapshots(fs.as_ref(), &snap_dir)
        .map_err(|e| StartError(format!("cannot list snapshots in {}: {e}", snap_dir.display())))?;
    for f in files.iter().rev() {
        fs.remove_file(&f.path).map_err(|e| StartError(format!("cannot remove {}: {e}", f.path.display())))?;
        fs.sync_dir(&snap_dir).map_err(|e| StartError(format!("cannot sync {}: {e}", snap_dir.display())))?;
    }
    warn!(
        "removed {} segment(s) from {} and {} snapshot(s) from {}",
        removed.len(),
        wal_dir.display(),
        files.len(),
        snap_dir.display()
    );
    Ok(())
}

fn recover_once(fs: &Arc<dyn FileSystem>, data_dir: &Path, opts: RecoveryOptions) -> Result<Recovered, Attempt> {
    fs.create_dir_all(data_dir)
        .map_err(|e| StartError(format!("cannot create data directory {}: {e}", data_dir.display())))?;
    let (wal_dir, snap_dir) = (data_dir.join("wal"), data_dir.join("snap"));
    let (snapshots, removed) = SnapshotStore::open(Arc::clone(fs), &snap_dir)
        .map_err(|e| StartError(format!("cannot open snapshots in {}: {e}", snap_dir.display())))?;
    for path in removed {
        warn!("removed interrupted snapshot write {}", path.display());
    }
    let snapshot = snapshots.latest().map_err(|e| {
        let why = format!("cannot load the latest snapshot in {}: {e}", snap_dir.display());
        if e.is_corruption() {
            Attempt::Damaged(why)
        } else {
            Attempt::Fatal(StartError(why))
        }
    })?;
    let (mut wal, report) = open_wal(fs, data_dir, &wal_dir, opts)?;
    if report.bytes_truncated > 0 {
        warn!("log recovery dropped a torn tail of {} bytes at {:?}", report.bytes_truncated, report.truncated_at);
    }
    info!("log recovered: {} entries in {} segments in {:?}", report.entries, report.segments, report.elapsed);
    let (mut meta, term_vote) = open_meta(Arc::clone(fs), data_dir, opts, wal.hard_state())?;
    if let Some(c) = &report.corruption {
        if opts.sole_voter {
            return Err(Attempt::Fatal(StartError(format!(
                "the log in {} is damaged and this node is the only voter, so no peer can re-send what was lost; \
                 refusing to start (nothing was changed; `raft-dump --verify {}` shows it): {c}",
                wal_dir.display(),
                data_dir.display()
            ))));
        }
        // Protocol-aware recovery: the guard is durable before the log forgets anything.
        warn!("{c}; this node recovers the lost entries from its peers and votes only for logs past them");
        repair_after_corruption(&mut wal, &mut meta)
            .map_err(|e| StartError(format!("cannot repair the damaged log in {}: {e}", wal_dir.display())))?;
    }
    if let Some(s) = &snapshot {
        if s.meta.index > wal.snapshot_floor().0 {
            // The snapshot file is durable but the log was not yet compacted under it: a crash
            // between installing a snapshot file and compacting the log (a leader's snapshot, or
            // our own). Finish it now, or the log could hold another leader's suffix after the
            // snapshot (paper Figure 13, steps 6-7: discard a log that does not match).
            info!("finishing an interrupted snapshot install at index {} (term {})", s.meta.index, s.meta.term);
            wal.compact(s.meta.index, s.meta.term).map_err(|e| {
                StartError(format!("cannot compact the log in {} under the snapshot: {e}", wal_dir.display()))
            })?;
        }
    }
    let mut kv = match &snapshot {
        Some(s) => KvStore::restore(&s.data).map_err(|e| {
            Attempt::Damaged(format!("snapshot at index {} in {} is unusable: {e}", s.meta.index, snap_dir.display()))
        })?,
        None => KvStore::new(),
    };
    let recovery = meta.meta().recovering.map(|g| Recovery { term: g.term, index: g.index });
    let mut restored = restore_state(&wal, snapshot.map(|s| s.meta), term_vote, &mut kv)
        .map_err(|e| Attempt::Damaged(format!("the log in {} does not fit its snapshot: {e}", wal_dir.display())))?;
    restored.recovery = recovery;
    let snapshot_meta = restored.snapshot.clone().unwrap_or_default();
    Ok(Recovered { wal, meta, snapshots, restored, kv, snapshot_meta })
}

/// Opens the WAL. A log that cannot be salvaged at all (its first segment's header is damaged) is
/// discarded, after the recovery guard is durable, and the node starts over from its snapshot as
/// a recovering node; a sole voter refuses instead.
fn open_wal(
    fs: &Arc<dyn FileSystem>,
    data_dir: &Path,
    wal_dir: &Path,
    opts: RecoveryOptions,
) -> Result<(Wal, crate::storage::RecoveryReport), Attempt> {
    let failed = |e: StorageError| {
        let why = format!("cannot open the log in {}: {e}", wal_dir.display());
        if e.is_corruption() {
            Attempt::Damaged(why)
        } else {
            Attempt::Fatal(StartError(why))
        }
    };
    match Wal::open(Arc::clone(fs), wal_dir, opts.wal_options) {
        Err(e @ StorageError::Unsalvageable { .. }) if !opts.sole_voter => {
            // Only the log is lost: keep the snapshot and start over from it.
            warn!("{e}; discarding the whole log: this node recovers it from its peers");
            let path = data_dir.join(META_FILE);
            let (mut meta, _) = MetaStore::open(Arc::clone(fs), &path, opts.cluster_id, opts.node_id)
                .map_err(|e| StartError(format!("{e}")))?;
            let removed = discard_unsalvageable(fs.as_ref(), wal_dir, &mut meta)
                .map_err(|e| StartError(format!("cannot discard the damaged log in {}: {e}", wal_dir.display())))?;
            warn!("removed {} damaged segment(s) from {}", removed.len(), wal_dir.display());
            drop(meta);
            Wal::open(Arc::clone(fs), wal_dir, opts.wal_options).map_err(failed)
        }
        Ok(opened) => Ok(opened),
        Err(e) => Err(failed(e)),
    }
}

/// Opens (or creates) the meta file and returns the effective (term, vote): the newer of the
/// meta file's and the WAL's, written back to the meta file if the WAL's is newer (a crash
/// between the two writes, or a directory from before the meta file).
fn open_meta(
    fs: Arc<dyn FileSystem>,
    data_dir: &Path,
    opts: RecoveryOptions,
    wal_hs: HardState,
) -> Result<(MetaStore, (u64, u64)), StartError> {
    let path = data_dir.join(META_FILE);
    let (mut store, m) =
        MetaStore::open(fs, &path, opts.cluster_id, opts.node_id).map_err(|e| StartError(format!("{e}")))?;
    let tv = newer_term_vote((m.term, m.vote), (wal_hs.term, wal_hs.vote))
        .map_err(|e| StartError(format!("{} and the log disagree: {e}", path.display())))?;
    if tv != (m.term, m.vote) {
        store.store(&Meta { term: tv.0, vote: tv.1, ..m }).map_err(|e| StartError(format!("{e}")))?;
    }
    if let Some(g) = m.recovering {
        warn!(
            "{} says this node is recovering lost log entries (guard index {} term {})",
            path.display(),
            g.index,
            g.term
        );
    }
    Ok((store, tv))
}

/// Builds the core's restart state from the WAL and the newest snapshot, refusing anything with
/// a hole in it. Committed entries are applied to `kv` here, streamed from the WAL; the core gets
/// only the uncommitted tail (and the last entry) in memory, plus the terms of the whole log.
fn restore_state(
    wal: &Wal,
    snapshot: Option<SnapshotMeta>,
    (term, vote): (u64, u64),
    kv: &mut KvStore,
) -> Result<Restored, StartError> {
    let snapshot_index = snapshot.as_ref().map_or(0, |s| s.index);
    let (floor, _) = wal.snapshot_floor();
    if floor > snapshot_index {
        return Err(StartError(format!(
            "the log is compacted up to index {floor} but the newest usable snapshot covers only {snapshot_index}; \
             the data directory is missing its snapshot"
        )));
    }
    let first = snapshot_index + 1;
    let last = wal.last_index();
    if last >= first && wal.first_index() > first {
        return Err(StartError(format!(
            "the log starts at index {} but the snapshot ends at {snapshot_index}: entries in between are missing",
            wal.first_index()
        )));
    }
    let hard_state = HardState { term, vote, commit: wal.hard_state().commit };
    let commit = hard_state.commit.clamp(snapshot_index, last.max(snapshot_index));
    let mut conf_entries = pre_apply(wal, kv, first, commit)?;
    let tail_from = (commit + 1).min(last).max(first);
    let entries = if last >= first {
        wal.entries(tail_from, last + 1, usize::MAX).map_err(|e| StartError(format!("reading the log: {e}")))?
    } else {
        Vec::new()
    };
    let log_terms = term_runs(wal, first, last);
    let tail_first = entries.first().map_or(Index::MAX, |e| e.index);
    conf_entries.retain(|e| e.index < tail_first);
    Ok(Restored { hard_state, snapshot, entries, log_terms, applied: commit, recovery: None, conf_entries })
}

/// Applies the committed entries `[first, commit]` to `kv`, a bounded read at a time. Returns
/// the membership change entries among them (one per change: few, and bounded by the log).
fn pre_apply(wal: &Wal, kv: &mut KvStore, first: Index, commit: Index) -> Result<Vec<Entry>, StartError> {
    let mut conf_entries = Vec::new();
    let mut next = first;
    while next <= commit {
        let chunk = wal
            .entries(next, commit + 1, PRE_APPLY_CHUNK_BYTES)
            .map_err(|e| StartError(format!("reading the log at index {next}: {e}")))?;
        for entry in &chunk {
            let applied = match entry.kind {
                EntryKind::Noop => kv.apply_noop(entry.index),
                EntryKind::ConfChange => {
                    conf_entries.push(entry.clone());
                    kv.apply_noop(entry.index)
                }
                EntryKind::Normal => kv.apply(entry.index, &entry.data).map(|_| ()),
            };
            applied.map_err(|e| StartError(format!("re-applying committed entry {}: {e}", entry.index)))?;
        }
        next = chunk.last().map_or(commit + 1, |e| e.index + 1);
    }
    Ok(conf_entries)
}

/// The terms of `[first, last]` as runs (first index, term).
fn term_runs(wal: &Wal, first: Index, last: Index) -> Vec<(Index, Term)> {
    let mut runs: Vec<(Index, Term)> = Vec::new();
    for index in first..=last {
        let term = wal.term(index).unwrap_or(0);
        if runs.last().is_none_or(|&(_, t)| t != term) {
            runs.push((index, term));
        }
    }
    runs
}
