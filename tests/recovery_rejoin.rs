//! Start-up recovery over a damaged data directory (on `SimFs`): a node with peers whose local
//! state cannot be trusted discards it, after making the guard `(durable term, ∞)` durable, and
//! starts empty and recovering; a sole voter refuses and changes nothing. Found missing by
//! raft-sim: such nodes stayed down for good.

use std::path::Path;

use mini_raft::kv::KvStore;
use mini_raft::raft::{ConfState, Entry, EntryKind, HardState, Recovery, Snapshot, SnapshotMeta};
use mini_raft::server::recovery::{recover, RecoveryOptions};
use mini_raft::storage::fs::CorruptionKind;
use mini_raft::storage::{Meta, SimFs, WalOptions};

const TERM: u64 = 3;

fn options(sole_voter: bool) -> RecoveryOptions {
    RecoveryOptions { cluster_id: 1, node_id: 1, wal_options: WalOptions::with_segment_bytes(64 << 10), sole_voter }
}

fn noop(index: u64) -> Entry {
    Entry { index, term: TERM, kind: EntryKind::Noop, data: bytes::Bytes::new() }
}

/// A node directory with entries 1..=6 of term 3, a snapshot at 4 and the log compacted under it.
fn build(sim: &SimFs, dir: &Path) {
    let r = recover(sim.handle(), dir, options(false)).expect("first start");
    let (mut wal, mut meta, snapshots) = (r.wal, r.meta, r.snapshots);
    wal.append(&(1..=6).map(noop).collect::<Vec<_>>()).expect("append");
    wal.set_hard_state(HardState { term: TERM, vote: 1, commit: 6 }).expect("hard state");
    meta.store(&Meta { term: TERM, vote: 1, ..meta.meta() }).expect("meta");
    wal.sync().expect("sync");
    let mut kv = KvStore::new();
    for index in 1..=4 {
        kv.apply_noop(index).expect("noop");
    }
    let snap_meta = SnapshotMeta { index: 4, term: TERM, conf: ConfState::from_voters(vec![1, 2, 3]) };
    snapshots.save(&Snapshot { meta: snap_meta, data: bytes::Bytes::from(kv.snapshot()) }).expect("snapshot");
    wal.compact(4, TERM).expect("compact");
}

fn snapshot_path(sim: &SimFs, dir: &Path) -> std::path::PathBuf {
    let snap_dir = dir.join("snap");
    let found =
        sim.file_paths().into_iter().find(|p| p.starts_with(&snap_dir) && p.extension().is_some_and(|e| e == "snap"));
    found.expect("a snapshot file")
}

#[test]
fn a_node_with_a_corrupt_snapshot_rejoins_empty_and_recovering() {
    let (sim, dir) = (SimFs::new(7), Path::new("/node"));
    build(&sim, dir);
    let path = snapshot_path(&sim, dir);
    sim.corrupt_at(&path, 40, CorruptionKind::BitFlip { bit: 1 }).expect("damage");
    sim.drop_caches();
    let r = recover(sim.handle(), dir, options(false)).expect("the node starts");
    assert_eq!(r.restored.recovery, Some(Recovery { term: TERM, index: u64::MAX }), "guard (durable term, inf)");
    assert_eq!((r.restored.hard_state.term, r.restored.hard_state.vote), (TERM, 1), "term and vote kept");
    assert!(r.restored.snapshot.is_none() && r.wal.last_index() == 0, "log and snapshot discarded");
    assert!(r.snapshots.list().expect("list").is_empty(), "the damaged snapshot file is gone");
    assert_eq!(r.meta.meta().recovering.map(|g| (g.term, g.index)), Some((TERM, u64::MAX)), "the guard is durable");
    drop(r);
    // A crash right after: the next start still recovers (the guard is on disk), finds no damage.
    sim.crash(&mut mini_raft::raft::rng::Rng::new(1));
    let r = recover(sim.handle(), dir, options(false)).expect("restart");
    assert_eq!(r.restored.recovery, Some(Recovery { term: TERM, index: u64::MAX }));
}

#[test]
fn a_sole_voter_with_a_corrupt_snapshot_refuses_and_changes_nothing() {
    let (sim, dir) = (SimFs::new(8), Path::new("/node"));
    build(&sim, dir);
    let path = snapshot_path(&sim, dir);
    sim.corrupt_at(&path, 40, CorruptionKind::BitFlip { bit: 1 }).expect("damage");
    sim.drop_caches();
    let files_before = sim.file_paths();
    let err = recover(sim.handle(), dir, options(true)).err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("only voter") && text.contains(path.to_str().unwrap_or("?")), "{text}");
    assert_eq!(sim.file_paths(), files_before, "nothing removed");
}

#[test]
fn a_first_segment_without_its_header_loses_the_log_but_keeps_the_snapshot() {
    let (sim, dir) = (SimFs::new(9), Path::new("/node"));
    build(&sim, dir);
    let wal_dir = dir.join("wal");
    let mut segments: Vec<_> = sim.file_paths().into_iter().filter(|p| p.starts_with(&wal_dir)).collect();
    segments.retain(|p| p.extension().is_some_and(|e| e == "wal"));
    segments.sort();
    sim.corrupt_at(&segments[0], 0, CorruptionKind::ZeroPage).expect("damage");
    sim.drop_caches();
    let r = recover(sim.handle(), dir, options(false)).expect("the node starts");
    assert_eq!(r.restored.recovery, Some(Recovery { term: TERM, index: u64::MAX }));
    assert_eq!(r.restored.snapshot.as_ref().map(|s| s.index), Some(4), "the snapshot is kept");
    assert_eq!(r.kv.applied_index(), 4);
}
