//! Observability of real `raftd` processes: `/metrics` checked by Prometheus's `promtool` and
//! against what the cluster did (writes commit, a killed leader is replaced), histograms that are
//! consistent in every scrape, `/status` and `/health`, and the HTTP listener under malformed,
//! oversized, slow and far too many clients — each followed by a normal write and read.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mini_raft::server::reactor::HTTP_CONNECTIONS_MAX;
use mini_raft::wire::ReadConsistency;
use support::{
    http_get, http_raw, metric, parse_metrics, read_http_response, read_http_response_after, wait_until, TestCluster,
};

fn scrape(cluster: &TestCluster, id: usize) -> Option<Vec<(String, f64)>> {
    let response = http_get(&cluster.http_addrs[id - 1], "/metrics")?;
    (response.status == 200).then(|| parse_metrics(&response.body))
}

fn gauge(cluster: &TestCluster, id: usize, series: &str) -> Option<f64> {
    metric(&scrape(cluster, id)?, series)
}

/// Every histogram of a scrape: cumulative buckets that never decrease and end in `+Inf`,
/// `_count` equal to the `+Inf` bucket, and a `_sum` that is non-negative and at least what its
/// observations' bucket lower bounds add up to. Returns how many histogram series it checked.
fn check_histograms(samples: &[(String, f64)]) -> Result<usize, String> {
    // (name, labels without le) -> [(le, cumulative)]
    type Buckets = Vec<(f64, f64)>;
    let mut buckets: Vec<(String, String, Buckets)> = Vec::new();
    for (series, value) in samples {
        let Some((name, labels)) = series.split_once("_bucket{") else { continue };
        let labels = labels.trim_end_matches('}');
        let (rest, le) = labels.rsplit_once("le=\"").ok_or(format!("bucket without le: {series}"))?;
        let le = le.trim_end_matches('"');
        let le: f64 = if le == "+Inf" { f64::INFINITY } else { le.parse().map_err(|_| format!("bad le {le}"))? };
        let rest = rest.trim_end_matches(',').to_string();
        match buckets.iter_mut().find(|(n, l, _)| n == name && *l == rest) {
            Some((_, _, list)) => list.push((le, *value)),
            None => buckets.push((name.to_string(), rest, vec![(le, *value)])),
        }
    }
    for (name, labels, list) in &buckets {
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let count = metric(samples, &format!("{name}_count{braces}")).ok_or(format!("{name}{braces}: no _count"))?;
        let sum = metric(samples, &format!("{name}_sum{braces}")).ok_or(format!("{name}{braces}: no _sum"))?;
        let last = list.last().ok_or("empty histogram")?;
        if last.0 != f64::INFINITY || last.1 != count {
            return Err(format!("{name}{braces}: +Inf bucket {last:?} but _count {count}"));
        }
        let mut floor = 0.0;
        let (mut previous_le, mut previous_count) = (0.0, 0.0);
        for &(le, cumulative) in list {
            if cumulative < previous_count || le <= previous_le && previous_le != 0.0 {
                return Err(format!("{name}{braces}: buckets out of order at le={le}: {list:?}"));
            }
            floor += (cumulative - previous_count) * previous_le;
            (previous_le, previous_count) = (le, cumulative);
        }
        // Decimal rendering of nanoseconds is exact; allow for float parsing only.
        if sum < 0.0 || sum + 1e-6 < floor {
            return Err(format!("{name}{braces}: _sum {sum} below its observations' lower bounds {floor}: {list:?}"));
        }
    }
    Ok(buckets.len())
}

fn promtool(text: &str) -> Option<(bool, String)> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Some((output.status.success(), report))
}

/// A write and a linearizable read through the normal client: the node still serves.
fn write_and_read(cluster: &TestCluster, key: &str) {
    let mut client = cluster.client();
    client.set(key.as_bytes(), b"v").unwrap_or_else(|e| panic!("write {key}: {e}\n{}", cluster.dump_logs()));
    let read = client.get(key.as_bytes(), ReadConsistency::Linearizable).expect("read");
    assert_eq!(read.value.as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_real_nodes_metrics_pass_promtool() {
    let cluster = TestCluster::start_http(3, &["--snapshot-every", "50"]);
    cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let mut client = cluster.client();
    for i in 0..120 {
        client.set(format!("k{i}").as_bytes(), b"value").expect("set");
    }
    client.get(b"k1", ReadConsistency::Linearizable).expect("get");
    client.delete(b"k2").expect("delete");
    for id in 1..=3 {
        let page = http_get(&cluster.http_addrs[id - 1], "/metrics").expect("scrape");
        assert_eq!(page.status, 200);
        assert_eq!(page.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
        let Some((passed, report)) = promtool(&page.body) else {
            let required = std::env::var("MINI_RAFT_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
            assert!(!required, "MINI_RAFT_REQUIRE_PROMTOOL=1 but promtool is not on PATH (apt-get install prometheus)");
            let notice =
                "\n!!!!! skipped: promtool not installed (apt-get install prometheus); /metrics NOT checked !!!!!\n";
            let _ = std::io::stderr().write_all(notice.as_bytes());
            return;
        };
        assert!(passed && report.trim().is_empty(), "node {id}: promtool: {report}\n--- page ---\n{}", page.body);
        let histograms = check_histograms(&parse_metrics(&page.body)).unwrap_or_else(|e| panic!("node {id}: {e}"));
        assert!(histograms >= 10, "node {id}: {histograms} histogram series");
    }
}

#[test]
fn metrics_follow_writes_and_a_leader_change() {
    let mut cluster = TestCluster::start_http(3, &[]);
    let (leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let before: Vec<Vec<(String, f64)>> = (1..=3).map(|id| scrape(&cluster, id).expect("scrape")).collect();
    let commit_before = |id: usize| metric(&before[id - 1], "mini_raft_commit_index").expect("commit gauge");
    // A scraper hammers the leader while the writes go on; every page must be consistent.
    let stop = Arc::new(AtomicBool::new(false));
    let pages = Arc::new(AtomicUsize::new(0));
    let scraper = {
        let (stop, pages, addr) = (Arc::clone(&stop), Arc::clone(&pages), cluster.http_addrs[leader - 1].clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let page = http_get(&addr, "/metrics").expect("scrape during writes");
                check_histograms(&parse_metrics(&page.body)).expect("consistent histograms during writes");
                pages.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    const WRITES: u64 = 300;
    let mut client = cluster.client();
    for i in 0..WRITES {
        client.set(format!("key-{i}").as_bytes(), b"value").expect("set");
    }
    stop.store(true, Ordering::Relaxed);
    scraper.join().expect("scraper");
    assert!(pages.load(Ordering::Relaxed) >= 3, "only {} scrapes during the writes", pages.load(Ordering::Relaxed));
    for id in 1..=3 {
        let caught_up = wait_until(Duration::from_secs(10), || {
            gauge(&cluster, id, "mini_raft_commit_index").is_some_and(|c| c >= commit_before(id) + WRITES as f64)
        });
        assert!(caught_up, "node {id}: commit index did not grow by {WRITES}");
    }
    let after = scrape(&cluster, leader).expect("scrape");
    let grew =
        |series: &str| metric(&after, series).unwrap_or(0.0) - metric(&before[leader - 1], series).unwrap_or(0.0);
    assert!(grew("mini_raft_proposals_committed_total") >= WRITES as f64);
    assert!(grew("mini_raft_client_requests_total{type=\"set\",outcome=\"ok\"}") >= WRITES as f64);
    assert!(grew("mini_raft_proposal_commit_duration_seconds_count") >= WRITES as f64);
    assert!(grew("mini_raft_wal_sync_duration_seconds_count") >= 1.0);
    assert!(metric(&after, "mini_raft_role{role=\"leader\"}") == Some(1.0));

    let changes_before: Vec<f64> =
        (1..=3).map(|id| metric(&before[id - 1], "mini_raft_leader_changes_total").expect("counter")).collect();
    cluster.kill(leader);
    let (new_leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("a new leader");
    assert_ne!(new_leader, leader);
    for id in (1..=3).filter(|&id| id != leader) {
        let counted = wait_until(Duration::from_secs(5), || {
            gauge(&cluster, id, "mini_raft_leader_changes_total").is_some_and(|c| c > changes_before[id - 1])
        });
        assert!(counted, "node {id} did not count the leader change");
        let page = scrape(&cluster, id).expect("scrape");
        check_histograms(&page).expect("consistent histograms");
        assert_eq!(metric(&page, "mini_raft_leader_id"), Some(new_leader as f64));
    }
    let elections: f64 = (1..=3)
        .filter(|&id| id != leader)
        .map(|id| gauge(&cluster, id, "mini_raft_elections_started_total").unwrap_or(0.0))
        .sum();
    assert!(elections >= 1.0, "no election counted");
    write_and_read(&cluster, "after-failover");
}

#[test]
fn status_and_health_describe_the_node() {
    let cluster = TestCluster::start_http(3, &[]);
    let (leader, term) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    write_and_read(&cluster, "k");
    let healthy = wait_until(Duration::from_secs(5), || {
        (1..=3).all(|id| http_get(&cluster.http_addrs[id - 1], "/health").is_some_and(|r| r.status == 200))
    });
    assert!(healthy, "every node of a working cluster is healthy");
    let status = http_get(&cluster.http_addrs[leader - 1], "/status").expect("status");
    assert_eq!(status.header("content-type"), Some("application/json"));
    let body = &status.body;
    for needle in [
        format!("\"id\":{leader},\"role\":\"leader\",\"term\":{term},"),
        format!("\"client_addr\":\"{}\"", cluster.addrs[leader - 1]),
        format!("\"http_addr\":\"{}\"", cluster.http_addrs[leader - 1]),
        "\"voters\":[1,2,3]".to_string(),
        "\"state\":\"replicate\"".to_string(),
        "\"recovery\":null".to_string(),
        "\"health\":{\"ok\":true".to_string(),
    ] {
        assert!(body.contains(&needle), "missing {needle} in {body}");
    }
    // A lone follower (both others gone) knows no leader after an election timeout: 503.
    let mut cluster = cluster;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    for id in (1..=3).filter(|&id| id != follower) {
        cluster.kill(id);
    }
    let unhealthy = wait_until(Duration::from_secs(5), || {
        http_get(&cluster.http_addrs[follower - 1], "/health").is_some_and(|r| r.status == 503)
    });
    let last = http_get(&cluster.http_addrs[follower - 1], "/health").expect("health");
    assert!(unhealthy, "{last:?}");
    assert!(last.body.starts_with("no known leader"), "{last:?}");
}

/// Sends `request` and returns the status of the answer, checking the connection is closed after
/// an error.
fn status_of(addr: &str, request: &[u8]) -> u16 {
    let response =
        http_raw(addr, request).unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(request)));
    if response.status >= 400 {
        assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    }
    response.status
}

#[test]
fn bad_http_requests_get_their_status_and_the_node_keeps_serving() {
    let cluster = TestCluster::start_http(3, &[]);
    let (leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let addr = cluster.http_addrs[leader - 1].clone();
    let huge_header = format!("GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(3000));
    let many_headers = format!("GET /metrics HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(65));
    let cases: [(&str, &[u8], u16); 7] = [
        ("a header over the head limit", huge_header.as_bytes(), 431),
        ("too many header fields", many_headers.as_bytes(), 431),
        ("a request line over its limit", long_line.as_bytes(), 414),
        ("a request with a body", b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413),
        ("a malformed request line", b"GARBAGE\r\n\r\n", 400),
        ("a wrong method", b"POST /metrics HTTP/1.1\r\n\r\n", 405),
        ("an unknown path", b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n", 404),
    ];
    for (what, request, expected) in cases {
        assert_eq!(status_of(&addr, request), expected, "{what}");
        write_and_read(&cluster, what);
    }
    let allow = http_raw(&addr, b"DELETE / HTTP/1.1\r\n\r\n").expect("405");
    assert_eq!(allow.header("allow"), Some("GET, HEAD"));
    // Keep-alive: two requests, two answers, one connection; HEAD gets headers only.
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(b"GET /health HTTP/1.1\r\n\r\nGET /status HTTP/1.1\r\n\r\n").expect("write");
    let mut leftover = Vec::new();
    assert_eq!(read_http_response_after(&mut stream, &mut leftover).expect("first").status, 200);
    let second = read_http_response_after(&mut stream, &mut leftover).expect("second on the same connection");
    assert!(leftover.is_empty());
    assert!(second.body.starts_with('{'), "{second:?}");
    stream.write_all(b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").expect("write");
    let mut rest = String::new();
    stream.read_to_string(&mut rest).expect("read to close");
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n") && rest.ends_with("\r\n\r\n"), "HEAD sent a body: {rest}");
    let counted = gauge(&cluster, leader, "mini_raft_http_responses_total{code=\"431\"}");
    assert_eq!(counted, Some(2.0), "431s counted");
    write_and_read(&cluster, "after-keep-alive");
}

#[test]
fn a_slow_loris_is_cut_off_at_the_deadline() {
    let cluster = TestCluster::start_http(3, &[]);
    let (leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let addr = cluster.http_addrs[leader - 1].clone();
    let started = Instant::now();
    let mut loris = TcpStream::connect(&addr).expect("connect");
    loris.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let head = b"GET /metrics HTTP/1.1\r\nHost: slow\r\nX-Drip: ";
    let mut answer = Vec::new();
    let mut closed_at = None;
    // One byte every 200 ms: the head would take a minute; the node cuts it off after 5 s.
    for i in 0..150 {
        let byte = head.get(i).copied().unwrap_or(b'z');
        if loris.write_all(&[byte]).is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 1024];
        match loris.read(&mut buf) {
            Ok(0) => {
                closed_at = Some(started.elapsed());
                break;
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {} // nothing yet
        }
        if i % 10 == 0 {
            // Meanwhile the node serves everyone else.
            assert!(http_get(&addr, "/health").is_some_and(|r| r.status == 200));
        }
    }
    let closed_at = closed_at.expect("the slow client was never cut off");
    assert!(
        closed_at >= Duration::from_millis(4500) && closed_at < Duration::from_secs(9),
        "closed after {closed_at:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
    write_and_read(&cluster, "after-loris");
}

#[test]
fn five_hundred_scrapers_do_not_stall_consensus() {
    let cluster = TestCluster::start_http(3, &[]);
    let (leader, term) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let addr = cluster.http_addrs[leader - 1].clone();
    let mut scrapers: Vec<TcpStream> = (0..500).filter_map(|_| TcpStream::connect(&addr).ok()).collect();
    assert!(scrapers.len() >= 490, "only {} connections", scrapers.len());
    for stream in &mut scrapers {
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: many\r\n\r\n");
    }
    // While all of them wait for (or hold) an answer, Raft and clients go on.
    write_and_read(&cluster, "during-the-scrape-storm");
    let (mut served, mut refused, mut dropped) = (0, 0, 0);
    for stream in &mut scrapers {
        match read_http_response(stream).map(|r| r.status) {
            Some(200) => served += 1,
            Some(503) => refused += 1,
            _ => dropped += 1,
        }
    }
    assert!((1..=HTTP_CONNECTIONS_MAX).contains(&served), "{served} served at once (max {HTTP_CONNECTIONS_MAX})");
    assert!(refused + dropped + served == scrapers.len() && refused >= 1, "{served} / {refused} / {dropped}");
    let status = cluster.status(leader).expect("leader status");
    assert_eq!((status.term, status.leader_id), (term, leader as u64), "the storm caused an election");
    write_and_read(&cluster, "while-the-scrapers-hold-their-connections");
    drop(scrapers);
    let again = wait_until(Duration::from_secs(5), || http_get(&addr, "/metrics").is_some_and(|r| r.status == 200));
    assert!(again, "scraping works again once the crowd is gone");
    // What the storm cost the event loop, as the node measured it.
    let page = scrape(&cluster, leader).expect("scrape");
    let renders = metric(&page, "mini_raft_http_render_duration_seconds_count{path=\"metrics\"}").unwrap_or(0.0);
    let seconds = metric(&page, "mini_raft_http_render_duration_seconds_sum{path=\"metrics\"}").unwrap_or(0.0);
    let series = page.len();
    let line = format!(
        "\n500 scrapers: {served} served, {refused} refused (503), {dropped} dropped; {renders} renders of {series} \
         series, {:.1} us each on average\n",
        seconds / renders.max(1.0) * 1e6
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The PromQL expressions of the Grafana dashboard (`"expr": "..."`), JSON-unescaped.
fn dashboard_expressions(json: &str) -> Vec<String> {
    let mut out = Vec::new();
    for piece in json.split("\"expr\": \"").skip(1) {
        let mut expr = String::new();
        let mut chars = piece.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => expr.extend(chars.next()),
                c => expr.push(c),
            }
        }
        out.push(expr);
    }
    out
}

/// The dashboards under `tools/dashboards` stay true to the node: the scrape config and every
/// panel query pass promtool, and every metric a panel names exists on a real node's page.
#[test]
fn dashboards_query_metrics_the_node_exports() {
    let root = env!("CARGO_MANIFEST_DIR");
    let json = std::fs::read_to_string(format!("{root}/tools/dashboards/grafana-mini-raft.json")).expect("dashboard");
    let expressions = dashboard_expressions(&json);
    assert!(expressions.len() >= 5, "{expressions:?}");
    let cluster = TestCluster::start_http(1, &[]);
    cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    write_and_read(&cluster, "k");
    let page = http_get(&cluster.http_addrs[0], "/metrics").expect("scrape").body;
    for expr in &expressions {
        for word in
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("mini_raft_"))
        {
            let base = ["_bucket", "_sum", "_count"].iter().fold(word, |w, s| w.strip_suffix(s).unwrap_or(w));
            assert!(
                page.contains(&format!("# TYPE {base} ")),
                "the dashboard queries {word}, which the node does not export"
            );
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let rules: String = expressions
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "      - record: dashboard:query{i}\n        expr: '{}'\n",
                e.replace("$__rate_interval", "1m").replace('\'', "''")
            )
        })
        .collect();
    let rules_path = dir.path().join("rules.yml");
    std::fs::write(&rules_path, format!("groups:\n  - name: dashboard\n    rules:\n{rules}")).expect("write rules");
    let checks = [
        vec!["check".to_string(), "rules".to_string(), rules_path.display().to_string()],
        vec!["check".to_string(), "config".to_string(), format!("{root}/tools/dashboards/prometheus.yml")],
    ];
    for args in checks {
        let output = match Command::new("promtool").args(&args).output() {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let required = std::env::var("MINI_RAFT_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
                assert!(!required, "MINI_RAFT_REQUIRE_PROMTOOL=1 but promtool is not on PATH");
                let _ = std::io::stderr()
                    .write_all(b"\n!!!!! skipped: promtool not installed; dashboards NOT checked !!!!!\n");
                return;
            }
            Err(e) => panic!("cannot run promtool: {e}"),
        };
        let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "promtool {}: {report}", args.join(" "));
    }
}

/// A scraper that pipelines many requests and reads nothing is backpressured like any other
/// connection: the node answers only while little is queued for it, never queues much more than
/// the connection's cap, keeps serving everyone else, and closes it once it stalls too long.
#[test]
fn a_scraper_that_does_not_read_is_backpressured_then_closed() {
    use mini_raft::server::reactor::HTTP_QUEUE_BYTES_MAX;
    let cluster = TestCluster::start_http(1, &[]);
    cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let addr = cluster.http_addrs[0].clone();
    let page_bytes = http_get(&addr, "/metrics").expect("scrape").body.len();
    let mut slow = TcpStream::connect(&addr).expect("connect");
    slow.set_write_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let request = b"GET /metrics HTTP/1.1\r\nHost: slow\r\n\r\n";
    const REQUESTS: usize = 400;
    // The requests themselves fit in the socket buffers; the answers would be ~REQUESTS pages.
    let sent = (0..REQUESTS).take_while(|_| slow.write_all(request).is_ok()).count();
    assert!(sent > 100, "only {sent} requests could be sent");
    std::thread::sleep(Duration::from_secs(2));
    let page = scrape(&cluster, 1).expect("others are still served");
    let queued = metric(&page, "mini_raft_connection_queued_bytes{kind=\"http\"}").expect("queue gauge");
    let answered = metric(&page, "mini_raft_http_responses_total{code=\"200\"}").expect("responses");
    assert!(
        queued <= (HTTP_QUEUE_BYTES_MAX + 2 * page_bytes) as f64,
        "{queued} bytes queued for a scraper that reads nothing (cap {HTTP_QUEUE_BYTES_MAX}, page {page_bytes})"
    );
    assert!(answered < (sent / 2) as f64, "{answered} of {sent} pipelined requests answered without reading");
    write_and_read(&cluster, "during-the-stall");
    // After the write-stall timeout (10 s) the node gives up on it: reading finds the end.
    std::thread::sleep(Duration::from_secs(12));
    slow.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut drained = Vec::new();
    let end = slow.read_to_end(&mut drained);
    let closed = end.as_ref().map_or_else(|e| e.kind() == std::io::ErrorKind::ConnectionReset, |_| true);
    assert!(closed, "the stalled connection was not closed: {end:?} after {} bytes", drained.len());
    let page = scrape(&cluster, 1).expect("scrape");
    assert_eq!(metric(&page, "mini_raft_connections{kind=\"http\"}"), Some(1.0), "only this scrape's connection");
}
