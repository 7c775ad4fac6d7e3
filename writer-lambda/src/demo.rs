//! The demo behind the README's first command: create a store, write the guide's user
//! profiles through the HTTP writer service and a generated data set directly, then read the
//! committed logs back and check them.

use std::sync::Arc;
use std::time::Instant;

use ikv_core::delta::decode_delta;
use ikv_core::model::StoreModel;
use ikv_core::store::{list_delta_seqs, read_delta};
use ikv_core::{
    Document, FieldValue, Operation, Storage, StorageOptions, StoreConfig, StoreLayout,
};
use ikv_writer::client::HttpWriterClient;
use ikv_writer::service::auth::{Accounts, generate_passkey, hash_passkey};
use ikv_writer::service::{ServiceState, serve};
use ikv_writer::{Writer, WriterOptions};

const PARTITIONS: u32 = 4;
const DOCS_PER_CALL: usize = 1_000;
const CONCURRENT_CALLERS: usize = 8;

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

/// A generated document: 10-byte key, three 50-byte string fields.
fn generated(i: usize) -> Operation {
    let key = format!("u{i:09}");
    let filler = |tag: &str| format!("{tag}-{i:0>46}");
    Operation::UpsertFields(
        Document::new()
            .with("firstname", s(&key))
            .with("city", s(&filler("city")))
            .with("team", s(&filler("team")))
            .with("bio", s(&filler("bio-"))),
    )
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub async fn run(url: &str, documents: usize) -> Result<(), String> {
    let options = StorageOptions {
        disable_retries: true,
        ..StorageOptions::default()
    };
    let storage = Storage::open(url, &options).map_err(err)?;
    let store = format!(
        "profiles-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(err)?
            .as_millis()
    );
    let config = StoreConfig::new(&store, "firstname", None, PARTITIONS).map_err(err)?;
    ikv_core::store::create_store(&storage, &config)
        .await
        .map_err(err)?;
    println!("storage root  {url}");
    println!("created store {store:?}: primary key \"firstname\", {PARTITIONS} partitions");

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
        .map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    let client = HttpWriterClient::new(&format!("http://{addr}"), "demo", &passkey);
    let started = Instant::now();
    for op in [
        profile("Alice", &[("age", "22")]),
        profile("Alice", &[("city", "San Francisco")]),
        profile("Bob", &[("age", "25")]),
    ] {
        client.write(&store, &[op]).await.map_err(err)?;
    }
    println!(
        "HTTP service  3 upserts of the guide's profiles in {:.1} ms (one durable commit each)",
        started.elapsed().as_secs_f64() * 1e3
    );
    let _ = stop.send(());
    let _ = server.await;

    // 2. A generated data set, directly to storage, from concurrent callers (group commit).
    let writer = Writer::open(storage.clone(), &store, WriterOptions::default())
        .await
        .map_err(err)?;
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..CONCURRENT_CALLERS {
        let writer = writer.clone();
        callers.spawn(async move {
            let mut i = caller * DOCS_PER_CALL;
            while i < documents {
                let end = (i + DOCS_PER_CALL).min(documents);
                let ops: Vec<Operation> = (i..end).map(generated).collect();
                writer.write(&ops).await?;
                i += CONCURRENT_CALLERS * DOCS_PER_CALL;
            }
            Ok::<(), ikv_core::Error>(())
        });
    }
    while let Some(joined) = callers.join_next().await {
        joined.map_err(err)?.map_err(err)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "direct writer {documents} documents ({} field values) in {:.2} s: {:.0} field values/s",
        documents * 4,
        secs,
        (documents * 4) as f64 / secs
    );

    // 3. Read every partition's log back and replay it.
    let started = Instant::now();
    let layout = StoreLayout::new(&storage.prefix, &store).map_err(err)?;
    let mut model = StoreModel::new("firstname");
    let (mut deltas, mut rows) = (0usize, 0usize);
    for partition in 0..PARTITIONS {
        let seqs = list_delta_seqs(&storage, &layout, partition)
            .await
            .map_err(err)?;
        for (expected, seq) in (1u64..).zip(&seqs) {
            if expected != *seq {
                return Err(format!(
                    "partition {partition}: log has a hole at {expected}"
                ));
            }
            let bytes = read_delta(&storage, &layout, partition, *seq)
                .await
                .map_err(err)?
                .ok_or_else(|| format!("delta {seq} vanished"))?;
            let delta = decode_delta(&bytes).map_err(err)?;
            deltas += 1;
            rows += delta.ops.len();
            delta.ops.iter().for_each(|op| model.apply(op));
        }
        println!(
            "  partition {partition}: {} deltas, dense 1..={}",
            seqs.len(),
            seqs.last().copied().unwrap_or(0)
        );
    }
    println!(
        "read back     {deltas} deltas, {rows} rows, {} documents in {:.2} s",
        model.documents.len(),
        started.elapsed().as_secs_f64()
    );

    // The guide's quick start, corrected: the second upsert unions, so Alice keeps her age.
    let check = |key: &str, field: &str, want: Option<&str>| {
        let got = model.get(key.as_bytes(), field);
        let want = want.map(s);
        if got != want.as_ref() {
            return Err(format!("{key}.{field}: expected {want:?}, found {got:?}"));
        }
        println!(
            "  get({key:?}, {field:?}) = {:?}",
            got.map(|v| match v {
                FieldValue::String(s) => s.as_str(),
                _ => "?",
            })
        );
        Ok(())
    };
    check("Alice", "firstname", Some("Alice"))?;
    check("Alice", "age", Some("22"))?;
    check("Alice", "city", Some("San Francisco"))?;
    check("Bob", "age", Some("25"))?;
    check("Bob", "city", None)?;
    if model.documents.len() != documents + 2 {
        return Err(format!(
            "expected {} documents, found {}",
            documents + 2,
            model.documents.len()
        ));
    }
    println!("demo OK");
    Ok(())
}
