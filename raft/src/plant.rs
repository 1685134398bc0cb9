//! Planted bugs for the chaos suite, switched on by `TALLY_PLANT` in builds with the
//! `chaos` feature (see docs/chaos.md). They exist so the suite can show that its checkers
//! catch real bugs; a normal build compiles none of this.

use std::sync::atomic::{AtomicBool, Ordering};

static ACK_BEFORE_COMMIT: AtomicBool = AtomicBool::new(false);

/// Every plant this build knows.
pub const PLANTS: [&str; 2] = ["skip-dedup", "ack-before-commit"];

/// Switches on the plants named in `list` (comma-separated). Unknown names are an error and
/// switch nothing on.
pub fn activate(list: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = names.iter().find(|n| !PLANTS.contains(&n.as_str())) {
        return Err(format!(
            "unknown plant {bad:?}; known: {}",
            PLANTS.join(", ")
        ));
    }
    for name in &names {
        match name.as_str() {
            "skip-dedup" => tally_analytics::plant::set_skip_dedup(true),
            "ack-before-commit" => ACK_BEFORE_COMMIT.store(true, Ordering::SeqCst),
            _ => unreachable!("checked above"),
        }
    }
    Ok(names)
}

/// `ack-before-commit`: ingest answers 200 once the entry is proposed, before a quorum
/// has it (the bug that loses acknowledged events when the leader dies or is cut off).
pub(crate) fn ack_before_commit() -> bool {
    ACK_BEFORE_COMMIT.load(Ordering::Relaxed)
}
