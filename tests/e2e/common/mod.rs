//! Support for the end-to-end tests: a real three-process Tally cluster (two data nodes and
//! a witness) through the process-cluster harness of `tally-testkit`
//! ([`tally_testkit::ProcessCluster`]: it spawns, signals, configures and cleans up), plus
//! small HTTP helpers and an independent model of the aggregates (the oracle: it shares no
//! code with the product).
//!
//! [`Cluster`] is a thin layer over the harness that panics with the nodes' log tails
//! instead of returning errors, so a failing test explains itself. When it is dropped,
//! including while a failing test unwinds, every child is killed by pid and the nodes'
//! `/v1/cluster` and logs are printed. Every wait is bounded in time. Set
//! `TALLY_TEST_KEEP=1` to keep the temporary directory (configs, data, logs).

pub mod joining;
pub mod records;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally_protocol::{NodeStatus, SinkDetail, SinkStatus};
pub use tally_testkit::cluster::TlsSpec;
use tally_testkit::cluster::{ClusterSpec, Keep, ProcessCluster};

pub use tally_testkit::now_ms;

pub const SECRET: &str = "s3cret";
/// The witness of every test cluster.
pub const WITNESS: u64 = 3;
pub const DATA_NODES: [u64; 2] = [1, 2];
pub const ALL_NODES: [u64; 3] = [1, 2, 3];

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// Which test module's clusters may run now, and how many run: the tests of one module
/// (one former test binary) may run side by side, as they always could, but never beside a
/// cluster of another module. Each module was its own test binary, and test binaries ran
/// one after the other; their timing-sensitive checks (no election while the cluster is
/// quiet, a chaos test alone on the two cores) rely on that.
static MODULE_TURN: std::sync::Mutex<(Option<&'static str>, usize)> =
    std::sync::Mutex::new((None, 0));

/// Longest wait for another module's turn: a module that holds it longer is stuck.
const TURN_WAIT: Duration = Duration::from_secs(20 * 60);

/// A module's turn, held by every [`Cluster`] of the module while it lives.
pub struct ModuleTurn;

/// Takes this module's turn before heavy work that precedes its cluster (starting MariaDB),
/// so that work does not overlap another module's timing-sensitive cluster either.
#[track_caller]
pub fn module_turn() -> impl Future<Output = ModuleTurn> {
    ModuleTurn::enter(std::panic::Location::caller().file())
}

impl ModuleTurn {
    /// Waits until no cluster of another module runs. `module` is the test's source file.
    async fn enter(module: &'static str) -> ModuleTurn {
        let mut waited = false;
        let deadline = tokio::time::Instant::now() + TURN_WAIT;
        loop {
            {
                let mut turn = MODULE_TURN.lock().unwrap_or_else(|e| e.into_inner());
                if turn.0.is_none_or(|m| m == module) {
                    *turn = (Some(module), turn.1 + 1);
                    return ModuleTurn;
                }
                if !waited {
                    eprintln!("[harness] {module} waits for {:?} to finish", turn.0);
                    waited = true;
                }
                if tokio::time::Instant::now() > deadline {
                    panic!(
                        "{module} waited {TURN_WAIT:?} for {:?} to finish its clusters",
                        turn.0
                    );
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for ModuleTurn {
    fn drop(&mut self) {
        let mut turn = MODULE_TURN.lock().unwrap_or_else(|e| e.into_inner());
        turn.1 -= 1;
        if turn.1 == 0 {
            turn.0 = None;
        }
    }
}

/// Options that differ between scenarios.
#[derive(Clone, Debug, Default)]
pub struct ClusterOpts {
    pub snapshot_threshold: Option<u64>,
    pub log_keep_behind_snapshot: Option<u64>,
    /// `record_store` URL given to both data nodes (the same store); the witness gets none.
    pub record_store: Option<String>,
    /// `[sink] batch_events`.
    pub sink_batch_events: Option<usize>,
    /// `[sink] max_backlog_events`.
    pub sink_max_backlog_events: Option<usize>,
    /// `[sql] timeout_ms`.
    pub sql_timeout_ms: Option<u64>,
    /// `[sql] max_rows`.
    pub sql_max_rows: Option<usize>,
    /// Environment of every node (e.g. `TALLY_AUTH_TOKENS`).
    pub env: Vec<(String, String)>,
    /// Environment of one node: `(node id, name, value)`.
    pub node_env: Vec<(u64, String, String)>,
    /// A token the test's own HTTP client and the harness's reads present (for clusters
    /// with `[auth]` tokens).
    pub token: Option<String>,
    /// `[analytics] max_keys_per_tenant_bucket`.
    pub max_keys_per_tenant_bucket: Option<u64>,
    /// `[analytics] max_tenants_per_bucket`.
    pub max_tenants_per_bucket: Option<u64>,
    /// `[analytics] max_rows_per_granularity`.
    pub max_rows_per_granularity: Option<u64>,
    /// `[read] max_aggregate_rows`.
    pub max_aggregate_rows: Option<u64>,
    /// `[sql] max_result_bytes`.
    pub sql_max_result_bytes: Option<usize>,
    /// `[sql] max_concurrent`.
    pub sql_max_concurrent: Option<usize>,
    /// `record_store_read`, given to every node as `TALLY_RECORD_STORE_READ` (the witness,
    /// which has no record store, ignores it).
    pub record_store_read: Option<String>,
    /// A TLS cluster (the harness makes the CA and certificates).
    pub tls: Option<TlsSpec>,
    /// `[http]` keys of every node.
    pub http: Vec<(&'static str, u64)>,
}

impl ClusterOpts {
    /// For tests that count every event under its own `resource` (to see each id counted
    /// once): distinct-key caps at their maximum, so no event folds into `__other__`.
    pub fn key_per_event() -> ClusterOpts {
        ClusterOpts {
            max_keys_per_tenant_bucket: Some(100_000),
            // One row per event when they are read back.
            max_aggregate_rows: Some(1_000_000),
            ..ClusterOpts::default()
        }
    }

    /// The harness's description of this scenario's cluster.
    fn spec(&self) -> ClusterSpec {
        let mut spec = ClusterSpec::new(env!("CARGO_BIN_EXE_tally"));
        spec.temp_prefix = "tally-e2e-".into();
        spec.secret = SECRET.into();
        spec.record_store = self.record_store.clone();
        spec.log_filter = Some("info,openraft=warn".into());
        spec.env.push(("RUST_BACKTRACE".into(), "1".into()));
        spec.env.extend(self.env.iter().cloned());
        for (id, key, value) in &self.node_env {
            spec.node_mut(*id).env.push((key.clone(), value.clone()));
        }
        spec.read_token = self.token.clone();
        spec.report_on_panic = true;
        spec.startup_timeout = STARTUP_TIMEOUT;
        spec.keep = if std::env::var_os("TALLY_TEST_KEEP").is_some() {
            Keep::Always
        } else {
            Keep::Never
        };
        let keys = [
            ("raft", "snapshot_threshold", self.snapshot_threshold),
            (
                "raft",
                "log_keep_behind_snapshot",
                self.log_keep_behind_snapshot,
            ),
            (
                "sink",
                "batch_events",
                self.sink_batch_events.map(|n| n as u64),
            ),
            (
                "sink",
                "max_backlog_events",
                self.sink_max_backlog_events.map(|n| n as u64),
            ),
            ("sql", "timeout_ms", self.sql_timeout_ms),
            ("sql", "max_rows", self.sql_max_rows.map(|n| n as u64)),
            (
                "analytics",
                "max_keys_per_tenant_bucket",
                self.max_keys_per_tenant_bucket,
            ),
            (
                "analytics",
                "max_tenants_per_bucket",
                self.max_tenants_per_bucket,
            ),
            (
                "analytics",
                "max_rows_per_granularity",
                self.max_rows_per_granularity,
            ),
            ("read", "max_aggregate_rows", self.max_aggregate_rows),
            (
                "sql",
                "max_result_bytes",
                self.sql_max_result_bytes.map(|n| n as u64),
            ),
            (
                "sql",
                "max_concurrent",
                self.sql_max_concurrent.map(|n| n as u64),
            ),
        ];
        if let Some(url) = &self.record_store_read {
            spec.env
                .push(("TALLY_RECORD_STORE_READ".into(), url.clone()));
        }
        for (table, key, value) in keys {
            if let Some(v) = value {
                spec = spec.set(table, key, v);
            }
        }
        for (key, value) in &self.http {
            spec = spec.set("http", key, *value);
        }
        spec.tls = self.tls.clone();
        spec
    }
}

/// A running (or partly running) test cluster. Dropping it kills every child.
pub struct Cluster {
    harness: ProcessCluster,
    /// Follows no redirects (so `?redirect` answers can be inspected).
    pub http: reqwest::Client,
    api: Api,
    /// Released last: after the harness has killed every node.
    _turn: ModuleTurn,
}

/// How a batch is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json`, an array of objects.
    Array,
    /// `application/json`, one bare object (the batch must hold exactly one event).
    Object,
    /// `application/x-ndjson`, one object per line.
    Ndjson,
}

/// HTTP access to the cluster's nodes; cheap to clone into concurrent tasks.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    urls: BTreeMap<u64, String>,
}

impl Api {
    pub fn url(&self, id: u64) -> &str {
        &self.urls[&id]
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<Resp, reqwest::Error> {
        let resp = req.send().await?;
        let header = |name: reqwest::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = resp.status().as_u16();
        let retry_after = header(reqwest::header::RETRY_AFTER);
        let location = header(reqwest::header::LOCATION);
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Resp {
            status,
            retry_after,
            location,
            body,
        })
    }

    pub async fn get(&self, id: u64, path: &str) -> Result<Resp, reqwest::Error> {
        self.send(self.http.get(format!("{}{path}", self.url(id))))
            .await
    }

    pub async fn post_raw(
        &self,
        id: u64,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Resp, reqwest::Error> {
        let mut req = self.http.post(format!("{}{path}", self.url(id))).body(body);
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if path.starts_with("/v1/cluster/") {
            // Cluster operations need the cluster secret.
            req = req.header("x-tally-secret", SECRET);
        }
        self.send(req).await
    }

    /// `POST /v1/sql` on node `id` with the JSON `body`.
    pub async fn sql(&self, id: u64, body: &Value) -> Result<Resp, reqwest::Error> {
        self.post_raw(
            id,
            "/v1/sql",
            Some("application/json"),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    /// Posts `events` to node `id`'s `/v1/events`, framed as `format`.
    pub async fn post_events(
        &self,
        id: u64,
        format: Format,
        events: &[Value],
    ) -> Result<Resp, reqwest::Error> {
        self.post_events_to(id, "/v1/events", format, events).await
    }

    /// Like [`Api::post_events`] with another path (e.g. `/v1/events?redirect`).
    pub async fn post_events_to(
        &self,
        id: u64,
        path: &str,
        format: Format,
        events: &[Value],
    ) -> Result<Resp, reqwest::Error> {
        let (ct, body) = encode_batch(format, events);
        self.post_raw(id, path, Some(ct), body).await
    }
}

/// Content type and body of `events` framed as `format`.
pub fn encode_batch(format: Format, events: &[Value]) -> (&'static str, Vec<u8>) {
    match format {
        Format::Array => (
            "application/json",
            serde_json::to_vec(&Value::Array(events.to_vec())).unwrap(),
        ),
        Format::Object => {
            assert_eq!(events.len(), 1, "Format::Object needs exactly one event");
            ("application/json", serde_json::to_vec(&events[0]).unwrap())
        }
        Format::Ndjson => ("application/x-ndjson", ndjson(events)),
    }
}

/// An HTTP answer with the parts the tests look at.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    /// The JSON body, or the raw text as a JSON string when it is not JSON.
    pub body: Value,
}

impl Resp {
    /// `error.code` of a JSON error body.
    pub fn error_code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    pub fn details(&self) -> Vec<Value> {
        self.body["error"]["details"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Free loopback ports (the harness's picker), for addresses nobody listens on.
pub fn free_ports(n: usize) -> Vec<u16> {
    tally_testkit::cluster::free_ports(n).expect("free loopback ports")
}

/// The sink's details (the part only a node with a record store has).
pub fn sink_detail(sink: &SinkStatus) -> &SinkDetail {
    sink.detail
        .as_ref()
        .unwrap_or_else(|| panic!("the sink has no record store: {sink:?}"))
}

impl Cluster {
    /// Writes the configs and starts all three processes (not yet formed into a cluster),
    /// once no cluster of another test module (`module`: its source file) runs.
    async fn start_for(module: &'static str, opts: ClusterOpts) -> Cluster {
        let turn = ModuleTurn::enter(module).await;
        let harness = ProcessCluster::start(opts.spec())
            .await
            .unwrap_or_else(|e| panic!("starting the cluster: {e:#}"));
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &opts.token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        let http = harness
            .client_builder()
            .unwrap()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let api = Api {
            http: http.clone(),
            urls: harness
                .ids()
                .into_iter()
                .map(|id| (id, harness.url(id)))
                .collect(),
        };
        Cluster {
            harness,
            http,
            api,
            _turn: turn,
        }
    }

    /// Starts the cluster, forms it, and waits for a data-node leader. Returns the leader.
    #[track_caller]
    pub fn start_formed(opts: ClusterOpts) -> impl Future<Output = (Cluster, u64)> {
        let module = std::panic::Location::caller().file();
        async move {
            let cluster = Cluster::start_for(module, opts).await;
            cluster.init().await;
            let leader = cluster.wait_leader().await;
            (cluster, leader)
        }
    }

    pub fn addr(&self, id: u64) -> &str {
        self.harness.addr(id)
    }

    /// The harness underneath (pids, the TLS cluster's CA, client builders).
    pub fn harness(&self) -> &ProcessCluster {
        &self.harness
    }

    pub fn url(&self, id: u64) -> String {
        self.harness.url(id)
    }

    pub fn data_dir(&self, id: u64) -> &Path {
        self.harness.data_dir(id)
    }

    /// The process id of node `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.harness.pid(id)
    }

    /// Reaps node `id` if it has exited on its own; its exit status.
    pub fn try_reap(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        self.harness
            .try_reap(id)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.harness.is_running(id)
    }

    pub fn live_data_nodes(&self) -> Vec<u64> {
        DATA_NODES
            .into_iter()
            .filter(|&id| self.is_running(id))
            .collect()
    }

    /// `POST /v1/cluster/init` on node 1 (idempotent), retried briefly.
    pub async fn init(&self) {
        self.harness
            .init()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// SIGKILLs node `id` (a child of this harness) and reaps it.
    pub fn kill(&mut self, id: u64) {
        assert!(self.is_running(id), "node {id} is not running");
        self.harness.kill(id).unwrap();
        eprintln!("[harness] killed node {id} (SIGKILL)");
    }

    /// Freezes node `id` (SIGSTOP to the child this harness started): it keeps its sockets
    /// and state but does nothing until [`Cluster::resume`]. Do not query it meanwhile (its
    /// HTTP answers wait for the resume).
    pub fn pause(&self, id: u64) {
        self.harness.pause(id).unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("[harness] paused node {id} (SIGSTOP)");
    }

    /// Lets a paused node run again (SIGCONT).
    pub fn resume(&self, id: u64) {
        self.harness.resume(id).unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("[harness] resumed node {id} (SIGCONT)");
    }

    /// Restarts a killed node with the same config and data directory.
    pub async fn restart(&mut self, id: u64) {
        self.harness
            .restart(id)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("[harness] restarted node {id}");
    }

    // ---- HTTP -----------------------------------------------------------------------------

    /// A cloneable HTTP client for this cluster (for concurrent tasks).
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    pub async fn get(&self, id: u64, path: &str) -> Result<Resp, reqwest::Error> {
        self.api.get(id, path).await
    }

    pub async fn post_raw(
        &self,
        id: u64,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Resp, reqwest::Error> {
        self.api.post_raw(id, path, content_type, body).await
    }

    /// Posts `body` (an object or an array) as `application/json` to `/v1/events`.
    pub async fn post_json(&self, id: u64, body: &Value) -> Result<Resp, reqwest::Error> {
        self.api
            .post_raw(
                id,
                "/v1/events",
                Some("application/json"),
                serde_json::to_vec(body).unwrap(),
            )
            .await
    }

    /// Posts `events` as NDJSON to `/v1/events`.
    pub async fn post_ndjson(&self, id: u64, events: &[Value]) -> Result<Resp, reqwest::Error> {
        self.api.post_events(id, Format::Ndjson, events).await
    }

    /// GET that must answer 200 with JSON.
    pub async fn get_ok(&self, id: u64, path: &str) -> Value {
        let r = self
            .get(id, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} on node {id}: {e}"));
        assert_eq!(r.status, 200, "GET {path} on node {id}: {r:?}");
        r.body
    }

    /// `GET /v1/cluster` of node `id`, typed.
    pub async fn status(&self, id: u64) -> Result<NodeStatus, String> {
        self.harness.status(id).await.map_err(|e| format!("{e:#}"))
    }

    /// The `rows` of `GET /v1/aggregates?{query}` on node `id`.
    pub async fn aggregate_rows(&self, id: u64, query: &str) -> (u64, Vec<Value>) {
        let body = self.get_ok(id, &format!("/v1/aggregates?{query}")).await;
        let index = body["applied_index"].as_u64().expect("applied_index");
        (index, body["rows"].as_array().expect("rows").clone())
    }

    /// `POST /v1/sql` on node `id` with the JSON `body`.
    pub async fn sql(&self, id: u64, body: &Value) -> Result<Resp, reqwest::Error> {
        self.api.sql(id, body).await
    }

    /// The sink section of node `id`'s `/v1/cluster`.
    pub async fn sink_status(&self, id: u64) -> Result<SinkStatus, String> {
        self.status(id).await.map(|s| s.sink)
    }

    /// Waits (bounded by `within`) until the leader's sink has written everything: the
    /// replicated sink queue is empty on every live data node and the leader's watermark is
    /// at least `min_index`. Returns the leader's sink section.
    ///
    /// (The record store's own cursor, `store_cursor` / `sink_state.applied_index`, may stay
    /// behind `min_index`: it moves only when there are new events to write, and entries
    /// whose events were all duplicates add none.)
    pub async fn wait_sink_caught_up(&self, min_index: u64, within: Duration) -> SinkStatus {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.sink_caught_up_once(min_index).await {
                Ok(sink) => return sink,
                Err(why) => why,
            };
            assert!(
                Instant::now() < deadline,
                "the record-store sink did not catch up to index {min_index} within {within:?}: \
                 {last}\n{}",
                self.all_log_tails(30)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn sink_caught_up_once(&self, min_index: u64) -> Result<SinkStatus, String> {
        let leader = self.agreed_leader().await?;
        let sink = self.sink_status(leader).await?;
        let active = sink.detail.as_ref().is_some_and(|d| d.active);
        if !sink.enabled || !active {
            return Err(format!("leader {leader}: sink not active: {sink:?}"));
        }
        let watermark = sink.detail.as_ref().map_or(0, |d| d.watermark);
        if sink.pending_events != 0 || watermark < min_index {
            return Err(format!("leader {leader}: {sink:?}"));
        }
        for id in self.live_data_nodes() {
            let s = self.sink_status(id).await?;
            if s.pending_events != 0 {
                return Err(format!("node {id}: sink queue not yet trimmed: {s:?}"));
            }
        }
        Ok(sink)
    }

    // ---- Waiting for the cluster ------------------------------------------------------------

    /// Waits until every live node names the same leader, and that leader is a live data
    /// node that reports itself leader. Returns its id.
    pub async fn wait_leader(&self) -> u64 {
        self.harness
            .wait_leader(LEADER_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    async fn agreed_leader(&self) -> Result<u64, String> {
        self.harness
            .agreed_leader()
            .await
            .map_err(|e| format!("{e:#}"))
    }

    /// Waits until every live node answers `/readyz` with 200 (leader known, caught up).
    pub async fn wait_ready(&self) {
        self.harness
            .wait_ready(CONVERGE_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Waits until every live data node has applied the same index, at least the leader's
    /// committed index, and no write is in flight. Returns that index.
    pub async fn wait_converged(&self) -> u64 {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        loop {
            let last = match self.converged_once().await {
                Ok(i) => return i,
                Err(why) => why,
            };
            assert!(
                Instant::now() < deadline,
                "data nodes did not converge within {CONVERGE_TIMEOUT:?}: {last}\n{}",
                self.all_log_tails(30)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn converged_once(&self) -> Result<u64, String> {
        let leader = self.agreed_leader().await?;
        let ls = self.status(leader).await?;
        let committed = ls.committed_index.unwrap_or(0);
        let last_log = ls.last_log_index.unwrap_or(0);
        if committed != last_log {
            return Err(format!(
                "leader {leader}: committed {committed} < last log {last_log}"
            ));
        }
        let mut applied = BTreeMap::new();
        for id in self.live_data_nodes() {
            let s = self.status(id).await?;
            applied.insert(id, s.applied_index);
        }
        let distinct: BTreeSet<u64> = applied.values().copied().collect();
        match distinct.into_iter().collect::<Vec<_>>().as_slice() {
            [i] if *i >= committed => Ok(*i),
            _ => Err(format!(
                "applied {applied:?}, leader {leader} committed {committed}"
            )),
        }
    }

    /// Waits for convergence, then checks that every live data node reports the same digest
    /// at the same applied index. Returns `(applied_index, digest)`.
    pub async fn assert_same_state(&self) -> (u64, String) {
        for _ in 0..20 {
            let index = self.wait_converged().await;
            let mut seen = BTreeMap::new();
            for id in self.live_data_nodes() {
                let d = self.get_ok(id, "/v1/state/digest").await;
                assert_eq!(d["node_id"].as_u64(), Some(id), "digest answered by {d}");
                seen.insert(
                    id,
                    (
                        d["applied_index"].as_u64().unwrap(),
                        d["digest"].as_str().unwrap().to_string(),
                    ),
                );
            }
            let indexes: BTreeSet<u64> = seen.values().map(|(i, _)| *i).collect();
            if indexes.len() != 1 || !indexes.contains(&index) {
                // Something was applied in between (e.g. a blank entry of a new term).
                tokio::time::sleep(POLL).await;
                continue;
            }
            let digests: BTreeSet<&String> = seen.values().map(|(_, d)| d).collect();
            assert_eq!(
                digests.len(),
                1,
                "data nodes differ at the same applied index {index}: {seen:?}"
            );
            return (index, digests.into_iter().next().unwrap().clone());
        }
        panic!("applied index kept moving; cannot compare digests");
    }

    // ---- Logs -----------------------------------------------------------------------------

    pub fn log_text(&self, id: u64) -> String {
        self.harness.log_text(id)
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        self.harness.log_tail(id, lines)
    }

    pub fn all_log_tails(&self, lines: usize) -> String {
        self.harness.all_log_tails(lines)
    }
}

// ---- Events and the model ---------------------------------------------------------------------

pub fn ndjson(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend(serde_json::to_vec(e).unwrap());
        out.push(b'\n');
    }
    out
}

/// RFC 3339 text for epoch `ms`, in UTC (`Z`) or with a whole-hour offset (`+HH:00`).
pub fn rfc3339(ms: i64, offset_hours: i64) -> String {
    let local = ms + offset_hours * 3_600_000;
    let days = local.div_euclid(86_400_000);
    let rem = local.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    let zone = if offset_hours == 0 {
        "Z".to_string()
    } else {
        format!(
            "{}{:02}:00",
            if offset_hours < 0 { '-' } else { '+' },
            offset_hours.abs()
        )
    };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}{zone}")
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub const DAY_MS: i64 = 86_400_000;
pub const HOUR_MS: i64 = 3_600_000;

/// The measures (docs/api.md), computed by the test from the events it sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Measures {
    pub requests: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    pub faults: u64,
    pub throttled: u64,
    pub latency_count: u64,
    pub latency_sum_ms: u64,
    pub latency_min_ms: Option<u64>,
    pub latency_max_ms: Option<u64>,
    pub bytes_sum: u64,
}

impl Measures {
    /// Counts one event given as the JSON the test posted.
    pub fn add(&mut self, e: &Value) {
        match e["kind"].as_str().unwrap_or("request") {
            "request" => {
                self.requests += 1;
                match e["response_code"].as_u64() {
                    Some(400..=499) => self.errors_4xx += 1,
                    Some(500..=599) => self.errors_5xx += 1,
                    _ => {}
                }
            }
            "fault" => self.faults += 1,
            "throttle" => self.throttled += 1,
            other => panic!("model: unknown kind {other}"),
        }
        if let Some(l) = e["response_time_ms"].as_u64() {
            self.latency_count += 1;
            self.latency_sum_ms += l;
            self.latency_min_ms = Some(self.latency_min_ms.map_or(l, |m| m.min(l)));
            self.latency_max_ms = Some(self.latency_max_ms.map_or(l, |m| m.max(l)));
        }
        if let Some(b) = e["response_size"].as_u64() {
            self.bytes_sum += b;
        }
    }

    /// Reads the measures of an aggregate row.
    pub fn from_row(row: &Value) -> Measures {
        let n = |k: &str| {
            row[k]
                .as_u64()
                .unwrap_or_else(|| panic!("row lacks {k}: {row}"))
        };
        Measures {
            requests: n("requests"),
            errors_4xx: n("errors_4xx"),
            errors_5xx: n("errors_5xx"),
            faults: n("faults"),
            throttled: n("throttled"),
            latency_count: n("latency_count"),
            latency_sum_ms: n("latency_sum_ms"),
            latency_min_ms: row["latency_min_ms"].as_u64(),
            latency_max_ms: row["latency_max_ms"].as_u64(),
            bytes_sum: n("bytes_sum"),
        }
    }
}

/// Turns aggregate rows into `(bucket_ms, [group column values]) → measures`.
pub fn rows_to_map(rows: &[Value], group_by: &[&str]) -> BTreeMap<(i64, Vec<String>), Measures> {
    let mut out = BTreeMap::new();
    for row in rows {
        let bucket = row["bucket_ms"].as_i64().expect("bucket_ms");
        let key: Vec<String> = group_by
            .iter()
            .map(|c| {
                row[*c]
                    .as_str()
                    .unwrap_or_else(|| panic!("row lacks {c}: {row}"))
                    .to_string()
            })
            .collect();
        let prev = out.insert((bucket, key.clone()), Measures::from_row(row));
        assert!(prev.is_none(), "two rows for {bucket} {key:?}");
    }
    out
}

/// Event time of an event the test built (integer ms or RFC 3339).
pub fn event_ts_ms(e: &Value) -> i64 {
    match &e["timestamp"] {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => parse_rfc3339_ms(s),
        other => panic!("bad timestamp {other}"),
    }
}

/// Parses exactly what [`rfc3339`] writes.
fn parse_rfc3339_ms(s: &str) -> i64 {
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, mo, d) = (num(0..4), num(5..7), num(8..10));
    let (h, mi, sec, ms) = (num(11..13), num(14..16), num(17..19), num(20..23));
    let offset_h = match &s[23..] {
        "Z" => 0,
        z => {
            let v = num(24..26);
            if z.starts_with('-') {
                -v
            } else {
                v
            }
        }
    };
    let days = days_from_civil(y, mo, d);
    days * DAY_MS + h * HOUR_MS + mi * 60_000 + sec * 1000 + ms - offset_h * HOUR_MS
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A simple valid request event.
pub fn simple_event(id: &str, ts_ms: i64, api: &str, resource: &str) -> Value {
    json!({
        "event_id": id,
        "timestamp": ts_ms,
        "api_name": api,
        "api_version": "v1",
        "resource": resource,
        "method": "GET",
        "response_code": 200,
        "response_time_ms": 7,
        "response_size": 100,
    })
}

/// Aggregates computed by the test: `(bucket_ms, [group values]) → measures`.
pub type Model = BTreeMap<(i64, Vec<String>), Measures>;

/// Buckets `events` (distinct, as posted) by event time floored to `width_ms` (UTC) and
/// groups them by `group_by` columns (a missing optional column is `""`).
pub fn model<'a>(
    events: impl IntoIterator<Item = &'a Value>,
    width_ms: i64,
    group_by: &[&str],
) -> Model {
    let mut out = Model::new();
    for e in events {
        let bucket = event_ts_ms(e).div_euclid(width_ms) * width_ms;
        let key = group_by
            .iter()
            .map(|c| e[*c].as_str().unwrap_or("").to_string())
            .collect();
        out.entry((bucket, key)).or_default().add(e);
    }
    out
}

/// Width of a granularity name.
pub fn width_ms(granularity: &str) -> i64 {
    match granularity {
        "minute" => 60_000,
        "hour" => HOUR_MS,
        "day" => DAY_MS,
        other => panic!("granularity {other}"),
    }
}

/// Asserts that node `id` answers `granularity` × `group_by` exactly as the model of
/// `events` says. Returns the applied index of the answer.
pub async fn assert_aggregates_match(
    cluster: &Cluster,
    id: u64,
    granularity: &str,
    group_by: &[&str],
    events: &[&Value],
) -> u64 {
    let query = format!("granularity={granularity}&group_by={}", group_by.join(","));
    let (index, rows) = cluster.aggregate_rows(id, &query).await;
    let got = rows_to_map(&rows, group_by);
    let want = model(events.iter().copied(), width_ms(granularity), group_by);
    if got != want {
        let mut diffs = Vec::new();
        for key in got.keys().chain(want.keys()).collect::<BTreeSet<_>>() {
            if got.get(key) != want.get(key) {
                diffs.push(format!(
                    "  {key:?}: node {:?}, model {:?}",
                    got.get(key),
                    want.get(key)
                ));
            }
        }
        panic!(
            "node {id}: aggregates {query} differ from the model in {} of {} rows:\n{}",
            diffs.len(),
            got.len().max(want.len()),
            diffs.into_iter().take(20).collect::<Vec<_>>().join("\n")
        );
    }
    index
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_roundtrips() {
        for ms in [0, 1_700_000_000_123, 951_782_400_000, 4_102_444_799_999] {
            for off in [-5, 0, 2] {
                assert_eq!(super::parse_rfc3339_ms(&super::rfc3339(ms, off)), ms);
            }
        }
        assert_eq!(super::rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_700_000_000_123, 0),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
