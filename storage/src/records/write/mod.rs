//! The sink's write: one transaction that moves the cursor and inserts exactly the events
//! the store does not hold yet, with the usage they add.
//!
//! Steps, the same on both dialects (`mysql.rs`, `sqlite.rs`):
//!
//! 1. lock `sink_state` (`SELECT … FOR UPDATE`; SQLite: `BEGIN IMMEDIATE`) and refuse with
//!    [`RecordError::CursorMoved`] unless `applied_index == expected_cursor`;
//! 2. drop repeated ids inside the batch (first occurrence wins) and ids `events` already
//!    holds (chunked `SELECT event_id … IN (…)`);
//! 3. insert the rest (multi-row `INSERT`s, chunked by rows and bytes);
//! 4. add the usage of exactly those rows (`usage::deltas`) with saturating upserts;
//! 5. set `applied_index = new_cursor`, commit.
//!
//! Because only inserted rows are counted and everything commits together, a retried,
//! overlapping or competing write can neither double-count nor lose an event.

pub(crate) mod mysql;
pub(crate) mod sqlite;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use tally_analytics::{Event, Folds, Measures};

use super::usage::UsageKey;
use super::RecordError;

/// One sink transaction's worth of events.
#[derive(Clone, Debug)]
pub struct WriteBatch<'a> {
    /// The `applied_index` the sink read; the write is refused if the store moved on.
    pub expected_cursor: u64,
    /// The `applied_index` after this batch: every event up to this log index is in it
    /// or already in the store. Must be ≥ `expected_cursor`.
    pub new_cursor: u64,
    /// `(log_index, ingest_ms, event, folds)`: the entry that carried the event, its
    /// proposer time, and under which key the state counted it at each granularity (its
    /// own or an overflow key: the usage rows go under the same). May repeat ids, and may
    /// hold events the store already has.
    pub ingest: Vec<(u64, i64, &'a Event, Folds)>,
}

/// What a successful write did. `inserted + already_present == ingest.len()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Events newly stored (and counted in the usage tables).
    pub inserted: u64,
    /// Batch entries not stored: the id was in `events` already, or earlier in the batch.
    pub already_present: u64,
}

/// An event as the `events` table stores it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventRow<'a> {
    pub log_index: u64,
    pub ingest_ms: i64,
    pub event: &'a Event,
    pub folds: Folds,
}

/// Checks the batch and drops repeated ids (first occurrence wins).
pub(crate) fn candidates<'a>(batch: &WriteBatch<'a>) -> Result<Vec<EventRow<'a>>, RecordError> {
    if batch.new_cursor < batch.expected_cursor {
        return Err(RecordError::InvalidBatch(format!(
            "new_cursor {} is behind expected_cursor {}",
            batch.new_cursor, batch.expected_cursor
        )));
    }
    let mut seen = HashSet::with_capacity(batch.ingest.len());
    Ok(batch
        .ingest
        .iter()
        .filter(|(_, _, event, _)| seen.insert(event.event_id.as_str()))
        .map(|&(log_index, ingest_ms, event, folds)| EventRow {
            log_index,
            ingest_ms,
            event,
            folds,
        })
        .collect())
}

pub(crate) fn missing_cursor_row() -> RecordError {
    RecordError::InvalidBatch(
        "sink_state has no row with id = 1; the schema was altered outside Tally".into(),
    )
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// At most this many ids per `SELECT … IN (…)`.
pub(crate) const ID_CHUNK: usize = 500;
/// At most this many rows per multi-row `INSERT` (35 placeholders each: well inside
/// MySQL's 65,535 and SQLite's 32,766).
const ROW_CHUNK: usize = 500;
/// And at most about this many bytes of values, well under MariaDB's default 16 MiB
/// `max_allowed_packet` even with the protocol's overhead.
const BYTE_CHUNK: usize = 4 << 20;

/// Splits `rows` into runs that respect [`ROW_CHUNK`] and [`BYTE_CHUNK`].
pub(crate) fn chunks<T>(rows: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let row_bytes = size(row);
        if i > start && (i - start == ROW_CHUNK || bytes + row_bytes > BYTE_CHUNK) {
            out.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += row_bytes;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// Rough encoded size of an event row: its text plus fixed-width fields.
pub(crate) fn event_size(row: &EventRow<'_>) -> usize {
    let e = row.event;
    let texts = [
        &e.api_context,
        &e.api_creator,
        &e.resource,
        &e.method,
        &e.hostname,
        &e.destination,
        &e.protocol,
        &e.application_id,
        &e.application_name,
        &e.application_owner,
        &e.username,
        &e.user_tenant,
        &e.user_ip,
        &e.user_agent,
        &e.error_code,
        &e.error_message,
        &e.throttled_reason,
    ];
    let optional: usize = texts
        .iter()
        .filter_map(|t| t.as_ref())
        .map(String::len)
        .sum();
    optional + e.event_id.len() + e.api_name.len() + e.api_version.len() + e.tenant.len() + 200
}

/// A value of one column, before the dialect picks its wire type.
pub(crate) enum Value<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    Uint(u64),
    OptUint(Option<u64>),
    OptBool(Option<bool>),
}

/// `events` columns in insert order; [`event_values`] yields values in the same order.
pub(crate) const EVENT_COLUMNS: [&str; 35] = [
    "event_id",
    "log_index",
    "ts_ms",
    "ingest_ms",
    "kind",
    "tenant",
    "api_name",
    "api_version",
    "application_id",
    "resource",
    "method",
    "api_context",
    "api_creator",
    "hostname",
    "destination",
    "protocol",
    "application_name",
    "application_owner",
    "username",
    "user_tenant",
    "user_ip",
    "user_agent",
    "response_code",
    "response_time_ms",
    "backend_latency_ms",
    "security_latency_ms",
    "throttling_latency_ms",
    "request_mediation_latency_ms",
    "response_mediation_latency_ms",
    "other_latency_ms",
    "response_size",
    "cache_hit",
    "error_code",
    "error_message",
    "throttled_reason",
];

pub(crate) fn event_values<'a>(row: &EventRow<'a>) -> [Value<'a>; 35] {
    use Value::*;
    let e = row.event;
    let key = UsageKey::of(e);
    [
        Text(&e.event_id),
        Uint(row.log_index),
        Int(e.ts_ms),
        Int(row.ingest_ms),
        Text(e.kind.as_str()),
        Text(key.tenant),
        Text(key.api_name),
        Text(key.api_version),
        Text(key.application_id),
        Text(key.resource),
        Text(key.method),
        OptText(e.api_context.as_deref()),
        OptText(e.api_creator.as_deref()),
        OptText(e.hostname.as_deref()),
        OptText(e.destination.as_deref()),
        OptText(e.protocol.as_deref()),
        OptText(e.application_name.as_deref()),
        OptText(e.application_owner.as_deref()),
        OptText(e.username.as_deref()),
        OptText(e.user_tenant.as_deref()),
        OptText(e.user_ip.as_deref()),
        OptText(e.user_agent.as_deref()),
        OptUint(e.response_code.map(u64::from)),
        OptUint(e.response_time_ms),
        OptUint(e.backend_latency_ms),
        OptUint(e.security_latency_ms),
        OptUint(e.throttling_latency_ms),
        OptUint(e.request_mediation_latency_ms),
        OptUint(e.response_mediation_latency_ms),
        OptUint(e.other_latency_ms),
        OptUint(e.response_size),
        OptBool(e.cache_hit),
        OptText(e.error_code.as_deref()),
        OptText(e.error_message.as_deref()),
        OptText(e.throttled_reason.as_deref()),
    ]
}

/// Key columns of the usage tables, in insert order.
pub(crate) const USAGE_KEY_COLUMNS: [&str; 7] = [
    "bucket_ms",
    "tenant",
    "api_name",
    "api_version",
    "application_id",
    "resource",
    "method",
];
/// Measures that add up (saturating); the upserts treat min and max separately.
pub(crate) const USAGE_SUM_COLUMNS: [&str; 8] = [
    "requests",
    "errors_4xx",
    "errors_5xx",
    "faults",
    "throttled",
    "latency_count",
    "latency_sum_ms",
    "bytes_sum",
];

/// One usage row's values: keys, the sums in [`USAGE_SUM_COLUMNS`] order, min, max.
pub(crate) fn usage_values<'a>(bucket_ms: i64, key: &UsageKey<'a>, m: &Measures) -> Vec<Value<'a>> {
    use Value::*;
    let mut values = vec![Int(bucket_ms)];
    values.extend(key.columns().map(Text));
    values.extend(
        [
            m.requests,
            m.errors_4xx,
            m.errors_5xx,
            m.faults,
            m.throttled,
            m.latency_count,
            m.latency_sum_ms,
            m.bytes_sum,
        ]
        .map(Uint),
    );
    values.push(OptUint(m.latency_min_ms));
    values.push(OptUint(m.latency_max_ms));
    values
}

/// `INSERT INTO <table> (<usage columns>[, extra])`, ready for `VALUES`.
pub(crate) fn usage_insert_prefix(table: &str, extra: Option<&str>) -> String {
    let mut columns: Vec<&str> = USAGE_KEY_COLUMNS.to_vec();
    columns.extend(USAGE_SUM_COLUMNS);
    columns.extend(["latency_min_ms", "latency_max_ms"]);
    columns.extend(extra);
    format!("INSERT INTO {table} ({}) ", columns.join(", "))
}

pub(crate) fn events_insert_prefix() -> String {
    format!("INSERT INTO events ({}) ", EVENT_COLUMNS.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_rows_and_bytes() {
        let rows: Vec<usize> = vec![1; 1200];
        let c = chunks(&rows, |&n| n);
        assert_eq!(
            c.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [500, 500, 200]
        );
        let big = vec![3 << 20; 3];
        assert_eq!(chunks(&big, |&n| n).len(), 3);
        // A single row over the budget still goes out, alone.
        assert_eq!(chunks(&[10 << 20], |&n| n).len(), 1);
        assert!(chunks::<usize>(&[], |&n| n).is_empty());
    }

    #[test]
    fn candidates_keep_the_first_occurrence() {
        let a = Event {
            event_id: "a".into(),
            ..Event::default()
        };
        let upper = Event {
            event_id: "A".into(),
            ..Event::default()
        };
        let batch = WriteBatch {
            expected_cursor: 1,
            new_cursor: 3,
            ingest: vec![
                (2, 10, &a, Folds::default()),
                (2, 10, &upper, Folds::default()),
                (3, 11, &a, Folds::default()),
            ],
        };
        let rows = candidates(&batch).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].event.event_id.as_str(), rows[0].log_index),
            ("a", 2)
        );
        assert_eq!(rows[1].event.event_id, "A");

        let backwards = WriteBatch {
            expected_cursor: 5,
            new_cursor: 4,
            ingest: vec![],
        };
        assert!(matches!(
            candidates(&backwards),
            Err(RecordError::InvalidBatch(_))
        ));
    }

    #[test]
    fn value_order_matches_columns() {
        let event = Event {
            event_id: "x".into(),
            ..Event::default()
        };
        let row = EventRow {
            log_index: 1,
            ingest_ms: 2,
            event: &event,
            folds: Folds::default(),
        };
        assert_eq!(event_values(&row).len(), EVENT_COLUMNS.len());
        let prefix = usage_insert_prefix("usage_day", Some("key_hash"));
        let columns = prefix.matches(", ").count() + 1;
        let m = Measures::default();
        let key = UsageKey::of(&event);
        assert_eq!(usage_values(0, &key, &m).len() + 1, columns);
    }
}
