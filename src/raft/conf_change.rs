//! Membership changes in the running core (dissertation §4.3): proposing a change, following
//! the configuration as change entries are appended and truncated, leaving the joint phase, and
//! the leader that is not part of C_new stepping down.
//!
//! Invariants:
//! - the configuration in force is the one of the last change entry in the log, appended or not
//!   (`ConfLog`); the tracker's quorum arithmetic always matches it (`conf_changed`);
//! - at most one change is in flight: a leader proposes one only when the configuration is plain
//!   and its entry committed, and appends the leave entry once the enter entry commits;
//! - a leader that is no voter of C_new leads until C_new commits, then steps down (it counts
//!   only toward the outgoing majority meanwhile, which the quorum arithmetic does by itself).

use super::consensus::{Raft, Role};
use super::membership::{ChangeOp, ConfChange, ConfEntry, Configuration, MemberChange};
use super::quorum::JointConfig;
use super::types::{ConfState, Entry, EntryKind, Index, NodeId, SnapshotMeta};

/// A learner is promoted only if it is at most this many entries behind the leader's log:
/// a voter that lags far would slow every commit of the new configuration.
pub const PROMOTE_LAG_ENTRIES_MAX: u64 = 1024;

/// Why a membership change was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChangeError {
    /// Ask `leader` instead (0: unknown).
    NotLeader { leader: NodeId },
    /// The change whose entry is at `index` has not completed (joint, or not committed yet).
    InProgress { index: Index },
    /// Leadership is being transferred.
    Transferring { to: NodeId },
    /// A learner to promote is this many entries behind.
    LearnerLagging { id: NodeId, behind: u64 },
    /// The change does not apply to the configuration (unknown node, already a voter, ...).
    Invalid(String),
}

impl std::fmt::Display for ConfChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfChangeError::NotLeader { leader: 0 } => write!(f, "not the leader (leader unknown)"),
            ConfChangeError::NotLeader { leader } => write!(f, "not the leader (node {leader} is)"),
            ConfChangeError::InProgress { index } => {
                write!(f, "a membership change is in flight (entry {index}); retry when it completes")
            }
            ConfChangeError::Transferring { to } => write!(f, "leadership is being transferred to node {to}"),
            ConfChangeError::LearnerLagging { id, behind } => {
                write!(f, "learner {id} is lagging by {behind} entries (at most {PROMOTE_LAG_ENTRIES_MAX})")
            }
            ConfChangeError::Invalid(why) => write!(f, "invalid change: {why}"),
        }
    }
}

impl Raft {
    /// Proposes entering the joint configuration that `changes` describe (the leave follows by
    /// itself once it commits). Returns the index of the change entry.
    pub fn propose_conf_change(&mut self, changes: Vec<MemberChange>) -> Result<Index, ConfChangeError> {
        if self.role != Role::Leader {
            return Err(ConfChangeError::NotLeader { leader: self.leader });
        }
        if self.lead_transferee != 0 {
            return Err(ConfChangeError::Transferring { to: self.lead_transferee });
        }
        let current = self.conf_log.current();
        let index = self.conf_log.current_index();
        if current.is_joint() || index > self.log.committed {
            return Err(ConfChangeError::InProgress { index });
        }
        for c in changes.iter().filter(|c| c.op == ChangeOp::AddVoter && current.is_learner(c.id)) {
            let matched = self.tracker.get(c.id).map_or(0, |pr| pr.matched);
            let behind = self.log.last_index().saturating_sub(matched);
            if behind > PROMOTE_LAG_ENTRIES_MAX {
                return Err(ConfChangeError::LearnerLagging { id: c.id, behind });
            }
        }
        let change = ConfChange::Enter(changes);
        let next = current.apply(&change).map_err(ConfChangeError::Invalid)?;
        let index = self.append_conf_entry(ConfEntry { change, conf: next.to_conf_state() });
        self.broadcast_append();
        Ok(index)
    }

    fn append_conf_entry(&mut self, entry: ConfEntry) -> Index {
        let index = self.append_entry(EntryKind::ConfChange, entry.encode());
        if let Some(appended) = self.log.entry(index).cloned() {
            let recorded = self.conf_log.append(&appended);
            assert!(recorded, "the leader's own change entry {index} did not apply: {}", entry.change.describe());
        }
        self.conf_changed();
        index
    }

    /// The configuration in force at `index` (for a snapshot taken there), or `None` if `index`
    /// is below what this node remembers (below its snapshot).
    pub fn conf_state_at(&self, index: Index) -> Option<ConfState> {
        self.conf_log.at(index).map(Configuration::to_conf_state)
    }

    /// May this node start an election? A voter of the configuration in force may; so may a
    /// voter of the last committed configuration while a newer one (its entry appended, not
    /// committed) leaves it out: otherwise the one node holding a leave entry that removes it
    /// could block every election (its vote is needed by the joint configuration the others
    /// still have, and it refuses them as its log is longer). Votes are still counted in the
    /// configuration in force (C_new), and such a leader steps down once C_new commits, as a
    /// leader removed by a change does (dissertation §4.2.2).
    pub fn may_campaign(&self) -> bool {
        let current = self.conf_log.current();
        if current.is_voter(self.id) {
            return true;
        }
        let committed = self.log.committed;
        self.conf_log.current_index() > committed && self.conf_log.at(committed).is_some_and(|c| c.is_voter(self.id))
    }

    /// The configuration in force now.
    pub fn conf_state(&self) -> ConfState {
        self.conf_log.current().to_conf_state()
    }

    /// The log changed under a follower (entries appended after `prev`, maybe a suffix
    /// truncated): forget changes that are gone and take those that arrived.
    pub(super) fn follow_conf(&mut self, entries: &[Entry]) {
        let log = &self.log;
        let mut changed = self.conf_log.retain_matching(|i| log.term(i));
        for entry in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            if self.log.term(entry.index) == Some(entry.term) {
                changed |= self.conf_log.append(entry);
            }
        }
        if changed {
            self.conf_changed();
        }
    }

    /// A snapshot replaced the log; an empty configuration (older snapshot format) keeps ours.
    pub(super) fn restore_conf(&mut self, meta: &SnapshotMeta) {
        let base = if meta.conf.is_empty() {
            self.conf_log.current().clone()
        } else {
            match Configuration::from_conf_state(&meta.conf) {
                Ok(config) => config,
                Err(_) => self.conf_log.current().clone(), // refused by Message::validate already
            }
        };
        self.conf_log.reset(meta.index, base);
        self.conf_changed();
    }

    /// Makes the tracker follow the configuration in force.
    pub(super) fn conf_changed(&mut self) {
        let conf = self.conf_log.current();
        let joint = conf.joint_config().unwrap_or_else(|_| JointConfig::none());
        let learners = conf.learners().collect();
        let leader_next = (self.role == Role::Leader).then(|| (self.log.last_index() + 1, self.opts.inflight_msgs_max));
        if self.lead_transferee != 0 && !conf.is_voter(self.lead_transferee) {
            self.lead_transferee = 0;
        }
        self.tracker.update_config(joint, learners, self.id, leader_next);
    }

    /// After the commit index moved on a leader: leave a joint configuration whose entry
    /// committed, and step down once a C_new without this node committed.
    pub(super) fn after_commit_conf(&mut self) {
        debug_assert_eq!(self.role, Role::Leader);
        let committed = self.log.committed >= self.conf_log.current_index();
        if !committed {
            return;
        }
        if self.conf_log.current().is_joint() {
            // Commits later (the leader counts itself only once the entry is durable).
            let next = self.conf_log.current().apply(&ConfChange::Leave);
            let Ok(next) = next else { panic!("a joint configuration refused to leave: {next:?}") };
            self.append_conf_entry(ConfEntry { change: ConfChange::Leave, conf: next.to_conf_state() });
        } else if !self.conf_log.current().is_voter(self.id) {
            // Tell the followers the commit index first, so the next leader knows C_new.
            self.broadcast_append();
            self.become_follower(self.term, 0);
        }
    }
}
