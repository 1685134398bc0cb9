//! Raft terms and leaders around partitions: did healing a partition force an election?
//!
//! A node cut off from its leader may campaign on its own timer. Without pre-vote every such
//! campaign raises its term, and when the link heals that higher term deposes a leader that
//! had a majority all along: an election nobody needed. The nemesis reads every reachable
//! node's `/v1/cluster` when a partition starts, just before it heals, and after the heal
//! until every node agrees on one leader and term (or the next fault is due). This module
//! is the pure part: from those [`View`]s it says, per partition, how many elections the
//! heal caused and whether it deposed a healthy leader ([`PartitionTerms`]), and
//! [`summarize`] adds them up for `results.json`, the console and the report.

use serde::{Deserialize, Serialize};
use tally_protocol::NodeStatus;

/// One node's Raft term and leader, as its `/v1/cluster` said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeTerm {
    pub node: u64,
    pub term: u64,
    /// The leader as this node knows it.
    pub leader_id: Option<u64>,
    /// It says it leads.
    pub leading: bool,
}

impl NodeTerm {
    pub fn of(status: &NodeStatus) -> NodeTerm {
        NodeTerm {
            node: status.node_id,
            term: status.term,
            leader_id: status.leader_id,
            leading: status.is_leader(),
        }
    }
}

/// Every node that answered, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub nodes: Vec<NodeTerm>,
}

impl View {
    /// The node that says it leads with the highest term, and that term (a leader cut off
    /// from the majority may still say it leads, in its older term).
    pub fn leader(&self) -> Option<(u64, u64)> {
        self.nodes
            .iter()
            .filter(|n| n.leading)
            .max_by_key(|n| n.term)
            .map(|n| (n.node, n.term))
    }

    /// The highest term any node has.
    pub fn max_term(&self) -> u64 {
        self.nodes.iter().map(|n| n.term).max().unwrap_or(0)
    }

    /// Settled: all `expected` nodes answered, each is in the same term and follows the same
    /// leader, and that leader says it leads.
    pub fn settled(&self, expected: usize) -> bool {
        let Some((leader, term)) = self.leader() else {
            return false;
        };
        self.nodes.len() == expected
            && self
                .nodes
                .iter()
                .all(|n| n.term == term && n.leader_id == Some(leader))
    }

    /// The view reduced to what a partition's record keeps, taken `at_ms` into the run.
    pub fn moment(&self, at_ms: f64) -> Moment {
        let leader = self.leader();
        Moment {
            at_ms,
            leader: leader.map(|(id, _)| id),
            // With no leader, the highest term: an election is under way in it.
            term: leader.map_or_else(|| self.max_term(), |(_, t)| t),
            max_term: self.max_term(),
        }
    }
}

/// The cluster's leader and term at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Moment {
    /// Milliseconds since the run started.
    pub at_ms: f64,
    /// The leader with the highest term, if any node said it leads.
    pub leader: Option<u64>,
    /// That leader's term (with no leader: the highest term).
    pub term: u64,
    /// The highest term any node had: above `term` when a cut-off node campaigned alone.
    pub max_term: u64,
}

/// What a partition cut off from the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cut {
    /// The leader (data node or witness) alone.
    Leader,
    /// A data node that did not lead, alone.
    Follower,
    /// The witness, not leading, alone.
    Witness,
    /// The two data nodes apart; the witness still reaches both.
    Bridge,
}

impl Cut {
    /// The kind of cut from the nodes isolated from the others (none for a bridge) and the
    /// leader when it began.
    pub fn of(isolated: &[u64], leader: Option<u64>, witness: u64) -> Cut {
        if isolated.is_empty() {
            Cut::Bridge
        } else if leader.is_some_and(|l| isolated.contains(&l)) {
            Cut::Leader
        } else if isolated.contains(&witness) {
            Cut::Witness
        } else {
            Cut::Follower
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cut::Leader => "leader",
            Cut::Follower => "follower",
            Cut::Witness => "witness",
            Cut::Bridge => "bridge",
        }
    }

    pub const ALL: [Cut; 4] = [Cut::Leader, Cut::Follower, Cut::Witness, Cut::Bridge];
}

/// One partition fault: the leader and term when it began, just before it healed, and once
/// the cluster had settled after the heal; and what the heal did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionTerms {
    /// The fault's id in the history.
    pub fault_id: u32,
    pub cut: Cut,
    /// The nodes cut off from the others (none for a bridge).
    pub isolated: Vec<u64>,
    pub start: Moment,
    pub heal: Moment,
    pub after: Moment,
    /// Every node agreed on one leader and term in `after`; otherwise `after` is the last
    /// view before the next fault (the figures may then be too low).
    pub settled: bool,
    /// Term increments from the heal until settled: elections the heal caused.
    pub elections_by_heal: u64,
    /// The leader at the heal had a majority (it was not cut off), yet it did not keep its
    /// term: the heal forced an election, whoever won it (often the same node again).
    pub deposed: bool,
    /// Of those, the ones where another node leads afterwards.
    pub leader_changed: bool,
    /// Term increments from the start until settled: every election of this partition,
    /// the ones it needed (a cut-off leader is replaced) and the ones the heal caused.
    pub elections: u64,
}

impl PartitionTerms {
    pub fn new(
        fault_id: u32,
        cut: Cut,
        isolated: Vec<u64>,
        (start, heal, after): (Moment, Moment, Moment),
        settled: bool,
    ) -> PartitionTerms {
        let healthy = heal.leader.is_some_and(|l| !isolated.contains(&l));
        let other_leader = after.leader.is_some_and(|l| Some(l) != heal.leader);
        let deposed = healthy && (after.term > heal.term || other_leader);
        PartitionTerms {
            fault_id,
            cut,
            isolated,
            start,
            heal,
            after,
            settled,
            elections_by_heal: after.term.saturating_sub(heal.term),
            deposed,
            leader_changed: deposed && other_leader,
            elections: after.term.saturating_sub(start.term),
        }
    }
}

/// All partitions of a run together.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ElectionSummary {
    pub partitions: u64,
    /// Partitions whose cluster settled after the heal (before the next fault, or after
    /// the final healing for one healed at the time limit).
    pub settled: u64,
    /// Elections caused by heals, all together, and per heal.
    pub elections_by_heals: u64,
    pub elections_per_heal: f64,
    /// Heals that deposed a leader that had a majority.
    pub heals_that_deposed: u64,
    /// Elections per partition, the needed ones included.
    pub elections_per_partition: f64,
    /// The same by what was cut off (only the kinds that occurred).
    pub by_cut: Vec<CutSummary>,
}

/// The partitions of one kind of cut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutSummary {
    pub cut: Cut,
    pub partitions: u64,
    pub elections_by_heals: u64,
    pub heals_that_deposed: u64,
    pub elections: u64,
}

pub fn summarize(partitions: &[PartitionTerms]) -> ElectionSummary {
    let n = partitions.len() as u64;
    let per = |total: u64| {
        if n == 0 {
            0.0
        } else {
            total as f64 / n as f64
        }
    };
    let by_heal: u64 = partitions.iter().map(|p| p.elections_by_heal).sum();
    let all: u64 = partitions.iter().map(|p| p.elections).sum();
    let by_cut = Cut::ALL
        .iter()
        .filter_map(|&cut| {
            let of: Vec<&PartitionTerms> = partitions.iter().filter(|p| p.cut == cut).collect();
            (!of.is_empty()).then(|| CutSummary {
                cut,
                partitions: of.len() as u64,
                elections_by_heals: of.iter().map(|p| p.elections_by_heal).sum(),
                heals_that_deposed: of.iter().filter(|p| p.deposed).count() as u64,
                elections: of.iter().map(|p| p.elections).sum(),
            })
        })
        .collect();
    ElectionSummary {
        partitions: n,
        settled: partitions.iter().filter(|p| p.settled).count() as u64,
        elections_by_heals: by_heal,
        elections_per_heal: per(by_heal),
        heals_that_deposed: partitions.iter().filter(|p| p.deposed).count() as u64,
        elections_per_partition: per(all),
        by_cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITNESS: u64 = 3;

    fn node(node: u64, term: u64, leader_id: Option<u64>) -> NodeTerm {
        NodeTerm {
            node,
            term,
            leader_id,
            leading: leader_id == Some(node),
        }
    }

    fn view(nodes: &[NodeTerm]) -> View {
        View {
            nodes: nodes.to_vec(),
        }
    }

    fn at(leader: Option<u64>, term: u64, max_term: u64) -> Moment {
        Moment {
            at_ms: 0.0,
            leader,
            term,
            max_term,
        }
    }

    #[test]
    fn the_leader_is_the_claimant_with_the_highest_term() {
        // Node 1 was cut off and still says it leads in term 4; 2 leads in term 5.
        let v = view(&[
            node(1, 4, Some(1)),
            node(2, 5, Some(2)),
            node(3, 5, Some(2)),
        ]);
        assert_eq!(v.leader(), Some((2, 5)));
        assert_eq!(v.moment(12.5), at(Some(2), 5, 5).with_ms(12.5));
        assert!(view(&[node(1, 4, None)]).leader().is_none());
    }

    #[test]
    fn without_a_leader_the_term_is_the_highest() {
        let v = view(&[node(1, 4, None), node(2, 7, None), node(3, 4, Some(1))]);
        assert_eq!(v.moment(0.0), at(None, 7, 7));
        assert_eq!(View::default().moment(0.0), at(None, 0, 0));
    }

    #[test]
    fn a_campaigning_node_shows_in_the_highest_term() {
        // Follower 2, cut off, campaigned three times without pre-vote.
        let v = view(&[node(1, 4, Some(1)), node(2, 7, None), node(3, 4, Some(1))]);
        assert_eq!(v.moment(0.0), at(Some(1), 4, 7));
    }

    #[test]
    fn settled_needs_every_node_in_one_term_behind_one_leader() {
        let agreed = [
            node(1, 4, Some(1)),
            node(2, 4, Some(1)),
            node(3, 4, Some(1)),
        ];
        assert!(view(&agreed).settled(3));
        assert!(!view(&agreed[..2]).settled(3), "a node did not answer");
        let behind = [
            node(1, 4, Some(1)),
            node(2, 3, Some(1)),
            node(3, 4, Some(1)),
        ];
        assert!(!view(&behind).settled(3), "a node in another term");
        let lost = [node(1, 4, Some(1)), node(2, 4, None), node(3, 4, Some(1))];
        assert!(!view(&lost).settled(3), "a node that knows no leader");
        let claimed = [node(1, 4, None), node(2, 4, Some(1)), node(3, 4, Some(1))];
        assert!(!view(&claimed).settled(3), "the named leader does not lead");
    }

    #[test]
    fn cuts_are_named_by_what_they_isolate() {
        assert_eq!(Cut::of(&[], Some(1), WITNESS), Cut::Bridge);
        assert_eq!(Cut::of(&[1], Some(1), WITNESS), Cut::Leader);
        assert_eq!(Cut::of(&[2], Some(1), WITNESS), Cut::Follower);
        assert_eq!(Cut::of(&[2], None, WITNESS), Cut::Follower);
        assert_eq!(Cut::of(&[3], Some(1), WITNESS), Cut::Witness);
        // A witness leading as caretaker is the leader.
        assert_eq!(Cut::of(&[3], Some(3), WITNESS), Cut::Leader);
    }

    #[test]
    fn a_quiet_heal_causes_no_election() {
        // Pre-vote: follower 2 was cut off, asked, was refused, kept term 4.
        let p = PartitionTerms::new(
            1,
            Cut::Follower,
            vec![2],
            (at(Some(1), 4, 4), at(Some(1), 4, 4), at(Some(1), 4, 4)),
            true,
        );
        assert_eq!((p.elections_by_heal, p.elections), (0, 0));
        assert!(!p.deposed && !p.leader_changed);
    }

    #[test]
    fn a_heal_that_deposes_the_healthy_leader() {
        // No pre-vote: follower 2 reached term 7 alone; at the heal leader 1 stepped down
        // and won again in term 8.
        let p = PartitionTerms::new(
            2,
            Cut::Follower,
            vec![2],
            (at(Some(1), 4, 4), at(Some(1), 4, 7), at(Some(1), 8, 8)),
            true,
        );
        assert_eq!(p.elections_by_heal, 4);
        assert_eq!(p.elections, 4);
        assert!(p.deposed, "re-elected, but deposed all the same");
        assert!(!p.leader_changed);
        // ... or node 2 caught up and won.
        let q = PartitionTerms::new(
            3,
            Cut::Follower,
            vec![2],
            (at(Some(1), 4, 4), at(Some(1), 4, 7), at(Some(2), 8, 8)),
            true,
        );
        assert!(q.deposed && q.leader_changed);
    }

    #[test]
    fn replacing_a_cut_off_leader_is_needed_not_caused_by_the_heal() {
        // Leader 1 cut off; 2 won term 5 during the partition; the heal only tells 1.
        let p = PartitionTerms::new(
            4,
            Cut::Leader,
            vec![1],
            (at(Some(1), 4, 4), at(Some(2), 5, 5), at(Some(2), 5, 5)),
            true,
        );
        assert_eq!((p.elections_by_heal, p.elections), (0, 1));
        assert!(!p.deposed);
        // Healed before the others had elected anyone: the leader at the heal is the
        // cut-off one, and electing a new one is not a deposition.
        let q = PartitionTerms::new(
            5,
            Cut::Leader,
            vec![1],
            (at(Some(1), 4, 4), at(Some(1), 4, 5), at(Some(2), 6, 6)),
            true,
        );
        assert_eq!(q.elections_by_heal, 2);
        assert!(!q.deposed && !q.leader_changed);
    }

    #[test]
    fn a_changed_leader_in_the_same_term_is_still_a_deposition() {
        // Not expected from Raft (one leader per term), but a sample can miss the term
        // change of an answer in flight: the leader changing counts either way.
        let p = PartitionTerms::new(
            6,
            Cut::Bridge,
            vec![],
            (at(Some(1), 4, 4), at(Some(1), 4, 4), at(Some(2), 4, 4)),
            false,
        );
        assert!(p.deposed && p.leader_changed);
    }

    #[test]
    fn terms_that_go_back_count_no_election() {
        // A node restarted from an old vote could report a lower term; never negative.
        let p = PartitionTerms::new(
            7,
            Cut::Witness,
            vec![3],
            (at(Some(1), 9, 9), at(Some(1), 9, 9), at(Some(1), 2, 2)),
            true,
        );
        assert_eq!((p.elections_by_heal, p.elections), (0, 0));
        assert!(!p.deposed);
    }

    #[test]
    fn the_summary_adds_up_by_cut() {
        let quiet = |id, cut, isolated: Vec<u64>| {
            PartitionTerms::new(
                id,
                cut,
                isolated,
                (at(Some(1), 4, 4), at(Some(1), 4, 4), at(Some(1), 4, 4)),
                true,
            )
        };
        let deposing = PartitionTerms::new(
            3,
            Cut::Witness,
            vec![3],
            (at(Some(1), 4, 4), at(Some(1), 4, 6), at(Some(2), 7, 7)),
            false,
        );
        let needed = PartitionTerms::new(
            4,
            Cut::Leader,
            vec![1],
            (at(Some(1), 4, 4), at(Some(2), 5, 5), at(Some(2), 5, 5)),
            true,
        );
        let all = [
            quiet(1, Cut::Follower, vec![2]),
            quiet(2, Cut::Bridge, vec![]),
            deposing,
            needed,
        ];
        let s = summarize(&all);
        assert_eq!(s.partitions, 4);
        assert_eq!(s.settled, 3);
        assert_eq!(s.elections_by_heals, 3);
        assert_eq!(s.elections_per_heal, 0.75);
        assert_eq!(s.heals_that_deposed, 1);
        assert_eq!(s.elections_per_partition, 1.0);
        let cuts: Vec<(Cut, u64, u64, u64, u64)> = s
            .by_cut
            .iter()
            .map(|c| {
                (
                    c.cut,
                    c.partitions,
                    c.elections_by_heals,
                    c.heals_that_deposed,
                    c.elections,
                )
            })
            .collect();
        assert_eq!(
            cuts,
            [
                (Cut::Leader, 1, 0, 0, 1),
                (Cut::Follower, 1, 0, 0, 0),
                (Cut::Witness, 1, 3, 1, 3),
                (Cut::Bridge, 1, 0, 0, 0),
            ]
        );
        assert_eq!(summarize(&[]), ElectionSummary::default());
    }

    impl Moment {
        fn with_ms(mut self, at_ms: f64) -> Moment {
            self.at_ms = at_ms;
            self
        }
    }
}
