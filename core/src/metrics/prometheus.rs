//! Prometheus's text exposition format: `# HELP` and `# TYPE` once per metric, then its
//! samples; label values escaped; histograms as cumulative `_bucket{le=…}`, `_sum`, `_count`.

use std::fmt::Write;

use super::{BOUNDS_SECONDS, MetricSet, MetricType, Value};

pub(super) fn render(set: &MetricSet) -> String {
    let mut out = String::new();
    let mut order: Vec<&'static str> = Vec::new();
    for s in &set.samples {
        if !order.contains(&s.def.name) {
            order.push(s.def.name);
        }
    }
    for name in order {
        let mut samples = set.samples.iter().filter(|s| s.def.name == name).peekable();
        let Some(first) = samples.peek() else {
            continue;
        };
        let kind = match first.def.kind {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {name} {}", escape_help(first.def.help));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in samples {
            match &s.value {
                Value::Number(v) => {
                    let _ = writeln!(out, "{name}{} {}", labels(&s.labels, None), number(*v));
                }
                Value::Histogram(h) => {
                    for (bound, count) in BOUNDS_SECONDS.iter().zip(&h.cumulative) {
                        let le = number(*bound);
                        let _ =
                            writeln!(out, "{name}_bucket{} {count}", labels(&s.labels, Some(&le)));
                    }
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        labels(&s.labels, Some("+Inf")),
                        h.count
                    );
                    let l = labels(&s.labels, None);
                    let _ = writeln!(out, "{name}_sum{l} {}", number(h.sum_seconds));
                    let _ = writeln!(out, "{name}_count{l} {}", h.count);
                }
            }
        }
    }
    out
}

fn labels(labels: &[(&'static str, String)], le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_value(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::catalog::{WRITER_COMMIT_SECONDS, WRITER_COMMITS};
    use super::super::{Histogram, MetricSet};

    #[test]
    fn counters_and_histograms_render_as_prometheus_reads_them() {
        let mut set = MetricSet::new();
        set.number(&WRITER_COMMITS, &[("store", "a\"b\\c\nd")], 3.0);
        set.number(&WRITER_COMMITS, &[("store", "users")], 5.0);
        let h = Histogram::default();
        h.record(Duration::from_millis(3));
        set.histogram(&WRITER_COMMIT_SECONDS, &[("store", "users")], &h);
        let text = set.to_prometheus();
        assert_eq!(
            text.matches("# TYPE ikv_writer_commits_total counter")
                .count(),
            1
        );
        assert!(
            text.contains("ikv_writer_commits_total{store=\"a\\\"b\\\\c\\nd\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("ikv_writer_commits_total{store=\"users\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ikv_writer_commit_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("ikv_writer_commit_seconds_bucket{store=\"users\",le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("ikv_writer_commit_seconds_bucket{store=\"users\",le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ikv_writer_commit_seconds_bucket{store=\"users\",le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ikv_writer_commit_seconds_count{store=\"users\"} 1\n"),
            "{text}"
        );
    }
}
