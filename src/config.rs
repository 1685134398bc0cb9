//! Node configuration: the TOML file documented in docs/architecture.md#configuration,
//! overridden by flags and `TALLY_*` variables.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;

use tally_api::auth::{AuthConfig, Role as AccessRole, Token};
use tally_api::server::{HttpLimits, TlsFiles, TlsServer};
use tally_api::SqlLimits;
use tally_raft::{BatcherConfig, NodeOptions, RaftTiming, Role, SinkConfig};

/// Largest `ingest.max_body_bytes` a node accepts: a posted body becomes one Raft entry.
pub const MAX_INGEST_BODY_BYTES: usize = 64 << 20;

/// Largest `ingest.max_bytes_in_flight` (it counts in a 32-bit semaphore).
pub const MAX_INGEST_BYTES_IN_FLIGHT: usize = (4 << 30) - 1;
/// Bounds of `sql.max_result_bytes`: an answer is built in memory before it is sent.
pub const SQL_RESULT_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=1 << 30;
/// Bounds of `sql.max_concurrent`: each running query holds a database connection.
pub const SQL_MAX_CONCURRENT_RANGE: std::ops::RangeInclusive<usize> = 1..=64;

/// The configuration file, as written by an operator. Unknown keys are an error: a typo
/// must not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub id: Option<u64>,
    pub role: Option<String>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub source_ip: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub record_store: Option<String>,
    pub record_store_read: Option<String>,
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub raft: RaftSection,
    #[serde(default)]
    pub ingest: IngestSection,
    #[serde(default)]
    pub sink: SinkSection,
    #[serde(default)]
    pub sql: SqlSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub analytics: AnalyticsSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub read: ReadSection,
    pub tls: Option<TlsSection>,
}

/// `[read]`: bounds on the analytic reads served from memory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadSection {
    pub max_aggregate_rows: Option<usize>,
}

/// Bounds of `read.max_aggregate_rows`: an answer is collected in memory before it is sent.
pub const AGGREGATE_ROWS_RANGE: std::ops::RangeInclusive<usize> = 1..=1_000_000;

/// `[http]`: bounds on the connections clients (and peers) hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub max_connections: Option<usize>,
    pub header_read_timeout_ms: Option<u64>,
    pub body_read_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_requests_in_flight: Option<usize>,
}

/// `[tls]`: serve HTTPS only, and reach peers over HTTPS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub peer_client_auth: Option<bool>,
}

/// `[auth]`: who may use the public API (docs/security.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    pub allow_anonymous: Option<bool>,
}

/// One `[auth] tokens` entry: `{ name = "gw", sha256 = "…", roles = ["ingest"], tenant = "acme.com" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub sha256: String,
    pub roles: Vec<String>,
    pub tenant: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSection {
    pub max_keys_per_tenant_bucket: Option<u32>,
    pub max_tenants_per_bucket: Option<u32>,
    pub max_rows_per_granularity: Option<u32>,
}

/// Largest value of either key cap: beyond it the cap no longer bounds memory usefully.
pub const MAX_KEY_CAP: u32 = 100_000;
/// Bounds of `analytics.max_rows_per_granularity`: 50 million rows per granularity is
/// ≈ 80 GiB of aggregates, beyond any node this runs on.
pub const ROW_BUDGET_RANGE: std::ops::RangeInclusive<u32> = 1..=50_000_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    pub batch_events: Option<usize>,
    pub max_backlog_events: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSection {
    pub timeout_ms: Option<u64>,
    pub max_rows: Option<usize>,
    pub max_result_bytes: Option<usize>,
    pub max_concurrent: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub secret: Option<String>,
    pub witnesses: Option<Vec<u64>>,
    /// TOML keys are strings: `1 = "127.0.0.1:7101"`.
    pub members: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    pub heartbeat_ms: Option<u64>,
    pub election_min_ms: Option<u64>,
    pub election_max_ms: Option<u64>,
    pub snapshot_threshold: Option<u64>,
    pub log_keep_behind_snapshot: Option<u64>,
    pub witness_max_log_entries: Option<u64>,
    pub witness_max_log_bytes: Option<u64>,
    pub snapshot_chunk_bytes: Option<usize>,
    pub max_clock_skew_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    pub max_body_bytes: Option<usize>,
    pub queue_requests: Option<usize>,
    pub max_bytes_in_flight: Option<usize>,
}

/// Flags for `tally serve`; each also reads a `TALLY_*` environment variable.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file (docs/architecture.md#configuration).
    #[arg(long, short = 'c', env = "TALLY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Node id (u64, unique in the cluster).
    #[arg(long, env = "TALLY_ID")]
    pub id: Option<u64>,
    /// "data" or "witness".
    #[arg(long, env = "TALLY_ROLE")]
    pub role: Option<String>,
    /// HTTP listen address (public API and /raft RPC), host:port.
    #[arg(long, env = "TALLY_LISTEN")]
    pub listen: Option<String>,
    /// Address peers reach this node at (its cluster.members entry) when that is not the
    /// listen address, e.g. behind a TCP proxy or NAT. Default: the listen address.
    #[arg(long, env = "TALLY_ADVERTISE")]
    pub advertise: Option<String>,
    /// Local IP that connections to peers (Raft RPC, forwarded requests) are made from.
    /// Default: chosen by the operating system.
    #[arg(long, env = "TALLY_SOURCE_IP")]
    pub source_ip: Option<String>,
    /// Directory for the Raft log and snapshots.
    #[arg(long, env = "TALLY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Record store URL (mysql://… or sqlite://…); a witness ignores it.
    #[arg(long, env = "TALLY_RECORD_STORE")]
    pub record_store: Option<String>,
    /// URL /v1/sql reads the MySQL/MariaDB record store with: the same database, as a user
    /// with SELECT rights only. Default: the record_store URL (read-only transactions).
    #[arg(long, env = "TALLY_RECORD_STORE_READ")]
    pub record_store_read: Option<String>,
    /// Cluster secret that authenticates /raft RPC.
    #[arg(long, env = "TALLY_CLUSTER_SECRET")]
    pub secret: Option<String>,
    /// Witness ids, comma-separated.
    #[arg(long, env = "TALLY_CLUSTER_WITNESSES", value_delimiter = ',')]
    pub witnesses: Option<Vec<u64>>,
    /// Members as id=host:port, comma-separated.
    #[arg(long, env = "TALLY_CLUSTER_MEMBERS", value_delimiter = ',')]
    pub members: Option<Vec<String>>,
    /// Raft heartbeat interval in ms.
    #[arg(long, env = "TALLY_RAFT_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Lower bound of the election timeout in ms (a witness uses half of it, as its leader
    /// lease only: it never campaigns on its own timer).
    #[arg(long, env = "TALLY_RAFT_ELECTION_MIN_MS")]
    pub election_min_ms: Option<u64>,
    /// Upper bound of the election timeout in ms (a witness uses half of it, as its leader
    /// lease only).
    #[arg(long, env = "TALLY_RAFT_ELECTION_MAX_MS")]
    pub election_max_ms: Option<u64>,
    /// Build a snapshot after this many log entries.
    #[arg(long, env = "TALLY_RAFT_SNAPSHOT_THRESHOLD")]
    pub snapshot_threshold: Option<u64>,
    /// Log entries kept behind the newest snapshot.
    #[arg(long, env = "TALLY_RAFT_LOG_KEEP_BEHIND_SNAPSHOT")]
    pub log_keep_behind_snapshot: Option<u64>,
    /// Log entries a witness keeps beyond what every data node holds in a snapshot.
    #[arg(long, env = "TALLY_RAFT_WITNESS_MAX_LOG_ENTRIES")]
    pub witness_max_log_entries: Option<u64>,
    /// Bytes of log entries a witness keeps beyond what every data node holds in a
    /// snapshot (at least 1 MiB); whichever bound is reached first applies.
    #[arg(long, env = "TALLY_RAFT_WITNESS_MAX_LOG_BYTES")]
    pub witness_max_log_bytes: Option<u64>,
    /// Bytes of snapshot per request when this node sends one (4 KiB to 64 MiB).
    #[arg(long, env = "TALLY_RAFT_SNAPSHOT_CHUNK_BYTES")]
    pub snapshot_chunk_bytes: Option<usize>,
    /// Most the leader's ingest time may differ from its voters' majority clock, in ms
    /// (100 to 600000).
    #[arg(long, env = "TALLY_RAFT_MAX_CLOCK_SKEW_MS")]
    pub max_clock_skew_ms: Option<u64>,
    /// Largest POST /v1/events body in bytes (1024 to 64 MiB).
    #[arg(long, env = "TALLY_INGEST_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Ingest requests that may queue for the leader's batcher before 503s.
    #[arg(long, env = "TALLY_INGEST_QUEUE_REQUESTS")]
    pub queue_requests: Option<usize>,
    /// Events per record-store transaction.
    #[arg(long, env = "TALLY_SINK_BATCH_EVENTS")]
    pub sink_batch_events: Option<usize>,
    /// Events waiting for the record store beyond which ingest answers 503.
    #[arg(long, env = "TALLY_SINK_MAX_BACKLOG_EVENTS")]
    pub sink_max_backlog_events: Option<usize>,
    /// Statement timeout of /v1/sql queries in ms.
    #[arg(long, env = "TALLY_SQL_TIMEOUT_MS")]
    pub sql_timeout_ms: Option<u64>,
    /// Most rows a /v1/sql answer carries (more are cut, and the answer says so).
    #[arg(long, env = "TALLY_SQL_MAX_ROWS")]
    pub sql_max_rows: Option<usize>,
    /// Access tokens, each NAME:SHA256:ROLE[+ROLE…][:TENANT] (comma-separated in the
    /// variable); replaces the file's [auth] tokens.
    #[arg(
        long = "auth-token",
        env = "TALLY_AUTH_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub auth_tokens: Option<Vec<String>>,
    /// Serve requests without a token with every role (true/false).
    #[arg(long, env = "TALLY_AUTH_ALLOW_ANONYMOUS")]
    pub allow_anonymous: Option<bool>,
    /// Distinct keys a tenant may hold in one aggregate bucket; further keys fold into
    /// the tenant's "__other__" key. Stamped into the entries this node proposes as leader.
    #[arg(long, env = "TALLY_ANALYTICS_MAX_KEYS_PER_TENANT_BUCKET")]
    pub analytics_max_keys_per_tenant_bucket: Option<u32>,
    /// Distinct tenants one aggregate bucket may hold; further tenants fold into the
    /// all-"__other__" key. Stamped into the entries this node proposes as leader.
    #[arg(long, env = "TALLY_ANALYTICS_MAX_TENANTS_PER_BUCKET")]
    pub analytics_max_tenants_per_bucket: Option<u32>,
    /// Aggregate rows (bucket × key) one granularity may hold (1 to 50,000,000); past it,
    /// new keys fold into their bucket's all-"__other__" key. Stamped into the entries this
    /// node proposes as leader.
    #[arg(long, env = "TALLY_ANALYTICS_MAX_ROWS_PER_GRANULARITY")]
    pub analytics_max_rows_per_granularity: Option<u32>,
    /// Most rows a GET /v1/aggregates answer may hold (1 to 1,000,000); a query that would
    /// give more is refused with 400 too_many_rows.
    #[arg(long, env = "TALLY_READ_MAX_AGGREGATE_ROWS")]
    pub read_max_aggregate_rows: Option<usize>,
    /// Most bytes of encoded rows a /v1/sql answer carries (1 KiB to 1 GiB; more are cut,
    /// and the answer says so).
    #[arg(long, env = "TALLY_SQL_MAX_RESULT_BYTES")]
    pub sql_max_result_bytes: Option<usize>,
    /// /v1/sql queries running at once on this node (1 to 64); more get 503 at once.
    #[arg(long, env = "TALLY_SQL_MAX_CONCURRENT")]
    pub sql_max_concurrent: Option<usize>,
    /// Most open HTTP connections (clients and peers); at the limit the oldest idle one
    /// gives way.
    #[arg(long, env = "TALLY_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Time a connection has to send a complete request head, in ms.
    #[arg(long, env = "TALLY_HTTP_HEADER_READ_TIMEOUT_MS")]
    pub http_header_read_timeout_ms: Option<u64>,
    /// Time a request body has to arrive, in ms (408 after it).
    #[arg(long, env = "TALLY_HTTP_BODY_READ_TIMEOUT_MS")]
    pub http_body_read_timeout_ms: Option<u64>,
    /// Time a keep-alive connection may stay idle, in ms.
    #[arg(long, env = "TALLY_HTTP_IDLE_TIMEOUT_MS")]
    pub http_idle_timeout_ms: Option<u64>,
    /// Requests served at once, Raft RPC and health probes not counted (below
    /// http.max_connections); more get 503 at once.
    #[arg(long, env = "TALLY_HTTP_MAX_REQUESTS_IN_FLIGHT")]
    pub http_max_requests_in_flight: Option<usize>,
    /// Bytes of ingest bodies read but not yet answered (at least ingest.max_body_bytes);
    /// beyond them, 503 at once.
    #[arg(long, env = "TALLY_INGEST_MAX_BYTES_IN_FLIGHT")]
    pub ingest_max_bytes_in_flight: Option<usize>,
    /// This node's TLS certificate (PEM); with it the node serves HTTPS only.
    #[arg(long, env = "TALLY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "TALLY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate(s) peers are verified against (PEM).
    #[arg(long, env = "TALLY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Raft RPC and forwarded requests need a client certificate from the CA (default true).
    #[arg(long, env = "TALLY_TLS_PEER_CLIENT_AUTH")]
    pub tls_peer_client_auth: Option<bool>,
}

/// A node's effective configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: String,
    pub auth: AuthConfig,
    pub max_body_bytes: usize,
    pub max_requests_in_flight: usize,
    pub max_ingest_bytes_in_flight: usize,
    pub sql: SqlLimits,
    /// `read.max_aggregate_rows`.
    pub max_aggregate_rows: usize,
    pub http: HttpLimits,
    /// `None`: plain HTTP.
    pub tls: Option<TlsServer>,
    pub node: NodeOptions,
}

pub const DEFAULT_SNAPSHOT_THRESHOLD: u64 = 10_000;
/// Bounds of `raft.max_clock_skew_ms`.
pub const MIN_CLOCK_SKEW_MS: u64 = 100;
pub const MAX_CLOCK_SKEW_MS: u64 = 600_000;
pub const DEFAULT_LOG_KEEP: u64 = 1_000;

impl ServeArgs {
    pub fn resolve(self) -> Result<NodeConfig> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let id = self
            .id
            .or(file.id)
            .context("node id missing: set `id` in the config file, --id or TALLY_ID")?;
        let role: Role = self
            .role
            .or(file.role)
            .unwrap_or_else(|| "data".into())
            .parse()
            .map_err(anyhow::Error::msg)?;
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .context("data_dir missing: set `data_dir`, --data-dir or TALLY_DATA_DIR")?;
        let secret = self.secret.or(file.cluster.secret).context(
            "cluster secret missing: set [cluster] secret, --secret or TALLY_CLUSTER_SECRET",
        )?;
        if secret.is_empty() {
            bail!("cluster secret must not be empty");
        }
        let members: BTreeMap<u64, String> = match self.members {
            Some(list) => parse_member_flags(&list)?,
            None => parse_member_keys(file.cluster.members.unwrap_or_default())?,
        };
        let witnesses: BTreeSet<u64> = self
            .witnesses
            .or(file.cluster.witnesses)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let listen = self
            .listen
            .or(file.listen)
            .or_else(|| members.get(&id).cloned())
            .context("listen address missing: set `listen`, --listen or TALLY_LISTEN")?;
        let advertise = self.advertise.or(file.advertise);
        if let Some(addr) = members.get(&id) {
            match &advertise {
                Some(adv) if adv != addr => bail!(
                    "advertise = {adv:?} but cluster.members gives this node ({id}) the address {addr:?}; they must be equal"
                ),
                Some(_) => {}
                None if addr != &listen
                    && !listen.starts_with("0.0.0.0:")
                    && !listen.starts_with("[::]:") =>
                {
                    bail!("listen = {listen:?} but cluster.members gives this node ({id}) the address {addr:?}; peers use the members address (set `advertise` if they reach this node through a proxy)")
                }
                None => {}
            }
        }
        let source_ip = match self.source_ip.or(file.source_ip) {
            None => None,
            Some(ip) => Some(
                ip.trim()
                    .parse::<std::net::IpAddr>()
                    .with_context(|| format!("source_ip {ip:?} is not an IP address"))?,
            ),
        };
        if witnesses.contains(&id) != (role == Role::Witness) && !members.is_empty() {
            bail!(
                "node {id} has role {:?} but cluster.witnesses {} it",
                role.as_str(),
                if witnesses.contains(&id) {
                    "lists"
                } else {
                    "does not list"
                }
            );
        }
        let defaults = RaftTiming::default();
        let timing = RaftTiming {
            heartbeat_ms: self
                .heartbeat_ms
                .or(file.raft.heartbeat_ms)
                .unwrap_or(defaults.heartbeat_ms),
            election_min_ms: self
                .election_min_ms
                .or(file.raft.election_min_ms)
                .unwrap_or(defaults.election_min_ms),
            election_max_ms: self
                .election_max_ms
                .or(file.raft.election_max_ms)
                .unwrap_or(defaults.election_max_ms),
        };
        if timing.heartbeat_ms == 0
            || timing.election_min_ms <= timing.heartbeat_ms
            || timing.election_max_ms <= timing.election_min_ms
        {
            bail!("raft timing must satisfy 0 < heartbeat_ms < election_min_ms < election_max_ms (got {timing:?})");
        }
        let mut batcher = BatcherConfig::default();
        if let Some(q) = self.queue_requests.or(file.ingest.queue_requests) {
            if q == 0 {
                bail!("ingest.queue_requests must be at least 1");
            }
            batcher.queue_requests = q;
        }
        if let Some(ms) = self.max_clock_skew_ms.or(file.raft.max_clock_skew_ms) {
            if !(MIN_CLOCK_SKEW_MS..=MAX_CLOCK_SKEW_MS).contains(&ms) {
                bail!(
                    "raft.max_clock_skew_ms must be between {MIN_CLOCK_SKEW_MS} and \
                     {MAX_CLOCK_SKEW_MS} (10 minutes): below, ordinary clock jitter and the \
                     sampling error hold the ingest time back; above, one leader's clock could \
                     expire much of the one-hour dedup window early (got {ms})"
                );
            }
            batcher.max_clock_skew_ms = ms;
        }
        for (name, value, slot) in [
            (
                "analytics.max_keys_per_tenant_bucket",
                self.analytics_max_keys_per_tenant_bucket
                    .or(file.analytics.max_keys_per_tenant_bucket),
                &mut batcher.key_caps.max_keys_per_tenant_bucket,
            ),
            (
                "analytics.max_tenants_per_bucket",
                self.analytics_max_tenants_per_bucket
                    .or(file.analytics.max_tenants_per_bucket),
                &mut batcher.key_caps.max_tenants_per_bucket,
            ),
        ] {
            if let Some(n) = value {
                if !(1..=MAX_KEY_CAP).contains(&n) {
                    bail!(
                        "{name} must be between 1 and {MAX_KEY_CAP}: it bounds the distinct \
                         keys held in memory per aggregate bucket (got {n})"
                    );
                }
                *slot = n;
            }
        }
        if let Some(n) = self
            .analytics_max_rows_per_granularity
            .or(file.analytics.max_rows_per_granularity)
        {
            if !ROW_BUDGET_RANGE.contains(&n) {
                bail!(
                    "analytics.max_rows_per_granularity must be between 1 and {}: it bounds the \
                     aggregate rows held in memory at each granularity, ≈ 580 bytes each \
                     (got {n})",
                    ROW_BUDGET_RANGE.end()
                );
            }
            batcher.key_caps.max_rows_per_granularity = n;
        }
        let max_aggregate_rows = self
            .read_max_aggregate_rows
            .or(file.read.max_aggregate_rows)
            .unwrap_or(tally_api::DEFAULT_MAX_AGGREGATE_ROWS);
        if !AGGREGATE_ROWS_RANGE.contains(&max_aggregate_rows) {
            bail!(
                "read.max_aggregate_rows must be between 1 and {}: a /v1/aggregates answer is \
                 collected in memory before it is sent (got {max_aggregate_rows})",
                AGGREGATE_ROWS_RANGE.end()
            );
        }
        let max_body_bytes = self
            .max_body_bytes
            .or(file.ingest.max_body_bytes)
            .unwrap_or(8 << 20);
        if !(1024..=MAX_INGEST_BODY_BYTES).contains(&max_body_bytes) {
            bail!(
                "ingest.max_body_bytes must be between 1024 and {MAX_INGEST_BODY_BYTES} \
                 (64 MiB): a body becomes one Raft entry, which every member holds in memory \
                 and replicates in one request; split larger batches (got {max_body_bytes})"
            );
        }
        let mut sink = SinkConfig::default();
        if let Some(n) = self.sink_batch_events.or(file.sink.batch_events) {
            if n == 0 {
                bail!("sink.batch_events must be at least 1");
            }
            sink.batch_events = n;
        }
        if let Some(n) = self
            .sink_max_backlog_events
            .or(file.sink.max_backlog_events)
        {
            if n == 0 || n > tally_analytics::PENDING_CAP {
                bail!(
                    "sink.max_backlog_events must be between 1 and {}",
                    tally_analytics::PENDING_CAP
                );
            }
            sink.max_backlog_events = n;
        }
        let mut sql = SqlLimits::default();
        if let Some(ms) = self.sql_timeout_ms.or(file.sql.timeout_ms) {
            if ms == 0 {
                bail!("sql.timeout_ms must be at least 1");
            }
            sql.timeout = std::time::Duration::from_millis(ms);
        }
        if let Some(n) = self.sql_max_rows.or(file.sql.max_rows) {
            if n == 0 {
                bail!("sql.max_rows must be at least 1");
            }
            sql.max_rows = n;
        }
        let snapshot_chunk_bytes = self
            .snapshot_chunk_bytes
            .or(file.raft.snapshot_chunk_bytes)
            .unwrap_or(tally_raft::snapshot_transfer::CHUNK_BYTES);
        let max_chunk = tally_raft::snapshot_transfer::MAX_CHUNK_BYTES;
        if !(4096..=max_chunk).contains(&snapshot_chunk_bytes) {
            bail!("raft.snapshot_chunk_bytes must be between 4096 and {max_chunk} (64 MiB), got {snapshot_chunk_bytes}");
        }
        let witness_max_log_bytes = self
            .witness_max_log_bytes
            .or(file.raft.witness_max_log_bytes)
            .unwrap_or(tally_raft::options::DEFAULT_WITNESS_MAX_LOG_BYTES);
        if witness_max_log_bytes < 1 << 20 {
            bail!("raft.witness_max_log_bytes must be at least 1048576 (1 MiB), got {witness_max_log_bytes}");
        }
        if let Some(n) = self.sql_max_result_bytes.or(file.sql.max_result_bytes) {
            if !SQL_RESULT_BYTES_RANGE.contains(&n) {
                bail!(
                    "sql.max_result_bytes must be between 1024 (1 KiB) and {} (1 GiB): each \
                     answer is held in memory before it is sent (got {n})",
                    SQL_RESULT_BYTES_RANGE.end()
                );
            }
            sql.max_result_bytes = n;
        }
        let mut record_reads = tally_storage::records::ReadPoolOptions::default();
        if let Some(n) = self.sql_max_concurrent.or(file.sql.max_concurrent) {
            if !SQL_MAX_CONCURRENT_RANGE.contains(&n) {
                bail!(
                    "sql.max_concurrent must be between 1 and {}: each running query holds one \
                     database connection of the read pool (got {n})",
                    SQL_MAX_CONCURRENT_RANGE.end()
                );
            }
            record_reads.max_concurrent = n;
        }
        let http = http_limits(
            &file.http,
            [
                self.http_max_connections.map(|n| n as u64),
                self.http_header_read_timeout_ms,
                self.http_body_read_timeout_ms,
                self.http_idle_timeout_ms,
            ],
        )?;
        let tls_section = file.tls.unwrap_or_default();
        let tls_files = tls_files(
            self.tls_cert.or(tls_section.cert),
            self.tls_key.or(tls_section.key),
            self.tls_ca.or(tls_section.ca),
            self.tls_peer_client_auth.or(tls_section.peer_client_auth),
        )?;
        let (tls, peer_tls) = match tls_files {
            None => (None, None),
            Some(files) => {
                let (server, peer) = files.load()?;
                (Some(server), Some(peer))
            }
        };
        let record_store = self.record_store.or(file.record_store);
        record_reads.url = self.record_store_read.or(file.record_store_read);
        if role == Role::Data && record_store.is_none() {
            tracing::warn!("no record_store configured: events are counted and replicated but not written to SQL tables");
        }
        let tokens = match self.auth_tokens {
            Some(flags) => flags
                .iter()
                .map(|f| parse_token_flag(f))
                .collect::<Result<Vec<_>>>()?,
            None => file.auth.tokens,
        };
        // Behind a proxy (`advertise`, or a members address elsewhere) a loopback listener
        // still serves the network: it counts as loopback only if peers reach it there.
        let reached_at = advertise
            .clone()
            .or_else(|| members.get(&id).cloned())
            .unwrap_or_else(|| listen.clone());
        let exposed = if is_loopback(&reached_at) {
            listen.clone()
        } else {
            reached_at
        };
        let auth = resolve_auth(
            tokens,
            self.allow_anonymous.or(file.auth.allow_anonymous),
            &exposed,
        )?;
        check_read_url(role, record_store.as_deref(), record_reads.url.as_deref())?;
        // Default: 512, or half the connections when there are fewer than 1024.
        let max_requests_in_flight = self
            .http_max_requests_in_flight
            .or(file.http.max_requests_in_flight)
            .unwrap_or(tally_api::in_flight::DEFAULT_MAX_REQUESTS.min(http.max_connections / 2));
        if max_requests_in_flight == 0 || max_requests_in_flight >= http.max_connections {
            bail!(
                "http.max_requests_in_flight must be at least 1 and below http.max_connections \
                 ({}): a connection serving a request is never closed to make room, so the \
                 requests must leave some connections free (got {max_requests_in_flight})",
                http.max_connections
            );
        }
        let max_ingest_bytes_in_flight = self
            .ingest_max_bytes_in_flight
            .or(file.ingest.max_bytes_in_flight)
            .unwrap_or(tally_api::in_flight::DEFAULT_MAX_INGEST_BYTES.max(max_body_bytes));
        if !(max_body_bytes..=MAX_INGEST_BYTES_IN_FLIGHT).contains(&max_ingest_bytes_in_flight) {
            bail!(
                "ingest.max_bytes_in_flight must be between ingest.max_body_bytes \
                 ({max_body_bytes}) and {MAX_INGEST_BYTES_IN_FLIGHT} (4 GiB), got \
                 {max_ingest_bytes_in_flight}"
            );
        }
        Ok(NodeConfig {
            auth,
            max_requests_in_flight,
            max_ingest_bytes_in_flight,
            listen,
            sql,
            max_aggregate_rows,
            max_body_bytes,
            http,
            tls,
            node: NodeOptions {
                id,
                role,
                data_dir,
                secret,
                members,
                witnesses,
                timing,
                snapshot_threshold: self
                    .snapshot_threshold
                    .or(file.raft.snapshot_threshold)
                    .unwrap_or(DEFAULT_SNAPSHOT_THRESHOLD),
                log_keep_behind_snapshot: self
                    .log_keep_behind_snapshot
                    .or(file.raft.log_keep_behind_snapshot)
                    .unwrap_or(DEFAULT_LOG_KEEP),
                batcher,
                record_store,
                record_reads,
                sink,
                source_ip,
                snapshot_chunk_bytes,
                witness_max_log_bytes,
                peer_tls,
                witness_max_log_entries: self
                    .witness_max_log_entries
                    .or(file.raft.witness_max_log_entries)
                    .unwrap_or(tally_raft::node::DEFAULT_WITNESS_MAX_LOG_ENTRIES),
            },
        })
    }
}

/// The access policy: the tokens, checked, and whether anonymous requests are served.
/// Without tokens that is the default only on a loopback listener; elsewhere the node
/// refuses to start rather than serve the network unauthenticated.
fn resolve_auth(
    entries: Vec<TokenEntry>,
    allow_anonymous: Option<bool>,
    listen: &str,
) -> Result<AuthConfig> {
    let mut tokens: Vec<Token> = Vec::new();
    for entry in entries {
        let name = entry.name.trim().to_string();
        if name.is_empty() {
            bail!("[auth] tokens: every token needs a name");
        }
        let sha256 = tally_api::auth::parse_sha256(&entry.sha256)
            .map_err(|e| anyhow::anyhow!("[auth] token {name:?}: {e}"))?;
        if entry.roles.is_empty() {
            bail!("[auth] token {name:?} has no roles: give it some of ingest, read, admin");
        }
        let roles = entry
            .roles
            .iter()
            .map(|r| r.trim().parse::<AccessRole>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("[auth] token {name:?}: {e}"))?;
        if entry
            .tenant
            .as_deref()
            .is_some_and(|t| t.is_empty() || t.len() > 256)
        {
            bail!("[auth] token {name:?}: tenant must be 1 to 256 characters (leave it out for every tenant)");
        }
        if entry.tenant.as_deref() == Some(tally_analytics::OTHER) {
            bail!(
                "[auth] token {name:?}: tenant {:?} names the overflow rows of every tenant, \
                 not a tenant",
                tally_analytics::OTHER
            );
        }
        if let Some(other) = tokens.iter().find(|t| t.name == name) {
            bail!("[auth] two tokens are named {:?}", other.name);
        }
        if let Some(other) = tokens.iter().find(|t| t.sha256 == sha256) {
            bail!(
                "[auth] tokens {:?} and {name:?} have the same sha256",
                other.name
            );
        }
        tokens.push(Token {
            name,
            sha256,
            roles,
            tenant: entry.tenant,
        });
    }
    let loopback = is_loopback(listen);
    let anonymous = match (tokens.is_empty(), allow_anonymous) {
        (_, Some(true)) => {
            if !loopback {
                tracing::warn!(%listen, "allow_anonymous = true on a non-loopback address: anyone who reaches this node may post and read every tenant's data");
            }
            true
        }
        (false, _) => false,
        (true, Some(false)) => bail!(
            "[auth] has no tokens and allow_anonymous = false: nothing could post or read; \
             add tokens (`tally token new`)"
        ),
        (true, None) if loopback => true,
        (true, None) => bail!(
            "listen = {listen:?} is not a loopback address and [auth] has no tokens: this node \
             would let anyone who reaches it post and read every tenant's data. Add tokens \
             (`tally token new --name N --role ingest`), or set [auth] allow_anonymous = true \
             if the network in front of it is trusted"
        ),
    };
    Ok(AuthConfig { tokens, anonymous })
}

/// `NAME:SHA256:ROLE[+ROLE…][:TENANT]`, the flag form of a token entry.
fn parse_token_flag(flag: &str) -> Result<TokenEntry> {
    let mut parts = flag.splitn(4, ':');
    let (Some(name), Some(sha256), Some(roles)) = (parts.next(), parts.next(), parts.next()) else {
        bail!(
            "--auth-token {:?} is not NAME:SHA256:ROLE[+ROLE…][:TENANT]",
            flag.split(':').next().unwrap_or_default()
        );
    };
    Ok(TokenEntry {
        name: name.to_string(),
        sha256: sha256.to_string(),
        roles: roles.split('+').map(str::to_string).collect(),
        tenant: parts.next().map(str::to_string),
    })
}

/// Whether `listen` (host:port) binds only loopback addresses.
fn is_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    listen
        .rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

/// `record_store_read` makes sense only beside a MySQL/MariaDB `record_store`; without it a
/// MySQL store serves `/v1/sql` as the sink's own user, which deserves a warning.
fn check_read_url(role: Role, store: Option<&str>, read: Option<&str>) -> Result<()> {
    let is_mysql = |url: &str| url.starts_with("mysql://") || url.starts_with("mariadb://");
    match (store, read) {
        (None, Some(_)) if role == Role::Data => {
            bail!("record_store_read is set but record_store is not: set both, or neither")
        }
        (Some(store), Some(read)) if !is_mysql(store) || !is_mysql(read) => bail!(
            "record_store_read ({}) needs a MySQL/MariaDB record_store and must itself be a \
             mysql:// URL: it names the user /v1/sql reads the same database as; SQLite read \
             connections are already opened read-only",
            tally_storage::records::redact_url(read)
        ),
        (Some(store), None) if role == Role::Data && is_mysql(store) => {
            tracing::warn!(
                "record_store_read is not set: /v1/sql runs as the sink's own database user \
                 (in read-only transactions); give it a user with SELECT rights only \
                 (docs/sql.md, \"A read-only user\")"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Fewest connections `http.max_connections` allows: peers alone hold a few.
pub const MIN_HTTP_CONNECTIONS: usize = 16;

/// `[http]` over its defaults; `flags`: max_connections and the three timeouts (ms), in
/// the section's order, each over the file's.
fn http_limits(file: &HttpSection, flags: [Option<u64>; 4]) -> Result<HttpLimits> {
    let mut limits = HttpLimits::default();
    let [max, header, body, idle] = flags;
    if let Some(n) = max.or(file.max_connections.map(|n| n as u64)) {
        if n < MIN_HTTP_CONNECTIONS as u64 {
            bail!("http.max_connections must be at least {MIN_HTTP_CONNECTIONS} (got {n})");
        }
        limits.max_connections = usize::try_from(n).context("http.max_connections")?;
    }
    let timeouts = [
        (
            "header_read_timeout_ms",
            header.or(file.header_read_timeout_ms),
            600_000,
            &mut limits.header_read_timeout,
        ),
        (
            "body_read_timeout_ms",
            body.or(file.body_read_timeout_ms),
            3_600_000,
            &mut limits.body_read_timeout,
        ),
        (
            "idle_timeout_ms",
            idle.or(file.idle_timeout_ms),
            86_400_000,
            &mut limits.idle_timeout,
        ),
    ];
    for (key, value, max_ms, slot) in timeouts {
        if let Some(ms) = value {
            if !(100..=max_ms).contains(&ms) {
                bail!("http.{key} must be between 100 and {max_ms} (got {ms})");
            }
            *slot = std::time::Duration::from_millis(ms);
        }
    }
    Ok(limits)
}

/// `[tls]`: none of cert, key and ca (plain HTTP), or all three.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    peer_client_auth: Option<bool>,
) -> Result<Option<TlsFiles>> {
    match (cert, key, ca) {
        (None, None, None) => {
            if peer_client_auth.is_some() {
                bail!("tls.peer_client_auth is set but tls.cert, tls.key and tls.ca are not: without them the node serves plain HTTP");
            }
            Ok(None)
        }
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
            cert,
            key,
            ca,
            peer_client_auth: peer_client_auth.unwrap_or(true),
        })),
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                ("cert", cert.is_none()),
                ("key", key.is_none()),
                ("ca", ca.is_none()),
            ]
            .into_iter()
            .filter(|(_, m)| *m)
            .map(|(k, _)| k)
            .collect();
            bail!(
                "[tls] needs cert, key and ca together; missing: {} (set them in [tls], or --tls-cert/--tls-key/--tls-ca, or TALLY_TLS_*)",
                missing.join(", ")
            )
        }
    }
}

fn load_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

fn parse_member_keys(raw: BTreeMap<String, String>) -> Result<BTreeMap<u64, String>> {
    raw.into_iter()
        .map(|(k, v)| {
            let id = k
                .parse::<u64>()
                .with_context(|| format!("cluster.members key {k:?} is not a node id (u64)"))?;
            Ok((id, v))
        })
        .collect()
}

fn parse_member_flags(list: &[String]) -> Result<BTreeMap<u64, String>> {
    list.iter()
        .map(|item| {
            let (id, addr) = item
                .split_once('=')
                .with_context(|| format!("member {item:?} is not id=host:port"))?;
            let id = id
                .trim()
                .parse::<u64>()
                .with_context(|| format!("member {item:?}: {id:?} is not a node id (u64)"))?;
            Ok((id, addr.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of docs/architecture.md#configuration, which must work as written.
    const DOCUMENTED_EXAMPLE: &str = r#"
id = 1
role = "data"                     # "data" or "witness"
listen = "127.0.0.1:7101"         # HTTP: public API and /raft RPC
data_dir = "/var/lib/tally/n1"
record_store = "mysql://tally:pw@127.0.0.1:3306/tally"   # or "sqlite:///var/lib/tally/records.db"; a witness ignores it

[cluster]
secret = "change-me"              # shared by all members; authenticates /raft RPC
witnesses = [3]

[cluster.members]
1 = "127.0.0.1:7101"
2 = "127.0.0.1:7102"
3 = "127.0.0.1:7103"
"#;

    #[test]
    fn documented_example_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, DOCUMENTED_EXAMPLE).unwrap();
        let cfg = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.node.id, 1);
        assert_eq!(cfg.node.role, Role::Data);
        assert_eq!(cfg.listen, "127.0.0.1:7101");
        assert_eq!(cfg.node.members.len(), 3);
        assert!(cfg.node.witnesses.contains(&3));
        assert_eq!(cfg.node.secret, "change-me");
    }

    #[test]
    fn flags_override_file_and_typos_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, DOCUMENTED_EXAMPLE).unwrap();
        let cfg = ServeArgs {
            config: Some(path.clone()),
            secret: Some("other".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.node.secret, "other");

        std::fs::write(
            &path,
            format!("{DOCUMENTED_EXAMPLE}\nsnapshot_treshold = 5\n"),
        )
        .unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("snapshot_treshold"), "{err:#}");
    }

    #[test]
    fn the_ingest_body_bound_has_a_floor_and_a_ceiling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, DOCUMENTED_EXAMPLE).unwrap();
        let with = |bytes: usize| {
            ServeArgs {
                config: Some(path.clone()),
                max_body_bytes: Some(bytes),
                ..Default::default()
            }
            .resolve()
        };
        assert_eq!(with(1024).unwrap().max_body_bytes, 1024);
        assert_eq!(
            with(MAX_INGEST_BODY_BYTES).unwrap().max_body_bytes,
            MAX_INGEST_BODY_BYTES
        );
        for bad in [0, 1023, MAX_INGEST_BODY_BYTES + 1, usize::MAX] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.contains("ingest.max_body_bytes must be between"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_clock_skew_bound_has_a_default_a_floor_and_a_ceiling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let with = |file: &str, flag: Option<u64>| {
            std::fs::write(&path, format!("{DOCUMENTED_EXAMPLE}\n{file}")).unwrap();
            ServeArgs {
                config: Some(path.clone()),
                max_clock_skew_ms: flag,
                ..Default::default()
            }
            .resolve()
        };
        let skew = |cfg: NodeConfig| cfg.node.batcher.max_clock_skew_ms;
        assert_eq!(
            skew(with("", None).unwrap()),
            tally_raft::clock::DEFAULT_MAX_CLOCK_SKEW_MS
        );
        // The file sets it (in [raft]), a flag overrides the file.
        assert_eq!(
            skew(with("[raft]\nmax_clock_skew_ms = 2000\n", None).unwrap()),
            2000
        );
        assert_eq!(
            skew(with("[raft]\nmax_clock_skew_ms = 2000\n", Some(100)).unwrap()),
            100
        );
        assert_eq!(
            skew(with("", Some(MAX_CLOCK_SKEW_MS)).unwrap()),
            MAX_CLOCK_SKEW_MS
        );
        for bad in [0, 99, MAX_CLOCK_SKEW_MS + 1, u64::MAX] {
            let err = with("", Some(bad)).unwrap_err().to_string();
            assert!(
                err.contains("raft.max_clock_skew_ms must be between 100 and 600000"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn key_caps_come_from_file_or_flags_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, DOCUMENTED_EXAMPLE).unwrap();
        let defaults = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            defaults.node.batcher.key_caps,
            tally_analytics::KeyCaps::default()
        );

        std::fs::write(
            &path,
            format!(
                "{DOCUMENTED_EXAMPLE}\n[analytics]\nmax_keys_per_tenant_bucket = 7\nmax_tenants_per_bucket = 3\n"
            ),
        )
        .unwrap();
        let resolve = |keys: Option<u32>| {
            ServeArgs {
                config: Some(path.clone()),
                analytics_max_keys_per_tenant_bucket: keys,
                ..Default::default()
            }
            .resolve()
        };
        let caps = resolve(None).unwrap().node.batcher.key_caps;
        assert_eq!(
            (caps.max_keys_per_tenant_bucket, caps.max_tenants_per_bucket),
            (7, 3)
        );
        let caps = resolve(Some(50)).unwrap().node.batcher.key_caps;
        assert_eq!(caps.max_keys_per_tenant_bucket, 50, "the flag wins");
        for bad in [0, MAX_KEY_CAP + 1] {
            let err = resolve(Some(bad)).unwrap_err().to_string();
            assert!(
                err.contains("analytics.max_keys_per_tenant_bucket must be between 1 and"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_row_budget_and_the_aggregate_row_cap_come_from_file_or_flags_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, DOCUMENTED_EXAMPLE).unwrap();
        let resolve = |rows: Option<u32>, read: Option<usize>| {
            ServeArgs {
                config: Some(path.clone()),
                analytics_max_rows_per_granularity: rows,
                read_max_aggregate_rows: read,
                ..Default::default()
            }
            .resolve()
        };
        let defaults = resolve(None, None).unwrap();
        assert_eq!(
            defaults.node.batcher.key_caps.max_rows_per_granularity,
            tally_analytics::DEFAULT_MAX_ROWS_PER_GRANULARITY
        );
        assert_eq!(defaults.max_aggregate_rows, 10_000);

        std::fs::write(
            &path,
            format!(
                "{DOCUMENTED_EXAMPLE}\n[analytics]\nmax_rows_per_granularity = 1234\n\n[read]\nmax_aggregate_rows = 55\n"
            ),
        )
        .unwrap();
        let from_file = resolve(None, None).unwrap();
        assert_eq!(
            from_file.node.batcher.key_caps.max_rows_per_granularity,
            1234
        );
        assert_eq!(from_file.max_aggregate_rows, 55);
        let flags = resolve(Some(99), Some(7)).unwrap();
        assert_eq!(flags.node.batcher.key_caps.max_rows_per_granularity, 99);
        assert_eq!(flags.max_aggregate_rows, 7, "the flag wins");
        for bad in [0, ROW_BUDGET_RANGE.end() + 1] {
            let err = resolve(Some(bad), None).unwrap_err().to_string();
            assert!(
                err.contains("analytics.max_rows_per_granularity must be between 1 and"),
                "{bad}: {err}"
            );
        }
        for bad in [0, AGGREGATE_ROWS_RANGE.end() + 1] {
            let err = resolve(None, Some(bad)).unwrap_err().to_string();
            assert!(
                err.contains("read.max_aggregate_rows must be between 1 and"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn witness_role_must_match_witness_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            DOCUMENTED_EXAMPLE.replace("role = \"data\"", "role = \"witness\""),
        )
        .unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("witness"), "{err}");
    }

    #[test]
    fn advertise_replaces_listen_as_the_members_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, DOCUMENTED_EXAMPLE).unwrap();
        let args = |listen: &str, advertise: Option<&str>, source_ip: Option<&str>| ServeArgs {
            config: Some(path.clone()),
            listen: Some(listen.into()),
            advertise: advertise.map(Into::into),
            source_ip: source_ip.map(Into::into),
            ..Default::default()
        };
        // Behind a proxy: peers use the members address, the node listens elsewhere.
        let cfg = args("127.0.0.1:9001", Some("127.0.0.1:7101"), Some("127.77.0.1"))
            .resolve()
            .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9001");
        assert_eq!(cfg.node.source_ip, Some("127.77.0.1".parse().unwrap()));
        // Without advertise the listen address must be the members address.
        let err = args("127.0.0.1:9001", None, None).resolve().unwrap_err();
        assert!(err.to_string().contains("advertise"), "{err}");
        // advertise must be the members address.
        let err = args("127.0.0.1:9001", Some("127.0.0.1:9999"), None)
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("must be equal"), "{err}");
        let err = args("127.0.0.1:7101", None, Some("not-an-ip"))
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("source_ip"), "{err}");
    }

    #[test]
    fn auth_tokens_and_when_anonymous_requests_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let resolve = |extra: &str, listen: &str| {
            std::fs::write(&path, format!("{DOCUMENTED_EXAMPLE}\n{extra}")).unwrap();
            ServeArgs {
                config: Some(path.clone()),
                listen: Some(listen.into()),
                advertise: Some("127.0.0.1:7101".into()),
                ..Default::default()
            }
            .resolve()
        };
        // Loopback without tokens: anonymous, the zero-setup default.
        let cfg = resolve("", "127.0.0.1:7101").unwrap();
        assert!(cfg.auth.anonymous && cfg.auth.tokens.is_empty());
        assert!(resolve("", "localhost:7101").unwrap().auth.anonymous);
        // Off loopback without tokens: refused, and the message says what to do.
        let err = resolve("", "0.0.0.0:7101").unwrap_err().to_string();
        assert!(
            err.contains("not a loopback address") && err.contains("tally token new"),
            "{err}"
        );
        let cfg = resolve("[auth]\nallow_anonymous = true\n", "0.0.0.0:7101").unwrap();
        assert!(cfg.auth.anonymous);
        // With tokens, anonymous requests are refused unless allowed.
        let tokens = format!(
            "[auth]\ntokens = [{{ name = \"gw\", sha256 = \"{hash}\", roles = [\"ingest\"] }},\n\
             {{ name = \"ro\", sha256 = \"{}\", roles = [\"read\", \"admin\"], tenant = \"acme.com\" }}]\n",
            "a".repeat(64)
        );
        let cfg = resolve(&tokens, "0.0.0.0:7101").unwrap();
        assert!(!cfg.auth.anonymous);
        assert_eq!(cfg.auth.tokens.len(), 2);
        assert_eq!(cfg.auth.tokens[1].tenant.as_deref(), Some("acme.com"));
        assert!(cfg.auth.tokens[1].roles.grant(AccessRole::Admin));
        assert!(!cfg.auth.tokens[1].roles.grant(AccessRole::Ingest));
        for (bad, says) in [
            ("[auth]\ntokens = [{ name = \"gw\", sha256 = \"abc\", roles = [\"ingest\"] }]".to_string(), "not hex"),
            (format!("[auth]\ntokens = [{{ name = \"gw\", sha256 = \"{hash}\", roles = [] }}]"), "no roles"),
            (format!("[auth]\ntokens = [{{ name = \"gw\", sha256 = \"{hash}\", roles = [\"root\"] }}]"), "unknown role"),
            (format!("[auth]\ntokens = [{{ name = \"a\", sha256 = \"{hash}\", roles = [\"read\"] }}, {{ name = \"b\", sha256 = \"{hash}\", roles = [\"read\"] }}]"), "same sha256"),
            ("[auth]\nallow_anonymous = false\n".to_string(), "nothing could post or read"),
            (format!("[auth]\ntokens = [{{ name = \"gw\", sha256 = \"{hash}\", role = [\"read\"] }}]"), "unknown field"),
        ] {
            let err = format!("{:#}", resolve(&bad, "127.0.0.1:7101").unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
        // The flag form.
        let entry = parse_token_flag(&format!("gw:{hash}:ingest+read:acme.com")).unwrap();
        assert_eq!(entry.roles, ["ingest", "read"]);
        assert_eq!(entry.tenant.as_deref(), Some("acme.com"));
        assert!(parse_token_flag("gw:abc").is_err());
    }

    #[test]
    fn sql_bounds_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, DOCUMENTED_EXAMPLE).unwrap();
        let with = |bytes: Option<usize>, concurrent: Option<usize>| {
            ServeArgs {
                config: Some(path.clone()),
                sql_max_result_bytes: bytes,
                sql_max_concurrent: concurrent,
                ..Default::default()
            }
            .resolve()
        };
        let defaults = with(None, None).unwrap();
        assert_eq!(defaults.sql.max_result_bytes, 8 << 20);
        assert_eq!(defaults.node.record_reads.max_concurrent, 4);
        assert_eq!(with(Some(1024), None).unwrap().sql.max_result_bytes, 1024);
        assert_eq!(
            with(Some(1 << 30), None).unwrap().sql.max_result_bytes,
            1 << 30
        );
        for bad in [0, 1023, (1 << 30) + 1] {
            let err = with(Some(bad), None).unwrap_err().to_string();
            assert!(err.contains("sql.max_result_bytes must be"), "{bad}: {err}");
        }
        assert_eq!(
            with(None, Some(1))
                .unwrap()
                .node
                .record_reads
                .max_concurrent,
            1
        );
        for bad in [0, 65] {
            let err = with(None, Some(bad)).unwrap_err().to_string();
            assert!(err.contains("sql.max_concurrent must be"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_read_url_is_mysql_only_and_never_shown_with_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let read = "mysql://tally_ro:hush?hush@127.0.0.1:3306/tally";
        std::fs::write(
            &path,
            DOCUMENTED_EXAMPLE.replace(
                "record_store = ",
                &format!("record_store_read = \"{read}\"\nrecord_store = "),
            ),
        )
        .unwrap();
        let args = |store: Option<&str>| ServeArgs {
            config: Some(path.clone()),
            record_store: store.map(Into::into),
            ..Default::default()
        };
        let cfg = args(None).resolve().unwrap();
        assert_eq!(cfg.node.record_reads.url.as_deref(), Some(read));
        let err = format!(
            "{:#}",
            args(Some("sqlite:///tmp/r.db")).resolve().unwrap_err()
        );
        assert!(err.contains("needs a MySQL/MariaDB record_store"), "{err}");
        assert!(!err.contains("hush"), "{err}");
        // The variable and the flag name it too.
        let cfg = ServeArgs {
            config: Some(path.clone()),
            record_store_read: Some("mysql://other@h/tally".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            cfg.node.record_reads.url.as_deref(),
            Some("mysql://other@h/tally")
        );
    }

    #[test]
    fn in_flight_bounds_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, DOCUMENTED_EXAMPLE).unwrap();
        let with = |requests: Option<usize>, bytes: Option<usize>| {
            ServeArgs {
                config: Some(path.clone()),
                http_max_requests_in_flight: requests,
                ingest_max_bytes_in_flight: bytes,
                ..Default::default()
            }
            .resolve()
        };
        let cfg = with(None, None).unwrap();
        assert_eq!(cfg.max_requests_in_flight, 512);
        assert_eq!(cfg.max_ingest_bytes_in_flight, 256 << 20);
        assert_eq!(
            with(Some(1), Some(8 << 20)).unwrap().max_requests_in_flight,
            1
        );
        for (requests, bytes, says) in [
            (Some(0), None, "http.max_requests_in_flight"),
            (Some(1024), None, "below http.max_connections"),
            (None, Some((8 << 20) - 1), "ingest.max_bytes_in_flight"),
            (
                None,
                Some(MAX_INGEST_BYTES_IN_FLIGHT + 1),
                "ingest.max_bytes_in_flight",
            ),
        ] {
            let err = with(requests, bytes).unwrap_err().to_string();
            assert!(err.contains(says), "{requests:?} {bytes:?}: {err}");
        }
    }
}

#[cfg(test)]
mod http_and_tls_tests {
    use super::*;
    use tally_testkit::pki::TestCa;

    const BASE: &str = r#"
id = 1
listen = "127.0.0.1:7101"
data_dir = "/tmp/tally-config-test"
[cluster]
secret = "s"
"#;

    fn resolve(dir: &Path, extra: &str) -> Result<NodeConfig> {
        let path = dir.join("node.toml");
        std::fs::write(&path, format!("{BASE}{extra}")).unwrap();
        ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
    }

    fn err(dir: &Path, extra: &str) -> String {
        format!("{:#}", resolve(dir, extra).unwrap_err())
    }

    #[test]
    fn http_bounds_have_defaults_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = resolve(dir.path(), "").unwrap();
        assert_eq!(cfg.http, HttpLimits::default());
        assert_eq!(cfg.http.max_connections, 1024);
        assert!(cfg.tls.is_none() && cfg.node.peer_tls.is_none());
        let cfg = resolve(
            dir.path(),
            "[http]\nmax_connections = 200\nheader_read_timeout_ms = 700\nbody_read_timeout_ms = 900\nidle_timeout_ms = 1000\n",
        )
        .unwrap();
        assert_eq!(cfg.http.max_connections, 200);
        assert_eq!(cfg.http.header_read_timeout.as_millis(), 700);
        assert_eq!(cfg.http.body_read_timeout.as_millis(), 900);
        assert_eq!(cfg.http.idle_timeout.as_millis(), 1000);
        // Flags win over the file.
        let path = dir.path().join("node.toml");
        let cfg = ServeArgs {
            config: Some(path),
            http_max_connections: Some(300),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.http.max_connections, 300);
        for (extra, want) in [
            (
                "[http]\nmax_connections = 3\n",
                "http.max_connections must be at least 16",
            ),
            (
                "[http]\nheader_read_timeout_ms = 0\n",
                "http.header_read_timeout_ms must be between 100",
            ),
            (
                "[http]\nbody_read_timeout_ms = 99\n",
                "http.body_read_timeout_ms must be between 100",
            ),
            (
                "[http]\nidle_timeout_ms = 100000000000\n",
                "http.idle_timeout_ms must be between 100",
            ),
            ("[http]\nmax_conections = 20\n", "max_conections"),
        ] {
            let e = err(dir.path(), extra);
            assert!(e.contains(want), "{extra}: {e}");
        }
    }

    /// `[tls]` text for files in `dir` named `<stem>.crt` / `.key` and `ca.crt`.
    fn tls_section(dir: &Path, stem: &str, peer_client_auth: bool) -> String {
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\npeer_client_auth = {peer_client_auth}\n",
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
            dir.join("ca.crt"),
        )
    }

    #[test]
    fn tls_files_are_read_and_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = TestCa::new("test CA").unwrap();
        ca.write_cert(&d.join("ca.crt")).unwrap();
        let node = ca.issue("node 1", &["127.0.0.1"]).unwrap();
        node.write(d, "node").unwrap();

        let cfg = resolve(d, &tls_section(d, "node", true)).unwrap();
        assert!(cfg.tls.is_some() && cfg.node.peer_tls.is_some());
        assert_eq!(cfg.node.peer_http().scheme(), "https");
        // peer_client_auth defaults to on.
        let section = tls_section(d, "node", true).replace("peer_client_auth = true\n", "");
        assert!(
            format!("{:?}", resolve(d, &section).unwrap().tls).contains("peer_client_auth: true")
        );

        // Only some of the files.
        let e = err(d, &format!("[tls]\ncert = {:?}\n", d.join("node.crt")));
        assert!(e.contains("missing: key, ca"), "{e}");
        let e = err(d, "[tls]\npeer_client_auth = false\n");
        assert!(e.contains("plain HTTP"), "{e}");
        // A file that is not there.
        let e = err(d, &tls_section(d, "absent", true));
        assert!(
            e.contains("tls.cert") && e.contains("absent.crt") && e.contains("cannot read"),
            "{e}"
        );
        // A key that belongs to another certificate.
        let other = ca.issue("node 2", &["127.0.0.1"]).unwrap();
        std::fs::write(d.join("mixed.crt"), &node.cert_pem).unwrap();
        std::fs::write(d.join("mixed.key"), &other.key_pem).unwrap();
        let e = err(d, &tls_section(d, "mixed", false));
        assert!(
            e.contains("tls.key") && e.contains("does not go with tls.cert"),
            "{e}"
        );
        // A CA file that holds no certificate.
        std::fs::write(d.join("ca.crt"), "not a certificate\n").unwrap();
        let e = err(d, &tls_section(d, "node", true));
        assert!(
            e.contains("tls.ca") && e.contains("no PEM certificate"),
            "{e}"
        );
        // With peer_client_auth, a node certificate from another CA is refused up front.
        ca.write_cert(&d.join("ca.crt")).unwrap();
        TestCa::new("another CA")
            .unwrap()
            .issue("stranger", &["127.0.0.1"])
            .unwrap()
            .write(d, "stranger")
            .unwrap();
        let e = err(d, &tls_section(d, "stranger", true));
        assert!(e.contains("peers would refuse it"), "{e}");
        assert!(resolve(d, &tls_section(d, "stranger", false)).is_ok());
    }
}
