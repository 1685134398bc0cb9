//! The openraft type configuration and the bytes that travel in Tally's log.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node as the cluster membership records it: where to reach it and what it is.
///
/// The role travels inside the membership (and so inside the log and snapshots), so every
/// member agrees on which voter is the witness without consulting local configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TallyNode {
    /// `host:port` of the node's HTTP listener (public API and `/raft` RPC).
    pub addr: String,
    /// A witness stores the log and votes, and holds no analytic state.
    pub witness: bool,
}

impl TallyNode {
    pub fn data(addr: impl Into<String>) -> Self {
        TallyNode {
            addr: addr.into(),
            witness: false,
        }
    }

    pub fn witness(addr: impl Into<String>) -> Self {
        TallyNode {
            addr: addr.into(),
            witness: true,
        }
    }

    pub fn role(&self) -> Role {
        if self.witness {
            Role::Witness
        } else {
            Role::Data
        }
    }
}

impl fmt::Display for TallyNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.role().as_str(), self.addr)
    }
}

pub use tally_protocol::Role;

/// The application payload of a Raft entry.
///
/// Encoded with bincode, which writes the variant's position: variants are only ever
/// added at the end, and an existing variant's shape never changes (a new shape is a new
/// variant), so every entry an earlier build wrote still decodes to what it meant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Client requests group-committed into one entry, stamped by the proposer, as written
    /// before the key cap existed: applied with no cap, exactly as then. No longer proposed.
    Ingest(tally_analytics::IngestBatch),
    /// The record store holds every event up to this log index (published by the
    /// leader's sink after its transaction commits).
    SinkCursor(u64),
    /// Every data member holds a snapshot covering at least this log index; the witness
    /// may purge its log up to here (published by the leader).
    SnapshotFloor(u64),
    /// Client requests group-committed into one entry, stamped by the proposer with its
    /// ingest time and the two per-bucket key caps, as written before the row budget
    /// existed: applied with those caps and no budget, exactly as then. No longer proposed.
    IngestCapped {
        caps: KeyCapsV1,
        batch: tally_analytics::IngestBatch,
    },
    /// Client requests group-committed into one entry, stamped by the proposer with its
    /// ingest time and the key caps and row budget every replica applies it with.
    IngestBudgeted {
        caps: tally_analytics::KeyCaps,
        batch: tally_analytics::IngestBatch,
    },
}

/// The caps an [`Request::IngestCapped`] entry carries: the two per-bucket key caps, the
/// shape they were first written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCapsV1 {
    pub max_keys_per_tenant_bucket: u32,
    pub max_tenants_per_bucket: u32,
}

impl KeyCapsV1 {
    /// What such an entry applies with: its caps, and no row budget (it had none).
    pub fn caps(self) -> tally_analytics::KeyCaps {
        tally_analytics::KeyCaps {
            max_keys_per_tenant_bucket: self.max_keys_per_tenant_bucket,
            max_tenants_per_bucket: self.max_tenants_per_bucket,
            ..tally_analytics::KeyCaps::UNLIMITED
        }
    }
}

impl Request {
    /// The ingest batch of an ingest entry and the caps it applies with.
    pub fn ingest(&self) -> Option<(&tally_analytics::IngestBatch, tally_analytics::KeyCaps)> {
        match self {
            Request::Ingest(batch) => Some((batch, tally_analytics::KeyCaps::UNLIMITED)),
            Request::IngestCapped { caps, batch } => Some((batch, caps.caps())),
            Request::IngestBudgeted { caps, batch } => Some((batch, *caps)),
            Request::SinkCursor(_) | Request::SnapshotFloor(_) => None,
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Ingest(b)
            | Request::IngestCapped { batch: b, .. }
            | Request::IngestBudgeted { batch: b, .. } => write!(
                f,
                "ingest(requests={}, events={})",
                b.requests.len(),
                b.requests.iter().map(Vec::len).sum::<usize>()
            ),
            Request::SinkCursor(c) => write!(f, "sink-cursor({c})"),
            Request::SnapshotFloor(i) => write!(f, "snapshot-floor({i})"),
        }
    }
}

/// What applying an entry returns to the proposer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// One outcome per client request of an ingest entry, in order. Empty on a witness,
    /// which applies nothing (and therefore never acknowledges ingest itself).
    pub outcomes: Vec<tally_analytics::BatchOutcome>,
    /// Whether the applying node computed analytics for this entry.
    pub applied_analytics: bool,
}

openraft::declare_raft_types!(
    /// Tally's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = TallyNode,
);

pub type NodeId = u64;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// A snapshot's bytes as they travel: the analytics crate's versioned encoding.
pub type SnapshotData = Vec<u8>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
