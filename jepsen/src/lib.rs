//! The chaos and failover suite behind `tally-jepsen` (docs/chaos.md).
//!
//! Modelled on Jepsen: a generator drives concurrent clients against a real cluster while a
//! nemesis injects faults; every operation goes into a [`history`]; after healing,
//! [`checker`]s decide whether the history is valid; [`report`] renders it.

pub mod history;
pub mod report;
pub mod results;
