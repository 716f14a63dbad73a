//! The checks after healing: the cluster converges, one final linearizable read per key, every
//! replica holds the final values, and no acknowledged write is lost.
//!
//! **Acknowledged writes lost**, precisely. Per key, the *final value* is what a linearizable read
//! returns once every fault is healed, every client has stopped and every node has applied all the
//! leader committed. A write is *effective* if it can change the key: a set, a delete or a cas
//! whose outcome is `ok` (a cas that reported `Failed` changed nothing) or `info`. An acknowledged
//! (`ok`) effective write *may be last* if no other acknowledged effective write on the key was
//! invoked after it returned; an `info` write may always be last (it may take effect at any time
//! after its call). The final value must be the value that some write which may be last leaves (a
//! delete leaves the key absent; the key is absent, too, if no write was acknowledged). If it is
//! not, every acknowledged write that may be last is **lost**: it was acknowledged, and neither
//! its value nor that of any write that may have followed it survived. Expected: 0.
//!
//! This is implied by linearizability of the history with the final reads in it; it is computed
//! on its own because it says in one line what went wrong, and holds even when the checker runs
//! out of budget.
//!
//! **Node logs.** The nemesis never damages a disk, so a node that logs an `[ERROR]` (a storage
//! failure, corruption found at recovery, a broken invariant) is an anomaly even if no client
//! noticed: protocol-aware recovery can hide a node that wrongly cut its own log.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mini_raft::client::Client;
use mini_raft::history::{CasResult, Op, OpKind, OpResult, Outcome};
use mini_raft::wire::{NodeRole, ReadConsistency, StatusReport};

use super::executor::status_client;
use super::workload::{client_options, Clock};

const CONVERGE_POLL: Duration = Duration::from_millis(100);

/// Where the healed cluster settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Converged {
    pub leader: u64,
    pub term: u64,
    pub commit_index: u64,
}

/// Waits until every node answers, one of them leads in the highest term, and every node has
/// applied what that leader committed; `Err` says what was still missing at `deadline`.
pub fn wait_converged(addrs: &[String], cluster_id: u64, deadline: Duration) -> Result<Converged, String> {
    let mut status = status_client(addrs.to_vec(), cluster_id)?;
    let give_up = Instant::now() + deadline;
    loop {
        let reports: Vec<Result<StatusReport, String>> = addrs
            .iter()
            .map(|addr| status.status(addr).map(|answer| answer.value).map_err(|e| e.to_string()))
            .collect();
        let missing = match converged(&reports) {
            Ok(converged) => return Ok(converged),
            Err(missing) => missing,
        };
        if Instant::now() >= give_up {
            return Err(format!("the cluster did not converge within {} s: {missing}", deadline.as_secs()));
        }
        thread::sleep(CONVERGE_POLL);
    }
}

fn converged(reports: &[Result<StatusReport, String>]) -> Result<Converged, String> {
    let mut ok = Vec::with_capacity(reports.len());
    for (index, report) in reports.iter().enumerate() {
        match report {
            Ok(report) => ok.push(report),
            Err(error) => return Err(format!("node {} does not answer ({error})", index + 1)),
        }
    }
    let leader = ok
        .iter()
        .filter(|report| report.role == NodeRole::Leader)
        .max_by_key(|report| report.term)
        .ok_or_else(|| "no leader".to_string())?;
    if let Some(behind) = ok.iter().find(|report| report.applied_index < leader.commit_index) {
        return Err(format!(
            "node {} applied {} of the leader's (node {}) {} committed entries",
            behind.node_id, behind.applied_index, leader.node_id, leader.commit_index
        ));
    }
    Ok(Converged { leader: leader.node_id, term: leader.term, commit_index: leader.commit_index })
}

/// One linearizable read of each key by a fresh client (id `client`), recorded like the workload's.
pub fn final_reads(addrs: &[String], cluster_id: u64, keys: &[Bytes], client: u64, clock: Clock) -> Vec<Op> {
    let mut reader = Client::new(addrs.to_vec(), client_options(cluster_id)).ok();
    keys.iter()
        .map(|key| {
            let call = clock.now_us();
            let outcome = match reader.as_mut().map(|reader| reader.get(key, ReadConsistency::Linearizable)) {
                Some(Ok(answer)) => Outcome::Ok(OpResult::Get { value: answer.value }),
                Some(Err(_)) | None => Outcome::Info,
            };
            Op { client, key: key.clone(), call, ret: Some(clock.now_us()), kind: OpKind::Get, outcome }
        })
        .collect()
}

/// Each node's own applied value of each key (a local read), by node then key.
pub fn replica_values(addrs: &[String], cluster_id: u64, keys: &[Bytes]) -> Result<Vec<Vec<Option<Bytes>>>, String> {
    let mut values = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let mut client = Client::new(vec![addr.clone()], client_options(cluster_id)).map_err(|e| e.to_string())?;
        let mut node = Vec::with_capacity(keys.len());
        for key in keys {
            let answer = client.get(key, ReadConsistency::Local).map_err(|e| format!("local read at {addr}: {e}"))?;
            node.push(answer.value);
        }
        values.push(node);
    }
    Ok(values)
}

/// Most log lines read per node when looking for errors (a 10-minute run logs some 10^4).
const LOG_LINES_MAX: usize = 10_000_000;

/// How many `[ERROR]` lines the node log at `path` holds, and the first one.
pub fn log_errors(path: &Path) -> Result<(usize, Option<String>), String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (mut count, mut first) = (0, None);
    for line in BufReader::new(file).lines().take(LOG_LINES_MAX) {
        let line = line.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if line.contains("[ERROR]") {
            count += 1;
            first.get_or_insert(line);
        }
    }
    Ok((count, first))
}

/// An acknowledged write that the final value does not account for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrite {
    /// Position in the history.
    pub index: usize,
    pub final_value: Option<Bytes>,
}

/// The acknowledged writes lost (module doc) given the history (final reads excluded) and the
/// final reads; a key whose final read failed is not judged.
pub fn lost_writes(history: &[Op], finals: &[Op]) -> Vec<LostWrite> {
    let mut lost = Vec::new();
    for read in finals {
        let Outcome::Ok(OpResult::Get { value: final_value }) = &read.outcome else { continue };
        let writes: Vec<(usize, &Op)> =
            history.iter().enumerate().filter(|(_, op)| op.key == read.key && is_effective(op)).collect();
        // An acknowledged write may be last iff it returned no earlier than the latest call of an
        // acknowledged write (its own call counts too: it is before its return).
        let latest_call = writes.iter().filter(|(_, op)| is_ok(op)).map(|(_, op)| op.call).max();
        let may_be_last = |op: &Op| !is_ok(op) || op.ret.is_none_or(|ret| Some(ret) >= latest_call);
        let candidates: Vec<&(usize, &Op)> = writes.iter().filter(|(_, op)| may_be_last(op)).collect();
        let explained = (latest_call.is_none() && final_value.is_none())
            || candidates.iter().any(|(_, op)| leaves(op) == *final_value);
        if !explained {
            let lost_acknowledged = candidates.iter().filter(|(_, op)| is_ok(op));
            lost.extend(
                lost_acknowledged.map(|(index, _)| LostWrite { index: *index, final_value: final_value.clone() }),
            );
        }
    }
    lost
}

fn is_ok(op: &Op) -> bool {
    matches!(op.outcome, Outcome::Ok(_))
}

/// Whether the operation may have changed its key.
fn is_effective(op: &Op) -> bool {
    !matches!(
        (&op.kind, &op.outcome),
        (OpKind::Get, _)
            | (_, Outcome::Fail)
            | (OpKind::Cas { .. }, Outcome::Ok(OpResult::Cas(CasResult::Failed { .. })))
    )
}

/// The value an effective write leaves.
fn leaves(op: &Op) -> Option<Bytes> {
    match &op.kind {
        OpKind::Set { value } => Some(value.clone()),
        OpKind::Cas { new, .. } => Some(new.clone()),
        OpKind::Delete | OpKind::Get => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: u64, kind: OpKind, outcome: Outcome) -> Op {
        Op { client: 1, key: Bytes::from("k"), call, ret: Some(ret), kind, outcome }
    }

    fn set(call: u64, ret: u64, value: &str, outcome: Outcome) -> Op {
        op(call, ret, OpKind::Set { value: Bytes::from(value.to_string()) }, outcome)
    }

    fn final_read(value: Option<&str>) -> Vec<Op> {
        let value = value.map(|v| Bytes::from(v.to_string()));
        vec![op(1000, 1001, OpKind::Get, Outcome::Ok(OpResult::Get { value }))]
    }

    const OK: Outcome = Outcome::Ok(OpResult::Set);

    #[test]
    fn the_last_acknowledged_write_must_survive() {
        let history = vec![set(0, 10, "a", OK), set(20, 30, "b", OK)];
        assert!(lost_writes(&history, &final_read(Some("b"))).is_empty());
        let lost = vec![LostWrite { index: 1, final_value: Some(Bytes::from("a")) }];
        assert_eq!(lost_writes(&history, &final_read(Some("a"))), lost);
        assert_eq!(lost_writes(&history, &final_read(None)).len(), 1);
    }

    #[test]
    fn concurrent_acknowledged_writes_may_each_be_last() {
        let history = vec![set(0, 30, "a", OK), set(10, 20, "b", OK)];
        assert!(lost_writes(&history, &final_read(Some("a"))).is_empty());
        assert!(lost_writes(&history, &final_read(Some("b"))).is_empty());
        assert_eq!(lost_writes(&history, &final_read(Some("c"))).len(), 2);
    }

    #[test]
    fn unacknowledged_writes_may_be_last_and_failed_ones_change_nothing() {
        let history = vec![set(0, 10, "a", OK), set(5, 6, "x", Outcome::Info), set(20, 30, "y", Outcome::Fail)];
        assert!(lost_writes(&history, &final_read(Some("x"))).is_empty());
        assert_eq!(lost_writes(&history, &final_read(Some("y"))).len(), 1);
        let deleted =
            vec![set(0, 10, "a", OK), op(20, 30, OpKind::Delete, Outcome::Ok(OpResult::Delete { existed: true }))];
        assert!(lost_writes(&deleted, &final_read(None)).is_empty());
        let cas_failed = Outcome::Ok(OpResult::Cas(CasResult::Failed { current: Some(Bytes::from("a")) }));
        let cas = op(20, 30, OpKind::Cas { expected: None, new: Bytes::from("z") }, cas_failed);
        assert!(lost_writes(&[set(0, 10, "a", OK), cas], &final_read(Some("a"))).is_empty());
    }

    #[test]
    fn a_key_never_acknowledged_may_stay_absent_and_a_failed_final_read_is_not_judged() {
        assert!(lost_writes(&[set(0, 10, "a", Outcome::Info)], &final_read(None)).is_empty());
        let unknown = vec![op(1000, 1001, OpKind::Get, Outcome::Info)];
        assert!(lost_writes(&[set(0, 10, "a", OK)], &unknown).is_empty());
    }

    #[test]
    fn error_lines_of_a_node_log_are_counted() {
        let path = std::env::temp_dir().join(format!("raftctl-log-errors-{}.log", std::process::id()));
        let text = "t [INFO] node 1 is leader\nt [ERROR] corrupt data in wal\nt [WARN] torn tail\nt [ERROR] again\n";
        std::fs::write(&path, text).unwrap();
        assert_eq!(log_errors(&path).unwrap(), (2, Some("t [ERROR] corrupt data in wal".to_string())));
        std::fs::write(&path, "t [INFO] fine\n").unwrap();
        assert_eq!(log_errors(&path).unwrap(), (0, None));
        std::fs::remove_file(&path).unwrap();
        assert!(log_errors(&path).unwrap_err().contains("cannot read"));
    }

    #[test]
    fn convergence_needs_every_node_and_the_leaders_commit_applied_everywhere() {
        let report = |node_id, role, term, commit_index, applied_index| StatusReport {
            node_id,
            role,
            term,
            leader_id: 0,
            commit_index,
            applied_index,
            last_log_index: commit_index,
            log_size_bytes: 0,
            snapshot_index: 0,
            snapshot_term: 0,
            peers: Vec::new(),
            http_addr: None,
        };
        let healthy = vec![Ok(report(1, NodeRole::Follower, 3, 9, 9)), Ok(report(2, NodeRole::Leader, 3, 9, 9))];
        assert_eq!(converged(&healthy), Ok(Converged { leader: 2, term: 3, commit_index: 9 }));
        let behind = vec![Ok(report(1, NodeRole::Follower, 3, 9, 7)), Ok(report(2, NodeRole::Leader, 3, 9, 9))];
        assert!(converged(&behind).unwrap_err().contains("node 1 applied 7"));
        let deposed = vec![Ok(report(1, NodeRole::Leader, 2, 5, 5)), Ok(report(2, NodeRole::Leader, 3, 9, 9))];
        assert!(converged(&deposed).unwrap_err().contains("node 1 applied 5"));
        let silent = vec![Err("refused".to_string()), Ok(report(2, NodeRole::Leader, 3, 9, 9))];
        assert!(converged(&silent).unwrap_err().contains("node 1 does not answer"));
    }
}
