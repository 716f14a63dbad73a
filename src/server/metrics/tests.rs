//! Tests of the metrics module: counting, bucket boundaries, escaping, name rules, golden text,
//! `/proc` parsing, and the rendered text checked by Prometheus's own `promtool`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::process::{parse_auxv_page_bytes, parse_stat_cpu_ticks, parse_statm_resident_pages};
use super::text::write_decimal;
use super::*;

fn render(registry: &Registry) -> String {
    let mut out = String::new();
    registry.render(&mut out);
    out
}

fn decimal(value: u64, fraction_digits: u32) -> String {
    let mut out = String::new();
    write_decimal(&mut out, value, fraction_digits);
    out
}

#[test]
fn counter_and_gauge_count() {
    let counter = Counter::new();
    counter.inc();
    counter.add(41);
    assert_eq!(counter.get(), 42);
    let gauge = Gauge::new();
    gauge.set(10);
    gauge.add(-15);
    gauge.inc();
    gauge.dec();
    gauge.dec();
    assert_eq!(gauge.get(), -6);
    gauge.set_u64(u64::MAX);
    assert_eq!(gauge.get(), i64::MAX);
}

#[test]
fn updates_from_many_threads_are_all_counted() {
    let counter = Arc::new(Counter::new());
    let histogram = Arc::new(Histogram::new(&Buckets::values(&[10, 100]).unwrap()));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (counter, histogram) = (Arc::clone(&counter), Arc::clone(&histogram));
            thread::spawn(move || {
                for i in 0..10_000u64 {
                    counter.inc();
                    histogram.observe(i % 200);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(counter.get(), 40_000);
    assert_eq!(histogram.count(), 40_000);
    assert_eq!(histogram.sum(), 4 * 50 * (0..200).sum::<u64>());
    assert_eq!(histogram.bucket_counts(), vec![4 * 50 * 11, 4 * 50 * 90, 4 * 50 * 99]);
}

#[test]
fn a_value_on_a_bound_goes_into_that_bucket() {
    let histogram = Histogram::new(&Buckets::values(&[10, 20, 30]).unwrap());
    for value in [0, 10, 11, 20, 21, 30, 31, u64::MAX] {
        histogram.observe(value);
    }
    assert_eq!(histogram.bucket_counts(), vec![2, 2, 2, 2]);
    assert_eq!(histogram.count(), 8);
    assert_eq!(histogram.sum(), (10 + 11 + 20 + 21 + 30 + 31 + u64::MAX as u128) as u64); // Wraps.
    let durations = Histogram::new(&Buckets::durations(&[Duration::from_millis(1)]).unwrap());
    durations.observe_duration(Duration::from_millis(1));
    durations.observe_duration(Duration::from_nanos(1_000_001));
    assert_eq!(durations.bucket_counts(), vec![1, 1]);
}

#[test]
fn histogram_renders_cumulative_buckets_sum_and_count() {
    let mut registry = Registry::new();
    let buckets = Buckets::durations(&[Duration::from_micros(500), Duration::from_millis(5), Duration::from_secs(1)]);
    let histogram = registry.histogram("op_duration_seconds", "Op latency.", &buckets.unwrap()).unwrap();
    histogram.observe_duration(Duration::from_micros(500));
    histogram.observe_duration(Duration::from_millis(3));
    histogram.observe_duration(Duration::from_secs(2));
    let text = render(&registry);
    let expected = "# HELP op_duration_seconds Op latency.\n# TYPE op_duration_seconds histogram\n\
        op_duration_seconds_bucket{le=\"0.0005\"} 1\n\
        op_duration_seconds_bucket{le=\"0.005\"} 2\n\
        op_duration_seconds_bucket{le=\"1\"} 2\n\
        op_duration_seconds_bucket{le=\"+Inf\"} 3\n\
        op_duration_seconds_sum 2.0035\n\
        op_duration_seconds_count 3\n";
    assert_eq!(text, expected);
}

#[test]
fn an_empty_histogram_renders_zeros() {
    let mut registry = Registry::new();
    registry.histogram("sizes_bytes", "Sizes.", &Buckets::values(&[]).unwrap()).unwrap();
    let expected = "# HELP sizes_bytes Sizes.\n# TYPE sizes_bytes histogram\nsizes_bytes_bucket{le=\"+Inf\"} 0\n\
                    sizes_bytes_sum 0\nsizes_bytes_count 0\n";
    assert_eq!(render(&registry), expected);
}

#[test]
fn bucket_bounds_are_validated() {
    assert_eq!(Buckets::values(&[1, 1]), Err(MetricsError::BucketsNotIncreasing));
    assert_eq!(Buckets::values(&[2, 1]), Err(MetricsError::BucketsNotIncreasing));
    let at_bound: Vec<u64> = (1..=HISTOGRAM_BOUNDS_MAX as u64).collect();
    assert!(Buckets::values(&at_bound).is_ok());
    let past_bound: Vec<u64> = (1..=HISTOGRAM_BOUNDS_MAX as u64 + 1).collect();
    let error = MetricsError::TooManyBuckets { count: HISTOGRAM_BOUNDS_MAX + 1, max: HISTOGRAM_BOUNDS_MAX };
    assert_eq!(Buckets::values(&past_bound), Err(error));
    let buckets = Buckets::durations(&[Duration::from_nanos(1), Duration::from_secs(1)]).unwrap();
    assert_eq!(buckets.bounds(), &[1, 1_000_000_000]);
    assert_eq!(buckets.unit(), HistogramUnit::Seconds);
}

#[test]
fn decimals_are_exact_without_trailing_zeros() {
    assert_eq!(decimal(0, 9), "0");
    assert_eq!(decimal(5, 9), "0.000000005");
    assert_eq!(decimal(1_500_000_000, 9), "1.5");
    assert_eq!(decimal(2_000_000_000, 9), "2");
    assert_eq!(decimal(123_456_789_012, 9), "123.456789012");
    assert_eq!(decimal(u64::MAX, 9), "18446744073.709551615");
    assert_eq!(decimal(1234, 2), "12.34");
    assert_eq!(decimal(1230, 2), "12.3");
    assert_eq!(decimal(7, 0), "7");
}

#[test]
fn help_and_label_values_are_escaped() {
    let mut registry = Registry::new();
    let family = FixedFamily::new(&["v"], &[&["a\"b", "c\\d", "e\nf"]], Counter::new).unwrap();
    registry.register_fixed_family("escapes_total", "Back\\slash, \"quote\",\nnewline.", family).unwrap();
    let expected = "# HELP escapes_total Back\\\\slash, \"quote\",\\nnewline.\n# TYPE escapes_total counter\n\
                    escapes_total{v=\"a\\\"b\"} 0\nescapes_total{v=\"c\\\\d\"} 0\nescapes_total{v=\"e\\nf\"} 0\n";
    assert_eq!(render(&registry), expected);
}

#[test]
fn metric_names_are_validated() {
    let mut registry = Registry::new();
    let invalid = |name: &str| MetricsError::InvalidName(name.to_string());
    assert_eq!(registry.gauge("", "h").unwrap_err(), invalid(""));
    assert_eq!(registry.gauge("1abc", "h").unwrap_err(), invalid("1abc"));
    assert_eq!(registry.gauge("a-b", "h").unwrap_err(), invalid("a-b"));
    assert_eq!(registry.gauge("a b", "h").unwrap_err(), invalid("a b"));
    assert_eq!(registry.gauge("é", "h").unwrap_err(), invalid("é"));
    assert!(registry.gauge(":ok_name:9", "h").is_ok());
    assert!(registry.gauge("_ok", "h").is_ok());
    assert_eq!(registry.gauge("_ok", "h").unwrap_err(), MetricsError::DuplicateName("_ok".to_string()));
    let error = registry.counter("requests", "h").unwrap_err();
    assert_eq!(error, MetricsError::CounterNameWithoutTotal("requests".to_string()));
    let error = registry.gauge("requests_total", "h").unwrap_err();
    assert_eq!(error, MetricsError::TotalSuffixOnNonCounter("requests_total".to_string()));
    for name in ["x_bucket", "x_count", "x_sum"] {
        assert_eq!(registry.gauge(name, "h").unwrap_err(), MetricsError::ReservedSuffix(name.to_string()));
    }
    assert_eq!(registry.gauge("no_help", " ").unwrap_err(), MetricsError::EmptyHelp("no_help".to_string()));
    assert_eq!(registry.len(), 2, "failed registrations leave nothing behind");
}

#[test]
fn label_names_are_validated() {
    let invalid = |name: &str| Err(MetricsError::InvalidLabelName(name.to_string()));
    for name in ["", "1a", "a-b", "__reserved", "le", "quantile", "a:b"] {
        assert_eq!(FixedFamily::new(&[name], &[&["x"]], Counter::new).map(|_| ()), invalid(name));
        assert_eq!(DynamicFamily::new(&[name], Counter::new).map(|_| ()), invalid(name));
    }
    let duplicate = FixedFamily::new(&["a", "a"], &[&["x"], &["y"]], Counter::new).map(|_| ());
    assert_eq!(duplicate, Err(MetricsError::DuplicateLabelName("a".to_string())));
    assert_eq!(DynamicFamily::new(&[], Counter::new).map(|_| ()), Err(MetricsError::NoLabels));
    let mismatch = FixedFamily::new(&["a", "b"], &[&["x"]], Counter::new).map(|_| ());
    assert_eq!(mismatch, Err(MetricsError::LabelCountMismatch { expected: 2, got: 1 }));
    assert_eq!(FixedFamily::new(&["a"], &[&[]], Counter::new).map(|_| ()), Err(MetricsError::NoLabelValues));
    let repeated = FixedFamily::new(&["a"], &[&["x", "x"]], Counter::new).map(|_| ());
    assert_eq!(repeated, Err(MetricsError::DuplicateChild));
}

#[test]
fn fixed_family_indexes_the_product_of_its_label_values() {
    let family = FixedFamily::new(&["type", "outcome"], &[&["get", "set", "del"], &["ok", "error"]], Counter::new);
    let family = family.unwrap();
    assert_eq!(family.len(), 6);
    family.get(&[1, 1]).unwrap().add(7); // set, error
    assert_eq!(family.child(3).unwrap().get(), 7);
    assert!(family.get(&[3, 0]).is_none());
    assert!(family.get(&[0, 2]).is_none());
    assert!(family.get(&[0]).is_none());
    let mut registry = Registry::new();
    registry.register_fixed_family("requests_total", "Requests.", family).unwrap();
    let text = render(&registry);
    let samples: Vec<&str> = text.lines().skip(2).collect();
    assert_eq!(samples[0], "requests_total{type=\"get\",outcome=\"ok\"} 0");
    assert_eq!(samples[3], "requests_total{type=\"set\",outcome=\"error\"} 7");
    assert_eq!(samples[5], "requests_total{type=\"del\",outcome=\"error\"} 0");
}

#[test]
fn fixed_family_children_are_bounded() {
    let values: Vec<String> = (0..32).map(|i| i.to_string()).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let at_bound = FixedFamily::new(&["a", "b"], &[&values, &values], Gauge::new).unwrap();
    assert_eq!(at_bound.len(), FAMILY_CHILDREN_MAX);
    let past_bound = FixedFamily::new(&["a", "b", "c"], &[&values, &values, &["x", "y"]], Gauge::new).map(|_| ());
    assert_eq!(past_bound, Err(MetricsError::TooManyChildren { max: FAMILY_CHILDREN_MAX }));
}

#[test]
fn dynamic_family_adds_and_removes_children() {
    let mut registry = Registry::new();
    let peers = DynamicFamily::new(&["peer"], Gauge::new).unwrap();
    let peers = registry.register_dynamic_family("peer_match_index", "Match index per peer.", peers).unwrap();
    let header = "# HELP peer_match_index Match index per peer.\n# TYPE peer_match_index gauge\n";
    assert_eq!(render(&registry), header);
    let two = peers.add(&["2"]).unwrap();
    let three = peers.add(&["3"]).unwrap();
    assert!(Arc::ptr_eq(&two, &peers.add(&["2"]).unwrap()), "add is idempotent");
    two.set(10);
    three.set(12);
    assert_eq!(
        render(&registry),
        format!("{header}peer_match_index{{peer=\"2\"}} 10\npeer_match_index{{peer=\"3\"}} 12\n")
    );
    assert!(peers.remove(&["2"]));
    assert!(!peers.remove(&["2"]));
    two.set(11); // A removed child's holder does not crash, and is not rendered.
    assert_eq!(render(&registry), format!("{header}peer_match_index{{peer=\"3\"}} 12\n"));
    peers.add(&["4"]).unwrap();
    peers.retain(|values| values[0] != "3");
    assert_eq!(peers.len(), 1);
    assert!(peers.get(&["4"]).is_some() && peers.get(&["3"]).is_none());
    let mismatch = peers.add(&["4", "extra"]).map(|_| ());
    assert_eq!(mismatch, Err(MetricsError::LabelCountMismatch { expected: 1, got: 2 }));
}

#[test]
fn dynamic_family_children_are_bounded() {
    let family = DynamicFamily::new(&["id"], Counter::new).unwrap();
    for i in 0..FAMILY_CHILDREN_MAX {
        family.add(&[&i.to_string()]).unwrap();
    }
    assert!(family.add(&["0"]).is_ok(), "an existing child is still found at the bound");
    let error = family.add(&["one more"]).map(|_| ());
    assert_eq!(error, Err(MetricsError::TooManyChildren { max: FAMILY_CHILDREN_MAX }));
}

#[test]
fn golden_text_of_a_small_registry() {
    let mut registry = Registry::new();
    let commits = registry.counter("mini_raft_commits_total", "Entries committed.").unwrap();
    let term = registry.gauge("mini_raft_term", "Current term.").unwrap();
    let sizes = Buckets::values(&[64, 1024]).unwrap();
    let family = FixedFamily::new(&["kind"], &[&["append", "snapshot"]], || Histogram::new(&sizes)).unwrap();
    let batches = registry.register_fixed_family("mini_raft_batch_bytes", "Batch sizes.", family).unwrap();
    commits.add(3);
    term.set(7);
    batches.get(&[0]).unwrap().observe(64);
    batches.get(&[0]).unwrap().observe(65);
    batches.get(&[1]).unwrap().observe(5000);
    let expected = "\
# HELP mini_raft_commits_total Entries committed.
# TYPE mini_raft_commits_total counter
mini_raft_commits_total 3
# HELP mini_raft_term Current term.
# TYPE mini_raft_term gauge
mini_raft_term 7
# HELP mini_raft_batch_bytes Batch sizes.
# TYPE mini_raft_batch_bytes histogram
mini_raft_batch_bytes_bucket{kind=\"append\",le=\"64\"} 1
mini_raft_batch_bytes_bucket{kind=\"append\",le=\"1024\"} 2
mini_raft_batch_bytes_bucket{kind=\"append\",le=\"+Inf\"} 2
mini_raft_batch_bytes_sum{kind=\"append\"} 129
mini_raft_batch_bytes_count{kind=\"append\"} 2
mini_raft_batch_bytes_bucket{kind=\"snapshot\",le=\"64\"} 0
mini_raft_batch_bytes_bucket{kind=\"snapshot\",le=\"1024\"} 0
mini_raft_batch_bytes_bucket{kind=\"snapshot\",le=\"+Inf\"} 1
mini_raft_batch_bytes_sum{kind=\"snapshot\"} 5000
mini_raft_batch_bytes_count{kind=\"snapshot\"} 1
";
    assert_eq!(render(&registry), expected);
    let mut reused = String::from("kept: ");
    registry.render(&mut reused);
    assert_eq!(reused, format!("kept: {expected}"), "render appends");
}

struct Unreadable;

impl Collect for Unreadable {
    fn collect(&self, _name: &str, out: &mut String) -> bool {
        out.push_str("half a line");
        false
    }
}

#[test]
fn a_metric_that_cannot_be_read_is_left_out_whole() {
    let mut registry = Registry::new();
    registry.gauge("before", "Before.").unwrap();
    registry.push("broken", "Broken.", MetricKind::Gauge, Box::new(Unreadable));
    registry.gauge("after", "After.").unwrap();
    let text = render(&registry);
    assert!(!text.contains("broken") && !text.contains("half"), "{text}");
    assert!(text.contains("before 0\n") && text.contains("after 0\n"), "{text}");
}

#[test]
fn proc_stat_and_status_are_parsed() {
    let stat = "12005 (a (weird) name) R 11921 11921 3957 0 -1 4194304 102 0 0 0 250 37 0 0 20 0 1 0 95948";
    assert_eq!(parse_stat_cpu_ticks(stat), Some(287));
    assert_eq!(parse_stat_cpu_ticks("12005 (cat) R 1 2"), None);
    assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    assert_eq!(parse_stat_cpu_ticks(""), None);
    assert_eq!(parse_statm_resident_pages("2450 390 350 5 0 120 0\n"), Some(390));
    assert_eq!(parse_statm_resident_pages("2450\n"), None);
    assert_eq!(parse_statm_resident_pages("2450 x 350\n"), None);
    let words = |words: &[usize]| -> Vec<u8> { words.iter().flat_map(|w| w.to_ne_bytes()).collect() };
    assert_eq!(parse_auxv_page_bytes(&words(&[33, 7, 6, 16384, 0, 0])), Some(16384));
    assert_eq!(parse_auxv_page_bytes(&words(&[33, 7, 0, 0, 6, 4096])), None, "the vector ends at key 0");
    assert_eq!(parse_auxv_page_bytes(&words(&[6, 0, 0, 0])), None);
    assert_eq!(parse_auxv_page_bytes(&[6, 0, 0]), None);
    if let Ok(auxv) = std::fs::read("/proc/self/auxv") {
        let page_bytes = parse_auxv_page_bytes(&auxv).unwrap();
        assert!(page_bytes.is_power_of_two() && page_bytes >= 4096, "{page_bytes}");
    }
}

#[test]
fn process_metrics_are_read_from_proc() {
    let mut registry = Registry::new();
    registry.register_process_metrics().unwrap();
    assert_eq!(
        registry.register_process_metrics(),
        Err(MetricsError::DuplicateName("process_cpu_seconds_total".into()))
    );
    let text = render(&registry);
    if !std::path::Path::new("/proc/self/stat").exists() {
        assert_eq!(text, "", "without /proc every process metric is left out");
        return;
    }
    let value = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap();
        line[name.len() + 1..].parse().unwrap()
    };
    let resident = value("process_resident_memory_bytes");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_rss_line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let vm_rss_kib: f64 = vm_rss_line.split_ascii_whitespace().nth(1).unwrap().parse().unwrap();
    let ratio = resident / (vm_rss_kib * 1024.0);
    assert!((0.5..2.0).contains(&ratio), "statm says {resident} bytes, status {vm_rss_line}");
    assert!(value("process_open_fds") >= 3.0, "{text}");
    assert!(value("process_cpu_seconds_total") >= 0.0, "{text}");
    assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"), "{text}");
}

/// A registry with every metric type, family kind and escaping case, as the node might have.
fn full_registry() -> Registry {
    let mut registry = Registry::new();
    let requests = FixedFamily::new(
        &["type", "outcome"],
        &[&["get", "set", "del", "cas"], &["ok", "redirect", "error"]],
        Counter::new,
    );
    let requests =
        registry.register_fixed_family("mini_raft_client_requests_total", "Client requests.", requests.unwrap());
    requests.unwrap().get(&[1, 0]).unwrap().add(5);
    let term = registry.gauge("mini_raft_current_term", "Current Raft term.").unwrap();
    term.set(-3);
    let latency = Buckets::durations(&[
        Duration::from_micros(100),
        Duration::from_millis(1),
        Duration::from_millis(10),
        Duration::from_millis(100),
        Duration::from_secs(1),
    ]);
    let fsync = registry.histogram("mini_raft_wal_fsync_duration_seconds", "WAL fsync latency.", &latency.unwrap());
    let fsync = fsync.unwrap();
    fsync.observe_duration(Duration::from_micros(750));
    fsync.observe_duration(Duration::from_secs(3));
    let sizes = Buckets::values(&[256, 4096, 65536]).unwrap();
    let batch = registry.histogram("mini_raft_wal_batch_bytes", "Bytes per WAL batch.", &sizes).unwrap();
    batch.observe(4096);
    let family = FixedFamily::new(&["kind"], &[&["append", "snapshot"]], || Histogram::new(&sizes)).unwrap();
    let sent = registry.register_fixed_family("mini_raft_peer_message_bytes", "Bytes per message.", family).unwrap();
    sent.get(&[1]).unwrap().observe(100_000);
    let peers = DynamicFamily::new(&["peer"], Gauge::new).unwrap();
    let peers = registry.register_dynamic_family("mini_raft_peer_match_index", "Match index per peer.", peers);
    let peers = peers.unwrap();
    peers.add(&["2"]).unwrap().set(41);
    peers.add(&["3"]).unwrap().set(40);
    let empty = DynamicFamily::new(&["peer"], Counter::new).unwrap();
    registry.register_dynamic_family("mini_raft_peer_redials_total", "Redials per peer.", empty).unwrap();
    let escapes = FixedFamily::new(&["value"], &[&["quote\"d", "back\\slash", "new\nline", "ünï"]], Gauge::new);
    let help = "Escaping: a back\\slash, a \"quote\", and a\nnewline.";
    registry.register_fixed_family("mini_raft_escaping_test", help, escapes.unwrap()).unwrap();
    registry.register_process_metrics().unwrap();
    registry
}

/// `promtool check metrics` on `text`: whether it passed, and everything it printed. `None` if
/// promtool is not on PATH.
fn promtool_check_metrics(text: &str) -> Option<(bool, String)> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => panic!("cannot run promtool: {error}"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Some((output.status.success(), report))
}

/// The full registry's text passes `promtool check metrics` (parse and lint) with no problem
/// reported. Without promtool on PATH the test passes with a loud notice, unless
/// MINI_RAFT_REQUIRE_PROMTOOL=1 (set by CI) makes it fail.
#[test]
fn promtool_check_metrics_finds_no_problem() {
    let text = render(&full_registry());
    let Some((passed, report)) = promtool_check_metrics(&text) else {
        let required = std::env::var("MINI_RAFT_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
        assert!(!required, "MINI_RAFT_REQUIRE_PROMTOOL=1 but promtool is not on PATH (apt-get install prometheus)");
        // Straight to the stderr handle, not eprintln!: the test harness captures the macros'
        // output of passing tests, and this line must be seen.
        let notice =
            "\n!!!!! skipped: promtool not installed (apt-get install prometheus); metrics text NOT checked !!!!!\n";
        let _ = std::io::stderr().write_all(notice.as_bytes());
        return;
    };
    assert!(passed && report.trim().is_empty(), "promtool: {report}\n--- text ---\n{text}");
    // The checker is live: it does report a problem when there is one.
    let (passed, report) =
        promtool_check_metrics("# HELP x_milliseconds h\n# TYPE x_milliseconds gauge\nx_milliseconds 1\n")
            .expect("promtool vanished");
    assert!(!passed && report.contains("seconds"), "promtool accepted a non-base unit: {report}");
}

/// Measures rendering ~100 series (printed; the assertion only catches a pathological slowdown).
#[test]
fn rendering_about_a_hundred_series_is_cheap() {
    let mut registry = full_registry();
    let latency = Buckets::durations(&[Duration::from_millis(1), Duration::from_millis(10), Duration::from_secs(1)]);
    let latency = latency.unwrap();
    let family = FixedFamily::new(&["type"], &[&["get", "set", "del", "cas", "stale_get", "status", "x", "y"]], || {
        Histogram::new(&latency)
    });
    let family = registry.register_fixed_family("mini_raft_request_duration_seconds", "Latency.", family.unwrap());
    for (i, child) in (0..8).filter_map(|i| family.as_ref().unwrap().child(i)).enumerate() {
        child.observe_duration(Duration::from_micros(1_234_567 * i as u64));
    }
    let count_series = |registry: &Registry| render(registry).lines().filter(|l| !l.starts_with('#')).count();
    let with_process = count_series(&registry);
    let mut out = String::new();
    let rounds = 2_000u32;
    let time_render = |registry: &Registry, out: &mut String| {
        let start = Instant::now();
        for _ in 0..rounds {
            out.clear();
            registry.render(out);
        }
        start.elapsed() / rounds
    };
    let per_render_with_proc = time_render(&registry, &mut out);
    registry.entries.retain(|e| !e.name.starts_with("process_"));
    let without_process = count_series(&registry);
    let per_render = time_render(&registry, &mut out);
    eprintln!(
        "render: {without_process} series in {per_render:?}; with the 3 process metrics ({with_process} series) \
         {per_render_with_proc:?}; {} bytes",
        out.len()
    );
    assert!(per_render < Duration::from_millis(1), "{per_render:?}");
}
