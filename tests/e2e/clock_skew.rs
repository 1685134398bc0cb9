//! A leader whose wall clock jumps a year ahead (libfaketime on its process only, the
//! machine's clock untouched): it keeps stamping ingest time near its voters' clocks, so no
//! minute bucket and no dedup id is evicted; `/v1/cluster` and `/metrics` show the skew and
//! the clamping; and events a year in the future are refused as they would be anyway. The
//! clock RPC itself wants the cluster secret and takes only a tiny body.

use std::time::{Duration, Instant};

use serde_json::Value;
use tally_testkit::faketime::FakeClock;

use crate::common::{now_ms, simple_event, Cluster, ClusterOpts, ALL_NODES, SECRET};
use tally_raft::rpc::{self, ClockReply, ClockRequest};

const YEAR_MS: i64 = 365 * 86_400_000;
/// `[raft] max_clock_skew_ms` of the test cluster.
const SKEW_MS: i64 = 2_000;
/// How long a jump may take to show (libfaketime rereads its file about every second).
const JUMP_SHOWS_WITHIN: Duration = Duration::from_secs(15);

fn batch(prefix: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| simple_event(&format!("{prefix}-{i}"), now_ms(), "ClockJump", "/r"))
            .collect(),
    )
}

async fn minute_count(cluster: &Cluster, id: u64) -> u64 {
    let (_, rows) = cluster
        .aggregate_rows(
            id,
            "granularity=minute&api=ClockJump&group_by=&consistency=none",
        )
        .await;
    rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_a_year_ahead_evicts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clocks: Vec<(u64, FakeClock)> = ALL_NODES
        .iter()
        .map(|id| {
            let clock = FakeClock::create(dir.path().join(format!("n{id}.faketime"))).unwrap();
            (*id, clock)
        })
        .collect();
    let mut opts = ClusterOpts::default();
    for (id, clock) in &clocks {
        let env = clock
            .env()
            .unwrap_or_else(|e| panic!("{e:#}"))
            .into_iter()
            .map(|(k, v)| (*id, k, v));
        opts.node_env.extend(env);
    }
    opts.env
        .push(("TALLY_RAFT_MAX_CLOCK_SKEW_MS".into(), SKEW_MS.to_string()));
    let (cluster, leader) = Cluster::start_formed(opts).await;
    let follower = if leader == 1 { 2 } else { 1 };
    clock_rpc_is_guarded_and_bounded(&cluster).await;

    let early = batch("early", 20);
    let r = cluster.post_json(leader, &early).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    cluster.wait_converged().await;
    assert_eq!(minute_count(&cluster, leader).await, 20);

    // The leader's wall clock jumps a year ahead; wait until its own status shows it and
    // its samples of both voters say they are a year behind.
    clocks[(leader - 1) as usize].1.jump_days(365).unwrap();
    let deadline = Instant::now() + JUMP_SHOWS_WITHIN;
    let status = loop {
        let s = cluster.status(leader).await.unwrap();
        let jumped = s.clock.local_ms > now_ms() + YEAR_MS - 60_000;
        let seen = s.clock.peers.len() == 2
            && s.clock
                .peers
                .iter()
                .all(|p| p.skew_ms.is_some_and(|k| (k + YEAR_MS).abs() < 60_000));
        if jumped && seen && s.clock.clamping {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the leader's clock jump did not show within {JUMP_SHOWS_WITHIN:?}: {:?}",
            s.clock
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.node_id, leader);
    assert!(status.is_leader(), "leadership moved: {status:?}");
    assert_eq!(status.clock.bound, tally_protocol::ClockBound::Majority);
    assert_eq!(status.clock.max_skew_ms, SKEW_MS as u64);
    let ahead = status.clock.ahead_ms.expect("a majority clock");
    assert!((ahead - YEAR_MS).abs() < 60_000, "{:?}", status.clock);

    // New events, and a re-send of the early batch: the re-send is recognised, because the
    // dedup window was not expired by a year-ahead ingest time.
    let late = batch("late", 30);
    let r = cluster.post_json(leader, &late).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let r = cluster.post_json(follower, &early).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["duplicates"], 20, "a re-sent early batch: {r:?}");
    // An event a year ahead of the real time is refused, as on any node with a good clock
    // (the leader checks event times against its voters' time, not its own clock).
    let future = Value::Array(vec![simple_event(
        "future-0",
        now_ms() + 300 * 86_400_000,
        "ClockJump",
        "/r",
    )]);
    let r = cluster.post_json(leader, &future).await.unwrap();
    assert_eq!(r.status, 400, "{r:?}");

    cluster.wait_converged().await;
    let s = cluster.status(leader).await.unwrap();
    let stamped = s.clock.last_stamp_ms.expect("the leader stamped entries");
    assert!(
        stamped < now_ms() + 2 * SKEW_MS,
        "the leader stamped {stamped}, more than the tolerance ahead of the real time"
    );
    assert!(s.clock.clamped_total >= 2, "{:?}", s.clock);
    for id in [leader, follower] {
        assert_eq!(
            minute_count(&cluster, id).await,
            50,
            "node {id}: minute buckets lost or double counted"
        );
        let st = cluster.status(id).await.unwrap();
        assert!(st.state.dedup_ids >= 50, "node {id}: {:?}", st.state);
    }
    cluster.assert_same_state().await;

    // /metrics shows the skew per peer and the clamping.
    let r = cluster.get(leader, "/metrics").await.unwrap();
    assert_eq!(r.status, 200);
    let text = r.body.as_str().expect("metrics are text").to_string();
    let skews: Vec<i64> = text
        .lines()
        .filter(|l| l.starts_with("tally_clock_skew_ms{peer="))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(skews.len(), 2, "{text}");
    assert!(
        skews.iter().all(|k| (k + YEAR_MS).abs() < 60_000),
        "{skews:?}"
    );
    assert!(text.contains("tally_clock_clamping 1"), "{text}");
    let clamped: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tally_clock_clamped_total "))
        .expect("tally_clock_clamped_total")
        .parse()
        .unwrap();
    assert!(clamped >= 2);

    // And back: the clock returns, the stamps follow it, nothing is clamped any more.
    clocks[(leader - 1) as usize].1.reset().unwrap();
    let deadline = Instant::now() + JUMP_SHOWS_WITHIN;
    loop {
        let s = cluster.status(leader).await.unwrap();
        if !s.clock.clamping && (s.clock.local_ms - now_ms()).abs() < 60_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the clock did not come back: {:?}",
            s.clock
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = cluster.post_json(leader, &batch("after", 5)).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    cluster.wait_converged().await;
    assert_eq!(minute_count(&cluster, follower).await, 55);
}

/// `/raft/clock` on every node: refused without the cluster secret, a tiny body cap, a 400
/// for garbage, and with all that right the node's id and wall clock.
async fn clock_rpc_is_guarded_and_bounded(cluster: &Cluster) {
    for node in ALL_NODES {
        let url = format!("{}{}", cluster.url(node), rpc::path::CLOCK);
        let body = rpc::encode(&ClockRequest { from: 9 }).unwrap();
        let post = |body: Vec<u8>, secret: Option<&str>| {
            let mut req = cluster.http.post(&url).body(body);
            if let Some(s) = secret {
                req = req.header(rpc::SECRET_HEADER, s);
            }
            req.send()
        };
        let r = post(body.clone(), None).await.unwrap();
        assert_eq!(
            r.status(),
            401,
            "node {node}: /raft/clock without the secret"
        );
        let r = post(body.clone(), Some("wrong")).await.unwrap();
        assert_eq!(
            r.status(),
            401,
            "node {node}: /raft/clock with a wrong secret"
        );
        let r = post(vec![0u8; 2048], Some(SECRET)).await.unwrap();
        assert_eq!(r.status(), 413, "node {node}: a 2 KiB /raft/clock body");
        let r = post(vec![0xFF; 12], Some(SECRET)).await.unwrap();
        assert_eq!(
            r.status(),
            400,
            "node {node}: a /raft/clock body that is not bincode"
        );
        let r = post(body, Some(SECRET)).await.unwrap();
        assert_eq!(r.status(), 200, "node {node}: /raft/clock");
        let reply: ClockReply = rpc::decode(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(reply.node_id, node);
        assert!((reply.now_ms - now_ms()).abs() < 60_000, "{reply:?}");
    }
}
