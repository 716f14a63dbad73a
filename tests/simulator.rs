//! Runs `raft-sim` over many seeds with every fault kind on: real nodes (replica, WAL and
//! snapshots on simulated disks, start-up recovery) and clients running the real client rules.
//! Any violated safety or liveness property, or a history that is not linearizable, fails the
//! test and prints the seed to replay.

use std::process::Command;

fn raft_sim(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_raft-sim")).args(args).output().expect("raft-sim runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), stdout)
}

fn assert_seeds_pass(nodes: &str, seeds: &str) {
    let (ok, stdout) = raft_sim(&["--seeds", seeds, "--nodes", nodes]);
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(ok, "raft-sim found violations:\n{stdout}");
    assert!(summary.starts_with(&format!("seeds={seeds} nodes={nodes} ")), "unexpected summary: {summary}");
    assert!(summary.contains("violations=0"), "{summary}");
    // The run must really exercise the interesting paths, or it proves nothing.
    let exercised = [
        "elections=",
        "commits=",
        "reads=",
        "snapshots_installed=",
        "crashes=",
        "power_cuts=",
        "loads=",
        "registrations=",
        "sessions_expired=",
        "unknown_outcomes=",
        "recoveries=",
        "rot=",
        "eio=",
        "enospc=",
        "storage_failures=",
        "chunks_corrupted=",
        "snapshots_refused=",
        "images_compared=",
        "history_ops=",
        "figure8_scripts=",
    ];
    assert!(summary.contains(" history_unknown_keys=0 "), "every key's history was decided: {summary}");
    for counter in exercised {
        let value: u64 = summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(counter))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(value > 0, "{counter} is zero in {summary}");
    }
}

#[test]
fn three_node_clusters_stay_safe_over_500_seeds() {
    assert_seeds_pass("3", "500");
}

#[test]
fn five_node_clusters_stay_safe_over_500_seeds() {
    assert_seeds_pass("5", "500");
}

/// Membership changes (`--membership`): spare nodes join, members are added, promoted, removed
/// (the leader too) and replaced, and leadership moves, under every fault.
#[test]
fn membership_changes_stay_safe_over_300_seeds() {
    for nodes in ["3", "5"] {
        let (ok, stdout) = raft_sim(&["--seeds", "300", "--nodes", nodes, "--membership"]);
        let summary = stdout.lines().last().unwrap_or_default();
        assert!(ok, "raft-sim --membership found violations:\n{stdout}");
        assert!(summary.contains("violations=0"), "{summary}");
        for counter in ["conf_changes=", "conf_refused=", "transfers=", "leaders_removed=", "commits=", "crashes="] {
            let value: u64 = summary
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(counter))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            assert!(value > 0, "{counter} is zero in {summary}");
        }
    }
}

#[test]
fn a_seed_replays_byte_for_byte() {
    let first = raft_sim(&["--seed", "7", "--nodes", "5"]);
    let second = raft_sim(&["--seed", "7", "--nodes", "5"]);
    assert!(first.0, "{}", first.1);
    assert_eq!(first, second);
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_raft-sim")).args(["--nodes", "4", "--seed", "1"]).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--nodes must be 3 or 5"));
}
