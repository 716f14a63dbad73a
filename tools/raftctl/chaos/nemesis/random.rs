//! Drawing one fault of a given kind from the schedule's generator.

use std::time::Duration;

use mini_raft::raft::rng::Rng;

use super::shape::all_nodes;
use super::{
    Blocking, Fault, FaultKind, Links, NodeId, Shape, Target, BANDWIDTH_LOG2_BYTES_PER_SEC_MAX,
    BANDWIDTH_LOG2_BYTES_PER_SEC_MIN, DELAY_FIXED_MS_MAX, DELAY_FIXED_MS_MIN, LEADER_TARGET_ONE_IN,
    LOSSY_PER_MILLE_MAX, LOSSY_PER_MILLE_MIN,
};

pub(super) fn random_fault(rng: &mut Rng, nodes: usize, kind: FaultKind) -> Fault {
    match kind {
        FaultKind::Kill => Fault::Kill { target: random_target(rng, nodes) },
        FaultKind::Pause => Fault::Pause { target: random_target(rng, nodes) },
        FaultKind::Restart => Fault::Restart { target: random_target(rng, nodes) },
        FaultKind::Power => Fault::PowerCut,
        FaultKind::Partition => {
            let shape = random_shape(rng, nodes);
            let blocking = [Blocking::Cut, Blocking::Silent, Blocking::SilentThenReset][rng.range(0, 3) as usize];
            Fault::Partition { shape, blocking }
        }
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
            let blocking = if rng.chance(1, 2) { Blocking::Silent } else { Blocking::SilentThenReset };
            Fault::OneWay { from, to, blocking }
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
