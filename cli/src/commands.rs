//! The operator commands: stores, status, debugging reads and writes.

use std::time::{Duration, SystemTime};

use base64::Engine;
use ikv_core::bucket::{create_store, discover_tip, list_delta_seqs, load_config};
use ikv_core::{
    Document, FieldValue, Operation, Storage, StorageOptions, StoreConfig, StoreLayout,
};
use ikv_reader::{Reader, ReaderOptions};
use ikv_snapshot_format::Manifest;
use ikv_writer::{Writer, WriterOptions};
use serde_json::{Value, json};

use crate::fail::{FAILED, Fail, NOT_FOUND};
use crate::progress::Progress;

pub fn open(url: &str, writer: bool) -> Result<Storage, Fail> {
    let options = StorageOptions {
        disable_retries: writer,
        ..StorageOptions::default()
    };
    Ok(Storage::open(url, &options)?)
}

pub async fn create(
    url: &str,
    store: &str,
    primary_key: &str,
    partitioning_key: Option<&str>,
    partitions: u32,
    ttl_seconds: Option<u64>,
) -> Result<String, Fail> {
    let config = StoreConfig::new(store, primary_key, partitioning_key, partitions)?
        .with_ttl_seconds(ttl_seconds)?;
    create_store(&open(url, true)?, &config).await?;
    let ttl = ttl_seconds.map_or(String::new(), |t| format!(", values expire after {t} s"));
    Ok(format!(
        "created store {store:?}: primary key {primary_key:?}, {partitions} partition(s){ttl}"
    ))
}

pub async fn describe(url: &str, store: &str) -> Result<String, Fail> {
    let config = load_config(&open(url, false)?, store).await?;
    Ok(serde_json::to_string_pretty(&config).unwrap_or_default())
}

fn checkpoint_line(c: &ikv_snapshot::checkpoint::Checkpoint) -> String {
    let pins: Vec<String> = c
        .partitions
        .iter()
        .map(|p| format!("p{}={}@{}", p.partition, p.sequence, p.snapshot))
        .collect();
    format!("{} {} {}", c.name, c.created_at_ms, pins.join(" "))
}

/// Pins the store as committed now.
pub async fn checkpoint_create(url: &str, store: &str, name: &str) -> Result<String, Fail> {
    let storage = open(url, false)?;
    let c = ikv_snapshot::checkpoint::create_checkpoint(
        &storage,
        store,
        name,
        ikv_core::clock::wall_time(),
    )
    .await?;
    Ok(format!("created checkpoint {}", checkpoint_line(&c)))
}

/// One line per checkpoint: name, creation time (ms), `p<partition>=<sequence>@<snapshot>`.
pub async fn checkpoint_list(url: &str, store: &str) -> Result<String, Fail> {
    let storage = open(url, false)?;
    load_config(&storage, store).await?;
    let all = ikv_snapshot::checkpoint::list_checkpoints(&storage, store).await?;
    Ok(all
        .iter()
        .map(checkpoint_line)
        .collect::<Vec<_>>()
        .join("\n"))
}

pub async fn checkpoint_delete(url: &str, store: &str, name: &str) -> Result<String, Fail> {
    let storage = open(url, false)?;
    ikv_snapshot::checkpoint::delete_checkpoint(&storage, store, name).await?;
    Ok(format!("deleted checkpoint {name:?} of store {store:?}"))
}

/// A DuckDB query of the store's documents as of each partition's newest snapshot.
pub async fn snapshot_sql(url: &str, store: &str) -> Result<String, Fail> {
    let storage = open(url, false)?;
    let config = load_config(&storage, store).await?;
    let layout = StoreLayout::new(&storage.prefix, store)?;
    let mut stacks = Vec::new();
    for p in 0..config.num_partitions {
        if let Some(top) = Manifest::load_newest(&storage, &layout, p).await? {
            stacks.push(ikv_snapshot_format::Stack::load(&storage, &layout, top).await?);
        }
    }
    let root = storage.local_dir();
    let remote = url::Url::parse(url).ok();
    let url_of = |m: &Manifest, f: &ikv_snapshot_format::manifest::SnapshotFile| {
        let path = m.file_path(&layout, f);
        match (&root, &remote) {
            (Some(dir), _) => dir.join(path.as_ref()).display().to_string(),
            (None, Some(u)) => format!("{}://{}/{}", u.scheme(), u.host_str().unwrap_or(""), path),
            (None, None) => path.to_string(),
        }
    };
    ikv_snapshot_format::sql::duckdb_query(&stacks, url_of).ok_or_else(|| {
        Fail::new(
            NOT_FOUND,
            format!("store {store:?} has no snapshot yet: run `ikv snapshot --store {store}`"),
        )
    })
}

/// Per partition: tip, newest snapshot and its age, deltas since.
pub async fn status(url: &str, store: &str) -> Result<String, Fail> {
    let storage = open(url, false)?;
    let (table, _tips, holes) = status_table(&storage, store).await?;
    if !holes.is_empty() {
        return Err(Fail::new(
            FAILED,
            format!(
                "store {store:?}: the log of partition(s) {holes:?} has a hole; readers serve the state before it (docs/OPERATIONS.md, \"A hole in a log\")"
            ),
        )
        .with_output(table));
    }
    Ok(table)
}

/// The status table of a store, each partition's tip, and the partitions with a hole.
pub async fn status_table(
    storage: &ikv_core::Storage,
    store: &str,
) -> Result<(String, Vec<u64>, Vec<u32>), Fail> {
    let config = load_config(storage, store).await?;
    let layout = StoreLayout::new(&storage.prefix, store)?;
    let now_ms = ikv_core::clock::wall_time()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut lines = vec![format!(
        "{:<9} {:>12} {:>12} {:>14} {:>12}  {}",
        "partition", "tip", "snapshot", "snapshot age", "deltas since", "log"
    )];
    let mut holes = Vec::new();
    let mut tips = Vec::new();
    for p in 0..config.num_partitions {
        let tip = discover_tip(storage, &layout, p).await?;
        tips.push(tip);
        let snapshot = Manifest::load_newest(storage, &layout, p).await?;
        let log = match first_hole(storage, &layout, p, snapshot.as_ref()).await? {
            None => "dense".to_owned(),
            Some(hole) => {
                holes.push(p);
                format!("HOLE: {hole}")
            }
        };
        let (seq, age) = match &snapshot {
            Some(m) => (
                m.sequence.to_string(),
                humantime::format_duration(Duration::from_secs(
                    now_ms.saturating_sub(m.created_at_ms) / 1000,
                ))
                .to_string(),
            ),
            None => ("none".into(), "-".into()),
        };
        let since = tip - snapshot.map_or(0, |m| m.sequence);
        lines.push(format!(
            "{p:<9} {tip:>12} {seq:>12} {age:>14} {since:>12}  {log}"
        ));
    }
    lines.push(String::new());
    lines.push(wake_line(storage, &layout, now_ms).await?);
    Ok((lines.join("\n"), tips, holes))
}

/// What the store's wake signal says: which partition last woke quiet readers, and when.
async fn wake_line(
    storage: &ikv_core::Storage,
    layout: &StoreLayout,
    now_ms: u64,
) -> Result<String, Fail> {
    use ikv_core::bucket::wake::Wake;
    Ok(
        match ikv_core::bucket::read(storage, &layout.wake()).await? {
            None => "wake signal: none yet (no commit has ended a quiet spell)".to_owned(),
            Some(bytes) => match Wake::decode(&bytes, layout) {
                Ok(wake) => {
                    let at = wake
                        .committed_at
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    format!(
                        "wake signal: partition {} woke at delta {}, {} ago",
                        wake.partition,
                        wake.seq,
                        humantime::format_duration(Duration::from_secs(
                            now_ms.saturating_sub(at) / 1000
                        ))
                    )
                }
                Err(e) => format!(
                    "wake signal: unreadable ({e}); readers poll all partitions when it changes, whatever it says"
                ),
            },
        },
    )
}

/// Above the newest snapshot a partition's log must be dense: the first missing delta while
/// a later one exists, said as "delta N is missing while delta M exists".
async fn first_hole(
    storage: &ikv_core::Storage,
    layout: &StoreLayout,
    partition: u32,
    snapshot: Option<&Manifest>,
) -> Result<Option<String>, Fail> {
    let base = snapshot.map_or(0, |m| m.sequence);
    let deltas = list_delta_seqs(storage, layout, partition).await?;
    Ok((base + 1..)
        .zip(deltas.into_iter().filter(|s| *s > base))
        .find(|(expect, seq)| expect != seq)
        .map(|(expect, seq)| format!("delta {expect} is missing while delta {seq} exists")))
}

/// `name=value` (a string) or `name:type=value` with type string, bytes (base64), int64,
/// float64 or bool.
pub fn parse_field(spec: &str) -> Result<(String, FieldValue), Fail> {
    let (lhs, value) = spec.split_once('=').ok_or_else(|| {
        Fail::usage(format!(
            "--field {spec:?}: expected name=value or name:type=value"
        ))
    })?;
    let (name, ty) = lhs.split_once(':').unwrap_or((lhs, "string"));
    let bad = |what: &str| Fail::usage(format!("--field {spec:?}: {what}"));
    let v = match ty {
        "string" => FieldValue::String(value.to_owned()),
        "bytes" => FieldValue::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|_| bad("bytes must be base64"))?,
        ),
        "int64" => FieldValue::Int64(value.parse().map_err(|_| bad("not a 64-bit integer"))?),
        "float64" => FieldValue::Float64(value.parse().map_err(|_| bad("not a number"))?),
        "bool" => FieldValue::Bool(
            value
                .parse()
                .map_err(|_| bad("bool must be true or false"))?,
        ),
        other => {
            return Err(bad(&format!(
                "unknown type {other:?} (string, bytes, int64, float64, bool)"
            )));
        }
    };
    Ok((name.to_owned(), v))
}

async fn key_document(
    storage: &Storage,
    store: &str,
    key: &str,
    extra: &[(String, FieldValue)],
) -> Result<(Writer, Document), Fail> {
    let writer = Writer::open(storage.clone(), store, WriterOptions::default()).await?;
    let mut doc = Document::new().with(
        writer.config().primary_key_field.clone(),
        FieldValue::String(key.to_owned()),
    );
    let primary_key = &writer.config().primary_key_field;
    for (k, v) in extra {
        // --key names the document; a --field of the primary key would silently rename it.
        if k == primary_key && v != &FieldValue::String(key.to_owned()) {
            return Err(Fail::usage(format!(
                "--field {k}=… sets the primary key, which --key already gives; leave it out"
            )));
        }
        doc.put(k.clone(), v.clone());
    }
    Ok((writer, doc))
}

pub async fn put(url: &str, store: &str, key: &str, fields: &[String]) -> Result<String, Fail> {
    if fields.is_empty() {
        return Err(Fail::usage("put needs at least one --field"));
    }
    let parsed = fields
        .iter()
        .map(|f| parse_field(f))
        .collect::<Result<Vec<_>, _>>()?;
    let storage = open(url, true)?;
    let (writer, doc) = key_document(&storage, store, key, &parsed).await?;
    let receipt = writer.write(&[Operation::UpsertFields(doc)]).await?;
    // A one-shot process: leave the tip hint for the next writer before exiting.
    writer.flush_hints().await;
    Ok(format!("committed: {}", json!(receipt.commits)))
}

pub async fn delete(url: &str, store: &str, key: &str, fields: &[String]) -> Result<String, Fail> {
    let storage = open(url, true)?;
    let (writer, doc) = key_document(&storage, store, key, &[]).await?;
    let op = if fields.is_empty() {
        Operation::DeleteDocument(doc)
    } else {
        Operation::DeleteFields {
            document: doc,
            field_names: fields.to_vec(),
        }
    };
    let receipt = writer.write(&[op]).await?;
    writer.flush_hints().await;
    Ok(format!("committed: {}", json!(receipt.commits)))
}

fn json_value(v: &FieldValue) -> Value {
    match v {
        FieldValue::String(s) => json!(s),
        FieldValue::Bytes(b) => {
            json!({ "bytes": base64::engine::general_purpose::STANDARD.encode(b) })
        }
        FieldValue::Int64(i) => json!(i),
        FieldValue::Float64(f) => json!(f),
        FieldValue::Bool(b) => json!(b),
    }
}

/// Reads a document through an embedded reader on `mount` (blocking: call from a thread),
/// at the tip or, with `pin`, at a checkpoint or a time.
pub fn get(
    url: &str,
    store: &str,
    key: &str,
    fields: &[String],
    mount: &std::path::Path,
    pin: Option<ikv_reader::Pin>,
) -> Result<String, Fail> {
    let progress = Progress::start("opening a reader (bootstrap or catch-up)");
    let mut options = ReaderOptions::new(url, store, mount);
    let pinned = pin.is_some();
    options.pin = pin;
    let reader = Reader::open(options)?;
    // A hole in the key's partition stops the reader before it: an answer from there may be
    // stale or missing, so say so instead of answering.
    // (With a partitioning key, the document may be in any partition.)
    let config = reader.config();
    let partitions: Vec<u32> = match config.partitioning_key_field {
        None => vec![ikv_core::partition::partition_of(
            key.as_bytes(),
            config.num_partitions,
        )],
        Some(_) => (0..config.num_partitions).collect(),
    };
    // A pinned reader opened only if its point's deltas are all there: no hole below it.
    let partitions = if pinned { Vec::new() } else { partitions };
    let hole = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail::from(format!("cannot start a runtime: {e}")))?
        .block_on(async {
            let storage = open(url, false)?;
            let layout = StoreLayout::new(&storage.prefix, store)?;
            for p in partitions {
                let snapshot = Manifest::load_newest(&storage, &layout, p).await?;
                if let Some(hole) = first_hole(&storage, &layout, p, snapshot.as_ref()).await? {
                    return Ok::<_, Fail>(Some((p, hole)));
                }
            }
            Ok(None)
        })?;
    if let Some((partition, hole)) = hole {
        progress.finish("stopped at a hole");
        let _ = reader.shutdown();
        return Err(Fail::new(
            FAILED,
            format!(
                "the log of partition {partition} of store {store:?} has a hole ({hole}): the reader serves the state before it, so key {key:?} cannot be answered (see `ikv status`)"
            ),
        ));
    }
    progress.finish("caught up");
    let doc = reader.get_document(key.as_bytes())?.ok_or_else(|| {
        Fail::new(
            NOT_FOUND,
            format!("no document with key {key:?} in store {store:?}"),
        )
    })?;
    let shown: serde_json::Map<String, Value> = doc
        .iter()
        .filter(|(f, _)| fields.is_empty() || fields.contains(f))
        .map(|(f, v)| (f.clone(), json_value(v)))
        .collect();
    reader.shutdown()?;
    Ok(serde_json::to_string_pretty(&Value::Object(shown)).unwrap_or_default())
}

/// `ikv prepare-bucket`: what it found and did, one line each, then what readers need.
pub async fn prepare_bucket(url: &str, notify: bool) -> Result<String, Fail> {
    let (bucket, prefix) =
        ikv_aws::bucket_and_prefix(url).map_err(|e| Fail::from(e.to_string()))?;
    let config = ikv_aws::sdk_config(&StorageOptions::default()).await;
    let done = ikv_aws::prepare::prepare_bucket(&config, &bucket, &prefix, notify)
        .await
        .map_err(ikv_core::Error::from)?;
    let said = |written: bool| {
        if written {
            "written"
        } else {
            "already in place"
        }
    };
    let mut out = vec![format!(
        "lifecycle rule {} (abort multipart uploads unfinished after {} day): {}",
        ikv_aws::prepare::LIFECYCLE_RULE,
        ikv_aws::prepare::ABORT_AFTER_DAYS,
        said(done.lifecycle_written)
    )];
    if let Some(topic) = &done.wake_topic {
        out.push(format!(
            "notification {} (PUTs of wake.json under {url}) to {topic}: {}",
            ikv_aws::prepare::NOTIFICATION,
            said(done.notification_written)
        ));
        out.push(format!(
            "readers: set the wake topic to {topic} (ReaderOptions::wake_topic, ClientOptionsBuilder.with_wake_topic) to learn of writes after a quiet spell within a long poll"
        ));
    }
    Ok(out.join("\n"))
}
