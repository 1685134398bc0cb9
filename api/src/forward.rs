//! Transparent forwarding of a client request to another node (the leader, or a data node
//! when this node is the witness).
//!
//! A forwarded request carries [`FORWARDED_HEADER`]; a node that receives one never forwards
//! it again, so a stale view of the leader costs one hop and a 503, never a loop.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::error::ApiError;

pub const FORWARDED_HEADER: &str = "x-tally-forwarded-by";

#[derive(Clone)]
pub struct Forwarder {
    http: reqwest::Client,
    self_id: u64,
}

impl Forwarder {
    pub fn new(self_id: u64) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Forwarder { http, self_id })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
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
        let url = format!("http://{addr}{path_and_query}");
        let mut req = self
            .http
            .request(method, &url)
            .header(FORWARDED_HEADER, self.self_id.to_string())
            .body(body);
        if let Some(ct) = headers.get(header::CONTENT_TYPE) {
            req = req.header(header::CONTENT_TYPE, ct);
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
    headers.contains_key(FORWARDED_HEADER)
}
