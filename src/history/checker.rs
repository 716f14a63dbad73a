//! The entry points: split by key, search each key, and explain each violation.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::model::{apply_to_value, split_by_key, KeyHistory, KeyOp, StateId};
use super::report::{KeyReport, KeyVerdict, NumberedOp, Report, Violation};
use super::search::{search, SearchResult};
use super::shrink::shrink;
use super::{validate, HistoryError, Op};

/// Default [`CheckConfig::search_steps_max`]. Measured in a release build: 15 to 20 million steps
/// a second, and the cache grows by at most one entry (some 10 to 40 bytes) per step, so a key
/// that exhausts it costs about 3 s and at most 1 GB, briefly.
pub const SEARCH_STEPS_MAX_DEFAULT: u64 = 50_000_000;

/// Default [`CheckConfig::shrink_search_steps_max`].
pub const SHRINK_SEARCH_STEPS_MAX_DEFAULT: u64 = 10_000_000;

/// Limits and starting state of a check.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// Values keys hold before the history; keys not listed start absent.
    pub initial: BTreeMap<Bytes, Bytes>,
    /// Search steps allowed per key (one step visits one event) before the key's verdict is
    /// [`KeyVerdict::Unknown`].
    pub search_steps_max: u64,
    /// Search steps allowed per violated key, over all its attempts, to shrink the failing
    /// sub-history. When they run out the smallest one found so far is reported.
    pub shrink_search_steps_max: u64,
}

impl Default for CheckConfig {
    fn default() -> CheckConfig {
        CheckConfig {
            initial: BTreeMap::new(),
            search_steps_max: SEARCH_STEPS_MAX_DEFAULT,
            shrink_search_steps_max: SHRINK_SEARCH_STEPS_MAX_DEFAULT,
        }
    }
}

/// Checks `history` with the default [`CheckConfig`] (all keys start absent).
pub fn check(history: &[Op]) -> Result<Report, HistoryError> {
    check_with(history, &CheckConfig::default())
}

/// Checks `history`; refuses it if an operation is malformed (see [`Op::validate`]).
pub fn check_with(history: &[Op], config: &CheckConfig) -> Result<Report, HistoryError> {
    validate(history)?;
    let keys = split_by_key(history, &config.initial).iter().map(|key| check_key(history, key, config)).collect();
    Ok(Report { keys })
}

fn check_key(history: &[Op], key: &KeyHistory, config: &CheckConfig) -> KeyReport {
    let outcome = search(&key.ops, key.initial, config.search_steps_max);
    let verdict = match outcome.result {
        SearchResult::Linearizable { .. } => KeyVerdict::Linearizable,
        SearchResult::Unknown => KeyVerdict::Unknown,
        SearchResult::NotLinearizable { longest, blocked } => {
            let found = Explanation { longest, blocked };
            KeyVerdict::NotLinearizable(Box::new(violation(history, key, found, config)))
        }
    };
    KeyReport { key: key.key.clone(), ops_checked: key.ops.len(), search_steps: outcome.steps, verdict }
}

/// A failed search's longest partial linearization, as positions in the searched slice.
struct Explanation {
    longest: Vec<u32>,
    blocked: Option<u32>,
}

fn violation(history: &[Op], key: &KeyHistory, full: Explanation, config: &CheckConfig) -> Violation {
    let blocked_ret = full.blocked.and_then(|op| key.ops.get(op as usize)).map(|op| op.ret);
    let shrunk = shrink(key, &full.longest, blocked_ret, config.search_steps_max, config.shrink_search_steps_max);
    let cut_ops = full.longest[..shrunk.cut].iter().map(|&position| &history[key.ops[position as usize].index]);
    let initial = cut_ops.fold(key.initial_value.clone(), |state, op| apply_to_value(op, state));
    let ops = key.sub_history(&shrunk.kept, shrunk.initial);
    // The full search's explanation is the same when nothing was cut or shrunk away (re-bounding
    // Info writes over the same operations gives the same bounds).
    let explanation =
        if ops.len() == key.ops.len() { full } else { explain(&ops, shrunk.initial, config.search_steps_max) };
    let numbered = |position: u32| {
        let op = ops.get(position as usize)?;
        Some(NumberedOp { index: op.index, op: history[op.index].clone() })
    };
    let linearized: Vec<NumberedOp> = explanation.longest.iter().filter_map(|&position| numbered(position)).collect();
    let state_after = linearized.iter().fold(initial.clone(), |state, op| apply_to_value(&op.op, state));
    Violation {
        key: key.key.clone(),
        ops_before: shrunk.cut,
        initial,
        ops: (0..ops.len() as u32).filter_map(numbered).collect(),
        shrink_complete: shrunk.complete,
        linearized,
        state_after,
        blocked: explanation.blocked.and_then(numbered),
    }
}

/// Searches a sub-history already known to fail, for its longest partial linearization.
fn explain(ops: &[KeyOp], initial: StateId, steps_max: u64) -> Explanation {
    match search(ops, initial, steps_max).result {
        SearchResult::NotLinearizable { longest, blocked } => Explanation { longest, blocked },
        // Unreachable: the shrinker kept only sub-histories that failed within this budget, and
        // the search is deterministic. Report no explanation rather than a wrong one.
        SearchResult::Linearizable { .. } | SearchResult::Unknown => Explanation { longest: Vec::new(), blocked: None },
    }
}
