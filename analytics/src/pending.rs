//! The pending queue: counted events not yet confirmed written to the record store.
//!
//! The record-store sink runs on the leader only, and leadership moves. So what it still has
//! to write must be part of the replicated state: every data node queues each event it
//! counts, with the index of the entry that carried it, and drops the queue's head when a
//! committed cursor entry says the record store holds everything up to an index. A new
//! leader, or a node rebuilt from a snapshot, therefore has exactly the events the record
//! store may still lack, however the log behind them was purged.
//!
//! The queue is bounded ([`PENDING_CAP`]): past it the oldest events are dropped and
//! counted. The leader refuses ingest long before that while a record store is configured
//! (its backlog bound); the cap matters only for a cluster running without a record store,
//! where nothing ever drains the queue.

use serde::{Deserialize, Serialize};

use crate::aggregate::Folds;
use crate::chunked::ChunkedQueue;
use crate::event::Event;

/// Most events the queue holds; beyond this the oldest are dropped.
pub const PENDING_CAP: usize = 1_000_000;

/// One counted event waiting for the record store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    /// Index of the Raft entry that carried the event.
    pub log_index: u64,
    /// The proposer's ingest time of that entry.
    pub ingest_ms: i64,
    pub event: Event,
    /// Where `apply` counted it at each granularity (its own key or an overflow key); the
    /// sink writes the usage rows under the same keys.
    pub folds: Folds,
}

/// Where the sink stands, for the API and the leader's back-pressure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PendingStatus {
    /// Everything up to this log index is in the record store.
    pub cursor: u64,
    pub pending_events: usize,
    pub oldest_pending_index: Option<u64>,
    /// Events dropped at the cap (never written to the record store).
    pub dropped_events: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingQueue {
    pub cursor: u64,
    /// Ordered by `log_index` (entries are applied in order). Chunked behind `Arc`s so a
    /// snapshot's copy of a million events is a thousand `Arc` bumps.
    pub pending: ChunkedQueue<PendingEvent>,
    pub dropped: u64,
}

impl PendingQueue {
    pub fn push(&mut self, log_index: u64, ingest_ms: i64, event: &Event, folds: Folds) {
        if log_index <= self.cursor {
            // Already covered by a cursor (an entry re-applied after the cursor moved).
            return;
        }
        self.pending.push_back(PendingEvent {
            log_index,
            ingest_ms,
            event: event.clone(),
            folds,
        });
        while self.pending.len() > PENDING_CAP {
            self.pending.drop_front();
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    pub fn advance(&mut self, cursor: u64) {
        if cursor <= self.cursor {
            return;
        }
        self.cursor = cursor;
        while self.pending.front().is_some_and(|p| p.log_index <= cursor) {
            self.pending.drop_front();
        }
    }

    /// Events with `log_index > after`, whole entries only, at least `max_events` unless
    /// fewer remain; and the index the record store reaches once they are written.
    pub fn take(
        &self,
        after: u64,
        max_events: usize,
        applied_index: u64,
    ) -> (Vec<PendingEvent>, u64) {
        let start = self.pending.partition_point(|p| p.log_index <= after);
        let mut out = Vec::new();
        let mut iter = self.pending.iter_from(start).peekable();
        while let Some(p) = iter.next() {
            out.push(p.clone());
            let entry_ends = iter.peek().is_none_or(|next| next.log_index != p.log_index);
            if out.len() >= max_events && entry_ends {
                if iter.peek().is_some() {
                    return (out, p.log_index);
                }
                break;
            }
        }
        (out, applied_index.max(after))
    }

    pub fn status(&self) -> PendingStatus {
        PendingStatus {
            cursor: self.cursor,
            pending_events: self.pending.len(),
            oldest_pending_index: self.pending.front().map(|p| p.log_index),
            dropped_events: self.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> Event {
        Event {
            event_id: id.into(),
            ..Event::default()
        }
    }

    #[test]
    fn take_keeps_entries_whole_and_reports_the_reached_index() {
        let mut q = PendingQueue::default();
        q.push(3, 0, &ev("a"), Folds::default());
        q.push(3, 0, &ev("b"), Folds::default());
        q.push(5, 0, &ev("c"), Folds::default());
        q.push(7, 0, &ev("d"), Folds::default());
        // One event asked for, but entry 3 holds two: both come, and the sink reaches 3.
        let (batch, upto) = q.take(0, 1, 9);
        assert_eq!(batch.len(), 2);
        assert_eq!(upto, 3);
        let (batch, upto) = q.take(3, 10, 9);
        assert_eq!(
            batch.iter().map(|p| p.log_index).collect::<Vec<_>>(),
            vec![5, 7]
        );
        assert_eq!(upto, 9, "entries after 7 carried no new events");
        let (batch, upto) = q.take(9, 10, 9);
        assert!(batch.is_empty());
        assert_eq!(upto, 9);
    }

    #[test]
    fn advance_drops_the_covered_head_and_never_goes_back() {
        let mut q = PendingQueue::default();
        for (i, id) in [(1, "a"), (2, "b"), (4, "c")] {
            q.push(i, 0, &ev(id), Folds::default());
        }
        q.advance(2);
        assert_eq!(q.status().pending_events, 1);
        assert_eq!(q.status().oldest_pending_index, Some(4));
        q.advance(1);
        assert_eq!(q.status().cursor, 2);
        q.push(2, 0, &ev("late"), Folds::default());
        assert_eq!(
            q.status().pending_events,
            1,
            "an index already covered is not queued"
        );
    }
}
