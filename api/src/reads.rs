//! Analytic reads served from a data node's in-memory state: `/v1/aggregates` and
//! `/v1/state/digest`. A witness holds no analytic state and forwards these to a data node.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use tally_analytics::AggregateQuery;
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
        let consistency = params::digest_query(&params)?;
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
    use tally_analytics::Granularity;

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
