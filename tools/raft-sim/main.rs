//! `raft-sim`: runs real nodes (consensus core, replica glue, WAL and snapshot store on simulated
//! disks, start-up recovery) and clients running the real client rules, in a seeded simulated
//! world with crashes, power cuts, partitions, pauses, lost and corrupted messages, failing and
//! full disks and latent disk damage; checks Raft's safety properties and the node's promises after
//! every step and the clients' history for linearizability at the end. See `world.rs` for the
//! world, `node.rs` for a node, `net.rs` for the network, `clients.rs` for the clients and
//! `checker.rs` for the properties.
//!
//! ```text
//! raft-sim --seeds N [--start S] [--nodes 3|5] [--steps K] [--jobs J]   # seeds S..S+N
//! raft-sim --seed S [--nodes 3|5] [--steps K] [--trace]                 # replay one seed
//! add --membership to either: spare nodes join, members are added, promoted, removed and
//! replaced, and leadership moves, under every fault
//! ```
//! Exit status 0 only when no seed broke a property. Output depends on the seed only.

mod checker;
mod clients;
mod membership;
mod net;
mod node;
mod world;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use world::{SimOptions, Stats, World};

const STEPS_DEFAULT: u64 = 2_000;

struct Outcome {
    seed: u64,
    stats: Stats,
    /// The violation report, if any (already formatted, trace included).
    failure: Option<String>,
    trace: Vec<String>,
}

fn run_seed(seed: u64, nodes: u64, steps: u64, full_trace: bool, membership: bool) -> Outcome {
    let mut world = World::new(SimOptions { nodes, steps, seed, full_trace, membership });
    // A panic in the node code (a broken invariant the code asserts) is a violation of this
    // seed like any other, reported with its trace.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.run()));
    let result = result.unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic with no message".into());
        Err(world.violation_now("no panic", text))
    });
    let failure = result.err().map(|v| {
        let mut report = format!(
            "VIOLATION seed={} nodes={nodes} step={} property={}\n  {}\n  replay: raft-sim --seed {} --nodes {nodes} --steps {steps}{}\n  last events:\n",
            v.seed, v.step, v.property, v.detail, v.seed, if membership { " --membership" } else { "" }
        );
        for line in world.trace() {
            report.push_str("    ");
            report.push_str(line);
            report.push('\n');
        }
        report
    });
    let trace = if full_trace { world.trace().cloned().collect() } else { Vec::new() };
    Outcome { seed, stats: world.stats.clone(), failure, trace }
}

fn parse_u64(matches: &getopts::Matches, name: &str, default: u64) -> Result<u64, String> {
    match matches.opt_str(name) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| format!("--{name} needs a non-negative integer, got {text:?}")),
    }
}

fn main() -> ExitCode {
    let mut opts = getopts::Options::new();
    opts.optopt("", "seeds", "run this many seeds", "N");
    opts.optopt("", "start", "first seed of a --seeds run (default 0)", "S");
    opts.optopt("", "seed", "replay one seed, printing its summary", "S");
    opts.optopt("", "nodes", "cluster size: 3 or 5 (default 3)", "N");
    opts.optopt("", "steps", "ticks of chaos per seed before healing (default 2000)", "K");
    opts.optopt("", "jobs", "threads for a --seeds run (default: available cores)", "J");
    opts.optflag("", "trace", "with --seed: print every event of the run");
    opts.optflag(
        "",
        "membership",
        "random membership changes and leadership transfers, with spare nodes that join (see membership.rs)",
    );
    opts.optflag("h", "help", "print this help");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = opts.usage("Usage: raft-sim (--seeds N | --seed S) [options]");
    let matches = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("raft-sim: {e}\n{usage}");
            return ExitCode::from(2);
        }
    };
    if matches.opt_present("help") {
        print!("{usage}");
        return ExitCode::SUCCESS;
    }
    match run(&matches) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("raft-sim: {e}\n{usage}");
            ExitCode::from(2)
        }
    }
}

fn run(matches: &getopts::Matches) -> Result<bool, String> {
    let nodes = parse_u64(matches, "nodes", 3)?;
    if nodes != 3 && nodes != 5 {
        return Err(format!("--nodes must be 3 or 5, got {nodes}"));
    }
    let steps = parse_u64(matches, "steps", STEPS_DEFAULT)?;
    let membership = matches.opt_present("membership");
    if steps == 0 {
        return Err("--steps must be positive".into());
    }
    if let Some(seed) = matches.opt_str("seed") {
        let seed: u64 = seed.parse().map_err(|_| format!("--seed needs a non-negative integer, got {seed:?}"))?;
        let full_trace = matches.opt_present("trace");
        if full_trace {
            // The nodes' own warnings (recovery, refused snapshots) go to stderr, beside the trace.
            let _ = simplelog::SimpleLogger::init(log::LevelFilter::Warn, simplelog::Config::default());
        }
        let outcome = run_seed(seed, nodes, steps, full_trace, membership);
        if let Some(report) = &outcome.failure {
            print!("{report}");
        } else if full_trace {
            for line in &outcome.trace {
                println!("    {line}");
            }
        }
        println!(
            "seed={seed} nodes={nodes} steps={steps} violations={} {}",
            u8::from(outcome.failure.is_some()),
            counters(&outcome.stats)
        );
        return Ok(outcome.failure.is_none());
    }
    let Some(_) = matches.opt_str("seeds") else {
        return Err("give --seeds N or --seed S".into());
    };
    let count = parse_u64(matches, "seeds", 0)?;
    let start = parse_u64(matches, "start", 0)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let jobs = parse_u64(matches, "jobs", cores)?.clamp(1, 64);
    let next = AtomicU64::new(start);
    let end = start.saturating_add(count);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let outcome = run_seed(seed, nodes, steps, false, membership);
                if let Ok(mut all) = outcomes.lock() {
                    all.push(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().map_err(|_| "a simulation thread panicked".to_string())?;
    outcomes.sort_by_key(|o| o.seed);
    let mut total = Stats::default();
    let mut violations = 0u64;
    for outcome in &outcomes {
        if let Some(report) = &outcome.failure {
            violations += 1;
            print!("{report}");
        }
        total.add(&outcome.stats);
    }
    println!("seeds={} nodes={nodes} steps={steps} violations={violations} {}", outcomes.len(), counters(&total));
    Ok(violations == 0 && outcomes.len() as u64 == count)
}

/// The counters of a run, `name=value` separated by spaces, in a fixed order.
fn counters(s: &Stats) -> String {
    s.named().iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join(" ")
}
