//! wal-bench: group-commit throughput, rotation cost and recovery speed of the WAL.
//!
//! For each batch size, appends N entries of `--entry-bytes` in batches with one sync per batch
//! into a fresh directory (each sync writes the batch and its Commit record in one `pwrite`, then
//! one fdatasync), calling `allocate_ahead` after each batch as the node's WAL thread does. It
//! reports entries/s and MB/s (payload and on-disk record bytes), the mean and worst latency of
//! the batches that rotated to a new segment, then reopens the directory and reports recovery
//! time and scan rate. The page cache is warm at reopen (dropping caches would disturb other users
//! of the machine), so the rate of the older segments measures CPU (CRC, parsing, index
//! building), not the disk; the newest segment is read with O_DIRECT (from the disk).

use bytes::Bytes;
use getopts::Options;
use mini_raft::raft::types::{Entry, EntryKind};
use mini_raft::storage::{fs, record, Wal, WalOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

struct Config {
    dir: PathBuf,
    entries: u64,
    entries_batch1: u64,
    entry_bytes: usize,
    batches: Vec<u64>,
    opts: WalOptions,
    reopens: u64,
}

fn parse() -> Result<Option<Config>, String> {
    let mut o = Options::new();
    o.optopt("", "dir", "scratch directory (default target/wal-bench)", "DIR");
    o.optopt("", "entries", "entries per run (default 1000000)", "N");
    o.optopt("", "entries-batch1", "entries for the batch-1 run (default min(N, 20000))", "N");
    o.optopt("", "entry-bytes", "payload bytes per entry (default 100)", "B");
    o.optopt("", "batches", "comma-separated batch sizes (default 1,16,256)", "LIST");
    o.optopt("", "segment-bytes", "segment size (default 64 MiB)", "B");
    o.optopt(
        "",
        "spare-step",
        "bytes per step of allocating the next segment ahead; 0 = at rotation (default 1 MiB)",
        "B",
    );
    o.optopt("", "reopens", "times to reopen after writing (default 1)", "K");
    o.optflag("h", "help", "print this help");
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let m = o.parse(&argv).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        println!("{}", o.usage("Usage: wal-bench [options]"));
        return Ok(None);
    }
    let num = |name: &str, default: u64| -> Result<u64, String> {
        m.opt_str(name).map_or(Ok(default), |v| v.parse().map_err(|_| format!("--{name}: not a number: {v:?}")))
    };
    let entries = num("entries", 1_000_000)?;
    let batches = match m.opt_str("batches") {
        None => vec![1, 16, 256],
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse::<u64>().map_err(|_| format!("--batches: bad {s:?}")))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if batches.contains(&0) || entries == 0 {
        return Err("batch sizes and --entries must be positive".to_string());
    }
    let mut opts = WalOptions::with_segment_bytes(num("segment-bytes", 64 << 20)?);
    opts.spare_step_bytes = num("spare-step", 1 << 20)?;
    Ok(Some(Config {
        dir: PathBuf::from(m.opt_str("dir").unwrap_or_else(|| "target/wal-bench".into())),
        entries,
        entries_batch1: num("entries-batch1", entries.min(20_000))?,
        entry_bytes: num("entry-bytes", 100)? as usize,
        batches,
        opts,
        reopens: num("reopens", 1)?.max(1),
    }))
}

/// Latency of the batches that rotated to a new segment.
#[derive(Default)]
struct Rotations {
    count: u64,
    total_us: f64,
    max_us: f64,
}

fn run_one(cfg: &Config, batch: u64) -> Result<(), String> {
    let n = if batch == 1 { cfg.entries_batch1 } else { cfg.entries };
    let dir = cfg.dir.join(format!("batch-{batch}"));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut wal, _) = Wal::open(fs::real(), &dir, cfg.opts).map_err(|e| e.to_string())?;
    let data = Bytes::from(vec![b'x'; cfg.entry_bytes]);
    let mut buf: Vec<Entry> = Vec::with_capacity(batch as usize);
    let started = Instant::now();
    let (mut next, mut sync_secs, mut rot) = (1u64, 0.0, Rotations::default());
    while next <= n {
        buf.clear();
        let end = (next + batch - 1).min(n);
        for index in next..=end {
            buf.push(Entry { index, term: 1, kind: EntryKind::Normal, data: data.clone() });
        }
        let segments = wal.segment_paths().len();
        let t = Instant::now();
        wal.append(&buf).map_err(|e| e.to_string())?;
        wal.sync().map_err(|e| e.to_string())?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        sync_secs += us / 1e6;
        if wal.segment_paths().len() != segments {
            rot.count += 1;
            rot.total_us += us;
            rot.max_us = rot.max_us.max(us);
        }
        wal.allocate_ahead().map_err(|e| e.to_string())?;
        next = end + 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let syncs = n.div_ceil(batch);
    let payload_mb = (n as f64 * cfg.entry_bytes as f64) / 1e6;
    let disk_mb = (n as f64 * record::record_len(cfg.entry_bytes) as f64) / 1e6;
    println!(
        "batch {batch:>4}: {n:>8} entries, {syncs:>7} syncs, {secs:7.2} s, {:>9.0} entries/s, \
         {:>7.2} MB/s payload, {:>7.2} MB/s on disk, {:>7.1} us/batch ({:.1} us in append+sync), {} B/sync on disk",
        n as f64 / secs,
        payload_mb / secs,
        disk_mb / secs,
        secs * 1e6 / syncs as f64,
        sync_secs * 1e6 / syncs as f64,
        record::record_len(cfg.entry_bytes) as u64 * batch + record::COMMIT_RECORD_LEN as u64,
    );
    if rot.count > 0 {
        println!(
            "            rotations: {}, batch latency at rotation mean {:.0} us, max {:.0} us",
            rot.count,
            rot.total_us / rot.count as f64,
            rot.max_us
        );
    }
    drop(wal);
    for _ in 0..cfg.reopens {
        reopen(cfg, &dir, n, disk_mb)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn reopen(cfg: &Config, dir: &std::path::Path, n: u64, disk_mb: f64) -> Result<(), String> {
    let (wal, report) = Wal::open(fs::real(), dir, cfg.opts).map_err(|e| e.to_string())?;
    let rsecs = report.elapsed.as_secs_f64();
    let older = report.older_elapsed.as_secs_f64();
    println!(
        "            recovery: {} segments, {} records, {:.1} MB scanned in {:.1} ms = {:.0} MB/s \
         (log bytes only: {:.0} MB/s; older segments: {:.1} MB in {:.1} ms = {:.0} MB/s), last index {}",
        report.segments,
        report.records,
        report.bytes_scanned as f64 / 1e6,
        rsecs * 1e3,
        report.bytes_scanned as f64 / 1e6 / rsecs,
        disk_mb / rsecs,
        report.older_bytes as f64 / 1e6,
        older * 1e3,
        if older > 0.0 { report.older_bytes as f64 / 1e6 / older } else { 0.0 },
        wal.last_index()
    );
    if wal.last_index() != n {
        return Err(format!("recovered last index {} != {n}", wal.last_index()));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cfg = match parse() {
        Ok(Some(c)) => c,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wal-bench: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "wal-bench: {} B entries, segment {} B, spare step {} B, dir {}; batch 1 uses {} entries \
         (--entries-batch1), others {}",
        cfg.entry_bytes,
        cfg.opts.segment_bytes,
        cfg.opts.spare_step_bytes,
        cfg.dir.display(),
        cfg.entries_batch1,
        cfg.entries
    );
    for &b in &cfg.batches {
        if let Err(e) = run_one(&cfg, b) {
            eprintln!("wal-bench: batch {b}: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
