//! The types of Tally's public API that more than one program reads.
//!
//! The server produces them and serializes them in exactly one place; the CLI, the demo,
//! the benchmarks, the chaos suite and the tests deserialize them. Nothing else indexes
//! status JSON by string.
//!
//! * [`NodeStatus`] — `GET /v1/cluster`: who this node is, what Raft says, its log,
//!   snapshots, state, ingest, record-store sink and clock. `/metrics` renders the same value.
//! * [`MembershipAnswer`] — what a membership operation did and the membership it left.
//!
//! This crate depends on serde alone, so a client links no server code.

mod status;

pub use status::{
    ClockBound, ClockStatus, IngestStatus, LogStatus, MemberStatus, MembershipAnswer, NodeStatus,
    OverflowStatus, PeerClockStatus, RaftState, RetentionStatus, Role, SinkDetail, SinkStatus,
    SnapshotFileStatus, StateStatus,
};
