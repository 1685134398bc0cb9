//! `tally-bench failover`: how long writes stop when the leader dies or is stopped, and
//! proof that no acknowledged event was lost. See docs/benchmarks.md.
//!
//! One run: start a 2-data + witness cluster of child processes, form it, start the write
//! load, then for each round wait for a steady state, signal the leader (SIGKILL or
//! SIGTERM), watch until writes are acknowledged again, restart the node and wait until it is
//! ready. Finally stop the load and check the record store and the aggregates against every
//! acknowledgement.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use tally_jepsen::checker::{self, WriteFacts};
use tally_raft::RaftTiming;

use crate::cluster::{BenchCluster, Stop, Timings, NODES, WITNESS};
use crate::load::{self, Load, LoadConfig, Outcome, RequestRecord};
use crate::report::{self, Report, RoundTimes, RunInfo, Verification, AFTER_SETTLE, WINDOW};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignalArg {
    Kill,
    Term,
    Both,
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// Rounds per signal.
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// How the leader is stopped: SIGKILL (crash), SIGTERM (planned stop, which hands
    /// leadership over first), or both (alternating, --rounds of each).
    #[arg(long, value_enum, default_value_t = SignalArg::Both)]
    pub signal: SignalArg,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    pub writers: u32,
    /// Target events per second, all writers together.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Events per request.
    #[arg(long, default_value_t = 10)]
    pub batch: u32,
    /// First HTTP port; the nodes use it and the next two (default: free ports).
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Keep the temporary directory (configs, data, node logs, and a timeline of every
    /// request and signal: requests.ndjson, signals.ndjson) and print where it is.
    #[arg(long)]
    pub keep_dir: bool,
    /// [raft] heartbeat_ms of every node (default: the product default).
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// [raft] election_min_ms of every node (the witness derives its shorter lease from it).
    #[arg(long)]
    pub election_min_ms: Option<u64>,
    /// [raft] election_max_ms of every node (the witness derives its shorter lease from it).
    #[arg(long)]
    pub election_max_ms: Option<u64>,
    /// Timeout of one request attempt, in ms.
    #[arg(long, default_value_t = 5000)]
    pub attempt_timeout_ms: u64,
    /// A request still unacknowledged this long after its first attempt is given up
    /// ("failed for good"), in ms.
    #[arg(long, default_value_t = 30_000)]
    pub retry_for_ms: u64,
    /// TALLY_LOG filter of the nodes (their logs go to the run directory).
    #[arg(long, default_value = "info,openraft=info")]
    pub node_log: String,
    /// Print the result as JSON on stdout (the table then goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// How long one round may take to recover before it is recorded as not recovered.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// How long the cluster may take to be ready (again).
const READY_LIMIT: Duration = Duration::from_secs(120);
/// No failed attempt for this long before a signal (bounded by `QUIET_LIMIT`).
const QUIET: Duration = WINDOW;
const QUIET_LIMIT: Duration = Duration::from_secs(30);
/// The load runs at least this long before the first signal (connections set up, a full
/// "before" window).
const WARMUP: Duration = Duration::from_secs(5);
/// A SIGTERMed node gets this long to exit by itself before it is SIGKILLed.
const TERM_EXIT_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

pub async fn run(args: FailoverArgs, tally: PathBuf) -> Result<()> {
    tokio::select! {
        r = run_inner(args, tally) => r,
        _ = crate::shutdown_signal() => {
            // Dropping `run_inner` drops the cluster, which SIGKILLs and reaps every node.
            bail!("interrupted: the bench's nodes were stopped")
        }
    }
}

fn timings(args: &FailoverArgs) -> Result<(Timings, RaftTiming)> {
    let given = Timings {
        heartbeat_ms: args.heartbeat_ms,
        election_min_ms: args.election_min_ms,
        election_max_ms: args.election_max_ms,
    };
    let d = RaftTiming::default();
    let effective = RaftTiming {
        heartbeat_ms: given.heartbeat_ms.unwrap_or(d.heartbeat_ms),
        election_min_ms: given.election_min_ms.unwrap_or(d.election_min_ms),
        election_max_ms: given.election_max_ms.unwrap_or(d.election_max_ms),
    };
    if effective.heartbeat_ms == 0
        || effective.election_min_ms <= effective.heartbeat_ms
        || effective.election_max_ms <= effective.election_min_ms
    {
        bail!(
            "timings must satisfy 0 < heartbeat < election min < election max (got {effective:?})"
        );
    }
    Ok((given, effective))
}

fn plan(args: &FailoverArgs) -> Vec<Stop> {
    let per = args.rounds as usize;
    match args.signal {
        SignalArg::Kill => vec![Stop::Kill; per],
        SignalArg::Term => vec![Stop::Term; per],
        // Alternating, so both see the same cluster age (log size, snapshots).
        SignalArg::Both => (0..per).flat_map(|_| [Stop::Kill, Stop::Term]).collect(),
    }
}

async fn run_inner(args: FailoverArgs, tally: PathBuf) -> Result<()> {
    if args.rounds == 0 || args.writers == 0 || args.rate == 0 || args.batch == 0 {
        bail!("--rounds, --writers, --rate and --batch must be at least 1");
    }
    if args.batch > 1000 || args.writers > 256 {
        bail!("--batch is at most 1000 and --writers at most 256");
    }
    let (given, effective) = timings(&args)?;
    let mut cluster = BenchCluster::start(tally, args.base_port, &given, &args.node_log).await?;
    if args.keep_dir {
        cluster.keep_dir();
    }
    eprintln!("[bench] nodes running in {}", cluster.dir().display());
    cluster.init().await?;
    let (leader, mut term) = cluster.wait_ready_with_leader(READY_LIMIT).await?;
    eprintln!("[bench] cluster formed; leader is node {leader}");

    let load_cfg = LoadConfig {
        writers: args.writers,
        rate: args.rate,
        batch: args.batch,
        attempt_timeout: Duration::from_millis(args.attempt_timeout_ms.max(1)),
        retry_for: Duration::from_millis(args.retry_for_ms.max(1)),
    };
    let epoch = (Instant::now(), SystemTime::now());
    let load = Load::start(load_cfg.clone(), cluster.urls(), epoch.0)?;
    let mut times: Vec<RoundTimes> = Vec::new();
    let outcome = async {
        for (i, stop) in plan(&args).into_iter().enumerate() {
            let t = round(&mut cluster, &load, i, stop, term).await?;
            term = t.term_ready;
            if let Some(prev) = times.last_mut() {
                prev.next_window = t.t0.saturating_sub(WINDOW);
            }
            times.push(t);
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let end = load.now();
    if let Some(last) = times.last_mut() {
        last.next_window = end;
    }
    let skipped = load.skipped();
    eprintln!("[bench] stopping the writers");
    let (records, drained) = load
        .stop(load_cfg.retry_for + Duration::from_secs(10))
        .await;
    if args.keep_dir {
        // For reading next to the node logs: wall-clock times of every request and signal.
        write_timeline(cluster.dir(), epoch.1, &records, &times)?;
    }
    outcome?;
    if !drained {
        bail!("writers did not finish within their retry budget");
    }

    eprintln!("[bench] verifying the record store and the aggregates");
    let verification = verify(&cluster, &records, args.batch).await?;
    let rounds: Vec<_> = times
        .iter()
        .map(|t| report::round_report(t, &records, args.batch))
        .collect();
    let summary = [Stop::Kill, Stop::Term]
        .into_iter()
        .filter_map(|s| report::summarize(s, &rounds))
        .collect();
    let report = Report {
        run: RunInfo {
            date_utc: utc_now(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            build_profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            rounds_per_signal: args.rounds,
            writers: args.writers,
            rate_events_per_s: args.rate,
            batch_events: args.batch,
            heartbeat_ms: effective.heartbeat_ms,
            election_min_ms: effective.election_min_ms,
            election_max_ms: effective.election_max_ms,
            timings_are_defaults: given.heartbeat_ms.is_none()
                && given.election_min_ms.is_none()
                && given.election_max_ms.is_none(),
            attempt_timeout_ms: args.attempt_timeout_ms,
            retry_for_ms: args.retry_for_ms,
            skipped_ticks: skipped,
            dir: args.keep_dir.then(|| cluster.dir().display().to_string()),
        },
        summary,
        verification,
        rounds,
    };
    if args.json {
        eprint!("{}", report.render());
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if !report.verification.ok() {
        bail!("verification failed: acknowledged events were lost or miscounted (see above)");
    }
    Ok(())
}

/// Waits for a steady state: every node ready, one agreed data-node leader, writes being
/// acknowledged and (bounded) no failed attempt for a while. Returns the leader, whether
/// it was quiet, and the term.
async fn wait_steady(cluster: &BenchCluster, load: &Load) -> Result<(u64, bool, u64)> {
    let started = Instant::now();
    loop {
        let (leader, term) = cluster
            .wait_ready_with_leader(READY_LIMIT.saturating_sub(started.elapsed()))
            .await?;
        let acking = load
            .since_last_ack()
            .is_some_and(|d| d < Duration::from_millis(500))
            && load.now() >= WARMUP;
        let quiet = load.since_last_failure().is_none_or(|d| d >= QUIET);
        if acking && (quiet || started.elapsed() >= QUIET_LIMIT) {
            return Ok((leader, quiet, term));
        }
        if started.elapsed() >= READY_LIMIT {
            bail!("writes are not being acknowledged although the cluster reports ready");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn round(
    cluster: &mut BenchCluster,
    load: &Load,
    index: usize,
    stop: Stop,
    term_prev: u64,
) -> Result<RoundTimes> {
    let (old, quiet_before, term_before) = wait_steady(cluster, load).await?;
    let mut scanned = load.finished();
    cluster.signal(old, stop)?;
    let t0 = load.now();
    let mut t = RoundTimes {
        index,
        stop,
        old_leader: old,
        quiet_before,
        term_prev,
        term_before,
        term_ready: term_before,
        t0,
        leader_named: None,
        data_leader_named: None,
        witness_led: false,
        exited: None,
        exit_forced: false,
        restarted: t0,
        ready: None,
        next_window: t0,
    };
    let survivors: Vec<u64> = NODES.into_iter().filter(|id| *id != old).collect();
    let mut first_new_ack: Option<Duration> = None;
    loop {
        let now = load.now();
        if t.exited.is_none() && cluster.try_reap(old)?.is_some() {
            t.exited = Some(now);
        }
        if first_new_ack.is_none() {
            let fresh = load.records_since(scanned);
            scanned += fresh.len();
            first_new_ack = fresh
                .iter()
                .filter(|r| r.acked() && r.start >= t0)
                .map(|r| r.end)
                .min();
        }
        if t.data_leader_named.is_none() {
            for id in &survivors {
                let Ok(v) = cluster.view(*id).await else {
                    continue;
                };
                match v.leader {
                    Some(l) if l != old => {
                        if t.leader_named.is_none() {
                            t.leader_named = Some((load.now(), l));
                        }
                        if l == WITNESS {
                            t.witness_led = true;
                        } else {
                            t.data_leader_named = Some((load.now(), l));
                        }
                    }
                    _ => {}
                }
            }
        }
        let recovered_long_enough = first_new_ack
            .is_some_and(|a| load.now() >= a + AFTER_SETTLE + WINDOW + Duration::from_millis(100));
        if recovered_long_enough && t.exited.is_some() && t.data_leader_named.is_some() {
            break;
        }
        if load.now() >= t0 + RECOVERY_LIMIT {
            eprintln!(
                "[bench] round {}: no recovery within {RECOVERY_LIMIT:?} (ack: {first_new_ack:?}, exited: {:?}, leader: {:?})",
                index + 1,
                t.exited,
                t.data_leader_named
            );
            break;
        }
        if t.exited.is_none() && stop == Stop::Term && load.now() >= t0 + TERM_EXIT_LIMIT {
            eprintln!(
                "[bench] round {}: node {old} did not exit within {TERM_EXIT_LIMIT:?} of SIGTERM; killing it",
                index + 1
            );
            cluster.kill(old);
            t.exit_forced = true;
            t.exited = Some(load.now());
        }
        tokio::time::sleep(POLL).await;
    }
    if t.exited.is_none() {
        cluster.kill(old);
        t.exit_forced = true;
        t.exited = Some(load.now());
    }
    t.restarted = load.now();
    cluster.restart(old).await?;
    let (new_leader, term_ready) = cluster.wait_ready_with_leader(READY_LIMIT).await?;
    t.ready = Some(load.now());
    t.term_ready = term_ready;
    eprintln!(
        "[bench] round {:>2} {}: node {old} → {:?}; gap {}; rejoined in {:.2} s (leader now {new_leader})",
        index + 1,
        stop.name(),
        t.data_leader_named.map(|(_, l)| l),
        first_new_ack.map_or("none".into(), |a| format!("{:.0} ms", report::ms(a - t0))),
        (load.now() - t.restarted).as_secs_f64(),
    );
    Ok(t)
}

/// Checks that every acknowledged event is in the record store, exactly once, and that the
/// data nodes' in-memory aggregates agree with it.
async fn verify(
    cluster: &BenchCluster,
    records: &[RequestRecord],
    batch: u32,
) -> Result<Verification> {
    let mut v = Verification {
        requests: records.len() as u64,
        sent_events: records.len() as u64 * u64::from(batch),
        ..Verification::default()
    };
    let mut max_index = 0;
    for r in records {
        if let Outcome::Acked(index) = r.outcome {
            v.acked_requests += 1;
            max_index = max_index.max(index);
        }
    }
    v.acked_events = v.acked_requests * u64::from(batch);
    for r in records {
        if let Outcome::Rejected(status, m) = &r.outcome {
            v.problems.push(format!(
                "a request was rejected with {status} ({m}): a bench bug"
            ));
            break;
        }
    }

    let (leader, _) = cluster.wait_ready_with_leader(READY_LIMIT).await?;
    let count = sql_retry(
        cluster,
        leader,
        json!({"sql": "SELECT COUNT(*) FROM events", "consistency": "strong"}),
    )
    .await?;
    v.store_count = count["rows"][0][0]
        .as_u64()
        .or_else(|| count["rows"][0][0].as_str().and_then(|s| s.parse().ok()))
        .context("COUNT(*) answer without a number")?;

    // Every id, page by page (the store caps rows per answer), at least as fresh as the
    // last acknowledgement.
    const PAGE: usize = 5000;
    let mut store_ids: Vec<String> = Vec::new();
    let mut after = String::new();
    let pages = v.sent_events as usize / PAGE + 3;
    for _ in 0..pages {
        let answer = sql_retry(
            cluster,
            leader,
            json!({
                "sql": format!(
                    "SELECT event_id FROM events WHERE event_id > '{after}' ORDER BY event_id LIMIT {PAGE}"
                ),
                "min_index": max_index,
            }),
        )
        .await?;
        let rows = answer["rows"].as_array().cloned().unwrap_or_default();
        for row in &rows {
            let id = row[0].as_str().unwrap_or("").to_string();
            after.clone_from(&id);
            store_ids.push(id);
        }
        if rows.len() < PAGE {
            break;
        }
    }
    // The chaos suite's set-full checker: every acknowledged id present, none twice, none
    // unknown, none present that was certainly refused.
    let facts = WriteFacts::from_history(&load::history(records, batch));
    let (set_full, c) = checker::set_full_counted(load::BENCH_API, &facts, &store_ids);
    v.store_ids = c.present;
    v.acked_missing = c.lost;
    v.acked_missing_examples = set_full
        .anomalies
        .iter()
        .filter(|a| a.kind == "lost")
        .take(10)
        .map(|a| a.description.clone())
        .collect();
    v.unknown_ids = c.unexpected;
    v.unacked_but_counted = c.recovered;
    if c.acked != v.acked_events {
        v.problems.push(format!(
            "{} events acknowledged, but the history holds {} acknowledged ids",
            v.acked_events, c.acked
        ));
    }
    for a in &set_full.anomalies {
        v.problems.push(format!("{}: {}", a.kind, a.description));
    }
    if set_full.anomaly_count > set_full.anomalies.len() as u64 {
        v.problems.push(format!(
            "… {} set-full anomalies in all",
            set_full.anomaly_count
        ));
    }
    if v.store_count != c.rows {
        v.problems.push(format!(
            "COUNT(*) says {} but {} ids were listed",
            v.store_count, c.rows
        ));
    }
    verify_state(cluster, leader, &mut v).await?;
    Ok(v)
}

/// The in-memory aggregates of both data nodes must count what the store holds, and their
/// digests must agree once they have applied the same index.
async fn verify_state(cluster: &BenchCluster, leader: u64, v: &mut Verification) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let data_nodes: Vec<u64> = NODES.into_iter().filter(|id| *id != WITNESS).collect();
    let mut digests: BTreeMap<u64, (u64, String)>;
    loop {
        digests = BTreeMap::new();
        for id in &data_nodes {
            if let Ok((200, d)) = cluster.get(*id, "/v1/state/digest").await {
                digests.insert(
                    *id,
                    (
                        d["applied_index"].as_u64().unwrap_or(0),
                        d["digest"].as_str().unwrap_or("").to_string(),
                    ),
                );
            }
        }
        let indexes: HashSet<u64> = digests.values().map(|(i, _)| *i).collect();
        if digests.len() == data_nodes.len() && indexes.len() == 1 {
            // The chaos suite's digest checker, once both have applied the same index.
            let answered = digests
                .iter()
                .map(|(id, d)| (*id, Some(d.clone())))
                .collect();
            let result = checker::digests(&answered);
            v.digests_agree = Some(result.valid);
            for a in &result.anomalies {
                v.problems.push(format!("{}: {}", a.kind, a.description));
            }
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let query = format!(
        "/v1/aggregates?granularity=day&api={}&group_by=api_name",
        load::BENCH_API
    );
    for id in &data_nodes {
        let path = if *id == leader {
            format!("{query}&consistency=linearizable")
        } else {
            query.clone()
        };
        let (status, body) = cluster.get(*id, &path).await?;
        if status != 200 {
            v.problems
                .push(format!("GET {path} on node {id}: {status} {body}"));
            continue;
        }
        let total: u64 = body["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["requests"].as_u64().unwrap_or(0))
            .sum();
        v.aggregate_requests.insert(*id, total);
        if total != v.store_count {
            v.problems.push(format!(
                "node {id}'s aggregates count {total} requests, the record store {}",
                v.store_count
            ));
        }
    }
    Ok(())
}

/// `POST /v1/sql`, retried (bounded) while the cluster answers 503.
async fn sql_retry(cluster: &BenchCluster, node: u64, body: Value) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let last = match cluster.post(node, "/v1/sql", &body).await {
            Ok((200, answer)) => return Ok(answer),
            Ok((503, answer)) => format!("503 {answer}"),
            Ok((status, answer)) => bail!("{body} answered {status}: {answer}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("{body} kept failing: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Writes `requests.ndjson` (one line per request) and `signals.ndjson` (one line per
/// round) into `dir`, with UTC wall-clock times in ms, to be read next to the node logs.
fn write_timeline(
    dir: &std::path::Path,
    epoch: SystemTime,
    records: &[RequestRecord],
    times: &[RoundTimes],
) -> Result<()> {
    use std::io::Write as _;
    let wall = |d: Duration| {
        (epoch + d)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_millis() as u64)
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("requests.ndjson"))?);
    for r in records {
        let outcome = match &r.outcome {
            Outcome::Acked(index) => json!({"acked": index}),
            Outcome::FailedForGood => json!("failed_for_good"),
            Outcome::Rejected(status, m) => json!({"rejected": status, "message": m}),
        };
        let failures: Vec<Value> = r
            .failures
            .iter()
            .map(|(node, f)| json!([node + 1, f.label()]))
            .collect();
        let line = json!({
            "writer": r.writer,
            "seq": r.seq,
            "start_ms": wall(r.start),
            "end_ms": wall(r.end),
            "attempts": r.attempts,
            "outcome": outcome,
            "failures": failures,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("signals.ndjson"))?);
    for t in times {
        let line = json!({
            "round": t.index + 1,
            "signal": t.stop.name(),
            "node": t.old_leader,
            "signal_ms": wall(t.t0),
            "restart_ms": wall(t.restarted),
            "ready_ms": t.ready.map(wall),
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

/// `YYYY-MM-DD HH:MM UTC`, without a date library.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_alternates_signals() {
        let args = FailoverArgs::parse_from_for_test(&["--rounds", "2"]);
        assert_eq!(
            plan(&args),
            vec![Stop::Kill, Stop::Term, Stop::Kill, Stop::Term]
        );
    }

    #[test]
    fn timings_must_be_ordered() {
        let args = FailoverArgs::parse_from_for_test(&["--heartbeat-ms", "600"]);
        assert!(timings(&args).is_err());
        let args = FailoverArgs::parse_from_for_test(&[
            "--heartbeat-ms",
            "50",
            "--election-min-ms",
            "250",
            "--election-max-ms",
            "400",
        ]);
        let (_, t) = timings(&args).unwrap();
        assert_eq!(
            (t.heartbeat_ms, t.election_min_ms, t.election_max_ms),
            (50, 250, 400)
        );
    }

    impl FailoverArgs {
        fn parse_from_for_test(flags: &[&str]) -> FailoverArgs {
            #[derive(clap::Parser)]
            struct Wrap {
                #[command(flatten)]
                args: FailoverArgs,
            }
            let argv = std::iter::once("bench").chain(flags.iter().copied());
            <Wrap as clap::Parser>::parse_from(argv).args
        }
    }
}
