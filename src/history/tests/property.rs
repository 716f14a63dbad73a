//! Generated histories: linearizable by construction, then broken by one stale read.

use std::time::Instant;

use super::super::model::split_by_key;
use super::super::search::{search, SearchResult};
use super::generate::{linearizable_history, make_stale_read, Shape};
use super::*;
use crate::raft::rng::Rng;

const SEEDS: u64 = 400;

#[test]
fn generated_histories_are_linearizable() {
    for seed in 0..SEEDS {
        let mut rng = Rng::new(seed);
        let shape = Shape::random(&mut rng);
        let history = linearizable_history(&mut rng, &shape);
        let report = check(&history).unwrap();
        assert_eq!(report.verdict(), Verdict::Linearizable, "seed {seed}, {shape:?}:\n{report}");
        assert_search_orders_replay(&history, seed);
    }
}

#[test]
fn one_stale_read_makes_generated_histories_not_linearizable() {
    let mut mutated = 0;
    for seed in 0..SEEDS {
        let mut rng = Rng::new(seed);
        let shape = Shape::random(&mut rng);
        let mut history = linearizable_history(&mut rng, &shape);
        let Some(stale) = make_stale_read(&mut history) else { continue };
        mutated += 1;
        let report = check(&history).unwrap();
        assert_eq!(report.verdict(), Verdict::NotLinearizable, "seed {seed}, stale read #{stale}:\n{report}");
        let violation = report.violations().next().unwrap();
        assert_eq!(violation.key, history[stale].key, "seed {seed}");
        assert_is_a_failing_sub_history(&history, violation, seed);
    }
    assert!(mutated > SEEDS / 3, "only {mutated} of {SEEDS} histories had a get to make stale");
}

/// The reported sub-history is made of the history's own operations and fails on its own.
fn assert_is_a_failing_sub_history(history: &[Op], violation: &Violation, seed: u64) {
    assert!(!violation.ops.is_empty(), "seed {seed}");
    for numbered in &violation.ops {
        assert_eq!(history[numbered.index], numbered.op, "seed {seed}");
    }
    let sub_history: Vec<Op> = violation.ops.iter().map(|numbered| numbered.op.clone()).collect();
    let initial = violation.initial.iter().map(|value| (violation.key.clone(), value.clone())).collect();
    let config = CheckConfig { initial, ..CheckConfig::default() };
    assert_eq!(
        check_with(&sub_history, &config).unwrap().verdict(),
        Verdict::NotLinearizable,
        "seed {seed}: {violation}"
    );
    assert!(violation.blocked.is_some(), "seed {seed}: {violation}");
    assert!(violation.linearized.len() < violation.ops.len(), "seed {seed}");
}

/// Replays, per key, the order the search found against a separate register model and the
/// real-time rule, so a bug shared by the search and `Step::apply` cannot hide.
fn assert_search_orders_replay(history: &[Op], seed: u64) {
    for key in split_by_key(history, &Default::default()) {
        let SearchResult::Linearizable { order } = search(&key.ops, key.initial, u64::MAX).result else {
            panic!("seed {seed}: key {:?} not linearizable", key.key);
        };
        let ops: Vec<&Op> = order.iter().map(|&position| &history[key.ops[position as usize].index]).collect();
        for (i, earlier) in ops.iter().enumerate() {
            for later in &ops[i + 1..] {
                let later_returned_first =
                    later.outcome != Outcome::Info && later.ret.is_some_and(|r| r < earlier.call);
                assert!(!later_returned_first, "seed {seed}: real-time order broken: {earlier} / {later}");
            }
        }
        let mut register: Option<Bytes> = None;
        for op in ops {
            assert!(replay(&mut register, op), "seed {seed}: {op} impossible on {register:?}");
        }
    }
}

/// Applies `op` to `register`; false if its observed result is not what the register gives.
fn replay(register: &mut Option<Bytes>, op: &Op) -> bool {
    let result = match &op.kind {
        OpKind::Set { value } => {
            *register = Some(value.clone());
            OpResult::Set
        }
        OpKind::Get => OpResult::Get { value: register.clone() },
        OpKind::Delete => OpResult::Delete { existed: register.take().is_some() },
        OpKind::Cas { expected, new } if expected == register => {
            *register = Some(new.clone());
            OpResult::Cas(CasResult::Ok)
        }
        OpKind::Cas { .. } => OpResult::Cas(CasResult::Failed { current: register.clone() }),
    };
    match &op.outcome {
        Outcome::Ok(observed) => *observed == result,
        Outcome::Info => true,
        Outcome::Fail => false,
    }
}

/// The speed requirement: 100,000 operations on 10 keys by 8 clients. Run with
/// `cargo test --release --lib history::tests::property::speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn speed_100k_ops_10_keys_8_clients() {
    let shapes = [(10, 0, false), (10, 2, true), (1, 0, false), (1, 2, true), (10, 2, false)];
    for (keys, info_percent, unique_values) in shapes {
        let shape = Shape { keys, clients: 8, ops: 100_000, info_percent, fail_percent: 1, unique_values };
        let mut rng = Rng::new(42);
        let mut history = linearizable_history(&mut rng, &shape);
        let started = Instant::now();
        let report = check(&history).unwrap();
        let elapsed = started.elapsed();
        let steps: u64 = report.keys.iter().map(|key| key.search_steps).sum();
        println!("{shape:?}: {:?} in {elapsed:?}, {steps} search steps", report.verdict());
        assert_eq!(report.verdict(), Verdict::Linearizable);

        // A stale read at the very end (make_stale_read is cubic, too slow for this size).
        let end = history.iter().filter_map(|op| op.ret).max().unwrap_or(0);
        history.push(set(1, "k0", "old", end + 10, end + 11));
        history.push(set(2, "k0", "new", end + 20, end + 21));
        history.push(get(3, "k0", Some("old"), end + 30, end + 31));
        let started = Instant::now();
        let report = check(&history).unwrap();
        println!("  plus a stale read: {:?} in {:?}", report.verdict(), started.elapsed());
        match report.violations().next() {
            Some(violation) => {
                println!("{violation}");
                // The get and the set it missed; perhaps the stale value's write too.
                let indexes: Vec<usize> = violation.ops.iter().map(|op| op.index).collect();
                let [missed, stale] = [history.len() - 2, history.len() - 1];
                assert!(indexes.ends_with(&[missed, stale]) && indexes.len() <= 3, "{violation}");
            }
            // Proving a violation means trying every placement of the Info writes still pending
            // (pooled values, deletes), which is exponential: the budget runs out, as it should.
            None => assert!(info_percent > 0 && report.verdict() == Verdict::Unknown, "no violation:\n{report}"),
        };
    }
}
