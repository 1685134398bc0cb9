//! Encoding of Raft RPC bodies and the request header that carries the cluster secret.
//!
//! Bodies are bincode 2 (serde mode, standard config) of openraft's own message types. The
//! server side of these RPCs lives in the `api` crate under `/raft/...`; this module owns the
//! wire format so both sides agree by construction.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// HTTP header that carries the cluster secret on every `/raft` request.
pub const SECRET_HEADER: &str = "x-tally-secret";

/// Paths of the Raft RPC endpoints, relative to a node's base URL.
pub mod path {
    pub const APPEND: &str = "/raft/append";
    pub const VOTE: &str = "/raft/vote";
    pub const PRE_VOTE: &str = "/raft/pre-vote";
    /// The whole snapshot in one body: what versions before chunked transfer send and
    /// accept (still served, and used towards a peer that lacks the chunked path).
    pub const SNAPSHOT: &str = "/raft/snapshot";
    /// One chunk of a snapshot (`crate::snapshot_transfer`).
    pub const SNAPSHOT_CHUNK: &str = "/raft/snapshot-chunk";
    pub const TRANSFER_LEADER: &str = "/raft/transfer-leader";
    /// Tally's own: how far a data member's snapshot reaches (for the snapshot floor).
    pub const SNAPSHOT_INDEX: &str = "/raft/snapshot-index";
    /// Tally's own: the node's wall clock (for bounding the ingest time, `crate::clock`).
    pub const CLOCK: &str = "/raft/clock";
}

/// Body of [`path::SNAPSHOT_INDEX`]: the leader asks a data member how far its snapshot
/// reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotIndexRequest {
    /// The asking node.
    pub from: u64,
}

/// Answer to [`path::SNAPSHOT_INDEX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotIndexReply {
    /// The answering node: the leader counts the answer only from the node it meant to ask.
    pub node_id: u64,
    /// Last log index covered by the node's newest snapshot (`None`: no snapshot yet).
    pub snapshot_index: Option<u64>,
}

/// Body of [`path::CLOCK`]: a data node asks a voter for its wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockRequest {
    /// The asking node.
    pub from: u64,
}

/// Answer to [`path::CLOCK`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReply {
    /// The answering node: a sample counts only from the node asked.
    pub node_id: u64,
    /// Its wall clock when it answered, in epoch milliseconds.
    pub now_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode RPC body: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("cannot decode RPC body: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("RPC body has {0} trailing bytes")]
    Trailing(usize),
}

/// Largest RPC body a node reads (a snapshot travels in one body).
pub const MAX_BODY_BYTES: usize = 1 << 30;

/// Most bytes a decode may claim for what it builds. A length prefix is trusted only up to
/// this, so a short body that declares a huge string or vector is an error, not an
/// allocation that aborts the process. Four times the largest body: integers take up to
/// eight times their varint size in memory, but bodies are mostly strings and bytes.
const DECODE_LIMIT: usize = 4 * MAX_BODY_BYTES;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
>;

/// bincode's standard configuration (the wire format) with the decode limit; the limit
/// changes nothing in what is encoded.
fn config() -> Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())?;
    if read != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - read));
    }
    Ok(value)
}

/// Compares secrets in time independent of where they first differ and of their lengths:
/// both sides are hashed first, so the comparison always runs over 32 bytes and says
/// nothing about how long the expected secret is.
pub fn secret_matches(expected: &str, given: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let expected = Sha256::digest(expected.as_bytes());
    let given = Sha256::digest(given);
    expected
        .iter()
        .zip(given.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_comparison() {
        assert!(secret_matches("abc", b"abc"));
        assert!(!secret_matches("abc", b"abd"));
        assert!(!secret_matches("abc", b"ab"));
        assert!(!secret_matches("", b"x"));
        assert!(secret_matches("", b""));
        assert!(!secret_matches("abc", b"abcabc"));
        assert!(!secret_matches("abc", b"ABC"));
    }

    #[test]
    fn snapshot_index_round_trip() {
        let reply = SnapshotIndexReply {
            node_id: 2,
            snapshot_index: Some(1234),
        };
        assert_eq!(
            decode::<SnapshotIndexReply>(&encode(&reply).unwrap()).unwrap(),
            reply
        );
        let req = SnapshotIndexRequest { from: 1 };
        assert_eq!(
            decode::<SnapshotIndexRequest>(&encode(&req).unwrap()).unwrap(),
            req
        );
    }

    #[test]
    fn clock_round_trip_and_wire_format() {
        let reply = ClockReply {
            node_id: 3,
            now_ms: -1,
        };
        assert_eq!(
            decode::<ClockReply>(&encode(&reply).unwrap()).unwrap(),
            reply
        );
        // Varint integers, zigzag for the signed one: pinned so both sides stay in step.
        assert_eq!(encode(&reply).unwrap(), vec![3, 1]);
        assert_eq!(encode(&ClockRequest { from: 2 }).unwrap(), vec![2]);
    }

    #[test]
    fn the_limit_leaves_the_wire_format_alone() {
        let value = (7u64, "event".to_string(), vec![1u8, 2, 3]);
        assert_eq!(
            encode(&value).unwrap(),
            bincode::serde::encode_to_vec(&value, bincode::config::standard()).unwrap()
        );
    }

    #[test]
    fn an_absurd_declared_length_is_an_error_not_an_abort() {
        // A string, a byte vector and a vector that each claim 2^62 elements in 10 bytes.
        let mut body = vec![0xFD];
        body.extend_from_slice(&(1u64 << 62).to_le_bytes());
        body.push(b'x');
        assert!(matches!(
            decode::<String>(&body),
            Err(CodecError::Decode(_))
        ));
        assert!(matches!(
            decode::<Vec<u8>>(&body),
            Err(CodecError::Decode(_))
        ));
        assert!(matches!(
            decode::<Vec<u64>>(&body),
            Err(CodecError::Decode(_))
        ));
        // Just above the limit, too.
        let mut body = vec![0xFD];
        body.extend_from_slice(&((DECODE_LIMIT as u64) + 1).to_le_bytes());
        assert!(matches!(
            decode::<Vec<u8>>(&body),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut bytes = encode(&42u64).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<u64>(&bytes),
            Err(CodecError::Trailing(1))
        ));
    }
}
