//! Bounded ingest time: the leader never stamps an entry far off its voters' clocks.
//!
//! `apply` takes "now" from the entries only (the newest `ingest_ms` applied), and that time
//! expires dedup ids and evicts buckets on every data node. So one leader whose wall clock
//! jumps a year ahead would make both replicas forget their whole dedup window and every
//! minute and hour bucket. This module keeps the proposer's clock honest:
//!
//! * every data node samples each other voter's wall clock about once a second over Raft
//!   RPC (`/raft/clock`), as the peer's answer against the midpoint of the round trip on
//!   the *monotonic* clock — a sample stays meaningful however the local wall clock jumps;
//! * [`majority_clock`]: the newest time a majority of voters' clocks (its own included)
//!   have reached. One bad clock, the leader's or a follower's, cannot move it past the
//!   others';
//! * [`decide_stamp`]: the leader stamps its own clock, held within `max_skew_ms` of the
//!   majority's clock. Without a fresh majority (peers unreachable, or of a version that
//!   does not answer) the bound is the last trusted time carried forward by the monotonic
//!   clock. A stamp never goes below what this node already stamped or applied.
//!
//! The policy is a pure function over a [`StampView`]; [`ClockGuard`] holds the samples,
//! and [`sample_voters`] is the thin loop that feeds it. `apply` is untouched: only the
//! value the proposer writes into `ingest_ms` changes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use tally_protocol::{ClockBound as Bound, ClockStatus, PeerClockStatus};

use crate::network::HttpNetwork;
use crate::now_ms;
use crate::state_machine::{Raft, SharedState};
use crate::types::NodeId;

/// Default of `[raft] max_clock_skew_ms`.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 10_000;
/// How often every data node samples its voters' clocks.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// A sample whose round trip takes longer is not taken (its midpoint says too little).
pub const SAMPLE_TIMEOUT: Duration = Duration::from_millis(500);
/// A sample older than this no longer counts: the peer may have jumped since.
pub const FRESH_FOR: Duration = Duration::from_secs(3);

// ---- The pure policy ------------------------------------------------------------------------

/// The newest time that a majority of `voters` voters' clocks have reached: with `own` and
/// the fresh `peers` estimates sorted newest first, the one at the majority's position.
/// `None` when fewer than a majority of clocks are known (or the voters are not known yet,
/// `voters == 0`). With three voters and all known it is the median.
pub fn majority_clock(own: i64, peers: &[i64], voters: usize) -> Option<i64> {
    if voters == 0 {
        return None;
    }
    let majority = voters / 2 + 1;
    let mut clocks: Vec<i64> = std::iter::once(own).chain(peers.iter().copied()).collect();
    if clocks.len() < majority {
        return None;
    }
    clocks.sort_unstable_by(|a, b| b.cmp(a));
    Some(clocks[majority - 1])
}

/// What the stamping decision looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StampView {
    /// This node's wall clock now.
    pub local_ms: i64,
    /// Voters in the membership, this node included (0: not known yet).
    pub voters: usize,
    /// Fresh estimates of the other voters' clocks, carried to now.
    pub peer_clocks: Vec<i64>,
    /// The last trusted time (a majority clock, or the applied high-water mark less the
    /// tolerance), carried to now by the monotonic clock; the bound while no majority clock
    /// is known.
    pub carried_ms: Option<i64>,
    /// The newest ingest time already stamped or applied: a stamp never goes below it.
    pub floor_ms: Option<i64>,
    pub max_skew_ms: i64,
}

/// The ingest time to stamp, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub at_ms: i64,
    /// The stamp is not the local clock: it was held within `max_skew_ms` of the bound.
    pub clamped: bool,
    pub bound: Bound,
    /// The majority's clock, when known.
    pub majority_ms: Option<i64>,
}

/// The ingest time to stamp: the local clock, held within `max_skew_ms` of the majority's
/// clock (either way: a leader far behind stamps the majority's time less the tolerance),
/// or without a majority no further ahead than the carried trusted time plus the tolerance;
/// and never below `floor_ms`.
pub fn decide_stamp(view: &StampView) -> Stamp {
    let skew = view.max_skew_ms.max(0);
    let majority_ms = majority_clock(view.local_ms, &view.peer_clocks, view.voters);
    let (bounded, bound) = match (majority_ms, view.carried_ms) {
        (Some(m), _) => (
            view.local_ms
                .clamp(m.saturating_sub(skew), m.saturating_add(skew)),
            Bound::Majority,
        ),
        (None, Some(c)) => (view.local_ms.min(c.saturating_add(skew)), Bound::Monotonic),
        (None, None) => (view.local_ms, Bound::Local),
    };
    Stamp {
        at_ms: view.floor_ms.map_or(bounded, |f| bounded.max(f)),
        clamped: bounded != view.local_ms,
        bound,
        majority_ms,
    }
}

/// One round trip to a peer: its clock, read at some point between `sent` and `received`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub peer_ms: i64,
    /// Midpoint of the round trip, on the monotonic clock.
    pub at: Instant,
    pub rtt: Duration,
}

impl Sample {
    pub fn from_round_trip(sent: Instant, received: Instant, peer_ms: i64) -> Sample {
        let rtt = received.saturating_duration_since(sent);
        Sample {
            peer_ms,
            at: sent + rtt / 2,
            rtt,
        }
    }

    /// The peer's clock at `now`, if the sample is still fresh.
    pub fn estimate_at(&self, now: Instant) -> Option<i64> {
        let age = now.saturating_duration_since(self.at);
        (age <= FRESH_FOR).then(|| self.peer_ms.saturating_add(age.as_millis() as i64))
    }
}

// ---- The shared state -----------------------------------------------------------------------

/// The node's clock samples and stamping record, shared by the sampling loop, the batcher
/// (through [`Stamper`]) and the status.
pub struct ClockGuard {
    max_skew_ms: u64,
    inner: Mutex<Inner>,
    clamped_total: AtomicU64,
    /// The newest stamp was clamped (for logging the change only).
    clamping: AtomicBool,
}

#[derive(Default)]
struct Inner {
    /// Voters other than this node, as the sampler last read the membership.
    peers: Vec<NodeId>,
    /// Voters in all, this node included (0: not read yet).
    voters: usize,
    samples: BTreeMap<NodeId, Sample>,
    /// The last trusted time and when it was trusted.
    trusted: Option<(i64, Instant)>,
    last_stamp_ms: Option<i64>,
}

impl Inner {
    fn view(&self, local_ms: i64, now: Instant, max_skew_ms: u64) -> StampView {
        StampView {
            local_ms,
            voters: self.voters,
            peer_clocks: self
                .peers
                .iter()
                .filter_map(|id| self.samples.get(id)?.estimate_at(now))
                .collect(),
            carried_ms: self.trusted.map(|(ms, at)| {
                ms.saturating_add(now.saturating_duration_since(at).as_millis() as i64)
            }),
            floor_ms: self.last_stamp_ms,
            max_skew_ms: i64::try_from(max_skew_ms).unwrap_or(i64::MAX),
        }
    }

    /// Trusts the majority's clock whenever there is one: it is what a later stamp falls
    /// back on if the peers stop answering.
    fn trust(&mut self, majority_ms: Option<i64>, now: Instant) {
        if let Some(m) = majority_ms {
            self.trusted = Some((m, now));
        }
    }
}

impl ClockGuard {
    pub fn new(max_skew_ms: u64) -> ClockGuard {
        ClockGuard {
            max_skew_ms,
            inner: Mutex::new(Inner::default()),
            clamped_total: AtomicU64::new(0),
            clamping: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ingest time for the next entry. `applied_ms` is the state's high-water ingest
    /// time: the stamp never goes below it, and it is the first trusted time of a node
    /// that has no other yet.
    pub fn stamp(&self, applied_ms: Option<i64>) -> Stamp {
        let (local_ms, now) = (now_ms(), Instant::now());
        let mut inner = self.lock();
        if inner.trusted.is_none() {
            // The applied time may itself be a stamp up to the tolerance ahead (a clamped
            // one): trusting it less the tolerance keeps a node that restarts without a
            // majority from adding the tolerance again each time. A stamp then runs no
            // faster than the monotonic clock from the newest applied time.
            let skew = i64::try_from(self.max_skew_ms).unwrap_or(i64::MAX);
            inner.trusted = applied_ms.map(|ms| (ms.saturating_sub(skew), now));
        }
        let mut view = inner.view(local_ms, now, self.max_skew_ms);
        view.floor_ms = view.floor_ms.max(applied_ms);
        let stamp = decide_stamp(&view);
        inner.trust(stamp.majority_ms, now);
        inner.last_stamp_ms = Some(stamp.at_ms);
        drop(inner);
        if stamp.clamped {
            self.clamped_total.fetch_add(1, Ordering::Relaxed);
        }
        // Said once when clamping starts and once when it stops: noticed, not noisy.
        if self.clamping.swap(stamp.clamped, Ordering::Relaxed) != stamp.clamped {
            if stamp.clamped && stamp.majority_ms.is_some() {
                tracing::warn!(
                    local_ms,
                    stamped_ms = stamp.at_ms,
                    majority_ms = ?stamp.majority_ms,
                    bound = stamp.bound.as_str(),
                    "this node's clock is more than {} ms off its voters': ingest time is held to theirs until it is back",
                    self.max_skew_ms
                );
            } else if stamp.clamped {
                // No majority of clocks known (yet): a node that just started or lost its
                // peers. Nothing is known to be wrong with the clock, so no warning.
                tracing::info!(
                    local_ms,
                    stamped_ms = stamp.at_ms,
                    bound = stamp.bound.as_str(),
                    "no majority of the voters' clocks is known: ingest time runs on from the \
                     last trusted time at the monotonic clock's pace"
                );
            } else {
                tracing::info!(local_ms, "this node's clock is back within {} ms of its voters': ingest time follows it again", self.max_skew_ms);
            }
        }
        stamp
    }

    /// What a stamp made now would be, without recording it (for reads that need the
    /// cluster's time, such as the event-time check on ingest).
    pub fn trusted_now_ms(&self) -> i64 {
        let inner = self.lock();
        let mut view = inner.view(now_ms(), Instant::now(), self.max_skew_ms);
        view.floor_ms = None;
        decide_stamp(&view).at_ms
    }

    /// The voters the sampler found in the membership (`peers`: the others).
    fn set_voters(&self, voters: usize, peers: Vec<NodeId>) {
        let mut inner = self.lock();
        inner.samples.retain(|id, _| peers.contains(id));
        inner.voters = voters;
        inner.peers = peers;
    }

    /// Keeps a peer's sample, unless its clock is outside the times an event may carry
    /// (2000 to 2200): a clock reset to 1970 or a reply from a broken peer says nothing
    /// about the time, and must not hold the majority clock back.
    fn record(&self, peer: NodeId, sample: Sample, peer_ms: i64) {
        let plausible = (tally_analytics::MIN_TIMESTAMP_MS..tally_analytics::MAX_TIMESTAMP_MS)
            .contains(&peer_ms);
        let mut inner = self.lock();
        if plausible {
            inner.samples.insert(peer, sample);
        } else {
            inner.samples.remove(&peer);
        }
    }

    /// After a round of samples: trust the majority clock if there is one.
    fn refresh_trust(&self) {
        let (local_ms, now) = (now_ms(), Instant::now());
        let mut inner = self.lock();
        let view = inner.view(local_ms, now, self.max_skew_ms);
        let majority = majority_clock(view.local_ms, &view.peer_clocks, view.voters);
        inner.trust(majority, now);
    }

    pub fn clamped_total(&self) -> u64 {
        self.clamped_total.load(Ordering::Relaxed)
    }

    /// `/v1/cluster`'s `clock`.
    pub fn status(&self) -> ClockStatus {
        let (local_ms, now) = (now_ms(), Instant::now());
        let inner = self.lock();
        let mut view = inner.view(local_ms, now, self.max_skew_ms);
        view.floor_ms = None;
        let stamp = decide_stamp(&view);
        let peers = inner
            .peers
            .iter()
            .map(|id| {
                let sample = inner.samples.get(id);
                let estimate = sample.and_then(|s| s.estimate_at(now));
                PeerClockStatus {
                    id: *id,
                    skew_ms: estimate.map(|e| e.saturating_sub(local_ms)),
                    rtt_ms: estimate.and(sample).map(|s| s.rtt.as_millis() as u64),
                    sample_age_ms: sample
                        .map(|s| now.saturating_duration_since(s.at).as_millis() as u64),
                }
            })
            .collect();
        ClockStatus {
            max_skew_ms: self.max_skew_ms,
            local_ms,
            majority_ms: stamp.majority_ms,
            ahead_ms: stamp.majority_ms.map(|m| local_ms.saturating_sub(m)),
            bound: stamp.bound,
            clamping: stamp.clamped,
            clamped_total: self.clamped_total(),
            last_stamp_ms: inner.last_stamp_ms,
            peers,
        }
    }
}

/// What the batcher stamps entries with: the guard plus the applied state's high-water
/// ingest time.
#[derive(Clone)]
pub struct Stamper {
    pub clock: Arc<ClockGuard>,
    pub state: SharedState,
}

impl Stamper {
    pub fn stamp(&self) -> i64 {
        let applied = self.state.read().state.high_water_ms();
        self.clock.stamp(applied).at_ms
    }
}

// ---- The sampling loop ----------------------------------------------------------------------

/// On every data node, leader or not (so that a new leader has fresh samples at once):
/// asks each other voter for its wall clock every [`SAMPLE_EVERY`], over Raft RPC
/// (`/raft/clock`, with the cluster secret), and records the answers in `guard`.
pub(crate) async fn sample_voters(raft: Raft, network: HttpNetwork, guard: Arc<ClockGuard>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (me, voters, peers) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            if m.running_state.is_err() {
                return;
            }
            let membership = m.membership_config.membership();
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            let peers: Vec<_> = voters
                .iter()
                .filter(|id| **id != m.id)
                .filter_map(|id| Some((*id, membership.get_node(id)?.clone())))
                .collect();
            (m.id, voters.len(), peers)
        };
        guard.set_voters(voters, peers.iter().map(|(id, _)| *id).collect());
        let asks = peers.iter().map(|(id, node)| {
            let network = &network;
            async move {
                let sent = Instant::now();
                let reply = network.clock(me, *id, node, SAMPLE_TIMEOUT).await;
                (*id, sent, Instant::now(), reply)
            }
        });
        for (id, sent, received, reply) in futures::future::join_all(asks).await {
            match reply {
                Ok(r) if r.node_id == id => guard.record(
                    id,
                    Sample::from_round_trip(sent, received, r.now_ms),
                    r.now_ms,
                ),
                Ok(r) => tracing::debug!("clock of node {id}: node {} answered", r.node_id),
                Err(e) => tracing::trace!("clock of node {id}: {e}"),
            }
        }
        guard.refresh_trust();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000_000;
    const SKEW: i64 = 10_000;
    const YEAR: i64 = 365 * 86_400_000;

    fn view(local: i64, voters: usize, peers: &[i64]) -> StampView {
        StampView {
            local_ms: local,
            voters,
            peer_clocks: peers.to_vec(),
            carried_ms: None,
            floor_ms: None,
            max_skew_ms: SKEW,
        }
    }

    #[test]
    fn the_majority_clock_is_the_median_of_three_and_needs_a_majority() {
        assert_eq!(majority_clock(5, &[1, 9], 3), Some(5));
        assert_eq!(majority_clock(9, &[1, 5], 3), Some(5));
        assert_eq!(majority_clock(1, &[9, 5], 3), Some(5));
        // Two of three known: the older of the two (both have reached it).
        assert_eq!(majority_clock(9, &[5], 3), Some(5));
        assert_eq!(majority_clock(5, &[9], 3), Some(5));
        // Alone of three: no majority.
        assert_eq!(majority_clock(5, &[], 3), None);
        // A single voter is its own majority; voters not known yet: none.
        assert_eq!(majority_clock(5, &[], 1), Some(5));
        assert_eq!(majority_clock(5, &[], 0), None);
        // Five voters: the third newest, so two bad clocks either way cannot move it.
        assert_eq!(majority_clock(100, &[1, 2, 3, 99], 5), Some(3));
        assert_eq!(majority_clock(100, &[1, 2, 99], 5), Some(2));
        assert_eq!(majority_clock(100, &[1, 99], 5), Some(1));
        assert_eq!(majority_clock(100, &[99], 5), None);
    }

    #[test]
    fn a_leader_a_year_ahead_stamps_the_majoritys_time() {
        let s = decide_stamp(&view(T + YEAR, 3, &[T, T + 5]));
        assert_eq!(s.at_ms, T + 5 + SKEW);
        assert!(s.clamped);
        assert_eq!((s.bound, s.majority_ms), (Bound::Majority, Some(T + 5)));
        // With one peer down, the other peer's clock bounds it.
        let s = decide_stamp(&view(T + YEAR, 3, &[T]));
        assert_eq!((s.at_ms, s.clamped), (T + SKEW, true));
    }

    #[test]
    fn one_bad_peer_cannot_move_a_good_leader() {
        for peers in [[T + YEAR, T + 3], [T - YEAR, T + 3], [T + YEAR, T - YEAR]] {
            let s = decide_stamp(&view(T, 3, &peers));
            assert_eq!((s.at_ms, s.clamped), (T, false), "{peers:?}");
        }
    }

    #[test]
    fn within_the_tolerance_the_leader_stamps_its_own_clock() {
        let s = decide_stamp(&view(T + SKEW, 3, &[T, T]));
        assert_eq!((s.at_ms, s.clamped), (T + SKEW, false));
        let s = decide_stamp(&view(T + SKEW + 1, 3, &[T, T]));
        assert_eq!((s.at_ms, s.clamped), (T + SKEW, true));
        // Far behind: raised to within the tolerance, so retention and dedup expiry keep
        // pace with the cluster.
        let s = decide_stamp(&view(T - YEAR, 3, &[T, T]));
        assert_eq!((s.at_ms, s.clamped), (T - SKEW, true));
    }

    #[test]
    fn without_a_fresh_majority_the_carried_time_bounds_the_stamp() {
        // Peers silent, the local clock jumped: held at the carried time plus tolerance.
        let mut v = view(T + YEAR, 3, &[]);
        v.carried_ms = Some(T);
        let s = decide_stamp(&v);
        assert_eq!(
            (s.at_ms, s.clamped, s.bound),
            (T + SKEW, true, Bound::Monotonic)
        );
        // A local clock behind the carried time is not raised on the monotonic clock alone.
        v.local_ms = T - 60_000;
        let s = decide_stamp(&v);
        assert_eq!((s.at_ms, s.clamped), (T - 60_000, false));
        // Nothing known at all (a fresh cluster's first entry): the local clock.
        let s = decide_stamp(&view(T + YEAR, 3, &[]));
        assert_eq!(
            (s.at_ms, s.clamped, s.bound),
            (T + YEAR, false, Bound::Local)
        );
    }

    #[test]
    fn a_stamp_never_goes_below_what_was_stamped_or_applied() {
        let mut v = view(T, 3, &[T, T]);
        v.floor_ms = Some(T + 60_000);
        let s = decide_stamp(&v);
        assert_eq!((s.at_ms, s.clamped), (T + 60_000, false));
        // Clamped and floored: the floor wins; the stamp still counts as clamped.
        let mut v = view(T + YEAR, 3, &[T, T]);
        v.floor_ms = Some(T + 2 * SKEW);
        let s = decide_stamp(&v);
        assert_eq!((s.at_ms, s.clamped), (T + 2 * SKEW, true));
    }

    #[test]
    fn a_sample_is_read_at_its_midpoint_and_goes_stale() {
        let sent = Instant::now();
        let s = Sample::from_round_trip(sent, sent + Duration::from_millis(200), T);
        assert_eq!(s.at, sent + Duration::from_millis(100));
        assert_eq!(s.rtt, Duration::from_millis(200));
        assert_eq!(
            s.estimate_at(s.at + Duration::from_millis(700)),
            Some(T + 700)
        );
        assert_eq!(s.estimate_at(s.at + FRESH_FOR), Some(T + 3_000));
        assert_eq!(
            s.estimate_at(s.at + FRESH_FOR + Duration::from_millis(1)),
            None
        );
    }

    #[test]
    fn an_implausible_peer_clock_is_no_sample() {
        let guard = ClockGuard::new(SKEW as u64);
        guard.set_voters(3, vec![2, 3]);
        let now = Instant::now();
        let real = now_ms();
        guard.record(2, Sample::from_round_trip(now, now, real), real);
        // A clock reset to 1970, and a hostile reply: dropped, and they drop what was known.
        for bad in [0, i64::MIN, i64::MAX] {
            guard.record(3, Sample::from_round_trip(now, now, bad), bad);
            assert!(!guard.lock().samples.contains_key(&3), "{bad}");
        }
        guard.record(2, Sample::from_round_trip(now, now, 5), 5);
        assert!(guard.lock().samples.is_empty());
    }

    #[test]
    fn the_guard_clamps_a_jumped_clock_and_never_ratchets_without_peers() {
        let guard = ClockGuard::new(SKEW as u64);
        let real = now_ms();
        // Two peers whose clocks are a year behind ours: i.e. ours is a year ahead.
        guard.set_voters(3, vec![2, 3]);
        let now = Instant::now();
        for id in [2, 3] {
            guard.record(
                id,
                Sample::from_round_trip(now, now, real - YEAR),
                real - YEAR,
            );
        }
        let s = guard.stamp(None);
        assert!(s.clamped);
        assert!((s.at_ms - (real - YEAR + SKEW)).abs() < 2_000, "{s:?}");
        let status = guard.status();
        assert!(status.clamping);
        assert_eq!(status.clamped_total, 1);
        assert_eq!(status.bound, Bound::Majority);
        assert!(status
            .peers
            .iter()
            .all(|p| p.skew_ms.unwrap() < -YEAR + 2_000));
        // The peers fall silent: the carried trusted time still bounds every stamp, and
        // repeated stamps do not creep forward by the tolerance each time.
        guard.set_voters(3, vec![4, 5]);
        let stamps: Vec<i64> = (0..5).map(|_| guard.stamp(None).at_ms).collect();
        assert!(
            stamps
                .iter()
                .all(|s| (s - (real - YEAR + SKEW)).abs() < 2_000),
            "{stamps:?}"
        );
        assert_eq!(guard.status().bound, Bound::Monotonic);
        assert_eq!(guard.clamped_total(), 6);
    }

    #[test]
    fn the_guard_starts_from_the_applied_time_and_never_goes_below_it() {
        let guard = ClockGuard::new(SKEW as u64);
        let real = now_ms();
        // No samples yet: the applied high-water mark, less the tolerance, is the trusted
        // time, so stamps run on from the applied time by the monotonic clock alone.
        let s = guard.stamp(Some(real - YEAR));
        assert_eq!(s.bound, Bound::Monotonic);
        assert!(
            s.clamped && (s.at_ms - (real - YEAR)).abs() < 2_000,
            "{s:?}"
        );
        assert!(guard.stamp(Some(real - YEAR)).at_ms < real - YEAR + 2_000);
        // Applied far ahead of the local clock (a previous leader's): never below it.
        let guard = ClockGuard::new(SKEW as u64);
        guard.set_voters(1, vec![]);
        let s = guard.stamp(Some(real + YEAR));
        assert_eq!(s.at_ms, real + YEAR);
        assert!(guard.stamp(None).at_ms >= real + YEAR);
    }
}
