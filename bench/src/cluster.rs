//! The benchmark's cluster, on the testkit harness ([`tally_testkit::ProcessCluster`]):
//! three `tally serve` child processes (data nodes 1 and 2 sharing one SQLite record store,
//! and witness 3) in a temporary directory, on loopback.
//!
//! The harness makes the directory, spawns, signals (by pid), restarts and reaps the nodes
//! and writes their configs; they run in their own process group, die with the bench if it is killed itself,
//! and are SIGKILLed and reaped when the [`BenchCluster`] is dropped — on success, on error
//! and on interruption alike. What is left here is what the bench asks of the cluster.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tally_protocol::{NodeStatus, Role};
use tally_testkit::{ClusterSpec, NodeSpec, ProcessCluster, Signal};

pub const WITNESS: u64 = 3;
pub const NODES: [u64; 3] = [1, 2, 3];

/// Timeout of the bench's quick control requests (status, readiness, digests).
const QUICK: Duration = Duration::from_secs(2);

/// `[raft]` timings written into every node's config; `None` keeps the product default.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub heartbeat_ms: Option<u64>,
    pub election_min_ms: Option<u64>,
    pub election_max_ms: Option<u64>,
}

/// Which signal stops the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    Kill,
    Term,
}

impl Stop {
    pub fn name(self) -> &'static str {
        self.signal().name()
    }

    fn signal(self) -> Signal {
        match self {
            Stop::Kill => Signal::Kill,
            Stop::Term => Signal::Term,
        }
    }
}

pub struct BenchCluster {
    cluster: ProcessCluster,
}

/// A node's `/v1/cluster`, reduced to what the bench looks at.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub leader: Option<u64>,
    pub is_leader: bool,
    pub term: u64,
}

impl From<&NodeStatus> for NodeView {
    fn from(s: &NodeStatus) -> NodeView {
        NodeView {
            leader: s.leader_id,
            is_leader: s.is_leader(),
            term: s.term,
        }
    }
}

/// What the harness is asked to start: data nodes 1 and 2 and witness 3 in a temporary
/// directory, sharing one SQLite record store there, with `[raft]` timings only where given
/// and the nodes' log filter.
fn spec(
    tally: PathBuf,
    base_port: Option<u16>,
    timings: &Timings,
    node_log_filter: &str,
) -> Result<ClusterSpec> {
    let mut spec = ClusterSpec::new(tally);
    spec.temp_prefix = "tally-bench-failover-".into();
    spec.sqlite_in_dir = Some("records.db".into());
    spec.log_filter = Some(node_log_filter.to_string());
    spec.connect_timeout = Duration::from_millis(500);
    spec.nodes = vec![
        NodeSpec::data(1),
        NodeSpec::data(2),
        NodeSpec::witness(WITNESS),
    ];
    if let Some(p) = base_port {
        p.checked_add(2).context("--base-port too large")?;
        for (i, node) in spec.nodes.iter_mut().enumerate() {
            node.listen = Some(format!("127.0.0.1:{}", p + i as u16));
        }
    }
    // An error's message, not a backtrace, ends the log (panics keep RUST_BACKTRACE).
    spec = spec.env("RUST_LIB_BACKTRACE", "0");
    for (key, value) in [
        ("heartbeat_ms", timings.heartbeat_ms),
        ("election_min_ms", timings.election_min_ms),
        ("election_max_ms", timings.election_max_ms),
    ] {
        if let Some(v) = value {
            spec = spec.set("raft", key, v);
        }
    }
    Ok(spec)
}

impl BenchCluster {
    /// Writes the configs and starts the three processes (not yet formed into a cluster).
    pub async fn start(
        tally: PathBuf,
        base_port: Option<u16>,
        timings: &Timings,
        node_log_filter: &str,
    ) -> Result<BenchCluster> {
        let spec = spec(tally, base_port, timings, node_log_filter)?;
        Ok(BenchCluster {
            cluster: ProcessCluster::start(spec).await?,
        })
    }

    /// Configs, data, the record store and one log per node.
    pub fn dir(&self) -> &Path {
        self.cluster.dir()
    }

    /// Keeps the directory after the bench ends.
    pub fn keep_dir(&mut self) {
        self.cluster.keep_dir();
    }

    pub fn urls(&self) -> Vec<String> {
        NODES.iter().map(|id| self.cluster.url(*id)).collect()
    }

    /// Sends `stop` to node `id` and returns at once; see [`BenchCluster::try_reap`] for
    /// its exit.
    pub fn signal(&mut self, id: u64, stop: Stop) -> Result<()> {
        self.cluster.signal(id, stop.signal())
    }

    /// Whether node `id` has exited (reaping it if so).
    pub fn try_reap(&mut self, id: u64) -> Result<Option<std::process::ExitStatus>> {
        self.cluster.try_reap(id)
    }

    /// SIGKILLs node `id` if it still runs, and reaps it.
    pub fn kill(&mut self, id: u64) {
        let _ = self.cluster.kill(id);
    }

    /// Starts a stopped node again with the same config and data directory and waits until
    /// it is healthy.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        self.cluster.restart(id).await
    }

    /// `POST /v1/cluster/init` with the secret, retried briefly.
    pub async fn init(&self) -> Result<()> {
        self.cluster.init().await
    }

    /// GET on node `id` with a short timeout: (status, JSON body or Null).
    pub async fn get(&self, id: u64, path: &str) -> Result<(u16, Value)> {
        let resp = self
            .cluster
            .http()
            .get(format!("{}{path}", self.cluster.url(id)))
            .timeout(QUICK)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// POST of a JSON body on node `id`: (status, JSON body or Null).
    pub async fn post(&self, id: u64, path: &str, body: &Value) -> Result<(u16, Value)> {
        let resp = self
            .cluster
            .http()
            .post(format!("{}{path}", self.cluster.url(id)))
            .json(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// Node `id`'s view of the leader, from its typed `/v1/cluster`.
    pub async fn view(&self, id: u64) -> Result<NodeView> {
        let status = self
            .cluster
            .status_within(id, QUICK)
            .await
            .with_context(|| format!("GET /v1/cluster on node {id}"))?;
        Ok(NodeView::from(&status))
    }

    /// The leader every running node names, when that is a data node that knows it leads,
    /// and the highest term the nodes report.
    pub async fn agreed_data_leader(&self) -> Result<(u64, u64)> {
        let mut views = Vec::new();
        for id in self.cluster.live() {
            views.push((id, self.view(id).await?));
        }
        agreed_data_leader(&views, |id| self.cluster.role(id))
    }

    /// Whether every running node answers `/readyz` with 200.
    pub async fn all_ready(&self) -> Result<()> {
        for id in self.cluster.live() {
            let (status, body) = self.get(id, "/readyz").await?;
            if status != 200 {
                bail!("node {id} not ready: {body}");
            }
        }
        Ok(())
    }

    /// Waits (bounded) until all nodes are ready and agree on a data-node leader; returns
    /// the leader and the term.
    pub async fn wait_ready_with_leader(&self, within: Duration) -> Result<(u64, u64)> {
        let deadline = Instant::now() + within;
        loop {
            let attempt = async {
                self.all_ready().await?;
                self.agreed_data_leader().await
            };
            let last = match attempt.await {
                Ok(l) => return Ok(l),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                bail!("cluster not ready within {within:?}: {last:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// From the views of the running nodes (in id order): the leader they all name, if that
/// node is among them, reports itself leader, is the only one that does and is a data node;
/// with the highest term any of them reports.
fn agreed_data_leader(views: &[(u64, NodeView)], role: impl Fn(u64) -> Role) -> Result<(u64, u64)> {
    let named: Vec<Option<u64>> = views.iter().map(|(_, v)| v.leader).collect();
    let leading: Vec<u64> = views
        .iter()
        .filter(|(_, v)| v.is_leader)
        .map(|(id, _)| *id)
        .collect();
    let term = views.iter().map(|(_, v)| v.term).max().unwrap_or(0);
    match (named.first(), leading.as_slice()) {
        (Some(Some(l)), [only]) if named.iter().all(|n| *n == Some(*l)) && l == only => {
            if role(*l) == Role::Witness {
                bail!("the witness leads");
            }
            Ok((*l, term))
        }
        _ => bail!("no agreed leader yet (named {named:?}, leading {leading:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(leader: Option<u64>, is_leader: bool, term: u64) -> NodeView {
        NodeView {
            leader,
            is_leader,
            term,
        }
    }

    fn role(id: u64) -> Role {
        if id == WITNESS {
            Role::Witness
        } else {
            Role::Data
        }
    }

    #[test]
    fn spec_has_one_shared_store_and_only_the_given_timings() {
        let t = Timings {
            heartbeat_ms: Some(50),
            ..Timings::default()
        };
        let s = spec("tally".into(), Some(7100), &t, "info").unwrap();
        assert_eq!(s.sqlite_in_dir.as_deref(), Some("records.db"));
        assert!(s.record_store.is_none());
        let listens: Vec<_> = s.nodes.iter().map(|n| n.listen.clone().unwrap()).collect();
        assert_eq!(
            listens,
            ["127.0.0.1:7100", "127.0.0.1:7101", "127.0.0.1:7102"]
        );
        assert_eq!(s.nodes[2].role, Role::Witness);
        let raft = &s.sections["raft"];
        assert_eq!(raft.len(), 1);
        assert_eq!(
            raft["heartbeat_ms"],
            tally_testkit::cluster::Value::from(50u64)
        );
        assert_eq!(s.log_filter.as_deref(), Some("info"));
        assert!(spec("tally".into(), Some(u16::MAX), &t, "info").is_err());
        let free = spec("tally".into(), None, &Timings::default(), "i").unwrap();
        assert!(free.nodes.iter().all(|n| n.listen.is_none()));
        assert!(!free.sections.contains_key("raft"));
    }

    #[test]
    fn a_leader_is_agreed_only_by_everyone_and_never_the_witness() {
        let agreed = [
            (1, view(Some(2), false, 4)),
            (2, view(Some(2), true, 5)),
            (3, view(Some(2), false, 5)),
        ];
        assert_eq!(agreed_data_leader(&agreed, role).unwrap(), (2, 5));
        let split = [(1, view(Some(1), true, 5)), (2, view(Some(2), true, 5))];
        assert!(agreed_data_leader(&split, role).is_err());
        let unknown = [(1, view(None, false, 5)), (2, view(None, false, 5))];
        assert!(agreed_data_leader(&unknown, role).is_err());
        let witness = [(1, view(Some(3), false, 6)), (3, view(Some(3), true, 6))];
        assert!(agreed_data_leader(&witness, role).is_err());
        // The named leader is not running (its own view is missing).
        let gone = [(2, view(Some(1), false, 6)), (3, view(Some(1), false, 6))];
        assert!(agreed_data_leader(&gone, role).is_err());
    }
}
