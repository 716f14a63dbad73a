//! What `raftctl bench` watches besides its own clients: the CPU time of the server processes
//! (from `/proc/PID/stat`) and the cluster's leadership (sampled `Status` requests).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use mini_raft::client::{Client, ClientOptions};
use mini_raft::wire::NodeRole;

/// How often the leadership is sampled.
const LEADER_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// Most pid files or `--pids` a bench reads (a local cluster, not a data center).
pub const PIDS_MAX: usize = 16;

/// The pids of the nodes `raftctl cluster up --data DIR` started (it writes `DIR/node-I.pid`).
pub fn pids_in(data: &Path) -> Result<Vec<u32>, String> {
    let mut pids = Vec::new();
    for id in 1..=PIDS_MAX {
        let path = data.join(format!("node-{id}.pid"));
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let pid = text.trim().parse().map_err(|_| format!("{}: '{}' is not a pid", path.display(), text.trim()))?;
        pids.push(pid);
    }
    if pids.is_empty() {
        return Err(format!("no node-I.pid files in {} (start the cluster with raftctl cluster up)", data.display()));
    }
    Ok(pids)
}

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`; 100 on Linux if unknown).
pub fn clock_ticks_per_second() -> u64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output();
    out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).filter(|&t| t > 0).unwrap_or(100)
}

/// User + system CPU ticks of every thread of `pid` so far (dead threads included), or `None` if
/// the process is gone or its stat line is not what Linux writes.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Samples who leads until `stop`: returns the number of leadership changes seen (a new term with
/// a leader, or another leader) after the first leader observed, and the leaders seen.
pub fn watch_leaders(cluster: &[String], options: &ClientOptions, stop: &AtomicBool) -> (u64, Vec<(u64, u64)>) {
    let options = ClientOptions {
        deadline: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
        ..options.clone()
    };
    let Ok(mut client) = Client::new(cluster.to_vec(), options) else { return (0, Vec::new()) };
    let mut seen: Vec<(u64, u64)> = Vec::new(); // (term, leader id)
    while !stop.load(Ordering::Relaxed) {
        let leader = cluster
            .iter()
            .filter_map(|addr| client.status(addr).ok().map(|a| a.value))
            .filter(|s| s.role == NodeRole::Leader)
            .map(|s| (s.term, s.node_id))
            .max();
        if let Some(leader) = leader {
            if seen.last() != Some(&leader) && seen.len() < 1024 {
                seen.push(leader);
            }
        }
        thread::sleep(LEADER_SAMPLE_INTERVAL);
    }
    (seen.len().saturating_sub(1) as u64, seen)
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_ticks;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let line = "4242 (raft d) S 1 4242 4242 0 -1 4194304 900 0 0 0 1234 567 0 0 20 0 5 0 100 0 0";
        assert_eq!(parse_cpu_ticks(line), Some(1234 + 567));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }
}
