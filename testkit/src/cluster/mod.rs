//! A cluster of real `tally serve` processes on loopback, for the end-to-end tests, the
//! chaos suite (`tally-jepsen`) and the failover benchmark: the one place that spawns
//! nodes, picks ports and writes their configs.
//!
//! A [`ClusterSpec`] describes the cluster (node ids and roles, the binary, a temp or given
//! directory, config keys shared or per node, `advertise`/`source_ip`, the record store,
//! environment variables, the secret). [`ProcessCluster::start`] writes one TOML config per
//! node (`<prefix><id>.toml`), starts every node with its output appended to
//! `<prefix><id>.log` and waits until each answers `/healthz`. Then: signals
//! ([`Signal`]), restarts on the same config and data directory, wiping or moving a node,
//! starting a node that joins later, cluster init with the secret, waiting for a leader or
//! for readiness, typed status ([`NodeStatus`], from `GET /v1/cluster`), digests and logs.
//!
//! Every child is signalled only by its own pid. Children run in their own process group,
//! die with the harness (Linux `PR_SET_PDEATHSIG`), and are SIGCONTed, SIGKILLed and reaped
//! when the [`ProcessCluster`] is dropped, on success, error, panic and interruption alike.
//! The directory is removed then, unless [`Keep`] says otherwise.

pub mod config;
pub mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
pub use tally_protocol::{NodeStatus, RaftState, Role};

pub use config::{free_addr, free_ports, toml_string, NodeConfig, Sections, Value};
pub use process::{log_tail, log_text, Signal};

use crate::pki::{Issued, TestCa};
use process::{Launch, Process};

/// How often the waits poll.
const POLL: Duration = Duration::from_millis(50);

/// One node of a [`ClusterSpec`].
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub role: Role,
    /// `host:port` it binds; `None`: a free loopback port.
    pub listen: Option<String>,
    /// `host:port` peers reach it at (`[cluster.members]` then lists this, not `listen`).
    pub advertise: Option<String>,
    /// Local address its outgoing peer connections bind.
    pub source_ip: Option<String>,
    /// Its `record_store`, instead of the cluster's (which only data nodes get).
    pub record_store: Option<String>,
    /// Environment for this node only, after the cluster's.
    pub env: Vec<(String, String)>,
    /// Config keys for this node only, over the cluster's.
    pub sections: Sections,
}

impl NodeSpec {
    pub fn new(id: u64, role: Role) -> NodeSpec {
        NodeSpec {
            id,
            role,
            listen: None,
            advertise: None,
            source_ip: None,
            record_store: None,
            env: Vec::new(),
            sections: Sections::new(),
        }
    }

    pub fn data(id: u64) -> NodeSpec {
        NodeSpec::new(id, Role::Data)
    }

    pub fn witness(id: u64) -> NodeSpec {
        NodeSpec::new(id, Role::Witness)
    }

    /// Sets `[table] key = value` for this node.
    pub fn set(mut self, table: &str, key: &str, value: impl Into<Value>) -> NodeSpec {
        set_key(&mut self.sections, table, key, value.into());
        self
    }
}

/// What happens to the cluster's directory when the [`ProcessCluster`] is dropped. A
/// directory given in [`ClusterSpec::dir`] is never removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Keep {
    /// Removed.
    #[default]
    Never,
    /// Kept (and its path printed) when the drop happens while a panic unwinds.
    OnFailure,
    /// Kept (and its path printed).
    Always,
}

/// A TLS cluster: the harness makes a CA in the cluster's directory (`tls/ca.crt`) and a
/// certificate per node (`tls/node<id>.crt`, `.key`, for `127.0.0.1` and `localhost`,
/// server and client use), writes every node's `[tls]` section, and talks HTTPS trusting
/// that CA.
#[derive(Clone, Debug)]
pub struct TlsSpec {
    /// `[tls] peer_client_auth` of every node.
    pub peer_client_auth: bool,
}

/// A cluster to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `tally` binary.
    pub bin: PathBuf,
    /// Where configs, data directories and logs go; `None`: a new temp directory.
    pub dir: Option<PathBuf>,
    /// Name prefix of that temp directory.
    pub temp_prefix: String,
    /// Node files are `<file_prefix><id>.toml` and `<file_prefix><id>.log`; data
    /// directories `n<id>`.
    pub file_prefix: String,
    pub nodes: Vec<NodeSpec>,
    pub secret: String,
    /// `record_store` of every data node (witnesses get none unless their [`NodeSpec`]
    /// says so).
    pub record_store: Option<String>,
    /// Instead of `record_store`: the data nodes share an SQLite file of this name in the
    /// cluster's directory (known only once the directory is made).
    pub sqlite_in_dir: Option<String>,
    /// Config keys of every node: `raft`, `sink`, `sql`, `ingest` tables.
    pub sections: Sections,
    /// Environment of every node.
    pub env: Vec<(String, String)>,
    /// `TALLY_LOG` of every node; `None` leaves the binary's default.
    pub log_filter: Option<String>,
    pub keep: Keep,
    /// On a drop during a panic, print every live node's `/v1/cluster` and the tail of
    /// every log to stderr.
    pub report_on_panic: bool,
    /// How long a started node may take to answer `/healthz`.
    pub startup_timeout: Duration,
    /// Timeout of the harness's own HTTP requests.
    pub http_timeout: Duration,
    /// Connect timeout of the harness's own HTTP requests.
    pub connect_timeout: Duration,
    /// Bearer token the harness presents for its reads (digests) on a cluster with
    /// `[auth]` tokens; status requests present the cluster secret.
    pub read_token: Option<String>,
    /// Serve HTTPS only, peers included ([`TlsSpec`]); `None`: plain HTTP.
    pub tls: Option<TlsSpec>,
}

impl ClusterSpec {
    /// Data nodes 1 and 2 and witness 3, on free ports in a temp directory, with a fresh
    /// secret and the binary's defaults otherwise.
    pub fn new(bin: impl Into<PathBuf>) -> ClusterSpec {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        ClusterSpec {
            bin: bin.into(),
            dir: None,
            temp_prefix: "tally-cluster-".into(),
            file_prefix: "node".into(),
            nodes: vec![NodeSpec::data(1), NodeSpec::data(2), NodeSpec::witness(3)],
            secret: format!("testkit-{}-{nanos}", std::process::id()),
            record_store: None,
            sqlite_in_dir: None,
            sections: Sections::new(),
            env: Vec::new(),
            log_filter: None,
            keep: Keep::Never,
            report_on_panic: false,
            startup_timeout: Duration::from_secs(30),
            http_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            read_token: None,
            tls: None,
        }
    }

    /// Sets `[table] key = value` for every node.
    pub fn set(mut self, table: &str, key: &str, value: impl Into<Value>) -> ClusterSpec {
        set_key(&mut self.sections, table, key, value.into());
        self
    }

    /// Sets an environment variable for every node.
    pub fn env(mut self, key: &str, value: &str) -> ClusterSpec {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn node_mut(&mut self, id: u64) -> &mut NodeSpec {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in the spec"))
    }
}

fn set_key(sections: &mut Sections, table: &str, key: &str, value: Value) {
    sections
        .entry(table.to_string())
        .or_default()
        .insert(key.to_string(), value);
}

/// `GET /v1/state/digest` of a data node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    /// The node that answered.
    pub node_id: u64,
    pub applied_index: u64,
    pub digest: String,
}

struct Node {
    spec: NodeSpec,
    config: NodeConfig,
    config_path: PathBuf,
    log_path: PathBuf,
    process: Option<Process>,
}

/// A running (or partly running) cluster of `tally` processes. Dropping it kills every
/// child it started.
pub struct ProcessCluster {
    temp: Option<tempfile::TempDir>,
    dir: PathBuf,
    spec: ClusterSpec,
    nodes: BTreeMap<u64, Node>,
    http: reqwest::Client,
    /// A TLS cluster's CA.
    pki: Option<ClusterPki>,
}

struct ClusterPki {
    ca: TestCa,
    dir: PathBuf,
}

impl ClusterPki {
    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

impl ProcessCluster {
    /// Writes every node's config; starts nothing.
    pub fn create(spec: ClusterSpec) -> Result<ProcessCluster> {
        let (temp, dir) = match &spec.dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                // Absolute, so the configs do not depend on the nodes' working directory.
                (None, std::path::absolute(d)?)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix(&spec.temp_prefix)
                    .tempdir()
                    .context("creating a temporary directory")?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let ids: BTreeSet<u64> = spec.nodes.iter().map(|n| n.id).collect();
        if ids.len() != spec.nodes.len() {
            bail!("two nodes with the same id in the spec");
        }
        let mut ports = free_ports(spec.nodes.len())?.into_iter();
        let listens: BTreeMap<u64, String> = spec
            .nodes
            .iter()
            .map(|n| {
                let port = ports.next().expect("one port per node");
                let listen = n.listen.clone().unwrap_or(format!("127.0.0.1:{port}"));
                (n.id, listen)
            })
            .collect();
        let members: BTreeMap<u64, String> = spec
            .nodes
            .iter()
            .map(|n| (n.id, n.advertise.clone().unwrap_or(listens[&n.id].clone())))
            .collect();
        let witnesses: Vec<u64> = spec
            .nodes
            .iter()
            .filter(|n| n.role == Role::Witness)
            .map(|n| n.id)
            .collect();
        let pki = match &spec.tls {
            None => None,
            Some(_) => {
                let pki = ClusterPki {
                    ca: TestCa::new("Tally test cluster CA")?,
                    dir: dir.join("tls"),
                };
                std::fs::create_dir_all(&pki.dir)?;
                pki.ca.write_cert(&pki.ca_path())?;
                Some(pki)
            }
        };
        let http = client_builder(pki.as_ref())?
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(spec.connect_timeout)
            .timeout(spec.http_timeout)
            .build()?;
        let mut spec = spec;
        if let Some(file) = &spec.sqlite_in_dir {
            spec.record_store = Some(format!("sqlite://{}", dir.join(file).display()));
        }
        let mut cluster = ProcessCluster {
            temp,
            dir,
            nodes: BTreeMap::new(),
            http,
            spec: spec.clone(),
            pki,
        };
        for n in &spec.nodes {
            cluster.insert_node(
                n.clone(),
                listens[&n.id].clone(),
                members.clone(),
                witnesses.clone(),
            )?;
        }
        Ok(cluster)
    }

    /// Writes the configs, starts every node and waits until each is healthy (not yet
    /// formed into a cluster: see [`ProcessCluster::init`]).
    pub async fn start(spec: ClusterSpec) -> Result<ProcessCluster> {
        let mut cluster = ProcessCluster::create(spec)?;
        for id in cluster.ids() {
            cluster.spawn(id)?;
        }
        for id in cluster.ids() {
            cluster.wait_healthy(id).await?;
        }
        Ok(cluster)
    }

    fn insert_node(
        &mut self,
        spec: NodeSpec,
        listen: String,
        members: BTreeMap<u64, String>,
        witnesses: Vec<u64>,
    ) -> Result<()> {
        let id = spec.id;
        let data_dir = self.dir.join(format!("n{id}"));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let mut sections = self.spec.sections.clone();
        for (table, keys) in &spec.sections {
            sections
                .entry(table.clone())
                .or_default()
                .extend(keys.clone());
        }
        if let (Some(pki), Some(tls)) = (&self.pki, &self.spec.tls) {
            let files = pki
                .ca
                .issue(&format!("tally node {id}"), &["127.0.0.1", "localhost"])?
                .write(&pki.dir, &format!("node{id}"))?;
            let table = sections.entry("tls".into()).or_default();
            let path = |p: &Path| Value::Str(p.display().to_string());
            table.insert("cert".into(), path(&files.cert));
            table.insert("key".into(), path(&files.key));
            table.insert("ca".into(), path(&pki.ca_path()));
            table.insert("peer_client_auth".into(), tls.peer_client_auth.into());
        }
        let record_store = match (&spec.record_store, spec.role) {
            (Some(url), _) => Some(url.clone()),
            (None, Role::Data) => self.spec.record_store.clone(),
            (None, Role::Witness) => None,
        };
        let config = NodeConfig {
            id,
            role: spec.role,
            listen,
            advertise: spec.advertise.clone(),
            source_ip: spec.source_ip.clone(),
            data_dir,
            record_store,
            secret: self.spec.secret.clone(),
            witnesses,
            members,
            sections,
        };
        let prefix = &self.spec.file_prefix;
        let node = Node {
            config_path: self.dir.join(format!("{prefix}{id}.toml")),
            log_path: self.dir.join(format!("{prefix}{id}.log")),
            spec,
            config,
            process: None,
        };
        write_config(&node)?;
        self.nodes.insert(id, node);
        Ok(())
    }

    // ---- What the cluster is ------------------------------------------------------------

    fn node_mut(&mut self, id: u64) -> Result<&mut Node> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    fn known(&self, id: u64) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn secret(&self) -> &str {
        &self.spec.secret
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The harness's HTTP client (no proxy, no redirects followed; in a TLS cluster it
    /// trusts the cluster's CA and shows no client certificate).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A client builder like the harness's own (no proxy; the cluster's CA as the only root
    /// in a TLS cluster), for tests that need their own clients.
    pub fn client_builder(&self) -> Result<reqwest::ClientBuilder> {
        client_builder(self.pki.as_ref())
    }

    /// A TLS cluster's CA certificate file.
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.pki.as_ref().map(ClusterPki::ca_path)
    }

    /// A certificate from a TLS cluster's CA for `name` (as a client or another node).
    pub fn issue_certificate(&self, name: &str, sans: &[&str]) -> Result<Issued> {
        let pki = self.pki.as_ref().context("not a TLS cluster")?;
        pki.ca.issue(name, sans)
    }

    /// `"https"` in a TLS cluster, else `"http"`.
    pub fn scheme(&self) -> &'static str {
        if self.pki.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Every node this harness knows, running or not, later-started ones included.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn role(&self, id: u64) -> Role {
        self.known(id).spec.role
    }

    pub fn data_ids(&self) -> Vec<u64> {
        self.ids_where(|n| n.spec.role == Role::Data)
    }

    pub fn witness_ids(&self) -> Vec<u64> {
        self.ids_where(|n| n.spec.role == Role::Witness)
    }

    /// Running nodes.
    pub fn live(&self) -> Vec<u64> {
        self.ids_where(|n| n.process.is_some())
    }

    /// Running data nodes.
    pub fn live_data(&self) -> Vec<u64> {
        self.ids_where(|n| n.process.is_some() && n.spec.role == Role::Data)
    }

    fn ids_where(&self, f: impl Fn(&Node) -> bool) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| f(n))
            .map(|(id, _)| *id)
            .collect()
    }

    /// `host:port` node `id` listens on (clients use it).
    pub fn addr(&self, id: u64) -> &str {
        &self.known(id).config.listen
    }

    /// `http://host:port` of node `id` (`https://` in a TLS cluster).
    pub fn url(&self, id: u64) -> String {
        format!("{}://{}", self.scheme(), self.addr(id))
    }

    /// `host:port` peers reach node `id` at (its `advertise`, else its `listen`).
    pub fn member_addr(&self, id: u64) -> &str {
        let n = self.known(id);
        n.config.advertise.as_deref().unwrap_or(&n.config.listen)
    }

    pub fn data_dir(&self, id: u64) -> &Path {
        &self.known(id).config.data_dir
    }

    pub fn config_path(&self, id: u64) -> &Path {
        &self.known(id).config_path
    }

    pub fn log_path(&self, id: u64) -> &Path {
        &self.known(id).log_path
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.known(id).process.is_some()
    }

    /// Running and stopped by SIGSTOP.
    pub fn is_paused(&self, id: u64) -> bool {
        self.known(id)
            .process
            .as_ref()
            .is_some_and(Process::is_paused)
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.known(id).process.as_ref().map(Process::pid)
    }

    // ---- Processes ----------------------------------------------------------------------

    /// Starts stopped node `id` on its config and data directory; does not wait.
    pub fn spawn(&mut self, id: u64) -> Result<()> {
        let mut env = vec![("NO_COLOR".to_string(), "1".to_string())];
        if let Some(f) = &self.spec.log_filter {
            env.push(("TALLY_LOG".into(), f.clone()));
        }
        env.extend(self.spec.env.iter().cloned());
        let bin = self.spec.bin.clone();
        let node = self.node_mut(id)?;
        if node.process.is_some() {
            bail!("node {id} is already running");
        }
        env.extend(node.spec.env.iter().cloned());
        let launch = Launch {
            bin,
            config: node.config_path.clone(),
            log: node.log_path.clone(),
            env,
        };
        node.process = Some(Process::spawn(&launch).with_context(|| format!("node {id}"))?);
        Ok(())
    }

    /// Starts stopped node `id` again (same config, same data directory) and waits until
    /// it is healthy.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        self.spawn(id)?;
        self.wait_healthy(id).await
    }

    /// Sends `signal` to running node `id` and returns at once (see
    /// [`ProcessCluster::try_reap`] for its exit).
    pub fn signal(&self, id: u64, signal: Signal) -> Result<()> {
        let node = self.nodes.get(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        match node.process.as_ref() {
            Some(p) => p.signal(signal).with_context(|| format!("node {id}")),
            None => bail!("node {id} is not running"),
        }
    }

    /// SIGKILLs node `id` and reaps it; `None` if it was not running.
    pub fn kill(&mut self, id: u64) -> Result<Option<ExitStatus>> {
        Ok(self.node_mut(id)?.process.take().and_then(Process::kill))
    }

    /// SIGSTOP: node `id` keeps its sockets and state but does nothing until
    /// [`ProcessCluster::resume`]; its HTTP answers wait for the resume.
    pub fn pause(&self, id: u64) -> Result<()> {
        self.signal(id, Signal::Stop)
    }

    /// SIGCONT.
    pub fn resume(&self, id: u64) -> Result<()> {
        self.signal(id, Signal::Cont)
    }

    /// Whether running node `id` has exited (reaped, and no longer running, if so).
    pub fn try_reap(&mut self, id: u64) -> Result<Option<ExitStatus>> {
        let node = self.node_mut(id)?;
        let Some(p) = node.process.as_mut() else {
            bail!("node {id} is not running");
        };
        let status = p.try_wait()?;
        if status.is_some() {
            node.process = None;
        }
        Ok(status)
    }

    /// Every node that has exited since it was started (reaped), with its status.
    pub fn reap_exited(&mut self) -> Vec<(u64, ExitStatus)> {
        let mut out = Vec::new();
        for id in self.live() {
            if let Ok(Some(status)) = self.try_reap(id) {
                out.push((id, status));
            }
        }
        out
    }

    /// Waits (bounded by `within`) until running node `id` exits on its own.
    pub async fn wait_exit(&mut self, id: u64, within: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_reap(id)? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("node {id} still runs after {within:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Empties the data directory of stopped node `id` (a lost disk).
    pub fn wipe(&mut self, id: u64) -> Result<()> {
        if self.is_running(id) {
            bail!("node {id} must be stopped before wiping");
        }
        let dir = self.data_dir(id).to_path_buf();
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        std::fs::create_dir_all(&dir)?;
        Ok(())
    }

    /// Gives stopped node `id` a new free port: its config's `listen` and its own entry in
    /// `[cluster.members]` change (the other nodes' configs are left alone: they learn
    /// addresses from the membership). Returns the new address.
    pub fn move_node(&mut self, id: u64) -> Result<String> {
        if self.is_running(id) {
            bail!("node {id} must be stopped before moving");
        }
        let addr = free_addr()?;
        let node = self.node_mut(id)?;
        node.config.listen = addr.clone();
        node.config.members.insert(id, addr.clone());
        write_config(node)?;
        Ok(addr)
    }

    /// Writes the config of a new node that joins the running cluster: a free port (unless
    /// `spec.listen` gives one), an empty data directory, `[cluster.members]` listing the
    /// initial members and itself, `witnesses` every witness it knows and itself if it is
    /// one. Starts nothing; returns its address. It runs no cluster init: it waits to be
    /// added.
    pub fn add_node(&mut self, spec: NodeSpec) -> Result<String> {
        let id = spec.id;
        if self.nodes.contains_key(&id) {
            bail!("node {id} already exists");
        }
        let listen = match &spec.listen {
            Some(l) => l.clone(),
            None => free_addr()?,
        };
        let mut members: BTreeMap<u64, String> = self
            .spec
            .nodes
            .iter()
            .map(|n| (n.id, self.nodes[&n.id].initial_member_addr()))
            .collect();
        members.insert(id, spec.advertise.clone().unwrap_or(listen.clone()));
        let mut witnesses: BTreeSet<u64> = self.witness_ids().into_iter().collect();
        if spec.role == Role::Witness {
            witnesses.insert(id);
        }
        self.insert_node(
            spec,
            listen.clone(),
            members,
            witnesses.into_iter().collect(),
        )?;
        Ok(listen)
    }

    /// [`ProcessCluster::add_node`], then starts it and waits until it is healthy.
    pub async fn start_node(&mut self, spec: NodeSpec) -> Result<String> {
        let id = spec.id;
        let addr = self.add_node(spec)?;
        self.spawn(id)?;
        self.wait_healthy(id).await?;
        Ok(addr)
    }

    // ---- Waiting ------------------------------------------------------------------------

    /// Waits until node `id` answers `/healthz` with 200 (within the spec's startup
    /// timeout); fails at once, with its log's tail, if it exits meanwhile.
    pub async fn wait_healthy(&mut self, id: u64) -> Result<()> {
        let within = self.spec.startup_timeout;
        let deadline = Instant::now() + within;
        let url = format!("{}/healthz", self.url(id));
        loop {
            if let Some(status) = self.try_reap(id)? {
                bail!(
                    "node {id} exited during startup ({status}); its log ({}) ends:\n{}",
                    self.log_path(id).display(),
                    self.log_tail(id, 40)
                );
            }
            let answer = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(answer, Ok(r) if r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {id} not healthy within {within:?}; its log ends:\n{}",
                    self.log_tail(id, 40)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `POST /v1/cluster/init` with the secret on the first node of the spec (idempotent),
    /// retried for up to 30 s.
    pub async fn init(&self) -> Result<()> {
        let first = self.spec.nodes.first().context("no nodes")?.id;
        let url = format!("{}/v1/cluster/init", self.url(first));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = match self
                .http
                .post(&url)
                .header("x-tally-secret", self.secret())
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!("cluster init failed: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`ProcessCluster::start`], [`ProcessCluster::init`] and
    /// [`ProcessCluster::wait_leader`]; returns the cluster and its leader.
    pub async fn start_formed(spec: ClusterSpec) -> Result<(ProcessCluster, u64)> {
        let cluster = ProcessCluster::start(spec).await?;
        cluster.init().await?;
        let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
        Ok((cluster, leader))
    }

    /// The leader every running node names, when that leader is a running data node that
    /// reports itself leader.
    pub async fn agreed_leader(&self) -> Result<u64> {
        let statuses = self.statuses().await?;
        let leaders: BTreeSet<Option<u64>> = statuses.values().map(|s| s.leader_id).collect();
        let leader = match leaders.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(l)] => *l,
            other => bail!("leaders seen: {other:?}"),
        };
        let s = statuses
            .get(&leader)
            .ok_or_else(|| anyhow!("leader {leader} is not a live node"))?;
        if s.raft_state != RaftState::Leader || s.role != Role::Data {
            bail!("node {leader}: raft_state {} role {}", s.raft_state, s.role);
        }
        Ok(leader)
    }

    /// `GET /v1/cluster` of every running node (the first failure is the error).
    pub async fn statuses(&self) -> Result<BTreeMap<u64, NodeStatus>> {
        let mut out = BTreeMap::new();
        for id in self.live() {
            let s = self
                .status(id)
                .await
                .with_context(|| format!("node {id}"))?;
            out.insert(id, s);
        }
        Ok(out)
    }

    /// Waits (bounded by `within`) for [`ProcessCluster::agreed_leader`].
    pub async fn wait_leader(&self, within: Duration) -> Result<u64> {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.agreed_leader().await {
                Ok(id) => return Ok(id),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                bail!(
                    "no agreed data-node leader within {within:?}: {last:#}\n{}",
                    self.all_log_tails(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node that says it leads, with the highest term, among running, unpaused nodes
    /// that answer within `limit`.
    pub async fn claimed_leader(&self, limit: Duration) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for id in self.live() {
            if self.is_paused(id) {
                continue;
            }
            if let Ok(s) = self.status_within(id, limit).await {
                if s.is_leader() && best.is_none_or(|(t, _)| s.term > t) {
                    best = Some((s.term, id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// Whether node `id` answers `/readyz` with 200 (leader known, caught up).
    pub async fn ready(&self, id: u64) -> Result<()> {
        let r = self
            .http
            .get(format!("{}/readyz", self.url(id)))
            .send()
            .await?;
        if r.status() != reqwest::StatusCode::OK {
            bail!(
                "node {id} not ready: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Waits (bounded by `within`) until every running node is [ready](Self::ready).
    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        for id in self.live() {
            loop {
                let last = match self.ready(id).await {
                    Ok(()) => break,
                    Err(e) => e,
                };
                if Instant::now() >= deadline {
                    bail!("node {id} not ready within {within:?}: {last:#}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    // ---- Status -------------------------------------------------------------------------

    /// `GET /v1/cluster` of node `id`.
    pub async fn status(&self, id: u64) -> Result<NodeStatus> {
        self.status_within(id, self.spec.http_timeout).await
    }

    /// `GET /v1/cluster` of node `id`, if it answers within `limit`.
    pub async fn status_within(&self, id: u64, limit: Duration) -> Result<NodeStatus> {
        let r = self
            .http
            .get(format!("{}/v1/cluster", self.url(id)))
            .header("x-tally-secret", self.secret())
            .timeout(limit)
            .send()
            .await?;
        let code = r.status();
        let text = r.text().await?;
        if code != reqwest::StatusCode::OK {
            bail!("status {}: {text}", code.as_u16());
        }
        serde_json::from_str(&text).with_context(|| format!("GET /v1/cluster: {text}"))
    }

    /// `GET /v1/state/digest` of data node `id`.
    pub async fn digest(&self, id: u64) -> Result<Digest> {
        let mut request = self.http.get(format!("{}/v1/state/digest", self.url(id)));
        if let Some(token) = &self.spec.read_token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await?;
        let code = r.status();
        let text = r.text().await?;
        if code != reqwest::StatusCode::OK {
            bail!("digest of node {id}: status {}: {text}", code.as_u16());
        }
        parse_digest(&text)
    }

    // ---- Logs ---------------------------------------------------------------------------

    pub fn log_text(&self, id: u64) -> String {
        log_text(self.log_path(id))
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        log_tail(self.log_path(id), lines)
    }

    /// The tail of every node's log, each under a header.
    pub fn all_log_tails(&self, lines: usize) -> String {
        self.nodes
            .keys()
            .map(|&id| {
                format!(
                    "----- node {id} log ({}) -----\n{}",
                    self.log_path(id).display(),
                    self.log_tail(id, lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `GET /v1/cluster` of every running, unpaused node as raw text, fetched with plain
    /// blocking std I/O (usable in `Drop`, where no async runtime can be relied on). For
    /// failure reports.
    pub fn status_dump(&self) -> String {
        use std::io::{Read, Write};
        let mut out = String::new();
        for id in self.live() {
            if self.pki.is_some() {
                out.push_str(&format!(
                    "----- node {id} /v1/cluster -----\n(HTTPS: not dumped)\n"
                ));
                continue;
            }
            if self.is_paused(id) {
                out.push_str(&format!("----- node {id} /v1/cluster -----\n(paused)\n"));
                continue;
            }
            let addr = self.addr(id);
            let text = (|| -> std::io::Result<String> {
                let sock = addr.parse().map_err(std::io::Error::other)?;
                let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(1))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                write!(
                    s,
                    "GET /v1/cluster HTTP/1.0\r\nHost: {addr}\r\nx-tally-secret: {}\r\n\r\n",
                    self.secret()
                )?;
                let mut buf = String::new();
                s.read_to_string(&mut buf)?;
                Ok(buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
            })();
            out.push_str(&format!(
                "----- node {id} /v1/cluster -----\n{}\n",
                text.unwrap_or_else(|e| format!("(unavailable: {e})"))
            ));
        }
        out
    }

    /// Keeps the directory after the drop; returns where it is.
    pub fn keep_dir(&mut self) -> PathBuf {
        if let Some(t) = self.temp.take() {
            let _ = t.keep();
        }
        self.dir.clone()
    }
}

impl Node {
    /// The address the node's own config gives itself in `[cluster.members]`.
    fn initial_member_addr(&self) -> String {
        self.config.members[&self.spec.id].clone()
    }
}

/// No proxy; with `pki`, its CA as the only root.
fn client_builder(pki: Option<&ClusterPki>) -> Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder().no_proxy();
    if let Some(pki) = pki {
        let ca = reqwest::Certificate::from_pem(pki.ca.cert_pem().as_bytes())?;
        builder = builder
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca);
    }
    Ok(builder)
}

fn write_config(node: &Node) -> Result<()> {
    std::fs::write(&node.config_path, node.config.to_toml())
        .with_context(|| format!("writing {}", node.config_path.display()))
}

fn parse_digest(text: &str) -> Result<Digest> {
    let v: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("digest: {text}"))?;
    let field = |k: &str| {
        v.get(k)
            .with_context(|| format!("digest lacks {k}: {text}"))
    };
    Ok(Digest {
        node_id: field("node_id")?.as_u64().context("node_id")?,
        applied_index: field("applied_index")?.as_u64().context("applied_index")?,
        digest: field("digest")?.as_str().context("digest")?.to_string(),
    })
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        if failing && self.spec.report_on_panic {
            eprintln!("{}", self.status_dump());
        }
        for node in self.nodes.values_mut() {
            if let Some(p) = node.process.take() {
                p.kill();
            }
        }
        if failing && self.spec.report_on_panic {
            eprintln!("{}", self.all_log_tails(40));
        }
        let keep = match self.spec.keep {
            Keep::Never => false,
            Keep::OnFailure => failing,
            Keep::Always => true,
        };
        if keep && self.temp.is_some() {
            let path = self.keep_dir();
            eprintln!("[harness] kept {}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_parses() {
        let d = parse_digest(r#"{"node_id":2,"applied_index":9,"digest":"ab"}"#).unwrap();
        assert_eq!(
            d,
            Digest {
                node_id: 2,
                applied_index: 9,
                digest: "ab".into()
            }
        );
        assert!(parse_digest(r#"{"node_id":2}"#).is_err());
    }

    fn spec(dir: &Path) -> ClusterSpec {
        let mut s = ClusterSpec::new("/bin/false")
            .set("raft", "snapshot_threshold", 5u64)
            .set("sql", "max_rows", 10usize);
        s.dir = Some(dir.to_path_buf());
        s.record_store = Some("sqlite:///tmp/r.db".into());
        s.secret = "s3cret".into();
        s
    }

    fn parse(path: &Path) -> toml::Value {
        toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn create_writes_one_config_per_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        s.node_mut(2).advertise = Some("127.0.0.1:9002".into());
        s.node_mut(2).source_ip = Some("127.77.0.2".into());
        *s.node_mut(3) = NodeSpec::witness(3).set("raft", "witness_max_log_entries", 7u64);
        let c = ProcessCluster::create(s).unwrap();
        assert_eq!(c.ids(), vec![1, 2, 3]);
        assert_eq!(c.data_ids(), vec![1, 2]);
        assert_eq!(c.witness_ids(), vec![3]);
        assert!(c.live().is_empty());
        let n1 = parse(c.config_path(1));
        assert_eq!(n1["listen"].as_str(), Some(c.addr(1)));
        assert_eq!(n1["record_store"].as_str(), Some("sqlite:///tmp/r.db"));
        assert_eq!(n1["cluster"]["secret"].as_str(), Some("s3cret"));
        assert_eq!(
            n1["cluster"]["members"]["2"].as_str(),
            Some("127.0.0.1:9002")
        );
        assert_eq!(n1["cluster"]["members"]["3"].as_str(), Some(c.addr(3)));
        assert_eq!(n1["raft"]["snapshot_threshold"].as_integer(), Some(5));
        assert!(n1["raft"].get("witness_max_log_entries").is_none());
        let n2 = parse(c.config_path(2));
        assert_eq!(n2["advertise"].as_str(), Some("127.0.0.1:9002"));
        assert_eq!(n2["source_ip"].as_str(), Some("127.77.0.2"));
        assert_eq!(c.member_addr(2), "127.0.0.1:9002");
        let n3 = parse(c.config_path(3));
        assert!(n3.get("record_store").is_none());
        assert_eq!(n3["role"].as_str(), Some("witness"));
        assert_eq!(n3["raft"]["witness_max_log_entries"].as_integer(), Some(7));
        assert_eq!(n3["raft"]["snapshot_threshold"].as_integer(), Some(5));
        assert!(c.data_dir(1).is_dir());
        let addrs: BTreeSet<&str> = [1, 2, 3].iter().map(|i| c.addr(*i)).collect();
        assert_eq!(addrs.len(), 3, "distinct ports");
        assert!(c.log_path(1).ends_with("node1.log"));
    }

    #[test]
    fn a_tls_cluster_gets_a_ca_and_a_certificate_per_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        s.tls = Some(TlsSpec {
            peer_client_auth: true,
        });
        let c = ProcessCluster::create(s).unwrap();
        assert_eq!(c.scheme(), "https");
        assert!(c.url(1).starts_with("https://127.0.0.1:"));
        let ca = c.ca_path().unwrap();
        assert!(std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        for id in c.ids() {
            let tls = &parse(c.config_path(id))["tls"];
            assert_eq!(tls["ca"].as_str(), Some(ca.display().to_string().as_str()));
            assert_eq!(tls["peer_client_auth"].as_bool(), Some(true));
            let key = std::fs::read_to_string(tls["key"].as_str().unwrap()).unwrap();
            assert!(key.contains("PRIVATE KEY"), "node {id}");
            assert!(std::path::Path::new(tls["cert"].as_str().unwrap()).exists());
        }
        assert!(c.issue_certificate("client", &[]).is_ok());
        // A plain cluster has none of it.
        let plain = ProcessCluster::create(ClusterSpec::new("/bin/false")).unwrap();
        assert_eq!(plain.scheme(), "http");
        assert!(plain.ca_path().is_none());
        assert!(parse(plain.config_path(1)).get("tls").is_none());
    }

    #[test]
    fn an_sqlite_store_in_the_cluster_directory() {
        let mut s = ClusterSpec::new("/bin/false");
        s.sqlite_in_dir = Some("records.db".into());
        let c = ProcessCluster::create(s).unwrap();
        let want = format!("sqlite://{}", c.dir().join("records.db").display());
        assert_eq!(
            parse(c.config_path(2))["record_store"].as_str(),
            Some(want.as_str())
        );
        assert!(parse(c.config_path(3)).get("record_store").is_none());
        let dir = c.dir().to_path_buf();
        drop(c);
        assert!(!dir.exists(), "a temp directory is removed on drop");
    }

    #[test]
    fn a_kept_directory_outlives_the_cluster() {
        let mut s = ClusterSpec::new("/bin/false");
        s.keep = Keep::Always;
        let c = ProcessCluster::create(s).unwrap();
        let dir = c.dir().to_path_buf();
        drop(c);
        assert!(dir.join("node1.toml").exists());
        std::fs::remove_dir_all(&dir).unwrap();
        // Keep::OnFailure keeps nothing when no panic unwinds.
        let mut s = ClusterSpec::new("/bin/false");
        s.keep = Keep::OnFailure;
        let c = ProcessCluster::create(s).unwrap();
        let dir = c.dir().to_path_buf();
        drop(c);
        assert!(!dir.exists());
    }

    #[test]
    fn joining_and_moving_nodes_rewrite_configs() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ProcessCluster::create(spec(dir.path())).unwrap();
        let addr = c.add_node(NodeSpec::witness(4)).unwrap();
        let n4 = parse(c.config_path(4));
        assert_eq!(n4["id"].as_integer(), Some(4));
        assert_eq!(n4["listen"].as_str(), Some(addr.as_str()));
        assert_eq!(n4["cluster"]["members"]["4"].as_str(), Some(addr.as_str()));
        assert_eq!(n4["cluster"]["members"]["1"].as_str(), Some(c.addr(1)));
        let w: Vec<i64> = n4["cluster"]["witnesses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_integer().unwrap())
            .collect();
        assert_eq!(w, vec![3, 4]);
        assert!(n4.get("record_store").is_none());
        assert!(c.add_node(NodeSpec::data(4)).is_err(), "ids are unique");

        let old = c.addr(2).to_string();
        let new = c.move_node(2).unwrap();
        assert_ne!(old, new);
        let n2 = parse(c.config_path(2));
        assert_eq!(n2["listen"].as_str(), Some(new.as_str()));
        assert_eq!(n2["cluster"]["members"]["2"].as_str(), Some(new.as_str()));
        // The others' configs are left alone.
        let n1 = parse(c.config_path(1));
        assert_eq!(n1["cluster"]["members"]["2"].as_str(), Some(old.as_str()));

        std::fs::write(c.data_dir(2).join("x"), "x").unwrap();
        c.wipe(2).unwrap();
        assert_eq!(std::fs::read_dir(c.data_dir(2)).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_node_that_exits_at_startup_is_an_error_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        s.nodes.truncate(1);
        let bin = dir.path().join("fake-tally");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&bin, "#!/bin/sh\necho \"no luck with $2\" >&2\nexit 3\n").unwrap();
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        s.bin = bin;
        let err = ProcessCluster::start(s).await.err().expect("fails");
        let text = format!("{err:#}");
        assert!(text.contains("node 1 exited during startup"), "{text}");
        assert!(text.contains("no luck with"), "{text}");
    }
}
