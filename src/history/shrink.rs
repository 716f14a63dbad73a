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
//! Cuts: a prefix of the witness may be replaced by the state it leaves (the report says how many
//! operations were cut and which state they left). The search, before it failed, explored every
//! continuation of every prefix of the witness and none succeeded, so the state is a real one and
//! the question "can the rest be linearized after it" is the one the search answered. A long
//! history is cut first, so that shrinking works on a window of [`SHRINK_WINDOW_OPS_MAX`] witness
//! operations before the point where the search got stuck. After the removals, the cut of such a
//! history is moved forward past kept witness operations if the rules still hold (a read may then
//! be explained by the new cut's state): that drops chains of operations whose only role was to
//! lead from the old cut's state to the violation.
//!
//! All work is charged to a step budget (search steps plus one step per operation of each
//! candidate and of the witness), so shrinking always ends; when the budget runs out the smallest
//! failing sub-history found so far is kept.

use super::model::{KeyHistory, StateId, RET_INFINITE};
use super::requirements::Requirements;
use super::search::{search, SearchResult};

/// Witness operations kept in front of the stuck point when a long history is cut.
pub(crate) const SHRINK_WINDOW_OPS_MAX: usize = 1000;

/// The outcome of shrinking.
pub(crate) struct Shrunk {
    /// How many operations of the witness were cut away (replaced by the state they leave).
    pub cut: usize,
    /// The state the cut operations leave (the key's initial state if `cut == 0`).
    pub initial: StateId,
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
    let mut shrinker = Shrinker::new(key, witness, check_steps_max, budget);
    let mut kept = shrinker.window();
    if let Some(ret) = blocked_ret.filter(|&ret| ret != RET_INFINITE) {
        let before_stuck: Vec<usize> = kept.iter().copied().filter(|&position| key.ops[position].call <= ret).collect();
        if before_stuck.len() < kept.len() && shrinker.still_fails(&before_stuck) {
            kept = before_stuck;
        }
    }
    let mut complete = shrinker.remove_chunks(&mut kept);
    // Only for histories cut anyway: a short one is better shown whole, from the real start.
    if shrinker.cut > 0 && shrinker.advance_cut(&mut kept) {
        complete = shrinker.remove_chunks(&mut kept);
    }
    Shrunk { cut: shrinker.cut, initial: shrinker.initial(), kept, complete }
}

struct Shrinker<'a> {
    key: &'a KeyHistory,
    witness: &'a [u32],
    /// `states_along_witness[i]`: the state after `witness[..i]`.
    states_along_witness: Vec<StateId>,
    /// Witness operations replaced by the state they leave.
    cut: usize,
    /// For each operation, its index in `witness` if it is on it.
    is_witness_position: Vec<Option<u32>>,
    check_steps_max: u64,
    budget_left: u64,
    exhausted: bool,
    /// Some candidate's search ran out of steps, so a failing candidate may have been missed.
    inconclusive: bool,
    requirements: Requirements,
    /// All false between calls; marks a candidate's positions during one (reused: the key's
    /// history may be far longer than the candidates).
    in_candidate: Vec<bool>,
}

impl<'a> Shrinker<'a> {
    fn new(key: &'a KeyHistory, witness: &'a [u32], check_steps_max: u64, budget: u64) -> Shrinker<'a> {
        let mut states_along_witness = vec![key.initial];
        let mut is_witness_position = vec![None; key.ops.len()];
        for (at, &op) in witness.iter().enumerate() {
            let state = *states_along_witness.last().unwrap_or(&key.initial);
            // The witness is legal, so every step applies; `unwrap_or` is never taken.
            states_along_witness.push(key.ops[op as usize].step.apply(state).unwrap_or(state));
            is_witness_position[op as usize] = Some(at as u32);
        }
        let cut = witness.len().saturating_sub(SHRINK_WINDOW_OPS_MAX);
        let mut shrinker = Shrinker {
            key,
            witness,
            states_along_witness,
            cut,
            is_witness_position,
            check_steps_max,
            budget_left: budget,
            exhausted: false,
            inconclusive: false,
            requirements: Requirements::none(),
            in_candidate: vec![false; key.ops.len()],
        };
        shrinker.requirements = Requirements::of(key, &shrinker.window(), shrinker.initial());
        shrinker
    }

    /// The state before the operations being shrunk.
    fn initial(&self) -> StateId {
        self.states_along_witness[self.cut]
    }

    /// All operations but the cut ones.
    fn window(&self) -> Vec<usize> {
        let cut = self.cut as u32;
        (0..self.key.ops.len())
            .filter(|&position| self.is_witness_position[position].is_none_or(|at| at >= cut))
            .collect()
    }

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

    /// Moves the cut to just before the latest kept witness operation it can, cutting the kept
    /// witness operations before it; true if it moved.
    fn advance_cut(&mut self, kept: &mut Vec<usize>) -> bool {
        let mut kept_witness: Vec<u32> =
            kept.iter().filter_map(|&position| self.is_witness_position[position]).collect();
        kept_witness.sort_unstable();
        let old_cut = self.cut;
        for &new_cut in kept_witness.iter().skip(1).rev() {
            self.cut = new_cut as usize;
            let candidate: Vec<usize> = kept
                .iter()
                .copied()
                .filter(|&position| self.is_witness_position[position].is_none_or(|at| at >= new_cut))
                .collect();
            if self.still_fails_from_cut(&candidate, true) {
                *kept = candidate;
                return true;
            }
        }
        self.cut = old_cut;
        false
    }

    /// Whether `candidate` is a valid shrink: meets the requirements and is still not
    /// linearizable from the state at the cut.
    fn still_fails(&mut self, candidate: &[usize]) -> bool {
        self.still_fails_from_cut(candidate, false)
    }

    /// [`Self::still_fails`]; `new_cut`: the cut was just moved, and the writes it cut away may be
    /// stood in for by the state it leaves.
    fn still_fails_from_cut(&mut self, candidate: &[usize], new_cut: bool) -> bool {
        if self.exhausted || candidate.is_empty() {
            return false;
        }
        let preparation_steps = (candidate.len() + self.witness.len() - self.cut) as u64;
        if self.budget_left <= preparation_steps {
            self.exhausted = true;
            return false;
        }
        self.budget_left -= preparation_steps;
        let start = new_cut.then(|| self.initial());
        if !self.witness_still_legal(candidate) || !self.requirements.met_by(self.key, candidate, start) {
            return false;
        }
        let ops = self.key.sub_history(candidate, self.initial());
        let outcome = search(&ops, self.initial(), self.check_steps_max.min(self.budget_left));
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

    /// Whether the witness after the cut, restricted to `candidate`, is still legal.
    fn witness_still_legal(&mut self, candidate: &[usize]) -> bool {
        for &position in candidate {
            self.in_candidate[position] = true;
        }
        let mut state = self.initial();
        let legal = self.witness[self.cut..].iter().all(|&position| {
            if !self.in_candidate[position as usize] {
                return true;
            }
            let next = self.key.ops[position as usize].step.apply(state);
            state = next.unwrap_or(state);
            next.is_some()
        });
        for &position in candidate {
            self.in_candidate[position] = false;
        }
        legal
    }
}
