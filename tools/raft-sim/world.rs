//! The simulated world: N real consensus cores, a lossy network, crashing disks, and clients.
//!
//! Everything is driven by one seeded RNG and a step counter; nothing reads a clock, iterates a
//! hash map or spawns a thread, so a seed always replays the same run byte for byte.
//!
//! A step is one tick of logical time. In each step: faults may start or heal; every live node
//! ticks (a few skip, as clocks drift); due messages are delivered; disks finish some in-flight
//! batches; clients submit writes and reads; and the checker runs over the whole cluster.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use mini_raft::raft::{
    ConfState, Entry, EntryKind, Index, LoadRequest, MemStorage, Message, MessageBody, NodeId, Raft, RaftConfig, Ready,
    Role, Snapshot, SnapshotMeta,
};

use crate::checker::{Checker, Violation};

/// The network never holds more than this many messages; beyond it new ones are dropped.
const NETWORK_QUEUE_MAX: usize = 10_000;
/// Clients keep at most this many operations outstanding.
const CLIENT_OPS_OUTSTANDING_MAX: usize = 16;
/// After every fault heals, the cluster must commit a fresh write on every node within this
/// many ticks (election 15–30 ticks, a few pre-vote rounds, snapshot retries: far below it).
pub const LIVENESS_TICKS_MAX: u64 = 1_000;
/// A probe write not yet committed is proposed again after this many ticks.
const LIVENESS_PROBE_RETRY_TICKS: u64 = 100;
/// Once live again, keep running (and checking) this many more steps.
const LIVENESS_QUIET_STEPS: u64 = 50;
/// Number of distinct keys clients touch: few, so reads and writes contend.
const KEYS: u64 = 4;
/// Trace lines kept for a violation report.
const TRACE_LINES_MAX: usize = 80;

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub nodes: u64,
    pub steps: u64,
    pub seed: u64,
}

/// Per-seed fault intensities, drawn from the seed so that runs vary in character.
#[derive(Clone, Debug)]
struct Faults {
    drop_per_mille: u64,
    duplicate_per_mille: u64,
    delay_ticks_max: u64,
    crash_per_mille: u64,
    partition_per_mille: u64,
    compact_every: u64,
    /// Replication shape: bytes per append (1 means one entry per message) and window size.
    append_bytes_max: usize,
    inflight_msgs_max: usize,
    /// Chance per step that a disk finishes its in-flight batch (slow disks widen crash windows).
    io_finish_per_mille: u64,
    /// Payload bytes of applied entries the core keeps in memory (tiny: followers are served by
    /// reading back from storage).
    log_window_bytes_max: usize,
}

/// The key-value state machine the simulated clients talk to: key -> (value, log index written).
#[derive(Default, Clone)]
struct StateMachine {
    applied: Index,
    values: BTreeMap<String, (String, Index)>,
}

impl StateMachine {
    fn encode(&self) -> Bytes {
        let mut out = format!("{}\n", self.applied);
        for (k, (v, i)) in &self.values {
            out.push_str(&format!("{k} {v} {i}\n"));
        }
        Bytes::from(out)
    }

    fn decode(data: &[u8]) -> StateMachine {
        let text = String::from_utf8_lossy(data);
        let mut lines = text.lines();
        let applied = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut values = BTreeMap::new();
        for line in lines {
            let parts: Vec<&str> = line.split(' ').collect();
            if let [k, v, i] = parts[..] {
                values.insert(k.to_string(), (v.to_string(), i.parse().unwrap_or(0)));
            }
        }
        StateMachine { applied, values }
    }
}

struct SimNode {
    id: NodeId,
    raft: Option<Raft>,
    durable: MemStorage,
    /// A ready batch being written: lost if the node crashes first.
    io: Option<Ready>,
    sm: StateMachine,
    incarnation: u64,
    down_until: u64,
    /// A stalled process (GC pause, VM freeze): no ticks, no messages, no disk until then.
    paused_until: u64,
    /// Reads confirmed by the core, waiting for the state machine to reach their index.
    reads_waiting_apply: Vec<(u64, Index)>,
}

#[derive(Clone, Debug)]
pub enum OpKind {
    Write { key: String, value: String },
    Read { key: String },
}

#[derive(Clone, Debug)]
pub struct Op {
    pub kind: OpKind,
    pub invoked_at: u64,
    pub completed_at: Option<u64>,
    /// For a write: its log index once acknowledged. For a read: the index of the write it saw.
    pub index: Option<Index>,
    pub read_value: Option<String>,
}

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub elections: u64,
    pub commits: u64,
    pub reads: u64,
    pub snapshots_installed: u64,
    pub crashes: u64,
    pub loads: u64,
}

struct InFlight {
    deliver_at: u64,
    seq: u64,
    message: Message,
}

pub struct World {
    opts: SimOptions,
    faults: Faults,
    rng: mini_raft::raft::rng::Rng,
    step: u64,
    /// Logical event clock for the history: strictly increasing, finer than steps.
    clock: u64,
    nodes: Vec<SimNode>,
    network: Vec<InFlight>,
    message_seq: u64,
    blocked: BTreeSet<(NodeId, NodeId)>,
    pub ops: Vec<Op>,
    /// (node, log index) -> op id of a proposed, not yet acknowledged write.
    pending_writes: BTreeMap<(NodeId, Index), usize>,
    /// (node, read ctx) -> op id.
    pending_reads: BTreeMap<(NodeId, u64), usize>,
    next_ctx: u64,
    pub checker: Checker,
    pub stats: Stats,
    trace: VecDeque<String>,
    healed_at: Option<u64>,
    liveness_probes: Vec<usize>,
    liveness_probe_at: Option<u64>,
    durability_checked_to: Index,
    /// Snapshot images by (index, term): the core moves metadata only; every node's image at one
    /// (index, term) is the same (state machine safety, which the checker verifies).
    images: BTreeMap<(Index, u64), Bytes>,
}

impl World {
    pub fn new(opts: SimOptions) -> World {
        let mut rng = mini_raft::raft::rng::Rng::new(opts.seed);
        let faults = Faults {
            drop_per_mille: rng.range(0, 150),
            duplicate_per_mille: rng.range(0, 60),
            delay_ticks_max: rng.range(1, 12),
            crash_per_mille: rng.range(0, 20),
            partition_per_mille: rng.range(0, 25),
            compact_every: rng.range(5, 40),
            append_bytes_max: [1, 64, 256, 4096][rng.range(0, 4) as usize],
            inflight_msgs_max: [1, 2, 8, 64][rng.range(0, 4) as usize],
            io_finish_per_mille: rng.range(100, 900),
            log_window_bytes_max: [0, 40, 1 << 20][rng.range(0, 3) as usize],
        };
        let nodes = (1..=opts.nodes)
            .map(|id| SimNode {
                id,
                raft: None,
                durable: MemStorage::default(),
                io: None,
                sm: StateMachine::default(),
                incarnation: 0,
                down_until: 0,
                paused_until: 0,
                reads_waiting_apply: Vec::new(),
            })
            .collect();
        let mut world = World {
            checker: Checker::new(),
            opts,
            faults,
            rng,
            step: 0,
            clock: 0,
            nodes,
            network: Vec::new(),
            message_seq: 0,
            blocked: BTreeSet::new(),
            ops: Vec::new(),
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            next_ctx: 1,
            stats: Stats::default(),
            trace: VecDeque::new(),
            healed_at: None,
            liveness_probes: Vec::new(),
            liveness_probe_at: None,
            durability_checked_to: 0,
            images: BTreeMap::new(),
        };
        for i in 0..world.nodes.len() {
            world.start_node(i);
        }
        world.note(format!("faults {:?}", world.faults));
        world
    }

    pub fn trace(&self) -> impl Iterator<Item = &String> {
        self.trace.iter()
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == TRACE_LINES_MAX {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("t={:<5} {line}", self.step));
    }

    fn tick_clock(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Runs the whole scenario: `steps` ticks of chaos, then every fault heals and the cluster
    /// must commit a fresh write on every node within `LIVENESS_TICKS_MAX` ticks.
    pub fn run(&mut self) -> Result<(), Violation> {
        while self.step < self.opts.steps {
            self.step += 1;
            self.inject_faults();
            self.one_step()?;
        }
        self.heal_everything();
        let mut quiet_steps = 0;
        while quiet_steps < LIVENESS_QUIET_STEPS {
            self.step += 1;
            self.one_step()?;
            if self.check_liveness()? {
                quiet_steps += 1;
            }
        }
        Ok(())
    }

    fn one_step(&mut self) -> Result<(), Violation> {
        self.restart_due_nodes();
        for i in 0..self.nodes.len() {
            // Clocks drift: a node occasionally misses a tick.
            if self.nodes[i].raft.is_some() && !self.is_paused(i) && !self.rng.chance(1, 50) {
                if let Some(raft) = self.nodes[i].raft.as_mut() {
                    raft.tick();
                }
            }
        }
        self.deliver_due_messages();
        for i in 0..self.nodes.len() {
            if self.is_paused(i) {
                continue;
            }
            if self.nodes[i].io.is_some() && self.rng.chance(self.faults.io_finish_per_mille, 1000) {
                self.finish_io(i)?;
            }
            self.start_io(i)?;
        }
        self.client_actions();
        for i in 0..self.nodes.len() {
            if self.is_paused(i) {
                continue;
            }
            self.start_io(i)?;
            // Messages that need no disk leave even while a batch is being written.
            let messages = self.nodes[i].raft.as_mut().map(|r| r.take_messages()).unwrap_or_default();
            for m in messages {
                self.send_checked(i, m)?;
            }
            let loads = self.nodes[i].raft.as_mut().map(|r| r.take_load_requests()).unwrap_or_default();
            self.serve_loads(i, loads)?;
        }
        self.observe()
    }

    // ----- nodes, disks, crashes -------------------------------------------------------------

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        let mut config =
            RaftConfig::new(node.id, (1..=self.opts.nodes).collect(), self.opts.seed ^ node.incarnation << 32);
        config.inflight_msgs_max = self.faults.inflight_msgs_max;
        config.append_bytes_max = self.faults.append_bytes_max;
        config.log_window_bytes_max = self.faults.log_window_bytes_max;
        let restored = node.durable.restored();
        node.sm = node
            .durable
            .snapshot
            .as_ref()
            .and_then(|s| self.images.get(&(s.index, s.term)))
            .map(|data| StateMachine::decode(data))
            .unwrap_or_default();
        match Raft::new(config, restored) {
            Ok(raft) => node.raft = Some(raft),
            Err(e) => panic!("node {} failed to restart from its own durable state: {e}", node.id),
        }
        self.checker.node_restarted(node.id, node.sm.applied);
        let line = format!("n{} start (incarnation {}, applied {})", node.id, node.incarnation, node.sm.applied);
        self.note(line);
    }

    fn is_paused(&self, i: usize) -> bool {
        self.step < self.nodes[i].paused_until
    }

    fn crash_node(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let lost = self.nodes[i].io.as_ref().map_or(0, |r| r.entries.len());
        let node = &mut self.nodes[i];
        node.raft = None;
        node.io = None; // the unsynced batch is lost, as after a power cut
        node.reads_waiting_apply.clear();
        node.down_until = self.step + self.rng.range(5, 80);
        self.pending_reads.retain(|&(n, _), _| n != id);
        self.stats.crashes += 1;
        self.note(format!("n{id} CRASH (lost {lost} unsynced entries)"));
    }

    fn restart_due_nodes(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].raft.is_none() && self.step >= self.nodes[i].down_until {
                self.start_node(i);
            }
        }
    }

    /// Takes the next ready batch: its immediate messages leave now, the rest waits for the disk.
    fn start_io(&mut self, i: usize) -> Result<(), Violation> {
        if self.nodes[i].io.is_some() {
            return Ok(());
        }
        let Some(raft) = self.nodes[i].raft.as_mut() else { return Ok(()) };
        if !raft.has_ready() {
            return Ok(());
        }
        let mut ready = raft.ready();
        if ready.role == Some(Role::Leader) {
            self.stats.elections += 1;
            let line = format!("n{} becomes LEADER term {}", self.nodes[i].id, ready.term);
            self.note(line);
        }
        let messages = std::mem::take(&mut ready.messages);
        let loads = std::mem::take(&mut ready.load_requests);
        self.nodes[i].io = Some(ready);
        self.serve_loads(i, loads)?;
        for m in messages {
            self.send_checked(i, m)?;
        }
        Ok(())
    }

    /// Reads entries the core evicted back from the node's durable log, as `raftd` does from its
    /// WAL, and hands them over (the messages they produce leave at once).
    fn serve_loads(&mut self, i: usize, loads: Vec<LoadRequest>) -> Result<(), Violation> {
        for request in loads {
            let node = &mut self.nodes[i];
            let Some(raft) = node.raft.as_mut() else { return Ok(()) };
            match node.durable.load(request.lo, request.max_bytes) {
                Some(entries) => raft.entries_loaded(request, entries),
                None => raft.load_failed(request),
            }
            self.stats.loads += 1;
            let messages = raft.take_messages();
            for m in messages {
                self.send_checked(i, m)?;
            }
        }
        Ok(())
    }

    /// The disk finished the batch: make it durable, release the messages that waited on it,
    /// apply, answer clients, advance, and maybe compact.
    fn finish_io(&mut self, i: usize) -> Result<(), Violation> {
        let Some(ready) = self.nodes[i].io.take() else { return Ok(()) };
        let id = self.nodes[i].id;
        self.nodes[i].durable.persist(&ready);
        for m in ready.persisted_messages.iter().cloned() {
            self.send_checked(i, m)?;
        }
        if let Some(snapshot) = &ready.snapshot {
            self.stats.snapshots_installed += 1;
            let image = self.images.get(&(snapshot.index, snapshot.term)).cloned().unwrap_or_default();
            self.nodes[i].sm = StateMachine::decode(&image);
            self.checker.snapshot_installed(id, snapshot.index).map_err(|d| self.violation("applied monotonic", d))?;
            let line = format!("n{id} installed snapshot at {}", snapshot.index);
            self.note(line);
        }
        for entry in &ready.committed_entries {
            self.apply(i, entry)?;
        }
        for rs in &ready.read_states {
            self.nodes[i].reads_waiting_apply.push((rs.ctx, rs.index));
        }
        for ctx in &ready.dropped_reads {
            self.pending_reads.remove(&(id, *ctx));
        }
        self.serve_reads(i)?;
        if let Some(raft) = self.nodes[i].raft.as_mut() {
            raft.advance();
        }
        self.maybe_compact(i);
        Ok(())
    }

    fn apply(&mut self, i: usize, entry: &Entry) -> Result<(), Violation> {
        let id = self.nodes[i].id;
        self.checker.applied(id, entry).map_err(|d| self.violation("state machine safety", d))?;
        let sm = &mut self.nodes[i].sm;
        if entry.index <= sm.applied {
            return Ok(()); // replay below a restored snapshot
        }
        sm.applied = entry.index;
        if entry.kind == EntryKind::Normal {
            if let Some((key, value)) = parse_command(&entry.data) {
                sm.values.insert(key, (value, entry.index));
            }
        }
        if let Some(op_id) = self.pending_writes.remove(&(id, entry.index)) {
            let expected = match &self.ops[op_id].kind {
                OpKind::Write { key, value } => command(op_id, key, value),
                OpKind::Read { .. } => Bytes::new(),
            };
            if entry.data == expected {
                let now = self.tick_clock();
                self.ops[op_id].completed_at = Some(now);
                self.ops[op_id].index = Some(entry.index);
                self.stats.commits += 1;
                let op = self.ops[op_id].clone();
                self.checker.write_acked(&op, now).map_err(|d| self.violation("linearizable write", d))?;
            }
        }
        Ok(())
    }

    fn serve_reads(&mut self, i: usize) -> Result<(), Violation> {
        let id = self.nodes[i].id;
        let applied = self.nodes[i].sm.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.nodes[i].reads_waiting_apply.drain(..).partition(|&(_, index)| index <= applied);
        self.nodes[i].reads_waiting_apply = waiting;
        for (ctx, read_index) in ready {
            let Some(op_id) = self.pending_reads.remove(&(id, ctx)) else { continue };
            let OpKind::Read { key } = self.ops[op_id].kind.clone() else { continue };
            let (value, index) = match self.nodes[i].sm.values.get(&key) {
                Some((v, idx)) => (Some(v.clone()), *idx),
                None => (None, 0),
            };
            let now = self.tick_clock();
            let op = &mut self.ops[op_id];
            op.completed_at = Some(now);
            op.index = Some(index);
            op.read_value = value;
            self.stats.reads += 1;
            let op = self.ops[op_id].clone();
            self.checker
                .read_completed(&op, now)
                .map_err(|d| self.violation("linearizable read", format!("n{id} read_index {read_index}: {d}")))?;
        }
        Ok(())
    }

    fn maybe_compact(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(raft) = node.raft.as_mut() else { return };
        let applied = node.sm.applied;
        if applied < raft.snapshot_index() + self.faults.compact_every || applied > raft.applied() {
            return;
        }
        let Some(term) = raft.log_term(applied) else { return };
        let snapshot = Snapshot {
            meta: SnapshotMeta { index: applied, term, conf: ConfState { voters: raft.voters() } },
            data: node.sm.encode(),
        };
        // Storage first (the snapshot file), then the core forgets the prefix.
        self.images.insert((applied, term), snapshot.data.clone());
        node.durable.compact(snapshot.meta.clone());
        if let Err(e) = raft.compact(snapshot.meta) {
            panic!("compaction refused by the core: {e}");
        }
    }

    // ----- network -----------------------------------------------------------------------------

    /// Persist-before-send (DESIGN.md): a vote request or grant leaves only once the vote is
    /// durable, an append acknowledgement only once the entries it covers are.
    fn send_checked(&mut self, i: usize, message: Message) -> Result<(), Violation> {
        let durable = &self.nodes[i].durable;
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
        if let Some(detail) = problem {
            return Err(self.violation("persist before send", format!("n{}: {detail}", self.nodes[i].id)));
        }
        self.send(message);
        Ok(())
    }

    fn send(&mut self, message: Message) {
        if self.network.len() >= NETWORK_QUEUE_MAX || self.rng.chance(self.faults.drop_per_mille, 1000) {
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate_per_mille, 1000) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = if self.rng.chance(1, 20) {
                self.rng.range(0, 4 * self.faults.delay_ticks_max + 1)
            } else {
                self.rng.range(0, self.faults.delay_ticks_max + 1)
            };
            self.message_seq += 1;
            self.network.push(InFlight {
                deliver_at: self.step + delay,
                seq: self.message_seq,
                message: message.clone(),
            });
        }
    }

    fn deliver_due_messages(&mut self) {
        let now = self.step;
        let (mut due, later): (Vec<InFlight>, Vec<InFlight>) =
            std::mem::take(&mut self.network).into_iter().partition(|m| m.deliver_at <= now);
        self.network = later;
        due.sort_by_key(|m| (m.deliver_at, m.seq));
        for inflight in due {
            let paused_until = self.nodes.get((inflight.message.to - 1) as usize).map_or(0, |n| n.paused_until);
            if now < paused_until {
                // A stalled process reads its socket buffers when it wakes up.
                self.network.push(InFlight { deliver_at: paused_until, ..inflight });
                continue;
            }
            let m = inflight.message;
            if self.blocked.contains(&(m.from, m.to)) {
                continue;
            }
            let Some(node) = self.nodes.get_mut((m.to - 1) as usize) else { continue };
            let Some(raft) = node.raft.as_mut() else { continue };
            if matches!(m.body, MessageBody::InstallSnapshot { .. } | MessageBody::RequestVote { .. }) {
                let line = format!("n{} -> n{} {} term {}", m.from, m.to, describe(&m.body), m.term);
                raft.step(m);
                self.note(line);
            } else {
                raft.step(m);
            }
        }
    }

    // ----- faults --------------------------------------------------------------------------------

    fn inject_faults(&mut self) {
        let n = self.nodes.len();
        if self.rng.chance(self.faults.crash_per_mille, 1000) {
            // Half the crashes hit a leader: that is where uncommitted entries are lost.
            let leader = self.live_leaders().into_iter().next().filter(|_| self.rng.chance(1, 2));
            let i = match leader {
                Some(id) => (id - 1) as usize,
                None => self.rng.range(0, n as u64) as usize,
            };
            if self.nodes[i].raft.is_some() {
                self.crash_node(i);
            }
        }
        if self.rng.chance(self.faults.crash_per_mille, 10_000) {
            // A power cut takes out every node at once; they come back at different times.
            self.note("POWER CUT".into());
            for i in 0..n {
                if self.nodes[i].raft.is_some() {
                    self.crash_node(i);
                }
            }
        }
        if self.rng.chance(self.faults.partition_per_mille, 1000) {
            match self.rng.range(0, 5) {
                4 => self.pause_node(),
                0 => self.partition_random_split(),
                1 => self.partition_one_way(),
                2 => self.isolate_leader(),
                _ => {
                    self.blocked.clear();
                    self.note("network healed".into());
                }
            }
        }
        if self.rng.chance(1, 400) && !self.blocked.is_empty() {
            self.blocked.clear();
            self.note("network healed".into());
        }
    }

    fn partition_random_split(&mut self) {
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let side: Vec<NodeId> = ids.iter().copied().filter(|_| self.rng.chance(1, 2)).collect();
        for &a in &side {
            for &b in ids.iter().filter(|b| !side.contains(b)) {
                self.blocked.insert((a, b));
                self.blocked.insert((b, a));
            }
        }
        self.note(format!("partition {side:?} | rest"));
    }

    /// Stalls a node (preferably a leader) for longer than an election timeout: when it wakes up
    /// it still believes it leads, which is exactly when a stale read would slip out.
    fn pause_node(&mut self) {
        let leader = self.live_leaders().into_iter().next().filter(|_| self.rng.chance(3, 4));
        let id = leader.unwrap_or_else(|| self.rng.range(1, self.nodes.len() as u64 + 1));
        let ticks = self.rng.range(20, 120);
        self.nodes[(id - 1) as usize].paused_until = self.step + ticks;
        self.note(format!("n{id} PAUSED for {ticks} ticks"));
    }

    fn partition_one_way(&mut self) {
        let n = self.nodes.len() as u64;
        let from = self.rng.range(1, n + 1);
        let to = self.rng.range(1, n + 1);
        if from != to {
            self.blocked.insert((from, to));
            self.note(format!("one-way partition n{from} -/-> n{to}"));
        }
    }

    fn isolate_leader(&mut self) {
        let Some(leader) = self.live_leaders().into_iter().next() else { return };
        for other in self.nodes.iter().map(|n| n.id).filter(|&o| o != leader) {
            self.blocked.insert((leader, other));
            self.blocked.insert((other, leader));
        }
        self.note(format!("isolate leader n{leader}"));
    }

    fn heal_everything(&mut self) {
        self.blocked.clear();
        self.faults.drop_per_mille = 0;
        self.faults.duplicate_per_mille = 0;
        self.faults.delay_ticks_max = self.faults.delay_ticks_max.min(3);
        // A very slow disk is a fault too: with 10% completion per tick a vote needs two syncs of
        // ~10 ticks each, longer than the election timeout, and no election can finish (as for
        // any Raft whose fsync approaches its election timeout). Healing restores a sane disk.
        self.faults.io_finish_per_mille = self.faults.io_finish_per_mille.max(500);
        for i in 0..self.nodes.len() {
            self.nodes[i].paused_until = self.step;
            if self.nodes[i].raft.is_none() {
                self.nodes[i].down_until = self.step;
            }
        }
        self.healed_at = Some(self.step);
        self.note("ALL FAULTS HEALED".into());
    }

    /// After healing: a leader must emerge and a new write must reach every node in time.
    /// Returns true once that happened. A probe write lost with a deposed leader is re-proposed.
    fn check_liveness(&mut self) -> Result<bool, Violation> {
        let Some(healed) = self.healed_at else { return Ok(false) };
        let done = self
            .liveness_probes
            .iter()
            .filter_map(|&op| self.ops[op].index)
            .any(|index| self.nodes.iter().all(|n| n.raft.is_some() && n.sm.applied >= index));
        if done {
            return Ok(true);
        }
        let retry_due = self.liveness_probe_at.is_none_or(|at| self.step - at >= LIVENESS_PROBE_RETRY_TICKS);
        if retry_due {
            if let Some(leader) = self.live_leaders().into_iter().next() {
                if let Some(op) = self.propose_write(leader, "probe".into()) {
                    self.liveness_probes.push(op);
                    self.liveness_probe_at = Some(self.step);
                }
            }
        }
        if self.step - healed > LIVENESS_TICKS_MAX {
            let state: Vec<String> = self
                .nodes
                .iter()
                .map(|n| match &n.raft {
                    Some(r) => format!(
                        "n{}:{} t{} c{} a{} last {} progress {:?} io {}",
                        n.id,
                        r.role().name(),
                        r.term(),
                        r.committed(),
                        n.sm.applied,
                        r.last_index(),
                        r.progress(),
                        n.io.is_some()
                    ),
                    None => format!("n{}:down", n.id),
                })
                .collect();
            return Err(self.violation(
                "liveness",
                format!("{LIVENESS_TICKS_MAX} ticks after healing no probe write is applied everywhere: {state:?}"),
            ));
        }
        Ok(false)
    }

    // ----- clients -------------------------------------------------------------------------------

    fn live_leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| self.step >= n.paused_until && n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader))
            .map(|n| n.id)
            .collect()
    }

    fn client_actions(&mut self) {
        let outstanding = self.pending_writes.len() + self.pending_reads.len();
        if outstanding >= CLIENT_OPS_OUTSTANDING_MAX {
            return;
        }
        let leaders = self.live_leaders();
        if leaders.is_empty() {
            return;
        }
        // Clients do not know who the real leader is: any node that thinks it leads will do.
        let leader = leaders[self.rng.range(0, leaders.len() as u64) as usize];
        let key = format!("k{}", self.rng.range(0, KEYS));
        if self.rng.chance(3, 10) {
            self.propose_write(leader, key);
        } else if self.rng.chance(3, 10) {
            self.start_read(leader, key);
        }
    }

    fn propose_write(&mut self, leader: NodeId, key: String) -> Option<usize> {
        let op_id = self.ops.len();
        let value = format!("v{op_id}");
        let data = command(op_id, &key, &value);
        let raft = self.nodes[(leader - 1) as usize].raft.as_mut()?;
        let index = raft.propose(data).ok()?;
        let invoked_at = self.tick_clock();
        self.ops.push(Op {
            kind: OpKind::Write { key, value },
            invoked_at,
            completed_at: None,
            index: None,
            read_value: None,
        });
        self.pending_writes.insert((leader, index), op_id);
        Some(op_id)
    }

    fn start_read(&mut self, leader: NodeId, key: String) {
        let ctx = self.next_ctx;
        let Some(raft) = self.nodes[(leader - 1) as usize].raft.as_mut() else { return };
        if raft.read_index(ctx).is_err() {
            return;
        }
        self.next_ctx += 1;
        let invoked_at = self.tick_clock();
        let op_id = self.ops.len();
        self.ops.push(Op { kind: OpKind::Read { key }, invoked_at, completed_at: None, index: None, read_value: None });
        self.pending_reads.insert((leader, ctx), op_id);
    }

    // ----- checking ------------------------------------------------------------------------------

    fn observe(&mut self) -> Result<(), Violation> {
        let result = self.checker.observe(self.nodes.iter().filter_map(|n| n.raft.as_ref()));
        result.map_err(|(property, detail)| self.violation(property, detail))?;
        self.check_commit_durability()
    }

    /// A committed entry must be durable on a majority at the moment it commits, or a power
    /// cut could lose it.
    fn check_commit_durability(&mut self) -> Result<(), Violation> {
        let max_commit = self.nodes.iter().filter_map(|n| n.raft.as_ref()).map(|r| r.committed()).max().unwrap_or(0);
        let majority = self.nodes.len() / 2 + 1;
        while self.durability_checked_to < max_commit {
            let index = self.durability_checked_to + 1;
            let Some(term) = self.checker.committed_term(index) else { break };
            let holders = self
                .nodes
                .iter()
                .filter(|n| {
                    n.durable.snapshot.as_ref().is_some_and(|s| s.index >= index)
                        || n.durable.entries.iter().any(|e| e.index == index && e.term == term)
                })
                .count();
            if holders < majority {
                let detail = format!("entry {index}@{term} is committed but durable on only {holders} nodes");
                return Err(self.violation("commit durability", detail));
            }
            self.durability_checked_to = index;
        }
        Ok(())
    }

    fn violation(&self, property: &'static str, detail: String) -> Violation {
        Violation { seed: self.opts.seed, step: self.step, property, detail }
    }
}

fn command(op_id: usize, key: &str, value: &str) -> Bytes {
    Bytes::from(format!("{op_id} {key} {value}"))
}

fn parse_command(data: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut parts = text.split(' ');
    let _op = parts.next()?;
    Some((parts.next()?.to_string(), parts.next()?.to_string()))
}

fn describe(body: &MessageBody) -> String {
    match body {
        MessageBody::InstallSnapshot { meta } => format!("InstallSnapshot@{}", meta.index),
        MessageBody::RequestVote { last_log_index, last_log_term } => {
            format!("RequestVote(last {last_log_index}/{last_log_term})")
        }
        other => other.name().to_string(),
    }
}
