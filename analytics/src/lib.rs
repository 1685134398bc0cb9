//! Tally's analytics domain: the event model, validation of posted batches, the
//! replicated analytic state (aggregates + dedup window), its digest and its snapshots.
//!
//! # Job
//!
//! * [`parse_events`] turns a posted body (JSON or NDJSON) into validated [`Event`]s, or
//!   rejects the whole batch with a [`BatchError`] that names every bad record and field.
//! * The leader wraps validated requests into an [`IngestBatch`] (stamping `ingest_ms`)
//!   and proposes it; every data node feeds the committed entry to [`State::apply`].
//! * [`State::query`] answers `/v1/aggregates`, [`State::digest`] answers
//!   `/v1/state/digest`, [`State::encode_snapshot`]/[`State::decode_snapshot`] move the
//!   state between nodes.
//!
//! # Invariants
//!
//! * **Pure.** No I/O, no clock, no randomness, no floats in state, and no hash-map
//!   iteration order reaches the state, the digest or a snapshot. The state is a pure
//!   function of the sequence of applied entries; the only notion of time inside
//!   `apply` is the proposer's `ingest_ms` stamped into the entry. Hash sets are used
//!   only as membership indexes, never iterated.
//! * **Split-invariant.** Applying a stream of events in one entry or split into any
//!   number of requests and entries (with the same `ingest_ms`), with any events re-sent
//!   later inside the dedup window, yields the same state and digest (property-tested).
//! * **Exactly-once counting inside the window.** An `event_id` is remembered with the
//!   (monotonic) ingest time of the entry that first counted it; while remembered, a
//!   repeat is acknowledged as a duplicate and not counted. Ids are forgotten after
//!   [`DEDUP_WINDOW_MS`] of ingest time, or oldest-first once more than [`DEDUP_MAX_IDS`]
//!   are remembered. A retry that arrives after its id was forgotten counts again here;
//!   the record store's `events` primary key (see docs/sql.md) is what
//!   catches that case for the durable tables.
//! * **Bounded memory.** Buckets are retained by the newest ingest time seen so far:
//!   [`MINUTE_RETENTION_MS`], [`HOUR_RETENTION_MS`], [`DAY_RETENTION_MS`]. Old buckets are
//!   popped from the front of ordered maps, so eviction costs only what it evicts.
//!   An event whose bucket is already past retention when applied is still deduped and
//!   acknowledged but not added at that granularity (so the outcome does not depend on
//!   how events were split into entries). Event times are validated to lie in
//!   2000..2200; buckets *ahead* of ingest time are only evicted once ingest time catches
//!   up, so the proposer should reject events too far in the future before proposing.
//!   Within a bucket the number of distinct keys is capped per tenant and the number of
//!   tenants per bucket ([`KeyCaps`], see the `overflow` module): further keys fold into
//!   `"__other__"` overflow keys, counted exactly as their own keys would have been. The
//!   caps travel in the entry (proposer-stamped), never from local configuration.
//! * **Total.** No input — a hostile body or a corrupt snapshot — can make this crate
//!   panic; arithmetic on measures saturates.

mod aggregate;
mod chunked;
mod dedup;
mod error;
mod event;
mod overflow;
mod pending;
#[cfg(feature = "chaos")]
pub mod plant;
mod raw;
mod snapshot;
mod state;
mod validate;

pub use aggregate::{
    AggregateQuery, AggregateRow, Folds, Granularity, KeyColumn, Measures, OverflowCounts,
    DAY_RETENTION_MS, HOUR_RETENTION_MS, MINUTE_RETENTION_MS,
};
pub use dedup::{DEDUP_MAX_IDS, DEDUP_WINDOW_MS};
pub use error::AnalyticsError;
pub use event::{BatchOutcome, Event, IngestBatch, Kind};
pub use overflow::{
    Fold, KeyCaps, DEFAULT_MAX_KEYS_PER_TENANT_BUCKET, DEFAULT_MAX_ROWS_PER_GRANULARITY,
    DEFAULT_MAX_TENANTS_PER_BUCKET, OTHER,
};
pub use pending::{PendingEvent, PendingStatus, PENDING_CAP};
pub use snapshot::{SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
pub use state::{FrozenState, State, StateStats};
pub use validate::{
    check_future_skew, parse_events, BatchError, BodyFormat, FieldError, KNOWN_FIELDS,
    MAX_ERROR_DETAILS, MAX_EVENTS_PER_BATCH, MAX_FUTURE_SKEW_MS, MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
};
