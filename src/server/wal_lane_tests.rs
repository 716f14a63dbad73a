//! The WAL lane of `raftd` with its real thread over SimFs: which side makes a batch durable,
//! the order outcomes reach the loop in, and what happens after a failed sync.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Poll, Token, Waker};

use super::recovery::{recover, RecoveryOptions};
use super::storage_thread::{IoDone, IoJob, SnapshotWorker, StorageThread, WalWorker};
use crate::raft::{Entry, EntryKind, HardState, LoadRequest};
use crate::storage::{SimFs, WalOptions};

const DIR: &str = "/node";
const SEGMENT_BYTES: u64 = 4 << 20;

fn options() -> RecoveryOptions {
    RecoveryOptions {
        cluster_id: 1,
        node_id: 1,
        wal_options: WalOptions::with_segment_bytes(SEGMENT_BYTES),
        sole_voter: false,
    }
}

/// The storage threads of node 1 on `fs` (the poll only has to outlive the waker).
fn start(fs: &SimFs, wal_on_loop: bool) -> (StorageThread, Poll) {
    let recovered = recover(fs.handle(), Path::new(DIR), options()).expect("recovers");
    let poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
    let wal = WalWorker::new(recovered.wal, recovered.meta, SEGMENT_BYTES);
    let snapshots = SnapshotWorker::new(fs.handle(), recovered.snapshots);
    (StorageThread::spawn(wal, snapshots, waker, wal_on_loop).expect("threads"), poll)
}

fn persist(lo: u64, hi: u64) -> IoJob {
    let entries = (lo..=hi)
        .map(|index| Entry { index, term: 1, kind: EntryKind::Normal, data: Bytes::from(format!("e{index}")) })
        .collect();
    IoJob::Persist {
        snapshot: None,
        entries,
        hard_state: Some(HardState { term: 1, vote: 1, commit: 0 }),
        recovery: None,
    }
}

fn load(lo: u64) -> IoJob {
    IoJob::LoadEntries(LoadRequest { to: 2, lo, max_bytes: 1 << 20, term: 1 })
}

/// The next outcome, waiting for the threads if need be.
fn next_done(storage: &mut StorageThread) -> IoDone {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(done) = storage.try_done() {
            return done;
        }
        assert!(Instant::now() < deadline, "no outcome within 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Submits `job` and runs it, asserting which side made it durable (`on_loop`) and that it was.
fn persist_where(storage: &mut StorageThread, job: IoJob, on_loop: bool, why: &str) {
    storage.submit(job).expect("submitted");
    storage.run_deferred().expect("runs");
    assert_eq!(storage.has_done(), on_loop, "{why}");
    assert!(matches!(next_done(storage), IoDone::Persisted { .. }));
}

fn wait_until_thread_idle(storage: &StorageThread) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !storage.wal_thread_idle() {
        assert!(Instant::now() < deadline, "the WAL thread stayed busy");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Power loss that keeps nothing unsynced, then the last index recovery finds.
fn durable_last_index(fs: &SimFs) -> u64 {
    fs.crash_keeping_sectors(&mut |_, _| false);
    fs.process_restart();
    recover(fs.handle(), Path::new(DIR), options()).expect("recovers").wal.last_index()
}

#[test]
fn a_batch_submitted_while_the_wal_thread_is_idle_is_durable_when_run_deferred_returns() {
    let fs = SimFs::new(1);
    let (mut storage, _poll) = start(&fs, true);
    storage.submit(persist(1, 3)).expect("submitted");
    assert!(!storage.has_done(), "nothing runs before the loop has flushed its sockets");
    storage.run_deferred().expect("runs");
    assert!(storage.has_done(), "synced on the loop: the outcome is there without waiting");
    assert!(matches!(storage.try_done(), Some(IoDone::Persisted { .. })));
    drop(storage);
    assert_eq!(durable_last_index(&fs), 3);
}

#[test]
fn with_wal_sync_thread_a_batch_is_never_synced_on_the_loop() {
    let fs = SimFs::new(2);
    let (mut storage, _poll) = start(&fs, false);
    persist_where(&mut storage, persist(1, 2), false, "the batch went to the thread");
    drop(storage);
    assert_eq!(durable_last_index(&fs), 2);
}

#[test]
fn a_batch_behind_a_job_on_the_thread_goes_to_the_thread_and_outcomes_keep_their_order() {
    let fs = SimFs::new(3);
    let (mut storage, _poll) = start(&fs, true);
    persist_where(&mut storage, persist(1, 2), true, "the thread is idle: synced on the loop");
    // One iteration hands over a read-back (the thread's job) and then a batch. The thread has
    // the read-back but has not started it (the WAL's lock is free): the batch must not pass it.
    storage.pause_wal_thread(true);
    storage.submit(load(1)).expect("submitted");
    storage.submit(persist(3, 4)).expect("submitted");
    storage.run_deferred().expect("runs");
    assert!(!storage.has_done(), "the batch must wait behind the read-back, on the thread");
    storage.pause_wal_thread(false);
    match next_done(&mut storage) {
        IoDone::Loaded { entries: Some(entries), .. } => assert_eq!(entries.len(), 2, "read back before the batch"),
        other => panic!("the read-back first, got {other:?}"),
    }
    assert!(matches!(next_done(&mut storage), IoDone::Persisted { .. }));
    drop(storage);
    assert_eq!(durable_last_index(&fs), 4);
}

#[test]
fn outcomes_the_thread_reported_come_before_a_batch_synced_on_the_loop() {
    let fs = SimFs::new(4);
    let (mut storage, _poll) = start(&fs, true);
    persist_where(&mut storage, persist(1, 2), true, "the thread is idle: synced on the loop");
    storage.submit(load(1)).expect("submitted");
    storage.run_deferred().expect("runs");
    // The thread has reported the read-back, and the loop has not taken the outcome yet.
    wait_until_thread_idle(&storage);
    storage.submit(persist(3, 3)).expect("submitted");
    storage.run_deferred().expect("runs");
    assert!(storage.has_done(), "the thread is idle: the batch is synced on the loop");
    assert!(matches!(storage.try_done(), Some(IoDone::Loaded { .. })), "the thread's outcome first");
    assert!(matches!(storage.try_done(), Some(IoDone::Persisted { .. })));
}

#[test]
fn after_a_failed_sync_on_the_loop_the_lane_takes_no_more_jobs() {
    let fs = SimFs::new(5);
    let (mut storage, _poll) = start(&fs, true);
    fs.fail_next_sync();
    storage.submit(persist(1, 2)).expect("submitted");
    storage.run_deferred().expect("runs");
    match storage.try_done() {
        Some(IoDone::Failed(why)) => assert!(!why.is_empty()),
        other => panic!("a failed sync is reported as a failure, got {other:?}"),
    }
    assert!(storage.submit(persist(3, 3)).is_err(), "nothing more may be written");
    assert!(storage.submit(load(1)).is_err(), "not on the thread either");
}

#[test]
fn after_a_slow_sync_on_the_loop_the_next_batches_go_to_the_thread() {
    let fs = SimFs::new(6);
    let (mut storage, _poll) = start(&fs, true);
    storage.every_wal_sync_is_slow();
    persist_where(&mut storage, persist(1, 1), true, "the first batch is synced on the loop");
    persist_where(&mut storage, persist(2, 2), false, "after a slow sync the loop hands batches to the thread");
    drop(storage);
    assert_eq!(durable_last_index(&fs), 2);
}

#[test]
fn a_batch_that_could_rotate_into_a_segment_not_allocated_yet_goes_to_the_thread() {
    let fs = SimFs::new(7);
    let (mut storage, _poll) = start(&fs, true);
    // Five entries of 900 KiB do not fit the rest of a fresh 4 MiB segment, and nothing of the
    // next segment is allocated yet (that starts once the current one is half full).
    let entries = (1..=5)
        .map(|index| Entry { index, term: 1, kind: EntryKind::Normal, data: Bytes::from(vec![7u8; 900 << 10]) })
        .collect();
    let hard_state = Some(HardState { term: 1, vote: 1, commit: 0 });
    storage.submit(IoJob::Persist { snapshot: None, entries, hard_state, recovery: None }).expect("submitted");
    storage.run_deferred().expect("runs");
    assert!(!storage.has_done(), "the rotation would write a whole segment on the loop");
    assert!(matches!(next_done(&mut storage), IoDone::Persisted { .. }));
    // A small batch after it fits the new segment and is synced on the loop again.
    wait_until_thread_idle(&storage);
    persist_where(&mut storage, persist(6, 6), true, "a batch that fits is synced on the loop");
    drop(storage);
    assert_eq!(durable_last_index(&fs), 6);
}
