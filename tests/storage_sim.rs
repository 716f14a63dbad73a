//! The WAL over `SimFs`: power loss in the middle of a sync (every crash mode, and every subset
//! of the final batch's sectors reaching the disk), latent damage in synced data (reported with
//! first lost index and guard, repaired crash-safely after the guard is durable), and fsyncgate.

mod storage_support;

use mini_raft::raft::rng::Rng;
use mini_raft::raft::types::{Entry, HardState};
use mini_raft::storage::fs::CorruptionKind;
use mini_raft::storage::{repair_after_corruption, MetaStore, RecoveryRead, SimFs, StorageError, Wal};
use std::path::{Path, PathBuf};
use storage_support::{all_entries, entries, open_sim, opts, sim_dir};

const SEG: u64 = 16 << 10;

/// Synced batches 1..=5 (entries 1-10), then a final batch (entries 11-14, ~1.9 KB, starting
/// mid-sector) whose process dies between the batch's `pwrite` and its fdatasync.
fn die_mid_sync(sim: &SimFs) -> (Vec<Entry>, Vec<Entry>, PathBuf) {
    let (mut wal, _) = open_sim(sim, SEG).expect("open");
    for b in 0..5u64 {
        wal.append(&entries(b * 2 + 1, b * 2 + 2, 1, 30)).expect("append");
        wal.sync().expect("sync");
    }
    wal.set_hard_state(HardState { term: 2, vote: 1, commit: 10 }).expect("hs");
    wal.sync().expect("sync");
    let synced = all_entries(&wal);
    wal.append(&entries(11, 14, 2, 420)).expect("append");
    let mut all = synced.clone();
    all.extend(entries(11, 14, 2, 420));
    sim.kill_after_ops(Some(1)); // the write goes through, the sync does not
    assert!(wal.sync().is_err());
    assert!(matches!(wal.sync(), Err(StorageError::Poisoned { .. })), "a failed sync poisons the WAL");
    let path = wal.segment_paths().pop().expect("segment");
    (synced, all, path)
}

#[test]
fn every_subset_of_the_final_batchs_sectors_reaching_the_disk_is_a_torn_tail_never_a_hole() {
    let sectors = {
        let sim = SimFs::new(1);
        let (_, _, path) = die_mid_sync(&sim);
        sim.unsynced_sectors(&path).expect("sectors")
    };
    assert!((4..=6).contains(&sectors.len()), "the final batch spans {} sectors", sectors.len());
    for mask in 0u64..1 << sectors.len() {
        let sim = SimFs::new(1);
        let (synced, all, path) = die_mid_sync(&sim);
        let kept: Vec<u64> =
            sectors.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, s)| *s).collect();
        sim.crash_keeping_sectors(&mut |p: &Path, s| p == path && kept.contains(&s));
        let (wal, report) = open_sim(&sim, SEG).unwrap_or_else(|e| panic!("mask {mask:b}: {e}"));
        assert!(report.corruption.is_none(), "mask {mask:b}: a crash is never corruption: {:?}", report.corruption);
        let got = all_entries(&wal);
        let everything = mask == (1 << sectors.len()) - 1;
        assert_eq!(got, if everything { all.clone() } else { synced.clone() }, "mask {mask:b}");
        assert_eq!(report.bytes_truncated > 0, !everything && mask != 0, "mask {mask:b}: {report:?}");
    }
}

#[test]
fn a_crash_in_every_mode_recovers_the_synced_batches_and_all_or_none_of_the_final_one() {
    let (mut seen_all, mut seen_none) = (0, 0);
    for seed in 0..200 {
        let sim = SimFs::new(seed);
        let (synced, all, _) = die_mid_sync(&sim);
        sim.crash(&mut Rng::new(seed));
        let (mut wal, report) = open_sim(&sim, SEG).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(report.corruption.is_none(), "seed {seed}: {:?}", report.corruption);
        let got = all_entries(&wal);
        if got == all {
            seen_all += 1;
        } else {
            assert_eq!(got, synced, "seed {seed}: only whole batches");
            seen_none += 1;
        }
        // The recovered log continues and survives another crash.
        let next = wal.last_index() + 1;
        wal.append(&entries(next, next + 2, 3, 100)).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        sim.crash(&mut Rng::new(seed + 1000));
        let (wal, report) = open_sim(&sim, SEG).expect("reopen");
        assert_eq!((wal.last_index(), report.bytes_truncated), (next + 2, 0), "seed {seed}");
    }
    assert!(seen_all > 10 && seen_none > 10, "{seen_all} all, {seen_none} none");
}

/// A synced, confirmed log over several segments; returns the entries and the last position.
fn build_confirmed(sim: &SimFs) -> (Vec<Entry>, (u64, u64)) {
    let (mut wal, _) = open_sim(sim, 8192).expect("open");
    for b in 0..40u64 {
        wal.append(&entries(b * 6 + 1, b * 6 + 6, 1 + b / 5, 60)).expect("append");
        wal.set_hard_state(HardState { term: 1 + b / 5, vote: 1, commit: b * 6 }).expect("hs");
        wal.sync().expect("sync");
        // A confirmation that did not fit rotates instead: go on until one is a record.
        let segments = wal.segment_paths().len();
        if b >= 30 && wal.confirm_if_idle().expect("confirm") && wal.segment_paths().len() == segments {
            break;
        }
    }
    assert!(!wal.is_unconfirmed());
    (all_entries(&wal), (wal.last_index(), wal.term(wal.last_index()).unwrap_or(0)))
}

fn open8k(sim: &SimFs) -> Result<(Wal, mini_raft::storage::RecoveryReport), StorageError> {
    Wal::open(sim.handle(), &sim_dir(), opts(8192))
}

#[test]
fn latent_damage_in_synced_data_is_reported_with_first_lost_index_and_guard_and_repaired() {
    let (mut reported, mut harmless) = (0, 0);
    for seed in 0..120 {
        let sim = SimFs::new(seed);
        let (all, last) = build_confirmed(&sim);
        let mut rng = Rng::new(seed);
        let damage = sim.corrupt_durable(&mut rng, &sim_dir()).expect("a file to damage");
        sim.crash(&mut rng);
        let ctx = format!("seed {seed}: {damage}");
        let (mut wal, report) = match open8k(&sim) {
            Ok(r) => r,
            Err(e) => {
                assert!(
                    damage.path.ends_with("00000000000000000001-00000000000000000001.wal") && damage.offset < 4096,
                    "{ctx}: {e}"
                );
                continue;
            }
        };
        if report.bytes_truncated > 0 {
            // Only the unwritten gap before the confirmation was hit: it is dropped like a torn
            // write, and it held nothing.
            assert!(report.corruption.is_none() && all_entries(&wal) == all, "{ctx}: {report:?}");
            harmless += 1;
            continue;
        }
        let Some(c) = report.corruption.clone() else {
            assert_eq!(all_entries(&wal), all, "{ctx}: unreported damage must not lose anything");
            harmless += 1;
            continue;
        };
        let got = all_entries(&wal);
        assert_eq!(got[..], all[..got.len()], "{ctx}: a prefix");
        assert_eq!(c.first_lost_index, wal.last_index() + 1, "{ctx}");
        // Damage that took the log's last record leaves no bound on what was lost.
        let newest = sim.file_paths().into_iter().filter(|p| p.extension().is_some_and(|e| e == "wal")).max();
        let image = sim.durable_image(&newest.expect("a segment")).expect("image");
        let bounded = mini_raft::storage::analyze::ends_in_a_valid_record(&image, 0);
        let guard = if bounded { Some(last) } else { None };
        assert_eq!(c.guard.map(|g| (g.index, g.term)), guard, "{ctx}: guard");
        let meta_path = Path::new("/node/meta");
        let (mut meta, _) = MetaStore::open(sim.handle(), meta_path, 1, 1).expect("meta");
        let m = repair_after_corruption(&mut wal, &mut meta).expect("repair").expect("a repair");
        match bounded {
            true => assert_eq!(m.recovering.map(|g| (g.index, g.term)), Some(last), "{ctx}"),
            // Unknown extent: any index up to the durable term (`repair_after_corruption`).
            false => assert!(m.recovering.is_some_and(|g| g.index == u64::MAX), "{ctx}: {:?}", m.recovering),
        }
        drop((wal, meta));
        sim.crash(&mut rng);
        let (wal, report) = open8k(&sim).expect("reopen after repair");
        assert!(report.corruption.is_none() && report.bytes_truncated == 0, "{ctx}: {report:?}");
        assert_eq!(all_entries(&wal), got, "{ctx}");
        let (_, m) = MetaStore::open(sim.handle(), meta_path, 1, 1).expect("meta");
        assert!(m.recovering.is_some(), "{ctx}: the guard is durable");
        reported += 1;
    }
    assert!(reported > 60, "{reported} reported, {harmless} harmless");
}

#[test]
fn a_crash_at_any_step_of_the_repair_leaves_the_old_or_the_new_state() {
    // Damage early in the second segment: the repair deletes later segments and zeroes a tail.
    let sim0 = SimFs::new(7);
    build_confirmed(&sim0);
    let second = sim0.durable_image(&storage_support::sim_segment(&sim0, 1)).expect("image").len();
    assert!(second > 0);
    let mut steps_done_new = 0;
    for k in 0..40u64 {
        let sim = SimFs::new(7);
        let (all, _) = build_confirmed(&sim);
        let seg = storage_support::sim_segment(&sim, 1);
        sim.corrupt_at(&seg, 300, CorruptionKind::BitFlip { bit: 3 }).expect("damage");
        sim.drop_caches();
        let (mut wal, report) = open8k(&sim).expect("open");
        let c = report.corruption.expect("reported");
        sim.kill_after_ops(Some(k));
        let done = wal.repair().is_ok();
        drop(wal);
        sim.crash(&mut Rng::new(k));
        let (wal, report) = open8k(&sim).unwrap_or_else(|e| panic!("step {k}: {e}"));
        let got = all_entries(&wal);
        assert_eq!(got[..], all[..(c.first_lost_index - 1) as usize], "step {k}: never more, never less");
        match report.corruption {
            Some(again) => assert_eq!(again.first_lost_index, c.first_lost_index, "step {k}"),
            None => steps_done_new += 1,
        }
        if done {
            break;
        }
    }
    assert!(steps_done_new > 0);
}

#[test]
fn after_a_failed_sync_recovery_reads_the_disk_not_pages_that_never_reached_it() {
    let setup = |sim: &SimFs| -> Vec<Entry> {
        let (mut wal, _) = open_sim(sim, SEG).expect("open");
        wal.append(&entries(1, 5, 1, 50)).expect("append");
        wal.sync().expect("sync");
        let synced = all_entries(&wal);
        wal.append(&entries(6, 9, 1, 50)).expect("append");
        sim.fail_next_sync();
        let err = wal.sync().expect_err("EIO");
        assert!(err.to_string().contains("fdatasync"), "{err}");
        assert!(matches!(wal.append(&entries(10, 10, 1, 1)), Err(StorageError::Poisoned { .. })), "poisoned");
        assert!(matches!(wal.entries(1, 2, 10), Err(StorageError::Poisoned { .. })), "every call fails");
        synced
    };
    // With read_direct: the failed pages are not trusted.
    let sim = SimFs::new(3);
    let synced = setup(&sim);
    sim.process_restart();
    let (wal, report) = open_sim(&sim, SEG).expect("open");
    assert_eq!(all_entries(&wal), synced, "the failed batch is not served");
    assert!(report.bytes_truncated > 0, "the cache's copy of the failed pages is zeroed: {report:?}");
    drop(wal);
    sim.crash(&mut Rng::new(3));
    assert_eq!(all_entries(&open_sim(&sim, SEG).expect("open").0), synced);
    // Reading through the cache (the unsafe variant) serves the failed batch ...
    let sim = SimFs::new(3);
    let synced = setup(&sim);
    sim.process_restart();
    let mut o = opts(SEG);
    o.recovery_read = RecoveryRead::Cached;
    let (wal, _) = Wal::open(sim.handle(), &sim_dir(), o).expect("open");
    let served = all_entries(&wal);
    assert_eq!(served.len(), synced.len() + 4, "the cache shows entries 6-9 as if they were durable");
    drop(wal);
    // ... which a power loss then takes away: a node could have acknowledged them.
    sim.crash(&mut Rng::new(3));
    assert_eq!(all_entries(&open_sim(&sim, SEG).expect("open").0), synced);
}

#[test]
fn a_full_disk_at_rotation_is_an_error_naming_the_file_and_a_restart_after_freeing_space_recovers() {
    let sim = SimFs::new(5);
    let (mut wal, _) = open_sim(&sim, 8192).expect("open");
    wal.append(&entries(1, 5, 1, 100)).expect("append");
    wal.sync().expect("sync");
    sim.set_space_left(Some(4096));
    let mut next = 6;
    let err = loop {
        let r = wal.append(&entries(next, next, 1, 300)).and_then(|()| wal.sync());
        match r {
            Ok(()) => next += 1,
            Err(e) => break e,
        }
        assert!(next < 100, "the disk never filled up");
    };
    let msg = err.to_string();
    assert!(msg.contains(".wal.tmp") && msg.contains("No space left"), "{msg}");
    assert!(wal.is_poisoned());
    let synced_last = next - 1;
    drop(wal);
    sim.set_space_left(None);
    sim.process_restart();
    let (mut wal, report) = open8k(&sim).expect("recovers once there is space");
    assert!(report.corruption.is_none(), "{report:?}");
    assert!(wal.last_index() >= synced_last, "every synced entry is there");
    let n = wal.last_index() + 1;
    wal.append(&entries(n, n + 30, 1, 300)).expect("append after the disk was freed");
    wal.sync().expect("sync");
    assert!(wal.segment_paths().len() > 1, "rotation works again");
}

#[test]
fn a_full_disk_while_allocating_ahead_is_not_fatal_and_rotation_reports_it() {
    let sim = SimFs::new(6);
    let mut o = opts(8192);
    o.spare_step_bytes = 4096;
    let (mut wal, _) = Wal::open(sim.handle(), &sim_dir(), o).expect("open");
    wal.append(&entries(1, 20, 1, 200)).expect("append");
    wal.sync().expect("sync");
    sim.set_space_left(Some(0));
    assert!(!wal.allocate_ahead().expect("not fatal"), "the step failed quietly");
    let err = wal.append(&entries(21, 60, 1, 200)).expect_err("rotation needs space");
    assert!(err.to_string().contains("No space left"), "{err}");
}

#[test]
fn allocating_ahead_prepares_the_next_segment_so_rotation_only_writes_a_header() {
    let sim = SimFs::new(8);
    let mut o = opts(8192);
    o.spare_step_bytes = 2048;
    let (mut wal, _) = Wal::open(sim.handle(), &sim_dir(), o).expect("open");
    let mut steps = 0;
    for i in 1..=80 {
        wal.append(&entries(i, i, 1, 150)).expect("append");
        wal.sync().expect("sync");
        steps += u64::from(wal.allocate_ahead().expect("step"));
    }
    assert!(steps >= 4 && wal.segment_paths().len() > 2, "{steps} steps");
    drop(wal);
    sim.crash(&mut Rng::new(8));
    let (wal, report) = Wal::open(sim.handle(), &sim_dir(), o).expect("reopen");
    assert_eq!(wal.last_index(), 80);
    assert!(report.temp_files_removed.iter().all(|p| p.ends_with("spare.wal.tmp")), "{report:?}");
}
