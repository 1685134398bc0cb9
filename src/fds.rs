//! The process's file-descriptor budget: every connection a node holds is a descriptor, and
//! running out makes `accept` fail and the node's own files unopenable.

use anyhow::{bail, Result};

/// Descriptors kept for everything but client connections: the log store and snapshot
/// files, the record store's pool, connections to peers, the runtime's own.
pub const FD_RESERVE: u64 = 256;

/// Refuses `max_connections` that would leave less than [`FD_RESERVE`] of `soft_limit`.
pub fn check_budget(max_connections: usize, soft_limit: u64) -> Result<()> {
    let needed = max_connections as u64 + FD_RESERVE;
    if needed > soft_limit {
        bail!(
            "http.max_connections = {max_connections} needs {needed} file descriptors with the \
             {FD_RESERVE} the node keeps for its own files and peers, but this process may open \
             only {soft_limit} (RLIMIT_NOFILE, even after raising it to its hard limit): lower \
             http.max_connections to at most {} or raise the limit (LimitNOFILE= in the systemd \
             unit, ulimit -n)",
            soft_limit.saturating_sub(FD_RESERVE)
        );
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the soft limit then in force.
pub fn raise_nofile_limit() -> Result<libc::rlim_t> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard
        // one is always permitted.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        } else {
            tracing::warn!(
                "could not raise RLIMIT_NOFILE from {} to {}: {}",
                lim.rlim_cur,
                lim.rlim_max,
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_must_leave_room_for_the_node_itself() {
        assert!(check_budget(1024, 1024 + FD_RESERVE).is_ok());
        let err = check_budget(1024, 1024).unwrap_err().to_string();
        assert!(err.contains("http.max_connections = 1024"), "{err}");
        assert!(
            err.contains(&format!("at most {}", 1024 - FD_RESERVE)),
            "{err}"
        );
        assert!(check_budget(16, 100).is_err());
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let soft = raise_nofile_limit().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(soft, lim.rlim_cur);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
