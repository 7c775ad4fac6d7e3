//! `ikv status --watch`: a store's status redrawn every interval for a person at a terminal,
//! with the write rate each partition's tip shows, and, for each `--scrape` endpoint (an
//! `ikv serve`'s or a process's `/metrics`), what its readers and writers report: lag,
//! applied deltas, reads, storage requests per second by kind with what they cost a month at
//! S3 list prices, local copy size, commits.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use ikv_core::clock::{Clock, SystemClock};

use crate::commands::{open, status_table};
use crate::fail::Fail;

/// Samples of one scrape: `(name, labels) → value`.
type Scrape = BTreeMap<(String, Vec<(String, String)>), f64>;

/// One refresh: the tips and each endpoint's samples, when they were taken.
struct Frame {
    at: Duration,
    tips: Vec<u64>,
    scrapes: Vec<Result<Scrape, String>>,
}

pub async fn watch(
    url: &str,
    store: &str,
    every: Duration,
    scrape: &[String],
) -> Result<String, Fail> {
    let storage = open(url, false)?;
    let clock = SystemClock::new();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Fail::from(e.to_string()))?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Fail::from(format!("cannot listen for Ctrl-C: {e}")))?;
    let mut previous: Option<Frame> = None;
    loop {
        let (table, tips, _holes) = status_table(&storage, store).await?;
        let mut scrapes = Vec::with_capacity(scrape.len());
        for target in scrape {
            scrapes.push(fetch(&http, target).await);
        }
        let frame = Frame {
            at: clock.elapsed(),
            tips,
            scrapes,
        };
        let screen = render(store, every, &table, scrape, &frame, previous.as_ref());
        // Clear the screen, home the cursor, draw.
        print!("\x1b[2J\x1b[H{screen}");
        let _ = std::io::stdout().flush();
        previous = Some(frame);
        tokio::select! {
            _ = clock.sleep(every) => {}
            _ = interrupt.recv() => return Ok(String::new()),
        }
    }
}

async fn fetch(http: &reqwest::Client, target: &str) -> Result<Scrape, String> {
    let response = http.get(target).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    Ok(parse_prometheus(&text))
}

/// The samples of a Prometheus text exposition (comments skipped; a line that does not parse
/// is skipped too: this is a view, not a validator).
pub fn parse_prometheus(text: &str) -> Scrape {
    let mut out = Scrape::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let rest = rest.trim_end_matches('}');
                let mut labels = Vec::new();
                for pair in split_labels(rest) {
                    if let Some((k, v)) = pair.split_once('=') {
                        labels.push((k.to_owned(), v.trim_matches('"').replace("\\\"", "\"")));
                    }
                }
                (name.to_owned(), labels)
            }
        };
        out.insert((name, labels), value);
    }
    out
}

/// `a="x",b="y,z"` split at the commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        parts.push(&s[start..]);
    }
    parts
}

/// The samples of `name` whose labels include `want`.
fn matching<'a>(
    scrape: &'a Scrape,
    name: &'a str,
    want: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = f64> + 'a {
    scrape
        .iter()
        .filter(move |((n, labels), _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, v)| *v)
}

fn sum(scrape: &Scrape, name: &str, want: &[(&str, &str)]) -> f64 {
    matching(scrape, name, want).sum()
}

fn max(scrape: &Scrape, name: &str, want: &[(&str, &str)]) -> f64 {
    matching(scrape, name, want).fold(0.0, f64::max)
}

/// S3 list prices (us-east-1), per request: PUT, COPY, POST, LIST; GET, HEAD and the rest.
const WRITE_PRICE: f64 = 0.005 / 1000.0;
const READ_PRICE: f64 = 0.0004 / 1000.0;
/// Seconds in a 30-day month.
const MONTH: f64 = 30.0 * 86_400.0;

/// A component's storage requests per second by kind, and what that rate costs a month at S3
/// list prices ("-" until two frames were taken).
fn request_rates(
    scrape: &Scrape,
    earlier: Option<&Scrape>,
    secs: Option<f64>,
    component: &str,
) -> String {
    let (Some(earlier), Some(secs)) = (earlier, secs) else {
        return "-".to_owned();
    };
    let per_second = |kind: &str| {
        let want = [("component", component), ("kind", kind)];
        let name = "ikv_storage_requests_total";
        (sum(scrape, name, &want) - sum(earlier, name, &want)).max(0.0) / secs
    };
    let [get, head, put, list, delete] = ["get", "head", "put", "list", "delete"].map(per_second);
    let dollars = ((put + list) * WRITE_PRICE + (get + head) * READ_PRICE) * MONTH;
    format!(
        "{:.2} (get {get:.2}, head {head:.2}, put {put:.2}, list {list:.2}, delete {delete:.2}) ≈ ${dollars:.2}/month",
        get + head + put + list + delete
    )
}

fn render(
    store: &str,
    every: Duration,
    table: &str,
    targets: &[String],
    now: &Frame,
    before: Option<&Frame>,
) -> String {
    let secs = before
        .map(|b| now.at.saturating_sub(b.at).as_secs_f64())
        .filter(|s| *s > 0.0);
    let rate = |now_v: f64, before_v: Option<f64>| match (secs, before_v) {
        (Some(s), Some(b)) => format!("{:.1}", (now_v - b).max(0.0) / s),
        _ => "-".to_owned(),
    };
    let mut out = format!(
        "ikv store {store:?}, every {} (Ctrl-C to stop)\n\n",
        humantime::format_duration(every)
    );
    let writes: u64 = now.tips.iter().sum();
    let before_writes = before.map(|b| b.tips.iter().sum::<u64>() as f64);
    out.push_str(table);
    out.push_str(&format!(
        "\n\ndeltas committed/s (all partitions): {}\n",
        rate(writes as f64, before_writes)
    ));
    let s = [("store", store)];
    for (i, target) in targets.iter().enumerate() {
        out.push_str(&format!("\n{target}\n"));
        let scrape = match &now.scrapes[i] {
            Ok(scrape) => scrape,
            Err(e) => {
                out.push_str(&format!("  unreachable: {e}\n"));
                continue;
            }
        };
        let earlier = before
            .and_then(|b| b.scrapes.get(i))
            .and_then(|r| r.as_ref().ok());
        let was = |name: &str, want: &[(&str, &str)]| earlier.map(|e| sum(e, name, want));
        let has = |name: &str| scrape.keys().any(|(n, _)| n == name);
        if has("ikv_reader_applied_sequence") {
            out.push_str(&format!(
                "  reader: lag {:.1} s / {} deltas, applied {}, owner {}, quiet partitions {}, gets/s {}, multigets/s {}, local copy {:.1} MB\n    storage requests/s {}\n",
                max(scrape, "ikv_reader_lag_seconds", &s),
                max(scrape, "ikv_reader_lag_deltas", &s),
                sum(scrape, "ikv_reader_applied_sequence", &s),
                if sum(scrape, "ikv_reader_owns_mount", &s) > 0.0 { "yes" } else { "no" },
                sum(scrape, "ikv_reader_quiet_partitions", &s),
                rate(sum(scrape, "ikv_reader_gets_total", &s), was("ikv_reader_gets_total", &s)),
                rate(sum(scrape, "ikv_reader_multigets_total", &s), was("ikv_reader_multigets_total", &s)),
                sum(scrape, "ikv_reader_local_bytes", &s) / 1e6,
                request_rates(scrape, earlier, secs, "reader"),
            ));
        }
        if has("ikv_writer_commits_total") {
            out.push_str(&format!(
                "  writer: commits/s {}, operations/s {}, lost races/s {}, hints/s {}, wake signals/s {}, refusals {}\n    storage requests/s {}\n",
                rate(sum(scrape, "ikv_writer_commits_total", &s), was("ikv_writer_commits_total", &s)),
                rate(sum(scrape, "ikv_writer_operations_total", &s), was("ikv_writer_operations_total", &s)),
                rate(sum(scrape, "ikv_writer_lost_races_total", &s), was("ikv_writer_lost_races_total", &s)),
                rate(
                    sum(scrape, "ikv_writer_tip_hint_publishes_total", &s),
                    was("ikv_writer_tip_hint_publishes_total", &s)
                ),
                rate(
                    sum(scrape, "ikv_writer_wake_signals_total", &s),
                    was("ikv_writer_wake_signals_total", &s)
                ),
                sum(scrape, "ikv_writer_refusals_total", &[]),
                request_rates(scrape, earlier, secs, "writer"),
            ));
        }
        if !has("ikv_reader_applied_sequence") && !has("ikv_writer_commits_total") {
            out.push_str("  no ikv metrics for this store here yet\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_rates_are_per_kind_and_priced() {
        let at = |get: f64, put: f64| {
            parse_prometheus(&format!(
                "ikv_storage_requests_total{{component=\"reader\",kind=\"get\",outcome=\"ok\"}} {get}\n\
                 ikv_storage_requests_total{{component=\"reader\",kind=\"get\",outcome=\"not_modified\"}} {get}\n\
                 ikv_storage_requests_total{{component=\"reader\",kind=\"put\",outcome=\"ok\"}} {put}\n\
                 ikv_storage_requests_total{{component=\"writer\",kind=\"put\",outcome=\"ok\"}} 999\n"
            ))
        };
        let before = at(10.0, 1.0);
        let now = at(20.0, 3.0);
        assert_eq!(request_rates(&now, None, Some(10.0), "reader"), "-");
        // 2 GET/s and 0.2 PUT/s: 5.18M GETs ($2.07) and 518k PUTs ($2.59) a month.
        assert_eq!(
            request_rates(&now, Some(&before), Some(10.0), "reader"),
            "2.20 (get 2.00, head 0.00, put 0.20, list 0.00, delete 0.00) ≈ $4.67/month"
        );
    }

    #[test]
    fn prometheus_text_parses_with_labels_quotes_and_comments() {
        let text = "# HELP x y\n# TYPE x counter\nikv_a_total{store=\"s\",code=\"4,0\\\"1\"} 3\nikv_b 2.5\nbroken line\n";
        let s = parse_prometheus(text);
        assert_eq!(sum(&s, "ikv_a_total", &[("store", "s")]), 3.0);
        assert_eq!(sum(&s, "ikv_a_total", &[("code", "4,0\"1")]), 3.0);
        assert_eq!(sum(&s, "ikv_b", &[]), 2.5);
        assert_eq!(s.len(), 2);
    }
}
