//! `GET /v1/cluster`: one node's view of itself and of the cluster.

use serde::{Deserialize, Serialize};

/// What a node does with committed entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Applies every entry to the analytic state, builds snapshots, serves reads.
    Data,
    /// Stores the log and votes; applies nothing.
    Witness,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Data => "data",
            Role::Witness => "witness",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "data" => Ok(Role::Data),
            "witness" => Ok(Role::Witness),
            other => Err(format!(
                "unknown role {other:?}: expected \"data\" or \"witness\""
            )),
        }
    }
}

/// The node's Raft server state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftState {
    /// Receives the log but does not vote (a node being added).
    Learner,
    Follower,
    Candidate,
    Leader,
    /// Raft has stopped on this node (shutdown, or a fatal storage error).
    Shutdown,
}

impl RaftState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RaftState::Learner => "Learner",
            RaftState::Follower => "Follower",
            RaftState::Candidate => "Candidate",
            RaftState::Leader => "Leader",
            RaftState::Shutdown => "Shutdown",
        }
    }
}

impl std::fmt::Display for RaftState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /v1/cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub role: Role,
    pub raft_state: RaftState,
    /// The leader as this node knows it.
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    /// Committed index known to this node's log.
    pub committed_index: Option<u64>,
    /// Committed index of the cluster (the leader's view; a follower learns it with heartbeats).
    pub cluster_committed_index: Option<u64>,
    /// Index applied to this node's state machine.
    pub applied_index: u64,
    /// Index covered by this node's newest snapshot.
    pub snapshot_index: Option<u64>,
    /// Index up to which this node's log is purged.
    pub purged_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    pub log: LogStatus,
    /// Snapshot files on disk, oldest first.
    pub snapshots: Vec<SnapshotFileStatus>,
    pub retention: RetentionStatus,
    pub state: StateStatus,
    pub ingest: IngestStatus,
    pub sink: SinkStatus,
    /// How this node's clock compares with its voters' (a node of the previous version
    /// answered without it).
    #[serde(default)]
    pub clock: ClockStatus,
}

impl NodeStatus {
    pub fn is_leader(&self) -> bool {
        self.raft_state == RaftState::Leader
    }

    /// The member with this id, from this node's membership.
    pub fn member(&self, id: u64) -> Option<&MemberStatus> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The voters of this node's membership.
    pub fn voters(&self) -> impl Iterator<Item = &MemberStatus> {
        self.members.iter().filter(|m| m.voter)
    }
}

/// One member of the cluster as this node's membership lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    /// `host:port` peers reach it at.
    pub addr: String,
    pub role: Role,
    /// A voter (else a learner being caught up).
    pub voter: bool,
    /// Last log index known replicated to it; only the leader knows (`None` elsewhere).
    pub matched_index: Option<u64>,
}

/// The answer of a membership operation (`POST /v1/cluster/members`, `DELETE
/// /v1/cluster/members/{id}`, `POST /v1/cluster/leader`): what it did and the membership it
/// left, as the leader that ran it sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipAnswer {
    /// Whether the operation changed anything (repeating a finished one changes nothing).
    pub changed: bool,
    pub message: String,
    /// The leader after the operation (after a hand-over: the new one).
    pub leader_id: Option<u64>,
    /// The voters of the newest configuration.
    pub voters: Vec<u64>,
    /// A joint configuration (old and new voters) is still in force.
    pub joint: bool,
    /// Every member; `voter` as in the newest configuration.
    pub members: Vec<MemberStatus>,
}

/// The local Raft log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStatus {
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    pub entries: u64,
    /// Completed flush + fsync rounds since the node started.
    pub fsyncs: u64,
    /// Highest index known durable on disk.
    pub synced_index: Option<u64>,
    /// Bytes of the stored entries (absent from nodes before it was counted).
    #[serde(default)]
    pub bytes: u64,
}

/// One snapshot file on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFileStatus {
    /// The log index it covers.
    pub index: u64,
    pub id: String,
    pub bytes: u64,
}

/// What the witness may purge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionStatus {
    /// Every data member holds a snapshot covering this index: the witness purges up to here.
    pub snapshot_floor: u64,
    /// Past this many entries the witness purges beyond the floor.
    pub witness_max_log_entries: u64,
    /// Likewise past this many bytes of entries (absent from nodes before the byte bound).
    #[serde(default)]
    pub witness_max_log_bytes: u64,
}

/// The analytic state held in memory (zero on a witness).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateStatus {
    pub buckets_minute: u64,
    pub buckets_hour: u64,
    pub buckets_day: u64,
    pub dedup_ids: u64,
    /// Distinct events counted since the state began.
    pub events_applied: u64,
    /// The distinct-key cap. Defaults to zeros: a node of the previous version had none.
    #[serde(default)]
    pub overflow: OverflowStatus,
}

/// The distinct-key cap: what folded into `"__other__"` overflow keys, and the caps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverflowStatus {
    /// Events folded into an overflow key since the state began, per granularity
    /// (replicated: equal on every data node at the same applied index).
    pub events_minute: u64,
    pub events_hour: u64,
    pub events_day: u64,
    /// Rows held in memory whose key is an overflow key, per granularity.
    pub keys_minute: u64,
    pub keys_hour: u64,
    pub keys_day: u64,
    /// The caps this node stamps into the entries it proposes while it leads (entries
    /// apply with the caps they carry, whoever proposed them).
    pub max_keys_per_tenant_bucket: u64,
    pub max_tenants_per_bucket: u64,
    /// The row budget per granularity this node stamps (0 in a node of the version before
    /// the budget).
    #[serde(default)]
    pub max_rows_per_granularity: u64,
}

/// Ingest proposed by this node while it led.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestStatus {
    pub requests: u64,
    pub events: u64,
    /// Raft entries proposed (group commits).
    pub entries: u64,
    /// Requests refused because the queue was full.
    pub rejected_overload: u64,
}

/// The ingest time a leader stamps into entries, and the voters' clocks that bound it.
///
/// Every data node samples its voters' wall clocks about once a second; the leader stamps
/// each ingest entry with its own clock, held within `max_skew_ms` of the time a majority
/// of voters' clocks have reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockStatus {
    /// Most a stamp may differ from the majority's clock (`[raft] max_clock_skew_ms`).
    #[serde(default)]
    pub max_skew_ms: u64,
    /// This node's wall clock (epoch ms) when the status was taken.
    #[serde(default)]
    pub local_ms: i64,
    /// The newest time a majority of voters' clocks (this node's included) have reached;
    /// `None` while fewer than a majority have a fresh sample.
    #[serde(default)]
    pub majority_ms: Option<i64>,
    /// This node's clock minus `majority_ms` (positive: this node is ahead).
    #[serde(default)]
    pub ahead_ms: Option<i64>,
    /// What bounds a stamp made now.
    #[serde(default)]
    pub bound: ClockBound,
    /// A stamp made now would not be this node's clock: it is more than `max_skew_ms`
    /// off the bound.
    #[serde(default)]
    pub clamping: bool,
    /// Ingest entries this node stamped with a time other than its own clock.
    #[serde(default)]
    pub clamped_total: u64,
    /// The newest ingest time this node stamped.
    #[serde(default)]
    pub last_stamp_ms: Option<i64>,
    /// The other voters, by id.
    #[serde(default)]
    pub peers: Vec<PeerClockStatus>,
}

/// What bounds the ingest time a node stamps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockBound {
    /// A majority of voters' clocks (the normal case).
    Majority,
    /// No fresh majority: the last trusted time, carried forward by the monotonic clock.
    Monotonic,
    /// Nothing known yet (or a node that samples nobody): the local clock as it is.
    #[default]
    Local,
}

impl ClockBound {
    pub fn as_str(&self) -> &'static str {
        match self {
            ClockBound::Majority => "majority",
            ClockBound::Monotonic => "monotonic",
            ClockBound::Local => "local",
        }
    }
}

/// One voter's clock as this node estimates it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerClockStatus {
    pub id: u64,
    /// The peer's clock minus this node's (positive: the peer is ahead); `None` without a
    /// fresh sample (down, cut off, or too slow to answer).
    pub skew_ms: Option<i64>,
    /// Round trip of the newest sample (the estimate is good to about half of it).
    pub rtt_ms: Option<u64>,
    /// Age of the newest sample.
    pub sample_age_ms: Option<u64>,
}

/// The record-store sink and the pending queue it drains.
///
/// A data node without a record store still queues counted events (bounded by dropping
/// the oldest), so the queue's figures are always there; the rest only with a store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStatus {
    /// This node has a record store.
    pub enabled: bool,
    // The queue's figures default to zero: a node of the previous version answered only
    // `{"enabled": false}` without a record store.
    /// Log index up to which the record store holds every event, as replicated.
    #[serde(default)]
    pub replicated_cursor: u64,
    /// Counted events not yet confirmed in the store.
    #[serde(default)]
    pub pending_events: u64,
    #[serde(default)]
    pub oldest_pending_index: Option<u64>,
    /// Events dropped at the pending queue's cap (never written).
    #[serde(default)]
    pub dropped_events: u64,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<SinkDetail>,
}

/// Where the record-store sink stands (nodes with a record store).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkDetail {
    /// This node's sink is writing (it leads and has a record store).
    pub active: bool,
    /// The record store has been reached at least once.
    pub connected: bool,
    /// The store's cursor as this node last read or wrote it.
    pub store_cursor: Option<u64>,
    /// Index up to which the store is known complete.
    pub watermark: u64,
    /// Applied entries beyond the watermark.
    pub lag_entries: u64,
    /// Pending events beyond which ingest answers 503.
    pub max_backlog_events: u64,
    pub events_written: u64,
    pub events_already_present: u64,
    pub transactions: u64,
    pub last_write_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    pub consecutive_errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sink: SinkStatus) -> NodeStatus {
        NodeStatus {
            node_id: 1,
            role: Role::Data,
            raft_state: RaftState::Leader,
            leader_id: Some(1),
            term: 3,
            last_log_index: Some(10),
            committed_index: Some(10),
            cluster_committed_index: Some(10),
            applied_index: 10,
            snapshot_index: None,
            purged_index: None,
            members: vec![MemberStatus {
                id: 1,
                addr: "127.0.0.1:7101".into(),
                role: Role::Data,
                voter: true,
                matched_index: Some(10),
            }],
            log: LogStatus::default(),
            snapshots: vec![],
            retention: RetentionStatus::default(),
            state: StateStatus::default(),
            ingest: IngestStatus::default(),
            sink,
            clock: ClockStatus::default(),
        }
    }

    #[test]
    fn a_disabled_sink_shows_only_its_queue() {
        let json = serde_json::to_value(sample(SinkStatus::default())).unwrap();
        assert_eq!(
            json["sink"],
            serde_json::json!({"enabled": false, "replicated_cursor": 0, "pending_events": 0,
                "oldest_pending_index": null, "dropped_events": 0})
        );
        assert_eq!(json["raft_state"], "Leader");
        assert_eq!(json["role"], "data");
        let back: NodeStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.sink, SinkStatus::default());
    }

    #[test]
    fn an_enabled_sink_round_trips_flat() {
        let detail = SinkDetail {
            active: true,
            connected: true,
            watermark: 7,
            last_error: Some("boom".into()),
            ..Default::default()
        };
        let status = sample(SinkStatus {
            enabled: true,
            pending_events: 3,
            detail: Some(detail),
            ..Default::default()
        });
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["sink"]["enabled"], true);
        assert_eq!(json["sink"]["watermark"], 7);
        assert_eq!(json["sink"]["last_error"], "boom");
        assert_eq!(json["sink"]["pending_events"], 3);
        let back: NodeStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
    }

    #[test]
    fn the_previous_versions_disabled_sink_still_parses() {
        let mut json = serde_json::to_value(sample(SinkStatus::default())).unwrap();
        json["sink"] = serde_json::json!({"enabled": false});
        let back: NodeStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.sink, SinkStatus::default());
    }

    /// The wire names of `GET /v1/cluster` are a contract (docs/api.md): every client reads
    /// them through these types, so a renamed field would pass every other test. This one
    /// pins the whole JSON of a full status.
    #[test]
    fn the_wire_format_is_pinned() {
        let mut status = sample(SinkStatus {
            enabled: true,
            replicated_cursor: 4,
            pending_events: 5,
            oldest_pending_index: Some(6),
            dropped_events: 7,
            detail: Some(SinkDetail {
                active: true,
                connected: true,
                store_cursor: Some(4),
                watermark: 5,
                lag_entries: 5,
                max_backlog_events: 200_000,
                events_written: 8,
                events_already_present: 9,
                transactions: 2,
                last_write_ms: Some(1_000),
                last_error: None,
                last_error_ms: None,
                consecutive_errors: 0,
            }),
        });
        status.snapshot_index = Some(8);
        status.purged_index = Some(3);
        status.log = LogStatus {
            first_index: Some(4),
            last_index: Some(10),
            entries: 7,
            fsyncs: 11,
            synced_index: Some(10),
            bytes: 700,
        };
        status.snapshots = vec![SnapshotFileStatus {
            index: 8,
            id: "1-8".into(),
            bytes: 512,
        }];
        status.retention = RetentionStatus {
            snapshot_floor: 8,
            witness_max_log_entries: 1_000_000,
            witness_max_log_bytes: 4_294_967_296,
        };
        status.state = StateStatus {
            buckets_minute: 1,
            buckets_hour: 2,
            buckets_day: 3,
            dedup_ids: 4,
            events_applied: 5,
            overflow: OverflowStatus {
                events_minute: 6,
                events_hour: 7,
                events_day: 8,
                keys_minute: 1,
                keys_hour: 2,
                keys_day: 3,
                max_keys_per_tenant_bucket: 200,
                max_tenants_per_bucket: 10,
                max_rows_per_granularity: 250_000,
            },
        };
        status.ingest = IngestStatus {
            requests: 1,
            events: 2,
            entries: 3,
            rejected_overload: 4,
        };
        status.clock = ClockStatus {
            max_skew_ms: 10_000,
            local_ms: 1_800_000_000_000,
            majority_ms: Some(1_799_999_999_000),
            ahead_ms: Some(1_000),
            bound: ClockBound::Majority,
            clamping: false,
            clamped_total: 2,
            last_stamp_ms: Some(1_799_999_998_000),
            peers: vec![
                PeerClockStatus {
                    id: 2,
                    skew_ms: Some(-1_000),
                    rtt_ms: Some(1),
                    sample_age_ms: Some(400),
                },
                PeerClockStatus {
                    id: 3,
                    skew_ms: None,
                    rtt_ms: None,
                    sample_age_ms: None,
                },
            ],
        };
        let expected = serde_json::json!({
            "node_id": 1, "role": "data", "raft_state": "Leader", "leader_id": 1, "term": 3,
            "last_log_index": 10, "committed_index": 10, "cluster_committed_index": 10,
            "applied_index": 10, "snapshot_index": 8, "purged_index": 3,
            "members": [{"id": 1, "addr": "127.0.0.1:7101", "role": "data", "voter": true,
                "matched_index": 10}],
            "log": {"first_index": 4, "last_index": 10, "entries": 7, "fsyncs": 11,
                "synced_index": 10, "bytes": 700},
            "snapshots": [{"index": 8, "id": "1-8", "bytes": 512}],
            "retention": {"snapshot_floor": 8, "witness_max_log_entries": 1_000_000,
                "witness_max_log_bytes": 4_294_967_296u64},
            "state": {"buckets_minute": 1, "buckets_hour": 2, "buckets_day": 3,
                "dedup_ids": 4, "events_applied": 5,
                "overflow": {"events_minute": 6, "events_hour": 7, "events_day": 8,
                    "keys_minute": 1, "keys_hour": 2, "keys_day": 3,
                    "max_keys_per_tenant_bucket": 200, "max_tenants_per_bucket": 10,
                    "max_rows_per_granularity": 250_000}},
            "ingest": {"requests": 1, "events": 2, "entries": 3, "rejected_overload": 4},
            "sink": {"enabled": true, "replicated_cursor": 4, "pending_events": 5,
                "oldest_pending_index": 6, "dropped_events": 7, "active": true,
                "connected": true, "store_cursor": 4, "watermark": 5, "lag_entries": 5,
                "max_backlog_events": 200_000, "events_written": 8,
                "events_already_present": 9, "transactions": 2, "last_write_ms": 1_000,
                "last_error": null, "last_error_ms": null, "consecutive_errors": 0},
            "clock": {"max_skew_ms": 10_000, "local_ms": 1_800_000_000_000_i64,
                "majority_ms": 1_799_999_999_000_i64, "ahead_ms": 1_000, "bound": "majority",
                "clamping": false, "clamped_total": 2, "last_stamp_ms": 1_799_999_998_000_i64,
                "peers": [{"id": 2, "skew_ms": -1_000, "rtt_ms": 1, "sample_age_ms": 400},
                    {"id": 3, "skew_ms": null, "rtt_ms": null, "sample_age_ms": null}]},
        });
        assert_eq!(serde_json::to_value(&status).unwrap(), expected);
        let back: NodeStatus = serde_json::from_value(expected).unwrap();
        assert_eq!(back, status);
    }

    #[test]
    fn a_status_without_clock_still_parses() {
        let mut json = serde_json::to_value(sample(SinkStatus::default())).unwrap();
        json.as_object_mut().unwrap().remove("clock");
        let back: NodeStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.clock, ClockStatus::default());
    }

    #[test]
    fn the_previous_versions_state_without_overflow_still_parses() {
        let mut json = serde_json::to_value(sample(SinkStatus::default())).unwrap();
        json["state"] = serde_json::json!({"buckets_minute": 1, "buckets_hour": 2,
            "buckets_day": 3, "dedup_ids": 4, "events_applied": 5});
        let back: NodeStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.state.overflow, OverflowStatus::default());
        assert_eq!(back.state.events_applied, 5);
        // A node of the version before the row budget reports the caps without it.
        let mut json = serde_json::to_value(sample(SinkStatus::default())).unwrap();
        json["state"]["overflow"] = serde_json::json!({"events_minute": 1, "events_hour": 1,
            "events_day": 1, "keys_minute": 1, "keys_hour": 1, "keys_day": 1,
            "max_keys_per_tenant_bucket": 200, "max_tenants_per_bucket": 10});
        let back: NodeStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.state.overflow.max_rows_per_granularity, 0);
        assert_eq!(back.state.overflow.max_tenants_per_bucket, 10);
    }

    #[test]
    fn the_membership_answer_is_pinned() {
        let answer = MembershipAnswer {
            changed: true,
            message: "node 4 added".into(),
            leader_id: Some(1),
            voters: vec![1, 2, 3],
            joint: false,
            members: vec![],
        };
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            serde_json::json!({"changed": true, "message": "node 4 added", "leader_id": 1,
                "voters": [1, 2, 3], "joint": false, "members": []})
        );
    }

    #[test]
    fn roles_parse_and_print() {
        assert_eq!("witness".parse::<Role>().unwrap(), Role::Witness);
        assert!("leader".parse::<Role>().is_err());
        assert_eq!(Role::Data.to_string(), "data");
    }
}
