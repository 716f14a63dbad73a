//! Membership changes and leadership transfers in the simulated world (`--membership`).
//!
//! The world gets [`SPARES`] extra nodes that start as joining nodes (no configuration, like
//! `raftd --join`). Now and then the driver asks the leader for a random change of the
//! configuration in force: add a spare as a learner or straight as a voter, promote a learner,
//! remove a voter (the leader itself too), remove a learner, replace a voter by a learner or a
//! spare in one joint step, or hand leadership to a voter. Voters stay between 3 and 7. A node
//! named in an accepted removal is never added again (a real operator would wipe it first, and
//! a wiped node reusing its id could vote twice in a term). Everything else in the world runs as
//! usual, so changes meet crashes, power cuts, partitions, pauses and damaged disks mid-joint.

use std::collections::BTreeSet;

use mini_raft::raft::membership::{ChangeOp, MemberChange};
use mini_raft::raft::rng::Rng;
use mini_raft::raft::NodeId;

use crate::world::World;

/// Nodes beyond `--nodes` that start empty and wait to be added.
pub const SPARES: u64 = 3;
/// Voters the driver keeps at least (so that one crash does not stop the cluster) and at most.
const VOTERS_MIN: usize = 3;
const VOTERS_MAX: usize = 7;

pub struct Membership {
    /// Chance per step, in 1/1000, that the driver tries a change or a transfer.
    per_mille: u64,
    /// Nodes named in an accepted removal: never added again.
    removed: BTreeSet<NodeId>,
}

impl Membership {
    pub fn new(rng: &mut Rng) -> Membership {
        Membership { per_mille: [4, 10, 25][rng.range(0, 3) as usize], removed: BTreeSet::new() }
    }
}

fn member(op: ChangeOp, id: NodeId) -> MemberChange {
    let address = if op == ChangeOp::Remove { String::new() } else { format!("n{id}") };
    MemberChange { op, id, address }
}

fn pick(rng: &mut Rng, ids: &[NodeId]) -> Option<NodeId> {
    (!ids.is_empty()).then(|| ids[rng.range(0, ids.len() as u64) as usize])
}

impl World {
    /// One chance per step of a change or a transfer, asked of the live leader.
    pub(crate) fn membership_step(&mut self) {
        let Some(m) = &self.membership else { return };
        let per_mille = m.per_mille;
        if !self.rng.chance(per_mille, 1000) {
            return;
        }
        let Some(li) = self.live_leader() else { return };
        let Some(raft) = self.nodes[li].raft() else { return };
        let (leader, conf) = (raft.id(), raft.configuration().clone());
        let voters: Vec<NodeId> = conf.voters().collect();
        let learners: Vec<NodeId> = conf.learners().collect();
        let removed = self.membership.as_ref().map(|m| m.removed.clone()).unwrap_or_default();
        let spares: Vec<NodeId> =
            self.nodes.iter().map(|n| n.id).filter(|id| !conf.is_member(*id) && !removed.contains(id)).collect();
        let others: Vec<NodeId> = voters.iter().copied().filter(|&v| v != leader).collect();
        let can_shrink = voters.len() > VOTERS_MIN;
        let can_grow = voters.len() < VOTERS_MAX;
        let changes = match self.rng.range(0, 10) {
            0 | 1 => pick(&mut self.rng, &spares).map(|id| vec![member(ChangeOp::AddLearner, id)]),
            2 | 3 if can_grow => pick(&mut self.rng, &learners).map(|id| vec![member(ChangeOp::AddVoter, id)]),
            4 if can_grow => pick(&mut self.rng, &spares).map(|id| vec![member(ChangeOp::AddVoter, id)]),
            5 if can_shrink => pick(&mut self.rng, &others).map(|id| vec![member(ChangeOp::Remove, id)]),
            6 if can_shrink => Some(vec![member(ChangeOp::Remove, leader)]),
            7 => {
                let out = pick(&mut self.rng, &voters);
                let pool = if learners.is_empty() || self.rng.chance(1, 3) { &spares } else { &learners };
                let new = pick(&mut self.rng, pool);
                out.zip(new).map(|(out, new)| vec![member(ChangeOp::AddVoter, new), member(ChangeOp::Remove, out)])
            }
            8 => pick(&mut self.rng, &learners).map(|id| vec![member(ChangeOp::Remove, id)]),
            9 => {
                self.transfer(li, leader, &others);
                None
            }
            _ => None,
        };
        if let Some(changes) = changes {
            self.propose_change(li, leader, changes);
        }
    }

    fn transfer(&mut self, li: usize, leader: NodeId, others: &[NodeId]) {
        let to = if self.rng.chance(1, 2) { 0 } else { pick(&mut self.rng, others).unwrap_or(0) };
        let Some(replica) = self.nodes[li].replica_mut() else { return };
        let result = replica.transfer_leader(to);
        match result {
            Ok(target) => {
                self.stats.transfers += 1;
                self.note(format!("n{leader} TRANSFERS leadership to n{target}"));
            }
            Err(e) => self.note(format!("n{leader} refuses a transfer to n{to}: {e}")),
        }
    }

    fn propose_change(&mut self, li: usize, leader: NodeId, changes: Vec<MemberChange>) {
        let Some(replica) = self.nodes[li].replica_mut() else { return };
        let described: Vec<String> = changes.iter().map(|c| format!("{} n{}", c.op.name(), c.id)).collect();
        match replica.propose_conf_change(changes.clone()) {
            Ok(index) => {
                self.stats.conf_changes += 1;
                if changes.iter().any(|c| c.op == ChangeOp::Remove && c.id == leader) {
                    self.stats.leaders_removed += 1;
                }
                if let Some(m) = self.membership.as_mut() {
                    m.removed.extend(changes.iter().filter(|c| c.op == ChangeOp::Remove).map(|c| c.id));
                }
                self.note(format!("n{leader} CONF CHANGE at {index}: {}", described.join(", ")));
            }
            Err(e) => {
                self.stats.conf_refused += 1;
                self.note(format!("n{leader} refuses conf change {}: {e}", described.join(", ")));
            }
        }
    }

    /// The configuration the cluster ends with (members, voters, joint?): the one in force on
    /// the node that knows the newest (all nodes as voters without `--membership`).
    pub(crate) fn final_configuration(&self) -> (Vec<NodeId>, Vec<NodeId>, bool) {
        if self.membership.is_none() {
            let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
            return (all.clone(), all, false);
        }
        // The configuration in the most up-to-date log (the one an election lets win, §5.4.1),
        // not the newest configuration entry anywhere: a node the cluster never added may hold
        // an uncommitted change that added it, overwritten everywhere else, and nobody will tell
        // it (seeds 13445 and 16224 --membership picked such a node's view, which had it as a
        // voter far behind). A joining node knows no configuration yet (no voters): it never
        // decides (seed 12938 picked one that had the newest term, and the cluster looked
        // memberless forever).
        let newest = self
            .nodes
            .iter()
            .filter_map(|n| n.raft())
            .filter(|r| r.configuration().voters().next().is_some())
            .max_by_key(|r| (r.log_term(r.last_index()).unwrap_or(0), r.last_index(), r.configuration_index()));
        let Some(raft) = newest else { return (Vec::new(), Vec::new(), false) };
        let conf = raft.configuration();
        let voters: Vec<NodeId> = conf.voters().chain(conf.outgoing()).collect::<BTreeSet<_>>().into_iter().collect();
        (conf.members().into_iter().collect(), voters, conf.is_joint())
    }
}
