//! The set of linearized operations, and the cache of explored (set, state) pairs.
//!
//! Sets are `u64`-word bitsets. The search numbers its bits so that a linearized set is nearly a
//! prefix of all ones followed by a few nonzero words (the frontier, and the deferred writes at the
//! end). The bitset keeps the length of its all-ones prefix and the list of the nonzero words after
//! it up to date, and the cache stores only those, so storing and comparing a set costs the number
//! of such words, not the length of the history.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::StateId;

pub(crate) struct Bitset {
    words: Vec<u64>,
    /// The number of leading all-ones words.
    full_prefix: usize,
    /// Sorted indexes of the nonzero words after the all-ones prefix.
    listed: Vec<u32>,
}

impl Bitset {
    pub(crate) fn new(bits: usize) -> Bitset {
        Bitset { words: vec![0; bits.div_ceil(64)], full_prefix: 0, listed: Vec::new() }
    }

    pub(crate) fn set(&mut self, bit: u32) {
        let word = bit as usize / 64;
        let was_zero = self.words[word] == 0;
        self.words[word] |= 1 << (bit % 64);
        if was_zero && word >= self.full_prefix {
            let position = self.listed.partition_point(|&listed| listed < word as u32);
            self.listed.insert(position, word as u32);
        }
        while self.full_prefix < self.words.len() && self.words[self.full_prefix] == u64::MAX {
            // A full word after the prefix is nonzero, so it is listed, and first.
            self.listed.remove(0);
            self.full_prefix += 1;
        }
    }

    pub(crate) fn clear(&mut self, bit: u32) {
        let word = bit as usize / 64;
        self.words[word] &= !(1 << (bit % 64));
        if word < self.full_prefix {
            // This word and the full ones after it, up to the old prefix end, are listed now.
            self.listed.splice(0..0, word as u32..self.full_prefix as u32);
            self.full_prefix = word;
        } else if self.words[word] == 0 {
            if let Ok(position) = self.listed.binary_search(&(word as u32)) {
                self.listed.remove(position);
            }
        }
    }
}

/// A hasher for keys that are already uniformly random (Zobrist hashes).
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// One explored (set, state) pair: the set's all-ones prefix length and its listed words, which
/// sit in the arenas at `start..start + len`.
struct CacheEntry {
    state: StateId,
    full_prefix: u32,
    len: u32,
    start: usize,
    /// The next entry with the same hash, or `u32::MAX`.
    next: u32,
}

#[derive(Default)]
pub(crate) struct Cache {
    heads: HashMap<u64, u32, BuildHasherDefault<PassThroughHasher>>,
    entries: Vec<CacheEntry>,
    listed_indexes: Vec<u32>,
    listed_words: Vec<u64>,
}

impl Cache {
    /// Records (`set`, `state`) under `hash`; false if it was already there.
    pub(crate) fn insert_if_new(&mut self, hash: u64, state: StateId, set: &Bitset) -> bool {
        let head = self.heads.get(&hash).copied().unwrap_or(u32::MAX);
        let mut cursor = head;
        while let Some(entry) = self.entries.get(cursor as usize) {
            if entry.state == state && self.same_set(entry, set) {
                return false;
            }
            cursor = entry.next;
        }
        let start = self.listed_words.len();
        self.listed_indexes.extend_from_slice(&set.listed);
        self.listed_words.extend(set.listed.iter().map(|&word| set.words[word as usize]));
        self.entries.push(CacheEntry {
            state,
            full_prefix: set.full_prefix as u32,
            len: set.listed.len() as u32,
            start,
            next: head,
        });
        self.heads.insert(hash, self.entries.len() as u32 - 1);
        true
    }

    fn same_set(&self, entry: &CacheEntry, set: &Bitset) -> bool {
        let range = entry.start..entry.start + entry.len as usize;
        entry.full_prefix as usize == set.full_prefix
            && self.listed_indexes[range.clone()] == set.listed[..]
            && self.listed_words[range].iter().zip(&set.listed).all(|(&word, &index)| set.words[index as usize] == word)
    }
}
