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
//! reaches `to`, on any connection between the two. How it is blocked is the fault's [`Blocking`].
//!
//! Kinds are dealt like cards: every enabled kind occurs once, in a seeded order, before any kind
//! occurs again, so a short run still sees all of them.
//!
//! Rooms: this file (fault kinds, faults, the config and the scheduler with its overlap rules),
//! `shape` (partition shapes and link sets as directed links), `random` (drawing one fault),
//! `display` (the timeline as text).

mod display;
mod random;
mod shape;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use mini_raft::raft::rng::Rng;
pub use mini_raft::raft::types::NodeId;
use random::random_fault;
use shape::all_nodes;
pub use shape::{Links, Shape};

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
        blocking: Blocking,
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
    /// The link `from -> to` is blocked; `to -> from` still works. Never [`Blocking::Cut`]: a reset
    /// ends both directions of a connection.
    OneWay {
        from: NodeId,
        to: NodeId,
        blocking: Blocking,
    },
}

/// How a blocked link blocks: loudly or silently, and what becomes of silently held bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocking {
    /// Connections are reset (RST) at once, and new ones are reset while blocked: like a firewall
    /// that rejects, or a host that rebooted.
    Cut,
    /// Bytes vanish without an error; on heal everything held is delivered, in order (a network
    /// that recovers before TCP gives up retransmitting).
    Silent,
    /// Bytes vanish without an error; on heal what was held is dropped and the connections are
    /// reset (TCP timed out).
    SilentThenReset,
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

    #[cfg(test)]
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
            Fault::Partition { shape: Shape::IsolateLeader, .. }
            | Fault::Delay { links: Links::Node(Target::Leader), .. }
            | Fault::Lossy { links: Links::Node(Target::Leader), .. }
            | Fault::Bandwidth { links: Links::Node(Target::Leader), .. } => claims.pairs = every_pair(),
            Fault::Partition { shape, .. } => claims.pairs = pairs_of(shape.links(nodes, None)),
            Fault::Delay { links, .. } | Fault::Lossy { links, .. } | Fault::Bandwidth { links, .. } => {
                claims.pairs = pairs_of(links.resolve(nodes, None))
            }
            Fault::OneWay { from, to, .. } => claims.pairs = BTreeSet::from([(*from.min(to), *from.max(to))]),
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
    let mut deck = Deck { kinds: config.kinds.iter().copied().collect(), left: Vec::new() };
    let mut planned: Vec<Planned> = Vec::new();
    let mut now = config.quiet.draw(&mut rng);
    while now + config.hold.min <= config.duration {
        let active: Vec<&Planned> = planned.iter().filter(|fault| fault.heal > now).collect();
        let Some((fault, claims)) = pick_fault(&mut rng, config.nodes, &mut deck, &active) else {
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

/// The enabled kinds not yet dealt in this round.
struct Deck {
    kinds: Vec<FaultKind>,
    left: Vec<FaultKind>,
}

impl Deck {
    /// The kinds left in this round, in dealing order; a new round is shuffled when it is empty.
    fn left(&mut self, rng: &mut Rng) -> &[FaultKind] {
        if self.left.is_empty() {
            self.left = self.kinds.clone();
            // Fisher-Yates.
            for i in (1..self.left.len()).rev() {
                let j = rng.range(0, i as u64 + 1) as usize;
                self.left.swap(i, j);
            }
        }
        &self.left
    }

    fn deal(&mut self, kind: FaultKind) {
        self.left.retain(|&left| left != kind);
    }
}

/// A random fault whose claims are free, of the first kind left in the deck that has one, or None
/// after [`PICK_ATTEMPTS_MAX`] tries.
fn pick_fault(rng: &mut Rng, nodes: usize, deck: &mut Deck, active: &[&Planned]) -> Option<(Fault, Claims)> {
    for attempt in 0..PICK_ATTEMPTS_MAX {
        let left = deck.left(rng);
        let kind = left[attempt % left.len()];
        let fault = random_fault(rng, nodes, kind);
        let claims = Claims::of(&fault, nodes);
        if active.iter().all(|other| !other.claims.overlaps(&claims)) {
            deck.deal(kind);
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

#[cfg(test)]
mod tests;
