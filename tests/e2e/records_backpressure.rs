//! Back-pressure from the record store: bounded, explicit, and lossless.
//!
//! With `[sink] max_backlog_events = 500` and MariaDB stopped, ingest keeps being
//! acknowledged until 500 events wait for the record store, then answers 503 with a
//! `Retry-After` header and the code `record_store_backlog` (also through a follower and the
//! witness, which forward). The leader's `/v1/cluster` sink shows the error and a rising
//! `consecutive_errors`. When MariaDB is back the sink catches up on its own, the refused
//! batch is accepted on retry, and the record store holds every event exactly once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::records::{assert_records_exact, event_number, gen_event, Outcome, RecordsDb};
use crate::common::{now_ms, sink_detail, Cluster, ClusterOpts, Format, Resp, ALL_NODES};
use serde_json::Value;
use tally_testkit::MariaDb;

const BACKLOG: u64 = 500;
const BATCH: u64 = 100;

struct Writer {
    next: u64,
    base_ms: i64,
    outcome: Outcome,
}

impl Writer {
    fn batch(&mut self) -> Vec<Value> {
        let events = (self.next..self.next + BATCH)
            .map(|n| gen_event(n, self.base_ms))
            .collect::<Vec<_>>();
        self.next += BATCH;
        self.outcome.attempted.extend(events.iter().map(number));
        events
    }

    fn acked(&mut self, events: &[Value], r: &Resp) {
        assert_eq!(
            r.body["accepted"].as_u64(),
            Some(events.len() as u64),
            "{r:?}"
        );
        self.outcome.acked.extend(events.iter().map(number));
        self.outcome.max_ack_index = self
            .outcome
            .max_ack_index
            .max(r.body["index"].as_u64().expect("index"));
        self.outcome.batches_acked += 1;
    }
}

fn number(e: &Value) -> u64 {
    event_number(e["event_id"].as_str().unwrap()).unwrap()
}

/// Posts `events` to `node` until an answer comes (transport errors are retried: nodes do
/// not die in this test, but be tolerant of a slow moment).
async fn post(cluster: &Cluster, node: u64, events: &[Value]) -> Resp {
    for _ in 0..20 {
        match cluster.api().post_events(node, Format::Array, events).await {
            Ok(r) => return r,
            Err(e) => {
                eprintln!("[test] transport error posting to node {node}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("node {node} did not answer 20 times");
}

fn assert_backlog_refusal(r: &Resp, via: u64) {
    assert_eq!(r.status, 503, "via node {via}: {r:?}");
    assert_eq!(
        r.error_code(),
        Some("record_store_backlog"),
        "via node {via}: {r:?}"
    );
    let secs: u64 = r
        .retry_after
        .as_deref()
        .unwrap_or_else(|| panic!("via node {via}: 503 without Retry-After: {r:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("via node {via}: Retry-After is not seconds: {r:?}"));
    assert!(
        (1..=60).contains(&secs),
        "via node {via}: Retry-After {secs}"
    );
    let message = r.body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("record store"),
        "via node {via}: the message should say what is wrong: {message:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_bound_refuses_with_retry_after_and_recovers_without_loss() {
    let _module_turn = crate::common::module_turn().await;
    let mut db = tokio::task::block_in_place(MariaDb::start).expect("start MariaDB");
    let opts = ClusterOpts {
        record_store: Some(db.url()),
        sink_max_backlog_events: Some(BACKLOG as usize),
        // The check compares every in-memory row with the usage tables, in one read.
        max_aggregate_rows: Some(1_000_000),
        ..ClusterOpts::default()
    };
    let (cluster, leader) = Cluster::start_formed(opts).await;
    let follower = 3 - leader;
    let mut w = Writer {
        next: 0,
        base_ms: now_ms(),
        outcome: Outcome::default(),
    };

    // Normal operation: accepted, and written to the record store.
    for i in 0..3 {
        let events = w.batch();
        let r = post(&cluster, ALL_NODES[i % 3], &events).await;
        assert_eq!(r.status, 200, "{r:?}");
        w.acked(&events, &r);
    }
    cluster
        .wait_sink_caught_up(w.outcome.max_ack_index, Duration::from_secs(30))
        .await;

    // MariaDB goes away. Up to the bound, ingest is still acknowledged.
    tokio::task::block_in_place(|| db.stop()).expect("stop MariaDB");
    let mut acked_during_outage = 0u64;
    let refused = loop {
        assert!(
            acked_during_outage <= BACKLOG + BATCH,
            "{acked_during_outage} events acknowledged with the record store down and \
             max_backlog_events = {BACKLOG}: the bound does not hold"
        );
        let events = w.batch();
        let r = post(&cluster, leader, &events).await;
        match r.status {
            200 => {
                w.acked(&events, &r);
                acked_during_outage += BATCH;
            }
            _ => {
                assert_backlog_refusal(&r, leader);
                break events;
            }
        }
    };
    assert!(
        acked_during_outage >= BACKLOG,
        "refused after only {acked_during_outage} events with max_backlog_events = {BACKLOG}"
    );
    eprintln!("[test] {acked_during_outage} events acknowledged during the outage, then 503");

    // The refusal is the same through a follower and the witness (they forward), and a
    // refused batch is not counted: the in-memory state does not move.
    let counted_before = cluster.status(leader).await.unwrap().state.events_applied;
    for via in [follower, crate::common::WITNESS, leader] {
        let r = post(&cluster, via, &refused).await;
        assert_backlog_refusal(&r, via);
    }
    let status = cluster.status(leader).await.unwrap();
    assert_eq!(
        status.state.events_applied, counted_before,
        "refused events were counted"
    );

    // The leader's sink says why, and keeps trying.
    let sink = status.sink.clone();
    assert!(
        sink.detail.as_ref().is_some_and(|d| d.last_error.is_some()),
        "no last_error: {sink:?}"
    );
    assert!(sink.pending_events >= BACKLOG, "{sink:?}");
    let first = sink_detail(&sink).consecutive_errors;
    let deadline = Instant::now() + Duration::from_secs(20);
    let rising = loop {
        let s = cluster.sink_status(leader).await.unwrap();
        let now = s.detail.as_ref().map_or(0, |d| d.consecutive_errors);
        if now > first + 1 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "consecutive_errors did not rise above {first} within 20 s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("[test] sink during the outage: {rising:?}");

    // MariaDB returns: the sink catches up by itself and the refused batch gets in.
    tokio::task::block_in_place(|| db.restart()).expect("restart MariaDB");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refusals = 0;
    loop {
        let via = ALL_NODES[refusals % 3];
        let r = post(&cluster, via, &refused).await;
        if r.status == 200 {
            w.acked(&refused, &r);
            break;
        }
        assert_backlog_refusal(&r, via);
        refusals += 1;
        assert!(
            Instant::now() < deadline,
            "ingest still refused 60 s after the record store came back: {r:?}\n{:?}",
            cluster.sink_status(leader).await.unwrap_or_default()
        );
        // Retry-After says 5 s; poll faster to keep the test short.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("[test] the refused batch was accepted after {refusals} more refusals");
    for i in 0..3 {
        let events = w.batch();
        let r = post(&cluster, ALL_NODES[i % 3], &events).await;
        assert_eq!(r.status, 200, "{r:?}");
        w.acked(&events, &r);
    }
    let sink = cluster
        .wait_sink_caught_up(w.outcome.max_ack_index, Duration::from_secs(60))
        .await;
    assert_eq!(
        sink.detail.as_ref().map(|d| d.consecutive_errors),
        Some(0),
        "{sink:?}"
    );
    cluster.assert_same_state().await;

    // Every batch was acknowledged in the end, each event exactly once.
    assert_eq!(w.outcome.acked, w.outcome.attempted);
    let records = RecordsDb::MariaDb(&db);
    let rows = assert_records_exact(&cluster, &records, &w.outcome, w.base_ms).await;
    assert_eq!(rows as u64, w.next);
    let stored: BTreeSet<u64> = records
        .rows("SELECT event_id FROM events")
        .await
        .iter()
        .map(|r| event_number(&r[0]).unwrap())
        .collect();
    assert_eq!(stored, w.outcome.acked);
}
