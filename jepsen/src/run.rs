//! One run: start the record store and the cluster, drive the clients while the nemesis
//! works, heal, wait for quiescence, read the final state, check, and write
//! `history.jsonl`, `results.json` and `report.html`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

use crate::checker::{self, WriteFacts};
use crate::cluster::{Cluster, ClusterOptions, DATA_NODES, NODES};
use crate::elections;
use crate::history::{Op, OpType, Recorder, F};
use crate::nemesis::{Kind, Nemesis};
use crate::results::{Results, Stats};
use crate::store::{self, Store};
use crate::workload::Workload;

/// How long the cluster may take to settle after healing.
const QUIESCE_LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub nemeses: Vec<Kind>,
    pub time_limit: Duration,
    pub seed: u64,
    pub store_dir: PathBuf,
    pub record_store: Option<String>,
    /// Writer processes, then reader processes.
    pub clients: u32,
    pub readers: u32,
    /// New events per second, all writers together (an upper bound).
    pub rate: f64,
    pub tally_bin: PathBuf,
    pub plants: Vec<String>,
    pub node_log: String,
}

/// Marks a directory of node data the harness made, so a later run may replace it.
const MARKER: &str = ".tally-jepsen";

fn prepare_dir(opts: &RunOptions) -> Result<PathBuf> {
    std::fs::create_dir_all(&opts.store_dir)
        .with_context(|| format!("creating {}", opts.store_dir.display()))?;
    let cluster_dir = opts.store_dir.join("cluster");
    if cluster_dir.exists() {
        if !cluster_dir.join(MARKER).exists() {
            bail!(
                "{} exists and was not made by tally-jepsen; choose another --store-dir",
                cluster_dir.display()
            );
        }
        std::fs::remove_dir_all(&cluster_dir)
            .with_context(|| format!("removing the previous run's {}", cluster_dir.display()))?;
    }
    std::fs::create_dir_all(&cluster_dir)?;
    std::fs::write(
        cluster_dir.join(MARKER),
        "node data and logs of a tally-jepsen run\n",
    )?;
    Ok(cluster_dir)
}

pub async fn run(opts: RunOptions) -> Result<Results> {
    let started = Instant::now();
    if opts.nemeses.contains(&Kind::Sink) && opts.record_store.is_some() {
        bail!("the `sink` nemesis stops the record store, so it needs the harness's own MariaDB: drop --record-store or the sink nemesis");
    }
    if opts.nemeses.contains(&Kind::Clock) {
        // Fail before anything starts, with what to install.
        tally_testkit::faketime::library()?;
    }
    let cluster_dir = prepare_dir(&opts)?;
    let mut store = match &opts.record_store {
        Some(url) => Store::external(url)?,
        None => tokio::task::block_in_place(Store::start_owned)?,
    };
    let tag = format!("jp{}-{}", opts.seed, crate::now_ms() / 1000);
    eprintln!(
        "tally-jepsen: seed {}, {} s, nemeses [{}], {} writers + {} readers, run tag {tag}, output in {}",
        opts.seed,
        opts.time_limit.as_secs(),
        opts.nemeses
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(","),
        opts.clients,
        opts.readers,
        opts.store_dir.display()
    );
    if !opts.plants.is_empty() {
        eprintln!(
            "tally-jepsen: PLANTED BUGS in the servers: {}",
            opts.plants.join(", ")
        );
    }
    let mut cluster = Cluster::start(ClusterOptions {
        tally_bin: opts.tally_bin.clone(),
        dir: cluster_dir,
        record_store: store.url(),
        plants: opts.plants.clone(),
        log_filter: opts.node_log.clone(),
        fake_clocks: opts.nemeses.contains(&Kind::Clock),
    })
    .await?;

    let recorder = Recorder::create(&opts.store_dir.join("history.jsonl"), Instant::now())?;
    let nodes: Vec<(u64, String)> = NODES
        .iter()
        .map(|id| (*id, cluster.client_addr(*id).to_string()))
        .collect();
    let workload = Workload::new(nodes, tag.clone(), recorder.clone())?;
    let deadline = Instant::now() + opts.time_limit;
    let mut clients: Vec<_> = (0..opts.clients)
        .map(|c| {
            let rate = opts.rate / f64::from(opts.clients);
            tokio::spawn(workload.clone().writer(c, opts.seed, deadline, rate))
        })
        .collect();
    for r in 0..opts.readers {
        let process = opts.clients + r;
        clients.push(tokio::spawn(
            workload.clone().reader(process, opts.seed, deadline),
        ));
    }
    let running = Arc::new(AtomicBool::new(true));
    let progress = tokio::spawn(progress(
        recorder.clone(),
        deadline,
        opts.time_limit,
        running.clone(),
    ));

    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut nemesis = Nemesis::new(opts.nemeses.clone(), recorder.clone());
    nemesis.probe = Some(workload.clone());
    let mut problems: Vec<(String, String)> = Vec::new();
    let nemesis_result = nemesis
        .run(&mut rng, &mut cluster, &mut store, deadline, &mut problems)
        .await;

    // Heal everything, whatever state the nemesis ended in.
    problems.extend(cluster.unexpected_exits().into_iter().map(|(_, p)| p));
    problems.append(&mut nemesis.findings);
    cluster.reset_clocks()?;
    tokio::task::block_in_place(|| store.heal())?;
    cluster.proxies.heal();
    for id in NODES {
        if !cluster.is_running(id) {
            cluster.restart(id)?;
        }
        cluster.resume(id)?;
    }
    nemesis_result?;
    for c in clients {
        let _ = c.await;
    }
    running.store(false, Ordering::SeqCst);
    let _ = progress.await;
    eprintln!("tally-jepsen: workload done; healed, waiting for the cluster to settle");

    if let Err(e) = quiesce(&cluster).await {
        problems.push(("not-quiescent".into(), e.to_string()));
    }
    problems.extend(cluster.unexpected_exits().into_iter().map(|(_, p)| p));
    nemesis.finish(&cluster).await;

    // Final reads, recorded like any other client's.
    let final_process = opts.clients + opts.readers;
    let mut counts: Vec<(String, Option<u64>)> = Vec::new();
    for id in DATA_NODES {
        let addr = cluster.client_addr(id).to_string();
        let c = workload.read(final_process, (id, addr.clone())).await;
        counts.push((format!("final linearizable read via node {id}"), c));
        let s = workload.sql(final_process, (id, addr)).await;
        counts.push((format!("final strong SQL via node {id}"), s));
    }
    let digests = final_digests(&cluster).await;
    for id in DATA_NODES {
        counts.push((
            format!("replica {id} (local read)"),
            local_count(&cluster, id, &tag, "day").await,
        ));
        // Every event of the run is minutes old: buckets evicted early (retention driven by
        // a wrong ingest time) count below the acknowledged events.
        for granularity in ["hour", "minute"] {
            counts.push((
                format!("replica {id} {granularity} buckets (local read)"),
                local_count(&cluster, id, &tag, granularity).await,
            ));
        }
    }

    let pool = store.connect().await?;
    let ids = store::event_ids(&pool, &tag).await?;
    let usage = store::usage_diffs(&pool).await;
    pool.close().await;
    drop(cluster);

    let history = recorder.finish()?;
    let facts = WriteFacts::from_history(&history);
    let checkers = vec![
        checker::set_full(&tag, &facts, &ids),
        checker::counter(&facts, &counts),
        checker::linearizable_reads(&history, &facts),
        checker::digests(&digests),
        checker::usage(&usage),
        checker::dedup_window(&history),
        checker::runner(&problems),
    ];
    let mut stats = stats(&history, &facts);
    stats.faults = nemesis.injected;
    stats.duration_s = started.elapsed().as_secs_f64();
    let results = Results {
        valid: checkers.iter().all(|c| c.valid),
        seed: opts.seed,
        time_limit_s: opts.time_limit.as_secs(),
        nemeses: opts.nemeses.iter().map(|k| k.name().to_string()).collect(),
        plants: opts.plants.clone(),
        stats,
        checkers,
        elections: elections::summarize(&nemesis.partitions),
        partitions: std::mem::take(&mut nemesis.partitions),
    };
    std::fs::write(
        opts.store_dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(
        opts.store_dir.join("report.html"),
        crate::report::render(&history, &results),
    )?;
    Ok(results)
}

/// Waits until a leader is known, every committed event is in the record store, and both
/// data nodes have applied what the leader committed.
async fn quiesce(cluster: &Cluster) -> Result<()> {
    let deadline = Instant::now() + QUIESCE_LIMIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(leader) = cluster.leader().await {
            if let Some(ls) = cluster.status(leader, Duration::from_secs(2)).await {
                let committed = ls.committed_index.unwrap_or(0);
                let mut settled = true;
                let mut why = Vec::new();
                for id in DATA_NODES {
                    match cluster.status(id, Duration::from_secs(2)).await {
                        Some(s) if s.applied_index >= committed => {}
                        Some(s) => {
                            settled = false;
                            why.push(format!(
                                "node {id} applied {} of {committed}",
                                s.applied_index
                            ));
                        }
                        None => {
                            settled = false;
                            why.push(format!("node {id} does not answer"));
                        }
                    }
                }
                let pending = cluster
                    .status(
                        if leader == crate::cluster::WITNESS {
                            1
                        } else {
                            leader
                        },
                        Duration::from_secs(2),
                    )
                    .await
                    .map(|s| s.sink.pending_events);
                if pending != Some(0) {
                    settled = false;
                    why.push(format!("sink pending {pending:?}"));
                }
                if settled && leader != crate::cluster::WITNESS {
                    return Ok(());
                }
                last = format!("leader {leader}: {}", why.join(", "));
            }
        } else {
            last = "no leader".into();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("cluster did not settle within {QUIESCE_LIMIT:?} after healing: {last}")
}

/// Digests of both data nodes at the same applied index (retried while they differ in
/// index, e.g. while a sink-cursor entry is being applied).
async fn final_digests(cluster: &Cluster) -> BTreeMap<u64, Option<(u64, String)>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut out = BTreeMap::new();
        for id in DATA_NODES {
            out.insert(id, cluster.digest(id).await);
        }
        let indexes: Vec<u64> = out.values().flatten().map(|(i, _)| *i).collect();
        let same = indexes.len() == DATA_NODES.len() && indexes.windows(2).all(|w| w[0] == w[1]);
        if same || Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The run's events counted in node `id`'s own state (`consistency=none`), summed over its
/// buckets of `granularity`.
async fn local_count(cluster: &Cluster, id: u64, tag: &str, granularity: &str) -> Option<u64> {
    let url = format!(
        "http://{}/v1/aggregates?granularity={granularity}&api={tag}&group_by=api_name&consistency=none",
        cluster.client_addr(id)
    );
    let v: Value = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v.get("rows")?
        .as_array()?
        .iter()
        .map(|r| r.get("requests").and_then(Value::as_u64))
        .sum()
}

fn stats(history: &[Op], facts: &WriteFacts) -> Stats {
    let mut s = Stats {
        events_attempted: facts.attempted(),
        events_acked: facts.acked(),
        ..Stats::default()
    };
    for op in history {
        match (op.f, op.kind) {
            (F::StartFault | F::StopFault, _) => {}
            (_, OpType::Invoke) => s.ops += 1,
            (F::Write, OpType::Ok) => s.writes_ok += 1,
            (F::Write, OpType::Fail) => s.writes_fail += 1,
            (F::Write, OpType::Info) => s.writes_info += 1,
            (_, OpType::Ok) => s.reads_ok += 1,
            (_, _) => s.reads_failed += 1,
        }
    }
    s
}

/// A progress bar on a terminal; a line every 10 s otherwise (CI logs).
async fn progress(
    recorder: Recorder,
    deadline: Instant,
    total: Duration,
    running: Arc<AtomicBool>,
) {
    let tty = std::io::stderr().is_terminal();
    let tick = if tty {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(10)
    };
    while running.load(Ordering::SeqCst) {
        tokio::time::sleep(tick).await;
        let left = deadline.saturating_duration_since(Instant::now());
        let done = total.saturating_sub(left).as_secs_f64() / total.as_secs_f64().max(1e-9);
        let (acked, unknown, faults) = recorder.tally();
        let width = 30;
        let filled = ((done * width as f64) as usize).min(width);
        let line = format!(
            "[{}{}] {:>4}/{} s  {acked} events acknowledged, {unknown} writes unknown, {faults} faults{}",
            "#".repeat(filled),
            "-".repeat(width - filled),
            total.saturating_sub(left).as_secs(),
            total.as_secs(),
            if left.is_zero() { "  (healing)" } else { "" }
        );
        let mut err = std::io::stderr();
        if tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
    if tty {
        eprintln!();
    }
}
