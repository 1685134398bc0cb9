//! A leader that stalls (SIGSTOP) while a follower holds a forwarded write: the follower
//! gives the write up as soon as another node leads, instead of waiting out its 30 s
//! forward timeout, and a retry with the same event ids is counted once.

use std::time::{Duration, Instant};

use crate::common::{now_ms, simple_event, Cluster, ClusterOpts};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_is_given_up_when_its_leader_is_replaced() {
    let (cluster, leader) = Cluster::start_formed(ClusterOpts::default()).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let batch = Value::Array(
        (0..5)
            .map(|i| simple_event(&format!("stall-{i}"), now_ms(), "LeaderStall", "/r"))
            .collect(),
    );

    cluster.pause(leader);
    let started = Instant::now();
    let first = cluster.post_json(follower, &batch).await.unwrap();
    let waited = started.elapsed();
    // Without giving up, the follower would hold the request for its 30 s forward timeout.
    assert!(
        waited < Duration::from_secs(15),
        "the follower held the write {waited:?} behind a stalled leader: {first:?}"
    );
    assert!(
        first.status == 200 || first.error_code() == Some("leader_changed"),
        "expected 200 or 503 leader_changed, got {first:?}"
    );

    // The client retries with the same ids; the new leader takes it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = cluster.post_json(follower, &batch).await.unwrap();
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "retry never succeeded: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.resume(leader);
    cluster.wait_ready().await;
    cluster.wait_converged().await;
    let (_, rows) = cluster
        .aggregate_rows(follower, "granularity=day&api=LeaderStall&group_by=")
        .await;
    let counted: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    assert_eq!(counted, 5, "the batch must be counted exactly once");
    cluster.assert_same_state().await;
}
