//! Partition shapes and link sets, resolved to the directed links they mean.

use std::collections::BTreeSet;

use super::{Link, NodeId, Target};

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

pub(super) fn all_nodes(nodes: usize) -> Vec<NodeId> {
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
