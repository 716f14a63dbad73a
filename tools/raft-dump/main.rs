//! raft-dump: inspect a mini-raft data directory (WAL segments and snapshots), read-only.
//!
//! It reads files with read(2) into memory (no mmap, no writes, no truncation, no locks), so it
//! is safe on the directory of a running node; the newest segment of a live node may show a torn
//! tail (a batch being written), reported as such; a write caught in the middle of copying a
//! sector can even look like damage, so re-run before acting on a live node's newest segment.
//! Segments are judged by the same code as recovery (`storage::analyze`, rules in the
//! `storage::wal` module doc).
//!
//! Exit codes: 0 healthy, 1 corruption (synced data is damaged: recovery would cut the log and
//! the node must re-fetch the lost entries; the index range is shown), 2 usage or I/O error,
//! 3 torn tail (the final, never-synced batch of the newest segment, or a torn meta slot;
//! recovery drops or rewrites it; normal after a crash).

#[path = "../common/json.rs"]
mod json;

use getopts::Options;
use json::json_str;
use mini_raft::raft::types::EntryKind;
use mini_raft::storage::analyze::{self, Seen, Verdict};
use mini_raft::storage::log_state::LogState;
use mini_raft::storage::meta;
use mini_raft::storage::record::{self, Record};
use mini_raft::storage::segment::{self, SegmentFile};
use mini_raft::storage::{snapshot, RealFs};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Payload bytes shown per record.
const PAYLOAD_SHOW_BYTES: usize = 64;

struct Args {
    dir: PathBuf,
    records: bool,
    from: u64,
    to: u64,
    verify: bool,
    json: bool,
}

fn usage(opts: &Options) -> String {
    opts.usage("Usage: raft-dump [--records [--from I] [--to J]] [--verify] [--json] DIR\n\nDIR is a node's --data-dir (with wal/ and snap/ inside) or a bare WAL directory.")
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut opts = Options::new();
    opts.optflag("", "records", "print every record");
    opts.optopt("", "from", "first entry index to print (with --records)", "I");
    opts.optopt("", "to", "last entry index to print (with --records)", "J");
    opts.optflag("", "verify", "check every CRC and the index sequence; exit non-zero on damage");
    opts.optflag("", "json", "print JSON lines");
    opts.optflag("h", "help", "print this help");
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let m = opts.parse(&argv).map_err(|e| format!("{e}\n{}", usage(&opts)))?;
    if m.opt_present("help") {
        println!("{}", usage(&opts));
        return Ok(None);
    }
    let index = |name: &str, default: u64| -> Result<u64, String> {
        match m.opt_str(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name} wants an index (a number), got {v:?}")),
        }
    };
    let (from, to) = (index("from", 0)?, index("to", u64::MAX)?);
    if (m.opt_present("from") || m.opt_present("to")) && !m.opt_present("records") {
        return Err("--from and --to only make sense with --records".to_string());
    }
    if from > to {
        return Err(format!("--from {from} is after --to {to}"));
    }
    let dir = match m.free.as_slice() {
        [d] => PathBuf::from(d),
        [] => return Err(format!("missing DIR\n{}", usage(&opts))),
        more => return Err(format!("expected one DIR, got {}: {more:?}", more.len())),
    };
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    Ok(Some(Args {
        dir,
        records: m.opt_present("records"),
        from,
        to,
        verify: m.opt_present("verify"),
        json: m.opt_present("json"),
    }))
}

/// A KV command described in one line, or any other payload printable-escaped (at most
/// PAYLOAD_SHOW_BYTES bytes).
fn format_payload(kind: EntryKind, data: &[u8]) -> String {
    if kind == EntryKind::Noop {
        return "<noop>".to_string();
    }
    if kind == EntryKind::ConfChange {
        return match mini_raft::raft::membership::ConfEntry::decode(data) {
            Ok(entry) => format!("conf-change {} -> {}", entry.change.describe(), describe_conf(&entry.conf)),
            Err(e) => format!("<conf-change that does not decode: {e}>"),
        };
    }
    match mini_raft::kv::Command::decode(data) {
        Ok(command) => command.describe(),
        Err(_) => {
            let mut text = mini_raft::kv::escape_bytes(data, PAYLOAD_SHOW_BYTES);
            if data.len() > PAYLOAD_SHOW_BYTES {
                text.push_str("...");
            }
            text
        }
    }
}

/// A configuration in one line: `voters [1, 2, 4] outgoing [1, 2, 3] learners [5]`.
fn describe_conf(conf: &mini_raft::raft::ConfState) -> String {
    let mut text = format!("voters {:?}", conf.voters);
    if !conf.voters_outgoing.is_empty() {
        text.push_str(&format!(" outgoing {:?}", conf.voters_outgoing));
    }
    if !conf.learners.is_empty() {
        text.push_str(&format!(" learners {:?}", conf.learners));
    }
    if !conf.learners_next.is_empty() {
        text.push_str(&format!(" learners_next {:?}", conf.learners_next));
    }
    text
}

/// A field value of an output line.
enum V {
    N(u64),
    S(String),
    B(bool),
}

/// Prints one line: `kind k=v ...` as text, or `{"type":kind,"k":v,...}` as JSON.
fn emit(json: bool, kind: &str, fields: &[(&str, V)]) {
    let mut line = String::new();
    if json {
        let _ = write!(line, "{{\"type\":{}", json_str(kind));
        for (k, v) in fields {
            let v = match v {
                V::N(n) => n.to_string(),
                V::S(s) => json_str(s),
                V::B(b) => b.to_string(),
            };
            let _ = write!(line, ",{}:{v}", json_str(k));
        }
        line.push('}');
    } else {
        line.push_str(kind);
        for (k, v) in fields {
            match v {
                V::N(n) => write!(line, " {k}={n}"),
                V::S(s) if s.contains(' ') || s.is_empty() || *k == "payload" => {
                    write!(line, " {k}=\"{s}\"")
                }
                V::S(s) => write!(line, " {k}={s}"),
                V::B(b) => write!(line, " {k}={b}"),
            }
            .unwrap_or(());
        }
    }
    println!("{line}");
}

/// How bad a finding is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Severity {
    TornTail,
    Corrupt,
}

struct Problem {
    severity: Severity,
    path: PathBuf,
    offset: u64,
    reason: String,
}

struct SegmentSummary {
    file: SegmentFile,
    size: u64,
    bytes_used: u64,
    records: u64,
    first_entry: Option<u64>,
    last_entry: Option<u64>,
    tail: String,
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// Where recovery would cut the log: file, offset, why, and what the dropped part shows.
type Cut = (PathBuf, u64, String, Seen);

/// Pass 1: judges every segment as recovery would, replaying the kept records into a LogState.
fn scan_segments(files: &[SegmentFile], problems: &mut Vec<Problem>) -> (LogState, Vec<SegmentSummary>) {
    let mut state = LogState::default();
    let mut out = Vec::new();
    let mut cut: Option<Cut> = None;
    for (i, f) in files.iter().enumerate() {
        let buf = match std::fs::read(&f.path) {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("cannot read: {e} (compacted by a running node?)");
                problems.push(problem(Severity::Corrupt, &f.path, 0, reason));
                continue;
            }
        };
        let mut s = SegmentSummary {
            file: f.clone(),
            size: buf.len() as u64,
            bytes_used: 0,
            records: 0,
            first_entry: None,
            last_entry: None,
            tail: "clean".to_string(),
        };
        if let Some((_, _, _, seen)) = cut.as_mut() {
            seen.merge(analyze::seen_in(&buf, 0, buf.len()));
            s.tail = "dropped (after the damage)".to_string();
            out.push(s);
            continue;
        }
        let is_last = i + 1 == files.len();
        let result = analyze::analyze(&buf, is_last, None, &mut |off, rec| {
            s.records += 1;
            if let Record::Entry { index, .. } = rec {
                s.first_entry.get_or_insert(*index);
                s.last_entry = Some(*index);
            }
            state.apply(f.seq, off, rec)
        });
        let a = match result {
            Ok(a) => a,
            Err(e) => {
                let why = format!("inconsistent record at {}: {}", e.offset, e.reason);
                s.tail = format!("inconsistent at {}", e.offset);
                cut = Some((f.path.clone(), e.offset as u64, why, analyze::seen_in(&buf, e.batch_start, buf.len())));
                out.push(s);
                continue;
            }
        };
        s.bytes_used = a.keep_end as u64;
        match &a.verdict {
            Verdict::Clean => {}
            Verdict::Torn { reason } => {
                let n = a.dirty_end.saturating_sub(a.keep_end);
                s.tail = format!("torn({n} bytes at {}: {reason})", a.keep_end);
                let why =
                    format!("torn tail of {n} bytes ({reason}); the final batch was never synced, recovery drops it");
                problems.push(problem(Severity::TornTail, &f.path, a.keep_end as u64, why));
            }
            Verdict::Corrupt { at, reason } => {
                s.tail = format!("corrupt({at}: {reason})");
                cut = Some((f.path.clone(), *at as u64, reason.clone(), analyze::seen_in(&buf, a.keep_end, buf.len())));
            }
        }
        out.push(s);
    }
    report_cut(cut, &state, files, problems);
    (state, out)
}

/// The corruption problem with the index range recovery drops, or an index-gap problem.
fn report_cut(cut: Option<Cut>, state: &LogState, files: &[SegmentFile], problems: &mut Vec<Problem>) {
    match cut {
        Some((path, offset, reason, seen)) => {
            let upto = seen.position.map_or_else(|| "unknown".to_string(), |(t, i)| format!("index {i} (term {t})"));
            let why = format!(
                "{reason}; synced data is damaged: recovery cuts the log and drops entries {}.. (up to at least {upto})",
                state.last + 1
            );
            problems.push(problem(Severity::Corrupt, &path, offset, why));
        }
        None => {
            if let Err(why) = state.validate() {
                let first = files.first().map(|f| f.path.clone()).unwrap_or_default();
                problems.push(problem(Severity::Corrupt, &first, 0, why));
            }
        }
    }
}

/// Shows both slots of the meta file and which one is current.
fn print_meta(path: &Path, json: bool, problems: &mut Vec<Problem>) {
    let image = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            problems.push(problem(Severity::Corrupt, path, 0, format!("cannot read the meta file: {e}")));
            return;
        }
    };
    let slots = meta::decode_slots(&image);
    let current = meta::current_slot(&slots);
    for (i, slot) in slots.iter().enumerate() {
        let offset = meta::SLOT_OFFSETS[i];
        let mut fields =
            vec![("file", V::S(file_name(path))), ("offset", V::N(offset)), ("current", V::B(current == Some(i)))];
        match slot {
            Ok(s) => {
                let m = s.meta;
                fields.extend([
                    ("ok", V::B(true)),
                    ("generation", V::N(s.generation)),
                    ("term", V::N(m.term)),
                    ("vote", V::N(m.vote)),
                    ("cluster", V::N(m.cluster_id)),
                    ("node", V::N(m.node_id)),
                    ("data_dir_id", V::N(m.data_dir_id)),
                ]);
                if let Some(g) = m.recovering {
                    fields.push((
                        "recovering",
                        V::S(format!("guard index={} term={} reason={:?}", g.index, g.term, g.reason)),
                    ));
                }
            }
            Err(e) => fields.extend([("ok", V::B(false)), ("error", V::S(e.clone()))]),
        }
        emit(json, "meta_slot", &fields);
    }
    match (&slots[0], &slots[1], current) {
        (_, _, None) => {
            problems.push(problem(
                Severity::Corrupt,
                path,
                0,
                "both meta slots are damaged: the node refuses to start".into(),
            ));
        }
        (Ok(a), Ok(b), _) if a == b => {}
        _ => {
            let why = "the meta slots differ (an update torn by a crash, or one damaged slot); the node rewrites both at start";
            problems.push(problem(Severity::TornTail, path, 0, why.into()));
        }
    }
}

fn problem(severity: Severity, path: &Path, offset: u64, reason: String) -> Problem {
    Problem { severity, path: path.to_path_buf(), offset, reason }
}

fn print_segment(json: bool, s: &SegmentSummary) {
    let opt = |v: Option<u64>| match v {
        Some(n) => V::N(n),
        None => V::S("-".to_string()),
    };
    emit(
        json,
        "segment",
        &[
            ("file", V::S(file_name(&s.file.path))),
            ("seq", V::N(s.file.seq)),
            ("first_index", opt(s.first_entry)),
            ("last_index", opt(s.last_entry)),
            ("records", V::N(s.records)),
            ("bytes_used", V::N(s.bytes_used)),
            ("size", V::N(s.size)),
            ("tail", V::S(s.tail.clone())),
        ],
    );
}

/// Pass 2 (--records): prints each record of the segments, and the first bad one per file.
/// The fields `--records` shows for one record, after file, offset and type.
fn record_fields(rec: &Record<'_>) -> Vec<(&'static str, V)> {
    match *rec {
        Record::Entry { index, term, kind, data } => {
            vec![("index", V::N(index)), ("term", V::N(term)), ("payload", V::S(format_payload(kind, data)))]
        }
        Record::HardState(hs) => {
            vec![("payload", V::S(format!("term={} vote={} commit={}", hs.term, hs.vote, hs.commit)))]
        }
        Record::Truncate { index } => vec![("index", V::N(index))],
        Record::Compact { index, term } => vec![("index", V::N(index)), ("term", V::N(term))],
        Record::SegmentHeader(h) => {
            let v = format!(
                "version={} seq={} prev_index={} floor={}/{} batch_seq={}",
                h.version, h.seq, h.prev_index, h.floor_index, h.floor_term, h.batch_seq
            );
            vec![("payload", V::S(v))]
        }
        Record::Commit(c) => {
            let v = format!(
                "batch={} offset={} len={} crc={:#010x} last={}/{} hs={}/{}",
                c.batch_seq, c.batch_offset, c.batch_len, c.batch_crc, c.last_index, c.last_term, c.hs_term, c.hs_vote
            );
            vec![("payload", V::S(v))]
        }
    }
}

fn print_records(args: &Args, files: &[SegmentFile]) {
    for f in files {
        let Ok(buf) = std::fs::read(&f.path) else {
            continue;
        };
        let name = file_name(&f.path);
        let filtered = args.from > 0 || args.to < u64::MAX;
        let mut prev_end = 0usize;
        let mut gaps: Vec<usize> = Vec::new();
        let fill = analyze::image_fill(&buf);
        let dirty = fill.dirty_end(&buf);
        analyze::for_each_valid(&buf, 0, dirty, &mut |off, d| {
            if off > prev_end && !fill.matches(prev_end as u64, &buf[prev_end..off]) {
                gaps.push(prev_end);
            }
            prev_end = off + d.len;
            let size = d.len as u64;
            let mut fields = vec![
                ("file", V::S(name.clone())),
                ("offset", V::N(off as u64)),
                ("record_type", V::S(d.record.record_type().name().to_string())),
            ];
            match d.record {
                Record::Entry { index, .. } if index < args.from || index > args.to => return,
                Record::Entry { .. } => {}
                _ if filtered => return,
                _ => {}
            }
            fields.extend(record_fields(&d.record));
            fields.push(("size", V::N(size)));
            fields.push(("crc_ok", V::B(true)));
            emit(args.json, "record", &fields);
        });
        if dirty > prev_end {
            gaps.push(prev_end);
        }
        for at in gaps {
            let reason = record::decode(&buf, at).err().map_or_else(String::new, |e| e.to_string());
            emit(
                args.json,
                "record",
                &[
                    ("file", V::S(name.clone())),
                    ("offset", V::N(at as u64)),
                    ("record_type", V::S("invalid".to_string())),
                    ("crc_ok", V::B(false)),
                    ("error", V::S(reason)),
                ],
            );
        }
    }
}

fn print_snapshots(dir: &Path, json: bool, problems: &mut Vec<Problem>) -> Result<(), String> {
    let fs = RealFs::without_mmap();
    let (snaps, temps) = snapshot::list_snapshots(&fs, dir).map_err(|e| e.to_string())?;
    for s in snaps {
        match snapshot::verify_snapshot_file(&fs, &s.path) {
            Ok(info) => emit(
                json,
                "snapshot",
                &[
                    ("file", V::S(file_name(&s.path))),
                    ("index", V::N(info.meta.index)),
                    ("term", V::N(info.meta.term)),
                    ("voters", V::S(format!("{:?}", info.meta.conf.voters))),
                    ("conf", V::S(describe_conf(&info.meta.conf))),
                    ("size", V::N(info.size_bytes)),
                    ("crc_ok", V::B(true)),
                ],
            ),
            Err(e) => {
                let size = std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0);
                emit(
                    json,
                    "snapshot",
                    &[
                        ("file", V::S(file_name(&s.path))),
                        ("index", V::N(s.index)),
                        ("term", V::N(s.term)),
                        ("size", V::N(size)),
                        ("crc_ok", V::B(false)),
                        ("error", V::S(e.to_string())),
                    ],
                );
                let offset = match &e {
                    mini_raft::storage::StorageError::Corrupt { offset, .. } => *offset,
                    _ => 0,
                };
                problems.push(problem(Severity::Corrupt, &s.path, offset, e.to_string()));
            }
        }
    }
    for t in temps {
        emit(json, "temp_file", &[("file", V::S(file_name(&t)))]);
    }
    Ok(())
}

/// A node's data directory holds `wal/` and `snap/` (see `raftd`); a bare WAL directory (segments
/// and snapshots side by side) is accepted too.
fn layout(dir: &Path) -> (PathBuf, PathBuf) {
    if dir.join("wal").is_dir() {
        (dir.join("wal"), dir.join("snap"))
    } else {
        (dir.to_path_buf(), dir.to_path_buf())
    }
}

fn run(args: &Args) -> Result<u8, String> {
    let mut problems = Vec::new();
    let (wal_dir, snap_dir) = layout(&args.dir);
    let (files, temps) = segment::find_segment_files(&RealFs::without_mmap(), &wal_dir).map_err(|e| e.to_string())?;
    if files.is_empty() {
        // Pointing the tool at the wrong directory must not look like a healthy, empty log.
        problems.push(problem(Severity::Corrupt, &wal_dir, 0, "no WAL segment files in this directory".into()));
    }
    if let Err(e) = segment::check_consecutive(&wal_dir, &files) {
        let path = match &e {
            mini_raft::storage::StorageError::MissingSegment { next_path, .. } => next_path.clone(),
            _ => wal_dir.clone(),
        };
        problems.push(problem(Severity::Corrupt, &path, 0, e.to_string()));
    }
    let (state, summaries) = scan_segments(&files, &mut problems);
    let hs = state.hard_state;
    emit(args.json, "hard_state", &[("term", V::N(hs.term)), ("vote", V::N(hs.vote)), ("commit", V::N(hs.commit))]);
    emit(
        args.json,
        "log",
        &[
            ("first_index", V::N(state.floor.0 + 1)),
            ("last_index", V::N(state.last)),
            ("snapshot_index", V::N(state.floor.0)),
            ("snapshot_term", V::N(state.floor.1)),
            ("segments", V::N(files.len() as u64)),
        ],
    );
    for s in &summaries {
        print_segment(args.json, s);
    }
    for t in &temps {
        emit(args.json, "temp_file", &[("file", V::S(file_name(t)))]);
    }
    if snap_dir.is_dir() {
        print_snapshots(&snap_dir, args.json, &mut problems)?;
    }
    let meta_path = args.dir.join(meta::META_FILE);
    if meta_path.is_file() {
        print_meta(&meta_path, args.json, &mut problems);
    }
    if args.records {
        print_records(args, &files);
    }
    for p in &problems {
        emit(
            args.json,
            "problem",
            &[
                ("severity", V::S(format!("{:?}", p.severity))),
                ("file", V::S(p.path.display().to_string())),
                ("offset", V::N(p.offset)),
                ("reason", V::S(p.reason.clone())),
            ],
        );
    }
    Ok(verdict(args, &problems))
}

/// With --verify: names the first (worst) problem on stderr and picks the exit code.
fn verdict(args: &Args, problems: &[Problem]) -> u8 {
    if !args.verify {
        return 0;
    }
    let worst = problems
        .iter()
        .filter(|p| p.severity == Severity::Corrupt)
        .chain(problems.iter().filter(|p| p.severity == Severity::TornTail))
        .next();
    match worst {
        None => {
            emit(args.json, "verify", &[("ok", V::B(true))]);
            0
        }
        Some(p) => {
            eprintln!("raft-dump: verify failed: {} at offset {}: {}", p.path.display(), p.offset, p.reason);
            emit(
                args.json,
                "verify",
                &[("ok", V::B(false)), ("file", V::S(p.path.display().to_string())), ("offset", V::N(p.offset))],
            );
            match p.severity {
                Severity::Corrupt => 1,
                Severity::TornTail => 3,
            }
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("raft-dump: {msg}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("raft-dump: {msg}");
            ExitCode::from(2)
        }
    }
}
