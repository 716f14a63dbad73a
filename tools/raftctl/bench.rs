//! `raftctl bench`: C client threads, each with its own [`Client`] (its own session), run N
//! operations in total against K keys; prints throughput and exact latency percentiles.
//!
//! Latencies are measured per successful operation (retries included) and sorted; the p-th
//! percentile is the nearest-rank value: element `ceil(p * n) - 1` of the sorted list.

use mini_raft::raft::rng::Rng;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use getopts::Matches;
use mini_raft::client::Client;
use mini_raft::wire::{ReadConsistency, VALUE_BYTES_MAX};

use crate::{parse_command, parse_number, CliError, Global, EXIT_FAILED};

const CLIENTS_DEFAULT: usize = 4;
const CLIENTS_MAX: usize = 1024;
const OPS_DEFAULT: u64 = 10_000;
const VALUE_SIZE_DEFAULT: usize = 100;
const KEYS_DEFAULT: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Set,
    Get,
}

struct Params {
    clients: usize,
    ops: u64,
    value_size: usize,
    op: Op,
    keys: u64,
    consistency: ReadConsistency,
}

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    /// Connecting or pre-populating failed: the worker ran no timed operations.
    setup_error: Option<String>,
}

pub fn run(args: &[String], before: &Matches) -> Result<u8, CliError> {
    let (matches, global) = parse_command(args, before, |options| {
        options
            .optopt("", "clients", "concurrent clients", "C")
            .optopt("", "ops", "total operations", "N")
            .optopt("", "value-size", "value bytes", "B")
            .optopt("", "op", "set or get", "OP")
            .optopt("", "keys", "distinct keys", "K")
            .optflag("", "stale", "local reads for --op get");
    })?;
    if !matches.free.is_empty() {
        return Err(CliError::Usage(format!("bench takes no arguments, got {:?}", matches.free)));
    }
    let params = parse_params(&matches)?;
    let consistency = if params.consistency == ReadConsistency::Local { "local" } else { "linearizable" };
    println!(
        "bench: op={} clients={} ops={} value_size={} keys={} consistency={consistency} cluster={} timeout={:.1}s",
        if params.op == Op::Set { "set" } else { "get" },
        params.clients,
        params.ops,
        params.value_size,
        params.keys,
        global.cluster.join(","),
        global.client.deadline.as_secs_f64(),
    );
    let (results, elapsed) = run_workers(&global, &params);
    report(&global, &params, results, elapsed)
}

fn parse_params(matches: &Matches) -> Result<Params, CliError> {
    fn opt<T: std::str::FromStr>(matches: &Matches, name: &str, default: T) -> Result<T, CliError> {
        matches.opt_str(name).map_or(Ok(default), |text| parse_number(&text, &format!("--{name}")))
    }
    let params = Params {
        clients: opt(matches, "clients", CLIENTS_DEFAULT)?,
        ops: opt(matches, "ops", OPS_DEFAULT)?,
        value_size: opt(matches, "value-size", VALUE_SIZE_DEFAULT)?,
        op: match matches.opt_str("op").as_deref() {
            None | Some("set") => Op::Set,
            Some("get") => Op::Get,
            Some(other) => return Err(CliError::Usage(format!("--op: '{other}' is not set or get"))),
        },
        keys: opt(matches, "keys", KEYS_DEFAULT)?,
        consistency: if matches.opt_present("stale") { ReadConsistency::Local } else { ReadConsistency::Linearizable },
    };
    if !(1..=CLIENTS_MAX).contains(&params.clients) {
        return Err(CliError::Usage(format!("--clients must be between 1 and {CLIENTS_MAX}")));
    }
    if params.ops == 0 || params.keys == 0 {
        return Err(CliError::Usage("--ops and --keys must be at least 1".to_string()));
    }
    if params.value_size > VALUE_BYTES_MAX {
        return Err(CliError::Usage(format!("--value-size must be at most {VALUE_BYTES_MAX}")));
    }
    Ok(params)
}

/// Runs the workers; the clock starts when all of them are connected (and, for `get`, have
/// written their share of the keys) and stops when the last one finishes.
fn run_workers(global: &Global, params: &Params) -> (Vec<WorkerResult>, Duration) {
    let start_line = Barrier::new(params.clients + 1);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..params.clients)
            .map(|worker| {
                let share = params.ops / params.clients as u64
                    + u64::from((worker as u64) < params.ops % params.clients as u64);
                let start_line = &start_line;
                scope.spawn(move || work(global, params, worker, share, start_line))
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
        (results, started.elapsed())
    })
}

fn work(global: &Global, params: &Params, worker: usize, share: u64, start_line: &Barrier) -> WorkerResult {
    let mut result = WorkerResult { latencies_us: Vec::with_capacity(share as usize), ..WorkerResult::default() };
    let value = vec![b'v'; params.value_size];
    let setup = Client::connect(global.cluster.clone(), global.client.clone()).map_err(|e| e.to_string());
    let setup = setup.and_then(|mut client| {
        if params.op == Op::Get {
            // Pre-populate this worker's slice of the keys so that gets find values.
            for key in (worker as u64..params.keys).step_by(params.clients) {
                client.set(key_name(key).as_bytes(), &value).map_err(|e| format!("pre-populating: {e}"))?;
            }
        }
        Ok(client)
    });
    start_line.wait();
    let mut client = match setup {
        Ok(client) => client,
        Err(error) => {
            result.setup_error = Some(error);
            return result;
        }
    };
    let mut rng = Rng::new(worker as u64 + 1);
    for _ in 0..share {
        let key = key_name(rng.range(0, params.keys.max(1)));
        let started = Instant::now();
        let outcome = match params.op {
            Op::Set => client.set(key.as_bytes(), &value).map(|_| ()),
            Op::Get => client.get(key.as_bytes(), params.consistency).map(|_| ()),
        };
        match outcome {
            Ok(()) => result.latencies_us.push(started.elapsed().as_micros() as u64),
            Err(error) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    result
}

fn key_name(index: u64) -> String {
    format!("bench-{index:08}")
}

/// Nearest-rank percentile of sorted `values` (non-empty), `p` in (0, 1].
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(global: &Global, params: &Params, results: Vec<WorkerResult>, elapsed: Duration) -> Result<u8, CliError> {
    if let Some(error) = results.iter().find_map(|r| r.setup_error.clone()) {
        return Err(CliError::Failed(format!("bench could not start: {error}")));
    }
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let first_error = results.iter().find_map(|r| r.first_error.clone());
    let mut latencies: Vec<u64> = results.into_iter().flat_map(|r| r.latencies_us).collect();
    latencies.sort_unstable();
    let ok = latencies.len() as u64;
    let throughput = ok as f64 / elapsed.as_secs_f64().max(1e-9);
    let ms = |us: u64| us as f64 / 1000.0;
    let (p50, p99, p999, max) = if latencies.is_empty() {
        (0, 0, 0, 0)
    } else {
        (
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 0.999),
            latencies[latencies.len() - 1],
        )
    };
    if global.json {
        println!(
            "{{\"op\":\"{}\",\"clients\":{},\"ops\":{},\"value_size\":{},\"keys\":{},\"ok\":{ok},\"errors\":{errors},\
             \"elapsed_s\":{:.3},\"throughput_ops_s\":{throughput:.1},\"latency_ms_p50\":{:.3},\"latency_ms_p99\":{:.3},\
             \"latency_ms_p999\":{:.3},\"latency_ms_max\":{:.3}}}",
            if params.op == Op::Set { "set" } else { "get" },
            params.clients,
            params.ops,
            params.value_size,
            params.keys,
            elapsed.as_secs_f64(),
            ms(p50),
            ms(p99),
            ms(p999),
            ms(max)
        );
    } else {
        println!(
            "ops={} ok={ok} errors={errors} elapsed={:.3}s throughput={throughput:.1} ops/s",
            params.ops,
            elapsed.as_secs_f64()
        );
        println!(
            "latency (successful ops) ms: p50={:.3} p99={:.3} p99.9={:.3} max={:.3}",
            ms(p50),
            ms(p99),
            ms(p999),
            ms(max)
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
        assert_eq!(percentile(&values, 0.99), 990);
        assert_eq!(percentile(&values, 0.999), 999);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[1, 2], 0.5), 1);
    }
}
