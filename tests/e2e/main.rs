//! Tally's end-to-end tests, one test binary: each module starts real `tally` processes
//! through the process-cluster harness of `tally-testkit` (via [`common`]) and checks
//! them against the tests' own model of the aggregates and records.
//!
//! Tests of different modules run in one process now: nothing here may rely on global
//! state (environment variables, the current directory, fixed ports). Each module was its
//! own test binary, and binaries ran one after the other: the clusters of two modules never
//! run at the same time (`common::ModuleTurn`), the tests of one module may, as before.

mod common;

mod access;
mod bad_input;
mod clock_skew;
mod durability;
mod fatal_storage;
mod in_flight;
mod ingest_replicated;
mod key_overflow;
mod leader_kill;
mod leader_stall;
mod membership;
mod records_backpressure;
mod records_mariadb;
mod records_sqlite;
mod slow_clients;
mod snapshot_rejoin;
mod sql_bounds;
mod sql_endpoint;
mod tls;
mod witness;
mod witness_caretaker;
mod witness_down;
mod witness_retention;
