//! Walking the records of a segment image: the valid prefix, and (for legacy version 1 segments)
//! what follows it. Pure functions over byte slices, no I/O. Version 2 segments are judged by
//! `analyze`, which also uses these helpers.

use super::record::{align_up, decode, DecodeError, Decoded, RECORD_ALIGN};

/// True if every byte is zero. Written so that the compiler vectorizes it (recovery skips the
/// unused part of the last segment with this, so it bounds the scan rate).
pub fn is_zero(buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(64);
    for c in &mut chunks {
        if c.iter().fold(0u8, |a, &b| a | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// Offset of the first non-zero byte at or after `from`, if any.
pub fn first_nonzero(buf: &[u8], from: usize) -> Option<usize> {
    let mut pos = from;
    while pos < buf.len() {
        let end = (pos + 4096).min(buf.len());
        if is_zero(&buf[pos..end]) {
            pos = end;
            continue;
        }
        return buf[pos..end].iter().position(|&b| b != 0).map(|i| pos + i);
    }
    None
}

/// How a segment's sequence of valid records ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TailKind {
    /// Only zero bytes follow (or the segment is full to the last byte).
    Clean,
    /// Invalid bytes follow, but no valid record after them: a torn write. `dirty_end` is one
    /// past the last non-zero byte, so `dirty_end - end` bytes would be dropped.
    Torn { reason: DecodeError, dirty_end: usize },
    /// An invalid record is followed by a valid one: damage in the middle, never a torn write.
    Hole { reason: DecodeError, valid_at: usize },
}

/// Where and how a scan stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanEnd {
    /// One past the last valid record.
    pub end: usize,
    pub tail: TailKind,
}

/// Walks the valid records of `buf` from `start`, calling `f(offset, decoded)` for each, then
/// classifies what follows the last valid record. An error from `f` stops the scan.
pub fn scan<'a, E>(
    buf: &'a [u8],
    start: usize,
    mut f: impl FnMut(usize, &Decoded<'a>) -> Result<(), E>,
) -> Result<ScanEnd, E> {
    let mut off = start;
    while off < buf.len() {
        match decode(buf, off) {
            Ok(d) => {
                f(off, &d)?;
                off += d.len;
            }
            Err(reason) => return Ok(ScanEnd { end: off, tail: classify_tail(buf, off, reason) }),
        }
    }
    Ok(ScanEnd { end: off, tail: TailKind::Clean })
}

/// Decides whether the invalid bytes at `off` are a torn tail, a hole, or just the zero end.
fn classify_tail(buf: &[u8], off: usize, reason: DecodeError) -> TailKind {
    // A valid header has a non-zero byte in its first 16 bytes, so a header at x can only exist
    // if some non-zero byte q satisfies x <= q < x + 16.
    let mut candidate = if reason == DecodeError::Zero { off } else { off + RECORD_ALIGN };
    let mut pos = off;
    let mut last_nonzero = None;
    while let Some(q) = first_nonzero(buf, pos) {
        last_nonzero = Some(q);
        let lowest = align_up((q + 1).saturating_sub(16));
        candidate = candidate.max(lowest);
        while candidate <= q {
            if decode(buf, candidate).is_ok() {
                return TailKind::Hole { reason, valid_at: candidate };
            }
            candidate += RECORD_ALIGN;
        }
        pos = q + 1;
    }
    match last_nonzero {
        None => TailKind::Clean,
        Some(q) => TailKind::Torn { reason, dirty_end: q + 1 },
    }
}
