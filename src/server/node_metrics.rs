//! Every metric a node exports, registered once at start-up into one [`Registry`], and the labels
//! they use. `/metrics` renders the registry (Prometheus text format 0.0.4).
//!
//! Who updates what:
//! - counters and histograms on the hot path, by whoever sees the event: the replica (proposals,
//!   client replies, apply, ReadIndex, snapshots), the WAL lane thread (sync duration, batch
//!   size), the snapshot lane thread (save, install), the node and peer links (heartbeat
//!   round trips, bytes, redials, HTTP responses). Each update is one or two relaxed atomic
//!   operations on memory allocated here: no lock, no allocation (see `metrics`);
//! - state gauges (term, role, indexes, per-peer lag, connections, queues) are *sampled* just
//!   before each render ([`NodeMetrics::render`] takes a closure that sets them), so keeping
//!   them current costs the consensus path nothing at all.
//!
//! `raftd --metrics off` hands the hot-path handles to no one (the replica, the storage lanes, the
//! peer links and the reactor then update nothing); the sampled gauges still work.
//!
//! Invariants: names follow Prometheus conventions (namespace `mini_raft_`, base units,
//! `_total` counters; the registry refuses anything else), and label cardinality is bounded by
//! construction: fixed label sets ([`RequestType`] × [`Outcome`], [`ProposalFailure`], ...)
//! and one child per configured peer (at most `VOTERS_MAX`). The struct is shared between the
//! reactor thread and the storage threads through an `Arc`.

use std::sync::Arc;
use std::time::Duration;

use super::metrics::{Buckets, Counter, DynamicFamily, FixedFamily, Gauge, Histogram, MetricsError, Registry};
use crate::raft::NodeId;
use crate::wire::{ClientReply, ErrorCode, FrameBody};

/// Bounds of the latency histograms: 50 µs to 10 s, roughly ×2 per bucket.
const LATENCY_BOUNDS_US: [u64; 18] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];
/// Entries per WAL sync: 1 to 8192 (`ENTRIES_PER_APPEND_MAX`), ×2 per bucket.
const BATCH_ENTRIES_BOUNDS: [u64; 14] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];
/// Bytes per WAL sync: 256 B to 64 MiB, ×4 per bucket.
const BATCH_BYTES_BOUNDS: [u64; 10] =
    [256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20];
/// Snapshot sizes: 1 KiB to 1 GiB (`SNAPSHOT_BYTES_MAX`), ×4 per bucket.
const SNAPSHOT_BYTES_BOUNDS: [u64; 11] =
    [1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30];

/// The `type` label of `mini_raft_client_requests_total`: what a client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    Get,
    StaleGet,
    Set,
    Delete,
    Cas,
    Register,
    Status,
    /// Membership requests: member list / change, leadership transfer.
    Member,
}

impl RequestType {
    const LABELS: [&'static str; 8] = ["get", "stale_get", "set", "delete", "cas", "register", "status", "member"];

    fn index(self) -> usize {
        self as usize
    }

    /// The type of an encoded command, from its tag byte (`kv::command`); `None` if unknown.
    pub fn of_command(data: &[u8]) -> Option<RequestType> {
        use crate::kv::{COMMAND_TAG_CAS, COMMAND_TAG_DELETE, COMMAND_TAG_REGISTER, COMMAND_TAG_SET};
        match data.first().copied()? {
            COMMAND_TAG_SET => Some(RequestType::Set),
            COMMAND_TAG_DELETE => Some(RequestType::Delete),
            COMMAND_TAG_CAS => Some(RequestType::Cas),
            COMMAND_TAG_REGISTER => Some(RequestType::Register),
            _ => None,
        }
    }
}

/// The `outcome` label of `mini_raft_client_requests_total`, read off the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    NotFound,
    CasFailed,
    NotLeader,
    Overloaded,
    OutcomeUnknown,
    ShuttingDown,
    /// `SessionExpired`, `StaleSequence`, `SessionWindowFull`.
    SessionError,
    Error,
}

impl Outcome {
    const LABELS: [&'static str; 9] = [
        "ok",
        "not_found",
        "cas_failed",
        "not_leader",
        "overloaded",
        "outcome_unknown",
        "shutting_down",
        "session_error",
        "error",
    ];

    pub fn of_reply(body: &FrameBody) -> Outcome {
        match body {
            FrameBody::Reply(ClientReply::NotFound) => Outcome::NotFound,
            FrameBody::Reply(ClientReply::CasFailed { .. }) => Outcome::CasFailed,
            FrameBody::Reply(ClientReply::NotLeader { .. }) => Outcome::NotLeader,
            FrameBody::Reply(_) => Outcome::Ok,
            FrameBody::Error(e) => match e.code {
                ErrorCode::Overloaded => Outcome::Overloaded,
                ErrorCode::OutcomeUnknown => Outcome::OutcomeUnknown,
                ErrorCode::ShuttingDown => Outcome::ShuttingDown,
                ErrorCode::SessionExpired | ErrorCode::StaleSequence | ErrorCode::SessionWindowFull => {
                    Outcome::SessionError
                }
                _ => Outcome::Error,
            },
            _ => Outcome::Error,
        }
    }
}

/// The `reason` label of `mini_raft_proposals_failed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalFailure {
    NotLeader,
    Overloaded,
    /// Leadership lost, the index taken by another leader's entry, or covered by a snapshot.
    OutcomeUnknown,
    ShuttingDown,
}

impl ProposalFailure {
    const LABELS: [&'static str; 4] = ["not_leader", "overloaded", "outcome_unknown", "shutting_down"];

    /// The failure a write's reply reports, if it did not commit. A write the state machine
    /// refused (a session error) did commit: its entry is in the log.
    pub fn of_outcome(outcome: Outcome) -> Option<ProposalFailure> {
        match outcome {
            Outcome::NotLeader => Some(ProposalFailure::NotLeader),
            Outcome::Overloaded => Some(ProposalFailure::Overloaded),
            Outcome::OutcomeUnknown => Some(ProposalFailure::OutcomeUnknown),
            Outcome::ShuttingDown => Some(ProposalFailure::ShuttingDown),
            Outcome::Ok | Outcome::NotFound | Outcome::CasFailed | Outcome::SessionError | Outcome::Error => None,
        }
    }
}

/// The `op` label of the snapshot histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotOp {
    /// Serializing the frozen state machine (snapshot lane).
    Create,
    /// Writing and syncing the node's own snapshot file (snapshot lane).
    Save,
    /// Streaming a snapshot to a follower: the transfer's start to its last chunk queued.
    Send,
    /// Verifying, installing and decoding a received snapshot (snapshot lane).
    Install,
}

impl SnapshotOp {
    const LABELS: [&'static str; 4] = ["create", "save", "send", "install"];
}

/// The `kind` label of the connection gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnLabel {
    Handshake,
    Client,
    PeerInbound,
    PeerOutbound,
    Http,
}

impl ConnLabel {
    pub const ALL: [ConnLabel; 5] =
        [ConnLabel::Handshake, ConnLabel::Client, ConnLabel::PeerInbound, ConnLabel::PeerOutbound, ConnLabel::Http];
    const LABELS: [&'static str; 5] = ["handshake", "client", "peer_inbound", "peer_outbound", "http"];
}

/// `/metrics`, `/status`, `/health`, anything else: the `path` label of the render histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpPath {
    Metrics,
    Status,
    Health,
}

impl HttpPath {
    const LABELS: [&'static str; 3] = ["metrics", "status", "health"];
}

/// HTTP status codes a node answers with: the `code` label of `mini_raft_http_responses_total`.
pub const HTTP_CODES: [u16; 11] = [200, 400, 404, 405, 408, 413, 414, 431, 500, 503, 505];
const HTTP_CODE_LABELS: [&str; 11] = ["200", "400", "404", "405", "408", "413", "414", "431", "500", "503", "505"];

/// The metrics of one peer link (children of the `peer`-labelled families).
pub struct PeerMetrics {
    pub id: NodeId,
    pub match_lag_entries: Arc<Gauge>,
    pub inflight_appends: Arc<Gauge>,
    pub sent_bytes: Arc<Counter>,
    pub received_bytes: Arc<Counter>,
    pub heartbeat_rtt: Arc<Histogram>,
    pub reconnects: Arc<Counter>,
}

/// Gauges of the consensus state, sampled before each render.
pub struct StateGauges {
    pub term: Arc<Gauge>,
    pub role: Arc<FixedFamily<Gauge>>,
    pub leader_id: Arc<Gauge>,
    pub commit_index: Arc<Gauge>,
    pub applied_index: Arc<Gauge>,
    pub last_log_index: Arc<Gauge>,
    pub snapshot_index: Arc<Gauge>,
    pub log_size_bytes: Arc<Gauge>,
    pub recovering: Arc<Gauge>,
    pub proposals_pending: Arc<Gauge>,
    pub reads_pending: Arc<Gauge>,
    pub connections: Arc<FixedFamily<Gauge>>,
    pub queued_bytes: Arc<FixedFamily<Gauge>>,
}

/// Counters the core keeps itself (it has no metrics of its own, being pure): copied into
/// these before each render.
pub struct CoreCounters {
    pub elections_started: Arc<Counter>,
    pub pre_votes_started: Arc<Counter>,
    pub votes_granted: Arc<FixedFamily<Counter>>,
}

/// See the module doc.
pub struct NodeMetrics {
    registry: Registry,
    pub state: StateGauges,
    pub core: CoreCounters,
    pub leader_changes: Arc<Counter>,
    pub proposals_received: Arc<Counter>,
    pub proposals_committed: Arc<Counter>,
    pub proposals_failed: Arc<FixedFamily<Counter>>,
    pub client_requests: Arc<FixedFamily<Counter>>,
    pub proposal_commit_duration: Arc<Histogram>,
    pub apply_duration: Arc<Histogram>,
    pub read_index_duration: Arc<Histogram>,
    pub wal_sync_duration: Arc<Histogram>,
    pub wal_batch_entries: Arc<Histogram>,
    pub wal_batch_bytes: Arc<Histogram>,
    pub snapshot_duration: Arc<FixedFamily<Histogram>>,
    pub snapshot_size: Arc<FixedFamily<Histogram>>,
    pub http_responses: Arc<FixedFamily<Counter>>,
    pub http_render_duration: Arc<FixedFamily<Histogram>>,
    /// One per peer, ascending by id.
    pub peers: Vec<PeerMetrics>,
}

fn latency_buckets() -> Result<Buckets, MetricsError> {
    let bounds: Vec<Duration> = LATENCY_BOUNDS_US.iter().map(|&us| Duration::from_micros(us)).collect();
    Buckets::durations(&bounds)
}

impl NodeMetrics {
    /// Registers every metric; `peers` are the other voters (this node excluded). Fails only on
    /// a programming error (a bad name), which the unit tests catch.
    pub fn new(peers: &[NodeId]) -> Result<NodeMetrics, MetricsError> {
        let mut registry = Registry::new();
        let state = register_state(&mut registry)?;
        let core = register_core(&mut registry)?;
        let r = &mut registry;
        let leader_changes = r.counter(
            "mini_raft_leader_changes_total",
            "Times this node saw a new leadership: a (term, leader) pair with a known leader it had not seen.",
        )?;
        let proposals_received = r.counter(
            "mini_raft_proposals_received_total",
            "Writes and session registrations that arrived at this node; each ends committed, failed or pending.",
        )?;
        let proposals_committed = r.counter(
            "mini_raft_proposals_committed_total",
            "Proposals this node made as leader that committed and applied as its own entry.",
        )?;
        let failures = FixedFamily::new(&["reason"], &[&ProposalFailure::LABELS], Counter::new)?;
        let proposals_failed =
            r.register_fixed_family("mini_raft_proposals_failed_total", "Proposals that failed, by reason.", failures)?;
        let requests = FixedFamily::new(&["type", "outcome"], &[&RequestType::LABELS, &Outcome::LABELS], Counter::new)?;
        let client_requests = r.register_fixed_family(
            "mini_raft_client_requests_total",
            "Client requests answered by this node, by request type and outcome.",
            requests,
        )?;
        let latency = latency_buckets()?;
        let proposal_commit_duration = r.histogram(
            "mini_raft_proposal_commit_duration_seconds",
            "Leader only: time from proposing a write until it committed and applied here.",
            &latency,
        )?;
        let apply_duration = r.histogram(
            "mini_raft_apply_duration_seconds",
            "Time to apply one batch of committed entries to the state machine.",
            &latency,
        )?;
        let read_index_duration = r.histogram(
            "mini_raft_read_index_duration_seconds",
            "Leader only: time from starting a ReadIndex round until a quorum confirmed it.",
            &latency,
        )?;
        let storage = register_storage(r, &latency)?;
        let (http_responses, http_render_duration) = register_http(r, &latency)?;
        let peers = register_peers(r, peers, &latency)?;
        r.register_process_metrics()?;
        Ok(NodeMetrics {
            registry,
            state,
            core,
            leader_changes,
            proposals_received,
            proposals_committed,
            proposals_failed,
            client_requests,
            proposal_commit_duration,
            apply_duration,
            read_index_duration,
            wal_sync_duration: storage.0,
            wal_batch_entries: storage.1,
            wal_batch_bytes: storage.2,
            snapshot_duration: storage.3,
            snapshot_size: storage.4,
            http_responses,
            http_render_duration,
            peers,
        })
    }

    /// Appends the exposition text to `out`.
    pub fn render(&self, out: &mut String) {
        self.registry.render(out);
    }

    /// Number of metric names registered.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.registry.is_empty()
    }

    /// Counts one answered client request.
    pub fn count_request(&self, kind: RequestType, outcome: Outcome) {
        if let Some(counter) = self.client_requests.get(&[kind.index(), outcome as usize]) {
            counter.inc();
        }
    }

    pub fn count_proposal_failure(&self, failure: ProposalFailure) {
        if let Some(counter) = self.proposals_failed.child(failure as usize) {
            counter.inc();
        }
    }

    pub fn observe_snapshot(&self, op: SnapshotOp, duration: Duration, size_bytes: Option<u64>) {
        if let Some(histogram) = self.snapshot_duration.child(op as usize) {
            histogram.observe_duration(duration);
        }
        if let (Some(size), Some(histogram)) = (size_bytes, self.snapshot_size.child(op as usize)) {
            histogram.observe(size);
        }
    }

    pub fn count_http_response(&self, code: u16) {
        let position = |wanted: u16| HTTP_CODES.iter().position(|&c| c == wanted);
        // A code missing from the list is a bug; count it as a 500 rather than not at all.
        if let Some(counter) = position(code).or_else(|| position(500)).and_then(|i| self.http_responses.child(i)) {
            counter.inc();
        }
    }

    pub fn observe_render(&self, path: HttpPath, duration: Duration) {
        if let Some(histogram) = self.http_render_duration.child(path as usize) {
            histogram.observe_duration(duration);
        }
    }

    pub fn peer(&self, id: NodeId) -> Option<&PeerMetrics> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// Raises a counter the core keeps to `value` (counters only grow: a smaller value, which a
    /// core never reports, changes nothing).
    pub fn catch_up(counter: &Counter, value: u64) {
        let seen = counter.get();
        if value > seen {
            counter.add(value - seen);
        }
    }
}

fn register_state(r: &mut Registry) -> Result<StateGauges, MetricsError> {
    let roles = FixedFamily::new(&["role"], &[&["follower", "pre_candidate", "candidate", "leader"]], Gauge::new)?;
    let connections = FixedFamily::new(&["kind"], &[&ConnLabel::LABELS], Gauge::new)?;
    let queued = FixedFamily::new(&["kind"], &[&ConnLabel::LABELS], Gauge::new)?;
    Ok(StateGauges {
        term: r.gauge("mini_raft_term", "Current Raft term.")?,
        role: r.register_fixed_family("mini_raft_role", "1 for this node's current role, 0 for the others.", roles)?,
        leader_id: r.gauge("mini_raft_leader_id", "Id of the leader this node knows, 0 if none.")?,
        commit_index: r.gauge("mini_raft_commit_index", "Highest log index this node knows committed.")?,
        applied_index: r.gauge("mini_raft_applied_index", "Highest log index applied to the state machine.")?,
        last_log_index: r.gauge("mini_raft_last_log_index", "Last index in this node's log.")?,
        snapshot_index: r.gauge("mini_raft_snapshot_index", "Index of the newest snapshot, 0 if none.")?,
        log_size_bytes: r.gauge("mini_raft_log_size_bytes", "Bytes of write-ahead log on disk.")?,
        recovering: r.gauge("mini_raft_recovering", "1 while this node recovers lost log entries from its peers.")?,
        proposals_pending: r.gauge("mini_raft_proposals_pending", "Writes proposed or queued, not yet answered.")?,
        reads_pending: r
            .gauge("mini_raft_reads_pending", "Linearizable reads waiting for a ReadIndex round or apply.")?,
        connections: r.register_fixed_family("mini_raft_connections", "Open connections by kind.", connections)?,
        queued_bytes: r.register_fixed_family(
            "mini_raft_connection_queued_bytes",
            "Bytes queued for writing on connections, by kind.",
            queued,
        )?,
    })
}

fn register_core(r: &mut Registry) -> Result<CoreCounters, MetricsError> {
    let granted = FixedFamily::new(&["kind"], &[&["vote", "pre_vote"]], Counter::new)?;
    Ok(CoreCounters {
        elections_started: r
            .counter("mini_raft_elections_started_total", "Elections this node started as candidate.")?,
        pre_votes_started: r.counter("mini_raft_pre_votes_started_total", "Pre-vote rounds this node started.")?,
        votes_granted: r.register_fixed_family(
            "mini_raft_votes_granted_total",
            "Votes and pre-votes this node granted to candidates.",
            granted,
        )?,
    })
}

type Family<M> = Arc<FixedFamily<M>>;
type StorageHandles = (Arc<Histogram>, Arc<Histogram>, Arc<Histogram>, Family<Histogram>, Family<Histogram>);

fn register_storage(r: &mut Registry, latency: &Buckets) -> Result<StorageHandles, MetricsError> {
    let sync = r.histogram(
        "mini_raft_wal_sync_duration_seconds",
        "WAL lane: time of one sync (fdatasync/msync) that made a batch durable.",
        latency,
    )?;
    let entries = Buckets::values(&BATCH_ENTRIES_BOUNDS)?;
    let entries = r.histogram("mini_raft_wal_batch_entries", "Entries made durable by one WAL sync.", &entries)?;
    let bytes = Buckets::values(&BATCH_BYTES_BOUNDS)?;
    let bytes = r.histogram("mini_raft_wal_batch_bytes", "Entry bytes made durable by one WAL sync.", &bytes)?;
    let durations = FixedFamily::new(&["op"], &[&SnapshotOp::LABELS], || Histogram::new(latency))?;
    let durations = r.register_fixed_family(
        "mini_raft_snapshot_duration_seconds",
        "Snapshot work by operation: create (serialize), save (write and sync), send (stream to a follower), \
         install (verify and decode a received one).",
        durations,
    )?;
    let sizes = Buckets::values(&SNAPSHOT_BYTES_BOUNDS)?;
    let sizes = FixedFamily::new(&["op"], &[&SnapshotOp::LABELS], || Histogram::new(&sizes))?;
    let sizes =
        r.register_fixed_family("mini_raft_snapshot_size_bytes", "Snapshot image sizes by operation.", sizes)?;
    Ok((sync, entries, bytes, durations, sizes))
}

fn register_http(r: &mut Registry, latency: &Buckets) -> Result<(Family<Counter>, Family<Histogram>), MetricsError> {
    let codes = FixedFamily::new(&["code"], &[&HTTP_CODE_LABELS], Counter::new)?;
    let responses =
        r.register_fixed_family("mini_raft_http_responses_total", "HTTP responses by status code.", codes)?;
    let renders = FixedFamily::new(&["path"], &[&HttpPath::LABELS], || Histogram::new(latency))?;
    let renders = r.register_fixed_family(
        "mini_raft_http_render_duration_seconds",
        "Time the event loop spent producing an HTTP response body, by endpoint.",
        renders,
    )?;
    Ok((responses, renders))
}

fn register_peers(r: &mut Registry, peers: &[NodeId], latency: &Buckets) -> Result<Vec<PeerMetrics>, MetricsError> {
    let lag = r.register_dynamic_family(
        "mini_raft_peer_match_lag_entries",
        "Leader only: entries between the leader's last index and what the peer is known to match.",
        DynamicFamily::new(&["peer"], Gauge::new)?,
    )?;
    let inflight = r.register_dynamic_family(
        "mini_raft_peer_inflight_appends",
        "Leader only: appends sent to the peer and not yet acknowledged.",
        DynamicFamily::new(&["peer"], Gauge::new)?,
    )?;
    let sent = r.register_dynamic_family(
        "mini_raft_peer_sent_bytes_total",
        "Bytes written to the peer's connections.",
        DynamicFamily::new(&["peer"], Counter::new)?,
    )?;
    let received = r.register_dynamic_family(
        "mini_raft_peer_received_bytes_total",
        "Bytes read from the peer's connections.",
        DynamicFamily::new(&["peer"], Counter::new)?,
    )?;
    let latency = latency.clone();
    let rtt = r.register_dynamic_family(
        "mini_raft_peer_heartbeat_rtt_seconds",
        "Leader only: time from sending a heartbeat to the peer until its response arrived.",
        DynamicFamily::new(&["peer"], move || Histogram::new(&latency))?,
    )?;
    let reconnects = r.register_dynamic_family(
        "mini_raft_peer_reconnects_total",
        "Dials to the peer after the first one (after a dropped connection or a failed dial).",
        DynamicFamily::new(&["peer"], Counter::new)?,
    )?;
    let mut out = Vec::with_capacity(peers.len());
    let mut ids = peers.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let label = id.to_string();
        let values = [label.as_str()];
        out.push(PeerMetrics {
            id,
            match_lag_entries: lag.add(&values)?,
            inflight_appends: inflight.add(&values)?,
            sent_bytes: sent.add(&values)?,
            received_bytes: received.add(&values)?,
            heartbeat_rtt: rtt.add(&values)?,
            reconnects: reconnects.add(&values)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_with_a_valid_name() {
        let metrics = NodeMetrics::new(&[2, 3]).expect("registration");
        assert!(metrics.len() >= 40, "{} metrics", metrics.len());
        assert_eq!(metrics.peers.len(), 2);
        let mut text = String::new();
        metrics.render(&mut text);
        assert!(text.contains("mini_raft_peer_sent_bytes_total{peer=\"3\"} 0\n"), "{text}");
        assert!(text.contains("mini_raft_client_requests_total{type=\"cas\",outcome=\"cas_failed\"} 0\n"));
    }

    #[test]
    fn labels_index_their_families() {
        let metrics = NodeMetrics::new(&[2]).expect("registration");
        metrics.count_request(RequestType::Status, Outcome::Error);
        metrics.count_proposal_failure(ProposalFailure::ShuttingDown);
        metrics.count_http_response(431);
        metrics.count_http_response(999);
        metrics.observe_snapshot(SnapshotOp::Install, Duration::from_millis(3), Some(5000));
        let mut text = String::new();
        metrics.render(&mut text);
        for line in [
            "mini_raft_client_requests_total{type=\"status\",outcome=\"error\"} 1\n",
            "mini_raft_proposals_failed_total{reason=\"shutting_down\"} 1\n",
            "mini_raft_http_responses_total{code=\"431\"} 1\n",
            "mini_raft_http_responses_total{code=\"500\"} 1\n",
            "mini_raft_snapshot_size_bytes_count{op=\"install\"} 1\n",
            "mini_raft_snapshot_duration_seconds_sum{op=\"install\"} 0.003\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn command_tags_name_their_request_type() {
        let set =
            crate::kv::Command::Set { session: crate::kv::Session::serial(1, 1), key: "k".into(), value: "v".into() };
        assert_eq!(RequestType::of_command(&set.to_bytes()), Some(RequestType::Set));
        let register = crate::kv::Command::Register { sessions_max: 5 };
        assert_eq!(RequestType::of_command(&register.to_bytes()), Some(RequestType::Register));
        assert_eq!(RequestType::of_command(&[]), None);
        assert_eq!(RequestType::of_command(&[0x01]), None);
    }

    #[test]
    fn core_counters_only_grow() {
        let counter = Counter::new();
        NodeMetrics::catch_up(&counter, 5);
        NodeMetrics::catch_up(&counter, 3);
        assert_eq!(counter.get(), 5);
    }
}
