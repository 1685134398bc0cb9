//! `tally`: the Tally node binary and its command-line tools.
//!
//! `serve` runs one node from a TOML file (docs/architecture.md#configuration); `demo` runs a local two-data-node +
//! witness cluster with sample traffic; `cluster` and `post` talk to a running node.

mod client;
mod config;
mod demo;
mod fds;
mod serve;
mod token;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about = "Raft-replicated API analytics: two data nodes plus a witness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node.
    Serve(Box<config::ServeArgs>),
    /// Run a local 2-data + witness cluster with sample traffic.
    Demo(demo::DemoArgs),
    /// Form the cluster, show its status, change its members or hand leadership over.
    #[command(subcommand)]
    Cluster(client::ClusterCommand),
    /// Post events from an NDJSON file or stdin.
    Post(client::PostArgs),
    /// Run one read-only SQL query against the record store.
    Sql(client::SqlArgs),
    /// Make access tokens for the [auth] section.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
                .unwrap_or_else(|_| default_filter(&cli.command).into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::serve(args.resolve()?).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::Cluster(cmd) => client::cluster(cmd).await,
            Command::Post(args) => client::post(args).await,
            Command::Sql(args) => client::sql(args).await,
            Command::Token(cmd) => token::run(cmd),
        }
    })
}

fn default_filter(cmd: &Command) -> &'static str {
    match cmd {
        // The demo prints its own story; only problems from the nodes.
        Command::Demo(_) => "warn,openraft=error",
        Command::Serve(_) => "info,openraft=warn",
        _ => "warn",
    }
}
