//! Membership changes and leadership transfer through the in-memory cluster of `tests.rs`.

use super::*;
use crate::raft::membership::{ChangeOp, MemberChange};

fn add(id: NodeId) -> MemberChange {
    MemberChange { op: ChangeOp::AddVoter, id, address: format!("n{id}:7000") }
}
fn learner(id: NodeId) -> MemberChange {
    MemberChange { op: ChangeOp::AddLearner, id, address: format!("n{id}:7000") }
}
fn remove(id: NodeId) -> MemberChange {
    MemberChange { op: ChangeOp::Remove, id, address: String::new() }
}

impl Cluster {
    /// A node that joins: an empty log, no configuration (`raftd --join`).
    fn join(&mut self, id: NodeId) {
        let durable = MemStorage::default();
        let raft = Raft::new(RaftConfig::new(id, Vec::new(), 42), durable.restored()).expect("a joining node starts");
        self.nodes.insert(id, TestNode { raft, durable, applied: Vec::new(), read_states: Vec::new(), loads: 0 });
    }

    fn voters_of(&self, id: NodeId) -> Vec<NodeId> {
        self.node(id).configuration().voters().collect()
    }
}

#[test]
fn a_learner_joins_catches_up_never_campaigns_and_is_promoted() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1).propose(Bytes::from_static(b"before")).expect("leader");
    c.settle();
    c.join(4);
    for _ in 0..100 {
        c.tick(4);
    }
    assert_eq!(c.node(4).role(), Role::Follower, "a joining node never campaigns");
    c.node_mut(1).propose_conf_change(vec![learner(4)]).expect("accepted");
    c.settle();
    assert!(!c.node(1).configuration().is_joint(), "the leave followed the enter by itself");
    assert!(c.node(4).configuration().is_learner(4));
    assert_eq!(c.node(4).committed(), c.node(1).committed(), "the learner has the log");
    assert!(c.nodes[&4].applied.iter().any(|e| e.data.as_ref() == b"before"));
    assert_eq!(c.node(4).configuration().address(4), Some("n4:7000"));
    for _ in 0..100 {
        c.tick(4);
    }
    assert_eq!(c.node(4).role(), Role::Follower, "a learner never campaigns");
    c.node_mut(1).propose_conf_change(vec![add(4)]).expect("promotion accepted");
    c.settle();
    for id in 1..=4 {
        assert_eq!(c.voters_of(id), vec![1, 2, 3, 4], "node {id}");
    }
}

#[test]
fn learners_do_not_count_toward_commit() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.join(4);
    c.join(5);
    c.node_mut(1).propose_conf_change(vec![learner(4), learner(5)]).expect("accepted");
    c.settle();
    c.isolate(2);
    c.isolate(3);
    for (a, b) in [(1, 4), (4, 1), (1, 5), (5, 1)] {
        c.blocked.remove(&(a, b));
    }
    let index = c.node_mut(1).propose(Bytes::from_static(b"x")).expect("leader");
    c.settle();
    assert_eq!(c.node(4).last_index(), index, "the learner got the entry");
    assert!(c.node(1).committed() < index, "two learners and the leader are no majority of three voters");
    c.heal();
    c.tick_all(10);
    assert!(c.node(1).committed() >= index);
}

#[test]
fn a_second_change_is_refused_while_one_is_in_flight() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.join(4);
    c.join(5);
    let index = c.node_mut(1).propose_conf_change(vec![learner(4)]).expect("accepted");
    let err = c.node_mut(1).propose_conf_change(vec![learner(5)]).expect_err("one at a time");
    assert_eq!(err, ConfChangeError::InProgress { index });
    assert!(err.to_string().contains("in flight"), "{err}");
    assert!(matches!(
        c.node_mut(2).propose_conf_change(vec![learner(5)]),
        Err(ConfChangeError::NotLeader { leader: 1 })
    ));
    c.settle();
    c.node_mut(1).propose_conf_change(vec![learner(5)]).expect("the first one completed");
    let err = c.node_mut(1).propose_conf_change(vec![add(9)]).expect_err("in flight again");
    assert!(matches!(err, ConfChangeError::InProgress { .. }));
}

#[test]
fn a_removed_leader_steps_down_after_c_new_commits_and_stays_quiet() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1).propose_conf_change(vec![remove(1)]).expect("accepted");
    c.settle();
    assert_ne!(c.node(1).role(), Role::Leader, "not in C_new: steps down once it commits");
    assert_eq!(c.voters_of(2), vec![2, 3]);
    assert_eq!(c.node(1).configuration().role(1), crate::raft::membership::MemberRole::None);
    c.isolate(1);
    c.tick_all(100);
    assert_eq!(c.node(1).leader(), 0, "a removed node forgets a leader it no longer hears from");
    c.heal();
    c.tick_all(100);
    assert_eq!(c.node(1).role(), Role::Follower, "a removed node never campaigns");
    let leaders = c.leaders();
    assert!(leaders.len() == 1 && leaders[0] != 1, "one of C_new leads: {leaders:?}");
    let index = c.node_mut(leaders[0]).propose(Bytes::from_static(b"after")).expect("new leader");
    c.settle_and_heartbeat();
    assert_eq!(c.node(3).committed(), index, "two voters commit without the removed node");
    assert_eq!(c.node(2).committed(), index);
}

#[test]
fn a_change_takes_effect_when_appended_and_is_reverted_when_truncated() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.node_mut(1).propose_conf_change(vec![add(4)]).expect("accepted while partitioned");
    c.settle();
    assert!(c.node(1).configuration().is_joint(), "in force on the leader as soon as appended");
    assert_eq!(c.voters_of(2), vec![1, 2, 3]);
    c.tick_all(100);
    let leader = *c.leaders().iter().find(|&&id| id != 1).expect("2 or 3 leads");
    c.node_mut(leader).propose(Bytes::from_static(b"overwrite")).expect("leader");
    c.settle();
    c.heal();
    c.tick_all(20);
    assert_eq!(c.leaders(), vec![leader]);
    assert_eq!(c.voters_of(1), vec![1, 2, 3], "the truncated change is undone");
    assert!(!c.node(1).configuration().is_joint());
}

#[test]
fn a_replace_is_one_joint_step_and_the_snapshot_records_the_configuration() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.join(4);
    let enter = c.node_mut(1).propose_conf_change(vec![add(4), remove(3)]).expect("accepted");
    c.settle();
    for id in [1, 2, 4] {
        assert_eq!(c.voters_of(id), vec![1, 2, 4], "node {id}");
    }
    let joint = c.node(1).conf_state_at(enter).expect("remembered");
    assert_eq!((joint.voters.clone(), joint.voters_outgoing.clone()), (vec![1, 2, 4], vec![1, 2, 3]));
    assert_eq!(c.node(1).conf_state_at(enter - 1).map(|s| s.voters), Some(vec![1, 2, 3]));
    // Node 3 is gone: 1, 2 and 4 commit.
    c.isolate(3);
    let index = c.node_mut(1).propose(Bytes::from_static(b"y")).expect("leader");
    c.settle_and_heartbeat();
    assert_eq!(c.node(4).committed(), index);
}

#[test]
fn a_snapshot_brings_a_learner_its_configuration() {
    let mut c = Cluster::with(3, |cfg| cfg.log_window_bytes_max = 0, &[&[], &[], &[]], 0);
    c.elect(1);
    c.join(4);
    c.node_mut(1).propose_conf_change(vec![learner(4)]).expect("accepted");
    c.settle();
    c.isolate(4);
    for i in 0..5 {
        c.node_mut(1).propose(Bytes::from(format!("v{i}"))).expect("leader");
        c.settle();
    }
    let applied = c.node(1).applied();
    let conf = c.node(1).conf_state_at(applied).expect("known");
    assert_eq!(conf.learners, vec![4]);
    let term = c.node(1).log_term(applied).expect("in the log");
    let meta = SnapshotMeta { index: applied, term, conf };
    c.nodes.get_mut(&1).expect("leader").durable.snapshot = Some(meta.clone());
    c.node_mut(1).compact(meta).expect("compacts");
    // Node 4 restarts empty (its disk was lost) and is brought back by the snapshot.
    c.nodes.remove(&4);
    c.join(4);
    c.heal();
    c.tick_all(20);
    assert!(c.node(4).configuration().is_learner(4), "the snapshot carried the learner set");
    assert_eq!(c.node(4).committed(), c.node(1).committed());
}

#[test]
fn leadership_transfer_hands_over_at_once_and_refuses_proposals_meanwhile() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    c.isolate(2);
    c.node_mut(1).propose(Bytes::from_static(b"2 lags")).expect("leader");
    c.settle();
    assert_eq!(c.node_mut(1).transfer_leader(2), Ok(2));
    assert_eq!(c.node_mut(1).propose(Bytes::from_static(b"no")), Err(ProposeError::Transferring { to: 2 }));
    c.heal();
    c.tick(1); // a heartbeat: node 2 catches up, then gets TimeoutNow
    assert_eq!(c.leaders(), vec![2], "the target won without waiting for an election timeout");
    assert_eq!(c.node(2).term(), term + 1);
    assert!(c.nodes[&2].applied.iter().any(|e| e.data.as_ref() == b"2 lags"));
    // The default target is the most caught-up voter; refusals say why.
    assert_eq!(c.node_mut(2).transfer_leader(7), Err(TransferError::NotVoter { id: 7 }));
    assert_eq!(c.node_mut(1).transfer_leader(3), Err(TransferError::NotLeader { leader: 2 }));
    let target = c.node_mut(2).transfer_leader(0).expect("a target");
    c.settle();
    assert_eq!(c.leaders(), vec![target]);
}

#[test]
fn a_transfer_to_an_unreachable_voter_aborts_after_an_election_timeout() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.node_mut(1).transfer_leader(3).expect("started");
    assert!(c.node_mut(1).propose(Bytes::from_static(b"x")).is_err());
    for _ in 0..15 {
        c.tick(1);
        c.tick(2);
    }
    assert_eq!(c.node(1).transfer_target(), None, "abandoned");
    assert_eq!(c.leaders(), vec![1], "the old leader resumed");
    c.node_mut(1).propose(Bytes::from_static(b"x")).expect("proposals again");
}

/// A log of node `id`: a no-op, then "remove node 1" entering the joint configuration at 2 and
/// leaving it at 3, all of term 1, committed up to `commit`.
fn restored_with_removal(commit: Index) -> Restored {
    use crate::raft::membership::{ConfChange, ConfEntry, Configuration};
    let c0 = Configuration::from_voters([1, 2, 3]).expect("valid");
    let enter = ConfChange::Enter(vec![remove(1)]);
    let joint = c0.apply(&enter).expect("valid");
    let new = joint.apply(&ConfChange::Leave).expect("valid");
    let entry = |index, change: ConfChange, conf: &Configuration| Entry {
        index,
        term: 1,
        kind: EntryKind::ConfChange,
        data: ConfEntry { change, conf: conf.to_conf_state() }.encode(),
    };
    let noop = Entry { index: 1, term: 1, kind: EntryKind::Noop, data: Bytes::new() };
    Restored {
        hard_state: HardState { term: 1, vote: 0, commit },
        entries: vec![noop, entry(2, enter, &joint), entry(3, ConfChange::Leave, &new)],
        ..Restored::default()
    }
}

#[test]
fn a_node_left_out_by_an_uncommitted_configuration_may_still_campaign() {
    // Node 1 alone holds the leave entry (3) that removes it; the others are still joint and need
    // its vote, which it refuses them (its log is longer): it must be able to campaign itself.
    let node = Raft::new(config(1, 3), restored_with_removal(2)).expect("valid restore");
    assert!(!node.configuration().is_voter(1), "C_new leaves node 1 out");
    assert!(node.may_campaign(), "its committed configuration (joint) still counts it");
    let node = Raft::new(config(1, 3), restored_with_removal(3)).expect("valid restore");
    assert!(!node.may_campaign(), "once C_new is committed here, node 1 never campaigns");
}
