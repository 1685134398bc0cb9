//! The witness's policies: hand leadership to a data node, campaign as caretaker when the
//! data nodes cannot elect one of themselves, and purge the log behind the snapshot floor.
//!
//! Each loop is a thin shell: it reads a small view from openraft's metrics (and the applied
//! state), asks a pure decision function what to do, and does it. The decisions have no I/O
//! and no clock (the shells pass `now` in), so they are unit-tested below.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::ServerState;

use crate::options::RaftTiming;
use crate::state_machine::{Raft, SharedState};
use crate::types::{NodeId, RaftMetrics};

// ---- Hand leadership to a data node ---------------------------------------------------------

/// What the hand-over decision looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOverView {
    pub leading: bool,
    pub last_log_index: Option<u64>,
    /// The leader's replication progress, in openraft's order (by id).
    pub replicas: Vec<Replica>,
}

/// One replication target as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub id: NodeId,
    /// A voter of the current membership that is a data node (not a witness).
    pub data_voter: bool,
    pub matched: Option<u64>,
}

impl HandOverView {
    pub fn of(m: &RaftMetrics) -> HandOverView {
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let replicas = m
            .replication
            .iter()
            .flatten()
            .map(|(id, matched)| Replica {
                id: *id,
                data_voter: voters.contains(id)
                    && membership.get_node(id).is_some_and(|n| !n.witness),
                matched: matched.as_ref().map(|l| l.index),
            })
            .collect();
        HandOverView {
            leading: m.state == ServerState::Leader,
            last_log_index: m.last_log_index,
            replicas,
        }
    }
}

/// While the witness leads: the first data voter that holds its whole log, if any.
pub fn hand_over_target(view: &HandOverView) -> Option<NodeId> {
    if !view.leading {
        return None;
    }
    view.replicas
        .iter()
        .find(|r| r.data_voter && r.matched == view.last_log_index)
        .map(|r| r.id)
}

/// A witness can win an election (e.g. when a data node's vote request was refused under the
/// dead leader's lease and the witness's own timer fired next), but it cannot acknowledge
/// writes. While it leads, it hands leadership to the first data voter that holds its whole
/// log; until one does, writes get a clear 503 (`witness_leader`).
pub(crate) async fn hand_leadership_to_data_node(raft: Raft, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let view = HandOverView::of(&raft.metrics().borrow_watched());
        if let Some(to) = hand_over_target(&view) {
            tracing::info!(
                to,
                "witness is leader: handing leadership to an up-to-date data node"
            );
            if raft.trigger().transfer_leader(to).await.is_err() {
                return; // Raft has stopped.
            }
        }
    }
}

/// How often the hand-over loop looks.
pub fn hand_over_every(timing: &RaftTiming) -> Duration {
    Duration::from_millis(timing.heartbeat_ms.max(10) * 2)
}

// ---- Caretaker campaign ---------------------------------------------------------------------

/// How long no leader may be heard of before the witness campaigns: one and a half data
/// election timeouts plus a heartbeat.
pub fn quiet_limit(timing: &RaftTiming) -> Duration {
    Duration::from_millis(timing.election_max_ms * 3 / 2 + timing.heartbeat_ms)
}

/// What the campaign decision looks at, once per tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CampaignView {
    pub leading: bool,
    /// Following a leader whose vote is committed.
    pub following: bool,
    /// While following: how long ago the vote was last refreshed (by the leader's heartbeat).
    pub vote_age: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CampaignAction {
    Wait,
    Campaign,
}

/// When the witness last heard of a leader, and what that means for campaigning.
#[derive(Clone, Copy, Debug)]
pub struct CampaignClock {
    pub quiet_limit: Duration,
    pub last_leader_heard: Instant,
}

impl CampaignClock {
    pub fn new(quiet_limit: Duration, now: Instant) -> CampaignClock {
        CampaignClock {
            quiet_limit,
            last_leader_heard: now,
        }
    }

    /// One tick at `now`: campaign only when no leader has been heard of for longer than the
    /// quiet limit. Campaigning restarts the count.
    pub fn decide(&mut self, view: &CampaignView, now: Instant) -> CampaignAction {
        if view.leading {
            self.last_leader_heard = now;
            return CampaignAction::Wait;
        }
        if view.following {
            // A follower's vote is refreshed by every heartbeat of the leader it follows:
            // its age is the time since the leader was last heard.
            if let Some(heard) = view.vote_age.and_then(|age| now.checked_sub(age)) {
                self.last_leader_heard = self.last_leader_heard.max(heard);
            }
        }
        if now.saturating_duration_since(self.last_leader_heard) > self.quiet_limit {
            self.last_leader_heard = now;
            CampaignAction::Campaign
        } else {
            CampaignAction::Wait
        }
    }
}

/// On the witness: campaign only when no leader has been heard of for one and a half data
/// election timeouts — time enough for the surviving data node's first election — i.e. the
/// data nodes could not elect one of themselves, typically because the only live data node
/// lacks entries that the witness holds. The witness then leads as caretaker
/// (`hand_leadership_to_data_node`).
pub(crate) async fn witness_campaign(raft: Raft, timing: RaftTiming) {
    let mut clock = CampaignClock::new(quiet_limit(&timing), Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(timing.heartbeat_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (leading, following) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            if m.running_state.is_err() {
                return;
            }
            (
                m.state == ServerState::Leader,
                m.current_leader.is_some() && m.vote.is_committed(),
            )
        };
        let vote_age = if following && !leading {
            let Ok(age) = raft
                .with_raft_state(|st| st.vote_last_modified().map(|t| t.elapsed()))
                .await
            else {
                return;
            };
            age
        } else {
            None
        };
        let view = CampaignView {
            leading,
            following,
            vote_age,
        };
        if clock.decide(&view, Instant::now()) == CampaignAction::Campaign {
            let quiet_limit = clock.quiet_limit;
            tracing::info!("no leader for {quiet_limit:?}: the witness campaigns as caretaker");
            // With pre-vote, like every other election: a witness that is only cut off
            // from the others must not raise its term and depose the leader on its return.
            if raft.trigger().elect(true).await.is_err() {
                return;
            }
            clock.last_leader_heard = Instant::now();
        }
    }
}

// ---- Purge behind the snapshot floor --------------------------------------------------------

/// What the witness's purge decision looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WitnessPurgeView {
    /// The witness's own snapshot (`None`: none built yet).
    pub snapshot: Option<u64>,
    pub purged: u64,
    pub last_log_index: u64,
    /// Every data member holds a snapshot covering this index.
    pub floor: u64,
    /// Entries in the log and the bytes they weigh.
    pub entries: u64,
    pub bytes: u64,
}

/// The witness's log bounds: it keeps at most this many entries and bytes beyond the
/// snapshot floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WitnessLogBound {
    pub max_entries: u64,
    pub max_bytes: u64,
}

impl WitnessLogBound {
    /// The entry count to keep at most: `max_entries`, or fewer when the log weighs more
    /// than `max_bytes` (estimated from its mean entry size, so one huge entry moves the
    /// bound as it should).
    fn keep(&self, view: &WitnessPurgeView) -> u64 {
        if view.bytes <= self.max_bytes || view.entries == 0 {
            return self.max_entries;
        }
        let by_bytes =
            (u128::from(view.entries) * u128::from(self.max_bytes) / u128::from(view.bytes)) as u64;
        self.max_entries.min(by_bytes)
    }
}

/// The purge decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeDecision {
    /// Purge the log up to this index.
    pub purge_to: Option<u64>,
    /// Warn that the bound forces a purge past the floor, up to this index.
    pub warn_forced: Option<u64>,
}

/// The witness keeps its log down to the snapshot floor, and beyond it only when it would
/// keep more than the bound's entries or bytes. `warned_at` throttles the warning: it is
/// given again only once the forced purge point passes it (the function moves it on).
pub fn witness_purge_decision(
    view: &WitnessPurgeView,
    bound: WitnessLogBound,
    warned_at: &mut u64,
) -> PurgeDecision {
    let Some(snapshot) = view.snapshot else {
        return PurgeDecision::default();
    };
    let max_entries = bound.keep(view);
    let mut decision = PurgeDecision::default();
    let mut upto = snapshot.min(view.floor);
    let over_bound = view.last_log_index.saturating_sub(max_entries);
    if over_bound > upto {
        let forced = over_bound.min(snapshot);
        if forced > upto && forced > *warned_at {
            decision.warn_forced = Some(forced);
            *warned_at = forced + max_entries / 10;
        }
        upto = upto.max(forced);
    }
    if upto > view.purged {
        decision.purge_to = Some(upto);
    }
    decision
}

/// On the witness: purges the log up to the snapshot floor (what every data member holds in
/// a snapshot), and beyond it only when it would keep more than the bound allows.
pub(crate) async fn witness_purge(
    raft: Raft,
    state: SharedState,
    log: tally_storage::LogStore<crate::types::TypeConfig>,
    bound: WitnessLogBound,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned_at = 0u64;
    loop {
        tick.tick().await;
        let (snapshot, purged, last) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            if m.running_state.is_err() {
                return;
            }
            (
                m.snapshot.map(|l| l.index),
                m.purged.map(|l| l.index).unwrap_or(0),
                m.last_log_index.unwrap_or(0),
            )
        };
        if snapshot.is_none() {
            continue;
        }
        let floor = state.read().snapshot_floor;
        let stats = log.log_stats();
        let view = WitnessPurgeView {
            snapshot,
            purged,
            last_log_index: last,
            floor,
            entries: stats.entries,
            bytes: stats.bytes,
        };
        let decision = witness_purge_decision(&view, bound, &mut warned_at);
        if let Some(forced) = decision.warn_forced {
            tracing::warn!(
                floor,
                purge_to = forced,
                max_entries = bound.max_entries,
                max_bytes = bound.max_bytes,
                log_bytes = stats.bytes,
                "witness log over its bound: purging past the snapshot floor; a data node \
                 behind index {forced} can now only be rebuilt from the other data node"
            );
        }
        if let Some(upto) = decision.purge_to {
            if let Err(e) = raft.trigger().purge_log(upto).await {
                tracing::debug!("witness purge: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: NodeId, data_voter: bool, matched: Option<u64>) -> Replica {
        Replica {
            id,
            data_voter,
            matched,
        }
    }

    #[test]
    fn hand_over_only_while_leading() {
        let view = HandOverView {
            leading: false,
            last_log_index: Some(10),
            replicas: vec![replica(1, true, Some(10))],
        };
        assert_eq!(hand_over_target(&view), None);
    }

    #[test]
    fn hand_over_to_the_first_up_to_date_data_voter() {
        let view = HandOverView {
            leading: true,
            last_log_index: Some(10),
            replicas: vec![
                replica(1, true, Some(9)),
                replica(2, true, Some(10)),
                replica(4, true, Some(10)),
            ],
        };
        assert_eq!(hand_over_target(&view), Some(2));
    }

    #[test]
    fn never_hand_over_to_a_witness_a_learner_or_a_lagging_node() {
        let view = HandOverView {
            leading: true,
            last_log_index: Some(10),
            replicas: vec![
                replica(1, true, Some(9)),
                replica(3, false, Some(10)), // a witness, or a data learner
                replica(5, true, None),
            ],
        };
        assert_eq!(hand_over_target(&view), None);
        // An empty log is held whole by a data voter that matched nothing.
        let empty = HandOverView {
            leading: true,
            last_log_index: None,
            replicas: vec![replica(1, true, None)],
        };
        assert_eq!(hand_over_target(&empty), Some(1));
        // No replication progress at all (not yet leading for real).
        let none = HandOverView {
            leading: true,
            last_log_index: Some(3),
            replicas: vec![],
        };
        assert_eq!(hand_over_target(&none), None);
    }

    #[test]
    fn timings_follow_the_raft_timers() {
        let t = RaftTiming {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 500,
        };
        assert_eq!(quiet_limit(&t), Duration::from_millis(800));
        assert_eq!(hand_over_every(&t), Duration::from_millis(100));
        let fast = RaftTiming {
            heartbeat_ms: 2,
            ..t
        };
        assert_eq!(hand_over_every(&fast), Duration::from_millis(20));
    }

    const QUIET: Duration = Duration::from_millis(800);
    const MS: Duration = Duration::from_millis(1);

    fn view(leading: bool, following: bool, vote_age: Option<Duration>) -> CampaignView {
        CampaignView {
            leading,
            following,
            vote_age,
        }
    }

    #[test]
    fn campaign_only_after_the_caretaker_timeout() {
        let t0 = Instant::now();
        let mut clock = CampaignClock::new(QUIET, t0);
        let alone = view(false, false, None);
        assert_eq!(clock.decide(&alone, t0 + 400 * MS), CampaignAction::Wait);
        // Exactly at the limit: not yet (strictly longer is needed).
        assert_eq!(clock.decide(&alone, t0 + QUIET), CampaignAction::Wait);
        assert_eq!(
            clock.decide(&alone, t0 + 801 * MS),
            CampaignAction::Campaign
        );
        // Campaigning restarts the count.
        assert_eq!(clock.last_leader_heard, t0 + 801 * MS);
        assert_eq!(clock.decide(&alone, t0 + 1200 * MS), CampaignAction::Wait);
        assert_eq!(
            clock.decide(&alone, t0 + 1700 * MS),
            CampaignAction::Campaign
        );
    }

    #[test]
    fn leading_or_hearing_a_leader_holds_the_campaign_off() {
        let t0 = Instant::now();
        let mut clock = CampaignClock::new(QUIET, t0);
        // Leading resets the clock.
        assert_eq!(
            clock.decide(&view(true, false, None), t0 + 700 * MS),
            CampaignAction::Wait
        );
        assert_eq!(
            clock.decide(&view(false, false, None), t0 + 1400 * MS),
            CampaignAction::Wait
        );
        // A follower whose vote was refreshed 100 ms ago heard the leader then.
        assert_eq!(
            clock.decide(&view(false, true, Some(100 * MS)), t0 + 2000 * MS),
            CampaignAction::Wait
        );
        assert_eq!(clock.last_leader_heard, t0 + 1900 * MS);
        // A stale vote (the leader died) does not: the witness campaigns once it is too old.
        assert_eq!(
            clock.decide(&view(false, true, Some(900 * MS)), t0 + 2600 * MS),
            CampaignAction::Wait
        );
        assert_eq!(
            clock.decide(&view(false, true, Some(1000 * MS)), t0 + 2701 * MS),
            CampaignAction::Campaign
        );
    }

    #[test]
    fn an_older_vote_never_moves_the_clock_back() {
        let t0 = Instant::now();
        let mut clock = CampaignClock::new(QUIET, t0 + 500 * MS);
        clock.decide(&view(false, true, Some(400 * MS)), t0 + 600 * MS);
        assert_eq!(clock.last_leader_heard, t0 + 500 * MS);
        // Not following: the vote age is ignored.
        clock.decide(&view(false, false, Some(Duration::ZERO)), t0 + 700 * MS);
        assert_eq!(clock.last_leader_heard, t0 + 500 * MS);
    }

    fn purge(snapshot: Option<u64>, purged: u64, last: u64, floor: u64) -> WitnessPurgeView {
        WitnessPurgeView {
            snapshot,
            purged,
            last_log_index: last,
            floor,
            entries: last - purged,
            bytes: (last - purged) * 100,
        }
    }

    /// A bound on entries only.
    fn entries(max_entries: u64) -> WitnessLogBound {
        WitnessLogBound {
            max_entries,
            max_bytes: u64::MAX,
        }
    }

    #[test]
    fn the_byte_bound_keeps_what_fits_at_the_mean_entry_size() {
        let mut warned = 0;
        // 5000 entries of 100 bytes (500 KB), at most 200 KB: keep 2000 entries.
        let bound = WitnessLogBound {
            max_entries: 1_000_000,
            max_bytes: 200_000,
        };
        let d = witness_purge_decision(&purge(Some(4_500), 0, 5_000, 100), bound, &mut warned);
        assert_eq!(d.purge_to, Some(3_000));
        assert_eq!(d.warn_forced, Some(3_000));
        // Within the bytes: the floor rules.
        let d = witness_purge_decision(&purge(Some(4_500), 0, 1_000, 100), bound, &mut 0);
        assert_eq!(d.purge_to, Some(100));
        assert_eq!(d.warn_forced, None);
        // The lower of the two bounds applies.
        let both = WitnessLogBound {
            max_entries: 500,
            max_bytes: 200_000,
        };
        let d = witness_purge_decision(&purge(Some(4_500), 0, 5_000, 100), both, &mut 0);
        assert_eq!(d.purge_to, Some(4_500));
    }

    #[test]
    fn no_snapshot_no_purge() {
        let mut warned = 0;
        let d = witness_purge_decision(&purge(None, 0, 5_000, 4_000), entries(1_000), &mut warned);
        assert_eq!(d, PurgeDecision::default());
    }

    #[test]
    fn purge_up_to_the_floor_or_the_snapshot_whichever_is_lower() {
        let mut warned = 0;
        // Floor below the snapshot: up to the floor.
        let d = witness_purge_decision(&purge(Some(500), 0, 600, 300), entries(1_000), &mut warned);
        assert_eq!(d.purge_to, Some(300));
        assert_eq!(d.warn_forced, None);
        // Floor above the snapshot: up to the snapshot.
        let d = witness_purge_decision(&purge(Some(500), 0, 600, 900), entries(1_000), &mut warned);
        assert_eq!(d.purge_to, Some(500));
        // Already purged that far: nothing to do.
        let d = witness_purge_decision(
            &purge(Some(500), 500, 600, 900),
            entries(1_000),
            &mut warned,
        );
        assert_eq!(d.purge_to, None);
        // No floor yet: nothing.
        let d = witness_purge_decision(&purge(Some(500), 0, 600, 0), entries(1_000), &mut warned);
        assert_eq!(d.purge_to, None);
        assert_eq!(warned, 0);
    }

    #[test]
    fn over_the_bound_purges_past_the_floor_and_warns_throttled() {
        let mut warned = 0;
        // 5000 entries, bound 1000, floor 100, snapshot 4500: forced to 4000.
        let d = witness_purge_decision(
            &purge(Some(4_500), 0, 5_000, 100),
            entries(1_000),
            &mut warned,
        );
        assert_eq!(d.purge_to, Some(4_000));
        assert_eq!(d.warn_forced, Some(4_000));
        assert_eq!(warned, 4_100);
        // Next tick, a little further: within the throttle, no warning.
        let d = witness_purge_decision(
            &purge(Some(4_500), 4_000, 5_050, 100),
            entries(1_000),
            &mut warned,
        );
        assert_eq!(d.purge_to, Some(4_050));
        assert_eq!(d.warn_forced, None);
        // Past the throttle: warned again.
        let d = witness_purge_decision(
            &purge(Some(6_000), 4_050, 5_200, 100),
            entries(1_000),
            &mut warned,
        );
        assert_eq!(d.purge_to, Some(4_200));
        assert_eq!(d.warn_forced, Some(4_200));
        assert_eq!(warned, 4_300);
    }

    #[test]
    fn the_bound_never_purges_past_the_snapshot() {
        let mut warned = 0;
        // Over the bound, but the snapshot is at 2000: forced only to 2000.
        let d = witness_purge_decision(
            &purge(Some(2_000), 0, 5_000, 100),
            entries(1_000),
            &mut warned,
        );
        assert_eq!(d.purge_to, Some(2_000));
        assert_eq!(d.warn_forced, Some(2_000));
        // Over the bound but the floor is already further: no warning, the floor rules.
        let mut warned = 0;
        let d = witness_purge_decision(
            &purge(Some(4_500), 0, 5_000, 4_200),
            entries(1_000),
            &mut warned,
        );
        assert_eq!(d.purge_to, Some(4_200));
        assert_eq!(d.warn_forced, None);
    }
}
