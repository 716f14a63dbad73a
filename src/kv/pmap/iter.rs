//! In-order iteration over a [`super::PMap`]: a cursor with a fixed-size path stack, so iterating
//! allocates nothing at all.

use std::borrow::Borrow;
use std::iter::FusedIterator;
use std::sync::Arc;

use super::node::{child_index, search_leaf, Node, MAX_HEIGHT};

/// One level of the path from the root to the cursor's leaf: a branch's children and the index of
/// the next child to visit once the subtree under the current one is done.
type Frame<'a, K, V> = (&'a [Arc<Node<K, V>>], usize);

/// A position in the tree: the current leaf, the next entry in it, and the branches above it.
pub(crate) struct Cursor<'a, K, V> {
    path: [Frame<'a, K, V>; MAX_HEIGHT],
    depth: usize,
    keys: &'a [K],
    vals: &'a [V],
    pos: usize,
}

impl<K, V> Clone for Cursor<'_, K, V> {
    fn clone(&self) -> Self {
        Cursor { path: self.path, depth: self.depth, keys: self.keys, vals: self.vals, pos: self.pos }
    }
}

impl<'a, K, V> Cursor<'a, K, V> {
    /// A cursor with nothing left to yield.
    pub(crate) fn exhausted() -> Self {
        Cursor { path: [(&[], 0); MAX_HEIGHT], depth: 0, keys: &[], vals: &[], pos: 0 }
    }

    /// A cursor at the first entry of the tree under `root`.
    pub(crate) fn first(root: Option<&'a Node<K, V>>) -> Self {
        let mut cursor = Cursor::exhausted();
        if let Some(root) = root {
            cursor.descend_leftmost(root);
        }
        cursor
    }

    /// A cursor at the first entry whose key is `>= key` (`inclusive`) or `> key`.
    pub(crate) fn seek<Q>(root: Option<&'a Node<K, V>>, key: &Q, inclusive: bool) -> Self
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let mut cursor = Cursor::exhausted();
        let Some(mut node) = root else { return cursor };
        loop {
            match node {
                Node::Branch(branch) => {
                    // The entry sought is in this child or is the first of the children after it.
                    let at = child_index(&branch.seps, key);
                    cursor.push(&branch.children, at + 1);
                    node = &branch.children[at];
                }
                Node::Leaf(leaf) => {
                    cursor.keys = &leaf.keys;
                    cursor.vals = &leaf.vals;
                    cursor.pos = match search_leaf(&leaf.keys, key) {
                        Ok(found) if !inclusive => found + 1,
                        Ok(at) | Err(at) => at,
                    };
                    return cursor;
                }
            }
        }
    }

    fn push(&mut self, children: &'a [Arc<Node<K, V>>], next: usize) {
        debug_assert!(self.depth < MAX_HEIGHT, "tree taller than MAX_HEIGHT");
        self.path[self.depth] = (children, next);
        self.depth += 1;
    }

    fn descend_leftmost(&mut self, mut node: &'a Node<K, V>) {
        loop {
            match node {
                Node::Branch(branch) => {
                    self.push(&branch.children, 1);
                    node = &branch.children[0];
                }
                Node::Leaf(leaf) => {
                    self.keys = &leaf.keys;
                    self.vals = &leaf.vals;
                    self.pos = 0;
                    return;
                }
            }
        }
    }

    /// Moves to the first entry of the next leaf; false when there is none.
    fn next_leaf(&mut self) -> bool {
        while self.depth > 0 {
            let (children, next) = self.path[self.depth - 1];
            if next < children.len() {
                self.path[self.depth - 1].1 = next + 1;
                self.descend_leftmost(&children[next]);
                return true;
            }
            self.depth -= 1;
        }
        false
    }

    pub(crate) fn next_entry(&mut self) -> Option<(&'a K, &'a V)> {
        while self.pos == self.keys.len() {
            if !self.next_leaf() {
                return None;
            }
        }
        let at = self.pos;
        self.pos += 1;
        Some((&self.keys[at], &self.vals[at]))
    }

    pub(crate) fn peek_key(&self) -> Option<&'a K> {
        self.clone().next_entry().map(|(key, _)| key)
    }
}

/// Every entry in ascending key order; see [`super::PMap::iter`].
pub struct Iter<'a, K, V> {
    pub(crate) cursor: Cursor<'a, K, V>,
    pub(crate) remaining: usize,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.cursor.next_entry()?;
        self.remaining -= 1;
        Some(entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}
impl<K, V> FusedIterator for Iter<'_, K, V> {}

impl<K, V> Clone for Iter<'_, K, V> {
    fn clone(&self) -> Self {
        Iter { cursor: self.cursor.clone(), remaining: self.remaining }
    }
}

/// The entries of a key range in ascending order; see [`super::PMap::range`].
pub struct Range<'a, K, V> {
    pub(crate) cursor: Cursor<'a, K, V>,
    /// The first key of the map past the range's end (`None`: the range runs to the end).
    pub(crate) stop: Option<&'a K>,
}

impl<'a, K: Ord, V> Iterator for Range<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        let (key, val) = self.cursor.next_entry()?;
        // `>=`, not identity: a start past the end then yields nothing instead of running on.
        if self.stop.is_some_and(|stop| key >= stop) {
            self.cursor = Cursor::exhausted();
            return None;
        }
        Some((key, val))
    }
}

impl<K: Ord, V> FusedIterator for Range<'_, K, V> {}

impl<K, V> Clone for Range<'_, K, V> {
    fn clone(&self) -> Self {
        Range { cursor: self.cursor.clone(), stop: self.stop }
    }
}

/// Every key in ascending order; see [`super::PMap::keys`].
pub struct Keys<'a, K, V> {
    pub(crate) inner: Iter<'a, K, V>,
}

impl<'a, K, V> Iterator for Keys<'a, K, V> {
    type Item = &'a K;

    fn next(&mut self) -> Option<&'a K> {
        self.inner.next().map(|(key, _)| key)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<K, V> ExactSizeIterator for Keys<'_, K, V> {}
impl<K, V> FusedIterator for Keys<'_, K, V> {}

/// Every value in ascending key order; see [`super::PMap::values`].
pub struct Values<'a, K, V> {
    pub(crate) inner: Iter<'a, K, V>,
}

impl<'a, K, V> Iterator for Values<'a, K, V> {
    type Item = &'a V;

    fn next(&mut self) -> Option<&'a V> {
        self.inner.next().map(|(_, val)| val)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<K, V> ExactSizeIterator for Values<'_, K, V> {}
impl<K, V> FusedIterator for Values<'_, K, V> {}
