//! A TLS cluster with peer client certificates: two data nodes and a witness that serve
//! HTTPS only and reach each other over HTTPS with their certificates as client identity
//! (the harness makes the CA and one certificate per node).
//!
//! Ingest works over HTTPS through every node (followers forward with their certificate),
//! the leader fails over and rejoins with equal digests, and the listener refuses what it
//! should: Raft RPC without a client certificate (401 `peer_certificate_required`, even with
//! the cluster secret), a forwarded request without one, a client certificate from another
//! CA (the TLS handshake fails), and plain HTTP on the TLS port (no HTTP answer at all).
//! The CLI reaches it with `--ca`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_testkit::pki::TestCa;

use crate::common::{
    now_ms, simple_event, Cluster, ClusterOpts, Format, TlsSpec, ALL_NODES, DATA_NODES, SECRET,
};

/// Posts `events` to the nodes in turn until one acknowledges them all, retrying 503s and
/// transport errors (the same event ids: counted once) for at most `within`.
async fn post_until_acked(cluster: &Cluster, events: &[Value], within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    for attempt in 0usize.. {
        assert!(
            Instant::now() < deadline,
            "no node acknowledged the batch within {within:?}: {last}\n{}",
            cluster.all_log_tails(30)
        );
        let node = ALL_NODES[attempt % ALL_NODES.len()];
        if !cluster.is_running(node) {
            continue;
        }
        match cluster
            .api()
            .post_events(node, Format::Ndjson, events)
            .await
        {
            Ok(r) if r.status == 200 => {
                assert_eq!(
                    r.body["accepted"].as_u64(),
                    Some(events.len() as u64),
                    "{r:?}"
                );
                return;
            }
            Ok(r) if r.status == 503 => last = format!("node {node}: {r:?}"),
            Ok(r) => panic!("node {node} answered {r:?}"),
            Err(e) => last = format!("node {node}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn batch(tag: &str, n: usize) -> Vec<Value> {
    let ts = now_ms();
    (0..n)
        .map(|i| simple_event(&format!("{tag}-{i}"), ts, "Tls", tag))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_https_fails_over_and_refuses_strangers() {
    let opts = ClusterOpts {
        tls: Some(TlsSpec {
            peer_client_auth: true,
        }),
        ..Default::default()
    };
    let (mut cluster, leader) = Cluster::start_formed(opts).await;
    let follower = DATA_NODES.into_iter().find(|&n| n != leader).unwrap();
    assert!(
        cluster.url(leader).starts_with("https://"),
        "{}",
        cluster.url(leader)
    );

    // Ingest over HTTPS on every node: the follower and the witness forward to the leader
    // over HTTPS with their own certificate.
    for node in ALL_NODES {
        let events = batch(&format!("via-{node}"), 5);
        let r = cluster
            .api()
            .post_events(node, Format::Ndjson, &events)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "ingest through node {node}: {r:?}");
    }

    // Raft RPC from a client that trusts the CA but shows no certificate: refused before
    // the secret or the body matter.
    let vote = format!("{}/raft/vote", cluster.url(follower));
    let no_cert = cluster.harness().client_builder().unwrap().build().unwrap();
    let r = no_cert
        .post(&vote)
        .header("x-tally-secret", SECRET)
        .body(vec![0u8; 8])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "peer_certificate_required", "{body}");
    // A request that claims to be forwarded by a node needs the certificate too.
    let r = no_cert
        .post(format!("{}/v1/events", cluster.url(leader)))
        .header("x-tally-forwarded-by", follower.to_string())
        .header("content-type", "application/x-ndjson")
        .body(crate::common::ndjson(&batch("forged", 1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a forged forward without a certificate");
    // Other routes need no client certificate.
    let r = no_cert
        .get(format!("{}/healthz", cluster.url(follower)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A certificate from the cluster's CA passes (the garbage vote body is then a 400 from
    // the RPC decoder: the request got past the listener and the secret).
    let member = cluster
        .harness()
        .issue_certificate("another peer", &[])
        .unwrap();
    let with_cert = cluster
        .harness()
        .client_builder()
        .unwrap()
        .identity(reqwest::Identity::from_pem(member.identity_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = with_cert
        .post(&vote)
        .header("x-tally-secret", SECRET)
        .body(vec![0u8; 8])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "{:?}", r.text().await);

    // A certificate from another CA fails the handshake: no HTTP answer at all.
    let stranger = TestCa::new("not the cluster's CA")
        .unwrap()
        .issue("stranger", &[])
        .unwrap();
    let foreign = cluster
        .harness()
        .client_builder()
        .unwrap()
        .identity(reqwest::Identity::from_pem(stranger.identity_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let answer = foreign
        .post(&vote)
        .header("x-tally-secret", SECRET)
        .body(vec![0u8; 8])
        .send()
        .await;
    assert!(
        answer.is_err(),
        "a foreign client certificate got {answer:?}"
    );

    // Plain HTTP to the TLS port: the handshake fails and the connection closes.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = plain
        .get(format!("http://{}/healthz", cluster.addr(leader)))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(answer.is_err(), "plain HTTP got {answer:?}");
    let mut raw = std::net::TcpStream::connect(cluster.addr(leader)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    assert!(
        !String::from_utf8_lossy(&reply).contains("HTTP/1.1"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&reply)
    );

    // The CLI reaches an https:// node with --ca, and refuses to trust it without.
    let ca = cluster.harness().ca_path().unwrap();
    let url = cluster.url(leader);
    let (ok, out, err) = cluster
        .run_cli(&[
            "cluster",
            "status",
            "--node",
            &url,
            "--ca",
            ca.to_str().unwrap(),
        ])
        .await;
    assert!(ok, "tally cluster status over HTTPS: {out}{err}");
    let (ok, _, err) = cluster
        .run_cli(&["cluster", "status", "--node", &url])
        .await;
    assert!(!ok, "the CLI trusted an unknown CA: {err}");

    // Failover over HTTPS: kill the leader, write through the survivors, bring it back.
    cluster.kill(leader);
    post_until_acked(&cluster, &batch("after-kill", 10), Duration::from_secs(30)).await;
    let new_leader = cluster.wait_leader().await;
    assert_eq!(new_leader, follower, "the other data node leads");
    cluster.restart(leader).await;
    post_until_acked(
        &cluster,
        &batch("after-restart", 10),
        Duration::from_secs(30),
    )
    .await;
    let (index, digest) = cluster.assert_same_state().await;
    eprintln!("TLS cluster converged at index {index}, digest {digest}");
    cluster.wait_ready().await;
    let (_, rows) = cluster
        .aggregate_rows(leader, "granularity=day&api=Tls&group_by=resource")
        .await;
    let total: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    assert_eq!(
        total,
        3 * 5 + 10 + 10,
        "rows on the rejoined node: {rows:?}"
    );
}
