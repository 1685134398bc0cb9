//! Record-store helpers for the end-to-end tests: a deterministic event generator, a chaos
//! workload of concurrent writers, a way to read the record store that does not go through
//! the code under test (the `mariadb` client, or a read-only SQLite connection), and the
//! exactness checks of docs/sql.md (each acknowledged event once; usage tables equal a
//! `GROUP BY` over `events`; the in-memory aggregates agree).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::{Row, TypeInfo, Value as _, ValueRef};
use tally_testkit::usage::{usage_symmetric_difference_sql, KEY_COLUMNS, MEASURE_COLUMNS};
use tally_testkit::MariaDb;

use super::{
    event_ts_ms, rfc3339, rows_to_map, Api, Cluster, Format, Measures, Model, ALL_NODES,
    DATA_NODES, DAY_MS, HOUR_MS,
};

// ---- Reading the record store ------------------------------------------------------------------

/// The record store as the test reads it: never through Tally itself.
pub enum RecordsDb<'a> {
    /// Through the `mariadb` command-line client, database [`tally_testkit::DEFAULT_DATABASE`].
    MariaDb(&'a MariaDb),
    /// A read-only connection to the SQLite file both data nodes share.
    Sqlite(sqlx::SqlitePool),
}

impl RecordsDb<'_> {
    /// Opens the SQLite file read-only (the nodes keep writing it in WAL mode meanwhile).
    pub async fn sqlite(path: &Path) -> RecordsDb<'static> {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()));
        RecordsDb::Sqlite(pool)
    }

    pub fn is_mysql(&self) -> bool {
        matches!(self, RecordsDb::MariaDb(_))
    }

    /// Runs one query; every value as text, `NULL` for NULL.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        match self {
            RecordsDb::MariaDb(db) => {
                let text = tokio::task::block_in_place(|| {
                    db.sql(&format!("USE {}; {sql}", tally_testkit::DEFAULT_DATABASE))
                })
                .unwrap_or_else(|e| panic!("{e:#}"));
                text.lines()
                    .map(|l| l.split('\t').map(str::to_string).collect())
                    .collect()
            }
            RecordsDb::Sqlite(pool) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .fetch_all(pool)
                    .await
                    .unwrap_or_else(|e| panic!("sqlite query failed: {e}\n{sql}"));
                rows.iter().map(sqlite_row_text).collect()
            }
        }
    }

    /// A query that must return exactly one value.
    pub async fn scalar(&self, sql: &str) -> String {
        let rows = self.rows(sql).await;
        assert!(
            rows.len() == 1 && rows[0].len() == 1,
            "{sql}: expected one value, got {rows:?}"
        );
        rows[0][0].clone()
    }
}

fn sqlite_row_text(row: &sqlx::sqlite::SqliteRow) -> Vec<String> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i).expect("column");
            if raw.is_null() {
                return "NULL".to_string();
            }
            let class = raw.to_owned().type_info().name().to_string();
            match class.as_str() {
                "INTEGER" => row.try_get_unchecked::<i64, _>(i).unwrap().to_string(),
                "REAL" => row.try_get_unchecked::<f64, _>(i).unwrap().to_string(),
                _ => row.try_get_unchecked::<String, _>(i).unwrap(),
            }
        })
        .collect()
}

// ---- Events ------------------------------------------------------------------------------------

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub fn event_id(n: u64) -> String {
    format!("ev-{n:07}")
}

/// The number inside an id made by [`event_id`].
pub fn event_number(id: &str) -> Option<u64> {
    id.strip_prefix("ev-")?.parse().ok()
}

/// Event number `n`: a pure function of `n` (a re-sent id always carries the same content),
/// with varied kinds, codes, absent optional fields, keys that differ only in case or a
/// trailing space, `""` next to an absent key field, and integer and RFC 3339 timestamps
/// spread over the three days before `base_ms`.
pub fn gen_event(n: u64, base_ms: i64) -> Value {
    let h = mix(n ^ 0x7a11_5eed);
    let pick = |shift: u32, m: u64| (h >> shift) % m;
    let ts = base_ms - (mix(h) % (3 * DAY_MS as u64)) as i64;
    let kind = match pick(0, 20) {
        0 | 1 => "fault",
        2 | 3 => "throttle",
        _ => "request",
    };
    let api_name = ["PizzaShack", "pets", "Pets"][pick(11, 3) as usize];
    let api_version = ["1.0.0", "v2"][pick(13, 2) as usize];
    let resource = ["/menu", "/pets/{id}", "/orders"][pick(17, 3) as usize];
    let method = ["GET", "POST", "GET "][pick(19, 3) as usize];
    let mut e = json!({
        "event_id": event_id(n),
        "api_name": api_name,
        "api_version": api_version,
        "resource": resource,
        "method": method,
        "username": format!("user{}", pick(50, 40)),
        "user_ip": format!("10.1.{}.{}", pick(56, 4), pick(58, 250)),
    });
    let o = e.as_object_mut().unwrap();
    o.insert(
        "timestamp".into(),
        match pick(5, 5) {
            0 => json!(rfc3339(ts, [-5, 0, 2][pick(8, 3) as usize])),
            _ => json!(ts),
        },
    );
    if kind != "request" || pick(4, 2) == 0 {
        o.insert("kind".into(), json!(kind));
    }
    match pick(9, 4) {
        0 => {}
        1 => {
            o.insert("tenant".into(), json!(""));
        }
        2 => {
            o.insert("tenant".into(), json!("acme.com"));
        }
        _ => {
            o.insert("tenant".into(), json!("Acme.com"));
        }
    }
    match pick(15, 3) {
        0 => {}
        k => {
            o.insert("application_id".into(), json!(format!("app-{k}")));
        }
    }
    let code = match kind {
        "request" => {
            Some([200, 200, 200, 201, 204, 302, 400, 404, 429, 500, 503][pick(21, 11) as usize])
        }
        "fault" => (pick(25, 2) == 0).then_some(502),
        _ => (pick(26, 2) == 0).then_some(429),
    };
    if let Some(c) = code {
        o.insert("response_code".into(), json!(c));
    }
    if pick(27, 7) != 0 {
        o.insert("response_time_ms".into(), json!(pick(30, 2000)));
    }
    if pick(41, 5) != 0 {
        o.insert("response_size".into(), json!(pick(44, 100_000)));
    }
    if pick(62, 2) == 0 {
        o.insert("cache_hit".into(), json!(pick(61, 2) == 0));
    }
    match kind {
        "fault" => {
            o.insert("error_code".into(), json!("900800"));
            o.insert("error_message".into(), json!("backend timeout"));
        }
        "throttle" => {
            o.insert("throttled_reason".into(), json!("QUOTA"));
        }
        _ => {}
    }
    e
}

/// The columns of `events` [`assert_records_exact`] compares with the generator.
const CONTENT_COLUMNS: &str = "event_id, ts_ms, kind, tenant, api_name, api_version, \
     application_id, resource, method, response_code, response_time_ms, response_size";

/// What [`CONTENT_COLUMNS`] must hold for event `e`, as text.
fn expected_content(e: &Value) -> Vec<String> {
    let text = |k: &str| e[k].as_str().unwrap_or("").to_string();
    let num = |k: &str| e[k].as_u64().map_or("NULL".to_string(), |v| v.to_string());
    vec![
        text("event_id"),
        event_ts_ms(e).to_string(),
        e["kind"].as_str().unwrap_or("request").to_string(),
        text("tenant"),
        text("api_name"),
        text("api_version"),
        text("application_id"),
        text("resource"),
        text("method"),
        num("response_code"),
        num("response_time_ms"),
        num("response_size"),
    ]
}

// ---- The chaos workload ------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct WorkloadOpts {
    /// Distinct events to send in all.
    pub total: u64,
    /// New (never sent) events per second, over all writers.
    pub rate_per_s: f64,
    pub writers: u64,
    /// Fresh events per batch, a random number in this range (duplicates come on top).
    pub batch: std::ops::Range<u64>,
    /// Event times lie in the three days before this.
    pub base_ms: i64,
    pub seed: u64,
}

/// Attempts per batch before a writer gives up on it (its ids stay "attempted").
const MAX_ATTEMPTS: u32 = 150;
/// Time per batch before a writer gives up on it.
const BATCH_DEADLINE: Duration = Duration::from_secs(60);
/// Batches per writer at most, whatever happens.
const MAX_BATCHES_PER_WRITER: u64 = 5_000;

struct Shared {
    opts: WorkloadOpts,
    /// Next fresh event number.
    next: AtomicU64,
    stop: AtomicBool,
    /// Recently attempted event numbers (any writer): the pool of cross-batch duplicates.
    recent: Mutex<VecDeque<u64>>,
    acked_batches: AtomicU64,
    epoch: Instant,
}

/// What the writers did, merged.
#[derive(Debug, Default)]
pub struct Outcome {
    pub attempted: BTreeSet<u64>,
    pub acked: BTreeSet<u64>,
    /// Highest Raft index of an acknowledgement.
    pub max_ack_index: u64,
    pub batches_acked: u64,
    pub reposts: u64,
    pub events_sent: u64,
    pub retries: u64,
    /// Batches given up after MAX_ATTEMPTS / BATCH_DEADLINE.
    pub abandoned: u64,
    /// `status code` → how many answers (refusals that were retried).
    pub refusals: BTreeMap<String, u64>,
    /// Answers the writers did not expect.
    pub unexpected: Vec<String>,
}

impl Outcome {
    fn merge(&mut self, o: Outcome) {
        self.attempted.extend(o.attempted);
        self.acked.extend(o.acked);
        self.max_ack_index = self.max_ack_index.max(o.max_ack_index);
        self.batches_acked += o.batches_acked;
        self.reposts += o.reposts;
        self.events_sent += o.events_sent;
        self.retries += o.retries;
        self.abandoned += o.abandoned;
        for (k, v) in o.refusals {
            *self.refusals.entry(k).or_default() += v;
        }
        self.unexpected.extend(o.unexpected);
    }

    pub fn summary(&self) -> String {
        format!(
            "attempted {} distinct events, acknowledged {} in {} batches ({} re-posted), \
             {} events sent with duplicates, {} retries, {} batches abandoned, \
             highest acknowledged index {}, refusals {:?}",
            self.attempted.len(),
            self.acked.len(),
            self.batches_acked,
            self.reposts,
            self.events_sent,
            self.retries,
            self.abandoned,
            self.max_ack_index,
            self.refusals
        )
    }
}

/// Concurrent writers posting paced batches of generated events to random nodes.
pub struct Workload {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<Outcome>>,
}

impl Workload {
    pub fn start(api: Api, opts: WorkloadOpts) -> Workload {
        let shared = Arc::new(Shared {
            opts: opts.clone(),
            next: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            recent: Mutex::new(VecDeque::new()),
            acked_batches: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let tasks = (0..opts.writers)
            .map(|w| tokio::spawn(writer(w, api.clone(), shared.clone())))
            .collect();
        Workload { shared, tasks }
    }

    pub fn acked_batches(&self) -> u64 {
        self.shared.acked_batches.load(Ordering::Relaxed)
    }

    /// Fresh event numbers handed out so far.
    pub fn issued(&self) -> u64 {
        self.shared
            .next
            .load(Ordering::Relaxed)
            .min(self.shared.opts.total)
    }

    pub fn done_issuing(&self) -> bool {
        self.issued() >= self.shared.opts.total
    }

    /// Waits (bounded) until `n` more batches than `from` are acknowledged.
    pub async fn wait_acks(&self, from: u64, n: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let now = self.acked_batches();
            if now >= from + n {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "writers got only {} acknowledgements in {within:?} (wanted {n})",
                now - from
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) for every writer to finish (they stop once `total` events are
    /// issued and their last batch is settled) and merges their reports.
    pub async fn finish(self, within: Duration) -> Outcome {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Outcome::default();
        for task in self.tasks {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(r) => out.merge(r.expect("writer task panicked")),
                Err(_) => {
                    self.shared.stop.store(true, Ordering::Relaxed);
                    panic!("writers did not finish within {within:?}");
                }
            }
        }
        out
    }
}

async fn writer(w: u64, api: Api, shared: Arc<Shared>) -> Outcome {
    let opts = &shared.opts;
    let mut rng = StdRng::seed_from_u64(opts.seed.wrapping_mul(31).wrapping_add(w));
    let mut out = Outcome::default();
    // Recently acknowledged batches, for re-posting.
    let mut history: VecDeque<Vec<Value>> = VecDeque::new();
    for seq in 0..MAX_BATCHES_PER_WRITER {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let repost = seq % 10 == 9 && !history.is_empty();
        let (events, in_batch_dups) = if repost {
            let i = rng.gen_range(0..history.len());
            (history[i].clone(), 0)
        } else {
            // Pace fresh ids: fresh event n goes out no earlier than n / rate seconds.
            let n = shared.next.load(Ordering::Relaxed);
            if n >= opts.total {
                break;
            }
            let due = shared.epoch + Duration::from_secs_f64(n as f64 / opts.rate_per_s);
            while Instant::now() < due && !shared.stop.load(Ordering::Relaxed) {
                tokio::time::sleep((due - Instant::now()).min(Duration::from_millis(200))).await;
            }
            let k = rng.gen_range(opts.batch.clone());
            let first = shared.next.fetch_add(k, Ordering::Relaxed);
            if first >= opts.total {
                break;
            }
            let fresh: Vec<u64> = (first..(first + k).min(opts.total)).collect();
            let mut numbers = fresh.clone();
            // Duplicates inside the batch...
            let inside = (fresh.len() / 30).max(1);
            for _ in 0..inside {
                numbers.push(*fresh.choose(&mut rng).unwrap());
            }
            // ... and of ids other batches (of any writer) sent or are sending.
            {
                let mut recent = shared.recent.lock().unwrap();
                for _ in 0..(fresh.len() / 30) {
                    if recent.is_empty() {
                        break;
                    }
                    let i = rng.gen_range(0..recent.len());
                    numbers.push(recent[i]);
                }
                recent.extend(fresh.iter().copied());
                while recent.len() > 5_000 {
                    recent.pop_front();
                }
            }
            numbers.shuffle(&mut rng);
            let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
            let dups = numbers.len() - distinct.len();
            let events = numbers
                .iter()
                .map(|&n| gen_event(n, opts.base_ms))
                .collect::<Vec<_>>();
            (events, dups)
        };
        let numbers: Vec<u64> = events
            .iter()
            .map(|e| event_number(e["event_id"].as_str().unwrap()).unwrap())
            .collect();
        out.attempted.extend(numbers.iter().copied());
        out.events_sent += events.len() as u64;
        if repost {
            out.reposts += 1;
        }
        let format = if seq % 2 == 0 {
            Format::Array
        } else {
            Format::Ndjson
        };
        let started = Instant::now();
        let mut acked = false;
        for attempt in 0..MAX_ATTEMPTS {
            if started.elapsed() > BATCH_DEADLINE {
                break;
            }
            if attempt > 0 {
                out.retries += 1;
                tokio::time::sleep(Duration::from_millis(rng.gen_range(50..200))).await;
            }
            let node = ALL_NODES[rng.gen_range(0..ALL_NODES.len())];
            match api.post_events(node, format, &events).await {
                Ok(r) if r.status == 200 => {
                    let accepted = r.body["accepted"].as_u64();
                    let duplicates = r.body["duplicates"].as_u64().unwrap_or(0);
                    if accepted != Some(events.len() as u64) {
                        out.unexpected.push(format!(
                            "writer {w}: 200 for {} events: {r:?}",
                            events.len()
                        ));
                    }
                    // A re-posted acknowledged batch is all duplicates; a fresh one at least
                    // its own repeats.
                    let least = if repost { events.len() } else { in_batch_dups } as u64;
                    if duplicates < least || duplicates > events.len() as u64 {
                        out.unexpected.push(format!(
                            "writer {w}: {duplicates} duplicates, expected at least {least} \
                             (repost: {repost}): {r:?}"
                        ));
                    }
                    match r.body["index"].as_u64() {
                        Some(i) => out.max_ack_index = out.max_ack_index.max(i),
                        None => out.unexpected.push(format!("writer {w}: no index: {r:?}")),
                    }
                    acked = true;
                    break;
                }
                Ok(r) if r.status == 503 || r.status == 429 => {
                    *out.refusals
                        .entry(format!("{} {}", r.status, r.error_code().unwrap_or("?")))
                        .or_default() += 1;
                    if r.retry_after.is_none() {
                        out.unexpected.push(format!(
                            "writer {w}: {} without Retry-After: {r:?}",
                            r.status
                        ));
                    }
                }
                Ok(r) => {
                    out.unexpected
                        .push(format!("writer {w} via node {node}: {r:?}"));
                    break;
                }
                // The node is down or died mid-request: the outcome is unknown, and
                // retrying with the same ids is safe.
                Err(_) => {
                    *out.refusals.entry("transport error".into()).or_default() += 1;
                }
            }
        }
        if acked {
            out.acked.extend(numbers);
            out.batches_acked += 1;
            shared.acked_batches.fetch_add(1, Ordering::Relaxed);
            if !repost {
                history.push_back(events);
                if history.len() > 8 {
                    history.pop_front();
                }
            }
        } else {
            out.abandoned += 1;
        }
    }
    out
}

/// SIGKILLs the current leader while the workload runs, checks that acknowledgements resume
/// on the survivors, keeps it down at least `down_for`, then restarts it. Returns the new
/// leader.
pub async fn kill_leader(cluster: &mut Cluster, workload: &Workload, down_for: Duration) -> u64 {
    let leader = cluster.wait_leader().await;
    let before = workload.acked_batches();
    cluster.kill(leader);
    let killed = Instant::now();
    workload.wait_acks(before, 3, Duration::from_secs(30)).await;
    eprintln!(
        "[test] acknowledgements resumed {:?} after node {leader} was killed",
        killed.elapsed()
    );
    tokio::time::sleep(down_for.saturating_sub(killed.elapsed())).await;
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader, "a killed node cannot lead");
    cluster.restart(leader).await;
    new_leader
}

/// SIGSTOPs the current leader for `paused_for` while the workload runs: the others elect
/// a new leader; then it runs again, deposed, and whatever its sink was doing when it froze
/// (a transaction, a cursor proposal) carries on against a record store another sink may
/// have moved since. Returns the leader after that, once acknowledgements flow again.
///
/// (Writers' requests that reach the frozen node hang until it resumes, so progress is
/// only awaited afterwards.)
pub async fn pause_leader(cluster: &Cluster, workload: &Workload, paused_for: Duration) -> u64 {
    let leader = cluster.wait_leader().await;
    cluster.pause(leader);
    tokio::time::sleep(paused_for).await;
    cluster.resume(leader);
    let new_leader = cluster.wait_leader().await;
    let before = workload.acked_batches();
    workload.wait_acks(before, 3, Duration::from_secs(30)).await;
    eprintln!("[test] node {leader} was paused for {paused_for:?}; node {new_leader} leads");
    new_leader
}

// ---- Exactness ---------------------------------------------------------------------------------

fn measures_from_text(row: &[String]) -> Measures {
    let n = |i: usize| -> u64 {
        row[i]
            .parse()
            .unwrap_or_else(|_| panic!("column {i} of {row:?} is not a number"))
    };
    let opt = |i: usize| -> Option<u64> {
        (row[i] != "NULL").then(|| row[i].parse().expect("number or NULL"))
    };
    Measures {
        requests: n(0),
        errors_4xx: n(1),
        errors_5xx: n(2),
        faults: n(3),
        throttled: n(4),
        latency_count: n(5),
        latency_sum_ms: n(6),
        latency_min_ms: opt(7),
        latency_max_ms: opt(8),
        bytes_sum: n(9),
    }
}

/// `usage_<granularity>` as a model: `(bucket_ms, six key values) → measures`.
pub async fn usage_table(db: &RecordsDb<'_>, granularity: &str) -> Model {
    let sql = format!(
        "SELECT bucket_ms, {}, {MEASURE_COLUMNS} FROM usage_{granularity}",
        KEY_COLUMNS.join(", ")
    );
    let mut out = Model::new();
    for row in db.rows(&sql).await {
        let bucket: i64 = row[0].parse().expect("bucket_ms");
        let key = row[1..7].to_vec();
        let prev = out.insert((bucket, key.clone()), measures_from_text(&row[7..]));
        assert!(
            prev.is_none(),
            "usage_{granularity}: two rows for {bucket} {key:?}"
        );
    }
    out
}

fn describe_diff(a: &Model, b: &Model, a_name: &str, b_name: &str) -> String {
    let keys: BTreeSet<_> = a.keys().chain(b.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("  {k:?}: {a_name} {:?}, {b_name} {:?}", a.get(k), b.get(k)))
        .collect();
    format!(
        "{} of {}/{} rows differ:\n{}",
        diffs.len(),
        a.len(),
        b.len(),
        diffs.into_iter().take(20).collect::<Vec<_>>().join("\n")
    )
}

/// The exactness checks (docs/sql.md) after the sink caught up: `events` holds every acknowledged event
/// exactly once and nothing that was never sent, each with the content that was sent; each
/// usage table equals a `GROUP BY` over `events`; `sink_state` covers every acknowledgement;
/// the in-memory aggregates of both data nodes (hour and day) equal the usage tables.
/// Returns the number of rows in `events`.
pub async fn assert_records_exact(
    cluster: &Cluster,
    db: &RecordsDb<'_>,
    outcome: &Outcome,
    base_ms: i64,
) -> usize {
    // 1. acked ⊆ events ⊆ attempted, no id twice.
    let ids: Vec<String> = db
        .rows("SELECT event_id FROM events")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let mut stored = BTreeSet::new();
    for id in &ids {
        let n =
            event_number(id).unwrap_or_else(|| panic!("events holds an id nobody sent: {id:?}"));
        assert!(stored.insert(n), "events holds {id} twice");
    }
    let lost: Vec<String> = outcome
        .acked
        .difference(&stored)
        .map(|&n| event_id(n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events are missing from `events`, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let invented: Vec<String> = stored
        .difference(&outcome.attempted)
        .map(|&n| event_id(n))
        .collect();
    assert!(
        invented.is_empty(),
        "`events` holds {} ids that were never sent, e.g. {:?}",
        invented.len(),
        &invented[..invented.len().min(10)]
    );

    // 2. No id twice, by SQL too (the primary key says so; check that it is there).
    let twice = db
        .rows("SELECT event_id, COUNT(*) FROM events GROUP BY event_id HAVING COUNT(*) > 1")
        .await;
    assert!(twice.is_empty(), "ids stored more than once: {twice:?}");
    let counts = db
        .rows("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events")
        .await;
    assert_eq!(
        counts,
        vec![vec![ids.len().to_string(), ids.len().to_string()]],
        "COUNT(*) vs COUNT(DISTINCT event_id) vs rows read"
    );

    // 3. Each row holds what was sent under its id.
    let rows = db
        .rows(&format!("SELECT {CONTENT_COLUMNS} FROM events"))
        .await;
    assert_eq!(rows.len(), ids.len());
    let mut wrong = Vec::new();
    for row in &rows {
        let n = event_number(&row[0]).unwrap();
        let want = expected_content(&gen_event(n, base_ms));
        if row != &want {
            wrong.push(format!("  stored {row:?}\n  sent   {want:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} rows of `events` differ from the events sent:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );

    // 4. usage_* = GROUP BY over events (a full symmetric difference in SQL), and the
    //    in-memory aggregates agree.
    assert_usage_exact(cluster, db).await;
    for granularity in ["minute", "hour", "day"] {
        let requests = db
            .scalar(&format!(
                "SELECT COALESCE(SUM(requests), 0) FROM usage_{granularity}"
            ))
            .await;
        let want = rows_of_kind(&stored, base_ms, "request");
        assert_eq!(
            requests,
            want.to_string(),
            "usage_{granularity}: SUM(requests)"
        );
    }

    // 5. The record store's cursor covers every row it holds. (It need not reach the last
    //    acknowledgement: entries whose events were all duplicates give it nothing to
    //    write.)
    let cursor: u64 = db
        .scalar("SELECT applied_index FROM sink_state")
        .await
        .parse()
        .unwrap();
    let newest: u64 = db
        .scalar("SELECT COALESCE(MAX(log_index), 0) FROM events")
        .await
        .parse()
        .unwrap();
    let mut applied = 0;
    for id in cluster.live_data_nodes() {
        let s = cluster.status(id).await.unwrap();
        applied = applied.max(s.applied_index);
    }
    assert!(
        newest <= cursor && cursor <= applied,
        "sink_state.applied_index {cursor} must lie between the newest events.log_index \
         {newest} and the cluster's applied index {applied}"
    );

    assert!(DATA_NODES.iter().all(|&id| cluster.is_running(id)));
    ids.len()
}

/// Every usage table equals a `GROUP BY` over `events` (a full symmetric difference,
/// computed by the database); the in-memory hour and day aggregates of every live data node
/// equal `usage_hour` and `usage_day`; and each node counted as many events as `events`
/// holds. Call it once the sink has caught up.
pub async fn assert_usage_exact(cluster: &Cluster, db: &RecordsDb<'_>) {
    let events: u64 = db
        .scalar("SELECT COUNT(*) FROM events")
        .await
        .parse()
        .unwrap();
    for (granularity, width) in [("minute", 60_000), ("hour", HOUR_MS), ("day", DAY_MS)] {
        let table = format!("usage_{granularity}");
        let diff = db
            .rows(&usage_symmetric_difference_sql(
                db.is_mysql(),
                &table,
                width,
            ))
            .await;
        assert!(
            diff.is_empty(),
            "{table} differs from a GROUP BY over events in {} rows, e.g.:\n{}",
            diff.len(),
            diff.iter()
                .take(20)
                .map(|r| format!("  {r:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let rows: u64 = db
            .scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .await
            .parse()
            .unwrap();
        assert!(
            rows > 0 || events == 0,
            "{table} is empty but events has {events} rows"
        );
    }
    // The in-memory aggregates say the same.
    for granularity in ["hour", "day"] {
        let table = usage_table(db, granularity).await;
        for id in cluster.live_data_nodes() {
            let (_, rows) = cluster
                .aggregate_rows(id, &format!("granularity={granularity}"))
                .await;
            let memory = rows_to_map(&rows, &KEY_COLUMNS);
            assert!(
                memory == table,
                "node {id}: in-memory {granularity} aggregates differ from usage_{granularity}: {}",
                describe_diff(&memory, &table, "memory", "table")
            );
        }
    }
    for id in cluster.live_data_nodes() {
        let s = cluster.status(id).await.unwrap();
        assert_eq!(
            Some(s.state.events_applied),
            Some(events),
            "node {id}: events counted in memory vs rows in `events`: {:?}",
            s.state
        );
    }
}

/// Duplicates with conflicting content: the first occurrence (in log order; inside a batch,
/// in batch order) is the one counted in memory and the one stored; ids that differ only in
/// case are different events (the store compares bytewise). Posts through a follower and
/// the witness, then checks the rows and [`assert_usage_exact`].
pub async fn assert_first_occurrence_wins(cluster: &Cluster, db: &RecordsDb<'_>) {
    let leader = cluster.wait_leader().await;
    let follower = DATA_NODES.into_iter().find(|&id| id != leader).unwrap();
    let ts = super::now_ms() - 60_000;
    let event = |id: &str, api: &str, code: u64| {
        json!({
            "event_id": id, "timestamp": ts, "api_name": api, "api_version": "v1",
            "resource": "/r", "method": "GET", "response_code": code, "response_time_ms": 5,
        })
    };
    let first = json!([
        event("Dup-X", "First", 200),
        event("Dup-X", "Second", 500),
        event("Case-ID", "Upper", 200),
        event("case-id", "Lower", 404),
        event("Dup-Z", "Zed", 200),
    ]);
    let r = cluster.post_json(follower, &first).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["accepted"], json!(5), "{r:?}");
    assert_eq!(r.body["duplicates"], json!(1), "{r:?}");
    let second = json!([
        event("Dup-X", "Third", 503),
        event("Dup-Z", "Other", 500),
        event("CASE-ID", "Shout", 200),
    ]);
    let r = cluster.post_json(super::WITNESS, &second).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["accepted"], json!(3), "{r:?}");
    assert_eq!(r.body["duplicates"], json!(2), "{r:?}");
    let index = r.body["index"].as_u64().unwrap();
    cluster
        .wait_sink_caught_up(index, Duration::from_secs(30))
        .await;
    cluster.assert_same_state().await;

    let stored: BTreeMap<String, (String, String)> = db
        .rows(
            "SELECT event_id, api_name, response_code FROM events \
             WHERE event_id IN ('Dup-X', 'Dup-Z', 'Case-ID', 'case-id', 'CASE-ID')",
        )
        .await
        .into_iter()
        .map(|r| (r[0].clone(), (r[1].clone(), r[2].clone())))
        .collect();
    let want: BTreeMap<String, (String, String)> = [
        ("Dup-X", "First", "200"),
        ("Dup-Z", "Zed", "200"),
        ("Case-ID", "Upper", "200"),
        ("case-id", "Lower", "404"),
        ("CASE-ID", "Shout", "200"),
    ]
    .into_iter()
    .map(|(id, api, code)| (id.to_string(), (api.to_string(), code.to_string())))
    .collect();
    assert_eq!(
        stored, want,
        "the first occurrence of each id must be stored"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM events WHERE event_id = 'case-id'")
            .await,
        "1",
        "event ids must compare case-sensitively"
    );
    assert_usage_exact(cluster, db).await;
}

/// Proves that the checks above can fail: bumps `requests` in the earliest `usage_minute`
/// bucket (through `tamper`, a writable connection of the test's own) and expects the
/// symmetric difference to report it. Call it last: it changes the record store.
pub async fn assert_tampering_is_detected(db: &RecordsDb<'_>, tamper: impl AsyncFnOnce(&str)) {
    let sql = usage_symmetric_difference_sql(db.is_mysql(), "usage_minute", 60_000);
    assert!(db.rows(&sql).await.is_empty());
    tamper(
        "UPDATE usage_minute SET requests = requests + 1 \
         WHERE bucket_ms = (SELECT b FROM (SELECT MIN(bucket_ms) AS b FROM usage_minute) AS m)",
    )
    .await;
    let diff = db.rows(&sql).await;
    assert!(
        !diff.is_empty() && diff.len() % 2 == 0,
        "a tampered usage_minute row went unnoticed by the symmetric difference: {diff:?}"
    );
}

fn rows_of_kind(stored: &BTreeSet<u64>, base_ms: i64, kind: &str) -> u64 {
    stored
        .iter()
        .filter(|&&n| gen_event(n, base_ms)["kind"].as_str().unwrap_or("request") == kind)
        .count() as u64
}
