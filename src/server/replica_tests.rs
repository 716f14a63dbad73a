//! The replica driven by hand, without sockets or threads: what it hands to storage, and what it
//! does with storage's answers when they come back late.

use std::collections::BTreeMap;

use super::replica::{Replica, ReplicaInit, SnapshotPolicy};
use super::storage_thread::{IoDone, IoJob};
use crate::kv::KvStore;
use crate::raft::{ConfState, HardState, Raft, RaftConfig, Restored, SnapshotMeta};

/// Node 1 of three, fresh, with no snapshot policy of its own to get in the way.
fn fresh_follower() -> Replica {
    let raft = Raft::new(RaftConfig::new(1, vec![1, 2, 3], 7), Restored::default()).expect("core");
    Replica::new(ReplicaInit {
        raft,
        kv: KvStore::new(),
        hard_state: HardState::default(),
        snapshot_meta: SnapshotMeta::default(),
        addresses: BTreeMap::new(),
        snapshot_policy: SnapshotPolicy { entries: u64::MAX, log_bytes: u64::MAX },
        sessions_max: 100,
        snapshot_chunk_bytes: crate::wire::SNAPSHOT_CHUNK_BYTES,
        record_applied: false,
    })
}

/// A leader's snapshot at `index` (term 1), as storage hands it over once it is received and verified.
fn received(index: u64) -> IoDone {
    let mut kv = KvStore::new();
    for entry in 1..=index {
        kv.apply_noop(entry).expect("no-op applies");
    }
    let meta = SnapshotMeta { index, term: 1, conf: ConfState::from_voters(vec![1, 2, 3]) };
    IoDone::SnapshotReceived { from: 2, term: 1, meta, kv: Box::new(kv) }
}

/// The indexes of the snapshots in the batches handed to storage since the last call.
fn snapshots_persisting(replica: &mut Replica) -> Vec<u64> {
    let jobs = replica.take_output().jobs;
    jobs.iter()
        .filter_map(|job| match job {
            IoJob::Persist { snapshot: Some(meta), .. } => Some(meta.index),
            _ => None,
        })
        .collect()
}

#[test]
fn a_snapshot_accepted_while_an_earlier_one_is_persisting_is_installed_after_it() {
    let mut replica = fresh_follower();
    replica.on_io_done(received(10)).expect("first snapshot");
    replica.flush().expect("flush");
    assert_eq!(snapshots_persisting(&mut replica), vec![10]);
    // A newer snapshot arrives (a slow link, a leader that compacted again) while the batch that
    // installs the first one is still being made durable. (Found by `raftctl chaos`: the node
    // crashed here, having staged the second snapshot in the first one's place.)
    replica.on_io_done(received(20)).expect("second snapshot");
    replica.on_io_done(IoDone::Persisted { log_bytes: 0 }).expect("the first batch is durable");
    assert_eq!(replica.kv().applied_index(), 10);
    replica.flush().expect("flush");
    assert_eq!(snapshots_persisting(&mut replica), vec![20]);
    replica.on_io_done(IoDone::Persisted { log_bytes: 0 }).expect("the second batch is durable");
    assert_eq!(replica.kv().applied_index(), 20);
}

#[test]
fn a_refused_snapshot_leaves_the_accepted_one_staged() {
    let mut replica = fresh_follower();
    replica.on_io_done(received(20)).expect("newer snapshot");
    // An older one, refused by the core (its commit index is already past it).
    replica.on_io_done(received(10)).expect("older snapshot");
    replica.flush().expect("flush");
    assert_eq!(snapshots_persisting(&mut replica), vec![20]);
    replica.on_io_done(IoDone::Persisted { log_bytes: 0 }).expect("durable");
    assert_eq!(replica.kv().applied_index(), 20);
}
