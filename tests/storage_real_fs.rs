//! The WAL on a small real file system that fills up. Runs only when `MINI_RAFT_SMALL_FS` names
//! a directory on a small mounted file system (it needs root to set up, e.g.
//! `mount -t tmpfs -o size=3m tmpfs /mnt/small`, or an ext4 image on a loop device); otherwise it
//! says so and passes.

mod storage_support;

use mini_raft::storage::{fs, StorageError, Wal};
use storage_support::{all_entries, entries, opts};

const SEG: u64 = 256 << 10;

#[test]
fn a_full_real_disk_is_an_error_naming_the_file_never_sigbus_and_a_restart_recovers_after_freeing_space() {
    let Ok(root) = std::env::var("MINI_RAFT_SMALL_FS") else {
        eprintln!("MINI_RAFT_SMALL_FS is not set: skipping the real ENOSPC test");
        return;
    };
    let root = std::path::PathBuf::from(root).join(format!("wal-test-{}", std::process::id()));
    let dir = root.join("wal");
    std::fs::create_dir_all(&root).expect("dir");
    // Take most of the space with a filler file that is freed later.
    let filler = root.join("filler");
    let free = {
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![1u8; 64 << 10];
        let mut n = 0u64;
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {
            n += chunk.len() as u64;
        }
        let _ = f.sync_all();
        n
    };
    std::fs::remove_file(&filler).expect("remove filler");
    let keep_free = 3 * SEG;
    std::fs::write(&filler, vec![1u8; free.saturating_sub(keep_free) as usize]).expect("filler");
    let (mut wal, _) = Wal::open(fs::real(), &dir, opts(SEG)).expect("open");
    let mut next = 1;
    let err = loop {
        match wal.append(&entries(next, next + 9, 1, 1000)).and_then(|()| wal.sync()) {
            Ok(()) => next += 10,
            Err(e) => break e,
        }
        assert!(next < 100_000, "the disk never filled up");
    };
    let msg = err.to_string();
    eprintln!("got: {msg}");
    assert!(matches!(&err, StorageError::Io { .. }) && msg.contains("wal"), "{msg}");
    assert!(msg.contains("No space left") || msg.contains("os error 28"), "{msg}");
    assert!(wal.is_poisoned());
    drop(wal);
    std::fs::remove_file(&filler).expect("free space");
    let (mut wal, report) = Wal::open(fs::real(), &dir, opts(SEG)).expect("reopen after freeing space");
    assert!(report.corruption.is_none(), "{report:?}");
    assert!(wal.last_index() >= next - 1, "every synced entry is there");
    assert_eq!(all_entries(&wal).len() as u64, wal.last_index());
    let n = wal.last_index() + 1;
    wal.append(&entries(n, n + 400, 1, 1000)).expect("append after freeing space");
    wal.sync().expect("sync");
    drop(wal);
    std::fs::remove_dir_all(&root).expect("clean up");
}
