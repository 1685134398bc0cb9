//! What a node is started with: its options and Raft timers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::batcher::BatcherConfig;
use crate::peer_http::{PeerHttp, PeerTls};
use crate::sink::SinkConfig;
use crate::types::{NodeId, Role};

/// Everything needed to start a node; filled from the CLI's configuration.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub id: NodeId,
    pub role: Role,
    pub data_dir: PathBuf,
    pub secret: String,
    /// Initial cluster: id → `host:port`. Used by cluster init.
    pub members: BTreeMap<NodeId, String>,
    pub witnesses: BTreeSet<NodeId>,
    pub timing: RaftTiming,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot (lets a briefly lagging follower catch up
    /// from the log instead of a snapshot).
    pub log_keep_behind_snapshot: u64,
    pub batcher: BatcherConfig,
    /// Record store URL (`mysql://…`, `sqlite://…`); a data node without one runs no sink.
    pub record_store: Option<String>,
    /// How `/v1/sql` reaches the record store: its own read-only URL (optional) and how many
    /// queries may run at once.
    pub record_reads: tally_storage::records::ReadPoolOptions,
    pub sink: SinkConfig,
    /// Local IP that outbound connections to peers are made from (`None`: the OS picks).
    pub source_ip: Option<std::net::IpAddr>,
    /// TLS towards peers (`None`: plain HTTP): the CA they must chain to and this node's
    /// client identity.
    pub peer_tls: Option<PeerTls>,
    /// A witness keeps at most this many log entries beyond the snapshot floor; past it, it
    /// purges anyway (a data node down that long must then be rebuilt from the other data
    /// node's snapshot).
    pub witness_max_log_entries: u64,
    /// Likewise in bytes of stored entries: whichever bound is reached first applies.
    pub witness_max_log_bytes: u64,
    /// Bytes of snapshot per `/raft/snapshot-chunk` request this node sends.
    pub snapshot_chunk_bytes: usize,
}

impl NodeOptions {
    /// How this node reaches its peers (scheme, TLS, source address).
    pub fn peer_http(&self) -> PeerHttp {
        PeerHttp::new(self.peer_tls.clone(), self.source_ip)
    }
}

/// Default of [`NodeOptions::witness_max_log_entries`].
pub const DEFAULT_WITNESS_MAX_LOG_ENTRIES: u64 = 1_000_000;

/// Default of [`NodeOptions::witness_max_log_bytes`]: 4 GiB of entries.
pub const DEFAULT_WITNESS_MAX_LOG_BYTES: u64 = 4 << 30;

/// Raft timers, in milliseconds.
#[derive(Clone, Debug)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 500,
        }
    }
}
