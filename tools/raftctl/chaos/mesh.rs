//! The network of a chaos run: one [`LinkProxy`] per directed link, and the faults on them.
//!
//! Node `i` dials node `j` through proxy `(i, j)`: its `--peers` entry for `j` is that proxy's
//! address. Bytes `i` sends on that connection flow forward through the proxy; `j`'s replies on it
//! flow backward. Since a node also sends on the connection its peer dialed (protocol.md §3.1),
//! "nothing from `a` reaches `b`" blocks proxy `(a, b)` forward **and** proxy `(b, a)` backward.
//!
//! Faults are [`Effect`]s keyed by the nemesis fault id; after every change the fault of each
//! proxy is recomputed from all active effects ([`compose`], pure) and set only where it changed.
//! Guarantees: with no effect active every proxy passes; effects never leak between links; a
//! silent block whose fault said "reset on heal" resets the connections it held when it heals.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::nemesis::{Blocking, FaultId, Link, NodeId};
use super::proxy::{Direction, LinkCounters, LinkFault, LinkProxy, OnHeal};

/// What one active fault does to the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// No byte sent by `from` reaches `to`, for each `(from, to)` in `links`.
    Block {
        links: BTreeSet<Link>,
        blocking: Blocking,
    },
    Delay {
        links: BTreeSet<Link>,
        fixed: Duration,
        jitter: Duration,
    },
    Lossy {
        links: BTreeSet<Link>,
        per_mille: u32,
    },
    Bandwidth {
        links: BTreeSet<Link>,
        bytes_per_sec: u64,
    },
}

impl Effect {
    fn touches(&self, link: Link) -> bool {
        let links = match self {
            Effect::Block { links, .. }
            | Effect::Delay { links, .. }
            | Effect::Lossy { links, .. }
            | Effect::Bandwidth { links, .. } => links,
        };
        links.contains(&link)
    }
}

/// The proxies of every directed link among nodes `1..=n`, and the effects active on them.
pub struct Mesh {
    proxies: BTreeMap<Link, LinkProxy>,
    effects: BTreeMap<FaultId, Effect>,
}

impl Mesh {
    /// Starts a proxy on a free loopback port for every directed link; proxy `(i, j)` forwards to
    /// `targets[j - 1]`, node `j`'s listen address. Each link's randomness is seeded from `seed`.
    pub fn start(targets: &[SocketAddr], seed: u64) -> io::Result<Mesh> {
        let mut proxies = BTreeMap::new();
        let local: SocketAddr = ([127, 0, 0, 1], 0).into();
        for from in 1..=targets.len() as NodeId {
            for (to, &target) in (1..).zip(targets) {
                if from != to {
                    let link_seed = seed ^ (from << 32 | to).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    proxies.insert((from, to), LinkProxy::start(local, target, link_seed)?);
                }
            }
        }
        Ok(Mesh { proxies, effects: BTreeMap::new() })
    }

    /// The address node `from` dials to reach node `to`.
    pub fn dial_addr(&self, from: NodeId, to: NodeId) -> Option<SocketAddr> {
        self.proxies.get(&(from, to)).map(LinkProxy::local_addr)
    }

    pub fn add(&mut self, id: FaultId, effect: Effect) {
        self.effects.insert(id, effect);
        self.apply();
    }

    /// Ends fault `id`'s effect, if it had one.
    pub fn remove(&mut self, id: FaultId) {
        if self.effects.remove(&id).is_some() {
            self.apply();
        }
    }

    fn apply(&mut self) {
        let effects: Vec<&Effect> = self.effects.values().collect();
        for (&link, proxy) in &self.proxies {
            let fault = compose(link, &effects);
            match fault {
                _ if proxy.control().fault() == fault => {}
                LinkFault::Pass => proxy.heal(),
                fault => proxy.set_fault(fault),
            }
        }
    }

    /// Every link's counters summed.
    pub fn counters(&self) -> LinkCounters {
        self.proxies.values().map(LinkProxy::counters).fold(LinkCounters::default(), |sum, link| LinkCounters {
            bytes_forward: sum.bytes_forward + link.bytes_forward,
            bytes_backward: sum.bytes_backward + link.bytes_backward,
            connections_accepted: sum.connections_accepted + link.connections_accepted,
            connections_reset: sum.connections_reset + link.connections_reset,
        })
    }

    /// Stops every proxy (resetting its connections) and joins their threads.
    pub fn stop(&mut self) {
        for proxy in self.proxies.values_mut() {
            proxy.stop();
        }
    }
}

/// The fault proxy `(a, b)` applies given the active effects: blocks first (forward: `a -> b`
/// blocked; backward: `b -> a` blocked), else delay and bandwidth (combined), else loss. Faults on
/// one pair never overlap in a schedule; if they did, the first effect of a category wins.
pub fn compose(link: Link, effects: &[&Effect]) -> LinkFault {
    let (a, b) = link;
    let block = |directed: Link| {
        effects.iter().find_map(|effect| match effect {
            Effect::Block { links, blocking } if links.contains(&directed) => Some(*blocking),
            _ => None,
        })
    };
    let on_heal = |blocking: Blocking| match blocking {
        Blocking::Silent => OnHeal::Deliver,
        Blocking::Cut | Blocking::SilentThenReset => OnHeal::Drop,
    };
    match (block((a, b)), block((b, a))) {
        (Some(Blocking::Cut), Some(_)) | (Some(_), Some(Blocking::Cut)) => return LinkFault::Cut,
        (Some(blocking), Some(_)) => return LinkFault::Blackhole { on_heal: on_heal(blocking) },
        (Some(blocking), None) => return LinkFault::OneWay { blocked: Direction::Forward, on_heal: on_heal(blocking) },
        (None, Some(blocking)) => {
            return LinkFault::OneWay { blocked: Direction::Backward, on_heal: on_heal(blocking) }
        }
        (None, None) => {}
    }
    let touching = || effects.iter().filter(|effect| effect.touches((a, b)) || effect.touches((b, a)));
    let delay = touching().find_map(|effect| match effect {
        Effect::Delay { fixed, jitter, .. } => Some((*fixed, *jitter)),
        _ => None,
    });
    let bandwidth = touching().find_map(|effect| match effect {
        Effect::Bandwidth { bytes_per_sec, .. } => Some(*bytes_per_sec),
        _ => None,
    });
    let lossy = touching().find_map(|effect| match effect {
        Effect::Lossy { per_mille, .. } => Some(*per_mille),
        _ => None,
    });
    match (delay, bandwidth, lossy) {
        (Some((fixed, jitter)), Some(bytes_per_sec), _) => {
            LinkFault::DelayAndBandwidth { fixed, jitter, bytes_per_sec }
        }
        (Some((fixed, jitter)), None, _) => LinkFault::Delay { fixed, jitter },
        (None, Some(bytes_per_sec), _) => LinkFault::Bandwidth { bytes_per_sec },
        (None, None, Some(close_per_mille)) => LinkFault::Lossy { close_per_mille },
        (None, None, None) => LinkFault::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(list: &[Link]) -> BTreeSet<Link> {
        list.iter().copied().collect()
    }

    #[test]
    fn a_one_way_block_holds_the_forward_side_of_one_proxy_and_the_backward_side_of_the_other() {
        let block = Effect::Block { links: links(&[(1, 2)]), blocking: Blocking::Silent };
        let effects = [&block];
        let forward = LinkFault::OneWay { blocked: Direction::Forward, on_heal: OnHeal::Deliver };
        let backward = LinkFault::OneWay { blocked: Direction::Backward, on_heal: OnHeal::Deliver };
        assert_eq!(compose((1, 2), &effects), forward);
        assert_eq!(compose((2, 1), &effects), backward);
        assert_eq!(compose((1, 3), &effects), LinkFault::Pass);
        assert_eq!(compose((3, 2), &effects), LinkFault::Pass);
    }

    #[test]
    fn a_symmetric_block_is_a_cut_or_a_blackhole() {
        let both = links(&[(1, 2), (2, 1)]);
        let cut = Effect::Block { links: both.clone(), blocking: Blocking::Cut };
        assert_eq!(compose((1, 2), &[&cut]), LinkFault::Cut);
        assert_eq!(compose((2, 1), &[&cut]), LinkFault::Cut);
        let silent = Effect::Block { links: both.clone(), blocking: Blocking::SilentThenReset };
        assert_eq!(compose((2, 1), &[&silent]), LinkFault::Blackhole { on_heal: OnHeal::Drop });
        let silent = Effect::Block { links: both, blocking: Blocking::Silent };
        assert_eq!(compose((1, 2), &[&silent]), LinkFault::Blackhole { on_heal: OnHeal::Deliver });
    }

    #[test]
    fn link_faults_apply_to_both_proxies_of_a_pair_and_combine() {
        let pair = links(&[(1, 3), (3, 1)]);
        let fixed = Duration::from_millis(40);
        let delay = Effect::Delay { links: pair.clone(), fixed, jitter: Duration::ZERO };
        let bandwidth = Effect::Bandwidth { links: pair.clone(), bytes_per_sec: 4096 };
        let lossy = Effect::Lossy { links: pair, per_mille: 7 };
        assert_eq!(compose((3, 1), &[&delay]), LinkFault::Delay { fixed, jitter: Duration::ZERO });
        let both = LinkFault::DelayAndBandwidth { fixed, jitter: Duration::ZERO, bytes_per_sec: 4096 };
        assert_eq!(compose((1, 3), &[&bandwidth, &delay]), both);
        assert_eq!(compose((1, 3), &[&lossy]), LinkFault::Lossy { close_per_mille: 7 });
        assert_eq!(compose((1, 2), &[&lossy, &delay]), LinkFault::Pass);
        assert_eq!(compose((1, 2), &[]), LinkFault::Pass);
    }

    #[test]
    fn a_mesh_routes_each_directed_link_through_its_own_proxy_and_heals() {
        let targets: Vec<SocketAddr> = vec![([127, 0, 0, 1], 9).into(), ([127, 0, 0, 1], 10).into()];
        let mut mesh = Mesh::start(&targets, 1).unwrap();
        let (one_two, two_one) = (mesh.dial_addr(1, 2).unwrap(), mesh.dial_addr(2, 1).unwrap());
        assert_ne!(one_two, two_one);
        assert_eq!(mesh.dial_addr(1, 1), None);
        assert_eq!(mesh.proxies[&(1, 2)].target(), targets[1]);
        mesh.add(4, Effect::Block { links: links(&[(1, 2), (2, 1)]), blocking: Blocking::Cut });
        assert_eq!(mesh.proxies[&(2, 1)].control().fault(), LinkFault::Cut);
        mesh.remove(4);
        assert_eq!(mesh.proxies[&(2, 1)].control().fault(), LinkFault::Pass);
        mesh.stop();
    }
}
