//! Real `raftd` processes on loopback: replication, failover after kill -9, full-cluster restart,
//! catch-up from the log and from a snapshot, exactly-once retried writes, redirects that name the
//! leader's client address.

mod support;

use std::time::{Duration, Instant};

use mini_raft::kv::{Command, Session};
use mini_raft::wire::{ClientReply, ClientRequest, FrameBody, NodeRole, ReadConsistency};
use support::{wait_until, RawConn, TestCluster};

fn write_keys(cluster: &TestCluster, range: std::ops::Range<u32>) {
    let mut client = cluster.client();
    for i in range {
        let key = format!("key-{i}");
        if let Err(e) = client.set(key.as_bytes(), format!("value-{i}").as_bytes()) {
            panic!("set {key} failed: {e}\n{}", cluster.dump_logs());
        }
    }
}

fn assert_keys_readable(cluster: &TestCluster, range: std::ops::Range<u32>) {
    let mut client = cluster.client();
    for i in range {
        let key = format!("key-{i}");
        let got =
            client.get(key.as_bytes(), ReadConsistency::Linearizable).unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert_eq!(got.value.as_deref(), Some(format!("value-{i}").as_bytes()), "{key} lost\n{}", cluster.dump_logs());
    }
}

#[test]
fn three_nodes_replicate_and_fail_over_after_leader_kill() {
    let mut cluster = TestCluster::start(3, &[]);
    let (leader, term) = cluster.wait_leader(Duration::from_secs(10)).expect("a leader is elected");
    write_keys(&cluster, 0..50);
    assert_keys_readable(&cluster, 0..50);

    let killed_at = Instant::now();
    cluster.kill(leader);
    let (new_leader, new_term) = cluster.wait_leader(Duration::from_secs(5)).expect("a new leader");
    let failover = killed_at.elapsed();
    eprintln!("failover after kill -9 of the leader: {failover:?}");
    assert_ne!(new_leader, leader);
    assert!(new_term > term);
    // Election timeout is 150-300 ms (measured here: 170-190 ms from kill to a new leader).
    assert!(failover < Duration::from_secs(1), "failover took {failover:?}");

    assert_keys_readable(&cluster, 0..50);
    write_keys(&cluster, 50..60);
    cluster.start_node(leader);
    assert_keys_readable(&cluster, 0..60);
}

#[test]
fn five_nodes_keep_serving_with_two_down_and_catch_them_up() {
    let mut cluster = TestCluster::start(5, &[]);
    let (leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    write_keys(&cluster, 0..20);
    let followers: Vec<usize> = (1..=5).filter(|&id| id != leader).take(2).collect();
    for &id in &followers {
        cluster.kill(id);
    }
    write_keys(&cluster, 20..40);
    assert_keys_readable(&cluster, 0..40);
    for &id in &followers {
        cluster.start_node(id);
    }
    let caught_up = wait_until(Duration::from_secs(10), || {
        let target = cluster.status(leader).map(|s| s.commit_index).unwrap_or(u64::MAX);
        followers.iter().all(|&id| cluster.status(id).is_some_and(|s| s.applied_index >= target))
    });
    assert!(caught_up, "restarted followers did not catch up\n{}", cluster.dump_logs());
}

#[test]
fn full_cluster_restart_after_kill_9_keeps_every_acknowledged_write() {
    restart_after_kill_9_keeps_every_acknowledged_write(&[]);
}

/// The same with every batch synced on the WAL thread, never on the event loop.
#[test]
fn with_wal_sync_thread_a_full_cluster_restart_after_kill_9_keeps_every_acknowledged_write() {
    restart_after_kill_9_keeps_every_acknowledged_write(&["--wal-sync", "thread"]);
}

fn restart_after_kill_9_keeps_every_acknowledged_write(args: &[&str]) {
    let mut cluster = TestCluster::start(3, args);
    cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    write_keys(&cluster, 0..100);
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster.wait_leader(Duration::from_secs(10)).expect("leader after restart");
    assert_keys_readable(&cluster, 0..100);
}

#[test]
fn stopped_follower_catches_up_from_a_snapshot() {
    let mut cluster = TestCluster::start(3, &["--snapshot-every", "20"]);
    let (leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    cluster.kill(follower);
    write_keys(&cluster, 0..120); // the leader compacts its log several times meanwhile
    let leader_status = cluster.status(leader).expect("leader status");
    assert!(leader_status.snapshot_index > 0, "the leader never compacted: {leader_status:?}");
    cluster.start_node(follower);
    let caught_up = wait_until(Duration::from_secs(10), || {
        cluster.status(follower).is_some_and(|s| s.applied_index >= leader_status.commit_index)
    });
    assert!(caught_up, "follower did not catch up\n{}", cluster.dump_logs());
    let log = std::fs::read_to_string(cluster.log_path(follower)).unwrap_or_default();
    assert!(log.contains("installed snapshot"), "the follower caught up without InstallSnapshot:\n{log}");
    // Its own state machine has the data (a local read on that node, no redirect).
    let mut conn = RawConn::connect(&cluster.addrs[follower - 1]).expect("connect to follower");
    let reply = conn.request(ClientRequest::Get { key: "key-7".into(), consistency: ReadConsistency::Local });
    assert_eq!(reply, Some(FrameBody::Reply(ClientReply::Value("value-7".into()))));
}

#[test]
fn a_retried_write_is_applied_exactly_once() {
    let cluster = TestCluster::start(3, &[]);
    let (leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let mut conn = RawConn::connect(&cluster.addrs[leader - 1]).expect("connect to leader");
    let session_id = conn.register().expect("a session");
    let create = Command::Cas {
        session: Session::serial(session_id, 1),
        key: "once".into(),
        expected: None,
        new: "first".into(),
    };
    assert_eq!(conn.request(ClientRequest::Write(create.clone())), Some(FrameBody::Reply(ClientReply::Ok)));
    // The same write again (a client retry after a lost reply): executing it again would fail the
    // CAS, because the key now exists. The session answers with the first outcome instead.
    assert_eq!(conn.request(ClientRequest::Write(create)), Some(FrameBody::Reply(ClientReply::Ok)));
    let next = Command::Cas {
        session: Session::serial(session_id, 2),
        key: "once".into(),
        expected: None,
        new: "second".into(),
    };
    assert_eq!(
        conn.request(ClientRequest::Write(next)),
        Some(FrameBody::Reply(ClientReply::CasFailed { current: Some("first".into()) }))
    );
    let status = cluster.status(leader).expect("status");
    assert_eq!(status.role, NodeRole::Leader);
}

#[test]
fn not_leader_names_the_leaders_client_address_not_its_peer_address() {
    // Client addresses that differ from the --peers ones (nothing listens there: only the names matter).
    let client_addrs = "1=127.0.0.11:7101,2=127.0.0.12:7102,3=127.0.0.13:7103";
    let cluster = TestCluster::start(3, &["--client-addrs", client_addrs]);
    let (leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let knows_leader = || cluster.status(follower).is_some_and(|s| s.leader_id == leader as u64);
    assert!(wait_until(Duration::from_secs(5), knows_leader), "node {follower} never heard of leader {leader}");
    let mut conn = RawConn::connect(&cluster.addrs[follower - 1]).expect("connect to a follower");
    let get = ClientRequest::Get { key: "k".into(), consistency: ReadConsistency::Linearizable };
    let expected = format!("127.0.0.1{leader}:710{leader}");
    assert_eq!(
        conn.request(get),
        Some(FrameBody::Reply(ClientReply::NotLeader { leader_id: leader as u64, leader_addr: expected }))
    );
}
