//! Access control end to end: a cluster with `[auth]` tokens answers every endpoint × every
//! kind of caller (no token, a wrong token, each role, tenant-scoped tokens, the cluster
//! secret) with the documented status, on the leader, the follower and the witness; a
//! tenant-scoped token cannot post another tenant's events (403 naming the record, nothing
//! changes) nor read its rows; and a node refuses to start off loopback without tokens.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::{now_ms, simple_event, Cluster, ClusterOpts, ALL_NODES, SECRET, WITNESS};

/// Who calls, and how: the credential headers of a request.
#[derive(Clone, Copy, Debug)]
enum Who {
    Nobody,
    WrongToken,
    WrongSecret,
    Ingest,
    Read,
    Admin,
    IngestAcme,
    ReadAcme,
    Secret,
}

const EVERYONE: [Who; 9] = [
    Who::Nobody,
    Who::WrongToken,
    Who::WrongSecret,
    Who::Ingest,
    Who::Read,
    Who::Admin,
    Who::IngestAcme,
    Who::ReadAcme,
    Who::Secret,
];

impl Who {
    fn token(self) -> Option<&'static str> {
        match self {
            Who::WrongToken => Some("tly_not-a-token"),
            Who::Ingest => Some("tok-ingest"),
            Who::Read => Some("tok-read"),
            Who::Admin => Some("tok-admin"),
            Who::IngestAcme => Some("tok-ingest-acme"),
            Who::ReadAcme => Some("tok-read-acme"),
            _ => None,
        }
    }

    fn apply(self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Who::Secret => req.header("x-tally-secret", SECRET),
            Who::WrongSecret => req.header("x-tally-secret", "guess"),
            other => match other.token() {
                Some(t) => req.bearer_auth(t),
                None => req,
            },
        }
    }
}

fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `TALLY_AUTH_TOKENS`: the flag form of the `[auth]` tokens.
fn tokens_env() -> String {
    [
        ("gw", "tok-ingest", "ingest", None),
        ("ro", "tok-read", "read", None),
        ("ops", "tok-admin", "admin", None),
        ("gw-acme", "tok-ingest-acme", "ingest", Some("acme.com")),
        ("ro-acme", "tok-read-acme", "read", Some("acme.com")),
    ]
    .iter()
    .map(|(name, token, roles, tenant)| {
        let mut entry = format!("{name}:{}:{roles}", sha256_hex(token));
        if let Some(t) = tenant {
            entry.push_str(&format!(":{t}"));
        }
        entry
    })
    .collect::<Vec<_>>()
    .join(",")
}

fn event(id: &str, tenant: &str) -> Value {
    let mut e = simple_event(id, now_ms(), "Shop", "/items");
    e["tenant"] = json!(tenant);
    e
}

struct Call {
    method: reqwest::Method,
    path: &'static str,
    body: Option<Value>,
}

impl Call {
    fn get(path: &'static str) -> Call {
        Call {
            method: reqwest::Method::GET,
            path,
            body: None,
        }
    }

    fn post(path: &'static str, body: Value) -> Call {
        Call {
            method: reqwest::Method::POST,
            path,
            body: Some(body),
        }
    }
}

/// The documented status of `call` for `who` (on any node: the witness forwards what it
/// does not answer itself, and every node checks credentials before forwarding).
fn expected(path: &str, who: Who) -> u16 {
    use Who::*;
    if matches!(who, Nobody | WrongToken | WrongSecret) && !matches!(path, "/healthz" | "/readyz") {
        return 401;
    }
    match path {
        "/healthz" | "/readyz" => 200,
        "/v1/events" => match who {
            Ingest | IngestAcme => 200,
            _ => 403,
        },
        "/v1/aggregates" => match who {
            Read | Admin | ReadAcme => 200,
            _ => 403,
        },
        "/v1/sql" | "/v1/state/digest" => match who {
            Read | Admin => 200,
            _ => 403,
        },
        "/v1/cluster" | "/metrics" => match who {
            Read | Admin | ReadAcme | Secret => 200,
            _ => 403,
        },
        // Cluster operations know only the cluster secret.
        "/v1/cluster/init" => match who {
            Secret => 200,
            _ => 401,
        },
        // Raft RPC, with a body that is not a vote: the secret gets as far as decoding.
        "/raft/vote" => match who {
            Secret => 400,
            _ => 401,
        },
        other => panic!("no expectation for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_every_caller_as_documented() {
    let store = tempfile::Builder::new()
        .prefix("tally-access-")
        .tempdir()
        .unwrap();
    let opts = ClusterOpts {
        record_store: Some(format!(
            "sqlite://{}",
            store.path().join("records.db").display()
        )),
        env: vec![("TALLY_AUTH_TOKENS".into(), tokens_env())],
        token: Some("tok-admin".into()),
        ..ClusterOpts::default()
    };
    let (cluster, leader) = Cluster::start_formed(opts).await;
    cluster.wait_ready().await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();

    let calls = |n: &str| {
        vec![
            Call::get("/healthz"),
            Call::get("/readyz"),
            Call::post("/v1/events", json!([event(&format!("m-{n}"), "acme.com")])),
            Call::get("/v1/aggregates"),
            Call::get("/v1/state/digest"),
            Call::post("/v1/sql", json!({"sql": "SELECT COUNT(*) FROM events"})),
            Call::get("/v1/cluster"),
            Call::get("/metrics"),
            Call::post("/v1/cluster/init", json!({})),
            Call::post("/raft/vote", json!("not bincode")),
        ]
    };
    let mut table = Vec::new();
    let mut wrong = Vec::new();
    for node in ALL_NODES {
        for who in EVERYONE {
            for call in calls(&format!("{node}-{who:?}")) {
                let url = format!("{}{}", cluster.url(node), call.path);
                let mut req = who.apply(http.request(call.method.clone(), &url));
                if let Some(body) = &call.body {
                    req = req.json(body);
                }
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let www = resp.headers().get("www-authenticate").is_some();
                let body = resp.text().await.unwrap();
                let want = expected(call.path, who);
                // Readiness is open to all; it may say "not ready" for a moment while a
                // write of this very matrix is being applied.
                let status =
                    if call.path == "/readyz" && status == 503 && body.contains("not_ready") {
                        200
                    } else {
                        status
                    };
                table.push(format!(
                    "node {node} {who:?} {} {}: {status}",
                    call.method, call.path
                ));
                if status != want {
                    wrong.push(format!(
                        "node {node} {who:?} {} {}: {status}, expected {want}: {body}",
                        call.method, call.path
                    ));
                }
                // Refusals say what is wrong, in the JSON error shape (Raft RPC answers
                // its peers in plain text).
                if (status == 401 || status == 403) && !call.path.starts_with("/raft") {
                    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let message = v["error"]["message"].as_str().unwrap_or("");
                    if message.is_empty() {
                        wrong.push(format!(
                            "node {node} {who:?} {}: no message: {body}",
                            call.path
                        ));
                    }
                    if status == 401 && !www && call.path != "/v1/cluster/init" {
                        wrong.push(format!(
                            "node {node} {who:?} {}: 401 without WWW-Authenticate",
                            call.path
                        ));
                    }
                }
            }
        }
    }
    eprintln!("{}", table.join("\n"));
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // A scoped ingest token cannot post another tenant's event: 403 naming the record,
    // and nothing changes (on every node, including through forwarding).
    let before = cluster.assert_same_state().await;
    for node in ALL_NODES {
        let batch = json!([event("x-1", "acme.com"), event("x-2", "globex.com")]);
        let resp = Who::IngestAcme
            .apply(http.post(format!("{}/v1/events", cluster.url(node))))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403, "node {node}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "forbidden", "{v}");
        assert_eq!(v["error"]["details"][0]["record"], 1, "{v}");
        assert_eq!(v["error"]["details"][0]["field"], "tenant", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("record 1"),
            "{v}"
        );
    }
    assert_eq!(
        cluster.assert_same_state().await,
        before,
        "a refused batch changed the state"
    );

    // Some of another tenant's traffic, then scoped reads see only their tenant.
    let resp = Who::Ingest
        .apply(http.post(format!("{}/v1/events", cluster.url(leader))))
        .json(&json!([
            event("g-1", "globex.com"),
            event("g-2", "globex.com")
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let tenants_seen = |who: Who, query: &'static str| {
        let req = who.apply(http.get(format!(
            "{}/v1/aggregates?granularity=minute&group_by=tenant{query}",
            cluster.url(WITNESS)
        )));
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap();
            let tenants: Vec<String> = v["rows"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|r| r["tenant"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            (status, tenants)
        }
    };
    cluster.assert_same_state().await;
    let (status, all) = tenants_seen(Who::Read, "").await;
    assert_eq!(status, 200);
    assert!(
        all.contains(&"acme.com".into()) && all.contains(&"globex.com".into()),
        "{all:?}"
    );
    let (status, scoped) = tenants_seen(Who::ReadAcme, "").await;
    assert_eq!(status, 200);
    assert!(
        !scoped.is_empty() && scoped.iter().all(|t| t == "acme.com"),
        "{scoped:?}"
    );
    let (status, _) = tenants_seen(Who::ReadAcme, "&tenant=globex.com").await;
    assert_eq!(status, 403);
    let (status, only) = tenants_seen(Who::Read, "&tenant=globex.com").await;
    assert_eq!((status, only), (200, vec!["globex.com".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_off_loopback_without_tokens_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::common::free_ports(1)[0];
    let run = |extra: &[(&str, String)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tally"));
        cmd.args(["serve", "--id", "1", "--secret", "x"])
            .arg("--data-dir")
            .arg(dir.path().join("n1"))
            .arg("--listen")
            .arg(format!("0.0.0.0:{port}"))
            .env_remove("TALLY_AUTH_TOKENS")
            .env_remove("TALLY_AUTH_ALLOW_ANONYMOUS");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        // Refused while resolving the configuration: the node never binds or serves.
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run tally serve");
        (out.status, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (status, stderr) = run(&[]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("tally token new"),
        "{stderr}"
    );
    assert!(!dir.path().join("n1").exists(), "it touched its data_dir");
}
