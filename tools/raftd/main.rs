//! `raftd`: one mini-raft node. See `raftd --help`.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use log::LevelFilter;
use mini_raft::limits::ENTRY_BYTES_MAX;
use mini_raft::server::{parse_addr_map, parse_peers, Node, NodeConfig};
use mini_raft::storage::segment::segment_bytes_min;
use simplelog::{ColorChoice, CombinedLogger, ConfigBuilder, SharedLogger, TermLogger, TerminalMode, WriteLogger};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = getopts::Options::new();
    opts.optopt("", "id", "this node's id (a positive integer, one of --peers)", "N");
    opts.optopt("", "listen", "address to serve peers and clients on", "HOST:PORT");
    opts.optopt(
        "",
        "peers",
        "every member, this node included (the bootstrap configuration); with --join: existing members",
        "1=HOST:PORT,2=HOST:PORT,...",
    );
    opts.optflag(
        "",
        "join",
        "join a running cluster: no configuration and no election of its own; waits to be added \
         (raftctl member add ID ADDR --learner) and catches up from the leader",
    );
    opts.optopt(
        "",
        "http-listen",
        "also serve HTTP GET /metrics (Prometheus), /status (JSON) and /health here (default: off)",
        "HOST:PORT",
    );
    opts.optopt(
        "",
        "client-addrs",
        "where each member serves clients, named in NotLeader redirects (default: its --peers address)",
        "1=HOST:PORT,...",
    );
    opts.optopt("", "data-dir", "directory for the log and snapshots (created if missing)", "DIR");
    opts.optopt(
        "",
        "cluster-id",
        "cluster identity; peers and clients of another cluster are refused (default 1)",
        "N",
    );
    opts.optopt(
        "",
        "metrics",
        "on: update counters and histograms (default); off: only state gauges, to measure the cost",
        "on|off",
    );
    opts.optopt(
        "",
        "wal-sync",
        "loop: a ready batch is synced on the event loop when the WAL thread is idle (default); \
         thread: always on the WAL thread (two thread hand-offs per batch, the loop never waits for a sync)",
        "loop|thread",
    );
    opts.optopt("", "tick-ms", "length of one logical tick in milliseconds (default 10)", "MS");
    opts.optopt("", "heartbeat-ticks", "leader heartbeat interval in ticks (default 5 = 50 ms)", "N");
    opts.optopt("", "election-ticks", "base election timeout in ticks, randomized up to twice that (default 15)", "N");
    opts.optopt(
        "",
        "snapshot-log-mib",
        "snapshot once the log since the last one holds max(this many MiB, the last image's size) (default 64)",
        "N",
    );
    opts.optopt("", "snapshot-every", "...or after this many applied entries, whichever first (default: off)", "N");
    opts.optopt("", "log-window-mib", "MiB of applied entries kept in memory for followers (default 16)", "N");
    opts.optopt("", "segment-mib", "WAL segment size in MiB (default 64)", "N");
    opts.optopt(
        "",
        "sessions-max",
        "client sessions remembered; the least recently active is evicted beyond it (default 10000)",
        "N",
    );
    opts.optopt("", "log-level", "error, warn, info, debug or trace (default info)", "LEVEL");
    opts.optopt("", "log-file", "also append the log to this file", "PATH");
    opts.optflag("h", "help", "print this help");
    let usage = opts.usage("Usage: raftd --id N --listen HOST:PORT --peers 1=HOST:PORT,... --data-dir DIR [options]");
    let matches = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => return fail(&format!("{e}\n\n{usage}"), 2),
    };
    if matches.opt_present("help") {
        print!("{usage}");
        return ExitCode::SUCCESS;
    }
    if !matches.free.is_empty() {
        return fail(&format!("unexpected argument {:?}\n\n{usage}", matches.free[0]), 2);
    }
    let cfg = match config_from(&matches) {
        Ok(cfg) => cfg,
        Err(e) => return fail(&format!("{e}\n\n{usage}"), 2),
    };
    if let Err(e) = init_logging(&matches) {
        return fail(&e, 2);
    }
    let node = match Node::start(cfg) {
        Ok(node) => node,
        Err(e) => return fail(&e.to_string(), 1),
    };
    match node.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            fail(&e, 1)
        }
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("raftd: {message}");
    ExitCode::from(code)
}

fn required(matches: &getopts::Matches, name: &str) -> Result<String, String> {
    matches.opt_str(name).ok_or_else(|| format!("--{name} is required"))
}

fn number<T: std::str::FromStr>(matches: &getopts::Matches, name: &str, default: T) -> Result<T, String> {
    match matches.opt_str(name) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| format!("--{name} needs a non-negative integer, got {text:?}")),
    }
}

/// A size flag in MiB, as bytes; at most 1 TiB.
fn mib(matches: &getopts::Matches, name: &str, default: u64) -> Result<u64, String> {
    let value: u64 = number(matches, name, default)?;
    if value > 1 << 20 {
        return Err(format!("--{name} {value} is more than 1 TiB"));
    }
    Ok(value << 20)
}

fn config_from(matches: &getopts::Matches) -> Result<NodeConfig, String> {
    let id: u64 = required(matches, "id")?.parse().map_err(|_| "--id needs a positive integer".to_string())?;
    let listen_text = required(matches, "listen")?;
    let listen = listen_text.parse().map_err(|_| format!("--listen {listen_text:?} is not an IP:PORT address"))?;
    let peers = parse_peers(&required(matches, "peers")?)?;
    let http_listen = match matches.opt_str("http-listen") {
        None => None,
        Some(text) => Some(text.parse().map_err(|_| format!("--http-listen {text:?} is not an IP:PORT address"))?),
    };
    let client_addrs = match matches.opt_str("client-addrs") {
        Some(text) => parse_addr_map(&text, "--client-addrs")?,
        None => Default::default(),
    };
    let data_dir = PathBuf::from(required(matches, "data-dir")?);
    let segment_mib: u64 = number(matches, "segment-mib", 64)?;
    // A segment must hold the largest entry the state machine accepts, or a replicated entry
    // could be impossible to persist.
    let min_bytes = segment_bytes_min(ENTRY_BYTES_MAX);
    let min_mib = min_bytes.div_ceil(1 << 20);
    if !(min_mib..=1024).contains(&segment_mib) {
        return Err(format!(
            "--segment-mib must be between {min_mib} and 1024, got {segment_mib} (a segment must hold the largest \
             entry, {ENTRY_BYTES_MAX} bytes, with its header and commit record: at least {min_bytes} bytes)"
        ));
    }
    let cfg = NodeConfig {
        id,
        cluster_id: number(matches, "cluster-id", 1)?,
        listen,
        http_listen,
        metrics_updates: match matches.opt_str("metrics").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => return Err(format!("--metrics must be on or off, got {other:?}")),
        },
        wal_on_loop: match matches.opt_str("wal-sync").as_deref() {
            None | Some("loop") => true,
            Some("thread") => false,
            Some(other) => return Err(format!("--wal-sync must be loop or thread, got {other:?}")),
        },
        peers,
        client_addrs,
        data_dir,
        tick: Duration::from_millis(number(matches, "tick-ms", 10)?),
        heartbeat_ticks: number(matches, "heartbeat-ticks", 5)?,
        election_ticks: number(matches, "election-ticks", 15)?,
        snapshot_every: number(matches, "snapshot-every", u64::MAX)?,
        snapshot_log_bytes: mib(matches, "snapshot-log-mib", 64)?,
        log_window_bytes: mib(matches, "log-window-mib", 16)?,
        segment_bytes: segment_mib << 20,
        sessions_max: number(matches, "sessions-max", mini_raft::kv::SESSIONS_MAX_DEFAULT)?,
        join: matches.opt_present("join"),
    };
    cfg.validate()?;
    Ok(cfg)
}

fn init_logging(matches: &getopts::Matches) -> Result<(), String> {
    let level = match matches.opt_str("log-level").as_deref().unwrap_or("info") {
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        other => return Err(format!("--log-level {other:?} is not one of error, warn, info, debug, trace")),
    };
    let config = ConfigBuilder::new().set_time_format_rfc3339().build();
    let mut loggers: Vec<Box<dyn SharedLogger>> =
        vec![TermLogger::new(level, config.clone(), TerminalMode::Stderr, ColorChoice::Never)];
    if let Some(path) = matches.opt_str("log-file") {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open --log-file {path}: {e}"))?;
        loggers.push(WriteLogger::new(level, config, file));
    }
    CombinedLogger::init(loggers).map_err(|e| format!("cannot start logging: {e}"))
}
