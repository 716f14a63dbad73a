//! Start-up recovery: open the WAL and the snapshot store, finish an interrupted snapshot
//! install, and rebuild exactly the state the node held durably, refusing anything with a hole.
//!
//! Guarantees: the returned core state is what storage holds (snapshot, the entries after it,
//! hard state) and nothing else; the state machine has applied every durably committed entry,
//! streamed from the WAL in bounded reads, so a restart never loads the whole log into memory; a log compacted past the newest usable snapshot, or a log that
//! does not start right after the snapshot, is refused with a message naming the directory.

use std::path::Path;

use log::{info, warn};

use super::node::StartError;
use crate::kv::KvStore;
use crate::raft::{EntryKind, Index, Restored, SnapshotMeta, Term};
use crate::storage::{SnapshotStore, Wal, WalOptions};

/// What a node restarts from.
pub struct Recovered {
    pub wal: Wal,
    pub snapshots: SnapshotStore,
    pub restored: Restored,
    pub kv: KvStore,
    pub snapshot_meta: SnapshotMeta,
}

/// Opens `data_dir` (creating it) and recovers the node's durable state.
pub fn recover(data_dir: &Path, segment_bytes: u64) -> Result<Recovered, StartError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StartError(format!("cannot create data directory {}: {e}", data_dir.display())))?;
    let wal_dir = data_dir.join("wal");
    let snap_dir = data_dir.join("snap");
    let (snapshots, removed) = SnapshotStore::open(&snap_dir)
        .map_err(|e| StartError(format!("cannot open snapshots in {}: {e}", snap_dir.display())))?;
    for path in removed {
        warn!("removed interrupted snapshot write {}", path.display());
    }
    let snapshot = snapshots
        .latest()
        .map_err(|e| StartError(format!("cannot load the latest snapshot in {}: {e}", snap_dir.display())))?;
    let wal_opts = WalOptions { segment_bytes, ..WalOptions::default() };
    let (mut wal, report) = Wal::open(&wal_dir, wal_opts)
        .map_err(|e| StartError(format!("cannot open the log in {}: {e}", wal_dir.display())))?;
    if report.bytes_truncated > 0 {
        warn!("log recovery dropped a torn tail of {} bytes at {:?}", report.bytes_truncated, report.truncated_at);
    }
    info!("log recovered: {} entries in {} segments in {:?}", report.entries, report.segments, report.elapsed);
    if let Some(s) = &snapshot {
        if s.meta.index > wal.snapshot_floor().0 {
            // The snapshot file is durable but the log was not yet compacted under it: a crash
            // between the two steps of installing a leader's snapshot (or of our own compaction).
            // Finish it now, or the log could hold another leader's suffix after the snapshot
            // (paper Figure 13, steps 6-7: discard a log that does not match).
            info!("finishing an interrupted snapshot install at index {} (term {})", s.meta.index, s.meta.term);
            wal.compact(s.meta.index, s.meta.term).map_err(|e| {
                StartError(format!("cannot compact the log in {} under the snapshot: {e}", wal_dir.display()))
            })?;
        }
    }
    let mut kv = match &snapshot {
        Some(s) => KvStore::restore(&s.data).map_err(|e| {
            StartError(format!("snapshot at index {} in {} is unusable: {e}", s.meta.index, snap_dir.display()))
        })?,
        None => KvStore::new(),
    };
    let restored = restore_state(&wal, snapshot.map(|s| s.meta), &mut kv)?;
    let snapshot_meta = restored.snapshot.clone().unwrap_or_default();
    Ok(Recovered { wal, snapshots, restored, kv, snapshot_meta })
}

/// Committed entries are applied to the state machine at start-up in reads of this many bytes, so
/// a long log never has to sit in memory at once.
const PRE_APPLY_CHUNK_BYTES: usize = 16 << 20;

/// Builds the core's restart state from the WAL and the newest snapshot, refusing anything with
/// a hole in it. Committed entries are applied to `kv` here, streamed from the WAL; the core gets
/// only the uncommitted tail (and the last entry) in memory, plus the terms of the whole log.
fn restore_state(wal: &Wal, snapshot: Option<SnapshotMeta>, kv: &mut KvStore) -> Result<Restored, StartError> {
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
    let hard_state = wal.hard_state();
    let commit = hard_state.commit.clamp(snapshot_index, last.max(snapshot_index));
    pre_apply(wal, kv, first, commit)?;
    let tail_from = (commit + 1).min(last).max(first);
    let entries = if last >= first {
        wal.entries(tail_from, last + 1, usize::MAX).map_err(|e| StartError(format!("reading the log: {e}")))?
    } else {
        Vec::new()
    };
    Ok(Restored {
        hard_state,
        snapshot,
        entries,
        log_terms: term_runs(wal, first, last),
        applied: commit,
        recovery: None,
    })
}

/// Applies the committed entries `[first, commit]` to `kv`, a bounded read at a time.
fn pre_apply(wal: &Wal, kv: &mut KvStore, first: Index, commit: Index) -> Result<(), StartError> {
    let mut next = first;
    while next <= commit {
        let chunk = wal
            .entries(next, commit + 1, PRE_APPLY_CHUNK_BYTES)
            .map_err(|e| StartError(format!("reading the log at index {next}: {e}")))?;
        for entry in &chunk {
            let applied = match entry.kind {
                EntryKind::Noop => kv.apply_noop(entry.index),
                EntryKind::Normal => kv.apply(entry.index, &entry.data).map(|_| ()),
            };
            applied.map_err(|e| StartError(format!("re-applying committed entry {}: {e}", entry.index)))?;
        }
        next = chunk.last().map_or(commit + 1, |e| e.index + 1);
    }
    Ok(())
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
