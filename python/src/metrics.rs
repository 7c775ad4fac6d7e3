//! A metric set as plain Python data: `{name: {"type", "help", "unit", "samples": [...]}}`,
//! each sample `{"labels": {...}, "value": float}` or, for histograms, `{"labels", "buckets":
//! [(le, cumulative count)], "count", "sum"}`. `ikvpy.metrics` turns it into
//! `prometheus_client` families.

use ikv_core::metrics::{BOUNDS_SECONDS, MetricSet, MetricType, Value};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

pub fn to_dict<'py>(py: Python<'py>, set: &MetricSet) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for s in &set.samples {
        let family = match out.get_item(s.def.name)? {
            Some(f) => f.cast_into::<PyDict>()?,
            None => {
                let f = PyDict::new(py);
                let kind = match s.def.kind {
                    MetricType::Counter => "counter",
                    MetricType::Gauge => "gauge",
                    MetricType::Histogram => "histogram",
                };
                f.set_item("type", kind)?;
                f.set_item("help", s.def.help)?;
                f.set_item("unit", s.def.unit)?;
                f.set_item("samples", PyList::empty(py))?;
                out.set_item(s.def.name, &f)?;
                f
            }
        };
        let sample = PyDict::new(py);
        let labels = PyDict::new(py);
        for (k, v) in &s.labels {
            labels.set_item(*k, v)?;
        }
        sample.set_item("labels", labels)?;
        match &s.value {
            Value::Number(v) => sample.set_item("value", *v)?,
            Value::Histogram(h) => {
                let buckets: Vec<(f64, u64)> = BOUNDS_SECONDS
                    .iter()
                    .copied()
                    .zip(h.cumulative.iter().copied())
                    .collect();
                sample.set_item("buckets", buckets)?;
                sample.set_item("count", h.count)?;
                sample.set_item("sum", h.sum_seconds)?;
            }
        }
        if let Some(samples) = family.get_item("samples")? {
            samples.cast_into::<PyList>()?.append(sample)?;
        }
    }
    Ok(out)
}
