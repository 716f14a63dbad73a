//! `raftctl watch`: a live terminal dashboard of the cluster, like `top`.
//!
//! Every `--interval` (default 1 s) it looks at every node in parallel (`sample.rs`): the binary
//! `Status` request for the row — the same request `raftctl status` uses, asking for the report's
//! extension that names the node's HTTP address (`protocol.md` §7.2) — and `GET /metrics` from
//! that address for the counters and histograms. Why `/metrics` and not more fields in
//! `StatusReport`: the histograms stay where Prometheus reads them, so watch's p50/p99 are the
//! numbers a Grafana panel shows, and the binary protocol does not freeze bucket layouts into a
//! public contract. A node without `--http-listen` still gets its row; its counters show `-`.
//!
//! The frame (`render.rs`) is redrawn in place without flicker: cursor home, each line followed by
//! clear-to-end-of-line, then clear-to-end-of-screen; it fits 80 columns. `q` (or Ctrl-C, SIGTERM,
//! SIGHUP) restores the terminal (`term.rs`) and exits. `--once` prints one plain frame (no
//! escapes) and exits: 0 if some node answered, 3 otherwise.
//!
//! Bounds: one look takes at most the connect plus request timeouts (dead nodes do not slow the
//! others: they are asked in parallel); history is kept for [`SPARKLINE_SECONDS`] of throughput,
//! [`LATENCY_WINDOW`] of latency and [`EVENTS_MAX`] events.

mod render;
mod sample;
mod term;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use getopts::Matches;
use mini_raft::wire::{NodeRole, StatusReport};

use crate::{parse_command, parse_number, CliError, EXIT_FAILED};
use sample::{bucket_add, bucket_delta, Limits, Metrics, NodeSample};

/// Seconds of write throughput in the sparkline.
pub const SPARKLINE_SECONDS: usize = 60;
/// Commit latency percentiles are over this much recent history.
const LATENCY_WINDOW: Duration = Duration::from_secs(10);
/// Events kept (and shown), newest first.
const EVENTS_MAX: usize = 6;
const INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
const INTERVAL_SECS_MIN: f64 = 0.1;
const INTERVAL_SECS_MAX: f64 = 60.0;
/// Longest connect and request of one look (both also capped by the interval).
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(1);
/// Exit status after a signal (128 + SIGINT, as shells report it).
const EXIT_SIGNALLED: u8 = 130;

/// What watch remembers of one node between looks.
pub struct NodeView {
    pub addr: String,
    pub known_id: Option<u64>,
    pub unreachable_since: Option<Instant>,
    /// The last metrics and when they were read, for rates.
    previous: Option<(Instant, Metrics)>,
}

/// Everything watch remembers between looks.
pub struct Watch {
    pub started: Instant,
    pub interval: Duration,
    pub nodes: Vec<NodeView>,
    /// (when, writes/s, reads/s), oldest first, the last minute.
    pub throughput: VecDeque<(Instant, f64, f64)>,
    /// Commit latency observations per look (bucket deltas), the last [`LATENCY_WINDOW`].
    latency: VecDeque<(Instant, Vec<(f64, f64)>)>,
    /// (when, what), oldest first.
    pub events: VecDeque<(Instant, String)>,
    leadership: Option<(u64, u64)>,
    highest_term: u64,
}

/// The leader with the highest term among the nodes that answered.
pub fn cluster_leader(samples: &[NodeSample]) -> Option<&StatusReport> {
    samples.iter().filter_map(|s| s.status.as_ref().ok()).filter(|s| s.role == NodeRole::Leader).max_by_key(|s| s.term)
}

impl Watch {
    pub fn new(cluster: &[String], interval: Duration, now: Instant) -> Watch {
        let nodes = cluster
            .iter()
            .map(|addr| NodeView { addr: addr.clone(), known_id: None, unreachable_since: None, previous: None })
            .collect();
        Watch {
            started: now,
            interval,
            nodes,
            throughput: VecDeque::new(),
            latency: VecDeque::new(),
            events: VecDeque::new(),
            leadership: None,
            highest_term: 0,
        }
    }

    fn event(&mut self, now: Instant, text: String) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
        }
        self.events.push_back((now, text));
    }

    /// Takes one look's samples (in `nodes` order): reachability and leadership events, rates.
    pub fn update(&mut self, samples: &[NodeSample], now: Instant) {
        let (mut writes, mut reads, mut rated) = (0.0, 0.0, false);
        let mut latency = Vec::new();
        for (i, sample) in samples.iter().enumerate() {
            self.update_reachability(i, sample, now);
            let Some(Ok(metrics)) = &sample.metrics else { continue };
            let view = &mut self.nodes[i];
            if let Some((at, before)) = &view.previous {
                let elapsed = now.saturating_duration_since(*at).as_secs_f64();
                if elapsed > 0.0 {
                    writes += (metrics.writes - before.writes).max(0.0) / elapsed;
                    reads += (metrics.reads - before.reads).max(0.0) / elapsed;
                    rated = true;
                }
                bucket_add(&mut latency, &bucket_delta(&before.commit_latency, &metrics.commit_latency));
            }
            view.previous = Some((now, metrics.clone()));
        }
        if rated {
            self.throughput.push_back((now, writes, reads));
        }
        self.latency.push_back((now, latency));
        let keep = |at: &Instant, window: Duration| now.saturating_duration_since(*at) <= window;
        self.throughput.retain(|(at, _, _)| keep(at, Duration::from_secs(SPARKLINE_SECONDS as u64)));
        self.latency.retain(|(at, _)| keep(at, LATENCY_WINDOW));
        self.update_leadership(samples, now);
    }

    fn update_reachability(&mut self, i: usize, sample: &NodeSample, now: Instant) {
        let view = &mut self.nodes[i];
        let name = |view: &NodeView| view.known_id.map_or(view.addr.clone(), |id| format!("{id} ({})", view.addr));
        match &sample.status {
            Ok(report) => {
                view.known_id = Some(report.node_id);
                if let Some(since) = view.unreachable_since.take() {
                    let text =
                        format!("node {} reachable again after {:.1} s", name(view), (now - since).as_secs_f64());
                    self.event(now, text);
                }
            }
            Err(error) if view.unreachable_since.is_none() => {
                view.unreachable_since = Some(now);
                let text = format!("node {} unreachable: {error}", name(view));
                self.event(now, text);
            }
            Err(_) => {}
        }
    }

    fn update_leadership(&mut self, samples: &[NodeSample], now: Instant) {
        let term = samples.iter().filter_map(|s| s.status.as_ref().ok()).map(|s| s.term).max().unwrap_or(0);
        let leadership = cluster_leader(samples).map(|l| (l.term, l.node_id));
        if leadership.is_some() && leadership != self.leadership {
            let text = match (self.leadership, leadership) {
                (Some((old_term, old)), Some((new_term, new))) => {
                    format!("leader {old} -> {new}, term {old_term} -> {new_term}")
                }
                (_, Some((new_term, new))) => format!("leader is node {new} (term {new_term})"),
                _ => String::new(),
            };
            self.event(now, text);
            self.leadership = leadership;
        } else if term > self.highest_term && self.highest_term > 0 && leadership.is_none() {
            self.event(now, format!("term {} -> {term}, no leader yet", self.highest_term));
        }
        self.highest_term = self.highest_term.max(term);
    }

    /// The buckets the latency percentiles come from, and what they cover: the last
    /// [`LATENCY_WINDOW`] once there are two looks, else everything since the nodes started.
    pub fn latency_buckets(&self, samples: &[NodeSample]) -> (Vec<(f64, f64)>, String) {
        let mut total = Vec::new();
        if self.latency.len() > 1 || self.latency.iter().any(|(_, b)| !b.is_empty()) {
            for (_, buckets) in &self.latency {
                bucket_add(&mut total, buckets);
            }
            if total.last().is_some_and(|b| b.1 > 0.0) {
                return (total, format!("last {} s", LATENCY_WINDOW.as_secs()));
            }
        }
        for sample in samples {
            if let Some(Ok(m)) = &sample.metrics {
                bucket_add(&mut total, &m.commit_latency);
            }
        }
        (total, "since start".to_string())
    }
}

fn parse_interval(matches: &Matches) -> Result<Duration, CliError> {
    let Some(text) = matches.opt_str("interval") else { return Ok(INTERVAL_DEFAULT) };
    let secs: f64 = parse_number(&text, "--interval")?;
    if !(INTERVAL_SECS_MIN..=INTERVAL_SECS_MAX).contains(&secs) {
        let (lo, hi) = (INTERVAL_SECS_MIN, INTERVAL_SECS_MAX);
        return Err(CliError::Usage(format!("--interval: {text} is not between {lo} and {hi} seconds")));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn run(args: &[String], before: &Matches) -> Result<u8, CliError> {
    let (matches, global) = parse_command(args, before, |options| {
        options.optopt("", "interval", "seconds between frames", "SECS").optflag("", "once", "one frame, then exit");
    })?;
    if !matches.free.is_empty() {
        return Err(CliError::Usage(format!("watch takes no arguments, got {:?}", matches.free)));
    }
    let interval = parse_interval(&matches)?;
    let limits = Limits { connect: CONNECT_TIMEOUT_MAX.min(interval), request: REQUEST_TIMEOUT_MAX.min(interval) };
    let cluster_id = global.client.cluster_id;
    let mut watch = Watch::new(&global.cluster, interval, Instant::now());
    if matches.opt_present("once") {
        let samples = sample::sample_all(&global.cluster, cluster_id, limits);
        watch.update(&samples, Instant::now());
        for line in render::frame(&watch, &samples, Instant::now(), true) {
            println!("{line}");
        }
        return Ok(if samples.iter().any(|s| s.status.is_ok()) { 0 } else { EXIT_FAILED });
    }
    let signals = term::watch_signals();
    let (guard, _single_keys) = term::TerminalGuard::enter();
    let keys = read_keys();
    loop {
        let samples = sample::sample_all(&global.cluster, cluster_id, limits);
        let now = Instant::now();
        watch.update(&samples, now);
        draw(&render::frame(&watch, &samples, now, false));
        let next = now + interval;
        while Instant::now() < next {
            if term::signalled(&signals) {
                drop(guard);
                return Ok(EXIT_SIGNALLED);
            }
            match keys.recv_timeout(term::SIGNAL_POLL) {
                Ok(b'q' | b'Q') => {
                    drop(guard);
                    return Ok(0);
                }
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                // stdin closed: keys cannot quit any more, signals still can.
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(term::SIGNAL_POLL),
            }
        }
    }
}

/// Bytes typed on stdin, from a thread (a blocking read; it ends with stdin).
fn read_keys() -> mpsc::Receiver<u8> {
    let (tx, rx) = mpsc::channel();
    let _ = std::thread::Builder::new().name("watch-keys".into()).spawn(move || {
        let mut stdin = std::io::stdin();
        let mut byte = [0u8; 1];
        while let Ok(1) = stdin.read(&mut byte) {
            if tx.send(byte[0]).is_err() {
                return;
            }
        }
    });
    rx
}

/// Redraws in place: home, each line then clear-to-end-of-line, then clear-to-end-of-screen.
fn draw(lines: &[String]) {
    let mut frame = String::from("\x1b[H");
    for line in lines {
        frame.push_str(line);
        frame.push_str("\x1b[K\r\n");
    }
    frame.push_str("\x1b[J");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(frame.as_bytes());
    let _ = out.flush();
}
