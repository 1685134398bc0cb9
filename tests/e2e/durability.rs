//! Acknowledged means durable, seen from outside: the leader's Raft log has been fsynced up to
//! (at least) an entry's index before the ingest request for that entry is answered 200.

use crate::common::{now_ms, simple_event, Cluster, ClusterOpts};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_is_fsynced_before_the_answer() {
    let (cluster, leader) = Cluster::start_formed(ClusterOpts::default()).await;
    let ts = now_ms();
    for round in 0..8u64 {
        let before = cluster.status(leader).await.expect("leader status");
        let fsyncs_before = before.log.fsyncs;
        let events: Vec<Value> = (0..25)
            .map(|i| simple_event(&format!("dur-{round}-{i}"), ts, "Durable", "/d"))
            .collect();
        let r = cluster
            .post_json(leader, &Value::Array(events))
            .await
            .expect("post");
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        let index = r.body["index"].as_u64().expect("index");
        assert_eq!(r.body["accepted"], 25, "{r:?}");
        assert_eq!(r.body["duplicates"], 0, "{r:?}");

        let after = cluster.status(leader).await.expect("leader status");
        let fsyncs_after = after.log.fsyncs;
        let synced = after.log.synced_index;
        assert!(
            fsyncs_after > fsyncs_before,
            "round {round}: no fsync of the log between the request and its 200 ({fsyncs_before} → {fsyncs_after})"
        );
        assert!(
            synced.is_some_and(|s| s >= index),
            "round {round}: 200 for index {index} but the log is synced only to {synced:?}"
        );
        // The witness durably stores the log too; together with the leader it forms the
        // majority an acknowledgement needs, so at least one of the two followers must
        // already have fsynced this index.
        let mut followers_synced = Vec::new();
        for id in crate::common::ALL_NODES
            .into_iter()
            .filter(|&id| id != leader)
        {
            let s = cluster.status(id).await.expect("follower status");
            followers_synced.push((id, s.log.synced_index));
        }
        assert!(
            followers_synced
                .iter()
                .any(|(_, s)| s.is_some_and(|s| s >= index)),
            "round {round}: 200 for index {index} but no follower had synced it: {followers_synced:?}"
        );
    }
}
