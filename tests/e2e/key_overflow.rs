//! The distinct-key cap on real processes: a client posts 100,000 distinct `resource`
//! values (and a spread of tenants) and memory stays bounded, the data nodes agree, every
//! request is still counted, and the record store's usage tables hold the same capped view.
//!
//! The first test runs with small caps and a small row budget (so the record store's check
//! stays quick, and the budget bites at minute granularity) and checks everything,
//! including that an aggregates answer over `read.max_aggregate_rows` is refused with the
//! documented 400 and fits once narrowed; the second runs with the default caps and reports
//! the data nodes' peak memory (VmHWM).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally_protocol::OverflowStatus;
use tally_testkit::usage::KEY_COLUMNS;

use crate::common::records::{usage_table, RecordsDb};
use crate::common::{now_ms, rows_to_map, Cluster, ClusterOpts, Format, DATA_NODES, HOUR_MS};

/// The two tests take turns: each posts 100,000 events, and the two cores are shared.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const EVENTS: u64 = 100_000;
const BATCH: u64 = 1_000;
const WRITERS: u64 = 4;
const MINUTE_MS: i64 = 60_000;
const OTHER: &str = "__other__";

/// Event `n`: a resource of its own; one in ten from one of 37 other tenants; spread over
/// four minutes of the previous hour (one hour bucket, one day bucket unless the hour
/// is the first of a day).
fn event(n: u64, hour_ms: i64) -> Value {
    let tenant = if n % 10 == 9 {
        format!("t{}.example", n % 37)
    } else {
        "acme.com".to_string()
    };
    json!({
        "event_id": format!("k-{n}"),
        "timestamp": hour_ms + (n % 4) as i64 * MINUTE_MS + (n % 1000) as i64,
        "tenant": tenant,
        "api_name": "pets",
        "api_version": "v1",
        "resource": format!("/r/{n}"),
        "method": "GET",
        "response_code": if n % 13 == 0 { 503 } else { 200 },
        "response_time_ms": n % 97,
    })
}

/// Posts all events in batches of [`BATCH`] from [`WRITERS`] concurrent writers to the
/// leader; every batch must be accepted whole, without duplicates.
async fn post_all(cluster: &Cluster, leader: u64, hour_ms: i64) -> u64 {
    let api = cluster.api();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let api = api.clone();
        writers.push(tokio::spawn(async move {
            let mut max_index = 0;
            let mut batch = w;
            while batch * BATCH < EVENTS {
                let events: Vec<Value> = (batch * BATCH..(batch + 1) * BATCH)
                    .map(|n| event(n, hour_ms))
                    .collect();
                // A loaded node may answer 503 (with Retry-After) for a moment; the same
                // ids are re-posted, which dedup makes safe.
                let mut attempts = 0;
                let resp = loop {
                    let resp = api
                        .post_events(leader, Format::Ndjson, &events)
                        .await
                        .expect("post");
                    attempts += 1;
                    if resp.status != 503 && resp.status != 429 || attempts == 50 {
                        break resp;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                assert_eq!(resp.status, 200, "batch {batch}: {:?}", resp.body);
                assert_eq!(resp.body["accepted"], BATCH, "{:?}", resp.body);
                if attempts == 1 {
                    assert_eq!(resp.body["duplicates"], 0, "{:?}", resp.body);
                }
                max_index = max_index.max(resp.body["index"].as_u64().expect("index"));
                batch += WRITERS;
            }
            max_index
        }));
    }
    let mut max_index = 0;
    for w in writers {
        max_index = max_index.max(w.await.expect("writer"));
    }
    max_index
}

fn overflow_events(o: &OverflowStatus, granularity: &str) -> u64 {
    match granularity {
        "minute" => o.events_minute,
        "hour" => o.events_hour,
        _ => o.events_day,
    }
}

fn overflow_keys(o: &OverflowStatus, granularity: &str) -> u64 {
    match granularity {
        "minute" => o.keys_minute,
        "hour" => o.keys_hour,
        _ => o.keys_day,
    }
}

/// Peak resident memory of a process, from `/proc/PID/status`.
fn vm_hwm(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .map(|l| l["VmHWM:".len()..].trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Every row of one granularity from node `id`, and whether asking for all of them at once
/// was refused: over `read.max_aggregate_rows` that is the documented 400 `too_many_rows`,
/// and this asks again bucket by bucket (`from`/`to`), as the message says to.
async fn rows_within_the_cap(cluster: &Cluster, id: u64, granularity: &str) -> (bool, Vec<Value>) {
    let whole = cluster
        .get(id, &format!("/v1/aggregates?granularity={granularity}"))
        .await
        .expect("aggregates");
    if whole.status == 200 {
        return (false, whole.body["rows"].as_array().expect("rows").clone());
    }
    assert_eq!(whole.status, 400, "{granularity}: {:?}", whole.body);
    assert_eq!(
        whole.body["error"]["code"], "too_many_rows",
        "{:?}",
        whole.body
    );
    let message = whole.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("from/to") && message.contains("group_by"),
        "{message}"
    );
    // One row per bucket fits, and gives the buckets to ask for one at a time.
    let (_, buckets) = cluster
        .aggregate_rows(id, &format!("granularity={granularity}&group_by="))
        .await;
    let width = match granularity {
        "minute" => MINUTE_MS,
        "hour" => HOUR_MS,
        _ => 24 * HOUR_MS,
    };
    let mut rows = Vec::new();
    for bucket in &buckets {
        let from = bucket["bucket_ms"].as_i64().expect("bucket_ms");
        let query = format!("granularity={granularity}&from={from}&to={}", from + width);
        let (_, part) = cluster.aggregate_rows(id, &query).await;
        rows.extend(part);
    }
    (true, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_keys_fold_into_other_and_every_view_agrees() {
    let _turn = TURN.lock().await;
    let keys_cap = 50u64;
    let tenants_cap = 3u64;
    // The four minute buckets would hold 410 rows (51 + 154 + 51 + 154: the other tenants
    // post only in odd minutes): the budget stops the minute series at 300 (plus at most
    // one all-`__other__` row per bucket). The one hour and one day bucket (154 rows) stay
    // under it.
    let row_budget = 300u64;
    // Under the minute series' rows, over any one bucket's.
    let max_aggregate_rows = 200u64;
    let store_dir = tempfile::Builder::new()
        .prefix("tally-keys-")
        .tempdir()
        .unwrap();
    let path = store_dir.path().join("records.db");
    let opts = ClusterOpts {
        record_store: Some(format!("sqlite://{}", path.display())),
        max_keys_per_tenant_bucket: Some(keys_cap),
        max_tenants_per_bucket: Some(tenants_cap),
        max_rows_per_granularity: Some(row_budget),
        max_aggregate_rows: Some(max_aggregate_rows),
        ..ClusterOpts::default()
    };
    let (cluster, leader) = Cluster::start_formed(opts).await;
    let started = Instant::now();
    let hour_ms = (now_ms() / HOUR_MS - 1) * HOUR_MS;
    let max_index = post_all(&cluster, leader, hour_ms).await;
    eprintln!("[test] {EVENTS} events posted in {:?}", started.elapsed());

    // Both data nodes hold the same state, overflow included.
    cluster.assert_same_state().await;
    let statuses = [
        cluster.status(DATA_NODES[0]).await.unwrap(),
        cluster.status(DATA_NODES[1]).await.unwrap(),
    ];
    let overflow = statuses[0].state.overflow;
    assert_eq!(
        statuses[1].state.overflow, overflow,
        "replicas agree on overflow"
    );
    assert_eq!(
        (
            overflow.max_keys_per_tenant_bucket,
            overflow.max_tenants_per_bucket,
            overflow.max_rows_per_granularity
        ),
        (keys_cap, tenants_cap, row_budget)
    );
    eprintln!("[test] overflow: {overflow:?}");

    // Per granularity: every request counted, the rest folded, no bucket over the bound,
    // the same rows on both data nodes.
    let bound = ((tenants_cap + 1) * (keys_cap + 1)) as usize;
    let mut memory = BTreeMap::new();
    for granularity in ["minute", "hour", "day"] {
        let (refused, rows) = rows_within_the_cap(&cluster, DATA_NODES[0], granularity).await;
        let (_, other) = rows_within_the_cap(&cluster, DATA_NODES[1], granularity).await;
        assert_eq!(rows, other, "{granularity}: data nodes answer alike");
        // The minute series holds more rows than one answer may carry; the single hour
        // and day bucket fewer.
        assert_eq!(
            refused,
            rows.len() > max_aggregate_rows as usize,
            "{granularity}: {} rows",
            rows.len()
        );
        assert_eq!(refused, granularity == "minute", "{granularity}");
        let total: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
        assert_eq!(total, EVENTS, "{granularity}: requests over all keys");
        let folded: Vec<&Value> = rows.iter().filter(|r| r["resource"] == OTHER).collect();
        let folded_requests: u64 = folded.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
        assert!(
            folded_requests > EVENTS / 2,
            "{granularity}: {folded_requests}"
        );
        assert_eq!(folded_requests, overflow_events(&overflow, granularity));
        assert_eq!(folded.len() as u64, overflow_keys(&overflow, granularity));
        assert!(
            folded.iter().any(|r| r["tenant"] == OTHER),
            "{granularity}: tenants past the cap fold into the all-other key"
        );
        let mut per_bucket: BTreeMap<i64, usize> = BTreeMap::new();
        for row in &rows {
            *per_bucket
                .entry(row["bucket_ms"].as_i64().unwrap())
                .or_default() += 1;
        }
        assert!(
            per_bucket.values().all(|&n| n <= bound),
            "{granularity}: rows per bucket {per_bucket:?} over {bound}"
        );
        // The row budget: reached at minute granularity, passed only by one overflow row
        // per bucket.
        let budget = row_budget as usize;
        assert!(
            rows.len() <= budget + per_bucket.len(),
            "{granularity}: {} rows over a budget of {budget} in {} buckets",
            rows.len(),
            per_bucket.len()
        );
        if granularity == "minute" {
            assert!(rows.len() >= budget, "minute: {} rows", rows.len());
        }
        memory.insert(granularity, rows_to_map(&rows, &KEY_COLUMNS));
    }

    // /metrics shows the same figures.
    for id in DATA_NODES {
        let metrics = cluster.get(id, "/metrics").await.unwrap();
        let text = metrics.body.as_str().expect("metrics text");
        for (granularity, value) in [
            ("minute", overflow.events_minute),
            ("day", overflow.events_day),
        ] {
            let line =
                format!("tally_overflow_events_total{{granularity=\"{granularity}\"}} {value}");
            assert!(text.lines().any(|l| l == line), "node {id}: no {line:?}");
        }
        let line = format!(
            "tally_aggregate_overflow_keys{{granularity=\"hour\"}} {}",
            overflow.keys_hour
        );
        assert!(text.lines().any(|l| l == line), "node {id}: no {line:?}");
        let line = format!("tally_row_budget_max_rows_per_granularity {row_budget}");
        assert!(text.lines().any(|l| l == line), "node {id}: no {line:?}");
    }

    // The record store: every raw event in `events`; the usage tables hold the capped
    // view, row for row the in-memory one; per bucket, usage totals equal a GROUP BY over
    // `events` (the uncapped view).
    cluster
        .wait_sink_caught_up(max_index, Duration::from_secs(120))
        .await;
    eprintln!("[test] sink caught up at {:?}", started.elapsed());
    let records = RecordsDb::sqlite(&path).await;
    assert_eq!(
        records.scalar("SELECT COUNT(*) FROM events").await,
        EVENTS.to_string()
    );
    for (granularity, width) in [
        ("minute", MINUTE_MS),
        ("hour", HOUR_MS),
        ("day", 24 * HOUR_MS),
    ] {
        let usage = usage_table(&records, granularity).await;
        assert_eq!(
            usage, memory[granularity],
            "usage_{granularity} equals the in-memory aggregates"
        );
        let per_bucket = |sql: String| {
            let records = &records;
            async move { records.rows(&sql).await }
        };
        let usage_totals = per_bucket(format!(
            "SELECT bucket_ms, SUM(requests), SUM(errors_5xx), SUM(latency_sum_ms) \
             FROM usage_{granularity} GROUP BY bucket_ms ORDER BY bucket_ms"
        ))
        .await;
        let event_totals = per_bucket(format!(
            "SELECT (ts_ms / {width}) * {width} AS b, SUM(kind = 'request'), \
                    SUM(response_code BETWEEN 500 AND 599), SUM(response_time_ms) \
             FROM events GROUP BY b ORDER BY b"
        ))
        .await;
        assert_eq!(
            usage_totals, event_totals,
            "usage_{granularity}: totals per bucket equal a GROUP BY over events"
        );
        let other_rows = records
            .scalar(&format!(
                "SELECT COUNT(*) FROM usage_{granularity} WHERE resource = '{OTHER}'"
            ))
            .await;
        assert_eq!(
            other_rows,
            overflow_keys(&overflow, granularity).to_string()
        );
    }
    eprintln!("[test] done at {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_caps_bound_memory_under_distinct_resources() {
    let _turn = TURN.lock().await;
    let (cluster, leader) = Cluster::start_formed(ClusterOpts::default()).await;
    let before: Vec<String> = DATA_NODES
        .iter()
        .map(|&id| vm_hwm(cluster.pid(id).expect("pid")))
        .collect();
    let started = Instant::now();
    let hour_ms = (now_ms() / HOUR_MS - 1) * HOUR_MS;
    post_all(&cluster, leader, hour_ms).await;
    cluster.assert_same_state().await;
    let status = cluster.status(leader).await.unwrap();
    let o = status.state.overflow;
    assert_eq!(
        (
            o.max_keys_per_tenant_bucket,
            o.max_tenants_per_bucket,
            o.max_rows_per_granularity
        ),
        (
            tally_analytics::DEFAULT_MAX_KEYS_PER_TENANT_BUCKET.into(),
            tally_analytics::DEFAULT_MAX_TENANTS_PER_BUCKET.into(),
            tally_analytics::DEFAULT_MAX_ROWS_PER_GRANULARITY.into()
        )
    );
    assert!(o.events_minute > EVENTS / 2, "{o:?}");
    let bound = (o.max_tenants_per_bucket + 1) * (o.max_keys_per_tenant_bucket + 1);
    // Four minute buckets, one or two hour and day buckets.
    assert!(
        status.state.buckets_minute <= 4 * bound,
        "{:?}",
        status.state
    );
    for (i, &id) in DATA_NODES.iter().enumerate() {
        eprintln!(
            "[test] node {id}: VmHWM {} before, {} after {EVENTS} distinct resources \
             (default caps; {} minute rows, {} hour rows, {} day rows) in {:?}",
            before[i],
            vm_hwm(cluster.pid(id).expect("pid")),
            status.state.buckets_minute,
            status.state.buckets_hour,
            status.state.buckets_day,
            started.elapsed()
        );
    }
}
