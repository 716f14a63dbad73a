//! Metrics that cost no lock and no allocation to update, and a [`Registry`] that renders them in
//! the Prometheus text exposition format 0.0.4.
//!
//! Guarantees and invariants:
//! - Updates ([`Counter::inc`], [`Gauge::set`], [`Histogram::observe`], a [`FixedFamily`] lookup)
//!   are relaxed atomic operations on memory allocated at registration: callable from the event
//!   loop and the WAL thread alike, never blocking, never allocating.
//! - Cardinality is bounded: labels are fixed at registration; a family has at most
//!   [`FAMILY_CHILDREN_MAX`] children, a histogram at most [`HISTOGRAM_BOUNDS_MAX`] bounds.
//! - Names are validated at registration: metric names match `[a-zA-Z_:][a-zA-Z0-9_:]*`, are
//!   unique, counters end in `_total` and nothing else does, and no name ends in `_bucket`,
//!   `_count` or `_sum` (so a histogram's series cannot collide with another metric). Label
//!   names match `[a-zA-Z_][a-zA-Z0-9_]*`, are not `__`-prefixed, and are never `le`/`quantile`.
//!   Use base units in names (`_seconds`, `_bytes`).
//! - Rendering writes every registered metric, in registration order, as `# HELP`, `# TYPE`, then
//!   samples; HELP text escapes backslash and newline, label values backslash, double quote and
//!   newline. Numbers are exact decimals (durations are kept in nanoseconds and rendered as
//!   seconds). Histograms render cumulative `_bucket` series ending in `le="+Inf"`, then `_sum`
//!   and `_count`, with `_count` equal to the `+Inf` bucket. A metric that cannot be read
//!   (a process metric without `/proc`) is left out whole, HELP and TYPE included.
//! - Rendering appends to a caller-owned `String`, so a reused buffer makes it allocation-free
//!   once warm (apart from `/proc` reads for process metrics).

mod family;
mod metric;
mod process;
mod text;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

pub use family::{DynamicFamily, FixedFamily, FAMILY_CHILDREN_MAX};
pub use metric::{Buckets, Counter, Gauge, Histogram, HistogramUnit, Metric, MetricKind, HISTOGRAM_BOUNDS_MAX};

use process::ProcessMetric;
use text::{escape_help, is_valid_metric_name};

/// `Content-Type` of a rendered registry.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Suffixes a histogram adds to its name; no registered name may end with one.
const RESERVED_SUFFIXES: [&str; 3] = ["_bucket", "_count", "_sum"];
const COUNTER_SUFFIX: &str = "_total";

/// Why a metric, family or bucket list was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsError {
    InvalidName(String),
    DuplicateName(String),
    CounterNameWithoutTotal(String),
    TotalSuffixOnNonCounter(String),
    ReservedSuffix(String),
    EmptyHelp(String),
    InvalidLabelName(String),
    DuplicateLabelName(String),
    NoLabels,
    NoLabelValues,
    LabelCountMismatch { expected: usize, got: usize },
    DuplicateChild,
    TooManyChildren { max: usize },
    TooManyBuckets { count: usize, max: usize },
    BucketsNotIncreasing,
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::InvalidName(name) => write!(f, "invalid metric name {name:?}"),
            MetricsError::DuplicateName(name) => write!(f, "metric {name:?} is already registered"),
            MetricsError::CounterNameWithoutTotal(name) => write!(f, "counter {name:?} must end in _total"),
            MetricsError::TotalSuffixOnNonCounter(name) => write!(f, "only counters end in _total: {name:?}"),
            MetricsError::ReservedSuffix(name) => write!(f, "{name:?} ends in _bucket, _count or _sum"),
            MetricsError::EmptyHelp(name) => write!(f, "metric {name:?} has no help text"),
            MetricsError::InvalidLabelName(name) => write!(f, "invalid or reserved label name {name:?}"),
            MetricsError::DuplicateLabelName(name) => write!(f, "label {name:?} is listed twice"),
            MetricsError::NoLabels => write!(f, "a family needs at least one label"),
            MetricsError::NoLabelValues => write!(f, "a label of a fixed family needs at least one value"),
            MetricsError::LabelCountMismatch { expected, got } => {
                write!(f, "{got} label values given for {expected} labels")
            }
            MetricsError::DuplicateChild => write!(f, "a label value is listed twice"),
            MetricsError::TooManyChildren { max } => write!(f, "a family may have at most {max} children"),
            MetricsError::TooManyBuckets { count, max } => write!(f, "{count} bucket bounds, at most {max}"),
            MetricsError::BucketsNotIncreasing => write!(f, "bucket bounds must be strictly increasing"),
        }
    }
}

impl std::error::Error for MetricsError {}

/// Something the registry renders under one metric name.
trait Collect: Send + Sync {
    /// Appends the sample lines; false if there is nothing to report this time.
    fn collect(&self, name: &str, out: &mut String) -> bool;
}

struct Single<M>(Arc<M>);

impl<M: Metric> Collect for Single<M> {
    fn collect(&self, name: &str, out: &mut String) -> bool {
        self.0.render_samples(name, "", out);
        true
    }
}

impl<M: Metric> Collect for Arc<FixedFamily<M>> {
    fn collect(&self, name: &str, out: &mut String) -> bool {
        self.render_samples(name, out);
        true
    }
}

impl<M: Metric> Collect for Arc<DynamicFamily<M>> {
    fn collect(&self, name: &str, out: &mut String) -> bool {
        self.render_samples(name, out);
        true
    }
}

impl Collect for ProcessMetric {
    fn collect(&self, _name: &str, out: &mut String) -> bool {
        self.render_sample(out)
    }
}

struct Entry {
    name: String,
    /// `# HELP` and `# TYPE` lines, escaped once at registration.
    header: String,
    collector: Box<dyn Collect>,
}

/// Owns the metadata of every metric and renders them all. Registration is the slow path (it
/// allocates and validates); the returned `Arc`s are what the hot path updates.
#[derive(Default)]
pub struct Registry {
    entries: Vec<Entry>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers a standalone metric (no labels) and returns the handle to update it through.
    pub fn register<M: Metric>(&mut self, name: &str, help: &str, metric: M) -> Result<Arc<M>, MetricsError> {
        self.check_name(name, help, M::KIND)?;
        let metric = Arc::new(metric);
        self.push(name, help, M::KIND, Box::new(Single(Arc::clone(&metric))));
        Ok(metric)
    }

    pub fn counter(&mut self, name: &str, help: &str) -> Result<Arc<Counter>, MetricsError> {
        self.register(name, help, Counter::new())
    }

    pub fn gauge(&mut self, name: &str, help: &str) -> Result<Arc<Gauge>, MetricsError> {
        self.register(name, help, Gauge::new())
    }

    pub fn histogram(&mut self, name: &str, help: &str, buckets: &Buckets) -> Result<Arc<Histogram>, MetricsError> {
        self.register(name, help, Histogram::new(buckets))
    }

    pub fn register_fixed_family<M: Metric>(
        &mut self,
        name: &str,
        help: &str,
        family: FixedFamily<M>,
    ) -> Result<Arc<FixedFamily<M>>, MetricsError> {
        self.check_name(name, help, M::KIND)?;
        let family = Arc::new(family);
        self.push(name, help, M::KIND, Box::new(Arc::clone(&family)));
        Ok(family)
    }

    /// Registers a family whose children are added later; keep the returned `Arc` to add and
    /// remove them (an empty family renders its HELP and TYPE lines only).
    pub fn register_dynamic_family<M: Metric>(
        &mut self,
        name: &str,
        help: &str,
        family: DynamicFamily<M>,
    ) -> Result<Arc<DynamicFamily<M>>, MetricsError> {
        self.check_name(name, help, M::KIND)?;
        let family = Arc::new(family);
        self.push(name, help, M::KIND, Box::new(Arc::clone(&family)));
        Ok(family)
    }

    /// Registers `process_cpu_seconds_total`, `process_resident_memory_bytes` and
    /// `process_open_fds`, read from `/proc/self` at each render.
    pub fn register_process_metrics(&mut self) -> Result<(), MetricsError> {
        let metrics = ProcessMetric::all();
        for metric in metrics {
            self.check_name(metric.name(), metric.help(), metric.kind())?;
        }
        for metric in metrics {
            self.push(metric.name(), metric.help(), metric.kind(), Box::new(metric));
        }
        Ok(())
    }

    /// Number of registered metric names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the exposition text of every metric to `out` (which it does not clear).
    pub fn render(&self, out: &mut String) {
        for entry in &self.entries {
            let start = out.len();
            out.push_str(&entry.header);
            if !entry.collector.collect(&entry.name, out) {
                out.truncate(start);
            }
        }
    }

    fn check_name(&self, name: &str, help: &str, kind: MetricKind) -> Result<(), MetricsError> {
        let owned = || name.to_string();
        if !is_valid_metric_name(name) {
            return Err(MetricsError::InvalidName(owned()));
        }
        if self.entries.iter().any(|e| e.name == name) {
            return Err(MetricsError::DuplicateName(owned()));
        }
        match (kind, name.ends_with(COUNTER_SUFFIX)) {
            (MetricKind::Counter, false) => return Err(MetricsError::CounterNameWithoutTotal(owned())),
            (MetricKind::Gauge | MetricKind::Histogram, true) => {
                return Err(MetricsError::TotalSuffixOnNonCounter(owned()))
            }
            _ => {}
        }
        if RESERVED_SUFFIXES.iter().any(|suffix| name.ends_with(suffix)) {
            return Err(MetricsError::ReservedSuffix(owned()));
        }
        if help.trim().is_empty() {
            return Err(MetricsError::EmptyHelp(owned()));
        }
        Ok(())
    }

    fn push(&mut self, name: &str, help: &str, kind: MetricKind, collector: Box<dyn Collect>) {
        let mut header = format!("# HELP {name} ");
        escape_help(help, &mut header);
        header.push_str(&format!("\n# TYPE {name} {}\n", kind.as_str()));
        self.entries.push(Entry { name: name.to_string(), header, collector });
    }
}
