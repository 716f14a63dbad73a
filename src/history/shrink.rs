//! Shrinking a non-linearizable key history to a small failing sub-history.
//!
//! Greedy, in the manner of delta debugging: remove chunks of operations (halving the chunk size
//! down to one operation, then repeating single removals until none succeeds), keeping a removal
//! whenever the remainder is still not linearizable and removing did not itself break anything:
//! - the full search's longest partial linearization (the witness), restricted to the remainder,
//!   must still be legal, so no write it relied on is gone;
//! - each read of the remainder must keep a write that can explain it (see [`Requirements`]);
//!   this covers the operations the witness does not reach.
//!
//! Without these rules a stale read would shrink to the read alone ("returned a value never
//! written"), or two deletes to one write they both "consumed", blaming the wrong operations.
//!
//! All work is charged to a step budget (search steps plus one step per operation of each
//! candidate), so shrinking always ends; when the budget runs out the smallest failing
//! sub-history found so far is kept.

use super::model::{KeyHistory, RET_INFINITE};
use super::requirements::Requirements;
use super::search::{search, SearchResult};

/// The outcome of shrinking.
pub(crate) struct Shrunk {
    /// Positions in the key's `ops` of the failing sub-history, in increasing order.
    pub kept: Vec<usize>,
    /// Every single removal was tried on the result and none kept it failing.
    pub complete: bool,
}

/// Shrinks `key`'s history, known to be non-linearizable. `witness` is the full search's longest
/// partial linearization (positions in `key.ops`); `blocked_ret` the return time of the operation
/// it got stuck on: operations invoked after it are the first to try dropping. Each candidate is
/// searched with at most `check_steps_max` steps; all the work together takes at most `budget`.
pub(crate) fn shrink(
    key: &KeyHistory,
    witness: &[u32],
    blocked_ret: Option<u64>,
    check_steps_max: u64,
    budget: u64,
) -> Shrunk {
    let mut shrinker = Shrinker {
        key,
        witness,
        check_steps_max,
        budget_left: budget,
        exhausted: false,
        inconclusive: false,
        requirements: Requirements::of(key),
    };
    let mut kept: Vec<usize> = (0..key.ops.len()).collect();
    if let Some(ret) = blocked_ret.filter(|&ret| ret != RET_INFINITE) {
        let before_stuck: Vec<usize> = kept.iter().copied().filter(|&position| key.ops[position].call <= ret).collect();
        if before_stuck.len() < kept.len() && shrinker.still_fails(&before_stuck) {
            kept = before_stuck;
        }
    }
    let complete = shrinker.remove_chunks(&mut kept);
    Shrunk { kept, complete }
}

struct Shrinker<'a> {
    key: &'a KeyHistory,
    witness: &'a [u32],
    check_steps_max: u64,
    budget_left: u64,
    exhausted: bool,
    /// Some candidate's search ran out of steps, so a failing candidate may have been missed.
    inconclusive: bool,
    requirements: Requirements,
}

impl Shrinker<'_> {
    /// Removes chunks until single removals no longer help; true if that point was reached
    /// without running out of budget or meeting an inconclusive search.
    fn remove_chunks(&mut self, kept: &mut Vec<usize>) -> bool {
        let mut chunk = (kept.len() / 2).max(1);
        loop {
            let removed = self.removal_pass(kept, chunk);
            if self.exhausted {
                return false;
            }
            if chunk == 1 && !removed {
                return !self.inconclusive;
            }
            chunk = (chunk / 2).max(1);
        }
    }

    /// Tries removing each `chunk`-sized run of `kept`, from the end backwards (later operations
    /// tend to be the observers, which must go before the writes they observe can).
    fn removal_pass(&mut self, kept: &mut Vec<usize>, chunk: usize) -> bool {
        let mut removed = false;
        let mut end = kept.len();
        while end > 0 && !self.exhausted {
            let start = end.saturating_sub(chunk);
            let candidate: Vec<usize> = kept[..start].iter().chain(&kept[end..]).copied().collect();
            if self.still_fails(&candidate) {
                *kept = candidate;
                removed = true;
            }
            end = start;
        }
        removed
    }

    /// Whether `candidate` is a valid shrink: meets the requirements and is still not
    /// linearizable.
    fn still_fails(&mut self, candidate: &[usize]) -> bool {
        if self.exhausted || candidate.is_empty() {
            return false;
        }
        let preparation_steps = (self.key.ops.len() + candidate.len() + self.witness.len()) as u64;
        if self.budget_left <= preparation_steps {
            self.exhausted = true;
            return false;
        }
        self.budget_left -= preparation_steps;
        if !self.witness_still_legal(candidate) || !self.requirements.met_by(self.key, candidate) {
            return false;
        }
        let outcome =
            search(&self.key.sub_history(candidate), self.key.initial, self.check_steps_max.min(self.budget_left));
        self.budget_left -= outcome.steps;
        match outcome.result {
            SearchResult::NotLinearizable { .. } => true,
            SearchResult::Linearizable { .. } => false,
            SearchResult::Unknown => {
                self.exhausted = self.budget_left == 0;
                self.inconclusive = true;
                false
            }
        }
    }

    fn witness_still_legal(&self, candidate: &[usize]) -> bool {
        let mut kept = vec![false; self.key.ops.len()];
        for &position in candidate {
            kept[position] = true;
        }
        let mut state = self.key.initial;
        for &position in self.witness {
            if kept[position as usize] {
                match self.key.ops[position as usize].step.apply(state) {
                    Some(next) => state = next,
                    None => return false,
                }
            }
        }
        true
    }
}
