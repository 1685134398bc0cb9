//! Membership operations end to end (docs/api.md, docs/membership.md), on real processes: unsafe requests are
//! refused and change nothing; a dead data node is replaced by a new one, or rebuilt under
//! its own id after losing its disk; the witness moves to a new node; leadership is handed to
//! the other data node. After each change writes keep working and the data nodes agree.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::joining::member_body;
use crate::common::{
    assert_aggregates_match, now_ms, simple_event, Cluster, ClusterOpts, DATA_NODES, WITNESS,
};
use serde_json::{json, Value};
use tally_protocol::{MembershipAnswer, Role};

/// Small snapshots and no log kept behind them: a node that joins late must be fed a
/// snapshot, not just the log.
fn snapshotting() -> ClusterOpts {
    ClusterOpts {
        snapshot_threshold: Some(20),
        log_keep_behind_snapshot: Some(0),
        ..ClusterOpts::default()
    }
}

/// Posts `requests` requests of 4 events each through node `via` (retrying 503s briefly,
/// e.g. while leadership moves), appending the events to `posted`. Returns the highest
/// acknowledged log index.
async fn post_requests(
    cluster: &Cluster,
    via: u64,
    prefix: &str,
    requests: usize,
    posted: &mut Vec<Value>,
) -> u64 {
    let ts = now_ms() / 60_000 * 60_000;
    let mut index = 0;
    for i in 0..requests {
        let events: Vec<Value> = (0..4)
            .map(|j| {
                let api = if j % 2 == 0 { "Pets" } else { "Shop" };
                simple_event(
                    &format!("{prefix}-{i}-{j}"),
                    ts - (i as i64 % 30) * 60_000,
                    api,
                    &format!("/r{}", (i + j) % 3),
                )
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = cluster
                .post_json(via, &Value::Array(events.clone()))
                .await
                .unwrap();
            if r.status == 200 {
                assert_eq!(r.body["accepted"], 4, "{r:?}");
                index = index.max(r.body["index"].as_u64().unwrap());
                break;
            }
            assert!(
                r.status == 503 && Instant::now() < deadline,
                "post {prefix}-{i} via node {via}: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        posted.extend(events);
    }
    index
}

/// Waits until node `id` has purged its log behind a snapshot, so that a node joining now
/// must be sent the snapshot. Returns the purged index.
async fn wait_purged(cluster: &Cluster, id: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = cluster.status(id).await.unwrap();
        if let Some(p) = s.purged_index.filter(|p| *p > 0) {
            return p;
        }
        assert!(Instant::now() < deadline, "node {id} purged nothing: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn other_data_node(id: u64) -> u64 {
    DATA_NODES.into_iter().find(|&d| d != id).unwrap()
}

fn voter_set(resp: &Value) -> BTreeSet<u64> {
    resp["voters"]
        .as_array()
        .unwrap_or_else(|| panic!("no voters in {resp}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

fn ids(list: &[u64]) -> BTreeSet<u64> {
    list.iter().copied().collect()
}

/// Asserts every node in `nodes` reports exactly the membership `want`.
async fn assert_membership_everywhere(
    cluster: &Cluster,
    nodes: &[u64],
    want: &[crate::common::joining::Member],
    context: &str,
) {
    for &id in nodes {
        // Followers learn a committed membership on the next append; give them a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = cluster.members(id).await;
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{context}: node {id} sees {got:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_requests_are_refused_and_change_nothing() {
    let (mut cluster, leader) = Cluster::start_formed(ClusterOpts::default()).await;
    let follower = other_data_node(leader);
    let mut posted = Vec::new();
    post_requests(&cluster, leader, "u", 3, &mut posted).await;
    let before = cluster.members(leader).await;
    assert_eq!(before.len(), 3, "{before:?}");
    // A second witness, running and reachable, to try to add as a voter.
    let w5 = cluster.start_joining_node(5, true).await;

    // Bad bodies get a 400 from whichever node they reach, leader or not.
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"{".to_vec()),
        ("empty", Vec::new()),
        (
            "id 0",
            br#"{"id":0,"addr":"127.0.0.1:9","role":"data"}"#.to_vec(),
        ),
        (
            "negative id",
            br#"{"id":-4,"addr":"127.0.0.1:9","role":"data"}"#.to_vec(),
        ),
        (
            "id as text",
            br#"{"id":"four","addr":"127.0.0.1:9","role":"data"}"#.to_vec(),
        ),
        ("no addr", br#"{"id":4,"role":"data"}"#.to_vec()),
        (
            "empty addr",
            br#"{"id":4,"addr":"","role":"data"}"#.to_vec(),
        ),
        (
            "addr without port",
            br#"{"id":4,"addr":"localhost","role":"data"}"#.to_vec(),
        ),
        (
            "addr with scheme",
            br#"{"id":4,"addr":"http://h:1","role":"data"}"#.to_vec(),
        ),
        (
            "unknown role",
            br#"{"id":4,"addr":"127.0.0.1:9","role":"leader"}"#.to_vec(),
        ),
        (
            "unknown field",
            br#"{"id":4,"addr":"127.0.0.1:9","voters":[1]}"#.to_vec(),
        ),
        (
            "replaces itself",
            br#"{"id":4,"addr":"127.0.0.1:9","replaces":4}"#.to_vec(),
        ),
        (
            "replaces as a learner",
            br#"{"id":4,"addr":"127.0.0.1:9","voter":false,"replaces":2}"#.to_vec(),
        ),
    ];
    for via in [leader, WITNESS] {
        for (what, body) in &bad {
            let r = cluster
                .post_raw(
                    via,
                    "/v1/cluster/members",
                    Some("application/json"),
                    body.clone(),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 400, "{what} via node {via}: {r:?}");
            assert_eq!(r.error_code(), Some("invalid_request"), "{what}: {r:?}");
        }
    }
    for (path, status, code) in [
        ("abc", 400, "invalid_request"),
        ("0", 400, "invalid_request"),
        ("99", 404, "unknown_member"),
    ] {
        let r = cluster.remove_member(WITNESS, path).await;
        assert_eq!(r.status, status, "DELETE {path}: {r:?}");
        assert_eq!(r.error_code(), Some(code), "DELETE {path}: {r:?}");
    }
    for (body, status, code) in [
        (json!({"to": WITNESS}), 400, "invalid_request"),
        (json!({"to": 99}), 404, "unknown_member"),
        (json!({"to": 5}), 404, "unknown_member"),
        (json!({"to": 0}), 400, "invalid_request"),
        (json!({"to": "two"}), 400, "invalid_request"),
        (json!({"too": 2}), 400, "invalid_request"),
    ] {
        for via in [leader, follower] {
            let r = cluster.move_leader(via, Some(&body)).await;
            assert_eq!(r.status, status, "leader {body} via {via}: {r:?}");
            assert_eq!(r.error_code(), Some(code), "leader {body}: {r:?}");
        }
    }

    // A second witness as a voter: two witnesses beside two data nodes. Refused, even as a
    // forwarded request, and the node is not even added as a learner.
    for via in [leader, WITNESS, follower] {
        let r = cluster
            .add_member(via, &member_body(5, &w5, "witness", None))
            .await;
        assert_eq!(r.status, 409, "second witness via {via}: {r:?}");
        assert_eq!(r.error_code(), Some("unsafe_membership"), "{r:?}");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("replaces"),
            "the error says how to move the witness: {message}"
        );
    }
    // Who is at an address is checked before anything changes.
    let r = cluster
        .add_member(leader, &member_body(6, &w5, "witness", None))
        .await;
    assert_eq!(r.status, 400, "wrong id for the address: {r:?}");
    let r = cluster
        .add_member(leader, &member_body(5, &w5, "data", None))
        .await;
    assert_eq!(r.status, 400, "wrong role for the node: {r:?}");
    let nobody = format!("127.0.0.1:{}", crate::common::free_ports(1)[0]);
    let r = cluster
        .add_member(leader, &member_body(4, &nobody, "data", None))
        .await;
    assert_eq!(r.status, 400, "unreachable node: {r:?}");
    assert_eq!(r.error_code(), Some("node_unreachable"), "{r:?}");
    // A known id under another role.
    let witness_addr = cluster.addr(WITNESS).to_string();
    let r = cluster
        .add_member(
            leader,
            &member_body(follower, &witness_addr, "witness", None),
        )
        .await;
    assert!(r.status == 400 || r.status == 409, "{r:?}");

    assert_membership_everywhere(&cluster, &[1, 2, 3], &before, "after refused requests").await;

    // Removing one data node is allowed: one data node and the witness remain.
    let r = cluster.remove_member(WITNESS, &follower.to_string()).await;
    assert_eq!(r.status, 200, "remove data node {follower}: {r:?}");
    assert_eq!(voter_set(&r.body), ids(&[leader, WITNESS]), "{r:?}");
    cluster.kill(follower); // No longer a member: the operator stops it.
    let after_removal = cluster.members(leader).await;
    assert_eq!(after_removal.len(), 2, "{after_removal:?}");

    // Removing the last data voter is refused, from any node.
    for via in [leader, WITNESS] {
        let r = cluster.remove_member(via, &leader.to_string()).await;
        assert_eq!(r.status, 409, "remove the last data voter via {via}: {r:?}");
        assert_eq!(r.error_code(), Some("unsafe_membership"), "{r:?}");
    }
    // No other data voter to hand leadership to.
    let r = cluster.move_leader(WITNESS, None).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.error_code(), Some("member_conflict"), "{r:?}");
    // Still no second witness voter, even with only one data node left.
    let r = cluster
        .add_member(leader, &member_body(5, &w5, "witness", None))
        .await;
    assert_eq!(r.status, 409, "{r:?}");

    assert_membership_everywhere(
        &cluster,
        &[leader, WITNESS],
        &after_removal,
        "after refused removal",
    )
    .await;
    // Writes keep working on what is left.
    post_requests(&cluster, WITNESS, "u2", 3, &mut posted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_data_node_is_replaced_by_a_new_one() {
    let (mut cluster, _) = Cluster::start_formed(snapshotting()).await;
    let mut posted = Vec::new();
    post_requests(&cluster, 1, "r", 40, &mut posted).await;
    cluster.wait_converged().await;

    // Node 2 dies and its disk is lost.
    cluster.kill(2);
    cluster.wipe(2);
    let leader = cluster.wait_leader().await;
    assert_eq!(leader, 1);
    wait_purged(&cluster, 1).await;

    // Removing the witness now would leave voters {1, 2} with node 2 dead: no live majority,
    // so the change could never commit. Refused, nothing changed.
    let before = cluster.members(1).await;
    let r = cluster.remove_member(1, "3").await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.error_code(), Some("unsafe_membership"), "{r:?}");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("live majority"),
        "{r:?}"
    );
    assert_eq!(cluster.members(1).await, before);

    // A fresh data node with a new id and port takes its place, in one change: learner,
    // caught up (from a snapshot: the log behind it is purged), then swapped in. The request
    // goes to the witness, which forwards it to the leader.
    let addr4 = cluster.start_joining_node(4, false).await;
    let started = Instant::now();
    let r = cluster
        .add_member(WITNESS, &member_body(4, &addr4, "data", Some(2)))
        .await;
    assert_eq!(r.status, 200, "replace 2 by 4: {r:?}");
    eprintln!(
        "replace took {:?}: {}",
        started.elapsed(),
        r.body["message"]
    );
    assert_eq!(r.body["changed"], true, "{r:?}");
    assert_eq!(voter_set(&r.body), ids(&[1, 3, 4]), "{r:?}");
    let members: BTreeSet<u64> = cluster.members(1).await.iter().map(|m| m.id).collect();
    assert_eq!(members, ids(&[1, 3, 4]), "node 2 is no longer a member");

    // Writes keep working, and node 4 reaches exactly node 1's state.
    let index = post_requests(&cluster, 4, "r2", 10, &mut posted).await;
    let (at, _) = cluster.wait_same_digest(1, 4, index).await;
    assert!(at >= index);
    let all: Vec<&Value> = posted.iter().collect();
    assert_aggregates_match(&cluster, 4, "minute", &["api_name", "resource"], &all).await;
    let s4 = cluster.status(4).await.unwrap();
    assert_eq!(s4.role, Role::Data, "{s4:?}");
    assert_eq!(s4.leader_id, Some(1), "{s4:?}");

    // The same request again is a harmless no-op.
    let r = cluster
        .add_member(1, &member_body(4, &addr4, "data", Some(2)))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["changed"], false, "{r:?}");
    assert_eq!(voter_set(&r.body), ids(&[1, 3, 4]), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_data_node_is_rebuilt_under_its_own_id() {
    let (mut cluster, _) = Cluster::start_formed(snapshotting()).await;
    let mut posted = Vec::new();
    post_requests(&cluster, 1, "w", 40, &mut posted).await;
    cluster.wait_converged().await;
    let addr2 = cluster.addr(2).to_string();

    // Node 2 stops and loses its disk. The operator step: remove it while it is down (a node
    // that forgot its log and its votes must not count as a voter), then start it empty and
    // add it back under the same id.
    cluster.kill(2);
    let leader = cluster.wait_leader().await;
    assert_eq!(leader, 1);
    let r = cluster.remove_member(WITNESS, "2").await;
    assert_eq!(r.status, 200, "remove 2: {r:?}");
    assert_eq!(voter_set(&r.body), ids(&[1, 3]), "{r:?}");
    // Writes go on with one data node and the witness.
    post_requests(&cluster, 1, "w2", 10, &mut posted).await;

    wait_purged(&cluster, 1).await;
    cluster.wipe(2);
    cluster.restart(2).await;
    let r = cluster
        .add_member(1, &member_body(2, &addr2, "data", None))
        .await;
    assert_eq!(r.status, 200, "add 2 back: {r:?}");
    assert_eq!(voter_set(&r.body), ids(&[1, 2, 3]), "{r:?}");

    let index = post_requests(&cluster, 2, "w3", 10, &mut posted).await;
    let (at, digest) = cluster.assert_same_state().await;
    assert!(at >= index);
    let (_, digest2) = cluster.wait_same_digest(1, 2, at).await;
    assert_eq!(digest, digest2);
    let all: Vec<&Value> = posted.iter().collect();
    assert_aggregates_match(&cluster, 2, "hour", &["api_name", "resource"], &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_data_node_comes_back_at_a_new_address_under_its_own_id() {
    let (mut cluster, _) = Cluster::start_formed(snapshotting()).await;
    let mut posted = Vec::new();
    post_requests(&cluster, 1, "a", 30, &mut posted).await;
    cluster.wait_converged().await;

    // Node 2's machine is lost: a new, empty machine takes over its id at another address.
    cluster.kill(2);
    cluster.wipe(2);
    let old = cluster.addr(2).to_string();
    let new = cluster.move_node(2);
    assert_eq!(cluster.wait_leader().await, 1);
    wait_purged(&cluster, 1).await;
    cluster.restart(2).await;

    // One request: the old entry is removed, then the node is added back at its new address
    // (learner, caught up, voter). The leader never reaches the empty node as a voter.
    let r = cluster
        .add_member(WITNESS, &member_body(2, &new, "data", None))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("removed node 2 at its old address {old}")),
        "{message}"
    );
    assert_eq!(voter_set(&r.body), ids(&[1, 2, 3]), "{r:?}");
    let m2 = cluster
        .members(1)
        .await
        .into_iter()
        .find(|m| m.id == 2)
        .unwrap();
    assert_eq!((m2.addr.as_str(), m2.voter), (new.as_str(), true));

    let index = post_requests(&cluster, 2, "a2", 10, &mut posted).await;
    cluster.wait_same_digest(1, 2, index).await;
    cluster.assert_same_state().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_moves_to_a_new_node() {
    let (mut cluster, leader) = Cluster::start_formed(snapshotting()).await;
    let mut posted = Vec::new();
    post_requests(&cluster, leader, "m", 30, &mut posted).await;
    wait_purged(&cluster, leader).await;

    // A new witness, added through the CLI with --replaces: learner, caught up, then swapped
    // for the old witness in one change — two witnesses are never voters at once.
    let addr5 = cluster.start_joining_node(5, true).await;
    let node_url = cluster.url(other_data_node(leader));
    let (ok, out, err) = cluster
        .run_cli(&[
            "cluster",
            "add",
            "--node",
            &node_url,
            "--id",
            "5",
            "--addr",
            &addr5,
            "--witness",
            "--replaces",
            "3",
        ])
        .await;
    assert!(ok, "tally cluster add failed:\n{out}\n{err}");
    assert!(
        out.contains("promoted node 5 to voter and removed node 3"),
        "{out}"
    );
    assert!(out.contains(&addr5), "the CLI prints the membership: {out}");

    let members = cluster.members(leader).await;
    let summary: Vec<(u64, &str, bool)> = members
        .iter()
        .map(|m| (m.id, m.role.as_str(), m.voter))
        .collect();
    assert_eq!(
        summary,
        vec![(1, "data", true), (2, "data", true), (5, "witness", true)],
        "{members:?}"
    );

    // The old witness goes away; writes keep working with the new one.
    cluster.kill(WITNESS);
    post_requests(&cluster, leader, "m2", 10, &mut posted).await;
    let (index, _) = cluster.assert_same_state().await;
    let s5 = cluster.status(5).await.unwrap();
    assert_eq!(s5.role, Role::Witness, "{s5:?}");
    assert_eq!(
        s5.state.events_applied, 0,
        "a witness applies nothing: {s5:?}"
    );
    assert!(
        s5.leader_id.is_some_and(|l| DATA_NODES.contains(&l)),
        "{s5:?}"
    );
    assert!(s5.last_log_index.unwrap_or(0) >= index, "{s5:?}");

    // The new witness is a working voter: with one data node down, it and the other data
    // node still form a quorum.
    let follower = other_data_node(cluster.wait_leader().await);
    cluster.kill(follower);
    let survivor = other_data_node(follower);
    post_requests(&cluster, survivor, "m3", 3, &mut posted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_other_data_node() {
    let (cluster, leader) = Cluster::start_formed(ClusterOpts::default()).await;
    let other = other_data_node(leader);
    let mut posted = Vec::new();
    post_requests(&cluster, leader, "l", 5, &mut posted).await;

    // No target: the best other data voter. Asked on the witness, which forwards.
    let r = cluster.move_leader(WITNESS, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let answer: MembershipAnswer = serde_json::from_value(r.body.clone()).expect("answer");
    assert_eq!(answer.leader_id, Some(other), "{r:?}");
    assert!(answer.changed, "{r:?}");
    assert_eq!(cluster.wait_leader().await, other);
    post_requests(&cluster, WITNESS, "l2", 5, &mut posted).await;

    // Back again through the CLI, naming the target, asked on the (new) follower.
    let url = cluster.url(leader);
    let (ok, out, err) = cluster
        .run_cli(&[
            "cluster",
            "leader",
            "--node",
            &url,
            "--to",
            &leader.to_string(),
        ])
        .await;
    assert!(ok, "tally cluster leader failed:\n{out}\n{err}");
    assert!(out.contains(&format!("to node {leader}")), "{out}");
    assert_eq!(cluster.wait_leader().await, leader);

    // Handing leadership to the node that has it is a no-op.
    let r = cluster
        .move_leader(other, Some(&json!({"to": leader})))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["changed"], false, "{r:?}");

    post_requests(&cluster, other, "l3", 5, &mut posted).await;
    cluster.assert_same_state().await;
    let all: Vec<&Value> = posted.iter().collect();
    assert_aggregates_match(&cluster, other, "minute", &["api_name"], &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_leaves_the_other_data_node_leading() {
    let (mut cluster, leader) = Cluster::start_formed(ClusterOpts::default()).await;
    let other = other_data_node(leader);
    let mut posted = Vec::new();
    post_requests(&cluster, leader, "x", 5, &mut posted).await;

    let r = cluster.remove_member(WITNESS, &leader.to_string()).await;
    assert_eq!(r.status, 200, "remove the leader: {r:?}");
    assert_eq!(voter_set(&r.body), ids(&[other, WITNESS]), "{r:?}");
    cluster.kill(leader);
    // openraft steps the removed leader down; the witness, if it wins, hands over.
    assert_eq!(cluster.wait_leader().await, other);
    post_requests(&cluster, WITNESS, "x2", 5, &mut posted).await;
    let all: Vec<&Value> = posted.iter().collect();
    assert_aggregates_match(&cluster, other, "minute", &["api_name"], &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_voter_refuses_to_rejoin_until_removed() {
    let (mut cluster, leader) = Cluster::start_formed(snapshotting()).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let mut posted = Vec::new();
    post_requests(&cluster, leader, "w", 10, &mut posted).await;
    cluster.kill(follower);
    cluster.wipe(follower);
    let log = cluster.start_expecting_refusal(follower).await;
    assert!(
        log.contains("still lists it as a voter") && log.contains("tally cluster remove"),
        "{log}"
    );
    // Nothing changed: the membership still lists it, writes go on.
    let m = cluster.members(leader).await;
    assert!(m.iter().any(|m| m.id == follower && m.voter));
    post_requests(&cluster, leader, "w2", 5, &mut posted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_operations_need_the_cluster_secret() {
    let (cluster, leader) = Cluster::start_formed(snapshotting()).await;
    let before = cluster.members(leader).await;
    let attempts: [(reqwest::Method, &str, &str); 4] = [
        (reqwest::Method::POST, "/v1/cluster/init", ""),
        (
            reqwest::Method::POST,
            "/v1/cluster/members",
            r#"{"id": 9, "addr": "127.0.0.1:1", "role": "data", "voter": false}"#,
        ),
        (reqwest::Method::DELETE, "/v1/cluster/members/2", ""),
        (reqwest::Method::POST, "/v1/cluster/leader", "{}"),
    ];
    for (method, path, body) in attempts {
        for secret in [None, Some("wrong")] {
            let mut req = cluster
                .http
                .request(method.clone(), format!("{}{path}", cluster.url(leader)))
                .header("content-type", "application/json")
                .body(body.to_string());
            if let Some(s) = secret {
                req = req.header("x-tally-secret", s);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 401, "{method} {path} with {secret:?}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "unauthorized", "{v}");
        }
    }
    assert_eq!(cluster.members(leader).await, before, "membership changed");
    // With the secret (as a bearer token) an operation goes through.
    let r = cluster
        .http
        .post(format!("{}/v1/cluster/init", cluster.url(leader)))
        .header("authorization", format!("Bearer {}", crate::common::SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
