//! The sink's transaction on SQLite.
//!
//! `BEGIN IMMEDIATE` takes the database's write lock up front, so two sinks serialize on it
//! (the second waits up to the busy timeout) and the cursor check cannot race.
//!
//! SQLite's INTEGER is signed 64-bit: event values above 2^63-1 are stored as 2^63-1, usage
//! is computed from the stored values and sums saturate there (MySQL keeps 2^64-1).

use std::borrow::Cow;
use std::collections::HashSet;

use sqlx::query_builder::Separated;
use sqlx::sqlite::Sqlite;
use sqlx::{QueryBuilder, SqliteConnection, SqlitePool};
use tally_analytics::Event;

use super::{
    candidates, chunks, event_size, event_values, events_insert_prefix, missing_cursor_row, now_ms,
    usage_insert_prefix, usage_values, EventRow, Value, WriteBatch, WriteOutcome, ID_CHUNK,
    USAGE_KEY_COLUMNS, USAGE_SUM_COLUMNS,
};
use crate::records::usage::{self, Deltas};
use crate::records::RecordError;

const MAX: u64 = i64::MAX as u64;

pub(crate) async fn write(
    pool: &SqlitePool,
    batch: WriteBatch<'_>,
) -> Result<WriteOutcome, RecordError> {
    let rows = candidates(&batch)?;
    let expected = to_i64(batch.expected_cursor, "expected_cursor")?;
    let new_cursor = to_i64(batch.new_cursor, "new_cursor")?;
    for row in &rows {
        to_i64(row.log_index, "log_index")?;
    }
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(RecordError::db("begin"))?;
    match write_in(&mut tx, expected, new_cursor, &rows).await {
        Ok(inserted) => {
            tx.commit().await.map_err(RecordError::db("commit"))?;
            Ok(WriteOutcome {
                inserted,
                already_present: batch.ingest.len() as u64 - inserted,
            })
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Returns how many events were inserted.
async fn write_in(
    conn: &mut SqliteConnection,
    expected: i64,
    new_cursor: i64,
    rows: &[EventRow<'_>],
) -> Result<u64, RecordError> {
    let found: i64 = sqlx::query_scalar("SELECT applied_index FROM sink_state WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(RecordError::db("read sink_state"))?
        .ok_or_else(missing_cursor_row)?;
    if found != expected {
        return Err(RecordError::CursorMoved {
            found: found.max(0) as u64,
        });
    }

    let present = existing_ids(conn, rows).await?;
    let stored: Vec<(EventRow<'_>, Cow<'_, Event>)> = rows
        .iter()
        .filter(|r| !present.contains(r.event.event_id.as_str()))
        .map(|r| (*r, clamp(r.event)))
        .collect();
    let fresh: Vec<EventRow<'_>> = stored
        .iter()
        .map(|(row, event)| EventRow {
            event: event.as_ref(),
            ..*row
        })
        .collect();
    for chunk in chunks(&fresh, event_size) {
        let mut insert = QueryBuilder::<Sqlite>::new(events_insert_prefix());
        insert.push_values(chunk, |mut b, row| {
            for value in event_values(row) {
                bind(&mut b, value);
            }
        });
        insert
            .build()
            .persistent(false)
            .execute(&mut *conn)
            .await
            .map_err(RecordError::db("insert events"))?;
    }
    upsert_usage(
        conn,
        &usage::deltas(fresh.iter().map(|r| (r.event, r.folds))),
    )
    .await?;

    sqlx::query("UPDATE sink_state SET applied_index = ?, updated_ms = ? WHERE id = 1")
        .bind(new_cursor)
        .bind(now_ms())
        .execute(&mut *conn)
        .await
        .map_err(RecordError::db("update sink_state"))?;
    Ok(fresh.len() as u64)
}

async fn existing_ids(
    conn: &mut SqliteConnection,
    rows: &[EventRow<'_>],
) -> Result<HashSet<String>, RecordError> {
    let mut present = HashSet::new();
    for chunk in rows.chunks(ID_CHUNK) {
        let mut select =
            QueryBuilder::<Sqlite>::new("SELECT event_id FROM events WHERE event_id IN (");
        let mut ids = select.separated(", ");
        for row in chunk {
            ids.push_bind(row.event.event_id.as_str());
        }
        select.push(")");
        let found: Vec<String> = select
            .build_query_scalar()
            .persistent(false)
            .fetch_all(&mut *conn)
            .await
            .map_err(RecordError::db("look up event ids"))?;
        present.extend(found);
    }
    Ok(present)
}

async fn upsert_usage(conn: &mut SqliteConnection, deltas: &Deltas<'_>) -> Result<(), RecordError> {
    let suffix = upsert_suffix();
    for (&granularity, rows) in deltas {
        let rows: Vec<_> = rows.iter().collect();
        let size = |((_, key), _): &(&(i64, usage::UsageKey<'_>), _)| {
            key.columns().iter().map(|c| c.len()).sum::<usize>() + 150
        };
        for chunk in chunks(&rows, size) {
            let prefix = usage_insert_prefix(usage::table(granularity), None);
            let mut upsert = QueryBuilder::<Sqlite>::new(prefix);
            upsert.push_values(chunk, |mut b, ((bucket_ms, key), measures)| {
                let measures = usage::cap(measures, MAX);
                for value in usage_values(*bucket_ms, key, &measures) {
                    bind(&mut b, value);
                }
            });
            upsert.push(suffix.as_str());
            upsert
                .build()
                .persistent(false)
                .execute(&mut *conn)
                .await
                .map_err(RecordError::db("upsert usage"))?;
        }
    }
    Ok(())
}

/// Sums saturate at 2^63-1; min/max ignore NULL on either side.
fn upsert_suffix() -> String {
    let mut sets: Vec<String> = USAGE_SUM_COLUMNS
        .iter()
        .map(|c| {
            format!(
                "{c} = CASE WHEN {c} > {MAX} - excluded.{c} THEN {MAX} \
                 ELSE {c} + excluded.{c} END"
            )
        })
        .collect();
    for (column, pick) in [("latency_min_ms", "MIN"), ("latency_max_ms", "MAX")] {
        sets.push(format!(
            "{column} = {pick}(COALESCE({column}, excluded.{column}), \
             COALESCE(excluded.{column}, {column}))"
        ));
    }
    format!(
        " ON CONFLICT ({}) DO UPDATE SET {}",
        USAGE_KEY_COLUMNS.join(", "),
        sets.join(", ")
    )
}

/// The event as SQLite can store it: unsigned values capped at 2^63-1.
fn clamp(event: &Event) -> Cow<'_, Event> {
    let fields = |e: &Event| {
        [
            e.response_time_ms,
            e.backend_latency_ms,
            e.security_latency_ms,
            e.throttling_latency_ms,
            e.request_mediation_latency_ms,
            e.response_mediation_latency_ms,
            e.other_latency_ms,
            e.response_size,
        ]
    };
    if fields(event).iter().flatten().all(|&v| v <= MAX) {
        return Cow::Borrowed(event);
    }
    let mut e = event.clone();
    for field in [
        &mut e.response_time_ms,
        &mut e.backend_latency_ms,
        &mut e.security_latency_ms,
        &mut e.throttling_latency_ms,
        &mut e.request_mediation_latency_ms,
        &mut e.response_mediation_latency_ms,
        &mut e.other_latency_ms,
        &mut e.response_size,
    ] {
        *field = field.map(|v| v.min(MAX));
    }
    Cow::Owned(e)
}

fn to_i64(value: u64, what: &str) -> Result<i64, RecordError> {
    i64::try_from(value).map_err(|_| {
        RecordError::InvalidBatch(format!("{what} {value} does not fit SQLite's INTEGER"))
    })
}

fn bind(b: &mut Separated<'_, Sqlite, &'static str>, value: Value<'_>) {
    let capped = |v: u64| v.min(MAX) as i64;
    match value {
        Value::Text(v) => b.push_bind(v.to_owned()),
        Value::OptText(v) => b.push_bind(v.map(str::to_owned)),
        Value::Int(v) => b.push_bind(v),
        Value::Uint(v) => b.push_bind(capped(v)),
        Value::OptUint(v) => b.push_bind(v.map(capped)),
        Value::OptBool(v) => b.push_bind(v),
    };
}
