//! Which writes a shrunk sub-history must keep so that its failure is the real one.
//!
//! Removing a write from a history can break it by itself: a read of the write's value is left
//! with no explanation, or with only a write of the same value at the wrong time. A shrinker that
//! allowed such removals would turn every violation into "a read of a value never written", or
//! blame a read on an unrelated write. So each observing operation (a get, a cas, a delete) of the
//! history being shrunk gets a [`Need`], computed once:
//!
//! 1. if some write of the observed value may have been what it saw (invoked before the observer
//!    returned, and not certainly overwritten before the observer was invoked), the sub-history
//!    must keep one such write;
//! 2. else if some write of the value was invoked before the observer returned (so it is stale),
//!    the sub-history must keep one of those, to show the value was once there;
//! 3. else (the value was never written in time, or the initial state explains it) nothing.
//!
//! "Certainly overwritten": some operation `x` that surely left another state (a completed set,
//! delete or successful cas) was invoked after the write returned and returned before the
//! observer was invoked.

use super::model::{KeyHistory, Observation, StateId, ABSENT, RET_INFINITE};

/// What one operation needs from the sub-history it is kept in.
#[derive(Clone, Copy, Debug)]
enum Need {
    Nothing,
    /// A write leaving `target`, invoked at or before `call_max`, returning at or after `ret_min`.
    Writer {
        target: Target,
        call_max: u64,
        ret_min: Option<u64>,
    },
}

/// An observed state: one value (or absent), or any value at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    State(StateId),
    Present,
}

impl Target {
    fn matches(self, state: StateId) -> bool {
        match self {
            Target::State(target) => state == target,
            Target::Present => state != ABSENT,
        }
    }
}

/// The [`Need`] of every operation of a key's history, by position.
pub(crate) struct Requirements {
    needs: Vec<Need>,
}

impl Requirements {
    /// No needs at all.
    pub(crate) fn none() -> Requirements {
        Requirements { needs: Vec::new() }
    }

    /// The needs of the operations at `positions` of `key`, treated as a history of its own that
    /// starts in state `initial`.
    pub(crate) fn of(key: &KeyHistory, positions: &[usize], initial: StateId) -> Requirements {
        let writers = Writers::of(key, positions);
        let overwrites = Overwrites::of(key, positions);
        let mut needs = vec![Need::Nothing; key.ops.len()];
        for &position in positions {
            let op = &key.ops[position];
            let target = match op.step.observation() {
                Observation::Nothing => continue,
                Observation::Value(state) => Target::State(state),
                Observation::Present => Target::Present,
            };
            let ret_min = overwrites.last_call_before(target, op.call);
            let initial_explains = target.matches(initial);
            needs[position] = if initial_explains && ret_min.is_none() {
                Need::Nothing
            } else if writers.any(target, op.ret, ret_min) {
                Need::Writer { target, call_max: op.ret, ret_min }
            } else if !initial_explains && writers.any(target, op.ret, None) {
                Need::Writer { target, call_max: op.ret, ret_min: None }
            } else {
                Need::Nothing
            };
        }
        Requirements { needs }
    }

    /// Whether the sub-history of `key` at `positions` keeps a write for every need it has.
    ///
    /// `start`: the state the sub-history starts in, if that may stand in for a write (when the
    /// sub-history starts where an earlier part of a linearization was cut away, the cut writes'
    /// effect is that state).
    pub(crate) fn met_by(&self, key: &KeyHistory, positions: &[usize], start: Option<StateId>) -> bool {
        let writers = Writers::of(key, positions);
        positions.iter().all(|&position| match self.needs.get(position).copied().unwrap_or(Need::Nothing) {
            Need::Nothing => true,
            Need::Writer { target, call_max, ret_min } => {
                start.is_some_and(|state| target.matches(state)) || writers.any(target, call_max, ret_min)
            }
        })
    }
}

/// The writes of some operations, indexed for "is there a write of this state invoked by `t`
/// that returned at or after `r`" queries.
struct Writers {
    /// (state, call, greatest ret among this state's writes invoked up to this call), sorted.
    by_state: Vec<(StateId, u64, u64)>,
    /// The same over writes of any value (not absent).
    present: Vec<(u64, u64)>,
}

impl Writers {
    fn of(key: &KeyHistory, positions: &[usize]) -> Writers {
        let mut by_state: Vec<(StateId, u64, u64)> = positions
            .iter()
            .filter_map(|&position| {
                let op = &key.ops[position];
                op.step.produces().map(|state| (state, op.call, op.ret))
            })
            .collect();
        by_state.sort_unstable();
        let mut present: Vec<(u64, u64)> =
            by_state.iter().filter(|write| write.0 != ABSENT).map(|&(_, call, ret)| (call, ret)).collect();
        present.sort_unstable();
        for i in 1..by_state.len() {
            if by_state[i].0 == by_state[i - 1].0 {
                by_state[i].2 = by_state[i].2.max(by_state[i - 1].2);
            }
        }
        for i in 1..present.len() {
            present[i].1 = present[i].1.max(present[i - 1].1);
        }
        Writers { by_state, present }
    }

    fn any(&self, target: Target, call_max: u64, ret_min: Option<u64>) -> bool {
        let latest_ret = match target {
            Target::Present => {
                let invoked = self.present.partition_point(|write| write.0 <= call_max);
                invoked.checked_sub(1).map(|last| self.present[last].1)
            }
            Target::State(state) => {
                let start = self.by_state.partition_point(|write| write.0 < state);
                let end = self.by_state.partition_point(|write| write.0 <= state);
                let group = &self.by_state[start..end];
                let invoked = group.partition_point(|write| write.1 <= call_max);
                invoked.checked_sub(1).map(|last| group[last].2)
            }
        };
        latest_ret.is_some_and(|ret| ret_min.is_none_or(|ret_min| ret >= ret_min))
    }
}

/// Completed operations that surely left a known state, for "latest invocation of one that
/// overwrote `target` and returned before `t`" queries.
struct Overwrites {
    /// Return times, sorted; `prefix[i]` summarizes the operations returning at `rets[..=i]`.
    rets: Vec<u64>,
    prefix: Vec<OverwriteSummary>,
}

#[derive(Clone, Copy)]
struct OverwriteSummary {
    /// The latest call, and the state that operation left.
    latest_call: u64,
    latest_state: StateId,
    /// The latest call among operations leaving a state other than `latest_state`.
    latest_call_other_state: Option<u64>,
    /// The latest call among operations leaving the key absent.
    latest_call_absent: Option<u64>,
}

impl Overwrites {
    fn of(key: &KeyHistory, positions: &[usize]) -> Overwrites {
        let mut definite: Vec<(u64, u64, StateId)> = positions
            .iter()
            .map(|&position| &key.ops[position])
            .filter(|op| !op.info && op.ret != RET_INFINITE)
            .filter_map(|op| op.step.produces().map(|state| (op.ret, op.call, state)))
            .collect();
        definite.sort_unstable();
        let mut prefix: Vec<OverwriteSummary> = Vec::with_capacity(definite.len());
        for &(_, call, state) in &definite {
            let absent = (state == ABSENT).then_some(call);
            let summary = match prefix.last().copied() {
                None => OverwriteSummary {
                    latest_call: call,
                    latest_state: state,
                    latest_call_other_state: None,
                    latest_call_absent: absent,
                },
                Some(last) => last.add(call, state),
            };
            prefix.push(summary);
        }
        Overwrites { rets: definite.iter().map(|write| write.0).collect(), prefix }
    }

    /// The latest call of an operation that left a state not matching `target` and returned
    /// before `before`.
    fn last_call_before(&self, target: Target, before: u64) -> Option<u64> {
        let count = self.rets.partition_point(|&ret| ret < before);
        let summary = self.prefix.get(count.checked_sub(1)?)?;
        match target {
            Target::Present => summary.latest_call_absent,
            Target::State(state) if state != summary.latest_state => Some(summary.latest_call),
            Target::State(_) => summary.latest_call_other_state,
        }
    }
}

impl OverwriteSummary {
    fn add(self, call: u64, state: StateId) -> OverwriteSummary {
        let latest_call_absent =
            if state == ABSENT { self.latest_call_absent.max(Some(call)) } else { self.latest_call_absent };
        let mut next = OverwriteSummary { latest_call_absent, ..self };
        if state == self.latest_state {
            next.latest_call = self.latest_call.max(call);
        } else if call > self.latest_call {
            // The old latest left another state than this one, and was the latest of all.
            next.latest_call_other_state = Some(self.latest_call);
            next.latest_call = call;
            next.latest_state = state;
        } else {
            next.latest_call_other_state = self.latest_call_other_state.max(Some(call));
        }
        next
    }
}
