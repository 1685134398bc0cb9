//! The bounds of `POST /v1/sql` end to end, on SQLite and on MariaDB: hostile queries get a
//! clear 4xx or an answer cut within the byte budget, quickly; more queries than
//! `sql.max_concurrent` get 503 with `Retry-After` at once; the node's memory stays bounded;
//! ingest goes on and the sink keeps up meanwhile. On MariaDB the SQL runs as a SELECT-only
//! user (`record_store_read`) that the server itself refuses writes, with one read
//! connection, so that nothing one query sets can reach the next.
//!
//! The two tests take turns (a lock), so their timing checks do not compete for the CPU.

use std::time::{Duration, Instant};

use crate::common::records::gen_event;
use crate::common::{now_ms, Cluster, ClusterOpts, Resp, DATA_NODES};
use serde_json::{json, Value};
use tally_testkit::MariaDb;

const TIMEOUT_MS: u64 = 2_000;
/// Small, so that a few thousand rows already fill it.
const MAX_RESULT_BYTES: usize = 256 << 10;
const SEED_EVENTS: u64 = 200;
/// Every hostile query answers within this (the statement timeout plus slack).
const ANSWER_WITHIN: Duration = Duration::from_millis(TIMEOUT_MS + 3_000);
/// Peak resident memory (VmHWM) a data node may reach over the whole test. A debug build
/// idles at about 80 MiB here; the bounds allow per query an answer of 256 KiB plus the
/// row being checked (values of at most 256 KiB), and these queries stay far below 32 MiB
/// each. A single unbounded one (`zeroblob(999999999)` is a gigabyte, the cross joins
/// hold tens of megabytes of rows) would pass this by far.
const PEAK_RSS_LIMIT: u64 = 256 << 20;
const READ_USER: &str = "tally_ro";
const READ_PASSWORD: &str = "ro-s3cret-pw";

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    MariaDb,
}

fn opts(record_store: String, max_concurrent: usize) -> ClusterOpts {
    ClusterOpts {
        record_store: Some(record_store),
        sql_timeout_ms: Some(TIMEOUT_MS),
        sql_max_result_bytes: Some(MAX_RESULT_BYTES),
        sql_max_concurrent: Some(max_concurrent),
        ..ClusterOpts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_bounds_on_sqlite() {
    let _turn = TURN.lock().await;
    let store = tempfile::Builder::new()
        .prefix("tally-sql-bounds-")
        .tempdir()
        .unwrap();
    let url = format!("sqlite://{}", store.path().join("records.db").display());
    let (cluster, leader) = Cluster::start_formed(opts(url, 2)).await;
    exercise(&cluster, leader, Backend::Sqlite, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_bounds_on_mariadb_as_a_select_only_user() {
    let _turn = TURN.lock().await;
    let _module_turn = crate::common::module_turn().await;
    let mariadb = tokio::task::block_in_place(MariaDb::start).expect("start MariaDB");
    // The tables do not exist yet: the grant is on the database, like in production.
    mariadb
        .sql(&format!(
            "CREATE USER '{READ_USER}'@'localhost' IDENTIFIED BY '{READ_PASSWORD}'; \
             GRANT SELECT ON tally.* TO '{READ_USER}'@'localhost'"
        ))
        .unwrap();
    let read_url = mariadb
        .url()
        .replacen("root@", &format!("{READ_USER}:{READ_PASSWORD}@"), 1);
    let mut opts = opts(mariadb.url(), 1);
    opts.record_store_read = Some(read_url.clone());
    let (cluster, leader) = Cluster::start_formed(opts).await;
    exercise(&cluster, leader, Backend::MariaDb, 1).await;

    // /v1/sql reads as the SELECT-only user …
    let answer = sql_ok(
        &cluster,
        leader,
        "SELECT CURRENT_USER() AS u, COUNT(*) AS n FROM events",
    )
    .await;
    assert_eq!(
        answer["rows"][0][0],
        json!(format!("{READ_USER}@localhost")),
        "{answer}"
    );
    // … which the server refuses writes, whatever reaches it (shown on a direct
    // connection: the endpoint's guard and read-only transaction would stop them first).
    use sqlx::Connection;
    let mut direct = sqlx::MySqlConnection::connect(&read_url)
        .await
        .expect("connect as the read-only user");
    for write in [
        "INSERT INTO sink_state (id, applied_index) VALUES (2, 0)",
        "UPDATE events SET ts_ms = 0",
        "DELETE FROM events",
        "CREATE TABLE tally.evil (a INT)",
    ] {
        let err = sqlx::raw_sql(sqlx::AssertSqlSafe(write))
            .execute(&mut direct)
            .await
            .expect_err(write);
        assert!(
            err.to_string().contains("denied"),
            "{write}: expected a grant refusal, got {err}"
        );
    }
    let _ = direct.close().await;
    // The password never reaches the logs or the status.
    for id in DATA_NODES {
        let log = cluster.log_text(id);
        assert!(
            !log.contains(READ_PASSWORD),
            "node {id} logged the read password"
        );
        assert!(
            log.contains(&format!("{READ_USER}:***@")),
            "node {id} should log the redacted read URL"
        );
        let status = cluster.get(id, "/v1/cluster").await.unwrap();
        assert!(!status.body.to_string().contains(READ_PASSWORD));
    }
}

async fn sql(cluster: &Cluster, node: u64, sql: &str) -> Resp {
    cluster
        .sql(node, &json!({ "sql": sql }))
        .await
        .unwrap_or_else(|e| panic!("POST /v1/sql on node {node}: {e}"))
}

async fn sql_ok(cluster: &Cluster, node: u64, query: &str) -> Value {
    let r = sql(cluster, node, query).await;
    assert_eq!(r.status, 200, "{query} → {r:?}");
    r.body
}

/// What a hostile query may get.
#[derive(Debug)]
enum Expect {
    /// 400 `sql_rejected` by the guard.
    Rejected,
    /// A 4xx (413 too large, 400 timeout or engine error) or a 200 within the budget.
    Bounded,
    /// 200, cut by the byte budget.
    CutByBytes,
}

fn hostile(backend: Backend) -> Vec<(&'static str, Expect)> {
    let mut all = vec![
        ("SELECT zeroblob(999999999) FROM events", Expect::Rejected),
        ("SELECT hex(randomblob(1000000000))", Expect::Rejected),
        (
            "SELECT REPEAT('x', 16000000) FROM events a, events b",
            Expect::Rejected,
        ),
        (
            "SELECT RPAD('x', 100000000, 'y') FROM events",
            Expect::Rejected,
        ),
        ("SELECT LPAD('x', 100000000, 'y')", Expect::Rejected),
        ("SELECT SPACE(100000000)", Expect::Rejected),
        ("SELECT SLEEP(5)", Expect::Rejected),
        ("SELECT BENCHMARK(1000000000, MD5('x'))", Expect::Rejected),
        ("SELECT GET_LOCK('x', 10)", Expect::Rejected),
        ("SELECT @x := 1", Expect::Rejected),
        ("SELECT @x", Expect::Rejected),
        ("SELECT LOAD_FILE('/etc/passwd')", Expect::Rejected),
        (
            "SELECT a.event_id, a.resource, a.api_name, b.event_id FROM events a, events b",
            Expect::CutByBytes,
        ),
    ];
    match backend {
        Backend::Sqlite => all.extend([
            (
                "SELECT group_concat(a.event_id || b.event_id || c.event_id) \
                 FROM events a, events b, events c",
                Expect::Bounded,
            ),
            ("SELECT printf('%.*c', 1000000000, 'x')", Expect::Bounded),
            (
                "SELECT length(replace(replace(replace(replace(printf('%.*c', 100000, 'x'), \
                 'x', 'xx'), 'x', 'xx'), 'x', 'xx'), 'x', 'xx'))",
                Expect::Bounded,
            ),
            ("SELECT $x", Expect::Rejected),
        ]),
        Backend::MariaDb => all.extend([
            (
                "SELECT GROUP_CONCAT(CONCAT(a.event_id, b.event_id, c.event_id)) \
                 FROM events a, events b, events c",
                Expect::Bounded,
            ),
            (
                "SELECT LENGTH(GROUP_CONCAT(CONCAT(a.event_id, b.event_id))) \
                 FROM events a, events b",
                Expect::Bounded,
            ),
            ("SELECT NEXT VALUE FOR s", Expect::Rejected),
            ("SELECT @`x`", Expect::Rejected),
        ]),
    }
    all
}

fn check(query: &str, expect: &Expect, r: &Resp, took: Duration) {
    assert!(took < ANSWER_WITHIN, "{query}: answered after {took:?}");
    let text = r.body.to_string();
    match expect {
        Expect::Rejected => {
            assert_eq!(r.status, 400, "{query} → {r:?}");
            assert_eq!(r.error_code(), Some("sql_rejected"), "{query} → {r:?}");
        }
        Expect::Bounded => match r.status {
            200 => {
                let rows = r.body["rows"].to_string();
                assert!(
                    rows.len() <= MAX_RESULT_BYTES,
                    "{query}: {} bytes",
                    rows.len()
                );
            }
            413 => {
                assert_eq!(r.error_code(), Some("result_too_large"), "{query} → {r:?}");
            }
            400 => assert!(
                matches!(r.error_code(), Some("query_timeout" | "query_failed")),
                "{query} → {r:?}"
            ),
            _ => panic!("{query} → {r:?}"),
        },
        Expect::CutByBytes => {
            assert_eq!(r.status, 200, "{query} → {}", &text[..text.len().min(500)]);
            assert_eq!(r.body["truncated"], json!(true), "{query}");
            assert_eq!(r.body["truncated_by"], json!("max_result_bytes"), "{query}");
            let rows = r.body["rows"].to_string();
            assert!(
                rows.len() <= MAX_RESULT_BYTES,
                "{query}: {} bytes",
                rows.len()
            );
            let n = r.body["rows"].as_array().map_or(0, Vec::len);
            let message = r.body["message"].as_str().unwrap_or("");
            assert!(
                message.contains("max_result_bytes") && message.contains(&n.to_string()),
                "{query}: the message should name the bound and the rows: {message:?}"
            );
        }
    }
}

/// Peak and current resident memory of node `id`, in bytes.
fn memory(cluster: &Cluster, id: u64) -> (u64, u64) {
    let pid = cluster.pid(id).expect("node runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn exercise(cluster: &Cluster, leader: u64, backend: Backend, max_concurrent: usize) {
    let started = Instant::now();
    let base_ms = now_ms();
    let events: Vec<Value> = (0..SEED_EVENTS).map(|n| gen_event(n, base_ms)).collect();
    let r = cluster.post_ndjson(leader, &events).await.unwrap();
    assert_eq!(r.status, 200, "seeding: {r:?}");
    let seeded = r.body["index"].as_u64().unwrap();
    cluster
        .wait_sink_caught_up(seeded, Duration::from_secs(60))
        .await;
    for id in DATA_NODES {
        let (peak, now) = memory(cluster, id);
        eprintln!(
            "[test] {backend:?}: node {id} before: VmHWM {} MiB, VmRSS {} MiB",
            peak >> 20,
            now >> 20
        );
    }

    // ---- Hostile queries, one after the other, on both data nodes ----------------------
    for (i, (query, expect)) in hostile(backend).iter().enumerate() {
        let node = DATA_NODES[i % 2];
        let t = Instant::now();
        let r = sql(cluster, node, query).await;
        check(query, expect, &r, t.elapsed());
    }
    eprintln!(
        "[test] {backend:?}: hostile queries bounded ({:?})",
        started.elapsed()
    );

    // ---- Session state does not leak between queries ------------------------------------
    // (MariaDB runs with one read connection, so both queries use the same session.)
    for _ in 0..2 {
        for query in ["SELECT @x := 1", "SELECT @x"] {
            let r = sql(cluster, leader, query).await;
            assert_eq!(r.error_code(), Some("sql_rejected"), "{query} → {r:?}");
        }
    }
    if backend == Backend::MariaDb {
        let answer = sql_ok(
            cluster,
            leader,
            "SELECT @@group_concat_max_len, @@max_statement_time",
        )
        .await;
        assert_eq!(answer["rows"][0], json!([262144, 2.0]), "{answer}");
    }

    // ---- More runaways than slots, while ingest goes on -------------------------------------
    let runaway = "SELECT COUNT(*) FROM events a, events b, events c, events d, events e";
    let node = leader;
    let extra = 3;
    let api = cluster.api();
    let mut queries = Vec::new();
    for _ in 0..max_concurrent + extra {
        let api = api.clone();
        queries.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = api.sql(node, &json!({ "sql": runaway })).await.unwrap();
            (r, t.elapsed())
        }));
    }
    // Ingest meanwhile: every batch is acknowledged while the runaways hold the read slots.
    let mut last_index = seeded;
    for batch in 0..5u64 {
        let events: Vec<Value> = (0..50)
            .map(|n| gen_event(10_000 + batch * 100 + n, base_ms))
            .collect();
        let r = cluster.post_ndjson(leader, &events).await.unwrap();
        assert_eq!(r.status, 200, "ingest during runaway queries: {r:?}");
        last_index = r.body["index"].as_u64().unwrap();
    }
    let (mut busy, mut ran) = (0, 0);
    for q in queries {
        let (r, took) = q.await.unwrap();
        match r.status {
            503 => {
                assert_eq!(r.error_code(), Some("sql_busy"), "{r:?}");
                assert!(r.retry_after.is_some(), "503 without Retry-After: {r:?}");
                assert!(
                    took < Duration::from_secs(1),
                    "a refused query waited {took:?} instead of being refused at once"
                );
                busy += 1;
            }
            400 => {
                assert_eq!(r.error_code(), Some("query_timeout"), "{r:?}");
                ran += 1;
            }
            _ => panic!("runaway: {r:?}"),
        }
    }
    assert!(busy >= 1 && ran <= max_concurrent, "busy {busy}, ran {ran}");
    eprintln!("[test] {backend:?}: {ran} runaways ran, {busy} refused with 503 at once");
    // The sink kept up: the backlog drains to zero.
    cluster
        .wait_sink_caught_up(last_index, Duration::from_secs(30))
        .await;
    let answer = sql_ok(cluster, leader, "SELECT COUNT(*) FROM events").await;
    assert_eq!(answer["rows"][0][0], json!(SEED_EVENTS + 250), "{answer}");

    // ---- Memory stayed bounded ---------------------------------------------------------
    for id in DATA_NODES {
        let (peak, now) = memory(cluster, id);
        eprintln!(
            "[test] {backend:?}: node {id} after: VmHWM {} MiB, VmRSS {} MiB",
            peak >> 20,
            now >> 20
        );
        assert!(
            peak < PEAK_RSS_LIMIT,
            "node {id} peaked at {} MiB (limit {} MiB)",
            peak >> 20,
            PEAK_RSS_LIMIT >> 20
        );
    }
    eprintln!("[test] {backend:?}: done ({:?})", started.elapsed());
}
