//! `hexflow`: the server binary.
//!
//! * `hexflow serve [--config FILE] [--data-dir DIR] [--listen ADDR]`: runs the service.
//! * `hexflow token DEVICE_ID [--data-dir DIR]`: prints a device token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hexflow::config::Config;
use hexflow::server::{Server, print_paths};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// hexflow: GPS fixes over QUIC into H3-indexed Parquet, with silence detection.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (embedded defaults: ./data, 127.0.0.1:4433, a generated dev CA).
    Serve {
        /// TOML config file (see config/hexflow.toml for every key).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides server.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// UDP listen address (overrides server.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Print the token of a device, minted from the server's key (created if missing).
    Token {
        /// Device id, 1..=9223372036854775807.
        device_id: u64,
        /// Data directory holding secret/token.key (overrides server.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML config file (for server.data_dir).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load_config(
    path: Option<&PathBuf>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<Config> {
    let mut cfg = Config::load(path.map(PathBuf::as_path), std::env::vars())?;
    if let Some(d) = data_dir {
        cfg.server.data_dir = d;
    }
    if let Some(l) = listen {
        cfg.server.listen = l;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Token {
            device_id,
            data_dir,
            config,
        } => {
            let cfg = load_config(config.as_ref(), data_dir, None)?;
            anyhow::ensure!(
                ingest::auth::is_valid_device_id(device_id),
                "device id must be in 1..=9223372036854775807, got {device_id}"
            );
            let path = hexflow::secret::key_path(&cfg.server.data_dir);
            let (key, created) = hexflow::secret::load_or_generate(&path)?;
            if created {
                eprintln!("created token key {}", path.display());
            }
            println!("{}", key.mint(device_id));
            Ok(())
        }
        Command::Serve {
            config,
            data_dir,
            listen,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let cfg = load_config(config.as_ref(), data_dir, listen)?;
            if !cfg.storage.wal_fsync {
                tracing::warn!(
                    "storage.wal_fsync = false: UNSAFE benchmark mode, acks are NOT durable"
                );
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("hexflow-io")
                .build()
                .context("starting the tokio runtime")?;
            rt.block_on(serve(cfg))
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let server = Server::start(&cfg, Arc::new(hexflow::SystemClock)).await?;
    print_paths(server.paths(), server.local_addr());
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight batches and flushing");
    server.shutdown().await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
