//! kill -9 on the writer's commit path, at its failpoints: before the PUT, after an
//! ambiguous outcome (the PUT landed, the answer was lost), and after the commit before its
//! tip hint. The child prints every write acknowledged to it; after each kill a fresh writer
//! goes on, and then the log must be dense, every delta in it committed, every acknowledged
//! write in it exactly once at the number it was acknowledged at, and a reader must serve the
//! last write of every key in log order.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use ikv_core::bucket::committed::decode_committed;
use ikv_core::bucket::{create_store, list_delta_seqs, read_delta};
use ikv_core::{DeltaOp, Document, FieldValue, Storage, StoreConfig, StoreLayout};
use ikv_reader::{Reader, ReaderOptions};
use ikv_writer::{Writer, WriterOptions};
use rand::{Rng, SeedableRng};

const STORE: &str = "wcrash";

/// Runs the writer child with `point` armed at hit `n`; returns the writes it acknowledged
/// (marker, sequence) and whether it was killed at the point (false: it finished first).
fn run_child(
    url: &str,
    tag: &str,
    count: usize,
    extra: &[&str],
    point: &str,
    n: u64,
) -> (Vec<(String, u64)>, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ikv-test-writer"))
        .args([url, STORE, &count.to_string(), tag])
        .args(extra)
        .env("IKV_FAILPOINTS", format!("{point}={n}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let want = format!("failpoint {point} {n}");
    let mut acked = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        if line == want {
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert_eq!(status.signal(), Some(9), "{want}");
            return (acked, true);
        }
        if line == "done" {
            child.wait().unwrap();
            return (acked, false);
        }
        if let Some(rest) = line.strip_prefix("acked ") {
            let (marker, seq) = rest.split_once(' ').unwrap();
            acked.push((marker.to_owned(), seq.parse().unwrap()));
        }
    }
    let out = child.wait_with_output().unwrap();
    panic!(
        "the writer child exited ({:?}) before {want}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_writer_killed_anywhere_on_its_commit_path_loses_no_acknowledged_write() {
    let seed: u64 = std::env::var("IKV_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rt = ikv_tests::runtime();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    let storage = Storage::open(&url, &Default::default()).unwrap();
    rt.block_on(create_store(
        &storage,
        &StoreConfig::new(STORE, "id", None, 1).unwrap(),
    ))
    .unwrap();
    let layout = StoreLayout::new(&storage.prefix, STORE).unwrap();
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut killed = 0;
    for (round, (point, extra, max)) in [
        ("writer.commit.before_put", &[][..], 12u64),
        ("writer.commit.before_hint", &[][..], 12),
        ("writer.commit.after_ambiguous", &["ambiguous"][..], 1),
        ("writer.commit.before_put", &["ambiguous"][..], 3),
    ]
    .into_iter()
    .enumerate()
    {
        let n = rng.random_range(1..=max);
        let (got, was_killed) = run_child(&url, &format!("r{round}"), 12, extra, point, n);
        assert!(was_killed, "seed {seed}: {point} hit {n} was reached");
        killed += 1;
        acked.extend(got);
        // A fresh writer (a new Lambda instance) goes on after the dead one.
        let writer = rt
            .block_on(Writer::open(
                storage.clone(),
                STORE,
                WriterOptions::default(),
            ))
            .unwrap();
        for i in 0..3 {
            let marker = format!("after{round}-{i}");
            let receipt = rt
                .block_on(
                    writer.upsert_fields(
                        Document::new()
                            .with("id", FieldValue::String(format!("w{i}")))
                            .with("m", FieldValue::String(marker.clone())),
                    ),
                )
                .unwrap();
            acked.push((marker, receipt.commits[0].sequence));
        }
    }
    assert_eq!(killed, 4);

    // The log: dense, every delta committed, every acknowledged write exactly once where it
    // was acknowledged; the last write of each key in log order is what readers must serve.
    let seqs = rt.block_on(list_delta_seqs(&storage, &layout, 0)).unwrap();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "seed {seed}: dense"
    );
    let mut at: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for seq in seqs {
        let bytes = rt
            .block_on(read_delta(&storage, &layout, 0, seq))
            .unwrap()
            .unwrap();
        let delta = decode_committed(&bytes, &layout, 0, seq).unwrap();
        for op in delta.ops {
            if let DeltaOp::SetField {
                key,
                field,
                value: FieldValue::String(v),
                ..
            } = op
                && field == "m"
            {
                at.entry(v.clone()).or_default().push(seq);
                last.insert(String::from_utf8_lossy(&key).into_owned(), v);
            }
        }
    }
    for (marker, seq) in &acked {
        assert_eq!(
            at.get(marker),
            Some(&vec![*seq]),
            "seed {seed}: {marker} acknowledged at {seq}"
        );
    }
    let mount = dir.path().join("mount");
    let reader = Reader::open(ReaderOptions::new(&url, STORE, &mount)).unwrap();
    for (key, marker) in &last {
        assert_eq!(
            reader.get_string(key.as_bytes(), "m").unwrap().as_deref(),
            Some(marker.as_str()),
            "seed {seed}: {key}"
        );
    }
}
