//! Process metrics read from `/proc/self` at render time, under the standard names
//! `process_cpu_seconds_total`, `process_resident_memory_bytes` and `process_open_fds`.
//!
//! Guarantee: a read or parse failure (no `/proc`, a format change) never panics; the metric is
//! left out of that render. No libc is needed: resident pages come from `/proc/self/statm` (the
//! cheapest of the files that have them) times the page size, which is read once from the
//! auxiliary vector (`AT_PAGESZ` in `/proc/self/auxv`; 4096 if that fails), and CPU time is in
//! clock ticks of `USER_HZ`, which Linux fixes at 100 on every architecture (it is what
//! sysconf(_SC_CLK_TCK) reports).

use std::fs;

use super::text::{write_decimal, write_u64};
use super::MetricKind;

/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat` (`USER_HZ`).
const CLOCK_TICKS_PER_SECOND: u64 = 100;
/// Decimal digits of a tick count below one second (log10 of `CLOCK_TICKS_PER_SECOND`).
const TICK_FRACTION_DIGITS: u32 = 2;
const _: () = assert!(10u64.pow(TICK_FRACTION_DIGITS) == CLOCK_TICKS_PER_SECOND);
/// Fields of `/proc/<pid>/stat` after the `(comm)` field that precede `utime` (`state` is the
/// first; `utime` and `stime` are fields 14 and 15 of the whole line, see proc(5)).
const STAT_FIELDS_BEFORE_UTIME: usize = 11;
/// Page size assumed when the auxiliary vector cannot be read (x86-64's).
const PAGE_BYTES_FALLBACK: u64 = 4096;
/// `AT_PAGESZ` of <elf.h>: the auxiliary vector entry holding the page size.
const AUXV_PAGE_SIZE_KEY: u64 = 6;

/// One of the process metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProcessMetric {
    CpuSeconds,
    ResidentMemory { page_bytes: u64 },
    OpenFds,
}

impl ProcessMetric {
    /// All process metrics; reads the page size.
    pub(crate) fn all() -> [ProcessMetric; 3] {
        let page_bytes = fs::read("/proc/self/auxv")
            .ok()
            .and_then(|auxv| parse_auxv_page_bytes(&auxv))
            .unwrap_or(PAGE_BYTES_FALLBACK);
        [ProcessMetric::CpuSeconds, ProcessMetric::ResidentMemory { page_bytes }, ProcessMetric::OpenFds]
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            ProcessMetric::CpuSeconds => "process_cpu_seconds_total",
            ProcessMetric::ResidentMemory { .. } => "process_resident_memory_bytes",
            ProcessMetric::OpenFds => "process_open_fds",
        }
    }

    pub(crate) fn help(self) -> &'static str {
        match self {
            ProcessMetric::CpuSeconds => "Total user and system CPU time spent in seconds.",
            ProcessMetric::ResidentMemory { .. } => "Resident memory size in bytes.",
            ProcessMetric::OpenFds => "Number of open file descriptors.",
        }
    }

    pub(crate) fn kind(self) -> MetricKind {
        match self {
            ProcessMetric::CpuSeconds => MetricKind::Counter,
            ProcessMetric::ResidentMemory { .. } | ProcessMetric::OpenFds => MetricKind::Gauge,
        }
    }

    /// Appends the one sample line, or returns false (appending nothing) if `/proc` failed.
    pub(crate) fn render_sample(self, out: &mut String) -> bool {
        let read = || match self {
            ProcessMetric::CpuSeconds => read_cpu_ticks(),
            ProcessMetric::ResidentMemory { page_bytes } => read_resident_pages()?.checked_mul(page_bytes),
            ProcessMetric::OpenFds => count_open_fds(),
        };
        let Some(value) = read() else {
            return false;
        };
        out.push_str(self.name());
        out.push(' ');
        match self {
            ProcessMetric::CpuSeconds => write_decimal(out, value, TICK_FRACTION_DIGITS),
            ProcessMetric::ResidentMemory { .. } | ProcessMetric::OpenFds => write_u64(out, value),
        }
        out.push('\n');
        true
    }
}

fn read_cpu_ticks() -> Option<u64> {
    parse_stat_cpu_ticks(&fs::read_to_string("/proc/self/stat").ok()?)
}

fn read_resident_pages() -> Option<u64> {
    parse_statm_resident_pages(&fs::read_to_string("/proc/self/statm").ok()?)
}

/// Entries of `/proc/self/fd`. Includes the descriptor of the listing itself, as other clients
/// (client_golang's procfs) do.
fn count_open_fds() -> Option<u64> {
    let entries = fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.filter(|entry| entry.is_ok()).count() as u64)
}

/// `utime + stime` in clock ticks from the text of `/proc/<pid>/stat`. The command name may hold
/// spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_ascii_whitespace().skip(STAT_FIELDS_BEFORE_UTIME);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// Resident pages, the second field of `/proc/<pid>/statm` (`size resident shared ...`).
pub(crate) fn parse_statm_resident_pages(statm: &str) -> Option<u64> {
    statm.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The page size from the bytes of `/proc/<pid>/auxv`: native-endian (key, value) pairs of
/// machine words, ending with key 0.
pub(crate) fn parse_auxv_page_bytes(auxv: &[u8]) -> Option<u64> {
    const WORD_BYTES: usize = std::mem::size_of::<usize>();
    let word = |bytes: &[u8]| -> Option<u64> {
        let bytes: [u8; WORD_BYTES] = bytes.try_into().ok()?;
        u64::try_from(usize::from_ne_bytes(bytes)).ok()
    };
    for pair in auxv.chunks_exact(2 * WORD_BYTES) {
        let key = word(&pair[..WORD_BYTES])?;
        if key == 0 {
            return None;
        }
        if key == AUXV_PAGE_SIZE_KEY {
            return word(&pair[WORD_BYTES..]).filter(|&bytes| bytes > 0);
        }
    }
    None
}
