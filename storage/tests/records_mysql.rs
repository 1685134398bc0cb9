//! The record store on a real, throwaway MariaDB (tally-testkit): every shared scenario,
//! plus what is special to MySQL/MariaDB (collation, the key-hash primary key, unsigned
//! 64-bit values, server-side timeouts, an outage and restart).
//!
//! Never skipped: without `mariadbd` these tests fail with a message that says what to
//! install (`mariadb-server-core mariadb-client-core`; scripts/test.sh installs them).

mod records_common;

use std::time::{Duration, Instant};

use records_common::*;
use serde_json::json;
use tally_analytics::{Event, Granularity};
use tally_storage::records::{Dialect, RecordError, RecordStore};
use tally_testkit::MariaDb;

fn mariadb() -> MariaDb {
    MariaDb::start().unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test]
async fn migrations_are_idempotent_mysql() {
    let db = mariadb();
    migrations_are_idempotent(&db.url()).await;
}

#[tokio::test]
async fn write_inserts_each_event_once_mysql() {
    let db = mariadb();
    write_inserts_each_event_once(&db.url()).await;
}

#[tokio::test]
async fn stale_cursor_changes_nothing_mysql() {
    let db = mariadb();
    stale_cursor_changes_nothing(&db.url()).await;
}

#[tokio::test]
async fn concurrent_writers_one_wins_mysql() {
    let db = mariadb();
    concurrent_writers_one_wins(&db.url()).await;
}

#[tokio::test]
async fn usage_equals_group_by_mysql() {
    let db = mariadb();
    usage_equals_group_by(&db.url()).await;
}

#[tokio::test]
async fn values_round_trip_and_ids_are_case_sensitive_mysql() {
    let db = mariadb();
    values_round_trip_and_ids_are_case_sensitive(&db.url()).await;
}

#[tokio::test]
async fn rejected_statements_change_nothing_mysql() {
    let db = mariadb();
    rejected_statements_change_nothing(&db.url()).await;
}

#[tokio::test]
async fn accepted_queries_run_mysql() {
    let db = mariadb();
    accepted_queries_run(&db.url()).await;
}

#[tokio::test]
async fn read_only_transaction_refuses_writes_mysql() {
    let db = mariadb();
    read_only_transaction_refuses_writes(&db.url()).await;
}

#[tokio::test]
async fn long_query_is_cancelled_mysql() {
    let db = mariadb();
    // A cross join of MariaDB's sequence tables (SLEEP is refused by the guard).
    long_query_is_cancelled(
        &db.url(),
        "SELECT COUNT(*) FROM seq_1_to_100000 a, seq_1_to_100000 b WHERE a.seq + b.seq > 0",
    )
    .await;
}

#[tokio::test]
async fn row_cap_and_columns_mysql() {
    let db = mariadb();
    let types = [
        "VARCHAR",
        "BIGINT UNSIGNED",
        "BIGINT",
        "SMALLINT UNSIGNED",
        "BOOLEAN",
        "BIGINT UNSIGNED",
        "VARCHAR",
    ];
    row_cap_and_columns(&db.url(), &types).await;
}

#[tokio::test]
async fn json_mapping_mysql() {
    let db = mariadb();
    json_mapping(&db.url()).await;
    let store = connect(&db.url()).await;
    let row = rows(
        &store,
        "SELECT CAST('2024-01-02 03:04:05' AS DATETIME) AS dt, UNHEX('DEAD') AS b, \
         CAST(18446744073709551615 AS UNSIGNED) AS u, 1e300 * 10 AS big, b'101' AS bits",
    )
    .await
    .remove(0);
    assert_eq!(row[0], json!("2024-01-02 03:04:05"));
    assert_eq!(row[1], json!("dead"));
    assert_eq!(row[2], json!(u64::MAX));
    // A bit literal is a binary string: bytes → hex.
    assert_eq!(row[4], json!("05"));
}

/// The collation the migration picks by version comment really is bytewise and NO PAD,
/// and the usage tables' CHECK holds the Rust-computed key hash to the SQL expression.
#[tokio::test]
async fn schema_is_bytewise_and_key_hash_is_checked() {
    let db = mariadb();
    let store = connect(&db.url()).await;
    assert_eq!(store.dialect(), Dialect::MySql);
    let collations = db
        .sql(
            "SELECT DISTINCT COLLATION_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = 'tally' AND COLLATION_NAME IS NOT NULL \
             AND TABLE_NAME <> '_sqlx_migrations'",
        )
        .unwrap();
    assert_eq!(collations.trim(), "utf8mb4_nopad_bin");
    let same = db
        .sql("SELECT 'a' = 'a ' COLLATE utf8mb4_nopad_bin")
        .unwrap();
    assert_eq!(same.trim(), "0");

    // A row whose key_hash does not match its key is refused by the database itself.
    let bad = db.sql(
        "INSERT INTO tally.usage_day (bucket_ms, api_name, key_hash) VALUES (0, 'x', REPEAT('a', 32))",
    );
    assert!(bad.unwrap_err().to_string().contains("CONSTRAINT"));
    // Keys with bytes that stress the encoding are accepted (the Rust hash agrees).
    values_round_trip_and_ids_are_case_sensitive(&db.url()).await;
    let hashes = db
        .sql("SELECT COUNT(*) FROM tally.usage_minute WHERE key_hash = UNHEX(SHA2(CONCAT(LENGTH(tenant), ':', tenant, LENGTH(api_name), ':', api_name, LENGTH(api_version), ':', api_version, LENGTH(application_id), ':', application_id, LENGTH(resource), ':', resource, LENGTH(method), ':', method), 256))")
        .unwrap();
    assert_eq!(hashes.trim(), "4");
}

/// BIGINT UNSIGNED holds every u64 exactly; usage sums saturate at 2^64-1 like memory.
#[tokio::test]
async fn unsigned_values_and_saturating_sums() {
    let db = mariadb();
    let store = connect(&db.url()).await;
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
    // Two transactions, so the saturation happens in the upsert, not only in Rust.
    store.write(batch(0, 1, 1, &events[..1])).await.unwrap();
    store.write(batch(1, 2, 2, &events[1..])).await.unwrap();
    let max = json!(u64::MAX);
    for granularity in Granularity::ALL {
        let table = format!("usage_{}", granularity.as_str());
        let row = rows(
            &store,
            &format!(
                "SELECT latency_count, latency_sum_ms, latency_min_ms, latency_max_ms, bytes_sum \
                 FROM {table}"
            ),
        )
        .await
        .remove(0);
        assert_eq!(
            row,
            vec![json!(3), max.clone(), json!(5), max.clone(), max.clone()]
        );
        let stored = usage_rows(&store, granularity).await;
        assert_eq!(
            stored,
            state_rows(&events, granularity),
            "{granularity:?} vs memory"
        );
    }
    let stored = scalar(
        &store,
        "SELECT response_time_ms FROM events WHERE event_id = 'b'",
    )
    .await;
    assert_eq!(stored, json!(u64::MAX - 1));
}

/// MariaDB stopped, then restarted on the same datadir: writes fail while it is down (a
/// clear error, nothing half-done), and the retried batch lands exactly once after.
#[tokio::test]
async fn outage_and_restart() {
    let mut db = mariadb();
    let store = connect(&db.url()).await;
    let events = sample_events(200, 11);
    store.write(batch(0, 10, 10, &events[..100])).await.unwrap();

    db.stop().unwrap();
    let started = Instant::now();
    match store.write(batch(10, 20, 20, &events[50..])).await {
        Err(RecordError::Database { .. }) => {}
        other => panic!("expected a database error while MariaDB is down, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(store.ping().await.is_err());
    assert!(store.cursor().await.is_err());

    db.restart().unwrap();
    assert_eq!(store.cursor().await.unwrap(), 10);
    let outcome = store.write(batch(10, 20, 20, &events[50..])).await.unwrap();
    assert_eq!((outcome.inserted, outcome.already_present), (100, 50));
    assert_eq!(count_events(&store).await, 200);
    assert_usage_consistent(&store, &events).await;

    // Killed mid-flight (SIGKILL) and restarted: committed state survives intact.
    db.kill().unwrap();
    db.restart().unwrap();
    assert_eq!(store.cursor().await.unwrap(), 20);
    assert_usage_consistent(&store, &events).await;
}

/// Connection errors are immediate and name the URL with the password hidden.
#[tokio::test]
async fn connect_errors_redact_the_password() {
    let db = mariadb();
    let missing = db.socket().with_file_name("no-such-socket");
    let url = format!(
        "mysql://root:hunter2@localhost/tally?socket={}",
        missing.display()
    );
    let started = Instant::now();
    let err = RecordStore::connect(&url).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, RecordError::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("mysql://root:***@localhost/tally"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");

    let unknown_db = db.url().replace("/tally?", "/nope?");
    let err = RecordStore::connect(&unknown_db)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[tokio::test]
async fn documented_examples_run_mysql() {
    let db = mariadb();
    documented_examples_run(&db.url()).await;
}

const MARIADB_RUNAWAY: &str =
    "SELECT COUNT(*) FROM seq_1_to_100000 a, seq_1_to_100000 b WHERE a.seq + b.seq > 0";

#[tokio::test]
async fn byte_budget_bounds_answers_mysql() {
    let db = mariadb();
    // GROUP_CONCAT stops at group_concat_max_len (set per query on read connections).
    byte_budget_bounds_answers(
        &db.url(),
        "SELECT LENGTH(GROUP_CONCAT(a.seq)) FROM seq_1_to_1000000 a",
    )
    .await;
}

#[tokio::test]
async fn concurrency_is_bounded_mysql() {
    let db = mariadb();
    concurrency_is_bounded(&db.url(), MARIADB_RUNAWAY).await;
}

/// Whatever a previous query on the same pooled connection changed in the session, the
/// limits are set again before the next one (the guard refuses such statements; the
/// unchecked path shows the database layer does not rely on that).
#[tokio::test]
async fn session_limits_are_set_before_every_query_mysql() {
    let db = mariadb();
    let reads = tally_storage::records::ReadPoolOptions {
        url: None,
        max_concurrent: 1,
    };
    let store = RecordStore::connect_with(&db.url(), &reads).await.unwrap();
    for set in [
        "SET SESSION group_concat_max_len = 4",
        "SET SESSION max_statement_time = 0",
    ] {
        store.query_read_only_unchecked(set, LIMITS).await.unwrap();
        let row = rows(
            &store,
            "SELECT @@group_concat_max_len, @@max_statement_time",
        )
        .await;
        assert_eq!(row[0][0], json!(256 << 10), "after {set}: {row:?}");
        assert_eq!(row[0][1], json!(10.0), "after {set}: {row:?}");
    }
}

/// With a read URL of its own (a user with SELECT only), queries run as that user: they
/// read, and a write — had it passed the guard and the read-only transaction — is refused
/// by the server's grants. The sink writes as its own user meanwhile.
#[tokio::test]
async fn a_select_only_read_user_reads_and_cannot_write_mysql() {
    let db = mariadb();
    db.sql(
        "CREATE USER 'tally_ro'@'localhost' IDENTIFIED BY 'ro-pass?word'; \
         GRANT SELECT ON tally.* TO 'tally_ro'@'localhost'",
    )
    .unwrap();
    let read_url = db.url().replacen("root@", "tally_ro:ro-pass%3Fword@", 1);
    let reads = tally_storage::records::ReadPoolOptions {
        url: Some(read_url.clone()),
        max_concurrent: 2,
    };
    let store = RecordStore::connect_with(&db.url(), &reads).await.unwrap();
    store
        .write(batch(0, 1, 1, &sample_events(3, 5)))
        .await
        .unwrap();
    assert_eq!(
        rows(&store, "SELECT CURRENT_USER(), COUNT(*) FROM events").await[0],
        vec![json!("tally_ro@localhost"), json!(3)]
    );
    for write in [
        "INSERT INTO sink_state (id, applied_index) VALUES (2, 0)",
        "DELETE FROM events",
        "CREATE TABLE evil (a INT)",
    ] {
        match store.query_read_only_unchecked(write, LIMITS).await {
            Err(RecordError::Query(message)) => eprintln!("{write} → {message}"),
            other => panic!("{write}: {other:?}"),
        }
    }
    assert_eq!(count_events(&store).await, 3);
    // A wrong password is a clear error that does not show it.
    let bad = tally_storage::records::ReadPoolOptions {
        url: Some(read_url.replace("ro-pass%3Fword", "wrong?pw")),
        max_concurrent: 1,
    };
    let err = RecordStore::connect_with(&db.url(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tally_ro:***@"), "{err}");
    assert!(!err.contains("wrong"), "{err}");
}
