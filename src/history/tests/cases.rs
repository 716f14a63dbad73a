//! Hand-written histories whose answer is known. Times are small integers; a client's operations
//! never overlap.

use std::collections::BTreeMap;

use super::*;

#[test]
fn empty_history_is_linearizable() {
    let report = check(&[]).unwrap();
    assert_eq!(report.verdict(), Verdict::Linearizable);
    assert!(report.keys.is_empty());
}

#[test]
fn sequential_operations_of_every_kind() {
    assert_linearizable(&[
        get(1, "k", None, 0, 1),
        set(1, "k", "a", 2, 3),
        get(2, "k", Some("a"), 4, 5),
        cas_ok(1, "k", Some("a"), "b", 6, 7),
        cas_failed(2, "k", Some("a"), "c", Some("b"), 8, 9),
        delete(1, "k", true, 10, 11),
        delete(2, "k", false, 12, 13),
        cas_ok(1, "k", None, "d", 14, 15),
        get(2, "k", Some("d"), 16, 17),
    ]);
}

#[test]
fn sequential_read_of_the_wrong_value() {
    assert_not_linearizable(&[set(1, "k", "a", 0, 1), set(1, "k", "b", 2, 3), get(2, "k", Some("a"), 4, 5)]);
}

#[test]
fn concurrent_set_and_get_may_go_either_way() {
    // The get overlaps the set, so it may see the value before or after it.
    for seen in [None, Some("a")] {
        assert_linearizable(&[set(1, "k", "a", 0, 10), get(2, "k", seen, 5, 15)]);
    }
}

#[test]
fn stale_read_after_a_completed_set() {
    // The get starts after set("b") completed, yet returns the older "a".
    assert_not_linearizable(&[set(1, "k", "a", 0, 10), set(1, "k", "b", 20, 30), get(2, "k", Some("a"), 40, 50)]);
}

#[test]
fn lost_write_never_visible_to_later_reads() {
    // set("b") completed, then two clients keep reading the previous value.
    assert_not_linearizable(&[
        set(1, "k", "a", 0, 10),
        set(2, "k", "b", 20, 30),
        get(3, "k", Some("a"), 35, 40),
        get(1, "k", Some("a"), 45, 50),
    ]);
    // Same with the key absent before the write.
    assert_not_linearizable(&[set(1, "k", "b", 0, 10), get(2, "k", None, 20, 30)]);
}

#[test]
fn read_of_a_value_never_written() {
    assert_not_linearizable(&[set(1, "k", "a", 0, 10), get(2, "k", Some("z"), 5, 15)]);
}

#[test]
fn two_cas_with_the_same_expected_cannot_both_succeed() {
    assert_not_linearizable(&[
        set(1, "k", "a", 0, 10),
        cas_ok(2, "k", Some("a"), "b", 20, 40),
        cas_ok(3, "k", Some("a"), "c", 25, 45),
    ]);
}

#[test]
fn racing_cas_one_wins_one_sees_the_winner() {
    assert_linearizable(&[
        set(1, "k", "a", 0, 10),
        cas_ok(2, "k", Some("a"), "b", 20, 40),
        cas_failed(3, "k", Some("a"), "c", Some("b"), 25, 45),
        get(1, "k", Some("b"), 50, 60),
    ]);
}

#[test]
fn failed_cas_reporting_a_state_that_never_was() {
    assert_not_linearizable(&[
        set(1, "k", "a", 0, 10),
        cas_ok(2, "k", Some("a"), "b", 20, 40),
        cas_failed(3, "k", Some("a"), "c", Some("a"), 25, 45),
    ]);
    // A failed cas must see something other than what it expected.
    assert_not_linearizable(&[cas_failed(3, "k", None, "c", None, 0, 1)]);
}

#[test]
fn cas_expecting_absent() {
    assert_linearizable(&[cas_ok(1, "k", None, "a", 0, 1), get(2, "k", Some("a"), 2, 3)]);
    assert_not_linearizable(&[set(1, "k", "a", 0, 1), cas_ok(2, "k", None, "b", 2, 3)]);
}

#[test]
fn delete_must_report_existence_truthfully() {
    assert_linearizable(&[set(1, "k", "a", 0, 1), delete(2, "k", true, 2, 3), get(1, "k", None, 4, 5)]);
    assert_not_linearizable(&[set(1, "k", "a", 0, 1), delete(2, "k", false, 2, 3)]);
    assert_not_linearizable(&[delete(2, "k", true, 2, 3)]);
    // After a delete the value is gone.
    assert_not_linearizable(&[set(1, "k", "a", 0, 1), delete(2, "k", true, 2, 3), get(1, "k", Some("a"), 4, 5)]);
}

#[test]
fn info_write_assumed_to_have_happened_explains_a_read() {
    // The set never replied, but a later read shows its value: it happened.
    assert_linearizable(&[set(1, "k", "a", 0, 1), info(set(2, "k", "b", 5, 6)), get(3, "k", Some("b"), 100, 110)]);
    // An Info delete can explain a read of absent; an Info cas a read of its new value.
    assert_linearizable(&[set(1, "k", "a", 0, 1), info(delete(2, "k", true, 5, 6)), get(3, "k", None, 10, 11)]);
    assert_linearizable(&[
        set(1, "k", "a", 0, 1),
        info(cas_ok(2, "k", Some("a"), "b", 5, 6)),
        get(3, "k", Some("b"), 10, 11),
    ]);
}

#[test]
fn info_write_may_also_never_have_happened() {
    assert_linearizable(&[set(1, "k", "a", 0, 1), info(set(2, "k", "b", 5, 6)), get(3, "k", Some("a"), 100, 110)]);
}

#[test]
fn info_write_no_position_can_explain() {
    // Invoked after the read returned: it cannot be what the read saw.
    assert_not_linearizable(&[info(set(1, "k", "b", 20, 21)), get(2, "k", Some("b"), 0, 10)]);
    // The first read needs it early, and then nothing writes "a" again for the second read.
    assert_not_linearizable(&[
        set(1, "k", "a", 0, 1),
        info(set(2, "k", "b", 2, 3)),
        get(3, "k", Some("b"), 4, 5),
        get(3, "k", Some("a"), 6, 7),
    ]);
    // An Info cas whose expected value was never there cannot produce its new value.
    assert_not_linearizable(&[
        set(1, "k", "a", 0, 1),
        info(cas_ok(2, "k", Some("x"), "b", 2, 3)),
        get(3, "k", Some("b"), 4, 5),
    ]);
}

#[test]
fn info_write_nothing_reads_can_still_explain_a_delete() {
    // Nothing reads "z", but the delete saw *some* value, which only the Info set can have left.
    assert_linearizable(&[info(set(1, "k", "z", 0, 1)), delete(2, "k", true, 5, 6)]);
    assert_not_linearizable(&[info(set(1, "k", "z", 10, 11)), delete(2, "k", true, 5, 6)]);
}

#[test]
fn info_reads_constrain_nothing() {
    assert_linearizable(&[set(1, "k", "a", 0, 1), info(get(2, "k", Some("nonsense"), 2, 3))]);
}

#[test]
fn failed_operations_are_ignored() {
    // A refused set does not hide the earlier value...
    assert_linearizable(&[set(1, "k", "a", 0, 1), fail(set(2, "k", "b", 2, 3)), get(3, "k", Some("a"), 4, 5)]);
    // ...and cannot explain a read of its value.
    assert_not_linearizable(&[set(1, "k", "a", 0, 1), fail(set(2, "k", "b", 2, 3)), get(3, "k", Some("b"), 4, 5)]);
    // Its (meaningless) result is not checked either.
    assert_linearizable(&[fail(get(1, "k", Some("x"), 0, 1))]);
}

#[test]
fn return_at_the_instant_of_a_call_is_concurrent() {
    // set returns at 5, get is invoked at 5: concurrent, so the get may precede the set.
    assert_linearizable(&[set(1, "k", "a", 0, 5), get(2, "k", None, 5, 9)]);
    // One unit later the set strictly happened before.
    assert_not_linearizable(&[set(1, "k", "a", 0, 5), get(2, "k", None, 6, 9)]);
    // Zero-length operations at the same instant are concurrent with each other too.
    assert_linearizable(&[set(1, "k", "a", 5, 5), get(2, "k", None, 5, 5), get(3, "k", Some("a"), 5, 5)]);
}

#[test]
fn ok_without_return_time_is_pending_forever() {
    let late_reply = Op { ret: None, ..get(2, "k", Some("a"), 0, 1) };
    assert_linearizable(&[late_reply.clone(), set(1, "k", "a", 10, 11)]);
    let wrong = Op { ret: None, ..get(2, "k", Some("z"), 0, 1) };
    assert_not_linearizable(&[wrong, set(1, "k", "a", 10, 11)]);
}

#[test]
fn initial_values_from_the_config() {
    let config = CheckConfig { initial: BTreeMap::from([(b("k"), b("v0"))]), ..CheckConfig::default() };
    let read_initial = [get(1, "k", Some("v0"), 0, 1), delete(1, "k", true, 2, 3)];
    assert_eq!(check_with(&read_initial, &config).unwrap().verdict(), Verdict::Linearizable);
    assert_eq!(verdict(&read_initial), Verdict::NotLinearizable);
    let read_absent = [get(1, "k", None, 0, 1)];
    assert_eq!(check_with(&read_absent, &config).unwrap().verdict(), Verdict::NotLinearizable);
}

#[test]
fn keys_are_judged_separately() {
    let history = [
        set(1, "good", "a", 0, 1),
        set(1, "bad", "a", 2, 3),
        get(2, "good", Some("a"), 4, 5),
        get(2, "bad", None, 6, 7),
        fail(set(3, "only-failed", "x", 0, 1)),
    ];
    let report = check(&history).unwrap();
    assert_eq!(report.verdict(), Verdict::NotLinearizable);
    assert!(matches!(report.key(b"good").unwrap().verdict, KeyVerdict::Linearizable));
    assert!(matches!(report.key(b"bad").unwrap().verdict, KeyVerdict::NotLinearizable(_)));
    let only_failed = report.key(b"only-failed").unwrap();
    assert!(matches!(only_failed.verdict, KeyVerdict::Linearizable));
    assert_eq!(only_failed.ops_checked, 0);
    assert_eq!(report.violations().count(), 1);
}

#[test]
fn exhausted_budget_is_unknown_not_a_verdict() {
    let history = [set(1, "k", "a", 0, 10), get(2, "k", Some("a"), 5, 15), get(3, "k", None, 20, 30)];
    let config = CheckConfig { search_steps_max: 1, ..CheckConfig::default() };
    let report = check_with(&history, &config).unwrap();
    assert_eq!(report.verdict(), Verdict::Unknown);
    assert!(matches!(report.keys[0].verdict, KeyVerdict::Unknown));
    assert_eq!(report.keys[0].search_steps, 1);
    // A violation on another key still wins over an unknown one: "j" fails within 10 steps,
    // 20 sequential operations on "k" need more.
    let mut with_violation: Vec<Op> = (0..20).map(|t| set(1, "k", "a", t * 2, t * 2 + 1)).collect();
    with_violation.extend([set(1, "j", "a", 0, 1), get(2, "j", None, 2, 3)]);
    let config = CheckConfig { search_steps_max: 10, ..CheckConfig::default() };
    let report = check_with(&with_violation, &config).unwrap();
    assert!(matches!(report.key(b"k").unwrap().verdict, KeyVerdict::Unknown));
    assert_eq!(report.verdict(), Verdict::NotLinearizable);
}

#[test]
fn malformed_operations_are_refused() {
    let backwards = set(1, "k", "a", 10, 5);
    let error = check(&[get(1, "k", None, 0, 1), backwards]).unwrap_err();
    assert_eq!(error.index, 1);
    let mismatched = Op { outcome: Outcome::Ok(OpResult::Delete { existed: true }), ..set(1, "k", "a", 0, 1) };
    assert_eq!(check(&[mismatched]).unwrap_err().index, 0);
    // A Fail operation carries no result to mismatch, but its times still have to make sense.
    assert_eq!(check(&[fail(set(1, "k", "a", 10, 5))]).unwrap_err().index, 0);
}

#[test]
fn interchangeable_info_writes_can_each_be_used_once() {
    let reads_absent_twice = |info_deletes: u64| {
        let mut history: Vec<Op> = (0..info_deletes).map(|client| info(delete(10 + client, "k", true, 0, 0))).collect();
        history.extend([
            set(1, "k", "a", 1, 2),
            get(2, "k", None, 3, 4),
            set(1, "k", "b", 5, 6),
            get(2, "k", None, 7, 8),
        ]);
        history
    };
    assert_not_linearizable(&reads_absent_twice(1));
    assert_linearizable(&reads_absent_twice(2));
    assert_linearizable(&reads_absent_twice(40));
}

#[test]
fn many_pending_info_writes_do_not_blow_up_a_refutation() {
    // 40 Info deletes and 40 Info sets of one value, pending forever, and a stale read: 2^80 sets
    // of them, unless interchangeable writes are only tried in call order.
    let mut history: Vec<Op> = Vec::new();
    for client in 0..40 {
        history.push(info(delete(100 + client, "k", true, client, client)));
        history.push(info(set(200 + client, "k", "v", client, client)));
    }
    // Reads that each need one of them, so that none can be dropped as unobserved.
    history.extend([get(3, "k", Some("v"), 45, 46), get(3, "k", None, 47, 48)]);
    history.extend([set(1, "k", "old", 50, 51), set(1, "k", "new", 60, 61), get(2, "k", Some("old"), 70, 71)]);
    let config = CheckConfig { search_steps_max: 1_000_000, ..CheckConfig::default() };
    assert_eq!(check_with(&history, &config).unwrap().verdict(), Verdict::NotLinearizable);
}
