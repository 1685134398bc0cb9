//! One Tally node: its log, state machine, openraft instance and ingest queue, assembled.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{Fatal, InitializeError, LinearizableReadError, RaftError};
use openraft::storage::RaftLogStorage;
use openraft::{Config, ReadPolicy, ServerState, SnapshotPolicy};
use tally_storage::records::RecordStore;
use tally_storage::{LogStore, SnapshotFiles};

use crate::batcher::{IngestAck, IngestError, IngestQueue};
use crate::clock::{ClockGuard, Stamper};
use crate::error::NotLeader;
use crate::network::HttpNetwork;
use crate::rpc::SnapshotIndexReply;
use crate::sink::{self, SinkConfig, SinkMonitor};
use crate::state_machine::{Raft, SharedState, StateMachine};
use crate::tasks::Tasks;
use crate::types::{NodeId, RaftMetrics, Role, TallyNode, TypeConfig};
use crate::{clock, retention, witness};

pub use crate::options::{NodeOptions, RaftTiming, DEFAULT_WITNESS_MAX_LOG_ENTRIES};

/// Snapshot files kept on disk per node.
const SNAPSHOTS_KEPT: usize = 3;
/// How long [`Node::shutdown`] waits for the background tasks before aborting them.
const TASKS_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(#[from] tally_storage::StorageError),
    #[error("state machine: {0}")]
    StateMachine(#[from] std::io::Error),
    #[error("raft configuration: {0}")]
    Config(#[source] openraft::ConfigError),
    #[error("raft configuration: http client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// Raft has stopped (or failed to start).
    #[error("raft: {0}")]
    Raft(#[source] Fatal<TypeConfig>),
    #[error("raft: {0}")]
    Initialize(#[source] InitializeError<TypeConfig>),
    /// Leadership could not be confirmed with a quorum.
    #[error("raft: {0}")]
    Read(#[source] LinearizableReadError<TypeConfig>),
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    #[error(
        "node {0} is the witness: it cannot acknowledge writes, so it never takes leadership on request"
    )]
    WitnessTarget(NodeId),
    /// The configuration or the data on disk cannot make a node (the message says why).
    #[error("{0}")]
    Invalid(String),
    #[error("timed out: leadership did not move to node {to}: {source}")]
    TransferTimeout {
        to: NodeId,
        #[source]
        source: openraft::metrics::WaitError,
    },
}

impl From<RaftError<TypeConfig, InitializeError<TypeConfig>>> for NodeError {
    fn from(e: RaftError<TypeConfig, InitializeError<TypeConfig>>) -> Self {
        match e {
            RaftError::APIError(e) => NodeError::Initialize(e),
            RaftError::Fatal(f) => NodeError::Raft(f),
        }
    }
}

impl From<RaftError<TypeConfig, LinearizableReadError<TypeConfig>>> for NodeError {
    fn from(e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> Self {
        match e {
            RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => {
                NodeError::NotLeader(NotLeader::from_forward(f))
            }
            RaftError::APIError(e) => NodeError::Read(e),
            RaftError::Fatal(f) => NodeError::Raft(f),
        }
    }
}

/// A running node.
pub struct Node {
    pub id: NodeId,
    pub role: Role,
    pub raft: Raft,
    pub state: SharedState,
    pub log: LogStore<TypeConfig>,
    pub snapshots: Arc<SnapshotFiles>,
    /// A snapshot being received in chunks (`/raft/snapshot-chunk`).
    pub incoming_snapshot: Arc<crate::snapshot_transfer::Incoming>,
    pub ingest: IngestQueue,
    /// Voters' clock samples and the ingest stamps they bound (`crate::clock`).
    pub clock: Arc<ClockGuard>,
    recovered: Arc<AtomicBool>,
    /// The record store, once connected (data nodes with `record_store` only).
    records: Arc<std::sync::OnceLock<RecordStore>>,
    pub sink: SinkMonitor,
    pub options: NodeOptions,
    /// Every background task this node started, joined by [`Node::shutdown`].
    tasks: Tasks,
    /// One membership operation at a time on this node (`crate::membership`).
    pub(crate) membership_op: tokio::sync::Mutex<()>,
}

impl Node {
    /// Opens storage, recovers, and starts Raft. The node joins a cluster when some member
    /// runs [`Node::initialize`] (or it already belongs to one).
    pub async fn start(options: NodeOptions) -> Result<Arc<Node>, NodeError> {
        let raft_dir = options.data_dir.join("raft");
        let log = LogStore::<TypeConfig>::open(&raft_dir.join("log"))?;
        let snapshots = Arc::new(SnapshotFiles::open(
            &raft_dir.join("snapshots"),
            SNAPSHOTS_KEPT,
        )?);
        let sm = StateMachine::open(options.role, snapshots.clone())?;
        let state = sm.shared();
        check_no_gap(&log, &state).await?;

        let config = raft_config(&options)?;
        let network = HttpNetwork::new(options.secret.clone(), options.peer_http())
            .map_err(NodeError::HttpClient)?
            .with_snapshot_chunk_bytes(options.snapshot_chunk_bytes);
        let raft = Raft::new(
            options.id,
            Arc::new(config),
            network.clone(),
            log.clone(),
            sm,
        )
        .await
        .map_err(NodeError::Raft)?;
        let tasks = Tasks::new();
        // Recovery (applying what the cluster committed over this node's log) needs peers,
        // which need our HTTP server: watch for it in the background; `/readyz` reports it.
        let recovered = Arc::new(AtomicBool::new(false));
        tasks.spawn(watch_recovery(raft.clone(), recovered.clone()));
        let clock = Arc::new(ClockGuard::new(options.batcher.max_clock_skew_ms));
        let stamper = Stamper {
            clock: clock.clone(),
            state: state.clone(),
        };
        let ingest = IngestQueue::start(raft.clone(), options.batcher.clone(), stamper, &tasks);
        let records = Arc::new(std::sync::OnceLock::new());
        let sink = SinkMonitor::default();
        match options.role {
            Role::Data => {
                if let Some(url) = options.record_store.clone() {
                    tasks.spawn(connect_records(
                        url,
                        options.record_reads.clone(),
                        raft.clone(),
                        state.clone(),
                        records.clone(),
                        sink.clone(),
                        options.sink.clone(),
                    ));
                }
                tasks.spawn(clock::sample_voters(
                    raft.clone(),
                    network.clone(),
                    clock.clone(),
                ));
                tasks.spawn(retention::publish_snapshot_floor(
                    raft.clone(),
                    state.clone(),
                    network,
                ));
                tasks.spawn(retention::purge_behind_snapshots(
                    raft.clone(),
                    state.clone(),
                    options.record_store.is_some(),
                    options.log_keep_behind_snapshot,
                ));
            }
            Role::Witness => {
                tasks.spawn(witness::hand_leadership_to_data_node(
                    raft.clone(),
                    witness::hand_over_every(&options.timing),
                ));
                tasks.spawn(witness::witness_campaign(
                    raft.clone(),
                    options.timing.clone(),
                ));
                tasks.spawn(witness::witness_purge(
                    raft.clone(),
                    state.clone(),
                    log.clone(),
                    witness::WitnessLogBound {
                        max_entries: options.witness_max_log_entries,
                        max_bytes: options.witness_max_log_bytes,
                    },
                ));
            }
        }
        Ok(Arc::new(Node {
            id: options.id,
            role: options.role,
            raft,
            state,
            log,
            snapshots,
            incoming_snapshot: Arc::new(crate::snapshot_transfer::Incoming::new(&raft_dir)),
            ingest,
            clock,
            recovered,
            records,
            sink,
            options,
            tasks,
            membership_op: tokio::sync::Mutex::new(()),
        }))
    }

    /// Forms the cluster from `options.members`; `Ok(false)` when this node already belongs
    /// to a cluster (init is then a harmless no-op).
    pub async fn initialize(&self) -> Result<bool, NodeError> {
        if self.raft.is_initialized().await.map_err(NodeError::Raft)? {
            return Ok(false);
        }
        let members = initial_members(&self.options)?;
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(e) => {
                // Another member may have formed the cluster in between.
                if self.raft.is_initialized().await.unwrap_or(false) {
                    Ok(false)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// The record store, when this node has one and it has been reached at least once.
    pub fn records(&self) -> Option<&RecordStore> {
        self.records.get()
    }

    /// Whether this node is configured with a record store (it may not be reachable yet).
    pub fn has_record_store(&self) -> bool {
        self.role == Role::Data && self.options.record_store.is_some()
    }

    /// Whether the state machine has applied what the cluster had committed over this node's
    /// log when it started (so reads no longer go back in time across a restart).
    pub fn recovered(&self) -> bool {
        self.recovered.load(Ordering::Acquire)
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Why Raft stopped, if it did: a fatal error (a failed fsync, a storage error) ends
    /// openraft's core for good, and the node is then of no use to its cluster until it is
    /// restarted. `None` while Raft runs.
    pub fn stopped_reason(&self) -> Option<String> {
        match &self.raft.metrics().borrow_watched().running_state {
            Ok(()) => None,
            Err(fatal) => Some(fatal.to_string()),
        }
    }

    /// Resolves once Raft has stopped on a fatal error (or on shutdown), with the reason.
    pub async fn stopped(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(reason) = self.stopped_reason() {
                return reason;
            }
            if metrics.changed().await.is_err() {
                return "raft's metrics channel closed".into();
            }
        }
    }

    /// The leader as this node currently knows it.
    pub fn leader(&self) -> Option<(NodeId, TallyNode)> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Waits up to `timeout` until some leader is known; returns it (or `None`).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<(NodeId, TallyNode)> {
        let _ = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await;
        self.leader()
    }

    /// Resolves once this node knows a leader other than `from`, with its id: the leader a
    /// request was handed to has lost leadership (it stalled, crashed or was cut off).
    pub async fn leader_moved_from(&self, from: NodeId) -> NodeId {
        let mut rx = self.raft.metrics();
        loop {
            let now = rx.borrow_watched().current_leader;
            if let Some(id) = now.filter(|id| *id != from) {
                return id;
            }
            if rx.changed().await.is_err() {
                // Raft stopped: the leader never changes again from here.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Address and role of a member, from the current membership.
    pub fn member(&self, id: NodeId) -> Option<TallyNode> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// Data-node members other than this node, from the current membership.
    pub fn data_peers(&self) -> Vec<(NodeId, TallyNode)> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config
            .membership()
            .nodes()
            .filter(|(id, n)| **id != self.id && !n.witness)
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    /// Snapshot files on disk, newest last; empty when they cannot be listed.
    pub fn snapshot_files(&self) -> Vec<tally_storage::SnapshotFileInfo> {
        self.snapshots.list().unwrap_or_else(|e| {
            tracing::warn!("listing snapshot files: {e}");
            Vec::new()
        })
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.state == ServerState::Leader
    }

    /// Commits `events` as one atomic request; only on the leader (others get `NotLeader`).
    /// `bytes` is the size of the request body, which bounds the entry's size.
    pub async fn ingest(
        &self,
        events: Vec<tally_analytics::Event>,
        bytes: usize,
    ) -> Result<IngestAck, IngestError> {
        if !self.is_leader() {
            return Err(IngestError::NotLeader(NotLeader {
                leader: self.leader(),
            }));
        }
        if self.role == Role::Witness {
            return Err(IngestError::WitnessLeader);
        }
        let backlog = self.has_record_store().then(|| {
            let pending = self.state.read().state.pending_status().pending_events;
            (pending, self.options.sink.max_backlog_events)
        });
        self.ingest.submit(events, bytes, backlog).await
    }

    /// Confirms leadership with a quorum and waits until everything committed before this
    /// call is applied locally; returns the read index. Leader only.
    pub async fn linearizable_barrier(&self) -> Result<u64, NodeError> {
        let read = self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await?;
        Ok(read.index())
    }

    /// The data voter (other than this node) that best qualifies as the next leader: the
    /// one whose replicated log reaches furthest (leader's view), else any data voter.
    pub fn best_successor(&self) -> Option<NodeId> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let progress = m.replication.clone().unwrap_or_default();
        membership
            .voter_ids()
            .filter(|id| *id != self.id)
            .filter(|id| membership.get_node(id).is_some_and(|n| !n.witness))
            .max_by_key(|id| progress.get(id).cloned().flatten().map(|l| l.index))
    }

    /// Hands leadership to `to` and waits (up to `timeout`) until another node leads.
    /// Returns the new leader. Only a data voter can be the target.
    pub async fn transfer_leadership(
        &self,
        to: NodeId,
        timeout: Duration,
    ) -> Result<NodeId, NodeError> {
        match self.member(to) {
            None => return Err(NodeError::NotMember(to)),
            Some(n) if n.witness => return Err(NodeError::WitnessTarget(to)),
            Some(_) => {}
        }
        if !self.is_leader() {
            return Err(NotLeader {
                leader: self.leader().filter(|(id, _)| *id != self.id),
            }
            .into());
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(NodeError::Raft)?;
        let me = self.id;
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "leadership moved",
            )
            .await
            .map_err(|source| NodeError::TransferTimeout { to, source })?;
        Ok(m.current_leader.unwrap_or(to))
    }

    /// Before a planned stop: if this node leads, hand leadership to the best data voter so
    /// writes continue without waiting for an election timeout.
    pub async fn step_down(&self, timeout: Duration) {
        if !self.is_leader() {
            return;
        }
        let Some(to) = self.best_successor() else {
            tracing::warn!("leader stopping with no other data voter to hand over to");
            return;
        };
        match self.transfer_leadership(to, timeout).await {
            Ok(new) => tracing::info!(new_leader = new, "handed leadership over before stopping"),
            Err(e) => tracing::warn!("could not hand leadership over before stopping: {e}"),
        }
    }

    /// Stops Raft, then cancels the node's background tasks and waits (bounded) until they
    /// have ended. The HTTP server should already be closed.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        self.tasks.shutdown(TASKS_SHUTDOWN_TIMEOUT).await;
    }

    /// This node's answer to the leader's snapshot-index RPC (`/raft/snapshot-index`).
    pub fn snapshot_index(&self) -> SnapshotIndexReply {
        SnapshotIndexReply {
            node_id: self.id,
            snapshot_index: self.metrics().snapshot.map(|l| l.index),
        }
    }
}

/// Sets `recovered` once the state machine has applied what the cluster had committed over
/// this node's log when it started.
async fn watch_recovery(raft: Raft, recovered: Arc<AtomicBool>) {
    loop {
        match raft
            .wait_for_recovery(Some(Duration::from_secs(3600)))
            .await
        {
            Ok(_) => {
                recovered.store(true, Ordering::Release);
                return;
            }
            Err(openraft::metrics::WaitError::Timeout(..)) => continue,
            Err(_) => return,
        }
    }
}

/// Connects to the record store (retrying while it is unreachable), then starts the sink.
async fn connect_records(
    url: String,
    reads: tally_storage::records::ReadPoolOptions,
    raft: Raft,
    state: SharedState,
    slot: Arc<std::sync::OnceLock<RecordStore>>,
    monitor: SinkMonitor,
    config: SinkConfig,
) {
    let mut backoff = Duration::from_millis(200);
    let store = loop {
        match RecordStore::connect_with(&url, &reads).await {
            Ok(store) => break store,
            Err(e) => {
                monitor.connect_error(&e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    tracing::info!("record store connected");
    let _ = slot.set(store.clone());
    sink::run(raft, state, store, config, monitor).await;
}

/// Refuses to start when the log was purged past the state we could restore: the entries
/// in between are gone, and applying the rest would silently skip them. (This happens only
/// when the newest snapshot file is corrupt and an older one was used.)
async fn check_no_gap(log: &LogStore<TypeConfig>, state: &SharedState) -> Result<(), NodeError> {
    let mut log = log.clone();
    let log_state = log.get_log_state().await?;
    let purged = log_state.last_purged_log_id.map(|l| l.index);
    let applied = state.read().last_applied.map(|l| l.index);
    if purged > applied {
        return Err(NodeError::Invalid(format!(
            "the log is purged up to index {} but the newest valid snapshot covers only {}: \
             local state cannot be rebuilt; move this node's data_dir away and restart it \
             empty to rejoin from the leader",
            purged.unwrap_or(0),
            applied.map_or("nothing".to_string(), |a| a.to_string())
        )));
    }
    Ok(())
}

fn initial_members(options: &NodeOptions) -> Result<BTreeMap<NodeId, TallyNode>, NodeError> {
    if options.members.is_empty() {
        return Err(NodeError::Invalid(
            "cluster.members is empty: list every member (id = \"host:port\") to form a cluster"
                .into(),
        ));
    }
    if !options.members.contains_key(&options.id) {
        return Err(NodeError::Invalid(format!(
            "this node (id {}) is not listed in cluster.members",
            options.id
        )));
    }
    for w in &options.witnesses {
        if !options.members.contains_key(w) {
            return Err(NodeError::Invalid(format!(
                "cluster.witnesses names node {w}, which is not in cluster.members"
            )));
        }
    }
    let data = options
        .members
        .keys()
        .filter(|id| !options.witnesses.contains(id))
        .count();
    if data == 0 {
        return Err(NodeError::Invalid(
            "a cluster needs at least one data node".into(),
        ));
    }
    if options.members.len() > 1 && options.witnesses.len() >= data {
        return Err(NodeError::Invalid(format!(
            "{} witnesses and {data} data nodes: witnesses must be fewer than data nodes, so \
             that every majority holds a data node (the minimum HA cluster is 2 data + 1 witness)",
            options.witnesses.len()
        )));
    }
    Ok(options
        .members
        .iter()
        .map(|(id, addr)| {
            let node = if options.witnesses.contains(id) {
                TallyNode::witness(addr.clone())
            } else {
                TallyNode::data(addr.clone())
            };
            (*id, node)
        })
        .collect())
}

fn raft_config(options: &NodeOptions) -> Result<Config, NodeError> {
    let t = &options.timing;
    let mut config = Config {
        cluster_name: "tally".into(),
        heartbeat_interval: t.heartbeat_ms,
        election_timeout_min: t.election_min_ms,
        election_timeout_max: t.election_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_threshold.max(1)),
        // Purging is ours (`retention::purge_behind_snapshots`): openraft's automatic purge does not
        // know about the record store.
        max_in_snapshot_log_to_keep: u64::MAX,
        install_snapshot_timeout: 60_000,
        // A node cut off from the leader times out and campaigns; without pre-vote every
        // round raises its term, and when the partition heals that higher term deposes a
        // healthy leader. With pre-vote it first asks whether it could win, and a majority
        // that still hears from the leader says no, so its term stays where it was.
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    if options.role == Role::Witness {
        // The witness never starts an election on its own timer (`witness::witness_campaign` decides
        // when it must), so a data node wins every ordinary election. Its election timeout
        // then only sets its leader lease — how long after the last heartbeat it refuses to
        // vote for someone else — and a short lease lets the surviving data node win its
        // *first* election after the leader dies. Safe: Tally's linearizable reads use
        // ReadIndex (a quorum round), never the lease.
        config.enable_elect = false;
        config.election_timeout_max = (t.election_max_ms / 2).max(t.heartbeat_ms + 2);
        config.election_timeout_min = (t.election_min_ms / 2)
            .max(t.heartbeat_ms + 1)
            .min(config.election_timeout_max - 1);
    }
    config.validate().map_err(NodeError::Config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(role: Role, members: &[(NodeId, &str)], witnesses: &[NodeId]) -> NodeOptions {
        NodeOptions {
            id: 1,
            role,
            data_dir: std::path::PathBuf::from("/nonexistent"),
            secret: "s".into(),
            members: members.iter().map(|(id, a)| (*id, a.to_string())).collect(),
            witnesses: witnesses.iter().copied().collect(),
            timing: RaftTiming::default(),
            snapshot_threshold: 0,
            log_keep_behind_snapshot: 1000,
            batcher: Default::default(),
            record_store: None,
            record_reads: Default::default(),
            sink: SinkConfig::default(),
            source_ip: None,
            peer_tls: None,
            witness_max_log_entries: DEFAULT_WITNESS_MAX_LOG_ENTRIES,
            witness_max_log_bytes: crate::options::DEFAULT_WITNESS_MAX_LOG_BYTES,
            snapshot_chunk_bytes: crate::snapshot_transfer::CHUNK_BYTES,
        }
    }

    const THREE: &[(NodeId, &str)] = &[(1, "h:1"), (2, "h:2"), (3, "h:3")];

    #[test]
    fn the_initial_members_carry_their_roles() {
        let members = initial_members(&options(Role::Data, THREE, &[3])).unwrap();
        assert_eq!(members[&1], TallyNode::data("h:1"));
        assert_eq!(members[&2], TallyNode::data("h:2"));
        assert_eq!(members[&3], TallyNode::witness("h:3"));
        // A single data node is a cluster too.
        assert!(initial_members(&options(Role::Data, &[(1, "h:1")], &[])).is_ok());
    }

    #[test]
    fn an_impossible_initial_cluster_is_refused() {
        let refused = |o: NodeOptions| match initial_members(&o) {
            Err(NodeError::Invalid(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(refused(options(Role::Data, &[], &[])).contains("cluster.members is empty"));
        assert!(refused(options(Role::Data, &[(2, "h:2")], &[]))
            .contains("this node (id 1) is not listed"));
        assert!(refused(options(Role::Data, THREE, &[4])).contains("names node 4"));
        assert!(
            refused(options(Role::Data, &[(1, "h:1")], &[1])).contains("at least one data node")
        );
        assert!(refused(options(Role::Data, THREE, &[2, 3])).contains("2 witnesses and 1 data"));
    }

    #[test]
    fn the_witness_never_campaigns_on_its_own_timer_and_has_a_short_lease() {
        let data = raft_config(&options(Role::Data, THREE, &[3])).unwrap();
        assert!(data.enable_elect);
        assert_eq!(
            (data.election_timeout_min, data.election_timeout_max),
            (300, 500)
        );
        assert_eq!(
            data.max_in_snapshot_log_to_keep,
            u64::MAX,
            "purging is ours"
        );
        let witness = raft_config(&options(Role::Witness, THREE, &[3])).unwrap();
        assert!(!witness.enable_elect);
        assert_eq!(
            (witness.election_timeout_min, witness.election_timeout_max),
            (150, 250)
        );
        // Short timers: the lease still outlasts a heartbeat.
        let mut fast = options(Role::Witness, THREE, &[3]);
        fast.timing = RaftTiming {
            heartbeat_ms: 100,
            election_min_ms: 150,
            election_max_ms: 200,
        };
        let witness = raft_config(&fast).unwrap();
        assert_eq!(
            (witness.election_timeout_min, witness.election_timeout_max),
            (101, 102)
        );
    }
}
