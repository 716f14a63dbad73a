//! The metric types: [`Counter`], [`Gauge`], [`Histogram`].
//!
//! Every update is one or two relaxed atomic read-modify-writes on memory allocated at
//! construction: no lock, no allocation, no system call, safe from any thread. Relaxed is
//! enough for counters and gauges because each value is independent and readers only need an
//! eventually current number. A histogram adds to its sum *before* it counts the observation
//! (release), and a render reads the counts (acquire) before the sum, so every observation a
//! render counts is in the sum it shows: a render racing updates may show a `_sum` ahead of its
//! buckets, never behind them (on x86 this ordering costs nothing over relaxed). All arithmetic
//! wraps rather than panics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use super::text::{write_decimal, write_i64, write_u64};
use super::MetricsError;

/// Most bucket bounds a histogram may have (the `+Inf` bucket not counted).
pub const HISTOGRAM_BOUNDS_MAX: usize = 32;
/// Decimal digits of a nanosecond count below one second.
const NANOS_FRACTION_DIGITS: u32 = 9;

/// The Prometheus metric types this module renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    /// The word on the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// A metric that can stand alone or be a child of a labelled family.
pub trait Metric: Send + Sync + 'static {
    const KIND: MetricKind;

    /// Appends this metric's sample lines for metric `name`. `labels` is the child's label pairs,
    /// already escaped and joined (`a="x",b="y"`), without braces; empty for none.
    fn render_samples(&self, name: &str, labels: &str, out: &mut String);
}

/// Appends `name` `suffix` `{labels}` and the space before the value.
fn write_series(out: &mut String, name: &str, suffix: &str, labels: &str) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() {
        out.push('{');
        out.push_str(labels);
        out.push('}');
    }
    out.push(' ');
}

/// A monotonic count. Its name must end in `_total`.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, amount: u64) {
        self.0.fetch_add(amount, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Metric for Counter {
    const KIND: MetricKind = MetricKind::Counter;

    fn render_samples(&self, name: &str, labels: &str, out: &mut String) {
        write_series(out, name, "", labels);
        write_u64(out, self.get());
        out.push('\n');
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Sets an unsigned value (a log index, a byte count), saturating at `i64::MAX`.
    pub fn set_u64(&self, value: u64) {
        self.set(i64::try_from(value).unwrap_or(i64::MAX));
    }

    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn dec(&self) {
        self.add(-1);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Metric for Gauge {
    const KIND: MetricKind = MetricKind::Gauge;

    fn render_samples(&self, name: &str, labels: &str, out: &mut String) {
        write_series(out, name, "", labels);
        write_i64(out, self.get());
        out.push('\n');
    }
}

/// What a histogram's raw `u64` values measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistogramUnit {
    /// Raw values are nanoseconds, rendered as seconds (the base unit). Name it `..._seconds`.
    Seconds,
    /// Raw values are rendered as they are: bytes, entries, messages.
    Plain,
}

/// Upper bounds of a histogram's buckets (inclusive: `le`), validated: strictly increasing and
/// at most [`HISTOGRAM_BOUNDS_MAX`] of them. The `+Inf` bucket is implicit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buckets {
    bounds: Vec<u64>,
    unit: HistogramUnit,
}

impl Buckets {
    /// Bounds for a duration histogram (observations via [`Histogram::observe_duration`]).
    pub fn durations(bounds: &[Duration]) -> Result<Buckets, MetricsError> {
        let nanos = bounds.iter().map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).collect();
        Buckets::new(nanos, HistogramUnit::Seconds)
    }

    /// Bounds for a histogram of plain values (bytes, entries).
    pub fn values(bounds: &[u64]) -> Result<Buckets, MetricsError> {
        Buckets::new(bounds.to_vec(), HistogramUnit::Plain)
    }

    fn new(bounds: Vec<u64>, unit: HistogramUnit) -> Result<Buckets, MetricsError> {
        if bounds.len() > HISTOGRAM_BOUNDS_MAX {
            return Err(MetricsError::TooManyBuckets { count: bounds.len(), max: HISTOGRAM_BOUNDS_MAX });
        }
        if bounds.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(MetricsError::BucketsNotIncreasing);
        }
        Ok(Buckets { bounds, unit })
    }

    pub fn unit(&self) -> HistogramUnit {
        self.unit
    }

    /// The bounds in raw units (nanoseconds for durations).
    pub fn bounds(&self) -> &[u64] {
        &self.bounds
    }
}

/// Counts of observations per bucket, and their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: Box<[u64]>,
    /// One per bound, then the `+Inf` bucket; not cumulative (cumulated when rendered), so an
    /// observation costs one increment. The total count is their sum, so `_count` always equals
    /// the `+Inf` bucket of the same render.
    counts: Box<[AtomicU64]>,
    /// Raw units; wraps after 2^64 (584 years of nanoseconds).
    sum: AtomicU64,
    unit: HistogramUnit,
    /// The rendered `le` label values, `+Inf` last; built once so rendering does no formatting.
    le_values: Box<[String]>,
}

impl Histogram {
    pub fn new(buckets: &Buckets) -> Histogram {
        let counts = (0..=buckets.bounds.len()).map(|_| AtomicU64::new(0)).collect();
        let mut le_values: Vec<String> = buckets.bounds.iter().map(|&b| render_value(b, buckets.unit)).collect();
        le_values.push("+Inf".to_string());
        Histogram {
            bounds: buckets.bounds.clone().into_boxed_slice(),
            counts,
            sum: AtomicU64::new(0),
            unit: buckets.unit,
            le_values: le_values.into_boxed_slice(),
        }
    }

    /// Records one value in raw units: nanoseconds for a `Seconds` histogram. A value equal to a
    /// bound counts in that bound's bucket (`le` is "less than or equal").
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        // Sum first, then the count (release): see the module doc.
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.counts[bucket].fetch_add(1, Ordering::Release);
    }

    /// Records a duration as nanoseconds (saturating at `u64::MAX`).
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |total, c| total.wrapping_add(c.load(Ordering::Acquire)))
    }

    /// Sum of observations in raw units.
    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    /// Observations per bucket, not cumulative, the `+Inf` bucket last.
    pub fn bucket_counts(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Ordering::Acquire)).collect()
    }

    pub fn unit(&self) -> HistogramUnit {
        self.unit
    }
}

/// A raw value in the unit it is rendered in.
fn render_value(raw: u64, unit: HistogramUnit) -> String {
    let mut out = String::new();
    match unit {
        HistogramUnit::Seconds => write_decimal(&mut out, raw, NANOS_FRACTION_DIGITS),
        HistogramUnit::Plain => write_u64(&mut out, raw),
    }
    out
}

impl Metric for Histogram {
    const KIND: MetricKind = MetricKind::Histogram;

    fn render_samples(&self, name: &str, labels: &str, out: &mut String) {
        let mut cumulative = 0u64;
        for (count, le) in self.counts.iter().zip(self.le_values.iter()) {
            cumulative = cumulative.wrapping_add(count.load(Ordering::Acquire));
            out.push_str(name);
            out.push_str("_bucket{");
            if !labels.is_empty() {
                out.push_str(labels);
                out.push(',');
            }
            out.push_str("le=\"");
            out.push_str(le);
            out.push_str("\"} ");
            write_u64(out, cumulative);
            out.push('\n');
        }
        write_series(out, name, "_sum", labels);
        match self.unit {
            HistogramUnit::Seconds => write_decimal(out, self.sum(), NANOS_FRACTION_DIGITS),
            HistogramUnit::Plain => write_u64(out, self.sum()),
        }
        out.push('\n');
        write_series(out, name, "_count", labels);
        write_u64(out, cumulative);
        out.push('\n');
    }
}
