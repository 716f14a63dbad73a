//! Property test: random append / truncate / compact / hard state / sync / restart sequences
//! against an in-memory model, on real files and on `SimFs` with power loss (also in the middle
//! of a sync, at a random operation). Seeded; a failure prints the seed and the op number.

mod storage_support;

use mini_raft::raft::types::{Entry, HardState};
use mini_raft::storage::{RecoveryReport, SimFs, Wal};
use storage_support::{all_entries, entry, Rng};

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

#[derive(Default)]
struct Coverage {
    rotations: u64,
    deletions: u64,
    restarts: u64,
    crashes: u64,
    crashes_mid_sync: u64,
    truncations: u64,
}

/// Where the WAL lives: a real directory, or a `SimFs` that can lose power.
enum Backend {
    Real(tempfile::TempDir),
    Sim(SimFs),
}

impl Backend {
    fn open(&self, ctx: &str) -> (Wal, RecoveryReport) {
        let r = match self {
            Backend::Real(dir) => storage_support::open_real(dir.path(), SEGMENT_BYTES),
            Backend::Sim(sim) => storage_support::open_sim(sim, SEGMENT_BYTES),
        };
        r.unwrap_or_else(|e| panic!("{ctx}: open: {e}"))
    }
}

/// The process dies (and, with `power`, the machine loses power) and the WAL is reopened.
/// Returns the reopened WAL and its report.
fn restart(
    backend: &Backend,
    wal: Wal,
    power: Option<&mut mini_raft::raft::rng::Rng>,
    ctx: &str,
) -> (Wal, RecoveryReport) {
    drop(wal);
    if let Backend::Sim(sim) = backend {
        match power {
            Some(rng) => sim.crash(rng),
            None => sim.process_restart(),
        }
    }
    backend.open(ctx)
}

fn run_seed(seed: u64, backend: &Backend, cov: &mut Coverage) {
    let mut rng = Rng::new(seed);
    let mut crash_rng = mini_raft::raft::rng::Rng::new(seed ^ 0x5eed);
    let (mut wal, _) = backend.open("first open");
    let mut m = Model::default();
    let mut synced = m.clone();
    let mut term = 1;
    let mut last_paths = wal.segment_paths();
    let mut segments_at_sync = last_paths.len();
    let is_sim = matches!(backend, Backend::Sim(_));
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
            60..=76 => {
                wal.sync().unwrap_or_else(|e| panic!("{ctx}: sync: {e}"));
                synced = m.clone();
            }
            77..=83 => {
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
            84..=89 if is_sim => {
                // Power loss in the middle of a sync: the batch is there completely or not at
                // all, except for a part that a rotation inside `append` already made durable.
                wal.sync().unwrap_or_else(|e| panic!("{ctx}: sync: {e}"));
                let before = m.clone();
                let segments = wal.segment_paths().len();
                let batch = random_batch(&mut rng, &m, &mut term);
                wal.append(&batch).unwrap_or_else(|e| panic!("{ctx}: append: {e}"));
                m.append(&batch);
                let rotated = wal.segment_paths().len() != segments;
                if let Backend::Sim(sim) = backend {
                    sim.kill_after_ops(Some(rng.range(0, 3)));
                }
                let ok = wal.sync().is_ok();
                let (w, r) = restart(backend, wal, Some(&mut crash_rng), &ctx);
                wal = w;
                assert!(r.corruption.is_none(), "{ctx}: a crash is never corruption: {:?}", r.corruption);
                let got = all_entries(&wal);
                if ok {
                    assert_eq!(got, m.entries, "{ctx}: a completed sync survives the crash");
                } else if !rotated {
                    assert!(got == before.entries || got == m.entries, "{ctx}: all of the batch or none");
                } else {
                    assert!(m.entries.starts_with(&got), "{ctx}: a prefix of the batch");
                }
                m.entries = got;
                synced = m.clone();
                cov.crashes_mid_sync += 1;
            }
            _ => {
                // A restart (kill -9) or, on SimFs, a power loss: unsynced appends are lost.
                if wal.segment_paths().len() != segments_at_sync {
                    wal.sync().expect("sync"); // a rotation made part of the suffix durable
                    synced = m.clone();
                }
                let power = is_sim && rng.chance(50);
                cov.restarts += u64::from(!power);
                cov.crashes += u64::from(power);
                let (w, r) = restart(backend, wal, if power { Some(&mut crash_rng) } else { None }, &ctx);
                assert!(r.corruption.is_none() && r.bytes_truncated == 0, "{ctx}: {r:?}");
                wal = w;
                m = synced.clone();
            }
        }
        let paths = wal.segment_paths();
        cov.rotations += u64::from(paths.last() != last_paths.last());
        cov.deletions += u64::from(paths.first() != last_paths.first());
        if synced.entries == m.entries && synced.hs == m.hs && wal.is_synced() {
            segments_at_sync = paths.len();
        }
        last_paths = paths;
        if op % 16 == 0 {
            check(&wal, &m, &ctx);
        }
    }
    check(&wal, &m, &format!("seed {seed} end"));
    wal.sync().expect("final sync");
    let (wal, _) = restart(backend, wal, None, "final reopen");
    check(&wal, &m, &format!("seed {seed} final reopen"));
}

#[test]
fn wal_matches_model_under_random_operations_on_real_files() {
    let mut cov = Coverage::default();
    for seed in 1..=SEEDS / 2 {
        run_seed(seed, &Backend::Real(tempfile::tempdir().expect("tempdir")), &mut cov);
    }
    eprintln!("coverage: {} rotations, {} deletions, {} restarts", cov.rotations, cov.deletions, cov.restarts);
    assert!(cov.rotations > 20 && cov.deletions > 5 && cov.restarts > 10 && cov.truncations > 50);
}

#[test]
fn wal_matches_model_under_random_operations_and_power_loss_on_simfs() {
    let mut cov = Coverage::default();
    for seed in 1..=SEEDS {
        run_seed(seed, &Backend::Sim(SimFs::new(seed)), &mut cov);
    }
    eprintln!(
        "coverage: {} rotations, {} deletions, {} restarts, {} crashes, {} crashes mid-sync, {} truncating appends",
        cov.rotations, cov.deletions, cov.restarts, cov.crashes, cov.crashes_mid_sync, cov.truncations
    );
    assert!(cov.rotations > 50 && cov.deletions > 10 && cov.crashes > 20 && cov.crashes_mid_sync > 50);
}
