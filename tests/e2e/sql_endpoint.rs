//! `POST /v1/sql` end to end, on SQLite and on MariaDB.
//!
//! Each backend gets a cluster with `[sql] timeout_ms = 1000, max_rows = 50` and checks:
//! every statement that is not a single read-only query is refused with 400 and leaves the
//! data (and the schema, and the file system) unchanged; `strong` reads and `min_index`
//! reads include an event acknowledged just before (and an index not yet reached is a 503,
//! not a short answer); a runaway query is cancelled with a
//! clear 400 and the node stays healthy (no leaked connection either); the row cap cuts
//! long answers and says so; columns keep names and types; the witness forwards; a bad
//! request body is a 400 that names the problem.
//!
//! The two tests take turns (a lock), so their timing checks do not compete for the CPU.

use std::time::{Duration, Instant};

use crate::common::records::{event_id, gen_event, RecordsDb};
use crate::common::{now_ms, Cluster, ClusterOpts, Resp, ALL_NODES, DATA_NODES, WITNESS};
use serde_json::{json, Value};
use tally_testkit::MariaDb;

const TIMEOUT_MS: u64 = 1_000;
const MAX_ROWS: usize = 50;
/// Events posted before the checks (more than MAX_ROWS).
const SEED_EVENTS: u64 = 80;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    MariaDb,
}

fn opts(record_store: String) -> ClusterOpts {
    ClusterOpts {
        record_store: Some(record_store),
        sql_timeout_ms: Some(TIMEOUT_MS),
        sql_max_rows: Some(MAX_ROWS),
        ..ClusterOpts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_endpoint_on_sqlite() {
    let _turn = TURN.lock().await;
    let store = tempfile::Builder::new()
        .prefix("tally-sql-")
        .tempdir()
        .unwrap();
    let path = store.path().join("records.db");
    let (cluster, leader) =
        Cluster::start_formed(opts(format!("sqlite://{}", path.display()))).await;
    let db = RecordsDb::sqlite_when_created(&path).await;
    exercise(&cluster, leader, &db, Backend::Sqlite, store.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_endpoint_on_mariadb() {
    let _turn = TURN.lock().await;
    let _module_turn = crate::common::module_turn().await;
    let mariadb = tokio::task::block_in_place(MariaDb::start).expect("start MariaDB");
    let (cluster, leader) = Cluster::start_formed(opts(mariadb.url())).await;
    let db = RecordsDb::MariaDb(&mariadb);
    let scratch = tempfile::tempdir().unwrap();
    exercise(&cluster, leader, &db, Backend::MariaDb, scratch.path()).await;

    // MariaDB only: the statement timeout really stops the statement on the server.
    let runaway = "SELECT COUNT(*) FROM events a, events b, events c, events d, events e, \
                   events runaway_f";
    let r = sql(&cluster, leader, json!({ "sql": runaway })).await;
    assert_timeout(&r, runaway);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let running = db
            .rows(
                "SELECT ID, INFO FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE '%runaway_f%' AND INFO NOT LIKE '%PROCESSLIST%'",
            )
            .await;
        if running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the timed-out cross join still runs on the server: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl RecordsDb<'static> {
    /// The SQLite file appears when a data node first connects.
    async fn sqlite_when_created(path: &std::path::Path) -> RecordsDb<'static> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "{} never appeared",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        RecordsDb::sqlite(path).await
    }
}

async fn sql(cluster: &Cluster, node: u64, body: Value) -> Resp {
    cluster
        .sql(node, &body)
        .await
        .unwrap_or_else(|e| panic!("POST /v1/sql on node {node}: {e}"))
}

/// `POST /v1/sql` that must answer 200.
async fn sql_ok(cluster: &Cluster, node: u64, body: Value) -> Value {
    let r = sql(cluster, node, body.clone()).await;
    assert_eq!(r.status, 200, "node {node}: {body} → {r:?}");
    r.body
}

/// The single value of a one-row, one-column answer.
fn single(answer: &Value) -> &Value {
    let rows = answer["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{answer}");
    let row = rows[0].as_array().expect("row");
    assert_eq!(row.len(), 1, "{answer}");
    &row[0]
}

fn assert_timeout(r: &Resp, what: &str) {
    assert_eq!(r.status, 400, "{what}: {r:?}");
    assert_eq!(r.error_code(), Some("query_timeout"), "{what}: {r:?}");
    let message = r.body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("timeout") && message.contains(&TIMEOUT_MS.to_string()),
        "{what}: the message should name the timeout: {message:?}"
    );
}

/// Statements the endpoint must refuse on this backend. `{dir}` is a scratch directory.
fn hostile_statements(backend: Backend, dir: &str) -> Vec<String> {
    let mut all: Vec<String> = [
        "INSERT INTO events (event_id, log_index, ts_ms, ingest_ms, kind, api_name, api_version) \
         VALUES ('evil', 1, 1, 1, 'request', 'x', 'y')",
        "insert into sink_state (id, applied_index) values (2, 0)",
        "UPDATE usage_day SET requests = requests + 1",
        "UPDATE sink_state SET applied_index = 0",
        "DELETE FROM events",
        "/* a comment first */ delete from events where 1 = 1",
        "REPLACE INTO sink_state (id, applied_index) VALUES (1, 0)",
        "DROP TABLE events",
        "DROP TABLE IF EXISTS usage_minute",
        "CREATE TABLE evil (a INTEGER)",
        "CREATE INDEX evil ON events (ts_ms)",
        "ALTER TABLE events ADD COLUMN evil INTEGER",
        "ALTER TABLE events RENAME TO evil",
        "TRUNCATE TABLE events",
        "TRUNCATE events",
        "SELECT 1; SELECT 2",
        "SELECT COUNT(*) FROM events; DELETE FROM events",
        "SELECT 1;DROP TABLE events;",
        "SELECT * FROM events FOR UPDATE",
        "SELECT * FROM (SELECT * FROM events FOR UPDATE) AS x",
        "SELECT * FROM events LOCK IN SHARE MODE",
        "SELECT * FROM events FOR SHARE",
        "SET autocommit = 0",
        "SET SESSION TRANSACTION READ WRITE",
        "CALL evil()",
        "GRANT ALL ON *.* TO 'evil'@'%'",
        "REVOKE SELECT ON events FROM 'x'",
        "ATTACH DATABASE 'DIR/evil.db' AS evil",
        "DETACH DATABASE main",
        "PRAGMA query_only = OFF",
        "PRAGMA journal_mode = DELETE",
        "VACUUM",
        "EXPLAIN SELECT * FROM events",
        "WITH d AS (DELETE FROM events RETURNING *) SELECT * FROM d",
        "SELECT 1 /*! , 2 */",
        "SELECT load_extension('evil')",
        "SELECT readfile('/etc/hostname')",
        "SELECT LOAD_FILE('/etc/hostname')",
        "SELECT GET_LOCK('evil', 10)",
        "BEGIN",
        "COMMIT",
        "LOCK TABLES events WRITE",
        "SHOW TABLES",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The file-writing and file-reading forms: both dialects parse them differently, both
    // must refuse them.
    for s in [
        "SELECT * FROM events INTO OUTFILE 'DIR/out1.txt'",
        "SELECT event_id INTO OUTFILE 'DIR/out2.txt' FROM events",
        "SELECT 1 INTO DUMPFILE 'DIR/out3.bin'",
        "SELECT api_name INTO @x FROM events LIMIT 1",
        "SELECT * INTO evil_copy FROM events",
        "LOAD DATA INFILE '/etc/hostname' INTO TABLE events",
        "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE events",
        "VACUUM INTO 'DIR/copy.db'",
        "INSERT OR REPLACE INTO sink_state VALUES (1, 0, 0)",
    ] {
        all.push(s.to_string());
    }
    if backend == Backend::MariaDb {
        all.push("SELECT 1 /*M!100000 FOR UPDATE */".into());
        all.push("DO SLEEP(5)".into());
        all.push("HANDLER events OPEN".into());
    }
    all.into_iter().map(|s| s.replace("DIR", dir)).collect()
}

/// What must not change when statements are refused: row counts, sums, the cursor, the
/// list of tables.
async fn fingerprint(db: &RecordsDb<'_>) -> Vec<Vec<String>> {
    let mut out = db
        .rows(
            "SELECT (SELECT COUNT(*) FROM events), \
                    (SELECT COALESCE(SUM(ts_ms), 0) FROM events), \
                    (SELECT COUNT(*) FROM usage_minute), \
                    (SELECT COALESCE(SUM(requests), 0) FROM usage_day), \
                    (SELECT applied_index FROM sink_state), \
                    (SELECT COUNT(*) FROM sink_state)",
        )
        .await;
    let tables = if db.is_mysql() {
        "SELECT table_name FROM information_schema.TABLES WHERE table_schema = DATABASE() \
         ORDER BY 1"
    } else {
        "SELECT type || ' ' || name FROM sqlite_master ORDER BY 1"
    };
    out.extend(db.rows(tables).await);
    out
}

async fn exercise(
    cluster: &Cluster,
    leader: u64,
    db: &RecordsDb<'_>,
    backend: Backend,
    scratch: &std::path::Path,
) {
    let follower = 3 - leader;
    let base_ms = now_ms();
    let started = Instant::now();

    // ---- Seed data -----------------------------------------------------------------------
    let seed: Vec<Value> = (0..SEED_EVENTS).map(|n| gen_event(n, base_ms)).collect();
    let r = cluster.post_json(leader, &json!(seed)).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let seeded_at = r.body["index"].as_u64().unwrap();
    cluster
        .wait_sink_caught_up(seeded_at, Duration::from_secs(30))
        .await;
    let answer = sql_ok(
        cluster,
        leader,
        json!({"sql": "SELECT COUNT(*) AS n FROM events", "min_index": seeded_at}),
    )
    .await;
    assert_eq!(single(&answer), &json!(SEED_EVENTS), "{answer}");

    // ---- Refusals: 400, and nothing changes ------------------------------------------------
    let before = fingerprint(db).await;
    assert_eq!(before[0][0], SEED_EVENTS.to_string(), "{before:?}");
    let dir = scratch.display().to_string();
    let statements = hostile_statements(backend, &dir);
    for (i, statement) in statements.iter().enumerate() {
        // Mostly on the leader; some through the follower and the witness, and some as
        // strong reads: the check comes first everywhere.
        let node = ALL_NODES[i % 3];
        let consistency = if i % 4 == 1 { "strong" } else { "none" };
        let r = sql(
            cluster,
            node,
            json!({"sql": statement, "consistency": consistency}),
        )
        .await;
        assert_eq!(
            r.status, 400,
            "{backend:?}: node {node} did not refuse {statement:?}: {r:?}"
        );
        assert_eq!(
            r.error_code(),
            Some("sql_rejected"),
            "{backend:?}: {statement:?}: {r:?}"
        );
        let message = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.len() >= 10,
            "{backend:?}: {statement:?}: the refusal should say why: {r:?}"
        );
    }
    for empty in ["", "   ", " ; "] {
        let r = sql(cluster, leader, json!({ "sql": empty })).await;
        assert_eq!(r.status, 400, "{empty:?}: {r:?}");
    }
    assert_eq!(
        fingerprint(db).await,
        before,
        "{backend:?}: refused statements changed the record store"
    );
    let files: Vec<_> = std::fs::read_dir(scratch)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("records.db"))
        .collect();
    assert!(
        files.is_empty(),
        "{backend:?}: refused statements wrote files: {files:?}"
    );
    eprintln!(
        "[test] {backend:?}: {} statements refused, data unchanged ({:?})",
        statements.len(),
        started.elapsed()
    );

    // ---- Read your writes: strong ----------------------------------------------------------
    for i in 0..20u64 {
        let id = format!("strong-{i}");
        let mut e = gen_event(1_000 + i, base_ms);
        e["event_id"] = json!(id);
        // Post to the follower or the witness; read on a data node other than the one
        // that took the write (the follower forwards a strong read to the leader).
        let (post_to, read_on) = match i % 4 {
            0 => (follower, leader),
            1 => (WITNESS, follower),
            2 => (WITNESS, leader),
            // The witness forwards strong reads too.
            _ => (follower, WITNESS),
        };
        let r = cluster.post_json(post_to, &e).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let index = r.body["index"].as_u64().unwrap();
        let answer = sql_ok(
            cluster,
            read_on,
            json!({
                "sql": format!("SELECT COUNT(*) FROM events WHERE event_id = '{id}'"),
                "consistency": "strong",
            }),
        )
        .await;
        assert_eq!(
            single(&answer),
            &json!(1),
            "{backend:?}: a strong read on node {read_on} right after the ack of {id} \
             (index {index}, posted to node {post_to}) misses it: {answer}"
        );
        assert!(
            answer["watermark"].as_u64() >= Some(index),
            "watermark below the acknowledged index {index}: {answer}"
        );
    }

    // ---- Read your writes: min_index --------------------------------------------------------
    for i in 0..10u64 {
        let id = format!("min-index-{i}");
        let mut e = gen_event(2_000 + i, base_ms);
        e["event_id"] = json!(id);
        let post_to = ALL_NODES[i as usize % 3];
        let read_on = DATA_NODES[(i as usize + 1) % 2];
        let r = cluster.post_json(post_to, &e).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let index = r.body["index"].as_u64().unwrap();
        let answer = sql_ok(
            cluster,
            read_on,
            json!({
                "sql": format!("SELECT COUNT(*) FROM events WHERE event_id = '{id}'"),
                "min_index": index,
            }),
        )
        .await;
        assert_eq!(
            single(&answer),
            &json!(1),
            "{backend:?}: min_index {index} read on node {read_on} misses {id}: {answer}"
        );
        assert!(answer["watermark"].as_u64() >= Some(index), "{answer}");
    }
    // An entry whose events were all duplicates gives the sink nothing to write; its index
    // must still be answered at once (the record store holds everything up to it).
    let again: Vec<Value> = (0..10).map(|n| gen_event(n, base_ms)).collect();
    let r = cluster.post_json(WITNESS, &json!(again)).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["duplicates"], json!(10), "{r:?}");
    let index = r.body["index"].as_u64().unwrap();
    let t = Instant::now();
    let answer = sql_ok(
        cluster,
        follower,
        json!({"sql": "SELECT COUNT(*) FROM events", "min_index": index}),
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "min_index {index} of a duplicates-only write took {:?}",
        t.elapsed()
    );
    assert!(answer["watermark"].as_u64() >= Some(index), "{answer}");

    if backend == Backend::Sqlite {
        // An index the log has not reached: a clear "not yet" after a bounded wait, never
        // an answer that lacks it. (SQLite only: the wait is the same code on both.)
        let t = Instant::now();
        let r = sql(
            cluster,
            follower,
            json!({"sql": "SELECT COUNT(*) FROM events", "min_index": 1_000_000_000u64}),
        )
        .await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.error_code(), Some("record_store_behind"), "{r:?}");
        assert!(r.retry_after.is_some(), "503 without Retry-After: {r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(25),
            "waited {:?}",
            t.elapsed()
        );
    }
    eprintln!(
        "[test] {backend:?}: strong and min_index reads saw every write ({:?})",
        started.elapsed()
    );

    // ---- Runaway queries are cancelled; the node stays healthy -----------------------------
    let queries: &[&str] = match backend {
        Backend::Sqlite => &[
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                              WHERE x < 10000000000) SELECT COUNT(*) FROM c",
        ],
        // (MariaDB stops recursive CTEs at max_recursive_iterations = 1000 by default, so
        // CPU is burnt with a cross join instead. BENCHMARK would not do: cut short by the
        // timeout it still answers 0, like when it completes.)
        Backend::MariaDb => &[
            "SELECT COUNT(*) FROM events a, events b, events c, events d, events e",
            "SELECT COUNT(*) FROM events a, events b, events c, events d, events e, events f",
        ],
    };
    // More cancellations than the read pool has connections: a leaked one would show.
    for round in 0..6 {
        let q = &queries[round % queries.len()];
        let node = DATA_NODES[round % 2];
        let t = Instant::now();
        let r = sql(cluster, node, json!({ "sql": q })).await;
        let took = t.elapsed();
        assert_timeout(&r, q);
        assert!(
            took < Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(4),
            "{backend:?}: cancelling {q:?} took {took:?} with a {TIMEOUT_MS} ms timeout"
        );
        assert!(
            took >= Duration::from_millis(TIMEOUT_MS * 9 / 10),
            "{backend:?}: {q:?} was cancelled after {took:?}, before the timeout"
        );
    }
    for id in ALL_NODES {
        for path in ["/healthz", "/readyz"] {
            let r = cluster.get(id, path).await.unwrap();
            assert_eq!(
                r.status, 200,
                "node {id} {path} after cancelled queries: {r:?}"
            );
        }
    }
    for node in DATA_NODES {
        let answer = sql_ok(
            cluster,
            node,
            json!({"sql": "SELECT COUNT(*) AS n FROM events"}),
        )
        .await;
        assert!(single(&answer).as_u64() >= Some(SEED_EVENTS), "{answer}");
    }
    let e = gen_event(3_000, base_ms);
    let r = cluster.post_json(follower, &e).await.unwrap();
    assert_eq!(r.status, 200, "ingest after cancelled queries: {r:?}");
    let answer = sql_ok(
        cluster,
        follower,
        json!({
            "sql": format!("SELECT COUNT(*) FROM events WHERE event_id = '{}'", event_id(3_000)),
            "consistency": "strong",
        }),
    )
    .await;
    assert_eq!(single(&answer), &json!(1), "{answer}");
    eprintln!(
        "[test] {backend:?}: runaway queries cancelled, node healthy ({:?})",
        started.elapsed()
    );

    // ---- Row cap -----------------------------------------------------------------------
    let answer = sql_ok(
        cluster,
        leader,
        json!({"sql": "SELECT event_id FROM events ORDER BY event_id"}),
    )
    .await;
    assert_eq!(answer["truncated"], json!(true), "{answer}");
    assert_eq!(
        answer["rows"].as_array().unwrap().len(),
        MAX_ROWS,
        "{answer}"
    );
    let message = answer["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&MAX_ROWS.to_string()) && message.contains("max_rows"),
        "a truncated answer should say so: {answer}"
    );
    let first = &answer["rows"][0][0];
    assert_eq!(first, &json!(event_id(0)), "rows come in the query's order");
    let answer = sql_ok(
        cluster,
        leader,
        json!({"sql": format!("SELECT event_id FROM events ORDER BY event_id LIMIT {MAX_ROWS}")}),
    )
    .await;
    assert_eq!(answer["truncated"], json!(false), "{answer}");
    assert!(answer.get("message").is_none(), "{answer}");
    assert_eq!(answer["rows"].as_array().unwrap().len(), MAX_ROWS);

    // ---- Columns: names, types, values ---------------------------------------------------
    let n = (0..SEED_EVENTS)
        .find(|&n| {
            let e = gen_event(n, base_ms);
            e["response_code"].is_u64() && e["cache_hit"].is_boolean() && e["tenant"].is_null()
        })
        .expect("a seed event with a code, cache_hit and no tenant");
    let e = gen_event(n, base_ms);
    let answer = sql_ok(
        cluster,
        follower,
        json!({"sql": format!(
            "SELECT event_id, log_index, ts_ms, kind, tenant, response_code, cache_hit, \
                    username AS who, error_code \
             FROM events WHERE event_id = '{}'", event_id(n))}),
    )
    .await;
    let names: Vec<&str> = answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "event_id",
            "log_index",
            "ts_ms",
            "kind",
            "tenant",
            "response_code",
            "cache_hit",
            "who",
            "error_code"
        ],
        "{answer}"
    );
    let types: Vec<&str> = answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    eprintln!("[test] {backend:?}: column types {types:?}");
    let want_types: &[(usize, &str)] = match backend {
        Backend::MariaDb => &[
            (0, "VARCHAR"),
            (1, "BIGINT UNSIGNED"),
            (2, "BIGINT"),
            (4, "VARCHAR"),
            (5, "SMALLINT UNSIGNED"),
            (6, "BOOLEAN"),
            (7, "VARCHAR"),
        ],
        Backend::Sqlite => &[
            (0, "TEXT"),
            (1, "INTEGER"),
            (2, "INTEGER"),
            (3, "TEXT"),
            (4, "TEXT"),
            (5, "INTEGER"),
            (6, "INTEGER"),
            (7, "TEXT"),
        ],
    };
    for &(i, t) in want_types {
        assert_eq!(types[i], t, "type of column {}: {answer}", names[i]);
    }
    let row = &answer["rows"][0];
    assert_eq!(row[0], json!(event_id(n)));
    assert!(row[1].as_u64().is_some_and(|i| i >= 1), "log_index: {row}");
    assert_eq!(
        row[2],
        json!(crate::common::event_ts_ms(&e)),
        "ts_ms: {row}"
    );
    assert_eq!(row[3], json!(e["kind"].as_str().unwrap_or("request")));
    assert_eq!(row[4], json!(""), "an absent tenant is '': {row}");
    assert_eq!(row[5], e["response_code"]);
    assert_eq!(
        row[6],
        json!(u8::from(e["cache_hit"].as_bool().unwrap())),
        "cache_hit is 0/1: {row}"
    );
    assert_eq!(row[7], e["username"]);
    assert_eq!(
        row[8],
        Value::Null,
        "an absent optional field is NULL: {row}"
    );

    // Expressions: aggregates, a decimal, NULL; and an empty result still has columns.
    let answer = sql_ok(
        cluster,
        leader,
        json!({"sql": "SELECT COUNT(*) AS n, SUM(response_size) AS bytes, 2.5 AS d, \
                              NULL AS empty_value FROM events"}),
    )
    .await;
    let row = &answer["rows"][0];
    let total: u64 = db
        .scalar("SELECT SUM(response_size) FROM events")
        .await
        .parse()
        .unwrap();
    assert!(row[0].as_u64().is_some(), "COUNT(*) is a number: {answer}");
    assert_eq!(row[3], Value::Null, "{answer}");
    match backend {
        // DECIMAL is exact, as a string.
        Backend::MariaDb => {
            assert_eq!(row[1], json!(total.to_string()), "{answer}");
            assert_eq!(row[2], json!("2.5"), "{answer}");
            assert_eq!(answer["columns"][1]["type"], json!("DECIMAL"), "{answer}");
        }
        Backend::Sqlite => {
            assert_eq!(row[1], json!(total), "{answer}");
            assert_eq!(row[2], json!(2.5), "{answer}");
        }
    }
    let answer = sql_ok(
        cluster,
        leader,
        json!({"sql": "SELECT event_id, ts_ms FROM events WHERE 1 = 0"}),
    )
    .await;
    assert_eq!(answer["rows"], json!([]), "{answer}");
    let names: Vec<&Value> = answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, [&json!("event_id"), &json!("ts_ms")], "{answer}");
    if backend == Backend::MariaDb {
        // BINARY columns come as lowercase hex.
        let answer = sql_ok(
            cluster,
            leader,
            json!({"sql": "SELECT key_hash FROM usage_day LIMIT 1"}),
        )
        .await;
        let hash = single(&answer).as_str().expect("hex string");
        assert!(
            hash.len() == 64
                && hash
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{answer}"
        );
    }

    // ---- The witness forwards ---------------------------------------------------------------
    let via_witness = sql_ok(
        cluster,
        WITNESS,
        json!({"sql": "SELECT COUNT(*) AS n FROM events"}),
    )
    .await;
    let direct = sql_ok(
        cluster,
        leader,
        json!({"sql": "SELECT COUNT(*) AS n FROM events", "consistency": "strong"}),
    )
    .await;
    assert_eq!(via_witness["columns"], direct["columns"]);
    assert_eq!(via_witness["rows"], direct["rows"]);

    // ---- Bad request bodies ------------------------------------------------------------
    let bad_bodies: [(&[u8], &str); 8] = [
        (b"{\"sql\": ", "truncated JSON"),
        (b"[\"SELECT 1\"]", "an array instead of an object"),
        (b"not json at all", "not JSON"),
        (b"{\"sql\": \"SELECT 1\", \"bogus\": 1}", "bogus"),
        (b"{\"query\": \"SELECT 1\"}", "query"),
        (b"{\"sql\": 5}", "a number for sql"),
        (b"{}", "no sql"),
        (
            b"{\"sql\": \"SELECT 1\", \"consistency\": \"eventual\"}",
            "eventual",
        ),
    ];
    for (body, what) in bad_bodies {
        for node in [leader, WITNESS] {
            let r = cluster
                .post_raw(node, "/v1/sql", Some("application/json"), body.to_vec())
                .await
                .unwrap();
            assert_eq!(r.status, 400, "{what} via node {node}: {r:?}");
            let message = r.body["error"]["message"].as_str().unwrap_or("");
            assert!(!message.is_empty(), "{what}: no message: {r:?}");
            if ["bogus", "query", "eventual"].contains(&what) {
                assert!(
                    message.contains(what),
                    "the message should name `{what}`: {message:?}"
                );
            }
        }
    }
    let r = sql(
        cluster,
        leader,
        json!({"sql": "SELECT 1", "min_index": "soon"}),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    eprintln!(
        "[test] {backend:?}: all checks passed ({:?})",
        started.elapsed()
    );
}
