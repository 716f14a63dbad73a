//! One chaos run, start to end: the run directory, the cluster behind its proxies, the workload
//! and the nemesis together, then the checks and the summary.
//!
//! Run directory (`--data DIR`, else a fresh one under the system temp dir):
//! `node-N/` (data), `node-N.log` (raftd's stderr: its log, and a panic if any), `history.jsonl` (every
//! operation, `mini_raft::history` JSON lines, final reads last), `timeline.txt` (the faults as
//! executed), `summary.txt`. It is removed after a passing run unless `--keep`; a run that fails
//! or is inconclusive keeps it and says where.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mini_raft::history::{check_with, op_to_json_line, CheckConfig, Op, OpResult, Outcome, Report, Verdict};

use super::executor::{Event, Executor};
use super::mesh::Mesh;
use super::nemesis::{schedule, NodeId, Step};
use super::options::ChaosConfig;
use super::procs::Procs;
use super::report;
use super::verify::{self, Converged, LostWrite};
use super::workload::{key_names, Clock, Workload, WorkloadConfig};
use crate::{CliError, EXIT_NEGATIVE, EXIT_OUTCOME_UNKNOWN};

/// How long the cluster gets to elect a leader and settle, at the start and after healing.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);
/// Node ports are picked below the kernel's ephemeral range (32768+), so that no outgoing
/// connection can take a node's port while the node is down between a kill and its restart.
const PORT_BASE: u32 = 20_000;
const PORT_SPAN: u32 = 12_000;

/// The nodes, their proxies, and the addresses clients use.
struct Cluster {
    mesh: Mesh,
    procs: Procs,
    client_addrs: Vec<String>,
}

/// What the run recorded while faults were on.
struct Record {
    history: Vec<Op>,
    events: Vec<Event>,
    anomalies: Vec<String>,
    injected: BTreeMap<&'static str, u32>,
    skipped: u32,
    workload_secs: f64,
    /// The run's clock: the final reads are timed on it too.
    clock: Clock,
    /// How many times each node was started.
    starts: Vec<u32>,
}

/// What the checks after healing found.
struct Checks {
    converged: Result<Converged, String>,
    finals: Vec<Op>,
    replicas: Result<(), String>,
    lost: Vec<LostWrite>,
    report: Report,
    check_secs: f64,
}

pub fn run(config: &ChaosConfig) -> Result<u8, CliError> {
    let steps = match config.nemesis() {
        Some(nemesis) => schedule(&nemesis).map_err(CliError::Usage)?,
        None => Vec::new(),
    };
    let dir = create_run_dir(config)?;
    print_header(config, &dir);
    let code = run_in(config, &dir, &steps).inspect_err(|_| {
        println!("kept (the run could not be carried out): {}", dir.display());
    })?;
    if code == 0 && !config.keep {
        if let Err(error) = fs::remove_dir_all(&dir) {
            eprintln!("raftctl chaos: cannot remove {}: {error}", dir.display());
        }
    } else {
        let why = if code == 0 { "--keep" } else { "the run did not pass" };
        println!("kept ({why}): {} (history.jsonl, timeline.txt, node-N.log, node-N/)", dir.display());
    }
    Ok(code)
}

/// The run proper, in `dir`; the cluster is stopped (and every proxy) however it ends.
fn run_in(config: &ChaosConfig, dir: &Path, steps: &[Step]) -> Result<u8, CliError> {
    let mut cluster = start_cluster(config, dir)?;
    println!("schedule: {} faults; the timeline as executed:", steps.len() / 2);
    let mut record = record(config, &mut cluster, steps)?;
    let checks = check(config, &cluster, &record, dir)?;
    record.anomalies.extend(cluster.procs.stop_all().into_iter().map(|a| anomaly_text(a.node, &a.what)));
    for id in 1..=config.nodes {
        match verify::log_errors(&dir.join(format!("node-{id}.log"))) {
            Ok((0, _)) => {}
            Ok((count, first)) => {
                let first = first.unwrap_or_default();
                record.anomalies.push(format!("node {id} logged {count} errors, the first: {first}"));
            }
            Err(error) => record.anomalies.push(error),
        }
    }
    let links = report::links_line(&cluster.mesh);
    cluster.mesh.stop();
    let (code, summary) = summarize(config, &record, &checks, &links);
    print!("{summary}");
    let _ = fs::write(dir.join("summary.txt"), &summary);
    Ok(code)
}

fn create_run_dir(config: &ChaosConfig) -> Result<PathBuf, CliError> {
    let dir = config.data.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("mini-raft-chaos-{}-{}", config.seed, std::process::id()))
    });
    let occupied = fs::read_dir(&dir).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if occupied {
        return Err(CliError::Usage(format!("--data {}: the directory is not empty", dir.display())));
    }
    fs::create_dir_all(&dir).map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

fn print_header(config: &ChaosConfig, dir: &Path) {
    let overlap = if config.overlapping { "overlapping" } else { "one at a time" };
    let (hold, quiet) = (config.hold, config.quiet);
    println!(
        "chaos: {} nodes, {:.1} s, {} clients on {} keys, seed {}, faults {} ({overlap}; hold {:.1}-{:.1} s, quiet \
         {:.1}-{:.1} s)",
        config.nodes,
        config.duration.as_secs_f64(),
        config.clients,
        config.keys,
        config.seed,
        config.fault_names(),
        hold.min.as_secs_f64(),
        hold.max.as_secs_f64(),
        quiet.min.as_secs_f64(),
        quiet.max.as_secs_f64(),
    );
    println!("run directory: {}", dir.display());
}

fn start_cluster(config: &ChaosConfig, dir: &Path) -> Result<Cluster, CliError> {
    let failed = |what: String| CliError::Failed(what);
    let ports = free_ports(config.nodes).map_err(failed)?;
    let targets: Vec<SocketAddr> = ports.iter().map(|&port| SocketAddr::from(([127, 0, 0, 1], port))).collect();
    let mesh = Mesh::start(&targets, config.seed).map_err(|e| failed(format!("cannot start the link proxies: {e}")))?;
    let client_addrs: Vec<String> = targets.iter().map(SocketAddr::to_string).collect();
    let args = (1..=config.nodes as NodeId).map(|id| node_args(config, dir, &mesh, &client_addrs, id)).collect();
    let mut procs = Procs::new(&config.raftd, dir, args);
    for id in 1..=config.nodes as NodeId {
        procs.start(id).map_err(failed)?;
    }
    let nodes: Vec<String> = client_addrs.iter().zip(1..).map(|(addr, id)| format!("n{id} {addr}")).collect();
    println!(
        "nodes: {} (peers dial each other through {} link proxies)",
        nodes.join(", "),
        ports.len() * (ports.len() - 1)
    );
    Ok(Cluster { mesh, procs, client_addrs })
}

/// Node `id`'s raftd flags: its `--peers` entry for every other node is the proxy of that link.
fn node_args(config: &ChaosConfig, dir: &Path, mesh: &Mesh, client_addrs: &[String], id: NodeId) -> Vec<String> {
    let peers: Vec<String> = (1..=client_addrs.len() as NodeId)
        .map(|to| match mesh.dial_addr(id, to) {
            Some(proxy) => format!("{to}={proxy}"),
            None => format!("{to}={}", client_addrs[to as usize - 1]),
        })
        .collect();
    let clients: Vec<String> = client_addrs.iter().zip(1..).map(|(addr, id)| format!("{id}={addr}")).collect();
    let path = |name: String| dir.join(name).display().to_string();
    let args = [
        ("--id", id.to_string()),
        ("--listen", client_addrs[id as usize - 1].clone()),
        ("--peers", peers.join(",")),
        ("--client-addrs", clients.join(",")),
        ("--data-dir", path(format!("node-{id}"))),
        ("--cluster-id", config.cluster_id.to_string()),
        ("--tick-ms", config.tick_ms(id).to_string()),
        ("--snapshot-every", config.snapshot_every.to_string()),
        ("--segment-mib", "4".to_string()),
    ];
    args.into_iter().flat_map(|(flag, value)| [flag.to_string(), value]).collect()
}

/// Waits for a leader, then runs the workload and the nemesis together for the duration.
fn record(config: &ChaosConfig, cluster: &mut Cluster, steps: &[Step]) -> Result<Record, CliError> {
    let first = verify::wait_converged(&cluster.client_addrs, config.cluster_id, CONVERGE_DEADLINE)
        .map_err(|e| CliError::Failed(format!("the cluster did not start: {e}")))?;
    let clock = Clock::start();
    let workload_config = WorkloadConfig {
        clients: config.clients,
        keys: config.keys,
        cluster: cluster.client_addrs.clone(),
        cluster_id: config.cluster_id,
        seed: config.seed,
        operations_max: config.operations_max,
    };
    let addrs = cluster.client_addrs.clone();
    let mut executor = Executor::new(&mut cluster.procs, &mut cluster.mesh, clock, addrs, config.cluster_id)
        .map_err(CliError::Failed)?;
    let workload = Workload::start(&workload_config, clock).map_err(CliError::Failed)?;
    executor.note(None, format!("n{} leads in term {}; {} clients start", first.leader, first.term, config.clients));
    executor.run(steps, || workload.finished());
    executor.wait_until(clock.instant_at(config.duration), &mut || workload.finished());
    let workload_secs = clock.now_us() as f64 / 1e6;
    let history = workload.stop().map_err(CliError::Failed)?;
    executor.note(None, format!("clients stopped after {} operations", history.len()));
    executor.watch();
    let anomalies = executor.anomalies.iter().map(|(_, a)| anomaly_text(a.node, &a.what)).collect();
    let (injected, skipped) = (executor.injected.clone(), executor.skipped);
    let events = executor.events.clone();
    drop(executor);
    let starts = cluster.procs.starts();
    Ok(Record { history, events, anomalies, injected, skipped, workload_secs, clock, starts })
}

fn anomaly_text(node: NodeId, what: &str) -> String {
    if node == 0 {
        what.to_string()
    } else {
        format!("node {node} {what}")
    }
}

/// After healing: converge, read every key, compare the replicas, count lost writes, check.
fn check(config: &ChaosConfig, cluster: &Cluster, record: &Record, dir: &Path) -> Result<Checks, CliError> {
    let addrs = &cluster.client_addrs;
    let keys = key_names(config.keys);
    let converged = verify::wait_converged(addrs, config.cluster_id, CONVERGE_DEADLINE);
    let finals = verify::final_reads(addrs, config.cluster_id, &keys, config.clients as u64 + 1, record.clock);
    let replicas = compare_replicas(addrs, config.cluster_id, &keys, &finals);
    let lost = verify::lost_writes(&record.history, &finals);
    let mut full = record.history.clone();
    full.extend(finals.iter().cloned());
    write_files(dir, &full, &record.events)?;
    println!("checking {} operations on {} keys...", full.len(), config.keys);
    let started = Instant::now();
    let check_config = CheckConfig { search_steps_max: config.check_steps_max, ..CheckConfig::default() };
    let report = check_with(&full, &check_config)
        .map_err(|e| CliError::Failed(format!("the recorded history is malformed: {e}")))?;
    let check_secs = started.elapsed().as_secs_f64();
    Ok(Checks { converged, finals, replicas, lost, report, check_secs })
}

/// Every node's own value of every key must equal the final linearizable read's.
fn compare_replicas(addrs: &[String], cluster_id: u64, keys: &[Bytes], finals: &[Op]) -> Result<(), String> {
    verify::wait_converged(addrs, cluster_id, CONVERGE_DEADLINE)?;
    let values = verify::replica_values(addrs, cluster_id, keys)?;
    for (index, (read, key)) in finals.iter().zip(keys).enumerate() {
        let Outcome::Ok(OpResult::Get { value }) = &read.outcome else {
            return Err(format!("the final read of {} failed", String::from_utf8_lossy(key)));
        };
        for (node, node_values) in (1..).zip(&values) {
            let held = node_values.get(index).cloned().flatten();
            if held != *value {
                let show = |value: &Option<Bytes>| {
                    value.as_ref().map_or("absent".to_string(), |v| format!("{:?}", String::from_utf8_lossy(v)))
                };
                let key = String::from_utf8_lossy(key);
                return Err(format!(
                    "node {node} holds {} for {key}; the cluster answers {}",
                    show(&held),
                    show(value)
                ));
            }
        }
    }
    Ok(())
}

fn write_files(dir: &Path, history: &[Op], events: &[Event]) -> Result<(), CliError> {
    let path = dir.join("history.jsonl");
    let failed = |e: std::io::Error| CliError::Failed(format!("cannot write {}: {e}", path.display()));
    let mut out = BufWriter::new(File::create(&path).map_err(failed)?);
    for op in history {
        writeln!(out, "{}", op_to_json_line(op)).map_err(failed)?;
    }
    out.flush().map_err(failed)?;
    let timeline: String = events.iter().map(|event| format!("{}\n", event.line)).collect();
    fs::write(dir.join("timeline.txt"), timeline)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", dir.join("timeline.txt").display())))
}

/// Ports that are free now, in [`PORT_BASE`, `PORT_BASE + PORT_SPAN`), starting where the process
/// id points so that concurrent runs rarely collide.
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let start = std::process::id().wrapping_mul(7919) % PORT_SPAN;
    let mut held = Vec::with_capacity(count);
    for step in 0..PORT_SPAN {
        if held.len() == count {
            break;
        }
        let port = (PORT_BASE + (start + step) % PORT_SPAN) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    if held.len() < count {
        return Err(format!("fewer than {count} free ports in {PORT_BASE}..{}", PORT_BASE + PORT_SPAN));
    }
    held.iter().map(|listener| listener.local_addr().map(|addr| addr.port()).map_err(|e| e.to_string())).collect()
}

/// The summary text and the exit code: 0 pass, 1 a violation, 4 nothing wrong found but the
/// checker ran out of budget.
fn summarize(config: &ChaosConfig, record: &Record, checks: &Checks, links: &str) -> (u8, String) {
    let mut text = summary_lines(record, checks, links);
    let mut failures = record.anomalies.clone();
    if let Err(error) = &checks.converged {
        failures.push(format!("after healing: {error}"));
    }
    if let Err(error) = &checks.replicas {
        failures.push(format!("replicas: {error}"));
    }
    if !checks.lost.is_empty() {
        failures.push(format!("{} acknowledged writes lost", checks.lost.len()));
        text.push_str(&report::render_lost(&checks.lost, &record.history));
    }
    for violation in checks.report.violations() {
        failures.push(format!("key {} is not linearizable", String::from_utf8_lossy(&violation.key)));
        text.push_str(&report::render_violation(violation, &record.events));
    }
    for failure in &failures {
        text.push_str(&format!("FAILED: {failure}\n"));
    }
    let verdict = checks.report.verdict();
    let (code, result) = match (failures.is_empty(), verdict) {
        (false, _) => (EXIT_NEGATIVE, "FAIL"),
        (true, Verdict::Unknown) => (EXIT_OUTCOME_UNKNOWN, "UNKNOWN"),
        (true, _) => (0, "PASS"),
    };
    let counts = report::counts(&record.history);
    let injected: u32 = record.injected.values().sum();
    text.push_str(&format!(
        "chaos: {result} seed={} nodes={} duration={:.1}s clients={} keys={} ops={} ok={} fail={} info={} \
         faults={injected} verdict={} lost={} failures={}\n",
        config.seed,
        config.nodes,
        record.workload_secs,
        config.clients,
        config.keys,
        counts.total,
        counts.ok,
        counts.fail,
        counts.info,
        report::verdict_name(verdict).replace(' ', "_"),
        checks.lost.len(),
        failures.len(),
    ));
    (code, text)
}

fn summary_lines(record: &Record, checks: &Checks, links: &str) -> String {
    let counts = report::counts(&record.history);
    let kinds: Vec<String> = counts.by_kind.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
    let injected: u32 = record.injected.values().sum();
    let throughput = counts.ok as f64 / record.workload_secs.max(1e-3);
    let full_ops = record.history.len() + checks.finals.len();
    let replicas = match (&checks.converged, &checks.replicas) {
        (Ok(c), Ok(())) => format!(
            "converged (leader n{}, term {}, commit index {}); every node holds the final value of every key",
            c.leader, c.term, c.commit_index
        ),
        (Err(error), _) | (Ok(_), Err(error)) => error.clone(),
    };
    let anomalies = if record.anomalies.is_empty() { "none".to_string() } else { record.anomalies.join("; ") };
    let starts: Vec<String> =
        (1..).zip(&record.starts).map(|(id, starts)| format!("n{id} started {starts}x")).collect();
    let starts = starts.join(", ");
    let lines = [
        (
            "operations",
            format!(
                "{}: {} ok, {} fail, {} info ({})",
                counts.total,
                counts.ok,
                counts.fail,
                counts.info,
                kinds.join(", ")
            ),
        ),
        ("throughput", format!("{throughput:.0} ok ops/s over {:.1} s", record.workload_secs)),
        (
            "faults",
            format!(
                "{injected} injected ({}), {} skipped (no leader)",
                report::tally(&record.injected),
                record.skipped
            ),
        ),
        ("links", links.to_string()),
        ("processes", starts),
        ("checker", report::checker_line(&checks.report, full_ops, checks.check_secs)),
        (
            "lost writes",
            format!(
                "{} of {} acknowledged writes ({} final reads)",
                checks.lost.len(),
                report::acknowledged_writes(&record.history),
                checks.finals.len()
            ),
        ),
        ("replicas", replicas),
        ("anomalies", anomalies),
    ];
    let mut text = String::from("summary:\n");
    for (label, line) in lines {
        text.push_str(&format!("  {label:<11} {line}\n"));
    }
    text
}
