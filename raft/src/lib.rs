//! Tally's Raft layer: openraft wired to the analytics state machine.
//!
//! * [`types`] — the openraft type configuration and the entry payload ([`Request`]).
//! * [`state_machine`] — applies committed entries to [`tally_analytics::State`] on a data node and
//!   nothing on a witness; builds and installs checksummed snapshot files. Also declares
//!   [`Raft`], the node's openraft instance.
//! * [`network`] / [`rpc`] — Raft RPC over HTTP with bincode bodies and the cluster secret
//!   (openraft's RPCs, plus Tally's `/raft/snapshot-index` for the snapshot floor and
//!   `/raft/clock` for the voters' clocks).
//! * [`peer_http`] — how peers are reached: plain HTTP, or HTTPS against the cluster's CA
//!   with the node's certificate as client identity (the one peer-client builder).
//! * [`batcher`] — group commit: concurrent ingest requests become one entry.
//! * [`clock`] — the ingest time the leader stamps, held near its voters' clocks.
//! * [`sink`] — the leader's exactly-once writer into the record store.
//! * [`retention`] — data nodes: purge the log behind snapshots; the leader publishes the
//!   snapshot floor.
//! * [`witness`] — the witness: hand leadership to a data node, campaign as caretaker, purge
//!   behind the snapshot floor.
//! * [`membership`] — membership changes and hand-over on the leader, checked against
//!   Tally's rules.
//! * [`status`] — the node's [`tally_protocol::NodeStatus`].
//! * [`error`] — [`NotLeader`], the one "go to the leader" answer of every operation.
//! * [`tasks`] — the node's background tasks, owned and joined on shutdown.
//! * [`options`] — what a node is started with ([`NodeOptions`], [`RaftTiming`]).
//! * [`node`] — assembles a node from its options (assembly only: the policies live in
//!   [`retention`], [`witness`] and [`clock`], each a thin loop over a pure, unit-tested
//!   decision).
//!
//! Invariants kept here: an ingest request is acknowledged only after its entry is committed
//! (fsynced on a majority by the log store) and applied on the leader; the proposer stamps
//! the ingest time into the entry so `apply` never reads a clock, and holds it near what a
//! majority of voters' clocks say; a witness never builds, keeps or ships analytic state.

pub mod batcher;
pub mod clock;
pub mod error;
pub mod membership;
pub mod network;
pub mod node;
pub mod options;
pub mod peer_http;
#[cfg(feature = "chaos")]
pub mod plant;
pub mod retention;
pub mod rpc;
pub mod sink;
pub mod snapshot_transfer;
pub mod state_machine;
pub mod status;
pub mod tasks;
pub mod types;
pub mod witness;

pub use batcher::{BatcherConfig, IngestAck, IngestError};
pub use error::NotLeader;
pub use node::{Node, NodeError, NodeOptions, RaftTiming};
pub use peer_http::{PeerHttp, PeerTls};
pub use sink::{SinkConfig, SinkReport};
pub use state_machine::Raft;
pub use types::{KeyCapsV1, NodeId, Request, Response, Role, TallyNode, TypeConfig};

/// The wall clock in epoch milliseconds, as the proposer stamps entries and the API checks
/// event times. Never called inside `apply`.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
