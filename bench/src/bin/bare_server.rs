//! `bare-server`: the server half of the bare-quinn baseline (`bench::baseline`): quinn with
//! hexflow's transport settings, a self-signed certificate, one task per connection that
//! answers every request with an ACK at once. Prints `listening on ADDR` when ready and
//! stops by itself after `--exit-after-s`, or on SIGTERM / SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bench::baseline::{self, ConnCounter, TransportSettings};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Most connections `--connections-max` may allow.
const CONNECTIONS_MAX_MAX: usize = 10_000_000;
/// Longest life `--exit-after-s` may give the server (one day).
const EXIT_AFTER_S_MAX: u64 = 86_400;

/// `bare-server`: quinn with hexflow's transport pattern and no hexflow logic.
#[derive(Debug, Parser)]
#[command(name = "bare-server", version, about, long_about = None)]
struct Args {
    /// UDP address to listen on (port 0: any free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the self-signed certificate (PEM) here, for `bare-client --ca`.
    #[arg(long)]
    cert_out: PathBuf,
    /// Connections open at once; more are refused at the QUIC level.
    #[arg(long, default_value_t = 1_000_000)]
    connections_max: usize,
    /// Exit after this many seconds whatever happens.
    #[arg(long, default_value_t = 3_600)]
    exit_after_s: u64,
    /// QUIC per-stream receive window [default: hexflow's].
    #[arg(long)]
    stream_receive_window_bytes: Option<u32>,
    /// QUIC per-connection receive window [default: hexflow's].
    #[arg(long)]
    receive_window_bytes: Option<u32>,
    /// QUIC per-connection send window [default: hexflow's].
    #[arg(long)]
    send_window_bytes: Option<u32>,
    /// QUIC idle timeout [default: hexflow's].
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    bench::init_logging();
    anyhow::ensure!(
        (1..=CONNECTIONS_MAX_MAX).contains(&args.connections_max),
        "--connections-max {} is outside 1..={CONNECTIONS_MAX_MAX}",
        args.connections_max
    );
    anyhow::ensure!(
        (1..=EXIT_AFTER_S_MAX).contains(&args.exit_after_s),
        "--exit-after-s {} is outside 1..={EXIT_AFTER_S_MAX}",
        args.exit_after_s
    );
    let d = TransportSettings::default();
    let transport = TransportSettings {
        stream_receive_window_bytes: args
            .stream_receive_window_bytes
            .unwrap_or(d.stream_receive_window_bytes),
        receive_window_bytes: args.receive_window_bytes.unwrap_or(d.receive_window_bytes),
        send_window_bytes: args.send_window_bytes.unwrap_or(d.send_window_bytes),
        idle_timeout_ms: args.idle_timeout_ms.unwrap_or(d.idle_timeout_ms),
    };
    let (chain, key, pem) = baseline::self_signed()?;
    std::fs::write(&args.cert_out, pem)
        .with_context(|| format!("writing {}", args.cert_out.display()))?;
    let config = baseline::server_config(chain, key, &transport)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bare-io")
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(serve(config, &args))
}

async fn serve(config: quinn::ServerConfig, args: &Args) -> anyhow::Result<()> {
    let endpoint = baseline::server_endpoint(config, args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    println!("listening on {}", endpoint.local_addr()?);
    let counter = Arc::new(ConnCounter::default());
    let mut term = signal(SignalKind::terminate())?;
    let stop = tokio::time::sleep(Duration::from_secs(args.exit_after_s));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Some(slot) = counter.try_acquire(args.connections_max) else {
                    incoming.refuse();
                    continue;
                };
                tokio::spawn(async move {
                    let _slot = slot;
                    let served = match incoming.await {
                        Ok(conn) => baseline::serve_connection(conn).await,
                        Err(e) => Err(e.into()),
                    };
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "connection ended");
                    }
                });
            }
            () = &mut stop => break,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    endpoint.close(0u32.into(), b"server stops");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    Ok(())
}
