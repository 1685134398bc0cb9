//! The cluster under test: three real `tally serve` processes (data nodes 1 and 2, witness 3)
//! on loopback, reached by their peers through the harness's [`Proxies`], writing to one
//! record store.
//!
//! Every process is started here and signalled only by its own pid. The children die with
//! the harness (Linux `PR_SET_PDEATHSIG`) and are SIGCONTed and SIGKILLed when the
//! [`Cluster`] is dropped, on success, error and interruption alike.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

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
    /// `TALLY_PLANT` for the data nodes (empty: none).
    pub plants: Vec<String>,
    /// `RUST_LOG` for the nodes.
    pub log_filter: String,
}

struct NodeProc {
    listen: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

pub struct Cluster {
    opts: ClusterOptions,
    nodes: BTreeMap<u64, NodeProc>,
    pub proxies: Proxies,
    secret: String,
    http: reqwest::Client,
}

/// A node's `/v1/cluster`, reduced to what the harness needs.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pub leader: Option<u64>,
    pub is_leader: bool,
    pub term: u64,
    pub applied: u64,
    pub committed: u64,
    /// Events committed but not yet in the record store (data nodes).
    pub sink_pending: Option<u64>,
}

impl Cluster {
    /// Starts the proxies and the three nodes, and forms the cluster.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster> {
        let mut listens = BTreeMap::new();
        for id in NODES {
            listens.insert(id, format!("127.0.0.1:{}", free_port()?));
        }
        let proxies = Proxies::start(&listens).await?;
        let mut nodes = BTreeMap::new();
        for (&id, listen) in &listens {
            let data_dir = opts.dir.join(format!("n{id}"));
            std::fs::create_dir_all(&data_dir)?;
            nodes.insert(
                id,
                NodeProc {
                    listen: listen.clone(),
                    data_dir,
                    log: opts.dir.join(format!("n{id}.log")),
                    child: None,
                    paused: false,
                },
            );
        }
        let mut cluster = Cluster {
            opts,
            nodes,
            proxies,
            secret: format!("jepsen-{}", rand::random::<u64>()),
            http: reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        for id in NODES {
            cluster.spawn(id)?;
        }
        for id in NODES {
            cluster.wait_healthy(id, Duration::from_secs(30)).await?;
        }
        cluster.init().await?;
        cluster.wait_for_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// The address clients use for node `id` (its own listener, never cut).
    pub fn client_addr(&self, id: u64) -> &str {
        &self.nodes[&id].listen
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    fn members_flag(&self) -> String {
        self.proxies
            .addrs()
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, id: u64) -> Result<()> {
        let members = self.members_flag();
        let advertise = self.proxies.addrs()[&id].clone();
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let mut cmd = Command::new(&self.opts.tally_bin);
        cmd.arg("serve")
            .args(["--id", &id.to_string()])
            .args(["--role", if id == WITNESS { "witness" } else { "data" }])
            .args(["--listen", &node.listen])
            .args(["--advertise", &advertise])
            .args(["--source-ip", &proxy::source_ip(id).to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--record-store", &self.opts.record_store])
            .args(["--secret", &self.secret])
            .args(["--witnesses", &WITNESS.to_string()])
            .args(["--members", &members])
            .env("RUST_LOG", &self.opts.log_filter)
            .env_remove("TALLY_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if !self.opts.plants.is_empty() {
            cmd.env("TALLY_PLANT", self.opts.plants.join(","));
        } else {
            cmd.env_remove("TALLY_PLANT");
        }
        // SAFETY: prctl and setpgid are async-signal-safe; nothing else runs in the child.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.opts.tally_bin.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    fn signal(&self, id: u64, sig: libc::c_int) -> Result<()> {
        let Some(child) = self.nodes[&id].child.as_ref() else {
            bail!("node {id} is not running");
        };
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        if unsafe { libc::kill(child.id() as libc::pid_t, sig) } != 0 {
            bail!(
                "signal {sig} to node {id}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[&id].child.is_some()
    }

    pub fn is_paused(&self, id: u64) -> bool {
        self.nodes[&id].paused
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
        Ok(())
    }

    /// Starts node `id` again on its data directory (after [`Cluster::kill`]).
    pub fn restart(&mut self, id: u64) -> Result<()> {
        if self.is_running(id) {
            return Ok(());
        }
        self.spawn(id)
    }

    pub fn pause(&mut self, id: u64) -> Result<()> {
        self.signal(id, libc::SIGSTOP)?;
        self.nodes.get_mut(&id).context("no such node")?.paused = true;
        Ok(())
    }

    pub fn resume(&mut self, id: u64) -> Result<()> {
        if self.is_running(id) {
            self.signal(id, libc::SIGCONT)?;
        }
        self.nodes.get_mut(&id).context("no such node")?.paused = false;
        Ok(())
    }

    /// A node whose process exited on its own (not killed by the harness) is a finding:
    /// returns its id and exit status.
    pub fn exited(&mut self) -> Option<(u64, String)> {
        for (&id, node) in self.nodes.iter_mut() {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    return Some((id, status.to_string()));
                }
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
        &self.nodes[&id].log
    }

    async fn wait_healthy(&mut self, id: u64, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let url = format!("http://{}/healthz", self.nodes[&id].listen);
        loop {
            if let Some((dead, status)) = self.exited() {
                bail!(
                    "node {dead} exited at startup ({status}); its log ({}) ends with:\n{}",
                    self.log_path(dead).display(),
                    tail(self.log_path(dead), 15)
                );
            }
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("node {id} not healthy within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn init(&self) -> Result<()> {
        let url = format!("http://{}/v1/cluster/init", self.nodes[&1].listen);
        let r = self
            .http
            .post(&url)
            .header("x-tally-secret", &self.secret)
            .send()
            .await
            .context("cluster init")?;
        if !r.status().is_success() {
            bail!(
                "cluster init: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// `/v1/cluster` of node `id`, if it answers within `limit`.
    pub async fn view(&self, id: u64, limit: Duration) -> Option<NodeView> {
        let url = format!("http://{}/v1/cluster", self.nodes[&id].listen);
        let r = self.http.get(&url).timeout(limit).send().await.ok()?;
        let v: Value = r.json().await.ok()?;
        let num = |k: &str| v.get(k).and_then(Value::as_u64);
        Some(NodeView {
            leader: num("leader_id"),
            is_leader: v.get("raft_state").and_then(Value::as_str) == Some("Leader"),
            term: num("term").unwrap_or(0),
            applied: num("applied_index").unwrap_or(0),
            committed: num("committed_index").unwrap_or(0),
            sink_pending: v
                .get("sink")
                .and_then(|s| s.get("pending_events"))
                .and_then(Value::as_u64),
        })
    }

    /// The node that says it leads, with the highest term, among running, unpaused nodes.
    pub async fn leader(&self) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for id in NODES {
            if !self.is_running(id) || self.is_paused(id) {
                continue;
            }
            if let Some(v) = self.view(id, Duration::from_millis(500)).await {
                if v.is_leader && best.is_none_or(|(t, _)| v.term > t) {
                    best = Some((v.term, id));
                }
            }
        }
        best.map(|(_, id)| id)
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
        let url = format!("http://{}/v1/state/digest", self.nodes[&id].listen);
        let v: Value = self.http.get(&url).send().await.ok()?.json().await.ok()?;
        Some((
            v.get("applied_index")?.as_u64()?,
            v.get("digest")?.as_str()?.to_string(),
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                // SAFETY: kill(2) on our own unreaped child.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGCONT);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
