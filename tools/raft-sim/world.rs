//! The simulated world: N real nodes (replica + WAL + snapshot store on simulated disks, started
//! by the real recovery), a lossy network, clients running the real client rules, and faults.
//!
//! Everything is driven by one seeded RNG and a step counter; nothing reads a clock, iterates a
//! hash map or spawns a thread, so a seed always replays the same run byte for byte.
//!
//! A step is one tick of logical time, and one iteration of every node's event loop: faults may
//! start or heal; stopped nodes restart; every running node ticks (a few skip, as clocks drift);
//! due network items arrive; the storage lanes finish some jobs and their outcomes reach the
//! replicas; clients act; every node flushes (proposes, takes its next batch) and its output is
//! routed; the checker runs. After `steps` steps every fault heals and the cluster must serve
//! every client again (liveness), then the history must be linearizable.

use std::collections::VecDeque;

use mini_raft::history::{check_with, CheckConfig, KeyVerdict};
use mini_raft::raft::membership::Configuration;
use mini_raft::raft::rng::Rng;
use mini_raft::raft::{MessageBody, NodeId, Role};
use mini_raft::server::replica::SnapshotPolicy;
use mini_raft::server::requests::Waiter;
use mini_raft::storage::WalOptions;

use crate::checker::{Checker, Failure, Violation};
use crate::clients::{Clients, Ctx, KEYS};
use crate::membership::{Membership, SPARES};
use crate::net::{ConnId, Net, NetFaults, Payload};
use crate::node::{NodeSettings, SimNode};

#[path = "figure8.rs"]
mod figure8;
use figure8::Figure8;

/// After every fault heals, every client must get a write acknowledged, then a read of every
/// key, and every running node must apply what committed, within this many ticks.
pub const LIVENESS_TICKS_MAX: u64 = 2_000;
/// Once live again, keep running (and checking) this many more steps.
const LIVENESS_QUIET_STEPS: u64 = 50;
/// Trace lines kept for a violation report.
const TRACE_LINES_MAX: usize = 100;
/// Search budget of the linearizability check per key (a few hundred operations per key need
/// far less; a key that runs out counts as unknown).
const HISTORY_SEARCH_STEPS_MAX: u64 = 20_000_000;

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub nodes: u64,
    pub steps: u64,
    pub seed: u64,
    /// Keep every trace line (for `--trace`), not only the last ones.
    pub full_trace: bool,
    /// Random membership changes and transfers, with spare nodes (`membership.rs`).
    pub membership: bool,
}

/// Per-seed fault intensities, drawn from the seed so that runs vary in character.
#[derive(Clone, Debug)]
struct Faults {
    crash_per_mille: u64,
    partition_per_mille: u64,
    /// Chance per step, in 1/10,000, of a cluster-wide power cut.
    power_cut_per_10k: u64,
    /// A leader replicates to one follower only, then dies: the Figure 8 shape.
    figure8_per_mille: u64,
    eio_per_10k: u64,
    enospc_per_10k: u64,
    /// Latent damage to synced data, on this seed's one rotting disk.
    rot_per_10k: u64,
}

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub elections: u64,
    pub commits: u64,
    pub reads: u64,
    pub snapshots_installed: u64,
    pub crashes: u64,
    pub power_cuts: u64,
    pub loads: u64,
    pub registrations: u64,
    pub sessions_expired: u64,
    pub unknown_outcomes: u64,
    pub recoveries: u64,
    pub rot: u64,
    pub eio: u64,
    pub enospc: u64,
    pub storage_failures: u64,
    pub start_failures: u64,
    pub chunks_corrupted: u64,
    pub snapshots_refused: u64,
    pub images_compared: u64,
    pub history_ops: u64,
    pub history_unknown_keys: u64,
    /// Latent errors aimed at a WAL's unconfirmed final batch.
    pub rot_final_batch: u64,
    /// Directed Figure 8 scripts started (see `figure8.rs`).
    pub figure8_scripts: u64,
    /// Membership changes the leader accepted, refused; leadership transfers started; leaders
    /// that proposed their own removal.
    pub conf_changes: u64,
    pub conf_refused: u64,
    pub transfers: u64,
    pub leaders_removed: u64,
}

/// Where the liveness check after healing is.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Every client must get a write acknowledged.
    Writes,
    /// No new writes; every outstanding one must complete.
    Drain,
    /// Every client reads `key`.
    Reads { key: u64, reads_before: u64 },
    /// Every running node (a majority at least) applies what committed.
    Apply { target: u64 },
}

impl Stats {
    /// Every counter with its name, in the order they are printed.
    pub fn named(&self) -> [(&'static str, u64); 27] {
        [
            ("elections", self.elections),
            ("commits", self.commits),
            ("reads", self.reads),
            ("snapshots_installed", self.snapshots_installed),
            ("crashes", self.crashes),
            ("power_cuts", self.power_cuts),
            ("loads", self.loads),
            ("registrations", self.registrations),
            ("sessions_expired", self.sessions_expired),
            ("unknown_outcomes", self.unknown_outcomes),
            ("recoveries", self.recoveries),
            ("rot", self.rot),
            ("eio", self.eio),
            ("enospc", self.enospc),
            ("storage_failures", self.storage_failures),
            ("start_failures", self.start_failures),
            ("chunks_corrupted", self.chunks_corrupted),
            ("snapshots_refused", self.snapshots_refused),
            ("images_compared", self.images_compared),
            ("history_ops", self.history_ops),
            ("history_unknown_keys", self.history_unknown_keys),
            ("rot_final_batch", self.rot_final_batch),
            ("figure8_scripts", self.figure8_scripts),
            ("conf_changes", self.conf_changes),
            ("conf_refused", self.conf_refused),
            ("transfers", self.transfers),
            ("leaders_removed", self.leaders_removed),
        ]
    }

    pub fn add(&mut self, o: &Stats) {
        let fields: [(&mut u64, u64); 27] = [
            (&mut self.elections, o.elections),
            (&mut self.commits, o.commits),
            (&mut self.reads, o.reads),
            (&mut self.snapshots_installed, o.snapshots_installed),
            (&mut self.crashes, o.crashes),
            (&mut self.power_cuts, o.power_cuts),
            (&mut self.loads, o.loads),
            (&mut self.registrations, o.registrations),
            (&mut self.sessions_expired, o.sessions_expired),
            (&mut self.unknown_outcomes, o.unknown_outcomes),
            (&mut self.recoveries, o.recoveries),
            (&mut self.rot, o.rot),
            (&mut self.eio, o.eio),
            (&mut self.enospc, o.enospc),
            (&mut self.storage_failures, o.storage_failures),
            (&mut self.start_failures, o.start_failures),
            (&mut self.chunks_corrupted, o.chunks_corrupted),
            (&mut self.snapshots_refused, o.snapshots_refused),
            (&mut self.images_compared, o.images_compared),
            (&mut self.history_ops, o.history_ops),
            (&mut self.history_unknown_keys, o.history_unknown_keys),
            (&mut self.rot_final_batch, o.rot_final_batch),
            (&mut self.figure8_scripts, o.figure8_scripts),
            (&mut self.conf_changes, o.conf_changes),
            (&mut self.conf_refused, o.conf_refused),
            (&mut self.transfers, o.transfers),
            (&mut self.leaders_removed, o.leaders_removed),
        ];
        for (mine, theirs) in fields {
            *mine += theirs;
        }
    }
}

pub struct World {
    opts: SimOptions,
    faults: Faults,
    settings: NodeSettings,
    pub(crate) rng: Rng,
    step: u64,
    /// Logical event clock for the history: strictly increasing, finer than steps.
    clock: u64,
    pub(crate) nodes: Vec<SimNode>,
    net: Net,
    clients: Clients,
    checker: Checker,
    pub stats: Stats,
    trace: VecDeque<String>,
    /// The node whose disk may rot (one per seed, so that a majority always keeps its data).
    rotting: usize,
    /// Per node: the step its full disk frees up again.
    disk_full_until: Vec<Option<u64>>,
    /// (step, node): leaders to kill (the end of a Figure 8 shape).
    scheduled_kills: Vec<(u64, usize)>,
    /// (step, links): peer links to restore (the end of a paused leader's partition).
    scheduled_heals: Vec<(u64, Vec<(NodeId, NodeId)>)>,
    /// A directed Figure 8 in progress; no other fault is injected meanwhile.
    figure8: Option<Figure8>,
    last_role: Vec<Option<Role>>,
    /// Clients that start new operations (all of them until healing; then only as many as the
    /// session cap lets write without evicting one another; none once liveness is shown).
    submitting: usize,
    /// The membership driver, with `--membership`.
    pub(crate) membership: Option<Membership>,
    /// Each running node's configuration at the start of the step (for `check_campaign`).
    config_before: Vec<Option<Configuration>>,
}

impl World {
    pub fn new(opts: SimOptions) -> World {
        let mut rng = Rng::new(opts.seed);
        let net_faults = NetFaults {
            drop_per_mille: rng.range(0, 150),
            duplicate_per_mille: rng.range(0, 60),
            delay_ticks_max: rng.range(1, 12),
            chunk_corrupt_per_mille: [0, 0, 20, 100][rng.range(0, 4) as usize],
            client_drop_per_mille: rng.range(0, 30),
        };
        let faults = Faults {
            crash_per_mille: rng.range(0, 20),
            partition_per_mille: rng.range(0, 25),
            power_cut_per_10k: rng.range(0, 20),
            figure8_per_mille: [0, 2, 6, 12][rng.range(0, 4) as usize],
            eio_per_10k: [0, 0, 5, 20][rng.range(0, 4) as usize],
            enospc_per_10k: [0, 0, 5, 20][rng.range(0, 4) as usize],
            rot_per_10k: [0, 0, 10, 40][rng.range(0, 4) as usize],
        };
        // Small segments and snapshots, tiny windows: rotation, compaction, snapshot streaming
        // in many chunks and reads back from the WAL all happen within a short run.
        let segment_bytes = [16 << 10, 32 << 10, 64 << 10][rng.range(0, 3) as usize];
        let wal_options = WalOptions {
            spare_step_bytes: [0, 4096, 16 << 10][rng.range(0, 3) as usize],
            ..WalOptions::with_segment_bytes(segment_bytes)
        };
        // With membership changes, spare nodes start as joining nodes (no configuration).
        let total = if opts.membership { opts.nodes + SPARES } else { opts.nodes };
        let settings = NodeSettings {
            voters: (1..=opts.nodes).collect(),
            all_ids: (1..=total).collect(),
            wal_options,
            snapshot_policy: SnapshotPolicy { entries: rng.range(5, 60), log_bytes: rng.range(4 << 10, 64 << 10) },
            sessions_max: [2, 4, 1024][rng.range(0, 3) as usize],
            snapshot_chunk_bytes: [64, 512, 1 << 20][rng.range(0, 3) as usize],
            inflight_msgs_max: [1, 2, 8, 64][rng.range(0, 4) as usize],
            append_bytes_max: [1, 64, 256, 4096][rng.range(0, 4) as usize],
            log_window_bytes_max: [0, 40, 1 << 20][rng.range(0, 3) as usize],
            io_finish_per_mille: rng.range(100, 900),
        };
        let client_count = rng.range(2, 6) as usize;
        let value_filler = [0, 8, 64][rng.range(0, 3) as usize];
        let clients = Clients::new(client_count, total, &mut rng, value_filler);
        let rotting = rng.range(0, opts.nodes) as usize;
        let nodes = (1..=total).map(|id| SimNode::new(id, opts.seed)).collect();
        let n = total as usize;
        let membership = opts.membership.then(|| Membership::new(&mut rng));
        let bootstrap: Vec<NodeId> = (1..=opts.nodes).collect();
        let mut world = World {
            opts,
            faults,
            settings,
            rng,
            step: 0,
            clock: 0,
            nodes,
            net: Net::new(net_faults),
            clients,
            checker: Checker::new(bootstrap),
            stats: Stats::default(),
            trace: VecDeque::new(),
            rotting,
            disk_full_until: vec![None; n],
            scheduled_kills: Vec::new(),
            scheduled_heals: Vec::new(),
            figure8: None,
            last_role: vec![None; n],
            submitting: usize::MAX,
            membership,
            config_before: vec![None; n],
        };
        let line = format!(
            "faults {:?} net {:?} settings {:?} clients {client_count} rotting n{}",
            world.faults,
            world.net.faults,
            world.settings,
            rotting + 1
        );
        world.note(line);
        world
    }

    pub fn trace(&self) -> impl Iterator<Item = &String> {
        self.trace.iter()
    }

    pub(crate) fn note(&mut self, line: String) {
        if self.trace.len() == TRACE_LINES_MAX && !self.opts.full_trace {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("t={:<5} {line}", self.step));
    }

    /// A violation at the current step (for a panic caught around `run`).
    pub fn violation_now(&self, property: &'static str, detail: String) -> Violation {
        self.violation((property, detail))
    }

    fn violation(&self, (property, detail): Failure) -> Violation {
        Violation { seed: self.opts.seed, step: self.step, property, detail }
    }

    /// Runs the whole scenario: `steps` ticks of chaos, then every fault heals and the cluster
    /// must serve every client again; finally the history must be linearizable.
    pub fn run(&mut self) -> Result<(), Violation> {
        while self.step < self.opts.steps {
            self.step += 1;
            self.inject_faults();
            self.membership_step();
            self.one_step()?;
        }
        self.heal_everything();
        self.run_liveness()?;
        self.finish()
    }

    fn one_step(&mut self) -> Result<(), Violation> {
        self.restart_due_nodes()?;
        for (i, node) in self.nodes.iter().enumerate() {
            self.config_before[i] = node.raft().map(|r| r.configuration().clone());
        }
        self.kill_scheduled();
        self.heal_scheduled();
        self.release_full_disks();
        for i in 0..self.nodes.len() {
            // Clocks drift: a node occasionally misses a tick.
            let live = !self.nodes[i].is_paused(self.step);
            if live && !self.rng.chance(1, 50) {
                if let Some(replica) = self.nodes[i].replica_mut() {
                    replica.tick();
                }
            }
        }
        self.deliver_network()?;
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_paused(self.step) {
                continue;
            }
            let per_mille = self.settings.io_finish_per_mille;
            self.nodes[i].run_storage(&mut self.rng, per_mille);
            if let Err(e) = self.nodes[i].deliver_done(&mut self.rng, per_mille) {
                self.stats.storage_failures += 1;
                self.nodes[i].write_failed = true;
                self.stop_node(i, format!("stopped: {e}"), false);
            }
        }
        self.client_step();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_paused(self.step) {
                self.flush_node(i)?;
            }
        }
        self.observe()
    }

    // ----- nodes ---------------------------------------------------------------------------------

    fn restart_due_nodes(&mut self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if node.running.is_some() || self.step < node.down_until {
                continue;
            }
            let before = node.expected_durable();
            let (damaged, write_failed) = (node.damaged, node.write_failed);
            let id = node.id;
            match self.nodes[i].start(&self.settings, self.opts.seed) {
                Ok(started) => {
                    self.nodes[i].write_failed = false;
                    let r = self.checker.node_started(id, &before, &started, damaged, write_failed);
                    r.map_err(|f| self.violation(f))?;
                    if let Some(g) = started.recovery {
                        self.stats.recoveries += 1;
                        self.note(format!("n{id} starts RECOVERING (guard {}@{})", g.index, g.term));
                    }
                    let line = format!(
                        "n{id} start #{} (applied {}, last {}, term {})",
                        self.nodes[i].incarnation,
                        started.applied,
                        started.entries.last().map_or(started.applied, |e| e.index),
                        started.hard_state.term
                    );
                    self.note(line);
                    self.last_role[i] = None;
                }
                Err(e) => {
                    self.stats.start_failures += 1;
                    self.nodes[i].fs.process_restart();
                    self.nodes[i].down_until = self.step + 50;
                    self.note(format!("n{id} FAILS TO START: {e}"));
                    self.nodes[i].last_stop = Some(e);
                }
            }
        }
        Ok(())
    }

    /// Stops node `i`: kill -9 (its page cache survives) or a power cut of its machine.
    fn stop_node(&mut self, i: usize, why: String, power_cut: bool) {
        if self.nodes[i].running.is_none() {
            return;
        }
        let id = self.nodes[i].id;
        if power_cut {
            self.nodes[i].power_cut(&mut self.rng);
        } else {
            self.nodes[i].kill(why.clone());
        }
        self.nodes[i].down_until = self.step + self.rng.range(5, 80);
        for conn in self.clients.connections_to(id) {
            self.net.close_client(&mut self.rng, self.step, conn);
        }
        self.stats.crashes += 1;
        let how = if power_cut { "POWER CUT" } else { "KILL" };
        self.note(format!("n{id} {how}: {why}"));
    }

    fn kill_scheduled(&mut self) {
        let now = self.step;
        let due: Vec<usize> = self.scheduled_kills.iter().filter(|(at, _)| *at <= now).map(|&(_, i)| i).collect();
        self.scheduled_kills.retain(|(at, _)| *at > now);
        for i in due {
            self.stop_node(i, "figure 8: the leader dies with its entry on a minority".into(), false);
            let id = self.nodes[i].id;
            self.net.blocked.retain(|&(from, _)| from != id);
        }
    }

    fn release_full_disks(&mut self) {
        for i in 0..self.nodes.len() {
            if self.disk_full_until[i].is_some_and(|at| at <= self.step) {
                self.disk_full_until[i] = None;
                self.nodes[i].fs.set_space_left(None);
                let id = self.nodes[i].id;
                self.note(format!("n{id} disk has space again"));
            }
        }
    }

    /// One event-loop iteration's end on node `i`: flush the replica and route what it produced.
    fn flush_node(&mut self, i: usize) -> Result<(), Violation> {
        let id = self.nodes[i].id;
        let Some(replica) = self.nodes[i].replica_mut() else { return Ok(()) };
        if let Err(e) = replica.flush() {
            self.stats.storage_failures += 1;
            self.nodes[i].write_failed = true;
            self.stop_node(i, format!("stopped: {e}"), false);
            return Ok(());
        }
        let out = replica.take_output();
        let role = replica.raft().role();
        let recovery = replica.raft().recovery();
        let snapshot_index = replica.snapshot_index();
        if self.last_role[i] != Some(role) {
            if role == Role::Leader {
                self.stats.elections += 1;
                let term = replica.raft().term();
                self.note(format!("n{id} becomes LEADER term {term}"));
                let result = self.nodes[i].raft().map_or(Ok(()), |raft| self.checker.became_leader(raft));
                result.map_err(|f| self.violation(f))?;
            }
            self.last_role[i] = Some(role);
        }
        let Some(replica) = self.nodes[i].replica() else { return Ok(()) };
        let config = replica.raft().configuration().clone();
        let may_campaign = replica.raft().may_campaign();
        self.record_applied(i, &out.applied, snapshot_index)?;
        for message in out.messages {
            let before = self.config_before.get(i).and_then(|c| c.as_ref()).unwrap_or(&config);
            Checker::check_campaign(before, &config, may_campaign, &message).map_err(|f| self.violation(f))?;
            self.checker.check_send(&self.nodes[i].shadow, &message).map_err(|f| self.violation(f))?;
            self.checker.check_vote_grant(recovery, &message).map_err(|f| self.violation(f))?;
            self.net.send_peer(&mut self.rng, self.step, message);
        }
        for (waiter, body) in out.replies {
            let conn = ConnId { client: waiter.token, serial: waiter.serial };
            let payload = Payload::Reply { conn, request_id: waiter.request_id, body };
            self.net.send_client(&mut self.rng, self.step, payload);
        }
        self.nodes[i].submit(out.jobs);
        for leader in out.snapshot_rejections {
            self.stats.snapshots_refused += 1;
            self.note(format!("n{id} REFUSES the snapshot from n{leader}"));
            self.net.abort_stream(&mut self.rng, self.step, leader, id);
        }
        self.send_snapshot_chunks(i);
        Ok(())
    }

    /// Checks what node `i` applied in this iteration; a jump is a snapshot it installed.
    fn record_applied(
        &mut self,
        i: usize,
        applied: &[mini_raft::raft::Entry],
        snapshot_index: u64,
    ) -> Result<(), Violation> {
        let id = self.nodes[i].id;
        let jumps = self.checker.applied(id, applied, snapshot_index).map_err(|f| self.violation(f))?;
        self.stats.snapshots_installed += jumps;
        if snapshot_index > self.checker.last_applied(id) {
            // Installed a leader's snapshot and applied nothing after it yet.
            self.stats.snapshots_installed += 1;
            let image = self.nodes[i].replica().map(|r| r.kv()).filter(|kv| kv.applied_index() == snapshot_index);
            let image = image.map(|kv| kv.snapshot());
            let result = self.checker.snapshot_installed(id, snapshot_index, image);
            result.map_err(|f| self.violation(f))?;
            self.note(format!("n{id} installed a snapshot at {snapshot_index}"));
        }
        if !applied.is_empty() && self.rng.chance(1, 40) {
            // Now and then, hold the whole state machine against the reference.
            if let Some(replica) = self.nodes[i].replica() {
                let kv = replica.kv();
                self.checker.image_at(id, kv.applied_index(), kv.snapshot());
            }
        }
        Ok(())
    }

    /// Sends a snapshot chunk to each follower that has one ready (a link takes one a step).
    fn send_snapshot_chunks(&mut self, i: usize) {
        let Some(replica) = self.nodes[i].replica_mut() else { return };
        let ready = replica.snapshot_chunks_ready();
        for to in ready {
            let Some(replica) = self.nodes[i].replica_mut() else { return };
            let Some(chunk) = replica.take_snapshot_chunk(to) else { continue };
            let was_corrupted = self.net.chunks_corrupted;
            self.net.send_chunk(&mut self.rng, self.step, chunk);
            if self.net.chunks_corrupted > was_corrupted {
                self.stats.chunks_corrupted += 1;
            }
        }
    }

    // ----- network -------------------------------------------------------------------------------

    fn deliver_network(&mut self) -> Result<(), Violation> {
        let nodes = &self.nodes;
        let due = self.net.take_due(self.step, |id| nodes.get((id - 1) as usize).map_or(0, |n| n.paused_until));
        for payload in due {
            match payload {
                Payload::Peer(m) => {
                    if self.net.blocked.contains(&(m.from, m.to)) {
                        continue;
                    }
                    let Some(node) = self.nodes.get_mut((m.to - 1) as usize) else { continue };
                    let Some(replica) = node.replica_mut() else { continue };
                    if matches!(m.body, MessageBody::RequestVote { .. }) {
                        self.checker.vote_requested(&m);
                    }
                    replica.step(m);
                }
                Payload::Chunk(chunk) => {
                    let (leader, follower) = (chunk.from, chunk.to);
                    let blocked = self.net.blocked.contains(&(leader, follower));
                    let accepted = match self.nodes.get_mut((follower - 1) as usize).and_then(|n| n.replica_mut()) {
                        Some(replica) if !blocked => replica.snapshot_chunk_received(chunk).is_ok(),
                        _ => false,
                    };
                    if !accepted {
                        self.net.abort_stream(&mut self.rng, self.step, leader, follower);
                    }
                }
                Payload::SnapshotAborted { leader, follower } => {
                    if let Some(replica) = self.nodes.get_mut((leader - 1) as usize).and_then(|n| n.replica_mut()) {
                        replica.snapshot_send_failed(follower);
                    }
                }
                Payload::Request { conn, node, request_id, request } => {
                    let waiter = Waiter { token: conn.client, serial: conn.serial, request_id };
                    if let Some(replica) = self.nodes.get_mut((node - 1) as usize).and_then(|n| n.replica_mut()) {
                        replica.client_request(waiter, request);
                    }
                }
                reply @ (Payload::Reply { .. } | Payload::Closed { .. }) => {
                    self.with_clients(|clients, ctx| clients.deliver(ctx, reply));
                }
            }
        }
        Ok(())
    }

    /// Runs `f` on the clients with their view of the world (network, clock, which nodes are up).
    fn with_clients<R>(&mut self, f: impl FnOnce(&mut Clients, &mut Ctx) -> R) -> R {
        let nodes = &self.nodes;
        let up = |id: NodeId| nodes.get((id - 1) as usize).is_some_and(|n| n.running.is_some());
        let mut ctx = Ctx {
            rng: &mut self.rng,
            net: &mut self.net,
            now: self.step,
            clock: &mut self.clock,
            nodes: self.nodes.len() as u64,
            up: &up,
        };
        f(&mut self.clients, &mut ctx)
    }

    fn client_step(&mut self) {
        let submitting = self.submitting;
        self.with_clients(|clients, ctx| clients.act(ctx, submitting));
    }

    // ----- faults ----------------------------------------------------------------------------------

    pub(crate) fn live_leader(&self) -> Option<usize> {
        self.nodes.iter().position(|n| !n.is_paused(self.step) && n.raft().is_some_and(|r| r.role() == Role::Leader))
    }

    fn inject_faults(&mut self) {
        if self.figure8.is_some() {
            self.figure8_step();
            return;
        }
        if self.rng.chance(self.faults.figure8_per_mille, 3000) {
            self.figure8_start();
            return;
        }
        let n = self.nodes.len();
        if self.rng.chance(self.faults.crash_per_mille, 1000) {
            // Half the crashes hit a leader: that is where uncommitted entries are lost.
            let leader = self.live_leader().filter(|_| self.rng.chance(1, 2));
            let i = leader.unwrap_or_else(|| self.rng.range(0, n as u64) as usize);
            let power_cut = self.rng.chance(1, 2);
            self.stop_node(i, "crash".into(), power_cut);
        }
        if self.rng.chance(self.faults.power_cut_per_10k, 10_000) {
            // A power cut takes out every node at once; they come back at different times.
            self.stats.power_cuts += 1;
            self.note("CLUSTER POWER CUT".into());
            for i in 0..n {
                self.stop_node(i, "cluster power cut".into(), true);
            }
        }
        if self.rng.chance(self.faults.partition_per_mille, 1000) {
            match self.rng.range(0, 5) {
                4 => self.pause_node(),
                0 => self.partition_random_split(),
                1 => self.partition_one_way(),
                2 => self.isolate_leader(),
                _ => {
                    self.net.blocked.clear();
                    self.note("network healed".into());
                }
            }
        }
        if self.rng.chance(1, 400) && !self.net.blocked.is_empty() {
            self.net.blocked.clear();
            self.note("network healed".into());
        }
        if self.rng.chance(self.faults.figure8_per_mille, 1000) {
            self.figure8_shape();
        }
        self.storage_faults();
    }

    fn storage_faults(&mut self) {
        let n = self.nodes.len() as u64;
        if self.rng.chance(self.faults.eio_per_10k, 10_000) {
            let i = self.rng.range(0, n) as usize;
            self.nodes[i].fs.fail_next_sync();
            self.stats.eio += 1;
            let id = self.nodes[i].id;
            self.note(format!("n{id}: the next sync fails with EIO"));
        }
        if self.rng.chance(self.faults.enospc_per_10k, 10_000) {
            let i = self.rng.range(0, n) as usize;
            if self.disk_full_until[i].is_none() {
                let left = self.rng.range(0, 64 << 10);
                self.nodes[i].fs.set_space_left(Some(left));
                self.disk_full_until[i] = Some(self.step + self.rng.range(20, 300));
                self.stats.enospc += 1;
                let id = self.nodes[i].id;
                self.note(format!("n{id}: the disk fills up ({left} bytes left)"));
            }
        }
        let i = self.rotting;
        if self.rng.chance(self.faults.rot_per_10k, 10_000) && !self.nodes[i].rot_unread {
            let dir = self.nodes[i].dir().to_path_buf();
            self.nodes[i].dump(&format!("before-damage-t{}", self.step));
            // Half the time while the WAL's last batch is unconfirmed, aim at that batch: with
            // zero-filled segments this was the residual window (a zeroed final batch read as
            // never written); version 3 segments must report it as damage.
            // Otherwise, one time in eight, anywhere in a WAL file, unused space included (the
            // fill after the last batch: ignored in older segments, a recovery in the newest).
            let aimed = self.nodes[i].wal_unconfirmed() && self.rng.chance(1, 2);
            let damage = match aimed {
                true => self.nodes[i].damage_final_batch(&mut self.rng),
                false if self.rng.chance(1, 8) => self.nodes[i].damage_wal_anywhere(&mut self.rng),
                false => None,
            };
            let damage = damage.or_else(|| self.nodes[i].fs.corrupt_durable(&mut self.rng, &dir));
            if let Some(damage) = damage {
                self.nodes[i].damaged = true;
                self.nodes[i].rot_unread = true;
                self.nodes[i].caches_dropped = false;
                self.stats.rot += 1;
                self.stats.rot_final_batch += u64::from(aimed);
                let id = self.nodes[i].id;
                self.note(format!("n{id}: LATENT DAMAGE {damage:?}"));
                if self.rng.chance(1, 2) {
                    // The damage shows at the next start: the cache forgets the good copy.
                    self.nodes[i].fs.drop_caches();
                    self.nodes[i].caches_dropped = true;
                    self.stop_node(i, "restart over a damaged disk".into(), false);
                }
            }
        }
    }

    /// The Figure 8 shape (paper §5.4.2): the leader gets its new entries to one follower only,
    /// then dies. Later leaders of other terms hold conflicting suffixes; a leader that counted
    /// replicas of an old-term entry would commit what a later leader overwrites.
    fn figure8_shape(&mut self) {
        let Some(leader) = self.live_leader() else { return };
        let id = self.nodes[leader].id;
        let others: Vec<NodeId> = self.nodes.iter().map(|n| n.id).filter(|&o| o != id).collect();
        let keep = others[self.rng.range(0, others.len() as u64) as usize];
        for &o in others.iter().filter(|&&o| o != keep) {
            self.net.blocked.insert((id, o));
        }
        let at = self.step + self.rng.range(2, 25);
        self.scheduled_kills.push((at, leader));
        self.note(format!("figure 8: n{id} reaches only n{keep}, dies at t={at}"));
    }

    fn partition_random_split(&mut self) {
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let side: Vec<NodeId> = ids.iter().copied().filter(|_| self.rng.chance(1, 2)).collect();
        for &a in &side {
            for &b in ids.iter().filter(|b| !side.contains(b)) {
                self.net.blocked.insert((a, b));
                self.net.blocked.insert((b, a));
            }
        }
        self.note(format!("partition {side:?} | rest"));
    }

    /// Stalls a node (preferably a leader) for longer than an election timeout: when it wakes up
    /// it still believes it leads, which is exactly when a stale read would slip out.
    fn pause_node(&mut self) {
        let leader = self.live_leader().filter(|_| self.rng.chance(3, 4));
        let i = leader.unwrap_or_else(|| self.rng.range(0, self.nodes.len() as u64) as usize);
        let ticks = self.rng.range(20, 120);
        self.nodes[i].paused_until = self.step + ticks;
        let id = self.nodes[i].id;
        self.note(format!("n{id} PAUSED for {ticks} ticks"));
        if leader.is_some() && self.rng.chance(1, 2) {
            // The stale-read shape: the old leader wakes on the clients' side of a partition,
            // still sure it leads, while the others have moved on without it.
            let links: Vec<(NodeId, NodeId)> =
                self.nodes.iter().map(|n| n.id).filter(|&o| o != id).flat_map(|o| [(id, o), (o, id)]).collect();
            self.net.blocked.extend(links.iter().copied());
            let heal_at = self.step + ticks + self.rng.range(5, 40);
            self.scheduled_heals.push((heal_at, links));
            self.note(format!("n{id} is cut off from its peers until t={heal_at}; its clients still reach it"));
        }
    }

    fn heal_scheduled(&mut self) {
        let now = self.step;
        let (due, later): (Vec<_>, Vec<_>) = self.scheduled_heals.drain(..).partition(|(at, _)| *at <= now);
        self.scheduled_heals = later;
        for (_, links) in due {
            for link in links {
                self.net.blocked.remove(&link);
            }
        }
    }

    fn partition_one_way(&mut self) {
        let n = self.nodes.len() as u64;
        let from = self.rng.range(1, n + 1);
        let to = self.rng.range(1, n + 1);
        if from != to {
            self.net.blocked.insert((from, to));
            self.note(format!("one-way partition n{from} -/-> n{to}"));
        }
    }

    fn isolate_leader(&mut self) {
        let Some(leader) = self.live_leader() else { return };
        let id = self.nodes[leader].id;
        for other in self.nodes.iter().map(|n| n.id).filter(|&o| o != id) {
            self.net.blocked.insert((id, other));
            self.net.blocked.insert((other, id));
        }
        self.note(format!("isolate leader n{id}"));
    }

    fn heal_everything(&mut self) {
        if self.figure8.is_some() {
            self.figure8_end("the run is over");
        }
        self.net.heal();
        self.scheduled_kills.clear();
        self.scheduled_heals.clear();
        // A very slow disk is a fault too: with 10% completion per tick a vote needs two syncs of
        // ~10 ticks each, longer than the election timeout, and no election can finish (as for
        // any Raft whose fsync approaches its election timeout). Healing restores a sane disk.
        self.settings.io_finish_per_mille = self.settings.io_finish_per_mille.max(500);
        for i in 0..self.nodes.len() {
            self.nodes[i].paused_until = self.step;
            self.nodes[i].fs.set_space_left(None);
            self.disk_full_until[i] = None;
            if self.nodes[i].running.is_none() {
                self.nodes[i].down_until = self.step;
            }
        }
        self.note("ALL FAULTS HEALED".into());
    }

    // ----- liveness and the final check -------------------------------------------------------------

    /// After healing: every client gets a write acknowledged, then reads every key; every running
    /// node applies what committed; a majority runs.
    fn run_liveness(&mut self) -> Result<(), Violation> {
        let healed = self.step;
        self.clients.mark();
        // More writers than session slots evict each other for ever (each registration evicts
        // the least recently active session): a real limit, not a liveness bug. One slot is
        // left for a stale session of a registration whose answer was lost.
        let slots = (self.settings.sessions_max as usize).saturating_sub(1).max(1);
        self.submitting = self.clients.list.len().min(slots);
        let mut phase = Phase::Writes;
        let mut quiet = 0;
        while quiet < LIVENESS_QUIET_STEPS {
            self.step += 1;
            self.one_step()?;
            phase = match phase {
                Phase::Writes if self.clients.list[..self.submitting].iter().all(|c| c.acked_since_mark > 0) => {
                    self.submitting = 0;
                    Phase::Drain
                }
                Phase::Drain if self.clients.quiet() => self.start_final_reads(0),
                Phase::Reads { key, reads_before } if self.clients.quiet() => {
                    let all_read = self.clients.stats.reads_ok - reads_before == self.clients.list.len() as u64;
                    match (all_read, key + 1 < KEYS) {
                        (false, _) => self.start_final_reads(key), // some read was abandoned: again
                        (true, true) => self.start_final_reads(key + 1),
                        (true, false) => {
                            let rafts = self.nodes.iter().filter_map(|n| n.raft());
                            Phase::Apply { target: rafts.map(|r| r.committed()).max().unwrap_or(0) }
                        }
                    }
                }
                Phase::Apply { target } => {
                    // The members of the final configuration (all nodes without membership
                    // changes): a majority of its voters runs, and every running member applied
                    // what committed; the configuration is not left joint.
                    let (members, voters, joint) = self.final_configuration();
                    let running: Vec<_> =
                        self.nodes.iter().filter(|n| members.contains(&n.id)).filter_map(|n| n.replica()).collect();
                    let voters_up = running.iter().filter(|r| voters.contains(&r.raft().id())).count();
                    let majority = voters_up > voters.len() / 2;
                    if majority && !joint && running.iter().all(|r| r.kv().applied_index() >= target) {
                        quiet += 1;
                    }
                    phase
                }
                other => other,
            };
            if self.step - healed > LIVENESS_TICKS_MAX {
                return Err(self.violation(("liveness", self.stuck_report(phase))));
            }
        }
        Ok(())
    }

    /// Every client reads `key` (linearizably).
    fn start_final_reads(&mut self, key: u64) -> Phase {
        let reads_before = self.clients.stats.reads_ok;
        self.with_clients(|clients, ctx| clients.read_on_every_client(ctx, key));
        Phase::Reads { key, reads_before }
    }

    fn stuck_report(&self, phase: Phase) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match n.replica() {
                Some(r) => {
                    let raft = r.raft();
                    let progress: Vec<String> = raft
                        .follower_progress()
                        .iter()
                        .map(|p| format!("n{} {} m{} n{} inflight {}", p.id, p.state, p.matched, p.next, p.inflight))
                        .collect();
                    format!(
                        "n{}:{} t{} c{} a{} last {} io {} lanes {:?} recovering {:?} first {} progress {progress:?}",
                        n.id,
                        raft.role().name(),
                        raft.term(),
                        raft.committed(),
                        r.kv().applied_index(),
                        raft.last_index(),
                        r.io_busy() || n.storage_busy(),
                        n.lanes(),
                        raft.recovery(),
                        raft.first_index()
                    )
                }
                None => format!("n{}:down ({:?})", n.id, n.last_stop),
            })
            .collect();
        format!(
            "{LIVENESS_TICKS_MAX} ticks after healing the cluster still does not serve every client ({phase:?}): {nodes:?}; clients {:?}",
            self.clients.describe()
        )
    }

    /// The end: the clients' history must be linearizable.
    fn finish(&mut self) -> Result<(), Violation> {
        self.collect_stats();
        if let Some(problem) = self.clients.problems.first() {
            return Err(self.violation(("client protocol", problem.clone())));
        }
        let (history, answered_by) = self.clients.history();
        self.stats.history_ops = history.len() as u64;
        let config = CheckConfig {
            search_steps_max: HISTORY_SEARCH_STEPS_MAX,
            shrink_search_steps_max: HISTORY_SEARCH_STEPS_MAX,
            ..CheckConfig::default()
        };
        let report = check_with(&history, &config)
            .map_err(|e| self.violation(("history", format!("the recorded history is malformed: {e}"))))?;
        self.stats.history_unknown_keys =
            report.keys.iter().filter(|k| matches!(k.verdict, KeyVerdict::Unknown)).count() as u64;
        if let Some(v) = report.violations().next() {
            let mut detail = format!("the clients' history is not linearizable:\n{}", v.render(&|t| format!("t{t}")));
            for op in &v.ops {
                if let Some(Some((node, step))) = answered_by.get(op.index) {
                    detail.push_str(&format!("  #{} was answered by n{node} at step {step}\n", op.index));
                }
            }
            return Err(self.violation(("linearizability", detail)));
        }
        Ok(())
    }

    fn collect_stats(&mut self) {
        let c = &self.clients.stats;
        self.stats.commits = c.writes_ok;
        self.stats.reads = c.reads_ok;
        self.stats.registrations = c.registrations;
        self.stats.sessions_expired = c.sessions_expired;
        self.stats.unknown_outcomes = c.writes_unknown;
        self.stats.loads = self.nodes.iter().map(|n| n.loads).sum();
        self.stats.images_compared = self.checker.images_compared;
    }

    fn observe(&mut self) -> Result<(), Violation> {
        let rafts: Vec<_> = self.nodes.iter().filter_map(|n| n.raft()).collect();
        let result = self.checker.check_conf_entries();
        result.map_err(|f| self.violation(f))?;
        let shadows: Vec<_> = self.nodes.iter().map(|n| &n.shadow).collect();
        let result = self.checker.observe(&rafts, &shadows);
        result.map_err(|f| self.violation(f))?;
        let result = self.checker.compare_images();
        result.map_err(|f| self.violation(f))
    }
}
