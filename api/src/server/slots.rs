//! Connection slots: how many connections a node holds at once, and which one gives way when
//! a new one arrives at the limit. Pure (the caller passes the time in); the accept loop
//! drives it.
//!
//! The policy: at the limit, a connection *without a request in progress* is evicted for
//! the newcomer: first the oldest that has not completed a request yet (a slow or silent
//! client), then the one idle longest between requests (keep-alive). A connection serving a
//! request is never evicted, nor is a peer's (a connection that carried the cluster secret
//! or a verified peer certificate). So a flood of slow or idle connections cannot hold the
//! slots that peers and working clients need: each new connection pushes the oldest idle
//! one out, and a client that has been served outlives every one that has not. Only when
//! every slot serves a request or belongs to a peer is a newcomer refused.
//!
//! A connection is evicted only once it has been idle for a grace period
//! ([`EVICTION_GRACE`]): every admitted connection gets that long to send its request, even
//! in a burst of thousands of new connections. A newcomer that finds every idle connection
//! younger than that is refused instead (closed at once; the client may retry).//!
//! An evicted connection keeps counting as *closing* until its task has dropped it, so
//! that the accept loop can bound the descriptors it has not yet given back.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Names a connection for as long as it lives (never reused).
pub type ConnId = u64;

/// Least idle time before a connection may be evicted for a newcomer.
pub const EVICTION_GRACE: Duration = Duration::from_millis(100);

struct Entry<T> {
    payload: T,
    /// Requests in progress on it.
    busy: u32,
    /// When it last had no request in progress (its accept, or the end of its last request).
    idle_since: Instant,
    /// It completed a request (a working client, not only a slow one).
    served: bool,
    /// A peer's: never evicted for a newcomer.
    trusted: bool,
}

/// At most `max` connections, each carrying a `T` (how to tell it to close).
pub struct Slots<T> {
    max: usize,
    grace: Duration,
    entries: HashMap<ConnId, Entry<T>>,
    /// Connections that may give way, in eviction order: never served first, then by how
    /// long they have been idle.
    evictable: BTreeSet<EvictKey>,
    /// Evicted connections whose task has not dropped them yet.
    closing: usize,
}

/// Eviction order: `(served, idle since, id)`.
type EvictKey = (bool, Instant, ConnId);

impl<T> Entry<T> {
    fn key(&self, id: ConnId) -> EvictKey {
        (self.served, self.idle_since, id)
    }
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
    /// At most `max` connections; evict only those idle for `grace` or longer.
    pub fn new(max: usize, grace: Duration) -> Slots<T> {
        Slots {
            max,
            grace,
            entries: HashMap::new(),
            evictable: BTreeSet::new(),
            closing: 0,
        }
    }

    /// Evicted connections not yet closed.
    pub fn closing(&self) -> usize {
        self.closing
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
            match self.evictable.first().copied() {
                Some((_, since, victim)) if now.saturating_duration_since(since) >= self.grace => {
                    self.evictable.pop_first();
                    if let Some(entry) = self.entries.remove(&victim) {
                        self.closing += 1;
                        outcome = Admission::Evicted(entry.payload);
                    }
                }
                _ => return Admission::Refused,
            }
        }
        self.entries.insert(
            id,
            Entry {
                payload,
                busy: 0,
                idle_since: now,
                served: false,
                trusted: false,
            },
        );
        self.evictable.insert((false, now, id));
        outcome
    }

    /// A request started on `id`: it may not be evicted until its requests end.
    pub fn begin_request(&mut self, id: ConnId) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.busy == 0 {
                self.evictable.remove(&e.key(id));
            }
            e.busy += 1;
        }
    }

    /// A request on `id` ended at `now`.
    pub fn end_request(&mut self, id: ConnId, now: Instant) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.busy = e.busy.saturating_sub(1);
            e.served = true;
            if e.busy == 0 {
                e.idle_since = now;
                if !e.trusted {
                    self.evictable.insert(e.key(id));
                }
            }
        }
    }

    /// `id` is a peer's: it is never evicted for a newcomer (only its own timeouts close it).
    pub fn trust(&mut self, id: ConnId) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.trusted = true;
            self.evictable.remove(&e.key(id));
        }
    }

    /// `id` closed; `evicted`: it was (it counted as closing until now).
    pub fn remove(&mut self, id: ConnId, evicted: bool) {
        if let Some(e) = self.entries.remove(&id) {
            self.evictable.remove(&e.key(id));
        } else if evicted {
            self.closing = self.closing.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn below_the_limit_every_connection_is_admitted() {
        let t0 = Instant::now();
        let mut s = Slots::new(3, Duration::ZERO);
        for id in 0..3 {
            assert_eq!(s.admit(id, at(t0, id), id), Admission::Admitted);
        }
        assert_eq!(s.len(), 3);
        s.remove(1, false);
        s.remove(1, false);
        assert_eq!(s.len(), 2);
        assert_eq!(s.admit(7, at(t0, 9), 7), Admission::Admitted);
    }

    #[test]
    fn at_the_limit_the_oldest_idle_connection_gives_way() {
        let t0 = Instant::now();
        let mut s = Slots::new(3, Duration::ZERO);
        for id in 0..3 {
            s.admit(id, at(t0, id), id);
        }
        // 0 serves a request; 1 is the oldest idle one.
        s.begin_request(0);
        assert_eq!(s.admit(3, at(t0, 10), 3), Admission::Evicted(1));
        assert_eq!(s.len(), 3);
        assert_eq!(s.closing(), 1);
        // 0 finishes at 20 ms: it has been served, so the never-served 2, 3 and 4 go first.
        s.end_request(0, at(t0, 20));
        assert_eq!(s.admit(4, at(t0, 21), 4), Admission::Evicted(2));
        assert_eq!(s.admit(5, at(t0, 22), 5), Admission::Evicted(3));
        assert_eq!(s.admit(6, at(t0, 23), 6), Admission::Evicted(4));
        // Served ones give way by idle time once no unserved one is left.
        s.begin_request(5);
        s.end_request(5, at(t0, 24));
        s.begin_request(6);
        s.end_request(6, at(t0, 25));
        assert_eq!(s.admit(7, at(t0, 26), 7), Admission::Evicted(0));
        assert_eq!(s.admit(8, at(t0, 27), 8), Admission::Evicted(7));
        assert_eq!(s.admit(9, at(t0, 28), 9), Admission::Evicted(8));
        assert_eq!(s.admit(10, at(t0, 29), 10), Admission::Evicted(9));
        // Newcomers never served keep replacing each other: 5 and 6 stay.
        assert_eq!(s.admit(11, at(t0, 30), 11), Admission::Evicted(10));
        assert_eq!(s.closing(), 9);
        // An evicted connection closing later frees nothing twice.
        s.remove(1, true);
        assert_eq!(s.len(), 3);
        assert_eq!(s.closing(), 8);
    }

    #[test]
    fn busy_and_peer_connections_are_never_evicted() {
        let t0 = Instant::now();
        let mut s = Slots::new(2, Duration::ZERO);
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
        s.remove(0, false);
        assert_eq!(s.admit(4, at(t0, 9), 4), Admission::Admitted);
    }

    #[test]
    fn a_connection_gets_the_grace_period_to_send_its_request() {
        let t0 = Instant::now();
        let mut s = Slots::new(2, Duration::from_millis(100));
        s.admit(0, t0, 0);
        s.admit(1, at(t0, 50), 1);
        // A burst: nobody has been idle 100 ms yet, so newcomers are turned away.
        assert_eq!(s.admit(2, at(t0, 60), 2), Admission::Refused);
        assert_eq!(s.admit(3, at(t0, 99), 3), Admission::Refused);
        assert_eq!(s.admit(4, at(t0, 100), 4), Admission::Evicted(0));
        assert_eq!(s.admit(5, at(t0, 120), 5), Admission::Refused);
        assert_eq!(s.admit(6, at(t0, 150), 6), Admission::Evicted(1));
        // A served connection idle between requests is protected the same way.
        s.begin_request(4);
        s.end_request(4, at(t0, 300));
        assert_eq!(s.admit(7, at(t0, 310), 7), Admission::Evicted(6));
        assert_eq!(
            s.admit(8, at(t0, 350), 8),
            Admission::Refused,
            "7 is young, 4 idle 50 ms"
        );
        assert_eq!(s.admit(9, at(t0, 411), 9), Admission::Evicted(7));
    }

    #[test]
    fn a_flood_leaves_the_newest_and_the_busy() {
        let t0 = Instant::now();
        let mut s = Slots::new(100, Duration::ZERO);
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
