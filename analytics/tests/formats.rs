//! The snapshot format is kept across versions: a snapshot file written by an earlier build
//! (on disk, or sent by a node not yet upgraded) still loads and means what it meant.
//!
//! `fixtures/snapshot-v2.bin` was written by the build before key caps (snapshot version 2)
//! from [`v2_state`]; `fixtures/snapshot-v3.bin` by the build with key caps (version 3)
//! from [`v3_state`]. Regenerate only when adding a new fixture version, never over an old
//! one: `cargo test -p tally-analytics --test formats -- --ignored`.

use std::path::PathBuf;

use tally_analytics::{
    Event, Fold, Granularity, IngestBatch, KeyCaps, Kind, State, SNAPSHOT_VERSION,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// 2024-05-01T12:00:00Z.
const T: i64 = 1_714_564_800_000;

fn event(id: &str, tenant: &str, resource: &str, ts_ms: i64) -> Event {
    Event {
        event_id: id.into(),
        ts_ms,
        kind: Kind::Request,
        api_name: "pets".into(),
        api_version: "v1".into(),
        tenant: tenant.into(),
        resource: Some(resource.into()),
        method: Some("GET".into()),
        response_code: Some(200),
        response_time_ms: Some(10),
        response_size: Some(100),
        ..Event::default()
    }
}

/// Three entries, five keys over two tenants and two minutes, a duplicate, and a sink
/// cursor that covers the first entry only (so the pending queue holds the rest).
fn v2_state() -> State {
    let mut state = State::new();
    state.apply(
        1,
        &IngestBatch {
            ingest_ms: T + 1_000,
            requests: vec![vec![
                event("a-1", "acme.com", "/pets", T),
                event("a-2", "acme.com", "/pets/{id}", T + 1),
            ]],
        },
    );
    state.advance_sink(2, 1);
    state.apply(
        3,
        &IngestBatch {
            ingest_ms: T + 61_000,
            requests: vec![
                vec![
                    event("b-1", "", "/store", T + 60_000),
                    event("b-2", "", "/store", T + 60_001),
                    event("a-1", "acme.com", "/pets", T),
                ],
                vec![Event {
                    kind: Kind::Fault,
                    response_code: None,
                    ..event("b-3", "acme.com", "/users", T + 60_002)
                }],
            ],
        },
    );
    state.apply(
        4,
        &IngestBatch {
            ingest_ms: T + 62_000,
            requests: vec![vec![Event {
                response_code: Some(503),
                ..event("c-1", "beta.org", "/pets", T + 61_000)
            }]],
        },
    );
    state
}

/// Writes `fixtures/snapshot-v2.bin` with the build before key caps. Kept (ignored) so
/// the way the fixture was made stays readable.
#[test]
#[ignore = "writes the committed fixture; run only to create a new fixture version"]
fn write_snapshot_v2_fixture() {
    let state = v2_state();
    std::fs::write(fixture("snapshot-v2.bin"), state.encode_snapshot()).unwrap();
    println!("digest {}", state.digest());
}

#[test]
fn snapshot_v2_fixture_loads_with_its_content() {
    let bytes = std::fs::read(fixture("snapshot-v2.bin")).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
    let state = State::decode_snapshot(&bytes).unwrap();
    assert_eq!(state.applied_index(), 4);
    let stats = state.stats();
    assert_eq!(stats.events_applied, 6, "a-1 was a duplicate");
    assert_eq!(stats.dedup_ids, 6);
    assert_eq!(
        (stats.buckets_minute, stats.buckets_hour, stats.buckets_day),
        (5, 5, 5)
    );
    let pending = state.pending_status();
    assert_eq!(
        (
            pending.cursor,
            pending.pending_events,
            pending.oldest_pending_index
        ),
        (1, 4, Some(3))
    );
    let minute = state.query(&tally_analytics::AggregateQuery::new(
        tally_analytics::Granularity::Minute,
    ));
    let requests: u64 = minute.iter().map(|r| r.measures.requests).sum();
    assert_eq!(requests, 5);
    // The same entries applied by this build give the same state.
    let rebuilt = v2_state();
    assert_eq!(state, rebuilt);
    assert_eq!(state.digest(), rebuilt.digest());
}

/// The current version roundtrips, overflow counters and folds included, and a version-2
/// state continued by this build with caps behaves like one built here from the start.
#[test]
fn the_current_version_roundtrips_with_overflow() {
    let bytes = std::fs::read(fixture("snapshot-v2.bin")).unwrap();
    let mut state = State::decode_snapshot(&bytes).unwrap();
    let mut fresh = v2_state();
    let caps = KeyCaps {
        max_keys_per_tenant_bucket: 1,
        max_tenants_per_bucket: 1,
        ..KeyCaps::UNLIMITED
    };
    let batch = IngestBatch {
        ingest_ms: T + 63_000,
        requests: vec![vec![
            event("d-1", "acme.com", "/new", T + 60_003),
            event("d-2", "gamma.net", "/pets", T + 60_004),
        ]],
    };
    state.apply_capped(5, &batch, &caps);
    fresh.apply_capped(5, &batch, &caps);
    assert_eq!(state, fresh);
    let stats = state.stats();
    assert_eq!(stats.overflow_events.minute, 2);
    let (pending, _) = state.sink_pending(4, 10);
    let folds: Vec<Fold> = pending
        .iter()
        .map(|p| p.folds.get(Granularity::Minute))
        .collect();
    assert_eq!(folds, [Fold::TenantOther, Fold::AllOther]);

    let encoded = state.encode_snapshot();
    assert_eq!(
        u32::from_le_bytes(encoded[8..12].try_into().unwrap()),
        SNAPSHOT_VERSION
    );
    assert_eq!(SNAPSHOT_VERSION, 3);
    let back = State::decode_snapshot(&encoded).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.digest(), state.digest());
    assert_eq!(back.sink_pending(0, 100), state.sink_pending(0, 100));
}

/// The version-2 state continued with a capped entry: both kinds of overflow key, folds in
/// the pending queue and non-zero overflow counters.
fn v3_state() -> State {
    let mut state = v2_state();
    let caps = KeyCaps {
        max_keys_per_tenant_bucket: 1,
        max_tenants_per_bucket: 1,
        ..KeyCaps::UNLIMITED
    };
    state.apply_capped(
        5,
        &IngestBatch {
            ingest_ms: T + 63_000,
            requests: vec![vec![
                event("d-1", "acme.com", "/new", T + 60_003),
                event("d-2", "gamma.net", "/pets", T + 60_004),
                event("d-3", "acme.com", "/newer", T + 60_005),
            ]],
        },
        &caps,
    );
    state
}

/// The digest of [`v3_state`], printed by the build that wrote `snapshot-v3.bin`.
const V3_DIGEST: &str = "450b731366e2be4b838ae4c1f04cb3dffe3a648c32ebb5437a45a731fda1f7e1";

/// Writes `fixtures/snapshot-v3.bin` (the build with key caps, before the copy-on-write
/// state). Kept (ignored) so the way the fixture was made stays readable.
#[test]
#[ignore = "writes the committed fixture; run only to create a new fixture version"]
fn write_snapshot_v3_fixture() {
    let state = v3_state();
    std::fs::write(fixture("snapshot-v3.bin"), state.encode_snapshot()).unwrap();
    println!("digest {}", state.digest());
}

/// The in-memory representation may change (copy-on-write buckets, chunked queues), the
/// bytes may not: the fixture loads, re-encodes to exactly its own bytes, and the state
/// built by this build from the same entries encodes and digests the same.
#[test]
fn snapshot_v3_fixture_reencodes_to_the_same_bytes_and_digest() {
    let bytes = std::fs::read(fixture("snapshot-v3.bin")).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 3);
    let state = State::decode_snapshot(&bytes).unwrap();
    assert_eq!(state.encode_snapshot(), bytes);
    assert_eq!(state.digest(), V3_DIGEST);
    let rebuilt = v3_state();
    assert_eq!(rebuilt.encode_snapshot(), bytes);
    assert_eq!(rebuilt.digest(), V3_DIGEST);
    let stats = state.stats();
    assert_eq!(stats.overflow_events.minute, 3);
    assert_eq!(stats.overflow_keys_minute, 2);
}
