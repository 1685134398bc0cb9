//! `tally bench …`: benchmarks that run the real product, in release, and report figures.
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

use anyhow::Result;
use clap::Subcommand;

pub use failover::FailoverArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Kill or stop the leader of a local 3-process cluster under write load, round after
    /// round; report the write gap and verify that no acknowledged event was lost.
    Failover(FailoverArgs),
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Failover(args) => failover::run(args).await,
    }
}
