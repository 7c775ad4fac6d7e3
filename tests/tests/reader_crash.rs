//! kill -9 of a reader process during bootstrap and during delta apply; the next open on the
//! same mount directory resumes or rebuilds, and equals the model.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use ikv_core::store::{create_store, discover_tip};
use ikv_core::{
    Document, FieldValue, Operation, Storage, StorageOptions, StoreConfig, StoreLayout,
};
use ikv_reader::{Reader, ReaderOptions};
use ikv_snapshot::{SnapshotOptions, snapshot_partition};
use ikv_tests::model::Model;
use ikv_tests::model_check::write_and_record;
use ikv_writer::{Writer, WriterOptions};

const DOCS: usize = 60_000;

fn doc(i: usize, round: usize) -> Operation {
    Operation::UpsertFields(
        Document::new()
            .with("id", FieldValue::String(format!("k{i:07}")))
            .with("a", FieldValue::String(format!("a-{round}-{i:0>40}")))
            .with("b", FieldValue::Int64((i * 7 + round) as i64)),
    )
}

fn spawn_reader(url: &str, mount: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ikv-test-reader"))
        .args([url, "crash", mount.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn assert_reader_matches(
    url: &str,
    mount: &std::path::Path,
    storage: &Storage,
    expected: &Model,
    rt: &tokio::runtime::Runtime,
) {
    let layout = StoreLayout::new(&storage.prefix, "crash").unwrap();
    let tip = rt.block_on(discover_tip(storage, &layout, 0)).unwrap();
    assert_eq!(tip, expected.tip(0));
    let model = expected.partition(0);
    let reader = Reader::open(ReaderOptions::new(url, "crash", mount)).unwrap();
    assert_eq!(reader.status()[0].applied_sequence, tip);
    let keys: Vec<Vec<u8>> = (0..DOCS).map(|i| format!("k{i:07}").into_bytes()).collect();
    let got = reader.multiget(&keys, &["id", "a", "b"]).unwrap();
    for (i, key) in keys.iter().enumerate() {
        let doc = model.get(key).unwrap();
        for (j, f) in ["id", "a", "b"].iter().enumerate() {
            assert_eq!(
                got[i * 3 + j].as_ref(),
                doc.get(*f),
                "{} {f}",
                String::from_utf8_lossy(key)
            );
        }
    }
}

#[test]
fn killed_during_bootstrap_and_during_delta_apply_then_restarted_equals_the_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    let storage = Storage::open(&url, &StorageOptions::default()).unwrap();
    let config = StoreConfig::new("crash", "id", None, 1).unwrap();
    rt.block_on(create_store(&storage, &config)).unwrap();
    let writer = rt
        .block_on(Writer::open(
            storage.clone(),
            "crash",
            WriterOptions::default(),
        ))
        .unwrap();
    let mut model = Model::new("id", None, 1);
    for chunk in (0..DOCS).collect::<Vec<_>>().chunks(5_000) {
        let ops: Vec<Operation> = chunk.iter().map(|i| doc(*i, 0)).collect();
        rt.block_on(write_and_record(&writer, &mut model, &ops));
    }
    let forced = SnapshotOptions {
        force: true,
        ..SnapshotOptions::default()
    };
    rt.block_on(snapshot_partition(
        &storage,
        &config,
        0,
        &forced,
        SystemTime::now(),
    ))
    .unwrap();

    // During bootstrap: kill at increasing delays, each on a mount left by the previous kill.
    let mount = dir.path().join("mount");
    for delay_ms in [30, 120, 250, 500] {
        let mut child = spawn_reader(&url, &mount);
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    assert_reader_matches(&url, &mount, &storage, &model, &rt);

    // During delta apply: a running reader process, writes streaming in, killed mid-stream.
    let mut child = spawn_reader(&url, &mount);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let batch = |round: usize| -> Vec<Operation> {
        (0..1500)
            .map(|i| doc((round * 1500 + i) % DOCS, round))
            .collect()
    };
    for round in 1..=25 {
        rt.block_on(write_and_record(&writer, &mut model, &batch(round)));
    }
    // Mid-stream: the reader is applying the deltas just written.
    child.kill().unwrap();
    child.wait().unwrap();
    for round in 26..=40 {
        rt.block_on(write_and_record(&writer, &mut model, &batch(round)));
    }
    assert_reader_matches(&url, &mount, &storage, &model, &rt);
}
