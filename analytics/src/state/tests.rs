use super::*;
use crate::aggregate::{
    KeyColumn, Measures, DAY_RETENTION_MS, HOUR_RETENTION_MS, MINUTE_RETENTION_MS,
};
use crate::dedup::DEDUP_WINDOW_MS;
use crate::event::{Event, Kind};
use crate::overflow::OTHER;

/// 2024-05-01T12:00:00Z
const T0: i64 = 1_714_564_800_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

fn ev(id: &str, ts_ms: i64, api: &str) -> Event {
    Event {
        event_id: id.into(),
        ts_ms,
        api_name: api.into(),
        api_version: "v1".into(),
        response_code: Some(200),
        ..Event::default()
    }
}

fn entry(ingest_ms: i64, requests: Vec<Vec<Event>>) -> IngestBatch {
    IngestBatch {
        ingest_ms,
        requests,
    }
}

fn outcome(accepted: u32, duplicates: u32) -> BatchOutcome {
    BatchOutcome {
        accepted,
        duplicates,
    }
}

fn total_requests(state: &State, granularity: Granularity) -> u64 {
    let query = AggregateQuery {
        group_by: vec![],
        ..AggregateQuery::new(granularity)
    };
    state
        .query(&query)
        .iter()
        .map(|r| r.measures.requests)
        .sum()
}

#[test]
fn duplicates_inside_request_entry_and_window_are_acknowledged_not_counted() {
    let mut state = State::new();
    let outcomes = state.apply(
        1,
        &entry(
            T0,
            vec![
                vec![ev("a", T0, "p"), ev("a", T0, "p"), ev("b", T0, "p")],
                vec![ev("b", T0, "p"), ev("c", T0, "p")],
                vec![],
            ],
        ),
    );
    assert_eq!(outcomes, [outcome(3, 1), outcome(2, 1), outcome(0, 0)]);
    let outcomes = state.apply(
        2,
        &entry(T0 + 1000, vec![vec![ev("c", T0, "p"), ev("d", T0, "p")]]),
    );
    assert_eq!(outcomes, [outcome(2, 1)]);
    assert_eq!(total_requests(&state, Granularity::Minute), 4);
    assert_eq!(state.stats().events_applied, 4);
    assert_eq!(state.stats().dedup_ids, 4);
    assert_eq!(state.applied_index(), 2);
}

#[test]
fn dedup_window_expires_by_ingest_time() {
    let mut state = State::new();
    state.apply(1, &entry(T0, vec![vec![ev("a", T0, "p")]]));
    // Exactly one window later the id is still remembered.
    let o = state.apply(
        2,
        &entry(T0 + DEDUP_WINDOW_MS, vec![vec![ev("a", T0, "p")]]),
    );
    assert_eq!(o, [outcome(1, 1)]);
    // One millisecond more and it is forgotten: the retry counts again (documented).
    let o = state.apply(
        3,
        &entry(T0 + DEDUP_WINDOW_MS + 1, vec![vec![ev("a", T0, "p")]]),
    );
    assert_eq!(o, [outcome(1, 0)]);
    assert_eq!(total_requests(&state, Granularity::Hour), 2);
    // The re-counted id is remembered from its new first-count time.
    let o = state.apply(
        4,
        &entry(T0 + 2 * DEDUP_WINDOW_MS, vec![vec![ev("a", T0, "p")]]),
    );
    assert_eq!(o, [outcome(1, 1)]);
}

#[test]
fn ingest_time_going_backwards_does_not_rewind_expiry() {
    let mut state = State::new();
    state.apply(1, &entry(T0, vec![vec![ev("a", T0, "p")]]));
    state.apply(
        2,
        &entry(T0 + DEDUP_WINDOW_MS + 5, vec![vec![ev("b", T0, "p")]]),
    );
    assert_eq!(state.stats().dedup_ids, 1, "a expired");
    // A new leader with a clock 10 s behind: ids are stamped with the high-water time,
    // so "c" lives a full window from the newest time seen.
    let skewed = T0 + DEDUP_WINDOW_MS + 5 - 10_000;
    let o = state.apply(
        3,
        &entry(skewed, vec![vec![ev("a", T0, "p"), ev("c", T0, "p")]]),
    );
    assert_eq!(o, [outcome(2, 0)]);
    assert_eq!(state.analytic.high_water_ms, Some(T0 + DEDUP_WINDOW_MS + 5));
    let later = T0 + 2 * DEDUP_WINDOW_MS + 5;
    let o = state.apply(4, &entry(later, vec![vec![ev("c", T0, "p")]]));
    assert_eq!(
        o,
        [outcome(1, 1)],
        "still inside the window measured from the high water"
    );
}

#[test]
fn dedup_cap_evicts_oldest_first() {
    let mut state = State::with_dedup_cap(3);
    let events = ["a", "b", "c", "d"].map(|id| ev(id, T0, "p")).to_vec();
    let o = state.apply(1, &entry(T0, vec![events]));
    assert_eq!(o, [outcome(4, 0)]);
    assert_eq!(state.stats().dedup_ids, 3);
    // "a" was evicted by the cap: it counts again; "d" is still remembered.
    let o = state.apply(
        2,
        &entry(T0, vec![vec![ev("d", T0, "p"), ev("a", T0, "p")]]),
    );
    assert_eq!(o, [outcome(2, 1)]);
    assert_eq!(total_requests(&state, Granularity::Day), 5);
    // Adding "a" evicted "b", the oldest remaining.
    let o = state.apply(
        3,
        &entry(T0, vec![vec![ev("b", T0, "p"), ev("c", T0, "p")]]),
    );
    assert_eq!(
        o,
        [outcome(2, 0)],
        "b evicted, then c evicted by b's return"
    );
}

#[test]
fn production_state_uses_the_constants() {
    let state = State::new();
    assert_eq!(
        state.analytic.dedup,
        DedupWindow::with_max_ids(crate::DEDUP_MAX_IDS)
    );
    assert_eq!(crate::DEDUP_MAX_IDS, 2_000_000);
    assert_eq!(DEDUP_WINDOW_MS, 3_600_000);
    assert_eq!(MINUTE_RETENTION_MS, 48 * HOUR);
    assert_eq!(HOUR_RETENTION_MS, 90 * DAY);
    assert_eq!(DAY_RETENTION_MS, 3 * 365 * DAY);
}

#[test]
fn retention_drops_old_buckets_per_granularity() {
    let mut state = State::new();
    state.apply(1, &entry(T0, vec![vec![ev("a", T0, "p")]]));
    assert_eq!(
        state.stats(),
        StateStats {
            buckets_minute: 1,
            buckets_hour: 1,
            buckets_day: 1,
            dedup_ids: 1,
            events_applied: 1,
            ..StateStats::default()
        }
    );
    // The minute bucket of T0 starts at T0; it survives while T0 >= now - 48h.
    state.apply(2, &entry(T0 + MINUTE_RETENTION_MS, vec![]));
    assert_eq!(state.stats().buckets_minute, 1);
    state.apply(3, &entry(T0 + MINUTE_RETENTION_MS + 1, vec![]));
    assert_eq!(state.stats().buckets_minute, 0);
    assert_eq!(state.stats().buckets_hour, 1);
    assert_eq!(state.stats().dedup_ids, 0, "dedup window expired as well");

    state.apply(4, &entry(T0 + HOUR_RETENTION_MS + 1, vec![]));
    assert_eq!(
        (state.stats().buckets_hour, state.stats().buckets_day),
        (0, 1)
    );
    state.apply(5, &entry(T0 + DAY_RETENTION_MS + 1, vec![]));
    assert_eq!(state.stats().buckets_day, 0);
    assert_eq!(
        state.stats().events_applied,
        1,
        "history counter is not evicted"
    );
}

#[test]
fn late_events_skip_granularities_already_past_retention() {
    let mut state = State::new();
    let now = T0 + 10 * DAY;
    // Ten days late: too old for minute buckets, fine for hour and day.
    state.apply(1, &entry(now, vec![vec![ev("late", T0, "p")]]));
    assert_eq!(state.stats().buckets_minute, 0);
    assert_eq!(total_requests(&state, Granularity::Hour), 1);
    assert_eq!(total_requests(&state, Granularity::Day), 1);
}

/// A small fixed data set over two hours, two APIs, two versions, two methods.
fn populated() -> State {
    let mut state = State::new();
    let mut events = Vec::new();
    let mut push =
        |id: &str, ts: i64, api: &str, version: &str, method: Option<&str>, code: u16| {
            events.push(Event {
                method: method.map(str::to_string),
                api_version: version.into(),
                response_code: Some(code),
                response_time_ms: Some(u64::from(code) / 10),
                ..ev(id, ts, api)
            });
        };
    push("1", T0, "pets", "v1", Some("GET"), 200);
    push("2", T0 + 30_000, "pets", "v1", Some("POST"), 404);
    push("3", T0 + 59_999, "pets", "v2", Some("GET"), 500);
    push("4", T0 + MINUTE, "pets", "v1", Some("GET"), 200);
    push("5", T0 + HOUR - 1, "store", "v1", None, 200);
    push("6", T0 + HOUR, "store", "v1", None, 503);
    state.apply(1, &entry(T0 + 2 * HOUR, vec![events]));
    state
}

#[test]
fn query_groups_sorts_and_merges() {
    let state = populated();
    let all = AggregateQuery::new(Granularity::Minute);
    let rows = state.query(&all);
    let shape: Vec<_> = rows
        .iter()
        .map(|r| {
            let method = &r.group[5].1;
            (
                r.bucket_ms,
                r.group[1].1.as_str(),
                r.group[2].1.as_str(),
                method.as_str(),
                r.measures.requests,
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (T0, "pets", "v1", "GET", 1),
            (T0, "pets", "v1", "POST", 1),
            (T0, "pets", "v2", "GET", 1),
            (T0 + MINUTE, "pets", "v1", "GET", 1),
            (T0 + HOUR - MINUTE, "store", "v1", "", 1),
            (T0 + HOUR, "store", "v1", "", 1),
        ]
    );
    assert_eq!(
        rows[0].group.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        KeyColumn::ALL,
        "group columns in group_by order"
    );

    let by_api_hour = AggregateQuery {
        group_by: vec![KeyColumn::ApiName],
        ..AggregateQuery::new(Granularity::Hour)
    };
    let rows = state.query(&by_api_hour);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].bucket_ms, T0);
    assert_eq!(rows[0].group, [(KeyColumn::ApiName, "pets".to_string())]);
    assert_eq!(
        rows[0].measures,
        Measures {
            requests: 4,
            errors_4xx: 1,
            errors_5xx: 1,
            latency_count: 4,
            latency_sum_ms: 20 + 40 + 50 + 20,
            latency_min_ms: Some(20),
            latency_max_ms: Some(50),
            ..Measures::default()
        }
    );
    assert_eq!(
        (rows[1].bucket_ms, rows[1].group[0].1.as_str()),
        (T0, "store")
    );
    assert_eq!(
        (rows[2].bucket_ms, rows[2].measures.errors_5xx),
        (T0 + HOUR, 1)
    );

    // Group order follows group_by, and sorting follows the group values.
    let method_then_api = AggregateQuery {
        group_by: vec![KeyColumn::Method, KeyColumn::ApiName],
        ..AggregateQuery::new(Granularity::Day)
    };
    let groups: Vec<_> = state
        .query(&method_then_api)
        .into_iter()
        .map(|r| {
            (
                r.group[0].1.clone(),
                r.group[1].1.clone(),
                r.measures.requests,
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("".to_string(), "store".to_string(), 2),
            ("GET".to_string(), "pets".to_string(), 3),
            ("POST".to_string(), "pets".to_string(), 1),
        ]
    );

    let nothing = AggregateQuery {
        group_by: vec![],
        ..AggregateQuery::new(Granularity::Day)
    };
    let rows = state.query(&nothing);
    assert_eq!(rows.len(), 1);
    assert!(rows[0].group.is_empty());
    assert_eq!(rows[0].measures.requests, 6);
}

#[test]
fn query_filters_and_exclusive_to() {
    let state = populated();
    let minute = |from, to, api: Option<&str>, version: Option<&str>| AggregateQuery {
        from_ms: from,
        to_ms: to,
        tenant: None,
        api: api.map(str::to_string),
        version: version.map(str::to_string),
        group_by: vec![],
        ..AggregateQuery::new(Granularity::Minute)
    };
    let buckets = |q: &AggregateQuery| -> Vec<(i64, u64)> {
        state
            .query(q)
            .iter()
            .map(|r| (r.bucket_ms, r.measures.requests))
            .collect()
    };
    assert_eq!(
        buckets(&minute(Some(T0), Some(T0 + MINUTE), None, None)),
        [(T0, 3)]
    );
    assert_eq!(
        buckets(&minute(Some(T0), Some(T0 + MINUTE + 1), None, None)),
        [(T0, 3), (T0 + MINUTE, 1)]
    );
    // `from` compares with the bucket start: a bucket starting before it is excluded.
    assert_eq!(
        buckets(&minute(Some(T0 + 1), Some(T0 + 2 * MINUTE), None, None)),
        [(T0 + MINUTE, 1)]
    );
    assert_eq!(
        buckets(&minute(Some(T0 + HOUR), None, None, None)),
        [(T0 + HOUR, 1)]
    );
    assert_eq!(buckets(&minute(None, Some(T0), None, None)), []);
    assert_eq!(
        buckets(&minute(Some(T0 + 5), Some(T0), None, None)),
        [],
        "empty range"
    );
    assert_eq!(
        buckets(&minute(None, None, Some("pets"), Some("v2"))),
        [(T0, 1)]
    );
    assert_eq!(
        buckets(&minute(None, None, None, Some("v1"))),
        [
            (T0, 2),
            (T0 + MINUTE, 1),
            (T0 + HOUR - MINUTE, 1),
            (T0 + HOUR, 1)
        ]
    );
    assert_eq!(buckets(&minute(None, None, Some("nope"), None)), []);
}

#[test]
fn digest_tracks_every_part_of_the_state() {
    let base = populated();
    let digest = base.digest();
    assert_eq!(digest.len(), 64);
    assert_eq!(digest, base.clone().digest(), "deterministic");
    assert_ne!(digest, State::new().digest());

    // One measure of one row changed by one.
    let mut tweaked = base.clone();
    let mut buckets = tweaked.analytic.hour.to_map();
    let measures = buckets
        .values_mut()
        .next()
        .unwrap()
        .values_mut()
        .next()
        .unwrap();
    measures.bytes_sum += 1;
    tweaked.analytic.hour = Series::from_buckets(buckets);
    assert_ne!(tweaked.digest(), digest);

    // One more remembered id and nothing else (only reachable through the window itself,
    // since apply always counts a new id somewhere).
    let mut more_ids = base.clone();
    more_ids.analytic.dedup.insert("extra", T0);
    assert_ne!(more_ids.digest(), digest);

    // The high-water ingest time alone.
    let mut later = base.clone();
    later.apply(2, &entry(T0 + 2 * HOUR + 1, vec![]));
    assert_ne!(later.digest(), digest);

    // The applied index alone does not change it (documented).
    let mut same = base.clone();
    same.applied_index = 99;
    assert_eq!(same.digest(), digest);
}

#[test]
fn a_fault_changes_the_digest_but_not_request_counts() {
    let mut state = populated();
    let before = state.digest();
    let fault = Event {
        kind: Kind::Fault,
        response_code: None,
        ..ev("f", T0, "pets")
    };
    state.apply(2, &entry(T0 + 2 * HOUR, vec![vec![fault]]));
    assert_ne!(state.digest(), before);
    assert_eq!(total_requests(&state, Granularity::Day), 6);
}

#[test]
fn sink_queue_follows_counted_events_and_survives_snapshots() {
    let mut state = State::new();
    let batch = |ids: &[&str]| IngestBatch {
        ingest_ms: 1_800_000_000_000,
        requests: vec![ids
            .iter()
            .map(|id| Event {
                event_id: (*id).into(),
                ts_ms: 1_800_000_000_000,
                api_name: "A".into(),
                api_version: "1".into(),
                response_code: Some(200),
                ..Event::default()
            })
            .collect()],
    };
    state.apply(1, &batch(&["a", "b"]));
    state.apply(2, &batch(&["b", "c"]));
    let (pending, upto) = state.sink_pending(0, 100);
    let ids: Vec<_> = pending
        .iter()
        .map(|p| (p.log_index, p.event.event_id.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec![(1, "a"), (1, "b"), (2, "c")],
        "duplicates are not queued"
    );
    assert_eq!(upto, 2);

    let restored = State::decode_snapshot(&state.encode_snapshot()).unwrap();
    assert_eq!(restored.sink_pending(0, 100), state.sink_pending(0, 100));

    state.advance_sink(3, 1);
    let status = state.pending_status();
    assert_eq!((status.cursor, status.pending_events), (1, 1));
    assert_eq!(state.applied_index(), 3);
    let (pending, upto) = state.sink_pending(1, 100);
    assert_eq!(pending.len(), 1);
    assert_eq!(upto, 3);
}

fn caps(keys: u32, tenants: u32) -> KeyCaps {
    KeyCaps {
        max_keys_per_tenant_bucket: keys,
        max_tenants_per_bucket: tenants,
        ..KeyCaps::UNLIMITED
    }
}

fn tenant_event(id: &str, tenant: &str, resource: &str, ts_ms: i64) -> Event {
    Event {
        tenant: tenant.into(),
        resource: Some(resource.into()),
        ..ev(id, ts_ms, "pets")
    }
}

/// Rows of one granularity as `(bucket_ms, tenant, resource, requests)`.
fn rows(state: &State, granularity: Granularity) -> Vec<(i64, String, String, u64)> {
    let query = AggregateQuery {
        group_by: vec![KeyColumn::Tenant, KeyColumn::Resource],
        ..AggregateQuery::new(granularity)
    };
    state
        .query(&query)
        .into_iter()
        .map(|r| {
            (
                r.bucket_ms,
                r.group[0].1.clone(),
                r.group[1].1.clone(),
                r.measures.requests,
            )
        })
        .collect()
}

#[test]
fn a_tenants_keys_past_the_cap_fold_into_its_overflow_key() {
    let mut state = State::new();
    // 10 distinct resources in one minute, cap 3: three rows of their own, 7 folded.
    let events: Vec<Event> = (0..10)
        .map(|i| tenant_event(&format!("e{i}"), "acme", &format!("/r{i}"), T0 + i))
        .collect();
    state.apply_capped(1, &entry(T0, vec![events]), &caps(3, 10));
    let minute = rows(&state, Granularity::Minute);
    assert_eq!(
        minute,
        vec![
            (T0, "acme".into(), "/r0".into(), 1),
            (T0, "acme".into(), "/r1".into(), 1),
            (T0, "acme".into(), "/r2".into(), 1),
            (T0, "acme".into(), OTHER.into(), 7),
        ]
    );
    let stats = state.stats();
    assert_eq!(stats.overflow_events.minute, 7);
    assert_eq!(stats.overflow_events.hour, 7);
    assert_eq!(stats.overflow_events.day, 7);
    assert_eq!(
        (
            stats.overflow_keys_minute,
            stats.overflow_keys_hour,
            stats.overflow_keys_day
        ),
        (1, 1, 1)
    );
    for granularity in Granularity::ALL {
        assert_eq!(total_requests(&state, granularity), 10, "{granularity:?}");
    }
    // The overflow key's other fields are all "__other__".
    let all = state.query(&AggregateQuery::new(Granularity::Minute));
    let overflow: Vec<_> = all.iter().filter(|r| r.group[4].1 == OTHER).collect();
    assert_eq!(overflow.len(), 1);
    assert!(
        overflow[0].group[1..].iter().all(|(_, v)| v == OTHER),
        "{overflow:?}"
    );
    // The sink learns where each event was counted.
    let (pending, _) = state.sink_pending(0, 100);
    let folds: Vec<Fold> = pending
        .iter()
        .map(|p| p.folds.get(Granularity::Minute))
        .collect();
    assert_eq!(folds[..3], [Fold::Own; 3]);
    assert_eq!(folds[3..], [Fold::TenantOther; 7]);
}

#[test]
fn the_cap_is_per_bucket_and_per_granularity() {
    let mut state = State::new();
    // Two keys per minute over two minutes of one hour, cap 2: no minute bucket is full,
    // but the hour bucket holds four keys, so two of them fold there.
    let events = vec![
        tenant_event("a", "acme", "/1", T0),
        tenant_event("b", "acme", "/2", T0),
        tenant_event("c", "acme", "/3", T0 + MINUTE),
        tenant_event("d", "acme", "/4", T0 + MINUTE),
    ];
    state.apply_capped(1, &entry(T0 + 2 * MINUTE, vec![events]), &caps(2, 10));
    let stats = state.stats();
    assert_eq!(
        (
            stats.overflow_events.minute,
            stats.overflow_events.hour,
            stats.overflow_events.day
        ),
        (0, 2, 2)
    );
    assert_eq!(rows(&state, Granularity::Minute).len(), 4);
    assert_eq!(
        rows(&state, Granularity::Hour),
        vec![
            (T0, "acme".into(), "/1".into(), 1),
            (T0, "acme".into(), "/2".into(), 1),
            (T0, "acme".into(), OTHER.into(), 2),
        ]
    );
}

#[test]
fn tenants_past_the_cap_fold_into_the_all_other_key() {
    let mut state = State::new();
    let events: Vec<Event> = (0..6)
        .map(|i| tenant_event(&format!("e{i}"), &format!("t{i}"), "/r", T0))
        .collect();
    state.apply_capped(1, &entry(T0, vec![events]), &caps(100, 2));
    assert_eq!(
        rows(&state, Granularity::Day),
        vec![
            (T0 - T0 % DAY, OTHER.into(), OTHER.into(), 4),
            (T0 - T0 % DAY, "t0".into(), "/r".into(), 1),
            (T0 - T0 % DAY, "t1".into(), "/r".into(), 1),
        ]
    );
    assert_eq!(state.stats().overflow_events.day, 4);
    // A later entry: a known tenant still gets new keys, a new one still folds.
    let more = vec![
        tenant_event("f", "t1", "/s", T0),
        tenant_event("g", "t9", "/s", T0),
    ];
    state.apply_capped(2, &entry(T0, vec![more]), &caps(100, 2));
    let minute = rows(&state, Granularity::Minute);
    assert!(minute.contains(&(T0, "t1".into(), "/s".into(), 1)));
    assert!(minute.contains(&(T0, OTHER.into(), OTHER.into(), 5)));
    assert_eq!(total_requests(&state, Granularity::Minute), 8);
}

#[test]
fn uncapped_apply_is_the_old_behaviour() {
    let events: Vec<Event> = (0..50)
        .map(|i| {
            tenant_event(
                &format!("e{i}"),
                &format!("t{}", i % 7),
                &format!("/r{i}"),
                T0,
            )
        })
        .collect();
    let mut old = State::new();
    old.apply(1, &entry(T0, vec![events.clone()]));
    let mut unlimited = State::new();
    unlimited.apply_capped(1, &entry(T0, vec![events]), &KeyCaps::UNLIMITED);
    assert_eq!(old, unlimited);
    assert_eq!(old.stats().overflow_events, OverflowCounts::default());
    assert_eq!(old.stats().buckets_minute, 50);
}

#[test]
fn the_digest_covers_the_overflow_counters() {
    let mut state = State::new();
    let events: Vec<Event> = (0..4)
        .map(|i| tenant_event(&format!("e{i}"), "acme", &format!("/r{i}"), T0))
        .collect();
    state.apply_capped(1, &entry(T0, vec![events]), &caps(1, 1));
    let digest = state.digest();
    let mut tweaked = state.clone();
    tweaked.analytic.overflow.hour += 1;
    assert_ne!(tweaked.digest(), digest);
    let restored = State::decode_snapshot(&state.encode_snapshot()).unwrap();
    assert_eq!(restored, state);
    assert_eq!(restored.digest(), digest);
    assert_eq!(restored.stats(), state.stats());
    assert_eq!(restored.sink_pending(0, 10), state.sink_pending(0, 10));
}

fn budget(rows: u32) -> KeyCaps {
    KeyCaps {
        max_rows_per_granularity: rows,
        ..KeyCaps::UNLIMITED
    }
}

#[test]
fn past_the_row_budget_new_keys_fold_into_their_tenants_overflow_key() {
    let mut state = State::new();
    // Three minutes, four resources each, budget 5: the first five rows are their own, then
    // each bucket gets (at most) one overflow row of the tenant for everything new.
    let events: Vec<Event> = (0..12)
        .map(|i| {
            let minute = T0 + (i / 4) * MINUTE;
            tenant_event(&format!("e{i}"), "acme", &format!("/r{}", i % 4), minute)
        })
        .collect();
    let outcomes = state.apply_capped(1, &entry(T0 + HOUR, vec![events]), &budget(5));
    assert_eq!(outcomes, [outcome(12, 0)]);
    let minute = rows(&state, Granularity::Minute);
    let other = || String::from(OTHER);
    assert_eq!(
        minute,
        vec![
            (T0, "acme".into(), "/r0".into(), 1),
            (T0, "acme".into(), "/r1".into(), 1),
            (T0, "acme".into(), "/r2".into(), 1),
            (T0, "acme".into(), "/r3".into(), 1),
            (T0 + MINUTE, "acme".into(), "/r0".into(), 1),
            (T0 + MINUTE, "acme".into(), other(), 3),
            (T0 + 2 * MINUTE, "acme".into(), other(), 4),
        ]
    );
    let stats = state.stats();
    assert_eq!(
        stats.buckets_minute, 7,
        "budget 5 + one overflow row of the tenant per later bucket"
    );
    assert_eq!(stats.overflow_events.minute, 7);
    assert_eq!(stats.overflow_keys_minute, 2);
    // Hour and day hold one bucket with four keys: under the budget, nothing folds.
    assert_eq!(stats.buckets_hour, 4);
    assert_eq!(stats.overflow_events.hour, 0);
    // A key the bucket already holds is still counted as itself.
    state.apply_capped(
        2,
        &entry(
            T0 + HOUR,
            vec![vec![tenant_event("x", "acme", "/r1", T0 + 1)]],
        ),
        &budget(5),
    );
    assert_eq!(rows(&state, Granularity::Minute)[1].3, 2);
    // The pending queue says where each event went, for the record store.
    let (pending, _) = state.sink_pending(0, 100);
    assert_eq!(pending[5].folds.get(Granularity::Minute), Fold::TenantOther);
    assert_eq!(pending[5].folds.get(Granularity::Hour), Fold::Own);
}

#[test]
fn the_row_budget_prefers_an_existing_tenant_overflow_row_and_frees_up_with_retention() {
    let mut state = State::new();
    let both = KeyCaps {
        max_keys_per_tenant_bucket: 1,
        max_rows_per_granularity: 2,
        ..KeyCaps::UNLIMITED
    };
    let events = vec![
        tenant_event("a", "acme", "/1", T0),
        tenant_event("b", "acme", "/2", T0),
        tenant_event("c", "acme", "/3", T0),
        tenant_event("d", "beta", "/1", T0),
    ];
    state.apply_capped(1, &entry(T0, vec![events]), &both);
    // acme/1 and acme/__other__ fill the budget; acme/3 joins the tenant's existing
    // overflow row (no new row); beta's new key goes to beta's own overflow row: acme
    // spending the budget does not fold beta's data out of beta.
    let other = || String::from(OTHER);
    assert_eq!(
        rows(&state, Granularity::Minute),
        vec![
            (T0, "acme".into(), "/1".into(), 1),
            (T0, "acme".into(), other(), 2),
            (T0, "beta".into(), other(), 1),
        ]
    );
    // Once retention drops the old minute, new keys have room again.
    let later = T0 + MINUTE_RETENTION_MS + MINUTE;
    state.apply_capped(
        2,
        &entry(later, vec![vec![tenant_event("e", "gamma", "/9", later)]]),
        &both,
    );
    assert_eq!(
        rows(&state, Granularity::Minute),
        vec![(later, "gamma".into(), "/9".into(), 1)]
    );
}

#[test]
fn a_frozen_copy_shares_the_state_and_is_unchanged_by_later_applies() {
    let mut state = State::new();
    let events: Vec<Event> = (0..3_000)
        .map(|i| {
            ev(
                &format!("id-{i}"),
                T0 + (i % 50) * MINUTE,
                &format!("api{}", i % 7),
            )
        })
        .collect();
    state.apply(1, &entry(T0 + HOUR, vec![events]));
    let before = state.encode_snapshot();
    let digest = state.digest();
    let frozen = state.freeze();
    assert!(frozen
        .analytic
        .minute
        .shares_all_buckets_with(&state.analytic.minute));
    assert_eq!(frozen.encode_snapshot(), before);
    assert_eq!(frozen.digest(), digest);
    assert_eq!(frozen.applied_index(), 1);

    state.apply(
        2,
        &entry(
            T0 + HOUR,
            vec![vec![ev("late", T0, "api0"), ev("new", T0, "new")]],
        ),
    );
    state.advance_sink(3, 2);
    assert_ne!(state.digest(), digest);
    assert_eq!(frozen.encode_snapshot(), before, "the copy did not move");
    assert_eq!(frozen.digest(), digest);
    // Only the written bucket was copied: the other 49 minutes are still shared.
    let shared = frozen
        .analytic
        .minute
        .iter()
        .zip(state.analytic.minute.iter())
        .filter(|((_, a), (_, b))| std::ptr::eq(*a, *b))
        .count();
    assert_eq!(shared, 49);
}

#[test]
fn a_bounded_query_answers_up_to_its_cap_and_refuses_beyond() {
    let mut state = State::new();
    // 30 rows at minute granularity: 10 minutes × 3 apis.
    let events: Vec<Event> = (0..30)
        .map(|i| {
            ev(
                &format!("q{i}"),
                T0 + (i / 3) * MINUTE,
                &format!("api{}", i % 3),
            )
        })
        .collect();
    state.apply(1, &entry(T0 + HOUR, vec![events]));
    let all = AggregateQuery::new(Granularity::Minute);
    assert_eq!(state.query_bounded(&all, 30).unwrap().len(), 30);
    assert_eq!(state.query_bounded(&all, 30).unwrap(), state.query(&all));
    for cap in [0, 1, 2, 29] {
        assert!(matches!(
            state.query_bounded(&all, cap),
            Err(AnalyticsError::TooManyRows { max_rows }) if max_rows == cap
        ));
    }
    // The same data grouped coarser, or over a narrower range, fits.
    let per_bucket = AggregateQuery {
        group_by: vec![],
        ..all.clone()
    };
    assert_eq!(state.query_bounded(&per_bucket, 10).unwrap().len(), 10);
    let narrow = AggregateQuery {
        from_ms: Some(T0),
        to_ms: Some(T0 + 2 * MINUTE),
        ..all
    };
    assert_eq!(state.query_bounded(&narrow, 6).unwrap().len(), 6);
}
