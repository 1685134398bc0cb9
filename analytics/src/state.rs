//! The replicated analytic state and its deterministic transition, `apply`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dedup::DedupOrder;
use crate::error::AnalyticsError;

use crate::aggregate::{run_query, AggregateQuery, AggregateRow, Granularity, GroupKey, Series};
use crate::aggregate::{Folds, OverflowCounts};
use crate::dedup::DedupWindow;
use crate::event::{BatchOutcome, IngestBatch};
use crate::overflow::{Fold, KeyCaps};
use crate::pending::{PendingEvent, PendingQueue, PendingStatus};

/// Prefix hashed before the canonical encoding, so a digest can never be confused with
/// the hash of some other structure (and changes if the digest scheme does).
/// v2: the state gained overflow counters (the key cap).
const DIGEST_DOMAIN: &[u8] = b"tally.analytics.digest.v2\0";

/// Everything that determines future behaviour and query answers. This is exactly what
/// the digest covers; snapshots carry it plus the applied index. It is read from a snapshot
/// as it is; it is written (for snapshots and the digest) through [`FrozenAnalytic`], its
/// cheap copy, which serializes to the same bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Analytic {
    /// Largest `ingest_ms` applied so far (`None` before the first entry). Entries from a
    /// new leader may carry a slightly older clock; using the maximum keeps expiry and
    /// retention monotonic.
    pub high_water_ms: Option<i64>,
    /// Events counted (duplicates excluded).
    pub events_applied: u64,
    pub dedup: DedupWindow,
    pub minute: Series,
    pub hour: Series,
    pub day: Series,
    /// Events folded into overflow keys by the key cap, per granularity.
    pub overflow: OverflowCounts,
}

impl Analytic {
    pub fn series(&self, granularity: Granularity) -> &Series {
        match granularity {
            Granularity::Minute => &self.minute,
            Granularity::Hour => &self.hour,
            Granularity::Day => &self.day,
        }
    }

    fn series_mut(&mut self, granularity: Granularity) -> &mut Series {
        match granularity {
            Granularity::Minute => &mut self.minute,
            Granularity::Hour => &mut self.hour,
            Granularity::Day => &mut self.day,
        }
    }

    /// The cheap copy: `Arc` bumps per bucket and per chunk of ids, no row or id copied.
    fn freeze(&self) -> FrozenAnalytic {
        FrozenAnalytic {
            high_water_ms: self.high_water_ms,
            events_applied: self.events_applied,
            dedup: self.dedup.order().clone(),
            minute: self.minute.clone(),
            hour: self.hour.clone(),
            day: self.day.clone(),
            overflow: self.overflow,
        }
    }
}

/// [`Analytic`] as of one moment, sharing its buckets and chunks with the live state (which
/// copies a bucket or chunk before it writes to a shared one). Fields in the order, and of
/// the shapes, that [`Analytic`] deserializes: this is the one way the state is written.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FrozenAnalytic {
    high_water_ms: Option<i64>,
    events_applied: u64,
    dedup: DedupOrder,
    minute: Series,
    hour: Series,
    day: Series,
    overflow: OverflowCounts,
}

/// A copy of a [`State`] taken in O(buckets + chunks) under the state lock, then encoded or
/// digested outside it, on a blocking thread, while `apply` goes on.
#[derive(Clone, Debug)]
pub struct FrozenState {
    pub(crate) analytic: FrozenAnalytic,
    pub(crate) applied_index: u64,
    pub(crate) pending: PendingQueue,
}

impl FrozenState {
    /// Log index of the last entry applied to the state this copies.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The digest of the state this copies (see [`State::digest`]).
    pub fn digest(&self) -> String {
        let mut hasher = HashWriter(Sha256::new());
        hasher.0.update(DIGEST_DOMAIN);
        // Encoding into a hasher cannot fail: the writer never errors and every type
        // here is serializable. Should it ever fail, the digest still differs from any
        // real one because the error text is hashed in.
        if let Err(err) = bincode::serde::encode_into_std_write(
            &self.analytic,
            &mut hasher,
            bincode::config::standard(),
        ) {
            hasher.0.update(format!("encode error: {err}").as_bytes());
        }
        hex::encode(hasher.0.finalize())
    }
}

/// The analytic state of a data node. A pure function of the entries applied to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub(crate) analytic: Analytic,
    /// Log index of the last entry applied. Bookkeeping for the caller; not part of the
    /// digest, which the API always reports next to the applied index anyway — and
    /// leaving it out is what lets two different splits of one stream agree.
    pub(crate) applied_index: u64,
    /// Counted events the record store may still lack. Replicated and snapshotted, but
    /// outside the digest: it is bookkeeping about the record store, not analytics, and
    /// its entry indexes would make two splits of one stream differ.
    pub(crate) pending: PendingQueue,
}

/// Sizes for `/metrics` and `/v1/cluster`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StateStats {
    /// Aggregate rows (bucket × key) held at minute granularity.
    pub buckets_minute: usize,
    /// Aggregate rows (bucket × key) held at hour granularity.
    pub buckets_hour: usize,
    /// Aggregate rows (bucket × key) held at day granularity.
    pub buckets_day: usize,
    /// Event ids remembered by the dedup window.
    pub dedup_ids: usize,
    /// Events counted since the state began (duplicates excluded).
    pub events_applied: u64,
    /// Events folded into overflow keys by the key cap since the state began.
    pub overflow_events: OverflowCounts,
    /// Rows (bucket × key) held at minute granularity whose key is an overflow key.
    pub overflow_keys_minute: usize,
    /// The same at hour granularity.
    pub overflow_keys_hour: usize,
    /// The same at day granularity.
    pub overflow_keys_day: usize,
}

impl State {
    pub fn new() -> Self {
        State::default()
    }

    /// A state whose dedup window remembers at most `max_ids` ids; lets tests reach the
    /// cap without two million events. Production uses [`State::new`].
    #[cfg(test)]
    pub(crate) fn with_dedup_cap(max_ids: usize) -> Self {
        State {
            analytic: Analytic {
                dedup: DedupWindow::with_max_ids(max_ids),
                ..Analytic::default()
            },
            applied_index: 0,
            pending: PendingQueue::default(),
        }
    }

    /// Log index of the last entry applied (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The newest ingest time applied (`None` before the first entry): the state's "now",
    /// which the proposer's next stamp must not go below.
    pub fn high_water_ms(&self) -> Option<i64> {
        self.analytic.high_water_ms
    }

    /// Applies one committed ingest entry written before key caps existed: no cap, exactly
    /// as that version applied it. Returns one outcome per request, in order.
    pub fn apply(&mut self, log_index: u64, batch: &IngestBatch) -> Vec<BatchOutcome> {
        self.apply_capped(log_index, batch, &KeyCaps::UNLIMITED)
    }

    /// Applies one committed ingest entry with the key caps its proposer stamped into it.
    /// Returns one outcome per request, in order.
    ///
    /// Steps, all driven by the entry's bytes only:
    /// 1. raise the high-water ingest time to `batch.ingest_ms` if it is newer;
    /// 2. forget dedup ids older than the window and drop buckets past retention;
    /// 3. for each event: a remembered id is a duplicate; otherwise remember it and count
    ///    it into the minute, hour and day bucket of its event time — under its own key, or
    ///    the overflow key `caps` send it to in a full bucket — skipping a granularity whose
    ///    retention has already passed that bucket, so the result does not depend on how
    ///    events were split into entries; queue it for the record store with where it was
    ///    counted.
    pub fn apply_capped(
        &mut self,
        log_index: u64,
        batch: &IngestBatch,
        caps: &KeyCaps,
    ) -> Vec<BatchOutcome> {
        let state = &mut self.analytic;
        let now = state
            .high_water_ms
            .map_or(batch.ingest_ms, |seen| seen.max(batch.ingest_ms));
        state.high_water_ms = Some(now);
        state.dedup.expire(now);
        let cutoffs = Granularity::ALL.map(|g| (g, now.saturating_sub(g.retention_ms())));
        for (granularity, cutoff) in cutoffs {
            state.series_mut(granularity).evict_before(cutoff);
        }

        let mut outcomes = Vec::with_capacity(batch.requests.len());
        for request in &batch.requests {
            let mut outcome = BatchOutcome {
                accepted: u32::try_from(request.len()).unwrap_or(u32::MAX),
                duplicates: 0,
            };
            for event in request {
                if !state.dedup.insert(&event.event_id, now) && !planted_skip_dedup() {
                    outcome.duplicates = outcome.duplicates.saturating_add(1);
                    continue;
                }
                state.events_applied = state.events_applied.saturating_add(1);
                let key = GroupKey::of(event);
                let mut folds = Folds::default();
                for (slot, (granularity, cutoff)) in cutoffs.into_iter().enumerate() {
                    let bucket_ms = granularity.bucket_start(event.ts_ms);
                    if bucket_ms >= cutoff {
                        let fold = state
                            .series_mut(granularity)
                            .add(bucket_ms, &key, event, caps);
                        if fold != Fold::Own {
                            state.overflow.count(granularity);
                        }
                        folds.0[slot] = fold;
                    }
                }
                self.pending.push(log_index, batch.ingest_ms, event, folds);
            }
            outcomes.push(outcome);
        }
        self.applied_index = self.applied_index.max(log_index);
        outcomes
    }

    /// Applies a committed sink cursor: the record store holds everything up to `cursor`.
    pub fn advance_sink(&mut self, log_index: u64, cursor: u64) {
        self.pending.advance(cursor.min(log_index));
        self.applied_index = self.applied_index.max(log_index);
    }

    /// The next events for the record store after index `after`: at least `max_events`
    /// unless fewer remain, whole entries only, and the log index the record store
    /// reaches once they are written.
    pub fn sink_pending(&self, after: u64, max_events: usize) -> (Vec<PendingEvent>, u64) {
        self.pending.take(after, max_events, self.applied_index)
    }

    pub fn pending_status(&self) -> PendingStatus {
        self.pending.status()
    }

    /// Answers an aggregate query. Rows are sorted by `(bucket_ms, group values)`.
    /// Unbounded: servers use [`State::query_bounded`].
    pub fn query(&self, query: &AggregateQuery) -> Vec<AggregateRow> {
        self.query_bounded(query, usize::MAX).unwrap_or_default()
    }

    /// Answers an aggregate query with at most `max_rows` rows, or
    /// [`AnalyticsError::TooManyRows`] as soon as it is clear the answer holds more (the
    /// rows past the cap are never built).
    pub fn query_bounded(
        &self,
        query: &AggregateQuery,
        max_rows: usize,
    ) -> Result<Vec<AggregateRow>, AnalyticsError> {
        run_query(self.analytic.series(query.granularity), query, max_rows)
    }

    /// Hex SHA-256 over the canonical encoding of the analytic state: high-water ingest
    /// time, counters, the dedup window in order, and every bucket of every granularity
    /// in key order. Equal states give equal digests; it excludes the applied index.
    /// Costs a walk of the whole state: servers take [`State::freeze`] under their lock and
    /// digest the copy outside it.
    pub fn digest(&self) -> String {
        self.freeze().digest()
    }

    /// A copy of the state for a snapshot or a digest, cheap enough to take under a lock:
    /// one `Arc` bump per bucket and per chunk of the dedup window and pending queue.
    pub fn freeze(&self) -> FrozenState {
        FrozenState {
            analytic: self.analytic.freeze(),
            applied_index: self.applied_index,
            pending: self.pending.clone(),
        }
    }

    pub fn stats(&self) -> StateStats {
        StateStats {
            buckets_minute: self.analytic.minute.rows(),
            buckets_hour: self.analytic.hour.rows(),
            buckets_day: self.analytic.day.rows(),
            dedup_ids: self.analytic.dedup.len(),
            events_applied: self.analytic.events_applied,
            overflow_events: self.analytic.overflow,
            overflow_keys_minute: self.analytic.minute.overflow_rows(),
            overflow_keys_hour: self.analytic.hour.overflow_rows(),
            overflow_keys_day: self.analytic.day.overflow_rows(),
        }
    }
}

/// Streams bincode output straight into the hash: no full copy of the state in memory.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// Whether the chaos build's `skip-dedup` bug is switched on (always false otherwise).
#[inline]
fn planted_skip_dedup() -> bool {
    #[cfg(feature = "chaos")]
    {
        crate::plant::skip_dedup()
    }
    #[cfg(not(feature = "chaos"))]
    {
        false
    }
}
