//! User queries on SQLite.
//!
//! Read connections are opened read-only (`SQLITE_OPEN_READONLY`) with `PRAGMA
//! query_only = ON`; each query runs in its own (read) transaction. The timeout is a
//! progress handler that SQLite calls every [`PROGRESS_OPS`] virtual-machine steps: past
//! the deadline it returns `false` and SQLite aborts the statement with `SQLITE_INTERRUPT`,
//! the same path as `sqlite3_interrupt`. The handler is installed per query and removed
//! after it, on the read pool only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqliteConnection, SqliteRow};
use sqlx::{
    AssertSqlSafe, Column, Connection, Executor, Row, SqlSafeStr, SqlitePool, Statement, TypeInfo,
    Value as _, ValueRef,
};

use super::{
    float, text_or_hex, timeout_error, too_large, ColumnInfo, QueryLimits, QueryResult,
    RowsBuilder, GRACE,
};
use crate::records::RecordError;

/// VM steps between deadline checks: frequent enough for millisecond precision, rare
/// enough that reading the clock costs nothing measurable.
const PROGRESS_OPS: i32 = 1000;
/// SQLite's result code for an interrupted statement.
const SQLITE_INTERRUPT: &str = "9";
/// SQLite's result code for a string or blob over `SQLITE_LIMIT_LENGTH`.
const SQLITE_TOOBIG: i32 = 18;

pub(crate) async fn run(
    read_pool: &SqlitePool,
    sql: &str,
    limits: QueryLimits,
) -> Result<QueryResult, RecordError> {
    let mut conn = read_pool
        .acquire()
        .await
        .map_err(RecordError::db("acquire a read connection"))?;
    let cancelled = Arc::new(AtomicBool::new(false));
    install_deadline(&mut conn, &limits, cancelled.clone()).await?;

    let outcome =
        tokio::time::timeout(limits.timeout + GRACE, fetch(&mut conn, sql, &limits)).await;
    let result = match outcome {
        Ok(result) => result,
        Err(_elapsed) => {
            // The handler stops the statement at its next check; this connection is not
            // reused either way.
            cancelled.store(true, Ordering::Relaxed);
            conn.close_on_drop();
            return Err(timeout_error(&limits));
        }
    };
    let removed = match conn.lock_handle().await {
        Ok(mut handle) => {
            handle.remove_progress_handler();
            true
        }
        Err(_) => false,
    };
    if !removed {
        conn.close_on_drop();
    }
    result
}

async fn install_deadline(
    conn: &mut PoolConnection<Sqlite>,
    limits: &QueryLimits,
    cancelled: Arc<AtomicBool>,
) -> Result<(), RecordError> {
    let deadline = Instant::now() + limits.timeout;
    let mut handle = conn
        .lock_handle()
        .await
        .map_err(RecordError::db("install the query deadline"))?;
    handle.set_progress_handler(PROGRESS_OPS, move || {
        !cancelled.load(Ordering::Relaxed) && Instant::now() < deadline
    });
    Ok(())
}

async fn fetch(
    conn: &mut SqliteConnection,
    sql: &str,
    limits: &QueryLimits,
) -> Result<QueryResult, RecordError> {
    let mut tx = conn
        .begin()
        .await
        .map_err(RecordError::db("start a read transaction"))?;
    let mut columns: Option<Vec<ColumnInfo>> = None;
    let mut rows = RowsBuilder::new(limits);
    let mut truncated = None;
    {
        let mut stream = sqlx::query(AssertSqlSafe(sql))
            .persistent(false)
            .fetch(&mut *tx);
        // One row past a full answer is read: it tells a cut answer from one that fits.
        loop {
            let Some(row) = stream.try_next().await.map_err(|e| classify(e, limits))? else {
                break;
            };
            let columns = columns.get_or_insert_with(|| declared_columns(&row));
            if let Some(cut) = rows.room_for_another() {
                truncated = Some(cut);
                break;
            }
            let values = row_values(&row, columns);
            drop(row);
            if let Some(cut) = rows.push(&values)? {
                truncated = Some(cut);
                break;
            }
        }
    }
    let columns = match columns {
        Some(columns) => columns,
        None => match (&mut *tx).prepare(AssertSqlSafe(sql).into_sql_str()).await {
            Ok(statement) => statement
                .columns()
                .iter()
                .map(|c| ColumnInfo {
                    name: c.name().to_string(),
                    r#type: c.type_info().name().to_string(),
                })
                .collect(),
            Err(_) => Vec::new(),
        },
    };
    tx.rollback()
        .await
        .map_err(RecordError::db("end the read transaction"))?;
    let (rows, row_count) = rows.finish();
    Ok(QueryResult {
        columns,
        rows,
        row_count,
        truncated,
    })
}

fn classify(e: sqlx::Error, limits: &QueryLimits) -> RecordError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(SQLITE_INTERRUPT) => {
            timeout_error(limits)
        }
        sqlx::Error::Database(db)
            if db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| c & 0xff == SQLITE_TOOBIG) =>
        {
            too_large(db.message())
        }
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes: the database is
        // busy, not the query wrong — the caller should retry (503).
        sqlx::Error::Database(db)
            if db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| matches!(c & 0xff, 5 | 6)) =>
        {
            RecordError::Database {
                action: "run the query",
                source: e,
            }
        }
        sqlx::Error::Database(db) => RecordError::Query(db.message().to_string()),
        _ => RecordError::Database {
            action: "run the query",
            source: e,
        },
    }
}

/// Names and declared types. An expression has no declared type ("NULL"); the first
/// non-NULL value fills it in (see `row_values`).
fn declared_columns(row: &SqliteRow) -> Vec<ColumnInfo> {
    row.columns()
        .iter()
        .map(|c| ColumnInfo {
            name: c.name().to_string(),
            r#type: c.type_info().name().to_string(),
        })
        .collect()
}

/// JSON values by each value's storage class (SQLite types values, not columns).
fn row_values(row: &SqliteRow, columns: &mut [ColumnInfo]) -> Vec<Value> {
    columns
        .iter_mut()
        .enumerate()
        .map(|(i, column)| {
            let Ok(raw) = row.try_get_raw(i) else {
                return Value::Null;
            };
            if raw.is_null() {
                return Value::Null;
            }
            let class = raw.to_owned().type_info().name().to_string();
            if column.r#type == "NULL" {
                column.r#type = class.clone();
            }
            match class.as_str() {
                "INTEGER" => row.try_get_unchecked::<i64, _>(i).map(Value::from).ok(),
                "REAL" => row.try_get_unchecked::<f64, _>(i).map(float).ok(),
                "BLOB" => row
                    .try_get_unchecked::<Vec<u8>, _>(i)
                    .map(|b| Value::String(hex::encode(b)))
                    .ok(),
                _ => row
                    .try_get_unchecked::<Vec<u8>, _>(i)
                    .map(|b| text_or_hex(&b))
                    .ok(),
            }
            .unwrap_or(Value::Null)
        })
        .collect()
}
