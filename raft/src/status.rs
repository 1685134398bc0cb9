//! The node's status ([`NodeStatus`]), gathered once for `/v1/cluster` and `/metrics`.
//! (The raft crate never reads a peer's status: the snapshot floor travels over Raft RPC,
//! `crate::retention`.)

use std::sync::atomic::Ordering;

use openraft::ServerState;
use tally_protocol::{
    IngestStatus, LogStatus, MemberStatus, NodeStatus, OverflowStatus, RaftState, RetentionStatus,
    SinkDetail, SinkStatus, SnapshotFileStatus, StateStatus,
};

use crate::node::Node;
use crate::types::{LogId, RaftMetrics};

fn index(l: &Option<LogId>) -> Option<u64> {
    l.as_ref().map(|l| l.index)
}

fn raft_state(s: ServerState) -> RaftState {
    match s {
        ServerState::Learner => RaftState::Learner,
        ServerState::Follower => RaftState::Follower,
        ServerState::Candidate => RaftState::Candidate,
        ServerState::Leader => RaftState::Leader,
        ServerState::Shutdown => RaftState::Shutdown,
    }
}

/// Every member of the membership in `m`, with `voter` meaning "in `voters`" and the
/// replication progress the leader knows.
pub fn member_statuses(m: &RaftMetrics, voters: &[u64]) -> Vec<MemberStatus> {
    let replication = m.replication.clone().unwrap_or_default();
    m.membership_config
        .membership()
        .nodes()
        .map(|(id, n)| MemberStatus {
            id: *id,
            addr: n.addr.clone(),
            role: n.role(),
            voter: voters.contains(id),
            matched_index: replication.get(id).and_then(index),
        })
        .collect()
}

impl Node {
    /// Everything this node knows about itself and the cluster, as one value.
    pub fn status(&self) -> NodeStatus {
        self.gather_status(true)
    }

    /// [`Node::status`] without the snapshot file list, which reads files: for `/metrics`,
    /// which scrapers poll often and which has no use for it.
    pub fn status_in_memory(&self) -> NodeStatus {
        self.gather_status(false)
    }

    fn gather_status(&self, with_snapshot_files: bool) -> NodeStatus {
        let m = self.metrics();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let members = member_statuses(&m, &voters);
        let (applied_index, stats, snapshot_floor, pending) = {
            let applied = self.state.read();
            (
                applied.applied_index(),
                applied.state.stats(),
                applied.snapshot_floor,
                applied.state.pending_status(),
            )
        };
        let sync = self.log.sync_stats();
        let log = self.log.log_stats();
        let files = if with_snapshot_files {
            self.snapshot_files()
        } else {
            Vec::new()
        };
        let snapshots = files
            .into_iter()
            .map(|s| SnapshotFileStatus {
                index: s.order,
                id: s.id,
                bytes: s.size,
            })
            .collect();
        let ingest = self.ingest.stats();
        let caps = self.options.batcher.key_caps;
        let enabled = self.has_record_store();
        let watermark = pending
            .oldest_pending_index
            .map_or(applied_index, |o| o.saturating_sub(1));
        let detail = enabled.then(|| {
            let report = self.sink.report();
            SinkDetail {
                active: report.active,
                connected: self.records().is_some(),
                store_cursor: report.store_cursor,
                watermark,
                lag_entries: applied_index.saturating_sub(watermark),
                max_backlog_events: self.options.sink.max_backlog_events as u64,
                events_written: report.events_written,
                events_already_present: report.events_already_present,
                transactions: report.transactions,
                last_write_ms: report.last_write_ms,
                last_error: report.last_error,
                last_error_ms: report.last_error_ms,
                consecutive_errors: report.consecutive_errors,
            }
        });
        let sink = SinkStatus {
            enabled,
            replicated_cursor: pending.cursor,
            pending_events: pending.pending_events as u64,
            oldest_pending_index: pending.oldest_pending_index,
            dropped_events: pending.dropped_events,
            detail,
        };
        NodeStatus {
            node_id: self.id,
            role: self.role,
            raft_state: raft_state(m.state),
            leader_id: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            committed_index: index(&m.local_committed),
            cluster_committed_index: index(&m.cluster_committed),
            applied_index,
            snapshot_index: index(&m.snapshot),
            purged_index: index(&m.purged),
            members,
            log: LogStatus {
                first_index: log.first_index,
                last_index: log.last_index,
                entries: log.entries,
                fsyncs: sync.fsyncs,
                synced_index: sync.synced_last_index,
                bytes: log.bytes,
            },
            snapshots,
            retention: RetentionStatus {
                snapshot_floor,
                witness_max_log_entries: self.options.witness_max_log_entries,
                witness_max_log_bytes: self.options.witness_max_log_bytes,
            },
            state: StateStatus {
                buckets_minute: stats.buckets_minute as u64,
                buckets_hour: stats.buckets_hour as u64,
                buckets_day: stats.buckets_day as u64,
                dedup_ids: stats.dedup_ids as u64,
                events_applied: stats.events_applied,
                overflow: OverflowStatus {
                    events_minute: stats.overflow_events.minute,
                    events_hour: stats.overflow_events.hour,
                    events_day: stats.overflow_events.day,
                    keys_minute: stats.overflow_keys_minute as u64,
                    keys_hour: stats.overflow_keys_hour as u64,
                    keys_day: stats.overflow_keys_day as u64,
                    max_keys_per_tenant_bucket: caps.max_keys_per_tenant_bucket.into(),
                    max_tenants_per_bucket: caps.max_tenants_per_bucket.into(),
                    max_rows_per_granularity: caps.max_rows_per_granularity.into(),
                },
            },
            ingest: IngestStatus {
                requests: ingest.requests.load(Ordering::Relaxed),
                events: ingest.events.load(Ordering::Relaxed),
                entries: ingest.entries.load(Ordering::Relaxed),
                rejected_overload: ingest.rejected_overload.load(Ordering::Relaxed),
            },
            sink,
            clock: self.clock.status(),
        }
    }
}
