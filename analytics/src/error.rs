//! The crate's error type.
//!
//! Batch validation has its own structured report, [`crate::BatchError`], because the
//! HTTP layer turns it into a 400 with per-record details; everything else fails with
//! an [`AnalyticsError`].

use crate::validate::BatchError;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// A posted batch failed validation (also available directly from `parse_events`).
    #[error(transparent)]
    InvalidBatch(#[from] BatchError),

    #[error("unknown granularity {0:?}: expected \"minute\", \"hour\" or \"day\"")]
    UnknownGranularity(String),

    #[error(
        "unknown key column {0:?}: expected one of tenant, api_name, api_version, \
         application_id, resource, method"
    )]
    UnknownKeyColumn(String),

    #[error("not an analytics snapshot (bad magic bytes)")]
    SnapshotMagic,

    #[error(
        "unsupported analytics snapshot format version {found} (this build reads {supported})"
    )]
    SnapshotVersion { found: u32, supported: u32 },

    #[error("corrupt analytics snapshot: {0}")]
    SnapshotCorrupt(String),

    /// An aggregate query would answer more rows than allowed; it stopped there.
    #[error("the query gives more than {max_rows} rows")]
    TooManyRows { max_rows: usize },
}
