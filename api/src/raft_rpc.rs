//! The server half of Raft RPC: `/raft/*`, bincode bodies, refused without the cluster secret.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, TransferLeaderRequest, VoteRequest};
use serde::Serialize;

use tally_raft::rpc::{self, ClockReply, ClockRequest, SnapshotIndexRequest};
use tally_raft::snapshot_transfer::{self, Accepted, ChunkReply, SnapshotChunk};
use tally_raft::types::{SnapshotData, SnapshotMeta, TypeConfig, Vote};
use tally_raft::Role;

use crate::{read_body, AppState};

/// Snapshots travel in one request; this bounds what a peer may make us buffer.
use tally_raft::rpc::MAX_BODY_BYTES as MAX_RPC_BYTES;

fn reply<T: Serialize, E: std::fmt::Display>(result: Result<T, E>) -> Response {
    match result {
        Ok(value) => match rpc::encode(&value) {
            Ok(bytes) => (StatusCode::OK, bytes).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Checks the secret and decodes the body, or says why not.
async fn accept<T: serde::de::DeserializeOwned>(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Response> {
    accept_within(app, headers, body, MAX_RPC_BYTES).await
}

/// [`accept`] with a smaller body bound, for RPCs whose requests are a few bytes.
async fn accept_within<T: serde::de::DeserializeOwned>(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
    max_bytes: usize,
) -> Result<T, Response> {
    let given = headers
        .get(rpc::SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !rpc::secret_matches(&app.secret, given) {
        return Err((StatusCode::UNAUTHORIZED, "missing or wrong cluster secret").into_response());
    }
    let bytes = read_body(body, max_bytes)
        .await
        .map_err(IntoResponse::into_response)?;
    rpc::decode(&bytes).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())
}

pub async fn append(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match accept::<AppendEntriesRequest<TypeConfig>>(&app, &headers, body).await {
        Ok(req) => reply(app.node.raft.append_entries(req).await),
        Err(resp) => resp,
    }
}

pub async fn vote(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match accept::<VoteRequest<TypeConfig>>(&app, &headers, body).await {
        Ok(req) => reply(app.node.raft.vote(req).await),
        Err(resp) => resp,
    }
}

pub async fn pre_vote(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match accept::<VoteRequest<TypeConfig>>(&app, &headers, body).await {
        Ok(req) => reply(app.node.raft.pre_vote(req).await),
        Err(resp) => resp,
    }
}

pub async fn snapshot(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let (vote, meta, data) =
        match accept::<(Vote, SnapshotMeta, SnapshotData)>(&app, &headers, body).await {
            Ok(v) => v,
            Err(resp) => return resp,
        };
    match install(&app, vote, meta, data).await {
        Ok(resp) => reply(Ok::<_, std::convert::Infallible>(resp)),
        Err(resp) => resp,
    }
}

/// One chunk of a snapshot; the last one installs it (`tally_raft::snapshot_transfer`).
pub async fn snapshot_chunk(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A chunk, plus its vote and meta (which hold the membership: a few KiB).
    const MAX_CHUNK_BODY: usize = snapshot_transfer::MAX_CHUNK_BYTES + (1 << 20);
    let chunk = match accept_within::<SnapshotChunk>(&app, &headers, body, MAX_CHUNK_BODY).await {
        Ok(chunk) => chunk,
        Err(resp) => return resp,
    };
    let incoming = app.node.incoming_snapshot.clone();
    let accepted = match tokio::task::spawn_blocking(move || incoming.accept(chunk)).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
            return (StatusCode::CONFLICT, e.to_string()).into_response()
        }
        Ok(Err(e)) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("storing the snapshot chunk: {e}"),
            )
                .into_response()
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    match accepted {
        Accepted::More(next_offset) => {
            reply(Ok::<_, std::convert::Infallible>(ChunkReply::Received {
                next_offset,
            }))
        }
        Accepted::Complete { vote, meta, data } => match install(&app, vote, meta, data).await {
            Ok(resp) => reply(Ok::<_, std::convert::Infallible>(ChunkReply::Installed(
                resp,
            ))),
            Err(resp) => resp,
        },
    }
}

/// Installs a received snapshot; `Err` is the refusal to answer with.
async fn install(
    app: &AppState,
    vote: Vote,
    meta: SnapshotMeta,
    data: SnapshotData,
) -> Result<SnapshotResponse<TypeConfig>, Response> {
    // A data node installs only real analytic state. Refusing here (before openraft sees
    // it) keeps a bad snapshot from becoming a storage error that stops the node.
    // Decoding a large state takes a while: on a blocking thread, not the worker that also
    // serves heartbeats.
    let data = if app.node.role == Role::Data {
        let checked = tokio::task::spawn_blocking(move || {
            let valid = tally_analytics::State::decode_snapshot(&data).map(drop);
            (data, valid)
        })
        .await;
        match checked {
            Ok((data, Ok(()))) => data,
            Ok((_, Err(e))) => {
                return Err((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("refusing snapshot without valid analytic state: {e}"),
                )
                    .into_response())
            }
            Err(e) => {
                return Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
            }
        }
    } else {
        data
    };
    let snapshot = openraft::Snapshot {
        meta,
        snapshot: data,
    };
    app.node
        .raft
        .install_full_snapshot(vote, snapshot)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response())
}

/// Tally's own RPC: how far this node's snapshot reaches, for the leader's snapshot floor.
pub async fn snapshot_index(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept_within::<SnapshotIndexRequest>(&app, &headers, body, 1024).await {
        Ok(_) => reply(Ok::<_, std::convert::Infallible>(app.node.snapshot_index())),
        Err(resp) => resp,
    }
}

/// Tally's own RPC: this node's wall clock, for the voters' clock samples (`clock`).
pub async fn clock(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match accept_within::<ClockRequest>(&app, &headers, body, 1024).await {
        Ok(_) => reply(Ok::<_, std::convert::Infallible>(ClockReply {
            node_id: app.node.id,
            now_ms: tally_raft::now_ms(),
        })),
        Err(resp) => resp,
    }
}

pub async fn transfer_leader(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept::<TransferLeaderRequest<TypeConfig>>(&app, &headers, body).await {
        Ok(req) => reply(app.node.raft.handle_transfer_leader(req).await),
        Err(resp) => resp,
    }
}
