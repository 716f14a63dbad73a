//! Crash windows in the node's storage sequence, replayed on disk and then started as a real
//! `raftd`: the node must come up with a consistent log, not refuse to start or crash-loop.

mod support;

use std::time::Duration;

use bytes::Bytes;
use mini_raft::kv::KvStore;
use mini_raft::raft::{ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};
use mini_raft::storage::{fs, SnapshotStore, Wal, WalOptions};
use mini_raft::wire::{ClientReply, ClientRequest, FrameBody, ReadConsistency};
use support::{RawConn, TestCluster};

fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, kind: EntryKind::Noop, data: Bytes::new() }
}

/// A state-machine image that has applied `index` no-ops (what the node snapshots).
fn image(index: u64) -> Bytes {
    let mut kv = KvStore::new();
    for i in 1..=index {
        kv.apply_noop(i).expect("consecutive");
    }
    Bytes::from(kv.snapshot())
}

/// Writes a WAL with `terms` (by index) and a snapshot file at (index, term), as if the node lost
/// power after saving a leader's snapshot but before compacting its log under it.
fn crashed_mid_install(dir: &std::path::Path, terms: &[u64], snapshot_index: u64, snapshot_term: u64) {
    let opts = WalOptions::with_segment_bytes(1 << 20);
    let (mut wal, _) = Wal::open(fs::real(), &dir.join("wal"), opts).expect("open wal");
    let entries: Vec<Entry> = terms.iter().enumerate().map(|(i, &t)| entry(i as u64 + 1, t)).collect();
    wal.append(&entries).expect("append");
    let last_term = terms.last().copied().unwrap_or(0);
    wal.set_hard_state(HardState { term: last_term, vote: 0, commit: 4 }).expect("hard state");
    wal.sync().expect("sync");
    drop(wal);
    let (snapshots, _) = SnapshotStore::open(fs::real(), &dir.join("snap")).expect("open snapshots");
    let meta = SnapshotMeta { index: snapshot_index, term: snapshot_term, conf: ConfState::from_voters(vec![1]) };
    snapshots.save(&Snapshot { meta, data: image(snapshot_index) }).expect("save snapshot");
}

fn assert_node_starts_and_serves(prepare: impl FnOnce(&std::path::Path), snapshot_index: u64) {
    let mut cluster = TestCluster::start(1, &[]);
    cluster.kill(1);
    let dir = cluster.node_dir(1);
    let _ = std::fs::remove_dir_all(&dir); // the killed node may not have created it yet
    std::fs::create_dir_all(&dir).expect("data directory");
    prepare(&dir);
    cluster.start_node(1);
    assert!(
        cluster.wait_leader(Duration::from_secs(10)).is_some(),
        "the node did not come back:\n{}\n{}",
        cluster.dump_logs(),
        std::fs::read_to_string(cluster.dir.path().join("node-1.stderr")).unwrap_or_default()
    );
    let status = cluster.status(1).expect("status");
    assert_eq!(status.snapshot_index, snapshot_index);
    assert!(status.last_log_index > snapshot_index, "the new leader appended after the snapshot: {status:?}");
    let mut client = cluster.client();
    client.set(b"after", b"recovery").expect("write after recovery");
    let mut conn = RawConn::connect(&cluster.addrs[0]).expect("connect");
    let reply = conn.request(ClientRequest::Get { key: "after".into(), consistency: ReadConsistency::Linearizable });
    assert_eq!(reply, Some(FrameBody::Reply(ClientReply::Value("recovery".into()))));
}

#[test]
fn crash_between_snapshot_save_and_log_compaction_over_a_conflicting_log() {
    // Entries 5..10 came from a deposed leader (term 2); the snapshot at 9 is from term 3.
    let terms = [1, 1, 1, 1, 2, 2, 2, 2, 2, 2];
    assert_node_starts_and_serves(|dir| crashed_mid_install(dir, &terms, 9, 3), 9);
}

#[test]
fn crash_between_snapshot_save_and_log_compaction_beyond_the_log() {
    assert_node_starts_and_serves(|dir| crashed_mid_install(dir, &[1, 1, 1, 1, 1, 1, 1], 9, 1), 9);
}

#[test]
fn a_corrupt_record_in_the_log_of_a_sole_voter_stops_it_with_file_and_offset() {
    let mut cluster = TestCluster::start(1, &[]);
    cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let mut client = cluster.client();
    for i in 0..50 {
        client.set(format!("k{i}").as_bytes(), b"0123456789abcdef").expect("write");
    }
    cluster.kill(1);
    let dump = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_raft-dump"))
            .arg("--verify")
            .arg(dir)
            .output()
            .expect("raft-dump")
    };
    let healthy = dump(&cluster.node_dir(1));
    assert_eq!(healthy.status.code(), Some(0), "{}", String::from_utf8_lossy(&healthy.stdout));
    let wal_dir = cluster.node_dir(1).join("wal");
    let segment = std::fs::read_dir(&wal_dir)
        .expect("wal dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    // Flip a bit inside a record's payload ("0123456789abcdef" of an early write), far from the tail.
    let at = bytes.windows(16).position(|w| w == b"0123456789abcdef").expect("payload on disk") + 3;
    bytes[at] ^= 0x10;
    std::fs::write(&segment, &bytes).expect("write segment");

    let peers = format!("1={}", cluster.addrs[0]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftd"))
        .args(["--id", "1", "--listen", &cluster.addrs[0], "--peers", &peers, "--segment-mib", "4", "--data-dir"])
        .arg(cluster.node_dir(1))
        .output()
        .expect("run raftd");
    assert_eq!(out.status.code(), Some(1), "a sole voter cannot recover its log from peers: it must refuse");
    assert!(String::from_utf8_lossy(&out.stderr).contains("only voter"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = segment.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    assert!(stderr.contains(name), "error must name the segment file: {stderr}");
    assert!(stderr.contains("offset"), "error must name the offset: {stderr}");
    let damaged = dump(&cluster.node_dir(1));
    assert_ne!(damaged.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&damaged.stderr).contains(name), "raft-dump must name the damaged segment");
}
