//! The demo behind the README's first command: create a store; write the guide's user
//! profiles through the HTTP writer service and a generated data set directly; snapshot; start
//! an embedded reader; read back with single and multi gets; show freshness. Prints what it
//! did with timings, and fails (non-zero exit) if anything it reads is wrong.

use std::sync::Arc;
use std::time::Duration;

use ikv_core::clock::{Clock, Stopwatch, SystemClock};

use ikv_core::{Document, FieldValue, Operation, StoreConfig};
use ikv_reader::{Reader, ReaderOptions};
use ikv_snapshot::{PartitionOutcome, SnapshotOptions, run_pass};
use ikv_writer::client::HttpWriterClient;
use ikv_writer::service::auth::{Accounts, generate_passkey, hash_passkey};
use ikv_writer::service::{ServiceState, serve};
use ikv_writer::{Writer, WriterOptions};

use crate::commands::open;
use crate::fail::Fail;
use crate::progress::Progress;

const PARTITIONS: u32 = 4;
const DOCS_PER_CALL: usize = 2_000;
const CONCURRENT_CALLERS: usize = 8;
const FIELDS: [&str; 3] = ["city", "team", "bio"];

fn s(v: &str) -> FieldValue {
    FieldValue::String(v.to_owned())
}

fn profile(first: &str, extra: &[(&str, &str)]) -> Operation {
    let mut doc = Document::new().with("firstname", s(first));
    for (k, v) in extra {
        doc.put(*k, s(v));
    }
    Operation::UpsertFields(doc)
}

fn key(i: usize) -> String {
    format!("u{i:09}") // 10 bytes
}

/// A generated document: 10-byte key, three 50-byte string fields.
fn generated(i: usize) -> Operation {
    let mut doc = Document::new().with("firstname", s(&key(i)));
    for f in FIELDS {
        doc.put(f, s(&format!("{f:<5}{i:0>45}")));
    }
    Operation::UpsertFields(doc)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
}

fn check(reader: &Reader, key: &str, field: &str, want: Option<&str>) -> Result<(), Fail> {
    let got = reader.get_string(key.as_bytes(), field)?;
    if got.as_deref() != want {
        return Err(Fail::from(format!(
            "demo check failed: {key}.{field} = {got:?}, expected {want:?}"
        )));
    }
    println!("  get({key:?}, {field:?}) = {got:?}");
    Ok(())
}

pub async fn run(
    url: &str,
    documents: usize,
    mount: Option<std::path::PathBuf>,
) -> Result<(), Fail> {
    // The mount is checked before anything is written: the demo removes at the end only what
    // it made, and never a directory holding files it did not write.
    let mount = DemoMount::claim(mount)?;
    let storage = open(url, true)?;
    let millis = ikv_core::clock::wall_time()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let store = format!("profiles-{millis}");
    let config = StoreConfig::new(&store, "firstname", None, PARTITIONS)?;
    ikv_core::bucket::create_store(&storage, &config).await?;
    println!("storage root   {url}");
    println!("created store  {store:?}: primary key \"firstname\", {PARTITIONS} partitions");

    // 1. The guide's user profiles, through the writer service's HTTP API.
    let passkey = generate_passkey();
    let accounts = Accounts::from_json(&format!(
        r#"{{"accounts":[{{"account_id":"demo","passkey_hash":"{}","stores":["*"]}}]}}"#,
        hash_passkey(&passkey)?
    ))?;
    let state = Arc::new(ServiceState::new(
        storage.clone(),
        accounts,
        WriterOptions::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    let client = HttpWriterClient::new(&format!("http://{addr}"), "demo", &passkey);
    let t = Stopwatch::start();
    for op in [
        profile("Alice", &[("age", "22")]),
        profile("Alice", &[("city", "San Francisco")]),
        profile("Bob", &[("age", "25")]),
    ] {
        client
            .write(&store, &[op])
            .await
            .map_err(|e| e.to_string())?;
    }
    println!(
        "HTTP writes    3 upserts of the guide's profiles via http://{addr}: {:.1} ms (each durable on return)",
        t.elapsed().as_secs_f64() * 1e3
    );
    let _ = stop.send(());
    let _ = server.await;

    // 2. A generated data set, directly to storage, from concurrent callers (group commit).
    let writer = Writer::open(storage.clone(), &store, WriterOptions::default()).await?;
    let t = Stopwatch::start();
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..CONCURRENT_CALLERS {
        let writer = writer.clone();
        callers.spawn(async move {
            let mut i = caller * DOCS_PER_CALL;
            while i < documents {
                let ops: Vec<Operation> = (i..(i + DOCS_PER_CALL).min(documents))
                    .map(generated)
                    .collect();
                writer.write(&ops).await?;
                i += CONCURRENT_CALLERS * DOCS_PER_CALL;
            }
            Ok::<(), ikv_core::Error>(())
        });
    }
    while let Some(joined) = callers.join_next().await {
        joined.map_err(|e| e.to_string())??;
    }
    let secs = t.elapsed().as_secs_f64();
    let values = documents * 4;
    println!(
        "direct writes  {documents} documents ({values} field values) in {secs:.2} s: {:.0} field values/s",
        values as f64 / secs
    );

    // 3. Snapshot every partition.
    let progress = Progress::start("snapshot");
    let options = SnapshotOptions {
        force: true,
        ..SnapshotOptions::default()
    };
    let reports = run_pass(
        &open(url, false)?,
        std::slice::from_ref(&store),
        &[],
        &options,
    )
    .await?;
    let rows: u64 = reports
        .iter()
        .map(|r| match r.outcome {
            PartitionOutcome::Snapshotted { rows, .. } => rows,
            _ => 0,
        })
        .sum();
    progress.finish(&format!("{rows} documents in {} partitions", reports.len()));

    // 4. An embedded reader: bootstrap from the snapshots, then reads.
    let mount_dir = mount.path(&store);
    let reader_url = url.to_owned();
    let reader_store = store.clone();
    let reader_mount = mount_dir.clone();
    let progress = Progress::start("reader bootstrap");
    let t = Stopwatch::start();
    let reader = tokio::task::spawn_blocking(move || {
        let mut o = ReaderOptions::new(&reader_url, &reader_store, reader_mount);
        o.poll_interval = Duration::from_millis(20);
        o.cache_bytes = 256 << 20;
        Reader::open(o)
    })
    .await
    .map_err(|e| e.to_string())??;
    let boot = t.elapsed().as_secs_f64();
    progress.finish(&format!(
        "{:.2}M field values/s",
        (values + 8) as f64 / boot / 1e6
    ));

    // The guide's quick start, corrected: the second upsert unions, so Alice keeps her age.
    check(&reader, "Alice", "firstname", Some("Alice"))?;
    check(&reader, "Alice", "age", Some("22"))?;
    check(&reader, "Alice", "city", Some("San Francisco"))?;
    check(&reader, "Bob", "age", Some("25"))?;
    check(&reader, "Bob", "city", None)?;
    let cities = reader.multiget(&[b"Alice".as_slice(), b"Bob".as_slice()], &["city"])?;
    let shown: Vec<Option<&str>> = cities
        .iter()
        .map(|v| match v {
            Some(FieldValue::String(s)) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    if shown != [Some("San Francisco"), None] {
        return Err(Fail::from(format!(
            "demo check failed: multiget of cities gave {shown:?}"
        )));
    }
    println!("  multiget([Alice, Bob], [city]) = {shown:?}");

    if documents > 0 {
        let samples = documents.min(200_000);
        let mut lat = Vec::with_capacity(samples);
        for n in 0..samples {
            let i = (n * 7919) % documents;
            let t = Stopwatch::start();
            let v = reader.get_bytes(key(i).as_bytes(), "city")?;
            lat.push(t.elapsed());
            if v.is_none() {
                return Err(Fail::from(format!(
                    "demo check failed: {} has no city",
                    key(i)
                )));
            }
        }
        lat.sort();
        println!(
            "single gets    {samples} random keys: p50 {:.2} µs, p99 {:.2} µs",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
        let batches: Vec<Vec<Vec<u8>>> = (0..1000)
            .map(|b| {
                (0..100)
                    .map(|j| key((b * 100 + j) * 31 % documents).into_bytes())
                    .collect()
            })
            .collect();
        let t = Stopwatch::start();
        let mut got = 0;
        for keys in &batches {
            got += reader
                .multiget(keys, &FIELDS)?
                .iter()
                .filter(|v| v.is_some())
                .count();
        }
        let secs = t.elapsed().as_secs_f64();
        if got != 1000 * 100 * 3 {
            return Err(Fail::from(format!(
                "demo check failed: multiget found {got} of 300000 values"
            )));
        }
        println!(
            "multiget       1000 × (100 keys × 3 fields): {:.2}M values/s",
            got as f64 / secs / 1e6
        );
    }

    // 5. Freshness: a new write becomes visible to the running reader.
    writer
        .write(&[profile("Carol", &[("city", "Berlin")])])
        .await?;
    let acked = Stopwatch::start();
    while reader.get_string(b"Carol", "city")?.is_none() {
        if acked.elapsed() > Duration::from_secs(30) {
            return Err(Fail::from(
                "demo check failed: a new write never became visible".to_owned(),
            ));
        }
        SystemClock::new().sleep(Duration::from_millis(1)).await;
    }
    println!(
        "freshness      a new write visible to the running reader {:.1} ms after its commit (poll interval 20 ms)",
        acked.elapsed().as_secs_f64() * 1e3
    );
    let status = reader.status();
    println!(
        "reader status  {}",
        status
            .iter()
            .map(|s| format!(
                "p{}: applied {} (snapshot {})",
                s.partition, s.applied_sequence, s.snapshot_sequence
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    tokio::task::spawn_blocking(move || reader.shutdown())
        .await
        .map_err(|e| e.to_string())??;
    mount.release(&mount_dir);
    println!("demo OK");
    Ok(())
}

/// Where the demo's reader keeps its local copy: a directory of its own under the system's
/// temporary directory, or the user's `--mount`, which must be empty or absent. At the end the
/// demo removes what it made there: the directory too when it made it, its contents only when
/// the user's empty directory was there before.
struct DemoMount {
    given: Option<std::path::PathBuf>,
    existed: bool,
}

impl DemoMount {
    fn claim(given: Option<std::path::PathBuf>) -> Result<DemoMount, Fail> {
        let Some(dir) = given else {
            return Ok(DemoMount {
                given: None,
                existed: false,
            });
        };
        let existed = match std::fs::read_dir(&dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Fail::usage(format!(
                        "--mount {}: the directory is not empty; the demo mounts only into an empty or new directory (it removes what it wrote there when it ends)",
                        dir.display()
                    )));
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Fail::usage(format!("--mount {}: {e}", dir.display()))),
        };
        Ok(DemoMount {
            given: Some(dir),
            existed,
        })
    }

    fn path(&self, store: &str) -> std::path::PathBuf {
        match &self.given {
            None => std::env::temp_dir().join(format!("ikv-demo-{store}")),
            Some(dir) => dir.clone(),
        }
    }

    fn release(&self, dir: &std::path::Path) {
        let removed = if self.existed {
            std::fs::read_dir(dir).and_then(|entries| {
                entries.into_iter().try_for_each(|entry| {
                    let path = entry?.path();
                    if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    }
                })
            })
        } else {
            std::fs::remove_dir_all(dir)
        };
        if let Err(e) = removed {
            tracing::warn!(mount = %dir.display(), error = %e, "could not remove the demo's mount");
        }
    }
}
