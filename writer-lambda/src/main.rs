//! `ikv-writer`: the writer service's AWS Lambda entry point (the `bootstrap` of the
//! function). Configured by flags or the environment (`IKV_STORAGE_URL`, `IKV_ACCOUNTS` or
//! `IKV_ACCOUNTS_FILE`). Everything else an operator runs — serving the same API locally,
//! creating stores, hashing passkeys — is `ikv`, the one command line (docs/CLI.md).

use std::sync::Arc;

use clap::Parser;
use ikv_core::{Storage, StorageOptions};
use ikv_writer::WriterOptions;
use ikv_writer::service::auth::load_accounts;
use ikv_writer::service::{ServiceState, run_lambda};

#[derive(Parser)]
#[command(
    name = "ikv-writer",
    version,
    about = "The ikv writer service under the AWS Lambda runtime (locally: `ikv serve`)"
)]
struct Cli {
    /// Storage root: s3://bucket/prefix, file:///abs/dir or memory://
    #[arg(long, env = "IKV_STORAGE_URL")]
    storage_url: String,
    /// JSON file with the accounts allowed to write (else IKV_ACCOUNTS; see docs/API.md)
    #[arg(long, env = "IKV_ACCOUNTS_FILE")]
    accounts_file: Option<std::path::PathBuf>,
}

async fn run(cli: Cli) -> Result<(), String> {
    // The store's own retries are off for writers: the commit loop settles ambiguous answers.
    let options = StorageOptions {
        disable_retries: true,
        ..StorageOptions::default()
    };
    let storage = Storage::open(&cli.storage_url, &options).map_err(|e| e.to_string())?;
    let state = Arc::new(ServiceState::new(
        storage,
        load_accounts(cli.accounts_file.as_deref())?,
        WriterOptions::default(),
    ));
    run_lambda(state).await.map_err(|e| e.to_string())
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
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        eprintln!(
            "ikv-writer: runs under the AWS Lambda runtime only (AWS_LAMBDA_RUNTIME_API is not set); to serve the API locally use `ikv serve`"
        );
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ikv-writer: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ikv-writer: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
