//! What unwritten segment space holds, so that recovery can tell "never written" from "written,
//! then damaged".
//!
//! Version 1 and 2 segments were allocated with zeros. Then a synced final batch that a latent
//! error zeroed reads exactly like a batch that was never written: recovery dropped it as a torn
//! tail, and an acknowledged write could be lost with it (the "residual window" of version 2).
//! Version 3 segments are allocated with a *fill pattern* instead: a fixed pseudo-random byte
//! stream of the file offset, with no zero byte in it. A crash can only leave, in each sector,
//! what was written or what was there before (the pattern); damage leaves zeros or flipped bits,
//! which the pattern never contains. So a sector that matches the pattern was never written
//! durably, and anything else past the last valid record is damage or a write in progress.
//!
//! Invariants: the pattern depends only on the absolute file offset (a sub-range can be checked
//! without the rest); every byte of it is non-zero (a zeroed sector is never mistaken for it);
//! it is stable across releases (it is part of the on-disk format: changing it needs a new
//! segment version).
//!
//! Known limit: a written sector whose bytes equal the pattern at that offset reads as unwritten.
//! Record headers and CRCs make that impossible for whole records by chance; a client would have
//! to store values crafted for the exact offset they land at, and it would still need a damaged
//! neighbouring record to matter.

/// How unwritten space of a file is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Zeros (meta files, and segments of versions 1 and 2).
    Zeros,
    /// The fill pattern (segments of version 3 on).
    Pattern,
}

/// Key of the pattern stream ("mini-raf" in ASCII). Part of the on-disk format.
const PATTERN_KEY: u64 = 0x6d69_6e69_2d72_6166;

/// The pattern's 8 bytes at the 8-aligned offset `word * 8`: SplitMix64 of the word number,
/// with the low bit of every byte set, so no byte is zero.
#[inline]
fn pattern_word(word: u64) -> u64 {
    let mut z = word.wrapping_add(PATTERN_KEY).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 0x0101_0101_0101_0101
}

impl Fill {
    /// The fill of a segment of format `version`.
    pub fn of_segment_version(version: u32) -> Fill {
        if version >= 3 {
            Fill::Pattern
        } else {
            Fill::Zeros
        }
    }

    /// Writes the fill of file offsets `[offset, offset + dst.len())` into `dst`.
    pub fn write(self, offset: u64, dst: &mut [u8]) {
        match self {
            Fill::Zeros => dst.fill(0),
            Fill::Pattern => {
                let head = (offset.next_multiple_of(8) - offset).min(dst.len() as u64) as usize;
                for (i, b) in dst[..head].iter_mut().enumerate() {
                    *b = pattern_byte(offset + i as u64);
                }
                let mut word = (offset + head as u64) / 8;
                let mut chunks = dst[head..].chunks_exact_mut(8);
                for c in &mut chunks {
                    c.copy_from_slice(&pattern_word(word).to_le_bytes());
                    word += 1;
                }
                let base = word * 8;
                for (j, b) in chunks.into_remainder().iter_mut().enumerate() {
                    *b = pattern_byte(base + j as u64);
                }
            }
        }
    }

    /// The fill of `[offset, offset + len)` as a new buffer.
    pub fn bytes(self, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.write(offset, &mut v);
        v
    }

    /// True if `bytes`, found at file offset `offset`, are exactly the fill (never written).
    pub fn matches(self, offset: u64, bytes: &[u8]) -> bool {
        match self {
            Fill::Zeros => super::scan::is_zero(bytes),
            Fill::Pattern => {
                let mut i = 0usize;
                // Unaligned head, then whole words (the hot path at recovery), then the tail.
                while i < bytes.len() && !(offset + i as u64).is_multiple_of(8) {
                    if bytes[i] != pattern_byte(offset + i as u64) {
                        return false;
                    }
                    i += 1;
                }
                let mut chunks = bytes[i..].chunks_exact(8);
                let mut word = (offset + i as u64) / 8;
                for c in &mut chunks {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(c);
                    if u64::from_le_bytes(w) != pattern_word(word) {
                        return false;
                    }
                    word += 1;
                }
                let tail = chunks.remainder();
                let base = word * 8;
                tail.iter().enumerate().all(|(j, &b)| b == pattern_byte(base + j as u64))
            }
        }
    }

    /// One past the last byte of `image` (a whole file, from offset 0) that is not the fill;
    /// 0 if the image is all fill.
    pub fn dirty_end(self, image: &[u8]) -> usize {
        let mut end = image.len();
        while end > 0 {
            let start = end.saturating_sub(4096) / 8 * 8;
            if !self.matches(start as u64, &image[start..end]) {
                let last = (start..end).rev().find(|&i| !self.matches(i as u64, &image[i..i + 1]));
                return last.map_or(start, |i| i + 1);
            }
            end = start;
        }
        0
    }
}

#[inline]
fn pattern_byte(at: u64) -> u8 {
    pattern_word(at / 8).to_le_bytes()[(at % 8) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_has_no_zero_byte_and_depends_only_on_the_offset() {
        let a = Fill::Pattern.bytes(0, 1 << 16);
        assert!(a.iter().all(|&b| b != 0));
        let b = Fill::Pattern.bytes(12_345, 100);
        assert_eq!(&a[12_345..12_445], &b[..]);
        assert!(Fill::Pattern.matches(3, &a[3..4097]));
        assert!(!Fill::Pattern.matches(4, &a[3..4097]), "a shifted pattern does not match");
    }

    #[test]
    fn damage_never_reads_as_unwritten() {
        let img = Fill::Pattern.bytes(0, 8192);
        for at in [0usize, 1, 7, 8, 4095, 4096, 8191] {
            let mut zeroed = img.clone();
            zeroed[at] = 0;
            assert!(!Fill::Pattern.matches(0, &zeroed), "zero at {at}");
            for bit in 0..8 {
                let mut flipped = img.clone();
                flipped[at] ^= 1 << bit;
                assert!(!Fill::Pattern.matches(0, &flipped), "bit {bit} at {at}");
            }
        }
    }

    #[test]
    fn dirty_end_finds_the_last_written_byte() {
        let mut img = Fill::Pattern.bytes(0, 3 * 4096 + 100);
        assert_eq!(Fill::Pattern.dirty_end(&img), 0);
        img[5000] ^= 0x40;
        assert_eq!(Fill::Pattern.dirty_end(&img), 5001);
        img[..10].fill(7);
        assert_eq!(Fill::Pattern.dirty_end(&img), 5001);
        let zeros = vec![0u8; 9000];
        assert_eq!(Fill::Zeros.dirty_end(&zeros), 0);
        assert_eq!(Fill::Pattern.dirty_end(&zeros), 9000, "zeros are not the pattern");
    }
}
