//! Tally's Raft layer: openraft wired to the analytics state machine.
//!
//! * [`types`] — the openraft type configuration and the entry payload ([`Request`]).
//! * [`state_machine`] — applies committed entries to [`tally_analytics::State`] on a data node and
//!   nothing on a witness; builds and installs checksummed snapshot files.
//! * [`network`] / [`rpc`] — Raft RPC over HTTP with bincode bodies and the cluster secret.
//! * [`batcher`] — group commit: concurrent ingest requests become one entry.
//! * [`sink`] — the leader's exactly-once writer into the record store.
//! * [`node`] — assembles a node from its options.
//!
//! Invariants kept here: an ingest request is acknowledged only after its entry is committed
//! (fsynced on a majority by the log store) and applied on the leader; the proposer stamps
//! the ingest time into the entry so `apply` never reads a clock; a witness never builds,
//! keeps or ships analytic state.

pub mod batcher;
pub mod membership;
pub mod network;
pub mod node;
#[cfg(feature = "chaos")]
pub mod plant;
pub mod rpc;
pub mod sink;
pub mod state_machine;
pub mod status;
pub mod types;

pub use batcher::{BatcherConfig, IngestAck, IngestError};
pub use node::{Node, NodeError, NodeOptions, RaftTiming};
pub use sink::{SinkConfig, SinkReport};
pub use types::{NodeId, Request, Response, Role, TallyNode, TypeConfig};

/// The wall clock in epoch milliseconds, as the proposer stamps entries and the API checks
/// event times. Never called inside `apply`.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
