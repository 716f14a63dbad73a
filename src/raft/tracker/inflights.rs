//! The bounded window of AppendEntries in flight to one follower in the Replicate state
//! (etcd-io/raft's `tracker.Inflights`). Bounding it bounds the memory and the bytes a slow
//! follower can have outstanding: at most `capacity` messages of at most `append_bytes_max` each.
//!
//! Invariant: the remembered last indexes are strictly ascending and at most `capacity` many.

use std::collections::VecDeque;

use crate::raft::types::Index;

/// A bounded window of in-flight appends, each remembered by the last index it carried.
#[derive(Clone, Debug)]
pub struct Inflights {
    last_indexes: VecDeque<Index>,
    capacity: usize,
}

impl Inflights {
    pub fn new(capacity: usize) -> Inflights {
        assert!(capacity > 0);
        Inflights { last_indexes: VecDeque::with_capacity(capacity), capacity }
    }

    pub fn is_full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    pub fn len(&self) -> usize {
        self.last_indexes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_indexes.is_empty()
    }

    pub fn add(&mut self, last_index: Index) {
        assert!(!self.is_full(), "inflight window overflow");
        debug_assert!(self.last_indexes.back().is_none_or(|&b| b < last_index));
        self.last_indexes.push_back(last_index);
    }

    /// Frees every message whose entries are all acknowledged by `index`.
    pub fn free_to(&mut self, index: Index) {
        while self.last_indexes.front().is_some_and(|&front| front <= index) {
            self.last_indexes.pop_front();
        }
    }

    pub fn free_first(&mut self) {
        self.last_indexes.pop_front();
    }

    pub fn reset(&mut self) {
        self.last_indexes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_bound_the_window() {
        let mut inflights = Inflights::new(3);
        inflights.add(5);
        inflights.add(9);
        inflights.add(12);
        assert!(inflights.is_full());
        inflights.free_to(9);
        assert_eq!(inflights.len(), 1);
        inflights.free_to(100);
        assert!(inflights.is_empty());
    }
}
