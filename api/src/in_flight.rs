//! Work in flight, bounded: requests being served, and ingest bytes read but not yet
//! committed (or refused).
//!
//! Both are semaphores tried without waiting: at the bound a request gets 503 with
//! `Retry-After` at once, never a place in an unbounded queue. Raft RPC and the health
//! probes are exempt from the request bound: a flood of clients must not starve the peers
//! (their bodies are bounded by the RPC limits) nor make a supervisor think the node died.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::AppState;

/// Default of [`crate::Limits::max_requests_in_flight`].
pub const DEFAULT_MAX_REQUESTS: usize = 512;
/// Default of [`crate::Limits::max_ingest_bytes_in_flight`]: 256 MiB.
pub const DEFAULT_MAX_INGEST_BYTES: usize = 256 << 20;

/// The two budgets of a node.
pub struct InFlight {
    requests: Arc<Semaphore>,
    ingest_bytes: Arc<Semaphore>,
    max_requests: usize,
    max_ingest_bytes: usize,
}

impl InFlight {
    pub fn new(max_requests: usize, max_ingest_bytes: usize) -> InFlight {
        InFlight {
            requests: Arc::new(Semaphore::new(max_requests)),
            ingest_bytes: Arc::new(Semaphore::new(max_ingest_bytes)),
            max_requests,
            max_ingest_bytes,
        }
    }

    /// A slot for one request, or the 503 to answer.
    pub fn admit_request(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.requests.clone().try_acquire_owned().map_err(|_| {
            ApiError::unavailable(
                "busy",
                format!(
                    "this node is serving {} requests already (http.max_requests_in_flight); \
                     retry after a moment",
                    self.max_requests
                ),
            )
        })
    }

    /// Adds `bytes` of an ingest body to `held`, or the 503 to answer (what `held` holds
    /// is released when it is dropped, with the request).
    pub fn admit_ingest_bytes(
        &self,
        held: &mut Option<OwnedSemaphorePermit>,
        bytes: usize,
    ) -> Result<(), ApiError> {
        let refused = || {
            ApiError::unavailable(
                "ingest_busy",
                format!(
                    "{} bytes of ingest bodies are in flight on this node already \
                     (ingest.max_bytes_in_flight); retry after a moment",
                    self.max_ingest_bytes
                ),
            )
        };
        if bytes == 0 {
            return Ok(());
        }
        let n = u32::try_from(bytes).map_err(|_| refused())?;
        let permit = self
            .ingest_bytes
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| refused())?;
        match held {
            Some(existing) => existing.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

/// Whether a path is exempt from the request bound.
fn exempt(path: &str) -> bool {
    path.starts_with("/raft/") || path == "/healthz" || path == "/readyz"
}

/// Middleware: holds a request slot while the request is served.
pub async fn limit_requests(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    match app.in_flight.admit_request() {
        Ok(_slot) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn requests_beyond_the_bound_are_refused_at_once_and_slots_come_back() {
        let f = InFlight::new(2, 100);
        let a = f.admit_request().unwrap();
        let _b = f.admit_request().unwrap();
        let e = f.admit_request().unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after, Some(1));
        assert!(
            e.message.contains("http.max_requests_in_flight"),
            "{}",
            e.message
        );
        drop(a);
        let _c = f.admit_request().unwrap();
    }

    #[test]
    fn ingest_bytes_add_up_per_request_and_are_released_with_it() {
        let f = InFlight::new(10, 100);
        let mut first = None;
        f.admit_ingest_bytes(&mut first, 60).unwrap();
        f.admit_ingest_bytes(&mut first, 30).unwrap();
        let mut second = None;
        let e = f.admit_ingest_bytes(&mut second, 20).unwrap_err();
        assert_eq!(e.code, "ingest_busy");
        f.admit_ingest_bytes(&mut second, 10).unwrap();
        drop(first);
        f.admit_ingest_bytes(&mut second, 80).unwrap();
        f.admit_ingest_bytes(&mut second, 0).unwrap();
        assert!(exempt("/raft/append") && exempt("/readyz") && !exempt("/v1/events"));
    }
}
