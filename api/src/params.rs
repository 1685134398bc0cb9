//! Request parsing, kept pure: a query string, a body or headers in, a typed value or the
//! [`ApiError`] the client sees out (docs/api.md). Nothing here does I/O or looks at the
//! node, so every accepted form and every refusal is unit-tested below; the handlers only
//! route, run and answer.
//!
//! * `GET /v1/aggregates` — [`aggregate_query`]; `GET /v1/state/digest` — [`digest_query`].
//! * `POST /v1/sql` — [`sql_query`].
//! * `POST /v1/events` — [`events_query`] (`?redirect`), [`body_format`] (JSON or NDJSON by
//!   `Content-Type`), [`events`] (the batch itself, validated by `tally_analytics`).
//! * Membership — [`add_member`], [`leader_body`], [`node_id`].
//!
//! Where several things are wrong at once, each parser reports the first it checks, in the
//! order written here (unknown parameters before bad values, for instance).

use std::collections::HashMap;

use axum::http::{header, HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use tally_analytics::{AggregateQuery, BatchError, BodyFormat, Event, Granularity, KeyColumn};
use tally_raft::membership::{self, AddMember};
use tally_raft::{NodeId, Role, TallyNode};

use crate::error::{ApiError, ApiResult};

/// The consistency an analytic read asks for (`?consistency=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Whatever this data node has applied.
    None,
    /// Confirmed with a quorum by the leader: includes every write acknowledged before.
    Linearizable,
}

/// `?consistency=` of an analytic read, after refusing any parameter not in `allowed`.
fn consistency(params: &HashMap<String, String>, allowed: &[&str]) -> ApiResult<Consistency> {
    for key in params.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {key:?}; accepted: {}",
                allowed.join(", ")
            )));
        }
    }
    match params.get("consistency").map(String::as_str) {
        None | Some("none") => Ok(Consistency::None),
        Some("linearizable") | Some("strong") => Ok(Consistency::Linearizable),
        Some(other) => Err(ApiError::bad_request(format!(
            "consistency {other:?} is not one of \"none\", \"linearizable\""
        ))),
    }
}

/// The query of `GET /v1/state/digest`: only `consistency`.
pub fn digest_query(params: &HashMap<String, String>) -> ApiResult<Consistency> {
    consistency(params, &["consistency"])
}

/// The query of `GET /v1/aggregates`: `granularity` (default hour), `from`/`to` (epoch ms),
/// `api`, `version`, `group_by` (comma-separated key columns; absent: all, empty: none) and
/// `consistency`.
pub fn aggregate_query(
    params: &HashMap<String, String>,
) -> ApiResult<(AggregateQuery, Consistency)> {
    const ALLOWED: &[&str] = &[
        "granularity",
        "from",
        "to",
        "tenant",
        "api",
        "version",
        "group_by",
        "consistency",
    ];
    let consistency = consistency(params, ALLOWED)?;
    let granularity = match params.get("granularity") {
        None => Granularity::Hour,
        Some(g) => g.parse::<Granularity>().map_err(|_| {
            ApiError::bad_request(format!("granularity {g:?} is not one of minute, hour, day"))
        })?,
    };
    let time = |name: &str| -> ApiResult<Option<i64>> {
        params
            .get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "{name}={v:?} is not an integer epoch time in milliseconds"
                    ))
                })
            })
            .transpose()
    };
    let from_ms = time("from")?;
    let to_ms = time("to")?;
    if let (Some(f), Some(t)) = (from_ms, to_ms) {
        if f > t {
            return Err(ApiError::bad_request(format!(
                "from ({f}) is after to ({t})"
            )));
        }
    }
    let group_by = match params.get("group_by") {
        None => KeyColumn::ALL.to_vec(),
        Some(list) if list.trim().is_empty() => Vec::new(),
        Some(list) => {
            let mut cols = Vec::new();
            for name in list.split(',').map(str::trim) {
                let col = name.parse::<KeyColumn>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "group_by column {name:?} is not one of tenant, api_name, api_version, application_id, resource, method"
                    ))
                })?;
                if !cols.contains(&col) {
                    cols.push(col);
                }
            }
            cols
        }
    };
    let query = AggregateQuery {
        granularity,
        from_ms,
        to_ms,
        tenant: params.get("tenant").cloned(),
        api: params.get("api").cloned(),
        version: params.get("version").cloned(),
        group_by,
    };
    Ok((query, consistency))
}

/// The body of `POST /v1/sql`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlQuery {
    /// Not empty (nor only whitespace); whether it is one read-only query is checked later,
    /// against the record store's dialect.
    pub sql: String,
    /// `consistency: "strong"` (or `"linearizable"`): read on the leader, after every write
    /// acknowledged before.
    pub strong: bool,
    /// Wait until the record store holds every event up to this index.
    pub min_index: Option<u64>,
}

/// `POST /v1/sql` as sent. (Named as before the move, like the other bodies here: serde puts a
/// struct's name in some of its messages.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    min_index: Option<u64>,
}

/// The body of `POST /v1/sql`: `{"sql": "…", "consistency": "none"|"strong", "min_index": N}`,
/// a JSON object with no other fields.
pub fn sql_query(bytes: &[u8]) -> ApiResult<SqlQuery> {
    let shape = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(format!(
            "body must be {{\"sql\": \"…\", \"consistency\": \"none\"|\"strong\", \"min_index\": N}}: {e}"
        ))
    };
    // Only an object: serde would also accept an array of the fields in order.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| shape(&e))?;
    if !value.is_object() {
        return Err(shape(&"a JSON object is required"));
    }
    let req: SqlRequest = serde_json::from_value(value).map_err(|e| shape(&e))?;
    let strong = match req.consistency.as_deref() {
        None | Some("none") => false,
        Some("strong") | Some("linearizable") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "consistency {other:?} is not one of \"none\", \"strong\""
            )))
        }
    };
    if req.sql.trim().is_empty() {
        return Err(ApiError::bad_request("sql is empty"));
    }
    Ok(SqlQuery {
        sql: req.sql,
        strong,
        min_index: req.min_index,
    })
}

/// The query of `POST /v1/events`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventsQuery {
    /// `?redirect` (any value): a node that is not the leader answers 307 with the leader's
    /// address instead of forwarding the batch.
    pub redirect: bool,
}

/// The query of `POST /v1/events`: only `redirect` is accepted.
pub fn events_query(params: &HashMap<String, String>) -> ApiResult<EventsQuery> {
    for key in params.keys() {
        if key != "redirect" {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {key:?} (only \"redirect\" is accepted)"
            )));
        }
    }
    Ok(EventsQuery {
        redirect: params.contains_key("redirect"),
    })
}

/// How an ingest body is framed, from its `Content-Type` (parameters such as `charset` are
/// ignored, the media type is matched without regard to case). None: JSON.
pub fn body_format(headers: &HeaderMap) -> ApiResult<BodyFormat> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyFormat::Json);
    };
    let ct = ct
        .to_str()
        .map_err(|_| ApiError::bad_request("Content-Type is not valid text"))?;
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(BodyFormat::Ndjson),
        "application/json" | "" | "text/plain" => Ok(BodyFormat::Json),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type {other:?} is not accepted: use application/json or application/x-ndjson"),
        )),
    }
}

/// The events of an ingest body, validated, none more than the allowed skew ahead of
/// `now_ms` (the caller's clock). A refusal is `invalid_events` with one detail per problem
/// (`record`, `field`, `message`).
pub fn events(bytes: &[u8], format: BodyFormat, now_ms: i64) -> ApiResult<Vec<Event>> {
    let events = tally_analytics::parse_events(bytes, format).map_err(invalid_events)?;
    tally_analytics::check_future_skew(&events, now_ms).map_err(invalid_events)?;
    Ok(events)
}

/// Refuses a batch that holds an event of another tenant than `scope` (a tenant-scoped
/// token's): 403 with one detail per such record, so nothing of the batch is counted.
pub fn events_within_tenant(events: &[Event], scope: Option<&str>) -> ApiResult<()> {
    let Some(scope) = scope else { return Ok(()) };
    let details: Vec<serde_json::Value> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.tenant != scope)
        .take(MAX_SCOPE_DETAILS)
        .map(|(record, e)| {
            json!({
                "record": record,
                "field": "tenant",
                "message": format!("tenant {:?} is not {scope:?}, the only tenant this token may post", e.tenant),
            })
        })
        .collect();
    match details.first() {
        None => Ok(()),
        Some(first) => Err(crate::auth::forbidden(format!(
            "record {} belongs to another tenant than {scope:?}, the only tenant this token may \
             post; the batch was not counted",
            first["record"]
        ))
        .with_details(details)),
    }
}

/// Details listed for a batch refused for its tenants: enough to see the problem, bounded
/// whatever the batch size.
const MAX_SCOPE_DETAILS: usize = 20;

fn invalid_events(e: BatchError) -> ApiError {
    let details = e
        .details
        .iter()
        .map(|d| json!({"record": d.record, "field": d.field, "message": d.message}))
        .collect();
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_events", e.message).with_details(details)
}

/// `POST /v1/cluster/members` as sent. (Serde names the struct in some of its messages, such
/// as `expected struct AddBody`: keep the name.)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    id: u64,
    addr: String,
    #[serde(default = "default_role")]
    role: String,
    #[serde(default = "default_true")]
    voter: bool,
    #[serde(default)]
    replaces: Option<u64>,
}

fn default_role() -> String {
    "data".into()
}

fn default_true() -> bool {
    true
}

/// The body of `POST /v1/cluster/members`: `{"id": N, "addr": "host:port", "role":
/// "data"|"witness", "voter": true, "replaces": N}` (`role` defaults to data, `voter` to
/// true).
pub fn add_member(bytes: &[u8]) -> ApiResult<AddMember> {
    let body: AddBody = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid body: {e} (expected {{\"id\": N, \"addr\": \"host:port\", \"role\": \
             \"data\"|\"witness\", \"voter\": true, \"replaces\": N}})"
        ))
    })?;
    if body.id == 0 {
        return Err(ApiError::bad_request("id must be a positive integer"));
    }
    match body.replaces {
        Some(0) => return Err(ApiError::bad_request("replaces must be a positive node id")),
        Some(old) if old == body.id => {
            return Err(ApiError::bad_request(format!(
                "node {old} cannot replace itself"
            )))
        }
        Some(_) if !body.voter => {
            return Err(ApiError::bad_request(
                "\"replaces\" swaps voters: it needs \"voter\": true",
            ))
        }
        _ => {}
    }
    membership::validate_addr(&body.addr).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let role: Role = body.role.parse().map_err(ApiError::bad_request)?;
    let node = match role {
        Role::Data => TallyNode::data(body.addr),
        Role::Witness => TallyNode::witness(body.addr),
    };
    Ok(AddMember {
        id: body.id,
        node,
        voter: body.voter,
        replaces: body.replaces,
    })
}

/// The body of `POST /v1/cluster/leader`. (Serde names the struct in some of its messages,
/// such as `expected struct LeaderBody`: keep the name.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderBody {
    /// The node to hand leadership to; `None`: the best other data voter.
    #[serde(default)]
    pub to: Option<NodeId>,
}

/// The body of `POST /v1/cluster/leader`: `{"to": N}`, `{}`, or empty (whitespace only).
pub fn leader_body(bytes: &[u8]) -> ApiResult<LeaderBody> {
    let req: LeaderBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        LeaderBody::default()
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?
    };
    if req.to == Some(0) {
        return Err(ApiError::bad_request("\"to\" must be a positive node id"));
    }
    Ok(req)
}

/// A node id in a path (`DELETE /v1/cluster/members/{id}`): a positive integer.
pub fn node_id(s: &str) -> ApiResult<NodeId> {
    match s.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::bad_request(format!(
            "{s:?} is not a node id (a positive integer)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The refusal of `result`, checked to be a 400 `invalid_request` with exactly `message`.
    #[track_caller]
    fn refused_with<T: std::fmt::Debug>(result: ApiResult<T>, message: &str) {
        let e = result.expect_err("should be refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
        assert_eq!(e.code, "invalid_request", "{e:?}");
        assert_eq!(e.message, message);
    }

    /// The message of a 400 `invalid_request` refusal.
    #[track_caller]
    fn refusal<T: std::fmt::Debug>(result: ApiResult<T>) -> String {
        let e = result.expect_err("should be refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
        assert_eq!(e.code, "invalid_request", "{e:?}");
        e.message
    }

    // ---- /v1/state/digest ----

    #[test]
    fn digest_consistency_defaults_to_none() {
        assert_eq!(digest_query(&query(&[])).unwrap(), Consistency::None);
        assert_eq!(
            digest_query(&query(&[("consistency", "none")])).unwrap(),
            Consistency::None
        );
    }

    #[test]
    fn digest_accepts_linearizable_and_strong() {
        for value in ["linearizable", "strong"] {
            assert_eq!(
                digest_query(&query(&[("consistency", value)])).unwrap(),
                Consistency::Linearizable,
                "{value}"
            );
        }
    }

    #[test]
    fn digest_refuses_other_consistency_and_other_parameters() {
        refused_with(
            digest_query(&query(&[("consistency", "eventual")])),
            r#"consistency "eventual" is not one of "none", "linearizable""#,
        );
        // Values are matched exactly.
        refused_with(
            digest_query(&query(&[("consistency", "Strong")])),
            r#"consistency "Strong" is not one of "none", "linearizable""#,
        );
        refused_with(
            digest_query(&query(&[("granularity", "hour")])),
            r#"unknown query parameter "granularity"; accepted: consistency"#,
        );
        // An unknown parameter is reported before a bad value.
        refused_with(
            digest_query(&query(&[("consistency", "eventual"), ("x", "1")])),
            r#"unknown query parameter "x"; accepted: consistency"#,
        );
    }

    // ---- /v1/aggregates ----

    #[test]
    fn aggregate_defaults() {
        let (q, consistency) = aggregate_query(&query(&[])).unwrap();
        assert_eq!(
            q,
            AggregateQuery {
                granularity: Granularity::Hour,
                from_ms: None,
                to_ms: None,
                tenant: None,
                api: None,
                version: None,
                group_by: KeyColumn::ALL.to_vec(),
            }
        );
        assert_eq!(consistency, Consistency::None);
    }

    #[test]
    fn aggregate_accepts_every_parameter() {
        let (q, consistency) = aggregate_query(&query(&[
            ("granularity", "minute"),
            ("from", "-5"),
            ("to", "1700000000000"),
            ("tenant", "acme.com"),
            ("api", "orders"),
            ("version", "v2"),
            ("group_by", "api_name, method,api_name"),
            ("consistency", "strong"),
        ]))
        .unwrap();
        assert_eq!(
            q,
            AggregateQuery {
                granularity: Granularity::Minute,
                from_ms: Some(-5),
                to_ms: Some(1_700_000_000_000),
                tenant: Some("acme.com".into()),
                api: Some("orders".into()),
                version: Some("v2".into()),
                // Trimmed, de-duplicated, in the order asked.
                group_by: vec![KeyColumn::ApiName, KeyColumn::Method],
            }
        );
        assert_eq!(consistency, Consistency::Linearizable);
    }

    #[test]
    fn aggregate_granularities() {
        for (value, g) in [
            ("minute", Granularity::Minute),
            ("hour", Granularity::Hour),
            ("day", Granularity::Day),
        ] {
            let (q, _) = aggregate_query(&query(&[("granularity", value)])).unwrap();
            assert_eq!(q.granularity, g, "{value}");
        }
        for value in ["week", "", "Hour"] {
            refused_with(
                aggregate_query(&query(&[("granularity", value)])),
                &format!("granularity {value:?} is not one of minute, hour, day"),
            );
        }
    }

    #[test]
    fn aggregate_time_range() {
        let (q, _) = aggregate_query(&query(&[("from", "10"), ("to", "10")])).unwrap();
        assert_eq!((q.from_ms, q.to_ms), (Some(10), Some(10)));
        let (q, _) = aggregate_query(&query(&[("to", "7")])).unwrap();
        assert_eq!((q.from_ms, q.to_ms), (None, Some(7)));
        refused_with(
            aggregate_query(&query(&[("from", "1.5")])),
            r#"from="1.5" is not an integer epoch time in milliseconds"#,
        );
        refused_with(
            aggregate_query(&query(&[("to", "2024-01-01")])),
            r#"to="2024-01-01" is not an integer epoch time in milliseconds"#,
        );
        refused_with(
            aggregate_query(&query(&[("from", "11"), ("to", "10")])),
            "from (11) is after to (10)",
        );
    }

    #[test]
    fn aggregate_group_by() {
        let (q, _) = aggregate_query(&query(&[("group_by", "")])).unwrap();
        assert!(q.group_by.is_empty());
        let (q, _) = aggregate_query(&query(&[("group_by", "  ")])).unwrap();
        assert!(q.group_by.is_empty());
        let every = "tenant,api_name,api_version,application_id,resource,method";
        let (q, _) = aggregate_query(&query(&[("group_by", every)])).unwrap();
        assert_eq!(q.group_by, KeyColumn::ALL.to_vec());
        let (q, _) = aggregate_query(&query(&[("group_by", "resource,tenant")])).unwrap();
        assert_eq!(q.group_by, vec![KeyColumn::Resource, KeyColumn::Tenant]);
        let not_one_of =
            "is not one of tenant, api_name, api_version, application_id, resource, method";
        refused_with(
            aggregate_query(&query(&[("group_by", "api_name,bogus")])),
            &format!(r#"group_by column "bogus" {not_one_of}"#),
        );
        // A trailing comma names an empty column.
        refused_with(
            aggregate_query(&query(&[("group_by", "api_name,")])),
            &format!(r#"group_by column "" {not_one_of}"#),
        );
    }

    #[test]
    fn aggregate_refuses_unknown_parameters() {
        refused_with(
            aggregate_query(&query(&[("limit", "10")])),
            r#"unknown query parameter "limit"; accepted: granularity, from, to, tenant, api, version, group_by, consistency"#,
        );
        refused_with(
            aggregate_query(&query(&[("consistency", "eventual")])),
            r#"consistency "eventual" is not one of "none", "linearizable""#,
        );
    }

    #[test]
    fn aggregate_reports_the_first_problem_in_order() {
        // Unknown parameter, consistency, granularity, from, to, the range, group_by.
        let all_bad = [
            ("consistency", "eventual"),
            ("granularity", "week"),
            ("from", "x"),
            ("to", "y"),
            ("group_by", "bogus"),
        ];
        let mut params = query(&all_bad);
        params.insert("limit".into(), "1".into());
        assert!(refusal(aggregate_query(&params)).starts_with("unknown query parameter"));
        let expected = [
            "consistency \"eventual\"",
            "granularity \"week\"",
            "from=\"x\"",
            "to=\"y\"",
            "group_by column \"bogus\"",
        ];
        for (skip, prefix) in expected.iter().enumerate() {
            let message = refusal(aggregate_query(&query(&all_bad[skip..])));
            assert!(message.starts_with(prefix), "{message}");
        }
        // A reversed range is reported before a bad group_by.
        let message = refusal(aggregate_query(&query(&[
            ("from", "2"),
            ("to", "1"),
            ("group_by", "bogus"),
        ])));
        assert_eq!(message, "from (2) is after to (1)");
    }

    // ---- /v1/sql ----

    const SQL_SHAPE: &str =
        r#"body must be {"sql": "…", "consistency": "none"|"strong", "min_index": N}: "#;

    #[test]
    fn sql_defaults() {
        assert_eq!(
            sql_query(br#"{"sql": "SELECT 1"}"#).unwrap(),
            SqlQuery {
                sql: "SELECT 1".into(),
                strong: false,
                min_index: None,
            }
        );
        // null means absent.
        assert_eq!(
            sql_query(br#"{"sql": "SELECT 1", "consistency": null, "min_index": null}"#).unwrap(),
            SqlQuery {
                sql: "SELECT 1".into(),
                strong: false,
                min_index: None,
            }
        );
    }

    #[test]
    fn sql_accepts_every_field() {
        for (consistency, strong) in [("none", false), ("strong", true), ("linearizable", true)] {
            let body = format!(
                r#"{{"sql": " SELECT * FROM events ", "consistency": "{consistency}", "min_index": 42}}"#
            );
            assert_eq!(
                sql_query(body.as_bytes()).unwrap(),
                SqlQuery {
                    // Passed on as written.
                    sql: " SELECT * FROM events ".into(),
                    strong,
                    min_index: Some(42),
                },
                "{consistency}"
            );
        }
    }

    #[test]
    fn sql_refuses_what_is_not_an_object() {
        for body in [&br#"["SELECT 1"]"#[..], br#""SELECT 1""#, b"42", b"null"] {
            refused_with(
                sql_query(body),
                &format!("{SQL_SHAPE}a JSON object is required"),
            );
        }
        refused_with(
            sql_query(b""),
            &format!("{SQL_SHAPE}EOF while parsing a value at line 1 column 0"),
        );
        let message = refusal(sql_query(b"SELECT 1"));
        assert!(message.starts_with(SQL_SHAPE), "{message}");
        assert!(message.contains("expected value"), "{message}");
    }

    #[test]
    fn sql_refuses_unknown_missing_and_mistyped_fields() {
        refused_with(
            sql_query(br#"{"sql": "SELECT 1", "query": "x"}"#),
            &format!(
                "{SQL_SHAPE}unknown field `query`, expected one of `sql`, `consistency`, `min_index`"
            ),
        );
        refused_with(
            sql_query(br#"{"consistency": "none"}"#),
            &format!("{SQL_SHAPE}missing field `sql`"),
        );
        refused_with(
            sql_query(br#"{"sql": 5}"#),
            &format!("{SQL_SHAPE}invalid type: integer `5`, expected a string"),
        );
        refused_with(
            sql_query(br#"{"sql": "SELECT 1", "min_index": "5"}"#),
            &format!("{SQL_SHAPE}invalid type: string \"5\", expected u64"),
        );
        refused_with(
            sql_query(br#"{"sql": "SELECT 1", "min_index": -1}"#),
            &format!("{SQL_SHAPE}invalid value: integer `-1`, expected u64"),
        );
        refused_with(
            sql_query(br#"{"sql": "SELECT 1", "consistency": true}"#),
            &format!("{SQL_SHAPE}invalid type: boolean `true`, expected a string"),
        );
    }

    #[test]
    fn sql_refuses_other_consistency_and_empty_statements() {
        refused_with(
            sql_query(br#"{"sql": "SELECT 1", "consistency": "eventual"}"#),
            r#"consistency "eventual" is not one of "none", "strong""#,
        );
        for sql in ["", "  \n\t"] {
            let body = serde_json::to_vec(&json!({ "sql": sql })).unwrap();
            refused_with(sql_query(&body), "sql is empty");
        }
        // The consistency is checked before the statement.
        refused_with(
            sql_query(br#"{"sql": "", "consistency": "eventual"}"#),
            r#"consistency "eventual" is not one of "none", "strong""#,
        );
    }

    // ---- /v1/events ----

    #[test]
    fn events_query_redirect() {
        assert_eq!(
            events_query(&query(&[])).unwrap(),
            EventsQuery { redirect: false }
        );
        for value in ["", "1", "false"] {
            // Present means asked, whatever the value.
            assert_eq!(
                events_query(&query(&[("redirect", value)])).unwrap(),
                EventsQuery { redirect: true },
                "{value:?}"
            );
        }
        refused_with(
            events_query(&query(&[("redirect", ""), ("format", "ndjson")])),
            r#"unknown query parameter "format" (only "redirect" is accepted)"#,
        );
    }

    fn content_type(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn body_format_json() {
        assert_eq!(body_format(&HeaderMap::new()).unwrap(), BodyFormat::Json);
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "text/plain",
            "",
            "; charset=utf-8",
        ] {
            assert_eq!(
                body_format(&content_type(ct)).unwrap(),
                BodyFormat::Json,
                "{ct:?}"
            );
        }
    }

    #[test]
    fn body_format_ndjson() {
        for ct in [
            "application/x-ndjson",
            "application/ndjson",
            "application/jsonl",
            " Application/X-NDJSON ; charset=utf-8",
        ] {
            assert_eq!(
                body_format(&content_type(ct)).unwrap(),
                BodyFormat::Ndjson,
                "{ct:?}"
            );
        }
    }

    #[test]
    fn body_format_refusals() {
        let e = body_format(&content_type("Text/CSV; charset=utf-8")).unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(e.code, "unsupported_media_type");
        assert_eq!(
            e.message,
            r#"Content-Type "text/csv" is not accepted: use application/json or application/x-ndjson"#
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_bytes(b"application/json\xff").unwrap(),
        );
        refused_with(body_format(&headers), "Content-Type is not valid text");
    }

    const NOW_MS: i64 = 1_700_000_000_000;

    fn event_json(id: &str, ts_ms: i64) -> serde_json::Value {
        json!({
            "event_id": id,
            "timestamp": ts_ms,
            "api_name": "orders",
            "api_version": "v1",
            "response_code": 200,
        })
    }

    #[test]
    fn events_parses_json_and_ndjson() {
        let one = serde_json::to_vec(&event_json("a", NOW_MS)).unwrap();
        let events = events(&one, BodyFormat::Json, NOW_MS).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_id, "a");
        let array = serde_json::to_vec(&json!([
            event_json("a", NOW_MS),
            event_json("b", NOW_MS - 60_000)
        ]))
        .unwrap();
        assert_eq!(
            super::events(&array, BodyFormat::Json, NOW_MS)
                .unwrap()
                .len(),
            2
        );
        let ndjson = format!(
            "{}\n\n{}\n",
            event_json("a", NOW_MS),
            event_json("b", NOW_MS)
        );
        let events = super::events(ndjson.as_bytes(), BodyFormat::Ndjson, NOW_MS).unwrap();
        assert_eq!(
            events
                .iter()
                .map(|e| e.event_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    /// The refusal of a batch, checked to be a 400 `invalid_events`; its details.
    #[track_caller]
    fn invalid(result: ApiResult<Vec<Event>>) -> (String, Vec<serde_json::Value>) {
        let e = result.expect_err("should be refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
        assert_eq!(e.code, "invalid_events", "{e:?}");
        (e.message, e.details)
    }

    #[test]
    fn events_refusals_name_record_and_field() {
        let (message, details) = invalid(events(b"  ", BodyFormat::Json, NOW_MS));
        assert_eq!(message, "empty batch: the body is empty");
        assert!(details.is_empty());

        let mut bad = event_json("a", NOW_MS);
        bad["response_code"] = json!(700);
        let body = serde_json::to_vec(&json!([event_json("ok", NOW_MS), bad])).unwrap();
        let (message, details) = invalid(events(&body, BodyFormat::Json, NOW_MS));
        assert!(!message.is_empty());
        assert_eq!(details.len(), 1, "{details:?}");
        assert_eq!(details[0]["record"], 1);
        assert_eq!(details[0]["field"], "response_code");
        assert!(details[0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));

        // NDJSON is parsed as such: a JSON array body is one bad line.
        let array = serde_json::to_vec(&json!([event_json("a", NOW_MS)])).unwrap();
        invalid(events(&array, BodyFormat::Ndjson, NOW_MS));
    }

    #[test]
    fn events_refuses_the_far_future() {
        let limit = NOW_MS + tally_analytics::MAX_FUTURE_SKEW_MS;
        let body = serde_json::to_vec(&event_json("edge", limit)).unwrap();
        events(&body, BodyFormat::Json, NOW_MS).unwrap();
        let body = serde_json::to_vec(&json!([
            event_json("edge", limit),
            event_json("ahead", limit + 1)
        ]))
        .unwrap();
        let (message, details) = invalid(events(&body, BodyFormat::Json, NOW_MS));
        assert_eq!(
            message,
            "batch rejected: 1 record(s) have a timestamp in the future"
        );
        assert_eq!(details.len(), 1, "{details:?}");
        assert_eq!(details[0]["record"], 1);
        assert_eq!(details[0]["field"], "timestamp");
        assert!(details[0]["message"]
            .as_str()
            .unwrap()
            .contains("more than 24 h ahead of the server clock"));
    }

    #[test]
    fn a_scoped_token_posts_only_its_tenant() {
        let mut mine = event_json("a", NOW_MS);
        mine["tenant"] = json!("acme.com");
        let mut theirs = event_json("b", NOW_MS);
        theirs["tenant"] = json!("globex.com");
        let untenanted = event_json("c", NOW_MS);
        let body = serde_json::to_vec(&json!([mine, theirs, untenanted])).unwrap();
        let batch = events(&body, BodyFormat::Json, NOW_MS).unwrap();
        events_within_tenant(&batch, None).unwrap();
        events_within_tenant(&batch[..1], Some("acme.com")).unwrap();
        let e = events_within_tenant(&batch, Some("acme.com")).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(
            e.message.starts_with("record 1 belongs to another tenant"),
            "{}",
            e.message
        );
        let records: Vec<_> = e.details.iter().map(|d| d["record"].clone()).collect();
        assert_eq!(records, [json!(1), json!(2)]);
        assert!(e.details.iter().all(|d| d["field"] == "tenant"));
        // Bounded, whatever the batch holds.
        let many: Vec<_> = (0..100)
            .map(|i| event_json(&format!("e{i}"), NOW_MS))
            .collect();
        let batch = events(
            &serde_json::to_vec(&many).unwrap(),
            BodyFormat::Json,
            NOW_MS,
        )
        .unwrap();
        let e = events_within_tenant(&batch, Some("acme.com")).unwrap_err();
        assert_eq!(e.details.len(), MAX_SCOPE_DETAILS);
    }

    // ---- membership ----

    const ADD_SHAPE: &str = r#" (expected {"id": N, "addr": "host:port", "role": "data"|"witness", "voter": true, "replaces": N})"#;

    #[test]
    fn add_member_defaults() {
        assert_eq!(
            add_member(br#"{"id": 3, "addr": "127.0.0.1:7103"}"#).unwrap(),
            AddMember {
                id: 3,
                node: TallyNode::data("127.0.0.1:7103"),
                voter: true,
                replaces: None,
            }
        );
    }

    #[test]
    fn add_member_accepts_every_field() {
        assert_eq!(
            add_member(
                br#"{"id": 4, "addr": "[::1]:7104", "role": "witness", "voter": false, "replaces": null}"#
            )
            .unwrap(),
            AddMember {
                id: 4,
                node: TallyNode::witness("[::1]:7104"),
                voter: false,
                replaces: None,
            }
        );
        assert_eq!(
            add_member(br#"{"id": 4, "addr": "db4:7104", "role": "data", "replaces": 2}"#).unwrap(),
            AddMember {
                id: 4,
                node: TallyNode::data("db4:7104"),
                voter: true,
                replaces: Some(2),
            }
        );
    }

    #[test]
    fn add_member_refuses_bad_bodies() {
        for (body, serde) in [
            (&b""[..], "EOF while parsing a value at line 1 column 0"),
            (b"null", "invalid type: null, expected struct AddBody at line 1 column 4"),
            (br#"{"addr": "h:1"}"#, "missing field `id` at line 1 column 15"),
            (br#"{"id": "3", "addr": "h:1"}"#, "invalid type: string \"3\", expected u64 at line 1 column 10"),
            (
                br#"{"id": 3, "addr": "h:1", "name": "x"}"#,
                "unknown field `name`, expected one of `id`, `addr`, `role`, `voter`, `replaces` at line 1 column 31",
            ),
        ] {
            refused_with(add_member(body), &format!("invalid body: {serde}{ADD_SHAPE}"));
        }
    }

    #[test]
    fn add_member_refuses_bad_values() {
        refused_with(
            add_member(br#"{"id": 0, "addr": "h:1"}"#),
            "id must be a positive integer",
        );
        refused_with(
            add_member(br#"{"id": 3, "addr": "h:1", "replaces": 0}"#),
            "replaces must be a positive node id",
        );
        refused_with(
            add_member(br#"{"id": 3, "addr": "h:1", "replaces": 3}"#),
            "node 3 cannot replace itself",
        );
        refused_with(
            add_member(br#"{"id": 3, "addr": "h:1", "replaces": 2, "voter": false}"#),
            r#""replaces" swaps voters: it needs "voter": true"#,
        );
        refused_with(
            add_member(br#"{"id": 3, "addr": "http://h:1"}"#),
            r#"addr "http://h:1" has a scheme: expected host:port, e.g. "10.0.0.4:7101""#,
        );
        refused_with(
            add_member(br#"{"id": 3, "addr": "h"}"#),
            r#"addr "h" has no port: expected host:port, e.g. "10.0.0.4:7101""#,
        );
        refused_with(
            add_member(br#"{"id": 3, "addr": "h:1", "role": "observer"}"#),
            r#"unknown role "observer": expected "data" or "witness""#,
        );
    }

    #[test]
    fn add_member_reports_the_first_problem_in_order() {
        // id, then replaces, then addr, then role.
        let message = refusal(add_member(
            br#"{"id": 0, "addr": "h", "role": "x", "replaces": 0}"#,
        ));
        assert_eq!(message, "id must be a positive integer");
        let message = refusal(add_member(
            br#"{"id": 3, "addr": "h", "role": "x", "replaces": 0}"#,
        ));
        assert_eq!(message, "replaces must be a positive node id");
        let message = refusal(add_member(br#"{"id": 3, "addr": "h", "role": "x"}"#));
        assert!(message.starts_with(r#"addr "h""#), "{message}");
    }

    #[test]
    fn leader_body_forms() {
        for body in [&b""[..], b"  \n", b"{}", br#"{"to": null}"#] {
            assert_eq!(
                leader_body(body).unwrap(),
                LeaderBody { to: None },
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            leader_body(br#"{"to": 2}"#).unwrap(),
            LeaderBody { to: Some(2) }
        );
    }

    #[test]
    fn leader_body_refusals() {
        refused_with(
            leader_body(br#"{"to": 0}"#),
            r#""to" must be a positive node id"#,
        );
        refused_with(
            leader_body(br#"{"from": 1}"#),
            "invalid body: unknown field `from`, expected `to` at line 1 column 7",
        );
        refused_with(
            leader_body(b"null"),
            "invalid body: invalid type: null, expected struct LeaderBody at line 1 column 4",
        );
        refused_with(
            leader_body(br#"{"to": -1}"#),
            "invalid body: invalid value: integer `-1`, expected u64 at line 1 column 9",
        );
    }

    #[test]
    fn node_id_in_path() {
        assert_eq!(node_id("1").unwrap(), 1);
        assert_eq!(node_id("18446744073709551615").unwrap(), u64::MAX);
        for s in ["0", "-1", "x", "", " 2", "18446744073709551616"] {
            refused_with(
                node_id(s),
                &format!("{s:?} is not a node id (a positive integer)"),
            );
        }
    }
}
