//! Harness additions for membership tests: nodes that join a running cluster (new ids, new
//! ports, empty data directories), wiping a stopped node's data, and membership helpers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_ports, Cluster, NodeProc, Resp, POLL};

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
        assert!(!self.nodes.contains_key(&id), "node {id} already exists");
        // The template: a node of the same role, for the same optional sections.
        let template = self
            .nodes
            .values()
            .find(|n| n.witness == witness)
            .expect("a node of the same role to copy the config from");
        let text = std::fs::read_to_string(&template.config).unwrap();
        let addr = format!("127.0.0.1:{}", free_ports(1)[0]);
        let data_dir = self.dir().join(format!("n{id}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut witnesses: BTreeSet<u64> = self
            .nodes
            .values()
            .filter(|n| n.witness)
            .map(|n| n.id)
            .collect();
        if witness {
            witnesses.insert(id);
        }
        let witnesses: Vec<String> = witnesses.iter().map(u64::to_string).collect();
        let mut out = String::new();
        for line in text.lines() {
            let key = line.split('=').next().unwrap_or("").trim();
            let line = match key {
                "id" => format!("id = {id}"),
                "role" => format!("role = \"{}\"", if witness { "witness" } else { "data" }),
                "listen" => format!("listen = \"{addr}\""),
                "data_dir" => format!("data_dir = \"{}\"", data_dir.display()),
                "witnesses" => format!("witnesses = [{}]", witnesses.join(", ")),
                _ => line.to_string(),
            };
            out.push_str(&line);
            out.push('\n');
            if line.trim() == "[cluster.members]" {
                out.push_str(&format!("{id} = \"{addr}\"\n"));
            }
        }
        let config = self.dir().join(format!("node{id}.toml"));
        std::fs::write(&config, out).unwrap();
        self.nodes.insert(
            id,
            NodeProc {
                id,
                witness,
                addr: addr.clone(),
                data_dir,
                config,
                log: self.dir().join(format!("node{id}.log")),
                child: None,
            },
        );
        self.api.urls.insert(id, format!("http://{addr}"));
        self.spawn(id);
        self.wait_healthy(id).await;
        eprintln!("[harness] started joining node {id} at {addr}");
        addr
    }

    /// Starts stopped node `id` and expects it to refuse to start; returns its log.
    pub async fn start_expecting_refusal(&mut self, id: u64) -> String {
        self.spawn(id);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let child = self.nodes.get_mut(&id).unwrap().child.as_mut().unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes.get_mut(&id).unwrap().child = None;
                assert!(!status.success(), "node {id} exited successfully");
                return self.log_text(id);
            }
            assert!(
                Instant::now() < deadline,
                "node {id} started although it should have refused"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Empties the data directory of a stopped node (a lost disk).
    pub fn wipe(&mut self, id: u64) {
        assert!(
            !self.is_running(id),
            "node {id} must be stopped before wiping"
        );
        let dir = self.data_dir(id).to_path_buf();
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        eprintln!("[harness] wiped the data directory of node {id}");
    }

    /// Gives stopped node `id` a new port: its config's `listen` and its own entry in
    /// `[cluster.members]` change (the other members' configs are left alone: they learn
    /// addresses from the membership). Returns the new address.
    pub fn move_node(&mut self, id: u64) -> String {
        assert!(
            !self.is_running(id),
            "node {id} must be stopped before moving"
        );
        let addr = format!("127.0.0.1:{}", free_ports(1)[0]);
        let node = self.nodes.get_mut(&id).unwrap();
        let old = std::mem::replace(&mut node.addr, addr.clone());
        let text = std::fs::read_to_string(&node.config).unwrap();
        let text = text
            .replace(
                &format!("listen = \"{old}\""),
                &format!("listen = \"{addr}\""),
            )
            .replace(&format!("{id} = \"{old}\""), &format!("{id} = \"{addr}\""));
        std::fs::write(&node.config, text).unwrap();
        self.api.urls.insert(id, format!("http://{addr}"));
        eprintln!("[harness] node {id} moves from {old} to {addr}");
        addr
    }

    /// Every node this harness started, running or not, the joining ones included.
    pub fn known_nodes(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The members as node `id` sees them, sorted by id.
    pub async fn members(&self, id: u64) -> Vec<Member> {
        let s = self.get_ok(id, "/v1/cluster").await;
        let mut out: Vec<Member> = s["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| Member {
                id: m["id"].as_u64().unwrap(),
                addr: m["addr"].as_str().unwrap().to_string(),
                role: m["role"].as_str().unwrap().to_string(),
                voter: m["voter"].as_bool().unwrap(),
            })
            .collect();
        out.sort();
        out
    }

    /// Voter ids as node `id` sees them.
    pub async fn voters(&self, id: u64) -> BTreeSet<u64> {
        self.members(id)
            .await
            .into_iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect()
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
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(args)
            .env_remove("TALLY_NODE")
            .env("TALLY_CLUSTER_SECRET", super::SECRET)
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output()
            .await
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
