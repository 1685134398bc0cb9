//! `POST /v1/sql`: one read-only query against the record store.
//!
//! The statement is checked by `sqlparser` (exactly one read-only query) and then run in a
//! read-only transaction with a statement timeout, a row cap and a byte budget, so a write
//! that slipped past the parser still fails and no answer outgrows its budget. At most
//! `sql.max_concurrent` queries run at once per node; more get 503 with `Retry-After` at
//! once (the record store's read slots, never a queue). `consistency: "strong"` and `min_index` wait until the
//! record store holds every event up to the index asked for (read-your-writes).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;

use tally_raft::{Node, Role};
use tally_storage::records::{ColumnInfo, QueryLimits, RecordError, Truncated};

use crate::error::{ApiError, ApiResult};
use crate::forward::was_forwarded;
use crate::params;
use crate::{read_body, AppState};

/// Limits every `/v1/sql` query runs under.
#[derive(Clone, Debug)]
pub struct SqlLimits {
    pub timeout: Duration,
    pub max_rows: usize,
    /// Bytes of encoded rows an answer carries at most.
    pub max_result_bytes: usize,
    /// How long a `strong`/`min_index` query waits for the sink to catch up.
    pub catch_up_wait: Duration,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            timeout: Duration::from_secs(10),
            max_rows: 10_000,
            max_result_bytes: 8 << 20,
            catch_up_wait: Duration::from_secs(15),
        }
    }
}

/// Largest accepted request body.
const MAX_SQL_BODY: usize = 1 << 20;

pub async fn post_sql(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    handle(app, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(app: AppState, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let bytes = read_body(body, MAX_SQL_BODY).await?;
    let req = params::sql_query(&bytes)?;
    let strong = req.strong;
    let node = &app.node;

    // Where to run it: a data node with a record store; `strong` on the leader, which
    // alone knows every acknowledged write.
    let target = match node.role {
        Role::Witness => Some(data_node_addr(node, strong)?),
        Role::Data if strong && !node.is_leader() => Some(data_node_addr(node, true)?),
        Role::Data => None,
    };
    if let Some(addr) = target {
        if was_forwarded(&headers) {
            return Err(ApiError::unavailable(
                "leader_changed",
                "the node this query was forwarded to cannot answer it now; retry",
            ));
        }
        return Ok(app
            .forwarder
            .forward_watching_leader(&app.node, &addr, Method::POST, "/v1/sql", &headers, bytes)
            .await);
    }
    if !node.has_record_store() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_record_store",
            "this node has no record_store configured, so there are no SQL tables to query",
        ));
    }
    // Check the statement before waiting for anything: a bad query fails fast.
    tally_storage::records::check_read_only(&req.sql, records_dialect(node)?).map_err(sql_error)?;

    let mut target_index = req.min_index;
    if strong {
        let read_index = node.linearizable_barrier().await.map_err(|e| {
            ApiError::unavailable(
                "not_linearizable",
                format!("cannot confirm leadership: {e}"),
            )
        })?;
        target_index = Some(target_index.unwrap_or(0).max(read_index));
    }
    let watermark = match target_index {
        Some(index) => wait_for_records(node, index, app.limits.sql.catch_up_wait).await?,
        None => record_watermark(node),
    };
    let store = node.records().ok_or_else(|| {
        ApiError::unavailable(
            "record_store_unavailable",
            "the record store has not been reached yet",
        )
    })?;
    let limits = QueryLimits {
        timeout: app.limits.sql.timeout,
        max_rows: app.limits.sql.max_rows,
        max_bytes: app.limits.sql.max_result_bytes,
    };
    let result = store
        .query_read_only(&req.sql, limits)
        .await
        .map_err(sql_error)?;
    let message = result.truncated.map(|cut| match cut {
        Truncated::MaxRows => format!(
            "only the first {} rows are returned (sql.max_rows); add LIMIT or narrow the query",
            result.row_count
        ),
        Truncated::MaxBytes => format!(
            "only the first {} rows are returned: the next would take the answer past \
             sql.max_result_bytes ({} bytes of rows); select fewer columns, add LIMIT or \
             aggregate",
            result.row_count, limits.max_bytes
        ),
    });
    let answer = SqlAnswer {
        columns: &result.columns,
        rows: &result.rows,
        watermark,
        truncated: result.truncated.is_some(),
        truncated_by: result.truncated.map(|cut| match cut {
            Truncated::MaxRows => "max_rows",
            Truncated::MaxBytes => "max_result_bytes",
        }),
        message,
    };
    Ok(axum::Json(answer).into_response())
}

/// The body of a `/v1/sql` answer; `rows` are passed through as the store encoded them.
#[derive(Serialize)]
struct SqlAnswer<'a> {
    columns: &'a [ColumnInfo],
    rows: &'a RawValue,
    watermark: u64,
    truncated: bool,
    /// Which bound cut the answer (`max_rows` or `max_result_bytes`), when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

fn records_dialect(node: &Node) -> ApiResult<tally_storage::records::Dialect> {
    node.records().map(|s| s.dialect()).ok_or_else(|| {
        ApiError::unavailable(
            "record_store_unavailable",
            "the record store has not been reached yet; retry",
        )
    })
}

/// The highest log index up to which the record store holds every event, as this node
/// knows it.
fn record_watermark(node: &Node) -> u64 {
    let applied = node.state.read();
    match applied.state.pending_status().oldest_pending_index {
        Some(oldest) => oldest.saturating_sub(1),
        None => applied.applied_index(),
    }
}

/// Waits until this node has applied `index` and the record store holds every event up
/// to it; returns the watermark.
async fn wait_for_records(node: &Node, index: u64, wait: Duration) -> ApiResult<u64> {
    let deadline = Instant::now() + wait;
    loop {
        let applied = node.state.read().applied_index();
        let watermark = record_watermark(node);
        if applied >= index && watermark >= index {
            return Ok(watermark);
        }
        if Instant::now() >= deadline {
            let mut e = ApiError::unavailable(
                "record_store_behind",
                format!(
                    "the record store holds events up to index {watermark}, not yet {index}; \
                     the sink is catching up (see GET /v1/cluster, \"sink\")"
                ),
            );
            e.retry_after = Some(2);
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn data_node_addr(node: &Node, leader_only: bool) -> ApiResult<String> {
    match node.leader() {
        Some((_, n)) if !n.witness => Ok(n.addr),
        Some(_) if leader_only => Err(ApiError::unavailable(
            "witness_leader",
            "the witness holds leadership; strong reads resume when a data node takes over",
        )),
        None if leader_only => Err(ApiError::unavailable(
            "no_leader",
            "no leader is known right now; retry",
        )),
        _ => node
            .data_peers()
            .into_iter()
            .next()
            .map(|(_, n)| n.addr)
            .ok_or_else(|| {
                ApiError::unavailable("no_data_node", "no data node is known to answer this query")
            }),
    }
}

fn sql_error(e: RecordError) -> ApiError {
    match e {
        RecordError::SqlRejected(m) => ApiError::new(StatusCode::BAD_REQUEST, "sql_rejected", m),
        RecordError::QueryTimeout(m) => ApiError::new(StatusCode::BAD_REQUEST, "query_timeout", m),
        RecordError::Query(m) => ApiError::new(StatusCode::BAD_REQUEST, "query_failed", m),
        RecordError::TooLarge(m) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "result_too_large", m)
        }
        e @ RecordError::Busy { .. } => ApiError::unavailable("sql_busy", e.to_string()),
        other => ApiError::unavailable("record_store_unavailable", other.to_string()),
    }
}
