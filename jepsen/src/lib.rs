//! The chaos and failover suite behind `tally-jepsen` (docs/chaos.md).
//!
//! Modelled on Jepsen: a generator drives concurrent clients against a real cluster while a
//! nemesis injects faults; every operation goes into a [`history`]; after healing,
//! [`checker`]s decide whether the history is valid; [`report`] renders it.

pub mod checker;
pub mod cluster;
pub mod elections;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod results;
pub mod run;
pub mod store;
pub mod workload;

/// Wall-clock milliseconds since the Unix epoch (event timestamps).
pub use tally_testkit::now_ms;
