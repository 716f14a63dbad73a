//! Helpers shared by the storage integration tests: a seeded RNG, entry builders, file surgery,
//! WALs over the real file system and over `SimFs`.
#![allow(dead_code)]

use bytes::Bytes;
use mini_raft::raft::types::{Entry, EntryKind};
use mini_raft::storage::{fs, RecoveryReport, SimFs, Wal, WalOptions};
use std::path::{Path, PathBuf};

/// The project's PRNG (`mini_raft::raft::rng::Rng`) with the conventions these tests use:
/// inclusive ranges and percentages.
pub struct Rng(mini_raft::raft::rng::Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mini_raft::raft::rng::Rng::new(seed))
    }
    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [lo, hi] (inclusive).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        lo + self.next() % (hi - lo + 1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.0.chance(percent, 100)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        self.0.fill(&mut out);
        out
    }
}

pub fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        index,
        term,
        kind: if data.is_empty() { EntryKind::Noop } else { EntryKind::Normal },
        data: Bytes::copy_from_slice(data),
    }
}

/// Entries `lo..=hi` with a recognizable payload of `size` bytes.
pub fn entries(lo: u64, hi: u64, term: u64, size: usize) -> Vec<Entry> {
    (lo..=hi)
        .map(|i| {
            let mut d = format!("entry-{i}-term-{term}-").into_bytes();
            d.resize(size.max(d.len()), b'.');
            d.truncate(size);
            entry(i, term, &d)
        })
        .collect()
}

/// Options for small test segments that accept the largest entry that fits.
pub fn opts(segment_bytes: u64) -> WalOptions {
    WalOptions::with_segment_bytes(segment_bytes)
}

pub fn open(dir: &Path, segment_bytes: u64) -> Wal {
    match Wal::open(fs::real(), dir, opts(segment_bytes)) {
        Ok((w, _)) => w,
        Err(e) => panic!("open {}: {e}", dir.display()),
    }
}

/// Opens a WAL on the real file system.
pub fn open_real(dir: &Path, segment_bytes: u64) -> Result<(Wal, RecoveryReport), mini_raft::storage::StorageError> {
    Wal::open(fs::real(), dir, opts(segment_bytes))
}

/// The WAL directory tests use inside a `SimFs`.
pub fn sim_dir() -> PathBuf {
    PathBuf::from("/node/wal")
}

/// Opens (or recovers) the WAL at `sim_dir()` of `sim`.
pub fn open_sim(sim: &SimFs, segment_bytes: u64) -> Result<(Wal, RecoveryReport), mini_raft::storage::StorageError> {
    Wal::open(sim.handle(), &sim_dir(), opts(segment_bytes))
}

/// All entries of the log, read back through `entries`.
pub fn all_entries(wal: &Wal) -> Vec<Entry> {
    let (lo, hi) = (wal.first_index(), wal.last_index() + 1);
    let got = wal.entries(lo, hi, usize::MAX).expect("read all entries");
    assert_eq!(got.len() as u64, hi - lo);
    got
}

/// Segment files of `dir`, sorted.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

pub fn flip_bit(path: &Path, byte: u64, bit: u8) {
    let mut b = std::fs::read(path).expect("read");
    b[byte as usize] ^= 1 << bit;
    std::fs::write(path, b).expect("write");
}

/// Path of the `i`-th segment file (oldest first) of the WAL in `sim_dir()`.
pub fn sim_segment(sim: &SimFs, i: usize) -> PathBuf {
    use mini_raft::storage::FileSystem;
    let names = sim.list_dir(&sim_dir()).expect("list");
    let segs: Vec<&String> = names.iter().filter(|n| n.ends_with(".wal")).collect();
    sim_dir().join(segs[i])
}
