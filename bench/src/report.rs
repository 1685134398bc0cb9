//! Figures of a failover run, computed from the request records after the run, and their
//! rendering as a table and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::Stop;
use crate::load::{failure_histogram, Failure, Outcome, RequestRecord};

/// Length of the windows that measure throughput and latency before and after a failover.
pub const WINDOW: Duration = Duration::from_secs(3);
/// The "after" window starts this long after the first new acknowledgement, so the burst of
/// retried requests answered together at that moment does not count as throughput.
pub const AFTER_SETTLE: Duration = Duration::from_secs(1);

/// What the round loop observed, in time since the bench's epoch.
#[derive(Clone, Debug)]
pub struct RoundTimes {
    pub index: usize,
    pub stop: Stop,
    pub old_leader: u64,
    /// Whether no attempt had failed for a while before the signal.
    pub quiet_before: bool,
    /// Highest term when the previous round ended (or the load started), at the signal,
    /// and when this round ended (every node ready again).
    pub term_prev: u64,
    pub term_before: u64,
    pub term_ready: u64,
    pub t0: Duration,
    /// A surviving node first named a leader other than the old one.
    pub leader_named: Option<(Duration, u64)>,
    /// A surviving data node first named a data node other than the old one as leader.
    pub data_leader_named: Option<(Duration, u64)>,
    /// The witness was seen leading at some point.
    pub witness_led: bool,
    /// The signalled process exited.
    pub exited: Option<Duration>,
    /// It did not exit by itself in time and was SIGKILLed (a SIGTERM round only).
    pub exit_forced: bool,
    pub restarted: Duration,
    /// Every node ready again with an agreed data leader.
    pub ready: Option<Duration>,
    /// Start of the next round's "before" window (or the end of the load).
    pub next_window: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct RoundReport {
    pub round: usize,
    pub signal: &'static str,
    pub old_leader: u64,
    pub new_leader: Option<u64>,
    pub witness_led: bool,
    pub quiet_before: bool,
    /// Terms used from the signal until every node was ready again (one per election
    /// attempt, refused ones included).
    pub terms_used: u64,
    /// Terms that began between the previous round and this signal: elections nobody
    /// caused (spurious timeouts), which should be 0.
    pub unprovoked_terms: u64,
    /// Signal → first acknowledgement of a request that started after the signal.
    pub gap_ms: Option<f64>,
    /// Signal → first acknowledgement of any request.
    pub first_ack_ms: Option<f64>,
    /// Signal → a surviving node names a new leader (any role).
    pub leader_named_ms: Option<f64>,
    /// Signal → a surviving node names a new data-node leader.
    pub data_leader_named_ms: Option<f64>,
    /// Signal → the process exited.
    pub exit_ms: Option<f64>,
    pub exit_forced: bool,
    /// Restart → every node ready with an agreed data leader.
    pub rejoin_ms: Option<f64>,
    pub requests: RequestCounts,
    /// Requests started while the stopped node restarted and caught up.
    pub rejoin_requests: RequestCounts,
    pub failures: BTreeMap<String, u64>,
    pub rejoin_failures: BTreeMap<String, u64>,
    pub before: Window,
    pub after: Window,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestCounts {
    pub total: u64,
    pub acked: u64,
    /// Failed at least once and were retried (whatever the final outcome).
    pub retried: u64,
    /// Of those, requests whose only failures were refused connections (nothing reached a
    /// node: the client tried the stopped node's address).
    pub retried_refused_only: u64,
    /// Never acknowledged within the retry budget.
    pub failed_for_good: u64,
    /// Answered with a 4xx other than 429 (a bench bug if ever non-zero).
    pub rejected: u64,
    /// Most attempts any one request needed.
    pub max_attempts: u32,
}

impl RequestCounts {
    fn add(&mut self, r: &RequestRecord) {
        self.total += 1;
        self.max_attempts = self.max_attempts.max(r.attempts);
        match r.outcome {
            Outcome::Acked(_) => self.acked += 1,
            Outcome::FailedForGood => self.failed_for_good += 1,
            Outcome::Rejected(..) => self.rejected += 1,
        }
        if !r.failures.is_empty() {
            self.retried += 1;
            if r.failures.iter().all(|(_, f)| *f == Failure::Refused) {
                self.retried_refused_only += 1;
            }
        }
    }

    fn merge(&mut self, o: &RequestCounts) {
        self.total += o.total;
        self.acked += o.acked;
        self.retried += o.retried;
        self.retried_refused_only += o.retried_refused_only;
        self.failed_for_good += o.failed_for_good;
        self.rejected += o.rejected;
        self.max_attempts = self.max_attempts.max(o.max_attempts);
    }
}

/// Acknowledged throughput and latency over a window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Window {
    pub events_per_s: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// Whole milliseconds (finer would be noise next to the bench's 10 ms request spacing).
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round()
}

fn window(records: &[RequestRecord], from: Duration, to: Duration, batch: u32) -> Window {
    let mut latencies: Vec<Duration> = records
        .iter()
        .filter(|r| r.acked() && r.end >= from && r.end < to)
        .map(|r| r.end - r.start)
        .collect();
    latencies.sort();
    let secs = (to - from).as_secs_f64();
    Window {
        events_per_s: (latencies.len() as f64 * f64::from(batch) / secs).round(),
        latency_p50_ms: percentile(&latencies, 50.0).map(ms),
        latency_p99_ms: percentile(&latencies, 99.0).map(ms),
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn round_report(t: &RoundTimes, records: &[RequestRecord], batch: u32) -> RoundReport {
    let since_t0 = |d: Duration| ms(d.saturating_sub(t.t0));
    let gap = records
        .iter()
        .filter(|r| r.acked() && r.start >= t.t0)
        .map(|r| r.end)
        .min();
    let first_ack = records
        .iter()
        .filter(|r| r.acked() && r.end >= t.t0)
        .map(|r| r.end)
        .min();
    let before_from = t.t0.saturating_sub(WINDOW);
    let mut requests = RequestCounts::default();
    let mut rejoin_requests = RequestCounts::default();
    let mut in_round = Vec::new();
    let mut in_rejoin = Vec::new();
    for r in records {
        if r.start >= before_from && r.start < t.restarted {
            requests.add(r);
            in_round.push(r);
        } else if r.start >= t.restarted && r.start < t.next_window {
            rejoin_requests.add(r);
            in_rejoin.push(r);
        }
    }
    let after = match gap {
        Some(g) => window(records, g + AFTER_SETTLE, g + AFTER_SETTLE + WINDOW, batch),
        None => Window::default(),
    };
    RoundReport {
        round: t.index + 1,
        signal: t.stop.name(),
        old_leader: t.old_leader,
        new_leader: t.data_leader_named.map(|(_, l)| l),
        witness_led: t.witness_led,
        quiet_before: t.quiet_before,
        terms_used: t.term_ready.saturating_sub(t.term_before),
        unprovoked_terms: t.term_before.saturating_sub(t.term_prev),
        gap_ms: gap.map(since_t0),
        first_ack_ms: first_ack.map(since_t0),
        leader_named_ms: t.leader_named.map(|(d, _)| since_t0(d)),
        data_leader_named_ms: t.data_leader_named.map(|(d, _)| since_t0(d)),
        exit_ms: t.exited.map(since_t0),
        exit_forced: t.exit_forced,
        rejoin_ms: t.ready.map(|r| ms(r.saturating_sub(t.restarted))),
        requests,
        rejoin_requests,
        failures: failure_histogram(in_round),
        rejoin_failures: failure_histogram(in_rejoin),
        before: window(records, before_from, t.t0, batch),
        after,
    }
}

/// Median, p95 and max of one figure over the rounds of one signal.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Spread {
    pub n: usize,
    pub median: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

fn spread(values: impl IntoIterator<Item = Option<f64>>) -> Spread {
    let mut v: Vec<f64> = values.into_iter().flatten().collect();
    v.sort_by(f64::total_cmp);
    Spread {
        n: v.len(),
        median: median(&v),
        p95: percentile(&v, 95.0),
        max: v.last().copied(),
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SignalSummary {
    pub signal: &'static str,
    pub rounds: usize,
    /// Rounds in which no request that started after the signal was acknowledged.
    pub rounds_without_recovery: usize,
    pub gap_ms: Spread,
    pub first_ack_ms: Spread,
    pub leader_named_ms: Spread,
    pub data_leader_named_ms: Spread,
    pub exit_ms: Spread,
    pub rejoin_ms: Spread,
    pub rounds_witness_led: usize,
    /// Terms used per failover: median and max.
    pub terms_used: Spread,
    pub unprovoked_terms: u64,
    pub requests: RequestCounts,
    pub rejoin_requests: RequestCounts,
    pub failures: BTreeMap<String, u64>,
    pub rejoin_failures: BTreeMap<String, u64>,
    pub before_events_per_s: Option<f64>,
    pub after_events_per_s: Option<f64>,
    pub before_latency_p50_ms: Option<f64>,
    pub after_latency_p50_ms: Option<f64>,
    /// The replaced active/passive product's 15–25 s failover over this median gap.
    pub speedup_vs_active_passive: Option<(f64, f64)>,
}

pub fn summarize(stop: Stop, rounds: &[RoundReport]) -> Option<SignalSummary> {
    let mine: Vec<&RoundReport> = rounds.iter().filter(|r| r.signal == stop.name()).collect();
    if mine.is_empty() {
        return None;
    }
    let mean = |f: &dyn Fn(&RoundReport) -> Option<f64>| {
        let v: Vec<f64> = mine.iter().filter_map(|r| f(r)).collect();
        (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64).round())
    };
    let mut requests = RequestCounts::default();
    let mut rejoin_requests = RequestCounts::default();
    let mut failures = BTreeMap::new();
    let mut rejoin_failures = BTreeMap::new();
    for r in &mine {
        requests.merge(&r.requests);
        rejoin_requests.merge(&r.rejoin_requests);
        for (k, v) in &r.failures {
            *failures.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &r.rejoin_failures {
            *rejoin_failures.entry(k.clone()).or_insert(0) += v;
        }
    }
    let gap_ms = spread(mine.iter().map(|r| r.gap_ms));
    let speedup = gap_ms.median.filter(|m| *m > 0.0).map(|m| {
        (
            (15_000.0 / m * 10.0).round() / 10.0,
            (25_000.0 / m * 10.0).round() / 10.0,
        )
    });
    Some(SignalSummary {
        signal: stop.name(),
        rounds: mine.len(),
        rounds_without_recovery: mine.iter().filter(|r| r.gap_ms.is_none()).count(),
        gap_ms,
        first_ack_ms: spread(mine.iter().map(|r| r.first_ack_ms)),
        leader_named_ms: spread(mine.iter().map(|r| r.leader_named_ms)),
        data_leader_named_ms: spread(mine.iter().map(|r| r.data_leader_named_ms)),
        exit_ms: spread(mine.iter().map(|r| r.exit_ms)),
        rejoin_ms: spread(mine.iter().map(|r| r.rejoin_ms)),
        rounds_witness_led: mine.iter().filter(|r| r.witness_led).count(),
        terms_used: spread(mine.iter().map(|r| Some(r.terms_used as f64))),
        unprovoked_terms: mine.iter().map(|r| r.unprovoked_terms).sum(),
        requests,
        rejoin_requests,
        failures,
        rejoin_failures,
        before_events_per_s: mean(&|r| Some(r.before.events_per_s)),
        after_events_per_s: mean(&|r| Some(r.after.events_per_s).filter(|_| r.gap_ms.is_some())),
        before_latency_p50_ms: mean(&|r| r.before.latency_p50_ms),
        after_latency_p50_ms: mean(&|r| r.after.latency_p50_ms),
        speedup_vs_active_passive: speedup,
    })
}

/// The end-of-run check that nothing acknowledged was lost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verification {
    pub requests: u64,
    pub acked_requests: u64,
    pub acked_events: u64,
    pub sent_events: u64,
    /// `SELECT COUNT(*) FROM events`, strong.
    pub store_count: u64,
    /// Distinct bench event ids listed from the store.
    pub store_ids: u64,
    /// Acknowledged ids missing from the store (must be 0).
    pub acked_missing: u64,
    pub acked_missing_examples: Vec<String>,
    /// Ids in the store that the bench never sent (must be 0).
    pub unknown_ids: u64,
    /// Events of never-acknowledged requests that were counted anyway (allowed: their
    /// outcome was unknown to the client).
    pub unacked_but_counted: u64,
    /// Sum of `requests` over the aggregates of each data node (in-memory state).
    pub aggregate_requests: BTreeMap<u64, u64>,
    /// Whether the data nodes' state digests agreed at the same applied index.
    pub digests_agree: Option<bool>,
    pub problems: Vec<String>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub date_utc: String,
    pub cores: usize,
    pub build_profile: &'static str,
    pub rounds_per_signal: u32,
    pub writers: u32,
    pub rate_events_per_s: u32,
    pub batch_events: u32,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub timings_are_defaults: bool,
    pub attempt_timeout_ms: u64,
    pub retry_for_ms: u64,
    pub skipped_ticks: u64,
    pub dir: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub run: RunInfo,
    pub summary: Vec<SignalSummary>,
    pub verification: Verification,
    pub rounds: Vec<RoundReport>,
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}", v / 1000.0))
}

impl Report {
    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let r = &self.run;
        let _ = writeln!(
            o,
            "\ntally-bench failover — {} round(s) per signal, {} writers, {} events/s in batches of {}",
            r.rounds_per_signal, r.writers, r.rate_events_per_s, r.batch_events
        );
        let _ = writeln!(
            o,
            "{} · {} build · {} cores · [raft] heartbeat {} ms, election {}–{} ms{}",
            r.date_utc,
            r.build_profile,
            r.cores,
            r.heartbeat_ms,
            r.election_min_ms,
            r.election_max_ms,
            if r.timings_are_defaults {
                " = product defaults"
            } else {
                ""
            }
        );
        let _ = writeln!(
            o,
            "\n{:>3} {:<7} {:>6} {:>7} {:>7} {:>7} {:>7} {:>4} {:>5} {:>6} {:>6} {:>5} {:>5} {:>6} {:>6} {:>6}",
            "#", "signal", "leader", "gap_ms", "ack_ms", "elect", "data_l", "wit", "terms", "exit", "rejoin",
            "reqs", "retry", "refusd", "failed", "ev/s→"
        );
        for x in &self.rounds {
            let _ = writeln!(
                o,
                "{:>3} {:<7} {:>6} {:>7} {:>7} {:>7} {:>7} {:>4} {:>5} {:>6} {:>6} {:>5} {:>5} {:>6} {:>6} {:>6}",
                x.round,
                x.signal,
                format!(
                    "{}→{}",
                    x.old_leader,
                    x.new_leader.map_or("?".into(), |l| l.to_string())
                ),
                opt(x.gap_ms),
                opt(x.first_ack_ms),
                opt(x.leader_named_ms),
                opt(x.data_leader_named_ms),
                if x.witness_led { "yes" } else { "" },
                x.terms_used,
                format!("{}{}", opt(x.exit_ms), if x.exit_forced { "!" } else { "" }),
                opt(x.rejoin_ms),
                x.requests.total,
                x.requests.retried,
                x.requests.retried_refused_only,
                x.requests.failed_for_good,
                format!("{:.0}→{:.0}", x.before.events_per_s, x.after.events_per_s),
            );
        }
        let _ = writeln!(
            o,
            "\n(gap: signal → first ack of a request started after it; ack: → first ack of any \
             request; elect/data_l: → a survivor names a new leader / a new data-node leader; \
             wit: the witness led; terms: terms begun until all ready (one per election \
             attempt); exit: → process gone (! = had to be SIGKILLed); rejoin: \
             restart → all ready; reqs/retry/refusd/failed: requests started from 3 s before \
             the signal to the restart / retried / retried only after refused connections / \
             never acknowledged; ev/s: acknowledged events/s before → after)"
        );
        for s in &self.summary {
            let _ = writeln!(o, "\n{} — {} round(s)", s.signal, s.rounds);
            let _ = writeln!(
                o,
                "  write gap        median {} s   p95 {} s   max {} s{}",
                secs(s.gap_ms.median),
                secs(s.gap_ms.p95),
                secs(s.gap_ms.max),
                if s.rounds_without_recovery > 0 {
                    format!(
                        "   ({} round(s) never recovered!)",
                        s.rounds_without_recovery
                    )
                } else {
                    String::new()
                }
            );
            let _ = writeln!(
                o,
                "  first ack (any)  median {} s   p95 {} s   max {} s",
                secs(s.first_ack_ms.median),
                secs(s.first_ack_ms.p95),
                secs(s.first_ack_ms.max)
            );
            let _ = writeln!(
                o,
                "  new leader named median {} s; data-node leader named median {} s; witness led in {} of {} rounds",
                secs(s.leader_named_ms.median),
                secs(s.data_leader_named_ms.median),
                s.rounds_witness_led,
                s.rounds
            );
            let _ = writeln!(
                o,
                "  terms per round  median {} max {} (one per election attempt); unprovoked elections between rounds: {}",
                opt(s.terms_used.median),
                opt(s.terms_used.max),
                s.unprovoked_terms
            );
            if s.signal == Stop::Term.name() {
                let _ = writeln!(
                    o,
                    "  process exit     median {} s   max {} s",
                    secs(s.exit_ms.median),
                    secs(s.exit_ms.max)
                );
            }
            let q = &s.requests;
            let _ = writeln!(
                o,
                "  requests         {} started around the signal: {} retried ({} only after refused connections; at most {} attempts), {} failed for good, {} rejected",
                q.total, q.retried, q.retried_refused_only, q.max_attempts, q.failed_for_good, q.rejected
            );
            let j = &s.rejoin_requests;
            let _ = writeln!(
                o,
                "  while rejoining  {} started: {} retried ({} only refused), {} failed for good; rejoin median {} s",
                j.total,
                j.retried,
                j.retried_refused_only,
                j.failed_for_good,
                secs(s.rejoin_ms.median)
            );
            for (label, failures) in [
                ("failed attempts ", &s.failures),
                ("  while rejoining", &s.rejoin_failures),
            ] {
                if !failures.is_empty() {
                    let list: Vec<String> =
                        failures.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
                    let _ = writeln!(o, "  {label} {}", list.join(", "));
                }
            }
            let _ = writeln!(
                o,
                "  throughput       {} → {} events/s acknowledged; latency p50 {} → {} ms",
                opt(s.before_events_per_s),
                opt(s.after_events_per_s),
                opt(s.before_latency_p50_ms),
                opt(s.after_latency_p50_ms)
            );
            if let Some((lo, hi)) = s.speedup_vs_active_passive {
                let _ = writeln!(
                    o,
                    "  vs active/passive (15–25 s failover): {lo}–{hi}× shorter"
                );
            }
        }
        let v = &self.verification;
        let _ = writeln!(
            o,
            "\nverification: {} of {} requests acknowledged ({} events); record store holds {} \
             (strong COUNT), {} distinct bench ids listed; acknowledged but missing: {}; \
             unknown ids: {}; counted though never acknowledged: {}",
            v.acked_requests,
            v.requests,
            v.acked_events,
            v.store_count,
            v.store_ids,
            v.acked_missing,
            v.unknown_ids,
            v.unacked_but_counted
        );
        let aggs: Vec<String> = v
            .aggregate_requests
            .iter()
            .map(|(n, c)| format!("node {n}: {c}"))
            .collect();
        let _ = writeln!(
            o,
            "aggregates (requests, in-memory state): {}; state digests agree: {}",
            aggs.join(", "),
            v.digests_agree.map_or("unknown".into(), |b| b.to_string())
        );
        if v.ok() {
            let _ = writeln!(
                o,
                "NOTHING LOST: every acknowledged event is counted, once."
            );
        } else {
            for p in &v.problems {
                let _ = writeln!(o, "PROBLEM: {p}");
            }
        }
        if let Some(d) = &r.dir {
            let _ = writeln!(o, "configs, data and node logs kept in {d}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(start_ms: u64, end_ms: u64, outcome: Outcome, failures: Vec<Failure>) -> RequestRecord {
        RequestRecord {
            writer: 0,
            seq: start_ms,
            start: Duration::from_millis(start_ms),
            end: Duration::from_millis(end_ms),
            attempts: failures.len() as u32 + 1,
            outcome,
            failures: failures.into_iter().map(|f| (0, f)).collect(),
        }
    }

    #[test]
    fn gap_counts_only_requests_started_after_the_signal() {
        let t = RoundTimes {
            index: 0,
            stop: Stop::Kill,
            old_leader: 1,
            quiet_before: true,
            term_prev: 1,
            term_before: 1,
            term_ready: 2,
            t0: Duration::from_millis(10_000),
            leader_named: None,
            data_leader_named: Some((Duration::from_millis(10_800), 2)),
            witness_led: false,
            exited: Some(Duration::from_millis(10_001)),
            exit_forced: false,
            restarted: Duration::from_millis(20_000),
            ready: Some(Duration::from_millis(20_300)),
            next_window: Duration::from_millis(25_000),
        };
        let refused = || Failure::Refused;
        let no_leader = || Failure::Status(503, "no_leader".into());
        let records = vec![
            rec(8_000, 8_004, Outcome::Acked(1), vec![]),
            // Started before the signal, answered after it: counts for "first ack (any)".
            rec(9_990, 10_500, Outcome::Acked(2), vec![no_leader()]),
            rec(
                10_100,
                10_900,
                Outcome::Acked(3),
                vec![refused(), no_leader()],
            ),
            rec(10_200, 10_850, Outcome::Acked(3), vec![refused()]),
            rec(10_300, 40_300, Outcome::FailedForGood, vec![no_leader()]),
            // Rejoin phase.
            rec(20_100, 20_150, Outcome::Acked(9), vec![no_leader()]),
        ];
        let r = round_report(&t, &records, 10);
        assert_eq!(r.gap_ms, Some(850.0));
        assert_eq!(r.first_ack_ms, Some(500.0));
        assert_eq!(r.terms_used, 1);
        assert_eq!(r.unprovoked_terms, 0);
        assert_eq!(r.requests.total, 5); // started from t0 - 3 s until the restart
        assert_eq!(r.requests.retried, 4);
        assert_eq!(r.requests.retried_refused_only, 1);
        assert_eq!(r.requests.failed_for_good, 1);
        assert_eq!(r.rejoin_requests.total, 1);
        assert_eq!(r.failures["503 no_leader @n1"], 3);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=20).collect();
        assert_eq!(percentile(&v, 50.0), Some(10));
        assert_eq!(percentile(&v, 95.0), Some(19));
        assert_eq!(percentile(&v, 100.0), Some(20));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
        assert_eq!(median(&[1.0, 2.0]), Some(1.5));
    }
}
