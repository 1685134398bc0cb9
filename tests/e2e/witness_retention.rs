//! Witness log retention: the witness purges only entries that every data node already
//! holds in a snapshot (the floor published through the log). While a data node is down,
//! the witness's log grows instead of dropping what that node will need.

use std::time::{Duration, Instant};

use crate::common::{now_ms, simple_event, Cluster, ClusterOpts, WITNESS};
use serde_json::Value;

async fn post_requests(cluster: &Cluster, node: u64, prefix: &str, n: usize) {
    for i in 0..n {
        let e = simple_event(&format!("{prefix}-{i}"), now_ms(), "Retention", "/r");
        let r = cluster
            .post_json(node, &Value::Array(vec![e]))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_purges_only_what_every_data_node_holds_in_a_snapshot() {
    let opts = ClusterOpts {
        snapshot_threshold: Some(20),
        log_keep_behind_snapshot: Some(0),
        ..ClusterOpts::default()
    };
    let (mut cluster, leader) = Cluster::start_formed(opts).await;
    let follower = if leader == 1 { 2 } else { 1 };

    // Enough entries for several snapshots everywhere; the floor follows, and the witness
    // purges behind it.
    post_requests(&cluster, leader, "a", 100).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let w = cluster.status(WITNESS).await.unwrap();
        let purged = w.purged_index.unwrap_or(0);
        let floor = w.retention.snapshot_floor;
        if purged > 0 {
            assert!(
                purged <= floor,
                "witness purged {purged} past the floor {floor}: {w:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "witness never purged: {w:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A data node goes down: what its snapshot holds bounds the witness's purging.
    let held_by_follower = cluster
        .status(follower)
        .await
        .unwrap()
        .snapshot_index
        .unwrap_or(0);
    assert!(held_by_follower > 0);
    cluster.kill(follower);
    post_requests(&cluster, leader, "b", 150).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // several floor/purge rounds
    let w = cluster.status(WITNESS).await.unwrap();
    let l = cluster.status(leader).await.unwrap();
    assert!(
        w.purged_index.unwrap_or(0) <= held_by_follower,
        "witness purged past what the down node holds ({held_by_follower}): {w:?}"
    );
    assert!(
        l.snapshot_index.unwrap_or(0) > held_by_follower + 100,
        "leader kept snapshotting: {l:?}"
    );
    assert!(
        w.log.entries >= 150,
        "the witness's log must grow while a data node is down: {w:?}"
    );

    // The node returns, catches up, and the floor (and purging) moves on.
    cluster.restart(follower).await;
    cluster.assert_same_state().await;
    post_requests(&cluster, leader, "c", 50).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = cluster.status(WITNESS).await.unwrap();
        if w.purged_index.unwrap_or(0) > held_by_follower {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "witness did not resume purging after the node returned: {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
