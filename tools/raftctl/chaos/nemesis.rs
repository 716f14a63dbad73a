//! The nemesis schedule: which faults a chaos run injects, and when, computed from a seed.
//!
//! This module is pure: no I/O, no clock, no threads. [`schedule`] turns a [`NemesisConfig`] into a
//! timeline of [`Step`]s; an executor elsewhere carries the steps out against real processes and link
//! proxies. Guarantees:
//! - The same config (seed included) always yields the same timeline.
//! - Every fault started is healed at or before `duration`, so a run always ends healed; every fault
//!   stays active for a time within `hold`, and only enabled [`FaultKind`]s occur.
//! - Without `overlapping`, no two faults are ever active at once, and the cluster stays healed for a
//!   time within `quiet` before each fault. With it, faults may overlap but never two at once on the
//!   same node process or the same pair of nodes (a fault aimed at the leader claims every process,
//!   or every pair, since the leader is only known at run time).
//! - Steps are sorted by time; at equal times heals come before starts.
//!
//! Nodes are numbered `1..=nodes`. A blocked directed link `(from, to)` means no byte sent by `from`
//! reaches `to`, on any connection between the two.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use mini_raft::raft::rng::Rng;
pub use mini_raft::raft::types::NodeId;

/// A directed link `(from, to)`.
pub type Link = (NodeId, NodeId);
/// Numbers the faults of one schedule, from 1, in order of their start.
pub type FaultId = u32;

/// One in this many process faults and node-scoped link faults targets the leader.
const LEADER_TARGET_ONE_IN: u64 = 3;
const DELAY_FIXED_MS_MIN: u64 = 5;
const DELAY_FIXED_MS_MAX: u64 = 250;
const LOSSY_PER_MILLE_MIN: u64 = 5;
const LOSSY_PER_MILLE_MAX: u64 = 100;
/// Bandwidth caps are powers of two between these (4 KiB/s to 1 MiB/s).
const BANDWIDTH_LOG2_BYTES_PER_SEC_MIN: u64 = 12;
const BANDWIDTH_LOG2_BYTES_PER_SEC_MAX: u64 = 20;
/// How many random faults are tried at one instant before waiting for an active fault to heal.
const PICK_ATTEMPTS_MAX: usize = 16;

/// A kind of fault, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Kill,
    Pause,
    Restart,
    Power,
    Partition,
    Delay,
    Drop,
    Bandwidth,
    OneWay,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Delay,
        FaultKind::Drop,
        FaultKind::Bandwidth,
        FaultKind::OneWay,
        FaultKind::Restart,
        FaultKind::Power,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Restart => "restart",
            FaultKind::Power => "power",
            FaultKind::Partition => "partition",
            FaultKind::Delay => "delay",
            FaultKind::Drop => "drop",
            FaultKind::Bandwidth => "bandwidth",
            FaultKind::OneWay => "oneway",
        }
    }

    fn valid_names() -> String {
        FaultKind::ALL.iter().map(|kind| kind.name()).collect::<Vec<_>>().join(", ")
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(text: &str) -> Result<FaultKind, String> {
        FaultKind::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| format!("unknown fault kind '{text}' (valid: {})", FaultKind::valid_names()))
    }
}

/// Parses a comma list of fault kinds such as `kill,pause,partition`. Blanks around names are
/// ignored; repeats are harmless; an empty list is an error.
pub fn parse_fault_kinds(text: &str) -> Result<BTreeSet<FaultKind>, String> {
    let kinds = text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(FaultKind::from_str)
        .collect::<Result<BTreeSet<_>, _>>()?;
    if kinds.is_empty() {
        return Err(format!("no fault kinds given (valid: {})", FaultKind::valid_names()));
    }
    Ok(kinds)
}

/// The node a fault acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// This node, picked by the seed.
    Random(NodeId),
    /// Whichever node leads when the fault starts; the executor resolves it.
    Leader,
}

impl Target {
    /// The concrete node, given the leader the executor found (if any).
    pub fn resolve(self, leader: Option<NodeId>) -> Option<NodeId> {
        match self {
            Target::Random(node) => Some(node),
            Target::Leader => leader,
        }
    }
}

/// A network partition, as the set of directed links it blocks ([`Shape::links`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One node can neither reach nor be reached by any other.
    Isolate(NodeId),
    /// The leader at the time the fault starts is isolated.
    IsolateLeader,
    /// The `minority` nodes are cut off from the `majority`. For 3 nodes this blocks the same links
    /// as isolating the one minority node.
    Split { minority: Vec<NodeId>, majority: Vec<NodeId> },
    /// `bridge` sees everyone; the nodes of `left` and `right` see their own side and the bridge, not
    /// the other side. For 3 nodes: each side is one node.
    Bridge { bridge: NodeId, left: Vec<NodeId>, right: Vec<NodeId> },
    /// Each node sees only its two neighbours in the cyclic `order`. For 3 nodes every pair is
    /// adjacent, so a ring blocks nothing: the schedule only uses rings for 5 nodes.
    Ring { order: Vec<NodeId> },
}

impl Shape {
    pub fn name(&self) -> &'static str {
        match self {
            Shape::Isolate(_) => "isolate",
            Shape::IsolateLeader => "isolate-leader",
            Shape::Split { .. } => "split",
            Shape::Bridge { .. } => "bridge",
            Shape::Ring { .. } => "ring",
        }
    }

    /// The directed links this partition blocks among nodes `1..=nodes`. Symmetric: a link is
    /// blocked iff its reverse is. Isolating the leader with no leader known blocks nothing.
    pub fn links(&self, nodes: usize, leader: Option<NodeId>) -> BTreeSet<Link> {
        let all = all_nodes(nodes);
        let blocked_pairs: Vec<(NodeId, NodeId)> = match self {
            Shape::Isolate(node) => all.iter().filter(|&&other| other != *node).map(|&other| (*node, other)).collect(),
            Shape::IsolateLeader => {
                return leader.map_or_else(BTreeSet::new, |node| Shape::Isolate(node).links(nodes, None))
            }
            Shape::Split { minority, majority } => cross_pairs(minority, majority),
            Shape::Bridge { left, right, .. } => cross_pairs(left, right),
            Shape::Ring { order } => {
                let neighbours = |a: usize, b: usize| (a + 1) % order.len() == b || (b + 1) % order.len() == a;
                let mut pairs = Vec::new();
                for a in 0..order.len() {
                    for b in a + 1..order.len() {
                        if !neighbours(a, b) {
                            pairs.push((order[a], order[b]));
                        }
                    }
                }
                pairs
            }
        };
        blocked_pairs.into_iter().flat_map(|(a, b)| [(a, b), (b, a)]).collect()
    }
}

fn all_nodes(nodes: usize) -> Vec<NodeId> {
    (1..=nodes as NodeId).collect()
}

fn cross_pairs(one: &[NodeId], other: &[NodeId]) -> Vec<(NodeId, NodeId)> {
    one.iter().flat_map(|&a| other.iter().map(move |&b| (a, b))).collect()
}

/// The links a link fault (delay, lossy, bandwidth) applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// Every directed link.
    All,
    /// Every link from and to this node.
    Node(Target),
    /// Both directions between two nodes.
    Pair(NodeId, NodeId),
}

impl Links {
    /// The directed links meant, given the leader the executor found; a leader-scoped set with no
    /// leader known is empty.
    pub fn resolve(self, nodes: usize, leader: Option<NodeId>) -> BTreeSet<Link> {
        let all = all_nodes(nodes);
        match self {
            Links::All => {
                all.iter().flat_map(|&a| all.iter().filter(move |&&b| b != a).map(move |&b| (a, b))).collect()
            }
            Links::Node(target) => target.resolve(leader).map_or_else(BTreeSet::new, |node| {
                all.iter().filter(|&&other| other != node).flat_map(|&other| [(node, other), (other, node)]).collect()
            }),
            Links::Pair(a, b) => BTreeSet::from([(a, b), (b, a)]),
        }
    }
}

/// One fault, active from its start step to its heal step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the node at start; start it again at heal.
    Kill {
        target: Target,
    },
    /// SIGSTOP at start, SIGCONT at heal.
    Pause {
        target: Target,
    },
    /// SIGTERM (a clean stop) at start; start it again at heal.
    Restart {
        target: Target,
    },
    /// SIGKILL every node at start; start them all at heal.
    PowerCut,
    Partition {
        shape: Shape,
    },
    /// Every chunk on `links` waits `fixed` + up to `jitter`.
    Delay {
        links: Links,
        fixed: Duration,
        jitter: Duration,
    },
    /// Each chunk on `links` resets its connection with probability `per_mille` / 1000.
    Lossy {
        links: Links,
        per_mille: u32,
    },
    Bandwidth {
        links: Links,
        bytes_per_sec: u64,
    },
    /// The link `from -> to` is blocked; `to -> from` still works.
    OneWay {
        from: NodeId,
        to: NodeId,
    },
}

/// What a step does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Start(FaultId, Fault),
    Heal(FaultId),
}

/// One entry of the timeline: `action` happens `at` after the run starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

/// An inclusive range of durations, drawn from at millisecond resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub min: Duration,
    pub max: Duration,
}

impl TimeRange {
    pub fn new(min: Duration, max: Duration) -> TimeRange {
        TimeRange { min, max }
    }

    pub fn contains(self, duration: Duration) -> bool {
        self.min <= duration && duration <= self.max
    }

    fn draw(self, rng: &mut Rng) -> Duration {
        let (min_ms, max_ms) = (self.min.as_millis() as u64, self.max.as_millis() as u64);
        Duration::from_millis(rng.range(min_ms, max_ms + 1))
    }
}

/// What to schedule.
#[derive(Clone, Debug)]
pub struct NemesisConfig {
    /// 3 or 5.
    pub nodes: usize,
    /// Length of the run; every fault is healed by then.
    pub duration: Duration,
    pub kinds: BTreeSet<FaultKind>,
    /// Whether several faults may be active at once.
    pub overlapping: bool,
    /// How long each fault stays active.
    pub hold: TimeRange,
    /// Time between faults: from a heal to the next start without `overlapping`, from one start to
    /// the next with it. The run also begins with one such quiet time, so a leader can be elected.
    pub quiet: TimeRange,
    pub seed: u64,
}

impl NemesisConfig {
    fn validate(&self) -> Result<(), String> {
        if self.nodes != 3 && self.nodes != 5 {
            return Err(format!("the nemesis supports 3 or 5 nodes, not {}", self.nodes));
        }
        if self.kinds.is_empty() {
            return Err(format!("no fault kinds given (valid: {})", FaultKind::valid_names()));
        }
        for (name, range) in [("hold", self.hold), ("quiet", self.quiet)] {
            if range.min > range.max {
                return Err(format!("{name} time: the minimum {:?} exceeds the maximum {:?}", range.min, range.max));
            }
        }
        if self.hold.min < Duration::from_millis(1) {
            return Err("hold time: the minimum must be at least 1 ms".to_string());
        }
        Ok(())
    }
}

/// A fault placed on the timeline, with what it occupies while active.
struct Planned {
    id: FaultId,
    start: Duration,
    heal: Duration,
    fault: Fault,
    claims: Claims,
}

/// The node processes and node pairs a fault acts on; two overlapping faults must claim disjoint sets.
#[derive(Default)]
struct Claims {
    processes: BTreeSet<NodeId>,
    pairs: BTreeSet<(NodeId, NodeId)>,
}

impl Claims {
    fn of(fault: &Fault, nodes: usize) -> Claims {
        let every_pair = || Links::All.resolve(nodes, None).into_iter().filter(|(a, b)| a < b).collect();
        let pairs_of = |links: BTreeSet<Link>| links.into_iter().map(|(a, b)| (a.min(b), a.max(b))).collect();
        let mut claims = Claims::default();
        match fault {
            Fault::Kill { target } | Fault::Pause { target } | Fault::Restart { target } => {
                claims.processes = match target {
                    Target::Random(node) => BTreeSet::from([*node]),
                    Target::Leader => all_nodes(nodes).into_iter().collect(),
                }
            }
            Fault::PowerCut => claims.processes = all_nodes(nodes).into_iter().collect(),
            Fault::Partition { shape: Shape::IsolateLeader }
            | Fault::Delay { links: Links::Node(Target::Leader), .. }
            | Fault::Lossy { links: Links::Node(Target::Leader), .. }
            | Fault::Bandwidth { links: Links::Node(Target::Leader), .. } => claims.pairs = every_pair(),
            Fault::Partition { shape } => claims.pairs = pairs_of(shape.links(nodes, None)),
            Fault::Delay { links, .. } | Fault::Lossy { links, .. } | Fault::Bandwidth { links, .. } => {
                claims.pairs = pairs_of(links.resolve(nodes, None))
            }
            Fault::OneWay { from, to } => claims.pairs = BTreeSet::from([(*from.min(to), *from.max(to))]),
        }
        claims
    }

    fn overlaps(&self, other: &Claims) -> bool {
        !self.processes.is_disjoint(&other.processes) || !self.pairs.is_disjoint(&other.pairs)
    }
}

/// Computes the timeline for `config`; an error names what is wrong with the config.
pub fn schedule(config: &NemesisConfig) -> Result<Vec<Step>, String> {
    config.validate()?;
    let mut rng = Rng::new(config.seed);
    let kinds: Vec<FaultKind> = config.kinds.iter().copied().collect();
    let mut planned: Vec<Planned> = Vec::new();
    let mut now = config.quiet.draw(&mut rng);
    while now + config.hold.min <= config.duration {
        let active: Vec<&Planned> = planned.iter().filter(|fault| fault.heal > now).collect();
        let Some((fault, claims)) = pick_fault(&mut rng, config.nodes, &kinds, &active) else {
            // Everything free is taken: wait for the first active fault to heal.
            now = active.iter().map(|fault| fault.heal).min().unwrap_or(now + config.hold.min);
            continue;
        };
        let hold = TimeRange::new(config.hold.min, config.hold.max.min(config.duration - now)).draw(&mut rng);
        let id = planned.len() as FaultId + 1;
        planned.push(Planned { id, start: now, heal: now + hold, fault, claims });
        let gap = config.quiet.draw(&mut rng);
        now = if config.overlapping { now + gap } else { now + hold + gap };
    }
    Ok(timeline(planned))
}

/// A random fault whose claims are free, or None after [`PICK_ATTEMPTS_MAX`] tries.
fn pick_fault(rng: &mut Rng, nodes: usize, kinds: &[FaultKind], active: &[&Planned]) -> Option<(Fault, Claims)> {
    for _ in 0..PICK_ATTEMPTS_MAX {
        let kind = kinds[rng.range(0, kinds.len() as u64) as usize];
        let fault = random_fault(rng, nodes, kind);
        let claims = Claims::of(&fault, nodes);
        if active.iter().all(|other| !other.claims.overlaps(&claims)) {
            return Some((fault, claims));
        }
    }
    None
}

fn timeline(planned: Vec<Planned>) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::with_capacity(2 * planned.len());
    for fault in planned {
        steps.push(Step { at: fault.heal, action: Action::Heal(fault.id) });
        steps.push(Step { at: fault.start, action: Action::Start(fault.id, fault.fault) });
    }
    // Stable sort: heals were pushed before starts, and ids ascend, so equal times stay ordered.
    steps.sort_by_key(|step| (step.at, matches!(step.action, Action::Start(..))));
    steps
}

fn random_fault(rng: &mut Rng, nodes: usize, kind: FaultKind) -> Fault {
    match kind {
        FaultKind::Kill => Fault::Kill { target: random_target(rng, nodes) },
        FaultKind::Pause => Fault::Pause { target: random_target(rng, nodes) },
        FaultKind::Restart => Fault::Restart { target: random_target(rng, nodes) },
        FaultKind::Power => Fault::PowerCut,
        FaultKind::Partition => Fault::Partition { shape: random_shape(rng, nodes) },
        FaultKind::Delay => {
            let links = random_links(rng, nodes);
            let fixed_ms = rng.range(DELAY_FIXED_MS_MIN, DELAY_FIXED_MS_MAX + 1);
            let jitter_ms = rng.range(0, fixed_ms + 1);
            Fault::Delay { links, fixed: Duration::from_millis(fixed_ms), jitter: Duration::from_millis(jitter_ms) }
        }
        FaultKind::Drop => {
            let links = random_links(rng, nodes);
            Fault::Lossy { links, per_mille: rng.range(LOSSY_PER_MILLE_MIN, LOSSY_PER_MILLE_MAX + 1) as u32 }
        }
        FaultKind::Bandwidth => {
            let links = random_links(rng, nodes);
            let log2 = rng.range(BANDWIDTH_LOG2_BYTES_PER_SEC_MIN, BANDWIDTH_LOG2_BYTES_PER_SEC_MAX + 1);
            Fault::Bandwidth { links, bytes_per_sec: 1 << log2 }
        }
        FaultKind::OneWay => {
            let [from, to] = random_distinct_pair(rng, nodes);
            Fault::OneWay { from, to }
        }
    }
}

fn random_node(rng: &mut Rng, nodes: usize) -> NodeId {
    rng.range(1, nodes as u64 + 1)
}

fn random_target(rng: &mut Rng, nodes: usize) -> Target {
    if rng.chance(1, LEADER_TARGET_ONE_IN) {
        Target::Leader
    } else {
        Target::Random(random_node(rng, nodes))
    }
}

fn random_distinct_pair(rng: &mut Rng, nodes: usize) -> [NodeId; 2] {
    let first = random_node(rng, nodes);
    // Uniform over the other nodes: skip over `first`.
    let mut second = rng.range(1, nodes as u64);
    if second >= first {
        second += 1;
    }
    [first, second]
}

fn random_links(rng: &mut Rng, nodes: usize) -> Links {
    match rng.range(0, 3) {
        0 => Links::All,
        1 => Links::Node(random_target(rng, nodes)),
        _ => {
            let [a, b] = random_distinct_pair(rng, nodes);
            Links::Pair(a.min(b), a.max(b))
        }
    }
}

/// All nodes in a random order (Fisher-Yates).
fn shuffled_nodes(rng: &mut Rng, nodes: usize) -> Vec<NodeId> {
    let mut order = all_nodes(nodes);
    for i in (1..order.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

fn sorted(mut nodes: Vec<NodeId>) -> Vec<NodeId> {
    nodes.sort_unstable();
    nodes
}

fn random_shape(rng: &mut Rng, nodes: usize) -> Shape {
    // A ring of 3 is the full graph: only 5 nodes get rings.
    let shapes = if nodes >= 5 { 5 } else { 4 };
    let order = shuffled_nodes(rng, nodes);
    match rng.range(0, shapes) {
        0 => Shape::Isolate(order[0]),
        1 => Shape::IsolateLeader,
        2 => {
            let (minority, majority) = order.split_at(nodes / 2);
            Shape::Split { minority: sorted(minority.to_vec()), majority: sorted(majority.to_vec()) }
        }
        3 => {
            let half = (nodes - 1) / 2;
            let (left, right) = (sorted(order[1..=half].to_vec()), sorted(order[half + 1..].to_vec()));
            let (left, right) = if left < right { (left, right) } else { (right, left) };
            Shape::Bridge { bridge: order[0], left, right }
        }
        _ => {
            // Rotate so the ring is printed from its lowest node.
            let mut order = order;
            let lowest = order.iter().position(|&node| node == 1).unwrap_or(0);
            order.rotate_left(lowest);
            Shape::Ring { order }
        }
    }
}

fn node_list(nodes: &[NodeId]) -> String {
    nodes.iter().map(|node| format!("n{node}")).collect::<Vec<_>>().join(",")
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Random(node) => write!(f, "n{node}"),
            Target::Leader => write!(f, "leader"),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.name())?;
        match self {
            Shape::Isolate(node) => write!(f, "[n{node} -/- the others]"),
            Shape::IsolateLeader => write!(f, "[leader -/- the others]"),
            Shape::Split { minority, majority } => write!(f, "[{} -/- {}]", node_list(minority), node_list(majority)),
            Shape::Bridge { bridge, left, right } => {
                let mut everyone = [left.as_slice(), right.as_slice()].concat();
                everyone.sort_unstable();
                write!(f, "[n{bridge} sees {}; {} -/- {}]", node_list(&everyone), node_list(left), node_list(right))
            }
            Shape::Ring { order } => {
                let ring: Vec<String> = order.iter().chain(order.first()).map(|node| format!("n{node}")).collect();
                write!(f, "[{}]", ring.join("-"))
            }
        }
    }
}

impl fmt::Display for Links {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Links::All => write!(f, "all links"),
            Links::Node(target) => write!(f, "links of {target}"),
            Links::Pair(a, b) => write!(f, "n{a}<->n{b}"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { target } => write!(f, "kill {target}"),
            Fault::Pause { target } => write!(f, "pause {target}"),
            Fault::Restart { target } => write!(f, "restart {target}"),
            Fault::PowerCut => write!(f, "power-cut all nodes"),
            Fault::Partition { shape } => write!(f, "partition {shape}"),
            Fault::Delay { links, fixed, jitter } => {
                write!(f, "delay {}ms+0..{}ms on {links}", fixed.as_millis(), jitter.as_millis())
            }
            Fault::Lossy { links, per_mille } => write!(f, "drop connections {per_mille}\u{2030}/chunk on {links}"),
            Fault::Bandwidth { links, bytes_per_sec } => {
                write!(f, "bandwidth {} KiB/s on {links}", bytes_per_sec / 1024)
            }
            Fault::OneWay { from, to } => write!(f, "oneway n{from} -/-> n{to}"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = format!("{:.2}s", self.at.as_secs_f64());
        match &self.action {
            Action::Start(id, fault) => write!(f, "{at:>8}  START #{id} {fault}"),
            Action::Heal(id) => write!(f, "{at:>8}  HEAL  #{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn config(nodes: usize, overlapping: bool, seed: u64) -> NemesisConfig {
        NemesisConfig {
            nodes,
            duration: secs(120),
            kinds: FaultKind::ALL.into_iter().collect(),
            overlapping,
            hold: TimeRange::new(Duration::from_millis(500), secs(5)),
            quiet: TimeRange::new(Duration::from_millis(200), secs(2)),
            seed,
        }
    }

    /// Every fault of a timeline as (id, start, heal, fault), checking each is started once and healed
    /// once, after its start.
    fn intervals(steps: &[Step]) -> Vec<(FaultId, Duration, Duration, Fault)> {
        let mut started: BTreeMap<FaultId, (Duration, Fault)> = BTreeMap::new();
        let mut done = Vec::new();
        for step in steps {
            match &step.action {
                Action::Start(id, fault) => assert!(started.insert(*id, (step.at, fault.clone())).is_none()),
                Action::Heal(id) => {
                    let (start, fault) = started.remove(id).expect("healed a fault that is not active");
                    done.push((*id, start, step.at, fault));
                }
            }
        }
        assert!(started.is_empty(), "never healed: {started:?}");
        done.sort_by_key(|(id, ..)| *id);
        done
    }

    fn links(list: &[(NodeId, NodeId)]) -> BTreeSet<Link> {
        list.iter().copied().collect()
    }

    fn both_ways(pairs: &[(NodeId, NodeId)]) -> BTreeSet<Link> {
        pairs.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect()
    }

    #[test]
    fn parses_fault_kind_lists() {
        let kinds = parse_fault_kinds("kill,pause,partition,delay,drop,bandwidth,oneway,restart,power").unwrap();
        assert_eq!(kinds, FaultKind::ALL.into_iter().collect());
        let kinds = parse_fault_kinds(" kill , kill,partition,").unwrap();
        assert_eq!(kinds, BTreeSet::from([FaultKind::Kill, FaultKind::Partition]));
        for kind in FaultKind::ALL {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
    }

    #[test]
    fn an_unknown_fault_kind_is_named_with_the_valid_ones() {
        let error = parse_fault_kinds("kill,explode").unwrap_err();
        assert!(error.contains("'explode'"), "{error}");
        for kind in FaultKind::ALL {
            assert!(error.contains(kind.name()), "{error} does not list {}", kind.name());
        }
        assert!(parse_fault_kinds(" , ").unwrap_err().contains("no fault kinds"));
    }

    #[test]
    fn rejects_bad_configs() {
        let mut bad = config(4, false, 1);
        assert!(schedule(&bad).unwrap_err().contains("3 or 5"));
        bad = config(3, false, 1);
        bad.hold = TimeRange::new(secs(2), secs(1));
        assert!(schedule(&bad).unwrap_err().contains("hold"));
        bad = config(3, false, 1);
        bad.quiet = TimeRange::new(secs(2), secs(1));
        assert!(schedule(&bad).unwrap_err().contains("quiet"));
        bad = config(3, false, 1);
        bad.kinds.clear();
        assert!(schedule(&bad).is_err());
        bad = config(3, false, 1);
        bad.hold.min = Duration::ZERO;
        assert!(schedule(&bad).is_err());
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        for (nodes, overlapping) in [(3, false), (5, false), (3, true), (5, true)] {
            let first = schedule(&config(nodes, overlapping, 99)).unwrap();
            assert!(first.len() > 10);
            assert_eq!(first, schedule(&config(nodes, overlapping, 99)).unwrap());
            assert_ne!(first, schedule(&config(nodes, overlapping, 100)).unwrap());
        }
    }

    #[test]
    fn without_overlap_one_fault_at_a_time_with_quiet_gaps() {
        for seed in 0..50 {
            for nodes in [3, 5] {
                let config = config(nodes, false, seed);
                let faults = intervals(&schedule(&config).unwrap());
                let mut healed_at = Duration::ZERO;
                for (id, start, heal, _) in &faults {
                    assert!(*start >= healed_at, "seed {seed}: #{id} starts before the previous fault heals");
                    assert!(config.quiet.contains(*start - healed_at), "seed {seed}: gap {:?}", *start - healed_at);
                    healed_at = *heal;
                }
            }
        }
    }

    #[test]
    fn every_fault_heals_within_the_hold_range_and_before_the_end() {
        for seed in 0..50 {
            for (nodes, overlapping) in [(3, false), (5, false), (3, true), (5, true)] {
                let config = config(nodes, overlapping, seed);
                let steps = schedule(&config).unwrap();
                assert!(steps.windows(2).all(|pair| pair[0].at <= pair[1].at), "steps out of order");
                for (id, start, heal, _) in intervals(&steps) {
                    assert!(config.hold.contains(heal - start), "seed {seed}: #{id} held {:?}", heal - start);
                    assert!(heal <= config.duration, "seed {seed}: #{id} heals at {heal:?}");
                }
            }
        }
    }

    #[test]
    fn overlapping_faults_never_share_a_process_or_a_pair() {
        let mut overlaps = 0;
        for seed in 0..50 {
            for nodes in [3, 5] {
                let faults = intervals(&schedule(&config(nodes, true, seed)).unwrap());
                for (i, (a_id, a_start, a_heal, a)) in faults.iter().enumerate() {
                    for (b_id, b_start, b_heal, b) in &faults[i + 1..] {
                        if a_start < b_heal && b_start < a_heal {
                            overlaps += 1;
                            let (a_claims, b_claims) = (Claims::of(a, nodes), Claims::of(b, nodes));
                            assert!(!a_claims.overlaps(&b_claims), "seed {seed}: #{a_id} {a} and #{b_id} {b}");
                        }
                    }
                }
            }
        }
        assert!(overlaps > 0, "overlapping schedules never overlapped");
    }

    #[test]
    fn only_enabled_kinds_are_scheduled_and_targets_exist() {
        let mut config = config(5, false, 7);
        config.kinds = BTreeSet::from([FaultKind::Pause, FaultKind::OneWay]);
        let faults = intervals(&schedule(&config).unwrap());
        assert!(!faults.is_empty());
        for (_, _, _, fault) in faults {
            match fault {
                Fault::Pause { target: Target::Random(node) } => assert!((1..=5).contains(&node)),
                Fault::Pause { target: Target::Leader } => {}
                Fault::OneWay { from, to } => assert!(from != to && (1..=5).contains(&from) && (1..=5).contains(&to)),
                other => panic!("not enabled: {other}"),
            }
        }
    }

    #[test]
    fn scheduled_partitions_are_well_formed() {
        let mut shapes_seen = BTreeSet::new();
        for seed in 0..100 {
            for nodes in [3, 5] {
                let mut config = config(nodes, false, seed);
                config.kinds = BTreeSet::from([FaultKind::Partition]);
                for (_, _, _, fault) in intervals(&schedule(&config).unwrap()) {
                    let Fault::Partition { shape } = fault else { panic!("not a partition: {fault}") };
                    shapes_seen.insert((nodes, shape.name()));
                    let blocked = shape.links(nodes, Some(1));
                    assert!(!blocked.is_empty(), "{shape} blocks nothing");
                    assert!(blocked.iter().all(|&(a, b)| a != b && blocked.contains(&(b, a))), "{shape}");
                    assert!(blocked.iter().all(|&(a, b)| (1..=nodes as NodeId).contains(&a) && b <= nodes as NodeId));
                }
            }
        }
        assert!(!shapes_seen.contains(&(3, "ring")), "a ring of 3 blocks nothing");
        assert_eq!(shapes_seen.len(), 4 + 5, "{shapes_seen:?}");
    }

    #[test]
    fn isolate_blocks_every_link_of_one_node() {
        assert_eq!(Shape::Isolate(2).links(3, None), both_ways(&[(2, 1), (2, 3)]));
        assert_eq!(Shape::Isolate(5).links(5, Some(1)), both_ways(&[(5, 1), (5, 2), (5, 3), (5, 4)]));
    }

    #[test]
    fn isolate_leader_resolves_at_run_time() {
        assert_eq!(Shape::IsolateLeader.links(3, Some(3)), both_ways(&[(3, 1), (3, 2)]));
        assert_eq!(Shape::IsolateLeader.links(5, None), BTreeSet::new());
    }

    #[test]
    fn split_blocks_exactly_the_links_between_the_sides() {
        let split = Shape::Split { minority: vec![2, 4], majority: vec![1, 3, 5] };
        assert_eq!(split.links(5, None), both_ways(&[(2, 1), (2, 3), (2, 5), (4, 1), (4, 3), (4, 5)]));
        let split = Shape::Split { minority: vec![1], majority: vec![2, 3] };
        assert_eq!(split.links(3, None), Shape::Isolate(1).links(3, None));
    }

    #[test]
    fn bridge_blocks_only_the_links_between_the_halves() {
        let bridge = Shape::Bridge { bridge: 1, left: vec![2], right: vec![3] };
        assert_eq!(bridge.links(3, None), links(&[(2, 3), (3, 2)]));
        let bridge = Shape::Bridge { bridge: 3, left: vec![1, 2], right: vec![4, 5] };
        assert_eq!(bridge.links(5, None), both_ways(&[(1, 4), (1, 5), (2, 4), (2, 5)]));
    }

    #[test]
    fn ring_blocks_the_links_between_non_neighbours() {
        let ring = Shape::Ring { order: vec![1, 3, 5, 2, 4] };
        // Neighbours: 1-3, 3-5, 5-2, 2-4, 4-1. Everything else is blocked.
        assert_eq!(ring.links(5, None), both_ways(&[(1, 5), (1, 2), (3, 2), (3, 4), (5, 4)]));
        assert_eq!(Shape::Ring { order: vec![1, 2, 3] }.links(3, None), BTreeSet::new());
    }

    #[test]
    fn link_sets_resolve() {
        assert_eq!(Links::All.resolve(3, None), both_ways(&[(1, 2), (1, 3), (2, 3)]));
        assert_eq!(Links::Pair(2, 3).resolve(3, None), both_ways(&[(2, 3)]));
        assert_eq!(Links::Node(Target::Random(1)).resolve(3, None), both_ways(&[(1, 2), (1, 3)]));
        assert_eq!(Links::Node(Target::Leader).resolve(3, Some(2)), both_ways(&[(2, 1), (2, 3)]));
        assert_eq!(Links::Node(Target::Leader).resolve(3, None), BTreeSet::new());
    }

    #[test]
    fn steps_display_as_a_timeline() {
        let bridge = Shape::Bridge { bridge: 1, left: vec![2], right: vec![3] };
        let start =
            Step { at: Duration::from_millis(12_400), action: Action::Start(7, Fault::Partition { shape: bridge }) };
        assert_eq!(start.to_string(), "  12.40s  START #7 partition bridge [n1 sees n2,n3; n2 -/- n3]");
        let heal = Step { at: secs(15), action: Action::Heal(7) };
        assert_eq!(heal.to_string(), "  15.00s  HEAL  #7");
        let ring = Fault::Partition { shape: Shape::Ring { order: vec![1, 3, 5, 2, 4] } };
        assert_eq!(ring.to_string(), "partition ring [n1-n3-n5-n2-n4-n1]");
        let split = Fault::Partition { shape: Shape::Split { minority: vec![2, 4], majority: vec![1, 3, 5] } };
        assert_eq!(split.to_string(), "partition split [n2,n4 -/- n1,n3,n5]");
        assert_eq!(Fault::Kill { target: Target::Leader }.to_string(), "kill leader");
        assert_eq!(Fault::OneWay { from: 1, to: 2 }.to_string(), "oneway n1 -/-> n2");
        let delay = Fault::Delay {
            links: Links::Pair(1, 2),
            fixed: Duration::from_millis(50),
            jitter: Duration::from_millis(20),
        };
        assert_eq!(delay.to_string(), "delay 50ms+0..20ms on n1<->n2");
        // Every scheduled step renders on one line.
        for step in schedule(&config(5, true, 3)).unwrap() {
            let line = step.to_string();
            assert!(!line.contains('\n') && line.contains('#'), "{line}");
        }
    }
}
