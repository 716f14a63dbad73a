//! Data directories written by previous formats still open: segment version 1 (no commit records)
//! with the legacy rules, version 2 (commit records, zero-filled) with the version 2 rules; the
//! log continues in version 3 segments (filled with the pattern of `storage::fill`).

mod storage_support;

use mini_raft::raft::types::{EntryKind, HardState};
use mini_raft::storage::record::{
    self, Commit, Record, SegmentHeader, SEGMENT_VERSION_LEGACY, SEGMENT_VERSION_ZERO_FILL,
};
use mini_raft::storage::segment::segment_name;
use std::path::{Path, PathBuf};
use storage_support::{all_entries, entries, open_real, segment_files};

const SEG: u64 = 16 << 10;

/// Writes a version 1 segment as the old code did: header, entries `lo..=hi` (term 1), a hard
/// state; zeros after. Returns its path and the offsets of the entry records.
fn write_v1(dir: &Path, seq: u64, lo: u64, hi: u64, hs: HardState, prev_hs: HardState) -> (PathBuf, Vec<usize>) {
    std::fs::create_dir_all(dir).expect("dir");
    let header = SegmentHeader {
        version: SEGMENT_VERSION_LEGACY,
        seq,
        prev_index: lo - 1,
        prev_term: u64::from(lo > 1),
        floor_index: 0,
        floor_term: 0,
        hard_state: prev_hs,
        batch_seq: 0,
    };
    let mut buf = vec![0u8; SEG as usize];
    let mut off = record::encode(&mut buf, &Record::SegmentHeader(header));
    let mut offsets = Vec::new();
    for e in entries(lo, hi, 1, 40) {
        offsets.push(off);
        off += record::encode(
            &mut buf[off..],
            &Record::Entry { index: e.index, term: 1, kind: EntryKind::Normal, data: &e.data },
        );
    }
    record::encode(&mut buf[off..], &Record::HardState(hs));
    let path = dir.join(segment_name(seq, lo));
    std::fs::write(&path, &buf).expect("write");
    (path, offsets)
}

/// Writes a version 2 segment as the previous code did: header, then one batch per entry of
/// `lo..=hi` (term 1), each closed by a Commit record; zeros after. Returns its path and the
/// offset where the last batch starts.
fn write_v2(dir: &Path, lo: u64, hi: u64) -> (PathBuf, usize) {
    std::fs::create_dir_all(dir).expect("dir");
    let header = SegmentHeader {
        version: SEGMENT_VERSION_ZERO_FILL,
        seq: 1,
        prev_index: lo - 1,
        prev_term: 0,
        floor_index: 0,
        floor_term: 0,
        hard_state: HardState::default(),
        batch_seq: 0,
    };
    let mut buf = vec![0u8; SEG as usize];
    let mut off = record::encode(&mut buf, &Record::SegmentHeader(header));
    let mut last_start = off;
    for (n, e) in entries(lo, hi, 1, 40).into_iter().enumerate() {
        last_start = off;
        off += record::encode(
            &mut buf[off..],
            &Record::Entry { index: e.index, term: 1, kind: EntryKind::Normal, data: &e.data },
        );
        let c = Commit {
            batch_seq: n as u64 + 1,
            batch_offset: last_start as u32,
            batch_len: (off - last_start) as u32,
            batch_crc: record::batch_crc(&buf[last_start..off]),
            last_index: e.index,
            last_term: 1,
            hs_term: 0,
            hs_vote: 0,
        };
        off += record::encode(&mut buf[off..], &Record::Commit(c));
    }
    let path = dir.join(segment_name(1, lo));
    std::fs::write(&path, &buf).expect("write");
    (path, last_start)
}

#[test]
fn a_version_2_directory_keeps_its_rules_and_continues_in_version_3_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, last_start) = write_v2(dir.path(), 1, 12);
    // The final (synced) batch zeroed: in a zero-filled segment that reads as never written, so
    // the version 2 rules lose it silently (the window version 3 closes).
    let mut buf = std::fs::read(&path).expect("read");
    buf[last_start..last_start + 2 * record::record_len(40)].fill(0);
    std::fs::write(&path, &buf).expect("write");
    let (mut wal, report) = open_real(dir.path(), SEG).expect("open");
    assert!(report.corruption.is_none(), "{report:?}");
    assert!(report.upgraded_to.is_some(), "{report:?}");
    assert_eq!(all_entries(&wal), entries(1, 11, 1, 40));
    wal.append(&entries(12, 15, 2, 40)).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let files = segment_files(dir.path());
    let newest = std::fs::read(files.last().expect("a segment")).expect("read");
    match record::decode(&newest, 0).map(|d| d.record) {
        Ok(Record::SegmentHeader(h)) => assert_eq!(h.version, record::SEGMENT_VERSION),
        other => panic!("the new segment starts with a header: {other:?}"),
    }
    assert!(newest[newest.len() - 4096..].iter().all(|&b| b != 0), "version 3 space is the fill, not zeros");
    let (wal, report) = open_real(dir.path(), SEG).expect("reopen");
    assert!(report.upgraded_to.is_none() && report.corruption.is_none() && report.bytes_truncated == 0, "{report:?}");
    assert_eq!(all_entries(&wal), [entries(1, 11, 1, 40), entries(12, 15, 2, 40)].concat());
}

#[test]
fn a_version_1_directory_opens_and_continues_in_version_3_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hs1 = HardState { term: 1, vote: 1, commit: 10 };
    write_v1(dir.path(), 1, 1, 20, hs1, HardState::default());
    let hs2 = HardState { term: 1, vote: 1, commit: 30 };
    write_v1(dir.path(), 2, 21, 40, hs2, hs1);
    let (mut wal, report) = open_real(dir.path(), SEG).expect("open");
    assert_eq!(report.legacy_segments, 2, "{report:?}");
    assert!(report.upgraded_to.is_some(), "{report:?}");
    assert_eq!(all_entries(&wal), entries(1, 40, 1, 40));
    assert_eq!(wal.hard_state(), hs2);
    wal.append(&entries(41, 45, 2, 40)).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let (wal, report) = open_real(dir.path(), SEG).expect("reopen");
    assert!(report.upgraded_to.is_none() && report.corruption.is_none() && report.bytes_truncated == 0, "{report:?}");
    assert_eq!((report.legacy_segments, segment_files(dir.path()).len()), (2, 3));
    assert_eq!(wal.last_index(), 45);
}

#[test]
fn a_torn_tail_of_a_version_1_segment_is_repaired_by_the_legacy_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, offsets) = write_v1(dir.path(), 1, 1, 20, HardState::default(), HardState::default());
    let mut buf = std::fs::read(&path).expect("read");
    let last = offsets[19];
    buf[last + 40] ^= 0x08; // the last entry's payload: no valid record after it but a hard state
    let hs_at = offsets[19] + record::record_len(40);
    buf[hs_at..hs_at + 64].fill(0);
    std::fs::write(&path, &buf).expect("write");
    let (wal, report) = open_real(dir.path(), SEG).expect("open");
    assert!(report.corruption.is_none() && report.bytes_truncated > 0, "{report:?}");
    assert_eq!(all_entries(&wal), entries(1, 19, 1, 40));
}

#[test]
fn a_hole_in_a_version_1_segment_is_reported_corruption_not_a_refusal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, offsets) = write_v1(dir.path(), 1, 1, 20, HardState::default(), HardState::default());
    storage_support::flip_bit(&path, offsets[9] as u64 + 40, 2);
    let (wal, report) = open_real(dir.path(), SEG).expect("open");
    let c = report.corruption.expect("a valid record follows the damage: not a torn write");
    assert_eq!((c.first_lost_index, c.offset as usize), (10, offsets[9]));
    assert_eq!(c.guard.map(|g| g.index), Some(20));
    assert_eq!(wal.last_index(), 9);
}

#[test]
fn a_segment_of_a_newer_format_is_refused_never_cut_as_damage() {
    // A rollback to an older binary must not read a newer segment header as corruption (that
    // path discards or cuts the log): it refuses to start and says why.
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = write_v2(dir.path(), 1, 3);
    let mut buf = std::fs::read(&path).expect("read");
    let header_len = record::record_len(record::SEGMENT_HEADER_PAYLOAD_LEN);
    let mut header = buf[..header_len].to_vec();
    let version_at = record::HEADER_LEN + 8;
    header[version_at..version_at + 4].copy_from_slice(&(record::SEGMENT_VERSION + 1).to_le_bytes());
    let crc = record::record_crc(&header);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    buf[..header_len].copy_from_slice(&header);
    std::fs::write(&path, &buf).expect("write");
    let err = open_real(dir.path(), SEG).err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("newer than this binary"), "{text}");
    assert!(path.exists() && std::fs::read(&path).expect("read") == buf, "nothing was changed on disk");
}
