//! The record store: analytic records in SQL (docs/sql.md), written by the leader's sink and
//! read through the read-only SQL endpoint (docs/api.md). MySQL/MariaDB in production, SQLite
//! as the embedded default. The schema is documented for users in `docs/sql.md`.
//!
//! - [`RecordStore::connect`] opens pools and applies the versioned migrations
//!   (`storage/migrations/{mysql,sqlite}`, embedded in the binary).
//! - [`RecordStore::write`] is the sink's only write: one transaction that checks and moves
//!   the cursor and inserts exactly the events that are new, with their usage deltas.
//! - [`check_read_only`] and [`RecordStore::query_read_only`] serve `POST /v1/sql`.
//!
//! Invariants:
//!
//! 1. **Exactly once.** `events` holds each event id once, and `usage_*` equal a `GROUP BY`
//!    over `events` (each event under the key the state counted it under: its own, or an
//!    `__other__` overflow key), after any sequence of crashes, retries and competing sinks: a write
//!    locks `sink_state`, refuses to run from a stale cursor, counts only rows it inserts,
//!    and commits rows, usage and cursor together.
//! 2. **Same numbers as memory.** Usage deltas come from `tally_analytics::Measures::add`, the
//!    function the in-memory state uses; keys compare bytewise on both dialects.
//! 3. **Reads cannot write.** User SQL must parse as exactly one query, and then runs on a
//!    separate read-only pool (optionally as its own SELECT-only database user) inside a
//!    read-only transaction. Either layer alone refuses a write.
//! 4. **Reads are bounded.** At most `max_concurrent` queries run at once (more are refused
//!    at once, never queued), each under a statement timeout, a row cap and a byte budget
//!    counted while rows stream in, on connections whose engine limits bound single values.
//!    The read pool is separate from the sink's, so readers never starve the sink.

mod connect;
mod error;
mod guard;
mod query;
mod usage;
mod write;

use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::{MySqlPool, SqlitePool};
use tokio::sync::Semaphore;

pub use connect::redact as redact_url;
pub use error::RecordError;
pub use guard::check_read_only;
pub use query::{ColumnInfo, QueryLimits, QueryResult, Truncated};
pub use write::{WriteBatch, WriteOutcome};

/// The SQL dialect behind a store; it decides how user SQL is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// MySQL 8 or MariaDB ≥ 10.2.
    MySql,
    Sqlite,
}

/// A connection to the record store. Cheap to clone (pools are shared).
#[derive(Clone, Debug)]
pub struct RecordStore {
    backend: Backend,
    /// One permit per user query that may run now; as many as the read pool has
    /// connections, so a query that gets a permit never waits for a connection.
    read_slots: Arc<Semaphore>,
    max_concurrent: usize,
}

/// How the read side (the `/v1/sql` pool) of a store is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPoolOptions {
    /// Another URL for the read pool: the same MySQL/MariaDB database reached as a user
    /// with `SELECT` rights only. `None`: the store's own URL (the sink's user).
    pub url: Option<String>,
    /// User queries at once at most, and the read pool's size.
    pub max_concurrent: usize,
}

/// Default of [`ReadPoolOptions::max_concurrent`].
pub const DEFAULT_MAX_CONCURRENT_QUERIES: usize = 4;

impl Default for ReadPoolOptions {
    fn default() -> Self {
        ReadPoolOptions {
            url: None,
            max_concurrent: DEFAULT_MAX_CONCURRENT_QUERIES,
        }
    }
}

/// Each dialect has two pools: `pool` for the sink and housekeeping, `read_pool` for user
/// SQL only. Read connections are read-only for their whole life and carry per-query
/// settings (timeouts, progress handlers) that must never leak into the sink's work.
#[derive(Clone, Debug)]
enum Backend {
    MySql {
        pool: MySqlPool,
        read_pool: MySqlPool,
        /// How the read pool connects (its user may differ from the sink's).
        read_options: Arc<MySqlConnectOptions>,
        flavor: connect::MySqlFlavor,
    },
    Sqlite {
        pool: SqlitePool,
        read_pool: SqlitePool,
    },
}

/// How long a caller waits for a pooled connection before the store counts as down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

impl RecordStore {
    /// Connects to `url` and brings the schema up to date.
    ///
    /// `mysql://user:pass@host:3306/db` (also `mariadb://`, and `?socket=/path` for a Unix
    /// socket), or `sqlite://relative/path.db` / `sqlite:///absolute/path.db` (the file and
    /// its directory are created if missing; WAL mode). Errors name the URL with the
    /// password redacted.
    pub async fn connect(url: &str) -> Result<RecordStore, RecordError> {
        Self::connect_with(url, &ReadPoolOptions::default()).await
    }

    /// [`connect`](Self::connect), with the read side as `reads` says.
    pub async fn connect_with(
        url: &str,
        reads: &ReadPoolOptions,
    ) -> Result<RecordStore, RecordError> {
        let backend = connect::open(url, reads).await?;
        let max_concurrent = reads.max_concurrent.max(1);
        Ok(RecordStore {
            backend,
            read_slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
        })
    }

    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::MySql { .. } => Dialect::MySql,
            Backend::Sqlite { .. } => Dialect::Sqlite,
        }
    }

    /// Health check: one round trip on the sink's pool.
    pub async fn ping(&self) -> Result<(), RecordError> {
        let ping = RecordError::db("ping");
        match &self.backend {
            Backend::MySql { pool, .. } => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Backend::Sqlite { pool, .. } => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
        .map_err(ping)
    }

    /// The log index up to which the store holds every event (`sink_state.applied_index`).
    pub async fn cursor(&self) -> Result<u64, RecordError> {
        const SQL: &str = "SELECT applied_index FROM sink_state WHERE id = 1";
        let read = RecordError::db("read sink_state");
        let found = match &self.backend {
            Backend::MySql { pool, .. } => sqlx::query_scalar::<_, u64>(SQL)
                .fetch_optional(pool)
                .await
                .map_err(read)?,
            Backend::Sqlite { pool, .. } => sqlx::query_scalar::<_, i64>(SQL)
                .fetch_optional(pool)
                .await
                .map_err(read)?
                .map(|index| index.max(0) as u64),
        };
        found.ok_or_else(write::missing_cursor_row)
    }

    /// Writes one sink batch exactly once; see [`WriteBatch`].
    pub async fn write(&self, batch: WriteBatch<'_>) -> Result<WriteOutcome, RecordError> {
        match &self.backend {
            Backend::MySql { pool, .. } => write::mysql::write(pool, batch).await,
            Backend::Sqlite { pool, .. } => write::sqlite::write(pool, batch).await,
        }
    }

    /// Runs one user query: [`check_read_only`], then a read-only transaction under
    /// `limits`. When `max_concurrent` queries already run, fails at once with
    /// [`RecordError::Busy`].
    pub async fn query_read_only(
        &self,
        sql: &str,
        limits: QueryLimits,
    ) -> Result<QueryResult, RecordError> {
        check_read_only(sql, self.dialect())?;
        self.query_read_only_unchecked(sql, limits).await
    }

    /// [`query_read_only`](Self::query_read_only) without the parser check. Exists so tests
    /// can prove the database layer refuses writes on its own; never call it with user SQL.
    ///
    /// The query runs in a task of its own that holds the read slot until the database is
    /// done with it: a caller that goes away (a client hanging up) frees nothing early, so
    /// hanging up and retrying cannot pile up work on the database.
    #[doc(hidden)]
    pub async fn query_read_only_unchecked(
        &self,
        sql: &str,
        limits: QueryLimits,
    ) -> Result<QueryResult, RecordError> {
        let slot = self
            .read_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| RecordError::Busy {
                max_concurrent: self.max_concurrent,
            })?;
        let backend = self.backend.clone();
        let sql = sql.to_string();
        let task = tokio::spawn(async move {
            let _slot = slot;
            match &backend {
                Backend::MySql {
                    read_pool,
                    read_options,
                    flavor,
                    ..
                } => query::mysql::run(read_pool, read_options, *flavor, &sql, limits).await,
                Backend::Sqlite { read_pool, .. } => {
                    query::sqlite::run(read_pool, &sql, limits).await
                }
            }
        });
        task.await
            .map_err(|e| RecordError::Query(format!("the query failed inside the server: {e}")))?
    }

    /// Queries that may still start now (for status pages and tests).
    pub fn idle_read_slots(&self) -> usize {
        self.read_slots.available_permits()
    }

    /// Closes every pooled connection (waits for borrowed ones to come back).
    pub async fn close(&self) {
        match &self.backend {
            Backend::MySql {
                pool, read_pool, ..
            } => {
                read_pool.close().await;
                pool.close().await;
            }
            Backend::Sqlite { pool, read_pool } => {
                read_pool.close().await;
                pool.close().await;
            }
        }
    }
}
