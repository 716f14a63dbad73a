//! `raftctl status`: asks every node for its `StatusReport`, in parallel, and prints a table (or
//! one JSON object per node). A node that cannot be asked gets a row with the error. Below the
//! table, the configuration in force as the leader reports it, and whether it is joint.

use std::fmt::Write as _;
use std::thread;

use mini_raft::client::{Client, ClientError};
use mini_raft::raft::membership::MemberRole;
use mini_raft::server::status::role_name;
use mini_raft::server::status::{status_error_json, status_json};
use mini_raft::wire::StatusReport;

use crate::output::table;
use crate::{CliError, Global, EXIT_FAILED};

const HEADER: [&str; 11] =
    ["ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "LOG_BYTES", "SNAP_INDEX", "SNAP_TERM"];

/// Prints the status of every node; exit 0 if at least one answered.
pub fn run(global: &Global) -> Result<u8, CliError> {
    let results: Vec<(String, Result<StatusReport, String>)> = thread::scope(|scope| {
        let handles: Vec<_> =
            global.cluster.iter().map(|addr| (addr.clone(), scope.spawn(move || ask(global, addr)))).collect();
        handles
            .into_iter()
            .map(|(addr, handle)| {
                let result = handle.join().unwrap_or_else(|_| Err("status thread panicked".to_string()));
                (addr, result)
            })
            .collect()
    });
    if global.json {
        for (addr, result) in &results {
            println!("{}", json_line(addr, result));
        }
    } else {
        print!("{}", render(&results));
        let leader = results.iter().find(|(_, r)| r.as_ref().is_ok_and(|s| role_name(s.role) == "leader"));
        if let Some(line) = leader.and_then(|(addr, _)| configuration_line(global, addr)) {
            println!("{line}");
        }
    }
    let answered = results.iter().any(|(_, result)| result.is_ok());
    Ok(if answered { 0 } else { EXIT_FAILED })
}

/// `configuration at index I: voters [..] outgoing [..] learners [..] (joint)`, from the leader
/// at `addr` (`None` if it does not answer within a second: the table is what matters).
fn configuration_line(global: &Global, addr: &str) -> Option<String> {
    let mut options = global.client.clone();
    options.deadline = options.deadline.min(std::time::Duration::from_secs(1));
    let mut client = Client::new(vec![addr.to_string()], options).ok()?;
    let report = client.member_list().ok()?.value;
    let ids = |role: MemberRole| -> Vec<u64> {
        report.members.iter().filter(|m| m.role == role).map(|m| m.node_id).collect()
    };
    let (voters, outgoing, learners) = (ids(MemberRole::Voter), ids(MemberRole::Outgoing), ids(MemberRole::Learner));
    let mut line = format!("configuration at index {}: voters {voters:?}", report.conf_index);
    if report.joint {
        line.push_str(&format!(" outgoing {outgoing:?}"));
    }
    if !learners.is_empty() {
        line.push_str(&format!(" learners {learners:?}"));
    }
    line.push_str(if report.joint { " (joint: a change is in progress)" } else { " (not joint)" });
    Some(line)
}

fn ask(global: &Global, addr: &str) -> Result<StatusReport, String> {
    let mut client = Client::new(vec![addr.to_string()], global.client.clone()).map_err(|e| e.to_string())?;
    match client.status(addr) {
        Ok(answer) => Ok(answer.value),
        Err(ClientError::Node { failure, .. }) => Err(failure),
        Err(other) => Err(other.to_string()),
    }
}

fn render(results: &[(String, Result<StatusReport, String>)]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(addr, result)| match result {
            Ok(s) => vec![
                s.node_id.to_string(),
                addr.clone(),
                role_name(s.role).to_string(),
                s.term.to_string(),
                if s.leader_id == 0 { "-".to_string() } else { s.leader_id.to_string() },
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                s.last_log_index.to_string(),
                s.log_size_bytes.to_string(),
                s.snapshot_index.to_string(),
                s.snapshot_term.to_string(),
            ],
            Err(error) => vec!["-".to_string(), addr.clone(), format!("error: {error}")],
        })
        .collect();
    let mut out = table(&HEADER, &rows);
    for (_, report) in results {
        let Ok(report) = report else { continue };
        if report.peers.is_empty() {
            continue;
        }
        let _ = write!(out, "replication seen by leader {}:", report.node_id);
        for peer in &report.peers {
            let _ = write!(out, " node {} match {} next {};", peer.node_id, peer.match_index, peer.next_index);
        }
        out.pop();
        out.push('\n');
    }
    out
}

/// One `--json` line: the library's encoder, shared with the node's `GET /status`.
fn json_line(addr: &str, result: &Result<StatusReport, String>) -> String {
    match result {
        Ok(report) => status_json(addr, report),
        Err(error) => status_error_json(addr, error),
    }
}
