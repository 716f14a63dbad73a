//! `raft-dump`: listing, records, JSON, and `--verify` on healthy and damaged directories. The
//! tool must never modify the directory, and must work while a node holds it open.

mod storage_support;

use mini_raft::raft::types::{ConfState, HardState, Snapshot, SnapshotMeta};
use mini_raft::storage::record;
use mini_raft::storage::{fs as storage_fs, SnapshotStore, Wal};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use storage_support::{entries, entry, open_real, segment_files};

const SEG: u64 = 4096;

fn dump(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raft-dump")).args(args).arg(dir).output().expect("run raft-dump")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A healthy directory: several segments, a compaction, two snapshots; the WAL stays open
/// (lock held) when `keep_open`.
fn healthy(dir: &Path) -> Wal {
    let (mut wal, _) = open_real(dir, SEG).expect("open");
    wal.append(&entries(1, 120, 1, 60)).expect("append");
    wal.append(&[entry(121, 2, b"say \"hi\"\n\\ \x01\xff")]).expect("append");
    wal.set_hard_state(HardState { term: 2, vote: 1, commit: 100 }).expect("hs");
    wal.sync().expect("sync");
    let (store, _) = SnapshotStore::open(storage_fs::real(), dir).expect("snapshots");
    for i in [10, 20] {
        let meta = SnapshotMeta { index: i, term: 1, conf: ConfState::from_voters(vec![1, 2]) };
        store.save(&Snapshot { meta, data: vec![9u8; 500].into() }).expect("save");
    }
    wal.compact(20, 1).expect("compact");
    wal
}

#[test]
fn healthy_directory_lists_and_verifies_while_a_node_holds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _wal = healthy(dir.path());
    let o = dump(&["--verify"], dir.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("hard_state term=2 vote=1 commit=100"), "{out}");
    assert!(out.contains("first_index=21 last_index=121"), "{out}");
    let segs = out.lines().filter(|l| l.starts_with("segment ")).count();
    assert_eq!(segs, segment_files(dir.path()).len(), "{out}");
    assert_eq!(out.matches("snapshot file=").count(), 2, "{out}");
    assert!(out.contains("index=20 term=1") && out.contains("crc_ok=true"), "{out}");
}

#[test]
fn records_are_filtered_by_index_and_payloads_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _wal = healthy(dir.path());
    let o = dump(&["--records", "--from", "119", "--to", "121"], dir.path());
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    let recs: Vec<&str> = out.lines().filter(|l| l.starts_with("record ")).collect();
    assert_eq!(recs.len(), 3, "{out}");
    assert!(recs[2].contains(r#"payload="say \"hi\"\x0a\\ \x01\xff""#), "{}", recs[2]);
    assert!(recs[0].contains("crc_ok=true") && recs[0].contains("term=1"));
}

#[test]
fn json_lines_escape_strings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _wal = healthy(dir.path());
    let o = dump(&["--json", "--records", "--from", "121"], dir.path());
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    for line in out.lines() {
        assert!(line.starts_with("{\"type\":\"") && line.ends_with('}'), "{line}");
    }
    let rec = out.lines().find(|l| l.contains("\"index\":121")).expect("record 121");
    assert!(rec.contains(r#""payload":"say \\\"hi\\\"\\x0a\\\\ \\x01\\xff""#), "{rec}");
    assert!(out.contains(r#"{"type":"hard_state","term":2,"vote":1,"commit":100}"#), "{out}");
}

#[test]
fn verify_names_the_file_and_offset_of_a_flipped_bit_in_a_middle_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(healthy(dir.path()));
    let files = segment_files(dir.path());
    let middle = &files[files.len() / 2];
    let buf = fs::read(middle).expect("read");
    // The third record of the segment.
    let mut offsets = Vec::new();
    record::scan::<()>(&buf, 0, |off, _| {
        offsets.push(off);
        Ok(())
    })
    .expect("scan");
    let off = offsets[2];
    storage_support::flip_bit(middle, off as u64 + 40, 3);
    let before = fs::read(middle).expect("read");
    let o = dump(&["--verify"], dir.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let name = middle.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(err.contains(name) && err.contains(&format!("offset {off}")), "{err}");
    assert_eq!(std::fs::read(middle).expect("read"), before, "raft-dump must not write");
    assert!(err.contains("synced data is damaged") && err.contains("drops entries"), "{err}");
    // The node agrees: recovery reports corruption at the same place.
    let (_, report) = open_real(dir.path(), SEG).expect("open");
    let c = report.corruption.expect("corruption");
    assert_eq!((c.path.as_path(), c.offset), (middle.as_path(), off as u64));
    assert!(err.contains(&format!("drops entries {}..", c.first_lost_index)), "{err}");
}

#[test]
fn verify_fails_on_a_missing_middle_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(healthy(dir.path()));
    let files = segment_files(dir.path());
    fs::remove_file(&files[1]).expect("remove");
    let o = dump(&["--verify"], dir.path());
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is missing"), "{err}");
}

#[test]
fn verify_fails_on_a_corrupt_snapshot_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(healthy(dir.path()));
    let (store, _) = SnapshotStore::open(storage_fs::real(), dir.path()).expect("open");
    let snap = store.list().expect("list").pop().expect("a snapshot");
    storage_support::flip_bit(&snap.path, 200, 0);
    let o = dump(&["--verify"], dir.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let name = snap.path.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(err.contains(name), "{err}");
    assert!(out.contains("crc_ok=false"), "{out}");
}

/// Makes the last 512-byte sector holding the final batch's commit record unwritten again: what
/// a power loss during that batch's write can leave.
fn tear_final_commit(last: &Path) -> Vec<u8> {
    let mut buf = std::fs::read(last).expect("read");
    let fill = mini_raft::storage::analyze::image_fill(&buf);
    let end = fill.dirty_end(&buf);
    // The final batch starts after the previous Commit record; older bytes of the sector stay.
    let mut batch_start = 0;
    record::scan::<()>(&buf[..end - record::COMMIT_RECORD_LEN], 0, |off, d| {
        if let record::Record::Commit(_) = d.record {
            batch_start = off + d.len;
        }
        Ok(())
    })
    .expect("scan");
    let sector = ((end - 1) / 512 * 512).max(batch_start);
    fill.write(sector as u64, &mut buf[sector..end]);
    std::fs::write(last, &buf).expect("write");
    buf
}

#[test]
fn verify_reports_a_torn_tail_without_repairing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = healthy(dir.path());
    wal.append(&entries(122, 130, 2, 300)).expect("a final batch over several sectors");
    wal.sync().expect("sync");
    drop(wal);
    let files = segment_files(dir.path());
    let last = files.last().expect("a segment");
    let buf = tear_final_commit(last);
    let o = dump(&["--verify"], dir.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}\n{err}");
    assert!(out.contains("torn(") && err.contains("never synced"), "{out}\n{err}");
    assert_eq!(std::fs::read(last).expect("read"), buf, "raft-dump must not truncate");
    let (_, report) = open_real(dir.path(), SEG).expect("the node repairs it");
    assert!(report.bytes_truncated > 0 && report.corruption.is_none(), "{report:?}");
    assert_eq!(dump(&["--verify"], dir.path()).status.code(), Some(0));
}

#[test]
fn verify_calls_a_flipped_bit_in_the_final_batch_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(healthy(dir.path()));
    let last = segment_files(dir.path()).pop().expect("a segment");
    let buf = std::fs::read(&last).expect("read");
    let mut offsets = Vec::new();
    record::scan::<()>(&buf, 0, |off, _| {
        offsets.push(off);
        Ok(())
    })
    .expect("scan");
    // The record before the final Commit (the Compact record's batch): its commit stays intact.
    let target = offsets[offsets.len() - 2];
    storage_support::flip_bit(&last, target as u64 + 9, 0);
    let o = dump(&["--verify"], dir.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains(&format!("offset {target}")), "{err}");
}

#[test]
fn verify_shows_both_meta_slots_and_fails_when_both_are_damaged() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("wal")).expect("wal dir");
    drop(open_real(&dir.path().join("wal"), SEG).expect("open"));
    let meta_path = dir.path().join("meta");
    let (mut store, m) = mini_raft::storage::MetaStore::open(storage_fs::real(), &meta_path, 1, 2).expect("meta");
    store.store(&mini_raft::storage::Meta { term: 7, vote: 3, ..m }).expect("store");
    drop(store);
    let o = dump(&["--verify"], dir.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert_eq!(out.matches("meta_slot ").count(), 2, "{out}");
    assert!(out.contains("current=true ok=true generation=2 term=7 vote=3"), "{out}");
    storage_support::flip_bit(&meta_path, 30, 1);
    let o = dump(&["--verify"], dir.path());
    assert_eq!(o.status.code(), Some(3), "one bad slot is repairable: {}", text(&o).0);
    storage_support::flip_bit(&meta_path, 4096 + 30, 1);
    let o = dump(&["--verify"], dir.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("both meta slots"), "{err}");
}

#[test]
fn verify_fails_on_an_index_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open_real(dir.path(), SEG).expect("open");
    wal.append(&entries(1, 150, 1, 60)).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    fs::remove_file(&segment_files(dir.path())[0]).expect("remove first");
    let o = dump(&["--verify"], dir.path());
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("index gap"), "{err}");
}

#[test]
fn bad_flags_give_a_clear_message_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in
        [&["--nope"][..], &["--records", "--from", "abc"], &["--from", "3"], &["--records", "--from", "9", "--to", "2"]]
    {
        let o = dump(args, dir.path());
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(err.starts_with("raft-dump: "), "{args:?}: {err}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_raft-dump")).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing DIR"));
    let o = dump(&[], &dir.path().join("nope"));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn membership_change_entries_are_decoded() {
    use mini_raft::raft::membership::{ChangeOp, ConfChange, ConfEntry, Configuration, MemberChange};
    use mini_raft::raft::types::{Entry, EntryKind};
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = open_real(dir.path(), SEG).expect("open");
    let c0 = Configuration::from_voters([1, 2, 3]).expect("valid");
    let add = MemberChange { op: ChangeOp::AddVoter, id: 4, address: "10.0.0.4:7000".into() };
    let remove = MemberChange { op: ChangeOp::Remove, id: 3, address: String::new() };
    let change = ConfChange::Enter(vec![add, remove]);
    let conf = c0.apply(&change).expect("valid").to_conf_state();
    let data = ConfEntry { change, conf }.encode();
    wal.append(&[Entry { index: 1, term: 1, kind: EntryKind::ConfChange, data }]).expect("append");
    wal.sync().expect("sync");
    let (out, err) = text(&dump(&["--records"], dir.path()));
    let record = out.lines().find(|l| l.contains("record_type=entry")).unwrap_or_default();
    assert!(record.contains("conf-change enter joint [add-voter 4"), "{out}\n{err}");
    assert!(record.contains("voters [1, 2, 4] outgoing [1, 2, 3]"), "{record}");
}
