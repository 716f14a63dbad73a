//! Client histories of the key-value store and a linearizability checker for them.
//!
//! A history is what clients saw: for each operation, who issued it, on which key, when it was
//! invoked (`call`), when it completed (`ret`), its input, and its [`Outcome`]. [`check`] decides
//! whether some total order of the operations (a linearization) exists that respects real time and
//! explains every observed result with a single register per key.
//!
//! # Guarantees
//! - Pure: no I/O, no clock, no threads, no randomness. The caller supplies times in any monotonic
//!   unit; the same history always gives the same [`Report`].
//! - Exact: [`KeyVerdict::Linearizable`] only once a linearization was found,
//!   [`KeyVerdict::NotLinearizable`] only once the search space was exhausted (every pruning
//!   below keeps the answer). When a key's search budget ([`CheckConfig::search_steps_max`]) runs
//!   out first, the verdict is [`KeyVerdict::Unknown`], never a guess.
//! - Bounded: per key at most `search_steps_max` search steps, plus at most
//!   [`CheckConfig::shrink_search_steps_max`] to shrink a violation; memory grows by at most one
//!   cache entry per step.
//! - Never panics on a history: a malformed one (a `ret` before its `call`, a result that does not
//!   belong to the operation's kind) is refused with a [`HistoryError`].
//!
//! # Semantics
//! - Real time: operation A happens before B iff `A.ret < B.call` (strict). An operation returning
//!   at the same instant another one is invoked is *concurrent* with it, so either order is allowed.
//! - [`Outcome::Fail`]: the reply proves the operation did not take effect; it is dropped.
//! - [`Outcome::Info`]: unknown whether it took effect. Its return time is +infinity (its `ret`, if
//!   any, is ignored) and its result is unconstrained. An Info `Get` constrains nothing and is
//!   dropped; an Info write may be linearized anywhere after its `call`, including last, which is
//!   the same as never having happened.
//! - An [`Outcome::Ok`] operation with `ret: None` has a known result but an unknown completion
//!   time: it is treated as returning at +infinity.
//! - The model per key is a register holding `Option<Bytes>`: `Set` stores; `Get` reads; `Delete`
//!   empties it and reports whether it held a value; `Cas` stores `new` iff the register equals
//!   `expected` (`None` = absent), and otherwise fails reporting the current contents. Keys start
//!   absent unless [`CheckConfig::initial`] gives them a value.
//!
//! # Algorithm
//! Keys are independent registers, so each key's sub-history is checked alone (P-compositionality,
//! as in Porcupine). Per key: the Wing–Gong–Lowe search with Lowe's memoization, following
//! Porcupine's `checker.go`: call and return events sorted by time (calls before returns at equal
//! times, which is the strict rule above), a doubly linked list of pending events from which a
//! linearized operation is lifted and into which it is put back on backtracking, a stack to
//! backtrack with, and a cache of (set of linearized operations, register state) pairs already
//! explored. Values are interned into per-key `u32` ids, so states are compared and hashed as
//! integers; sets are `u64`-word bitsets, hashed incrementally (Zobrist) and stored in the cache
//! compactly (their all-ones prefix length and the nonzero words after it), and compared exactly.
//!
//! Info writes are what makes the search explode (each may be linearized anywhere, or never), so
//! four reductions, each argued where it is implemented, keep them in check:
//! - an Info write whose effect no later operation can observe is dropped (`info.rs`);
//! - an Info write that is the only source of a value gets, as return time, the return of the
//!   first operation that observed the value (`info.rs`);
//! - values no operation compares with share one state id (`model.rs`), so writes of them are
//!   interchangeable;
//! - the remaining Info writes are kept out of the event list, grouped into classes of
//!   interchangeable writes tried in call order, and offered only where they change the state
//!   (`deferred.rs`, `search.rs`).
//!
//! Measured in a release build on a shared 2-core machine (`speed_100k_ops_10_keys_8_clients`):
//! 100,000 operations by 8 clients check in 0.06 to 0.15 s on 10 keys and 0.1 to 0.7 s on one
//! key, with or without 2% Info operations. Proving a violation costs more, because the search
//! must exhaust every alternative before the violating operation: 1 to 3 s for 100,000
//! operations on one key. With many Info writes still pending (values written more than once,
//! deletes) that can exceed the budget, and the verdict is then [`KeyVerdict::Unknown`].
//!
//! On a violation the key's sub-history is shrunk greedily (bounded by
//! [`CheckConfig::shrink_search_steps_max`]) to a small failing sub-history, which is then explained
//! by its longest linearizable prefix and the operation that cannot follow it; a long history is
//! first cut to a window before the violation. See [`Violation`] and `shrink.rs`.
//!
//! # JSON lines
//! [`to_json_lines`] and [`parse_json_lines`] store a history one operation per line; the format is
//! documented in [`json`].

mod cache;
mod checker;
mod deferred;
mod events;
mod info;
pub mod json;
mod model;
mod report;
mod requirements;
mod search;
mod shrink;

#[cfg(test)]
mod tests;

use std::fmt;

use bytes::Bytes;

pub use checker::{check, check_with, CheckConfig, SEARCH_STEPS_MAX_DEFAULT, SHRINK_SEARCH_STEPS_MAX_DEFAULT};
pub use json::{op_from_json_line, op_to_json_line, parse_json_lines, to_json_lines, ParseError};
pub use report::{KeyReport, KeyVerdict, NumberedOp, Report, Verdict, Violation, DISPLAY_BYTES_MAX};

/// One client operation as the client observed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: u64,
    pub key: Bytes,
    /// Invocation time, in the caller's unit.
    pub call: u64,
    /// Completion time; `None` when the client never saw a reply.
    pub ret: Option<u64>,
    pub kind: OpKind,
    pub outcome: Outcome,
}

/// What the operation asked for (its input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Set {
        value: Bytes,
    },
    Get,
    Delete,
    /// `expected: None` means "only if absent".
    Cas {
        expected: Option<Bytes>,
        new: Bytes,
    },
}

/// How the operation ended, as far as the client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A definite reply; the result must match the operation's kind.
    Ok(OpResult),
    /// A definite reply proving the operation did not take effect.
    Fail,
    /// No definite reply (timeout, lost connection): it may or may not have taken effect.
    Info,
}

/// The result of a definite reply, one variant per [`OpKind`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    Set,
    /// `None`: the key was absent.
    Get {
        value: Option<Bytes>,
    },
    Delete {
        existed: bool,
    },
    Cas(CasResult),
}

/// The two answers a compare-and-set can give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasResult {
    Ok,
    /// The register did not equal `expected`; `current` is what it held (`None` = absent).
    Failed {
        current: Option<Bytes>,
    },
}

/// Why a history cannot be checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryError {
    /// Position of the offending operation in the history.
    pub index: usize,
    pub reason: String,
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operation #{}: {}", self.index, self.reason)
    }
}

impl std::error::Error for HistoryError {}

impl Op {
    /// Whether the result (if any) belongs to the kind and `ret` is not before `call`.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(ret) = self.ret {
            if ret < self.call {
                return Err(format!("returns at {ret}, before its call at {}", self.call));
            }
        }
        let Outcome::Ok(result) = &self.outcome else { return Ok(()) };
        let matches = matches!(
            (&self.kind, result),
            (OpKind::Set { .. }, OpResult::Set)
                | (OpKind::Get, OpResult::Get { .. })
                | (OpKind::Delete, OpResult::Delete { .. })
                | (OpKind::Cas { .. }, OpResult::Cas(_))
        );
        if matches {
            Ok(())
        } else {
            Err(format!("result {result:?} does not belong to a {} operation", self.kind.name()))
        }
    }
}

impl OpKind {
    /// The lower-case name used in JSON lines and in rendered reports.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Set { .. } => "set",
            OpKind::Get => "get",
            OpKind::Delete => "delete",
            OpKind::Cas { .. } => "cas",
        }
    }
}

/// Checks every operation of `history` with [`Op::validate`].
pub fn validate(history: &[Op]) -> Result<(), HistoryError> {
    for (index, op) in history.iter().enumerate() {
        op.validate().map_err(|reason| HistoryError { index, reason })?;
    }
    Ok(())
}
