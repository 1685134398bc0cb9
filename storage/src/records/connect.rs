//! Opening a record store: URL parsing, the two pools per dialect, migrations, the checks
//! that the server gives the guarantees the store relies on, and the engine limits of the
//! read connections.
//!
//! Engine limits: the byte budget of an answer is counted row by row as rows arrive, but a
//! single value is built by the database before we see it. So the read connections bound
//! values themselves: on SQLite `SQLITE_LIMIT_LENGTH` ([`MAX_VALUE_BYTES`]; any longer
//! string or blob fails the statement with "string or blob too big") and
//! `SQLITE_LIMIT_COLUMN` ([`MAX_RESULT_COLUMNS`]); on MySQL/MariaDB `group_concat_max_len`
//! (set per query, see `query/mysql.rs`), with every other value bounded by the server's own
//! `max_allowed_packet` (16 MiB by default on MariaDB, 64 MiB on MySQL 8; the session value
//! cannot be lowered).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

use super::{Backend, ReadPoolOptions, RecordError, ACQUIRE_TIMEOUT};

static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/mysql");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The sink writes one transaction at a time; a few more connections serve `cursor`,
/// `ping` and a sink that overlaps a deposed one.
const WRITE_POOL_SIZE: u32 = 4;
/// The longest string or blob a read connection builds (SQLite's `SQLITE_LIMIT_LENGTH`,
/// MySQL's `group_concat_max_len`). Also the longest row SQLite reads from a table: an
/// `events` row at its validation limits is under 100 KiB.
pub(crate) const MAX_VALUE_BYTES: usize = 256 << 10;
/// Result columns at most on SQLite read connections (`SQLITE_LIMIT_COLUMN`; SQLite's
/// default is 2,000). With [`MAX_VALUE_BYTES`] it bounds one row: 128 × 256 KiB = 32 MiB.
/// `SELECT *` over `events` is 37 columns.
pub(crate) const MAX_RESULT_COLUMNS: usize = 128;
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

pub(crate) async fn open(url: &str, reads: &ReadPoolOptions) -> Result<Backend, RecordError> {
    let shown = redact(url);
    let pool_size = u32::try_from(reads.max_concurrent.max(1)).unwrap_or(u32::MAX);
    if let Some(rest) = url.strip_prefix("sqlite:") {
        if let Some(read_url) = &reads.url {
            return Err(RecordError::InvalidUrl {
                url: redact(read_url),
                reason: "record_store_read applies to MySQL/MariaDB only: SQLite read \
                         connections are already opened read-only by SQLite itself"
                    .into(),
            });
        }
        open_sqlite(rest, &shown, pool_size).await
    } else if is_mysql(url) {
        open_mysql(url, &shown, reads.url.as_deref(), pool_size).await
    } else {
        Err(RecordError::InvalidUrl {
            url: shown,
            reason: "unknown scheme: expected mysql://user:pass@host:3306/db or \
                     sqlite:///absolute/path.db (sqlite://relative/path.db)"
                .into(),
        })
    }
}

fn is_mysql(url: &str) -> bool {
    url.starts_with("mysql://") || url.starts_with("mariadb://")
}

fn mysql_options(url: &str, shown: &str) -> Result<MySqlConnectOptions, RecordError> {
    // sqlx reads the scheme-less rest; accept `mariadb://` as an alias.
    let url = url.replacen("mariadb://", "mysql://", 1);
    MySqlConnectOptions::from_str(&url).map_err(|e| RecordError::InvalidUrl {
        url: shown.to_string(),
        reason: e.to_string(),
    })
}

/// One direct attempt: fails fast with the server's own reason (a pool would retry until
/// its acquire timeout and report only that).
async fn probe_mysql(options: &MySqlConnectOptions, shown: &str) -> Result<(), RecordError> {
    let probe = options
        .connect()
        .await
        .map_err(|source| RecordError::Connect {
            url: shown.to_string(),
            source,
        })?;
    let _ = probe.close().await;
    Ok(())
}

async fn open_mysql(
    url: &str,
    shown: &str,
    read_url: Option<&str>,
    read_pool_size: u32,
) -> Result<Backend, RecordError> {
    let options = mysql_options(url, shown)?;
    let connect_error = |source| RecordError::Connect {
        url: shown.to_string(),
        source,
    };
    probe_mysql(&options, shown).await?;
    // The read pool's own user (SELECT only), or the sink's.
    let read_options = match read_url {
        None => options.clone(),
        Some(read_url) => {
            let read_shown = redact(read_url);
            if !is_mysql(read_url) {
                return Err(RecordError::InvalidUrl {
                    url: read_shown,
                    reason: "record_store_read must be a mysql:// (or mariadb://) URL, like \
                             record_store: the same database, reached as a user with SELECT \
                             rights only"
                        .into(),
                });
            }
            let read_options = mysql_options(read_url, &read_shown)?;
            probe_mysql(&read_options, &read_shown).await?;
            read_options
        }
    };
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
        .max_connections(read_pool_size)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sqlx::raw_sql("SET SESSION TRANSACTION READ ONLY")
                    .execute(conn)
                    .await
                    .map(drop)
            })
        })
        .connect_lazy_with(read_options.clone());
    Ok(Backend::MySql {
        pool,
        read_pool,
        read_options: std::sync::Arc::new(read_options),
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

async fn open_sqlite(rest: &str, shown: &str, read_pool_size: u32) -> Result<Backend, RecordError> {
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
        .max_connections(read_pool_size)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                let mut handle = conn.lock_handle().await?;
                limit_sqlite_reader(&mut handle).map_err(sqlx::Error::Configuration)
            })
        })
        .connect_lazy_with(read_options);
    Ok(Backend::Sqlite { pool, read_pool })
}

/// Lowers the run-time limits of a read connection (module docs) and checks that they
/// took: SQLite silently clamps a limit to its compile-time maximum.
fn limit_sqlite_reader(
    handle: &mut sqlx::sqlite::LockedSqliteHandle<'_>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use libsqlite3_sys::{sqlite3_limit, SQLITE_LIMIT_COLUMN, SQLITE_LIMIT_LENGTH};
    let db = handle.as_raw_handle().as_ptr();
    for (id, name, value) in [
        (SQLITE_LIMIT_LENGTH, "SQLITE_LIMIT_LENGTH", MAX_VALUE_BYTES),
        (
            SQLITE_LIMIT_COLUMN,
            "SQLITE_LIMIT_COLUMN",
            MAX_RESULT_COLUMNS,
        ),
    ] {
        let value = i32::try_from(value)?;
        // SAFETY: `db` is the open connection `handle` holds locked for this call: no
        // other thread uses it meanwhile, and `sqlite3_limit` only reads and writes the
        // connection's limit array (a negative value would only query it).
        let now = unsafe {
            sqlite3_limit(db, id, value);
            sqlite3_limit(db, id, -1)
        };
        if now != value {
            return Err(format!("{name} is {now} after setting it to {value}").into());
        }
    }
    Ok(())
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
///
/// The user info is everything between `://` and the last `@` before the path. A password
/// may hold any character, `?`, `/` and `@` included (sqlx decodes `%40` but some people
/// never encode): the path starts at the first `/` after the *first* `@`, so that a `/` or
/// `@` in a `?socket=/path@x` query string is not taken for the end of the user info, and
/// the user info ends at the last `@` before that `/`. A URL with no `@` has no password.
/// When in doubt the rule hides too much (part of the host), never too little of a
/// password that has no `/` followed by `@`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let Some(first_at) = rest.find('@') else {
        return url.to_string();
    };
    let path_start = rest[first_at..]
        .find('/')
        .map_or(rest.len(), |slash| first_at + slash);
    let at = rest[..path_start].rfind('@').unwrap_or(first_at);
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

    /// Passwords with the characters that end URL parts elsewhere.
    #[test]
    fn redact_survives_odd_passwords() {
        let cases = [
            ("mysql://u:p?a@h/db", "mysql://u:***@h/db", "p?a"),
            ("mysql://u:p@ss@h/db", "mysql://u:***@h/db", "p@ss"),
            (
                "mysql://u:p%40@h/db?socket=/x@y",
                "mysql://u:***@h/db?socket=/x@y",
                "p%40",
            ),
            ("mysql://u:p?a@h", "mysql://u:***@h", "p?a"),
            ("mysql://u:p#a@h:3306/db", "mysql://u:***@h:3306/db", "p#a"),
            (
                "mariadb://ro:s3cr?t@db/tally?socket=/run/my@sql.sock",
                "mariadb://ro:***@db/tally?socket=/run/my@sql.sock",
                "s3cr?t",
            ),
            ("mysql://u:@h/db", "mysql://u:***@h/db", "\0"),
        ];
        for (url, shown, password) in cases {
            let redacted = redact(url);
            assert_eq!(redacted, shown, "{url}");
            assert!(!redacted.contains(password), "{url} → {redacted}");
        }
        // No user info: nothing to hide, nothing changed (an `@` in the query is not one).
        for url in ["mysql://h/db?socket=/x@y", "mysql://h:3306/db"] {
            assert_eq!(redact(url), url);
        }
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
    async fn a_read_url_is_for_mysql_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("r.db").display());
        let reads = ReadPoolOptions {
            url: Some("mysql://ro:hush@h/db".into()),
            ..ReadPoolOptions::default()
        };
        let err = open(&url, &reads).await.unwrap_err().to_string();
        assert!(err.contains("MySQL/MariaDB only"), "{err}");
        assert!(!err.contains("hush"), "{err}");
    }

    #[tokio::test]
    async fn unknown_scheme_is_a_clear_error() {
        let err = open("postgres://u:pw@h/db", &ReadPoolOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown scheme"), "{err}");
        assert!(err.contains("postgres://u:***@h/db"), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }
}
