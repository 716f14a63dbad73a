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
    let caught_up =
        wait_until(Duration::from_secs(10), || cluster.status(b).is_some_and(|s| s.applied_index >= commit));
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

/// Issue 8, point 3: a follower fed a corrupt snapshot image refuses it before anything is saved
/// or compacted (it stays up, its snapshot is unchanged), and later catches up from a good one.
#[test]
fn a_follower_refuses_a_corrupt_snapshot_image_and_later_catches_up_from_a_good_one() {
    use mini_raft::kv::{Command, KvStore, Session};
    use mini_raft::raft::{ConfState, SnapshotMeta};
    use mini_raft::wire::{Frame, FrameBody, Hello, Role, SnapshotChunk, PROTOCOL_VERSION};
    use support::RawConn;

    let mut cluster = TestCluster::start(3, &["--snapshot-every", "40"]);
    let (a, _) = cluster.wait_leader(Duration::from_secs(10)).expect("a leader is elected");
    let others: Vec<usize> = (1..=3).filter(|&id| id != a).collect();
    let (b, c) = (others[0], others[1]);
    let mut client = cluster.client();
    let set = |client: &mut mini_raft::client::Client, range: std::ops::Range<u32>| {
        for i in range {
            client.set(format!("k{i}").as_bytes(), format!("v{i}").as_bytes()).expect("set");
        }
    };
    set(&mut client, 0..10);
    cluster.kill(c);
    // Past several snapshots: C can only catch up from one.
    set(&mut client, 10..200);
    cluster.kill(a);
    cluster.kill(b);

    cluster.start_node(c);
    let before = wait_for_status(&cluster, c);
    // A leader's snapshot, one byte flipped in transit: `a` speaking as the leader of a new term.
    let index = before.last_log_index + 500;
    // A session and one key whose value is most of the image: the flip lands in the value, so
    // only the image's checksum can tell (the image still decodes).
    let mut image = KvStore::new();
    let encode = |command: Command| {
        let mut bytes = Vec::new();
        command.encode(&mut bytes);
        bytes
    };
    image.apply(1, &encode(Command::Register { sessions_max: 100 })).expect("register");
    let value = vec![b'v'; 4096];
    let write = Command::Set { session: Session::serial(1, 1), key: "k0".into(), value: value.into() };
    image.apply(2, &encode(write)).expect("set");
    for i in 3..=index {
        image.apply_noop(i).expect("no-op");
    }
    let mut data = image.snapshot();
    let middle = data.len() / 2;
    assert_eq!(data[middle], b'v', "the flip must land in the value");
    data[middle] ^= 0x01;
    let meta = SnapshotMeta { index, term: before.term + 1, conf: ConfState::from_voters(vec![1, 2, 3]) };
    let mut conn = RawConn::open(&cluster.addrs[c - 1]).expect("connect to C");
    let hello = Hello { role: Role::Peer, cluster_id: 1, node_id: a as u64, protocol_version: PROTOCOL_VERSION };
    conn.send(&Frame::new(0, FrameBody::Hello(hello)));
    assert!(matches!(conn.recv().map(|f| f.body), Some(FrameBody::HelloOk(_))), "peer handshake");
    let total_bytes = data.len() as u64;
    let chunk = SnapshotChunk {
        from: a as u64,
        to: c as u64,
        term: before.term + 1,
        meta,
        offset: 0,
        total_bytes,
        data: data.into(),
        done: true,
    };
    conn.send(&Frame::new(0, FrameBody::SnapshotChunk(chunk)));
    let refused = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(cluster.log_path(c)).is_ok_and(|log| log.contains(&format!("refused snapshot {index}")))
    });
    assert!(refused, "C did not refuse the corrupt image\n{}", cluster.dump_logs());
    let after = wait_for_status(&cluster, c);
    assert_eq!(
        (after.snapshot_index, after.applied_index),
        (before.snapshot_index, before.applied_index),
        "the refused image changed C's state"
    );
    drop(conn);

    cluster.start_node(a);
    cluster.start_node(b);
    cluster.wait_leader(Duration::from_secs(10)).expect("A and B elect a leader");
    let mut client = cluster.client();
    set(&mut client, 200..210);
    let leader_commit = (1..=3).filter_map(|id| cluster.status(id)).map(|s| s.commit_index).max().unwrap_or(0);
    let caught_up = wait_until(Duration::from_secs(15), || {
        cluster.status(c).is_some_and(|s| s.applied_index >= leader_commit && s.snapshot_index > before.snapshot_index)
    });
    assert!(caught_up, "C did not catch up from a snapshot to {leader_commit}\n{}", cluster.dump_logs());
    // C holds the data: with A gone, B and C serve every key.
    cluster.kill(a);
    cluster.wait_leader(Duration::from_secs(10)).expect("B and C elect a leader");
    let mut client = cluster.client();
    for i in (0..210).step_by(7) {
        let got = client.get(format!("k{i}").as_bytes(), ReadConsistency::Linearizable).expect("get");
        assert_eq!(got.value.as_deref(), Some(format!("v{i}").as_bytes()), "k{i}\n{}", cluster.dump_logs());
    }
}

fn wait_for_status(cluster: &TestCluster, id: usize) -> mini_raft::wire::StatusReport {
    let mut report = None;
    wait_until(Duration::from_secs(10), || {
        report = cluster.status(id);
        report.is_some()
    });
    report.unwrap_or_else(|| panic!("node {id} does not answer status\n{}", cluster.dump_logs()))
}
