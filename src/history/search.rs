//! The Wing–Gong–Lowe search for one key, with Lowe's memoization (as in Porcupine's
//! `checker.go`).
//!
//! From the current configuration (the set of linearized operations and the register state), a
//! scan walks the pending events in time order and tries to linearize each called operation next,
//! until it reaches the first pending return: that operation must be linearized before anything
//! invoked later, so past it there are no candidates. Then the deferred Info writes (see
//! [`DeferredWrites`]) are offered, and if nothing works the last linearization is undone.
//!
//! Invariants of [`Search`]:
//! - the event list holds exactly the call and return events of the operations not yet
//!   linearized, except deferred writes, which are never in it;
//! - `stack` holds the linearized operations in linearization order, each with the state before
//!   it and where to resume the scan when it is undone; `linearized` is the same set as a bitset
//!   (see `bit_of`) and `set_hash` its Zobrist hash;
//! - every (set, state) pair in the cache has been, or is being, explored from, so reaching it
//!   again cannot lead anywhere new;
//! - of interchangeable deferred writes (same step, both pending forever) the later-invoked one
//!   is only linearized after the earlier one: swapping two such writes in a linearization gives
//!   another one, so this loses nothing and cuts 2^k subsets of k such writes to k + 1;
//! - a deferred write is never linearized where it would change nothing: there it is the same as
//!   going last, and at the end it is always legal; so the search succeeds as soon as only
//!   deferred writes are left (`required_left == 0`), and those are not in the order it returns;
//! - `longest[..low_water] == stack[..low_water]` (ops), which lets the longest partial
//!   linearization be kept in time proportional to the pushes, not to depth × records.

use super::cache::{Bitset, Cache};
use super::deferred::{is_deferred, DeferredWrites};
use super::events::EventList;
use super::model::{KeyOp, StateId};
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
    /// `order`: the operations (positions in the searched slice) in a valid linearization order,
    /// except deferred Info writes left to go last. Only the tests read it (they replay it
    /// against an independent model).
    #[cfg_attr(not(test), allow(dead_code))]
    Linearizable { order: Vec<u32> },
    /// `longest`: the longest partial linearization found; `blocked`: the operation whose return
    /// was reached from it with no operation left that could be linearized next.
    NotLinearizable { longest: Vec<u32>, blocked: Option<u32> },
    /// The step budget ran out first.
    Unknown,
}

/// Searches for a linearization of `ops` (sorted by call time, though only for bitset locality)
/// from `initial`, giving up after `steps_max` steps.
pub(crate) fn search(ops: &[KeyOp], initial: StateId, steps_max: u64) -> SearchOutcome {
    Search::new(ops, initial).run(steps_max)
}

/// Where a scan is.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    /// At an event-list node.
    Event(u32),
    /// Past the event list's candidates, which end at the return node `at_return`: offering the
    /// `index`-th class of deferred writes.
    Deferred { index: usize, at_return: u32 },
}

struct Frame {
    op: u32,
    state_before: StateId,
    /// Where the scan goes on when this linearization is undone.
    resume: Cursor,
}

struct Search<'a> {
    ops: &'a [KeyOp],
    list: EventList,
    deferred: DeferredWrites,
    /// Operations not linearized yet that are not deferred writes.
    required_left: usize,
    zobrist: Vec<u64>,
    /// Each operation's bit in `linearized`: required operations first, in call order, then the
    /// deferred writes class by class. Linearized required operations are then nearly a prefix,
    /// and linearized deferred writes a prefix of each class, so few words are partial (which is
    /// what the cache stores) even while deferred writes invoked long ago are still pending.
    bit_of: Vec<u32>,
    linearized: Bitset,
    set_hash: u64,
    state: StateId,
    stack: Vec<Frame>,
    cache: Cache,
    longest: Vec<u32>,
    low_water: usize,
    /// The stack equals `longest` and no scan from it has ended yet.
    at_longest: bool,
    blocked: Option<u32>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [KeyOp], initial: StateId) -> Search<'a> {
        let mut rng = Rng::new(ZOBRIST_SEED);
        let deferred = DeferredWrites::new(ops);
        let required = (0..ops.len() as u32).filter(|&op| !deferred.contains(op));
        let mut bit_of = vec![0; ops.len()];
        for (bit, op) in required.chain(deferred.by_class()).enumerate() {
            bit_of[op as usize] = bit as u32;
        }
        Search {
            ops,
            list: EventList::new(ops, |op| !is_deferred(&ops[op])),
            required_left: ops.iter().filter(|op| !is_deferred(op)).count(),
            deferred,
            zobrist: (0..ops.len()).map(|_| rng.next_u64()).collect(),
            bit_of,
            linearized: Bitset::new(ops.len()),
            set_hash: 0,
            state: initial,
            stack: Vec::with_capacity(ops.len()),
            cache: Cache::default(),
            longest: Vec::new(),
            low_water: 0,
            at_longest: true,
            blocked: None,
        }
    }

    fn run(mut self, steps_max: u64) -> SearchOutcome {
        let mut steps = 0;
        let mut cursor = Cursor::Event(self.list.first());
        while self.required_left > 0 {
            if steps >= steps_max {
                return SearchOutcome { result: SearchResult::Unknown, steps };
            }
            steps += 1;
            let next = match cursor {
                Cursor::Event(node) => self.visit_event(node),
                Cursor::Deferred { index, at_return } => self.offer_deferred(index, at_return),
            };
            match next {
                Some(next) => cursor = next,
                None => return SearchOutcome { result: self.failure(), steps },
            }
        }
        let order = self.stack.iter().map(|frame| frame.op).collect();
        SearchOutcome { result: SearchResult::Linearizable { order }, steps }
    }

    /// One scan step at an event node; `None` when the search is over (failed).
    fn visit_event(&mut self, node: u32) -> Option<Cursor> {
        if node == self.list.tail {
            // Unreachable: a required operation is pending, and its return is after its call.
            debug_assert!(false, "scan ran off the event list");
            return self.backtrack();
        }
        let op = self.list.node_op[node as usize];
        let after = Cursor::Event(self.list.next[node as usize]);
        if !self.list.node_is_call[node as usize] {
            Some(Cursor::Deferred { index: 0, at_return: node })
        } else if self.try_linearize(op, after) {
            Some(Cursor::Event(self.list.first()))
        } else {
            Some(after)
        }
    }

    /// One scan step offering a class of deferred writes, invoked before the return `at_return`.
    fn offer_deferred(&mut self, index: usize, at_return: u32) -> Option<Cursor> {
        let Some(class) = self.deferred.class_to_offer(index, self.state) else {
            if self.at_longest {
                self.blocked = Some(self.list.node_op[at_return as usize]);
                self.at_longest = false;
            }
            return self.backtrack();
        };
        let after = Cursor::Deferred { index: index + 1, at_return };
        let deadline = self.ops[self.list.node_op[at_return as usize] as usize].ret;
        match self.deferred.next_of(class, deadline, self.ops) {
            Some(op) if self.try_linearize(op, after) => Some(Cursor::Event(self.list.first())),
            _ => Some(after),
        }
    }

    /// Linearizes `op` next if its result allows it in the current state, it is not a deferred
    /// write that would change nothing, and the resulting (set, state) pair is new.
    fn try_linearize(&mut self, op: u32, resume: Cursor) -> bool {
        let Some(next_state) = self.ops[op as usize].step.apply(self.state) else { return false };
        let deferred = self.deferred.contains(op);
        if deferred && next_state == self.state {
            return false;
        }
        let next_hash = self.set_hash ^ self.zobrist[op as usize];
        let cache_key = next_hash ^ u64::from(next_state).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let bit = self.bit_of[op as usize];
        self.linearized.set(bit);
        if !self.cache.insert_if_new(cache_key, next_state, &self.linearized) {
            self.linearized.clear(bit);
            return false;
        }
        self.stack.push(Frame { op, state_before: self.state, resume });
        self.state = next_state;
        self.set_hash = next_hash;
        if deferred {
            self.deferred.lift(op);
        } else {
            self.list.lift(op);
            self.required_left -= 1;
        }
        self.note_depth();
        true
    }

    /// Undoes the last linearization and says where to resume, or `None` if there is none.
    fn backtrack(&mut self) -> Option<Cursor> {
        let frame = self.stack.pop()?;
        self.low_water = self.low_water.min(self.stack.len());
        self.state = frame.state_before;
        self.set_hash ^= self.zobrist[frame.op as usize];
        self.linearized.clear(self.bit_of[frame.op as usize]);
        if self.deferred.contains(frame.op) {
            self.deferred.unlift(frame.op);
        } else {
            self.list.unlift(frame.op);
            self.required_left += 1;
        }
        Some(frame.resume)
    }

    fn note_depth(&mut self) {
        if self.stack.len() <= self.longest.len() {
            self.at_longest = false;
            return;
        }
        self.longest.truncate(self.low_water);
        self.longest.extend(self.stack[self.low_water..].iter().map(|frame| frame.op));
        self.low_water = self.stack.len();
        self.at_longest = true;
        self.blocked = None;
    }

    fn failure(&mut self) -> SearchResult {
        SearchResult::NotLinearizable { longest: std::mem::take(&mut self.longest), blocked: self.blocked }
    }
}
