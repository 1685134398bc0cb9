//! Property tests for the state machine's core promise: the state is a function of the
//! *set* of distinct events (first occurrence wins), not of how they were split into
//! requests and entries, nor of how often they were re-sent inside the dedup window.

use proptest::prelude::*;
use std::collections::BTreeSet;
use tally_analytics::{
    AggregateQuery, BatchOutcome, Event, Granularity, IngestBatch, KeyCaps, KeyColumn, Kind, State,
};

/// 2024-05-01T12:00:00Z, the proposer's clock in these tests.
const T: i64 = 1_714_564_800_000;
const HOUR: i64 = 3_600_000;

/// One generated event: id from a small pool (so distinct events can share an id), the
/// rest varied enough to land in different buckets and keys.
fn event_strategy(ts_range: std::ops::Range<i64>) -> impl Strategy<Value = Event> {
    (
        0u8..40,
        ts_range,
        0usize..3,
        0usize..3,
        prop::option::of(0usize..2),
        prop::sample::select(vec![200u16, 201, 302, 404, 429, 500, 503]),
        prop::option::of(0u64..5_000),
        prop::option::of(0u64..100_000),
    )
        .prop_map(|(id, ts_ms, api, kind, method, code, latency, size)| {
            let kind = Kind::ALL[kind];
            Event {
                event_id: format!("ev-{id}"),
                ts_ms,
                kind,
                api_name: ["pets", "store", "users"][api].into(),
                api_version: if ts_ms % 2 == 0 { "v1" } else { "v2" }.into(),
                tenant: if api == 2 {
                    "acme.com".into()
                } else {
                    String::new()
                },
                method: method.map(|m| ["GET", "POST"][m].to_string()),
                response_code: (kind == Kind::Request).then_some(code),
                response_time_ms: latency,
                response_size: size,
                ..Event::default()
            }
        })
}

/// A stream, plus how to re-send and split it.
#[derive(Debug, Clone)]
struct Plan {
    stream: Vec<Event>,
    /// For each stream position, raw picks of earlier events to re-send right after it.
    resends: Vec<Vec<usize>>,
    /// Cycled over the sent sequence: 0 = same request, 1 = new request, 2 = new entry.
    cuts: Vec<u8>,
}

fn plan_strategy(ts_range: std::ops::Range<i64>) -> impl Strategy<Value = Plan> {
    prop::collection::vec(event_strategy(ts_range), 1..120).prop_flat_map(|stream| {
        let n = stream.len();
        (
            Just(stream),
            prop::collection::vec(prop::collection::vec(any::<usize>(), 0..3), n),
            prop::collection::vec(0u8..3, 1..64),
        )
            .prop_map(|(stream, resends, cuts)| Plan {
                stream,
                resends,
                cuts,
            })
    })
}

impl Plan {
    /// The sequence actually sent: every event once, in order, with copies of earlier
    /// events inserted after their originals.
    fn sent(&self) -> Vec<Event> {
        let mut sent = Vec::new();
        for (k, event) in self.stream.iter().enumerate() {
            sent.push(event.clone());
            for pick in &self.resends[k] {
                sent.push(self.stream[pick % (k + 1)].clone());
            }
        }
        sent
    }

    /// The sent sequence split into entries of requests.
    fn entries(&self) -> Vec<Vec<Vec<Event>>> {
        let mut entries: Vec<Vec<Vec<Event>>> = vec![vec![vec![]]];
        for (i, event) in self.sent().into_iter().enumerate() {
            match self.cuts[i % self.cuts.len()] {
                1 => entries.last_mut().unwrap().push(vec![]),
                2 => entries.push(vec![vec![]]),
                _ => {}
            }
            entries.last_mut().unwrap().last_mut().unwrap().push(event);
        }
        entries
    }
}

fn apply_all(state: &mut State, entries: &[IngestBatch], first_index: u64) -> Vec<BatchOutcome> {
    let mut outcomes = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        outcomes.extend(state.apply(first_index + i as u64, entry));
    }
    outcomes
}

fn batches(entries: Vec<Vec<Vec<Event>>>, ingest: impl Fn(usize) -> i64) -> Vec<IngestBatch> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, requests)| IngestBatch {
            ingest_ms: ingest(i),
            requests,
        })
        .collect()
}

fn apply_all_capped(state: &mut State, entries: &[IngestBatch], caps: &KeyCaps) {
    for (i, entry) in entries.iter().enumerate() {
        state.apply_capped(1 + i as u64, entry, caps);
    }
}

/// Small caps, so that generated streams hit them often; the row budget is sometimes
/// absent, sometimes tight enough that most new keys go over it.
fn caps_strategy() -> impl Strategy<Value = KeyCaps> {
    (1u32..5, 1u32..3, prop_oneof![Just(u32::MAX), 1u32..40]).prop_map(|(keys, tenants, rows)| {
        KeyCaps {
            max_keys_per_tenant_bucket: keys,
            max_tenants_per_bucket: tenants,
            max_rows_per_granularity: rows,
        }
    })
}

/// Requests per bucket, all keys together.
fn bucket_totals(state: &State, granularity: Granularity) -> Vec<(i64, u64)> {
    state
        .query(&AggregateQuery {
            group_by: vec![],
            ..AggregateQuery::new(granularity)
        })
        .into_iter()
        .map(|r| (r.bucket_ms, r.measures.requests))
        .collect()
}

/// Everything a reader can ask, at every granularity and a few groupings.
fn answers(state: &State) -> Vec<Vec<tally_analytics::AggregateRow>> {
    let mut out = Vec::new();
    for granularity in Granularity::ALL {
        for group_by in [
            KeyColumn::ALL.to_vec(),
            vec![],
            vec![KeyColumn::Method, KeyColumn::ApiName],
        ] {
            out.push(state.query(&AggregateQuery {
                group_by,
                ..AggregateQuery::new(granularity)
            }));
        }
    }
    out
}

/// Applies the original stream as one request in one entry.
fn reference(plan: &Plan, ingest_ms: i64) -> State {
    let mut state = State::new();
    state.apply(
        1,
        &IngestBatch {
            ingest_ms,
            requests: vec![plan.stream.clone()],
        },
    );
    state
}

proptest! {
    /// Any split and any re-sending (same proposer clock) gives the same digest and the
    /// same answers as one entry; outcomes account for every event sent. Event times span
    /// four days, so some fall outside minute retention in every split alike.
    #[test]
    fn split_and_resend_do_not_change_the_state(plan in plan_strategy(T - 4 * 24 * HOUR..T + HOUR)) {
        let expected = reference(&plan, T);
        let mut state = State::new();
        let outcomes = apply_all(&mut state, &batches(plan.entries(), |_| T), 1);

        prop_assert_eq!(state.digest(), expected.digest());
        prop_assert_eq!(answers(&state), answers(&expected));
        prop_assert_eq!(state.stats(), expected.stats());

        let sent = plan.sent().len() as u64;
        let distinct: BTreeSet<_> = plan.stream.iter().map(|e| &e.event_id).collect();
        let accepted: u64 = outcomes.iter().map(|o| u64::from(o.accepted)).sum();
        let duplicates: u64 = outcomes.iter().map(|o| u64::from(o.duplicates)).sum();
        prop_assert_eq!(accepted, sent);
        prop_assert_eq!(accepted - duplicates, distinct.len() as u64);
        prop_assert_eq!(state.stats().events_applied, distinct.len() as u64);
    }

    /// A snapshot taken anywhere, restored and continued, ends where the original does;
    /// and a restored state has the original's digest.
    #[test]
    fn snapshot_restore_is_invisible(
        plan in plan_strategy(T - 4 * 24 * HOUR..T + HOUR),
        at in any::<prop::sample::Index>(),
    ) {
        let entries = batches(plan.entries(), |i| T + i as i64 * 1_000);
        let split = at.index(entries.len() + 1);

        let mut straight = State::new();
        apply_all(&mut straight, &entries, 1);

        let mut first = State::new();
        apply_all(&mut first, &entries[..split], 1);
        let restored = State::decode_snapshot(&first.encode_snapshot()).unwrap();
        prop_assert_eq!(restored.digest(), first.digest());
        prop_assert_eq!(answers(&restored), answers(&first));
        prop_assert_eq!(restored.encode_snapshot(), first.encode_snapshot());

        let mut continued = restored;
        apply_all(&mut continued, &entries[split..], 1 + split as u64);
        prop_assert_eq!(continued.digest(), straight.digest());
        prop_assert_eq!(continued.applied_index(), straight.applied_index());
    }

    /// With the proposer's clock advancing (but staying inside the dedup window and
    /// retention), answers still match one entry. The digest legitimately differs: it
    /// covers the ingest stamps of the dedup window.
    #[test]
    fn advancing_ingest_clock_gives_the_same_answers(
        plan in plan_strategy(T - 40 * HOUR..T + HOUR),
        step in 0i64..20_000,
    ) {
        // Keep the whole advance inside the dedup window: a re-send after the window is
        // (by design) counted again, which is not what this property is about.
        let planned = plan.entries();
        let step = step.min((tally_analytics::DEDUP_WINDOW_MS - 1) / planned.len().max(1) as i64);
        let entries = batches(planned, |i| T + i as i64 * step);
        let mut state = State::new();
        apply_all(&mut state, &entries, 1);
        prop_assert_eq!(answers(&state), answers(&reference(&plan, T)));
    }

    /// With key caps and a row budget, any split and re-sending still gives the state of
    /// one entry; every bucket's totals are those of the uncapped state; no bucket holds
    /// more rows than the caps allow, no granularity more than the budget plus one row per
    /// bucket; and a snapshot restores the capped state exactly.
    #[test]
    fn capped_state_is_split_invariant_and_keeps_totals(
        plan in plan_strategy(T - 4 * 24 * HOUR..T + HOUR),
        caps in caps_strategy(),
    ) {
        let mut one = State::new();
        one.apply_capped(1, &IngestBatch { ingest_ms: T, requests: vec![plan.stream.clone()] }, &caps);
        let mut split = State::new();
        apply_all_capped(&mut split, &batches(plan.entries(), |_| T), &caps);
        prop_assert_eq!(split.digest(), one.digest());
        prop_assert_eq!(answers(&split), answers(&one));
        prop_assert_eq!(split.stats(), one.stats());
        prop_assert_eq!(split.sink_pending(0, usize::MAX).0.len(), one.sink_pending(0, usize::MAX).0.len());

        let uncapped = reference(&plan, T);
        let bound = (caps.max_tenants_per_bucket as usize + 1) * (caps.max_keys_per_tenant_bucket as usize + 1);
        for granularity in Granularity::ALL {
            prop_assert_eq!(bucket_totals(&split, granularity), bucket_totals(&uncapped, granularity));
            let rows = split.query(&AggregateQuery::new(granularity));
            let mut per_bucket = std::collections::BTreeMap::new();
            for row in &rows {
                *per_bucket.entry(row.bucket_ms).or_insert(0usize) += 1;
            }
            prop_assert!(per_bucket.values().all(|&n| n <= bound));
            let budget = caps.max_rows_per_granularity as usize;
            let tenants = caps.max_tenants_per_bucket as usize + 1;
            prop_assert!(rows.len() <= budget.saturating_add(per_bucket.len() * tenants));
        }
        prop_assert_eq!(split.stats().buckets_minute, split.query(&AggregateQuery::new(Granularity::Minute)).len());
        let restored = State::decode_snapshot(&split.encode_snapshot()).unwrap();
        prop_assert_eq!(&restored, &split);
        prop_assert_eq!(restored.digest(), split.digest());
    }

    /// Arbitrary bytes behind valid magic never panic the decoder.
    #[test]
    fn decoding_garbage_is_an_error_not_a_panic(
        tail in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = tally_analytics::SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&tally_analytics::SNAPSHOT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&tail);
        prop_assert!(State::decode_snapshot(&bytes).is_err());
    }

    /// Arbitrary bodies never panic the parser.
    #[test]
    fn parsing_arbitrary_bytes_never_panics(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = tally_analytics::parse_events(&body, tally_analytics::BodyFormat::Json);
        let _ = tally_analytics::parse_events(&body, tally_analytics::BodyFormat::Ndjson);
    }
}
