//! The witness stores the log and votes but holds no analytic state: it forwards analytic
//! reads to a data node and never answers them from state of its own, its snapshots hold
//! only its log position (never analytic state), and it refuses reads (503) rather than answer empty when no data node can be reached.

use std::time::{Duration, Instant};

use crate::common::{now_ms, simple_event, Cluster, ClusterOpts, DATA_NODES, WITNESS};
use serde_json::Value;
use tally_protocol::Role;

const QUERIES: [&str; 4] = [
    "granularity=minute",
    "granularity=hour&group_by=api_name,resource",
    "granularity=day&group_by=",
    "granularity=day&api=Pets&group_by=resource&consistency=linearizable",
];

/// The witness answers `query` with exactly a data node's rows, and says which data node.
async fn assert_witness_reads_like_data_nodes(cluster: &Cluster, expected_events: u64) {
    let (index, digest) = cluster.assert_same_state().await;
    let data = cluster.live_data_nodes();
    for q in QUERIES {
        let w = cluster
            .get_ok(WITNESS, &format!("/v1/aggregates?{q}"))
            .await;
        let answered_by = w["node_id"].as_u64().expect("node_id");
        assert_ne!(answered_by, WITNESS, "the witness answered {q} itself: {w}");
        assert!(
            data.contains(&answered_by),
            "{q} answered by {answered_by}: {w}"
        );
        // Entries without events (a new term's blank entry, a published cursor) may be
        // applied meanwhile: the index may move on, the rows may not.
        assert!(
            w["applied_index"].as_u64().is_some_and(|i| i >= index),
            "{q}: {w}"
        );
        assert!(
            !w["rows"].as_array().unwrap().is_empty(),
            "{q}: no rows from the witness: {w}"
        );
        for &id in &data {
            let d = cluster.get_ok(id, &format!("/v1/aggregates?{q}")).await;
            if !q.contains("linearizable") {
                // (A linearizable read on a follower is answered by the leader.)
                assert_eq!(d["node_id"].as_u64(), Some(id), "{q}: {d}");
            }
            assert_eq!(d["rows"], w["rows"], "{q}: witness and node {id} differ");
        }
    }
    let day = cluster
        .get_ok(WITNESS, "/v1/aggregates?granularity=day&group_by=")
        .await;
    let total: u64 = day["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total, expected_events,
        "requests counted, read via the witness"
    );

    // The digest through the witness is a data node's digest at the same index (compared
    // again if an entry without events was applied in between).
    let (mut index, mut digest) = (index, digest);
    for attempt in 0.. {
        let wd = cluster.get_ok(WITNESS, "/v1/state/digest").await;
        let answered_by = wd["node_id"].as_u64().unwrap();
        assert_ne!(
            answered_by, WITNESS,
            "witness answered the digest itself: {wd}"
        );
        assert!(data.contains(&answered_by), "{wd}");
        if wd["applied_index"].as_u64() == Some(index) {
            assert_eq!(wd["digest"].as_str(), Some(digest.as_str()), "{wd}");
            break;
        }
        assert!(attempt < 10, "the applied index kept moving: {wd}");
        (index, digest) = cluster.assert_same_state().await;
    }
}

/// The witness's own view: applies no events; any snapshot it has is position-only.
async fn assert_witness_holds_nothing(cluster: &Cluster) {
    let s = cluster.status(WITNESS).await.unwrap();
    assert_eq!(s.role, Role::Witness, "{s:?}");
    assert_eq!(s.state.events_applied, 0, "{s:?}");
    assert_eq!(s.state.dedup_ids, 0, "{s:?}");
    assert_eq!(s.state.buckets_minute, 0, "{s:?}");
    for snap in &s.snapshots {
        assert!(
            snap.id.starts_with("w-"),
            "witness snapshot that is not position-only: {snap:?}"
        );
        assert!(snap.bytes < 4096, "{snap:?}");
    }
    // And on disk: no snapshot file carries analytic state (its magic bytes).
    let snaps = cluster.data_dir(WITNESS).join("raft").join("snapshots");
    let files: Vec<_> = std::fs::read_dir(&snaps)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(8).any(|w| w == b"TALLYANS"),
            "witness snapshot file {f:?} holds analytic state"
        );
    }
    // It does store the log, though.
    assert!(s.log.last_index.unwrap_or(0) > 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_forwards_reads_and_holds_no_state() {
    // A low snapshot threshold: the data nodes build snapshots; the witness's hold no analytics.
    let opts = ClusterOpts {
        snapshot_threshold: Some(20),
        log_keep_behind_snapshot: Some(5),
        ..ClusterOpts::default()
    };
    let (mut cluster, leader) = Cluster::start_formed(opts).await;
    let ts = now_ms();
    let mut posted = 0u64;
    // 40 requests, some through the witness: ≥ 40 entries, so data nodes snapshot.
    for i in 0..40u64 {
        let events: Vec<Value> = (0..5)
            .map(|j| {
                let api = if j % 2 == 0 { "Pets" } else { "Shop" };
                simple_event(
                    &format!("w-{i}-{j}"),
                    ts - (i as i64) * 61_000,
                    api,
                    &format!("/r{}", j % 3),
                )
            })
            .collect();
        let target = [WITNESS, leader][i as usize % 2];
        let r = cluster
            .post_json(target, &Value::Array(events))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "post {i} via node {target}: {r:?}");
        assert_eq!(r.body["accepted"], 5, "{r:?}");
        posted += 5;
    }
    assert_witness_reads_like_data_nodes(&cluster, posted).await;
    assert_witness_holds_nothing(&cluster).await;
    for id in DATA_NODES {
        let s = cluster.status(id).await.unwrap();
        assert!(
            !s.snapshots.is_empty(),
            "data node {id} built no snapshot with threshold 20: {s:?}"
        );
    }

    // Lose the leader: the other data node takes over and the witness reads from it.
    cluster.kill(leader);
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader);
    for i in 0..5 {
        let e = simple_event(&format!("after-{i}"), ts, "Pets", "/r0");
        let r = cluster.post_json(WITNESS, &e).await.unwrap();
        assert_eq!(r.status, 200, "post via witness after failover: {r:?}");
        posted += 1;
    }
    assert_witness_reads_like_data_nodes(&cluster, posted).await;
    assert_witness_holds_nothing(&cluster).await;

    // Lose both data nodes: the witness has nothing to answer from and says so.
    cluster.kill(new_leader);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut checked = 0;
    while Instant::now() < deadline && checked < 10 {
        for path in [
            "/v1/aggregates?granularity=day",
            "/v1/aggregates?granularity=day&consistency=linearizable",
            "/v1/state/digest",
        ] {
            let r = cluster.get(WITNESS, path).await.unwrap();
            assert_eq!(
                r.status, 503,
                "witness answered {path} with no data node alive: {r:?}"
            );
            assert!(
                r.retry_after.is_some(),
                "{path}: 503 without Retry-After: {r:?}"
            );
        }
        checked += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let e = simple_event("no-data-node", ts, "Pets", "/r0");
    let r = cluster.post_json(WITNESS, &e).await.unwrap();
    assert_eq!(
        r.status, 503,
        "witness accepted a write with no data node: {r:?}"
    );
    assert_witness_holds_nothing(&cluster).await;
}
