//! The dedup window: which `event_id`s were counted recently.
//!
//! Ids are kept in a queue in the order they were first counted, each stamped with the
//! state's monotonic ingest time at that moment, so the queue is sorted by stamp and both
//! expiry (by age) and the memory cap (by count) pop from the front — deterministic and
//! proportional to what is evicted. A hash set beside it answers "seen?" and is never
//! iterated, so its random order cannot leak into state, digest or snapshot.

use std::collections::HashSet;
use std::sync::Arc;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chunked::ChunkedQueue;

/// How long an id is remembered, in ingest time: one hour covers gateway retry loops
/// and a client re-posting after a failover, with room to spare.
pub const DEDUP_WINDOW_MS: i64 = 3_600_000;

/// Most ids remembered at once; beyond it the oldest are forgotten early. Bounds memory
/// (roughly 100 bytes per id, so ~200 MB at the cap) under any ingest rate.
pub const DEDUP_MAX_IDS: usize = 2_000_000;

/// The remembered ids, oldest first, as `(first_seen_ms, event_id)`: all of the window that
/// the digest and snapshots cover. Chunked behind `Arc`s, so copying it for a snapshot costs
/// one bump per thousand ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DedupOrder(ChunkedQueue<(i64, Arc<str>)>);

#[derive(Clone, Debug)]
pub(crate) struct DedupWindow {
    /// Stamps never decrease along the queue.
    order: DedupOrder,
    /// Membership index over `order`. Shares the strings with it. Not needed by a copy
    /// taken for a snapshot, which is why it lives beside the order and not inside it.
    index: HashSet<Arc<str>>,
    max_ids: usize,
}

impl Default for DedupWindow {
    fn default() -> Self {
        DedupWindow::with_max_ids(DEDUP_MAX_IDS)
    }
}

/// Equal windows remember the same ids with the same stamps in the same order; the cap
/// is configuration, not state.
impl PartialEq for DedupWindow {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

impl Eq for DedupWindow {}

impl DedupWindow {
    pub fn with_max_ids(max_ids: usize) -> Self {
        DedupWindow {
            order: DedupOrder::default(),
            index: HashSet::new(),
            max_ids,
        }
    }

    pub fn len(&self) -> usize {
        self.order.0.len()
    }

    /// The ids in order (cheap to clone: shares its chunks).
    pub fn order(&self) -> &DedupOrder {
        &self.order
    }

    /// Records `id` as counted at `now_ms` unless it is already remembered.
    /// Returns `true` if the id is new (the event should be counted).
    /// `now_ms` must not be smaller than any earlier stamp (the caller passes its
    /// monotonic high-water ingest time).
    pub fn insert(&mut self, id: &str, now_ms: i64) -> bool {
        if self.index.contains(id) {
            return false;
        }
        let id: Arc<str> = Arc::from(id);
        self.index.insert(id.clone());
        self.order.0.push_back((now_ms, id));
        while self.order.0.len() > self.max_ids {
            self.pop_oldest();
        }
        true
    }

    /// Forgets ids first counted more than [`DEDUP_WINDOW_MS`] before `now_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        while let Some((first_seen, _)) = self.order.0.front() {
            if now_ms.saturating_sub(*first_seen) <= DEDUP_WINDOW_MS {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, id)) = self.order.0.front() {
            self.index.remove(id);
        }
        self.order.0.drop_front();
    }

    /// Rebuilds a window from its serialized entries, rejecting what `insert` could
    /// never have produced (so a bad snapshot fails loudly instead of misbehaving).
    fn from_entries(entries: Vec<(i64, String)>, max_ids: usize) -> Result<Self, String> {
        let mut window = DedupWindow::with_max_ids(max_ids);
        for (first_seen, id) in entries {
            if window
                .order
                .0
                .back()
                .is_some_and(|(last, _)| *last > first_seen)
            {
                return Err("dedup window stamps go backwards".into());
            }
            let id: Arc<str> = Arc::from(id);
            if !window.index.insert(id.clone()) {
                return Err(format!("dedup window lists id {id:?} twice"));
            }
            window.order.0.push_back((first_seen, id));
        }
        Ok(window)
    }
}

/// Serialized as the ordered sequence of `(first_seen_ms, event_id)` (which is how the
/// whole window is serialized: the index is derived).
impl Serialize for DedupOrder {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (first_seen, id) in self.0.iter() {
            seq.serialize_element(&(first_seen, &**id))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for DedupWindow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Vec<(i64, String)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence of (first_seen_ms, event_id)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // No preallocation from the declared length: a corrupt length must not
                // become a huge allocation.
                let mut entries = Vec::new();
                while let Some(entry) = seq.next_element()? {
                    entries.push(entry);
                }
                Ok(entries)
            }
        }
        let entries = deserializer.deserialize_seq(EntriesVisitor)?;
        DedupWindow::from_entries(entries, DEDUP_MAX_IDS).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_ids_until_the_window_passes() {
        let mut window = DedupWindow::default();
        assert!(window.insert("a", 1_000));
        assert!(!window.insert("a", 1_000));
        window.expire(1_000 + DEDUP_WINDOW_MS);
        assert!(
            !window.insert("a", 1_000 + DEDUP_WINDOW_MS),
            "exactly the window: kept"
        );
        window.expire(1_001 + DEDUP_WINDOW_MS);
        assert_eq!(window.len(), 0);
        assert!(window.insert("a", 1_001 + DEDUP_WINDOW_MS));
    }

    #[test]
    fn cap_forgets_oldest_first() {
        let mut window = DedupWindow::with_max_ids(3);
        for id in ["a", "b", "c", "d"] {
            assert!(window.insert(id, 5));
        }
        assert_eq!(window.len(), 3);
        assert!(window.insert("a", 5), "a was the oldest and was evicted");
        assert!(!window.insert("c", 5));
        assert!(!window.insert("d", 5));
        assert!(window.insert("b", 5), "b was evicted when a came back");
    }

    #[test]
    fn rejects_inconsistent_entries() {
        let dup = vec![(1, "a".to_string()), (2, "a".to_string())];
        assert!(DedupWindow::from_entries(dup, 10).is_err());
        let backwards = vec![(2, "a".to_string()), (1, "b".to_string())];
        assert!(DedupWindow::from_entries(backwards, 10).is_err());
    }
}
