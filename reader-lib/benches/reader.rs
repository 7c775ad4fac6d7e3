//! Reader benchmark: 1M documents, 10-byte keys, 3 fields × 50 bytes, beside LMDB (heed) on
//! the same data in the same run. Measures get p50/p99, multiget of 100 keys, bootstrap from a
//! local-directory snapshot, and freshness from write acknowledgement to visibility.
//!
//! `cargo bench -p ikv-reader --bench reader [-- DOCS]`

use std::time::{Duration, Instant, SystemTime};

use heed::types::Bytes as RawBytes;
use heed::{Database, EnvOpenOptions};
use ikv_core::store::create_store;
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

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn main() {
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

    // Bootstrap from the local-directory snapshot.
    let mut options = ReaderOptions::new(&url, "bench", dir.path().join("mount"));
    options.poll_interval = Duration::from_millis(10);
    options.cache_bytes = 256 << 20;
    let t = Instant::now();
    let reader = Reader::open(options).unwrap();
    let boot = t.elapsed();
    let values = docs * 4; // id + 3 fields

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

    // Single gets, random keys, one thread.
    let samples = 1_000_000;
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
    // Warm both.
    for (k, f) in picks.iter().take(200_000) {
        std::hint::black_box(reader.get_bytes(k, f).unwrap());
    }
    let mut ikv_lat = Vec::with_capacity(samples);
    for (k, f) in &picks {
        let t = Instant::now();
        let v = reader.get_bytes(k, f).unwrap();
        ikv_lat.push(t.elapsed());
        assert!(v.is_some());
    }
    let rtxn = env.read_txn().unwrap();
    let mut lmdb_lat = Vec::with_capacity(samples);
    for k in &lmdb_keys {
        let t = Instant::now();
        let v = db.get(&rtxn, k).unwrap().map(|v| v.to_vec());
        lmdb_lat.push(t.elapsed());
        assert!(v.is_some());
    }
    ikv_lat.sort();
    lmdb_lat.sort();

    // Multiget of 100 keys × 3 fields, one thread.
    let batches = 5_000;
    let key_batches: Vec<Vec<Vec<u8>>> = (0..batches)
        .map(|_| {
            (0..100)
                .map(|_| key(rng.random_range(0..docs)).into_bytes())
                .collect()
        })
        .collect();
    let t = Instant::now();
    for ks in &key_batches {
        std::hint::black_box(reader.multiget(ks, &FIELDS).unwrap());
    }
    let ikv_multi = (batches * 300) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for ks in &key_batches {
        for k in ks {
            for f in FIELDS {
                let lk = [k.as_slice(), b"\0", f.as_bytes()].concat();
                std::hint::black_box(db.get(&rtxn, &lk).unwrap());
            }
        }
    }
    let lmdb_multi = (batches * 300) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for ks in key_batches.iter().take(1000) {
        for k in ks {
            for f in FIELDS {
                std::hint::black_box(reader.get_bytes(k, f).unwrap());
            }
        }
    }
    let ikv_loop = (1000 * 300) as f64 / t.elapsed().as_secs_f64();
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
        "| measure ({docs} documents, 10-byte keys, 3 × 50-byte fields) | ikv | LMDB (heed) |"
    );
    println!("|---|---|---|");
    println!(
        "| get p50 | {} | {} |",
        us(pct(&ikv_lat, 0.5)),
        us(pct(&lmdb_lat, 0.5))
    );
    println!(
        "| get p99 | {} | {} |",
        us(pct(&ikv_lat, 0.99)),
        us(pct(&lmdb_lat, 0.99))
    );
    println!(
        "| get p99.9 | {} | {} |",
        us(pct(&ikv_lat, 0.999)),
        us(pct(&lmdb_lat, 0.999))
    );
    println!(
        "| multiget 100 keys × 3 fields, one thread | {:.2}M values/s | {:.2}M values/s (loop of gets in one txn) |",
        ikv_multi / 1e6,
        lmdb_multi / 1e6
    );
    println!(
        "| same keys as a loop of single gets | {:.2}M values/s | |",
        ikv_loop / 1e6
    );
    println!(
        "| bootstrap from a local-directory snapshot (end to end, open → ready) | {:.2} s, {:.2}M field values/s | load in one write txn: {:.2} s |",
        boot.as_secs_f64(),
        values as f64 / boot.as_secs_f64() / 1e6,
        lmdb_load.as_secs_f64()
    );
    println!(
        "| freshness, write ack → visible (poll 10 ms), p50 / max of 50 | {} / {} | |",
        us(pct(&fresh, 0.5)),
        us(*fresh.last().unwrap())
    );
    reader.shutdown().unwrap();
    let manifest = rt
        .block_on(ikv_snapshot::Manifest::load_newest(
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
