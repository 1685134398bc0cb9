//! The event model and the Raft entry payload.
//!
//! These types are written into the Raft log with bincode 2's serde mode, which is not
//! self-describing: it cannot skip fields, flatten, or guess variants. So they carry
//! plain derives only — every field is always encoded, in declaration order. Changing
//! field order or types changes the log format. JSON input never deserializes into them
//! directly; `validate` reads JSON its own way and builds them.

use serde::{Deserialize, Serialize};

/// What the gateway saw: a served request, a fault, or a throttled call.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Request,
    Fault,
    Throttle,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Request, Kind::Fault, Kind::Throttle];

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Fault => "fault",
            Kind::Throttle => "throttle",
        }
    }
}

/// One validated gateway event (docs/api.md). Optional fields that were absent or `null`
/// in the input are `None`; `tenant` defaults to `""`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    /// Event time, epoch milliseconds UTC (input: integer ms or an RFC 3339 string).
    pub ts_ms: i64,
    pub kind: Kind,
    pub api_name: String,
    pub api_version: String,
    pub tenant: String,
    pub api_context: Option<String>,
    pub api_creator: Option<String>,
    pub resource: Option<String>,
    pub method: Option<String>,
    pub hostname: Option<String>,
    pub destination: Option<String>,
    pub protocol: Option<String>,
    pub application_id: Option<String>,
    pub application_name: Option<String>,
    pub application_owner: Option<String>,
    pub username: Option<String>,
    pub user_tenant: Option<String>,
    pub user_ip: Option<String>,
    pub user_agent: Option<String>,
    pub response_code: Option<u16>,
    pub response_time_ms: Option<u64>,
    pub backend_latency_ms: Option<u64>,
    pub security_latency_ms: Option<u64>,
    pub throttling_latency_ms: Option<u64>,
    pub request_mediation_latency_ms: Option<u64>,
    pub response_mediation_latency_ms: Option<u64>,
    pub other_latency_ms: Option<u64>,
    pub response_size: Option<u64>,
    pub cache_hit: Option<bool>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub throttled_reason: Option<String>,
}

/// The payload of one ingest entry in the Raft log.
///
/// The leader's batcher group-commits several client requests into one entry and stamps
/// it with its wall clock (`ingest_ms`) *before* proposing, so every replica applies the
/// same bytes and no replica reads its own clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestBatch {
    /// Proposer's wall clock at proposal, epoch ms. Drives dedup expiry and retention.
    pub ingest_ms: i64,
    /// One inner vector per client request, in the order the requests were batched.
    pub requests: Vec<Vec<Event>>,
}

/// What applying one client request did; the HTTP layer reports it to that client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// Events in the request, duplicates included (they are acknowledged too).
    pub accepted: u32,
    /// Events whose id had already been counted: earlier in the same request, earlier in
    /// the entry, or in an earlier entry still inside the dedup window.
    pub duplicates: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_batch_roundtrips_through_bincode_serde() {
        let full = Event {
            event_id: "e-1".into(),
            ts_ms: 1_700_000_000_123,
            kind: Kind::Fault,
            api_name: "pets".into(),
            api_version: "v1".into(),
            tenant: "carbon.super".into(),
            resource: Some("/pets/{id}".into()),
            method: Some("GET".into()),
            user_ip: Some("::1".into()),
            response_code: Some(503),
            response_time_ms: Some(42),
            response_size: Some(0),
            cache_hit: Some(false),
            error_message: Some("backend down ✗".into()),
            ..Event::default()
        };
        let minimal = Event {
            event_id: "e-2".into(),
            ts_ms: -5,
            api_name: "a".into(),
            api_version: "1".into(),
            ..Event::default()
        };
        let batch = IngestBatch {
            ingest_ms: 1_700_000_001_000,
            requests: vec![vec![full, minimal.clone()], vec![], vec![minimal]],
        };
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&batch, config).unwrap();
        let (back, used): (IngestBatch, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, batch);

        let outcome = BatchOutcome {
            accepted: 7,
            duplicates: 2,
        };
        let bytes = bincode::serde::encode_to_vec(outcome, config).unwrap();
        let (back, _): (BatchOutcome, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, outcome);
    }

    #[test]
    fn kind_names_match_serde_names() {
        for kind in Kind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
}
