//! Bad input gets a clear 4xx naming what is wrong, and changes nothing: the applied index
//! and the state digest of both data nodes are the same before and after a series of bad
//! requests sent to every node (leader, follower and witness).

use crate::common::{
    now_ms, simple_event, Cluster, ClusterOpts, Resp, ALL_NODES, DATA_NODES, SECRET,
};
use serde_json::{json, Value};
use tally_protocol::StateStatus;

/// Asserts a 400 `invalid_events` whose details name exactly `expected` `(record, field)`
/// pairs (in order); `None` for a whole-record problem.
fn assert_invalid(what: &str, r: &Resp, expected: &[(u64, Option<&str>)]) {
    assert_eq!(r.status, 400, "{what}: {r:?}");
    assert_eq!(r.error_code(), Some("invalid_events"), "{what}: {r:?}");
    let message = r.body["error"]["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "{what}: no message: {r:?}");
    let got: Vec<(u64, Option<String>)> = r
        .details()
        .iter()
        .map(|d| {
            assert!(
                d["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: detail without message: {d}"
            );
            (
                d["record"].as_u64().expect("record"),
                d["field"].as_str().map(str::to_string),
            )
        })
        .collect();
    let want: Vec<(u64, Option<String>)> = expected
        .iter()
        .map(|(r, f)| (*r, f.map(str::to_string)))
        .collect();
    assert_eq!(got, want, "{what}: details {r:?}");
}

/// A 4xx with the given status and `error.code`, with a non-empty message.
fn assert_error(what: &str, r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
    assert_eq!(r.error_code(), Some(code), "{what}: {r:?}");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: no message: {r:?}"
    );
}

async fn snapshot_of_state(cluster: &Cluster) -> Vec<(u64, u64, String, StateStatus)> {
    cluster.assert_same_state().await;
    let mut out = Vec::new();
    for id in DATA_NODES {
        let d = cluster.get_ok(id, "/v1/state/digest").await;
        let s = cluster.status(id).await.unwrap();
        out.push((
            id,
            d["applied_index"].as_u64().unwrap(),
            d["digest"].as_str().unwrap().to_string(),
            s.state,
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let (cluster, leader) = Cluster::start_formed(ClusterOpts::default()).await;
    let ts = now_ms();
    // Some real data first, so "unchanged" is about a non-empty state.
    let good: Vec<Value> = (0..20)
        .map(|i| simple_event(&format!("ok-{i}"), ts, "Shop", "/items"))
        .collect();
    let r = cluster
        .post_json(leader, &Value::Array(good))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let before = snapshot_of_state(&cluster).await;

    let ev = |id: &str| simple_event(id, ts, "Shop", "/items");
    for node in ALL_NODES {
        let on = |what: &str| format!("node {node}: {what}");

        // Malformed JSON.
        let r = cluster
            .post_raw(
                node,
                "/v1/events",
                Some("application/json"),
                br#"{"event_id": "x", "#.to_vec(),
            )
            .await
            .unwrap();
        assert_invalid(&on("malformed JSON"), &r, &[]);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("JSON"),
            "{r:?}"
        );

        // A typo of a field name: rejected and named, with a suggestion.
        let mut typo = ev(&format!("typo-{node}"));
        let code = typo
            .as_object_mut()
            .unwrap()
            .remove("response_code")
            .unwrap();
        typo["respnse_code"] = code;
        let r = cluster.post_json(node, &typo).await.unwrap();
        assert_invalid(
            &on("unknown field"),
            &r,
            &[(0, Some("respnse_code")), (0, Some("response_code"))],
        );
        assert!(
            r.details()[0]["message"]
                .as_str()
                .unwrap()
                .contains("response_code"),
            "a typo should suggest the known field: {r:?}"
        );

        // Missing event_id.
        let mut missing = ev("unused");
        missing.as_object_mut().unwrap().remove("event_id");
        let r = cluster.post_json(node, &json!([missing])).await.unwrap();
        assert_invalid(&on("missing event_id"), &r, &[(0, Some("event_id"))]);

        // response_code out of range.
        let mut bad_code = ev(&format!("code-{node}"));
        bad_code["response_code"] = json!(700);
        let r = cluster.post_json(node, &bad_code).await.unwrap();
        assert_invalid(&on("response_code 700"), &r, &[(0, Some("response_code"))]);

        // One bad record (index 3) among good ones: the whole batch is refused.
        let mut batch: Vec<Value> = (0..6).map(|i| ev(&format!("mix-{node}-{i}"))).collect();
        batch[3]["timestamp"] = json!("yesterday");
        let r = cluster
            .post_json(node, &Value::Array(batch.clone()))
            .await
            .unwrap();
        assert_invalid(
            &on("bad record 3 of an array"),
            &r,
            &[(3, Some("timestamp"))],
        );
        // The same as NDJSON: records count from 0 over non-empty lines.
        let r = cluster.post_ndjson(node, &batch).await.unwrap();
        assert_invalid(&on("bad record 3 of NDJSON"), &r, &[(3, Some("timestamp"))]);
        // A malformed NDJSON line is a whole-record problem of that record.
        let mut body = crate::common::ndjson(&batch[..2]);
        body.extend_from_slice(b"{not json}\n");
        let r = cluster
            .post_raw(node, "/v1/events", Some("application/x-ndjson"), body)
            .await
            .unwrap();
        assert_invalid(&on("malformed NDJSON line"), &r, &[(2, None)]);

        // Several problems in several records are all listed.
        let mut multi: Vec<Value> = (0..4).map(|i| ev(&format!("multi-{node}-{i}"))).collect();
        multi[1]["event_id"] = json!("has space");
        multi[2]["kind"] = json!("explosion");
        multi[3]["response_time_ms"] = json!(-4);
        let r = cluster.post_json(node, &Value::Array(multi)).await.unwrap();
        assert_invalid(
            &on("several bad records"),
            &r,
            &[
                (1, Some("event_id")),
                (2, Some("kind")),
                (3, Some("response_time_ms")),
            ],
        );

        // A duplicated key (serde would silently keep the last) and epoch seconds for
        // milliseconds are named too.
        let mut body = serde_json::to_vec(&ev(&format!("dupkey-{node}"))).unwrap();
        body.pop(); // the closing brace
        body.extend_from_slice(br#","response_code":500}"#);
        let r = cluster
            .post_raw(node, "/v1/events", Some("application/json"), body)
            .await
            .unwrap();
        assert_invalid(&on("duplicated key"), &r, &[(0, Some("response_code"))]);
        let mut secs = ev(&format!("secs-{node}"));
        secs["timestamp"] = json!(ts / 1000);
        let r = cluster
            .post_ndjson(node, &[ev("fine-1"), secs])
            .await
            .unwrap();
        assert_invalid(&on("timestamp in seconds"), &r, &[(1, Some("timestamp"))]);
        assert!(
            r.details()[0]["message"]
                .as_str()
                .unwrap()
                .contains("seconds"),
            "{r:?}"
        );

        // Not an object.
        let r = cluster
            .post_json(node, &json!([1, ev("fine")]))
            .await
            .unwrap();
        assert_invalid(&on("array of non-objects"), &r, &[(0, None)]);
        let r = cluster.post_json(node, &json!("hello")).await.unwrap();
        assert_invalid(&on("a string body"), &r, &[]);

        // Empty batches.
        let r = cluster.post_json(node, &json!([])).await.unwrap();
        assert_invalid(&on("empty array"), &r, &[]);
        let r = cluster
            .post_raw(node, "/v1/events", Some("application/json"), Vec::new())
            .await
            .unwrap();
        assert_invalid(&on("empty body"), &r, &[]);
        let r = cluster
            .post_raw(
                node,
                "/v1/events",
                Some("application/x-ndjson"),
                b"\n\n".to_vec(),
            )
            .await
            .unwrap();
        assert_invalid(&on("blank NDJSON"), &r, &[]);

        // Wrong content type.
        let r = cluster
            .post_raw(
                node,
                "/v1/events",
                Some("application/xml"),
                serde_json::to_vec(&ev("xml")).unwrap(),
            )
            .await
            .unwrap();
        assert_error(&on("wrong content type"), &r, 415, "unsupported_media_type");

        // Unknown query parameter on ingest.
        let r = cluster
            .post_raw(
                node,
                "/v1/events?dry_run=1",
                Some("application/json"),
                serde_json::to_vec(&ev("qp")).unwrap(),
            )
            .await
            .unwrap();
        assert_error(&on("unknown ingest parameter"), &r, 400, "invalid_request");
    }

    // An oversized body (> 8 MiB default limit): 413, and the node stays healthy. Sent as
    // valid events so only the size is wrong. A big body once is enough (debug builds).
    let mut big = Vec::with_capacity(9 << 20);
    let mut i = 0;
    while big.len() <= (8 << 20) + 1024 {
        let mut e = ev(&format!("big-{i}"));
        e["user_agent"] = json!("x".repeat(1000));
        big.extend(serde_json::to_vec(&e).unwrap());
        big.push(b'\n');
        i += 1;
    }
    for node in [leader, crate::common::WITNESS] {
        let r = cluster
            .post_raw(
                node,
                "/v1/events",
                Some("application/x-ndjson"),
                big.clone(),
            )
            .await
            .unwrap_or_else(|e| panic!("node {node}: oversized body: no answer: {e}"));
        assert_error(
            &format!("node {node}: oversized body"),
            &r,
            413,
            "too_large",
        );
    }

    // More events than one request may carry: refused as a whole.
    let many: Vec<Value> = (0..10_001).map(|i| ev(&format!("many-{i}"))).collect();
    let r = cluster
        .post_json(crate::common::WITNESS, &Value::Array(many))
        .await
        .unwrap();
    assert_invalid("10 001 events in one request", &r, &[]);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10000"),
        "{r:?}"
    );

    // Unknown endpoints get a JSON 404.
    for node in ALL_NODES {
        let r = cluster.get(node, "/v1/nothing-here").await.unwrap();
        assert_error(&format!("node {node}: unknown path"), &r, 404, "not_found");
    }

    // Bad query parameters on the analytic reads.
    let bad_queries = [
        "granularity=week",
        "granularity=minute&group_by=resource,colour",
        "from=yesterday",
        "to=1.5",
        "from=2000&to=1000",
        "consistency=eventual",
        "granularity=day&limit=5",
    ];
    for node in ALL_NODES {
        for q in bad_queries {
            let r = cluster
                .get(node, &format!("/v1/aggregates?{q}"))
                .await
                .unwrap();
            assert_error(
                &format!("node {node}: aggregates?{q}"),
                &r,
                400,
                "invalid_request",
            );
        }
        let r = cluster.get(node, "/v1/state/digest?x=1").await.unwrap();
        assert_error(
            &format!("node {node}: digest?x=1"),
            &r,
            400,
            "invalid_request",
        );
    }

    // Raft RPC without (or with a wrong) cluster secret: 401, before the body is looked at.
    for node in ALL_NODES {
        for secret in [None, Some("wrong"), Some("")] {
            let mut req = cluster
                .http
                .post(format!("{}/raft/vote", cluster.url(node)))
                .body(vec![0u8; 16]);
            if let Some(s) = secret {
                req = req.header("x-tally-secret", s);
            }
            let r = req.send().await.unwrap();
            assert_eq!(
                r.status(),
                401,
                "node {node}: /raft/vote with secret {secret:?}"
            );
        }
        let r = cluster
            .http
            .post(format!("{}/raft/append", cluster.url(node)))
            .body(Vec::new())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "node {node}: /raft/append without secret");
        // With the secret, a snapshot request whose membership lists a node with an address
        // declared 2^62 bytes long (bincode varint: 0xFD, then 8 little-endian bytes) is
        // refused with 400; decoding it used to abort the node. The default snapshot meta
        // encodes as five zero bytes: no last log id, no membership log id, no configs, no
        // nodes, an empty id; the fourth becomes one node (id 1) with that address.
        let vote = tally_raft::types::Vote::new(1, 1);
        let meta = tally_raft::rpc::encode(&tally_raft::types::SnapshotMeta::default()).unwrap();
        assert_eq!(
            meta,
            [0, 0, 0, 0, 0],
            "the default snapshot meta's encoding"
        );
        let mut absurd = tally_raft::rpc::encode(&vote).unwrap();
        absurd.extend_from_slice(&[0, 0, 0, 1, 1, 0xFD]);
        absurd.extend_from_slice(&(1u64 << 62).to_le_bytes());
        absurd.extend_from_slice(b"127.0.0.1:1");
        let r = cluster
            .http
            .post(format!("{}/raft/snapshot", cluster.url(node)))
            .header("x-tally-secret", SECRET)
            .body(absurd)
            .send()
            .await
            .unwrap_or_else(|e| panic!("node {node}: a member address declaring 2^62 bytes: {e}"));
        assert_eq!(
            r.status(),
            400,
            "node {node}: a member address declaring 2^62 bytes"
        );
    }

    // Nothing changed anywhere, and every node is still serving.
    let after = snapshot_of_state(&cluster).await;
    assert_eq!(before, after, "bad input changed the state");
    for node in ALL_NODES {
        let r = cluster.get(node, "/readyz").await.unwrap();
        assert_eq!(
            r.status, 200,
            "node {node} not ready after bad input: {r:?}"
        );
    }
    // The good records of refused batches were not remembered: they count as new now.
    let batch: Vec<Value> = (0..6).map(|i| ev(&format!("mix-1-{i}"))).collect();
    let r = cluster
        .post_json(leader, &Value::Array(batch))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (r.body["accepted"].as_u64(), r.body["duplicates"].as_u64()),
        (Some(6), Some(0)),
        "ids of a refused batch were remembered: {r:?}"
    );
}
