//! Snapshot encoding of [`State`].
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic "TALLYANS" (8) | format version u32 (4) | body length u64 (8) | body | SHA-256(body) (32)
//! ```
//!
//! The body is bincode 2 (standard config, serde mode) of the applied index, the
//! analytic state and the pending queue of events the record store may still lack. Every
//! collection in it is ordered (BTreeMap, the dedup queue), so the same state always
//! encodes to the same bytes. The checksum makes a flipped bit an error rather than a
//! silently different state; decoding then re-checks the invariants `apply` maintains.
//! Bump [`SNAPSHOT_VERSION`] on any change to the body's shape, and keep reading the
//! previous one.
//!
//! Versions:
//! * 2 — the pending queue joined the body.
//! * 3 — the key cap: the analytic state ends with its overflow counters, and every
//!   pending event with where it was counted (its folds). A version-2 body loads as a
//!   state without overflow (zero counters, every pending event under its own key), which
//!   is exactly what version 2 had applied.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::aggregate::{Granularity, Series};
use crate::error::AnalyticsError;
use crate::pending::PendingQueue;
use crate::state::{Analytic, FrozenAnalytic, FrozenState, State};

/// First bytes of every analytics snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"TALLYANS";
/// Body format written by this build. It also reads [`PREVIOUS_VERSION`].
pub const SNAPSHOT_VERSION: u32 = 3;
/// The body format of the build before the key cap, still read.
const PREVIOUS_VERSION: u32 = 2;

const HEADER_LEN: usize = 8 + 4 + 8;
const CHECKSUM_LEN: usize = 32;

/// What a snapshot body is written from: the frozen copy's parts, in the order [`Body`]
/// reads them.
#[derive(Serialize)]
struct BodyRef<'a> {
    applied_index: u64,
    analytic: &'a FrozenAnalytic,
    pending: &'a PendingQueue,
}

#[derive(Deserialize)]
struct Body {
    applied_index: u64,
    analytic: Analytic,
    pending: PendingQueue,
}

/// The version-2 body, as the build before the key cap wrote it.
mod v2 {
    use std::collections::VecDeque;

    use serde::Deserialize;

    use crate::aggregate::Series;
    use crate::aggregate::{Folds, OverflowCounts};
    use crate::dedup::DedupWindow;
    use crate::event::Event;
    use crate::pending::{PendingEvent, PendingQueue};
    use crate::state::Analytic;

    #[derive(Deserialize)]
    pub(super) struct Body {
        applied_index: u64,
        analytic: AnalyticV2,
        pending: PendingQueueV2,
    }

    #[derive(Deserialize)]
    struct AnalyticV2 {
        high_water_ms: Option<i64>,
        events_applied: u64,
        dedup: DedupWindow,
        minute: Series,
        hour: Series,
        day: Series,
    }

    #[derive(Deserialize)]
    struct PendingQueueV2 {
        cursor: u64,
        pending: VecDeque<PendingEventV2>,
        dropped: u64,
    }

    #[derive(Deserialize)]
    struct PendingEventV2 {
        log_index: u64,
        ingest_ms: i64,
        event: Event,
    }

    impl From<Body> for super::Body {
        fn from(old: Body) -> super::Body {
            let a = old.analytic;
            let q = old.pending;
            super::Body {
                applied_index: old.applied_index,
                analytic: Analytic {
                    high_water_ms: a.high_water_ms,
                    events_applied: a.events_applied,
                    dedup: a.dedup,
                    minute: a.minute,
                    hour: a.hour,
                    day: a.day,
                    overflow: OverflowCounts::default(),
                },
                pending: PendingQueue {
                    cursor: q.cursor,
                    pending: q
                        .pending
                        .into_iter()
                        .map(|p| PendingEvent {
                            log_index: p.log_index,
                            ingest_ms: p.ingest_ms,
                            event: p.event,
                            // Version 2 had no cap: everything was counted as itself.
                            folds: Folds::default(),
                        })
                        .collect(),
                    dropped: q.dropped,
                },
            }
        }
    }
}

impl FrozenState {
    /// Serializes the state this copies (the bytes [`State::encode_snapshot`] gives).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let body = BodyRef {
            applied_index: self.applied_index,
            analytic: &self.analytic,
            pending: &self.pending,
        };
        // Serializing in-memory ordered collections of plain data into a Vec has no
        // failure mode (bincode fails only on writer errors or unsupported serde
        // features, and these types use none).
        let body = bincode::serde::encode_to_vec(&body, bincode::config::standard())
            .expect("analytics state is always bincode-encodable");
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CHECKSUM_LEN);
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&Sha256::digest(&body));
        out
    }
}

fn corrupt(message: impl Into<String>) -> AnalyticsError {
    AnalyticsError::SnapshotCorrupt(message.into())
}

impl State {
    /// Serializes the whole state. Deterministic: equal states give equal bytes. Servers
    /// encode a [`State::freeze`] copy instead, outside their lock; the bytes are the same.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        self.freeze().encode_snapshot()
    }

    /// Parses bytes written by [`State::encode_snapshot`]. Any damage is an error, never
    /// a panic and never a silently different state.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<State, AnalyticsError> {
        if bytes.len() < SNAPSHOT_MAGIC.len() || bytes[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
            return Err(AnalyticsError::SnapshotMagic);
        }
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(corrupt(format!("truncated: only {} bytes", bytes.len())));
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != SNAPSHOT_VERSION && version != PREVIOUS_VERSION {
            return Err(AnalyticsError::SnapshotVersion {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let declared = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
        let actual = (rest.len() - CHECKSUM_LEN) as u64;
        if declared != actual {
            return Err(corrupt(format!(
                "header declares a {declared}-byte body but {actual} bytes are present"
            )));
        }
        let (body, checksum) = rest.split_at(rest.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != checksum {
            return Err(corrupt("checksum mismatch"));
        }

        let (decoded, used) = if version == PREVIOUS_VERSION {
            decode_body::<v2::Body>(body).map(|(old, used)| (Body::from(old), used))?
        } else {
            decode_body::<Body>(body)?
        };
        if used != body.len() {
            return Err(corrupt(format!(
                "{} trailing bytes after the body",
                body.len() - used
            )));
        }
        for granularity in Granularity::ALL {
            check_series(decoded.analytic.series(granularity), granularity)?;
        }
        check_pending(&decoded.pending)?;
        Ok(State {
            analytic: decoded.analytic,
            applied_index: decoded.applied_index,
            pending: decoded.pending,
        })
    }
}

fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<(T, usize), AnalyticsError> {
    bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|err| corrupt(format!("undecodable body: {err}")))
}

/// The pending queue is ordered by log index and holds nothing the cursor already covers.
fn check_pending(pending: &PendingQueue) -> Result<(), AnalyticsError> {
    let mut last = pending.cursor;
    for p in pending.pending.iter() {
        if p.log_index <= pending.cursor || p.log_index < last {
            return Err(corrupt(format!(
                "pending queue out of order at log index {} (cursor {})",
                p.log_index, pending.cursor
            )));
        }
        last = p.log_index;
    }
    Ok(())
}

/// Buckets must start on their granularity's boundary and hold at least one row, as
/// `apply` guarantees.
fn check_series(series: &Series, granularity: Granularity) -> Result<(), AnalyticsError> {
    for (bucket_ms, rows) in series.iter() {
        if granularity.bucket_start(bucket_ms) != bucket_ms {
            return Err(corrupt(format!(
                "{} bucket {bucket_ms} is not on a bucket boundary",
                granularity.as_str()
            )));
        }
        if rows.is_empty() {
            return Err(corrupt(format!(
                "{} bucket {bucket_ms} is empty",
                granularity.as_str()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, IngestBatch};
    use crate::{AggregateQuery, KeyColumn};

    fn sample_state() -> State {
        let mut state = State::new();
        let events = (0..20)
            .map(|i| Event {
                event_id: format!("id-{i}"),
                ts_ms: 1_700_000_000_000 + i * 97_000,
                api_name: format!("api{}", i % 3),
                api_version: "v1".into(),
                response_code: Some(200 + (i as u16 % 4) * 100),
                response_time_ms: Some(i as u64),
                ..Event::default()
            })
            .collect();
        state.apply(
            7,
            &IngestBatch {
                ingest_ms: 1_700_000_100_000,
                requests: vec![events],
            },
        );
        state
    }

    #[test]
    fn roundtrip_preserves_digest_queries_and_index() {
        let state = sample_state();
        let bytes = state.encode_snapshot();
        assert_eq!(bytes, state.encode_snapshot(), "encoding is deterministic");
        let back = State::decode_snapshot(&bytes).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.digest(), state.digest());
        assert_eq!(back.applied_index(), 7);
        assert_eq!(back.stats(), state.stats());
        for granularity in Granularity::ALL {
            for group_by in [KeyColumn::ALL.to_vec(), vec![]] {
                let query = AggregateQuery {
                    group_by,
                    ..AggregateQuery::new(granularity)
                };
                assert_eq!(back.query(&query), state.query(&query));
            }
        }
        let empty = State::decode_snapshot(&State::new().encode_snapshot()).unwrap();
        assert_eq!(empty.digest(), State::new().digest());
    }

    #[test]
    fn rejects_bad_magic_version_and_truncation() {
        let bytes = sample_state().encode_snapshot();

        let mut bad_magic = bytes.clone();
        bad_magic[0] ^= 0xff;
        assert!(matches!(
            State::decode_snapshot(&bad_magic),
            Err(AnalyticsError::SnapshotMagic)
        ));
        assert!(matches!(
            State::decode_snapshot(b""),
            Err(AnalyticsError::SnapshotMagic)
        ));

        let mut future = bytes.clone();
        future[8..12].copy_from_slice(&(SNAPSHOT_VERSION + 1).to_le_bytes());
        assert!(matches!(
            State::decode_snapshot(&future),
            Err(AnalyticsError::SnapshotVersion {
                found,
                supported: SNAPSHOT_VERSION
            }) if found == SNAPSHOT_VERSION + 1
        ));

        for len in [8, HEADER_LEN, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(
                State::decode_snapshot(&bytes[..len]),
                Err(AnalyticsError::SnapshotCorrupt(_))
            ));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(State::decode_snapshot(&longer).is_err());
    }

    #[test]
    fn every_single_byte_flip_is_an_error() {
        let bytes = sample_state().encode_snapshot();
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x01;
            assert!(
                State::decode_snapshot(&damaged).is_err(),
                "flip at byte {position} went unnoticed"
            );
        }
    }

    /// A body that passes the checksum but breaks an invariant (as a buggy or hostile
    /// writer could produce) is still rejected.
    #[test]
    fn rejects_well_checksummed_but_invalid_bodies() {
        let mut state = sample_state();
        let mut misaligned = state.analytic.minute.to_map();
        let (first, rows) = misaligned.pop_first().unwrap();
        misaligned.insert(first + 1, rows);
        state.analytic.minute = Series::from_buckets(misaligned);
        let err = State::decode_snapshot(&state.encode_snapshot()).unwrap_err();
        assert!(err.to_string().contains("boundary"), "{err}");

        let mut garbage = SNAPSHOT_MAGIC.to_vec();
        let body = vec![0xffu8; 40];
        garbage.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        garbage.extend_from_slice(&(body.len() as u64).to_le_bytes());
        garbage.extend_from_slice(&body);
        garbage.extend_from_slice(&Sha256::digest(&body));
        assert!(matches!(
            State::decode_snapshot(&garbage),
            Err(AnalyticsError::SnapshotCorrupt(_))
        ));
    }
}
