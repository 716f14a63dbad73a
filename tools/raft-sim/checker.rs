//! Safety properties, checked after every simulated step (paper Figure 3), plus a per-key
//! linearizability check of the client history.
//!
//! - Election safety: at most one leader per term.
//! - Log matching: if two logs hold an entry with the same index and term, the logs are identical
//!   up to and including that index.
//! - Leader completeness: an entry committed in term T is in the log of every leader of a term
//!   after T.
//! - State machine safety: no two nodes apply different entries at one index.
//! - Monotonicity: a node's commit and applied indices never decrease (within one incarnation;
//!   applied entries are consecutive).
//! - Linearizable reads and writes, per key: writes take effect in log order; a read returns the
//!   latest write acknowledged before it began, or a later (concurrent) one; a read never goes
//!   backwards relative to a read that completed before it began; a write acknowledged before
//!   another was invoked has the smaller log index.

use std::collections::BTreeMap;

use bytes::Bytes;
use mini_raft::raft::{Entry, Index, NodeId, Raft, Role, Term};

use crate::world::{Op, OpKind};

#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub step: u64,
    pub property: &'static str,
    pub detail: String,
}

struct CommittedEntry {
    term: Term,
    data: Bytes,
    /// The term in which some node first reported it committed (an upper bound on the real one).
    commit_term: Term,
}

pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    committed: BTreeMap<Index, CommittedEntry>,
    applied: BTreeMap<Index, (Term, Bytes)>,
    last_commit: BTreeMap<NodeId, Index>,
    last_applied: BTreeMap<NodeId, Index>,
    /// key -> (acknowledged at, log index) of acknowledged writes.
    acked_writes: BTreeMap<String, Vec<(u64, Index)>>,
    all_acked_writes: Vec<(u64, Index)>,
    /// key -> (completed at, index of the write it observed) of completed reads.
    completed_reads: BTreeMap<String, Vec<(u64, Index)>>,
}

type Failure = (&'static str, String);

impl Checker {
    pub fn new() -> Checker {
        Checker {
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            applied: BTreeMap::new(),
            last_commit: BTreeMap::new(),
            last_applied: BTreeMap::new(),
            acked_writes: BTreeMap::new(),
            all_acked_writes: Vec::new(),
            completed_reads: BTreeMap::new(),
        }
    }

    /// A node restarted: its volatile commit index starts over from what it persisted, and its
    /// state machine from its snapshot.
    pub fn node_restarted(&mut self, id: NodeId, applied: Index) {
        self.last_commit.remove(&id);
        self.last_applied.insert(id, applied);
    }

    pub fn snapshot_installed(&mut self, id: NodeId, index: Index) -> Result<(), String> {
        let last = self.last_applied.get(&id).copied().unwrap_or(0);
        if index <= last {
            return Err(format!("n{id} installed snapshot {index} but had already applied {last}"));
        }
        self.last_applied.insert(id, index);
        Ok(())
    }

    pub fn applied(&mut self, id: NodeId, entry: &Entry) -> Result<(), String> {
        let last = self.last_applied.get(&id).copied().unwrap_or(0);
        if entry.index != last + 1 {
            return Err(format!("n{id} applied index {} right after {last}", entry.index));
        }
        self.last_applied.insert(id, entry.index);
        match self.applied.get(&entry.index) {
            Some((term, data)) if *term != entry.term || *data != entry.data => Err(format!(
                "n{id} applied {:?}@{} at index {}, another node applied {:?}@{term}",
                entry.data, entry.term, entry.index, data
            )),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(entry.index, (entry.term, entry.data.clone()));
                Ok(())
            }
        }
    }

    /// Checks the cluster-wide properties over every live node.
    pub fn observe<'a>(&mut self, nodes: impl Iterator<Item = &'a Raft>) -> Result<(), Failure> {
        let nodes: Vec<&Raft> = nodes.collect();
        for raft in &nodes {
            self.check_election_safety(raft)?;
            self.check_commit(raft)?;
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

    fn check_commit(&mut self, raft: &Raft) -> Result<(), Failure> {
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
        for entry in raft.log_entries().filter(|e| e.index >= from && e.index <= committed) {
            match self.committed.get(&entry.index) {
                Some(c) if c.term != entry.term || c.data != entry.data => {
                    return Err((
                        "committed entry changed",
                        format!(
                            "n{id} has {:?}@{} committed at {}, earlier {:?}@{}",
                            entry.data, entry.term, entry.index, c.data, c.term
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    let record =
                        CommittedEntry { term: entry.term, data: entry.data.clone(), commit_term: raft.term() };
                    self.committed.insert(entry.index, record);
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
                    .is_some_and(|e| e.term == c.term && e.data == c.data)
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

    /// The term of the entry known committed at `index`, if any node has reported it.
    pub fn committed_term(&self, index: Index) -> Option<Term> {
        self.committed.get(&index).map(|c| c.term)
    }

    pub fn write_acked(&mut self, op: &Op, acked_at: u64) -> Result<(), String> {
        let (OpKind::Write { key, .. }, Some(index)) = (&op.kind, op.index) else { return Ok(()) };
        // Real-time order: a write acknowledged before this one began must precede it in the log.
        if let Some(&(at, earlier)) = self.all_acked_writes.iter().find(|&&(at, i)| at < op.invoked_at && i >= index) {
            return Err(format!("write at index {index} began after the write at {earlier} was acknowledged (t={at})"));
        }
        self.all_acked_writes.push((acked_at, index));
        self.acked_writes.entry(key.clone()).or_default().push((acked_at, index));
        Ok(())
    }

    pub fn read_completed(&mut self, op: &Op, completed_at: u64) -> Result<(), String> {
        let OpKind::Read { key } = &op.kind else { return Ok(()) };
        let seen = op.index.unwrap_or(0);
        let latest_acked = self
            .acked_writes
            .get(key)
            .and_then(|w| w.iter().filter(|&&(at, _)| at < op.invoked_at).map(|&(_, i)| i).max())
            .unwrap_or(0);
        if seen < latest_acked {
            return Err(format!(
                "read of {key} returned the write at index {seen}, but the write at {latest_acked} was acknowledged before the read began"
            ));
        }
        let latest_read = self
            .completed_reads
            .get(key)
            .and_then(|r| r.iter().filter(|&&(at, _)| at < op.invoked_at).map(|&(_, i)| i).max())
            .unwrap_or(0);
        if seen < latest_read {
            return Err(format!(
                "read of {key} returned the write at index {seen}, but an earlier read already returned index {latest_read}"
            ));
        }
        if seen > 0 {
            let expected =
                self.applied.get(&seen).and_then(|(_, data)| std::str::from_utf8(data).ok().map(str::to_owned));
            let matches = expected
                .as_deref()
                .and_then(|text| text.split(' ').nth(2))
                .is_some_and(|value| Some(value) == op.read_value.as_deref());
            if !matches {
                return Err(format!("read of {key} returned {:?}, entry {seen} holds {expected:?}", op.read_value));
            }
        }
        self.completed_reads.entry(key.clone()).or_default().push((completed_at, seen));
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
