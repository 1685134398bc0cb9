//! Planted bugs for the chaos suite (`tally-jepsen run --plant ...`). This module exists
//! only in builds with the `chaos` feature; a normal build has no switch to flip.

use std::sync::atomic::{AtomicBool, Ordering};

static SKIP_DEDUP: AtomicBool = AtomicBool::new(false);

/// `skip-dedup`: a re-sent `event_id` is counted again (the bug the dedup window prevents).
pub fn set_skip_dedup(on: bool) {
    SKIP_DEDUP.store(on, Ordering::SeqCst);
}

pub(crate) fn skip_dedup() -> bool {
    SKIP_DEDUP.load(Ordering::Relaxed)
}
