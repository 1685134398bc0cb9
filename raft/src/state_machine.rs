//! The Raft state machine: committed entries in, analytic state out.
//!
//! A data node applies every ingest entry to [`tally_analytics::State`]; a witness applies nothing
//! but the bookkeeping openraft needs (last applied log id, membership). The state a reader
//! sees and the index it was applied to live under one lock, so `applied_index` and `digest`
//! always describe the same state.
//!
//! Snapshots are the analytics crate's versioned encoding, written as checksummed files by
//! [`tally_storage::SnapshotFiles`] *before* openraft is told they exist (openraft purges the
//! log behind a snapshot, so the file must be durable first). A witness's snapshots hold only
//! its position and the snapshot floor, never analytic state: the network refuses to send
//! them and a data node refuses to install them, since an empty state would silently erase
//! a data node's counts.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tally_storage::SnapshotFiles;

use crate::rpc;
use crate::types::{
    LogId, Request, Response, Role, Snapshot, SnapshotData, SnapshotMeta, StoredMembership,
    TypeConfig,
};

/// What has been applied, under one lock.
#[derive(Debug, Default)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Always empty on a witness.
    pub state: tally_analytics::State,
    /// Every data member holds a snapshot covering at least this index (published by the
    /// leader through [`Request::SnapshotFloor`]); the witness purges its log only up to it.
    pub snapshot_floor: u64,
}

impl Applied {
    pub fn applied_index(&self) -> u64 {
        self.last_applied.as_ref().map(|l| l.index).unwrap_or(0)
    }
}

/// Read access to the applied state, shared with the HTTP layer.
///
/// `apply` takes the write lock for each entry, so nothing heavy may run under the read
/// lock: readers take what they need (a bounded query's rows, or a [`FrozenState`] copy,
/// which costs an `Arc` bump per bucket) and do the rest after releasing it, on a blocking
/// thread.
#[derive(Clone, Debug, Default)]
pub struct SharedState {
    applied: Arc<RwLock<Applied>>,
    /// The digest last computed and the applied index it is for. The mutex also makes
    /// digests one at a time: a second request for the same index waits and reuses it.
    digest: Arc<tokio::sync::Mutex<Option<StateDigest>>>,
    /// Digests computed (not served from the cache) since start.
    digests_computed: Arc<AtomicU64>,
}

/// The analytic state's digest at one applied index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDigest {
    pub applied_index: u64,
    pub digest: String,
}

impl SharedState {
    /// A shared state holding `applied` (tests and tools; a node opens its own through
    /// [`StateMachine::open`]).
    pub fn new(applied: Applied) -> Self {
        SharedState {
            applied: Arc::new(RwLock::new(applied)),
            ..SharedState::default()
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A poisoned lock means an apply panicked mid-way; the state is then unknown and
        // serving it would be wrong, but crashing a reader helps nobody either: readers
        // see the state as the panicking writer left it, and the node's Raft core has
        // already stopped (openraft turns the panic into a fatal error).
        self.applied.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.applied.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The digest of the applied state and the index it describes. Computed at most once
    /// per applied index (later calls at the same index reuse it), from a frozen copy
    /// hashed on a blocking thread: the lock is held only to take the copy. The blocking
    /// task owns the cache's mutex until it is done, so however many requests come (or
    /// give up and go), at most one digest is computed at a time.
    pub async fn digest(&self) -> io::Result<StateDigest> {
        let mut cached = self.digest.clone().lock_owned().await;
        let (applied_index, frozen) = {
            let applied = self.read();
            let index = applied.applied_index();
            if let Some(hit) = cached.as_ref().filter(|c| c.applied_index == index) {
                return Ok(hit.clone());
            }
            (index, applied.state.freeze())
        };
        let computed = self.digests_computed.clone();
        tokio::task::spawn_blocking(move || {
            let answer = StateDigest {
                applied_index,
                digest: frozen.digest(),
            };
            computed.fetch_add(1, Ordering::Relaxed);
            *cached = Some(answer.clone());
            answer
        })
        .await
        .map_err(io::Error::other)
    }

    /// Digests computed since start (those served from the cache not counted).
    pub fn digests_computed(&self) -> u64 {
        self.digests_computed.load(Ordering::Relaxed)
    }
}

/// A node's openraft instance. Declared here, beside the state machine it drives, so that
/// `types` does not depend back on this module.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// The openraft state machine of one node.
pub struct StateMachine {
    role: Role,
    shared: SharedState,
    snapshots: Arc<SnapshotFiles>,
}

impl StateMachine {
    /// Opens the state machine, restoring the newest valid snapshot file if there is one.
    pub fn open(role: Role, snapshots: Arc<SnapshotFiles>) -> io::Result<Self> {
        let shared = SharedState::default();
        if let Some(stored) = snapshots.load_latest().map_err(io::Error::other)? {
            let meta: SnapshotMeta = rpc::decode(&stored.meta).map_err(io::Error::other)?;
            let (state, floor) = match role {
                Role::Data => (
                    tally_analytics::State::decode_snapshot(&stored.data)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
                    0,
                ),
                Role::Witness => (tally_analytics::State::new(), witness_floor(&stored.data)),
            };
            let mut applied = shared.write();
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership;
            applied.state = state;
            applied.snapshot_floor = floor;
            tracing::info!(
                index = applied.applied_index(),
                "restored state from snapshot file"
            );
        }
        Ok(StateMachine {
            role,
            shared,
            snapshots,
        })
    }

    pub fn shared(&self) -> SharedState {
        self.shared.clone()
    }

    fn builder(&self) -> SnapshotBuilder {
        SnapshotBuilder {
            role: self.role,
            shared: self.shared.clone(),
            snapshots: self.snapshots.clone(),
        }
    }
}

/// First bytes of a witness's snapshot payload: a position and the snapshot floor, never
/// analytic state. Data nodes refuse to install it, and the network refuses to send it.
pub const WITNESS_PAYLOAD_MAGIC: &[u8; 8] = b"TALLYWIT";

fn witness_payload(floor: u64) -> Vec<u8> {
    let mut out = WITNESS_PAYLOAD_MAGIC.to_vec();
    out.extend_from_slice(&floor.to_le_bytes());
    out
}

/// The floor recorded in a witness payload (0 when there is none).
fn witness_floor(payload: &[u8]) -> u64 {
    match payload.strip_prefix(WITNESS_PAYLOAD_MAGIC.as_slice()) {
        Some(rest) if rest.len() == 8 => u64::from_le_bytes(rest.try_into().unwrap_or([0; 8])),
        _ => 0,
    }
}

/// Whether snapshot bytes are a witness's (position only, no analytic state).
pub fn is_witness_payload(data: &[u8]) -> bool {
    data.starts_with(WITNESS_PAYLOAD_MAGIC)
}

/// Builds a snapshot and persists it before reporting it. A data node's holds its analytic
/// state; a witness's only its position (which lets openraft purge the witness's log up to
/// the snapshot floor).
pub struct SnapshotBuilder {
    role: Role,
    shared: SharedState,
    snapshots: Arc<SnapshotFiles>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Under the lock: only the position and a frozen copy of the state (an `Arc` bump
        // per bucket and per chunk), so apply waits microseconds, not for the encoding.
        let (meta, content) = {
            let applied = self.shared.read();
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
            };
            let content = match self.role {
                Role::Data => Content::Analytic(Box::new(applied.state.freeze())),
                Role::Witness => Content::Position(witness_payload(applied.snapshot_floor)),
            };
            (meta, content)
        };
        let meta_bytes = rpc::encode(&meta).map_err(io::Error::other)?;
        let order = meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0);
        let id = snapshot_id(self.role, &meta);
        let files = self.snapshots.clone();
        // Encoding and writing run on a blocking thread, while apply goes on.
        let (saved, data) = tokio::task::spawn_blocking(move || {
            let data = match content {
                Content::Analytic(frozen) => frozen.encode_snapshot(),
                Content::Position(payload) => payload,
            };
            let saved = files.save(order, &id, &meta_bytes, &data);
            (saved, data)
        })
        .await
        .map_err(io::Error::other)?;
        saved.map_err(io::Error::other)?;
        tracing::info!(index = order, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

/// What a snapshot holds, before it is encoded.
enum Content {
    Analytic(Box<tally_analytics::FrozenState>),
    Position(Vec<u8>),
}

/// `term-node-index`, prefixed `w-` for a witness's position-only snapshot.
fn snapshot_id(role: Role, meta: &SnapshotMeta) -> String {
    let prefix = if role == Role::Witness { "w-" } else { "" };
    match &meta.last_log_id {
        Some(l) => format!(
            "{prefix}{}-{}-{}",
            l.leader_id.term, l.leader_id.node_id, l.index
        ),
        None => format!("{prefix}0-0-0"),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            // The lock is taken per entry and never across an await: readers see whole
            // entries applied, with the matching index.
            let response = {
                let mut applied = self.shared.write();
                applied.last_applied = Some(entry.log_id);
                match &entry.payload {
                    EntryPayload::Blank => Response::default(),
                    EntryPayload::Normal(
                        request @ (Request::Ingest(_)
                        | Request::IngestCapped { .. }
                        | Request::IngestBudgeted { .. }),
                    ) => match (self.role, request.ingest()) {
                        // The caps come from the entry, never from this node's config.
                        (Role::Data, Some((batch, caps))) => Response {
                            outcomes: applied.state.apply_capped(entry.log_id.index, batch, &caps),
                            applied_analytics: true,
                        },
                        _ => Response::default(),
                    },
                    EntryPayload::Normal(Request::SinkCursor(cursor)) => {
                        if self.role == Role::Data {
                            applied.state.advance_sink(entry.log_id.index, *cursor);
                        }
                        Response::default()
                    }
                    EntryPayload::Normal(Request::SnapshotFloor(floor)) => {
                        applied.snapshot_floor = applied.snapshot_floor.max(*floor);
                        Response::default()
                    }
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Response::default()
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<SnapshotBuilder> {
        Some(self.builder())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.builder()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let (state, stored_data) = match self.role {
            // Decoding a large state takes a while: on a blocking thread.
            Role::Data => {
                let (decoded, snapshot) = tokio::task::spawn_blocking(move || {
                    (tally_analytics::State::decode_snapshot(&snapshot), snapshot)
                })
                .await
                .map_err(io::Error::other)?;
                let state = decoded
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                (Some(state), snapshot)
            }
            // The witness keeps only the position (so it can restart consistently with a
            // log purged behind it) and drops the analytic bytes.
            Role::Witness => (None, witness_payload(self.shared.read().snapshot_floor)),
        };
        // Durable first: openraft purges the log behind an installed snapshot.
        let meta_bytes = rpc::encode(meta).map_err(io::Error::other)?;
        let order = meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0);
        let id = snapshot_id(self.role, meta);
        let files = self.snapshots.clone();
        tokio::task::spawn_blocking(move || files.save(order, &id, &meta_bytes, &stored_data))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;

        let replaced = {
            let mut applied = self.shared.write();
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            std::mem::replace(&mut applied.state, state.unwrap_or_default())
        };
        // Freeing a large state takes a while: not under the lock, not on this worker.
        tokio::task::spawn_blocking(move || drop(replaced));
        tracing::info!(
            index = order,
            role = self.role.as_str(),
            "installed snapshot"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        // A witness's snapshot is position-only; `network::PeerClient::full_snapshot`
        // refuses to send it, so a data node can never install it as (empty) state.
        let files = self.snapshots.clone();
        let stored = tokio::task::spawn_blocking(move || files.load_latest())
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        match stored {
            None => Ok(None),
            Some(stored) => {
                let meta: SnapshotMeta = rpc::decode(&stored.meta).map_err(io::Error::other)?;
                Ok(Some(Snapshot {
                    meta,
                    snapshot: stored.data,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Entry;
    use openraft::testing::log_id;
    use tally_analytics::{Event, IngestBatch};

    fn event(id: &str) -> Event {
        Event {
            event_id: id.into(),
            ts_ms: 1_800_000_000_000,
            api_name: "A".into(),
            api_version: "1".into(),
            response_code: Some(200),
            ..Event::default()
        }
    }

    fn ingest_entry(index: u64, ids: &[&str]) -> Entry {
        Entry {
            log_id: log_id::<TypeConfig>(1, 1, index),
            payload: EntryPayload::Normal(Request::Ingest(IngestBatch {
                ingest_ms: 1_800_000_000_000,
                requests: vec![ids.iter().map(|i| event(i)).collect()],
            })),
        }
    }

    async fn apply_all(sm: &mut StateMachine, entries: Vec<Entry>) {
        let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
        sm.apply(stream).await.unwrap();
    }

    fn open(role: Role, dir: &std::path::Path) -> StateMachine {
        let files = SnapshotFiles::open(dir, 3).unwrap();
        StateMachine::open(role, Arc::new(files)).unwrap()
    }

    #[tokio::test]
    async fn data_node_applies_and_restores_from_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(Role::Data, dir.path());
        apply_all(
            &mut sm,
            vec![ingest_entry(1, &["a", "b"]), ingest_entry(2, &["b", "c"])],
        )
        .await;
        let shared = sm.shared();
        let (index, digest, events) = {
            let a = shared.read();
            (
                a.applied_index(),
                a.state.digest(),
                a.state.stats().events_applied,
            )
        };
        assert_eq!((index, events), (2, 3));

        let mut builder = sm
            .try_create_snapshot_builder(false)
            .await
            .expect("data builds");
        let snap = builder.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(2));
        assert!(sm.get_current_snapshot().await.unwrap().is_some());

        let reopened = open(Role::Data, dir.path()).shared();
        let a = reopened.read();
        assert_eq!(a.applied_index(), 2);
        assert_eq!(a.state.digest(), digest);
    }

    #[tokio::test]
    async fn witness_applies_nothing_and_its_snapshots_hold_no_analytics() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(Role::Witness, dir.path());
        let floor = Entry {
            log_id: log_id::<TypeConfig>(1, 1, 2),
            payload: EntryPayload::Normal(Request::SnapshotFloor(1)),
        };
        apply_all(&mut sm, vec![ingest_entry(1, &["a", "b"]), floor]).await;
        let shared = sm.shared();
        {
            let a = shared.read();
            assert_eq!(a.applied_index(), 2);
            assert_eq!(a.snapshot_floor, 1);
            assert_eq!(a.state.stats().events_applied, 0);
            assert_eq!(a.state.digest(), tally_analytics::State::new().digest());
        }
        // Its snapshot is position-only: no analytics, refused by data nodes.
        let snap = sm
            .try_create_snapshot_builder(true)
            .await
            .unwrap()
            .build_snapshot()
            .await
            .unwrap();
        assert!(is_witness_payload(&snap.snapshot));
        assert!(tally_analytics::State::decode_snapshot(&snap.snapshot).is_err());
        let data_dir = tempfile::tempdir().unwrap();
        let mut data = open(Role::Data, data_dir.path());
        assert!(data
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .is_err());
        assert_eq!(data.shared().read().applied_index(), 0);

        // Installing a data node's snapshot keeps the position, drops the analytics, and
        // keeps the floor across a restart.
        apply_all(
            &mut data,
            vec![
                ingest_entry(1, &["a"]),
                ingest_entry(2, &["z"]),
                ingest_entry(3, &["y"]),
            ],
        )
        .await;
        let snap = data
            .try_create_snapshot_builder(false)
            .await
            .unwrap()
            .build_snapshot()
            .await
            .unwrap();
        sm.install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(sm.shared().read().applied_index(), 3);
        assert_eq!(sm.shared().read().state.stats().events_applied, 0);
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert!(is_witness_payload(&current.snapshot));
        let reopened = open(Role::Witness, dir.path());
        assert_eq!(reopened.shared().read().applied_index(), 3);
        assert_eq!(reopened.shared().read().snapshot_floor, 1);
    }

    #[tokio::test]
    async fn digests_are_computed_once_per_applied_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(Role::Data, dir.path());
        apply_all(&mut sm, vec![ingest_entry(1, &["a", "b"])]).await;
        let shared = sm.shared();
        let expected = shared.read().state.digest();
        // Two at once at a new index: one computes, the other waits and reuses it.
        let (first, second) = tokio::join!(shared.digest(), shared.digest());
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(first, second);
        assert_eq!(first.applied_index, 1);
        assert_eq!(first.digest, expected);
        assert_eq!(shared.digests_computed(), 1);
        for _ in 0..3 {
            assert_eq!(shared.digest().await.unwrap(), first);
        }
        assert_eq!(
            shared.digests_computed(),
            1,
            "same index: served from the cache"
        );

        apply_all(&mut sm, vec![ingest_entry(2, &["c"])]).await;
        let moved = shared.digest().await.unwrap();
        assert_eq!(moved.applied_index, 2);
        assert_ne!(moved.digest, first.digest);
        assert_eq!(moved.digest, shared.read().state.digest());
        assert_eq!(shared.digests_computed(), 2);
    }

    /// A request that gives up while its digest is computed neither stops the computation
    /// nor lets the next request start a second one: the next waits and reuses it.
    #[tokio::test]
    async fn an_abandoned_digest_request_still_fills_the_cache() {
        use futures::FutureExt;
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(Role::Data, dir.path());
        apply_all(&mut sm, vec![ingest_entry(1, &["a", "b"])]).await;
        let shared = sm.shared();
        // Polled once (it takes the mutex and starts hashing), then dropped.
        let abandoned = Box::pin(shared.digest()).now_or_never();
        let answer = shared.digest().await.unwrap();
        assert_eq!(answer.digest, shared.read().state.digest());
        if let Some(first) = abandoned {
            assert_eq!(first.unwrap(), answer);
        }
        assert_eq!(shared.digests_computed(), 1);
    }

    /// The snapshot is encoded from a copy taken under the lock: entries applied while it
    /// is written do not leak into it, and its bytes are those of the state at its index.
    #[tokio::test]
    async fn a_snapshot_holds_the_state_at_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(Role::Data, dir.path());
        apply_all(&mut sm, vec![ingest_entry(1, &["a", "b"])]).await;
        let shared = sm.shared();
        let at_one = shared.read().state.encode_snapshot();
        let mut builder = sm.get_snapshot_builder().await;
        let building = tokio::spawn(async move { builder.build_snapshot().await });
        apply_all(&mut sm, vec![ingest_entry(2, &["c"])]).await;
        let snap = building.await.unwrap().unwrap();
        let index = snap.meta.last_log_id.map(|l| l.index);
        let state = tally_analytics::State::decode_snapshot(&snap.snapshot).unwrap();
        // Whichever side of entry 2 the copy was taken on, it is that index's state.
        match index {
            Some(1) => assert_eq!(snap.snapshot, at_one),
            Some(2) => assert_eq!(state.digest(), shared.read().state.digest()),
            other => panic!("snapshot at {other:?}"),
        }
        assert_eq!(state.applied_index(), index.unwrap());
    }

    #[tokio::test]
    async fn data_node_refuses_a_snapshot_without_analytic_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(Role::Data, dir.path());
        let meta = SnapshotMeta {
            last_log_id: Some(log_id::<TypeConfig>(1, 3, 9)),
            last_membership: StoredMembership::default(),
        };
        assert!(sm.install_snapshot(&meta, Vec::new()).await.is_err());
        assert_eq!(sm.shared().read().applied_index(), 0);
    }
}
