//! One frame of `raftctl watch` as lines of at most [`WIDTH`] columns: a header, one row per node,
//! cluster throughput with a sparkline of the last minute, commit latency percentiles, and the
//! events (leader and term changes, unreachable nodes).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use mini_raft::server::status::role_name;
use mini_raft::wire::{NodeRole, StatusReport};

use super::sample::{quantile, NodeSample};
use super::{Watch, SPARKLINE_SECONDS};

/// Columns a frame may use: fits an 80-column terminal without wrapping.
pub const WIDTH: usize = 79;
const SPARK_LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Rows of the table: (title, width, right-aligned).
const COLUMNS: [(&str, usize, bool); 11] = [
    ("ID", 2, true),
    ("ADDRESS", 15, false),
    ("ROLE", 9, false),
    ("TERM", 4, true),
    ("LDR", 3, true),
    ("COMMIT", 8, true),
    ("APPLIED", 8, true),
    ("LAG", 5, true),
    ("LOG", 5, true),
    ("SNAP", 6, true),
    ("ELEC", 4, true),
];

/// A count in at most `width` characters: exact if it fits, else with a k/M/G suffix.
fn count(value: u64, width: usize) -> String {
    let exact = value.to_string();
    if exact.len() <= width {
        return exact;
    }
    let (divisor, suffix) = match value {
        v if v >= 10_000_000_000 => (1e9, "G"),
        v if v >= 10_000_000 => (1e6, "M"),
        _ => (1e3, "k"),
    };
    format!("{:.0}{suffix}", value as f64 / divisor)
}

/// Bytes as `512`, `4K`, `1.2M`, `64M`, `3.1G`.
fn bytes(value: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (unit, suffix) in UNITS {
        if value >= unit {
            let scaled = value as f64 / unit as f64;
            return if scaled < 10.0 { format!("{scaled:.1}{suffix}") } else { format!("{scaled:.0}{suffix}") };
        }
    }
    value.to_string()
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

fn milliseconds(secs: f64) -> String {
    if secs < 0.001 {
        format!("{:.0} us", secs * 1e6)
    } else {
        format!("{:.2} ms", secs * 1e3)
    }
}

fn cells_line(cells: &[String]) -> String {
    let mut line = String::new();
    for (i, (cell, &(_, width, right))) in cells.iter().zip(COLUMNS.iter()).enumerate() {
        if i > 0 {
            line.push(' ');
        }
        let cell: String = cell.chars().take(width).collect();
        if right {
            let _ = write!(line, "{cell:>width$}");
        } else {
            let _ = write!(line, "{cell:<width$}");
        }
    }
    line.trim_end().to_string()
}

fn short_role(role: NodeRole) -> &'static str {
    match role {
        NodeRole::PreCandidate => "pre-cand",
        other => role_name(other),
    }
}

fn node_row(watch: &Watch, index: usize, sample: &NodeSample, leader: Option<&StatusReport>, now: Instant) -> String {
    let view = &watch.nodes[index];
    let id = view.known_id.map_or("?".to_string(), |id| id.to_string());
    let s = match &sample.status {
        Ok(s) => s,
        Err(error) => {
            let since = view.unreachable_since.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
            let line = format!("{id:>2} {:<15} unreachable since {}: {error}", sample.addr, seconds(since));
            return line.chars().take(WIDTH).collect();
        }
    };
    let lag = leader.map_or("-".to_string(), |l| count(l.commit_index.saturating_sub(s.applied_index), 5));
    let elections = match &sample.metrics {
        Some(Ok(m)) => count(m.leader_changes as u64, 4),
        _ => "-".to_string(),
    };
    let leader_id = if s.leader_id == 0 { "-".to_string() } else { s.leader_id.to_string() };
    let cells = [
        s.node_id.to_string(),
        sample.addr.clone(),
        short_role(s.role).to_string(),
        count(s.term, 4),
        leader_id,
        count(s.commit_index, 8),
        count(s.applied_index, 8),
        lag,
        bytes(s.log_size_bytes),
        count(s.snapshot_index, 6),
        elections,
    ];
    cells_line(&cells)
}

/// One character per second of the last [`SPARKLINE_SECONDS`]: the highest write rate seen in
/// that second, scaled to the highest of the minute (a blank where there was no sample).
fn sparkline(watch: &Watch, now: Instant) -> String {
    let mut columns = vec![None::<f64>; SPARKLINE_SECONDS];
    for &(at, writes, _) in &watch.throughput {
        let age = now.saturating_duration_since(at).as_secs() as usize;
        if age < SPARKLINE_SECONDS {
            let slot = &mut columns[SPARKLINE_SECONDS - 1 - age];
            *slot = Some(slot.map_or(writes, |v: f64| v.max(writes)));
        }
    }
    let peak = columns.iter().flatten().copied().fold(0.0, f64::max);
    columns
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(_) if peak <= 0.0 => SPARK_LEVELS[0],
            Some(v) => SPARK_LEVELS[((v / peak) * (SPARK_LEVELS.len() - 1) as f64).round() as usize],
        })
        .collect()
}

/// The whole frame, line by line.
pub fn frame(watch: &Watch, samples: &[NodeSample], now: Instant, once: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let up = now.saturating_duration_since(watch.started).as_secs();
    let quit = if once { "" } else { "   q: quit" };
    lines.push(format!(
        "raftctl watch   {} nodes   every {:.1} s   up {:02}:{:02}:{:02}{quit}",
        samples.len(),
        watch.interval.as_secs_f64(),
        up / 3600,
        up / 60 % 60,
        up % 60
    ));
    lines.push(cells_line(&COLUMNS.iter().map(|c| c.0.to_string()).collect::<Vec<_>>()));
    let leader = super::cluster_leader(samples);
    for (i, sample) in samples.iter().enumerate() {
        lines.push(node_row(watch, i, sample, leader, now));
    }
    lines.push(String::new());
    lines.extend(throughput_lines(watch, samples, now));
    lines.push(String::new());
    lines.push("events:".to_string());
    for view in &watch.nodes {
        if let Some(at) = view.unreachable_since {
            let id = view.known_id.map_or(view.addr.clone(), |id| id.to_string());
            lines.push(format!("  node {id} unreachable since {}", seconds(now.saturating_duration_since(at))));
        }
    }
    for (at, text) in watch.events.iter().rev() {
        let line = format!("  [{:>7}] {text}", seconds(at.saturating_duration_since(watch.started)));
        lines.push(line.chars().take(WIDTH).collect());
    }
    lines
}

fn throughput_lines(watch: &Watch, samples: &[NodeSample], now: Instant) -> Vec<String> {
    let mut lines = Vec::new();
    let rate = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let last = watch.throughput.back().filter(|(at, _, _)| *at == now);
    let spark = sparkline(watch, now);
    lines.push(format!("writes/s {:>7}  {}", rate(last.map(|l| l.1)), spark.trim_end()));
    lines.push(format!("reads/s  {:>7}  (last {} s of writes above)", rate(last.map(|l| l.2)), SPARKLINE_SECONDS));
    let (buckets, scope) = watch.latency_buckets(samples);
    let observed = buckets.last().map_or(0.0, |b| b.1);
    let line = match (quantile(&buckets, 0.5), quantile(&buckets, 0.99)) {
        (Some(p50), Some(p99)) => format!(
            "commit latency  p50 {}  p99 {}  ({scope}, {observed:.0} commits)",
            milliseconds(p50),
            milliseconds(p99)
        ),
        _ => format!("commit latency  p50 -  p99 -  (no commits {scope})"),
    };
    lines.push(line);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_fit_their_columns() {
        assert_eq!(count(12_345_678, 8), "12345678");
        assert_eq!(count(123_456_789, 8), "123M");
        assert_eq!(count(123_456, 5), "123k");
        assert_eq!(bytes(512), "512");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(64 << 20), "64M");
        assert_eq!(milliseconds(0.00125), "1.25 ms");
        assert_eq!(milliseconds(0.0002), "200 us");
    }

    #[test]
    fn the_header_fits_eighty_columns() {
        let header = cells_line(&COLUMNS.iter().map(|c| c.0.to_string()).collect::<Vec<_>>());
        assert!(header.chars().count() <= WIDTH, "{header}");
        let widest: Vec<String> = COLUMNS.iter().map(|c| "9".repeat(c.1)).collect();
        assert_eq!(cells_line(&widest).chars().count(), WIDTH);
    }
}
