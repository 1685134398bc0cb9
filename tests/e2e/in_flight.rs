//! Work in flight is bounded: requests being served (`http.max_requests_in_flight`) and
//! ingest bytes read but not answered (`ingest.max_bytes_in_flight`). Clients that hold
//! requests open with half-sent bodies use up the budgets; then the next request gets 503
//! with `Retry-After` at once, while health probes and Raft go on; once they let go, the
//! node serves again.

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{now_ms, simple_event, Cluster, ClusterOpts, Format, DATA_NODES};

const MAX_REQUESTS: u64 = 4;
const MAX_BODY: u64 = 65_536;

/// Opens a `POST /v1/events` that declares `declared` body bytes and sends only `sent`.
async fn hold_request(addr: &str, declared: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b' '; sent]).await.unwrap();
    s.flush().await.unwrap();
    s
}

/// A batch of about `bytes` bytes of JSON.
fn batch_of(bytes: usize, tag: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut size = 2;
    let mut i = 0;
    while size < bytes {
        let e = simple_event(&format!("{tag}-{i}"), now_ms(), "Budget", "/items");
        size += e.to_string().len() + 1;
        events.push(e);
        i += 1;
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_and_bytes_make_the_next_request_a_503_until_they_let_go() {
    let opts = ClusterOpts {
        http: vec![
            ("max_connections", 64),
            ("max_requests_in_flight", MAX_REQUESTS),
            // Long enough for the held bodies to stay held while the test looks.
            ("body_read_timeout_ms", 20_000),
        ],
        env: vec![
            ("TALLY_INGEST_MAX_BODY_BYTES".into(), MAX_BODY.to_string()),
            (
                "TALLY_INGEST_MAX_BYTES_IN_FLIGHT".into(),
                MAX_BODY.to_string(),
            ),
        ],
        ..ClusterOpts::default()
    };
    let (cluster, leader) = Cluster::start_formed(opts).await;
    let follower = DATA_NODES.into_iter().find(|&n| n != leader).unwrap();
    let term = cluster.status(leader).await.unwrap().term;
    let api = cluster.api();

    // Ingest bytes: one request holds 40 KB of a 60 KB body; a 30 KB batch does not fit.
    let held = hold_request(cluster.addr(leader), 60_000, 40_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = api
        .post_events(leader, Format::Array, &batch_of(30_000, "big"))
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.error_code(), Some("ingest_busy"), "{r:?}");
    assert!(r.retry_after.is_some(), "{r:?}");
    // A small one fits in what is left.
    let r = api
        .post_events(leader, Format::Array, &batch_of(10_000, "small"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = api
        .post_events(leader, Format::Array, &batch_of(30_000, "big"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "released with the held request: {r:?}");

    // Requests: MAX_REQUESTS held bodies use every slot of the follower.
    let mut holders = Vec::new();
    for _ in 0..MAX_REQUESTS {
        holders.push(hold_request(cluster.addr(follower), 1_000, 10).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = api
        .get(follower, "/v1/aggregates?granularity=minute")
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.error_code(), Some("busy"), "{r:?}");
    assert!(r.retry_after.is_some(), "{r:?}");
    // Health probes are not counted, and Raft goes on: the leader still commits.
    assert_eq!(api.get(follower, "/healthz").await.unwrap().status, 200);
    let r = api
        .post_events(leader, Format::Array, &batch_of(1_000, "during"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    drop(holders);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = api
        .get(follower, "/v1/aggregates?granularity=minute")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "slots come back: {r:?}");

    cluster.assert_same_state().await;
    assert_eq!(
        cluster.status(leader).await.unwrap().term,
        term,
        "an election happened while the budgets were full"
    );
}
