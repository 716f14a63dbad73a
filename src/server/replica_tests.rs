//! The replica driven by hand, without sockets or threads: what it hands to storage, and what it
//! does with storage's answers when they come back late.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::replica::{Replica, ReplicaInit, SnapshotPolicy};
use super::requests::Waiter;
use super::storage_thread::{IoDone, IoJob, SnapshotWorker};
use crate::kv::{Command, KvStore, Session};
use crate::raft::{ConfState, HardState, Raft, RaftConfig, Restored, Role, SnapshotMeta};
use crate::storage::{FileSystem, RealFs, SnapshotStore};
use crate::wire::{ClientReply, ClientRequest, FrameBody};

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
    IoDone::SnapshotReceived { from: 2, term: 1, meta, kv: Box::new(kv), image_bytes: 0 }
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

// ----- the node's own snapshots: frozen on the loop, serialized by the snapshot lane ---------------

/// Keys in the large state of the snapshot tests.
const LARGE_KEYS: u64 = 100_000;

fn set(session_id: u64, seq: u64, key: u64, value: &str) -> Command {
    let session = Session { session_id, seq, first_outstanding: seq };
    Command::Set { session, key: Bytes::from(format!("key-{key:08}")), value: Bytes::from(value.to_string()) }
}

/// A store with one session (id 1) and [`LARGE_KEYS`] keys, at index `LARGE_KEYS + 1`.
fn large_store() -> KvStore {
    let mut kv = KvStore::new();
    kv.apply(1, &Command::Register { sessions_max: 100 }.to_bytes()).expect("register");
    for key in 0..LARGE_KEYS {
        kv.apply(key + 2, &set(1, key + 1, key, "a value of some thirty bytes..").to_bytes()).expect("set");
    }
    kv
}

/// A sole voter restored from a snapshot of [`large_store`], snapshotting after every entry.
fn large_sole_voter() -> Replica {
    let kv = large_store();
    let meta = SnapshotMeta { index: kv.applied_index(), term: 1, conf: ConfState::from_voters(vec![1]) };
    let restored = Restored {
        hard_state: HardState { term: 1, vote: 1, commit: meta.index },
        snapshot: Some(meta.clone()),
        ..Restored::default()
    };
    let raft = Raft::new(RaftConfig::new(1, vec![1], 7), restored).expect("core");
    Replica::new(ReplicaInit {
        raft,
        kv,
        hard_state: HardState { term: 1, vote: 1, commit: meta.index },
        snapshot_meta: meta,
        addresses: BTreeMap::new(),
        snapshot_policy: SnapshotPolicy { entries: 1, log_bytes: u64::MAX },
        sessions_max: 100,
        snapshot_chunk_bytes: crate::wire::SNAPSHOT_CHUNK_BYTES,
        record_applied: false,
    })
}

/// Runs the loop until nothing is left to persist: batches are made durable at once, snapshot
/// jobs are kept (not run) and returned; replies are returned too.
fn run_loop(replica: &mut Replica, held: &mut Vec<IoJob>) -> Vec<FrameBody> {
    let mut replies = Vec::new();
    for _ in 0..1_000 {
        replica.flush().expect("flush");
        let out = replica.take_output();
        replies.extend(out.replies.into_iter().map(|(_, body)| body));
        let mut persisted = false;
        for job in out.jobs {
            match job {
                IoJob::Persist { .. } => persisted = true,
                IoJob::CompactLog(meta) => {
                    replica.on_io_done(IoDone::Compacted { meta, log_bytes: 0 }).expect("compacted")
                }
                other => held.push(other),
            }
        }
        if !persisted {
            return replies;
        }
        replica.on_io_done(IoDone::Persisted { log_bytes: 0 }).expect("durable");
    }
    panic!("the loop never went idle");
}

/// Ticks a sole voter into leadership; the snapshot its no-op makes due is reported saved.
fn become_leader(replica: &mut Replica) {
    let mut held = Vec::new();
    for _ in 0..100 {
        replica.tick();
        run_loop(replica, &mut held);
        if replica.raft().role() == Role::Leader {
            for job in held.drain(..) {
                let IoJob::SaveSnapshot { meta, .. } = job else { panic!("unexpected job {job:?}") };
                replica.on_io_done(IoDone::SnapshotSaved { meta, image_bytes: 0 }).expect("saved");
            }
            run_loop(replica, &mut held);
            assert!(held.is_empty(), "no other snapshot is due");
            return;
        }
    }
    panic!("a sole voter did not become leader");
}

fn waiter(request_id: u64) -> Waiter {
    Waiter { token: 1, serial: 1, request_id }
}

#[test]
fn the_loop_keeps_serving_while_a_large_snapshot_is_serialized_and_the_image_is_unchanged() {
    let mut replica = large_sole_voter();
    // The reference: the same entries applied to a store that is snapshotted with nothing
    // running (what the loop used to do synchronously).
    let mut reference = large_store();
    become_leader(&mut replica);
    reference.apply_noop(reference.applied_index() + 1).expect("the leader's no-op");
    assert_eq!(replica.kv().applied_index(), reference.applied_index());

    // One write makes a snapshot due: the loop freezes the state and hands it to the lane.
    let write = set(1, LARGE_KEYS + 1, 7, "overwritten before the snapshot");
    replica.client_request(waiter(1), ClientRequest::Write(write.clone()));
    let mut held = Vec::new();
    run_loop(&mut replica, &mut held);
    reference.apply(reference.applied_index() + 1, &write.to_bytes()).expect("reference write");
    let expected = reference.snapshot();
    let [IoJob::SaveSnapshot { meta, state }] = <[IoJob; 1]>::try_from(held).expect("one snapshot job") else {
        panic!("the held job is not a snapshot");
    };
    assert_eq!(meta.index, reference.applied_index());
    assert_eq!(state.len() as u64, LARGE_KEYS);

    // The snapshot lane's serializer, on its own thread, is held until the loop has answered a
    // status request and applied writes that overwrite and add keys the frozen state holds: the
    // loop never waits for it (a status request made mid-snapshot returns before it finishes).
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let serializer = std::thread::spawn(move || {
        go_rx.recv().expect("the test lets it go");
        state.image()
    });
    replica.client_request(waiter(2), ClientRequest::Status);
    let replies = run_loop(&mut replica, &mut Vec::new());
    assert!(
        matches!(replies.as_slice(), [FrameBody::Reply(ClientReply::Status(s))] if s.applied_index == meta.index),
        "the status request is answered in the same loop iteration: {replies:?}"
    );
    for (seq, key) in [(LARGE_KEYS + 2, 7), (LARGE_KEYS + 3, 0), (LARGE_KEYS + 4, LARGE_KEYS + 10)] {
        replica.client_request(waiter(seq), ClientRequest::Write(set(1, seq, key, "after the freeze")));
        run_loop(&mut replica, &mut Vec::new());
    }
    assert_eq!(replica.kv().get(b"key-00000007").map(|v| &v[..]), Some(&b"after the freeze"[..]));
    assert!(!serializer.is_finished(), "the serializer has not even started");
    go_tx.send(()).expect("the serializer waits");
    let image = serializer.join().expect("the serializer");
    assert!(image == expected, "the image differs from the one taken with the loop stopped");
}

#[test]
fn the_snapshot_lane_saves_the_frozen_state_byte_for_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fs: Arc<dyn FileSystem> = Arc::new(RealFs::new());
    let (store, _) = SnapshotStore::open(Arc::clone(&fs), dir.path()).expect("snapshot store");
    let mut worker = SnapshotWorker::new(Arc::clone(&fs), store);
    let mut kv = large_store();
    let expected = kv.snapshot();
    let meta = SnapshotMeta { index: kv.applied_index(), term: 3, conf: ConfState::from_voters(vec![1]) };
    let state = kv.freeze();
    // The live store moves on before the lane gets to the job.
    kv.apply(kv.applied_index() + 1, &set(1, LARGE_KEYS + 1, 3, "later").to_bytes()).expect("set");
    let done = worker.run(IoJob::SaveSnapshot { meta: meta.clone(), state }).expect("saved");
    let IoDone::SnapshotSaved { meta: saved, image_bytes } = done else { panic!("not saved: {done:?}") };
    assert_eq!((saved, image_bytes), (meta, expected.len() as u64));
    let (store, _) = SnapshotStore::open(fs, dir.path()).expect("reopen");
    let on_disk = store.latest().expect("readable").expect("a snapshot");
    assert!(on_disk.data[..] == expected[..], "the saved image differs");
    assert_eq!(KvStore::restore(&on_disk.data).expect("restores").snapshot(), expected);
}

#[test]
fn a_frozen_state_for_another_index_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fs: Arc<dyn FileSystem> = Arc::new(RealFs::new());
    let (store, _) = SnapshotStore::open(Arc::clone(&fs), dir.path()).expect("snapshot store");
    let mut worker = SnapshotWorker::new(fs, store);
    let meta = SnapshotMeta { index: 5, term: 1, conf: ConfState::from_voters(vec![1]) };
    assert!(worker.run(IoJob::SaveSnapshot { meta, state: KvStore::new().freeze() }).is_err());
}

#[test]
fn a_membership_change_still_waiting_at_shutdown_is_answered_shutting_down() {
    use crate::raft::membership::{ChangeOp, MemberChange};
    use crate::wire::ErrorCode;
    let mut replica = large_sole_voter();
    become_leader(&mut replica);
    // Node 2 never answers: the joint configuration {1} + {1, 2} cannot commit.
    let change = MemberChange { op: ChangeOp::AddVoter, id: 2, address: "127.0.0.1:1".into() };
    replica.client_request(waiter(1), ClientRequest::MemberChange(vec![change]));
    let replies = run_loop(&mut replica, &mut Vec::new());
    assert!(replies.is_empty(), "the change waits for node 2: {replies:?}");
    assert!(replica.has_waiting_requests(), "graceful shutdown waits for it");
    replica.abandon_all_requests();
    let replies: Vec<FrameBody> = replica.take_output().replies.into_iter().map(|(_, body)| body).collect();
    assert!(matches!(replies.as_slice(), [FrameBody::Error(e)] if e.code == ErrorCode::ShuttingDown), "{replies:?}");
    assert!(!replica.has_waiting_requests());
}
