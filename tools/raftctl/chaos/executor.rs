//! Carries out a nemesis timeline against the real processes ([`Procs`]) and links ([`Mesh`]),
//! printing each step as it happens and keeping the timeline as executed.
//!
//! "The leader" is resolved when a fault starts, by asking every running node for its `Status`
//! and taking the leader of the highest term (waiting up to [`LEADER_WAIT`] for one); a fault
//! aimed at the leader with none to be found is skipped, and the timeline says so. Between steps
//! the executor watches the processes: a node that exits on its own is an [`Anomaly`].
//!
//! Guarantees: steps run in timeline order, none before its time (late only by how long earlier
//! steps took); when [`Executor::run`] returns every fault it started is healed, whether the
//! timeline ended or the run was cut short.

use std::collections::BTreeMap;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use mini_raft::client::Client;
use mini_raft::wire::NodeRole;

use super::mesh::{Effect, Mesh};
use super::nemesis::{Action, Fault, FaultId, Links, NodeId, Shape, Step, Target};
use super::procs::{Anomaly, Procs};
use super::workload::Clock;

/// How long a fault aimed at the leader waits for one to exist.
const LEADER_WAIT: Duration = Duration::from_secs(1);
/// How often the executor looks at the processes while it waits for the next step.
const WATCH_INTERVAL: Duration = Duration::from_millis(20);
const STATUS_DEADLINE: Duration = Duration::from_millis(400);

/// One line of the executed timeline.
#[derive(Clone, Debug)]
pub struct Event {
    pub at_us: u64,
    /// The fault this line starts or heals, if any.
    pub fault: Option<(FaultId, bool)>,
    pub line: String,
}

/// What a started fault did, so that its heal undoes exactly that.
enum Applied {
    /// Killed with SIGKILL: start again.
    Killed(Vec<NodeId>),
    Paused(NodeId),
    /// Sent SIGTERM: wait for a clean exit, then start again.
    Stopped(NodeId),
    Network,
    Skipped,
}

/// The executor of one run.
pub struct Executor<'a> {
    procs: &'a mut Procs,
    mesh: &'a mut Mesh,
    clock: Clock,
    nodes: usize,
    /// Client addresses by node id - 1, for `Status`.
    addrs: Vec<String>,
    status: Client,
    active: BTreeMap<FaultId, Applied>,
    pub events: Vec<Event>,
    pub anomalies: Vec<(u64, Anomaly)>,
    /// Faults started, by kind name, and faults skipped for want of a leader.
    pub injected: BTreeMap<&'static str, u32>,
    pub skipped: u32,
}

impl<'a> Executor<'a> {
    pub fn new(
        procs: &'a mut Procs,
        mesh: &'a mut Mesh,
        clock: Clock,
        addrs: Vec<String>,
        cluster_id: u64,
    ) -> Result<Self, String> {
        let status = status_client(addrs.clone(), cluster_id)?;
        let nodes = addrs.len();
        let (active, events, anomalies, injected) = (BTreeMap::new(), Vec::new(), Vec::new(), BTreeMap::new());
        Ok(Executor { procs, mesh, clock, nodes, addrs, status, active, events, anomalies, injected, skipped: 0 })
    }

    /// Runs `steps` in time order until they end or `cut_short()` says to stop; then heals
    /// whatever is still active.
    pub fn run(&mut self, steps: &[Step], mut cut_short: impl FnMut() -> bool) {
        for step in steps {
            if !self.wait_until(self.clock.instant_at(step.at), &mut cut_short) {
                self.note(None, "run cut short: healing every active fault".to_string());
                break;
            }
            match &step.action {
                Action::Start(id, fault) => self.start(*id, fault),
                Action::Heal(id) => self.heal(*id),
            }
        }
        let still: Vec<FaultId> = self.active.keys().copied().collect();
        for id in still {
            self.heal(id);
        }
    }

    /// Sleeps until `at` watching the processes; false if `cut_short` fired first.
    pub fn wait_until(&mut self, at: Instant, cut_short: &mut impl FnMut() -> bool) -> bool {
        loop {
            self.watch();
            if cut_short() {
                return false;
            }
            let now = Instant::now();
            if now >= at {
                return true;
            }
            thread::sleep((at - now).min(WATCH_INTERVAL));
        }
    }

    /// Records every process that exited on its own.
    pub fn watch(&mut self) {
        for anomaly in self.procs.poll() {
            self.anomaly(anomaly);
        }
    }

    fn anomaly(&mut self, anomaly: Anomaly) {
        let at_us = self.clock.now_us();
        self.note(None, format!("ANOMALY: node {} {}", anomaly.node, anomaly.what));
        self.anomalies.push((at_us, anomaly));
    }

    /// Prints a timeline line at the current time and keeps it.
    pub fn note(&mut self, fault: Option<(FaultId, bool)>, text: String) {
        let at_us = self.clock.now_us();
        let line = format!("{:>8.2}s  {text}", at_us as f64 / 1e6);
        println!("{line}");
        let _ = std::io::stdout().flush();
        self.events.push(Event { at_us, fault, line });
    }

    fn start(&mut self, id: FaultId, fault: &Fault) {
        let leader = if aims_at_leader(fault) { self.find_leader() } else { None };
        let described = Action::Start(id, fault.clone()).to_string();
        let applied = match (aims_at_leader(fault), leader) {
            (true, None) => {
                self.note(Some((id, true)), format!("{described}  [no leader found: skipped]"));
                self.skipped += 1;
                self.active.insert(id, Applied::Skipped);
                return;
            }
            (true, Some(leader)) => {
                self.note(Some((id, true)), format!("{described}  [leader is n{leader}]"));
                self.apply(id, fault, Some(leader))
            }
            (false, _) => {
                self.note(Some((id, true)), described);
                self.apply(id, fault, None)
            }
        };
        *self.injected.entry(kind_name(fault)).or_default() += 1;
        match applied {
            Ok(applied) => {
                self.active.insert(id, applied);
            }
            Err(error) => {
                self.note(None, format!("ERROR: #{id} could not be applied: {error}"));
                self.anomalies.push((self.clock.now_us(), Anomaly { node: 0, what: error }));
                self.active.insert(id, Applied::Skipped);
            }
        }
    }

    fn apply(&mut self, id: FaultId, fault: &Fault, leader: Option<NodeId>) -> Result<Applied, String> {
        let target = |target: &Target| target.resolve(leader).ok_or_else(|| "no target".to_string());
        let nodes = self.nodes;
        Ok(match fault {
            Fault::Kill { target: node } => {
                let node = target(node)?;
                self.procs.kill(node)?;
                Applied::Killed(vec![node])
            }
            Fault::Pause { target: node } => {
                let node = target(node)?;
                self.procs.pause(node)?;
                Applied::Paused(node)
            }
            Fault::Restart { target: node } => {
                let node = target(node)?;
                self.procs.terminate(node)?;
                Applied::Stopped(node)
            }
            Fault::PowerCut => {
                let up: Vec<NodeId> = self.procs.ids().filter(|&node| self.procs.is_up(node)).collect();
                for &node in &up {
                    self.procs.kill(node)?;
                }
                Applied::Killed(up)
            }
            Fault::Partition { shape, blocking } => {
                let links = shape.links(nodes, leader);
                self.mesh.add(id, Effect::Block { links, blocking: *blocking });
                Applied::Network
            }
            Fault::OneWay { from, to, blocking } => {
                let links = [(*from, *to)].into_iter().collect();
                self.mesh.add(id, Effect::Block { links, blocking: *blocking });
                Applied::Network
            }
            Fault::Delay { links, fixed, jitter } => {
                let links = links.resolve(nodes, leader);
                self.mesh.add(id, Effect::Delay { links, fixed: *fixed, jitter: *jitter });
                Applied::Network
            }
            Fault::Lossy { links, per_mille } => {
                self.mesh.add(id, Effect::Lossy { links: links.resolve(nodes, leader), per_mille: *per_mille });
                Applied::Network
            }
            Fault::Bandwidth { links, bytes_per_sec } => {
                let links = links.resolve(nodes, leader);
                self.mesh.add(id, Effect::Bandwidth { links, bytes_per_sec: *bytes_per_sec });
                Applied::Network
            }
        })
    }

    fn heal(&mut self, id: FaultId) {
        let Some(applied) = self.active.remove(&id) else { return };
        let (result, done) = match applied {
            Applied::Killed(nodes) => {
                // Every node gets its chance, even if an earlier one cannot start.
                let errors: Vec<String> = nodes.iter().filter_map(|&node| self.procs.start(node).err()).collect();
                let result = if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) };
                (result, format!("restarted {}", node_list(&nodes)))
            }
            Applied::Paused(node) => (self.procs.resume(node), format!("resumed n{node}")),
            Applied::Stopped(node) => {
                let exited = match self.procs.finish_terminate(node) {
                    Ok(()) => "exited 0 after SIGTERM",
                    Err(anomaly) => {
                        self.anomaly(anomaly);
                        "did not stop cleanly"
                    }
                };
                (self.procs.start(node), format!("n{node} {exited}; restarted"))
            }
            Applied::Network => {
                self.mesh.remove(id);
                (Ok(()), "links healed".to_string())
            }
            Applied::Skipped => (Ok(()), "nothing to heal".to_string()),
        };
        let described = Action::Heal(id).to_string();
        match result {
            Ok(()) => self.note(Some((id, false)), format!("{described}  [{done}]")),
            Err(error) => {
                self.note(Some((id, false)), format!("{described}  [ERROR: {error}]"));
                self.anomalies.push((self.clock.now_us(), Anomaly { node: 0, what: error }));
            }
        }
    }

    /// The leader of the highest term among the running nodes, waiting up to [`LEADER_WAIT`].
    pub fn find_leader(&mut self) -> Option<NodeId> {
        let give_up = Instant::now() + LEADER_WAIT;
        loop {
            let mut best: Option<(u64, NodeId)> = None;
            for id in self.procs.ids().collect::<Vec<_>>() {
                if !self.procs.is_up(id) {
                    continue;
                }
                let Some(addr) = self.addrs.get(id as usize - 1) else { continue };
                if let Ok(answer) = self.status.status(addr) {
                    if answer.value.role == NodeRole::Leader && best.is_none_or(|(term, _)| answer.value.term > term) {
                        best = Some((answer.value.term, id));
                    }
                }
            }
            if let Some((_, leader)) = best {
                return Some(leader);
            }
            if Instant::now() >= give_up {
                return None;
            }
            thread::sleep(WATCH_INTERVAL);
        }
    }
}

/// A client for one-attempt `Status` queries that give up quickly (a paused node never answers).
pub fn status_client(addrs: Vec<String>, cluster_id: u64) -> Result<Client, String> {
    let mut options = super::workload::client_options(cluster_id);
    options.deadline = STATUS_DEADLINE;
    options.request_timeout = STATUS_DEADLINE;
    options.connect_timeout = STATUS_DEADLINE / 2;
    Client::new(addrs, options).map_err(|e| format!("status client: {e}"))
}

fn aims_at_leader(fault: &Fault) -> bool {
    matches!(
        fault,
        Fault::Kill { target: Target::Leader }
            | Fault::Pause { target: Target::Leader }
            | Fault::Restart { target: Target::Leader }
            | Fault::Partition { shape: Shape::IsolateLeader, .. }
            | Fault::Delay { links: Links::Node(Target::Leader), .. }
            | Fault::Lossy { links: Links::Node(Target::Leader), .. }
            | Fault::Bandwidth { links: Links::Node(Target::Leader), .. }
    )
}

/// The `--faults` name of a fault's kind.
pub fn kind_name(fault: &Fault) -> &'static str {
    match fault {
        Fault::Kill { .. } => "kill",
        Fault::Pause { .. } => "pause",
        Fault::Restart { .. } => "restart",
        Fault::PowerCut => "power",
        Fault::Partition { .. } => "partition",
        Fault::Delay { .. } => "delay",
        Fault::Lossy { .. } => "drop",
        Fault::Bandwidth { .. } => "bandwidth",
        Fault::OneWay { .. } => "oneway",
    }
}

fn node_list(nodes: &[NodeId]) -> String {
    nodes.iter().map(|node| format!("n{node}")).collect::<Vec<_>>().join(",")
}
