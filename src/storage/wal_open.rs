//! Opening the WAL: recovery by the rules in the `wal` module doc, the report of what it found,
//! and `repair`, which makes a corruption cut durable.

use super::analyze::{self, Analysis, ApplyError, Seen, Verdict};
use super::error::StorageError;
use super::fs::FileSystem;
use super::log_state::LogState;
use super::meta::{Meta, MetaStore, RecoveryGuard, RecoveryReason};
use super::record::{self, Record};
use super::segment::{self, Segment, SegmentFile};
use super::wal::{RecoveryRead, Repair, Wal, WalOptions, LOCK_FILE};
use crate::raft::types::HardState;
use bytes::Bytes;
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A log position: (index, term), ordered as Raft compares logs (term first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPosition {
    pub index: u64,
    pub term: u64,
}

/// Synced log data was found damaged (see the `wal` module doc, rule 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// The damaged file and the offset of the damage.
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
    /// Where the log is cut in `path` (the start of the damaged batch); everything from here on,
    /// and every later segment, is dropped.
    pub cut_offset: u64,
    /// The index after the last entry kept.
    pub first_lost_index: u64,
    /// The highest (index, term) that any valid record in the dropped part shows the log had
    /// reached, if that bounds the lost log (the newest file ends in a valid record followed by
    /// unwritten space); None if nothing does: the guard's extent is then unknown.
    pub guard: Option<LogPosition>,
    /// The highest term any valid record in the dropped part mentions (0 if none).
    pub term_max: u64,
    /// Later segment files that `repair` deletes.
    pub dropped_files: Vec<PathBuf>,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "corrupt data in {} at offset {}: {}; the log is cut at offset {} (entries from {} on are lost, guard {:?}, {} later segment(s) dropped)",
            self.path.display(),
            self.offset,
            self.reason,
            self.cut_offset,
            self.first_lost_index,
            self.guard.map(|g| (g.index, g.term)),
            self.dropped_files.len()
        )
    }
}

/// What `Wal::open` found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Segments of the legacy format (version 1) that were read.
    pub legacy_segments: usize,
    pub records: u64,
    pub entries: u64,
    /// Bytes of segment files examined (including the unwritten tail of the newest segment).
    pub bytes_scanned: u64,
    /// Bytes of a torn tail that were made unwritten again (0 if the log ended cleanly).
    pub bytes_truncated: u64,
    /// File and offset where the torn tail started, if any.
    pub truncated_at: Option<(PathBuf, u64)>,
    /// Why the tail was judged torn.
    pub torn_reason: Option<String>,
    /// Damage in synced data; the WAL waits for `repair` (see `Wal::repair`).
    pub corruption: Option<Corruption>,
    /// Leftover `.tmp` segment files (interrupted creations, spares) that were removed.
    pub temp_files_removed: Vec<PathBuf>,
    /// The current-format segment started because the newest segment had an older format.
    pub upgraded_to: Option<PathBuf>,
    /// Bytes and time of the segments other than the newest (read through the mapping): the
    /// recovery scan rate on page-cached data.
    pub older_bytes: u64,
    pub older_elapsed: Duration,
    pub elapsed: Duration,
}

/// A segment image: zero-copy through the mapping, or read from the disk.
enum Image {
    Cached(Bytes),
    Direct(Vec<u8>),
}

impl Image {
    fn bytes(&self) -> &[u8] {
        match self {
            Image::Cached(b) => b,
            Image::Direct(v) => v,
        }
    }
}

enum ReplayError {
    Apply { segment: usize, err: ApplyError },
    Storage(StorageError),
}

impl From<StorageError> for ReplayError {
    fn from(e: StorageError) -> Self {
        ReplayError::Storage(e)
    }
}

fn validate_options(opts: &WalOptions) -> Result<(), StorageError> {
    let bytes = opts.segment_bytes;
    let min = segment::segment_bytes_min(opts.entry_bytes_max).max(segment::SEGMENT_BYTES_MIN);
    if bytes < min || bytes > segment::SEGMENT_BYTES_MAX || !bytes.is_multiple_of(super::fs::PAGE_BYTES) {
        return Err(StorageError::Invalid(format!(
            "segment size {bytes} bytes is invalid: it must be a multiple of 4096 in [{min}, {}] \
             (the minimum holds a segment header, one entry of {} bytes and a commit record)",
            segment::SEGMENT_BYTES_MAX,
            opts.entry_bytes_max
        )));
    }
    Ok(())
}

/// Creates `dir` if needed (syncing its parent) and takes its lock.
fn prepare_dir(fs: &dyn FileSystem, dir: &Path) -> Result<Box<dyn super::fs::LockGuard>, StorageError> {
    let is_dir = fs.is_dir(dir).map_err(|e| StorageError::io("stat directory", dir, e))?;
    if !is_dir {
        fs.create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            segment::sync_dir(fs, parent)?;
        }
    }
    let path = dir.join(LOCK_FILE);
    match fs.lock(&path) {
        Ok(guard) => Ok(guard),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(StorageError::Locked { path }),
        Err(e) => Err(StorageError::io("lock", &path, e)),
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, recovering as described in the `wal` module doc.
    pub fn open(fs: Arc<dyn FileSystem>, dir: &Path, opts: WalOptions) -> Result<(Wal, RecoveryReport), StorageError> {
        validate_options(&opts)?;
        let started = Instant::now();
        let lock = prepare_dir(fs.as_ref(), dir)?;
        let (files, temps) = segment::list_segments(fs.as_ref(), dir)?;
        let mut report = RecoveryReport::default();
        for t in temps {
            log::warn!("removing interrupted segment creation {}", t.display());
            fs.remove_file(&t).map_err(|e| StorageError::io("remove temp segment", &t, e))?;
            report.temp_files_removed.push(t);
        }
        if !report.temp_files_removed.is_empty() {
            segment::sync_dir(fs.as_ref(), dir)?;
        }
        let mut wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            opts,
            segments: VecDeque::new(),
            state: LogState::default(),
            synced_hard_state: HardState::default(),
            unconfirmed: false,
            spare: None,
            spare_failed: false,
            poisoned: None,
            repair: None,
            _lock: lock,
        };
        if files.is_empty() {
            let header = wal.state.header_for(1);
            let seg = Segment::create(wal.fs.as_ref(), dir, header, opts.segment_bytes, None)?;
            wal.state.apply(1, 0, &Record::SegmentHeader(header)).map_err(StorageError::Invalid)?;
            wal.segments.push_back(seg);
        } else {
            wal.recover(&files, &mut report)?;
        }
        wal.finish_open(&mut report)?;
        report.elapsed = started.elapsed();
        Ok((wal, report))
    }

    fn finish_open(&mut self, report: &mut RecoveryReport) -> Result<(), StorageError> {
        let first = self.segments[0].path.clone();
        self.state.validate().map_err(|reason| StorageError::corrupt(&first, 0, reason))?;
        if self.state.hard_state.commit > self.state.last {
            log::warn!(
                "{}: commit index {} is beyond the last index {} (lost tail?)",
                self.dir.display(),
                self.state.hard_state.commit,
                self.state.last
            );
        }
        self.synced_hard_state = self.state.hard_state;
        // Nothing tells whether the last batch on disk was confirmed before the restart: treat it
        // as unconfirmed, so that the first idle moment confirms it (one empty batch per start)
        // instead of leaving it open to look torn until the next write.
        let header_len = record::record_len(record::SEGMENT_HEADER_PAYLOAD_LEN);
        self.unconfirmed = self.current().write_pos > header_len;
        if self.repair.is_none() && self.current().version != record::SEGMENT_VERSION {
            let old = self.current().version;
            self.rotate()?;
            let (dir, path) = (self.dir.display(), self.current().path.display());
            log::info!(
                "{dir}: continuing after a version {old} segment in a version {} segment {path}",
                record::SEGMENT_VERSION
            );
            report.upgraded_to = Some(self.current().path.clone());
        }
        report.segments = self.segments.len();
        self.check_invariants();
        Ok(())
    }

    /// Replays every segment; reruns once per record whose content is inconsistent (valid CRC),
    /// cutting the log before that record's batch.
    fn recover(&mut self, files: &[SegmentFile], report: &mut RecoveryReport) -> Result<(), StorageError> {
        let mut stop: Option<(usize, usize, String)> = None;
        for _attempt in 0..=files.len() + 1 {
            self.segments.clear();
            self.state = LogState::default();
            self.repair = None;
            *report = RecoveryReport {
                temp_files_removed: std::mem::take(&mut report.temp_files_removed),
                ..Default::default()
            };
            match self.replay(files, stop.as_ref(), report) {
                Ok(()) => return Ok(()),
                Err(ReplayError::Storage(e)) => return Err(e),
                Err(ReplayError::Apply { segment, err }) => {
                    log::warn!(
                        "{}: record at {} is inconsistent: {}",
                        files[segment].path.display(),
                        err.offset,
                        err.reason
                    );
                    let why = format!("inconsistent record at offset {}: {}", err.offset, err.reason);
                    let next = (segment, err.batch_start, why);
                    assert!(
                        stop.as_ref().is_none_or(|s| (next.0, next.1) < (s.0, s.1)),
                        "recovery must cut earlier each time"
                    );
                    stop = Some(next);
                }
            }
        }
        Err(StorageError::Invalid("recovery did not converge".into()))
    }

    fn replay(
        &mut self,
        files: &[SegmentFile],
        stop: Option<&(usize, usize, String)>,
        report: &mut RecoveryReport,
    ) -> Result<(), ReplayError> {
        for (i, f) in files.iter().enumerate() {
            let is_last = i + 1 == files.len();
            let started = Instant::now();
            let mut seg = Segment::open(self.fs.as_ref(), f)?;
            let image = if is_last && self.opts.recovery_read == RecoveryRead::Direct {
                Image::Direct(seg.read_direct()?)
            } else {
                Image::Cached(seg.image()?)
            };
            // A newer format is not damage: refuse to start rather than cut the log around it.
            if let Err(e @ record::DecodeError::UnsupportedVersion(_)) = record::decode(image.bytes(), 0) {
                return Err(ReplayError::Storage(StorageError::Invalid(format!(
                    "{}: {e}; refusing to open the log (start the release that wrote it)",
                    f.path.display()
                ))));
            }
            let stop_here = stop.filter(|s| s.0 == i).map(|s| (s.1, s.2.clone()));
            let forced = stop_here.is_some();
            let analysis = self
                .analyze_one(f, image.bytes(), is_last, stop_here, report)
                .map_err(|err| ReplayError::Apply { segment: i, err })?;
            report.bytes_scanned += seg.len() as u64;
            if !is_last {
                report.older_bytes += seg.len() as u64;
                report.older_elapsed += started.elapsed();
            }
            report.legacy_segments += usize::from(analysis.version == record::SEGMENT_VERSION_LEGACY);
            match &analysis.verdict {
                Verdict::Clean | Verdict::Torn { .. } => {
                    seg.set_recovered(analysis.keep_end, analysis.version);
                    if is_last {
                        self.drop_tail(&mut seg, &analysis, report)?;
                    }
                    self.segments.push_back(seg);
                }
                Verdict::Corrupt { at, reason }
                    if !forced && self.damage_is_past_the_end(files, i, image.bytes(), &analysis) =>
                {
                    log::warn!(
                        "{}: damage at offset {at} lies after the segment's last batch, in space the log never \
                         used (the next segment's header says where it ended): ignored ({reason})",
                        f.path.display()
                    );
                    seg.set_recovered(analysis.keep_end, analysis.version);
                    self.segments.push_back(seg);
                }
                Verdict::Corrupt { at, reason } => {
                    self.plan_cut(files, i, seg, image.bytes(), &analysis, (*at, reason))?;
                    report.corruption = self.repair.as_ref().map(|r| r.corruption.clone());
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn analyze_one(
        &mut self,
        f: &SegmentFile,
        buf: &[u8],
        is_last: bool,
        stop_at: Option<(usize, String)>,
        report: &mut RecoveryReport,
    ) -> Result<Analysis, ApplyError> {
        let state = &mut self.state;
        analyze::analyze(buf, is_last, stop_at, &mut |off, rec| {
            if let Record::SegmentHeader(h) = rec {
                if h.prev_index + 1 != f.first_index {
                    return Err(format!(
                        "header says first index {}, the file name {}",
                        h.prev_index + 1,
                        f.first_index
                    ));
                }
            }
            report.records += 1;
            report.entries += u64::from(matches!(rec, Record::Entry { .. }));
            state.apply(f.seq, off, rec)
        })
    }

    /// The newest segment ends at `keep_end`: make whatever follows unwritten in either view (the
    /// disk's, and the cache's, which may hold pages of a failed sync) and sync, so that later
    /// appends never leave stale bytes behind them.
    fn drop_tail(&mut self, seg: &mut Segment, a: &Analysis, report: &mut RecoveryReport) -> Result<(), StorageError> {
        let keep = a.keep_end;
        let cached = seg.image()?;
        let zero_to = a.dirty_end.max(analyze::dirty_end(a.version, &cached)).max(keep);
        if zero_to <= keep {
            return Ok(());
        }
        let reason = match &a.verdict {
            Verdict::Torn { reason } => reason.clone(),
            _ => "bytes in the page cache that are not on the disk (a failed writeback)".to_string(),
        };
        log::warn!(
            "{}: dropping a torn tail of {} bytes at offset {keep} ({reason}); records after the last sync",
            seg.path.display(),
            zero_to - keep
        );
        seg.unwrite_range(keep, zero_to)?;
        report.bytes_truncated += (zero_to - keep) as u64;
        report.truncated_at = Some((seg.path.clone(), keep as u64));
        report.torn_reason = Some(reason);
        Ok(())
    }

    /// Decides the cut for damage at `damage` in segment `i` and what the dropped part shows.
    fn plan_cut(
        &mut self,
        files: &[SegmentFile],
        i: usize,
        mut seg: Segment,
        buf: &[u8],
        a: &Analysis,
        damage: (usize, &String),
    ) -> Result<(), StorageError> {
        let path = files[i].path.clone();
        if a.keep_end == 0 && i == 0 {
            let (offset, reason) = (damage.0 as u64, damage.1.clone());
            return Err(StorageError::Unsalvageable { path, offset, reason });
        }
        let mut seen = analyze::seen_in(buf, a.keep_end, buf.len());
        for f in &files[i + 1..] {
            seen.merge(self.seen_in_file(f));
        }
        // What the dropped part shows bounds the lost log only if its newest file ends intact
        // (raft-sim: a zeroed final page left older records visible, and a guard below the lost
        // entries let the node vote for a candidate without them).
        let bounded = match files[i + 1..].last() {
            None => analyze::ends_in_a_valid_record(buf, a.keep_end),
            Some(f) => self.file_ends_in_a_valid_record(f),
        };
        if !bounded {
            seen.position = None;
        }
        let zero_to = if a.keep_end == 0 {
            0
        } else {
            a.dirty_end.max(analyze::dirty_end(a.version, &seg.image()?)).max(a.keep_end)
        };
        let mut delete: Vec<PathBuf> = files[i + 1..].iter().map(|f| f.path.clone()).collect();
        if a.keep_end == 0 {
            delete.insert(0, path.clone());
        } else {
            seg.set_recovered(a.keep_end, a.version);
            self.segments.push_back(seg);
        }
        let corruption = corruption_of(&path, damage, a.keep_end, self.state.last + 1, seen, delete.clone());
        log::error!("{corruption}");
        self.repair = Some(Repair { cut: a.keep_end, zero_to, delete, corruption });
        Ok(())
    }

    /// Damage in a segment that is not the newest, after its last kept batch, where the next
    /// segment's header proves the log ended exactly there (its `batch_seq` and `prev_index` are
    /// those of the kept chain) and no valid record follows: it hit space the log never used (the
    /// fill after a rotation), so nothing is lost. Rule 4 would cut every later segment.
    fn damage_is_past_the_end(&self, files: &[SegmentFile], i: usize, buf: &[u8], a: &Analysis) -> bool {
        let Some(next) = files.get(i + 1) else { return false };
        if !record::has_commit_records(a.version) || a.keep_end == 0 {
            return false;
        }
        if analyze::seen_in(buf, a.keep_end, buf.len()).position.is_some() {
            return false;
        }
        let header = Segment::open(self.fs.as_ref(), next).and_then(|s| s.image()).ok().and_then(|img| {
            match record::decode(&img, 0).ok()?.record {
                Record::SegmentHeader(h) => Some(h),
                _ => None,
            }
        });
        header.is_some_and(|h| h.batch_seq == a.batch_seq && h.prev_index == self.state.last)
    }

    /// See `analyze::ends_in_a_valid_record` (false if the file cannot be read).
    fn file_ends_in_a_valid_record(&self, f: &SegmentFile) -> bool {
        match Segment::open(self.fs.as_ref(), f).and_then(|s| s.image()) {
            Ok(img) => analyze::ends_in_a_valid_record(&img, 0),
            Err(_) => false,
        }
    }

    /// What a dropped later segment shows (whatever can be read of it).
    fn seen_in_file(&self, f: &SegmentFile) -> Seen {
        match Segment::open(self.fs.as_ref(), f).and_then(|s| s.image()) {
            Ok(img) => analyze::seen_in(&img, 0, img.len()),
            Err(e) => {
                log::warn!("{}: unreadable while looking for the recovery guard: {e}", f.path.display());
                Seen::default()
            }
        }
    }

    /// Makes the cut that `open` reported durable (crash-safe, see the `wal` module doc):
    /// deletes later segments newest first with a directory sync each, then makes the damaged
    /// segment unwritten from the cut and syncs it. Call only after the recovery guard is durable
    /// (`repair_after_corruption`). Returns the corruption it repaired, if any.
    pub fn repair(&mut self) -> Result<Option<Corruption>, StorageError> {
        if let Some(reason) = &self.poisoned {
            return Err(StorageError::Poisoned { reason: reason.clone() });
        }
        let Some(plan) = self.repair.take() else {
            return Ok(None);
        };
        let r = self.repair_now(&plan);
        if let Err(e) = self.poison_on(r) {
            self.repair = Some(plan);
            return Err(e);
        }
        Ok(Some(plan.corruption))
    }

    fn repair_now(&mut self, plan: &Repair) -> Result<(), StorageError> {
        let c = &plan.corruption;
        log::error!(
            "{}: dropping the log from index {} (guard {:?}): {} at offset {} and later segments {:?}",
            self.dir.display(),
            c.first_lost_index,
            c.guard,
            c.path.display(),
            plan.cut,
            plan.delete
        );
        for path in plan.delete.iter().rev() {
            match self.fs.remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("remove segment", path, e)),
            }
            segment::sync_dir(self.fs.as_ref(), &self.dir)?;
        }
        if plan.zero_to > plan.cut {
            let seg = self.segments.back_mut().ok_or_else(super::wal::no_segment)?;
            seg.unwrite_range(plan.cut, plan.zero_to)?;
        }
        if self.current().version != record::SEGMENT_VERSION {
            self.rotate()?;
        }
        Ok(())
    }
}

fn corruption_of(
    path: &Path,
    damage: (usize, &String),
    cut: usize,
    first_lost_index: u64,
    seen: Seen,
    dropped_files: Vec<PathBuf>,
) -> Corruption {
    Corruption {
        path: path.to_path_buf(),
        offset: damage.0 as u64,
        reason: damage.1.clone(),
        cut_offset: cut as u64,
        first_lost_index,
        guard: seen.position.map(|(term, index)| LogPosition { index, term }),
        term_max: seen.term_max,
        dropped_files,
    }
}

/// What the node layer does with a `Corruption` before it uses the log (in this order): record
/// the recovery guard durably in the meta file (the higher of the existing one and the new one;
/// without a guard from the dropped part, the last kept position), then make the cut durable.
/// Returns the meta file's new content. A crash between the two steps is harmless: the next
/// open finds the same damage (or the cut) and the guard is already durable.
pub fn repair_after_corruption(wal: &mut Wal, meta: &mut MetaStore) -> Result<Option<Meta>, StorageError> {
    let Some(c) = wal.repair.as_ref().map(|r| r.corruption.clone()) else {
        return Ok(None);
    };
    // With nothing readable after the damage, the lost log may have reached any index of any term
    // up to the durable one (an acknowledgement leaves only after its term is durable): the guard
    // is that term with an unknown extent (`raft::recovery`). The last kept position would be
    // unsafe: acknowledged entries may lie, unreadable, beyond it.
    let durable_term = c.term_max.max(meta.meta().term).max(wal.hard_state().term);
    let pos = c.guard.unwrap_or(LogPosition { index: u64::MAX, term: durable_term });
    let guard = RecoveryGuard { index: pos.index, term: pos.term, reason: RecoveryReason::LogCorruption };
    let mut m = meta.meta();
    m.recovering = Some(m.recovering.map_or(guard, |g| g.max(guard)));
    meta.store(&m)?;
    wal.repair()?;
    Ok(Some(m))
}

/// What the node layer does when `Wal::open` found the log unsalvageable
/// ([`StorageError::Unsalvageable`]: the first segment's header is damaged, so no record can be
/// trusted): record the recovery guard `(durable term, ∞)` durably in the meta file first (nothing
/// tells how far the lost log reached; an acknowledgement leaves only after its term is durable,
/// and the meta file holds that term), then delete every segment newest first, syncing the
/// directory after each. A crash in between finds the same damage (or fewer segments) and the
/// guard already durable. The next `Wal::open` starts an empty log; returns the files deleted.
pub fn discard_unsalvageable(
    fs: &dyn FileSystem,
    dir: &Path,
    meta: &mut MetaStore,
) -> Result<Vec<PathBuf>, StorageError> {
    let mut m = meta.meta();
    let guard = RecoveryGuard { index: u64::MAX, term: m.term, reason: RecoveryReason::LogCorruption };
    m.recovering = Some(m.recovering.map_or(guard, |g| g.max(guard)));
    meta.store(&m)?;
    let (files, temps) = segment::list_segments(fs, dir)?;
    let mut removed = Vec::new();
    for path in files.iter().rev().map(|f| &f.path).chain(temps.iter()) {
        fs.remove_file(path).map_err(|e| StorageError::io("remove unsalvageable segment", path, e))?;
        super::dir::sync_dir(fs, dir)?;
        removed.push(path.clone());
    }
    Ok(removed)
}
