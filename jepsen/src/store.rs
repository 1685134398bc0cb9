//! The record store under test: a throwaway MariaDB the harness owns (so the nemesis can
//! freeze or kill it), or a MySQL/MariaDB server the user names with `--record-store`.
//! The checkers read it directly with their own connection, not through Tally.

use anyhow::{bail, Context, Result};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::MySqlPool;
use tally_testkit::usage::usage_symmetric_difference_sql;
use tally_testkit::MariaDb;

pub enum Store {
    Owned { db: MariaDb, paused: bool },
    External(String),
}

impl Store {
    /// Starts a throwaway MariaDB (blocking: about a second).
    pub fn start_owned() -> Result<Store> {
        let db = MariaDb::start().context("starting the throwaway MariaDB record store")?;
        Ok(Store::Owned { db, paused: false })
    }

    pub fn external(url: &str) -> Result<Store> {
        if !url.starts_with("mysql://") {
            bail!("--record-store must be a mysql:// URL (MySQL or MariaDB); got {url:?}");
        }
        Ok(Store::External(url.to_string()))
    }

    pub fn url(&self) -> String {
        match self {
            Store::Owned { db, .. } => db.url(),
            Store::External(url) => url.clone(),
        }
    }

    pub fn is_owned(&self) -> bool {
        matches!(self, Store::Owned { .. })
    }

    fn owned(&mut self) -> Result<(&mut MariaDb, &mut bool)> {
        match self {
            Store::Owned { db, paused } => Ok((db, paused)),
            Store::External(_) => bail!("the record-store nemesis needs the harness's own MariaDB"),
        }
    }

    fn signal(db: &MariaDb, sig: libc::c_int) -> Result<()> {
        let pid = db.pid().context("MariaDB is not running")?;
        // SAFETY: kill(2) on the pid of the server child the testkit started and still holds.
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            bail!("signal to MariaDB: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn pause(&mut self) -> Result<()> {
        let (db, paused) = self.owned()?;
        Store::signal(db, libc::SIGSTOP)?;
        *paused = true;
        Ok(())
    }

    pub fn resume(&mut self) -> Result<()> {
        let (db, paused) = self.owned()?;
        if *paused {
            Store::signal(db, libc::SIGCONT)?;
            *paused = false;
        }
        Ok(())
    }

    pub fn kill(&mut self) -> Result<()> {
        let (db, paused) = self.owned()?;
        *paused = false;
        db.kill()
    }

    /// Starts a killed server again (blocking until it accepts connections).
    pub fn restart(&mut self) -> Result<()> {
        let (db, _) = self.owned()?;
        if db.is_running() {
            return Ok(());
        }
        db.restart()
    }

    /// Brings the store back whatever the nemesis left it in.
    pub fn heal(&mut self) -> Result<()> {
        if self.is_owned() {
            self.resume()?;
            self.restart()?;
        }
        Ok(())
    }

    pub async fn connect(&self) -> Result<MySqlPool> {
        MySqlPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect(&self.url())
            .await
            .context("connecting to the record store for the checks")
    }
}

/// Every `event_id` row of the run tagged `tag` (a duplicate row appears twice).
pub async fn event_ids(pool: &MySqlPool, tag: &str) -> Result<Vec<String>> {
    sqlx::query_scalar("SELECT event_id FROM events WHERE api_name = ?")
        .bind(tag)
        .fetch_all(pool)
        .await
        .context("reading events from the record store")
}

/// Rows in each usage table's symmetric difference with a `GROUP BY` over `events`.
pub async fn usage_diffs(pool: &MySqlPool) -> Vec<(String, Result<u64, String>)> {
    let mut out = Vec::new();
    for (g, width) in [
        ("minute", 60_000i64),
        ("hour", 3_600_000),
        ("day", 86_400_000),
    ] {
        let table = format!("usage_{g}");
        let sql = format!(
            "SELECT COUNT(*) FROM ({}) AS diff",
            usage_symmetric_difference_sql(true, &table, width)
        );
        // Built only from constants here and in the testkit: no outside input.
        let n: Result<i64, String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .map_err(|e| e.to_string());
        out.push((table, n.map(|n| n as u64)));
    }
    out
}
