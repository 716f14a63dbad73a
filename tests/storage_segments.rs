//! Segment lifecycle: rotation, truncation across a boundary, compaction (then reopen), missing
//! segments, leftovers of interrupted segment creation, the directory lock, API edge cases.

mod storage_support;

use mini_raft::raft::types::HardState;
use mini_raft::storage::analyze::Verdict;
use mini_raft::storage::record;
use mini_raft::storage::segment::parse_segment_name;
use mini_raft::storage::StorageError;
use std::fs;
use storage_support::{all_entries, entries, open, open_real, segment_files};

const SEG: u64 = 4096;

#[test]
fn rotation_names_segments_by_seq_and_first_index_and_never_splits_a_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = open(dir.path(), SEG);
    let mut all = Vec::new();
    for b in 0..40u64 {
        let batch = entries(b * 5 + 1, b * 5 + 5, 1, 30 + (b as usize * 13) % 200);
        wal.append(&batch).expect("append");
        wal.sync().expect("sync");
        all.extend(batch);
    }
    let files = segment_files(dir.path());
    assert!(files.len() > 5, "expected rotation, got {} segments", files.len());
    for (i, f) in files.iter().enumerate() {
        let name = f.file_name().and_then(|n| n.to_str()).expect("name");
        let (seq, first) = parse_segment_name(name).expect("segment name");
        assert_eq!(seq, i as u64 + 1);
        let buf = fs::read(f).expect("read");
        assert_eq!(buf.len() as u64, SEG, "segments are preallocated to a fixed size");
        let mut first_entry = None;
        let a = mini_raft::storage::analyze::analyze(&buf, i + 1 == files.len(), None, &mut |_, r| {
            if let record::Record::Entry { index, .. } = r {
                first_entry.get_or_insert(*index);
            }
            Ok(())
        })
        .expect("analyze");
        assert_eq!(a.verdict, Verdict::Clean, "{name}: every record whole, unwritten space after");
        if let Some(fe) = first_entry {
            assert_eq!(fe, first, "{name}: first entry matches the name");
        }
    }
    drop(wal);
    let wal = open(dir.path(), SEG);
    assert_eq!(all_entries(&wal), all);
}

#[test]
fn truncation_across_a_segment_boundary_replaces_the_suffix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = open(dir.path(), SEG);
    wal.append(&entries(1, 100, 1, 60)).expect("append");
    wal.sync().expect("sync");
    assert!(segment_files(dir.path()).len() >= 3);
    // Index 20 lives in the first segment; the conflicting suffix spans every later segment.
    let mut want = entries(1, 19, 1, 60);
    let new = entries(20, 30, 2, 25);
    wal.append(&new).expect("append conflicting");
    want.extend(new);
    assert_eq!(all_entries(&wal), want);
    assert_eq!(wal.term(19), Some(1));
    assert_eq!(wal.term(20), Some(2));
    assert_eq!(wal.term(31), None);
    wal.sync().expect("sync");
    drop(wal);
    let mut wal = open(dir.path(), SEG);
    assert_eq!(all_entries(&wal), want);
    // And the log keeps growing from the new end.
    wal.append(&entries(31, 31, 2, 10)).expect("append");
    assert_eq!(wal.last_index(), 31);
}

#[test]
fn compaction_deletes_whole_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = open(dir.path(), SEG);
    // The only hard state record is written into the first segment, which compaction deletes.
    let hs = HardState { term: 3, vote: 2, commit: 150 };
    wal.set_hard_state(hs).expect("hs");
    wal.append(&entries(1, 300, 3, 50)).expect("append");
    wal.sync().expect("sync");
    let before = segment_files(dir.path());
    wal.compact(150, 3).expect("compact");
    let after = segment_files(dir.path());
    assert!(after.len() < before.len(), "whole segments below the snapshot are deleted");
    assert_eq!(after[..], before[before.len() - after.len()..], "only a prefix is deleted");
    let first_name = after[0].file_name().and_then(|n| n.to_str()).expect("name");
    let (_, first_in_file) = parse_segment_name(first_name).expect("name");
    assert!(first_in_file <= 151, "the segment holding entry 151 is kept");
    assert_eq!((wal.first_index(), wal.last_index()), (151, 300));
    drop(wal);
    let mut wal = open(dir.path(), SEG);
    assert_eq!((wal.first_index(), wal.last_index()), (151, 300));
    assert_eq!(wal.term(150), Some(3));
    assert_eq!(wal.term(149), None);
    assert_eq!(wal.hard_state(), hs);
    assert_eq!(all_entries(&wal), entries(151, 300, 3, 50));
    assert!(matches!(wal.entries(100, 200, usize::MAX), Err(StorageError::Compacted { .. })));
    wal.compact(300, 3).expect("compact everything");
    wal.append(&entries(301, 302, 4, 5)).expect("append after full compaction");
    wal.sync().expect("sync");
    drop(wal);
    let wal = open(dir.path(), SEG);
    assert_eq!((wal.first_index(), wal.last_index()), (301, 302));
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn snapshot_beyond_the_log_empties_it_and_appends_continue_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = open(dir.path(), SEG);
    wal.append(&entries(1, 10, 1, 10)).expect("append");
    wal.compact(50, 4).expect("compact");
    assert_eq!((wal.first_index(), wal.last_index(), wal.term(50)), (51, 50, Some(4)));
    assert!(wal.append(&entries(53, 53, 4, 1)).is_err(), "gap after the snapshot");
    wal.append(&entries(51, 52, 4, 10)).expect("append after snapshot");
    wal.sync().expect("sync");
    drop(wal);
    let wal = open(dir.path(), SEG);
    assert_eq!(all_entries(&wal), entries(51, 52, 4, 10));
}

#[test]
fn snapshot_with_a_conflicting_term_discards_the_whole_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = open(dir.path(), SEG);
    wal.append(&entries(1, 10, 1, 10)).expect("append");
    wal.compact(5, 2).expect("compact");
    assert_eq!((wal.first_index(), wal.last_index()), (6, 5));
    drop(wal);
    let wal = open(dir.path(), SEG);
    assert_eq!((wal.first_index(), wal.last_index(), wal.term(5)), (6, 5, Some(2)));
}

fn four_segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut wal = open(dir, SEG);
    wal.append(&entries(1, 150, 1, 60)).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let files = segment_files(dir);
    assert!(files.len() >= 4);
    files
}

#[test]
fn a_missing_middle_segment_is_a_hard_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = four_segments(dir.path());
    fs::remove_file(&files[1]).expect("remove");
    let err = open_real(dir.path(), SEG).err().expect("must refuse to open");
    assert!(matches!(err, StorageError::MissingSegment { missing_seq: 2, .. }), "{err}");
    let msg = err.to_string();
    let next = files[2].file_name().and_then(|n| n.to_str()).expect("name");
    assert!(msg.contains(next), "{msg}");
}

#[test]
fn a_missing_first_segment_without_a_snapshot_is_an_index_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = four_segments(dir.path());
    fs::remove_file(&files[0]).expect("remove");
    let err = open_real(dir.path(), SEG).err().expect("must refuse to open");
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("index gap"), "{err}");
}

#[test]
fn garbage_in_an_older_segments_unused_tail_is_ignored_when_the_next_header_proves_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = four_segments(dir.path());
    let all = all_entries(&open(dir.path(), SEG));
    // Garbage after the last record of a non-newest segment, in space the log never used: the
    // next segment's header (batch sequence, previous index) says the log ended before it.
    let mut b = fs::read(&files[0]).expect("read");
    let len = b.len();
    b[len - 3] ^= 0x55;
    fs::write(&files[0], &b).expect("write");
    let (mut wal, report) = open_real(dir.path(), SEG).expect("open");
    assert!(report.corruption.is_none(), "{report:?}");
    assert_eq!(all_entries(&wal), all, "nothing is lost, no later segment is dropped");
    wal.append(&entries(151, 151, 1, 1)).expect("appends go on");
    wal.sync().expect("sync");
    drop(wal);
    assert_eq!(segment_files(dir.path())[..files.len()], files[..]);
    // When the next header disagrees (it names a later batch than the chain reached, as after
    // damage that took the segment's last batch), the same bytes are corruption and cut there.
    let dir = tempfile::tempdir().expect("tempdir");
    let files = four_segments(dir.path());
    let mut b = fs::read(&files[0]).expect("read");
    let commits: Vec<usize> = {
        let mut v = Vec::new();
        mini_raft::storage::analyze::for_each_valid(&b, 0, b.len(), &mut |off, d| {
            if let record::Record::Commit(_) = d.record {
                v.push(off);
            }
        });
        v
    };
    let last_commit = *commits.last().expect("a commit");
    b[last_commit + 40] ^= 0x01;
    fs::write(&files[0], &b).expect("write");
    let (_, report) = open_real(dir.path(), SEG).expect("corruption does not fail open");
    let c = report.corruption.expect("reported");
    assert_eq!(c.path, files[0]);
    assert_eq!(c.dropped_files, files[1..].to_vec(), "every later segment is dropped");
}

#[test]
fn an_interrupted_segment_creation_is_discarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    four_segments(dir.path());
    let tmp = dir.path().join("00000000000000000099-00000000000000000151.wal.tmp");
    fs::write(&tmp, vec![0u8; SEG as usize]).expect("write tmp");
    let (wal, report) = open_real(dir.path(), SEG).expect("open");
    assert_eq!(report.temp_files_removed, vec![tmp.clone()]);
    assert!(!tmp.exists());
    assert_eq!(wal.last_index(), 150);
}

#[test]
fn a_second_writer_is_locked_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _wal = open(dir.path(), SEG);
    let err = open_real(dir.path(), SEG).err().expect("locked");
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
}

#[test]
fn hard_state_is_durable_only_after_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = open(dir.path(), SEG);
    let hs = HardState { term: 1, vote: 3, commit: 0 };
    wal.set_hard_state(hs).expect("hs");
    assert_eq!(wal.hard_state(), hs);
    assert_eq!(wal.synced_hard_state(), HardState::default());
    assert!(!wal.is_synced());
    wal.sync().expect("sync");
    assert_eq!(wal.synced_hard_state(), hs);
    let back = HardState { term: 0, vote: 0, commit: 0 };
    assert!(wal.set_hard_state(back).is_err(), "term never goes back");
    let revote = HardState { term: 1, vote: 4, commit: 0 };
    assert!(wal.set_hard_state(revote).is_err(), "one vote per term");
}

#[test]
fn entries_respects_bounds_and_byte_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = open(dir.path(), SEG);
    wal.append(&entries(1, 20, 1, 100)).expect("append");
    let one = entries(1, 1, 1, 100)[0].size_bytes();
    assert_eq!(wal.entries(1, 21, one * 3).expect("read").len(), 3);
    assert_eq!(wal.entries(1, 21, 0).expect("read").len(), 1, "at least one entry");
    assert!(wal.entries(5, 5, 0).expect("read").is_empty());
    assert!(matches!(wal.entries(1, 22, 10), Err(StorageError::Unavailable { .. })));
    assert!(wal.append(&entries(22, 22, 1, 1)).is_err(), "gap");
    assert!(wal.append(&entries(21, 21, 0, 1)).is_err(), "term goes back");
    let big = entries(21, 21, 1, SEG as usize);
    assert!(matches!(wal.append(&big), Err(StorageError::Invalid(_))), "oversized entry");
    assert_eq!(wal.last_index(), 20, "rejected batches leave no trace");
}

#[test]
fn segments_too_small_for_the_largest_entry_are_refused_naming_the_minimum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = mini_raft::storage::WalOptions { segment_bytes: 1 << 20, ..Default::default() };
    let err = mini_raft::storage::Wal::open(mini_raft::storage::fs::real(), dir.path(), opts).err().expect("refused");
    let min = mini_raft::storage::segment::segment_bytes_min(mini_raft::limits::ENTRY_BYTES_MAX);
    assert!(err.to_string().contains(&min.to_string()), "{err}");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_raftd"))
        .args(["--id", "1", "--listen", "127.0.0.1:1", "--peers", "1=127.0.0.1:1", "--segment-mib", "1", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run raftd");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--segment-mib must be between 3 and 1024") && stderr.contains(&min.to_string()),
        "{stderr}"
    );
}
