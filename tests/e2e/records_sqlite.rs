//! The SQLite record store (the embedded default) stays exact through leader kills.
//!
//! Both data nodes share one SQLite file. Concurrent writers post 20,000 generated events
//! (duplicates inside and across batches, re-posted batches, retries reusing the same ids)
//! to all three nodes while the leader is SIGKILLed and restarted twice, and frozen
//! (SIGSTOP) for 3 s in between, coming back deposed. When the writers
//! are done and the sink has caught up, the test opens the file read-only itself and checks
//! with SQL: every acknowledged event exactly once, nothing never sent, each row as sent,
//! every usage table equal to a `GROUP BY` over `events`, the in-memory aggregates equal to
//! the usage tables.

use std::time::{Duration, Instant};

use crate::common::records::{
    assert_first_occurrence_wins, assert_records_exact, assert_tampering_is_detected, kill_leader,
    pause_leader, RecordsDb, Workload, WorkloadOpts,
};
use crate::common::{now_ms, Cluster, ClusterOpts};

/// The tests of this file take turns: the chaos test's timing should not compete for the
/// two cores with the other.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TOTAL_EVENTS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_records_are_exact_through_leader_kills() {
    let _turn = TURN.lock().await;
    let store_dir = tempfile::Builder::new()
        .prefix("tally-records-")
        .tempdir()
        .unwrap();
    let path = store_dir.path().join("records.db");
    let opts = ClusterOpts {
        record_store: Some(format!("sqlite://{}", path.display())),
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
            rate_per_s: 700.0,
            writers: 4,
            batch: 150..450,
            base_ms,
            seed: 0x5171,
        },
    );

    workload.wait_acks(0, 10, Duration::from_secs(30)).await;
    kill_leader(&mut cluster, &workload, Duration::from_millis(1500)).await;
    let n = workload.acked_batches();
    workload.wait_acks(n, 10, Duration::from_secs(30)).await;
    // A leader that freezes and comes back deposed, its sink maybe holding the write lock.
    pause_leader(&cluster, &workload, Duration::from_secs(3)).await;
    let n = workload.acked_batches();
    workload.wait_acks(n, 5, Duration::from_secs(30)).await;
    kill_leader(&mut cluster, &workload, Duration::from_millis(1500)).await;
    assert!(
        !workload.done_issuing(),
        "the writers ran out of events before the second kill was over; slow them down"
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

    let records = RecordsDb::sqlite(&path).await;
    let rows = assert_records_exact(&cluster, &records, &outcome, base_ms).await;
    eprintln!(
        "[test] {rows} events stored exactly once; usage tables exact; done at {:?}",
        started.elapsed()
    );
    assert_tampering_is_detected(&records, async |sql| {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(Duration::from_secs(10));
        let mut conn = sqlx::ConnectOptions::connect(&options).await.expect("open");
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .expect("tamper");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_first_occurrence_of_a_duplicate_id() {
    let _turn = TURN.lock().await;
    let store_dir = tempfile::Builder::new()
        .prefix("tally-records-")
        .tempdir()
        .unwrap();
    let path = store_dir.path().join("records.db");
    let opts = ClusterOpts {
        record_store: Some(format!("sqlite://{}", path.display())),
        // The check compares every in-memory row with the usage tables, in one read.
        max_aggregate_rows: Some(1_000_000),
        ..ClusterOpts::default()
    };
    let (cluster, _) = Cluster::start_formed(opts).await;
    // The file exists once a data node has connected.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = RecordsDb::sqlite(&path).await;
    assert_first_occurrence_wins(&cluster, &records).await;
}
