//! Log retention on data nodes: purge the log behind snapshots (never past what the record
//! store may still lack), and, on the leader, publish the snapshot floor — how far every data
//! member's snapshot reaches — so the witness knows what it may purge (`crate::witness`).
//!
//! As in `crate::witness`, each loop is a thin shell over a pure, unit-tested decision.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;

use crate::network::HttpNetwork;
use crate::rpc::SnapshotIndexReply;
use crate::state_machine::{Raft, SharedState};
use crate::types::{NodeId, Request, TallyNode};

/// How long the leader waits for one data member's snapshot index.
const SNAPSHOT_INDEX_TIMEOUT: Duration = Duration::from_secs(1);

// ---- Purge behind snapshots -----------------------------------------------------------------

/// What the data node's purge decision looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataPurgeView {
    /// This node's snapshot (`None`: none built yet).
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    /// The oldest log index whose events the record store may still lack (only with a
    /// record store; `None` without one or when nothing is pending).
    pub oldest_pending: Option<u64>,
}

/// Where to purge the log up to, if anywhere: behind the snapshot, keeping `keep` entries,
/// and never at or past an entry whose events the record store may still lack.
pub fn purge_point(view: &DataPurgeView, keep: u64) -> Option<u64> {
    let snapshot = view.snapshot?;
    let floor = view
        .oldest_pending
        .map_or(snapshot, |oldest| oldest.saturating_sub(1));
    let upto = snapshot.min(floor).saturating_sub(keep);
    (upto > 0 && Some(upto) > view.purged).then_some(upto)
}

/// Purges the log behind snapshots, but never past an event the record store may still
/// lack: the sink queue in the replicated state already carries those events, and keeping
/// their log entries too means an operator can always rebuild them from the log.
pub(crate) async fn purge_behind_snapshots(
    raft: Raft,
    state: SharedState,
    has_sink: bool,
    keep: u64,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (snapshot, purged) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            if m.running_state.is_err() {
                return;
            }
            (m.snapshot.map(|l| l.index), m.purged.map(|l| l.index))
        };
        if snapshot.is_none() {
            continue;
        }
        let oldest_pending = if has_sink {
            state.read().state.pending_status().oldest_pending_index
        } else {
            None
        };
        let view = DataPurgeView {
            snapshot,
            purged,
            oldest_pending,
        };
        if let Some(upto) = purge_point(&view, keep) {
            if let Err(e) = raft.trigger().purge_log(upto).await {
                tracing::debug!("purge: {e}");
                return;
            }
        }
    }
}

// ---- Snapshot floor -------------------------------------------------------------------------

/// What a data member said when asked for its snapshot index: counted only when the node
/// that answered is the one asked (an address now used by another node holds the floor).
pub fn answered_index(asked: NodeId, reply: Option<&SnapshotIndexReply>) -> Option<u64> {
    reply
        .filter(|r| r.node_id == asked)
        .map(|r| r.snapshot_index.unwrap_or(0))
}

/// The floor every data member's snapshot covers: the leader's own snapshot index and each
/// data peer's answer, in the order asked; a peer that gave none (down, another node) holds
/// the floor at 0. Returns the floor to publish, only when it is above `current`.
pub fn floor_to_publish(own: u64, answers: &[Option<u64>], current: u64) -> Option<u64> {
    let mut floor = own;
    for answer in answers {
        match answer {
            Some(i) => floor = floor.min(*i),
            None => {
                floor = 0;
                break;
            }
        }
    }
    (floor > current).then_some(floor)
}

/// Whom the leader `me` asks for their snapshot index: every data member of the membership
/// but itself — voters and learners alike, as both may need the witness's log — and never
/// a witness (it holds no analytic snapshots).
pub fn floor_peers<'a>(
    me: NodeId,
    members: impl IntoIterator<Item = (NodeId, &'a TallyNode)>,
) -> Vec<(NodeId, TallyNode)> {
    members
        .into_iter()
        .filter(|(id, n)| *id != me && !n.witness)
        .map(|(id, n)| (id, n.clone()))
        .collect()
}

/// On the leader: learns how far every data member's snapshot reaches and publishes the
/// minimum as [`Request::SnapshotFloor`], so the witness knows what it may purge. A data
/// member that cannot be asked (down) holds the floor where it was. Members are asked over
/// Raft RPC (`/raft/snapshot-index`, with the cluster secret).
pub(crate) async fn publish_snapshot_floor(raft: Raft, state: SharedState, network: HttpNetwork) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (me, own, members) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            if m.running_state.is_err() {
                return;
            }
            if m.state != ServerState::Leader {
                continue;
            }
            let members = floor_peers(
                m.id,
                m.membership_config
                    .membership()
                    .nodes()
                    .map(|(id, n)| (*id, n)),
            );
            (m.id, m.snapshot.map(|l| l.index).unwrap_or(0), members)
        };
        let mut answers = Vec::with_capacity(members.len());
        for (id, node) in members {
            let reply = network
                .snapshot_index(me, id, &node, SNAPSHOT_INDEX_TIMEOUT)
                .await
                .map_err(|e| tracing::trace!("snapshot index of node {id}: {e}"))
                .ok();
            let answer = answered_index(id, reply.as_ref());
            answers.push(answer);
            if answer.is_none() {
                break; // The floor is held: no need to ask the others.
            }
        }
        let current = state.read().snapshot_floor;
        if let Some(floor) = floor_to_publish(own, &answers, current) {
            tracing::debug!(leader = me, floor, "publishing snapshot floor");
            if let Err(e) = raft.client_write(Request::SnapshotFloor(floor)).await {
                tracing::debug!("publishing snapshot floor: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(snapshot: Option<u64>, purged: Option<u64>, oldest: Option<u64>) -> DataPurgeView {
        DataPurgeView {
            snapshot,
            purged,
            oldest_pending: oldest,
        }
    }

    #[test]
    fn the_floor_is_asked_of_every_other_data_member() {
        let nodes = [
            (1, TallyNode::data("a:1")),
            (2, TallyNode::data("a:2")),
            (3, TallyNode::witness("a:3")),
            (4, TallyNode::data("a:4")),
        ];
        let peers = floor_peers(2, nodes.iter().map(|(id, n)| (*id, n)));
        assert_eq!(
            peers,
            vec![(1, TallyNode::data("a:1")), (4, TallyNode::data("a:4"))]
        );
        // Alone with a witness: nobody to ask, the floor is the leader's own snapshot.
        assert!(floor_peers(
            1,
            nodes[..1]
                .iter()
                .chain(&nodes[2..3])
                .map(|(id, n)| (*id, n))
        )
        .is_empty());
    }

    #[test]
    fn nothing_to_purge_without_a_snapshot() {
        assert_eq!(purge_point(&view(None, None, None), 0), None);
    }

    #[test]
    fn purge_behind_the_snapshot_keeping_some_entries() {
        assert_eq!(purge_point(&view(Some(1_000), None, None), 0), Some(1_000));
        assert_eq!(purge_point(&view(Some(1_000), None, None), 100), Some(900));
        // Already purged that far.
        assert_eq!(purge_point(&view(Some(1_000), Some(900), None), 100), None);
        assert_eq!(
            purge_point(&view(Some(1_000), Some(800), None), 100),
            Some(900)
        );
        // Keeping more than the snapshot covers: nothing.
        assert_eq!(purge_point(&view(Some(50), None, None), 100), None);
    }

    #[test]
    fn never_purge_what_the_record_store_may_lack() {
        // Events pending from index 400: keep 400 and everything after it.
        assert_eq!(
            purge_point(&view(Some(1_000), None, Some(400)), 0),
            Some(399)
        );
        assert_eq!(
            purge_point(&view(Some(1_000), None, Some(400)), 100),
            Some(299)
        );
        // Pending from the very first entry: nothing may go.
        assert_eq!(purge_point(&view(Some(1_000), None, Some(1)), 0), None);
        // Pending only past the snapshot: the snapshot bounds it.
        assert_eq!(
            purge_point(&view(Some(1_000), None, Some(5_000)), 0),
            Some(1_000)
        );
    }

    fn reply(node_id: NodeId, snapshot_index: Option<u64>) -> SnapshotIndexReply {
        SnapshotIndexReply {
            node_id,
            snapshot_index,
        }
    }

    #[test]
    fn an_answer_counts_only_from_the_node_asked() {
        assert_eq!(answered_index(2, Some(&reply(2, Some(70)))), Some(70));
        assert_eq!(answered_index(2, Some(&reply(2, None))), Some(0));
        assert_eq!(answered_index(2, Some(&reply(4, Some(70)))), None);
        assert_eq!(answered_index(2, None), None);
    }

    #[test]
    fn the_floor_is_the_lowest_snapshot_and_only_moves_up() {
        // Own snapshot 500, the peer's 300: floor 300, above the current 100.
        assert_eq!(floor_to_publish(500, &[Some(300)], 100), Some(300));
        // The peer is further: the leader's own snapshot bounds it.
        assert_eq!(floor_to_publish(500, &[Some(900)], 100), Some(500));
        // Not above the current floor: nothing to publish.
        assert_eq!(floor_to_publish(500, &[Some(300)], 300), None);
        assert_eq!(floor_to_publish(500, &[Some(200)], 300), None);
        // A single data node (no peers): its own snapshot.
        assert_eq!(floor_to_publish(500, &[], 0), Some(500));
        // No snapshot on the leader yet.
        assert_eq!(floor_to_publish(0, &[Some(300)], 0), None);
    }

    #[test]
    fn a_peer_that_cannot_answer_holds_the_floor() {
        assert_eq!(floor_to_publish(500, &[None], 100), None);
        assert_eq!(floor_to_publish(500, &[Some(400), None], 0), None);
    }
}
