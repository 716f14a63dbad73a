//! The checker's verdicts and their human-readable rendering.
//!
//! Times are shown in the caller's unit. [`Display`](fmt::Display) prints them as raw integers;
//! [`Violation::render`] and [`Op::describe`] take a formatter so a caller can show them relative
//! to its own timeline (for example seconds since the start of a chaos run).

use std::fmt::{self, Write as _};

use bytes::Bytes;

use super::{CasResult, Op, OpKind, OpResult, Outcome};
use crate::kv::escape_bytes;

/// Longest key or value shown in a rendering, in bytes; longer ones are cut and their length given.
pub const DISPLAY_BYTES_MAX: usize = 32;

/// The overall verdict of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// At least one key has no linearization.
    NotLinearizable,
    /// No key is known to be violated, but at least one ran out of search budget.
    Unknown,
}

/// The result of checking a whole history: one entry per key, in key order.
#[derive(Clone, Debug)]
pub struct Report {
    pub keys: Vec<KeyReport>,
}

/// The result for one key.
#[derive(Clone, Debug)]
pub struct KeyReport {
    pub key: Bytes,
    /// Operations that took part in the search (Fail operations, Info gets and Info writes nothing
    /// could observe are left out).
    pub ops_checked: usize,
    /// Steps of the main search (shrinking a violation not included).
    pub search_steps: u64,
    pub verdict: KeyVerdict,
}

#[derive(Clone, Debug)]
pub enum KeyVerdict {
    Linearizable,
    NotLinearizable(Box<Violation>),
    /// The search budget ran out before an answer ([`super::CheckConfig::search_steps_max`]).
    Unknown,
}

/// An operation together with its position in the checked history (its line number minus one
/// when the history came from JSON lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberedOp {
    pub index: usize,
    pub op: Op,
}

/// Evidence that one key's history is not linearizable.
#[derive(Clone, Debug)]
pub struct Violation {
    pub key: Bytes,
    /// How many operations of the key were linearized, and cut away, before `initial`: 0 unless
    /// the key's history was long, in which case only a window before the point where the search
    /// got stuck is shrunk (the search proved that no continuation of those operations, as
    /// linearized, exists).
    pub ops_before: usize,
    /// The key's state before `ops`: its initial state, or the one the cut operations leave.
    pub initial: Option<Bytes>,
    /// A failing sub-history of the key, by call time: not linearizable from `initial`, and it
    /// keeps a write for each of its reads that one could explain in the history it came from.
    pub ops: Vec<NumberedOp>,
    /// True if shrinking finished: removing any single operation from `ops` (keeping observed
    /// values written) makes it linearizable. False if the shrink budget ran out first.
    pub shrink_complete: bool,
    /// The longest linearizable prefix of `ops` found, in linearization order.
    pub linearized: Vec<NumberedOp>,
    /// The state after `linearized`.
    pub state_after: Option<Bytes>,
    /// The operation whose return was reached after `linearized` with nothing that could be
    /// linearized next: it, or an operation concurrent with it, cannot be explained.
    pub blocked: Option<NumberedOp>,
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        if self.violations().next().is_some() {
            Verdict::NotLinearizable
        } else if self.keys.iter().any(|key| matches!(key.verdict, KeyVerdict::Unknown)) {
            Verdict::Unknown
        } else {
            Verdict::Linearizable
        }
    }

    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.keys.iter().filter_map(|key| match &key.verdict {
            KeyVerdict::NotLinearizable(violation) => Some(&**violation),
            _ => None,
        })
    }

    /// The report of one key, if the history had operations on it.
    pub fn key(&self, key: &[u8]) -> Option<&KeyReport> {
        self.keys.iter().find(|report| report.key == key)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let violated = self.violations().count();
        let unknown = self.keys.iter().filter(|key| matches!(key.verdict, KeyVerdict::Unknown)).count();
        let verdict = match self.verdict() {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "NOT linearizable",
            Verdict::Unknown => "unknown (search budget exhausted)",
        };
        writeln!(f, "{verdict}: {} keys, {violated} violated, {unknown} unknown", self.keys.len())?;
        for key in &self.keys {
            let verdict = match key.verdict {
                KeyVerdict::Linearizable => "linearizable",
                KeyVerdict::NotLinearizable(_) => "NOT linearizable",
                KeyVerdict::Unknown => "unknown",
            };
            let name = display_key(&key.key);
            writeln!(f, "  key {name}: {verdict} ({} ops, {} search steps)", key.ops_checked, key.search_steps)?;
        }
        for violation in self.violations() {
            write!(f, "{violation}")?;
        }
        Ok(())
    }
}

impl Violation {
    /// The violation as text, one operation per line, times formatted by `time`.
    pub fn render(&self, time: &dyn Fn(u64) -> String) -> String {
        let mut text = String::new();
        let completeness = if self.shrink_complete { "minimal" } else { "shrink budget exhausted" };
        let start = match self.ops_before {
            0 => "initial state".to_string(),
            ops => format!("state after {ops} earlier ops"),
        };
        let _ = writeln!(
            text,
            "key {} is not linearizable; failing sub-history of {} ops ({completeness}), {start} {}:",
            display_key(&self.key),
            self.ops.len(),
            display_state(&self.initial),
        );
        for op in &self.ops {
            let _ = writeln!(text, "  {}", op.describe(time));
        }
        let _ = writeln!(
            text,
            "longest linearizable prefix ({} ops), leaving state {}:",
            self.linearized.len(),
            display_state(&self.state_after)
        );
        for op in &self.linearized {
            let _ = writeln!(text, "  {}", op.describe(time));
        }
        if let Some(blocked) = &self.blocked {
            let _ =
                writeln!(text, "then nothing can be linearized before this op returns:\n  {}", blocked.describe(time));
        }
        text
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(&|t| t.to_string()))
    }
}

impl NumberedOp {
    pub fn describe(&self, time: &dyn Fn(u64) -> String) -> String {
        format!("#{:<6} {}", self.index, self.op.describe(time))
    }
}

impl fmt::Display for NumberedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(&|t| t.to_string()))
    }
}

impl Op {
    /// One line, e.g. `client 3  cas k1 "a"->"b"  [12.003 .. 12.104]  -> Failed(current="c")`.
    pub fn describe(&self, time: &dyn Fn(u64) -> String) -> String {
        let key = display_key(&self.key);
        let input = match &self.kind {
            OpKind::Set { value } => format!("set {key} {}", display_value(value)),
            OpKind::Get => format!("get {key}"),
            OpKind::Delete => format!("delete {key}"),
            OpKind::Cas { expected, new } => format!("cas {key} {}->{}", display_state(expected), display_value(new)),
        };
        let ret = self.ret.map_or_else(|| "?".to_string(), time);
        format!(
            "client {}  {input}  [{} .. {ret}]  -> {}",
            self.client,
            time(self.call),
            display_outcome(&self.outcome)
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(&|t| t.to_string()))
    }
}

fn display_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Fail => "fail (no effect)".to_string(),
        Outcome::Info => "info (unknown)".to_string(),
        Outcome::Ok(OpResult::Set) => "ok".to_string(),
        Outcome::Ok(OpResult::Get { value }) => display_state(value),
        Outcome::Ok(OpResult::Delete { existed }) => format!("existed={existed}"),
        Outcome::Ok(OpResult::Cas(CasResult::Ok)) => "Ok".to_string(),
        Outcome::Ok(OpResult::Cas(CasResult::Failed { current })) => {
            format!("Failed(current={})", display_state(current))
        }
    }
}

/// A key, escaped and cut at [`DISPLAY_BYTES_MAX`], unquoted.
fn display_key(key: &[u8]) -> String {
    let mut text = escape_bytes(key, DISPLAY_BYTES_MAX);
    append_cut_length(&mut text, key.len());
    text
}

/// A value, escaped, quoted and cut at [`DISPLAY_BYTES_MAX`].
fn display_value(value: &[u8]) -> String {
    let mut text = format!("\"{}\"", escape_bytes(value, DISPLAY_BYTES_MAX));
    append_cut_length(&mut text, value.len());
    text
}

fn display_state(state: &Option<Bytes>) -> String {
    state.as_ref().map_or_else(|| "absent".to_string(), |value| display_value(value))
}

fn append_cut_length(text: &mut String, len: usize) {
    if len > DISPLAY_BYTES_MAX {
        let _ = write!(text, "...({len} bytes)");
    }
}
