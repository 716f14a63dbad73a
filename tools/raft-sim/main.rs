//! `raft-sim`: runs real consensus cores in a seeded, simulated world and checks Raft's safety
//! properties after every step. See `world.rs` for the world and `checker.rs` for the properties.
//!
//! ```text
//! raft-sim --seeds N [--start S] [--nodes 3|5] [--steps K] [--jobs J]   # seeds S..S+N
//! raft-sim --seed S [--nodes 3|5] [--steps K]                           # replay one seed
//! ```
//! Exit status 0 only when no seed broke a property. Output depends on the seed only.

mod checker;
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
}

fn run_seed(seed: u64, nodes: u64, steps: u64) -> Outcome {
    let mut world = World::new(SimOptions { nodes, steps, seed });
    let failure = world.run().err().map(|v| {
        let mut report = format!(
            "VIOLATION seed={} nodes={nodes} step={} property={}\n  {}\n  replay: raft-sim --seed {} --nodes {nodes} --steps {steps}\n  last events:\n",
            v.seed, v.step, v.property, v.detail, v.seed
        );
        for line in world.trace() {
            report.push_str("    ");
            report.push_str(line);
            report.push('\n');
        }
        report
    });
    Outcome { seed, stats: world.stats.clone(), failure }
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
    if steps == 0 {
        return Err("--steps must be positive".into());
    }
    if let Some(seed) = matches.opt_str("seed") {
        let seed: u64 = seed.parse().map_err(|_| format!("--seed needs a non-negative integer, got {seed:?}"))?;
        let outcome = run_seed(seed, nodes, steps);
        if let Some(report) = &outcome.failure {
            print!("{report}");
        }
        let s = &outcome.stats;
        println!(
            "seed={seed} nodes={nodes} steps={steps} violations={} elections={} commits={} reads={} snapshots_installed={} crashes={} loads={}",
            u8::from(outcome.failure.is_some()),
            s.elections,
            s.commits,
            s.reads,
            s.snapshots_installed,
            s.crashes,
            s.loads
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
                let outcome = run_seed(seed, nodes, steps);
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
        let s = &outcome.stats;
        total.elections += s.elections;
        total.commits += s.commits;
        total.reads += s.reads;
        total.snapshots_installed += s.snapshots_installed;
        total.crashes += s.crashes;
        total.loads += s.loads;
    }
    println!(
        "seeds={} nodes={nodes} steps={steps} violations={violations} elections={} commits={} reads={} snapshots_installed={} crashes={} loads={}",
        outcomes.len(),
        total.elections,
        total.commits,
        total.reads,
        total.snapshots_installed,
        total.crashes,
        total.loads
    );
    Ok(violations == 0 && outcomes.len() as u64 == count)
}
