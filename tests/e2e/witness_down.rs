//! Witness down: the two data nodes are a majority and go on without interruption — every
//! write succeeds at the first attempt, and both data nodes stay identical.

use crate::common::{now_ms, simple_event, Cluster, ClusterOpts, WITNESS};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_nodes_go_on_without_the_witness() {
    let (mut cluster, leader) = Cluster::start_formed(ClusterOpts::default()).await;
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.kill(WITNESS);
    for i in 0..200 {
        // Alternate between leader and follower (which forwards): no retry allowed.
        let node = if i % 2 == 0 { leader } else { follower };
        let e = simple_event(&format!("wd-{i}"), now_ms(), "WitnessDown", "/r");
        let r = cluster
            .post_json(node, &Value::Array(vec![e]))
            .await
            .unwrap();
        assert_eq!(
            r.status, 200,
            "write {i} via node {node} failed with the witness down: {r:?}"
        );
    }
    assert_eq!(
        cluster.wait_leader().await,
        leader,
        "leadership moved without the witness"
    );
    cluster.assert_same_state().await;
    let (_, rows) = cluster
        .aggregate_rows(follower, "granularity=day&api=WitnessDown&group_by=")
        .await;
    assert_eq!(
        rows.iter()
            .map(|r| r["requests"].as_u64().unwrap())
            .sum::<u64>(),
        200
    );

    // It returns and catches up from the log.
    cluster.restart(WITNESS).await;
    cluster.wait_ready().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let w = cluster.status(WITNESS).await.unwrap();
        let l = cluster.status(leader).await.unwrap();
        if w.last_log_index >= l.committed_index {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "witness did not catch up: {w:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
