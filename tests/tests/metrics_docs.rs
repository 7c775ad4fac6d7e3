//! Every metric is documented where operators look (docs/OPERATIONS.md), and the alert rules
//! and the Lambda alarms name only metrics that exist.

use std::collections::BTreeSet;

use ikv_core::metrics::catalog::ALL;

fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `ikv_…` name in `text` (histogram and EMF suffixes taken off).
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("ikv_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let name = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|n| n.ends_with("_seconds")))
            .unwrap_or(name);
        out.insert(name.to_owned());
        i = end;
    }
    out
}

#[test]
fn every_metric_is_documented_and_rules_name_only_real_ones() {
    let known: BTreeSet<String> = ALL.iter().map(|m| m.name.to_owned()).collect();
    let ops = repo_file("docs/OPERATIONS.md");
    for m in ALL {
        assert!(
            ops.contains(&format!("`{}`", m.name)),
            "{} is not in docs/OPERATIONS.md's table",
            m.name
        );
    }
    for file in [
        "deploy/prometheus/ikv-alerts.yml",
        "deploy/template.yaml",
        "deploy/grafana/ikv-dashboard.json",
    ] {
        let named = names_in(&repo_file(file));
        let unknown: Vec<_> = named
            .iter()
            .filter(|n| n.starts_with("ikv_") && !known.contains(*n))
            .filter(|n| !n.starts_with("ikv_storage_requests_total.")) // EMF folded names
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names unknown metrics: {unknown:?}"
        );
    }
    assert!(!names_in(&repo_file("deploy/prometheus/ikv-alerts.yml")).is_empty());
}

/// The dashboard is JSON Grafana imports (panels with Prometheus targets) whose queries name
/// known metrics (a real Prometheus parses each of them in python/tests/test_prometheus.py).
#[test]
fn the_dashboard_is_importable_json_over_known_metrics() {
    let text = repo_file("deploy/grafana/ikv-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            for (open, close) in [('(', ')'), ('{', '}'), ('[', ']')] {
                assert_eq!(
                    expr.matches(open).count(),
                    expr.matches(close).count(),
                    "{expr}"
                );
            }
            assert!(!names_in(expr).is_empty(), "{expr} names no ikv metric");
        }
    }
}
