//! Every decoder of bucket bytes under mutation: deltas (with and without their checksum
//! trailer), manifests, store configurations, tip hints and snapshot Parquet files (with and
//! without block checksums) get bit flips, truncations, splices and random bytes.
//!
//! Properties: no decoder panics out of its call; a mutated object that carries a checksum is
//! refused (`Corrupt`) or, where the mutation cannot change what it says (a flip inside the
//! checksum member's own name), decodes to exactly the original. Never a changed value.
//!
//! `IKV_FUZZ_CASES` sets the number of cases (default: a short run for CI); `IKV_FUZZ_SEED`
//! replays one. The documented long run: `IKV_FUZZ_CASES=1000000 cargo nextest run --release
//! -p ikv-tests --test fuzz_decoders` (docs/FORMAT.md, "Checksums").
#![allow(clippy::disallowed_methods)] // tests and benches run real processes, sockets and timings on the wall clock

use std::sync::Arc;

use bytes::Bytes;
use ikv_core::bucket::create_store;
use ikv_core::bucket::tip_hint::TipHint;
use ikv_core::delta::{DeltaMeta, decode_delta, encode_delta};
use ikv_core::{DeltaOp, ErrorKind, FieldValue, Storage, StoreConfig, StoreLayout};
use ikv_snapshot_format::SnapshotStream;
use ikv_snapshot_format::manifest::Manifest;
use ikv_tests::runtime;
use ikv_writer::{Writer, WriterOptions};
use object_store::ObjectStoreExt;
use object_store::memory::InMemory;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn cases() -> u64 {
    std::env::var("IKV_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn seed() -> u64 {
    std::env::var("IKV_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random)
}

/// One mutation of `bytes`; `other` is another valid object to splice from.
fn mutate(rng: &mut StdRng, bytes: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match rng.random_range(0..5) {
        0 => {
            for _ in 0..rng.random_range(1..=8) {
                if out.is_empty() {
                    break;
                }
                let i = rng.random_range(0..out.len());
                out[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => {
            let cut = rng.random_range(0..out.len().max(1));
            out.truncate(cut);
        }
        2 => {
            // Splice: a range of `other` over a range of this object.
            if !other.is_empty() && !out.is_empty() {
                let from = rng.random_range(0..other.len());
                let len = rng.random_range(1..=(other.len() - from).min(64));
                let at = rng.random_range(0..out.len());
                let end = (at + len).min(out.len());
                out.splice(at..end, other[from..from + len].iter().copied());
            }
        }
        3 => {
            if !out.is_empty() {
                let at = rng.random_range(0..out.len());
                let len = rng.random_range(1..=16).min(out.len() - at);
                rng.fill(&mut out[at..at + len]);
            }
        }
        _ => {
            let len = rng.random_range(0..256);
            out = (0..len).map(|_| rng.random()).collect();
        }
    }
    out
}

fn ops(n: usize, tag: &str) -> Vec<DeltaOp> {
    (0..n)
        .map(|i| DeltaOp::SetField {
            key: format!("{tag}-{i}").into_bytes(),
            field: "f".into(),
            value: FieldValue::String(format!("value {i} of {tag}")),
            // Some rows carry an expiry or an event time: the optional columns of a
            // version 2 delta are mutated too.
            expires_ms: (i % 3 == 0).then_some(1_800_000_000_000 + i as i64),
            event_us: (i % 4 == 1).then_some(-(i as i64)),
        })
        .chain([
            DeltaOp::DeleteDocument {
                key: b"gone".to_vec(),
            },
            DeltaOp::DropField { field: "x".into() },
        ])
        .collect()
}

#[test]
fn mutated_bucket_objects_are_refused_or_unchanged_and_never_panic() {
    let seed = seed();
    let total = cases();
    eprintln!("fuzz: {total} cases, IKV_FUZZ_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    // Deltas: sealed (current) and bare IPC (as written before trailers).
    let meta = DeltaMeta::new("batch".into(), "writer".into(), "s".into(), 0);
    let delta_a = encode_delta(&meta, &ops(20, "a")).unwrap();
    let delta_b = encode_delta(&meta, &ops(5, "b")).unwrap();
    let original = decode_delta(&delta_a, "d").unwrap();
    let bare_a = delta_a.slice(..delta_a.len() - ikv_core::checksum::TRAILER_LEN);

    // Store configuration and a manifest, as stored.
    let config = StoreConfig::new("s", "id", Some("country"), 4).unwrap();
    let config_json = config.to_json();
    let hint_layout = StoreLayout::new(&object_store::path::Path::from("root"), "s").unwrap();
    let hint = TipHint {
        seq: 4242,
        committed_at: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_790_000_000_123),
    };
    let hint_bytes = hint.encode(&hint_layout, 2).unwrap();
    let rt = runtime();
    let (storage, layout, manifest_bytes) = rt.block_on(snapshot_fixture());
    let manifest = Manifest::decode(&manifest_bytes, "m").unwrap();
    let file = manifest.files[0].clone();
    let file_path = manifest.file_path(&layout, &file);
    let parquet = rt
        .block_on(async {
            storage
                .object_store()
                .get(&file_path)
                .await
                .unwrap()
                .bytes()
                .await
        })
        .unwrap();
    let expected_docs = rt
        .block_on(
            SnapshotStream::new(storage.clone(), layout.clone(), manifest.clone()).collect_all(),
        )
        .unwrap();

    let mut refused = 0u64;
    let mut unchanged = 0u64;
    let parquet_every = 20; // Parquet cases cost a decode through the async reader
    let mut legacy_panics = 0u64;
    let mut last_verified = true;
    for case in 0..total {
        let panics_before = ikv_core::checksum::contained_decoder_panics();
        let unverified = case % 5 == 1;
        match case % 5 {
            0 => {
                let bad = Bytes::from(mutate(&mut rng, &delta_a, &delta_b));
                match decode_delta(&bad, "d") {
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Corrupt, "case {case}: {e}");
                        refused += 1;
                    }
                    Ok(d) => {
                        assert_eq!(
                            d, original,
                            "case {case}: a mutated delta decoded differently"
                        );
                        unchanged += 1;
                    }
                }
            }
            1 => {
                // Unverified bytes: only "no panic" (and an error naming the object) holds.
                let bad = Bytes::from(mutate(&mut rng, &bare_a, &delta_b));
                if let Err(e) = decode_delta(&bad, "d") {
                    assert!(e.to_string().contains('d'));
                }
            }
            2 => {
                let bad = mutate(&mut rng, &config_json, &manifest_bytes);
                match StoreConfig::from_json(&bad, "store.json") {
                    Err(_) => refused += 1,
                    Ok(c) => {
                        assert_eq!(
                            c, config,
                            "case {case}: a mutated configuration read differently"
                        );
                        unchanged += 1;
                    }
                }
                let bad = mutate(&mut rng, &hint_bytes, &config_json);
                match TipHint::decode(&bad, &hint_layout, 2) {
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Corrupt, "case {case}: {e}");
                        refused += 1;
                    }
                    Ok(h) => {
                        assert_eq!(h, hint, "case {case}: a mutated tip hint read differently");
                        unchanged += 1;
                    }
                }
            }
            3 => {
                let bad = mutate(&mut rng, &manifest_bytes, &config_json);
                match Manifest::decode(&bad, "manifest.json") {
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Corrupt, "case {case}: {e}");
                        refused += 1;
                    }
                    Ok(m) => {
                        assert_eq!(
                            m, manifest,
                            "case {case}: a mutated manifest read differently"
                        );
                        unchanged += 1;
                    }
                }
            }
            _ if case % parquet_every == 4 => {
                let bad = Bytes::from(mutate(&mut rng, &parquet, &delta_a));
                let verified = rng.random_bool(0.5);
                last_verified = verified;
                let outcome = rt.block_on(read_mutated_file(
                    &storage, &layout, &manifest, &bad, verified,
                ));
                match outcome {
                    Err(_) => refused += 1,
                    Ok(docs) if verified => {
                        assert_eq!(
                            docs, expected_docs,
                            "case {case}: mutated snapshot rows served"
                        );
                        unchanged += 1;
                    }
                    Ok(_) => {}
                }
            }
            _ => {}
        }
        let panicked = ikv_core::checksum::contained_decoder_panics() - panics_before;
        if unverified || (case % 5 == 4 && panicked > 0 && !last_verified) {
            legacy_panics += panicked;
        } else {
            assert_eq!(
                panicked, 0,
                "case {case}: a decoder panicked on checked bytes"
            );
        }
    }
    eprintln!(
        "fuzz: {refused} refused, {unchanged} decoded unchanged, {legacy_panics} decoder panics contained on unverified (legacy) objects"
    );
    assert!(refused > total / 10, "the mutations were refused");
}

/// A store with a snapshot of partition 0: (storage, layout, manifest bytes).
async fn snapshot_fixture() -> (Storage, StoreLayout, Bytes) {
    let storage = Storage::new(
        Arc::new(InMemory::new()),
        object_store::path::Path::default(),
        "memory://fuzz",
    );
    let config = StoreConfig::new("fz", "id", None, 1).unwrap();
    create_store(&storage, &config).await.unwrap();
    let writer = Writer::open(storage.clone(), "fz", WriterOptions::default())
        .await
        .unwrap();
    let docs: Vec<ikv_core::Operation> = (0..300)
        .map(|i| {
            let mut d = ikv_core::Document::new();
            d.put("id", FieldValue::String(format!("k{i:04}")));
            d.put("n", FieldValue::Int64(i));
            d.put("s", FieldValue::String("x".repeat(i as usize % 40)));
            ikv_core::Operation::UpsertFields(d)
        })
        .collect();
    writer.write(&docs).await.unwrap();
    ikv_tests::force_snapshot(&storage, &config, 0)
        .await
        .unwrap();
    let layout = StoreLayout::new(&storage.prefix, "fz").unwrap();
    let seqs = ikv_core::bucket::list_snapshot_seqs(&storage, &layout, 0)
        .await
        .unwrap();
    let path = Manifest::path(&layout, 0, *seqs.last().unwrap());
    let bytes = storage
        .object_store()
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    (storage, layout, bytes)
}

/// Reads `bad` in place of the manifest's first file, with or without the block checksums.
async fn read_mutated_file(
    storage: &Storage,
    layout: &StoreLayout,
    manifest: &Manifest,
    bad: &Bytes,
    verified: bool,
) -> ikv_core::Result<Vec<ikv_snapshot_format::rows::SnapshotDoc>> {
    let scratch = Storage::new(
        Arc::new(InMemory::new()),
        storage.prefix.clone(),
        "memory://scratch",
    );
    let mut manifest = manifest.clone();
    let path = manifest.file_path(layout, &manifest.files[0]);
    scratch
        .object_store()
        .put(&path, bad.clone().into())
        .await
        .expect("in-memory put");
    if !verified {
        manifest.files[0].checksums = None;
        manifest.files[0].bytes = bad.len() as u64;
    }
    SnapshotStream::new(scratch, layout.clone(), manifest)
        .collect_all()
        .await
}
