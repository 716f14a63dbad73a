//! The register model over interned values, and the split of a history into per-key histories.
//!
//! Every distinct value of a key gets a small id (`0` is "absent"), so the search compares and
//! hashes `u32`s instead of byte strings. An operation becomes a [`Step`]: a transition of the
//! register that is either legal in a given state (returning the next state) or not.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::info::{bound_info_writes_of_unique_values, drop_unobserved_info_writes};
use super::{CasResult, Op, OpKind, OpResult, Outcome};

/// An interned register state: [`ABSENT`] or the id of a value of this key.
pub(crate) type StateId = u32;

/// The state of a key that holds no value.
pub(crate) const ABSENT: StateId = 0;

/// The return time of an operation whose completion is unknown: after every call.
pub(crate) const RET_INFINITE: u64 = u64::MAX;

/// One operation as a register transition, with its observed result folded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Step {
    /// A set, definite or Info: unconditional.
    Set {
        value: StateId,
    },
    Get {
        value: StateId,
    },
    Delete {
        existed: bool,
    },
    DeleteInfo,
    CasOk {
        expected: StateId,
        new: StateId,
    },
    CasFailed {
        expected: StateId,
        current: StateId,
    },
    /// A cas of unknown outcome: it stores `new` iff the state is `expected`, and is always legal.
    CasInfo {
        expected: StateId,
        new: StateId,
    },
}

/// What an operation's result says the register held when it took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Observation {
    Nothing,
    Value(StateId),
    /// Some value, which one unknown (a delete that reported `existed`).
    Present,
}

impl Step {
    /// The state after this step from `state`, or `None` if the observed result rules it out.
    pub(crate) fn apply(self, state: StateId) -> Option<StateId> {
        match self {
            Step::Set { value } => Some(value),
            Step::Get { value } => (state == value).then_some(state),
            Step::Delete { existed } => (existed == (state != ABSENT)).then_some(ABSENT),
            Step::DeleteInfo => Some(ABSENT),
            Step::CasOk { expected, new } => (state == expected).then_some(new),
            Step::CasFailed { expected, current } => (state != expected && state == current).then_some(state),
            Step::CasInfo { expected, new } => Some(if state == expected { new } else { state }),
        }
    }

    /// The state this step leaves whenever it is legal, if that does not depend on the state.
    /// (`CasOk` is included: it is only legal in one state, so its result is fixed too.)
    pub(crate) fn produces(self) -> Option<StateId> {
        match self {
            Step::Set { value } => Some(value),
            Step::Delete { .. } | Step::DeleteInfo => Some(ABSENT),
            Step::CasOk { new, .. } | Step::CasInfo { new, .. } => Some(new),
            Step::Get { .. } | Step::CasFailed { .. } => None,
        }
    }

    /// What the observed result reveals about the state the step ran in.
    pub(crate) fn observation(self) -> Observation {
        match self {
            Step::Get { value } => Observation::Value(value),
            Step::Delete { existed: true } => Observation::Present,
            Step::Delete { existed: false } => Observation::Value(ABSENT),
            Step::CasOk { expected, .. } => Observation::Value(expected),
            Step::CasFailed { current, .. } => Observation::Value(current),
            Step::Set { .. } | Step::DeleteInfo | Step::CasInfo { .. } => Observation::Nothing,
        }
    }

    /// The states whose identity (not just presence) this step's legality or effect depends on.
    fn compared_states(self) -> [Option<StateId>; 2] {
        match self {
            Step::Get { value } => [Some(value), None],
            Step::CasOk { expected, .. } | Step::CasInfo { expected, .. } => [Some(expected), None],
            Step::CasFailed { expected, current } => [Some(expected), Some(current)],
            Step::Set { .. } | Step::Delete { .. } | Step::DeleteInfo => [None, None],
        }
    }

    fn map_states(self, map: impl Fn(StateId) -> StateId) -> Step {
        match self {
            Step::Set { value } => Step::Set { value: map(value) },
            Step::Get { value } => Step::Get { value: map(value) },
            Step::CasOk { expected, new } => Step::CasOk { expected: map(expected), new: map(new) },
            Step::CasFailed { expected, current } => Step::CasFailed { expected: map(expected), current: map(current) },
            Step::CasInfo { expected, new } => Step::CasInfo { expected: map(expected), new: map(new) },
            Step::Delete { .. } | Step::DeleteInfo => self,
        }
    }
}

/// One operation of a key's history, ready for the search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyOp {
    /// Position of the operation in the caller's history.
    pub index: usize,
    pub call: u64,
    /// [`RET_INFINITE`] when the completion is unknown.
    pub ret: u64,
    pub step: Step,
    /// An Info operation (may or may not have taken effect).
    pub info: bool,
}

/// The operations on one key, over interned states.
#[derive(Debug)]
pub(crate) struct KeyHistory {
    pub key: Bytes,
    /// The value the key starts with.
    pub initial_value: Option<Bytes>,
    pub initial: StateId,
    /// Number of state ids in use, [`ABSENT`] included.
    pub state_count: usize,
    /// Sorted by call time, then history position; Fail operations and Info gets left out.
    pub ops: Vec<KeyOp>,
}

impl KeyHistory {
    /// The operations at `positions`, as the search must see them on their own from `initial`:
    /// an Info write's return bound (see [`bound_info_writes_of_unique_values`]) came from an
    /// observer that may not be among them, so it is recomputed.
    pub(crate) fn sub_history(&self, positions: &[usize], initial: StateId) -> Vec<KeyOp> {
        let mut ops: Vec<KeyOp> = positions
            .iter()
            .map(|&position| {
                let op = self.ops[position];
                KeyOp { ret: if op.info { RET_INFINITE } else { op.ret }, ..op }
            })
            .collect();
        bound_info_writes_of_unique_values(&mut ops, initial, self.state_count);
        ops
    }
}

/// Interns the values of one key: ids from 1 in order of first appearance.
#[derive(Default)]
struct Interner {
    ids: HashMap<Bytes, StateId>,
}

impl Interner {
    fn id(&mut self, value: &Bytes) -> StateId {
        let next = self.ids.len() as StateId + 1;
        *self.ids.entry(value.clone()).or_insert(next)
    }

    fn id_or_absent(&mut self, value: &Option<Bytes>) -> StateId {
        value.as_ref().map_or(ABSENT, |value| self.id(value))
    }

    /// Ids handed out so far, [`ABSENT`] included.
    fn state_count(&self) -> usize {
        self.ids.len() + 1
    }
}

/// Splits a validated history by key (in key order), keeping only the operations that constrain
/// the search.
pub(crate) fn split_by_key(history: &[Op], initial: &BTreeMap<Bytes, Bytes>) -> Vec<KeyHistory> {
    let mut by_key: BTreeMap<&Bytes, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        by_key.entry(&op.key).or_default().push(index);
    }
    by_key.into_iter().map(|(key, indexes)| key_history(history, key, &indexes, initial.get(key))).collect()
}

fn key_history(history: &[Op], key: &Bytes, indexes: &[usize], initial_value: Option<&Bytes>) -> KeyHistory {
    let mut interner = Interner::default();
    let mut initial = initial_value.map_or(ABSENT, |value| interner.id(value));
    let mut ops: Vec<KeyOp> = indexes
        .iter()
        .filter_map(|&index| {
            let op = &history[index];
            let step = step_of(op, &mut interner)?;
            let info = op.outcome == Outcome::Info;
            let ret = if info { RET_INFINITE } else { op.ret.unwrap_or(RET_INFINITE) };
            Some(KeyOp { index, call: op.call, ret, step, info })
        })
        .collect();
    let state_count = interner.state_count();
    merge_uncompared_values(&mut ops, &mut initial, state_count);
    drop_unobserved_info_writes(&mut ops, state_count);
    bound_info_writes_of_unique_values(&mut ops, initial, state_count);
    ops.sort_by_key(|op| (op.call, op.index));
    KeyHistory { key: key.clone(), initial_value: initial_value.cloned(), initial, state_count, ops }
}

/// Gives all values that no operation compares the register with one state id.
///
/// Why: such values are indistinguishable to every step (only their presence matters), so the
/// search need not tell them apart, and Info writes of them become interchangeable (see the
/// search). Reports show the real values: they come from the caller's operations, not from ids.
fn merge_uncompared_values(ops: &mut [KeyOp], initial: &mut StateId, state_count: usize) {
    let mut compared = vec![false; state_count];
    for state in ops.iter().flat_map(|op| op.step.compared_states()).flatten() {
        if let Some(slot) = compared.get_mut(state as usize) {
            *slot = true;
        }
    }
    let Some(merged) = (1..state_count).find(|&state| !compared[state]) else { return };
    let map = |state: StateId| if state != ABSENT && !compared[state as usize] { merged as StateId } else { state };
    for op in ops.iter_mut() {
        op.step = op.step.map_states(map);
    }
    *initial = map(*initial);
}

/// The step of a validated operation; `None` for one that cannot matter (Fail, Info get).
fn step_of(op: &Op, interner: &mut Interner) -> Option<Step> {
    match (&op.kind, &op.outcome) {
        (_, Outcome::Fail) | (OpKind::Get, Outcome::Info) => None,
        (OpKind::Set { value }, _) => Some(Step::Set { value: interner.id(value) }),
        (OpKind::Delete, Outcome::Info) => Some(Step::DeleteInfo),
        (OpKind::Cas { expected, new }, Outcome::Info) => {
            Some(Step::CasInfo { expected: interner.id_or_absent(expected), new: interner.id(new) })
        }
        (OpKind::Get, Outcome::Ok(OpResult::Get { value })) => Some(Step::Get { value: interner.id_or_absent(value) }),
        (OpKind::Delete, Outcome::Ok(OpResult::Delete { existed })) => Some(Step::Delete { existed: *existed }),
        (OpKind::Cas { expected, new }, Outcome::Ok(OpResult::Cas(result))) => {
            let expected = interner.id_or_absent(expected);
            Some(match result {
                CasResult::Ok => Step::CasOk { expected, new: interner.id(new) },
                CasResult::Failed { current } => Step::CasFailed { expected, current: interner.id_or_absent(current) },
            })
        }
        // A result of the wrong kind; `validate` refuses these before we get here.
        (_, Outcome::Ok(_)) => None,
    }
}

/// The register after `op` took effect from `state`, with real values (for reports; the search
/// works on ids). `op` must be legal in `state`.
pub(crate) fn apply_to_value(op: &Op, state: Option<Bytes>) -> Option<Bytes> {
    match (&op.kind, &op.outcome) {
        (OpKind::Set { value }, _) => Some(value.clone()),
        (OpKind::Delete, _) => None,
        (OpKind::Cas { expected, new }, Outcome::Ok(OpResult::Cas(CasResult::Ok)) | Outcome::Info) => {
            if state == *expected {
                Some(new.clone())
            } else {
                state
            }
        }
        (OpKind::Get | OpKind::Cas { .. }, _) => state,
    }
}
