//! Bottom-up construction of a tree from sorted entries, for [`FromIterator`]: every node as full
//! as the fill bounds allow, where inserting ascending keys one by one leaves leaves half full.

use std::sync::Arc;

use super::node::{Branch, Leaf, Node, BRANCH_MAX, LEAF_MAX};

/// The root of a tree holding `entries`, which must have strictly ascending keys (`None` when
/// there are none).
pub(crate) fn build_sorted<K: Ord + Clone, V>(entries: Vec<(K, V)>) -> Option<Arc<Node<K, V>>> {
    debug_assert!(entries.windows(2).all(|pair| pair[0].0 < pair[1].0), "entries not strictly ascending");
    // Each level is a list of (smallest key of the subtree, subtree); the smallest keys of all but
    // the first child of a branch become its separators.
    let mut level = Vec::with_capacity(entries.len().div_ceil(LEAF_MAX));
    let mut entries = entries.into_iter();
    for size in even_chunks(entries.len(), LEAF_MAX) {
        let mut leaf = Leaf::empty();
        for (key, val) in entries.by_ref().take(size) {
            leaf.keys.push(key);
            leaf.vals.push(val);
        }
        level.push((leaf.keys[0].clone(), Arc::new(Node::Leaf(leaf))));
    }
    while level.len() > 1 {
        let mut upper = Vec::with_capacity(level.len().div_ceil(BRANCH_MAX));
        let mut children = level.into_iter();
        for size in even_chunks(children.len(), BRANCH_MAX) {
            let mut branch = Branch::empty();
            let (first_key, first_child) = children.next().expect("chunks are not empty");
            branch.children.push(first_child);
            for (key, child) in children.by_ref().take(size - 1) {
                branch.seps.push(key);
                branch.children.push(child);
            }
            upper.push((first_key, Arc::new(Node::Branch(branch))));
        }
        level = upper;
    }
    level.pop().map(|(_, root)| root)
}

/// The sizes of the fewest chunks of at most `max` that add up to `total`, as even as possible
/// (they differ by at most one). With two or more chunks each is at least `max / 2`, because
/// `total > (chunks - 1) * max`: the fill bound of a non-root node.
fn even_chunks(total: usize, max: usize) -> impl Iterator<Item = usize> {
    let chunks = total.div_ceil(max);
    let (base, extra) = (total.checked_div(chunks).unwrap_or(0), total.checked_rem(chunks).unwrap_or(0));
    (0..chunks).map(move |at| base + usize::from(at < extra))
}

/// Sorts `entries` by key and keeps, of equal keys, the last entry given (what inserting them in
/// order would leave as the value).
pub(crate) fn sort_dedup_last<K: Ord, V>(entries: &mut Vec<(K, V)>) {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    // `dedup_by` keeps the first of a run; moving each later value into it keeps the last value.
    entries.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            std::mem::swap(&mut later.1, &mut earlier.1);
        }
        same
    });
}
