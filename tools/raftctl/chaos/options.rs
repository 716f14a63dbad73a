//! The `raftctl chaos` command line, parsed and validated into a [`ChaosConfig`] before anything
//! starts. Every bound is a named constant; every error names its flag.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use getopts::Matches;

use super::nemesis::{parse_fault_kinds, FaultKind, NemesisConfig, TimeRange};
use crate::{parse_command, parse_number, CliError};

pub const NODES_DEFAULT: usize = 3;
pub const DURATION_DEFAULT: Duration = Duration::from_secs(30);
/// Longest run: a day. Anything longer is a typo.
const DURATION_MAX: Duration = Duration::from_secs(86_400);
pub const CLIENTS_DEFAULT: usize = 4;
const CLIENTS_MAX: usize = 64;
pub const KEYS_DEFAULT: usize = 5;
const KEYS_MAX: usize = 1_000;
/// Operations recorded at most (about 100 bytes each in memory, more while checking): the history
/// of a 10-minute run on two cores is some 10^6 operations.
pub const OPERATIONS_MAX: u64 = 5_000_000;
const HOLD_DEFAULT: (f64, f64) = (0.5, 3.0);
const QUIET_DEFAULT: (f64, f64) = (0.3, 2.0);
pub const SNAPSHOT_EVERY_DEFAULT: u64 = 1_000;
/// A tick of 10 ms, the raftd default; `--clock-skew` spreads the nodes around it.
pub const TICK_MS_DEFAULT: u64 = 10;
const CLOCK_SKEW_PCT_MAX: u64 = 50;

/// Everything a chaos run needs, validated.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub nodes: usize,
    pub duration: Duration,
    pub clients: usize,
    pub keys: usize,
    /// Stop the workload after this many operations (the faults stop with it).
    pub operations_max: u64,
    /// Empty for `--faults none`: a run without faults.
    pub kinds: BTreeSet<FaultKind>,
    pub overlapping: bool,
    pub hold: TimeRange,
    pub quiet: TimeRange,
    pub seed: u64,
    pub keep: bool,
    /// `None`: a fresh directory under the system's temp dir.
    pub data: Option<PathBuf>,
    pub raftd: PathBuf,
    pub cluster_id: u64,
    pub snapshot_every: u64,
    /// Node tick lengths differ by up to this many percent of [`TICK_MS_DEFAULT`].
    pub clock_skew_pct: u64,
    /// Per-key search budget of the checker.
    pub check_steps_max: u64,
}

impl ChaosConfig {
    /// The nemesis configuration, or `None` for a run without faults.
    pub fn nemesis(&self) -> Option<NemesisConfig> {
        (!self.kinds.is_empty()).then(|| NemesisConfig {
            nodes: self.nodes,
            duration: self.duration,
            kinds: self.kinds.clone(),
            overlapping: self.overlapping,
            hold: self.hold,
            quiet: self.quiet,
            seed: self.seed,
        })
    }

    /// Node `id`'s tick length: `--clock-skew` spreads the nodes evenly from the slowest to the
    /// fastest clock.
    pub fn tick_ms(&self, id: u64) -> u64 {
        if self.nodes < 2 || self.clock_skew_pct == 0 {
            return TICK_MS_DEFAULT;
        }
        // Node 1 at -skew, node n at +skew, in per mille of the default tick.
        let span = 2 * self.clock_skew_pct * 10;
        let offset = (id - 1) * span / (self.nodes as u64 - 1);
        let permille = 1000 + offset - self.clock_skew_pct * 10;
        (TICK_MS_DEFAULT * permille).div_ceil(1000).max(1)
    }

    pub fn fault_names(&self) -> String {
        if self.kinds.is_empty() {
            return "none".to_string();
        }
        self.kinds.iter().map(|kind| kind.name()).collect::<Vec<_>>().join(",")
    }
}

pub fn add_options(options: &mut getopts::Options) {
    options
        .optopt("", "nodes", "3 or 5 raftd nodes", "N")
        .optopt("", "duration", "seconds of faults and load", "SECS")
        .optopt("", "clients", "concurrent clients, each with its own session", "W")
        .optopt("", "faults", "fault kinds, or all, or none", "LIST")
        .optopt("", "seed", "seed of the fault schedule", "S")
        .optopt("", "operations", "stop after this many operations", "N")
        .optopt("", "keys", "keys the clients share", "K")
        .optopt("", "data", "run directory (must not exist, or be empty)", "DIR")
        .optopt("", "raftd", "path of raftd", "PATH")
        .optopt("", "hold", "how long a fault lasts, in seconds", "MIN-MAX")
        .optopt("", "quiet", "time between faults, in seconds", "MIN-MAX")
        .optopt("", "snapshot-every", "raftd --snapshot-every", "N")
        .optopt("", "clock-skew", "node tick lengths differ by up to PCT percent", "PCT")
        .optopt("", "check-steps", "checker search budget per key", "N")
        .optflag("", "overlap", "let faults overlap")
        .optflag("", "keep", "keep the run directory");
}

/// `raftctl chaos --help`.
pub const HELP: &str = "\
Usage: raftctl chaos [OPTIONS]

Starts raftd nodes whose peer links each run through a fault proxy, injects a seeded fault
schedule while clients run set/get/del/cas, then checks the history for linearizability and
for lost acknowledged writes. Prints the timeline as it goes, then a summary.

Options:
  --nodes 3|5            raftd nodes (default 3)
  --duration SECS        seconds of faults and load (default 30)
  --clients W            clients, each with its own session (default 4)
  --keys K               keys the clients share (default 5)
  --faults LIST          all (default), none, or a comma list of
                         kill,pause,restart,power,partition,delay,drop,bandwidth,oneway
  --seed S               seed of the fault schedule (default: from the clock, printed)
  --overlap              let faults overlap (never two on one process or one link)
  --hold MIN-MAX         how long a fault lasts, seconds (default 0.5-3)
  --quiet MIN-MAX        time between faults, seconds (default 0.3-2)
  --operations N         stop the clients after N operations (default 5000000)
  --data DIR             run directory; must not exist or be empty (default: a new one
                         under the system temp dir)
  --keep                 keep the run directory after a pass (it is always kept otherwise)
  --raftd PATH           the raftd binary (default: next to raftctl)
  --snapshot-every N     raftd --snapshot-every (default 1000)
  --clock-skew PCT       spread the nodes' tick lengths by up to PCT percent (default 0)
  --check-steps N        the checker's search budget per key (default 50000000)
  --cluster-id N         as for every command

Run directory: node-N/ (data), node-N.log, history.jsonl, timeline.txt, summary.txt.
Exit status: 0 pass; 1 a violation (not linearizable, a lost acknowledged write, replicas
that differ, a node that crashed or did not stop cleanly); 2 bad usage; 3 the run could not
be carried out; 4 nothing wrong found, but the checker ran out of budget.
";

/// The configuration, or `None` if `--help` was asked for.
pub fn parse(args: &[String], before: &Matches) -> Result<Option<ChaosConfig>, CliError> {
    let (matches, global) = parse_command(args, before, add_options)?;
    if matches.opt_present("help") {
        return Ok(None);
    }
    if !matches.free.is_empty() {
        return Err(usage(format!("chaos takes no arguments, got {:?}", matches.free)));
    }
    let nodes = number(&matches, "nodes", NODES_DEFAULT)?;
    if nodes != 3 && nodes != 5 {
        return Err(usage(format!("--nodes must be 3 or 5, not {nodes}")));
    }
    let duration = match matches.opt_str("duration") {
        Some(text) => seconds(&text, "--duration")?,
        None => DURATION_DEFAULT,
    };
    if duration.is_zero() || duration > DURATION_MAX {
        return Err(usage(format!("--duration must be above 0 and at most {} s", DURATION_MAX.as_secs())));
    }
    let clients = bounded(&matches, "clients", CLIENTS_DEFAULT, CLIENTS_MAX)?;
    let keys = bounded(&matches, "keys", KEYS_DEFAULT, KEYS_MAX)?;
    let operations_max = number(&matches, "operations", OPERATIONS_MAX)?;
    if operations_max == 0 || operations_max > OPERATIONS_MAX {
        return Err(usage(format!("--operations must be between 1 and {OPERATIONS_MAX}")));
    }
    let kinds = match matches.opt_str("faults").as_deref().map(str::trim) {
        None | Some("all") => FaultKind::ALL.into_iter().collect(),
        Some("none") => BTreeSet::new(),
        Some(text) => parse_fault_kinds(text).map_err(|e| usage(format!("--faults: {e}")))?,
    };
    let hold = time_range(&matches, "hold", HOLD_DEFAULT)?;
    if hold.min < Duration::from_millis(1) {
        return Err(usage("--hold: a fault lasts at least 0.001 s".to_string()));
    }
    let quiet = time_range(&matches, "quiet", QUIET_DEFAULT)?;
    let clock_skew_pct = number(&matches, "clock-skew", 0)?;
    if clock_skew_pct > CLOCK_SKEW_PCT_MAX {
        return Err(usage(format!("--clock-skew must be at most {CLOCK_SKEW_PCT_MAX} (percent)")));
    }
    let snapshot_every = number(&matches, "snapshot-every", SNAPSHOT_EVERY_DEFAULT)?;
    if snapshot_every == 0 {
        return Err(usage("--snapshot-every must be positive".to_string()));
    }
    let check_steps_max = number(&matches, "check-steps", mini_raft::history::SEARCH_STEPS_MAX_DEFAULT)?;
    if check_steps_max == 0 {
        return Err(usage("--check-steps must be positive".to_string()));
    }
    Ok(Some(ChaosConfig {
        nodes,
        duration,
        clients,
        keys,
        operations_max,
        kinds,
        overlapping: matches.opt_present("overlap"),
        hold,
        quiet,
        seed: match matches.opt_str("seed") {
            Some(text) => parse_number(&text, "--seed")?,
            None => seed_from_clock(),
        },
        keep: matches.opt_present("keep"),
        data: matches.opt_str("data").map(PathBuf::from),
        raftd: raftd_path(matches.opt_str("raftd"))?,
        cluster_id: global.client.cluster_id,
        snapshot_every,
        clock_skew_pct,
        check_steps_max,
    }))
}

fn usage(message: String) -> CliError {
    CliError::Usage(message)
}

fn number<T: std::str::FromStr>(matches: &Matches, name: &str, default: T) -> Result<T, CliError> {
    match matches.opt_str(name) {
        Some(text) => parse_number(&text, &format!("--{name}")),
        None => Ok(default),
    }
}

fn bounded(matches: &Matches, name: &str, default: usize, max: usize) -> Result<usize, CliError> {
    let value = number(matches, name, default)?;
    if value == 0 || value > max {
        return Err(usage(format!("--{name} must be between 1 and {max}")));
    }
    Ok(value)
}

/// Seconds, fractions allowed, at most a day.
fn seconds(text: &str, flag: &str) -> Result<Duration, CliError> {
    let secs: f64 = parse_number(text, flag)?;
    if !(0.0..=DURATION_MAX.as_secs_f64()).contains(&secs) {
        return Err(usage(format!("{flag}: {text} is not between 0 and {} seconds", DURATION_MAX.as_secs())));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `MIN-MAX` in seconds, e.g. `0.5-3`.
fn time_range(matches: &Matches, name: &str, default: (f64, f64)) -> Result<TimeRange, CliError> {
    let flag = format!("--{name}");
    let Some(text) = matches.opt_str(name) else {
        return Ok(TimeRange::new(Duration::from_secs_f64(default.0), Duration::from_secs_f64(default.1)));
    };
    let Some((min, max)) = text.split_once('-') else {
        return Err(usage(format!("{flag}: '{text}' is not MIN-MAX (seconds, e.g. 0.5-3)")));
    };
    let (min, max) = (seconds(min, &flag)?, seconds(max, &flag)?);
    if min > max {
        return Err(usage(format!("{flag}: the minimum {min:?} is above the maximum {max:?}")));
    }
    Ok(TimeRange::new(min, max))
}

fn raftd_path(given: Option<String>) -> Result<PathBuf, CliError> {
    let path = match given {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .map_err(|e| CliError::Failed(format!("cannot find raftctl's own path: {e}")))?
            .with_file_name("raftd"),
    };
    if !path.is_file() {
        return Err(CliError::Failed(format!(
            "raftd not found at {} (build it with `cargo build --release`, or pass --raftd PATH)",
            path.display()
        )));
    }
    Ok(path)
}

fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    // Short seeds are easier to retype.
    (nanos ^ u64::from(std::process::id())) % 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(skew: u64, nodes: usize) -> ChaosConfig {
        ChaosConfig {
            nodes,
            duration: DURATION_DEFAULT,
            clients: 1,
            keys: 1,
            operations_max: 1,
            kinds: BTreeSet::new(),
            overlapping: false,
            hold: TimeRange::new(Duration::from_secs(1), Duration::from_secs(1)),
            quiet: TimeRange::new(Duration::from_secs(1), Duration::from_secs(1)),
            seed: 1,
            keep: false,
            data: None,
            raftd: PathBuf::from("raftd"),
            cluster_id: 1,
            snapshot_every: 1,
            clock_skew_pct: skew,
            check_steps_max: 1,
        }
    }

    #[test]
    fn clock_skew_spreads_the_ticks_evenly_around_the_default() {
        assert_eq!((1..=3).map(|id| config(0, 3).tick_ms(id)).collect::<Vec<_>>(), vec![10, 10, 10]);
        assert_eq!((1..=3).map(|id| config(20, 3).tick_ms(id)).collect::<Vec<_>>(), vec![8, 10, 12]);
        assert_eq!((1..=5).map(|id| config(50, 5).tick_ms(id)).collect::<Vec<_>>(), vec![5, 8, 10, 13, 15]);
    }
}
