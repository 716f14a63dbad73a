//! Tests of the state machine: command encoding, apply semantics, sessions, snapshot images.

use crate::raft::rng::Rng;
use bytes::Bytes;

use super::*;

fn session(client_id: u64, seq: u64) -> Session {
    Session { client_id, seq }
}

fn set(client_id: u64, seq: u64, key: &str, value: &str) -> Vec<u8> {
    Command::Set { session: session(client_id, seq), key: b(key), value: b(value) }.to_bytes()
}

fn delete(client_id: u64, seq: u64, key: &str) -> Vec<u8> {
    Command::Delete { session: session(client_id, seq), key: b(key) }.to_bytes()
}

fn cas(client_id: u64, seq: u64, key: &str, expected: Option<&str>, new: &str) -> Vec<u8> {
    Command::Cas { session: session(client_id, seq), key: b(key), expected: expected.map(b), new: b(new) }.to_bytes()
}

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Applies payloads at consecutive indexes starting after the store's applied index.
fn apply_all(store: &mut KvStore, payloads: &[Vec<u8>]) -> Vec<ApplyResult> {
    payloads
        .iter()
        .map(|payload| {
            let index = store.applied_index() + 1;
            store.apply(index, payload).expect("consecutive index")
        })
        .collect()
}

fn sample_commands() -> Vec<Command> {
    vec![
        Command::Set { session: session(1, 1), key: b("k"), value: b("v") },
        Command::Set { session: session(u64::MAX, u64::MAX), key: Bytes::new(), value: Bytes::new() },
        Command::Set {
            session: session(2, 3),
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
fn command_decode_enforces_limits_and_session_ids() {
    let big_key = Command::Set { session: session(1, 1), key: Bytes::from(vec![0; KEY_BYTES_MAX + 1]), value: b("") };
    assert!(matches!(Command::decode(&big_key.to_bytes()), Err(KvError::LimitExceeded { .. })));
    let big_value =
        Command::Set { session: session(1, 1), key: b("k"), value: Bytes::from(vec![0; VALUE_BYTES_MAX + 1]) };
    assert!(matches!(Command::decode(&big_value.to_bytes()), Err(KvError::LimitExceeded { .. })));
    assert!(matches!(Command::decode(&set(0, 1, "k", "v")), Err(KvError::InvalidField { .. })));
    assert!(matches!(Command::decode(&set(1, 0, "k", "v")), Err(KvError::InvalidField { .. })));
    assert_eq!(Command::decode(&[0x7f]), Err(KvError::UnknownCommandTag(0x7f)));
}

#[test]
fn describe_command_prints_one_readable_line() {
    assert_eq!(describe_command(&set(3, 7, "foo", "bar")), r#"set client=3 seq=7 key="foo" value="bar""#);
    assert_eq!(describe_command(&delete(3, 8, "a\"b\n")), r#"delete client=3 seq=8 key="a\"b\x0a""#);
    assert_eq!(
        describe_command(&cas(3, 9, "k", None, "new")),
        r#"cas client=3 seq=9 key="k" expected=<absent> new="new""#
    );
    let long = "x".repeat(100);
    assert!(describe_command(&set(1, 1, "k", &long)).ends_with(&format!("\"{}\"...(100 bytes)", "x".repeat(64))));
    assert_eq!(describe_command(&[0x7f, 1]), "invalid command (unknown command tag 0x7f): 2 bytes");
}

#[test]
fn set_get_delete_behave_like_a_map() {
    let mut store = KvStore::new();
    let results =
        apply_all(&mut store, &[set(1, 1, "a", "1"), set(1, 2, "a", "2"), delete(1, 3, "a"), delete(1, 4, "a")]);
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
    apply_all(&mut store, &[set(1, 5, "a", "3")]);
    assert_eq!(store.get(b"a"), Some(&b("3")));
    assert_eq!(store.len(), 1);
    assert_eq!(store.iter().collect::<Vec<_>>(), vec![(&b("a"), &b("3"))]);
    assert_eq!(store.applied_index(), 5);
}

#[test]
fn compare_and_swap_succeeds_only_on_the_expected_value() {
    let mut store = KvStore::new();
    let results = apply_all(
        &mut store,
        &[
            cas(1, 1, "k", None, "v1"),
            cas(1, 2, "k", None, "v2"),
            cas(1, 3, "k", Some("wrong"), "v2"),
            cas(1, 4, "k", Some("v1"), "v2"),
            cas(1, 5, "missing", Some("x"), "y"),
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
fn retried_write_is_applied_once_and_answered_from_the_cache() {
    let mut store = KvStore::new();
    // Client 1's CAS succeeds; client 2 then changes the key; client 1's retry of the same seq must not
    // run again (it would now fail) but get the original CasOk.
    let results =
        apply_all(&mut store, &[cas(1, 1, "k", None, "mine"), set(2, 1, "k", "theirs"), cas(1, 1, "k", None, "mine")]);
    assert_eq!(results[2], ApplyResult::Duplicate(WriteResult::CasOk));
    assert_eq!(store.get(b"k"), Some(&b("theirs")));
    // A retried set after the client moved on is stale, and changes nothing.
    let results = apply_all(&mut store, &[set(1, 2, "k", "again"), set(1, 1, "k", "old")]);
    assert_eq!(results[0], ApplyResult::Applied(WriteResult::Stored));
    assert_eq!(results[1], ApplyResult::StaleSequence { client_id: 1, seq: 1, last_seq: 2 });
    assert_eq!(store.get(b"k"), Some(&b("again")));
}

#[test]
fn unknown_client_with_seq_above_one_is_told_its_session_expired() {
    let mut store = KvStore::new();
    let results = apply_all(&mut store, &[set(7, 2, "k", "v")]);
    assert_eq!(results, vec![ApplyResult::SessionExpired { client_id: 7, seq: 2 }]);
    assert_eq!(store.get(b"k"), None);
    assert_eq!(store.session_count(), 0);
}

#[test]
fn apply_refuses_an_index_that_is_not_next_and_changes_nothing() {
    let mut store = KvStore::new();
    assert_eq!(store.apply(2, &set(1, 1, "k", "v")), Err(KvError::IndexNotNext { applied: 0, index: 2 }));
    assert_eq!(store, KvStore::new());
    store.apply(1, &set(1, 1, "k", "v")).unwrap();
    assert!(store.apply(1, &set(1, 2, "k", "w")).is_err());
    store.apply_noop(2).unwrap();
    assert_eq!(store.applied_index(), 2);
    assert_eq!(store.get(b"k"), Some(&b("v")));
}

#[test]
fn malformed_payload_consumes_its_index_and_is_rejected() {
    let mut store = KvStore::new();
    let result = store.apply(1, &[0xff, 0, 1]).unwrap();
    assert_eq!(result, ApplyResult::Rejected(KvError::UnknownCommandTag(0xff)));
    assert_eq!(store.applied_index(), 1);
    assert!(store.is_empty());
}

#[test]
fn session_table_evicts_the_client_with_the_oldest_write() {
    let mut store = KvStore::new();
    for client in 1..=SESSIONS_MAX as u64 {
        apply_all(&mut store, &[set(client, 1, "k", "v")]);
    }
    assert_eq!(store.session_count(), SESSIONS_MAX);
    // Client 1 writes again, so client 2 now holds the oldest write.
    apply_all(&mut store, &[set(1, 2, "k", "v")]);
    apply_all(&mut store, &[set(SESSIONS_MAX as u64 + 1, 1, "k", "v")]);
    assert_eq!(store.session_count(), SESSIONS_MAX);
    assert!(store.session(1).is_some());
    assert!(store.session(2).is_none());
    assert!(store.session(3).is_some());
    let results = apply_all(&mut store, &[set(2, 2, "k", "v")]);
    assert_eq!(results, vec![ApplyResult::SessionExpired { client_id: 2, seq: 2 }]);
    // The snapshot carries the full table and restores it exactly.
    let restored = KvStore::restore(&store.snapshot()).unwrap();
    assert_eq!(restored, store);
}

fn sample_store() -> KvStore {
    let mut store = KvStore::new();
    apply_all(
        &mut store,
        &[
            set(1, 1, "zeta", "last"),
            set(2, 1, "alpha", "first"),
            cas(3, 1, "alpha", Some("nope"), "x"),
            delete(4, 1, "absent"),
            set(1, 2, "", "empty key"),
            cas(5, 1, "mid", None, ""),
        ],
    );
    store.apply_noop(store.applied_index() + 1).unwrap();
    store
}

#[test]
fn snapshot_restores_an_equal_store_with_an_identical_image() {
    let store = sample_store();
    let image = store.snapshot();
    let restored = KvStore::restore(&image).unwrap();
    assert_eq!(restored, store);
    assert_eq!(restored.snapshot(), image);
    // The restored store keeps deduplicating: client 3's retry gets its cached CAS failure.
    let mut restored = restored;
    let index = restored.applied_index() + 1;
    let retry = restored.apply(index, &cas(3, 1, "alpha", Some("nope"), "x")).unwrap();
    assert_eq!(retry, ApplyResult::Duplicate(WriteResult::CasFailed { current: Some(b("first")) }));
    assert_eq!(KvStore::restore(&KvStore::new().snapshot()).unwrap(), KvStore::new());
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

/// Replaces the CRC so that a structural error, not the checksum, is what `restore` must catch.
fn reseal(mut image: Vec<u8>) -> Vec<u8> {
    let body_len = image.len() - 4;
    let crc = crc32fast::hash(&image[..body_len]);
    image[body_len..].copy_from_slice(&crc.to_be_bytes());
    image
}

#[test]
fn snapshot_with_a_valid_checksum_but_unsorted_keys_is_rejected() {
    let mut store = KvStore::new();
    apply_all(&mut store, &[set(1, 1, "a", "1"), set(1, 2, "b", "2")]);
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
        if let Ok(store) = KvStore::restore(&reseal(image)) {
            assert!(store.session_count() <= SESSIONS_MAX);
        }
    }
}
