//! `raftctl chaos` as CI runs it: 20 seconds of real `raftd` processes behind per-link fault proxies,
//! every fault kind (kill -9 of any node or the leader, pauses, graceful restarts, power cuts,
//! partitions of every shape, delay, lossy links, bandwidth caps, one-way links), four clients with
//! their own sessions. The run must come out linearizable, with no acknowledged write lost and every
//! replica holding the final values (this replaces the kill -9 durability and freshness checks that
//! were here: a linearizable history with its final reads is both).
//!
//! The history the run recorded is then checked again through the library: accepted as recorded,
//! and rejected once one recorded get is edited into a stale read.
//!
//! The schedule comes from a fixed seed (`MINI_RAFT_CHAOS_SEED` overrides it); timing still varies
//! from run to run, as it does on a real network.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use mini_raft::history::{check, parse_json_lines, Op, OpKind, OpResult, Outcome, Verdict};

const SEED_DEFAULT: &str = "2024";
const FAULT_KINDS: [&str; 9] =
    ["kill", "pause", "restart", "power", "partition", "delay", "drop", "bandwidth", "oneway"];

fn run_chaos(data: &Path, seed: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_raftctl"))
        .args(["chaos", "--raftd", env!("CARGO_BIN_EXE_raftd"), "--nodes", "3", "--duration", "20"])
        .args(["--clients", "4", "--keys", "5", "--faults", "all", "--seed", seed])
        .args(["--hold", "0.4-2", "--quiet", "0.2-1", "--keep", "--data"])
        .arg(data)
        .output()
        .expect("raftctl chaos runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn a_short_chaos_run_is_linearizable_loses_nothing_and_its_history_has_teeth() {
    let seed = std::env::var("MINI_RAFT_CHAOS_SEED").unwrap_or_else(|_| SEED_DEFAULT.to_string());
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("run");
    let (passed, text) = run_chaos(&data, &seed);
    eprintln!("{text}");
    assert!(passed, "the chaos run failed (seed {seed}); its directory was {}", data.display());
    assert!(text.contains("checker     LINEARIZABLE"), "{text}");
    assert!(text.contains("lost writes 0 of"), "{text}");
    assert!(text.contains("every node holds the final value of every key"), "{text}");
    let faults = text.lines().find(|line| line.trim_start().starts_with("faults ")).expect("a faults line");
    for kind in FAULT_KINDS {
        assert!(faults.contains(&format!("{kind} ")), "no {kind} fault was injected: {faults}");
    }

    let history = parse_json_lines(&std::fs::read_to_string(data.join("history.jsonl")).expect("history.jsonl"))
        .expect("the recorded history parses");
    assert!(history.len() > 1_000, "too few operations to prove anything: {}", history.len());
    assert_eq!(check(&history).expect("checkable").verdict(), Verdict::Linearizable);

    let (index, stale) = stale_read(&history).expect("a get that can be made stale");
    let mut edited = history.clone();
    edited[index].outcome = Outcome::Ok(OpResult::Get { value: Some(stale) });
    let report = check(&edited).expect("checkable");
    assert_eq!(report.verdict(), Verdict::NotLinearizable, "an injected stale read at #{index} went unnoticed");
    let violation = report.violations().next().expect("a violation");
    assert!(violation.ops.iter().any(|op| op.index == index), "{violation}");
}

/// A successful get that can be turned into a stale read, and the value that makes it one: the
/// value of an acknowledged write that an acknowledged set on the same key definitely overwrote
/// (it returned before the set was invoked) before the get was invoked. Values are unique per
/// write, so no other write can explain the edited get.
fn stale_read(history: &[Op]) -> Option<(usize, Bytes)> {
    let acknowledged = |op: &&Op| matches!(op.outcome, Outcome::Ok(_));
    for (index, get) in history.iter().enumerate().rev() {
        let Outcome::Ok(OpResult::Get { value }) = &get.outcome else { continue };
        let same_key = || history.iter().filter(|op| op.key == get.key).filter(acknowledged);
        let before = |op: &Op, call: u64| op.ret.is_some_and(|ret| ret < call);
        let Some(set) = same_key()
            .filter(|op| matches!(op.kind, OpKind::Set { .. }) && before(op, get.call))
            .max_by_key(|op| op.ret)
        else {
            continue;
        };
        let overwritten = same_key().filter(|op| before(op, set.call)).filter_map(written_value).last();
        match overwritten {
            Some(old) if value.as_ref() != Some(&old) => return Some((index, old)),
            _ => continue,
        }
    }
    None
}

/// The value an acknowledged set or successful cas wrote.
fn written_value(op: &Op) -> Option<Bytes> {
    match (&op.kind, &op.outcome) {
        (OpKind::Set { value }, Outcome::Ok(_)) => Some(value.clone()),
        (OpKind::Cas { new, .. }, Outcome::Ok(OpResult::Cas(mini_raft::history::CasResult::Ok))) => Some(new.clone()),
        _ => None,
    }
}
