//! A process that commits writes one by one, for crash tests of the writer's commit path:
//! `ikv-test-writer STORAGE_URL STORE COUNT TAG [ambiguous]`. Write `i` upserts document
//! `w{i % 7}` with `m = "TAG-i"` and prints `acked TAG-i SEQ` once it is acknowledged, then
//! `done`. With `ambiguous`, the first two delta PUTs land and then time out (the answer is
//! lost), so the writer meets its ambiguous-outcome path. Exits 3 with the error on stderr.

use std::io::Write;
use std::sync::Arc;

use ikv_core::{Document, FieldValue, Storage};
use ikv_tests::faulty::{FaultyStore, PutFault};
use ikv_writer::{CommitPolicy, Writer, WriterOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(5..=6).contains(&args.len()) {
        eprintln!("usage: ikv-test-writer STORAGE_URL STORE COUNT TAG [ambiguous]");
        std::process::exit(2);
    }
    let count: usize = args[3].parse().unwrap_or(0);
    let tag = &args[4];
    let rt = ikv_tests::runtime();
    let result = rt.block_on(async {
        let opened =
            ikv_tests::unordered::shuffled_if_asked(Storage::open(&args[1], &Default::default())?);
        let storage = if args.get(5).map(String::as_str) == Some("ambiguous") {
            let faulty = Arc::new(FaultyStore::new(opened.object_store().clone()));
            for _ in 0..2 {
                faulty.inject("deltas/", PutFault::LandThenTimeout);
            }
            let wrapped = Storage::new(faulty, opened.prefix.clone(), args[1].as_str());
            if opened.lists_in_key_order() {
                wrapped
            } else {
                wrapped.with_unordered_listings()
            }
        } else {
            opened
        };
        let options = WriterOptions {
            commit_policy: CommitPolicy {
                failure_backoff_base: std::time::Duration::from_millis(1),
                ..CommitPolicy::default()
            },
            ..WriterOptions::default()
        };
        let writer = Writer::open(storage, &args[2], options).await?;
        for i in 0..count {
            let marker = format!("{tag}-{i}");
            let receipt = writer
                .upsert_fields(
                    Document::new()
                        .with("id", FieldValue::String(format!("w{}", i % 7)))
                        .with("m", FieldValue::String(marker.clone())),
                )
                .await?;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "acked {marker} {}", receipt.commits[0].sequence);
            let _ = out.flush();
        }
        Ok::<_, ikv_core::Error>(())
    });
    match result {
        Ok(()) => println!("done"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(3);
        }
    }
}
