//! Tally's durable storage: the Raft log on sled, the snapshot files, and the SQL record
//! store.
//!
//! Job: keep what Raft and the state machine need to survive a crash, and the analytic
//! records users query.
//!
//! - [`LogStore`] implements openraft's `RaftLogStorage`/`RaftLogReader` on sled: entries,
//!   vote, committed and last-purged log ids.
//! - [`SnapshotFiles`] writes state-machine snapshots as checksummed files and keeps the newest
//!   few.
//! - [`records`] is the record store (MySQL/MariaDB or SQLite through sqlx): the sink's
//!   exactly-once write and the read-only SQL endpoint's engine. It has its own error type,
//!   [`records::RecordError`], and documents its invariants in its module doc.
//!
//! Invariants (of the log and snapshots):
//!
//! 1. **Acknowledged means durable.** A vote is on stable storage before `save_vote` returns;
//!    appended entries are on stable storage before their `IOFlushed` callback fires. "On stable
//!    storage" means a real `fdatasync`/`fsync` of sled's files after sled's own flush, which
//!    only issues `sync_file_range` (the `fsync` module lists exactly which files are synced).
//!    [`LogStore::sync_stats`] exposes this so tests can check it rather than trust it.
//! 2. **No holes.** Appends, truncations and purges are single atomic sled batches; reads check
//!    that indexes are consecutive and fail loudly otherwise.
//! 3. **A failed fsync is final.** After one, the kernel may have dropped the dirty pages, so the
//!    log store refuses every later write instead of reporting success it cannot prove.
//! 4. **A snapshot is whole or ignored.** Snapshot files are written to a temp file, fsynced,
//!    renamed and the directory fsynced; a file whose SHA-256 does not verify is skipped with a
//!    warning and an older one is used.

mod codec;
mod error;
mod fsync;
mod log_store;
pub mod records;
mod snapshot_files;

pub use error::StorageError;
pub use log_store::{LogStats, LogStore, SyncStats};
pub use snapshot_files::{SnapshotFileInfo, SnapshotFiles, StoredSnapshot};
