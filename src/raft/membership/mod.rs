//! Membership: configurations, the changes between them, and the history of configurations in
//! the log (dissertation §4.3, joint consensus).
//!
//! A [`Configuration`] is (voters, outgoing voters while joint, learners, learners-to-be) plus
//! each member's address. A change is an entry (`EntryKind::ConfChange`) that moves a plain
//! configuration C_old to the joint C_old,new ([`ConfChange::Enter`]), or a joint one to C_new
//! ([`ConfChange::Leave`]). Every change goes through the joint phase, so any change (replacing
//! two of five at once) is one safe step; the leader proposes the leave once the enter commits.
//!
//! A change entry ([`ConfEntry`]) carries the change and the whole configuration it results in:
//! a node that joins with no configuration learns it from there.
//!
//! A configuration takes effect on a node when its entry is *appended* (persisted or not), and
//! is reverted if that entry is truncated: [`ConfLog`] keeps the configuration in force after
//! each change entry above the snapshot, so the node can answer "which configuration holds at
//! index i" (a snapshot at i records it) and "which one holds now".
//!
//! Invariants (checked by [`Configuration::check`], which every constructor runs):
//! - no set contains node id 0; the voter set is empty only for a node that has no
//!   configuration yet (it joins and waits to be added);
//! - learners are neither incoming nor outgoing voters; learners-to-be are outgoing voters
//!   that are not incoming voters; outgoing voters and learners-to-be are empty unless joint;
//! - a change entry that would break these is invalid and leaves the configuration as it was, on
//!   every node alike (all nodes see the same log, so they all ignore the same entries).

mod change;
mod history;

pub use change::{decode_conf_state, encode_conf_state, ChangeOp, ConfChange, ConfEntry, MemberChange};
pub use history::ConfLog;

use std::collections::{BTreeMap, BTreeSet};

use super::quorum::{ConfigError, JointConfig};
use super::types::{ConfState, NodeId};
use crate::limits::{ADDRESS_BYTES_MAX, MEMBERS_MAX, VOTERS_MAX};

/// One configuration in sets (see the module doc for its invariants).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Configuration {
    voters: BTreeSet<NodeId>,
    outgoing: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    learners_next: BTreeSet<NodeId>,
    addresses: BTreeMap<NodeId, String>,
}

/// How a node stands in a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    Voter,
    /// A voter of C_old only (joint): it counts in the outgoing majority and leaves at C_new.
    Outgoing,
    Learner,
    None,
}

impl MemberRole {
    pub fn name(self) -> &'static str {
        match self {
            MemberRole::Voter => "voter",
            MemberRole::Outgoing => "outgoing",
            MemberRole::Learner => "learner",
            MemberRole::None => "none",
        }
    }
}

impl Configuration {
    /// A plain configuration of `voters` (no learners, no addresses).
    pub fn from_voters(voters: impl IntoIterator<Item = NodeId>) -> Result<Configuration, String> {
        let config = Configuration { voters: voters.into_iter().collect(), ..Configuration::default() };
        config.check()?;
        Ok(config)
    }

    /// Checks a configuration that came from a snapshot, a peer or the disk.
    pub fn from_conf_state(conf: &ConfState) -> Result<Configuration, String> {
        let config = Configuration {
            voters: conf.voters.iter().copied().collect(),
            outgoing: conf.voters_outgoing.iter().copied().collect(),
            learners: conf.learners.iter().copied().collect(),
            learners_next: conf.learners_next.iter().copied().collect(),
            addresses: conf.addresses.iter().cloned().collect(),
        };
        config.check()?;
        Ok(config)
    }

    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.iter().copied().collect(),
            voters_outgoing: self.outgoing.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            addresses: self.addresses.iter().map(|(id, a)| (*id, a.clone())).collect(),
        }
    }

    /// The module doc's invariants.
    pub fn check(&self) -> Result<(), String> {
        let members = self.members();
        if members.contains(&0) {
            return Err("node id 0 is reserved for 'nobody'".into());
        }
        if self.voters.len() > VOTERS_MAX || self.outgoing.len() > VOTERS_MAX || members.len() > MEMBERS_MAX {
            return Err(format!("configuration too large (at most {VOTERS_MAX} voters, {MEMBERS_MAX} members)"));
        }
        if self.voters.is_empty() && !members.is_empty() {
            return Err("a configuration with members needs at least one voter".into());
        }
        if let Some(id) = self.learners.iter().find(|id| self.voters.contains(id) || self.outgoing.contains(id)) {
            return Err(format!("node {id} is both a learner and a voter"));
        }
        if let Some(id) = self.learners_next.iter().find(|id| self.voters.contains(id) || !self.outgoing.contains(id)) {
            return Err(format!("node {id} is to become a learner but is not an outgoing voter only"));
        }
        if let Some((id, _)) = self.addresses.iter().find(|(_, a)| a.len() > ADDRESS_BYTES_MAX) {
            return Err(format!("address of node {id} exceeds {ADDRESS_BYTES_MAX} bytes"));
        }
        Ok(())
    }

    /// The quorum arithmetic of this configuration (learners never count). A configuration
    /// without voters (a joining node) has no quorum object: it may never decide anything.
    pub fn joint_config(&self) -> Result<JointConfig, ConfigError> {
        JointConfig::joint(self.voters.iter().copied(), self.outgoing.iter().copied())
    }

    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// A voter of either half: it campaigns, is asked for votes and counts.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Receives the log: a voter of either half or a learner.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    pub fn role(&self, id: NodeId) -> MemberRole {
        if self.voters.contains(&id) {
            MemberRole::Voter
        } else if self.outgoing.contains(&id) {
            MemberRole::Outgoing
        } else if self.learners.contains(&id) {
            MemberRole::Learner
        } else {
            MemberRole::None
        }
    }

    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().copied()
    }

    pub fn outgoing(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.outgoing.iter().copied()
    }

    pub fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.learners.iter().copied()
    }

    /// Every member (voters of both halves, learners, learners-to-be), ascending.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let sets = [&self.voters, &self.outgoing, &self.learners, &self.learners_next];
        sets.into_iter().flatten().copied().collect()
    }

    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.addresses.get(&id).map(String::as_str)
    }

    /// The configuration after `change`, or why the change is invalid here (the caller keeps
    /// the current one then). Enter requires a plain configuration, leave a joint one.
    pub fn apply(&self, change: &ConfChange) -> Result<Configuration, String> {
        let next = match change {
            ConfChange::Leave => self.leave()?,
            ConfChange::Enter(changes) => self.enter(changes)?,
        };
        next.check()?;
        Ok(next)
    }

    fn enter(&self, changes: &[MemberChange]) -> Result<Configuration, String> {
        if self.is_joint() {
            return Err("a change is already in progress (the configuration is joint)".into());
        }
        if self.voters.is_empty() {
            return Err("no configuration to change".into());
        }
        if changes.is_empty() {
            return Err("a change needs at least one member change".into());
        }
        let ids: BTreeSet<NodeId> = changes.iter().map(|c| c.id).collect();
        if ids.len() != changes.len() {
            return Err("a change names one node twice".into());
        }
        let mut next = self.clone();
        next.outgoing = self.voters.clone();
        for c in changes {
            match c.op {
                ChangeOp::AddVoter => {
                    if self.voters.contains(&c.id) {
                        return Err(format!("node {} is already a voter", c.id));
                    }
                    next.learners.remove(&c.id);
                    next.voters.insert(c.id);
                }
                ChangeOp::AddLearner => {
                    if self.learners.contains(&c.id) {
                        return Err(format!("node {} is already a learner", c.id));
                    }
                    if next.voters.remove(&c.id) {
                        next.learners_next.insert(c.id); // a demotion: a learner at C_new
                    } else {
                        next.learners.insert(c.id);
                    }
                }
                ChangeOp::Remove => {
                    if !self.is_member(c.id) {
                        return Err(format!("node {} is not a member", c.id));
                    }
                    next.voters.remove(&c.id);
                    next.learners.remove(&c.id);
                }
            }
            if !c.address.is_empty() {
                next.addresses.insert(c.id, c.address.clone());
            }
        }
        if next.voters.is_empty() {
            return Err("the change would leave no voters".into());
        }
        Ok(next)
    }

    fn leave(&self) -> Result<Configuration, String> {
        if !self.is_joint() {
            return Err("the configuration is not joint".into());
        }
        let mut next = self.clone();
        next.outgoing.clear();
        next.learners.append(&mut next.learners_next);
        let members = next.members();
        next.addresses.retain(|id, _| members.contains(id));
        Ok(next)
    }
}

#[cfg(test)]
mod tests;
