//! The nemesis: injects one fault at a time (now and then a record-store outage on top of
//! another), holds it, heals it, and records both ends in the history.
//!
//! The clock fault moves one node's wall clock a year ahead (libfaketime; the machine's
//! clock and the node's monotonic clock stay put) and back. Before it heals one, it re-sends
//! the run's first acknowledged batch: a dedup window that the jump emptied would count it
//! again (`checker::dedup_window`).
//!
//! Around every partition it reads each node's Raft term and leader: when the cut is made,
//! just before it heals, and after the heal until the cluster has settled (within the quiet
//! time that follows, so the schedule of faults stays as it was). [`crate::elections`]
//! turns those into the elections each heal caused.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::cluster::{Cluster, DATA_NODES, NODES, WITNESS};
use crate::elections::{Cut, Moment, PartitionTerms, View};
use crate::history::{Fault, Op, OpType, Recorder, F, NEMESIS};
use crate::store::Store;
use crate::workload::Workload;

/// How far the clock nemesis moves a node's wall clock.
pub const CLOCK_JUMP_DAYS: i64 = 365;
/// A clock fault is held at least this long: libfaketime shows a jump within about two
/// seconds, and the jumped node should then lead for a while.
const CLOCK_MIN_HOLD: Duration = Duration::from_secs(5);
/// libfaketime shows a new offset within this long (it rereads its file every second).
const CLOCK_SHOWS_WITHIN: Duration = Duration::from_millis(2_500);
/// Dedup probes per clock fault, at most, until one is answered.
const PROBE_ATTEMPTS: u32 = 3;
/// After a heal, the cluster must look settled at least this long after it before its
/// terms count: a healed node's higher term reaches the leader with the next heartbeat
/// or vote request, so an agreement right at the heal may not last.
const SETTLE_MIN: Duration = Duration::from_millis(1_000);
/// How often a settling cluster is read.
const SETTLE_POLL: Duration = Duration::from_millis(100);
/// One node's status, read for its term, is waited for at most this long.
const VIEW_LIMIT: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Kill,
    Pause,
    Partition,
    Sink,
    Clock,
}

impl Kind {
    pub fn parse_list(list: &str) -> Result<Vec<Kind>> {
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let k = match name {
                "kill" => Kind::Kill,
                "pause" => Kind::Pause,
                "partition" => Kind::Partition,
                "sink" => Kind::Sink,
                "clock" => Kind::Clock,
                "none" => continue,
                other => bail!(
                    "unknown nemesis {other:?}: use kill, pause, partition, sink, clock (comma-separated) or none"
                ),
            };
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        Ok(kinds)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Partition => "partition",
            Kind::Sink => "sink",
            Kind::Clock => "clock",
        }
    }
}

/// A fault in place, and how to heal it.
enum Active {
    Killed(u64),
    Paused(u64),
    Partitioned,
    StoreKilled,
    StorePaused,
    ClockJumped(u64),
}

struct Injected {
    fault: Fault,
    active: Active,
}

/// A partition whose terms are being followed.
struct Watch {
    fault_id: u32,
    cut: Cut,
    isolated: Vec<u64>,
    start: Moment,
    /// Read just before the heal, and when the heal was made.
    heal: Option<(Moment, Instant)>,
}

pub struct Nemesis {
    kinds: Vec<Kind>,
    recorder: Recorder,
    next_id: u32,
    pub injected: u64,
    /// Quiet time between faults and how long one is held, in ms.
    pub quiet_ms: (u64, u64),
    pub hold_ms: (u64, u64),
    /// Sends the dedup probes of clock faults.
    pub probe: Option<Workload>,
    /// What the nemesis saw go wrong, for the `cluster` checker (`(kind, description)`).
    pub findings: Vec<(String, String)>,
    /// The partition in place, or healed and not settled yet.
    watch: Option<Watch>,
    /// Terms and leaders around every partition so far, in the order they healed.
    pub partitions: Vec<PartitionTerms>,
}

impl Nemesis {
    pub fn new(kinds: Vec<Kind>, recorder: Recorder) -> Nemesis {
        Nemesis {
            kinds,
            recorder,
            next_id: 0,
            injected: 0,
            quiet_ms: (1_500, 5_000),
            hold_ms: (1_500, 7_000),
            probe: None,
            findings: Vec::new(),
            watch: None,
            partitions: Vec::new(),
        }
    }

    /// Injects and heals faults until `deadline`; returns with everything healed.
    pub async fn run(
        &mut self,
        rng: &mut StdRng,
        cluster: &mut Cluster,
        store: &mut Store,
        deadline: Instant,
        problems: &mut Vec<(String, String)>,
    ) -> Result<()> {
        if self.kinds.is_empty() {
            tokio::time::sleep_until(deadline.into()).await;
            return Ok(());
        }
        loop {
            let quiet = Duration::from_millis(rng.gen_range(self.quiet_ms.0..=self.quiet_ms.1));
            let next_fault = Instant::now() + quiet;
            if next_fault >= deadline {
                // Whatever has not settled by then is read once the run has healed.
                self.settle(cluster, deadline, true).await;
                tokio::time::sleep_until(deadline.into()).await;
                return Ok(());
            }
            self.settle(cluster, next_fault, false).await;
            tokio::time::sleep_until(next_fault.into()).await;
            let kind = *self.kinds.choose(rng).expect("not empty");
            let mut faults = vec![self.start(kind, rng, cluster, store).await?];
            // A mix: sometimes the record store fails during another fault.
            if kind != Kind::Sink && self.kinds.contains(&Kind::Sink) && rng.gen_bool(0.2) {
                faults.push(self.start(Kind::Sink, rng, cluster, store).await?);
            }
            let mut hold = Duration::from_millis(rng.gen_range(self.hold_ms.0..=self.hold_ms.1));
            if kind == Kind::Clock {
                hold = hold.max(CLOCK_MIN_HOLD);
            }
            let until = (Instant::now() + hold).min(deadline);
            tokio::time::sleep_until(until.into()).await;
            for f in faults.into_iter().rev() {
                self.stop(f, cluster, store).await?;
            }
            problems.append(&mut self.findings);
            // A node that died without the nemesis killing it is a finding; restart it so
            // the run goes on.
            for (id, problem) in cluster.unexpected_exits() {
                problems.push(problem);
                cluster.restart(id)?;
            }
        }
    }

    /// Milliseconds since the run started (the history's clock).
    fn now_ms(&self) -> f64 {
        self.recorder.start().elapsed().as_secs_f64() * 1000.0
    }

    /// The cluster's leader and term now.
    async fn moment(&self, cluster: &Cluster) -> (View, Moment) {
        let view = cluster.view(VIEW_LIMIT).await;
        let moment = view.moment(self.now_ms());
        (view, moment)
    }

    /// After a partition healed: reads the cluster until every node agrees on one leader
    /// and term, at least [`SETTLE_MIN`] after the heal, or until `until`, and records the
    /// partition's terms. With `keep_open`, a cluster not settled by `until` is left for
    /// [`Nemesis::finish`].
    async fn settle(&mut self, cluster: &Cluster, until: Instant, keep_open: bool) {
        let Some(watch) = self.watch.take_if(|w| w.heal.is_some()) else {
            return;
        };
        let Some((_, healed_at)) = watch.heal else {
            return;
        };
        loop {
            let (view, after) = self.moment(cluster).await;
            let settled = view.settled(NODES.len());
            if settled && healed_at.elapsed() >= SETTLE_MIN {
                return self.record_terms(watch, after, true);
            }
            if Instant::now() + SETTLE_POLL >= until {
                if keep_open {
                    self.watch = Some(watch);
                    return;
                }
                return self.record_terms(watch, after, false);
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// At the end of the run, once everything is healed and the cluster has settled: the
    /// terms of a partition healed too late to settle before the time limit.
    pub async fn finish(&mut self, cluster: &Cluster) {
        let Some(watch) = self.watch.take_if(|w| w.heal.is_some()) else {
            return;
        };
        let (view, after) = self.moment(cluster).await;
        self.record_terms(watch, after, view.settled(NODES.len()));
    }

    fn record_terms(&mut self, watch: Watch, after: Moment, settled: bool) {
        let Some((heal, _)) = watch.heal else {
            return;
        };
        self.partitions.push(PartitionTerms::new(
            watch.fault_id,
            watch.cut,
            watch.isolated,
            (watch.start, heal, after),
            settled,
        ));
    }

    fn record(&self, f: F, kind: OpType, fault: &Fault) {
        let mut op = Op::new(NEMESIS, kind, f);
        op.fault = Some(fault.clone());
        self.recorder.record(op);
    }

    async fn start(
        &mut self,
        kind: Kind,
        rng: &mut StdRng,
        cluster: &mut Cluster,
        store: &mut Store,
    ) -> Result<Injected> {
        let leader = cluster.leader().await;
        let data_leader = leader.filter(|l| *l != WITNESS);
        let mut watch = None;
        let (nodes, description, plan) = match kind {
            Kind::Kill | Kind::Pause => {
                let roll = rng.gen_range(0..100);
                let target = match data_leader {
                    Some(l) if roll < 50 => l,
                    _ if roll < 85 => *NODES.choose(rng).expect("nodes"),
                    _ => WITNESS,
                };
                let what = if Some(target) == leader {
                    format!("leader {target}")
                } else if target == WITNESS {
                    format!("witness {target}")
                } else {
                    format!("node {target}")
                };
                let verb = if kind == Kind::Kill {
                    "SIGKILL"
                } else {
                    "SIGSTOP"
                };
                (vec![target], format!("{verb} {what}"), Some(target))
            }
            Kind::Partition => {
                let variants = [
                    "isolate-leader",
                    "isolate-witness",
                    "isolate-data",
                    "bridge",
                ];
                let variant = *variants.choose(rng).expect("variants");
                let (alone, desc) = match (variant, data_leader) {
                    ("isolate-leader", Some(l)) => (vec![l], format!("isolate leader {l}")),
                    ("isolate-witness", _) => (vec![WITNESS], format!("isolate witness {WITNESS}")),
                    ("bridge", _) => (
                        vec![],
                        "bridge: data nodes 1 and 2 cut apart, witness 3 sees both".into(),
                    ),
                    _ => {
                        let d = *DATA_NODES.choose(rng).expect("data nodes");
                        (vec![d], format!("isolate data node {d}"))
                    }
                };
                let (_, start) = self.moment(cluster).await;
                watch = Some(Watch {
                    fault_id: self.next_id + 1,
                    cut: Cut::of(&alone, start.leader, WITNESS),
                    isolated: alone.clone(),
                    start,
                    heal: None,
                });
                if alone.is_empty() {
                    cluster.proxies.cut_between(&[1], &[2]);
                    (vec![1, 2], desc, None)
                } else {
                    let rest: Vec<u64> = NODES
                        .iter()
                        .copied()
                        .filter(|n| !alone.contains(n))
                        .collect();
                    cluster.proxies.cut_between(&alone, &rest);
                    (alone, desc, None)
                }
            }
            Kind::Clock => {
                let target = match data_leader {
                    Some(l) if rng.gen_range(0..100) < 80 => l,
                    _ => *NODES.choose(rng).expect("nodes"),
                };
                let what = if Some(target) == leader {
                    format!("leader {target}")
                } else {
                    format!("node {target}")
                };
                (
                    vec![target],
                    format!("wall clock of {what} {CLOCK_JUMP_DAYS} days ahead (libfaketime)"),
                    Some(target),
                )
            }
            Kind::Sink => (vec![], String::new(), None),
        };
        self.next_id += 1;
        self.injected += 1;
        let mut fault = Fault {
            id: self.next_id,
            kind: kind.name().into(),
            nodes,
            description,
        };
        let active = match kind {
            Kind::Kill => {
                let t = plan.expect("target");
                self.record(F::StartFault, OpType::Invoke, &fault);
                cluster.kill(t)?;
                Active::Killed(t)
            }
            Kind::Pause => {
                let t = plan.expect("target");
                self.record(F::StartFault, OpType::Invoke, &fault);
                cluster.pause(t)?;
                Active::Paused(t)
            }
            Kind::Partition => {
                self.record(F::StartFault, OpType::Invoke, &fault);
                self.watch = watch;
                Active::Partitioned
            }
            Kind::Clock => {
                let t = plan.expect("target");
                // With the kill nemesis too, now and then the node also restarts with its
                // clock ahead: it must not trust that clock once it leads again.
                let restart = self.kinds.contains(&Kind::Kill) && rng.gen_bool(0.3);
                if restart {
                    fault.description += "; then SIGKILL and restart it, its clock still ahead";
                }
                self.record(F::StartFault, OpType::Invoke, &fault);
                cluster.jump_clock(t, CLOCK_JUMP_DAYS)?;
                if restart {
                    tokio::time::sleep(CLOCK_SHOWS_WITHIN).await;
                    cluster.kill(t)?;
                    cluster.restart(t)?;
                }
                Active::ClockJumped(t)
            }
            Kind::Sink => {
                let freeze = rng.gen_bool(0.5);
                fault.description = if freeze {
                    "record store frozen (SIGSTOP)".into()
                } else {
                    "record store killed (SIGKILL), restarted at the end".into()
                };
                self.record(F::StartFault, OpType::Invoke, &fault);
                if freeze {
                    store.pause()?;
                    Active::StorePaused
                } else {
                    store.kill()?;
                    Active::StoreKilled
                }
            }
        };
        self.record(F::StartFault, OpType::Info, &fault);
        Ok(Injected { fault, active })
    }

    async fn stop(&mut self, f: Injected, cluster: &mut Cluster, store: &mut Store) -> Result<()> {
        self.record(F::StopFault, OpType::Invoke, &f.fault);
        match f.active {
            Active::Killed(id) => cluster.restart(id)?,
            Active::Paused(id) => cluster.resume(id)?,
            Active::Partitioned => {
                let (_, heal) = self.moment(cluster).await;
                cluster.proxies.heal();
                if let Some(w) = &mut self.watch {
                    w.heal = Some((heal, Instant::now()));
                }
            }
            Active::StorePaused => store.resume()?,
            Active::StoreKilled => tokio::task::block_in_place(|| store.restart())?,
            Active::ClockJumped(id) => {
                self.check_clock_moved(cluster, id, &f.fault).await;
                self.probe_dedup(cluster, id).await;
                cluster.reset_clocks()?;
            }
        }
        self.record(F::StopFault, OpType::Info, &f.fault);
        Ok(())
    }

    /// A clock fault that did not move the node's clock proves nothing: a finding, unless
    /// the node does not report its clock (a version before clock sampling) or is busy.
    async fn check_clock_moved(&mut self, cluster: &Cluster, id: u64, fault: &Fault) {
        let Some(status) = cluster.status(id, Duration::from_secs(2)).await else {
            return;
        };
        let local = status.clock.local_ms;
        let expected = crate::now_ms() + (CLOCK_JUMP_DAYS - 1) * 86_400_000;
        if local != 0 && local < expected {
            self.findings.push((
                "clock-not-moved".into(),
                format!(
                    "fault {}: node {id}'s wall clock read {local} ms, not {CLOCK_JUMP_DAYS} days ahead; is libfaketime preloaded (see its log)?",
                    fault.id
                ),
            ));
        }
    }

    /// Re-sends the run's first acknowledged batch through node `id` while its clock is
    /// still ahead, until one attempt is answered (at most [`PROBE_ATTEMPTS`]).
    async fn probe_dedup(&self, cluster: &Cluster, id: u64) {
        let (Some(workload), Some(batch)) = (&self.probe, self.recorder.first_acked_batch()) else {
            return;
        };
        let node = (id, cluster.client_addr(id).to_string());
        for _ in 0..PROBE_ATTEMPTS {
            if workload.probe(node.clone(), batch).await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
