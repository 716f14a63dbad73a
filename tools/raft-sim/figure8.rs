//! A directed Figure 8 (paper §5.4.2, Figure 8), played on the live cluster as a fault script.
//!
//! Random crashes rarely line up the five moves the figure needs, so this script makes them, one
//! stage at a time, reading the nodes' logs to decide when to move on:
//! 1. the leader L1 (term t1) has its outgoing links cut and appends an entry `e` no one else has;
//!    it dies with `e` on its disk alone;
//! 2. another node L2 wins a newer term t2 and, its own links cut, appends an entry of t2 (at e's
//!    index or below, over what L1 holds there); it dies too;
//! 3. L1 restarts; the others may vote only for it (their links to one another are cut). L1 leads
//!    at t3 and re-sends `e`, an old-term entry, entry by entry; the moment L1's commit index
//!    covers e's index, L1 dies;
//! 4. L2 restarts, the others again may vote only for it. L2's last term (t2) beats a log that
//!    holds `e` but not L1's t3 entry, so if L1 counted replicas of `e` to commit it (the bug),
//!    L2 now overwrites a committed entry and the checker sees it. A correct L1 commits e's index
//!    only with its t3 entry on a majority, and then L2 cannot win: the script times out and heals.
//!
//! Every stage has a deadline; a script that cannot go on (a node that will not lead, an entry
//! that never appears) heals its faults and ends. No other fault is injected while it runs.

use mini_raft::raft::Role;

use super::World;

/// A node's position in `World::nodes`.
type Pos = usize;

/// Where a running script stands; `e` is (index, term) of L1's lone entry.
#[derive(Clone, Copy, Debug)]
pub(super) enum Figure8 {
    Isolating { l1: Pos, t1: u64, until: u64, found: Option<(u64, u64, u64)> },
    Electing { l1: Pos, e: (u64, u64), until: u64 },
    Conflicting { l1: Pos, l2: Pos, e: (u64, u64), until: u64, found_at: Option<u64> },
    Reelecting { l1: Pos, l2: Pos, e: (u64, u64), until: u64 },
    Overwriting { l2: Pos, until: u64 },
}

/// Steps an entry is given to reach the disk (through the WAL worker) before its node is killed.
const PERSIST_STEPS: u64 = 12;

impl World {
    /// Starts a script if the cluster is whole and has a leader.
    pub(super) fn figure8_start(&mut self) {
        let all_up = self.nodes.iter().all(|n| n.running.is_some() && !n.is_paused(self.step));
        let Some(l1) = self.live_leader().filter(|_| all_up) else { return };
        let t1 = self.nodes[l1].raft().map_or(0, |r| r.term());
        self.net.blocked.clear();
        self.cut_outgoing(l1);
        self.figure8 = Some(Figure8::Isolating { l1, t1, until: self.step + 80, found: None });
        self.stats.figure8_scripts += 1;
        let id = self.nodes[l1].id;
        self.note(format!("FIGURE 8 script: n{id} (term {t1}) leads with its outgoing links cut"));
    }

    /// Moves a running script on by one step.
    pub(super) fn figure8_step(&mut self) {
        let Some(stage) = self.figure8 else { return };
        let now = self.step;
        let next = match stage {
            Figure8::Isolating { l1, t1, until, found } => self.isolating(l1, t1, until, found),
            Figure8::Electing { l1, e, until } => self.electing(l1, e, until),
            Figure8::Conflicting { l1, l2, e, until, found_at } => self.conflicting(l1, l2, e, until, found_at),
            Figure8::Reelecting { l1, l2, e, until } => self.reelecting(l1, l2, e, until),
            Figure8::Overwriting { l2, until } => match (0..self.nodes.len()).find(|&i| self.leads(i).is_some()) {
                Some(i) if i == l2 => Err(format!("L2 (n{}) leads again after L1 committed", self.nodes[i].id)),
                Some(i) => Err(format!("n{} leads after L1 committed: L2 could not win", self.nodes[i].id)),
                None if now >= until => Err("no leader after L1 committed".into()),
                None => Ok(stage),
            },
        };
        match next {
            Ok(stage) => self.figure8 = Some(stage),
            Err(why) => self.figure8_end(&why),
        }
    }

    /// Ends the script: every link healed, every node it holds down restarts soon.
    pub(super) fn figure8_end(&mut self, why: &str) {
        self.figure8 = None;
        self.net.blocked.clear();
        for i in 0..self.nodes.len() {
            if self.nodes[i].running.is_none() && self.nodes[i].down_until == u64::MAX {
                self.nodes[i].down_until = self.step + self.rng.range(5, 40);
            }
        }
        self.note(format!("FIGURE 8 script ends: {why}"));
    }

    fn isolating(&mut self, l1: Pos, t1: u64, until: u64, found: Option<(u64, u64, u64)>) -> Result<Figure8, String> {
        if let Some((index, term, at)) = found {
            if self.step < at + PERSIST_STEPS {
                return Ok(Figure8::Isolating { l1, t1, until, found });
            }
            self.hold_down(l1, "figure 8: L1 dies with its entry alone");
            self.net.blocked.clear();
            return Ok(Figure8::Electing { l1, e: (index, term), until: self.step + 400 });
        }
        if self.leads(l1) != Some(t1) {
            return Err("L1 stopped leading before it had an entry of its own".into());
        }
        let last = self.nodes[l1].raft().map_or(0, |r| r.last_index());
        let others_last = self.others_last_index(&[l1]);
        if last > others_last {
            let term = self.nodes[l1].raft().and_then(|r| r.log_term(last)).unwrap_or(0);
            return Ok(Figure8::Isolating { l1, t1, until, found: Some((last, term, self.step)) });
        }
        if self.step >= until {
            return Err("L1 appended nothing of its own in time".into());
        }
        Ok(Figure8::Isolating { l1, t1, until, found })
    }

    fn electing(&mut self, l1: Pos, e: (u64, u64), until: u64) -> Result<Figure8, String> {
        let l2 = (0..self.nodes.len()).find(|&i| i != l1 && self.leads(i).is_some_and(|t| t > e.1));
        if let Some(l2) = l2 {
            self.cut_outgoing(l2);
            let id = self.nodes[l2].id;
            self.note(format!("figure 8: n{id} leads a newer term, its outgoing links cut"));
            return Ok(Figure8::Conflicting { l1, l2, e, until: self.step + 80, found_at: None });
        }
        if self.step >= until {
            return Err("no other leader of a newer term".into());
        }
        Ok(Figure8::Electing { l1, e, until })
    }

    fn conflicting(
        &mut self,
        l1: Pos,
        l2: Pos,
        e: (u64, u64),
        until: u64,
        found_at: Option<u64>,
    ) -> Result<Figure8, String> {
        if found_at.is_none() && self.leads(l2).is_none() {
            return Err("L2 stopped leading before it appended an entry of its term".into());
        }
        // L2 lacks `e`, so its first entry of t2 (its no-op) sits at e's index or below it, over
        // what L1 holds there: a conflicting suffix either way.
        let conflict = self.nodes[l2].raft().and_then(|r| r.log_term(r.last_index())).is_some_and(|t| t > e.1);
        match found_at {
            Some(at) if self.step >= at + PERSIST_STEPS => {
                self.hold_down(l2, "figure 8: L2 dies with its conflicting entry");
                self.net.blocked.clear();
                self.nodes[l1].down_until = self.step;
                // The others may vote only for L1: their links to one another are cut.
                self.cut_among_others(&[l1, l2]);
                Ok(Figure8::Reelecting { l1, l2, e, until: self.step + 600 })
            }
            Some(_) => Ok(Figure8::Conflicting { l1, l2, e, until, found_at }),
            None if conflict => Ok(Figure8::Conflicting { l1, l2, e, until, found_at: Some(self.step) }),
            None if self.step >= until => Err("L2 appended nothing of its term in time".into()),
            None => Ok(Figure8::Conflicting { l1, l2, e, until, found_at }),
        }
    }

    fn reelecting(&mut self, l1: Pos, l2: Pos, e: (u64, u64), until: u64) -> Result<Figure8, String> {
        if self.nodes[l1].running.is_some() && self.nodes[l1].raft().and_then(|r| r.log_term(e.0)) != Some(e.1) {
            return Err("L1 came back without its entry".into());
        }
        let committed = self.nodes[l1].raft().is_some_and(|r| r.role() == Role::Leader && r.committed() >= e.0);
        if committed {
            self.hold_down(l1, "figure 8: L1 dies as soon as it commits e's index");
            self.net.blocked.clear();
            self.nodes[l2].down_until = self.step;
            self.cut_among_others(&[l1, l2]);
            return Ok(Figure8::Overwriting { l2, until: self.step + 600 });
        }
        if self.step >= until {
            return Err("L1 did not commit e's index in time".into());
        }
        Ok(Figure8::Reelecting { l1, l2, e, until })
    }

    /// The term node `i` leads in, if it is running, awake and leader.
    fn leads(&self, i: Pos) -> Option<u64> {
        let node = &self.nodes[i];
        let raft = node.raft().filter(|_| !node.is_paused(self.step))?;
        (raft.role() == Role::Leader).then(|| raft.term())
    }

    fn others_last_index(&self, except: &[Pos]) -> u64 {
        let others = (0..self.nodes.len()).filter(|i| !except.contains(i));
        others.filter_map(|i| self.nodes[i].raft().map(|r| r.last_index())).max().unwrap_or(0)
    }

    fn cut_outgoing(&mut self, from: Pos) {
        let id = self.nodes[from].id;
        for o in self.nodes.iter().map(|n| n.id).filter(|&o| o != id) {
            self.net.blocked.insert((id, o));
        }
    }

    /// Cuts every link between two nodes outside `except`, both ways.
    fn cut_among_others(&mut self, except: &[Pos]) {
        let ids: Vec<u64> = (0..self.nodes.len()).filter(|i| !except.contains(i)).map(|i| self.nodes[i].id).collect();
        for &a in &ids {
            for &b in ids.iter().filter(|&&b| b != a) {
                self.net.blocked.insert((a, b));
            }
        }
    }

    /// Kills node `i` (kill -9) and keeps it down until the script restarts it.
    fn hold_down(&mut self, i: Pos, why: &str) {
        self.stop_node(i, why.into(), false);
        self.nodes[i].down_until = u64::MAX;
    }
}
