//! openraft's storage conformance suite against `LogStore`.
//!
//! The suite needs a state machine too. This one is test-only and minimal: it tracks the last
//! applied log id and membership, and keeps its snapshots in `SnapshotFiles`, so the suite also
//! round-trips openraft's `SnapshotMeta` through our snapshot file format with bincode.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::type_config::TypeConfigExt;
use openraft::{OptionalSend, StorageError as RaftStorageError};
use tally_storage::{LogStore, SnapshotFiles};
use tempfile::TempDir;

openraft::declare_raft_types!(pub TestConfig: D = String, R = String);

type Meta = SnapshotMetaOf<TestConfig>;

#[derive(Default)]
struct Applied {
    last_applied: Option<LogIdOf<TestConfig>>,
    membership: StoredMembershipOf<TestConfig>,
    snapshots_built: u64,
}

/// Cheap to clone; clones share state, so a clone is also the snapshot builder.
#[derive(Clone)]
struct TestStateMachine {
    applied: Arc<Mutex<Applied>>,
    snapshots: Arc<SnapshotFiles>,
}

impl TestStateMachine {
    fn open(dir: &Path) -> Result<Self, tally_storage::StorageError> {
        Ok(TestStateMachine {
            applied: Arc::default(),
            snapshots: Arc::new(SnapshotFiles::open(dir, 2)?),
        })
    }
}

fn encode_meta(meta: &Meta) -> io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(meta, bincode::config::standard()).map_err(io::Error::other)
}

fn decode_meta(bytes: &[u8]) -> io::Result<Meta> {
    let (meta, _) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(io::Error::other)?;
    Ok(meta)
}

impl RaftSnapshotBuilder<TestConfig> for TestStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TestConfig, Vec<u8>>, io::Error> {
        let (meta, seq) = {
            let mut applied = self.applied.lock().unwrap();
            applied.snapshots_built += 1;
            let meta = Meta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
            };
            (meta, applied.snapshots_built)
        };
        let order = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let id = format!("{order}-{seq}");
        // The state is entirely in the meta; the data part is a marker.
        let data = b"test-state".to_vec();
        self.snapshots
            .save(order, &id, &encode_meta(&meta)?, &data)?;
        Ok(SnapshotOf::<TestConfig, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TestConfig> for TestStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TestConfig>>, StoredMembershipOf<TestConfig>), io::Error> {
        let applied = self.applied.lock().unwrap();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TestConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            {
                let mut applied = self.applied.lock().unwrap();
                applied.last_applied = Some(entry.log_id());
                if let Some(membership) = entry.get_membership() {
                    applied.membership =
                        StoredMembershipOf::<TestConfig>::new(Some(entry.log_id()), membership);
                }
            }
            if let Some(responder) = responder {
                responder.send(String::new());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Vec<u8>) -> Result<(), io::Error> {
        let order = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        self.snapshots.save(
            order,
            &format!("{order}-installed"),
            &encode_meta(meta)?,
            &snapshot,
        )?;
        let mut applied = self.applied.lock().unwrap();
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TestConfig, Vec<u8>>>, io::Error> {
        let Some(stored) = self.snapshots.load_latest()? else {
            return Ok(None);
        };
        Ok(Some(SnapshotOf::<TestConfig, Vec<u8>> {
            meta: decode_meta(&stored.meta)?,
            snapshot: stored.data,
        }))
    }
}

/// A fresh `LogStore` and state machine in a new temp dir; the dir lives as long as the guard.
struct TempDirBuilder;

impl StoreBuilder<TestConfig, LogStore<TestConfig>, TestStateMachine, TempDir> for TempDirBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<TestConfig>, TestStateMachine), RaftStorageError<TestConfig>>
    {
        let dir = tempfile::tempdir()
            .map_err(|e| RaftStorageError::read(TestConfig::err_from_error(&e)))?;
        let to_raft =
            |e: tally_storage::StorageError| RaftStorageError::read(TestConfig::err_from_error(&e));
        let log = LogStore::open(&dir.path().join("log")).map_err(to_raft)?;
        let sm = TestStateMachine::open(&dir.path().join("snapshots")).map_err(to_raft)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(TempDirBuilder).await.unwrap();
}
