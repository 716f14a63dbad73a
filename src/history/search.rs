//! The Wing–Gong–Lowe search for one key, with Lowe's memoization (as in Porcupine's
//! `checker.go`).
//!
//! Invariants of [`Search`]:
//! - the event list holds exactly the call and return events of the operations not yet
//!   linearized, in time order (calls before returns at equal times);
//! - `stack` holds the linearized operations in linearization order, each with the state before
//!   it; `linearized` is the same set as a bitset and `set_hash` its Zobrist hash;
//! - every (set, state) pair in the cache has been, or is being, explored from, so reaching it
//!   again cannot lead anywhere new;
//! - of Info writes that are interchangeable (same step, both pending forever), the later-invoked
//!   one is only linearized after the earlier one: swapping two such writes in a linearization
//!   gives another one, so this loses nothing and cuts 2^k subsets of k such writes to k + 1;
//! - `longest[..low_water] == stack[..low_water]` (ops), which lets the longest partial
//!   linearization be kept in time proportional to the pushes, not to depth × records.

use std::collections::HashMap;

use super::cache::{Bitset, Cache};
use super::model::{KeyOp, StateId, Step, RET_INFINITE};
use crate::raft::rng::Rng;

/// Seeds the per-operation Zobrist hashes; any fixed value works.
const ZOBRIST_SEED: u64 = 0x6c69_6e65_6172_697a;

/// What a search found, with the number of steps it took.
#[derive(Debug)]
pub(crate) struct SearchOutcome {
    pub result: SearchResult,
    pub steps: u64,
}

#[derive(Debug)]
pub(crate) enum SearchResult {
    /// `order`: the operations (positions in the searched slice) in a valid linearization order.
    /// Only the tests read it (they replay it against an independent model).
    #[cfg_attr(not(test), allow(dead_code))]
    Linearizable { order: Vec<u32> },
    /// `longest`: the longest partial linearization found; `blocked`: the operation whose return
    /// was reached from it with no operation left that could be linearized next.
    NotLinearizable { longest: Vec<u32>, state_after: StateId, blocked: Option<u32> },
    /// The step budget ran out first.
    Unknown,
}

/// Searches for a linearization of `ops` (sorted by call time, though only for bitset locality)
/// from `initial`, giving up after `steps_max` steps.
pub(crate) fn search(ops: &[KeyOp], initial: StateId, steps_max: u64) -> SearchOutcome {
    Search::new(ops, initial).run(steps_max)
}

/// The pending events as a doubly linked list over node ids: `0` is the head, `1..=2n` the
/// events in time order, `2n + 1` the tail.
struct EventList {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// The operation of each node (head and tail: unused).
    node_op: Vec<u32>,
    node_is_call: Vec<bool>,
    call_node: Vec<u32>,
    ret_node: Vec<u32>,
    tail: u32,
}

const HEAD: u32 = 0;

impl EventList {
    fn new(ops: &[KeyOp]) -> EventList {
        // (time, is_return, op): sorting puts calls before returns at equal times, which makes an
        // operation returning at t concurrent with one called at t.
        let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(ops.len() * 2);
        for (op, key_op) in ops.iter().enumerate() {
            events.push((key_op.call, false, op as u32));
            events.push((key_op.ret, true, op as u32));
        }
        events.sort_unstable();
        let tail = events.len() as u32 + 1;
        let mut list = EventList {
            next: (0..=tail).map(|node| (node + 1).min(tail)).collect(),
            prev: (0..=tail).map(|node| node.saturating_sub(1)).collect(),
            node_op: vec![u32::MAX; tail as usize + 1],
            node_is_call: vec![false; tail as usize + 1],
            call_node: vec![0; ops.len()],
            ret_node: vec![0; ops.len()],
            tail,
        };
        for (position, &(_, is_return, op)) in events.iter().enumerate() {
            let node = position as u32 + 1;
            list.node_op[node as usize] = op;
            list.node_is_call[node as usize] = !is_return;
            if is_return {
                list.ret_node[op as usize] = node;
            } else {
                list.call_node[op as usize] = node;
            }
        }
        list
    }

    fn first(&self) -> u32 {
        self.next[HEAD as usize]
    }

    fn unlink(&mut self, node: u32) {
        let (prev, next) = (self.prev[node as usize], self.next[node as usize]);
        self.next[prev as usize] = next;
        self.prev[next as usize] = prev;
    }

    /// Puts back a node removed by `unlink`; valid only in reverse order of the unlinks.
    fn relink(&mut self, node: u32) {
        let (prev, next) = (self.prev[node as usize], self.next[node as usize]);
        self.next[prev as usize] = node;
        self.prev[next as usize] = node;
    }

    fn lift(&mut self, op: u32) {
        self.unlink(self.call_node[op as usize]);
        self.unlink(self.ret_node[op as usize]);
    }

    fn unlift(&mut self, op: u32) {
        self.relink(self.ret_node[op as usize]);
        self.relink(self.call_node[op as usize]);
    }
}

struct Frame {
    op: u32,
    state_before: StateId,
}

struct Search<'a> {
    ops: &'a [KeyOp],
    list: EventList,
    zobrist: Vec<u64>,
    /// For an Info write pending forever, the previous interchangeable one, or `u32::MAX`.
    waits_for: Vec<u32>,
    linearized: Bitset,
    set_hash: u64,
    state: StateId,
    stack: Vec<Frame>,
    cache: Cache,
    longest: Vec<u32>,
    longest_state: StateId,
    low_water: usize,
    /// The stack equals `longest` and no return event was reached since.
    at_longest: bool,
    blocked: Option<u32>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [KeyOp], initial: StateId) -> Search<'a> {
        let mut rng = Rng::new(ZOBRIST_SEED);
        Search {
            ops,
            list: EventList::new(ops),
            zobrist: (0..ops.len()).map(|_| rng.next_u64()).collect(),
            waits_for: interchangeable_predecessors(ops),
            linearized: Bitset::new(ops.len()),
            set_hash: 0,
            state: initial,
            stack: Vec::with_capacity(ops.len()),
            cache: Cache::default(),
            longest: Vec::new(),
            longest_state: initial,
            low_water: 0,
            at_longest: true,
            blocked: None,
        }
    }

    fn run(mut self, steps_max: u64) -> SearchOutcome {
        let mut steps = 0;
        let mut node = self.list.first();
        while self.list.first() != self.list.tail {
            if steps >= steps_max || node == self.list.tail {
                // The tail cannot be reached: every pending call has its return after it.
                debug_assert!(node != self.list.tail, "scan ran off the event list");
                return SearchOutcome { result: SearchResult::Unknown, steps };
            }
            steps += 1;
            let op = self.list.node_op[node as usize];
            if !self.list.node_is_call[node as usize] {
                match self.backtrack(op) {
                    Some(next) => node = next,
                    None => return SearchOutcome { result: self.failure(), steps },
                }
            } else if self.try_linearize(op) {
                node = self.list.first();
            } else {
                node = self.list.next[node as usize];
            }
        }
        let order = self.stack.iter().map(|frame| frame.op).collect();
        SearchOutcome { result: SearchResult::Linearizable { order }, steps }
    }

    /// Linearizes `op` next if its result allows it in the current state and the resulting
    /// (set, state) pair is new.
    fn try_linearize(&mut self, op: u32) -> bool {
        let Some(next_state) = self.ops[op as usize].step.apply(self.state) else { return false };
        let predecessor = self.waits_for[op as usize];
        if predecessor != u32::MAX && !self.linearized.contains(predecessor) {
            return false;
        }
        let next_hash = self.set_hash ^ self.zobrist[op as usize];
        let cache_key = next_hash ^ u64::from(next_state).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.linearized.set(op);
        if !self.cache.insert_if_new(cache_key, next_state, &self.linearized) {
            self.linearized.clear(op);
            return false;
        }
        self.stack.push(Frame { op, state_before: self.state });
        self.state = next_state;
        self.set_hash = next_hash;
        self.list.lift(op);
        self.note_depth();
        true
    }

    /// The return of `op` was reached: undo the last linearization and resume after it, or
    /// `None` if there is nothing to undo.
    fn backtrack(&mut self, op: u32) -> Option<u32> {
        if self.at_longest {
            self.blocked = Some(op);
            self.at_longest = false;
        }
        let frame = self.stack.pop()?;
        self.low_water = self.low_water.min(self.stack.len());
        self.state = frame.state_before;
        self.set_hash ^= self.zobrist[frame.op as usize];
        self.linearized.clear(frame.op);
        self.list.unlift(frame.op);
        Some(self.list.next[self.list.call_node[frame.op as usize] as usize])
    }

    fn note_depth(&mut self) {
        if self.stack.len() <= self.longest.len() {
            self.at_longest = false;
            return;
        }
        self.longest.truncate(self.low_water);
        self.longest.extend(self.stack[self.low_water..].iter().map(|frame| frame.op));
        self.low_water = self.stack.len();
        self.longest_state = self.state;
        self.at_longest = true;
        self.blocked = None;
    }

    fn failure(&mut self) -> SearchResult {
        SearchResult::NotLinearizable {
            longest: std::mem::take(&mut self.longest),
            state_after: self.longest_state,
            blocked: self.blocked,
        }
    }
}

/// For each Info write pending forever, the latest-invoked earlier one with the same step.
fn interchangeable_predecessors(ops: &[KeyOp]) -> Vec<u32> {
    let mut by_call: Vec<u32> = (0..ops.len() as u32).collect();
    by_call.sort_by_key(|&op| (ops[op as usize].call, op));
    let mut latest: HashMap<Step, u32> = HashMap::new();
    let mut waits_for = vec![u32::MAX; ops.len()];
    for op in by_call {
        let key_op = &ops[op as usize];
        if key_op.info && key_op.ret == RET_INFINITE {
            if let Some(previous) = latest.insert(key_op.step, op) {
                waits_for[op as usize] = previous;
            }
        }
    }
    waits_for
}
