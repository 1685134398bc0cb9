//! The record store on SQLite, the embedded default: every shared scenario on a fresh
//! database file, plus what is special to SQLite (paths, WAL readers, the 2^63 cap).

mod records_common;

use std::time::{Duration, Instant};

use records_common::*;
use serde_json::json;
use tally_analytics::Event;
use tally_storage::records::{Dialect, QueryLimits, RecordError, RecordStore};

/// A fresh database file in a temp dir (kept alive by the returned guard).
fn fresh() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("records.db").display());
    assert!(url.starts_with("sqlite:///"));
    (dir, url)
}

#[tokio::test]
async fn migrations_are_idempotent_sqlite() {
    let (_dir, url) = fresh();
    migrations_are_idempotent(&url).await;
}

#[tokio::test]
async fn write_inserts_each_event_once_sqlite() {
    let (_dir, url) = fresh();
    write_inserts_each_event_once(&url).await;
}

#[tokio::test]
async fn stale_cursor_changes_nothing_sqlite() {
    let (_dir, url) = fresh();
    stale_cursor_changes_nothing(&url).await;
}

#[tokio::test]
async fn concurrent_writers_one_wins_sqlite() {
    let (_dir, url) = fresh();
    concurrent_writers_one_wins(&url).await;
}

#[tokio::test]
async fn usage_equals_group_by_sqlite() {
    let (_dir, url) = fresh();
    usage_equals_group_by(&url).await;
}

#[tokio::test]
async fn values_round_trip_and_ids_are_case_sensitive_sqlite() {
    let (_dir, url) = fresh();
    values_round_trip_and_ids_are_case_sensitive(&url).await;
}

#[tokio::test]
async fn rejected_statements_change_nothing_sqlite() {
    let (_dir, url) = fresh();
    rejected_statements_change_nothing(&url).await;
}

#[tokio::test]
async fn accepted_queries_run_sqlite() {
    let (_dir, url) = fresh();
    accepted_queries_run(&url).await;
}

#[tokio::test]
async fn read_only_transaction_refuses_writes_sqlite() {
    let (_dir, url) = fresh();
    read_only_transaction_refuses_writes(&url).await;
}

const COUNT_TO_A_BILLION: &str = "WITH RECURSIVE c(n) AS \
     (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000000000) SELECT COUNT(*) FROM c";

#[tokio::test]
async fn long_query_is_cancelled_sqlite() {
    let (_dir, url) = fresh();
    long_query_is_cancelled(&url, COUNT_TO_A_BILLION).await;
}

#[tokio::test]
async fn row_cap_and_columns_sqlite() {
    let (_dir, url) = fresh();
    let types = [
        "TEXT", "INTEGER", "INTEGER", "INTEGER", "INTEGER", "INTEGER", "TEXT",
    ];
    row_cap_and_columns(&url, &types).await;
}

#[tokio::test]
async fn json_mapping_sqlite() {
    let (_dir, url) = fresh();
    json_mapping(&url).await;
}

/// `sqlite://relative/path` is relative to the working directory, and missing
/// directories are created; unknown schemes and in-memory databases are refused clearly.
#[tokio::test]
async fn urls() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/records.db");
    let store = connect(&format!("sqlite://{}", nested.display())).await;
    assert_eq!(store.dialect(), Dialect::Sqlite);
    assert!(nested.exists());
    let mode = scalar(&store, "SELECT journal_mode FROM pragma_journal_mode").await;
    assert_eq!(mode, json!("wal"));

    for (url, needle) in [
        ("postgres://u:secret@h/db", "unknown scheme"),
        ("sqlite://", "give a database file path"),
        ("sqlite::memory:", "in-memory"),
        ("http://x", "unknown scheme"),
    ] {
        let err = RecordStore::connect(url).await.unwrap_err();
        assert!(
            matches!(err, RecordError::InvalidUrl { .. }),
            "{url}: {err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(needle), "{url}: {message}");
        assert!(!message.contains("secret"), "{message}");
    }
}

/// A runaway reader does not hold up the sink: WAL readers never block the writer.
#[tokio::test]
async fn runaway_reader_does_not_block_the_writer() {
    let (_dir, url) = fresh();
    let store = connect(&url).await;
    let reader = store.clone();
    let limits = QueryLimits {
        timeout: Duration::from_secs(3),
        max_rows: 10,
        max_bytes: 1 << 20,
    };
    let running =
        tokio::spawn(async move { reader.query_read_only(COUNT_TO_A_BILLION, limits).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    for i in 0..5u64 {
        let events = sample_events(50, 100 + i);
        store.write(batch(i, i + 1, i + 1, &events)).await.unwrap();
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "writes took {took:?} beside a reader"
    );
    assert!(!running.is_finished(), "the reader should still be running");
    assert!(matches!(
        running.await.unwrap(),
        Err(RecordError::QueryTimeout(_))
    ));
    assert_eq!(count_events(&store).await, 250);
}

/// SQLite's INTEGER is signed: values above 2^63-1 are stored as 2^63-1 and sums saturate
/// there (documented in docs/sql.md); nothing fails.
#[tokio::test]
async fn huge_values_are_capped_at_i64_max() {
    let (_dir, url) = fresh();
    let store = connect(&url).await;
    let event = |id: &str, latency: u64| Event {
        event_id: id.into(),
        ts_ms: 1_700_006_400_000,
        api_name: "big".into(),
        api_version: "v1".into(),
        response_code: Some(200),
        response_time_ms: Some(latency),
        response_size: Some(latency),
        ..Event::default()
    };
    let events = [
        event("a", u64::MAX),
        event("b", u64::MAX - 1),
        event("c", 5),
    ];
    store.write(batch(0, 1, 1, &events)).await.unwrap();
    let max = json!(i64::MAX);
    let row = rows(
        &store,
        "SELECT latency_count, latency_sum_ms, latency_min_ms, latency_max_ms, bytes_sum \
         FROM usage_day",
    )
    .await
    .remove(0);
    assert_eq!(
        row,
        vec![json!(3), max.clone(), json!(5), max.clone(), max.clone()]
    );
    let stored = scalar(
        &store,
        "SELECT response_time_ms FROM events WHERE event_id = 'a'",
    )
    .await;
    assert_eq!(stored, max);
}

#[tokio::test]
async fn documented_examples_run_sqlite() {
    let (_dir, url) = fresh();
    documented_examples_run(&url).await;
}

#[tokio::test]
async fn byte_budget_bounds_answers_sqlite() {
    let (_dir, url) = fresh();
    // printf with a width is allowed; SQLite's length limit on read connections stops it.
    byte_budget_bounds_answers(&url, "SELECT printf('%.*c', 1000000000, 'x')").await;
    let store = connect(&url).await;
    for sql in [
        "SELECT length(replace(hex(printf('%.*c', 200000, 'x')), '7', '77777'))",
        "SELECT group_concat(printf('%.*c', 100000, 'x')) FROM events",
    ] {
        match store.query_read_only(sql, LIMITS).await {
            Err(RecordError::TooLarge(_)) => {}
            other => panic!("{sql}: {other:?}"),
        }
    }
    // Too many result columns is the engine's clear refusal.
    let wide = format!("SELECT {}", vec!["1"; 200].join(", "));
    match store.query_read_only(&wide, LIMITS).await {
        Err(RecordError::Query(message)) => assert!(message.contains("columns"), "{message}"),
        other => panic!("200 columns: {other:?}"),
    }
}

#[tokio::test]
async fn concurrency_is_bounded_sqlite() {
    let (_dir, url) = fresh();
    concurrency_is_bounded(&url, COUNT_TO_A_BILLION).await;
}
