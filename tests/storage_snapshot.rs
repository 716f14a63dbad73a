//! Snapshot files: round trip, chunked streaming between two stores, atomic install (an
//! interrupted write leaves the previous snapshot in use), pruning, corruption named in errors.

mod storage_support;

use bytes::Bytes;
use mini_raft::raft::types::{ConfState, Snapshot, SnapshotMeta};
use mini_raft::storage::{fs as storage_fs, RealFs, SnapshotReader, SnapshotStore, StorageError};
use std::fs;
use storage_support::Rng;

fn snap(index: u64, term: u64, len: usize) -> Snapshot {
    let mut rng = Rng::new(index);
    Snapshot {
        meta: SnapshotMeta { index, term, conf: ConfState::from_voters(vec![1, 2, 3]) },
        data: Bytes::from(rng.bytes(len)),
    }
}

#[test]
fn save_then_load_round_trips_and_keeps_the_last_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = SnapshotStore::open(storage_fs::real(), dir.path()).expect("open");
    assert_eq!(store.latest().expect("latest"), None);
    for (i, t) in [(10, 1), (20, 2), (30, 2)] {
        let s = snap(i, t, 1000 + i as usize);
        let info = store.save(&s).expect("save");
        assert_eq!(info.meta, s.meta);
        assert_eq!(store.latest().expect("latest"), Some(s));
    }
    let kept: Vec<u64> = store.list().expect("list").iter().map(|f| f.index).collect();
    assert_eq!(kept, vec![20, 30]);
}

#[test]
fn chunked_transfer_between_stores_installs_an_identical_snapshot() {
    let (a, b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let (sender, _) = SnapshotStore::open(storage_fs::real(), a.path()).expect("open");
    let (receiver, _) = SnapshotStore::open(storage_fs::real(), b.path()).expect("open");
    let s = snap(77, 5, 300_000);
    let info = sender.save(&s).expect("save");
    let mut reader = SnapshotReader::open(&RealFs::new(), &info.path).expect("reader");
    let mut writer = receiver.writer().expect("writer");
    let mut offset = 0;
    loop {
        let chunk = reader.read_chunk(offset, 64 << 10).expect("chunk");
        if chunk.is_empty() {
            break;
        }
        writer.write_chunk(offset, &chunk).expect("write chunk");
        // A retransmitted chunk is harmless; a chunk from the future is refused.
        writer.write_chunk(offset, &chunk).expect("retransmission");
        assert!(writer.write_chunk(offset + 2 * chunk.len() as u64 + 1, &chunk).is_err());
        offset += chunk.len() as u64;
    }
    assert_eq!(writer.bytes_written(), reader.len());
    let installed = writer.finish().expect("finish");
    assert_eq!(installed.meta, s.meta);
    assert_eq!(receiver.latest().expect("latest"), Some(s));
}

#[test]
fn an_interrupted_write_leaves_the_previous_snapshot_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = SnapshotStore::open(storage_fs::real(), dir.path()).expect("open");
    let old = snap(10, 1, 5000);
    store.save(&old).expect("save");
    let mut w = store.image_writer(&snap(20, 2, 0).meta).expect("writer");
    w.write_image(&[7u8; 4096]).expect("write");
    std::mem::forget(w); // the process "crashes": no finish, no cleanup
    let (store, removed) = SnapshotStore::open(storage_fs::real(), dir.path()).expect("reopen");
    assert_eq!(removed.len(), 1, "the temporary file is cleaned up");
    assert_eq!(store.latest().expect("latest"), Some(old));
}

type Damage = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn a_corrupt_or_truncated_snapshot_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = SnapshotStore::open(storage_fs::real(), dir.path()).expect("open");
    let info = store.save(&snap(10, 1, 10_000)).expect("save");
    let good = fs::read(&info.path).expect("read");
    let name = info.path.file_name().and_then(|n| n.to_str()).expect("name").to_string();
    let damage: [(&str, Damage); 4] = [
        ("bit flip in the image", Box::new(|b: &mut Vec<u8>| b[5000] ^= 4)),
        ("bit flip in the header", Box::new(|b: &mut Vec<u8>| b[17] ^= 1)),
        ("truncated", Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 100))),
        ("emptied", Box::new(|b: &mut Vec<u8>| b.truncate(7))),
    ];
    for (what, f) in damage.iter() {
        let mut b = good.clone();
        f(&mut b);
        fs::write(&info.path, &b).expect("write");
        let err = store.latest().err().unwrap_or_else(|| panic!("{what}: not detected"));
        assert!(matches!(err, StorageError::Corrupt { .. }), "{what}: {err}");
        assert!(err.to_string().contains(&name), "{what}: {err}");
        assert!(SnapshotReader::open(&RealFs::new(), &info.path).is_err(), "{what}: reader must refuse");
    }
}

#[test]
fn a_received_snapshot_that_fails_verification_is_not_installed() {
    let (a, b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let (sender, _) = SnapshotStore::open(storage_fs::real(), a.path()).expect("open");
    let (receiver, _) = SnapshotStore::open(storage_fs::real(), b.path()).expect("open");
    let info = sender.save(&snap(5, 1, 1000)).expect("save");
    let mut bytes = fs::read(&info.path).expect("read");
    bytes[100] ^= 0x80;
    let mut w = receiver.writer().expect("writer");
    w.write_chunk(0, &bytes).expect("write");
    assert!(w.finish().is_err());
    assert!(receiver.list().expect("list").is_empty());
    let (_, leftovers) = SnapshotStore::open(storage_fs::real(), b.path()).expect("reopen");
    assert!(leftovers.is_empty(), "the failed temp file is removed on drop");
}

#[test]
fn a_joint_configuration_with_learners_and_addresses_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = SnapshotStore::open(storage_fs::real(), dir.path()).expect("open");
    let conf = ConfState {
        voters: vec![1, 2, 4],
        voters_outgoing: vec![1, 2, 3],
        learners: vec![5],
        learners_next: vec![3],
        addresses: vec![(1, "a:1".into()), (2, "b:2".into()), (3, "c:3".into()), (4, "d:4".into()), (5, "e:5".into())],
    };
    let s = Snapshot { meta: SnapshotMeta { index: 9, term: 2, conf }, data: Bytes::from_static(b"image") };
    store.save(&s).expect("save");
    assert_eq!(store.latest().expect("latest"), Some(s));
}

/// A version-1 file (voter ids only), as the previous release wrote it, byte by byte.
fn version_1_file(index: u64, term: u64, voters: &[u64], image: &[u8]) -> Vec<u8> {
    let mut f = b"MRSNAP01".to_vec();
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&(voters.len() as u32).to_le_bytes());
    f.extend_from_slice(&index.to_le_bytes());
    f.extend_from_slice(&term.to_le_bytes());
    for v in voters {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(image);
    f.extend_from_slice(&(image.len() as u64).to_le_bytes());
    let crc = crc32fast::hash(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f.extend_from_slice(b"MRSE");
    f
}

#[test]
fn a_version_1_snapshot_is_still_read_as_a_plain_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = mini_raft::storage::snapshot::snapshot_name(12, 3);
    fs::write(dir.path().join(name), version_1_file(12, 3, &[1, 2, 3], b"old image")).expect("write");
    let (store, _) = SnapshotStore::open(storage_fs::real(), dir.path()).expect("open");
    let loaded = store.latest().expect("reads version 1").expect("one snapshot");
    assert_eq!(loaded.meta, SnapshotMeta { index: 12, term: 3, conf: ConfState::from_voters(vec![1, 2, 3]) });
    assert_eq!(loaded.data.as_ref(), b"old image");
}
