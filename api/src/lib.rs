//! Tally's HTTP API (docs/api.md) and the server half of Raft RPC.
//!
//! * `POST /v1/events` — validate (400 names record and field), then commit through the
//!   leader; followers and the witness forward (or answer 307 with `?redirect`).
//! * `GET /v1/aggregates`, `GET /v1/state/digest` — analytic reads from a data node's state;
//!   the witness forwards them and never answers from state of its own.
//! * `POST /v1/sql` — one read-only query against the record store (MySQL/SQLite).
//! * `GET /v1/cluster`, `POST /v1/cluster/init`, `/healthz`, `/readyz`, `/metrics`.
//! * `POST /v1/cluster/members`, `DELETE /v1/cluster/members/{id}`, `POST /v1/cluster/leader`
//!   — membership changes and hand-over, run on the leader (others forward).
//! * `/raft/*` — Raft RPC, bincode bodies, refused without the cluster secret.
//!
//! Each handler module parses its request through `params`: query strings, bodies and
//! headers in, typed values or the client's `ApiError` out, with no I/O (unit-tested there).
//!
//! Nothing reachable from the network panics: every handler turns failures into a JSON
//! error (`{"error": {"code", "message", "details"}}`) with a 4xx or 503.

pub mod auth;
pub mod cluster;
pub mod error;
pub mod forward;
pub mod in_flight;
pub mod ingest;
pub mod members;
mod params;
pub mod raft_rpc;
pub mod reads;
pub mod server;
pub mod sql;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;
use bytes::Bytes;

use auth::{Access, AuthConfig, Authenticator, Role};
use error::ApiError;
use forward::Forwarder;
pub use sql::SqlLimits;
use tally_raft::Node;

/// Request size limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest `POST /v1/events` body; larger ones get 413.
    pub max_body_bytes: usize,
    pub sql: SqlLimits,
    /// Most rows a `GET /v1/aggregates` answer holds; a query that would give more is a
    /// 400 `too_many_rows`.
    pub max_aggregate_rows: usize,
    /// Requests served at once (Raft RPC and health probes not counted); more get 503.
    pub max_requests_in_flight: usize,
    /// Bytes of ingest bodies read and not yet answered; beyond them, 503.
    pub max_ingest_bytes_in_flight: usize,
}

/// Default of [`Limits::max_aggregate_rows`].
pub const DEFAULT_MAX_AGGREGATE_ROWS: usize = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 << 20,
            sql: SqlLimits::default(),
            max_aggregate_rows: DEFAULT_MAX_AGGREGATE_ROWS,
            max_requests_in_flight: in_flight::DEFAULT_MAX_REQUESTS,
            max_ingest_bytes_in_flight: in_flight::DEFAULT_MAX_INGEST_BYTES,
        }
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub forwarder: Forwarder,
    pub secret: Arc<str>,
    pub auth: Arc<Authenticator>,
    pub in_flight: Arc<in_flight::InFlight>,
    pub limits: Limits,
}

impl AppState {
    pub fn new(node: Arc<Node>, limits: Limits, auth: &AuthConfig) -> Result<Self, reqwest::Error> {
        let secret: Arc<str> = node.options.secret.clone().into();
        Ok(AppState {
            forwarder: Forwarder::new(node.id, node.options.peer_http())?,
            auth: Arc::new(Authenticator::new(auth, secret.clone())),
            in_flight: Arc::new(in_flight::InFlight::new(
                limits.max_requests_in_flight,
                limits.max_ingest_bytes_in_flight,
            )),
            secret,
            node,
            limits,
        })
    }
}

/// The complete router of a node. Who may call what is decided here, per route group
/// (docs/security.md has the table); handlers see the checked [`auth::Caller`].
pub fn router(state: AppState) -> Router {
    let guarded = |routes: Router<AppState>, access: Access| {
        routes.route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), access),
            auth::guard,
        ))
    };
    let cluster_ops = Router::new()
        .route("/v1/cluster/init", post(cluster::post_init))
        .route("/v1/cluster/members", post(members::post_member))
        .route("/v1/cluster/members/{id}", delete(members::delete_member))
        .route("/v1/cluster/leader", post(members::post_leader))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_secret,
        ));
    let ingest = guarded(
        Router::new().route("/v1/events", post(ingest::post_events)),
        Access::Role(Role::Ingest),
    );
    let reads = guarded(
        Router::new().route("/v1/aggregates", get(reads::get_aggregates)),
        Access::Role(Role::Read),
    );
    // SQL reads every tenant's records, and the digest covers (and its changes reveal) every
    // tenant's state: neither can be confined to one tenant.
    let all_tenants = guarded(
        Router::new()
            .route("/v1/sql", post(sql::post_sql))
            .route("/v1/state/digest", get(reads::get_digest)),
        Access::ReadAllTenants,
    );
    let status = guarded(
        Router::new()
            .route("/v1/cluster", get(cluster::get_cluster))
            .route("/metrics", get(cluster::metrics)),
        Access::ReadOrSecret,
    );
    // Raft RPC checks the cluster secret itself (`raft_rpc::accept`), answering in the
    // plain form the peer client expects.
    let raft = Router::new()
        .route(tally_raft::rpc::path::APPEND, post(raft_rpc::append))
        .route(tally_raft::rpc::path::VOTE, post(raft_rpc::vote))
        .route(tally_raft::rpc::path::PRE_VOTE, post(raft_rpc::pre_vote))
        .route(tally_raft::rpc::path::SNAPSHOT, post(raft_rpc::snapshot))
        .route(
            tally_raft::rpc::path::SNAPSHOT_CHUNK,
            post(raft_rpc::snapshot_chunk),
        )
        .route(
            tally_raft::rpc::path::TRANSFER_LEADER,
            post(raft_rpc::transfer_leader),
        )
        .route(
            tally_raft::rpc::path::SNAPSHOT_INDEX,
            post(raft_rpc::snapshot_index),
        )
        .route(tally_raft::rpc::path::CLOCK, post(raft_rpc::clock));
    Router::new()
        .merge(cluster_ops)
        .merge(ingest)
        .merge(reads)
        .merge(all_tenants)
        .merge(status)
        .merge(raft)
        .route("/healthz", get(cluster::healthz))
        .route("/readyz", get(cluster::readyz))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        // Bodies are read with explicit limits in the handlers (`read_body`), which answer
        // with our JSON 413 rather than axum's plain-text one.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            in_flight::limit_requests,
        ))
        .with_state(state)
}

/// Reads a whole request body, refusing more than `limit` bytes with 413, and one that does
/// not arrive within the server's body read timeout with 408.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    read_body_admitting(body, limit, |_| Ok(())).await
}

/// [`read_body`], asking `admit` for every piece before it is kept (an in-flight budget:
/// its refusal ends the read with that answer, before the rest of the body is buffered).
pub async fn read_body_admitting(
    mut body: Body,
    limit: usize,
    mut admit: impl FnMut(usize) -> Result<(), ApiError>,
) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body is larger than {limit} bytes; split the batch"),
        )
    };
    // Read up to the limit even when the declared length is over it: a client that is
    // still sending when the answer comes often cannot read it, and a 413 it never sees
    // helps nobody. What is read counts against the budget as it arrives.
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return Err(too_large());
        }
        admit(data.len())?;
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// The answer to a body that could not be read: 408 when it did not arrive in time.
fn body_error(e: &axum::Error) -> ApiError {
    match find_source::<server::BodyTimeout>(e) {
        Some(timeout) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("{timeout}; send the body at once (or raise http.body_read_timeout_ms)"),
        ),
        None => ApiError::bad_request(format!("could not read request body: {e}")),
    }
}

/// The first error of type `T` in `e`'s source chain.
fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}
