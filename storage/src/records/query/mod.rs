//! The engine of `POST /v1/sql`: one checked query, in a read-only transaction, under a
//! statement timeout, a row cap and a byte budget, answered as JSON values.
//!
//! Rows are streamed from the database and encoded to JSON one at a time ([`RowsBuilder`]),
//! so what a query holds in memory is its encoded answer (at most `max_bytes`) plus the
//! row being read; fetching stops at the first row that does not fit. A single row larger
//! than the whole budget is an error ([`RecordError::TooLarge`]) rather than an empty
//! answer. How large one value can get before we see it is bounded by the engine (see
//! `connect.rs`: SQLite's length and column limits, MySQL's `group_concat_max_len` and the
//! server's `max_allowed_packet`).
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
use serde_json::value::RawValue;
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
    /// Bytes of the encoded `rows` array at most (the JSON text, brackets and commas
    /// included); the rows that do not fit are cut and set [`QueryResult::truncated`].
    pub max_bytes: usize,
}

/// Which bound cut an answer short.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncated {
    /// More rows than `max_rows`.
    MaxRows,
    /// The next row would have taken the encoded rows past `max_bytes`.
    MaxBytes,
}

/// The answer to a query.
#[derive(Clone, Debug, Serialize)]
pub struct QueryResult {
    pub columns: Vec<ColumnInfo>,
    /// The rows, already encoded: a JSON array holding one array per row, one value per
    /// column in column order. [`values`](Self::values) decodes it.
    pub rows: Box<RawValue>,
    /// How many rows `rows` holds.
    pub row_count: usize,
    /// Set when the query had more rows than the answer carries.
    pub truncated: Option<Truncated>,
}

impl QueryResult {
    /// The rows as JSON values (for tests and small answers: this copies everything).
    pub fn values(&self) -> Vec<Vec<Value>> {
        serde_json::from_str(self.rows.get()).unwrap_or_default()
    }

    /// Bytes of the encoded rows.
    pub fn rows_bytes(&self) -> usize {
        self.rows.get().len()
    }
}

/// Builds the encoded `rows` array of an answer under the limits, one row at a time.
pub(crate) struct RowsBuilder {
    buf: String,
    count: usize,
    max_rows: usize,
    max_bytes: usize,
    /// Reused for each row's encoding.
    scratch: Vec<u8>,
}

impl RowsBuilder {
    pub(crate) fn new(limits: &QueryLimits) -> RowsBuilder {
        RowsBuilder {
            buf: String::from("["),
            count: 0,
            max_rows: limits.max_rows,
            // The two brackets always fit.
            max_bytes: limits.max_bytes.max(2),
            scratch: Vec::new(),
        }
    }

    /// Whether another row may still be added (the row cap is checked before the row is
    /// even read, like the byte budget once it is full).
    pub(crate) fn room_for_another(&self) -> Option<Truncated> {
        (self.count >= self.max_rows).then_some(Truncated::MaxRows)
    }

    /// Adds one row. `Ok(Some(_))`: it does not fit and the answer ends before it;
    /// `Err(TooLarge)`: it would not fit even alone.
    pub(crate) fn push(&mut self, row: &[Value]) -> Result<Option<Truncated>, RecordError> {
        if let Some(cut) = self.room_for_another() {
            return Ok(Some(cut));
        }
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, row)
            .map_err(|e| RecordError::Query(format!("cannot encode a row as JSON: {e}")))?;
        let alone = self.scratch.len() + 2;
        if alone > self.max_bytes {
            return Err(RecordError::TooLarge(format!(
                "one row of the answer is {alone} bytes as JSON, more than the whole \
                 sql.max_result_bytes budget ({} bytes); select fewer or shorter columns \
                 (e.g. SUBSTR/LEFT, LENGTH instead of the value)",
                self.max_bytes
            )));
        }
        let comma = usize::from(self.count > 0);
        if self.buf.len() + comma + self.scratch.len() + 1 > self.max_bytes {
            return Ok(Some(Truncated::MaxBytes));
        }
        if comma == 1 {
            self.buf.push(',');
        }
        // serde_json writes valid UTF-8.
        self.buf
            .push_str(std::str::from_utf8(&self.scratch).unwrap_or("null"));
        self.count += 1;
        Ok(None)
    }

    pub(crate) fn finish(mut self) -> (Box<RawValue>, usize) {
        self.buf.push(']');
        let count = self.count;
        let raw = RawValue::from_string(self.buf)
            .unwrap_or_else(|_| RawValue::from_string("[]".into()).expect("[] is JSON"));
        (raw, count)
    }
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

pub(crate) fn too_large(engine_message: &str) -> RecordError {
    RecordError::TooLarge(format!(
        "a value of the answer is larger than the read connections allow ({engine_message}); \
         select a shorter value (SUBSTR/LEFT, LENGTH instead of the value)"
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits(max_rows: usize, max_bytes: usize) -> QueryLimits {
        QueryLimits {
            timeout: Duration::from_secs(1),
            max_rows,
            max_bytes,
        }
    }

    #[test]
    fn rows_are_encoded_within_the_budget() {
        // `[[1,"ab"]]` is 10 bytes; each further row adds 9.
        let row = [json!(1), json!("ab")];
        let mut rows = RowsBuilder::new(&limits(100, 28));
        assert_eq!(rows.push(&row).unwrap(), None);
        assert_eq!(rows.push(&row).unwrap(), None);
        assert_eq!(rows.push(&row).unwrap(), None);
        assert_eq!(rows.push(&row).unwrap(), Some(Truncated::MaxBytes));
        let (raw, count) = rows.finish();
        assert_eq!(raw.get(), r#"[[1,"ab"],[1,"ab"],[1,"ab"]]"#);
        assert_eq!((raw.get().len(), count), (28, 3));

        // Exactly at the budget fits.
        let mut rows = RowsBuilder::new(&limits(100, 10));
        assert_eq!(rows.push(&row).unwrap(), None);
        assert_eq!(rows.push(&row).unwrap(), Some(Truncated::MaxBytes));
    }

    #[test]
    fn the_row_cap_comes_first_and_zero_rows_is_valid_json() {
        let mut rows = RowsBuilder::new(&limits(1, 1000));
        assert_eq!(rows.push(&[json!(null)]).unwrap(), None);
        assert_eq!(rows.room_for_another(), Some(Truncated::MaxRows));
        assert_eq!(rows.push(&[json!(null)]).unwrap(), Some(Truncated::MaxRows));
        let empty = RowsBuilder::new(&limits(0, 0)).finish();
        assert_eq!((empty.0.get(), empty.1), ("[]", 0));
    }

    #[test]
    fn a_row_larger_than_the_whole_budget_is_an_error_that_names_the_bound() {
        let mut rows = RowsBuilder::new(&limits(100, 1024));
        assert_eq!(rows.push(&[json!("small")]).unwrap(), None);
        let err = rows.push(&[json!("x".repeat(2000))]).unwrap_err();
        match err {
            RecordError::TooLarge(message) => {
                assert!(message.contains("sql.max_result_bytes"), "{message}");
                assert!(message.contains("1024"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escapes_count_as_they_are_sent() {
        // A quote is sent as two bytes, a control character as six.
        let mut rows = RowsBuilder::new(&limits(100, 1000));
        rows.push(&[json!("\"\u{1}")]).unwrap();
        let (raw, _) = rows.finish();
        assert_eq!(raw.get(), r#"[["\"\u0001"]]"#);
    }
}
