//! One look at every node for `raftctl watch`, all nodes in parallel, each bounded in time:
//! the binary `Status` request (with the extension that names the node's HTTP address,
//! `protocol.md` §7.2) for the row, then `GET /metrics` from that address for the counters and
//! the commit-latency histogram.
//!
//! Only the few series watch shows are kept from a page ([`Metrics`]); the page itself is read
//! up to [`METRICS_PAGE_BYTES_MAX`].

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use mini_raft::client::{Client, ClientError, ClientOptions};
use mini_raft::wire::StatusReport;

/// Largest `/metrics` page read (a node's page is tens of KiB).
pub const METRICS_PAGE_BYTES_MAX: usize = 4 << 20;
/// The histogram whose percentiles watch shows.
const COMMIT_LATENCY: &str = "mini_raft_proposal_commit_duration_seconds_bucket{le=\"";
const REQUESTS: &str = "mini_raft_client_requests_total{";
/// Outcomes of a request that was served (a write that took effect, a read that answered).
const SERVED_OUTCOMES: [&str; 3] = ["ok", "not_found", "cas_failed"];

/// The series of one `/metrics` page that watch uses. Counters are cumulative since the node
/// started; rates come from differences between two looks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Writes served (set, delete, cas).
    pub writes: f64,
    /// Reads served (linearizable and stale gets).
    pub reads: f64,
    pub leader_changes: f64,
    pub elections: f64,
    /// Cumulative buckets of the proposal-to-commit histogram: (upper bound in seconds, count),
    /// `+Inf` last.
    pub commit_latency: Vec<(f64, f64)>,
}

/// What one look at one node found.
#[derive(Clone, Debug)]
pub struct NodeSample {
    pub addr: String,
    pub status: Result<StatusReport, String>,
    /// `None` when the node reports no HTTP listener (or did not answer at all).
    pub metrics: Option<Result<Metrics, String>>,
}

/// Time limits of one look.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub connect: Duration,
    pub request: Duration,
}

/// Looks at every node of `cluster` in parallel.
pub fn sample_all(cluster: &[String], cluster_id: u64, limits: Limits) -> Vec<NodeSample> {
    thread::scope(|scope| {
        let handles: Vec<_> = cluster
            .iter()
            .map(|addr| (addr.clone(), scope.spawn(move || sample_node(addr, cluster_id, limits))))
            .collect();
        handles
            .into_iter()
            .map(|(addr, handle)| {
                handle.join().unwrap_or_else(|_| NodeSample {
                    addr,
                    status: Err("sampling thread panicked".into()),
                    metrics: None,
                })
            })
            .collect()
    })
}

fn sample_node(addr: &str, cluster_id: u64, limits: Limits) -> NodeSample {
    let options = ClientOptions {
        cluster_id,
        deadline: limits.connect + limits.request,
        connect_timeout: limits.connect,
        request_timeout: limits.request,
    };
    let status = Client::new(vec![addr.to_string()], options)
        .and_then(|mut client| client.status_detailed(addr))
        .map(|answer| answer.value)
        .map_err(|e| match e {
            ClientError::Node { failure, .. } => failure,
            other => other.to_string(),
        });
    let http_addr = status.as_ref().ok().and_then(|s| s.http_addr.clone()).filter(|a| !a.is_empty());
    let metrics = http_addr.map(|http| fetch_metrics(&http, limits));
    NodeSample { addr: addr.to_string(), status, metrics }
}

/// `GET /metrics` from `http_addr`, parsed.
pub fn fetch_metrics(http_addr: &str, limits: Limits) -> Result<Metrics, String> {
    let page = http_get(http_addr, "/metrics", limits)?;
    Ok(parse_metrics(&page))
}

/// A minimal blocking HTTP/1.1 GET: one request, `Connection: close`, the body of a 200.
fn http_get(http_addr: &str, path: &str, limits: Limits) -> Result<String, String> {
    let addr = http_addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("cannot resolve {http_addr}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, limits.connect).map_err(|e| format!("http {http_addr}: {e}"))?;
    let until = Instant::now() + limits.request;
    stream.set_write_timeout(Some(limits.request)).map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {http_addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("http {http_addr}: {e}"))?;
    let mut page = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("http {http_addr}: no complete answer within {:?}", limits.request));
        }
        stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if page.len() + n > METRICS_PAGE_BYTES_MAX => {
                return Err(format!("http {http_addr}: page over {METRICS_PAGE_BYTES_MAX} bytes"))
            }
            Ok(n) => page.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("http {http_addr}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&page);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("http {http_addr}: no header end"))?;
    let status_line = head.lines().next().unwrap_or("");
    if status_line.split(' ').nth(1) != Some("200") {
        return Err(format!("http {http_addr}: {status_line}"));
    }
    Ok(body.to_string())
}

/// `key="value"` pairs of a label set without braces (values without escapes suffice here:
/// the labels watch reads are fixed words).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| pair.strip_prefix(name)?.strip_prefix("=\"")?.strip_suffix('"'))
}

/// The series watch needs from a Prometheus text page; everything else is ignored.
pub fn parse_metrics(page: &str) -> Metrics {
    let mut m = Metrics::default();
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        if let Some(rest) = series.strip_prefix(COMMIT_LATENCY) {
            let bound = rest.trim_end_matches("\"}");
            let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().unwrap_or(f64::NAN) };
            if !bound.is_nan() {
                m.commit_latency.push((bound, value));
            }
        } else if let Some(labels) = series.strip_prefix(REQUESTS).and_then(|r| r.strip_suffix('}')) {
            let served = label(labels, "outcome").is_some_and(|o| SERVED_OUTCOMES.contains(&o));
            match label(labels, "type") {
                Some("set" | "delete" | "cas") if served => m.writes += value,
                Some("get" | "stale_get") if served => m.reads += value,
                _ => {}
            }
        } else if series == "mini_raft_leader_changes_total" {
            m.leader_changes = value;
        } else if series == "mini_raft_elections_started_total" {
            m.elections = value;
        }
    }
    m
}

/// The `q` quantile (0..=1) of cumulative buckets, interpolated inside its bucket as Prometheus's
/// `histogram_quantile` does; `None` without observations. A quantile in the `+Inf` bucket is
/// the highest finite bound.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, cumulative) in buckets {
        if cumulative >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = cumulative - lower.1;
            let fraction = if in_bucket > 0.0 { (rank - lower.1) / in_bucket } else { 1.0 };
            return Some(lower.0 + (bound - lower.0) * fraction);
        }
        lower = (bound, cumulative);
    }
    Some(lower.0)
}

/// `later - earlier` bucket by bucket (a node restarted in between: `later` itself).
pub fn bucket_delta(earlier: &[(f64, f64)], later: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let same_shape = earlier.len() == later.len() && earlier.iter().zip(later).all(|(a, b)| a.0 == b.0);
    let reset = !same_shape || earlier.iter().zip(later).any(|(a, b)| b.1 < a.1);
    if reset {
        return later.to_vec();
    }
    earlier.iter().zip(later).map(|(a, b)| (b.0, b.1 - a.1)).collect()
}

/// Adds `more` into `total` bucket by bucket (`total` empty: takes `more`'s shape).
pub fn bucket_add(total: &mut Vec<(f64, f64)>, more: &[(f64, f64)]) {
    if total.is_empty() {
        total.extend_from_slice(more);
    } else if total.len() == more.len() {
        for (t, m) in total.iter_mut().zip(more) {
            t.1 += m.1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# HELP mini_raft_client_requests_total Client requests.
# TYPE mini_raft_client_requests_total counter
mini_raft_client_requests_total{type=\"set\",outcome=\"ok\"} 10
mini_raft_client_requests_total{type=\"set\",outcome=\"not_leader\"} 99
mini_raft_client_requests_total{type=\"cas\",outcome=\"cas_failed\"} 2
mini_raft_client_requests_total{type=\"get\",outcome=\"ok\"} 5
mini_raft_client_requests_total{type=\"stale_get\",outcome=\"not_found\"} 1
mini_raft_client_requests_total{type=\"status\",outcome=\"ok\"} 7
mini_raft_leader_changes_total 3
mini_raft_elections_started_total 1
mini_raft_proposal_commit_duration_seconds_bucket{le=\"0.001\"} 4
mini_raft_proposal_commit_duration_seconds_bucket{le=\"0.002\"} 8
mini_raft_proposal_commit_duration_seconds_bucket{le=\"+Inf\"} 10
mini_raft_proposal_commit_duration_seconds_sum 0.02
";

    #[test]
    fn a_page_yields_the_series_watch_shows() {
        let m = parse_metrics(PAGE);
        assert_eq!((m.writes, m.reads, m.leader_changes, m.elections), (12.0, 6.0, 3.0, 1.0));
        assert_eq!(m.commit_latency, vec![(0.001, 4.0), (0.002, 8.0), (f64::INFINITY, 10.0)]);
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let buckets = vec![(0.001, 4.0), (0.002, 8.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(&buckets, 0.2), Some(0.0005));
        let p50 = quantile(&buckets, 0.5).unwrap();
        assert!((p50 - 0.00125).abs() < 1e-12, "{p50}");
        assert_eq!(quantile(&buckets, 0.99), Some(0.002), "the +Inf bucket reports the last finite bound");
        assert_eq!(quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn deltas_survive_a_restart() {
        let a = vec![(1.0, 5.0), (f64::INFINITY, 9.0)];
        let b = vec![(1.0, 7.0), (f64::INFINITY, 12.0)];
        assert_eq!(bucket_delta(&a, &b), vec![(1.0, 2.0), (f64::INFINITY, 3.0)]);
        let restarted = vec![(1.0, 1.0), (f64::INFINITY, 1.0)];
        assert_eq!(bucket_delta(&b, &restarted), restarted);
        let mut total = Vec::new();
        bucket_add(&mut total, &a);
        bucket_add(&mut total, &b);
        assert_eq!(total, vec![(1.0, 12.0), (f64::INFINITY, 21.0)]);
    }
}
