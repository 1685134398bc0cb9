//! Analytic reads served from a data node's in-memory state: `/v1/aggregates` and
//! `/v1/state/digest`. A witness holds no analytic state and forwards these to a data node.
//!
//! Neither runs on an async worker or walks the state under its lock: an aggregate query
//! runs on a blocking thread, holds the read lock only while it collects its rows (at most
//! `read.max_aggregate_rows`, or it stops and answers 400) and encodes them after; a digest
//! hashes a frozen copy on a blocking thread, once per applied index.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use tally_analytics::{AggregateQuery, AggregateRow, KeyColumn, Measures};
use tally_raft::state_machine::SharedState;
use tally_raft::Role;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::forward::was_forwarded;
use crate::params::{self, Consistency};
use crate::AppState;

pub async fn get_aggregates(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let run = async {
        let (mut query, consistency) = params::aggregate_query(&params)?;
        confine_to_tenant(&mut query, caller.tenant())?;
        if let Some(resp) = route_read(&app, &headers, &uri, consistency).await? {
            return Ok(resp);
        }
        let state = app.node.state.clone();
        let (node_id, max_rows) = (app.node.id, app.limits.max_aggregate_rows);
        let body = tokio::task::spawn_blocking(move || {
            aggregates_answer(&state, &query, max_rows, node_id)
        })
        .await
        .map_err(|e| ApiError::internal(format!("aggregate query failed: {e}")))??;
        Ok::<_, ApiError>(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Runs an aggregate query and encodes its answer; blocking work, run off the async
/// workers. The read lock is held only while the (bounded) rows are collected; the JSON is
/// built after it is released.
fn aggregates_answer(
    state: &SharedState,
    query: &AggregateQuery,
    max_rows: usize,
    node_id: u64,
) -> ApiResult<Vec<u8>> {
    let (applied_index, rows) = {
        let applied = state.read();
        (
            applied.applied_index(),
            applied.state.query_bounded(query, max_rows),
        )
    };
    let rows = rows.map_err(|_| too_many_rows(max_rows))?;
    let answer = AggregatesAnswer {
        granularity: query.granularity.as_str(),
        applied_index,
        node_id,
        rows: rows.iter().map(FlatRow::of).collect(),
    };
    serde_json::to_vec(&answer)
        .map_err(|e| ApiError::internal(format!("encoding the aggregates answer: {e}")))
}

/// The 400 of a query whose answer would pass `read.max_aggregate_rows`. Refused rather
/// than cut: rows come in bucket order, so a cut answer would silently lose the end of the
/// range, and sums over it would look right and be wrong.
fn too_many_rows(max_rows: usize) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "too_many_rows",
        format!(
            "this query gives more than {max_rows} rows (read.max_aggregate_rows); narrow \
             from/to, filter by tenant, api or version, group_by fewer columns, or ask a \
             coarser granularity"
        ),
    )
}

/// `{"granularity", "applied_index", "node_id", "rows"}`.
#[derive(Serialize)]
struct AggregatesAnswer<'a> {
    granularity: &'static str,
    applied_index: u64,
    node_id: u64,
    rows: Vec<FlatRow<'a>>,
}

/// One row as docs/api.md shows it: `bucket_ms`, the `group_by` columns, the measures.
#[derive(Serialize)]
struct FlatRow<'a> {
    bucket_ms: i64,
    #[serde(flatten)]
    group: GroupColumns<'a>,
    #[serde(flatten)]
    measures: &'a Measures,
}

impl<'a> FlatRow<'a> {
    fn of(row: &'a AggregateRow) -> Self {
        FlatRow {
            bucket_ms: row.bucket_ms,
            group: GroupColumns(&row.group),
            measures: &row.measures,
        }
    }
}

struct GroupColumns<'a>(&'a [(KeyColumn, String)]);

impl Serialize for GroupColumns<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                .iter()
                .map(|(column, value)| (column.as_str(), value)),
        )
    }
}

pub async fn get_digest(
    State(app): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let run = async {
        let consistency = params::digest_query(&params)?;
        if let Some(resp) = route_read(&app, &headers, &uri, consistency).await? {
            return Ok(resp);
        }
        let digest = app
            .node
            .state
            .digest()
            .await
            .map_err(|e| ApiError::internal(format!("computing the state digest: {e}")))?;
        Ok::<_, ApiError>(
            axum::Json(json!({
                "applied_index": digest.applied_index,
                "digest": digest.digest,
                "node_id": app.node.id,
            }))
            .into_response(),
        )
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// A tenant-scoped caller reads only its tenant's rows: the query is filtered to it, and
/// asking for another tenant is a 403 rather than a silently empty answer.
fn confine_to_tenant(query: &mut AggregateQuery, scope: Option<&str>) -> ApiResult<()> {
    let Some(scope) = scope else { return Ok(()) };
    match &query.tenant {
        Some(asked) if asked != scope => Err(crate::auth::forbidden(format!(
            "this token reads only tenant {scope:?}, not {asked:?}"
        ))),
        _ => {
            query.tenant = Some(scope.to_string());
            Ok(())
        }
    }
}

/// Decides where a read is answered. `Ok(None)`: answer it here, from local state (after
/// the linearizable barrier when asked). `Ok(Some(resp))`: another node answered.
async fn route_read(
    app: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    consistency: Consistency,
) -> ApiResult<Option<Response>> {
    let node = &app.node;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target = match (node.role, consistency) {
        (Role::Data, Consistency::None) => return Ok(None),
        (Role::Data, Consistency::Linearizable) if node.is_leader() => {
            node.linearizable_barrier().await.map_err(|e| {
                ApiError::unavailable(
                    "not_linearizable",
                    format!("cannot confirm leadership for a linearizable read: {e}"),
                )
            })?;
            return Ok(None);
        }
        // A linearizable read is confirmed by the leader; the witness never answers from
        // state of its own, so it sends reads to the leader when that is a data node and
        // to any data node otherwise.
        (Role::Data, Consistency::Linearizable) => leader_addr(app)?,
        (Role::Witness, _) => match node.leader() {
            Some((_, n)) if !n.witness => n.addr,
            _ if consistency == Consistency::Linearizable => leader_addr(app)?,
            _ => node
                .data_peers()
                .into_iter()
                .next()
                .map(|(_, n)| n.addr)
                .ok_or_else(|| {
                    ApiError::unavailable(
                        "no_data_node",
                        "no data node is known to answer this read",
                    )
                })?,
        },
    };
    if was_forwarded(headers) {
        return Err(ApiError::unavailable(
            "leader_changed",
            "the node this read was forwarded to cannot answer it now; retry",
        ));
    }
    Ok(Some(
        app.forwarder
            .forward_watching_leader(&app.node, &target, Method::GET, path, headers, Bytes::new())
            .await,
    ))
}

fn leader_addr(app: &AppState) -> ApiResult<String> {
    match app.node.leader() {
        Some((_, n)) if !n.witness => Ok(n.addr),
        Some(_) => Err(ApiError::unavailable(
            "witness_leader",
            "the witness holds leadership; linearizable reads resume when a data node takes over",
        )),
        None => Err(ApiError::unavailable(
            "no_leader",
            "no leader is known right now; retry",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_analytics::{Event, Granularity, IngestBatch};
    use tally_raft::state_machine::Applied;

    /// 2024-05-01T12:00:00Z.
    const T: i64 = 1_714_564_800_000;

    /// 30 minute rows: 10 minutes × 3 apis.
    fn shared_state() -> SharedState {
        let mut state = tally_analytics::State::new();
        let events = (0..30)
            .map(|i| Event {
                event_id: format!("e{i}"),
                ts_ms: T + (i / 3) * 60_000,
                api_name: format!("api{}", i % 3),
                api_version: "v1".into(),
                response_code: Some(200),
                response_time_ms: Some(7),
                ..Event::default()
            })
            .collect();
        state.apply(
            4,
            &IngestBatch {
                ingest_ms: T + 3_600_000,
                requests: vec![events],
            },
        );
        SharedState::new(Applied {
            state,
            ..Applied::default()
        })
    }

    #[test]
    fn an_aggregates_answer_is_flat_json_up_to_the_row_cap() {
        let state = shared_state();
        let query = AggregateQuery {
            group_by: vec![KeyColumn::ApiName],
            ..AggregateQuery::new(Granularity::Minute)
        };
        let body = aggregates_answer(&state, &query, 30, 7).unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["granularity"], "minute");
        assert_eq!(answer["node_id"], 7);
        assert_eq!(
            answer["applied_index"], 0,
            "no log entry applied in this test"
        );
        let rows = answer["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 30);
        assert_eq!(
            rows[0],
            json!({"bucket_ms": T, "api_name": "api0", "requests": 1, "errors_4xx": 0,
                "errors_5xx": 0, "faults": 0, "throttled": 0, "latency_count": 1,
                "latency_sum_ms": 7, "latency_min_ms": 7, "latency_max_ms": 7,
                "bytes_sum": 0})
        );
        // The same rows as the state's own query, in its order.
        let expected: Vec<serde_json::Value> = state
            .read()
            .state
            .query(&query)
            .iter()
            .map(AggregateRow::to_json)
            .collect();
        assert_eq!(rows, &expected);
    }

    #[test]
    fn an_aggregates_answer_over_the_cap_is_a_400_that_says_how_to_narrow_it() {
        let state = shared_state();
        let query = AggregateQuery::new(Granularity::Minute);
        let err = aggregates_answer(&state, &query, 29, 1).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.code, "too_many_rows");
        for hint in ["29", "read.max_aggregate_rows", "from/to", "group_by"] {
            assert!(err.message.contains(hint), "{hint}: {}", err.message);
        }
        // Per bucket instead of per key: 10 rows, which fit.
        let coarser = AggregateQuery {
            group_by: vec![],
            ..query
        };
        assert!(aggregates_answer(&state, &coarser, 29, 1).is_ok());
    }

    #[test]
    fn a_scoped_caller_reads_only_its_tenant() {
        let mut q = AggregateQuery::new(Granularity::Hour);
        confine_to_tenant(&mut q, None).unwrap();
        assert_eq!(q.tenant, None);
        confine_to_tenant(&mut q, Some("acme.com")).unwrap();
        assert_eq!(q.tenant.as_deref(), Some("acme.com"));
        confine_to_tenant(&mut q, Some("acme.com")).unwrap();
        let e = confine_to_tenant(&mut q, Some("globex.com")).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::FORBIDDEN);
        assert!(e.message.contains("globex.com"), "{}", e.message);
    }
}
