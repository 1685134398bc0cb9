//! One Tally node: its log, state machine, openraft instance and ingest queue, assembled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftLogStorage;
use openraft::Instant as _;
use openraft::{Config, ReadPolicy, ServerState, SnapshotPolicy};
use tally_storage::records::RecordStore;
use tally_storage::{LogStore, SnapshotFiles};

use crate::batcher::{BatcherConfig, IngestAck, IngestError, IngestQueue};
use crate::network::HttpNetwork;
use crate::sink::{self, SinkConfig, SinkMonitor};
use crate::state_machine::{SharedState, StateMachine};
use crate::types::{NodeId, Raft, RaftMetrics, Request, Role, TallyNode, TypeConfig};

/// Snapshot files kept on disk per node.
const SNAPSHOTS_KEPT: usize = 3;

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
    pub sink: SinkConfig,
    /// Local IP that outbound connections to peers are made from (`None`: the OS picks).
    pub source_ip: Option<std::net::IpAddr>,
    /// A witness keeps at most this many log entries beyond the snapshot floor; past it, it
    /// purges anyway (a data node down that long must then be rebuilt from the other data
    /// node's snapshot).
    pub witness_max_log_entries: u64,
}

/// Default of [`NodeOptions::witness_max_log_entries`].
pub const DEFAULT_WITNESS_MAX_LOG_ENTRIES: u64 = 1_000_000;

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

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(#[from] tally_storage::StorageError),
    #[error("state machine: {0}")]
    StateMachine(#[from] std::io::Error),
    #[error("raft configuration: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("{0}")]
    Invalid(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

/// A running node.
pub struct Node {
    pub id: NodeId,
    pub role: Role,
    pub raft: Raft,
    pub state: SharedState,
    pub log: LogStore<TypeConfig>,
    pub snapshots: Arc<SnapshotFiles>,
    pub ingest: IngestQueue,
    recovered: Arc<AtomicBool>,
    /// The record store, once connected (data nodes with `record_store` only).
    records: Arc<std::sync::OnceLock<RecordStore>>,
    pub sink: SinkMonitor,
    pub options: NodeOptions,
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
        let network = HttpNetwork::new(options.secret.clone(), options.source_ip)
            .map_err(|e| NodeError::Config(format!("http client: {e}")))?;
        let raft = Raft::new(options.id, Arc::new(config), network, log.clone(), sm)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        // Recovery (applying what the cluster committed over this node's log) needs peers,
        // which need our HTTP server: watch for it in the background; `/readyz` reports it.
        let recovered = Arc::new(AtomicBool::new(false));
        {
            let raft = raft.clone();
            let recovered = recovered.clone();
            tokio::spawn(async move {
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
            });
        }
        let ingest = IngestQueue::start(raft.clone(), options.batcher.clone());
        if options.role == Role::Witness {
            let every = Duration::from_millis(options.timing.heartbeat_ms.max(10) * 2);
            tokio::spawn(hand_leadership_to_data_node(raft.clone(), every));
            tokio::spawn(witness_campaign(raft.clone(), options.timing.clone()));
        }
        let records = Arc::new(std::sync::OnceLock::new());
        let sink = SinkMonitor::default();
        if let (Role::Data, Some(url)) = (options.role, options.record_store.clone()) {
            tokio::spawn(connect_records(
                url,
                raft.clone(),
                state.clone(),
                records.clone(),
                sink.clone(),
                options.sink.clone(),
            ));
        }
        match options.role {
            Role::Data => {
                tokio::spawn(publish_snapshot_floor(raft.clone(), state.clone()));
            }
            Role::Witness => {
                tokio::spawn(witness_purge(
                    raft.clone(),
                    state.clone(),
                    options.witness_max_log_entries,
                ));
            }
        }
        if options.role == Role::Data {
            tokio::spawn(purge_behind_snapshots(
                raft.clone(),
                state.clone(),
                options.record_store.is_some(),
                options.log_keep_behind_snapshot,
            ));
        }
        Ok(Arc::new(Node {
            id: options.id,
            role: options.role,
            raft,
            state,
            log,
            snapshots,
            ingest,
            recovered,
            records,
            sink,
            options,
        }))
    }

    /// Forms the cluster from `options.members`; `Ok(false)` when this node already belongs
    /// to a cluster (init is then a harmless no-op).
    pub async fn initialize(&self) -> Result<bool, NodeError> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?
        {
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
                    Err(NodeError::Raft(e.to_string()))
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
            return Err(IngestError::NotLeader {
                leader: self.leader(),
            });
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
        let read = self
            .raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
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
            None => return Err(NodeError::Invalid(format!("node {to} is not a member"))),
            Some(n) if n.witness => {
                return Err(NodeError::Invalid(format!(
                    "node {to} is the witness: it cannot acknowledge writes, so it never takes leadership on request"
                )))
            }
            Some(_) => {}
        }
        if !self.is_leader() {
            return Err(NodeError::Invalid("this node is not the leader".into()));
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let me = self.id;
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "leadership moved",
            )
            .await
            .map_err(|e| {
                NodeError::Timeout(format!("leadership did not move to node {to}: {e}"))
            })?;
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

    /// Stops Raft. The HTTP server should already be closed.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}

/// Connects to the record store (retrying while it is unreachable), then starts the sink.
async fn connect_records(
    url: String,
    raft: Raft,
    state: SharedState,
    slot: Arc<std::sync::OnceLock<RecordStore>>,
    monitor: SinkMonitor,
    config: SinkConfig,
) {
    let mut backoff = Duration::from_millis(200);
    let store = loop {
        match RecordStore::connect(&url).await {
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

/// Purges the log behind snapshots, but never past an event the record store may still
/// lack: the sink queue in the replicated state already carries those events, and keeping
/// their log entries too means an operator can always rebuild them from the log.
async fn purge_behind_snapshots(raft: Raft, state: SharedState, has_sink: bool, keep: u64) {
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
        let Some(snapshot) = snapshot else { continue };
        let oldest_pending = if has_sink {
            state.read().state.pending_status().oldest_pending_index
        } else {
            None
        };
        let floor = oldest_pending.map_or(snapshot, |oldest| oldest.saturating_sub(1));
        let upto = snapshot.min(floor).saturating_sub(keep);
        if upto > 0 && Some(upto) > purged {
            if let Err(e) = raft.trigger().purge_log(upto).await {
                tracing::debug!("purge: {e}");
                return;
            }
        }
    }
}

/// On the leader: learns how far every data member's snapshot reaches and publishes the
/// minimum as [`Request::SnapshotFloor`], so the witness knows what it may purge. A data
/// member that cannot be asked (down) holds the floor where it was.
async fn publish_snapshot_floor(raft: Raft, state: SharedState) {
    let Ok(http) = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()
    else {
        return;
    };
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
            let members: Vec<(NodeId, String)> = m
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, n)| **id != m.id && !n.witness)
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect();
            (m.id, m.snapshot.map(|l| l.index).unwrap_or(0), members)
        };
        let mut floor = own;
        for (id, addr) in members {
            let index = async {
                let v: serde_json::Value = http
                    .get(format!("http://{addr}/v1/cluster"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (v["node_id"].as_u64() == Some(id))
                    .then(|| v["snapshot_index"].as_u64().unwrap_or(0))
            }
            .await;
            match index {
                Some(i) => floor = floor.min(i),
                None => {
                    floor = 0;
                    break;
                }
            }
        }
        let current = state.read().snapshot_floor;
        if floor > current {
            tracing::debug!(leader = me, floor, "publishing snapshot floor");
            if let Err(e) = raft.client_write(Request::SnapshotFloor(floor)).await {
                tracing::debug!("publishing snapshot floor: {e}");
            }
        }
    }
}

/// On the witness: purges the log up to the snapshot floor (what every data member holds in
/// a snapshot), and beyond it only when more than `max_entries` would be kept.
async fn witness_purge(raft: Raft, state: SharedState, max_entries: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned_at = 0u64;
    loop {
        tick.tick().await;
        let (snapshot, purged, last) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            if m.running_state.is_err() {
                return;
            }
            (
                m.snapshot.map(|l| l.index),
                m.purged.map(|l| l.index).unwrap_or(0),
                m.last_log_index.unwrap_or(0),
            )
        };
        let Some(snapshot) = snapshot else { continue };
        let floor = state.read().snapshot_floor;
        let mut upto = snapshot.min(floor);
        let over_bound = last.saturating_sub(max_entries);
        if over_bound > upto {
            let forced = over_bound.min(snapshot);
            if forced > upto && forced > warned_at {
                tracing::warn!(
                    floor,
                    purge_to = forced,
                    max_entries,
                    "witness log over its bound: purging past the snapshot floor; a data node \
                     behind index {forced} can now only be rebuilt from the other data node"
                );
                warned_at = forced + max_entries / 10;
            }
            upto = upto.max(forced);
        }
        if upto > purged {
            if let Err(e) = raft.trigger().purge_log(upto).await {
                tracing::debug!("witness purge: {e}");
                return;
            }
        }
    }
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

/// A witness can win an election (e.g. when a data node's vote request was refused under the
/// dead leader's lease and the witness's own timer fired next), but it cannot acknowledge
/// writes. While it leads, it hands leadership to the first data voter that holds its whole
/// log; until one does, writes get a clear 503 (`witness_leader`).
async fn hand_leadership_to_data_node(raft: Raft, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let target = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            if m.state != ServerState::Leader {
                continue;
            }
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            m.replication.as_ref().and_then(|progress| {
                progress
                    .iter()
                    .find(|(id, matched)| {
                        voters.contains(*id)
                            && membership.get_node(*id).is_some_and(|n| !n.witness)
                            && matched.as_ref().map(|l| l.index) == m.last_log_index
                    })
                    .map(|(id, _)| *id)
            })
        };
        if let Some(to) = target {
            tracing::info!(
                to,
                "witness is leader: handing leadership to an up-to-date data node"
            );
            if raft.trigger().transfer_leader(to).await.is_err() {
                return; // Raft has stopped.
            }
        }
    }
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
        // Purging is ours (`purge_behind_snapshots`): openraft's automatic purge does not
        // know about the record store.
        max_in_snapshot_log_to_keep: u64::MAX,
        install_snapshot_timeout: 60_000,
        ..Default::default()
    };
    if options.role == Role::Witness {
        // The witness never starts an election on its own timer (`witness_campaign` decides
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
    config
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))
}

/// On the witness: campaign only when no leader has been heard of for one and a half data
/// election timeouts — time enough for the surviving data node's first election — i.e. the
/// data nodes could not elect one of themselves, typically because the only live data node
/// lacks entries that the witness holds. The witness then leads as caretaker
/// (`hand_leadership_to_data_node`).
async fn witness_campaign(raft: Raft, timing: RaftTiming) {
    let quiet_limit = Duration::from_millis(timing.election_max_ms * 3 / 2 + timing.heartbeat_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(timing.heartbeat_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_leader_heard = std::time::Instant::now();
    loop {
        tick.tick().await;
        let (leading, following) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            if m.running_state.is_err() {
                return;
            }
            (
                m.state == ServerState::Leader,
                m.current_leader.is_some() && m.vote.is_committed(),
            )
        };
        let now = std::time::Instant::now();
        if leading {
            last_leader_heard = now;
            continue;
        }
        if following {
            // A follower's vote is refreshed by every heartbeat of the leader it follows:
            // its age is the time since the leader was last heard.
            let Ok(since_vote) = raft
                .with_raft_state(|st| st.vote_last_modified().map(|t| t.elapsed()))
                .await
            else {
                return;
            };
            if let Some(heard) = since_vote.and_then(|age| now.checked_sub(age)) {
                last_leader_heard = last_leader_heard.max(heard);
            }
        }
        if last_leader_heard.elapsed() > quiet_limit {
            tracing::info!("no leader for {quiet_limit:?}: the witness campaigns as caretaker");
            if raft.trigger().elect(false).await.is_err() {
                return;
            }
            last_leader_heard = std::time::Instant::now();
        }
    }
}
