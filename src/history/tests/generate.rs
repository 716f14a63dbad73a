//! Random histories that are linearizable by construction, and a mutation that makes one read
//! certainly stale.
//!
//! Construction: run random operations sequentially on real registers (computing real results),
//! give operation `i` the linearization point `POINT_SPACING * (i + 1)`, deal the operations to
//! clients at random, and give each an interval around its point that ends before the same
//! client's next point. Some replies are then lost (Info, which keeps the op's effect at its
//! point) and some refused operations (Fail, never applied) are mixed in.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::super::{CasResult, Op, OpKind, OpResult, Outcome};
use super::b;
use crate::raft::rng::Rng;

/// Distance between consecutive linearization points. Small, so that equal times (ties between a
/// return and a call) are frequent.
const POINT_SPACING: u64 = 2;

#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    pub keys: u64,
    pub clients: u64,
    pub ops: usize,
    /// Chance, in percent, that an operation's reply is lost.
    pub info_percent: u64,
    /// Refused operations added, in percent of `ops`.
    pub fail_percent: u64,
    /// Every write writes a fresh value (as a real test client would); else values come from a
    /// small pool, so many writes write the same value.
    pub unique_values: bool,
}

impl Shape {
    pub(super) fn random(rng: &mut Rng) -> Shape {
        Shape {
            keys: rng.range(1, 4),
            clients: rng.range(1, 7),
            ops: rng.range(1, 60) as usize,
            info_percent: rng.range(0, 15),
            fail_percent: rng.range(0, 15),
            unique_values: rng.chance(1, 3),
        }
    }
}

/// A linearizable history of `shape`, in random order.
pub(super) fn linearizable_history(rng: &mut Rng, shape: &Shape) -> Vec<Op> {
    let mut history = sequential_execution(rng, shape);
    assign_intervals(rng, &mut history, shape.clients);
    for op in history.iter_mut() {
        if rng.chance(shape.info_percent, 100) {
            op.outcome = Outcome::Info;
            op.ret = None;
        }
    }
    let fails = shape.ops as u64 * shape.fail_percent / 100;
    let horizon = POINT_SPACING * (shape.ops as u64 + 2);
    for _ in 0..fails {
        let mut refused = random_op(rng, shape, &mut BTreeMap::new(), 0);
        refused.client = shape.clients + 1;
        refused.call = rng.range(0, horizon);
        refused.ret = Some(refused.call + rng.range(0, 10));
        refused.outcome = Outcome::Fail;
        history.push(refused);
    }
    shuffle(rng, &mut history);
    history
}

/// Operations applied one after the other; `call == ret ==` the linearization point for now.
fn sequential_execution(rng: &mut Rng, shape: &Shape) -> Vec<Op> {
    let mut registers: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    (0..shape.ops).map(|i| random_op(rng, shape, &mut registers, POINT_SPACING * (i as u64 + 1))).collect()
}

/// A random operation applied to `registers`, with its true result, at time `point`.
fn random_op(rng: &mut Rng, shape: &Shape, registers: &mut BTreeMap<Bytes, Bytes>, point: u64) -> Op {
    let key = b(&format!("k{}", rng.range(0, shape.keys)));
    let current = registers.get(&key).cloned();
    let (kind, result) = match rng.range(0, 4) {
        0 => {
            let value = random_value(rng, shape.unique_values);
            registers.insert(key.clone(), value.clone());
            (OpKind::Set { value }, OpResult::Set)
        }
        1 => (OpKind::Get, OpResult::Get { value: current }),
        2 => (OpKind::Delete, OpResult::Delete { existed: registers.remove(&key).is_some() }),
        _ => {
            let expected = if rng.chance(1, 2) { current.clone() } else { Some(random_value(rng, false)) };
            let new = random_value(rng, shape.unique_values);
            let result = if expected == current {
                registers.insert(key.clone(), new.clone());
                CasResult::Ok
            } else {
                CasResult::Failed { current }
            };
            (OpKind::Cas { expected, new }, OpResult::Cas(result))
        }
    };
    Op { client: 0, key, call: point, ret: Some(point), kind, outcome: Outcome::Ok(result) }
}

/// A value from a small pool (so reads and cas often match), or now and then (always if `fresh`)
/// a fresh one.
fn random_value(rng: &mut Rng, fresh: bool) -> Bytes {
    if fresh || rng.chance(1, 8) {
        b(&format!("fresh{:016x}", rng.next_u64()))
    } else {
        b(&format!("v{}", rng.range(0, 4)))
    }
}

/// Deals the operations (in point order, `call == ret == point`) to clients and widens each one
/// to an interval containing its point that ends before the client's next point.
fn assign_intervals(rng: &mut Rng, history: &mut [Op], clients: u64) {
    let mut by_client: Vec<Vec<usize>> = vec![Vec::new(); clients as usize];
    for (index, op) in history.iter_mut().enumerate() {
        let client = rng.range(0, clients);
        op.client = client + 1;
        by_client[client as usize].push(index);
    }
    let spread_max = POINT_SPACING * clients * 2;
    for indexes in by_client {
        let mut previous_ret: Option<u64> = None;
        for (position, &index) in indexes.iter().enumerate() {
            let point = history[index].call;
            let earliest_call = previous_ret.map_or(0, |ret| ret + 1).max(point.saturating_sub(spread_max));
            let latest_ret = indexes.get(position + 1).map_or(point + spread_max, |&next| history[next].call - 1);
            let call = rng.range(earliest_call, point + 1);
            let ret = rng.range(point, latest_ret.min(point + spread_max) + 1);
            history[index].call = call;
            history[index].ret = Some(ret);
            previous_ret = Some(ret);
        }
    }
}

fn shuffle(rng: &mut Rng, history: &mut [Op]) {
    for i in (1..history.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        history.swap(i, j);
    }
}

/// The value `op` may leave in its register, if it may write at all (an Info cas may).
fn may_write(op: &Op) -> Option<Option<Bytes>> {
    match (&op.kind, &op.outcome) {
        (_, Outcome::Fail) | (OpKind::Get, _) => None,
        (OpKind::Cas { .. }, Outcome::Ok(OpResult::Cas(CasResult::Failed { .. }))) => None,
        (OpKind::Set { value }, _) => Some(Some(value.clone())),
        (OpKind::Delete, _) => Some(None),
        (OpKind::Cas { new, .. }, _) => Some(Some(new.clone())),
    }
}

/// The value `op` certainly left, whatever the state before (it completed and writes
/// unconditionally, or, for a cas, it succeeded).
fn surely_wrote(op: &Op) -> Option<Option<Bytes>> {
    match op.outcome {
        Outcome::Ok(_) if op.ret.is_some() => may_write(op),
        _ => None,
    }
}

/// Replaces the result of one completed get with a value it certainly cannot have seen: every op
/// that may write that value returned before some op `x` was invoked that surely overwrote it,
/// and `x` returned before the get was invoked. (Merely "a value not held during the get's
/// interval" is not enough: a concurrent write of the same value could be reordered into it.)
/// Returns the get's index, or `None` if no get qualifies.
pub(super) fn make_stale_read(history: &mut [Op]) -> Option<usize> {
    let (index, stale) = (0..history.len()).find_map(|index| Some((index, stale_value_for(history, index)?)))?;
    history[index].outcome = Outcome::Ok(OpResult::Get { value: stale });
    Some(index)
}

/// A value the completed get at `index` certainly cannot have seen (see [`make_stale_read`]).
fn stale_value_for(history: &[Op], index: usize) -> Option<Option<Bytes>> {
    let read = &history[index];
    let Outcome::Ok(OpResult::Get { value: seen }) = &read.outcome else { return None };
    read.ret?;
    let same_key = || history.iter().filter(|op| op.key == read.key);
    let mut candidates = same_key().filter_map(may_write).chain(std::iter::once(None));
    candidates.find(|stale| {
        stale != seen
            && same_key().any(|x| {
                let overwrites = surely_wrote(x).is_some_and(|left| left != *stale);
                let writers_before_x = same_key()
                    .filter(|w| may_write(w).as_ref() == Some(stale))
                    .all(|w| w.ret.is_some_and(|ret| ret < x.call));
                overwrites && x.ret.is_some_and(|ret| ret < read.call) && writers_before_x
            })
    })
}
