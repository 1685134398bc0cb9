use serde_json::{json, Map, Value};

use super::*;

/// A minimal valid record.
fn base() -> Map<String, Value> {
    json!({
        "event_id": "ev-1",
        "timestamp": 1_714_564_800_000i64,
        "api_name": "pets",
        "api_version": "v1",
        "response_code": 200
    })
    .as_object()
    .unwrap()
    .clone()
}

fn with(field: &str, value: Value) -> Value {
    let mut record = base();
    record.insert(field.into(), value);
    Value::Object(record)
}

fn without(field: &str) -> Value {
    let mut record = base();
    record.remove(field);
    Value::Object(record)
}

fn parse(body: &Value) -> Result<Vec<Event>, BatchError> {
    parse_events(body.to_string().as_bytes(), BodyFormat::Json)
}

/// Parses a one-record batch that must fail, and returns its only detail after checking
/// that it names record 0 and `field`.
fn single_error(record: Value, field: &str) -> FieldError {
    let err = parse(&record).expect_err("record should be rejected");
    assert_eq!(err.details.len(), 1, "{err:?}");
    let detail = err.details[0].clone();
    assert_eq!(detail.record, 0);
    assert_eq!(detail.field.as_deref(), Some(field), "{err:?}");
    assert!(
        err.message.contains(field),
        "message names the field: {}",
        err.message
    );
    detail
}

#[test]
fn accepts_single_object_and_array() {
    let one = parse(&Value::Object(base())).unwrap();
    assert_eq!(one.len(), 1);
    let event = &one[0];
    assert_eq!(event.event_id, "ev-1");
    assert_eq!(event.ts_ms, 1_714_564_800_000);
    assert_eq!(event.kind, Kind::Request, "kind defaults to request");
    assert_eq!(event.tenant, "", "tenant defaults to empty");
    assert_eq!(event.response_code, Some(200));
    assert_eq!(event.resource, None);

    let array = json!([base(), with("event_id", json!("ev-2")), base()]);
    let events = parse(&array).unwrap();
    let ids: Vec<_> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        ["ev-1", "ev-2", "ev-1"],
        "order kept, in-batch duplicates kept"
    );
}

#[test]
fn every_schema_field_is_read_into_the_event() {
    let record = json!({
        "event_id": "a.B_c:d-9",
        "timestamp": "2024-05-01T12:00:00.250+02:00",
        "kind": "fault",
        "api_name": "pets",
        "api_version": "v2",
        "tenant": "acme.com",
        "api_context": "/pets/v2",
        "api_creator": "admin",
        "resource": "/pets/{id}",
        "method": "GET",
        "hostname": "gw-1",
        "destination": "http://backend",
        "protocol": "https",
        "application_id": "app-1",
        "application_name": "Mobile",
        "application_owner": "alice",
        "username": "bob",
        "user_tenant": "acme.com",
        "user_ip": "2001:db8::1",
        "user_agent": "curl/8",
        "response_code": 503,
        "response_time_ms": 10,
        "backend_latency_ms": 1,
        "security_latency_ms": 2,
        "throttling_latency_ms": 3,
        "request_mediation_latency_ms": 4,
        "response_mediation_latency_ms": 5,
        "other_latency_ms": 6,
        "response_size": 7,
        "cache_hit": true,
        "error_code": "101503",
        "error_message": "backend down",
        "throttled_reason": "none"
    });
    assert_eq!(record.as_object().unwrap().len(), KNOWN_FIELDS.len());
    let events = parse(&record).unwrap();
    let expected = Event {
        event_id: "a.B_c:d-9".into(),
        ts_ms: 1_714_557_600_250,
        kind: Kind::Fault,
        api_name: "pets".into(),
        api_version: "v2".into(),
        tenant: "acme.com".into(),
        api_context: Some("/pets/v2".into()),
        api_creator: Some("admin".into()),
        resource: Some("/pets/{id}".into()),
        method: Some("GET".into()),
        hostname: Some("gw-1".into()),
        destination: Some("http://backend".into()),
        protocol: Some("https".into()),
        application_id: Some("app-1".into()),
        application_name: Some("Mobile".into()),
        application_owner: Some("alice".into()),
        username: Some("bob".into()),
        user_tenant: Some("acme.com".into()),
        user_ip: Some("2001:db8::1".into()),
        user_agent: Some("curl/8".into()),
        response_code: Some(503),
        response_time_ms: Some(10),
        backend_latency_ms: Some(1),
        security_latency_ms: Some(2),
        throttling_latency_ms: Some(3),
        request_mediation_latency_ms: Some(4),
        response_mediation_latency_ms: Some(5),
        other_latency_ms: Some(6),
        response_size: Some(7),
        cache_hit: Some(true),
        error_code: Some("101503".into()),
        error_message: Some("backend down".into()),
        throttled_reason: Some("none".into()),
    };
    assert_eq!(events, vec![expected]);
}

#[test]
fn timestamps_integer_and_rfc3339_agree() {
    let forms = [
        json!(1_714_564_800_000i64),
        json!("2024-05-01T12:00:00Z"),
        json!("2024-05-01T12:00:00.000Z"),
        json!("2024-05-01T14:00:00+02:00"),
        json!("2024-05-01T11:00:00-01:00"),
    ];
    for form in forms {
        let events = parse(&with("timestamp", form.clone())).unwrap();
        assert_eq!(events[0].ts_ms, 1_714_564_800_000, "{form}");
    }
    // Sub-millisecond digits are truncated to the millisecond.
    let events = parse(&with("timestamp", json!("2024-05-01T12:00:00.1239Z"))).unwrap();
    assert_eq!(events[0].ts_ms, 1_714_564_800_123);
}

#[test]
fn timestamp_rejects_other_forms_and_absurd_values() {
    let cases = [
        (json!(1.5e12), "non-integer"),
        (json!("1714564800000"), "JSON number"),
        (json!("2024-05-01 12:00"), "RFC 3339"),
        (json!("yesterday"), "RFC 3339"),
        (json!(true), "a boolean"),
        (json!(1_714_564_800i64), "looks like seconds"),
        (json!(MIN_TIMESTAMP_MS - 1), "outside"),
        (json!(MAX_TIMESTAMP_MS), "outside"),
        (json!("1999-12-31T23:59:59Z"), "outside"),
        (json!("2200-01-01T00:00:00Z"), "outside"),
        (json!(u64::MAX), "outside"),
        (json!(-1), "outside"),
    ];
    for (value, expected) in cases {
        let detail = single_error(with("timestamp", value.clone()), "timestamp");
        assert!(
            detail.message.contains(expected),
            "{value}: {}",
            detail.message
        );
    }
    assert!(parse(&with("timestamp", json!(MIN_TIMESTAMP_MS))).is_ok());
    assert!(parse(&with("timestamp", json!(MAX_TIMESTAMP_MS - 1))).is_ok());
}

#[test]
fn timestamp_bounds_are_the_documented_dates() {
    let parse = |s| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    };
    assert_eq!(MIN_TIMESTAMP_MS, parse("2000-01-01T00:00:00Z"));
    assert_eq!(MAX_TIMESTAMP_MS, parse("2200-01-01T00:00:00Z"));
}

#[test]
fn required_fields_are_named_when_missing_or_null() {
    for field in REQUIRED_FIELDS {
        let detail = single_error(without(field), field);
        assert_eq!(detail.message, "is required");
        single_error(with(field, Value::Null), field);
    }
}

#[test]
fn response_code_is_required_for_requests_only() {
    let detail = single_error(without("response_code"), "response_code");
    assert!(detail.message.contains("kind is \"request\""));
    single_error(
        {
            let mut r = without("response_code");
            r["kind"] = json!("request");
            r
        },
        "response_code",
    );
    for kind in ["fault", "throttle"] {
        let mut record = without("response_code");
        record["kind"] = json!(kind);
        let events = parse(&record).unwrap();
        assert_eq!(events[0].kind.as_str(), kind);
        assert_eq!(events[0].response_code, None);
    }
    // A bad kind is reported alone, without a knock-on "response_code required".
    let mut record = without("response_code");
    record["kind"] = json!("requests");
    let detail = single_error(record, "kind");
    assert!(detail.message.contains("\"throttle\""));
}

#[test]
fn response_code_range_and_type() {
    for bad in [
        json!(99),
        json!(600),
        json!(-200),
        json!(200.5),
        json!("200"),
    ] {
        single_error(with("response_code", bad), "response_code");
    }
    for good in [100, 404, 599] {
        assert_eq!(
            parse(&with("response_code", json!(good))).unwrap()[0].response_code,
            Some(good)
        );
    }
}

#[test]
fn unknown_fields_are_named_with_a_suggestion() {
    let detail = single_error(with("respone_code", json!(200)), "respone_code");
    assert_eq!(
        detail.message,
        "unknown field; did you mean `response_code`?"
    );
    let detail = single_error(with("colour", json!("red")), "colour");
    assert_eq!(detail.message, "unknown field");
    // Even a null value in an unknown field is an error: the name itself is the typo.
    single_error(with("tennant", Value::Null), "tennant");
    // Hostile names are cut short in the error.
    let long = "x".repeat(10_000);
    let err = parse(&with(&long, json!(1))).unwrap_err();
    assert!(err.details[0].field.as_ref().unwrap().chars().count() <= MAX_ECHOED_NAME + 1);
    assert!(err.message.len() < 1_000);
}

#[test]
fn duplicate_keys_are_rejected() {
    let body = br#"{"event_id":"a","event_id":"b","timestamp":1714564800000,"api_name":"p","api_version":"1","response_code":200}"#;
    let err = parse_events(body, BodyFormat::Json).unwrap_err();
    assert_eq!(err.details.len(), 1);
    assert_eq!(err.details[0].field.as_deref(), Some("event_id"));
    assert!(err.details[0].message.contains("more than once"));
}

#[test]
fn event_id_rules() {
    for bad in [
        json!(""),
        json!("a b"),
        json!("a/b"),
        json!("é"),
        json!("x".repeat(129)),
        json!(5),
    ] {
        single_error(with("event_id", bad), "event_id");
    }
    let ok = "aZ09._:-".repeat(16);
    assert_eq!(ok.len(), 128);
    assert_eq!(parse(&with("event_id", json!(ok))).unwrap()[0].event_id, ok);
}

#[test]
fn string_limits_count_characters() {
    // 256 two-byte characters fit in a 256-character field; 257 do not.
    assert!(parse(&with("api_name", json!("é".repeat(256)))).is_ok());
    let detail = single_error(with("api_name", json!("é".repeat(257))), "api_name");
    assert!(detail.message.contains("at most 256"));
    single_error(with("api_name", json!("")), "api_name");
    single_error(with("api_version", json!("v".repeat(65))), "api_version");
    assert!(parse(&with("api_version", json!("v".repeat(64)))).is_ok());
    single_error(with("tenant", json!("t".repeat(257))), "tenant");
    assert!(parse(&with("tenant", json!(""))).is_ok());
    single_error(with("resource", json!("r".repeat(1025))), "resource");
    assert!(parse(&with("resource", json!("r".repeat(1024)))).is_ok());
    single_error(
        with("application_id", json!("a".repeat(257))),
        "application_id",
    );
    single_error(
        with("throttled_reason", json!("a".repeat(257))),
        "throttled_reason",
    );
    single_error(with("method", json!(["GET"])), "method");
}

#[test]
fn integers_must_be_non_negative_integers() {
    for field in ["response_time_ms", "response_size", "other_latency_ms"] {
        for bad in [json!(-1), json!(1.5), json!("10"), json!(1e30)] {
            single_error(with(field, bad), field);
        }
        assert!(parse(&with(field, json!(0))).is_ok());
        assert!(parse(&with(field, json!(u64::MAX))).is_ok());
    }
}

#[test]
fn user_ip_must_parse_and_cache_hit_must_be_bool() {
    for good in ["10.0.0.1", "::1", "2001:db8::8a2e:370:7334"] {
        assert_eq!(
            parse(&with("user_ip", json!(good))).unwrap()[0]
                .user_ip
                .as_deref(),
            Some(good)
        );
    }
    for bad in [
        json!("10.0.0.256"),
        json!("localhost"),
        json!(""),
        json!(10),
    ] {
        single_error(with("user_ip", bad), "user_ip");
    }
    single_error(with("cache_hit", json!("yes")), "cache_hit");
    assert_eq!(
        parse(&with("cache_hit", json!(false))).unwrap()[0].cache_hit,
        Some(false)
    );
}

#[test]
fn null_optional_field_is_absent() {
    let events = parse(&with("resource", Value::Null)).unwrap();
    assert_eq!(events[0].resource, None);
    let events = parse(&with("tenant", Value::Null)).unwrap();
    assert_eq!(events[0].tenant, "");
}

#[test]
fn collects_errors_across_records() {
    let body = json!([
        base(),
        with("response_code", json!(700)),
        base(),
        with("user_ip", json!("nope")),
        42
    ]);
    let err = parse(&body).unwrap_err();
    let found: Vec<_> = err
        .details
        .iter()
        .map(|d| (d.record, d.field.as_deref()))
        .collect();
    assert_eq!(
        found,
        [(1, Some("response_code")), (3, Some("user_ip")), (4, None)]
    );
    assert!(err.details[2].message.contains("JSON object, got a number"));
    assert!(
        err.message.contains("3 errors in 3 of 5 records"),
        "{}",
        err.message
    );
    assert!(err.message.contains("nothing was accepted"));

    // Several errors in one record are all listed.
    let mut record = without("api_name");
    record["kind"] = json!("fault");
    record["response_size"] = json!(-3);
    let err = parse(&record).unwrap_err();
    let fields: Vec<_> = err
        .details
        .iter()
        .map(|d| d.field.clone().unwrap())
        .collect();
    assert_eq!(fields, ["response_size", "api_name"]);
}

#[test]
fn error_details_are_capped() {
    let records: Vec<Value> = (0..150).map(|_| without("api_version")).collect();
    let err = parse(&Value::Array(records)).unwrap_err();
    assert_eq!(err.details.len(), MAX_ERROR_DETAILS);
    assert_eq!(err.details.last().unwrap().record, MAX_ERROR_DETAILS - 1);
    assert!(
        err.message.contains("150 errors in 150 of 150 records"),
        "{}",
        err.message
    );
    assert!(err.message.contains("first 100"), "{}", err.message);
}

#[test]
fn ndjson_skips_empty_lines_and_names_bad_lines() {
    let line = |v: Value| v.to_string();
    let body = format!(
        "\n{}\r\n\n   \n{}\n",
        line(Value::Object(base())),
        line(with("event_id", json!("ev-2")))
    );
    let events = parse_events(body.as_bytes(), BodyFormat::Ndjson).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event_id, "ev-2");

    // Line 4 (1-based) is the third record (0-based 2): both numbers are reported.
    let body = format!(
        "{}\n{}\n\n  {{\"event_id\": \"x\",,}}\n{}\n",
        line(Value::Object(base())),
        line(Value::Object(base())),
        line(with("kind", json!("oops")))
    );
    let err = parse_events(body.as_bytes(), BodyFormat::Ndjson).unwrap_err();
    assert_eq!(err.details.len(), 2, "{err:?}");
    assert_eq!(err.details[0].record, 2);
    assert_eq!(err.details[0].field, None);
    assert!(
        err.details[0].message.contains("NDJSON line 4, column 20"),
        "{}",
        err.details[0].message
    );
    assert_eq!(err.details[1].record, 3);
    assert_eq!(err.details[1].field.as_deref(), Some("kind"));

    let err = parse_events(b"[{\"a\":1}]\n", BodyFormat::Ndjson).unwrap_err();
    assert!(err.details[0].message.contains("got an array"));
}

#[test]
fn malformed_json_says_where() {
    let body = b"[\n  {\"event_id\": \"a\"},\n  {\"event_id\" \"b\"}\n]";
    let err = parse_events(body, BodyFormat::Json).unwrap_err();
    assert!(
        err.message
            .starts_with("malformed JSON at line 3, column 15"),
        "{}",
        err.message
    );
    let err = parse_events(br#"{"event_id": "a"} {}"#, BodyFormat::Json).unwrap_err();
    assert!(err.message.contains("trailing"), "{}", err.message);
    let err = parse_events(b"\xff", BodyFormat::Json).unwrap_err();
    assert!(err.message.starts_with("malformed JSON"));
    let err = parse_events(b"\"just a string\"", BodyFormat::Json).unwrap_err();
    assert!(err.message.contains("got a string"), "{}", err.message);
}

#[test]
fn empty_batches_are_rejected() {
    let empties: [(&[u8], BodyFormat); 4] = [
        (b"[]", BodyFormat::Json),
        (b"  [ ]  ", BodyFormat::Json),
        (b"", BodyFormat::Ndjson),
        (b"\n \r\n\n", BodyFormat::Ndjson),
    ];
    for (body, format) in empties {
        let err = parse_events(body, format).unwrap_err();
        assert!(err.message.contains("empty batch"), "{}", err.message);
    }
    for body in [&b""[..], b" \n "] {
        let err = parse_events(body, BodyFormat::Json).unwrap_err();
        assert!(err.message.contains("empty batch"), "{}", err.message);
    }
}

#[test]
fn batch_size_limit() {
    let record = Value::Object(base()).to_string();
    let array = |n: usize| format!("[{}]", vec![record.as_str(); n].join(","));
    assert_eq!(
        parse_events(array(MAX_EVENTS_PER_BATCH).as_bytes(), BodyFormat::Json)
            .unwrap()
            .len(),
        MAX_EVENTS_PER_BATCH
    );
    let err =
        parse_events(array(MAX_EVENTS_PER_BATCH + 1).as_bytes(), BodyFormat::Json).unwrap_err();
    assert!(err.message.contains("10001 events"), "{}", err.message);

    let lines = vec![record.as_str(); MAX_EVENTS_PER_BATCH + 1].join("\n");
    let err = parse_events(lines.as_bytes(), BodyFormat::Ndjson).unwrap_err();
    assert!(err.message.contains("10001 events"), "{}", err.message);
}

#[test]
fn batch_error_serializes_for_the_api() {
    let err = parse(&with("kind", json!("x"))).unwrap_err();
    let value = serde_json::to_value(&err).unwrap();
    assert_eq!(value["details"][0]["record"], 0);
    assert_eq!(value["details"][0]["field"], "kind");
    assert_eq!(value["message"], err.to_string());
}

#[test]
fn edit_distance_basics() {
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("same", "same"), 0);
    assert_eq!(nearest_known_field("api_nme"), Some("api_name"));
    assert_eq!(nearest_known_field("zzzzzzzz"), None);
}

#[test]
fn future_events_are_rejected_with_record_and_field() {
    let now = 1_800_000_000_000;
    let ok = Event {
        ts_ms: now + MAX_FUTURE_SKEW_MS,
        ..Event::default()
    };
    let bad = Event {
        ts_ms: now + MAX_FUTURE_SKEW_MS + 1,
        ..Event::default()
    };
    assert!(check_future_skew(std::slice::from_ref(&ok), now).is_ok());
    let err = check_future_skew(&[ok, bad], now).unwrap_err();
    assert_eq!(err.details.len(), 1);
    assert_eq!(err.details[0].record, 1);
    assert_eq!(err.details[0].field.as_deref(), Some("timestamp"));
}
