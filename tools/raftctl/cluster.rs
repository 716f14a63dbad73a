//! `raftctl cluster up`: runs N local `raftd` processes in the foreground.
//!
//! Node i (1-based) listens on 127.0.0.1:(P+i-1), serves HTTP (`/metrics`, `/status`, `/health`)
//! on 127.0.0.1:(P+i-1+[`HTTP_PORT_OFFSET`]), keeps its data in DIR/node-i and logs to
//! DIR/node-i.log; its pid goes to DIR/node-i.pid (for `raftctl bench --data DIR`). Ctrl-C reaches the children through the terminal's process group. raftctl also
//! polls them every [`POLL_INTERVAL`]; when one exits, it stops the others (SIGTERM, then SIGKILL
//! after [`STOP_GRACE`]) and exits 3 naming the node and its exit status.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use getopts::Matches;

use crate::{parse_command, parse_number, CliError};

const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long stopped nodes get to exit after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Most nodes `cluster up` starts: a local test cluster, not a data center.
const NODES_MAX: u16 = 64;
const BASE_PORT_DEFAULT: u16 = 7001;
/// Node i's HTTP port is its client port plus this (7001 -> 7101), as the scrape config in
/// `tools/dashboards/prometheus.yml` expects.
pub const HTTP_PORT_OFFSET: u16 = 100;

struct Node {
    id: u16,
    addr: String,
    child: Child,
}

pub fn run(args: &[String], before: &Matches) -> Result<u8, CliError> {
    let (matches, global) = parse_command(args, before, |options| {
        options
            .optopt("", "nodes", "number of nodes", "N")
            .optopt("", "base-port", "port of node 1", "P")
            .optopt("", "data", "data directory", "DIR")
            .optopt("", "raftd", "path of raftd", "PATH");
    })?;
    let trailing = matches.free_trailing_start().unwrap_or(matches.free.len());
    let (words, extra) = matches.free.split_at(trailing);
    if words != ["up"] {
        return Err(CliError::Usage(format!("cluster takes the subcommand 'up', got {words:?}")));
    }
    let nodes: u16 =
        parse_number(&matches.opt_str("nodes").ok_or_else(|| usage("cluster up needs --nodes N"))?, "--nodes")?;
    if !(1..=NODES_MAX).contains(&nodes) {
        return Err(usage(&format!("--nodes must be between 1 and {NODES_MAX}")));
    }
    let base_port: u16 = match matches.opt_str("base-port") {
        Some(text) => parse_number(&text, "--base-port")?,
        None => BASE_PORT_DEFAULT,
    };
    let last_port = u32::from(base_port) + u32::from(nodes) - 1 + u32::from(HTTP_PORT_OFFSET);
    if base_port == 0 || last_port > u32::from(u16::MAX) {
        return Err(usage(&format!("--base-port {base_port} leaves no room for {nodes} ports and their HTTP ports")));
    }
    let data = PathBuf::from(matches.opt_str("data").unwrap_or_else(|| "./data".to_string()));
    let raftd = match matches.opt_str("raftd") {
        Some(path) => PathBuf::from(path),
        None => default_raftd()?,
    };
    if !raftd.is_file() {
        return Err(CliError::Failed(format!(
            "raftd not found at {} (build it with `cargo build --release`, or pass --raftd PATH)",
            raftd.display()
        )));
    }
    let addrs: Vec<String> = (0..nodes).map(|i| format!("127.0.0.1:{}", base_port + i)).collect();
    let mut running = start(&raftd, &data, &addrs, global.client.cluster_id, extra)?;
    announce(&running, &data, global.client.cluster_id);
    // A node that dies (or is killed, as in the README's failover tour) is reported with the
    // command that restarts it; the others keep running until Ctrl-C or until none is left.
    while !running.is_empty() {
        let (id, status) = watch(&mut running);
        let mut restart = vec![raftd.display().to_string()];
        restart.extend(node_args(id, &addrs, &data, global.client.cluster_id));
        restart.extend(extra.iter().cloned());
        let others = if running.len() > 1 { "the other nodes keep running" } else { "no node is left" };
        eprintln!(
            "raftctl: node {id} ({}) exited with {status}; {others}. Restart it with:\n  {}",
            addr_of(&running, id),
            restart.join(" ")
        );
        running.retain(|node| node.id != id);
    }
    Err(CliError::Failed("every node has exited".into()))
}

fn usage(message: &str) -> CliError {
    CliError::Usage(message.to_string())
}

fn default_raftd() -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Failed(format!("cannot find raftctl's own path: {e}")))?;
    Ok(exe.with_file_name("raftd"))
}

/// The `raftd` arguments of node `id` (1-based).
fn node_args(id: u16, addrs: &[String], data: &Path, cluster_id: u64) -> Vec<String> {
    let peers: Vec<String> = addrs.iter().enumerate().map(|(i, addr)| format!("{}={addr}", i + 1)).collect();
    vec![
        "--id".to_string(),
        id.to_string(),
        "--listen".to_string(),
        addrs[usize::from(id) - 1].clone(),
        "--http-listen".to_string(),
        http_addr(&addrs[usize::from(id) - 1]),
        "--peers".to_string(),
        peers.join(","),
        "--data-dir".to_string(),
        data.join(format!("node-{id}")).display().to_string(),
        "--cluster-id".to_string(),
        cluster_id.to_string(),
        "--log-file".to_string(),
        data.join(format!("node-{id}.log")).display().to_string(),
    ]
}

/// The HTTP address of the node whose client address is `addr` (`host:port`).
fn http_addr(addr: &str) -> String {
    match addr.rsplit_once(':').and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?))) {
        Some((host, port)) => format!("{host}:{}", port.saturating_add(HTTP_PORT_OFFSET)),
        None => addr.to_string(),
    }
}

fn start(
    raftd: &Path,
    data: &Path,
    addrs: &[String],
    cluster_id: u64,
    extra: &[String],
) -> Result<Vec<Node>, CliError> {
    let mut running = Vec::new();
    for (index, addr) in addrs.iter().enumerate() {
        let id = index as u16 + 1;
        let node_dir = data.join(format!("node-{id}"));
        let spawned = std::fs::create_dir_all(&node_dir)
            .map_err(|e| format!("cannot create {}: {e}", node_dir.display()))
            .and_then(|_| {
                Command::new(raftd)
                    .args(node_args(id, addrs, data, cluster_id))
                    .args(extra)
                    .stdin(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("cannot start {} for node {id}: {e}", raftd.display()))
            });
        // The pid file lets `raftctl bench --data DIR` read the node's CPU time from /proc.
        let spawned = spawned.and_then(|mut child| {
            let pid_file = data.join(format!("node-{id}.pid"));
            match std::fs::write(&pid_file, format!("{}\n", child.id())) {
                Ok(()) => Ok(child),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(format!("cannot write {}: {e}", pid_file.display()))
                }
            }
        });
        match spawned {
            Ok(child) => running.push(Node { id, addr: addr.clone(), child }),
            Err(message) => {
                stop(&mut running);
                return Err(CliError::Failed(message));
            }
        }
    }
    Ok(running)
}

fn announce(running: &[Node], data: &Path, cluster_id: u64) {
    println!("started {} raftd nodes (cluster id {cluster_id}, data in {}):", running.len(), data.display());
    for node in running {
        let log = data.join(format!("node-{}.log", node.id));
        let http = http_addr(&node.addr);
        println!("  node {}  {}  http://{http}  pid {}  log {}", node.id, node.addr, node.child.id(), log.display());
    }
    let cluster: Vec<&str> = running.iter().map(|node| node.addr.as_str()).collect();
    let id_flag = if cluster_id == 1 { String::new() } else { format!(" --cluster-id {cluster_id}") };
    println!("try:\n  raftctl --cluster {}{id_flag} set foo bar", cluster.join(","));
    println!("  raftctl --cluster {}{id_flag} watch", cluster.join(","));
    if let Some(first) = running.first() {
        println!("  curl http://{}/metrics   (also /status, /health)", http_addr(&first.addr));
    }
    println!("Ctrl-C stops the cluster.");
}

/// Waits until a node exits; returns its id and status.
fn watch(running: &mut [Node]) -> (u16, String) {
    loop {
        for node in running.iter_mut() {
            match node.child.try_wait() {
                Ok(Some(status)) => return (node.id, status.to_string()),
                Ok(None) => {}
                Err(error) => return (node.id, format!("an unknown status ({error})")),
            }
        }
        thread::sleep(POLL_INTERVAL);
    }
}

fn addr_of(running: &[Node], id: u16) -> &str {
    running.iter().find(|node| node.id == id).map_or("?", |node| node.addr.as_str())
}

/// SIGTERM to every node still running, then SIGKILL to any left after [`STOP_GRACE`]; reaps all.
fn stop(running: &mut [Node]) {
    for node in running.iter_mut() {
        if matches!(node.child.try_wait(), Ok(None)) {
            // std has no SIGTERM; `kill` is on every Unix. Without it, SIGKILL at once.
            let pid = node.child.id().to_string();
            let termed = Command::new("kill").args(["-TERM", &pid]).status().is_ok_and(|status| status.success());
            if !termed {
                let _ = node.child.kill();
            }
        }
    }
    let give_up = Instant::now() + STOP_GRACE;
    for node in running.iter_mut() {
        while matches!(node.child.try_wait(), Ok(None)) && Instant::now() < give_up {
            thread::sleep(Duration::from_millis(20));
        }
        if matches!(node.child.try_wait(), Ok(None)) {
            let _ = node.child.kill();
        }
        let _ = node.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_arguments_follow_the_raftd_command_line() {
        let addrs = vec!["127.0.0.1:7001".to_string(), "127.0.0.1:7002".to_string()];
        let args = node_args(2, &addrs, Path::new("d"), 9).join(" ");
        assert_eq!(
            args,
            "--id 2 --listen 127.0.0.1:7002 --http-listen 127.0.0.1:7102 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002 \
             --data-dir d/node-2 --cluster-id 9 --log-file d/node-2.log"
        );
    }
}
