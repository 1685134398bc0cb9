//! A wall clock the harness can move for one `tally` process, without touching the
//! machine's clock: libfaketime preloaded into the node (`LD_PRELOAD`), reading its offset
//! from a file per node that the test rewrites.
//!
//! Only the wall clock moves (`CLOCK_REALTIME`, what Rust's `SystemTime::now()` reads).
//! `FAKETIME_DONT_FAKE_MONOTONIC=1` leaves the monotonic clock alone, so tokio's and
//! openraft's timers (heartbeats, elections, timeouts) run as before. The offset is read
//! again at most every [`CACHE_SECONDS`] (libfaketime's cache), so a jump takes effect
//! within about a second.
//!
//! ```no_run
//! # fn f(spec: &mut tally_testkit::NodeSpec, dir: &std::path::Path) -> anyhow::Result<()> {
//! let clock = tally_testkit::faketime::FakeClock::create(dir.join("n1.faketime"))?;
//! spec.env.extend(clock.env()?);
//! clock.jump_days(365)?; // the node's wall clock is now a year ahead
//! clock.reset()?;        // and back
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where Debian and Ubuntu install the library (package `libfaketime`).
const CANDIDATES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
];

/// How long libfaketime keeps an offset before reading the file again, in seconds.
pub const CACHE_SECONDS: u64 = 1;

pub const INSTALL_HINT: &str = "libfaketime is needed to move a node's wall clock: install \
     the package `faketime` (e.g. `apt-get install faketime`, or run scripts/test.sh as \
     root, which installs it), or point TALLY_LIBFAKETIME at libfaketime.so.1";

/// The preloadable library: `TALLY_LIBFAKETIME` if set, else the first of the usual
/// install paths that exists.
pub fn library() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TALLY_LIBFAKETIME") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("TALLY_LIBFAKETIME = {} is not a file", p.display());
        }
        return Ok(p);
    }
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context(INSTALL_HINT)
}

/// One node's clock offset file.
#[derive(Clone, Debug)]
pub struct FakeClock {
    file: PathBuf,
}

impl FakeClock {
    /// Creates the offset file at `file` with no offset.
    pub fn create(file: impl Into<PathBuf>) -> Result<FakeClock> {
        let clock = FakeClock { file: file.into() };
        clock.reset()?;
        Ok(clock)
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The environment that makes a process follow this file.
    pub fn env(&self) -> Result<Vec<(String, String)>> {
        Ok(vec![
            ("LD_PRELOAD".into(), library()?.display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                self.file.display().to_string(),
            ),
            ("FAKETIME_CACHE_DURATION".into(), CACHE_SECONDS.to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ])
    }

    /// Moves the wall clock `days` ahead of the real one (negative: behind).
    pub fn jump_days(&self, days: i64) -> Result<()> {
        self.write(&format!("{days:+}d"))
    }

    /// The real wall clock again.
    pub fn reset(&self) -> Result<()> {
        self.write("+0")
    }

    /// Replaces the file in one rename, so libfaketime never reads half an offset.
    fn write(&self, offset: &str) -> Result<()> {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset}\n"))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.file)
            .with_context(|| format!("replacing {}", self.file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeClock::create(dir.path().join("n1.faketime")).unwrap();
        assert_eq!(std::fs::read_to_string(clock.file()).unwrap(), "+0\n");
        clock.jump_days(365).unwrap();
        assert_eq!(std::fs::read_to_string(clock.file()).unwrap(), "+365d\n");
        clock.jump_days(-2).unwrap();
        assert_eq!(std::fs::read_to_string(clock.file()).unwrap(), "-2d\n");
        clock.reset().unwrap();
        assert_eq!(std::fs::read_to_string(clock.file()).unwrap(), "+0\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
