//! The log entry format is kept across versions: entries written by an earlier build (in
//! the sled log, or arriving in AppendEntries from a node not yet upgraded) still decode
//! and mean what they meant.
//!
//! `fixtures/entries-v1.bin` is a bincode `Vec<Entry>` (the codec of the log store and of
//! Raft RPC) written by the build before key caps: one entry of every payload kind and of
//! every `Request` variant that build had. Regenerate only when adding a new fixture
//! version, never over an old one: `cargo test -p tally-raft --test formats -- --ignored`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use openraft::testing::log_id;
use openraft::{EntryPayload, Membership};
use tally_analytics::{Event, IngestBatch, Kind};
use tally_raft::types::Entry;
use tally_raft::{rpc, Request, TallyNode, TypeConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The ingest batch the v1 fixture carries.
fn v1_batch() -> IngestBatch {
    let event = |id: &str, resource: &str| Event {
        event_id: id.into(),
        ts_ms: 1_714_564_800_000,
        kind: Kind::Request,
        api_name: "pets".into(),
        api_version: "v1".into(),
        tenant: "acme.com".into(),
        resource: Some(resource.into()),
        method: Some("GET".into()),
        response_code: Some(200),
        response_time_ms: Some(12),
        ..Event::default()
    };
    IngestBatch {
        ingest_ms: 1_714_564_801_000,
        requests: vec![
            vec![event("e-1", "/pets"), event("e-2", "/pets/{id}")],
            vec![Event {
                kind: Kind::Fault,
                response_code: None,
                error_code: Some("101503".into()),
                ..event("e-3", "/store")
            }],
        ],
    }
}

fn v1_entries() -> Vec<Entry> {
    let voters: BTreeSet<u64> = [1, 2, 3].into();
    let nodes: BTreeMap<u64, TallyNode> = [
        (1, TallyNode::data("127.0.0.1:7101")),
        (2, TallyNode::data("127.0.0.1:7102")),
        (3, TallyNode::witness("127.0.0.1:7103")),
    ]
    .into();
    let membership = Membership::<u64, TallyNode>::new(vec![voters], nodes).unwrap();
    vec![
        Entry {
            log_id: log_id::<TypeConfig>(1, 1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id::<TypeConfig>(1, 1, 2),
            payload: EntryPayload::Membership(membership),
        },
        Entry {
            log_id: log_id::<TypeConfig>(1, 1, 3),
            payload: EntryPayload::Normal(Request::Ingest(v1_batch())),
        },
        Entry {
            log_id: log_id::<TypeConfig>(2, 2, 4),
            payload: EntryPayload::Normal(Request::SinkCursor(3)),
        },
        Entry {
            log_id: log_id::<TypeConfig>(2, 2, 5),
            payload: EntryPayload::Normal(Request::SnapshotFloor(4)),
        },
    ]
}

/// Writes `fixtures/entries-v1.bin` with the build before key caps. Kept (ignored) so the
/// way the fixture was made stays readable.
#[test]
#[ignore = "writes the committed fixture; run only to create a new fixture version"]
fn write_entries_v1_fixture() {
    let bytes = rpc::encode(&v1_entries()).unwrap();
    std::fs::write(fixture("entries-v1.bin"), bytes).unwrap();
}

#[test]
fn entries_v1_fixture_decodes_to_what_was_written() {
    let bytes = std::fs::read(fixture("entries-v1.bin")).unwrap();
    let entries: Vec<Entry> = rpc::decode(&bytes).unwrap();
    assert_eq!(entries, v1_entries());
    assert!(matches!(
        &entries[2].payload,
        EntryPayload::Normal(Request::Ingest(batch)) if batch.requests.len() == 2
    ));
}
