//! openraft's `RaftLogReader` and `RaftLogStorage` for [`LogStore`].

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::Ordering;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{LogIdOf, VoteOf};
use openraft::{OptionalSend, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{meta_key, run_blocking, LogStore};
use crate::codec::{decode, encode, index_key, key_index};
use crate::StorageError;

/// One `limited_get_log_entries` call returns at most this many bytes of entries (but always at
/// least one entry), so a lagging follower cannot make the leader read its whole log into memory.
const MAX_READ_BYTES: usize = 16 * 1024 * 1024;

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    fn read_meta<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, StorageError> {
        self.inner
            .meta
            .get(key)?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    /// Writes a meta value in memory; durable at the next sync.
    fn put_meta<T: Serialize>(&self, key: &'static str, value: &T) -> Result<(), StorageError> {
        self.inner.meta.insert(key, encode(key, value)?)?;
        Ok(())
    }

    /// Makes every write so far durable, off the executor.
    async fn sync_written(&self) -> Result<(), StorageError> {
        let ticket = self.inner.mark_written();
        let inner = self.inner.clone();
        run_blocking(move || inner.sync_through(ticket)).await
    }

    /// Entries in `[start, end]` (`end` inclusive, `None` = to the tail), oldest first, until
    /// the byte budget is spent. Checks that the log has no hole and keys match entries.
    fn read_entries(
        &self,
        start: u64,
        end: Option<u64>,
        byte_budget: usize,
    ) -> Result<Vec<C::Entry>, StorageError> {
        let from = Bound::Included(index_key(start));
        let to = match end {
            Some(end) => Bound::Included(index_key(end)),
            None => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut expected: Option<u64> = None;
        for item in self.inner.logs.range((from, to)) {
            let (key, value) = item?;
            let index = key_index(&key)?;
            if expected.is_some_and(|want| want != index) {
                return Err(StorageError::Corrupt(format!(
                    "hole in the log: expected index {}, found {index}",
                    expected.unwrap_or_default()
                )));
            }
            let entry: C::Entry = decode("log entry", &value)?;
            if entry.index() != index {
                return Err(StorageError::Corrupt(format!(
                    "entry under key {index} has index {}",
                    entry.index()
                )));
            }
            entries.push(entry);
            bytes += value.len();
            expected = index.checked_add(1);
            if bytes >= byte_budget {
                break;
            }
        }
        Ok(entries)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogIdOf<C>>, StorageError> {
        match self.inner.logs.last()? {
            Some((_, value)) => Ok(Some(decode::<C::Entry>("log entry", &value)?.log_id())),
            None => Ok(None),
        }
    }

    /// Removes every entry whose index is in `range`, atomically.
    fn remove_entries(&self, range: (Bound<[u8; 8]>, Bound<[u8; 8]>)) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        let mut removed = 0u64;
        for item in self.inner.logs.range(range) {
            let (key, value) = item?;
            removed += value.len() as u64;
            batch.remove(key);
        }
        self.inner.logs.apply_batch(batch)?;
        let _ = self
            .inner
            .log_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(removed))
            });
        Ok(())
    }
}

/// Turns any `RangeBounds<u64>` into an inclusive `[start, end]`; `None` if it is empty.
fn inclusive_bounds(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Some(e),
        Bound::Excluded(&e) => Some(e.checked_sub(1)?),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if end < start => None,
        _ => Some((start, end)),
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let Some((start, end)) = inclusive_bounds(&range) else {
            return Ok(Vec::new());
        };
        Ok(self.read_entries(start, end, usize::MAX)?)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(self.read_meta(meta_key::VOTE)?)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let Some((start, end)) = inclusive_bounds(&(start..end)) else {
            return Ok(Vec::new());
        };
        Ok(self.read_entries(start, end, MAX_READ_BYTES)?)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<C>> = self.read_meta(meta_key::LAST_PURGED)?;
        let last_entry = self.last_entry_log_id()?;
        // `max`, not "entry else purged": if we crashed after recording a purge but before
        // deleting the entries, leftovers below the purge point must not hide it.
        let last_log_id = last_entry.max(last_purged_log_id.clone());
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        self.inner.check_writable()?;
        self.put_meta(meta_key::VOTE, vote)?;
        // Raft's safety rests on a vote never being forgotten: durable before returning.
        self.sync_written().await?;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.inner.check_writable()?;
        match committed {
            Some(log_id) => self.put_meta(meta_key::COMMITTED, &log_id)?,
            None => {
                self.inner
                    .meta
                    .remove(meta_key::COMMITTED)
                    .map_err(StorageError::from)?;
            }
        }
        // Deliberately not synced: see the module docs.
        self.inner.mark_written();
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self.read_meta(meta_key::COMMITTED)?)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.inner.check_writable()?;
        let mut batch = sled::Batch::default();
        let mut added = 0u64;
        for entry in entries {
            let value = encode("log entry", &entry)?;
            added += value.len() as u64;
            batch.insert(&index_key(entry.index()), value);
        }
        // One atomic batch: readable as soon as we return, and never half-applied.
        self.inner
            .logs
            .apply_batch(batch)
            .map_err(StorageError::from)?;
        self.inner.log_bytes.fetch_add(added, Ordering::Relaxed);
        let ticket = self.inner.mark_written();

        // One flush + fsync for the whole call, then the callback: openraft may count these
        // entries toward a quorum only once they are really on disk.
        let inner = self.inner.clone();
        let flush_then_report = move || {
            let result = inner.sync_through(ticket).map_err(io::Error::from);
            // Release the database before reporting: whoever waits on the callback may drop
            // the store and reopen the directory, and sled's file lock lives as long as any
            // handle does.
            drop(inner);
            callback.io_completed(result);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(flush_then_report);
            }
            Err(_) => flush_then_report(),
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.inner.check_writable()?;
        let start = match &last_log_id {
            Some(log_id) => match log_id.index.checked_add(1) {
                Some(start) => start,
                None => return Ok(()),
            },
            None => 0,
        };
        self.remove_entries((Bound::Included(index_key(start)), Bound::Unbounded))?;
        // Rare (a new leader overwrote our tail); sync so a crash cannot resurrect the
        // conflicting entries next to newer ones.
        self.sync_written().await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.inner.check_writable()?;
        let previous: Option<LogIdOf<C>> = self.read_meta(meta_key::LAST_PURGED)?;
        if previous.as_ref() >= Some(&log_id) {
            return Ok(());
        }
        // Record the purge point first: entries at or below it are ignored from now on, so a
        // crash between the two steps leaves harmless leftovers, never a hole.
        self.put_meta(meta_key::LAST_PURGED, &log_id)?;
        self.remove_entries((Bound::Unbounded, Bound::Included(index_key(log_id.index))))?;
        self.sync_written().await?;
        Ok(())
    }
}
