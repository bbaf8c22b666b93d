//! `hexflow`: the server binary.
//!
//! * `hexflow serve [--config FILE] [--data-dir DIR] [--listen ADDR]`: runs the service.
//! * `hexflow token DEVICE_ID [--data-dir DIR]`: prints a device token.
//! * `hexflow lake status|compact|vacuum|erase --device ID [--config FILE] [--data-dir DIR]`:
//!   the Delta tables (docs/STORAGE.md).
//! * `hexflow policy when --policy NAME --last-fix RFC3339 [--device ID] [--days] [--config FILE]`:
//!   prints when the warning and the expiry fire (`never` when the device is exempt).
//! * `hexflow calendar check [--config FILE]`: lists the calendars' coverage and status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hexflow::config::Config;
use hexflow::server::{Server, print_paths};

mod silence_cli;

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
    /// Print a device's token: version 2 (key id, issue time, expiry `auth.token_ttl_s`)
    /// from the newest key in <data-dir>/secret/ (created if missing), or with --v1 the
    /// legacy token that never expires. --rotate adds a new signing key instead.
    Token(TokenArgs),
    /// Ask the silence policies questions (see docs/SILENCE.md).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Check the working-day calendars (see docs/SILENCE.md, "Calendar files").
    Calendar {
        #[command(subcommand)]
        command: CalendarCommand,
    },
    /// Inspect and maintain the Delta tables (see docs/STORAGE.md, "Operating the lake").
    Lake {
        #[command(subcommand)]
        command: LakeCommand,
        /// TOML config file.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Data directory (overrides server.data_dir).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum CalendarCommand {
    /// List every calendar under silence.calendars_dir with its coverage and each year's
    /// status; exit status 2 when a coverage ends within 60 days (or has ended).
    Check {
        /// TOML config file (for silence.calendars_dir).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum LakeCommand {
    /// Tables, versions, files, sizes, rows, oldest and newest data.
    Status,
    /// Merge small files now (safe while the server runs).
    Compact {
        /// Also merge today's files and files younger than lake.compact_min_file_age_ms.
        #[arg(long)]
        all: bool,
    },
    /// Delete superseded files past lake.superseded_grace_ms, untracked files and old log.
    Vacuum {
        /// Delete superseded files now, without the grace period.
        #[arg(long)]
        now: bool,
    },
    /// Erase every row of one device (run with the server stopped).
    Erase {
        /// Device id, 1..=9223372036854775807.
        #[arg(long)]
        device: u64,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Print when the warning and the expiry fire for a device whose newest fix is at
    /// --last-fix: `warning: <RFC3339>` and `expiry: <RFC3339>` lines, `never` when exempt.
    When {
        /// Policy name (`default` is built from silence.warning_after_s/expiry_after_s).
        #[arg(long)]
        policy: String,
        /// Time of the device's newest fix, RFC 3339 (e.g. 2026-05-01T18:00:00+02:00).
        #[arg(long)]
        last_fix: String,
        /// Check this device's exemptions too, exactly as the server does (a window in force
        /// when a threshold would fire moves it after the window's end; a permanent one
        /// prints `never`).
        #[arg(long)]
        device: Option<u64>,
        /// Also list the calendar days each working-day threshold counted, with their kind
        /// (working, weekend, holiday, transferred working day).
        #[arg(long)]
        days: bool,
        /// TOML config file (policies, groups, exemptions, calendars).
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

/// `hexflow token`'s arguments.
#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// Device id, 1..=9223372036854775807 (not with --rotate).
    #[arg(required_unless_present = "rotate")]
    device_id: Option<u64>,
    /// Mint a version-1 token (no expiry, revocable only by rotating token.key).
    #[arg(long, conflicts_with = "rotate")]
    v1: bool,
    /// Validity in seconds (overrides auth.token_ttl_s).
    #[arg(long, conflicts_with_all = ["v1", "rotate"])]
    ttl_s: Option<u64>,
    /// Also print the device's confirm secret (hex) on a second line: with a version-2
    /// token it signs CONFIRMs and never travels; give it to the device with the token.
    #[arg(long, conflicts_with = "rotate")]
    confirm_secret: bool,
    /// Create the next token key (it signs from now on; older keys keep verifying until
    /// their token-<id>.key file is removed) and print its id.
    #[arg(long)]
    rotate: bool,
    /// Data directory holding secret/ (overrides server.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML config file (for server.data_dir and [auth]).
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Lake {
            command,
            config,
            data_dir,
        } => lake(command, &load_config(config.as_ref(), data_dir, None)?),
        Command::Token(args) => token_command(args),
        Command::Policy {
            command:
                PolicyCommand::When {
                    policy,
                    last_fix,
                    device,
                    days,
                    config,
                },
        } => {
            let cfg = load_config(config.as_ref(), None, None)?;
            print!(
                "{}",
                silence_cli::policy_when(&cfg.silence, &policy, &last_fix, device, days)?
            );
            Ok(())
        }
        Command::Calendar {
            command: CalendarCommand::Check { config },
        } => {
            let cfg = load_config(config.as_ref(), None, None)?;
            let now_s = sys::Clock::now_ms(&hexflow::SystemClock) / 1000;
            let (report, ok) = silence_cli::calendar_check(&cfg.silence, now_s)?;
            print!("{report}");
            if !ok {
                std::process::exit(2);
            }
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

/// `hexflow token ID`: prints a v1 token for the device (creating the token key on first
/// use).
/// `hexflow token`: mints a token, or with --rotate adds a signing key.
fn token_command(args: TokenArgs) -> anyhow::Result<()> {
    let cfg = load_config(args.config.as_ref(), args.data_dir, None)?;
    let ask = TokenRequest {
        v1: args.v1,
        ttl_s: args.ttl_s.unwrap_or(cfg.auth.token_ttl_s),
        confirm_secret: args.confirm_secret,
    };
    match args.device_id {
        Some(id) if !args.rotate => token(id, &ask, &cfg),
        _ => rotate_key(&cfg),
    }
}

/// What `hexflow token` is asked to print.
struct TokenRequest {
    v1: bool,
    ttl_s: u64,
    confirm_secret: bool,
}

fn token(device_id: u64, ask: &TokenRequest, cfg: &Config) -> anyhow::Result<()> {
    let device_id = fix::DeviceId::try_from(device_id)?;
    // The bound of auth.token_ttl_s, stated once in AuthConfig.
    hexflow::identity::AuthConfig {
        token_ttl_s: ask.ttl_s,
        ..cfg.auth.clone()
    }
    .validate()?;
    let data_dir = &cfg.server.data_dir;
    let fs = &sys::fs::RealFs;
    let (ring, created) = hexflow::identity::load_ring(fs, data_dir, true)?;
    for path in created {
        eprintln!("created token key {}", path.display());
    }
    let token = if ask.v1 {
        let legacy = hexflow::secret::load(fs, &hexflow::secret::key_path(data_dir))?;
        legacy.mint(device_id)
    } else {
        let now_s = u64::try_from(hexflow::Clock::now_ms(&hexflow::SystemClock) / 1000)?;
        ring.mint(device_id, now_s, now_s + ask.ttl_s)
            .ok_or_else(|| anyhow::anyhow!("no version-2 token key"))?
    };
    println!("{token}");
    if ask.confirm_secret {
        let path = hexflow::secret::confirm_key_path(data_dir);
        let master = hexflow::secret::load_or_generate_confirm(fs, &path)?;
        let secret = master.secret(device_id);
        println!(
            "{}",
            secret
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
    }
    Ok(())
}

fn rotate_key(cfg: &Config) -> anyhow::Result<()> {
    let id = hexflow::identity::rotate(&sys::fs::RealFs, &cfg.server.data_dir)?;
    println!("{id}");
    eprintln!("token key {id} signs from now on (restart the server to load it)");
    Ok(())
}

/// `hexflow lake …`: runs one table operation and prints its report.
fn lake(command: LakeCommand, cfg: &Config) -> anyhow::Result<()> {
    let now_ms = hexflow::Clock::now_ms(&hexflow::SystemClock);
    let out = match command {
        LakeCommand::Status => hexflow::lake_cli::status(cfg, now_ms)?,
        LakeCommand::Compact { all } => hexflow::lake_cli::compact(cfg, all, now_ms)?,
        LakeCommand::Vacuum { now } => hexflow::lake_cli::vacuum(cfg, now, now_ms)?,
        LakeCommand::Erase { device } => {
            let device = fix::DeviceId::try_from(device)?;
            hexflow::lake_cli::erase(cfg, device, now_ms)?
        }
    };
    print!("{out}");
    Ok(())
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
