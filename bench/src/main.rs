//! `tally-bench`: benchmarks that run the real product, in release, and report figures
//! (docs/benchmarks.md).
//!
//! Speed targets live here, never in timed tests. Each benchmark starts what it
//! measures itself, on loopback, and cleans up every process it started.
//!
//! * [`failover`]: how long writes stop when the leader dies (SIGKILL) or is stopped
//!   (SIGTERM), and whether any acknowledged event is lost.

mod cluster;
mod failover;
mod load;
mod report;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tally-bench",
    version,
    about = "Benchmarks of Tally that start their own local cluster (build with --release)"
)]
struct Cli {
    /// The tally server binary the benchmark starts (default: `tally` next to this binary).
    #[arg(long, global = true, env = "TALLY_BIN")]
    tally: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Kill or stop the leader of a local 3-process cluster under write load, round after
    /// round; report the write gap and verify that no acknowledged event was lost.
    Failover(failover::FailoverArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let tally = tally_binary(cli.tally)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Failover(args) => failover::run(args, tally).await,
        }
    })
}

/// `--tally`, or the `tally` binary next to this one (both are built by
/// `cargo build --release --workspace --bins`).
fn tally_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("tally"),
    };
    if !path.is_file() {
        bail!(
            "no tally binary at {}: build it (`cargo build --release --workspace --bins`) or pass --tally",
            path.display()
        );
    }
    Ok(path)
}

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
