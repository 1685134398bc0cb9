//! Helpers for Tally's tests, its chaos suite (`tally-jepsen`) and its benchmark. Never a
//! dependency of the server.
//!
//! [`ProcessCluster`] (module [`cluster`]) runs a cluster of real `tally` processes.
//!
//! [`faketime::FakeClock`] moves one node's wall clock (libfaketime, preloaded) while its
//! monotonic clock and the machine's clock stay put.
//!
//! [`MariaDb`] runs a throwaway MariaDB server for a test: its own temp datadir, a Unix
//! socket, no TCP port, root without a password. Tests talk to a **real** server
//! (never a mock) and can stop, kill and restart it to play a record-store outage.
//!
//! If the server binaries are missing, [`MariaDb::start`] fails with a message that says
//! what to install; tests that need MariaDB fail rather than skip silently.
//!
//! ```no_run
//! let db = tally_testkit::MariaDb::start()?;
//! let url = db.url(); // mysql://root@localhost/tally?socket=/tmp/.../sock
//! # anyhow::Ok(())
//! ```

pub mod cluster;
pub mod faketime;
pub mod pki;
pub mod usage;

pub use cluster::{ClusterSpec, Keep, NodeSpec, ProcessCluster, Signal};

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// How long a (re)started server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGTERM before it falls back to SIGKILL.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The database `start` creates and `url` points at.
pub const DEFAULT_DATABASE: &str = "tally";

const INSTALL_HINT: &str = "MariaDB is needed by this test: install the packages \
     `mariadb-server-core mariadb-client-core` (e.g. `apt-get install mariadb-server-core \
     mariadb-client-core`, or run scripts/test.sh as root, which installs them)";

/// A MariaDB server owned by one test. Dropping it kills the server and deletes its files.
pub struct MariaDb {
    dir: tempfile::TempDir,
    server: PathBuf,
    client: PathBuf,
    child: Option<Child>,
}

impl MariaDb {
    /// Initializes a datadir in a new temp dir, starts `mariadbd` on it, waits until it
    /// accepts connections and creates the database [`DEFAULT_DATABASE`].
    pub fn start() -> anyhow::Result<MariaDb> {
        let server = find_binary("mariadbd")?;
        let install_db = find_binary("mariadb-install-db")?;
        let client = find_binary("mariadb")?;
        let dir = tempfile::Builder::new()
            .prefix("tally-mariadb-")
            .tempdir()
            .context("create a temp dir for MariaDB")?;

        // A private tmpdir: servers sharing /tmp have been seen to trip over each other's
        // internal temporary tables during bootstrap.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).context("create the server's tmpdir")?;
        let log = File::create(dir.path().join("install.log"))?;
        let status = Command::new(&install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("run {}", install_db.display()))?;
        if !status.success() {
            bail!(
                "mariadb-install-db failed ({status}):\n{}",
                tail(&dir.path().join("install.log"))
            );
        }

        let mut db = MariaDb {
            dir,
            server,
            client,
            child: None,
        };
        db.spawn_server()?;
        db.create_database(DEFAULT_DATABASE)?;
        Ok(db)
    }

    /// The URL of [`DEFAULT_DATABASE`], for sqlx: `mysql://root@localhost/tally?socket=…`.
    pub fn url(&self) -> String {
        self.url_of(DEFAULT_DATABASE)
    }

    /// Creates another database (if missing) and returns its URL.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("database name {name:?}: use only A-Z a-z 0-9 _");
        }
        self.sql(&format!("CREATE DATABASE IF NOT EXISTS `{name}`"))?;
        Ok(self.url_of(name))
    }

    /// Runs SQL with the `mariadb` command-line client and returns its tab-separated output
    /// (no column names). Handy for checks that must not go through the code under test.
    pub fn sql(&self, sql: &str) -> anyhow::Result<String> {
        let output = Command::new(&self.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args([
                "--user=root",
                "--default-character-set=utf8mb4",
                "--batch",
                "--skip-column-names",
                "-e",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", self.client.display()))?;
        if !output.status.success() {
            bail!(
                "mariadb client failed on {sql:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Clean shutdown: SIGTERM, then wait (SIGKILL after 30 s). A no-op when stopped.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // SAFETY: plain syscall on the pid of a child we started and have not reaped yet,
        // so the pid cannot have been reused by another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            sleep(Duration::from_millis(50));
        }
        child.kill()?;
        child.wait()?;
        bail!(
            "mariadbd did not stop within {SHUTDOWN_TIMEOUT:?} of SIGTERM; killed it:\n{}",
            tail(&self.error_log())
        )
    }

    /// Crash: SIGKILL the server and reap it. A no-op when stopped.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same datadir and socket (after `stop` or `kill`),
    /// and waits until it accepts connections. Data committed before survives.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            self.stop()?;
        }
        self.spawn_server()
    }

    /// The server's error log (`D/err.log`).
    pub fn error_log(&self) -> PathBuf {
        self.dir.path().join("err.log")
    }

    fn url_of(&self, database: &str) -> String {
        format!(
            "mysql://root@localhost/{database}?socket={}",
            self.socket().display()
        )
    }

    fn spawn_server(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path();
        // A socket file left by a killed server would make the readiness check lie.
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new(&self.server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg("--user=root")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("--skip-networking")
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--log-error={}", self.error_log().display()))
            // Small and quick: tests need correctness, not throughput.
            .args(["--innodb-buffer-pool-size=64M", "--max-connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {}", self.server.display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls with the client until `SELECT 1` works, the server exits, or time runs out.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "mariadbd exited during startup ({status}):\n{}",
                        tail(&self.error_log())
                    );
                }
            }
            if self.socket().exists() && self.sql("SELECT 1").is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                bail!(
                    "mariadbd did not accept connections within {STARTUP_TIMEOUT:?}:\n{}",
                    tail(&self.error_log())
                );
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // Only the process this value started, by its pid (Child::kill); then reap it.
        let _ = self.kill();
    }
}

/// Finds a MariaDB binary on PATH or in the sbin directories Debian installs it to
/// (`mariadbd` lives in /usr/sbin, which is not on every user's PATH).
fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let extra = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"];
    path_dirs
        .into_iter()
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .with_context(|| format!("`{name}` not found on PATH or in /usr/sbin. {INSTALL_HINT}"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    format!(
        "--- {} (tail) ---\n{}",
        path.display(),
        cluster::process::log_tail(path, 30)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_packages() {
        let err = find_binary("no-such-mariadb-binary")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mariadb-server-core mariadb-client-core"),
            "{err}"
        );
    }

    #[test]
    fn start_stop_restart() -> anyhow::Result<()> {
        let mut db = MariaDb::start()?;
        assert!(db.url().starts_with("mysql://root@localhost/tally?socket="));
        db.sql("CREATE TABLE tally.t (x INT PRIMARY KEY); INSERT INTO tally.t VALUES (7)")?;
        db.stop()?;
        assert!(!db.is_running());
        assert!(db.sql("SELECT 1").is_err());
        db.restart()?;
        assert_eq!(db.sql("SELECT x FROM tally.t")?.trim(), "7");
        db.kill()?;
        db.restart()?;
        assert_eq!(db.sql("SELECT x FROM tally.t")?.trim(), "7");
        let other = db.create_database("other_db")?;
        assert!(other.contains("/other_db?socket="));
        Ok(())
    }
}
