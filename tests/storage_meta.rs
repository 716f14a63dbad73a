//! The meta file: a torn update or one damaged slot never loses a stored vote; two damaged slots
//! and a foreign data directory are refused with the file named; a directory from before the
//! meta file gets one initialized from the WAL's hard state.

mod storage_support;

use mini_raft::raft::rng::Rng;
use mini_raft::raft::types::HardState;
use mini_raft::storage::fs::CorruptionKind;
use mini_raft::storage::meta::SLOT_OFFSETS;
use mini_raft::storage::{fs, Meta, MetaStore, SimFs, StorageError};
use std::path::Path;

const META: &str = "/node/meta";

fn sim_with_meta(seed: u64) -> (SimFs, Meta) {
    let sim = SimFs::new(seed);
    use mini_raft::storage::FileSystem;
    sim.create_dir_all(Path::new("/node")).expect("dir");
    let (mut store, m) = MetaStore::open(sim.handle(), Path::new(META), 1, 2).expect("create");
    assert!(store.created() && (m.term, m.vote) == (0, 0));
    let m1 = Meta { term: 3, vote: 2, ..m };
    store.store(&m1).expect("store");
    (sim, m1)
}

fn reopen(sim: &SimFs) -> Result<Meta, StorageError> {
    MetaStore::open(sim.handle(), Path::new(META), 1, 2).map(|(_, m)| m)
}

#[test]
fn an_update_interrupted_at_any_step_and_any_crash_keeps_the_old_or_the_new_vote() {
    let mut outcomes = [0usize; 2];
    for k in 0..5u64 {
        for seed in 0..40 {
            let (sim, m1) = sim_with_meta(seed);
            let (mut store, _) = MetaStore::open(sim.handle(), Path::new(META), 1, 2).expect("open");
            let m2 = Meta { term: 4, vote: 1, ..m1 };
            sim.kill_after_ops(Some(k)); // write A, sync A, write B, sync B
            let completed = store.store(&m2).is_ok();
            assert_eq!(completed, k >= 4, "step {k}");
            drop(store);
            sim.crash(&mut Rng::new(seed * 7 + k));
            let got = reopen(&sim).unwrap_or_else(|e| panic!("step {k} seed {seed}: {e}"));
            if completed {
                assert_eq!(got, m2, "step {k} seed {seed}: a completed update is never lost");
            } else {
                assert!(got == m1 || got == m2, "step {k} seed {seed}: {got:?}");
            }
            outcomes[usize::from(got == m2)] += 1;
        }
    }
    assert!(outcomes[0] > 20 && outcomes[1] > 20, "{outcomes:?}");
}

#[test]
fn one_zeroed_page_or_flipped_bit_in_either_slot_loses_nothing_and_is_rewritten() {
    for slot in 0..2 {
        for kind in [CorruptionKind::ZeroPage, CorruptionKind::BitFlip { bit: 5 }] {
            let (sim, m1) = sim_with_meta(1);
            let offset = SLOT_OFFSETS[slot] + 20;
            sim.corrupt_at(Path::new(META), offset, kind).expect("damage");
            sim.drop_caches();
            assert_eq!(reopen(&sim).expect("one slot is enough"), m1, "slot {slot} {kind:?}");
            // Opening rewrote both slots: now the other one may fail too.
            let other = SLOT_OFFSETS[1 - slot] + 20;
            sim.corrupt_at(Path::new(META), other, kind).expect("damage");
            sim.drop_caches();
            assert_eq!(reopen(&sim).expect("repaired at open"), m1, "slot {slot} {kind:?}, then the other");
        }
    }
}

#[test]
fn both_slots_damaged_is_an_error_naming_the_file() {
    let (sim, _) = sim_with_meta(2);
    sim.corrupt_at(Path::new(META), 10, CorruptionKind::BitFlip { bit: 0 }).expect("damage");
    sim.corrupt_at(Path::new(META), 4096 + 40, CorruptionKind::ZeroPage).expect("damage");
    sim.drop_caches();
    let err = reopen(&sim).expect_err("two faults");
    let msg = err.to_string();
    assert!(msg.contains(META) && msg.contains("both slots"), "{msg}");
}

#[test]
fn a_data_directory_of_another_node_is_refused() {
    let (sim, _) = sim_with_meta(3);
    let err = MetaStore::open(sim.handle(), Path::new(META), 1, 3).err().expect("wrong node");
    assert_eq!(err.to_string(), "data directory /node/meta belongs to node 2 of cluster 1, not node 3 of cluster 1");
    let err = MetaStore::open(sim.handle(), Path::new(META), 9, 2).err().expect("wrong cluster");
    assert!(err.to_string().contains("not node 2 of cluster 9"), "{err}");
}

#[test]
fn a_failed_sync_poisons_the_meta_store_and_the_old_vote_stays_on_disk() {
    let (sim, m1) = sim_with_meta(4);
    let (mut store, _) = MetaStore::open(sim.handle(), Path::new(META), 1, 2).expect("open");
    sim.fail_next_sync();
    assert!(store.store(&Meta { term: 5, vote: 1, ..m1 }).is_err());
    assert!(matches!(store.store(&Meta { term: 6, ..m1 }), Err(StorageError::Poisoned { .. })));
    drop(store);
    sim.process_restart();
    // Slot A's new content is visible in the cache but not durable: read_direct ignores it.
    assert_eq!(reopen(&sim).expect("open"), m1);
}

#[test]
fn a_directory_from_before_the_meta_file_gets_one_from_the_wal_hard_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = storage_support::open_real(&dir.path().join("wal"), 4 << 20).expect("wal");
    wal.append(&storage_support::entries(1, 3, 5, 10)).expect("append");
    wal.set_hard_state(HardState { term: 5, vote: 2, commit: 3 }).expect("hs");
    wal.sync().expect("sync");
    drop(wal);
    let recovered = recover_as(dir.path(), 1).expect("recover");
    assert_eq!(recovered.restored.hard_state, HardState { term: 5, vote: 2, commit: 3 });
    drop(recovered);
    let (_, m) = MetaStore::open(fs::real(), &dir.path().join("meta"), 1, 1).expect("meta");
    assert_eq!((m.term, m.vote), (5, 2));
    let err = recover_as(dir.path(), 7).err().expect("wrong node");
    assert!(err.to_string().contains("belongs to node 1 of cluster 1, not node 7"), "{err}");
}

#[test]
fn the_newer_of_meta_and_wal_wins_so_a_crash_between_the_two_writes_loses_no_vote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = storage_support::open_real(&dir.path().join("wal"), 4 << 20).expect("wal");
    drop(wal);
    // The meta file got term 6 / vote 3; the WAL's hard state record never became durable.
    let (mut store, m) = MetaStore::open(fs::real(), &dir.path().join("meta"), 1, 1).expect("meta");
    store.store(&Meta { term: 6, vote: 3, ..m }).expect("store");
    drop(store);
    let recovered = recover_as(dir.path(), 1).expect("recover");
    assert_eq!((recovered.restored.hard_state.term, recovered.restored.hard_state.vote), (6, 3));
}

/// Runs the node's start-up recovery on `dir` as node `node_id` of cluster 1.
fn recover_as(
    dir: &std::path::Path,
    node_id: u64,
) -> Result<mini_raft::server::recovery::Recovered, mini_raft::server::node::StartError> {
    let options = mini_raft::server::recovery::RecoveryOptions {
        cluster_id: 1,
        node_id,
        wal_options: mini_raft::storage::WalOptions::with_segment_bytes(4 << 20),
        sole_voter: false,
    };
    mini_raft::server::recovery::recover(mini_raft::storage::fs::real(), dir, options)
}

#[path = "support/mod.rs"]
mod support;

#[test]
fn a_running_node_keeps_its_term_and_vote_in_the_meta_file() {
    let mut cluster = support::TestCluster::start(3, &[]);
    let (leader, term) = cluster.wait_leader(std::time::Duration::from_secs(10)).expect("leader");
    cluster.client().set(b"k", b"v").expect("write");
    for id in 1..=3 {
        cluster.kill(id);
    }
    let path = cluster.node_dir(leader).join("meta");
    let (_, m) = MetaStore::open(fs::real(), &path, 1, leader as u64).expect("meta file of the leader");
    assert!(m.term >= term && (m.term > term || m.vote == leader as u64), "{m:?} (leader {leader}, term {term})");
    assert!(m.recovering.is_none());
}
