//! The paper's scenarios as unit tests, driven through a small in-memory network.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::*;

mod membership;

struct TestNode {
    raft: Raft,
    durable: MemStorage,
    applied: Vec<Entry>,
    read_states: Vec<ReadState>,
    /// Load requests served from `durable` (entries the core evicted from memory).
    loads: usize,
}

struct Cluster {
    nodes: BTreeMap<NodeId, TestNode>,
    queue: VecDeque<Message>,
    /// Directed links that drop everything.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Every message delivered, in order.
    delivered: Vec<Message>,
}

fn config(id: NodeId, n: u64) -> RaftConfig {
    RaftConfig::new(id, (1..=n).collect(), 42)
}

fn entries_with_terms(terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &term)| Entry {
            index: i as u64 + 1,
            term,
            kind: EntryKind::Normal,
            data: Bytes::from(format!("{i}@{term}")),
        })
        .collect()
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        Cluster::with(n, |_| {}, &vec![&[][..]; n as usize], 0)
    }

    /// A cluster whose node `i+1` restarts from `logs[i]` (terms by index) at hard-state `term`.
    fn with(n: u64, tweak: impl Fn(&mut RaftConfig), logs: &[&[Term]], term: Term) -> Cluster {
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let mut cfg = config(id, n);
            tweak(&mut cfg);
            let durable = MemStorage {
                recovery: None,
                hard_state: HardState { term, vote: 0, commit: 0 },
                snapshot: None,
                entries: entries_with_terms(logs[(id - 1) as usize]),
            };
            let restored = durable.restored();
            let raft = Raft::new(cfg, restored).expect("valid restore");
            nodes.insert(id, TestNode { raft, durable, applied: Vec::new(), read_states: Vec::new(), loads: 0 });
        }
        Cluster { nodes, queue: VecDeque::new(), blocked: BTreeSet::new(), delivered: Vec::new() }
    }

    fn node(&self, id: NodeId) -> &Raft {
        &self.nodes[&id].raft
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Raft {
        &mut self.nodes.get_mut(&id).expect("node exists").raft
    }

    fn process_ready(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        while node.raft.has_ready() {
            let ready = node.raft.ready();
            self.queue.extend(ready.messages.iter().cloned());
            for request in ready.load_requests.iter().copied() {
                node.loads += 1;
                match node.durable.load(request.lo, request.max_bytes) {
                    Some(entries) => node.raft.entries_loaded(request, entries),
                    None => node.raft.load_failed(request),
                }
            }
            node.durable.persist(&ready);
            self.queue.extend(ready.persisted_messages.iter().cloned());
            node.applied.extend(ready.committed_entries.iter().cloned());
            node.read_states.extend(ready.read_states.iter().copied());
            node.raft.advance();
        }
    }

    /// Runs every ready batch and delivers every message until the cluster is quiet.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.process_ready(id);
            }
            let Some(m) = self.queue.pop_front() else { return };
            if !self.blocked.contains(&(m.from, m.to)) {
                if let Some(node) = self.nodes.get_mut(&m.to) {
                    self.delivered.push(m.clone());
                    node.raft.step(m);
                }
            }
        }
        panic!("cluster did not settle");
    }

    /// Settles, then lets one heartbeat interval pass: followers learn the commit index from the
    /// next append or heartbeat, not from an append of their own.
    fn settle_and_heartbeat(&mut self) {
        self.settle();
        self.tick_all(RaftConfig::new(1, vec![1], 0).heartbeat_ticks);
    }

    fn tick(&mut self, id: NodeId) {
        self.node_mut(id).tick();
        self.settle();
    }

    fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.node_mut(id).tick();
            }
            self.settle();
        }
    }

    /// Ticks only `id` until it starts campaigning, then lets the election run.
    fn elect(&mut self, id: NodeId) {
        for _ in 0..100 {
            self.node_mut(id).tick();
            if self.node(id).role() != Role::Follower {
                break;
            }
        }
        self.settle();
        assert_eq!(self.node(id).role(), Role::Leader, "node {id} should have won");
    }

    fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|&o| o != id).collect();
        for o in others {
            self.blocked.insert((id, o));
            self.blocked.insert((o, id));
        }
    }

    fn heal(&mut self) {
        self.blocked.clear();
    }

    fn terms(&self, id: NodeId) -> Vec<Term> {
        self.node(id).log_entries().map(|e| e.term).collect()
    }
}

#[test]
fn three_nodes_elect_a_leader_and_commit() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let index = c.node_mut(1).propose(Bytes::from_static(b"x")).expect("leader accepts");
    c.settle_and_heartbeat();
    for id in 1..=3 {
        assert_eq!(c.node(id).committed(), index, "node {id}");
        assert!(c.nodes[&id].applied.iter().any(|e| e.data.as_ref() == b"x"));
    }
}

#[test]
fn a_commit_sends_no_append_of_its_own_and_followers_learn_it_from_the_heartbeat() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.settle_and_heartbeat();
    c.delivered.clear();
    let index = c.node_mut(1).propose(Bytes::from_static(b"x")).expect("leader accepts");
    c.settle();
    assert_eq!(c.node(1).committed(), index);
    let appends: Vec<&Message> =
        c.delivered.iter().filter(|m| matches!(m.body, MessageBody::AppendEntries { .. })).collect();
    assert_eq!(appends.len(), 2, "one append per follower, carrying the entry: {appends:?}");
    for id in [2, 3] {
        assert!(c.node(id).committed() < index, "node {id} learnt the commit without a message for it");
    }
    c.tick_all(RaftConfig::new(1, vec![1], 0).heartbeat_ticks);
    for id in [2, 3] {
        assert_eq!(c.node(id).committed(), index, "node {id} learns the commit from the heartbeat");
    }
    // The next write carries it too.
    let next = c.node_mut(1).propose(Bytes::from_static(b"y")).expect("leader accepts");
    c.settle();
    c.node_mut(1).propose(Bytes::from_static(b"z")).expect("leader accepts");
    c.settle();
    assert!(c.node(2).committed() >= next && c.node(3).committed() >= next);
}

#[test]
fn single_node_commits_only_after_persisting() {
    let mut c = Cluster::new(1);
    c.elect(1);
    let index = c.node_mut(1).propose(Bytes::from_static(b"solo")).expect("leader");
    assert!(c.node(1).committed() < index, "must not commit before the entry is persisted");
    c.settle();
    assert_eq!(c.node(1).committed(), index);
}

/// Paper Figure 7: a leader of term 8 brings followers (a)–(f) in line with its log.
#[test]
fn figure_7_follower_logs_are_brought_in_line() {
    let leader: &[Term] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let logs: [&[Term]; 7] = [
        leader,
        &[1, 1, 1, 4, 4, 5, 5, 6, 6],
        &[1, 1, 1, 4],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
        &[1, 1, 1, 4, 4, 4, 4],
        &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    ];
    let mut c = Cluster::with(7, |_| {}, &logs, 7);
    c.elect(1);
    assert_eq!(c.node(1).term(), 8);
    let mut want = leader.to_vec();
    want.push(8); // the new leader's no-op
    c.settle_and_heartbeat();
    for id in 1..=7 {
        assert_eq!(c.terms(id), want, "follower {id} log");
        assert_eq!(c.node(id).committed(), 11, "follower {id} commit");
    }
}

#[test]
fn vote_is_refused_to_a_candidate_with_a_stale_log() {
    let mut c = Cluster::with(3, |_| {}, &[&[1, 1, 2], &[], &[]], 2);
    let mut ask = |last_log_index, last_log_term, term| {
        let node = c.node_mut(1);
        node.step(Message {
            from: 2,
            to: 1,
            term,
            body: MessageBody::RequestVote { last_log_index, last_log_term, transfer: false },
        });
        let ready = node.ready();
        node.advance();
        ready.persisted_messages.iter().find_map(|m| match m.body {
            MessageBody::RequestVoteResponse { granted } => Some(granted),
            _ => None,
        })
    };
    assert_eq!(ask(3, 1, 3), Some(false), "older last term");
    assert_eq!(ask(2, 2, 4), Some(false), "same last term, shorter log");
    assert_eq!(ask(3, 2, 5), Some(true), "equal log");
    assert_eq!(c.node(1).vote(), 2);
}

#[test]
fn vote_grant_waits_for_persistence() {
    let mut c = Cluster::new(3);
    let node = c.node_mut(1);
    node.step(Message {
        from: 2,
        to: 1,
        term: 1,
        body: MessageBody::RequestVote { last_log_index: 0, last_log_term: 0, transfer: false },
    });
    let ready = node.ready();
    assert!(ready.messages.is_empty(), "a grant must not leave before the vote is durable");
    assert_eq!(ready.hard_state.map(|hs| hs.vote), Some(2));
    assert_eq!(ready.persisted_messages.len(), 1);
}

/// Paper Figure 8: counting replicas commits only entries of the leader's current term.
#[test]
fn figure_8_old_term_entries_do_not_commit_by_counting() {
    let logs: [&[Term]; 5] = [&[1, 2], &[1, 2], &[1], &[1], &[1]];
    let mut c = Cluster::with(5, |_| {}, &logs, 2);
    c.blocked.extend((2..=5).map(|peer| (1, peer)));
    c.blocked.extend((2..=5).map(|peer| (peer, 1)));
    // Win the election by hand, without letting any append through.
    for _ in 0..100 {
        c.node_mut(1).tick();
        if c.node(1).role() != Role::Follower {
            break;
        }
    }
    let term = c.node(1).term() + 1;
    for peer in 2..=5 {
        c.node_mut(1).step(Message { from: peer, to: 1, term, body: MessageBody::PreVoteResponse { granted: true } });
    }
    for peer in 2..=5 {
        c.node_mut(1).step(Message {
            from: peer,
            to: 1,
            term,
            body: MessageBody::RequestVoteResponse { granted: true },
        });
    }
    assert_eq!(c.node(1).role(), Role::Leader);
    c.settle(); // persists the no-op at index 3; all messages are dropped
    let ack =
        |index| MessageBody::AppendEntriesResponse { reject: false, index, reject_hint_index: 0, reject_hint_term: 0 };
    for peer in [2, 3] {
        c.node_mut(1).step(Message { from: peer, to: 1, term, body: ack(2) });
    }
    c.settle();
    assert_eq!(c.node(1).committed(), 0, "index 2 (term 2) is on a majority but must not commit");
    c.node_mut(1).step(Message { from: 2, to: 1, term, body: ack(3) });
    c.node_mut(1).step(Message { from: 3, to: 1, term, body: ack(3) });
    c.settle();
    assert_eq!(c.node(1).committed(), 3, "a current-term entry on a majority commits, and its prefix with it");
}

#[test]
fn leader_steps_down_on_a_higher_term() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    c.node_mut(1).step(Message {
        from: 2,
        to: 1,
        term: term + 1,
        body: MessageBody::HeartbeatResponse { read_seq: 0 },
    });
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).term(), term + 1);
}

#[test]
fn pre_vote_keeps_a_rejoining_node_from_disturbing_the_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    c.isolate(3);
    c.tick_all(200);
    assert_eq!(c.node(3).term(), term, "an isolated node must not bump its term with pre-vote on");
    c.heal();
    c.tick_all(50);
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), term);
    assert_eq!(c.node(3).leader(), 1);
}

#[test]
fn without_pre_vote_a_rejoining_node_bumps_the_term() {
    // The control for the test above: proves the scenario really exercises pre-vote.
    let mut c = Cluster::with(3, |cfg| cfg.pre_vote = false, &[&[], &[], &[]], 0);
    c.elect(1);
    let term = c.node(1).term();
    c.isolate(3);
    c.tick_all(200);
    assert!(c.node(3).term() > term);
}

#[test]
fn check_quorum_steps_an_isolated_leader_down() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    for _ in 0..2 * 15 + 1 {
        c.tick(1);
    }
    assert_eq!(c.node(1).role(), Role::Follower, "a leader without a quorum must step down");
    assert_eq!(c.node(1).leader(), 0);
}

#[test]
fn read_index_waits_for_a_quorum_heartbeat_round() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.node_mut(1).read_index(7).expect("leader");
    c.settle();
    assert!(c.nodes[&1].read_states.is_empty(), "no quorum, no read");
    c.heal();
    c.tick_all(5); // next heartbeat round carries the read
    let reads = &c.nodes[&1].read_states;
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].ctx, 7);
    assert_eq!(reads[0].index, c.node(1).committed());
}

#[test]
fn deposed_leader_drops_pending_reads() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.node_mut(1).read_index(9).expect("leader");
    c.tick_all(40); // 2 and 3 elect a new leader; 1 steps down by check-quorum
    assert_ne!(c.node(1).role(), Role::Leader);
    assert!(c.nodes[&1].read_states.is_empty(), "a deposed leader must not serve the read");
}

#[test]
fn lagging_follower_catches_up_from_a_snapshot() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for i in 0..20 {
        c.node_mut(1).propose(Bytes::from(format!("v{i}"))).expect("leader");
        c.settle();
    }
    let applied = c.node(1).applied();
    let term = c.node(1).log_term(applied).expect("term");
    let snapshot = SnapshotMeta { index: applied, term, conf: ConfState::from_voters(vec![1, 2, 3]) };
    c.node_mut(1).compact(snapshot).expect("compact");
    c.heal();
    c.tick_all(10);
    assert_eq!(c.nodes[&3].durable.snapshot.as_ref().map(|s| s.index), Some(applied));
    assert_eq!(c.node(3).committed(), c.node(1).committed());
}

#[test]
fn restart_keeps_only_what_was_persisted() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1).propose(Bytes::from_static(b"a")).expect("leader");
    c.settle();
    let durable = c.nodes[&2].durable.clone();
    let restored = durable.restored();
    let raft = Raft::new(config(2, 3), restored).expect("restart");
    assert_eq!(raft.last_index(), c.node(2).last_index());
    assert_eq!(raft.term(), c.node(2).term());
}

#[test]
fn malformed_append_entries_never_reach_the_log() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    let last = c.node(2).last_index();
    let node = c.node_mut(2);
    let gap = vec![
        Entry { index: last + 1, term, kind: EntryKind::Normal, data: Bytes::new() },
        Entry { index: last + 5, term, kind: EntryKind::Normal, data: Bytes::new() },
    ];
    let body = MessageBody::AppendEntries { prev_log_index: last, prev_log_term: term, leader_commit: 0, entries: gap };
    node.step(Message { from: 1, to: 2, term, body });
    assert_eq!(node.last_index(), last, "a log with a hole must never be built");
    let older = vec![Entry { index: last + 1, term: term - 1, kind: EntryKind::Normal, data: Bytes::new() }];
    let body =
        MessageBody::AppendEntries { prev_log_index: last, prev_log_term: term, leader_commit: 0, entries: older };
    node.step(Message { from: 1, to: 2, term, body });
    assert_eq!(node.last_index(), last, "terms must not decrease along the log");
}

// ----- protocol-aware recovery ---------------------------------------------------------------

impl Cluster {
    /// Restarts `id` from its durable state minus every entry after `keep_last`: a disk that lost
    /// entries this node had acknowledged. `recovery` is what storage tells the core about it.
    fn restart_losing_entries(&mut self, id: NodeId, keep_last: Index, recovery: Option<Recovery>) {
        let n = self.nodes.len() as u64;
        let node = self.nodes.get_mut(&id).expect("node exists");
        node.durable.entries.retain(|e| e.index <= keep_last);
        node.durable.hard_state.commit = node.durable.hard_state.commit.min(keep_last);
        node.durable.recovery = recovery;
        node.raft = Raft::new(config(id, n), node.durable.restored()).expect("restart");
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.raft.role() == Role::Leader).map(|(&id, _)| id).collect()
    }
}

/// The reproduction of issue 8: an entry committed on {1, 2}; node 2 loses it; node 1 is down.
/// Returns the cluster, the entry's index and the term it was written in.
fn committed_on_two_then_lost(recovery: impl Fn(Term, Index) -> Option<Recovery>) -> (Cluster, Index, Term) {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    let index = c.node_mut(1).propose(Bytes::from_static(b"acked")).expect("leader");
    c.settle();
    assert_eq!(c.node(1).committed(), index, "committed by nodes 1 and 2");
    let term = c.node(1).term();
    c.restart_losing_entries(2, index - 1, recovery(term, index));
    c.heal();
    c.isolate(1); // node 1, the only other holder, is down
    (c, index, term)
}

#[test]
fn a_recovering_node_refuses_votes_behind_its_guard_and_never_campaigns() {
    let (mut c, index, term) = committed_on_two_then_lost(|t, i| Some(Recovery { term: t, index: i }));
    c.tick_all(200);
    assert_eq!(c.node(2).recovery(), Some(Recovery { term, index }));
    assert!(!c.leaders().contains(&2) && !c.leaders().contains(&3), "no leader without the lost entry");
    // Node 1 comes back: it holds the entry, wins, and node 2 catches up and votes again.
    c.heal();
    c.tick_all(200);
    let leader = c.leaders();
    assert_eq!(leader.len(), 1);
    for id in 1..=3 {
        assert_eq!(c.node(id).log_term(index), Some(term), "node {id} holds the acknowledged entry");
    }
    assert_eq!(c.node(2).recovery(), None, "caught up past its guard: a full voter again");
    assert_eq!(c.nodes[&2].durable.recovery, None, "and that is durable");
}

#[test]
fn without_recovery_a_lost_acknowledged_entry_is_overwritten() {
    // The control: the same loss, treated as a harmless torn tail, elects node 3 without the entry.
    let (mut c, index, term) = committed_on_two_then_lost(|_, _| None);
    c.tick_all(200);
    assert!(c.leaders().contains(&2) || c.leaders().contains(&3), "a leader lacking the entry wins");
    let leader = c.leaders()[0];
    c.node_mut(leader).propose(Bytes::from_static(b"other")).expect("leader");
    c.settle();
    assert_ne!(c.node(2).log_term(index), Some(term), "the committed entry is gone: the bug the guard prevents");
}

#[test]
fn an_unknown_guard_admits_only_candidates_of_a_newer_term() {
    let (mut c, _, term) = committed_on_two_then_lost(|t, _| Some(Recovery::unknown_extent(t)));
    c.tick_all(200);
    assert!(c.leaders().is_empty() || c.leaders() == [1], "nodes 2 and 3 cannot elect anyone");
    assert_eq!(c.node(2).recovery(), Some(Recovery::unknown_extent(term)));
}

#[test]
fn amnesia_is_detected_from_a_heartbeat_and_repaired_by_the_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for data in [&b"a"[..], b"b", b"c"] {
        c.node_mut(1).propose(Bytes::copy_from_slice(data)).expect("leader");
    }
    c.settle();
    let last = c.node(1).last_index();
    // Node 2's disk silently forgot its last two entries; storage noticed nothing.
    c.restart_losing_entries(2, last - 2, None);
    assert_eq!(c.node(2).recovery(), None);
    // The next heartbeat's commit (what node 2 acknowledged) is beyond its log: amnesia.
    for _ in 0..10 {
        c.node_mut(1).tick();
        c.process_ready(1);
        let heartbeat_came = c.queue.iter().any(|m| m.to == 2 && matches!(m.body, MessageBody::Heartbeat { .. }));
        if heartbeat_came {
            break;
        }
    }
    let heartbeat = c.queue.iter().position(|m| m.to == 2 && matches!(m.body, MessageBody::Heartbeat { .. }));
    let m = c.queue.remove(heartbeat.expect("a heartbeat to node 2")).expect("message");
    c.node_mut(2).step(m);
    let term = c.node(2).term();
    assert_eq!(c.node(2).recovery(), Some(Recovery::unknown_extent(term)), "the heartbeat revealed the loss");
    // LogLost makes the leader re-send what node 2 lost.
    c.settle();
    c.tick_all(20);
    assert_eq!(c.node(2).last_index(), last);
    // It may have acknowledged anything of this term, so it votes again only once a newer term
    // has an entry in its log: the next leader's no-op.
    assert!(c.node(2).recovery().is_some());
    c.isolate(1);
    c.tick_all(40); // node 1 steps down (check-quorum); nodes 2 and 3 cannot elect anyone
    assert!(c.leaders().is_empty(), "node 3 cannot win without node 2, which refuses a log of term {term}");
    c.heal();
    c.tick_all(60); // node 1 or 3 wins a newer term (node 2 votes only for a newer-term log)
    assert_eq!(c.leaders().len(), 1);
    assert_ne!(c.leaders(), [2], "a recovering node never campaigns");
    assert!(c.node(2).log_term(c.node(2).last_index()).is_some_and(|t| t > term));
    assert_eq!(c.node(2).recovery(), None, "a full voter again");
}

#[test]
fn a_log_lost_report_beyond_the_leaders_log_probes_from_the_leaders_end() {
    // A recovering follower may hold a longer suffix of an older term than the leader's whole
    // log (found by raft-sim: the leader probed beyond its own log and panicked).
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1).propose(Bytes::from_static(b"a")).expect("leader");
    c.settle();
    let (last, term) = (c.node(1).last_index(), c.node(1).term());
    let report = MessageBody::LogLost { last_index: last + 5, last_term: term - 1 };
    c.node_mut(1).step(Message { from: 2, to: 1, term, body: report });
    c.settle();
    c.node_mut(1).propose(Bytes::from_static(b"b")).expect("still the leader");
    c.settle();
    assert_eq!(c.node(2).last_index(), last + 1, "replication to the follower went on");
    assert_eq!(c.node(1).committed(), last + 1);
}

#[test]
fn a_log_lost_report_whose_last_entry_is_not_the_leaders_lets_the_probe_walk_back() {
    // Damage cut node 2 back to an older history: its entry 3 is of term 1 where the leader's is
    // of term 2, at an index node 2 had acknowledged. The leader must not keep index 3 as matched:
    // rejections at or below a match are ignored, so its probe would repeat prev 3 forever (found
    // by raft-sim seed 9091 x5 once commits stopped sending appends of their own).
    let logs: [&[Term]; 3] = [&[1, 1, 2, 2], &[1, 1, 2, 2], &[1, 1, 2, 2]];
    let mut c = Cluster::with(3, |_| {}, &logs, 2);
    c.elect(1);
    c.settle_and_heartbeat();
    let term = c.node(1).term();
    assert_eq!(c.node(1).committed(), 5);
    let node = c.nodes.get_mut(&2).expect("node 2");
    node.durable.entries = entries_with_terms(&[1, 1, 1]);
    node.durable.hard_state.commit = 1;
    node.durable.recovery = Some(Recovery::unknown_extent(term));
    node.raft = Raft::new(config(2, 3), node.durable.restored()).expect("restart");
    c.tick_all(30);
    assert_eq!(c.terms(2), c.terms(1), "node 2's log is brought in line with the leader's");
}

#[test]
fn a_recovering_follower_commits_from_heartbeats_only_what_appends_proved() {
    // Damage cut node 2's log back to an older history: its entries 2..3 are of term 1, while
    // the leader (term 3) committed entries of term 2 at those indexes, acknowledged by node 2
    // before the damage. The leader's heartbeat commit is what node 2 acknowledged, so taking it
    // would commit node 2's stale entries (found by raft-sim).
    let restored = Restored {
        hard_state: HardState { term: 3, vote: 0, commit: 1 },
        snapshot: None,
        entries: entries_with_terms(&[1, 1, 1]),
        log_terms: Vec::new(),
        applied: 0,
        recovery: Some(Recovery { term: 2, index: 3 }),
        conf_entries: Vec::new(),
    };
    let mut node = Raft::new(config(2, 3), restored).expect("valid restore");
    let heartbeat = |commit| Message { from: 1, to: 2, term: 3, body: MessageBody::Heartbeat { commit, read_seq: 0 } };
    node.step(heartbeat(3));
    assert_eq!(node.committed(), 1, "nothing this leader proved: the commit stays where storage had it");
    // An append that proves where the logs agree lets the heartbeat's commit in up to there.
    let leaders = entries_with_terms(&[1, 2, 2]);
    let append = MessageBody::AppendEntries {
        prev_log_index: 1,
        prev_log_term: 1,
        leader_commit: 1,
        entries: leaders[1..].to_vec(),
    };
    node.step(Message { from: 1, to: 2, term: 3, body: append });
    node.step(heartbeat(3));
    assert_eq!(node.committed(), 3);
    assert_eq!(node.log_term(3), Some(2), "the leader's entries replaced the stale ones");
}

#[test]
fn a_recovering_follower_reports_its_lost_log_again_while_the_leader_probes_past_its_end() {
    // Node 2 lost entries 3..5 it had acknowledged; its first LogLost to the leader is lost in the
    // network. The leader, which ignores rejections below what it believes node 2 matched, would
    // probe past node 2's end forever (found by raft-sim: a follower that never caught up).
    let restored = Restored {
        hard_state: HardState { term: 3, vote: 0, commit: 1 },
        snapshot: None,
        entries: entries_with_terms(&[1, 1]),
        log_terms: Vec::new(),
        conf_entries: Vec::new(),
        applied: 0,
        recovery: Some(Recovery { term: 3, index: 5 }),
    };
    let mut node = Raft::new(config(2, 3), restored).expect("valid restore");
    let heartbeat = Message { from: 1, to: 2, term: 3, body: MessageBody::Heartbeat { commit: 5, read_seq: 0 } };
    node.step(heartbeat);
    let first = node.take_messages();
    assert!(first.iter().any(|m| matches!(m.body, MessageBody::LogLost { last_index: 2, .. })), "{first:?}");
    let probe = MessageBody::AppendEntries { prev_log_index: 5, prev_log_term: 3, leader_commit: 5, entries: vec![] };
    for _ in 0..2 {
        node.step(Message { from: 1, to: 2, term: 3, body: probe.clone() });
        let sent = node.take_messages();
        assert!(
            sent.iter().any(|m| matches!(m.body, MessageBody::LogLost { last_index: 2, .. })),
            "a probe past the end is answered with LogLost again: {sent:?}"
        );
    }
}

// ----- bounded memory --------------------------------------------------------------------------

#[test]
fn a_follower_behind_the_memory_window_catches_up_from_storage_not_a_snapshot() {
    let mut c = Cluster::with(3, |cfg| cfg.log_window_bytes_max = 0, &[&[], &[], &[]], 0);
    c.elect(1);
    c.isolate(3);
    for i in 0..20u8 {
        c.node_mut(1).propose(Bytes::from(vec![i; 100])).expect("leader");
        c.settle();
    }
    let leader_last = c.node(1).last_index();
    assert_eq!(c.node(1).log_entries().count(), 0, "applied and durable entries were evicted");
    assert_eq!(c.node(1).log_term(5), Some(c.node(1).term()), "their terms are still known");
    c.heal();
    c.tick_all(20);
    assert_eq!(c.node(3).last_index(), leader_last);
    assert_eq!(c.node(3).committed(), leader_last);
    assert!(c.nodes[&1].loads > 0, "the leader read the evicted entries back");
    assert!(c.nodes[&3].durable.snapshot.is_none(), "no snapshot was needed");
    let applied: Vec<&[u8]> = c.nodes[&3].applied.iter().map(|e| e.data.as_ref()).filter(|d| !d.is_empty()).collect();
    assert_eq!(applied.len(), 20, "node 3 applied every write, in order");
}

#[test]
fn a_follower_behind_the_memory_window_has_at_most_one_load_outstanding() {
    // Every probe of a follower whose entries were evicted asked for another read of the WAL,
    // even with one outstanding; a recovering follower repeating LogLost piled up hundreds of
    // loads on the WAL lane ahead of the leader's own writes, and nothing committed (raft-sim).
    let mut c = Cluster::with(3, |cfg| cfg.log_window_bytes_max = 0, &[&[], &[], &[]], 0);
    c.elect(1);
    c.isolate(3);
    for i in 0..20u8 {
        c.node_mut(1).propose(Bytes::from(vec![i; 100])).expect("leader");
        c.settle();
    }
    let term = c.node(1).term();
    let mut loads = Vec::new();
    for _ in 0..5 {
        let lost = MessageBody::LogLost { last_index: 2, last_term: term };
        c.node_mut(1).step(Message { from: 3, to: 1, term, body: lost });
        loads.extend(c.node_mut(1).take_load_requests());
    }
    assert_eq!(loads.len(), 1, "one read back at a time: {loads:?}");
}

#[test]
fn a_restart_keeps_only_a_tail_in_memory() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for _ in 0..5 {
        c.node_mut(1).propose(Bytes::from_static(b"x")).expect("leader");
    }
    c.settle();
    let durable = c.nodes[&2].durable.clone();
    let last = durable.entries.last().map(|e| e.index).expect("entries");
    let commit = durable.hard_state.commit;
    // Storage hands over the terms of the whole log and only the entries after `commit`,
    // the state machine having applied the rest already.
    let mut restored = durable.restored();
    restored.log_terms = vec![(1, 1)];
    restored.entries.retain(|e| e.index > commit - 1);
    restored.applied = commit;
    let raft = Raft::new(config(2, 3), restored).expect("restore a tail");
    assert_eq!((raft.last_index(), raft.applied(), raft.mem_first_index()), (last, commit, commit));
    assert_eq!(raft.log_term(1), Some(1));
    // A tail that misses an unapplied entry is refused.
    let mut restored = durable.restored();
    restored.log_terms = vec![(1, 1)];
    restored.entries.retain(|e| e.index == last);
    restored.applied = commit.saturating_sub(2);
    assert!(Raft::new(config(2, 3), restored).is_err());
}
