//! Errors shared by every caller at the Raft boundary.

use crate::types::{NodeId, TallyNode};

/// This node is not the leader; `leader` is where to go instead, when known. Ingest,
/// membership operations, leadership hand-over and linearizable reads all answer with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this node is not the leader")]
pub struct NotLeader {
    pub leader: Option<(NodeId, TallyNode)>,
}

impl NotLeader {
    /// From openraft's own redirect.
    pub fn from_forward(f: openraft::errors::ForwardToLeader<crate::types::TypeConfig>) -> Self {
        NotLeader {
            leader: f.leader_id.zip(f.leader_node),
        }
    }
}
