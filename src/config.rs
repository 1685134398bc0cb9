//! Node configuration: the TOML file documented in docs/architecture.md#configuration,
//! overridden by flags and `TALLY_*` variables.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;

use tally_api::server::{HttpLimits, TlsFiles, TlsServer};
use tally_api::SqlLimits;
use tally_raft::{BatcherConfig, NodeOptions, RaftTiming, Role, SinkConfig};

/// Largest `ingest.max_body_bytes` a node accepts: a posted body becomes one Raft entry.
pub const MAX_INGEST_BODY_BYTES: usize = 64 << 20;

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
    pub http: HttpSection,
    pub tls: Option<TlsSection>,
}

/// `[http]`: bounds on the connections clients (and peers) hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub max_connections: Option<usize>,
    pub header_read_timeout_ms: Option<u64>,
    pub body_read_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    pub max_body_bytes: Option<usize>,
    pub queue_requests: Option<usize>,
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
    pub max_body_bytes: usize,
    pub sql: SqlLimits,
    pub http: HttpLimits,
    /// `None`: plain HTTP.
    pub tls: Option<TlsServer>,
    pub node: NodeOptions,
}

pub const DEFAULT_SNAPSHOT_THRESHOLD: u64 = 10_000;
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
        if role == Role::Data && record_store.is_none() {
            tracing::warn!("no record_store configured: events are counted and replicated but not written to SQL tables");
        }
        Ok(NodeConfig {
            listen,
            sql,
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
                sink,
                source_ip,
                peer_tls,
                witness_max_log_entries: self
                    .witness_max_log_entries
                    .or(file.raft.witness_max_log_entries)
                    .unwrap_or(tally_raft::node::DEFAULT_WITNESS_MAX_LOG_ENTRIES),
            },
        })
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
