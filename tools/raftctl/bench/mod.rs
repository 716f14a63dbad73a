//! `raftctl bench`: C client threads, each with its own [`Client`](mini_raft::client::Client)
//! (its own session), run N operations in total, or for `--duration` seconds, against a key
//! space (or writing distinct keys, to grow the state); prints throughput, exact latency
//! percentiles, the server CPU time per operation (from `/proc` of the node processes, given by
//! `--pids` or the pid files of `raftctl cluster up --data DIR`) and the leadership changes seen
//! during the run.
//!
//! Latencies are measured per successful operation (retries included) and sorted; the p-th
//! percentile is the nearest-rank value: element `ceil(p * n) - 1` of the sorted list. The clock
//! starts when every client is connected (and, for `get`, has written its share of the keys).

mod load;
mod observe;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use getopts::Matches;
use mini_raft::client::PIPELINE_WRITES_IN_FLIGHT_MAX;
use mini_raft::wire::{ReadConsistency, VALUE_BYTES_MAX};

use crate::{parse_command, parse_number, CliError, Global, EXIT_FAILED};
use load::{consistency_name, Budget, WorkerResult};

const CLIENTS_DEFAULT: usize = 4;
const CLIENTS_MAX: usize = 1024;
const OPS_DEFAULT: u64 = 10_000;
const VALUE_SIZE_DEFAULT: usize = 100;
const KEYS_DEFAULT: u64 = 1_000;
/// Longest `--duration`.
const DURATION_MAX_S: u64 = 24 * 3600;

/// What every client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Set,
    Get,
}

/// The command line, checked: every field is within its bound.
pub struct Params {
    pub clients: usize,
    pub ops: u64,
    pub duration: Option<Duration>,
    pub value_size: usize,
    pub op: Op,
    pub key_space: u64,
    pub distinct: bool,
    pub pipeline: usize,
    pub consistency: ReadConsistency,
    pub pids: Vec<u32>,
}

pub fn run(args: &[String], before: &Matches) -> Result<u8, CliError> {
    let (matches, global) = parse_command(args, before, |options| {
        options
            .optopt("", "clients", "concurrent clients", "C")
            .optopt("", "ops", "total operations", "N")
            .optopt("", "duration", "run for this many seconds instead of --ops", "SECS")
            .optopt("", "value-size", "value bytes", "B")
            .optopt("", "op", "set or get", "OP")
            .optopt("", "keys", "distinct keys (same as --key-space)", "K")
            .optopt("", "key-space", "keys are uniform over this many", "K")
            .optflag("", "distinct", "every set writes a key never written before (grows the state)")
            .optopt("", "pipeline", "writes in flight per client (one session, one connection)", "N")
            .optopt("", "pids", "node process ids, for the server CPU per operation", "P1,P2,..")
            .optopt("", "data", "read the pids from DIR/node-I.pid (raftctl cluster up --data DIR)", "DIR")
            .optflag("", "stale", "local reads for --op get");
    })?;
    if !matches.free.is_empty() {
        return Err(CliError::Usage(format!("bench takes no arguments, got {:?}", matches.free)));
    }
    let params = parse_params(&matches)?;
    println!(
        "bench: op={} clients={} {} value_size={} keys={}{} pipeline={} consistency={} cluster={} timeout={:.1}s",
        if params.op == Op::Set { "set" } else { "get" },
        params.clients,
        params.duration.map_or(format!("ops={}", params.ops), |d| format!("duration={}s", d.as_secs())),
        params.value_size,
        params.key_space,
        if params.distinct { " (distinct)" } else { "" },
        params.pipeline,
        consistency_name(params.consistency),
        global.cluster.join(","),
        global.client.deadline.as_secs_f64(),
    );
    let cpu_before: Vec<Option<u64>> = params.pids.iter().map(|&pid| observe::cpu_ticks(pid)).collect();
    let stop = AtomicBool::new(false);
    let (run, (leader_changes, leaders)) = thread::scope(|scope| {
        let watcher = scope.spawn(|| observe::watch_leaders(&global.cluster, &global.client, &stop));
        let run = run_workers(&global, &params);
        stop.store(true, Ordering::Relaxed);
        (run, watcher.join().unwrap_or_default())
    });
    let cpu_after: Vec<Option<u64>> = params.pids.iter().map(|&pid| observe::cpu_ticks(pid)).collect();
    let cpu_ticks = cpu_before.iter().zip(&cpu_after).map(|(b, a)| Some(a.as_ref()?.saturating_sub(*b.as_ref()?)));
    let cpu_s: Option<f64> = cpu_ticks
        .map(|t| t.map(|t| t as f64 / observe::clock_ticks_per_second() as f64))
        .sum::<Option<f64>>()
        .filter(|_| !params.pids.is_empty());
    let observed = Observed { cpu_s, leader_changes, leaders };
    report(&global, &params, run, &observed)
}

fn parse_params(matches: &Matches) -> Result<Params, CliError> {
    fn opt<T: std::str::FromStr>(matches: &Matches, name: &str, default: T) -> Result<T, CliError> {
        matches.opt_str(name).map_or(Ok(default), |text| parse_number(&text, &format!("--{name}")))
    }
    let keys: u64 = opt(matches, "keys", KEYS_DEFAULT)?;
    let duration_s: Option<u64> = matches.opt_str("duration").map(|t| parse_number(&t, "--duration")).transpose()?;
    let mut params = Params {
        clients: opt(matches, "clients", CLIENTS_DEFAULT)?,
        ops: if duration_s.is_some() { u64::MAX } else { opt(matches, "ops", OPS_DEFAULT)? },
        duration: duration_s.map(Duration::from_secs),
        value_size: opt(matches, "value-size", VALUE_SIZE_DEFAULT)?,
        op: match matches.opt_str("op").as_deref() {
            None | Some("set") => Op::Set,
            Some("get") => Op::Get,
            Some(other) => return Err(CliError::Usage(format!("--op: '{other}' is not set or get"))),
        },
        key_space: opt(matches, "key-space", keys)?,
        distinct: matches.opt_present("distinct"),
        pipeline: opt(matches, "pipeline", 1)?,
        consistency: if matches.opt_present("stale") { ReadConsistency::Local } else { ReadConsistency::Linearizable },
        pids: Vec::new(),
    };
    if let Some(list) = matches.opt_str("pids") {
        params.pids = list.split(',').map(|p| parse_number(p, "--pids")).collect::<Result<_, _>>()?;
    } else if let Some(dir) = matches.opt_str("data") {
        params.pids = observe::pids_in(&PathBuf::from(dir)).map_err(CliError::Failed)?;
    }
    if !(1..=CLIENTS_MAX).contains(&params.clients) {
        return Err(CliError::Usage(format!("--clients must be between 1 and {CLIENTS_MAX}")));
    }
    if params.ops == 0 || params.key_space == 0 {
        return Err(CliError::Usage("--ops and --keys / --key-space must be at least 1".to_string()));
    }
    if duration_s.is_some_and(|d| d == 0 || d > DURATION_MAX_S) {
        return Err(CliError::Usage(format!("--duration must be between 1 and {DURATION_MAX_S} seconds")));
    }
    if params.value_size > VALUE_BYTES_MAX {
        return Err(CliError::Usage(format!("--value-size must be at most {VALUE_BYTES_MAX}")));
    }
    if !(1..=PIPELINE_WRITES_IN_FLIGHT_MAX).contains(&params.pipeline) {
        return Err(CliError::Usage(format!("--pipeline must be between 1 and {PIPELINE_WRITES_IN_FLIGHT_MAX}")));
    }
    if params.pipeline > 1 && params.op != Op::Set {
        return Err(CliError::Usage("--pipeline applies to --op set".to_string()));
    }
    if params.distinct && params.op != Op::Set {
        return Err(CliError::Usage("--distinct applies to --op set".to_string()));
    }
    if params.pids.len() > observe::PIDS_MAX {
        return Err(CliError::Usage(format!("at most {} --pids", observe::PIDS_MAX)));
    }
    Ok(params)
}

/// What the clients did, and how long the timed part took.
struct Run {
    results: Vec<WorkerResult>,
    elapsed: Duration,
}

/// Runs the workers; the clock starts when all of them are connected and stops when the last
/// one finishes.
fn run_workers(global: &Global, params: &Params) -> Run {
    let start_line = Barrier::new(params.clients + 1);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..params.clients)
            .map(|worker| {
                let share = params.ops / params.clients as u64
                    + u64::from((worker as u64) < params.ops % params.clients as u64);
                let budget = move || Budget { ops: share, until: params.duration.map(|d| Instant::now() + d) };
                let start_line = &start_line;
                scope.spawn(move || load::work(global, params, worker, budget, start_line))
            })
            .collect();
        start_line.wait();
        let started = Instant::now();
        let results = handles
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| WorkerResult {
                    setup_error: Some("worker thread panicked".to_string()),
                    ..WorkerResult::default()
                })
            })
            .collect();
        Run { results, elapsed: started.elapsed() }
    })
}

/// Nearest-rank percentile of sorted `values` (non-empty), `p` in (0, 1].
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What the bench saw of the servers during the run.
struct Observed {
    /// CPU seconds of the node processes during the run (all of them; `None`: no pids).
    cpu_s: Option<f64>,
    leader_changes: u64,
    leaders: Vec<(u64, u64)>,
}

const PERCENTILES: [(&str, f64); 4] = [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)];

fn report(global: &Global, params: &Params, run: Run, observed: &Observed) -> Result<u8, CliError> {
    if let Some(error) = run.results.iter().find_map(|r| r.setup_error.clone()) {
        return Err(CliError::Failed(format!("bench could not start: {error}")));
    }
    let errors: u64 = run.results.iter().map(|r| r.errors).sum();
    let ok: u64 = run.results.iter().map(|r| r.ok).sum();
    let first_error = run.results.iter().find_map(|r| r.first_error.clone());
    let mut latencies: Vec<u64> = run.results.into_iter().flat_map(|r| r.latencies_us).collect();
    latencies.sort_unstable();
    let elapsed_s = run.elapsed.as_secs_f64().max(1e-9);
    let throughput = ok as f64 / elapsed_s;
    let ms = |us: u64| us as f64 / 1000.0;
    let at = |p: f64| if latencies.is_empty() { 0.0 } else { ms(percentile(&latencies, p)) };
    let max = latencies.last().map_or(0.0, |&us| ms(us));
    let cpu_us_per_op = observed.cpu_s.map(|s| s * 1e6 / ok.max(1) as f64);
    if global.json {
        let mut fields = format!(
            "\"op\":\"{}\",\"clients\":{},\"pipeline\":{},\"value_size\":{},\"key_space\":{},\"distinct\":{},\
             \"ok\":{ok},\"errors\":{errors},\"elapsed_s\":{elapsed_s:.3},\"throughput_ops_s\":{throughput:.1}",
            if params.op == Op::Set { "set" } else { "get" },
            params.clients,
            params.pipeline,
            params.value_size,
            params.key_space,
            params.distinct,
        );
        for (name, p) in PERCENTILES {
            fields.push_str(&format!(",\"latency_ms_{name}\":{:.3}", at(p)));
        }
        fields.push_str(&format!(",\"latency_ms_max\":{max:.3},\"leader_changes\":{}", observed.leader_changes));
        if let Some(cpu) = cpu_us_per_op {
            fields.push_str(&format!(",\"server_cpu_us_per_op\":{cpu:.1}"));
        }
        println!("{{{fields}}}");
    } else {
        let ops = ok + errors;
        println!("ops={ops} ok={ok} errors={errors} elapsed={elapsed_s:.3}s throughput={throughput:.1} ops/s");
        println!(
            "latency (successful ops) ms: p50={:.3} p90={:.3} p99={:.3} p99.9={:.3} max={max:.3}",
            at(0.50),
            at(0.90),
            at(0.99),
            at(0.999)
        );
        if let (Some(cpu_s), Some(per_op)) = (observed.cpu_s, cpu_us_per_op) {
            println!("server cpu: {cpu_s:.2} s on {} nodes = {per_op:.1} µs per op", params.pids.len());
        }
        println!(
            "leader changes during the run: {} (leaders seen as (term, id): {:?})",
            observed.leader_changes, observed.leaders
        );
    }
    if let Some(error) = first_error {
        eprintln!("raftctl: first error: {error}");
        return Ok(EXIT_FAILED);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&values, 0.5), 500);
        assert_eq!(percentile(&values, 0.9), 900);
        assert_eq!(percentile(&values, 0.99), 990);
        assert_eq!(percentile(&values, 0.999), 999);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[1, 2], 0.5), 1);
    }
}
