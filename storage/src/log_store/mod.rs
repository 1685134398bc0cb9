//! The Raft log on sled: entries, vote, committed and last-purged log ids.
//!
//! Layout: tree `logs` maps the big-endian index to the bincode entry; tree `meta` holds
//! `vote`, `committed` and `last_purged`. Both live in sled's single `db` file, so one flush
//! plus one fsync ([`crate::fsync`]) makes every tree durable at once.
//!
//! Durability points, and why:
//! - `append`: entries are visible when it returns; its `IOFlushed` callback fires only after
//!   flush + fsync, from a blocking thread, so the async executor never waits on the disk.
//! - `save_vote`, `truncate_after`, `purge`: durable before they return (vote is required by
//!   Raft; truncate and purge are rare, so syncing them costs little and keeps disk == memory).
//! - `save_committed`: written but not synced. A stale committed id only makes a restart
//!   re-apply fewer entries (it catches up from the leader); it rides along with the next sync.
//!
//! Group commit: every mutation takes a sequence number after it is applied in memory; a sync
//! records the highest number it covers, so appends that land while an fsync is running are
//! covered by one following fsync instead of one each.

mod raft;
#[cfg(test)]
mod tests;

use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::codec::key_index;
use crate::fsync::SledFiles;
use crate::StorageError;

/// Bounds sled's page cache (its default is 1 GiB): the log is read back mostly near its tail.
const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

const LOGS_TREE: &str = "logs";
const META_TREE: &str = "meta";

/// Keys in the `meta` tree.
pub(crate) mod meta_key {
    pub const VOTE: &str = "vote";
    pub const COMMITTED: &str = "committed";
    pub const LAST_PURGED: &str = "last_purged";
}

/// How far the log is known to be on stable storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Completed flush + fsync rounds since open.
    pub fsyncs: u64,
    /// Highest log index that was in the log when the last completed sync started, i.e. known
    /// durable. Updated after the fsync and before any `IOFlushed` callback it covers. It moves
    /// back only when the log itself does (a truncation, then a sync).
    pub synced_last_index: Option<u64>,
}

/// Shape of the log, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    /// Number of entries; the log has no holes, so this is `last - first + 1`.
    pub entries: u64,
    /// Bytes of the stored entries (their encodings; sled's own overhead not counted).
    pub bytes: u64,
}

/// The Raft log store. Cheap to clone: clones share one sled database, one set of file handles
/// and one set of counters, so a clone serves as openraft's `LogReader`.
pub struct LogStore<C> {
    pub(crate) inner: Arc<Inner>,
    // `fn() -> C`: the store holds no `C`, so it is Send + Sync whatever `C` is.
    _config: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            inner: self.inner.clone(),
            _config: PhantomData,
        }
    }
}

impl<C> LogStore<C> {
    /// Opens (creating if needed) the log store in `dir`, and makes the directory durable.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            // No background flusher: we flush (and really fsync) at every durability point
            // ourselves, so the thread would only add unaccounted syncs.
            .flush_every_ms(None)
            .open()?;
        let logs = db.open_tree(LOGS_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        // Trees just created exist only in memory: flush so the fsync below covers them.
        db.flush()?;
        let files = SledFiles::open(dir)?;
        // What the stored entries weigh, counted once here and kept up to date by every
        // append and removal (bounded by the log's own size, which retention bounds).
        let mut log_bytes = 0u64;
        for value in logs.iter().values() {
            log_bytes += value?.len() as u64;
        }
        Ok(LogStore {
            inner: Arc::new(Inner {
                db,
                logs,
                meta,
                log_bytes: AtomicU64::new(log_bytes),
                written: AtomicU64::new(0),
                failed: AtomicBool::new(false),
                sync: Mutex::new(SyncState { files, synced: 0 }),
                stats: Mutex::new(SyncStats::default()),
                #[cfg(test)]
                sync_delay_ms: AtomicU64::new(0),
            }),
            _config: PhantomData,
        })
    }

    /// How far the log is known durable; see [`SyncStats`].
    pub fn sync_stats(&self) -> SyncStats {
        *lock(&self.inner.stats)
    }

    /// First/last index and entry count, from two O(log n) lookups. For metrics: a read error
    /// is logged and reported as an empty log rather than failing the scrape.
    pub fn log_stats(&self) -> LogStats {
        let bounds = self
            .inner
            .first_index()
            .and_then(|first| Ok((first, self.inner.last_index()?)));
        let (first_index, last_index) = match bounds {
            Ok(bounds) => bounds,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read log bounds for stats");
                (None, None)
            }
        };
        let entries = match (first_index, last_index) {
            (Some(first), Some(last)) if last >= first => last - first + 1,
            _ => 0,
        };
        LogStats {
            first_index,
            last_index,
            entries,
            bytes: self.inner.log_bytes.load(Ordering::Relaxed),
        }
    }

    /// Flushes and fsyncs everything written so far (e.g. a `save_committed`), for a planned
    /// shutdown. Blocks the calling thread; never needed for correctness.
    pub fn sync_now(&self) -> Result<(), StorageError> {
        self.inner.sync_through(self.inner.mark_written())
    }
}

/// The state shared by all clones of a [`LogStore`]. Not generic, so it is compiled once.
pub(crate) struct Inner {
    pub(crate) db: sled::Db,
    pub(crate) logs: sled::Tree,
    pub(crate) meta: sled::Tree,
    /// Bytes of the values in `logs`.
    pub(crate) log_bytes: AtomicU64,
    /// Sequence number of the last mutation applied in memory.
    written: AtomicU64,
    /// Set once a sync failed; every later write is refused (see `StorageError::SyncFailed`).
    failed: AtomicBool,
    /// Serialises flush + fsync rounds.
    sync: Mutex<SyncState>,
    /// Kept apart from `sync` so reading stats never waits behind an fsync.
    stats: Mutex<SyncStats>,
    /// Test hook: sleep this long inside a sync before flushing, to widen race windows.
    #[cfg(test)]
    pub(crate) sync_delay_ms: AtomicU64,
}

struct SyncState {
    files: SledFiles,
    /// Every mutation with a sequence number up to this one is durable.
    synced: u64,
}

impl Inner {
    /// Refuses writes after a failed sync: memory may be ahead of a disk we can no longer trust.
    pub(crate) fn check_writable(&self) -> Result<(), StorageError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(StorageError::SyncFailed("refusing writes".into()));
        }
        Ok(())
    }

    /// Records that a mutation has been applied in memory; returns its sequence number, to be
    /// passed to [`Inner::sync_through`]. Call it after the sled write returned.
    pub(crate) fn mark_written(&self) -> u64 {
        self.written.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Blocks until mutation `ticket` (and all before it) is flushed and fsynced.
    pub(crate) fn sync_through(&self, ticket: u64) -> Result<(), StorageError> {
        let mut state = lock(&self.sync);
        if self.failed.load(Ordering::SeqCst) {
            return Err(StorageError::SyncFailed("an earlier sync failed".into()));
        }
        if state.synced >= ticket {
            // A sync that started after this mutation already covered it.
            return Ok(());
        }
        // Read both before flushing: whatever they describe is already in memory, so the
        // flush below covers it. Later writes may be covered too, but we do not claim them.
        let covers = self.written.load(Ordering::SeqCst);
        let last_index = self.last_index()?;

        #[cfg(test)]
        std::thread::sleep(std::time::Duration::from_millis(
            self.sync_delay_ms.load(Ordering::SeqCst),
        ));

        let result = self
            .db
            .flush()
            .map_err(StorageError::from)
            .and_then(|_| state.files.sync());
        if let Err(e) = result {
            self.failed.store(true, Ordering::SeqCst);
            tracing::error!(error = %e, "log sync failed; the log store refuses further writes");
            return Err(StorageError::SyncFailed(e.to_string()));
        }
        state.synced = covers;
        let mut stats = lock(&self.stats);
        stats.fsyncs += 1;
        stats.synced_last_index = last_index;
        Ok(())
    }

    pub(crate) fn first_index(&self) -> Result<Option<u64>, StorageError> {
        self.logs.first()?.map(|(k, _)| key_index(&k)).transpose()
    }

    pub(crate) fn last_index(&self) -> Result<Option<u64>, StorageError> {
        self.logs.last()?.map(|(k, _)| key_index(&k)).transpose()
    }
}

/// Locks a mutex, ignoring poisoning: the data under our mutexes stays consistent even if a
/// holder panicked (counters and file handles), and a panic must not wedge the log.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs blocking disk work off the async executor when there is a tokio runtime, inline
/// otherwise (e.g. a plain test thread).
pub(crate) async fn run_blocking<T, F>(f: F) -> Result<T, StorageError>
where
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => match handle.spawn_blocking(f).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only happens while the runtime shuts down.
            Err(e) => Err(StorageError::io(
                "<blocking task>",
                std::io::Error::other(e.to_string()),
            )),
        },
        Err(_) => f(),
    }
}
