//! Power loss for `SimFs` (see the model in `sim.rs`): how unsynced writes and directory
//! operations are resolved, at random or by an explicit choice of sectors.

use super::sim::{apply_to, copy_range, DirOp, Inode, SimFs, SimState};
use super::SECTOR_BYTES;
use crate::raft::rng::Rng;
use std::collections::BTreeSet;
use std::io;
use std::path::Path;

/// How a crash resolved one file's unsynced writes (for traces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    AllLost,
    Prefix,
    Sectors,
    Torn,
}

/// Sector numbers touched by unsynced writes of `inode`.
fn dirty_sectors(inode: &Inode) -> BTreeSet<u64> {
    let mut sectors = BTreeSet::new();
    for w in &inode.pending {
        sectors.extend(w.offset / SECTOR_BYTES..w.end().div_ceil(SECTOR_BYTES));
    }
    sectors
}

fn resolve_random(inode: &mut Inode, rng: &mut Rng) -> Mode {
    let n = inode.pending.len() as u64;
    let mode = match rng.range(0, 4) {
        0 => Mode::AllLost,
        1 => Mode::Prefix,
        2 => Mode::Sectors,
        _ => Mode::Torn,
    };
    match mode {
        Mode::AllLost => {}
        Mode::Prefix => {
            let k = rng.range(0, n + 1) as usize;
            for w in &inode.pending[..k] {
                apply_to(&mut inode.durable, w, u64::MAX);
            }
        }
        Mode::Sectors => {
            for s in dirty_sectors(inode) {
                if rng.chance(1, 2) {
                    copy_range(&mut inode.durable, &inode.current, s * SECTOR_BYTES, (s + 1) * SECTOR_BYTES);
                }
            }
        }
        Mode::Torn => {
            let k = rng.range(0, n) as usize;
            for w in &inode.pending[..k] {
                apply_to(&mut inode.durable, w, u64::MAX);
            }
            let w = &inode.pending[k];
            // Cut points: the start of the write, and every sector boundary strictly inside it.
            let lo = w.offset / SECTOR_BYTES + 1;
            let hi = w.end().saturating_sub(1) / SECTOR_BYTES;
            let boundaries = (hi + 1).saturating_sub(lo);
            let pick = rng.range(0, boundaries + 1);
            let cut = if pick == 0 { w.offset } else { (lo + pick - 1) * SECTOR_BYTES };
            debug_assert!(cut >= w.offset && cut <= w.end());
            apply_to(&mut inode.durable, w, cut);
        }
    }
    mode
}

/// After the files are resolved: directories, garbage inodes, handles, locks.
fn finish(st: &mut SimState, dir_prefix: &mut dyn FnMut(usize) -> usize) {
    for d in st.dirs.values_mut() {
        let keep = dir_prefix(d.pending.len());
        for op in std::mem::take(&mut d.pending).into_iter().take(keep) {
            match op {
                DirOp::Link(name, ino) => {
                    d.durable.insert(name, ino);
                }
                DirOp::Unlink(name) => {
                    d.durable.remove(&name);
                }
                DirOp::Rename(a, b) => {
                    if let Some(ino) = d.durable.remove(&a) {
                        d.durable.insert(b, ino);
                    }
                }
            }
        }
        d.volatile = d.durable.clone();
        d.pending.clear();
    }
    let live: BTreeSet<u64> = st.dirs.values().flat_map(|d| d.durable.values().copied()).collect();
    st.inodes.retain(|ino, _| live.contains(ino));
    for inode in st.inodes.values_mut() {
        // The page cache is gone: reads see the disk (with any latent damage) again.
        if inode.current != inode.durable {
            inode.current = inode.durable.clone();
        }
        inode.pending.clear();
        inode.failed.clear();
    }
    st.epoch += 1;
    st.locks.clear();
    st.ops_left = None;
    st.fail_next_sync = false;
}

impl SimFs {
    /// Power loss: every file's unsynced writes and every directory's unsynced operations are
    /// resolved at random (see `sim.rs`). Afterwards the visible state equals the durable state.
    pub fn crash(&self, rng: &mut Rng) {
        let mut st = self.lock_state();
        let ids: Vec<u64> = st.inodes.iter().filter(|(_, i)| !i.pending.is_empty()).map(|(id, _)| *id).collect();
        for id in ids {
            if let Some(inode) = st.inodes.get_mut(&id) {
                let mode = resolve_random(inode, rng);
                log::trace!("SimFs crash: inode {id} resolved {mode:?}");
            }
        }
        finish(&mut st, &mut |n| rng.range(0, n as u64 + 1) as usize);
    }

    /// Power loss with the surviving sectors chosen by the caller: each unsynced 512-byte sector
    /// of the file now at path `p` (sector number `s`) reaches the disk iff `keep(p, s)`. Every
    /// unsynced directory operation is kept. For tests that enumerate outcomes.
    pub fn crash_keeping_sectors(&self, keep: &mut dyn FnMut(&Path, u64) -> bool) {
        let mut st = self.lock_state();
        for (path, ino) in st.named_files(false) {
            if let Some(inode) = st.inodes.get_mut(&ino) {
                for s in dirty_sectors(inode) {
                    if keep(&path, s) {
                        copy_range(&mut inode.durable, &inode.current, s * SECTOR_BYTES, (s + 1) * SECTOR_BYTES);
                    }
                }
            }
        }
        finish(&mut st, &mut |n| n);
    }

    /// Sector numbers of the file at `path` that hold unsynced writes, ascending.
    pub fn unsynced_sectors(&self, path: &Path) -> io::Result<Vec<u64>> {
        let st = self.lock_state();
        let ino = st.lookup(path)?;
        Ok(st.inodes.get(&ino).map(|i| dirty_sectors(i).into_iter().collect()).unwrap_or_default())
    }
}
