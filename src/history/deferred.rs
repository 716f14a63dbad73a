//! Info writes pending forever, kept out of the event list.
//!
//! Such a write may be linearized at any point after its call, or never, so in the event list it
//! would be a candidate in every scan; with hundreds of them pending (a chaos run's timeouts),
//! scanning past them would dominate the search. Here they are grouped into classes of
//! interchangeable writes (the same step), each class in call order, and the search offers, at
//! the end of each scan, only the next write of each class that could change the state.

use std::collections::HashMap;

use super::model::{KeyOp, StateId, Step, RET_INFINITE};

/// Marks an operation that is not deferred.
const NOT_DEFERRED: u32 = u32::MAX;

pub(crate) struct DeferredWrites {
    /// Each class's writes, in call order.
    classes: Vec<Vec<u32>>,
    /// How many writes of each class are linearized: always its first ones.
    used: Vec<u32>,
    /// The class of each operation, or [`NOT_DEFERRED`].
    class_of: Vec<u32>,
    /// Classes of sets and deletes: they change almost any state.
    unconditional: Vec<u32>,
    /// Classes of cas, by expected state: they change only that state.
    cas_by_expected: HashMap<StateId, Vec<u32>>,
}

/// Whether an operation is deferred: an Info write with no bound on its return.
pub(crate) fn is_deferred(op: &KeyOp) -> bool {
    op.info && op.ret == RET_INFINITE
}

impl DeferredWrites {
    pub(crate) fn new(ops: &[KeyOp]) -> DeferredWrites {
        let mut by_call: Vec<u32> = (0..ops.len() as u32).filter(|&op| is_deferred(&ops[op as usize])).collect();
        by_call.sort_by_key(|&op| (ops[op as usize].call, op));
        let mut writes = DeferredWrites {
            classes: Vec::new(),
            used: Vec::new(),
            class_of: vec![NOT_DEFERRED; ops.len()],
            unconditional: Vec::new(),
            cas_by_expected: HashMap::new(),
        };
        let mut class_by_step: HashMap<Step, u32> = HashMap::new();
        for op in by_call {
            let step = ops[op as usize].step;
            let class = *class_by_step.entry(step).or_insert_with(|| {
                let class = writes.classes.len() as u32;
                writes.classes.push(Vec::new());
                writes.used.push(0);
                match step {
                    Step::CasInfo { expected, .. } => writes.cas_by_expected.entry(expected).or_default().push(class),
                    _ => writes.unconditional.push(class),
                }
                class
            });
            writes.classes[class as usize].push(op);
            writes.class_of[op as usize] = class;
        }
        writes
    }

    /// The deferred writes, class after class, each class in call order.
    pub(crate) fn by_class(&self) -> impl Iterator<Item = u32> + '_ {
        self.classes.iter().flatten().copied()
    }

    pub(crate) fn contains(&self, op: u32) -> bool {
        self.class_of[op as usize] != NOT_DEFERRED
    }

    /// The `index`-th class worth offering in `state`; `None` once past the last.
    pub(crate) fn class_to_offer(&self, index: usize, state: StateId) -> Option<u32> {
        match self.unconditional.get(index) {
            Some(&class) => Some(class),
            None => self.cas_by_expected.get(&state)?.get(index - self.unconditional.len()).copied(),
        }
    }

    /// The next write of `class`, if it was invoked by `time`.
    pub(crate) fn next_of(&self, class: u32, time: u64, ops: &[KeyOp]) -> Option<u32> {
        let class = class as usize;
        let &op = self.classes[class].get(self.used[class] as usize)?;
        (ops[op as usize].call <= time).then_some(op)
    }

    pub(crate) fn lift(&mut self, op: u32) {
        self.used[self.class_of[op as usize] as usize] += 1;
    }

    pub(crate) fn unlift(&mut self, op: u32) {
        self.used[self.class_of[op as usize] as usize] -= 1;
    }
}
