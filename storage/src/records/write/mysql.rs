//! The sink's transaction on MySQL/MariaDB.

use std::collections::HashSet;

use sqlx::mysql::MySql;
use sqlx::query_builder::Separated;
use sqlx::{MySqlConnection, MySqlPool, QueryBuilder};

use super::{
    candidates, chunks, event_size, event_values, events_insert_prefix, missing_cursor_row, now_ms,
    usage_insert_prefix, usage_values, EventRow, Value, WriteBatch, WriteOutcome, ID_CHUNK,
    USAGE_SUM_COLUMNS,
};
use crate::records::usage::{self, Deltas};
use crate::records::RecordError;

pub(crate) async fn write(
    pool: &MySqlPool,
    batch: WriteBatch<'_>,
) -> Result<WriteOutcome, RecordError> {
    let rows = candidates(&batch)?;
    let mut tx = pool.begin().await.map_err(RecordError::db("begin"))?;
    match write_in(&mut tx, &batch, &rows).await {
        Ok(outcome) => {
            tx.commit().await.map_err(RecordError::db("commit"))?;
            Ok(outcome)
        }
        Err(e) => {
            // Release the sink_state lock now, not when the connection is next used.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn write_in(
    conn: &mut MySqlConnection,
    batch: &WriteBatch<'_>,
    rows: &[EventRow<'_>],
) -> Result<WriteOutcome, RecordError> {
    let found: u64 =
        sqlx::query_scalar("SELECT applied_index FROM sink_state WHERE id = 1 FOR UPDATE")
            .fetch_optional(&mut *conn)
            .await
            .map_err(RecordError::db("lock sink_state"))?
            .ok_or_else(missing_cursor_row)?;
    if found != batch.expected_cursor {
        return Err(RecordError::CursorMoved { found });
    }

    let present = existing_ids(conn, rows).await?;
    let fresh: Vec<EventRow<'_>> = rows
        .iter()
        .filter(|r| !present.contains(r.event.event_id.as_str()))
        .copied()
        .collect();
    for chunk in chunks(&fresh, event_size) {
        let mut insert = QueryBuilder::<MySql>::new(events_insert_prefix());
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
        .bind(batch.new_cursor)
        .bind(now_ms())
        .execute(&mut *conn)
        .await
        .map_err(RecordError::db("update sink_state"))?;
    let inserted = fresh.len() as u64;
    Ok(WriteOutcome {
        inserted,
        already_present: batch.ingest.len() as u64 - inserted,
    })
}

/// The ids among `rows` that `events` already holds.
async fn existing_ids(
    conn: &mut MySqlConnection,
    rows: &[EventRow<'_>],
) -> Result<HashSet<String>, RecordError> {
    let mut present = HashSet::new();
    for chunk in rows.chunks(ID_CHUNK) {
        let mut select =
            QueryBuilder::<MySql>::new("SELECT event_id FROM events WHERE event_id IN (");
        let mut ids = select.separated(", ");
        for row in chunk {
            ids.push_bind(row.event.event_id.as_str());
        }
        // A locking read sees the latest committed rows whatever the isolation level and
        // snapshot; sinks are already serialized by the sink_state lock, so it costs no
        // contention.
        select.push(") LOCK IN SHARE MODE");
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

async fn upsert_usage(conn: &mut MySqlConnection, deltas: &Deltas<'_>) -> Result<(), RecordError> {
    for (&granularity, rows) in deltas {
        let rows: Vec<_> = rows.iter().collect();
        let suffix = upsert_suffix();
        for chunk in chunks(&rows, |((_, key), _)| {
            key.columns().iter().map(|c| c.len()).sum::<usize>() + 150
        }) {
            let prefix = usage_insert_prefix(usage::table(granularity), Some("key_hash"));
            let mut upsert = QueryBuilder::<MySql>::new(prefix);
            upsert.push_values(chunk, |mut b, ((bucket_ms, key), measures)| {
                for value in usage_values(*bucket_ms, key, measures) {
                    bind(&mut b, value);
                }
                b.push_bind(key.hash().to_vec());
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

/// Sums saturate at 2^64-1, like `Measures`; min/max ignore NULL on either side.
fn upsert_suffix() -> String {
    const MAX: &str = "18446744073709551615";
    let mut sets: Vec<String> = USAGE_SUM_COLUMNS
        .iter()
        .map(|c| format!("{c} = IF({c} > {MAX} - VALUES({c}), {MAX}, {c} + VALUES({c}))"))
        .collect();
    for (column, pick) in [("latency_min_ms", "LEAST"), ("latency_max_ms", "GREATEST")] {
        sets.push(format!(
            "{column} = {pick}(COALESCE({column}, VALUES({column})), \
             COALESCE(VALUES({column}), {column}))"
        ));
    }
    format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", "))
}

fn bind(b: &mut Separated<'_, MySql, &'static str>, value: Value<'_>) {
    match value {
        Value::Text(v) => b.push_bind(v),
        Value::OptText(v) => b.push_bind(v),
        Value::Int(v) => b.push_bind(v),
        Value::Uint(v) => b.push_bind(v),
        Value::OptUint(v) => b.push_bind(v),
        Value::OptBool(v) => b.push_bind(v),
    };
}
