//! Crash and corruption tests on real segment files: a cut at every byte offset of the last
//! records (zero-filled or really truncated), and random bit flips inside synced records.

mod storage_support;

use mini_raft::raft::types::{Entry, HardState};
use mini_raft::storage::record::{self, Record};
use mini_raft::storage::{StorageError, Wal};
use std::fs;
use std::path::Path;
use storage_support::{all_entries, entries, opts, segment_files, Rng};

const SEGMENT_BYTES: u64 = 64 << 10;

/// (offset, end of header+payload, record) for every record of a segment image.
fn records(buf: &[u8]) -> Vec<(usize, usize, Option<Entry>, Option<HardState>)> {
    let mut out = Vec::new();
    record::scan::<()>(buf, 0, |off, d| {
        let body_end = off + record::HEADER_LEN + record::payload_len(&d.record);
        let (e, hs) = match d.record {
            Record::Entry { index, term, kind, data } => {
                (Some(Entry { index, term, kind, data: bytes::Bytes::copy_from_slice(data) }), None)
            }
            Record::HardState(hs) => (None, Some(hs)),
            _ => (None, None),
        };
        out.push((off, body_end, e, hs));
        Ok(())
    })
    .expect("scan");
    out
}

/// A synced single-segment WAL whose last records mix entries and hard states.
fn build_log(dir: &Path) -> Vec<u8> {
    let (mut wal, _) = Wal::open(dir, opts(SEGMENT_BYTES)).expect("open");
    wal.append(&entries(1, 10, 1, 40)).expect("append");
    wal.sync().expect("sync");
    wal.set_hard_state(HardState { term: 2, vote: 1, commit: 5 }).expect("hs");
    wal.append(&entries(11, 12, 2, 70)).expect("append");
    wal.sync().expect("sync");
    wal.append(&entries(13, 13, 2, 0)).expect("append noop");
    wal.set_hard_state(HardState { term: 2, vote: 1, commit: 12 }).expect("hs");
    wal.append(&entries(14, 14, 2, 33)).expect("append");
    wal.sync().expect("sync");
    assert_eq!(segment_files(dir).len(), 1);
    fs::read(&segment_files(dir)[0]).expect("read segment")
}

type Recs = [(usize, usize, Option<Entry>, Option<HardState>)];

/// What recovery must return for a damaged image: the records that are still byte-identical
/// (a zero-filled cut may hit bytes that were zero anyway), the hard state among them, and the
/// non-zero bytes of the first damaged record onward (the torn tail) with its offset.
fn expected(orig: &[u8], img: &[u8], recs: &Recs) -> (Vec<Entry>, HardState, u64, Option<usize>) {
    let mut es = Vec::new();
    let mut hs = HardState::default();
    for (off, body_end, e, h) in recs {
        let rec_end = off + record::align_up(body_end - off);
        if rec_end > img.len() || img[*off..rec_end] != orig[*off..rec_end] {
            let torn = img[*off..].iter().rposition(|&b| b != 0).map(|l| l as u64 + 1);
            return (es, hs, torn.unwrap_or(0), torn.map(|_| *off));
        }
        es.extend(e.clone());
        if let Some(h) = h {
            hs = *h;
        }
    }
    (es, hs, 0, None)
}

fn crash_at_every_byte(really_truncate: bool) {
    let src = tempfile::tempdir().expect("tempdir");
    let orig = build_log(src.path());
    let recs = records(&orig);
    let start = recs[recs.len() - 6].0;
    let end = recs[recs.len() - 1].1;
    let name = segment_files(src.path())[0].file_name().expect("name").to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = dir.path().join(&name);
    for cut in start..=end {
        let mut img = orig.clone();
        if really_truncate {
            img.truncate(cut);
        } else {
            img[cut..].fill(0);
        }
        for f in segment_files(dir.path()) {
            fs::remove_file(f).expect("clean dir");
        }
        fs::write(&seg, &img).expect("write image");
        let (want, want_hs, want_trunc, want_at) = expected(&orig, &img, &recs);
        let (mut wal, report) =
            Wal::open(dir.path(), opts(SEGMENT_BYTES)).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(all_entries(&wal), want, "cut at {cut}");
        assert_eq!(wal.hard_state(), want_hs, "cut at {cut}");
        assert_eq!(report.bytes_truncated, want_trunc, "cut at {cut}");
        assert_eq!(report.truncated_at.map(|(_, o)| o as usize), want_at, "cut at {cut}");
        if cut % 5 == 0 {
            // The log continues cleanly after the repaired tail.
            let next = wal.last_index() + 1;
            wal.append(&entries(next, next + 1, 3, 20)).expect("append after repair");
            wal.sync().expect("sync");
            drop(wal);
            let (wal, report) = Wal::open(dir.path(), opts(SEGMENT_BYTES)).expect("reopen");
            assert_eq!(report.bytes_truncated, 0, "cut at {cut}: second open");
            assert_eq!(wal.last_index(), next + 1);
        }
    }
}

#[test]
fn crash_at_every_byte_of_the_tail_recovers_exactly_the_complete_records() {
    crash_at_every_byte(false);
}

#[test]
fn file_cut_short_at_every_byte_recovers_exactly_the_complete_records() {
    crash_at_every_byte(true);
}

/// Three full segments plus a partial one, everything synced.
fn build_multi_segment(dir: &Path) -> Vec<Entry> {
    let (mut wal, _) = Wal::open(dir, opts(4096)).expect("open");
    let mut all = Vec::new();
    for b in 0..24u64 {
        let batch = entries(b * 8 + 1, b * 8 + 8, 1 + b / 4, 50 + b as usize);
        wal.append(&batch).expect("append");
        wal.set_hard_state(HardState { term: 1 + b / 4, vote: 2, commit: b * 8 }).expect("hs");
        wal.sync().expect("sync");
        all.extend(batch);
    }
    assert!(segment_files(dir).len() >= 4, "test needs several segments");
    all
}

#[test]
fn bit_flips_in_synced_records_are_always_detected() {
    let src = tempfile::tempdir().expect("tempdir");
    let all = build_multi_segment(src.path());
    let files = segment_files(src.path());
    let images: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).expect("read")).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng::new(42);
    let (mut torn_tails, mut hard_errors) = (0, 0);
    for trial in 0..400 {
        for (f, img) in files.iter().zip(&images) {
            fs::write(dir.path().join(f.file_name().expect("name")), img).expect("copy");
        }
        let fi = if rng.chance(40) { files.len() - 1 } else { rng.range(0, files.len() as u64 - 1) as usize };
        let recs = records(&images[fi]);
        let ri = if rng.chance(30) { recs.len() - 1 } else { rng.range(0, recs.len() as u64 - 1) as usize };
        let (off, body_end, _, _) = recs[ri];
        let byte = rng.range(off as u64, body_end as u64 - 1);
        let path = dir.path().join(files[fi].file_name().expect("name"));
        storage_support::flip_bit(&path, byte, rng.range(0, 7) as u8);
        let is_tail = fi == files.len() - 1 && ri == recs.len() - 1 && ri > 0;
        match Wal::open(dir.path(), opts(4096)) {
            Ok((wal, report)) => {
                assert!(is_tail, "trial {trial}: flip at {}:{byte} went unnoticed", path.display());
                assert!(report.bytes_truncated > 0, "trial {trial}");
                let got = all_entries(&wal);
                let lost = usize::from(recs[ri].2.is_some());
                assert_eq!(got, all[..all.len() - lost], "trial {trial}");
                torn_tails += 1;
            }
            Err(e) => {
                assert!(!is_tail, "trial {trial}: torn tail must be repaired, got {e}");
                assert!(e.is_corruption(), "trial {trial}: {e}");
                let msg = e.to_string();
                let name = files[fi].file_name().expect("name").to_string_lossy().to_string();
                assert!(msg.contains(&name), "trial {trial}: error does not name the file: {msg}");
                assert!(
                    matches!(e, StorageError::Corrupt { offset, .. } if offset as usize == off),
                    "trial {trial}: wrong offset: {msg}"
                );
                hard_errors += 1;
            }
        }
    }
    assert!(torn_tails > 10 && hard_errors > 100, "{torn_tails} tails, {hard_errors} errors");
}
