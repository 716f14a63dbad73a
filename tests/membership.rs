//! Membership changes on real `raftd` processes under client load: a 3-node cluster grows to 5
//! through learners that catch up (from a snapshot) and are promoted, leadership moves twice (the
//! unavailability of each move is measured), the leader removes itself, a dead node is replaced
//! by a new one on a new data directory and address; every acknowledged write is read back.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mini_raft::client::{Client, ClientOptions};
use mini_raft::raft::membership::{ChangeOp, MemberChange, MemberRole};
use mini_raft::wire::{MembersReport, ReadConsistency};
use support::{wait_until, TestCluster};

fn change(op: ChangeOp, id: usize, address: &str) -> MemberChange {
    MemberChange { op, id: id as u64, address: address.to_string() }
}

fn client(cluster: &TestCluster) -> Client {
    let options = ClientOptions { deadline: Duration::from_secs(30), ..ClientOptions::default() };
    Client::new(cluster.addrs.clone(), options).expect("client")
}

fn roles(report: &MembersReport) -> Vec<(u64, MemberRole)> {
    report.members.iter().map(|m| (m.node_id, m.role)).collect()
}

/// Writes `w{n}` keys in a loop until stopped; every acknowledged key is recorded.
fn writer(addrs: Vec<String>, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let options = ClientOptions { deadline: Duration::from_secs(20), ..ClientOptions::default() };
        let mut c = Client::new(addrs, options).expect("client");
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("w{n}");
            if c.set(key.as_bytes(), b"v").is_ok() {
                acked.lock().expect("lock").push(key);
            }
            n += 1;
        }
    })
}

/// How long writes stall around `f`: the longest gap between two acknowledged writes of a
/// client writing in a loop meanwhile.
fn longest_write_gap(cluster: &TestCluster, f: impl FnOnce()) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let stamps = Arc::new(Mutex::new(vec![Instant::now()]));
    let (addrs, s, t) = (cluster.addrs.clone(), Arc::clone(&stop), Arc::clone(&stamps));
    let handle = std::thread::spawn(move || {
        let options = ClientOptions { deadline: Duration::from_secs(20), ..ClientOptions::default() };
        let mut c = Client::new(addrs, options).expect("client");
        let mut n = 0u64;
        while !s.load(Ordering::Relaxed) {
            if c.set(format!("gap{n}").as_bytes(), b"v").is_ok() {
                t.lock().expect("lock").push(Instant::now());
            }
            n += 1;
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    f();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    handle.join().expect("gap writer");
    let stamps = stamps.lock().expect("lock");
    stamps.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

#[test]
fn grow_to_five_through_learners_transfer_twice_remove_the_leader_and_replace_a_dead_node() {
    let mut cluster = TestCluster::start(3, &["--snapshot-every", "50"]);
    cluster.wait_leader(Duration::from_secs(10)).expect("a leader");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let load = writer(cluster.addrs.clone(), Arc::clone(&stop), Arc::clone(&acked));
    assert!(wait_until(Duration::from_secs(20), || acked.lock().expect("lock").len() > 120), "writes go through");

    // Grow 3 -> 5: two nodes join, catch up as learners (past a snapshot), and are promoted.
    let mut admin = client(&cluster);
    for _ in 0..2 {
        let id = cluster.add_joining_node();
        let addr = cluster.addrs[id - 1].clone();
        let report = admin.member_change(vec![change(ChangeOp::AddLearner, id, &addr)]).expect("learner added").value;
        assert!(roles(&report).contains(&(id as u64, MemberRole::Learner)), "{report:?}");
        let caught_up = wait_until(Duration::from_secs(20), || {
            let report = admin.member_list().expect("member list").value;
            report.members.iter().any(|m| m.node_id == id as u64 && m.match_index + 5 >= report.last_index)
        });
        assert!(caught_up, "learner {id} catches up\n{}", cluster.dump_logs());
        let report = admin.member_change(vec![change(ChangeOp::AddVoter, id, "")]).expect("promoted").value;
        assert!(roles(&report).contains(&(id as u64, MemberRole::Voter)), "{report:?}");
        assert!(!report.joint);
    }
    let report = admin.member_list().expect("member list").value;
    assert_eq!(report.members.iter().filter(|m| m.role == MemberRole::Voter).count(), 5, "{report:?}");
    let learner_status = cluster.status(4).expect("node 4 answers");
    assert!(learner_status.snapshot_index > 0, "node 4 caught up from a snapshot: {learner_status:?}");

    // Move the leader twice, measuring how long writes stall.
    let mut gaps = Vec::new();
    for _ in 0..2 {
        let before = admin.member_list().expect("list").value.leader_id;
        let gap = longest_write_gap(&cluster, || {
            let report = admin.transfer_leader(0).expect("transfer").value;
            assert_ne!(report.leader_id, before, "leadership moved");
        });
        gaps.push(gap);
    }
    eprintln!("longest write stall during each leadership transfer: {gaps:?}");

    // The leader removes itself: it leads until C_new commits, then steps down.
    let leader = admin.member_list().expect("list").value.leader_id;
    let report = admin.member_change(vec![change(ChangeOp::Remove, leader as usize, "")]).expect("removed").value;
    assert!(report.members.iter().all(|m| m.node_id != leader), "{report:?}");
    assert!(wait_until(Duration::from_secs(10), || {
        admin.member_list().is_ok_and(|r| r.value.leader_id != 0 && r.value.leader_id != leader)
    }));
    cluster.kill(leader as usize);

    // Replace a dead voter by a new node on a new data directory and address.
    let dead = (1..=5).find(|&id| id as u64 != leader && cluster.is_running(id)).expect("a voter");
    cluster.kill(dead);
    let new = cluster.add_joining_node();
    let addr = cluster.addrs[new - 1].clone();
    let changes = vec![change(ChangeOp::AddVoter, new, &addr), change(ChangeOp::Remove, dead, "")];
    let report = admin.member_change(changes).expect("replaced").value;
    let voters: Vec<u64> = report.members.iter().filter(|m| m.role == MemberRole::Voter).map(|m| m.node_id).collect();
    assert!(voters.contains(&(new as u64)) && !voters.contains(&(dead as u64)), "{report:?}");

    stop.store(true, Ordering::Relaxed);
    load.join().expect("writer");
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 150, "load ran: {}", acked.len());
    let mut reader = client(&cluster);
    for key in &acked {
        let value = reader.get(key.as_bytes(), ReadConsistency::Linearizable).expect("read").value;
        assert_eq!(value.as_deref(), Some(&b"v"[..]), "acknowledged write {key} is lost\n{}", cluster.dump_logs());
    }
}

#[test]
fn raftctl_member_commands_print_the_configuration_and_refuse_with_reasons() {
    let cluster = TestCluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(10)).expect("a leader");
    let raftctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftctl"))
            .args(["--cluster", &cluster.addrs.join(","), "--timeout", "20"])
            .args(args)
            .output()
            .expect("raftctl runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = raftctl(&["member", "list"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.contains(" voter ")).count(), 3, "{out}");
    let (code, out, err) = raftctl(&["status"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("configuration at index 0: voters [1, 2, 3] (not joint)"), "{out}");
    let (code, _, err) = raftctl(&["member", "promote", "9"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("node 9 is not a member: promote makes a learner a voter"), "{err}");
    let (code, _, err) = raftctl(&["member", "remove", "9"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("invalid change: node 9 is not a member"), "{err}");
    let (code, out, err) = raftctl(&["transfer-leader"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("leader moved from"), "{out}");
}

#[test]
fn sigterm_on_a_leader_transfers_leadership_before_it_exits() {
    let mut cluster = TestCluster::start(3, &[]);
    let (leader, term) = cluster.wait_leader(Duration::from_secs(10)).expect("a leader");
    let mut c = client(&cluster);
    c.set(b"before", b"1").expect("write");
    assert_eq!(cluster.terminate(leader, Duration::from_secs(10)), Some(0), "a clean exit");
    let log = std::fs::read_to_string(cluster.log_path(leader)).unwrap_or_default();
    assert!(log.contains("transfers leadership to node"), "{log}");
    let (new, new_term) = cluster.wait_leader(Duration::from_secs(10)).expect("a new leader");
    assert!(new != leader && new_term > term);
    c.set(b"after", b"2").expect("write on the new leader");
    assert_eq!(c.get(b"before", ReadConsistency::Linearizable).expect("read").value.as_deref(), Some(&b"1"[..]));
}
