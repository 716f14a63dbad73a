//! wal-bench: group-commit throughput and recovery speed of the WAL.
//!
//! For each batch size, appends N entries of `--entry-bytes` in batches with one sync per batch
//! into a fresh directory, reports entries/s and MB/s (payload and on-disk record bytes), then
//! reopens the directory and reports recovery time and scan rate. The page cache is warm at
//! reopen (dropping caches would disturb other users of the machine), so the scan rate measures
//! CPU (CRC, parsing, index building), not the disk.

use bytes::Bytes;
use getopts::Options;
use mini_raft::raft::types::{Entry, EntryKind};
use mini_raft::storage::record;
use mini_raft::storage::{SyncMode, Wal, WalOptions};
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
    o.optopt("", "sync", "msync or fdatasync (default msync)", "MODE");
    o.optflag("", "prefill", "write zeros into new segments instead of sparse files");
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
    let sync_mode = match m.opt_str("sync").as_deref() {
        None | Some("msync") => SyncMode::Msync,
        Some("fdatasync") => SyncMode::Fdatasync,
        Some(other) => return Err(format!("--sync: expected msync or fdatasync, got {other:?}")),
    };
    Ok(Some(Config {
        dir: PathBuf::from(m.opt_str("dir").unwrap_or_else(|| "target/wal-bench".into())),
        entries,
        entries_batch1: num("entries-batch1", entries.min(20_000))?,
        entry_bytes: num("entry-bytes", 100)? as usize,
        batches,
        opts: WalOptions {
            segment_bytes: num("segment-bytes", 64 << 20)?,
            sync_mode,
            prefill: m.opt_present("prefill"),
        },
        reopens: num("reopens", 1)?.max(1),
    }))
}

fn run_one(cfg: &Config, batch: u64) -> Result<(), String> {
    let n = if batch == 1 { cfg.entries_batch1 } else { cfg.entries };
    let dir = cfg.dir.join(format!("batch-{batch}"));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut wal, _) = Wal::open(&dir, cfg.opts).map_err(|e| e.to_string())?;
    let data = Bytes::from(vec![b'x'; cfg.entry_bytes]);
    let mut buf: Vec<Entry> = Vec::with_capacity(batch as usize);
    let started = Instant::now();
    let mut next = 1u64;
    let mut sync_secs = 0.0;
    while next <= n {
        buf.clear();
        let end = (next + batch - 1).min(n);
        for index in next..=end {
            buf.push(Entry { index, term: 1, kind: EntryKind::Normal, data: data.clone() });
        }
        wal.append(&buf).map_err(|e| e.to_string())?;
        let t = Instant::now();
        wal.sync().map_err(|e| e.to_string())?;
        sync_secs += t.elapsed().as_secs_f64();
        next = end + 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let syncs = n.div_ceil(batch);
    let payload_mb = (n as f64 * cfg.entry_bytes as f64) / 1e6;
    let disk_mb = (n as f64 * record::record_len(cfg.entry_bytes) as f64) / 1e6;
    println!(
        "batch {batch:>4}: {n:>8} entries, {syncs:>7} syncs, {secs:7.2} s, {:>9.0} entries/s, \
         {:>7.2} MB/s payload, {:>7.2} MB/s on disk, {:>7.1} us/batch ({:.1} us in sync), {} B/sync on disk",
        n as f64 / secs,
        payload_mb / secs,
        disk_mb / secs,
        secs * 1e6 / syncs as f64,
        sync_secs * 1e6 / syncs as f64,
        record::record_len(cfg.entry_bytes) as u64 * batch,
    );
    drop(wal);
    for _ in 0..cfg.reopens {
        reopen(cfg, &dir, n, disk_mb)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn reopen(cfg: &Config, dir: &std::path::Path, n: u64, disk_mb: f64) -> Result<(), String> {
    let (wal, report) = Wal::open(dir, cfg.opts).map_err(|e| e.to_string())?;
    let rsecs = report.elapsed.as_secs_f64();
    println!(
        "            recovery: {} segments, {} records, {:.1} MB scanned in {:.1} ms = {:.0} MB/s \
         (log bytes only: {:.0} MB/s), last index {}",
        report.segments,
        report.records,
        report.bytes_scanned as f64 / 1e6,
        rsecs * 1e3,
        report.bytes_scanned as f64 / 1e6 / rsecs,
        disk_mb / rsecs,
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
        "wal-bench: {} B entries, segment {} B, sync {:?}, prefill {}, dir {}; batch 1 uses {} \
         entries (--entries-batch1), others {}",
        cfg.entry_bytes,
        cfg.opts.segment_bytes,
        cfg.opts.sync_mode,
        cfg.opts.prefill,
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
