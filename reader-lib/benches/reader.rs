//! Reader benchmark: 1M documents, 10-byte keys, 3 fields × 50 bytes, beside LMDB (heed) on
//! the same data in the same run. Measures get p50/p99 and multiget of 100 keys for the
//! mount's owner, for a second reader attached to the same mount, and for LMDB (each side warmed by the same pass, timed in
//! alternating order, keys built outside timed regions, median of 3 runs with the range),
//! bootstrap from a local-directory snapshot (3 runs, field values without the key), the
//! resident memory each reader adds, and freshness from write acknowledgement to visibility.
//!
//! `cargo bench -p ikv-reader --bench reader [-- DOCS]`
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::time::{Duration, Instant, SystemTime};

use heed::types::Bytes as RawBytes;
use heed::{Database, EnvOpenOptions};
use ikv_core::bucket::create_store;
use ikv_core::{Document, FieldValue, Operation, Storage, StorageOptions, StoreConfig};
use ikv_reader::{Reader, ReaderOptions};
use ikv_snapshot::{SnapshotOptions, snapshot_partition};
use ikv_writer::{Writer, WriterOptions};
use rand::{Rng, SeedableRng};

const FIELDS: [&str; 3] = ["f1", "f2", "f3"];

fn key(i: usize) -> String {
    format!("k{i:09}") // 10 bytes
}

fn value(i: usize, f: usize) -> String {
    format!("{f}{i:0>49}") // 50 bytes
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `reader rss-child URL MOUNT`: opens a reader (bootstrapping MOUNT, or attaching to it) and
/// prints the resident memory the open added to this fresh process.
fn rss_child(args: &[String]) {
    let before = rss_bytes();
    let options = ReaderOptions::new(&args[2], "bench", &args[3]);
    let reader = Reader::open(options).unwrap();
    println!("{}", rss_bytes().saturating_sub(before));
    drop(reader);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("rss-child") {
        return rss_child(&args);
    }
    let docs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    let storage = Storage::open(&url, &StorageOptions::default()).unwrap();
    let config = StoreConfig::new("bench", "id", None, 1).unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            "bench",
            WriterOptions::default(),
        ))
        .unwrap();
    let t = Instant::now();
    for start in (0..docs).step_by(20_000) {
        let ops: Vec<Operation> = (start..(start + 20_000).min(docs))
            .map(|i| {
                let mut d = Document::new().with("id", FieldValue::String(key(i)));
                for (f, name) in FIELDS.iter().enumerate() {
                    d.put(*name, FieldValue::String(value(i, f)));
                }
                Operation::UpsertFields(d)
            })
            .collect();
        rt.block_on(writer.write(&ops)).unwrap();
    }
    eprintln!(
        "wrote {docs} documents in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let forced = SnapshotOptions {
        force: true,
        ..SnapshotOptions::default()
    };
    let t = Instant::now();
    rt.block_on(snapshot_partition(
        &storage,
        &config,
        0,
        &forced,
        SystemTime::now(),
    ))
    .unwrap();
    eprintln!("snapshot in {:.1} s", t.elapsed().as_secs_f64());

    // The two readers the read measurements use: the mount's owner and a second reader that
    // attaches to the same mount (as another process would); then bootstraps from the
    // local-directory snapshot, three times into fresh mounts, field values counted without
    // the primary key.
    let settings = |mount: &str| {
        let mut o = ReaderOptions::new(&url, "bench", dir.path().join(mount));
        o.poll_interval = Duration::from_millis(10);
        o // cache_bytes: the default 64 MiB block cache
    };
    let values = docs * FIELDS.len();
    let reader = Reader::open(settings("mount")).unwrap();
    let disk_reader = Reader::open(settings("mount")).unwrap();
    assert!(reader.owns_mount() && !disk_reader.owns_mount());
    // Memory: a fresh process opens a reader on a new mount (bootstrap included), then
    // another attaches to it, each reporting the resident memory the open added; in this
    // process, memory the writer and the snapshot freed would be reused and hide it.
    let child_rss = |mount: &str| -> u64 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "rss-child",
                &url,
                &dir.path().join(mount).display().to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let memory_rss = child_rss("rss");
    // Attaching while no owner runs would make this one the owner: keep one open.
    let holder = Reader::open(settings("rss")).unwrap();
    let disk_rss = child_rss("rss");
    drop(holder);
    let mut boots = Vec::new();
    for run in 0..3 {
        let t = Instant::now();
        let r = Reader::open(settings(&format!("boot{run}"))).unwrap();
        boots.push(values as f64 / t.elapsed().as_secs_f64());
        r.shutdown().unwrap();
        std::fs::remove_dir_all(dir.path().join(format!("boot{run}"))).unwrap();
    }

    // LMDB with the same entries: key = primary key ++ 0 ++ field, value = the 50 bytes.
    let lmdb_dir = dir.path().join("lmdb");
    std::fs::create_dir_all(&lmdb_dir).unwrap();
    let env = unsafe { EnvOpenOptions::new().map_size(8 << 30).open(&lmdb_dir) }.unwrap();
    let mut wtxn = env.write_txn().unwrap();
    let db: Database<RawBytes, RawBytes> = env.create_database(&mut wtxn, None).unwrap();
    let t = Instant::now();
    for i in 0..docs {
        for (f, name) in FIELDS.iter().enumerate() {
            let k = [key(i).as_bytes(), b"\0", name.as_bytes()].concat();
            db.put(&mut wtxn, &k, value(i, f).as_bytes()).unwrap();
        }
    }
    wtxn.commit().unwrap();
    let lmdb_load = t.elapsed();
    let rtxn = env.read_txn().unwrap();

    // Every key either side reads is built here, outside the timed regions.
    let samples = 500_000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let picks: Vec<(Vec<u8>, &str)> = (0..samples)
        .map(|_| {
            (
                key(rng.random_range(0..docs)).into_bytes(),
                FIELDS[rng.random_range(0..3)],
            )
        })
        .collect();
    let lmdb_keys: Vec<Vec<u8>> = picks
        .iter()
        .map(|(k, f)| [k.as_slice(), b"\0", f.as_bytes()].concat())
        .collect();
    let batches = 5_000;
    let key_batches: Vec<Vec<Vec<u8>>> = (0..batches)
        .map(|_| {
            (0..100)
                .map(|_| key(rng.random_range(0..docs)).into_bytes())
                .collect()
        })
        .collect();
    let lmdb_batches: Vec<Vec<Vec<u8>>> = key_batches
        .iter()
        .map(|ks| {
            ks.iter()
                .flat_map(|k| {
                    FIELDS
                        .iter()
                        .map(move |f| [k.as_slice(), b"\0", f.as_bytes()].concat())
                })
                .collect()
        })
        .collect();

    // Three runs; in each, every side is warmed by the same pass over the picks and then
    // timed, in an order that alternates between runs.
    let ikv_get = |r: &Reader, k: &[u8], f: &str| r.get_bytes(k, f).unwrap().is_some();
    let lmdb_get = |k: &[u8]| db.get(&rtxn, k).unwrap().map(|v| v.len()).is_some();
    let mut results: Vec<[Vec<f64>; 3]> = (0..3).map(|_| Default::default()).collect(); // side → [p50, p99, multiget]
    for run in 0..3 {
        let mut order = vec![0usize, 1, 2];
        if run % 2 == 1 {
            order.reverse();
        }
        for side in order {
            let get = |i: usize| match side {
                0 => ikv_get(&reader, &picks[i].0, picks[i].1),
                1 => ikv_get(&disk_reader, &picks[i].0, picks[i].1),
                _ => lmdb_get(&lmdb_keys[i]),
            };
            for i in 0..samples {
                assert!(std::hint::black_box(get(i)));
            }
            let mut lat = Vec::with_capacity(samples);
            for i in 0..samples {
                let t = Instant::now();
                let found = get(i);
                lat.push(t.elapsed());
                assert!(found);
            }
            lat.sort();
            let t = Instant::now();
            for (b, ks) in key_batches.iter().enumerate() {
                match side {
                    0 => drop(std::hint::black_box(reader.multiget(ks, &FIELDS).unwrap())),
                    1 => drop(std::hint::black_box(
                        disk_reader.multiget(ks, &FIELDS).unwrap(),
                    )),
                    _ => {
                        for k in &lmdb_batches[b] {
                            std::hint::black_box(db.get(&rtxn, k).unwrap());
                        }
                    }
                }
            }
            let multi = (batches * 300) as f64 / t.elapsed().as_secs_f64();
            results[side][0].push(pct(&lat, 0.5).as_secs_f64() * 1e6);
            results[side][1].push(pct(&lat, 0.99).as_secs_f64() * 1e6);
            results[side][2].push(multi / 1e6);
        }
    }
    drop(rtxn);

    // Freshness: write acknowledged → visible to the running reader (poll interval 10 ms).
    let mut fresh = Vec::new();
    for i in 0..50 {
        let k = format!("fresh{i:05}");
        let d = Document::new()
            .with("id", FieldValue::String(k.clone()))
            .with("f1", FieldValue::String("x".into()));
        rt.block_on(writer.upsert_fields(d)).unwrap();
        let acked = Instant::now();
        while reader.get_bytes(k.as_bytes(), "f1").unwrap().is_none() {
            std::hint::spin_loop();
        }
        fresh.push(acked.elapsed());
    }
    fresh.sort();

    println!(
        "| measure ({docs} documents, 10-byte keys, 3 × 50-byte fields; median of 3 runs [min–max]) | ikv, mount owner | ikv, attached reader | LMDB (heed) |"
    );
    println!("|---|---|---|---|");
    for (row, (name, unit)) in [
        ("get p50", "µs"),
        ("get p99", "µs"),
        ("multiget 100 keys × 3 fields, one thread", "M values/s"),
    ]
    .iter()
    .enumerate()
    {
        println!(
            "| {name} | {} | {} | {} |",
            median_range(&results[0][row], unit),
            median_range(&results[1][row], unit),
            median_range(&results[2][row], unit),
        );
    }
    println!(
        "| bootstrap from a local-directory snapshot, open → ready (3 fields per document) | {} | | load in one write txn: {:.2}M values/s |",
        median_range(
            &boots.iter().map(|v| v / 1e6).collect::<Vec<_>>(),
            "M values/s"
        ),
        values as f64 / lmdb_load.as_secs_f64() / 1e6
    );
    println!(
        "| resident memory a reader adds to a fresh process (owner: bootstrap included, 64 MiB block cache; attached: open) | {:.0} MB | {:.0} MB | |",
        memory_rss as f64 / 1e6,
        disk_rss as f64 / 1e6
    );
    println!(
        "| freshness, write ack → visible (poll 10 ms), p50 / max of 50 | {:.1} ms / {:.1} ms | | |",
        pct(&fresh, 0.5).as_secs_f64() * 1e3,
        fresh.last().unwrap().as_secs_f64() * 1e3
    );
    disk_reader.shutdown().unwrap();
    reader.shutdown().unwrap();
    let manifest = rt
        .block_on(ikv_snapshot_format::Manifest::load_newest(
            &storage,
            &ikv_core::StoreLayout::new(&storage.prefix, "bench").unwrap(),
            0,
        ))
        .unwrap()
        .unwrap();
    let snapshot_bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    println!(
        "| snapshot size (Parquet, zstd) | {:.1} MB | |",
        snapshot_bytes as f64 / 1e6
    );
    println!(
        "| reader disk (mount directory) | {:.1} MB | LMDB file: {:.1} MB |",
        du(&dir.path().join("mount")) as f64 / 1e6,
        du(&lmdb_dir) as f64 / 1e6
    );
}

/// The median of three or more runs, with their range.
fn median_range(runs: &[f64], unit: &str) -> String {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{:.2} {unit} [{:.2}–{:.2}]",
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1]
    )
}

/// This process's resident set size.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn du(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                du(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}
