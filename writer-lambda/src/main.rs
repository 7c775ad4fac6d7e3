//! `ikv-writer`: the writer service binary deployed to AWS Lambda (and runnable locally), with
//! the two tools its operators need beside it. The full operator CLI is `ikv` (`cli/`).

use std::io::Read;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ikv_core::{Storage, StorageOptions, StoreConfig};
use ikv_writer::WriterOptions;
use ikv_writer::service::auth::{generate_passkey, hash_passkey, load_accounts};
use ikv_writer::service::{ServiceState, run_lambda, serve};

#[derive(Parser)]
#[command(
    name = "ikv-writer",
    version,
    about = "The ikv writer service and its tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args, Clone)]
struct StorageArgs {
    /// Storage root: s3://bucket/prefix, file:///abs/dir or memory://
    #[arg(long, env = "IKV_STORAGE_URL")]
    storage_url: String,
}

#[derive(clap::Args, Clone)]
struct AccountArgs {
    /// JSON file with the accounts allowed to write (see docs/API.md)
    #[arg(long, env = "IKV_ACCOUNTS_FILE")]
    accounts_file: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API on a local address
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        accounts: AccountArgs,
    },
    /// Serve the HTTP API under the AWS Lambda runtime (the default when AWS_LAMBDA_RUNTIME_API is set)
    Lambda {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        accounts: AccountArgs,
    },
    /// Create a store (never overwrites an existing one)
    CreateStore {
        #[command(flatten)]
        storage: StorageArgs,
        #[arg(long)]
        store: String,
        #[arg(long)]
        primary_key: String,
        #[arg(long)]
        partitioning_key: Option<String>,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
    },
    /// Print the passkey_hash for a passkey read from standard input, or generate a passkey
    HashPasskey {
        /// Generate a random passkey and print it with its hash
        #[arg(long)]
        generate: bool,
    },
}

fn writer_storage(args: &StorageArgs) -> Result<Storage, String> {
    let options = StorageOptions {
        disable_retries: true,
        ..StorageOptions::default()
    };
    Storage::open(&args.storage_url, &options).map_err(|e| e.to_string())
}

fn state(storage: &StorageArgs, accounts: &AccountArgs) -> Result<Arc<ServiceState>, String> {
    Ok(Arc::new(ServiceState::new(
        writer_storage(storage)?,
        load_accounts(accounts.accounts_file.as_deref())?,
        WriterOptions::default(),
    )))
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve {
            listen,
            storage,
            accounts,
        } => {
            let state = state(&storage, &accounts)?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(%addr, storage = %storage.storage_url, "writer service listening");
            println!("ikv-writer listening on http://{addr}");
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            serve(listener, state, shutdown)
                .await
                .map_err(|e| e.to_string())
        }
        Command::Lambda { storage, accounts } => {
            let state = state(&storage, &accounts)?;
            run_lambda(state).await.map_err(|e| e.to_string())
        }
        Command::CreateStore {
            storage,
            store,
            primary_key,
            partitioning_key,
            partitions,
        } => {
            let config = StoreConfig::new(
                &store,
                &primary_key,
                partitioning_key.as_deref(),
                partitions,
            )
            .map_err(|e| e.to_string())?;
            let storage = writer_storage(&storage)?;
            ikv_core::bucket::create_store(&storage, &config)
                .await
                .map_err(|e| e.to_string())?;
            println!("created store {store:?} with {partitions} partition(s)");
            Ok(())
        }
        Command::HashPasskey { generate } => {
            if generate {
                let passkey = generate_passkey();
                println!("passkey:      {passkey}");
                println!("passkey_hash: {}", hash_passkey(&passkey)?);
            } else {
                let mut input = String::new();
                std::io::stdin()
                    .read_to_string(&mut input)
                    .map_err(|e| format!("reading the passkey from standard input: {e}"))?;
                println!("{}", hash_passkey(input.trim_end_matches(['\n', '\r']))?);
            }
            Ok(())
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
        None if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() => Command::Lambda {
            storage: StorageArgs {
                storage_url: std::env::var("IKV_STORAGE_URL").unwrap_or_default(),
            },
            accounts: AccountArgs {
                accounts_file: std::env::var_os("IKV_ACCOUNTS_FILE").map(Into::into),
            },
        },
        None => {
            eprintln!("ikv-writer: no command given; see ikv-writer --help");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ikv-writer: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ikv-writer: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
