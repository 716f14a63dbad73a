//! `raftctl chaos`: real `raftd` processes behind per-link fault proxies, a seeded nemesis, client
//! load with every operation recorded, and a linearizability check of the whole history.
//!
//! Rooms: `options` (the command line), `run` (one run, start to end, and the run directory),
//! `procs` (the raftd processes and their signals), `proxy` (one directed link's TCP proxy and its
//! faults), `mesh` (every link's proxy and the faults on them), `nemesis` (the seeded fault
//! schedule), `executor` (carrying the schedule out, resolving the leader at run time),
//! `workload` (the clients and their history), `verify` (the checks after healing),
//! `report` (the summary and the violation with its timeline).
//!
//! Invariants: the same seed gives the same schedule; every fault is healed before the checks;
//! a run passes only if the history is linearizable, no acknowledged write is lost, every replica
//! holds the final values, and no node crashed or stopped uncleanly.

mod executor;
mod mesh;
pub mod nemesis;
mod options;
mod procs;
pub mod proxy;
mod report;
mod run;
mod verify;
mod workload;

use getopts::Matches;

use crate::CliError;

/// `raftctl chaos ...`: parses the flags, runs, and returns the exit status.
pub fn run(args: &[String], before: &Matches) -> Result<u8, CliError> {
    let Some(config) = options::parse(args, before)? else {
        print!("{}", options::HELP);
        return Ok(0);
    };
    run::run(&config)
}
