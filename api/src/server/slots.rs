//! Connection slots: how many connections a node holds at once, and which one gives way when
//! a new one arrives at the limit. Pure (the caller passes the time in); the accept loop
//! drives it.
//!
//! The policy: at the limit, the connection that has waited longest *without a request in
//! progress* is evicted for the newcomer: one that never sent complete headers, or a
//! keep-alive connection idle between requests. A connection serving a request is never
//! evicted, nor is a peer's (a connection that carried the cluster secret or a verified
//! peer certificate). So a flood of slow or idle connections cannot hold the slots that
//! peers and working clients need: each new connection pushes the oldest idle one out.
//! Only when every slot serves a request or belongs to a peer is a newcomer refused.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// Names a connection for as long as it lives (never reused).
pub type ConnId = u64;

struct Entry<T> {
    payload: T,
    /// Requests in progress on it.
    busy: u32,
    /// When it last had no request in progress (its accept, or the end of its last request).
    idle_since: Instant,
    /// A peer's: never evicted for a newcomer.
    trusted: bool,
}

/// At most `max` connections, each carrying a `T` (how to tell it to close).
pub struct Slots<T> {
    max: usize,
    entries: HashMap<ConnId, Entry<T>>,
    /// Connections that may give way, oldest idle first.
    evictable: BTreeSet<(Instant, ConnId)>,
}

/// What [`Slots::admit`] decided about a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission<T> {
    /// A free slot.
    Admitted,
    /// At the limit: this connection was evicted to make room (close it).
    Evicted(T),
    /// At the limit and nothing may give way: close the newcomer.
    Refused,
}

impl<T> Slots<T> {
    pub fn new(max: usize) -> Slots<T> {
        Slots {
            max,
            entries: HashMap::new(),
            evictable: BTreeSet::new(),
        }
    }

    /// Connections held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// A new connection `id` (not yet known), accepted at `now`.
    pub fn admit(&mut self, id: ConnId, now: Instant, payload: T) -> Admission<T> {
        let mut outcome = Admission::Admitted;
        if self.entries.len() >= self.max {
            match self.evictable.pop_first() {
                Some((_, victim)) => {
                    if let Some(entry) = self.entries.remove(&victim) {
                        outcome = Admission::Evicted(entry.payload);
                    }
                }
                None => return Admission::Refused,
            }
        }
        self.entries.insert(
            id,
            Entry {
                payload,
                busy: 0,
                idle_since: now,
                trusted: false,
            },
        );
        self.evictable.insert((now, id));
        outcome
    }

    /// A request started on `id`: it may not be evicted until its requests end.
    pub fn begin_request(&mut self, id: ConnId) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.busy == 0 {
                self.evictable.remove(&(e.idle_since, id));
            }
            e.busy += 1;
        }
    }

    /// A request on `id` ended at `now`.
    pub fn end_request(&mut self, id: ConnId, now: Instant) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.busy = e.busy.saturating_sub(1);
            if e.busy == 0 {
                e.idle_since = now;
                if !e.trusted {
                    self.evictable.insert((now, id));
                }
            }
        }
    }

    /// `id` is a peer's: it is never evicted for a newcomer (only its own timeouts close it).
    pub fn trust(&mut self, id: ConnId) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.trusted = true;
            self.evictable.remove(&(e.idle_since, id));
        }
    }

    /// `id` closed (or was evicted: then nothing happens).
    pub fn remove(&mut self, id: ConnId) {
        if let Some(e) = self.entries.remove(&id) {
            self.evictable.remove(&(e.idle_since, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn below_the_limit_every_connection_is_admitted() {
        let t0 = Instant::now();
        let mut s = Slots::new(3);
        for id in 0..3 {
            assert_eq!(s.admit(id, at(t0, id), id), Admission::Admitted);
        }
        assert_eq!(s.len(), 3);
        s.remove(1);
        s.remove(1);
        assert_eq!(s.len(), 2);
        assert_eq!(s.admit(7, at(t0, 9), 7), Admission::Admitted);
    }

    #[test]
    fn at_the_limit_the_oldest_idle_connection_gives_way() {
        let t0 = Instant::now();
        let mut s = Slots::new(3);
        for id in 0..3 {
            s.admit(id, at(t0, id), id);
        }
        // 0 serves a request; 1 is the oldest idle one.
        s.begin_request(0);
        assert_eq!(s.admit(3, at(t0, 10), 3), Admission::Evicted(1));
        assert_eq!(s.len(), 3);
        // 0 finishes at 20 ms: now 2 (idle since 2 ms) is older than 0 and 3.
        s.end_request(0, at(t0, 20));
        assert_eq!(s.admit(4, at(t0, 21), 4), Admission::Evicted(2));
        assert_eq!(s.admit(5, at(t0, 22), 5), Admission::Evicted(3));
        assert_eq!(s.admit(6, at(t0, 23), 6), Admission::Evicted(0));
        // An evicted connection closing later changes nothing.
        s.remove(1);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn busy_and_peer_connections_are_never_evicted() {
        let t0 = Instant::now();
        let mut s = Slots::new(2);
        s.admit(0, t0, 0);
        s.admit(1, at(t0, 1), 1);
        s.trust(0);
        s.begin_request(1);
        s.begin_request(1);
        assert_eq!(s.admit(2, at(t0, 2), 2), Admission::Refused);
        s.end_request(1, at(t0, 3));
        assert_eq!(
            s.admit(2, at(t0, 4), 2),
            Admission::Refused,
            "one request still runs"
        );
        s.end_request(1, at(t0, 5));
        // The peer stays, idle or not.
        s.end_request(0, at(t0, 6));
        assert_eq!(s.admit(2, at(t0, 7), 2), Admission::Evicted(1));
        assert_eq!(s.admit(3, at(t0, 8), 3), Admission::Evicted(2));
        s.remove(0);
        assert_eq!(s.admit(4, at(t0, 9), 4), Admission::Admitted);
    }

    #[test]
    fn a_flood_leaves_the_newest_and_the_busy() {
        let t0 = Instant::now();
        let mut s = Slots::new(100);
        // A working client's connection, busy, and a peer's, idle.
        s.admit(0, t0, 0);
        s.begin_request(0);
        s.admit(1, t0, 1);
        s.trust(1);
        let mut evicted = 0;
        for id in 2..2_002u64 {
            if let Admission::Evicted(_) = s.admit(id, at(t0, id), id) {
                evicted += 1;
            }
        }
        assert_eq!(s.len(), 100);
        assert_eq!(evicted, 2_000 - 98);
        assert!(s.entries.contains_key(&0) && s.entries.contains_key(&1));
        assert!(s.entries.contains_key(&2_001));
        assert_eq!(s.evictable.len(), 98);
    }
}
