//! Membership additions to the tests' [`Cluster`]: nodes that join a running cluster (new
//! ids, new ports, empty data directories, all through the testkit harness), wiping or
//! moving a stopped node, and membership helpers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally_testkit::cluster::NodeSpec;

use super::{Cluster, Resp, POLL};

const DIGEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A member as `GET /v1/cluster` lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    pub role: String,
    pub voter: bool,
}

impl Cluster {
    /// Writes the config of a new node `id` that joins the running cluster — a fresh port, an
    /// empty data directory, `[cluster.members]` listing the initial members plus itself — and
    /// starts it. It runs no cluster init: it waits to be added. Returns its address.
    pub async fn start_joining_node(&mut self, id: u64, witness: bool) -> String {
        let spec = if witness {
            NodeSpec::witness(id)
        } else {
            NodeSpec::data(id)
        };
        let addr = self
            .harness
            .start_node(spec)
            .await
            .unwrap_or_else(|e| panic!("starting joining node {id}: {e:#}"));
        self.api.urls.insert(id, format!("http://{addr}"));
        eprintln!("[harness] started joining node {id} at {addr}");
        addr
    }

    /// Starts stopped node `id` and expects it to refuse to start; returns its log.
    pub async fn start_expecting_refusal(&mut self, id: u64) -> String {
        self.harness.spawn(id).unwrap();
        let status = self
            .harness
            .wait_exit(id, Duration::from_secs(30))
            .await
            .unwrap_or_else(|_| panic!("node {id} started although it should have refused"));
        assert!(!status.success(), "node {id} exited successfully");
        self.log_text(id)
    }

    /// Empties the data directory of a stopped node (a lost disk).
    pub fn wipe(&mut self, id: u64) {
        self.harness.wipe(id).unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("[harness] wiped the data directory of node {id}");
    }

    /// Gives stopped node `id` a new port: its config's `listen` and its own entry in
    /// `[cluster.members]` change (the other members' configs are left alone: they learn
    /// addresses from the membership). Returns the new address.
    pub fn move_node(&mut self, id: u64) -> String {
        let old = self.addr(id).to_string();
        let addr = self
            .harness
            .move_node(id)
            .unwrap_or_else(|e| panic!("{e:#}"));
        self.api.urls.insert(id, format!("http://{addr}"));
        eprintln!("[harness] node {id} moves from {old} to {addr}");
        addr
    }

    /// The members as node `id` sees them, sorted by id.
    pub async fn members(&self, id: u64) -> Vec<Member> {
        let s = self
            .status(id)
            .await
            .unwrap_or_else(|e| panic!("GET /v1/cluster on node {id}: {e}"));
        let mut out: Vec<Member> = s
            .members
            .iter()
            .map(|m| Member {
                id: m.id,
                addr: m.addr.clone(),
                role: m.role.to_string(),
                voter: m.voter,
            })
            .collect();
        out.sort();
        out
    }

    /// `POST /v1/cluster/members` on node `via`.
    pub async fn add_member(&self, via: u64, body: &Value) -> Resp {
        self.post_raw(
            via,
            "/v1/cluster/members",
            Some("application/json"),
            serde_json::to_vec(body).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("POST /v1/cluster/members on node {via}: {e}"))
    }

    /// `DELETE /v1/cluster/members/{member}` on node `via`.
    pub async fn remove_member(&self, via: u64, member: &str) -> Resp {
        let url = format!("{}/v1/cluster/members/{member}", self.api.url(via));
        self.api
            .send(
                self.http
                    .delete(url)
                    .header("x-tally-secret", super::SECRET),
            )
            .await
            .unwrap_or_else(|e| panic!("DELETE member {member} on node {via}: {e}"))
    }

    /// `POST /v1/cluster/leader` on node `via` (`body` `None`: no body).
    pub async fn move_leader(&self, via: u64, body: Option<&Value>) -> Resp {
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        self.post_raw(via, "/v1/cluster/leader", Some("application/json"), bytes)
            .await
            .unwrap_or_else(|e| panic!("POST /v1/cluster/leader on node {via}: {e}"))
    }

    /// Waits until nodes `a` and `b` report the same digest at the same applied index, at
    /// least `min_index`. Returns that `(index, digest)`.
    pub async fn wait_same_digest(&self, a: u64, b: u64, min_index: u64) -> (u64, String) {
        let deadline = Instant::now() + DIGEST_TIMEOUT;
        let mut last = BTreeMap::new();
        loop {
            last.clear();
            for id in [a, b] {
                if let Ok(r) = self.get(id, "/v1/state/digest").await {
                    if r.status == 200 && r.body["node_id"].as_u64() == Some(id) {
                        last.insert(
                            id,
                            (
                                r.body["applied_index"].as_u64().unwrap_or(0),
                                r.body["digest"].as_str().unwrap_or("").to_string(),
                            ),
                        );
                    }
                }
            }
            if let (Some(x), Some(y)) = (last.get(&a), last.get(&b)) {
                if x.0 == y.0 && x.0 >= min_index {
                    assert_eq!(
                        x.1, y.1,
                        "nodes {a} and {b} differ at the same applied index {}",
                        x.0
                    );
                    return x.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "nodes {a} and {b} did not reach the same applied index ≥ {min_index} within \
                 {DIGEST_TIMEOUT:?}: {last:?}\n----- node {a} -----\n{}\n----- node {b} -----\n{}",
                self.log_tail(a, 30),
                self.log_tail(b, 30)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `tally <args>` (a CLI client command) and returns (success, stdout, stderr).
    pub async fn run_cli(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"));
        // Only what the test says: no TALLY_* of the environment running the tests.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TALLY_") {
                cmd.env_remove(key);
            }
        }
        let run = cmd
            .args(args)
            .env("TALLY_CLUSTER_SECRET", super::SECRET)
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .unwrap_or_else(|_| panic!("tally {args:?} did not finish within 120 s"))
            .expect("run tally");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The body of `POST /v1/cluster/members`.
pub fn member_body(id: u64, addr: &str, role: &str, replaces: Option<u64>) -> Value {
    let mut body = json!({"id": id, "addr": addr, "role": role});
    if let Some(old) = replaces {
        body["replaces"] = json!(old);
    }
    body
}
