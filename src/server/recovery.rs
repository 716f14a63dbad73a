//! Start-up recovery: open the WAL and the snapshot store, finish an interrupted snapshot
//! install, and rebuild exactly the state the node held durably, refusing anything with a hole.
//!
//! Guarantees: the returned core state is what storage holds (snapshot, the entries after it,
//! hard state, with term and vote the newer of the meta file's and the WAL's) and nothing else; a
//! log compacted past the newest usable snapshot, or a log that does not start right after the
//! snapshot, is refused with a message naming the directory. Damage in synced log data
//! (`RecoveryReport::corruption`) and a recovering node are refused too, without changing the
//! files, until the node layer implements the recovering state (see `storage::wal`).

use std::path::Path;
use std::sync::Arc;

use log::{info, warn};

use super::node::StartError;
use super::storage_thread::LogStores;
use crate::kv::KvStore;
use crate::raft::{HardState, Restored, SnapshotMeta};
use crate::storage::meta::{newer_term_vote, META_FILE};
use crate::storage::{fs, FileSystem, Meta, MetaStore, SnapshotStore, Wal, WalOptions};

/// What a node restarts from.
pub struct Recovered {
    pub wal: LogStores,
    pub snapshots: SnapshotStore,
    pub restored: Restored,
    pub kv: KvStore,
    pub snapshot_meta: SnapshotMeta,
}

/// Opens `data_dir` (creating it) and recovers the node's durable state.
pub fn recover(data_dir: &Path, segment_bytes: u64, cluster_id: u64, node_id: u64) -> Result<Recovered, StartError> {
    let fs: Arc<dyn FileSystem> = fs::real();
    fs.create_dir_all(data_dir)
        .map_err(|e| StartError(format!("cannot create data directory {}: {e}", data_dir.display())))?;
    let wal_dir = data_dir.join("wal");
    let snap_dir = data_dir.join("snap");
    let (snapshots, removed) = SnapshotStore::open(Arc::clone(&fs), &snap_dir)
        .map_err(|e| StartError(format!("cannot open snapshots in {}: {e}", snap_dir.display())))?;
    for path in removed {
        warn!("removed interrupted snapshot write {}", path.display());
    }
    let snapshot = snapshots
        .latest()
        .map_err(|e| StartError(format!("cannot load the latest snapshot in {}: {e}", snap_dir.display())))?;
    let wal_opts = WalOptions { segment_bytes, ..WalOptions::default() };
    let (mut wal, report) = Wal::open(Arc::clone(&fs), &wal_dir, wal_opts)
        .map_err(|e| StartError(format!("cannot open the log in {}: {e}", wal_dir.display())))?;
    if let Some(c) = &report.corruption {
        return Err(StartError(format!(
            "the log in {} is damaged, refusing to start (nothing was changed; `raft-dump --verify {}` shows it): {c}",
            wal_dir.display(),
            data_dir.display()
        )));
    }
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
    let (meta, term_vote) = open_meta(fs, data_dir, cluster_id, node_id, wal.hard_state())?;
    let restored = restore_state(&wal, snapshot, term_vote)?;
    let kv = match &restored.snapshot {
        Some(s) => KvStore::restore(&s.data).map_err(|e| {
            StartError(format!("snapshot at index {} in {} is unusable: {e}", s.meta.index, snap_dir.display()))
        })?,
        None => KvStore::new(),
    };
    let snapshot_meta = restored.snapshot.as_ref().map(|s| s.meta.clone()).unwrap_or_default();
    Ok(Recovered { wal: LogStores { wal, meta }, snapshots, restored, kv, snapshot_meta })
}

/// Opens (or creates) the meta file and returns the effective (term, vote): the newer of the
/// meta file's and the WAL's, written back to the meta file if the WAL's is newer (a directory
/// from before the meta file).
fn open_meta(
    fs: Arc<dyn FileSystem>,
    data_dir: &Path,
    cluster_id: u64,
    node_id: u64,
    wal_hs: HardState,
) -> Result<(MetaStore, (u64, u64)), StartError> {
    let path = data_dir.join(META_FILE);
    let (mut store, m) = MetaStore::open(fs, &path, cluster_id, node_id).map_err(|e| StartError(format!("{e}")))?;
    if let Some(g) = m.recovering {
        return Err(StartError(format!(
            "{} says this node is recovering lost log entries (guard index {} term {}); this version cannot \
             recover from its peers yet",
            path.display(),
            g.index,
            g.term
        )));
    }
    let tv = newer_term_vote((m.term, m.vote), (wal_hs.term, wal_hs.vote))
        .map_err(|e| StartError(format!("{} and the log disagree: {e}", path.display())))?;
    if tv != (m.term, m.vote) {
        store.store(&Meta { term: tv.0, vote: tv.1, ..m }).map_err(|e| StartError(format!("{e}")))?;
    }
    Ok((store, tv))
}

/// Builds the core's restart state from the WAL and the newest snapshot, refusing anything with
/// a hole in it.
fn restore_state(
    wal: &Wal,
    snapshot: Option<crate::raft::Snapshot>,
    (term, vote): (u64, u64),
) -> Result<Restored, StartError> {
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
    let hard_state = HardState { term, vote, commit: wal.hard_state().commit };
    Ok(Restored { hard_state, snapshot, entries })
}
