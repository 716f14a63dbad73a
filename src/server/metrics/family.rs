//! Labelled families with bounded cardinality.
//!
//! - [`FixedFamily`]: every combination of label values is created at construction (the product
//!   of fixed value lists), so the hot path is index arithmetic into an array: no lookup, no lock.
//! - [`DynamicFamily`]: children keyed by label values added and removed on the slow path (peers
//!   as membership changes). The hot path holds the `Arc` of its child and never touches the
//!   family; the family's mutex is taken only by `add`/`remove`/`get` and by rendering.
//!
//! Invariants: label names are valid, distinct, and fixed for the family's life; every child has
//! one value per label name; no two children have the same values; a family has at most
//! [`FAMILY_CHILDREN_MAX`] children. Each child's label text is escaped once, when it is created.

use std::sync::{Arc, Mutex, MutexGuard};

use super::text::{is_valid_label_name, render_label_pairs};
use super::{Metric, MetricsError};

/// Most children a family may have: the bound on the series one family can add to a scrape.
pub const FAMILY_CHILDREN_MAX: usize = 1024;
/// Label names a family may not use: the histogram's bucket label and the summary quantile.
const RESERVED_LABEL_NAMES: [&str; 2] = ["le", "quantile"];

fn validate_label_names(label_names: &[&str]) -> Result<Box<[String]>, MetricsError> {
    if label_names.is_empty() {
        return Err(MetricsError::NoLabels);
    }
    for (i, name) in label_names.iter().enumerate() {
        if !is_valid_label_name(name) || RESERVED_LABEL_NAMES.contains(name) {
            return Err(MetricsError::InvalidLabelName(name.to_string()));
        }
        if label_names[..i].contains(name) {
            return Err(MetricsError::DuplicateLabelName(name.to_string()));
        }
    }
    Ok(label_names.iter().map(|n| n.to_string()).collect())
}

/// A family whose children are all combinations of fixed label value lists, in row-major order:
/// the last label varies fastest.
pub struct FixedFamily<M> {
    label_names: Box<[String]>,
    /// Number of values of each label.
    value_counts: Box<[usize]>,
    children: Box<[M]>,
    /// Rendered label pairs of each child, parallel to `children`.
    child_labels: Box<[String]>,
}

impl<M: Metric> FixedFamily<M> {
    /// `label_values[i]` lists the values of label `label_names[i]`; `make` builds each child.
    pub fn new(
        label_names: &[&str],
        label_values: &[&[&str]],
        mut make: impl FnMut() -> M,
    ) -> Result<FixedFamily<M>, MetricsError> {
        let names = validate_label_names(label_names)?;
        if label_values.len() != names.len() {
            return Err(MetricsError::LabelCountMismatch { expected: names.len(), got: label_values.len() });
        }
        let mut total = 1usize;
        for values in label_values {
            if values.is_empty() {
                return Err(MetricsError::NoLabelValues);
            }
            if values.iter().enumerate().any(|(i, v)| values[..i].contains(v)) {
                return Err(MetricsError::DuplicateChild);
            }
            total = total.saturating_mul(values.len());
        }
        if total > FAMILY_CHILDREN_MAX {
            return Err(MetricsError::TooManyChildren { max: FAMILY_CHILDREN_MAX });
        }
        let mut child_labels = Vec::with_capacity(total);
        let mut coordinates = vec![0usize; names.len()];
        for _ in 0..total {
            let values: Vec<&str> = coordinates.iter().zip(label_values).map(|(&i, values)| values[i]).collect();
            child_labels.push(render_label_pairs(&names, &values));
            // Advance the odometer, last label fastest.
            for (coordinate, values) in coordinates.iter_mut().zip(label_values).rev() {
                *coordinate += 1;
                if *coordinate < values.len() {
                    break;
                }
                *coordinate = 0;
            }
        }
        Ok(FixedFamily {
            label_names: names,
            value_counts: label_values.iter().map(|v| v.len()).collect(),
            children: (0..total).map(|_| make()).collect(),
            child_labels: child_labels.into_boxed_slice(),
        })
    }

    /// The child at `coordinates` (one value index per label, in label order). `None` if the
    /// number of coordinates is wrong or one is out of range. No allocation, no lock.
    pub fn get(&self, coordinates: &[usize]) -> Option<&M> {
        if coordinates.len() != self.value_counts.len() {
            return None;
        }
        let mut index = 0usize;
        for (&coordinate, &count) in coordinates.iter().zip(self.value_counts.iter()) {
            if coordinate >= count {
                return None;
            }
            index = index * count + coordinate;
        }
        self.children.get(index)
    }

    /// The child at a flat row-major index.
    pub fn child(&self, index: usize) -> Option<&M> {
        self.children.get(index)
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    pub fn label_names(&self) -> &[String] {
        &self.label_names
    }

    pub(crate) fn render_samples(&self, name: &str, out: &mut String) {
        for (child, labels) in self.children.iter().zip(self.child_labels.iter()) {
            child.render_samples(name, labels, out);
        }
    }
}

struct DynamicChild<M> {
    values: Box<[String]>,
    labels: String,
    metric: Arc<M>,
}

impl<M> DynamicChild<M> {
    fn has_values(&self, values: &[&str]) -> bool {
        self.values.iter().map(String::as_str).eq(values.iter().copied())
    }
}

type ChildFactory<M> = Box<dyn Fn() -> M + Send + Sync>;

/// A family whose children are added and removed at run time, on the slow path.
pub struct DynamicFamily<M> {
    label_names: Box<[String]>,
    make: ChildFactory<M>,
    /// In the order added, which is the order rendered.
    children: Mutex<Vec<DynamicChild<M>>>,
}

impl<M: Metric> DynamicFamily<M> {
    /// A family without children; `make` builds each child that [`add`](Self::add) creates.
    pub fn new(
        label_names: &[&str],
        make: impl Fn() -> M + Send + Sync + 'static,
    ) -> Result<DynamicFamily<M>, MetricsError> {
        let label_names = validate_label_names(label_names)?;
        Ok(DynamicFamily { label_names, make: Box::new(make), children: Mutex::new(Vec::new()) })
    }

    /// A panic elsewhere while holding the lock cannot leave the list half-updated (every
    /// mutation is a single push or remove), so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Vec<DynamicChild<M>>> {
        self.children.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_arity(&self, values: &[&str]) -> Result<(), MetricsError> {
        if values.len() != self.label_names.len() {
            return Err(MetricsError::LabelCountMismatch { expected: self.label_names.len(), got: values.len() });
        }
        Ok(())
    }

    /// The child with these label values, created if it does not exist yet. Keep the returned
    /// `Arc` and update through it: that is the lock-free path.
    pub fn add(&self, values: &[&str]) -> Result<Arc<M>, MetricsError> {
        self.check_arity(values)?;
        let mut children = self.lock();
        if let Some(child) = children.iter().find(|c| c.has_values(values)) {
            return Ok(Arc::clone(&child.metric));
        }
        if children.len() >= FAMILY_CHILDREN_MAX {
            return Err(MetricsError::TooManyChildren { max: FAMILY_CHILDREN_MAX });
        }
        let metric = Arc::new((self.make)());
        children.push(DynamicChild {
            values: values.iter().map(|v| v.to_string()).collect(),
            labels: render_label_pairs(&self.label_names, values),
            metric: Arc::clone(&metric),
        });
        Ok(metric)
    }

    /// The child with these label values, if there is one.
    pub fn get(&self, values: &[&str]) -> Option<Arc<M>> {
        let children = self.lock();
        children.iter().find(|c| c.has_values(values)).map(|c| Arc::clone(&c.metric))
    }

    /// Removes the child with these label values; its series disappear from the next render.
    /// Returns whether there was one. Holders of its `Arc` may keep updating it, unseen.
    pub fn remove(&self, values: &[&str]) -> bool {
        let mut children = self.lock();
        let before = children.len();
        children.retain(|c| !c.has_values(values));
        children.len() != before
    }

    /// Keeps only the children for whose label values `keep` returns true (a membership change
    /// in one call).
    pub fn retain(&self, mut keep: impl FnMut(&[String]) -> bool) {
        self.lock().retain(|c| keep(&c.values));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn label_names(&self) -> &[String] {
        &self.label_names
    }

    pub(crate) fn render_samples(&self, name: &str, out: &mut String) {
        for child in self.lock().iter() {
            child.metric.render_samples(name, &child.labels, out);
        }
    }
}
