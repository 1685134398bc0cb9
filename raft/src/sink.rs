//! The record-store sink: committed events into MySQL/SQLite, exactly once, leader only.
//!
//! Every data node keeps the events the record store may still lack in its replicated
//! state (the analytics sink queue). On the leader this task takes the next events after
//! the record store's own cursor, writes them and the new cursor in **one** transaction
//! (`RecordStore::write` refuses if the cursor moved, so a deposed leader's sink cannot
//! double-write), and then proposes a [`Request::SinkCursor`] entry so every node drops
//! them from its queue and knows how far the record store has got. If the leader dies
//! between the transaction and the proposal, the next leader reads the cursor from the
//! record store and proposes it: the record store's cursor is the truth, the replicated one
//! follows it.
//!
//! While the record store is unreachable nothing is lost: events wait in the replicated
//! queue (and the Raft log behind it is kept), the leader answers ingest with 503 once the
//! queue passes the configured backlog bound, and the sink retries with back-off and catches
//! up on its own.

use crate::now_ms;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use serde::Serialize;
use tally_storage::records::{RecordError, RecordStore, WriteBatch};

use crate::state_machine::{Raft, SharedState};
use crate::types::Request;

#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// Events per record-store transaction (whole entries, so a batch may be larger).
    pub batch_events: usize,
    /// Events waiting for the record store beyond which the leader refuses ingest (503).
    pub max_backlog_events: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            batch_events: 5_000,
            max_backlog_events: 200_000,
        }
    }
}

/// What `/v1/cluster` and `/metrics` show about this node's sink.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SinkReport {
    /// Whether this node's sink is writing (it is the leader and has a record store).
    pub active: bool,
    /// The record store's cursor as this node last read or wrote it.
    pub store_cursor: Option<u64>,
    pub last_write_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    pub consecutive_errors: u64,
    pub events_written: u64,
    pub events_already_present: u64,
    pub transactions: u64,
    #[serde(skip)]
    dropped_reported: u64,
}

/// Shared view of the sink task, for the API.
#[derive(Clone, Default)]
pub struct SinkMonitor(Arc<Mutex<SinkReport>>);

impl SinkMonitor {
    pub fn report(&self) -> SinkReport {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut SinkReport)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub(crate) fn connect_error(&self, e: &RecordError) {
        self.error(e);
    }

    fn error(&self, e: &RecordError) {
        let msg = e.to_string();
        self.update(|r| {
            r.consecutive_errors += 1;
            // Log the first failure of a streak loudly, then quietly: a long outage should
            // not flood the log.
            if r.consecutive_errors == 1 || r.consecutive_errors % 30 == 0 {
                tracing::warn!(errors = r.consecutive_errors, "record store sink: {msg}");
            }
            r.last_error = Some(msg);
            r.last_error_ms = Some(now_ms());
        });
    }
}

/// Runs the sink of a data node until Raft shuts down.
pub(crate) async fn run(
    raft: Raft,
    state: SharedState,
    store: RecordStore,
    config: SinkConfig,
    monitor: SinkMonitor,
) {
    let mut metrics = raft.metrics();
    let mut backoff = Duration::from_millis(100);
    loop {
        // Only the leader writes. Wait for leadership (or shutdown).
        let is_leader = { metrics.borrow_watched().state == openraft::ServerState::Leader };
        if !is_leader {
            monitor.update(|r| r.active = false);
            if metrics.changed().await.is_err() {
                return;
            }
            continue;
        }
        monitor.update(|r| r.active = true);
        match step(&raft, &state, &store, &config, &monitor).await {
            Ok(Progress::Wrote) => backoff = Duration::from_millis(100),
            Ok(Progress::Idle) => {
                backoff = Duration::from_millis(100);
                // Wake on the next applied entry, or after a while to re-check leadership.
                let _ = tokio::time::timeout(Duration::from_millis(500), metrics.changed()).await;
            }
            Err(e) => {
                monitor.error(&e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

enum Progress {
    Wrote,
    Idle,
}

/// One round: read the store's cursor, write what follows it, publish the new cursor.
async fn step(
    raft: &Raft,
    state: &SharedState,
    store: &RecordStore,
    config: &SinkConfig,
    monitor: &SinkMonitor,
) -> Result<Progress, RecordError> {
    let cursor = store.cursor().await?;
    monitor.update(|r| r.store_cursor = Some(cursor));
    let (pending, upto, status) = {
        let applied = state.read();
        let (pending, upto) = applied.state.sink_pending(cursor, config.batch_events);
        (pending, upto, applied.state.pending_status())
    };
    let replicated = status.cursor;
    if cursor < replicated {
        // The store is behind what the cluster knows it wrote: it is another database (data
        // nodes pointed at different stores) or one restored from an older backup. The
        // events in between are no longer queued; writing on would hide the gap.
        return Err(RecordError::InvalidBatch(format!(
            "the record store's cursor is {cursor} but the cluster already wrote up to {replicated}: \
             every data node must use the same record store, and a restored backup lacks the \
             events in between; the sink stops rather than hide the gap"
        )));
    }
    if status.dropped_events > 0 {
        monitor.update(|r| {
            if r.dropped_reported < status.dropped_events {
                tracing::error!(
                    dropped = status.dropped_events,
                    "events were dropped from the sink queue at its cap and never reach the record store"
                );
                r.dropped_reported = status.dropped_events;
            }
        });
    }
    if pending.is_empty() {
        // The store may be ahead of the replicated cursor (a leader died after its
        // transaction, before its proposal): publish it so every node trims its queue.
        if cursor > replicated {
            propose_cursor(raft, cursor).await;
        }
        monitor.update(|r| {
            r.consecutive_errors = 0;
        });
        return Ok(Progress::Idle);
    }
    let batch = WriteBatch {
        expected_cursor: cursor,
        new_cursor: upto,
        ingest: pending
            .iter()
            .map(|p| (p.log_index, p.ingest_ms, &p.event, p.folds))
            .collect(),
    };
    match store.write(batch).await {
        Ok(outcome) => {
            monitor.update(|r| {
                r.store_cursor = Some(upto);
                r.last_write_ms = Some(now_ms());
                r.consecutive_errors = 0;
                r.events_written += outcome.inserted;
                r.events_already_present += outcome.already_present;
                r.transactions += 1;
            });
            propose_cursor(raft, upto).await;
            Ok(Progress::Wrote)
        }
        // Another sink (a deposed leader) moved it: start over from the store's cursor.
        Err(RecordError::CursorMoved { found }) => {
            tracing::info!(
                expected = cursor,
                found,
                "record store cursor moved; re-reading"
            );
            Ok(Progress::Wrote)
        }
        Err(e) => Err(e),
    }
}

async fn propose_cursor(raft: &Raft, cursor: u64) {
    // Failure is harmless: the next round proposes again from the store's cursor.
    if let Err(e) = raft.client_write(Request::SinkCursor(cursor)).await {
        tracing::debug!("proposing sink cursor {cursor}: {e}");
    }
}
