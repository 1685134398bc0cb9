//! The record store's error type.

/// Everything that can go wrong in the record store.
///
/// The variants split by who must act: [`SqlRejected`](Self::SqlRejected),
/// [`Query`](Self::Query), [`QueryTimeout`](Self::QueryTimeout) and
/// [`TooLarge`](Self::TooLarge) are the SQL user's to fix (HTTP 400/413);
/// [`Busy`](Self::Busy) asks them to retry (503); [`CursorMoved`](Self::CursorMoved) tells the sink to re-read the cursor;
/// [`InvalidUrl`](Self::InvalidUrl) and [`Schema`](Self::Schema) are configuration errors;
/// the rest mean the store is unreachable or failing (HTTP 503, retry later).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The `record_store` URL is not one we can use.
    #[error("record store URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The database could not be reached or refused the login. `url` has its password
    /// redacted.
    #[error("cannot connect to the record store at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// Applying the versioned migrations failed.
    #[error("record store migrations failed at {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// The schema or server cannot give the guarantees the store relies on (for example a
    /// case-insensitive collation on `event_id`).
    #[error("record store at {url}: {reason}")]
    Schema { url: String, reason: String },

    /// `sink_state.applied_index` was not the batch's `expected_cursor`: another sink (a
    /// deposed leader, or a retry that did succeed) wrote first. Nothing was changed; re-read
    /// the cursor and build the batch again.
    #[error("sink cursor moved: the record store is at index {found}; re-read the cursor")]
    CursorMoved { found: u64 },

    /// The caller passed a batch the store cannot accept; nothing was changed.
    #[error("invalid sink batch: {0}")]
    InvalidBatch(String),

    /// `check_read_only` refused the SQL; the message says why and what is allowed.
    #[error("{0}")]
    SqlRejected(String),

    /// The query ran past its statement timeout and was cancelled.
    #[error("{0}")]
    QueryTimeout(String),

    /// The answer, or one value in it, would pass a size bound (`sql.max_result_bytes`, or
    /// the engine's value limit on the read connections); the message names the bound.
    #[error("{0}")]
    TooLarge(String),

    /// Every read slot is taken (`sql.max_concurrent` queries are running); retry shortly.
    #[error(
        "{max_concurrent} SQL queries are already running on this node (sql.max_concurrent); \
         retry shortly"
    )]
    Busy { max_concurrent: usize },

    /// The database refused or failed the (already checked) query: unknown column, type
    /// error, a write refused by the read-only transaction, ... The message is the
    /// database's own.
    #[error("{0}")]
    Query(String),

    /// A database operation failed for reasons outside the caller's input: connection
    /// lost, pool exhausted, I/O, constraint violated by a bug.
    #[error("record store: {action}: {source}")]
    Database {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

impl RecordError {
    pub(crate) fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> RecordError {
        move |source| RecordError::Database { action, source }
    }
}
