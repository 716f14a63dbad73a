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
    /// `--wal-sync loop`: ready batches are synced on the event loop while the WAL thread is
    /// idle (see `wal_lane.rs`); `thread`: always on the WAL thread.
    pub wal_on_loop: bool,
    /// Every voter, this node included: id -> the address this node dials to reach it (and, unless
    /// `client_addrs` says otherwise, the address clients are sent to).
    pub peers: BTreeMap<NodeId, String>,
    /// `--client-addrs`: id -> the address a member serves clients on, where a `NotLeader` reply
    /// sends them. Members not listed are named by their `peers` address. Differs from `peers` when
    /// peers reach each other through something clients must not use (a proxy, another network).
    pub client_addrs: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    pub tick: Duration,
    pub heartbeat_ticks: u32,
    pub election_ticks: u32,
    /// Also take a snapshot after this many applied entries (`u64::MAX`: only the byte trigger)...
    pub snapshot_every: u64,
    /// ...or once the entries written since the last snapshot reach max(this, the last image size) bytes.
    pub snapshot_log_bytes: u64,
    /// Payload bytes of applied entries kept in memory to serve followers.
    pub log_window_bytes: u64,
    pub segment_bytes: u64,
    /// Client sessions the state machine remembers; the leader writes it into every registration
    /// it proposes, so eviction follows the log even if nodes disagree on this flag.
    pub sessions_max: u32,
    /// `--join`: start with no configuration and wait to be added by the cluster's leader
    /// (`raftctl member add`); `--peers` then names existing members, and need not list this node.
    pub join: bool,
}

impl NodeConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("--id must be a positive integer".into());
        }
        if !self.join && !self.peers.contains_key(&self.id) {
            let ids: Vec<String> = self.peers.keys().map(|id| id.to_string()).collect();
            return Err(format!("--peers must include this node's own id {} (it lists {})", self.id, ids.join(", ")));
        }
        if let Some(stranger) = self.client_addrs.keys().find(|id| !self.peers.contains_key(id)) {
            return Err(format!("--client-addrs names node {stranger}, which is not in --peers"));
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

    /// The address clients are sent to for each member: its `client_addrs` entry, else its `peers` one.
    pub fn client_addresses(&self) -> BTreeMap<NodeId, String> {
        let mut addresses = self.peers.clone();
        addresses.extend(self.client_addrs.iter().map(|(&id, addr)| (id, addr.clone())));
        addresses
    }

    /// Resolves a peer's address for dialing.
    pub fn peer_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.peers.get(&id).and_then(|a| a.to_socket_addrs().ok()).and_then(|mut addrs| addrs.next())
    }
}

/// Parses `1=host:port,2=host:port,...` into an id -> address map.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>, String> {
    parse_addr_map(text, "--peers")
}

/// Parses `1=host:port,2=host:port,...` given to `flag` into an id -> address map: ids positive
/// and distinct, every address resolvable, at least one entry.
pub fn parse_addr_map(text: &str, flag: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut map = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((id, addr)) = item.split_once('=') else {
            return Err(format!("{flag} entry {item:?} is not ID=HOST:PORT"));
        };
        let id: NodeId = id.trim().parse().map_err(|_| format!("{flag} entry {item:?}: {id:?} is not a node id"))?;
        if id == 0 {
            return Err(format!("{flag} entry {item:?}: node id 0 is reserved"));
        }
        let addr = addr.trim();
        if addr.len() > crate::wire::ADDRESS_BYTES_MAX {
            return Err(format!(
                "{flag} entry for node {id}: the address is above {} bytes",
                crate::wire::ADDRESS_BYTES_MAX
            ));
        }
        if addr.to_socket_addrs().map(|mut a| a.next().is_none()).unwrap_or(true) {
            return Err(format!("{flag} entry {item:?}: {addr:?} is not a resolvable HOST:PORT"));
        }
        if map.insert(id, addr.to_string()).is_some() {
            return Err(format!("{flag} lists node {id} twice"));
        }
    }
    if map.is_empty() {
        return Err(format!("{flag} is empty"));
    }
    Ok(map)
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
        let error = parse_addr_map("1=127.0.0.1:1,1=127.0.0.1:2", "--client-addrs").unwrap_err();
        assert!(error.contains("--client-addrs lists node 1 twice"), "{error}");
    }

    fn config(peers: &str, client_addrs: &str) -> NodeConfig {
        NodeConfig {
            id: 1,
            cluster_id: 1,
            listen: "127.0.0.1:7001".parse().expect("address"),
            http_listen: None,
            metrics_updates: true,
            wal_on_loop: true,
            peers: parse_peers(peers).expect("peers"),
            client_addrs: if client_addrs.is_empty() {
                BTreeMap::new()
            } else {
                parse_addr_map(client_addrs, "--client-addrs").expect("client addrs")
            },
            data_dir: PathBuf::from("data"),
            tick: Duration::from_millis(10),
            heartbeat_ticks: 5,
            election_ticks: 15,
            snapshot_every: u64::MAX,
            snapshot_log_bytes: 64 << 20,
            log_window_bytes: 16 << 20,
            segment_bytes: 64 << 20,
            sessions_max: 10_000,
            join: false,
        }
    }

    #[test]
    fn client_addresses_override_peer_addresses_member_by_member() {
        let cfg = config("1=127.0.0.1:7001,2=127.0.0.1:9002,3=127.0.0.1:9003", "2=127.0.0.1:7002");
        cfg.validate().expect("valid");
        let addresses = cfg.client_addresses();
        assert_eq!(addresses[&1], "127.0.0.1:7001");
        assert_eq!(addresses[&2], "127.0.0.1:7002");
        assert_eq!(addresses[&3], "127.0.0.1:9003");
        let stranger = config("1=127.0.0.1:7001,2=127.0.0.1:9002", "4=127.0.0.1:7004");
        assert!(stranger.validate().unwrap_err().contains("node 4, which is not in --peers"));
    }
}
