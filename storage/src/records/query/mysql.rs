//! User queries on MySQL/MariaDB.
//!
//! The read pool's connections are `SET SESSION TRANSACTION READ ONLY` for life, and each
//! query runs inside `START TRANSACTION READ ONLY`: the server refuses any write, DDL
//! included. The session limits (statement timeout, `group_concat_max_len`) are set again
//! before every query on these dedicated connections, so they never reach the sink's pool
//! and nothing a previous query did can loosen them. User SQL is sent as text
//! (`COM_QUERY`) so that every value arrives exactly as the server prints it.

use futures::TryStreamExt;
use serde_json::Value;
use sqlx::mysql::{
    MySql, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlRow, MySqlTypeInfo,
};
use sqlx::pool::PoolConnection;
use sqlx::{
    AssertSqlSafe, Column, ConnectOptions, Connection, Executor, MySqlPool, Row, SqlSafeStr,
    Statement, TypeInfo,
};

use super::{
    float, text_or_hex, timeout_error, ColumnInfo, QueryLimits, QueryResult, RowsBuilder, GRACE,
};
use crate::records::connect::MySqlFlavor;
use crate::records::RecordError;

/// MariaDB `ER_STATEMENT_TIMEOUT`, MySQL `ER_QUERY_TIMEOUT`, and `ER_QUERY_INTERRUPTED`
/// (what a `KILL QUERY` produces).
const TIMEOUT_ERRORS: [u16; 3] = [1969, 3024, 1317];

/// The longest `GROUP_CONCAT` result on a read connection, in bytes: the same bound as
/// SQLite's value limit (`connect::MAX_VALUE_BYTES`).
const GROUP_CONCAT_MAX_LEN: usize = crate::records::connect::MAX_VALUE_BYTES;

/// `read_options` connect as the read pool does; the backstop's `KILL QUERY` uses them
/// (a user may always kill its own queries, and the read pool may have no idle connection).
pub(crate) async fn run(
    read_pool: &MySqlPool,
    read_options: &MySqlConnectOptions,
    flavor: MySqlFlavor,
    sql: &str,
    limits: QueryLimits,
) -> Result<QueryResult, RecordError> {
    let mut conn = read_pool
        .acquire()
        .await
        .map_err(RecordError::db("acquire a read connection"))?;
    let id: u64 = sqlx::query_scalar("SELECT CAST(CONNECTION_ID() AS UNSIGNED)")
        .fetch_one(&mut *conn)
        .await
        .map_err(RecordError::db("read the connection id"))?;
    set_session_limits(&mut conn, flavor, &limits).await?;

    let outcome =
        tokio::time::timeout(limits.timeout + GRACE, fetch(&mut conn, sql, &limits)).await;
    let (result, discard) = match outcome {
        // Unread rows may still be on the wire: dropping the socket is cheaper than
        // draining them (the server aborts the statement when its writes fail).
        Ok(Ok(result)) => {
            let truncated = result.truncated.is_some();
            (Ok(result), truncated)
        }
        Ok(Err(e)) => {
            let broken = !matches!(e, RecordError::Query(_) | RecordError::QueryTimeout(_));
            (Err(e), broken)
        }
        Err(_elapsed) => {
            // The server did not stop it (MySQL's max_execution_time covers SELECTs only):
            // kill it from a connection of the same user.
            kill_query(read_options, id).await;
            (Err(timeout_error(&limits)), true)
        }
    };
    if discard {
        // Neither back into the pool nor a graceful close (which would drain the result).
        drop(conn.detach());
    }
    result
}

async fn kill_query(read_options: &MySqlConnectOptions, id: u64) {
    let kill = async {
        let mut conn = read_options.connect().await?;
        let killed = sqlx::raw_sql(AssertSqlSafe(format!("KILL QUERY {id}")))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        killed.map(drop)
    };
    match tokio::time::timeout(GRACE * 5, kill).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("KILL QUERY {id} after a query timeout failed: {e}"),
        Err(_) => tracing::warn!("KILL QUERY {id} after a query timeout did not finish"),
    }
}

/// One round trip that sets every per-query limit of the session, over whatever the
/// connection carried before.
async fn set_session_limits(
    conn: &mut PoolConnection<MySql>,
    flavor: MySqlFlavor,
    limits: &QueryLimits,
) -> Result<(), RecordError> {
    // Zero would mean "no limit" to both servers.
    let ms = limits.timeout.as_millis().max(1);
    let timeout = match flavor {
        MySqlFlavor::MariaDb => format!("max_statement_time = {}.{:03}", ms / 1000, ms % 1000),
        MySqlFlavor::MySql => format!("max_execution_time = {ms}"),
    };
    let set = format!("SET SESSION {timeout}, group_concat_max_len = {GROUP_CONCAT_MAX_LEN}");
    sqlx::raw_sql(AssertSqlSafe(set))
        .execute(&mut **conn)
        .await
        .map_err(RecordError::db("set the session limits"))
        .map(drop)
}

async fn fetch(
    conn: &mut MySqlConnection,
    sql: &str,
    limits: &QueryLimits,
) -> Result<QueryResult, RecordError> {
    let mut tx = conn
        .begin_with("START TRANSACTION READ ONLY")
        .await
        .map_err(RecordError::db("start a read-only transaction"))?;
    let mut columns = None;
    let mut rows = RowsBuilder::new(limits);
    let mut truncated = None;
    {
        let mut stream = sqlx::raw_sql(AssertSqlSafe(sql)).fetch(&mut *tx);
        // One row past a full answer is read: it tells a cut answer from one that fits.
        loop {
            let Some(row) = stream.try_next().await.map_err(|e| classify(e, limits))? else {
                break;
            };
            if columns.is_none() {
                columns = Some(column_infos(&row));
            }
            if let Some(cut) = rows.room_for_another() {
                truncated = Some(cut);
                break;
            }
            let values = row_values(&row);
            drop(row);
            if let Some(cut) = rows.push(&values)? {
                truncated = Some(cut);
                break;
            }
        }
    }
    let columns = match columns {
        Some(columns) => columns,
        // No row to read them from: ask the server to describe the statement.
        None => match (&mut *tx).prepare(AssertSqlSafe(sql).into_sql_str()).await {
            Ok(statement) => statement
                .columns()
                .iter()
                .map(|c| ColumnInfo {
                    name: c.name().to_string(),
                    r#type: type_name(c.type_info()).to_string(),
                })
                .collect(),
            Err(_) => Vec::new(),
        },
    };
    if truncated.is_none() {
        tx.rollback()
            .await
            .map_err(RecordError::db("end the read-only transaction"))?;
    }
    let (rows, row_count) = rows.finish();
    Ok(QueryResult {
        columns,
        rows,
        row_count,
        truncated,
    })
}

/// MySQL/MariaDB error numbers that say the server is busy or going away, not that the query
/// is wrong: too many connections (1040), server shutdown (1053), lock wait timeout (1205),
/// deadlock (1213), read-only server (1290), out of memory (1037, 1038).
const SERVER_TROUBLE: [u16; 7] = [1037, 1038, 1040, 1053, 1205, 1213, 1290];

fn classify(e: sqlx::Error, limits: &QueryLimits) -> RecordError {
    match &e {
        sqlx::Error::Database(db) => {
            let number = db
                .try_downcast_ref::<MySqlDatabaseError>()
                .map(|e| e.number());
            if number.is_some_and(|n| TIMEOUT_ERRORS.contains(&n)) {
                timeout_error(limits)
            } else if number.is_some_and(|n| SERVER_TROUBLE.contains(&n))
                || db
                    .code()
                    .is_some_and(|state| state.starts_with("08") || state.starts_with("40"))
            {
                // The server's trouble, not the query's: the caller should retry (503).
                RecordError::Database {
                    action: "run the query",
                    source: e,
                }
            } else {
                RecordError::Query(db.message().to_string())
            }
        }
        _ => RecordError::Database {
            action: "run the query",
            source: e,
        },
    }
}

fn column_infos(row: &MySqlRow) -> Vec<ColumnInfo> {
    row.columns()
        .iter()
        .map(|c| ColumnInfo {
            name: c.name().to_string(),
            r#type: type_name(c.type_info()).to_string(),
        })
        .collect()
}

/// sqlx names a column by its BINARY flag, which MySQL also sets for text in a `_bin`
/// collation; only the `binary` character set really means bytes.
fn type_name(ty: &MySqlTypeInfo) -> &str {
    let text = <str as sqlx::Type<MySql>>::compatible(ty);
    match ty.name() {
        "BINARY" if text => "CHAR",
        "VARBINARY" if text => "VARCHAR",
        "TINYBLOB" if text => "TINYTEXT",
        "BLOB" if text => "TEXT",
        "MEDIUMBLOB" if text => "MEDIUMTEXT",
        "LONGBLOB" if text => "LONGTEXT",
        name => name,
    }
}

fn row_values(row: &MySqlRow) -> Vec<Value> {
    (0..row.len())
        .map(|i| {
            let ty = row.column(i).type_info();
            match row.try_get_unchecked::<Option<&[u8]>, _>(i) {
                Ok(Some(bytes)) => value(type_name(ty), bytes),
                Ok(None) => Value::Null,
                Err(_) => Value::Null,
            }
        })
        .collect()
}

/// One text-protocol value, by its column's type.
fn value(type_name: &str, bytes: &[u8]) -> Value {
    let text = std::str::from_utf8(bytes).ok();
    let parsed = match type_name {
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" | "BOOLEAN" => {
            text.and_then(|t| t.parse::<i64>().ok()).map(Value::from)
        }
        t if t.ends_with(" UNSIGNED") => text.and_then(|t| t.parse::<u64>().ok()).map(Value::from),
        "FLOAT" | "DOUBLE" => text.and_then(|t| t.parse::<f64>().ok()).map(float),
        "BIT" if bytes.len() <= 8 => Some(Value::from(
            bytes.iter().fold(0u64, |n, &b| n << 8 | u64::from(b)),
        )),
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" | "GEOMETRY"
        | "BIT" => Some(Value::String(hex::encode(bytes))),
        _ => None,
    };
    parsed.unwrap_or_else(|| text_or_hex(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_protocol_values() {
        assert_eq!(value("BIGINT", b"-5"), Value::from(-5));
        assert_eq!(
            value("BIGINT UNSIGNED", b"18446744073709551615"),
            Value::from(u64::MAX)
        );
        assert_eq!(value("DOUBLE", b"1.5"), Value::from(1.5));
        assert_eq!(value("DECIMAL", b"12.340"), Value::from("12.340"));
        assert_eq!(value("VARBINARY", &[0xde, 0xad]), Value::from("dead"));
        assert_eq!(value("BIT", &[1, 0]), Value::from(256));
        assert_eq!(value("VARCHAR", "ü".as_bytes()), Value::from("ü"));
        assert_eq!(
            value("DATETIME", b"2024-01-02 03:04:05"),
            Value::from("2024-01-02 03:04:05")
        );
    }
}
