//! `raftctl`: talk to a mini-raft cluster from the shell, start a local one, benchmark it, or run
//! chaos against one.
//!
//! ```text
//! raftctl [--cluster HOST:PORT,...] [--cluster-id N] [--timeout SECS] [--json] [-v] COMMAND ...
//! ```
//!
//! Exit status: 0 success; 1 a definite negative answer (`get` of a missing key, `cas` whose
//! expected value did not match); 2 bad usage; 3 the cluster could not answer (or a node died);
//! 4 a write's outcome is unknown (it may or may not have taken effect).
//!
//! Each invocation is one client with one session: the first write registers it (reads and
//! `status` need none), so a `raftctl set` costs one registration and one write in the log.

mod bench;
mod chaos;
mod cluster;
#[path = "../common/json.rs"]
mod json;
mod member;
mod output;
mod status;
mod watch;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use getopts::{Matches, Options, ParsingStyle};
use mini_raft::client::{Answered, CasFailed, Client, ClientError, ClientOptions};
use mini_raft::wire::ReadConsistency;

use output::json_string;

const DEFAULT_CLUSTER: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";
/// Longest accepted `--timeout`, in seconds (one day): anything longer is a typo.
const TIMEOUT_SECS_MAX: f64 = 86_400.0;
/// Longest single connect attempt; the whole call is still bounded by `--timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for one reply before the client retries elsewhere.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

const HELP: &str = "\
raftctl: client and tools for a mini-raft cluster

Usage: raftctl [GLOBAL OPTIONS] COMMAND [ARGS]

Commands:
  set KEY VALUE               store VALUE under KEY
  get KEY [--stale]           print the value of KEY (exit 1 if absent); --stale reads
                              from any node, possibly stale, instead of the leader
  del KEY                     delete KEY; prints whether it existed (exit 0 either way)
  cas KEY OLD NEW             store NEW if the value is OLD; on mismatch exit 1 and print
  cas --absent KEY NEW        the current value. --absent: store NEW only if KEY does not exist
  status                      ask every node of --cluster for its status; print a table
  member list | add ID ADDR [--learner] | promote ID | remove ID | replace OLD NEW ADDR
                              change the members through the leader (one joint step each);
                              waits until the change is committed and applied, then prints
                              the configuration: id, address, role, match index, lag
  transfer-leader [ID]        move leadership to ID (default: the most caught-up voter)
  watch [--interval SECS] [--once]
                              live dashboard: a row per node, throughput, commit latency,
                              leader and reachability events; q or Ctrl-C quits (default
                              interval 1 s; --once prints one frame and exits)
  cluster up --nodes N [--base-port P] [--data DIR] [--raftd PATH] [-- RAFTD ARGS...]
                              run N local raftd processes in the foreground until Ctrl-C
                              or until one of them exits (defaults: P 7001, DIR ./data,
                              raftd next to raftctl)
  bench [--clients C] [--ops N | --duration SECS] [--value-size B] [--op set|get]
        [--key-space K | --distinct] [--pipeline N] [--pids P,.. | --data DIR] [--stale]
                              C concurrent clients (each with N writes in flight with
                              --pipeline) run N operations in total, or for SECS, over K keys
                              or on keys never written before (--distinct); prints throughput,
                              p50/p90/p99/p99.9/max, the node processes' CPU per op (pids from
                              --pids or DIR/node-I.pid) and leader changes during the run
                              (defaults: C 4, N 10000, B 100, set, K 1000, pipeline 1)
  chaos [--nodes 3|5] [--duration SECS] [--clients W] [--faults LIST] [--seed S]
        [--operations N] [--keys K] [--overlap] [--hold MIN-MAX] [--quiet MIN-MAX]
        [--keep] [--data DIR] [--raftd PATH] [--snapshot-every N] [--clock-skew PCT]
        [--check-steps N]
                              start N raftd nodes behind per-link fault proxies, inject the
                              seeded fault schedule while W clients run set/get/del/cas on K
                              keys, then check the history for linearizability and lost
                              acknowledged writes. LIST: all (default), none, or some of
                              kill,pause,restart,power,partition,delay,drop,bandwidth,oneway.
                              Exit 0 pass, 1 a violation, 4 the checker ran out of budget
                              (defaults: 3 nodes, 30 s, 4 clients, 5 keys, hold 0.5-3 s,
                              quiet 0.3-2 s, seed from the clock)

Global options (also accepted after the command):
  --cluster HOST:PORT,...     the nodes (default 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003)
  --cluster-id N              the cluster id to expect (default 1)
  --timeout SECS              give up on a command after SECS seconds (default 5; fractions ok)
  --json                      print results as JSON (one object per line)
  -v, --verbose               say on stderr which node answered
  -h, --help                  print this help

Keys and values are taken as given (UTF-8). A value starting with '-' goes after '--':
  raftctl set counter -- -5

Each invocation opens one client session (registered through the log before its first
write); reads and status need none.

Exit status: 0 success; 1 key not found (get) or compare failed (cas); 2 bad usage;
3 the cluster did not answer, refused the request, or a node of `cluster up` died (a write
  that was never sent); 4 outcome unknown: the write was sent but no definite answer came
  (the cluster forgot the session, or the timeout passed); it may or may not have taken
  effect: read the key back before assuming either.
";

/// Why raftctl stops early: bad usage (exit 2), a failure (exit 3), or a write whose outcome is
/// unknown (exit 4).
#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Failed(String),
    OutcomeUnknown(String),
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> CliError {
        if error.is_outcome_unknown() {
            CliError::OutcomeUnknown(error.to_string())
        } else {
            CliError::Failed(error.to_string())
        }
    }
}

pub const EXIT_NEGATIVE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_FAILED: u8 = 3;
pub const EXIT_OUTCOME_UNKNOWN: u8 = 4;

/// `raftctl status | head` closes stdout early; `println!` then panics with a backtrace. Exit
/// as a tool killed by SIGPIPE would (128 + 13), silently. SIGPIPE itself stays ignored: socket
/// writes must fail with EPIPE, not kill the process.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
}

/// The options every command understands.
pub struct Global {
    pub cluster: Vec<String>,
    pub client: ClientOptions,
    pub json: bool,
    pub verbose: bool,
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(CliError::Usage(message)) => {
            eprintln!("raftctl: {message}\nRun 'raftctl --help' for usage.");
            ExitCode::from(EXIT_USAGE)
        }
        Err(CliError::Failed(message)) => {
            eprintln!("raftctl: {message}");
            ExitCode::from(EXIT_FAILED)
        }
        Err(CliError::OutcomeUnknown(message)) => {
            eprintln!("raftctl: outcome unknown: {message}");
            ExitCode::from(EXIT_OUTCOME_UNKNOWN)
        }
    }
}

fn run(args: &[std::ffi::OsString]) -> Result<u8, CliError> {
    let mut options = Options::new();
    add_global_options(&mut options);
    options.parsing_style(ParsingStyle::StopAtFirstFree);
    let first = options.parse(args).map_err(|error| CliError::Usage(error.to_string()))?;
    if first.opt_present("help") {
        print!("{HELP}");
        return Ok(0);
    }
    let Some((command, rest)) = first.free.split_first() else {
        return Err(CliError::Usage("no command given".to_string()));
    };
    match command.as_str() {
        "set" | "get" | "del" | "cas" => kv_command(command, rest, &first),
        "status" => {
            let (_, global) = parse_command(rest, &first, |_| {})?;
            status::run(&global)
        }
        "cluster" => cluster::run(rest, &first),
        "member" => member::run(rest, &first),
        "transfer-leader" => member::transfer(rest, &first),
        "watch" => watch::run(rest, &first),
        "bench" => bench::run(rest, &first),
        "chaos" => chaos::run(rest, &first),
        "help" => {
            print!("{HELP}");
            Ok(0)
        }
        other => Err(CliError::Usage(format!("unknown command '{other}'"))),
    }
}

pub fn add_global_options(options: &mut Options) {
    options
        .optopt("", "cluster", "node addresses", "HOST:PORT,...")
        .optopt("", "cluster-id", "cluster id", "N")
        .optopt("", "timeout", "seconds per command", "SECS")
        .optflag("", "json", "JSON output")
        .optflag("v", "verbose", "say which node answered")
        .optflag("h", "help", "print help");
}

/// Parses a command's arguments (its own options plus the global ones, which override those given
/// before the command) and returns them with the merged global settings.
pub fn parse_command(
    args: &[String],
    before: &Matches,
    add_options: impl FnOnce(&mut Options),
) -> Result<(Matches, Global), CliError> {
    let mut options = Options::new();
    add_global_options(&mut options);
    add_options(&mut options);
    let matches = options.parse(args).map_err(|error| CliError::Usage(error.to_string()))?;
    let global = global_settings(before, &matches)?;
    Ok((matches, global))
}

fn global_settings(before: &Matches, after: &Matches) -> Result<Global, CliError> {
    let value = |name: &str| after.opt_str(name).or_else(|| before.opt_str(name));
    let flag = |name: &str| after.opt_present(name) || before.opt_present(name);
    let cluster = parse_cluster(&value("cluster").unwrap_or_else(|| DEFAULT_CLUSTER.to_string()))?;
    let mut client = ClientOptions::default();
    if let Some(text) = value("cluster-id") {
        client.cluster_id = parse_number(&text, "--cluster-id")?;
    }
    if let Some(text) = value("timeout") {
        client.deadline = parse_timeout(&text)?;
    }
    client.connect_timeout = CONNECT_TIMEOUT.min(client.deadline);
    client.request_timeout = REQUEST_TIMEOUT.min(client.deadline);
    Ok(Global { cluster, client, json: flag("json"), verbose: flag("verbose") })
}

fn parse_cluster(text: &str) -> Result<Vec<String>, CliError> {
    let mut cluster = Vec::new();
    for addr in text.split(',').map(str::trim).filter(|addr| !addr.is_empty()) {
        let port_ok = addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(CliError::Usage(format!("--cluster: '{addr}' is not HOST:PORT")));
        }
        if !cluster.iter().any(|known| known == addr) {
            cluster.push(addr.to_string());
        }
    }
    if cluster.is_empty() {
        return Err(CliError::Usage("--cluster: no addresses given".to_string()));
    }
    Ok(cluster)
}

pub fn parse_number<T: std::str::FromStr>(text: &str, flag: &str) -> Result<T, CliError> {
    text.trim().parse().map_err(|_| CliError::Usage(format!("{flag}: '{text}' is not a valid number")))
}

fn parse_timeout(text: &str) -> Result<Duration, CliError> {
    let secs: f64 = parse_number(text, "--timeout")?;
    if !(secs > 0.0 && secs <= TIMEOUT_SECS_MAX) {
        return Err(CliError::Usage(format!("--timeout: {text} is not between 0 and {TIMEOUT_SECS_MAX} seconds")));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Checks the number of positional arguments of `command`.
fn positional<'a>(command: &str, free: &'a [String], names: &[&str]) -> Result<&'a [String], CliError> {
    if free.len() != names.len() {
        let expected = names.join(" ");
        return Err(CliError::Usage(format!("{command} takes {expected}, got {} argument(s)", free.len())));
    }
    Ok(free)
}

fn kv_command(command: &str, args: &[String], before: &Matches) -> Result<u8, CliError> {
    let (matches, global) = parse_command(args, before, |options| {
        if command == "get" {
            options.optflag("", "stale", "read from any node");
        }
        if command == "cas" {
            options.optflag("", "absent", "the key must not exist");
        }
    })?;
    let free = &matches.free;
    // Check every argument before the first byte goes to the cluster.
    let args = match command {
        "set" => positional("set", free, &["KEY", "VALUE"])?,
        "get" | "del" => positional(command, free, &["KEY"])?,
        _ if matches.opt_present("absent") => positional("cas --absent", free, &["KEY", "NEW"])?,
        _ => positional("cas", free, &["KEY", "OLD", "NEW"])?,
    };
    let key = args[0].as_bytes();
    let mut client = Client::new(global.cluster.clone(), global.client.clone())?;
    match command {
        "set" => {
            let answer = client.set(key, args[1].as_bytes())?;
            report_node(&global, &answer);
            print_line(&global, "OK", &format!("{{\"ok\":true,\"node_id\":{}}}", answer.node_id));
            Ok(0)
        }
        "get" => {
            let stale = matches.opt_present("stale");
            let consistency = if stale { ReadConsistency::Local } else { ReadConsistency::Linearizable };
            let answer = client.get(key, consistency)?;
            report_node(&global, &answer);
            print_value(&global, key, answer.value.as_deref())
        }
        "del" => {
            let answer = client.delete(key)?;
            report_node(&global, &answer);
            let text = if answer.value { "deleted" } else { "not found (nothing to delete)" };
            print_line(&global, text, &format!("{{\"key\":{},\"existed\":{}}}", json_string(key), answer.value));
            Ok(0)
        }
        _ => {
            let (expected, new) = if args.len() == 2 { (None, &args[1]) } else { (Some(args[1].as_bytes()), &args[2]) };
            let answer = client.cas(key, expected, new.as_bytes())?;
            report_node(&global, &answer);
            Ok(print_cas(&global, answer.value))
        }
    }
}

fn print_cas(global: &Global, outcome: Result<(), CasFailed>) -> u8 {
    let Err(failed) = outcome else {
        print_line(global, "OK", "{\"ok\":true}");
        return 0;
    };
    let current = failed.current.as_deref();
    if global.json {
        let current_json = current.map_or_else(|| "null".to_string(), json_string);
        println!("{{\"ok\":false,\"current\":{current_json}}}");
    } else {
        match current {
            Some(value) => {
                eprintln!("cas failed: the current value is:");
                write_value(value);
            }
            None => eprintln!("cas failed: the key does not exist"),
        }
    }
    EXIT_NEGATIVE
}

fn print_value(global: &Global, key: &[u8], value: Option<&[u8]>) -> Result<u8, CliError> {
    if global.json {
        let value_json = value.map_or_else(|| "null".to_string(), json_string);
        println!("{{\"key\":{},\"found\":{},\"value\":{value_json}}}", json_string(key), value.is_some());
    }
    match value {
        Some(value) => {
            if !global.json {
                write_value(value);
            }
            Ok(0)
        }
        None => {
            eprintln!("not found");
            Ok(EXIT_NEGATIVE)
        }
    }
}

/// The raw value bytes and a newline on stdout.
fn write_value(value: &[u8]) {
    let mut stdout = io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = stdout.write_all(value).and_then(|_| stdout.write_all(b"\n"));
}

fn print_line(global: &Global, text: &str, json: &str) {
    if global.json {
        println!("{json}");
    } else {
        println!("{text}");
    }
}

fn report_node<T>(global: &Global, answer: &Answered<T>) {
    if global.verbose {
        eprintln!("answered by node {} at {}", answer.node_id, answer.addr);
    }
}
