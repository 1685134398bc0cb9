//! The benchmark's own cluster: three `tally serve` child processes (two data nodes sharing
//! one SQLite record store, plus the witness) in a temporary directory, on loopback.
//!
//! Every child is started here and signalled only by its pid. They run in their own process
//! group (a Ctrl-C at the terminal reaches the bench, which then kills them), die with the
//! bench if it is killed itself (Linux `PR_SET_PDEATHSIG`), and are SIGKILLed and reaped
//! when the [`BenchCluster`] is dropped — on success, on error and on interruption alike.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub const WITNESS: u64 = 3;
pub const NODES: [u64; 3] = [1, 2, 3];

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
        match self {
            Stop::Kill => "SIGKILL",
            Stop::Term => "SIGTERM",
        }
    }

    fn signal(self) -> libc::c_int {
        match self {
            Stop::Kill => libc::SIGKILL,
            Stop::Term => libc::SIGTERM,
        }
    }
}

struct NodeProc {
    addr: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct BenchCluster {
    /// The `tally` binary every node runs.
    tally: PathBuf,
    /// Removed on drop unless kept (then `dir` says where it is).
    temp: Option<tempfile::TempDir>,
    dir: PathBuf,
    nodes: BTreeMap<u64, NodeProc>,
    node_log_filter: String,
    /// Control traffic (status, readiness, SQL), separate from the load's connections.
    http: reqwest::Client,
    /// The cluster secret, needed by cluster operations such as init.
    secret: String,
}

/// A node's `/v1/cluster`, reduced to what the bench looks at.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub leader: Option<u64>,
    pub is_leader: bool,
    pub term: u64,
}

impl BenchCluster {
    /// Writes the configs and starts the three processes (not yet formed into a cluster).
    pub async fn start(
        tally: PathBuf,
        base_port: Option<u16>,
        timings: &Timings,
        node_log_filter: &str,
    ) -> Result<BenchCluster> {
        let temp = tempfile::Builder::new()
            .prefix("tally-bench-failover-")
            .tempdir()
            .context("creating a temporary directory")?;
        let dir = temp.path().to_path_buf();
        let ports = match base_port {
            Some(p) => {
                let last = p.checked_add(2).context("--base-port too large")?;
                vec![p, p + 1, last]
            }
            None => free_ports(3)?,
        };
        let addrs: BTreeMap<u64, String> = NODES
            .iter()
            .zip(&ports)
            .map(|(id, p)| (*id, format!("127.0.0.1:{p}")))
            .collect();
        let records = format!("sqlite://{}", dir.join("records.db").display());
        let secret = format!("bench-{}", rand::random::<u64>());
        let mut nodes = BTreeMap::new();
        for (&id, addr) in &addrs {
            let data_dir = dir.join(format!("n{id}"));
            std::fs::create_dir_all(&data_dir)?;
            let config = dir.join(format!("node{id}.toml"));
            std::fs::write(
                &config,
                node_config(id, &addrs, &data_dir, &records, &secret, timings),
            )?;
            nodes.insert(
                id,
                NodeProc {
                    addr: addr.clone(),
                    config,
                    log: dir.join(format!("node{id}.log")),
                    child: None,
                },
            );
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut cluster = BenchCluster {
            tally,
            temp: Some(temp),
            dir,
            nodes,
            node_log_filter: node_log_filter.to_string(),
            http,
            secret,
        };
        for id in NODES {
            cluster.spawn(id)?;
        }
        for id in NODES {
            cluster.wait_healthy(id, Duration::from_secs(30)).await?;
        }
        Ok(cluster)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps the directory (configs, data, logs) after the bench ends.
    pub fn keep_dir(&mut self) {
        if let Some(t) = self.temp.take() {
            let _ = t.keep();
        }
    }

    pub fn url(&self, id: u64) -> String {
        format!("http://{}", self.nodes[&id].addr)
    }

    pub fn urls(&self) -> Vec<String> {
        NODES.iter().map(|id| self.url(*id)).collect()
    }

    pub fn log_path(&self, id: u64) -> &Path {
        &self.nodes[&id].log
    }

    /// The last `n` lines of node `id`'s log (the directory may not outlive an error).
    pub fn log_tail(&self, id: u64, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[&id].child.is_some()
    }

    fn spawn(&mut self, id: u64) -> Result<()> {
        let exe = self.tally.clone();
        let filter = self.node_log_filter.clone();
        let node = self.nodes.get_mut(&id).expect("known node");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let mut cmd = Command::new(exe);
        // Only the config file speaks: no TALLY_* variable from the caller's environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TALLY_") {
                cmd.env_remove(&key);
            }
        }
        cmd.arg("serve")
            .arg("--config")
            .arg(&node.config)
            .env("TALLY_LOG", filter)
            .env("NO_COLOR", "1")
            // An error's message, not a backtrace, ends the log (panics keep RUST_BACKTRACE).
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        contain(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("starting node {id}"))?;
        node.child = Some(child);
        Ok(())
    }

    /// Sends `stop` to node `id` (a child of this bench) and returns at once; see
    /// [`BenchCluster::try_reap`] for its exit.
    pub fn signal(&mut self, id: u64, stop: Stop) -> Result<()> {
        let child = self.nodes[&id]
            .child
            .as_ref()
            .with_context(|| format!("node {id} is not running"))?;
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on the pid of our own unreaped child: the pid cannot have been
        // reused by another process while the child is a zombie at worst.
        if unsafe { libc::kill(pid, stop.signal()) } != 0 {
            bail!(
                "kill({pid}, {}): {}",
                stop.name(),
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Whether node `id` has exited (reaping it if so).
    pub fn try_reap(&mut self, id: u64) -> Result<Option<std::process::ExitStatus>> {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(child) = node.child.as_mut() else {
            bail!("node {id} is not running");
        };
        let status = child.try_wait()?;
        if status.is_some() {
            node.child = None;
        }
        Ok(status)
    }

    /// SIGKILLs node `id` if it still runs, and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped node again with the same config and data directory.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        if self.is_running(id) {
            bail!("node {id} is still running");
        }
        self.spawn(id)?;
        self.wait_healthy(id, Duration::from_secs(30)).await
    }

    async fn wait_healthy(&mut self, id: u64, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_reap(id)? {
                bail!(
                    "node {id} exited during startup ({status}); its log ends:\n{}",
                    self.log_tail(id, 15)
                );
            }
            if let Ok(r) = self.get(id, "/healthz").await {
                if r.0 == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {id} not healthy within {within:?}; its log ends:\n{}",
                    self.log_tail(id, 15)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET on node `id` with a short timeout: (status, JSON body or Null).
    pub async fn get(&self, id: u64, path: &str) -> Result<(u16, Value)> {
        let resp = self
            .http
            .get(format!("{}{path}", self.url(id)))
            .timeout(Duration::from_secs(2))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// POST of a JSON body on node `id`: (status, JSON body or Null).
    pub async fn post(&self, id: u64, path: &str, body: &Value) -> Result<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.url(id)))
            .json(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// `POST /v1/cluster/init` on node 1, retried briefly.
    pub async fn init(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let init = self
                .http
                .post(format!("{}/v1/cluster/init", self.url(1)))
                .header("x-tally-secret", &self.secret)
                .send()
                .await;
            let answer = match init {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    Ok((status, resp.json().await.unwrap_or(Value::Null)))
                }
                Err(e) => Err(e),
            };
            let last = match answer {
                Ok((200, _)) => return Ok(()),
                Ok((s, b)) => format!("{s}: {b}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!("cluster init failed: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Node `id`'s view of the leader, from `/v1/cluster`.
    pub async fn view(&self, id: u64) -> Result<NodeView> {
        let (status, body) = self.get(id, "/v1/cluster").await?;
        if status != 200 {
            bail!("GET /v1/cluster on node {id}: {status}");
        }
        Ok(NodeView {
            leader: body["leader_id"].as_u64(),
            is_leader: body["raft_state"] == "Leader",
            term: body["term"].as_u64().unwrap_or(0),
        })
    }

    /// The leader every running node names, when that is a data node that knows it leads,
    /// and the highest term the nodes report.
    pub async fn agreed_data_leader(&self) -> Result<(u64, u64)> {
        let mut named = Vec::new();
        let mut leading = Vec::new();
        let mut term = 0;
        for id in NODES.into_iter().filter(|id| self.is_running(*id)) {
            let v = self.view(id).await?;
            named.push(v.leader);
            term = term.max(v.term);
            if v.is_leader {
                leading.push(id);
            }
        }
        match (named.first(), leading.as_slice()) {
            (Some(Some(l)), [only]) if named.iter().all(|n| *n == Some(*l)) && l == only => {
                if *l == WITNESS {
                    bail!("the witness leads");
                }
                Ok((*l, term))
            }
            _ => bail!("no agreed leader yet (named {named:?}, leading {leading:?})"),
        }
    }

    /// Whether every running node answers `/readyz` with 200.
    pub async fn all_ready(&self) -> Result<()> {
        for id in NODES.into_iter().filter(|id| self.is_running(*id)) {
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

impl Drop for BenchCluster {
    fn drop(&mut self) {
        for id in NODES {
            self.kill(id);
        }
    }
}

/// Puts the child in its own process group and, on Linux, asks the kernel to SIGKILL it
/// when the bench dies, so no node outlives the bench however it ends.
fn contain(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: runs in the forked child before exec; prctl, getppid and _exit are
        // async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The bench may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
}

fn node_config(
    id: u64,
    addrs: &BTreeMap<u64, String>,
    data_dir: &Path,
    records: &str,
    secret: &str,
    t: &Timings,
) -> String {
    let witness = id == WITNESS;
    let mut text = format!(
        "id = {id}\nrole = {role}\nlisten = {listen}\ndata_dir = {dd}\n",
        role = toml_string(if witness { "witness" } else { "data" }),
        listen = toml_string(&addrs[&id]),
        dd = toml_string(&data_dir.display().to_string()),
    );
    if !witness {
        text.push_str(&format!("record_store = {}\n", toml_string(records)));
    }
    text.push_str(&format!(
        "\n[cluster]\nsecret = {}\nwitnesses = [{WITNESS}]\n\n[cluster.members]\n",
        toml_string(secret)
    ));
    for (m, addr) in addrs {
        text.push_str(&format!("{m} = {}\n", toml_string(addr)));
    }
    text.push_str("\n[raft]\n");
    for (key, value) in [
        ("heartbeat_ms", t.heartbeat_ms),
        ("election_min_ms", t.election_min_ms),
        ("election_max_ms", t.election_max_ms),
    ] {
        if let Some(v) = value {
            text.push_str(&format!("{key} = {v}\n"));
        }
    }
    text
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Free loopback ports: bind port 0 for each, read it back, then release them all.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_config_is_valid_toml_with_only_the_given_timings() {
        let addrs: BTreeMap<u64, String> = NODES
            .iter()
            .map(|id| (*id, format!("127.0.0.1:{}", 7000 + id)))
            .collect();
        let t = Timings {
            heartbeat_ms: Some(50),
            ..Timings::default()
        };
        let text = node_config(
            1,
            &addrs,
            Path::new("/tmp/x \"y\""),
            "sqlite:///tmp/r.db",
            "s",
            &t,
        );
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["record_store"].as_str(), Some("sqlite:///tmp/r.db"));
        assert_eq!(v["data_dir"].as_str(), Some("/tmp/x \"y\""));
        assert_eq!(v["raft"]["heartbeat_ms"].as_integer(), Some(50));
        assert!(v["raft"].get("election_min_ms").is_none());
        let w: toml::Value =
            toml::from_str(&node_config(3, &addrs, Path::new("/d"), "r", "s", &t)).unwrap();
        assert!(w.get("record_store").is_none());
        assert_eq!(w["role"].as_str(), Some("witness"));
    }
}
