//! raft-dump: inspect a mini-raft data directory (WAL segments and snapshots), read-only.
//!
//! It reads files with read(2) into memory (no mmap, no writes, no truncation, no locks), so it
//! is safe on the directory of a running node; the newest segment of a live node may show a torn
//! tail (a record being written), reported as such.
//!
//! Exit codes: 0 healthy, 1 corruption (the node would refuse to start), 2 usage or I/O error,
//! 3 torn tail in the newest segment (recovery would drop it; normal after a crash).

#[path = "../common/json.rs"]
mod json;

use getopts::Options;
use json::json_str;
use mini_raft::raft::types::EntryKind;
use mini_raft::storage::log_state::LogState;
use mini_raft::storage::record::{self, Record, TailKind};
use mini_raft::storage::segment::{self, SegmentFile};
use mini_raft::storage::snapshot;
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

/// Pass 1: scans every segment, replaying records into a LogState.
fn scan_segments(files: &[SegmentFile], problems: &mut Vec<Problem>) -> (LogState, Vec<SegmentSummary>) {
    let mut state = LogState::default();
    let mut out = Vec::new();
    let mut broken = false;
    for (i, f) in files.iter().enumerate() {
        let buf = match std::fs::read(&f.path) {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("cannot read: {e} (compacted by a running node?)");
                problems.push(problem(Severity::Corrupt, &f.path, 0, reason));
                broken = true;
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
        let end = record::scan(&buf, 0, |off, d| {
            s.records += 1;
            if let Record::Entry { index, .. } = d.record {
                s.first_entry.get_or_insert(index);
                s.last_entry = Some(index);
            }
            if broken {
                return Ok(());
            }
            state.apply(f.seq, off, &d.record).map_err(|why| (off as u64, why))
        });
        let end = match end {
            Ok(end) => end,
            Err((off, why)) => {
                problems.push(problem(Severity::Corrupt, &f.path, off, why));
                broken = true;
                s.tail = format!("inconsistent at {off}");
                out.push(s);
                continue;
            }
        };
        s.bytes_used = end.end as u64;
        let is_last = i + 1 == files.len();
        classify(&end, is_last, &f.path, &mut s, problems);
        out.push(s);
    }
    if !broken {
        if let Err(why) = state.validate() {
            let first = files.first().map(|f| f.path.clone()).unwrap_or_default();
            problems.push(problem(Severity::Corrupt, &first, 0, why));
        }
    }
    (state, out)
}

fn classify(end: &record::ScanEnd, is_last: bool, path: &Path, s: &mut SegmentSummary, problems: &mut Vec<Problem>) {
    let at = end.end as u64;
    match &end.tail {
        TailKind::Clean => {}
        TailKind::Torn { reason, dirty_end } if is_last => {
            let n = *dirty_end as u64 - at;
            s.tail = format!("torn({n} bytes at {at}: {reason})");
            let why = format!("torn tail of {n} bytes ({reason}); recovery would drop it");
            problems.push(problem(Severity::TornTail, path, at, why));
        }
        TailKind::Torn { reason, .. } => {
            s.tail = format!("bad({at}: {reason})");
            let why = format!("{reason} in a segment that is not the newest");
            problems.push(problem(Severity::Corrupt, path, at, why));
        }
        TailKind::Hole { reason, valid_at } => {
            s.tail = format!("bad({at}: {reason})");
            let why = format!("{reason}, but a valid record follows at offset {valid_at}");
            problems.push(problem(Severity::Corrupt, path, at, why));
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
fn print_records(args: &Args, files: &[SegmentFile]) {
    for f in files {
        let Ok(buf) = std::fs::read(&f.path) else {
            continue;
        };
        let name = file_name(&f.path);
        let filtered = args.from > 0 || args.to < u64::MAX;
        let end = record::scan::<()>(&buf, 0, |off, d| {
            let size = d.len as u64;
            let mut fields = vec![
                ("file", V::S(name.clone())),
                ("offset", V::N(off as u64)),
                ("record_type", V::S(d.record.record_type().name().to_string())),
            ];
            match d.record {
                Record::Entry { index, term, kind, data } => {
                    if index < args.from || index > args.to {
                        return Ok(());
                    }
                    fields.push(("index", V::N(index)));
                    fields.push(("term", V::N(term)));
                    fields.push(("payload", V::S(format_payload(kind, data))));
                }
                _ if filtered => return Ok(()),
                Record::HardState(hs) => {
                    let v = format!("term={} vote={} commit={}", hs.term, hs.vote, hs.commit);
                    fields.push(("payload", V::S(v)));
                }
                Record::Truncate { index } => fields.push(("index", V::N(index))),
                Record::Compact { index, term } => {
                    fields.push(("index", V::N(index)));
                    fields.push(("term", V::N(term)));
                }
                Record::SegmentHeader(h) => {
                    let v =
                        format!("seq={} prev_index={} floor={}/{}", h.seq, h.prev_index, h.floor_index, h.floor_term);
                    fields.push(("payload", V::S(v)));
                }
            }
            fields.push(("size", V::N(size)));
            fields.push(("crc_ok", V::B(true)));
            emit(args.json, "record", &fields);
            Ok(())
        });
        if let Ok(end) = end {
            if end.tail != TailKind::Clean {
                let reason = match &end.tail {
                    TailKind::Torn { reason, .. } | TailKind::Hole { reason, .. } => reason.to_string(),
                    TailKind::Clean => String::new(),
                };
                emit(
                    args.json,
                    "record",
                    &[
                        ("file", V::S(name.clone())),
                        ("offset", V::N(end.end as u64)),
                        ("record_type", V::S("invalid".to_string())),
                        ("crc_ok", V::B(false)),
                        ("error", V::S(reason)),
                    ],
                );
            }
        }
    }
}

fn print_snapshots(dir: &Path, json: bool, problems: &mut Vec<Problem>) -> Result<(), String> {
    let (snaps, temps) = snapshot::list_snapshots(dir).map_err(|e| e.to_string())?;
    for s in snaps {
        match snapshot::verify_snapshot_file(&s.path) {
            Ok(info) => emit(
                json,
                "snapshot",
                &[
                    ("file", V::S(file_name(&s.path))),
                    ("index", V::N(info.meta.index)),
                    ("term", V::N(info.meta.term)),
                    ("voters", V::S(format!("{:?}", info.meta.conf.voters))),
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
    let (files, temps) = segment::find_segment_files(&wal_dir).map_err(|e| e.to_string())?;
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
