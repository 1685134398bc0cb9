//! Opening a record store: URL parsing, the two pools per dialect, migrations, and the
//! checks that the server gives the guarantees the store relies on.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

use super::{Backend, RecordError, ACQUIRE_TIMEOUT};

static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/mysql");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The sink writes one transaction at a time; a few more connections serve `cursor`,
/// `ping` and a sink that overlaps a deposed one.
const WRITE_POOL_SIZE: u32 = 4;
/// Concurrent user queries per node; more wait for a connection (up to `ACQUIRE_TIMEOUT`).
const READ_POOL_SIZE: u32 = 4;
/// How long an SQLite writer waits for the database lock held by another writer.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// MySQL and MariaDB name the statement timeout differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MySqlFlavor {
    /// `max_statement_time`, in seconds (fractions allowed); any statement.
    MariaDb,
    /// `max_execution_time`, in milliseconds; read-only SELECTs.
    MySql,
}

pub(crate) async fn open(url: &str) -> Result<Backend, RecordError> {
    let shown = redact(url);
    if let Some(rest) = url.strip_prefix("sqlite:") {
        open_sqlite(rest, &shown).await
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        open_mysql(url, &shown).await
    } else {
        Err(RecordError::InvalidUrl {
            url: shown,
            reason: "unknown scheme: expected mysql://user:pass@host:3306/db or \
                     sqlite:///absolute/path.db (sqlite://relative/path.db)"
                .into(),
        })
    }
}

async fn open_mysql(url: &str, shown: &str) -> Result<Backend, RecordError> {
    // sqlx reads the scheme-less rest; accept `mariadb://` as an alias.
    let url = url.replacen("mariadb://", "mysql://", 1);
    let options = MySqlConnectOptions::from_str(&url).map_err(|e| RecordError::InvalidUrl {
        url: shown.to_string(),
        reason: e.to_string(),
    })?;
    let connect_error = |source| RecordError::Connect {
        url: shown.to_string(),
        source,
    };
    // One direct attempt first: fails fast with the server's own reason (a pool would
    // retry until its acquire timeout and report only that).
    let probe = options.connect().await.map_err(connect_error)?;
    let _ = probe.close().await;
    let pool = MySqlPoolOptions::new()
        .max_connections(WRITE_POOL_SIZE)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options.clone());
    MYSQL_MIGRATIONS
        .run(&pool)
        .await
        .map_err(|source| RecordError::Migrate {
            url: shown.to_string(),
            source,
        })?;

    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&pool)
        .await
        .map_err(connect_error)?;
    let flavor = if version.contains("MariaDB") {
        MySqlFlavor::MariaDb
    } else {
        MySqlFlavor::MySql
    };
    check_mysql_collation(&pool, shown).await?;

    // Every transaction on a read connection is read-only, for the connection's life.
    let read_pool = MySqlPoolOptions::new()
        .max_connections(READ_POOL_SIZE)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sqlx::raw_sql("SET SESSION TRANSACTION READ ONLY")
                    .execute(conn)
                    .await
                    .map(drop)
            })
        })
        .connect_lazy_with(options);
    Ok(Backend::MySql {
        pool,
        read_pool,
        flavor,
    })
}

/// Event ids and usage keys must compare bytewise: a case- or accent-insensitive or PAD
/// SPACE collation would merge distinct ids ('A' = 'a') or keys ('GET' = 'GET '). The
/// migration picks the collation with version comments; this proves it took effect.
async fn check_mysql_collation(pool: &sqlx::MySqlPool, shown: &str) -> Result<(), RecordError> {
    const SQL: &str = "SELECT COLLATION_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'events' AND COLUMN_NAME = 'event_id'";
    let collation: Option<String> = sqlx::query_scalar(SQL)
        .fetch_optional(pool)
        .await
        .map_err(RecordError::db("read the events collation"))?;
    match collation.as_deref() {
        Some("utf8mb4_nopad_bin" | "utf8mb4_0900_bin") => Ok(()),
        other => Err(RecordError::Schema {
            url: shown.to_string(),
            reason: format!(
                "events.event_id has collation {other:?}, not a binary NO PAD one \
                 (utf8mb4_nopad_bin on MariaDB >= 10.2, utf8mb4_0900_bin on MySQL >= 8.0); \
                 this server is too old or the table was created by something else"
            ),
        }),
    }
}

async fn open_sqlite(rest: &str, shown: &str) -> Result<Backend, RecordError> {
    let path = sqlite_path(rest).map_err(|reason| RecordError::InvalidUrl {
        url: shown.to_string(),
        reason,
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| RecordError::InvalidUrl {
            url: shown.to_string(),
            reason: format!("cannot create directory {}: {e}", dir.display()),
        })?;
    }
    let connect_error = |source| RecordError::Connect {
        url: shown.to_string(),
        source,
    };
    // FULL: a commit the sink reported is on disk, so the Raft log may be purged behind it.
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    // min_connections(1): a live writer keeps the WAL and shared-memory files in place,
    // which read-only connections need.
    let pool = SqlitePoolOptions::new()
        .max_connections(WRITE_POOL_SIZE)
        .min_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(connect_error)?;
    // Two nodes sharing one SQLite file (a single-host setup, the demo) may migrate at the
    // same moment; SQLite has no migration lock, so the loser sees "table already exists".
    // The winner's run is recorded in `_sqlx_migrations`: trying again finds it applied.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match SQLITE_MIGRATIONS.run(&pool).await {
            Ok(()) => break,
            Err(_) if attempt < 5 => {
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
            }
            Err(source) => {
                return Err(RecordError::Migrate {
                    url: shown.to_string(),
                    source,
                })
            }
        }
    }

    // Read connections: opened read-only by SQLite itself, and `query_only` on top. In WAL
    // mode readers never block the writer, so a runaway query cannot stall the sink.
    let read_options = SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .pragma("query_only", "ON");
    let read_pool = SqlitePoolOptions::new()
        .max_connections(READ_POOL_SIZE)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(read_options);
    Ok(Backend::Sqlite { pool, read_pool })
}

/// `sqlite://rel/path.db` → `rel/path.db`; `sqlite:///abs/path.db` → `/abs/path.db`.
fn sqlite_path(rest: &str) -> Result<PathBuf, String> {
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.contains('?') {
        return Err("query parameters are not supported for sqlite URLs".into());
    }
    if path.is_empty() || path == ":memory:" {
        return Err(
            "give a database file path, e.g. sqlite:///var/lib/tally/records.db; \
             an in-memory database cannot be shared by the sink and the SQL endpoint"
                .into(),
        );
    }
    Ok(Path::new(path).to_path_buf())
}

/// The URL with its password replaced by `***`, safe for logs and error messages.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    // The user info ends at the last '@' before the query string (an unencoded '@' in a
    // password still leaves the host after the last one).
    let before_query = rest.split('?').next().unwrap_or(rest);
    let Some(at) = before_query.rfind('@') else {
        return url.to_string();
    };
    let user_info = &rest[..at];
    match user_info.find(':') {
        Some(colon) => format!("{scheme}{}:***{}", &user_info[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("mysql://tally:s3cret@db:3306/tally"),
            "mysql://tally:***@db:3306/tally"
        );
        assert_eq!(
            redact("mysql://u:p@ss@host/db?socket=/x"),
            "mysql://u:***@host/db?socket=/x"
        );
        assert_eq!(
            redact("mysql://root@localhost/db"),
            "mysql://root@localhost/db"
        );
        assert_eq!(redact("sqlite:///var/x.db"), "sqlite:///var/x.db");
        assert_eq!(redact("nonsense"), "nonsense");
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("///abs/r.db").unwrap(), Path::new("/abs/r.db"));
        assert_eq!(sqlite_path("//rel/r.db").unwrap(), Path::new("rel/r.db"));
        assert_eq!(sqlite_path("r.db").unwrap(), Path::new("r.db"));
        assert!(sqlite_path("//").is_err());
        assert!(sqlite_path(":memory:").is_err());
        assert!(sqlite_path("//r.db?mode=ro").is_err());
    }

    #[tokio::test]
    async fn unknown_scheme_is_a_clear_error() {
        let err = open("postgres://u:pw@h/db").await.unwrap_err().to_string();
        assert!(err.contains("unknown scheme"), "{err}");
        assert!(err.contains("postgres://u:***@h/db"), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }
}
