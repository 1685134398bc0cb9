//! Property-based fuzzing of event parsing: whatever bytes a client posts, parsing returns
//! events that satisfy the schema or an error that says what is wrong, and never panics.
//!
//! Two generators: raw bytes, and JSON built from the schema's own field names with values
//! of every type (so the cases reach the validators, not just the JSON parser). The test
//! command runs a short pass; `scripts/fuzz.sh` runs a million cases per target
//! (`PROPTEST_CASES`).

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tally_analytics::{
    check_future_skew, parse_events, BodyFormat, KNOWN_FIELDS, MAX_ERROR_DETAILS,
    MAX_EVENTS_PER_BATCH,
};

/// The schema's fields, then near misses and strangers.
fn fields() -> Vec<&'static str> {
    let mut fields = KNOWN_FIELDS.to_vec();
    fields.extend(["respone_code", "eventId", ""]);
    fields
}

/// Cases per property: `PROPTEST_CASES` when set (the long run), else a short pass.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[A-Za-z0-9._:-]{1,12}",
        "\\PC{0,40}",
        Just("x".repeat(1025)),
        Just("2024-05-01T12:00:00Z".to_string()),
        Just("2024-05-01T12:00:00+25:00".to_string()),
        Just("::1".to_string()),
        Just("10.0.0.300".to_string()),
        Just("request".to_string()),
        Just("fault".to_string()),
        Just("throttle".to_string()),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e20f64..1e20).prop_map(Value::from),
        (100i64..600).prop_map(Value::from),
        (946_684_800_000i64..7_258_118_400_000).prop_map(Value::from),
        text().prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{0,4}", inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A record: mostly schema fields, with values of any type.
fn record() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(fields()), value()), 0..12).prop_map(|fields| {
        let mut object = Map::new();
        for (name, v) in fields {
            object.insert(name.to_string(), v);
        }
        Value::Object(object)
    })
}

/// A valid event with a few fields replaced (by values of any type) or removed: reaches
/// every validator, and accepts often enough to check what acceptance promises.
fn mutated_valid() -> impl Strategy<Value = Value> {
    let op = (prop::sample::select(fields()), prop::option::of(value()));
    prop::collection::vec(op, 0..4).prop_map(|ops| {
        let mut e = json!({"event_id": "a-1", "timestamp": 1_714_564_800_000i64,
            "api_name": "Shop", "api_version": "v1", "response_code": 200,
            "user_ip": "10.1.2.3", "kind": "request"});
        let object = e.as_object_mut().unwrap();
        for (name, v) in ops {
            match v {
                Some(v) => object.insert(name.to_string(), v),
                None => object.remove(name),
            };
        }
        e
    })
}

/// A body: one record, an array of records (or of anything), or NDJSON lines.
fn body() -> impl Strategy<Value = (Vec<u8>, BodyFormat)> {
    prop_oneof![
        record().prop_map(|r| (serde_json::to_vec(&r).unwrap(), BodyFormat::Json)),
        prop::collection::vec(mutated_valid(), 1..4)
            .prop_map(|rs| (serde_json::to_vec(&rs).unwrap(), BodyFormat::Json)),
        prop::collection::vec(prop_oneof![4 => record(), 1 => value()], 0..6)
            .prop_map(|rs| (serde_json::to_vec(&rs).unwrap(), BodyFormat::Json)),
        prop::collection::vec(record(), 0..6).prop_map(|rs| {
            let lines: Vec<String> = rs.iter().map(|r| r.to_string()).collect();
            (lines.join("\n").into_bytes(), BodyFormat::Ndjson)
        }),
    ]
}

/// What every answer must satisfy, whatever the input.
fn check(bytes: &[u8], format: BodyFormat) -> Result<(), TestCaseError> {
    match parse_events(bytes, format) {
        Ok(events) => {
            prop_assert!(!events.is_empty() && events.len() <= MAX_EVENTS_PER_BATCH);
            for e in &events {
                prop_assert!(!e.event_id.is_empty() && e.event_id.len() <= 128);
                prop_assert!(e
                    .event_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)));
                prop_assert!(!e.api_name.is_empty() && !e.api_version.is_empty());
                prop_assert!(e.response_code.is_none_or(|c| (100..=599).contains(&c)));
                if let Some(ip) = &e.user_ip {
                    prop_assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{ip}");
                }
            }
            // The skew check never panics either, at any clock.
            let _ = check_future_skew(&events, i64::MAX);
            let _ = check_future_skew(&events, i64::MIN);
        }
        Err(e) => {
            prop_assert!(!e.message.is_empty());
            prop_assert!(e.details.len() <= MAX_ERROR_DETAILS);
            for d in &e.details {
                prop_assert!(!d.message.is_empty(), "detail without a message: {d:?}");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2_000), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), ndjson in any::<bool>()) {
        let format = if ndjson { BodyFormat::Ndjson } else { BodyFormat::Json };
        check(&bytes, format)?;
    }

    #[test]
    fn schema_shaped_json_never_panics((bytes, format) in body()) {
        check(&bytes, format)?;
    }
}

#[test]
fn a_valid_event_passes_the_same_check() {
    // The property's own premise: a good event is accepted.
    let good = json!({"event_id": "a-1", "timestamp": 1_714_564_800_000i64,
        "api_name": "Shop", "api_version": "v1", "response_code": 200});
    let events = parse_events(good.to_string().as_bytes(), BodyFormat::Json).unwrap();
    assert_eq!(events.len(), 1);
    check(good.to_string().as_bytes(), BodyFormat::Json).unwrap();
}
