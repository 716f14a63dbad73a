//! Property test: random append / truncate / compact / hard state / sync / reopen / power-cut
//! sequences against an in-memory model. Seeded; a failure prints the seed and the op number.

mod storage_support;

use mini_raft::raft::types::{Entry, HardState};
use mini_raft::storage::Wal;
use std::path::Path;
use storage_support::{all_entries, entry, open, Rng};

const SEGMENT_BYTES: u64 = 64 << 10;
const SEEDS: u64 = 24;
const OPS_PER_SEED: usize = 400;

#[derive(Clone, Debug, Default)]
struct Model {
    floor: (u64, u64),
    entries: Vec<Entry>,
    hs: HardState,
}

impl Model {
    fn last(&self) -> u64 {
        self.entries.last().map_or(self.floor.0, |e| e.index)
    }
    fn term(&self, i: u64) -> Option<u64> {
        if i == self.floor.0 {
            return Some(self.floor.1);
        }
        self.entries.iter().find(|e| e.index == i).map(|e| e.term)
    }
    fn append(&mut self, batch: &[Entry]) {
        let first = batch[0].index;
        self.entries.retain(|e| e.index < first);
        self.entries.extend_from_slice(batch);
    }
    fn compact(&mut self, i: u64, t: u64) {
        if i <= self.floor.0 {
            return;
        }
        if self.term(i).is_some_and(|have| have != t) {
            self.entries.clear();
        }
        self.entries.retain(|e| e.index > i);
        self.floor = (i, t);
    }
}

fn check(wal: &Wal, m: &Model, ctx: &str) {
    assert_eq!(wal.first_index(), m.floor.0 + 1, "{ctx}: first index");
    assert_eq!(wal.last_index(), m.last(), "{ctx}: last index");
    assert_eq!(wal.hard_state(), m.hs, "{ctx}: hard state");
    assert_eq!(wal.snapshot_floor(), m.floor, "{ctx}: floor");
    assert_eq!(all_entries(wal), m.entries, "{ctx}: entries");
    for i in m.floor.0.saturating_sub(2)..=m.last() + 2 {
        assert_eq!(wal.term(i), m.term(i), "{ctx}: term({i})");
    }
}

fn random_batch(rng: &mut Rng, m: &Model, term: &mut u64) -> Vec<Entry> {
    let last = m.last();
    let back = rng.range(0, 6).min(last - m.floor.0);
    let first = last + 1 - back;
    let prev_term = m.term(first - 1).unwrap_or(0);
    if rng.chance(20) || *term < prev_term {
        *term = (*term).max(prev_term) + rng.range(0, 1);
    }
    let n = rng.range(1, 24);
    (first..first + n)
        .map(|i| {
            let len = if rng.chance(5) { rng.range(1000, 4000) } else { rng.range(0, 200) };
            entry(i, *term, &rng.bytes(len as usize))
        })
        .collect()
}

fn random_hard_state(rng: &mut Rng, m: &Model) -> HardState {
    let term = m.hs.term + rng.range(0, 1);
    let vote = if term == m.hs.term && m.hs.vote != 0 { m.hs.vote } else { rng.range(0, 5) };
    let commit = m.hs.commit.max(rng.range(m.hs.commit.min(m.last()), m.last()));
    HardState { term, vote, commit }
}

/// Drops everything after the durable tail of the newest segment, as a power failure could.
fn power_cut(tail_path: &Path, durable: u64) {
    let mut b = std::fs::read(tail_path).expect("read tail segment");
    b[durable as usize..].fill(0);
    std::fs::write(tail_path, b).expect("write tail segment");
}

#[derive(Default)]
struct Coverage {
    rotations: u64,
    deletions: u64,
    power_cuts: u64,
    truncations: u64,
}

fn run_seed(seed: u64, cov: &mut Coverage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng::new(seed);
    let mut wal = open(dir.path(), SEGMENT_BYTES);
    let mut m = Model::default();
    let mut synced = m.clone();
    let mut term = 1;
    let mut last_paths = wal.segment_paths();
    for op in 0..OPS_PER_SEED {
        let ctx = format!("seed {seed} op {op}");
        match rng.range(0, 99) {
            0..=49 => {
                let batch = random_batch(&mut rng, &m, &mut term);
                cov.truncations += u64::from(batch[0].index <= m.last());
                wal.append(&batch).unwrap_or_else(|e| panic!("{ctx}: append: {e}"));
                m.append(&batch);
            }
            50..=59 => {
                let hs = random_hard_state(&mut rng, &m);
                wal.set_hard_state(hs).unwrap_or_else(|e| panic!("{ctx}: hs: {e}"));
                m.hs = hs;
            }
            60..=79 => {
                wal.sync().unwrap_or_else(|e| panic!("{ctx}: sync: {e}"));
                synced = m.clone();
            }
            80..=86 => {
                let i = rng.range(m.floor.0, m.last() + 3);
                let t = match m.term(i) {
                    Some(t) if !rng.chance(10) => t,
                    _ => term.max(m.term(m.last()).unwrap_or(0)) + rng.range(0, 1),
                };
                term = term.max(t);
                wal.compact(i, t).unwrap_or_else(|e| panic!("{ctx}: compact: {e}"));
                m.compact(i, t);
                synced = m.clone(); // compact syncs
            }
            87..=93 => {
                drop(wal);
                let (w, r) = mini_raft::storage::Wal::open(dir.path(), storage_support::opts(SEGMENT_BYTES))
                    .unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
                assert_eq!(r.bytes_truncated, 0, "{ctx}: clean reopen truncated");
                wal = w;
                synced = m.clone(); // everything written survived in the page cache
            }
            _ => {
                // Power cut: only exact if no rotation synced part of the unsynced suffix.
                let segments_before = wal.segment_paths().len();
                let batch = random_batch(&mut rng, &m, &mut term);
                wal.sync().expect("sync");
                synced = m.clone();
                wal.append(&batch).expect("append before cut");
                let (tail, durable) = wal.durable_tail();
                let rotated = wal.segment_paths().len() != segments_before;
                drop(wal);
                if !rotated {
                    cov.power_cuts += 1;
                    power_cut(&tail, durable);
                    m = synced.clone();
                } else {
                    m.append(&batch);
                }
                let (w, _) = mini_raft::storage::Wal::open(dir.path(), storage_support::opts(SEGMENT_BYTES))
                    .unwrap_or_else(|e| panic!("{ctx}: reopen after cut: {e}"));
                wal = w;
                synced = m.clone();
            }
        }
        let _ = &synced;
        let paths = wal.segment_paths();
        cov.rotations += u64::from(paths.last() != last_paths.last());
        cov.deletions += u64::from(paths.first() != last_paths.first());
        last_paths = paths;
        if op % 16 == 0 {
            check(&wal, &m, &ctx);
        }
    }
    check(&wal, &m, &format!("seed {seed} end"));
    drop(wal);
    let wal = open(dir.path(), SEGMENT_BYTES);
    check(&wal, &m, &format!("seed {seed} final reopen"));
}

#[test]
fn wal_matches_model_under_random_operations() {
    let mut cov = Coverage::default();
    for seed in 1..=SEEDS {
        run_seed(seed, &mut cov);
    }
    eprintln!(
        "coverage: {} rotations, {} segment deletions, {} power cuts, {} truncating appends",
        cov.rotations, cov.deletions, cov.power_cuts, cov.truncations
    );
    assert!(cov.rotations > 50 && cov.deletions > 10 && cov.power_cuts > 20 && cov.truncations > 100);
}
