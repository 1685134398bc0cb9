//! Membership operations (docs/api.md, docs/membership.md): `POST /v1/cluster/members`, `DELETE
//! /v1/cluster/members/{id}` and `POST /v1/cluster/leader`.
//!
//! Bodies are validated on whichever node receives them (a bad body gets its 400 there and
//! changes nothing); the operation itself runs on the leader, so a follower or the witness
//! forwards the request, at most once (a forwarded request is never forwarded again). The
//! rules that keep the cluster safe live in `tally_raft::membership`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use tally_protocol::{MembershipAnswer, NodeStatus};
use tally_raft::membership::{self, AddMember, MembershipError, Outcome};
use tally_raft::{NodeId, NotLeader, TallyNode};

use crate::error::ApiError;
use crate::forward::was_forwarded;
use crate::params;
use crate::{read_body, AppState};

/// Membership request bodies are small.
const MAX_BODY: usize = 64 * 1024;
/// How long the leader waits for a node it is about to add to say who it is.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `POST /v1/cluster/members`.
pub async fn post_member(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let run = async {
        let bytes = read_body(body, MAX_BODY).await?;
        let req = params::add_member(&bytes)?;
        if let Some(resp) = route(&app, &headers, Method::POST, "/v1/cluster/members", &bytes).await
        {
            return Ok(resp);
        }
        // Ask the node to be added who it is, unless it is already a member exactly as asked:
        // a wrong address, id or role is refused here, before anything changes.
        if app.node.member(req.id).as_ref() != Some(&req.node) {
            probe(&app, &req).await?;
        }
        let result = membership::add_member(&app.node, req).await;
        finish(
            &app,
            &headers,
            Method::POST,
            "/v1/cluster/members",
            &bytes,
            result,
            None,
        )
        .await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /v1/cluster/members/{id}`.
pub async fn delete_member(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let id = params::node_id(&id)?;
        let path = format!("/v1/cluster/members/{id}");
        if let Some(resp) = route(&app, &headers, Method::DELETE, &path, &Bytes::new()).await {
            return Ok(resp);
        }
        let result = membership::remove_member(&app.node, id).await;
        finish(
            &app,
            &headers,
            Method::DELETE,
            &path,
            &Bytes::new(),
            result,
            None,
        )
        .await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/cluster/leader`, body `{"to": N}` or empty (the best other data voter).
pub async fn post_leader(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let run = async {
        let bytes = read_body(body, MAX_BODY).await?;
        let req = params::leader_body(&bytes)?;
        let path = "/v1/cluster/leader";
        if let Some(resp) = route(&app, &headers, Method::POST, path, &bytes).await {
            return Ok(resp);
        }
        let result = membership::transfer_leader(&app.node, req.to).await;
        let (leader, result) = match result {
            Ok((new, outcome)) => (Some(new), Ok(outcome)),
            Err(e) => (None, Err(e)),
        };
        finish(&app, &headers, Method::POST, path, &bytes, result, leader).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `None` on the leader; otherwise the answer of forwarding the request to the leader (or an
/// error when none is known, or when the request was already forwarded once).
async fn route(
    app: &AppState,
    headers: &HeaderMap,
    method: Method,
    path: &str,
    body: &Bytes,
) -> Option<Response> {
    if app.node.is_leader() {
        return None;
    }
    Some(to_leader(app, headers, method, path, body, app.node.leader()).await)
}

async fn to_leader(
    app: &AppState,
    headers: &HeaderMap,
    method: Method,
    path: &str,
    body: &Bytes,
    leader: Option<(NodeId, TallyNode)>,
) -> Response {
    match leader {
        Some((id, _)) if was_forwarded(headers) => ApiError::unavailable(
            "not_leader",
            format!(
                "this node is not the leader (leadership is moving; node {id} leads now); retry"
            ),
        )
        .into_response(),
        Some((id, node)) if id != app.node.id => {
            app.forwarder
                .forward(&node.addr, method, path, headers, body.clone())
                .await
        }
        _ => ApiError::unavailable(
            "no_leader",
            "no leader is known right now (election in progress or no quorum); retry",
        )
        .into_response(),
    }
}

/// Turns an operation's result into the answer: the outcome and the membership it left, or
/// the error (leadership lost mid-way → forwarded to the new leader, at most once).
async fn finish(
    app: &AppState,
    headers: &HeaderMap,
    method: Method,
    path: &str,
    body: &Bytes,
    result: Result<Outcome, MembershipError>,
    leader: Option<NodeId>,
) -> Result<Response, ApiError> {
    match result {
        Ok(outcome) => Ok(axum::Json(membership_answer(app, outcome, leader)).into_response()),
        Err(MembershipError::NotLeader(NotLeader { leader })) => {
            Ok(to_leader(app, headers, method, path, body, leader).await)
        }
        Err(e) => Err(api_error(e)),
    }
}

fn api_error(e: MembershipError) -> ApiError {
    let message = e.to_string();
    match e {
        MembershipError::Invalid(_) => ApiError::bad_request(message),
        MembershipError::Unsafe(_) => {
            ApiError::new(StatusCode::CONFLICT, "unsafe_membership", message)
        }
        MembershipError::Conflict(_) => {
            ApiError::new(StatusCode::CONFLICT, "member_conflict", message)
        }
        MembershipError::UnknownMember(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_member", message)
        }
        MembershipError::InProgress(_) => {
            let mut e = ApiError::new(
                StatusCode::CONFLICT,
                "membership_change_in_progress",
                message,
            );
            e.retry_after = Some(1);
            e
        }
        MembershipError::CatchUpPending { .. } => {
            let mut e = ApiError::unavailable("catch_up_pending", message);
            e.retry_after = Some(5);
            e
        }
        MembershipError::NotReady(_) => {
            ApiError::new(StatusCode::CONFLICT, "target_not_ready", message)
        }
        MembershipError::Timeout(_) => ApiError::unavailable("outcome_unknown", message),
        MembershipError::NotLeader(_) => ApiError::unavailable("not_leader", message),
        MembershipError::Raft(_) => ApiError::unavailable("unavailable", message),
    }
}

/// The membership as this node sees it (the shape of `members` in `GET /v1/cluster`).
fn membership_answer(app: &AppState, outcome: Outcome, leader: Option<NodeId>) -> MembershipAnswer {
    let m = app.node.metrics();
    let membership = m.membership_config.membership();
    let configs = membership.get_joint_config();
    let voters: Vec<u64> = configs
        .last()
        .map(|c| c.iter().copied().collect())
        .unwrap_or_default();
    let members = tally_raft::status::member_statuses(&m, &voters);
    MembershipAnswer {
        changed: outcome.changed,
        message: outcome.message,
        leader_id: leader.or(m.current_leader),
        voters,
        joint: configs.len() > 1,
        members,
    }
}

/// Asks the node at `req.node.addr` who it is (`GET /v1/cluster`) and refuses to add it when
/// it is unreachable or reports another id or role.
async fn probe(app: &AppState, req: &AddMember) -> Result<(), ApiError> {
    let addr = &req.node.addr;
    let unreachable = |why: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "node_unreachable",
            format!(
                "cannot add node {}: {why}; start it first (it must not run cluster init) and \
                 check the address",
                req.id
            ),
        )
    };
    let resp = app
        .forwarder
        .http()
        .get(app.forwarder.url(addr, "/v1/cluster"))
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|e| unreachable(format!("no answer from {addr}: {e}")))?;
    if !resp.status().is_success() {
        return Err(unreachable(format!(
            "{addr} answered GET /v1/cluster with {}",
            resp.status()
        )));
    }
    let status: NodeStatus = resp
        .json()
        .await
        .map_err(|e| unreachable(format!("{addr} did not answer like a Tally node: {e}")))?;
    if status.node_id != req.id {
        return Err(ApiError::bad_request(format!(
            "the node at {addr} is node {}, not node {}",
            status.node_id, req.id
        )));
    }
    let wanted = req.node.role();
    if status.role != wanted {
        return Err(ApiError::bad_request(format!(
            "node {} at {addr} runs as {}, but the request says role {:?}",
            req.id,
            status.role.as_str(),
            wanted.as_str()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_raft::membership::{
        InProgress, InvalidRequest, MemberConflict, NotReady, OutcomeUnknown, UnsafeChange,
    };

    fn mapped(e: impl Into<MembershipError>) -> (StatusCode, &'static str, Option<u32>, String) {
        let e = api_error(e.into());
        (e.status, e.code, e.retry_after, e.message)
    }

    /// Every kind of membership error keeps its HTTP status, code and Retry-After.
    #[test]
    fn membership_errors_map_to_their_status_and_code() {
        let cases: Vec<(MembershipError, StatusCode, &str, Option<u32>)> = vec![
            (
                InvalidRequest::ZeroId.into(),
                StatusCode::BAD_REQUEST,
                "invalid_request",
                None,
            ),
            (
                UnsafeChange::LastVoter(1).into(),
                StatusCode::CONFLICT,
                "unsafe_membership",
                None,
            ),
            (
                MemberConflict::NoSuccessor.into(),
                StatusCode::CONFLICT,
                "member_conflict",
                None,
            ),
            (
                MembershipError::UnknownMember(9),
                StatusCode::NOT_FOUND,
                "unknown_member",
                None,
            ),
            (
                InProgress::OperationRunning.into(),
                StatusCode::CONFLICT,
                "membership_change_in_progress",
                Some(1),
            ),
            (
                MembershipError::CatchUpPending {
                    id: 4,
                    timeout: Duration::from_secs(20),
                    matched: Some(3),
                    goal: 10,
                },
                StatusCode::SERVICE_UNAVAILABLE,
                "catch_up_pending",
                Some(5),
            ),
            (
                NotReady::Silent(vec![2]).into(),
                StatusCode::CONFLICT,
                "target_not_ready",
                None,
            ),
            (
                OutcomeUnknown::LeaderChanged.into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                Some(1),
            ),
            (
                NotLeader { leader: None }.into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "not_leader",
                Some(1),
            ),
        ];
        for (e, status, code, retry_after) in cases {
            let text = e.to_string();
            let (s, c, r, message) = mapped(e);
            assert_eq!((s, c, r), (status, code, retry_after), "{text}");
            assert_eq!(message, text, "the message is the error's own text");
        }
    }
}
