//! Safety properties, checked after every simulated step (paper Figure 3), and the glue's own
//! promises, checked where the glue makes them.
//!
//! The core's properties, over every running node:
//! - election safety: at most one leader per term;
//! - log matching: two logs holding an entry with the same index and term are identical up to it;
//! - leader completeness: an entry committed in term T is in the log of every leader after T;
//! - monotonicity: commit and applied never decrease within an incarnation.
//!
//! Membership (`--membership`; `membership.rs` drives the changes):
//! - every commit is durable on a majority of every voter set in force on the node that commits
//!   it (both halves while joint; learners never count);
//! - every committed configuration change goes through the joint phase: an enter states
//!   C_old,new whose outgoing voters are exactly the voters before, a leave states C_new with
//!   exactly the joint's incoming voters (decoded here from the committed log, in order);
//! - only a voter of its own configuration campaigns (learners, removed and joining nodes never
//!   do), and learners are never asked for a vote;
//! - a node removed by a committed configuration never becomes leader again.
//!
//! The node's promises:
//! - state machine safety: no two nodes apply different entries at one index, and every node
//!   applies consecutive entries (a jump only over a snapshot it installed);
//! - state machine images: a node's state machine at index i (after recovery, after a snapshot
//!   install, and now and then) is byte for byte the image of a reference store that applied the
//!   committed log up to i;
//! - persist before send: a vote or an append acknowledgement leaves only once storage reported
//!   what it promises durable;
//! - commit durability: an entry is durable on a majority when it commits (a node that lost it to
//!   damage counts while its recovery guard covers it);
//! - recovery keeps what storage reported durable: term, vote, snapshot and every durable entry
//!   come back after kill -9 or a power cut; if latent damage was injected, losing entries is
//!   allowed only if the node comes back recovering (a guard) or refuses to start;
//! - a recovering node grants votes only to candidates whose log covers its guard;
//! - the clients' history is linearizable (`mini_raft::history`), checked at the end.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use mini_raft::kv::KvStore;
use mini_raft::raft::membership::{ConfChange, ConfEntry, Configuration};
use mini_raft::raft::{Entry, EntryKind, Index, MemStorage, Message, MessageBody, NodeId, Raft, Recovery, Role, Term};

use crate::node::Started;

#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub step: u64,
    pub property: &'static str,
    pub detail: String,
}

pub type Failure = (&'static str, String);

struct CommittedEntry {
    term: Term,
    /// `None` until a node that holds the entry in memory reports it.
    data: Option<Bytes>,
    /// The term in which some node first reported it committed (an upper bound on the real one).
    commit_term: Term,
}

/// Image comparisons are skipped beyond this many waiting (the reference cannot go backwards).
const IMAGES_WAITING_MAX: usize = 64;

pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    committed: BTreeMap<Index, CommittedEntry>,
    applied: BTreeMap<Index, Entry>,
    last_commit: BTreeMap<NodeId, Index>,
    last_applied: BTreeMap<NodeId, Index>,
    /// The reference state machine: the committed log applied in order.
    reference: KvStore,
    /// (index, node, image) waiting for the reference to reach the index.
    images: Vec<(Index, NodeId, Vec<u8>)>,
    pub images_compared: u64,
    pub images_skipped: u64,
    /// (candidate, term) -> the candidate's last log (index, term) as its RequestVote said.
    vote_requests: BTreeMap<(NodeId, Term), (Index, Term)>,
    /// The committed configuration after `conf_walked` (the bootstrap one at first), walked
    /// through the applied entries in index order.
    conf_committed: Configuration,
    conf_walked: Index,
    /// Nodes a committed configuration removed.
    retired: BTreeSet<NodeId>,
}

impl Checker {
    pub fn new(voters: Vec<NodeId>) -> Checker {
        Checker {
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            applied: BTreeMap::new(),
            last_commit: BTreeMap::new(),
            last_applied: BTreeMap::new(),
            reference: KvStore::new(),
            images: Vec::new(),
            images_compared: 0,
            images_skipped: 0,
            vote_requests: BTreeMap::new(),
            conf_committed: Configuration::from_voters(voters).unwrap_or_default(),
            conf_walked: 0,
            retired: BTreeSet::new(),
        }
    }

    // ----- membership ------------------------------------------------------------------------------

    /// Walks the committed (applied) entries in order and checks each configuration change.
    pub fn check_conf_entries(&mut self) -> Result<(), Failure> {
        while let Some(entry) = self.applied.get(&(self.conf_walked + 1)) {
            let index = entry.index;
            if entry.kind == EntryKind::ConfChange {
                let decoded = ConfEntry::decode(&entry.data)
                    .map_err(|e| ("joint consensus", format!("committed change entry {index} does not decode: {e}")))?;
                let next = Configuration::from_conf_state(&decoded.conf)
                    .map_err(|e| ("joint consensus", format!("committed change entry {index} is invalid: {e}")))?;
                let prev = &self.conf_committed;
                let prev_voters: Vec<NodeId> = prev.voters().collect();
                let through_joint = match decoded.change {
                    ConfChange::Enter(_) => {
                        !prev.is_joint() && next.is_joint() && next.outgoing().collect::<Vec<_>>() == prev_voters
                    }
                    ConfChange::Leave => {
                        prev.is_joint() && !next.is_joint() && next.voters().collect::<Vec<_>>() == prev_voters
                    }
                };
                if !through_joint {
                    return Err((
                        "joint consensus",
                        format!(
                            "committed change {index} ({}) moves {:?} to {:?} without the joint phase",
                            decoded.change.describe(),
                            prev.to_conf_state(),
                            decoded.conf
                        ),
                    ));
                }
                let gone: Vec<NodeId> = prev.members().difference(&next.members()).copied().collect();
                self.retired.extend(gone);
                self.conf_committed = next;
            }
            self.conf_walked = index;
        }
        Ok(())
    }

    /// A node became leader: it must not be one whose own log says a committed configuration
    /// removed it. (A removed node whose commit index lags may still lead until it learns
    /// that: Raft counts its votes in C_new, and it steps down once C_new commits, as the leader
    /// that proposed its own removal does. `retired` lists the nodes removed cluster-wide.)
    pub fn became_leader(&self, raft: &Raft) -> Result<(), Failure> {
        let (id, term) = (raft.id(), raft.term());
        let conf = raft.configuration();
        let removed = !conf.is_voter(id) && raft.committed() >= raft.configuration_index();
        if removed {
            let why = format!(
                "n{id} became leader of term {term} though its committed configuration {:?} removed it (retired: {:?})",
                conf.to_conf_state(),
                self.retired
            );
            return Err(("removed node leads", why));
        }
        Ok(())
    }

    /// Only a voter campaigns, and never asks a learner. `before` and `now` are the sender's
    /// configurations at the start of the step and when its messages leave (a change may take
    /// effect in between): a campaign is wrong only if both say so. Checked on pre-votes, which
    /// leave in the step they are made (every campaign starts with one, transfers aside): a
    /// `RequestVote` waits for its batch to be durable, by when a truncated change entry may
    /// have changed the sender's configuration back.
    pub fn check_campaign(
        before: &Configuration,
        now: &Configuration,
        may_campaign: bool,
        message: &Message,
    ) -> Result<(), Failure> {
        if !matches!(message.body, MessageBody::PreVote { .. }) {
            return Ok(());
        }
        let (from, to) = (message.from, message.to);
        // `may_campaign`: a voter of the last committed configuration whose newer, uncommitted
        // one leaves it out (`Raft::may_campaign`).
        if !before.is_voter(from) && !now.is_voter(from) && !may_campaign {
            let role = now.role(from).name();
            return Err(("only voters campaign", format!("n{from} ({role}) asks n{to} for a vote")));
        }
        if before.is_learner(to) && now.is_learner(to) {
            return Err(("learners never vote", format!("n{from} asks learner n{to} for a vote")));
        }
        Ok(())
    }

    // ----- restarts ------------------------------------------------------------------------------

    /// A node started: what recovery brought back must hold everything its storage reported
    /// durable before (`before`), unless latent damage was injected and the node says so (a
    /// recovery guard that covers what was lost). No loss is silent: the version 2 "residual
    /// window" (a damaged final batch read as torn) is closed by the fill of version 3 segments.
    /// After a failed write (`write_failed`) an entry may come back replaced by one of a newer
    /// term, and the entries after it gone: the failed batch's first part (a truncation and new
    /// entries), committed before a rotation that failed, is durable though never reported (what
    /// Raft allows of any unacknowledged write).
    pub fn node_started(
        &mut self,
        id: NodeId,
        before: &MemStorage,
        started: &Started,
        damaged: bool,
        write_failed: bool,
    ) -> Result<(), Failure> {
        self.last_commit.remove(&id);
        self.last_applied.insert(id, started.applied);
        self.image_at(id, started.applied, started.kv_image.clone());
        let (hs, was) = (started.hard_state, before.hard_state);
        let newer = hs.term > was.term || (hs.term == was.term && (hs.vote == was.vote || was.vote == 0));
        if !newer {
            return Err(("recovery keeps term and vote", format!("n{id} had {was:?} durable, recovered {hs:?}")));
        }
        let snap = |s: &Option<mini_raft::raft::SnapshotMeta>| s.as_ref().map_or(0, |s| s.index);
        let (snap_before, snap_now) = (snap(&before.snapshot), snap(&started.snapshot));
        if snap_now < snap_before && !damaged {
            return Err((
                "recovery keeps the snapshot",
                format!("n{id} had a snapshot at {snap_before} durable, recovered one at {snap_now}"),
            ));
        }
        let recovered_term = |index: Index| -> Option<Term> {
            if index <= snap_now {
                return Some(0); // covered by the snapshot (its term is checked by log matching)
            }
            let first = started.entries.first()?.index;
            started.entries.get(usize::try_from(index.checked_sub(first)?).ok()?).map(|e| e.term)
        };
        let mut overwritten = false;
        for entry in before.entries.iter().filter(|e| e.index > snap_now) {
            let found = recovered_term(entry.index);
            if found == Some(entry.term) {
                continue;
            }
            let guard_covers = started.recovery.is_some_and(|g| (g.term, g.index) >= (entry.term, entry.index));
            if damaged && guard_covers {
                continue; // lost to the injected damage, and the node knows it
            }
            // The durable part of the failed batch truncated the log here: what followed is gone.
            overwritten |= write_failed && found.is_some_and(|t| t > entry.term);
            if overwritten {
                continue;
            }
            return Err((
                "recovery keeps durable entries",
                format!(
                    "n{id} had entry {}@{} durable, recovered {found:?} (recovery {:?}, damage injected: {damaged})",
                    entry.index, entry.term, started.recovery
                ),
            ));
        }
        Ok(())
    }

    // ----- applied entries and state machine images ----------------------------------------------

    pub fn last_applied(&self, id: NodeId) -> Index {
        self.last_applied.get(&id).copied().unwrap_or(0)
    }

    /// `entries` were applied by node `id`, whose latest snapshot is at `snapshot_index`.
    /// Returns how many times the node jumped over a snapshot it installed.
    pub fn applied(&mut self, id: NodeId, entries: &[Entry], snapshot_index: Index) -> Result<u64, Failure> {
        let mut jumps = 0;
        for entry in entries {
            let last = self.last_applied(id);
            let over_snapshot = entry.index == snapshot_index + 1 && snapshot_index > last;
            if entry.index != last + 1 && !over_snapshot {
                return Err(("applied in order", format!("n{id} applied index {} right after {last}", entry.index)));
            }
            jumps += u64::from(over_snapshot);
            self.last_applied.insert(id, entry.index);
            match self.applied.get(&entry.index) {
                Some(seen) if seen.term != entry.term || seen.data != entry.data || seen.kind != entry.kind => {
                    return Err((
                        "state machine safety",
                        format!(
                            "n{id} applied {:?}@{} at index {}, another node applied {:?}@{}",
                            entry.data, entry.term, entry.index, seen.data, seen.term
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    self.applied.insert(entry.index, entry.clone());
                }
            }
        }
        Ok(jumps)
    }

    /// A node installed a snapshot: its state machine jumped to `index` (with that state
    /// machine's image, if it is still at `index`).
    pub fn snapshot_installed(&mut self, id: NodeId, index: Index, image: Option<Vec<u8>>) -> Result<(), Failure> {
        let last = self.last_applied(id);
        if index <= last {
            return Err(("applied monotonic", format!("n{id} installed snapshot {index} but had applied {last}")));
        }
        self.last_applied.insert(id, index);
        if let Some(image) = image {
            self.image_at(id, index, image);
        }
        Ok(())
    }

    /// Queues a comparison of node `id`'s state machine image at `index` with the reference's.
    pub fn image_at(&mut self, id: NodeId, index: Index, image: Vec<u8>) {
        if index < self.reference.applied_index() || self.images.len() >= IMAGES_WAITING_MAX {
            self.images_skipped += 1;
            return;
        }
        self.images.push((index, id, image));
    }

    /// Advances the reference as far as applied entries allow and compares the images due.
    pub fn compare_images(&mut self) -> Result<(), Failure> {
        self.images.sort_by_key(|(index, id, _)| (*index, *id));
        while let Some((index, _, _)) = self.images.first() {
            let index = *index;
            while self.reference.applied_index() < index {
                let next = self.reference.applied_index() + 1;
                let Some(entry) = self.applied.get(&next) else { return Ok(()) };
                let result = match entry.kind {
                    EntryKind::Noop | EntryKind::ConfChange => self.reference.apply_noop(next),
                    EntryKind::Normal => self.reference.apply(next, &entry.data).map(|_| ()),
                };
                result.map_err(|e| ("reference state machine", format!("entry {next} does not apply: {e}")))?;
            }
            let (index, id, image) = self.images.remove(0);
            if image != self.reference.snapshot() {
                return Err((
                    "state machine image",
                    format!("n{id}'s state machine at index {index} differs from the committed log applied in order"),
                ));
            }
            self.images_compared += 1;
        }
        Ok(())
    }

    // ----- messages --------------------------------------------------------------------------------

    /// Persist-before-send (DESIGN.md): a vote request or grant leaves only once the vote is
    /// durable, an append acknowledgement only once the entries it covers are.
    pub fn check_send(&self, durable: &MemStorage, message: &Message) -> Result<(), Failure> {
        let durable_last = durable.last_index();
        let problem = match message.body {
            MessageBody::RequestVote { .. } | MessageBody::RequestVoteResponse { granted: true } => {
                let candidate =
                    if matches!(message.body, MessageBody::RequestVote { .. }) { message.from } else { message.to };
                let hs = durable.hard_state;
                // A later durable term also protects the vote: no vote is ever cast in an old term.
                (hs.term < message.term || (hs.term == message.term && hs.vote != candidate)).then(|| {
                    format!(
                        "{} for n{candidate} in term {} sent with durable hard state {hs:?}",
                        message.body.name(),
                        message.term
                    )
                })
            }
            // An ack from an older term may trail a truncation by that term's successor: it was
            // generated before the node left its term, which is all the commit proof needs.
            MessageBody::AppendEntriesResponse { reject: false, index, .. }
                if index > durable_last.unwrap_or(0) && message.term >= durable.hard_state.term =>
            {
                Some(format!("ack of index {index} sent while only {durable_last:?} is durable"))
            }
            _ => None,
        };
        match problem {
            Some(detail) => Err(("persist before send", format!("n{}: {detail}", message.from))),
            None => Ok(()),
        }
    }

    /// A RequestVote reached its voter: remember what log the candidate claimed.
    pub fn vote_requested(&mut self, message: &Message) {
        if let MessageBody::RequestVote { last_log_index, last_log_term, .. } = message.body {
            self.vote_requests.insert((message.from, message.term), (last_log_index, last_log_term));
        }
    }

    /// Protocol-aware recovery: a node that lost entries may only vote for a candidate whose log
    /// covers everything it may have acknowledged.
    pub fn check_vote_grant(&self, recovery: Option<Recovery>, message: &Message) -> Result<(), Failure> {
        let (MessageBody::RequestVoteResponse { granted: true }, Some(guard)) = (&message.body, recovery) else {
            return Ok(());
        };
        let Some(&(last_index, last_term)) = self.vote_requests.get(&(message.to, message.term)) else {
            return Ok(());
        };
        if guard.is_covered_by(last_term, last_index) {
            return Ok(());
        }
        Err((
            "recovering vote",
            format!(
                "n{} is recovering (guard {}@{}) and granted n{} a vote in term {} for a log ending at {last_index}@{last_term}",
                message.from, guard.index, guard.term, message.to, message.term
            ),
        ))
    }

    // ----- the cluster -----------------------------------------------------------------------------

    /// Checks the cluster-wide properties over every running node; `durable` holds every node's
    /// shadow (what its storage reported durable).
    pub fn observe(&mut self, nodes: &[&Raft], durable: &[&MemStorage]) -> Result<(), Failure> {
        for raft in nodes {
            self.check_election_safety(raft)?;
            self.check_commit(raft, durable)?;
        }
        for raft in nodes.iter().filter(|r| r.role() == Role::Leader) {
            self.check_leader_completeness(raft)?;
        }
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                check_log_matching(a, b)?;
            }
        }
        Ok(())
    }

    /// A committed entry must be durable on a majority at the moment it commits, or a power
    /// cut could lose it: checked when a node first reports it committed (the leader, in the
    /// step it commits). `durable` holds every node's shadow, running or not.
    ///
    /// Once a joint configuration is committed, a majority of its incoming voters (C_new) is
    /// enough: its leader appends C_new and counts by it at once, and every configuration a
    /// later leader can hold (C_old,new, C_new, or one after C_new committed) needs a C_new
    /// majority, which meets the holders. So a node seen joint after the step in which it
    /// committed by C_new (its C_new entry overwritten by a newer leader's log: raft-sim
    /// --membership seed 12478) is judged by the incoming voters only.
    fn check_commit_durability(
        index: Index,
        term: Term,
        durable: &[&MemStorage],
        config: &Configuration,
        joint_committed: bool,
    ) -> Result<(), Failure> {
        let incoming: Vec<NodeId> = config.voters().collect();
        let outgoing: Vec<NodeId> = if joint_committed { Vec::new() } else { config.outgoing().collect() };
        for voters in [incoming, outgoing].iter().filter(|v| !v.is_empty()) {
            let sets: Vec<&MemStorage> =
                voters.iter().filter_map(|&id| durable.get((id as usize).wrapping_sub(1)).copied()).collect();
            Checker::check_durable_on_majority(index, term, &sets, voters)?;
        }
        Ok(())
    }

    fn check_durable_on_majority(
        index: Index,
        term: Term,
        durable: &[&MemStorage],
        voters: &[NodeId],
    ) -> Result<(), Failure> {
        let majority = voters.len() / 2 + 1;
        // A node that lost the entry to damage after acknowledging it still counts if it is
        // recovering with a guard that covers it: it votes only for logs that hold it
        // (protocol-aware recovery), which is all a holder contributes to leader completeness.
        let holders = durable
            .iter()
            .filter(|d| {
                d.snapshot.as_ref().is_some_and(|s| s.index >= index)
                    || d.entries.iter().any(|e| e.index == index && e.term == term)
                    || d.recovery.is_some_and(|g| (g.term, g.index) >= (term, index))
            })
            .count();
        if holders >= majority {
            return Ok(());
        }
        let views: Vec<String> = durable
            .iter()
            .enumerate()
            .map(|(k, d)| {
                let at = d.entries.iter().find(|e| e.index == index).map(|e| e.term);
                let snap = d.snapshot.as_ref().map_or(0, |s| s.index);
                let id = voters.get(k).copied().unwrap_or(0);
                format!("n{id}: snapshot {snap} last {:?} term at {index}: {at:?}", d.last_index())
            })
            .collect();
        Err((
            "commit durability",
            format!(
                "entry {index}@{term} is committed but durable on only {holders} of the voters {voters:?}: {views:?}"
            ),
        ))
    }

    fn check_election_safety(&mut self, raft: &Raft) -> Result<(), Failure> {
        if raft.role() != Role::Leader {
            return Ok(());
        }
        let leader = *self.leaders.entry(raft.term()).or_insert(raft.id());
        if leader != raft.id() {
            return Err(("election safety", format!("n{leader} and n{} both lead term {}", raft.id(), raft.term())));
        }
        Ok(())
    }

    fn check_commit(&mut self, raft: &Raft, durable: &[&MemStorage]) -> Result<(), Failure> {
        let id = raft.id();
        let committed = raft.committed();
        let previous = self.last_commit.get(&id).copied();
        if previous.is_some_and(|p| committed < p) {
            return Err(("commit monotonic", format!("n{id} commit went from {previous:?} to {committed}")));
        }
        if raft.applied() > committed || committed > raft.last_index() {
            return Err((
                "index order",
                format!("n{id} applied {} commit {committed} last {}", raft.applied(), raft.last_index()),
            ));
        }
        let from = previous.unwrap_or(0).max(raft.snapshot_index()) + 1;
        // Entries the core evicted to the WAL are known by term only; their data is filled in
        // when a node that still holds them in memory reports them.
        let mut in_memory = raft.log_entries().filter(|e| e.index >= from && e.index <= committed).peekable();
        for index in from..=committed {
            let data = match in_memory.peek() {
                Some(e) if e.index == index => in_memory.next().map(|e| e.data.clone()),
                _ => None,
            };
            let Some(term) = raft.log_term(index) else { continue };
            match self.committed.get_mut(&index) {
                Some(c) if c.term != term || data.as_ref().zip(c.data.as_ref()).is_some_and(|(a, b)| a != b) => {
                    return Err((
                        "committed entry changed",
                        format!("n{id} has {data:?}@{term} committed at {index}, earlier {:?}@{}", c.data, c.term),
                    ));
                }
                Some(c) => {
                    if c.data.is_none() {
                        c.data = data;
                    }
                }
                None => {
                    let conf = raft.configuration();
                    let joint_committed = conf.is_joint() && raft.committed() >= raft.configuration_index();
                    Checker::check_commit_durability(index, term, durable, conf, joint_committed)?;
                    self.committed.insert(index, CommittedEntry { term, data, commit_term: raft.term() });
                }
            }
        }
        self.last_commit.insert(id, committed);
        Ok(())
    }

    fn check_leader_completeness(&self, leader: &Raft) -> Result<(), Failure> {
        let term = leader.term();
        let first = leader.snapshot_index() + 1;
        let in_memory = leader.mem_first_index();
        for (&index, c) in self.committed.range(first..) {
            if c.commit_term >= term {
                continue;
            }
            // Entries evicted to the WAL are checked by term (log matching covers the rest).
            let has = if index >= in_memory {
                leader
                    .log_entries()
                    .nth((index - in_memory) as usize)
                    .is_some_and(|e| e.term == c.term && c.data.as_ref().is_none_or(|d| *d == e.data))
            } else {
                leader.log_term(index) == Some(c.term)
            };
            if !has {
                return Err((
                    "leader completeness",
                    format!(
                        "leader n{} of term {term} lacks entry {index}@{} committed in term {}",
                        leader.id(),
                        c.term,
                        c.commit_term
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Log matching over the overlap of two in-memory logs.
fn check_log_matching(a: &Raft, b: &Raft) -> Result<(), Failure> {
    let lo = a.mem_first_index().max(b.mem_first_index());
    let hi = a.last_index().min(b.last_index());
    if lo > hi {
        return Ok(());
    }
    let a_entries: Vec<&Entry> =
        a.log_entries().skip((lo - a.mem_first_index()) as usize).take((hi - lo + 1) as usize).collect();
    let b_entries: Vec<&Entry> =
        b.log_entries().skip((lo - b.mem_first_index()) as usize).take((hi - lo + 1) as usize).collect();
    let Some(last_agree) = (0..a_entries.len()).rev().find(|&k| a_entries[k].term == b_entries[k].term) else {
        return Ok(());
    };
    for k in 0..=last_agree {
        if a_entries[k].term != b_entries[k].term || a_entries[k].data != b_entries[k].data {
            return Err((
                "log matching",
                format!(
                    "n{} and n{} agree on term {} at index {} but differ at index {}",
                    a.id(),
                    b.id(),
                    a_entries[last_agree].term,
                    a_entries[last_agree].index,
                    a_entries[k].index
                ),
            ));
        }
    }
    Ok(())
}
