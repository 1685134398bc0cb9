//! Transparent forwarding of a client request to another node (the leader, or a data node
//! when this node is the witness).
//!
//! A forwarded request carries [`FORWARDED_HEADER`] with the chain of nodes that forwarded
//! it, so forwarding is bounded: reads and cluster operations go at most one hop, ingest at
//! most two (a write that reached a leader just as it handed over follows it once more). A
//! stale view of the leader costs a hop or a 503, never a loop.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tally_raft::PeerHttp;

use crate::error::ApiError;

pub const FORWARDED_HEADER: &str = "x-tally-forwarded-by";

#[derive(Clone)]
pub struct Forwarder {
    http: reqwest::Client,
    peers: PeerHttp,
    self_id: u64,
}

impl Forwarder {
    /// `peers`: scheme, TLS and source address of connections to peers.
    pub fn new(self_id: u64, peers: PeerHttp) -> Result<Self, reqwest::Error> {
        let http = peers
            .client(Duration::from_millis(500))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Forwarder {
            http,
            peers,
            self_id,
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The URL of `path_and_query` on the member at `addr` (`http` or `https`, as the
    /// cluster speaks).
    pub fn url(&self, addr: &str, path_and_query: &str) -> String {
        self.peers.url(addr, path_and_query)
    }

    /// [`Forwarder::forward`]; when `addr` is the leader's, the forward is given up as soon
    /// as another node is known to lead: a leader that stalls or is cut off must not hold
    /// the request for the whole timeout while the cluster already fails over. The answer
    /// is then 503 `leader_changed` (outcome unknown for a write; a retry with the same
    /// event ids is counted once).
    pub async fn forward_watching_leader(
        &self,
        node: &tally_raft::Node,
        addr: &str,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response {
        let leader = match node.leader() {
            Some((id, n)) if n.addr == addr => id,
            _ => {
                return self
                    .forward(addr, method, path_and_query, headers, body)
                    .await
            }
        };
        tokio::select! {
            resp = self.forward(addr, method, path_and_query, headers, body) => resp,
            new = node.leader_moved_from(leader) => ApiError::unavailable(
                "leader_changed",
                format!(
                    "node {leader} lost leadership to node {new} while it held this request; \
                     its outcome is unknown: retry (with the same event ids, which are counted once)"
                ),
            )
            .into_response(),
        }
    }

    /// Sends `method path_and_query` with `body` to the node at `addr` and relays its answer.
    pub async fn forward(
        &self,
        addr: &str,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response {
        let url = self.url(addr, path_and_query);
        // The chain of nodes that forwarded this request, this one last.
        let chain = match headers.get(FORWARDED_HEADER).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.is_empty() => format!("{prev},{}", self.self_id),
            _ => self.self_id.to_string(),
        };
        let mut req = self
            .http
            .request(method, &url)
            .header(FORWARDED_HEADER, chain)
            .body(body);
        // Content type, and the credentials of a cluster operation (forwarded only to
        // members, which know the secret anyway).
        for name in [
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static(tally_raft::rpc::SECRET_HEADER),
        ] {
            if let Some(value) = headers.get(&name) {
                req = req.header(name, value);
            }
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return ApiError::unavailable(
                    "forward_failed",
                    format!("could not reach node at {addr}: {e}"),
                )
                .into_response()
            }
        };
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                // The request may have been carried out; only the answer was lost.
                return ApiError::unavailable(
                    "forward_failed",
                    format!("lost the answer from {addr} (outcome unknown; retrying with the same event ids is safe): {e}"),
                )
                .into_response();
            }
        };
        let mut out = Response::builder().status(status);
        if let Some(ct) = content_type {
            out = out.header(header::CONTENT_TYPE, ct);
        }
        if let Some(ra) = retry_after {
            out = out.header(header::RETRY_AFTER, ra);
        }
        out.body(Body::from(bytes))
            .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_response())
    }
}

/// Whether this request was already forwarded by another node.
pub fn was_forwarded(headers: &HeaderMap) -> bool {
    forward_hops(headers) > 0
}

/// How many nodes forwarded this request so far.
pub fn forward_hops(headers: &HeaderMap) -> usize {
    forwarded_by(headers).len()
}

/// The ids of the nodes that forwarded this request, first to last (unparsable entries
/// count as unknown nodes).
pub fn forwarded_by(headers: &HeaderMap) -> Vec<Option<u64>> {
    headers
        .get(FORWARDED_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
