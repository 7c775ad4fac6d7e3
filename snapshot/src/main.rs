//! `snapshot`: the compactor's AWS Lambda entry point, serving scheduled (EventBridge)
//! events: each is one pass over the configured stores, then retention. Its options come from
//! flags or the environment (`IKV_STORAGE_URL`, `IKV_SNAPSHOT_STORES`, `IKV_RETENTION`, ...).
//! Passes run by hand or in a loop are `ikv snapshot [--every 5m]`, the one command line.

use clap::Parser;
use ikv_core::{Storage, StorageOptions};
use ikv_snapshot::args::PassArgs;
use ikv_snapshot::handle_scheduled_event;

#[derive(Parser)]
#[command(
    name = "snapshot",
    version,
    about = "ikv snapshot compactor under the AWS Lambda runtime (passes by hand: `ikv snapshot`)"
)]
struct Cli {
    /// Storage root: s3://bucket/prefix, file:///abs/dir
    #[arg(long, env = "IKV_STORAGE_URL")]
    storage_url: String,
    #[command(flatten)]
    pass: PassArgs,
}

async fn run(cli: Cli) -> Result<(), String> {
    let options = cli.pass.options()?;
    let storage =
        Storage::open(&cli.storage_url, &StorageOptions::default()).map_err(|e| e.to_string())?;
    let stores = cli.pass.stores.clone();
    let handler = lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let (storage, stores, options) = (storage.clone(), stores.clone(), options.clone());
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

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // A bad option value is a usage error (exit 2), found before the bucket is touched.
    if let Err(e) = cli.pass.options() {
        eprintln!("snapshot: {e}");
        return std::process::ExitCode::from(2);
    }
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        eprintln!(
            "snapshot: runs under the AWS Lambda runtime only (AWS_LAMBDA_RUNTIME_API is not set); for a pass by hand or in a loop use `ikv snapshot [--every DURATION]`"
        );
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("snapshot: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("snapshot: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
