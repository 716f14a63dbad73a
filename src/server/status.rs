//! A node's status as JSON, and its health verdict: the one encoder behind `raftctl status
//! --json` and the node's `GET /status`, and the rule behind `GET /health`.
//!
//! JSON shape (one object, no newlines inside): the fields of a [`StatusReport`] under the names
//! `raftctl status --json` has always printed — `addr`, `ok`, `id`, `role`, `term`, `leader`,
//! `commit`, `applied`, `last_index`, `log_bytes`, `snapshot_index`, `snapshot_term`, `peers`
//! (`[{"id","match","next"}]`) — and, for `/status`, what only the node itself knows:
//! `client_addr`, `http_addr`, `voters`, `progress` (`[{"id","match","next","state","inflight",
//! "lag","active"}]`, leader only), `recovery` (`null` or `{"term","index","reason"}`; an index of
//! `null` means "unknown extent") and `health` (`{"ok","reason"}`). Keys are never removed; new
//! ones may be added at the end.
//!
//! Health ([`judge_health`]): a leader is healthy when it heard from a quorum of voters (itself
//! included) within the longest election timeout; any other node when it knows a leader, is not
//! recovering, and its applied index is within [`HEALTH_APPLY_LAG_ENTRIES_MAX`] entries of the
//! commit index it knows (the leader's, as far as it has heard).

use std::fmt::Write as _;
use std::time::Duration;

use crate::raft::{FollowerProgress, NodeId, Recovery};
use crate::wire::{NodeRole, StatusReport};

/// A node whose applied index trails its known commit index by more than this many entries is
/// unhealthy (a follower catching up from far behind, or stuck applying).
pub const HEALTH_APPLY_LAG_ENTRIES_MAX: u64 = 1_000;

/// `text` as a JSON string literal, quotes included, with every control character escaped.
pub fn json_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_json_str(&mut out, text);
    out
}

fn push_json_str(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Follower => "follower",
        NodeRole::PreCandidate => "pre-candidate",
        NodeRole::Candidate => "candidate",
        NodeRole::Leader => "leader",
    }
}

/// The status fields shared by `raftctl status --json` and `/status`, without the braces.
fn push_report_fields(out: &mut String, addr: &str, s: &StatusReport) {
    out.push_str("\"addr\":");
    push_json_str(out, addr);
    let _ = write!(
        out,
        ",\"ok\":true,\"id\":{},\"role\":\"{}\",\"term\":{},\"leader\":{},\"commit\":{},\"applied\":{},\
         \"last_index\":{},\"log_bytes\":{},\"snapshot_index\":{},\"snapshot_term\":{},\"peers\":[",
        s.node_id,
        role_name(s.role),
        s.term,
        s.leader_id,
        s.commit_index,
        s.applied_index,
        s.last_log_index,
        s.log_size_bytes,
        s.snapshot_index,
        s.snapshot_term,
    );
    for (i, p) in s.peers.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(out, "{comma}{{\"id\":{},\"match\":{},\"next\":{}}}", p.node_id, p.match_index, p.next_index);
    }
    out.push(']');
}

/// One line of `raftctl status --json`: the report of the node at `addr`.
pub fn status_json(addr: &str, report: &StatusReport) -> String {
    let mut out = String::from("{");
    push_report_fields(&mut out, addr, report);
    out.push('}');
    out
}

/// One line of `raftctl status --json` for a node that could not be asked.
pub fn status_error_json(addr: &str, error: &str) -> String {
    format!("{{\"addr\":{},\"ok\":false,\"error\":{}}}", json_str(addr), json_str(error))
}

/// The health verdict: `ok` and a one-line reason a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub ok: bool,
    pub reason: String,
}

/// What [`judge_health`] looks at.
#[derive(Clone, Copy, Debug)]
pub struct HealthInput {
    pub role: NodeRole,
    pub term: u64,
    pub leader_id: NodeId,
    pub commit_index: u64,
    pub applied_index: u64,
    pub recovering: bool,
    pub voters: usize,
    /// Other voters heard from within `election_timeout` (leader only).
    pub peers_heard: usize,
    pub election_timeout: Duration,
}

/// See the module doc.
pub fn judge_health(h: &HealthInput) -> Health {
    let verdict = |ok: bool, reason: String| Health { ok, reason };
    if h.role == NodeRole::Leader {
        let quorum = h.voters / 2 + 1;
        let heard = h.peers_heard + 1;
        let ms = h.election_timeout.as_millis();
        let text = format!("leader of term {}: heard from {heard} of {} voters within {ms} ms", h.term, h.voters);
        return if heard >= quorum {
            verdict(true, text)
        } else {
            verdict(false, format!("{text}; a quorum is {quorum}"))
        };
    }
    if h.leader_id == 0 {
        return verdict(false, format!("no known leader ({} in term {})", role_name(h.role), h.term));
    }
    if h.recovering {
        return verdict(false, format!("recovering lost log entries from leader {}", h.leader_id));
    }
    let lag = h.commit_index.saturating_sub(h.applied_index);
    if lag > HEALTH_APPLY_LAG_ENTRIES_MAX {
        return verdict(
            false,
            format!(
                "applied index {} is {lag} entries behind commit index {} (more than {HEALTH_APPLY_LAG_ENTRIES_MAX})",
                h.applied_index, h.commit_index
            ),
        );
    }
    let text = format!("following leader {} in term {}; {lag} entries to apply", h.leader_id, h.term);
    verdict(true, text)
}

/// Everything `/status` shows.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub report: StatusReport,
    /// The address clients and peers dial.
    pub client_addr: String,
    pub http_addr: Option<String>,
    pub voters: Vec<NodeId>,
    pub progress: Vec<FollowerProgress>,
    pub recovery: Option<(Recovery, &'static str)>,
    pub health: Health,
}

impl NodeStatus {
    /// The `/status` body: one JSON object and a newline.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        push_report_fields(&mut out, &self.client_addr, &self.report);
        out.push_str(",\"client_addr\":");
        push_json_str(&mut out, &self.client_addr);
        out.push_str(",\"http_addr\":");
        match &self.http_addr {
            Some(addr) => push_json_str(&mut out, addr),
            None => out.push_str("null"),
        }
        let voters: Vec<String> = self.voters.iter().map(|v| v.to_string()).collect();
        let _ = write!(out, ",\"voters\":[{}],\"progress\":[", voters.join(","));
        let last = self.report.last_log_index;
        for (i, p) in self.progress.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(
                out,
                "{comma}{{\"id\":{},\"match\":{},\"next\":{},\"state\":\"{}\",\"inflight\":{},\"lag\":{},\"active\":{}}}",
                p.id,
                p.matched,
                p.next,
                p.state,
                p.inflight,
                last.saturating_sub(p.matched),
                p.recent_active
            );
        }
        out.push_str("],\"recovery\":");
        match &self.recovery {
            None => out.push_str("null"),
            Some((guard, reason)) => {
                let index = if guard.index == u64::MAX { "null".to_string() } else { guard.index.to_string() };
                let _ = write!(out, "{{\"term\":{},\"index\":{index},\"reason\":", guard.term);
                push_json_str(&mut out, reason);
                out.push('}');
            }
        }
        let _ = write!(out, ",\"health\":{{\"ok\":{},\"reason\":", self.health.ok);
        push_json_str(&mut out, &self.health.reason);
        out.push_str("}}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PeerStatus;

    fn report() -> StatusReport {
        StatusReport {
            node_id: 1,
            role: NodeRole::Leader,
            term: 3,
            leader_id: 1,
            commit_index: 10,
            applied_index: 9,
            last_log_index: 12,
            log_size_bytes: 4096,
            snapshot_index: 0,
            snapshot_term: 0,
            peers: vec![PeerStatus { node_id: 2, match_index: 12, next_index: 13 }],
            http_addr: None,
        }
    }

    #[test]
    fn status_json_keeps_the_fields_raftctl_printed() {
        let expected = "{\"addr\":\"h:1\",\"ok\":true,\"id\":1,\"role\":\"leader\",\"term\":3,\"leader\":1,\
                        \"commit\":10,\"applied\":9,\"last_index\":12,\"log_bytes\":4096,\"snapshot_index\":0,\
                        \"snapshot_term\":0,\"peers\":[{\"id\":2,\"match\":12,\"next\":13}]}";
        assert_eq!(status_json("h:1", &report()), expected);
        assert_eq!(status_error_json("h\"1", "refused"), "{\"addr\":\"h\\\"1\",\"ok\":false,\"error\":\"refused\"}");
    }

    #[test]
    fn node_status_adds_what_only_the_node_knows() {
        let progress =
            FollowerProgress { id: 2, matched: 7, next: 8, state: "replicate", inflight: 3, recent_active: true };
        let status = NodeStatus {
            report: report(),
            client_addr: "h:1".into(),
            http_addr: Some("h:101".into()),
            voters: vec![1, 2, 3],
            progress: vec![progress],
            recovery: Some((Recovery::unknown_extent(2), "recovering since start-up")),
            health: Health { ok: false, reason: "x \"y\"".into() },
        };
        let json = status.to_json();
        assert!(json.starts_with("{\"addr\":\"h:1\",\"ok\":true,\"id\":1,"), "{json}");
        assert!(json.ends_with(
            ",\"client_addr\":\"h:1\",\"http_addr\":\"h:101\",\"voters\":[1,2,3],\"progress\":[{\"id\":2,\
             \"match\":7,\"next\":8,\"state\":\"replicate\",\"inflight\":3,\"lag\":5,\"active\":true}],\
             \"recovery\":{\"term\":2,\"index\":null,\"reason\":\"recovering since start-up\"},\
             \"health\":{\"ok\":false,\"reason\":\"x \\\"y\\\"\"}}\n"
        ));
    }

    fn input(role: NodeRole) -> HealthInput {
        HealthInput {
            role,
            term: 4,
            leader_id: 2,
            commit_index: 5_000,
            applied_index: 5_000,
            recovering: false,
            voters: 3,
            peers_heard: 0,
            election_timeout: Duration::from_millis(300),
        }
    }

    #[test]
    fn a_leader_is_healthy_only_with_a_quorum_heard_from() {
        let alone = judge_health(&input(NodeRole::Leader));
        assert!(!alone.ok, "{alone:?}");
        assert!(alone.reason.contains("heard from 1 of 3 voters within 300 ms"), "{}", alone.reason);
        let with_one = judge_health(&HealthInput { peers_heard: 1, ..input(NodeRole::Leader) });
        assert!(with_one.ok, "{with_one:?}");
        let five = HealthInput { voters: 5, peers_heard: 1, ..input(NodeRole::Leader) };
        assert!(!judge_health(&five).ok, "2 of 5 is no quorum");
    }

    #[test]
    fn a_follower_needs_a_leader_no_recovery_and_a_short_apply_lag() {
        assert!(judge_health(&input(NodeRole::Follower)).ok);
        let no_leader = judge_health(&HealthInput { leader_id: 0, ..input(NodeRole::Candidate) });
        assert_eq!(no_leader.reason, "no known leader (candidate in term 4)");
        assert!(!judge_health(&HealthInput { recovering: true, ..input(NodeRole::Follower) }).ok);
        let at_limit = HealthInput { applied_index: 5_000 - HEALTH_APPLY_LAG_ENTRIES_MAX, ..input(NodeRole::Follower) };
        assert!(judge_health(&at_limit).ok);
        let behind = HealthInput { applied_index: at_limit.applied_index - 1, ..at_limit };
        let verdict = judge_health(&behind);
        assert!(!verdict.ok && verdict.reason.contains("1001 entries behind"), "{verdict:?}");
    }
}
