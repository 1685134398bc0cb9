//! The Raft state machine: committed entries in, analytic state out.
//!
//! A data node applies every ingest entry to [`analytics::State`]; a witness applies nothing
//! but the bookkeeping openraft needs (last applied log id, membership). The state a reader
//! sees and the index it was applied to live under one lock, so `applied_index` and `digest`
//! always describe the same state.
//!
//! Snapshots are the analytics crate's versioned encoding, written as checksummed files by
//! [`tally_storage::SnapshotFiles`] *before* openraft is told they exist (openraft purges the
//! log behind a snapshot, so the file must be durable first). A witness never builds a
//! snapshot and never offers one: it has no analytic state to ship, and shipping an empty one
//! would silently erase a data node's counts.

use std::io;
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
    pub state: analytics::State,
}

impl Applied {
    pub fn applied_index(&self) -> u64 {
        self.last_applied.as_ref().map(|l| l.index).unwrap_or(0)
    }
}

/// Read access to the applied state, shared with the HTTP layer.
#[derive(Clone, Debug, Default)]
pub struct SharedState(Arc<RwLock<Applied>>);

impl SharedState {
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A poisoned lock means an apply panicked mid-way; the state is then unknown and
        // serving it would be wrong, but crashing a reader helps nobody either: readers
        // see the state as the panicking writer left it, and the node's Raft core has
        // already stopped (openraft turns the panic into a fatal error).
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

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
            let state = match role {
                Role::Data => analytics::State::decode_snapshot(&stored.data)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
                Role::Witness => analytics::State::new(),
            };
            let mut applied = shared.write();
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership;
            applied.state = state;
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
            shared: self.shared.clone(),
            snapshots: self.snapshots.clone(),
        }
    }
}

/// Builds a snapshot of a data node's state and persists it before reporting it.
pub struct SnapshotBuilder {
    shared: SharedState,
    snapshots: Arc<SnapshotFiles>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (meta, data) = {
            let applied = self.shared.read();
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
            };
            (meta, applied.state.encode_snapshot())
        };
        let meta_bytes = rpc::encode(&meta).map_err(io::Error::other)?;
        let order = meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0);
        let id = snapshot_id(&meta);
        let files = self.snapshots.clone();
        let (saved, data) = tokio::task::spawn_blocking(move || {
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

fn snapshot_id(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
        None => "0-0-0".to_string(),
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
                    EntryPayload::Normal(Request::Ingest(batch)) => match self.role {
                        Role::Data => Response {
                            outcomes: applied.state.apply(entry.log_id.index, batch),
                            applied_analytics: true,
                        },
                        Role::Witness => Response::default(),
                    },
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
        match self.role {
            Role::Data => Some(self.builder()),
            // A witness has no analytic state: it never builds a snapshot, so it also never
            // purges its log behind one and can always feed a data node from the log.
            Role::Witness => None,
        }
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.builder()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let state = match self.role {
            Role::Data => Some(
                analytics::State::decode_snapshot(&snapshot)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
            ),
            // The witness keeps only the position (so it can restart consistently with a
            // log purged behind it) and drops the analytic bytes.
            Role::Witness => None,
        };
        let stored_data = if state.is_some() {
            snapshot
        } else {
            Vec::new()
        };
        // Durable first: openraft purges the log behind an installed snapshot.
        let meta_bytes = rpc::encode(meta).map_err(io::Error::other)?;
        let order = meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0);
        let id = snapshot_id(meta);
        let files = self.snapshots.clone();
        tokio::task::spawn_blocking(move || files.save(order, &id, &meta_bytes, &stored_data))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;

        let mut applied = self.shared.write();
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        applied.state = state.unwrap_or_default();
        tracing::info!(
            index = order,
            role = self.role.as_str(),
            "installed snapshot"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        if self.role == Role::Witness {
            return Ok(None);
        }
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
