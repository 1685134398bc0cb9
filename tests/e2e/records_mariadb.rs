//! The MariaDB record store stays exact through leader kills and a 20-second outage.
//!
//! Concurrent writers post 50,000 generated events (with duplicates inside and across
//! batches, re-posted batches, and retries that reuse the same ids) to all three nodes of a
//! cluster whose data nodes share one throwaway MariaDB database. Meanwhile MariaDB is stopped
//! for 20 s: ingest keeps being acknowledged while the record store is down. The leader is
//! killed four times: while its sink writes normally; during the outage (the next leader
//! finds the store gone); again during the outage (now a node that has never reached the
//! store leads); and while the sink works through the backlog after MariaDB is back. Before
//! the outage a leader is also frozen (SIGSTOP) for 3 s and comes back deposed. When the
//! writers are done and the sink has caught up, SQL run by the test itself (the `mariadb`
//! client, not Tally) must show: every acknowledged event exactly once, nothing never sent,
//! each row as sent, every usage table equal to a `GROUP BY` over `events`, and the
//! in-memory aggregates equal to the usage tables.

use std::time::{Duration, Instant};

use crate::common::records::{
    assert_first_occurrence_wins, assert_records_exact, assert_tampering_is_detected, kill_leader,
    pause_leader, RecordsDb, Workload, WorkloadOpts,
};
use crate::common::{now_ms, Cluster, ClusterOpts};
use tally_protocol::SinkStatus;
use tally_testkit::MariaDb;

/// The tests of this file take turns: the chaos test's timing should not compete for the
/// two cores with the other.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TOTAL_EVENTS: u64 = 50_000;
const OUTAGE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_records_are_exact_through_leader_kills_and_an_outage() {
    let _turn = TURN.lock().await;
    let _module_turn = crate::common::module_turn().await;
    let mut db = tokio::task::block_in_place(MariaDb::start).expect("start MariaDB");
    let opts = ClusterOpts {
        record_store: Some(db.url()),
        // High enough that the outage never refuses ingest here (records_backpressure.rs
        // covers the bound).
        sink_max_backlog_events: Some(200_000),
        // The check compares every in-memory row with the usage tables, in one read.
        max_aggregate_rows: Some(1_000_000),
        ..ClusterOpts::default()
    };
    let (mut cluster, _) = Cluster::start_formed(opts).await;
    let base_ms = now_ms();
    let started = Instant::now();
    let workload = Workload::start(
        cluster.api(),
        WorkloadOpts {
            total: TOTAL_EVENTS,
            rate_per_s: 850.0,
            writers: 4,
            batch: 150..450,
            base_ms,
            seed: 0xdb,
        },
    );

    // Kill 1: a leader whose sink is writing normally.
    workload.wait_acks(0, 15, Duration::from_secs(30)).await;
    kill_leader(&mut cluster, &workload, Duration::from_millis(1500)).await;
    let n = workload.acked_batches();
    workload.wait_acks(n, 10, Duration::from_secs(30)).await;

    // A leader that freezes (SIGSTOP) and comes back deposed, its sink possibly in the
    // middle of a transaction: the cursor check must turn its late write away.
    pause_leader(&cluster, &workload, Duration::from_secs(3)).await;
    let n = workload.acked_batches();
    workload.wait_acks(n, 5, Duration::from_secs(30)).await;

    // The record store goes away for 20 s. Ingest goes on.
    let before_outage = workload.acked_batches();
    tokio::task::block_in_place(|| db.stop()).expect("stop MariaDB");
    let outage_began = Instant::now();
    eprintln!("[test] MariaDB stopped at {:?}", started.elapsed());

    // Kill 2, during the outage: the next leader was connected before the outage and now
    // finds the record store down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = kill_leader(&mut cluster, &workload, Duration::from_millis(1500)).await;
    let sink = wait_for_sink(&cluster, leader, outage_began + OUTAGE, |s| {
        s.detail
            .as_ref()
            .is_some_and(|d| d.last_error.is_some() && d.consecutive_errors >= 2)
    })
    .await
    .unwrap_or_else(|s| panic!("the leader's sink does not report the outage: {s:?}"));
    assert!(
        sink.pending_events > 0,
        "events are acknowledged during the outage, so some must wait: {sink:?}"
    );
    eprintln!("[test] leader {leader} during the outage: sink {sink:?}");

    // Kill 3, still during the outage: now the node restarted while the record store was
    // down leads; it has never reached the store.
    let leader = kill_leader(&mut cluster, &workload, Duration::from_millis(1500)).await;
    let sink = cluster.sink_status(leader).await.unwrap();
    eprintln!("[test] leader {leader} during the outage: sink {sink:?}");

    tokio::time::sleep(OUTAGE.saturating_sub(outage_began.elapsed())).await;
    let during_outage = workload.acked_batches() - before_outage;
    assert!(
        during_outage >= 20,
        "only {during_outage} batches were acknowledged during the 20 s record-store outage"
    );
    tokio::task::block_in_place(|| db.restart()).expect("restart MariaDB");
    let restarted = Instant::now();
    eprintln!(
        "[test] MariaDB restarted after {:?}; {during_outage} batches acknowledged while it was down",
        outage_began.elapsed()
    );

    // Kill 4, while the new sink works through the backlog: its transactions and cursor
    // proposals are cut short, the next leader must carry on from the store's cursor.
    let sink = wait_for_sink(&cluster, leader, restarted + Duration::from_secs(20), |s| {
        s.detail.as_ref().is_some_and(|d| d.transactions > 0)
    })
    .await
    .unwrap_or_else(|s| panic!("the sink did not write within 20 s of MariaDB's return: {s:?}"));
    eprintln!("[test] killing leader {leader} while its sink catches up: {sink:?}");
    kill_leader(&mut cluster, &workload, Duration::from_millis(1500)).await;

    assert!(
        !workload.done_issuing(),
        "the writers ran out of events before the chaos was over; slow them down"
    );
    let outcome = workload.finish(Duration::from_secs(120)).await;
    eprintln!(
        "[test] writers done at {:?}: {}",
        started.elapsed(),
        outcome.summary()
    );
    assert!(
        outcome.unexpected.is_empty(),
        "unexpected answers: {:#?}",
        &outcome.unexpected[..outcome.unexpected.len().min(20)]
    );
    assert_eq!(outcome.attempted.len() as u64, TOTAL_EVENTS);
    assert!(
        outcome.acked.len() as u64 >= TOTAL_EVENTS * 9 / 10,
        "too few events acknowledged for the test to mean much: {}",
        outcome.summary()
    );

    let sink = cluster
        .wait_sink_caught_up(outcome.max_ack_index, Duration::from_secs(120))
        .await;
    eprintln!("[test] sink caught up at {:?}: {sink:?}", started.elapsed());
    cluster.assert_same_state().await;

    let records = RecordsDb::MariaDb(&db);
    let rows = assert_records_exact(&cluster, &records, &outcome, base_ms).await;
    eprintln!(
        "[test] {rows} events stored exactly once; usage tables exact; done at {:?}",
        started.elapsed()
    );
    assert_tampering_is_detected(&records, async |sql| {
        tokio::task::block_in_place(|| db.sql(&format!("USE tally; {sql}"))).expect("tamper");
    })
    .await;
}

/// Polls node `id`'s sink until `ok` holds (returns it) or `until` passes (returns the last
/// sink object seen as the error).
async fn wait_for_sink(
    cluster: &Cluster,
    id: u64,
    until: Instant,
    ok: impl Fn(&SinkStatus) -> bool,
) -> Result<SinkStatus, SinkStatus> {
    let mut sink = SinkStatus::default();
    while Instant::now() < until {
        sink = cluster.sink_status(id).await.unwrap_or_default();
        if ok(&sink) {
            return Ok(sink);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_keeps_the_first_occurrence_of_a_duplicate_id() {
    let _turn = TURN.lock().await;
    let _module_turn = crate::common::module_turn().await;
    let db = tokio::task::block_in_place(MariaDb::start).expect("start MariaDB");
    let opts = ClusterOpts {
        record_store: Some(db.url()),
        // The check compares every in-memory row with the usage tables, in one read.
        max_aggregate_rows: Some(1_000_000),
        ..ClusterOpts::default()
    };
    let (cluster, _) = Cluster::start_formed(opts).await;
    assert_first_occurrence_wins(&cluster, &RecordsDb::MariaDb(&db)).await;
}
