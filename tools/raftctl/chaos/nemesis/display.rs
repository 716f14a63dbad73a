//! The timeline as text: one line per step, e.g. `  12.40s  START #7 partition bridge [...]`.

use std::fmt;

use super::{Action, Blocking, Fault, Links, NodeId, Shape, Step, Target};

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
            Fault::Partition { shape, blocking } => write!(f, "partition {shape} {blocking}"),
            Fault::Delay { links, fixed, jitter } => {
                write!(f, "delay {}ms+0..{}ms on {links}", fixed.as_millis(), jitter.as_millis())
            }
            Fault::Lossy { links, per_mille } => write!(f, "drop connections {per_mille}\u{2030}/chunk on {links}"),
            Fault::Bandwidth { links, bytes_per_sec } => {
                write!(f, "bandwidth {} KiB/s on {links}", bytes_per_sec / 1024)
            }
            Fault::OneWay { from, to, blocking } => write!(f, "oneway n{from} -/-> n{to} {blocking}"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Start(id, fault) => write!(f, "START #{id} {fault}"),
            Action::Heal(id) => write!(f, "HEAL  #{id}"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = format!("{:.2}s", self.at.as_secs_f64());
        write!(f, "{at:>8}  {}", self.action)
    }
}

impl fmt::Display for Blocking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Blocking::Cut => "by reset",
            Blocking::Silent => "silently, delivered on heal",
            Blocking::SilentThenReset => "silently, reset on heal",
        })
    }
}
