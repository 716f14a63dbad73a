//! The pending call and return events of a search, as a doubly linked list from which a
//! linearized operation's two events are lifted and into which they are put back on
//! backtracking (dancing links: put back in reverse order, a node's own links still say where).

use super::model::KeyOp;

/// The pending events as a doubly linked list over node ids: `0` is the head, then the events in
/// time order, then the tail.
pub(crate) struct EventList {
    pub next: Vec<u32>,
    prev: Vec<u32>,
    /// The operation of each node (head and tail: unused).
    pub node_op: Vec<u32>,
    pub node_is_call: Vec<bool>,
    call_node: Vec<u32>,
    ret_node: Vec<u32>,
    pub tail: u32,
}

const HEAD: u32 = 0;

impl EventList {
    /// The events of the operations `in_list` says to include.
    pub(crate) fn new(ops: &[KeyOp], in_list: impl Fn(usize) -> bool) -> EventList {
        // (time, is_return, op): sorting puts calls before returns at equal times, which makes an
        // operation returning at t concurrent with one called at t.
        let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(ops.len() * 2);
        for (op, key_op) in ops.iter().enumerate().filter(|&(op, _)| in_list(op)) {
            events.push((key_op.call, false, op as u32));
            events.push((key_op.ret, true, op as u32));
        }
        events.sort_unstable();
        let tail = events.len() as u32 + 1;
        let mut list = EventList {
            next: (0..=tail).map(|node| (node + 1).min(tail)).collect(),
            prev: (0..=tail).map(|node| node.saturating_sub(1)).collect(),
            node_op: vec![u32::MAX; tail as usize + 1],
            node_is_call: vec![false; tail as usize + 1],
            call_node: vec![0; ops.len()],
            ret_node: vec![0; ops.len()],
            tail,
        };
        for (position, &(_, is_return, op)) in events.iter().enumerate() {
            let node = position as u32 + 1;
            list.node_op[node as usize] = op;
            list.node_is_call[node as usize] = !is_return;
            if is_return {
                list.ret_node[op as usize] = node;
            } else {
                list.call_node[op as usize] = node;
            }
        }
        list
    }

    pub(crate) fn first(&self) -> u32 {
        self.next[HEAD as usize]
    }

    fn unlink(&mut self, node: u32) {
        let (prev, next) = (self.prev[node as usize], self.next[node as usize]);
        self.next[prev as usize] = next;
        self.prev[next as usize] = prev;
    }

    /// Puts back a node removed by `unlink`; valid only in reverse order of the unlinks.
    fn relink(&mut self, node: u32) {
        let (prev, next) = (self.prev[node as usize], self.next[node as usize]);
        self.next[prev as usize] = node;
        self.prev[next as usize] = node;
    }

    pub(crate) fn lift(&mut self, op: u32) {
        self.unlink(self.call_node[op as usize]);
        self.unlink(self.ret_node[op as usize]);
    }

    pub(crate) fn unlift(&mut self, op: u32) {
        self.relink(self.ret_node[op as usize]);
        self.relink(self.call_node[op as usize]);
    }
}
