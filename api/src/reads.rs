//! Analytic reads served from a data node's in-memory state: `/v1/aggregates` and
//! `/v1/state/digest`. A witness holds no analytic state and forwards these to a data node.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use tally_analytics::{AggregateQuery, Granularity, KeyColumn};
use tally_raft::Role;

use crate::error::{ApiError, ApiResult};
use crate::forward::was_forwarded;
use crate::AppState;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Consistency {
    /// Whatever this data node has applied.
    None,
    /// Confirmed with a quorum by the leader: includes every write acknowledged before.
    Linearizable,
}

pub async fn get_aggregates(
    State(app): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let run = async {
        let (query, consistency) = parse_aggregate_query(&params)?;
        if let Some(resp) = route_read(&app, &headers, &uri, consistency).await? {
            return Ok(resp);
        }
        let applied = app.node.state.read();
        let rows: Vec<Value> = applied
            .state
            .query(&query)
            .into_iter()
            .map(|row| {
                let mut obj = Map::new();
                obj.insert("bucket_ms".into(), json!(row.bucket_ms));
                for (col, value) in row.group {
                    obj.insert(col.as_str().into(), json!(value));
                }
                if let Value::Object(m) = json!(row.measures) {
                    obj.extend(m);
                }
                Value::Object(obj)
            })
            .collect();
        Ok::<_, ApiError>(
            axum::Json(json!({
                "granularity": query.granularity.as_str(),
                "applied_index": applied.applied_index(),
                "node_id": app.node.id,
                "rows": rows,
            }))
            .into_response(),
        )
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn get_digest(
    State(app): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let run = async {
        let consistency = parse_consistency(&params, &["consistency"])?;
        if let Some(resp) = route_read(&app, &headers, &uri, consistency).await? {
            return Ok(resp);
        }
        let applied = app.node.state.read();
        Ok::<_, ApiError>(
            axum::Json(json!({
                "applied_index": applied.applied_index(),
                "digest": applied.state.digest(),
                "node_id": app.node.id,
            }))
            .into_response(),
        )
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
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

fn parse_consistency(params: &HashMap<String, String>, allowed: &[&str]) -> ApiResult<Consistency> {
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

fn parse_aggregate_query(
    params: &HashMap<String, String>,
) -> ApiResult<(AggregateQuery, Consistency)> {
    const ALLOWED: &[&str] = &[
        "granularity",
        "from",
        "to",
        "api",
        "version",
        "group_by",
        "consistency",
    ];
    let consistency = parse_consistency(params, ALLOWED)?;
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
        api: params.get("api").cloned(),
        version: params.get("version").cloned(),
        group_by,
    };
    Ok((query, consistency))
}
