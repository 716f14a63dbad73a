//! Reductions of Info writes that never change a key's verdict but keep the search small.
//!
//! An Info write is pending forever, so it is a candidate at every later step of the search, and
//! the sets of Info writes linearized so far multiply the states to explore. Two facts bound that:
//! a write nothing can observe need not be searched at all, and a write that is the only source of
//! a value must have happened before the first operation that observed the value returned.

use super::model::{KeyOp, Observation, StateId, Step, ABSENT};

/// The latest return, per state, of an operation observing that state (an Info cas counts as
/// observing its `expected`: its effect depends on it), and of one observing "some value".
struct LatestObservers {
    by_state: Vec<Option<u64>>,
    present: Option<u64>,
}

impl LatestObservers {
    fn of(ops: &[KeyOp], state_count: usize) -> LatestObservers {
        let mut latest = LatestObservers { by_state: vec![None; state_count], present: None };
        for op in ops {
            let observed = match (op.step, op.step.observation()) {
                (Step::CasInfo { expected, .. }, _) => expected,
                (_, Observation::Value(state)) => state,
                (_, Observation::Present) => {
                    latest.present = latest.present.max(Some(op.ret));
                    continue;
                }
                (_, Observation::Nothing) => continue,
            };
            if let Some(slot) = latest.by_state.get_mut(observed as usize) {
                *slot = (*slot).max(Some(op.ret));
            }
        }
        latest
    }

    /// Whether an operation returning at or after `since` observes `state`.
    fn observe_since(&self, state: StateId, since: u64) -> bool {
        let seen = |latest: Option<u64>| latest.is_some_and(|ret| ret >= since);
        seen(self.by_state.get(state as usize).copied().flatten()) || (state != ABSENT && seen(self.present))
    }
}

/// Drops Info writes whose effect nothing can see, until none is left to drop.
///
/// Why this is sound: let an Info write leave state `v`, invoked at `c`. Only operations returning
/// at or after `c` can be linearized after it. If none of them observes `v` (nor, for `v` a value,
/// "some value"), then in any linearization the write can be moved to the end, together with the
/// Info cas it turned into no-ops: until the next unconditional write, no operation after it had a
/// precondition that `v` satisfied. At the end an Info write is always legal, so the history is
/// linearizable with it iff it is without it.
pub(crate) fn drop_unobserved_info_writes(ops: &mut Vec<KeyOp>, state_count: usize) {
    loop {
        let observers = LatestObservers::of(ops, state_count);
        let before = ops.len();
        // The Info operations kept in key histories are all writes: Info gets were dropped.
        ops.retain(|op| !(op.info && op.step.produces().is_some_and(|state| !observers.observe_since(state, op.call))));
        if ops.len() == before {
            return;
        }
    }
}

/// Gives an Info write that is the only source of its state (not the initial one) the return time
/// of the earliest observer of that state, or its own call time if that is earlier.
///
/// Why this is sound: the observer saw the state, so in any linearization the write came before
/// it, hence before the observer returned. If the observer returned before the write was even
/// invoked, no linearization exists, and adding a constraint cannot create one.
pub(crate) fn bound_info_writes_of_unique_values(ops: &mut [KeyOp], initial: StateId, state_count: usize) {
    let mut writers = vec![0_u32; state_count];
    let mut earliest_observer: Vec<Option<u64>> = vec![None; state_count];
    for op in ops.iter() {
        if let Some(slot) = op.step.produces().and_then(|state| writers.get_mut(state as usize)) {
            *slot += 1;
        }
        if let Observation::Value(state) = op.step.observation() {
            if let Some(slot) = earliest_observer.get_mut(state as usize) {
                *slot = Some(slot.map_or(op.ret, |ret| ret.min(op.ret)));
            }
        }
    }
    for op in ops.iter_mut().filter(|op| op.info) {
        let Some(state) = op.step.produces().filter(|&state| state != initial) else { continue };
        if writers.get(state as usize) == Some(&1) {
            if let Some(ret) = earliest_observer.get(state as usize).copied().flatten() {
                op.ret = ret.max(op.call);
            }
        }
    }
}
