use super::*;

fn at(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

fn event(kind: Kind, code: Option<u16>, latency: Option<u64>, size: Option<u64>) -> Event {
    Event {
        kind,
        response_code: code,
        response_time_ms: latency,
        response_size: size,
        ..Event::default()
    }
}

#[test]
fn bucket_boundaries_are_utc_floors() {
    let t = at("2024-03-10T13:47:59.999Z");
    assert_eq!(
        Granularity::Minute.bucket_start(t),
        at("2024-03-10T13:47:00Z")
    );
    assert_eq!(
        Granularity::Hour.bucket_start(t),
        at("2024-03-10T13:00:00Z")
    );
    assert_eq!(Granularity::Day.bucket_start(t), at("2024-03-10T00:00:00Z"));

    // The first instant of a bucket belongs to it; the last one before does not.
    let midnight = at("2024-03-11T00:00:00Z");
    for g in Granularity::ALL {
        assert_eq!(g.bucket_start(midnight), midnight);
        assert_eq!(g.bucket_start(midnight - 1), midnight - g.width_ms());
    }
    // An offset timestamp lands in its UTC bucket, not its local one.
    assert_eq!(
        Granularity::Day.bucket_start(at("2024-03-11T01:30:00+02:00")),
        at("2024-03-10T00:00:00Z")
    );
    // Before 1970 the floor goes down, not toward zero.
    assert_eq!(Granularity::Minute.bucket_start(-1), -60_000);
    assert_eq!(Granularity::Day.bucket_start(-86_400_000), -86_400_000);
    assert_eq!(Granularity::Hour.bucket_start(-3_600_001), -7_200_000);
    // Extremes saturate instead of overflowing.
    assert_eq!(Granularity::Day.bucket_start(i64::MIN), i64::MIN);
    assert_eq!(
        Granularity::Day.bucket_start(i64::MAX),
        i64::MAX - i64::MAX.rem_euclid(DAY_MS)
    );
}

#[test]
fn names_parse_and_print() {
    for g in Granularity::ALL {
        assert_eq!(g.as_str().parse::<Granularity>().unwrap(), g);
        assert_eq!(serde_json::to_value(g).unwrap(), g.as_str());
    }
    for c in KeyColumn::ALL {
        assert_eq!(c.as_str().parse::<KeyColumn>().unwrap(), c);
        assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
    }
    assert!(matches!(
        "Hour".parse::<Granularity>(),
        Err(AnalyticsError::UnknownGranularity(s)) if s == "Hour"
    ));
    assert!("apiName".parse::<KeyColumn>().is_err());
}

#[test]
fn measures_count_by_kind_code_latency_and_size() {
    let mut m = Measures::default();
    m.add(&event(Kind::Request, Some(200), Some(30), Some(1000)));
    m.add(&event(Kind::Request, Some(404), Some(10), None));
    m.add(&event(Kind::Request, Some(499), None, Some(5)));
    m.add(&event(Kind::Request, Some(500), Some(50), None));
    m.add(&event(Kind::Request, Some(399), None, None));
    m.add(&event(Kind::Fault, Some(503), Some(70), None));
    m.add(&event(Kind::Throttle, Some(429), None, Some(7)));
    assert_eq!(
        m,
        Measures {
            requests: 5,
            errors_4xx: 2,
            errors_5xx: 1,
            faults: 1,
            throttled: 1,
            latency_count: 4,
            latency_sum_ms: 160,
            latency_min_ms: Some(10),
            latency_max_ms: Some(70),
            bytes_sum: 1012,
        },
        "status codes count only for requests; latency and bytes for every kind"
    );
}

#[test]
fn measures_merge_and_saturate() {
    let mut a = Measures::default();
    a.add(&event(
        Kind::Request,
        Some(200),
        Some(u64::MAX),
        Some(u64::MAX),
    ));
    a.add(&event(Kind::Request, Some(200), Some(5), Some(1)));
    assert_eq!(a.latency_sum_ms, u64::MAX);
    assert_eq!(a.bytes_sum, u64::MAX);
    assert_eq!(a.latency_min_ms, Some(5));

    let mut no_latency = Measures::default();
    no_latency.add(&event(Kind::Fault, None, None, None));
    let mut merged = no_latency;
    merged.merge(&a);
    assert_eq!(merged.latency_min_ms, Some(5));
    assert_eq!(merged.latency_max_ms, Some(u64::MAX));
    assert_eq!(merged.requests, 2);
    assert_eq!(merged.faults, 1);
    let mut other_way = a;
    other_way.merge(&no_latency);
    assert_eq!(merged, other_way, "merge is commutative");
}

#[test]
fn series_evicts_only_old_buckets_and_tracks_rows() {
    let mut series = Series::default();
    let key = GroupKey::default();
    let other = GroupKey {
        api_name: "b".into(),
        ..GroupKey::default()
    };
    let e = event(Kind::Request, Some(200), None, None);
    series.add(0, &key, &e, &KeyCaps::UNLIMITED);
    series.add(0, &other, &e, &KeyCaps::UNLIMITED);
    series.add(60_000, &key, &e, &KeyCaps::UNLIMITED);
    series.add(60_000, &key, &e, &KeyCaps::UNLIMITED);
    series.add(120_000, &key, &e, &KeyCaps::UNLIMITED);
    assert_eq!(series.rows(), 4);
    series.evict_before(60_000);
    assert_eq!(series.rows(), 2);
    assert_eq!(
        series.iter().map(|(b, _)| b).collect::<Vec<_>>(),
        [60_000, 120_000]
    );
    series.evict_before(i64::MAX);
    assert_eq!(series.rows(), 0);
    assert_eq!(series, Series::default());
}

/// A capped series folds per bucket, keeps its derived bookkeeping through eviction, and
/// rebuilds the same bookkeeping from bare buckets (as a snapshot load does).
#[test]
fn capped_series_folds_per_bucket_and_rebuilds_its_index() {
    let caps = KeyCaps {
        max_keys_per_tenant_bucket: 2,
        max_tenants_per_bucket: 1,
        ..KeyCaps::UNLIMITED
    };
    let key = |tenant: &str, resource: &str| GroupKey {
        tenant: tenant.into(),
        resource: resource.into(),
        ..GroupKey::default()
    };
    let e = event(Kind::Request, Some(200), None, None);
    let mut series = Series::default();
    let mut folds = Vec::new();
    for bucket in [0, 60_000] {
        for (tenant, resource) in [
            ("a", "/1"),
            ("a", "/2"),
            ("a", "/3"),
            ("a", "/4"),
            ("b", "/1"),
        ] {
            folds.push(series.add(bucket, &key(tenant, resource), &e, &caps));
        }
    }
    let per_bucket = [
        Fold::Own,
        Fold::Own,
        Fold::TenantOther,
        Fold::TenantOther,
        Fold::AllOther,
    ];
    assert_eq!(folds, [per_bucket, per_bucket].concat());
    // Per bucket: a/1, a/2, a/__other__ (2 events), __other__ (1 event).
    assert_eq!((series.rows(), series.overflow_rows()), (8, 4));
    let first = series.bucket(0).unwrap();
    assert_eq!(first[&key("a", "/1").folded(Fold::TenantOther)].requests, 2);
    assert_eq!(first[&key("b", "/1").folded(Fold::AllOther)].requests, 1);
    let total: u64 = first.values().map(|m| m.requests).sum();
    assert_eq!(total, 5, "folding keeps every event");

    let rebuilt = Series::from_buckets(series.to_map());
    assert_eq!(rebuilt, series);
    series.evict_before(60_000);
    assert_eq!((series.rows(), series.overflow_rows()), (4, 2));
    assert_eq!(Series::from_buckets(series.to_map()), series);
    // A key the bucket already holds is counted as itself even when the bucket is full.
    assert_eq!(series.add(60_000, &key("a", "/2"), &e, &caps), Fold::Own);
}

#[test]
fn row_json_is_flat() {
    let row = AggregateRow {
        bucket_ms: 60_000,
        group: vec![
            (KeyColumn::ApiName, "pets".into()),
            (KeyColumn::Method, "".into()),
        ],
        measures: Measures {
            requests: 3,
            ..Measures::default()
        },
    };
    let json = row.to_json();
    assert_eq!(json["bucket_ms"], 60_000);
    assert_eq!(json["api_name"], "pets");
    assert_eq!(json["method"], "");
    assert_eq!(json["requests"], 3);
    assert!(json["latency_min_ms"].is_null());
    assert!(json.get("tenant").is_none(), "only group_by columns appear");
}
