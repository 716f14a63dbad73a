//! The set of linearized operations, and the cache of explored (set, state) pairs.
//!
//! Sets are `u64`-word bitsets over operation positions. A linearized set is nearly a prefix of the
//! call order: every word is all ones up to the frontier and zero after it, except a few words
//! holding concurrent or long-pending operations. The bitset keeps the list of those "partial"
//! words up to date, and the cache stores only them, so storing and comparing a set costs the
//! number of partial words, not the length of the history.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::StateId;

pub(crate) struct Bitset {
    words: Vec<u64>,
    /// One past the last nonzero word.
    end: usize,
    /// Sorted indexes of the words below `end` that are not all ones.
    partial: Vec<u32>,
}

impl Bitset {
    pub(crate) fn new(bits: usize) -> Bitset {
        Bitset { words: vec![0; bits.div_ceil(64)], end: 0, partial: Vec::new() }
    }

    pub(crate) fn contains(&self, bit: u32) -> bool {
        self.words[bit as usize / 64] & (1 << (bit % 64)) != 0
    }

    pub(crate) fn set(&mut self, bit: u32) {
        let word = bit as usize / 64;
        if word >= self.end {
            // Words from the old end up to this one were zero, so they are partial now.
            self.partial.extend(self.end as u32..=word as u32);
            self.end = word + 1;
        }
        self.words[word] |= 1 << (bit % 64);
        if self.words[word] == u64::MAX {
            if let Ok(position) = self.partial.binary_search(&(word as u32)) {
                self.partial.remove(position);
            }
        }
    }

    pub(crate) fn clear(&mut self, bit: u32) {
        let word = bit as usize / 64;
        if self.words[word] == u64::MAX {
            if let Err(position) = self.partial.binary_search(&(word as u32)) {
                self.partial.insert(position, word as u32);
            }
        }
        self.words[word] &= !(1 << (bit % 64));
        while self.end > 0 && self.words[self.end - 1] == 0 {
            // A zero word below `end` is partial, and the last one is the highest partial word.
            self.end -= 1;
            self.partial.pop();
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

/// One explored (set, state) pair: the set's `end` and its partial words, which sit in the
/// arenas at `start..start + len`.
struct CacheEntry {
    state: StateId,
    end: u32,
    len: u32,
    start: usize,
    /// The next entry with the same hash, or `u32::MAX`.
    next: u32,
}

#[derive(Default)]
pub(crate) struct Cache {
    heads: HashMap<u64, u32, BuildHasherDefault<PassThroughHasher>>,
    entries: Vec<CacheEntry>,
    partial_indexes: Vec<u32>,
    partial_words: Vec<u64>,
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
        let start = self.partial_words.len();
        self.partial_indexes.extend_from_slice(&set.partial);
        self.partial_words.extend(set.partial.iter().map(|&word| set.words[word as usize]));
        self.entries.push(CacheEntry {
            state,
            end: set.end as u32,
            len: set.partial.len() as u32,
            start,
            next: head,
        });
        self.heads.insert(hash, self.entries.len() as u32 - 1);
        true
    }

    fn same_set(&self, entry: &CacheEntry, set: &Bitset) -> bool {
        let range = entry.start..entry.start + entry.len as usize;
        entry.end as usize == set.end
            && self.partial_indexes[range.clone()] == set.partial[..]
            && self.partial_words[range].iter().zip(&set.partial).all(|(&word, &index)| set.words[index as usize] == word)
    }
}
