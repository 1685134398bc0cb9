//! `results.json`: the verdict of every checker and what the run did.

use serde::{Deserialize, Serialize};

use crate::elections::{ElectionSummary, PartitionTerms};

/// The whole verdict. `valid` is true only if every checker is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub valid: bool,
    pub seed: u64,
    pub time_limit_s: u64,
    pub nemeses: Vec<String>,
    /// Planted bugs the servers ran with (empty for a real check).
    pub plants: Vec<String>,
    pub stats: Stats,
    pub checkers: Vec<CheckerResult>,
    /// Raft terms and leaders around every partition fault, in the order they healed.
    #[serde(default)]
    pub partitions: Vec<PartitionTerms>,
    /// The partitions added up: elections caused by heals, leaders they deposed.
    #[serde(default)]
    pub elections: ElectionSummary,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Wall time of the whole run, including healing and the final checks.
    pub duration_s: f64,
    /// Operations in the history (invocations).
    pub ops: u64,
    pub writes_ok: u64,
    pub writes_fail: u64,
    pub writes_info: u64,
    pub reads_ok: u64,
    pub reads_failed: u64,
    /// Distinct event ids ever sent / acknowledged.
    pub events_attempted: u64,
    pub events_acked: u64,
    /// Faults injected.
    pub faults: u64,
}

/// One checker's verdict.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckerResult {
    /// `set-full`, `counter`, `linearizable-reads`, `digests`, `usage`.
    pub name: String,
    pub valid: bool,
    /// One line: what was checked and the outcome, with the key figures.
    pub summary: String,
    /// How many anomalies were found (the list below may be truncated).
    pub anomaly_count: u64,
    /// The anomalies, at most [`MAX_LISTED`] of them.
    pub anomalies: Vec<Anomaly>,
}

/// At most this many anomalies are listed per checker (all are counted).
pub const MAX_LISTED: usize = 50;

/// One thing that should not have happened.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Anomaly {
    /// e.g. `lost`, `duplicated`, `unexpected`, `counted-above-attempted`, `stale-read`,
    /// `non-monotonic-read`, `digest-mismatch`, `usage-mismatch`.
    pub kind: String,
    pub description: String,
    /// History index of the operation involved, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_index: Option<u64>,
}
