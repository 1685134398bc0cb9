//! The cluster under test: three real `tally serve` processes (data nodes 1 and 2, witness 3)
//! on loopback, reached by their peers through the harness's [`Proxies`], writing to one
//! record store.
//!
//! The processes are run by the process-cluster harness of `tally-testkit`
//! ([`ProcessCluster`]: configs, spawning, signals by pid, `PR_SET_PDEATHSIG`, SIGCONT and
//! SIGKILL on drop); this module gives each node its proxy address (`advertise`) and its
//! own source address (`source_ip`) so the proxies can cut links, and reads node status
//! typed ([`NodeStatus`]). With the clock nemesis, every node runs under libfaketime and
//! follows its own offset file ([`FakeClock`]), so one node's wall clock can jump while the
//! machine's stays put.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tally_protocol::NodeStatus;
use tally_testkit::cluster::{free_ports, ClusterSpec, NodeSpec, ProcessCluster};
use tally_testkit::faketime::FakeClock;

use crate::elections::{NodeTerm, View};
use crate::proxy::{self, Proxies};

pub const DATA_NODES: [u64; 2] = [1, 2];
pub const WITNESS: u64 = 3;
pub const NODES: [u64; 3] = [1, 2, 3];

/// How the nodes are run.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub tally_bin: PathBuf,
    pub dir: PathBuf,
    pub record_store: String,
    /// `TALLY_PLANT` for the nodes (empty: none).
    pub plants: Vec<String>,
    /// `RUST_LOG` for the nodes.
    pub log_filter: String,
    /// Run every node under libfaketime, so its wall clock can be moved.
    pub fake_clocks: bool,
}

pub struct Cluster {
    nodes: ProcessCluster,
    pub proxies: Proxies,
    /// Each node's wall-clock offset file (with `fake_clocks` only).
    clocks: BTreeMap<u64, FakeClock>,
}

impl Cluster {
    /// Starts the proxies and the three nodes, and forms the cluster.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster> {
        let listens: BTreeMap<u64, String> = NODES
            .into_iter()
            .zip(free_ports(NODES.len())?)
            .map(|(id, port)| (id, format!("127.0.0.1:{port}")))
            .collect();
        let proxies = Proxies::start(&listens).await?;
        let mut spec = ClusterSpec::new(&opts.tally_bin);
        spec.dir = Some(opts.dir.clone());
        spec.file_prefix = "n".into();
        spec.secret = format!("jepsen-{}", rand::random::<u64>());
        spec.http_timeout = Duration::from_secs(5);
        spec.connect_timeout = Duration::from_millis(500);
        spec.env.push(("RUST_LOG".into(), opts.log_filter.clone()));
        if !opts.plants.is_empty() {
            spec.env.push(("TALLY_PLANT".into(), opts.plants.join(",")));
        }
        let mut clocks = BTreeMap::new();
        if opts.fake_clocks {
            for id in NODES {
                clocks.insert(
                    id,
                    FakeClock::create(opts.dir.join(format!("n{id}.faketime")))?,
                );
            }
        }
        spec.nodes = NODES
            .into_iter()
            .map(|id| {
                let mut n = if id == WITNESS {
                    NodeSpec::witness(id)
                } else {
                    NodeSpec::data(id)
                };
                n.listen = Some(listens[&id].clone());
                n.advertise = Some(proxies.addrs()[&id].clone());
                n.source_ip = Some(proxy::source_ip(id).to_string());
                // Every node, the witness too, is given the record store.
                n.record_store = Some(opts.record_store.clone());
                n
            })
            .collect();
        for (id, clock) in &clocks {
            spec.node_mut(*id).env.extend(clock.env()?);
        }
        let nodes = ProcessCluster::start(spec).await?;
        let cluster = Cluster {
            nodes,
            proxies,
            clocks,
        };
        cluster.nodes.init().await?;
        cluster.wait_for_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// The address clients use for node `id` (its own listener, never cut).
    pub fn client_addr(&self, id: u64) -> &str {
        self.nodes.addr(id)
    }

    pub fn secret(&self) -> &str {
        self.nodes.secret()
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.is_running(id)
    }

    pub fn is_paused(&self, id: u64) -> bool {
        self.nodes.is_paused(id)
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        self.nodes.kill(id)?;
        Ok(())
    }

    /// Starts node `id` again on its data directory (after [`Cluster::kill`]).
    pub fn restart(&mut self, id: u64) -> Result<()> {
        if self.is_running(id) {
            return Ok(());
        }
        self.nodes.spawn(id)
    }

    /// Moves node `id`'s wall clock `days` ahead of the real one (it shows within about
    /// two seconds: libfaketime rereads its file every second).
    pub fn jump_clock(&self, id: u64, days: i64) -> Result<()> {
        match self.clocks.get(&id) {
            Some(clock) => clock.jump_days(days),
            None => bail!("node {id} does not run under libfaketime"),
        }
    }

    /// Every node's wall clock back to the real one.
    pub fn reset_clocks(&self) -> Result<()> {
        for clock in self.clocks.values() {
            clock.reset()?;
        }
        Ok(())
    }

    pub fn pause(&mut self, id: u64) -> Result<()> {
        self.nodes.pause(id)
    }

    pub fn resume(&mut self, id: u64) -> Result<()> {
        if self.is_running(id) {
            self.nodes.resume(id)?;
        }
        Ok(())
    }

    /// A node whose process exited on its own (not killed by the harness) is a finding:
    /// returns its id and exit status.
    pub fn exited(&mut self) -> Option<(u64, String)> {
        for id in self.nodes.live() {
            if let Ok(Some(status)) = self.nodes.try_reap(id) {
                return Some((id, status.to_string()));
            }
        }
        None
    }

    /// Every node that exited on its own since the last call, as `node-exited` findings
    /// for the `cluster` checker (`(kind, description)`), with the ids.
    pub fn unexpected_exits(&mut self) -> Vec<(u64, (String, String))> {
        let mut out = Vec::new();
        while let Some((id, status)) = self.exited() {
            let what = format!(
                "node {id} exited on its own ({status}); see {}",
                self.log_path(id).display()
            );
            out.push((id, ("node-exited".to_string(), what)));
        }
        out
    }

    pub fn log_path(&self, id: u64) -> &Path {
        self.nodes.log_path(id)
    }

    /// `/v1/cluster` of node `id`, if it answers within `limit`.
    pub async fn status(&self, id: u64, limit: Duration) -> Option<NodeStatus> {
        self.nodes.status_within(id, limit).await.ok()
    }

    /// The node that says it leads, with the highest term, among running, unpaused nodes.
    pub async fn leader(&self) -> Option<u64> {
        self.nodes.claimed_leader(Duration::from_millis(500)).await
    }

    /// Every running, unpaused node's term and leader, read at once; a node that does not
    /// answer within `limit` is left out.
    pub async fn view(&self, limit: Duration) -> View {
        let live: Vec<u64> = NODES
            .into_iter()
            .filter(|id| self.is_running(*id) && !self.is_paused(*id))
            .collect();
        let answers =
            futures::future::join_all(live.iter().map(|id| self.status(*id, limit))).await;
        View {
            nodes: answers.iter().flatten().map(NodeTerm::of).collect(),
        }
    }

    pub async fn wait_for_leader(&self, limit: Duration) -> Result<u64> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(id) = self.leader().await {
                return Ok(id);
            }
            if Instant::now() > deadline {
                bail!("no leader within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/v1/state/digest` of data node `id`: `(applied_index, digest)`.
    pub async fn digest(&self, id: u64) -> Option<(u64, String)> {
        let d = self.nodes.digest(id).await.ok()?;
        Some((d.applied_index, d.digest))
    }
}
