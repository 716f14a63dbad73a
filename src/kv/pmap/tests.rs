//! Tests of [`PMap`]: a model check against `BTreeMap`, snapshot isolation, cross-thread use.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use super::node::{Node, BRANCH_MAX, LEAF_MAX};
use super::PMap;
use crate::raft::rng::Rng;

type Model = BTreeMap<u64, u64>;

/// Asserts that `map` holds exactly what `model` holds, through every read path.
fn assert_same(map: &PMap<u64, u64>, model: &Model) {
    map.check_invariants();
    assert_eq!(map.len(), model.len());
    assert_eq!(map.is_empty(), model.is_empty());
    assert!(map.iter().eq(model.iter()), "iter differs");
    assert!(map.keys().eq(model.keys()), "keys differ");
    assert!(map.values().eq(model.values()), "values differ");
    assert_eq!(map.first_key_value(), model.first_key_value());
    assert_eq!(map.last_key_value(), model.last_key_value());
}

/// Random operations on `map` and `model` alike, comparing every result; the insert share of the
/// operations swings between phases so the tree both grows and shrinks.
fn run_ops(rng: &mut Rng, map: &mut PMap<u64, u64>, model: &mut Model, key_space: u64, ops: usize) {
    for step in 0..ops {
        let insert_percent = if (step / 500).is_multiple_of(2) { 65 } else { 25 };
        let key = rng.range(0, key_space);
        let roll = rng.range(0, 100);
        if roll < insert_percent {
            let val = rng.next_u64();
            assert_eq!(map.insert(key, val), model.insert(key, val), "insert {key}");
        } else if roll < 70 {
            assert_eq!(map.remove(&key), model.remove(&key), "remove {key}");
        } else if roll < 80 {
            assert_eq!(map.get(&key), model.get(&key), "get {key}");
            assert_eq!(map.contains_key(&key), model.contains_key(&key));
        } else if roll < 84 {
            assert_eq!(map.pop_first(), model.pop_first(), "pop_first");
        } else if roll < 86 {
            assert_eq!(map.pop_last(), model.pop_last(), "pop_last");
        } else if roll < 92 {
            let take = rng.range(0, 40) as usize;
            assert!(map.iter_from(&key).take(take).eq(model.range(key..).take(take)), "iter_from {key}");
        } else if roll < 97 {
            check_random_range(rng, map, model, key_space);
        } else if roll < 99 {
            assert_eq!(map.first_key_value(), model.first_key_value());
            assert_eq!(map.last_key_value(), model.last_key_value());
        } else {
            assert!(map.iter().eq(model.iter()), "iter at step {step}");
        }
        assert_eq!(map.len(), model.len(), "len at step {step}");
        if step.is_multiple_of(256) {
            map.check_invariants();
        }
    }
}

fn random_bound(rng: &mut Rng, key_space: u64) -> Bound<u64> {
    let key = rng.range(0, key_space);
    match rng.range(0, 3) {
        0 => Bound::Included(key),
        1 => Bound::Excluded(key),
        _ => Bound::Unbounded,
    }
}

fn check_random_range(rng: &mut Rng, map: &PMap<u64, u64>, model: &Model, key_space: u64) {
    let (start, end) = (random_bound(rng, key_space), random_bound(rng, key_space));
    let take = rng.range(0, 60) as usize;
    let got: Vec<_> = map.range((start, end)).take(take).collect();
    // BTreeMap::range panics on an inverted or empty-excluded range; PMap yields nothing then.
    let inverted = match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => s >= e,
        _ => false,
    };
    let want: Vec<_> = if inverted { Vec::new() } else { model.range((start, end)).take(take).collect() };
    assert_eq!(got, want, "range {start:?}..{end:?}");
}

#[test]
fn matches_btreemap_model_across_seeds() {
    const KEY_SPACES: [u64; 4] = [16, 300, 5_000, 1 << 40];
    for seed in 0..400 {
        let mut rng = Rng::new(seed);
        let key_space = KEY_SPACES[seed as usize % KEY_SPACES.len()];
        let (mut map, mut model) = (PMap::new(), Model::new());
        run_ops(&mut rng, &mut map, &mut model, key_space, 3_000);
        assert_same(&map, &model);
    }
}

#[test]
fn grows_three_levels_and_shrinks_to_empty() {
    let mut rng = Rng::new(99);
    let (mut map, mut model) = (PMap::new(), Model::new());
    // Enough entries for a tree of height >= 3, so branches split, lend and merge too.
    let count = (LEAF_MAX * BRANCH_MAX * 4) as u64;
    while (model.len() as u64) < count {
        let (key, val) = (rng.next_u64(), rng.next_u64());
        assert_eq!(map.insert(key, val), model.insert(key, val));
    }
    assert_same(&map, &model);
    let mut keys: Vec<u64> = model.keys().copied().collect();
    while !keys.is_empty() {
        let key = keys.swap_remove(rng.range(0, keys.len() as u64) as usize);
        assert_eq!(map.remove(&key), model.remove(&key));
        assert_eq!(map.remove(&key), None, "removed twice");
        if keys.len().is_multiple_of(500) {
            assert_same(&map, &model);
        }
    }
    assert!(map.is_empty() && map.root.is_none());
    map.check_invariants();
}

#[test]
fn ascending_and_descending_inserts_then_pops() {
    let mut map = PMap::new();
    for key in 0..5_000u64 {
        map.insert(key, key * 2);
    }
    for key in (5_000..10_000u64).rev() {
        map.insert(key, key * 2);
    }
    map.check_invariants();
    assert!(map.iter().map(|(k, v)| (*k, *v)).eq((0..10_000).map(|k| (k, k * 2))));
    for key in 0..5_000u64 {
        assert_eq!(map.pop_first(), Some((key, key * 2)));
        assert_eq!(map.pop_last(), Some((9_999 - key, (9_999 - key) * 2)));
        if key.is_multiple_of(97) {
            map.check_invariants();
        }
    }
    assert_eq!(map.pop_first(), None);
    assert_eq!(map.pop_last(), None);
}

#[test]
fn collect_builds_valid_full_trees() {
    let sizes = [0, 1, 2, 31, 32, 33, 64, 65, 500, 1_023, 1_024, 1_025, 1_056, 2 * 32 * 32 + 1, 40_000];
    for (seed, &size) in sizes.iter().enumerate() {
        let mut rng = Rng::new(seed as u64);
        // Keys drawn from about `size` values: many duplicates, given in random order.
        let entries: Vec<(u64, u64)> = (0..size * 2).map(|_| (rng.range(0, size as u64 + 1), rng.next_u64())).collect();
        let mut model = Model::new();
        model.extend(entries.iter().copied());
        let mut map: PMap<u64, u64> = entries.into_iter().collect();
        assert_same(&map, &model);
        // Full nodes split on the first insert into them; keep going to shake out bad bounds.
        run_ops(&mut rng, &mut map, &mut model, size as u64 * 2 + 1, 3_000);
        assert_same(&map, &model);
    }
}

/// The number of entries in each leaf, left to right.
fn leaf_sizes<K, V>(map: &PMap<K, V>) -> Vec<usize> {
    fn walk<K, V>(node: &Node<K, V>, sizes: &mut Vec<usize>) {
        match node {
            Node::Leaf(leaf) => sizes.push(leaf.keys.len()),
            Node::Branch(branch) => branch.children.iter().for_each(|child| walk(child, sizes)),
        }
    }
    let mut sizes = Vec::new();
    if let Some(root) = map.root.as_deref() {
        walk(root, &mut sizes);
    }
    sizes
}

#[test]
fn collect_fills_leaves_but_ascending_inserts_half_fill_them() {
    let entries = || (0..(LEAF_MAX * 1_000) as u64).map(|k| (k, k));
    let built: PMap<u64, u64> = entries().collect();
    built.check_invariants();
    assert!(leaf_sizes(&built).iter().all(|&size| size == LEAF_MAX));
    let mut inserted = PMap::new();
    entries().for_each(|(k, v)| assert_eq!(inserted.insert(k, v), None));
    assert_eq!(built, inserted);
    let half_full = leaf_sizes(&inserted).iter().filter(|&&size| size <= LEAF_MAX / 2 + 1).count();
    assert!(half_full > 1_900, "ascending inserts split leaves in half: {half_full}");
}

#[test]
fn empty_map_reads() {
    let map: PMap<u64, u64> = PMap::default();
    assert!(map.is_empty());
    assert_eq!(map.get(&1), None);
    assert_eq!(map.iter().next(), None);
    assert_eq!(map.iter_from(&0).next(), None);
    assert_eq!(map.range(..).next(), None);
    assert_eq!(map.first_key_value(), None);
    assert_eq!(format!("{map:?}"), "{}");
    map.check_invariants();
}

#[test]
fn bytes_keys_are_found_by_slice() {
    let mut map: PMap<Bytes, Bytes> = PMap::new();
    for i in 0..2_000u32 {
        map.insert(Bytes::from(format!("key-{i:05}")), Bytes::from(format!("val-{i}")));
    }
    assert_eq!(map.get(b"key-00042".as_slice()), Some(&Bytes::from("val-42")));
    assert!(map.contains_key(b"key-01999".as_slice()));
    assert!(!map.contains_key(b"key-02000".as_slice()));
    let from: Vec<_> = map.iter_from(b"key-01997".as_slice()).map(|(k, _)| k.clone()).collect();
    assert_eq!(from, ["key-01997", "key-01998", "key-01999"].map(Bytes::from));
    assert_eq!(map.remove(b"key-00042".as_slice()), Some(Bytes::from("val-42")));
    assert_eq!(map.len(), 1_999);
    map.check_invariants();
}

#[test]
fn equality_debug_and_collect() {
    let a: PMap<u64, &str> = [(3, "c"), (1, "a"), (2, "b")].into_iter().collect();
    let mut b = PMap::new();
    b.extend([(2, "b"), (3, "c"), (1, "z"), (1, "a")]);
    assert_eq!(a, b);
    assert!(!a.ptr_eq(&b));
    assert_eq!(format!("{a:?}"), r#"{1: "a", 2: "b", 3: "c"}"#);
    b.insert(4, "d");
    assert_ne!(a, b);
    b.remove(&4);
    b.insert(2, "x");
    assert_ne!(a, b, "same keys, different value");
    let c = a.clone();
    assert!(c.ptr_eq(&a) && c == a);
}

/// A clone taken after `setup_ops` random operations; then both copies are mutated independently
/// and each is compared against its own model, and the two are dropped in the order given.
fn check_snapshot_isolation(seed: u64, key_space: u64, drop_original_first: bool) {
    let mut rng = Rng::new(seed);
    let (mut map, mut model) = (PMap::new(), Model::new());
    run_ops(&mut rng, &mut map, &mut model, key_space, 4_000);
    let (mut snap, mut snap_model) = (map.clone(), model.clone());
    assert!(snap.ptr_eq(&map));
    run_ops(&mut rng, &mut map, &mut model, key_space, 3_000);
    assert_same(&snap, &snap_model);
    assert_same(&map, &model);
    run_ops(&mut rng, &mut snap, &mut snap_model, key_space, 3_000);
    assert_same(&map, &model);
    assert_same(&snap, &snap_model);
    if drop_original_first {
        drop(map);
        run_ops(&mut rng, &mut snap, &mut snap_model, key_space, 1_000);
        assert_same(&snap, &snap_model);
    } else {
        drop(snap);
        run_ops(&mut rng, &mut map, &mut model, key_space, 1_000);
        assert_same(&map, &model);
    }
}

#[test]
fn clone_is_an_isolated_snapshot() {
    for seed in 0..40 {
        let key_space = [64, 2_000, 1 << 30][seed as usize % 3];
        check_snapshot_isolation(seed, key_space, seed.is_multiple_of(2));
    }
}

#[test]
fn many_live_snapshots_stay_frozen() {
    let mut rng = Rng::new(7);
    let (mut map, mut model) = (PMap::new(), Model::new());
    let mut snapshots = Vec::new();
    for _ in 0..30 {
        run_ops(&mut rng, &mut map, &mut model, 3_000, 400);
        snapshots.push((map.clone(), model.clone()));
    }
    // Drop them in a scrambled order, checking the survivors (and the live map) each time.
    while !snapshots.is_empty() {
        let victim = rng.range(0, snapshots.len() as u64) as usize;
        drop(snapshots.swap_remove(victim));
        for (snap, snap_model) in &snapshots {
            assert_same(snap, snap_model);
        }
        run_ops(&mut rng, &mut map, &mut model, 3_000, 100);
        assert_same(&map, &model);
    }
}

#[test]
fn removing_an_absent_key_from_a_snapshot_copies_nothing() {
    let map: PMap<u64, u64> = (0..10_000).map(|k| (k * 2, k)).collect();
    let mut copy = map.clone();
    assert_eq!(copy.remove(&1), None);
    assert_eq!(copy.remove(&20_001), None);
    assert!(copy.ptr_eq(&map), "an absent-key removal must leave the tree shared");
    assert_eq!(copy.remove(&2), Some(1));
    assert!(!copy.ptr_eq(&map));
    assert_eq!(map.get(&2), Some(&1));
}

#[test]
fn pmap_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PMap<Bytes, Bytes>>();
    assert_send_sync::<PMap<u64, u64>>();
}

#[test]
fn snapshot_read_on_another_thread_while_original_mutates() {
    let mut rng = Rng::new(2024);
    let (mut map, mut model) = (PMap::new(), Model::new());
    for _ in 0..50_000 {
        let (key, val) = (rng.range(0, 100_000), rng.next_u64());
        map.insert(key, val);
        model.insert(key, val);
    }
    let (frozen, frozen_model) = (map.clone(), model.clone());
    let expected_reader_len = model.range(5_000..).count();
    let reader = std::thread::spawn(move || {
        let mut frozen = frozen;
        for _ in 0..20 {
            assert!(frozen.iter().eq(frozen_model.iter()), "frozen copy changed under the reader");
        }
        // The reader's copy may be mutated too; that must not disturb the writer either.
        for key in 0..5_000 {
            frozen.remove(&key);
        }
        frozen.check_invariants();
        frozen.len()
    });
    let mut ops_rng = Rng::new(77);
    run_ops(&mut ops_rng, &mut map, &mut model, 100_000, 60_000);
    let reader_len = reader.join().expect("reader thread panicked");
    assert_same(&map, &model);
    assert_eq!(reader_len, expected_reader_len);
}

/// A million 16-byte keys: insert, read back, iterate in order, remove all. Slow without
/// optimizations, so only run by default in release builds.
#[test]
#[cfg_attr(debug_assertions, ignore)]
fn million_keys_round_trip() {
    const COUNT: usize = 1_000_000;
    let mut rng = Rng::new(1);
    let keys: Vec<Bytes> = (0..COUNT).map(|i| key_bytes(&mut rng, i)).collect();
    let mut map = PMap::new();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(map.insert(key.clone(), i as u64), None);
    }
    map.check_invariants();
    assert_eq!(map.len(), COUNT);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(map.get(key), Some(&(i as u64)));
    }
    let mut sorted = keys.clone();
    sorted.sort();
    assert!(map.keys().eq(sorted.iter()));
    let snapshot = map.clone();
    for key in &keys {
        assert!(map.remove(key).is_some());
    }
    assert!(map.is_empty());
    snapshot.check_invariants();
    assert!(snapshot.keys().eq(sorted.iter()), "the snapshot lost entries");
}

/// 16 bytes: 8 random, then the index, so every key is distinct.
fn key_bytes(rng: &mut Rng, index: usize) -> Bytes {
    let mut key = rng.next_u64().to_be_bytes().to_vec();
    key.extend_from_slice(&(index as u64).to_be_bytes());
    Bytes::from(key)
}
