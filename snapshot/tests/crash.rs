//! kill -9 of a compactor process between writing its files and committing its manifest: the
//! previous snapshot stays the newest and valid, nothing partial is visible, and the next run
//! commits a correct snapshot.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use futures::TryStreamExt;
use ikv_core::delta::decode_delta;
use ikv_core::model::StoreModel;
use ikv_core::store::{create_store, read_delta};
use ikv_core::{
    Document, FieldValue, Operation, Storage, StorageOptions, StoreConfig, StoreLayout,
};
use ikv_snapshot::{Manifest, SnapshotOptions, SnapshotStream, snapshot_partition};
use ikv_writer::{Writer, WriterOptions};

async fn write_batches(writer: &Writer, from: usize, n: usize) {
    for b in from..from + n {
        let ops: Vec<Operation> = (0..50)
            .map(|i| {
                Operation::UpsertFields(
                    Document::new()
                        .with(
                            "id",
                            FieldValue::String(format!("k{:05}", (b * 50 + i) % 4000)),
                        )
                        .with("v", FieldValue::Int64((b * 50 + i) as i64)),
                )
            })
            .collect();
        writer.write(&ops).await.unwrap();
    }
}

async fn assert_snapshot_matches_log(storage: &Storage, layout: &StoreLayout, manifest: Manifest) {
    let mut model = StoreModel::new("id");
    for seq in 1..=manifest.sequence {
        let bytes = read_delta(storage, layout, 0, seq).await.unwrap().unwrap();
        decode_delta(&bytes)
            .unwrap()
            .ops
            .iter()
            .for_each(|op| model.apply(op));
    }
    let docs = SnapshotStream::new(storage.clone(), layout.clone(), manifest)
        .collect_all()
        .await
        .unwrap();
    let got: std::collections::HashMap<_, _> = docs.into_iter().collect();
    assert_eq!(got, model.documents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_compactor_leaves_the_previous_snapshot_valid() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let storage = Storage::open(&url, &StorageOptions::default()).unwrap();
    let config = StoreConfig::new("crash", "id", None, 1).unwrap();
    create_store(&storage, &config).await.unwrap();
    let layout = StoreLayout::new(&storage.prefix, "crash").unwrap();
    let writer = Writer::open(storage.clone(), "crash", WriterOptions::default())
        .await
        .unwrap();
    write_batches(&writer, 0, 40).await;
    let forced = SnapshotOptions {
        force: true,
        ..SnapshotOptions::default()
    };
    snapshot_partition(&storage, &config, 0, &forced, SystemTime::now())
        .await
        .unwrap();
    let first = Manifest::load_newest(&storage, &layout, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.sequence, 40);
    write_batches(&writer, 40, 40).await;

    // A compactor process that pauses after writing its files, before its manifest.
    let mut child = Command::new(env!("CARGO_BIN_EXE_snapshot"))
        .args(["run", "--storage-url", &url, "--store", "crash", "--force"])
        .env("IKV_TEST_PAUSE_BEFORE_MANIFEST_MS", "120000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "paused before manifest");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Its files exist, but nothing makes them visible.
    let run_files: Vec<_> = storage
        .store
        .list(Some(&layout.snapshot_dir(0, 80)))
        .try_collect()
        .await
        .unwrap();
    assert!(
        !run_files.is_empty(),
        "the killed run had written its Parquet files"
    );
    assert!(
        run_files
            .iter()
            .all(|m| m.location.filename() != Some("manifest.json"))
    );
    let newest = Manifest::load_newest(&storage, &layout, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(newest, first, "the previous snapshot is still the newest");
    assert_snapshot_matches_log(&storage, &layout, newest).await;

    // The next run commits a correct snapshot beside the dead run's files.
    snapshot_partition(&storage, &config, 0, &forced, SystemTime::now())
        .await
        .unwrap();
    let second = Manifest::load_newest(&storage, &layout, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.sequence, 80);
    assert_snapshot_matches_log(&storage, &layout, second).await;
}
