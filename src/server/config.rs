//! Node configuration: what `raftd` parsed from its command line, validated.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::raft::NodeId;

/// Everything a node needs to start. Built by `raftd` from flags; every field is validated by
/// [`NodeConfig::validate`] before the node touches the network or the disk.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub cluster_id: u64,
    pub listen: SocketAddr,
    /// `--http-listen`: serve `/metrics`, `/status` and `/health` here (off when `None`).
    pub http_listen: Option<SocketAddr>,
    /// `--metrics off` clears this: no counter or histogram is updated (state gauges are still
    /// sampled when `/metrics` is rendered). For measuring what the updates cost.
    pub metrics_updates: bool,
    /// Every voter, this node included: id -> address (the address clients and peers dial).
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    pub tick: Duration,
    pub heartbeat_ticks: u32,
    pub election_ticks: u32,
    /// Take a snapshot (and compact the log) after this many applied entries...
    pub snapshot_every: u64,
    /// ...or once the entries written since the last snapshot reach this many bytes.
    pub snapshot_log_bytes: u64,
    /// Payload bytes of applied entries kept in memory to serve followers.
    pub log_window_bytes: u64,
    pub segment_bytes: u64,
    /// Client sessions the state machine remembers; the leader writes it into every registration
    /// it proposes, so eviction follows the log even if nodes disagree on this flag.
    pub sessions_max: u32,
}

impl NodeConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("--id must be a positive integer".into());
        }
        if !self.peers.contains_key(&self.id) {
            let ids: Vec<String> = self.peers.keys().map(|id| id.to_string()).collect();
            return Err(format!("--peers must include this node's own id {} (it lists {})", self.id, ids.join(", ")));
        }
        if self.tick.is_zero() {
            return Err("--tick-ms must be positive".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(format!(
                "--election-ticks ({}) must be greater than --heartbeat-ticks ({}), which must be positive",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        if self.http_listen.is_some_and(|http| http == self.listen) {
            return Err(format!("--http-listen {} is the same address as --listen", self.listen));
        }
        if self.snapshot_every == 0 {
            return Err("--snapshot-every must be positive".into());
        }
        if self.snapshot_log_bytes == 0 {
            return Err("--snapshot-log-mib must be positive".into());
        }
        if self.sessions_max == 0 || self.sessions_max > crate::kv::SESSIONS_MAX_LIMIT {
            let limit = crate::kv::SESSIONS_MAX_LIMIT;
            return Err(format!("--sessions-max must be between 1 and {limit}, got {}", self.sessions_max));
        }
        Ok(())
    }

    /// Resolves a peer's address for dialing.
    pub fn peer_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.peers.get(&id).and_then(|a| a.to_socket_addrs().ok()).and_then(|mut addrs| addrs.next())
    }
}

/// Parses `1=host:port,2=host:port,...` into an id -> address map.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((id, addr)) = item.split_once('=') else {
            return Err(format!("--peers entry {item:?} is not ID=HOST:PORT"));
        };
        let id: NodeId = id.trim().parse().map_err(|_| format!("--peers entry {item:?}: {id:?} is not a node id"))?;
        if id == 0 {
            return Err(format!("--peers entry {item:?}: node id 0 is reserved"));
        }
        let addr = addr.trim();
        if addr.to_socket_addrs().map(|mut a| a.next().is_none()).unwrap_or(true) {
            return Err(format!("--peers entry {item:?}: {addr:?} is not a resolvable HOST:PORT"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("--peers lists node {id} twice"));
        }
    }
    if peers.is_empty() {
        return Err("--peers is empty".into());
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject_garbage() {
        let peers = parse_peers("1=127.0.0.1:7001, 2=127.0.0.1:7002").expect("valid");
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[&2], "127.0.0.1:7002");
        assert!(parse_peers("1=127.0.0.1:7001,1=127.0.0.1:7002").unwrap_err().contains("twice"));
        assert!(parse_peers("x=127.0.0.1:7001").unwrap_err().contains("not a node id"));
        assert!(parse_peers("1:127.0.0.1:7001").unwrap_err().contains("ID=HOST:PORT"));
        assert!(parse_peers("1=nonsense").unwrap_err().contains("resolvable"));
        assert!(parse_peers("0=127.0.0.1:1").unwrap_err().contains("reserved"));
    }
}
