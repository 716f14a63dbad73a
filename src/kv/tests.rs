//! Tests of the state machine: command encoding, map semantics, apply order, snapshot images.
//! The session rules have their own file, `session_tests.rs`.

use crate::raft::rng::Rng;
use bytes::Bytes;

use super::*;

pub(super) fn session(session_id: u64, seq: u64) -> Session {
    Session::serial(session_id, seq)
}

pub(super) fn set(session_id: u64, seq: u64, key: &str, value: &str) -> Vec<u8> {
    Command::Set { session: session(session_id, seq), key: b(key), value: b(value) }.to_bytes()
}

pub(super) fn delete(session_id: u64, seq: u64, key: &str) -> Vec<u8> {
    Command::Delete { session: session(session_id, seq), key: b(key) }.to_bytes()
}

pub(super) fn cas(session_id: u64, seq: u64, key: &str, expected: Option<&str>, new: &str) -> Vec<u8> {
    let command =
        Command::Cas { session: session(session_id, seq), key: b(key), expected: expected.map(b), new: b(new) };
    command.to_bytes()
}

pub(super) fn register(sessions_max: u32) -> Vec<u8> {
    Command::Register { sessions_max }.to_bytes()
}

pub(super) fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Applies payloads at consecutive indexes starting after the store's applied index.
pub(super) fn apply_all(store: &mut KvStore, payloads: &[Vec<u8>]) -> Vec<ApplyResult> {
    payloads
        .iter()
        .map(|payload| {
            let index = store.applied_index() + 1;
            store.apply(index, payload).expect("consecutive index")
        })
        .collect()
}

/// Registers one session (cap `SESSIONS_MAX_DEFAULT`) and returns its id.
pub(super) fn open_session(store: &mut KvStore) -> u64 {
    match apply_all(store, &[register(SESSIONS_MAX_DEFAULT)]).pop() {
        Some(ApplyResult::Registered { session_id }) => session_id,
        other => panic!("registration answered {other:?}"),
    }
}

fn sample_commands() -> Vec<Command> {
    vec![
        Command::Register { sessions_max: 1 },
        Command::Register { sessions_max: SESSIONS_MAX_LIMIT },
        Command::Set { session: session(1, 1), key: b("k"), value: b("v") },
        Command::Set { session: session(u64::MAX, u64::MAX), key: Bytes::new(), value: Bytes::new() },
        Command::Set {
            session: Session { session_id: 2, seq: 30, first_outstanding: 4 },
            key: Bytes::from(vec![0u8; KEY_BYTES_MAX]),
            value: Bytes::from(vec![7u8; 1000]),
        },
        Command::Delete { session: session(9, 4), key: b("gone") },
        Command::Cas { session: session(5, 6), key: b("k"), expected: None, new: b("first") },
        Command::Cas { session: session(5, 7), key: b("k"), expected: Some(b("first")), new: b("second") },
        Command::Cas { session: session(5, 8), key: b("k"), expected: Some(Bytes::new()), new: Bytes::new() },
    ]
}

#[test]
fn every_command_round_trips_through_its_encoding() {
    for command in sample_commands() {
        let bytes = command.to_bytes();
        assert_eq!(bytes.len(), command.encoded_len());
        assert_eq!(Command::decode(&bytes), Ok(command));
    }
}

#[test]
fn command_cut_at_every_byte_is_an_error() {
    for command in sample_commands() {
        let bytes = command.to_bytes();
        for cut in 0..bytes.len() {
            assert!(Command::decode(&bytes[..cut]).is_err(), "{command:?} cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Command::decode(&longer), Err(KvError::TrailingBytes { count: 1 }));
    }
}

#[test]
fn command_decode_names_the_truncated_field() {
    let bytes = set(1, 1, "key", "value");
    let error = Command::decode(&bytes[..bytes.len() - 2]).unwrap_err();
    assert_eq!(error.to_string(), "truncated: field `value` needs 5 bytes, 3 left");
}

#[test]
fn command_decode_enforces_limits_and_session_fields() {
    let big_key = Command::Set { session: session(1, 1), key: Bytes::from(vec![0; KEY_BYTES_MAX + 1]), value: b("") };
    assert!(matches!(Command::decode(&big_key.to_bytes()), Err(KvError::LimitExceeded { .. })));
    let big_value =
        Command::Set { session: session(1, 1), key: b("k"), value: Bytes::from(vec![0; VALUE_BYTES_MAX + 1]) };
    assert!(matches!(Command::decode(&big_value.to_bytes()), Err(KvError::LimitExceeded { .. })));
    let field_of = |payload: Vec<u8>| match Command::decode(&payload) {
        Err(KvError::InvalidField { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    };
    assert_eq!(field_of(set(0, 1, "k", "v")), "session_id");
    assert_eq!(field_of(set(1, 0, "k", "v")), "seq");
    let with = |first_outstanding| {
        let session = Session { session_id: 1, seq: 5, first_outstanding };
        Command::Delete { session, key: b("k") }.to_bytes()
    };
    assert_eq!(field_of(with(0)), "first_outstanding");
    assert_eq!(field_of(with(6)), "first_outstanding");
    assert!(Command::decode(&with(5)).is_ok() && Command::decode(&with(1)).is_ok());
    assert_eq!(field_of(register(0)), "sessions_max");
    assert_eq!(field_of(register(SESSIONS_MAX_LIMIT + 1)), "sessions_max");
    assert_eq!(Command::decode(&[0x7f]), Err(KvError::UnknownCommandTag(0x7f)));
}

#[test]
fn protocol_1_commands_are_recognised_and_refused() {
    // A protocol-1 set: tag 0x01, client_id, seq, key, value.
    let mut v1 = vec![0x01];
    v1.extend_from_slice(&7u64.to_be_bytes());
    v1.extend_from_slice(&1u64.to_be_bytes());
    v1.extend_from_slice(&[0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v']);
    for tag in COMMAND_TAGS_RETIRED {
        v1[0] = tag;
        assert_eq!(Command::decode(&v1), Err(KvError::RetiredCommandTag(tag)));
    }
    // Applying one is an error that changes nothing: dropping an acknowledged write silently, or
    // guessing its session, would let replicas disagree.
    let mut store = KvStore::new();
    let error = store.apply(1, &v1).unwrap_err();
    assert_eq!(error, KvError::RetiredCommandTag(0x03));
    assert!(error.to_string().contains("protocol-1 write"), "{error}");
    assert_eq!(store, KvStore::new());
}

#[test]
fn describe_command_prints_one_readable_line() {
    assert_eq!(
        describe_command(&set(3, 7, "foo", "bar")),
        r#"set session=3 seq=7 first_outstanding=7 key="foo" value="bar""#
    );
    assert_eq!(
        describe_command(&delete(3, 8, "a\"b\n")),
        r#"delete session=3 seq=8 first_outstanding=8 key="a\"b\x0a""#
    );
    assert_eq!(
        describe_command(&cas(3, 9, "k", None, "new")),
        r#"cas session=3 seq=9 first_outstanding=9 key="k" expected=<absent> new="new""#
    );
    assert_eq!(describe_command(&register(10_000)), "register sessions_max=10000");
    let long = "x".repeat(100);
    assert!(describe_command(&set(1, 1, "k", &long)).ends_with(&format!("\"{}\"...(100 bytes)", "x".repeat(64))));
    assert_eq!(describe_command(&[0x7f, 1]), "invalid command (unknown command tag 0x7f): 2 bytes");
}

#[test]
fn set_get_delete_behave_like_a_map() {
    let mut store = KvStore::new();
    let id = open_session(&mut store);
    let results =
        apply_all(&mut store, &[set(id, 1, "a", "1"), set(id, 2, "a", "2"), delete(id, 3, "a"), delete(id, 4, "a")]);
    assert_eq!(
        results,
        vec![
            ApplyResult::Applied(WriteResult::Stored),
            ApplyResult::Applied(WriteResult::Stored),
            ApplyResult::Applied(WriteResult::Deleted { existed: true }),
            ApplyResult::Applied(WriteResult::Deleted { existed: false }),
        ]
    );
    assert_eq!(store.get(b"a"), None);
    apply_all(&mut store, &[set(id, 5, "a", "3")]);
    assert_eq!(store.get(b"a"), Some(&b("3")));
    assert_eq!(store.len(), 1);
    assert_eq!(store.iter().collect::<Vec<_>>(), vec![(&b("a"), &b("3"))]);
    assert_eq!(store.applied_index(), 6);
}

#[test]
fn compare_and_swap_succeeds_only_on_the_expected_value() {
    let mut store = KvStore::new();
    let id = open_session(&mut store);
    let results = apply_all(
        &mut store,
        &[
            cas(id, 1, "k", None, "v1"),
            cas(id, 2, "k", None, "v2"),
            cas(id, 3, "k", Some("wrong"), "v2"),
            cas(id, 4, "k", Some("v1"), "v2"),
            cas(id, 5, "missing", Some("x"), "y"),
        ],
    );
    assert_eq!(
        results,
        vec![
            ApplyResult::Applied(WriteResult::CasOk),
            ApplyResult::Applied(WriteResult::CasFailed { current: Some(b("v1")) }),
            ApplyResult::Applied(WriteResult::CasFailed { current: Some(b("v1")) }),
            ApplyResult::Applied(WriteResult::CasOk),
            ApplyResult::Applied(WriteResult::CasFailed { current: None }),
        ]
    );
    assert_eq!(store.get(b"k"), Some(&b("v2")));
    assert_eq!(store.get(b"missing"), None);
}

#[test]
fn apply_refuses_an_index_that_is_not_next_and_changes_nothing() {
    let mut store = KvStore::new();
    assert_eq!(store.apply(2, &register(5)), Err(KvError::IndexNotNext { applied: 0, index: 2 }));
    assert_eq!(store, KvStore::new());
    store.apply(1, &register(5)).unwrap();
    store.apply(2, &set(1, 1, "k", "v")).unwrap();
    assert!(store.apply(2, &set(1, 2, "k", "w")).is_err());
    store.apply_noop(3).unwrap();
    assert_eq!(store.applied_index(), 3);
    assert_eq!(store.get(b"k"), Some(&b("v")));
}

#[test]
fn malformed_payload_consumes_its_index_and_is_rejected() {
    let mut store = KvStore::new();
    let result = store.apply(1, &[0xff, 0, 1]).unwrap();
    assert_eq!(result, ApplyResult::Rejected(KvError::UnknownCommandTag(0xff)));
    assert_eq!(store.applied_index(), 1);
    assert!(store.is_empty());
    assert_eq!(store.session_count(), 0);
}

pub(super) fn sample_store() -> KvStore {
    let mut store = KvStore::new();
    let (a, c, d, e) =
        (open_session(&mut store), open_session(&mut store), open_session(&mut store), open_session(&mut store));
    apply_all(
        &mut store,
        &[
            set(a, 1, "zeta", "last"),
            set(c, 1, "alpha", "first"),
            cas(c, 2, "alpha", Some("nope"), "x"),
            delete(d, 1, "absent"),
            set(a, 2, "", "empty key"),
            cas(e, 1, "mid", None, ""),
        ],
    );
    // A pipelining session: three replies cached above a raised floor.
    let p = open_session(&mut store);
    for (seq, first_outstanding) in [(3, 1), (1, 1), (4, 2), (7, 2)] {
        let session = Session { session_id: p, seq, first_outstanding };
        let command = Command::Set { session, key: b(&format!("p{seq}")), value: b("v") };
        apply_all(&mut store, &[command.to_bytes()]);
    }
    store.apply_noop(store.applied_index() + 1).unwrap();
    let pipelined = store.session(p).expect("open");
    assert_eq!((pipelined.floor_seq, pipelined.replies.len()), (2, 3));
    store
}

#[test]
fn snapshot_restores_an_equal_store_with_an_identical_image() {
    let store = sample_store();
    let image = store.snapshot();
    let restored = KvStore::restore(&image).unwrap();
    assert_eq!(restored, store);
    assert_eq!(restored.snapshot(), image);
    // The restored store keeps deduplicating: session 2's retry gets its cached CAS failure.
    let mut restored = restored;
    let index = restored.applied_index() + 1;
    let retry = restored.apply(index, &cas(2, 2, "alpha", Some("nope"), "x")).unwrap();
    assert_eq!(retry, ApplyResult::Duplicate(WriteResult::CasFailed { current: Some(b("first")) }));
    assert_eq!(KvStore::restore(&KvStore::new().snapshot()).unwrap(), KvStore::new());
}

/// A history with registrations, an eviction (cap 3), retries and a pipelined session.
fn sample_history() -> Vec<Vec<u8>> {
    let pipelined = |seq, first_outstanding| {
        let session = Session { session_id: 2, seq, first_outstanding };
        Command::Cas { session, key: b("c"), expected: None, new: b(&seq.to_string()) }.to_bytes()
    };
    vec![
        register(3),
        register(3),
        set(1, 1, "a", "1"),
        pipelined(2, 1),
        pipelined(1, 1),
        set(1, 1, "a", "1"),
        register(3),
        pipelined(5, 3),
        register(3),
        delete(1, 2, "a"),
        pipelined(2, 1),
        cas(7, 1, "a", None, "x"),
    ]
}

#[test]
fn a_replica_restored_mid_history_ends_byte_identical() {
    let history = sample_history();
    let mut straight = KvStore::new();
    apply_all(&mut straight, &history);
    assert_eq!(straight.session_count(), 3, "the fourth registration evicted one");
    for cut in 0..=history.len() {
        let mut prefix = KvStore::new();
        apply_all(&mut prefix, &history[..cut]);
        let mut restored = KvStore::restore(&prefix.snapshot()).expect("a valid image");
        apply_all(&mut restored, &history[cut..]);
        assert_eq!(restored, straight, "restored after {cut} entries");
        assert_eq!(restored.snapshot(), straight.snapshot(), "image after a restore at {cut}");
    }
}

#[test]
fn corrupt_snapshot_is_rejected_at_every_byte() {
    let image = sample_store().snapshot();
    for cut in 0..image.len() {
        assert!(KvStore::restore(&image[..cut]).is_err(), "cut at {cut}");
    }
    for position in 0..image.len() {
        let mut corrupt = image.clone();
        corrupt[position] ^= 0x01;
        assert!(KvStore::restore(&corrupt).is_err(), "flip at {position}");
    }
    assert_eq!(KvStore::restore(b"nope"), Err(KvError::BadMagic));
    let mut wrong_version = image.clone();
    wrong_version[4] = 9;
    assert_eq!(KvStore::restore(&wrong_version), Err(KvError::UnsupportedSnapshotVersion(9)));
}

#[test]
fn a_protocol_1_image_is_refused_with_a_precise_error() {
    // magic, version 1, applied 3, no pairs, one session (client 7, seq 1, index 3, stored), crc.
    let mut v1 = b"MRKV".to_vec();
    v1.push(1);
    v1.extend_from_slice(&3u64.to_be_bytes());
    v1.extend_from_slice(&0u64.to_be_bytes());
    v1.extend_from_slice(&1u32.to_be_bytes());
    for field in [7u64, 1, 3] {
        v1.extend_from_slice(&field.to_be_bytes());
    }
    v1.push(0);
    let crc = crc32fast::hash(&v1);
    v1.extend_from_slice(&crc.to_be_bytes());
    let error = KvStore::restore(&v1).unwrap_err();
    assert_eq!(error, KvError::RetiredSnapshotVersion(1));
    assert!(error.to_string().contains("written by protocol-1 mini-raft"), "{error}");
}

/// Replaces the CRC so that a structural error, not the checksum, is what `restore` must catch.
pub(super) fn reseal(mut image: Vec<u8>) -> Vec<u8> {
    let body_len = image.len() - 4;
    let crc = crc32fast::hash(&image[..body_len]);
    image[body_len..].copy_from_slice(&crc.to_be_bytes());
    image
}

#[test]
fn snapshot_with_a_valid_checksum_but_unsorted_keys_is_rejected() {
    let mut store = KvStore::new();
    store.data.insert(b("a"), b("1"));
    store.data.insert(b("b"), b("2"));
    let image = store.snapshot();
    // Pairs start after magic(4) + version(1) + applied(8) + count(8); each pair here is 4+1+4+1 bytes.
    let first_key = 21 + 4;
    let second_key = first_key + 10;
    let mut swapped = image.clone();
    swapped.swap(first_key, second_key);
    let error = KvStore::restore(&reseal(swapped)).unwrap_err();
    assert_eq!(error.to_string(), "invalid field `pairs[1].key`: keys are not strictly ascending");
}

#[test]
fn snapshot_with_a_huge_pair_count_is_rejected_without_allocating() {
    let mut image = KvStore::new().snapshot();
    image[13..21].copy_from_slice(&u64::MAX.to_be_bytes());
    assert!(matches!(KvStore::restore(&reseal(image)), Err(KvError::Truncated { .. })));
}

#[test]
fn random_bytes_never_panic_the_kv_decoders() {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let valid = sample_store().snapshot();
    for _ in 0..20_000 {
        let len = (rng.next_u64() % 64) as usize;
        let garbage: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let _ = Command::decode(&garbage);
        let _ = describe_command(&garbage);
        let _ = KvStore::restore(&garbage);
        // Structured corruption: a valid image with a few bytes changed and the checksum fixed.
        let mut image = valid.clone();
        for _ in 0..1 + rng.next_u64() % 3 {
            let position = (rng.next_u64() as usize) % (image.len() - 4);
            image[position] = rng.next_u64() as u8;
        }
        if let Ok(mut store) = KvStore::restore(&reseal(image)) {
            assert!(store.session_count() <= SESSIONS_MAX_LIMIT as usize);
            // Whatever restored is a store the rules can keep running on without a panic.
            let next = store.applied_index().saturating_add(1);
            if next > store.applied_index() {
                let _ = store.apply(next, &set(1, 1, "k", "v"));
            }
            assert_eq!(KvStore::restore(&store.snapshot()).map(|s| s.snapshot()), Ok(store.snapshot()));
        }
    }
}

#[test]
fn restore_refuses_images_that_break_a_session_invariant() {
    let with_session = |session_id: u64, state: SessionState, applied_index: u64| {
        let mut store = KvStore { applied_index, ..KvStore::default() };
        store.sessions.by_activity.insert(state.activity_index, session_id);
        store.sessions.sessions.insert(session_id, state);
        store.snapshot() // the encoder does not judge; `restore` must
    };
    let replies = |seqs: &[u64]| seqs.iter().map(|&seq| (seq, WriteResult::Stored)).collect();
    let state =
        |activity_index, floor_seq, seqs: &[u64]| SessionState { activity_index, floor_seq, replies: replies(seqs) };
    let window = SESSION_REPLIES_MAX as u64;
    let full: Vec<u64> = (1..=window).collect();
    let cases = [
        ("session id 0", with_session(0, state(5, 1, &[]), 9)),
        ("activity before the session existed", with_session(6, state(5, 1, &[]), 9)),
        ("activity after applied", with_session(3, state(10, 1, &[]), 9)),
        ("floor 0", with_session(3, state(5, 0, &[]), 9)),
        ("a reply below the floor", with_session(3, state(5, 4, &[3, 4]), 9)),
        ("a reply beyond the window", with_session(3, state(5, 2, &[2, 2 + window]), 9)),
    ];
    for (what, image) in cases {
        assert!(matches!(KvStore::restore(&image), Err(KvError::InvalidField { .. })), "{what} was restored");
    }
    // The edges are fine: a full window, and the session created at the image's last index.
    assert!(KvStore::restore(&with_session(9, state(9, 1, &full), 9)).is_ok());
    // More replies than the window holds, and two sessions on one activity index.
    let mut too_many = with_session(3, state(5, 1, &full), 9);
    let count_at = too_many.len() - 4 - full.len() * 9 - 4;
    too_many[count_at..count_at + 4].copy_from_slice(&(window as u32 + 1).to_be_bytes());
    assert!(matches!(KvStore::restore(&reseal(too_many)), Err(KvError::LimitExceeded { .. })));
    let mut twins = KvStore { applied_index: 9, ..KvStore::default() };
    for id in [2, 3] {
        twins.sessions.sessions.insert(id, state(5, 1, &[]));
    }
    twins.sessions.by_activity.insert(5, 2);
    let error = KvStore::restore(&twins.snapshot()).unwrap_err();
    assert!(error.to_string().contains("same activity index"), "{error}");
}
