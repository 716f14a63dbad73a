//! Crash and corruption tests on real segment files: cuts through the final batch (what a power
//! loss can leave), and bit flips and zeroed pages in synced data (what it cannot). Damage in
//! synced data must be reported as corruption with the right first lost index and guard, never
//! repaired as a torn tail; damage that a crash can explain in the final batch is a torn tail.

mod storage_support;

use mini_raft::raft::types::{Entry, HardState};
use mini_raft::storage::analyze;
use mini_raft::storage::record::{self, Record};
use mini_raft::storage::StorageError;
use std::fs;
use std::path::{Path, PathBuf};
use storage_support::{all_entries, entries, open_real, segment_files, Rng};

const SEGMENT_BYTES: u64 = 64 << 10;

/// A synced single-segment WAL: three batches mixing entries and hard states; the last batch
/// (entries 13-16, about 1.7 KB) spans several sectors. Returns (entries before the last batch,
/// all entries, the hard state before the last batch).
fn build_log(dir: &Path) -> (Vec<Entry>, Vec<Entry>, HardState) {
    let (mut wal, _) = open_real(dir, SEGMENT_BYTES).expect("open");
    wal.append(&entries(1, 10, 1, 40)).expect("append");
    wal.sync().expect("sync");
    let hs = HardState { term: 2, vote: 1, commit: 5 };
    wal.set_hard_state(hs).expect("hs");
    wal.append(&entries(11, 12, 2, 70)).expect("append");
    wal.sync().expect("sync");
    let before = all_entries(&wal);
    wal.append(&entries(13, 16, 2, 400)).expect("append");
    wal.set_hard_state(HardState { term: 2, vote: 1, commit: 12 }).expect("hs");
    wal.sync().expect("sync");
    assert_eq!(segment_files(dir).len(), 1);
    (before, all_entries(&wal), hs)
}

/// Offset where the last batch starts (end of the second-to-last Commit record) and ends.
/// One past the last written byte of a segment image.
fn dirty_end(img: &[u8]) -> usize {
    analyze::image_fill(img).dirty_end(img)
}

/// Makes `[from, to)` of a segment image unwritten (what a write that never reached the disk
/// leaves: the segment's fill).
fn unwrite(img: &mut [u8], from: usize, to: usize) {
    analyze::image_fill(img).write(from as u64, &mut img[from..to]);
}

/// Start and end (past its Commit record) of the last batch that holds records: a confirmation
/// (the Commit of an empty batch) after it is not a batch of its own here.
fn final_batch(buf: &[u8]) -> (usize, usize) {
    let mut last = None;
    analyze::for_each_valid(buf, 0, dirty_end(buf), &mut |off, d| {
        if let Record::Commit(c) = d.record {
            if c.batch_len > 0 {
                last = Some((c.batch_offset as usize, off + d.len));
            }
        }
    });
    last.expect("a batch")
}

fn copy_with(src: &Path, dst: &Path, img: &[u8]) -> PathBuf {
    for f in segment_files(dst) {
        fs::remove_file(f).expect("clean dir");
    }
    let path = dst.join(src.file_name().expect("name"));
    fs::write(&path, img).expect("write image");
    path
}

#[test]
fn a_cut_at_every_sector_boundary_of_the_final_batch_is_a_torn_tail_that_keeps_every_earlier_batch() {
    let src = tempfile::tempdir().expect("tempdir");
    let (before, all, hs_before) = build_log(src.path());
    let seg = segment_files(src.path())[0].clone();
    let orig = fs::read(&seg).expect("read");
    let (start, end) = final_batch(&orig);
    assert!(end - start > 3 * 512, "the final batch spans several sectors");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cuts = 0;
    for cut in (start.div_ceil(512) * 512..end).step_by(512) {
        let mut img = orig.clone();
        let len = img.len();
        unwrite(&mut img, cut, len);
        copy_with(&seg, dir.path(), &img);
        let (mut wal, report) = open_real(dir.path(), SEGMENT_BYTES).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert!(report.corruption.is_none(), "cut at {cut}: {:?}", report.corruption);
        assert_eq!(all_entries(&wal), before, "cut at {cut}: the whole final batch is dropped, nothing else");
        assert_eq!(wal.hard_state(), hs_before, "cut at {cut}");
        assert_eq!(report.truncated_at.map(|(_, o)| o as usize), Some(start), "cut at {cut}");
        assert_eq!(report.bytes_truncated as usize, dirty_end(&img) - start, "cut at {cut}");
        // The log continues cleanly after the repaired tail.
        wal.append(&entries(13, 14, 3, 20)).expect("append after repair");
        wal.sync().expect("sync");
        drop(wal);
        let (wal, report) = open_real(dir.path(), SEGMENT_BYTES).expect("reopen");
        assert_eq!(report.bytes_truncated, 0, "cut at {cut}: second open");
        assert_eq!(wal.last_index(), 14);
        cuts += 1;
    }
    assert!(cuts >= 3);
    // Nothing cut: everything is there.
    copy_with(&seg, dir.path(), &orig);
    let (wal, report) = open_real(dir.path(), SEGMENT_BYTES).expect("open");
    assert_eq!((all_entries(&wal), report.bytes_truncated), (all, 0));
}

#[test]
fn a_cut_at_any_byte_of_the_final_batch_never_serves_part_of_it() {
    let src = tempfile::tempdir().expect("tempdir");
    let (before, _, _) = build_log(src.path());
    let seg = segment_files(src.path())[0].clone();
    let orig = fs::read(&seg).expect("read");
    let (start, end) = final_batch(&orig);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut torn, mut reported) = (0, 0);
    for cut in start..dirty_end(&orig).min(end) {
        let mut img = orig.clone();
        let len = img.len();
        unwrite(&mut img, cut, len);
        copy_with(&seg, dir.path(), &img);
        let (wal, report) = open_real(dir.path(), SEGMENT_BYTES).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(all_entries(&wal), before, "cut at {cut}: never a part of the final batch");
        match report.corruption {
            // A cut inside a sector leaves half a sector: no power loss does that (sectors are
            // atomic), so recovery may call it damage; it must then cut at the batch start.
            Some(c) => {
                assert_eq!((c.cut_offset as usize, c.first_lost_index), (start, 13), "cut at {cut}");
                reported += 1;
            }
            None => torn += 1,
        }
    }
    assert!(torn > 0 && reported > 0, "{torn} torn, {reported} reported");
}

/// Segments and records of a synced multi-segment log, for computing what damage must report.
struct Layout {
    files: Vec<PathBuf>,
    images: Vec<Vec<u8>>,
    /// Per segment: (offset, end, first index lost if this record is damaged).
    records: Vec<Vec<(usize, usize, u64)>>,
    last: (u64, u64),
}

/// Several full segments plus a partial one, everything synced and confirmed.
fn build_multi_segment(dir: &Path) -> (Vec<Entry>, Layout) {
    let (mut wal, _) = open_real(dir, 8192).expect("open");
    let mut all = Vec::new();
    for b in 0..60u64 {
        let batch = entries(b * 8 + 1, b * 8 + 8, 1 + b / 4, 50 + b as usize);
        wal.append(&batch).expect("append");
        wal.set_hard_state(HardState { term: 1 + b / 4, vote: 2, commit: b * 8 }).expect("hs");
        wal.sync().expect("sync");
        all.extend(batch);
        // A confirmation that did not fit rotates instead (the new header confirms): go on
        // until the layout ends in a real confirmation record.
        let segments = wal.segment_paths().len();
        if b >= 40 && wal.confirm_if_idle().expect("confirm") && wal.segment_paths().len() == segments {
            break;
        }
    }
    assert!(!wal.is_unconfirmed(), "the last batch got a confirmation");
    let last = (wal.last_index(), wal.term(wal.last_index()).expect("term"));
    drop(wal);
    let files = segment_files(dir);
    assert!(files.len() >= 4, "test needs several segments");
    let images: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).expect("read")).collect();
    let records = images.iter().map(|img| batch_map(img)).collect();
    (all, Layout { files, images, records, last })
}

/// Every record of a segment with the first index recovery loses if that record is damaged: the
/// index after the previous batch (the cut is at the start of the damaged batch).
fn batch_map(img: &[u8]) -> Vec<(usize, usize, u64)> {
    let (mut out, mut batch, mut lost) = (Vec::new(), Vec::new(), 0u64);
    mini_raft::storage::analyze::for_each_valid(img, 0, img.len(), &mut |off, d| {
        batch.push((off, off + d.len));
        match d.record {
            Record::SegmentHeader(h) => lost = h.prev_index + 1,
            Record::Commit(c) => {
                out.extend(batch.drain(..).map(|(a, b)| (a, b, lost)));
                lost = c.last_index + 1;
            }
            _ => {}
        }
    });
    out.extend(batch.drain(..).map(|(a, b)| (a, b, lost)));
    out
}

/// Applies `damage` to segment `fi` of a fresh copy, opens it, and checks the report.
fn check_damage(layout: &Layout, all: &[Entry], fi: usize, damage: &dyn Fn(&mut Vec<u8>), ctx: &str) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    for (f, img) in layout.files.iter().zip(&layout.images) {
        fs::write(dir.path().join(f.file_name().expect("name")), img).expect("copy");
    }
    let path = dir.path().join(layout.files[fi].file_name().expect("name"));
    let mut img = layout.images[fi].clone();
    damage(&mut img);
    fs::write(&path, &img).expect("write");
    let hit = layout.records[fi].iter().find(|(a, b, _)| img[*a..*b] != layout.images[fi][*a..*b]);
    let Some(&(off, _, lost)) = hit else { return false };
    let is_newest = fi + 1 == layout.files.len();
    let is_confirmation = is_newest && off == layout.records[fi].last().map_or(0, |r| r.0);
    // Damage that takes the end of the log leaves nothing to bound what was lost.
    let end_lost = is_newest && !analyze::ends_in_a_valid_record(&img, 0);
    match open_real(dir.path(), 8192) {
        Err(e) => {
            assert!(fi == 0 && off == 0, "{ctx}: only the first header is unsalvageable: {e}");
            assert!(
                matches!(&e, StorageError::Unsalvageable { offset: 0, .. })
                    && e.to_string().contains(path.to_str().unwrap_or("")),
                "{ctx}: {e}"
            );
        }
        Ok((wal, report)) if is_confirmation => {
            // Damage, not a crash (version 3): reported, with nothing lost but the guard's bound.
            let c = report.corruption.clone().unwrap_or_else(|| panic!("{ctx}: not reported ({report:?})"));
            assert_eq!((c.first_lost_index, c.guard), (layout.last.0 + 1, None), "{ctx}");
            assert_eq!(all_entries(&wal), all, "{ctx}: a damaged confirmation loses no entry");
        }
        Ok((wal, report)) => {
            let c =
                report.corruption.clone().unwrap_or_else(|| panic!("{ctx}: damage at {off} not reported ({report:?})"));
            assert_eq!(report.bytes_truncated, 0, "{ctx}: never a torn tail");
            assert_eq!(c.first_lost_index, lost, "{ctx}: first lost index");
            let guard = if end_lost { None } else { Some(layout.last) };
            assert_eq!(c.guard.map(|g| (g.index, g.term)), guard, "{ctx}: guard");
            assert_eq!(all_entries(&wal), all[..(lost - 1) as usize], "{ctx}: the log is cut at the batch");
            if off > 0 {
                assert_eq!((c.path.as_path(), c.offset as usize), (path.as_path(), off), "{ctx}: file and offset");
            }
        }
    }
    true
}

#[test]
fn bit_flips_in_synced_confirmed_records_are_reported_corruption_with_the_first_lost_index() {
    let src = tempfile::tempdir().expect("tempdir");
    let (all, layout) = build_multi_segment(src.path());
    let mut rng = Rng::new(42);
    let mut checked = 0;
    for trial in 0..300 {
        let n = layout.files.len() as u64;
        let fi = if rng.chance(40) { n as usize - 1 } else { rng.range(0, n - 1) as usize };
        let recs = &layout.records[fi];
        let ri = if rng.chance(30) {
            recs.len() - 1 - rng.range(0, 2) as usize
        } else {
            rng.range(0, recs.len() as u64 - 1) as usize
        };
        let (a, b, _) = recs[ri];
        let byte = rng.range(a as u64, b as u64 - 1) as usize;
        let bit = rng.range(0, 7);
        let ctx = format!("trial {trial}: flip {fi}:{byte}.{bit}");
        checked += usize::from(check_damage(&layout, &all, fi, &|img: &mut Vec<u8>| img[byte] ^= 1 << bit, &ctx));
    }
    assert!(checked > 250, "{checked}");
}

#[test]
fn zeroed_pages_in_synced_confirmed_data_are_reported_corruption_never_a_torn_tail() {
    let src = tempfile::tempdir().expect("tempdir");
    let (all, layout) = build_multi_segment(src.path());
    let mut checked = 0;
    for (fi, img) in layout.images.iter().enumerate() {
        for page in 0..img.len().div_ceil(4096) {
            let ctx = format!("zeroed page {page} of segment {fi}");
            let zero = move |img: &mut Vec<u8>| {
                let end = ((page + 1) * 4096).min(img.len());
                img[page * 4096..end].fill(0)
            };
            checked += usize::from(check_damage(&layout, &all, fi, &zero, &ctx));
        }
    }
    assert!(checked >= layout.files.len(), "{checked}");
}

#[test]
fn a_flipped_bit_in_the_final_unconfirmed_batch_with_an_intact_commit_is_corruption() {
    let src = tempfile::tempdir().expect("tempdir");
    let (before, _, _) = build_log(src.path());
    let seg = segment_files(src.path())[0].clone();
    let orig = fs::read(&seg).expect("read");
    let (start, end) = final_batch(&orig);
    let commit_at = end - record::COMMIT_RECORD_LEN;
    let dir = tempfile::tempdir().expect("tempdir");
    for byte in (start..commit_at).step_by(7) {
        let mut img = orig.clone();
        img[byte] ^= 0x20;
        copy_with(&seg, dir.path(), &img);
        let (wal, report) = open_real(dir.path(), SEGMENT_BYTES).expect("open");
        let c = report.corruption.unwrap_or_else(|| panic!("flip at {byte}: not reported"));
        assert_eq!((c.first_lost_index, report.bytes_truncated), (13, 0), "flip at {byte}");
        assert_eq!(all_entries(&wal), before);
    }
}

#[test]
fn a_zeroed_sector_or_page_in_the_final_unconfirmed_batch_is_corruption_an_unwritten_one_is_torn() {
    // The closed residual window: with zero-filled segments a zeroed sector of a synced final
    // batch (or a zeroed page holding all of it) read as never written, and the batch, perhaps
    // acknowledged, was dropped as torn. The fill pattern tells them apart.
    let src = tempfile::tempdir().expect("tempdir");
    let (before, _, _) = build_log(src.path());
    let seg = segment_files(src.path())[0].clone();
    let orig = fs::read(&seg).expect("read");
    let (start, end) = final_batch(&orig);
    let dir = tempfile::tempdir().expect("tempdir");
    let sector = start.div_ceil(512) * 512;
    let page_end = (start / 4096 + 1) * 4096;
    let damage: [(&str, usize, usize); 3] = [
        ("zeroed sector", sector, sector + 512),
        ("zeroed rest of the page", start, page_end),
        ("zeroed batch", start, end),
    ];
    for (what, from, to) in damage {
        let mut img = orig.clone();
        img[from..to].fill(0);
        copy_with(&seg, dir.path(), &img);
        let (wal, report) = open_real(dir.path(), SEGMENT_BYTES).expect("open");
        let c = report.corruption.clone().unwrap_or_else(|| panic!("{what}: not reported: {report:?}"));
        assert!(c.first_lost_index <= 13, "{what}: {c}");
        // The guard bounds what was lost only if the log's end is still readable: after damage
        // at the very end, older records of the dropped part are no bound (raft-sim found a
        // guard below the lost entries).
        match to >= end {
            true => assert_eq!(c.guard, None, "{what}: the end is gone, the extent is unknown"),
            false => assert!(c.guard.is_some_and(|g| g.index >= 16), "{what}: {c}"),
        }
        assert_eq!(report.bytes_truncated, 0, "{what}: nothing is dropped before the guard is durable");
        assert!(all_entries(&wal).len() <= before.len(), "{what}");
    }
    let mut img = orig.clone();
    unwrite(&mut img, sector, sector + 512);
    copy_with(&seg, dir.path(), &img);
    let (wal, report) = open_real(dir.path(), SEGMENT_BYTES).expect("open");
    assert!(report.corruption.is_none() && report.bytes_truncated > 0, "{report:?}");
    assert_eq!(all_entries(&wal), before, "a final batch with an unwritten sector was never synced");
}

#[test]
fn after_a_restart_the_last_batch_is_confirmed_at_the_first_idle_moment() {
    // Found by raft-sim: a node restarted over an unconfirmed final batch and wrote nothing for
    // a while; the batch stayed open to look torn, and damage to it later lost it silently.
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, all, _) = build_log(dir.path()); // ends with an unconfirmed batch
    let (mut wal, _) = open_real(dir.path(), SEGMENT_BYTES).expect("reopen");
    assert!(wal.is_unconfirmed(), "nothing tells the restarted WAL that its last batch was confirmed");
    assert!(wal.confirm_if_idle().expect("confirm"), "the first idle moment confirms it");
    drop(wal);
    let seg = segment_files(dir.path())[0].clone();
    let orig = fs::read(&seg).expect("read");
    let (start, _) = final_batch(&orig);
    let sector = start.div_ceil(512) * 512;
    let mut img = orig.clone();
    img[sector..sector + 512].fill(0);
    let damaged = tempfile::tempdir().expect("tempdir");
    copy_with(&seg, damaged.path(), &img);
    let (_, report) = open_real(damaged.path(), SEGMENT_BYTES).expect("open");
    let c = report
        .corruption
        .clone()
        .unwrap_or_else(|| panic!("damage to a confirmed batch must be corruption: {report:?}"));
    assert_eq!((c.first_lost_index, report.bytes_truncated), (13, 0));
    assert_eq!(all.len(), 16);
}

#[test]
fn damage_in_space_the_log_never_used_loses_nothing_and_cuts_nothing() {
    // Found in review: with fill-patterned segments any damage after an older segment's last
    // batch read as corruption, and the cut dropped every newer segment although the next
    // header proves where the log ended.
    let src = tempfile::tempdir().expect("tempdir");
    let (all, layout) = build_multi_segment(src.path());
    let mut checked = 0;
    for (fi, img) in layout.images.iter().enumerate() {
        let end = dirty_end(img);
        if end + 64 > img.len() {
            continue; // no unused space to speak of
        }
        for (what, damage) in [("zeroed end", 0u8), ("flipped bit", 1u8)] {
            let dir = tempfile::tempdir().expect("tempdir");
            for (f, image) in layout.files.iter().zip(&layout.images) {
                fs::write(dir.path().join(f.file_name().expect("name")), image).expect("copy");
            }
            let mut bad = img.clone();
            let tail = img.len() - 64;
            match damage {
                0 => bad[tail..].fill(0),
                _ => bad[tail + 9] ^= 0x10,
            }
            fs::write(dir.path().join(layout.files[fi].file_name().expect("name")), &bad).expect("write");
            let (wal, report) = open_real(dir.path(), 8192).unwrap_or_else(|e| panic!("{what} in segment {fi}: {e}"));
            assert!(report.corruption.is_none(), "{what} in segment {fi}: {report:?}");
            assert_eq!(all_entries(&wal), all, "{what} in segment {fi}: nothing is lost");
            checked += 1;
        }
    }
    assert!(checked >= 2, "the layout has unused space to damage ({checked})");
}
