//! openraft's storage test suite over Tally's real log store and real (data-role) state
//! machine, as a node assembles them.

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use tally_raft::state_machine::StateMachine;
use tally_raft::{Role, TypeConfig};
use tally_storage::{LogStore, SnapshotFiles};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachine, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<TypeConfig>, StateMachine), StorageError<TypeConfig>> {
        let fail = |e: &dyn std::fmt::Display| {
            StorageError::read(TypeConfig::err_from_error(&std::io::Error::other(
                e.to_string(),
            )))
        };
        let dir = tempfile::tempdir().map_err(|e| fail(&e))?;
        let log = LogStore::open(&dir.path().join("log")).map_err(|e| fail(&e))?;
        let files = SnapshotFiles::open(&dir.path().join("snapshots"), 3).map_err(|e| fail(&e))?;
        let sm = StateMachine::open(Role::Data, Arc::new(files)).map_err(|e| fail(&e))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_passes_with_the_real_state_machine() {
    Suite::test_all(Builder).await.unwrap();
}
