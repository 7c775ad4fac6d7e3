//! CloudWatch's embedded metric format: one JSON line in a Lambda function's log that
//! CloudWatch turns into metrics, with no agent and no extra request. ikv writes at most one
//! per invocation: what the invocation added to each counter, the gauges' values, and each
//! histogram's count and sum for the invocation.
//!
//! A metric name appears once per line, so labels other than the line's dimensions are folded
//! into the name: `ikv_storage_requests_total.get.ok` is requests of kind `get` that ended
//! `ok`. Zeros are left out; a line with nothing to say is not written. Each value is
//! published per dimension value and over all of them (a second, empty dimension set), so an
//! alarm can watch a metric without naming a store.

use serde_json::{Map, Value as Json, json};

use super::{MetricSet, MetricType, Value};

/// CloudWatch namespace of ikv's metrics.
pub const NAMESPACE: &str = "ikv";

/// The line for `set` (values for this invocation), with `dimensions` as CloudWatch
/// dimensions (for example `store`); `None` when every value is zero.
pub fn line(set: &MetricSet, dimensions: &[(&str, &str)], timestamp_ms: u64) -> Option<String> {
    let mut root = Map::new();
    let mut metrics = Vec::new();
    let dims: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    for (k, v) in dimensions {
        root.insert((*k).to_owned(), Json::String((*v).to_owned()));
    }
    for s in &set.samples {
        let mut name = s.def.name.to_owned();
        for (k, v) in &s.labels {
            if !dims.contains(k) {
                name.push('.');
                name.push_str(v);
            }
        }
        match &s.value {
            Value::Number(v) => {
                if *v == 0.0 && s.def.kind == MetricType::Counter {
                    continue;
                }
                metrics.push(json!({"Name": name, "Unit": s.def.unit}));
                root.insert(name, json!(v));
            }
            Value::Histogram(h) => {
                if h.count == 0 {
                    continue;
                }
                let (count, sum) = (format!("{name}.count"), format!("{name}.sum"));
                metrics.push(json!({"Name": count, "Unit": "Count"}));
                metrics.push(json!({"Name": sum, "Unit": "Seconds"}));
                root.insert(count, json!(h.count));
                root.insert(sum, json!(h.sum_seconds));
            }
        }
    }
    if metrics.is_empty() {
        return None;
    }
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                // Per dimension value, and over all of them (alarms need no store name).
                "Dimensions": if dims.is_empty() { json!([dims]) } else { json!([dims, []]) },
                "Metrics": metrics,
            }],
        }),
    );
    Some(Json::Object(root).to_string())
}

/// Checks a line against the embedded metric format's rules as CloudWatch applies them: one
/// JSON object; `_aws` with a millisecond `Timestamp` and `CloudWatchMetrics` directives,
/// each with a `Namespace`, dimension sets (at most 30 names) naming string members of the
/// object, and 1 to 100 metrics whose `Name` is a numeric member and whose `Unit` is one
/// ikv uses. Returns the object.
pub fn check(line: &str) -> Result<Json, String> {
    let v: Json = serde_json::from_str(line).map_err(|e| format!("not one JSON object: {e}"))?;
    let aws = v.get("_aws").ok_or("no _aws member")?;
    aws.get("Timestamp")
        .and_then(Json::as_u64)
        .ok_or("_aws.Timestamp is not milliseconds")?;
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Json::as_array)
        .filter(|d| !d.is_empty())
        .ok_or("_aws.CloudWatchMetrics is not a non-empty array")?;
    for d in directives {
        let ns = d.get("Namespace").and_then(Json::as_str).unwrap_or("");
        if ns.is_empty() || ns.len() > 255 {
            return Err(format!("bad Namespace {ns:?}"));
        }
        let sets = d
            .get("Dimensions")
            .and_then(Json::as_array)
            .ok_or("Dimensions is not an array")?;
        for set in sets {
            let set = set.as_array().ok_or("a dimension set is not an array")?;
            if set.len() > 30 {
                return Err("more than 30 dimensions in a set".into());
            }
            for dim in set {
                let name = dim.as_str().ok_or("a dimension name is not a string")?;
                if !v.get(name).is_some_and(Json::is_string) {
                    return Err(format!("dimension {name:?} is not a string member"));
                }
            }
        }
        let metrics = d
            .get("Metrics")
            .and_then(Json::as_array)
            .filter(|m| !m.is_empty() && m.len() <= 100)
            .ok_or("Metrics is not an array of 1 to 100")?;
        for m in metrics {
            let name = m.get("Name").and_then(Json::as_str).unwrap_or("");
            if name.is_empty() || name.len() > 1024 {
                return Err(format!("bad metric name {name:?}"));
            }
            let unit = m.get("Unit").and_then(Json::as_str).unwrap_or("");
            if !["Count", "Seconds", "Bytes", "None"].contains(&unit) {
                return Err(format!("{name}: unit {unit:?}"));
            }
            if !v.get(name).is_some_and(Json::is_number) {
                return Err(format!("{name} has no numeric value"));
            }
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::super::MetricSet;
    use super::super::catalog::{STORAGE_REQUESTS, WRITER_COMMIT_SECONDS, WRITER_COMMITS};
    use super::*;

    #[test]
    fn a_line_is_valid_emf_with_labels_folded_and_zeros_left_out() {
        let mut set = MetricSet::new();
        set.number(&WRITER_COMMITS, &[("store", "users")], 2.0);
        set.number(
            &STORAGE_REQUESTS,
            &[("store", "users"), ("kind", "put"), ("outcome", "ok")],
            3.0,
        );
        set.number(
            &STORAGE_REQUESTS,
            &[("store", "users"), ("kind", "get"), ("outcome", "ok")],
            0.0,
        );
        let h = super::super::Histogram::default();
        h.record(std::time::Duration::from_millis(20));
        set.histogram(&WRITER_COMMIT_SECONDS, &[("store", "users")], &h);
        let line = line(&set, &[("store", "users")], 1_700_000_000_000).unwrap();
        let v = check(&line).unwrap();
        assert!(check("{}").is_err());
        assert!(check(&line.replace("Seconds", "Minutes")).is_err());
        assert_eq!(v["store"], "users");
        assert_eq!(v["ikv_writer_commits_total"], 2.0);
        assert_eq!(v["ikv_storage_requests_total.put.ok"], 3.0);
        assert!(v.get("ikv_storage_requests_total.get.ok").is_none());
        assert_eq!(v["ikv_writer_commit_seconds.count"], 1);
        assert!(!line.contains('\n'));
        assert_eq!(super::line(&MetricSet::new(), &[], 0), None);
    }
}
