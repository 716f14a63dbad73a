//! The meta file: term, vote, identity and recovery state of a node, kept so that one bad sector
//! or one torn write never loses a vote that may have been sent.
//!
//! Layout: an 8192-byte file `<data>/meta` with two slots, at offsets 0 and 4096 (separate 4 KiB
//! pages, so one latent page error hits at most one). Each slot (little-endian), rest zero:
//!
//! ```text
//! offset size field
//!  0     8    magic b"MRMETA01"
//!  8     4    format version u32 = 1
//! 12     4    flags u32: bit 0 = recovering
//! 16     8    generation u64 (the update number; both slots carry it after an update)
//! 24     8    term
//! 32     8    vote (0 = none)
//! 40     8    cluster id
//! 48     8    node id
//! 56     8    data-directory id (random, drawn when the directory was created)
//! 64     8    guard index   (with the recovering flag; else 0)
//! 72     8    guard term
//! 80     4    reason code   (1 = log corruption)
//! 84     4    CRC-32 over bytes [0, 84)
//! ```
//!
//! An update (`store`) writes slot A and syncs, then writes slot B and syncs, both with
//! generation g+1 and the same content. Reading takes the valid slot (magic, version, CRC) with
//! the highest generation; both invalid is an error naming the file (two faults: refuse to start).
//!
//! Why this survives one torn write or one latent sector error without losing a sent vote: a vote
//! (or anything that depends on the new term) leaves the node only after `store` returned, i.e.
//! after *both* slots hold generation g+1 durably. A torn write can only hit the slot being
//! written: tearing A leaves B at g (the update did not complete, nothing was sent, the old state
//! is the truth), tearing B leaves A at g+1 (complete). A latent error after a completed update
//! destroys one slot; the other still holds g+1. Before an update completes the previous update
//! had completed, so the same argument holds for it. Reads use `read_direct`, so a slot whose
//! sync failed (visible in the page cache, never on disk: fsyncgate) is never trusted; after a
//! failed sync the store refuses further use.
//!
//! Why asking the peers for the highest term (PAR-style) is not enough on its own: it bounds the
//! term but not the vote. If this node granted its vote to candidate C in term T, C may be the
//! only other node that knows T (the other peers never heard of it), and C may be down; the
//! peers then report a lower term, the node would vote again in T for another candidate, and T
//! could get two leaders. Only the node's own durable record of (T, C) prevents that.
//!
//! The WAL keeps writing HardState records (the commit index lives there; raft-dump shows them).
//! On open the effective (term, vote) is the newer of the meta file's and the WAL's
//! (`newer_term_vote`: the higher term, and within one term a non-zero vote over none), so a
//! crash between writing one and the other loses nothing; a directory from before the meta file
//! gets one initialized from the WAL's hard state.

use super::error::StorageError;
use super::fs::{FileHandle, FileSystem, OpenMode, PAGE_BYTES};
use byteorder::{ByteOrder, LittleEndian as LE};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the meta file inside a node's data directory.
pub const META_FILE: &str = "meta";
const MAGIC: &[u8; 8] = b"MRMETA01";
const VERSION: u32 = 1;
const SLOT_LEN: usize = 88;
const CRC_AT: usize = 84;
const FLAG_RECOVERING: u32 = 1;
/// Offsets of the two slots.
pub const SLOT_OFFSETS: [u64; 2] = [0, PAGE_BYTES];
/// Bytes of the meta file.
pub const META_FILE_BYTES: u64 = 2 * PAGE_BYTES;

/// Why a node is recovering (stored as a code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryReason {
    /// Synced log data was damaged and truncated (`RecoveryReport::corruption`).
    LogCorruption,
    /// The node found at run time that it lost entries it had acknowledged (a disk that forgot
    /// synced writes, an old backup): see `raft::recovery`.
    Amnesia,
    /// A code this version does not know (written by a newer one).
    Other(u32),
}

impl RecoveryReason {
    pub fn code(self) -> u32 {
        match self {
            RecoveryReason::LogCorruption => 1,
            RecoveryReason::Amnesia => 2,
            RecoveryReason::Other(c) => c,
        }
    }

    pub fn from_code(code: u32) -> RecoveryReason {
        match code {
            1 => RecoveryReason::LogCorruption,
            2 => RecoveryReason::Amnesia,
            c => RecoveryReason::Other(c),
        }
    }
}

/// The node lost part of its log: it must not vote for a candidate whose log is behind
/// (index, term) (Raft's up-to-date order: term first) until it has caught up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryGuard {
    pub index: u64,
    pub term: u64,
    pub reason: RecoveryReason,
}

impl RecoveryGuard {
    /// The higher of two guards by (term, index).
    pub fn max(self, other: RecoveryGuard) -> RecoveryGuard {
        if (other.term, other.index) > (self.term, self.index) {
            other
        } else {
            self
        }
    }
}

/// The content of the meta file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub term: u64,
    pub vote: u64,
    pub recovering: Option<RecoveryGuard>,
    pub data_dir_id: u64,
    pub cluster_id: u64,
    pub node_id: u64,
}

/// One slot decoded: its generation and content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub generation: u64,
    pub meta: Meta,
}

/// Encodes a slot (`SLOT_LEN` bytes).
pub fn encode_slot(generation: u64, m: &Meta) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[0..8].copy_from_slice(MAGIC);
    LE::write_u32(&mut b[8..12], VERSION);
    LE::write_u32(&mut b[12..16], if m.recovering.is_some() { FLAG_RECOVERING } else { 0 });
    let guard = m.recovering.map_or((0, 0, 0), |g| (g.index, g.term, g.reason.code()));
    let fields = [generation, m.term, m.vote, m.cluster_id, m.node_id, m.data_dir_id, guard.0, guard.1];
    for (i, v) in fields.iter().enumerate() {
        LE::write_u64(&mut b[16 + 8 * i..24 + 8 * i], *v);
    }
    LE::write_u32(&mut b[80..84], guard.2);
    let crc = crc32fast::hash(&b[..CRC_AT]);
    LE::write_u32(&mut b[CRC_AT..SLOT_LEN], crc);
    b
}

/// Decodes the slot at the start of `b`; the error says what is wrong with it.
pub fn decode_slot(b: &[u8]) -> Result<Slot, String> {
    if b.len() < SLOT_LEN {
        return Err(format!("slot truncated to {} bytes", b.len()));
    }
    if b[..SLOT_LEN].iter().all(|&x| x == 0) {
        return Err("slot is all zeros".into());
    }
    let (stored, computed) = (LE::read_u32(&b[CRC_AT..SLOT_LEN]), crc32fast::hash(&b[..CRC_AT]));
    if stored != computed {
        return Err(format!("crc mismatch (stored {stored:#010x}, computed {computed:#010x})"));
    }
    if &b[0..8] != MAGIC || LE::read_u32(&b[8..12]) != VERSION {
        return Err("bad magic or version".into());
    }
    let flags = LE::read_u32(&b[12..16]);
    if flags & !FLAG_RECOVERING != 0 {
        return Err(format!("unknown flags {flags:#x}"));
    }
    let f = |i: usize| LE::read_u64(&b[16 + 8 * i..24 + 8 * i]);
    let recovering = (flags & FLAG_RECOVERING != 0).then(|| RecoveryGuard {
        index: f(6),
        term: f(7),
        reason: RecoveryReason::from_code(LE::read_u32(&b[80..84])),
    });
    let meta = Meta { term: f(1), vote: f(2), cluster_id: f(3), node_id: f(4), data_dir_id: f(5), recovering };
    Ok(Slot { generation: f(0), meta })
}

/// Both slots of a meta file image, decoded (raft-dump shows them).
pub fn decode_slots(image: &[u8]) -> [Result<Slot, String>; 2] {
    SLOT_OFFSETS.map(|off| match image.get(off as usize..) {
        Some(rest) => decode_slot(rest),
        None => Err(format!("file ends before the slot at offset {off}")),
    })
}

/// Index (0 or 1) of the slot that holds the current content: the valid one with the highest
/// generation. None if both are invalid.
pub fn current_slot(slots: &[Result<Slot, String>; 2]) -> Option<usize> {
    match (&slots[0], &slots[1]) {
        (Ok(a), Ok(b)) => Some(if b.generation > a.generation { 1 } else { 0 }),
        (Ok(_), Err(_)) => Some(0),
        (Err(_), Ok(_)) => Some(1),
        (Err(_), Err(_)) => None,
    }
}

/// The newer of two (term, vote) pairs (module doc). Two different votes in one term mean the
/// stores disagree about a vote that may have been sent: an error.
pub fn newer_term_vote(a: (u64, u64), b: (u64, u64)) -> Result<(u64, u64), String> {
    if a.0 != b.0 {
        return Ok(if a.0 > b.0 { a } else { b });
    }
    match (a.1, b.1) {
        (x, y) if x == y || y == 0 => Ok(a),
        (0, _) => Ok(b),
        (x, y) => Err(format!("term {}: one store says the vote went to {x}, the other to {y}", a.0)),
    }
}

/// The open meta file. Every `store` is two synced slot writes; any failure poisons it.
pub struct MetaStore {
    path: PathBuf,
    file: Box<dyn FileHandle>,
    generation: u64,
    current: Meta,
    created: bool,
    failed: Option<String>,
}

impl MetaStore {
    /// Opens `path` (creating it for a new or pre-meta data directory with term 0, no vote and a
    /// fresh data-directory id) and checks that it belongs to this cluster and node.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        path: &Path,
        expected_cluster_id: u64,
        expected_node_id: u64,
    ) -> Result<(MetaStore, Meta), StorageError> {
        let exists = fs.exists(path).map_err(|e| StorageError::io("stat meta file", path, e))?;
        if !exists {
            let meta = Meta {
                term: 0,
                vote: 0,
                recovering: None,
                data_dir_id: fs.unique_id(),
                cluster_id: expected_cluster_id,
                node_id: expected_node_id,
            };
            create(fs.as_ref(), path, &meta)?;
        }
        let file = fs.open(path, OpenMode::ReadWrite).map_err(|e| StorageError::io("open meta file", path, e))?;
        let image = file.read_direct().map_err(|e| StorageError::io("read meta file (O_DIRECT)", path, e))?;
        let slots = decode_slots(&image);
        let Some(i) = current_slot(&slots) else {
            let why = |s: &Result<Slot, String>| s.as_ref().err().cloned().unwrap_or_default();
            let reason =
                format!("both slots are damaged (offset 0: {}; offset 4096: {})", why(&slots[0]), why(&slots[1]));
            return Err(StorageError::corrupt(path, 0, reason));
        };
        let slot = match &slots[i] {
            Ok(slot) => *slot,
            Err(why) => return Err(StorageError::corrupt(path, SLOT_OFFSETS[i], why.clone())),
        };
        let m = slot.meta;
        if (m.cluster_id, m.node_id) != (expected_cluster_id, expected_node_id) {
            return Err(StorageError::WrongNode {
                path: path.to_path_buf(),
                found_cluster: m.cluster_id,
                found_node: m.node_id,
                cluster: expected_cluster_id,
                node: expected_node_id,
            });
        }
        let mut store = MetaStore {
            path: path.to_path_buf(),
            file,
            generation: slot.generation,
            current: m,
            created: !exists,
            failed: None,
        };
        if slots.iter().any(|s| s.as_ref().map_or(true, |s| *s != slot)) {
            log::warn!("{}: the meta slots differ ({:?} / {:?}); rewriting both", path.display(), slots[0], slots[1]);
            store.store(&m)?;
        }
        Ok((store, m))
    }

    /// Durably replaces the content (two syncs, see the module doc). Identity fields must not
    /// change.
    pub fn store(&mut self, meta: &Meta) -> Result<(), StorageError> {
        if let Some(reason) = &self.failed {
            return Err(StorageError::Poisoned { reason: reason.clone() });
        }
        let same_identity = (meta.cluster_id, meta.node_id, meta.data_dir_id)
            == (self.current.cluster_id, self.current.node_id, self.current.data_dir_id);
        if !same_identity {
            return Err(StorageError::Invalid("the meta file's identity fields never change".into()));
        }
        let generation = self.generation + 1;
        let slot = encode_slot(generation, meta);
        for off in SLOT_OFFSETS {
            let result = self
                .file
                .write_at(off, &slot)
                .map_err(|e| StorageError::io("write meta slot", &self.path, e))
                .and_then(|()| self.file.sync_data().map_err(|e| StorageError::io("fdatasync meta", &self.path, e)));
            if let Err(e) = result {
                self.failed = Some(e.to_string());
                return Err(e);
            }
        }
        self.generation = generation;
        self.current = *meta;
        Ok(())
    }

    /// The content as of the last successful `store` (or `open`).
    pub fn meta(&self) -> Meta {
        self.current
    }

    /// True if `open` created the file (new directory, or one from before the meta file).
    pub fn created(&self) -> bool {
        self.created
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes a new meta file atomically: both slots into `path.tmp`, sync, rename, sync the
/// directory. A leftover `.tmp` from a crash is simply overwritten.
fn create(fs: &dyn FileSystem, path: &Path, meta: &Meta) -> Result<(), StorageError> {
    let tmp = path.with_extension("tmp");
    let file = fs.open(&tmp, OpenMode::CreateTruncate).map_err(|e| StorageError::io("create meta file", &tmp, e))?;
    file.allocate(META_FILE_BYTES, super::fill::Fill::Zeros)
        .map_err(|e| StorageError::io("allocate meta file", &tmp, e))?;
    let slot = encode_slot(1, meta);
    for off in SLOT_OFFSETS {
        file.write_at(off, &slot).map_err(|e| StorageError::io("write meta slot", &tmp, e))?;
    }
    file.sync_data().map_err(|e| StorageError::io("fdatasync meta file", &tmp, e))?;
    fs.rename(&tmp, path).map_err(|e| StorageError::io("rename meta file", &tmp, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    super::dir::sync_dir(fs, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        let guard = RecoveryGuard { index: 9, term: 4, reason: RecoveryReason::LogCorruption };
        Meta { term: 5, vote: 2, recovering: Some(guard), data_dir_id: 77, cluster_id: 1, node_id: 3 }
    }

    #[test]
    fn slots_round_trip_and_every_bit_flip_is_rejected() {
        let b = encode_slot(12, &meta());
        assert_eq!(decode_slot(&b), Ok(Slot { generation: 12, meta: meta() }));
        for bit in 0..SLOT_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_slot(&c).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn newer_term_vote_prefers_term_then_a_vote() {
        assert_eq!(newer_term_vote((3, 0), (2, 1)), Ok((3, 0)));
        assert_eq!(newer_term_vote((3, 0), (3, 2)), Ok((3, 2)));
        assert_eq!(newer_term_vote((3, 2), (3, 0)), Ok((3, 2)));
        assert!(newer_term_vote((3, 1), (3, 2)).is_err());
    }
}
