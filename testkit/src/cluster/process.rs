//! One node's process: spawning `tally serve --config …` with its output in a log file,
//! containment (its own process group, `PR_SET_PDEATHSIG`), signals by pid, reaping, and
//! reading the log.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

/// A signal the harness sends to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    Kill,
    Term,
    Stop,
    Cont,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Kill => "SIGKILL",
            Signal::Term => "SIGTERM",
            Signal::Stop => "SIGSTOP",
            Signal::Cont => "SIGCONT",
        }
    }

    fn number(self) -> libc::c_int {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
        }
    }
}

/// How to start a node's process.
#[derive(Clone, Debug)]
pub struct Launch {
    pub bin: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Set in the child's environment, in order (after every inherited `TALLY_*` variable
    /// has been removed: only the config file and these speak).
    pub env: Vec<(String, String)>,
}

/// A child process started by the harness. It is signalled only by its own pid, and only
/// while it is unreaped (so the pid cannot belong to anyone else).
pub struct Process {
    child: Child,
    /// Stopped by SIGSTOP and not yet continued (a signal needs only `&self`).
    paused: AtomicBool,
}

impl Process {
    /// Starts the node with stdout and stderr appended to its log file, in its own process
    /// group (a Ctrl-C at the terminal reaches the harness, which then kills it) and, on
    /// Linux, with `PR_SET_PDEATHSIG` so it dies with the harness however that ends.
    pub fn spawn(launch: &Launch) -> Result<Process> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)
            .with_context(|| format!("opening {}", launch.log.display()))?;
        let mut cmd = Command::new(&launch.bin);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TALLY_") {
                cmd.env_remove(&key);
            }
        }
        cmd.arg("serve")
            .arg("--config")
            .arg(&launch.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        contain(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", launch.bin.display()))?;
        Ok(Process {
            child,
            paused: AtomicBool::new(false),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stopped by SIGSTOP and not yet continued.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on the pid of our own unreaped child: the pid cannot have been
        // reused by another process while the child is a zombie at worst.
        if unsafe { libc::kill(pid, signal.number()) } != 0 {
            bail!(
                "kill({pid}, {}): {}",
                signal.name(),
                std::io::Error::last_os_error()
            );
        }
        match signal {
            Signal::Stop => self.paused.store(true, Ordering::SeqCst),
            Signal::Cont => self.paused.store(false, Ordering::SeqCst),
            _ => {}
        }
        Ok(())
    }

    /// Its exit status if it has exited (reaped then), without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// SIGCONT (a paused process cannot act on anything else), SIGKILL, and reap.
    pub fn kill(mut self) -> Option<ExitStatus> {
        if self.is_paused() {
            let _ = self.signal(Signal::Cont);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

/// Its own process group and, on Linux, death with the parent. (Linux sends the death
/// signal when the *thread* that spawned the child ends: the harness is driven from threads
/// that outlive its clusters, a test's own thread or the main thread of a tool, never from a
/// short-lived blocking-pool thread.)
fn contain(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: runs in the forked child before exec; prctl, getppid and _exit are
        // async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
}

/// The whole text of a log file ("" if there is none yet).
pub fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The last `lines` lines of a log file (reads at most its last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    last_lines(&String::from_utf8_lossy(&buf), lines)
}

fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_of_a_text() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\nb", 5), "a\nb");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn a_missing_log_says_so() {
        assert_eq!(log_tail(Path::new("/nonexistent/tally.log"), 3), "(no log)");
        assert_eq!(log_text(Path::new("/nonexistent/tally.log")), "");
    }

    /// A stand-in for `tally`: a script that ignores `serve --config …`.
    fn fake_bin(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("fake-tally");
        std::fs::write(&bin, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    fn wait_exit(p: &mut Process) -> ExitStatus {
        for _ in 0..250 {
            if let Some(status) = p.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the child did not exit");
    }

    #[test]
    fn spawn_signal_and_reap_a_child() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let launch = Launch {
            bin: fake_bin(
                dir.path(),
                "echo \"args: $*; probe=$TALLY_TESTKIT_PROBE\"; exec sleep 30",
            ),
            config: dir.path().join("node1.toml"),
            log: dir.path().join("node1.log"),
            env: vec![("TALLY_TESTKIT_PROBE".into(), "yes".into())],
        };
        let mut p = Process::spawn(&launch).unwrap();
        for _ in 0..250 {
            if log_text(&launch.log).contains("probe=") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        p.signal(Signal::Stop).unwrap();
        assert!(p.is_paused());
        p.signal(Signal::Cont).unwrap();
        assert!(!p.is_paused());
        assert!(p.try_wait().unwrap().is_none(), "still running");
        p.signal(Signal::Term).unwrap();
        assert_eq!(wait_exit(&mut p).signal(), Some(libc::SIGTERM));
        let log = log_text(&launch.log);
        assert!(log.contains("args: serve --config"), "{log}");
        assert!(log.contains("probe=yes"), "{log}");

        // kill() ends a paused child too.
        let p = Process::spawn(&launch).unwrap();
        p.signal(Signal::Stop).unwrap();
        let status = p.kill().expect("reaped");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
