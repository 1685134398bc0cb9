//! The checkers. Each looks at the history (and what the runner read after healing) and
//! lists every anomaly it finds; the run is valid only if none does.
//!
//! Soundness rests on three sets per event id, built from the history: *attempted* (some
//! write carrying it was invoked), *acknowledged* (some write carrying it returned ok) and
//! *failed for certain* (every write carrying it returned a definite refusal).

use std::collections::{BTreeMap, HashMap};

use crate::history::{Op, OpType, F, NEMESIS};
use crate::results::{Anomaly, CheckerResult, MAX_LISTED};
use crate::workload::parse_event_id;

/// Per event id (client, seq): times and outcomes, from the history.
#[derive(Clone, Copy, Debug)]
struct IdFacts {
    /// Earliest invoke of a write carrying it (ms since start).
    first_invoke: f64,
    /// Earliest ok completion of a write carrying it.
    first_ack: Option<f64>,
    /// Some write carrying it did not end in a definite refusal.
    maybe_applied: bool,
    /// History index of the first write carrying it.
    op_index: u64,
}

/// What the history says about writes, indexed by event id.
pub struct WriteFacts {
    ids: HashMap<(u32, u64), IdFacts>,
}

impl WriteFacts {
    pub fn from_history(history: &[Op]) -> WriteFacts {
        let mut ids: HashMap<(u32, u64), IdFacts> = HashMap::new();
        for op in history.iter().filter(|o| o.f == F::Write) {
            let Some(b) = op.batch else { continue };
            for seq in b.first..b.first + u64::from(b.count) {
                let e = ids.entry((b.client, seq)).or_insert(IdFacts {
                    first_invoke: op.time_ms,
                    first_ack: None,
                    maybe_applied: false,
                    op_index: op.index,
                });
                match op.kind {
                    OpType::Invoke => e.first_invoke = e.first_invoke.min(op.time_ms),
                    OpType::Ok => {
                        e.maybe_applied = true;
                        e.first_ack = Some(e.first_ack.map_or(op.time_ms, |t| t.min(op.time_ms)));
                    }
                    OpType::Info => e.maybe_applied = true,
                    OpType::Fail => {}
                }
            }
        }
        // An invoke with no completion at all (the run ended mid-request) may have applied.
        let mut open: HashMap<(u32, u64, u32, u32), bool> = HashMap::new();
        for op in history.iter().filter(|o| o.f == F::Write) {
            if let Some(b) = op.batch {
                let key = (b.client, b.first, b.count, b.attempt);
                if op.kind == OpType::Invoke {
                    open.insert(key, b.replay);
                } else {
                    open.remove(&key);
                }
            }
        }
        for (client, first, count, _) in open.keys() {
            for seq in *first..*first + u64::from(*count) {
                if let Some(e) = ids.get_mut(&(*client, seq)) {
                    e.maybe_applied = true;
                }
            }
        }
        WriteFacts { ids }
    }

    pub fn attempted(&self) -> u64 {
        self.ids.len() as u64
    }

    pub fn acked(&self) -> u64 {
        self.ids.values().filter(|f| f.first_ack.is_some()).count() as u64
    }
}

struct Found {
    count: u64,
    listed: Vec<Anomaly>,
}

impl Found {
    fn new() -> Found {
        Found {
            count: 0,
            listed: Vec::new(),
        }
    }

    fn push(&mut self, kind: &str, description: String, op_index: Option<u64>) {
        self.count += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(Anomaly {
                kind: kind.into(),
                description,
                op_index,
            });
        }
    }

    fn result(self, name: &str, summary: String) -> CheckerResult {
        CheckerResult {
            name: name.into(),
            valid: self.count == 0,
            summary,
            anomaly_count: self.count,
            anomalies: self.listed,
        }
    }
}

/// What [`set_full`] found, counted per kind of event id (its result lists at most
/// [`MAX_LISTED`] anomalies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetFullCounts {
    /// Distinct event ids that some write carried.
    pub attempted: u64,
    /// Distinct event ids that some write got acknowledged.
    pub acked: u64,
    /// Rows listed from the store.
    pub rows: u64,
    /// Distinct sent event ids present in the store.
    pub present: u64,
    /// Acknowledged ids missing from the store.
    pub lost: u64,
    /// Sent ids present more than once.
    pub duplicated: u64,
    /// Ids never acknowledged (unknown outcome) but present: allowed.
    pub recovered: u64,
    /// Present though every write of them was refused.
    pub failed_but_present: u64,
    /// Rows whose id was never sent.
    pub unexpected: u64,
}

/// set-full over the record store: `store_ids` is every `event_id` row of this run's
/// events (one entry per row, so a duplicate row appears twice).
pub fn set_full(tag: &str, facts: &WriteFacts, store_ids: &[String]) -> CheckerResult {
    set_full_counted(tag, facts, store_ids).0
}

/// [`set_full`], and how many ids of each kind it found.
pub fn set_full_counted(
    tag: &str,
    facts: &WriteFacts,
    store_ids: &[String],
) -> (CheckerResult, SetFullCounts) {
    let mut found = Found::new();
    let mut rows: HashMap<(u32, u64), u32> = HashMap::new();
    for id in store_ids {
        match parse_event_id(tag, id) {
            Some(key) if facts.ids.contains_key(&key) => *rows.entry(key).or_default() += 1,
            _ => found.push(
                "unexpected",
                format!("event {id:?} is in the store but was never sent"),
                None,
            ),
        }
    }
    let mut lost = 0u64;
    let mut recovered = 0u64;
    let mut duplicated = 0u64;
    let mut failed_but_present = 0u64;
    let mut keys: Vec<_> = facts.ids.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        let f = facts.ids[&key];
        let n = rows.get(&key).copied().unwrap_or(0);
        let id = crate::workload::event_id(tag, key.0, key.1);
        if n > 1 {
            duplicated += 1;
            found.push(
                "duplicated",
                format!("event {id} is in the store {n} times"),
                Some(f.op_index),
            );
        }
        match (f.first_ack, n) {
            (Some(t), 0) => {
                lost += 1;
                found.push(
                    "lost",
                    format!(
                        "event {id} was acknowledged at {:.3} s but is not in the store",
                        t / 1000.0
                    ),
                    Some(f.op_index),
                );
            }
            (None, n) if n > 0 && !f.maybe_applied => {
                failed_but_present += 1;
                found.push(
                    "failed-but-present",
                    format!("event {id} is in the store though every write of it was refused"),
                    Some(f.op_index),
                )
            }
            (None, n) if n > 0 => recovered += 1,
            _ => {}
        }
    }
    let counts = SetFullCounts {
        attempted: facts.attempted(),
        acked: facts.acked(),
        rows: store_ids.len() as u64,
        present: rows.len() as u64,
        lost,
        duplicated,
        recovered,
        failed_but_present,
        unexpected: store_ids.len() as u64 - rows.values().map(|&n| u64::from(n)).sum::<u64>(),
    };
    let summary = format!(
        "{} attempted, {} acknowledged, {} rows in the store; lost {lost}, duplicated {duplicated}, \
         recovered (unknown outcome, present) {recovered}, unexpected {}",
        counts.attempted, counts.acked, counts.rows, counts.unexpected
    );
    (found.result("set-full", summary), counts)
}

/// Counter bounds: every final count (per replica, and the store's) lies between the
/// acknowledged and the attempted events. `counts` are `(what, count)`.
pub fn counter(facts: &WriteFacts, counts: &[(String, Option<u64>)]) -> CheckerResult {
    let mut found = Found::new();
    let (lo, hi) = (facts.acked(), facts.attempted());
    for (what, count) in counts {
        match count {
            None => found.push(
                "no-final-read",
                format!("{what}: no answer after healing"),
                None,
            ),
            Some(c) if *c < lo => found.push(
                "counted-below-acknowledged",
                format!("{what} counts {c} events but {lo} were acknowledged ({} missing)", lo - c),
                None,
            ),
            Some(c) if *c > hi => found.push(
                "counted-above-attempted",
                format!(
                    "{what} counts {c} events but only {hi} distinct events were ever sent ({} counted twice or invented)",
                    c - hi
                ),
                None,
            ),
            Some(_) => {}
        }
    }
    let shown: Vec<String> = counts
        .iter()
        .map(|(w, c)| format!("{w}={}", c.map_or("-".into(), |c| c.to_string())))
        .collect();
    found.result(
        "counter",
        format!(
            "acknowledged {lo} ≤ counted ≤ attempted {hi}: {}",
            shown.join(", ")
        ),
    )
}

/// Linearizable count reads: a read never misses a write acknowledged before it began,
/// never counts more than was attempted before it ended, and never goes back behind a read
/// that ended before it began.
pub fn linearizable_reads(history: &[Op], facts: &WriteFacts) -> CheckerResult {
    let mut found = Found::new();
    let mut acks: Vec<f64> = facts.ids.values().filter_map(|f| f.first_ack).collect();
    let mut invokes: Vec<f64> = facts.ids.values().map(|f| f.first_invoke).collect();
    acks.sort_by(f64::total_cmp);
    invokes.sort_by(f64::total_cmp);
    let before = |v: &[f64], t: f64| v.partition_point(|x| *x < t) as u64;

    // (invoke time, completion time, count, history index of the completion, f)
    let mut invoked_at: HashMap<(crate::history::Process, F), f64> = HashMap::new();
    let mut reads: Vec<(f64, f64, u64, u64, F)> = Vec::new();
    for op in history.iter().filter(|o| matches!(o.f, F::Read | F::Sql)) {
        match op.kind {
            OpType::Invoke => {
                invoked_at.insert((op.process, op.f), op.time_ms);
            }
            _ => {
                let Some(t0) = invoked_at.remove(&(op.process, op.f)) else {
                    continue;
                };
                if let (OpType::Ok, Some(c)) = (op.kind, op.count) {
                    reads.push((t0, op.time_ms, c, op.index, op.f));
                }
            }
        }
    }
    for &(t0, t1, c, index, f) in &reads {
        let lo = before(&acks, t0);
        let hi = before(&invokes, t1);
        let what = if f == F::Sql {
            "strong SQL"
        } else {
            "linearizable read"
        };
        if c < lo {
            found.push(
                "stale-read",
                format!(
                    "{what} at {:.3}–{:.3} s counted {c}, but {lo} events were acknowledged before it began",
                    t0 / 1000.0,
                    t1 / 1000.0
                ),
                Some(index),
            );
        }
        if c > hi {
            found.push(
                "read-above-attempted",
                format!(
                    "{what} at {:.3}–{:.3} s counted {c}, but only {hi} distinct events had been sent by then",
                    t0 / 1000.0,
                    t1 / 1000.0
                ),
                Some(index),
            );
        }
    }
    // Monotonic in real time: sweep reads by invoke time, with the largest count of every
    // read that completed before.
    let mut by_end = reads.clone();
    by_end.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut by_start = reads.clone();
    by_start.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best: Option<(u64, u64, f64)> = None;
    let mut j = 0;
    for &(t0, _, c, index, _) in &by_start {
        while j < by_end.len() && by_end[j].1 < t0 {
            if best.is_none_or(|(bc, _, _)| by_end[j].2 > bc) {
                best = Some((by_end[j].2, by_end[j].3, by_end[j].1));
            }
            j += 1;
        }
        if let Some((bc, bi, bt)) = best {
            if c < bc {
                found.push(
                    "non-monotonic-read",
                    format!(
                        "read (op {index}) began at {:.3} s and counted {c}, but read op {bi} had counted {bc} by {:.3} s",
                        t0 / 1000.0,
                        bt / 1000.0
                    ),
                    Some(index),
                );
            }
        }
    }
    let n_sql = reads.iter().filter(|r| r.4 == F::Sql).count();
    found.result(
        "linearizable-reads",
        format!(
            "{} linearizable reads and {n_sql} strong SQL reads checked against {} acknowledgements",
            reads.len() - n_sql,
            acks.len()
        ),
    )
}

/// Replica digests after healing: `digests` maps data node → `(applied_index, digest)`.
pub fn digests(digests: &BTreeMap<u64, Option<(u64, String)>>) -> CheckerResult {
    let mut found = Found::new();
    let answered: Vec<(u64, u64, &str)> = digests
        .iter()
        .filter_map(|(id, d)| d.as_ref().map(|(i, h)| (*id, *i, h.as_str())))
        .collect();
    for (id, d) in digests {
        if d.is_none() {
            found.push(
                "no-digest",
                format!("data node {id} gave no digest after healing"),
                None,
            );
        }
    }
    if let Some(&(first, index, hash)) = answered.first() {
        for &(id, i, h) in &answered[1..] {
            if i != index {
                found.push(
                    "replicas-not-converged",
                    format!("node {first} applied {index} but node {id} applied {i} after healing"),
                    None,
                );
            } else if h != hash {
                found.push(
                    "digest-mismatch",
                    format!("at applied index {index}, node {first} has digest {hash} and node {id} has {h}"),
                    None,
                );
            }
        }
    }
    let shown: Vec<String> = answered
        .iter()
        .map(|(id, i, h)| format!("node {id} @{i} {}", &h[..h.len().min(12)]))
        .collect();
    found.result("digests", format!("after healing: {}", shown.join(", ")))
}

/// usage tables vs a `GROUP BY` over `events`: `diffs` maps table → rows in the symmetric
/// difference (`None`: the query failed).
pub fn usage(diffs: &[(String, Result<u64, String>)]) -> CheckerResult {
    let mut found = Found::new();
    for (table, d) in diffs {
        match d {
            Ok(0) => {}
            Ok(n) => found.push(
                "usage-mismatch",
                format!("{table} differs from a GROUP BY over events in {n} rows"),
                None,
            ),
            Err(e) => found.push("usage-unchecked", format!("{table}: {e}"), None),
        }
    }
    let shown: Vec<String> = diffs
        .iter()
        .map(|(t, d)| match d {
            Ok(n) => format!("{t}: {n} rows differ"),
            Err(_) => format!("{t}: not checked"),
        })
        .collect();
    found.result("usage", shown.join(", "))
}

/// The dedup window after clock jumps: every re-send of the run's first acknowledged batch
/// that the nemesis made while a node's clock was a year ahead must be reported as
/// duplicates only. A year-ahead ingest time would have expired the window (one hour)
/// and counted them again. With clock faults in the history, at least one probe must
/// have been answered, or the window went unchecked.
pub fn dedup_window(history: &[Op]) -> CheckerResult {
    let mut found = Found::new();
    let clock_faults = history
        .iter()
        .filter(|o| o.f == F::StartFault && o.kind == OpType::Info)
        .filter(|o| o.fault.as_ref().is_some_and(|f| f.kind == "clock"))
        .count();
    let (mut sent, mut answered) = (0u64, 0u64);
    for op in history
        .iter()
        .filter(|o| o.process == NEMESIS && o.f == F::Write)
    {
        let Some(b) = op.batch else { continue };
        match op.kind {
            OpType::Invoke => sent += 1,
            OpType::Ok => {
                answered += 1;
                let duplicates = op.duplicates.unwrap_or(0);
                if duplicates != b.count {
                    found.push(
                        "dedup-forgotten",
                        format!(
                            "a re-send of client {}'s first batch (events {}..{}) at {:.3} s counted {} of its {} events again: the dedup window had forgotten them",
                            b.client,
                            b.first,
                            b.first + u64::from(b.count),
                            op.time_ms / 1000.0,
                            b.count.saturating_sub(duplicates),
                            b.count
                        ),
                        Some(op.index),
                    );
                }
            }
            _ => {}
        }
    }
    if clock_faults > 0 && answered == 0 {
        found.push(
            "dedup-unchecked",
            format!("{clock_faults} clock faults, but no re-send during one was answered"),
            None,
        );
    }
    let summary = if clock_faults == 0 {
        "no clock faults: nothing re-sent".to_string()
    } else {
        format!(
            "{clock_faults} clock faults; {answered} of {sent} re-sends of the run's first acknowledged batch answered, each must count as duplicates only"
        )
    };
    found.result("dedup-window", summary)
}

/// Things the runner itself saw go wrong (a node that exited on its own, a cluster that did
/// not settle after healing).
pub fn runner(problems: &[(String, String)]) -> CheckerResult {
    let mut found = Found::new();
    for (kind, what) in problems {
        found.push(kind, what.clone(), None);
    }
    found.result(
        "cluster",
        if problems.is_empty() {
            "every node stayed up unless the nemesis stopped it, and the cluster settled after healing".into()
        } else {
            format!("{} problems", problems.len())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Batch, Fault, Process};

    const TAG: &str = "t";

    fn op(index: u64, t: f64, kind: OpType, f: F, batch: Option<Batch>, count: Option<u64>) -> Op {
        let mut o = Op::new(Process::Client(0), kind, f);
        o.index = index;
        o.time_ms = t;
        o.batch = batch;
        o.count = count;
        o
    }

    fn b(first: u64, count: u32) -> Option<Batch> {
        Some(Batch {
            client: 0,
            first,
            count,
            attempt: 0,
            replay: false,
        })
    }

    fn ids(seqs: &[u64]) -> Vec<String> {
        seqs.iter()
            .map(|s| crate::workload::event_id(TAG, 0, *s))
            .collect()
    }

    fn history() -> Vec<Op> {
        vec![
            op(0, 0.0, OpType::Invoke, F::Write, b(0, 2), None),
            op(1, 10.0, OpType::Ok, F::Write, b(0, 2), None),
            op(2, 20.0, OpType::Invoke, F::Write, b(2, 2), None),
            op(3, 30.0, OpType::Info, F::Write, b(2, 2), None),
            op(4, 40.0, OpType::Invoke, F::Write, b(4, 1), None),
            op(5, 50.0, OpType::Fail, F::Write, b(4, 1), None),
            op(6, 60.0, OpType::Invoke, F::Read, None, None),
            op(7, 70.0, OpType::Ok, F::Read, None, Some(2)),
        ]
    }

    #[test]
    fn set_full_classifies_every_id() {
        let facts = WriteFacts::from_history(&history());
        assert_eq!((facts.attempted(), facts.acked()), (5, 2));
        let ok = set_full(TAG, &facts, &ids(&[0, 1, 2]));
        assert!(ok.valid, "{ok:?}");
        let bad = set_full(TAG, &facts, &ids(&[0, 0, 4, 9]));
        let kinds: Vec<&str> = bad.anomalies.iter().map(|a| a.kind.as_str()).collect();
        assert!(!bad.valid);
        for k in ["unexpected", "duplicated", "lost", "failed-but-present"] {
            assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
        }
    }

    #[test]
    fn set_full_counts_every_kind() {
        let facts = WriteFacts::from_history(&history());
        let (_, c) = set_full_counted(TAG, &facts, &ids(&[0, 0, 2, 4, 9]));
        assert_eq!(
            c,
            SetFullCounts {
                attempted: 5,
                acked: 2,
                rows: 5,
                present: 3,
                lost: 1,
                duplicated: 1,
                recovered: 1,
                failed_but_present: 1,
                unexpected: 1,
            }
        );
    }

    #[test]
    fn counter_bounds() {
        let facts = WriteFacts::from_history(&history());
        assert!(counter(&facts, &[("a".into(), Some(2)), ("b".into(), Some(5))]).valid);
        let low = counter(&facts, &[("a".into(), Some(1))]);
        assert_eq!(low.anomalies[0].kind, "counted-below-acknowledged");
        let high = counter(&facts, &[("a".into(), Some(6))]);
        assert_eq!(high.anomalies[0].kind, "counted-above-attempted");
    }

    #[test]
    fn stale_and_backward_reads_are_caught() {
        let mut h = history();
        assert!(linearizable_reads(&h, &WriteFacts::from_history(&h)).valid);
        h.push(op(8, 80.0, OpType::Invoke, F::Sql, None, None));
        h.push(op(9, 90.0, OpType::Ok, F::Sql, None, Some(1)));
        let r = linearizable_reads(&h, &WriteFacts::from_history(&h));
        let kinds: Vec<&str> = r.anomalies.iter().map(|a| a.kind.as_str()).collect();
        assert!(kinds.contains(&"stale-read"), "{kinds:?}");
        assert!(kinds.contains(&"non-monotonic-read"), "{kinds:?}");
        h.push(op(10, 100.0, OpType::Invoke, F::Read, None, None));
        h.push(op(11, 110.0, OpType::Ok, F::Read, None, Some(9)));
        let r = linearizable_reads(&h, &WriteFacts::from_history(&h));
        assert!(r.anomalies.iter().any(|a| a.kind == "read-above-attempted"));
    }

    #[test]
    fn a_re_send_after_a_clock_jump_must_be_all_duplicates() {
        let clock = Fault {
            id: 1,
            kind: "clock".into(),
            nodes: vec![1],
            description: "wall clock of leader 1 365 days ahead".into(),
        };
        let mut start = op(10, 100.0, OpType::Info, F::StartFault, None, None);
        start.process = NEMESIS;
        start.fault = Some(clock);
        let probe = |index: u64, kind: OpType, duplicates: Option<u32>| {
            let mut o = op(index, 200.0, kind, F::Write, b(0, 2), None);
            o.process = NEMESIS;
            o.duplicates = duplicates;
            o
        };
        let mut h = history();
        assert!(dedup_window(&h).valid, "no clock faults, nothing to check");
        h.push(start);
        let unchecked = dedup_window(&h);
        assert_eq!(unchecked.anomalies[0].kind, "dedup-unchecked");
        h.push(probe(11, OpType::Invoke, None));
        h.push(probe(12, OpType::Info, None));
        assert!(
            !dedup_window(&h).valid,
            "an unanswered probe checks nothing"
        );
        h.push(probe(13, OpType::Invoke, None));
        h.push(probe(14, OpType::Ok, Some(2)));
        let ok = dedup_window(&h);
        assert!(ok.valid, "{ok:?}");
        h.push(probe(15, OpType::Invoke, None));
        h.push(probe(16, OpType::Ok, Some(0)));
        let bad = dedup_window(&h);
        assert_eq!(bad.anomalies[0].kind, "dedup-forgotten");
        assert_eq!(bad.anomalies[0].op_index, Some(16));
        // A client's replay is not a probe.
        let mut h = history();
        h.push(op(17, 300.0, OpType::Ok, F::Write, b(0, 2), None));
        assert!(dedup_window(&h).valid);
    }

    #[test]
    fn digests_must_agree() {
        let mut d = BTreeMap::new();
        d.insert(1, Some((10, "aa".to_string())));
        d.insert(2, Some((10, "aa".to_string())));
        assert!(digests(&d).valid);
        d.insert(2, Some((10, "bb".to_string())));
        assert_eq!(digests(&d).anomalies[0].kind, "digest-mismatch");
        d.insert(2, None);
        assert!(!digests(&d).valid);
    }
}
