//! The engine of `POST /v1/sql`: one checked query, in a read-only transaction, under a
//! statement timeout and a row cap, answered as JSON values.
//!
//! Timeouts, per dialect (details in `mysql.rs` and `sqlite.rs`):
//!
//! - **MySQL/MariaDB:** the server enforces it (`max_statement_time` on MariaDB,
//!   `max_execution_time` on MySQL, set per query on the read connection). A tokio timeout
//!   [`GRACE`] later backs it up: it sends `KILL QUERY` and discards the connection.
//! - **SQLite:** a progress handler on the read connection aborts the statement at the
//!   deadline (SQLite's own interrupt path); the same tokio backstop raises a flag the
//!   handler also checks. WAL readers never block the writer meanwhile.
//!
//! Values map to JSON by type: integers → numbers (unsigned 64-bit too; JavaScript readers
//! lose precision above 2^53), floats → numbers (non-finite → string), DECIMAL → string
//! (exact), text, dates and times → strings as the database prints them, bytes → lowercase
//! hex string, NULL → null.

pub(crate) mod mysql;
pub(crate) mod sqlite;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::RecordError;

/// How long after the statement timeout the backstop gives up on the database.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// Bounds for one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryLimits {
    /// Statement timeout. Zero is treated as one millisecond, never as "no limit".
    pub timeout: Duration,
    /// Rows returned at most; more set [`QueryResult::truncated`].
    pub max_rows: usize,
}

/// The answer to a query.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryResult {
    pub columns: Vec<ColumnInfo>,
    /// One JSON value per column, in column order.
    pub rows: Vec<Vec<Value>>,
    /// The query had more than `max_rows` rows; only the first `max_rows` are here.
    pub truncated: bool,
}

/// A result column: its name and the database's type name (e.g. `BIGINT UNSIGNED`,
/// `VARCHAR`, `INTEGER`, `TEXT`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    pub r#type: String,
}

pub(crate) fn timeout_error(limits: &QueryLimits) -> RecordError {
    RecordError::QueryTimeout(format!(
        "the query was cancelled after the {} ms statement timeout; narrow it (WHERE on \
         bucket_ms or ts_ms, LIMIT), or query a coarser usage table",
        limits.timeout.as_millis()
    ))
}

pub(crate) fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(v.to_string()))
}

/// Text as a JSON string; bytes that are not UTF-8 as hex.
pub(crate) fn text_or_hex(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => Value::String(hex::encode(bytes)),
    }
}
