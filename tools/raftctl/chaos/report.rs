//! What a chaos run prints at the end: the summary, and for a violation the failing sub-history
//! (times in seconds since the start of the run) with the fault timeline around it.
//!
//! The summary is one labelled line per fact, then one `chaos: PASS|FAIL|UNKNOWN ...` line with
//! every number that matters in `name=value` form, for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mini_raft::history::{KeyVerdict, Op, OpKind, Outcome, Report, Verdict, Violation};

use super::executor::Event;
use super::mesh::Mesh;
use super::verify::LostWrite;

/// How much timeline before a violation's first operation is shown, in µs.
const TIMELINE_BEFORE_US: u64 = 3_000_000;
/// ...and after its last return.
const TIMELINE_AFTER_US: u64 = 1_000_000;
/// Most lost writes listed one by one.
const LOST_LISTED_MAX: usize = 10;

/// Seconds since the start of the run, to the microsecond: `12.003456s`.
pub fn time_text(us: u64) -> String {
    format!("{}.{:06}s", us / 1_000_000, us % 1_000_000)
}

/// Operations by outcome and by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
}

pub fn counts(history: &[Op]) -> Counts {
    let mut counts = Counts::default();
    for op in history {
        counts.total += 1;
        match op.outcome {
            Outcome::Ok(_) => counts.ok += 1,
            Outcome::Fail => counts.fail += 1,
            Outcome::Info => counts.info += 1,
        }
        *counts.by_kind.entry(op.kind.name()).or_default() += 1;
    }
    counts
}

/// Acknowledged writes: the effective ones that can be lost.
pub fn acknowledged_writes(history: &[Op]) -> usize {
    history.iter().filter(|op| !matches!(op.kind, OpKind::Get) && matches!(op.outcome, Outcome::Ok(_))).count()
}

/// The checker's verdict as the summary names it.
pub fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Linearizable => "LINEARIZABLE",
        Verdict::NotLinearizable => "NOT LINEARIZABLE",
        Verdict::Unknown => "UNKNOWN",
    }
}

/// The checker's line: verdict, keys, steps, and which keys ran out of budget.
pub fn checker_line(report: &Report, ops: usize, seconds: f64) -> String {
    let steps: u64 = report.keys.iter().map(|key| key.search_steps).sum();
    let unknown: Vec<String> = report
        .keys
        .iter()
        .filter(|key| matches!(key.verdict, KeyVerdict::Unknown))
        .map(|key| String::from_utf8_lossy(&key.key).into_owned())
        .collect();
    let mut line = format!(
        "{} ({} keys, {ops} ops, {steps} search steps, {seconds:.2} s)",
        verdict_name(report.verdict()),
        report.keys.len()
    );
    if !unknown.is_empty() {
        let _ = write!(line, "; search budget exhausted on {}", unknown.join(", "));
    }
    line
}

/// A violation, then the fault timeline from a little before its first call to a little after
/// its last return, with the faults already active when that window opens.
pub fn render_violation(violation: &Violation, events: &[Event]) -> String {
    let mut text = violation.render(&time_text);
    let first = violation.ops.iter().map(|op| op.op.call).min().unwrap_or(0);
    let last = violation.ops.iter().filter_map(|op| op.op.ret).max().unwrap_or(first);
    let (from, to) = (first.saturating_sub(TIMELINE_BEFORE_US), last.saturating_add(TIMELINE_AFTER_US));
    let mut active: BTreeMap<u32, &Event> = BTreeMap::new();
    for event in events.iter().filter(|event| event.at_us < from) {
        match event.fault {
            Some((id, true)) => {
                active.insert(id, event);
            }
            Some((id, false)) => {
                active.remove(&id);
            }
            None => {}
        }
    }
    let _ = writeln!(text, "fault timeline from {} to {}:", time_text(from), time_text(to));
    for event in active.values() {
        let _ = writeln!(text, "  (active) {}", event.line);
    }
    let window: Vec<&Event> = events.iter().filter(|event| (from..=to).contains(&event.at_us)).collect();
    for event in &window {
        let _ = writeln!(text, "  {}", event.line);
    }
    if active.is_empty() && window.is_empty() {
        let _ = writeln!(text, "  (no fault active or injected)");
    }
    text
}

/// The lost writes, the first few one per line.
pub fn render_lost(lost: &[LostWrite], history: &[Op]) -> String {
    let mut text = String::new();
    for write in lost.iter().take(LOST_LISTED_MAX) {
        let Some(op) = history.get(write.index) else { continue };
        let final_value = write
            .final_value
            .as_ref()
            .map_or_else(|| "absent".to_string(), |value| format!("\"{}\"", String::from_utf8_lossy(value)));
        let _ = writeln!(text, "  lost: #{} {}; the key ended {final_value}", write.index, op.describe(&time_text));
    }
    if lost.len() > LOST_LISTED_MAX {
        let _ = writeln!(text, "  ... and {} more", lost.len() - LOST_LISTED_MAX);
    }
    text
}

/// The links' traffic, in one line.
pub fn links_line(mesh: &Mesh) -> String {
    let counters = mesh.counters();
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    format!(
        "{:.1} MiB forward, {:.1} MiB backward, {} connections accepted, {} reset",
        mib(counters.bytes_forward),
        mib(counters.bytes_backward),
        counters.connections_accepted,
        counters.connections_reset
    )
}

/// `kill 2, pause 1, ...`, or `none`.
pub fn tally(counts: &BTreeMap<&'static str, u32>) -> String {
    if counts.is_empty() {
        return "none".to_string();
    }
    counts.iter().map(|(name, count)| format!("{name} {count}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mini_raft::history::{check, OpResult};

    fn set(client: u64, value: &str, call: u64, ret: u64) -> Op {
        let kind = OpKind::Set { value: Bytes::from(value.to_string()) };
        Op { client, key: Bytes::from("k"), call, ret: Some(ret), kind, outcome: Outcome::Ok(OpResult::Set) }
    }

    #[test]
    fn times_are_seconds_to_the_microsecond() {
        assert_eq!(time_text(0), "0.000000s");
        assert_eq!(time_text(12_003_456), "12.003456s");
    }

    #[test]
    fn a_violation_comes_with_the_faults_around_it() {
        let value = Some(Bytes::from("a"));
        let stale =
            Op { kind: OpKind::Get, outcome: Outcome::Ok(OpResult::Get { value }), ..set(3, "", 5_000_000, 5_000_100) };
        let history = vec![set(1, "a", 4_000_000, 4_000_100), set(2, "b", 4_500_000, 4_500_100), stale];
        let report = check(&history).unwrap();
        let violation = report.violations().next().unwrap();
        let event = |at_us, fault, line: &str| Event { at_us, fault, line: line.to_string() };
        let events = vec![
            event(100_000, Some((1, true)), "START #1 kill n1"),
            event(200_000, Some((1, false)), "HEAL  #1"),
            event(500_000, Some((2, true)), "START #2 partition isolate [n3 -/- the others]"),
            event(4_800_000, Some((2, false)), "HEAL  #2"),
            event(9_000_000, Some((3, true)), "START #3 pause n2"),
        ];
        let text = render_violation(violation, &events);
        assert!(text.contains("4.500000s"), "{text}");
        assert!(text.contains("fault timeline from 1.000000s to 6.000100s"), "{text}");
        assert!(text.contains("(active) START #2 partition"), "{text}");
        assert!(text.contains("HEAL  #2") && !text.contains("kill n1") && !text.contains("pause n2"), "{text}");
    }
}
