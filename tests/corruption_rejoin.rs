//! Protocol-aware recovery with real `raftd` processes: the reproduction of issue 8's first problem.
//! Node C is down; a write is acknowledged by A and B; B's disk rots in the records that hold that
//! write. Before protocol-aware recovery, B cut the damage as a torn tail, B and C formed a majority
//! without the write, and a linearizable get returned nothing. Now B comes back recovering: it does
//! not vote for a log that lacks what it lost, so B and C elect no one until A (which has the write)
//! is back; then B re-fetches the write and is a full voter again (B and C alone serve it).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mini_raft::wire::ReadConsistency;
use support::{wait_until, TestCluster};

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Flips one bit in the middle of the last copy of `needle` in any file under `dir`; returns the file.
fn flip_a_bit_in_last_copy_of(dir: &Path, needle: &[u8]) -> PathBuf {
    for path in files_under(dir) {
        let mut bytes = std::fs::read(&path).expect("read data file");
        let Some(at) = bytes.windows(needle.len()).rposition(|w| w == needle) else { continue };
        bytes[at + needle.len() / 2] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write data file");
        return path;
    }
    panic!("no file under {} holds the value", dir.display());
}

#[test]
fn a_write_survives_rot_in_the_synced_records_of_one_of_the_two_nodes_that_acknowledged_it() {
    let mut cluster = TestCluster::start(3, &[]);
    let (a, _) = cluster.wait_leader(Duration::from_secs(10)).expect("a leader is elected");
    let others: Vec<usize> = (1..=3).filter(|&id| id != a).collect();
    let (b, c) = (others[0], others[1]);

    let mut client = cluster.client();
    client.set(b"before", b"1").expect("a first write");
    cluster.kill(c);
    let value = b"the-acknowledged-write-that-must-survive-one-rotten-disk".to_vec();
    client.set(b"w", &value).expect("w is acknowledged by A and B");
    // Let B go idle (its last batch confirmed) and record the commit, then crash both.
    std::thread::sleep(Duration::from_millis(500));
    cluster.kill(a);
    cluster.kill(b);
    let rotten = flip_a_bit_in_last_copy_of(&cluster.node_dir(b), &value);
    eprintln!("flipped a bit of w in {}", rotten.display());

    cluster.start_node(b);
    cluster.start_node(c);
    // B and C are a majority, but only B ever had w: electing C (or B without w) would lose it.
    let leader = cluster.wait_leader(Duration::from_secs(3));
    assert_eq!(leader, None, "B and C elected a leader without w\n{}", cluster.dump_logs());
    let b_log = std::fs::read_to_string(cluster.log_path(b)).unwrap_or_default();
    assert!(
        b_log.contains("recovers the lost entries from its peers"),
        "B did not report the damage as corruption to recover from\n{}",
        cluster.dump_logs()
    );

    cluster.start_node(a);
    let mut client = cluster.client();
    let got = client.get(b"w", ReadConsistency::Linearizable).expect("a linearizable get of w");
    assert_eq!(got.value.as_deref(), Some(&value[..]), "w was lost\n{}", cluster.dump_logs());
    let commit = cluster.status(a).map(|s| s.commit_index).unwrap_or(0);
    let caught_up = wait_until(Duration::from_secs(10), || cluster.status(b).is_some_and(|s| s.applied_index >= commit));
    assert!(caught_up, "B did not catch up to index {commit}\n{}", cluster.dump_logs());

    // B is a full voter again: with A gone, B and C elect a leader that serves w.
    cluster.kill(a);
    let leader = cluster.wait_leader(Duration::from_secs(10));
    assert!(leader.is_some(), "B and C never elected a leader after B recovered\n{}", cluster.dump_logs());
    let mut client = cluster.client();
    let got = client.get(b"w", ReadConsistency::Linearizable).expect("get w from B and C");
    assert_eq!(got.value.as_deref(), Some(&value[..]), "w lost after B recovered\n{}", cluster.dump_logs());
    let got = client.get(b"before", ReadConsistency::Linearizable).expect("get before");
    assert_eq!(got.value.as_deref(), Some(&b"1"[..]));
}
