//! Tests of `analyze`: judging hand-built segment images (zero-filled version 2 and
//! pattern-filled version 3).

use super::*;
use crate::raft::types::EntryKind;
use crate::storage::record::{encode, record_len, Commit, SegmentHeader, SEGMENT_VERSION, SEGMENT_VERSION_ZERO_FILL};

/// A current-format segment image: header, then `batches` (entry payload sizes), each closed
/// by a Commit; unwritten space holds the fill.
fn image(batches: &[&[usize]]) -> (Vec<u8>, Vec<usize>) {
    image_of(SEGMENT_VERSION, batches)
}

/// The same for segment format `version`.
fn image_of(version: u32, batches: &[&[usize]]) -> (Vec<u8>, Vec<usize>) {
    let mut buf = Fill::of_segment_version(version).bytes(0, 16384);
    let h = SegmentHeader {
        version,
        seq: 1,
        prev_index: 0,
        prev_term: 0,
        floor_index: 0,
        floor_term: 0,
        hard_state: Default::default(),
        batch_seq: 0,
    };
    let mut off = encode(&mut buf, &Record::SegmentHeader(h));
    let (mut index, mut ends) = (0, Vec::new());
    for (seq, sizes) in batches.iter().enumerate() {
        let start = off;
        for &n in *sizes {
            index += 1;
            let data = vec![0xabu8; n];
            off += encode(&mut buf[off..], &Record::Entry { index, term: 1, kind: EntryKind::Normal, data: &data });
        }
        let c = Commit {
            batch_seq: seq as u64 + 1,
            batch_offset: start as u32,
            batch_len: (off - start) as u32,
            batch_crc: record::batch_crc(&buf[start..off]),
            last_index: index,
            last_term: 1,
            hs_term: 0,
            hs_vote: 0,
        };
        off += encode(&mut buf[off..], &Record::Commit(c));
        ends.push(off);
    }
    (buf, ends)
}

fn judge(buf: &[u8]) -> Analysis {
    analyze(buf, true, None, &mut |_, _| Ok(())).expect("no apply errors")
}

/// Makes `[from, to)` of a current-format image unwritten again (a write that never reached
/// the disk).
fn unwrite(buf: &mut [u8], from: usize, to: usize) {
    Fill::Pattern.write(from as u64, &mut buf[from..to]);
}

#[test]
fn clean_segments_keep_every_committed_batch() {
    let (buf, ends) = image(&[&[10, 20], &[300], &[5]]);
    let a = judge(&buf);
    assert_eq!((a.keep_end, a.batch_seq, a.verdict), (ends[2], 3, Verdict::Clean));
}

#[test]
fn a_lost_sector_in_the_final_batch_is_torn_even_with_valid_records_after_it() {
    let (mut buf, ends) = image(&[&[10], &[200, 200, 200, 200, 200]]);
    let lost = ends[0].div_ceil(SECTOR) * SECTOR;
    unwrite(&mut buf, lost, lost + SECTOR);
    let a = judge(&buf);
    assert_eq!(a.keep_end, ends[0]);
    assert!(matches!(a.verdict, Verdict::Torn { .. }), "{:?}", a.verdict);
}

#[test]
fn a_zeroed_page_in_the_synced_final_batch_is_corruption_where_zero_fill_called_it_torn() {
    // The residual window of version 2: a latent error zeroes the page holding the whole
    // final (synced, acknowledged) batch and the end of the one before. With zero fill it
    // reads as never written.
    for version in [SEGMENT_VERSION_ZERO_FILL, SEGMENT_VERSION] {
        let (mut buf, ends) = image_of(version, &[&[4200], &[100]]);
        let page = ends[0] / 4096 * 4096;
        assert!(page > 0);
        assert!(ends[1] <= page + 4096, "the final batch sits in one page");
        buf[page..page + 4096].fill(0);
        let a = judge(&buf);
        if version == SEGMENT_VERSION_ZERO_FILL {
            assert!(!matches!(a.verdict, Verdict::Corrupt { .. }), "v2 cannot tell: {:?}", a.verdict);
        } else {
            assert!(matches!(a.verdict, Verdict::Corrupt { .. }), "v3: {:?}", a.verdict);
        }
        // A zeroed sector inside the final batch only.
        let (mut buf, ends) = image_of(version, &[&[10], &[600, 600]]);
        let sector = (ends[0] / SECTOR + 1) * SECTOR;
        buf[sector..sector + SECTOR].fill(0);
        let a = judge(&buf);
        assert_eq!(a.keep_end, ends[0]);
        assert_eq!(matches!(a.verdict, Verdict::Corrupt { .. }), version == SEGMENT_VERSION, "{:?}", a.verdict);
    }
}

#[test]
fn a_flipped_length_bit_in_the_final_commit_record_is_corruption() {
    let (buf, ends) = image(&[&[10], &[100]]);
    let commit_at = ends[1] - record::COMMIT_RECORD_LEN;
    for bit in 0..32 {
        let mut b = buf.clone();
        b[commit_at + bit / 8] ^= 1 << (bit % 8);
        let a = judge(&b);
        assert!(matches!(a.verdict, Verdict::Corrupt { .. }), "bit {bit}: {:?}", a.verdict);
    }
}

#[test]
fn a_commit_record_cut_at_a_sector_boundary_is_a_torn_tail() {
    // Grow the final batch until its Commit record straddles a sector boundary, then lose
    // the sector that holds the record's second half.
    let mut payload = 8;
    let (mut buf, ends) = loop {
        let (buf, ends) = image(&[&[10], &[payload]]);
        let commit_at = ends[1] - record::COMMIT_RECORD_LEN;
        if commit_at / SECTOR != (ends[1] - 1) / SECTOR && commit_at % SECTOR > SECTOR - 24 {
            break (buf, ends);
        }
        payload += 8;
    };
    let second = (ends[1] - 1) / SECTOR * SECTOR;
    unwrite(&mut buf, second, second + SECTOR);
    let a = judge(&buf);
    assert_eq!(a.keep_end, ends[0]);
    assert!(matches!(a.verdict, Verdict::Torn { .. }), "{:?}", a.verdict);
}

#[test]
fn garbage_in_the_final_batch_with_its_commit_intact_is_corruption() {
    let (mut buf, ends) = image(&[&[10], &[200, 200, 200]]);
    buf[ends[0] + 100] ^= 1;
    assert!(matches!(judge(&buf).verdict, Verdict::Corrupt { at, .. } if at == ends[0]));
}

#[test]
fn damage_before_a_valid_commit_is_corruption_and_a_later_segment_must_end_clean() {
    let (mut buf, ends) = image(&[&[10], &[20], &[30]]);
    let second = ends[0] + 40;
    buf[second] ^= 4;
    let a = judge(&buf);
    assert_eq!(a.keep_end, ends[0]);
    assert!(matches!(a.verdict, Verdict::Corrupt { .. }), "{:?}", a.verdict);
    let (mut buf, ends) = image(&[&[10], &[20]]);
    buf[ends[1] + 3000] = 1; // a stray byte after the last commit
    let a = analyze(&buf, false, None, &mut |_, _| Ok(())).expect("analyze");
    assert!(matches!(a.verdict, Verdict::Corrupt { .. }), "not the newest: {:?}", a.verdict);
}

/// Appends a version 2 confirmation (an empty batch closed at the next 4096 boundary) after
/// `end`.
fn confirm(buf: &mut [u8], end: usize, seq: u64, index: u64) -> usize {
    let at = end.div_ceil(CONFIRM_ALIGN) * CONFIRM_ALIGN;
    let c = Commit {
        batch_seq: seq,
        batch_offset: end as u32,
        batch_len: (at - end) as u32,
        batch_crc: record::batch_crc(&buf[end..at]),
        last_index: index,
        last_term: 1,
        hs_term: 0,
        hs_vote: 0,
    };
    at + encode(&mut buf[at..], &Record::Commit(c))
}

#[test]
fn a_confirmation_is_recognized_whatever_the_length_of_its_gap() {
    // The gap before the page boundary can be any multiple of 8, including less than a
    // record header (found by raft-sim: a healthy log reported as damaged).
    for gap in (8..=96).step_by(8) {
        let mut payload = 400;
        let (mut buf, ends) = loop {
            let (buf, ends) = image_of(SEGMENT_VERSION_ZERO_FILL, &[&[10], &[payload]]);
            if CONFIRM_ALIGN - ends[1] % CONFIRM_ALIGN == gap {
                break (buf, ends);
            }
            payload += 8;
        };
        let end = confirm(&mut buf, ends[1], 3, 2);
        let a = judge(&buf);
        assert_eq!((a.keep_end, a.batch_seq, &a.verdict), (end, 3, &Verdict::Clean), "gap {gap}");
        let a = analyze(&buf, false, None, &mut |_, _| Ok(())).expect("analyze");
        assert_eq!((a.keep_end, &a.verdict), (end, &Verdict::Clean), "gap {gap}, not the newest");
        // Version 3 writes no gaps: the same layout there is damage or a torn batch.
        let (v3, _) = image(&[&[10], &[payload]]);
        let mut v3 = v3;
        let at = end - record::COMMIT_RECORD_LEN;
        v3[at..end].copy_from_slice(&buf[at..end]);
        assert_ne!(judge(&v3).keep_end, end, "gap {gap}: version 3 takes no gapped confirmation");
    }
}

/// A version 3 confirmation: the Commit of an empty batch right after `end`.
fn confirm_v3(buf: &mut [u8], end: usize, seq: u64, index: u64) -> usize {
    let c = Commit {
        batch_seq: seq,
        batch_offset: end as u32,
        batch_len: 0,
        batch_crc: record::batch_crc(&[]),
        last_index: index,
        last_term: 1,
        hs_term: 0,
        hs_vote: 0,
    };
    end + encode(&mut buf[end..], &Record::Commit(c))
}

#[test]
fn a_zeroed_page_that_takes_a_confirmation_and_the_batches_after_it_is_corruption() {
    // raft-sim seed 99 (before confirmations lost their gap): batch, confirmation, two
    // synced batches, and a zeroed page from the confirmation on. With or without a later
    // confirmation surviving, that is damage, never a torn tail.
    let (buf, ends) = image(&[&[3000], &[10]]);
    let mut buf = buf;
    let conf_end = confirm_v3(&mut buf, ends[1], 3, 2);
    assert_eq!(judge(&buf).keep_end, conf_end, "the confirmation is part of the chain");
    for later_confirmation in [false, true] {
        let mut img = buf.clone();
        let mut end = conf_end;
        for (i, n) in [200usize, 300].iter().enumerate() {
            let start = end;
            let data = vec![7u8; *n];
            end += encode(
                &mut img[end..],
                &Record::Entry { index: 3 + i as u64, term: 1, kind: EntryKind::Normal, data: &data },
            );
            let c = Commit {
                batch_seq: 4 + i as u64,
                batch_offset: start as u32,
                batch_len: (end - start) as u32,
                batch_crc: record::batch_crc(&img[start..end]),
                last_index: 3 + i as u64,
                last_term: 1,
                hs_term: 0,
                hs_vote: 0,
            };
            end += encode(&mut img[end..], &Record::Commit(c));
        }
        if later_confirmation {
            end = confirm_v3(&mut img, end, 6, 4);
        }
        assert_eq!(judge(&img).keep_end, end);
        let from = ends[1] - record::COMMIT_RECORD_LEN;
        img[from..end - if later_confirmation { record::COMMIT_RECORD_LEN } else { 0 }].fill(0);
        let a = judge(&img);
        assert!(a.keep_end <= ends[1], "{later_confirmation}: {a:?}");
        assert!(matches!(a.verdict, Verdict::Corrupt { .. }), "{later_confirmation}: {:?}", a.verdict);
    }
}

#[test]
fn seen_reports_the_highest_position_by_term_then_index() {
    let (buf, _) = image(&[&[10, 10, 10]]);
    let seen = seen_in(&buf, 0, buf.len());
    assert_eq!(seen.position, Some((1, 3)));
    assert_eq!(record_len(10), 48);
}
