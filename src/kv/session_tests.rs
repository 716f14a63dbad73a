//! The session rules of the `kv` module doc, one test (at least) per rule. Writes are CAS
//! increments where it matters, so that running a write twice would show in the map.

use super::tests::{apply_all, b, delete, open_session, register, set};
use super::*;

fn write(session_id: u64, seq: u64, first_outstanding: u64, key: &str, value: &str) -> Vec<u8> {
    let session = Session { session_id, seq, first_outstanding };
    Command::Set { session, key: b(key), value: b(value) }.to_bytes()
}

/// A CAS that moves `key` from `from` to `to` (`from` `None`: the key is absent).
fn step(session_id: u64, seq: u64, first_outstanding: u64, key: &str, from: Option<&str>, to: &str) -> Vec<u8> {
    let session = Session { session_id, seq, first_outstanding };
    Command::Cas { session, key: b(key), expected: from.map(b), new: b(to) }.to_bytes()
}

/// Applies one payload and checks that the store changed nothing but its applied index.
fn assert_changes_nothing(store: &mut KvStore, payload: Vec<u8>) -> ApplyResult {
    let mut expected = store.clone();
    let result = apply_all(store, &[payload]).remove(0);
    expected.applied_index += 1;
    assert_eq!(*store, expected, "{result:?} changed the store");
    result
}

#[test]
fn the_session_id_is_the_index_of_the_registration() {
    let mut store = KvStore::new();
    store.apply_noop(1).unwrap();
    assert_eq!(store.session_count(), 0, "a no-op opens no session");
    apply_all(&mut store, &[set(1, 1, "k", "v")]);
    assert_eq!(store.session_count(), 0, "a write opens no session");
    assert_eq!(apply_all(&mut store, &[register(10)]), vec![ApplyResult::Registered { session_id: 3 }]);
    let state = store.session(3).expect("registered");
    assert_eq!((state.activity_index, state.floor_seq, state.replies.len()), (3, 1, 0));
}

#[test]
fn an_unknown_session_is_always_expired_even_with_seq_1() {
    let mut store = KvStore::new();
    // The old rule opened a session for an unknown id with seq 1: a retry after eviction ran again.
    for seq in [1, 2, 1000] {
        let result = assert_changes_nothing(&mut store, set(42, seq, "k", "v"));
        assert_eq!(result, ApplyResult::SessionExpired { session_id: 42, seq });
    }
    assert_eq!(store.session_count(), 0);
    assert_eq!(store.get(b"k"), None);
}

#[test]
fn session_id_0_and_seq_0_never_reach_the_session_table() {
    let mut store = KvStore::new();
    let id = open_session(&mut store);
    for payload in [write(0, 1, 1, "k", "v"), write(id, 0, 0, "k", "v")] {
        let results = apply_all(&mut store, &[payload]);
        assert!(matches!(results[0], ApplyResult::Rejected(KvError::InvalidField { .. })), "{results:?}");
    }
    assert_eq!(store.get(b"k"), None);
    assert!(store.session(id).is_some_and(|s| s.replies.is_empty()));
}

#[test]
fn a_retry_in_any_order_gets_the_cached_reply_and_runs_once() {
    let mut store = KvStore::new();
    let id = open_session(&mut store);
    // Five pipelined creations of five keys, applied out of order: all outstanding (floor 1).
    let creates: Vec<Vec<u8>> = (1..=5).map(|seq| step(id, seq, 1, &format!("k{seq}"), None, "1")).collect();
    for seq in [3, 1, 5, 2, 4] {
        let result = apply_all(&mut store, &[creates[seq - 1].clone()]).remove(0);
        assert_eq!(result, ApplyResult::Applied(WriteResult::CasOk));
    }
    // Another client changes k2 in between: running seq 2 again would now fail the CAS.
    let other = open_session(&mut store);
    apply_all(&mut store, &[set(other, 1, "k2", "theirs")]);
    for seq in [4, 2, 5, 1, 3, 2] {
        let before = store.session(id).map(|s| s.activity_index);
        let result = apply_all(&mut store, &[creates[seq - 1].clone()]).remove(0);
        assert_eq!(result, ApplyResult::Duplicate(WriteResult::CasOk), "retry of seq {seq}");
        let after = store.session(id).map(|s| s.activity_index);
        assert!(after > before, "a duplicate counts as activity");
    }
    assert_eq!(store.get(b"k2"), Some(&b("theirs")));
    assert_eq!(store.session(id).map(|s| s.replies.len()), Some(5));
}

#[test]
fn the_floor_rises_with_first_outstanding_and_refuses_what_is_below_it() {
    let mut store = KvStore::new();
    let id = open_session(&mut store);
    apply_all(&mut store, &[write(id, 1, 1, "a", "1"), write(id, 2, 1, "b", "2"), write(id, 3, 1, "c", "3")]);
    // Seq 4 says the client has the replies of 1 and 2: they are dropped, 3 stays.
    apply_all(&mut store, &[write(id, 4, 3, "d", "4")]);
    let state = store.session(id).expect("open");
    assert_eq!((state.floor_seq, state.replies.keys().copied().collect::<Vec<_>>()), (3, vec![3, 4]));
    let result = assert_changes_nothing(&mut store, write(id, 2, 2, "b", "again"));
    assert_eq!(result, ApplyResult::StaleSequence { session_id: id, seq: 2, floor_seq: 3 });
    // A write that still names a lower first_outstanding (an old retry) never lowers the floor.
    assert_eq!(apply_all(&mut store, &[write(id, 6, 1, "f", "6")]), vec![ApplyResult::Applied(WriteResult::Stored)]);
    assert_eq!(store.session(id).map(|s| s.floor_seq), Some(3));
    assert_eq!(store.get(b"b"), Some(&b("2")));
}

#[test]
fn skipped_seqs_are_fine_and_each_runs_at_most_once() {
    let mut store = KvStore::new();
    let id = open_session(&mut store);
    for seq in [1, 5, 100] {
        assert_eq!(
            apply_all(&mut store, &[step(id, seq, 1, &format!("k{seq}"), None, "1")]),
            vec![ApplyResult::Applied(WriteResult::CasOk)]
        );
    }
    // A skipped seq above the floor has not run, so it may still run, once.
    assert_eq!(
        apply_all(&mut store, &[step(id, 3, 1, "k3", None, "1")]),
        vec![ApplyResult::Applied(WriteResult::CasOk)]
    );
    assert_eq!(
        apply_all(&mut store, &[step(id, 3, 1, "k3", None, "1")]),
        vec![ApplyResult::Duplicate(WriteResult::CasOk)]
    );
    // Moving the floor past the gap seals it: seq 2 can never run now.
    apply_all(&mut store, &[step(id, 101, 101, "k101", None, "1")]);
    let result = assert_changes_nothing(&mut store, step(id, 2, 2, "k2", None, "1"));
    assert_eq!(result, ApplyResult::StaleSequence { session_id: id, seq: 2, floor_seq: 101 });
}

#[test]
fn a_write_beyond_the_window_is_refused_and_changes_nothing() {
    let mut store = KvStore::new();
    let id = open_session(&mut store);
    let top = SESSION_REPLIES_MAX as u64; // floor 1: seqs 1..=top fit
    assert_eq!(
        apply_all(&mut store, &[write(id, top, 1, "top", "x")]),
        vec![ApplyResult::Applied(WriteResult::Stored)]
    );
    let result = assert_changes_nothing(&mut store, write(id, top + 1, 1, "over", "x"));
    assert_eq!(result, ApplyResult::SessionWindowFull { session_id: id, seq: top + 1, floor_seq: 1 });
    // Once the client reports its replies below 2, seq top + 1 fits.
    let results = apply_all(&mut store, &[write(id, top + 1, 2, "over", "x")]);
    assert_eq!(results, vec![ApplyResult::Applied(WriteResult::Stored)]);
    // Filling the whole window with distinct seqs keeps exactly SESSION_REPLIES_MAX replies.
    let mut full = KvStore::new();
    let id = open_session(&mut full);
    let writes: Vec<Vec<u8>> = (1..=top).rev().map(|seq| write(id, seq, 1, "k", "v")).collect();
    apply_all(&mut full, &writes);
    assert_eq!(full.session(id).map(|s| s.replies.len()), Some(SESSION_REPLIES_MAX));
    let result = assert_changes_nothing(&mut full, write(id, top + 1, 1, "k", "v"));
    assert!(matches!(result, ApplyResult::SessionWindowFull { .. }), "{result:?}");
}

#[test]
fn eviction_takes_the_least_recently_active_session() {
    let mut store = KvStore::new();
    let cap = 3;
    let ids: Vec<u64> = (0..3)
        .map(|_| match apply_all(&mut store, &[register(cap)]).remove(0) {
            ApplyResult::Registered { session_id } => session_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    // Session 1 writes, session 2 only retries (a duplicate is activity too), so 3 is now oldest.
    apply_all(&mut store, &[set(1, 1, "a", "1"), set(2, 1, "b", "1"), set(1, 2, "a", "2"), set(2, 1, "b", "1")]);
    assert_eq!(apply_all(&mut store, &[register(cap)]), vec![ApplyResult::Registered { session_id: 8 }]);
    let open: Vec<u64> = [1, 2, 3, 8].into_iter().filter(|&id| store.session(id).is_some()).collect();
    assert_eq!(open, vec![1, 2, 8]);
    // Refused writes are not activity: session 2's write beyond its window does not save it.
    apply_all(&mut store, &[set(1, 3, "a", "3"), set(8, 1, "c", "1")]);
    let refused = assert_changes_nothing(&mut store, write(2, 1 + SESSION_REPLIES_MAX as u64, 1, "b", "x"));
    assert!(matches!(refused, ApplyResult::SessionWindowFull { session_id: 2, .. }), "{refused:?}");
    apply_all(&mut store, &[register(cap)]);
    assert!(store.session(2).is_none(), "session 2 was the least recently active");
    assert_eq!(store.session_count(), 3);
}

#[test]
fn the_cap_travels_in_the_registration_so_a_lower_cap_evicts_several() {
    let mut store = KvStore::new();
    for _ in 0..5 {
        apply_all(&mut store, &[register(10)]);
    }
    assert_eq!(store.session_count(), 5);
    assert_eq!(apply_all(&mut store, &[register(2)]), vec![ApplyResult::Registered { session_id: 6 }]);
    let open: Vec<u64> = (1..=6).filter(|&id| store.session(id).is_some()).collect();
    assert_eq!(open, vec![5, 6], "the oldest four went, leaving the newest and the new one");
}

#[test]
fn replicas_fed_the_same_log_evict_the_same_sessions() {
    // Two replicas, one log: eviction depends on the entries only (there is no per-node setting).
    let mut log = Vec::new();
    for round in 0..50u64 {
        log.push(register(7));
        let target = 1 + (round * 13) % (log.len() as u64);
        log.push(set(target, 1 + round, &format!("k{round}"), "v"));
        log.push(delete(target, 1 + round, &format!("k{round}")));
    }
    let (mut a, mut b) = (KvStore::new(), KvStore::new());
    let results_a = apply_all(&mut a, &log);
    let results_b = apply_all(&mut b, &log);
    assert_eq!(results_a, results_b);
    assert_eq!(a.snapshot(), b.snapshot());
    assert_eq!(a.session_count(), 7);
    assert!(results_a.iter().any(|r| matches!(r, ApplyResult::SessionExpired { .. })));
}

#[test]
fn a_retry_after_eviction_is_expired_and_the_write_ran_once() {
    let mut store = KvStore::new();
    let cap = 3;
    apply_all(&mut store, &[register(cap), register(cap)]);
    let (mine, theirs) = (1, 2);
    // My increment 0 -> 1 succeeds; the reply is lost. Another client resets the key to 0.
    apply_all(&mut store, &[set(theirs, 1, "n", "0")]);
    assert_eq!(
        apply_all(&mut store, &[step(mine, 1, 1, "n", Some("0"), "1")]),
        vec![ApplyResult::Applied(WriteResult::CasOk)]
    );
    apply_all(&mut store, &[set(theirs, 2, "n", "0")]);
    // Three newer registrations evict my session (the least recently active).
    apply_all(&mut store, &[register(cap), register(cap), register(cap)]);
    assert!(store.session(mine).is_none());
    // My retry must not run again (that would move n to 1 on top of their acknowledged reset).
    let result = assert_changes_nothing(&mut store, step(mine, 1, 1, "n", Some("0"), "1"));
    assert_eq!(result, ApplyResult::SessionExpired { session_id: mine, seq: 1 });
    assert_eq!(store.get(b"n"), Some(&b("0")));
}
