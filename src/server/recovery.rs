//! Start-up recovery: open the WAL and the snapshot store, finish an interrupted snapshot
//! install, and rebuild exactly the state the node held durably, refusing anything with a hole.
//!
//! Guarantees: the returned core state is what storage holds (snapshot, the entries after it,
//! hard state) and nothing else; a log compacted past the newest usable snapshot, or a log that
//! does not start right after the snapshot, is refused with a message naming the directory.

use std::path::Path;

use log::{info, warn};

use super::node::StartError;
use crate::kv::KvStore;
use crate::raft::{Restored, SnapshotMeta};
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
    let restored = restore_state(&wal, snapshot)?;
    let kv = match &restored.snapshot {
        Some(s) => KvStore::restore(&s.data).map_err(|e| {
            StartError(format!("snapshot at index {} in {} is unusable: {e}", s.meta.index, snap_dir.display()))
        })?,
        None => KvStore::new(),
    };
    let snapshot_meta = restored.snapshot.as_ref().map(|s| s.meta.clone()).unwrap_or_default();
    Ok(Recovered { wal, snapshots, restored, kv, snapshot_meta })
}

/// Builds the core's restart state from the WAL and the newest snapshot, refusing anything with
/// a hole in it.
fn restore_state(wal: &Wal, snapshot: Option<crate::raft::Snapshot>) -> Result<Restored, StartError> {
    let snapshot_index = snapshot.as_ref().map_or(0, |s| s.meta.index);
    let (floor, _) = wal.snapshot_floor();
    if floor > snapshot_index {
        return Err(StartError(format!(
            "the log is compacted up to index {floor} but the newest usable snapshot covers only {snapshot_index}; \
             the data directory is missing its snapshot"
        )));
    }
    let first = snapshot_index + 1;
    let last = wal.last_index();
    let entries = if last >= first {
        if wal.first_index() > first {
            return Err(StartError(format!(
                "the log starts at index {} but the snapshot ends at {snapshot_index}: entries in between are missing",
                wal.first_index()
            )));
        }
        wal.entries(first, last + 1, usize::MAX).map_err(|e| StartError(format!("reading the log: {e}")))?
    } else {
        Vec::new()
    };
    Ok(Restored { hard_state: wal.hard_state(), snapshot, entries, recovery: None })
}
