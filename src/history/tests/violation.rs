//! What a violation reports: the shrunk sub-history, the partial linearization, the rendering.

use super::*;
use crate::raft::rng::Rng;

/// A stale read hidden among `noise_ops` linearizable operations on the same key and others.
fn stale_read_in_noise(noise_ops: u64) -> (Vec<Op>, [usize; 2]) {
    let mut rng = Rng::new(7);
    let mut history = Vec::new();
    let mut time = 0;
    for i in 0..noise_ops {
        // The last one on "k": the stale read returns it.
        let key = if i + 1 == noise_ops || rng.chance(1, 2) { "k" } else { "other" };
        let value = format!("n{i}");
        history.push(set(1, key, &value, time, time + 3));
        history.push(get(2, key, Some(&value), time + 4, time + 6));
        time += 10;
    }
    let missed = history.len();
    history.push(set(1, "k", "missed", time, time + 5));
    let stale = history.len();
    history.push(get(2, "k", Some(&format!("n{}", noise_ops - 1)), time + 8, time + 9));
    for i in 0..noise_ops {
        time += 10;
        history.push(set(3, "k", &format!("after{i}"), time, time + 5));
    }
    (history, [missed, stale])
}

#[test]
fn stale_read_shrinks_to_the_read_and_the_write_it_missed() {
    let (history, [missed, stale]) = stale_read_in_noise(200);
    let report = check(&history).unwrap();
    assert_eq!(report.verdict(), Verdict::NotLinearizable);
    let violation = report.violations().next().unwrap();
    assert_eq!(violation.key, b("k"));
    let indexes: Vec<usize> = violation.ops.iter().map(|op| op.index).collect();
    assert!(indexes.contains(&stale), "{violation}");
    assert!(indexes.contains(&missed), "{violation}");
    // Besides those two, only the write of the value the stale read returned is needed.
    assert_eq!(indexes.len(), 3, "{violation}");
    assert!(violation.shrink_complete);
    for numbered in &violation.ops {
        assert_eq!(numbered.op, history[numbered.index]);
    }
    // The stale value's write and "missed" linearize; the stale read cannot follow them.
    assert_eq!(violation.linearized.len(), 2, "{violation}");
    assert_eq!(violation.state_after, Some(b("missed")));
    assert_eq!(violation.blocked.as_ref().map(|op| op.index), Some(stale));
}

#[test]
fn shrinking_within_a_tiny_budget_still_reports_a_failing_sub_history() {
    let (history, [_, stale]) = stale_read_in_noise(100);
    let config = CheckConfig { shrink_search_steps_max: 10, ..CheckConfig::default() };
    let report = check_with(&history, &config).unwrap();
    let violation = report.violations().next().unwrap();
    assert!(!violation.shrink_complete);
    assert!(violation.ops.iter().any(|op| op.index == stale));
    let sub_history: Vec<Op> = violation.ops.iter().map(|op| op.op.clone()).collect();
    assert_eq!(verdict(&sub_history), Verdict::NotLinearizable);
}

#[test]
fn concurrent_cas_race_shrinks_to_the_two_winners_and_the_write() {
    let history = [
        set(1, "k", "a", 0, 10),
        get(4, "k", Some("a"), 11, 12),
        cas_ok(2, "k", Some("a"), "b", 20, 40),
        cas_ok(3, "k", Some("a"), "c", 25, 45),
        get(4, "k", Some("c"), 50, 60),
    ];
    let report = check(&history).unwrap();
    let violation = report.violations().next().unwrap();
    let indexes: Vec<usize> = violation.ops.iter().map(|op| op.index).collect();
    assert_eq!(indexes, [0, 2, 3], "{violation}");
}

#[test]
fn violation_renders_one_line_per_op_with_escaped_truncated_values() {
    let long = "x".repeat(40);
    let history = [
        set(1, "k1", &long, 0, 10),
        set(3, "k1", "b\"q\n", 12_003, 12_104),
        Op { ret: None, ..get(2, "k1", Some(&long), 20_000, 0) },
    ];
    let report = check(&history).unwrap();
    let violation = report.violations().next().unwrap();
    let seconds = |t: u64| format!("{:.3}", t as f64 / 1000.0);
    let text = violation.render(&seconds);
    let cut = format!("\"{}\"...(40 bytes)", "x".repeat(32));
    let expected = [
        "key k1 is not linearizable; failing sub-history of 3 ops (minimal), initial state absent:".to_string(),
        format!("  #0      client 1  set k1 {cut}  [0.000 .. 0.010]  -> ok"),
        r#"  #1      client 3  set k1 "b\"q\x0a"  [12.003 .. 12.104]  -> ok"#.to_string(),
        format!("  #2      client 2  get k1  [20.000 .. ?]  -> {cut}"),
        r#"longest linearizable prefix (2 ops), leaving state "b\"q\x0a":"#.to_string(),
    ];
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..5], expected, "{text}");
    assert_eq!(lines.last(), Some(&format!("  #2      client 2  get k1  [20.000 .. ?]  -> {cut}").as_str()));
    // Display uses the raw times.
    assert!(violation.to_string().contains("[12003 .. 12104]"));
    assert!(report.to_string().starts_with("NOT linearizable: 1 keys, 1 violated, 0 unknown"));
    let cas = cas_failed(3, "k1", Some("a"), "b", Some("c"), 12_003, 12_104);
    let cas_line = r#"client 3  cas k1 "a"->"b"  [12.003 .. 12.104]  -> Failed(current="c")"#;
    assert_eq!(cas.describe(&seconds), cas_line);
}

#[test]
fn outcomes_render_distinctly() {
    let lines = [
        (info(set(1, "k", "a", 1, 2)), "client 1  set k \"a\"  [1 .. ?]  -> info (unknown)"),
        (fail(delete(1, "k", true, 1, 2)), "client 1  delete k  [1 .. 2]  -> fail (no effect)"),
        (delete(1, "k", false, 1, 2), "client 1  delete k  [1 .. 2]  -> existed=false"),
        (cas_ok(1, "k", None, "n", 1, 2), "client 1  cas k absent->\"n\"  [1 .. 2]  -> Ok"),
        (get(1, "k\u{1}", Some("v"), 1, 2), "client 1  get k\\x01  [1 .. 2]  -> \"v\""),
    ];
    for (op, line) in lines {
        assert_eq!(op.to_string(), line);
    }
}

#[test]
fn shrinking_does_not_blame_operations_whose_writes_it_removed() {
    // Two overlapping deletes each found a value, explained by different writes ("b", then "c"
    // written between them). Dropping "c" would make a failing sub-history of its own, "two
    // deletes consumed one write", which is not the real violation: the stale read at the end.
    let history = [
        set(1, "k", "a", 0, 10),
        set(1, "k", "b", 20, 30),
        delete(2, "k", true, 40, 100),
        delete(3, "k", true, 50, 60),
        set(1, "k", "c", 61, 70),
        set(1, "k", "x", 200, 201),
        set(1, "k", "y", 202, 203),
        get(2, "k", Some("x"), 204, 205),
    ];
    let report = check(&history).unwrap();
    let violation = report.violations().next().unwrap();
    let indexes: Vec<usize> = violation.ops.iter().map(|op| op.index).collect();
    assert_eq!(indexes, [5, 6, 7], "{violation}");
}

#[test]
fn long_history_is_cut_before_shrinking_and_chains_leading_to_the_violation_dropped() {
    // 1500 sequential sets, a chain of cas each expecting the previous one's value, and a stale
    // read of a value the last cas wrote. Only the last three operations matter; the chain only
    // leads to the state the first of them expects.
    let mut history: Vec<Op> = (0..1500).map(|t| set(1, "k", &format!("n{t}"), t * 10, t * 10 + 5)).collect();
    let mut previous = "n1499".to_string();
    for t in 1500..1520 {
        let next = format!("c{t}");
        history.push(cas_ok(2, "k", Some(&previous), &next, t * 10, t * 10 + 5));
        previous = next;
    }
    let [new, stale] = [history.len() + 1, history.len() + 2];
    history.extend([cas_ok(1, "k", Some("c1519"), "old", 20_000, 20_005), set(1, "k", "new", 20_010, 20_015)]);
    history.push(get(2, "k", Some("old"), 20_020, 20_025));
    let report = check(&history).unwrap();
    let violation = report.violations().next().unwrap();
    let indexes: Vec<usize> = violation.ops.iter().map(|op| op.index).collect();
    // Everything before "new" was linearized (in order) and cut; the state it left, "old", is
    // what the stale read returned.
    assert_eq!(indexes, [new, stale], "{violation}");
    assert!(violation.shrink_complete);
    assert_eq!(violation.ops_before, 1521);
    assert_eq!(violation.initial, Some(b("old")));
    assert!(violation.to_string().contains("state after 1521 earlier ops \"old\""), "{violation}");
}
