//! The payload of a membership change entry (`EntryKind::ConfChange`) and the byte form of a
//! [`ConfState`] (snapshot headers and snapshot chunks carry it). The layout is `protocol.md`
//! §9.1; integers are big-endian, as on the wire.
//!
//! ```text
//! ConfEntry:  ConfChange, then u32 length + ConfState: the configuration after the entry
//! ConfChange: u8 transition (1 = enter the joint configuration, 2 = leave it)
//!             u16 count, then count × { u8 op (0 add voter, 1 add learner, 2 remove),
//!                                       u64 id, u16 address length, address (UTF-8) }
//!             (count is 0 for "leave")
//! ConfState:  u8 version (1), u16 count + u64 ids for voters, voters_outgoing, learners,
//!             learners_next, then u16 count × { u64 id, u16 length, address }
//! ```
//!
//! Decoders check every count and length against `crate::limits` before reading: the bytes come
//! from peers and from disk.

use bytes::{BufMut, Bytes, BytesMut};

use crate::limits::{ADDRESS_BYTES_MAX, CONF_CHANGES_PER_ENTRY_MAX, CONF_STATE_BYTES_MAX, MEMBERS_MAX, VOTERS_MAX};
use crate::raft::types::{ConfState, NodeId};

/// What one change does to one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeOp {
    /// Make `id` a voter (a new node, or a learner: promotion).
    AddVoter,
    /// Make `id` a learner (a new node, or a voter: demotion, effective when the joint phase ends).
    AddLearner,
    /// Take `id` out of every set.
    Remove,
}

impl ChangeOp {
    fn to_u8(self) -> u8 {
        match self {
            ChangeOp::AddVoter => 0,
            ChangeOp::AddLearner => 1,
            ChangeOp::Remove => 2,
        }
    }

    fn from_u8(v: u8) -> Option<ChangeOp> {
        match v {
            0 => Some(ChangeOp::AddVoter),
            1 => Some(ChangeOp::AddLearner),
            2 => Some(ChangeOp::Remove),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChangeOp::AddVoter => "add-voter",
            ChangeOp::AddLearner => "add-learner",
            ChangeOp::Remove => "remove",
        }
    }
}

/// A membership change entry's payload: the change (what an operator asked for, shown by
/// `raft-dump` and `raftctl`) and the whole configuration it results in. Nodes take the
/// configuration as stated, so one that joins with no configuration (its log starts with entries
/// made under a bootstrap configuration it never saw) learns it from the first change it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfEntry {
    pub change: ConfChange,
    pub conf: ConfState,
}

impl ConfEntry {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.change.encode_into(&mut out);
        let conf = encode_conf_state(&self.conf);
        out.put_u32(conf.len() as u32);
        out.put_slice(&conf);
        out.freeze()
    }

    /// Decodes an entry's payload; refuses anything out of bounds or with trailing bytes.
    pub fn decode(data: &[u8]) -> Result<ConfEntry, String> {
        let mut r = Reader { data, pos: 0 };
        let change = ConfChange::decode_from(&mut r)?;
        let n = r.u32()? as usize;
        if n > CONF_STATE_BYTES_MAX {
            return Err(format!("configuration of {n} bytes (at most {CONF_STATE_BYTES_MAX})"));
        }
        let conf = decode_conf_state(r.take(n)?)?;
        r.finish()?;
        Ok(ConfEntry { change, conf })
    }
}

/// One member's change; `address` is where the node layer reaches it (empty: keep the known one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberChange {
    pub op: ChangeOp,
    pub id: NodeId,
    pub address: String,
}

/// A membership change entry's meaning: enter C_old,new with these changes, or leave it for C_new.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChange {
    Enter(Vec<MemberChange>),
    Leave,
}

impl ConfChange {
    fn encode_into(&self, out: &mut BytesMut) {
        match self {
            ConfChange::Enter(changes) => {
                out.put_u8(1);
                out.put_u16(changes.len() as u16);
                for c in changes {
                    out.put_u8(c.op.to_u8());
                    out.put_u64(c.id);
                    put_str(out, &c.address);
                }
            }
            ConfChange::Leave => {
                out.put_u8(2);
                out.put_u16(0);
            }
        }
    }

    fn decode_from(r: &mut Reader) -> Result<ConfChange, String> {
        let transition = r.u8()?;
        let count = r.u16()? as usize;
        if count > CONF_CHANGES_PER_ENTRY_MAX {
            return Err(format!("{count} changes in one entry (at most {CONF_CHANGES_PER_ENTRY_MAX})"));
        }
        let change = match transition {
            1 => {
                let mut changes = Vec::with_capacity(count);
                for _ in 0..count {
                    let op = r.u8()?;
                    let op = ChangeOp::from_u8(op).ok_or_else(|| format!("unknown change op {op}"))?;
                    let id = r.u64()?;
                    let address = r.string()?;
                    changes.push(MemberChange { op, id, address });
                }
                ConfChange::Enter(changes)
            }
            2 if count == 0 => ConfChange::Leave,
            other => return Err(format!("unknown transition {other} with {count} changes")),
        };
        Ok(change)
    }

    /// One line for logs and dumps: `enter[add-voter 4 "h:1", remove 3]` or `leave`.
    pub fn describe(&self) -> String {
        match self {
            ConfChange::Leave => "leave joint".to_string(),
            ConfChange::Enter(changes) => {
                let parts: Vec<String> =
                    changes.iter().map(|c| format!("{} {} {:?}", c.op.name(), c.id, c.address)).collect();
                format!("enter joint [{}]", parts.join(", "))
            }
        }
    }
}

/// The byte form of a [`ConfState`] (version 1).
pub fn encode_conf_state(conf: &ConfState) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(1);
    for set in [&conf.voters, &conf.voters_outgoing, &conf.learners, &conf.learners_next] {
        out.put_u16(set.len() as u16);
        for id in set {
            out.put_u64(*id);
        }
    }
    out.put_u16(conf.addresses.len() as u16);
    for (id, address) in &conf.addresses {
        out.put_u64(*id);
        put_str(&mut out, address);
    }
    out.freeze()
}

/// Decodes [`encode_conf_state`]'s bytes; checks bounds and ids (not the sets' consistency,
/// which `Configuration::from_conf_state` checks).
pub fn decode_conf_state(data: &[u8]) -> Result<ConfState, String> {
    let mut r = Reader { data, pos: 0 };
    let version = r.u8()?;
    if version != 1 {
        return Err(format!("configuration version {version} is unknown"));
    }
    let mut sets: [Vec<NodeId>; 4] = Default::default();
    for set in sets.iter_mut() {
        let n = r.u16()? as usize;
        if n > VOTERS_MAX {
            return Err(format!("{n} ids in one configuration set (at most {VOTERS_MAX})"));
        }
        for _ in 0..n {
            set.push(r.u64()?);
        }
    }
    let n = r.u16()? as usize;
    if n > MEMBERS_MAX {
        return Err(format!("{n} addresses (at most {MEMBERS_MAX})"));
    }
    let mut addresses = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u64()?;
        addresses.push((id, r.string()?));
    }
    r.finish()?;
    let [voters, voters_outgoing, learners, learners_next] = sets;
    Ok(ConfState { voters, voters_outgoing, learners, learners_next, addresses })
}

fn put_str(out: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(ADDRESS_BYTES_MAX)];
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(format!("truncated at byte {} (needs {n} more of {})", self.pos, self.data.len()));
        };
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        if n > ADDRESS_BYTES_MAX {
            return Err(format!("address of {n} bytes (at most {ADDRESS_BYTES_MAX})"));
        }
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "address is not UTF-8".to_string())
    }

    fn finish(&self) -> Result<(), String> {
        if self.pos != self.data.len() {
            return Err(format!("{} trailing bytes", self.data.len() - self.pos));
        }
        Ok(())
    }
}
