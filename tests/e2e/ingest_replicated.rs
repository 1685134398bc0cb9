//! Ingest through every node of a real three-process cluster (two data nodes and a
//! witness): more than 10 000 distinct events in batches of every format, with duplicates
//! inside batches and across batches and some refused batches. Both data nodes must answer
//! the aggregates exactly as an independent model built by this test from the distinct
//! accepted events, the `accepted`/`duplicates` answers must add up, and both data nodes
//! must report the same digest at the same applied index. `?redirect` on a follower answers
//! 307 to the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::common::{
    assert_aggregates_match, now_ms, rfc3339, Api, Cluster, ClusterOpts, Format, ALL_NODES,
    DATA_NODES, HOUR_MS, WITNESS,
};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// Distinct events of phase 1: 110 batches of 100.
const BATCHES: u64 = 110;
const BATCH: u64 = 100;
/// Requests in flight at once (exercises the leader's group commit).
const IN_FLIGHT: usize = 4;

const APIS: [(&str, &str); 3] = [
    ("PizzaShack", "1.0.0"),
    ("Pets", "v2"),
    ("Weather", "2024-01"),
];
const RESOURCES: [&str; 5] = [
    "/menu",
    "/order/{id}",
    "/pets",
    "/forecast",
    "/pets/{id}/photo",
];
const CODES: [u64; 9] = [200, 200, 201, 204, 301, 404, 429, 500, 503];

/// The event with number `n`: every field a pure function of `n`, so re-posting an id
/// always re-posts identical content and the model does not depend on arrival order.
fn event(n: u64, base_ms: i64) -> Value {
    let (api, version) = APIS[(n % 3) as usize];
    // Spread over 30 hours back from `base_ms`: several hour buckets, two day buckets
    // most of the time, all inside the 48 h minute retention.
    let ts = base_ms - ((n * 7919) % (30 * 3600)) as i64 * 1000 - (n % 997) as i64;
    let mut e = json!({
        "event_id": format!("ev-{n:06}"),
        "api_name": api,
        "api_version": version,
        "method": if n % 4 == 0 { "POST" } else { "GET" },
    });
    e["timestamp"] = match n % 4 {
        0 => json!(ts),
        1 => json!(rfc3339(ts, 0)),
        2 => json!(rfc3339(ts, 5)),
        _ => json!(rfc3339(ts, -3)),
    };
    if n % 17 != 0 {
        // Some events have no resource: their key column is "".
        e["resource"] = json!(RESOURCES[(n / 3 % 5) as usize]);
    }
    if n % 5 == 0 {
        e["tenant"] = json!("acme.example");
    }
    if n % 7 == 0 {
        e["application_id"] = json!(format!("app-{}", n % 4));
    }
    if n % 23 == 0 {
        e["kind"] = json!("fault");
        e["error_code"] = json!("101503");
        // A fault may carry a 5xx code; it is a fault, not a 5xx request.
        if n % 2 == 0 {
            e["response_code"] = json!(503);
        }
    } else if n % 19 == 0 {
        e["kind"] = json!("throttle");
        e["throttled_reason"] = json!("SUBSCRIPTION_LIMIT");
    } else {
        if n % 3 == 0 {
            e["kind"] = json!("request");
        }
        e["response_code"] = json!(CODES[(n / 7 % 9) as usize]);
    }
    if n % 11 != 0 {
        e["response_time_ms"] = json!((n * 37) % 900);
    } else if n % 2 == 0 {
        e["response_time_ms"] = Value::Null; // null = absent
    }
    if n % 13 != 0 {
        e["response_size"] = json!((n * 101) % 5000);
    }
    if n % 6 == 0 {
        e["user_ip"] = json!(format!("10.1.{}.{}", n % 200, n % 250));
        e["user_agent"] = json!("Mozilla/5.0 (X11; Linux x86_64)");
        e["cache_hit"] = json!(n % 12 == 0);
    }
    e
}

fn id_of(e: &Value) -> String {
    e["event_id"].as_str().unwrap().to_string()
}

/// One planned POST.
#[derive(Clone)]
struct Post {
    label: String,
    node: u64,
    format: Format,
    events: Vec<Value>,
}

/// What the successful posts added up to.
#[derive(Default)]
struct Tally {
    /// Events in all 200-answered bodies (duplicates included).
    sent: u64,
    accepted: u64,
    duplicates: u64,
    /// Every event of every 200-answered body, by id (identical content per id).
    acked: BTreeMap<String, Value>,
}

impl Tally {
    fn record(&mut self, post: &Post, body: &Value) {
        let accepted = body["accepted"].as_u64().expect("accepted");
        let duplicates = body["duplicates"].as_u64().expect("duplicates");
        assert!(
            body["index"].as_u64().is_some_and(|i| i > 0),
            "{}: {body}",
            post.label
        );
        assert_eq!(
            accepted,
            post.events.len() as u64,
            "{}: accepted counts every event of the request: {body}",
            post.label
        );
        self.sent += post.events.len() as u64;
        self.accepted += accepted;
        self.duplicates += duplicates;
        for e in &post.events {
            self.acked.insert(id_of(e), e.clone());
        }
    }
}

/// Posts all `posts`, at most [`IN_FLIGHT`] at a time; every one must answer 200. Returns
/// the answers in the order of `posts`.
async fn post_all(api: &Api, posts: &[Post]) -> Vec<Value> {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::new();
    for post in posts.iter().cloned() {
        let api = api.clone();
        let permit = permits.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let r = api.post_events(post.node, post.format, &post.events).await;
            drop(permit);
            let r = r.unwrap_or_else(|e| panic!("{}: no answer: {e}", post.label));
            assert_eq!(
                r.status, 200,
                "{} via node {}: {r:?}",
                post.label, post.node
            );
            r.body
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("post task"));
    }
    out
}

fn format_for(i: u64) -> Format {
    match i % 3 {
        0 => Format::Array,
        1 => Format::Ndjson,
        _ => Format::Array,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_through_all_nodes_matches_the_model() {
    let (cluster, leader) = Cluster::start_formed(ClusterOpts::default()).await;
    let api = cluster.api();
    // Whole minutes, a little in the past: every event time is "now-ish".
    let base = now_ms() / 60_000 * 60_000 - 60_000;
    let mut tally = Tally::default();
    let mut round_robin = ALL_NODES.into_iter().cycle();

    // ---- Phase 1: new events, with duplicates inside batches and across batches ----------
    let mut posts = Vec::new();
    let mut in_batch_dups = Vec::new();
    let mut next_single = 1_000_000u64;
    for b in 0..BATCHES {
        let mut events: Vec<Value> = (b * BATCH..(b + 1) * BATCH)
            .map(|n| event(n, base))
            .collect();
        // Duplicates inside the batch: repeat a few of its own events.
        let dups = b % 4;
        for k in 0..dups {
            let copy = events[(k * 31 % BATCH) as usize].clone();
            events.insert((k * 17 % BATCH) as usize, copy);
        }
        in_batch_dups.push(dups);
        // Duplicates across batches: ids of an earlier batch (it may still be in flight;
        // either way each id is counted once).
        if b % 5 == 4 {
            events.extend((0..10).map(|k| event((b - 3) * BATCH + k * 7, base)));
        }
        posts.push(Post {
            label: format!("batch {b}"),
            node: round_robin.next().unwrap(),
            format: format_for(b),
            events,
        });
        // Now and then a single bare object.
        if b % 10 == 3 {
            posts.push(Post {
                label: format!("single {next_single}"),
                node: round_robin.next().unwrap(),
                format: Format::Object,
                events: vec![event(next_single, base)],
            });
            next_single += 1;
        }
    }
    let answers = post_all(&api, &posts).await;
    for (post, body) in posts.iter().zip(&answers) {
        tally.record(post, body);
    }
    // Every in-batch copy is a duplicate, whatever else happened.
    let batch_answers = posts
        .iter()
        .zip(&answers)
        .filter(|(p, _)| p.label.starts_with("batch "));
    for ((post, body), dups) in batch_answers.zip(&in_batch_dups) {
        assert!(
            body["duplicates"].as_u64().unwrap() >= *dups,
            "{}: {dups} copies inside the batch, answer {body}",
            post.label
        );
    }
    let distinct_phase1 = tally.acked.len() as u64;
    assert!(
        distinct_phase1 >= 10_000,
        "only {distinct_phase1} distinct events"
    );
    assert_eq!(
        tally.accepted - tally.duplicates,
        distinct_phase1,
        "phase 1: accepted − duplicates must equal the distinct ids posted"
    );

    // ---- Phase 2: re-posts of acknowledged batches, and old ids mixed into new batches -----
    let mut posts = Vec::new();
    let mut expected_dups = Vec::new();
    for b in (0..BATCHES).step_by(9) {
        // The whole batch again, in another format, to another node.
        let events: Vec<Value> = (b * BATCH..(b + 1) * BATCH)
            .map(|n| event(n, base))
            .collect();
        expected_dups.push(events.len() as u64);
        posts.push(Post {
            label: format!("re-post of batch {b}"),
            node: round_robin.next().unwrap(),
            format: if b % 2 == 0 {
                Format::Ndjson
            } else {
                Format::Array
            },
            events,
        });
    }
    for m in 0..12u64 {
        let fresh = 2_000_000 + m * 50;
        let mut events: Vec<Value> = (fresh..fresh + 40).map(|n| event(n, base)).collect();
        let old: Vec<Value> = (0..(m % 4 + 1) * 5)
            .map(|k| event((m * 877 + k * 131) % (BATCHES * BATCH), base))
            .collect();
        let old_distinct: BTreeSet<String> = old.iter().map(id_of).collect();
        expected_dups.push(old_distinct.len() as u64 + (old.len() - old_distinct.len()) as u64);
        for (k, e) in old.into_iter().enumerate() {
            events.insert(k * 7 % events.len(), e);
        }
        posts.push(Post {
            label: format!("mixed batch {m}"),
            node: round_robin.next().unwrap(),
            format: format_for(m),
            events,
        });
    }
    let answers = post_all(&api, &posts).await;
    for ((post, body), dups) in posts.iter().zip(&answers).zip(&expected_dups) {
        assert_eq!(
            body["duplicates"].as_u64(),
            Some(*dups),
            "{}: already-acknowledged ids must be duplicates, new ones not: {body}",
            post.label
        );
        tally.record(post, body);
    }

    // ---- Phase 3: refused batches count nothing ---------------------------------------------
    // (position of the bad record, the field broken, how it is broken)
    type Breaker = fn(&mut Value);
    let breakers: [(&str, Breaker); 6] = [
        ("response_code", |e| e["response_code"] = json!(700)),
        ("timestamp", |e| e["timestamp"] = json!("not a time")),
        ("event_id", |e| e["event_id"] = json!("bad id with spaces")),
        ("respnse_time_ms", |e| e["respnse_time_ms"] = json!(5)),
        ("api_name", |e| {
            e.as_object_mut().unwrap().remove("api_name");
        }),
        ("user_ip", |e| e["user_ip"] = json!("10.0.0.300")),
    ];
    let mut refused_ids = BTreeSet::new();
    let mut retry_later = Vec::new();
    for (i, (field, breaker)) in breakers.iter().enumerate() {
        let i = i as u64;
        let fresh = 3_000_000 + i * 100;
        let mut events: Vec<Value> = (fresh..fresh + 30).map(|n| event(n, base)).collect();
        let bad_at = (i * 7 + 2) as usize % events.len();
        breaker(&mut events[bad_at]);
        let node = round_robin.next().unwrap();
        let format = if i % 2 == 0 {
            Format::Array
        } else {
            Format::Ndjson
        };
        let r = api.post_events(node, format, &events).await.unwrap();
        assert_eq!(
            r.status, 400,
            "refused batch {i} ({field}) via node {node}: {r:?}"
        );
        assert_eq!(r.error_code(), Some("invalid_events"), "{r:?}");
        let details: Vec<(u64, String)> = r
            .details()
            .iter()
            .map(|d| {
                (
                    d["record"].as_u64().unwrap(),
                    d["field"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            details,
            vec![(bad_at as u64, field.to_string())],
            "refused batch {i}: details must name record {bad_at} and field {field}: {r:?}"
        );
        let good: Vec<Value> = events
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != bad_at)
            .map(|(_, e)| e.clone())
            .collect();
        if i % 2 == 0 {
            retry_later.push(good);
        } else {
            refused_ids.extend(good.iter().map(id_of));
        }
    }
    // The good records of half of the refused batches, posted alone: all new.
    for (k, good) in retry_later.into_iter().enumerate() {
        let post = Post {
            label: format!("corrected batch {k}"),
            node: round_robin.next().unwrap(),
            format: Format::Ndjson,
            events: good,
        };
        let r = api
            .post_events(post.node, post.format, &post.events)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}: {r:?}", post.label);
        assert_eq!(
            r.body["duplicates"], 0,
            "{}: a refused batch must leave no ids behind: {r:?}",
            post.label
        );
        tally.record(&post, &r.body);
    }

    // ---- ?redirect on a follower and on the witness: 307 to the leader ----------------------
    let leader_now = cluster.wait_leader().await;
    assert_eq!(
        leader_now, leader,
        "leadership moved during a fault-free run"
    );
    let follower = DATA_NODES.into_iter().find(|&id| id != leader).unwrap();
    let expected_location = format!("http://{}/v1/events", cluster.addr(leader));
    for (k, node) in [follower, WITNESS].into_iter().enumerate() {
        let k = k as u64;
        let events: Vec<Value> = (0..5)
            .map(|j| event(4_000_000 + k * 10 + j, base))
            .collect();
        let r = api
            .post_events_to(node, "/v1/events?redirect", Format::Array, &events)
            .await
            .unwrap();
        assert_eq!(r.status, 307, "?redirect on node {node}: {r:?}");
        assert_eq!(
            r.location.as_deref(),
            Some(expected_location.as_str()),
            "?redirect on node {node}: Location must be the leader's /v1/events: {r:?}"
        );
        // Following the redirect ingests the batch (nothing was counted by the 307).
        let (ct, body) = crate::common::encode_batch(Format::Array, &events);
        let r = api
            .send(
                api.http
                    .post(r.location.clone().unwrap())
                    .header("content-type", ct)
                    .body(body),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "following the redirect: {r:?}");
        assert_eq!(
            r.body["duplicates"], 0,
            "the 307 must not have ingested: {r:?}"
        );
        let post = Post {
            label: format!("redirected {k}"),
            node: leader,
            format: Format::Array,
            events,
        };
        tally.record(&post, &r.body);
    }
    // On the leader itself, ?redirect is just an ingest.
    let events = vec![event(4_000_100, base)];
    let r = api
        .post_events_to(leader, "/v1/events?redirect", Format::Object, &events)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "?redirect on the leader: {r:?}");
    let post = Post {
        label: "redirect on leader".into(),
        node: leader,
        format: Format::Object,
        events,
    };
    tally.record(&post, &r.body);

    // ---- The answers add up --------------------------------------------------------------------
    let distinct = tally.acked.len() as u64;
    assert_eq!(
        tally.accepted, tally.sent,
        "accepted must count every event sent"
    );
    assert_eq!(
        tally.accepted - tally.duplicates,
        distinct,
        "accepted − duplicates over all answers must equal the distinct ids acknowledged"
    );
    assert!(
        tally.duplicates > 1_500,
        "the test meant to send many duplicates"
    );
    for id in &refused_ids {
        assert!(
            !tally.acked.contains_key(id),
            "refused id {id} was later acknowledged?"
        );
    }
    eprintln!(
        "sent {} events in 200-answered requests: {} distinct, {} duplicates",
        tally.sent, distinct, tally.duplicates
    );

    // ---- Both data nodes hold exactly the model, and the same state ------------------------------
    let (index, digest) = cluster.assert_same_state().await;
    let events: Vec<&Value> = tally.acked.values().collect();
    for id in DATA_NODES {
        let s = cluster.status(id).await.unwrap();
        assert_eq!(
            Some(s.state.events_applied),
            Some(distinct),
            "node {id} counted a different number of distinct events: {:?}",
            s.state
        );
        for (granularity, group_by) in [
            ("day", &["api_name", "resource"][..]),
            ("hour", &[][..]),
            ("minute", &["tenant", "api_version", "method"][..]),
            (
                "day",
                &[
                    "tenant",
                    "api_name",
                    "api_version",
                    "application_id",
                    "resource",
                    "method",
                ][..],
            ),
        ] {
            let at = assert_aggregates_match(&cluster, id, granularity, group_by, &events).await;
            // Nothing is posted any more: an index that moved on applied entries without events
            // (a new term's blank entry after an election on a loaded machine), and the rows
            // were just checked against the model.
            assert!(at >= index, "node {id} went back from {index} to {at}");
        }
        // Filters: one API, one version.
        let (_, rows) = cluster
            .aggregate_rows(id, "granularity=hour&api=Pets&version=v2&group_by=")
            .await;
        let pets: Vec<&Value> = events
            .iter()
            .copied()
            .filter(|e| e["api_name"] == "Pets")
            .collect();
        let got = crate::common::rows_to_map(&rows, &[]);
        assert_eq!(
            got,
            crate::common::model(pets, HOUR_MS, &[]),
            "node {id}: api=Pets filter"
        );
    }
    let (index2, digest2) = cluster.assert_same_state().await;
    assert_eq!(
        (index2, &digest2),
        (index, &digest),
        "state moved while reading"
    );
}
