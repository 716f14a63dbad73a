//! The node's HTTP endpoints, answered on the event loop from the state it holds:
//!
//! - `GET /metrics`: the registry in the Prometheus text format 0.0.4, state gauges sampled first;
//! - `GET /status`: the node's status as one JSON object (`status.rs` documents the shape);
//! - `GET /health`: `200` or `503` with a one-line reason (`status::judge_health`).
//!
//! `HEAD` gets the same headers without a body; any other path is `404`. Each response is built
//! in one reused buffer. Cost, measured on the 2-core VM (about 150 series with 3 peers):
//! rendering `/metrics` takes tens of microseconds, so even the reactor's per-poll cap of
//! renders (`HTTP_REQUESTS_PER_POLL_MAX`) holds the loop for well under a tick.

use std::time::{Duration, Instant};

use super::Node;
use crate::server::http::{Request, Response, Status, CONTENT_TYPE_JSON, CONTENT_TYPE_TEXT};
use crate::server::metrics;
use crate::server::node_metrics::{ConnLabel, HttpPath};
use crate::server::status::{judge_health, Health, HealthInput, NodeStatus};
use crate::wire::NodeRole;

impl Node {
    pub(super) fn serve_http(&mut self, token: usize, serial: u64, request: Request) {
        let started = Instant::now();
        let (status, content_type, path) = match request.path.as_str() {
            "/metrics" => {
                self.render_metrics();
                (Status::Ok, metrics::CONTENT_TYPE, Some(HttpPath::Metrics))
            }
            "/status" => {
                self.http_body.clear();
                let status = self.node_status();
                self.http_body.push_str(&status.to_json());
                (Status::Ok, CONTENT_TYPE_JSON, Some(HttpPath::Status))
            }
            "/health" => {
                let health = self.health();
                self.http_body.clear();
                self.http_body.push_str(&health.reason);
                self.http_body.push('\n');
                let status = if health.ok { Status::Ok } else { Status::ServiceUnavailable };
                (status, CONTENT_TYPE_TEXT, Some(HttpPath::Health))
            }
            other => {
                self.http_body.clear();
                self.http_body.push_str(&format!("no such path {other:?}; try /metrics, /status or /health\n"));
                (Status::NotFound, CONTENT_TYPE_TEXT, None)
            }
        };
        let response = Response::answer(&request, status, content_type, self.http_body.as_bytes());
        if let Some(path) = path {
            self.metrics.observe_render(path, started.elapsed());
        }
        self.reactor.http_respond(token, serial, response, status.code(), request.keep_alive);
    }

    /// Samples the state gauges and renders every metric into the body buffer.
    fn render_metrics(&mut self) {
        self.replica.sample_metrics(&self.metrics);
        let counts = self.reactor.connection_counts();
        for label in ConnLabel::ALL {
            let (open, queued) = counts[label as usize];
            if let Some(gauge) = self.metrics.state.connections.child(label as usize) {
                gauge.set_u64(open as u64);
            }
            if let Some(gauge) = self.metrics.state.queued_bytes.child(label as usize) {
                gauge.set_u64(queued as u64);
            }
        }
        self.http_body.clear();
        self.metrics.render(&mut self.http_body);
    }

    /// The longest election timeout: a leader that heard from a quorum within it is healthy.
    fn health_window(&self) -> Duration {
        self.cfg.tick * self.cfg.election_ticks.saturating_mul(2)
    }

    fn health(&self) -> Health {
        let report = self.replica.status_report();
        let raft = self.replica.raft();
        judge_health(&HealthInput {
            role: report.role,
            term: report.term,
            leader_id: report.leader_id,
            commit_index: report.commit_index,
            applied_index: report.applied_index,
            recovering: raft.recovery().is_some(),
            voters: raft.voters().len(),
            peers_heard: if report.role == NodeRole::Leader {
                self.peers.heard_within(Instant::now(), self.health_window())
            } else {
                0
            },
            election_timeout: self.health_window(),
        })
    }

    fn node_status(&self) -> NodeStatus {
        let raft = self.replica.raft();
        let mut report = self.replica.status_report();
        report.http_addr = self.replica.http_addr().map(str::to_string);
        NodeStatus {
            client_addr: self.peers.address(self.cfg.id).map_or_else(|| self.cfg.listen.to_string(), str::to_string),
            http_addr: report.http_addr.clone(),
            voters: raft.voters(),
            progress: raft.follower_progress(),
            recovery: raft.recovery().map(|guard| (guard, raft.recovery_reason().unwrap_or("recovering"))),
            health: self.health(),
            report,
        }
    }
}
