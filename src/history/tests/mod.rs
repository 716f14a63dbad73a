//! Tests of the history checker: hand-written histories with known answers, generated histories
//! (linearizable by construction, and made non-linearizable by one stale read), shrinking and
//! rendering of violations, and the JSON-lines format.

mod cases;
mod generate;
mod json;
mod property;
mod violation;

use bytes::Bytes;

use super::*;

pub(super) fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn ok(client: u64, key: &str, kind: OpKind, call: u64, ret: u64, result: OpResult) -> Op {
    Op { client, key: b(key), call, ret: Some(ret), kind, outcome: Outcome::Ok(result) }
}

pub(super) fn set(client: u64, key: &str, value: &str, call: u64, ret: u64) -> Op {
    ok(client, key, OpKind::Set { value: b(value) }, call, ret, OpResult::Set)
}

pub(super) fn get(client: u64, key: &str, value: Option<&str>, call: u64, ret: u64) -> Op {
    ok(client, key, OpKind::Get, call, ret, OpResult::Get { value: value.map(b) })
}

pub(super) fn delete(client: u64, key: &str, existed: bool, call: u64, ret: u64) -> Op {
    ok(client, key, OpKind::Delete, call, ret, OpResult::Delete { existed })
}

/// A cas that succeeded.
pub(super) fn cas_ok(client: u64, key: &str, expected: Option<&str>, new: &str, call: u64, ret: u64) -> Op {
    let kind = OpKind::Cas { expected: expected.map(b), new: b(new) };
    ok(client, key, kind, call, ret, OpResult::Cas(CasResult::Ok))
}

/// A cas that failed, reporting `current`.
pub(super) fn cas_failed(
    client: u64,
    key: &str,
    expected: Option<&str>,
    new: &str,
    current: Option<&str>,
    call: u64,
    ret: u64,
) -> Op {
    let kind = OpKind::Cas { expected: expected.map(b), new: b(new) };
    ok(client, key, kind, call, ret, OpResult::Cas(CasResult::Failed { current: current.map(b) }))
}

/// `op` with no reply: outcome unknown, no return time.
pub(super) fn info(op: Op) -> Op {
    Op { outcome: Outcome::Info, ret: None, ..op }
}

/// `op` with a reply saying it did not take effect.
pub(super) fn fail(op: Op) -> Op {
    Op { outcome: Outcome::Fail, ..op }
}

pub(super) fn verdict(history: &[Op]) -> Verdict {
    check(history).expect("well-formed history").verdict()
}

pub(super) fn assert_linearizable(history: &[Op]) {
    let report = check(history).expect("well-formed history");
    assert_eq!(report.verdict(), Verdict::Linearizable, "expected linearizable:\n{report}");
}

pub(super) fn assert_not_linearizable(history: &[Op]) {
    let report = check(history).expect("well-formed history");
    assert_eq!(report.verdict(), Verdict::NotLinearizable, "expected a violation:\n{report}");
}
