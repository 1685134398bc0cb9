//! The witness as caretaker (high-availability issue, first acceptance point):
//! data node B down; A + witness commit events; A dies; B returns. The witness holds
//! entries B lacks, so it must bring B up to date and hand leadership over; writes resume,
//! B counts every acknowledged event, and the witness does not stay leader.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{now_ms, simple_event, Cluster, ClusterOpts};
use serde_json::Value;
use tally_protocol::RaftState;

/// Posts one single-event batch to `node`, retrying 503s and connection errors with the
/// same id (bounded). Returns whether it was acknowledged.
async fn post_until_acked(cluster: &Cluster, nodes: &[u64], id: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let event = simple_event(id, now_ms(), "Caretaker", id);
    let mut attempt = 0usize;
    while Instant::now() < deadline {
        let node = nodes[attempt % nodes.len()];
        attempt += 1;
        match cluster
            .post_json(node, &Value::Array(vec![event.clone()]))
            .await
        {
            Ok(r) if r.status == 200 => return true,
            Ok(r) => assert!(
                r.status == 503 || r.status == 502,
                "unexpected answer for {id} from node {node}: {} {}",
                r.status,
                r.body
            ),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn counted_ids(cluster: &Cluster, node: u64) -> BTreeSet<String> {
    let (_, rows) = cluster
        .aggregate_rows(node, "granularity=day&api=Caretaker&group_by=resource")
        .await;
    rows.iter()
        .map(|r| {
            assert_eq!(
                r["requests"].as_u64(),
                Some(1),
                "counted more than once: {r}"
            );
            r["resource"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_catches_up_the_returning_data_node_and_hands_over() {
    let (mut cluster, leader) = Cluster::start_formed(ClusterOpts::key_per_event()).await;
    let a = leader;
    let b = if a == 1 { 2 } else { 1 };
    let w = 3;
    let mut acked = Vec::new();

    for i in 0..20 {
        let id = format!("before-{i}");
        assert!(post_until_acked(&cluster, &[a], &id, Duration::from_secs(10)).await);
        acked.push(id);
    }
    cluster.wait_converged().await;

    // B goes down; A and the witness still form a majority and commit.
    cluster.kill(b);
    for i in 0..50 {
        let id = format!("while-b-down-{i}");
        assert!(
            post_until_acked(&cluster, &[a, w], &id, Duration::from_secs(10)).await,
            "A + witness must keep committing while B is down"
        );
        acked.push(id);
    }

    // A dies: only the witness holds the entries B missed.
    cluster.kill(a);
    cluster.restart(b).await;

    // Writes resume through the survivors, and leadership ends on B.
    let started = Instant::now();
    assert!(
        post_until_acked(&cluster, &[b, w], "after-handover", Duration::from_secs(30)).await,
        "writes did not resume after the witness took care of B\n{}",
        cluster.all_log_tails(40)
    );
    acked.push("after-handover".to_string());
    eprintln!("writes resumed {:?} after B returned", started.elapsed());

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sb = cluster.status(b).await.unwrap();
        let sw = cluster.status(w).await.unwrap();
        if sb.raft_state == RaftState::Leader && sw.leader_id == Some(b) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B did not end up leader: B {} / witness {}",
            sb.raft_state,
            sw.raft_state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // B counts every acknowledged event exactly once.
    let counted = counted_ids(&cluster, b).await;
    let missing: Vec<_> = acked.iter().filter(|id| !counted.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "B lacks acknowledged events: {missing:?}"
    );
    assert_eq!(counted.len(), acked.len(), "B counted ids never posted");

    // A returns and converges to the same state; the witness still leads nothing.
    cluster.restart(a).await;
    cluster.assert_same_state().await;
    let sw = cluster.status(w).await.unwrap();
    assert_ne!(
        sw.raft_state,
        RaftState::Leader,
        "the witness stayed leader"
    );
    assert_eq!(counted_ids(&cluster, a).await, counted);
}
