//! `snapshot`: the compactor's faces: one pass, a loop, or an AWS Lambda handler for a
//! scheduled (EventBridge) event.

use std::time::Duration;

use clap::{Parser, Subcommand};
use ikv_core::clock::Clock;
use ikv_core::{Storage, StorageOptions};
use ikv_snapshot::{SnapshotOptions, handle_scheduled_event, run_pass};

#[derive(Parser)]
#[command(name = "snapshot", version, about = "ikv snapshot compactor")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args, Clone)]
struct PassArgs {
    /// Storage root: s3://bucket/prefix, file:///abs/dir
    #[arg(long, env = "IKV_STORAGE_URL")]
    storage_url: String,
    /// Stores to compact (repeatable); all stores when omitted
    #[arg(long = "store", env = "IKV_SNAPSHOT_STORES", value_delimiter = ',')]
    stores: Vec<String>,
    /// Partitions to compact (repeatable); all when omitted
    #[arg(long = "partition")]
    partitions: Vec<u32>,
    /// Snapshot every partition that has new deltas, whether or not a trigger fired
    #[arg(long, env = "IKV_SNAPSHOT_FORCE")]
    force: bool,
    /// Trigger: deltas since the last snapshot
    #[arg(long, default_value_t = 1000)]
    min_deltas: usize,
    /// Trigger: bytes of deltas since the last snapshot
    #[arg(long, default_value_t = 64 << 20)]
    min_bytes: u64,
    /// Trigger: age of the oldest delta not in a snapshot (e.g. 10m)
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    max_age: Duration,
    /// Retention window (e.g. 1h): nothing younger is deleted
    #[arg(long, env = "IKV_RETENTION", default_value = "1h", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// Bytes of memory one round's folded deltas may hold (bounds memory)
    #[arg(long, default_value_t = SnapshotOptions::DEFAULT_ROUND_BUDGET_BYTES)]
    round_budget_bytes: u64,
}

#[derive(Subcommand)]
enum Command {
    /// One pass over the chosen stores and partitions
    Run(PassArgs),
    /// Passes forever, one every DURATION
    Loop {
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Duration,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Serve scheduled (EventBridge) events under the AWS Lambda runtime
    Lambda(PassArgs),
}

fn options(args: &PassArgs) -> Result<SnapshotOptions, String> {
    if args.retention < ikv_snapshot::Retention::MIN_WINDOW {
        return Err(format!(
            "--retention {} is too short: the minimum is {} (writers trust a tip they learned for 5 minutes, and readers need time to catch up)",
            humantime::format_duration(args.retention),
            humantime::format_duration(ikv_snapshot::Retention::MIN_WINDOW)
        ));
    }
    let mut o = SnapshotOptions {
        force: args.force,
        round_budget_bytes: Some(args.round_budget_bytes),
        ..SnapshotOptions::default()
    };
    o.triggers.min_deltas = args.min_deltas;
    o.triggers.min_bytes = args.min_bytes;
    o.triggers.max_age = args.max_age;
    o.retention.window = args.retention;
    Ok(o)
}

async fn pass(args: &PassArgs) -> Result<String, String> {
    let storage =
        Storage::open(&args.storage_url, &StorageOptions::default()).map_err(|e| e.to_string())?;
    let reports = run_pass(&storage, &args.stores, &args.partitions, &options(args)?)
        .await
        .map_err(|e| e.to_string())?;
    let lines: Vec<String> = reports.iter().map(ToString::to_string).collect();
    Ok(lines.join("\n"))
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Run(args) => {
            println!("{}", pass(&args).await?);
            Ok(())
        }
        Command::Loop { every, pass: args } => loop {
            match pass(&args).await {
                Ok(out) => println!("{out}"),
                Err(e) => eprintln!("snapshot: pass failed: {e}"),
            }
            tokio::select! {
                _ = ikv_core::clock::SystemClock::new().sleep(every) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        },
        Command::Lambda(args) => {
            let storage = Storage::open(&args.storage_url, &StorageOptions::default())
                .map_err(|e| e.to_string())?;
            let options = options(&args)?;
            let handler = lambda_runtime::service_fn(
                move |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
                    let (storage, stores, options) =
                        (storage.clone(), args.stores.clone(), options.clone());
                    async move {
                        handle_scheduled_event(&storage, &stores, &options, &event.payload)
                            .await
                            .map_err(|e| lambda_runtime::Error::from(e.to_string()))
                    }
                },
            );
            lambda_runtime::run(handler)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = match cli.command {
        Some(c) => c,
        None if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() => {
            match Cli::try_parse_from(["snapshot", "lambda"]) {
                Ok(Cli { command: Some(c) }) => c,
                Ok(_) => return std::process::ExitCode::from(2),
                Err(e) => {
                    eprintln!("snapshot: {e}");
                    return std::process::ExitCode::from(2);
                }
            }
        }
        None => {
            eprintln!("snapshot: no command given; see snapshot --help");
            return std::process::ExitCode::from(2);
        }
    };
    // A bad option value is a usage error (exit 2), found before the bucket is touched.
    let (Command::Run(args) | Command::Lambda(args) | Command::Loop { pass: args, .. }) = &command;
    if let Err(e) = options(args) {
        eprintln!("snapshot: {e}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("snapshot: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("snapshot: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
