//! Table tests of configurations, change entries and the history along the log.

use super::*;
use crate::raft::quorum::VoteResult;
use crate::raft::types::{Entry, EntryKind, Index};

fn add(id: NodeId) -> MemberChange {
    MemberChange { op: ChangeOp::AddVoter, id, address: format!("h{id}:1") }
}
fn learner(id: NodeId) -> MemberChange {
    MemberChange { op: ChangeOp::AddLearner, id, address: format!("h{id}:1") }
}
fn remove(id: NodeId) -> MemberChange {
    MemberChange { op: ChangeOp::Remove, id, address: String::new() }
}
fn plain(voters: &[NodeId]) -> Configuration {
    Configuration::from_voters(voters.iter().copied()).expect("valid")
}
fn ids(it: impl Iterator<Item = NodeId>) -> Vec<NodeId> {
    it.collect()
}

#[test]
fn enter_then_leave_moves_through_the_joint_configuration() {
    // (voters, changes, joint incoming, joint outgoing, learners after leave, voters after leave)
    type Case = (&'static [u64], Vec<MemberChange>, &'static [u64], &'static [u64], &'static [u64], &'static [u64]);
    let cases: Vec<Case> = vec![
        (&[1, 2, 3], vec![add(4)], &[1, 2, 3, 4], &[1, 2, 3], &[], &[1, 2, 3, 4]),
        (&[1, 2, 3], vec![remove(3)], &[1, 2], &[1, 2, 3], &[], &[1, 2]),
        // Replace: one joint step.
        (&[1, 2, 3], vec![add(4), remove(3)], &[1, 2, 4], &[1, 2, 3], &[], &[1, 2, 4]),
        // Replace two of five at once.
        (
            &[1, 2, 3, 4, 5],
            vec![add(6), add(7), remove(4), remove(5)],
            &[1, 2, 3, 6, 7],
            &[1, 2, 3, 4, 5],
            &[],
            &[1, 2, 3, 6, 7],
        ),
        // A learner: not a voter in either half.
        (&[1, 2, 3], vec![learner(4)], &[1, 2, 3], &[1, 2, 3], &[4], &[1, 2, 3]),
        // Demotion: an outgoing voter while joint, a learner after.
        (&[1, 2, 3], vec![learner(3)], &[1, 2], &[1, 2, 3], &[3], &[1, 2]),
    ];
    for (voters, changes, incoming, outgoing, learners_after, voters_after) in cases {
        let c0 = plain(voters);
        let joint = c0.apply(&ConfChange::Enter(changes.clone())).expect("valid change");
        assert!(joint.is_joint(), "{changes:?}");
        assert_eq!(ids(joint.voters()), incoming.to_vec(), "{changes:?}");
        assert_eq!(ids(joint.outgoing()), outgoing.to_vec(), "{changes:?}");
        let new = joint.apply(&ConfChange::Leave).expect("leave");
        assert!(!new.is_joint());
        assert_eq!(ids(new.voters()), voters_after.to_vec(), "{changes:?}");
        assert_eq!(ids(new.learners()), learners_after.to_vec(), "{changes:?}");
        for c in changes.iter().filter(|c| c.op != ChangeOp::Remove) {
            assert_eq!(new.address(c.id), Some(c.address.as_str()), "address of {} travels in the change", c.id);
        }
    }
}

#[test]
fn invalid_changes_are_refused_and_change_nothing() {
    let c0 = plain(&[1, 2, 3]);
    let refused: Vec<(Configuration, ConfChange)> = vec![
        (c0.clone(), ConfChange::Leave),                                        // not joint
        (c0.clone(), ConfChange::Enter(vec![])),                                // nothing to do
        (c0.clone(), ConfChange::Enter(vec![add(2)])),                          // already a voter
        (c0.clone(), ConfChange::Enter(vec![remove(9)])),                       // not a member
        (c0.clone(), ConfChange::Enter(vec![add(4), remove(4)])),               // one node twice
        (c0.clone(), ConfChange::Enter(vec![remove(1), remove(2), remove(3)])), // no voters left
        (c0.clone(), ConfChange::Enter(vec![add(0)])),                          // reserved id
        (c0.apply(&ConfChange::Enter(vec![add(4)])).expect("valid"), ConfChange::Enter(vec![add(5)])), // joint
        (Configuration::default(), ConfChange::Enter(vec![add(1)])),            // a joining node has nothing to change
    ];
    for (config, change) in refused {
        assert!(config.apply(&change).is_err(), "{change:?} on {config:?} must be refused");
    }
}

#[test]
fn learners_never_count_and_an_empty_outgoing_set_agrees() {
    // (voters, outgoing, learners, granted) -> vote result; the learners grant too.
    type Case = (&'static [u64], &'static [u64], &'static [u64], &'static [u64], VoteResult);
    let cases: &[Case] = &[
        (&[1, 2, 3], &[], &[4, 5], &[1, 4, 5], VoteResult::Pending),
        (&[1, 2, 3], &[], &[4, 5], &[1, 2, 4, 5], VoteResult::Won),
        (&[1, 2, 4], &[1, 2, 3], &[5], &[1, 4, 5], VoteResult::Pending),
        (&[1, 2, 4], &[1, 2, 3], &[5], &[1, 2, 5], VoteResult::Won),
        (&[1], &[], &[2, 3], &[2, 3], VoteResult::Pending),
    ];
    for (voters, outgoing, learners, granted, want) in cases {
        let conf = ConfState {
            voters: voters.to_vec(),
            voters_outgoing: outgoing.to_vec(),
            learners: learners.to_vec(),
            ..ConfState::default()
        };
        let config = Configuration::from_conf_state(&conf).expect("valid");
        let joint = config.joint_config().expect("has voters");
        let vote = |id| if granted.contains(&id) { Some(true) } else { None };
        assert_eq!(joint.vote_result(vote), *want, "{conf:?} granted {granted:?}");
        // Commit: the learners are far ahead, the voters are not.
        let matched = |id| Some(if learners.contains(&id) { 100 } else { 5 });
        assert_eq!(joint.committed_index(matched), 5, "{conf:?}: learners must not move the commit");
        assert!(!joint.has_quorum(|id| learners.contains(&id)), "{conf:?}: learners are no quorum");
    }
}

#[test]
fn configurations_from_outside_are_checked() {
    let bad = [
        ConfState { voters: vec![1, 2], learners: vec![2], ..ConfState::default() },
        ConfState { voters: vec![1, 2], voters_outgoing: vec![1, 3], learners: vec![3], ..ConfState::default() },
        ConfState {
            voters: vec![1, 2],
            voters_outgoing: vec![1, 2, 3],
            learners_next: vec![2],
            ..ConfState::default()
        },
        ConfState { voters: vec![], learners: vec![2], ..ConfState::default() },
        ConfState { voters: vec![0, 1], ..ConfState::default() },
    ];
    for conf in bad {
        assert!(Configuration::from_conf_state(&conf).is_err(), "{conf:?}");
    }
    assert!(Configuration::from_conf_state(&ConfState::default()).is_ok(), "a joining node has none");
}

#[test]
fn change_entries_and_configurations_round_trip_and_refuse_garbage() {
    let c0 = plain(&[1, 2, 3]);
    let enter = ConfChange::Enter(vec![add(4), remove(3), learner(9)]);
    let joint = c0.apply(&enter).expect("valid");
    let entries = [
        ConfEntry { change: enter, conf: joint.to_conf_state() },
        ConfEntry { change: ConfChange::Leave, conf: joint.apply(&ConfChange::Leave).expect("leave").to_conf_state() },
    ];
    for entry in entries {
        let bytes = entry.encode();
        assert_eq!(ConfEntry::decode(&bytes), Ok(entry.clone()));
        for cut in 0..bytes.len() {
            assert!(ConfEntry::decode(&bytes[..cut]).is_err(), "{entry:?} cut at {cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(ConfEntry::decode(&longer).is_err(), "trailing bytes");
    }
    assert!(ConfEntry::decode(&[1, 0xff, 0xff]).is_err(), "too many changes");
    assert!(ConfEntry::decode(&[1, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]).is_err(), "unknown op");
    let state = joint.to_conf_state();
    let bytes = encode_conf_state(&state);
    assert_eq!(decode_conf_state(&bytes), Ok(state));
    for cut in 0..bytes.len() {
        assert!(decode_conf_state(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

/// A change entry as a leader whose configuration is `from` writes it.
fn conf_entry(index: u64, term: u64, from: &Configuration, change: &ConfChange) -> Entry {
    let conf = from.apply(change).expect("valid change").to_conf_state();
    Entry { index, term, kind: EntryKind::ConfChange, data: ConfEntry { change: change.clone(), conf }.encode() }
}

#[test]
fn the_history_follows_appends_truncations_and_compaction() {
    let c0 = plain(&[1, 2, 3]);
    let mut history = ConfLog::new(0, c0.clone());
    let enter = ConfChange::Enter(vec![add(4)]);
    assert!(history.append(&conf_entry(5, 1, &c0, &enter)));
    assert!(history.current().is_joint(), "takes effect when appended");
    let joint = history.current().clone();
    let mut garbage = conf_entry(6, 1, &joint, &ConfChange::Leave);
    garbage.data = garbage.data.slice(..garbage.data.len() - 1);
    assert!(!history.append(&garbage), "an entry that does not decode is ignored");
    let mut lying = conf_entry(6, 1, &joint, &ConfChange::Leave);
    lying.data = ConfEntry { change: ConfChange::Leave, conf: joint.to_conf_state() }.encode();
    assert!(!history.append(&lying), "a leave that states a joint configuration is ignored");
    assert!(!history.append(&Entry { index: 7, term: 1, kind: EntryKind::Normal, data: Default::default() }));
    assert!(history.append(&conf_entry(8, 1, &joint, &ConfChange::Leave)));
    assert_eq!(ids(history.current().voters()), vec![1, 2, 3, 4]);
    assert_eq!(history.at(4).map(|c| ids(c.voters())), Some(vec![1, 2, 3]));
    assert_eq!(history.at(7).map(|c| c.is_joint()), Some(true));
    // The leave entry is overwritten by another term's entry: back to joint.
    let terms = |i: Index| if i <= 7 { Some(1) } else { Some(2) };
    assert!(history.retain_matching(terms));
    assert!(history.current().is_joint());
    assert_eq!(history.current_index(), 5);
    // Truncated below the enter entry too: back to C_old.
    assert!(history.retain_matching(|i| if i < 5 { Some(1) } else { None }));
    assert_eq!(history.current(), &plain(&[1, 2, 3]));
    assert!(history.append(&conf_entry(5, 3, &c0, &enter)));
    history.compact(6);
    assert_eq!(history.at(5), None, "folded into the base");
    assert!(history.at(6).is_some_and(|c| c.is_joint()));
    assert!(history.current().is_joint());
}
