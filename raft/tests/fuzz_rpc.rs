//! Property-based fuzzing of Raft RPC decoding: any body a peer (or an attacker holding the
//! secret) sends decodes to a message or an error, never a panic or an allocation the body
//! does not pay for. Two generators: raw bytes, and valid encodings of every message type
//! with bytes flipped, cut, inserted or overwritten by large varints (so the declared
//! lengths inside are wrong). The test command runs a short pass; `scripts/fuzz.sh` runs a
//! million cases per target (`PROPTEST_CASES`).

use openraft::entry::RaftEntry;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft::testing::log_id;
use openraft::type_config::alias::{EntryOf, VoteOf};
use proptest::prelude::*;

use tally_analytics::{Event, IngestBatch};
use tally_raft::rpc::{self, SnapshotIndexReply, SnapshotIndexRequest};
use tally_raft::types::{SnapshotData, SnapshotMeta, StoredMembership, Vote};
use tally_raft::{Request, TypeConfig};

type Entry = EntryOf<TypeConfig>;

/// Cases per property: `PROPTEST_CASES` when set (the long run), else a short pass.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(i: u64) -> Event {
    Event {
        event_id: format!("e-{i}"),
        ts_ms: 1_714_564_800_000,
        api_name: "Shop".into(),
        api_version: "v1".into(),
        response_code: Some(200),
        resource: Some("/items/{id}".into()),
        ..Event::default()
    }
}

/// Valid encodings of every message the `/raft` endpoints decode.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let vote: Vote = VoteOf::<TypeConfig>::new(3, 1);
    let entries: Vec<Entry> = vec![
        Entry::new_blank(log_id::<TypeConfig>(3, 1, 10)),
        Entry::new_normal(
            log_id::<TypeConfig>(3, 1, 11),
            Request::Ingest(IngestBatch {
                ingest_ms: 1_714_564_800_000,
                requests: vec![vec![event(1), event(2)], vec![event(3)]],
            }),
        ),
        Entry::new_normal(log_id::<TypeConfig>(3, 1, 12), Request::SinkCursor(11)),
        Entry::new_normal(log_id::<TypeConfig>(3, 1, 13), Request::SnapshotFloor(9)),
    ];
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id::<TypeConfig>(3, 1, 9)),
        entries,
        leader_commit: Some(log_id::<TypeConfig>(3, 1, 9)),
    };
    let vote_req = VoteRequest::<TypeConfig>::new(vote, Some(log_id::<TypeConfig>(2, 2, 8)));
    let meta = SnapshotMeta {
        last_log_id: Some(log_id::<TypeConfig>(3, 1, 13)),
        last_membership: StoredMembership::default(),
    };
    let snapshot: (Vote, SnapshotMeta, SnapshotData) = (vote, meta, vec![7u8; 64]);
    let transfer =
        TransferLeaderRequest::<TypeConfig>::new(vote, 2, Some(log_id::<TypeConfig>(3, 1, 13)));
    vec![
        ("append", rpc::encode(&append).unwrap()),
        ("vote", rpc::encode(&vote_req).unwrap()),
        ("snapshot", rpc::encode(&snapshot).unwrap()),
        ("transfer", rpc::encode(&transfer).unwrap()),
        (
            "snapshot-index",
            rpc::encode(&SnapshotIndexRequest { from: 1 }).unwrap(),
        ),
        (
            "snapshot-index-reply",
            rpc::encode(&SnapshotIndexReply {
                node_id: 2,
                snapshot_index: Some(5),
            })
            .unwrap(),
        ),
    ]
}

/// Decodes `bytes` as every message type; only a panic (or an abort) can fail this.
fn decode_all(bytes: &[u8]) {
    let _ = rpc::decode::<AppendEntriesRequest<TypeConfig>>(bytes);
    let _ = rpc::decode::<VoteRequest<TypeConfig>>(bytes);
    let _ = rpc::decode::<(Vote, SnapshotMeta, SnapshotData)>(bytes);
    let _ = rpc::decode::<TransferLeaderRequest<TypeConfig>>(bytes);
    let _ = rpc::decode::<SnapshotIndexRequest>(bytes);
    let _ = rpc::decode::<SnapshotIndexReply>(bytes);
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    /// Overwrites at a position with a large varint (bincode's 0xFD = u64 follows).
    BigLength(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, x)| Mutation::Flip(at, x)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), any::<u64>()).prop_map(|(at, n)| Mutation::BigLength(at, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip(at, x) => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= x;
                }
            }
            Mutation::Cut(at) => bytes.truncate(at % len),
            Mutation::Insert(at, b) => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::BigLength(at, n) => {
                let at = (at % len).min(bytes.len());
                let mut varint = vec![0xFD];
                varint.extend_from_slice(&n.to_le_bytes());
                let end = (at + varint.len()).min(bytes.len());
                bytes.splice(at..end, varint);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2_000), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(
        seed in 0usize..6,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let (_, bytes) = seeds().swap_remove(seed);
        decode_all(&mutate(bytes, &mutations));
    }
}

#[test]
fn the_seeds_decode_as_themselves() {
    // The mutation property starts from real messages: check that they are.
    for (name, bytes) in seeds() {
        let ok = match name {
            "append" => rpc::decode::<AppendEntriesRequest<TypeConfig>>(&bytes).is_ok(),
            "vote" => rpc::decode::<VoteRequest<TypeConfig>>(&bytes).is_ok(),
            "snapshot" => rpc::decode::<(Vote, SnapshotMeta, SnapshotData)>(&bytes).is_ok(),
            "transfer" => rpc::decode::<TransferLeaderRequest<TypeConfig>>(&bytes).is_ok(),
            "snapshot-index" => rpc::decode::<SnapshotIndexRequest>(&bytes).is_ok(),
            _ => rpc::decode::<SnapshotIndexReply>(&bytes).is_ok(),
        };
        assert!(ok, "{name} does not decode");
    }
}
