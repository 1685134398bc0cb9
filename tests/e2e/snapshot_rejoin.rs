//! A data node that was down while the leader snapshotted and purged its log rejoins by
//! installing the leader's snapshot, and ends with exactly the leader's state: the same
//! digest at the same applied index, and the same aggregates. The snapshot travels in
//! chunks of 4 KiB here (`raft.snapshot_chunk_bytes`), so it takes many requests.

use std::time::{Duration, Instant};

use crate::common::{assert_aggregates_match, now_ms, Cluster, ClusterOpts, DATA_NODES, WITNESS};
use serde_json::{json, Value};

/// `raft.snapshot_chunk_bytes` of the test cluster: far smaller than the snapshot.
const CHUNK_BYTES: u64 = 4096;

/// Separate requests posted while the follower is down: each is its own log entry.
const REQUESTS_WHILE_DOWN: u64 = 300;

fn event(n: u64, base_ms: i64) -> Value {
    let api = ["Orders", "Billing"][(n % 2) as usize];
    let method = ["GET", "PUT"][(n / 2 % 2) as usize];
    let code = [200, 404, 500][(n % 3) as usize];
    json!({
        "event_id": format!("snap-{n}"),
        "timestamp": base_ms - ((n * 61_027) % (20 * 3_600_000)) as i64,
        "api_name": api,
        "api_version": "v1",
        "resource": format!("/r{}", n % 7),
        "method": method,
        "response_code": code,
        "response_time_ms": n % 250,
        "response_size": n * 3,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_rejoins_from_a_snapshot_after_the_log_was_purged() {
    let opts = ClusterOpts {
        snapshot_threshold: Some(50),
        log_keep_behind_snapshot: Some(0),
        env: vec![(
            "TALLY_RAFT_SNAPSHOT_CHUNK_BYTES".into(),
            CHUNK_BYTES.to_string(),
        )],
        ..ClusterOpts::default()
    };
    let (mut cluster, leader) = Cluster::start_formed(opts).await;
    let base = now_ms() / 60_000 * 60_000;
    let mut posted: Vec<Value> = Vec::new();
    let mut n = 0u64;

    // A little traffic with everyone up.
    for _ in 0..10 {
        let events: Vec<Value> = (n..n + 3).map(|k| event(k, base)).collect();
        n += 3;
        let r = cluster
            .post_json(leader, &Value::Array(events.clone()))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        posted.extend(events);
    }
    cluster.wait_converged().await;

    // Kill the data node that is not the leader.
    let victim = DATA_NODES.into_iter().find(|&id| id != leader).unwrap();
    let victim_status = cluster.status(victim).await.unwrap();
    let victim_applied = victim_status.applied_index;
    assert!(
        victim_status.snapshot_index.is_none(),
        "node {victim} already has a snapshot before the test's point: {victim_status:?}"
    );
    cluster.kill(victim);

    // Many separate entries while it is down: the leader snapshots every 50 and, keeping
    // nothing behind a snapshot, purges its log past where the victim stopped.
    for i in 0..REQUESTS_WHILE_DOWN {
        let e = event(n, base);
        n += 1;
        // Alternate between the leader and the witness (which forwards).
        let via = if i % 3 == 0 { WITNESS } else { leader };
        let r = cluster.post_json(via, &e).await.unwrap();
        assert_eq!(r.status, 200, "request {i} via node {via}: {r:?}");
        posted.push(e);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let purged = loop {
        let s = cluster.status(leader).await.unwrap();
        let purged = s.purged_index;
        if purged.is_some_and(|p| p > victim_applied + 1) {
            break purged.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "leader {leader} did not purge its log past index {victim_applied} \
             (snapshot_threshold 50, log_keep_behind_snapshot 0): {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let leader_status = cluster.status(leader).await.unwrap();
    let first_in_log = leader_status.log.first_index.unwrap_or(0);
    assert!(
        first_in_log > victim_applied + 1,
        "the leader's log still holds index {} that node {victim} needs next: {leader_status:?}",
        victim_applied + 1
    );
    eprintln!(
        "node {victim} stopped at {victim_applied}; leader {leader} purged up to {purged}, \
         committed {:?}",
        leader_status.committed_index
    );

    // Rejoin: it can only catch up through a snapshot.
    cluster.restart(victim).await;
    let (index, digest) = cluster.assert_same_state().await;
    assert!(index >= victim_applied + REQUESTS_WHILE_DOWN, "{index}");
    cluster.wait_ready().await;
    let rejoined = cluster.status(victim).await.unwrap();
    let snapshot_index = rejoined.snapshot_index;
    assert!(
        snapshot_index.is_some_and(|s| s >= purged),
        "node {victim} rejoined without installing a snapshot covering {purged}: {rejoined:?}"
    );
    assert!(
        cluster.log_text(victim).contains("installed snapshot"),
        "node {victim}'s log does not record a snapshot installation"
    );
    let installed = rejoined
        .snapshots
        .iter()
        .map(|f| f.bytes)
        .max()
        .unwrap_or(0);
    assert!(
        installed > 3 * CHUNK_BYTES,
        "the snapshot ({installed} bytes) should have taken several {CHUNK_BYTES}-byte chunks"
    );
    eprintln!(
        "node {victim} rejoined at {index} (snapshot {snapshot_index:?}, {installed} bytes in \
         {} chunks), digest {digest}",
        installed.div_ceil(CHUNK_BYTES)
    );

    // Same state, seen through the aggregates too, and equal to what was posted.
    let events: Vec<&Value> = posted.iter().collect();
    for id in DATA_NODES {
        let s = cluster.status(id).await.unwrap();
        assert_eq!(
            Some(s.state.events_applied),
            Some(posted.len() as u64),
            "node {id}: {:?}",
            s.state
        );
        for (granularity, group_by) in [
            ("minute", &["api_name", "resource", "method"][..]),
            ("hour", &["api_name"][..]),
            ("day", &[][..]),
        ] {
            let at = assert_aggregates_match(&cluster, id, granularity, group_by, &events).await;
            // Nothing is posted any more: an index that moved on applied entries without events
            // (a new term's blank entry after an election on a loaded machine), and the rows
            // were just checked against the model.
            assert!(at >= index, "node {id} went back from {index} to {at}");
        }
    }

    // The rejoined node keeps up with new writes after the snapshot, and a re-post of an
    // id it only knows from the snapshot is still a duplicate (the dedup window travelled
    // with the snapshot).
    let old = posted[5].clone();
    let r = cluster
        .post_json(victim, &json!([old, event(n, base)]))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body["duplicates"], 1,
        "dedup window lost in the snapshot: {r:?}"
    );
    posted.push(event(n, base));
    let (index2, _) = cluster.assert_same_state().await;
    assert!(index2 > index);
    for id in DATA_NODES {
        let s = cluster.status(id).await.unwrap();
        assert_eq!(Some(s.state.events_applied), Some(posted.len() as u64));
    }
}
