//! `PMap` against `BTreeMap<Bytes, Bytes>`: timings and memory. Not a test (it asserts nothing
//! about time); run it with
//!
//! ```sh
//! cargo test --release --lib pmap_vs_btreemap -- --ignored --nocapture
//! ```
//!
//! Keys are 16 random bytes, values 100 bytes, each in its own allocation like the `Bytes` a
//! decoded command carries (so cloning one touches its own cache line, as in the real store).
//! Every figure is the best of `ROUNDS` runs, in nanoseconds of CPU time per operation.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::mem::size_of;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::node::{Node, BRANCH_MAX, LEAF_MAX};
use super::PMap;
use crate::raft::rng::Rng;

const ENTRIES: usize = 1_000_000;
const ROUNDS: usize = 3;
/// Overwrites measured with a fresh clone taken before each one (every write copies its path).
const FRESH_CLONE_WRITES: usize = 100_000;
/// Entries per slice when iterating the way a sliced serializer would (`range` after a key).
const SLICE_ENTRIES: usize = 10_000;

struct Data {
    keys: Vec<Bytes>,
    vals: Vec<Bytes>,
    new_vals: Vec<Bytes>,
    /// A random permutation of `0..ENTRIES`: the order of gets, overwrites and removes.
    order: Vec<usize>,
}

fn random_bytes(rng: &mut Rng, len: usize) -> Bytes {
    let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    let owned = Bytes::copy_from_slice(&bytes);
    // Promote to the shared representation now (it allocates), so the timed code does not.
    drop(owned.clone());
    owned
}

fn make_data() -> Data {
    let mut rng = Rng::new(42);
    let keys: Vec<Bytes> = (0..ENTRIES).map(|_| random_bytes(&mut rng, 16)).collect();
    let vals = (0..ENTRIES).map(|_| random_bytes(&mut rng, 100)).collect();
    let new_vals = (0..ENTRIES).map(|_| random_bytes(&mut rng, 100)).collect();
    let mut order: Vec<usize> = (0..ENTRIES).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.range(0, i as u64 + 1) as usize);
    }
    Data { keys, vals, new_vals, order }
}

/// Nanoseconds per entry of collecting the data set into a `T` (sorts, then builds bottom-up).
fn time_collect<T: FromIterator<(Bytes, Bytes)>>(data: &Data) -> f64 {
    let start = Timer::start();
    let built: T = data.keys.iter().cloned().zip(data.vals.iter().cloned()).collect();
    let ns = per_op(&start, ENTRIES);
    drop(built);
    ns
}

/// Time this thread spent on a CPU, from the kernel's scheduler statistics (Linux): unlike wall
/// time it does not count the time other builds on the shared cores took the CPU away. Falls back
/// to wall time where `/proc/thread-self/schedstat` is missing.
struct Timer {
    wall: Instant,
    on_cpu_ns: Option<u64>,
}

impl Timer {
    fn start() -> Timer {
        Timer { wall: Instant::now(), on_cpu_ns: on_cpu_ns() }
    }

    /// The scheduler's figure is only brought up to date at ticks and switches (milliseconds), so
    /// short spans are timed by the wall clock.
    fn elapsed_ns(&self) -> f64 {
        let wall = self.wall.elapsed();
        match (self.on_cpu_ns, on_cpu_ns()) {
            (Some(start), Some(now)) if wall.as_millis() >= 100 => now.saturating_sub(start) as f64,
            _ => wall.as_nanos() as f64,
        }
    }
}

fn on_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Nanoseconds per operation of `ops` operations since `start`.
fn per_op(start: &Timer, ops: usize) -> f64 {
    start.elapsed_ns() / ops as f64
}

/// One round of the PMap measurements, as `(row name, ns/op)`.
fn pmap_round(data: &Data) -> Vec<(&'static str, f64)> {
    let mut rows = Vec::new();
    let mut map = PMap::new();
    let start = Timer::start();
    for (key, val) in data.keys.iter().zip(&data.vals) {
        map.insert(key.clone(), val.clone());
    }
    rows.push(("insert 1M random keys", per_op(&start, ENTRIES)));
    rows.push(("collect() 1M random-order entries", time_collect::<PMap<Bytes, Bytes>>(data)));
    assert_eq!(map.len(), ENTRIES, "random 16-byte keys collided");

    let start = Timer::start();
    for &i in &data.order {
        black_box(map.get(&data.keys[i]));
    }
    rows.push(("get 1M (random order)", per_op(&start, ENTRIES)));

    let start = Timer::start();
    let mut sum = 0;
    for (key, val) in map.iter() {
        sum += key.len() + val.len();
    }
    black_box(sum);
    rows.push(("iterate 1M", per_op(&start, ENTRIES)));
    rows.push(("iterate 1M in range() slices of 10k", sliced_iteration(&map)));

    let start = Timer::start();
    for &i in &data.order {
        map.insert(data.keys[i].clone(), data.new_vals[i].clone());
    }
    rows.push(("overwrite 1M, unshared", per_op(&start, ENTRIES)));

    rows.extend(shared_overwrites(&mut map, data));

    let start = Timer::start();
    for _ in 0..1_000 {
        black_box(map.clone());
    }
    rows.push(("clone() + drop of the 1M map (ns each)", per_op(&start, 1_000)));

    let start = Timer::start();
    for &i in &data.order {
        map.remove(&data.keys[i]);
    }
    rows.push(("remove 1M (random order)", per_op(&start, ENTRIES)));
    rows
}

/// Overwrites while a snapshot shares the tree: the first writes after the clone copy whole paths,
/// later ones mostly find their path already copied.
fn shared_overwrites(map: &mut PMap<Bytes, Bytes>, data: &Data) -> Vec<(&'static str, f64)> {
    let mut rows = Vec::new();
    let snapshot = map.clone();
    let start = Timer::start();
    for &i in &data.order[..ENTRIES / 10] {
        map.insert(data.keys[i].clone(), data.vals[i].clone());
    }
    rows.push(("overwrite, clone held: first 100k after clone", per_op(&start, ENTRIES / 10)));
    for &i in &data.order[ENTRIES / 10..] {
        map.insert(data.keys[i].clone(), data.vals[i].clone());
    }
    rows.push(("overwrite, clone held: all 1M after clone", per_op(&start, ENTRIES)));
    let start = Timer::start();
    drop(snapshot);
    rows.push(("drop of that snapshot afterwards (ns, once)", per_op(&start, 1)));

    let start = Timer::start();
    for &i in &data.order[..FRESH_CLONE_WRITES] {
        let snapshot = map.clone();
        map.insert(data.keys[i].clone(), data.new_vals[i].clone());
        drop(snapshot);
    }
    rows.push(("overwrite with a fresh clone before each (path copy + free)", per_op(&start, FRESH_CLONE_WRITES)));
    rows
}

/// Iterates the whole map in slices, each resuming after the last key the previous one returned.
fn sliced_iteration(map: &PMap<Bytes, Bytes>) -> f64 {
    let start = Timer::start();
    let mut last: Option<Bytes> = None;
    let mut seen = 0;
    loop {
        let slice = match &last {
            None => map.range::<Bytes, _>(..),
            Some(key) => map.range::<Bytes, _>((Bound::Excluded(key), Bound::Unbounded)),
        };
        let mut in_slice = 0;
        for (key, _) in slice.take(SLICE_ENTRIES) {
            in_slice += 1;
            last = Some(key.clone());
        }
        seen += in_slice;
        if in_slice < SLICE_ENTRIES {
            break;
        }
    }
    assert_eq!(seen, map.len());
    per_op(&start, seen)
}

fn btree_round(data: &Data) -> Vec<(&'static str, f64)> {
    let mut rows = Vec::new();
    let mut map = BTreeMap::new();
    let start = Timer::start();
    for (key, val) in data.keys.iter().zip(&data.vals) {
        map.insert(key.clone(), val.clone());
    }
    rows.push(("insert 1M random keys", per_op(&start, ENTRIES)));
    rows.push(("collect() 1M random-order entries", time_collect::<BTreeMap<Bytes, Bytes>>(data)));

    let start = Timer::start();
    for &i in &data.order {
        black_box(map.get(&data.keys[i]));
    }
    rows.push(("get 1M (random order)", per_op(&start, ENTRIES)));

    let start = Timer::start();
    let mut sum = 0;
    for (key, val) in map.iter() {
        sum += key.len() + val.len();
    }
    black_box(sum);
    rows.push(("iterate 1M", per_op(&start, ENTRIES)));

    let start = Timer::start();
    for &i in &data.order {
        map.insert(data.keys[i].clone(), data.new_vals[i].clone());
    }
    rows.push(("overwrite 1M, unshared", per_op(&start, ENTRIES)));

    let start = Timer::start();
    let copy = black_box(map.clone());
    rows.push(("clone() + drop of the 1M map (ns each)", per_op(&start, 1)));
    drop(copy);

    let start = Timer::start();
    for &i in &data.order {
        map.remove(&data.keys[i]);
    }
    rows.push(("remove 1M (random order)", per_op(&start, ENTRIES)));
    rows
}

/// Bytes of heap the tree's nodes take (excluding the keys' and values' own buffers and the
/// allocator's overhead), and the number of leaves and branches.
fn tree_heap(map: &PMap<Bytes, Bytes>) -> (usize, usize, usize) {
    fn walk(node: &Node<Bytes, Bytes>, totals: &mut (usize, usize, usize)) {
        let arc_header = 2 * size_of::<usize>();
        totals.0 += arc_header + size_of::<Node<Bytes, Bytes>>();
        match node {
            Node::Leaf(leaf) => {
                totals.0 += (leaf.keys.capacity() + leaf.vals.capacity()) * size_of::<Bytes>();
                totals.1 += 1;
            }
            Node::Branch(branch) => {
                totals.0 += branch.seps.capacity() * size_of::<Bytes>();
                totals.0 += branch.children.capacity() * size_of::<Arc<Node<Bytes, Bytes>>>();
                totals.2 += 1;
                branch.children.iter().for_each(|child| walk(child, totals));
            }
        }
    }
    let mut totals = (0, 0, 0);
    if let Some(root) = map.root.as_deref() {
        walk(root, &mut totals);
    }
    totals
}

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<usize>().ok());
    kib.unwrap_or(0) * 1024
}

/// Resident-set growth, in bytes per entry, while `build` runs (what it builds is kept alive until
/// the caller drops it, so no later build reuses its memory).
fn rss_growth<T>(build: impl FnOnce() -> T) -> (T, f64) {
    let before = rss_bytes();
    let built = build();
    (built, rss_bytes().saturating_sub(before) as f64 / ENTRIES as f64)
}

fn print_memory(data: &Data) {
    let entries = || data.keys.iter().cloned().zip(data.vals.iter().cloned());
    let (pmap_inserted, pmap_inserted_rss) = rss_growth(|| {
        let mut map = PMap::new();
        entries().for_each(|(key, val)| drop(map.insert(key, val)));
        map
    });
    let (btree_inserted, btree_inserted_rss) = rss_growth(|| {
        let mut map = BTreeMap::new();
        entries().for_each(|(key, val)| drop(map.insert(key, val)));
        map
    });
    let (pmap_built, pmap_built_rss) = rss_growth(|| entries().collect::<PMap<_, _>>());
    let (btree_built, btree_built_rss) = rss_growth(|| entries().collect::<BTreeMap<_, _>>());
    println!("\nmemory of the map structure, bytes per entry (keys' and values' buffers not counted):");
    println!("| built by | PMap RSS | PMap node heap | PMap leaves full | BTreeMap RSS |\n|---|---:|---:|---:|---:|");
    for (how, pmap, pmap_rss, btree_rss) in [
        ("1M inserts, random order", &pmap_inserted, pmap_inserted_rss, btree_inserted_rss),
        ("collect() (bulk build)", &pmap_built, pmap_built_rss, btree_built_rss),
    ] {
        let (heap, leaves, _) = tree_heap(pmap);
        let fill = 100.0 * ENTRIES as f64 / (leaves * LEAF_MAX) as f64;
        let heap = heap as f64 / ENTRIES as f64;
        println!("| {how} | {pmap_rss:.1} | {heap:.1} | {fill:.0}% | {btree_rss:.1} |");
    }
    drop((pmap_inserted, btree_inserted, pmap_built, btree_built));
}

#[test]
#[ignore = "a benchmark: run with --release --ignored --nocapture"]
fn pmap_vs_btreemap() {
    let data = make_data();
    print_memory(&data);
    let mut best_pmap: Vec<(&str, f64)> = Vec::new();
    let mut best_btree: Vec<(&str, f64)> = Vec::new();
    for _ in 0..ROUNDS {
        keep_best(&mut best_pmap, pmap_round(&data));
        keep_best(&mut best_btree, btree_round(&data));
    }
    println!("\nLEAF_MAX = {LEAF_MAX}, BRANCH_MAX = {BRANCH_MAX}; best of {ROUNDS} rounds, ns/op");
    println!("| operation | PMap | BTreeMap |\n|---|---:|---:|");
    for (name, pmap_ns) in &best_pmap {
        let btree = best_btree.iter().find(|(other, _)| other == name);
        let btree_ns = btree.map_or("-".to_string(), |(_, ns)| format!("{ns:.0}"));
        println!("| {name} | {pmap_ns:.0} | {btree_ns} |");
    }
}

fn keep_best(best: &mut Vec<(&'static str, f64)>, round: Vec<(&'static str, f64)>) {
    if best.is_empty() {
        *best = round;
        return;
    }
    for ((_, best_ns), (_, ns)) in best.iter_mut().zip(round) {
        *best_ns = best_ns.min(ns);
    }
}
