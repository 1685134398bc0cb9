//! `tally-jepsen`: the chaos and failover suite (docs/chaos.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tally_jepsen::elections::ElectionSummary;
use tally_jepsen::nemesis::Kind;
use tally_jepsen::run::{run, RunOptions};

#[derive(Parser)]
#[command(
    name = "tally-jepsen",
    about = "Jepsen-style chaos and failover suite for Tally"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a cluster under faults, check the history, write history.jsonl, results.json and
    /// report.html. Exits 0 only if the history is valid (1: invalid, 2: the run failed).
    Run(RunArgs),
}

#[derive(Parser)]
struct RunArgs {
    /// Faults to inject, comma-separated: kill, pause, partition, sink, clock (or none).
    /// `clock` needs libfaketime (package `faketime`).
    #[arg(long, default_value = "kill,pause,partition,sink")]
    nemesis: String,
    /// Seconds of workload and faults (healing and checking come after).
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Seed of every random choice (faults, targets, workload); random when omitted.
    #[arg(long)]
    seed: Option<u64>,
    /// Where the history, results, report and node data and logs go
    /// (default: jepsen-store/seed-<seed>).
    #[arg(long)]
    store_dir: Option<PathBuf>,
    /// Use this MySQL/MariaDB record store (mysql://...) instead of a throwaway MariaDB.
    #[arg(long)]
    record_store: Option<String>,
    /// Concurrent writers (each posts batches to random nodes).
    #[arg(long, default_value_t = 6)]
    clients: u32,
    /// Concurrent readers (linearizable reads and strong SQL through random nodes).
    #[arg(long, default_value_t = 2)]
    readers: u32,
    /// At most this many new events per second, all writers together. Keeps a long run
    /// inside the dedup window's id cap (2M ids), past which a re-sent id counts again.
    #[arg(long, default_value_t = 3000)]
    rate: u32,
    /// The tally server binary (default: `tally` next to this binary).
    #[arg(long, env = "TALLY_BIN")]
    tally_bin: Option<PathBuf>,
    /// Planted bugs, comma-separated: skip-dedup, ack-before-commit. Needs a tally built
    /// with `--features chaos`; the run is then expected to be invalid.
    #[arg(long, default_value = "")]
    plant: String,
    /// RUST_LOG filter for the nodes' logs.
    #[arg(long, default_value = "info")]
    node_log: String,
}

fn main() {
    let cli = Cli::parse();
    raise_fd_limit();
    let code = match cli.command {
        Command::Run(args) => match run_cmd(args) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("tally-jepsen: error: {e:#}");
                2
            }
        },
    };
    std::process::exit(code);
}

fn run_cmd(args: RunArgs) -> Result<bool> {
    if args.time_limit == 0 || args.time_limit > 86_400 {
        bail!("--time-limit must be between 1 and 86400 seconds");
    }
    if args.clients == 0 || args.clients > 64 {
        bail!("--clients must be between 1 and 64");
    }
    if args.readers > 64 {
        bail!("--readers must be between 0 and 64");
    }
    if args.rate == 0 || args.rate > 100_000 {
        bail!("--rate must be between 1 and 100000 events per second");
    }
    let nemeses = Kind::parse_list(&args.nemesis)?;
    if u64::from(args.rate) * args.time_limit > 1_500_000 {
        eprintln!(
            "tally-jepsen: warning: up to {} events at --rate {}: near the dedup window's 2M-id cap, \
             past which a replayed id counts again by design (docs/chaos.md)",
            u64::from(args.rate) * args.time_limit,
            args.rate
        );
    }
    let plants: Vec<String> = args
        .plant
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for p in &plants {
        if !["skip-dedup", "ack-before-commit"].contains(&p.as_str()) {
            bail!("unknown plant {p:?}: use skip-dedup or ack-before-commit");
        }
    }
    let seed = args
        .seed
        .unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let tally_bin = match args.tally_bin {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("tally"),
    };
    if !tally_bin.is_file() {
        bail!(
            "no tally binary at {}: build it (`cargo build --release`) or pass --tally-bin",
            tally_bin.display()
        );
    }
    let store_dir = args
        .store_dir
        .unwrap_or_else(|| PathBuf::from(format!("jepsen-store/seed-{seed}")));
    let opts = RunOptions {
        nemeses,
        time_limit: Duration::from_secs(args.time_limit),
        seed,
        store_dir: store_dir.clone(),
        record_store: args.record_store,
        clients: args.clients,
        readers: args.readers,
        rate: f64::from(args.rate),
        tally_bin,
        plants,
        node_log: args.node_log,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Ctrl-C drops the run: the cluster and the MariaDB server are killed on the way out.
    let results = rt.block_on(async {
        tokio::select! {
            r = run(opts) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted; the cluster and record store were stopped"),
        }
    })?;
    println!();
    println!(
        "{}  seed {}  {} events acknowledged of {} attempted, {} faults, {:.0} s{}",
        if results.valid { "VALID" } else { "INVALID" },
        results.seed,
        results.stats.events_acked,
        results.stats.events_attempted,
        results.stats.faults,
        results.stats.duration_s,
        heals_line(&results.elections)
    );
    for c in &results.checkers {
        println!(
            "  {:<20} {:<5} {}",
            c.name,
            if c.valid { "ok" } else { "FAIL" },
            c.summary
        );
        for a in &c.anomalies {
            println!("      {}: {}", a.kind, a.description);
        }
        if c.anomaly_count > c.anomalies.len() as u64 {
            println!(
                "      ... and {} more",
                c.anomaly_count - c.anomalies.len() as u64
            );
        }
    }
    println!("  report: {}", store_dir.join("report.html").display());
    Ok(results.valid)
}

/// The summary line's word on partitions: elections per heal and leaders deposed by heals.
fn heals_line(e: &ElectionSummary) -> String {
    if e.partitions == 0 {
        return String::new();
    }
    format!(
        "; {} partitions: {:.2} elections per heal, {} of {} heals deposed a leader",
        e.partitions, e.elections_per_heal, e.heals_that_deposed, e.partitions
    )
}

/// Partitions hold many half-open connections: use the hard limit on open files.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
