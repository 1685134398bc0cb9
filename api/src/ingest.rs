//! `POST /v1/events`: validate, then commit through the leader.

use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

use tally_raft::{IngestError, NotLeader};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::forward::forwarded_by;
use crate::params;

/// Forwarding hops an ingest request may take: to the leader a node knows, and once more
/// if that node has just handed leadership over.
const MAX_INGEST_HOPS: usize = 2;
use crate::{read_body_admitting, AppState};

/// Bodies up to this size are parsed on the async worker; larger ones (up to
/// `ingest.max_body_bytes`, tens of milliseconds of parsing) on a blocking thread, so that
/// Raft heartbeats and other requests on the same worker never wait behind them.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// `now`: the time event times are checked against (not later than 24 h ahead of it).
async fn parse_events(
    bytes: bytes::Bytes,
    format: tally_analytics::BodyFormat,
    now: i64,
) -> Result<Vec<tally_analytics::Event>, ApiError> {
    if bytes.len() <= INLINE_PARSE_BYTES {
        return params::events(&bytes, format, now);
    }
    tokio::task::spawn_blocking(move || params::events(&bytes, format, now))
        .await
        .map_err(|e| ApiError::internal(format!("parsing the batch failed: {e}")))?
}

pub async fn post_events(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(app, caller, params, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    app: AppState,
    caller: Caller,
    params: HashMap<String, String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let query = params::events_query(&params)?;
    // Held until the request is answered: what was read, parsed and queued counts against
    // the node's ingest budget until then.
    let mut held = None;
    let bytes = read_body_admitting(body, app.limits.max_body_bytes, |n| {
        app.in_flight.admit_ingest_bytes(&mut held, n)
    })
    .await?;
    let format = params::body_format(&headers)?;
    // Validate before anything else: a bad batch gets its 400 from whichever node it hit,
    // and changes nothing anywhere. Event times are checked against the cluster's time (this
    // node's clock held near its voters'), so a node whose clock jumped ahead lets no
    // far-future events in.
    let events = parse_events(bytes.clone(), format, app.node.clock.trusted_now_ms()).await?;
    params::events_within_tenant(&events, caller.tenant())?;

    // While an election runs (a leader just died or handed over), hold the request for
    // up to one election timeout rather than bounce it with a 503 at once.
    if app.node.leader().is_none() {
        let patience = Duration::from_millis(app.node.options.timing.election_max_ms);
        app.node.wait_for_leader(patience).await;
    }
    match app.node.ingest(events, bytes.len()).await {
        Ok(ack) => Ok((
            StatusCode::OK,
            axum::Json(json!({
                "accepted": ack.accepted,
                "duplicates": ack.duplicates,
                "index": ack.index,
            })),
        )
            .into_response()),
        Err(IngestError::NotLeader(NotLeader { leader: Some((id, node)) })) if id != app.node.id => {
            let chain = forwarded_by(&headers);
            if chain.len() >= MAX_INGEST_HOPS || chain.contains(&Some(id)) {
                return Err(ApiError::unavailable(
                    "leader_changed",
                    format!("leadership is moving (node {id} is leader now); retry"),
                ));
            }
            let path = "/v1/events";
            if query.redirect {
                // Members serve the scheme they speak to each other.
                let location = app.forwarder.url(&node.addr, path);
                return Ok((
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location.clone())],
                    axum::Json(json!({"leader": id, "location": location})),
                )
                    .into_response());
            }
            Ok(app
                .forwarder
                .forward_watching_leader(&app.node, &node.addr, Method::POST, path, &headers, bytes)
                .await)
        }
        Err(IngestError::NotLeader(_)) => Err(ApiError::unavailable(
            "no_leader",
            "no leader is known right now (election in progress or no quorum); retry",
        )),
        Err(IngestError::WitnessLeader) => Err(ApiError::unavailable(
            "witness_leader",
            "the witness holds leadership and cannot acknowledge events; retry shortly",
        )),
        Err(IngestError::Overloaded) => Err(ApiError::unavailable(
            "overloaded",
            "the ingest queue is full; retry after a moment",
        )),
        Err(IngestError::SinkBacklog { pending }) => {
            let mut e = ApiError::unavailable(
                "record_store_backlog",
                format!("{pending} events are waiting for the record store (sink.max_backlog_events reached); ingest resumes as it catches up"),
            );
            e.retry_after = Some(5);
            Err(e)
        }
        Err(IngestError::Unknown(m)) => Err(ApiError::unavailable(
            "outcome_unknown",
            format!("{m}; the events may or may not be counted: retry with the same event ids (duplicates are counted once)"),
        )),
        Err(IngestError::Unavailable(e)) => Err(ApiError::unavailable("unavailable", e.to_string())),
        Err(IngestError::ShuttingDown) => Err(ApiError::unavailable("unavailable", "node is shutting down")),
    }
}
