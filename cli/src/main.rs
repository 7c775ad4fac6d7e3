//! `ikv`: the operator command line. See `docs/CLI.md`.

mod commands;
mod demo;
mod fail;
mod progress;
mod watch;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ikv_core::clock::{Clock, SystemClock};
use ikv_snapshot::args::PassArgs;
use ikv_snapshot::{SnapshotOptions, run_pass};
use ikv_writer::WriterOptions;
use ikv_writer::service::auth::{generate_passkey, hash_passkey, load_accounts};
use ikv_writer::service::{ServiceState, serve};

use crate::fail::{BAD_ARGUMENTS, Fail, OK};
use crate::progress::Progress;

#[derive(Parser)]
#[command(
    name = "ikv",
    version,
    about = "ikv: operate stores, debug reads and writes, run the writer service and snapshots"
)]
struct Cli {
    /// Storage root: s3://bucket/prefix or file:///abs/dir (S3 settings from AWS_* variables)
    #[arg(long, global = true, env = "IKV_STORAGE_URL")]
    storage_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum CheckpointAction {
    /// Pin the store as committed now under NAME
    Create {
        #[arg(long)]
        store: String,
        #[arg(long)]
        name: String,
    },
    /// The store's checkpoints: name, time, per partition the sequence and its snapshot
    List {
        #[arg(long)]
        store: String,
    },
    /// Delete a checkpoint: what only it kept becomes retention's to reclaim
    Delete {
        #[arg(long)]
        store: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Create a store (never overwrites an existing one)
    CreateStore {
        #[arg(long)]
        store: String,
        #[arg(long)]
        primary_key: String,
        #[arg(long)]
        partitioning_key: Option<String>,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Time to live of every write that gives none, in seconds (default: never expire)
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Print a store's configuration
    Describe {
        #[arg(long)]
        store: String,
    },
    /// Prepare the bucket of an s3:// root (idempotent): a lifecycle rule that aborts multipart
    /// uploads unfinished after a day and, with --notify, S3 event notifications of the stores'
    /// wake signals to an SNS topic that reader hosts subscribe to (their wake topic)
    PrepareBucket {
        /// Also send the wake signals' PUTs to an SNS topic (created if needed)
        #[arg(long)]
        notify: bool,
    },
    /// Pin the store as committed now, list or delete pins (reads of that state stay possible
    /// whatever is written and compacted later: `read_ikv(checkpoint=...)`)
    Checkpoint {
        #[command(subcommand)]
        action: CheckpointAction,
    },
    /// Print a DuckDB query of the store's documents as of its newest snapshots (layers
    /// resolved), reading the snapshot files where they are
    SnapshotSql {
        #[arg(long)]
        store: String,
    },
    /// Per partition: tip sequence, newest snapshot and its age, deltas since
    Status {
        #[arg(long)]
        store: String,
        /// Redraw every DURATION (e.g. 2s) until Ctrl-C, with write rates
        #[arg(long, value_parser = humantime::parse_duration)]
        watch: Option<std::time::Duration>,
        /// With --watch: a /metrics endpoint to show (an `ikv serve`, a process exposing
        /// ikvpy.metrics); repeatable
        #[arg(long, requires = "watch")]
        scrape: Vec<String>,
    },
    /// Upsert fields of one document: --field name=value or --field name:int64=5
    Put {
        #[arg(long)]
        store: String,
        #[arg(long)]
        key: String,
        #[arg(long = "field")]
        fields: Vec<String>,
    },
    /// Delete a document, or only some of its fields (--field NAME)
    Delete {
        #[arg(long)]
        store: String,
        #[arg(long)]
        key: String,
        #[arg(long = "field")]
        fields: Vec<String>,
    },
    /// Read a document through an embedded reader (all fields, or --field NAME...)
    Get {
        #[arg(long)]
        store: String,
        #[arg(long)]
        key: String,
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Mount directory for the reader's local copy
        #[arg(long, env = "IKV_MOUNT_DIRECTORY")]
        mount: PathBuf,
        /// Read the state checkpoint NAME pinned (a point-in-time reader: no polling)
        #[arg(long, value_name = "NAME", conflicts_with = "as_of")]
        checkpoint: Option<String>,
        /// Read the newest state committed at or before this time (RFC 3339, e.g.
        /// 2026-12-03T10:00:00Z; within retention)
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
    },
    /// Bulk-import Parquet data (a file, a directory, or an s3:// or file:// URL): one column
    /// is the primary key, the others become fields
    Import {
        #[arg(long)]
        store: String,
        /// Where the Parquet data is
        #[arg(long)]
        parquet: String,
        /// upsert (union of fields, as upsert_fields) or replace (the store's documents
        /// become exactly the imported ones)
        #[arg(long, default_value = "upsert")]
        mode: String,
        /// Names the import: a retry with the same id commits no partition twice
        #[arg(long)]
        import_id: Option<String>,
        /// The memory the import may use (e.g. 512MiB, 4GiB; default 1GiB): rows are
        /// written as a sorted run per partition each time they fill half of it
        #[arg(long, env = "IKV_IMPORT_MEMORY_BUDGET")]
        memory_budget: Option<String>,
        /// Write the import's metrics here in Prometheus text (for node_exporter's textfile
        /// collector; replaced whole, never half-written)
        #[arg(long)]
        metrics_file: Option<PathBuf>,
    },
    /// Run the writer service's HTTP API on a local address
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// JSON file of the accounts allowed to write (else IKV_ACCOUNTS)
        #[arg(long, env = "IKV_ACCOUNTS_FILE")]
        accounts_file: Option<PathBuf>,
        /// Do not serve GET /metrics (Prometheus text; on by default, unauthenticated)
        #[arg(long)]
        no_metrics: bool,
    },
    /// Run one snapshot pass (all stores, or --store) and retention; with --every, a pass
    /// every DURATION until interrupted
    Snapshot {
        #[command(flatten)]
        pass: PassArgs,
        /// Repeat: one pass every DURATION (e.g. 5m) until Ctrl-C; a failed pass is reported
        /// and the next one runs
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<std::time::Duration>,
    },
    /// Print the plan a deployed pass runs: every partition of every store (or --store)
    /// grouped into tasks of at most --task-seconds of estimated work (JSON; docs/DEPLOY.md)
    SnapshotPlan {
        #[arg(long = "store")]
        stores: Vec<String>,
        #[arg(long, default_value_t = 600.0)]
        task_seconds: f64,
    },
    /// Print the passkey_hash of a passkey read from stdin, or --generate a passkey
    HashPasskey {
        #[arg(long)]
        generate: bool,
    },
    /// The end-to-end demo (create, write, snapshot, read) on the storage root
    Demo {
        #[arg(long, default_value_t = 200_000)]
        documents: usize,
        /// Mount directory for the demo's reader (default: a temporary directory)
        #[arg(long)]
        mount: Option<PathBuf>,
    },
}

fn url(cli_url: &Option<String>) -> Result<String, Fail> {
    cli_url
        .clone()
        .ok_or_else(|| Fail::usage("no storage root: pass --storage-url or set IKV_STORAGE_URL"))
}

async fn run(cli: Cli) -> Result<String, Fail> {
    match cli.command {
        Command::CreateStore {
            store,
            primary_key,
            partitioning_key,
            partitions,
            ttl,
        } => {
            commands::create(
                &url(&cli.storage_url)?,
                &store,
                &primary_key,
                partitioning_key.as_deref(),
                partitions,
                ttl,
            )
            .await
        }
        Command::PrepareBucket { notify } => {
            commands::prepare_bucket(&url(&cli.storage_url)?, notify).await
        }
        Command::Describe { store } => commands::describe(&url(&cli.storage_url)?, &store).await,
        Command::Checkpoint { action } => match action {
            CheckpointAction::Create { store, name } => {
                commands::checkpoint_create(&url(&cli.storage_url)?, &store, &name).await
            }
            CheckpointAction::List { store } => {
                commands::checkpoint_list(&url(&cli.storage_url)?, &store).await
            }
            CheckpointAction::Delete { store, name } => {
                commands::checkpoint_delete(&url(&cli.storage_url)?, &store, &name).await
            }
        },
        Command::SnapshotSql { store } => {
            commands::snapshot_sql(&url(&cli.storage_url)?, &store).await
        }
        Command::Status {
            store, watch: None, ..
        } => commands::status(&url(&cli.storage_url)?, &store).await,
        Command::Status {
            store,
            watch: Some(every),
            scrape,
        } => watch::watch(&url(&cli.storage_url)?, &store, every, &scrape).await,
        Command::Put { store, key, fields } => {
            commands::put(&url(&cli.storage_url)?, &store, &key, &fields).await
        }
        Command::Delete { store, key, fields } => {
            commands::delete(&url(&cli.storage_url)?, &store, &key, &fields).await
        }
        Command::Get {
            store,
            key,
            fields,
            mount,
            checkpoint,
            as_of,
        } => {
            let u = url(&cli.storage_url)?;
            let pin = match (checkpoint, as_of) {
                (Some(name), _) => Some(ikv_reader::Pin::Checkpoint(name)),
                (None, Some(time)) => Some(ikv_reader::Pin::AsOf(
                    humantime::parse_rfc3339_weak(&time).map_err(|e| {
                        Fail::new(
                            fail::BAD_ARGUMENTS,
                            format!(
                                "--as-of {time:?} is not an RFC 3339 time (2026-12-03T10:00:00Z): {e}"
                            ),
                        )
                    })?,
                )),
                (None, None) => None,
            };
            tokio::task::spawn_blocking(move || {
                commands::get(&u, &store, &key, &fields, &mount, pin)
            })
            .await
            .map_err(|e| Fail::from(e.to_string()))?
        }
        Command::Serve {
            listen,
            accounts_file,
            no_metrics,
        } => {
            let storage = commands::open(&url(&cli.storage_url)?, true)?;
            let accounts = load_accounts(accounts_file.as_deref()).map_err(Fail::usage)?;
            let mut state = ServiceState::new(storage, accounts, WriterOptions::default());
            if no_metrics {
                state = state.without_metrics_route();
            }
            let state = Arc::new(state);
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|e| Fail::usage(format!("cannot listen on {listen}: {e}")))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            eprintln!("ikv writer service listening on http://{addr}");
            serve(listener, state, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| e.to_string())?;
            Ok(String::new())
        }
        Command::Import {
            store,
            parquet,
            mode,
            import_id,
            memory_budget,
            metrics_file,
        } => {
            let memory_budget = memory_budget
                .map(|b| b.parse::<ikv_import::MemoryBudget>())
                .transpose()?;
            let storage = commands::open(&url(&cli.storage_url)?, true)?;
            let started = ikv_core::clock::Stopwatch::start();
            let mode: ikv_import::ImportMode = mode.parse()?;
            let progress = Progress::start("import");
            let options = ikv_import::ImportOptions {
                import_id,
                memory_budget,
                ..ikv_import::ImportOptions::default()
            };
            let receipt = ikv_import::import_parquet(
                &storage,
                &store,
                &parquet,
                &Default::default(),
                mode,
                options,
            )
            .await?;
            progress.finish(&format!("{} documents", receipt.documents));
            if let Some(path) = metrics_file {
                let text = receipt.metrics(&store, started.elapsed()).to_prometheus();
                write_whole(&path, text.as_bytes())?;
            }
            serde_json::to_string(&receipt).map_err(|e| Fail::usage(e.to_string()))
        }
        Command::Snapshot { pass, every } => {
            // A bad option is a usage error, found before the bucket is touched.
            let options = pass.options().map_err(Fail::usage)?;
            let storage = commands::open(&url(&cli.storage_url)?, false)?;
            let Some(every) = every else {
                return snapshot_pass(&storage, &pass, &options).await;
            };
            // Listening before the first pass: an interrupt at any point ends the loop cleanly.
            let mut interrupt =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                    .map_err(|e| Fail::from(format!("cannot listen for Ctrl-C: {e}")))?;
            loop {
                match snapshot_pass(&storage, &pass, &options).await {
                    Ok(out) => println!("{out}"),
                    Err(e) => eprintln!("ikv: snapshot pass failed: {}", e.message),
                }
                tokio::select! {
                    _ = SystemClock::new().sleep(every) => {}
                    _ = interrupt.recv() => return Ok(String::new()),
                }
            }
        }
        Command::SnapshotPlan {
            stores,
            task_seconds,
        } => {
            if !(task_seconds.is_finite() && task_seconds > 0.0) {
                return Err(Fail::usage(format!(
                    "--task-seconds must be a positive number of seconds, not {task_seconds}"
                )));
            }
            let options = ikv_snapshot::plan::PlanOptions {
                task_seconds,
                ..Default::default()
            };
            let storage = commands::open(&url(&cli.storage_url)?, false)?;
            let tasks = ikv_snapshot::plan::plan(&storage, &stores, &options).await?;
            serde_json::to_string_pretty(&serde_json::json!({ "tasks": tasks }))
                .map_err(|e| Fail::from(e.to_string()))
        }
        Command::HashPasskey { generate } => {
            if generate {
                let passkey = generate_passkey();
                Ok(format!(
                    "passkey:      {passkey}\npasskey_hash: {}",
                    hash_passkey(&passkey).map_err(Fail::usage)?
                ))
            } else {
                let mut input = String::new();
                std::io::stdin().read_to_string(&mut input).map_err(|e| {
                    Fail::usage(format!("reading the passkey from standard input: {e}"))
                })?;
                hash_passkey(input.trim_end_matches(['\n', '\r'])).map_err(Fail::usage)
            }
        }
        Command::Demo { documents, mount } => {
            demo::run(&url(&cli.storage_url)?, documents, mount).await?;
            Ok(String::new())
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ikv: cannot start the async runtime: {e}");
            return ExitCode::from(fail::FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::from(OK)
        }
        Err(f) => {
            if !f.output.is_empty() {
                println!("{}", f.output);
            }
            eprintln!("ikv: {}", f.message);
            ExitCode::from(if f.code == 0 { BAD_ARGUMENTS } else { f.code })
        }
    }
}

/// One snapshot pass and retention, a line per partition.
async fn snapshot_pass(
    storage: &ikv_core::Storage,
    pass: &PassArgs,
    options: &SnapshotOptions,
) -> Result<String, Fail> {
    let progress = Progress::start("snapshot pass");
    let reports = run_pass(storage, &pass.stores, &pass.partitions, options).await?;
    progress.finish(&format!("{} partitions", reports.len()));
    Ok(reports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename: a reader of
/// `path` (a collector) sees the old contents or the new, never part of them.
fn write_whole(path: &std::path::Path, bytes: &[u8]) -> Result<(), Fail> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Fail::from(format!("writing {}: {e}", path.display())))
}
